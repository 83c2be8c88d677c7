//! The eventual projections' SQLite sinks, and the query port over all read
//! models.
//!
//! Each sink writes its model change and its checkpoint in one savepoint of
//! the writer's transaction, conditioned on the checkpoint the runtime
//! expects: the exactly-once half of the projection runtime's contract. The
//! model logic itself is the domain's pure functions, shared with every backend.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::NaiveDate;
use rusqlite::{Connection, OptionalExtension, params};
use tally_core::Decider;
use tally_core::{ApplyOutcome, EventEnvelope, ProjectionError, ProjectionSink, StoreError, StreamId, decode_event};
use tally_domain::views::{
    self, INVENTORY_LEVELS, InventoryLevel, OrderSummary, Page, ReadError, ReadModels, SalesDay,
};
use tally_domain::{CustomerId, Order, OrderEvent, OrderId, Sku};

use crate::{SqliteStore, sql_error};

fn checkpoint_in(conn: &Connection, projection: &str, stream: &StreamId) -> Result<u64, StoreError> {
    conn.prepare_cached("SELECT version FROM checkpoints WHERE projection = ?1 AND stream_id = ?2")
        .and_then(|mut s| {
            s.query_row(params![projection, stream.as_str()], |r| r.get(0))
                .optional()
        })
        .map(Option::unwrap_or_default)
        .map_err(sql_error)
}

fn advance_checkpoint(conn: &Connection, projection: &str, event: &EventEnvelope) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO checkpoints (projection, stream_id, version) VALUES (?1, ?2, ?3)
         ON CONFLICT (projection, stream_id) DO UPDATE SET version = excluded.version",
    )
    .and_then(|mut s| s.execute(params![projection, event.stream_id.as_str(), event.version]))
    .map(drop)
    .map_err(sql_error)
}

fn decode_order_event(event: &EventEnvelope) -> Result<OrderEvent, ProjectionError> {
    decode_event::<Order>(&event.event_type, event.schema, &event.data).map_err(|e| ProjectionError::Poison {
        stream: event.stream_id.clone(),
        version: event.version,
        reason: e.to_string(),
    })
}

/// Applies `change` and advances the checkpoint, in one savepoint, if the
/// checkpoint is still at `event.version - 1`.
async fn apply_checkpointed<F>(
    store: &SqliteStore,
    projection: &'static str,
    event: &EventEnvelope,
    change: F,
) -> Result<ApplyOutcome, ProjectionError>
where
    F: FnOnce(&Connection, &EventEnvelope) -> Result<(), StoreError> + Send + 'static,
{
    let event = event.clone();
    let outcome = store
        .write(move |conn| {
            if checkpoint_in(conn, projection, &event.stream_id)? + 1 != event.version {
                return Ok(ApplyOutcome::CheckpointMoved);
            }
            change(conn, &event)?;
            advance_checkpoint(conn, projection, &event)?;
            Ok(ApplyOutcome::Applied)
        })
        .await?;
    Ok(outcome)
}

fn backend(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Backend(Box::new(e))
}

/// How one projection changes its tables for one order event, inside the
/// savepoint that also advances its checkpoint.
type OrderChange = fn(&Connection, &EventEnvelope, &OrderEvent) -> Result<(), StoreError>;

/// An eventual projection of the order streams into SQLite tables:
/// `order_summary` (one row per order, indexed by customer) or
/// `sales_by_day` (a commutative daily aggregate of order deltas).
pub struct OrderProjectionSink {
    store: SqliteStore,
    name: &'static str,
    change: OrderChange,
}

impl OrderProjectionSink {
    /// `order_summary` over `store`'s database.
    pub fn order_summary(store: SqliteStore) -> Self {
        Self {
            store,
            name: views::ORDER_SUMMARY,
            change: write_order_summary,
        }
    }

    /// `sales_by_day` over `store`'s database.
    pub fn sales_by_day(store: SqliteStore) -> Self {
        Self {
            store,
            name: views::SALES_BY_DAY,
            change: add_sales_delta,
        }
    }
}

fn write_order_summary(conn: &Connection, event: &EventEnvelope, order_event: &OrderEvent) -> Result<(), StoreError> {
    let order_id = event.stream_id.entity_id();
    let current: Option<String> = conn
        .prepare_cached("SELECT row FROM order_summary WHERE order_id = ?1")
        .and_then(|mut s| s.query_row([order_id], |r| r.get(0)).optional())
        .map_err(sql_error)?;
    let current: Option<OrderSummary> = parse_row(current)?;
    let Some(row) = views::apply_order_summary(current, order_event, event.version, event.timestamp_ms) else {
        return Ok(());
    };
    let text = serde_json::to_string(&row).map_err(backend)?;
    conn.prepare_cached(
        "INSERT INTO order_summary (order_id, customer_id, placed_at_ms, version, row) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (order_id) DO UPDATE SET customer_id = excluded.customer_id,
             placed_at_ms = excluded.placed_at_ms, version = excluded.version, row = excluded.row",
    )
    .and_then(|mut s| {
        s.execute(params![
            order_id,
            row.customer_id.as_str(),
            row.placed_at_ms,
            row.version,
            text
        ])
    })
    .map(drop)
    .map_err(sql_error)
}

fn add_sales_delta(conn: &Connection, event: &EventEnvelope, order_event: &OrderEvent) -> Result<(), StoreError> {
    let Some(delta) = views::sales_delta(order_event, event.timestamp_ms) else {
        return Ok(());
    };
    conn.prepare_cached(
        "INSERT INTO sales_by_day (day, orders, units, revenue_cents) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (day) DO UPDATE SET orders = orders + excluded.orders,
             units = units + excluded.units, revenue_cents = revenue_cents + excluded.revenue_cents",
    )
    .and_then(|mut s| {
        s.execute(params![
            delta.day.format("%Y-%m-%d").to_string(),
            delta.orders,
            delta.units,
            delta.revenue_cents
        ])
    })
    .map(drop)
    .map_err(sql_error)
}

#[async_trait]
impl ProjectionSink for OrderProjectionSink {
    fn name(&self) -> &str {
        self.name
    }

    fn follows(&self, stream: &StreamId) -> bool {
        stream.category() == Order::CATEGORY
    }

    async fn checkpoint(&self, stream: &StreamId) -> Result<u64, ProjectionError> {
        let (stream, name) = (stream.clone(), self.name);
        Ok(self.store.read(move |conn| checkpoint_in(conn, name, &stream)).await?)
    }

    async fn apply(&self, event: &EventEnvelope) -> Result<ApplyOutcome, ProjectionError> {
        let order_event = decode_order_event(event)?;
        let change = self.change;
        apply_checkpointed(&self.store, self.name, event, move |conn, event| {
            change(conn, event, &order_event)
        })
        .await
    }
}

/// The sink of the eventual projection `name` over `store`, if it exists.
pub fn projection_sink(name: &str, store: &SqliteStore) -> Option<Arc<dyn ProjectionSink>> {
    match name {
        views::ORDER_SUMMARY => Some(Arc::new(OrderProjectionSink::order_summary(store.clone()))),
        views::SALES_BY_DAY => Some(Arc::new(OrderProjectionSink::sales_by_day(store.clone()))),
        _ => None,
    }
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
        self.read(move |conn| {
            let row = conn
                .prepare_cached("SELECT row FROM order_summary WHERE order_id = ?1")
                .and_then(|mut s| s.query_row([order_id], |r| r.get(0)).optional())
                .map_err(sql_error)?;
            parse_row(row)
        })
        .await
        .map_err(read_error)
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
        let rows = self
            .read(move |conn| {
                let mut statement = conn
                    .prepare_cached(
                        "SELECT row FROM order_summary
                         WHERE customer_id = ?1 AND (placed_at_ms < ?2 OR (placed_at_ms = ?2 AND order_id < ?3) OR ?4)
                         ORDER BY placed_at_ms DESC, order_id DESC LIMIT ?5",
                    )
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
            .await
            .map_err(read_error)?;
        let mut items = rows;
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
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT day, orders, units, revenue_cents FROM sales_by_day WHERE day BETWEEN ?1 AND ?2 ORDER BY day",
            )
            .and_then(|mut s| {
                s.query_map([from, to], |r| {
                    Ok(SalesDay {
                        day: r.get(0)?,
                        orders: r.get(1)?,
                        units: r.get(2)?,
                        revenue_cents: r.get(3)?,
                    })
                })
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            })
            .map_err(sql_error)
        })
        .await
        .map_err(read_error)
    }
}
