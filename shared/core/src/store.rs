//! The event store port. Every adapter (SQLite, DynamoDB) implements
//! [`EventStore`] and passes the one contract suite in `tests/`.
//!
//! The store's promises: versions are gap-free per stream; an append names the
//! version it expects each stream to be at, and either every stream of the
//! batch is written or none is; a lost race is a
//! [`StoreError::WrongExpectedVersion`], never a lost write. There is no global
//! order: consumers rely on per-stream order only.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::chain::{ChainBreak, SNAPSHOT_MISMATCH, verify_segment};
use crate::envelope::EventEnvelope;
use crate::id::StreamId;
use crate::snapshot::Snapshot;

/// A stream as loaded for a command: the newest usable snapshot, if any, and
/// the events from that snapshot's version (inclusive) to the head.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadedStream {
    /// The newest snapshot the store holds for the stream, if any.
    pub snapshot: Option<Snapshot>,
    /// Events from the snapshot's version (or from 1) to the head, in order.
    pub events: Vec<EventEnvelope>,
    /// The hash of the event just before `events` (`None` when `events`
    /// starts at version 1, or when the store could not say): what the
    /// loaded events are checked against before anything decides on them.
    pub base_hash: Option<String>,
}

impl LoadedStream {
    /// Checks what a decision would read against the hash chain: every
    /// loaded event's hash, chained from `base_hash` (or from the genesis
    /// hash at version 1), and the snapshot against the digest its event's
    /// hash covers. A snapshot without a digest (written before snapshots
    /// were hashed) does not verify either: it is a cache nobody vouches for.
    pub fn verify(&self, stream: &StreamId) -> Result<(), ChainBreak> {
        verify_segment(stream, self.base_hash.as_deref(), &self.events)?;
        if let Some(snapshot) = &self.snapshot {
            let covered = self
                .events
                .first()
                .filter(|e| e.version == snapshot.version)
                .and_then(|e| e.snapshot_digest.as_deref());
            if covered != Some(snapshot.digest().as_str()) {
                return Err(ChainBreak {
                    stream: stream.clone(),
                    version: snapshot.version,
                    reason: SNAPSHOT_MISMATCH.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// The stream's head version (0 for an empty stream).
    pub fn version(&self) -> u64 {
        self.events.last().map_or(0, |e| e.version)
    }

    /// The head event's hash, which the next append chains from.
    pub fn head_hash(&self) -> Option<&str> {
        self.events.last().map(|e| e.hash.as_str())
    }
}

/// A point in a stream's history, for time travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// After the event at this version (or the head, if the stream is shorter).
    Version(u64),
    /// After the newest event appended at or before this time (ms since the
    /// epoch): the prefix up to that event's version.
    Time(i64),
}

/// A read-model row written in the same transaction as the events (an inline
/// projection). The store only overwrites a row holding an older `version`.
#[derive(Debug, Clone, PartialEq)]
pub struct InlineView {
    /// The read model, e.g. `inventory_levels`.
    pub model: String,
    /// The row key within the model.
    pub key: String,
    /// The stream version the row reflects.
    pub version: u64,
    /// The row.
    pub row: Value,
}

/// The events to append to one stream, with the version the stream must be at.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamAppend {
    /// The stream.
    pub stream_id: StreamId,
    /// The head version the stream must have (0: the stream must not exist).
    pub expected_version: u64,
    /// Sealed events, versions `expected_version + 1 ..`.
    pub events: Vec<EventEnvelope>,
    /// The post-state to store on the last event, when a snapshot is due.
    pub snapshot: Option<Snapshot>,
    /// An inline read-model row to write in the same transaction.
    pub view: Option<InlineView>,
}

/// The remembered outcome of a command sent with an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// The client's key.
    pub key: String,
    /// SHA-256 of the request (method, path, body): another body with the same key is refused.
    pub request_hash: String,
    /// The HTTP status first returned.
    pub status: u16,
    /// The response body first returned.
    pub response: Value,
    /// When the record may be forgotten (ms since epoch; a DynamoDB TTL).
    pub expires_at_ms: i64,
}

/// One atomic append: every stream's condition holds and everything is
/// written, or nothing is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppendBatch {
    /// The streams to append to.
    pub streams: Vec<StreamAppend>,
    /// An idempotency record to store in the same transaction.
    pub idempotency: Option<IdempotencyRecord>,
}

impl AppendBatch {
    /// Checks the batch's shape before any adapter writes it: at least one
    /// stream, each once, each with events that follow its expected version
    /// without gaps, and a snapshot (if any) of the last event.
    pub fn check(&self) -> Result<(), StoreError> {
        if self.streams.is_empty() {
            return Err(StoreError::InvalidAppend("a batch needs at least one stream".into()));
        }
        for append in &self.streams {
            if append.events.is_empty() {
                return Err(StoreError::InvalidAppend(format!("no events for {}", append.stream_id)));
            }
            let positioned = append
                .events
                .iter()
                .zip(append.expected_version + 1..)
                .all(|(e, v)| e.version == v && e.stream_id == append.stream_id);
            if !positioned {
                return Err(StoreError::InvalidAppend(format!(
                    "events for {} must follow version {} without gaps",
                    append.stream_id, append.expected_version
                )));
            }
            if let Some(snapshot) = &append.snapshot
                && Some(snapshot.version) != append.events.last().map(|e| e.version)
            {
                return Err(StoreError::InvalidAppend(
                    "a snapshot must describe the last event".into(),
                ));
            }
            // A stored snapshot is only ever trusted through the digest its
            // event's hash covers: one without it would never be used.
            let covered = append.events.last().and_then(|e| e.snapshot_digest.clone());
            if append.snapshot.as_ref().map(Snapshot::digest) != covered {
                return Err(StoreError::InvalidAppend(format!(
                    "the snapshot of {} must be the one its last event's hash covers",
                    append.stream_id
                )));
            }
        }
        let mut streams: Vec<_> = self.streams.iter().map(|a| &a.stream_id).collect();
        streams.sort();
        streams.dedup();
        if streams.len() != self.streams.len() {
            return Err(StoreError::InvalidAppend("a stream may appear once per batch".into()));
        }
        Ok(())
    }
}

/// The head of each stream after a successful append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendOutcome {
    /// `(stream, new head version)` in the order of the batch.
    pub heads: Vec<(StreamId, u64)>,
}

/// What can go wrong in a store, each case with what a caller should do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer got there first: reload, decide again, retry.
    #[error("wrong expected version on stream {stream}: expected {expected}")]
    WrongExpectedVersion {
        /// The stream whose condition failed.
        stream: StreamId,
        /// The version the append expected.
        expected: u64,
        /// The item that won, when the store hands it back with the failure
        /// (DynamoDB's `ReturnValuesOnConditionCheckFailure`): with its
        /// snapshot, a retry can decide on it without reading again.
        winner: Option<Box<LoadedStream>>,
    },
    /// The idempotency key was stored by a concurrent request: read its record.
    #[error("idempotency key {key} already used")]
    DuplicateIdempotencyKey {
        /// The key.
        key: String,
    },
    /// The batch breaks a store limit (too many items, too large): split or refuse.
    #[error("append refused: {0}")]
    InvalidAppend(String),
    /// A stored item cannot be read back: investigate; never retried.
    #[error("corrupt item in {stream} at version {version}: {reason}")]
    Corrupt {
        /// The stream.
        stream: StreamId,
        /// The version.
        version: u64,
        /// What is wrong.
        reason: String,
    },
    /// The backend is busy or throttling: safe to retry later.
    #[error("store temporarily unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Any other backend failure.
    #[error("store failure: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// A stored item of `stream` at `version` that cannot be read back. A
    /// stored stream id that does not even parse is a backend failure.
    pub fn corrupt(stream: &str, version: u64, reason: impl ToString) -> Self {
        match StreamId::parse(stream) {
            Ok(stream) => Self::Corrupt {
                stream,
                version,
                reason: reason.to_string(),
            },
            Err(e) => Self::Backend(format!("stored stream id {stream:?} is invalid: {e}").into()),
        }
    }
}

/// The event store port.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Loads a stream from its newest snapshot (see [`LoadedStream`]).
    async fn load(&self, stream: &StreamId) -> Result<LoadedStream, StoreError>;

    /// Reads versions `from..=to` (`to = None`: to the head), in order.
    async fn read_range(&self, stream: &StreamId, from: u64, to: Option<u64>)
    -> Result<Vec<EventEnvelope>, StoreError>;

    /// Reads the events appended at or before `at_ms`, in order (time travel).
    async fn read_until(&self, stream: &StreamId, at_ms: i64) -> Result<Vec<EventEnvelope>, StoreError>;

    /// Loads the stream as it was at `at`, like [`EventStore::load`]: the
    /// newest snapshot at or before that point, the events from it to that
    /// point, and the hash before them. Adapters answer with a short read;
    /// this default reads everything up to that point.
    async fn load_at(&self, stream: &StreamId, at: At) -> Result<LoadedStream, StoreError> {
        let events = match at {
            At::Version(version) => self.read_range(stream, 1, Some(version)).await?,
            At::Time(at_ms) => {
                let mut events = self.read_until(stream, at_ms).await?;
                // The prefix up to the newest event at or before the time.
                let upto = events.last().map_or(0, |e| e.version);
                events = self.read_range(stream, 1, Some(upto)).await?;
                events
            }
        };
        Ok(LoadedStream {
            snapshot: None,
            events,
            base_hash: None,
        })
    }

    /// Appends atomically: all streams' conditions hold and all is written, or nothing.
    async fn append(&self, batch: AppendBatch) -> Result<AppendOutcome, StoreError>;

    /// The idempotency record stored under `key`, if any and not expired.
    async fn idempotency_record(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError>;
}
