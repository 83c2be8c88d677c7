//! The per-stream SHA-256 hash chain verifier.
//!
//! Each event's hash covers the previous event's hash, so changing any stored
//! field of event *v* breaks the chain at exactly *v*: the verifier names the
//! first version whose stored hash does not match, which is the first tampered
//! (or missing) event.

use crate::envelope::{EventEnvelope, GENESIS_HASH};
use crate::id::StreamId;

/// The first place a stream's chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("hash chain of {stream} broken at version {version}: {reason}")]
pub struct ChainBreak {
    /// The broken stream.
    pub stream: StreamId,
    /// The first version that does not verify.
    pub version: u64,
    /// What is wrong there.
    pub reason: String,
}

/// Verifies a whole stream, given in version order from version 1.
pub fn verify_chain(events: &[EventEnvelope]) -> Result<(), ChainBreak> {
    let mut prev = GENESIS_HASH.to_owned();
    for (event, expected_version) in events.iter().zip(1u64..) {
        if event.version != expected_version {
            return Err(ChainBreak {
                stream: event.stream_id.clone(),
                version: expected_version,
                reason: format!("missing; next stored version is {}", event.version),
            });
        }
        let recomputed = event.compute_hash(&prev);
        if recomputed != event.hash {
            return Err(ChainBreak {
                stream: event.stream_id.clone(),
                version: event.version,
                reason: "stored hash does not match the event's content".to_owned(),
            });
        }
        prev.clone_from(&event.hash);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::envelope::{Metadata, NewEvent, seal};

    fn stream(n: u64) -> Vec<EventEnvelope> {
        let id = StreamId::parse("test-1").expect("valid");
        let events = (0..n)
            .map(|i| NewEvent {
                event_type: "Counted".into(),
                schema: 1,
                data: json!({ "n": i }),
            })
            .collect();
        seal(&id, 0, None, events, &Metadata::default(), 1_700_000_000_000)
    }

    #[test]
    fn an_untouched_chain_verifies() {
        assert_eq!(verify_chain(&stream(5)), Ok(()));
    }

    #[test]
    fn tampered_data_is_named_by_version() {
        let mut events = stream(5);
        events[2].data = json!({ "n": 99 });
        let broken = verify_chain(&events).expect_err("tampered");
        assert_eq!(broken.version, 3);
    }

    #[test]
    fn a_missing_event_is_named() {
        let mut events = stream(5);
        events.remove(1);
        assert_eq!(verify_chain(&events).expect_err("gap").version, 2);
    }

    #[test]
    fn appending_continues_the_chain() {
        let first = stream(2);
        let id = first[0].stream_id.clone();
        let more = seal(
            &id,
            2,
            Some(&first[1].hash),
            vec![NewEvent {
                event_type: "Counted".into(),
                schema: 1,
                data: json!({ "n": 2 }),
            }],
            &Metadata::default(),
            1,
        );
        let all: Vec<_> = first.into_iter().chain(more).collect();
        assert_eq!(verify_chain(&all), Ok(()));
    }
}
