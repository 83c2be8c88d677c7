//! tally-bus: the read side's transport, between the events table and the
//! read models.
//!
//! - [`publisher`]: DynamoDB Streams records → CloudEvents on the EventBridge
//!   bus (batches of ≤ 10, failed entries retried, the first unpublished
//!   record reported so the stream redelivers it).
//! - [`detail`]: the wire shape (CloudEvents detail in an EventBridge
//!   envelope), large events by reference.
//! - [`projector`]: SQS messages → the core projection runtime, reporting
//!   exactly the messages that failed.
//! - [`dlq`]: listing and redriving a projection's dead letters.
//! - [`telemetry`]: JSON logs and EMF metrics for the Lambdas.
//!
//! The Lambdas in `functions/` and the test driver call these same
//! handlers. Nothing here decides business rules or writes events.

pub mod batch;
pub mod detail;
pub mod dlq;
pub mod projector;
pub mod publisher;
pub mod telemetry;

pub use detail::{BusMessage, DetailError, EventDetail};
pub use projector::{MessageError, Projector};
pub use publisher::{Publisher, PublisherConfig};
