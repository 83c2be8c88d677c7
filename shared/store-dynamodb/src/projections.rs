//! The eventual projections' DynamoDB sinks: what the projector Lambda
//! writes, through the core projection runtime.
//!
//! Each apply writes the model change and the stream's checkpoint in one
//! atomic, conditional step, so a duplicate or a racing delivery of the same
//! event can never apply twice:
//! - `order_summary` keeps one item per order, and the item's `version` *is*
//!   the checkpoint: one conditional `PutItem` (`version` = expected), after
//!   one consistent `GetItem` that serves as checkpoint and current row.
//! - `sales_by_day` aggregates many streams into one item per day, so its
//!   checkpoints live in the checkpoints table: one `TransactWriteItems` that
//!   moves the checkpoint (conditioned) and `ADD`s the day's delta.
//!
//! The rules are the domain's pure view functions, shared with every backend.
//! Never write a read row without its checkpoint moving in the same request.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, TransactWriteItem, Update};
use futures_util::future::try_join_all;
use tally_core::projection::{BatchApplied, BatchProjectionSink, Gap, apply_one_by_one};
use tally_core::{
    ApplyOutcome, Decider, EventEnvelope, ProjectionError, ProjectionSink, RetryPolicy, StreamId, decode_event,
};
use tally_domain::views::{self, OrderSummary};
use tally_domain::{Order, OrderEvent};

use crate::items::Item;
use crate::schema::{
    BATCH_GET_MAX_KEYS, CUSTOMER_ID, ENV_CHECKPOINTS_TABLE, ENV_ORDER_SUMMARY_TABLE, ENV_SALES_TABLE, PLACED_KEY,
    READ_PK, READ_VERSION, TRANSACT_MAX_ITEMS,
};
use crate::settings::{MissingSetting, Settings};
use crate::store::number;

fn backend<E: std::error::Error + Send + Sync + 'static>(error: E) -> ProjectionError {
    ProjectionError::Backend(Box::new(error))
}

fn poison(event: &EventEnvelope, reason: impl ToString) -> ProjectionError {
    ProjectionError::Poison {
        stream: event.stream_id.clone(),
        version: event.version,
        reason: reason.to_string(),
    }
}

/// The checkpoint item of `projection` for `stream` in the checkpoints table.
pub fn checkpoint_key(projection: &str, stream: &StreamId) -> String {
    format!("{projection}|{stream}")
}

/// The sort key of a summary in the customer index: newest first under a
/// descending query, ties broken by order id. Zero-padded so that text order
/// is time order.
pub fn placed_key(placed_at_ms: i64, order_id: &str) -> String {
    format!("{:020}#{order_id}", placed_at_ms.max(0))
}

/// The condition that the checkpoint attribute `#v` is still `expected`.
fn checkpoint_condition(expected: u64) -> &'static str {
    if expected == 0 {
        "attribute_not_exists(#pk)"
    } else {
        "#v = :expected"
    }
}

/// The checkpoint an item holds for `stream` (0: no item); an item without a
/// numeric version is poison, named as `what`.
fn stored_checkpoint(stream: &StreamId, item: Option<&Item>, what: &str) -> Result<u64, ProjectionError> {
    match item {
        None => Ok(0),
        Some(item) => item_version(item).ok_or_else(|| ProjectionError::Poison {
            stream: stream.clone(),
            version: 0,
            reason: format!("{what} without a numeric version: {:?}", item.get(READ_VERSION)),
        }),
    }
}

/// The `version` attribute of a read item.
fn item_version(item: &Item) -> Option<u64> {
    match item.get(READ_VERSION) {
        Some(AttributeValue::N(n)) => n.parse().ok(),
        _ => None,
    }
}

fn decode_order(event: &EventEnvelope) -> Result<OrderEvent, ProjectionError> {
    decode_event::<Order>(&event.event_type, event.schema, &event.data).map_err(|e| poison(event, e))
}

/// Which model a sink maintains, and where.
#[derive(Debug, Clone)]
enum Model {
    /// One item per order in `table`; the item's version is the checkpoint.
    OrderSummary { table: String },
    /// One item per day in `table`; checkpoints in `checkpoints`.
    SalesByDay { table: String, checkpoints: String },
}

/// Rows remembered between `checkpoint` and `apply` (see [`DynamoProjectionSink`]).
const ROW_CACHE_MAX: usize = 1_000;

/// An eventual projection of the order streams into a DynamoDB table.
///
/// The runtime asks for a stream's checkpoint, then applies. For
/// `order_summary` the checkpoint *is* the row's version, so the row read
/// for the checkpoint is kept and the apply decides on it instead of
/// reading it again: two requests per event, not three. A kept row that
/// went stale costs nothing but a retry: the write is conditioned on the
/// version the row had.
#[derive(Debug, Clone)]
pub struct DynamoProjectionSink {
    client: Client,
    name: &'static str,
    /// Where its checkpoints are kept apart from other generations' (the
    /// projection's name for the blue slot).
    namespace: String,
    model: Model,
    /// Order id → the row as `checkpoint` read it (`None`: no row yet).
    rows: Arc<Mutex<HashMap<String, Option<Item>>>>,
}

impl DynamoProjectionSink {
    /// `order_summary` in `table` (which needs the `by_customer` index for queries).
    pub fn order_summary(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            name: views::ORDER_SUMMARY,
            namespace: views::ORDER_SUMMARY.to_owned(),
            model: Model::OrderSummary { table: table.into() },
            rows: Arc::default(),
        }
    }

    /// `sales_by_day` in `table`, with its checkpoints in `checkpoints`.
    pub fn sales_by_day(client: Client, table: impl Into<String>, checkpoints: impl Into<String>) -> Self {
        Self {
            client,
            name: views::SALES_BY_DAY,
            namespace: views::SALES_BY_DAY.to_owned(),
            model: Model::SalesByDay {
                table: table.into(),
                checkpoints: checkpoints.into(),
            },
            rows: Arc::default(),
        }
    }

    /// The same sink keeping its checkpoints under `namespace` in the
    /// checkpoints table (a generation's own; `order_summary` keeps its
    /// checkpoints in its rows and ignores it).
    pub fn with_checkpoint_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// The sink of projection `name`, its tables named by the settings
    /// (`TALLY_ORDER_SUMMARY_TABLE`; `TALLY_SALES_TABLE` and `TALLY_CHECKPOINTS_TABLE`).
    /// `Ok(None)`: no such projection.
    pub fn from_settings(client: Client, name: &str, settings: &impl Settings) -> Result<Option<Self>, MissingSetting> {
        Ok(match name {
            views::ORDER_SUMMARY => Some(Self::order_summary(client, settings.require(ENV_ORDER_SUMMARY_TABLE)?)),
            views::SALES_BY_DAY => Some(Self::sales_by_day(
                client,
                settings.require(ENV_SALES_TABLE)?,
                settings.require(ENV_CHECKPOINTS_TABLE)?,
            )),
            _ => None,
        })
    }

    /// The item holding `stream`'s checkpoint: (table, key).
    fn checkpoint_item(&self, stream: &StreamId) -> (&str, String) {
        match &self.model {
            Model::OrderSummary { table } => (table, stream.entity_id().to_owned()),
            Model::SalesByDay { checkpoints, .. } => (checkpoints, checkpoint_key(&self.namespace, stream)),
        }
    }

    async fn read_item(&self, table: &str, key: String) -> Result<Option<Item>, ProjectionError> {
        let found = self
            .client
            .get_item()
            .table_name(table)
            .key(READ_PK, AttributeValue::S(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        Ok(found.item)
    }

    async fn apply_order_summary(
        &self,
        table: &str,
        event: &EventEnvelope,
        order_event: &OrderEvent,
    ) -> Result<ApplyOutcome, ProjectionError> {
        let order_id = event.stream_id.entity_id();
        let expected = event.version - 1;
        let kept = self.rows.lock().ok().and_then(|mut rows| rows.remove(order_id));
        let current = match kept {
            Some(None) if expected == 0 => None,
            Some(Some(item)) if item_version(&item) == Some(expected) => Some(item),
            _ => self.read_item(table, order_id.to_owned()).await?,
        };
        let current: Option<OrderSummary> = match current {
            Some(item) if item.contains_key(CUSTOMER_ID) => {
                Some(serde_dynamo::from_item(item).map_err(|e| poison(event, format!("unreadable summary row: {e}")))?)
            }
            _ => None,
        };
        let row = views::apply_order_summary(current, order_event, event.version, event.timestamp_ms);
        self.put_summary(table, order_id, expected, event.version, row.as_ref())
            .await
            .map_err(|e| match e {
                SummaryWriteError::Encode(reason) => poison(event, reason),
                SummaryWriteError::Backend(e) => e,
            })
    }

    /// Writes an order's summary row at `version`, if the row is still at
    /// `expected` (0: no row): the row and its checkpoint in one PutItem.
    async fn put_summary(
        &self,
        table: &str,
        order_id: &str,
        expected: u64,
        version: u64,
        row: Option<&OrderSummary>,
    ) -> Result<ApplyOutcome, SummaryWriteError> {
        let mut item: Item = match row {
            Some(row) => serde_dynamo::to_item(row).map_err(|e| SummaryWriteError::Encode(e.to_string()))?,
            None => Item::new(),
        };
        item.insert(READ_PK.to_owned(), AttributeValue::S(order_id.to_owned()));
        item.insert(READ_VERSION.to_owned(), number(version));
        if let Some(row) = row {
            item.insert(
                PLACED_KEY.to_owned(),
                AttributeValue::S(placed_key(row.placed_at_ms, row.order_id.as_str())),
            );
        }
        let mut put = self
            .client
            .put_item()
            .table_name(table)
            .set_item(Some(item))
            .condition_expression(checkpoint_condition(expected));
        // DynamoDB refuses names and values the expression does not use.
        put = if expected == 0 {
            put.expression_attribute_names("#pk", READ_PK)
        } else {
            put.expression_attribute_names("#v", READ_VERSION)
                .expression_attribute_values(":expected", number(expected))
        };
        match put.send().await {
            Ok(_) => Ok(ApplyOutcome::Applied),
            Err(SdkError::ServiceError(e)) if matches!(e.err(), PutItemError::ConditionalCheckFailedException(_)) => {
                Ok(ApplyOutcome::CheckpointMoved)
            }
            Err(e) => Err(SummaryWriteError::Backend(backend(e))),
        }
    }

    /// Reads the items of `table` keyed `keys` (consistent BatchGetItem, 100
    /// keys a request, unprocessed keys asked again), by key.
    async fn read_rows(&self, table: &str, order_ids: &[&str]) -> Result<HashMap<String, Item>, ProjectionError> {
        let mut rows = HashMap::with_capacity(order_ids.len());
        for chunk in order_ids.chunks(BATCH_GET_MAX_KEYS) {
            let keys: Vec<Item> = chunk
                .iter()
                .map(|id| Item::from([(READ_PK.to_owned(), AttributeValue::S((*id).to_owned()))]))
                .collect();
            let mut request = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .consistent_read(true)
                    .build()
                    .map_err(backend)?,
            );
            let mut attempt = 0;
            while let Some(keys) = request.take() {
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(table, keys)
                    .send()
                    .await
                    .map_err(backend)?;
                for item in out.responses.unwrap_or_default().into_values().flatten() {
                    if let Some(AttributeValue::S(id)) = item.get(READ_PK) {
                        rows.insert(id.clone(), item);
                    }
                }
                request = out
                    .unprocessed_keys
                    .and_then(|mut left| left.remove(table))
                    .filter(|k| !k.keys.is_empty());
                if request.is_some() {
                    tokio::time::sleep(crate::history::backoff(attempt)).await;
                    attempt += 1;
                }
            }
        }
        Ok(rows)
    }

    /// `order_summary`'s batch: every order's row read in BatchGetItem
    /// requests, its events folded in memory, and one conditional PutItem
    /// per order (row and checkpoint together), up to [`SUMMARY_WRITES`] at
    /// once. An order whose row moved meanwhile is applied event by event.
    async fn apply_summaries(&self, table: &str, events: &[EventEnvelope]) -> Result<BatchApplied, ProjectionError> {
        let mut outcome = BatchApplied::default();
        let streams = by_stream(self, events, &mut outcome);
        let ids: Vec<&str> = streams.keys().map(|s| s.entity_id()).collect();
        let rows = self.read_rows(table, &ids).await?;
        let mut folds = Vec::with_capacity(streams.len());
        for (stream, stream_events) in streams {
            let item = rows.get(stream.entity_id());
            let checkpoint = stored_checkpoint(stream, item, "summary row")?;
            let row: Option<OrderSummary> = match item {
                Some(item) if item.contains_key(CUSTOMER_ID) => Some(serde_dynamo::from_item(item.clone()).map_err(
                    |e| ProjectionError::Poison {
                        stream: stream.clone(),
                        version: checkpoint,
                        reason: format!("unreadable summary row: {e}"),
                    },
                )?),
                _ => None,
            };
            folds.push(StreamFold::new(
                stream,
                checkpoint,
                stream_events,
                row,
                |row, event, order_event| {
                    *row = views::apply_order_summary(row.take(), &order_event, event.version, event.timestamp_ms);
                },
            )?);
        }
        for batch in folds.chunks(SUMMARY_WRITES) {
            let written = try_join_all(batch.iter().map(|fold| async move {
                if fold.applied == 0 {
                    return Ok(ApplyOutcome::Applied);
                }
                self.put_summary(
                    table,
                    fold.stream.entity_id(),
                    fold.checkpoint,
                    fold.version,
                    fold.state.as_ref(),
                )
                .await
                .map_err(|e| match e {
                    SummaryWriteError::Encode(reason) => ProjectionError::Poison {
                        stream: fold.stream.clone(),
                        version: fold.version,
                        reason,
                    },
                    SummaryWriteError::Backend(e) => e,
                })
            }))
            .await?;
            for (fold, result) in batch.iter().zip(written) {
                if result == ApplyOutcome::Applied {
                    fold.count_into(&mut outcome);
                } else {
                    // Raced by a concurrent delivery: decide event by event.
                    let owned: Vec<EventEnvelope> = fold.owned_events().collect();
                    outcome.absorb(apply_one_by_one(self, &owned).await?);
                }
            }
        }
        Ok(outcome)
    }

    /// `sales_by_day`'s batch: every stream's checkpoint read in
    /// BatchGetItem requests, each stream's applicable events summed per
    /// day in memory, then streams packed into TransactWriteItems of at
    /// most 100 items: each stream's checkpoint moved (conditioned on the
    /// value read) and the merged day deltas of exactly those streams
    /// added. A transaction cancelled by a moved checkpoint is applied
    /// again event by event.
    async fn apply_sales_batch(
        &self,
        table: &str,
        checkpoints: &str,
        events: &[EventEnvelope],
    ) -> Result<BatchApplied, ProjectionError> {
        let mut outcome = BatchApplied::default();
        let streams = by_stream(self, events, &mut outcome);
        let keys: Vec<String> = streams.keys().map(|s| checkpoint_key(&self.namespace, s)).collect();
        let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let stored = self.read_rows(checkpoints, &key_refs).await?;
        let mut folds = Vec::with_capacity(streams.len());
        for ((stream, stream_events), key) in streams.into_iter().zip(keys) {
            let checkpoint = stored_checkpoint(stream, stored.get(&key), "checkpoint item")?;
            let fold = StreamFold::new(
                stream,
                checkpoint,
                stream_events,
                DaySums::new(),
                |days, event, order_event| {
                    if let Some(delta) = views::sales_delta(&order_event, event.timestamp_ms) {
                        let day = days.entry(delta.day.format("%Y-%m-%d").to_string()).or_default();
                        day.0 += delta.orders;
                        day.1 += delta.units;
                        day.2 += delta.revenue_cents;
                    }
                },
            )?;
            folds.push((key, fold));
        }
        // Pack whole streams into transactions of at most 100 items.
        let mut groups: Vec<Vec<&(String, StreamFold<'_, DaySums>)>> = vec![Vec::new()];
        let mut days_in_group: std::collections::BTreeSet<&str> = Default::default();
        for keyed in folds.iter().filter(|(_, f)| f.applied > 0) {
            let days = &keyed.1.state;
            let new_days = days.keys().filter(|d| !days_in_group.contains(d.as_str())).count();
            let items = groups.last().map_or(0, Vec::len) + days_in_group.len();
            if items + 1 + new_days > TRANSACT_MAX_ITEMS {
                groups.push(Vec::new());
                days_in_group.clear();
            }
            days_in_group.extend(days.keys().map(String::as_str));
            if let Some(group) = groups.last_mut() {
                group.push(keyed);
            }
        }
        for (_, fold) in folds.iter().filter(|(_, f)| f.applied == 0) {
            fold.count_into(&mut outcome);
        }
        for group in groups.iter().filter(|g| !g.is_empty()) {
            match self.transact_sales(table, checkpoints, group).await? {
                ApplyOutcome::Applied => group.iter().for_each(|(_, fold)| fold.count_into(&mut outcome)),
                ApplyOutcome::CheckpointMoved => {
                    // A concurrent delivery moved a checkpoint: decide event by event.
                    let owned: Vec<EventEnvelope> = group.iter().flat_map(|(_, f)| f.owned_events()).collect();
                    outcome.absorb(apply_one_by_one(self, &owned).await?);
                }
            }
        }
        Ok(outcome)
    }

    /// One transaction: the group's checkpoints moved and their days added.
    async fn transact_sales(
        &self,
        table: &str,
        checkpoints: &str,
        group: &[&(String, StreamFold<'_, DaySums>)],
    ) -> Result<ApplyOutcome, ProjectionError> {
        let mut days: BTreeMap<&str, (i64, i64, i128)> = BTreeMap::new();
        let mut items = Vec::with_capacity(group.len() * 2);
        for (key, fold) in group {
            for (day, delta) in &fold.state {
                let sum = days.entry(day).or_default();
                sum.0 += delta.0;
                sum.1 += delta.1;
                sum.2 += delta.2;
            }
            let mut update = Update::builder()
                .table_name(checkpoints)
                .key(READ_PK, AttributeValue::S(key.clone()))
                .update_expression("SET #v = :v")
                .condition_expression(checkpoint_condition(fold.checkpoint))
                .expression_attribute_names("#v", READ_VERSION)
                .expression_attribute_values(":v", number(fold.version));
            update = if fold.checkpoint == 0 {
                update.expression_attribute_names("#pk", READ_PK)
            } else {
                update.expression_attribute_values(":expected", number(fold.checkpoint))
            };
            items.push(
                TransactWriteItem::builder()
                    .update(update.build().map_err(backend)?)
                    .build(),
            );
        }
        for (day, (orders, units, revenue)) in days {
            let add = Update::builder()
                .table_name(table)
                .key(READ_PK, AttributeValue::S(day.to_owned()))
                .update_expression("ADD #orders :orders, #units :units, #revenue :revenue")
                .expression_attribute_names("#orders", "orders")
                .expression_attribute_names("#units", "units")
                .expression_attribute_names("#revenue", "revenue_cents")
                .expression_attribute_values(":orders", number(orders))
                .expression_attribute_values(":units", number(units))
                .expression_attribute_values(":revenue", number(revenue))
                .build()
                .map_err(backend)?;
            items.push(TransactWriteItem::builder().update(add).build());
        }
        self.transact_checkpointed(items).await
    }

    /// Writes checkpoint moves and day additions in one TransactWriteItems.
    /// A failed checkpoint condition is a concurrent delivery
    /// (`CheckpointMoved`). A `TransactionConflict` is another transaction
    /// on one of the items at that moment (a hot day's row under load): the
    /// same conflict the command path retries, so it is retried here too,
    /// a bounded number of times with the core's jittered backoff, instead
    /// of failing the message towards the DLQ.
    async fn transact_checkpointed(&self, items: Vec<TransactWriteItem>) -> Result<ApplyOutcome, ProjectionError> {
        let policy = RetryPolicy::default();
        let mut attempt = 1;
        loop {
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await;
            let error = match result {
                Ok(_) => return Ok(ApplyOutcome::Applied),
                Err(SdkError::ServiceError(e)) => e,
                Err(e) => return Err(backend(e)),
            };
            let reasons = match error.err() {
                TransactWriteItemsError::TransactionCanceledException(cancelled) => cancelled.cancellation_reasons(),
                _ => &[],
            };
            if reasons.iter().any(|r| r.code() == Some("ConditionalCheckFailed")) {
                return Ok(ApplyOutcome::CheckpointMoved);
            }
            let conflict = reasons.iter().any(|r| r.code() == Some("TransactionConflict"));
            if !conflict || attempt >= policy.max_attempts {
                return Err(backend(SdkError::ServiceError(error)));
            }
            tracing::debug!(attempt, "sales_by_day transaction conflict; writing again");
            tokio::time::sleep(policy.backoff(attempt)).await;
            attempt += 1;
        }
    }

    async fn apply_sales(
        &self,
        table: &str,
        checkpoints: &str,
        event: &EventEnvelope,
        order_event: &OrderEvent,
    ) -> Result<ApplyOutcome, ProjectionError> {
        let expected = event.version - 1;
        let mut checkpoint = Update::builder()
            .table_name(checkpoints)
            .key(
                READ_PK,
                AttributeValue::S(checkpoint_key(&self.namespace, &event.stream_id)),
            )
            .update_expression("SET #v = :v")
            .condition_expression(checkpoint_condition(expected))
            .expression_attribute_names("#v", READ_VERSION)
            .expression_attribute_values(":v", number(event.version));
        checkpoint = if expected == 0 {
            checkpoint.expression_attribute_names("#pk", READ_PK)
        } else {
            checkpoint.expression_attribute_values(":expected", number(expected))
        };
        let checkpoint = checkpoint.build().map_err(backend)?;
        let Some(delta) = views::sales_delta(order_event, event.timestamp_ms) else {
            // Nothing to add: moving the checkpoint is the whole change.
            let result = self
                .client
                .update_item()
                .table_name(checkpoint.table_name)
                .set_key(Some(checkpoint.key))
                .update_expression(checkpoint.update_expression)
                .set_condition_expression(checkpoint.condition_expression)
                .set_expression_attribute_names(checkpoint.expression_attribute_names)
                .set_expression_attribute_values(checkpoint.expression_attribute_values)
                .send()
                .await;
            return match result {
                Ok(_) => Ok(ApplyOutcome::Applied),
                Err(SdkError::ServiceError(e))
                    if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) =>
                {
                    Ok(ApplyOutcome::CheckpointMoved)
                }
                Err(e) => Err(backend(e)),
            };
        };
        // ADD is commutative: deliveries of different streams may land in
        // any order; the checkpoint condition keeps each one to a single add.
        let add = Update::builder()
            .table_name(table)
            .key(READ_PK, AttributeValue::S(delta.day.format("%Y-%m-%d").to_string()))
            .update_expression("ADD #orders :orders, #units :units, #revenue :revenue")
            .expression_attribute_names("#orders", "orders")
            .expression_attribute_names("#units", "units")
            .expression_attribute_names("#revenue", "revenue_cents")
            .expression_attribute_values(":orders", number(delta.orders))
            .expression_attribute_values(":units", number(delta.units))
            .expression_attribute_values(":revenue", number(delta.revenue_cents))
            .build()
            .map_err(backend)?;
        // Only the checkpoint carries a condition, so a failed one is it.
        self.transact_checkpointed(vec![
            TransactWriteItem::builder().update(checkpoint).build(),
            TransactWriteItem::builder().update(add).build(),
        ])
        .await
    }
}

/// Many events at once (a rebuild's chunks): `order_summary` folds each
/// order's events in memory and writes its row once, conditioned on the
/// version it read, so the batch is atomic per order; `sales_by_day` sums
/// each stream's days in memory and writes groups of streams in one
/// transaction each (checkpoints conditioned, days added), so it is atomic
/// per group. Either way a write never lands without its checkpoint, which
/// is all the rule needs.
#[async_trait]
impl BatchProjectionSink for DynamoProjectionSink {
    async fn apply_batch(&self, events: &[EventEnvelope]) -> Result<BatchApplied, ProjectionError> {
        match &self.model {
            Model::OrderSummary { table } => self.apply_summaries(table, events).await,
            Model::SalesByDay { table, checkpoints } => self.apply_sales_batch(table, checkpoints, events).await,
        }
    }
}

/// Summary rows written at once by a batch.
const SUMMARY_WRITES: usize = 16;

/// Why a summary row could not be written.
enum SummaryWriteError {
    /// The row does not encode: the event is poison.
    Encode(String),
    /// DynamoDB failed.
    Backend(ProjectionError),
}

/// One stream's events of a batch, folded from its stored checkpoint by the
/// runtime's rule: at or below the checkpoint a duplicate, the next version
/// applied to `state`, beyond it a gap that stops the stream there.
struct StreamFold<'a, S> {
    stream: &'a StreamId,
    /// The checkpoint as read (0: none).
    checkpoint: u64,
    /// The version after the fold.
    version: u64,
    applied: u64,
    duplicates: u64,
    gap: Option<Gap>,
    events: Vec<&'a EventEnvelope>,
    /// What the applied events made (the row, or the days' sums).
    state: S,
}

impl<'a, S> StreamFold<'a, S> {
    /// Folds `events` (of `stream`, any order) onto `state` from `checkpoint`.
    fn new(
        stream: &'a StreamId,
        checkpoint: u64,
        mut events: Vec<&'a EventEnvelope>,
        mut state: S,
        mut apply: impl FnMut(&mut S, &EventEnvelope, OrderEvent),
    ) -> Result<Self, ProjectionError> {
        events.sort_by_key(|e| e.version);
        let (mut version, mut applied, mut duplicates, mut gap) = (checkpoint, 0, 0, None);
        for event in &events {
            if event.version <= version {
                duplicates += 1;
                continue;
            }
            if event.version > version + 1 {
                gap = Some(Gap {
                    stream: stream.clone(),
                    checkpoint: version,
                    next: event.version,
                });
                break;
            }
            apply(&mut state, event, decode_order(event)?);
            version = event.version;
            applied += 1;
        }
        Ok(Self {
            stream,
            checkpoint,
            version,
            applied,
            duplicates,
            gap,
            events,
            state,
        })
    }

    /// Counts this stream's outcome as written.
    fn count_into(&self, outcome: &mut BatchApplied) {
        outcome.applied += self.applied;
        outcome.duplicates += self.duplicates;
        outcome.gaps.extend(self.gap.clone());
    }

    /// Its events, to be applied one by one after a lost race.
    fn owned_events(&self) -> impl Iterator<Item = EventEnvelope> + '_ {
        self.events.iter().map(|e| (*e).clone())
    }
}

/// The followed events of a batch by stream; the others counted as ignored.
fn by_stream<'a>(
    sink: &DynamoProjectionSink,
    events: &'a [EventEnvelope],
    outcome: &mut BatchApplied,
) -> BTreeMap<&'a StreamId, Vec<&'a EventEnvelope>> {
    let mut streams: BTreeMap<&StreamId, Vec<&EventEnvelope>> = BTreeMap::new();
    for event in events {
        if sink.follows(&event.stream_id) {
            streams.entry(&event.stream_id).or_default().push(event);
        } else {
            outcome.ignored += 1;
        }
    }
    streams
}

/// A day's sums: (orders, units, cents). Cents in i128: a day of large
/// orders overflows an i64 (a DynamoDB number holds 38 digits).
type DaySums = BTreeMap<String, (i64, i64, i128)>;

#[async_trait]
impl ProjectionSink for DynamoProjectionSink {
    fn name(&self) -> &str {
        self.name
    }

    fn follows(&self, stream: &StreamId) -> bool {
        stream.category() == Order::CATEGORY
    }

    async fn checkpoint(&self, stream: &StreamId) -> Result<u64, ProjectionError> {
        let (table, key) = self.checkpoint_item(stream);
        let item = self.read_item(table, key.clone()).await?;
        let version = stored_checkpoint(stream, item.as_ref(), "checkpoint item")?;
        if matches!(self.model, Model::OrderSummary { .. })
            && let Ok(mut rows) = self.rows.lock()
        {
            if rows.len() >= ROW_CACHE_MAX {
                rows.clear();
            }
            rows.insert(key, item);
        }
        Ok(version)
    }

    async fn apply(&self, event: &EventEnvelope) -> Result<ApplyOutcome, ProjectionError> {
        let order_event = decode_order(event)?;
        match &self.model {
            Model::OrderSummary { table } => self.apply_order_summary(table, event, &order_event).await,
            Model::SalesByDay { table, checkpoints } => self.apply_sales(table, checkpoints, event, &order_event).await,
        }
    }
}

/// Where a projector records why an event failed, so an operator listing a
/// dead-letter queue sees the error next to the message.
#[derive(Debug, Clone)]
pub struct FailureLog {
    client: Client,
    table: String,
}

/// One recorded failure.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FailureRecord {
    /// The error, as the projector last saw it.
    pub error: String,
    /// How many deliveries failed.
    pub attempts: u64,
    /// When it last failed (ms since epoch).
    pub failed_at_ms: i64,
}

impl FailureLog {
    /// A log in `table` (the checkpoints table: failure items have their own key prefix).
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    fn key(projection: &str, stream: &StreamId, version: u64) -> String {
        format!("failure|{projection}|{stream}|{version}")
    }

    /// Records that `projection` failed to apply `stream` v`version`.
    pub async fn record(
        &self,
        projection: &str,
        stream: &StreamId,
        version: u64,
        error: &str,
    ) -> Result<(), ProjectionError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key(READ_PK, AttributeValue::S(Self::key(projection, stream, version)))
            .update_expression("SET #error = :error, #at = :at ADD #attempts :one")
            .expression_attribute_names("#error", "error")
            .expression_attribute_names("#at", "failed_at_ms")
            .expression_attribute_names("#attempts", "attempts")
            .expression_attribute_values(":error", AttributeValue::S(error.to_owned()))
            .expression_attribute_values(":at", number(chrono::Utc::now().timestamp_millis()))
            .expression_attribute_values(":one", number(1))
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }

    /// The failure recorded for `projection` at `stream` v`version`, if any.
    pub async fn lookup(
        &self,
        projection: &str,
        stream: &StreamId,
        version: u64,
    ) -> Result<Option<FailureRecord>, ProjectionError> {
        let found = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(READ_PK, AttributeValue::S(Self::key(projection, stream, version)))
            .send()
            .await
            .map_err(backend)?;
        found
            .item
            .map(|item| serde_dynamo::from_item(item).map_err(backend))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placed_keys_sort_as_time_then_order_id() {
        let mut keys = vec![
            placed_key(1_700_000_000_123, "b"),
            placed_key(99, "z"),
            placed_key(1_700_000_000_123, "a"),
            placed_key(-5, "neg"),
        ];
        keys.sort();
        assert_eq!(
            keys,
            vec![
                placed_key(-5, "neg"),
                placed_key(99, "z"),
                placed_key(1_700_000_000_123, "a"),
                placed_key(1_700_000_000_123, "b"),
            ]
        );
        assert_eq!(placed_key(42, "o-1"), "00000000000000000042#o-1");
    }
}
