//! The DynamoDB [`EventStore`].

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};
use tally_core::{
    AppendBatch, AppendOutcome, At, EventEnvelope, EventStore, IdempotencyRecord, LoadedStream, Snapshot, StoreError,
    StreamId,
};

use crate::errors::{TransactItem, sdk_error};
use crate::items::{EventItem, IdempotencyItem, Item};
use crate::schema::{
    ENV_EVENTS_TABLE, ENV_IDEMPOTENCY_TABLE, ENV_INVENTORY_TABLE, ENV_SNAPSHOT_INTERVAL, EVENTS_PK, EVENTS_SK,
    EVENTS_TS, IDEMPOTENCY_PK, IDEMPOTENCY_TTL, READ_PK, READ_VERSION, TRANSACT_MAX_ITEMS,
};
use crate::settings::{Env, MissingSetting, Settings};

/// Where the store keeps things, and how it pages.
#[derive(Debug, Clone)]
pub struct DynamoConfig {
    /// The events table.
    pub events_table: String,
    /// The idempotency table.
    pub idempotency_table: String,
    /// Inline read models: model name → table.
    pub view_tables: HashMap<String, String>,
    /// Events between snapshots (`None`: no snapshots). The newest snapshot
    /// is then among the newest `interval` items, so one descending page of
    /// that size finds it.
    pub snapshot_interval: Option<u64>,
}

impl DynamoConfig {
    /// The table names and snapshot interval of a command handler:
    /// `TALLY_EVENTS_TABLE`, `TALLY_IDEMPOTENCY_TABLE`, `TALLY_INVENTORY_TABLE`,
    /// `TALLY_SNAPSHOT_INTERVAL` (default 1; 0 = no snapshots).
    pub fn from_settings(settings: &impl Settings) -> Result<Self, MissingSetting> {
        Ok(Self {
            events_table: settings.require(ENV_EVENTS_TABLE)?,
            idempotency_table: settings.require(ENV_IDEMPOTENCY_TABLE)?,
            view_tables: HashMap::from([("inventory_levels".to_owned(), settings.require(ENV_INVENTORY_TABLE)?)]),
            snapshot_interval: snapshot_interval(settings),
        })
    }

    /// [`Self::from_settings`] from the process environment.
    pub fn from_env() -> Result<Self, MissingSetting> {
        Self::from_settings(&Env)
    }

    /// For a reader of the events table only (the query API, the projector's
    /// gap repair): `TALLY_EVENTS_TABLE` and `TALLY_SNAPSHOT_INTERVAL`. Such a
    /// store has no idempotency table and no inline views: it must not append.
    pub fn reader_from_settings(settings: &impl Settings) -> Result<Self, MissingSetting> {
        Ok(Self {
            events_table: settings.require(ENV_EVENTS_TABLE)?,
            idempotency_table: String::new(),
            view_tables: HashMap::new(),
            snapshot_interval: snapshot_interval(settings),
        })
    }

    /// [`Self::reader_from_settings`] from the process environment.
    pub fn reader_from_env() -> Result<Self, MissingSetting> {
        Self::reader_from_settings(&Env)
    }
}

fn snapshot_interval(settings: &impl Settings) -> Option<u64> {
    settings
        .get(ENV_SNAPSHOT_INTERVAL)
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(Some(1), |n| (n > 0).then_some(n))
}

/// The event store on DynamoDB. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    config: DynamoConfig,
}

fn put_item(put: Put) -> TransactWriteItem {
    TransactWriteItem::builder().put(put).build()
}

/// A DynamoDB number attribute.
pub(crate) fn number(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// What a stream query does with an item it read.
enum Visit {
    /// Not part of the answer (still paid for: DynamoDB bills what it reads).
    Skip,
    /// Part of the answer; read on.
    Keep,
    /// The last item of the answer.
    KeepAndStop,
}

/// An event item's append time, if it has a readable one.
fn item_ts(item: &Item) -> Option<i64> {
    item.get(EVENTS_TS)?.as_n().ok()?.parse().ok()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl DynamoStore {
    /// A store over `client` with `config`.
    pub fn new(client: Client, config: DynamoConfig) -> Self {
        Self { client, config }
    }

    /// The SDK client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The configuration.
    pub fn config(&self) -> &DynamoConfig {
        &self.config
    }

    /// Runs a stream query page by page through `LastEvaluatedKey` (a result
    /// over 1 MB arrives in several pages), keeping the items `visit` keeps,
    /// until it says stop.
    async fn query_stream(
        &self,
        stream: &StreamId,
        range: Option<(u64, u64)>,
        newest_first: bool,
        page_size: Option<i32>,
        mut visit: impl FnMut(&Item) -> Visit,
    ) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut query = self
                .client
                .query()
                .table_name(&self.config.events_table)
                .consistent_read(true)
                .scan_index_forward(!newest_first)
                .expression_attribute_names("#pk", EVENTS_PK)
                .expression_attribute_values(":pk", AttributeValue::S(stream.to_string()))
                .set_exclusive_start_key(start.take())
                .set_limit(page_size);
            query = match range {
                Some((from, to)) => query
                    .key_condition_expression("#pk = :pk AND #sk BETWEEN :from AND :to")
                    .expression_attribute_names("#sk", EVENTS_SK)
                    .expression_attribute_values(":from", number(from))
                    .expression_attribute_values(":to", number(to)),
                None => query.key_condition_expression("#pk = :pk"),
            };
            let page = query.send().await.map_err(sdk_error)?;
            for item in page.items.unwrap_or_default() {
                match visit(&item) {
                    Visit::Skip => {}
                    Visit::Keep => items.push(item),
                    Visit::KeepAndStop => {
                        items.push(item);
                        return Ok(items);
                    }
                }
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(items),
            }
        }
    }

    /// The stream up to `upto` (a version, or the newest event at or before
    /// a time), newest first back to the newest snapshot, plus one more item
    /// whose hash the loaded events are checked from. With snapshots on every
    /// event that is one `Query` of two small items: one read request.
    async fn load_back(&self, stream: &StreamId, upto: Option<At>) -> Result<LoadedStream, StoreError> {
        // The newest snapshot is among the newest `interval` items, so one
        // page of `interval + 1` also holds the item before it.
        let page = self
            .config
            .snapshot_interval
            .map(|interval| i32::try_from(interval.saturating_add(1)).unwrap_or(i32::MAX));
        let snapshots = self.config.snapshot_interval.is_some();
        let range = match upto {
            Some(At::Version(version)) => Some((1, version.min(i64::MAX as u64))),
            _ => None,
        };
        let at_ms = match upto {
            Some(At::Time(at_ms)) => Some(at_ms),
            _ => None,
        };
        let (mut reached, mut snapshot_seen, mut base_kept) = (false, false, false);
        let mut items = self
            .query_stream(stream, range, true, page, |item| {
                // Time travel: events appended after the time are not part of the prefix.
                if !reached && at_ms.is_some_and(|at| item_ts(item).is_none_or(|ts| ts > at)) {
                    return Visit::Skip;
                }
                reached = true;
                if snapshot_seen {
                    base_kept = true;
                    return Visit::KeepAndStop;
                }
                snapshot_seen = snapshots && EventItem::has_snapshot(item);
                Visit::Keep
            })
            .await?;
        let base = if base_kept { items.pop() } else { None };
        let base_hash = base.map(|item| EventItem::parse(item).map(|e| e.hash)).transpose()?;
        items.reverse();
        let rows = Self::envelopes(items)?;
        let snapshot = rows.first().and_then(|(_, s)| s.clone());
        Ok(LoadedStream {
            snapshot,
            events: rows.into_iter().map(|(e, _)| e).collect(),
            base_hash,
        })
    }

    fn envelopes(items: Vec<Item>) -> Result<Vec<(EventEnvelope, Option<Snapshot>)>, StoreError> {
        items
            .into_iter()
            .map(|i| EventItem::parse(i)?.into_envelope())
            .collect()
    }

    /// Every item of a batch as a conditional write, with what it stands for.
    fn transact_items(&self, batch: &AppendBatch) -> Result<Vec<(TransactWriteItem, TransactItem)>, StoreError> {
        let built = |put: Result<Put, _>| {
            put.map_err(|e: aws_sdk_dynamodb::error::BuildError| StoreError::InvalidAppend(e.to_string()))
        };
        let mut puts = Vec::new();
        for append in &batch.streams {
            let (stream, expected) = (append.stream_id.clone(), append.expected_version);
            if expected > 0 {
                // A put only sees its own item, so "version expected+1 is
                // free" alone would accept an expected version beyond the
                // head and leave a gap. The head itself must exist.
                let check = ConditionCheck::builder()
                    .table_name(&self.config.events_table)
                    .key(EVENTS_PK, AttributeValue::S(stream.to_string()))
                    .key(EVENTS_SK, number(expected))
                    .condition_expression("attribute_exists(#sk)")
                    .expression_attribute_names("#sk", EVENTS_SK)
                    .build()
                    .map_err(|e| StoreError::InvalidAppend(e.to_string()))?;
                puts.push((
                    TransactWriteItem::builder().condition_check(check).build(),
                    TransactItem::Event {
                        stream: stream.clone(),
                        expected,
                    },
                ));
            }
            for event in &append.events {
                let snapshot = append.snapshot.as_ref().filter(|s| s.version == event.version);
                // The version is the sort key: the put fails if any writer
                // took this version first. That is the whole concurrency check.
                let put = Put::builder()
                    .table_name(&self.config.events_table)
                    .set_item(Some(EventItem::from_envelope(event, snapshot)?))
                    .condition_expression("attribute_not_exists(#sk)")
                    .expression_attribute_names("#sk", EVENTS_SK)
                    // A lost race hands back the winner's item (with its
                    // snapshot): the retry decides on it without a read.
                    .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                    .build();
                puts.push((
                    put_item(built(put)?),
                    TransactItem::Event {
                        stream: stream.clone(),
                        expected,
                    },
                ));
            }
            if let Some(view) = &append.view {
                let table = self.config.view_tables.get(&view.model).ok_or_else(|| {
                    StoreError::InvalidAppend(format!("no table configured for read model {}", view.model))
                })?;
                let mut item: Item =
                    serde_dynamo::to_item(&view.row).map_err(|e| StoreError::InvalidAppend(e.to_string()))?;
                item.insert(READ_PK.to_owned(), AttributeValue::S(view.key.clone()));
                item.insert(READ_VERSION.to_owned(), number(view.version));
                let put = Put::builder()
                    .table_name(table)
                    .set_item(Some(item))
                    .condition_expression("attribute_not_exists(#pk) OR #v < :v")
                    .expression_attribute_names("#pk", READ_PK)
                    .expression_attribute_names("#v", READ_VERSION)
                    .expression_attribute_values(":v", number(view.version))
                    .build();
                puts.push((put_item(built(put)?), TransactItem::View { stream, expected }));
            }
        }
        if let Some(record) = &batch.idempotency {
            // A live record is another request's; an expired one (TTL
            // deletion is lazy) may be replaced.
            let put = Put::builder()
                .table_name(&self.config.idempotency_table)
                .set_item(Some(IdempotencyItem::from_record(record)?))
                .condition_expression("attribute_not_exists(#pk) OR #ttl < :now")
                .expression_attribute_names("#pk", IDEMPOTENCY_PK)
                .expression_attribute_names("#ttl", IDEMPOTENCY_TTL)
                .expression_attribute_values(":now", number(now_ms().div_euclid(1000)))
                .build();
            puts.push((
                put_item(built(put)?),
                TransactItem::Idempotency {
                    key: record.key.clone(),
                },
            ));
        }
        Ok(puts)
    }

    /// One item: a plain conditional `PutItem` (cheaper than a transaction).
    async fn put_one(&self, put: Put, meaning: &TransactItem) -> Result<(), StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(put.table_name)
            .set_item(Some(put.item))
            .set_condition_expression(put.condition_expression)
            .set_expression_attribute_names(put.expression_attribute_names)
            .set_expression_attribute_values(put.expression_attribute_values)
            .set_return_values_on_condition_check_failure(put.return_values_on_condition_check_failure)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e)) => match e.into_err() {
                PutItemError::ConditionalCheckFailedException(failed) => Err(meaning.conflict(failed.item)),
                other => Err(StoreError::Backend(Box::new(other))),
            },
            Err(e) => Err(sdk_error(e)),
        }
    }

    /// Several items: one `TransactWriteItems`; all conditions hold and all
    /// is written, or nothing is.
    async fn put_all(&self, puts: Vec<(TransactWriteItem, TransactItem)>) -> Result<(), StoreError> {
        let (items, meanings): (Vec<TransactWriteItem>, Vec<TransactItem>) = puts.into_iter().unzip();
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e)) => match e.err() {
                TransactWriteItemsError::TransactionCanceledException(cancelled) => {
                    let reasons = cancelled.cancellation_reasons();
                    let culprit = reasons
                        .iter()
                        .position(|r| matches!(r.code(), Some("ConditionalCheckFailed") | Some("TransactionConflict")));
                    match culprit.and_then(|i| Some((meanings.get(i)?, reasons[i].item.clone()))) {
                        Some((meaning, old)) => Err(meaning.conflict(old)),
                        None => Err(sdk_error(SdkError::ServiceError(e))),
                    }
                }
                _ => Err(sdk_error(SdkError::ServiceError(e))),
            },
            Err(e) => Err(sdk_error(e)),
        }
    }
}

#[async_trait]
impl EventStore for DynamoStore {
    async fn load(&self, stream: &StreamId) -> Result<LoadedStream, StoreError> {
        self.load_back(stream, None).await
    }

    async fn load_at(&self, stream: &StreamId, at: At) -> Result<LoadedStream, StoreError> {
        self.load_back(stream, Some(at)).await
    }

    async fn read_range(
        &self,
        stream: &StreamId,
        from: u64,
        to: Option<u64>,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let to = to.unwrap_or(i64::MAX as u64);
        if to < from {
            return Ok(Vec::new());
        }
        let items = self
            .query_stream(stream, Some((from, to)), false, None, |_| Visit::Keep)
            .await?;
        Ok(Self::envelopes(items)?.into_iter().map(|(e, _)| e).collect())
    }

    async fn read_until(&self, stream: &StreamId, at_ms: i64) -> Result<Vec<EventEnvelope>, StoreError> {
        let items = self.query_stream(stream, None, false, None, |_| Visit::Keep).await?;
        Ok(Self::envelopes(items)?
            .into_iter()
            .map(|(e, _)| e)
            .filter(|e| e.timestamp_ms <= at_ms)
            .collect())
    }

    async fn append(&self, batch: AppendBatch) -> Result<AppendOutcome, StoreError> {
        batch.check()?;
        let mut puts = self.transact_items(&batch)?;
        if puts.len() > TRANSACT_MAX_ITEMS {
            return Err(StoreError::InvalidAppend(format!(
                "{} items exceed the {TRANSACT_MAX_ITEMS} a DynamoDB transaction takes",
                puts.len()
            )));
        }
        if puts.len() == 1
            && let Some(put) = puts[0].0.put.take()
        {
            self.put_one(put, &puts[0].1).await?;
        } else {
            self.put_all(puts).await?;
        }
        let heads = batch
            .streams
            .iter()
            .map(|a| (a.stream_id.clone(), a.expected_version + a.events.len() as u64))
            .collect();
        Ok(AppendOutcome { heads })
    }

    async fn idempotency_record(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        let found = self
            .client
            .get_item()
            .table_name(&self.config.idempotency_table)
            .key(IDEMPOTENCY_PK, AttributeValue::S(key.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_error)?;
        let Some(item) = found.item else { return Ok(None) };
        let record = IdempotencyItem::into_record(item)?;
        Ok((record.expires_at_ms > now_ms()).then_some(record))
    }
}
