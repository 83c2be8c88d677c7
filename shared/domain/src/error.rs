//! The domain's rejections. Each variant is a case the client can act on; the
//! API maps each to exactly one status and `error` code.

use serde::Serialize;

use crate::ids::{OrderId, Sku};
use crate::order::OrderStatus;

/// Why the domain refused a command. A refused command writes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum DomainError {
    /// A reservation asked for more than is available (on hand − reserved).
    #[error("insufficient stock for {sku}: requested {requested}, available {available}")]
    InsufficientStock {
        /// The SKU.
        sku: Sku,
        /// Units requested.
        requested: u64,
        /// Units available.
        available: u64,
    },
    /// The command is not allowed in the aggregate's current status.
    #[error("cannot {command} an order that is {from}")]
    InvalidTransition {
        /// The command attempted.
        command: &'static str,
        /// The order's status.
        from: OrderStatus,
    },
    /// An order line names a SKU that was never registered.
    #[error("unknown SKU {sku}")]
    UnknownSku {
        /// The SKU.
        sku: Sku,
    },
    /// The command targets a SKU that was never registered.
    #[error("SKU {sku} not found")]
    SkuNotFound {
        /// The SKU.
        sku: Sku,
    },
    /// The command targets an order that does not exist.
    #[error("order {order_id} not found")]
    OrderNotFound {
        /// The order.
        order_id: OrderId,
    },
    /// The SKU is already registered.
    #[error("SKU {sku} is already registered")]
    SkuAlreadyRegistered {
        /// The SKU.
        sku: Sku,
    },
    /// An order with this id already exists.
    #[error("order {order_id} already exists")]
    OrderAlreadyExists {
        /// The order.
        order_id: OrderId,
    },
    /// A count correction would leave fewer units on hand than are reserved.
    #[error("cannot set {sku} on hand to {on_hand}: {reserved} units are reserved")]
    AdjustmentBelowReserved {
        /// The SKU.
        sku: Sku,
        /// Requested on-hand count.
        on_hand: u64,
        /// Units reserved.
        reserved: u64,
    },
    /// Receiving or counting would take on hand past the supported maximum.
    #[error("{sku} cannot hold more than {max} units")]
    StockLimitExceeded {
        /// The SKU.
        sku: Sku,
        /// The maximum.
        max: u64,
    },
    /// Release or commit of more units than the SKU has reserved in total
    /// (reservations are counted per SKU; the order stream records which
    /// order each belongs to, and settles it atomically with its own event).
    #[error("{sku} has fewer than {quantity} units reserved, so order {order_id} cannot settle them")]
    NoSuchReservation {
        /// The SKU.
        sku: Sku,
        /// The order.
        order_id: OrderId,
        /// Units named.
        quantity: u64,
    },
    /// An order must have 1–32 lines, each SKU at most once.
    #[error("invalid order lines: {reason}")]
    InvalidLines {
        /// What is wrong.
        reason: &'static str,
    },
}

impl DomainError {
    /// The stable machine-readable code, e.g. `insufficient_stock`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InsufficientStock { .. } => "insufficient_stock",
            Self::InvalidTransition { .. } => "invalid_transition",
            Self::UnknownSku { .. } => "unknown_sku",
            Self::SkuNotFound { .. } => "sku_not_found",
            Self::OrderNotFound { .. } => "order_not_found",
            Self::SkuAlreadyRegistered { .. } => "sku_already_registered",
            Self::OrderAlreadyExists { .. } => "order_already_exists",
            Self::AdjustmentBelowReserved { .. } => "adjustment_below_reserved",
            Self::NoSuchReservation { .. } => "no_such_reservation",
            Self::StockLimitExceeded { .. } => "stock_limit_exceeded",
            Self::InvalidLines { .. } => "invalid_lines",
        }
    }
}
