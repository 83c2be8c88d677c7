//! Identifiers parsed once at the boundary. After parsing, the code cannot hold
//! an invalid one: every key that reaches a store is 1–128 characters of
//! `[A-Za-z0-9_-]`, safe as a DynamoDB key, a SQLite key and a URL segment.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest stream id accepted. Stream ids are `<category>-<entity id>`, and
/// entity ids are at most 64 characters (the API contract).
pub const STREAM_ID_MAX_LEN: usize = 128;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The identifier is empty.
    #[error("must not be empty")]
    Empty,
    /// The identifier is longer than allowed.
    #[error("must be at most {max} characters, got {len}")]
    TooLong {
        /// Allowed maximum.
        max: usize,
        /// Actual length.
        len: usize,
    },
    /// The identifier holds a character outside `[A-Za-z0-9_-]`.
    #[error("may only contain A-Z, a-z, 0-9, '_' and '-'")]
    BadCharacter,
}

/// Checks `raw` against the identifier alphabet and a maximum length.
pub fn validate_id(raw: &str, max: usize) -> Result<(), IdError> {
    if raw.is_empty() {
        return Err(IdError::Empty);
    }
    if raw.len() > max {
        return Err(IdError::TooLong { max, len: raw.len() });
    }
    if !raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err(IdError::BadCharacter);
    }
    Ok(())
}

/// The identity of one event stream (one aggregate instance), e.g.
/// `inventory-SKU-42` or `order-7f3a`. Events are ordered per stream only.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StreamId(String);

impl StreamId {
    /// Parses and validates a stream id.
    pub fn parse(raw: impl Into<String>) -> Result<Self, IdError> {
        let raw = raw.into();
        validate_id(&raw, STREAM_ID_MAX_LEN)?;
        Ok(Self(raw))
    }

    /// Builds `<category>-<id>` from an already validated entity id.
    pub fn of(category: &str, id: &str) -> Result<Self, IdError> {
        Self::parse(format!("{category}-{id}"))
    }

    /// The stream's category: everything before the first `-`.
    pub fn category(&self) -> &str {
        self.0.split('-').next().unwrap_or(&self.0)
    }

    /// The entity id: everything after the first `-`.
    pub fn entity_id(&self) -> &str {
        self.0.split_once('-').map_or("", |(_, id)| id)
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for StreamId {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl From<StreamId> for String {
    fn from(value: StreamId) -> Self {
        value.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_category_and_entity() {
        let id = StreamId::of("inventory", "SKU-42").expect("valid");
        assert_eq!(id.as_str(), "inventory-SKU-42");
        assert_eq!(id.category(), "inventory");
        assert_eq!(id.entity_id(), "SKU-42");
    }

    #[test]
    fn rejects_bad_ids() {
        assert_eq!(StreamId::parse(""), Err(IdError::Empty));
        assert_eq!(StreamId::parse("a b"), Err(IdError::BadCharacter));
        assert_eq!(StreamId::parse("é"), Err(IdError::BadCharacter));
        assert!(matches!(StreamId::parse("x".repeat(129)), Err(IdError::TooLong { .. })));
    }
}
