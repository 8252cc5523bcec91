//! Instants as the API and the database see them: RFC 3339 with an explicit
//! offset on input, UTC on output, microseconds since the epoch in SQLite
//! (integers index and compare cheaply, and survive any driver).

use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

use super::validation::{json_kind, string};

/// The longest reservation: bounds every overlap scan to a fixed window of the
/// `starts_at` index.
pub const MAX_RESERVATION: SignedDuration = SignedDuration::from_hours(7 * 24);
pub const MAX_RESERVATION_MICROS: i64 = 7 * 24 * 3600 * 1_000_000;

/// Accepted instants lie within these years, which keeps all arithmetic on
/// them (adding a week, a month-long availability window) far from overflow.
const MIN_YEAR: i16 = 1970;
const MAX_YEAR: i16 = 9000;

/// Parses an RFC 3339 timestamp that carries an offset (`Z` or `+01:00`);
/// anything finer than a microsecond is truncated.
pub fn parse_instant(text: &str) -> Result<Timestamp, String> {
    let ts: Timestamp = text.parse().map_err(|_| {
        "must be an RFC 3339 timestamp with an offset, e.g. 2030-01-07T10:00:00+01:00".to_owned()
    })?;
    let year = ts.to_zoned(jiff::tz::TimeZone::UTC).year();
    if !(MIN_YEAR..=MAX_YEAR).contains(&year) {
        return Err(format!(
            "must be between the years {MIN_YEAR} and {MAX_YEAR}"
        ));
    }
    Ok(from_micros(micros(ts)))
}

/// JSON field parser for [`parse_instant`].
pub fn instant(value: &Value) -> Result<Timestamp, String> {
    match value {
        Value::String(text) => parse_instant(text),
        other => Err(format!(
            "must be an RFC 3339 string, not {}",
            json_kind(other)
        )),
    }
}

/// JSON field parser for a string holding an instant (query strings).
pub fn instant_str(value: &Value) -> Result<Timestamp, String> {
    parse_instant(string(value)?)
}

pub fn micros(ts: Timestamp) -> i64 {
    ts.as_microsecond()
}

pub fn from_micros(micros: i64) -> Timestamp {
    // Only values produced by `micros` are stored, so this cannot fail; fall
    // back to the epoch rather than panic on a hand-edited database.
    Timestamp::from_microsecond(micros).unwrap_or(Timestamp::UNIX_EPOCH)
}

pub fn now() -> Timestamp {
    from_micros(micros(Timestamp::now()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requires_an_offset_and_normalises_to_utc() {
        assert!(parse_instant("2030-01-07T10:00:00").is_err());
        assert!(parse_instant("2030-01-07").is_err());
        let ts = parse_instant("2030-01-07T10:00:00+01:00").unwrap();
        assert_eq!(ts.to_string(), "2030-01-07T09:00:00Z");
    }

    #[test]
    fn truncates_below_a_microsecond_and_bounds_years() {
        let ts = parse_instant("2030-01-07T10:00:00.123456789Z").unwrap();
        assert_eq!(ts.to_string(), "2030-01-07T10:00:00.123456Z");
        assert!(parse_instant("1969-12-31T23:59:59Z").is_err());
        assert!(parse_instant("9001-01-01T00:00:00Z").is_err());
        assert_eq!(from_micros(micros(ts)), ts);
    }
}
