//! `tally import <file>`: brings a legacy system's state in as migration
//! events, one per entity: `InventoryImported` per SKU, `OrderImported` per
//! open order (with the `StockReserved` events that make its lines hold
//! stock, as a placed order's do), each event's metadata naming its source
//! (`<file>:<line>`).
//!
//! In three steps, and nothing is written unless the first two pass for the
//! whole file:
//! 1. parse every row into the domain's types (a bad row names its line and
//!    field);
//! 2. plan against the store: an entity whose stream already starts with
//!    the same imported event is skipped (re-running an import writes
//!    nothing new), any other existing stream is a conflict, and every open
//!    order's reservation is decided by the inventory decider on the SKUs'
//!    current (or just imported) stock, so an import can never oversell;
//! 3. append, each entity with expected version 0 (a stream created
//!    meanwhile is re-checked, not overwritten).
//!
//! The store is reached through the `EventStore` port only: the embedded
//! store (`--db`) or a deployed stack's tables (`--aws`), where only the
//! size of one atomic append differs (a DynamoDB transaction takes at most
//! 100 items).
//!
//! Formats (by extension, or `--format`):
//! - CSV with a header. Inventory files have `sku,name,on_hand`; order files
//!   one row per order line: `order_id,customer_id,status,sku,quantity,
//!   unit_price_cents` and optionally `currency` (default USD) and
//!   `placed_at` (RFC 3339). A `kind` column (`inventory` or `order`) allows
//!   both in one file.
//! - JSON Lines: one object per line, `{"kind":"inventory","sku",…}` or
//!   `{"kind":"order","order_id",…,"lines":[{"sku","quantity","unit_price_cents"}]}`.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use serde_json::{Map, Value};
use tally_core::{
    Aggregate, AppendBatch, CommandError, Decider, EventStore, Metadata, RetryPolicy, SnapshotPolicy, StoreError,
    StreamAppend, StreamId, decode_event, encode_event, load_aggregate, retry_on_conflict,
};
use tally_domain::views::InventoryLevel;
use tally_domain::{
    Cents, Currency, CustomerId, DomainError, Inventory, InventoryAction, InventoryCommand, InventoryEvent,
    InventoryState, OpenStatus, Order, OrderEvent, OrderId, OrderImport, OrderLine, ProductName, Quantity, Sku,
};

use tally_store_dynamodb::schema::TRANSACT_MAX_ITEMS;

use crate::output::{compact, emit, table};
use crate::progress::thousands;
use crate::store::{Backend, StoreArgs};

/// Bring a legacy system's state in as migration events
///
/// SKUs become `InventoryImported` (sku, name, on_hand: the physical count,
/// units held by open orders included); open orders (status placed or
/// confirmed) become `OrderImported` and reserve their lines' stock. The
/// whole file is validated against the store first: if any row is bad,
/// nothing is written and the error names the line and field. Importing the
/// same file again writes nothing new.
///
/// CSV: a header row; inventory columns sku,name,on_hand; order columns
/// order_id,customer_id,status,sku,quantity,unit_price_cents[,currency]
/// [,placed_at] with one row per order line; a kind column (inventory|order)
/// mixes both. JSON Lines: one object per line with "kind" and the same
/// fields, an order's lines in "lines": [{"sku","quantity","unit_price_cents"}].
///
/// With --aws the events go into a deployed stack's events table (the
/// projector Lambdas then project them as any others); --dry-run plans
/// against the real tables and writes nothing.
///
/// Examples:
///   tally import legacy-inventory.csv --dry-run
///   tally import legacy-inventory.csv && tally import open-orders.csv
///   tally import export.jsonl --db data/tally.db
///   tally import legacy-inventory.csv --aws --stage prod --dry-run
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct ImportArgs {
    /// The file to import (.csv, or .jsonl / .ndjson / .json for JSON Lines).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The file's format, when its extension does not say.
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Validate and print what would be written; write nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    store: StoreArgs,
}

/// An import file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

/// How much one atomic append may carry on a store. (An order, appended
/// with its reservations at once, always fits: the domain's
/// `ORDER_LINES_MAX` is chosen for DynamoDB's 100 items.)
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// New SKU streams per append.
    skus_per_append: usize,
}

impl Limits {
    fn of(backend: &Backend) -> Self {
        match backend {
            Backend::Sqlite(_) => Self { skus_per_append: 100 },
            // A DynamoDB transaction takes at most TRANSACT_MAX_ITEMS items;
            // a new SKU is two (its event, its inline inventory_levels row).
            Backend::Aws(_) => Self {
                skus_per_append: TRANSACT_MAX_ITEMS / 2,
            },
        }
    }
}

// ---- problems ------------------------------------------------------------------

/// Why a row cannot be imported.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Problem {
    line: u64,
    field: Option<String>,
    message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "line {}, field {field}: {}", self.line, self.message),
            None => write!(f, "line {}: {}", self.line, self.message),
        }
    }
}

fn problem(line: u64, field: Option<&str>, message: impl ToString) -> Problem {
    Problem {
        line,
        field: field.map(str::to_owned),
        message: message.to_string(),
    }
}

type Parsed<T> = Result<T, Problem>;

// ---- parsing -------------------------------------------------------------------

/// One row's fields (a CSV row's cells as strings, or a JSON object's).
struct Record<'a> {
    line: u64,
    fields: &'a Map<String, Value>,
    /// Prefix of the field names in messages (`lines[2].` inside an order).
    prefix: String,
}

impl Record<'_> {
    fn problem(&self, field: &str, message: impl ToString) -> Problem {
        problem(self.line, Some(&format!("{}{field}", self.prefix)), message)
    }

    /// A text field; absent, null and empty are all "not given".
    fn text(&self, field: &str) -> Parsed<Option<&str>> {
        match self.fields.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.problem(field, "must be text")),
        }
    }

    fn required(&self, field: &str) -> Parsed<&str> {
        self.text(field)?.ok_or_else(|| self.problem(field, "is required"))
    }

    /// A whole number, written as a JSON number or as digits.
    fn number(&self, field: &str) -> Parsed<u64> {
        let invalid = || self.problem(field, "must be a whole number ≥ 0");
        match self.fields.get(field) {
            None | Some(Value::Null) => Err(self.problem(field, "is required")),
            Some(Value::String(s)) if s.is_empty() => Err(self.problem(field, "is required")),
            Some(Value::String(s)) => s.parse().map_err(|_| invalid()),
            Some(Value::Number(n)) => n.as_u64().ok_or_else(invalid),
            Some(_) => Err(invalid()),
        }
    }

    fn parse<T, E: fmt::Display>(&self, field: &str, parse: impl FnOnce(String) -> Result<T, E>) -> Parsed<T> {
        let raw = self.required(field)?.to_owned();
        parse(raw).map_err(|e| self.problem(field, e))
    }

    fn only(&self, allowed: &[&str]) -> Parsed<()> {
        match self.fields.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(unknown) => Err(self.problem(unknown, format!("unknown field (expected {})", allowed.join(", ")))),
            None => Ok(()),
        }
    }
}

const INVENTORY_FIELDS: [&str; 4] = ["kind", "sku", "name", "on_hand"];
const ORDER_FIELDS: [&str; 7] = [
    "kind",
    "order_id",
    "customer_id",
    "status",
    "currency",
    "placed_at",
    "lines",
];
const LINE_FIELDS: [&str; 3] = ["sku", "quantity", "unit_price_cents"];
const CSV_ORDER_FIELDS: [&str; 9] = [
    "kind",
    "order_id",
    "customer_id",
    "status",
    "currency",
    "placed_at",
    "sku",
    "quantity",
    "unit_price_cents",
];

/// A SKU to import.
#[derive(Debug, Clone)]
struct InventoryRow {
    line: u64,
    sku: Sku,
    name: ProductName,
    on_hand: u64,
}

/// An order's own fields (CSV repeats them on each of its rows).
#[derive(Debug, Clone, PartialEq)]
struct OrderHead {
    order_id: OrderId,
    customer_id: CustomerId,
    status: OpenStatus,
    currency: Currency,
    placed_at_ms: Option<i64>,
}

/// An open order to import, with the line (of the file) of each order line.
#[derive(Debug, Clone)]
struct OrderRow {
    line: u64,
    head: OrderHead,
    lines: Vec<(u64, String, OrderLine)>,
}

/// What a file holds, in file order per kind.
#[derive(Debug, Default)]
struct ParsedFile {
    inventory: Vec<InventoryRow>,
    orders: Vec<OrderRow>,
}

fn parse_inventory(record: &Record<'_>) -> Parsed<InventoryRow> {
    let on_hand = record.number("on_hand")?;
    if on_hand > tally_domain::inventory::ON_HAND_MAX {
        return Err(record.problem(
            "on_hand",
            format!("must be at most {}", tally_domain::inventory::ON_HAND_MAX),
        ));
    }
    Ok(InventoryRow {
        line: record.line,
        sku: record.parse("sku", Sku::parse)?,
        name: record.parse("name", ProductName::parse)?,
        on_hand,
    })
}

fn parse_head(record: &Record<'_>) -> Parsed<OrderHead> {
    let status = match record.required("status")? {
        "placed" => OpenStatus::Placed,
        "confirmed" => OpenStatus::Confirmed,
        other => {
            return Err(record.problem(
                "status",
                format!("{other:?} is not an open order's status (placed or confirmed)"),
            ));
        }
    };
    let currency = match record.text("currency")? {
        Some(raw) => Currency::parse(raw).map_err(|e| record.problem("currency", e))?,
        None => Currency::usd(),
    };
    let placed_at_ms = record
        .text("placed_at")?
        .map(|raw| {
            chrono::DateTime::parse_from_rfc3339(raw)
                .map(|t| t.timestamp_millis())
                .map_err(|_| record.problem("placed_at", format!("{raw:?} is not an RFC 3339 time")))
        })
        .transpose()?;
    Ok(OrderHead {
        order_id: record.parse("order_id", OrderId::parse)?,
        customer_id: record.parse("customer_id", CustomerId::parse)?,
        status,
        currency,
        placed_at_ms,
    })
}

fn parse_line(record: &Record<'_>) -> Parsed<OrderLine> {
    let quantity = record.number("quantity")?;
    let price = record.number("unit_price_cents")?;
    Ok(OrderLine {
        sku: record.parse("sku", Sku::parse)?,
        quantity: Quantity::new(quantity).map_err(|e| record.problem("quantity", e))?,
        unit_price_cents: Cents::new(price).map_err(|e| record.problem("unit_price_cents", e))?,
    })
}

/// The kind of a row: its `kind` field, or what its fields say.
fn kind_of(record: &Record<'_>) -> Parsed<&'static str> {
    match record.text("kind")? {
        Some("inventory") => Ok("inventory"),
        Some("order") => Ok("order"),
        Some(other) => Err(record.problem("kind", format!("{other:?} is neither inventory nor order"))),
        None if record.fields.contains_key("order_id") => Ok("order"),
        None if record.fields.contains_key("on_hand") => Ok("inventory"),
        None => Err(problem(
            record.line,
            None,
            "cannot tell an inventory row from an order row: add a kind",
        )),
    }
}

/// Adds `line` to `order`, or starts it; order lines of one order must agree
/// on the order's own fields.
fn add_order_line(
    orders: &mut Vec<OrderRow>,
    index: &mut HashMap<OrderId, usize>,
    record: &Record<'_>,
    head: OrderHead,
    line: OrderLine,
) -> Parsed<()> {
    let field = format!("{}sku", record.prefix);
    match index.get(&head.order_id) {
        Some(&at) => {
            let order = &mut orders[at];
            if order.head != head {
                let differing = ["customer_id", "status", "currency", "placed_at"]
                    .into_iter()
                    .find(|f| match *f {
                        "customer_id" => order.head.customer_id != head.customer_id,
                        "status" => order.head.status != head.status,
                        "currency" => order.head.currency != head.currency,
                        _ => order.head.placed_at_ms != head.placed_at_ms,
                    })
                    .unwrap_or("order_id");
                return Err(record.problem(differing, format!("differs from line {} of the same order", order.line)));
            }
            if let Some((first, _, _)) = order.lines.iter().find(|(_, _, l)| l.sku == line.sku) {
                return Err(record.problem("sku", format!("{} is already on line {first} of this order", line.sku)));
            }
            order.lines.push((record.line, field, line));
        }
        None => {
            index.insert(head.order_id.clone(), orders.len());
            orders.push(OrderRow {
                line: record.line,
                head,
                lines: vec![(record.line, field, line)],
            });
        }
    }
    Ok(())
}

fn check_unique_skus(parsed: &ParsedFile) -> Vec<Problem> {
    let mut seen: HashMap<&Sku, u64> = HashMap::new();
    parsed
        .inventory
        .iter()
        .filter_map(|row| {
            seen.insert(&row.sku, row.line)
                .map(|first| problem(row.line, Some("sku"), format!("{} is already on line {first}", row.sku)))
        })
        .collect()
}

/// The file's text; a binary file is refused with the line it breaks on.
/// A byte-order mark (spreadsheets write one) is not part of the header.
fn text_of(mut bytes: Vec<u8>) -> Result<String, Problem> {
    if bytes.starts_with(b"\xEF\xBB\xBF") {
        bytes.drain(..3);
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|b| **b == b'\n').count() as u64 + 1;
        problem(line, None, "not UTF-8 text (is this a binary file?)")
    })
}

fn parse_csv(text: &str) -> Result<ParsedFile, Vec<Problem>> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers: Vec<String> = match reader.headers() {
        Ok(headers) => headers.iter().map(str::to_owned).collect(),
        Err(e) => return Err(vec![problem(1, None, format!("not CSV: {e}"))]),
    };
    if let Some(unknown) = headers
        .iter()
        .find(|h| !INVENTORY_FIELDS.contains(&h.as_str()) && !CSV_ORDER_FIELDS.contains(&h.as_str()))
    {
        return Err(vec![problem(
            1,
            Some(unknown),
            format!(
                "unknown column (inventory files have {}; order files {})",
                INVENTORY_FIELDS[1..].join(","),
                CSV_ORDER_FIELDS[1..].join(",")
            ),
        )]);
    }
    let mut parsed = ParsedFile::default();
    let mut problems = Vec::new();
    let mut index = HashMap::new();
    for result in reader.records() {
        let record = match result {
            Ok(record) => record,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                problems.push(problem(line, None, format!("not a valid CSV row: {e}")));
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        let fields: Map<String, Value> = headers
            .iter()
            .zip(record.iter())
            .map(|(h, v)| (h.clone(), Value::String(v.to_owned())))
            .collect();
        let record = Record {
            line,
            fields: &fields,
            prefix: String::new(),
        };
        let outcome = kind_of(&record).and_then(|kind| match kind {
            "inventory" => parse_inventory(&record).map(|row| parsed.inventory.push(row)),
            _ => {
                let head = parse_head(&record)?;
                let order_line = parse_line(&record)?;
                add_order_line(&mut parsed.orders, &mut index, &record, head, order_line)
            }
        });
        if let Err(p) = outcome {
            problems.push(p);
        }
    }
    problems.extend(check_unique_skus(&parsed));
    if problems.is_empty() { Ok(parsed) } else { Err(problems) }
}

fn parse_jsonl(text: &str) -> Result<ParsedFile, Vec<Problem>> {
    let mut parsed = ParsedFile::default();
    let mut problems = Vec::new();
    let mut seen_orders: HashMap<OrderId, u64> = HashMap::new();
    for (line, raw) in (1u64..).zip(text.lines()) {
        if raw.trim().is_empty() {
            continue;
        }
        let fields = match serde_json::from_str::<Value>(raw) {
            Ok(Value::Object(fields)) => fields,
            Ok(_) => {
                problems.push(problem(line, None, "must be a JSON object"));
                continue;
            }
            Err(e) => {
                problems.push(problem(line, None, format!("not JSON: {e}")));
                continue;
            }
        };
        let record = Record {
            line,
            fields: &fields,
            prefix: String::new(),
        };
        let outcome = kind_of(&record).and_then(|kind| match kind {
            "inventory" => {
                record.only(&INVENTORY_FIELDS)?;
                parse_inventory(&record).map(|row| parsed.inventory.push(row))
            }
            _ => {
                record.only(&ORDER_FIELDS)?;
                let head = parse_head(&record)?;
                if let Some(first) = seen_orders.insert(head.order_id.clone(), line) {
                    return Err(record.problem("order_id", format!("{} is already on line {first}", head.order_id)));
                }
                let Some(Value::Array(items)) = fields.get("lines") else {
                    return Err(record.problem("lines", "must be a list of {sku, quantity, unit_price_cents}"));
                };
                let mut order = OrderRow {
                    line,
                    head,
                    lines: Vec::new(),
                };
                for (i, item) in items.iter().enumerate() {
                    let Value::Object(item) = item else {
                        return Err(record.problem(&format!("lines[{i}]"), "must be an object"));
                    };
                    let line_record = Record {
                        line,
                        fields: item,
                        prefix: format!("lines[{i}]."),
                    };
                    line_record.only(&LINE_FIELDS)?;
                    let order_line = parse_line(&line_record)?;
                    if order.lines.iter().any(|(_, _, l)| l.sku == order_line.sku) {
                        return Err(line_record.problem("sku", format!("{} is on two lines", order_line.sku)));
                    }
                    order.lines.push((line, format!("lines[{i}].sku"), order_line));
                }
                parsed.orders.push(order);
                Ok(())
            }
        });
        if let Err(p) = outcome {
            problems.push(p);
        }
    }
    problems.extend(check_unique_skus(&parsed));
    if problems.is_empty() { Ok(parsed) } else { Err(problems) }
}

fn format_of(path: &Path, given: Option<Format>) -> anyhow::Result<Format> {
    if let Some(format) = given {
        return Ok(format);
    }
    let extension = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("csv") => Ok(Format::Csv),
        Some("jsonl" | "ndjson" | "json") => Ok(Format::Jsonl),
        _ => bail!(
            "cannot tell the format of {} from its extension: pass --format csv or --format jsonl",
            path.display()
        ),
    }
}

// ---- planning ------------------------------------------------------------------

/// Whether an entity still has to be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// Its stream does not exist: it will be imported.
    New,
    /// Its stream starts with this very import: nothing to do.
    AlreadyImported,
}

struct PlannedSku {
    row: InventoryRow,
    stream: StreamId,
    status: Status,
}

struct PlannedOrder {
    row: OrderRow,
    stream: StreamId,
    status: Status,
    import: OrderImport,
}

struct Plan {
    skus: Vec<PlannedSku>,
    orders: Vec<PlannedOrder>,
}

fn stream_of(category: &str, id: &str) -> anyhow::Result<StreamId> {
    // Entity ids are at most 64 characters: a category prefix always fits.
    StreamId::of(category, id).map_err(|e| anyhow!("stream id {category}-{id}: {e}"))
}

/// The imported event a stream starts with, if it starts with one.
async fn first_event(store: &dyn EventStore, stream: &StreamId) -> anyhow::Result<Option<tally_core::EventEnvelope>> {
    Ok(store.read_range(stream, 1, Some(1)).await?.into_iter().next())
}

fn same_sku(first: &tally_core::EventEnvelope, row: &InventoryRow) -> bool {
    matches!(
        decode_event::<Inventory>(&first.event_type, first.schema, &first.data),
        Ok(InventoryEvent::InventoryImported { sku, name, on_hand })
            if sku == row.sku && name == row.name && on_hand == row.on_hand
    )
}

/// Whether a stored `OrderImported` is this row's. A row without
/// `placed_at` was stamped with its first import's time: any time matches.
fn same_order(first: &tally_core::EventEnvelope, row: &OrderRow) -> bool {
    let lines: Vec<OrderLine> = row.lines.iter().map(|(_, _, l)| l.clone()).collect();
    matches!(
        decode_event::<Order>(&first.event_type, first.schema, &first.data),
        Ok(OrderEvent::OrderImported { order_id, customer_id, lines: stored, currency, status, placed_at_ms })
            if order_id == row.head.order_id
                && customer_id == row.head.customer_id
                && stored == lines
                && currency == row.head.currency
                && status == row.head.status
                && row.head.placed_at_ms.is_none_or(|at| at == placed_at_ms)
    )
}

fn exists_problem(line: u64, field: &str, stream: &StreamId, first: &tally_core::EventEnvelope) -> Problem {
    problem(
        line,
        Some(field),
        format!(
            "{stream} already exists and does not start with this import (its version 1 is {})",
            first.event_type
        ),
    )
}

/// Checks the parsed file against the store; every problem, or the plan.
async fn plan(store: &dyn EventStore, parsed: ParsedFile, now_ms: i64) -> anyhow::Result<Result<Plan, Vec<Problem>>> {
    let mut problems = Vec::new();
    let mut stock: HashMap<Sku, InventoryState> = HashMap::new();
    let mut skus = Vec::new();
    for row in parsed.inventory {
        let stream = stream_of(Inventory::CATEGORY, row.sku.as_str())?;
        let status = match first_event(store, &stream).await? {
            None => {
                match Inventory::decide_import(&InventoryState::default(), &row.sku, &row.name, row.on_hand) {
                    Ok(events) => {
                        let state = events.iter().fold(InventoryState::default(), Inventory::evolve);
                        stock.insert(row.sku.clone(), state);
                    }
                    Err(e) => problems.push(problem(row.line, Some("on_hand"), e)),
                }
                Status::New
            }
            Some(first) if same_sku(&first, &row) => Status::AlreadyImported,
            Some(first) => {
                problems.push(exists_problem(row.line, "sku", &stream, &first));
                Status::AlreadyImported
            }
        };
        skus.push(PlannedSku { row, stream, status });
    }
    let mut orders = Vec::new();
    for row in parsed.orders {
        let stream = stream_of(Order::CATEGORY, row.head.order_id.as_str())?;
        let import = OrderImport {
            customer_id: row.head.customer_id.clone(),
            lines: row.lines.iter().map(|(_, _, l)| l.clone()).collect(),
            currency: row.head.currency.clone(),
            status: row.head.status,
            placed_at_ms: row.head.placed_at_ms.unwrap_or(now_ms),
        };
        let status = match first_event(store, &stream).await? {
            Some(first) if same_order(&first, &row) => Status::AlreadyImported,
            Some(first) => {
                problems.push(exists_problem(row.line, "order_id", &stream, &first));
                Status::AlreadyImported
            }
            None => {
                if let Err(e) = Order::decide_import(&Default::default(), &row.head.order_id, &import) {
                    problems.push(problem(row.line, Some("lines"), e));
                }
                // The reservations, decided on the stock as it will be.
                for (line, field, order_line) in &row.lines {
                    let state = match stock.get(&order_line.sku) {
                        Some(state) => state.clone(),
                        None => {
                            let sku_stream = stream_of(Inventory::CATEGORY, order_line.sku.as_str())?;
                            load_aggregate::<Inventory>(store, &sku_stream).await?.state
                        }
                    };
                    let command = InventoryCommand::new(
                        order_line.sku.clone(),
                        InventoryAction::Reserve {
                            order_id: row.head.order_id.clone(),
                            quantity: order_line.quantity,
                        },
                    );
                    match Inventory::decide(&state, &command) {
                        Ok(events) => {
                            stock.insert(order_line.sku.clone(), events.iter().fold(state, Inventory::evolve));
                        }
                        Err(DomainError::SkuNotFound { sku }) => problems.push(problem(
                            *line,
                            Some(field),
                            format!("unknown SKU {sku} (neither in the store nor in this file)"),
                        )),
                        Err(e) => {
                            let quantity_field = field.replace("sku", "quantity");
                            problems.push(problem(*line, Some(&quantity_field), e));
                        }
                    }
                }
                Status::New
            }
        };
        orders.push(PlannedOrder {
            row,
            stream,
            status,
            import,
        });
    }
    problems.sort_by_key(|p| p.line);
    Ok(if problems.is_empty() {
        Ok(Plan { skus, orders })
    } else {
        Err(problems)
    })
}

// ---- writing -------------------------------------------------------------------

/// An inventory append with its inline `inventory_levels` row, as the
/// command path writes it (snapshot on every event, as `tally serve` does).
fn inventory_append(
    aggregate: &Aggregate<Inventory>,
    events: &[InventoryEvent],
    metadata: &Metadata,
    now_ms: i64,
) -> Result<StreamAppend, StoreError> {
    let prepared = aggregate.prepare(events, metadata, now_ms, SnapshotPolicy::every(1))?;
    let mut append = prepared.append;
    let version = aggregate.version + events.len() as u64;
    append.view =
        InventoryLevel::inline_view(&prepared.state, version).map_err(|e| StoreError::InvalidAppend(e.to_string()))?;
    Ok(append)
}

fn new_aggregate<D: Decider>(stream: &StreamId) -> Aggregate<D> {
    Aggregate {
        stream_id: stream.clone(),
        state: D::State::default(),
        version: 0,
        head_hash: None,
        snapshot_version: 0,
    }
}

struct Source<'a> {
    file: &'a str,
    run: String,
}

impl Source<'_> {
    fn metadata(&self, line: u64) -> Metadata {
        Metadata {
            correlation_id: Some(self.run.clone()),
            actor: Some("tally import".to_owned()),
            source: Some(format!("{}:{line}", self.file)),
            ..Metadata::default()
        }
    }
}

/// Appends the new SKUs, a batch of streams per transaction. A stream
/// created meanwhile sinks its batch; that batch is then written one stream
/// at a time, each re-checked.
async fn write_skus(
    store: &dyn EventStore,
    limits: Limits,
    skus: &[&PlannedSku],
    source: &Source<'_>,
    now_ms: i64,
) -> anyhow::Result<u64> {
    let mut written = 0;
    for batch in skus.chunks(limits.skus_per_append) {
        let mut appends = Vec::with_capacity(batch.len());
        for sku in batch {
            let events =
                Inventory::decide_import(&InventoryState::default(), &sku.row.sku, &sku.row.name, sku.row.on_hand)?;
            let aggregate = new_aggregate::<Inventory>(&sku.stream);
            appends.push(inventory_append(
                &aggregate,
                &events,
                &source.metadata(sku.row.line),
                now_ms,
            )?);
        }
        match store
            .append(AppendBatch {
                streams: appends.clone(),
                idempotency: None,
            })
            .await
        {
            Ok(_) => written += appends.len() as u64,
            Err(StoreError::WrongExpectedVersion { .. }) => {
                for (sku, append) in batch.iter().zip(appends) {
                    match store
                        .append(AppendBatch {
                            streams: vec![append],
                            idempotency: None,
                        })
                        .await
                    {
                        Ok(_) => written += 1,
                        Err(StoreError::WrongExpectedVersion { .. }) => match first_event(store, &sku.stream).await? {
                            Some(first) if same_sku(&first, &sku.row) => {}
                            _ => bail!(
                                "line {}: {} was created by someone else during the import (what came before it \
                                 is imported; fix and run again: it skips what is already imported)",
                                sku.row.line,
                                sku.stream
                            ),
                        },
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(written)
}

/// What importing one order came to.
enum OrderOutcome {
    Written,
    AlreadyImported,
}

/// Appends one order and its lines' reservations atomically, deciding on the
/// SKUs' current state and retrying on conflict like any command.
async fn write_order(
    store: &dyn EventStore,
    order: &PlannedOrder,
    source: &Source<'_>,
) -> Result<OrderOutcome, CommandError<DomainError>> {
    let metadata = source.metadata(order.row.line);
    retry_on_conflict(&RetryPolicy::default(), || async {
        let aggregate = load_aggregate::<Order>(store, &order.stream).await?;
        if aggregate.version > 0 {
            let first = store.read_range(&order.stream, 1, Some(1)).await?;
            return match first.first() {
                Some(first) if same_order(first, &order.row) => Ok(OrderOutcome::AlreadyImported),
                _ => Err(CommandError::Rejected(DomainError::OrderAlreadyExists {
                    order_id: order.row.head.order_id.clone(),
                })),
            };
        }
        let now = chrono::Utc::now().timestamp_millis();
        let events = Order::decide_import(&aggregate.state, &order.row.head.order_id, &order.import)
            .map_err(CommandError::Rejected)?;
        let mut appends = vec![
            aggregate
                .prepare(&events, &metadata, now, SnapshotPolicy::every(1))?
                .append,
        ];
        for (_, _, line) in &order.row.lines {
            let sku_stream = StreamId::of(Inventory::CATEGORY, line.sku.as_str())
                .map_err(|e| CommandError::Store(StoreError::InvalidAppend(e.to_string())))?;
            let sku = load_aggregate::<Inventory>(store, &sku_stream).await?;
            let command = InventoryCommand::new(
                line.sku.clone(),
                InventoryAction::Reserve {
                    order_id: order.row.head.order_id.clone(),
                    quantity: line.quantity,
                },
            );
            let reserved = Inventory::decide(&sku.state, &command).map_err(CommandError::Rejected)?;
            appends.push(inventory_append(&sku, &reserved, &metadata, now)?);
        }
        store
            .append(AppendBatch {
                streams: appends,
                idempotency: None,
            })
            .await?;
        Ok(OrderOutcome::Written)
    })
    .await
}

// ---- the command ---------------------------------------------------------------

fn data_of<D: Decider>(event: &D::Event) -> (String, String) {
    encode_event::<D>(event).map_or_else(
        |e| ("?".to_owned(), e.to_string()),
        |e| (e.event_type, compact(&e.data)),
    )
}

fn dry_run_table(plan: &Plan) -> anyhow::Result<String> {
    let mut rows = Vec::new();
    let status = |s: Status| match s {
        Status::New => "write",
        Status::AlreadyImported => "already imported",
    };
    for sku in &plan.skus {
        let events =
            Inventory::decide_import(&InventoryState::default(), &sku.row.sku, &sku.row.name, sku.row.on_hand)?;
        for event in &events {
            let (event_type, data) = data_of::<Inventory>(event);
            rows.push(vec![
                sku.row.line.to_string(),
                status(sku.status).to_owned(),
                sku.stream.to_string(),
                event_type,
                data,
            ]);
        }
    }
    for order in &plan.orders {
        for event in Order::decide_import(&Default::default(), &order.row.head.order_id, &order.import)? {
            let (event_type, data) = data_of::<Order>(&event);
            rows.push(vec![
                order.row.line.to_string(),
                status(order.status).to_owned(),
                order.stream.to_string(),
                event_type,
                data,
            ]);
        }
        for (line, _, order_line) in &order.row.lines {
            let reserved = InventoryEvent::StockReserved {
                order_id: order.row.head.order_id.clone(),
                quantity: order_line.quantity,
            };
            let (event_type, data) = data_of::<Inventory>(&reserved);
            rows.push(vec![
                line.to_string(),
                status(order.status).to_owned(),
                format!("{}-{}", Inventory::CATEGORY, order_line.sku),
                event_type,
                data,
            ]);
        }
    }
    Ok(table(&["LINE", "ACTION", "STREAM", "EVENT", "DATA"], &rows))
}

pub async fn run(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let format = format_of(&args.file, args.format)?;
    let file = args.file.display().to_string();
    let bytes = std::fs::read(&args.file).with_context(|| format!("cannot read {file}"))?;
    let parsed = text_of(bytes).map_err(|p| vec![p]).and_then(|text| match format {
        Format::Csv => parse_csv(&text),
        Format::Jsonl => parse_jsonl(&text),
    });
    let parsed = match parsed {
        Ok(parsed) => parsed,
        Err(problems) => return Err(refused(&file, &problems)),
    };
    if parsed.inventory.is_empty() && parsed.orders.is_empty() {
        bail!("{file} holds no rows to import");
    }
    // A dry run against an embedded store that does not exist yet plans
    // against an empty one, in a scratch file: it must not create the real
    // one. On AWS a dry run plans against the stack's tables (it only reads).
    let scratch = (args.dry_run && !args.store.aws && !args.store.db.exists())
        .then(|| std::env::temp_dir().join(format!("tally-dry-run-{}.db", std::process::id())));
    let backend = match &scratch {
        Some(path) => Backend::Sqlite(
            StoreArgs {
                db: path.clone(),
                ..args.store.clone()
            }
            .open()?,
        ),
        None => args.store.open_or_create().await?,
    };
    let outcome = import(&args, &file, &backend, parsed).await;
    if let Some(path) = scratch {
        drop(backend);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
    outcome
}

async fn import(args: &ImportArgs, file: &str, backend: &Backend, parsed: ParsedFile) -> anyhow::Result<ExitCode> {
    let store = backend.events();
    let limits = Limits::of(backend);
    let now_ms = chrono::Utc::now().timestamp_millis();
    let plan = match plan(store, parsed, now_ms).await? {
        Ok(plan) => plan,
        Err(problems) => return Err(refused(file, &problems)),
    };
    let new_skus: Vec<&PlannedSku> = plan.skus.iter().filter(|s| s.status == Status::New).collect();
    let new_orders: Vec<&PlannedOrder> = plan.orders.iter().filter(|o| o.status == Status::New).collect();
    let skipped = plan.skus.len() + plan.orders.len() - new_skus.len() - new_orders.len();
    if args.dry_run {
        let mut text = dry_run_table(&plan)?;
        text.push_str(&format!(
            "dry run: would import {} SKUs and {} orders from {file}; {} already imported; nothing written\n",
            thousands(new_skus.len() as u64),
            thousands(new_orders.len() as u64),
            thousands(skipped as u64)
        ));
        emit(&text)?;
        return Ok(ExitCode::SUCCESS);
    }
    let source = Source {
        file: args.file.file_name().and_then(|n| n.to_str()).unwrap_or(file),
        run: format!("import-{now_ms}"),
    };
    let skus_written = write_skus(store, limits, &new_skus, &source, now_ms).await?;
    let mut orders_written = 0u64;
    let mut raced = 0u64;
    for order in &new_orders {
        match write_order(store, order, &source).await {
            Ok(OrderOutcome::Written) => orders_written += 1,
            Ok(OrderOutcome::AlreadyImported) => raced += 1,
            Err(e) => bail!(
                "line {}: order {} could not be imported: {e} ({} orders before it were; fix and run again: \
                 it skips what is already imported)",
                order.row.line,
                order.row.head.order_id,
                orders_written
            ),
        }
    }
    emit(&format!(
        "imported {} SKUs and {} orders from {file}; {} already imported\n",
        thousands(skus_written),
        thousands(orders_written),
        thousands(skipped as u64 + raced)
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// The error for a refused file: every problem on stderr, one line each,
/// then one line that says nothing was written.
fn refused(file: &str, problems: &[Problem]) -> anyhow::Error {
    if let [only] = problems {
        return anyhow!("{file} {only}; nothing was written");
    }
    for p in problems {
        eprintln!("{file} {p}");
    }
    anyhow!(
        "{file} has {} problems (the first: {}); nothing was written",
        problems.len(),
        problems[0]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems_of(result: Result<ParsedFile, Vec<Problem>>) -> Vec<String> {
        match result {
            Ok(_) => vec![],
            Err(problems) => problems.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn csv_order_rows_group_into_orders_and_a_bom_is_not_a_column() {
        let text = text_of(
            b"\xEF\xBB\xBForder_id,customer_id,status,sku,quantity,unit_price_cents\n\
              o-1,c-1,placed,SKU-1,2,100\no-2,c-1,confirmed,SKU-1,1,100\no-1,c-1,placed,SKU-2,1,50\n"
                .to_vec(),
        )
        .expect("text");
        let parsed = parse_csv(&text).expect("parses");
        assert_eq!(parsed.orders.len(), 2);
        let lines: Vec<u64> = parsed.orders[0].lines.iter().map(|(line, _, _)| *line).collect();
        assert_eq!(lines, [2, 4]);
    }

    #[test]
    fn csv_rows_of_one_order_must_agree() {
        let text = "order_id,customer_id,status,sku,quantity,unit_price_cents\n\
                    o-1,c-1,placed,SKU-1,2,100\no-1,c-2,placed,SKU-2,1,50\no-1,c-1,placed,SKU-1,1,50\n";
        assert_eq!(
            problems_of(parse_csv(text)),
            [
                "line 3, field customer_id: differs from line 2 of the same order",
                "line 4, field sku: SKU-1 is already on line 2 of this order",
            ]
        );
    }

    #[test]
    fn every_bad_field_is_named() {
        let text = "sku,name,on_hand,colour\nSKU-1,Blue,1,red\n";
        assert_eq!(problems_of(parse_csv(text)).len(), 1);
        let text = "sku,name,on_hand\nSKU-1,,1\nSKU-2,Red,-4\nSKU-1,Blue,2\n";
        assert_eq!(
            problems_of(parse_csv(text)),
            [
                "line 2, field name: is required",
                "line 3, field on_hand: must be a whole number ≥ 0",
            ]
        );
        let jsonl = concat!(
            r#"{"kind":"inventory","sku":"SKU-1","name":"Blue","on_hand":1,"colour":"red"}"#,
            "\n\n",
            r#"{"kind":"order","order_id":"o-1","customer_id":"c-1","status":"shipped","lines":[]}"#,
            "\nnot json\n"
        );
        assert_eq!(
            problems_of(parse_jsonl(jsonl)),
            [
                "line 1, field colour: unknown field (expected kind, sku, name, on_hand)",
                "line 3, field status: \"shipped\" is not an open order's status (placed or confirmed)",
                "line 4: not JSON: expected ident at line 1 column 2",
            ]
        );
    }

    #[test]
    fn a_binary_file_is_named_by_the_line_it_breaks_on() {
        let problem = text_of(b"sku,name\nSKU-1,\xff\xfe\n".to_vec()).expect_err("binary");
        assert_eq!(problem.to_string(), "line 2: not UTF-8 text (is this a binary file?)");
    }
}
