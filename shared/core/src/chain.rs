//! The per-stream SHA-256 hash chain verifier.
//!
//! Each event's hash covers the previous event's hash, so changing any stored
//! field of event *v* breaks the chain at exactly *v*: the verifier names the
//! first version whose stored hash does not match, which is the first tampered
//! (or missing) event.
//!
//! [`verify_chain`] checks one stream held in memory; [`ChainWalker`] and
//! [`verify_all_chains`] check a whole store page by page through the
//! [`StreamScan`] port, whatever the backend. Verifying never repairs: a
//! broken chain is evidence, reported as found.

use crate::envelope::{EventEnvelope, GENESIS_HASH};
use crate::id::StreamId;

/// The first place a stream's chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("hash chain of {stream} broken at version {version}: {reason}")]
pub struct ChainBreak {
    /// The broken stream.
    pub stream: StreamId,
    /// The first version that does not verify.
    pub version: u64,
    /// What is wrong there.
    pub reason: String,
}

/// Why a stored snapshot is not trusted: it is not the one its event's hash covers.
pub const SNAPSHOT_MISMATCH: &str = "stored snapshot does not match the digest its event's hash covers";

/// Verifies a whole stream, given in version order from version 1.
pub fn verify_chain(events: &[EventEnvelope]) -> Result<(), ChainBreak> {
    match events.first() {
        Some(first) => verify_segment(&first.stream_id, None, events),
        None => Ok(()),
    }
}

/// Verifies consecutive events of `stream` chained from `base_hash`, the
/// hash of the event before the first one (ignored when the first is
/// version 1, which chains from the genesis hash). Without a base hash a
/// segment that starts later cannot be checked, and does not verify.
pub fn verify_segment(stream: &StreamId, base_hash: Option<&str>, events: &[EventEnvelope]) -> Result<(), ChainBreak> {
    let Some(first) = events.first() else { return Ok(()) };
    let mut prev = match (first.version, base_hash) {
        (1, _) => GENESIS_HASH.to_owned(),
        (_, Some(base)) => base.to_owned(),
        (version, None) => {
            return Err(ChainBreak {
                stream: stream.clone(),
                version,
                reason: "no hash of the previous event to check from".to_owned(),
            });
        }
    };
    for (event, expected_version) in events.iter().zip(first.version..) {
        if &event.stream_id != stream {
            return Err(ChainBreak {
                stream: stream.clone(),
                version: expected_version,
                reason: format!("event of another stream ({}) in its place", event.stream_id),
            });
        }
        if event.version != expected_version {
            return Err(ChainBreak {
                stream: event.stream_id.clone(),
                version: expected_version,
                reason: format!("missing; next stored version is {}", event.version),
            });
        }
        let recomputed = event.compute_hash(&prev);
        if recomputed != event.hash {
            return Err(ChainBreak {
                stream: event.stream_id.clone(),
                version: event.version,
                reason: "stored hash does not match the event's content".to_owned(),
            });
        }
        prev.clone_from(&event.hash);
    }
    Ok(())
}

/// One stored event as a whole-store scan reads it: either an envelope, or
/// a row too damaged to become one (which is a break at its version too).
#[derive(Debug, Clone, PartialEq)]
// Nearly every scanned row is readable: boxing the large variant would add
// an allocation per event of a whole-store walk to shrink the rare one.
#[allow(clippy::large_enum_variant)]
pub enum ScannedEvent {
    /// A readable event.
    Readable(EventEnvelope),
    /// A row whose fields do not parse.
    Unreadable {
        /// The stream.
        stream: StreamId,
        /// The version.
        version: u64,
        /// What does not parse.
        reason: String,
    },
    /// A readable event stored with a snapshot that is not the one its hash
    /// covers: an edited snapshot, which a command must never decide on.
    TamperedSnapshot(EventEnvelope),
}

impl ScannedEvent {
    /// A stored event and the snapshot stored with it, if any: readable,
    /// unless the snapshot is not the one the event's hash covers. A snapshot
    /// stored before snapshots were hashed (no digest) is a cache nobody
    /// vouches for, which loaders ignore: not a break.
    pub fn stored(event: EventEnvelope, snapshot: Option<&crate::snapshot::Snapshot>) -> Self {
        match (snapshot, event.snapshot_digest.as_deref()) {
            (Some(snapshot), Some(covered)) if snapshot.digest() != covered => Self::TamperedSnapshot(event),
            _ => Self::Readable(event),
        }
    }

    fn position(&self) -> (&StreamId, u64) {
        match self {
            Self::Readable(event) | Self::TamperedSnapshot(event) => (&event.stream_id, event.version),
            Self::Unreadable { stream, version, .. } => (stream, *version),
        }
    }
}

/// A store read stream by stream, each in version order, a page at a time:
/// what a whole-store chain verification needs.
#[async_trait::async_trait]
pub trait StreamScan: Send + Sync {
    /// Up to `limit` events after position `after` (`None`: from the
    /// start), in (stream id, version) order.
    async fn scan_after(
        &self,
        after: Option<&(StreamId, u64)>,
        limit: usize,
    ) -> Result<Vec<ScannedEvent>, crate::store::StoreError>;
}

/// What a whole-store verification found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainReport {
    /// Streams walked.
    pub streams: u64,
    /// Events checked.
    pub events: u64,
    /// The first break of every broken stream, in stream order.
    pub breaks: Vec<ChainBreak>,
}

/// Checks many streams' chains from their events in (stream id, version)
/// order, fed a page at a time: the same rule as [`verify_chain`], without
/// holding a whole stream (or store) in memory.
#[derive(Debug, Default)]
pub struct ChainWalker {
    current: Option<Walk>,
    report: ChainReport,
}

#[derive(Debug)]
struct Walk {
    stream: StreamId,
    next_version: u64,
    prev_hash: String,
    broken: bool,
}

impl ChainWalker {
    /// A walker that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks the next stored event; returns the break it reveals, if it is
    /// its stream's first.
    pub fn push(&mut self, scanned: &ScannedEvent) -> Option<ChainBreak> {
        let (stream, version) = scanned.position();
        self.report.events += 1;
        let starts_stream = self.current.as_ref().is_none_or(|walk| &walk.stream != stream);
        if starts_stream {
            self.report.streams += 1;
            self.current = Some(Walk {
                stream: stream.clone(),
                next_version: 1,
                prev_hash: GENESIS_HASH.to_owned(),
                broken: false,
            });
        }
        let walk = self.current.as_mut()?;
        if walk.broken {
            return None;
        }
        let reason = if version != walk.next_version {
            Some(format!("missing; next stored version is {version}"))
        } else {
            match scanned {
                ScannedEvent::Unreadable { reason, .. } => Some(format!("stored event does not parse: {reason}")),
                ScannedEvent::TamperedSnapshot(_) => Some(SNAPSHOT_MISMATCH.to_owned()),
                ScannedEvent::Readable(event) if event.compute_hash(&walk.prev_hash) != event.hash => {
                    Some("stored hash does not match the event's content".to_owned())
                }
                ScannedEvent::Readable(event) => {
                    walk.prev_hash.clone_from(&event.hash);
                    walk.next_version += 1;
                    None
                }
            }
        };
        let reason = reason?;
        walk.broken = true;
        let broken = ChainBreak {
            stream: stream.clone(),
            version: walk.next_version,
            reason,
        };
        self.report.breaks.push(broken.clone());
        Some(broken)
    }

    /// The report so far.
    pub fn report(&self) -> &ChainReport {
        &self.report
    }

    /// The report.
    pub fn finish(self) -> ChainReport {
        self.report
    }
}

/// Walks every stream's chain in the store, reading the next page while
/// checking the current one; calls `on_break` as breaks are found.
pub async fn verify_all_chains(
    scan: &(impl StreamScan + ?Sized),
    page: usize,
    progress: &mut dyn crate::projection::Progress,
    on_break: &mut (dyn FnMut(&ChainBreak) + Send),
) -> Result<ChainReport, crate::store::StoreError> {
    let page = page.max(1);
    let mut walker = ChainWalker::new();
    let mut current = scan.scan_after(None, page).await?;
    while !current.is_empty() {
        let after = current.last().map(|e| {
            let (stream, version) = e.position();
            (stream.clone(), version)
        });
        let check = async {
            for scanned in &current {
                if let Some(broken) = walker.push(scanned) {
                    on_break(&broken);
                }
            }
        };
        let (_, next) = tokio::join!(check, scan.scan_after(after.as_ref(), page));
        progress.advance(current.len() as u64);
        current = next?;
    }
    Ok(walker.finish())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::envelope::{Metadata, NewEvent, seal};

    fn stream(n: u64) -> Vec<EventEnvelope> {
        let id = StreamId::parse("test-1").expect("valid");
        let events = (0..n)
            .map(|i| NewEvent {
                event_type: "Counted".into(),
                schema: 1,
                data: json!({ "n": i }),
            })
            .collect();
        seal(&id, 0, None, events, &Metadata::default(), 1_700_000_000_000)
    }

    #[test]
    fn an_untouched_chain_verifies() {
        assert_eq!(verify_chain(&stream(5)), Ok(()));
    }

    #[test]
    fn tampered_data_is_named_by_version() {
        let mut events = stream(5);
        events[2].data = json!({ "n": 99 });
        let broken = verify_chain(&events).expect_err("tampered");
        assert_eq!(broken.version, 3);
    }

    #[test]
    fn a_missing_event_is_named() {
        let mut events = stream(5);
        events.remove(1);
        assert_eq!(verify_chain(&events).expect_err("gap").version, 2);
    }

    #[test]
    fn appending_continues_the_chain() {
        let first = stream(2);
        let id = first[0].stream_id.clone();
        let more = seal(
            &id,
            2,
            Some(&first[1].hash),
            vec![NewEvent {
                event_type: "Counted".into(),
                schema: 1,
                data: json!({ "n": 2 }),
            }],
            &Metadata::default(),
            1,
        );
        let all: Vec<_> = first.into_iter().chain(more).collect();
        assert_eq!(verify_chain(&all), Ok(()));
    }

    fn scanned(events: &[EventEnvelope]) -> Vec<ScannedEvent> {
        events.iter().cloned().map(ScannedEvent::Readable).collect()
    }

    #[test]
    fn the_walker_names_the_first_break_of_each_broken_stream_only() {
        let other = StreamId::parse("test-2").expect("valid");
        let mut second = stream(3);
        for event in &mut second {
            event.stream_id = other.clone();
        }
        // Re-seal the second stream under its own id so it verifies.
        let second = seal(
            &other,
            0,
            None,
            second
                .iter()
                .map(|e| NewEvent {
                    event_type: e.event_type.clone(),
                    schema: e.schema,
                    data: e.data.clone(),
                })
                .collect(),
            &Metadata::default(),
            1,
        );
        let mut first = stream(4);
        first[1].data = json!({ "n": 42 });
        first[2].data = json!({ "n": 43 });
        let mut walker = ChainWalker::new();
        for event in scanned(&first).iter().chain(&scanned(&second)) {
            walker.push(event);
        }
        let report = walker.finish();
        assert_eq!((report.streams, report.events), (2, 7));
        assert_eq!(report.breaks.len(), 1, "{report:?}");
        assert_eq!(report.breaks[0].version, 2);
    }

    #[test]
    fn the_walker_reports_an_unreadable_row_and_a_missing_first_version() {
        let events = stream(3);
        let mut walker = ChainWalker::new();
        walker.push(&ScannedEvent::Readable(events[0].clone()));
        walker.push(&ScannedEvent::Unreadable {
            stream: events[1].stream_id.clone(),
            version: 2,
            reason: "bad JSON".into(),
        });
        let late = StreamId::parse("test-9").expect("valid");
        let mut orphan = events[2].clone();
        orphan.stream_id = late;
        walker.push(&ScannedEvent::Readable(orphan));
        let versions: Vec<u64> = walker.finish().breaks.iter().map(|b| b.version).collect();
        assert_eq!(versions, vec![2, 1]);
    }

    #[test]
    fn an_edited_snapshot_breaks_its_event_and_a_covered_one_verifies() {
        let id = StreamId::parse("test-1").expect("valid");
        let snapshot = crate::snapshot::Snapshot {
            version: 2,
            schema: 1,
            state: json!({ "n": 2 }),
        };
        let events = crate::envelope::seal_with_snapshot(
            &id,
            0,
            None,
            (0..2)
                .map(|i| NewEvent {
                    event_type: "Counted".into(),
                    schema: 1,
                    data: json!({ "n": i }),
                })
                .collect(),
            &Metadata::default(),
            1,
            Some(&snapshot),
        );
        assert_eq!(verify_chain(&events), Ok(()), "the digest is part of the chain");
        let mut walker = ChainWalker::new();
        walker.push(&ScannedEvent::stored(events[0].clone(), None));
        walker.push(&ScannedEvent::stored(events[1].clone(), Some(&snapshot)));
        assert!(
            walker.report().breaks.is_empty(),
            "the stored snapshot is the covered one"
        );

        let forged = crate::snapshot::Snapshot {
            state: json!({ "n": 1_000_000 }),
            ..snapshot
        };
        let mut walker = ChainWalker::new();
        walker.push(&ScannedEvent::stored(events[0].clone(), None));
        walker.push(&ScannedEvent::stored(events[1].clone(), Some(&forged)));
        let breaks = walker.finish().breaks;
        assert_eq!(breaks.len(), 1);
        assert_eq!((breaks[0].version, breaks[0].reason.as_str()), (2, SNAPSHOT_MISMATCH));

        let mut stripped = events.clone();
        stripped[1].snapshot_digest = None;
        assert_eq!(
            verify_chain(&stripped)
                .expect_err("dropping the digest changes the hashed content")
                .version,
            2
        );
    }
}
