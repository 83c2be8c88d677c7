//! tally-store-dynamodb: the `tally_core::EventStore` on DynamoDB, through the real AWS SDK.
//!
//! Table `events`: partition key `stream_id`, sort key `version`. Every event
//! put is conditioned on `attribute_not_exists(version)`; appending after
//! version v > 0 also checks that item v exists (a put sees only its own
//! item, so without it an expected version beyond the head would leave a
//! gap). A new stream's single event is one `PutItem`; anything more (several
//! events or streams, the head check, an idempotency record, an inline read
//! row) is one `TransactWriteItems`. A failed condition is a version conflict
//! naming the stream, never a lost write, and hands back the winner's item. Loading is one
//! descending `Query` that stops at the newest snapshot, paging through
//! `LastEvaluatedKey`, so a command costs about one read whatever the
//! stream's length.
//!
//! The eventual read models live here too ([`projections`] for what the
//! projector writes, [`reads`] for what the query API reads): their
//! conditional writes are the same craft as the event store's.
//!
//! Table names and the endpoint come from the environment (standard AWS
//! configuration, `AWS_ENDPOINT_URL` included): nothing is hard-coded.

mod errors;
pub mod generations;
pub mod history;
pub mod items;
pub mod projections;
pub mod reads;
pub mod schema;
pub mod settings;
mod store;

pub use generations::{DynamoGenerations, LiveModel, LiveSlot, Slot, SlotSinks, SlotTables};
pub use history::{DynamoHistory, ScanCursor};
pub use projections::{DynamoProjectionSink, FailureLog, FailureRecord};
pub use reads::{DynamoReadModels, ReadTables};
pub use settings::{Env, MissingSetting, Settings, StageNames};
pub use store::{DynamoConfig, DynamoStore};

/// Builds an SDK client from the standard AWS configuration chain
/// (environment, profile, `AWS_ENDPOINT_URL`, …).
pub async fn client_from_env() -> aws_sdk_dynamodb::Client {
    let config = aws_config::load_from_env().await;
    aws_sdk_dynamodb::Client::new(&config)
}
