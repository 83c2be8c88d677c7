//! Flash sale through the HTTP router on SQLite: 200 buyers race for 50
//! units. No oversell, no lost write, and every read model agrees.

mod api_support;

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::Value;
use tally_core::{EventStore, StreamId};

use api_support::TestApi;

const STOCK: u64 = 50;
const BUYERS: usize = 200;

/// 200 concurrent single-unit orders for a SKU with 50 in stock: exactly 50
/// are accepted, 150 are refused as insufficient_stock, and inventory, orders
/// and sales all show 50.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flash_sale_sells_exactly_the_stock() {
    let api = Arc::new(TestApi::new());
    api.stocked_sku("HOT-1", STOCK).await;

    let buyers = (0..BUYERS).map(|i| {
        let api = Arc::clone(&api);
        tokio::spawn(async move {
            api.order(&format!("fs-{i}"), &format!("c-{}", i % 4), "HOT-1", 1, 999)
                .await
        })
    });
    let mut accepted = 0;
    let mut sold_out = 0;
    for buyer in buyers {
        let (status, body) = buyer.await.expect("buyer task");
        match (status, body["error"].as_str()) {
            (StatusCode::CREATED, _) => accepted += 1,
            (StatusCode::UNPROCESSABLE_ENTITY, Some("insufficient_stock")) => sold_out += 1,
            other => panic!("unexpected answer {other:?}: {body}"),
        }
    }
    assert_eq!(accepted, STOCK, "accepted orders");
    assert_eq!(sold_out, BUYERS as u64 - STOCK, "refused orders");

    let (status, level) = api.get("/inventory/HOT-1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(level["on_hand"], 50);
    assert_eq!(level["reserved"], 50);
    assert_eq!(level["available"], 0);

    // The SKU stream holds register + receive + exactly 50 reservations, gap-free.
    let stream = StreamId::parse("inventory-HOT-1").expect("stream id");
    let events = api.store.read_range(&stream, 1, None).await.expect("read");
    let reserved = events.iter().filter(|e| e.event_type == "StockReserved").count();
    assert_eq!(reserved, 50);
    assert!(events.iter().zip(1..).all(|(e, v)| e.version == v));
    assert_eq!(level["version"], events.len() as u64);
    tally_core::verify_chain(&events).expect("hash chain intact");

    api.drain_projections().await;
    let today = chrono::Utc::now().date_naive();
    let (_, sales) = api
        .get(&format!(
            "/reports/sales?from={}&to={}",
            today.pred_opt().expect("day"),
            today.succ_opt().expect("day")
        ))
        .await;
    let days = sales["days"].as_array().expect("days");
    let units: i64 = days.iter().map(|d| d["units"].as_i64().unwrap_or(0)).sum();
    let orders: i64 = days.iter().map(|d| d["orders"].as_i64().unwrap_or(0)).sum();
    let revenue: i64 = days.iter().map(|d| d["revenue_cents"].as_i64().unwrap_or(0)).sum();
    assert_eq!((orders, units, revenue), (50, 50, 50 * 999));

    let mut listed = 0;
    for customer in 0..4 {
        let mut cursor: Option<String> = None;
        loop {
            let uri = match &cursor {
                Some(c) => format!("/customers/c-{customer}/orders?limit=7&cursor={c}"),
                None => format!("/customers/c-{customer}/orders?limit=7"),
            };
            let (status, page) = api.get(&uri).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            let orders = page["orders"].as_array().expect("orders");
            assert!(
                orders
                    .iter()
                    .all(|o| o["status"] == "placed" && o["total_cents"] == 999)
            );
            listed += orders.len();
            match &page["next_cursor"] {
                Value::String(next) => cursor = Some(next.clone()),
                _ => break,
            }
        }
    }
    assert_eq!(listed, 50, "order summaries across customers");
}
