//! The test driver: what Lambda's event source mappings do, done by the
//! test process, because the emulator runs no Lambdas.
//!
//! - [`StreamPump`] reads the events table's DynamoDB stream shard by shard
//!   (`GetShardIterator` TRIM_HORIZON, `GetRecords`), hands batches in the
//!   Lambda payload shape to a handler (the publisher's), and honours its
//!   answer as the mapping does: with `ReportBatchItemFailures`, the records
//!   before the reported sequence number are done and the batch is retried
//!   from it; a function error retries the whole batch, halved each time
//!   when `BisectBatchOnFunctionError` is set; after
//!   `MaximumRetryAttempts` the failing record is described on the
//!   on-failure queue and skipped.
//! - [`QueuePump`] receives from an SQS queue (up to the batch size),
//!   hands the messages to a handler (the projector's) and deletes only
//!   the ones it did not report as failed. Failed messages are made visible
//!   again at once (a deployed mapping waits out the visibility timeout), so
//!   SQS itself counts the receives and moves a poison message to the DLQ
//!   after `maxReceiveCount`.
//!
//! The settings come from the mapping as template.yaml declares it (see
//! [`crate::deploy`]). Everything goes through the real SDK, so the same
//! driver runs against LocalStack when `AWS_ENDPOINT_URL` points there.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt::Display;
use std::future::Future;

use aws_config::SdkConfig;
use aws_lambda_events::event::dynamodb::{Event as StreamEvent, EventRecord, StreamRecord};
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use aws_lambda_events::event::streams::DynamoDbEventResponse;
use aws_sdk_dynamodbstreams::types::{OperationType, Record, ShardIteratorType};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName};
use serde_json::json;

use crate::deploy::EventSourceMapping;

/// A driver call failed (the emulator refused a request).
#[derive(Debug, thiserror::Error)]
#[error("driver: {0}")]
pub struct DriverError(String);

fn driver_error(context: &str, error: impl Display) -> DriverError {
    DriverError(format!("{context}: {error}"))
}

/// A queue pump gives up after this many invocations in one run (a failing
/// message without a redrive policy would otherwise come back forever).
const MAX_INVOCATIONS: u64 = 10_000;

/// What one pump run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PumpReport {
    /// Handler invocations.
    pub invocations: u64,
    /// Records or messages the handler finished with (acknowledged).
    pub done: u64,
    /// Records or messages reported failed (to be retried).
    pub failed: u64,
    /// Stream records given up on and described on the on-failure queue.
    pub discarded: u64,
}

impl std::ops::AddAssign for PumpReport {
    fn add_assign(&mut self, other: Self) {
        self.invocations += other.invocations;
        self.done += other.done;
        self.failed += other.failed;
        self.discarded += other.discarded;
    }
}

#[derive(Default)]
struct Shard {
    iterator: Option<String>,
    started: bool,
    closed: bool,
    buffer: VecDeque<EventRecord>,
    /// Consecutive failed attempts of the record at the head of `buffer`.
    head_failures: u32,
}

/// Drives a DynamoDB stream into a handler, as a stream event source mapping.
pub struct StreamPump {
    streams: aws_sdk_dynamodbstreams::Client,
    sqs: aws_sdk_sqs::Client,
    mapping: EventSourceMapping,
    region: String,
    shards: BTreeMap<String, Shard>,
}

/// A stream record in the shape Lambda delivers it.
fn lambda_record(record: Record, region: &str, stream_arn: &str) -> EventRecord {
    let change = record
        .dynamodb
        .unwrap_or_else(|| aws_sdk_dynamodbstreams::types::StreamRecord::builder().build());
    let mut stream_record = StreamRecord::default();
    if let Some(time) = change.approximate_creation_date_time {
        stream_record.approximate_creation_date_time =
            chrono::DateTime::from_timestamp(time.secs(), time.subsec_nanos()).unwrap_or_default();
    }
    stream_record.keys = serde_dynamo::Item::from(change.keys.unwrap_or_default());
    stream_record.new_image = serde_dynamo::Item::from(change.new_image.unwrap_or_default());
    stream_record.old_image = serde_dynamo::Item::from(change.old_image.unwrap_or_default());
    stream_record.sequence_number = change.sequence_number;
    stream_record.size_bytes = change.size_bytes.unwrap_or_default();
    let mut event = EventRecord::default();
    event.aws_region = region.to_owned();
    event.change = stream_record;
    event.event_id = record.event_id.unwrap_or_default();
    event.event_name = match record.event_name {
        Some(OperationType::Insert) => "INSERT",
        Some(OperationType::Modify) => "MODIFY",
        Some(OperationType::Remove) => "REMOVE",
        _ => "UNKNOWN",
    }
    .to_owned();
    event.event_source = Some("aws:dynamodb".to_owned());
    event.event_version = record.event_version;
    event.event_source_arn = Some(stream_arn.to_owned());
    event
}

impl StreamPump {
    /// A pump for the stream mapping `mapping`.
    pub fn new(sdk: &SdkConfig, mapping: EventSourceMapping) -> Self {
        Self {
            streams: aws_sdk_dynamodbstreams::Client::new(sdk),
            sqs: aws_sdk_sqs::Client::new(sdk),
            region: sdk.region().map(ToString::to_string).unwrap_or_default(),
            mapping,
            shards: BTreeMap::new(),
        }
    }

    async fn discover_shards(&mut self) -> Result<(), DriverError> {
        let mut start = None;
        loop {
            let described = self
                .streams
                .describe_stream()
                .stream_arn(&self.mapping.source_arn)
                .set_exclusive_start_shard_id(start.take())
                .send()
                .await
                .map_err(|e| driver_error("DescribeStream", aws_sdk_dynamodbstreams::error::DisplayErrorContext(e)))?;
            let Some(description) = described.stream_description else {
                return Ok(());
            };
            for shard in description.shards.unwrap_or_default() {
                if let Some(id) = shard.shard_id {
                    self.shards.entry(id).or_default();
                }
            }
            match description.last_evaluated_shard_id {
                Some(last) => start = Some(last),
                None => return Ok(()),
            }
        }
    }

    /// Reads more records into the shard's buffer, up to the batch size.
    async fn refill(&mut self, shard_id: &str) -> Result<(), DriverError> {
        let batch_size = self.mapping.batch_size.max(1);
        let shard = self
            .shards
            .get_mut(shard_id)
            .ok_or_else(|| DriverError("unknown shard".into()))?;
        if shard.closed || shard.buffer.len() >= batch_size {
            return Ok(());
        }
        if !shard.started {
            let iterator = self
                .streams
                .get_shard_iterator()
                .stream_arn(&self.mapping.source_arn)
                .shard_id(shard_id)
                .shard_iterator_type(ShardIteratorType::TrimHorizon)
                .send()
                .await
                .map_err(|e| {
                    driver_error(
                        "GetShardIterator",
                        aws_sdk_dynamodbstreams::error::DisplayErrorContext(e),
                    )
                })?;
            shard.iterator = iterator.shard_iterator;
            shard.started = true;
        }
        while shard.buffer.len() < batch_size {
            let Some(iterator) = shard.iterator.clone() else {
                shard.closed = true;
                return Ok(());
            };
            let out = self
                .streams
                .get_records()
                .shard_iterator(iterator)
                .limit(i32::try_from(batch_size - shard.buffer.len()).unwrap_or(1000).min(1000))
                .send()
                .await
                .map_err(|e| driver_error("GetRecords", aws_sdk_dynamodbstreams::error::DisplayErrorContext(e)))?;
            let records = out.records.unwrap_or_default();
            shard.iterator = out.next_shard_iterator;
            if records.is_empty() {
                return Ok(());
            }
            for record in records {
                shard
                    .buffer
                    .push_back(lambda_record(record, &self.region, &self.mapping.source_arn));
            }
        }
        Ok(())
    }

    /// Describes a record given up on, as Lambda's on-failure destination does.
    async fn send_to_on_failure(&self, shard_id: &str, record: &EventRecord, error: &str) -> Result<(), DriverError> {
        let Some(queue) = &self.mapping.on_failure_queue_url else {
            return Ok(());
        };
        let sequence = record.change.sequence_number.clone().unwrap_or_default();
        let body = json!({
            "version": "1.0",
            "timestamp": chrono::Utc::now().to_rfc3339(),
            "requestContext": { "condition": "RetryAttemptsExhausted", "functionArn": self.mapping.function },
            "responseContext": { "functionError": error },
            "DDBStreamBatchInfo": {
                "shardId": shard_id,
                "startSequenceNumber": sequence,
                "endSequenceNumber": sequence,
                "batchSize": 1,
                "streamArn": self.mapping.source_arn,
            }
        });
        self.sqs
            .send_message()
            .queue_url(queue)
            .message_body(body.to_string())
            .send()
            .await
            .map_err(|e| driver_error("SendMessage (on-failure)", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        Ok(())
    }

    /// Feeds every available record to `handler` until the stream has no
    /// more, honouring its batch item failures.
    pub async fn pump<F, Fut, E>(&mut self, handler: F) -> Result<PumpReport, DriverError>
    where
        F: Fn(StreamEvent) -> Fut,
        Fut: Future<Output = Result<DynamoDbEventResponse, E>>,
        E: Display,
    {
        self.discover_shards().await?;
        let mut report = PumpReport::default();
        let shard_ids: Vec<String> = self.shards.keys().cloned().collect();
        for shard_id in shard_ids {
            loop {
                self.refill(&shard_id).await?;
                let shard = self
                    .shards
                    .get_mut(&shard_id)
                    .ok_or_else(|| DriverError("unknown shard".into()))?;
                if shard.buffer.is_empty() {
                    break;
                }
                let mut size = shard.buffer.len().min(self.mapping.batch_size.max(1));
                if self.mapping.bisect_on_error && shard.head_failures > 0 {
                    size = (size >> shard.head_failures.min(16)).max(1);
                }
                let records: Vec<EventRecord> = shard.buffer.iter().take(size).cloned().collect();
                let mut event = StreamEvent::default();
                event.records = records.clone();
                report.invocations += 1;
                let (done, error) = match handler(event).await {
                    Ok(response) => match response.batch_item_failures.first() {
                        None => (size, None),
                        Some(failure) => {
                            // An identifier that names no record of the batch
                            // fails the whole batch, as Lambda treats it.
                            let position = records
                                .iter()
                                .position(|r| r.change.sequence_number == failure.item_identifier)
                                .unwrap_or(0);
                            (position, Some("batch item failure".to_owned()))
                        }
                    },
                    Err(error) => (0, Some(error.to_string())),
                };
                let shard = self
                    .shards
                    .get_mut(&shard_id)
                    .ok_or_else(|| DriverError("unknown shard".into()))?;
                shard.buffer.drain(..done);
                report.done += done as u64;
                let Some(error) = error else {
                    shard.head_failures = 0;
                    continue;
                };
                report.failed += 1;
                shard.head_failures = if done > 0 { 1 } else { shard.head_failures + 1 };
                let retries = u32::try_from(self.mapping.maximum_retry_attempts.unwrap_or(-1)).ok();
                if retries.is_some_and(|max| shard.head_failures > max) {
                    let Some(record) = shard.buffer.pop_front() else {
                        continue;
                    };
                    shard.head_failures = 0;
                    report.discarded += 1;
                    self.send_to_on_failure(&shard_id, &record, &error).await?;
                }
            }
        }
        Ok(report)
    }
}

/// Drives an SQS queue into a handler, as an SQS event source mapping.
pub struct QueuePump {
    sqs: aws_sdk_sqs::Client,
    mapping: EventSourceMapping,
    region: String,
}

impl QueuePump {
    /// A pump for the queue mapping `mapping`.
    pub fn new(sdk: &SdkConfig, mapping: EventSourceMapping) -> Self {
        Self {
            sqs: aws_sdk_sqs::Client::new(sdk),
            region: sdk.region().map(ToString::to_string).unwrap_or_default(),
            mapping,
        }
    }

    /// The mapping this pump stands for.
    pub fn mapping(&self) -> &EventSourceMapping {
        &self.mapping
    }

    fn queue_url(&self) -> Result<&str, DriverError> {
        self.mapping
            .queue_url
            .as_deref()
            .ok_or_else(|| DriverError(format!("mapping of {} has no queue URL", self.mapping.function)))
    }

    /// Receives up to a batch (SQS returns at most 10 a call).
    async fn receive_batch(&self) -> Result<Vec<SqsMessage>, DriverError> {
        let queue = self.queue_url()?;
        let batch_size = self.mapping.batch_size.max(1);
        let mut batch = Vec::new();
        while batch.len() < batch_size {
            let want = (batch_size - batch.len()).min(10);
            let out = self
                .sqs
                .receive_message()
                .queue_url(queue)
                .max_number_of_messages(i32::try_from(want).unwrap_or(10))
                .wait_time_seconds(0)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send()
                .await
                .map_err(|e| driver_error("ReceiveMessage", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
            let messages = out.messages.unwrap_or_default();
            if messages.is_empty() {
                break;
            }
            for message in messages {
                let mut lambda = SqsMessage::default();
                lambda.message_id = message.message_id;
                lambda.receipt_handle = message.receipt_handle;
                lambda.body = message.body;
                lambda.md5_of_body = message.md5_of_body;
                lambda.attributes = message
                    .attributes
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k.as_str().to_owned(), v))
                    .collect();
                lambda.event_source = Some("aws:sqs".to_owned());
                lambda.event_source_arn = Some(self.mapping.source_arn.clone());
                lambda.aws_region = Some(self.region.clone());
                batch.push(lambda);
            }
        }
        Ok(batch)
    }

    /// Feeds the queue to `handler` until a receive comes back empty.
    pub async fn pump<F, Fut, E>(&self, handler: F) -> Result<PumpReport, DriverError>
    where
        F: Fn(SqsEvent) -> Fut,
        Fut: Future<Output = Result<SqsBatchResponse, E>>,
        E: Display,
    {
        let queue = self.queue_url()?.to_owned();
        let mut report = PumpReport::default();
        loop {
            if report.invocations >= MAX_INVOCATIONS {
                return Err(DriverError(format!(
                    "{queue} still has messages after {MAX_INVOCATIONS} invocations: is its redrive policy missing?"
                )));
            }
            let batch = self.receive_batch().await?;
            if batch.is_empty() {
                return Ok(report);
            }
            let mut event = SqsEvent::default();
            event.records = batch.clone();
            report.invocations += 1;
            let failed: HashSet<String> = match handler(event).await {
                Ok(response) if self.mapping.report_batch_item_failures => response
                    .batch_item_failures
                    .into_iter()
                    .map(|f| f.item_identifier)
                    .collect(),
                // Without ReportBatchItemFailures any failure fails the batch.
                Ok(response) if response.batch_item_failures.is_empty() => HashSet::new(),
                _ => batch.iter().filter_map(|m| m.message_id.clone()).collect(),
            };
            let (failures, successes): (Vec<&SqsMessage>, Vec<&SqsMessage>) = batch
                .iter()
                .partition(|m| m.message_id.as_ref().is_some_and(|id| failed.contains(id)));
            report.done += successes.len() as u64;
            report.failed += failures.len() as u64;
            for chunk in successes.chunks(10) {
                let entries = chunk
                    .iter()
                    .enumerate()
                    .map(|(i, m)| {
                        DeleteMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .receipt_handle(m.receipt_handle.clone().unwrap_or_default())
                            .build()
                            .map_err(|e| driver_error("DeleteMessageBatch entry", e))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                self.sqs
                    .delete_message_batch()
                    .queue_url(&queue)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .map_err(|e| driver_error("DeleteMessageBatch", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
            }
            for message in failures {
                // Visible again now rather than after the visibility timeout.
                self.sqs
                    .change_message_visibility()
                    .queue_url(&queue)
                    .receipt_handle(message.receipt_handle.clone().unwrap_or_default())
                    .visibility_timeout(0)
                    .send()
                    .await
                    .map_err(|e| driver_error("ChangeMessageVisibility", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
            }
        }
    }
}

/// The approximate number of visible messages in a queue.
pub async fn queue_depth(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Result<u64, DriverError> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .map_err(|e| driver_error("GetQueueAttributes", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
    Ok(out
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages).cloned())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0))
}
