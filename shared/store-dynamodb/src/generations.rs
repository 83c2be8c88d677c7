//! Generations of an eventual read model on DynamoDB: blue-green rebuilds
//! and truncate-and-replay, while the Lambdas keep projecting and serving.
//!
//! Each projection has two CloudFormation tables, the *blue* slot (the
//! original) and the *green* slot, so IAM stays static and nothing is
//! created outside the stack. A *generation item* in the checkpoints table
//! (`#generation|<projection>`) names the live slot and any rebuild under
//! way; every change to it is conditioned on its revision, so two rebuilds
//! cannot both move it.
//!
//! Who reads the item, and what they do:
//! - the query Lambda reads the live slot (cached for [`LIVE_SLOT_TTL`]);
//! - the projector reads it once per invocation ([`SlotTables::targets`]):
//!   it projects into the live slot and, while a blue-green build replays,
//!   into the build's slot too. That *is* the catch-up with the live tail:
//!   an event appended after the replay's Scan started reaches the new slot
//!   through its queue message, whatever the Scan saw (the checkpoints make
//!   the overlap a no-op). While a truncate empties the live slot the
//!   projector applies nothing: every such event is already in the store
//!   when the replay's Scan starts, so the replay applies it.
//! - a rebuild ([`DynamoGenerations`], the core's `ModelGenerations`).
//!
//! One rebuild of a projection at a time: a run holds the projection's
//! lease, an item beside the generation item (`#lease|<projection>`, see
//! [`DynamoLeases`]) taken and renewed with a conditional write and
//! expiring on its own if the run dies. The revision check on the
//! generation item stays the last line of defence.
//!
//! A slot is emptied only after *settling*: waiting out every projector
//! invocation (and cached reader) that may still act on the item as it was.
//! The settle time must exceed the projector's timeout plus
//! [`LIVE_SLOT_TTL`]; see [`DEFAULT_SETTLE`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, ReturnValuesOnConditionCheckFailure, WriteRequest};
use serde::{Deserialize, Serialize};
use tally_core::projection::{
    BatchApplied, BatchProjectionSink, Build, History, LeaseHolder, LeaseOutcome, ModelGenerations, ModelSnapshot,
    RebuildLeases, RebuildMode, StoredModel,
};
use tally_core::{Decider, ProjectionError, StreamId};
use tally_domain::Order;
use tally_domain::views::{self, OrderSummary, SalesDay};

use crate::history::{DynamoHistory, ScanCursor, backoff};
use crate::items::Item;
use crate::projections::DynamoProjectionSink;
use crate::schema::{
    CUSTOMER_ID, ENV_CHECKPOINTS_TABLE, ENV_ORDER_SUMMARY_GREEN_TABLE, ENV_ORDER_SUMMARY_TABLE, ENV_SALES_GREEN_TABLE,
    ENV_SALES_TABLE, READ_PK, READ_VERSION,
};
use crate::settings::{MissingSetting, Settings};
use crate::store::number;

/// How long a query Lambda keeps the live slot it read.
pub const LIVE_SLOT_TTL: Duration = Duration::from_secs(1);

/// Default settle time: the projector's timeout in template.yaml (30 s),
/// plus [`LIVE_SLOT_TTL`], plus a margin.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(35);

/// BatchWriteItem takes at most 25 requests.
const BATCH_WRITE_MAX: usize = 25;

fn backend<E: std::error::Error + Send + Sync + 'static>(error: E) -> ProjectionError {
    ProjectionError::Backend(Box::new(error))
}

fn failed(message: String) -> ProjectionError {
    ProjectionError::Backend(message.into())
}

/// One of a projection's two tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Slot {
    /// The original table.
    Blue,
    /// The second table.
    Green,
}

impl Slot {
    /// The other slot.
    pub fn other(self) -> Self {
        match self {
            Self::Blue => Self::Green,
            Self::Green => Self::Blue,
        }
    }

    /// `blue` or `green`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Blue => "blue",
            Self::Green => "green",
        }
    }
}

/// How a build replaces the model (the core's [`RebuildMode`], stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Mode {
    Truncate,
    BlueGreen,
}

impl From<RebuildMode> for Mode {
    fn from(mode: RebuildMode) -> Self {
        match mode {
            RebuildMode::Truncate => Self::Truncate,
            RebuildMode::BlueGreen => Self::BlueGreen,
        }
    }
}

impl From<Mode> for RebuildMode {
    fn from(mode: Mode) -> Self {
        match mode {
            Mode::Truncate => Self::Truncate,
            Mode::BlueGreen => Self::BlueGreen,
        }
    }
}

/// Where a build stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Phase {
    /// Its slot is being emptied: nobody projects into it.
    Emptying,
    /// The history is being replayed into its slot.
    Replaying,
}

/// A rebuild under way, as the generation item records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct BuildRecord {
    generation: u64,
    slot: Slot,
    mode: Mode,
    phase: Phase,
    cursor: ScanCursor,
    #[serde(default)]
    abandoned: Option<u64>,
}

/// A slot that was live until a switch: emptied once `settled`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Retired {
    slot: Slot,
    generation: u64,
    at_ms: i64,
}

/// The generation item's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationState {
    live: Slot,
    generation: u64,
    #[serde(default)]
    build: Option<BuildRecord>,
    #[serde(default)]
    retired: Option<Retired>,
    /// Whether the idle slot is known empty and unwritten since.
    #[serde(default = "yes")]
    idle_clean: bool,
}

fn yes() -> bool {
    true
}

impl Default for GenerationState {
    fn default() -> Self {
        Self {
            live: Slot::Blue,
            generation: 1,
            build: None,
            retired: None,
            idle_clean: true,
        }
    }
}

impl GenerationState {
    /// The slot readers read.
    pub fn live(&self) -> Slot {
        self.live
    }

    /// The live generation's number.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The slots a projector writes into now, live first: the live slot,
    /// plus a replaying blue-green build's; none while a truncate empties
    /// the live slot.
    pub fn targets(&self) -> Vec<Slot> {
        match &self.build {
            None => vec![self.live],
            Some(build) => match (build.mode, build.phase) {
                (Mode::Truncate, Phase::Emptying) => Vec::new(),
                (Mode::Truncate, Phase::Replaying) => vec![self.live],
                (Mode::BlueGreen, Phase::Emptying) => vec![self.live],
                (Mode::BlueGreen, Phase::Replaying) => vec![self.live, build.slot],
            },
        }
    }
}

/// A projection's two tables and where its generation item lives.
#[derive(Debug, Clone)]
pub struct SlotTables {
    projection: &'static str,
    blue: String,
    green: String,
    checkpoints: String,
}

impl SlotTables {
    /// The tables of projection `name` from the settings (`TALLY_ORDER_SUMMARY_TABLE`
    /// and `…_GREEN_TABLE`, or `TALLY_SALES_TABLE` and `…_GREEN_TABLE`, and
    /// `TALLY_CHECKPOINTS_TABLE`). `Ok(None)`: no such projection.
    pub fn from_settings(name: &str, settings: &impl Settings) -> Result<Option<Self>, MissingSetting> {
        match name {
            views::ORDER_SUMMARY => Self::order_summary(settings).map(Some),
            views::SALES_BY_DAY => Self::sales_by_day(settings).map(Some),
            _ => Ok(None),
        }
    }

    /// `order_summary`'s tables from the settings.
    pub fn order_summary(settings: &impl Settings) -> Result<Self, MissingSetting> {
        Self::named(
            views::ORDER_SUMMARY,
            settings.require(ENV_ORDER_SUMMARY_TABLE)?,
            settings.require(ENV_ORDER_SUMMARY_GREEN_TABLE)?,
            settings,
        )
    }

    /// `sales_by_day`'s tables from the settings.
    pub fn sales_by_day(settings: &impl Settings) -> Result<Self, MissingSetting> {
        Self::named(
            views::SALES_BY_DAY,
            settings.require(ENV_SALES_TABLE)?,
            settings.require(ENV_SALES_GREEN_TABLE)?,
            settings,
        )
    }

    fn named(
        projection: &'static str,
        blue: String,
        green: String,
        settings: &impl Settings,
    ) -> Result<Self, MissingSetting> {
        Ok(Self {
            projection,
            blue,
            green,
            checkpoints: settings.require(ENV_CHECKPOINTS_TABLE)?,
        })
    }

    /// The projection.
    pub fn projection(&self) -> &'static str {
        self.projection
    }

    /// The table of `slot`.
    pub fn table(&self, slot: Slot) -> &str {
        match slot {
            Slot::Blue => &self.blue,
            Slot::Green => &self.green,
        }
    }

    /// The checkpoints table (which holds the generation item).
    pub fn checkpoints(&self) -> &str {
        &self.checkpoints
    }

    /// The checkpoint namespace of `slot` in the checkpoints table.
    fn namespace(&self, slot: Slot) -> String {
        match slot {
            Slot::Blue => self.projection.to_owned(),
            Slot::Green => format!("{}@green", self.projection),
        }
    }

    /// The sink writing into `slot`.
    pub fn sink(&self, client: &Client, slot: Slot) -> DynamoProjectionSink {
        let sink = match self.projection {
            views::ORDER_SUMMARY => DynamoProjectionSink::order_summary(client.clone(), self.table(slot)),
            _ => DynamoProjectionSink::sales_by_day(client.clone(), self.table(slot), &self.checkpoints),
        };
        sink.with_checkpoint_namespace(self.namespace(slot))
    }

    fn item_key(&self) -> String {
        format!("#generation|{}", self.projection)
    }

    /// The generation item, read consistently (the default when absent),
    /// with its revision.
    pub async fn state(&self, client: &Client) -> Result<(GenerationState, u64), ProjectionError> {
        let found = client
            .get_item()
            .table_name(&self.checkpoints)
            .key(READ_PK, AttributeValue::S(self.item_key()))
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        let Some(item) = found.item else {
            return Ok((GenerationState::default(), 0));
        };
        let revision = match item.get("rev") {
            Some(AttributeValue::N(n)) => n.parse().unwrap_or_default(),
            _ => 0,
        };
        let state = match item.get("state") {
            Some(AttributeValue::S(json)) => serde_json::from_str(json)
                .map_err(|e| failed(format!("unreadable generation item of {}: {e}", self.projection)))?,
            _ => return Err(failed(format!("generation item of {} has no state", self.projection))),
        };
        Ok((state, revision))
    }

    /// Replaces the generation item if it is still at `revision`.
    async fn store(&self, client: &Client, state: &GenerationState, revision: u64) -> Result<u64, ProjectionError> {
        let json = serde_json::to_string(state).map_err(backend)?;
        let next = revision + 1;
        let mut put = client
            .put_item()
            .table_name(&self.checkpoints)
            .item(READ_PK, AttributeValue::S(self.item_key()))
            .item("state", AttributeValue::S(json))
            .item("rev", number(next))
            .item("live", AttributeValue::S(state.live.as_str().to_owned()));
        put = if revision == 0 {
            put.condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", READ_PK)
        } else {
            put.condition_expression("#rev = :rev")
                .expression_attribute_names("#rev", "rev")
                .expression_attribute_values(":rev", number(revision))
        };
        match put.send().await {
            Ok(_) => Ok(next),
            Err(SdkError::ServiceError(e)) if matches!(e.err(), PutItemError::ConditionalCheckFailedException(_)) => {
                Err(failed(format!(
                    "the generation item of {} changed under this rebuild (another rebuild running?): \
                     run it again to resume",
                    self.projection
                )))
            }
            Err(e) => Err(backend(e)),
        }
    }

    /// Deletes every row of `slot`, and its checkpoints; returns how many items.
    async fn empty(&self, client: &Client, slot: Slot) -> Result<u64, ProjectionError> {
        let mut deleted = delete_all(client, self.table(slot), None).await?;
        if self.projection != views::ORDER_SUMMARY {
            let prefix = format!("{}|", self.namespace(slot));
            deleted += delete_all(client, &self.checkpoints, Some(&prefix)).await?;
        }
        Ok(deleted)
    }
}

/// Deletes every item of `table` (whose key is `pk`), or those whose key
/// starts with `prefix`, page by page in batches of 25.
async fn delete_all(client: &Client, table: &str, prefix: Option<&str>) -> Result<u64, ProjectionError> {
    let mut deleted = 0;
    let mut start: Option<Item> = None;
    loop {
        let mut scan = client
            .scan()
            .table_name(table)
            .consistent_read(true)
            .projection_expression("#pk")
            .expression_attribute_names("#pk", READ_PK)
            .set_exclusive_start_key(start.take());
        if let Some(prefix) = prefix {
            scan = scan
                .filter_expression("begins_with(#pk, :prefix)")
                .expression_attribute_values(":prefix", AttributeValue::S(prefix.to_owned()));
        }
        let page = scan.send().await.map_err(backend)?;
        for keys in page.items.unwrap_or_default().chunks(BATCH_WRITE_MAX) {
            let mut requests: Vec<WriteRequest> = keys
                .iter()
                .map(|key| {
                    DeleteRequest::builder()
                        .set_key(Some(key.clone()))
                        .build()
                        .map(|delete| WriteRequest::builder().delete_request(delete).build())
                        .map_err(backend)
                })
                .collect::<Result<_, _>>()?;
            deleted += requests.len() as u64;
            let mut attempt = 0;
            while !requests.is_empty() {
                let written = client
                    .batch_write_item()
                    .request_items(table, std::mem::take(&mut requests))
                    .send()
                    .await
                    .map_err(backend)?;
                requests = written
                    .unprocessed_items
                    .and_then(|mut left| left.remove(table))
                    .unwrap_or_default();
                if !requests.is_empty() {
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
            }
        }
        match page.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => return Ok(deleted),
        }
    }
}

/// What the projector resolves once per invocation: the sinks to project
/// into, live first. Keeps one sink per slot (with its row cache).
#[derive(Debug, Clone)]
pub struct SlotSinks {
    client: Client,
    tables: SlotTables,
    sinks: HashMap<Slot, Arc<DynamoProjectionSink>>,
}

impl SlotSinks {
    /// The sinks of both slots of `tables`.
    pub fn new(client: Client, tables: SlotTables) -> Self {
        let sinks = [Slot::Blue, Slot::Green]
            .into_iter()
            .map(|slot| (slot, Arc::new(tables.sink(&client, slot))))
            .collect();
        Self { client, tables, sinks }
    }

    /// The projection.
    pub fn projection(&self) -> &'static str {
        self.tables.projection
    }

    /// The sinks to project into now (one read of the generation item).
    pub async fn targets(&self) -> Result<Vec<Arc<DynamoProjectionSink>>, ProjectionError> {
        let (state, _) = self.tables.state(&self.client).await?;
        Ok(state
            .targets()
            .into_iter()
            .filter_map(|slot| self.sinks.get(&slot).cloned())
            .collect())
    }
}

/// The live slot as the query side sees it: read from the generation item,
/// kept for [`LIVE_SLOT_TTL`].
#[derive(Debug, Clone)]
pub struct LiveSlot {
    client: Client,
    tables: SlotTables,
    cached: Arc<Mutex<Option<(Slot, Instant)>>>,
}

impl LiveSlot {
    /// The live slot of `tables`.
    pub fn new(client: Client, tables: SlotTables) -> Self {
        Self {
            client,
            tables,
            cached: Arc::default(),
        }
    }

    /// The live table's name.
    pub async fn table(&self) -> Result<String, ProjectionError> {
        let cached = self.cached.lock().ok().and_then(|c| *c);
        let slot = match cached {
            Some((slot, at)) if at.elapsed() < LIVE_SLOT_TTL => slot,
            _ => {
                let (state, _) = self.tables.state(&self.client).await?;
                if let Ok(mut cache) = self.cached.lock() {
                    *cache = Some((state.live, Instant::now()));
                }
                state.live
            }
        };
        Ok(self.tables.table(slot).to_owned())
    }
}

/// One projection's generations on DynamoDB: the core's [`ModelGenerations`].
pub struct DynamoGenerations {
    client: Client,
    tables: SlotTables,
    history: DynamoHistory,
    settle: Duration,
    chunk: usize,
    revision: Mutex<u64>,
    building: Mutex<Option<(u64, Slot)>>,
}

impl DynamoGenerations {
    /// The generations of `tables`, replaying `history`; slots are emptied
    /// only `settle` after the last change projectors may still act on.
    pub fn new(client: Client, tables: SlotTables, history: DynamoHistory, settle: Duration, chunk: usize) -> Self {
        Self {
            client,
            tables,
            history,
            settle,
            chunk: chunk.max(1),
            revision: Mutex::new(0),
            building: Mutex::new(None),
        }
    }

    async fn load(&self) -> Result<GenerationState, ProjectionError> {
        let (state, revision) = self.tables.state(&self.client).await?;
        if let Ok(mut known) = self.revision.lock() {
            *known = revision;
        }
        Ok(state)
    }

    async fn save(&self, state: &GenerationState) -> Result<(), ProjectionError> {
        let revision = self.revision.lock().map(|r| *r).unwrap_or_default();
        let next = self.tables.store(&self.client, state, revision).await?;
        if let Ok(mut known) = self.revision.lock() {
            *known = next;
        }
        Ok(())
    }

    /// Waits out projectors and readers acting on the item as it was, then
    /// empties `slot`.
    async fn settle_and_empty(&self, slot: Slot) -> Result<(), ProjectionError> {
        tracing::info!(
            projection = self.tables.projection,
            slot = slot.as_str(),
            settle_s = self.settle.as_secs_f64(),
            "settling before emptying"
        );
        tokio::time::sleep(self.settle).await;
        let deleted = self.tables.empty(&self.client, slot).await?;
        tracing::info!(
            projection = self.tables.projection,
            slot = slot.as_str(),
            deleted,
            "slot emptied"
        );
        Ok(())
    }

    /// The build of `record`, as the core sees it.
    fn build_of(&self, record: &BuildRecord, resumed: bool) -> Build<ScanCursor> {
        if let Ok(mut building) = self.building.lock() {
            *building = Some((record.generation, record.slot));
        }
        Build {
            projection: self.tables.projection.to_owned(),
            generation: record.generation,
            mode: record.mode.into(),
            resumed,
            cursor: record.cursor.clone(),
            abandoned: record.abandoned,
        }
    }

    /// The state with `build`'s record, checked to still be that build.
    fn record_of<'a>(
        &self,
        state: &'a mut GenerationState,
        build: &Build<ScanCursor>,
    ) -> Result<&'a mut BuildRecord, ProjectionError> {
        match state.build.as_mut() {
            Some(record) if record.generation == build.generation && RebuildMode::from(record.mode) == build.mode => {
                Ok(record)
            }
            _ => Err(failed(format!(
                "the rebuild of {} into generation {} is no longer recorded (another rebuild took over)",
                self.tables.projection, build.generation
            ))),
        }
    }
}

#[async_trait]
impl ModelGenerations for DynamoGenerations {
    type Cursor = ScanCursor;

    fn projection(&self) -> &str {
        self.tables.projection
    }

    fn category(&self) -> Option<&str> {
        Some(Order::CATEGORY)
    }

    async fn begin(&self, mode: RebuildMode) -> Result<Build<ScanCursor>, ProjectionError> {
        let mut state = self.load().await?;
        let wanted = Mode::from(mode);
        let mut abandoned = None;
        if let Some(record) = state.build.clone() {
            match (record.mode, wanted) {
                (have, want) if have == want => {
                    let mut record = record;
                    if record.phase == Phase::Emptying {
                        self.settle_and_empty(record.slot).await?;
                        record.phase = Phase::Replaying;
                        state.build = Some(record.clone());
                        self.save(&state).await?;
                    }
                    return Ok(self.build_of(&record, true));
                }
                (Mode::BlueGreen, Mode::Truncate) => {
                    // The unfinished blue-green build is dropped: its slot
                    // stays dirty until the next blue-green empties it.
                    abandoned = Some(record.generation);
                    state.build = None;
                    state.idle_clean = false;
                }
                _ => {
                    return Err(failed(format!(
                        "an unfinished truncate rebuild of {} is recorded: finish it with \
                         `tally rebuild {} --truncate` first",
                        self.tables.projection, self.tables.projection
                    )));
                }
            }
        }
        let history_origin = self.history.origin();
        let record = match wanted {
            Mode::Truncate => BuildRecord {
                generation: state.generation,
                slot: state.live,
                mode: wanted,
                phase: Phase::Emptying,
                cursor: history_origin,
                abandoned,
            },
            Mode::BlueGreen => {
                let slot = state.live.other();
                let clean = state.idle_clean && state.retired.is_none();
                BuildRecord {
                    generation: state.generation + 1,
                    slot,
                    mode: wanted,
                    phase: if clean { Phase::Replaying } else { Phase::Emptying },
                    cursor: history_origin,
                    abandoned,
                }
            }
        };
        state.build = Some(record.clone());
        if record.slot != state.live {
            state.idle_clean = false;
        }
        if let Some(retired) = &state.retired
            && retired.slot == record.slot
        {
            // Emptying it now is what the drop would have done.
            state.retired = None;
        }
        self.save(&state).await?;
        let mut record = record;
        if record.phase == Phase::Emptying {
            self.settle_and_empty(record.slot).await?;
            record.phase = Phase::Replaying;
            state.build = Some(record.clone());
            self.save(&state).await?;
        }
        Ok(self.build_of(&record, false))
    }

    fn sink(&self, build: &Build<ScanCursor>) -> Arc<dyn BatchProjectionSink> {
        let slot = match self.building.lock().ok().and_then(|b| *b) {
            Some((generation, slot)) if generation == build.generation => slot,
            // Not begun here: the core always begins first.
            _ => Slot::Green,
        };
        Arc::new(self.tables.sink(&self.client, slot))
    }

    async fn record_progress(&self, build: &Build<ScanCursor>, cursor: &ScanCursor) -> Result<(), ProjectionError> {
        let mut state = self.load().await?;
        self.record_of(&mut state, build)?.cursor = cursor.clone();
        self.save(&state).await
    }

    /// Applies the rest of the Scan after `cursor`, then completes the
    /// build. Events appended after the Scan passed their place reach the
    /// new slot through the projectors (which project into it while it
    /// replays), so the switch itself is one conditional write.
    async fn finish(&self, build: &Build<ScanCursor>, cursor: &ScanCursor) -> Result<BatchApplied, ProjectionError> {
        let sink = self.sink(build);
        let mut applied = BatchApplied::default();
        let mut at = cursor.clone();
        while !at.is_done() {
            let chunk = self.history.read_after(&at, self.chunk, self.category()).await?;
            applied.absorb(sink.apply_batch(&chunk.events).await?);
            at = chunk.end;
        }
        let mut state = self.load().await?;
        let record = self.record_of(&mut state, build)?.clone();
        state.build = None;
        if record.mode == Mode::BlueGreen {
            state.retired = Some(Retired {
                slot: state.live,
                generation: state.generation,
                at_ms: chrono::Utc::now().timestamp_millis(),
            });
            state.live = record.slot;
            state.generation = record.generation;
            state.idle_clean = false;
        }
        self.save(&state).await?;
        Ok(applied)
    }

    async fn drop_retired(&self) -> Result<u64, ProjectionError> {
        let mut state = self.load().await?;
        let Some(retired) = state.retired.clone() else {
            return Ok(0);
        };
        self.settle_and_empty(retired.slot).await?;
        state = self.load().await?;
        if state.retired.as_ref() == Some(&retired) {
            state.retired = None;
            state.idle_clean = state.build.is_none();
            self.save(&state).await?;
        }
        Ok(1)
    }
}

/// Rebuild leases in the checkpoints table, one item per projection
/// (`#lease|<projection>`, beside its generation item): `holder` and
/// `expires_at_ms`. Expiry is judged by the clock of whoever takes the
/// lease next, so the lease's length must exceed the clock skew between
/// operators' machines by far.
#[derive(Debug, Clone)]
pub struct DynamoLeases {
    client: Client,
    table: String,
}

/// The lease item's attributes.
const LEASE_HOLDER: &str = "holder";
const LEASE_EXPIRES: &str = "expires_at_ms";

impl DynamoLeases {
    /// Leases kept in the checkpoints table `table`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    fn key(projection: &str) -> AttributeValue {
        AttributeValue::S(format!("#lease|{projection}"))
    }

    /// Who holds the lease, from the item as stored.
    fn holder_of(projection: &str, item: &Item) -> Result<LeaseHolder, ProjectionError> {
        let holder = item.get(LEASE_HOLDER).and_then(|v| v.as_s().ok()).cloned();
        let expires = item
            .get(LEASE_EXPIRES)
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok());
        match (holder, expires) {
            (Some(holder), Some(expires_at_ms)) => Ok(LeaseHolder { holder, expires_at_ms }),
            _ => Err(failed(format!("unreadable rebuild lease item of {projection}"))),
        }
    }
}

#[async_trait]
impl RebuildLeases for DynamoLeases {
    async fn take(
        &self,
        projection: &str,
        holder: &str,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<LeaseOutcome, ProjectionError> {
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(READ_PK, Self::key(projection))
            .item(LEASE_HOLDER, AttributeValue::S(holder.to_owned()))
            .item(LEASE_EXPIRES, number(expires_at_ms))
            .condition_expression("attribute_not_exists(#pk) OR #holder = :holder OR #expires <= :now")
            .expression_attribute_names("#pk", READ_PK)
            .expression_attribute_names("#holder", LEASE_HOLDER)
            .expression_attribute_names("#expires", LEASE_EXPIRES)
            .expression_attribute_values(":holder", AttributeValue::S(holder.to_owned()))
            .expression_attribute_values(":now", number(now_ms))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match put {
            Ok(_) => Ok(LeaseOutcome::Taken),
            Err(SdkError::ServiceError(e)) if matches!(e.err(), PutItemError::ConditionalCheckFailedException(_)) => {
                let returned = match e.err() {
                    PutItemError::ConditionalCheckFailedException(failed) => failed.item.clone(),
                    _ => None,
                };
                let item = match returned {
                    Some(item) => item,
                    // Not every implementation hands the item back: read it.
                    None => self
                        .client
                        .get_item()
                        .table_name(&self.table)
                        .key(READ_PK, Self::key(projection))
                        .consistent_read(true)
                        .send()
                        .await
                        .map_err(backend)?
                        .item
                        .ok_or_else(|| failed(format!("the rebuild lease of {projection} vanished: try again")))?,
                };
                Ok(LeaseOutcome::HeldBy(Self::holder_of(projection, &item)?))
            }
            Err(e) => Err(backend(e)),
        }
    }

    async fn release(&self, projection: &str, holder: &str) -> Result<(), ProjectionError> {
        let deleted = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(READ_PK, Self::key(projection))
            .condition_expression("#holder = :holder")
            .expression_attribute_names("#holder", LEASE_HOLDER)
            .expression_attribute_values(":holder", AttributeValue::S(holder.to_owned()))
            .send()
            .await;
        match deleted {
            Ok(_) => Ok(()),
            // Someone else's (ours expired and was taken over): not ours to delete.
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => Ok(()),
            Err(e) => Err(backend(e)),
        }
    }
}

/// The live generation of a projection as stored: what `verify projections` diffs.
pub struct LiveModel {
    client: Client,
    tables: SlotTables,
}

impl LiveModel {
    /// The live generation of `tables`.
    pub fn new(client: Client, tables: SlotTables) -> Self {
        Self { client, tables }
    }

    async fn scan_all(&self, table: &str, prefix: Option<&str>) -> Result<Vec<Item>, ProjectionError> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut scan = self
                .client
                .scan()
                .table_name(table)
                .consistent_read(true)
                .set_exclusive_start_key(start.take());
            if let Some(prefix) = prefix {
                scan = scan
                    .filter_expression("begins_with(#pk, :prefix)")
                    .expression_attribute_names("#pk", READ_PK)
                    .expression_attribute_values(":prefix", AttributeValue::S(prefix.to_owned()));
            }
            let page = scan.send().await.map_err(backend)?;
            items.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(items),
            }
        }
    }

    async fn checkpoints(&self, slot: Slot) -> Result<HashMap<StreamId, u64>, ProjectionError> {
        let prefix = format!("{}|", self.tables.namespace(slot));
        let mut checkpoints = HashMap::new();
        for item in self.scan_all(&self.tables.checkpoints, Some(&prefix)).await? {
            let (Some(AttributeValue::S(key)), Some(version)) = (item.get(READ_PK), read_version(&item)) else {
                continue;
            };
            if let Some(stream) = key.strip_prefix(&prefix).and_then(|s| StreamId::parse(s).ok()) {
                checkpoints.insert(stream, version);
            }
        }
        Ok(checkpoints)
    }
}

fn read_version(item: &Item) -> Option<u64> {
    item.get(READ_VERSION)?.as_n().ok()?.parse().ok()
}

fn row_json(row: &impl Serialize) -> Result<serde_json::Value, ProjectionError> {
    serde_json::to_value(row).map_err(backend)
}

/// The checkpoints scans that bracket a sales snapshot may differ (a
/// projector wrote in between) this many times before giving up.
const SNAPSHOT_ATTEMPTS: usize = 5;

#[async_trait]
impl StoredModel for LiveModel {
    /// `order_summary`: one Scan (each row is its own checkpoint, so any
    /// read of it is consistent). `sales_by_day`: the checkpoints, the day
    /// rows, then the checkpoints again, until the two agree, so the rows
    /// reflect exactly the checkpoints returned.
    async fn snapshot(&self) -> Result<ModelSnapshot, ProjectionError> {
        let (state, _) = self.tables.state(&self.client).await?;
        let slot = state.live;
        let table = self.tables.table(slot).to_owned();
        let mut snapshot = ModelSnapshot::default();
        if self.tables.projection == views::ORDER_SUMMARY {
            for item in self.scan_all(&table, None).await? {
                let Some(AttributeValue::S(order_id)) = item.get(READ_PK).cloned() else {
                    continue;
                };
                let stream = StreamId::parse(format!("{}-{order_id}", Order::CATEGORY))
                    .map_err(|e| failed(format!("order summary row {order_id:?}: {e}")))?;
                if let Some(version) = read_version(&item) {
                    snapshot.checkpoints.insert(stream, version);
                }
                let row = if item.contains_key(CUSTOMER_ID) {
                    match serde_dynamo::from_item::<_, OrderSummary>(item.clone()) {
                        Ok(row) => row_json(&row)?,
                        // A row that no longer reads is shown as stored: a difference.
                        Err(e) => serde_json::json!({ "unreadable": e.to_string() }),
                    }
                } else {
                    continue;
                };
                snapshot.rows.insert(order_id, row);
            }
            return Ok(snapshot);
        }
        for _ in 0..SNAPSHOT_ATTEMPTS {
            let before = self.checkpoints(slot).await?;
            let mut rows = std::collections::BTreeMap::new();
            for item in self.scan_all(&table, None).await? {
                let Some(AttributeValue::S(day)) = item.get(READ_PK).cloned() else {
                    continue;
                };
                let field = |name: &str| -> i128 {
                    item.get(name)
                        .and_then(|v| v.as_n().ok())
                        .and_then(|n| n.parse().ok())
                        .unwrap_or_default()
                };
                let narrow = |name: &str| i64::try_from(field(name)).unwrap_or_default();
                let row = SalesDay {
                    day: day.clone(),
                    orders: narrow("orders"),
                    units: narrow("units"),
                    // A day's revenue may exceed an i64: read it whole.
                    revenue_cents: field("revenue_cents"),
                };
                rows.insert(day, row_json(&row)?);
            }
            let after = self.checkpoints(slot).await?;
            if before == after {
                snapshot.rows = rows;
                snapshot.checkpoints = after;
                return Ok(snapshot);
            }
        }
        Err(failed(format!(
            "{} kept changing while it was read ({SNAPSHOT_ATTEMPTS} attempts): verify when the projector is quieter",
            self.tables.projection
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn building(mode: Mode, phase: Phase) -> GenerationState {
        GenerationState {
            build: Some(BuildRecord {
                generation: 2,
                slot: Slot::Green,
                mode,
                phase,
                cursor: ScanCursor::origin(2),
                abandoned: None,
            }),
            ..GenerationState::default()
        }
    }

    /// Given each state of the generation item, the projector writes into
    /// the live slot, plus a replaying blue-green build's, and into nothing
    /// while a truncate empties the live slot.
    #[test]
    fn projector_targets_follow_the_build() {
        assert_eq!(GenerationState::default().targets(), [Slot::Blue]);
        assert_eq!(building(Mode::BlueGreen, Phase::Emptying).targets(), [Slot::Blue]);
        assert_eq!(
            building(Mode::BlueGreen, Phase::Replaying).targets(),
            [Slot::Blue, Slot::Green]
        );
        assert!(building(Mode::Truncate, Phase::Emptying).targets().is_empty());
        assert_eq!(building(Mode::Truncate, Phase::Replaying).targets(), [Slot::Blue]);
    }

    /// The item written before this code existed (none) reads as blue live,
    /// and the state survives a round trip through its JSON.
    #[test]
    fn the_state_round_trips() {
        let state = building(Mode::BlueGreen, Phase::Replaying);
        let json = serde_json::to_string(&state).expect("serialise");
        assert_eq!(serde_json::from_str::<GenerationState>(&json).expect("parse"), state);
        assert_eq!(GenerationState::default().live(), Slot::Blue);
    }
}
