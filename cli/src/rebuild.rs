//! `tally rebuild <projection>`: replays the whole event store into an
//! eventual read model, blue-green (default) or truncate-and-replay, with a
//! progress bar; resumable after a kill.
//!
//! The work is the core's [`rebuild`] driver over the store's `History` and
//! `ModelGenerations` ports; this module only picks the store, reports
//! progress and prints the outcome. It never touches a model itself.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tally_core::projection::{RebuildMode, RebuildOptions, RebuildReport, rebuild};
use tally_domain::views::PROJECTIONS;
use tally_store_dynamodb::generations::DEFAULT_SETTLE;
use tally_store_dynamodb::history::DEFAULT_SEGMENTS;
use tally_store_dynamodb::{DynamoGenerations, DynamoHistory, SlotTables};
use tally_store_sqlite::SqliteGenerations;

use crate::output::emit;
use crate::progress::{Reporter, rate, thousands};
use crate::store::{Backend, StoreArgs};

/// Rebuild an eventual read model by replaying the whole event store
///
/// Blue-green (default): a new generation of the model is filled beside the
/// live one, caught up with whatever is appended meanwhile, then made live in
/// one transaction that also applies the last events; the old generation is
/// dropped. Queries (also those of a `tally serve` running on the same file)
/// answer from the old generation until that moment and from the new one
/// after it. With --truncate the live model and its checkpoints are emptied
/// and refilled in place instead: quicker on disk, but readers see it refill.
///
/// Killed at any point, run the same command again: it resumes from the last
/// chunk it recorded and ends with the same model.
///
/// On AWS (--aws) the replay is a parallel Scan of the events table. Each
/// model has two tables (blue, green); blue-green fills the idle one while
/// the projector Lambdas keep the live one current and, during the replay,
/// project into the new one too (that is the catch-up with the live tail);
/// the switch is one conditional write of the model's generation item, and
/// the old table is emptied after --settle. A truncate on AWS stops the
/// projectors from applying for the model while it is emptied (they leave
/// those events to the replay).
///
/// Examples:
///   tally rebuild order_summary
///   tally rebuild sales_by_day --truncate --db data/tally.db
///   tally rebuild order_summary --no-switch   (build now, switch with a later run)
///   tally rebuild order_summary --aws --stage prod
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub struct RebuildArgs {
    /// The read model to rebuild: order_summary or sales_by_day.
    #[arg(value_name = "PROJECTION")]
    projection: String,
    /// Empty the live model and its checkpoints, then replay into it.
    #[arg(long)]
    truncate: bool,
    /// Replay and catch up into the new generation, but leave the old one
    /// live; a later run without it resumes, catches up and switches.
    #[arg(long, conflicts_with = "truncate")]
    no_switch: bool,
    /// Events per chunk: one SQLite transaction, or on AWS one recorded Scan
    /// position; a killed rebuild redoes at most one chunk.
    /// [default: 20000 with --db, 1000 with --aws]
    #[arg(long, value_name = "EVENTS", value_parser = clap::value_parser!(u32).range(100..=1_000_000))]
    chunk: Option<u32>,
    /// With --aws: parallel Scan segments of the replay (a resumed rebuild
    /// must use the number it started with).
    #[arg(long, default_value_t = DEFAULT_SEGMENTS, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=64))]
    segments: u32,
    /// With --aws: seconds to wait before emptying a table projectors or
    /// readers may still use (more than the projector's timeout).
    #[arg(long, default_value_t = DEFAULT_SETTLE.as_secs(), value_name = "SECONDS")]
    settle: u64,
    #[command(flatten)]
    store: StoreArgs,
}

/// The projection named `name`, or a one-line error listing the known ones.
pub fn known_projection(name: &str) -> anyhow::Result<&'static str> {
    match PROJECTIONS.iter().find(|p| **p == name) {
        Some(projection) => Ok(projection),
        None => bail!("unknown projection {name:?} (known: {})", PROJECTIONS.join(", ")),
    }
}

fn describe(projection: &str, report: &RebuildReport, elapsed: std::time::Duration) -> String {
    let mode = match report.mode {
        RebuildMode::BlueGreen => "blue-green",
        RebuildMode::Truncate => "truncate",
    };
    let outcome = match (report.mode, report.finished) {
        (RebuildMode::BlueGreen, true) => format!("generation {} is live", report.build_generation),
        (RebuildMode::BlueGreen, false) => format!(
            "generation {} is built but not live: run `tally rebuild {projection}` to catch up and switch",
            report.build_generation
        ),
        (RebuildMode::Truncate, _) => format!("generation {} refilled", report.build_generation),
    };
    let mut text = format!(
        "{projection}: {outcome} ({mode}{}): replayed {} events in {:.1} s ({} events/s); {} applied, {} already applied",
        if report.resumed { ", resumed" } else { "" },
        thousands(report.replayed),
        elapsed.as_secs_f64(),
        rate(report.replayed, elapsed),
        thousands(report.applied.applied),
        thousands(report.applied.duplicates),
    );
    if report.finished && report.mode == RebuildMode::BlueGreen {
        text.push_str(&format!(
            "; {} caught up at the switch; {} old generation(s) dropped",
            thousands(report.at_finish),
            report.dropped
        ));
    }
    if let Some(abandoned) = report.abandoned {
        text.push_str(&format!("; unfinished blue-green generation {abandoned} discarded"));
    }
    text.push('\n');
    text
}

pub async fn run(args: RebuildArgs) -> anyhow::Result<ExitCode> {
    let projection = known_projection(&args.projection)?;
    let backend = args.store.open_backend().await?;
    let chunk = args.chunk.unwrap_or(match backend {
        Backend::Sqlite(_) => 20_000,
        Backend::Aws(_) => 1_000,
    });
    let mode = if args.truncate {
        RebuildMode::Truncate
    } else {
        RebuildMode::BlueGreen
    };
    let options = RebuildOptions {
        chunk: chunk as usize,
        finish: !args.no_switch,
        ..RebuildOptions::default()
    };
    let mut progress = Reporter::new(format!("rebuild {projection}"));
    let started = Instant::now();
    let report = match &backend {
        Backend::Sqlite(store) => {
            let generations = SqliteGenerations::new(store, projection)
                .with_context(|| format!("the store keeps no generations of {projection}"))?;
            rebuild(store, &generations, mode, options, &mut progress).await
        }
        Backend::Aws(aws) => {
            let tables = SlotTables::from_settings(projection, &aws.names)?
                .with_context(|| format!("no tables for {projection}"))?;
            let history = DynamoHistory::new(
                aws.client.clone(),
                aws.store.config().events_table.clone(),
                args.segments,
            );
            let generations = DynamoGenerations::new(
                aws.client.clone(),
                tables,
                history.clone(),
                Duration::from_secs(args.settle),
                chunk as usize,
            );
            rebuild(&history, &generations, mode, options, &mut progress).await
        }
    }
    .with_context(|| format!("rebuild of {projection} stopped (run it again to resume)"))?;
    drop(progress);
    emit(&describe(projection, &report, started.elapsed()))?;
    Ok(ExitCode::SUCCESS)
}
