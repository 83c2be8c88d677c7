//! The publisher handler on the real-shaped stream batch in
//! `events/stream-publisher/` (the file `cargo lambda invoke` and
//! `sam local invoke -e` use), against the template deployed into the
//! emulator: the INSERT is published once as a CloudEvent and routed to
//! both projection queues; the MODIFY and REMOVE are not events.

use aws_lambda_events::event::dynamodb::Event;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::Value;
use tally_bus::{Publisher, PublisherConfig};
use tally_emulator::deploy::deploy_template;

fn payload(name: &str) -> Event {
    tally_emulator::payloads::payload("stream-publisher", name)
}

/// INSERT → one CloudEvent on the bus, in each projection's queue; MODIFY
/// and REMOVE → nothing; no batch item failure.
#[tokio::test]
async fn the_insert_of_a_stream_batch_is_published_once_and_the_rest_is_not() {
    let deployment = tokio::task::spawn_blocking(deploy_template).await.expect("deploy");
    let sdk = tally_emulator::sdk_config().await;
    let config = PublisherConfig::from_settings(deployment.env("StreamPublisherFunction")).expect("settings");
    let publisher = Publisher::new(aws_sdk_eventbridge::Client::new(&sdk), config);
    let event = LambdaEvent::new(payload("stream-batch.json"), Context::default());
    assert_eq!(event.payload.records.len(), 3);

    let response = publisher.publish(event.payload).await;
    assert!(response.batch_item_failures.is_empty(), "{response:?}");

    let sqs = aws_sdk_sqs::Client::new(&sdk);
    for queue in ["OrderSummaryQueueUrl", "SalesByDayQueueUrl"] {
        let out = sqs
            .receive_message()
            .queue_url(deployment.output(queue))
            .max_number_of_messages(10)
            .send()
            .await
            .expect("receive");
        let messages = out.messages.unwrap_or_default();
        assert_eq!(messages.len(), 1, "{queue}: one event, once");
        let body: Value = serde_json::from_str(messages[0].body.as_deref().unwrap_or_default()).expect("json");
        assert_eq!(body["source"], "tally");
        assert_eq!(body["detail-type"], "OrderPlaced");
        let detail = &body["detail"];
        assert_eq!(detail["specversion"], "1.0");
        assert_eq!(detail["subject"], "order-ev-1");
        assert_eq!(detail["streamversion"], 1);
        assert_eq!(
            detail["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(detail["correlationid"], "walkthrough-1");
        assert_eq!(
            detail["data"]["data"]["customer_id"], "cust-7",
            "the stored envelope travels whole"
        );
    }
}

/// A record whose image is not an event item is reported as the batch's
/// failure (the mapping retries, then parks it on the on-failure queue).
#[tokio::test]
async fn an_unreadable_record_is_reported_with_its_sequence_number() {
    let deployment = tokio::task::spawn_blocking(deploy_template).await.expect("deploy");
    let sdk = tally_emulator::sdk_config().await;
    let config = PublisherConfig::from_settings(deployment.env("StreamPublisherFunction")).expect("settings");
    let publisher = Publisher::new(aws_sdk_eventbridge::Client::new(&sdk), config);
    let mut event = payload("stream-batch.json");
    let mut broken = event.records[0].clone();
    broken.change.new_image =
        serde_dynamo::Item::from(std::collections::HashMap::<String, serde_dynamo::AttributeValue>::new());
    broken.change.sequence_number = Some("100000000000000000009".into());
    event.records.push(broken);
    let response = publisher.publish(event).await;
    let failed: Vec<_> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    assert_eq!(failed, vec![Some("100000000000000000009".to_owned())]);
}
