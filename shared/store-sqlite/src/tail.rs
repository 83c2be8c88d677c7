//! The in-process outbox reader for `tally serve`: it follows what the store
//! committed (in commit order) and feeds it to the eventual projections
//! through the core projection runtime, the same runtime the projector Lambda
//! runs. Nothing is projected "after commit" by the command path itself.
//!
//! A sink that can apply many events in one write gets each round's events
//! as one batch (one transaction instead of one per event); if a batch
//! fails, its events go one by one, so a poison event fails only itself.

use std::sync::Arc;

use rusqlite::{OptionalExtension, params};
use tally_core::projection::{BatchProjectionSink, deliver_batch};
use tally_core::{Delivery, EventEnvelope, ProjectionSink, StoreError, deliver};

use crate::events::{EVENT_COLUMN_COUNT, EVENT_COLUMNS, event_from_row};
use crate::{SqliteStore, sql_error};

/// Events read per round.
pub const TAIL_BATCH: u32 = 1_000;

const CONSUMER: &str = "serve";

/// A sink the tail feeds, by the write it can do.
enum TailSink {
    /// One event per write.
    One(Arc<dyn ProjectionSink>),
    /// A round's events in one write.
    Batch(Arc<dyn BatchProjectionSink>),
}

impl TailSink {
    fn one(&self) -> &dyn ProjectionSink {
        match self {
            Self::One(sink) => sink.as_ref(),
            Self::Batch(sink) => sink.as_ref(),
        }
    }
}

/// Feeds committed events to projections.
pub struct Tailer {
    store: SqliteStore,
    sinks: Vec<TailSink>,
}

impl Tailer {
    /// A tailer feeding `sinks` from `store`, one event per write.
    pub fn new(store: SqliteStore, sinks: Vec<Arc<dyn ProjectionSink>>) -> Self {
        Self {
            store,
            sinks: sinks.into_iter().map(TailSink::One).collect(),
        }
    }

    /// A tailer feeding `sinks` from `store`, a round's events per write.
    pub fn batched(store: SqliteStore, sinks: Vec<Arc<dyn BatchProjectionSink>>) -> Self {
        Self {
            store,
            sinks: sinks.into_iter().map(TailSink::Batch).collect(),
        }
    }

    async fn deliver_each(&self, sink: &dyn ProjectionSink, events: &[EventEnvelope]) {
        for event in events {
            match deliver(&self.store, sink, event).await {
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
                    .prepare_cached(&format!(
                        "SELECT {EVENT_COLUMNS}, seq FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2"
                    ))
                    .map_err(sql_error)?;
                let mut rows = statement.query(params![seq, TAIL_BATCH]).map_err(sql_error)?;
                let mut events = Vec::new();
                while let Some(row) = rows.next().map_err(sql_error)? {
                    // seq follows the event's columns.
                    let seq: i64 = row.get(EVENT_COLUMN_COUNT).map_err(sql_error)?;
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
            let events: Vec<EventEnvelope> = batch.into_iter().map(|(_, event)| event).collect();
            for sink in &self.sinks {
                match sink {
                    TailSink::One(sink) => self.deliver_each(sink.as_ref(), &events).await,
                    TailSink::Batch(batch_sink) => match deliver_batch(&self.store, batch_sink.as_ref(), &events).await
                    {
                        Ok(report) if report.repaired > 0 => {
                            tracing::info!(
                                projection = batch_sink.name(),
                                repaired = report.repaired,
                                "gaps repaired"
                            );
                        }
                        Ok(_) => {}
                        Err(error) => {
                            tracing::warn!(projection = batch_sink.name(), %error, "batch failed; delivering one by one");
                            self.deliver_each(sink.one(), &events).await;
                        }
                    },
                }
            }
            fed += events.len() as u64;
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
