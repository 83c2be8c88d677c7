//! Which store an operator command works on: `--db PATH`, the embedded
//! SQLite store `tally serve` uses. (The AWS store, `--aws`, will plug in
//! here: the operations take the store ports, not this type.)
//!
//! An operator command never creates a store by accident: a mistyped path
//! is an error, not a new empty database that then "verifies" fine.

use std::path::PathBuf;

use anyhow::{Context, bail};
use tally_store_sqlite::SqliteStore;

use crate::DEFAULT_DB;

/// The `--db` option.
#[derive(clap::Args, Debug, Clone)]
pub struct StoreArgs {
    /// SQLite database file of the embedded store (the one `tally serve` uses).
    #[arg(long, env = "TALLY_DB", default_value = DEFAULT_DB, value_name = "PATH")]
    pub db: PathBuf,
}

impl StoreArgs {
    /// Opens the store, which must exist.
    pub fn open_existing(&self) -> anyhow::Result<SqliteStore> {
        let db = &self.db;
        if !db.exists() {
            bail!("no store at {}: pass --db PATH (or set TALLY_DB)", db.display());
        }
        if !db.is_file() {
            bail!("{} is not a database file", db.display());
        }
        self.open()
    }

    /// Opens the store, creating it if missing (an import may start one).
    pub fn open(&self) -> anyhow::Result<SqliteStore> {
        SqliteStore::open(&self.db).with_context(|| format!("cannot open the store at {}", self.db.display()))
    }
}
