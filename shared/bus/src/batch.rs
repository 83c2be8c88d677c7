//! Partial batch failures for SQS: a generic wrapper that turns a
//! one-message function into a batch handler. Every message runs in its own
//! span; the response names exactly the messages that failed, so SQS
//! redelivers those alone and one poison message never holds back the
//! others.
//!
//! Messages are grouped by a key (for the projector: the event's stream).
//! Groups run concurrently, up to `concurrency` at a time; the messages of
//! one group run one after another in the order the key gives (the stream
//! version), so a batch holding v1 and v2 of one stream applies them in
//! order instead of racing them into a gap repair.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::future::Future;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use futures_util::StreamExt;
use tracing::Instrument;

/// A message's id and how its handling went.
type Outcome<E> = (Option<String>, Result<(), E>);

/// What `prepare` makes of a message: its group, its order within the
/// group, and whatever it parsed on the way (handed to `handle`, so a body
/// is read once).
pub struct Grouped<T> {
    /// Messages of one group run one after another.
    pub group: String,
    /// The order within the group.
    pub order: u64,
    /// Passed to `handle` with the message.
    pub item: T,
}

/// Runs `handle` on every message of `event`, grouped as `prepare` says,
/// and reports the failures.
pub async fn sqs_batch<'a, T, P, F, Fut, E>(
    event: &'a SqsEvent,
    concurrency: usize,
    prepare: P,
    handle: F,
) -> SqsBatchResponse
where
    P: Fn(&SqsMessage) -> Grouped<T>,
    F: Fn(&'a SqsMessage, T) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    let mut groups: BTreeMap<String, Vec<(u64, &'a SqsMessage, T)>> = BTreeMap::new();
    for message in &event.records {
        let Grouped { group, order, item } = prepare(message);
        groups.entry(group).or_default().push((order, message, item));
    }
    let handle = &handle;
    let outcomes: Vec<Vec<Outcome<E>>> = futures_util::stream::iter(groups.into_values())
        .map(|mut group| async move {
            group.sort_by_key(|(order, _, _)| *order);
            let mut outcomes = Vec::with_capacity(group.len());
            for (_, message, item) in group {
                let span = tracing::info_span!("message", message_id = message.message_id.as_deref().unwrap_or(""));
                outcomes.push((message.message_id.clone(), handle(message, item).instrument(span).await));
            }
            outcomes
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut response = SqsBatchResponse::default();
    for (message_id, outcome) in outcomes.into_iter().flatten() {
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
