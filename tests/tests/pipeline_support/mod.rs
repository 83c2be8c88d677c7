//! The whole AWS pipeline on the emulator, wired exactly as template.yaml
//! wires the Lambdas: the stack is the template deployed into the
//! emulator, each handler is built from the environment the template gives
//! its function, and the driver stands in for the event source mappings
//! (see `tally_emulator::driver`).
//!
//! `post` goes to the command Lambda's router, `get` to the query
//! Lambda's; `drain` runs stream → publisher → bus → queues → projectors
//! until nothing moves. `replay` computes what the read models must hold
//! from the events table alone, in order: the oracle every scenario
//! compares the query routes with.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use aws_config::SdkConfig;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tally_api::{ApiConfig, CommandState, QueryState};
use tally_bus::{Projector, Publisher, PublisherConfig};
use tally_core::{Decider, EventEnvelope, StreamId, decode_event};
use tally_domain::views::{self, InventoryLevel, OrderSummary, SalesDay};
use tally_domain::{Inventory, InventoryState, Order};
use tally_emulator::deploy::{Deployment, deploy_template};
use tally_emulator::driver::{PumpReport, QueuePump, StreamPump};
use tally_store_dynamodb::items::EventItem;
use tally_store_dynamodb::{DynamoConfig, DynamoReadModels, DynamoStore, ReadTables};
use tower::ServiceExt;

/// The projector functions of the template, in the order they are pumped.
pub const PROJECTOR_FUNCTIONS: [&str; 2] = ["OrderSummaryProjectorFunction", "SalesByDayProjectorFunction"];

/// Makes PutEvents entries whose detail mentions `needle` fail at the
/// emulator (their detail is sent malformed, so EventBridge answers
/// `MalformedDetail` for them alone), `budget` times in all.
#[derive(Debug, Clone)]
pub struct FailEntries {
    pub needle: String,
    pub budget: Arc<AtomicU32>,
}

impl Intercept for FailEntries {
    fn name(&self) -> &'static str {
        "FailEntries"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request_mut();
        let Some(bytes) = request.body().bytes() else {
            return Ok(());
        };
        let mut body: Value = serde_json::from_slice(bytes)?;
        let mut changed = false;
        if let Some(entries) = body.get_mut("Entries").and_then(Value::as_array_mut) {
            for entry in entries {
                let hit = entry
                    .get("Detail")
                    .and_then(Value::as_str)
                    .is_some_and(|d| d.contains(&self.needle));
                let spend = || {
                    self.budget
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1))
                        .is_ok()
                };
                if hit && spend() {
                    entry["Detail"] = Value::String("{ not json".into());
                    changed = true;
                }
            }
        }
        if changed {
            let bytes = serde_json::to_vec(&body)?;
            request.headers_mut().insert("content-length", bytes.len().to_string());
            *request.body_mut() = SdkBody::from(bytes);
        }
        Ok(())
    }
}

/// The deployed pipeline and its handlers.
pub struct Pipeline {
    pub deployment: Deployment,
    pub sdk: SdkConfig,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub store: DynamoStore,
    pub commands: Router,
    pub queries: Router,
    pub publisher: Publisher,
    pub stream: StreamPump,
    pub projectors: Vec<(Projector, QueuePump)>,
}

impl Pipeline {
    /// Deploys template.yaml into the emulator and wires every handler.
    pub async fn deploy() -> Self {
        Self::deploy_with(None, |_| {}).await
    }

    /// As [`Self::deploy`], with PutEvents faults and adjusted publisher settings.
    pub async fn deploy_with(faults: Option<FailEntries>, adjust: impl FnOnce(&mut PublisherConfig)) -> Self {
        // The handlers' JSON logs, shown by the test harness when a test fails.
        tally_bus::telemetry::init_logging();
        let deployment = tokio::task::spawn_blocking(deploy_template).await.expect("deploy");
        let sdk = tally_emulator::sdk_config().await;
        let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);

        let command_env = deployment.env("CommandApiFunction");
        let store_config = DynamoConfig::from_settings(command_env).expect("command-api settings");
        let config = ApiConfig::with_snapshot_interval(store_config.snapshot_interval);
        let store = DynamoStore::new(dynamodb.clone(), store_config);
        let commands = tally_api::command_router(CommandState::new(Arc::new(store.clone()), config));

        let query_env = deployment.env("QueryApiFunction");
        let reader = DynamoStore::new(
            dynamodb.clone(),
            DynamoConfig::reader_from_settings(query_env).expect("query-api settings"),
        );
        let reads = DynamoReadModels::new(
            dynamodb.clone(),
            ReadTables::from_settings(query_env).expect("query-api tables"),
        );
        let queries = tally_api::query_router(QueryState::new(Arc::new(reader), Arc::new(reads), config));

        let mut eventbridge = aws_sdk_eventbridge::config::Builder::from(&sdk);
        if let Some(faults) = faults {
            eventbridge = eventbridge.interceptor(faults);
        }
        let publisher_env = deployment.env("StreamPublisherFunction");
        let mut publisher_config = PublisherConfig::from_settings(publisher_env).expect("publisher settings");
        adjust(&mut publisher_config);
        let publisher = Publisher::new(
            aws_sdk_eventbridge::Client::from_conf(eventbridge.build()),
            publisher_config,
        );
        let stream = StreamPump::new(&sdk, deployment.mapping("StreamPublisherFunction").clone());
        let projectors = PROJECTOR_FUNCTIONS
            .iter()
            .map(|function| {
                let projector =
                    Projector::dynamodb(dynamodb.clone(), deployment.env(function)).expect("projector settings");
                (projector, QueuePump::new(&sdk, deployment.mapping(function).clone()))
            })
            .collect();
        Self {
            sqs: aws_sdk_sqs::Client::new(&sdk),
            deployment,
            sdk,
            dynamodb,
            store,
            commands,
            queries,
            publisher,
            stream,
            projectors,
        }
    }

    async fn call(router: &Router, request: Request<Body>) -> (StatusCode, Value) {
        let response = router.clone().oneshot(request).await.expect("router is infallible");
        let status = response.status();
        let bytes = response.into_body().collect().await.expect("body").to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, body)
    }

    /// A command, through the command Lambda's router.
    pub async fn post(&self, uri: &str, body: Value) -> (StatusCode, Value) {
        self.post_with(uri, &[], body).await
    }

    /// POSTs a command with extra headers (an `Idempotency-Key`, say).
    pub async fn post_with(&self, uri: &str, headers: &[(&str, &str)], body: Value) -> (StatusCode, Value) {
        let mut request = Request::post(uri).header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Body::from(body.to_string())).expect("request");
        Self::call(&self.commands, request).await
    }

    /// A command that must succeed; returns its body.
    pub async fn command(&self, uri: &str, body: Value) -> Value {
        let (status, answer) = self.post(uri, body.clone()).await;
        assert!(status.is_success(), "POST {uri} {body} → {status} {answer}");
        answer
    }

    /// A query, through the query Lambda's router.
    pub async fn get(&self, uri: &str) -> (StatusCode, Value) {
        Self::call(&self.queries, Request::get(uri).body(Body::empty()).expect("request")).await
    }

    /// Stream → publisher, until the stream has nothing new.
    pub async fn publish(&mut self) -> PumpReport {
        let publisher = &self.publisher;
        self.stream
            .pump(|event| async move { Ok::<_, std::convert::Infallible>(publisher.publish(event).await) })
            .await
            .expect("stream pump")
    }

    /// Every projection queue → its projector, until the queues are empty.
    pub async fn project(&self) -> PumpReport {
        let mut report = PumpReport::default();
        for (projector, pump) in &self.projectors {
            report += pump
                .pump(|event| async move { Ok::<_, std::convert::Infallible>(projector.project(&event).await) })
                .await
                .expect("queue pump");
        }
        report
    }

    /// Runs the whole read side until nothing moves. moto delivers inside
    /// the calls, so one idle round means settled; LocalStack (any
    /// `AWS_ENDPOINT_URL`) delivers stream records and rule targets a moment
    /// later, so there it takes three idle rounds 300 ms apart.
    pub async fn drain(&mut self) {
        let asynchronous = std::env::var_os("AWS_ENDPOINT_URL").is_some_and(|v| !v.is_empty());
        let settled_after = if asynchronous { 3 } else { 1 };
        let mut idle = 0;
        for _ in 0..60 {
            let published = self.publish().await;
            let projected = self.project().await;
            if published.invocations == 0 && projected.invocations == 0 {
                idle += 1;
                if idle == settled_after {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            } else {
                idle = 0;
            }
        }
        panic!("the pipeline did not settle in 60 rounds");
    }

    /// Every event of the events table, by stream, in version order.
    pub async fn all_events(&self) -> BTreeMap<StreamId, Vec<EventEnvelope>> {
        let mut streams: BTreeMap<StreamId, Vec<EventEnvelope>> = BTreeMap::new();
        let mut start = None;
        loop {
            let page = self
                .dynamodb
                .scan()
                .table_name(self.deployment.output("EventsTableName"))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .expect("scan events");
            for item in page.items.unwrap_or_default() {
                let item: EventItem = serde_dynamo::from_item(item).expect("event item");
                let (event, _) = item.into_envelope().expect("envelope");
                streams.entry(event.stream_id.clone()).or_default().push(event);
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        for events in streams.values_mut() {
            events.sort_by_key(|e| e.version);
        }
        streams
    }

    /// What the read models must hold: the events table replayed in order.
    pub async fn replay(&self) -> Replay {
        let mut replay = Replay::default();
        for (stream, events) in self.all_events().await {
            match stream.category() {
                Inventory::CATEGORY => {
                    let mut state = InventoryState::default();
                    for e in &events {
                        let event =
                            decode_event::<Inventory>(&e.event_type, e.schema, &e.data).expect("inventory event");
                        state = Inventory::evolve(state, &event);
                    }
                    let version = events.last().map_or(0, |e| e.version);
                    if let Some(level) = InventoryLevel::from_state(&state, version) {
                        replay.inventory.insert(stream.entity_id().to_owned(), level);
                    }
                }
                Order::CATEGORY => {
                    let mut row = None;
                    for e in &events {
                        let event = decode_event::<Order>(&e.event_type, e.schema, &e.data).expect("order event");
                        row = views::apply_order_summary(row, &event, e.version, e.timestamp_ms);
                        if let Some(delta) = views::sales_delta(&event, e.timestamp_ms) {
                            let day = delta.day.format("%Y-%m-%d").to_string();
                            let sales = replay.sales.entry(day.clone()).or_insert_with(|| SalesDay {
                                day,
                                ..SalesDay::default()
                            });
                            sales.orders += delta.orders;
                            sales.units += delta.units;
                            sales.revenue_cents += delta.revenue_cents;
                        }
                    }
                    if let Some(row) = row {
                        replay.orders.insert(stream.entity_id().to_owned(), row);
                    }
                }
                other => panic!("unexpected stream category {other}"),
            }
        }
        replay
    }

    /// Asserts that every query route answers what the in-order replay computes.
    pub async fn assert_read_models_match_replay(&self) {
        let replay = self.replay().await;
        for (sku, level) in &replay.inventory {
            let (status, body) = self.get(&format!("/inventory/{sku}")).await;
            assert_eq!(status, StatusCode::OK, "GET /inventory/{sku}: {body}");
            assert_eq!(body, serde_json::to_value(level).expect("json"), "inventory {sku}");
        }
        for (order_id, row) in &replay.orders {
            let (status, body) = self.get(&format!("/orders/{order_id}")).await;
            assert_eq!(status, StatusCode::OK, "GET /orders/{order_id}: {body}");
            assert_eq!(body, serde_json::to_value(row).expect("json"), "order {order_id}");
        }
        let mut by_customer: HashMap<String, Vec<&OrderSummary>> = HashMap::new();
        for row in replay.orders.values() {
            by_customer.entry(row.customer_id.to_string()).or_default().push(row);
        }
        for (customer, rows) in &mut by_customer {
            rows.sort_by(|a, b| (b.placed_at_ms, b.order_id.as_str()).cmp(&(a.placed_at_ms, a.order_id.as_str())));
            let expected: Vec<Value> = rows.iter().map(|r| serde_json::to_value(r).expect("json")).collect();
            // Pages of two: the cursor walk must see every order once, newest first.
            let mut listed = Vec::new();
            let mut uri = format!("/customers/{customer}/orders?limit=2");
            loop {
                let (status, body) = self.get(&uri).await;
                assert_eq!(status, StatusCode::OK, "GET {uri}: {body}");
                listed.extend(body["orders"].as_array().expect("orders").iter().cloned());
                match body["next_cursor"].as_str() {
                    Some(cursor) => uri = format!("/customers/{customer}/orders?limit=2&cursor={cursor}"),
                    None => break,
                }
            }
            assert_eq!(listed, expected, "orders of customer {customer}");
        }
        if let (Some(first), Some(last)) = (replay.sales.keys().next(), replay.sales.keys().last()) {
            let (status, body) = self.get(&format!("/reports/sales?from={first}&to={last}")).await;
            assert_eq!(status, StatusCode::OK, "sales report: {body}");
            let expected: Vec<&SalesDay> = replay.sales.values().collect();
            assert_eq!(
                body["days"],
                serde_json::to_value(expected).expect("json"),
                "sales by day"
            );
        }
    }

    /// The URL of a template output queue.
    pub fn queue(&self, output: &str) -> String {
        self.deployment.output(output).to_owned()
    }
}

/// The read models an in-order replay computes.
#[derive(Debug, Default)]
pub struct Replay {
    pub inventory: BTreeMap<String, InventoryLevel>,
    pub orders: BTreeMap<String, OrderSummary>,
    pub sales: BTreeMap<String, SalesDay>,
}

/// Registers `skus` with `stock` units each.
pub async fn stock_skus(pipeline: &Pipeline, skus: &[&str], stock: u32) {
    for sku in skus {
        pipeline
            .command(
                "/inventory",
                serde_json::json!({ "sku": sku, "name": format!("Product {sku}") }),
            )
            .await;
        pipeline
            .command(
                &format!("/inventory/{sku}/receipts"),
                serde_json::json!({ "quantity": stock }),
            )
            .await;
    }
}

/// Places an order of `lines` (sku, quantity, unit price) for `customer`.
pub async fn place(pipeline: &Pipeline, order_id: &str, customer: &str, lines: &[(&str, u32, u64)]) -> Value {
    let lines: Vec<Value> = lines
        .iter()
        .map(
            |(sku, quantity, price)| serde_json::json!({ "sku": sku, "quantity": quantity, "unit_price_cents": price }),
        )
        .collect();
    pipeline
        .command(
            "/orders",
            serde_json::json!({ "order_id": order_id, "customer_id": customer, "lines": lines }),
        )
        .await
}
