//! Group commit when SQLite rolls back the whole transaction, not only one
//! job's savepoint: every write answered "ok" is in the store, every write
//! answered "failed" is not, and the failed ones succeed when retried.
//!
//! The rollback is injected with a trigger (`RAISE(ROLLBACK, …)` on one
//! stream's insert), created by a connection of the test's own; the group is
//! forced by holding SQLite's write lock from that connection while the
//! appends queue up behind the writer.

use rusqlite::Connection;
use serde_json::json;
use tally_core::{AppendBatch, EventStore, Metadata, NewEvent, StoreError, StreamAppend, StreamId, seal};
use tally_store_sqlite::SqliteStore;

/// An append of one event creating `stream`.
fn create(stream: &StreamId) -> AppendBatch {
    let events = seal(
        stream,
        0,
        None,
        vec![NewEvent {
            event_type: "Noted".into(),
            schema: 1,
            data: json!({ "n": stream.as_str() }),
        }],
        &Metadata::default(),
        1_772_323_200_000,
    );
    AppendBatch {
        streams: vec![StreamAppend {
            stream_id: stream.clone(),
            expected_version: 0,
            events,
            snapshot: None,
            view: None,
        }],
        idempotency: None,
    }
}

/// Whether `stream` holds its event, read through the store.
async fn written(store: &SqliteStore, stream: &StreamId) -> bool {
    store.load(stream).await.expect("load").version() == 1
}

/// Given 100 appends queued into one group with the 51st rolling back the
/// whole transaction (a trigger's `RAISE(ROLLBACK)`), then every append
/// answered ok is in the store and every one answered failed is not; the
/// earlier ones are answered failed as retryable (`Unavailable`), the later
/// ones run in a fresh transaction, and retrying the failed ones succeeds.
#[tokio::test(flavor = "current_thread")]
async fn a_transaction_rolled_back_by_sqlite_answers_every_job_truthfully() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("events.db");
    let store = SqliteStore::open(&path).expect("open store");
    let other = Connection::open(&path).expect("second connection");
    other
        .execute_batch(
            "CREATE TRIGGER inject_rollback BEFORE INSERT ON events
             WHEN NEW.stream_id = 'note-poison'
             BEGIN SELECT RAISE(ROLLBACK, 'injected'); END;",
        )
        .expect("create the trigger");

    // Hold the write lock: the writer takes the first append and waits on
    // BEGIN IMMEDIATE while the others queue behind it, in submission
    // order (a current-thread runtime polls spawned tasks in order, and an
    // append reaches the writer's queue on its first poll).
    other.execute_batch("BEGIN IMMEDIATE").expect("take the write lock");
    let streams: Vec<StreamId> = std::iter::once("note-first".to_owned())
        .chain((0..100).map(|i| {
            if i == 50 {
                "note-poison".to_owned()
            } else {
                format!("note-{i}")
            }
        }))
        .map(|s| StreamId::parse(s).expect("stream id"))
        .collect();
    let tasks: Vec<_> = streams
        .iter()
        .map(|stream| {
            let (store, batch) = (store.clone(), create(stream));
            tokio::spawn(async move { store.append(batch).await })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    other.execute_batch("COMMIT").expect("release the write lock");

    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("join"));
    }
    let mut failed = Vec::new();
    for (stream, answer) in streams.iter().zip(&answers) {
        let present = written(&store, stream).await;
        match answer {
            Ok(_) => assert!(present, "{stream} was answered ok but is not in the store"),
            Err(error) => {
                assert!(!present, "{stream} was answered failed ({error}) but is in the store");
                failed.push((stream.clone(), error));
            }
        }
    }
    let poison = StreamId::parse("note-poison").expect("stream id");
    assert!(
        failed.iter().any(|(s, _)| *s == poison),
        "the injected rollback failed its job"
    );
    let innocent: Vec<_> = failed.iter().filter(|(s, _)| *s != poison).collect();
    assert!(
        !innocent.is_empty(),
        "the poison shared its group with earlier appends (else this test proves nothing)"
    );
    for (stream, error) in &innocent {
        assert!(
            matches!(error, StoreError::Unavailable(_)),
            "{stream}: rolled back with the group, so retryable: {error}"
        );
    }
    let after = streams.iter().skip_while(|s| **s != poison).skip(1);
    for stream in after.clone() {
        assert!(
            written(&store, stream).await,
            "{stream}, after the poison, ran in a fresh transaction"
        );
    }

    for (stream, _) in innocent {
        store
            .append(create(stream))
            .await
            .expect("a retry of a rolled-back append succeeds");
        assert!(written(&store, stream).await);
    }
}
