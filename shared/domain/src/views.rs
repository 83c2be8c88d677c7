//! Read models: their rows, the pure rules by which events change them, and
//! the query port the API reads them through.
//!
//! Consistency per model: `inventory_levels` is inline (written in the same
//! transaction as the SKU's events, derived from the post-state);
//! `order_summary` (which also serves orders-by-customer through an index)
//! and `sales_by_day` are eventual, fed by the projection runtime. The rules
//! here are pure so every backend applies exactly the same logic.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate};
use serde::{Deserialize, Serialize};
use tally_core::InlineView;

use crate::ids::{CustomerId, OrderId, Sku};
use crate::inventory::InventoryState;
use crate::order::{OrderEvent, OrderLine, OrderStatus};

/// Name of the inline inventory model.
pub const INVENTORY_LEVELS: &str = "inventory_levels";
/// Name of the per-order summary projection (also serves orders by customer).
pub const ORDER_SUMMARY: &str = "order_summary";
/// Name of the daily sales projection.
pub const SALES_BY_DAY: &str = "sales_by_day";
/// The eventual projections, by name.
pub const PROJECTIONS: [&str; 2] = [ORDER_SUMMARY, SALES_BY_DAY];

/// A SKU's stock as `GET /inventory/{sku}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryLevel {
    /// The SKU.
    pub sku: Sku,
    /// Display name.
    pub name: String,
    /// Units on hand.
    pub on_hand: u64,
    /// Units reserved.
    pub reserved: u64,
    /// on_hand − reserved.
    pub available: u64,
    /// The SKU stream's version this row reflects.
    pub version: u64,
}

impl InventoryLevel {
    /// The row for a SKU's state at `version`; `None` while unregistered.
    pub fn from_state(state: &InventoryState, version: u64) -> Option<Self> {
        let (sku, name) = state.registered.as_ref()?;
        Some(Self {
            sku: sku.clone(),
            name: name.as_str().to_owned(),
            on_hand: state.on_hand,
            reserved: state.reserved,
            available: state.available(),
            version,
        })
    }

    /// The inline row the command path writes in the same transaction as a
    /// SKU's events at `version` (`None` while unregistered).
    pub fn inline_view(state: &InventoryState, version: u64) -> Result<Option<InlineView>, serde_json::Error> {
        Self::from_state(state, version)
            .map(|level| {
                serde_json::to_value(&level).map(|row| InlineView {
                    model: INVENTORY_LEVELS.to_owned(),
                    key: level.sku.as_str().to_owned(),
                    version,
                    row,
                })
            })
            .transpose()
    }
}

/// An order as `GET /orders/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderSummary {
    /// The order.
    pub order_id: OrderId,
    /// Who ordered.
    pub customer_id: CustomerId,
    /// `placed`, `confirmed`, `cancelled` or `shipped`.
    pub status: OrderStatus,
    /// The lines.
    pub lines: Vec<OrderLine>,
    /// Sum of the lines, in cents.
    pub total_cents: u64,
    /// The currency.
    pub currency: String,
    /// When the order was placed (ms since epoch).
    pub placed_at_ms: i64,
    /// The order stream's version this row reflects.
    pub version: u64,
}

/// Applies one order event (at `version`, appended at `timestamp_ms`) to an
/// order's summary row.
pub fn apply_order_summary(
    row: Option<OrderSummary>,
    event: &OrderEvent,
    version: u64,
    timestamp_ms: i64,
) -> Option<OrderSummary> {
    let mut row = match (event, row) {
        (
            OrderEvent::OrderPlaced {
                order_id,
                customer_id,
                lines,
                currency,
            },
            _,
        ) => OrderSummary {
            order_id: order_id.clone(),
            customer_id: customer_id.clone(),
            status: OrderStatus::Placed,
            lines: lines.clone(),
            total_cents: lines.iter().map(OrderLine::total_cents).sum(),
            currency: currency.as_str().to_owned(),
            placed_at_ms: timestamp_ms,
            version,
        },
        (
            OrderEvent::OrderImported {
                order_id,
                customer_id,
                lines,
                currency,
                status,
                placed_at_ms,
            },
            _,
        ) => OrderSummary {
            order_id: order_id.clone(),
            customer_id: customer_id.clone(),
            status: status.status(),
            lines: lines.clone(),
            total_cents: lines.iter().map(OrderLine::total_cents).sum(),
            currency: currency.as_str().to_owned(),
            // The legacy placing time, not the import's: a customer's orders
            // stay in the order they were taken.
            placed_at_ms: *placed_at_ms,
            version,
        },
        (_, None) => return None,
        (OrderEvent::OrderConfirmed {}, Some(row)) => OrderSummary {
            status: OrderStatus::Confirmed,
            ..row
        },
        (OrderEvent::OrderCancelled { .. }, Some(row)) => OrderSummary {
            status: OrderStatus::Cancelled,
            ..row
        },
        (OrderEvent::OrderShipped {}, Some(row)) => OrderSummary {
            status: OrderStatus::Shipped,
            ..row
        },
    };
    row.version = version;
    Some(row)
}

/// One day of sales as `GET /reports/sales` shows it: orders placed that
/// day, net of orders cancelled that day (a cancellation is booked on the day
/// it happens, so the aggregate is a commutative sum of deltas).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SalesDay {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    /// Orders placed minus orders cancelled.
    pub orders: i64,
    /// Units.
    pub units: i64,
    /// Revenue in cents. i128: one order may total 32 lines × 10⁶ units ×
    /// 10⁹ cents (3.2·10¹⁶), so about 289 of them in a day would overflow an
    /// i64. JSON carries it as an exact integer, whatever its size.
    pub revenue_cents: i128,
}

/// What one order event adds to one day's sales.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SalesDelta {
    /// The UTC day of the event.
    pub day: NaiveDate,
    /// +1 placed, −1 cancelled.
    pub orders: i64,
    /// Units added or removed.
    pub units: i64,
    /// Cents added or removed (i128, as the day's sum it is added to).
    pub revenue_cents: i128,
}

/// The UTC day of a timestamp in ms (epoch day for out-of-range values).
pub fn utc_day(timestamp_ms: i64) -> NaiveDate {
    DateTime::from_timestamp_millis(timestamp_ms)
        .map(|t| t.date_naive())
        .unwrap_or_default()
}

/// The sales change an order event causes, if any. An imported open order
/// is booked on the day the legacy system took it, so that cancelling it
/// later nets out against a sale that was counted.
pub fn sales_delta(event: &OrderEvent, timestamp_ms: i64) -> Option<SalesDelta> {
    let (sign, lines, timestamp_ms) = match event {
        OrderEvent::OrderPlaced { lines, .. } => (1, lines, timestamp_ms),
        OrderEvent::OrderImported {
            lines, placed_at_ms, ..
        } => (1, lines, *placed_at_ms),
        OrderEvent::OrderCancelled { lines, .. } => (-1, lines, timestamp_ms),
        OrderEvent::OrderConfirmed {} | OrderEvent::OrderShipped {} => return None,
    };
    let units: u64 = lines.iter().map(|l| u64::from(l.quantity.get())).sum();
    let revenue: u64 = lines.iter().map(OrderLine::total_cents).sum();
    Some(SalesDelta {
        day: utc_day(timestamp_ms),
        orders: sign,
        units: sign * i64::try_from(units).unwrap_or(i64::MAX),
        revenue_cents: i128::from(sign) * i128::from(revenue),
    })
}

/// One page of a listing, with the cursor of the next page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Why a read model could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The pagination cursor is not one this backend issued (client error).
    #[error("invalid cursor")]
    InvalidCursor,
    /// The backend failed.
    #[error("read model unavailable: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The query port: how the API reads the read models, whatever holds them.
#[async_trait]
pub trait ReadModels: Send + Sync {
    /// A SKU's stock row.
    async fn inventory_level(&self, sku: &Sku) -> Result<Option<InventoryLevel>, ReadError>;
    /// An order's summary row.
    async fn order_summary(&self, order_id: &OrderId) -> Result<Option<OrderSummary>, ReadError>;
    /// A customer's orders, newest first.
    async fn orders_by_customer(
        &self,
        customer_id: &CustomerId,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<OrderSummary>, ReadError>;
    /// Daily sales for `from..=to`, days with activity only, in day order.
    async fn sales_by_day(&self, from: NaiveDate, to: NaiveDate) -> Result<Vec<SalesDay>, ReadError>;
}
