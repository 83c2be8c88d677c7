//! The wire shape of an event on the bus: a CloudEvents 1.0 document as the
//! EventBridge `detail`, and the EventBridge envelope SQS delivers it in.
//!
//! The CloudEvent carries the whole stored envelope as `data` (schema as
//! stored: consumers upcast, the bus never does), its stream and version as
//! `subject` and `streamversion`, and the trace context (`traceparent`,
//! `correlationid`, `causationid` extensions) so a consumer's logs join the
//! request's. An event too large for EventBridge travels by reference: no
//! `data`, a `dataref` naming the stored event, which the consumer reads
//! from the event store.

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use serde::{Deserialize, Serialize};
use tally_core::{EventEnvelope, EventStore, StoreError, StreamId};

/// The CloudEvents spec version we emit.
pub const SPEC_VERSION: &str = "1.0";

/// An event as the `detail` of an EventBridge entry (CloudEvents 1.0,
/// structured mode, with extensions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventDetail {
    /// Always `1.0`.
    pub specversion: String,
    /// The event id (UUIDv7): unique, so consumers may deduplicate on it.
    pub id: String,
    /// The producer, e.g. `tally`.
    pub source: String,
    /// The event type, e.g. `OrderPlaced`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The stream the event belongs to.
    pub subject: StreamId,
    /// The event's version in its stream (extension).
    pub streamversion: u64,
    /// When the event was appended (RFC 3339).
    pub time: String,
    /// W3C trace context of the request that wrote the event (extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// Correlation id of the user action (extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlationid: Option<String>,
    /// What caused the event (extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causationid: Option<String>,
    /// `application/json` when `data` is present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacontenttype: Option<String>,
    /// The stored envelope, or `None` when it travels by reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<EventEnvelope>,
    /// Where to read the event when `data` is absent (extension):
    /// `tally:events/<stream_id>/<version>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataref: Option<String>,
}

/// What SQS delivers from an EventBridge rule target: the EventBridge
/// envelope with our detail (`account` is optional: emulators omit it).
pub type BusMessage = EventBridgeEvent<EventDetail>;

/// Why a bus message cannot be turned back into an event.
#[derive(Debug, thiserror::Error)]
pub enum DetailError {
    /// The message body is not an EventBridge envelope with our detail.
    #[error("not a Tally event message: {0}")]
    Malformed(#[source] serde_json::Error),
    /// The detail's data disagrees with its own subject or version.
    #[error("detail names {subject} v{version} but carries {data_stream} v{data_version}")]
    Inconsistent {
        /// The subject.
        subject: StreamId,
        /// The version extension.
        version: u64,
        /// The data's stream.
        data_stream: StreamId,
        /// The data's version.
        data_version: u64,
    },
    /// A by-reference event is not in the event store.
    #[error("{stream} v{version} is not in the event store")]
    Missing {
        /// The stream.
        stream: StreamId,
        /// The version.
        version: u64,
    },
    /// Reading a by-reference event failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl EventDetail {
    /// The detail for `event`, carrying it whole.
    pub fn inline(event: &EventEnvelope, source: &str) -> Self {
        let time = chrono::DateTime::from_timestamp_millis(event.timestamp_ms)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        Self {
            specversion: SPEC_VERSION.to_owned(),
            id: event.event_id.to_string(),
            source: source.to_owned(),
            event_type: event.event_type.clone(),
            subject: event.stream_id.clone(),
            streamversion: event.version,
            time,
            traceparent: event.metadata.traceparent.clone(),
            correlationid: event.metadata.correlation_id.clone(),
            causationid: event.metadata.causation_id.clone(),
            datacontenttype: Some("application/json".to_owned()),
            data: Some(event.clone()),
            dataref: None,
        }
    }

    /// The same detail without its data: a reference to the stored event.
    pub fn by_reference(mut self) -> Self {
        self.dataref = Some(format!("tally:events/{}/{}", self.subject, self.streamversion));
        self.data = None;
        self.datacontenttype = None;
        self
    }

    /// Parses an SQS message body.
    pub fn from_message_body(body: &str) -> Result<BusMessage, DetailError> {
        serde_json::from_str(body).map_err(DetailError::Malformed)
    }

    /// The event: the carried data, or the stored event for a reference.
    pub async fn into_envelope(self, store: &(impl EventStore + ?Sized)) -> Result<EventEnvelope, DetailError> {
        match self.data {
            Some(event) if event.stream_id == self.subject && event.version == self.streamversion => Ok(event),
            Some(event) => Err(DetailError::Inconsistent {
                subject: self.subject,
                version: self.streamversion,
                data_stream: event.stream_id,
                data_version: event.version,
            }),
            None => {
                let (stream, version) = (self.subject, self.streamversion);
                let mut found = store.read_range(&stream, version, Some(version)).await?;
                match found.pop() {
                    Some(event) if event.version == version => Ok(event),
                    _ => Err(DetailError::Missing { stream, version }),
                }
            }
        }
    }
}
