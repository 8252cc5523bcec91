//! Optimistic concurrency: the versions an `If-Match` precondition accepts.
//! Checked by the writer, inside the transaction, so no other write can slip in
//! between the check and the change.

/// What an `If-Match` header asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionMatch {
    /// `*`: any current version.
    Any,
    /// A list of entity tags; versions that are not numbers never match.
    Versions(Vec<i64>),
}

impl VersionMatch {
    pub fn matches(&self, version: i64) -> bool {
        match self {
            VersionMatch::Any => true,
            VersionMatch::Versions(versions) => versions.contains(&version),
        }
    }
}

/// The entity tag of a version: `"3"`.
pub fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

/// Parses an `If-Match`/`If-None-Match` value: `*` or a comma-separated list of
/// (possibly weak) entity tags. Tags that are not versions are kept out, so
/// they simply never match.
pub fn parse_etags(header: &str) -> VersionMatch {
    if header.trim() == "*" {
        return VersionMatch::Any;
    }
    VersionMatch::Versions(
        header
            .split(',')
            .filter_map(|tag| {
                let tag = tag.trim();
                let tag = tag.strip_prefix("W/").unwrap_or(tag);
                tag.strip_prefix('"')?.strip_suffix('"')?.parse().ok()
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_weak_tags_and_star() {
        assert!(parse_etags("*").matches(9));
        let m = parse_etags(r#""1", W/"3" , "x""#);
        assert!(m.matches(1) && m.matches(3) && !m.matches(2));
        assert!(!parse_etags("garbage").matches(1));
        assert_eq!(etag(4), "\"4\"");
    }
}
