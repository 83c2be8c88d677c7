//! tally-domain: the example domain, inventory that can never be oversold and
//! orders, as pure deciders.
//!
//! Each aggregate lives in one file, in reading order: events (a storage
//! contract: renaming one is a schema change), state and `evolve`, then
//! `decide`. The read models' pure logic (rows and how events change them) and
//! the query port the API reads through live in [`views`]; [`recompute`]
//! holds those models in memory (to verify a stored one) and [`history`]
//! reads any stream's events as its aggregate's state. Nothing here does
//! I/O, reads a clock or knows about AWS.

pub mod error;
pub mod history;
pub mod ids;
pub mod inventory;
pub mod order;
pub mod recompute;
pub mod views;

pub use error::DomainError;
pub use ids::{Cents, Currency, CustomerId, OrderId, ProductName, Quantity, Sku};
pub use inventory::{Inventory, InventoryAction, InventoryCommand, InventoryEvent, InventoryState};
pub use order::{
    OpenStatus, Order, OrderAction, OrderCommand, OrderEvent, OrderImport, OrderLine, OrderState, OrderStatus,
};
