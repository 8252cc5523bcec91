//! API keys and the principal they stand for. Keys are 256-bit random tokens,
//! so a plain SHA-256 is enough to store them safely (no password stretching
//! needed) and cheap enough to hash on every request.

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::validation::string;

/// The user id the admin token acts as.
pub const ADMIN_USER: &str = "admin";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "user" => Some(Role::User),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn from_json(value: &Value) -> Result<Role, String> {
        Role::parse(string(value)?).ok_or_else(|| "must be \"user\" or \"admin\"".to_owned())
    }
}

/// Who is calling: resolved from the bearer key on every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: UserId,
    pub role: Role,
}

impl Principal {
    pub fn admin() -> Self {
        Principal {
            user_id: UserId(ADMIN_USER.to_owned()),
            role: Role::Admin,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Whether this principal may see or change a row owned by `owner`.
    pub fn owns(&self, owner: &str) -> bool {
        self.is_admin() || self.user_id.as_str() == owner
    }
}

/// A user id: 1 to 128 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(String);

impl UserId {
    pub fn parse(text: &str) -> Result<UserId, String> {
        let length = text.chars().count();
        if !(1..=128).contains(&length) {
            return Err("must be 1 to 128 characters".to_owned());
        }
        if text.chars().any(char::is_control) {
            return Err("must not contain control characters".to_owned());
        }
        if text.trim() != text {
            return Err("must not start or end with whitespace".to_owned());
        }
        Ok(UserId(text.to_owned()))
    }

    pub fn from_json(value: &Value) -> Result<UserId, String> {
        UserId::parse(string(value)?)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

pub type KeyHash = [u8; 32];

/// A fresh API key: `rsv_` and 43 base64url characters (256 random bits).
pub fn generate_key() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness available: {e}"))?;
    Ok(format!(
        "rsv_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

pub fn hash_key(key: &str) -> KeyHash {
    Sha256::digest(key.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_hash_stably() {
        let a = generate_key().unwrap();
        let b = generate_key().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("rsv_") && a.len() == 47);
        assert_eq!(hash_key(&a), hash_key(&a));
        assert_ne!(hash_key(&a), hash_key(&b));
    }

    #[test]
    fn user_ids_are_bounded_and_printable() {
        assert!(UserId::parse("alice@example.com").is_ok());
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse(&"x".repeat(129)).is_err());
        assert!(UserId::parse("a\nb").is_err());
        assert!(UserId::parse(" alice").is_err());
    }

    #[test]
    fn ownership() {
        let alice = Principal {
            user_id: UserId::parse("alice").unwrap(),
            role: Role::User,
        };
        assert!(alice.owns("alice"));
        assert!(!alice.owns("bob"));
        assert!(Principal::admin().owns("bob"));
    }
}
