//! Parsing untrusted JSON into domain values while collecting *every* bad
//! field, so a 422 can list them all at once instead of one per round trip.
//!
//! serde's derive stops at the first error and cannot name unknown fields in a
//! structured way, so request bodies are read as `serde_json::Value` and taken
//! apart with [`Fields`]: each getter parses one field with a domain parser and
//! records a [`FieldError`] on failure; [`Fields::finish`] adds one error per
//! unknown field.

use serde::Serialize;
use serde_json::{Map, Value};

/// One offending field in a 422 problem's `errors` list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A PATCH field: absent (leave as is), explicitly `null` (clear) or a value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Patch<T> {
    #[default]
    Absent,
    Null,
    Set(T),
}

/// Reader over one JSON object. `prefix` is prepended to field names so nested
/// objects report paths like `reservations[3].party_size`.
pub struct Fields {
    object: Map<String, Value>,
    prefix: String,
    errors: Vec<FieldError>,
}

impl Fields {
    /// Fails with a single error on `prefix` (or `body`) when `value` is not an
    /// object.
    pub fn new(value: Value, prefix: &str) -> Result<Self, Vec<FieldError>> {
        match value {
            Value::Object(object) => Ok(Self {
                object,
                prefix: prefix.to_owned(),
                errors: Vec::new(),
            }),
            other => Err(vec![FieldError::new(
                if prefix.is_empty() { "body" } else { prefix },
                format!("must be a JSON object, not {}", json_kind(&other)),
            )]),
        }
    }

    /// The full path of a field of this object.
    pub fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{}", self.prefix, name)
        }
    }

    /// A field that must be present and non-null.
    pub fn required<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&Value) -> Result<T, String>,
    ) -> Option<T> {
        self.required_with(name, |value, path| {
            parse(value).map_err(|message| vec![FieldError::new(path, message)])
        })
    }

    /// A field that may be absent or `null`.
    pub fn optional<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&Value) -> Result<T, String>,
    ) -> Option<T> {
        self.optional_with(name, |value, path| {
            parse(value).map_err(|message| vec![FieldError::new(path, message)])
        })
    }

    /// A PATCH field that can be changed but not cleared: absent → `None`,
    /// `null` → an error, a value → parsed.
    pub fn present<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&Value) -> Result<T, String>,
    ) -> Option<T> {
        match self.patch(name, parse) {
            Patch::Set(value) => Some(value),
            Patch::Absent => None,
            Patch::Null => {
                self.error(
                    name,
                    "must not be null; omit the field to leave it unchanged",
                );
                None
            }
        }
    }

    /// A PATCH field: absent, `null`, or a value to set.
    pub fn patch<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&Value) -> Result<T, String>,
    ) -> Patch<T> {
        self.patch_with(name, |value, path| {
            parse(value).map_err(|message| vec![FieldError::new(path, message)])
        })
    }

    /// Like [`Fields::required`], for parsers that report nested paths.
    pub fn required_with<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&Value, &str) -> Result<T, Vec<FieldError>>,
    ) -> Option<T> {
        match self.object.remove(name) {
            None | Some(Value::Null) => {
                let path = self.path(name);
                self.errors.push(FieldError::new(path, "is required"));
                None
            }
            Some(value) => self.run(name, &value, parse),
        }
    }

    /// Like [`Fields::optional`], for parsers that report nested paths.
    pub fn optional_with<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&Value, &str) -> Result<T, Vec<FieldError>>,
    ) -> Option<T> {
        match self.object.remove(name) {
            None | Some(Value::Null) => None,
            Some(value) => self.run(name, &value, parse),
        }
    }

    /// Like [`Fields::patch`], for parsers that report nested paths.
    pub fn patch_with<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&Value, &str) -> Result<T, Vec<FieldError>>,
    ) -> Patch<T> {
        match self.object.remove(name) {
            None => Patch::Absent,
            Some(Value::Null) => Patch::Null,
            Some(value) => match self.run(name, &value, parse) {
                Some(parsed) => Patch::Set(parsed),
                // The error is recorded; what we return is never used.
                None => Patch::Absent,
            },
        }
    }

    /// Records an error found while combining fields (e.g. `ends_at` before
    /// `starts_at`).
    pub fn error(&mut self, name: &str, message: impl Into<String>) {
        let path = self.path(name);
        self.errors.push(FieldError::new(path, message));
    }

    /// Every error collected, plus one per field nobody asked for.
    pub fn finish(mut self) -> Result<(), Vec<FieldError>> {
        let mut unknown: Vec<String> = self.object.keys().cloned().collect();
        unknown.sort();
        for name in unknown {
            let path = self.path(&name);
            self.errors.push(FieldError::new(path, "unknown field"));
        }
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self.errors)
        }
    }

    fn run<T>(
        &mut self,
        name: &str,
        value: &Value,
        parse: impl FnOnce(&Value, &str) -> Result<T, Vec<FieldError>>,
    ) -> Option<T> {
        let path = self.path(name);
        match parse(value, &path) {
            Ok(parsed) => Some(parsed),
            Err(errors) => {
                self.errors.extend(errors);
                None
            }
        }
    }
}

/// "a string", "a number", ... for error messages.
pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses a JSON string field.
pub fn string(value: &Value) -> Result<&str, String> {
    value
        .as_str()
        .ok_or_else(|| format!("must be a string, not {}", json_kind(value)))
}

/// Parses a JSON integer within `range`.
pub fn integer(value: &Value, range: std::ops::RangeInclusive<i64>) -> Result<i64, String> {
    let out_of_range = || {
        format!(
            "must be an integer from {} to {}",
            range.start(),
            range.end()
        )
    };
    let n = match value {
        Value::Number(n) => n.as_i64().ok_or_else(out_of_range)?,
        other => return Err(format!("must be an integer, not {}", json_kind(other))),
    };
    if range.contains(&n) {
        Ok(n)
    } else {
        Err(out_of_range())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn collects_every_error_and_unknown_fields() {
        let mut f = Fields::new(json!({"a": "x", "b": 7, "zz": 1, "yy": 2}), "").unwrap();
        let a = f.required("a", |v| integer(v, 0..=10));
        let b = f.required("b", |v| integer(v, 0..=10));
        let c: Option<i64> = f.required("c", |v| integer(v, 0..=10));
        assert_eq!((a, b, c), (None, Some(7), None));
        let errors = f.finish().unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["a", "c", "yy", "zz"]);
    }

    #[test]
    fn nested_paths_and_patch_states() {
        let mut f = Fields::new(json!({"n": null, "s": "v"}), "items[2]").unwrap();
        assert_eq!(f.patch("n", |v| string(v).map(str::to_owned)), Patch::Null);
        assert_eq!(
            f.patch("s", |v| string(v).map(str::to_owned)),
            Patch::Set("v".into())
        );
        assert_eq!(
            f.patch("m", |v| string(v).map(str::to_owned)),
            Patch::Absent
        );
        f.error("x", "bad");
        assert_eq!(f.finish().unwrap_err()[0].field, "items[2].x");
    }

    #[test]
    fn present_fields_reject_null() {
        let mut f = Fields::new(json!({"a": null, "b": 2}), "").unwrap();
        assert_eq!(f.present("a", |v| integer(v, 0..=9)), None);
        assert_eq!(f.present("b", |v| integer(v, 0..=9)), Some(2));
        assert_eq!(f.present("c", |v| integer(v, 0..=9)), None);
        assert_eq!(f.finish().unwrap_err()[0].field, "a");
    }

    #[test]
    fn rejects_non_objects_and_out_of_range() {
        assert_eq!(Fields::new(json!([1]), "").err().unwrap()[0].field, "body");
        assert!(integer(&json!(1.5), 0..=3).is_err());
        assert!(integer(&json!(4), 0..=3).is_err());
        assert!(integer(&json!("1"), 0..=3).is_err());
    }
}
