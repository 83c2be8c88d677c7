//! Upcasting: stored payloads are upgraded step by step (`schema` 1 → 2 → …)
//! to the current shape before they are deserialised.
//!
//! Stored events are never rewritten (the hash chain covers them); each
//! reader upcasts on the way in. A step is a pure function of the JSON payload
//! registered for one (event type, schema) pair.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::Value;

/// One upcasting step: the payload at schema `n` → the payload at `n + 1`.
pub type UpcastStep = fn(Value) -> Result<Value, String>;

/// Why a stored payload could not be read.
#[derive(Debug, thiserror::Error)]
pub enum UpcastError {
    /// An upcasting step refused the payload.
    #[error("cannot upcast {event_type} from schema {schema}: {reason}")]
    Step {
        /// The event type.
        event_type: String,
        /// The schema the failing step started from.
        schema: u32,
        /// The step's explanation.
        reason: String,
    },
    /// The upcast payload does not deserialise into the current event type.
    #[error("cannot decode {event_type} (stored schema {schema}): {source}")]
    Decode {
        /// The event type.
        event_type: String,
        /// The stored schema.
        schema: u32,
        /// The deserialisation error.
        #[source]
        source: serde_json::Error,
    },
}

/// The chain of upcasting steps for a set of event types.
#[derive(Default)]
pub struct Upcasters {
    // Keyed by type first so a lookup borrows the type name: decoding is on
    // every replay's hot path and must not allocate for it.
    steps: HashMap<String, HashMap<u32, UpcastStep>>,
}

impl Upcasters {
    /// An empty chain: every payload is taken as current.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the step from `from_schema` to `from_schema + 1` for `event_type`.
    pub fn step(mut self, event_type: &str, from_schema: u32, step: UpcastStep) -> Self {
        self.steps
            .entry(event_type.to_owned())
            .or_default()
            .insert(from_schema, step);
        self
    }

    /// Applies every registered step from `schema` on, in order. A payload
    /// already current is returned borrowed: replay must not copy it.
    pub fn upcast<'a>(&self, event_type: &str, schema: u32, data: &'a Value) -> Result<Cow<'a, Value>, UpcastError> {
        let mut data = Cow::Borrowed(data);
        let Some(steps) = self.steps.get(event_type) else {
            return Ok(data);
        };
        let mut schema = schema;
        while let Some(step) = steps.get(&schema) {
            data = Cow::Owned(step(data.into_owned()).map_err(|reason| UpcastError::Step {
                event_type: event_type.to_owned(),
                schema,
                reason,
            })?);
            schema += 1;
        }
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn add_b(mut v: Value) -> Result<Value, String> {
        v["b"] = json!(2);
        Ok(v)
    }
    fn add_c(mut v: Value) -> Result<Value, String> {
        v["c"] = json!(3);
        Ok(v)
    }

    #[test]
    fn steps_apply_in_order_from_the_stored_schema() {
        let chain = Upcasters::new().step("E", 1, add_b).step("E", 2, add_c);
        let stored = json!({"a": 1});
        let from_1 = chain.upcast("E", 1, &stored).expect("upcast");
        assert_eq!(*from_1, json!({"a": 1, "b": 2, "c": 3}));
        let from_2 = chain.upcast("E", 2, &stored).expect("upcast");
        assert_eq!(*from_2, json!({"a": 1, "c": 3}));
        let other = chain.upcast("F", 1, &stored).expect("upcast");
        assert!(matches!(other, Cow::Borrowed(_)), "a current payload is not copied");
    }
}
