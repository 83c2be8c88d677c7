//! The command loop: load → decide → append, and on a version conflict load
//! and decide again, a bounded number of times with jittered backoff.
//!
//! Deciding is pure (see [`crate::decider`]); this module does the I/O around
//! it. A conflict is never a lost write: the loser re-decides on the winner's
//! state, and a caller that exhausts its attempts is told so, not given a 500.
//! Nothing here decides on state the hash chain does not vouch for, and a
//! refusal is only ever decided on state read fresh from the store.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::chain::{ChainBreak, verify_segment};
use crate::decider::{Decider, decode_event, encode_event};
use crate::envelope::{EventEnvelope, Metadata, seal_with_snapshot};
use crate::id::StreamId;
use crate::snapshot::{Snapshot, SnapshotPolicy};
use crate::store::{At, EventStore, LoadedStream, StoreError, StreamAppend};

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
/// another reason than a version conflict, or runs out of attempts. Every
/// load is fresh: for a command loop that reuses the item a lost race hands
/// back, see [`run_command`].
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

/// The command loop of the command path: load → decide → append, retried on
/// conflict, where a retry decides on the item the lost race handed back
/// (DynamoDB's `ALL_OLD`) instead of reading again.
///
/// Two rules keep that shortcut honest. A handed-back item is the version
/// *after* the one we loaded, not necessarily the head: a decision on it may
/// only lead to a write attempt, whose condition checks it. So a refusal
/// (the domain's [`CommandError::Rejected`], or an `If-Match`
/// [`CommandError::VersionMismatch`]) decided on a handed-back item is never
/// answered: the attempt runs again on fresh reads, and only a refusal
/// decided on fresh state reaches the caller. And nothing outlives the
/// command: the handed-back item lives in this loop, for the next attempt.
pub async fn run_command<T, E, F, Fut>(
    store: &Arc<dyn EventStore>,
    policy: &RetryPolicy,
    mut attempt: F,
) -> Result<T, CommandError<E>>
where
    F: FnMut(Arc<Attempt>) -> Fut,
    Fut: Future<Output = Result<T, CommandError<E>>>,
{
    let mut handed_back = None;
    let mut conflicts = 0;
    loop {
        let current = Arc::new(Attempt::new(Arc::clone(store), handed_back.take()));
        match attempt(Arc::clone(&current)).await {
            Err(CommandError::Store(StoreError::WrongExpectedVersion {
                stream,
                expected,
                winner,
            })) => {
                conflicts += 1;
                if conflicts >= policy.max_attempts {
                    return Err(CommandError::Contended {
                        stream,
                        attempts: conflicts,
                    });
                }
                tracing::debug!(%stream, conflicts, "version conflict; deciding again");
                handed_back = winner.and_then(|winner| current.hand_back(stream, expected, *winner));
                tokio::time::sleep(policy.backoff(conflicts)).await;
            }
            Err(CommandError::Rejected(_) | CommandError::VersionMismatch { .. })
                if current.decided_on_handed_back() =>
            {
                // A refusal writes nothing, so nothing downstream could
                // catch a wrong one: it is only answered from fresh state.
                tracing::debug!("refusal decided on a handed-back item; deciding again on fresh state");
            }
            other => return other,
        }
    }
}

/// One attempt of a [`run_command`] loop: where its decisions load streams from.
pub struct Attempt {
    store: Arc<dyn EventStore>,
    handed_back: Mutex<Option<(StreamId, LoadedStream)>>,
    used_handed_back: AtomicBool,
    loaded_heads: Mutex<HashMap<StreamId, (u64, Option<String>)>>,
}

impl Attempt {
    fn new(store: Arc<dyn EventStore>, handed_back: Option<(StreamId, LoadedStream)>) -> Self {
        Self {
            store,
            handed_back: Mutex::new(handed_back),
            used_handed_back: AtomicBool::new(false),
            loaded_heads: Mutex::new(HashMap::new()),
        }
    }

    /// The store the attempt appends to.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// Loads `stream`: from the item the previous attempt's lost race handed
    /// back when that item verifies, otherwise fresh from the store.
    pub async fn load<D: Decider>(&self, stream: &StreamId) -> Result<Aggregate<D>, StoreError> {
        let winner = match self.handed_back.lock() {
            Ok(mut slot) if slot.as_ref().is_some_and(|(s, _)| s == stream) => slot.take().map(|(_, w)| w),
            _ => None,
        };
        let aggregate = match winner.map(|w| rehydrate::<D>(stream, &w)) {
            Some(Ok(aggregate)) => {
                self.used_handed_back.store(true, Ordering::Relaxed);
                aggregate
            }
            Some(Err(distrust)) => {
                tracing::warn!(%stream, %distrust, "handed-back item does not verify; reading the stream");
                load_aggregate::<D>(self.store.as_ref(), stream).await?
            }
            None => load_aggregate::<D>(self.store.as_ref(), stream).await?,
        };
        if let Ok(mut heads) = self.loaded_heads.lock() {
            heads.insert(stream.clone(), (aggregate.version, aggregate.head_hash.clone()));
        }
        Ok(aggregate)
    }

    /// Whether any decision of this attempt was made on a handed-back item.
    pub fn decided_on_handed_back(&self) -> bool {
        self.used_handed_back.load(Ordering::Relaxed)
    }

    /// The winner of a lost race on `stream`, ready for the next attempt:
    /// only an item with a snapshot right after the version this attempt
    /// loaded (so the hash it must chain from is known and it can be
    /// checked like a fresh load).
    fn hand_back(&self, stream: StreamId, expected: u64, mut winner: LoadedStream) -> Option<(StreamId, LoadedStream)> {
        let heads = self.loaded_heads.lock().ok()?;
        let (loaded_version, loaded_hash) = heads.get(&stream)?;
        let follows = *loaded_version == expected && winner.events.first()?.version == expected + 1;
        (follows && winner.snapshot.is_some()).then(|| {
            winner.base_hash.clone_from(loaded_hash);
            (stream, winner)
        })
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
        // The last event's hash covers the snapshot's digest.
        let sealed = seal_with_snapshot(
            &self.stream_id,
            self.version,
            self.head_hash.as_deref(),
            new_events,
            metadata,
            now_ms,
            snapshot.as_ref(),
        );
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

/// Why a loaded stream cannot be decided on as it is: the caller replays.
#[derive(Debug, thiserror::Error)]
enum Distrust {
    /// The loaded events or the snapshot do not verify against the chain.
    #[error(transparent)]
    Chain(#[from] ChainBreak),
    /// The snapshot is of a schema this code does not know, or does not deserialise.
    #[error("unusable snapshot at version {0}")]
    UnusableSnapshot(u64),
}

/// The aggregate a verified [`LoadedStream`] describes.
fn rehydrate<D: Decider>(stream_id: &StreamId, loaded: &LoadedStream) -> Result<Aggregate<D>, Distrust> {
    loaded.verify(stream_id)?;
    let (state, snapshot_version) = match &loaded.snapshot {
        Some(snapshot) => {
            let state = (snapshot.schema == D::STATE_SCHEMA)
                .then(|| serde_json::from_value::<D::State>(snapshot.state.clone()).ok())
                .flatten()
                .ok_or(Distrust::UnusableSnapshot(snapshot.version))?;
            let after = loaded.events.iter().filter(|e| e.version > snapshot.version);
            let state = fold_events::<D>(state, after).map_err(|e| chain_break_of(stream_id, e))?;
            (state, snapshot.version)
        }
        None => {
            // verify() holds only from version 1 or from a known base hash;
            // without a snapshot the fold needs the events from version 1.
            if loaded.events.first().is_some_and(|e| e.version != 1) {
                return Err(Distrust::Chain(ChainBreak {
                    stream: stream_id.clone(),
                    version: 1,
                    reason: "no snapshot and no events from version 1".to_owned(),
                }));
            }
            let state =
                fold_events::<D>(D::State::default(), &loaded.events).map_err(|e| chain_break_of(stream_id, e))?;
            (state, 0)
        }
    };
    Ok(Aggregate {
        stream_id: stream_id.clone(),
        state,
        version: loaded.version(),
        head_hash: loaded.head_hash().map(str::to_owned),
        snapshot_version,
    })
}

fn chain_break_of(stream_id: &StreamId, error: StoreError) -> Distrust {
    let version = match &error {
        StoreError::Corrupt { version, .. } => *version,
        _ => 0,
    };
    Distrust::Chain(ChainBreak {
        stream: stream_id.clone(),
        version,
        reason: error.to_string(),
    })
}

/// Events read per request when a stream is replayed from version 1: the
/// replay holds one page in memory, whatever the stream's length.
pub const REPLAY_PAGE: u64 = 1_000;

/// Folds versions `1..=upto` (`None`: to the head) page by page, checking
/// the chain as it goes. A break is [`StoreError::Corrupt`]: nothing decides
/// on events the chain does not vouch for.
async fn replay_verified<D: Decider>(
    store: &(impl EventStore + ?Sized),
    stream_id: &StreamId,
    upto: Option<u64>,
) -> Result<Option<(Aggregate<D>, i64)>, StoreError> {
    let mut state = D::State::default();
    let mut head: Option<(u64, String, i64)> = None;
    loop {
        let from = head.as_ref().map_or(1, |(v, _, _)| v + 1);
        let to = from + REPLAY_PAGE - 1;
        let to = upto.map_or(to, |upto| to.min(upto));
        if to < from {
            break;
        }
        let page = store.read_range(stream_id, from, Some(to)).await?;
        let base = head.as_ref().map(|(_, hash, _)| hash.as_str());
        if let Err(broken) = verify_segment(stream_id, base, &page) {
            return Err(StoreError::Corrupt {
                stream: broken.stream,
                version: broken.version,
                reason: format!("hash chain broken: {}", broken.reason),
            });
        }
        state = fold_events::<D>(state, &page)?;
        let full = page.len() as u64 == to + 1 - from;
        if let Some(last) = page.last() {
            head = Some((last.version, last.hash.clone(), last.timestamp_ms));
        }
        if !full {
            break;
        }
    }
    Ok(head.map(|(version, hash, timestamp_ms)| {
        (
            Aggregate {
                stream_id: stream_id.clone(),
                state,
                version,
                head_hash: Some(hash),
                snapshot_version: 0,
            },
            timestamp_ms,
        )
    }))
}

/// Loads an aggregate from its newest snapshot, after checking the loaded
/// item(s) against the hash chain. A snapshot that does not verify, of an
/// unknown schema, or that does not deserialise is ignored and the stream
/// replayed from version 1 (chain checked): a snapshot is a cache, and an
/// edited one is never decided on. A replay that finds a broken chain is
/// [`StoreError::Corrupt`]: the command fails closed.
pub async fn load_aggregate<D: Decider>(
    store: &(impl EventStore + ?Sized),
    stream_id: &StreamId,
) -> Result<Aggregate<D>, StoreError> {
    let loaded = store.load(stream_id).await?;
    match rehydrate::<D>(stream_id, &loaded) {
        Ok(aggregate) => Ok(aggregate),
        Err(distrust) => {
            tracing::warn!(%stream_id, %distrust, "loaded stream does not verify; replaying from version 1");
            Ok(replay_verified::<D>(store, stream_id, None).await?.map_or_else(
                || Aggregate {
                    stream_id: stream_id.clone(),
                    state: D::State::default(),
                    version: 0,
                    head_hash: None,
                    snapshot_version: 0,
                },
                |(aggregate, _)| aggregate,
            ))
        }
    }
}

/// An aggregate as it was at some point of its history.
#[derive(Clone)]
pub struct AggregateAt<D: Decider> {
    /// The aggregate after the event at `aggregate.version`.
    pub aggregate: Aggregate<D>,
    /// When that event was appended (ms since the epoch).
    pub timestamp_ms: i64,
}

/// The aggregate as it was at `at` (see [`At`]), folded from the newest
/// verified snapshot at or before it: one short read whatever the stream's
/// length, and a paged, chain-checked replay when no snapshot verifies.
/// `None` when the stream had no events by then.
pub async fn aggregate_at<D: Decider>(
    store: &(impl EventStore + ?Sized),
    stream_id: &StreamId,
    at: At,
) -> Result<Option<AggregateAt<D>>, StoreError> {
    let loaded = store.load_at(stream_id, at).await?;
    let Some(last) = loaded.events.last() else {
        return Ok(None);
    };
    let timestamp_ms = last.timestamp_ms;
    match rehydrate::<D>(stream_id, &loaded) {
        Ok(aggregate) => Ok(Some(AggregateAt {
            aggregate,
            timestamp_ms,
        })),
        Err(distrust) => {
            tracing::warn!(%stream_id, %distrust, "no verified snapshot; replaying from version 1");
            let upto = loaded.version();
            Ok(replay_verified::<D>(store, stream_id, Some(upto))
                .await?
                .map(|(aggregate, timestamp_ms)| AggregateAt {
                    aggregate,
                    timestamp_ms,
                }))
        }
    }
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
