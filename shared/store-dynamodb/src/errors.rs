//! SDK errors → the core's [`StoreError`]: a failed condition is a version
//! conflict naming the stream (or a duplicate idempotency key), throttling
//! and transport failures are retryable, anything else is a backend failure.
//! The SDK error is kept as the source, never stringified.

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use tally_core::{LoadedStream, StoreError, StreamId};

use crate::items::{EventItem, Item};

/// Error codes DynamoDB uses for "slow down": retry later.
const THROTTLING_CODES: [&str; 4] = [
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "ThrottlingException",
    "TransactionConflictException",
];

/// Maps an SDK failure that is not a condition failure.
pub(crate) fn sdk_error<E, R>(error: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let retryable = match &error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => true,
        SdkError::ServiceError(service) => service
            .err()
            .code()
            .is_some_and(|code| THROTTLING_CODES.contains(&code)),
        _ => false,
    };
    if retryable {
        StoreError::Unavailable(Box::new(error))
    } else {
        StoreError::Backend(Box::new(error))
    }
}

/// What each item of a transaction stood for, to name the culprit when its
/// condition fails.
#[derive(Debug, Clone)]
pub(crate) enum TransactItem {
    /// An event of `stream`, appended after `expected`.
    Event { stream: StreamId, expected: u64 },
    /// An inline read row (its condition only fails if a newer row exists).
    View { stream: StreamId, expected: u64 },
    /// The idempotency record.
    Idempotency { key: String },
}

impl TransactItem {
    /// The conflict this item's failed condition means; `old` is the item
    /// DynamoDB handed back (`ReturnValuesOnConditionCheckFailure=ALL_OLD`).
    pub(crate) fn conflict(&self, old: Option<Item>) -> StoreError {
        match self {
            Self::Event { stream, expected } | Self::View { stream, expected } => StoreError::WrongExpectedVersion {
                stream: stream.clone(),
                expected: *expected,
                winner: old.and_then(winner_of).map(Box::new),
            },
            Self::Idempotency { key } => StoreError::DuplicateIdempotencyKey { key: key.clone() },
        }
    }
}

/// The winning event item, as a loaded stream a retry can decide on: only
/// when it carries a snapshot (otherwise the retry must read the history).
/// The hash it chains from is the loser's head, which the command loop knows.
fn winner_of(item: Item) -> Option<LoadedStream> {
    let (event, snapshot) = EventItem::parse(item).ok()?.into_envelope().ok()?;
    let snapshot = snapshot?;
    Some(LoadedStream {
        snapshot: Some(snapshot),
        events: vec![event],
        base_hash: None,
    })
}
