//! The eventual read models recomputed in memory, for `tally verify
//! projections`: what the stored model should hold, derived from the events
//! alone.
//!
//! [`MemoryModel`] is a projection sink like any backend's, fed through the
//! core projection runtime with the same per-stream checkpoints and the same
//! pure rules ([`crate::views`]); only its rows live in a map instead of a
//! table. It never touches a store: the caller feeds it and reads its rows.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::NaiveDate;
use serde_json::Value;
use tally_core::projection::{BatchApplied, BatchProjectionSink, Gap, ModelRows};
use tally_core::{ApplyOutcome, Decider, EventEnvelope, ProjectionError, ProjectionSink, StreamId, decode_event};

use crate::order::{Order, OrderEvent};
use crate::views::{self, OrderSummary, SalesDay};

/// Which model, with its rows.
#[derive(Debug)]
enum Rows {
    OrderSummary(HashMap<String, OrderSummary>),
    SalesByDay(BTreeMap<NaiveDate, SalesDay>),
}

#[derive(Debug)]
struct Model {
    checkpoints: HashMap<StreamId, u64>,
    rows: Rows,
}

impl Model {
    fn apply(&mut self, envelope: &EventEnvelope, event: &OrderEvent) {
        match &mut self.rows {
            Rows::OrderSummary(rows) => {
                let key = envelope.stream_id.entity_id();
                let current = rows.remove(key);
                if let Some(row) = views::apply_order_summary(current, event, envelope.version, envelope.timestamp_ms) {
                    rows.insert(key.to_owned(), row);
                }
            }
            Rows::SalesByDay(days) => {
                if let Some(delta) = views::sales_delta(event, envelope.timestamp_ms) {
                    let day = days.entry(delta.day).or_insert_with(|| SalesDay {
                        day: delta.day.format("%Y-%m-%d").to_string(),
                        ..SalesDay::default()
                    });
                    day.orders += delta.orders;
                    day.units += delta.units;
                    day.revenue_cents += delta.revenue_cents;
                }
            }
        }
        self.checkpoints.insert(envelope.stream_id.clone(), envelope.version);
    }
}

/// An eventual projection (`order_summary` or `sales_by_day`) held in memory.
#[derive(Debug)]
pub struct MemoryModel {
    name: &'static str,
    model: Mutex<Model>,
}

fn poison(event: &EventEnvelope, reason: impl ToString) -> ProjectionError {
    ProjectionError::Poison {
        stream: event.stream_id.clone(),
        version: event.version,
        reason: reason.to_string(),
    }
}

impl MemoryModel {
    /// An empty model of the projection `name`; `None` for a name that is not
    /// one of [`views::PROJECTIONS`].
    pub fn new(name: &str) -> Option<Self> {
        let (name, rows) = match name {
            views::ORDER_SUMMARY => (views::ORDER_SUMMARY, Rows::OrderSummary(HashMap::new())),
            views::SALES_BY_DAY => (views::SALES_BY_DAY, Rows::SalesByDay(BTreeMap::new())),
            _ => return None,
        };
        Some(Self {
            name,
            model: Mutex::new(Model {
                checkpoints: HashMap::new(),
                rows,
            }),
        })
    }

    fn lock(&self) -> Result<MutexGuard<'_, Model>, ProjectionError> {
        self.model
            .lock()
            .map_err(|_| ProjectionError::Backend("the in-memory model was poisoned by a panic".into()))
    }
}

#[async_trait]
impl ProjectionSink for MemoryModel {
    fn name(&self) -> &str {
        self.name
    }

    fn follows(&self, stream: &StreamId) -> bool {
        stream.category() == Order::CATEGORY
    }

    async fn checkpoint(&self, stream: &StreamId) -> Result<u64, ProjectionError> {
        Ok(self.lock()?.checkpoints.get(stream).copied().unwrap_or(0))
    }

    async fn apply(&self, event: &EventEnvelope) -> Result<ApplyOutcome, ProjectionError> {
        let decoded =
            decode_event::<Order>(&event.event_type, event.schema, &event.data).map_err(|e| poison(event, e))?;
        let mut model = self.lock()?;
        if model.checkpoints.get(&event.stream_id).copied().unwrap_or(0) + 1 != event.version {
            return Ok(ApplyOutcome::CheckpointMoved);
        }
        model.apply(event, &decoded);
        Ok(ApplyOutcome::Applied)
    }
}

#[async_trait]
impl BatchProjectionSink for MemoryModel {
    async fn apply_batch(&self, events: &[EventEnvelope]) -> Result<BatchApplied, ProjectionError> {
        let mut decoded = Vec::with_capacity(events.len());
        let mut outcome = BatchApplied::default();
        for event in events {
            if !self.follows(&event.stream_id) {
                outcome.ignored += 1;
                continue;
            }
            let order_event =
                decode_event::<Order>(&event.event_type, event.schema, &event.data).map_err(|e| poison(event, e))?;
            decoded.push((event, order_event));
        }
        decoded.sort_by(|(a, _), (b, _)| a.stream_id.cmp(&b.stream_id).then(a.version.cmp(&b.version)));
        let mut model = self.lock()?;
        let mut blocked: Option<&StreamId> = None;
        for (event, order_event) in &decoded {
            if blocked == Some(&event.stream_id) {
                continue;
            }
            let checkpoint = model.checkpoints.get(&event.stream_id).copied().unwrap_or(0);
            if event.version <= checkpoint {
                outcome.duplicates += 1;
            } else if event.version == checkpoint + 1 {
                model.apply(event, order_event);
                outcome.applied += 1;
            } else {
                outcome.gaps.push(Gap {
                    stream: event.stream_id.clone(),
                    checkpoint,
                    next: event.version,
                });
                blocked = Some(&event.stream_id);
            }
        }
        Ok(outcome)
    }
}

fn to_json(row: &impl serde::Serialize) -> Result<Value, ProjectionError> {
    serde_json::to_value(row).map_err(|e| ProjectionError::Backend(Box::new(e)))
}

impl ModelRows for MemoryModel {
    fn rows(&self) -> Result<BTreeMap<String, Value>, ProjectionError> {
        let model = self.lock()?;
        match &model.rows {
            Rows::OrderSummary(rows) => rows.iter().map(|(key, row)| Ok((key.clone(), to_json(row)?))).collect(),
            Rows::SalesByDay(days) => days.values().map(|row| Ok((row.day.clone(), to_json(row)?))).collect(),
        }
    }
}
