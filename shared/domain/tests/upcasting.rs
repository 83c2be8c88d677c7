//! Specifies the schema history of `OrderPlaced` against golden files: the
//! `data` payloads exactly as stored at each schema, decoded the way every
//! reader decodes them (upcast, then deserialise).
//!
//! Golden files of every old schema stay forever, unchanged: stored events
//! are never rewritten, so a payload written years ago must still decode.
//! A schema change adds a golden file of the new schema; it never edits or
//! deletes one.

use serde_json::{Value, json};
use tally_core::{UpcastError, decode_event, encode_event};
use tally_domain::{Cents, Currency, CustomerId, Order, OrderEvent, OrderId, OrderLine, Quantity, Sku};

/// `OrderPlaced` schema 1 as stored: no `currency`, every order was in USD.
const ORDER_PLACED_V1: &str = include_str!("golden/order_placed_v1.json");
/// `OrderPlaced` schema 2 as stored: with its `currency`.
const ORDER_PLACED_V2: &str = include_str!("golden/order_placed_v2.json");

fn stored(golden: &str) -> Value {
    serde_json::from_str(golden).expect("a golden file is one JSON payload")
}

fn line(sku: &str, quantity: u64, unit_price_cents: u64) -> OrderLine {
    OrderLine {
        sku: Sku::parse(sku).expect("golden SKUs are valid"),
        quantity: Quantity::new(quantity).expect("golden quantities are valid"),
        unit_price_cents: Cents::new(unit_price_cents).expect("golden prices are valid"),
    }
}

/// A schema-1 `OrderPlaced` decodes in full, as a USD order.
#[test]
fn schema_1_order_placed_decodes_as_usd() {
    let event = decode_event::<Order>("OrderPlaced", 1, &stored(ORDER_PLACED_V1)).expect("schema 1 decodes");
    assert_eq!(
        event,
        OrderEvent::OrderPlaced {
            order_id: OrderId::parse("o-2019-17").expect("golden order id"),
            customer_id: CustomerId::parse("c-42").expect("golden customer id"),
            lines: vec![line("SKU-1", 2, 1250), line("SKU-9", 1, 499)],
            currency: Currency::usd(),
        }
    );
}

/// A schema-2 `OrderPlaced` decodes in full, keeping its currency.
#[test]
fn schema_2_order_placed_decodes_with_its_currency() {
    let event = decode_event::<Order>("OrderPlaced", 2, &stored(ORDER_PLACED_V2)).expect("schema 2 decodes");
    assert_eq!(
        event,
        OrderEvent::OrderPlaced {
            order_id: OrderId::parse("o-2026-3").expect("golden order id"),
            customer_id: CustomerId::parse("c-42").expect("golden customer id"),
            lines: vec![line("SKU-1", 1, 1100)],
            currency: Currency::parse("EUR").expect("golden currency"),
        }
    );
}

/// A new `OrderPlaced` is written at schema 2, in the shape of the schema-2 golden file, and decodes back to itself.
#[test]
fn current_order_placed_is_written_at_schema_2_and_round_trips() {
    let event = OrderEvent::OrderPlaced {
        order_id: OrderId::parse("o-2026-3").expect("order id"),
        customer_id: CustomerId::parse("c-42").expect("customer id"),
        lines: vec![line("SKU-1", 1, 1100)],
        currency: Currency::parse("EUR").expect("currency"),
    };
    let written = encode_event::<Order>(&event).expect("an event encodes");
    assert_eq!((written.event_type.as_str(), written.schema), ("OrderPlaced", 2));
    assert_eq!(
        written.data,
        stored(ORDER_PLACED_V2),
        "the schema-2 golden file is what is written"
    );
    let read = decode_event::<Order>(&written.event_type, written.schema, &written.data).expect("decodes");
    assert_eq!(read, event);
}

/// A schema-1 order read and written again is a schema-2 USD payload; the rest is untouched.
#[test]
fn schema_1_order_placed_re_encodes_as_schema_2_usd() {
    let v1 = stored(ORDER_PLACED_V1);
    let event = decode_event::<Order>("OrderPlaced", 1, &v1).expect("schema 1 decodes");
    let written = encode_event::<Order>(&event).expect("an event encodes");
    assert_eq!(written.schema, 2);
    let mut expected = v1;
    expected["currency"] = json!("USD");
    assert_eq!(written.data, expected);
}

/// A payload stored as schema 2 without a currency is refused, not taken for USD:
/// only schema 1 means "USD by default".
#[test]
fn schema_2_without_currency_is_refused() {
    let outcome = decode_event::<Order>("OrderPlaced", 2, &stored(ORDER_PLACED_V1));
    assert!(
        matches!(&outcome, Err(UpcastError::Decode { event_type, schema: 2, .. }) if event_type == "OrderPlaced"),
        "{outcome:?}"
    );
}

/// A schema-1 payload that is not an object is refused by the upcaster, naming the step.
#[test]
fn schema_1_payload_that_is_not_an_object_is_refused() {
    let outcome = decode_event::<Order>("OrderPlaced", 1, &json!(["o-1"]));
    assert!(
        matches!(&outcome, Err(UpcastError::Step { event_type, schema: 1, .. }) if event_type == "OrderPlaced"),
        "{outcome:?}"
    );
}

/// Table: the other order events are still at schema 1 and round-trip.
#[test]
fn other_order_events_are_at_schema_1_and_round_trip() {
    let events = [
        ("OrderConfirmed", OrderEvent::OrderConfirmed {}),
        (
            "OrderCancelled",
            OrderEvent::OrderCancelled {
                reason: Some("changed mind".to_owned()),
                lines: vec![line("SKU-1", 2, 1250)],
            },
        ),
        (
            "OrderCancelled",
            OrderEvent::OrderCancelled {
                reason: None,
                lines: vec![line("SKU-1", 2, 1250)],
            },
        ),
        ("OrderShipped", OrderEvent::OrderShipped {}),
    ];
    for (event_type, event) in events {
        let written = encode_event::<Order>(&event).expect("an event encodes");
        assert_eq!((written.event_type.as_str(), written.schema), (event_type, 1));
        let read = decode_event::<Order>(&written.event_type, written.schema, &written.data).expect("decodes");
        assert_eq!(read, event);
    }
}
