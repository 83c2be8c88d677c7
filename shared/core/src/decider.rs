//! The Decider: a pure, synchronous model of one aggregate.
//!
//! `decide(state, command)` returns the events a command causes (or a domain
//! error), `evolve(state, event)` folds one event into the state. Neither may
//! do I/O, read a clock or draw randomness: time and ids come in through the
//! command. Everything async lives in the stores and the command loop.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::envelope::NewEvent;
use crate::upcast::{UpcastError, Upcasters};

/// A pure aggregate model.
pub trait Decider {
    /// The aggregate's state; `Default` is the state of an empty stream.
    type State: Default + Clone + Serialize + DeserializeOwned + Send + Sync;
    /// The aggregate's events: a serde enum tagged `type`, payload in `data`.
    type Event: Serialize + DeserializeOwned + Clone + Send + Sync;
    /// The commands the aggregate accepts.
    type Command;
    /// The domain's rejection type.
    type Error;

    /// The stream category, e.g. `inventory` (streams are `<category>-<id>`).
    const CATEGORY: &'static str;
    /// Schema version of `State` as stored in snapshots. Bump it whenever the
    /// state's shape changes: older snapshots are then ignored (full replay).
    const STATE_SCHEMA: u32;

    /// Folds one event into the state.
    fn evolve(state: Self::State, event: &Self::Event) -> Self::State;

    /// Decides which events a command causes, or rejects it.
    fn decide(state: &Self::State, command: &Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    /// The current schema version of an event type's payload.
    fn event_schema(event_type: &str) -> u32;

    /// The upcasters that bring older payloads of these events up to date.
    fn upcasters() -> &'static Upcasters;
}

/// Serialises a domain event into its storage form (type, schema, data).
pub fn encode_event<D: Decider>(event: &D::Event) -> Result<NewEvent, serde_json::Error> {
    let tagged = serde_json::to_value(event)?;
    let (event_type, data) = split_tagged(tagged)?;
    let schema = D::event_schema(&event_type);
    Ok(NewEvent {
        event_type,
        schema,
        data,
    })
}

/// Upcasts a stored payload to the current schema and deserialises it.
pub fn decode_event<D: Decider>(event_type: &str, schema: u32, data: &Value) -> Result<D::Event, UpcastError> {
    let data = D::upcasters().upcast(event_type, schema, data.clone())?;
    let mut tagged = serde_json::Map::with_capacity(2);
    tagged.insert("type".to_owned(), Value::String(event_type.to_owned()));
    tagged.insert("data".to_owned(), data);
    serde_json::from_value(Value::Object(tagged)).map_err(|source| UpcastError::Decode {
        event_type: event_type.to_owned(),
        schema,
        source,
    })
}

fn split_tagged(tagged: Value) -> Result<(String, Value), serde_json::Error> {
    use serde::de::Error as _;
    let Value::Object(mut map) = tagged else {
        return Err(serde_json::Error::custom("event must serialise to a tagged object"));
    };
    let Some(Value::String(event_type)) = map.remove("type") else {
        return Err(serde_json::Error::custom("event must carry a string `type` tag"));
    };
    let data = map.remove("data").unwrap_or(Value::Object(Default::default()));
    Ok((event_type, data))
}
