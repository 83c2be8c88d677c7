//! The projection runtime: exactly-once effect on read models over an
//! at-least-once, unordered delivery (SQS, a replay, an in-process tail).
//!
//! Each projection keeps a checkpoint per stream: the last version applied.
//! For an incoming event at version *v* and checkpoint *c*:
//! *v ≤ c* is a duplicate and is skipped; *v = c + 1* is applied; *v > c + 1*
//! is a gap, repaired by reading *c+1 … v−1* from the event store and applying
//! them first. The sink writes the model change and the new checkpoint in one
//! atomic step conditioned on the checkpoint it expects, so two deliveries of
//! one event racing each other apply it once.

use async_trait::async_trait;

use crate::envelope::EventEnvelope;
use crate::id::StreamId;
use crate::store::{EventStore, StoreError};

/// Why an event could not be projected.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// The event (or a repaired one) cannot be decoded or applied: a poison
    /// event. Retrying will not help until the cause is fixed.
    #[error("cannot apply {stream} v{version}: {reason}")]
    Poison {
        /// The stream.
        stream: StreamId,
        /// The version.
        version: u64,
        /// Why.
        reason: String,
    },
    /// The store does not hold the events needed to close a gap (yet).
    #[error("gap in {stream}: versions {from}..{to} not found in the event store")]
    Unrepairable {
        /// The stream.
        stream: StreamId,
        /// First missing version.
        from: u64,
        /// Last missing version.
        to: u64,
    },
    /// Reading the event store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The read-model backend failed; retry.
    #[error("read model failure: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The result of a conditional apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// The change and the checkpoint were written.
    Applied,
    /// The checkpoint was not the expected one (a concurrent delivery won); nothing written.
    CheckpointMoved,
}

/// What the runtime did with one delivered event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Applied, after `repaired` missing events were read from the store and applied first.
    Applied {
        /// Events applied to close a gap before this one.
        repaired: u64,
    },
    /// Already applied: skipped.
    Duplicate,
    /// The projection does not follow this stream.
    Ignored,
}

/// One projection's read model on one backend.
#[async_trait]
pub trait ProjectionSink: Send + Sync {
    /// The projection's name, e.g. `order_summary` (the checkpoint namespace).
    fn name(&self) -> &str;

    /// Whether the projection follows `stream` at all.
    fn follows(&self, stream: &StreamId) -> bool;

    /// The last version applied for `stream` (0: none).
    async fn checkpoint(&self, stream: &StreamId) -> Result<u64, ProjectionError>;

    /// Applies `event` and moves the checkpoint from `event.version - 1` to
    /// `event.version`, atomically, only if the checkpoint is still `event.version - 1`.
    async fn apply(&self, event: &EventEnvelope) -> Result<ApplyOutcome, ProjectionError>;
}

/// Delivers one event to a projection with exactly-once effect.
pub async fn deliver(
    store: &(impl EventStore + ?Sized),
    sink: &(impl ProjectionSink + ?Sized),
    event: &EventEnvelope,
) -> Result<Delivery, ProjectionError> {
    if !sink.follows(&event.stream_id) {
        return Ok(Delivery::Ignored);
    }
    loop {
        let checkpoint = sink.checkpoint(&event.stream_id).await?;
        if event.version <= checkpoint {
            return Ok(Delivery::Duplicate);
        }
        let mut repaired = 0;
        let mut raced = false;
        if event.version > checkpoint + 1 {
            let missing = repair_gap_events(store, &event.stream_id, checkpoint + 1, event.version - 1).await?;
            for earlier in &missing {
                if sink.apply(earlier).await? == ApplyOutcome::CheckpointMoved {
                    raced = true;
                    break;
                }
                repaired += 1;
            }
        }
        if !raced && sink.apply(event).await? == ApplyOutcome::Applied {
            return Ok(Delivery::Applied { repaired });
        }
        // A concurrent delivery moved the checkpoint: look again.
    }
}

async fn repair_gap_events(
    store: &(impl EventStore + ?Sized),
    stream: &StreamId,
    from: u64,
    to: u64,
) -> Result<Vec<EventEnvelope>, ProjectionError> {
    let missing = store.read_range(stream, from, Some(to)).await?;
    let complete = missing.len() as u64 == to - from + 1 && missing.iter().zip(from..).all(|(e, v)| e.version == v);
    if !complete {
        return Err(ProjectionError::Unrepairable {
            stream: stream.clone(),
            from,
            to,
        });
    }
    tracing::info!(%stream, from, to, "repairing gap from the event store");
    Ok(missing)
}
