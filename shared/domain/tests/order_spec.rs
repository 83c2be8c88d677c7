//! Specifies the order decider: given an order's events, when a command
//! arrives, then these events or this rejection — the whole lifecycle
//! (placed → confirmed → shipped, placed/confirmed → cancelled) — and the
//! stable API code of every rejection the domain can raise.

use tally_core::Decider;
use tally_domain::order::ORDER_LINES_MAX;
use tally_domain::{
    Cents, Currency, CustomerId, DomainError, Order, OrderAction, OrderCommand, OrderEvent, OrderId, OrderLine,
    OrderState, OrderStatus, Quantity, Sku,
};

// ---- the given / when / then helper ----------------------------------------

/// The order every scenario is about: one stream, `order-o-1`.
fn order_id() -> OrderId {
    OrderId::parse("o-1").expect("o-1 is a valid order id")
}

/// Starts a scenario from the order's stored history.
fn given(history: &[OrderEvent]) -> Given {
    Given {
        history: history.to_vec(),
    }
}

struct Given {
    history: Vec<OrderEvent>,
}

impl Given {
    /// The command under test, sent to the scenario's order.
    fn when(self, action: OrderAction) -> When {
        let state = self.history.iter().fold(OrderState::default(), Order::evolve);
        When {
            history: self.history,
            command: OrderCommand::new(order_id(), action),
            state,
        }
    }
}

struct When {
    history: Vec<OrderEvent>,
    command: OrderCommand,
    state: OrderState,
}

impl When {
    /// The command is accepted with exactly `expected`; returns the state
    /// those events lead to.
    fn then_events(self, expected: &[OrderEvent]) -> OrderState {
        let events = Order::decide(&self.state, &self.command)
            .unwrap_or_else(|e| panic!("given {:?} when {:?}: rejected with {e}", self.history, self.command));
        assert_eq!(events, expected, "given {:?} when {:?}", self.history, self.command);
        events.iter().fold(self.state, Order::evolve)
    }

    /// The command is refused with exactly `expected`, whose API code is `code`.
    fn then_error(self, code: &str, expected: DomainError) {
        let outcome = Order::decide(&self.state, &self.command);
        assert_eq!(
            outcome,
            Err(expected),
            "given {:?} when {:?}",
            self.history,
            self.command
        );
        if let Err(error) = outcome {
            assert_eq!(error.code(), code, "code of {error:?}");
        }
    }
}

// ---- events and commands, by name ------------------------------------------

fn customer() -> CustomerId {
    CustomerId::parse("c-1").expect("c-1 is a valid customer id")
}
fn line(sku: &str, quantity: u64, unit_price_cents: u64) -> OrderLine {
    OrderLine {
        sku: Sku::parse(sku).expect("test SKUs are valid"),
        quantity: Quantity::new(quantity).expect("test quantities are 1..=QUANTITY_MAX"),
        unit_price_cents: Cents::new(unit_price_cents).expect("test prices are in range"),
    }
}
/// Two lines: 2 × 12.50 and 1 × 4.99, 29.99 in all.
fn lines() -> Vec<OrderLine> {
    vec![line("SKU-1", 2, 1250), line("SKU-9", 1, 499)]
}
fn eur() -> Currency {
    Currency::parse("EUR").expect("EUR is a valid currency")
}

fn place(lines: Vec<OrderLine>) -> OrderAction {
    OrderAction::Place {
        customer_id: customer(),
        lines,
        currency: eur(),
    }
}
fn cancel(reason: Option<&str>) -> OrderAction {
    OrderAction::Cancel {
        reason: reason.map(str::to_owned),
    }
}

fn placed() -> OrderEvent {
    OrderEvent::OrderPlaced {
        order_id: order_id(),
        customer_id: customer(),
        lines: lines(),
        currency: eur(),
    }
}
fn confirmed() -> OrderEvent {
    OrderEvent::OrderConfirmed {}
}
fn cancelled(reason: Option<&str>) -> OrderEvent {
    OrderEvent::OrderCancelled {
        reason: reason.map(str::to_owned),
        lines: lines(),
    }
}
fn shipped() -> OrderEvent {
    OrderEvent::OrderShipped {}
}

/// The history that leads to each status.
fn history_of(status: OrderStatus) -> Vec<OrderEvent> {
    match status {
        OrderStatus::New => vec![],
        OrderStatus::Placed => vec![placed()],
        OrderStatus::Confirmed => vec![placed(), confirmed()],
        OrderStatus::Cancelled => vec![placed(), cancelled(None)],
        OrderStatus::Shipped => vec![placed(), confirmed(), shipped()],
    }
}

fn invalid_transition(command: &'static str, from: OrderStatus) -> DomainError {
    DomainError::InvalidTransition { command, from }
}
fn invalid_lines(reason: &'static str) -> DomainError {
    DomainError::InvalidLines { reason }
}

// ---- place ---------------------------------------------------------------------

mod place {
    use super::*;

    /// A new order is placed with its customer, lines and currency.
    #[test]
    fn a_new_order_is_placed() {
        let state = given(&[]).when(place(lines())).then_events(&[placed()]);
        assert_eq!(state.status, OrderStatus::Placed);
        assert_eq!(state.customer_id, Some(customer()));
        assert_eq!((state.lines, state.currency), (lines(), eur()));
    }

    /// An order of exactly ORDER_LINES_MAX distinct lines is accepted.
    #[test]
    fn the_most_lines_an_order_may_have_is_accepted() {
        let most: Vec<OrderLine> = (0..ORDER_LINES_MAX).map(|i| line(&format!("S-{i}"), 1, 100)).collect();
        let state = given(&[])
            .when(place(most.clone()))
            .then_events(&[OrderEvent::OrderPlaced {
                order_id: order_id(),
                customer_id: customer(),
                lines: most,
                currency: eur(),
            }]);
        assert_eq!(state.lines.len(), 32);
    }

    /// Table: placing an order that already exists is refused, whatever its status.
    #[test]
    fn an_existing_order_cannot_be_placed_again() {
        for status in [
            OrderStatus::Placed,
            OrderStatus::Confirmed,
            OrderStatus::Cancelled,
            OrderStatus::Shipped,
        ] {
            given(&history_of(status)).when(place(lines())).then_error(
                "order_already_exists",
                DomainError::OrderAlreadyExists { order_id: order_id() },
            );
        }
    }

    /// An order without lines is refused.
    #[test]
    fn an_order_needs_a_line() {
        given(&[])
            .when(place(vec![]))
            .then_error("invalid_lines", invalid_lines("an order needs at least one line"));
    }

    /// An order of 33 lines is refused: with its SKUs it must fit one atomic append.
    #[test]
    fn more_than_thirty_two_lines_are_refused() {
        let too_many = (0..=ORDER_LINES_MAX).map(|i| line(&format!("S-{i}"), 1, 100)).collect();
        given(&[])
            .when(place(too_many))
            .then_error("invalid_lines", invalid_lines("an order may have at most 32 lines"));
    }

    /// Two lines for the same SKU are refused, even with different quantities and prices.
    #[test]
    fn a_sku_may_appear_on_one_line_only() {
        let duplicated = vec![line("SKU-1", 1, 1250), line("SKU-9", 1, 499), line("SKU-1", 3, 1100)];
        given(&[])
            .when(place(duplicated))
            .then_error("invalid_lines", invalid_lines("each SKU may appear on one line only"));
    }
}

// ---- every transition needs an existing order ------------------------------

/// Table: confirm, cancel and ship on an order never placed are `order_not_found`.
#[test]
fn every_transition_on_an_unknown_order_is_order_not_found() {
    for action in [OrderAction::Confirm, cancel(Some("changed mind")), OrderAction::Ship] {
        given(&[])
            .when(action)
            .then_error("order_not_found", DomainError::OrderNotFound { order_id: order_id() });
    }
}

// ---- confirm -------------------------------------------------------------------

mod confirm {
    use super::*;

    /// A placed order is confirmed when paid.
    #[test]
    fn a_placed_order_is_confirmed() {
        let state = given(&[placed()])
            .when(OrderAction::Confirm)
            .then_events(&[confirmed()]);
        assert_eq!(state.status, OrderStatus::Confirmed);
    }

    /// Confirming a confirmed order again changes nothing and writes nothing.
    #[test]
    fn confirming_twice_writes_no_events() {
        given(&[placed(), confirmed()])
            .when(OrderAction::Confirm)
            .then_events(&[]);
    }

    /// A cancelled order cannot be confirmed.
    #[test]
    fn a_cancelled_order_cannot_be_confirmed() {
        given(&history_of(OrderStatus::Cancelled))
            .when(OrderAction::Confirm)
            .then_error(
                "invalid_transition",
                invalid_transition("confirm", OrderStatus::Cancelled),
            );
    }

    /// A shipped order cannot be confirmed (again).
    #[test]
    fn a_shipped_order_cannot_be_confirmed() {
        given(&history_of(OrderStatus::Shipped))
            .when(OrderAction::Confirm)
            .then_error(
                "invalid_transition",
                invalid_transition("confirm", OrderStatus::Shipped),
            );
    }

    /// An order never placed cannot be confirmed.
    #[test]
    fn an_unknown_order_is_not_found() {
        given(&[])
            .when(OrderAction::Confirm)
            .then_error("order_not_found", DomainError::OrderNotFound { order_id: order_id() });
    }
}

// ---- cancel --------------------------------------------------------------------

mod cancel {
    use super::*;

    /// A placed order is cancelled, carrying its lines so their stock is released.
    #[test]
    fn a_placed_order_is_cancelled_with_its_lines() {
        let state = given(&[placed()])
            .when(cancel(Some("changed mind")))
            .then_events(&[cancelled(Some("changed mind"))]);
        assert_eq!(state.status, OrderStatus::Cancelled);
    }

    /// A confirmed (paid, not shipped) order can still be cancelled, carrying its lines.
    #[test]
    fn a_confirmed_order_is_cancelled_with_its_lines() {
        given(&[placed(), confirmed()])
            .when(cancel(Some("out of budget")))
            .then_events(&[cancelled(Some("out of budget"))]);
    }

    /// A cancellation without a reason carries none.
    #[test]
    fn a_reason_is_optional() {
        given(&[placed()]).when(cancel(None)).then_events(&[cancelled(None)]);
    }

    /// Cancelling a cancelled order again changes nothing and writes nothing, whatever the reason.
    #[test]
    fn cancelling_twice_writes_no_events() {
        given(&[placed(), cancelled(None)])
            .when(cancel(Some("again")))
            .then_events(&[]);
    }

    /// A shipped order cannot be cancelled: its stock has left the warehouse.
    #[test]
    fn a_shipped_order_cannot_be_cancelled() {
        given(&history_of(OrderStatus::Shipped))
            .when(cancel(Some("too late")))
            .then_error("invalid_transition", invalid_transition("cancel", OrderStatus::Shipped));
    }
}

// ---- ship ----------------------------------------------------------------------

mod ship {
    use super::*;

    /// A confirmed order is shipped.
    #[test]
    fn a_confirmed_order_is_shipped() {
        let state = given(&[placed(), confirmed()])
            .when(OrderAction::Ship)
            .then_events(&[shipped()]);
        assert_eq!(state.status, OrderStatus::Shipped);
    }

    /// An unpaid (placed) order cannot be shipped.
    #[test]
    fn a_placed_order_cannot_be_shipped() {
        given(&[placed()])
            .when(OrderAction::Ship)
            .then_error("invalid_transition", invalid_transition("ship", OrderStatus::Placed));
    }

    /// A cancelled order cannot be shipped.
    #[test]
    fn a_cancelled_order_cannot_be_shipped() {
        given(&history_of(OrderStatus::Cancelled))
            .when(OrderAction::Ship)
            .then_error("invalid_transition", invalid_transition("ship", OrderStatus::Cancelled));
    }

    /// Shipping a shipped order again changes nothing and writes nothing.
    #[test]
    fn shipping_twice_writes_no_events() {
        given(&history_of(OrderStatus::Shipped))
            .when(OrderAction::Ship)
            .then_events(&[]);
    }
}

// ---- the rejection codes -----------------------------------------------------

/// Table: every rejection has a stable code, and the JSON the API sends
/// carries that same code in its `error` field.
#[test]
fn every_rejection_has_its_stable_code() {
    let sku = Sku::parse("SKU-1").expect("SKU-1 is a valid SKU");
    let table = [
        (
            "insufficient_stock",
            DomainError::InsufficientStock {
                sku: sku.clone(),
                requested: 4,
                available: 3,
            },
        ),
        ("invalid_transition", invalid_transition("ship", OrderStatus::Placed)),
        ("unknown_sku", DomainError::UnknownSku { sku: sku.clone() }),
        ("sku_not_found", DomainError::SkuNotFound { sku: sku.clone() }),
        ("order_not_found", DomainError::OrderNotFound { order_id: order_id() }),
        (
            "sku_already_registered",
            DomainError::SkuAlreadyRegistered { sku: sku.clone() },
        ),
        (
            "order_already_exists",
            DomainError::OrderAlreadyExists { order_id: order_id() },
        ),
        (
            "adjustment_below_reserved",
            DomainError::AdjustmentBelowReserved {
                sku: sku.clone(),
                on_hand: 1,
                reserved: 2,
            },
        ),
        (
            "stock_limit_exceeded",
            DomainError::StockLimitExceeded {
                sku: sku.clone(),
                max: 10,
            },
        ),
        (
            "no_such_reservation",
            DomainError::NoSuchReservation {
                sku,
                order_id: order_id(),
                quantity: 1,
            },
        ),
        ("invalid_lines", invalid_lines("an order needs at least one line")),
    ];
    for (code, error) in table {
        assert_eq!(error.code(), code, "code of {error:?}");
        let json = serde_json::to_value(&error).expect("a rejection serialises");
        assert_eq!(json["error"], code, "serialised {error:?}");
    }
}
