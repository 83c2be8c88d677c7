//! Dead letters: what `tally dlq list` and `tally dlq redrive` do.
//!
//! A projection's queue moves a message that failed `maxReceiveCount` times
//! to its dead-letter queue. Listing shows dead messages as the events they
//! carry (type, stream, version) with the error the projector recorded for
//! each; it consumes nothing (every message received is made visible again)
//! and it ends: at most a count of messages within a time budget, saying how
//! many the queue holds (`ApproximateNumberOfMessages`) when it shows fewer.
//! Redrive moves messages back to the source queue by receive → send →
//! delete, which every SQS implementation supports (the emulator has no
//! `StartMessageMoveTask`); it long-polls, so one empty answer from one SQS
//! server does not end it early, and counts a message as moved only once its
//! delete succeeded. A crash (or a failed delete) between send and delete
//! leaves a copy in both queues: the projector's checkpoints make the second
//! delivery a skipped duplicate, so redrive is safe to repeat.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    BatchResultErrorEntry, ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
    MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};
use tally_store_dynamodb::FailureLog;

use crate::detail::EventDetail;

/// SQS returns and takes at most 10 messages a call.
const SQS_MAX_BATCH: usize = 10;

/// Most dead messages a listing shows unless told otherwise.
pub const DEFAULT_LIST_MAX: usize = 100;
/// How long a listing keeps receiving unless told otherwise.
pub const DEFAULT_LIST_BUDGET: Duration = Duration::from_secs(10);
/// How long a redrive's receive waits for a message (SQS long polling, at
/// most 20 s) before it concludes the queue is empty.
pub const DEFAULT_REDRIVE_WAIT: Duration = Duration::from_secs(5);

/// A DLQ operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// SQS refused a request.
    #[error("{operation} on {queue}: {message}")]
    Sqs {
        /// The operation.
        operation: &'static str,
        /// The queue URL.
        queue: String,
        /// What SQS said.
        message: String,
    },
    /// Some messages could not be sent back to the source queue (they stay
    /// in the DLQ), or were sent but not deleted from it (they are in both).
    #[error(
        "{} message(s) could not be sent back (they remain in the dead-letter queue); \
         {} were sent back but not deleted (they are in both queues)",
        .0.unsent.len(),
        .0.undeleted.len()
    )]
    PartialRedrive(Box<RedriveReport>),
}

fn sqs_error<E>(operation: &'static str, queue: &str, error: E) -> DlqError
where
    E: std::error::Error + Send + Sync + 'static,
{
    DlqError::Sqs {
        operation,
        queue: queue.to_owned(),
        message: aws_sdk_sqs::error::DisplayErrorContext(error).to_string(),
    }
}

/// One dead message, as an operator reads it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeadLetter {
    /// The SQS message id.
    pub message_id: String,
    /// The event type (`?` if the body is not one of our events).
    pub event_type: String,
    /// The stream.
    pub stream: String,
    /// The version.
    pub version: u64,
    /// Why the projector failed, as it recorded it (if it could).
    pub error: Option<String>,
    /// How many times the source queue delivered it.
    pub receive_count: u64,
    /// The message body (the EventBridge envelope), as SQS holds it.
    pub body: String,
}

/// How far a listing may go.
#[derive(Debug, Clone, Copy)]
pub struct ListLimits {
    /// Most messages shown.
    pub max: usize,
    /// How long to keep receiving. Each message received stays invisible
    /// to others meanwhile (then it is made visible again), so this is also
    /// how long a listing can delay a redrive or a second listing.
    pub budget: Duration,
}

impl Default for ListLimits {
    fn default() -> Self {
        Self {
            max: DEFAULT_LIST_MAX,
            budget: DEFAULT_LIST_BUDGET,
        }
    }
}

/// What a listing saw.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Listing {
    /// The dead messages shown, each once.
    pub letters: Vec<DeadLetter>,
    /// `ApproximateNumberOfMessages` of the DLQ before the listing (visible
    /// messages; SQS's count is approximate).
    pub approximate_total: Option<u64>,
    /// Whether the listing stopped at its count or its time budget rather
    /// than at an empty receive: more messages may exist.
    pub truncated: bool,
}

/// The DLQ's `ApproximateNumberOfMessages`, if SQS says.
async fn approximate_count(sqs: &Client, queue: &str) -> Result<Option<u64>, DlqError> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(queue)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .map_err(|e| sqs_error("GetQueueAttributes", queue, e))?;
    Ok(out
        .attributes
        .as_ref()
        .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages))
        .and_then(|n| n.parse().ok()))
}

/// Receives up to `limits.max` distinct messages of `queue` within
/// `limits.budget`, each held invisible for longer than the budget (so none
/// comes back during the listing). Returns them, whether it stopped early,
/// and the error that stopped it, if any: the caller must release what was
/// received either way.
async fn receive_some(sqs: &Client, queue: &str, limits: ListLimits) -> (Vec<Message>, bool, Option<DlqError>) {
    let started = Instant::now();
    let hold = i32::try_from(limits.budget.as_secs() + 30).unwrap_or(i32::MAX);
    let mut seen = HashSet::new();
    let mut received = Vec::new();
    loop {
        if received.len() >= limits.max || started.elapsed() >= limits.budget {
            return (received, true, None);
        }
        let want = (limits.max - received.len()).min(SQS_MAX_BATCH);
        let out = sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(want as i32)
            .visibility_timeout(hold)
            .wait_time_seconds(0)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await;
        let messages = match out {
            Ok(out) => out.messages.unwrap_or_default(),
            Err(e) => return (received, true, Some(sqs_error("ReceiveMessage", queue, e))),
        };
        if messages.is_empty() {
            return (received, false, None);
        }
        for message in messages {
            let id = message.message_id.clone().unwrap_or_default();
            if seen.insert(id) && received.len() < limits.max {
                received.push(message);
            }
        }
    }
}

/// Makes `messages` visible again, ten per request.
async fn release(sqs: &Client, queue: &str, messages: &[Message]) -> Result<(), DlqError> {
    for batch in messages.chunks(SQS_MAX_BATCH) {
        let entries = batch
            .iter()
            .enumerate()
            .filter_map(|(i, m)| Some((i, m.receipt_handle.clone()?)))
            .map(|(i, handle)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(handle)
                    .visibility_timeout(0)
                    .build()
                    .map_err(|e| sqs_error("ChangeMessageVisibilityBatch", queue, e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if entries.is_empty() {
            continue;
        }
        let out = sqs
            .change_message_visibility_batch()
            .queue_url(queue)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| sqs_error("ChangeMessageVisibilityBatch", queue, e))?;
        if let Some(failed) = out.failed.first() {
            return Err(DlqError::Sqs {
                operation: "ChangeMessageVisibilityBatch",
                queue: queue.to_owned(),
                message: format!(
                    "{} message(s) stay hidden until their visibility timeout: {} {}",
                    out.failed.len(),
                    failed.code,
                    failed.message.as_deref().unwrap_or_default()
                ),
            });
        }
    }
    Ok(())
}

/// An operator's view of one received message.
async fn dead_letter(message: &Message, failures: Option<(&FailureLog, &str)>) -> DeadLetter {
    let body = message.body.as_deref().unwrap_or_default();
    let receive_count = message
        .attributes
        .as_ref()
        .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let mut letter = DeadLetter {
        message_id: message.message_id.clone().unwrap_or_default(),
        event_type: "?".into(),
        stream: "?".into(),
        version: 0,
        error: None,
        receive_count,
        body: body.to_owned(),
    };
    match EventDetail::from_message_body(body) {
        Ok(parsed) => {
            let detail = parsed.detail;
            letter.event_type = detail.event_type;
            letter.stream = detail.subject.to_string();
            letter.version = detail.streamversion;
            if let Some((log, projection)) = failures {
                letter.error = log
                    .lookup(projection, &detail.subject, detail.streamversion)
                    .await
                    .ok()
                    .flatten()
                    .map(|f| f.error);
            }
        }
        Err(error) => letter.error = Some(error.to_string()),
    }
    letter
}

/// Lists dead messages of `dlq` without consuming them, within `limits`.
/// With `failures` and the projection's name, each comes with the error the
/// projector recorded.
pub async fn list_within(
    sqs: &Client,
    dlq: &str,
    failures: Option<(&FailureLog, &str)>,
    limits: ListLimits,
) -> Result<Listing, DlqError> {
    // Counted before receiving: received messages no longer count as visible.
    let approximate_total = approximate_count(sqs, dlq).await?;
    let (received, truncated, stopped) = receive_some(sqs, dlq, limits).await;
    let mut letters = Vec::with_capacity(received.len());
    if stopped.is_none() {
        for message in &received {
            letters.push(dead_letter(message, failures).await);
        }
    }
    // Make them visible again, whatever happened: listing must not hide
    // them from a redrive.
    let released = release(sqs, dlq, &received).await;
    if let Some(error) = stopped {
        return Err(error);
    }
    released?;
    Ok(Listing {
        letters,
        approximate_total,
        truncated,
    })
}

/// Lists up to [`DEFAULT_LIST_MAX`] dead messages of `dlq` within
/// [`DEFAULT_LIST_BUDGET`], without consuming them (see [`list_within`]).
pub async fn list(sqs: &Client, dlq: &str, failures: Option<(&FailureLog, &str)>) -> Result<Vec<DeadLetter>, DlqError> {
    Ok(list_within(sqs, dlq, failures, ListLimits::default()).await?.letters)
}

/// A message a redrive could not send back or could not delete.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RedriveFailure {
    /// The SQS message id (in the DLQ).
    pub message_id: String,
    /// SQS's error code.
    pub code: String,
    /// SQS's message.
    pub message: String,
}

/// What a redrive did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RedriveReport {
    /// Sent back to the source queue and deleted from the DLQ.
    pub moved: u64,
    /// Not sent back: still in the DLQ (visible again after the receive's
    /// visibility timeout).
    pub unsent: Vec<RedriveFailure>,
    /// Sent back but not deleted from the DLQ: in both queues (the
    /// projector skips the duplicate).
    pub undeleted: Vec<RedriveFailure>,
}

impl RedriveReport {
    /// Whether every message received was moved.
    pub fn is_complete(&self) -> bool {
        self.unsent.is_empty() && self.undeleted.is_empty()
    }
}

fn failures_of(entries: &[BatchResultErrorEntry], by_id: &HashMap<String, &Message>) -> Vec<RedriveFailure> {
    entries
        .iter()
        .map(|failed| RedriveFailure {
            message_id: by_id
                .get(&failed.id)
                .and_then(|m| m.message_id.clone())
                .unwrap_or_else(|| failed.id.clone()),
            code: failed.code.clone(),
            message: failed.message.clone().unwrap_or_default(),
        })
        .collect()
}

/// Moves the messages of `dlq` back to `source` until a receive that waits
/// `wait` (long polling, at most 20 s) finds none. Every failed send or
/// delete is in the report, never counted as moved.
pub async fn redrive_reported(
    sqs: &Client,
    dlq: &str,
    source: &str,
    wait: Duration,
) -> Result<RedriveReport, DlqError> {
    let wait_seconds = i32::try_from(wait.as_secs().clamp(1, 20)).unwrap_or(20);
    let mut report = RedriveReport::default();
    loop {
        let out = sqs
            .receive_message()
            .queue_url(dlq)
            .max_number_of_messages(SQS_MAX_BATCH as i32)
            .visibility_timeout(60)
            .wait_time_seconds(wait_seconds)
            .send()
            .await
            .map_err(|e| sqs_error("ReceiveMessage", dlq, e))?;
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            return Ok(report);
        }
        let by_id: HashMap<String, &Message> = messages.iter().enumerate().map(|(i, m)| (i.to_string(), m)).collect();
        let entries = by_id
            .iter()
            .map(|(id, m)| {
                SendMessageBatchRequestEntry::builder()
                    .id(id)
                    .message_body(m.body.clone().unwrap_or_default())
                    .set_message_attributes(m.message_attributes.clone())
                    .build()
                    .map_err(|e| sqs_error("SendMessageBatch", source, e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let sent = sqs
            .send_message_batch()
            .queue_url(source)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| sqs_error("SendMessageBatch", source, e))?;
        report.unsent.extend(failures_of(&sent.failed, &by_id));
        // Delete only what reached the source queue, under the same ids.
        let deletes = sent
            .successful
            .iter()
            .filter_map(|ok| Some((ok.id.clone(), by_id.get(&ok.id)?.receipt_handle.clone()?)))
            .map(|(id, handle)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(id)
                    .receipt_handle(handle)
                    .build()
                    .map_err(|e| sqs_error("DeleteMessageBatch", dlq, e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if deletes.is_empty() {
            // Nothing of this batch reached the source queue: trying the
            // same messages again at once would fail the same way.
            return Ok(report);
        }
        let deleted = sqs
            .delete_message_batch()
            .queue_url(dlq)
            .set_entries(Some(deletes))
            .send()
            .await
            .map_err(|e| sqs_error("DeleteMessageBatch", dlq, e))?;
        report.moved += deleted.successful.len() as u64;
        report.undeleted.extend(failures_of(&deleted.failed, &by_id));
    }
}

/// Moves every message of `dlq` back to `source` (long-polling
/// [`DEFAULT_REDRIVE_WAIT`]); returns how many moved, or an error that
/// carries the report when any message failed to move.
pub async fn redrive(sqs: &Client, dlq: &str, source: &str) -> Result<u64, DlqError> {
    let report = redrive_reported(sqs, dlq, source, DEFAULT_REDRIVE_WAIT).await?;
    if report.is_complete() {
        Ok(report.moved)
    } else {
        Err(DlqError::PartialRedrive(Box::new(report)))
    }
}
