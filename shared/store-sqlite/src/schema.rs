//! The database schema, named once. Every table the store, the projections
//! and the tests touch is created here.
//!
//! The eventual models live in generations: each generation of a model is a
//! pair of tables of its own, `<model>_g<n>` and `<model>_checkpoints_g<n>`,
//! and `projection_generations` names the one readers see (`live`), the one
//! a blue-green rebuild is filling (`building`, with its replay progress) and
//! those waiting to be dropped (`retired`). Switching readers is one UPDATE;
//! dropping a generation is a DROP TABLE, not a delete of millions of rows.
//! Generation numbers only grow, so a table name is never reused.

use rusqlite::{Connection, OptionalExtension, params};
use tally_domain::views;

/// The tables that are not per generation.
const BASE: &str = "
    CREATE TABLE IF NOT EXISTS events (
        seq             INTEGER PRIMARY KEY AUTOINCREMENT, -- local commit order: the tail and replays read by it
        stream_id       TEXT    NOT NULL,
        version         INTEGER NOT NULL,
        event_id        TEXT    NOT NULL UNIQUE,
        event_type      TEXT    NOT NULL,
        schema          INTEGER NOT NULL,
        data            TEXT    NOT NULL,
        metadata        TEXT    NOT NULL,
        ts              INTEGER NOT NULL,
        hash            TEXT    NOT NULL,
        snapshot_digest TEXT,                              -- covered by hash: the snapshot below is checked against it
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

    -- How far the in-process tail has fed the projections (a hint: the
    -- per-stream checkpoints make re-feeding harmless).
    CREATE TABLE IF NOT EXISTS tail_cursor (
        consumer TEXT    PRIMARY KEY,
        seq      INTEGER NOT NULL
    );

    -- The generations of each eventual model. replay_seq is a rebuild's
    -- progress (every event up to that commit sequence number is applied to
    -- the generation); NULL when no rebuild is filling it.
    CREATE TABLE IF NOT EXISTS projection_generations (
        projection    TEXT    NOT NULL,
        generation    INTEGER NOT NULL,
        state         TEXT    NOT NULL CHECK (state IN ('live', 'building', 'retired')),
        replay_seq    INTEGER,
        created_at_ms INTEGER NOT NULL,
        PRIMARY KEY (projection, generation)
    );
    CREATE UNIQUE INDEX IF NOT EXISTS one_live_generation
        ON projection_generations (projection) WHERE state = 'live';
    CREATE UNIQUE INDEX IF NOT EXISTS one_building_generation
        ON projection_generations (projection) WHERE state = 'building';

    -- Who is rebuilding a projection, and until when: at most one rebuild
    -- of a projection runs at a time, and a crashed run's lease expires.
    CREATE TABLE IF NOT EXISTS rebuild_leases (
        projection    TEXT    PRIMARY KEY,
        holder        TEXT    NOT NULL,
        expires_at_ms INTEGER NOT NULL
    );
";

/// Where a generation stands.
pub(crate) const LIVE: &str = "live";
/// Being filled by a blue-green rebuild.
pub(crate) const BUILDING: &str = "building";
/// Replaced; waiting to be dropped.
pub(crate) const RETIRED: &str = "retired";

/// An eventual model the store keeps in generations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Model {
    /// `order_summary`: one row per order, indexed by customer.
    OrderSummary,
    /// `sales_by_day`: one row per UTC day.
    SalesByDay,
}

impl Model {
    /// Every model, in `views::PROJECTIONS` order.
    pub(crate) const ALL: [Model; 2] = [Model::OrderSummary, Model::SalesByDay];

    /// The projection's name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::OrderSummary => views::ORDER_SUMMARY,
            Self::SalesByDay => views::SALES_BY_DAY,
        }
    }

    /// The model called `name`, if any.
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The rows table of generation `generation`.
    pub(crate) fn table(self, generation: u64) -> String {
        format!("{}_g{generation}", self.name())
    }

    /// The checkpoints table of generation `generation`.
    pub(crate) fn checkpoints(self, generation: u64) -> String {
        format!("{}_checkpoints_g{generation}", self.name())
    }

    /// Creates generation `generation`'s tables.
    pub(crate) fn create(self, conn: &Connection, generation: u64) -> rusqlite::Result<()> {
        let (table, checkpoints) = (self.table(generation), self.checkpoints(generation));
        let rows = match self {
            Self::OrderSummary => format!(
                "CREATE TABLE IF NOT EXISTS {table} (
                     order_id     TEXT    PRIMARY KEY,
                     customer_id  TEXT    NOT NULL,
                     placed_at_ms INTEGER NOT NULL,
                     version      INTEGER NOT NULL,
                     row          TEXT    NOT NULL
                 );
                 CREATE INDEX IF NOT EXISTS {table}_by_customer
                     ON {table} (customer_id, placed_at_ms DESC, order_id DESC);"
            ),
            // Revenue is revenue_e15 × 10¹⁵ + revenue_cents: an INTEGER is
            // an i64, which about 289 maximum-size orders in a day overflow
            // (SQLite then turns the sum into an inexact REAL). Two
            // integers keep the sum exact and still added in SQL.
            Self::SalesByDay => format!(
                "CREATE TABLE IF NOT EXISTS {table} (
                     day           TEXT    PRIMARY KEY,
                     orders        INTEGER NOT NULL,
                     units         INTEGER NOT NULL,
                     revenue_cents INTEGER NOT NULL,
                     revenue_e15   INTEGER NOT NULL DEFAULT 0
                 );"
            ),
        };
        conn.execute_batch(&rows)?;
        // Per stream: the last version applied to this generation.
        conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {checkpoints} (
                 stream_id TEXT    PRIMARY KEY,
                 version   INTEGER NOT NULL
             ) WITHOUT ROWID;"
        ))
    }

    /// Drops generation `generation`'s tables.
    pub(crate) fn drop_tables(self, conn: &Connection, generation: u64) -> rusqlite::Result<()> {
        conn.execute_batch(&format!(
            "DROP TABLE IF EXISTS {}; DROP TABLE IF EXISTS {};",
            self.table(generation),
            self.checkpoints(generation)
        ))
    }
}

fn table_exists(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |_| Ok(()),
    )
    .optional()
    .map(|found| found.is_some())
}

/// Gives every model a live generation; a database from before generations
/// has its one-table models (`order_summary`, `sales_by_day`, `checkpoints`)
/// copied into generation 1 and dropped.
fn migrate_models(conn: &Connection, now_ms: i64) -> rusqlite::Result<()> {
    for model in Model::ALL {
        let known: i64 = conn.query_row(
            "SELECT COUNT(*) FROM projection_generations WHERE projection = ?1",
            [model.name()],
            |r| r.get(0),
        )?;
        if known > 0 {
            continue;
        }
        model.create(conn, 1)?;
        conn.execute(
            "INSERT INTO projection_generations (projection, generation, state, replay_seq, created_at_ms)
             VALUES (?1, 1, ?2, NULL, ?3)",
            params![model.name(), LIVE, now_ms],
        )?;
        let table = model.table(1);
        if table_exists(conn, model.name())? {
            let columns = match model {
                Model::OrderSummary => "order_id, customer_id, placed_at_ms, version, row",
                Model::SalesByDay => "day, orders, units, revenue_cents",
            };
            conn.execute_batch(&format!(
                "INSERT INTO {table} ({columns}) SELECT {columns} FROM {}",
                model.name()
            ))?;
        }
        if table_exists(conn, "checkpoints")? {
            conn.execute(
                &format!(
                    "INSERT INTO {} (stream_id, version) SELECT stream_id, version FROM checkpoints
                     WHERE projection = ?1",
                    model.checkpoints(1)
                ),
                [model.name()],
            )?;
        }
    }
    conn.execute_batch(
        "DROP TABLE IF EXISTS order_summary; DROP TABLE IF EXISTS sales_by_day; DROP TABLE IF EXISTS checkpoints;",
    )
}

/// A database from before snapshots were hashed gets the digest column; its
/// old snapshots have none, so loaders ignore them until the next append
/// writes a covered one.
fn add_snapshot_digest(conn: &Connection) -> rusqlite::Result<()> {
    let present: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info('events') WHERE name = 'snapshot_digest')",
        [],
        |r| r.get(0),
    )?;
    if !present {
        conn.execute_batch("ALTER TABLE events ADD COLUMN snapshot_digest TEXT")?;
    }
    Ok(())
}

/// Gives every `sales_by_day` generation from before the wide revenue its
/// `revenue_e15` column, and carries whole 10¹⁵ cents of `revenue_cents`
/// into it (rows copied from older layouts hold the whole sum there), so
/// that adding to `revenue_cents` cannot overflow. Both steps are no-ops
/// once done.
fn widen_sales_revenue(conn: &Connection) -> rusqlite::Result<()> {
    let generations: Vec<u64> = conn
        .prepare("SELECT generation FROM projection_generations WHERE projection = ?1")?
        .query_map([Model::SalesByDay.name()], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for generation in generations {
        let table = Model::SalesByDay.table(generation);
        if !table_exists(conn, &table)? {
            continue;
        }
        let widened: bool = conn.query_row(
            "SELECT COUNT(*) > 0 FROM pragma_table_info(?1) WHERE name = 'revenue_e15'",
            [&table],
            |r| r.get(0),
        )?;
        if !widened {
            conn.execute_batch(&format!(
                "ALTER TABLE {table} ADD COLUMN revenue_e15 INTEGER NOT NULL DEFAULT 0"
            ))?;
        }
        conn.execute_batch(&format!(
            "UPDATE {table} SET revenue_e15 = revenue_e15 + revenue_cents / {REVENUE_E15},
                 revenue_cents = revenue_cents % {REVENUE_E15}
             WHERE abs(revenue_cents) >= {REVENUE_E15}"
        ))?;
    }
    Ok(())
}

/// The unit of `sales_by_day.revenue_e15`, in cents.
pub(crate) const REVENUE_E15: i64 = 1_000_000_000_000_000;

/// Creates the tables and indexes if they do not exist, and migrates older
/// layouts. Several processes may open one file at once: the model
/// migration runs under the write lock, so it happens once.
pub(crate) fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(BASE)?;
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let migrated = add_snapshot_digest(conn)
        .and_then(|()| migrate_models(conn, chrono::Utc::now().timestamp_millis()))
        .and_then(|()| widen_sales_revenue(conn));
    match migrated {
        Ok(()) => conn.execute_batch("COMMIT"),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}
