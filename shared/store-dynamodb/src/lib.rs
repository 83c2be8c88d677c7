//! tally-store-dynamodb: the `tally_core::EventStore` on DynamoDB, through the real AWS SDK.
//!
//! Table `events`: partition key `stream_id`, sort key `version`. One event
//! is one `PutItem` conditioned on `attribute_not_exists(version)`; several
//! events, several streams, an idempotency record or an inline read row are
//! one `TransactWriteItems` with a condition per item. A failed condition is
//! a version conflict naming the stream, never a lost write. Loading is one
//! descending `Query` that stops at the newest snapshot, paging through
//! `LastEvaluatedKey`, so a command costs about one read whatever the
//! stream's length.
//!
//! Table names and the endpoint come from the environment (standard AWS
//! configuration, `AWS_ENDPOINT_URL` included): nothing is hard-coded.

mod errors;
pub mod items;
pub mod schema;
mod store;

pub use store::{DynamoConfig, DynamoStore};

/// Builds an SDK client from the standard AWS configuration chain
/// (environment, profile, `AWS_ENDPOINT_URL`, …).
pub async fn client_from_env() -> aws_sdk_dynamodb::Client {
    let config = aws_config::load_from_env().await;
    aws_sdk_dynamodb::Client::new(&config)
}
