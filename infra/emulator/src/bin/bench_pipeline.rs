//! `make bench`: the read side. Prints
//! 1. projector throughput in-process (the projector handler over an
//!    in-memory read model: decoding, the projection runtime, batching —
//!    the ceiling of one invocation without I/O),
//! 2. projector throughput against the emulator (the same handler over the
//!    DynamoDB sinks of the deployed template), batches of 10 and 100,
//! 3. end-to-end lag through the emulator pipeline: command appended →
//!    stream → publisher → EventBridge → SQS → projector → visible in the
//!    read table, p50/p99, with the driver pumping continuously.
//!
//! Emulator figures are moto's (one thread, loopback), not AWS's: they
//! compare designs on this machine, they do not predict production latency.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use tally_api::{ApiConfig, CommandContext, CommandService};
use tally_bus::{EventDetail, Projector, Publisher, PublisherConfig};
use tally_core::{
    AppendBatch, AppendOutcome, ApplyOutcome, Decider, EventEnvelope, EventStore, IdempotencyRecord, LoadedStream,
    Metadata, ProjectionError, ProjectionSink, StoreError, StreamId, decode_event, encode_event, seal,
};
use tally_domain::views::{self, OrderSummary, ReadModels};
use tally_domain::{Cents, Currency, CustomerId, Order, OrderEvent, OrderId, OrderLine, ProductName, Quantity, Sku};
use tally_emulator::RequestCounter;
use tally_emulator::deploy::deploy_template;
use tally_emulator::driver::{QueuePump, StreamPump};
use tally_store_dynamodb::{DynamoConfig, DynamoReadModels, DynamoStore, ReadTables};

/// Every projected event is in the messages: the store is never asked.
struct NoStore;

fn unused() -> StoreError {
    StoreError::Backend("the in-process bench delivers in order: no store read expected".into())
}

#[async_trait]
impl EventStore for NoStore {
    async fn load(&self, _: &StreamId) -> Result<LoadedStream, StoreError> {
        Err(unused())
    }
    async fn read_range(&self, _: &StreamId, _: u64, _: Option<u64>) -> Result<Vec<EventEnvelope>, StoreError> {
        Err(unused())
    }
    async fn read_until(&self, _: &StreamId, _: i64) -> Result<Vec<EventEnvelope>, StoreError> {
        Err(unused())
    }
    async fn append(&self, _: AppendBatch) -> Result<AppendOutcome, StoreError> {
        Err(unused())
    }
    async fn idempotency_record(&self, _: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        Err(unused())
    }
}

/// order_summary in memory, with the same checkpoint rule as the real sinks.
#[derive(Default)]
struct MemorySummaries {
    rows: Mutex<HashMap<StreamId, (u64, Option<OrderSummary>)>>,
}

#[async_trait]
impl ProjectionSink for MemorySummaries {
    fn name(&self) -> &str {
        views::ORDER_SUMMARY
    }
    fn follows(&self, stream: &StreamId) -> bool {
        stream.category() == Order::CATEGORY
    }
    async fn checkpoint(&self, stream: &StreamId) -> Result<u64, ProjectionError> {
        let rows = self
            .rows
            .lock()
            .map_err(|e| ProjectionError::Backend(e.to_string().into()))?;
        Ok(rows.get(stream).map_or(0, |(v, _)| *v))
    }
    async fn apply(&self, event: &EventEnvelope) -> Result<ApplyOutcome, ProjectionError> {
        let decoded = decode_event::<Order>(&event.event_type, event.schema, &event.data).map_err(|e| {
            ProjectionError::Poison {
                stream: event.stream_id.clone(),
                version: event.version,
                reason: e.to_string(),
            }
        })?;
        let mut rows = self
            .rows
            .lock()
            .map_err(|e| ProjectionError::Backend(e.to_string().into()))?;
        let (checkpoint, row) = rows.entry(event.stream_id.clone()).or_default();
        if *checkpoint + 1 != event.version {
            return Ok(ApplyOutcome::CheckpointMoved);
        }
        *row = views::apply_order_summary(row.take(), &decoded, event.version, event.timestamp_ms);
        *checkpoint = event.version;
        Ok(ApplyOutcome::Applied)
    }
}

/// `orders` orders, each placed then confirmed, as bus messages in stream order.
fn order_messages(orders: usize, prefix: &str) -> Vec<SqsMessage> {
    let mut messages = Vec::with_capacity(orders * 2);
    for i in 0..orders {
        let order_id = OrderId::parse(format!("{prefix}-{i}")).expect("id");
        let stream = StreamId::of(Order::CATEGORY, order_id.as_str()).expect("stream");
        let events = [
            OrderEvent::OrderPlaced {
                order_id,
                customer_id: CustomerId::parse(format!("c-{}", i % 50)).expect("customer"),
                lines: (0..3)
                    .map(|l| OrderLine {
                        sku: Sku::parse(format!("SKU-{l}")).expect("sku"),
                        quantity: Quantity::new(1 + l).expect("qty"),
                        unit_price_cents: Cents::new(995).expect("price"),
                    })
                    .collect(),
                currency: Currency::usd(),
            },
            OrderEvent::OrderConfirmed {},
        ];
        let new_events = events
            .iter()
            .map(|e| encode_event::<Order>(e).expect("encode"))
            .collect();
        let now = chrono::Utc::now().timestamp_millis();
        for envelope in seal(&stream, 0, None, new_events, &Metadata::default(), now) {
            let bus = serde_json::json!({
                "version": "0",
                "detail-type": envelope.event_type,
                "source": "tally",
                "detail": EventDetail::inline(&envelope, "tally"),
            });
            let mut message = SqsMessage::default();
            message.message_id = Some(envelope.event_id.to_string());
            message.body = Some(bus.to_string());
            messages.push(message);
        }
    }
    messages
}

/// Projects `messages` in batches of `batch`; returns (events/s, mean ms per invocation).
async fn project_in_batches(projector: &Projector, messages: &[SqsMessage], batch: usize) -> (f64, f64) {
    let started = Instant::now();
    let mut invocations = 0;
    for chunk in messages.chunks(batch) {
        let mut event = SqsEvent::default();
        event.records = chunk.to_vec();
        let response = projector.project(&event).await;
        assert!(
            response.batch_item_failures.is_empty(),
            "bench batch failed: {response:?}"
        );
        invocations += 1;
    }
    let elapsed = started.elapsed();
    (
        messages.len() as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1000.0 / f64::from(invocations),
    )
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    println!("Projector throughput (order_summary, orders placed then confirmed, in stream order)");
    println!(
        "{:<34} {:>6} {:>10} {:>14} {:>16}",
        "sink", "batch", "events", "events/s", "ms/invocation"
    );
    for batch in [10usize, 100] {
        let projector = Projector::new(Arc::new(NoStore), Arc::new(MemorySummaries::default()));
        let messages = order_messages(20_000, &format!("mem{batch}"));
        let (rate, per_call) = project_in_batches(&projector, &messages, batch).await;
        println!(
            "{:<34} {batch:>6} {:>10} {rate:>14.0} {per_call:>16.2} {:>22}",
            "in-process (memory)",
            messages.len(),
            "-"
        );
    }

    let deployment = tokio::task::spawn_blocking(deploy_template).await.expect("deploy");
    let sdk = tally_emulator::sdk_config().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    for (function, label) in [
        ("OrderSummaryProjectorFunction", "order_summary on the emulator"),
        ("SalesByDayProjectorFunction", "sales_by_day on the emulator"),
    ] {
        for batch in [10usize, 100] {
            let counter = RequestCounter::default();
            let counted = tally_emulator::dynamodb(Some(counter.clone())).await;
            let projector = Projector::dynamodb(counted, deployment.env(function)).expect("projector settings");
            let messages = order_messages(500, &format!("{function}{batch}"));
            let (rate, per_call) = project_in_batches(&projector, &messages, batch).await;
            let events = messages.len() as f64;
            let reads = counter.of(&["GetItem", "Query"]) as f64 / events;
            let writes = counter.of(&["PutItem", "UpdateItem", "TransactWriteItems"]) as f64 / events;
            println!(
                "{label:<34} {batch:>6} {:>10} {rate:>14.0} {per_call:>16.2} {:>22}",
                messages.len(),
                format!("{reads:.2} read + {writes:.2} write")
            );
        }
    }

    // End-to-end lag: the driver pumps continuously in the background.
    let command_env = deployment.env("CommandApiFunction");
    let store_config = DynamoConfig::from_settings(command_env).expect("settings");
    let service = CommandService::new(
        Arc::new(DynamoStore::new(dynamodb.clone(), store_config)),
        ApiConfig::default().service,
    );
    let reads = DynamoReadModels::new(
        dynamodb.clone(),
        ReadTables::from_settings(deployment.env("QueryApiFunction")).expect("tables"),
    );
    let publisher = Publisher::new(
        aws_sdk_eventbridge::Client::new(&sdk),
        PublisherConfig::from_settings(deployment.env("StreamPublisherFunction")).expect("publisher"),
    );
    let mut stream = StreamPump::new(&sdk, deployment.mapping("StreamPublisherFunction").clone());
    let projector = Projector::dynamodb(dynamodb.clone(), deployment.env("OrderSummaryProjectorFunction"))
        .expect("projector settings");
    let queue = QueuePump::new(&sdk, deployment.mapping("OrderSummaryProjectorFunction").clone());
    let stop = std::sync::atomic::AtomicBool::new(false);
    let pumping = async {
        {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let published = stream
                    .pump(|e| {
                        let publisher = &publisher;
                        async move { Ok::<_, std::convert::Infallible>(publisher.publish(e).await) }
                    })
                    .await
                    .expect("stream pump");
                let projected = queue
                    .pump(|e| {
                        let projector = &projector;
                        async move { Ok::<_, std::convert::Infallible>(projector.project(&e).await) }
                    })
                    .await
                    .expect("queue pump");
                if published.invocations + projected.invocations == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    };
    let commands = async {
        let sku = Sku::parse("LAG").expect("sku");
        let ctx = CommandContext::default();
        service
            .register_sku(&sku, ProductName::parse("Lag").expect("name"), &ctx)
            .await
            .expect("register");
        service
            .receive_stock(&sku, Quantity::new(100_000).expect("qty"), &ctx)
            .await
            .expect("receive");
        let mut lags = Vec::new();
        for i in 0..100 {
            let order_id = OrderId::parse(format!("lag-{i}")).expect("id");
            let appended = Instant::now();
            service
                .place_order(
                    &order_id,
                    CustomerId::parse("lag-customer").expect("customer"),
                    vec![OrderLine {
                        sku: sku.clone(),
                        quantity: Quantity::new(1).expect("qty"),
                        unit_price_cents: Cents::new(100).expect("price"),
                    }],
                    Currency::usd(),
                    &ctx,
                )
                .await
                .expect("place");
            while reads.order_summary(&order_id).await.expect("read").is_none() {
                tokio::time::sleep(Duration::from_millis(2)).await;
                assert!(
                    appended.elapsed() < Duration::from_secs(30),
                    "order {order_id} never became visible"
                );
            }
            lags.push(appended.elapsed());
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        lags
    };
    let ((), mut lags) = tokio::join!(pumping, commands);
    lags.sort();
    println!(
        "End-to-end lag on the emulator (append → visible in order_summary), {} orders: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        lags.len(),
        percentile(&lags, 0.5),
        percentile(&lags, 0.99),
        percentile(&lags, 1.0)
    );
}
