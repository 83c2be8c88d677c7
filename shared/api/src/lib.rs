//! tally-api: the HTTP API as one axum [`Router`], exactly as the design's
//! table. `tally serve` serves it over the SQLite store; the command and
//! query Lambdas serve the same router through lambda_http over DynamoDB.
//!
//! Handlers parse every input into the domain's types at the edge (so bad
//! input is a 4xx JSON error that writes nothing), call the
//! [`service::CommandService`] or the [`tally_domain::views::ReadModels`]
//! port, and map failures to one status each in [`error`]. No handler knows
//! which store it runs on.

pub mod error;
mod http;
pub mod service;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tally_core::EventStore;
use tally_domain::views::ReadModels;

pub use error::ApiError;
pub use service::{Accepted, CommandContext, CommandService, ServiceConfig};

/// The OpenAPI document served at `/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// Default largest request body (64 KiB: an order of 50 lines is ~5 KiB).
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

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    commands: CommandService,
    store: Arc<dyn EventStore>,
    reads: Arc<dyn ReadModels>,
    config: ApiConfig,
}

impl AppState {
    /// State over an event store and the read models.
    pub fn new(store: Arc<dyn EventStore>, reads: Arc<dyn ReadModels>, config: ApiConfig) -> Self {
        Self {
            commands: CommandService::new(Arc::clone(&store), config.service),
            store,
            reads,
            config,
        }
    }
}

/// The whole API: commands, queries, streams and `/openapi.json`.
pub fn router(state: AppState) -> Router {
    http::finish(http::command_routes().merge(http::query_routes()), state)
}

/// The command routes only (the command Lambda).
pub fn command_router(state: AppState) -> Router {
    http::finish(http::command_routes(), state)
}

/// The query routes only (the query Lambda).
pub fn query_router(state: AppState) -> Router {
    http::finish(http::query_routes(), state)
}
