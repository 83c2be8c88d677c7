//! The `EventStore` contract suite on the embedded SQLite store, each case
//! over a fresh database file in a temporary directory, plus what only
//! SQLite has: two store instances (two processes, as far as SQLite can
//! tell) sharing one file, racing for the same stream without corrupting it.
//!
//! Tampering goes around the store: a separate rusqlite connection rewrites
//! an event's `data` column and leaves its hash alone.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{Connection, params};
use serde_json::json;
use tally_core::{
    AppendBatch, EventEnvelope, EventStore, Metadata, NewEvent, StoreError, StreamAppend, StreamId, seal, verify_chain,
};
use tally_store_sqlite::SqliteStore;
use tally_tests::contract::{SnapshotTampering, StoreContract, Tampering};
use tempfile::TempDir;
use tokio::sync::Barrier;
use uuid::Uuid;

/// A store over a database file of its own; the directory lives as long as this.
struct Fixture {
    store: SqliteStore,
    _dir: TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path().join("events.db")).expect("open store");
        Self { store, _dir: dir }
    }

    fn contract(&self) -> StoreContract {
        StoreContract::new(self.store.clone())
    }

    fn path(&self) -> PathBuf {
        self.store.path().to_path_buf()
    }
}

/// Rewrites one event's payload with a connection of its own, as a tamperer would.
async fn tamper_sqlite(path: PathBuf, tampering: Tampering) {
    tokio::task::spawn_blocking(move || {
        let conn = Connection::open(path).expect("open the database behind the store");
        let changed = conn
            .execute(
                "UPDATE events SET data = ?1 WHERE stream_id = ?2 AND version = ?3",
                params![
                    tampering.data.to_string(),
                    tampering.stream_id.as_str(),
                    tampering.version
                ],
            )
            .expect("tamper with the event");
        assert_eq!(changed, 1, "exactly one event tampered with");
    })
    .await
    .expect("tamper task");
}

fn integrity_check(path: &Path) -> String {
    let conn = Connection::open(path).expect("open the database");
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity check")
}

/// A new stream appends and loads back exactly as sealed.
#[tokio::test]
async fn append_then_load_back() {
    Fixture::new().contract().append_then_load_back().await;
}

/// A stale, ahead or 0 expected version is a conflict naming the stream, and writes nothing.
#[tokio::test]
async fn wrong_expected_version_writes_nothing() {
    Fixture::new().contract().wrong_expected_version_writes_nothing().await;
}

/// Twenty concurrent appends at one expected version: exactly one wins, round after round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_have_one_winner() {
    Fixture::new().contract().concurrent_appends_have_one_winner().await;
}

/// A three-stream batch with a stale second stream writes nothing anywhere.
#[tokio::test]
async fn multi_stream_batch_is_atomic() {
    Fixture::new().contract().multi_stream_batch_is_atomic().await;
}

/// `read_range` is inclusive, runs to the head on `None`, and is empty beyond it.
#[tokio::test]
async fn read_range_is_inclusive_and_bounded() {
    Fixture::new().contract().read_range_is_inclusive_and_bounded().await;
}

/// `read_until` returns the events sealed at or before an instant.
#[tokio::test]
async fn read_until_filters_by_time() {
    Fixture::new().contract().read_until_filters_by_time().await;
}

/// `load` starts at the newest snapshot; `load_aggregate` reaches the full-replay state.
#[tokio::test]
async fn load_starts_at_newest_snapshot() {
    Fixture::new().contract().load_starts_at_newest_snapshot().await;
}

/// An unknown-schema or corrupt snapshot falls back to a full replay.
#[tokio::test]
async fn unusable_snapshot_falls_back_to_replay() {
    Fixture::new().contract().unusable_snapshot_falls_back_to_replay().await;
}

/// A snapshot of any version but the batch's last event is refused.
#[tokio::test]
async fn snapshot_must_describe_last_event() {
    Fixture::new().contract().snapshot_must_describe_last_event().await;
}

/// Idempotency records are written with the events; a reused key writes nothing.
#[tokio::test]
async fn idempotency_record_is_stored_with_events() {
    Fixture::new()
        .contract()
        .idempotency_record_is_stored_with_events()
        .await;
}

/// The hash chain verifies across single, multi-event, multi-stream and snapshot batches.
#[tokio::test]
async fn hash_chain_verifies_across_batches() {
    Fixture::new().contract().hash_chain_verifies_across_batches().await;
}

/// An event's data rewritten in the database file is named by its version.
#[tokio::test]
async fn tampered_event_is_named_by_version() {
    let fixture = Fixture::new();
    let path = fixture.path();
    fixture
        .contract()
        .tampered_event_is_named_by_version(|tampering| tamper_sqlite(path, tampering))
        .await;
}

/// A snapshot rewritten in the database file is never decided on.
#[tokio::test]
async fn tampered_snapshot_is_never_decided_on() {
    let fixture = Fixture::new();
    let path = fixture.path();
    fixture
        .contract()
        .tampered_snapshot_is_never_decided_on(|tampering: SnapshotTampering| async move {
            tokio::task::spawn_blocking(move || {
                let conn = Connection::open(path).expect("open the database behind the store");
                let changed = conn
                    .execute(
                        "UPDATE events SET snapshot = ?1 WHERE stream_id = ?2 AND version = ?3",
                        params![
                            tampering.state.to_string(),
                            tampering.stream_id.as_str(),
                            tampering.version
                        ],
                    )
                    .expect("tamper with the snapshot");
                assert_eq!(changed, 1, "exactly one snapshot tampered with");
            })
            .await
            .expect("tamper task");
        })
        .await;
}

// ---- SQLite only: two stores, one file ---------------------------------------

/// Versions two processes race for, one after the other.
const SHARED_FILE_ROUNDS: u64 = 25;

/// Writers per process in each round.
const WRITERS_PER_STORE: usize = 4;

/// Two `SqliteStore`s on one file (two processes) race appends on one stream,
/// round after round: exactly one writer wins each version, the stream stays
/// gap-free and chained, both stores read the same history, and SQLite's
/// integrity check passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_file_have_one_winner_per_version() {
    let fixture = Fixture::new();
    let other_process = SqliteStore::open(fixture.path()).expect("open the same file again");
    let stores = [fixture.store.clone(), other_process.clone()];
    let stream = StreamId::of("race", &Uuid::now_v7().simple().to_string()).expect("stream id");

    let mut head: Option<EventEnvelope> = None;
    let mut winners_by_store = [0u64; 2];
    for round in 0..SHARED_FILE_ROUNDS {
        let writers = stores.len() * WRITERS_PER_STORE;
        let start = Arc::new(Barrier::new(writers));
        let mut tasks = Vec::with_capacity(writers);
        for writer in 0..writers {
            let which = writer % stores.len();
            let store = stores[which].clone();
            let start = Arc::clone(&start);
            let events = seal(
                &stream,
                round,
                head.as_ref().map(|e| e.hash.as_str()),
                vec![NewEvent {
                    event_type: "Raced".into(),
                    schema: 1,
                    data: json!({ "round": round, "writer": writer }),
                }],
                &Metadata::default(),
                1_700_000_000_000,
            );
            let batch = AppendBatch {
                streams: vec![StreamAppend {
                    stream_id: stream.clone(),
                    expected_version: round,
                    events: events.clone(),
                    snapshot: None,
                    view: None,
                }],
                idempotency: None,
            };
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                (which, events, store.append(batch).await)
            }));
        }
        let mut winners = Vec::new();
        for task in tasks {
            match task.await.expect("writer task") {
                (which, events, Ok(outcome)) => {
                    assert_eq!(outcome.heads, vec![(stream.clone(), round + 1)]);
                    winners_by_store[which] += 1;
                    winners.extend(events);
                }
                (_, _, Err(StoreError::WrongExpectedVersion { expected, .. })) => assert_eq!(expected, round),
                (_, _, Err(other)) => panic!("a racing append failed with {other:?}, not a version conflict"),
            }
        }
        assert_eq!(winners.len(), 1, "exactly one writer wins version {}", round + 1);
        head = winners.pop();
        let stored = other_process.read_range(&stream, round + 1, None).await.expect("read");
        assert_eq!(
            stored.as_slice(),
            head.as_slice(),
            "both processes see the winner's event"
        );
    }

    let expected_versions: Vec<u64> = (1..=SHARED_FILE_ROUNDS).collect();
    for store in &stores {
        let history = store.read_range(&stream, 1, None).await.expect("read history");
        let versions: Vec<u64> = history.iter().map(|e| e.version).collect();
        assert_eq!(versions, expected_versions, "versions are gap-free");
        assert_eq!(verify_chain(&history), Ok(()));
    }
    assert_eq!(
        fixture.store.count_events().await.expect("count"),
        SHARED_FILE_ROUNDS,
        "no loser's event was written"
    );
    // Not an assertion on fairness, only a hint when reading a failure.
    eprintln!("wins per store: {winners_by_store:?}");
    assert_eq!(integrity_check(&fixture.path()), "ok");
}
