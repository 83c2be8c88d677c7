//! The eventual projections' SQLite sinks, and the query port over all read
//! models.
//!
//! Each sink writes its model changes and checkpoints in one savepoint of
//! the writer's transaction, conditioned on the checkpoints read in it: the
//! exactly-once half of the projection runtime's contract. One function,
//! [`apply_in`], does that for one event or a million, for the live tail and
//! for rebuilds alike; the model logic itself is the domain's pure
//! functions, shared with every backend.
//!
//! A sink writes either into the live generation, resolved inside its write
//! transaction (so a rebuild's switch, even from another process, is seen
//! atomically), or into one named generation (a rebuild's). Queries resolve
//! the live generation inside their read transaction, so a reader sees the
//! old generation or the new one, never a mix. Never write a model row
//! without its checkpoint in the same savepoint.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::NaiveDate;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};
use tally_core::projection::{BatchApplied, BatchProjectionSink, Gap, ModelSnapshot, StoredModel};
use tally_core::{
    ApplyOutcome, Decider, EventEnvelope, ProjectionError, ProjectionSink, StoreError, StreamId, decode_event,
};
use tally_domain::views::{
    self, INVENTORY_LEVELS, InventoryLevel, OrderSummary, Page, ReadError, ReadModels, SalesDay,
};
use tally_domain::{CustomerId, Order, OrderEvent, OrderId, Sku};

use crate::schema::{LIVE, Model, REVENUE_E15};
use crate::{SqliteStore, sql_error};

fn backend(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Backend(Box::new(e))
}

/// The generation readers see.
pub(crate) fn live_generation(conn: &Connection, model: Model) -> Result<u64, StoreError> {
    conn.prepare_cached("SELECT generation FROM projection_generations WHERE projection = ?1 AND state = ?2")
        .and_then(|mut s| s.query_row(params![model.name(), LIVE], |r| r.get(0)).optional())
        .map_err(sql_error)?
        .ok_or_else(|| StoreError::Backend(format!("{} has no live generation", model.name()).into()))
}

fn checkpoint_in(conn: &Connection, checkpoints: &str, stream: &StreamId) -> Result<u64, StoreError> {
    conn.prepare_cached(&format!("SELECT version FROM {checkpoints} WHERE stream_id = ?1"))
        .and_then(|mut s| s.query_row([stream.as_str()], |r| r.get(0)).optional())
        .map(Option::unwrap_or_default)
        .map_err(sql_error)
}

/// An order event ready to apply: what the model rules need, decoded once
/// (outside the writer, which must only write).
#[derive(Debug, Clone)]
pub(crate) struct Projected {
    stream: StreamId,
    version: u64,
    timestamp_ms: i64,
    event: OrderEvent,
}

/// Decodes the events a sink follows; counts the others as ignored.
pub(crate) fn decode_followed<'a>(
    events: impl IntoIterator<Item = &'a EventEnvelope>,
    ignored: &mut u64,
) -> Result<Vec<Projected>, ProjectionError> {
    let mut projected = Vec::new();
    for envelope in events {
        if envelope.stream_id.category() != Order::CATEGORY {
            *ignored += 1;
            continue;
        }
        let event = decode_event::<Order>(&envelope.event_type, envelope.schema, &envelope.data).map_err(|e| {
            ProjectionError::Poison {
                stream: envelope.stream_id.clone(),
                version: envelope.version,
                reason: e.to_string(),
            }
        })?;
        projected.push(Projected {
            stream: envelope.stream_id.clone(),
            version: envelope.version,
            timestamp_ms: envelope.timestamp_ms,
            event,
        });
    }
    Ok(projected)
}

fn read_summary(conn: &Connection, table: &str, order_id: &str) -> Result<Option<OrderSummary>, StoreError> {
    let text: Option<String> = conn
        .prepare_cached(&format!("SELECT row FROM {table} WHERE order_id = ?1"))
        .and_then(|mut s| s.query_row([order_id], |r| r.get(0)).optional())
        .map_err(sql_error)?;
    text.map(|t| serde_json::from_str(&t)).transpose().map_err(backend)
}

fn upsert_summary_sql(table: &str) -> String {
    format!(
        "INSERT INTO {table} (order_id, customer_id, placed_at_ms, version, row) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (order_id) DO UPDATE SET customer_id = excluded.customer_id,
             placed_at_ms = excluded.placed_at_ms, version = excluded.version, row = excluded.row"
    )
}

fn write_summary(upsert: &mut rusqlite::Statement<'_>, order_id: &str, row: &OrderSummary) -> Result<(), StoreError> {
    let text = serde_json::to_string(row).map_err(backend)?;
    upsert
        .execute(params![
            order_id,
            row.customer_id.as_str(),
            row.placed_at_ms,
            row.version,
            text
        ])
        .map(drop)
        .map_err(sql_error)
}

/// Applies `events` to generation `generation` of `model`, stream by stream
/// in version order, with the projection runtime's rule: at or below the
/// checkpoint, skipped; the next version, applied; beyond it, a gap that
/// leaves the rest of the stream out. Each stream's run is folded in memory
/// and written once (its row, its checkpoint); a day's sales once per batch.
/// Runs inside one savepoint of the writer: all of it lands, or none.
pub(crate) fn apply_in(
    conn: &Connection,
    model: Model,
    generation: u64,
    mut events: Vec<Projected>,
) -> Result<BatchApplied, StoreError> {
    let (table, checkpoints) = (model.table(generation), model.checkpoints(generation));
    events.sort_by(|a, b| a.stream.cmp(&b.stream).then(a.version.cmp(&b.version)));
    let mut outcome = BatchApplied::default();
    let mut days: BTreeMap<NaiveDate, (i64, i64, i128)> = BTreeMap::new();
    // Prepared once per batch: a replay applies hundreds of thousands of runs.
    let mut read_checkpoint = conn
        .prepare_cached(&format!("SELECT version FROM {checkpoints} WHERE stream_id = ?1"))
        .map_err(sql_error)?;
    let mut write_checkpoint = conn
        .prepare_cached(&format!(
            "INSERT INTO {checkpoints} (stream_id, version) VALUES (?1, ?2)
             ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version"
        ))
        .map_err(sql_error)?;
    let mut upsert_summary = match model {
        Model::OrderSummary => Some(conn.prepare_cached(&upsert_summary_sql(&table)).map_err(sql_error)?),
        Model::SalesByDay => None,
    };
    for run in events.chunk_by(|a, b| a.stream == b.stream) {
        let stream = &run[0].stream;
        let first_checkpoint: u64 = read_checkpoint
            .query_row([stream.as_str()], |r| r.get(0))
            .optional()
            .map_err(sql_error)?
            .unwrap_or_default();
        let mut checkpoint = first_checkpoint;
        // A row exists once one of its stream's events was applied: a stream
        // at checkpoint 0 has none to read.
        let mut summary = match model {
            Model::OrderSummary if first_checkpoint > 0 => read_summary(conn, &table, stream.entity_id())?,
            _ => None,
        };
        for item in run {
            if item.version <= checkpoint {
                outcome.duplicates += 1;
                continue;
            }
            if item.version > checkpoint + 1 {
                outcome.gaps.push(Gap {
                    stream: stream.clone(),
                    checkpoint,
                    next: item.version,
                });
                break;
            }
            match model {
                Model::OrderSummary => {
                    summary = views::apply_order_summary(summary, &item.event, item.version, item.timestamp_ms);
                }
                Model::SalesByDay => {
                    if let Some(delta) = views::sales_delta(&item.event, item.timestamp_ms) {
                        let day = days.entry(delta.day).or_default();
                        day.0 += delta.orders;
                        day.1 += delta.units;
                        day.2 += delta.revenue_cents;
                    }
                }
            }
            checkpoint = item.version;
            outcome.applied += 1;
        }
        if checkpoint == first_checkpoint {
            continue;
        }
        if let (Some(row), Some(upsert)) = (&summary, upsert_summary.as_mut()) {
            write_summary(upsert, stream.entity_id(), row)?;
        }
        write_checkpoint
            .execute(params![stream.as_str(), checkpoint])
            .map_err(sql_error)?;
    }
    for (day, (orders, units, revenue)) in days {
        let (e15, cents) = split_revenue(revenue)?;
        // Both parts are added; the carry keeps |revenue_cents| below 10¹⁵,
        // so the next addition cannot overflow either (SQL's / and %
        // truncate alike, so e15 × 10¹⁵ + cents stays the exact sum).
        conn.prepare_cached(&format!(
            "INSERT INTO {table} (day, orders, units, revenue_cents, revenue_e15) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (day) DO UPDATE SET orders = orders + excluded.orders,
                 units = units + excluded.units,
                 revenue_e15 = revenue_e15 + excluded.revenue_e15
                     + (revenue_cents + excluded.revenue_cents) / {REVENUE_E15},
                 revenue_cents = (revenue_cents + excluded.revenue_cents) % {REVENUE_E15}"
        ))
        .and_then(|mut s| s.execute(params![day.format("%Y-%m-%d").to_string(), orders, units, cents, e15]))
        .map_err(sql_error)?;
    }
    Ok(outcome)
}

/// A revenue as its two stored integers `(revenue_e15, revenue_cents)`,
/// `revenue_cents` below 10¹⁵ in magnitude.
fn split_revenue(revenue: i128) -> Result<(i64, i64), StoreError> {
    let unit = i128::from(REVENUE_E15);
    let e15 = i64::try_from(revenue / unit)
        .map_err(|_| StoreError::Backend(format!("revenue {revenue} is beyond 9.2·10³³ cents").into()))?;
    // |revenue % unit| < 10¹⁵: always an i64.
    let cents = i64::try_from(revenue % unit).map_err(backend)?;
    Ok((e15, cents))
}

/// The revenue the two stored integers hold.
fn join_revenue(e15: i64, cents: i64) -> i128 {
    i128::from(e15) * i128::from(REVENUE_E15) + i128::from(cents)
}

/// Which generation a sink writes into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// Whichever is live when the write happens.
    Live,
    /// This one (a rebuild's).
    Generation(u64),
}

impl Target {
    fn resolve(self, conn: &Connection, model: Model) -> Result<u64, StoreError> {
        match self {
            Self::Live => live_generation(conn, model),
            Self::Generation(generation) => Ok(generation),
        }
    }
}

/// An eventual projection of the order streams into SQLite tables:
/// `order_summary` (one row per order, indexed by customer) or
/// `sales_by_day` (a commutative daily aggregate of order deltas).
pub struct OrderProjectionSink {
    store: SqliteStore,
    model: Model,
    target: Target,
}

impl OrderProjectionSink {
    /// `order_summary` over `store`'s database, writing into the live generation.
    pub fn order_summary(store: SqliteStore) -> Self {
        Self::new(store, Model::OrderSummary, Target::Live)
    }

    /// `sales_by_day` over `store`'s database, writing into the live generation.
    pub fn sales_by_day(store: SqliteStore) -> Self {
        Self::new(store, Model::SalesByDay, Target::Live)
    }

    pub(crate) fn new(store: SqliteStore, model: Model, target: Target) -> Self {
        Self { store, model, target }
    }
}

#[async_trait]
impl ProjectionSink for OrderProjectionSink {
    fn name(&self) -> &str {
        self.model.name()
    }

    fn follows(&self, stream: &StreamId) -> bool {
        stream.category() == Order::CATEGORY
    }

    async fn checkpoint(&self, stream: &StreamId) -> Result<u64, ProjectionError> {
        let (stream, model, target) = (stream.clone(), self.model, self.target);
        Ok(self
            .store
            .read(move |conn| {
                let tx = conn.unchecked_transaction().map_err(sql_error)?;
                let generation = target.resolve(&tx, model)?;
                checkpoint_in(&tx, &model.checkpoints(generation), &stream)
            })
            .await?)
    }

    async fn apply(&self, event: &EventEnvelope) -> Result<ApplyOutcome, ProjectionError> {
        let projected = decode_followed([event], &mut 0)?;
        let (model, target) = (self.model, self.target);
        let applied = self
            .store
            .write(move |conn| apply_in(conn, model, target.resolve(conn, model)?, projected))
            .await?;
        // A duplicate or a gap both mean the checkpoint is not at v − 1.
        Ok(if applied.applied == 1 {
            ApplyOutcome::Applied
        } else {
            ApplyOutcome::CheckpointMoved
        })
    }
}

#[async_trait]
impl BatchProjectionSink for OrderProjectionSink {
    async fn apply_batch(&self, events: &[EventEnvelope]) -> Result<BatchApplied, ProjectionError> {
        let mut ignored = 0;
        let projected = decode_followed(events, &mut ignored)?;
        let (model, target) = (self.model, self.target);
        let mut applied = if projected.is_empty() {
            BatchApplied::default()
        } else {
            self.store
                .write(move |conn| apply_in(conn, model, target.resolve(conn, model)?, projected))
                .await?
        };
        applied.ignored += ignored;
        Ok(applied)
    }
}

/// Reads every row and checkpoint of `generation` of `model`, in the caller's transaction.
pub(crate) fn snapshot_in(conn: &Connection, model: Model, generation: u64) -> Result<ModelSnapshot, StoreError> {
    let table = model.table(generation);
    let mut snapshot = ModelSnapshot::default();
    match model {
        Model::OrderSummary => {
            let mut statement = conn
                .prepare(&format!(
                    "SELECT order_id, customer_id, placed_at_ms, version, row FROM {table}"
                ))
                .map_err(sql_error)?;
            let mut rows = statement.query([]).map_err(sql_error)?;
            while let Some(row) = rows.next().map_err(sql_error)? {
                let key: String = row.get(0).map_err(sql_error)?;
                let columns = json!({
                    "customer_id": row.get::<_, String>(1).map_err(sql_error)?,
                    "placed_at_ms": row.get::<_, i64>(2).map_err(sql_error)?,
                    "version": row.get::<_, i64>(3).map_err(sql_error)?,
                });
                let text: String = row.get(4).map_err(sql_error)?;
                snapshot.rows.insert(key, stored_summary(&text, columns));
            }
        }
        Model::SalesByDay => {
            let mut statement = conn
                .prepare(&format!(
                    "SELECT day, orders, units, revenue_cents, revenue_e15 FROM {table}"
                ))
                .map_err(sql_error)?;
            let mut rows = statement.query([]).map_err(sql_error)?;
            while let Some(row) = rows.next().map_err(sql_error)? {
                let day = SalesDay {
                    day: row.get(0).map_err(sql_error)?,
                    orders: row.get(1).map_err(sql_error)?,
                    units: row.get(2).map_err(sql_error)?,
                    revenue_cents: join_revenue(row.get(4).map_err(sql_error)?, row.get(3).map_err(sql_error)?),
                };
                snapshot
                    .rows
                    .insert(day.day.clone(), serde_json::to_value(&day).map_err(backend)?);
            }
        }
    }
    let mut statement = conn
        .prepare(&format!(
            "SELECT stream_id, version FROM {}",
            model.checkpoints(generation)
        ))
        .map_err(sql_error)?;
    let mut rows = statement.query([]).map_err(sql_error)?;
    while let Some(row) = rows.next().map_err(sql_error)? {
        let stream: String = row.get(0).map_err(sql_error)?;
        let stream = StreamId::parse(stream.clone())
            .map_err(|e| StoreError::Backend(format!("checkpoint of an invalid stream id {stream:?}: {e}").into()))?;
        snapshot.checkpoints.insert(stream, row.get(1).map_err(sql_error)?);
    }
    Ok(snapshot)
}

/// A stored summary as the API would serve it. The index columns are
/// derived from the row; where they disagree with it (a listing by customer
/// would go wrong), they are shown under `index_columns` so the row differs.
fn stored_summary(text: &str, columns: Value) -> Value {
    let Ok(mut row) = serde_json::from_str::<Value>(text) else {
        return Value::String(text.to_owned());
    };
    let agrees = ["customer_id", "placed_at_ms", "version"]
        .iter()
        .all(|field| row.get(field) == columns.get(field));
    if !agrees && let Value::Object(fields) = &mut row {
        fields.insert("index_columns".to_owned(), columns);
    }
    row
}

#[async_trait]
impl StoredModel for OrderProjectionSink {
    async fn snapshot(&self) -> Result<ModelSnapshot, ProjectionError> {
        let (model, target) = (self.model, self.target);
        Ok(self
            .store
            .read(move |conn| {
                // One transaction: the rows and the checkpoints they reflect.
                let tx = conn.unchecked_transaction().map_err(sql_error)?;
                let generation = target.resolve(&tx, model)?;
                snapshot_in(&tx, model, generation)
            })
            .await?)
    }
}

/// The sink of the eventual projection `name` over `store`, writing into its
/// live generation, if the projection exists.
pub fn projection_sink(name: &str, store: &SqliteStore) -> Option<Arc<dyn ProjectionSink>> {
    Some(Arc::new(live_sink(name, store)?))
}

/// The batch sink of the eventual projection `name` over `store`, writing
/// into its live generation (what `tally serve`'s tail feeds).
pub fn batch_sink(name: &str, store: &SqliteStore) -> Option<Arc<dyn BatchProjectionSink>> {
    Some(Arc::new(live_sink(name, store)?))
}

/// The live sink of `name`, with its batch and snapshot abilities.
pub fn live_sink(name: &str, store: &SqliteStore) -> Option<OrderProjectionSink> {
    Model::from_name(name).map(|model| OrderProjectionSink::new(store.clone(), model, Target::Live))
}

fn read_error(e: StoreError) -> ReadError {
    ReadError::Backend(Box::new(e))
}

fn parse_row<T: serde::de::DeserializeOwned>(text: Option<String>) -> Result<Option<T>, StoreError> {
    text.map(|t| serde_json::from_str(&t)).transpose().map_err(backend)
}

/// Encodes the position after `row` in the newest-first customer listing.
fn customer_cursor(row: &OrderSummary) -> String {
    format!("{}.{}", row.placed_at_ms, row.order_id)
}

fn parse_customer_cursor(cursor: &str) -> Result<(i64, String), ReadError> {
    let (ms, id) = cursor.split_once('.').ok_or(ReadError::InvalidCursor)?;
    let ms = ms.parse().map_err(|_| ReadError::InvalidCursor)?;
    let id = OrderId::parse(id).map_err(|_| ReadError::InvalidCursor)?;
    Ok((ms, id.as_str().to_owned()))
}

impl SqliteStore {
    /// Runs `read` on the live generation of `model`, inside one read
    /// transaction: the generation cannot be switched (or dropped) under it.
    async fn read_live<T, F>(&self, model: Model, read: F) -> Result<T, ReadError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &str) -> Result<T, StoreError> + Send + 'static,
    {
        self.read(move |conn| {
            let tx = conn.unchecked_transaction().map_err(sql_error)?;
            let table = model.table(live_generation(&tx, model)?);
            read(&tx, &table)
        })
        .await
        .map_err(read_error)
    }
}

#[async_trait]
impl ReadModels for SqliteStore {
    async fn inventory_level(&self, sku: &Sku) -> Result<Option<InventoryLevel>, ReadError> {
        let sku = sku.as_str().to_owned();
        self.read(move |conn| {
            let row = conn
                .prepare_cached("SELECT row FROM inline_views WHERE model = ?1 AND key = ?2")
                .and_then(|mut s| s.query_row(params![INVENTORY_LEVELS, sku], |r| r.get(0)).optional())
                .map_err(sql_error)?;
            parse_row(row)
        })
        .await
        .map_err(read_error)
    }

    async fn order_summary(&self, order_id: &OrderId) -> Result<Option<OrderSummary>, ReadError> {
        let order_id = order_id.as_str().to_owned();
        self.read_live(Model::OrderSummary, move |conn, table| {
            read_summary(conn, table, &order_id)
        })
        .await
    }

    async fn orders_by_customer(
        &self,
        customer_id: &CustomerId,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<OrderSummary>, ReadError> {
        let after = cursor.map(parse_customer_cursor).transpose()?;
        let (after_ms, after_id) = after.unwrap_or((i64::MAX, String::new()));
        let customer = customer_id.as_str().to_owned();
        let limit = limit.clamp(1, 100);
        let mut items = self
            .read_live(Model::OrderSummary, move |conn, table| {
                let mut statement = conn
                    .prepare_cached(&format!(
                        "SELECT row FROM {table}
                         WHERE customer_id = ?1 AND (placed_at_ms < ?2 OR (placed_at_ms = ?2 AND order_id < ?3) OR ?4)
                         ORDER BY placed_at_ms DESC, order_id DESC LIMIT ?5"
                    ))
                    .map_err(sql_error)?;
                let first_page = after_id.is_empty();
                let texts = statement
                    .query_map(params![customer, after_ms, after_id, first_page, limit + 1], |r| {
                        r.get::<_, String>(0)
                    })
                    .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                    .map_err(sql_error)?;
                texts
                    .into_iter()
                    .map(|t| serde_json::from_str::<OrderSummary>(&t).map_err(backend))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await?;
        let next_cursor = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(customer_cursor)
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    async fn sales_by_day(&self, from: NaiveDate, to: NaiveDate) -> Result<Vec<SalesDay>, ReadError> {
        let (from, to) = (from.format("%Y-%m-%d").to_string(), to.format("%Y-%m-%d").to_string());
        self.read_live(Model::SalesByDay, move |conn, table| {
            conn.prepare_cached(&format!(
                "SELECT day, orders, units, revenue_cents, revenue_e15 FROM {table}
                 WHERE day BETWEEN ?1 AND ?2 ORDER BY day"
            ))
            .and_then(|mut s| {
                s.query_map([from, to], |r| {
                    Ok(SalesDay {
                        day: r.get(0)?,
                        orders: r.get(1)?,
                        units: r.get(2)?,
                        revenue_cents: join_revenue(r.get(4)?, r.get(3)?),
                    })
                })
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            })
            .map_err(sql_error)
        })
        .await
    }
}
