//! SHA-256 over a value's compact JSON, written straight into the hasher: the
//! request fingerprints and the Idempotency-Key request hashes are both
//! digests of JSON, and neither needs the text itself.

use serde::Serialize;
use sha2::{Digest, Sha256};

/// Feeds `value`, serialized as compact JSON (the bytes `serde_json::to_string`
/// would give), into `digest`.
pub fn update_json(digest: &mut Sha256, value: &impl Serialize) {
    struct Hashing<'a>(&'a mut Sha256);
    impl std::io::Write for Hashing<'_> {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.update(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    // Only a value whose Serialize impl fails (a map with non-string keys)
    // can fail here; the values hashed are plain data and JSON documents.
    serde_json::to_writer(Hashing(digest), value)
        .expect("serializing plain data into a hasher cannot fail");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_the_same_bytes_as_the_json_text() {
        let value = serde_json::json!({"b": [1, 2.5, null], "a": "ü \"q\""});
        let mut streamed = Sha256::new();
        update_json(&mut streamed, &value);
        let text = Sha256::digest(value.to_string().as_bytes());
        assert_eq!(streamed.finalize(), text);
    }
}
