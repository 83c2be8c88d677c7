//! projector λ: one projection's SQS queue → its DynamoDB read table. The
//! same binary serves every projection; `TALLY_PROJECTION` says which.
//! Duplicates, reordering and gaps are the core runtime's business; this
//! main only wires it to DynamoDB and reports per-message failures.
//!
//! Configuration, read once at cold start: the standard AWS chain,
//! `TALLY_PROJECTION`, `TALLY_EVENTS_TABLE` (gap repair, events sent by
//! reference), `TALLY_CHECKPOINTS_TABLE`, and the projection's table
//! (`TALLY_ORDER_SUMMARY_TABLE` or `TALLY_SALES_TABLE`).

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use tally_bus::{Projector, telemetry};
use tally_store_dynamodb::{Env, client_from_env};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init_logging();
    let metrics = telemetry::init_metrics("projector")?;
    let projector = Projector::dynamodb(client_from_env().await, &Env)?;
    run(service_fn(|event: LambdaEvent<SqsEvent>| {
        let projector = &projector;
        async move {
            let response: SqsBatchResponse = projector.project(&event.payload).await;
            telemetry::flush(metrics);
            Ok::<_, Error>(response)
        }
    }))
    .await
}
