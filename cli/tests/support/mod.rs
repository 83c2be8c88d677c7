//! What the CLI tests share: the real `tally` binary (run to completion, or
//! `tally serve` on a port the OS picks), one-call HTTP requests, a history
//! seeded straight into a store file, and hand edits that go around the
//! store (as a tamperer or a bug would).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use rusqlite::{Connection, params};
use serde_json::Value;
use tally_core::{AppendBatch, EventStore, Metadata, StreamAppend, StreamId, encode_event, seal};
use tally_domain::{Cents, Currency, CustomerId, Order, OrderEvent, OrderId, OrderLine, Quantity, Sku};
use tally_store_sqlite::SqliteStore;

/// The binary under test.
pub fn tally() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tally"));
    command.env_remove("TALLY_DB").env("RUST_LOG", "warn");
    command
}

/// Runs `tally <args> --db <db>` to completion.
pub fn run(db: &Path, args: &[&str]) -> Output {
    tally().args(args).arg("--db").arg(db).output().expect("run tally")
}

/// stdout and stderr as text, for assertions and failure messages.
pub fn texts(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Asserts a run succeeded; returns its stdout.
pub fn ok(output: Output) -> String {
    let (stdout, stderr) = texts(&output);
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {stdout}\nstderr: {stderr}",
        output.status
    );
    stdout
}

/// `tally serve` on a free port, killed when dropped.
pub struct Server {
    child: Child,
    pub address: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub fn start(db: &Path) -> Self {
        let mut child = tally()
            .args(["serve", "--port", "0", "--db"])
            .arg(db)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tally serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let address = loop {
            let line = lines.next().expect("server exited before listening").expect("log line");
            let log: Value = serde_json::from_str(&line).expect("JSON log line");
            if let Some(address) = log["fields"]["address"].as_str() {
                break address.to_owned();
            }
        };
        // Keep draining the logs so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self { child, address }
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        request(&self.address, "GET", path, "")
    }

    pub fn post(&self, path: &str, body: &str) -> (u16, Value) {
        request(&self.address, "POST", path, body)
    }

    /// GETs `path` until `done` holds (the eventual models lag a little).
    pub fn get_until(&self, path: &str, done: impl Fn(u16, &Value) -> bool) -> (u16, Value) {
        let mut last = (0, Value::Null);
        for _ in 0..500 {
            last = self.get(path);
            if done(last.0, &last.1) {
                return last;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("GET {path} never satisfied the condition; last: {last:?}");
    }
}

/// One HTTP/1.1 request with `Connection: close`; returns (status, body).
pub fn request(address: &str, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// A fresh directory with a database path in it (the file is not created).
pub fn temp_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("tally.db");
    (dir, db)
}

fn order_line(i: u64) -> OrderLine {
    OrderLine {
        sku: Sku::parse(format!("S{}", i % 7)).expect("sku"),
        quantity: Quantity::new(1 + i % 3).expect("quantity"),
        unit_price_cents: Cents::new(250 + i % 1000).expect("cents"),
    }
}

/// Order `o<i>`'s history: placed; then confirmed and shipped (i % 4 = 1),
/// cancelled (i % 4 = 2), confirmed (i % 4 = 3) or left placed.
pub fn order_history(i: u64) -> Vec<OrderEvent> {
    let lines = vec![order_line(i), order_line(i + 1)];
    let mut events = vec![OrderEvent::OrderPlaced {
        order_id: OrderId::parse(format!("o{i}")).expect("order id"),
        customer_id: CustomerId::parse(format!("c{}", i % 50)).expect("customer id"),
        lines: lines.clone(),
        currency: Currency::usd(),
    }];
    match i % 4 {
        1 => events.extend([OrderEvent::OrderConfirmed {}, OrderEvent::OrderShipped {}]),
        2 => events.push(OrderEvent::OrderCancelled { reason: None, lines }),
        3 => events.push(OrderEvent::OrderConfirmed {}),
        _ => {}
    }
    events
}

/// The status `order_history(i)` ends in.
pub fn final_status(i: u64) -> &'static str {
    ["placed", "shipped", "cancelled", "confirmed"][(i % 4) as usize]
}

/// Appends the histories of orders `range` straight into the store file (no
/// projection runs), spread over several days.
pub fn seed_orders(db: &Path, range: std::ops::Range<u64>) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let store = SqliteStore::open(db).expect("open store");
        append_in_chunks(&store, order_appends(range, 11), 500).await;
    });
}

/// The appends creating orders `range` (`order_history`), placed over `days` days.
pub fn order_appends(range: std::ops::Range<u64>, days: u64) -> Vec<StreamAppend> {
    range
        .map(|i| {
            let stream = StreamId::parse(format!("order-o{i}")).expect("stream");
            let encoded = order_history(i)
                .iter()
                .map(|e| encode_event::<Order>(e).expect("encode"))
                .collect();
            let at = 1_772_323_200_000 + (i % days.max(1)) as i64 * 86_400_000;
            StreamAppend {
                events: seal(&stream, 0, None, encoded, &Metadata::default(), at),
                stream_id: stream,
                expected_version: 0,
                snapshot: None,
                view: None,
            }
        })
        .collect()
}

/// Appends `appends`, `chunk` streams per atomic append.
pub async fn append_in_chunks(store: &dyn EventStore, appends: Vec<StreamAppend>, chunk: usize) {
    for streams in appends.chunks(chunk) {
        store
            .append(AppendBatch {
                streams: streams.to_vec(),
                idempotency: None,
            })
            .await
            .expect("seed");
    }
}

/// How many events the store file holds (0 when there is no file).
pub fn event_count(db: &Path) -> i64 {
    if !db.exists() {
        return 0;
    }
    Connection::open(db)
        .expect("open")
        .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
        .expect("count")
}

/// The generation of `projection` readers see.
pub fn live_generation(db: &Path, projection: &str) -> i64 {
    Connection::open(db)
        .expect("open")
        .query_row(
            "SELECT generation FROM projection_generations WHERE projection = ?1 AND state = 'live'",
            [projection],
            |r| r.get(0),
        )
        .expect("live generation")
}

/// Whether a rebuild of `projection` is unfinished (a blue-green build, or
/// a truncate's replay of the live generation).
pub fn rebuild_unfinished(db: &Path, projection: &str) -> bool {
    Connection::open(db)
        .expect("open")
        .query_row(
            "SELECT COUNT(*) FROM projection_generations WHERE projection = ?1 AND replay_seq IS NOT NULL",
            [projection],
            |r| r.get::<_, i64>(0),
        )
        .expect("generations")
        > 0
}

/// Sets field `field` of order `order_id`'s live summary row, by hand.
pub fn corrupt_summary(db: &Path, order_id: &str, field: &str, value: Value) {
    let table = format!("order_summary_g{}", live_generation(db, "order_summary"));
    let conn = Connection::open(db).expect("open");
    let row: String = conn
        .query_row(
            &format!("SELECT row FROM {table} WHERE order_id = ?1"),
            [order_id],
            |r| r.get(0),
        )
        .expect("the row exists");
    let mut row: Value = serde_json::from_str(&row).expect("row JSON");
    row[field] = value;
    let changed = conn
        .execute(
            &format!("UPDATE {table} SET row = ?1 WHERE order_id = ?2"),
            params![row.to_string(), order_id],
        )
        .expect("update");
    assert_eq!(changed, 1);
}
