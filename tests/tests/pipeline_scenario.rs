//! The full read side on the emulator: commands through the command
//! Lambda's router, the stream drained by the driver into the publisher,
//! EventBridge rules into the projection queues, the projectors into the
//! read tables, and every query route compared with an in-order replay of
//! the events table.

mod pipeline_support;

use axum::http::StatusCode;
use pipeline_support::{Pipeline, place, stock_skus};
use serde_json::json;

/// Register, receive, place, confirm, cancel and ship → after the driver
/// drains, every query route returns what an in-order replay computes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_route_matches_an_in_order_replay_after_the_pipeline_drains() {
    let mut pipeline = Pipeline::deploy().await;
    stock_skus(&pipeline, &["apple", "pear", "plum"], 100).await;
    place(&pipeline, "o-1", "ann", &[("apple", 2, 150), ("pear", 1, 300)]).await;
    place(&pipeline, "o-2", "ann", &[("plum", 5, 99)]).await;
    place(&pipeline, "o-3", "bob", &[("apple", 1, 150)]).await;
    place(&pipeline, "o-4", "bob", &[("pear", 3, 300), ("plum", 1, 99)]).await;
    place(&pipeline, "o-5", "cat", &[("apple", 10, 140)]).await;
    pipeline.command("/orders/o-1/confirm", json!({})).await;
    pipeline.command("/orders/o-1/ship", json!({})).await;
    pipeline
        .command("/orders/o-2/cancel", json!({ "reason": "changed mind" }))
        .await;
    pipeline.command("/orders/o-3/confirm", json!({})).await;
    pipeline.command("/orders/o-4/cancel", json!({})).await;
    pipeline
        .command(
            "/inventory/plum/adjustments",
            json!({ "on_hand": 90, "reason": "count" }),
        )
        .await;

    pipeline.drain().await;
    pipeline.assert_read_models_match_replay().await;

    // Spot checks in plain numbers, so a wrong oracle cannot hide a wrong model.
    let (_, o1) = pipeline.get("/orders/o-1").await;
    assert_eq!(
        (o1["status"].as_str(), o1["total_cents"].as_u64()),
        (Some("shipped"), Some(600))
    );
    let (_, apple) = pipeline.get("/inventory/apple").await;
    assert_eq!(
        (apple["on_hand"].as_u64(), apple["reserved"].as_u64()),
        (Some(98), Some(11)),
        "o-1 shipped 2, o-3 and o-5 hold 1 + 10: {apple}"
    );
    let replay = pipeline.replay().await;
    let totals = replay.sales.values().fold((0, 0, 0), |(o, u, r), d| {
        (o + d.orders, u + d.units, r + d.revenue_cents)
    });
    assert_eq!(
        totals,
        (3, 3 + 1 + 10, 600 + 150 + 1400),
        "o-1, o-3, o-5 placed and kept"
    );
    let (status, history) = pipeline.get("/streams/order-o-1/events").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(history["events"].as_array().map(Vec::len), Some(3));
    let (status, then) = pipeline.get("/streams/order-o-1/state?at=1").await;
    assert_eq!(status, StatusCode::OK, "{then}");
}

/// A query with the version a command returned never shows an older
/// state: before the read side has run, it waits, then answers from the
/// event store; after, from the read model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_with_the_commands_version_reads_its_own_write() {
    let mut pipeline = Pipeline::deploy().await;
    stock_skus(&pipeline, &["kiwi"], 10).await;
    let placed = place(&pipeline, "o-ryw", "dan", &[("kiwi", 2, 500)]).await;
    let version = placed["version"].as_u64().expect("version");
    let (status, row) = pipeline.get(&format!("/orders/o-ryw?min_version={version}")).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "nothing projected yet, yet the order is there: {row}"
    );
    assert_eq!(row["status"], "placed");

    pipeline.drain().await;
    let confirmed = pipeline.command("/orders/o-ryw/confirm", json!({})).await;
    let version = confirmed["version"].as_u64().expect("version");
    // The read model still says "placed" (not drained): the query must not.
    let (status, row) = pipeline.get(&format!("/orders/o-ryw?min_version={version}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (row["status"].as_str(), row["version"].as_u64()),
        (Some("confirmed"), Some(version))
    );
    let (_, stale) = pipeline.get("/orders/o-ryw").await;
    assert_eq!(
        stale["status"], "placed",
        "without min_version the eventual model answers"
    );

    pipeline.drain().await;
    let (_, fresh) = pipeline.get(&format!("/orders/o-ryw?min_version={version}")).await;
    assert_eq!(fresh["status"], "confirmed");
    let received = pipeline
        .command("/inventory/kiwi/receipts", json!({ "quantity": 5 }))
        .await;
    let v = received["version"].as_u64().expect("version");
    let (_, kiwi) = pipeline.get(&format!("/inventory/kiwi?min_version={v}")).await;
    assert_eq!(
        (kiwi["on_hand"].as_u64(), kiwi["version"].as_u64()),
        (Some(15), Some(v))
    );
}

/// The largest order the domain accepts (ORDER_LINES_MAX lines, with an
/// Idempotency-Key) fits one DynamoDB transaction of at most 100 items:
/// placed whole, reserving every line; one line more is a 422, not a
/// failed transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_order_fits_one_dynamodb_transaction() {
    let pipeline = Pipeline::deploy().await;
    let most = tally_domain::order::ORDER_LINES_MAX;
    let skus: Vec<String> = (0..=most).map(|i| format!("big-{i}")).collect();
    let names: Vec<&str> = skus.iter().map(String::as_str).collect();
    stock_skus(&pipeline, &names, 5).await;
    let lines = |n: usize| -> Vec<serde_json::Value> {
        skus.iter()
            .take(n)
            .map(|sku| json!({ "sku": sku, "quantity": 1, "unit_price_cents": 100 }))
            .collect()
    };
    let (status, body) = pipeline
        .post_with(
            "/orders",
            &[("idempotency-key", "the-largest-order")],
            json!({ "order_id": "big", "customer_id": "ann", "lines": lines(most) }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, sku) = pipeline.get(&format!("/inventory/{}", skus[most - 1])).await;
    assert_eq!(sku["reserved"], 1, "{sku}");
    let (status, body) = pipeline
        .post(
            "/orders",
            json!({ "order_id": "bigger", "customer_id": "ann", "lines": lines(most + 1) }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"], "invalid_lines");
}
