//! `GET /streams/{id}/state?at=` on a long stream: the answer is folded from
//! the newest verified snapshot at or before the point, so it reads a bounded
//! number of events however long the stream is (the query Lambda has
//! 256 MB), and without a usable snapshot it replays page by page.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tally_api::{ApiConfig, AppState};
use tally_core::{
    AppendBatch, AppendOutcome, At, Decider, EventEnvelope, EventStore, IdempotencyRecord, LoadedStream, Metadata,
    REPLAY_PAGE, Snapshot, StoreError, StreamAppend, StreamId, encode_event, seal_with_snapshot,
};
use tally_domain::{Inventory, InventoryEvent, InventoryState, ProductName, Quantity, Sku};
use tally_store_sqlite::SqliteStore;
use tower::ServiceExt;

/// Events in the long stream, and how often a snapshot was stored.
const LENGTH: u64 = 100_000;
const SNAPSHOT_EVERY: u64 = 10_000;
/// Each chunk of `SNAPSHOT_EVERY` events is appended one second after the last.
const T0_MS: i64 = 1_800_000_000_000;

/// The store, counting the most events any one read handed back: what the
/// route holds in memory at once.
struct Watched {
    inner: SqliteStore,
    most_events_per_read: AtomicUsize,
}

impl Watched {
    fn saw(&self, events: usize) {
        self.most_events_per_read.fetch_max(events, Ordering::Relaxed);
    }
}

#[async_trait::async_trait]
impl EventStore for Watched {
    async fn load(&self, stream: &StreamId) -> Result<LoadedStream, StoreError> {
        let loaded = self.inner.load(stream).await?;
        self.saw(loaded.events.len());
        Ok(loaded)
    }

    async fn read_range(
        &self,
        stream: &StreamId,
        from: u64,
        to: Option<u64>,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let events = self.inner.read_range(stream, from, to).await?;
        self.saw(events.len());
        Ok(events)
    }

    async fn read_until(&self, stream: &StreamId, at_ms: i64) -> Result<Vec<EventEnvelope>, StoreError> {
        let events = self.inner.read_until(stream, at_ms).await?;
        self.saw(events.len());
        Ok(events)
    }

    async fn load_at(&self, stream: &StreamId, at: At) -> Result<LoadedStream, StoreError> {
        let loaded = self.inner.load_at(stream, at).await?;
        self.saw(loaded.events.len());
        Ok(loaded)
    }

    async fn append(&self, batch: AppendBatch) -> Result<AppendOutcome, StoreError> {
        self.inner.append(batch).await
    }

    async fn idempotency_record(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.inner.idempotency_record(key).await
    }
}

/// Appends a registration and `LENGTH - 1` receipts of one unit to
/// `inventory-<sku>`, in chunks of `SNAPSHOT_EVERY`, each chunk's last event
/// carrying a snapshot when `snapshots` says so.
async fn seed(store: &SqliteStore, sku: &str, snapshots: bool) -> StreamId {
    let stream = StreamId::of("inventory", sku).expect("stream");
    let mut state = InventoryState::default();
    let mut head: Option<String> = None;
    for chunk in 0..LENGTH / SNAPSHOT_EVERY {
        let first = chunk * SNAPSHOT_EVERY;
        let events: Vec<InventoryEvent> = (first..first + SNAPSHOT_EVERY)
            .map(|v| match v {
                0 => InventoryEvent::SkuRegistered {
                    sku: Sku::parse(sku).expect("sku"),
                    name: ProductName::parse("Long").expect("name"),
                },
                _ => InventoryEvent::StockReceived {
                    quantity: Quantity::new(1).expect("qty"),
                },
            })
            .collect();
        state = events.iter().fold(state, Inventory::evolve);
        let snapshot = snapshots.then(|| Snapshot {
            version: first + SNAPSHOT_EVERY,
            schema: Inventory::STATE_SCHEMA,
            state: serde_json::to_value(&state).expect("state"),
        });
        let encoded = events
            .iter()
            .map(|e| encode_event::<Inventory>(e).expect("encode"))
            .collect();
        let at_ms = T0_MS + chunk as i64 * 1_000;
        let sealed = seal_with_snapshot(
            &stream,
            first,
            head.as_deref(),
            encoded,
            &Metadata::default(),
            at_ms,
            snapshot.as_ref(),
        );
        head = sealed.last().map(|e| e.hash.clone());
        store
            .append(AppendBatch {
                streams: vec![StreamAppend {
                    stream_id: stream.clone(),
                    expected_version: first,
                    events: sealed,
                    snapshot,
                    view: None,
                }],
                idempotency: None,
            })
            .await
            .expect("seed chunk");
    }
    stream
}

async fn state_of(watched: &Arc<Watched>, stream: &StreamId, at: &str) -> (StatusCode, Value) {
    let state = AppState::new(watched.clone(), Arc::new(watched.inner.clone()), ApiConfig::default());
    let request = Request::get(format!("/streams/{stream}/state?at={at}"))
        .body(Body::empty())
        .expect("request");
    let response = tally_api::router(state).oneshot(request).await.expect("infallible");
    let status = response.status();
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&bytes).expect("JSON"))
}

/// A 100,000-event stream: the state at a version and at a time is right,
/// and no read handed back more than one snapshot interval of events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_at_a_point_of_a_long_stream_reads_from_the_nearest_snapshot() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path().join("long.db")).expect("open");
    let stream = seed(&store, "LONG", true).await;
    let watched = Arc::new(Watched {
        inner: store,
        most_events_per_read: AtomicUsize::new(0),
    });

    // Registered at v1, one unit received at every later version.
    for (at, version) in [
        ("55555".to_owned(), 55_555u64),
        ("100000".to_owned(), 100_000),
        ("10000".to_owned(), 10_000),
        ("1".to_owned(), 1),
        // The chunk appended at T0 + 3 s ends at version 40,000.
        (chrono_at(T0_MS + 3_500), 40_000),
    ] {
        let (status, body) = state_of(&watched, &stream, &at).await;
        assert_eq!(status, StatusCode::OK, "at={at}: {body}");
        assert_eq!(body["version"], version, "at={at}");
        assert_eq!(body["state"]["on_hand"], version - 1, "at={at}: {body}");
    }
    let most = watched.most_events_per_read.load(Ordering::Relaxed) as u64;
    println!("most events in memory from one read: {most} (stream of {LENGTH}, snapshot every {SNAPSHOT_EVERY})");
    assert!(most <= SNAPSHOT_EVERY + 1, "a read handed back {most} events");

    let (status, body) = state_of(&watched, &stream, &chrono_at(T0_MS - 1)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("no_state"))
    );
}

/// A snapshot edited in the database is not the one its event's hash
/// covers: the route does not fold from it, but replays from version 1 one
/// page at a time (chain checked) and answers the true state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_snapshot_is_not_folded_from_and_the_replay_is_paged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("forged.db");
    let store = SqliteStore::open(&path).expect("open");
    let stream = seed(&store, "FORGED", true).await;
    let conn = rusqlite::Connection::open(&path).expect("open behind the store");
    let changed = conn
        .execute(
            "UPDATE events SET snapshot = json_set(snapshot, '$.on_hand', 1000000000)
             WHERE stream_id = ?1 AND version = 50000",
            [stream.as_str()],
        )
        .expect("tamper");
    assert_eq!(changed, 1);
    let watched = Arc::new(Watched {
        inner: store,
        most_events_per_read: AtomicUsize::new(0),
    });
    let (status, body) = state_of(&watched, &stream, "55555").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["version"].as_u64(), body["state"]["on_hand"].as_u64()),
        (Some(55_555), Some(55_554)),
        "the replay's state, not the forged snapshot's"
    );
    let most = watched.most_events_per_read.load(Ordering::Relaxed) as u64;
    println!("most events in memory from one read with a forged snapshot: {most} (replay page {REPLAY_PAGE})");
    assert!(most <= SNAPSHOT_EVERY + 1, "a read handed back {most} events");
}

fn chrono_at(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .expect("time")
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
