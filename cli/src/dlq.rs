//! `tally dlq list|redrive`: a projection's dead letters on AWS (or
//! LocalStack, or the emulator, through `AWS_ENDPOINT_URL`), through the
//! same code the tests run (`tally_bus::dlq`).
//!
//! A queue is named by its projection (`order_summary`, `sales_by_day`):
//! the queue, its DLQ and the checkpoints table (where the projector
//! records why a message failed) follow template.yaml's naming,
//! `tally-<stage>-…`. A queue URL works too (then `--source` names the
//! queue to redrive into).
//!
//! Both end on any queue: a listing stops at `--max` messages or its time
//! budget and says when more may exist; a redrive stops when a long poll
//! finds the DLQ empty, and exits non-zero naming every message it could
//! not move.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::builder::TypedValueParser as _;
use clap::{Args, Subcommand};
use tally_bus::dlq::{self, DeadLetter, ListLimits, Listing, RedriveFailure};
use tally_domain::views::PROJECTIONS;
use tally_store_dynamodb::schema::ENV_CHECKPOINTS_TABLE;
use tally_store_dynamodb::{FailureLog, Settings, StageNames};

/// `tally dlq`: a projection's dead-letter queue on AWS.
#[derive(Args)]
#[command(after_help = "\
Examples:
  tally dlq list order_summary --stage prod        what is dead, and why
  tally dlq list order_summary --json              the same, for scripts
  tally dlq redrive order_summary --stage prod     move them back to be projected again

AWS settings come from the standard chain (profile, region, AWS_ENDPOINT_URL for
LocalStack or an emulator); queue and table names follow template.yaml:
tally-<stage>-order-summary, tally-<stage>-order-summary-dlq, tally-<stage>-checkpoints.")]
pub struct DlqArgs {
    #[command(subcommand)]
    command: DlqCommand,
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List the dead messages (event type, stream, version, receives, the
    /// projector's recorded error) without consuming them.
    List {
        /// A projection (order_summary, sales_by_day) or a DLQ URL.
        queue: String,
        /// The deployment's stage (template parameter Stage).
        #[arg(long, env = "TALLY_STAGE", default_value = "dev")]
        stage: String,
        /// Print JSON instead of a table (the note on how many exist goes to stderr).
        #[arg(long)]
        json: bool,
        /// Show at most this many messages.
        #[arg(long, default_value_t = dlq::DEFAULT_LIST_MAX, value_name = "N",
              value_parser = clap::value_parser!(u64).range(1..=10_000).map(|n| n as usize))]
        max: usize,
        /// Stop receiving after this many seconds (messages listed stay
        /// hidden from other consumers until the listing ends).
        #[arg(long, default_value_t = dlq::DEFAULT_LIST_BUDGET.as_secs(), value_name = "SECONDS",
              value_parser = clap::value_parser!(u64).range(1..=600))]
        budget: u64,
    },
    /// Move every dead message back to the projection's queue; prints how
    /// many moved, and exits 2 naming those it could not send or delete.
    Redrive {
        /// A projection (order_summary, sales_by_day) or a DLQ URL.
        queue: String,
        /// The deployment's stage (template parameter Stage).
        #[arg(long, env = "TALLY_STAGE", default_value = "dev")]
        stage: String,
        /// The queue to move into (needed when the DLQ is given by URL).
        #[arg(long)]
        source: Option<String>,
        /// Seconds each receive waits for a message (SQS long polling): the
        /// redrive ends when one finds none.
        #[arg(long, default_value_t = dlq::DEFAULT_REDRIVE_WAIT.as_secs(), value_name = "SECONDS",
              value_parser = clap::value_parser!(u64).range(1..=20))]
        wait: u64,
    },
}

/// Runs `tally dlq`.
pub async fn run(args: DlqArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        DlqCommand::List {
            queue,
            stage,
            json,
            max,
            budget,
        } => {
            let limits = ListLimits {
                max,
                budget: Duration::from_secs(budget),
            };
            list(&queue, &stage, json, limits).await?
        }
        DlqCommand::Redrive {
            queue,
            stage,
            source,
            wait,
        } => redrive(&queue, &stage, source, Duration::from_secs(wait)).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Where a projection's messages live.
struct Queues {
    projection: Option<String>,
    dlq: String,
    source: Option<String>,
}

fn resource_name(stage: &str, projection: &str) -> String {
    format!("tally-{stage}-{}", projection.replace('_', "-"))
}

async fn queue_url(sqs: &aws_sdk_sqs::Client, name: &str) -> anyhow::Result<String> {
    let out = sqs.get_queue_url().queue_name(name).send().await.map_err(|e| {
        anyhow::anyhow!(
            "cannot find queue {name}: {}",
            aws_sdk_sqs::error::DisplayErrorContext(e)
        )
    })?;
    out.queue_url.with_context(|| format!("no URL for queue {name}"))
}

async fn resolve(
    sqs: &aws_sdk_sqs::Client,
    queue: &str,
    stage: &str,
    source: Option<String>,
) -> anyhow::Result<Queues> {
    if queue.starts_with("https://") || queue.starts_with("http://") {
        return Ok(Queues {
            projection: None,
            dlq: queue.to_owned(),
            source,
        });
    }
    if !PROJECTIONS.contains(&queue) {
        bail!(
            "unknown projection {queue:?}: name one of {} or give a queue URL",
            PROJECTIONS.join(", ")
        );
    }
    let base = resource_name(stage, queue);
    let source = match source {
        Some(source) => source,
        None => queue_url(sqs, &base).await?,
    };
    Ok(Queues {
        projection: Some(queue.to_owned()),
        dlq: queue_url(sqs, &format!("{base}-dlq")).await?,
        source: Some(source),
    })
}

fn table(letters: &[DeadLetter]) -> String {
    let mut out = format!(
        "{:<38} {:<16} {:<28} {:>7} {:>8}  {}\n",
        "message", "type", "stream", "version", "receives", "error"
    );
    for l in letters {
        let _ = writeln!(
            out,
            "{:<38} {:<16} {:<28} {:>7} {:>8}  {}",
            l.message_id,
            l.event_type,
            l.stream,
            l.version,
            l.receive_count,
            l.error.as_deref().unwrap_or("(not recorded)")
        );
    }
    out
}

/// What a listing says about the messages it did not show, if anything.
fn more_note(listing: &Listing, dlq: &str) -> Option<String> {
    let shown = listing.letters.len();
    let about = match listing.approximate_total {
        Some(total) => format!("of about {total} (ApproximateNumberOfMessages) "),
        None => String::new(),
    };
    let beyond = listing.approximate_total.is_some_and(|t| t > shown as u64);
    (listing.truncated || beyond).then(|| {
        format!("showed {shown} dead message(s) {about}in {dlq}; more may exist (raise --max or --budget to see more)")
    })
}

/// `tally dlq list`.
async fn list(queue: &str, stage: &str, json: bool, limits: ListLimits) -> anyhow::Result<()> {
    let sdk = aws_config::load_from_env().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queues = resolve(&sqs, queue, stage, None).await?;
    let failures = FailureLog::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        StageNames::new(stage).require(ENV_CHECKPOINTS_TABLE)?,
    );
    let lookup = queues.projection.as_deref().map(|p| (&failures, p));
    let listing = dlq::list_within(&sqs, &queues.dlq, lookup, limits).await?;
    let note = more_note(&listing, &queues.dlq);
    let letters = &listing.letters;
    if json {
        println!("{}", serde_json::to_string_pretty(letters)?);
        // stdout stays one JSON document.
        if let Some(note) = note {
            eprintln!("{note}");
        }
    } else if letters.is_empty() {
        println!("{}: no dead messages", queues.dlq);
    } else {
        print!("{}", table(letters));
        match note {
            Some(note) => println!("{note}"),
            None => println!("{} dead message(s) in {}", letters.len(), queues.dlq),
        }
    }
    Ok(())
}

/// `a (Code), b (Code), …`: at most ten named, then how many more.
fn named(failures: &[RedriveFailure]) -> String {
    const NAMED: usize = 10;
    let mut text = failures
        .iter()
        .take(NAMED)
        .map(|f| format!("{} ({}: {})", f.message_id, f.code, f.message))
        .collect::<Vec<_>>()
        .join(", ");
    if failures.len() > NAMED {
        let _ = write!(text, " and {} more", failures.len() - NAMED);
    }
    text
}

/// `tally dlq redrive`.
async fn redrive(queue: &str, stage: &str, source: Option<String>, wait: Duration) -> anyhow::Result<()> {
    let sdk = aws_config::load_from_env().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queues = resolve(&sqs, queue, stage, source).await?;
    let Some(source) = queues.source else {
        bail!("a dead-letter queue given by URL needs --source <queue URL> to redrive into");
    };
    let report = dlq::redrive_reported(&sqs, &queues.dlq, &source, wait).await?;
    println!("moved {} message(s) from {} back to {source}", report.moved, queues.dlq);
    let mut problems = Vec::new();
    if !report.unsent.is_empty() {
        problems.push(format!(
            "{} message(s) could not be sent back and remain in the dead-letter queue: {}",
            report.unsent.len(),
            named(&report.unsent)
        ));
    }
    if !report.undeleted.is_empty() {
        problems.push(format!(
            "{} message(s) were sent back but could not be deleted from the dead-letter queue \
             (a copy may be in both; the projector skips the duplicate): {}",
            report.undeleted.len(),
            named(&report.undeleted)
        ));
    }
    if !problems.is_empty() {
        bail!(problems.join("; "));
    }
    Ok(())
}
