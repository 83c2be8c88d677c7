//! The DynamoDB command path on the emulator, through the real AWS SDK:
//! requests per command, histories over 1 MB, a flash sale, multi-stream
//! atomicity and idempotency keys.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tally_api::service::{CommandContext, ServiceConfig, ServiceError};
use tally_api::{ApiConfig, CommandService, CommandState};
use tally_core::{
    AppendBatch, AppendOutcome, CommandError, EventEnvelope, EventStore, IdempotencyRecord, LoadedStream, Metadata,
    NewEvent, SnapshotPolicy, StoreError, StreamAppend, StreamId, load_aggregate, seal,
};
use tally_domain::{
    Cents, Currency, CustomerId, DomainError, Inventory, OrderId, OrderLine, ProductName, Quantity, Sku,
};
use tally_emulator::RequestCounter;
use tally_store_dynamodb::DynamoStore;
use tower::ServiceExt;

async fn store(snapshot_interval: Option<u64>, counter: Option<RequestCounter>) -> DynamoStore {
    let client = tally_emulator::dynamodb(counter).await;
    let tables = tally_emulator::create_tables(&client, snapshot_interval).await;
    DynamoStore::new(client, tables)
}

fn sku(raw: &str) -> Sku {
    Sku::parse(raw).expect("sku")
}

const READS: [&str; 3] = ["Query", "GetItem", "BatchGetItem"];
const WRITES: [&str; 3] = ["PutItem", "TransactWriteItems", "BatchWriteItem"];

/// With snapshots on, a single-stream command costs at most one read request
/// and one write request on streams of 1, 1,000 and 20,000 events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_costs_one_read_and_one_write_whatever_the_stream_length() {
    for (length, interval) in [(1u64, 100u64), (1_000, 100), (20_000, 100), (20_000, 1)] {
        let counter = RequestCounter::default();
        let store = store(Some(interval), Some(counter.clone())).await;
        let sku_id = format!("LEN-{length}");
        tally_emulator::seed_inventory_stream(&store, &sku_id, length, 100).await;
        let config = ServiceConfig {
            snapshots: SnapshotPolicy::every(interval),
            ..ServiceConfig::default()
        };
        let service = CommandService::new(Arc::new(store), config);
        counter.reset();
        let accepted = service
            .receive_stock(
                &sku(&sku_id),
                Quantity::new(5).expect("qty"),
                &CommandContext::default(),
            )
            .await
            .expect("receive stock");
        assert_eq!(accepted.body["version"], length + 1);
        let (reads, writes) = (counter.of(&READS), counter.of(&WRITES));
        println!(
            "stream of {length:>6} events, snapshot every {interval:>3}: {reads} read request(s), {writes} write request(s) {:?}",
            counter.snapshot()
        );
        assert!(reads <= 1, "{length} events: {reads} reads");
        assert!(writes <= 1, "{length} events: {writes} writes");
    }
}

/// A stream whose history exceeds 1 MB (one Query page) loads completely and
/// in order, both by range and by `load` without snapshots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_over_one_megabyte_loads_whole() {
    let store = store(None, None).await;
    let stream = StreamId::parse("blob-big").expect("stream");
    let padding = "x".repeat(8 * 1024);
    let total = 200u64; // 200 × 8 KB ≈ 1.6 MB
    let mut head_hash: Option<String> = None;
    for start in (0..total).step_by(50) {
        let events = (start..start + 50)
            .map(|i| NewEvent {
                event_type: "Blob".into(),
                schema: 1,
                data: json!({ "i": i, "padding": padding }),
            })
            .collect();
        let sealed = seal(&stream, start, head_hash.as_deref(), events, &Metadata::default(), 1);
        head_hash = sealed.last().map(|e| e.hash.clone());
        store
            .append(AppendBatch {
                streams: vec![StreamAppend {
                    stream_id: stream.clone(),
                    expected_version: start,
                    events: sealed,
                    snapshot: None,
                    view: None,
                }],
                idempotency: None,
            })
            .await
            .expect("append");
    }
    let all = store.read_range(&stream, 1, None).await.expect("read");
    assert_eq!(all.len() as u64, total);
    assert!(all.iter().zip(1..).all(|(e, v)| e.version == v && e.data["i"] == v - 1));
    tally_core::verify_chain(&all).expect("chain");
    let loaded = store.load(&stream).await.expect("load");
    assert_eq!(loaded.events.len() as u64, total);
    assert_eq!(loaded.version(), total);
}

/// Flash sale on DynamoDB: 50 in stock, 200 concurrent single-unit orders
/// through the command handler → exactly 50 succeed, the rest are
/// insufficient_stock or contention reported as such, the events table holds
/// 50 reservations and the inventory row shows 50 reserved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flash_sale_on_dynamodb_never_oversells() {
    let store = store(Some(1), None).await;
    let inventory_table = store.config().view_tables["inventory_levels"].clone();
    let events_table = store.config().events_table.clone();
    let client = store.client().clone();
    // As the command Lambda runs it: retries start from the winner a conflict hands back.
    let service = CommandService::new(Arc::new(store), ServiceConfig::default());
    let ctx = CommandContext::default();
    service
        .register_sku(&sku("HOT"), ProductName::parse("Hot").expect("name"), &ctx)
        .await
        .expect("register");
    service
        .receive_stock(&sku("HOT"), Quantity::new(50).expect("qty"), &ctx)
        .await
        .expect("receive");

    let buyers = (0..200).map(|i| {
        let service = service.clone();
        tokio::spawn(async move {
            let line = OrderLine {
                sku: sku("HOT"),
                quantity: Quantity::new(1).expect("qty"),
                unit_price_cents: tally_domain::Cents::new(100).expect("cents"),
            };
            service
                .place_order(
                    &OrderId::parse(format!("fs-{i}")).expect("order id"),
                    CustomerId::parse("c").expect("customer"),
                    vec![line],
                    Default::default(),
                    &CommandContext::default(),
                )
                .await
        })
    });
    let (mut sold, mut sold_out, mut contended) = (0, 0, 0);
    for buyer in buyers {
        match buyer.await.expect("task") {
            Ok(_) => sold += 1,
            Err(CommandError::Rejected(DomainError::InsufficientStock { .. })) => sold_out += 1,
            Err(CommandError::Contended { .. }) => contended += 1,
            Err(other) => panic!("unexpected failure: {other}"),
        }
    }
    println!("flash sale on DynamoDB: {sold} sold, {sold_out} insufficient_stock, {contended} contended");
    assert_eq!(sold, 50);
    assert_eq!(sold + sold_out + contended, 200);

    let reservations = client
        .query()
        .table_name(&events_table)
        .key_condition_expression("stream_id = :s")
        .filter_expression("#t = :t")
        .expression_attribute_names("#t", "type")
        .expression_attribute_values(":s", AttributeValue::S("inventory-HOT".into()))
        .expression_attribute_values(":t", AttributeValue::S("StockReserved".into()))
        .select(aws_sdk_dynamodb::types::Select::Count)
        .send()
        .await
        .expect("count reservations");
    assert_eq!(reservations.count, 50);
    let row = client
        .get_item()
        .table_name(&inventory_table)
        .key("pk", AttributeValue::S("HOT".into()))
        .consistent_read(true)
        .send()
        .await
        .expect("inventory row")
        .item
        .expect("row exists");
    assert_eq!(row.get("reserved"), Some(&AttributeValue::N("50".into())));
    assert_eq!(row.get("available"), Some(&AttributeValue::N("0".into())));
}

/// An append whose second stream fails its condition writes nothing at all,
/// and the conflict names that stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_second_line_writes_nothing() {
    let store = store(Some(1), None).await;
    let service = CommandService::new(Arc::new(store.clone()), ServiceConfig::default());
    let ctx = CommandContext::default();
    for id in ["A", "B"] {
        service
            .register_sku(&sku(id), ProductName::parse("x").expect("name"), &ctx)
            .await
            .expect("register");
    }
    let order = StreamId::parse("order-atomic").expect("stream");
    let (a, b) = (
        StreamId::parse("inventory-A").expect("a"),
        StreamId::parse("inventory-B").expect("b"),
    );
    let event = |stream: &StreamId, head: u64, prev: Option<&str>| {
        seal(
            stream,
            head,
            prev,
            vec![NewEvent {
                event_type: "Probe".into(),
                schema: 1,
                data: json!({}),
            }],
            &Metadata::default(),
            1,
        )
    };
    let a_head = store.load(&a).await.expect("load a");
    let batch = AppendBatch {
        streams: vec![
            StreamAppend {
                stream_id: order.clone(),
                expected_version: 0,
                events: event(&order, 0, None),
                snapshot: None,
                view: None,
            },
            StreamAppend {
                stream_id: a.clone(),
                expected_version: 1,
                events: event(&a, 1, a_head.head_hash()),
                snapshot: None,
                view: None,
            },
            // B is at version 1: expecting 0 is stale.
            StreamAppend {
                stream_id: b.clone(),
                expected_version: 0,
                events: event(&b, 0, None),
                snapshot: None,
                view: None,
            },
        ],
        idempotency: None,
    };
    match store.append(batch).await {
        Err(StoreError::WrongExpectedVersion { stream, .. }) => assert_eq!(stream, b),
        other => panic!("expected a conflict on B, got {other:?}"),
    }
    assert!(store.read_range(&order, 1, None).await.expect("order").is_empty());
    assert_eq!(store.read_range(&a, 1, None).await.expect("a").len(), 1);
    assert_eq!(store.read_range(&b, 1, None).await.expect("b").len(), 1);
}

async fn call(router: &axum::Router, key: &str, body: &str) -> (u16, Value) {
    let request = Request::post("/orders")
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(Body::from(body.to_owned()))
        .expect("request");
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&bytes).expect("JSON"))
}

/// Idempotency on DynamoDB: the same key and body twice → one set of events
/// and the same response; the same key with another body → 422.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_on_dynamodb() {
    let store = store(Some(1), None).await;
    let service = CommandService::new(Arc::new(store.clone()), ServiceConfig::default());
    service
        .register_sku(
            &sku("I"),
            ProductName::parse("x").expect("name"),
            &CommandContext::default(),
        )
        .await
        .expect("register");
    service
        .receive_stock(&sku("I"), Quantity::new(9).expect("qty"), &CommandContext::default())
        .await
        .expect("receive");
    let router = tally_api::command_router(CommandState::new(Arc::new(store.clone()), ApiConfig::default()));
    let body = r#"{"customer_id":"c","lines":[{"sku":"I","quantity":2,"unit_price_cents":5}]}"#;
    let first = call(&router, "k-1", body).await;
    assert_eq!(first.0, 201, "{}", first.1);
    let second = call(&router, "k-1", body).await;
    assert_eq!(second, first);
    let stream = StreamId::parse("inventory-I").expect("stream");
    let reserved: Vec<_> = store
        .read_range(&stream, 1, None)
        .await
        .expect("read")
        .into_iter()
        .filter(|e| e.event_type == "StockReserved")
        .collect();
    assert_eq!(reserved.len(), 1, "one set of events");
    let other = call(&router, "k-1", &body.replace("\"quantity\":2", "\"quantity\":3")).await;
    assert_eq!(
        (other.0, other.1["error"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
}

/// A store whose first append first lets another writer finish: the
/// interleaving a real race would produce, forced (the emulator serialises
/// requests, so it never happens by itself). Everything else passes through.
struct Interleaved {
    inner: DynamoStore,
    other_writer: tokio::sync::Mutex<Option<Pin<Box<dyn Future<Output = ()> + Send>>>>,
}

impl Interleaved {
    fn new(inner: DynamoStore, other_writer: impl Future<Output = ()> + Send + 'static) -> Self {
        Self {
            inner,
            other_writer: tokio::sync::Mutex::new(Some(Box::pin(other_writer))),
        }
    }
}

#[async_trait::async_trait]
impl EventStore for Interleaved {
    async fn load(&self, stream: &StreamId) -> Result<LoadedStream, StoreError> {
        self.inner.load(stream).await
    }

    async fn read_range(
        &self,
        stream: &StreamId,
        from: u64,
        to: Option<u64>,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        self.inner.read_range(stream, from, to).await
    }

    async fn read_until(&self, stream: &StreamId, at_ms: i64) -> Result<Vec<EventEnvelope>, StoreError> {
        self.inner.read_until(stream, at_ms).await
    }

    async fn append(&self, batch: AppendBatch) -> Result<AppendOutcome, StoreError> {
        let other_writer = self.other_writer.lock().await.take();
        if let Some(other_writer) = other_writer {
            other_writer.await;
        }
        self.inner.append(batch).await
    }

    async fn idempotency_record(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.inner.idempotency_record(key).await
    }
}

fn one_unit_of(sku_id: &str) -> Vec<OrderLine> {
    vec![OrderLine {
        sku: sku(sku_id),
        quantity: Quantity::new(1).expect("qty"),
        unit_price_cents: Cents::new(100).expect("price"),
    }]
}

/// A SKU registered with `on_hand` units (version 2), and a service over the plain store.
async fn stocked(store: &DynamoStore, sku_id: &str, on_hand: u64) -> CommandService {
    let service = CommandService::new(Arc::new(store.clone()), ServiceConfig::default());
    let ctx = CommandContext::default();
    service
        .register_sku(&sku(sku_id), ProductName::parse("x").expect("name"), &ctx)
        .await
        .expect("register");
    service
        .receive_stock(&sku(sku_id), Quantity::new(on_hand).expect("qty"), &ctx)
        .await
        .expect("receive");
    service
}

async fn place(
    service: &CommandService,
    order: &str,
    customer: &str,
    lines: Vec<OrderLine>,
) -> Result<u16, ServiceError> {
    service
        .place_order(
            &OrderId::parse(order).expect("order id"),
            CustomerId::parse(customer).expect("customer"),
            lines,
            Currency::default(),
            &CommandContext::default(),
        )
        .await
        .map(|accepted| accepted.status)
}

/// The item a lost race hands back is the version after the one we loaded,
/// not the head. A loads the SKU at v2 (5 on hand); before A's write lands,
/// B sells all 5 (v3) and receives 100 (v4). A's write loses to v3, whose
/// item says 0 available; deciding on it would refuse A although 100 are
/// there. The refusal is checked on a fresh read, and A's order is placed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_decided_on_a_handed_back_item_is_checked_on_fresh_state() {
    let store = store(Some(1), None).await;
    let other = stocked(&store, "AFTER", 5).await;
    let b_sells_all_then_stock_arrives = async move {
        let five = vec![OrderLine {
            quantity: Quantity::new(5).expect("qty"),
            ..one_unit_of("AFTER")[0].clone()
        }];
        assert_eq!(place(&other, "o-b", "c-b", five).await.expect("B buys all"), 201);
        other
            .receive_stock(
                &sku("AFTER"),
                Quantity::new(100).expect("qty"),
                &CommandContext::default(),
            )
            .await
            .expect("B receives 100");
    };
    let ours = CommandService::new(
        Arc::new(Interleaved::new(store.clone(), b_sells_all_then_stock_arrives)),
        ServiceConfig::default(),
    );
    let placed = place(&ours, "o-a", "c-a", one_unit_of("AFTER")).await;
    assert_eq!(placed.expect("A's order is placed: 100 arrived"), 201);
    let level = load_aggregate::<Inventory>(&store, &StreamId::parse("inventory-AFTER").expect("stream"))
        .await
        .expect("load");
    assert_eq!((level.version, level.state.on_hand, level.state.reserved), (5, 105, 6));
}

/// The same race with no stock arriving: the refusal stands, because the
/// fresh read agrees (422 insufficient_stock), and nothing is written. A
/// later command through the same service decides on fresh state again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_confirmed_on_fresh_state_stands_and_nothing_outlives_it() {
    let store = store(Some(1), None).await;
    let other = stocked(&store, "GONE", 5).await;
    let restock = other.clone();
    let b_sells_all = async move {
        let five = vec![OrderLine {
            quantity: Quantity::new(5).expect("qty"),
            ..one_unit_of("GONE")[0].clone()
        }];
        assert_eq!(place(&other, "o-b", "c-b", five).await.expect("B buys all"), 201);
    };
    let ours = CommandService::new(
        Arc::new(Interleaved::new(store.clone(), b_sells_all)),
        ServiceConfig::default(),
    );
    match place(&ours, "o-a", "c-a", one_unit_of("GONE")).await {
        Err(CommandError::Rejected(DomainError::InsufficientStock { available, .. })) => assert_eq!(available, 0),
        other => panic!("expected insufficient stock on fresh state, got {other:?}"),
    }
    let order = store
        .read_range(&StreamId::parse("order-o-a").expect("stream"), 1, None)
        .await
        .expect("read");
    assert!(order.is_empty(), "a refused order writes nothing");

    restock
        .receive_stock(
            &sku("GONE"),
            Quantity::new(10).expect("qty"),
            &CommandContext::default(),
        )
        .await
        .expect("restock");
    let later = place(&ours, "o-a2", "c-a", one_unit_of("GONE")).await;
    assert_eq!(later.expect("a later command sees the restock"), 201);
}

/// A lost race costs no re-read: the conditional write hands back the
/// winner's item (ALL_OLD) with its snapshot, and the retry decides on it —
/// one write for the conflict, none to read, one write for the retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_hands_back_the_winner_and_the_retry_reads_nothing() {
    let counter = RequestCounter::default();
    let store = store(Some(1), Some(counter.clone())).await;
    let other_writer = CommandService::new(Arc::new(store.clone()), ServiceConfig::default());
    let ctx = CommandContext::default();
    other_writer
        .register_sku(&sku("RACE"), ProductName::parse("x").expect("name"), &ctx)
        .await
        .expect("register");

    // Our writer loads v1; the other writer appends v2 before our write lands.
    let count_from_here = counter.clone();
    let other_appends_v2 = async move {
        other_writer
            .receive_stock(&sku("RACE"), Quantity::new(7).expect("qty"), &CommandContext::default())
            .await
            .expect("receive");
        count_from_here.reset();
    };
    let ours = CommandService::new(
        Arc::new(Interleaved::new(store.clone(), other_appends_v2)),
        ServiceConfig::default(),
    );
    let accepted = ours
        .receive_stock(&sku("RACE"), Quantity::new(1).expect("qty"), &ctx)
        .await
        .expect("retry");
    assert_eq!(accepted.body["version"], 3);
    let (reads, writes) = (counter.of(&READS), counter.of(&WRITES));
    println!(
        "conflict + retry: {reads} read request(s), {writes} write request(s) {:?}",
        counter.snapshot()
    );
    assert_eq!((reads, writes), (0, 2), "one failed write, no re-read, one write");
    let stream = StreamId::parse("inventory-RACE").expect("stream");
    let level = load_aggregate::<Inventory>(&store, &stream).await.expect("load");
    assert_eq!((level.version, level.state.on_hand), (3, 8));
}
