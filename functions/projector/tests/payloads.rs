//! The projector handler on the real-shaped SQS batches in
//! `events/projector/` (bodies are EventBridge envelopes of our
//! CloudEvents), against the template deployed into the emulator, wired
//! from the environment the template gives the order-summary projector.

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{Context, LambdaEvent};
use tally_bus::Projector;
use tally_domain::OrderId;
use tally_domain::views::ReadModels;
use tally_emulator::deploy::{Deployment, deploy_template};
use tally_store_dynamodb::{DynamoReadModels, ReadTables};

fn payload(name: &str) -> SqsEvent {
    tally_emulator::payloads::payload("projector", name)
}

async fn setup() -> (Deployment, Projector, DynamoReadModels) {
    let deployment = tokio::task::spawn_blocking(deploy_template).await.expect("deploy");
    let client = aws_sdk_dynamodb::Client::new(&tally_emulator::sdk_config().await);
    let projector =
        Projector::dynamodb(client.clone(), deployment.env("OrderSummaryProjectorFunction")).expect("settings");
    let reads = DynamoReadModels::new(
        client,
        ReadTables::from_settings(deployment.env("QueryApiFunction")).expect("tables"),
    );
    (deployment, projector, reads)
}

/// An OrderPlaced message → the order's summary row; delivered twice → still one.
#[tokio::test]
async fn an_order_placed_message_becomes_the_orders_summary_once() {
    let (_deployment, projector, reads) = setup().await;
    let event = LambdaEvent::new(payload("sqs-batch.json"), Context::default());
    let response = projector.project(&event.payload).await;
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    let again = projector.project(&event.payload).await;
    assert!(again.batch_item_failures.is_empty(), "a duplicate is not a failure");
    let row = reads
        .order_summary(&OrderId::parse("ev-1").expect("id"))
        .await
        .expect("read")
        .expect("the row");
    assert_eq!(
        (row.total_cents, row.version, row.customer_id.as_str()),
        (2500, 1, "cust-7")
    );
}

/// A batch with a good message, an event (of another order) whose data does
/// not decode and a body that is no event → exactly the two bad messages
/// are reported.
#[tokio::test]
async fn only_the_poison_messages_of_a_batch_are_reported() {
    let (_deployment, projector, reads) = setup().await;
    let response = projector.project(&payload("poison-batch.json")).await;
    let mut failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    failed.sort_unstable();
    assert_eq!(
        failed,
        vec![
            "0a1b2c3d-0000-4000-8000-000000000002",
            "0a1b2c3d-0000-4000-8000-000000000003"
        ]
    );
    let row = reads
        .order_summary(&OrderId::parse("ev-1").expect("id"))
        .await
        .expect("read");
    assert!(row.is_some(), "the good message of the batch was applied");
}
