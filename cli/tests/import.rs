//! `tally import` as an operator runs it: legacy files (CSV and JSON Lines)
//! into a store, read back through the HTTP API of a real `tally serve`.

use std::path::{Path, PathBuf};

mod support;

use support::{Server, event_count, ok, run, temp_db, texts};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write the file");
    path
}

const INVENTORY_CSV: &str = "\
sku,name,on_hand
SKU-1,Blue widget,10
SKU-2,Red widget,4
SKU-3,Green widget,0
";

const ORDERS_CSV: &str = "\
order_id,customer_id,status,sku,quantity,unit_price_cents,placed_at
o-100,c-1,placed,SKU-1,3,1250,2025-12-01T09:30:00Z
o-100,c-1,placed,SKU-2,1,499,2025-12-01T09:30:00Z
o-101,c-2,confirmed,SKU-1,2,1250,2025-12-02T10:00:00Z
";

fn import(db: &Path, file: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["import", file.to_str().expect("utf-8 path")];
    args.extend(extra);
    run(db, &args)
}

/// Given a legacy inventory file and an open-orders file, when both are
/// imported, then the API serves the SKUs with the orders' stock reserved,
/// the orders with their legacy status and time, and each event names its
/// source.
#[test]
fn a_good_file_brings_the_state_in() {
    let (dir, db) = temp_db();
    let inventory = write(dir.path(), "inventory.csv", INVENTORY_CSV);
    let orders = write(dir.path(), "open-orders.csv", ORDERS_CSV);
    let stdout = ok(import(&db, &inventory, &[]));
    assert!(stdout.contains("imported 3 SKUs and 0 orders"), "{stdout}");
    let stdout = ok(import(&db, &orders, &[]));
    assert!(stdout.contains("imported 0 SKUs and 2 orders"), "{stdout}");

    let server = Server::start(&db);
    let (status, sku) = server.get("/inventory/SKU-1");
    assert_eq!(status, 200, "{sku}");
    assert_eq!(
        (
            sku["on_hand"].as_u64(),
            sku["reserved"].as_u64(),
            sku["available"].as_u64()
        ),
        (Some(10), Some(5), Some(5))
    );
    assert_eq!(server.get("/inventory/SKU-3").1["on_hand"], 0);

    let (_, order) = server.get_until("/orders/o-100", |status, _| status == 200);
    assert_eq!(order["status"], "placed");
    assert_eq!(order["total_cents"], 3 * 1250 + 499);
    let (_, confirmed) = server.get_until("/orders/o-101", |status, _| status == 200);
    assert_eq!(confirmed["status"], "confirmed");
    let (_, sales) = server.get_until("/reports/sales?from=2025-12-01&to=2025-12-02", |_, body| {
        body["days"].as_array().is_some_and(|d| d.len() == 2)
    });
    assert_eq!(
        sales["days"][0]["revenue_cents"],
        3 * 1250 + 499,
        "booked on the legacy day"
    );

    let (_, events) = server.get("/streams/inventory-SKU-1/events");
    assert_eq!(events["events"][0]["type"], "InventoryImported");
    assert_eq!(events["events"][0]["metadata"]["source"], "inventory.csv:2");
    assert_eq!(events["events"][1]["type"], "StockReserved");
    assert_eq!(events["events"][1]["metadata"]["source"], "open-orders.csv:2");

    // An imported order goes on like any other: ship it, its stock is committed.
    let (status, body) = server.post("/orders/o-101/ship", "{}");
    assert_eq!(status, 200, "{body}");
    let (_, sku) = server.get("/inventory/SKU-1");
    assert_eq!((sku["on_hand"].as_u64(), sku["reserved"].as_u64()), (Some(8), Some(3)));
}

/// Given a file whose third row is bad, when it is imported, then the error
/// names the line and field and nothing is written.
#[test]
fn a_bad_row_names_its_line_and_writes_nothing() {
    let (dir, db) = temp_db();
    let file = write(
        dir.path(),
        "inventory.csv",
        "sku,name,on_hand\nSKU-1,Blue widget,10\nSKU 2,Red widget,4\nSKU-3,Green widget,1\n",
    );
    let output = import(&db, &file, &[]);
    let (stdout, stderr) = texts(&output);
    assert_eq!(output.status.code(), Some(2), "{stdout}{stderr}");
    assert!(stderr.contains("line 3, field sku"), "{stderr}");
    assert!(stderr.contains("nothing was written"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(event_count(&db), 0);

    // JSON Lines: the field inside an order's lines is named.
    let file = write(
        dir.path(),
        "export.jsonl",
        concat!(
            r#"{"kind":"inventory","sku":"SKU-1","name":"Blue","on_hand":5}"#,
            "\n",
            r#"{"kind":"order","order_id":"o-1","customer_id":"c-1","status":"placed","lines":[{"sku":"SKU-1","quantity":0,"unit_price_cents":100}]}"#,
            "\n"
        ),
    );
    let output = import(&db, &file, &[]);
    let (_, stderr) = texts(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("line 2, field lines[0].quantity"), "{stderr}");
    assert_eq!(event_count(&db), 0);
}

/// Given open orders that need more stock than the file's inventory has,
/// then the import is refused (it would oversell) and nothing is written.
#[test]
fn an_import_that_would_oversell_is_refused() {
    let (dir, db) = temp_db();
    let file = write(
        dir.path(),
        "both.jsonl",
        concat!(
            r#"{"kind":"inventory","sku":"SKU-1","name":"Blue","on_hand":3}"#,
            "\n",
            r#"{"kind":"order","order_id":"o-1","customer_id":"c-1","status":"placed","lines":[{"sku":"SKU-1","quantity":2,"unit_price_cents":100}]}"#,
            "\n",
            r#"{"kind":"order","order_id":"o-2","customer_id":"c-1","status":"confirmed","lines":[{"sku":"SKU-1","quantity":2,"unit_price_cents":100}]}"#,
            "\n"
        ),
    );
    let output = import(&db, &file, &[]);
    let (_, stderr) = texts(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("line 3, field lines[0].quantity: insufficient stock"),
        "{stderr}"
    );
    assert_eq!(event_count(&db), 0);
}

/// Given a file already imported, when it is imported again, then nothing
/// new is written; a dry run writes nothing either.
#[test]
fn importing_the_same_file_twice_writes_nothing_new() {
    let (dir, db) = temp_db();
    let inventory = write(dir.path(), "inventory.csv", INVENTORY_CSV);
    let orders = write(
        dir.path(),
        "orders.csv",
        ORDERS_CSV
            .replace(",placed_at", "")
            .replace(",2025-12-01T09:30:00Z", "")
            .replace(",2025-12-02T10:00:00Z", "")
            .as_str(),
    );

    let stdout = ok(import(&db, &inventory, &["--dry-run"]));
    assert!(stdout.contains("would import 3 SKUs"), "{stdout}");
    assert!(!db.exists() || event_count(&db) == 0, "a dry run writes nothing");

    ok(import(&db, &inventory, &[]));
    ok(import(&db, &orders, &[]));
    let events = event_count(&db);
    assert_eq!(events, 3 + 2 + 3, "3 SKUs, 2 orders, 3 reservations");

    let stdout = ok(import(&db, &inventory, &[]));
    assert!(
        stdout.contains("imported 0 SKUs and 0 orders") && stdout.contains("3 already imported"),
        "{stdout}"
    );
    // Orders without placed_at were stamped at their first import: still the same orders.
    let stdout = ok(import(&db, &orders, &[]));
    assert!(stdout.contains("2 already imported"), "{stdout}");
    assert_eq!(event_count(&db), events);

    let stdout = ok(import(&db, &orders, &["--dry-run"]));
    assert!(stdout.contains("already imported"), "{stdout}");

    // A different count for an imported SKU is a conflict, not a silent skip.
    let changed = write(dir.path(), "changed.csv", "sku,name,on_hand\nSKU-1,Blue widget,11\n");
    let output = import(&db, &changed, &[]);
    let (_, stderr) = texts(&output);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr.contains("line 2, field sku") && stderr.contains("already exists"),
        "{stderr}"
    );
    assert_eq!(event_count(&db), events);
}
