//! tally-core: the domain-agnostic event-sourcing core.
//!
//! Everything here sits between a pure domain (deciders) and a storage adapter
//! (SQLite, DynamoDB): the event envelope and its hash chain, the [`EventStore`]
//! port every adapter implements, upcasting of old payloads, snapshots, the
//! command loop (load → decide → append, retried on conflict), and the
//! projection runtime that keeps read models exactly-once under duplicates,
//! reordering and gaps.
//!
//! It never talks to AWS or any database itself: adapters bring the I/O.

pub mod anchor;
pub mod chain;
pub mod command;
pub mod decider;
pub mod envelope;
pub mod id;
pub mod projection;
pub mod snapshot;
pub mod store;
pub mod upcast;

pub use anchor::{Anchor, AnchorError, AnchorLeaf, Finding, HeadWalker, InclusionProof};
pub use chain::{ChainBreak, verify_chain, verify_segment};
pub use command::{
    Aggregate, AggregateAt, Attempt, CommandError, Prepared, REPLAY_PAGE, RetryPolicy, aggregate_at, fold_events,
    load_aggregate, retry_on_conflict, run_command,
};
pub use decider::{Decider, decode_event, encode_event};
pub use envelope::{EventEnvelope, Metadata, NewEvent, seal, seal_with_snapshot};
pub use id::{IdError, StreamId};
pub use projection::{ApplyOutcome, Delivery, ProjectionError, ProjectionSink, deliver};
pub use snapshot::{Snapshot, SnapshotPolicy};
pub use store::{
    AppendBatch, AppendOutcome, At, EventStore, IdempotencyRecord, InlineView, LoadedStream, StoreError, StreamAppend,
};
pub use upcast::{UpcastError, Upcasters};
