//! `tally verify chain|projections`: the out-of-band checks that let an
//! operator trust the store. `chain` walks every stream's hash chain and
//! names the first tampered version of each broken stream; `projections`
//! recomputes a read model in memory from the events and diffs it against
//! the stored live generation, row by row.
//!
//! Both work on the embedded store (`--db`) or on a deployed stack's
//! DynamoDB tables (`--aws`), where the events table is read as a parallel
//! Scan and the live table of the model (blue or green) is the one diffed.
//!
//! Verifying only reads: it never repairs (a rebuild does). Exit status 1
//! means it found something; 2 that it could not look.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::Value;
use tally_core::chain::{ChainBreak, ChainReport, ChainWalker, ScannedEvent, StreamScan, verify_all_chains};
use tally_core::projection::{History, Progress, RowDiff, verify_projection};
use tally_core::{Decider, StreamId};
use tally_domain::Order;
use tally_domain::recompute::MemoryModel;
use tally_store_dynamodb::history::DEFAULT_SEGMENTS;
use tally_store_dynamodb::{DynamoHistory, LiveModel, SlotTables};
use tally_store_sqlite::live_sink;

use crate::found_if;
use crate::output::{compact, emit, table};
use crate::progress::{Reporter, rate, thousands};
use crate::rebuild::known_projection;
use crate::store::{Aws, Backend, StoreArgs};

/// Verify the store: hash chains, or a read model against a replay
///
/// Exit status: 0 all verified, 1 a problem was found, 2 an error.
///
/// Examples:
///   tally verify chain
///   tally verify chain --stream order-o-1
///   tally verify projections order_summary
///   tally verify chain --aws --stage prod
///   tally verify projections order_summary --aws --stage prod
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct VerifyArgs {
    #[command(subcommand)]
    what: Check,
}

#[derive(clap::Subcommand)]
enum Check {
    Chain(ChainArgs),
    Projections(ProjectionsArgs),
}

/// Walk the hash chains; name each broken stream's first bad version
///
/// For each broken stream, its first tampered (or missing) version is
/// printed. Every event's hash covers the one before it, so a change to any stored
/// field breaks its stream's chain at exactly that event.
///
/// With --aws the events table is read as a parallel Scan (--segments), or
/// with one Query for --stream.
///
/// Examples:
///   tally verify chain
///   tally verify chain --stream inventory-SKU-42 --db data/tally.db
///   tally verify chain --aws --stage prod
///   tally verify chain --aws --stage prod --stream order-o-1
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
struct ChainArgs {
    /// Check this stream only (e.g. order-o-1).
    #[arg(long, value_name = "STREAM_ID")]
    stream: Option<String>,
    /// With --aws: parallel Scan segments of the whole events table.
    #[arg(long, default_value_t = DEFAULT_SEGMENTS, value_name = "N", conflicts_with = "stream",
          value_parser = clap::value_parser!(u32).range(1..=64))]
    segments: u32,
    #[command(flatten)]
    store: StoreArgs,
}

/// Diff a read model against its recomputation from the event store
///
/// Missing, extra and differing rows are printed, side by side. The stored
/// rows and checkpoints are read in one snapshot, and each stream is
/// replayed up to its checkpoint: a model that only lags behind a busy
/// store is not a difference (its lag is reported), a wrong row is.
///
/// With --aws the live table of the model (blue or green, as its generation
/// item says) is diffed against a parallel Scan (--segments) of the events
/// table, while the projector Lambdas keep running.
///
/// Examples:
///   tally verify projections order_summary
///   tally verify projections sales_by_day --fail-on-lag
///   tally verify projections order_summary --aws --stage prod
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
struct ProjectionsArgs {
    /// The read model: order_summary or sales_by_day.
    #[arg(value_name = "PROJECTION")]
    projection: String,
    /// Also fail (exit 1) when streams are not projected up to their head.
    #[arg(long)]
    fail_on_lag: bool,
    /// With --aws: parallel Scan segments of the events table.
    #[arg(long, default_value_t = DEFAULT_SEGMENTS, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=64))]
    segments: u32,
    #[command(flatten)]
    store: StoreArgs,
}

/// Events read per page.
const PAGE: usize = 20_000;
/// Rows of a kind listed in full before the rest is only counted.
const LIST_MAX: usize = 50;

pub async fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    match args.what {
        Check::Chain(args) => chain(args).await,
        Check::Projections(args) => projections(args).await,
    }
}

fn break_rows(breaks: &[ChainBreak]) -> String {
    let rows: Vec<Vec<String>> = breaks
        .iter()
        .map(|b| vec![b.stream.to_string(), b.version.to_string(), b.reason.clone()])
        .collect();
    table(&["BROKEN STREAM", "FIRST BAD VERSION", "REASON"], &rows)
}

/// Walks one stream through the same walker as the whole store.
async fn chain_of(scan: &impl StreamScan, stream: &StreamId) -> anyhow::Result<ChainReport> {
    let mut walker = ChainWalker::new();
    let mut after = (stream.clone(), 0);
    loop {
        let page = scan.scan_after(Some(&after), PAGE).await?;
        let mut ended = page.len() < PAGE;
        for scanned in &page {
            let (ScannedEvent::Readable(tally_core::EventEnvelope { stream_id, version, .. })
            | ScannedEvent::TamperedSnapshot(tally_core::EventEnvelope { stream_id, version, .. })
            | ScannedEvent::Unreadable {
                stream: stream_id,
                version,
                ..
            }) = scanned;
            if stream_id != stream {
                ended = true;
                break;
            }
            after.1 = *version;
            walker.push(scanned);
        }
        if ended {
            return Ok(walker.finish());
        }
    }
}

/// The events table of the stack as a history read in `segments` parallel Scans.
fn history_of(aws: &Aws, segments: u32) -> DynamoHistory {
    DynamoHistory::new(aws.client.clone(), aws.store.config().events_table.clone(), segments)
}

async fn chain(args: ChainArgs) -> anyhow::Result<ExitCode> {
    let only = args
        .stream
        .as_deref()
        .map(|raw| StreamId::parse(raw).with_context(|| format!("invalid stream id {raw:?}")))
        .transpose()?;
    let backend = args.store.open_backend().await?;
    let started = Instant::now();
    let report = match &only {
        Some(stream) => {
            let report = match &backend {
                Backend::Sqlite(store) => chain_of(store, stream).await?,
                Backend::Aws(aws) => history_of(aws, 1).verify_chain_of(stream).await?,
            };
            if report.events == 0 {
                bail!("stream {stream} has no events");
            }
            report
        }
        None => {
            let mut progress = Reporter::new("verify chain");
            let report = match &backend {
                Backend::Sqlite(store) => {
                    progress.begin("walking", Some(store.count_after(&0, None).await?));
                    verify_all_chains(store, PAGE, &mut progress, &mut |_| {}).await?
                }
                Backend::Aws(aws) => {
                    let history = history_of(aws, args.segments);
                    progress.begin("walking", Some(history.estimated_items().await?));
                    history.verify_chains(PAGE, &mut progress).await?
                }
            };
            progress.end();
            report
        }
    };
    let elapsed = started.elapsed();
    let mut text = String::new();
    if !report.breaks.is_empty() {
        text.push_str(&break_rows(&report.breaks));
    }
    text.push_str(&format!(
        "verified {} events in {} streams in {:.1} s ({} events/s): {}\n",
        thousands(report.events),
        thousands(report.streams),
        elapsed.as_secs_f64(),
        rate(report.events, elapsed),
        match report.breaks.len() {
            0 => "every chain holds".to_owned(),
            1 => "1 broken stream".to_owned(),
            n => format!("{n} broken streams"),
        }
    ));
    emit(&text)?;
    Ok(found_if(!report.breaks.is_empty()))
}

/// The fields of two rows side by side, only those that differ.
fn side_by_side(expected: &Value, stored: &Value) -> String {
    let rows: Vec<Vec<String>> = match (expected, stored) {
        (Value::Object(a), Value::Object(b)) => {
            let fields: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            fields
                .into_iter()
                .filter(|f| a.get(*f) != b.get(*f))
                .map(|f| {
                    let show = |v: Option<&Value>| v.map_or_else(|| "(absent)".to_owned(), Value::to_string);
                    vec![format!("  {f}"), show(a.get(f)), show(b.get(f))]
                })
                .collect()
        }
        _ => vec![vec!["  (row)".to_owned(), expected.to_string(), stored.to_string()]],
    };
    table(&["  FIELD", "REPLAYED FROM EVENTS", "STORED"], &rows)
}

fn diff_text(diffs: &[RowDiff]) -> String {
    let mut text = String::new();
    for diff in diffs.iter().take(LIST_MAX) {
        match diff {
            RowDiff::Differs { key, expected, stored } => {
                text.push_str(&format!("DIFFERS {key}\n{}", side_by_side(expected, stored)));
            }
            RowDiff::Missing { key, expected } => {
                text.push_str(&format!("MISSING {key}  replayed: {}\n", compact(expected)));
            }
            RowDiff::Extra { key, stored } => {
                text.push_str(&format!("EXTRA   {key}  stored: {}\n", compact(stored)));
            }
        }
    }
    if diffs.len() > LIST_MAX {
        text.push_str(&format!("… and {} more rows\n", diffs.len() - LIST_MAX));
    }
    text
}

async fn projections(args: ProjectionsArgs) -> anyhow::Result<ExitCode> {
    let projection = known_projection(&args.projection)?;
    let backend = args.store.open_backend().await?;
    let memory = MemoryModel::new(projection).with_context(|| format!("no in-memory model of {projection}"))?;
    let mut progress = Reporter::new(format!("verify {projection}"));
    let started = Instant::now();
    let category = Some(Order::CATEGORY);
    let verdict = match &backend {
        Backend::Sqlite(store) => {
            let stored = live_sink(projection, store).with_context(|| format!("the store keeps no {projection}"))?;
            verify_projection(store, &stored, &memory, category, PAGE, &mut progress).await?
        }
        Backend::Aws(aws) => {
            let tables = SlotTables::from_settings(projection, &aws.names)?
                .with_context(|| format!("no tables for {projection}"))?;
            let stored = LiveModel::new(aws.client.clone(), tables);
            let history = history_of(aws, args.segments);
            verify_projection(&history, &stored, &memory, category, PAGE, &mut progress).await?
        }
    };
    drop(progress);
    let elapsed = started.elapsed();

    let count = |wanted: fn(&RowDiff) -> bool| verdict.diffs.iter().filter(|d| wanted(d)).count();
    let mut text = diff_text(&verdict.diffs);
    for ahead in verdict.ahead.iter().take(LIST_MAX) {
        text.push_str(&format!(
            "CHECKPOINT AHEAD {}  checkpoint {}, stream head {}\n",
            ahead.stream, ahead.checkpoint, ahead.head
        ));
    }
    text.push_str(&format!(
        "{projection}: {} differing, {} missing, {} extra of {} rows; {} checkpoints ahead of their stream; \
         recomputed from {} events in {:.1} s ({} events/s)\n",
        count(|d| matches!(d, RowDiff::Differs { .. })),
        count(|d| matches!(d, RowDiff::Missing { .. })),
        count(|d| matches!(d, RowDiff::Extra { .. })),
        thousands(verdict.rows),
        verdict.ahead.len(),
        thousands(verdict.events),
        elapsed.as_secs_f64(),
        rate(verdict.events, elapsed),
    ));
    if !verdict.behind.is_empty() {
        let events: u64 = verdict.behind.iter().map(|lag| lag.head - lag.checkpoint).sum();
        let first = &verdict.behind[0];
        text.push_str(&format!(
            "{projection}: {} streams not projected up to their head yet ({} events behind; e.g. {} at {} of {}): \
             compared at their checkpoints\n",
            thousands(verdict.behind.len() as u64),
            thousands(events),
            first.stream,
            first.checkpoint,
            first.head
        ));
    }
    emit(&text)?;
    let failed = !verdict.is_consistent() || (args.fail_on_lag && !verdict.behind.is_empty());
    Ok(found_if(failed))
}
