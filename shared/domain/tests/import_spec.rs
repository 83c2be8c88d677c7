//! Specifies the migration events, `InventoryImported` and `OrderImported`:
//! their stored shape (golden files: a storage contract, never edited), how
//! each decider decides and evolves them (given the stream's events, when
//! the import is decided, then these events or this rejection), how an
//! imported order holds and later settles its stock, and how the read
//! models (and their in-memory recomputation) take them.

use chrono::DateTime;
use serde_json::Value;
use tally_core::projection::{BatchProjectionSink, ModelRows};
use tally_core::{Decider, EventEnvelope, Metadata, StreamId, decode_event, encode_event, seal};
use tally_domain::inventory::ON_HAND_MAX;
use tally_domain::recompute::MemoryModel;
use tally_domain::views::{ORDER_SUMMARY, SALES_BY_DAY, apply_order_summary, sales_delta, utc_day};
use tally_domain::{
    Cents, Currency, CustomerId, DomainError, Inventory, InventoryAction, InventoryCommand, InventoryEvent,
    InventoryState, OpenStatus, Order, OrderAction, OrderCommand, OrderEvent, OrderId, OrderImport, OrderLine,
    OrderState, OrderStatus, ProductName, Quantity, Sku,
};

/// `InventoryImported` schema 1 as stored.
const INVENTORY_IMPORTED_V1: &str = include_str!("golden/inventory_imported_v1.json");
/// `OrderImported` schema 1 as stored.
const ORDER_IMPORTED_V1: &str = include_str!("golden/order_imported_v1.json");

fn stored(golden: &str) -> Value {
    serde_json::from_str(golden).expect("a golden file is one JSON payload")
}

fn sku(raw: &str) -> Sku {
    Sku::parse(raw).expect("test SKUs are valid")
}
fn line(raw_sku: &str, quantity: u64, unit_price_cents: u64) -> OrderLine {
    OrderLine {
        sku: sku(raw_sku),
        quantity: Quantity::new(quantity).expect("test quantities are valid"),
        unit_price_cents: Cents::new(unit_price_cents).expect("test prices are valid"),
    }
}
fn name() -> ProductName {
    ProductName::parse("Blue widget").expect("valid name")
}
fn order_id() -> OrderId {
    OrderId::parse("o-legacy-7").expect("valid order id")
}
/// 2025-12-01T09:30:00Z, when the legacy system took the order.
fn placed_at() -> i64 {
    DateTime::parse_from_rfc3339("2025-12-01T09:30:00Z")
        .expect("RFC 3339")
        .timestamp_millis()
}
fn import(status: OpenStatus) -> OrderImport {
    OrderImport {
        customer_id: CustomerId::parse("c-42").expect("valid customer"),
        lines: vec![line("SKU-1", 2, 1250), line("SKU-9", 1, 499)],
        currency: Currency::parse("EUR").expect("valid currency"),
        status,
        placed_at_ms: placed_at(),
    }
}
fn order_imported(status: OpenStatus) -> OrderEvent {
    let import = import(status);
    OrderEvent::OrderImported {
        order_id: order_id(),
        customer_id: import.customer_id,
        lines: import.lines,
        currency: import.currency,
        status,
        placed_at_ms: import.placed_at_ms,
    }
}
fn inventory_imported(on_hand: u64) -> InventoryEvent {
    InventoryEvent::InventoryImported {
        sku: sku("SKU-1"),
        name: name(),
        on_hand,
    }
}

// ---- the storage contract ------------------------------------------------------

mod golden {
    use super::*;

    /// `InventoryImported` is written at schema 1, exactly as its golden file, and decodes back.
    #[test]
    fn inventory_imported_is_stored_as_its_golden_file() {
        let written = encode_event::<Inventory>(&inventory_imported(120)).expect("encodes");
        assert_eq!((written.event_type.as_str(), written.schema), ("InventoryImported", 1));
        assert_eq!(written.data, stored(INVENTORY_IMPORTED_V1));
        let read = decode_event::<Inventory>("InventoryImported", 1, &stored(INVENTORY_IMPORTED_V1)).expect("decodes");
        assert_eq!(read, inventory_imported(120));
    }

    /// `OrderImported` is written at schema 1, exactly as its golden file, and decodes back.
    #[test]
    fn order_imported_is_stored_as_its_golden_file() {
        let written = encode_event::<Order>(&order_imported(OpenStatus::Confirmed)).expect("encodes");
        assert_eq!((written.event_type.as_str(), written.schema), ("OrderImported", 1));
        assert_eq!(written.data, stored(ORDER_IMPORTED_V1));
        let read = decode_event::<Order>("OrderImported", 1, &stored(ORDER_IMPORTED_V1)).expect("decodes");
        assert_eq!(read, order_imported(OpenStatus::Confirmed));
    }

    /// An imported status other than placed or confirmed does not decode: closed orders are never imported.
    #[test]
    fn a_closed_status_is_not_an_imported_order() {
        let mut data = stored(ORDER_IMPORTED_V1);
        data["status"] = "shipped".into();
        assert!(decode_event::<Order>("OrderImported", 1, &data).is_err());
    }
}

// ---- inventory -----------------------------------------------------------------

mod inventory_import {
    use super::*;

    fn given(history: &[InventoryEvent]) -> InventoryState {
        history.iter().fold(InventoryState::default(), Inventory::evolve)
    }

    /// Given no stream, when a SKU is imported, then `InventoryImported`; the
    /// SKU is registered with its count, nothing reserved.
    #[test]
    fn a_new_sku_is_imported_with_its_count() {
        let events = Inventory::decide_import(&given(&[]), &sku("SKU-1"), &name(), 120).expect("imported");
        assert_eq!(events, [inventory_imported(120)]);
        let state = given(&events);
        assert_eq!(state.registered, Some((sku("SKU-1"), name())));
        assert_eq!((state.on_hand, state.reserved, state.available()), (120, 0, 120));
    }

    /// Table: a SKU that exists (registered or imported) is not imported again.
    #[test]
    fn an_existing_sku_is_not_imported_again() {
        let registered = InventoryEvent::SkuRegistered {
            sku: sku("SKU-1"),
            name: name(),
        };
        for history in [vec![registered], vec![inventory_imported(5)]] {
            assert_eq!(
                Inventory::decide_import(&given(&history), &sku("SKU-1"), &name(), 120),
                Err(DomainError::SkuAlreadyRegistered { sku: sku("SKU-1") })
            );
        }
    }

    /// A count beyond ON_HAND_MAX is refused, as a receipt past it would be.
    #[test]
    fn a_count_beyond_the_maximum_is_refused() {
        assert_eq!(
            Inventory::decide_import(&given(&[]), &sku("SKU-1"), &name(), ON_HAND_MAX + 1),
            Err(DomainError::StockLimitExceeded {
                sku: sku("SKU-1"),
                max: ON_HAND_MAX
            })
        );
    }

    /// Given an imported SKU, reservations are checked against its imported
    /// count like any SKU's: the open orders' stock fits, one unit more does not.
    #[test]
    fn an_imported_count_is_what_reservations_are_checked_against() {
        let state = given(&[inventory_imported(3)]);
        let reserve = |n| {
            InventoryCommand::new(
                sku("SKU-1"),
                InventoryAction::Reserve {
                    order_id: order_id(),
                    quantity: Quantity::new(n).expect("valid"),
                },
            )
        };
        assert!(Inventory::decide(&state, &reserve(3)).is_ok());
        assert_eq!(
            Inventory::decide(&state, &reserve(4)),
            Err(DomainError::InsufficientStock {
                sku: sku("SKU-1"),
                requested: 4,
                available: 3
            })
        );
    }
}

// ---- orders --------------------------------------------------------------------

mod order_import {
    use super::*;

    fn given(history: &[OrderEvent]) -> OrderState {
        history.iter().fold(OrderState::default(), Order::evolve)
    }

    fn command(action: OrderAction) -> OrderCommand {
        OrderCommand::new(order_id(), action)
    }

    /// Table: an open order is imported in its status, with its customer,
    /// lines and currency.
    #[test]
    fn an_open_order_is_imported_in_its_status() {
        for (status, expected) in [
            (OpenStatus::Placed, OrderStatus::Placed),
            (OpenStatus::Confirmed, OrderStatus::Confirmed),
        ] {
            let events = Order::decide_import(&given(&[]), &order_id(), &import(status)).expect("imported");
            assert_eq!(events, [order_imported(status)]);
            let state = given(&events);
            assert_eq!(state.status, expected);
            assert_eq!(state.total_cents(), 2 * 1250 + 499);
        }
    }

    /// An order that exists is not imported again, whatever its history.
    #[test]
    fn an_existing_order_is_not_imported_again() {
        assert_eq!(
            Order::decide_import(
                &given(&[order_imported(OpenStatus::Placed)]),
                &order_id(),
                &import(OpenStatus::Placed)
            ),
            Err(DomainError::OrderAlreadyExists { order_id: order_id() })
        );
    }

    /// The lines rules of a placed order hold for an imported one.
    #[test]
    fn an_import_without_lines_is_refused() {
        let mut empty = import(OpenStatus::Placed);
        empty.lines.clear();
        assert_eq!(
            Order::decide_import(&given(&[]), &order_id(), &empty),
            Err(DomainError::InvalidLines {
                reason: "an order needs at least one line"
            })
        );
    }

    /// Given an imported order, it goes on like a placed one: a placed one
    /// is confirmed, a confirmed one shipped, either cancelled with its
    /// lines (so their reservations are released).
    #[test]
    fn an_imported_order_goes_on_like_any_order() {
        let placed = given(&[order_imported(OpenStatus::Placed)]);
        assert_eq!(
            Order::decide(&placed, &command(OrderAction::Confirm)),
            Ok(vec![OrderEvent::OrderConfirmed {}])
        );
        let confirmed = given(&[order_imported(OpenStatus::Confirmed)]);
        assert_eq!(
            Order::decide(&confirmed, &command(OrderAction::Ship)),
            Ok(vec![OrderEvent::OrderShipped {}])
        );
        assert_eq!(
            Order::decide(&confirmed, &command(OrderAction::Cancel { reason: None })),
            Ok(vec![OrderEvent::OrderCancelled {
                reason: None,
                lines: import(OpenStatus::Confirmed).lines,
            }])
        );
    }
}

// ---- read models ---------------------------------------------------------------

mod views {
    use super::*;

    /// An imported order's summary row has its status and its legacy
    /// placing time (not the import's), so customers' listings stay in order.
    #[test]
    fn an_imported_order_gets_its_summary_row() {
        let imported_at = placed_at() + 90 * 86_400_000;
        let row = apply_order_summary(None, &order_imported(OpenStatus::Confirmed), 1, imported_at).expect("a row");
        assert_eq!(row.status, OrderStatus::Confirmed);
        assert_eq!((row.placed_at_ms, row.version, row.total_cents), (placed_at(), 1, 2999));
        assert_eq!(row.currency, "EUR");
    }

    /// An imported order's sale is booked on its legacy day, so cancelling
    /// it later nets out against a sale that was counted.
    #[test]
    fn an_imported_sale_is_booked_on_its_legacy_day() {
        let imported_at = placed_at() + 90 * 86_400_000;
        let delta = sales_delta(&order_imported(OpenStatus::Placed), imported_at).expect("a sale");
        assert_eq!(delta.day, utc_day(placed_at()));
        assert_eq!((delta.orders, delta.units, delta.revenue_cents), (1, 3, 2999));
    }
}

// ---- recomputation in memory ---------------------------------------------------

mod recompute {
    use super::*;

    fn sealed(events: &[OrderEvent], at: i64) -> Vec<EventEnvelope> {
        let stream = StreamId::parse("order-o-legacy-7").expect("stream");
        let encoded = events
            .iter()
            .map(|e| encode_event::<Order>(e).expect("encodes"))
            .collect();
        seal(&stream, 0, None, encoded, &Metadata::default(), at)
    }

    /// Runs a future of the in-memory model, which never waits on anything.
    fn ready<F: std::future::Future>(future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut context) {
            std::task::Poll::Ready(output) => output,
            std::task::Poll::Pending => panic!("the in-memory model never waits"),
        }
    }

    /// Given a history delivered with duplicates, a gap and a foreign stream,
    /// the in-memory model applies each event once, reports the gap, ignores
    /// the foreign stream, and lists its rows as the API serves them.
    #[test]
    fn the_memory_model_applies_each_event_once() {
        let history = sealed(
            &[
                order_imported(OpenStatus::Confirmed),
                OrderEvent::OrderShipped {},
                OrderEvent::OrderConfirmed {},
            ],
            placed_at() + 86_400_000,
        );
        let summary = MemoryModel::new(ORDER_SUMMARY).expect("a model");
        let foreign = {
            let mut event = history[0].clone();
            event.stream_id = StreamId::parse("inventory-SKU-1").expect("stream");
            event
        };
        let first = ready(summary.apply_batch(&[history[1].clone(), history[0].clone(), history[0].clone(), foreign]))
            .expect("applies");
        assert_eq!((first.applied, first.duplicates, first.ignored), (2, 1, 1));
        let gapped = ready(summary.apply_batch(&[history[0].clone()])).expect("applies");
        assert_eq!(gapped.duplicates, 1);

        let rows = summary.rows().expect("rows");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows["o-legacy-7"]["status"], "shipped");
        assert_eq!(rows["o-legacy-7"]["version"], 2);

        let sales = MemoryModel::new(SALES_BY_DAY).expect("a model");
        let gap = ready(sales.apply_batch(&history[1..])).expect("applies");
        assert_eq!((gap.applied, gap.gaps.len()), (0, 1));
        assert_eq!((gap.gaps[0].checkpoint, gap.gaps[0].next), (0, 2));
        ready(sales.apply_batch(&history)).expect("applies");
        let rows = sales.rows().expect("rows");
        assert_eq!(rows["2025-12-01"]["revenue_cents"], 2999);
        assert!(MemoryModel::new("inventory_levels").is_none());
    }
}
