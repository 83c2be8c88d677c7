//! tally-tests: cross-crate scenarios, and the [`contract`] every
//! [`tally_core::EventStore`] adapter must pass.
//!
//! The library half holds what adapters' test files share: the store
//! contract suite, written once against the port so the SQLite and DynamoDB
//! stores are held to the same promises. The scenarios themselves live in
//! `tests/`, one file per theme. Nothing here is used outside tests.

pub mod contract;
