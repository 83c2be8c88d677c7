//! The command loop: load → decide → append, and on a version conflict load
//! and decide again, a bounded number of times with jittered backoff.
//!
//! Deciding is pure (see [`crate::decider`]); this module does the I/O around
//! it. A conflict is never a lost write: the loser re-decides on the winner's
//! state, and a caller that exhausts its attempts is told so, not given a 500.

use std::future::Future;
use std::time::Duration;

use crate::decider::{Decider, decode_event, encode_event};
use crate::envelope::{EventEnvelope, Metadata, seal};
use crate::id::StreamId;
use crate::snapshot::{Snapshot, SnapshotPolicy};
use crate::store::{EventStore, StoreError, StreamAppend};

/// Why a command did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E> {
    /// The domain rejected the command (HTTP 422). Nothing was written.
    #[error("{0}")]
    Rejected(E),
    /// The client's `If-Match` version is not the stream's head (HTTP 409).
    #[error("stream {stream} is at version {actual}, not {expected}")]
    VersionMismatch {
        /// The stream.
        stream: StreamId,
        /// What the client expected.
        expected: u64,
        /// The actual head.
        actual: u64,
    },
    /// Every attempt lost a race with another writer (HTTP 409); the client may retry.
    #[error("stream {stream} stayed contended after {attempts} attempts")]
    Contended {
        /// The contended stream.
        stream: StreamId,
        /// Attempts made.
        attempts: u32,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How often and how patiently to retry after a version conflict.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in total, the first included.
    pub max_attempts: u32,
    /// Backoff ceiling for the first retry; doubles each retry.
    pub base_delay: Duration,
    /// Largest backoff ceiling.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 30,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(100),
        }
    }
}

impl RetryPolicy {
    /// "Full jitter" backoff before retry `retry` (1-based): uniform in
    /// `[0, min(max_delay, base_delay · 2^(retry-1))]`, so contenders spread
    /// out instead of colliding again in lockstep.
    pub fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self
            .base_delay
            .saturating_mul(1u32 << retry.saturating_sub(1).min(20))
            .min(self.max_delay);
        let micros = u64::try_from(ceiling.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(fastrand::u64(0..=micros))
    }
}

/// Runs `attempt` (one load → decide → append) until it succeeds, fails for
/// another reason than a version conflict, or runs out of attempts.
pub async fn retry_on_conflict<T, E, F, Fut>(policy: &RetryPolicy, mut attempt: F) -> Result<T, CommandError<E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, CommandError<E>>>,
{
    let mut attempts = 0;
    loop {
        attempts += 1;
        match attempt().await {
            Err(CommandError::Store(StoreError::WrongExpectedVersion { stream, .. })) => {
                if attempts >= policy.max_attempts {
                    return Err(CommandError::Contended { stream, attempts });
                }
                tracing::debug!(%stream, attempts, "version conflict; deciding again");
                tokio::time::sleep(policy.backoff(attempts)).await;
            }
            other => return other,
        }
    }
}

/// An aggregate rehydrated from its stream.
#[derive(Debug, Clone)]
pub struct Aggregate<D: Decider> {
    /// The stream.
    pub stream_id: StreamId,
    /// The state at `version`.
    pub state: D::State,
    /// The head version (0: the stream does not exist yet).
    pub version: u64,
    /// The head event's hash, which the next event chains from.
    pub head_hash: Option<String>,
    /// The version of the newest stored snapshot (0: none).
    pub snapshot_version: u64,
}

/// Events a decision produced, ready to append, with the post-state.
#[derive(Debug, Clone)]
pub struct Prepared<D: Decider> {
    /// The append for the store (with a snapshot when the policy says so).
    pub append: StreamAppend,
    /// The state after the new events.
    pub state: D::State,
}

impl<D: Decider> Aggregate<D> {
    /// Seals `events` after this aggregate's head, folds them into the state,
    /// and attaches a snapshot of the post-state when `policy` says one is due.
    pub fn prepare(
        &self,
        events: &[D::Event],
        metadata: &Metadata,
        now_ms: i64,
        policy: SnapshotPolicy,
    ) -> Result<Prepared<D>, StoreError> {
        let new_events = events
            .iter()
            .map(encode_event::<D>)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::InvalidAppend(format!("event does not serialise: {e}")))?;
        let sealed = seal(
            &self.stream_id,
            self.version,
            self.head_hash.as_deref(),
            new_events,
            metadata,
            now_ms,
        );
        let state = events.iter().fold(self.state.clone(), D::evolve);
        let new_version = self.version + events.len() as u64;
        let snapshot = if policy.due(self.snapshot_version, new_version) {
            let state = serde_json::to_value(&state)
                .map_err(|e| StoreError::InvalidAppend(format!("state does not serialise: {e}")))?;
            Some(Snapshot {
                version: new_version,
                schema: D::STATE_SCHEMA,
                state,
            })
        } else {
            None
        };
        Ok(Prepared {
            append: StreamAppend {
                stream_id: self.stream_id.clone(),
                expected_version: self.version,
                events: sealed,
                snapshot,
                view: None,
            },
            state,
        })
    }
}

/// Folds stored events into a state, upcasting each payload first.
pub fn fold_events<'a, D: Decider>(
    state: D::State,
    events: impl IntoIterator<Item = &'a EventEnvelope>,
) -> Result<D::State, StoreError> {
    events.into_iter().try_fold(state, |state, envelope| {
        let event = decode_event::<D>(&envelope.event_type, envelope.schema, &envelope.data).map_err(|e| {
            StoreError::Corrupt {
                stream: envelope.stream_id.clone(),
                version: envelope.version,
                reason: e.to_string(),
            }
        })?;
        Ok(D::evolve(state, &event))
    })
}

/// Loads an aggregate from its newest usable snapshot. A snapshot of an
/// unknown schema, or one that does not deserialise, is ignored and the stream
/// is replayed from version 1: a snapshot is a cache, never a failure.
pub async fn load_aggregate<D: Decider>(
    store: &(impl EventStore + ?Sized),
    stream_id: &StreamId,
) -> Result<Aggregate<D>, StoreError> {
    let loaded = store.load(stream_id).await?;
    let version = loaded.version();
    let head_hash = loaded.head_hash().map(str::to_owned);
    let usable = loaded.snapshot.as_ref().and_then(|snapshot| {
        (snapshot.schema == D::STATE_SCHEMA)
            .then(|| serde_json::from_value::<D::State>(snapshot.state.clone()).ok())
            .flatten()
            .map(|state| (snapshot.version, state))
    });
    let (state, snapshot_version) = match usable {
        Some((snapshot_version, state)) => {
            let after = loaded.events.iter().filter(|e| e.version > snapshot_version);
            (fold_events::<D>(state, after)?, snapshot_version)
        }
        None if loaded.snapshot.is_none() => (fold_events::<D>(D::State::default(), &loaded.events)?, 0),
        None => {
            tracing::warn!(%stream_id, "unusable snapshot; replaying the whole stream");
            let all = store.read_range(stream_id, 1, None).await?;
            (fold_events::<D>(D::State::default(), &all)?, 0)
        }
    };
    Ok(Aggregate {
        stream_id: stream_id.clone(),
        state,
        version,
        head_hash,
        snapshot_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_under_its_ceiling() {
        let policy = RetryPolicy::default();
        for retry in 1..40 {
            assert!(policy.backoff(retry) <= policy.max_delay);
        }
        assert!(policy.backoff(1) <= policy.base_delay);
    }
}
