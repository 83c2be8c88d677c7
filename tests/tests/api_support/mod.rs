//! What the API scenarios share: a router over a fresh SQLite store or over
//! DynamoDB on the emulator, and one-call request helpers (axum's
//! `oneshot`, no network).

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_dynamodb::types::{AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType};
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tally_api::{ApiConfig, AppState};
use tally_domain::views::{self, PROJECTIONS};
use tally_store_dynamodb::schema::{
    ENV_CHECKPOINTS_TABLE, ENV_INVENTORY_TABLE, ENV_ORDER_SUMMARY_GREEN_TABLE, ENV_ORDER_SUMMARY_TABLE,
    ENV_SALES_GREEN_TABLE, ENV_SALES_TABLE, READ_PK,
};
use tally_store_dynamodb::{DynamoReadModels, DynamoStore, ReadTables, SlotTables};
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

/// The router's answer with its headers: for `idempotent-replayed`.
pub async fn send_with_headers(router: &Router, request: Request<Body>) -> (StatusCode, HeaderMap, Value) {
    let response = router.clone().oneshot(request).await.expect("router is infallible");
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, body)
}

/// The router's answer as raw bytes: numbers beyond what `Value` holds exactly.
pub async fn get_bytes(router: &Router, uri: &str) -> (StatusCode, Vec<u8>) {
    let request = Request::get(uri).body(Body::empty()).expect("request");
    let response = router.clone().oneshot(request).await.expect("router is infallible");
    let status = response.status();
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    (status, bytes.to_vec())
}

/// The whole API over DynamoDB on the emulator: the events, idempotency
/// and inventory tables, both slots of each eventual model and the
/// checkpoints table, each under a unique prefix. The summary tables have
/// no customer index (no scenario here lists a customer's orders).
pub struct DynamoApi {
    pub router: Router,
    pub store: DynamoStore,
    pub client: aws_sdk_dynamodb::Client,
    pub sales: SlotTables,
}

impl DynamoApi {
    /// Over a client of the caller's (e.g. one with an interceptor).
    pub async fn with_client(client: aws_sdk_dynamodb::Client) -> Self {
        let tables = tally_emulator::create_tables(&client, Some(1)).await;
        let prefix = format!("r{}", uuid::Uuid::now_v7().simple());
        let settings: HashMap<String, String> = [
            (ENV_INVENTORY_TABLE, tables.view_tables[views::INVENTORY_LEVELS].clone()),
            (ENV_ORDER_SUMMARY_TABLE, format!("{prefix}-summary-blue")),
            (ENV_ORDER_SUMMARY_GREEN_TABLE, format!("{prefix}-summary-green")),
            (ENV_SALES_TABLE, format!("{prefix}-sales-blue")),
            (ENV_SALES_GREEN_TABLE, format!("{prefix}-sales-green")),
            (ENV_CHECKPOINTS_TABLE, format!("{prefix}-checkpoints")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        for name in [
            ENV_ORDER_SUMMARY_TABLE,
            ENV_ORDER_SUMMARY_GREEN_TABLE,
            ENV_SALES_TABLE,
            ENV_SALES_GREEN_TABLE,
            ENV_CHECKPOINTS_TABLE,
        ] {
            client
                .create_table()
                .table_name(&settings[name])
                .billing_mode(BillingMode::PayPerRequest)
                .key_schema(
                    KeySchemaElement::builder()
                        .attribute_name(READ_PK)
                        .key_type(KeyType::Hash)
                        .build()
                        .expect("key"),
                )
                .attribute_definitions(
                    AttributeDefinition::builder()
                        .attribute_name(READ_PK)
                        .attribute_type(ScalarAttributeType::S)
                        .build()
                        .expect("attribute"),
                )
                .send()
                .await
                .unwrap_or_else(|e| panic!("create table {name}: {e}"));
        }
        let store = DynamoStore::new(client.clone(), tables);
        let reads = DynamoReadModels::new(
            client.clone(),
            ReadTables::from_settings(&settings).expect("read tables"),
        );
        let state = AppState::new(Arc::new(store.clone()), Arc::new(reads), ApiConfig::default());
        Self {
            router: tally_api::router(state),
            store,
            sales: SlotTables::sales_by_day(&settings).expect("sales tables"),
            client,
        }
    }

    pub async fn new() -> Self {
        Self::with_client(tally_emulator::dynamodb(None).await).await
    }

    pub async fn send(&self, request: Request<Body>) -> (StatusCode, Value) {
        let (status, _, body) = send_with_headers(&self.router, request).await;
        (status, body)
    }
}
