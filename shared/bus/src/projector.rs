//! The projector: SQS messages (EventBridge envelopes of our CloudEvents) →
//! the core projection runtime → one read model.
//!
//! Each message is decoded, its event taken from the message or (when it
//! travelled by reference) from the event store, and delivered with
//! `tally_core::deliver`: duplicates are skipped by the per-stream
//! checkpoint, gaps are repaired from the event store, and the model change
//! and checkpoint are written atomically by the sink. A message that fails
//! is reported alone; its error is recorded where `tally dlq list` finds it.

use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use tally_core::{Delivery, EventStore, ProjectionError, ProjectionSink, StreamId, deliver};
use tally_store_dynamodb::schema::ENV_CHECKPOINTS_TABLE;
use tally_store_dynamodb::{DynamoConfig, DynamoStore, FailureLog, MissingSetting, Settings, SlotSinks, SlotTables};
use tracing::Instrument;

use crate::batch::{Grouped, sqs_batch};
use crate::detail::{BusMessage, DetailError, EventDetail};
use crate::telemetry::{error_chain, metric, trace_id};

/// Messages of one batch projected at once (deliveries of one stream may
/// race: the checkpoint condition makes the loser look again).
pub const DEFAULT_CONCURRENCY: usize = 8;

/// Environment variable naming the projection a projector maintains.
pub const ENV_PROJECTION: &str = "TALLY_PROJECTION";

/// A projector's settings do not describe a projection.
#[derive(Debug, thiserror::Error)]
pub enum ProjectorSetupError {
    /// A setting is missing.
    #[error(transparent)]
    Missing(#[from] MissingSetting),
    /// `TALLY_PROJECTION` names no projection.
    #[error("{ENV_PROJECTION}={0:?} names no projection")]
    UnknownProjection(String),
}

/// Why one message could not be projected.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// The message is not one of our events, or its event cannot be found.
    #[error(transparent)]
    Detail(#[from] DetailError),
    /// The projection runtime failed (poison event, unrepairable gap, backend).
    #[error(transparent)]
    Projection(#[from] ProjectionError),
}

/// Where a projector writes.
#[derive(Clone)]
enum Targets {
    /// Always this sink.
    Fixed(Arc<dyn ProjectionSink>),
    /// The slots the projection's generation item names, read once per
    /// batch: the live one, plus a blue-green rebuild's while it replays.
    Generations(SlotSinks),
}

/// One projection fed from its queue.
#[derive(Clone)]
pub struct Projector {
    store: Arc<dyn EventStore>,
    name: String,
    targets: Targets,
    failures: Option<FailureLog>,
    concurrency: usize,
}

impl Projector {
    /// Projects into `sink`, repairing gaps from `store`.
    pub fn new(store: Arc<dyn EventStore>, sink: Arc<dyn ProjectionSink>) -> Self {
        Self {
            store,
            name: sink.name().to_owned(),
            targets: Targets::Fixed(sink),
            failures: None,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }

    /// The projector a Lambda runs, wired on DynamoDB from its settings:
    /// `TALLY_PROJECTION`, `TALLY_EVENTS_TABLE`, `TALLY_CHECKPOINTS_TABLE` and
    /// the projection's two tables (blue and green). Each batch projects into
    /// the slots the projection's generation item names, so a rebuild on AWS
    /// (`tally rebuild --aws`) runs while the Lambdas keep projecting. The
    /// tests build it the same way from the environment template.yaml gives
    /// the function.
    pub fn dynamodb(client: aws_sdk_dynamodb::Client, settings: &impl Settings) -> Result<Self, ProjectorSetupError> {
        let projection = settings.require(ENV_PROJECTION)?;
        let tables = SlotTables::from_settings(&projection, settings)?
            .ok_or(ProjectorSetupError::UnknownProjection(projection))?;
        let store = DynamoStore::new(client.clone(), DynamoConfig::reader_from_settings(settings)?);
        let failures = FailureLog::new(client.clone(), settings.require(ENV_CHECKPOINTS_TABLE)?);
        Ok(Self {
            store: Arc::new(store),
            name: tables.projection().to_owned(),
            targets: Targets::Generations(SlotSinks::new(client, tables)),
            failures: Some(failures),
            concurrency: DEFAULT_CONCURRENCY,
        })
    }

    /// The sinks to project into now, live first.
    async fn sinks(&self) -> Result<Vec<Arc<dyn ProjectionSink>>, ProjectionError> {
        Ok(match &self.targets {
            Targets::Fixed(sink) => vec![sink.clone()],
            Targets::Generations(slots) => slots
                .targets()
                .await?
                .into_iter()
                .map(|sink| sink as Arc<dyn ProjectionSink>)
                .collect(),
        })
    }

    /// Records each failure in `log` (for `tally dlq list`).
    pub fn with_failure_log(mut self, log: FailureLog) -> Self {
        self.failures = Some(log);
        self
    }

    /// Projects up to `concurrency` messages of a batch at once.
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// The projection's name.
    pub fn projection(&self) -> &str {
        &self.name
    }

    /// Projects one message body.
    pub async fn project_body(&self, body: &str) -> Result<Delivery, MessageError> {
        let sinks = self.sinks().await?;
        self.project_detail(EventDetail::from_message_body(body)?.detail, &sinks)
            .await
    }

    /// Projects one event detail (a parsed message) into every sink, live
    /// first; what it did to the live one is the outcome (and the metrics).
    /// With no sink (a truncate is emptying the live model) the event is
    /// left to the rebuild's replay, which is sure to read it.
    async fn project_detail(
        &self,
        detail: EventDetail,
        sinks: &[Arc<dyn ProjectionSink>],
    ) -> Result<Delivery, MessageError> {
        let (stream, version) = (detail.subject.clone(), detail.streamversion);
        let span = tracing::info_span!(
            "project",
            projection = self.name.as_str(),
            stream = %stream,
            version,
            event_type = %detail.event_type,
            correlation_id = detail.correlationid.as_deref().unwrap_or(""),
            trace_id = trace_id(detail.traceparent.as_deref()).unwrap_or(""),
        );
        let outcome = async {
            let Some((live, others)) = sinks.split_first() else {
                tracing::info!("the live model is being emptied for a rebuild, which will replay this event");
                return Ok(Delivery::Ignored);
            };
            let event = detail.into_envelope(self.store.as_ref()).await?;
            let delivery = deliver(self.store.as_ref(), live.as_ref(), &event).await?;
            for other in others {
                deliver(self.store.as_ref(), other.as_ref(), &event).await?;
            }
            let labels = [("projection", self.name.clone())];
            match delivery {
                Delivery::Applied { repaired } => {
                    metrics::counter!(metric::EVENTS_APPLIED, &labels).increment(1 + repaired);
                    if repaired > 0 {
                        metrics::counter!(metric::GAPS_REPAIRED, &labels).increment(repaired);
                        tracing::info!(repaired, "gap repaired from the event store");
                    }
                    let lag = chrono::Utc::now().timestamp_millis() - event.timestamp_ms;
                    metrics::histogram!(metric::PROJECTION_LAG_MS, &labels).record(lag.max(0) as f64);
                }
                Delivery::Duplicate => metrics::counter!(metric::DUPLICATES_SKIPPED, &labels).increment(1),
                Delivery::Ignored => {}
            }
            Ok::<_, MessageError>(delivery)
        }
        .instrument(span.clone())
        .await;
        if let Err(error) = &outcome {
            self.record_failure(&stream, version, error).instrument(span).await;
        }
        outcome
    }

    async fn record_failure(&self, stream: &StreamId, version: u64, error: &MessageError) {
        metrics::counter!(metric::PROJECTION_FAILURES, "projection" => self.name.clone()).increment(1);
        let error = error_chain(error);
        tracing::error!(%error, "cannot project the event");
        if let Some(log) = &self.failures
            && let Err(log_error) = log.record(&self.name, stream, version, &error).await
        {
            tracing::warn!(error = %error_chain(&log_error), "cannot record the failure");
        }
    }

    /// Projects a message parsed once, up front, for grouping.
    async fn project_parsed(
        &self,
        parsed: Result<BusMessage, DetailError>,
        sinks: &[Arc<dyn ProjectionSink>],
    ) -> Result<(), MessageError> {
        match parsed {
            Ok(message) => self.project_detail(message.detail, sinks).await.map(drop),
            Err(error) => {
                let error = MessageError::Detail(error);
                metrics::counter!(metric::PROJECTION_FAILURES, "projection" => self.name.clone()).increment(1);
                tracing::error!(error = %error_chain(&error), "unreadable message");
                Err(error)
            }
        }
    }

    /// Projects an SQS batch and names the messages that failed. Streams
    /// are projected concurrently; the events of one stream in version order.
    /// Where to project is read once per batch; if it cannot be read, the
    /// whole batch fails and comes back.
    pub async fn project(&self, event: &SqsEvent) -> SqsBatchResponse {
        let sinks = match self.sinks().await {
            Ok(sinks) => Some(sinks),
            Err(error) => {
                let error = MessageError::Projection(error);
                tracing::error!(error = %error_chain(&error), "cannot read where to project; the batch comes back");
                None
            }
        };
        sqs_batch(event, self.concurrency, parse_for_grouping, |_, parsed| {
            let sinks = &sinks;
            async move {
                let Some(sinks) = sinks else {
                    return Err(MessageError::Projection(ProjectionError::Backend(
                        "where to project could not be read".into(),
                    )));
                };
                self.project_parsed(parsed, sinks).await
            }
        })
        .await
    }
}

/// A message's stream and version, for grouping, with the parsed message;
/// an unreadable message is a group of its own (it fails alone).
fn parse_for_grouping(message: &SqsMessage) -> Grouped<Result<BusMessage, DetailError>> {
    let parsed = EventDetail::from_message_body(message.body.as_deref().unwrap_or_default());
    let (group, order) = match &parsed {
        Ok(bus) => (bus.detail.subject.to_string(), bus.detail.streamversion),
        Err(_) => (
            format!("unreadable {}", message.message_id.as_deref().unwrap_or_default()),
            0,
        ),
    };
    Grouped {
        group,
        order,
        item: parsed,
    }
}
