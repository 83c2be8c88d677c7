//! The command side's application service: load → decide → append for every
//! command of the API, with retries on conflict, If-Match, idempotency
//! records and the inline inventory view, all in one atomic append.
//!
//! It is what the HTTP handlers call, locally and in the command Lambda; it
//! knows the store only through the [`EventStore`] port.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::try_join_all;
use serde_json::{Value, json};
use tally_core::{
    Aggregate, AppendBatch, Attempt, CommandError, Decider, EventStore, IdempotencyRecord, Metadata, Prepared,
    RetryPolicy, SnapshotPolicy, StoreError, StreamAppend, StreamId, run_command,
};
use tally_domain::views::InventoryLevel;
use tally_domain::{
    Currency, CustomerId, DomainError, Inventory, InventoryAction, InventoryCommand, Order, OrderAction, OrderCommand,
    OrderId, OrderLine, ProductName, Quantity, Sku,
};

/// What a command's caller asked for beyond the command itself.
#[derive(Debug, Clone, Default)]
pub struct CommandContext {
    /// Correlation, causation, trace: copied onto every event written.
    pub metadata: Metadata,
    /// `If-Match`: the version the target stream must be at.
    pub expected_version: Option<u64>,
    /// `Idempotency-Key` and the hash of the request it came with.
    pub idempotency: Option<IdempotencyIntent>,
}

/// An idempotency key to record with the command's events.
#[derive(Debug, Clone)]
pub struct IdempotencyIntent {
    /// The client's key.
    pub key: String,
    /// SHA-256 of method, path and body.
    pub request_hash: String,
}

/// A command's successful answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    /// HTTP status (201 for creations, 200 otherwise).
    pub status: u16,
    /// The response body: always names the stream and version written.
    pub body: Value,
}

/// Why a command failed.
pub type ServiceError = CommandError<DomainError>;

/// Tunables of the command path.
#[derive(Debug, Clone, Copy)]
pub struct ServiceConfig {
    /// Retries after version conflicts.
    pub retry: RetryPolicy,
    /// When to store snapshots.
    pub snapshots: SnapshotPolicy,
    /// How long idempotency records are kept.
    pub idempotency_ttl: Duration,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            // Our aggregates are a few counters: every event carries its
            // post-state, so loading reads one item.
            snapshots: SnapshotPolicy::every(1),
            idempotency_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// The command service.
#[derive(Clone)]
pub struct CommandService {
    store: Arc<dyn EventStore>,
    config: ServiceConfig,
}

fn stream_of<D: Decider>(id: &str) -> Result<StreamId, ServiceError> {
    // Entity ids are at most 64 characters, so a category prefix always fits.
    StreamId::of(D::CATEGORY, id).map_err(|e| CommandError::Store(StoreError::InvalidAppend(e.to_string())))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl CommandService {
    /// A service appending to `store`.
    pub fn new(store: Arc<dyn EventStore>, config: ServiceConfig) -> Self {
        Self { store, config }
    }

    /// The store commands append to.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    fn check_expected<D: Decider>(aggregate: &Aggregate<D>, ctx: &CommandContext) -> Result<(), ServiceError> {
        match ctx.expected_version {
            Some(expected) if expected != aggregate.version => Err(CommandError::VersionMismatch {
                stream: aggregate.stream_id.clone(),
                expected,
                actual: aggregate.version,
            }),
            _ => Ok(()),
        }
    }

    fn prepare<D: Decider>(
        &self,
        aggregate: &Aggregate<D>,
        events: &[D::Event],
        ctx: &CommandContext,
        now: i64,
    ) -> Result<Prepared<D>, ServiceError> {
        Ok(aggregate.prepare(events, &ctx.metadata, now, self.config.snapshots)?)
    }

    fn prepare_inventory(
        &self,
        aggregate: &Aggregate<Inventory>,
        events: &[tally_domain::InventoryEvent],
        ctx: &CommandContext,
        now: i64,
    ) -> Result<StreamAppend, ServiceError> {
        let Prepared { mut append, state } = self.prepare(aggregate, events, ctx, now)?;
        let version = aggregate.version + events.len() as u64;
        // inventory_levels is inline: its row commits with the events.
        append.view = InventoryLevel::inline_view(&state, version)
            .map_err(|e| CommandError::Store(StoreError::InvalidAppend(e.to_string())))?;
        Ok(append)
    }

    fn idempotency_record(&self, ctx: &CommandContext, accepted: &Accepted, now: i64) -> Option<IdempotencyRecord> {
        ctx.idempotency.as_ref().map(|intent| IdempotencyRecord {
            key: intent.key.clone(),
            request_hash: intent.request_hash.clone(),
            status: accepted.status,
            response: accepted.body.clone(),
            expires_at_ms: now + i64::try_from(self.config.idempotency_ttl.as_millis()).unwrap_or(i64::MAX),
        })
    }

    async fn append(
        &self,
        streams: Vec<StreamAppend>,
        idempotency: Option<IdempotencyRecord>,
    ) -> Result<(), ServiceError> {
        self.store.append(AppendBatch { streams, idempotency }).await?;
        Ok(())
    }

    /// Runs one inventory command on `sku`.
    async fn inventory_command(
        &self,
        sku: &Sku,
        action: InventoryAction,
        ctx: &CommandContext,
        status: u16,
    ) -> Result<Accepted, ServiceError> {
        let stream = stream_of::<Inventory>(sku.as_str())?;
        let command = InventoryCommand::new(sku.clone(), action);
        let (stream, command) = (&stream, &command);
        run_command(&self.store, &self.config.retry, |attempt| async move {
            let aggregate = attempt.load::<Inventory>(stream).await?;
            Self::check_expected(&aggregate, ctx)?;
            let events = Inventory::decide(&aggregate.state, command).map_err(CommandError::Rejected)?;
            let version = aggregate.version + events.len() as u64;
            let mut body = json!({ "stream_id": stream, "version": version });
            if status == 201 {
                body["sku"] = json!(sku);
            }
            let accepted = Accepted { status, body };
            if events.is_empty() {
                return Ok(accepted);
            }
            let now = now_ms();
            let append = self.prepare_inventory(&aggregate, &events, ctx, now)?;
            self.append(vec![append], self.idempotency_record(ctx, &accepted, now))
                .await?;
            Ok(accepted)
        })
        .await
    }

    /// `POST /inventory`.
    pub async fn register_sku(
        &self,
        sku: &Sku,
        name: ProductName,
        ctx: &CommandContext,
    ) -> Result<Accepted, ServiceError> {
        self.inventory_command(sku, InventoryAction::Register { name }, ctx, 201)
            .await
    }

    /// `POST /inventory/{sku}/receipts`.
    pub async fn receive_stock(
        &self,
        sku: &Sku,
        quantity: Quantity,
        ctx: &CommandContext,
    ) -> Result<Accepted, ServiceError> {
        self.inventory_command(sku, InventoryAction::Receive { quantity }, ctx, 200)
            .await
    }

    /// `POST /inventory/{sku}/adjustments`.
    pub async fn adjust_stock(
        &self,
        sku: &Sku,
        on_hand: u64,
        reason: String,
        ctx: &CommandContext,
    ) -> Result<Accepted, ServiceError> {
        self.inventory_command(sku, InventoryAction::Adjust { on_hand, reason }, ctx, 200)
            .await
    }

    /// Loads every line's SKU and decides `action(line)` on it. A line whose
    /// SKU was never registered is `unknown_sku`.
    async fn decide_lines(
        &self,
        attempt: &Attempt,
        lines: &[OrderLine],
        action: impl Fn(&OrderLine) -> InventoryAction,
        ctx: &CommandContext,
        now: i64,
    ) -> Result<Vec<StreamAppend>, ServiceError> {
        let aggregates = try_join_all(lines.iter().map(|line| async move {
            let stream = stream_of::<Inventory>(line.sku.as_str())?;
            Ok::<_, ServiceError>(attempt.load::<Inventory>(&stream).await?)
        }))
        .await?;
        lines
            .iter()
            .zip(&aggregates)
            .map(|(line, aggregate)| {
                let command = InventoryCommand::new(line.sku.clone(), action(line));
                let events = Inventory::decide(&aggregate.state, &command).map_err(|e| match e {
                    DomainError::SkuNotFound { sku } => CommandError::Rejected(DomainError::UnknownSku { sku }),
                    other => CommandError::Rejected(other),
                })?;
                self.prepare_inventory(aggregate, &events, ctx, now)
            })
            .collect()
    }

    /// `POST /orders`: appends to the order stream and reserves every line's
    /// stock on its SKU stream, in one atomic append.
    pub async fn place_order(
        &self,
        order_id: &OrderId,
        customer_id: CustomerId,
        lines: Vec<OrderLine>,
        currency: Currency,
        ctx: &CommandContext,
    ) -> Result<Accepted, ServiceError> {
        let stream = stream_of::<Order>(order_id.as_str())?;
        let command = OrderCommand::new(
            order_id.clone(),
            OrderAction::Place {
                customer_id,
                lines: lines.clone(),
                currency,
            },
        );
        let (stream, command, lines) = (&stream, &command, &lines);
        run_command(&self.store, &self.config.retry, |attempt| async move {
            let order = attempt.load::<Order>(stream).await?;
            Self::check_expected(&order, ctx)?;
            let events = Order::decide(&order.state, command).map_err(CommandError::Rejected)?;
            let now = now_ms();
            let reserve = |line: &OrderLine| InventoryAction::Reserve {
                order_id: order_id.clone(),
                quantity: line.quantity,
            };
            let mut appends = vec![self.prepare(&order, &events, ctx, now)?.append];
            appends.extend(self.decide_lines(&attempt, lines, reserve, ctx, now).await?);
            let accepted = Accepted {
                status: 201,
                body: json!({ "order_id": order_id, "stream_id": stream, "version": order.version + events.len() as u64 }),
            };
            self.append(appends, self.idempotency_record(ctx, &accepted, now))
                .await?;
            Ok(accepted)
        })
        .await
    }

    /// `POST /orders/{id}/confirm|cancel|ship`: the order's transition and,
    /// for cancel and ship, the release or commit of every line's stock, in
    /// one atomic append. Repeating the transition that led to the current
    /// status writes nothing and answers the current version.
    pub async fn order_transition(
        &self,
        order_id: &OrderId,
        action: OrderAction,
        ctx: &CommandContext,
    ) -> Result<Accepted, ServiceError> {
        let stream = stream_of::<Order>(order_id.as_str())?;
        let command = OrderCommand::new(order_id.clone(), action);
        let (stream, command) = (&stream, &command);
        run_command(&self.store, &self.config.retry, |attempt| async move {
            let order = attempt.load::<Order>(stream).await?;
            Self::check_expected(&order, ctx)?;
            let events = Order::decide(&order.state, command).map_err(CommandError::Rejected)?;
            let accepted = Accepted {
                status: 200,
                body: json!({ "order_id": order_id, "stream_id": stream, "version": order.version + events.len() as u64 }),
            };
            if events.is_empty() {
                return Ok(accepted);
            }
            let now = now_ms();
            let stock_action: Option<fn(OrderId, Quantity) -> InventoryAction> = match &command.action {
                OrderAction::Cancel { .. } => Some(|order_id, quantity| InventoryAction::Release { order_id, quantity }),
                OrderAction::Ship => Some(|order_id, quantity| InventoryAction::Commit { order_id, quantity }),
                OrderAction::Place { .. } | OrderAction::Confirm => None,
            };
            let mut appends = vec![self.prepare(&order, &events, ctx, now)?.append];
            if let Some(stock_action) = stock_action {
                let per_line = |line: &OrderLine| stock_action(order_id.clone(), line.quantity);
                appends.extend(
                    self.decide_lines(&attempt, &order.state.lines, per_line, ctx, now)
                        .await?,
                );
            }
            self.append(appends, self.idempotency_record(ctx, &accepted, now))
                .await?;
            Ok(accepted)
        })
        .await
    }
}
