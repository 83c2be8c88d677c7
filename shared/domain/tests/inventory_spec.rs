//! Specifies the inventory decider: given a SKU's events, when a command
//! arrives, then these events or this rejection — every command, every
//! rejection — and, under random command sequences, the oversell invariant
//! `reserved ≤ on_hand`.

use proptest::prelude::*;
use tally_core::Decider;
use tally_domain::inventory::ON_HAND_MAX;
use tally_domain::{
    DomainError, Inventory, InventoryAction, InventoryCommand, InventoryEvent, InventoryState, OrderId, ProductName,
    Quantity, Sku,
};

// ---- the given / when / then helper ----------------------------------------

/// The SKU every scenario is about: one stream, `inventory-SKU-1`.
fn sku() -> Sku {
    Sku::parse("SKU-1").expect("SKU-1 is a valid SKU")
}

/// Starts a scenario from the SKU's stored history.
fn given(history: &[InventoryEvent]) -> Given {
    Given {
        history: history.to_vec(),
    }
}

struct Given {
    history: Vec<InventoryEvent>,
}

impl Given {
    /// The command under test, sent to the scenario's SKU.
    fn when(self, action: InventoryAction) -> When {
        let state = self.history.iter().fold(InventoryState::default(), Inventory::evolve);
        When {
            history: self.history,
            command: InventoryCommand::new(sku(), action),
            state,
        }
    }
}

struct When {
    history: Vec<InventoryEvent>,
    command: InventoryCommand,
    state: InventoryState,
}

impl When {
    /// The command is accepted with exactly `expected`; returns the state
    /// those events lead to, for assertions on the counters.
    fn then_events(self, expected: &[InventoryEvent]) -> InventoryState {
        let events = Inventory::decide(&self.state, &self.command)
            .unwrap_or_else(|e| panic!("given {:?} when {:?}: rejected with {e}", self.history, self.command));
        assert_eq!(events, expected, "given {:?} when {:?}", self.history, self.command);
        events.iter().fold(self.state, Inventory::evolve)
    }

    /// The command is refused with exactly `expected`, whose API code is `code`.
    fn then_error(self, code: &str, expected: DomainError) {
        let outcome = Inventory::decide(&self.state, &self.command);
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

fn qty(n: u64) -> Quantity {
    Quantity::new(n).expect("test quantities are 1..=QUANTITY_MAX")
}
fn order(id: &str) -> OrderId {
    OrderId::parse(id).expect("test order ids are valid")
}
fn name(raw: &str) -> ProductName {
    ProductName::parse(raw).expect("test product names are valid")
}

fn registered() -> InventoryEvent {
    InventoryEvent::SkuRegistered {
        sku: sku(),
        name: name("Widget"),
    }
}
fn received(n: u64) -> InventoryEvent {
    InventoryEvent::StockReceived { quantity: qty(n) }
}
fn reserved(order_id: &str, n: u64) -> InventoryEvent {
    InventoryEvent::StockReserved {
        order_id: order(order_id),
        quantity: qty(n),
    }
}
fn released(order_id: &str, n: u64) -> InventoryEvent {
    InventoryEvent::ReservationReleased {
        order_id: order(order_id),
        quantity: qty(n),
    }
}
fn committed(order_id: &str, n: u64) -> InventoryEvent {
    InventoryEvent::ReservationCommitted {
        order_id: order(order_id),
        quantity: qty(n),
    }
}
fn adjusted(on_hand: u64) -> InventoryEvent {
    InventoryEvent::StockAdjusted {
        on_hand,
        reason: "stock take".to_owned(),
    }
}

fn register(raw_name: &str) -> InventoryAction {
    InventoryAction::Register { name: name(raw_name) }
}
fn receive(n: u64) -> InventoryAction {
    InventoryAction::Receive { quantity: qty(n) }
}
fn reserve(order_id: &str, n: u64) -> InventoryAction {
    InventoryAction::Reserve {
        order_id: order(order_id),
        quantity: qty(n),
    }
}
fn release(order_id: &str, n: u64) -> InventoryAction {
    InventoryAction::Release {
        order_id: order(order_id),
        quantity: qty(n),
    }
}
fn commit(order_id: &str, n: u64) -> InventoryAction {
    InventoryAction::Commit {
        order_id: order(order_id),
        quantity: qty(n),
    }
}
fn adjust(on_hand: u64) -> InventoryAction {
    InventoryAction::Adjust {
        on_hand,
        reason: "stock take".to_owned(),
    }
}

/// Registered, 5 on hand, 2 of them reserved for `o-1`: 3 available.
fn stocked() -> [InventoryEvent; 3] {
    [registered(), received(5), reserved("o-1", 2)]
}

fn no_such_reservation(order_id: &str, quantity: u64) -> DomainError {
    DomainError::NoSuchReservation {
        sku: sku(),
        order_id: order(order_id),
        quantity,
    }
}

// ---- register ----------------------------------------------------------------

mod register {
    use super::*;

    /// A new SKU is registered with its name and nothing on hand.
    #[test]
    fn a_new_sku_is_registered() {
        let state = given(&[]).when(register("Widget")).then_events(&[registered()]);
        assert_eq!(state.registered, Some((sku(), name("Widget"))));
        assert_eq!((state.on_hand, state.reserved), (0, 0));
    }

    /// Registering a SKU twice is refused, whatever the name.
    #[test]
    fn a_registered_sku_cannot_be_registered_again() {
        given(&[registered()]).when(register("Gadget")).then_error(
            "sku_already_registered",
            DomainError::SkuAlreadyRegistered { sku: sku() },
        );
    }
}

// ---- every command but register needs a registered SKU ---------------------

/// Table: every command other than register, on a SKU never registered, is
/// `sku_not_found` (the service turns it into `unknown_sku` for order lines).
#[test]
fn every_command_on_an_unregistered_sku_is_sku_not_found() {
    let commands = [
        receive(5),
        reserve("o-1", 1),
        release("o-1", 1),
        commit("o-1", 1),
        adjust(3),
    ];
    for command in commands {
        given(&[])
            .when(command)
            .then_error("sku_not_found", DomainError::SkuNotFound { sku: sku() });
    }
}

// ---- receive -------------------------------------------------------------------

mod receive {
    use super::*;

    /// Received units add to on hand and to what is available.
    #[test]
    fn received_units_are_on_hand() {
        let state = given(&stocked()).when(receive(4)).then_events(&[received(4)]);
        assert_eq!((state.on_hand, state.reserved, state.available()), (9, 2, 7));
    }

    /// Receiving into an unregistered SKU is refused: there is nothing to book it on.
    #[test]
    fn an_unregistered_sku_cannot_receive() {
        given(&[])
            .when(receive(4))
            .then_error("sku_not_found", DomainError::SkuNotFound { sku: sku() });
    }

    /// Receiving up to exactly ON_HAND_MAX is accepted.
    #[test]
    fn stock_may_reach_the_limit() {
        let state = given(&[registered(), adjusted(ON_HAND_MAX - 1)])
            .when(receive(1))
            .then_events(&[received(1)]);
        assert_eq!(state.on_hand, ON_HAND_MAX);
    }

    /// Receiving past ON_HAND_MAX is refused.
    #[test]
    fn stock_cannot_pass_the_limit() {
        given(&[registered(), adjusted(ON_HAND_MAX - 1)])
            .when(receive(2))
            .then_error(
                "stock_limit_exceeded",
                DomainError::StockLimitExceeded {
                    sku: sku(),
                    max: ON_HAND_MAX,
                },
            );
    }
}

// ---- reserve -------------------------------------------------------------------

mod reserve {
    use super::*;

    /// Reserving less than is available sets the units aside.
    #[test]
    fn available_units_are_reserved() {
        let state = given(&stocked())
            .when(reserve("o-2", 2))
            .then_events(&[reserved("o-2", 2)]);
        assert_eq!((state.on_hand, state.reserved, state.available()), (5, 4, 1));
    }

    /// Reserving exactly what is available is accepted and leaves none available.
    #[test]
    fn exactly_the_available_units_can_be_reserved() {
        let state = given(&stocked())
            .when(reserve("o-2", 3))
            .then_events(&[reserved("o-2", 3)]);
        assert_eq!((state.on_hand, state.reserved, state.available()), (5, 5, 0));
    }

    /// One unit more than available is refused, naming what was requested and what is available.
    #[test]
    fn more_than_available_is_insufficient_stock() {
        given(&stocked()).when(reserve("o-2", 4)).then_error(
            "insufficient_stock",
            DomainError::InsufficientStock {
                sku: sku(),
                requested: 4,
                available: 3,
            },
        );
    }

    /// With everything reserved, even one unit is refused with zero available.
    #[test]
    fn nothing_available_is_insufficient_stock() {
        given(&[registered(), received(2), reserved("o-1", 2)])
            .when(reserve("o-2", 1))
            .then_error(
                "insufficient_stock",
                DomainError::InsufficientStock {
                    sku: sku(),
                    requested: 1,
                    available: 0,
                },
            );
    }

    /// Reserving on an unregistered SKU is refused.
    #[test]
    fn an_unregistered_sku_cannot_be_reserved() {
        given(&[])
            .when(reserve("o-1", 1))
            .then_error("sku_not_found", DomainError::SkuNotFound { sku: sku() });
    }
}

// ---- release -------------------------------------------------------------------

mod release {
    use super::*;

    /// Releasing an order's reservation makes its units available again.
    #[test]
    fn a_reservation_is_released() {
        let state = given(&stocked())
            .when(release("o-1", 2))
            .then_events(&[released("o-1", 2)]);
        assert_eq!((state.on_hand, state.reserved, state.available()), (5, 0, 5));
    }

    /// Releasing when nothing is reserved is refused.
    #[test]
    fn nothing_reserved_is_no_such_reservation() {
        given(&[registered(), received(5)])
            .when(release("o-1", 1))
            .then_error("no_such_reservation", no_such_reservation("o-1", 1));
    }

    /// Releasing more units than are reserved is refused.
    #[test]
    fn more_than_reserved_is_no_such_reservation() {
        given(&stocked())
            .when(release("o-1", 3))
            .then_error("no_such_reservation", no_such_reservation("o-1", 3));
    }

    /// Releasing a reservation already released is refused.
    #[test]
    fn a_released_reservation_cannot_be_released_again() {
        given(&[registered(), received(5), reserved("o-1", 2), released("o-1", 2)])
            .when(release("o-1", 2))
            .then_error("no_such_reservation", no_such_reservation("o-1", 2));
    }

    /// The SKU keeps counters, not a list of reservations: a release is checked
    /// against the SKU's total reserved, and the order stream (appended in the
    /// same atomic batch) is what ties it to its own reservation.
    #[test]
    fn a_release_is_checked_against_the_sku_total_not_the_order() {
        let state = given(&stocked())
            .when(release("o-9", 1))
            .then_events(&[released("o-9", 1)]);
        assert_eq!((state.on_hand, state.reserved), (5, 1));
    }
}

// ---- commit --------------------------------------------------------------------

mod commit {
    use super::*;

    /// Committing a reservation ships its units: on hand and reserved both drop, available is unchanged.
    #[test]
    fn a_commit_reduces_on_hand_and_reserved() {
        let state = given(&stocked())
            .when(commit("o-1", 2))
            .then_events(&[committed("o-1", 2)]);
        assert_eq!((state.on_hand, state.reserved, state.available()), (3, 0, 3));
    }

    /// Committing when nothing is reserved is refused.
    #[test]
    fn nothing_reserved_is_no_such_reservation() {
        given(&[registered(), received(5)])
            .when(commit("o-1", 1))
            .then_error("no_such_reservation", no_such_reservation("o-1", 1));
    }

    /// Committing more units than are reserved is refused.
    #[test]
    fn more_than_reserved_is_no_such_reservation() {
        given(&stocked())
            .when(commit("o-1", 3))
            .then_error("no_such_reservation", no_such_reservation("o-1", 3));
    }

    /// A reservation already committed cannot be committed again.
    #[test]
    fn a_committed_reservation_cannot_be_committed_again() {
        given(&[registered(), received(5), reserved("o-1", 2), committed("o-1", 2)])
            .when(commit("o-1", 2))
            .then_error("no_such_reservation", no_such_reservation("o-1", 2));
    }
}

// ---- adjust --------------------------------------------------------------------

mod adjust {
    use super::*;

    /// A stock take sets on hand to the counted units, keeping reservations.
    #[test]
    fn a_count_sets_on_hand() {
        let state = given(&stocked()).when(adjust(4)).then_events(&[adjusted(4)]);
        assert_eq!((state.on_hand, state.reserved, state.available()), (4, 2, 2));
    }

    /// A count may go down to exactly the reserved units, leaving none available.
    #[test]
    fn a_count_may_equal_the_reserved_units() {
        let state = given(&stocked()).when(adjust(2)).then_events(&[adjusted(2)]);
        assert_eq!((state.on_hand, state.reserved, state.available()), (2, 2, 0));
    }

    /// A count below the reserved units is refused: reserved stock would be oversold.
    #[test]
    fn a_count_below_reserved_is_refused() {
        given(&stocked()).when(adjust(1)).then_error(
            "adjustment_below_reserved",
            DomainError::AdjustmentBelowReserved {
                sku: sku(),
                on_hand: 1,
                reserved: 2,
            },
        );
    }

    /// A count equal to what is on hand changes nothing and writes nothing.
    #[test]
    fn the_same_count_writes_no_events() {
        let state = given(&stocked()).when(adjust(5)).then_events(&[]);
        assert_eq!((state.on_hand, state.reserved), (5, 2));
    }

    /// A count of exactly ON_HAND_MAX is accepted.
    #[test]
    fn a_count_may_reach_the_limit() {
        given(&stocked())
            .when(adjust(ON_HAND_MAX))
            .then_events(&[adjusted(ON_HAND_MAX)]);
    }

    /// A count above ON_HAND_MAX is refused.
    #[test]
    fn a_count_above_the_limit_is_refused() {
        given(&stocked()).when(adjust(ON_HAND_MAX + 1)).then_error(
            "stock_limit_exceeded",
            DomainError::StockLimitExceeded {
                sku: sku(),
                max: ON_HAND_MAX,
            },
        );
    }
}

// ---- the invariant under random commands -----------------------------------

/// Any command but register, on one of four orders, with small quantities
/// (so that stock runs out, reservations overlap and counts undercut them).
fn any_command() -> impl Strategy<Value = InventoryAction> {
    let order_id = || prop::sample::select(&["o-0", "o-1", "o-2", "o-3"][..]);
    prop_oneof![
        (1u64..10).prop_map(receive),
        (order_id(), 1u64..10).prop_map(|(o, n)| reserve(o, n)),
        (order_id(), 1u64..10).prop_map(|(o, n)| release(o, n)),
        (order_id(), 1u64..10).prop_map(|(o, n)| commit(o, n)),
        (0u64..30).prop_map(adjust),
    ]
}

proptest! {
    /// Whatever commands arrive, in whatever order, deciding and evolving
    /// keeps reserved ≤ on hand, and reserved equals the accepted
    /// reservations minus the accepted releases and commits.
    #[test]
    fn reserved_never_exceeds_on_hand(commands in proptest::collection::vec(any_command(), 0..80)) {
        let mut state = Inventory::evolve(InventoryState::default(), &registered());
        let mut reservations: u64 = 0;
        for action in commands {
            let command = InventoryCommand::new(sku(), action);
            let Ok(events) = Inventory::decide(&state, &command) else {
                continue;
            };
            for event in &events {
                match event {
                    InventoryEvent::StockReserved { quantity, .. } => reservations += u64::from(quantity.get()),
                    InventoryEvent::ReservationReleased { quantity, .. }
                    | InventoryEvent::ReservationCommitted { quantity, .. } => {
                        prop_assert!(u64::from(quantity.get()) <= reservations, "{command:?} settled more than reserved");
                        reservations -= u64::from(quantity.get());
                    }
                    _ => {}
                }
                state = Inventory::evolve(state, event);
            }
            prop_assert!(state.reserved <= state.on_hand, "after {command:?}: {state:?}");
            prop_assert_eq!(state.reserved, reservations, "after {:?}", command);
        }
    }
}
