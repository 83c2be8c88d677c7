//! The stream publisher: DynamoDB Streams records of the events table → one
//! CloudEvent per appended event on the EventBridge bus.
//!
//! Only `INSERT`s are events (items are never updated; a `REMOVE` is a TTL or
//! an operator, not history). Entries go out in `PutEvents` calls of at most
//! 10 entries and 256 KiB; `FailedEntryCount` is always checked and the
//! failed entries alone are retried with jittered backoff. What still fails
//! is reported as a partial batch failure naming the *first* unpublished
//! record: the event source mapping redelivers from there, so nothing is
//! lost, and events after it that were already published arrive twice —
//! which the projectors' checkpoints absorb. It never drops a record.

use std::time::{Duration, Instant};

use aws_lambda_events::event::dynamodb::{Event as StreamEvent, EventRecord};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use tally_core::EventEnvelope;
use tally_store_dynamodb::items::EventItem;
use tally_store_dynamodb::{MissingSetting, Settings};
use tracing::Instrument;

use crate::detail::EventDetail;
use crate::telemetry::metric;

/// PutEvents takes at most 10 entries.
pub const PUT_EVENTS_MAX_ENTRIES: usize = 10;
/// An entry, and a whole PutEvents request, is at most 256 KiB.
pub const PUT_EVENTS_MAX_BYTES: usize = 256 * 1024;
/// The `source` of every event Tally publishes (rules match on it).
pub const EVENT_SOURCE: &str = "tally";
/// Environment variable naming the bus.
pub const ENV_EVENT_BUS: &str = "TALLY_EVENT_BUS";

/// How the publisher publishes.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// The bus name.
    pub bus_name: String,
    /// The `source` of the entries.
    pub source: String,
    /// PutEvents attempts per batch of entries before the record is reported failed.
    pub max_attempts: u32,
    /// Largest entry sent whole; larger events go by reference.
    pub inline_limit: usize,
}

impl PublisherConfig {
    /// The defaults for bus `bus_name`.
    pub fn new(bus_name: impl Into<String>) -> Self {
        Self {
            bus_name: bus_name.into(),
            source: EVENT_SOURCE.to_owned(),
            max_attempts: 4,
            inline_limit: PUT_EVENTS_MAX_BYTES,
        }
    }

    /// The defaults for the bus named by `TALLY_EVENT_BUS`.
    pub fn from_settings(settings: &impl Settings) -> Result<Self, MissingSetting> {
        settings.require(ENV_EVENT_BUS).map(Self::new)
    }
}

/// Publishes stream records to EventBridge.
#[derive(Debug, Clone)]
pub struct Publisher {
    client: Client,
    config: PublisherConfig,
}

/// One event ready to go: the record it came from, and its entry.
struct Outgoing {
    sequence_number: String,
    size: usize,
    entry: PutEventsRequestEntry,
    event: EventEnvelope,
}

/// Why a record could not be turned into an entry.
#[derive(Debug, thiserror::Error)]
enum RecordError {
    #[error("stream record without a sequence number")]
    NoSequenceNumber,
    #[error("unreadable event item: {0}")]
    Item(String),
    #[error("cannot serialise the detail: {0}")]
    Detail(#[from] serde_json::Error),
}

/// The size EventBridge counts for an entry (its documented formula:
/// time 14 bytes, then source, detail type and detail in UTF-8).
fn entry_size(source: &str, detail_type: &str, detail: &str) -> usize {
    14 + source.len() + detail_type.len() + detail.len()
}

impl Publisher {
    /// A publisher over `client`.
    pub fn new(client: Client, config: PublisherConfig) -> Self {
        Self { client, config }
    }

    fn outgoing(&self, record: &EventRecord) -> Result<Option<Outgoing>, RecordError> {
        if record.event_name != "INSERT" {
            return Ok(None);
        }
        let sequence_number = record
            .change
            .sequence_number
            .clone()
            .ok_or(RecordError::NoSequenceNumber)?;
        let item: EventItem =
            serde_dynamo::from_item(record.change.new_image.clone()).map_err(|e| RecordError::Item(e.to_string()))?;
        let (event, _) = item.into_envelope().map_err(|e| RecordError::Item(e.to_string()))?;
        let mut detail = EventDetail::inline(&event, &self.config.source);
        let mut text = serde_json::to_string(&detail)?;
        if entry_size(&self.config.source, &event.event_type, &text) > self.config.inline_limit {
            detail = detail.by_reference();
            text = serde_json::to_string(&detail)?;
        }
        let entry = PutEventsRequestEntry::builder()
            .event_bus_name(&self.config.bus_name)
            .source(&self.config.source)
            .detail_type(&event.event_type)
            .detail(&text)
            .build();
        Ok(Some(Outgoing {
            sequence_number,
            size: entry_size(&self.config.source, &event.event_type, &text),
            entry,
            event,
        }))
    }

    /// Sends `batch`, retrying failed entries; returns the indexes (into
    /// `batch`) that were still not published after the last attempt.
    async fn send(&self, batch: &[Outgoing]) -> Vec<usize> {
        let mut pending: Vec<usize> = (0..batch.len()).collect();
        for attempt in 1..=self.config.max_attempts {
            if attempt > 1 {
                metrics::counter!(metric::PUBLISH_RETRIES).increment(pending.len() as u64);
                // Full jitter: concurrent shards do not retry in lock step.
                let cap = 50u64 << attempt.min(6);
                tokio::time::sleep(Duration::from_millis(fastrand::u64(0..=cap))).await;
            }
            let entries: Vec<PutEventsRequestEntry> = pending.iter().map(|&i| batch[i].entry.clone()).collect();
            match self.client.put_events().set_entries(Some(entries)).send().await {
                Ok(out) => {
                    // Result entries line up with request entries; one with
                    // an error code was not published.
                    let results = out.entries();
                    let failed: Vec<usize> = pending
                        .iter()
                        .enumerate()
                        .filter(|(k, _)| results.get(*k).is_none_or(|r| r.error_code().is_some()))
                        .map(|(_, &i)| i)
                        .collect();
                    for (k, result) in results.iter().enumerate() {
                        if let (Some(code), Some(&i)) = (result.error_code(), pending.get(k)) {
                            let event = &batch[i].event;
                            tracing::warn!(
                                stream = %event.stream_id, version = event.version, attempt, code,
                                message = result.error_message().unwrap_or_default(),
                                "EventBridge refused an entry"
                            );
                        }
                    }
                    pending = failed;
                }
                Err(error) => {
                    tracing::warn!(attempt, error = %aws_sdk_eventbridge::error::DisplayErrorContext(&error), "PutEvents failed");
                }
            }
            if pending.is_empty() {
                return pending;
            }
        }
        pending
    }

    /// Publishes every `INSERT` of a stream batch, in record order, and
    /// reports the first record that could not be published (if any).
    pub async fn publish(&self, event: StreamEvent) -> DynamoDbEventResponse {
        let started = Instant::now();
        let mut response = DynamoDbEventResponse::default();
        let mut outgoing = Vec::with_capacity(event.records.len());
        for record in &event.records {
            match self.outgoing(record) {
                Ok(Some(item)) => outgoing.push(item),
                Ok(None) => {}
                Err(error) => {
                    // Stop here: the mapping retries from this record, then
                    // (after its finite retries) sends it to the on-failure queue.
                    tracing::error!(%error, event_id = %record.event_id, "cannot publish a stream record");
                    metrics::counter!(metric::PUBLISH_FAILURES).increment(1);
                    response
                        .batch_item_failures
                        .push(failure(record.change.sequence_number.clone()));
                    break;
                }
            }
        }
        for batch in chunks(&outgoing) {
            let span = tracing::info_span!("publish", entries = batch.len());
            let failed = self.send(batch).instrument(span).await;
            let published = batch.len() - failed.len();
            metrics::counter!(metric::EVENTS_PUBLISHED).increment(published as u64);
            for item in batch {
                let lag = chrono::Utc::now().timestamp_millis() - item.event.timestamp_ms;
                metrics::histogram!(metric::PUBLISH_LAG_MS).record(lag.max(0) as f64);
            }
            if let Some(&first) = failed.iter().min() {
                metrics::counter!(metric::PUBLISH_FAILURES).increment(failed.len() as u64);
                let first = &batch[first];
                tracing::error!(
                    stream = %first.event.stream_id, version = first.event.version,
                    "event not published after retries; the stream will redeliver from it"
                );
                // The first unpublished record wins over a later unreadable
                // one: the mapping redelivers everything from it.
                response.batch_item_failures = vec![failure(Some(first.sequence_number.clone()))];
                return response;
            }
        }
        tracing::info!(
            records = event.records.len(),
            events = outgoing.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "stream batch published"
        );
        response
    }
}

fn failure(sequence_number: Option<String>) -> DynamoDbBatchItemFailure {
    let mut failure = DynamoDbBatchItemFailure::default();
    failure.item_identifier = sequence_number;
    failure
}

/// Splits entries into PutEvents calls: at most 10 entries and 256 KiB each.
fn chunks(outgoing: &[Outgoing]) -> Vec<&[Outgoing]> {
    let mut chunks = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, item) in outgoing.iter().enumerate() {
        let full = i - start == PUT_EVENTS_MAX_ENTRIES || (i > start && bytes + item.size > PUT_EVENTS_MAX_BYTES);
        if full {
            chunks.push(&outgoing[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += item.size;
    }
    if start < outgoing.len() {
        chunks.push(&outgoing[start..]);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outgoing(size: usize) -> Outgoing {
        Outgoing {
            sequence_number: String::new(),
            size,
            entry: PutEventsRequestEntry::builder().build(),
            event: EventEnvelope {
                event_id: uuid::Uuid::nil(),
                stream_id: tally_core::StreamId::parse("order-x").expect("stream"),
                version: 1,
                event_type: "OrderPlaced".into(),
                schema: 1,
                data: serde_json::Value::Null,
                metadata: tally_core::Metadata::default(),
                timestamp_ms: 0,
                hash: String::new(),
                snapshot_digest: None,
            },
        }
    }

    fn sizes(items: &[Outgoing]) -> Vec<usize> {
        chunks(items).iter().map(|c| c.len()).collect()
    }

    #[test]
    fn put_events_calls_hold_at_most_ten_entries() {
        let items: Vec<_> = (0..23).map(|_| outgoing(100)).collect();
        assert_eq!(sizes(&items), vec![10, 10, 3]);
        assert!(sizes(&[]).is_empty());
    }

    #[test]
    fn put_events_calls_hold_at_most_256_kib() {
        let items: Vec<_> = (0..5).map(|_| outgoing(100 * 1024)).collect();
        assert_eq!(sizes(&items), vec![2, 2, 1], "three 100 KiB entries exceed 256 KiB");
        // An entry alone may be as large as the limit itself.
        let items = vec![outgoing(PUT_EVENTS_MAX_BYTES), outgoing(1)];
        assert_eq!(sizes(&items), vec![1, 1]);
    }

    #[test]
    fn the_size_counts_time_source_detail_type_and_detail() {
        assert_eq!(entry_size("tally", "OrderPlaced", "{}"), 14 + 5 + 11 + 2);
    }
}
