//! tally-store-sqlite: the embedded store. Events, snapshots, idempotency
//! records, read models and projection checkpoints live in one SQLite
//! database, so `tally serve` runs the whole system on one machine.
//!
//! It is a real store, not a demo: WAL with `synchronous=FULL`, so a command
//! acknowledged to a client survives a crash or power cut. All writes go
//! through one writer thread that groups concurrent commands into one durable
//! transaction (group commit), each command in its own savepoint so one
//! failing condition never undoes another command. Several processes may open
//! the same file: their writers take SQLite's write lock in turn and a lost
//! race is a version conflict, never corruption.
//!
//! The eventual models live in generations (see `schema`), so that a
//! rebuild can fill a new one beside the one readers see and switch them in
//! one transaction; [`SqliteGenerations`] drives that for `tally rebuild`,
//! and the store reads its whole history in bulk through the core's
//! `History` and `StreamScan` ports for replays and verification.

mod events;
mod generations;
mod history;
mod projections;
mod schema;
mod tail;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};
use tally_core::StoreError;
use tokio::sync::watch;

pub use generations::SqliteGenerations;
pub use projections::{OrderProjectionSink, batch_sink, live_sink, projection_sink};
pub use tail::{TAIL_BATCH, Tailer};
use writer::Writer;

/// The embedded store. Cheap to clone: clones share the writer and readers.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Writer,
    readers: Mutex<Vec<Connection>>,
    committed: watch::Sender<u64>,
}

/// Whether SQLite says "busy, try later" (another writer holds the lock).
pub(crate) fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Maps a SQLite error to the store's error: a busy database is retryable.
pub(crate) fn sql_error(error: rusqlite::Error) -> StoreError {
    if is_busy(&error) {
        StoreError::Unavailable(Box::new(error))
    } else {
        StoreError::Backend(Box::new(error))
    }
}

fn open_connection(path: &Path, read_only: bool) -> Result<Connection, rusqlite::Error> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // Model tables are named per generation, so statements are too: room
    // for every model's statements of a live and a building generation.
    conn.set_prepared_statement_cache_capacity(128);
    // Every write runs in a savepoint (group commit), whose sub-journal
    // would otherwise be a temporary file: keep it in memory. A larger page
    // cache keeps a rebuild's model tables and indexes out of the kernel's.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "cache_size", if read_only { -16_384 } else { -131_072 })?;
    if !read_only {
        // FULL: the WAL is synced at every commit, so an acknowledged command
        // survives a power cut (group commit keeps that affordable).
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
    }
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates its schema.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Backend(Box::new(e)))?;
        }
        let conn = open_connection(&path, false).map_err(sql_error)?;
        schema::migrate(&conn).map_err(sql_error)?;
        let (committed, _) = watch::channel(0);
        let writer = Writer::start(conn, committed.clone()).map_err(|e| StoreError::Backend(Box::new(e)))?;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                writer,
                readers: Mutex::new(Vec::new()),
                committed,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// How many events the store holds, over all streams.
    pub async fn count_events(&self) -> Result<u64, StoreError> {
        self.read(|conn| {
            conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
                .map_err(sql_error)
        })
        .await
    }

    /// A receiver that changes whenever a write transaction commits.
    pub fn subscribe_commits(&self) -> watch::Receiver<u64> {
        self.inner.committed.subscribe()
    }

    /// Runs `read` on a pooled read-only connection, off the async runtime.
    pub(crate) async fn read<T, F>(&self, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let pooled = inner.readers.lock().ok().and_then(|mut pool| pool.pop());
            let conn = match pooled {
                Some(conn) => conn,
                None => open_connection(&inner.path, true).map_err(sql_error)?,
            };
            let result = read(&conn);
            if let Ok(mut pool) = inner.readers.lock() {
                pool.push(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Backend(Box::new(e)))?
    }

    /// Runs `write` in its own savepoint inside the writer's next group
    /// commit; answers once that transaction is durable. An `Err` from
    /// `write` rolls back its savepoint only.
    pub(crate) async fn write<T, F>(&self, write: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.inner.writer.submit(write).await
    }
}
