//! Partial batch failures for SQS: a generic wrapper that turns a
//! one-message function into a batch handler. Every message runs (up to
//! `concurrency` at a time) in its own span; the response names exactly the
//! messages that failed, so SQS redelivers those alone and one poison
//! message never holds back the others.

use std::fmt::Display;
use std::future::Future;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use futures_util::StreamExt;
use tracing::Instrument;

/// Runs `handle` on every message of `event` and reports the failures.
pub async fn sqs_batch<'a, F, Fut, E>(event: &'a SqsEvent, concurrency: usize, handle: F) -> SqsBatchResponse
where
    F: Fn(&'a SqsMessage) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    let outcomes: Vec<(Option<String>, Result<(), E>)> = futures_util::stream::iter(&event.records)
        .map(|message| {
            let span = tracing::info_span!("message", message_id = message.message_id.as_deref().unwrap_or(""));
            let outcome = handle(message).instrument(span);
            async move { (message.message_id.clone(), outcome.await) }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut response = SqsBatchResponse::default();
    for (message_id, outcome) in outcomes {
        if let Err(error) = outcome {
            tracing::warn!(message_id = message_id.as_deref().unwrap_or(""), %error, "message failed; SQS will redeliver it");
            // A message without an id cannot be named: an empty identifier
            // makes Lambda fail the whole batch, which is safe (redelivery).
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = message_id.unwrap_or_default();
            response.batch_item_failures.push(failure);
        }
    }
    response
}
