//! `GET /reports/sales` at the caps: one order may total 32 lines × 10⁶
//! units × 10⁹ cents = 3.2·10¹⁶ cents, so about 289 of them in one day
//! overflow an i64 sum. With 600 such orders (and one of 7 cents) in a day,
//! more than even a u64 holds, the report answers 200 with the exact total
//! on both stores.

mod api_support;

use axum::http::StatusCode;
use chrono::DateTime;
use serde::Deserialize;
use tally_core::projection::{BatchProjectionSink, apply_one_by_one};
use tally_core::{AppendBatch, EventEnvelope, EventStore, Metadata, StreamAppend, StreamId, encode_event, seal};
use tally_domain::ids::{QUANTITY_MAX, UNIT_PRICE_MAX_CENTS};
use tally_domain::order::ORDER_LINES_MAX;
use tally_domain::{Cents, Currency, CustomerId, Order, OrderEvent, OrderId, OrderLine, Quantity, Sku};
use tally_store_dynamodb::Slot;

use api_support::{DynamoApi, TestApi, get_bytes};

const DAY: &str = "2026-03-01";
const MAX_ORDERS: u64 = 600;
const SMALL_ORDER_CENTS: u64 = 7;

/// The exact total: 600 × 32 × 10⁶ × 10⁹ + 7.
fn expected_revenue() -> i128 {
    i128::from(MAX_ORDERS)
        * i128::try_from(ORDER_LINES_MAX).expect("lines")
        * i128::from(QUANTITY_MAX)
        * i128::from(UNIT_PRICE_MAX_CENTS)
        + i128::from(SMALL_ORDER_CENTS)
}

/// The report as a client with a 128-bit integer parser reads it.
#[derive(Debug, Deserialize)]
struct Report {
    days: Vec<Day>,
}

#[derive(Debug, Deserialize)]
struct Day {
    day: String,
    orders: i64,
    revenue_cents: i128,
}

/// Order `n`'s placement at noon on [`DAY`]: the largest order the domain
/// accepts, or the 7-cent one.
fn placed(n: u64) -> EventEnvelope {
    let line = |sku: usize, quantity: u64, price: u64| OrderLine {
        sku: Sku::parse(format!("SKU-{sku}")).expect("sku"),
        quantity: Quantity::new(quantity).expect("quantity"),
        unit_price_cents: Cents::new(price).expect("price"),
    };
    let lines = if n < MAX_ORDERS {
        (0..ORDER_LINES_MAX)
            .map(|sku| line(sku, u64::from(QUANTITY_MAX), UNIT_PRICE_MAX_CENTS))
            .collect()
    } else {
        vec![line(0, 1, SMALL_ORDER_CENTS)]
    };
    let order_id = format!("o-{n}");
    let event = OrderEvent::OrderPlaced {
        order_id: OrderId::parse(order_id.clone()).expect("order id"),
        customer_id: CustomerId::parse("c-1").expect("customer"),
        lines,
        currency: Currency::default(),
    };
    let stream = StreamId::of("order", &order_id).expect("stream");
    let noon = DateTime::parse_from_rfc3339(&format!("{DAY}T12:00:00Z")).expect("time");
    let mut sealed = seal(
        &stream,
        0,
        None,
        vec![encode_event::<Order>(&event).expect("encode")],
        &Metadata::default(),
        noon.timestamp_millis(),
    );
    sealed.remove(0)
}

fn all_orders() -> Vec<EventEnvelope> {
    (0..=MAX_ORDERS).map(placed).collect()
}

async fn assert_exact_report(router: &axum::Router) {
    let (status, bytes) = get_bytes(router, &format!("/reports/sales?from={DAY}&to={DAY}")).await;
    let text = String::from_utf8_lossy(&bytes);
    assert_eq!(status, StatusCode::OK, "{text}");
    let report: Report = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(report.days.len(), 1, "{text}");
    let day = &report.days[0];
    assert_eq!(day.day, DAY);
    assert_eq!(day.orders, i64::try_from(MAX_ORDERS + 1).expect("orders"));
    assert!(day.revenue_cents > i128::from(u64::MAX), "the test must exceed u64");
    assert_eq!(day.revenue_cents, expected_revenue(), "{text}");
    assert!(
        text.contains(&expected_revenue().to_string()),
        "an exact JSON integer: {text}"
    );
}

/// SQLite (`tally serve`): the orders committed to the store and fed to the
/// projection as `tally serve` feeds it; the report is exact.
#[tokio::test]
async fn a_day_beyond_i64_reports_its_exact_revenue_on_sqlite() {
    let api = TestApi::new();
    for envelope in all_orders() {
        let append = StreamAppend {
            stream_id: envelope.stream_id.clone(),
            expected_version: 0,
            events: vec![envelope],
            snapshot: None,
            view: None,
        };
        api.store
            .append(AppendBatch {
                streams: vec![append],
                idempotency: None,
            })
            .await
            .expect("append");
    }
    api.drain_projections().await;
    assert_exact_report(&api.router).await;
}

/// DynamoDB (the projector and the query Lambda): half the orders through
/// the batch path (one transaction per group of streams), half one by one;
/// the report is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_beyond_i64_reports_its_exact_revenue_on_dynamodb() {
    let api = DynamoApi::new().await;
    let sink = api.sales.sink(&api.client, Slot::Blue);
    let orders = all_orders();
    let (batched, single) = orders.split_at(orders.len() / 2);
    let applied = sink.apply_batch(batched).await.expect("batch");
    assert_eq!(applied.applied, batched.len() as u64, "{applied:?}");
    let applied = apply_one_by_one(&sink, single).await.expect("one by one");
    assert_eq!(applied.applied, single.len() as u64, "{applied:?}");
    assert_exact_report(&api.router).await;
}
