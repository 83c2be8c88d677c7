//! The Decider: a pure, synchronous model of one aggregate.
//!
//! `decide(state, command)` returns the events a command causes (or a domain
//! error), `evolve(state, event)` folds one event into the state. Neither may
//! do I/O, read a clock or draw randomness: time and ids come in through the
//! command. Everything async lives in the stores and the command loop.

use serde::de::value::BorrowedStrDeserializer;
use serde::de::{DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
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
    let data = D::upcasters().upcast(event_type, schema, data)?;
    let tagged = Tagged {
        event_type,
        data: &data,
        fields_read: 0,
    };
    D::Event::deserialize(tagged).map_err(|source| UpcastError::Decode {
        event_type: event_type.to_owned(),
        schema,
        source,
    })
}

/// Presents a stored (type, data) pair to serde as the adjacently tagged map
/// `{"type": …, "data": …}` the event enums derive, without building that
/// map or copying the payload: decoding is every replay's hot path.
struct Tagged<'a> {
    event_type: &'a str,
    data: &'a Value,
    fields_read: u8,
}

impl<'de> Deserializer<'de> for Tagged<'de> {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_map(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

impl<'de> MapAccess<'de> for Tagged<'de> {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Self::Error> {
        let key = match self.fields_read {
            0 => "type",
            1 => "data",
            _ => return Ok(None),
        };
        seed.deserialize(BorrowedStrDeserializer::new(key)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Self::Error> {
        self.fields_read += 1;
        match self.fields_read {
            1 => seed.deserialize(BorrowedStrDeserializer::new(self.event_type)),
            _ => seed.deserialize(self.data),
        }
    }
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
