//! [`WinnerCache`]: a retry decides on the item that beat it, without
//! reading again.
//!
//! When an append loses a race, a store that can (DynamoDB with
//! `ReturnValuesOnConditionCheckFailure=ALL_OLD`) hands back the winner's
//! item; with its inline snapshot that item is a complete, fresh
//! [`LoadedStream`]. This wrapper keeps it for exactly one `load` of that
//! stream — the retry's — so a conflict costs one write request and no read.
//!
//! It never answers from older memory: a state remembered from an earlier
//! command could be stale, and a decision on stale state may *reject* a
//! command (say, insufficient stock) without any append to catch it. The
//! winner is as fresh as the conflict that returned it.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::envelope::EventEnvelope;
use crate::id::StreamId;
use crate::store::{AppendBatch, AppendOutcome, EventStore, IdempotencyRecord, LoadedStream, StoreError};

/// An [`EventStore`] whose retries start from the winner a conflict handed back.
pub struct WinnerCache<S> {
    inner: S,
    winners: Mutex<HashMap<StreamId, LoadedStream>>,
}

impl<S: EventStore> WinnerCache<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            winners: Mutex::new(HashMap::new()),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn take(&self, stream: &StreamId) -> Option<LoadedStream> {
        self.winners.lock().ok()?.remove(stream)
    }

    fn keep(&self, stream: &StreamId, winner: LoadedStream) {
        if let Ok(mut winners) = self.winners.lock() {
            winners.insert(stream.clone(), winner);
        }
    }
}

#[async_trait]
impl<S: EventStore> EventStore for WinnerCache<S> {
    async fn load(&self, stream: &StreamId) -> Result<LoadedStream, StoreError> {
        match self.take(stream) {
            Some(winner) => Ok(winner),
            None => self.inner.load(stream).await,
        }
    }

    async fn read_range(
        &self,
        stream: &StreamId,
        from: u64,
        to: Option<u64>,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        self.inner.read_range(stream, from, to).await
    }

    async fn read_until(&self, stream: &StreamId, at_ms: i64) -> Result<Vec<EventEnvelope>, StoreError> {
        self.inner.read_until(stream, at_ms).await
    }

    async fn append(&self, batch: AppendBatch) -> Result<AppendOutcome, StoreError> {
        let result = self.inner.append(batch).await;
        if let Err(StoreError::WrongExpectedVersion {
            stream,
            winner: Some(winner),
            ..
        }) = &result
            && winner.snapshot.is_some()
        {
            self.keep(stream, winner.as_ref().clone());
        }
        result
    }

    async fn idempotency_record(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.inner.idempotency_record(key).await
    }
}
