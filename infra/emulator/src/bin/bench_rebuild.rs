//! `make bench`: the operations on AWS, against template.yaml deployed into
//! the emulator. Seeds `TALLY_BENCH_EVENTS` events (default 100,000: order
//! histories of 1–3 events) straight into the events table, then prints the
//! throughput of
//! 1. `tally rebuild order_summary --aws` (blue-green: parallel Scan, the
//!    projection runtime, one conditional write per order into the green
//!    table, switch),
//! 2. `tally verify chain --aws` (per-segment hash-chain walks),
//! 3. `tally verify projections order_summary --aws`,
//! 4. `tally rebuild sales_by_day --aws --truncate` on a second stack of
//!    `TALLY_BENCH_SALES_EVENTS` events (default 2,000): sales_by_day writes
//!    one transaction per event, and moto deep-copies every table a
//!    transaction touches, once per item, so its cost there grows with the
//!    checkpoints table (quadratic in the history: an emulator artifact; a
//!    DynamoDB transaction costs the same whatever the table's size).
//!
//! through the same library calls the CLI makes. moto serves one request at
//! a time on loopback: the figures compare designs on this machine, they do
//! not predict DynamoDB, where the Scan segments and writes run in parallel.

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
use tally_core::projection::{RebuildMode, RebuildOptions, rebuild, verify_projection};
use tally_core::{Decider, Metadata, StreamId, encode_event, seal};
use tally_domain::recompute::MemoryModel;
use tally_domain::views;
use tally_domain::{Cents, Currency, CustomerId, Order, OrderEvent, OrderId, OrderLine, Quantity, Sku};
use tally_emulator::deploy::deploy_template;
use tally_store_dynamodb::items::EventItem;
use tally_store_dynamodb::{DynamoGenerations, DynamoHistory, LiveModel, SlotTables};

const SEGMENTS: u32 = 4;
const CHUNK: usize = 5_000;

fn history_of(i: u64) -> Vec<OrderEvent> {
    let line = |n: u64| OrderLine {
        sku: Sku::parse(format!("S{}", n % 50)).expect("sku"),
        quantity: Quantity::new(1 + n % 3).expect("quantity"),
        unit_price_cents: Cents::new(100 + n % 900).expect("cents"),
    };
    let lines = vec![line(i), line(i + 7)];
    let mut events = vec![OrderEvent::OrderPlaced {
        order_id: OrderId::parse(format!("o{i}")).expect("order id"),
        customer_id: CustomerId::parse(format!("c{}", i % 500)).expect("customer"),
        lines: lines.clone(),
        currency: Currency::usd(),
    }];
    match i % 3 {
        1 => events.push(OrderEvent::OrderConfirmed {}),
        2 => events.extend([OrderEvent::OrderConfirmed {}, OrderEvent::OrderShipped {}]),
        _ => {}
    }
    events
}

fn per_second(events: u64, elapsed: Duration) -> f64 {
    events as f64 / elapsed.as_secs_f64().max(1e-9)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let events = env_number("TALLY_BENCH_EVENTS", 100_000);
    let sales_events = env_number("TALLY_BENCH_SALES_EVENTS", 2_000);
    let sdk = tally_emulator::sdk_config().await;
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let deployment = seeded_stack(&client, events).await;
    let events_table = deployment.output("EventsTableName").to_owned();
    let env = deployment.env("QueryApiFunction");
    let history = DynamoHistory::new(client.clone(), &events_table, SEGMENTS);
    bench_rebuild(&client, &history, env, views::ORDER_SUMMARY, RebuildMode::BlueGreen).await;

    let started = Instant::now();
    let chains = history.verify_chains(CHUNK, &mut ()).await.expect("verify chains");
    let elapsed = started.elapsed();
    assert!(chains.breaks.is_empty(), "{:?}", chains.breaks);
    println!(
        "verify chain: {} events in {} streams in {:.1} s = {:.0} events/s",
        chains.events,
        chains.streams,
        elapsed.as_secs_f64(),
        per_second(chains.events, elapsed)
    );

    let tables = SlotTables::from_settings(views::ORDER_SUMMARY, env)
        .expect("settings")
        .expect("projection");
    let memory = MemoryModel::new(views::ORDER_SUMMARY).expect("memory model");
    let started = Instant::now();
    let verdict = verify_projection(
        &history,
        &LiveModel::new(client.clone(), tables),
        &memory,
        Some(Order::CATEGORY),
        CHUNK,
        &mut (),
    )
    .await
    .expect("verify projections");
    let elapsed = started.elapsed();
    assert!(verdict.is_consistent(), "{} differences", verdict.diffs.len());
    println!(
        "verify projections order_summary: {} events, {} rows in {:.1} s = {:.0} events/s",
        verdict.events,
        verdict.rows,
        elapsed.as_secs_f64(),
        per_second(verdict.events, elapsed)
    );

    let sales_stack = seeded_stack(&client, sales_events).await;
    let sales_history = DynamoHistory::new(client.clone(), sales_stack.output("EventsTableName"), SEGMENTS);
    bench_rebuild(
        &client,
        &sales_history,
        sales_stack.env("QueryApiFunction"),
        views::SALES_BY_DAY,
        RebuildMode::Truncate,
    )
    .await;
}

/// Runs one rebuild and prints its throughput.
async fn bench_rebuild(
    client: &aws_sdk_dynamodb::Client,
    history: &DynamoHistory,
    env: &std::collections::HashMap<String, String>,
    projection: &str,
    mode: RebuildMode,
) {
    let tables = SlotTables::from_settings(projection, env)
        .expect("settings")
        .expect("projection");
    let generations = DynamoGenerations::new(client.clone(), tables, history.clone(), Duration::ZERO, CHUNK);
    let options = RebuildOptions {
        chunk: CHUNK,
        ..RebuildOptions::default()
    };
    let started = Instant::now();
    let report = rebuild(history, &generations, mode, options, &mut ())
        .await
        .expect("rebuild");
    let elapsed = started.elapsed();
    println!(
        "rebuild {projection} ({mode:?}, {SEGMENTS} segments): {} events in {:.1} s = {:.0} events/s",
        report.replayed,
        elapsed.as_secs_f64(),
        per_second(report.replayed, elapsed)
    );
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Deploys the template and seeds `target` events (whole order histories).
async fn seeded_stack(client: &aws_sdk_dynamodb::Client, target: u64) -> tally_emulator::deploy::Deployment {
    let deployment = tokio::task::spawn_blocking(deploy_template).await.expect("deploy");
    let events_table = deployment.output("EventsTableName").to_owned();

    let started = Instant::now();
    let mut seeded = 0u64;
    let mut batch: Vec<WriteRequest> = Vec::with_capacity(25);
    let mut order = 0u64;
    while seeded < target {
        let stream = StreamId::parse(format!("order-o{order}")).expect("stream");
        let encoded = history_of(order)
            .iter()
            .map(|e| encode_event::<Order>(e).expect("encode"))
            .collect();
        let at = 1_772_323_200_000 + (order as i64 % 30) * 86_400_000;
        for event in seal(&stream, 0, None, encoded, &Metadata::default(), at) {
            let item = EventItem::from_envelope(&event, None).expect("item");
            let put = PutRequest::builder().set_item(Some(item)).build().expect("put");
            batch.push(WriteRequest::builder().put_request(put).build());
            seeded += 1;
            if batch.len() == 25 {
                write(client, &events_table, std::mem::take(&mut batch)).await;
            }
        }
        order += 1;
    }
    write(client, &events_table, batch).await;
    println!(
        "seeded {seeded} events ({order} orders) into stack {} in {:.1} s",
        deployment.stack,
        started.elapsed().as_secs_f64()
    );

    deployment
}

async fn write(client: &aws_sdk_dynamodb::Client, table: &str, mut requests: Vec<WriteRequest>) {
    while !requests.is_empty() {
        let out = client
            .batch_write_item()
            .request_items(table, std::mem::take(&mut requests))
            .send()
            .await
            .expect("batch write");
        requests = out
            .unprocessed_items
            .and_then(|mut left| left.remove(table))
            .unwrap_or_default();
    }
}
