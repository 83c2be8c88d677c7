//! What the read side's Lambdas tell an operator: JSON logs through
//! `tracing` (each record's span carries its stream, version, correlation
//! and W3C trace id), and CloudWatch metrics as EMF lines through the
//! `metrics` facade (metrics_cloudwatch_embedded), flushed after every
//! invocation. Never hand-built metric JSON.

use metrics_cloudwatch_embedded::Collector;

/// The metric names, named once (dashboards and alarms use them).
pub mod metric {
    /// Events put on the bus.
    pub const EVENTS_PUBLISHED: &str = "EventsPublished";
    /// PutEvents entries sent again after a failure.
    pub const PUBLISH_RETRIES: &str = "PublishRetries";
    /// Records not published after every retry (redelivered by the stream).
    pub const PUBLISH_FAILURES: &str = "PublishFailures";
    /// Milliseconds from append to publication.
    pub const PUBLISH_LAG_MS: &str = "PublishLagMs";
    /// Events applied to a read model (gap repairs included).
    pub const EVENTS_APPLIED: &str = "EventsApplied";
    /// Deliveries skipped because the checkpoint had passed them.
    pub const DUPLICATES_SKIPPED: &str = "DuplicatesSkipped";
    /// Events read from the store to close a gap.
    pub const GAPS_REPAIRED: &str = "GapsRepaired";
    /// Messages that failed (they come back, then go to the DLQ).
    pub const PROJECTION_FAILURES: &str = "ProjectionFailures";
    /// Milliseconds from append to the read model: now − event time.
    pub const PROJECTION_LAG_MS: &str = "ProjectionLagMs";
}

/// The CloudWatch namespace of every Tally metric.
pub const NAMESPACE: &str = "Tally";

/// JSON logs on stdout, level from `RUST_LOG` (default `info`), with the
/// current span's fields on every line.
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let _ = tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .without_time()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .try_init();
}

/// Installs the EMF recorder for `function` (a dimension on every metric).
pub fn init_metrics(function: &str) -> Result<&'static Collector, Box<dyn std::error::Error + Send + Sync>> {
    metrics_cloudwatch_embedded::Builder::new()
        .cloudwatch_namespace(NAMESPACE)
        .with_dimension("Function", function.to_owned())
        .init()
}

/// Writes the metrics gathered since the last flush as EMF lines on stdout
/// (Lambda ships stdout to CloudWatch Logs, which extracts them).
pub fn flush(collector: &Collector) {
    if let Err(error) = collector.flush(std::io::stdout().lock()) {
        tracing::warn!(%error, "cannot write metrics");
    }
}

/// An error and its sources, outermost first, joined by `: ` (an SDK
/// error's own display is only "service error"; the cause is in its sources).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The trace id of a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`).
pub fn trace_id(traceparent: Option<&str>) -> Option<&str> {
    traceparent?.split('-').nth(1).filter(|id| id.len() == 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_id_is_the_second_field_of_a_traceparent() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(trace_id(Some(tp)), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(trace_id(Some("garbage")), None);
        assert_eq!(trace_id(None), None);
    }
}
