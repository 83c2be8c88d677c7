//! The emulator harness for tests: real AWS SDK calls against an emulator.
//!
//! If `AWS_ENDPOINT_URL` is set (LocalStack, or a moto the caller started),
//! tests use it. Otherwise the first test of a process starts
//! `infra/emulator/moto_server.py` from the project's `.venv` (which `make
//! test` installs) on a free loopback port, single-threaded, and every test
//! of the process shares it. A missing emulator is a failing test with a
//! clear message, never a silent skip. Each test creates its own uniquely
//! named tables, so tests never see each other's data.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::Credentials;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, StreamSpecification,
    StreamViewType,
};
use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata as OperationMetadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use tally_core::{Decider, Metadata, NewEvent, Snapshot, StreamId, seal_with_snapshot};
use tally_domain::{Inventory, InventoryEvent, InventoryState, ProductName, Quantity, Sku};
use tally_store_dynamodb::items::EventItem;
use tally_store_dynamodb::schema::{EVENTS_PK, EVENTS_SK, IDEMPOTENCY_PK, READ_PK};
use tally_store_dynamodb::{DynamoConfig, DynamoStore};

pub mod deploy;
pub mod driver;
pub mod payloads;

struct Emulator {
    endpoint: String,
    _server: Option<Child>,
}

static EMULATOR: OnceLock<Emulator> = OnceLock::new();

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The project venv's Python, where `make test` installs the pinned emulator.
fn python() -> PathBuf {
    std::env::var_os("TALLY_EMULATOR_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/python"))
}

fn start_moto() -> Emulator {
    let root = workspace_root();
    let python = python();
    assert!(
        python.exists(),
        "the AWS emulator is not installed: {} is missing. Run `make test` (it installs the pinned moto \
         into .venv), or set AWS_ENDPOINT_URL to a running emulator such as LocalStack.",
        python.display()
    );
    let mut server = Command::new(&python)
        .arg(root.join("infra/emulator/moto_server.py"))
        .args(["--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the emulator with {}: {e}", python.display()));
    let stdout = server.stdout.take().expect("emulator stdout is piped");
    let mut first_line = String::new();
    BufReader::new(stdout)
        .read_line(&mut first_line)
        .expect("the emulator did not report its address");
    let endpoint = first_line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected emulator greeting: {first_line:?}"))
        .to_owned();
    Emulator {
        endpoint,
        _server: Some(server),
    }
}

/// The emulator's endpoint: `AWS_ENDPOINT_URL` if set, else a moto this process started.
pub fn endpoint() -> &'static str {
    &EMULATOR
        .get_or_init(|| match std::env::var("AWS_ENDPOINT_URL") {
            Ok(endpoint) if !endpoint.is_empty() => Emulator {
                endpoint,
                _server: None,
            },
            _ => start_moto(),
        })
        .endpoint
}

/// SDK configuration for the emulator (dummy credentials unless the
/// environment has real ones, region from the environment or us-east-1).
pub async fn sdk_config() -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).endpoint_url(endpoint());
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
        loader = loader.credentials_provider(Credentials::new("test", "test", None, None, "tally-emulator"));
    }
    if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none() {
        loader = loader.region(aws_config::Region::new("us-east-1"));
    }
    loader.load().await
}

/// Counts the HTTP requests an SDK client sends, per operation: the proof of
/// "one read and one write per command".
#[derive(Debug, Clone, Default)]
pub struct RequestCounter {
    counts: Arc<Mutex<HashMap<String, u64>>>,
}

impl RequestCounter {
    /// Requests per operation so far.
    pub fn snapshot(&self) -> HashMap<String, u64> {
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Forgets the counts.
    pub fn reset(&self) {
        if let Ok(mut counts) = self.counts.lock() {
            counts.clear();
        }
    }

    /// Requests of any of `operations`.
    pub fn of(&self, operations: &[&str]) -> u64 {
        let counts = self.snapshot();
        operations.iter().map(|op| counts.get(*op).copied().unwrap_or(0)).sum()
    }
}

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "RequestCounter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let operation = cfg
            .load::<OperationMetadata>()
            .map_or("unknown", |m| m.name())
            .to_owned();
        if let Ok(mut counts) = self.counts.lock() {
            *counts.entry(operation).or_default() += 1;
        }
        Ok(())
    }
}

/// A DynamoDB client for the emulator, optionally counting its requests.
pub async fn dynamodb(counter: Option<RequestCounter>) -> Client {
    let config = sdk_config().await;
    let mut builder = aws_sdk_dynamodb::config::Builder::from(&config);
    if let Some(counter) = counter {
        builder = builder.interceptor(counter);
    }
    Client::from_conf(builder.build())
}

fn key(name: &str, kind: KeyType) -> KeySchemaElement {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .expect("key schema")
}

fn attribute(name: &str, kind: ScalarAttributeType) -> AttributeDefinition {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(kind)
        .build()
        .expect("attribute definition")
}

/// Creates the events, idempotency and inventory tables under a unique
/// prefix and returns the store configuration naming them.
pub async fn create_tables(client: &Client, snapshot_interval: Option<u64>) -> DynamoConfig {
    let prefix = format!("t{}", uuid::Uuid::now_v7().simple());
    let config = DynamoConfig {
        events_table: format!("{prefix}-events"),
        idempotency_table: format!("{prefix}-idempotency"),
        view_tables: HashMap::from([("inventory_levels".to_owned(), format!("{prefix}-inventory"))]),
        snapshot_interval,
    };
    client
        .create_table()
        .table_name(&config.events_table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key(EVENTS_PK, KeyType::Hash))
        .key_schema(key(EVENTS_SK, KeyType::Range))
        .attribute_definitions(attribute(EVENTS_PK, ScalarAttributeType::S))
        .attribute_definitions(attribute(EVENTS_SK, ScalarAttributeType::N))
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewImage)
                .build()
                .expect("stream specification"),
        )
        .send()
        .await
        .expect("create the events table");
    let single_key_tables = [
        (&config.idempotency_table, IDEMPOTENCY_PK),
        (&config.view_tables["inventory_levels"], READ_PK),
    ];
    for (table, pk) in single_key_tables {
        client
            .create_table()
            .table_name(table)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key(pk, KeyType::Hash))
            .attribute_definitions(attribute(pk, ScalarAttributeType::S))
            .send()
            .await
            .unwrap_or_else(|e| panic!("create table {table}: {e}"));
    }
    config
}

/// Seeds `inventory-<sku>` with a registration and `events - 1` receipts,
/// a snapshot every `snapshot_every` events and on the last, written with unconditional BatchWriteItem
/// (25 items a request): the emulator copies every table on each
/// transaction, which makes seeding 20,000 events by transaction quadratic.
pub async fn seed_inventory_stream(store: &DynamoStore, sku_id: &str, events: u64, snapshot_every: u64) {
    let stream = StreamId::of("inventory", sku_id).expect("stream");
    let domain_events: Vec<InventoryEvent> = (0..events)
        .map(|v| match v {
            0 => InventoryEvent::SkuRegistered {
                sku: Sku::parse(sku_id).expect("sku"),
                name: ProductName::parse("Seeded").expect("name"),
            },
            _ => InventoryEvent::StockReceived {
                quantity: Quantity::new(1).expect("qty"),
            },
        })
        .collect();
    let new_events: Vec<NewEvent> = domain_events
        .iter()
        .map(|e| tally_core::encode_event::<Inventory>(e).expect("encode"))
        .collect();
    // Sealed one by one: a snapshot's digest is part of its event's hash,
    // so each event is sealed with the snapshot it carries.
    let mut state = InventoryState::default();
    let mut items = Vec::with_capacity(new_events.len());
    let mut head_hash: Option<String> = None;
    for ((new_event, event), version) in new_events.into_iter().zip(&domain_events).zip(1u64..) {
        state = Inventory::evolve(state, event);
        let snapshot = (version % snapshot_every.max(1) == 0 || version == events).then(|| Snapshot {
            version,
            schema: Inventory::STATE_SCHEMA,
            state: serde_json::to_value(&state).expect("state"),
        });
        let sealed = seal_with_snapshot(
            &stream,
            version - 1,
            head_hash.as_deref(),
            vec![new_event],
            &Metadata::default(),
            1,
            snapshot.as_ref(),
        );
        let envelope = sealed.first().expect("one event sealed");
        head_hash = Some(envelope.hash.clone());
        items.push(EventItem::from_envelope(envelope, snapshot.as_ref()).expect("item"));
    }
    for chunk in items.chunks(25) {
        let writes = chunk
            .iter()
            .map(|item| {
                WriteRequest::builder()
                    .put_request(PutRequest::builder().set_item(Some(item.clone())).build().expect("put"))
                    .build()
            })
            .collect();
        let out = store
            .client()
            .batch_write_item()
            .request_items(&store.config().events_table, writes)
            .send()
            .await
            .expect("seed batch");
        assert!(
            out.unprocessed_items.unwrap_or_default().is_empty(),
            "the emulator does not throttle"
        );
    }
}
