//! `make bench`, in-process half: prints the figures docs/performance.md
//! keeps. Each figure is a plain timed loop over the real code (release
//! build, `--profile bench`), repeated enough to dwarf timer noise; the
//! SQLite figures use the store exactly as `tally serve` does (WAL,
//! `synchronous=FULL`, group commit).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tally_core::chain::verify_all_chains;
use tally_core::projection::{History, RebuildMode, RebuildOptions, rebuild, verify_projection};
use tally_core::{
    AppendBatch, Decider, EventEnvelope, EventStore, Metadata, ProjectionSink, Snapshot, StreamAppend, StreamId,
    deliver, encode_event, fold_events, load_aggregate, seal, seal_with_snapshot,
};
use tally_domain::recompute::MemoryModel;
use tally_domain::views::{ORDER_SUMMARY, SALES_BY_DAY};
use tally_domain::views::{apply_order_summary, sales_delta};
use tally_domain::{
    Cents, Currency, CustomerId, Inventory, InventoryAction, InventoryCommand, InventoryEvent, InventoryState, Order,
    OrderAction, OrderCommand, OrderEvent, OrderId, OrderLine, ProductName, Quantity, Sku,
};
use tally_store_sqlite::{OrderProjectionSink, SqliteGenerations, SqliteStore, live_sink};

const STREAM_LEN: u64 = 100_000;

fn report(name: &str, value: String, goal: &str) {
    println!("{name:<58} {value:>18}   {goal}");
}

fn per_op(elapsed: Duration, ops: u64) -> String {
    format!("{:.0} ns/op", elapsed.as_nanos() as f64 / ops as f64)
}

fn per_second(elapsed: Duration, ops: u64) -> String {
    format!("{:.0} /s", ops as f64 / elapsed.as_secs_f64())
}

fn sku() -> Sku {
    Sku::parse("SKU-BENCH").expect("sku")
}

fn line(i: u64) -> OrderLine {
    OrderLine {
        sku: Sku::parse(format!("S{}", i % 5)).expect("sku"),
        quantity: Quantity::new(1 + i % 3).expect("qty"),
        unit_price_cents: Cents::new(250 + i).expect("cents"),
    }
}

fn decide_and_evolve() {
    let registered = InventoryEvent::SkuRegistered {
        sku: sku(),
        name: ProductName::parse("Bench").expect("name"),
    };
    let stocked = [
        registered,
        InventoryEvent::StockReceived {
            quantity: Quantity::new(1_000_000).expect("qty"),
        },
    ];
    let state = stocked.iter().fold(InventoryState::default(), Inventory::evolve);
    let command = InventoryCommand::new(
        sku(),
        InventoryAction::Reserve {
            order_id: OrderId::parse("o-1").expect("order"),
            quantity: Quantity::new(1).expect("qty"),
        },
    );
    let rounds = 2_000_000u64;
    let start = Instant::now();
    for _ in 0..rounds {
        let events = Inventory::decide(black_box(&state), black_box(&command)).expect("reserve");
        black_box(events.iter().fold(state.clone(), Inventory::evolve));
    }
    report(
        "decide + evolve: inventory Reserve",
        per_op(start.elapsed(), rounds),
        "",
    );

    let place = OrderCommand::new(
        OrderId::parse("o-1").expect("order"),
        OrderAction::Place {
            customer_id: CustomerId::parse("c-1").expect("customer"),
            lines: (0..3).map(line).collect(),
            currency: Currency::usd(),
        },
    );
    let start = Instant::now();
    for _ in 0..rounds {
        let events = Order::decide(black_box(&Default::default()), black_box(&place)).expect("place");
        black_box(events.iter().fold(Default::default(), Order::evolve));
    }
    report(
        "decide + evolve: order Place (3 lines)",
        per_op(start.elapsed(), rounds),
        "",
    );
}

/// A 100k-event inventory stream, sealed as the store would hold it; with
/// `snapshot`, its last event carries (and its hash covers) a snapshot of
/// the final state.
fn inventory_stream(stream: &StreamId, snapshot: bool) -> (Vec<EventEnvelope>, Option<Snapshot>) {
    let events: Vec<InventoryEvent> = (0..STREAM_LEN)
        .map(|v| match v {
            0 => InventoryEvent::SkuRegistered {
                sku: sku(),
                name: ProductName::parse("Bench").expect("name"),
            },
            _ => InventoryEvent::StockReceived {
                quantity: Quantity::new(1).expect("qty"),
            },
        })
        .collect();
    let state = events.iter().fold(InventoryState::default(), Inventory::evolve);
    let encoded = events
        .iter()
        .map(|e| encode_event::<Inventory>(e).expect("encode"))
        .collect();
    let snapshot = snapshot.then(|| Snapshot {
        version: STREAM_LEN,
        schema: Inventory::STATE_SCHEMA,
        state: serde_json::to_value(&state).expect("state"),
    });
    let sealed = seal_with_snapshot(stream, 0, None, encoded, &Metadata::default(), 1, snapshot.as_ref());
    (sealed, snapshot)
}

async fn rehydration(dir: &std::path::Path) {
    let store = SqliteStore::open(dir.join("rehydrate.db")).expect("store");
    for (name, snapshot) in [("inventory-SNAP", true), ("inventory-FULL", false)] {
        let stream = StreamId::parse(name).expect("stream");
        let (events, final_snapshot) = inventory_stream(&stream, snapshot);
        for (i, chunk) in events.chunks(10_000).enumerate() {
            let last = chunk.last().map_or(0, |e| e.version);
            let snapshot = final_snapshot.clone().filter(|_| last == STREAM_LEN);
            store
                .append(AppendBatch {
                    streams: vec![StreamAppend {
                        stream_id: stream.clone(),
                        expected_version: i as u64 * 10_000,
                        events: chunk.to_vec(),
                        snapshot,
                        view: None,
                    }],
                    idempotency: None,
                })
                .await
                .expect("seed");
        }
    }

    let stream = StreamId::parse("inventory-SNAP").expect("stream");
    let rounds = 1_000u32;
    let start = Instant::now();
    for _ in 0..rounds {
        black_box(load_aggregate::<Inventory>(&store, &stream).await.expect("load"));
    }
    let with_snapshot = start.elapsed() / rounds;
    report(
        "rehydrate 100k-event stream from SQLite, with snapshot",
        format!("{:.3} ms", with_snapshot.as_secs_f64() * 1e3),
        "goal < 1 ms",
    );

    let stream = StreamId::parse("inventory-FULL").expect("stream");
    let start = Instant::now();
    let rounds = 5u32;
    for _ in 0..rounds {
        black_box(load_aggregate::<Inventory>(&store, &stream).await.expect("load"));
    }
    let full = start.elapsed() / rounds;
    report(
        "rehydrate 100k-event stream from SQLite, no snapshot",
        format!("{:.1} ms", full.as_secs_f64() * 1e3),
        "",
    );
    report(
        "  = full replay incl. SQLite reads",
        per_second(full, STREAM_LEN),
        "events/s",
    );

    let events = store.read_range(&stream, 1, None).await.expect("read");
    let start = Instant::now();
    let rounds = 10u64;
    for _ in 0..rounds {
        black_box(fold_events::<Inventory>(Default::default(), &events).expect("fold"));
    }
    report(
        "full replay in memory (upcast + decode + evolve)",
        per_second(start.elapsed(), rounds * STREAM_LEN),
        "goal > 2M events/s",
    );
}

/// Order streams: placed, confirmed, then cancelled or shipped.
fn order_streams(orders: u64) -> Vec<Vec<EventEnvelope>> {
    order_streams_range(0..orders)
}

/// Orders `range`'s streams, as [`order_streams`] makes them.
fn order_streams_range(range: std::ops::Range<u64>) -> Vec<Vec<EventEnvelope>> {
    range
        .map(|i| {
            let stream = StreamId::parse(format!("order-b{i}")).expect("stream");
            let mut events = vec![
                OrderEvent::OrderPlaced {
                    order_id: OrderId::parse(format!("b{i}")).expect("id"),
                    customer_id: CustomerId::parse(format!("c{}", i % 100)).expect("customer"),
                    lines: (0..2).map(|l| line(i + l)).collect(),
                    currency: Currency::usd(),
                },
                OrderEvent::OrderConfirmed {},
            ];
            events.push(if i % 4 == 0 {
                OrderEvent::OrderCancelled {
                    reason: None,
                    lines: (0..2).map(|l| line(i + l)).collect(),
                }
            } else {
                OrderEvent::OrderShipped {}
            });
            let encoded = events
                .iter()
                .map(|e| encode_event::<Order>(e).expect("encode"))
                .collect();
            seal(
                &stream,
                0,
                None,
                encoded,
                &Metadata::default(),
                1_795_000_000_000 + i as i64 * 60_000,
            )
        })
        .collect()
}

async fn projections(dir: &std::path::Path) {
    let streams = order_streams(40_000);
    let all: Vec<&EventEnvelope> = streams.iter().flatten().collect();
    let start = Instant::now();
    let mut rows = std::collections::HashMap::new();
    let mut days = std::collections::HashMap::new();
    for envelope in &all {
        let event =
            tally_core::decode_event::<Order>(&envelope.event_type, envelope.schema, &envelope.data).expect("decode");
        let row = rows.remove(envelope.stream_id.as_str());
        if let Some(row) = apply_order_summary(row, &event, envelope.version, envelope.timestamp_ms) {
            rows.insert(envelope.stream_id.as_str(), row);
        }
        if let Some(delta) = sales_delta(&event, envelope.timestamp_ms) {
            *days.entry(delta.day).or_insert(0i128) += delta.revenue_cents;
        }
    }
    black_box((&rows, &days));
    report(
        "projection apply in memory (order summary + sales)",
        per_second(start.elapsed(), all.len() as u64),
        "goal > 200k events/s",
    );

    // Durable: through the projection runtime into the SQLite read models,
    // each event its own checkpointed write, 64 streams in flight so group
    // commit can batch them.
    let store = SqliteStore::open(dir.join("project.db")).expect("store");
    let sample = &streams[..8_000];
    for chunk in sample.chunks(100) {
        let appends = chunk
            .iter()
            .map(|events| StreamAppend {
                stream_id: events[0].stream_id.clone(),
                expected_version: 0,
                events: events.clone(),
                snapshot: None,
                view: None,
            })
            .collect();
        store
            .append(AppendBatch {
                streams: appends,
                idempotency: None,
            })
            .await
            .expect("seed");
    }
    let sinks: Vec<Arc<dyn ProjectionSink>> = vec![
        Arc::new(OrderProjectionSink::order_summary(store.clone())),
        Arc::new(OrderProjectionSink::sales_by_day(store.clone())),
    ];
    let total: u64 = sample.iter().map(|s| s.len() as u64).sum::<u64>() * sinks.len() as u64;
    let start = Instant::now();
    for group in sample.chunks(64) {
        join_all(group.iter().map(|events| {
            let (store, sinks) = (store.clone(), sinks.clone());
            async move {
                for event in events {
                    for sink in &sinks {
                        deliver(&store, sink.as_ref(), event).await.expect("deliver");
                    }
                }
            }
        }))
        .await;
    }
    report(
        "projection apply into SQLite (durable, checkpointed)",
        per_second(start.elapsed(), total),
        "",
    );
}

/// Events in the store the rebuild and verification figures replay.
const REPLAY_EVENTS: u64 = 1_000_000;

/// Seeds `REPLAY_EVENTS` order events (3 per order) straight through the
/// store's append, a thousand streams per transaction, generated a slice at
/// a time so the history never sits in memory whole.
async fn seed_history(store: &SqliteStore) {
    let orders = REPLAY_EVENTS.div_ceil(3);
    let slice = 5_000u64;
    for first in (0..orders).step_by(slice as usize) {
        let streams = order_streams_range(first..(first + slice).min(orders));
        for chunk in streams.chunks(1_000) {
            let appends = chunk
                .iter()
                .map(|events| StreamAppend {
                    stream_id: events[0].stream_id.clone(),
                    expected_version: 0,
                    events: events.clone(),
                    snapshot: None,
                    view: None,
                })
                .collect();
            store
                .append(AppendBatch {
                    streams: appends,
                    idempotency: None,
                })
                .await
                .expect("seed");
        }
    }
}

/// `tally rebuild` and `tally verify` on SQLite over a million events: the
/// same drivers and adapters the CLI runs, without the progress bar.
async fn replay(dir: &std::path::Path) {
    let store = SqliteStore::open(dir.join("replay.db")).expect("store");
    let start = Instant::now();
    seed_history(&store).await;
    let events = store.count_events().await.expect("count");
    report(
        "seed 1M order events (direct append, 1000 streams/txn)",
        format!("{:.1} s", start.elapsed().as_secs_f64()),
        "",
    );

    for (projection, mode, label) in [
        (
            ORDER_SUMMARY,
            RebuildMode::BlueGreen,
            "rebuild order_summary, blue-green, 1M events",
        ),
        (
            SALES_BY_DAY,
            RebuildMode::Truncate,
            "rebuild sales_by_day, truncate, 1M events",
        ),
    ] {
        let generations = SqliteGenerations::new(&store, projection).expect("generations");
        let start = Instant::now();
        let done = rebuild(&store, &generations, mode, RebuildOptions::default(), &mut ())
            .await
            .expect("rebuild");
        let elapsed = start.elapsed();
        assert_eq!(done.replayed, events, "every event replayed");
        report(label, format!("{:.2} s", elapsed.as_secs_f64()), "goal < 10 s");
        report("  = rebuild throughput", per_second(elapsed, done.replayed), "events/s");
    }

    let start = Instant::now();
    let chains = verify_all_chains(&store, 20_000, &mut (), &mut |_| {})
        .await
        .expect("verify chain");
    assert!(chains.breaks.is_empty() && chains.events == events);
    report(
        "verify chain, 1M events (SHA-256 per event)",
        per_second(start.elapsed(), chains.events),
        "events/s",
    );

    let start = Instant::now();
    let memory = MemoryModel::new(ORDER_SUMMARY).expect("model");
    let stored = live_sink(ORDER_SUMMARY, &store).expect("sink");
    let verdict = verify_projection(&store, &stored, &memory, Some("order"), 20_000, &mut ())
        .await
        .expect("verify projections");
    assert!(
        verdict.is_consistent() && verdict.events == events,
        "{:?}",
        verdict.diffs.first()
    );
    report(
        "verify projections order_summary, 1M events",
        per_second(start.elapsed(), verdict.events),
        "events/s",
    );
    let start = Instant::now();
    let counted = store.count_after(&0, None).await.expect("count");
    black_box(counted);
    report(
        "  (of which counting the history for the ETA)",
        format!("{:.0} ms", start.elapsed().as_secs_f64() * 1e3),
        "",
    );
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    println!(
        "Tally in-process benchmarks ({} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    // `tally-bench replay` runs one section; no argument runs them all.
    let only = std::env::args().nth(1);
    let wanted = |section: &str| only.as_deref().is_none_or(|o| o == section);
    if wanted("decide") {
        decide_and_evolve();
    }
    if wanted("rehydrate") {
        rehydration(dir.path()).await;
    }
    if wanted("project") {
        projections(dir.path()).await;
    }
    if wanted("replay") {
        replay(dir.path()).await;
    }
}
