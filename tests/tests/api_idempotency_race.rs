//! Concurrent requests with one Idempotency-Key: every one answers what a
//! sequential retry answers (the first response, replayed), never the
//! rejection its own decision met because the winner committed first; a
//! different request with the key stays a 422. On SQLite the race is real
//! (eight requests at once); on DynamoDB the emulator serialises requests,
//! so the loser's first idempotency lookup is made to miss, as it does when
//! it runs before the winner commits.

mod api_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut;
use aws_smithy_runtime_api::client::orchestrator::Metadata as OperationMetadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;
use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use tally_store_dynamodb::schema::IDEMPOTENCY_PK;
use tokio::sync::Barrier;

use api_support::{DynamoApi, TestApi, post, send_with_headers};

const KEY: &str = "race-key-1";

fn order_body(order_id: &str, quantity: u32) -> String {
    format!(
        r#"{{"order_id":"{order_id}","customer_id":"c-1","lines":[{{"sku":"A","quantity":{quantity},"unit_price_cents":100}}]}}"#
    )
}

async fn keyed_order(router: &Router, body: &str) -> (StatusCode, HeaderMap, Value) {
    let mut request = post("/orders", body.to_owned());
    request
        .headers_mut()
        .insert("idempotency-key", KEY.parse().expect("header"));
    send_with_headers(router, request).await
}

fn replayed(headers: &HeaderMap) -> bool {
    headers.get("idempotent-replayed").is_some_and(|v| v == "true")
}

/// Eight `POST /orders` at once on SQLite, four with one body and four
/// with another, all with the same key: the body that won answers 201 four
/// times with one body (three of them replayed), the other body 422 four
/// times, and one order's events are written. Repeated over several keys
/// and orders, so the interleaving that lost before is met every run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_with_one_key_all_get_the_first_response_on_sqlite() {
    let api = TestApi::new();
    api.stocked_sku("A", 1_000).await;
    for round in 0..5 {
        let before = api.events().await;
        let order_id = format!("o-race-{round}");
        let key = format!("{KEY}-{round}");
        let barrier = Arc::new(Barrier::new(8));
        let requests = (0..8).map(|i| {
            let (router, barrier) = (api.router.clone(), Arc::clone(&barrier));
            // Even requests one body, odd ones another (same order, other quantity).
            let body = order_body(&order_id, if i % 2 == 0 { 1 } else { 2 });
            let key = key.clone();
            tokio::spawn(async move {
                let mut request = post("/orders", body.clone());
                request
                    .headers_mut()
                    .insert("idempotency-key", key.parse().expect("header"));
                barrier.wait().await;
                (body, send_with_headers(&router, request).await)
            })
        });
        let mut answers = Vec::new();
        for request in requests.collect::<Vec<_>>() {
            answers.push(request.await.expect("request task"));
        }
        let created: Vec<&(String, (StatusCode, HeaderMap, Value))> = answers
            .iter()
            .filter(|(_, (s, _, _))| *s == StatusCode::CREATED)
            .collect();
        let winner_body = &created.first().expect("one request placed the order").0;
        for (body, (status, headers, answer)) in &answers {
            if body == winner_body {
                assert_eq!(
                    *status,
                    StatusCode::CREATED,
                    "round {round}, same body as the winner: {answer}"
                );
                assert_eq!(answer, &created[0].1.2, "round {round}: the first response, replayed");
            } else {
                assert_eq!(
                    (*status, answer["error"].as_str()),
                    (StatusCode::UNPROCESSABLE_ENTITY, Some("idempotency_key_reused")),
                    "round {round}, other body: {answer}"
                );
                assert!(!replayed(headers));
            }
        }
        assert_eq!(created.len(), 4, "round {round}: {answers:?}");
        assert_eq!(
            created.iter().filter(|(_, (_, h, _))| replayed(h)).count(),
            3,
            "round {round}: all but the winner replayed"
        );
        assert_eq!(
            api.events().await,
            before + 2,
            "round {round}: one order placed, one reservation"
        );
    }
}

/// Makes the next `budget` GetItem requests on the idempotency table miss
/// (their key is rewritten to one nobody wrote): the lookup a request makes
/// before its command, when the winner has not committed yet.
#[derive(Debug, Clone, Default)]
struct HideIdempotencyRecord {
    budget: Arc<AtomicU32>,
}

impl Intercept for HideIdempotencyRecord {
    fn name(&self) -> &'static str {
        "HideIdempotencyRecord"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if cfg.load::<OperationMetadata>().map(|m| m.name()) != Some("GetItem") {
            return Ok(());
        }
        let request = context.request_mut();
        let Some(bytes) = request.body().bytes() else {
            return Ok(());
        };
        let mut body: Value = serde_json::from_slice(bytes)?;
        let Some(key) = body["Key"][IDEMPOTENCY_PK]["S"].as_str().map(str::to_owned) else {
            return Ok(());
        };
        let spent = self
            .budget
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1))
            .is_ok();
        if spent {
            body["Key"][IDEMPOTENCY_PK]["S"] = Value::String(format!("{key}-not-yet-committed"));
            let bytes = serde_json::to_vec(&body)?;
            request.headers_mut().insert("content-length", bytes.len().to_string());
            *request.body_mut() = SdkBody::from(bytes);
        }
        Ok(())
    }
}

/// DynamoDB through the router: the winner completes; a second request with
/// the same key and body whose first lookup misses meets the placed order
/// (`order_already_exists`) and answers the first response, replayed; with
/// another body it is a 422. Neither writes an event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_lost_the_race_replays_the_first_response_on_dynamodb() {
    let hide = HideIdempotencyRecord::default();
    let config = tally_emulator::sdk_config().await;
    let client = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&config)
            .interceptor(hide.clone())
            .build(),
    );
    let api = DynamoApi::with_client(client).await;
    let (status, body) = api.send(post("/inventory", r#"{"sku":"A","name":"Item A"}"#)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = api.send(post("/inventory/A/receipts", r#"{"quantity":10}"#)).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let body = order_body("o-race", 1);
    let (status, headers, first) = keyed_order(&api.router, &body).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert!(!replayed(&headers));
    let stream = tally_core::StreamId::parse("order-o-race").expect("stream");
    let events = || async {
        tally_core::EventStore::read_range(&api.store, &stream, 1, None)
            .await
            .expect("read")
            .len()
    };
    assert_eq!(events().await, 1);

    hide.budget.store(1, Ordering::SeqCst);
    let (status, headers, again) = keyed_order(&api.router, &body).await;
    assert_eq!(hide.budget.load(Ordering::SeqCst), 0, "the first lookup was hidden");
    assert_eq!(status, StatusCode::CREATED, "{again}");
    assert_eq!(again, first);
    assert!(replayed(&headers), "idempotent-replayed: true");

    hide.budget.store(1, Ordering::SeqCst);
    let (status, _, other) = keyed_order(&api.router, &order_body("o-race", 2)).await;
    assert_eq!(
        (status, other["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("idempotency_key_reused")),
        "{other}"
    );
    assert_eq!(events().await, 1, "the losers wrote nothing");
}
