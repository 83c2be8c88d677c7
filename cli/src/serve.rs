//! `tally serve`: the API on 127.0.0.1 with the SQLite store and the
//! in-process projection tail.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tally_api::{ApiConfig, AppState};
use tally_domain::views::PROJECTIONS;
use tally_store_sqlite::{SqliteStore, Tailer, projection_sink};

pub async fn run(port: u16, db: &Path, snapshot_interval: u64) -> anyhow::Result<()> {
    let store = SqliteStore::open(db).with_context(|| format!("cannot open the store at {}", db.display()))?;
    let sinks = PROJECTIONS
        .iter()
        .filter_map(|name| projection_sink(name, &store))
        .collect();
    tokio::spawn(Tailer::new(store.clone(), sinks).run());

    let config = ApiConfig::with_snapshot_interval((snapshot_interval > 0).then_some(snapshot_interval));
    let state = AppState::new(Arc::new(store.clone()), Arc::new(store), config);
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    tracing::info!(address = %listener.local_addr()?, db = %db.display(), "tally serving");
    axum::serve(listener, tally_api::router(state))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutting down");
        })
        .await?;
    Ok(())
}
