//! Orders: one stream per order (`order-<order_id>`).
//!
//! Lifecycle: placed → confirmed (payment) → shipped, or placed/confirmed →
//! cancelled. Placing reserves each line's stock, cancelling releases it and
//! shipping commits it; the service appends the order's events and the SKUs'
//! events in one atomic batch, so stock and orders never disagree.
//!
//! Schema history: `OrderPlaced` schema 1 had no `currency` (every order was
//! in USD); schema 2 carries it. The upcaster below turns 1 into 2.
//!
//! Migration: an order still open in a legacy system (placed or confirmed)
//! starts its stream with one `OrderImported`, decided by
//! [`Order::decide_import`]. Like `OrderPlaced`, it is appended atomically
//! with a `StockReserved` on every line's SKU stream, each decided by the
//! inventory decider's ordinary availability check: an imported order holds
//! its stock exactly as a placed one does, so cancelling or shipping it later
//! releases or commits that stock, and an import that would oversell is
//! rejected before anything is written.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tally_core::{Decider, Upcasters};

use crate::error::DomainError;
use crate::ids::{Cents, Currency, CustomerId, OrderId, Quantity, Sku};

/// Most lines one order may have: the whole order must fit one atomic
/// append, and DynamoDB takes at most 100 items per transaction. Placing an
/// order writes its event, then per line the SKU stream's head check, the
/// reservation event and the inline inventory row, plus the idempotency
/// record: 2 + 3 × 32 = 98 items.
pub const ORDER_LINES_MAX: usize = 32;

/// Longest cancellation reason.
pub const CANCEL_REASON_MAX_LEN: usize = 500;

// ---- events: a storage contract ------------------------------------------

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    /// The SKU.
    pub sku: Sku,
    /// Units.
    pub quantity: Quantity,
    /// Price per unit in cents.
    pub unit_price_cents: Cents,
}

impl OrderLine {
    /// quantity × unit price.
    pub fn total_cents(&self) -> u64 {
        u64::from(self.quantity.get()) * self.unit_price_cents.get()
    }
}

/// What happened to an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum OrderEvent {
    /// The order exists and its lines' stock is reserved. Schema 2.
    OrderPlaced {
        /// The order.
        order_id: OrderId,
        /// Who ordered.
        customer_id: CustomerId,
        /// What was ordered.
        lines: Vec<OrderLine>,
        /// The prices' currency (schema 2; schema 1 orders were USD).
        currency: Currency,
    },
    /// Payment confirmed.
    OrderConfirmed {},
    /// Cancelled; the lines' reservations were released.
    OrderCancelled {
        /// Why, when given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// The lines whose stock was released.
        lines: Vec<OrderLine>,
    },
    /// Shipped; the lines' reservations were committed.
    OrderShipped {},
    /// Migration: an order still open in a legacy system, with its stock
    /// reserved (see the module documentation). Schema 1.
    OrderImported {
        /// The order.
        order_id: OrderId,
        /// Who ordered.
        customer_id: CustomerId,
        /// What was ordered.
        lines: Vec<OrderLine>,
        /// The prices' currency.
        currency: Currency,
        /// Where the legacy system had got to: placed or confirmed.
        status: OpenStatus,
        /// When the legacy system took the order (ms since epoch): the order's
        /// placing time in the read models, and the day its sale is booked on.
        placed_at_ms: i64,
    },
}

/// The statuses an order can be imported in: only open orders come over
/// (a closed order holds no stock and changes nothing any more).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpenStatus {
    /// Placed, not paid.
    Placed,
    /// Paid, not shipped.
    Confirmed,
}

impl OpenStatus {
    /// The lifecycle status this is.
    pub fn status(self) -> OrderStatus {
        match self {
            Self::Placed => OrderStatus::Placed,
            Self::Confirmed => OrderStatus::Confirmed,
        }
    }
}

/// `OrderPlaced` schema 1 → 2: orders before currencies were in USD.
fn order_placed_v1_to_v2(mut data: Value) -> Result<Value, String> {
    let Value::Object(fields) = &mut data else {
        return Err("payload is not an object".to_owned());
    };
    fields
        .entry("currency")
        .or_insert_with(|| Value::String(Currency::usd().as_str().to_owned()));
    Ok(data)
}

static UPCASTERS: LazyLock<Upcasters> =
    LazyLock::new(|| Upcasters::new().step("OrderPlaced", 1, order_placed_v1_to_v2));

// ---- state and evolve ------------------------------------------------------

/// Where an order is in its lifecycle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// No order yet.
    #[default]
    New,
    /// Placed, stock reserved.
    Placed,
    /// Paid.
    Confirmed,
    /// Cancelled, stock released.
    Cancelled,
    /// Shipped, stock committed.
    Shipped,
}

impl OrderStatus {
    /// The status as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Placed => "placed",
            Self::Confirmed => "confirmed",
            Self::Cancelled => "cancelled",
            Self::Shipped => "shipped",
        }
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An order's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderState {
    /// Lifecycle status.
    pub status: OrderStatus,
    /// Who ordered (set once placed).
    pub customer_id: Option<CustomerId>,
    /// The lines.
    pub lines: Vec<OrderLine>,
    /// The currency.
    pub currency: Currency,
}

impl OrderState {
    /// Sum of the lines.
    pub fn total_cents(&self) -> u64 {
        self.lines.iter().map(OrderLine::total_cents).sum()
    }
}

/// A command on the order `order_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderCommand {
    /// The order (its stream is `order-<order_id>`).
    pub order_id: OrderId,
    /// What to do.
    pub action: OrderAction,
}

impl OrderCommand {
    /// `action` on `order_id`.
    pub fn new(order_id: OrderId, action: OrderAction) -> Self {
        Self { order_id, action }
    }
}

/// What a command does to an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderAction {
    /// Place the order.
    Place {
        /// Who orders.
        customer_id: CustomerId,
        /// 1–32 lines, each SKU once.
        lines: Vec<OrderLine>,
        /// The prices' currency.
        currency: Currency,
    },
    /// Payment received.
    Confirm,
    /// Cancel, releasing stock.
    Cancel {
        /// Why.
        reason: Option<String>,
    },
    /// Ship, committing stock.
    Ship,
}

impl OrderAction {
    fn name(&self) -> &'static str {
        match self {
            Self::Place { .. } => "place",
            Self::Confirm => "confirm",
            Self::Cancel { .. } => "cancel",
            Self::Ship => "ship",
        }
    }
}

/// The order decider.
pub struct Order;

impl Decider for Order {
    type State = OrderState;
    type Event = OrderEvent;
    type Command = OrderCommand;
    type Error = DomainError;

    const CATEGORY: &'static str = "order";
    const STATE_SCHEMA: u32 = 1;

    fn evolve(mut state: OrderState, event: &OrderEvent) -> OrderState {
        match event {
            OrderEvent::OrderPlaced {
                customer_id,
                lines,
                currency,
                ..
            } => {
                state.status = OrderStatus::Placed;
                state.customer_id = Some(customer_id.clone());
                state.lines.clone_from(lines);
                state.currency = currency.clone();
            }
            OrderEvent::OrderConfirmed {} => state.status = OrderStatus::Confirmed,
            OrderEvent::OrderCancelled { .. } => state.status = OrderStatus::Cancelled,
            OrderEvent::OrderShipped {} => state.status = OrderStatus::Shipped,
            OrderEvent::OrderImported {
                customer_id,
                lines,
                currency,
                status,
                ..
            } => {
                state.status = status.status();
                state.customer_id = Some(customer_id.clone());
                state.lines.clone_from(lines);
                state.currency = currency.clone();
            }
        }
        state
    }

    fn decide(state: &OrderState, command: &OrderCommand) -> Result<Vec<OrderEvent>, DomainError> {
        use OrderStatus::{Cancelled, Confirmed, New, Placed, Shipped};
        let order_id = &command.order_id;
        let invalid = || DomainError::InvalidTransition {
            command: command.action.name(),
            from: state.status,
        };
        match (&command.action, state.status) {
            (
                OrderAction::Place {
                    customer_id,
                    lines,
                    currency,
                },
                New,
            ) => {
                check_lines(lines)?;
                Ok(vec![OrderEvent::OrderPlaced {
                    order_id: order_id.clone(),
                    customer_id: customer_id.clone(),
                    lines: lines.clone(),
                    currency: currency.clone(),
                }])
            }
            (OrderAction::Place { .. }, _) => Err(DomainError::OrderAlreadyExists {
                order_id: order_id.clone(),
            }),
            (_, New) => Err(DomainError::OrderNotFound {
                order_id: order_id.clone(),
            }),
            (OrderAction::Confirm, Placed) => Ok(vec![OrderEvent::OrderConfirmed {}]),
            (OrderAction::Cancel { reason }, Placed | Confirmed) => Ok(vec![OrderEvent::OrderCancelled {
                reason: reason.clone(),
                lines: state.lines.clone(),
            }]),
            (OrderAction::Ship, Confirmed) => Ok(vec![OrderEvent::OrderShipped {}]),
            // Repeating the command that led to the current status changes nothing.
            (OrderAction::Confirm, Confirmed)
            | (OrderAction::Cancel { .. }, Cancelled)
            | (OrderAction::Ship, Shipped) => Ok(vec![]),
            _ => Err(invalid()),
        }
    }

    fn event_schema(event_type: &str) -> u32 {
        match event_type {
            "OrderPlaced" => 2,
            _ => 1,
        }
    }

    fn upcasters() -> &'static Upcasters {
        &UPCASTERS
    }
}

/// An open order as a legacy system holds it, to be imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderImport {
    /// Who ordered.
    pub customer_id: CustomerId,
    /// 1–32 lines, each SKU once.
    pub lines: Vec<OrderLine>,
    /// The prices' currency.
    pub currency: Currency,
    /// Placed or confirmed.
    pub status: OpenStatus,
    /// When the legacy system took the order (ms since epoch).
    pub placed_at_ms: i64,
}

impl Order {
    /// Decides the migration of a legacy open order: `OrderImported` on a
    /// stream that does not exist yet. Not an API command: only `tally
    /// import` calls it, and appends the lines' reservations with it.
    pub fn decide_import(
        state: &OrderState,
        order_id: &OrderId,
        import: &OrderImport,
    ) -> Result<Vec<OrderEvent>, DomainError> {
        if state.status != OrderStatus::New {
            return Err(DomainError::OrderAlreadyExists {
                order_id: order_id.clone(),
            });
        }
        check_lines(&import.lines)?;
        Ok(vec![OrderEvent::OrderImported {
            order_id: order_id.clone(),
            customer_id: import.customer_id.clone(),
            lines: import.lines.clone(),
            currency: import.currency.clone(),
            status: import.status,
            placed_at_ms: import.placed_at_ms,
        }])
    }
}

fn check_lines(lines: &[OrderLine]) -> Result<(), DomainError> {
    if lines.is_empty() {
        return Err(DomainError::InvalidLines {
            reason: "an order needs at least one line",
        });
    }
    if lines.len() > ORDER_LINES_MAX {
        return Err(DomainError::InvalidLines {
            reason: "an order may have at most 32 lines",
        });
    }
    let distinct: BTreeSet<&Sku> = lines.iter().map(|l| &l.sku).collect();
    if distinct.len() != lines.len() {
        return Err(DomainError::InvalidLines {
            reason: "each SKU may appear on one line only",
        });
    }
    Ok(())
}
