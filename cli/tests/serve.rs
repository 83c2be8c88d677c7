//! `tally serve` as a user runs it: the real binary on 127.0.0.1 with a port
//! the OS picks, a SQLite file, and plain HTTP over loopback.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Server {
    child: Child,
    address: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(db: &std::path::Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tally"))
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
        let log: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
        if let Some(address) = log["fields"]["address"].as_str() {
            break address.to_owned();
        }
    };
    // Keep draining the logs so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server { child, address }
}

/// One HTTP/1.1 request with `Connection: close`; returns (status, body).
fn request(address: &str, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
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
    (status, serde_json::from_str(body).unwrap_or(serde_json::Value::Null))
}

/// The README walkthrough against the real binary: register, receive, order,
/// read back; then a restart keeps every acknowledged write.
#[test]
fn serve_runs_the_walkthrough_and_survives_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("tally.db");
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
