//! Inventory: one stream per SKU (`inventory-<sku>`).
//!
//! Invariant: `reserved ≤ on_hand`, always. A reservation beyond what is
//! available is rejected, and because every reservation is an append
//! conditioned on the stream's version, concurrent buyers can never oversell:
//! the loser of a race re-decides on the winner's state.
//!
//! The state is a few counters, not a list of open reservations: it is
//! stored as a snapshot on every event (DynamoDB items stop at 400 KB), and the
//! order stream already records which reservation each release or commit
//! settles (a cancel or ship is appended atomically with it, once).
//!
//! Migration: a SKU brought over from a legacy system starts its stream with
//! one `InventoryImported` (decided by [`Inventory::decide_import`], never by
//! an API command). Its `on_hand` is the physical count, units held by the
//! legacy system's open orders included; those orders are imported with
//! `OrderImported` and reserve their units here with ordinary
//! `StockReserved` events, through the same availability check as any order,
//! so an import can never leave `reserved > on_hand` either.

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use tally_core::{Decider, Upcasters};

use crate::error::DomainError;
use crate::ids::{OrderId, ProductName, Quantity, Sku};

// ---- events: a storage contract ------------------------------------------

/// What happened to a SKU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum InventoryEvent {
    /// The SKU now exists, with nothing on hand.
    SkuRegistered {
        /// The SKU.
        sku: Sku,
        /// Display name.
        name: ProductName,
    },
    /// Units arrived.
    StockReceived {
        /// Units received.
        quantity: Quantity,
    },
    /// Units set aside for an order.
    StockReserved {
        /// The order.
        order_id: OrderId,
        /// Units reserved.
        quantity: Quantity,
    },
    /// An order's reservation was given back (order cancelled).
    ReservationReleased {
        /// The order.
        order_id: OrderId,
        /// Units released.
        quantity: Quantity,
    },
    /// An order's reserved units left the warehouse (order shipped).
    ReservationCommitted {
        /// The order.
        order_id: OrderId,
        /// Units shipped.
        quantity: Quantity,
    },
    /// A count correction: on hand is now exactly `on_hand`.
    StockAdjusted {
        /// The counted units on hand.
        on_hand: u64,
        /// Why the count changed.
        reason: String,
    },
    /// Migration: the SKU came over from a legacy system with `on_hand` units
    /// (the physical count, including units its open orders hold). Starts a
    /// stream, like `SkuRegistered`, with the count already set.
    InventoryImported {
        /// The SKU.
        sku: Sku,
        /// Display name.
        name: ProductName,
        /// Units physically on hand in the legacy system.
        on_hand: u64,
    },
}

// ---- state and evolve ------------------------------------------------------

/// A SKU's stock position.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryState {
    /// Registered SKU and name; `None` until registered.
    pub registered: Option<(Sku, ProductName)>,
    /// Units physically on hand.
    pub on_hand: u64,
    /// Units reserved for open orders.
    pub reserved: u64,
}

impl InventoryState {
    /// Units that may still be reserved.
    pub fn available(&self) -> u64 {
        self.on_hand.saturating_sub(self.reserved)
    }
}

/// Largest on-hand count a correction may set.
pub const ON_HAND_MAX: u64 = 1_000_000_000_000;

/// Longest adjustment reason.
pub const REASON_MAX_LEN: usize = 500;

/// A command on the SKU `sku`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryCommand {
    /// The SKU the command is for (its stream is `inventory-<sku>`).
    pub sku: Sku,
    /// What to do.
    pub action: InventoryAction,
}

impl InventoryCommand {
    /// `action` on `sku`.
    pub fn new(sku: Sku, action: InventoryAction) -> Self {
        Self { sku, action }
    }
}

/// What a command does to a SKU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InventoryAction {
    /// Create the SKU.
    Register {
        /// Display name.
        name: ProductName,
    },
    /// Book arriving units.
    Receive {
        /// Units.
        quantity: Quantity,
    },
    /// Set units aside for an order.
    Reserve {
        /// The order.
        order_id: OrderId,
        /// Units.
        quantity: Quantity,
    },
    /// Give an order's reservation back.
    Release {
        /// The order.
        order_id: OrderId,
        /// Units.
        quantity: Quantity,
    },
    /// Ship an order's reserved units.
    Commit {
        /// The order.
        order_id: OrderId,
        /// Units.
        quantity: Quantity,
    },
    /// Correct the on-hand count after a stock take.
    Adjust {
        /// Counted units (≤ [`ON_HAND_MAX`]).
        on_hand: u64,
        /// Why.
        reason: String,
    },
}

/// The inventory decider.
pub struct Inventory;

static UPCASTERS: LazyLock<Upcasters> = LazyLock::new(Upcasters::new);

impl Decider for Inventory {
    type State = InventoryState;
    type Event = InventoryEvent;
    type Command = InventoryCommand;
    type Error = DomainError;

    const CATEGORY: &'static str = "inventory";
    const STATE_SCHEMA: u32 = 1;

    fn evolve(mut state: InventoryState, event: &InventoryEvent) -> InventoryState {
        match event {
            InventoryEvent::SkuRegistered { sku, name } => {
                state.registered = Some((sku.clone(), name.clone()));
            }
            InventoryEvent::StockReceived { quantity } => {
                state.on_hand += u64::from(quantity.get());
            }
            InventoryEvent::StockReserved { quantity, .. } => {
                state.reserved += u64::from(quantity.get());
            }
            InventoryEvent::ReservationReleased { quantity, .. } => {
                state.reserved = state.reserved.saturating_sub(u64::from(quantity.get()));
            }
            InventoryEvent::ReservationCommitted { quantity, .. } => {
                state.reserved = state.reserved.saturating_sub(u64::from(quantity.get()));
                state.on_hand = state.on_hand.saturating_sub(u64::from(quantity.get()));
            }
            InventoryEvent::StockAdjusted { on_hand, .. } => {
                state.on_hand = *on_hand;
            }
            InventoryEvent::InventoryImported { sku, name, on_hand } => {
                state.registered = Some((sku.clone(), name.clone()));
                state.on_hand = *on_hand;
            }
        }
        state
    }

    fn decide(state: &InventoryState, command: &InventoryCommand) -> Result<Vec<InventoryEvent>, DomainError> {
        let sku = &command.sku;
        match &command.action {
            InventoryAction::Register { name } => {
                if state.registered.is_some() {
                    return Err(DomainError::SkuAlreadyRegistered { sku: sku.clone() });
                }
                Ok(vec![InventoryEvent::SkuRegistered {
                    sku: sku.clone(),
                    name: name.clone(),
                }])
            }
            _ if state.registered.is_none() => Err(DomainError::SkuNotFound { sku: sku.clone() }),
            InventoryAction::Receive { quantity } => {
                if state.on_hand + u64::from(quantity.get()) > ON_HAND_MAX {
                    return Err(DomainError::StockLimitExceeded {
                        sku: sku.clone(),
                        max: ON_HAND_MAX,
                    });
                }
                Ok(vec![InventoryEvent::StockReceived { quantity: *quantity }])
            }
            InventoryAction::Reserve { order_id, quantity } => {
                let requested = u64::from(quantity.get());
                if requested > state.available() {
                    return Err(DomainError::InsufficientStock {
                        sku: sku.clone(),
                        requested,
                        available: state.available(),
                    });
                }
                Ok(vec![InventoryEvent::StockReserved {
                    order_id: order_id.clone(),
                    quantity: *quantity,
                }])
            }
            InventoryAction::Release { order_id, quantity } | InventoryAction::Commit { order_id, quantity } => {
                if u64::from(quantity.get()) > state.reserved {
                    return Err(DomainError::NoSuchReservation {
                        sku: sku.clone(),
                        order_id: order_id.clone(),
                        quantity: u64::from(quantity.get()),
                    });
                }
                let (order_id, quantity) = (order_id.clone(), *quantity);
                Ok(vec![if matches!(command.action, InventoryAction::Release { .. }) {
                    InventoryEvent::ReservationReleased { order_id, quantity }
                } else {
                    InventoryEvent::ReservationCommitted { order_id, quantity }
                }])
            }
            InventoryAction::Adjust { on_hand, reason } => {
                if *on_hand > ON_HAND_MAX {
                    return Err(DomainError::StockLimitExceeded {
                        sku: sku.clone(),
                        max: ON_HAND_MAX,
                    });
                }
                if *on_hand < state.reserved {
                    return Err(DomainError::AdjustmentBelowReserved {
                        sku: sku.clone(),
                        on_hand: *on_hand,
                        reserved: state.reserved,
                    });
                }
                if *on_hand == state.on_hand {
                    return Ok(vec![]);
                }
                Ok(vec![InventoryEvent::StockAdjusted {
                    on_hand: *on_hand,
                    reason: reason.clone(),
                }])
            }
        }
    }

    fn event_schema(_event_type: &str) -> u32 {
        1
    }

    fn upcasters() -> &'static Upcasters {
        &UPCASTERS
    }
}

impl Inventory {
    /// Decides the migration of a legacy SKU: `InventoryImported` on a stream
    /// that does not exist yet. Not an API command (the API's commands never
    /// set a count on a new SKU): only `tally import` calls it.
    pub fn decide_import(
        state: &InventoryState,
        sku: &Sku,
        name: &ProductName,
        on_hand: u64,
    ) -> Result<Vec<InventoryEvent>, DomainError> {
        if state.registered.is_some() {
            return Err(DomainError::SkuAlreadyRegistered { sku: sku.clone() });
        }
        if on_hand > ON_HAND_MAX {
            return Err(DomainError::StockLimitExceeded {
                sku: sku.clone(),
                max: ON_HAND_MAX,
            });
        }
        Ok(vec![InventoryEvent::InventoryImported {
            sku: sku.clone(),
            name: name.clone(),
            on_hand,
        }])
    }
}
