//! Orders, specified as given (events) → when (command) → then (events or
//! rejection), and the schema history of `OrderPlaced` against golden files
//! of every stored schema. Golden files of an old schema stay forever: events
//! written years ago must still decode.

use tally_core::{Decider, decode_event, encode_event};
use tally_domain::{
    Cents, Currency, CustomerId, DomainError, Order, OrderAction, OrderCommand, OrderEvent, OrderId, OrderLine,
    OrderStatus, Quantity, Sku,
};

fn id() -> OrderId {
    OrderId::parse("o-1").expect("order id")
}
fn line(sku: &str, quantity: u64, cents: u64) -> OrderLine {
    OrderLine {
        sku: Sku::parse(sku).expect("sku"),
        quantity: Quantity::new(quantity).expect("quantity"),
        unit_price_cents: Cents::new(cents).expect("cents"),
    }
}
fn lines() -> Vec<OrderLine> {
    vec![line("A", 2, 150), line("B", 1, 999)]
}
fn place(lines: Vec<OrderLine>) -> OrderAction {
    OrderAction::Place {
        customer_id: CustomerId::parse("c-1").expect("customer"),
        lines,
        currency: Currency::usd(),
    }
}
fn placed() -> OrderEvent {
    OrderEvent::OrderPlaced {
        order_id: id(),
        customer_id: CustomerId::parse("c-1").expect("customer"),
        lines: lines(),
        currency: Currency::usd(),
    }
}
fn cancelled() -> OrderEvent {
    OrderEvent::OrderCancelled {
        reason: Some("changed mind".into()),
        lines: lines(),
    }
}
fn cancel() -> OrderAction {
    OrderAction::Cancel {
        reason: Some("changed mind".into()),
    }
}
fn invalid(command: &'static str, from: OrderStatus) -> Result<Vec<OrderEvent>, DomainError> {
    Err(DomainError::InvalidTransition { command, from })
}

/// Given `history`, when `action`, then `expected`.
fn spec(history: &[OrderEvent], action: OrderAction, expected: Result<Vec<OrderEvent>, DomainError>) {
    let state = history.iter().fold(Default::default(), Order::evolve);
    let outcome = Order::decide(&state, &OrderCommand::new(id(), action.clone()));
    assert_eq!(outcome, expected, "given {history:?} when {action:?}");
}

/// place: a new order with 1–50 distinct lines; anything else is refused.
#[test]
fn place_order() {
    spec(&[], place(lines()), Ok(vec![placed()]));
    spec(
        &[placed()],
        place(lines()),
        Err(DomainError::OrderAlreadyExists { order_id: id() }),
    );
    let refused = |reason| Err(DomainError::InvalidLines { reason });
    spec(&[], place(vec![]), refused("an order needs at least one line"));
    let many = (0..51).map(|i| line(&format!("S{i}"), 1, 1)).collect();
    spec(&[], place(many), refused("an order may have at most 50 lines"));
    spec(
        &[],
        place(vec![line("A", 1, 1), line("A", 2, 1)]),
        refused("each SKU may appear on one line only"),
    );
}

/// confirm: from placed; repeated is a no-op; after cancel or ship refused; unknown order not found.
#[test]
fn confirm_order() {
    spec(
        &[placed()],
        OrderAction::Confirm,
        Ok(vec![OrderEvent::OrderConfirmed {}]),
    );
    spec(
        &[placed(), OrderEvent::OrderConfirmed {}],
        OrderAction::Confirm,
        Ok(vec![]),
    );
    spec(
        &[placed(), cancelled()],
        OrderAction::Confirm,
        invalid("confirm", OrderStatus::Cancelled),
    );
    let shipped = [placed(), OrderEvent::OrderConfirmed {}, OrderEvent::OrderShipped {}];
    spec(&shipped, OrderAction::Confirm, invalid("confirm", OrderStatus::Shipped));
    spec(
        &[],
        OrderAction::Confirm,
        Err(DomainError::OrderNotFound { order_id: id() }),
    );
}

/// cancel: from placed or confirmed, carrying the lines to release; repeated no-op; after ship refused.
#[test]
fn cancel_order() {
    spec(&[placed()], cancel(), Ok(vec![cancelled()]));
    spec(
        &[placed(), OrderEvent::OrderConfirmed {}],
        cancel(),
        Ok(vec![cancelled()]),
    );
    spec(&[placed(), cancelled()], cancel(), Ok(vec![]));
    let shipped = [placed(), OrderEvent::OrderConfirmed {}, OrderEvent::OrderShipped {}];
    spec(&shipped, cancel(), invalid("cancel", OrderStatus::Shipped));
    spec(&[], cancel(), Err(DomainError::OrderNotFound { order_id: id() }));
}

/// ship: from confirmed only; repeated no-op; unpaid or cancelled refused.
#[test]
fn ship_order() {
    spec(
        &[placed(), OrderEvent::OrderConfirmed {}],
        OrderAction::Ship,
        Ok(vec![OrderEvent::OrderShipped {}]),
    );
    let shipped = [placed(), OrderEvent::OrderConfirmed {}, OrderEvent::OrderShipped {}];
    spec(&shipped, OrderAction::Ship, Ok(vec![]));
    spec(&[placed()], OrderAction::Ship, invalid("ship", OrderStatus::Placed));
    spec(
        &[placed(), cancelled()],
        OrderAction::Ship,
        invalid("ship", OrderStatus::Cancelled),
    );
    spec(
        &[],
        OrderAction::Ship,
        Err(DomainError::OrderNotFound { order_id: id() }),
    );
}

/// Every rejection has its stable API code.
#[test]
fn rejection_codes() {
    let sku = Sku::parse("A").expect("sku");
    let codes = [
        (
            DomainError::InsufficientStock {
                sku: sku.clone(),
                requested: 2,
                available: 1,
            },
            "insufficient_stock",
        ),
        (
            DomainError::InvalidTransition {
                command: "ship",
                from: OrderStatus::Placed,
            },
            "invalid_transition",
        ),
        (DomainError::UnknownSku { sku: sku.clone() }, "unknown_sku"),
        (DomainError::SkuNotFound { sku: sku.clone() }, "sku_not_found"),
        (DomainError::OrderNotFound { order_id: id() }, "order_not_found"),
        (
            DomainError::OrderAlreadyExists { order_id: id() },
            "order_already_exists",
        ),
        (DomainError::SkuAlreadyRegistered { sku }, "sku_already_registered"),
        (DomainError::InvalidLines { reason: "x" }, "invalid_lines"),
    ];
    for (error, code) in codes {
        assert_eq!(error.code(), code);
    }
}

/// A schema-1 `OrderPlaced` (before currencies) decodes as a USD order.
#[test]
fn order_placed_schema_1_golden_file_upcasts_to_usd() {
    let data: serde_json::Value =
        serde_json::from_str(include_str!("golden/order_placed_v1.json")).expect("golden file is JSON");
    let event = decode_event::<Order>("OrderPlaced", 1, &data).expect("schema 1 decodes");
    assert_eq!(
        event,
        OrderEvent::OrderPlaced {
            order_id: OrderId::parse("o-2019-17").expect("id"),
            customer_id: CustomerId::parse("c-42").expect("customer"),
            lines: vec![line("SKU-1", 2, 1250), line("SKU-9", 1, 499)],
            currency: Currency::usd(),
        }
    );
}

/// A schema-2 `OrderPlaced` keeps its currency, and new events are written at schema 2.
#[test]
fn order_placed_schema_2_golden_file_round_trips() {
    let data: serde_json::Value =
        serde_json::from_str(include_str!("golden/order_placed_v2.json")).expect("golden file is JSON");
    let event = decode_event::<Order>("OrderPlaced", 2, &data).expect("schema 2 decodes");
    let OrderEvent::OrderPlaced { currency, .. } = &event else {
        panic!("decoded {event:?}");
    };
    assert_eq!(currency.as_str(), "EUR");
    let stored = encode_event::<Order>(&event).expect("encode");
    assert_eq!((stored.event_type.as_str(), stored.schema), ("OrderPlaced", 2));
    assert_eq!(stored.data, data);
}
