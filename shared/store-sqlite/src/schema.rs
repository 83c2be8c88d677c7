//! The database schema, named once. Every table the store, the projections
//! and the tests touch is created here.

use rusqlite::Connection;

/// Creates the tables and indexes if they do not exist.
pub(crate) fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "
        CREATE TABLE IF NOT EXISTS events (
            seq             INTEGER PRIMARY KEY AUTOINCREMENT, -- local commit order, for the in-process tail
            stream_id       TEXT    NOT NULL,
            version         INTEGER NOT NULL,
            event_id        TEXT    NOT NULL UNIQUE,
            event_type      TEXT    NOT NULL,
            schema          INTEGER NOT NULL,
            data            TEXT    NOT NULL,
            metadata        TEXT    NOT NULL,
            ts              INTEGER NOT NULL,
            hash            TEXT    NOT NULL,
            snapshot        TEXT,
            snapshot_schema INTEGER,
            UNIQUE (stream_id, version)
        );
        CREATE INDEX IF NOT EXISTS events_snapshots ON events (stream_id, version) WHERE snapshot IS NOT NULL;
        CREATE INDEX IF NOT EXISTS events_by_time ON events (stream_id, ts);

        CREATE TABLE IF NOT EXISTS idempotency (
            key           TEXT    PRIMARY KEY,
            request_hash  TEXT    NOT NULL,
            status        INTEGER NOT NULL,
            response      TEXT    NOT NULL,
            expires_at_ms INTEGER NOT NULL
        );

        -- Inline read models: rows written in the same transaction as the events.
        CREATE TABLE IF NOT EXISTS inline_views (
            model   TEXT    NOT NULL,
            key     TEXT    NOT NULL,
            version INTEGER NOT NULL,
            row     TEXT    NOT NULL,
            PRIMARY KEY (model, key)
        );

        CREATE TABLE IF NOT EXISTS order_summary (
            order_id     TEXT    PRIMARY KEY,
            customer_id  TEXT    NOT NULL,
            placed_at_ms INTEGER NOT NULL,
            version      INTEGER NOT NULL,
            row          TEXT    NOT NULL
        );
        CREATE INDEX IF NOT EXISTS order_summary_by_customer
            ON order_summary (customer_id, placed_at_ms DESC, order_id DESC);

        CREATE TABLE IF NOT EXISTS sales_by_day (
            day           TEXT    PRIMARY KEY,
            orders        INTEGER NOT NULL,
            units         INTEGER NOT NULL,
            revenue_cents INTEGER NOT NULL
        );

        -- Per projection and stream: the last version applied.
        CREATE TABLE IF NOT EXISTS checkpoints (
            projection TEXT    NOT NULL,
            stream_id  TEXT    NOT NULL,
            version    INTEGER NOT NULL,
            PRIMARY KEY (projection, stream_id)
        );

        -- How far the in-process tail has fed the projections (a hint: the
        -- per-stream checkpoints make re-feeding harmless).
        CREATE TABLE IF NOT EXISTS tail_cursor (
            consumer TEXT    PRIMARY KEY,
            seq      INTEGER NOT NULL
        );
        ",
    )
}
