//! `tally stream show|state`: one stream's events, or its aggregate's state
//! at a version or an instant, read through the `EventStore` port (the same
//! reads as the API's `/streams/{id}/events` and `/state`), on the embedded
//! store (`--db`) or a deployed stack's events table (`--aws`). A table on a
//! terminal (with each event's actor: the authenticated caller, `-` when
//! none), `--json` for scripts. It never writes to the store.

use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};
use tally_core::{EventEnvelope, StreamId};
use tally_domain::history::aggregate_state;

use crate::output::{compact, emit, emit_json, rfc3339, table};
use crate::store::StoreArgs;

/// Inspect one stream: its events, or its state at a point in time
///
/// Examples:
///   tally stream show order-o-1
///   tally stream show inventory-SKU-42 --from 10 --to 20 --json
///   tally stream state inventory-SKU-42 --at 3
///   tally stream state order-o-1 --at 2026-03-01T12:00:00Z
///   tally stream show order-o-1 --aws --stage prod
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct StreamArgs {
    #[command(subcommand)]
    what: Inspect,
}

#[derive(clap::Subcommand)]
enum Inspect {
    Show(ShowArgs),
    State(StateArgs),
}

/// Print a stream's events (version, time, type, actor, metadata, payload)
///
/// Examples:
///   tally stream show order-o-1
///   tally stream show inventory-SKU-42 --from 10 --to 20 --json
///   tally stream show order-o-1 --aws --stage prod
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
struct ShowArgs {
    /// The stream, `<category>-<id>`, e.g. order-o-1 or inventory-SKU-42.
    #[arg(value_name = "STREAM_ID")]
    stream: String,
    /// First version to show.
    #[arg(long, default_value_t = 1, value_name = "V")]
    from: u64,
    /// Last version to show (default: the head).
    #[arg(long, value_name = "V")]
    to: Option<u64>,
    /// One JSON document (the envelopes as stored) instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArgs,
}

/// Print the aggregate's state after a version, or as it was at an instant
///
/// Examples:
///   tally stream state inventory-SKU-42              (now)
///   tally stream state inventory-SKU-42 --at 3       (after version 3)
///   tally stream state order-o-1 --at 2026-03-01T12:00:00Z
///   tally stream state inventory-SKU-42 --at 3 --aws --stage prod
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
struct StateArgs {
    /// The stream, `<category>-<id>` (categories: inventory, order).
    #[arg(value_name = "STREAM_ID")]
    stream: String,
    /// A version number, or an RFC 3339 time (default: now).
    #[arg(long, value_name = "VERSION|TIME")]
    at: Option<String>,
    /// JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArgs,
}

/// Events read per round: a long stream is printed as it is read.
const PAGE: u64 = 1_000;

pub async fn run(args: StreamArgs) -> anyhow::Result<ExitCode> {
    match args.what {
        Inspect::Show(args) => show(args).await,
        Inspect::State(args) => state(args).await,
    }
}

fn parse_stream(raw: &str) -> anyhow::Result<StreamId> {
    StreamId::parse(raw)
        .with_context(|| format!("invalid stream id {raw:?} (expected <category>-<id>, e.g. order-o-1)"))
}

fn event_rows(events: &[EventEnvelope]) -> Vec<Vec<String>> {
    events
        .iter()
        .map(|e| {
            let mut metadata = serde_json::to_value(&e.metadata).unwrap_or(Value::Null);
            // The actor has its own column: who did it is the first question about an event.
            if let Value::Object(fields) = &mut metadata {
                fields.remove("actor");
            }
            let metadata = match &metadata {
                Value::Object(fields) if fields.is_empty() => "-".to_owned(),
                other => compact(other),
            };
            vec![
                e.version.to_string(),
                rfc3339(e.timestamp_ms),
                format!("{} v{}", e.event_type, e.schema),
                e.metadata.actor.clone().unwrap_or_else(|| "-".to_owned()),
                metadata,
                compact(&e.data),
            ]
        })
        .collect()
}

async fn show(args: ShowArgs) -> anyhow::Result<ExitCode> {
    let stream = parse_stream(&args.stream)?;
    if args.to.is_some_and(|to| to < args.from) {
        bail!("--to {} is below --from {}", args.to.unwrap_or_default(), args.from);
    }
    let backend = args.store.open_backend().await?;
    let store = backend.events();
    if store.read_range(&stream, 1, Some(1)).await?.is_empty() {
        bail!("stream {stream} has no events");
    }
    let mut from = args.from.max(1);
    let mut all = Vec::new();
    loop {
        let page_end = from.saturating_add(PAGE - 1);
        let to = args.to.map_or(page_end, |to| to.min(page_end));
        let events = store.read_range(&stream, from, Some(to)).await?;
        let full = events.len() as u64 == PAGE;
        if args.json {
            all.extend(events);
        } else if !events.is_empty() {
            emit(&table(
                &["VERSION", "TIME", "TYPE", "ACTOR", "METADATA", "DATA"],
                &event_rows(&events),
            ))?;
        }
        if !full || args.to.is_some_and(|end| to >= end) {
            break;
        }
        from = to + 1;
    }
    if args.json {
        emit_json(&json!({ "stream_id": stream, "events": all }))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `--at`: a version, or an instant in ms.
enum At {
    Version(u64),
    Time(i64),
}

fn parse_at(raw: &str) -> anyhow::Result<At> {
    if let Ok(version) = raw.parse::<u64>() {
        return Ok(At::Version(version));
    }
    chrono::DateTime::parse_from_rfc3339(raw)
        .map(|t| At::Time(t.timestamp_millis()))
        .map_err(|_| {
            anyhow!("--at {raw:?} is neither a version number nor an RFC 3339 time (e.g. 3 or 2026-03-01T12:00:00Z)")
        })
}

async fn state(args: StateArgs) -> anyhow::Result<ExitCode> {
    let stream = parse_stream(&args.stream)?;
    let at = args.at.as_deref().map(parse_at).transpose()?;
    let backend = args.store.open_backend().await?;
    let store = backend.events();
    let events = match at {
        Some(At::Version(version)) => store.read_range(&stream, 1, Some(version)).await?,
        Some(At::Time(ms)) => store.read_until(&stream, ms).await?,
        None => store.read_range(&stream, 1, None).await?,
    };
    let Some(last) = events.last() else {
        bail!("stream {stream} had no events at that point");
    };
    let (version, timestamp_ms) = (last.version, last.timestamp_ms);
    let state = aggregate_state(&stream, &events)?;
    if args.json {
        emit_json(&json!({
            "stream_id": stream,
            "version": version,
            "timestamp_ms": timestamp_ms,
            "state": state,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = match &state {
        Value::Object(fields) => fields.iter().map(|(k, v)| vec![k.clone(), compact(v)]).collect(),
        other => vec![vec!["state".to_owned(), compact(other)]],
    };
    emit(&format!(
        "{stream} at version {version} ({})\n{}",
        rfc3339(timestamp_ms),
        table(&["FIELD", "VALUE"], &rows)
    ))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use tally_core::Metadata;

    use super::*;

    fn event(version: u64, metadata: Metadata) -> EventEnvelope {
        serde_json::from_value(json!({
            "event_id": "00000000-0000-0000-0000-000000000000",
            "stream_id": "inventory-A",
            "version": version,
            "type": "StockReceived",
            "schema": 1,
            "data": { "quantity": 1 },
            "metadata": metadata,
            "timestamp_ms": 0,
            "hash": "",
        }))
        .expect("an envelope")
    }

    /// Each row names the event's actor in its own column (`-` when none),
    /// and the metadata column does not repeat it.
    #[test]
    fn rows_show_the_actor() {
        let by_operator = Metadata {
            actor: Some("arn:aws:sts::123456789012:assumed-role/tally-operator/ops-alice".to_owned()),
            correlation_id: Some("c-1".to_owned()),
            ..Metadata::default()
        };
        let rows = event_rows(&[event(1, Metadata::default()), event(2, by_operator)]);
        assert_eq!(rows[0][3], "-");
        assert_eq!(rows[0][4], "-");
        assert_eq!(
            rows[1][3],
            "arn:aws:sts::123456789012:assumed-role/tally-operator/ops-alice"
        );
        assert_eq!(rows[1][4], compact(&json!({ "correlation_id": "c-1" })));
    }
}
