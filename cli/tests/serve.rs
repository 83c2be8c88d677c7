//! `tally serve` as a user runs it: the real binary on 127.0.0.1 with a port
//! the OS picks, a SQLite file, and plain HTTP over loopback; and the
//! requests a web page in a local browser could make it serve (DNS
//! rebinding, cross-site forms), refused without writing anything.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

mod support;

use support::{Server, event_count, request, temp_db};

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

/// One HTTP/1.1 request with exactly the headers given (no Host unless
/// given); returns (status, body).
fn raw_request(address: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n", body.len()));
    stream.write_all(head.as_bytes()).expect("send head");
    stream.write_all(body.as_bytes()).expect("send body");
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

const REGISTER: &str = r#"{"sku":"SKU-1","name":"Widget"}"#;

/// DNS rebinding: a page on evil.example whose name now resolves to
/// 127.0.0.1 sends Host evil.example:<port>. Reads and writes are refused
/// with 421 and nothing is written; the served address and localhost pass.
#[test]
fn serve_refuses_a_rebinding_host() {
    let (_dir, db) = temp_db();
    let server = Server::start(&db);
    let a = server.address.as_str();
    let port = a.rsplit(':').next().expect("port");
    let evil = format!("evil.example:{port}");
    let json = ("Content-Type", "application/json");

    let (status, body) = raw_request(a, "POST", "/inventory", &[("Host", &evil), json], REGISTER);
    assert_eq!(
        (status, body["error"].as_str()),
        (421, Some("misdirected_request")),
        "{body}"
    );
    let (status, body) = raw_request(a, "GET", "/openapi.json", &[("Host", &evil)], "");
    assert_eq!(
        (status, body["error"].as_str()),
        (421, Some("misdirected_request")),
        "{body}"
    );
    let (status, _) = raw_request(a, "GET", "/openapi.json", &[], "");
    assert_eq!(status, 421, "a request without Host names no served address");
    assert_eq!(event_count(&db), 0, "a refused request writes nothing");

    let localhost = format!("localhost:{port}");
    let (status, body) = raw_request(a, "POST", "/inventory", &[("Host", &localhost), json], REGISTER);
    assert_eq!(status, 201, "{body}");
    assert_eq!(raw_request(a, "GET", "/inventory/SKU-1", &[("Host", a)], "").0, 200);
}

/// Cross-site request forgery: a POST whose Origin is another site (or
/// the opaque `null` of a sandboxed page) is refused with 403 and writes
/// nothing, even as JSON; the served origin, or no Origin (curl), passes.
#[test]
fn serve_refuses_a_foreign_origin() {
    let (_dir, db) = temp_db();
    let server = Server::start(&db);
    let a = server.address.as_str();
    let json = ("Content-Type", "application/json");

    for origin in ["http://evil.example", "null"] {
        let (status, body) = raw_request(
            a,
            "POST",
            "/inventory",
            &[("Host", a), json, ("Origin", origin)],
            REGISTER,
        );
        assert_eq!(
            (status, body["error"].as_str()),
            (403, Some("cross_origin_request")),
            "{origin}: {body}"
        );
    }
    assert_eq!(event_count(&db), 0, "a refused request writes nothing");

    let same_origin = format!("http://{a}");
    let (status, body) = raw_request(
        a,
        "POST",
        "/inventory",
        &[("Host", a), json, ("Origin", &same_origin)],
        REGISTER,
    );
    assert_eq!(status, 201, "{body}");
    // A cross-origin read is harmless (the browser hides the answer) and allowed.
    let (status, _) = raw_request(
        a,
        "GET",
        "/inventory/SKU-1",
        &[("Host", a), ("Origin", "http://evil.example")],
        "",
    );
    assert_eq!(status, 200);
}

/// An HTML form can post only form, multipart or text bodies: a
/// state-changing request that is not JSON (or has no content type) is
/// refused with 415 `unsupported_media_type` and writes nothing; JSON,
/// with or without a charset, is accepted.
#[test]
fn serve_takes_state_changes_only_as_json() {
    let (_dir, db) = temp_db();
    let server = Server::start(&db);
    let a = server.address.as_str();

    for content_type in [
        "application/x-www-form-urlencoded",
        "text/plain",
        "multipart/form-data; boundary=x",
    ] {
        let (status, body) = raw_request(
            a,
            "POST",
            "/inventory",
            &[("Host", a), ("Content-Type", content_type)],
            REGISTER,
        );
        assert_eq!(
            (status, body["error"].as_str()),
            (415, Some("unsupported_media_type")),
            "{content_type}: {body}"
        );
    }
    let (status, _) = raw_request(a, "POST", "/inventory", &[("Host", a)], REGISTER);
    assert_eq!(status, 415, "no content type");
    assert_eq!(event_count(&db), 0, "a refused request writes nothing");

    let charset = ("Content-Type", "application/json; charset=utf-8");
    let (status, body) = raw_request(a, "POST", "/inventory", &[("Host", a), charset], REGISTER);
    assert_eq!(status, 201, "{body}");
    assert_eq!(event_count(&db), 1);
}
