//! The projection runtime under chaos: whatever order, duplication or loss
//! the delivery suffers (SQS redelivery, a replay racing the live feed, a
//! dropped message), the eventual read models end up equal to an in-order
//! delivery of the same events.
//!
//! Proptest generates a few orders with legal lifecycles (place, then maybe
//! confirm, then cancel or ship), decided by the domain's own `Order`
//! decider and sealed at times that spread over several days. Their events
//! are appended in one batch to two databases: the "chaos" one, whose
//! projections get a shuffled delivery with duplicates and drops, and the
//! "reference" one, whose projections get the same events in version order
//! (the sinks write into the database of the store they read gaps from, so
//! the two runs cannot share one). `deliver` must answer `Duplicate` for
//! every event already applied and repair every gap from the store.
//!
//! A dropped event is recovered only when a later event of its stream is
//! delivered (gap repair); a dropped last event leaves its stream behind. So
//! the comparison runs in two steps: first against the reference fed, per
//! stream, up to the highest version the chaos run delivered; then, after
//! the last event of every stream is delivered once more (as a redrive
//! would), against the reference fed everything.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::iter;

use chrono::NaiveDate;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use tally_core::{
    AppendBatch, Decider, Delivery, EventEnvelope, EventStore, Metadata, ProjectionSink, StreamAppend, StreamId,
    deliver, encode_event, seal,
};
use tally_domain::views::{OrderSummary, ReadModels, SalesDay};
use tally_domain::{
    Cents, Currency, CustomerId, Order, OrderAction, OrderCommand, OrderId, OrderLine, OrderState, Quantity, Sku,
};
use tally_store_sqlite::{OrderProjectionSink, SqliteStore};

/// Generated scenarios; the whole file stays well under 20 s in debug.
const CASES: u32 = 64;
/// 2024-03-01T00:00:00Z.
const T0_MS: i64 = 1_709_251_200_000;
const DAY_MS: i64 = 86_400_000;
const MINUTE_MS: i64 = 60_000;
const MAX_ORDERS: usize = 4;
/// place, confirm, cancel or ship.
const MAX_EVENTS_PER_ORDER: usize = 3;
const CUSTOMERS: u8 = 2;
/// Orders listed per page when reading `orders_by_customer`, small so paging is exercised.
const CUSTOMER_PAGE: u32 = 2;

/// Where an order's life ends.
#[derive(Debug, Clone, Copy)]
enum Lifecycle {
    Placed,
    Confirmed,
    CancelledUnpaid,
    CancelledPaid,
    Shipped,
}

impl Lifecycle {
    fn after_placing(self) -> Vec<OrderAction> {
        let cancel = || OrderAction::Cancel {
            reason: Some("changed my mind".into()),
        };
        match self {
            Self::Placed => vec![],
            Self::Confirmed => vec![OrderAction::Confirm],
            Self::CancelledUnpaid => vec![cancel()],
            Self::CancelledPaid => vec![OrderAction::Confirm, cancel()],
            Self::Shipped => vec![OrderAction::Confirm, OrderAction::Ship],
        }
    }
}

/// One order as generated: who, what, how it ends and when each step happens.
#[derive(Debug, Clone)]
struct OrderPlan {
    customer: u8,
    /// (quantity, unit price in cents) per line; line *i* is `SKU-i`.
    lines: Vec<(u64, u64)>,
    lifecycle: Lifecycle,
    placed_day: i64,
    placed_minute: i64,
    /// Between consecutive commands: 1 h to 36 h, so later events may fall on later days.
    minutes_between: [i64; MAX_EVENTS_PER_ORDER - 1],
}

/// What happens to one stored event on its way to the projections: delivered
/// `copies` times (0: dropped), copy *c* at position `keys[c]` of the delivery.
#[derive(Debug, Clone)]
struct Fate {
    copies: usize,
    keys: [u16; MAX_EVENTS_PER_ORDER],
}

fn order_plan() -> impl Strategy<Value = OrderPlan> {
    let lifecycle = prop_oneof![
        Just(Lifecycle::Placed),
        Just(Lifecycle::Confirmed),
        Just(Lifecycle::CancelledUnpaid),
        Just(Lifecycle::CancelledPaid),
        Just(Lifecycle::Shipped),
    ];
    (
        0..CUSTOMERS,
        prop::collection::vec((1..=5u64, 0..=10_000u64), 1..=3),
        lifecycle,
        0..3i64,
        0..1_440i64,
        prop::array::uniform2(60..=2_160i64),
    )
        .prop_map(
            |(customer, lines, lifecycle, placed_day, placed_minute, minutes_between)| OrderPlan {
                customer,
                lines,
                lifecycle,
                placed_day,
                placed_minute,
                minutes_between,
            },
        )
}

fn fate() -> impl Strategy<Value = Fate> {
    let copies = prop_oneof![2 => Just(0usize), 5 => Just(1usize), 3 => 2..=3usize];
    (copies, prop::array::uniform3(0..100u16)).prop_map(|(copies, keys)| Fate { copies, keys })
}

fn scenario() -> impl Strategy<Value = (Vec<OrderPlan>, Vec<Fate>)> {
    (
        prop::collection::vec(order_plan(), 1..=MAX_ORDERS),
        prop::collection::vec(fate(), MAX_ORDERS * MAX_EVENTS_PER_ORDER),
    )
}

/// An order's stream as the command path would have written it.
struct PlannedOrder {
    order_id: OrderId,
    stream: StreamId,
    events: Vec<EventEnvelope>,
    state: OrderState,
}

/// Runs the plan's commands through the `Order` decider and seals each
/// command's events at its own time, chained like the command path does.
fn planned_order(index: usize, plan: &OrderPlan) -> PlannedOrder {
    let order_id = OrderId::parse(format!("o-{index}")).expect("order id");
    let stream = StreamId::of(Order::CATEGORY, order_id.as_str()).expect("stream id");
    let lines = plan
        .lines
        .iter()
        .enumerate()
        .map(|(i, &(quantity, price))| OrderLine {
            sku: Sku::parse(format!("SKU-{i}")).expect("sku"),
            quantity: Quantity::new(quantity).expect("quantity"),
            unit_price_cents: Cents::new(price).expect("price"),
        })
        .collect();
    let place = OrderAction::Place {
        customer_id: customer(plan.customer),
        lines,
        currency: Currency::usd(),
    };
    let gaps = iter::once(0).chain(plan.minutes_between);
    let mut at_ms = T0_MS + plan.placed_day * DAY_MS + plan.placed_minute * MINUTE_MS;
    let (mut state, mut events) = (OrderState::default(), Vec::<EventEnvelope>::new());
    for (action, gap_minutes) in iter::once(place).chain(plan.lifecycle.after_placing()).zip(gaps) {
        at_ms += gap_minutes * MINUTE_MS;
        let command = OrderCommand::new(order_id.clone(), action);
        let decided = Order::decide(&state, &command).expect("the generated lifecycle is legal");
        state = decided.iter().fold(state, Order::evolve);
        let new_events = decided
            .iter()
            .map(encode_event::<Order>)
            .collect::<Result<Vec<_>, _>>()
            .expect("order events encode");
        let head = events.last();
        let sealed = seal(
            &stream,
            head.map_or(0, |e| e.version),
            head.map(|e| e.hash.as_str()),
            new_events,
            &Metadata::default(),
            at_ms,
        );
        events.extend(sealed);
    }
    PlannedOrder {
        order_id,
        stream,
        events,
        state,
    }
}

fn customer(index: u8) -> CustomerId {
    CustomerId::parse(format!("c-{index}")).expect("customer id")
}

/// The stored events, each delivered as its fate says, in the order of the
/// fates' keys (ties keep the stored order).
fn chaotic_delivery(stored: &[EventEnvelope], fates: &[Fate]) -> Vec<EventEnvelope> {
    let mut delivery: Vec<(u16, &EventEnvelope)> = stored
        .iter()
        .zip(fates)
        .flat_map(|(event, fate)| fate.keys[..fate.copies].iter().map(move |&key| (key, event)))
        .collect();
    delivery.sort_by_key(|&(key, _)| key);
    delivery.into_iter().map(|(_, event)| event.clone()).collect()
}

/// Both eventual order projections over one database.
struct Projections {
    store: SqliteStore,
    sinks: [Box<dyn ProjectionSink>; 2],
}

impl Projections {
    fn new(store: &SqliteStore) -> Self {
        Self {
            store: store.clone(),
            sinks: [
                Box::new(OrderProjectionSink::order_summary(store.clone())),
                Box::new(OrderProjectionSink::sales_by_day(store.clone())),
            ],
        }
    }

    /// Delivers `event` to both projections and checks each answers `expected`.
    async fn deliver_expecting(&self, event: &EventEnvelope, expected: Delivery) -> Result<(), TestCaseError> {
        for sink in &self.sinks {
            let outcome = deliver(&self.store, sink.as_ref(), event).await.expect("deliver");
            prop_assert_eq!(
                outcome,
                expected,
                "{} v{} to {}",
                event.stream_id,
                event.version,
                sink.name()
            );
        }
        Ok(())
    }
}

/// What the runtime must answer for `event`, given what each stream has
/// been fed so far (updated): a duplicate, or applied after repairing the gap.
fn expected_delivery(fed: &mut BTreeMap<StreamId, u64>, event: &EventEnvelope) -> Delivery {
    let checkpoint = fed.entry(event.stream_id.clone()).or_default();
    if event.version <= *checkpoint {
        return Delivery::Duplicate;
    }
    let repaired = event.version - *checkpoint - 1;
    *checkpoint = event.version;
    Delivery::Applied { repaired }
}

/// Every read model as the API reads it, for the orders and customers of a case.
#[derive(Debug, PartialEq)]
struct ReadModelRows {
    summaries: Vec<Option<OrderSummary>>,
    by_customer: Vec<Vec<OrderSummary>>,
    sales: Vec<SalesDay>,
}

async fn read_models(store: &SqliteStore, orders: &[PlannedOrder]) -> ReadModelRows {
    let mut summaries = Vec::new();
    for order in orders {
        summaries.push(store.order_summary(&order.order_id).await.expect("order summary"));
    }
    let mut by_customer = Vec::new();
    for index in 0..CUSTOMERS {
        let (mut listed, mut cursor) = (Vec::new(), None::<String>);
        loop {
            let page = store
                .orders_by_customer(&customer(index), CUSTOMER_PAGE, cursor.as_deref())
                .await
                .expect("orders by customer");
            listed.extend(page.items);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        by_customer.push(listed);
    }
    let (from, to) = (
        NaiveDate::from_ymd_opt(1970, 1, 1).expect("date"),
        NaiveDate::from_ymd_opt(2100, 12, 31).expect("date"),
    );
    let sales = store.sales_by_day(from, to).await.expect("sales by day");
    ReadModelRows {
        summaries,
        by_customer,
        sales,
    }
}

/// Feeds the reference projections each stream's events in order, from what
/// they were fed so far up to `up_to[stream]`; every one must simply apply.
async fn feed_in_order(
    reference: &Projections,
    orders: &[PlannedOrder],
    fed: &mut BTreeMap<StreamId, u64>,
    up_to: impl Fn(&StreamId) -> u64,
) -> Result<(), TestCaseError> {
    for order in orders {
        let done = fed.entry(order.stream.clone()).or_default();
        let (after, up_to) = (*done, up_to(&order.stream));
        for event in order.events.iter().filter(|e| e.version > after && e.version <= up_to) {
            reference
                .deliver_expecting(event, Delivery::Applied { repaired: 0 })
                .await?;
            *done = event.version;
        }
    }
    Ok(())
}

/// What one case put the runtime through, summed to show the generator bites.
#[derive(Debug, Default, Clone, Copy)]
struct Coverage {
    duplicates: u64,
    repaired: u64,
    tails_recovered: u64,
}

async fn chaos_equals_in_order(plans: Vec<OrderPlan>, fates: Vec<Fate>) -> Result<Coverage, TestCaseError> {
    let dir = tempfile::tempdir().expect("temp dir");
    let chaos_store = SqliteStore::open(dir.path().join("chaos.db")).expect("open chaos store");
    let reference_store = SqliteStore::open(dir.path().join("reference.db")).expect("open reference store");
    let orders: Vec<PlannedOrder> = plans.iter().enumerate().map(|(i, p)| planned_order(i, p)).collect();

    // Envelopes are plain data: the same batch goes to both databases.
    let batch = AppendBatch {
        streams: orders
            .iter()
            .map(|order| StreamAppend {
                stream_id: order.stream.clone(),
                expected_version: 0,
                events: order.events.clone(),
                snapshot: None,
                view: None,
            })
            .collect(),
        idempotency: None,
    };
    chaos_store.append(batch.clone()).await.expect("append to chaos store");
    reference_store.append(batch).await.expect("append to reference store");

    // The delivery is made of what the store holds, as a projector receives it.
    let mut stored = Vec::new();
    for order in &orders {
        let read = chaos_store.read_range(&order.stream, 1, None).await.expect("read");
        prop_assert_eq!(&read, &order.events);
        stored.extend(read);
    }
    let delivery = chaotic_delivery(&stored, &fates);

    let chaos = Projections::new(&chaos_store);
    let reference = Projections::new(&reference_store);
    let mut coverage = Coverage::default();
    let mut chaos_fed = BTreeMap::new();
    for event in &delivery {
        let expected = expected_delivery(&mut chaos_fed, event);
        match expected {
            Delivery::Duplicate => coverage.duplicates += 1,
            Delivery::Applied { repaired } => coverage.repaired += repaired,
            Delivery::Ignored => {}
        }
        chaos.deliver_expecting(event, expected).await?;
    }

    let mut reference_fed = BTreeMap::new();
    let delivered_up_to = |stream: &StreamId| chaos_fed.get(stream).copied().unwrap_or(0);
    feed_in_order(&reference, &orders, &mut reference_fed, delivered_up_to).await?;
    prop_assert_eq!(
        read_models(&chaos_store, &orders).await,
        read_models(&reference_store, &orders).await,
        "after the chaotic delivery"
    );

    // A redrive of each stream's last event closes the gaps drops left at the tails.
    for order in &orders {
        let last = order.events.last().expect("an order has events");
        if chaos_fed.get(&order.stream).is_none_or(|&fed| fed < last.version) {
            coverage.tails_recovered += 1;
        }
        let expected = expected_delivery(&mut chaos_fed, last);
        chaos.deliver_expecting(last, expected).await?;
    }
    feed_in_order(&reference, &orders, &mut reference_fed, |_| u64::MAX).await?;
    let settled = read_models(&chaos_store, &orders).await;
    prop_assert_eq!(
        &settled,
        &read_models(&reference_store, &orders).await,
        "after the redrive"
    );

    // Both runs agree; check they agree with the domain too.
    for (order, summary) in orders.iter().zip(&settled.summaries) {
        let summary = summary.as_ref().expect("every order has a summary");
        prop_assert_eq!(summary.status, order.state.status);
        prop_assert_eq!(summary.version, order.events.len() as u64);
        prop_assert_eq!(summary.total_cents, order.state.total_cents());
    }
    Ok(coverage)
}

/// Duplicated, reordered and dropped deliveries to `order_summary` and
/// `sales_by_day` leave the read models equal to in-order delivery, with
/// `Duplicate` answered for every event already applied.
#[test]
fn chaotic_delivery_equals_in_order_delivery() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        source_file: Some(file!()),
        // Next to this file: an integration test has no lib.rs for `SourceParallel` to anchor on.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..Config::default()
    });
    let total = Cell::new(Coverage::default());
    let result = runner.run(&scenario(), |(plans, fates)| {
        let case = runtime.block_on(chaos_equals_in_order(plans, fates))?;
        let sum = total.get();
        total.set(Coverage {
            duplicates: sum.duplicates + case.duplicates,
            repaired: sum.repaired + case.repaired,
            tails_recovered: sum.tails_recovered + case.tails_recovered,
        });
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}\n{runner}");
    }
    // The generator must actually produce each kind of chaos, or the test proves little.
    let total = total.get();
    assert!(
        total.duplicates > 0 && total.repaired > 0 && total.tails_recovered > 0,
        "{total:?}"
    );
}
