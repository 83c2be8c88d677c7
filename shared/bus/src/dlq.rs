//! Dead letters: what `tally dlq list` and `tally dlq redrive` do.
//!
//! A projection's queue moves a message that failed `maxReceiveCount` times
//! to its dead-letter queue. Listing shows each dead message as the event it
//! carries (type, stream, version) with the error the projector recorded for
//! it; listing hides nothing and consumes nothing (every message received is
//! made visible again). Redrive moves messages back to the source queue by
//! receive → send → delete, which every SQS implementation supports (the
//! emulator has no `StartMessageMoveTask`). A crash between send and delete
//! leaves a copy in both queues: the projector's checkpoints make the second
//! delivery a skipped duplicate, so redrive is safe to repeat.

use std::collections::HashMap;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName, SendMessageBatchRequestEntry};
use tally_store_dynamodb::FailureLog;

use crate::detail::EventDetail;

/// SQS returns and takes at most 10 messages a call.
const SQS_MAX_BATCH: usize = 10;

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
    /// Some messages could not be sent back to the source queue (they stay in the DLQ).
    #[error("{0} messages could not be sent back; they remain in the dead-letter queue")]
    PartialRedrive(usize),
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

/// Receives every visible message of `queue` once (each stays invisible
/// for `hold_seconds`), calling `each` with it.
async fn receive_all(
    sqs: &Client,
    queue: &str,
    hold_seconds: i32,
    mut each: impl FnMut(aws_sdk_sqs::types::Message),
) -> Result<(), DlqError> {
    loop {
        let out = sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(SQS_MAX_BATCH as i32)
            .visibility_timeout(hold_seconds)
            .wait_time_seconds(0)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .map_err(|e| sqs_error("ReceiveMessage", queue, e))?;
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            return Ok(());
        }
        messages.into_iter().for_each(&mut each);
    }
}

/// Lists the dead messages of `dlq` without consuming them. With `failures`
/// and the projection's name, each comes with the error the projector recorded.
pub async fn list(sqs: &Client, dlq: &str, failures: Option<(&FailureLog, &str)>) -> Result<Vec<DeadLetter>, DlqError> {
    let mut received = Vec::new();
    receive_all(sqs, dlq, 30, |m| received.push(m)).await?;
    let mut letters = Vec::with_capacity(received.len());
    for message in &received {
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
        letters.push(letter);
    }
    // Make them visible again: listing must not hide them from a redrive.
    for message in received {
        if let Some(handle) = message.receipt_handle {
            sqs.change_message_visibility()
                .queue_url(dlq)
                .receipt_handle(handle)
                .visibility_timeout(0)
                .send()
                .await
                .map_err(|e| sqs_error("ChangeMessageVisibility", dlq, e))?;
        }
    }
    Ok(letters)
}

/// Moves every message of `dlq` back to `source`; returns how many moved.
pub async fn redrive(sqs: &Client, dlq: &str, source: &str) -> Result<u64, DlqError> {
    let mut moved = 0;
    let mut stuck = 0;
    loop {
        let out = sqs
            .receive_message()
            .queue_url(dlq)
            .max_number_of_messages(SQS_MAX_BATCH as i32)
            .visibility_timeout(60)
            .wait_time_seconds(0)
            .send()
            .await
            .map_err(|e| sqs_error("ReceiveMessage", dlq, e))?;
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        let by_id: HashMap<String, &aws_sdk_sqs::types::Message> =
            messages.iter().enumerate().map(|(i, m)| (i.to_string(), m)).collect();
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
        // Delete only what reached the source queue.
        let deletes = sent
            .successful
            .iter()
            .filter_map(|ok| by_id.get(&ok.id))
            .enumerate()
            .map(|(i, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle.clone().unwrap_or_default())
                    .build()
                    .map_err(|e| sqs_error("DeleteMessageBatch", dlq, e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        stuck += sent.failed.len();
        if deletes.is_empty() {
            break;
        }
        moved += deletes.len() as u64;
        sqs.delete_message_batch()
            .queue_url(dlq)
            .set_entries(Some(deletes))
            .send()
            .await
            .map_err(|e| sqs_error("DeleteMessageBatch", dlq, e))?;
    }
    if stuck > 0 {
        return Err(DlqError::PartialRedrive(stuck));
    }
    Ok(moved)
}
