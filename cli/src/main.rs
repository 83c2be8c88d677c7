//! `tally`: the operator's command line. `tally serve` runs the whole system
//! on one machine: the HTTP API over the embedded SQLite store, with the
//! eventual projections fed in-process from what the store committed.
//! `tally dlq` lists and redrives a projection's dead letters on AWS.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod dlq;
mod serve;

/// Default database path, shared by every subcommand that opens the embedded store.
pub const DEFAULT_DB: &str = "data/tally.db";

#[derive(Parser)]
#[command(name = "tally", version, about = "Tally: event-sourced orders and inventory", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API on 127.0.0.1 over the embedded SQLite store.
    ///
    /// Example: `tally serve --port 3000 --db data/tally.db`
    Serve {
        /// TCP port on 127.0.0.1 (0 picks a free one).
        #[arg(long, env = "TALLY_PORT", default_value_t = 3000)]
        port: u16,
        /// SQLite database file (created if missing).
        #[arg(long, env = "TALLY_DB", default_value = DEFAULT_DB)]
        db: PathBuf,
        /// Store a snapshot every N events per stream (0: never).
        #[arg(long, env = "TALLY_SNAPSHOT_INTERVAL", default_value_t = 1)]
        snapshot_interval: u64,
    },
    /// A projection's dead-letter queue on AWS: list, redrive.
    ///
    /// Example: `tally dlq list order_summary --stage prod`
    Dlq(dlq::DlqArgs),
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Serve {
            port,
            db,
            snapshot_interval,
        } => serve::run(port, &db, snapshot_interval).await,
        Command::Dlq(args) => dlq::run(args).await.map(drop),
    }
}
