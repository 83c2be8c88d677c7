//! `tally serve` as a user runs it: the real binary on 127.0.0.1 with a port
//! the OS picks, a SQLite file, and plain HTTP over loopback.

use std::time::Duration;

mod support;

use support::{Server, request, temp_db};

fn start(db: &std::path::Path) -> Server {
    Server::start(db)
}

/// The README walkthrough against the real binary: register, receive, order,
/// read back; then a restart keeps every acknowledged write.
#[test]
fn serve_runs_the_walkthrough_and_survives_a_restart() {
    let (_dir, db) = temp_db();
    let server = start(&db);
    let a = server.address.as_str();

    assert_eq!(
        request(a, "POST", "/inventory", r#"{"sku":"SKU-42","name":"Blue widget"}"#).0,
        201
    );
    assert_eq!(
        request(a, "POST", "/inventory/SKU-42/receipts", r#"{"quantity":10}"#).0,
        200
    );
    let (status, placed) = request(
        a,
        "POST",
        "/orders",
        r#"{"order_id":"o-1","customer_id":"c-7","lines":[{"sku":"SKU-42","quantity":3,"unit_price_cents":1250}]}"#,
    );
    assert_eq!(status, 201, "{placed}");
    let (status, level) = request(a, "GET", "/inventory/SKU-42", "");
    assert_eq!(status, 200);
    assert_eq!(level["available"], 7);
    let (status, order) = request(a, "GET", "/orders/o-1?min_version=1", "");
    assert_eq!((status, order["status"].as_str()), (200, Some("placed")));
    let (status, error) = request(a, "POST", "/orders", "{not json");
    assert_eq!((status, error["error"].as_str()), (400, Some("malformed_json")));
    drop(server);

    let server = start(&db);
    let (status, level) = request(&server.address, "GET", "/inventory/SKU-42", "");
    assert_eq!((status, level["reserved"].as_u64()), (200, Some(3)));
    // The in-process tail feeds the eventual projections after the restart too.
    let mut listed = serde_json::Value::Null;
    for _ in 0..100 {
        listed = request(&server.address, "GET", "/customers/c-7/orders", "").1;
        if listed["orders"].as_array().is_some_and(|o| o.len() == 1) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(listed["orders"][0]["order_id"], "o-1", "{listed}");
}
