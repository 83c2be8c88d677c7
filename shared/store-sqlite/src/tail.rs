//! The in-process outbox reader for `tally serve`: it follows what the store
//! committed (in commit order) and feeds it to the eventual projections
//! through the core projection runtime, the same runtime the projector Lambda
//! runs. Nothing is projected "after commit" by the command path itself.

use std::sync::Arc;

use rusqlite::{OptionalExtension, params};
use tally_core::{Delivery, EventEnvelope, ProjectionSink, StoreError, deliver};

use crate::events::event_from_row;
use crate::{SqliteStore, sql_error};

/// Events read per round.
pub const TAIL_BATCH: u32 = 1_000;

const CONSUMER: &str = "serve";

/// Feeds committed events to projections.
pub struct Tailer {
    store: SqliteStore,
    sinks: Vec<Arc<dyn ProjectionSink>>,
}

impl Tailer {
    /// A tailer feeding `sinks` from `store`.
    pub fn new(store: SqliteStore, sinks: Vec<Arc<dyn ProjectionSink>>) -> Self {
        Self { store, sinks }
    }

    async fn cursor(&self) -> Result<i64, StoreError> {
        self.store
            .read(|conn| {
                conn.query_row("SELECT seq FROM tail_cursor WHERE consumer = ?1", [CONSUMER], |r| {
                    r.get(0)
                })
                .optional()
                .map(Option::unwrap_or_default)
                .map_err(sql_error)
            })
            .await
    }

    async fn batch_after(&self, seq: i64) -> Result<Vec<(i64, EventEnvelope)>, StoreError> {
        self.store
            .read(move |conn| {
                let mut statement = conn
                    .prepare_cached(
                        "SELECT stream_id, version, event_id, event_type, schema, data, metadata, ts, hash,
                                snapshot, snapshot_schema, seq
                         FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                    )
                    .map_err(sql_error)?;
                let mut rows = statement.query(params![seq, TAIL_BATCH]).map_err(sql_error)?;
                let mut events = Vec::new();
                while let Some(row) = rows.next().map_err(sql_error)? {
                    let seq: i64 = row.get(11).map_err(sql_error)?;
                    events.push((seq, event_from_row(row)?.0));
                }
                Ok(events)
            })
            .await
    }

    /// Feeds every committed event not fed yet; returns how many were read.
    pub async fn drain(&self) -> Result<u64, StoreError> {
        let mut fed = 0;
        loop {
            let cursor = self.cursor().await?;
            let batch = self.batch_after(cursor).await?;
            let Some(&(last, _)) = batch.last() else {
                return Ok(fed);
            };
            for (_, event) in &batch {
                for sink in &self.sinks {
                    match deliver(&self.store, sink.as_ref(), event).await {
                        Ok(Delivery::Applied { repaired }) if repaired > 0 => {
                            tracing::info!(projection = sink.name(), stream = %event.stream_id, repaired, "gap repaired");
                        }
                        Ok(_) => {}
                        Err(error) => tracing::error!(
                            projection = sink.name(),
                            stream = %event.stream_id,
                            version = event.version,
                            %error,
                            "projection failed; it will be retried when the stream moves on"
                        ),
                    }
                }
            }
            fed += batch.len() as u64;
            self.store
                .write(move |conn| {
                    conn.execute(
                        "INSERT INTO tail_cursor (consumer, seq) VALUES (?1, ?2)
                         ON CONFLICT (consumer) DO UPDATE SET seq = MAX(seq, excluded.seq)",
                        params![CONSUMER, last],
                    )
                    .map(drop)
                    .map_err(sql_error)
                })
                .await?;
        }
    }

    /// Follows the store until the process ends.
    pub async fn run(self) {
        let mut commits = self.store.subscribe_commits();
        loop {
            if let Err(error) = self.drain().await {
                tracing::error!(%error, "projection tail failed; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                continue;
            }
            if commits.changed().await.is_err() {
                return;
            }
        }
    }
}
