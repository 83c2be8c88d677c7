//! The API's command and query contract on SQLite: the order lifecycle and
//! its stock effects, idempotency keys, If-Match, read-your-writes, stream
//! history and time travel, metadata propagation, and `/openapi.json`.

mod api_support;

use axum::http::StatusCode;
use serde_json::Value;

use api_support::{TestApi, post};

/// Place → confirm → ship commits stock; place → cancel releases it; the
/// repeated transition writes nothing; an adjustment below reserved is refused.
#[tokio::test]
async fn order_lifecycle_moves_stock() {
    let api = TestApi::new();
    api.stocked_sku("A", 10).await;
    api.stocked_sku("B", 10).await;
    let (status, placed) = api
        .post(
            "/orders",
            r#"{"order_id":"o-1","customer_id":"c-1","lines":[{"sku":"A","quantity":2,"unit_price_cents":150},{"sku":"B","quantity":3,"unit_price_cents":200}]}"#,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{placed}");
    assert_eq!(placed["order_id"], "o-1");
    assert_eq!(placed["stream_id"], "order-o-1");
    assert_eq!(placed["version"], 1);
    let (_, a) = api.get("/inventory/A").await;
    assert_eq!(
        (a["on_hand"].as_u64(), a["reserved"].as_u64(), a["available"].as_u64()),
        (Some(10), Some(2), Some(8))
    );

    let (status, body) = api
        .post("/inventory/A/adjustments", r#"{"on_hand":1,"reason":"count"}"#)
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("adjustment_below_reserved"))
    );

    assert_eq!(
        api.post("/orders/o-1/ship", "").await.0,
        StatusCode::UNPROCESSABLE_ENTITY,
        "ship before confirm"
    );
    let (status, confirmed) = api.post("/orders/o-1/confirm", "").await;
    assert_eq!((status, confirmed["version"].as_u64()), (StatusCode::OK, Some(2)));
    let before = api.events().await;
    let (status, again) = api.post("/orders/o-1/confirm", "{}").await;
    assert_eq!((status, again["version"].as_u64()), (StatusCode::OK, Some(2)));
    assert_eq!(api.events().await, before, "a repeated confirm writes nothing");

    let (status, _) = api.post("/orders/o-1/ship", "").await;
    assert_eq!(status, StatusCode::OK);
    let (_, a) = api.get("/inventory/A").await;
    assert_eq!((a["on_hand"].as_u64(), a["reserved"].as_u64()), (Some(8), Some(0)));
    let (_, b) = api.get("/inventory/B").await;
    assert_eq!((b["on_hand"].as_u64(), b["reserved"].as_u64()), (Some(7), Some(0)));

    let (status, _) = api.order("o-2", "c-1", "A", 5, 100).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = api.post("/orders/o-2/cancel", r#"{"reason":"changed mind"}"#).await;
    assert_eq!(status, StatusCode::OK);
    let (_, a) = api.get("/inventory/A").await;
    assert_eq!(
        (a["on_hand"].as_u64(), a["reserved"].as_u64(), a["available"].as_u64()),
        (Some(8), Some(0), Some(8))
    );

    let (status, adjusted) = api
        .post("/inventory/A/adjustments", r#"{"on_hand":6,"reason":"stock take"}"#)
        .await;
    assert_eq!(status, StatusCode::OK, "{adjusted}");
    let (_, a) = api.get("/inventory/A").await;
    assert_eq!(a["on_hand"], 6);

    api.drain_projections().await;
    let (_, o1) = api.get("/orders/o-1").await;
    assert_eq!(o1["status"], "shipped");
    assert_eq!(o1["total_cents"], 2 * 150 + 3 * 200);
    let (_, o2) = api.get("/orders/o-2").await;
    assert_eq!(o2["status"], "cancelled");
    let (_, listing) = api.get("/customers/c-1/orders").await;
    let ids: Vec<&str> = listing["orders"]
        .as_array()
        .expect("orders")
        .iter()
        .filter_map(|o| o["order_id"].as_str())
        .collect();
    assert_eq!(ids, ["o-2", "o-1"], "newest first");
    let today = chrono::Utc::now().date_naive();
    let (_, sales) = api
        .get(&format!(
            "/reports/sales?from={}&to={}",
            today.pred_opt().expect("day"),
            today.succ_opt().expect("day")
        ))
        .await;
    let day = &sales["days"][0];
    assert_eq!(
        (day["orders"].as_i64(), day["units"].as_i64()),
        (Some(1), Some(5)),
        "o-2 placed and cancelled nets out"
    );
}

/// The same Idempotency-Key and body twice: one set of events, the same
/// response; the same key with another body: 422.
#[tokio::test]
async fn idempotency_key_replays_the_first_response() {
    let api = TestApi::new();
    api.stocked_sku("A", 10).await;
    let body = r#"{"customer_id":"c-1","lines":[{"sku":"A","quantity":1,"unit_price_cents":100}]}"#;
    let keyed = |body: &str| {
        let mut request = post("/orders", body.to_owned());
        request
            .headers_mut()
            .insert("idempotency-key", "key-1".parse().expect("header"));
        request
    };
    let (first_status, first) = api.send(keyed(body)).await;
    assert_eq!(first_status, StatusCode::CREATED, "{first}");
    let after_first = api.events().await;
    let (second_status, second) = api.send(keyed(body)).await;
    assert_eq!(
        (second_status, &second),
        (first_status, &first),
        "same response, same generated order id"
    );
    assert_eq!(api.events().await, after_first, "no second set of events");

    let (status, other) = api.send(keyed(&body.replace("\"quantity\":1", "\"quantity\":2"))).await;
    assert_eq!(
        (status, other["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("idempotency_key_reused"))
    );
    assert_eq!(api.events().await, after_first);
}

/// If-Match with the stream's version succeeds; with another version, 409
/// and nothing written.
#[tokio::test]
async fn if_match_guards_the_target_stream() {
    let api = TestApi::new();
    api.stocked_sku("A", 10).await; // inventory-A is at version 2
    let with_version = |v: &str| {
        let mut request = post("/inventory/A/receipts", r#"{"quantity":1}"#);
        request.headers_mut().insert("if-match", v.parse().expect("header"));
        request
    };
    let before = api.events().await;
    let (status, body) = api.send(with_version("\"1\"")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::CONFLICT, Some("version_conflict"))
    );
    assert_eq!(api.events().await, before);
    let (status, body) = api.send(with_version("\"2\"")).await;
    assert_eq!((status, body["version"].as_u64()), (StatusCode::OK, Some(3)));
}

/// A query with the version a command returned never shows an older state,
/// even before the eventual projection has run.
#[tokio::test]
async fn min_version_reads_your_writes() {
    let api = TestApi::new();
    api.stocked_sku("A", 10).await;
    let (_, placed) = api.order("o-1", "c-1", "A", 1, 100).await;
    let (_, confirmed) = api.post("/orders/o-1/confirm", "").await;
    let version = confirmed["version"].as_u64().expect("version");
    assert!(version > placed["version"].as_u64().expect("version"));

    // No projection has run: without min_version the order is not there yet.
    assert_eq!(api.get("/orders/o-1").await.0, StatusCode::NOT_FOUND);
    let (status, order) = api.get(&format!("/orders/o-1?min_version={version}")).await;
    assert_eq!(status, StatusCode::OK, "{order}");
    assert_eq!(
        (order["status"].as_str(), order["version"].as_u64()),
        (Some("confirmed"), Some(version))
    );

    api.drain_projections().await;
    let (_, order) = api.get(&format!("/orders/o-1?min_version={version}")).await;
    assert_eq!(order["version"].as_u64(), Some(version));
    let (_, level) = api.get("/inventory/A?min_version=3").await;
    assert_eq!(level["reserved"], 1);
}

/// Stream history pages through events; time travel answers the state at a
/// version or an RFC 3339 time.
#[tokio::test]
async fn stream_history_and_time_travel() {
    let api = TestApi::new();
    api.stocked_sku("A", 10).await;
    let (_, events) = api.get("/streams/inventory-A/events").await;
    let events = events["events"].as_array().expect("events").clone();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["type"], "SkuRegistered");
    assert_eq!(events[1]["type"], "StockReceived");
    let (_, ranged) = api.get("/streams/inventory-A/events?from=2&to=2").await;
    assert_eq!(ranged["events"].as_array().map(Vec::len), Some(1));

    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let (_, _) = api.post("/inventory/A/receipts", r#"{"quantity":5}"#).await;

    let (status, at_1) = api.get("/streams/inventory-A/state?at=1").await;
    assert_eq!(status, StatusCode::OK, "{at_1}");
    assert_eq!(
        (at_1["version"].as_u64(), at_1["state"]["on_hand"].as_u64()),
        (Some(1), Some(0))
    );
    let (_, now) = api.get("/streams/inventory-A/state").await;
    assert_eq!(now["state"]["on_hand"], 15);

    let second_ts = events[1]["timestamp_ms"].as_i64().expect("timestamp");
    let at_time = chrono_rfc3339(second_ts);
    let (status, then) = api.get(&format!("/streams/inventory-A/state?at={at_time}")).await;
    assert_eq!(status, StatusCode::OK, "{then}");
    assert_eq!(
        (then["version"].as_u64(), then["state"]["on_hand"].as_u64()),
        (Some(2), Some(10))
    );

    assert_eq!(api.get("/streams/inventory-NOPE/events").await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        api.get("/streams/inventory-A/state?at=1970-01-01T00:00:00Z").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(api.get("/streams/weird-A/state").await.0, StatusCode::NOT_FOUND);
}

fn chrono_rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .expect("timestamp in range")
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// traceparent and x-correlation-id travel from the request into the
/// metadata of every event the command wrote.
#[tokio::test]
async fn trace_context_reaches_event_metadata() {
    let api = TestApi::new();
    api.stocked_sku("A", 10).await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut request = post(
        "/orders",
        r#"{"order_id":"o-t","customer_id":"c","lines":[{"sku":"A","quantity":1,"unit_price_cents":1}]}"#,
    );
    request
        .headers_mut()
        .insert("traceparent", traceparent.parse().expect("header"));
    request
        .headers_mut()
        .insert("x-correlation-id", "corr-42".parse().expect("header"));
    assert_eq!(api.send(request).await.0, StatusCode::CREATED);
    for stream in ["order-o-t", "inventory-A"] {
        let (_, history) = api.get(&format!("/streams/{stream}/events")).await;
        let last: &Value = history["events"].as_array().and_then(|e| e.last()).expect("event");
        assert_eq!(last["metadata"]["traceparent"], traceparent, "{stream}");
        assert_eq!(last["metadata"]["correlation_id"], "corr-42", "{stream}");
    }
}

/// `/openapi.json` is valid JSON and documents every route the router serves.
#[tokio::test]
async fn openapi_documents_every_route() {
    let api = TestApi::new();
    let (status, doc) = api.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.0.3");
    let documented = [
        ("/inventory", "post"),
        ("/inventory/{sku}/receipts", "post"),
        ("/inventory/{sku}/adjustments", "post"),
        ("/orders", "post"),
        ("/orders/{id}/confirm", "post"),
        ("/orders/{id}/cancel", "post"),
        ("/orders/{id}/ship", "post"),
        ("/inventory/{sku}", "get"),
        ("/orders/{id}", "get"),
        ("/customers/{id}/orders", "get"),
        ("/reports/sales", "get"),
        ("/streams/{stream_id}/events", "get"),
        ("/streams/{stream_id}/state", "get"),
        ("/openapi.json", "get"),
    ];
    for (path, method) in documented {
        assert!(doc["paths"][path][method].is_object(), "{method} {path} missing");
    }
    assert_eq!(
        doc["paths"].as_object().map(|p| p.len()),
        Some(14),
        "every documented path is served"
    );
}
