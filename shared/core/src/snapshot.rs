//! Snapshots: a cache of an aggregate's state stored inline on an event.
//!
//! A snapshot is only ever a shortcut. A snapshot whose schema the reader does
//! not know, or that does not deserialise, is ignored and the stream replayed
//! from version 1: on doubt, replay.
//!
//! A snapshot is also evidence: its [`Snapshot::digest`] is covered by the hash
//! of the event it is stored with, so a snapshot edited in the table no longer
//! verifies and is never decided on.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// An aggregate's state after the event at `version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The version whose post-state this is.
    pub version: u64,
    /// The state's schema (the decider's `STATE_SCHEMA` when written).
    pub schema: u32,
    /// The serialised state.
    pub state: Value,
}

impl Snapshot {
    /// SHA-256 (hex) of the snapshot's canonical JSON (version, schema,
    /// state; object keys sorted): what the carrying event's hash covers.
    pub fn digest(&self) -> String {
        let canonical = json!({ "version": self.version, "schema": self.schema, "state": self.state });
        hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
    }
}

/// When to store a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// Store one at least every `every` events; `None` never snapshots.
    pub every: Option<u64>,
}

impl SnapshotPolicy {
    /// Never snapshot: loading always replays the whole stream.
    pub const NEVER: Self = Self { every: None };

    /// Snapshot at least every `n` events (`n` = 1: every event carries its post-state).
    pub fn every(n: u64) -> Self {
        Self { every: Some(n.max(1)) }
    }

    /// Whether a stream whose newest snapshot is at `last_snapshot` (0 for
    /// none) should store one at `new_version`.
    pub fn due(&self, last_snapshot: u64, new_version: u64) -> bool {
        self.every
            .is_some_and(|n| new_version.saturating_sub(last_snapshot) >= n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_every_n_events() {
        let p = SnapshotPolicy::every(100);
        assert!(!p.due(0, 99));
        assert!(p.due(0, 100));
        assert!(p.due(100, 205));
        assert!(!SnapshotPolicy::NEVER.due(0, 1_000_000));
        assert!(SnapshotPolicy::every(1).due(7, 8));
    }
}
