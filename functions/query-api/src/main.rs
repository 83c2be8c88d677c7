//! query-api λ: the API's query routes over the DynamoDB read tables, with
//! the events table behind `min_version` (read your writes), stream history
//! and time travel. It never writes.
//!
//! Configuration, read once at cold start: the standard AWS chain,
//! `TALLY_EVENTS_TABLE`, `TALLY_SNAPSHOT_INTERVAL`, `TALLY_INVENTORY_TABLE`,
//! `TALLY_ORDER_SUMMARY_TABLE`, `TALLY_SALES_TABLE`.

use std::sync::Arc;

use lambda_http::{Error, run, tracing};
use tally_api::{ApiConfig, QueryState};
use tally_store_dynamodb::{DynamoConfig, DynamoReadModels, DynamoStore, Env, ReadTables, client_from_env};

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing::init_default_subscriber();
    let store_config = DynamoConfig::reader_from_env()?;
    let config = ApiConfig::with_snapshot_interval(store_config.snapshot_interval);
    let client = client_from_env().await;
    let reads = DynamoReadModels::new(client.clone(), ReadTables::from_settings(&Env)?);
    let store = DynamoStore::new(client, store_config);
    run(tally_api::query_router(QueryState::new(
        Arc::new(store),
        Arc::new(reads),
        config,
    )))
    .await
}
