//! `sales_by_day` on DynamoDB under a hot day: DynamoDB cancels a
//! transaction with a `TransactionConflict` reason when another transaction
//! touches one of its items at that moment. That is contention, not a
//! failure: the sink retries it (bounded, jittered) and the event is
//! applied exactly once, with no failure reported (nothing for the DLQ).
//! The emulator serialises requests, so the conflicts are injected: an SDK
//! interceptor keeps the first N TransactWriteItems requests from reaching
//! the emulator (their items are emptied) and answers them with the
//! cancellation DynamoDB sends.

mod api_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeDeserializationInterceptorContextMut, BeforeTransmitInterceptorContextMut,
};
use aws_smithy_runtime_api::client::orchestrator::Metadata as OperationMetadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::{Response, StatusCode as HttpStatus};
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};
use axum::http::StatusCode;
use chrono::DateTime;
use serde_json::Value;
use tally_core::projection::BatchProjectionSink;
use tally_core::{Delivery, EventEnvelope, Metadata, StreamId, deliver, encode_event, seal};
use tally_domain::{Cents, Currency, CustomerId, Order, OrderEvent, OrderId, OrderLine, Quantity, Sku};
use tally_store_dynamodb::Slot;

use api_support::DynamoApi;

/// Answers the next `budget` TransactWriteItems with a TransactionConflict
/// cancellation, without letting them write.
#[derive(Debug, Clone, Default)]
struct InjectConflicts {
    budget: Arc<AtomicU32>,
    injected: Arc<AtomicU32>,
}

/// Marks an attempt whose answer is to be replaced.
#[derive(Debug, Clone)]
struct Conflicted;

impl Storable for Conflicted {
    type Storer = StoreReplace<Self>;
}

impl Intercept for InjectConflicts {
    fn name(&self) -> &'static str {
        "InjectConflicts"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if cfg.load::<OperationMetadata>().map(|m| m.name()) != Some("TransactWriteItems") {
            return Ok(());
        }
        let spent = self
            .budget
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1))
            .is_ok();
        if spent {
            // The emulator must not apply what DynamoDB would have cancelled.
            let bytes = br#"{"TransactItems":[]}"#.to_vec();
            let request = context.request_mut();
            request.headers_mut().insert("content-length", bytes.len().to_string());
            *request.body_mut() = SdkBody::from(bytes);
            cfg.interceptor_state().store_put(Conflicted);
        }
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if cfg.load::<Conflicted>().is_none() {
            return Ok(());
        }
        cfg.interceptor_state().unset::<Conflicted>();
        self.injected.fetch_add(1, Ordering::SeqCst);
        let body = serde_json::json!({
            "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
            "message": "Transaction cancelled, please refer cancellation reasons for specific reasons [None, TransactionConflict]",
            "CancellationReasons": [
                {"Code": "None"},
                {"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"}
            ]
        });
        let mut response = Response::new(HttpStatus::try_from(400)?, SdkBody::from(serde_json::to_vec(&body)?));
        response
            .headers_mut()
            .insert("content-type", "application/x-amz-json-1.0");
        response
            .headers_mut()
            .insert("x-amzn-errortype", "TransactionCanceledException");
        *context.response_mut() = response;
        Ok(())
    }
}

fn placed(order: &str, cents: u64) -> EventEnvelope {
    let event = OrderEvent::OrderPlaced {
        order_id: OrderId::parse(order).expect("order id"),
        customer_id: CustomerId::parse("c-1").expect("customer"),
        lines: vec![OrderLine {
            sku: Sku::parse("A").expect("sku"),
            quantity: Quantity::new(1).expect("quantity"),
            unit_price_cents: Cents::new(cents).expect("price"),
        }],
        currency: Currency::default(),
    };
    let stream = StreamId::of("order", order).expect("stream");
    let noon = DateTime::parse_from_rfc3339("2026-03-02T12:00:00Z").expect("time");
    let event = encode_event::<Order>(&event).expect("encode");
    seal(
        &stream,
        0,
        None,
        vec![event],
        &Metadata::default(),
        noon.timestamp_millis(),
    )
    .remove(0)
}

async fn day(api: &DynamoApi) -> Value {
    let (status, body) = api
        .send(
            axum::http::Request::get("/reports/sales?from=2026-03-02&to=2026-03-02")
                .body(axum::body::Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["days"][0].clone()
}

/// One delivery (the projector's per-event path) meets three conflicts:
/// it is applied once and reports no failure; a redelivery is a duplicate.
/// A batch (the rebuild's path) meets two and applies every event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_conflicts_on_a_hot_day_are_retried_not_failed() {
    let inject = InjectConflicts::default();
    let config = tally_emulator::sdk_config().await;
    let client = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&config)
            .interceptor(inject.clone())
            .build(),
    );
    let api = DynamoApi::with_client(client.clone()).await;
    let sink = api.sales.sink(&client, Slot::Blue);

    let first = placed("o-hot-1", 100);
    inject.budget.store(3, Ordering::SeqCst);
    let delivered = deliver(&api.store, &sink, &first).await;
    assert_eq!(inject.injected.load(Ordering::SeqCst), 3, "three conflicts were met");
    assert!(
        matches!(delivered, Ok(Delivery::Applied { repaired: 0 })),
        "a conflict is retried, not reported: {delivered:?}"
    );
    let again = deliver(&api.store, &sink, &first).await;
    assert!(matches!(again, Ok(Delivery::Duplicate)), "{again:?}");
    let row = day(&api).await;
    assert_eq!(
        (row["orders"].as_i64(), row["revenue_cents"].as_i64()),
        (Some(1), Some(100))
    );

    let batch: Vec<EventEnvelope> = (2..=4).map(|n| placed(&format!("o-hot-{n}"), 10)).collect();
    inject.budget.store(2, Ordering::SeqCst);
    let applied = sink
        .apply_batch(&batch)
        .await
        .expect("a conflict is retried, not reported");
    assert_eq!(inject.injected.load(Ordering::SeqCst), 5);
    assert_eq!((applied.applied, applied.duplicates), (3, 0), "{applied:?}");
    let row = day(&api).await;
    assert_eq!(
        (row["orders"].as_i64(), row["revenue_cents"].as_i64()),
        (Some(4), Some(130)),
        "each event added exactly once"
    );
}
