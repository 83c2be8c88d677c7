//! command-api λ: validates a command, decides its events and appends them to
//! the DynamoDB `events` table with conditional writes. It publishes and
//! projects nothing itself: DynamoDB Streams are the outbox. Each event's
//! `actor` is the caller the HTTP API's authorizer established.
//!
//! Configuration, read once at cold start: the standard AWS chain (region,
//! credentials, `AWS_ENDPOINT_URL`) and the table names in
//! `TALLY_EVENTS_TABLE`, `TALLY_IDEMPOTENCY_TABLE`, `TALLY_INVENTORY_TABLE`,
//! `TALLY_SNAPSHOT_INTERVAL`.

use std::sync::Arc;

use lambda_http::{Error, run, tracing};
use tally_api::{ApiConfig, CommandState};
use tally_store_dynamodb::{DynamoConfig, DynamoStore, client_from_env};

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing::init_default_subscriber();
    let store_config = DynamoConfig::from_env()?;
    let config = ApiConfig::with_snapshot_interval(store_config.snapshot_interval);
    // A lost race hands back the winner's item: the command loop's retry
    // decides on it without a re-read (tally_core::run_command).
    let store = DynamoStore::new(client_from_env().await, store_config);
    let router = tally_api::command_router(CommandState::new(Arc::new(store), config));
    // Events name the caller API Gateway's authorizer established.
    run(tally_api::actor::from_api_gateway(router)).await
}
