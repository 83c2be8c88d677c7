//! The whole store read in bulk, for replays and verification: the
//! [`History`] port in commit order (`seq`), and the [`StreamScan`] port in
//! (stream, version) order.
//!
//! Commit order is a complete order here: a sequence number is taken inside
//! the single write transaction that commits it, so once an event is
//! visible, every event with a lower `seq` is too, and within a stream `seq`
//! grows with the version. A replay that has read up to `seq` *n* has read a
//! complete prefix of every stream. Reading never writes.

use async_trait::async_trait;
use rusqlite::{Connection, params};
use tally_core::chain::{ScannedEvent, StreamScan};
use tally_core::projection::{History, HistoryChunk};
use tally_core::{EventEnvelope, StoreError, StreamId};

use crate::events::{EVENT_COLUMNS, envelope_at, event_from_row};
use crate::{SqliteStore, sql_error};

/// The envelope's columns, in the order [`envelope_at`] reads them.
const ENVELOPE_COLUMNS: &str =
    "stream_id, version, event_id, event_type, schema, data, metadata, ts, hash, snapshot_digest";

/// The `stream_id` range of a category: ids are `<category>-<id>` in
/// `[A-Za-z0-9_-]`, so they all sort in `["<category>-", "<category>.")`
/// ('.' follows '-' in ASCII), a range SQLite checks without parsing.
fn category_range(category: Option<&str>) -> (String, String) {
    match category {
        Some(category) => (format!("{category}-"), format!("{category}.")),
        // Every valid id sorts in ["", "~"): '~' follows every id character.
        None => (String::new(), "~".to_owned()),
    }
}

/// Up to `limit` events (of `category`) with `seq` after `after`, and the
/// `seq` the next read starts after: past the events the filter skipped, up
/// to the head this read saw.
pub(crate) fn read_history_in(
    conn: &Connection,
    after: i64,
    limit: Option<usize>,
    category: Option<&str>,
) -> Result<(Vec<EventEnvelope>, i64), StoreError> {
    let head: i64 = conn
        .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM events")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(sql_error)?;
    let (low, high) = category_range(category);
    let limit = limit.map_or(i64::MAX, |l| i64::try_from(l).unwrap_or(i64::MAX));
    let mut statement = conn
        .prepare_cached(&format!(
            "SELECT {ENVELOPE_COLUMNS}, seq FROM events
             WHERE seq > ?1 AND seq <= ?2 AND stream_id >= ?3 AND stream_id < ?4
             ORDER BY seq LIMIT ?5"
        ))
        .map_err(sql_error)?;
    let mut rows = statement
        .query(params![after, head, low, high, limit])
        .map_err(sql_error)?;
    let mut events = Vec::new();
    let mut last = after;
    while let Some(row) = rows.next().map_err(sql_error)? {
        events.push(envelope_at(row, 0)?);
        last = row.get(10).map_err(sql_error)?;
    }
    let end = if (events.len() as i64) < limit {
        head.max(after)
    } else {
        last
    };
    Ok((events, end))
}

#[async_trait]
impl History for SqliteStore {
    /// The commit sequence number of the last event read.
    type Cursor = i64;

    fn origin(&self) -> i64 {
        0
    }

    async fn read_after(
        &self,
        after: &i64,
        limit: usize,
        category: Option<&str>,
    ) -> Result<HistoryChunk<i64>, StoreError> {
        let (after, category) = (*after, category.map(str::to_owned));
        let (events, end) = self
            .read(move |conn| read_history_in(conn, after, Some(limit), category.as_deref()))
            .await?;
        Ok(HistoryChunk { events, end })
    }

    async fn count_after(&self, after: &i64, category: Option<&str>) -> Result<u64, StoreError> {
        let (after, (low, high)) = (*after, category_range(category));
        self.read(move |conn| {
            conn.prepare_cached("SELECT COUNT(*) FROM events WHERE seq > ?1 AND stream_id >= ?2 AND stream_id < ?3")
                .and_then(|mut s| s.query_row(params![after, low, high], |r| r.get(0)))
                .map_err(sql_error)
        })
        .await
    }
}

/// A scanned row: readable, or damaged at a known stream and version. A row
/// whose stream id or version do not read is a store failure: it cannot even
/// be placed.
fn scanned_from_row(row: &rusqlite::Row<'_>) -> Result<ScannedEvent, StoreError> {
    let stream: String = row.get(0).map_err(sql_error)?;
    let version: u64 = row.get(1).map_err(sql_error)?;
    match event_from_row(row) {
        Ok((envelope, snapshot)) => Ok(ScannedEvent::stored(envelope, snapshot.as_ref())),
        Err(error) => Ok(ScannedEvent::Unreadable {
            stream: StreamId::parse(stream.clone()).map_err(|e| StoreError::corrupt(&stream, version, e))?,
            version,
            reason: error.to_string(),
        }),
    }
}

#[async_trait]
impl StreamScan for SqliteStore {
    async fn scan_after(&self, after: Option<&(StreamId, u64)>, limit: usize) -> Result<Vec<ScannedEvent>, StoreError> {
        let (stream, version) = after.map_or((String::new(), 0), |(s, v)| (s.as_str().to_owned(), *v));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            // A row-value comparison walks the UNIQUE (stream_id, version) index.
            let mut statement = conn
                .prepare_cached(&format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE (stream_id, version) > (?1, ?2)
                     ORDER BY stream_id, version LIMIT ?3"
                ))
                .map_err(sql_error)?;
            let mut rows = statement.query(params![stream, version, limit]).map_err(sql_error)?;
            let mut scanned = Vec::new();
            while let Some(row) = rows.next().map_err(sql_error)? {
                scanned.push(scanned_from_row(row)?);
            }
            Ok(scanned)
        })
        .await
    }
}
