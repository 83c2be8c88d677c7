//! tally-api: the HTTP API as one axum [`Router`], exactly as the design's
//! table. `tally serve` serves it over the SQLite store; the command and
//! query Lambdas serve the same router through lambda_http over DynamoDB.
//!
//! Handlers parse every input into the domain's types at the edge (so bad
//! input is a 4xx JSON error that writes nothing), call the
//! [`service::CommandService`] or the [`tally_domain::views::ReadModels`]
//! port, and map failures to one status each in [`error`]. No handler knows
//! which store it runs on.
//!
//! Who sent a command comes from the authorizer, never from the request's
//! own headers ([`actor`]); the loopback server adds the guard a browser
//! on the same machine needs ([`loopback`]).

pub mod actor;
pub mod error;
mod http;
pub mod loopback;
pub mod service;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tally_core::EventStore;
use tally_domain::views::ReadModels;

pub use actor::Actor;
pub use error::ApiError;
pub use service::{Accepted, CommandContext, CommandService, ServiceConfig};

/// The OpenAPI document served at `/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// Default largest request body (64 KiB: an order of 32 lines is ~5 KiB).
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// Tunables of the API.
#[derive(Debug, Clone, Copy)]
pub struct ApiConfig {
    /// The command path's tunables.
    pub service: ServiceConfig,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// How long a query with `min_version` waits for an eventual read model
    /// before answering from the event store.
    pub min_version_wait: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            service: ServiceConfig::default(),
            body_limit: DEFAULT_BODY_LIMIT,
            min_version_wait: Duration::from_millis(500),
        }
    }
}

impl ApiConfig {
    /// The defaults, with a snapshot every `interval` events per stream
    /// (`None`: never).
    pub fn with_snapshot_interval(interval: Option<u64>) -> Self {
        let mut config = Self::default();
        config.service.snapshots = tally_core::SnapshotPolicy { every: interval };
        config
    }
}

/// What the command handlers share.
#[derive(Clone)]
pub struct CommandState {
    commands: CommandService,
    store: Arc<dyn EventStore>,
    config: ApiConfig,
}

impl CommandState {
    /// Command state over an event store.
    pub fn new(store: Arc<dyn EventStore>, config: ApiConfig) -> Self {
        Self {
            commands: CommandService::new(Arc::clone(&store), config.service),
            store,
            config,
        }
    }
}

/// What the query handlers share.
#[derive(Clone)]
pub struct QueryState {
    store: Arc<dyn EventStore>,
    reads: Arc<dyn ReadModels>,
    config: ApiConfig,
}

impl QueryState {
    /// Query state over the read models, with the event store for
    /// read-your-writes fallbacks, history and time travel.
    pub fn new(store: Arc<dyn EventStore>, reads: Arc<dyn ReadModels>, config: ApiConfig) -> Self {
        Self { store, reads, config }
    }
}

/// Both halves, for a process that serves the whole API.
#[derive(Clone)]
pub struct AppState {
    commands: CommandState,
    queries: QueryState,
}

impl AppState {
    /// State over an event store and the read models.
    pub fn new(store: Arc<dyn EventStore>, reads: Arc<dyn ReadModels>, config: ApiConfig) -> Self {
        Self {
            commands: CommandState::new(Arc::clone(&store), config),
            queries: QueryState::new(store, reads, config),
        }
    }
}

/// The whole API: commands, queries, streams and `/openapi.json`.
pub fn router(state: AppState) -> Router {
    let limit = state.commands.config.body_limit;
    let routes = http::command_routes()
        .with_state(state.commands)
        .merge(http::query_routes().with_state(state.queries));
    actor::scoped(http::finish(routes, limit))
}

/// The command routes only (the command Lambda: wrap it in
/// [`actor::from_api_gateway`] so events name the authenticated caller).
pub fn command_router(state: CommandState) -> Router {
    let limit = state.config.body_limit;
    actor::scoped(http::finish(http::command_routes().with_state(state), limit))
}

/// The query routes only (the query Lambda).
pub fn query_router(state: QueryState) -> Router {
    let limit = state.config.body_limit;
    http::finish(http::query_routes().with_state(state), limit)
}
