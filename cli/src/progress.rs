//! Progress of long operations on stderr: an indicatif bar with events/s
//! and ETA when stderr is a terminal, one plain line per second otherwise
//! (a log file or CI output must not fill with carriage returns).
//! It only reports, and never on stdout: that stays the command's output.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressState, ProgressStyle};
use tally_core::projection::Progress;

/// How often a plain progress line is written.
const LINE_EVERY: Duration = Duration::from_secs(1);

/// Reports one operation's progress.
pub struct Reporter {
    label: String,
    kind: Kind,
}

enum Kind {
    Bar(Option<ProgressBar>),
    Lines(Lines),
}

struct Lines {
    phase: String,
    total: Option<u64>,
    done: u64,
    started: Instant,
    last_line: Instant,
}

impl Reporter {
    /// A reporter for `label` (e.g. `rebuild order_summary`), drawing a bar
    /// when stderr is a terminal.
    pub fn new(label: impl Into<String>) -> Self {
        let kind = if std::io::stderr().is_terminal() {
            Kind::Bar(None)
        } else {
            Kind::Lines(Lines {
                phase: String::new(),
                total: None,
                done: 0,
                started: Instant::now(),
                last_line: Instant::now(),
            })
        };
        Self {
            label: label.into(),
            kind,
        }
    }
}

/// Thousands separators: 1234567 → 1,234,567.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `n` over `elapsed` as a rate per second, rounded.
pub fn rate(n: u64, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64();
    if seconds <= 0.0 {
        return "-".to_owned();
    }
    thousands((n as f64 / seconds).round() as u64)
}

fn bar_style(total: Option<u64>) -> ProgressStyle {
    // A fixed-width bar: a pty that reports no size would squeeze a wide one to nothing.
    let template = if total.is_some() {
        "{prefix} {msg} [{bar:30.cyan/blue}] {human_pos}/{human_len} events  {rate}  ETA {eta}"
    } else {
        "{prefix} {msg} {spinner} {elapsed}"
    };
    // A fixed template cannot fail to parse; fall back to the default if it ever does.
    ProgressStyle::with_template(template)
        .map(|style| {
            style
                .progress_chars("=> ")
                .with_key("rate", |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{} events/s", thousands(state.per_sec().round() as u64));
                })
        })
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}

impl Lines {
    fn line(&self, label: &str) {
        let elapsed = self.started.elapsed();
        let rate = rate(self.done, elapsed);
        match self.total {
            Some(total) if total > 0 => {
                let percent = (self.done as f64 / total as f64 * 100.0).min(100.0);
                let eta = (self.done > 0 && total > self.done)
                    .then(|| elapsed.as_secs_f64() * (total - self.done) as f64 / self.done as f64)
                    .map_or_else(|| "-".to_owned(), |s| format!("{s:.0}s"));
                eprintln!(
                    "{label}: {} {}/{} events ({percent:.0}%), {rate} events/s, ETA {eta}",
                    self.phase,
                    thousands(self.done),
                    thousands(total)
                );
            }
            _ => eprintln!(
                "{label}: {} {} events, {rate} events/s",
                self.phase,
                thousands(self.done)
            ),
        }
    }
}

impl Progress for Reporter {
    fn begin(&mut self, phase: &str, total: Option<u64>) {
        match &mut self.kind {
            Kind::Bar(bar) => {
                if let Some(old) = bar.take() {
                    old.finish();
                }
                let new = match total {
                    Some(total) => ProgressBar::new(total),
                    None => ProgressBar::new_spinner(),
                };
                new.set_style(bar_style(total));
                new.set_prefix(self.label.clone());
                new.set_message(phase.to_owned());
                new.enable_steady_tick(Duration::from_millis(200));
                *bar = Some(new);
            }
            Kind::Lines(lines) => {
                lines.phase = phase.to_owned();
                lines.total = total;
                lines.done = 0;
                lines.started = Instant::now();
                lines.last_line = Instant::now();
                match total {
                    Some(total) => eprintln!("{}: {phase} {} events", self.label, thousands(total)),
                    None => eprintln!("{}: {phase}", self.label),
                }
            }
        }
    }

    fn advance(&mut self, events: u64) {
        match &mut self.kind {
            Kind::Bar(Some(bar)) => bar.inc(events),
            Kind::Bar(None) => {}
            Kind::Lines(lines) => {
                lines.done += events;
                if lines.last_line.elapsed() >= LINE_EVERY {
                    lines.last_line = Instant::now();
                    lines.line(&self.label);
                }
            }
        }
    }

    fn end(&mut self) {
        match &mut self.kind {
            Kind::Bar(bar) => {
                if let Some(bar) = bar.take() {
                    bar.finish();
                }
            }
            // A phase without a count (the switch) has said all in its first line.
            Kind::Lines(lines) if lines.total.is_some() || lines.done > 0 => lines.line(&self.label),
            Kind::Lines(_) => {}
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        // An operation that failed midway leaves its bar where it stopped.
        if let Kind::Bar(Some(bar)) = &self.kind {
            bar.abandon();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
