//! Inventory, specified as given (events) → when (command) → then (events or
//! rejection). Every command and every rejection has a case.

use tally_core::Decider;
use tally_domain::inventory::ON_HAND_MAX;
use tally_domain::{
    DomainError, Inventory, InventoryAction, InventoryCommand, InventoryEvent, OrderId, ProductName, Quantity, Sku,
};

fn sku() -> Sku {
    Sku::parse("SKU-1").expect("sku")
}
fn qty(n: u64) -> Quantity {
    Quantity::new(n).expect("quantity")
}
fn order(id: &str) -> OrderId {
    OrderId::parse(id).expect("order id")
}
fn registered() -> InventoryEvent {
    InventoryEvent::SkuRegistered {
        sku: sku(),
        name: ProductName::parse("Widget").expect("name"),
    }
}
fn received(n: u64) -> InventoryEvent {
    InventoryEvent::StockReceived { quantity: qty(n) }
}
fn reserved(o: &str, n: u64) -> InventoryEvent {
    InventoryEvent::StockReserved {
        order_id: order(o),
        quantity: qty(n),
    }
}

/// Given `history`, when `action`, then `expected`.
fn spec(history: &[InventoryEvent], action: InventoryAction, expected: Result<Vec<InventoryEvent>, DomainError>) {
    let state = history.iter().fold(Default::default(), Inventory::evolve);
    let outcome = Inventory::decide(&state, &InventoryCommand::new(sku(), action.clone()));
    assert_eq!(outcome, expected, "given {history:?} when {action:?}");
}

/// register: a new SKU is registered; a second registration is refused.
#[test]
fn register() {
    let name = ProductName::parse("Widget").expect("name");
    spec(
        &[],
        InventoryAction::Register { name: name.clone() },
        Ok(vec![registered()]),
    );
    spec(
        &[registered()],
        InventoryAction::Register { name },
        Err(DomainError::SkuAlreadyRegistered { sku: sku() }),
    );
}

/// receive: adds to on hand; unknown SKU and the stock ceiling are refused.
#[test]
fn receive() {
    spec(
        &[registered()],
        InventoryAction::Receive { quantity: qty(5) },
        Ok(vec![received(5)]),
    );
    spec(
        &[],
        InventoryAction::Receive { quantity: qty(5) },
        Err(DomainError::SkuNotFound { sku: sku() }),
    );
    let near_ceiling = InventoryEvent::StockAdjusted {
        on_hand: ON_HAND_MAX,
        reason: "count".into(),
    };
    spec(
        &[registered(), near_ceiling],
        InventoryAction::Receive { quantity: qty(1) },
        Err(DomainError::StockLimitExceeded {
            sku: sku(),
            max: ON_HAND_MAX,
        }),
    );
}

/// reserve: up to the available units, never beyond (the oversell guard).
#[test]
fn reserve() {
    let history = [registered(), received(5), reserved("o-1", 2)];
    spec(
        &history,
        InventoryAction::Reserve {
            order_id: order("o-2"),
            quantity: qty(3),
        },
        Ok(vec![reserved("o-2", 3)]),
    );
    spec(
        &history,
        InventoryAction::Reserve {
            order_id: order("o-2"),
            quantity: qty(4),
        },
        Err(DomainError::InsufficientStock {
            sku: sku(),
            requested: 4,
            available: 3,
        }),
    );
    spec(
        &[],
        InventoryAction::Reserve {
            order_id: order("o-2"),
            quantity: qty(1),
        },
        Err(DomainError::SkuNotFound { sku: sku() }),
    );
}

/// release and commit: settle reserved units; more than reserved is refused.
#[test]
fn release_and_commit() {
    let history = [registered(), received(5), reserved("o-1", 2)];
    let release = |n| InventoryAction::Release {
        order_id: order("o-1"),
        quantity: qty(n),
    };
    let commit = |n| InventoryAction::Commit {
        order_id: order("o-1"),
        quantity: qty(n),
    };
    spec(
        &history,
        release(2),
        Ok(vec![InventoryEvent::ReservationReleased {
            order_id: order("o-1"),
            quantity: qty(2),
        }]),
    );
    spec(
        &history,
        commit(2),
        Ok(vec![InventoryEvent::ReservationCommitted {
            order_id: order("o-1"),
            quantity: qty(2),
        }]),
    );
    let too_many = DomainError::NoSuchReservation {
        sku: sku(),
        order_id: order("o-1"),
        quantity: 3,
    };
    spec(&history, release(3), Err(too_many.clone()));
    spec(&history, commit(3), Err(too_many));
    spec(&[], commit(1), Err(DomainError::SkuNotFound { sku: sku() }));

    let shipped = [
        history.to_vec(),
        vec![InventoryEvent::ReservationCommitted {
            order_id: order("o-1"),
            quantity: qty(2),
        }],
    ]
    .concat();
    let state = shipped.iter().fold(Default::default(), Inventory::evolve);
    assert_eq!((state.on_hand, state.reserved, state.available()), (3, 0, 3));
}

/// adjust: sets on hand; unchanged is a no-op; below reserved or past the ceiling is refused.
#[test]
fn adjust() {
    let history = [registered(), received(5), reserved("o-1", 2)];
    let adjust = |on_hand| InventoryAction::Adjust {
        on_hand,
        reason: "stock take".into(),
    };
    spec(
        &history,
        adjust(4),
        Ok(vec![InventoryEvent::StockAdjusted {
            on_hand: 4,
            reason: "stock take".into(),
        }]),
    );
    spec(&history, adjust(5), Ok(vec![]));
    spec(
        &history,
        adjust(1),
        Err(DomainError::AdjustmentBelowReserved {
            sku: sku(),
            on_hand: 1,
            reserved: 2,
        }),
    );
    spec(
        &history,
        adjust(ON_HAND_MAX + 1),
        Err(DomainError::StockLimitExceeded {
            sku: sku(),
            max: ON_HAND_MAX,
        }),
    );
    spec(&[], adjust(1), Err(DomainError::SkuNotFound { sku: sku() }));
}

mod invariant {
    use proptest::prelude::*;

    use super::*;

    fn action() -> impl Strategy<Value = InventoryAction> {
        let o = || (0u8..4).prop_map(|i| order(&format!("o-{i}")));
        prop_oneof![
            (1u64..20).prop_map(|n| InventoryAction::Receive { quantity: qty(n) }),
            (o(), 1u64..20).prop_map(|(order_id, n)| InventoryAction::Reserve {
                order_id,
                quantity: qty(n)
            }),
            (o(), 1u64..20).prop_map(|(order_id, n)| InventoryAction::Release {
                order_id,
                quantity: qty(n)
            }),
            (o(), 1u64..20).prop_map(|(order_id, n)| InventoryAction::Commit {
                order_id,
                quantity: qty(n)
            }),
            (0u64..60).prop_map(|on_hand| InventoryAction::Adjust {
                on_hand,
                reason: "count".into()
            }),
        ]
    }

    proptest! {
        /// Whatever commands arrive, reserved never exceeds on hand.
        #[test]
        fn reserved_never_exceeds_on_hand(actions in proptest::collection::vec(action(), 0..60)) {
            let mut state = Inventory::evolve(Default::default(), &registered());
            for action in actions {
                if let Ok(events) = Inventory::decide(&state, &InventoryCommand::new(sku(), action)) {
                    state = events.iter().fold(state, Inventory::evolve);
                }
                prop_assert!(state.reserved <= state.on_hand, "{state:?}");
            }
        }
    }
}
