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
//!
//! The same rule, many events per write ([`BatchProjectionSink`],
//! [`deliver_batch`]), drives the operator's tools, written once against
//! ports so every backend gets them: [`rebuild`] replays a store's whole
//! [`History`] into a new generation of a model ([`ModelGenerations`]) and
//! switches readers to it, resumably; [`verify_projection`] recomputes a model
//! in memory and diffs it against the stored one. None of them ever writes a
//! model change without its checkpoint, or reads a change feed that forgets:
//! replays read the event store itself.

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

// ---- batches -------------------------------------------------------------------

/// A stream whose events in a batch did not follow its checkpoint: none of
/// its events from `next` on were applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// The stream.
    pub stream: StreamId,
    /// Its checkpoint when the batch was applied.
    pub checkpoint: u64,
    /// The first version of the batch left out (> `checkpoint + 1`).
    pub next: u64,
}

/// What a sink did with one batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchApplied {
    /// Events applied (their model change and checkpoint written).
    pub applied: u64,
    /// Events at or below their stream's checkpoint: skipped.
    pub duplicates: u64,
    /// Events of streams the projection does not follow.
    pub ignored: u64,
    /// Streams left out from a gap on; close them from the event store.
    pub gaps: Vec<Gap>,
}

impl BatchApplied {
    /// Adds another outcome's counts (and gaps) to this one.
    pub fn absorb(&mut self, other: BatchApplied) {
        self.applied += other.applied;
        self.duplicates += other.duplicates;
        self.ignored += other.ignored;
        self.gaps.extend(other.gaps);
    }
}

/// A projection sink that applies many events in one write: a replay of
/// millions of events cannot afford one transaction per event.
#[async_trait]
pub trait BatchProjectionSink: ProjectionSink {
    /// Applies `events` with the rule of [`deliver`], stream by stream in
    /// version order (the sink sorts each stream's events): a version at or
    /// below the checkpoint is skipped, the next one applied, and one beyond
    /// it is a gap that leaves the rest of that stream out (reported, not
    /// repaired). Every model change and checkpoint of the batch is written
    /// in one atomic step, each conditioned on the checkpoint read in it.
    async fn apply_batch(&self, events: &[EventEnvelope]) -> Result<BatchApplied, ProjectionError>;
}

/// [`BatchProjectionSink::apply_batch`] for a sink that can only write one
/// event at a time: the same contract, atomic per event instead of per batch.
pub async fn apply_one_by_one(
    sink: &(impl ProjectionSink + ?Sized),
    events: &[EventEnvelope],
) -> Result<BatchApplied, ProjectionError> {
    let mut outcome = BatchApplied::default();
    let mut ordered: Vec<&EventEnvelope> = events.iter().collect();
    // Each stream's events together, in version order: the rule is per stream.
    ordered.sort_by(|a, b| a.stream_id.cmp(&b.stream_id).then(a.version.cmp(&b.version)));
    let mut blocked: Option<&StreamId> = None;
    for event in ordered {
        if !sink.follows(&event.stream_id) {
            outcome.ignored += 1;
            continue;
        }
        if blocked == Some(&event.stream_id) {
            continue;
        }
        loop {
            let checkpoint = sink.checkpoint(&event.stream_id).await?;
            if event.version <= checkpoint {
                outcome.duplicates += 1;
                break;
            }
            if event.version > checkpoint + 1 {
                outcome.gaps.push(Gap {
                    stream: event.stream_id.clone(),
                    checkpoint,
                    next: event.version,
                });
                blocked = Some(&event.stream_id);
                break;
            }
            if sink.apply(event).await? == ApplyOutcome::Applied {
                outcome.applied += 1;
                break;
            }
            // A concurrent delivery moved the checkpoint: look again.
        }
    }
    Ok(outcome)
}

/// What [`deliver_batch`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchDelivery {
    /// Events applied, those read to close gaps included.
    pub applied: u64,
    /// Events skipped as already applied.
    pub duplicates: u64,
    /// Events of streams the projection does not follow.
    pub ignored: u64,
    /// Events read from the event store to close gaps.
    pub repaired: u64,
}

/// Rounds of gap repair before a batch gives up: each round re-reads the
/// checkpoints, so more than a few means the store cannot close the gap.
const REPAIR_ROUNDS: usize = 5;

/// Delivers a batch with exactly-once effect: [`deliver`] for many events at
/// once. Gaps the sink reports are closed from the event store, then the left
/// out events applied, in further batches.
pub async fn deliver_batch(
    store: &(impl EventStore + ?Sized),
    sink: &(impl BatchProjectionSink + ?Sized),
    events: &[EventEnvelope],
) -> Result<BatchDelivery, ProjectionError> {
    let mut outcome = sink.apply_batch(events).await?;
    let mut report = BatchDelivery::default();
    for _ in 0..REPAIR_ROUNDS {
        report.applied += outcome.applied;
        report.duplicates += outcome.duplicates;
        report.ignored += outcome.ignored;
        if outcome.gaps.is_empty() {
            return Ok(report);
        }
        let mut run = Vec::new();
        for gap in &outcome.gaps {
            let missing = repair_gap_events(store, &gap.stream, gap.checkpoint + 1, gap.next - 1).await?;
            report.repaired += missing.len() as u64;
            run.extend(missing);
            run.extend(
                events
                    .iter()
                    .filter(|e| e.stream_id == gap.stream && e.version >= gap.next)
                    .cloned(),
            );
        }
        outcome = sink.apply_batch(&run).await?;
    }
    let gap = outcome.gaps.swap_remove(0);
    Err(ProjectionError::Unrepairable {
        stream: gap.stream,
        from: gap.checkpoint + 1,
        to: gap.next - 1,
    })
}

// ---- the whole history ---------------------------------------------------------

/// Reports the progress of a long operation (a replay, a verification) to
/// whoever watches: a progress bar, log lines, nothing.
pub trait Progress: Send {
    /// A phase starts; `total` events are expected, when known.
    fn begin(&mut self, phase: &str, total: Option<u64>);
    /// `events` more are done.
    fn advance(&mut self, events: u64);
    /// The phase is over.
    fn end(&mut self);
}

/// Watching nothing.
impl Progress for () {
    fn begin(&mut self, _phase: &str, _total: Option<u64>) {}
    fn advance(&mut self, _events: u64) {}
    fn end(&mut self) {}
}

/// A run of a store's history and the position after it.
#[derive(Debug, Clone)]
pub struct HistoryChunk<C> {
    /// Events, every stream's in version order, each stream complete since
    /// the start of the history (a stream's event comes after all its
    /// earlier ones, in this chunk or an earlier one).
    pub events: Vec<EventEnvelope>,
    /// The position after this chunk (past the events a filter skipped too).
    pub end: C,
}

/// A store's whole history, read in chunks from a resumable position.
///
/// Replays read the store itself, not a change feed that forgets (a
/// DynamoDB stream keeps 24 hours). The order across streams is the store's
/// business; within a stream it is version order, which is all projections
/// rely on.
#[async_trait]
pub trait History: Send + Sync {
    /// A position in the history; persisted by rebuilds to resume from.
    type Cursor: Clone + Send + Sync + std::fmt::Debug + 'static;

    /// The position before the first event.
    fn origin(&self) -> Self::Cursor;

    /// Up to `limit` events after `after`, only of streams of `category` when
    /// one is given (a store may skip the others without reading them).
    async fn read_after(
        &self,
        after: &Self::Cursor,
        limit: usize,
        category: Option<&str>,
    ) -> Result<HistoryChunk<Self::Cursor>, StoreError>;

    /// How many events (of `category`) lie after `after`: for progress and ETA.
    async fn count_after(&self, after: &Self::Cursor, category: Option<&str>) -> Result<u64, StoreError>;
}

// ---- rebuilds ------------------------------------------------------------------

/// How a rebuild replaces a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebuildMode {
    /// Empty the live model and its checkpoints, then replay into it:
    /// readers see it fill up.
    Truncate,
    /// Replay into a new generation beside the live one, catch up, then
    /// switch readers to it in one atomic step: readers never see a partial model.
    BlueGreen,
}

/// A rebuild under way: which generation it fills and how far it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build<C> {
    /// The projection.
    pub projection: String,
    /// The generation being filled.
    pub generation: u64,
    /// How it will replace the model.
    pub mode: RebuildMode,
    /// Whether an unfinished rebuild was picked up where it stopped.
    pub resumed: bool,
    /// Everything up to here is applied.
    pub cursor: C,
    /// An unfinished blue-green generation a truncate threw away, if any.
    pub abandoned: Option<u64>,
}

/// The generations of one projection's model on one backend: what a rebuild
/// needs beyond the history.
#[async_trait]
pub trait ModelGenerations: Send + Sync {
    /// The history position rebuilds record (the [`History`]'s cursor).
    type Cursor: Clone + Send + Sync + std::fmt::Debug + 'static;

    /// The projection, e.g. `order_summary`.
    fn projection(&self) -> &str;

    /// The stream category the projection follows, when it follows one: the
    /// history may then skip the others at the source.
    fn category(&self) -> Option<&str>;

    /// Starts a rebuild in `mode`, or resumes the unfinished one of that mode.
    /// Truncate empties the live model and its checkpoints in the same atomic
    /// step that records the replay's start, so a resumed truncate never
    /// empties again.
    async fn begin(&self, mode: RebuildMode) -> Result<Build<Self::Cursor>, ProjectionError>;

    /// The sink that writes into the generation `build` fills.
    fn sink(&self, build: &Build<Self::Cursor>) -> std::sync::Arc<dyn BatchProjectionSink>;

    /// Records that everything up to `cursor` is applied to `build`.
    async fn record_progress(&self, build: &Build<Self::Cursor>, cursor: &Self::Cursor) -> Result<(), ProjectionError>;

    /// Applies a chunk of history to `build` and records `end` as its
    /// progress. The provided version does both one after the other (a crash
    /// between them replays the chunk as duplicates); a backend that can
    /// should do both in one atomic step.
    async fn apply_chunk(
        &self,
        build: &Build<Self::Cursor>,
        events: &[EventEnvelope],
        end: &Self::Cursor,
    ) -> Result<BatchApplied, ProjectionError> {
        let applied = self.sink(build).apply_batch(events).await?;
        self.record_progress(build, end).await?;
        Ok(applied)
    }

    /// Applies every event appended after `cursor` and completes `build` in
    /// one atomic step, so nothing appended meanwhile is missed: blue-green
    /// makes it the generation readers see and retires the old one; truncate
    /// ends the replay. Returns the events applied in that step.
    async fn finish(&self, build: &Build<Self::Cursor>, cursor: &Self::Cursor)
    -> Result<BatchApplied, ProjectionError>;

    /// Drops retired generations; returns how many.
    async fn drop_retired(&self) -> Result<u64, ProjectionError>;
}

/// Who holds a projection's rebuild lease, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    /// Whoever took it (the operator's user, host and process).
    pub holder: String,
    /// When it expires unless renewed (ms since the epoch).
    pub expires_at_ms: i64,
}

/// What an attempt to take a rebuild lease found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// The caller holds the lease now (taken, renewed, or taken over from
    /// an expired holder).
    Taken,
    /// Someone else holds it and it has not expired: do not rebuild.
    HeldBy(LeaseHolder),
}

/// Rebuild leases: at most one rebuild of a projection runs at a time. A
/// lease names a projection, not a backend's table, and expires, so a run
/// that crashed without releasing it blocks others only until then.
#[async_trait]
pub trait RebuildLeases: Send + Sync {
    /// Takes (or renews) the lease on `projection` for `holder` until
    /// `expires_at_ms`, in one conditional write: it succeeds when no lease
    /// is recorded, the recorded one is `holder`'s, or it expired by `now_ms`.
    async fn take(
        &self,
        projection: &str,
        holder: &str,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<LeaseOutcome, ProjectionError>;

    /// Releases `holder`'s lease on `projection`; anyone else's is left alone.
    async fn release(&self, projection: &str, holder: &str) -> Result<(), ProjectionError>;
}

/// Tunables of a rebuild.
#[derive(Debug, Clone, Copy)]
pub struct RebuildOptions {
    /// Events read and applied per chunk (per atomic write).
    pub chunk: usize,
    /// Once a chunk brings fewer events than this, the rest is left to the
    /// atomic finishing step (which holds the backend's write lock, so it
    /// must be short).
    pub catch_up: usize,
    /// Finish the build (switch readers); `false` replays and catches up,
    /// then leaves the build for a later run to finish.
    pub finish: bool,
}

impl Default for RebuildOptions {
    fn default() -> Self {
        Self {
            chunk: 20_000,
            catch_up: 1_000,
            finish: true,
        }
    }
}

/// What a rebuild did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuildReport {
    /// The build, as begun.
    pub build_generation: u64,
    /// The mode.
    pub mode: RebuildMode,
    /// Whether it resumed an unfinished rebuild.
    pub resumed: bool,
    /// Events of the followed streams read from the history by this run.
    pub replayed: u64,
    /// What the chunks and the finishing step did.
    pub applied: BatchApplied,
    /// Events applied in the finishing step.
    pub at_finish: u64,
    /// Whether the build was finished (blue-green: readers switched).
    pub finished: bool,
    /// Old generations dropped after the switch.
    pub dropped: u64,
    /// An unfinished blue-green generation a truncate threw away.
    pub abandoned: Option<u64>,
}

fn no_gaps(applied: &BatchApplied) -> Result<(), ProjectionError> {
    // Chunks are complete prefixes of every stream: a gap means the history
    // broke its promise (or someone wrote into the generation being built).
    match applied.gaps.first() {
        None => Ok(()),
        Some(gap) => Err(ProjectionError::Unrepairable {
            stream: gap.stream.clone(),
            from: gap.checkpoint + 1,
            to: gap.next - 1,
        }),
    }
}

/// Rebuilds a projection's model from the whole history: begins (or resumes)
/// a build, replays every chunk after its cursor through the sink, recording
/// progress with each chunk, catches up with whatever was appended meanwhile,
/// then finishes it atomically. Killed at any point and run again, it goes
/// on from the last recorded chunk, and the checkpoints make any chunk
/// applied twice a no-op: the model ends the same as an in-order replay.
pub async fn rebuild<H, G>(
    history: &H,
    model: &G,
    mode: RebuildMode,
    options: RebuildOptions,
    progress: &mut dyn Progress,
) -> Result<RebuildReport, ProjectionError>
where
    H: History,
    G: ModelGenerations<Cursor = H::Cursor>,
{
    let build = model.begin(mode).await?;
    let category = model.category();
    let chunk_size = options.chunk.max(1);
    let total = history.count_after(&build.cursor, category).await?;
    progress.begin("replaying", Some(total));
    let mut report = RebuildReport {
        build_generation: build.generation,
        mode,
        resumed: build.resumed,
        replayed: 0,
        applied: BatchApplied::default(),
        at_finish: 0,
        finished: false,
        dropped: 0,
        abandoned: build.abandoned,
    };
    let mut cursor = build.cursor.clone();
    let mut chunk = history.read_after(&cursor, chunk_size, category).await?;
    // Apply a chunk while reading the next: the store reads on one core
    // while the sink decodes and writes on the other.
    while chunk.events.len() >= options.catch_up.max(1) {
        let end = chunk.end.clone();
        let (applied, next) = tokio::join!(
            model.apply_chunk(&build, &chunk.events, &end),
            history.read_after(&end, chunk_size, category),
        );
        let applied = applied?;
        no_gaps(&applied)?;
        report.replayed += chunk.events.len() as u64;
        report.applied.absorb(applied);
        progress.advance(chunk.events.len() as u64);
        cursor = end;
        chunk = next?;
    }
    if options.finish {
        progress.begin(
            match mode {
                RebuildMode::BlueGreen => "switching",
                RebuildMode::Truncate => "finishing",
            },
            None,
        );
        let applied = model.finish(&build, &cursor).await?;
        no_gaps(&applied)?;
        report.at_finish = applied.applied + applied.duplicates;
        report.replayed += report.at_finish;
        report.applied.absorb(applied);
        report.finished = true;
        report.dropped = model.drop_retired().await?;
    }
    progress.end();
    Ok(report)
}

// ---- verification --------------------------------------------------------------

/// A model as stored, read in one consistent snapshot: its rows and the
/// checkpoints they reflect.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelSnapshot {
    /// Rows by key, each as the JSON the API serves.
    pub rows: std::collections::BTreeMap<String, serde_json::Value>,
    /// The last version applied, per stream.
    pub checkpoints: std::collections::HashMap<StreamId, u64>,
}

/// A model whose stored rows can be read back whole (the live generation).
#[async_trait]
pub trait StoredModel: Send + Sync {
    /// The rows and checkpoints, read in one snapshot.
    async fn snapshot(&self) -> Result<ModelSnapshot, ProjectionError>;
}

/// A model held in memory, whose rows can be listed (the recomputation).
pub trait ModelRows {
    /// The rows by key, each as the JSON the API serves.
    fn rows(&self) -> Result<std::collections::BTreeMap<String, serde_json::Value>, ProjectionError>;
}

/// One row on which the recomputed and the stored model disagree.
#[derive(Debug, Clone, PartialEq)]
pub enum RowDiff {
    /// Recomputed but not stored.
    Missing {
        /// The row key.
        key: String,
        /// The recomputed row.
        expected: serde_json::Value,
    },
    /// Stored but not recomputed.
    Extra {
        /// The row key.
        key: String,
        /// The stored row.
        stored: serde_json::Value,
    },
    /// Both, but different.
    Differs {
        /// The row key.
        key: String,
        /// The recomputed row.
        expected: serde_json::Value,
        /// The stored row.
        stored: serde_json::Value,
    },
}

/// Compares two models row by row, in key order.
pub fn diff_rows(
    expected: &std::collections::BTreeMap<String, serde_json::Value>,
    stored: &std::collections::BTreeMap<String, serde_json::Value>,
) -> Vec<RowDiff> {
    let mut diffs = Vec::new();
    for (key, expected_row) in expected {
        match stored.get(key) {
            None => diffs.push(RowDiff::Missing {
                key: key.clone(),
                expected: expected_row.clone(),
            }),
            Some(stored_row) if stored_row != expected_row => diffs.push(RowDiff::Differs {
                key: key.clone(),
                expected: expected_row.clone(),
                stored: stored_row.clone(),
            }),
            Some(_) => {}
        }
    }
    for (key, stored_row) in stored {
        if !expected.contains_key(key) {
            diffs.push(RowDiff::Extra {
                key: key.clone(),
                stored: stored_row.clone(),
            });
        }
    }
    diffs.sort_by(|a, b| row_key(a).cmp(row_key(b)));
    diffs
}

fn row_key(diff: &RowDiff) -> &str {
    match diff {
        RowDiff::Missing { key, .. } | RowDiff::Extra { key, .. } | RowDiff::Differs { key, .. } => key,
    }
}

/// A stream whose checkpoint is not at its head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointLag {
    /// The stream.
    pub stream: StreamId,
    /// The projection's checkpoint.
    pub checkpoint: u64,
    /// The stream's head in the store.
    pub head: u64,
}

/// What a verification of one projection found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProjectionVerdict {
    /// Rows compared (recomputed and stored, counted once per key).
    pub rows: u64,
    /// Events replayed in memory.
    pub events: u64,
    /// Rows that disagree.
    pub diffs: Vec<RowDiff>,
    /// Streams not projected up to their head yet: an eventual model lags,
    /// which is not a fault; the rows compare at the checkpoints.
    pub behind: Vec<CheckpointLag>,
    /// Checkpoints beyond their stream's head: a fault.
    pub ahead: Vec<CheckpointLag>,
}

impl ProjectionVerdict {
    /// Whether the stored model is what its checkpoints say it should be.
    pub fn is_consistent(&self) -> bool {
        self.diffs.is_empty() && self.ahead.is_empty()
    }
}

/// Recomputes a projection in memory from the history and diffs it against
/// the stored model.
///
/// The stored rows and checkpoints are read first, in one snapshot; the
/// replay then applies each stream only up to its stored checkpoint, so a
/// model that merely lags behind a busy store compares equal (its lag is
/// reported apart), while any row that is not what its events make it is a
/// difference.
pub async fn verify_projection<H, S, M>(
    history: &H,
    stored: &S,
    memory: &M,
    category: Option<&str>,
    chunk: usize,
    progress: &mut dyn Progress,
) -> Result<ProjectionVerdict, ProjectionError>
where
    H: History,
    S: StoredModel + ?Sized,
    M: BatchProjectionSink + ModelRows + ?Sized,
{
    let snapshot = stored.snapshot().await?;
    let origin = history.origin();
    progress.begin("recomputing", Some(history.count_after(&origin, category).await?));
    let mut heads: std::collections::HashMap<StreamId, u64> = std::collections::HashMap::new();
    let mut verdict = ProjectionVerdict::default();
    let chunk = chunk.max(1);
    let mut next = history.read_after(&origin, chunk, category).await?;
    loop {
        if next.events.is_empty() {
            break;
        }
        let end = next.end.clone();
        let events = std::mem::take(&mut next.events);
        let read = events.len() as u64;
        let apply = async {
            let mut capped = Vec::with_capacity(events.len());
            for event in events {
                if !memory.follows(&event.stream_id) {
                    continue;
                }
                let head = heads.entry(event.stream_id.clone()).or_default();
                *head = (*head).max(event.version);
                if event.version <= snapshot.checkpoints.get(&event.stream_id).copied().unwrap_or(0) {
                    capped.push(event);
                }
            }
            let count = capped.len() as u64;
            let applied = memory.apply_batch(&capped).await?;
            no_gaps(&applied)?;
            Ok::<u64, ProjectionError>(count)
        };
        let (applied, next_chunk) = tokio::join!(apply, history.read_after(&end, chunk, category));
        verdict.events += applied?;
        progress.advance(read);
        next = next_chunk?;
    }
    progress.end();
    let expected = memory.rows()?;
    let mut keys: std::collections::BTreeSet<&String> = expected.keys().collect();
    keys.extend(snapshot.rows.keys());
    verdict.rows = keys.len() as u64;
    verdict.diffs = diff_rows(&expected, &snapshot.rows);
    for (stream, &head) in &heads {
        let checkpoint = snapshot.checkpoints.get(stream).copied().unwrap_or(0);
        if checkpoint < head {
            verdict.behind.push(CheckpointLag {
                stream: stream.clone(),
                checkpoint,
                head,
            });
        }
    }
    for (stream, &checkpoint) in &snapshot.checkpoints {
        let head = heads.get(stream).copied().unwrap_or(0);
        if checkpoint > head {
            verdict.ahead.push(CheckpointLag {
                stream: stream.clone(),
                checkpoint,
                head,
            });
        }
    }
    verdict.behind.sort_by(|a, b| a.stream.cmp(&b.stream));
    verdict.ahead.sort_by(|a, b| a.stream.cmp(&b.stream));
    Ok(verdict)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;
    use crate::envelope::{Metadata, NewEvent, seal};
    use crate::store::{AppendBatch, AppendOutcome, IdempotencyRecord, LoadedStream};

    /// A sink that logs what it applied, one event per write.
    #[derive(Default)]
    struct Log {
        checkpoints: Mutex<HashMap<StreamId, u64>>,
        applied: Mutex<Vec<(String, u64)>>,
    }

    #[async_trait]
    impl ProjectionSink for Log {
        fn name(&self) -> &str {
            "log"
        }
        fn follows(&self, stream: &StreamId) -> bool {
            stream.category() == "s"
        }
        async fn checkpoint(&self, stream: &StreamId) -> Result<u64, ProjectionError> {
            Ok(self.checkpoints.lock().expect("lock").get(stream).copied().unwrap_or(0))
        }
        async fn apply(&self, event: &EventEnvelope) -> Result<ApplyOutcome, ProjectionError> {
            let mut checkpoints = self.checkpoints.lock().expect("lock");
            let checkpoint = checkpoints.entry(event.stream_id.clone()).or_default();
            if *checkpoint + 1 != event.version {
                return Ok(ApplyOutcome::CheckpointMoved);
            }
            *checkpoint = event.version;
            self.applied
                .lock()
                .expect("lock")
                .push((event.stream_id.to_string(), event.version));
            Ok(ApplyOutcome::Applied)
        }
    }

    #[async_trait]
    impl BatchProjectionSink for Log {
        async fn apply_batch(&self, events: &[EventEnvelope]) -> Result<BatchApplied, ProjectionError> {
            apply_one_by_one(self, events).await
        }
    }

    /// An event store holding fixed events; only reads are used.
    struct Stored(Vec<EventEnvelope>);

    #[async_trait]
    impl EventStore for Stored {
        async fn load(&self, _: &StreamId) -> Result<LoadedStream, StoreError> {
            Err(StoreError::Backend("not used".into()))
        }
        async fn read_range(
            &self,
            stream: &StreamId,
            from: u64,
            to: Option<u64>,
        ) -> Result<Vec<EventEnvelope>, StoreError> {
            Ok(self
                .0
                .iter()
                .filter(|e| &e.stream_id == stream && e.version >= from && to.is_none_or(|to| e.version <= to))
                .cloned()
                .collect())
        }
        async fn read_until(&self, _: &StreamId, _: i64) -> Result<Vec<EventEnvelope>, StoreError> {
            Err(StoreError::Backend("not used".into()))
        }
        async fn append(&self, _: AppendBatch) -> Result<AppendOutcome, StoreError> {
            Err(StoreError::Backend("not used".into()))
        }
        async fn idempotency_record(&self, _: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
            Ok(None)
        }
    }

    fn stream(id: &str, n: u64) -> Vec<EventEnvelope> {
        let id = StreamId::parse(id).expect("valid");
        let events = (0..n)
            .map(|i| NewEvent {
                event_type: "Counted".into(),
                schema: 1,
                data: json!({ "n": i }),
            })
            .collect();
        seal(&id, 0, None, events, &Metadata::default(), 1)
    }

    /// Given a batch out of order, with a duplicate, a gap and a foreign
    /// stream, then every followed event up to the batch's last is applied
    /// once, in version order, the gap closed from the store.
    #[tokio::test]
    async fn a_batch_is_applied_once_in_order_with_its_gaps_repaired() {
        let (one, two) = (stream("s-1", 5), stream("s-2", 3));
        let store = Stored(one.iter().chain(&two).cloned().collect());
        let sink = Log::default();
        let foreign = stream("x-1", 1);
        let batch = [
            one[2].clone(),
            one[0].clone(),
            two[1].clone(),
            one[0].clone(),
            foreign[0].clone(),
        ];
        let report = deliver_batch(&store, &sink, &batch).await.expect("delivered");
        assert_eq!(report.ignored, 1);
        assert_eq!(report.repaired, 2, "s-1 v2 and s-2 v1 came from the store");
        let applied = sink.applied.lock().expect("lock").clone();
        let of = |s: &str| {
            applied
                .iter()
                .filter(|(id, _)| id == s)
                .map(|(_, v)| *v)
                .collect::<Vec<_>>()
        };
        assert_eq!(of("s-1"), [1, 2, 3]);
        assert_eq!(of("s-2"), [1, 2]);

        let again = deliver_batch(&store, &sink, &batch).await.expect("delivered");
        assert_eq!((again.applied, again.duplicates), (0, 4));
    }

    /// A gap the store cannot close is an error naming it.
    #[tokio::test]
    async fn an_unrepairable_gap_is_an_error() {
        let one = stream("s-1", 3);
        let store = Stored(vec![one[2].clone()]);
        let outcome = deliver_batch(&store, &Log::default(), &one[2..]).await;
        assert!(
            matches!(outcome, Err(ProjectionError::Unrepairable { from: 1, to: 2, .. })),
            "{outcome:?}"
        );
    }

    /// Missing, extra and differing rows come out in key order.
    #[test]
    fn rows_diff_in_key_order() {
        let expected = [("a", json!(1)), ("b", json!(2)), ("c", json!(3))]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let stored = [("b", json!(2)), ("c", json!(4)), ("d", json!(5))]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let keys: Vec<String> = diff_rows(&expected, &stored)
            .into_iter()
            .map(|d| match d {
                RowDiff::Missing { key, .. } => format!("-{key}"),
                RowDiff::Extra { key, .. } => format!("+{key}"),
                RowDiff::Differs { key, .. } => format!("~{key}"),
            })
            .collect();
        assert_eq!(keys, ["-a", "~c", "+d"]);
    }
}
