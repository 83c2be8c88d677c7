//! Rebuilds on SQLite: the [`ModelGenerations`] port over the generation
//! tables (see [`crate::schema`]).
//!
//! Every step is one transaction of the writer, so a rebuild killed at any
//! point leaves either the previous step or the next one, never half:
//! - begin: blue-green creates generation *n+1* (`building`, replay at seq
//!   0) or picks up the unfinished one; truncate empties the live tables and
//!   sets its replay to seq 0 together, or picks up the replay it left.
//! - each chunk: the model changes, the checkpoints and the replay's new
//!   position commit together.
//! - finish: under SQLite's write lock, so no command can commit meanwhile,
//!   the events after the replay's position are applied and the build
//!   becomes live (the old generation `retired`): readers in any process see
//!   the old model up to this commit and the new one from it.
//! - drop: retired generations' tables are dropped.
//!
//! One rebuild per projection at a time: a run holds the projection's
//! lease (a row of `rebuild_leases`, taken with one conditional write, see
//! [`RebuildLeases`]), so a second run is refused while the first renews
//! it. Should two runs meet anyway (a lease expired under a stalled run),
//! the second resumes the same build rather than starting another, and a
//! build finished or abandoned by another run is an error, not a silent
//! overwrite.

use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use tally_core::projection::{
    BatchApplied, BatchProjectionSink, Build, LeaseHolder, LeaseOutcome, ModelGenerations, RebuildLeases, RebuildMode,
};
use tally_core::{Decider, EventEnvelope, ProjectionError, StoreError};
use tally_domain::Order;

use crate::history::read_history_in;
use crate::projections::{OrderProjectionSink, Target, apply_in, decode_followed};
use crate::schema::{BUILDING, LIVE, Model, RETIRED};
use crate::{SqliteStore, sql_error};

/// The generations of one eventual model in a SQLite store.
#[derive(Clone)]
pub struct SqliteGenerations {
    store: SqliteStore,
    model: Model,
}

impl SqliteGenerations {
    /// The generations of the projection `name`, if the store keeps one by that name.
    pub fn new(store: &SqliteStore, name: &str) -> Option<Self> {
        Some(Self {
            store: store.clone(),
            model: Model::from_name(name)?,
        })
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `(generation, replay_seq)` of the generation in `state`, if any.
fn generation_in(conn: &Connection, model: Model, state: &str) -> Result<Option<(u64, Option<i64>)>, StoreError> {
    conn.query_row(
        "SELECT generation, replay_seq FROM projection_generations WHERE projection = ?1 AND state = ?2",
        params![model.name(), state],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
    .map_err(sql_error)
}

fn drop_generation(conn: &Connection, model: Model, generation: u64) -> Result<(), StoreError> {
    model.drop_tables(conn, generation).map_err(sql_error)?;
    conn.execute(
        "DELETE FROM projection_generations WHERE projection = ?1 AND generation = ?2",
        params![model.name(), generation],
    )
    .map(drop)
    .map_err(sql_error)
}

fn begin_in(conn: &Connection, model: Model, mode: RebuildMode) -> Result<Build<i64>, StoreError> {
    let build = |generation, resumed, cursor, abandoned| Build {
        projection: model.name().to_owned(),
        generation,
        mode,
        resumed,
        cursor,
        abandoned,
    };
    match mode {
        RebuildMode::BlueGreen => {
            if let Some((generation, cursor)) = generation_in(conn, model, BUILDING)? {
                return Ok(build(generation, true, cursor.unwrap_or(0), None));
            }
            let generation: u64 = conn
                .query_row(
                    "SELECT COALESCE(MAX(generation), 0) + 1 FROM projection_generations WHERE projection = ?1",
                    [model.name()],
                    |r| r.get(0),
                )
                .map_err(sql_error)?;
            model.create(conn, generation).map_err(sql_error)?;
            conn.execute(
                "INSERT INTO projection_generations (projection, generation, state, replay_seq, created_at_ms)
                 VALUES (?1, ?2, ?3, 0, ?4)",
                params![model.name(), generation, BUILDING, now_ms()],
            )
            .map_err(sql_error)?;
            Ok(build(generation, false, 0, None))
        }
        RebuildMode::Truncate => {
            // A truncate replaces the live model in place: an unfinished
            // blue-green build of it would only be overtaken.
            let abandoned = generation_in(conn, model, BUILDING)?.map(|(generation, _)| generation);
            if let Some(generation) = abandoned {
                drop_generation(conn, model, generation)?;
            }
            let (generation, replay) = generation_in(conn, model, LIVE)?
                .ok_or_else(|| StoreError::Backend(format!("{} has no live generation", model.name()).into()))?;
            if let Some(cursor) = replay {
                return Ok(build(generation, true, cursor, abandoned));
            }
            conn.execute_batch(&format!(
                "DELETE FROM {}; DELETE FROM {};",
                model.table(generation),
                model.checkpoints(generation)
            ))
            .map_err(sql_error)?;
            conn.execute(
                "UPDATE projection_generations SET replay_seq = 0 WHERE projection = ?1 AND generation = ?2",
                params![model.name(), generation],
            )
            .map_err(sql_error)?;
            Ok(build(generation, false, 0, abandoned))
        }
    }
}

/// Refuses a chunk that left a gap: its progress must not be recorded past
/// events it did not apply (the savepoint then rolls back, nothing lands).
/// A replay reads complete prefixes of every stream, so this means the
/// generation was written by someone else.
fn no_gap(applied: &BatchApplied, build: &Build<i64>) -> Result<(), StoreError> {
    match applied.gaps.first() {
        None => Ok(()),
        Some(gap) => Err(StoreError::Backend(
            format!(
                "generation {} of {} is at version {} of {}, but the replay brought version {}",
                build.generation, build.projection, gap.checkpoint, gap.stream, gap.next
            )
            .into(),
        )),
    }
}

/// Records the replay's position; refuses if the build is no longer under way.
fn record_in(conn: &Connection, model: Model, build: &Build<i64>, cursor: i64) -> Result<(), StoreError> {
    let state = match build.mode {
        RebuildMode::BlueGreen => BUILDING,
        RebuildMode::Truncate => LIVE,
    };
    let changed = conn
        .prepare_cached(
            "UPDATE projection_generations SET replay_seq = ?1
             WHERE projection = ?2 AND generation = ?3 AND state = ?4 AND replay_seq IS NOT NULL",
        )
        .and_then(|mut s| s.execute(params![cursor, model.name(), build.generation, state]))
        .map_err(sql_error)?;
    if changed == 0 {
        return Err(StoreError::Backend(
            format!(
                "the rebuild of {} generation {} was finished or abandoned by another run",
                model.name(),
                build.generation
            )
            .into(),
        ));
    }
    Ok(())
}

/// What was appended after a replay's position, decoded: the events, how
/// many the model ignores, and the position after them.
struct Pending {
    projected: Vec<crate::projections::Projected>,
    ignored: u64,
    end: i64,
}

/// Decodes what was appended after `cursor`: a poison event is the
/// caller's answer (`Ok(Err)`) before anything is written.
fn pending_after(conn: &Connection, cursor: i64) -> Result<Result<Pending, ProjectionError>, StoreError> {
    let (events, end) = read_history_in(conn, cursor, None, Some(Order::CATEGORY))?;
    let mut ignored = 0;
    Ok(decode_followed(&events, &mut ignored).map(|projected| Pending {
        projected,
        ignored,
        end,
    }))
}

fn finish_in(
    conn: &Connection,
    model: Model,
    build: &Build<i64>,
    cursor: i64,
) -> Result<Result<BatchApplied, ProjectionError>, StoreError> {
    let Pending {
        projected,
        ignored,
        end,
    } = match pending_after(conn, cursor)? {
        Ok(pending) => pending,
        Err(poison) => return Ok(Err(poison)),
    };
    let mut applied = apply_in(conn, model, build.generation, projected)?;
    no_gap(&applied, build)?;
    applied.ignored += ignored;
    record_in(conn, model, build, end)?;
    match build.mode {
        RebuildMode::BlueGreen => {
            conn.execute(
                "UPDATE projection_generations SET state = ?1 WHERE projection = ?2 AND state = ?3",
                params![RETIRED, model.name(), LIVE],
            )
            .map_err(sql_error)?;
            conn.execute(
                "UPDATE projection_generations SET state = ?1, replay_seq = NULL
                 WHERE projection = ?2 AND generation = ?3",
                params![LIVE, model.name(), build.generation],
            )
            .map_err(sql_error)?;
        }
        RebuildMode::Truncate => {
            conn.execute(
                "UPDATE projection_generations SET replay_seq = NULL WHERE projection = ?1 AND generation = ?2",
                params![model.name(), build.generation],
            )
            .map_err(sql_error)?;
        }
    }
    Ok(Ok(applied))
}

fn drop_retired_in(conn: &Connection, model: Model) -> Result<u64, StoreError> {
    let retired: Vec<u64> = conn
        .prepare("SELECT generation FROM projection_generations WHERE projection = ?1 AND state = ?2")
        .and_then(|mut s| {
            s.query_map(params![model.name(), RETIRED], |r| r.get(0))?
                .collect::<Result<_, _>>()
        })
        .map_err(sql_error)?;
    for &generation in &retired {
        drop_generation(conn, model, generation)?;
    }
    Ok(retired.len() as u64)
}

#[async_trait]
impl ModelGenerations for SqliteGenerations {
    type Cursor = i64;

    fn projection(&self) -> &str {
        self.model.name()
    }

    fn category(&self) -> Option<&str> {
        Some(Order::CATEGORY)
    }

    async fn begin(&self, mode: RebuildMode) -> Result<Build<i64>, ProjectionError> {
        let model = self.model;
        // Leftovers of a run killed between its switch and its clean-up go first.
        self.store.write(move |conn| drop_retired_in(conn, model)).await?;
        Ok(self.store.write(move |conn| begin_in(conn, model, mode)).await?)
    }

    fn sink(&self, build: &Build<i64>) -> Arc<dyn BatchProjectionSink> {
        Arc::new(OrderProjectionSink::new(
            self.store.clone(),
            self.model,
            Target::Generation(build.generation),
        ))
    }

    async fn record_progress(&self, build: &Build<i64>, cursor: &i64) -> Result<(), ProjectionError> {
        let (model, build, cursor) = (self.model, build.clone(), *cursor);
        Ok(self
            .store
            .write(move |conn| record_in(conn, model, &build, cursor))
            .await?)
    }

    /// The chunk's changes, checkpoints and the replay's new position in one
    /// transaction: a resumed rebuild never re-applies a recorded chunk.
    async fn apply_chunk(
        &self,
        build: &Build<i64>,
        events: &[EventEnvelope],
        end: &i64,
    ) -> Result<BatchApplied, ProjectionError> {
        let mut ignored = 0;
        let projected = decode_followed(events, &mut ignored)?;
        let (model, build, end) = (self.model, build.clone(), *end);
        let mut applied = self
            .store
            .write(move |conn| {
                let applied = apply_in(conn, model, build.generation, projected)?;
                no_gap(&applied, &build)?;
                record_in(conn, model, &build, end)?;
                Ok(applied)
            })
            .await?;
        applied.ignored += ignored;
        Ok(applied)
    }

    async fn finish(&self, build: &Build<i64>, cursor: &i64) -> Result<BatchApplied, ProjectionError> {
        let (model, build, cursor) = (self.model, build.clone(), *cursor);
        self.store
            .write(move |conn| finish_in(conn, model, &build, cursor))
            .await?
    }

    async fn drop_retired(&self) -> Result<u64, ProjectionError> {
        let model = self.model;
        Ok(self.store.write(move |conn| drop_retired_in(conn, model)).await?)
    }
}

/// Takes or renews the lease, or says who holds it; one transaction.
fn take_lease_in(
    conn: &Connection,
    projection: &str,
    holder: &str,
    now_ms: i64,
    expires_at_ms: i64,
) -> Result<LeaseOutcome, StoreError> {
    let taken = conn
        .execute(
            "INSERT INTO rebuild_leases (projection, holder, expires_at_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (projection) DO UPDATE
                SET holder = excluded.holder, expires_at_ms = excluded.expires_at_ms
                WHERE rebuild_leases.holder = excluded.holder OR rebuild_leases.expires_at_ms <= ?4",
            params![projection, holder, expires_at_ms, now_ms],
        )
        .map_err(sql_error)?;
    if taken > 0 {
        return Ok(LeaseOutcome::Taken);
    }
    conn.query_row(
        "SELECT holder, expires_at_ms FROM rebuild_leases WHERE projection = ?1",
        [projection],
        |r| {
            Ok(LeaseHolder {
                holder: r.get(0)?,
                expires_at_ms: r.get(1)?,
            })
        },
    )
    .map(LeaseOutcome::HeldBy)
    .map_err(sql_error)
}

/// Rebuild leases in the store's database (`rebuild_leases`): every process
/// that opens the file sees the same rows, so runs on one machine exclude
/// each other whatever process they are.
#[async_trait]
impl RebuildLeases for SqliteStore {
    async fn take(
        &self,
        projection: &str,
        holder: &str,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<LeaseOutcome, ProjectionError> {
        let (projection, holder) = (projection.to_owned(), holder.to_owned());
        Ok(self
            .write(move |conn| take_lease_in(conn, &projection, &holder, now_ms, expires_at_ms))
            .await?)
    }

    async fn release(&self, projection: &str, holder: &str) -> Result<(), ProjectionError> {
        let (projection, holder) = (projection.to_owned(), holder.to_owned());
        Ok(self
            .write(move |conn| {
                conn.execute(
                    "DELETE FROM rebuild_leases WHERE projection = ?1 AND holder = ?2",
                    params![projection, holder],
                )
                .map(drop)
                .map_err(sql_error)
            })
            .await?)
    }
}
