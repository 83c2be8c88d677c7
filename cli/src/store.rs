//! Which store an operator command works on: `--db PATH`, the embedded
//! SQLite store `tally serve` uses, or `--aws`, a deployed stack's DynamoDB
//! tables (standard AWS configuration, `AWS_ENDPOINT_URL` included; table
//! names as template.yaml gives them for `--stage`, each overridable by the
//! same `TALLY_*_TABLE` variable the Lambdas read).
//!
//! An operator command never creates a store by accident: a mistyped path
//! is an error, not a new empty database that then "verifies" fine, and a
//! stage whose events table does not exist is an error too.

use std::path::PathBuf;

use anyhow::{Context, bail};
use aws_sdk_dynamodb::types::AttributeValue;
use tally_store_dynamodb::schema::{ENV_EVENTS_TABLE, EVENTS_PK, EVENTS_SK};
use tally_store_dynamodb::{DynamoConfig, DynamoStore, Settings, StageNames};
use tally_store_sqlite::SqliteStore;

use crate::DEFAULT_DB;

/// The `--db` / `--aws` options.
#[derive(clap::Args, Debug, Clone)]
pub struct StoreArgs {
    /// SQLite database file of the embedded store (the one `tally serve` uses).
    #[arg(long, env = "TALLY_DB", default_value = DEFAULT_DB, value_name = "PATH")]
    pub db: PathBuf,
    /// Work on a deployed stack's DynamoDB tables instead of --db (AWS
    /// settings from the standard chain; AWS_ENDPOINT_URL for LocalStack or
    /// the emulator).
    #[arg(long)]
    pub aws: bool,
    /// With --aws: the stack's stage (template parameter Stage); tables are
    /// tally-<stage>-events, -order-summary, … unless TALLY_*_TABLE says otherwise.
    #[arg(long, env = "TALLY_STAGE", default_value = "dev", value_name = "STAGE")]
    pub stage: String,
}

/// A deployed stack's tables.
#[derive(Debug, Clone)]
pub struct Aws {
    /// The SDK client.
    pub client: aws_sdk_dynamodb::Client,
    /// The table names.
    pub names: StageNames,
    /// The event store, on the events table.
    pub store: DynamoStore,
}

/// The store a command works on.
pub enum Backend {
    /// The embedded store.
    Sqlite(SqliteStore),
    /// DynamoDB.
    Aws(Box<Aws>),
}

impl Backend {
    /// The event store port of either.
    pub fn events(&self) -> &dyn tally_core::EventStore {
        match self {
            Self::Sqlite(store) => store,
            Self::Aws(aws) => &aws.store,
        }
    }
}

impl StoreArgs {
    /// Opens the store, which must exist.
    pub async fn open_backend(&self) -> anyhow::Result<Backend> {
        if self.aws {
            return Ok(Backend::Aws(Box::new(self.open_aws().await?)));
        }
        self.open_existing().map(Backend::Sqlite)
    }

    /// Opens the store (which must exist), creating an embedded one if missing.
    pub async fn open_or_create(&self) -> anyhow::Result<Backend> {
        if self.aws {
            return Ok(Backend::Aws(Box::new(self.open_aws().await?)));
        }
        self.open().map(Backend::Sqlite)
    }

    /// The stack's tables, checked to exist.
    pub async fn open_aws(&self) -> anyhow::Result<Aws> {
        let names = StageNames::new(&self.stage);
        let sdk = aws_config::load_from_env().await;
        let client = aws_sdk_dynamodb::Client::new(&sdk);
        let events = names.require(ENV_EVENTS_TABLE)?;
        // A read of a key no event has: cheap, and it fails if the table is not there.
        client
            .get_item()
            .table_name(&events)
            .key(EVENTS_PK, AttributeValue::S("#probe".to_owned()))
            .key(EVENTS_SK, AttributeValue::N("0".to_owned()))
            .send()
            .await
            .map_err(aws_sdk_dynamodb::Error::from)
            .with_context(|| {
                format!(
                    "cannot reach the events table {events} (stage {:?}): is the stack deployed, \
                     and are the AWS settings (region, credentials, AWS_ENDPOINT_URL) right?",
                    self.stage
                )
            })?;
        let store = DynamoStore::new(client.clone(), DynamoConfig::from_settings(&names)?);
        Ok(Aws { client, names, store })
    }

    /// Opens the embedded store, which must exist.
    pub fn open_existing(&self) -> anyhow::Result<SqliteStore> {
        let db = &self.db;
        if !db.exists() {
            bail!(
                "no store at {}: pass --db PATH (or set TALLY_DB), or --aws",
                db.display()
            );
        }
        if !db.is_file() {
            bail!("{} is not a database file", db.display());
        }
        self.open()
    }

    /// Opens the embedded store, creating it if missing (an import may start one).
    pub fn open(&self) -> anyhow::Result<SqliteStore> {
        SqliteStore::open(&self.db).with_context(|| format!("cannot open the store at {}", self.db.display()))
    }
}
