//! The event envelope: what every store persists and every consumer reads.
//!
//! An envelope is immutable once sealed. Its `hash` covers the previous
//! event's hash and the canonical form of every other field, so the events of
//! a stream form a chain that [`crate::chain::verify_chain`] can check. The
//! `data` is kept exactly as it was written (old schemas included): upcasting
//! happens when a consumer decodes it, never in storage, or the chain breaks.
//!
//! An event that carries a snapshot of its post-state also carries the
//! snapshot's digest, and the digest is part of the hashed content: a
//! snapshot is evidence like any other field, so editing one breaks the chain
//! at its event instead of silently changing what the next command decides on.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::id::StreamId;
use crate::snapshot::Snapshot;

/// The hash a stream's first event chains from.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Who and what caused an event: carried from the API request into the
/// store, the EventBridge detail and the projector's logs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Groups every event caused by one user action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The command or event that directly caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    /// W3C trace context of the request that wrote the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The authenticated principal, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The id of the command that produced the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<String>,
    /// Where migrated state came from (imports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// An event a decider produced, before it has a stream position.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// The event type, e.g. `OrderPlaced`.
    pub event_type: String,
    /// The payload's schema version.
    pub schema: u32,
    /// The payload.
    pub data: Value,
}

/// A stored event with its position in its stream and its chain hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    /// UUIDv7: unique, and sortable by creation time.
    pub event_id: Uuid,
    /// The stream the event belongs to.
    pub stream_id: StreamId,
    /// 1-based position in the stream; gap-free.
    pub version: u64,
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Schema version of `data` as stored.
    pub schema: u32,
    /// The payload as stored.
    pub data: Value,
    /// Correlation, causation, trace and actor.
    pub metadata: Metadata,
    /// When the event was appended, in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// SHA-256 (hex) over the previous event's hash and this event.
    pub hash: String,
    /// The digest ([`Snapshot::digest`]) of the snapshot stored with this
    /// event, when one was: covered by `hash`, so the snapshot can be checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_digest: Option<String>,
}

impl EventEnvelope {
    /// Recomputes the hash this envelope should carry after `prev_hash`.
    pub fn compute_hash(&self, prev_hash: &str) -> String {
        chain_hash(
            prev_hash,
            &self.event_id,
            &self.stream_id,
            self.version,
            &self.event_type,
            self.schema,
            &self.data,
            &self.metadata,
            self.timestamp_ms,
            self.snapshot_digest.as_deref(),
        )
    }
}

#[allow(clippy::too_many_arguments)]
fn chain_hash(
    prev_hash: &str,
    event_id: &Uuid,
    stream_id: &StreamId,
    version: u64,
    event_type: &str,
    schema: u32,
    data: &Value,
    metadata: &Metadata,
    timestamp_ms: i64,
    snapshot_digest: Option<&str>,
) -> String {
    // serde_json's Value keeps object keys sorted (no `preserve_order`), so this
    // serialisation is canonical: the same event always hashes the same way.
    let mut canonical = json!({
        "event_id": event_id,
        "stream_id": stream_id,
        "version": version,
        "type": event_type,
        "schema": schema,
        "data": data,
        "metadata": metadata,
        "timestamp_ms": timestamp_ms,
    });
    // Only an event with a snapshot has the key, so every event written
    // before snapshots were hashed still verifies as it was sealed.
    if let (Some(digest), Some(fields)) = (snapshot_digest, canonical.as_object_mut()) {
        fields.insert("snapshot_digest".to_owned(), Value::String(digest.to_owned()));
    }
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(b"\n");
    hasher.update(canonical.to_string().as_bytes());
    hex::encode(hasher.finalize())
}

/// Gives `events` their stream positions, ids, timestamp and chain hashes,
/// continuing a stream whose head is `head_version` with hash `head_hash`
/// (`None` for a new stream).
pub fn seal(
    stream_id: &StreamId,
    head_version: u64,
    head_hash: Option<&str>,
    events: Vec<NewEvent>,
    metadata: &Metadata,
    timestamp_ms: i64,
) -> Vec<EventEnvelope> {
    seal_with_snapshot(stream_id, head_version, head_hash, events, metadata, timestamp_ms, None)
}

/// [`seal`], with `snapshot` (the post-state after the last event) covered
/// by the last event's hash through its digest.
pub fn seal_with_snapshot(
    stream_id: &StreamId,
    head_version: u64,
    head_hash: Option<&str>,
    events: Vec<NewEvent>,
    metadata: &Metadata,
    timestamp_ms: i64,
    snapshot: Option<&Snapshot>,
) -> Vec<EventEnvelope> {
    let mut prev = head_hash.unwrap_or(GENESIS_HASH).to_owned();
    let last_version = head_version + events.len() as u64;
    let digest = snapshot.map(Snapshot::digest);
    events
        .into_iter()
        .zip(head_version + 1..)
        .map(|(event, version)| {
            let mut envelope = EventEnvelope {
                event_id: Uuid::now_v7(),
                stream_id: stream_id.clone(),
                version,
                event_type: event.event_type,
                schema: event.schema,
                data: event.data,
                metadata: metadata.clone(),
                timestamp_ms,
                hash: String::new(),
                snapshot_digest: (version == last_version).then(|| digest.clone()).flatten(),
            };
            envelope.hash = envelope.compute_hash(&prev);
            prev.clone_from(&envelope.hash);
            envelope
        })
        .collect()
}
