//! Rebuilds and verification on the SQLite store, through the core's
//! generic drivers: blue-green generations, truncate-and-replay, resuming,
//! the legacy layout's migration, and the out-of-band checks (hash chains,
//! recomputed models).
//!
//! Corruption goes around the store: a separate rusqlite connection rewrites
//! a row or an event, as a tamperer (or a bug) would.

use std::path::Path;

use chrono::NaiveDate;
use rusqlite::{Connection, params};
use tally_core::chain::verify_all_chains;
use tally_core::projection::{
    ModelGenerations, RebuildMode, RebuildOptions, RowDiff, StoredModel, rebuild, verify_projection,
};
use tally_core::{AppendBatch, Decider, EventStore, Metadata, StreamAppend, StreamId, encode_event, seal};
use tally_domain::recompute::MemoryModel;
use tally_domain::views::{ORDER_SUMMARY, ReadModels, SALES_BY_DAY};
use tally_domain::{Cents, Currency, CustomerId, Order, OrderEvent, OrderId, OrderLine, OrderStatus, Quantity, Sku};
use tally_store_sqlite::{SqliteGenerations, SqliteStore, Tailer, live_sink, projection_sink};

const DAY_MS: i64 = 86_400_000;
/// 2026-03-01T00:00:00Z.
const START_MS: i64 = 1_772_323_200_000;

fn line(i: u64) -> OrderLine {
    OrderLine {
        sku: Sku::parse(format!("S{}", i % 7)).expect("sku"),
        quantity: Quantity::new(1 + i % 4).expect("quantity"),
        unit_price_cents: Cents::new(100 + i).expect("cents"),
    }
}

/// Order `i`'s events: placed, then confirmed, shipped or cancelled by `i`.
fn order_events(i: u64) -> Vec<OrderEvent> {
    let lines = vec![line(i), line(i + 1)];
    let mut events = vec![OrderEvent::OrderPlaced {
        order_id: OrderId::parse(format!("o{i}")).expect("order id"),
        customer_id: CustomerId::parse(format!("c{}", i % 5)).expect("customer"),
        lines: lines.clone(),
        currency: Currency::usd(),
    }];
    if !i.is_multiple_of(3) {
        events.push(OrderEvent::OrderConfirmed {});
    }
    match i % 4 {
        1 => events.push(OrderEvent::OrderShipped {}),
        2 => events.push(OrderEvent::OrderCancelled { reason: None, lines }),
        _ => {}
    }
    if i.is_multiple_of(3) && i % 4 == 1 {
        // Shipping needs a confirmation: keep the history legal.
        events.insert(1, OrderEvent::OrderConfirmed {});
    }
    events
}

/// Appends orders `range` directly, each order's events over several days.
async fn seed(store: &SqliteStore, range: std::ops::Range<u64>) {
    let appends: Vec<StreamAppend> = range
        .map(|i| {
            let stream = StreamId::of(Order::CATEGORY, &format!("o{i}")).expect("stream");
            let encoded = order_events(i)
                .iter()
                .map(|e| encode_event::<Order>(e).expect("encode"))
                .collect::<Vec<_>>();
            let mut events = Vec::new();
            let mut head = None::<String>;
            for (n, event) in encoded.into_iter().enumerate() {
                let sealed = seal(
                    &stream,
                    n as u64,
                    head.as_deref(),
                    vec![event],
                    &Metadata::default(),
                    START_MS + (i as i64 % 9) * DAY_MS + n as i64 * DAY_MS,
                );
                head = sealed.last().map(|e| e.hash.clone());
                events.extend(sealed);
            }
            StreamAppend {
                stream_id: stream,
                expected_version: 0,
                events,
                snapshot: None,
                view: None,
            }
        })
        .collect();
    for chunk in appends.chunks(200) {
        store
            .append(AppendBatch {
                streams: chunk.to_vec(),
                idempotency: None,
            })
            .await
            .expect("seed");
    }
}

async fn drain(store: &SqliteStore) {
    let sinks = [ORDER_SUMMARY, SALES_BY_DAY]
        .iter()
        .filter_map(|name| projection_sink(name, store))
        .collect();
    Tailer::new(store.clone(), sinks).drain().await.expect("tail");
}

fn open(dir: &Path) -> SqliteStore {
    SqliteStore::open(dir.join("tally.db")).expect("open store")
}

fn live_generation(path: &Path, projection: &str) -> u64 {
    Connection::open(path)
        .expect("open")
        .query_row(
            "SELECT generation FROM projection_generations WHERE projection = ?1 AND state = 'live'",
            [projection],
            |r| r.get(0),
        )
        .expect("live generation")
}

/// Rewrites order `order_id`'s summary row in the live generation, by hand.
fn corrupt_summary(path: &Path, order_id: &str, status: &str) {
    let table = format!("order_summary_g{}", live_generation(path, ORDER_SUMMARY));
    let conn = Connection::open(path).expect("open");
    let row: String = conn
        .query_row(
            &format!("SELECT row FROM {table} WHERE order_id = ?1"),
            [order_id],
            |r| r.get(0),
        )
        .expect("row");
    let mut row: serde_json::Value = serde_json::from_str(&row).expect("json");
    row["status"] = serde_json::json!(status);
    let changed = conn
        .execute(
            &format!("UPDATE {table} SET row = ?1 WHERE order_id = ?2"),
            params![row.to_string(), order_id],
        )
        .expect("update");
    assert_eq!(changed, 1);
}

async fn status_of(store: &SqliteStore, order_id: &str) -> Option<OrderStatus> {
    store
        .order_summary(&OrderId::parse(order_id).expect("id"))
        .await
        .expect("read")
        .map(|row| row.status)
}

async fn verdict(store: &SqliteStore, projection: &str) -> tally_core::projection::ProjectionVerdict {
    let memory = MemoryModel::new(projection).expect("model");
    let stored = live_sink(projection, store).expect("sink");
    verify_projection(store, &stored, &memory, Some(Order::CATEGORY), 1_000, &mut ())
        .await
        .expect("verify")
}

fn options(finish: bool) -> RebuildOptions {
    RebuildOptions {
        chunk: 100,
        catch_up: 10,
        finish,
    }
}

/// Given a live model with a row corrupted by hand, when a blue-green
/// rebuild replays beside it, then readers see the old generation (corrupted
/// row and all) until the switch, the events appended meanwhile end up in
/// the new one, and after the switch readers see the repaired model and the
/// old tables are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_switches_readers_in_one_step() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path());
    seed(&store, 0..300).await;
    drain(&store).await;
    corrupt_summary(store.path(), "o1", "cancelled");
    assert_eq!(status_of(&store, "o1").await, Some(OrderStatus::Cancelled));
    let old = live_generation(store.path(), ORDER_SUMMARY);

    let generations = SqliteGenerations::new(&store, ORDER_SUMMARY).expect("generations");
    let built = rebuild(&store, &generations, RebuildMode::BlueGreen, options(false), &mut ())
        .await
        .expect("replay without switching");
    assert!(!built.finished && built.replayed > 0, "{built:?}");
    // Still the old generation: corrupted row, nothing of the new one visible.
    assert_eq!(status_of(&store, "o1").await, Some(OrderStatus::Cancelled));
    assert_eq!(live_generation(store.path(), ORDER_SUMMARY), old);

    // Commands accepted meanwhile: projected live, and still to come to the build.
    seed(&store, 300..320).await;
    drain(&store).await;
    assert_eq!(status_of(&store, "o301").await, Some(OrderStatus::Shipped));

    let finished = rebuild(&store, &generations, RebuildMode::BlueGreen, options(true), &mut ())
        .await
        .expect("resume and switch");
    assert!(finished.resumed && finished.finished, "{finished:?}");
    assert_eq!(finished.build_generation, built.build_generation);
    assert!(finished.replayed >= 20, "the new orders were caught up: {finished:?}");
    assert_eq!(finished.dropped, 1);
    assert_eq!(live_generation(store.path(), ORDER_SUMMARY), built.build_generation);
    assert_eq!(status_of(&store, "o1").await, Some(OrderStatus::Shipped));
    assert_eq!(status_of(&store, "o301").await, Some(OrderStatus::Shipped));
    let old_table: Option<String> = Connection::open(store.path())
        .expect("open")
        .query_row(
            "SELECT name FROM sqlite_master WHERE name = ?1",
            [format!("order_summary_g{old}")],
            |r| r.get(0),
        )
        .ok();
    assert_eq!(old_table, None, "the old generation is dropped");

    // The live tail goes on into the new generation.
    seed(&store, 320..330).await;
    drain(&store).await;
    assert_eq!(status_of(&store, "o328").await, Some(OrderStatus::Confirmed));
    assert!(verdict(&store, ORDER_SUMMARY).await.is_consistent());
}

/// Given a corrupted row and a partly fed sales model, when a truncate
/// rebuild empties and replays the live generation, then both models equal
/// an in-order replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncate_and_replay_repairs_the_live_generation() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path());
    seed(&store, 0..200).await;
    drain(&store).await;
    corrupt_summary(store.path(), "o5", "placed");
    let before = verdict(&store, ORDER_SUMMARY).await;
    assert_eq!(before.diffs.len(), 1);

    for projection in [ORDER_SUMMARY, SALES_BY_DAY] {
        let generations = SqliteGenerations::new(&store, projection).expect("generations");
        let report = rebuild(&store, &generations, RebuildMode::Truncate, options(true), &mut ())
            .await
            .expect("truncate");
        assert!(report.finished && !report.resumed, "{report:?}");
        let verdict = verdict(&store, projection).await;
        assert!(verdict.is_consistent() && verdict.behind.is_empty(), "{verdict:?}");
    }
    assert_eq!(status_of(&store, "o5").await, Some(OrderStatus::Shipped));
}

/// Given a rebuild stopped after a few chunks (as if killed), when it runs
/// again, then it resumes from its recorded position, not from scratch, and
/// the model equals an in-order replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_rebuild_resumes_from_its_progress() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path());
    seed(&store, 0..400).await;
    for mode in [RebuildMode::BlueGreen, RebuildMode::Truncate] {
        let generations = SqliteGenerations::new(&store, SALES_BY_DAY).expect("generations");
        let build = generations.begin(mode).await.expect("begin");
        let mut cursor = build.cursor;
        for _ in 0..3 {
            let chunk = tally_core::projection::History::read_after(&store, &cursor, 50, Some("order"))
                .await
                .expect("read");
            generations
                .apply_chunk(&build, &chunk.events, &chunk.end)
                .await
                .expect("apply");
            cursor = chunk.end;
        }
        // Killed here. Run again:
        let report = rebuild(&store, &generations, mode, options(true), &mut ())
            .await
            .expect("resume");
        assert!(report.resumed, "{report:?}");
        assert_eq!(
            report.applied.duplicates, 0,
            "resumed exactly where it stopped: {report:?}"
        );
        let verdict = verdict(&store, SALES_BY_DAY).await;
        assert!(
            verdict.is_consistent() && verdict.behind.is_empty(),
            "{mode:?}: {verdict:?}"
        );
    }
}

/// Given one row changed by hand, when the projection is verified, then
/// exactly that row is reported, side by side; an untouched model has none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_exactly_the_changed_row() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path());
    seed(&store, 0..100).await;
    drain(&store).await;
    let clean = verdict(&store, ORDER_SUMMARY).await;
    assert!(clean.is_consistent() && clean.behind.is_empty(), "{clean:?}");
    assert_eq!(clean.rows, 100);

    corrupt_summary(store.path(), "o42", "shipped");
    let found = verdict(&store, ORDER_SUMMARY).await;
    match found.diffs.as_slice() {
        [RowDiff::Differs { key, expected, stored }] => {
            assert_eq!(key, "o42");
            assert_eq!(
                (expected["status"].as_str(), stored["status"].as_str()),
                (Some("cancelled"), Some("shipped"))
            );
        }
        other => panic!("expected one differing row, got {other:?}"),
    }

    // Lag is not a difference: new events the tail has not fed yet.
    seed(&store, 100..103).await;
    let lagging = verdict(&store, SALES_BY_DAY).await;
    assert!(lagging.is_consistent(), "{lagging:?}");
    assert_eq!(lagging.behind.len(), 3);
}

/// Given one event's data changed in place, when every chain is walked, then
/// exactly that stream is named, at exactly that version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_chain_names_the_tampered_event() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path());
    seed(&store, 0..50).await;
    let report = verify_all_chains(&store, 7, &mut (), &mut |_| {}).await.expect("walk");
    assert!(report.breaks.is_empty(), "{report:?}");
    assert_eq!(report.streams, 50);

    let conn = Connection::open(store.path()).expect("open");
    conn.execute(
        "UPDATE events SET data = json_set(data, '$.customer_id', 'mallory') WHERE stream_id = 'order-o17' AND version = 1",
        [],
    )
    .expect("tamper");
    conn.execute(
        "UPDATE events SET data = 'not json' WHERE stream_id = 'order-o23' AND version = 2",
        [],
    )
    .expect("tamper");
    let report = verify_all_chains(&store, 7, &mut (), &mut |_| {}).await.expect("walk");
    let found: Vec<(String, u64)> = report
        .breaks
        .iter()
        .map(|b| (b.stream.to_string(), b.version))
        .collect();
    assert_eq!(found, vec![("order-o17".to_owned(), 1), ("order-o23".to_owned(), 2)]);
}

/// Given a database in the layout before generations (one `order_summary`,
/// `sales_by_day` and `checkpoints` table), when the store opens it, then
/// its rows and checkpoints become generation 1 and the old tables go.
#[tokio::test]
async fn a_database_from_before_generations_is_migrated() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("legacy.db");
    {
        let conn = Connection::open(&path).expect("open");
        conn.execute_batch(
            "CREATE TABLE order_summary (order_id TEXT PRIMARY KEY, customer_id TEXT NOT NULL,
                 placed_at_ms INTEGER NOT NULL, version INTEGER NOT NULL, row TEXT NOT NULL);
             CREATE TABLE sales_by_day (day TEXT PRIMARY KEY, orders INTEGER NOT NULL, units INTEGER NOT NULL,
                 revenue_cents INTEGER NOT NULL);
             CREATE TABLE checkpoints (projection TEXT NOT NULL, stream_id TEXT NOT NULL, version INTEGER NOT NULL,
                 PRIMARY KEY (projection, stream_id));
             INSERT INTO sales_by_day VALUES ('2026-03-01', 2, 5, 1500);
             INSERT INTO checkpoints VALUES ('sales_by_day', 'order-a', 1), ('sales_by_day', 'order-b', 1);",
        )
        .expect("legacy schema");
    }
    let store = SqliteStore::open(&path).expect("open migrates");
    let day = NaiveDate::from_ymd_opt(2026, 3, 1).expect("day");
    let sales = store.sales_by_day(day, day).await.expect("read");
    assert_eq!((sales.len(), sales[0].revenue_cents), (1, 1500));
    let snapshot = live_sink(SALES_BY_DAY, &store)
        .expect("sink")
        .snapshot()
        .await
        .expect("snapshot");
    assert_eq!(snapshot.checkpoints.len(), 2);
    drop(store);
    let legacy: i64 = Connection::open(&path)
        .expect("open")
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('order_summary', 'sales_by_day', 'checkpoints')",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(legacy, 0);
    // Opening again changes nothing.
    SqliteStore::open(&path).expect("open again");
}
