//! Specifies the read models' pure rules: how order events change an order's
//! summary row (`apply_order_summary`), what each order event adds to a UTC
//! day's sales (`sales_delta`), and the inventory row derived from a SKU's
//! state (`InventoryLevel::from_state`).

use chrono::{DateTime, NaiveDate};
use tally_domain::views::{InventoryLevel, OrderSummary, SalesDelta, apply_order_summary, sales_delta};
use tally_domain::{
    Cents, Currency, CustomerId, InventoryState, OrderEvent, OrderId, OrderLine, OrderStatus, ProductName, Quantity,
    Sku,
};

/// Milliseconds since the epoch of an RFC 3339 instant.
fn ms(rfc3339: &str) -> i64 {
    DateTime::parse_from_rfc3339(rfc3339)
        .expect("test instants are RFC 3339")
        .timestamp_millis()
}
fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("test days exist")
}

fn line(sku: &str, quantity: u64, unit_price_cents: u64) -> OrderLine {
    OrderLine {
        sku: Sku::parse(sku).expect("test SKUs are valid"),
        quantity: Quantity::new(quantity).expect("test quantities are valid"),
        unit_price_cents: Cents::new(unit_price_cents).expect("test prices are valid"),
    }
}
/// 2 × 12.50 + 1 × 4.99: 3 units, 2999 cents.
fn lines() -> Vec<OrderLine> {
    vec![line("SKU-1", 2, 1250), line("SKU-9", 1, 499)]
}
fn order_id() -> OrderId {
    OrderId::parse("o-1").expect("o-1 is a valid order id")
}
fn customer() -> CustomerId {
    CustomerId::parse("c-1").expect("c-1 is a valid customer id")
}
fn placed() -> OrderEvent {
    OrderEvent::OrderPlaced {
        order_id: order_id(),
        customer_id: customer(),
        lines: lines(),
        currency: Currency::parse("EUR").expect("EUR is a valid currency"),
    }
}
fn cancelled() -> OrderEvent {
    OrderEvent::OrderCancelled {
        reason: Some("changed mind".to_owned()),
        lines: lines(),
    }
}

// ---- order_summary -------------------------------------------------------------

mod order_summary {
    use super::*;

    const PLACED_AT: &str = "2026-03-01T10:00:00Z";

    fn summary(status: OrderStatus, version: u64) -> OrderSummary {
        OrderSummary {
            order_id: order_id(),
            customer_id: customer(),
            status,
            lines: lines(),
            total_cents: 2999,
            currency: "EUR".to_owned(),
            placed_at_ms: ms(PLACED_AT),
            version,
        }
    }

    /// A placed order gets its row: status placed, its lines and total, currency, placing time and version.
    #[test]
    fn placing_creates_the_row() {
        let row = apply_order_summary(None, &placed(), 1, ms(PLACED_AT));
        assert_eq!(row, Some(summary(OrderStatus::Placed, 1)));
    }

    /// Table: each transition sets the status and version, keeping when the order was placed.
    #[test]
    fn transitions_set_status_and_version() {
        let table = [
            (OrderEvent::OrderConfirmed {}, OrderStatus::Confirmed),
            (cancelled(), OrderStatus::Cancelled),
            (OrderEvent::OrderShipped {}, OrderStatus::Shipped),
        ];
        for (event, status) in table {
            let row = apply_order_summary(
                Some(summary(OrderStatus::Placed, 1)),
                &event,
                2,
                ms("2026-03-05T08:00:00Z"),
            );
            assert_eq!(row, Some(summary(status, 2)), "after {event:?}");
        }
    }

    /// A whole lifecycle folds into the final row: placed, confirmed, shipped at version 3.
    #[test]
    fn a_lifecycle_folds_into_one_row() {
        let events = [placed(), OrderEvent::OrderConfirmed {}, OrderEvent::OrderShipped {}];
        let row = events.iter().zip(1u64..).fold(None, |row, (event, version)| {
            apply_order_summary(row, event, version, ms(PLACED_AT) + 1000 * version as i64)
        });
        assert_eq!(
            row,
            Some(OrderSummary {
                placed_at_ms: ms(PLACED_AT) + 1000,
                ..summary(OrderStatus::Shipped, 3)
            })
        );
    }

    /// Table: a transition for an order with no row (never placed) creates none.
    #[test]
    fn a_transition_without_a_row_creates_none() {
        for event in [OrderEvent::OrderConfirmed {}, cancelled(), OrderEvent::OrderShipped {}] {
            assert_eq!(apply_order_summary(None, &event, 2, ms(PLACED_AT)), None, "{event:?}");
        }
    }
}

// ---- sales_by_day --------------------------------------------------------------

mod sales {
    use super::*;

    /// A placed order adds one order, its units and its revenue to the day it was placed.
    #[test]
    fn placing_adds_to_the_day() {
        assert_eq!(
            sales_delta(&placed(), ms("2026-03-01T10:00:00Z")),
            Some(SalesDelta {
                day: day(2026, 3, 1),
                orders: 1,
                units: 3,
                revenue_cents: 2999,
            })
        );
    }

    /// A cancelled order is taken off the day it was cancelled, not the day it was placed.
    #[test]
    fn cancelling_subtracts_from_the_day_of_cancellation() {
        assert_eq!(
            sales_delta(&cancelled(), ms("2026-03-04T09:30:00Z")),
            Some(SalesDelta {
                day: day(2026, 3, 4),
                orders: -1,
                units: -3,
                revenue_cents: -2999,
            })
        );
    }

    /// Placed and cancelled on the same day, an order nets to nothing.
    #[test]
    fn placed_and_cancelled_the_same_day_nets_to_zero() {
        let deltas = [
            sales_delta(&placed(), ms("2026-03-01T10:00:00Z")),
            sales_delta(&cancelled(), ms("2026-03-01T18:00:00Z")),
        ];
        let (plus, minus) = match deltas {
            [Some(plus), Some(minus)] => (plus, minus),
            other => panic!("both events count: {other:?}"),
        };
        assert_eq!(plus.day, minus.day);
        assert_eq!(
            (
                plus.orders + minus.orders,
                plus.units + minus.units,
                plus.revenue_cents + minus.revenue_cents
            ),
            (0, 0, 0)
        );
    }

    /// Table: confirming and shipping change no sales.
    #[test]
    fn confirming_and_shipping_add_nothing() {
        for event in [OrderEvent::OrderConfirmed {}, OrderEvent::OrderShipped {}] {
            assert_eq!(sales_delta(&event, ms("2026-03-01T10:00:00Z")), None, "{event:?}");
        }
    }

    /// Table: the day is the UTC day: the last millisecond of a day and the first of the next fall apart,
    /// and a time-zone offset does not move an instant to another day.
    #[test]
    fn the_day_is_the_utc_day() {
        let table = [
            ("2026-03-01T23:59:59.999Z", day(2026, 3, 1)),
            ("2026-03-02T00:00:00.000Z", day(2026, 3, 2)),
            // Half past midnight on 2 March in Paris is still 1 March in UTC.
            ("2026-03-02T00:30:00+01:00", day(2026, 3, 1)),
            // 8 pm on 1 March in New York is already 2 March in UTC.
            ("2026-03-01T20:00:00-05:00", day(2026, 3, 2)),
        ];
        for (instant, expected) in table {
            let delta = sales_delta(&placed(), ms(instant)).expect("a placed order counts");
            assert_eq!(delta.day, expected, "{instant}");
        }
    }
}

// ---- inventory_levels ------------------------------------------------------------

mod inventory_level {
    use super::*;

    /// A SKU never registered has no row.
    #[test]
    fn an_unregistered_sku_has_no_row() {
        let state = InventoryState {
            registered: None,
            on_hand: 0,
            reserved: 0,
        };
        assert_eq!(InventoryLevel::from_state(&state, 0), None);
    }

    /// A registered SKU's row shows its name, on hand, reserved, available and the version it reflects.
    #[test]
    fn a_registered_sku_shows_its_counters() {
        let sku = Sku::parse("SKU-1").expect("SKU-1 is a valid SKU");
        let state = InventoryState {
            registered: Some((sku.clone(), ProductName::parse("Widget").expect("valid name"))),
            on_hand: 5,
            reserved: 2,
        };
        assert_eq!(
            InventoryLevel::from_state(&state, 7),
            Some(InventoryLevel {
                sku,
                name: "Widget".to_owned(),
                on_hand: 5,
                reserved: 2,
                available: 3,
                version: 7,
            })
        );
    }

    /// Everything reserved shows zero available.
    #[test]
    fn everything_reserved_shows_none_available() {
        let state = InventoryState {
            registered: Some((
                Sku::parse("SKU-1").expect("valid SKU"),
                ProductName::parse("Widget").expect("valid name"),
            )),
            on_hand: 4,
            reserved: 4,
        };
        let level = InventoryLevel::from_state(&state, 3).expect("a registered SKU has a row");
        assert_eq!((level.on_hand, level.reserved, level.available), (4, 4, 0));
    }
}
