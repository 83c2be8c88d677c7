//! [`EventStore`] on SQLite: conditional, atomic multi-stream appends;
//! snapshot-aware loading; ranges; time reads; idempotency records.
//! It never rewrites a stored event: the hash chain covers every column.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::Value;
use tally_core::{
    AppendBatch, AppendOutcome, At, EventEnvelope, EventStore, IdempotencyRecord, LoadedStream, Snapshot, StoreError,
    StreamAppend, StreamId,
};

use crate::{SqliteStore, sql_error};

/// The envelope's columns, then the inline snapshot's.
pub(crate) const EVENT_COLUMNS: &str = "stream_id, version, event_id, event_type, schema, data, metadata, ts, hash, snapshot_digest, snapshot, snapshot_schema";

/// How many columns [`EVENT_COLUMNS`] names: a query that selects more puts them after.
pub(crate) const EVENT_COLUMN_COUNT: usize = 12;

/// The envelope stored in the ten columns from `first` on (`stream_id,
/// version, event_id, event_type, schema, data, metadata, ts, hash,
/// snapshot_digest`).
pub(crate) fn envelope_at(row: &Row<'_>, first: usize) -> Result<EventEnvelope, StoreError> {
    let stream: String = row.get(first).map_err(sql_error)?;
    let version: u64 = row.get(first + 1).map_err(sql_error)?;
    let text = |i: usize| -> Result<String, StoreError> { row.get(first + i).map_err(sql_error) };
    let json = |i: usize| -> Result<Value, StoreError> {
        serde_json::from_str(&text(i)?).map_err(|e| StoreError::corrupt(&stream, version, e))
    };
    Ok(EventEnvelope {
        stream_id: StreamId::parse(stream.clone()).map_err(|e| StoreError::corrupt(&stream, version, e))?,
        version,
        event_id: text(2)?.parse().map_err(|e| StoreError::corrupt(&stream, version, e))?,
        event_type: text(3)?,
        schema: row.get(first + 4).map_err(sql_error)?,
        data: json(5)?,
        metadata: serde_json::from_value(json(6)?).map_err(|e| StoreError::corrupt(&stream, version, e))?,
        timestamp_ms: row.get(first + 7).map_err(sql_error)?,
        hash: text(8)?,
        snapshot_digest: row.get(first + 9).map_err(sql_error)?,
    })
}

/// One stored row: the envelope and, when present, its inline snapshot.
pub(crate) fn event_from_row(row: &Row<'_>) -> Result<(EventEnvelope, Option<Snapshot>), StoreError> {
    let envelope = envelope_at(row, 0)?;
    let version = envelope.version;
    let snapshot_text: Option<String> = row.get(10).map_err(sql_error)?;
    let snapshot_schema: Option<u32> = row.get(11).map_err(sql_error)?;
    // A snapshot that does not parse is a cache miss, not an error.
    let snapshot = match (snapshot_text, snapshot_schema) {
        (Some(text), Some(schema)) => Some(Snapshot {
            version,
            schema,
            state: serde_json::from_str(&text).unwrap_or(Value::Null),
        }),
        _ => None,
    };
    Ok((envelope, snapshot))
}

fn query_events(
    conn: &Connection,
    sql_where: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<(EventEnvelope, Option<Snapshot>)>, StoreError> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE {sql_where} ORDER BY version");
    let mut statement = conn.prepare_cached(&sql).map_err(sql_error)?;
    let mut rows = statement.query(params).map_err(sql_error)?;
    let mut events = Vec::new();
    while let Some(row) = rows.next().map_err(sql_error)? {
        events.push(event_from_row(row)?);
    }
    Ok(events)
}

fn head_version(conn: &Connection, stream: &StreamId) -> Result<u64, StoreError> {
    conn.prepare_cached("SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = ?1")
        .and_then(|mut s| s.query_row([stream.as_str()], |r| r.get(0)))
        .map_err(sql_error)
}

fn insert_stream(conn: &Connection, append: &StreamAppend) -> Result<u64, StoreError> {
    // The head check and UNIQUE(stream_id, version) together make the
    // condition: another writer's event at any of our versions is a conflict.
    if head_version(conn, &append.stream_id)? != append.expected_version {
        return Err(StoreError::WrongExpectedVersion {
            stream: append.stream_id.clone(),
            expected: append.expected_version,
            winner: None,
        });
    }
    let mut insert = conn
        .prepare_cached(&format!(
            "INSERT INTO events ({EVENT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
        ))
        .map_err(sql_error)?;
    for event in &append.events {
        let snapshot = append.snapshot.as_ref().filter(|s| s.version == event.version);
        let metadata = serde_json::to_string(&event.metadata).map_err(|e| StoreError::InvalidAppend(e.to_string()))?;
        let inserted = insert.execute(params![
            event.stream_id.as_str(),
            event.version,
            event.event_id.to_string(),
            event.event_type,
            event.schema,
            event.data.to_string(),
            metadata,
            event.timestamp_ms,
            event.hash,
            event.snapshot_digest,
            snapshot.map(|s| s.state.to_string()),
            snapshot.map(|s| s.schema),
        ]);
        if let Err(e) = inserted {
            return Err(match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::ConstraintViolation) => StoreError::WrongExpectedVersion {
                    stream: append.stream_id.clone(),
                    expected: append.expected_version,
                    winner: None,
                },
                _ => sql_error(e),
            });
        }
    }
    if let Some(view) = &append.view {
        conn.prepare_cached(
            "INSERT INTO inline_views (model, key, version, row) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (model, key) DO UPDATE SET version = excluded.version, row = excluded.row
             WHERE excluded.version > inline_views.version",
        )
        .and_then(|mut s| s.execute(params![view.model, view.key, view.version, view.row.to_string()]))
        .map_err(sql_error)?;
    }
    Ok(append.expected_version + append.events.len() as u64)
}

/// The stream up to version `upto` from its newest snapshot at or before
/// it, with the hash of the event before that snapshot (one more row).
fn load_upto(conn: &Connection, stream: &StreamId, upto: u64) -> Result<LoadedStream, StoreError> {
    let from: u64 = conn
        .prepare_cached(
            "SELECT COALESCE(MAX(version), 1) FROM events
             WHERE stream_id = ?1 AND version <= ?2 AND snapshot IS NOT NULL",
        )
        .and_then(|mut s| s.query_row(params![stream.as_str(), upto], |r| r.get(0)))
        .map_err(sql_error)?;
    let mut rows = query_events(
        conn,
        "stream_id = ?1 AND version BETWEEN ?2 AND ?3",
        params![stream.as_str(), from.saturating_sub(1).max(1), upto],
    )?;
    let base_hash = if from > 1 && rows.first().is_some_and(|(e, _)| e.version == from - 1) {
        Some(rows.remove(0).0.hash)
    } else {
        None
    };
    let snapshot = rows.first().and_then(|(_, s)| s.clone());
    Ok(LoadedStream {
        snapshot,
        events: rows.into_iter().map(|(e, _)| e).collect(),
        base_hash,
    })
}

fn insert_idempotency(conn: &Connection, record: &IdempotencyRecord, now_ms: i64) -> Result<(), StoreError> {
    // An expired record may be replaced; a live one is the other request's.
    let changed = conn
        .prepare_cached(
            "INSERT INTO idempotency (key, request_hash, status, response, expires_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (key) DO UPDATE SET request_hash = excluded.request_hash, status = excluded.status,
                 response = excluded.response, expires_at_ms = excluded.expires_at_ms
             WHERE idempotency.expires_at_ms <= ?6",
        )
        .and_then(|mut s| {
            s.execute(params![
                record.key,
                record.request_hash,
                record.status,
                record.response.to_string(),
                record.expires_at_ms,
                now_ms
            ])
        })
        .map_err(sql_error)?;
    if changed == 0 {
        return Err(StoreError::DuplicateIdempotencyKey {
            key: record.key.clone(),
        });
    }
    Ok(())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn load(&self, stream: &StreamId) -> Result<LoadedStream, StoreError> {
        let stream = stream.clone();
        self.read(move |conn| load_upto(conn, &stream, i64::MAX as u64)).await
    }

    async fn load_at(&self, stream: &StreamId, at: At) -> Result<LoadedStream, StoreError> {
        let stream = stream.clone();
        self.read(move |conn| {
            let upto = match at {
                At::Version(version) => version.min(i64::MAX as u64),
                At::Time(at_ms) => conn
                    .prepare_cached("SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = ?1 AND ts <= ?2")
                    .and_then(|mut s| s.query_row(params![stream.as_str(), at_ms], |r| r.get(0)))
                    .map_err(sql_error)?,
            };
            load_upto(conn, &stream, upto)
        })
        .await
    }

    async fn read_range(
        &self,
        stream: &StreamId,
        from: u64,
        to: Option<u64>,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let stream = stream.clone();
        let to = to.unwrap_or(i64::MAX as u64).min(i64::MAX as u64);
        self.read(move |conn| {
            let rows = query_events(
                conn,
                "stream_id = ?1 AND version BETWEEN ?2 AND ?3",
                params![stream.as_str(), from, to],
            )?;
            Ok(rows.into_iter().map(|(e, _)| e).collect())
        })
        .await
    }

    async fn read_until(&self, stream: &StreamId, at_ms: i64) -> Result<Vec<EventEnvelope>, StoreError> {
        let stream = stream.clone();
        self.read(move |conn| {
            let rows = query_events(conn, "stream_id = ?1 AND ts <= ?2", params![stream.as_str(), at_ms])?;
            Ok(rows.into_iter().map(|(e, _)| e).collect())
        })
        .await
    }

    async fn append(&self, batch: AppendBatch) -> Result<AppendOutcome, StoreError> {
        batch.check()?;
        self.write(move |conn| {
            let heads = batch
                .streams
                .iter()
                .map(|append| Ok((append.stream_id.clone(), insert_stream(conn, append)?)))
                .collect::<Result<Vec<_>, StoreError>>()?;
            if let Some(record) = &batch.idempotency {
                insert_idempotency(conn, record, now_ms())?;
            }
            Ok(AppendOutcome { heads })
        })
        .await
    }

    async fn idempotency_record(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        let key = key.to_owned();
        self.read(move |conn| {
            let found = conn
                .prepare_cached(
                    "SELECT request_hash, status, response, expires_at_ms FROM idempotency
                     WHERE key = ?1 AND expires_at_ms > ?2",
                )
                .and_then(|mut s| {
                    s.query_row(params![key, now_ms()], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, u16>(1)?,
                            r.get::<_, String>(2)?,
                            r.get(3)?,
                        ))
                    })
                    .optional()
                })
                .map_err(sql_error)?;
            found
                .map(|(request_hash, status, response, expires_at_ms)| {
                    Ok(IdempotencyRecord {
                        key: key.clone(),
                        request_hash,
                        status,
                        response: serde_json::from_str(&response)
                            .map_err(|e| StoreError::Backend(format!("idempotency record {key}: {e}").into()))?,
                        expires_at_ms,
                    })
                })
                .transpose()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_column_count_matches_the_column_list() {
        assert_eq!(super::EVENT_COLUMNS.split(',').count(), super::EVENT_COLUMN_COUNT);
    }
}
