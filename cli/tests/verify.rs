//! `tally verify` as an operator runs it: the real binary against a store
//! file that was tampered with by hand (a separate rusqlite connection that
//! rewrites stored data and leaves hashes and checkpoints alone).

use rusqlite::{Connection, params};
use serde_json::json;

mod support;

use support::{corrupt_summary, ok, run, seed_orders, temp_db, texts};

/// A store with 120 orders, both read models fully projected.
fn projected_store() -> (tempfile::TempDir, std::path::PathBuf) {
    let (dir, db) = temp_db();
    seed_orders(&db, 0..120);
    for projection in ["order_summary", "sales_by_day"] {
        ok(run(&db, &["rebuild", projection]));
    }
    (dir, db)
}

/// Given an untouched store, then both checks pass with exit status 0.
#[test]
fn an_untouched_store_verifies() {
    let (_dir, db) = projected_store();
    let stdout = ok(run(&db, &["verify", "chain"]));
    assert!(stdout.contains("every chain holds"), "{stdout}");
    assert!(stdout.contains("events/s"), "throughput is reported: {stdout}");
    for projection in ["order_summary", "sales_by_day"] {
        let stdout = ok(run(&db, &["verify", "projections", projection, "--fail-on-lag"]));
        assert!(stdout.contains("0 differing, 0 missing, 0 extra"), "{stdout}");
    }
}

/// Given one stored event's data rewritten in place, when the chains are
/// verified, then exactly that stream and version are named, exit 1 (and
/// `--stream` finds it too; another stream verifies).
#[test]
fn a_tampered_event_is_named_by_stream_and_version() {
    let (_dir, db) = projected_store();
    let conn = Connection::open(&db).expect("open");
    let changed = conn
        .execute(
            "UPDATE events SET data = json_set(data, '$.customer_id', 'mallory') WHERE stream_id = ?1 AND version = ?2",
            params!["order-o41", 1],
        )
        .expect("tamper");
    assert_eq!(changed, 1);

    let output = run(&db, &["verify", "chain"]);
    let (stdout, stderr) = texts(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    let broken: Vec<&str> = stdout.lines().filter(|l| l.starts_with("order-")).collect();
    assert_eq!(broken.len(), 1, "{stdout}");
    let fields: Vec<&str> = broken[0].split_whitespace().collect();
    assert_eq!(&fields[..2], ["order-o41", "1"], "{stdout}");
    assert!(stdout.contains("1 broken stream"), "{stdout}");

    let output = run(&db, &["verify", "chain", "--stream", "order-o41"]);
    assert_eq!(output.status.code(), Some(1));
    ok(run(&db, &["verify", "chain", "--stream", "order-o40"]));
}

/// Given one read-model row changed by hand, when the projection is
/// verified, then exactly that row is reported, side by side, exit 1.
#[test]
fn a_changed_row_is_reported_exactly() {
    let (_dir, db) = projected_store();
    corrupt_summary(&db, "o17", "total_cents", json!(999_999));

    let output = run(&db, &["verify", "projections", "order_summary"]);
    let (stdout, stderr) = texts(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    let reported: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("DIFFERS") || l.starts_with("MISSING") || l.starts_with("EXTRA"))
        .collect();
    assert_eq!(reported, ["DIFFERS o17"], "{stdout}");
    let field_line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("total_cents"))
        .expect("the differing field, side by side");
    assert!(field_line.contains("999999"), "{stdout}");
    assert!(
        stdout.contains("1 differing, 0 missing, 0 extra of 120 rows"),
        "{stdout}"
    );

    // The other model is untouched.
    ok(run(&db, &["verify", "projections", "sales_by_day"]));
}

/// Given a deleted row and a row of an order that never existed, then they
/// are reported as missing and extra.
#[test]
fn missing_and_extra_rows_are_reported() {
    let (_dir, db) = projected_store();
    let conn = Connection::open(&db).expect("open");
    let generation: i64 = conn
        .query_row(
            "SELECT generation FROM projection_generations WHERE projection = 'sales_by_day' AND state = 'live'",
            [],
            |r| r.get(0),
        )
        .expect("generation");
    let table = format!("sales_by_day_g{generation}");
    conn.execute(&format!("DELETE FROM {table} WHERE day = '2026-03-02'"), [])
        .expect("delete");
    conn.execute(
        &format!("INSERT INTO {table} (day, orders, units, revenue_cents) VALUES ('1999-01-01', 1, 1, 1)"),
        [],
    )
    .expect("insert");

    let output = run(&db, &["verify", "projections", "sales_by_day"]);
    let (stdout, _) = texts(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("MISSING 2026-03-02"), "{stdout}");
    assert!(stdout.contains("EXTRA   1999-01-01"), "{stdout}");
}
