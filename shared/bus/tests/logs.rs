//! The projector's logs are JSON lines that carry the event's correlation
//! and W3C trace ids (from the CloudEvent's extensions), so a failure in a
//! projector joins the request that wrote the event. No AWS here: the
//! handler runs over an in-memory read model.

use std::io::Write;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tally_bus::Projector;
use tally_core::{
    AppendBatch, AppendOutcome, ApplyOutcome, EventEnvelope, EventStore, IdempotencyRecord, LoadedStream,
    ProjectionError, ProjectionSink, StoreError, StreamId,
};

/// A read model that accepts every event in order.
#[derive(Default)]
struct Accepting(Mutex<u64>);

#[async_trait]
impl ProjectionSink for Accepting {
    fn name(&self) -> &str {
        "order_summary"
    }
    fn follows(&self, _: &StreamId) -> bool {
        true
    }
    async fn checkpoint(&self, _: &StreamId) -> Result<u64, ProjectionError> {
        Ok(*self.0.lock().expect("lock"))
    }
    async fn apply(&self, event: &EventEnvelope) -> Result<ApplyOutcome, ProjectionError> {
        if event.data.get("poison").is_some() {
            return Err(ProjectionError::Poison {
                stream: event.stream_id.clone(),
                version: event.version,
                reason: "cannot decode".into(),
            });
        }
        *self.0.lock().expect("lock") = event.version;
        Ok(ApplyOutcome::Applied)
    }
}

/// The store is never read: deliveries are in order.
struct Unread;

#[async_trait]
impl EventStore for Unread {
    async fn load(&self, _: &StreamId) -> Result<LoadedStream, StoreError> {
        unreachable!()
    }
    async fn read_range(&self, _: &StreamId, _: u64, _: Option<u64>) -> Result<Vec<EventEnvelope>, StoreError> {
        unreachable!()
    }
    async fn read_until(&self, _: &StreamId, _: i64) -> Result<Vec<EventEnvelope>, StoreError> {
        unreachable!()
    }
    async fn append(&self, _: AppendBatch) -> Result<AppendOutcome, StoreError> {
        unreachable!()
    }
    async fn idempotency_record(&self, _: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        unreachable!()
    }
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn message(data: serde_json::Value) -> String {
    serde_json::json!({
        "version": "0",
        "detail-type": "OrderPlaced",
        "source": "tally",
        "detail": {
            "specversion": "1.0",
            "id": "019ab0c4-2f1e-7c3a-9d41-6f3b2a1c0e01",
            "source": "tally",
            "type": "OrderPlaced",
            "subject": "order-log-1",
            "streamversion": 1,
            "time": "2026-11-23T08:00:00.000Z",
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "correlationid": "checkout-42",
            "data": {
                "event_id": "019ab0c4-2f1e-7c3a-9d41-6f3b2a1c0e01",
                "stream_id": "order-log-1",
                "version": 1,
                "type": "OrderPlaced",
                "schema": 2,
                "data": data,
                "metadata": { "correlation_id": "checkout-42" },
                "timestamp_ms": 1795424400000_i64,
                "hash": "00"
            }
        }
    })
    .to_string()
}

/// A failing event's error line is JSON and names its stream, version,
/// correlation id and trace id.
#[test]
fn a_failure_is_logged_as_json_with_the_events_correlation_and_trace_ids() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_writer(move || writer.clone())
        .finish();
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let projector = Projector::new(Arc::new(Unread), Arc::new(Accepting::default()));
    tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            let failed = projector
                .project_body(&message(serde_json::json!({ "poison": true })))
                .await;
            assert!(failed.is_err());
        })
    });
    let text = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf-8");
    let line: serde_json::Value = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("every log line is JSON"))
        .find(|l| l["level"] == "ERROR")
        .unwrap_or_else(|| panic!("no error line in {text}"));
    let span = &line["span"];
    assert_eq!(span["stream"], "order-log-1", "{line}");
    assert_eq!(span["version"], 1, "{line}");
    assert_eq!(span["correlation_id"], "checkout-42", "{line}");
    assert_eq!(span["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736", "{line}");
    assert_eq!(span["projection"], "order_summary", "{line}");
    assert!(
        line["fields"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot decode")),
        "{line}"
    );
}
