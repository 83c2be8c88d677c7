//! `tally serve`: the API on 127.0.0.1 with the SQLite store and the
//! in-process projection tail. It never operates on the store beyond what
//! the API and the tail do: rebuilds and checks are other subcommands, and
//! may run against the same file while it serves.
//!
//! It has no authentication: loopback keeps other machines out, and
//! [`tally_api::loopback::guard`] keeps web pages in a local browser out
//! (a request must name the served address as its Host, and a
//! state-changing one must be JSON and come from no other origin). Its
//! events record no `actor`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tally_api::{ApiConfig, AppState};
use tally_domain::views::PROJECTIONS;
use tally_store_sqlite::{SqliteStore, Tailer, batch_sink};

use crate::DEFAULT_DB;

/// Serve the HTTP API on 127.0.0.1 over the embedded SQLite store.
///
/// Commands and queries as in the design's API table; the eventual read
/// models are fed in-process from what the store commits. The database file
/// is created if missing. Stop with Ctrl-C.
///
/// No authentication: requests must be addressed to 127.0.0.1:PORT or
/// localhost:PORT, and POSTs must be `Content-Type: application/json` with
/// no foreign `Origin` (`curl --json '{...}'`).
///
/// Example: `tally serve --port 3000 --db data/tally.db`
#[derive(clap::Args)]
pub struct ServeArgs {
    /// TCP port on 127.0.0.1 (0 picks a free one).
    #[arg(long, env = "TALLY_PORT", default_value_t = 3000)]
    port: u16,
    /// SQLite database file (created if missing).
    #[arg(long, env = "TALLY_DB", default_value = DEFAULT_DB, value_name = "PATH")]
    db: PathBuf,
    /// Store a snapshot every N events per stream (0: never).
    #[arg(long, env = "TALLY_SNAPSHOT_INTERVAL", default_value_t = 1)]
    snapshot_interval: u64,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let ServeArgs {
        port,
        db,
        snapshot_interval,
    } = args;
    let store = SqliteStore::open(&db).with_context(|| format!("cannot open the store at {}", db.display()))?;
    let sinks = PROJECTIONS.iter().filter_map(|name| batch_sink(name, &store)).collect();
    tokio::spawn(Tailer::batched(store.clone(), sinks).run());

    let config = ApiConfig::with_snapshot_interval((snapshot_interval > 0).then_some(snapshot_interval));
    let state = AppState::new(Arc::new(store.clone()), Arc::new(store), config);
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    let served = listener.local_addr()?;
    tracing::info!(address = %served, db = %db.display(), "tally serving");
    // No authentication here, so no actor: the guard keeps browser pages
    // (CSRF, DNS rebinding) from using the API instead.
    let app = tally_api::loopback::guard(tally_api::router(state), served);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutting down");
        })
        .await?;
    Ok(())
}
