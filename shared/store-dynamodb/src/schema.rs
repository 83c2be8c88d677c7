//! The DynamoDB table schema, named once: key and attribute names, and the
//! service limits the adapter, the test setup and the template checks share.

/// Partition key of the events table: the stream id.
pub const EVENTS_PK: &str = "stream_id";
/// Sort key of the events table: the version (a number, 1..n, gap-free).
pub const EVENTS_SK: &str = "version";
/// The events table's append-time attribute (ms since the epoch): time travel reads it.
pub const EVENTS_TS: &str = "ts";
/// Partition key of the idempotency table.
pub const IDEMPOTENCY_PK: &str = "key";
/// The idempotency table's TTL attribute (epoch seconds).
pub const IDEMPOTENCY_TTL: &str = "expires_at";
/// Partition key of every read table.
pub const READ_PK: &str = "pk";
/// The version attribute of read rows.
pub const READ_VERSION: &str = "version";

/// TransactWriteItems takes at most 100 items.
pub const TRANSACT_MAX_ITEMS: usize = 100;
/// A DynamoDB item is at most 400 KB.
pub const ITEM_MAX_BYTES: usize = 400 * 1024;

/// Environment variable naming the events table.
pub const ENV_EVENTS_TABLE: &str = "TALLY_EVENTS_TABLE";
/// Environment variable naming the idempotency table.
pub const ENV_IDEMPOTENCY_TABLE: &str = "TALLY_IDEMPOTENCY_TABLE";
/// Environment variable naming the inventory levels read table.
pub const ENV_INVENTORY_TABLE: &str = "TALLY_INVENTORY_TABLE";
/// Environment variable with the snapshot interval (events between snapshots; 0 = none).
pub const ENV_SNAPSHOT_INTERVAL: &str = "TALLY_SNAPSHOT_INTERVAL";

/// Environment variable naming the order summary read table.
pub const ENV_ORDER_SUMMARY_TABLE: &str = "TALLY_ORDER_SUMMARY_TABLE";
/// Environment variable naming the sales-by-day read table.
pub const ENV_SALES_TABLE: &str = "TALLY_SALES_TABLE";
/// Environment variable naming the order summary's second ("green") table:
/// blue-green rebuilds alternate between it and [`ENV_ORDER_SUMMARY_TABLE`].
pub const ENV_ORDER_SUMMARY_GREEN_TABLE: &str = "TALLY_ORDER_SUMMARY_GREEN_TABLE";
/// Environment variable naming the sales-by-day second ("green") table.
pub const ENV_SALES_GREEN_TABLE: &str = "TALLY_SALES_GREEN_TABLE";
/// Environment variable naming the projection checkpoints table (which also
/// holds each projection's generation item: which table is live).
pub const ENV_CHECKPOINTS_TABLE: &str = "TALLY_CHECKPOINTS_TABLE";

/// The order summary table's index of a customer's orders, newest first.
pub const BY_CUSTOMER_INDEX: &str = "by_customer";
/// Partition key of [`BY_CUSTOMER_INDEX`].
pub const CUSTOMER_ID: &str = "customer_id";
/// Sort key of [`BY_CUSTOMER_INDEX`]: the zero-padded placing time, then the order id.
pub const PLACED_KEY: &str = "placed_key";

/// BatchGetItem takes at most 100 keys.
pub const BATCH_GET_MAX_KEYS: usize = 100;
