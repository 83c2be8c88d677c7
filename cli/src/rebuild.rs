//! `tally rebuild <projection>`: replays the whole event store into an
//! eventual read model, blue-green (default) or truncate-and-replay, with a
//! progress bar; resumable after a kill.
//!
//! The work is the core's [`rebuild`] driver over the store's `History` and
//! `ModelGenerations` ports; this module only picks the store, holds the
//! projection's rebuild lease while it runs, reports progress and prints the
//! outcome. It never touches a model itself, and never rebuilds without
//! the lease.

use std::future::Future;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use tally_core::projection::{
    LeaseHolder, LeaseOutcome, RebuildLeases, RebuildMode, RebuildOptions, RebuildReport, rebuild,
};
use tally_domain::views::PROJECTIONS;
use tally_store_dynamodb::generations::{DEFAULT_SETTLE, DynamoLeases};
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
/// One rebuild of a projection at a time: a run holds the projection's lease
/// (a row in the database, or an item in the checkpoints table on AWS),
/// renews it while it runs and releases it at the end. A second run is
/// refused (exit status 2) with who holds it and until when. A killed run
/// cannot release it: its lease expires --lease-ttl seconds after its last
/// renewal, and the next run then resumes.
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
    /// Seconds the rebuild lease lasts without renewal (renewed every third
    /// of that while the rebuild runs): how long a killed run blocks the next.
    #[arg(long, default_value_t = DEFAULT_LEASE_TTL.as_secs(), value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    lease_ttl: u64,
    #[command(flatten)]
    store: StoreArgs,
}

/// How long a rebuild lease lasts without renewal.
const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);

/// Who this run is, as a lease names it: user, host and process.
fn lease_holder() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into());
    format!("{user}@{host} pid {}", std::process::id())
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// The one-line refusal naming who holds the lease and until when.
fn held_message(projection: &str, held: &LeaseHolder) -> String {
    let until = DateTime::<Utc>::from_timestamp_millis(held.expires_at_ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| format!("{} ms", held.expires_at_ms));
    let left = (held.expires_at_ms - now_ms()).max(0) as f64 / 1000.0;
    format!(
        "a rebuild of {projection} is already running: {} holds its lease until {until} ({left:.0} s from now, \
         renewed while it runs); run this again once it has ended",
        held.holder
    )
}

/// Takes or renews the lease for `ttl` from now.
async fn take_lease(
    leases: &impl RebuildLeases,
    projection: &str,
    holder: &str,
    ttl: Duration,
) -> Result<LeaseOutcome, tally_core::ProjectionError> {
    let now = now_ms();
    leases.take(projection, holder, now, now + ttl.as_millis() as i64).await
}

/// Runs `work` while holding `projection`'s rebuild lease: refuses if
/// someone else holds it, renews it every third of `ttl`, releases it at
/// the end. Losing it (someone took over an expired lease) stops `work`:
/// the rebuild is resumable, two at once are not wanted.
async fn under_lease<T>(
    leases: &impl RebuildLeases,
    projection: &str,
    ttl: Duration,
    work: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let holder = lease_holder();
    let take = || take_lease(leases, projection, &holder, ttl);
    if let LeaseOutcome::HeldBy(held) = take().await.context("cannot take the rebuild lease")? {
        bail!(held_message(projection, &held));
    }
    let renew = async {
        loop {
            tokio::time::sleep(ttl / 3).await;
            match take().await {
                Ok(LeaseOutcome::Taken) => {}
                Ok(LeaseOutcome::HeldBy(held)) => {
                    return anyhow::anyhow!(
                        "lost the rebuild lease of {projection} to {} (it expired before this run renewed it); \
                         stopped, run it again to resume",
                        held.holder
                    );
                }
                // A failed renewal is tried again; the lease only matters
                // if it expires and someone takes it over.
                Err(error) => tracing::warn!(%error, projection, "could not renew the rebuild lease"),
            }
        }
    };
    let result = tokio::select! {
        result = work => result,
        lost = renew => Err(lost),
    };
    if let Err(error) = leases.release(projection, &holder).await {
        tracing::warn!(%error, projection, "could not release the rebuild lease; it expires on its own");
    }
    result
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
    let ttl = Duration::from_secs(args.lease_ttl);
    let stopped = || format!("rebuild of {projection} stopped (run it again to resume)");
    let started = Instant::now();
    let report = match &backend {
        Backend::Sqlite(store) => {
            let generations = SqliteGenerations::new(store, projection)
                .with_context(|| format!("the store keeps no generations of {projection}"))?;
            let work = async {
                rebuild(store, &generations, mode, options, &mut progress)
                    .await
                    .with_context(stopped)
            };
            under_lease(store, projection, ttl, work).await
        }
        Backend::Aws(aws) => {
            let tables = SlotTables::from_settings(projection, &aws.names)?
                .with_context(|| format!("no tables for {projection}"))?;
            let leases = DynamoLeases::new(aws.client.clone(), tables.checkpoints());
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
            let work = async {
                rebuild(&history, &generations, mode, options, &mut progress)
                    .await
                    .with_context(stopped)
            };
            under_lease(&leases, projection, ttl, work).await
        }
    }?;
    drop(progress);
    emit(&describe(projection, &report, started.elapsed()))?;
    Ok(ExitCode::SUCCESS)
}
