//! stream-publisher λ: the events table's DynamoDB stream → the EventBridge
//! bus. The event source mapping (template.yaml) gives it batches of
//! records; it publishes each `INSERT` as a CloudEvent and reports the first
//! record it could not publish, so the stream redelivers from there
//! (bisecting, with finite retries, then the on-failure queue).
//!
//! Configuration, read once at cold start: the standard AWS chain and
//! `TALLY_EVENT_BUS` (the bus name).

use aws_lambda_events::event::dynamodb::Event;
use aws_lambda_events::event::streams::DynamoDbEventResponse;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use tally_bus::{Publisher, PublisherConfig, telemetry};
use tally_store_dynamodb::Env;

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init_logging();
    let metrics = telemetry::init_metrics("stream-publisher")?;
    let sdk = aws_config::load_from_env().await;
    let publisher = Publisher::new(
        aws_sdk_eventbridge::Client::new(&sdk),
        PublisherConfig::from_settings(&Env)?,
    );
    run(service_fn(|event: LambdaEvent<Event>| {
        let publisher = &publisher;
        async move {
            let response: DynamoDbEventResponse = publisher.publish(event.payload).await;
            telemetry::flush(metrics);
            Ok::<_, Error>(response)
        }
    }))
    .await
}
