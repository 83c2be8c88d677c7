//! The `EventStore` contract suite, unchanged, on the DynamoDB store: real
//! AWS SDK calls to the emulator (moto served single-threaded, or
//! `AWS_ENDPOINT_URL`), each case over freshly created, uniquely named tables.
//!
//! Tampering goes around the store: a plain `UpdateItem` rewrites an event's
//! `data` attribute and leaves its hash alone.

use aws_sdk_dynamodb::types::AttributeValue;
use tally_store_dynamodb::DynamoStore;
use tally_store_dynamodb::schema::{EVENTS_PK, EVENTS_SK};
use tally_tests::contract::{SnapshotTampering, StoreContract, Tampering};

/// Snapshot interval for the suite: small, so loads page past several items
/// to find the newest snapshot (correctness never depends on the interval).
const SNAPSHOT_INTERVAL: u64 = 3;

async fn store() -> DynamoStore {
    let client = tally_emulator::dynamodb(None).await;
    let tables = tally_emulator::create_tables(&client, Some(SNAPSHOT_INTERVAL)).await;
    DynamoStore::new(client, tables)
}

async fn contract() -> StoreContract {
    StoreContract::new(store().await)
}

/// A new stream appends and loads back exactly as sealed.
#[tokio::test]
async fn append_then_load_back() {
    contract().await.append_then_load_back().await;
}

/// A stale, ahead or 0 expected version is a conflict naming the stream, and writes nothing.
#[tokio::test]
async fn wrong_expected_version_writes_nothing() {
    contract().await.wrong_expected_version_writes_nothing().await;
}

/// Writers racing for one version: exactly one wins each round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_have_one_winner() {
    contract().await.concurrent_appends_have_one_winner().await;
}

/// One failing condition in a multi-stream batch writes nothing anywhere.
#[tokio::test]
async fn multi_stream_batch_is_atomic() {
    contract().await.multi_stream_batch_is_atomic().await;
}

/// Ranges are inclusive, bounded, and empty beyond the head.
#[tokio::test]
async fn read_range_is_inclusive_and_bounded() {
    contract().await.read_range_is_inclusive_and_bounded().await;
}

/// Time reads return the events appended at or before the instant.
#[tokio::test]
async fn read_until_filters_by_time() {
    contract().await.read_until_filters_by_time().await;
}

/// Loading starts at the newest snapshot.
#[tokio::test]
async fn load_starts_at_newest_snapshot() {
    contract().await.load_starts_at_newest_snapshot().await;
}

/// An unknown or corrupt snapshot falls back to a full replay.
#[tokio::test]
async fn unusable_snapshot_falls_back_to_replay() {
    contract().await.unusable_snapshot_falls_back_to_replay().await;
}

/// A snapshot must describe the last event of its append.
#[tokio::test]
async fn snapshot_must_describe_last_event() {
    contract().await.snapshot_must_describe_last_event().await;
}

/// Idempotency records are written with the events; a reused key writes nothing.
#[tokio::test]
async fn idempotency_record_is_stored_with_events() {
    contract().await.idempotency_record_is_stored_with_events().await;
}

/// The hash chain verifies across single, multi-event, multi-stream and snapshot batches.
#[tokio::test]
async fn hash_chain_verifies_across_batches() {
    contract().await.hash_chain_verifies_across_batches().await;
}

/// An event's data rewritten in the table is named by its version.
#[tokio::test]
async fn tampered_event_is_named_by_version() {
    let store = store().await;
    let (client, table) = (store.client().clone(), store.config().events_table.clone());
    StoreContract::new(store)
        .tampered_event_is_named_by_version(|tampering: Tampering| async move {
            client
                .update_item()
                .table_name(&table)
                .key(EVENTS_PK, AttributeValue::S(tampering.stream_id.to_string()))
                .key(EVENTS_SK, AttributeValue::N(tampering.version.to_string()))
                .update_expression("SET #data = :data")
                .condition_expression("attribute_exists(#sk)")
                .expression_attribute_names("#data", "data")
                .expression_attribute_names("#sk", EVENTS_SK)
                .expression_attribute_values(":data", AttributeValue::S(tampering.data.to_string()))
                .send()
                .await
                .expect("tamper with the event");
        })
        .await;
}

/// A snapshot rewritten behind the store (a plain `UpdateItem`) is never decided on.
#[tokio::test]
async fn tampered_snapshot_is_never_decided_on() {
    let store = store().await;
    let (client, table) = (store.client().clone(), store.config().events_table.clone());
    StoreContract::new(store)
        .tampered_snapshot_is_never_decided_on(|tampering: SnapshotTampering| async move {
            client
                .update_item()
                .table_name(&table)
                .key(EVENTS_PK, AttributeValue::S(tampering.stream_id.to_string()))
                .key(EVENTS_SK, AttributeValue::N(tampering.version.to_string()))
                .update_expression("SET #snapshot = :snapshot")
                .condition_expression("attribute_exists(#snapshot)")
                .expression_attribute_names("#snapshot", "snapshot")
                .expression_attribute_values(":snapshot", AttributeValue::S(tampering.state.to_string()))
                .send()
                .await
                .expect("tamper with the snapshot");
        })
        .await;
}
