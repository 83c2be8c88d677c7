//! Trust in what a command decides on, as a new user would try it: a
//! snapshot edited in the database file is named by `tally verify chain`
//! and never oversells through `tally serve`.

use rusqlite::{Connection, params};

mod support;

use support::{Server, run, temp_db, texts};

/// Given a SKU with 4 on hand whose head snapshot is edited to 1,000,000,
/// when an order for 100 arrives, then it is refused on the true state
/// (422, 4 available), and `verify chain` names the stream and version.
#[test]
fn an_edited_snapshot_is_named_and_never_oversells() {
    let (_dir, db) = temp_db();
    let server = Server::start(&db);
    assert_eq!(server.post("/inventory", r#"{"sku":"SKU-1","name":"Widget"}"#).0, 201);
    assert_eq!(server.post("/inventory/SKU-1/receipts", r#"{"quantity":4}"#).0, 200);

    let conn = Connection::open(&db).expect("open the database behind the server");
    let changed = conn
        .execute(
            "UPDATE events SET snapshot = json_set(snapshot, '$.on_hand', 1000000)
             WHERE stream_id = ?1 AND version = ?2",
            params!["inventory-SKU-1", 2],
        )
        .expect("tamper with the snapshot");
    assert_eq!(changed, 1, "the head event carries a snapshot");

    let order =
        r#"{"order_id":"o-1","customer_id":"c-1","lines":[{"sku":"SKU-1","quantity":100,"unit_price_cents":100}]}"#;
    let (status, body) = server.post("/orders", order);
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"], "insufficient_stock", "{body}");
    assert!(
        body["message"].as_str().unwrap_or_default().contains("available 4"),
        "decided on the replayed state: {body}"
    );
    let (status, body) = server.post("/orders", &order.replace("100,", "3,"));
    assert_eq!(status, 201, "what the true state allows is accepted: {body}");
    drop(server);

    let output = run(&db, &["verify", "chain"]);
    let (stdout, stderr) = texts(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("inventory-SKU-1"), "{stdout}");
    assert!(stdout.contains("stored snapshot does not match"), "{stdout}");
    let row = stdout
        .lines()
        .find(|line| line.contains("inventory-SKU-1"))
        .unwrap_or_default();
    assert!(row.split_whitespace().nth(1) == Some("2"), "version 2 is named: {row}");
}
