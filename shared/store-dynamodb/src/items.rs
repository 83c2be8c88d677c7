//! Item shapes: how an event, its inline snapshot and an idempotency record
//! are laid out in DynamoDB (through serde_dynamo, not by hand).
//!
//! `data` and `meta` are stored as JSON text: exactly the bytes that were
//! hashed stay readable by every consumer (the stream publisher included),
//! whatever DynamoDB would do to numbers inside a map.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};
use tally_core::{EventEnvelope, IdempotencyRecord, Snapshot, StoreError, StreamId};

/// One stored event, as laid out in the events table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[allow(missing_docs)] // field names are the attribute names; see the module docs
pub struct EventItem {
    pub stream_id: String,
    pub version: u64,
    pub event_id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub schema: u32,
    pub data: String,
    pub meta: String,
    pub ts: i64,
    pub hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_schema: Option<u32>,
}

/// A DynamoDB item.
pub type Item = HashMap<String, AttributeValue>;

impl EventItem {
    /// The item for `event`, carrying `snapshot` when given.
    pub fn from_envelope(event: &EventEnvelope, snapshot: Option<&Snapshot>) -> Result<Item, StoreError> {
        let item = EventItem {
            stream_id: event.stream_id.to_string(),
            version: event.version,
            event_id: event.event_id.to_string(),
            event_type: event.event_type.clone(),
            schema: event.schema,
            data: event.data.to_string(),
            meta: serde_json::to_string(&event.metadata).map_err(|e| StoreError::InvalidAppend(e.to_string()))?,
            ts: event.timestamp_ms,
            hash: event.hash.clone(),
            snapshot_digest: event.snapshot_digest.clone(),
            snapshot: snapshot.map(|s| s.state.to_string()),
            snapshot_schema: snapshot.map(|s| s.schema),
        };
        serde_dynamo::to_item(item).map_err(|e| StoreError::InvalidAppend(e.to_string()))
    }

    pub(crate) fn parse(item: Item) -> Result<Self, StoreError> {
        serde_dynamo::from_item(item).map_err(|e| StoreError::Backend(format!("unreadable event item: {e}").into()))
    }

    /// Whether the item carries a snapshot.
    pub(crate) fn has_snapshot(item: &Item) -> bool {
        item.contains_key("snapshot")
    }

    /// The envelope and, if present, the inline snapshot. A snapshot that does
    /// not parse is returned as `Null` state: the loader treats it as a miss.
    pub fn into_envelope(self) -> Result<(EventEnvelope, Option<Snapshot>), StoreError> {
        let (stream, version) = (self.stream_id.as_str(), self.version);
        let envelope = EventEnvelope {
            stream_id: StreamId::parse(stream).map_err(|e| StoreError::corrupt(stream, version, e))?,
            version,
            event_id: self
                .event_id
                .parse()
                .map_err(|e| StoreError::corrupt(stream, version, e))?,
            event_type: self.event_type.clone(),
            schema: self.schema,
            data: serde_json::from_str(&self.data).map_err(|e| StoreError::corrupt(stream, version, e))?,
            metadata: serde_json::from_str(&self.meta).map_err(|e| StoreError::corrupt(stream, version, e))?,
            timestamp_ms: self.ts,
            hash: self.hash.clone(),
            snapshot_digest: self.snapshot_digest.clone(),
        };
        let snapshot = match (self.snapshot, self.snapshot_schema) {
            (Some(state), Some(schema)) => Some(Snapshot {
                version,
                schema,
                state: serde_json::from_str(&state).unwrap_or(serde_json::Value::Null),
            }),
            _ => None,
        };
        Ok((envelope, snapshot))
    }
}

/// One idempotency record, with its TTL in epoch seconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct IdempotencyItem {
    pub key: String,
    pub request_hash: String,
    pub status: u16,
    pub response: String,
    pub expires_at: i64,
}

impl IdempotencyItem {
    pub(crate) fn from_record(record: &IdempotencyRecord) -> Result<Item, StoreError> {
        serde_dynamo::to_item(IdempotencyItem {
            key: record.key.clone(),
            request_hash: record.request_hash.clone(),
            status: record.status,
            response: record.response.to_string(),
            expires_at: record.expires_at_ms.div_euclid(1000),
        })
        .map_err(|e| StoreError::InvalidAppend(e.to_string()))
    }

    pub(crate) fn into_record(item: Item) -> Result<IdempotencyRecord, StoreError> {
        let item: IdempotencyItem = serde_dynamo::from_item(item)
            .map_err(|e| StoreError::Backend(format!("unreadable idempotency item: {e}").into()))?;
        Ok(IdempotencyRecord {
            response: serde_json::from_str(&item.response)
                .map_err(|e| StoreError::Backend(format!("idempotency record {}: {e}", item.key).into()))?,
            key: item.key,
            request_hash: item.request_hash,
            status: item.status,
            expires_at_ms: item.expires_at.saturating_mul(1000),
        })
    }
}
