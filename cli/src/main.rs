//! `tally`: the operator's command line. `tally serve` runs the whole system
//! on one machine: the HTTP API over the embedded SQLite store, with the
//! eventual projections fed in-process from what the store committed. The
//! other subcommands operate a store: rebuild a read model, verify the hash
//! chains and the read models, import a legacy system's state, inspect a
//! stream; `tally dlq` lists and redrives a projection's dead letters on AWS.
//!
//! Each subcommand is one module with its arguments and its `run`; the
//! operations themselves are the core's and the adapters' (generic over the
//! store ports), so `--db` (SQLite) and `--aws` (DynamoDB) run the same
//! logic. Errors end as one line on stderr and exit status 2; a
//! verification that finds a problem exits 1; nothing here panics on input.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod dlq;
mod import;
mod output;
mod progress;
mod rebuild;
mod serve;
mod store;
mod stream;
mod verify;

/// Default database path, shared by every subcommand that opens the embedded store.
pub const DEFAULT_DB: &str = "data/tally.db";

/// Exit status of a verification that found a problem (a broken chain, a wrong row).
pub const EXIT_FOUND: u8 = 1;
/// Exit status of a failure: bad input, unreadable store, failed operation.
pub const EXIT_FAILED: u8 = 2;

/// Exit status 1 when a check `found` a problem, else success.
pub fn found_if(found: bool) -> ExitCode {
    if found {
        ExitCode::from(EXIT_FOUND)
    } else {
        ExitCode::SUCCESS
    }
}

const EXAMPLES: &str = "\
Examples:
  tally serve --port 3000                       serve the API over data/tally.db
  tally rebuild order_summary                   blue-green rebuild of a read model
  tally rebuild order_summary --aws --stage prod   the same on a deployed stack
  tally verify chain                            check every stream's hash chain
  tally verify projections sales_by_day         diff a read model against a replay
  tally import legacy-inventory.csv --dry-run   show what an import would write
  tally stream show order-o-1                   a stream's events
  tally stream state inventory-SKU-42 --at 3    an aggregate's state at version 3
  tally dlq list order_summary --stage prod     a projection's dead letters on AWS

The store commands take --db PATH (default data/tally.db, or $TALLY_DB), or
--aws [--stage STAGE] for a deployed stack's DynamoDB tables (standard AWS
settings, AWS_ENDPOINT_URL included; tables named as template.yaml names them).
Exit status: 0 ok, 1 a verification found a problem, 2 an error.";

#[derive(Parser)]
#[command(name = "tally", version, about = "Tally: event-sourced orders and inventory", after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Serve(serve::ServeArgs),
    Rebuild(rebuild::RebuildArgs),
    Verify(verify::VerifyArgs),
    Import(import::ImportArgs),
    Stream(stream::StreamArgs),
    /// A projection's dead-letter queue on AWS: list, redrive.
    ///
    /// Example: `tally dlq list order_summary --stage prod`
    Dlq(dlq::DlqArgs),
}

/// Logs: the server's are JSON lines on stdout (what a log collector and the
/// tests read); an operator command's are plain warnings on stderr, so its
/// stdout stays its output.
fn init_logging(server: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if server { "info" } else { "warn" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    if server {
        tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(filter)
            .init();
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => serve::run(args).await.map(|()| ExitCode::SUCCESS),
        Command::Rebuild(args) => rebuild::run(args).await,
        Command::Verify(args) => verify::run(args).await,
        Command::Import(args) => import::run(args).await,
        Command::Stream(args) => stream::run(args).await,
        Command::Dlq(args) => dlq::run(args).await,
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(matches!(cli.command, Command::Serve(_)));
    match run(cli.command).await {
        Ok(code) => code,
        Err(error) => {
            // `{:#}` puts the whole chain of causes on one line.
            eprintln!("tally: {error:#}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}
