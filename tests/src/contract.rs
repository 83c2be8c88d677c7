//! The `EventStore` contract suite: the promises of the store port
//! (`tally_core::store`), checked through the port alone so every adapter
//! runs the same cases unchanged.
//!
//! An adapter's test file wraps a fresh store in a [`StoreContract`] and
//! calls one case per `#[tokio::test]`; the only adapter-specific code it
//! brings is the hook that tampers with one stored event
//! ([`StoreContract::tampered_event_is_named_by_version`]). Every case writes
//! to streams whose ids carry a fresh UUIDv7, so cases never see each other's
//! events even when they share a database or a table. The suite never cleans
//! up and never relies on a store being empty.
//!
//! The events are those of a tiny counter decider defined here, so the suite
//! depends on the core only, never on the example domain.
//!
//! What an adapter's test file must bring: a store that keeps the snapshots
//! it is given (the DynamoDB store needs a snapshot interval configured), the
//! tamper hook, and a multi-thread tokio runtime for the race cases, whose
//! writers are spawned tasks.

use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tally_core::{
    AppendBatch, AppendOutcome, At, Decider, EventEnvelope, EventStore, IdempotencyRecord, Metadata, Snapshot,
    StoreError, StreamAppend, StreamId, Upcasters, aggregate_at, encode_event, fold_events, load_aggregate, seal,
    seal_with_snapshot, verify_chain,
};
use tokio::sync::Barrier;
use uuid::Uuid;

/// When the suite's events happen, unless a case needs several instants.
const T0_MS: i64 = 1_700_000_000_000;

/// How many writers race for one version in the concurrency case.
const RACING_WRITERS: usize = 20;

/// How many versions they race for, one after the other.
const RACING_ROUNDS: u64 = 3;

// ---- a decider small enough to read at a glance ----------------------------

/// Adds numbers. The state keeps the last amount too, so replaying events out
/// of order or twice gives a different state.
struct Counter;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct CounterState {
    total: i64,
    events: u64,
    last: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
enum CounterEvent {
    Added { amount: i64 },
}

static NO_UPCASTERS: LazyLock<Upcasters> = LazyLock::new(Upcasters::new);

impl Decider for Counter {
    type State = CounterState;
    type Event = CounterEvent;
    type Command = i64;
    type Error = std::convert::Infallible;

    const CATEGORY: &'static str = "counter";
    const STATE_SCHEMA: u32 = 1;

    fn evolve(state: CounterState, event: &CounterEvent) -> CounterState {
        let CounterEvent::Added { amount } = event;
        CounterState {
            total: state.total + amount,
            events: state.events + 1,
            last: Some(*amount),
        }
    }

    fn decide(_: &CounterState, amount: &i64) -> Result<Vec<CounterEvent>, Self::Error> {
        Ok(vec![CounterEvent::Added { amount: *amount }])
    }

    fn event_schema(_: &str) -> u32 {
        1
    }

    fn upcasters() -> &'static Upcasters {
        &NO_UPCASTERS
    }
}

// ---- the suite ---------------------------------------------------------------

/// One stored event to overwrite behind the store's back, as an attacker or
/// a buggy migration would: the adapter's tamper hook writes `data` into the
/// stored payload of `stream_id` at `version` and leaves its hash alone.
#[derive(Debug, Clone, PartialEq)]
pub struct Tampering {
    /// The stream holding the event.
    pub stream_id: StreamId,
    /// The event's version.
    pub version: u64,
    /// The payload to store instead of the original one.
    pub data: Value,
}

/// What a snapshot-tampering hook rewrites: the stored snapshot state of one event.
#[derive(Debug, Clone)]
pub struct SnapshotTampering {
    /// The stream holding the event.
    pub stream_id: StreamId,
    /// The event's version.
    pub version: u64,
    /// The snapshot state to store instead of the original one.
    pub state: Value,
}

/// The contract cases, run against one store.
pub struct StoreContract {
    store: Arc<dyn EventStore>,
}

impl StoreContract {
    /// The suite over `store`. It may be shared with other cases or hold
    /// other data: every case uses streams of its own.
    pub fn new(store: impl EventStore + 'static) -> Self {
        Self { store: Arc::new(store) }
    }

    /// A new stream is appended to with expected version 0 and loads back
    /// exactly as sealed (ids, metadata, timestamps, hashes); an unknown
    /// stream loads empty; the next append continues at the head.
    pub async fn append_then_load_back(&self) {
        let stream = unique_stream("append");
        let unknown = self.store.load(&unique_stream("unknown")).await.expect("load unknown");
        assert_eq!(unknown, Default::default(), "an unknown stream loads empty");

        let first = sealed_after(&stream, None, &[1, 2, 3], T0_MS);
        let outcome = self.append(vec![plain(&stream, 0, first.clone())], None).await;
        assert_eq!(
            outcome.expect("append to a new stream").heads,
            vec![(stream.clone(), 3)]
        );

        let loaded = self.store.load(&stream).await.expect("load");
        assert_eq!(loaded.snapshot, None);
        assert_eq!(loaded.events, first, "events load back exactly as sealed");
        assert_eq!(loaded.version(), 3);
        assert_eq!(loaded.head_hash(), Some(first[2].hash.as_str()));

        let next = sealed_after(&stream, first.last(), &[4], T0_MS + 1);
        let outcome = self.append(vec![plain(&stream, 3, next.clone())], None).await;
        assert_eq!(outcome.expect("append at the head").heads, vec![(stream.clone(), 4)]);
        let all = self.store.read_range(&stream, 1, None).await.expect("read");
        assert_eq!(all, [first, next].concat());
    }

    /// An append whose expected version is behind, ahead of, or 0 on an
    /// existing stream fails with `WrongExpectedVersion` naming the stream
    /// and the version it expected, and writes nothing.
    pub async fn wrong_expected_version_writes_nothing(&self) {
        let stream = unique_stream("conflict");
        let stored = sealed_after(&stream, None, &[1, 2], T0_MS);
        self.append(vec![plain(&stream, 0, stored.clone())], None)
            .await
            .expect("seed");

        // Behind (0, 1) and ahead of (3, 7) the head at 2. The refused events
        // need not chain: the version condition alone must stop them.
        for expected in [0, 1, 3, 7] {
            let stale = seal(&stream, expected, None, vec![added(99)], &metadata(), T0_MS);
            let refused = self.append(vec![plain(&stream, expected, stale)], None).await;
            assert_wrong_expected_version(refused, &stream, expected);
        }
        let after = self.store.read_range(&stream, 1, None).await.expect("read");
        assert_eq!(after, stored, "refused appends write nothing");
    }

    /// `RACING_WRITERS` tasks append at the same expected version at once,
    /// round after round: exactly one wins each version, every other gets
    /// `WrongExpectedVersion`, and the winner's event is the one stored.
    pub async fn concurrent_appends_have_one_winner(&self) {
        let stream = unique_stream("race");
        let mut head: Option<EventEnvelope> = None;
        for round in 0..RACING_ROUNDS {
            let start = Arc::new(Barrier::new(RACING_WRITERS));
            let mut writers = Vec::with_capacity(RACING_WRITERS);
            for writer in 0..RACING_WRITERS {
                let (store, start, stream) = (Arc::clone(&self.store), Arc::clone(&start), stream.clone());
                let amount = (round as i64) * 1_000 + writer as i64;
                let events = sealed_after(&stream, head.as_ref(), &[amount], T0_MS);
                writers.push(tokio::spawn(async move {
                    start.wait().await;
                    let batch = AppendBatch {
                        streams: vec![plain(&stream, round, events.clone())],
                        idempotency: None,
                    };
                    (events, store.append(batch).await)
                }));
            }
            let mut winners = Vec::new();
            for writer in writers {
                let (events, outcome) = writer.await.expect("writer task");
                match outcome {
                    Ok(outcome) => {
                        assert_eq!(outcome.heads, vec![(stream.clone(), round + 1)]);
                        winners.extend(events);
                    }
                    Err(StoreError::WrongExpectedVersion {
                        stream: named,
                        expected,
                        ..
                    }) => {
                        assert_eq!(
                            (named, expected),
                            (stream.clone(), round),
                            "the loser is told which stream"
                        );
                    }
                    Err(other) => panic!("a racing append failed with {other:?}, not a version conflict"),
                }
            }
            assert_eq!(winners.len(), 1, "exactly one writer wins version {}", round + 1);
            let stored = self.store.read_range(&stream, round + 1, None).await.expect("read");
            assert_eq!(stored, winners, "the stored event is the winner's");
            head = winners.pop();
        }
        let all = self.store.read_range(&stream, 1, None).await.expect("read");
        assert_eq!(versions(&all), (1..=RACING_ROUNDS).collect::<Vec<_>>());
        verify_chain(&all).expect("the winners form one chain");
    }

    /// A batch over three streams whose second has a stale expected version
    /// writes nothing on any stream (nor its idempotency record); the same
    /// batch with the right version writes all three.
    pub async fn multi_stream_batch_is_atomic(&self) {
        let (first, second, third) = (
            unique_stream("atomic"),
            unique_stream("atomic"),
            unique_stream("atomic"),
        );
        let seeded = sealed_after(&second, None, &[1], T0_MS);
        self.append(vec![plain(&second, 0, seeded.clone())], None)
            .await
            .expect("seed the second stream");

        let first_events = sealed_after(&first, None, &[10, 11], T0_MS);
        let third_events = sealed_after(&third, None, &[30], T0_MS);
        let stale_second = sealed_after(&second, None, &[20], T0_MS);
        let record = idempotency_record("atomic", "first");
        let refused = self
            .append(
                vec![
                    plain(&first, 0, first_events.clone()),
                    plain(&second, 0, stale_second),
                    plain(&third, 0, third_events.clone()),
                ],
                Some(record.clone()),
            )
            .await;
        assert_wrong_expected_version(refused, &second, 0);
        for (stream, expected) in [(&first, vec![]), (&second, seeded.clone()), (&third, vec![])] {
            let stored = self.store.read_range(stream, 1, None).await.expect("read");
            assert_eq!(stored, expected, "the refused batch wrote nothing on {stream}");
        }
        let kept = self.store.idempotency_record(&record.key).await.expect("read record");
        assert_eq!(kept, None, "the refused batch stored no idempotency record");

        let second_events = sealed_after(&second, seeded.last(), &[20], T0_MS);
        let outcome = self
            .append(
                vec![
                    plain(&first, 0, first_events.clone()),
                    plain(&second, 1, second_events.clone()),
                    plain(&third, 0, third_events.clone()),
                ],
                None,
            )
            .await
            .expect("the corrected batch");
        assert_eq!(
            outcome.heads,
            vec![(first.clone(), 2), (second.clone(), 2), (third.clone(), 1)]
        );
        for (stream, expected) in [
            (&first, first_events),
            (&second, [seeded, second_events].concat()),
            (&third, third_events),
        ] {
            assert_eq!(self.store.read_range(stream, 1, None).await.expect("read"), expected);
        }
    }

    /// `read_range(from, to)` includes both ends, runs to the head when `to`
    /// is `None`, clamps `to` beyond the head, and is empty beyond the head
    /// or on an unknown stream.
    pub async fn read_range_is_inclusive_and_bounded(&self) {
        let stream = unique_stream("range");
        let stored = sealed_after(&stream, None, &[1, 2, 3, 4, 5], T0_MS);
        self.append(vec![plain(&stream, 0, stored.clone())], None)
            .await
            .expect("seed");

        let cases: [(u64, Option<u64>, &[u64]); 8] = [
            (1, None, &[1, 2, 3, 4, 5]),
            (2, Some(4), &[2, 3, 4]),
            (3, None, &[3, 4, 5]),
            (1, Some(1), &[1]),
            (5, Some(5), &[5]),
            (4, Some(100), &[4, 5]),
            (6, None, &[]),
            (6, Some(10), &[]),
        ];
        for (from, to, expected) in cases {
            let read = self.store.read_range(&stream, from, to).await.expect("read range");
            assert_eq!(versions(&read), expected, "read_range({from}, {to:?})");
            let whole: Vec<_> = stored
                .iter()
                .filter(|e| expected.contains(&e.version))
                .cloned()
                .collect();
            assert_eq!(read, whole, "read_range({from}, {to:?}) returns the stored envelopes");
        }
        let unknown = self.store.read_range(&unique_stream("unknown"), 1, None).await;
        assert_eq!(unknown.expect("read unknown"), vec![]);
    }

    /// `read_until(at)` returns the events appended at or before `at`, in
    /// order: nothing before the first, every event of a batch sealed at the
    /// same instant, everything at or after the last.
    pub async fn read_until_filters_by_time(&self) {
        let stream = unique_stream("time");
        let at = |seconds: i64| T0_MS + seconds * 1_000;
        let first = sealed_after(&stream, None, &[1], at(0));
        let second = sealed_after(&stream, first.last(), &[2, 3], at(10));
        let third = sealed_after(&stream, second.last(), &[4], at(20));
        for (expected, events) in [(0, &first), (1, &second), (3, &third)] {
            self.append(vec![plain(&stream, expected, events.clone())], None)
                .await
                .expect("append");
        }

        let cases: [(i64, &[u64]); 7] = [
            (at(0) - 1, &[]),
            (at(0), &[1]),
            (at(10) - 1, &[1]),
            (at(10), &[1, 2, 3]),
            (at(15), &[1, 2, 3]),
            (at(20), &[1, 2, 3, 4]),
            (i64::MAX, &[1, 2, 3, 4]),
        ];
        for (until, expected) in cases {
            let read = self.store.read_until(&stream, until).await.expect("read until");
            assert_eq!(
                versions(&read),
                expected,
                "read_until(T0 + {} ms)",
                until.saturating_sub(T0_MS)
            );
        }
        let unknown = self.store.read_until(&unique_stream("unknown"), i64::MAX).await;
        assert_eq!(unknown.expect("read unknown"), vec![]);
    }

    /// `load` returns the newest snapshot and the events from its version
    /// (inclusive) to the head; `load_aggregate` starts from that snapshot
    /// and reaches the state a full replay reaches.
    pub async fn load_starts_at_newest_snapshot(&self) {
        let stream = unique_stream("snapshot");
        // States depend on the payloads only: a draft gives every version's.
        let draft = sealed_after(&stream, None, &[1, 2, 3, 4, 5, 6], T0_MS);
        let state_at = |version: u64| {
            let upto = draft.iter().filter(|e| e.version <= version);
            fold_events::<Counter>(CounterState::default(), upto).expect("fold")
        };
        let older = counter_snapshot(2, &state_at(2));
        let newest = counter_snapshot(4, &state_at(4));
        let first = sealed_with(&stream, None, &[1, 2], T0_MS, Some(&older));
        let second = sealed_with(&stream, first.last(), &[3, 4], T0_MS + 10, Some(&newest));
        let third = sealed_after(&stream, second.last(), &[5, 6], T0_MS + 20);
        let all = [first.clone(), second.clone(), third.clone()].concat();
        self.append(vec![with_snapshot(&stream, 0, first, older.clone())], None)
            .await
            .expect("append with snapshot at 2");
        self.append(vec![with_snapshot(&stream, 2, second, newest.clone())], None)
            .await
            .expect("append with snapshot at 4");
        self.append(vec![plain(&stream, 4, third)], None)
            .await
            .expect("append without snapshot");

        let loaded = self.store.load(&stream).await.expect("load");
        assert_eq!(loaded.snapshot, Some(newest), "the newest snapshot");
        assert_eq!(
            versions(&loaded.events),
            [4, 5, 6],
            "events from the snapshot's version on"
        );
        assert_eq!(loaded.events, all[3..].to_vec());
        assert_eq!(loaded.version(), 6);
        assert_eq!(
            loaded.base_hash.as_deref(),
            Some(all[2].hash.as_str()),
            "the hash the loaded events chain from"
        );
        assert_eq!(loaded.verify(&stream), Ok(()), "what a command decides on verifies");

        let aggregate = load_aggregate::<Counter>(self.store.as_ref(), &stream)
            .await
            .expect("load aggregate");
        assert_eq!(aggregate.state, state_at(6), "snapshot + later events = full replay");
        assert_eq!(aggregate.snapshot_version, 4, "the aggregate started from the snapshot");
        assert_eq!(aggregate.version, 6);
        assert_eq!(aggregate.head_hash.as_deref(), all.last().map(|e| e.hash.as_str()));

        // Time travel starts from the newest snapshot at or before the point.
        let at_three = self.store.load_at(&stream, At::Version(3)).await.expect("load at 3");
        assert_eq!(at_three.snapshot, Some(older), "the snapshot at or before version 3");
        assert_eq!(versions(&at_three.events), [2, 3]);
        assert_eq!(at_three.base_hash.as_deref(), Some(all[0].hash.as_str()));
        for (at, version) in [
            (At::Version(3), 3),
            (At::Version(99), 6),
            (At::Time(T0_MS + 15), 4),
            (At::Time(T0_MS + 10), 4),
            (At::Time(T0_MS), 2),
        ] {
            let then = aggregate_at::<Counter>(self.store.as_ref(), &stream, at)
                .await
                .expect("aggregate at")
                .expect("events by then");
            assert_eq!(then.aggregate.version, version, "{at:?}");
            assert_eq!(then.aggregate.state, state_at(version), "{at:?}");
        }
        let before = aggregate_at::<Counter>(self.store.as_ref(), &stream, At::Time(T0_MS - 1))
            .await
            .expect("aggregate before the first event");
        assert!(before.is_none(), "no state before the first event");
    }

    /// A snapshot edited behind the store's back (the adapter's hook) is
    /// never decided on: the load does not verify, `load_aggregate` and
    /// `aggregate_at` replay from version 1 and reach the true state.
    pub async fn tampered_snapshot_is_never_decided_on<F, Fut>(&self, tamper: F)
    where
        F: FnOnce(SnapshotTampering) -> Fut,
        Fut: Future<Output = ()>,
    {
        let stream = unique_stream("forged");
        let draft = sealed_after(&stream, None, &[1, 2, 3], T0_MS);
        let truth = fold_events::<Counter>(CounterState::default(), &draft).expect("fold");
        let snapshot = counter_snapshot(3, &truth);
        let events = sealed_with(&stream, None, &[1, 2, 3], T0_MS, Some(&snapshot));
        self.append(vec![with_snapshot(&stream, 0, events, snapshot)], None)
            .await
            .expect("append with snapshot");
        let forged = CounterState {
            total: 1_000_000,
            ..truth.clone()
        };
        tamper(SnapshotTampering {
            stream_id: stream.clone(),
            version: 3,
            state: serde_json::to_value(&forged).expect("state serialises"),
        })
        .await;

        let loaded = self.store.load(&stream).await.expect("load");
        let broken = loaded.verify(&stream).expect_err("an edited snapshot does not verify");
        assert_eq!(broken.version, 3, "{}", broken.reason);
        let aggregate = load_aggregate::<Counter>(self.store.as_ref(), &stream)
            .await
            .expect("a forged snapshot is a cache miss, not an error");
        assert_eq!(aggregate.state, truth, "decided on the replay, not the forged snapshot");
        assert_eq!((aggregate.version, aggregate.snapshot_version), (3, 0));
        let then = aggregate_at::<Counter>(self.store.as_ref(), &stream, At::Version(3))
            .await
            .expect("aggregate at")
            .expect("events by then");
        assert_eq!(then.aggregate.state, truth, "time travel ignores it too");
    }

    /// A snapshot of an unknown schema, or whose state does not deserialise,
    /// is a cache miss: `load_aggregate` replays the whole stream and gets
    /// the same aggregate as from a stream without snapshots.
    pub async fn unusable_snapshot_falls_back_to_replay(&self) {
        let (plain_stream, unknown_schema, corrupt_state) = (
            unique_stream("replay"),
            unique_stream("replay"),
            unique_stream("replay"),
        );
        // Deserialisable but wrong: were the schema ignored, it would show.
        let misleading = serde_json::to_value(CounterState {
            total: 1_000_000,
            events: 3,
            last: Some(-1),
        })
        .expect("state serialises");
        let unusable = [
            (None, &plain_stream),
            (Some(snapshot(3, 99, misleading)), &unknown_schema),
            (
                Some(snapshot(3, Counter::STATE_SCHEMA, json!({ "total": "three" }))),
                &corrupt_state,
            ),
        ];
        for (snapshot, stream) in &unusable {
            let first = sealed_with(stream, None, &[1, 2, 3], T0_MS, snapshot.as_ref());
            let second = sealed_after(stream, first.last(), &[4, 5], T0_MS);
            let mut append = plain(stream, 0, first);
            append.snapshot = snapshot.clone();
            self.append(vec![append], None).await.expect("append with snapshot");
            self.append(vec![plain(stream, 3, second)], None)
                .await
                .expect("append after snapshot");
            let loaded = self.store.load(stream).await.expect("load");
            assert_eq!(
                loaded.snapshot.is_some(),
                snapshot.is_some(),
                "{stream} loads its snapshot"
            );
        }

        let replayed = load_aggregate::<Counter>(self.store.as_ref(), &plain_stream)
            .await
            .expect("load without snapshot");
        assert_eq!(
            replayed.state,
            CounterState {
                total: 15,
                events: 5,
                last: Some(5)
            }
        );
        for stream in [&unknown_schema, &corrupt_state] {
            let fallback = load_aggregate::<Counter>(self.store.as_ref(), stream)
                .await
                .expect("an unusable snapshot is not an error");
            assert_eq!(fallback.state, replayed.state, "{stream} replays from version 1");
            assert_eq!((fallback.version, fallback.snapshot_version), (5, 0));
            let head = self.store.read_range(stream, 5, Some(5)).await.expect("read head");
            assert_eq!(fallback.head_hash.as_deref(), head.first().map(|e| e.hash.as_str()));
        }
    }

    /// A snapshot must describe the batch's last event: one of an earlier or
    /// a later version is `InvalidAppend`, and nothing is written.
    pub async fn snapshot_must_describe_last_event(&self) {
        let stream = unique_stream("snapshot-check");
        let events = sealed_after(&stream, None, &[1, 2, 3], T0_MS);
        let state = fold_events::<Counter>(CounterState::default(), &events).expect("fold");
        for wrong_version in [2, 4] {
            let append = with_snapshot(&stream, 0, events.clone(), counter_snapshot(wrong_version, &state));
            match self.append(vec![append], None).await {
                Err(StoreError::InvalidAppend(_)) => {}
                other => panic!("a snapshot at version {wrong_version} of 3 gave {other:?}, not InvalidAppend"),
            }
        }
        assert_eq!(self.store.read_range(&stream, 1, None).await.expect("read"), vec![]);

        let right_snapshot = counter_snapshot(3, &state);
        let covered = sealed_with(&stream, None, &[1, 2, 3], T0_MS, Some(&right_snapshot));
        let uncovered = with_snapshot(&stream, 0, events, right_snapshot.clone());
        match self.append(vec![uncovered], None).await {
            Err(StoreError::InvalidAppend(_)) => {}
            other => panic!("a snapshot its event's hash does not cover gave {other:?}, not InvalidAppend"),
        }
        let right = with_snapshot(&stream, 0, covered, right_snapshot);
        self.append(vec![right], None)
            .await
            .expect("a snapshot of the last event");
        let loaded = self.store.load(&stream).await.expect("load");
        assert_eq!(loaded.snapshot, Some(counter_snapshot(3, &state)));
    }

    /// An idempotency record is stored in the same transaction as the
    /// events: not at all when the append fails, readable once it succeeds;
    /// a second append with the same key is `DuplicateIdempotencyKey` and
    /// writes no events; an expired record is not returned.
    pub async fn idempotency_record_is_stored_with_events(&self) {
        let (stream, other_stream) = (unique_stream("idem"), unique_stream("idem"));
        let record = idempotency_record("idem", "first");

        let stale = seal(&stream, 1, None, vec![added(2)], &metadata(), T0_MS);
        let refused = self.append(vec![plain(&stream, 1, stale)], Some(record.clone())).await;
        assert_wrong_expected_version(refused, &stream, 1);
        let none = self.store.idempotency_record(&record.key).await.expect("read record");
        assert_eq!(none, None, "a failed append stores no record");

        let events = sealed_after(&stream, None, &[1], T0_MS);
        self.append(vec![plain(&stream, 0, events.clone())], Some(record.clone()))
            .await
            .expect("append with a record");
        let stored = self.store.idempotency_record(&record.key).await.expect("read record");
        assert_eq!(stored, Some(record.clone()));

        let replay = IdempotencyRecord {
            request_hash: "another-request".into(),
            response: json!({ "other": true }),
            ..record.clone()
        };
        let other_events = sealed_after(&other_stream, None, &[7], T0_MS);
        match self
            .append(vec![plain(&other_stream, 0, other_events)], Some(replay))
            .await
        {
            Err(StoreError::DuplicateIdempotencyKey { key }) => assert_eq!(key, record.key),
            other => panic!("a reused idempotency key gave {other:?}, not DuplicateIdempotencyKey"),
        }
        let other = self.store.read_range(&other_stream, 1, None).await.expect("read");
        assert_eq!(other, vec![], "the duplicate key's append wrote no events");
        let kept = self.store.idempotency_record(&record.key).await.expect("read record");
        assert_eq!(kept, Some(record), "the first request's record stays");
        let read = self.store.read_range(&stream, 1, None).await.expect("read");
        assert_eq!(read, events);

        let unknown = self.store.idempotency_record(&format!("idem-{}", Uuid::now_v7())).await;
        assert_eq!(unknown.expect("read unknown record"), None);

        let expired_stream = unique_stream("idem");
        let expired = IdempotencyRecord {
            expires_at_ms: (now_ms() / 1_000 - 60) * 1_000,
            ..idempotency_record("idem", "expired")
        };
        let events = sealed_after(&expired_stream, None, &[1], T0_MS);
        self.append(vec![plain(&expired_stream, 0, events)], Some(expired.clone()))
            .await
            .expect("append with an expired record");
        let gone = self.store.idempotency_record(&expired.key).await.expect("read record");
        assert_eq!(gone, None, "an expired record is forgotten");
    }

    /// After appends of one event, several events, a multi-stream batch and a
    /// batch with a snapshot, every stream's stored chain verifies from
    /// version 1.
    pub async fn hash_chain_verifies_across_batches(&self) {
        let (stream, neighbour) = (unique_stream("chain"), unique_stream("chain"));
        let one = sealed_after(&stream, None, &[1], T0_MS);
        let several = sealed_after(&stream, one.last(), &[2, 3, 4], T0_MS + 1);
        let shared = sealed_after(&stream, several.last(), &[5], T0_MS + 2);
        let neighbour_events = sealed_after(&neighbour, None, &[1, 2], T0_MS + 2);
        let draft = sealed_after(&stream, shared.last(), &[6, 7], T0_MS + 3);
        let before_last = [one.clone(), several.clone(), shared.clone(), draft].concat();
        let state = fold_events::<Counter>(CounterState::default(), &before_last).expect("fold");
        let last = sealed_with(
            &stream,
            shared.last(),
            &[6, 7],
            T0_MS + 3,
            Some(&counter_snapshot(7, &state)),
        );
        let all = [one.clone(), several.clone(), shared.clone(), last.clone()].concat();

        self.append(vec![plain(&stream, 0, one)], None)
            .await
            .expect("one event");
        self.append(vec![plain(&stream, 1, several)], None)
            .await
            .expect("several events");
        self.append(
            vec![plain(&stream, 4, shared), plain(&neighbour, 0, neighbour_events)],
            None,
        )
        .await
        .expect("multi-stream batch");
        self.append(vec![with_snapshot(&stream, 5, last, counter_snapshot(7, &state))], None)
            .await
            .expect("batch with snapshot");

        for stream in [&stream, &neighbour] {
            let stored = self.store.read_range(stream, 1, None).await.expect("read");
            assert!(!stored.is_empty());
            assert_eq!(verify_chain(&stored), Ok(()), "{stream}'s chain");
        }
        assert_eq!(self.store.read_range(&stream, 1, None).await.expect("read"), all);
    }

    /// Overwriting one stored event's payload behind the store's back (the
    /// adapter's `tamper` hook) breaks the chain at exactly that version.
    pub async fn tampered_event_is_named_by_version<F, Fut>(&self, tamper: F)
    where
        F: FnOnce(Tampering) -> Fut,
        Fut: Future<Output = ()>,
    {
        let stream = unique_stream("tamper");
        let first = sealed_after(&stream, None, &[1, 2], T0_MS);
        let second = sealed_after(&stream, first.last(), &[3, 4, 5], T0_MS + 1);
        self.append(vec![plain(&stream, 0, first)], None).await.expect("append");
        self.append(vec![plain(&stream, 2, second)], None)
            .await
            .expect("append");

        let forged = json!({ "amount": 3_000 });
        tamper(Tampering {
            stream_id: stream.clone(),
            version: 3,
            data: forged.clone(),
        })
        .await;

        let stored = self.store.read_range(&stream, 1, None).await.expect("read");
        assert_eq!(stored[2].data, forged, "the tamper hook changed the stored payload");
        let broken = verify_chain(&stored).expect_err("a tampered chain does not verify");
        assert_eq!((broken.stream, broken.version), (stream, 3), "{}", broken.reason);
        assert_eq!(verify_chain(&stored[..2]), Ok(()), "the events before it still verify");
    }

    async fn append(
        &self,
        streams: Vec<StreamAppend>,
        idempotency: Option<IdempotencyRecord>,
    ) -> Result<AppendOutcome, StoreError> {
        self.store.append(AppendBatch { streams, idempotency }).await
    }
}

// ---- building blocks ---------------------------------------------------------

/// A stream no other case (or run) uses: `counter-<category>-<UUIDv7>`.
fn unique_stream(category: &str) -> StreamId {
    StreamId::of(Counter::CATEGORY, &format!("{category}-{}", Uuid::now_v7().simple())).expect("a valid stream id")
}

fn metadata() -> Metadata {
    Metadata {
        correlation_id: Some("corr-1".into()),
        causation_id: Some("cmd-1".into()),
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        actor: Some("contract-suite".into()),
        command_id: Some("cmd-1".into()),
        source: None,
    }
}

fn added(amount: i64) -> tally_core::NewEvent {
    encode_event::<Counter>(&CounterEvent::Added { amount }).expect("a counter event encodes")
}

/// `amounts` as counter events sealed after `previous` (the stream's head).
fn sealed_after(
    stream: &StreamId,
    previous: Option<&EventEnvelope>,
    amounts: &[i64],
    at_ms: i64,
) -> Vec<EventEnvelope> {
    sealed_with(stream, previous, amounts, at_ms, None)
}

/// [`sealed_after`], with `snapshot` (the state after the last amount)
/// covered by the last event's hash.
fn sealed_with(
    stream: &StreamId,
    previous: Option<&EventEnvelope>,
    amounts: &[i64],
    at_ms: i64,
    snapshot: Option<&Snapshot>,
) -> Vec<EventEnvelope> {
    seal_with_snapshot(
        stream,
        previous.map_or(0, |e| e.version),
        previous.map(|e| e.hash.as_str()),
        amounts.iter().copied().map(added).collect(),
        &metadata(),
        at_ms,
        snapshot,
    )
}

fn plain(stream: &StreamId, expected_version: u64, events: Vec<EventEnvelope>) -> StreamAppend {
    StreamAppend {
        stream_id: stream.clone(),
        expected_version,
        events,
        snapshot: None,
        view: None,
    }
}

fn with_snapshot(
    stream: &StreamId,
    expected_version: u64,
    events: Vec<EventEnvelope>,
    snapshot: Snapshot,
) -> StreamAppend {
    StreamAppend {
        snapshot: Some(snapshot),
        ..plain(stream, expected_version, events)
    }
}

fn snapshot(version: u64, schema: u32, state: Value) -> Snapshot {
    Snapshot { version, schema, state }
}

fn counter_snapshot(version: u64, state: &CounterState) -> Snapshot {
    snapshot(
        version,
        Counter::STATE_SCHEMA,
        serde_json::to_value(state).expect("state serialises"),
    )
}

/// A live record for a fresh key. It expires on a whole second: DynamoDB
/// keeps the expiry as a TTL attribute in epoch seconds, and the record must
/// read back exactly as stored.
fn idempotency_record(prefix: &str, request: &str) -> IdempotencyRecord {
    IdempotencyRecord {
        key: format!("{prefix}-{}", Uuid::now_v7()),
        request_hash: format!("hash-of-{request}"),
        status: 201,
        response: json!({ "request": request, "version": 1 }),
        expires_at_ms: (now_ms() / 1_000 + 3_600) * 1_000,
    }
}

fn now_ms() -> i64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970");
    i64::try_from(since_epoch.as_millis()).expect("ms since epoch fit i64")
}

fn versions(events: &[EventEnvelope]) -> Vec<u64> {
    events.iter().map(|e| e.version).collect()
}

#[track_caller]
fn assert_wrong_expected_version(outcome: Result<AppendOutcome, StoreError>, stream: &StreamId, expected: u64) {
    match outcome {
        Err(StoreError::WrongExpectedVersion {
            stream: named,
            expected: named_expected,
            ..
        }) => assert_eq!(
            (&named, named_expected),
            (stream, expected),
            "the conflict names the stream and its expected version"
        ),
        other => panic!("expected WrongExpectedVersion on {stream} at {expected}, got {other:?}"),
    }
}
