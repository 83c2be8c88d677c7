//! Routes and handlers: parse at the edge, call the service or the read
//! models, answer JSON.

use std::collections::HashMap;
use std::future::Future;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, NaiveDate};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use tally_core::{At, CommandError, Decider, EventStore, Metadata, StoreError, StreamId, aggregate_at, load_aggregate};
use tally_domain::ids::validate_text;
use tally_domain::inventory::REASON_MAX_LEN;
use tally_domain::order::CANCEL_REASON_MAX_LEN;
use tally_domain::views::{self, InventoryLevel, OrderSummary, SalesDay};
use tally_domain::{
    Currency, CustomerId, Inventory, Order, OrderAction, OrderId, OrderLine, ProductName, Quantity, Sku,
};
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::service::{Accepted, CommandContext, IdempotencyIntent, ServiceError};
use crate::{CommandState, OPENAPI_JSON, QueryState};

/// Largest page of a listing.
const PAGE_MAX: u32 = 100;
/// Most events one `/streams/{id}/events` answer holds.
const EVENTS_PAGE_MAX: u64 = 1_000;
/// Longest sales report, in days: on DynamoDB each day is a key to fetch
/// (100 per BatchGetItem), so an unbounded range would let one request cost
/// thousands.
const SALES_MAX_DAYS: i64 = 366;
/// Longest accepted `Idempotency-Key` / `x-correlation-id`.
const HEADER_ID_MAX_LEN: usize = 128;
/// Largest stream version a request may name (`from`, `to`, `min_version`,
/// `at`, `If-Match`): SQLite stores versions as i64, so a larger one can
/// match no stream on either store, and binding it would fail the query (a
/// 500 for a client mistake). openapi.json states the same maximum.
const VERSION_MAX: u64 = i64::MAX.unsigned_abs();

pub(crate) fn command_routes() -> Router<CommandState> {
    Router::new()
        .route("/inventory", post(register_sku))
        .route("/inventory/{sku}/receipts", post(receive_stock))
        .route("/inventory/{sku}/adjustments", post(adjust_stock))
        .route("/orders", post(place_order))
        .route("/orders/{id}/confirm", post(confirm_order))
        .route("/orders/{id}/cancel", post(cancel_order))
        .route("/orders/{id}/ship", post(ship_order))
}

pub(crate) fn query_routes() -> Router<QueryState> {
    Router::new()
        .route("/inventory/{sku}", get(get_inventory))
        .route("/orders/{id}", get(get_order))
        .route("/customers/{id}/orders", get(customer_orders))
        .route("/reports/sales", get(sales_report))
        .route("/streams/{stream_id}/events", get(stream_events))
        .route("/streams/{stream_id}/state", get(stream_state))
        .route("/openapi.json", get(openapi))
}

/// Adds what every served router has: JSON 404/405 answers, the body limit, request tracing.
pub(crate) fn finish(routes: Router, body_limit: usize) -> Router {
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(TraceLayer::new_for_http())
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found("not_found", format!("no route for {}", uri.path()))
}

async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(json!({ "error": "method_not_allowed", "message": "method not allowed on this route" })),
    )
        .into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}

// ---- parsing at the edge ----------------------------------------------------

fn body_bytes(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge { limit }
        } else {
            ApiError::bad_request("unreadable_body", rejection.body_text())
        }
    })
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // An empty body means `{}` (confirm and ship take no fields).
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(bytes).map_err(|e| {
        let code = if e.is_syntax() || e.is_eof() {
            "malformed_json"
        } else {
            "invalid_request"
        };
        ApiError::bad_request(code, e.to_string())
    })
}

fn path_value(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(value)| value)
        .map_err(|rejection| ApiError::bad_request("invalid_path", rejection.body_text()))
}

fn parse_id<T, E: std::fmt::Display>(
    raw: &str,
    what: &str,
    parse: impl FnOnce(String) -> Result<T, E>,
) -> Result<T, ApiError> {
    parse(raw.to_owned()).map_err(|e| ApiError::bad_request("invalid_id", format!("{what} {e}")))
}

fn query_map(
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<HashMap<String, String>, ApiError> {
    query
        .map(|Query(map)| map)
        .map_err(|rejection| ApiError::bad_request("invalid_query", rejection.body_text()))
}

/// A numeric query parameter in `0..=max`; anything else is `invalid_query`.
fn query_u64(query: &HashMap<String, String>, name: &str, max: u64) -> Result<Option<u64>, ApiError> {
    query
        .get(name)
        .map(|raw| {
            raw.parse::<u64>()
                .ok()
                .filter(|value| *value <= max)
                .ok_or_else(|| ApiError::bad_request("invalid_query", format!("{name} must be an integer 0-{max}")))
        })
        .transpose()
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    headers
        .get(name)
        .map(|value| {
            value
                .to_str()
                .map_err(|_| ApiError::bad_request("invalid_header", format!("{name} must be visible ASCII")))
        })
        .transpose()
}

fn header_id(headers: &HeaderMap, name: &str) -> Result<Option<String>, ApiError> {
    match header_text(headers, name)? {
        None => Ok(None),
        Some(value)
            if !value.is_empty() && value.len() <= HEADER_ID_MAX_LEN && value.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(Some(value.to_owned()))
        }
        Some(_) => Err(ApiError::bad_request(
            "invalid_header",
            format!("{name} must be 1-{HEADER_ID_MAX_LEN} visible ASCII characters"),
        )),
    }
}

/// A W3C `traceparent`: `00-<32 hex>-<16 hex>-<2 hex>`. An invalid one is
/// ignored, as the W3C spec asks, not refused.
fn valid_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    parts.len() == 4 && hex(parts[0], 2) && hex(parts[1], 32) && hex(parts[2], 16) && hex(parts[3], 2)
}

fn command_context(headers: &HeaderMap, method: &Method, uri: &Uri, body: &[u8]) -> Result<CommandContext, ApiError> {
    let expected_version = header_text(headers, "if-match")?
        .map(|raw| {
            raw.trim()
                .trim_start_matches("W/")
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .filter(|version| *version <= VERSION_MAX)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_header",
                        format!("If-Match must be a stream version 0-{VERSION_MAX}, e.g. \"3\""),
                    )
                })
        })
        .transpose()?;
    let idempotency = header_id(headers, "idempotency-key")?.map(|key| {
        let mut hasher = Sha256::new();
        hasher.update(method.as_str().as_bytes());
        hasher.update(b"\n");
        hasher.update(uri.path().as_bytes());
        hasher.update(b"\n");
        hasher.update(body);
        IdempotencyIntent {
            key,
            request_hash: hex::encode(hasher.finalize()),
        }
    });
    let command_id = uuid::Uuid::now_v7().to_string();
    let traceparent = header_text(headers, "traceparent")?
        .filter(|t| valid_traceparent(t))
        .map(str::to_owned);
    let metadata = Metadata {
        correlation_id: Some(header_id(headers, "x-correlation-id")?.unwrap_or_else(|| command_id.clone())),
        causation_id: Some(command_id.clone()),
        traceparent,
        // The authorizer's caller (never a header): see `crate::actor`.
        actor: crate::actor::Actor::current().map(|actor| actor.as_str().to_owned()),
        command_id: Some(command_id),
        source: None,
    };
    Ok(CommandContext {
        metadata,
        expected_version,
        idempotency,
    })
}

fn accepted_response(accepted: Accepted, replayed: bool) -> Response {
    let status = StatusCode::from_u16(accepted.status).unwrap_or(StatusCode::OK);
    let mut response = (status, Json(accepted.body)).into_response();
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// Runs a command with its idempotency key: a key seen with the same request
/// answers the first response again; with another request, 422.
async fn run_command<F, Fut>(state: &CommandState, ctx: CommandContext, command: F) -> Result<Response, ApiError>
where
    F: FnOnce(CommandContext) -> Fut,
    Fut: Future<Output = Result<Accepted, ServiceError>>,
{
    let intent = ctx.idempotency.clone();
    if let Some(intent) = &intent
        && let Some(response) = replay(state, intent).await?
    {
        return Ok(response);
    }
    let error = match command(ctx).await {
        Ok(accepted) => return Ok(accepted_response(accepted, false)),
        Err(error) => error,
    };
    let Some(intent) = &intent else {
        return Err(error.into());
    };
    if !may_have_lost_a_keyed_race(&error) {
        return Err(error.into());
    }
    // A concurrent request with the same key may have committed between our
    // lookup and our decision: its events made ours a rejection or a
    // conflict (a second `POST /orders` sees the order already placed), and
    // its idempotency record committed with them. A retry must not see an
    // error the first attempt did not: answer the record, as a sequential
    // retry would.
    match replay(state, intent).await? {
        Some(response) => Ok(response),
        None if matches!(error, CommandError::Store(StoreError::DuplicateIdempotencyKey { .. })) => {
            // The key is taken but its record is gone (expired meanwhile).
            Err(ApiError::IdempotencyKeyReused)
        }
        None => Err(error.into()),
    }
}

/// Whether a keyed command's failure may come from a concurrent request with
/// the same key: a domain rejection, a version conflict or the key itself
/// taken. Store failures are not: nothing committed that could be replayed.
fn may_have_lost_a_keyed_race(error: &ServiceError) -> bool {
    match error {
        CommandError::Rejected(_) | CommandError::VersionMismatch { .. } | CommandError::Contended { .. } => true,
        CommandError::Store(store) => matches!(
            store,
            StoreError::DuplicateIdempotencyKey { .. } | StoreError::WrongExpectedVersion { .. }
        ),
    }
}

async fn replay(state: &CommandState, intent: &IdempotencyIntent) -> Result<Option<Response>, ApiError> {
    let Some(record) = state.store.idempotency_record(&intent.key).await? else {
        return Ok(None);
    };
    if record.request_hash != intent.request_hash {
        return Err(ApiError::IdempotencyKeyReused);
    }
    Ok(Some(accepted_response(
        Accepted {
            status: record.status,
            body: record.response,
        },
        true,
    )))
}

// ---- commands -----------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterSkuBody {
    sku: Sku,
    name: ProductName,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceiptBody {
    quantity: Quantity,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdjustmentBody {
    on_hand: u64,
    reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlaceOrderBody {
    order_id: Option<OrderId>,
    customer_id: CustomerId,
    lines: Vec<OrderLine>,
    currency: Option<Currency>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    reason: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct EmptyBody {}

/// What every command handler receives from axum.
struct CommandRequest {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
}

impl CommandRequest {
    fn parse<T: DeserializeOwned>(self, state: &CommandState) -> Result<(T, CommandContext), ApiError> {
        let body = body_bytes(self.body, state.config.body_limit)?;
        let ctx = command_context(&self.headers, &self.method, &self.uri, &body)?;
        Ok((parse_json(&body)?, ctx))
    }
}

macro_rules! command_request {
    ($method:ident, $uri:ident, $headers:ident, $body:ident) => {
        CommandRequest {
            method: $method,
            uri: $uri,
            headers: $headers,
            body: $body,
        }
    };
}

async fn register_sku(
    State(state): State<CommandState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (body, ctx): (RegisterSkuBody, _) = command_request!(method, uri, headers, body).parse(&state)?;
    run_command(&state, ctx, |ctx| {
        let commands = state.commands.clone();
        async move { commands.register_sku(&body.sku, body.name, &ctx).await }
    })
    .await
}

async fn receive_stock(
    State(state): State<CommandState>,
    sku: Result<Path<String>, PathRejection>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let sku = parse_id(&path_value(sku)?, "sku", Sku::parse)?;
    let (body, ctx): (ReceiptBody, _) = command_request!(method, uri, headers, body).parse(&state)?;
    run_command(&state, ctx, |ctx| {
        let commands = state.commands.clone();
        async move { commands.receive_stock(&sku, body.quantity, &ctx).await }
    })
    .await
}

async fn adjust_stock(
    State(state): State<CommandState>,
    sku: Result<Path<String>, PathRejection>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let sku = parse_id(&path_value(sku)?, "sku", Sku::parse)?;
    let (body, ctx): (AdjustmentBody, _) = command_request!(method, uri, headers, body).parse(&state)?;
    validate_text(&body.reason, REASON_MAX_LEN)
        .map_err(|e| ApiError::bad_request("invalid_request", format!("reason {e}")))?;
    run_command(&state, ctx, |ctx| {
        let commands = state.commands.clone();
        async move { commands.adjust_stock(&sku, body.on_hand, body.reason, &ctx).await }
    })
    .await
}

async fn place_order(
    State(state): State<CommandState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (body, ctx): (PlaceOrderBody, _) = command_request!(method, uri, headers, body).parse(&state)?;
    let order_id = match body.order_id {
        Some(id) => id,
        None => OrderId::parse(uuid::Uuid::now_v7().to_string())
            .map_err(|e| ApiError::bad_request("invalid_id", e.to_string()))?,
    };
    let currency = body.currency.unwrap_or_default();
    run_command(&state, ctx, |ctx| {
        let commands = state.commands.clone();
        async move {
            commands
                .place_order(&order_id, body.customer_id, body.lines, currency, &ctx)
                .await
        }
    })
    .await
}

async fn order_transition(
    state: CommandState,
    id: Result<Path<String>, PathRejection>,
    request: CommandRequest,
    action: impl FnOnce(Option<String>) -> OrderAction,
    takes_reason: bool,
) -> Result<Response, ApiError> {
    let order_id = parse_id(&path_value(id)?, "order id", OrderId::parse)?;
    let (reason, ctx) = if takes_reason {
        let (body, ctx): (CancelBody, _) = request.parse(&state)?;
        if let Some(reason) = &body.reason {
            validate_text(reason, CANCEL_REASON_MAX_LEN)
                .map_err(|e| ApiError::bad_request("invalid_request", format!("reason {e}")))?;
        }
        (body.reason, ctx)
    } else {
        let (EmptyBody {}, ctx) = request.parse(&state)?;
        (None, ctx)
    };
    let action = action(reason);
    run_command(&state, ctx, |ctx| {
        let commands = state.commands.clone();
        async move { commands.order_transition(&order_id, action, &ctx).await }
    })
    .await
}

async fn confirm_order(
    State(state): State<CommandState>,
    id: Result<Path<String>, PathRejection>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request = command_request!(method, uri, headers, body);
    order_transition(state, id, request, |_| OrderAction::Confirm, false).await
}

async fn cancel_order(
    State(state): State<CommandState>,
    id: Result<Path<String>, PathRejection>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request = command_request!(method, uri, headers, body);
    order_transition(state, id, request, |reason| OrderAction::Cancel { reason }, true).await
}

async fn ship_order(
    State(state): State<CommandState>,
    id: Result<Path<String>, PathRejection>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request = command_request!(method, uri, headers, body);
    order_transition(state, id, request, |_| OrderAction::Ship, false).await
}

// ---- queries ------------------------------------------------------------------

/// Waits up to the configured time for `read` to reach `min_version`; `None`
/// if it did not (the caller then answers from the event store).
async fn read_at_least<T, F, Fut>(
    state: &QueryState,
    min_version: Option<u64>,
    version_of: impl Fn(&T) -> u64,
    read: F,
) -> Result<Option<T>, ApiError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Option<T>, ApiError>>,
{
    let Some(min_version) = min_version else {
        return read().await;
    };
    let deadline = Instant::now() + state.config.min_version_wait;
    loop {
        if let Some(row) = read().await?
            && version_of(&row) >= min_version
        {
            return Ok(Some(row));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

async fn get_inventory(
    State(state): State<QueryState>,
    sku: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let sku = parse_id(&path_value(sku)?, "sku", Sku::parse)?;
    let min_version = query_u64(&query_map(query)?, "min_version", VERSION_MAX)?;
    let row = read_at_least(
        &state,
        min_version,
        |row: &InventoryLevel| row.version,
        || async { Ok(state.reads.inventory_level(&sku).await?) },
    )
    .await?;
    let row = match row {
        Some(row) => Some(row),
        None if min_version.is_some() => {
            let stream = StreamId::of("inventory", sku.as_str())
                .map_err(|e| ApiError::bad_request("invalid_id", e.to_string()))?;
            let aggregate = load_aggregate::<Inventory>(state.store.as_ref(), &stream).await?;
            InventoryLevel::from_state(&aggregate.state, aggregate.version)
        }
        None => None,
    };
    let row = row.ok_or_else(|| ApiError::not_found("sku_not_found", format!("SKU {sku} not found")))?;
    Ok(Json(row).into_response())
}

/// An order's summary computed from its events (read-your-writes fallback).
async fn order_from_store(state: &QueryState, order_id: &OrderId) -> Result<Option<OrderSummary>, ApiError> {
    let stream =
        StreamId::of("order", order_id.as_str()).map_err(|e| ApiError::bad_request("invalid_id", e.to_string()))?;
    let events = state.store.read_range(&stream, 1, None).await?;
    let mut row = None;
    for envelope in &events {
        let event =
            tally_core::decode_event::<Order>(&envelope.event_type, envelope.schema, &envelope.data).map_err(|e| {
                StoreError::Corrupt {
                    stream: stream.clone(),
                    version: envelope.version,
                    reason: e.to_string(),
                }
            })?;
        row = views::apply_order_summary(row, &event, envelope.version, envelope.timestamp_ms);
    }
    Ok(row)
}

async fn get_order(
    State(state): State<QueryState>,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let order_id = parse_id(&path_value(id)?, "order id", OrderId::parse)?;
    let min_version = query_u64(&query_map(query)?, "min_version", VERSION_MAX)?;
    let row = read_at_least(
        &state,
        min_version,
        |row: &OrderSummary| row.version,
        || async { Ok(state.reads.order_summary(&order_id).await?) },
    )
    .await?;
    let row = match row {
        Some(row) => Some(row),
        None if min_version.is_some() => order_from_store(&state, &order_id).await?,
        None => None,
    };
    let row = row.ok_or_else(|| ApiError::not_found("order_not_found", format!("order {order_id} not found")))?;
    Ok(Json(row).into_response())
}

async fn customer_orders(
    State(state): State<QueryState>,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let customer = parse_id(&path_value(id)?, "customer id", CustomerId::parse)?;
    let query = query_map(query)?;
    let limit = query_u64(&query, "limit", u64::from(PAGE_MAX))?.unwrap_or(20);
    if !(1..=u64::from(PAGE_MAX)).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be 1-{PAGE_MAX}"),
        ));
    }
    let page = state
        .reads
        .orders_by_customer(&customer, limit as u32, query.get("cursor").map(String::as_str))
        .await?;
    Ok(Json(json!({ "orders": page.items, "next_cursor": page.next_cursor })).into_response())
}

fn parse_day(query: &HashMap<String, String>, name: &str) -> Result<NaiveDate, ApiError> {
    let raw = query
        .get(name)
        .ok_or_else(|| ApiError::bad_request("invalid_query", format!("{name} (YYYY-MM-DD) is required")))?;
    NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .map_err(|_| ApiError::bad_request("invalid_query", format!("{name} must be a date YYYY-MM-DD")))
}

async fn sales_report(
    State(state): State<QueryState>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let query = query_map(query)?;
    let (from, to) = (parse_day(&query, "from")?, parse_day(&query, "to")?);
    if from > to {
        return Err(ApiError::bad_request("invalid_query", "from must not be after to"));
    }
    if (to - from).num_days() >= SALES_MAX_DAYS {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("a report covers at most {SALES_MAX_DAYS} days"),
        ));
    }
    let days = state.reads.sales_by_day(from, to).await?;
    Ok(Json(SalesReport { days }).into_response())
}

/// `GET /reports/sales`'s body, serialised straight from the rows: a
/// `serde_json::Value` cannot hold a revenue beyond u64, the writer prints
/// any i128 exactly.
#[derive(Serialize)]
struct SalesReport {
    days: Vec<SalesDay>,
}

fn parse_stream(raw: Result<Path<String>, PathRejection>) -> Result<StreamId, ApiError> {
    parse_id(&path_value(raw)?, "stream id", StreamId::parse)
}

async fn stream_events(
    State(state): State<QueryState>,
    stream: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let stream = parse_stream(stream)?;
    let query = query_map(query)?;
    let from = query_u64(&query, "from", VERSION_MAX)?.unwrap_or(1).max(1);
    let to = query_u64(&query, "to", VERSION_MAX)?;
    if to.is_some_and(|to| to < from) {
        return Err(ApiError::bad_request("invalid_query", "to must not be below from"));
    }
    // Capped too: a page near the top must not ask the store for versions it cannot hold.
    let page_end = from.saturating_add(EVENTS_PAGE_MAX - 1).min(VERSION_MAX);
    let to = to.map_or(page_end, |to| to.min(page_end));
    let events = state.store.read_range(&stream, from, Some(to)).await?;
    if events.is_empty() && from == 1 {
        return Err(ApiError::not_found(
            "stream_not_found",
            format!("stream {stream} has no events"),
        ));
    }
    let next_from = (events.len() as u64 == EVENTS_PAGE_MAX).then(|| to + 1);
    Ok(Json(json!({ "stream_id": stream, "events": events, "next_from": next_from })).into_response())
}

fn parse_at(query: &HashMap<String, String>) -> Result<Option<At>, ApiError> {
    let Some(raw) = query.get("at") else { return Ok(None) };
    if let Ok(version) = raw.parse::<u64>() {
        if version > VERSION_MAX {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("at must be a version 0-{VERSION_MAX} or an RFC 3339 time"),
            ));
        }
        return Ok(Some(At::Version(version)));
    }
    DateTime::parse_from_rfc3339(raw)
        .map(|t| Some(At::Time(t.timestamp_millis())))
        .map_err(|_| ApiError::bad_request("invalid_query", "at must be a version number or an RFC 3339 time"))
}

/// The aggregate of `stream` at `at` as JSON, with its version and time:
/// folded from the newest verified snapshot at or before that point, so the
/// answer costs one short read and bounded memory however long the stream.
async fn state_at<D: Decider>(
    store: &dyn EventStore,
    stream: &StreamId,
    at: At,
) -> Result<Option<(serde_json::Value, u64, i64)>, ApiError> {
    let Some(found) = aggregate_at::<D>(store, stream, at).await? else {
        return Ok(None);
    };
    let state = serde_json::to_value(&found.aggregate.state).map_err(|e| StoreError::Backend(Box::new(e)))?;
    Ok(Some((state, found.aggregate.version, found.timestamp_ms)))
}

async fn stream_state(
    State(state): State<QueryState>,
    stream: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let stream = parse_stream(stream)?;
    let at = parse_at(&query_map(query)?)?.unwrap_or(At::Version(i64::MAX as u64));
    let store = state.store.as_ref();
    let found = match stream.category() {
        Inventory::CATEGORY => state_at::<Inventory>(store, &stream, at).await?,
        Order::CATEGORY => state_at::<Order>(store, &stream, at).await?,
        other => {
            return Err(ApiError::not_found(
                "unknown_category",
                format!("no aggregate has category {other}"),
            ));
        }
    };
    let Some((aggregate_state, version, timestamp_ms)) = found else {
        return Err(ApiError::not_found(
            "no_state",
            format!("stream {stream} had no events at that point"),
        ));
    };
    Ok(Json(json!({
        "stream_id": stream,
        "version": version,
        "timestamp_ms": timestamp_ms,
        "state": aggregate_state,
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_format() {
        assert!(valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(!valid_traceparent("00-xyz-00f067aa0ba902b7-01"));
        assert!(!valid_traceparent(""));
    }

    #[test]
    fn empty_body_is_an_empty_object() {
        let parsed: Result<EmptyBody, _> = parse_json(b"");
        assert!(parsed.is_ok());
        let wrong: Result<EmptyBody, _> = parse_json(b"{\"x\":1}");
        assert!(wrong.is_err());
    }
}
