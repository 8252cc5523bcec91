//! Opaque keyset cursors and the `limit` parameter shared by every list.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::{
    domain::validation::{Fields, string},
    store::sqlite::reads::ReservationCursor,
};

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 200;

#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from `limit + 1` fetched rows: the extra row only tells
    /// that there is more, and the cursor points at the last row returned.
    pub fn from_rows(mut rows: Vec<T>, limit: u32, cursor_of: impl Fn(&T) -> String) -> Page<T> {
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_cursor = if more {
            rows.last().map(cursor_of)
        } else {
            None
        };
        Page {
            items: rows,
            next_cursor,
        }
    }
}

/// `limit`: 1 to 200, default 50.
pub fn limit(query: &mut Fields) -> u32 {
    query
        .optional("limit", |value| {
            string(value)?
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| format!("must be an integer from 1 to {MAX_LIMIT}"))
        })
        .unwrap_or(DEFAULT_LIMIT)
}

pub fn encode_reservation_cursor(cursor: &ReservationCursor) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}|{}", cursor.starts_at, cursor.id))
}

pub fn reservation_cursor(value: &Value) -> Result<ReservationCursor, String> {
    let invalid = || "is not a cursor returned by this list".to_owned();
    let bytes = URL_SAFE_NO_PAD
        .decode(string(value)?)
        .map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (starts_at, id) = text.split_once('|').ok_or_else(invalid)?;
    Ok(ReservationCursor {
        starts_at: starts_at.parse().map_err(|_| invalid())?,
        id: Uuid::try_parse(id).map_err(|_| invalid())?,
    })
}

pub fn encode_id_cursor(id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(id.as_bytes())
}

pub fn id_cursor(value: &Value) -> Result<Uuid, String> {
    let invalid = || "is not a cursor returned by this list".to_owned();
    let bytes = URL_SAFE_NO_PAD
        .decode(string(value)?)
        .map_err(|_| invalid())?;
    Uuid::from_slice(&bytes).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let cursor = ReservationCursor {
            starts_at: 1_900_000_000_000_000,
            id: Uuid::now_v7(),
        };
        let encoded = encode_reservation_cursor(&cursor);
        assert_eq!(reservation_cursor(&json!(encoded)).unwrap(), cursor);
        assert!(reservation_cursor(&json!("not-a-cursor")).is_err());
        let id = Uuid::now_v7();
        assert_eq!(id_cursor(&json!(encode_id_cursor(id))).unwrap(), id);
        assert!(id_cursor(&json!("AAAA")).is_err());
    }

    #[test]
    fn pages_know_when_there_is_more() {
        let page = Page::from_rows(vec![1, 2, 3], 2, |n| n.to_string());
        assert_eq!(
            (page.items, page.next_cursor),
            (vec![1, 2], Some("2".into()))
        );
        let page = Page::from_rows(vec![1, 2], 2, |n| n.to_string());
        assert_eq!(page.next_cursor, None);
    }
}
