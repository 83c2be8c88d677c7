//! What the API scenarios share: a router over a fresh SQLite store, and
//! one-call request helpers (axum's `oneshot`, no network).

#![allow(dead_code)]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tally_api::{ApiConfig, AppState};
use tally_domain::views::PROJECTIONS;
use tally_store_sqlite::{SqliteStore, Tailer, projection_sink};
use tempfile::TempDir;
use tower::ServiceExt;

/// A router over a fresh store in a temporary directory.
pub struct TestApi {
    pub router: Router,
    pub store: SqliteStore,
    _dir: TempDir,
}

impl TestApi {
    pub fn new() -> Self {
        Self::with_config(ApiConfig::default())
    }

    pub fn with_config(config: ApiConfig) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path().join("tally.db")).expect("open store");
        let state = AppState::new(Arc::new(store.clone()), Arc::new(store.clone()), config);
        Self {
            router: tally_api::router(state),
            store,
            _dir: dir,
        }
    }

    /// Feeds every committed event to the eventual projections, as `tally serve` does.
    pub async fn drain_projections(&self) {
        let sinks = PROJECTIONS
            .iter()
            .filter_map(|name| projection_sink(name, &self.store))
            .collect();
        Tailer::new(self.store.clone(), sinks)
            .drain()
            .await
            .expect("projection tail");
    }

    pub async fn events(&self) -> u64 {
        self.store.count_events().await.expect("count events")
    }

    pub async fn send(&self, request: Request<Body>) -> (StatusCode, Value) {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("router is infallible");
        let status = response.status();
        let bytes = response.into_body().collect().await.expect("body").to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        (status, body)
    }

    pub async fn post(&self, uri: &str, body: impl Into<String>) -> (StatusCode, Value) {
        self.send(post(uri, body)).await
    }

    pub async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.send(Request::get(uri).body(Body::empty()).expect("request")).await
    }

    /// Registers `sku` and receives `stock` units.
    pub async fn stocked_sku(&self, sku: &str, stock: u64) {
        let (status, body) = self
            .post("/inventory", format!(r#"{{"sku":"{sku}","name":"Item {sku}"}}"#))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        if stock > 0 {
            let (status, body) = self
                .post(
                    &format!("/inventory/{sku}/receipts"),
                    format!(r#"{{"quantity":{stock}}}"#),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    }

    /// Places a one-line order and returns the response.
    pub async fn order(
        &self,
        order_id: &str,
        customer: &str,
        sku: &str,
        quantity: u64,
        price: u64,
    ) -> (StatusCode, Value) {
        self.post(
            "/orders",
            format!(
                r#"{{"order_id":"{order_id}","customer_id":"{customer}","lines":[{{"sku":"{sku}","quantity":{quantity},"unit_price_cents":{price}}}]}}"#
            ),
        )
        .await
    }
}

pub fn post(uri: &str, body: impl Into<String>) -> Request<Body> {
    Request::post(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.into()))
        .expect("request")
}
