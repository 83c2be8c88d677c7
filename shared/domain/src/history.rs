//! A stream's history read as its aggregate: the state after a prefix of its
//! events, whatever the stream's category (time travel for operators:
//! `tally stream state --at`).
//!
//! Pure: the caller reads the events; this only folds them with the
//! aggregate's own `evolve`, upcasting on the way in. It never decides:
//! a past state is for reading, not for commands.

use serde_json::Value;
use tally_core::{Decider, EventEnvelope, StoreError, StreamId, fold_events};

use crate::inventory::Inventory;
use crate::order::Order;

/// Why a history cannot be read as a state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// No aggregate has this stream's category.
    #[error("no aggregate has the stream category {0:?} (known: inventory, order)")]
    UnknownCategory(String),
    /// A stored event does not decode (see [`StoreError::Corrupt`]).
    #[error(transparent)]
    Corrupt(#[from] StoreError),
    /// The state does not serialise.
    #[error("state does not serialise: {0}")]
    Serialise(#[source] serde_json::Error),
}

/// The state of `stream`'s aggregate after `events` (its history from
/// version 1, in order), as JSON.
pub fn aggregate_state(stream: &StreamId, events: &[EventEnvelope]) -> Result<Value, StateError> {
    match stream.category() {
        Inventory::CATEGORY => to_json(&fold_events::<Inventory>(Default::default(), events)?),
        Order::CATEGORY => to_json(&fold_events::<Order>(Default::default(), events)?),
        other => Err(StateError::UnknownCategory(other.to_owned())),
    }
}

fn to_json(state: &impl serde::Serialize) -> Result<Value, StateError> {
    serde_json::to_value(state).map_err(StateError::Serialise)
}
