//! Anchored stream heads: evidence of every stream's head kept where the
//! event store's writers cannot rewrite it.
//!
//! A hash chain proves the order of a stream's events, but not that its end
//! is still there: whoever can write the events table can delete a stream's
//! last events, delete a whole stream, or rewrite a stream from version 1
//! with freshly computed hashes, and every chain still verifies. An
//! [`Anchor`] records, at one moment, every stream's head as a leaf
//! `(stream, version, hash)`, sorted by stream, and a Merkle root over the
//! leaves (RFC 6962 shape, SHA-256 with a `0x00` prefix for leaves and `0x01`
//! for nodes, so a node can never pass for a leaf). Each anchor names the
//! digest of the one before it, so the anchors chain too, and an
//! [`InclusionProof`] lets an operator check one stream against the root
//! without the other leaves.
//!
//! [`HeadWalker`] reads a store's events (in any stream order; within a
//! stream, by version) into current heads, and [`compare`] names each
//! anchored stream that is now [`Finding::Deleted`], [`Finding::Truncated`]
//! or [`Finding::Rechained`].
//!
//! This module is pure: no clock, no I/O, no AWS. Where anchors are kept
//! (an append-only file, an S3 bucket with Object Lock) is the adapters'
//! business. It never repairs anything: a finding is evidence, reported.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::chain::ScannedEvent;
use crate::id::StreamId;

/// The format of the anchor documents this code writes and reads.
pub const ANCHOR_FORMAT: u32 = 1;

/// Domain-separation prefix of a Merkle leaf hash.
const LEAF_PREFIX: u8 = 0x00;
/// Domain-separation prefix of a Merkle node hash.
const NODE_PREFIX: u8 = 0x01;
/// What an anchor's digest is taken over, before its JSON: a digest of an
/// anchor can never be mistaken for a Merkle hash or an event hash.
const DIGEST_DOMAIN: &[u8] = b"tally-anchor-v1\n";

/// Why an anchor, an anchor log or a proof cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnchorError {
    /// The root does not match the leaves: the document was changed after it
    /// was written. Refuse it; the anchors kept elsewhere decide.
    #[error("anchor {position}: its root {stored} does not match its leaves ({computed})")]
    RootMismatch {
        /// Which anchor (1-based line or object order).
        position: usize,
        /// The root written in it.
        stored: String,
        /// The root of its leaves.
        computed: String,
    },
    /// The leaves are not sorted by stream, or a stream appears twice.
    #[error("anchor {position}: leaves out of order or duplicated at {stream}")]
    UnsortedLeaves {
        /// Which anchor.
        position: usize,
        /// The first leaf out of place.
        stream: StreamId,
    },
    /// An anchor does not name its predecessor's digest: one was changed,
    /// removed or inserted. Refuse the log.
    #[error("anchor {position}: names previous anchor {found:?}, but the one before it has digest {expected:?}")]
    BrokenLog {
        /// Which anchor.
        position: usize,
        /// The digest of the anchor before it (`None` for the first).
        expected: Option<String>,
        /// The digest it names.
        found: Option<String>,
    },
    /// A format this code does not know.
    #[error("anchor {position}: format {format}, this tally reads format {ANCHOR_FORMAT}")]
    UnknownFormat {
        /// Which anchor.
        position: usize,
        /// Its format.
        format: u32,
    },
    /// A proof does not lead from its leaf to the root it claims.
    #[error("the inclusion proof of {stream} does not lead to root {root}")]
    ProofMismatch {
        /// The stream the proof is for.
        stream: StreamId,
        /// The root it should reach.
        root: String,
    },
    /// A stream's head event does not parse, so its hash cannot be anchored.
    #[error("the head of {stream} (version {version}) does not parse: it cannot be anchored")]
    UnreadableHead {
        /// The stream.
        stream: StreamId,
        /// Its head version.
        version: u64,
    },
}

/// One stream's head, as anchored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorLeaf {
    /// The stream.
    pub stream_id: StreamId,
    /// Its head version (the number of events).
    pub version: u64,
    /// The chain hash of the event at that version (hex).
    pub hash: String,
}

impl AnchorLeaf {
    /// The leaf's Merkle hash: `SHA-256(0x00 || stream || 0x00 || version || 0x00 || hash)`.
    /// Stream ids are `[A-Za-z0-9_-]` and the rest is digits and hex, so the
    /// zero bytes make the encoding unambiguous.
    fn merkle_hash(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update([LEAF_PREFIX]);
        hasher.update(self.stream_id.as_str().as_bytes());
        hasher.update([0]);
        hasher.update(self.version.to_string().as_bytes());
        hasher.update([0]);
        hasher.update(self.hash.as_bytes());
        hasher.finalize().into()
    }
}

fn node_hash(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update([NODE_PREFIX]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The largest power of two below `n` (n ≥ 2): where RFC 6962 splits a tree.
fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// The Merkle tree hash of `leaves` (RFC 6962 §2.1; the empty tree hashes
/// the empty string).
fn tree_hash(leaves: &[[u8; 32]]) -> [u8; 32] {
    match leaves {
        [] => Sha256::digest([]).into(),
        [one] => *one,
        _ => {
            let k = split(leaves.len());
            node_hash(&tree_hash(&leaves[..k]), &tree_hash(&leaves[k..]))
        }
    }
}

/// The audit path of leaf `index` (RFC 6962 §2.1.1), bottom up.
fn audit_path(index: usize, leaves: &[[u8; 32]]) -> Vec<[u8; 32]> {
    if leaves.len() <= 1 {
        return Vec::new();
    }
    let k = split(leaves.len());
    if index < k {
        let mut path = audit_path(index, &leaves[..k]);
        path.push(tree_hash(&leaves[k..]));
        path
    } else {
        let mut path = audit_path(index - k, &leaves[k..]);
        path.push(tree_hash(&leaves[..k]));
        path
    }
}

/// The Merkle root of `leaves`, hex.
pub fn merkle_root(leaves: &[AnchorLeaf]) -> String {
    let hashes: Vec<[u8; 32]> = leaves.iter().map(AnchorLeaf::merkle_hash).collect();
    hex::encode(tree_hash(&hashes))
}

/// Every stream's head at one moment, with the root over them and the
/// digest of the anchor before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    /// [`ANCHOR_FORMAT`].
    pub format: u32,
    /// When the heads were read (the walk's end).
    pub created_at: DateTime<Utc>,
    /// Which store: the events table, or the database file's name.
    pub store: String,
    /// The digest of the previous anchor of this store (`None`: the first).
    pub previous: Option<String>,
    /// How many streams (leaves).
    pub streams: u64,
    /// The Merkle root over the leaves, hex.
    pub root: String,
    /// Every stream's head, sorted by stream id.
    pub leaves: Vec<AnchorLeaf>,
}

impl Anchor {
    /// The anchor of `leaves` (in any order), following `previous`.
    pub fn new(
        store: impl Into<String>,
        created_at: DateTime<Utc>,
        previous: Option<&Anchor>,
        mut leaves: Vec<AnchorLeaf>,
    ) -> Self {
        leaves.sort_by(|a, b| a.stream_id.cmp(&b.stream_id));
        Self {
            format: ANCHOR_FORMAT,
            created_at,
            store: store.into(),
            previous: previous.map(Anchor::digest),
            streams: leaves.len() as u64,
            root: merkle_root(&leaves),
            leaves,
        }
    }

    /// SHA-256 over a domain prefix and the anchor's JSON. The JSON is
    /// canonical: fields in declaration order, leaves sorted, no maps.
    pub fn digest(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(DIGEST_DOMAIN);
        // Serialising plain fields and Vecs cannot fail.
        hasher.update(serde_json::to_vec(self).unwrap_or_default());
        hex::encode(hasher.finalize())
    }

    /// Checks the document on its own: known format, sorted unique leaves,
    /// and a root that matches them. `position` names it in errors.
    pub fn validate(&self, position: usize) -> Result<(), AnchorError> {
        if self.format != ANCHOR_FORMAT {
            return Err(AnchorError::UnknownFormat {
                position,
                format: self.format,
            });
        }
        if let Some(pair) = self.leaves.windows(2).find(|w| w[0].stream_id >= w[1].stream_id) {
            return Err(AnchorError::UnsortedLeaves {
                position,
                stream: pair[1].stream_id.clone(),
            });
        }
        let computed = merkle_root(&self.leaves);
        if computed != self.root || self.streams != self.leaves.len() as u64 {
            return Err(AnchorError::RootMismatch {
                position,
                stored: self.root.clone(),
                computed,
            });
        }
        Ok(())
    }

    /// The leaf of `stream`, if anchored.
    pub fn leaf(&self, stream: &StreamId) -> Option<&AnchorLeaf> {
        self.leaves
            .binary_search_by(|l| l.stream_id.cmp(stream))
            .ok()
            .map(|i| &self.leaves[i])
    }

    /// The proof that `stream`'s leaf is under this anchor's root.
    pub fn proof(&self, stream: &StreamId) -> Option<InclusionProof> {
        let index = self.leaves.binary_search_by(|l| l.stream_id.cmp(stream)).ok()?;
        let hashes: Vec<[u8; 32]> = self.leaves.iter().map(AnchorLeaf::merkle_hash).collect();
        Some(InclusionProof {
            leaf: self.leaves[index].clone(),
            index: index as u64,
            size: hashes.len() as u64,
            path: audit_path(index, &hashes).iter().map(hex::encode).collect(),
            root: self.root.clone(),
        })
    }
}

/// Checks a whole log of anchors, oldest first: each valid on its own, the
/// first naming no predecessor, each next one naming its predecessor's
/// digest. A log with a changed, removed or inserted anchor is refused.
pub fn verify_log(anchors: &[Anchor]) -> Result<(), AnchorError> {
    let mut expected: Option<String> = None;
    for (anchor, position) in anchors.iter().zip(1..) {
        anchor.validate(position)?;
        if anchor.previous != expected {
            return Err(AnchorError::BrokenLog {
                position,
                expected,
                found: anchor.previous.clone(),
            });
        }
        expected = Some(anchor.digest());
    }
    Ok(())
}

/// What is needed to check one stream against an anchor's root: its leaf,
/// its position, and the sibling hashes from the leaf up (RFC 6962 audit
/// path). About 32 · log2(streams) bytes, whatever the store's size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    /// The anchored head.
    pub leaf: AnchorLeaf,
    /// The leaf's index among the sorted leaves.
    pub index: u64,
    /// How many leaves the tree has.
    pub size: u64,
    /// Sibling hashes, hex, bottom up.
    pub path: Vec<String>,
    /// The root the proof leads to.
    pub root: String,
}

impl InclusionProof {
    /// Recomputes the root from the leaf and the path (RFC 9162 §2.1.3.2)
    /// and compares it with `root`, the one read from the anchor kept out of
    /// reach (never the proof's own `root`, which a forger writes too).
    pub fn verify(&self, root: &str) -> Result<(), AnchorError> {
        let mismatch = || AnchorError::ProofMismatch {
            stream: self.leaf.stream_id.clone(),
            root: root.to_owned(),
        };
        if self.index >= self.size {
            return Err(mismatch());
        }
        let (mut f, mut s) = (self.index, self.size - 1);
        let mut r = self.leaf.merkle_hash();
        for sibling in &self.path {
            let p: [u8; 32] = hex::decode(sibling)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(mismatch)?;
            if s == 0 {
                return Err(mismatch());
            }
            if f & 1 == 1 || f == s {
                r = node_hash(&p, &r);
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            } else {
                r = node_hash(&r, &p);
            }
            f >>= 1;
            s >>= 1;
        }
        if s == 0 && hex::encode(r) == root {
            Ok(())
        } else {
            Err(mismatch())
        }
    }
}

/// What an anchored stream has become.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "finding", rename_all = "snake_case")]
pub enum Finding {
    /// The stream has no events any more.
    Deleted {
        /// The stream.
        stream: StreamId,
        /// Its anchored head version.
        anchored_version: u64,
    },
    /// The stream ends before its anchored head: its last events are gone.
    Truncated {
        /// The stream.
        stream: StreamId,
        /// Its anchored head version.
        anchored_version: u64,
        /// Its head now.
        head_version: u64,
    },
    /// The event at the anchored version is not the anchored one: the
    /// stream was rewritten (and its chain recomputed) up to there.
    Rechained {
        /// The stream.
        stream: StreamId,
        /// The anchored version.
        version: u64,
        /// The anchored hash.
        anchored_hash: String,
        /// The hash stored there now (`None`: the row does not parse).
        found_hash: Option<String>,
    },
}

impl Finding {
    /// The stream it is about.
    pub fn stream(&self) -> &StreamId {
        match self {
            Self::Deleted { stream, .. } | Self::Truncated { stream, .. } | Self::Rechained { stream, .. } => stream,
        }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Deleted {
                stream,
                anchored_version,
            } => write!(
                f,
                "{stream}: deleted (anchored at version {anchored_version}, now no events)"
            ),
            Self::Truncated {
                stream,
                anchored_version,
                head_version,
            } => write!(
                f,
                "{stream}: truncated (anchored at version {anchored_version}, head now {head_version})"
            ),
            Self::Rechained {
                stream,
                version,
                anchored_hash,
                found_hash,
            } => write!(
                f,
                "{stream}: rechained (version {version} anchored with hash {anchored_hash}, now {})",
                found_hash.as_deref().unwrap_or("unreadable")
            ),
        }
    }
}

/// One stream as a walk saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Observed {
    /// The highest version seen.
    head: u64,
    /// The hash at the head (`None`: that row does not parse).
    head_hash: Option<String>,
    /// The hash at the version the anchor holds, once seen (inner `None`:
    /// that row does not parse).
    at_anchored: Option<Option<String>>,
}

/// The heads of a store, read from its events in one pass: fed every event
/// (streams in any order, each stream's events by version, as a parallel
/// Scan segment or a sorted walk gives them). Given the anchor to compare
/// with, it also keeps the hash at each stream's anchored version.
#[derive(Debug, Default)]
pub struct HeadWalker {
    anchored: BTreeMap<StreamId, u64>,
    streams: BTreeMap<StreamId, Observed>,
}

impl HeadWalker {
    /// A walker that only collects heads (to write an anchor).
    pub fn new() -> Self {
        Self::default()
    }

    /// A walker that also keeps what [`compare`] needs against `anchor`.
    pub fn against(anchor: &Anchor) -> Self {
        Self {
            anchored: anchor.leaves.iter().map(|l| (l.stream_id.clone(), l.version)).collect(),
            streams: BTreeMap::new(),
        }
    }

    /// Takes in one stored event.
    pub fn push(&mut self, scanned: &ScannedEvent) {
        let (stream, version, hash) = match scanned {
            // An edited snapshot is the chain walk's finding, not the
            // anchor's: the event's stored hash is still what the head is.
            ScannedEvent::Readable(event) | ScannedEvent::TamperedSnapshot(event) => {
                (&event.stream_id, event.version, Some(&event.hash))
            }
            ScannedEvent::Unreadable { stream, version, .. } => (stream, *version, None),
        };
        if !self.streams.contains_key(stream) {
            // Cloning the id once per stream, not once per event.
            self.streams.insert(
                stream.clone(),
                Observed {
                    head: 0,
                    head_hash: None,
                    at_anchored: None,
                },
            );
        }
        let Some(observed) = self.streams.get_mut(stream) else {
            return;
        };
        if version >= observed.head {
            observed.head = version;
            observed.head_hash = hash.cloned();
        }
        if self.anchored.get(stream) == Some(&version) {
            observed.at_anchored = Some(hash.cloned());
        }
    }

    /// Merges another walker's streams (one per parallel Scan segment; a
    /// segment holds whole streams).
    pub fn merge(&mut self, other: HeadWalker) {
        self.streams.extend(other.streams);
    }

    /// How many streams were seen.
    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    /// Every stream's head, sorted by stream: the leaves of a new anchor.
    /// A head that does not parse has no hash to anchor: an error, so an
    /// anchor never silently leaves a stream out.
    pub fn leaves(&self) -> Result<Vec<AnchorLeaf>, AnchorError> {
        self.streams
            .iter()
            .map(|(stream, observed)| match &observed.head_hash {
                Some(hash) => Ok(AnchorLeaf {
                    stream_id: stream.clone(),
                    version: observed.head,
                    hash: hash.clone(),
                }),
                None => Err(AnchorError::UnreadableHead {
                    stream: stream.clone(),
                    version: observed.head,
                }),
            })
            .collect()
    }
}

/// Each anchored stream that is now deleted, truncated or rechained in the
/// store `walked` read, in stream order. Streams created since the anchor
/// are not findings: the next anchor covers them.
pub fn compare(anchor: &Anchor, walked: &HeadWalker) -> Vec<Finding> {
    anchor
        .leaves
        .iter()
        .filter_map(|leaf| {
            let stream = leaf.stream_id.clone();
            let Some(observed) = walked.streams.get(&leaf.stream_id) else {
                return Some(Finding::Deleted {
                    stream,
                    anchored_version: leaf.version,
                });
            };
            if observed.head < leaf.version {
                return Some(Finding::Truncated {
                    stream,
                    anchored_version: leaf.version,
                    head_version: observed.head,
                });
            }
            // The walk saw the head, which is at or past the anchored version,
            // and each stream's versions: so it saw the anchored one, unless
            // a version in between is missing (a chain break of its own).
            match &observed.at_anchored {
                Some(Some(hash)) if *hash == leaf.hash => None,
                Some(found) => Some(Finding::Rechained {
                    stream,
                    version: leaf.version,
                    anchored_hash: leaf.hash.clone(),
                    found_hash: found.clone(),
                }),
                None => Some(Finding::Truncated {
                    stream,
                    anchored_version: leaf.version,
                    head_version: observed.head,
                }),
            }
        })
        .collect()
}

/// What a later anchor says about the streams of an earlier one: a stream
/// may only grow, so one missing from `later`, anchored lower, or anchored
/// at the same version with another hash was deleted, truncated or
/// rechained between the two anchors (or `later` was forged). A rewrite
/// that also made the stream longer is not visible here; [`compare`] against
/// the store sees it.
pub fn succession(earlier: &Anchor, later: &Anchor) -> Vec<Finding> {
    let mut walked = HeadWalker::against(earlier);
    for leaf in &later.leaves {
        // Only the same version's hash is known from a later anchor; the
        // older hashes of a stream that grew are not in it, so they pass.
        let at_anchored = match earlier.leaf(&leaf.stream_id) {
            Some(before) if before.version < leaf.version => before.hash.clone(),
            _ => leaf.hash.clone(),
        };
        walked.streams.insert(
            leaf.stream_id.clone(),
            Observed {
                head: leaf.version,
                head_hash: Some(leaf.hash.clone()),
                at_anchored: Some(Some(at_anchored)),
            },
        );
    }
    compare(earlier, &walked)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::envelope::{EventEnvelope, Metadata, NewEvent, seal};

    fn id(raw: &str) -> StreamId {
        StreamId::parse(raw).expect("valid")
    }

    fn events(stream: &str, n: u64, salt: u64) -> Vec<EventEnvelope> {
        let new = (0..n)
            .map(|i| NewEvent {
                event_type: "Counted".into(),
                schema: 1,
                data: json!({ "n": i, "salt": salt }),
            })
            .collect();
        seal(&id(stream), 0, None, new, &Metadata::default(), 1_700_000_000_000)
    }

    fn walk(store: &[Vec<EventEnvelope>], anchor: Option<&Anchor>) -> HeadWalker {
        let mut walker = anchor.map_or_else(HeadWalker::new, HeadWalker::against);
        for stream in store {
            for event in stream {
                walker.push(&ScannedEvent::Readable(event.clone()));
            }
        }
        walker
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, 0).expect("a valid time")
    }

    /// Event ids are fresh UUIDs: build a store once per test and change copies of it.
    fn store() -> Vec<Vec<EventEnvelope>> {
        vec![
            events("order-a", 3, 0),
            events("order-b", 5, 0),
            events("inventory-x", 2, 0),
        ]
    }

    /// `stream` with `more` events appended, chained to its head.
    fn grown(stream: &[EventEnvelope], more: u64) -> Vec<EventEnvelope> {
        let head = stream.last().expect("not empty");
        let new = (0..more)
            .map(|i| NewEvent {
                event_type: "Counted".into(),
                schema: 1,
                data: json!({ "more": i }),
            })
            .collect();
        let appended = seal(
            &head.stream_id,
            head.version,
            Some(&head.hash),
            new,
            &Metadata::default(),
            1,
        );
        stream.iter().cloned().chain(appended).collect()
    }

    fn anchor_of(store: &[Vec<EventEnvelope>]) -> Anchor {
        let leaves = walk(store, None).leaves().expect("readable");
        Anchor::new("test", at(1), None, leaves)
    }

    #[test]
    fn an_untouched_store_matches_its_anchor() {
        let store = store();
        let anchor = anchor_of(&store);
        assert_eq!(anchor.streams, 3);
        assert_eq!(anchor.leaves[0].stream_id, id("inventory-x"), "sorted by stream");
        anchor.validate(1).expect("valid");
        assert_eq!(compare(&anchor, &walk(&store, Some(&anchor))), vec![]);
    }

    #[test]
    fn growth_and_new_streams_are_not_findings() {
        let base = store();
        let anchor = anchor_of(&base);
        let mut grown = base.clone();
        grown[0] = self::grown(&base[0], 4);
        grown.push(events("order-new", 1, 0));
        assert_eq!(compare(&anchor, &walk(&grown, Some(&anchor))), vec![]);
    }

    #[test]
    fn a_deleted_stream_is_named() {
        let mut store = store();
        let anchor = anchor_of(&store);
        store.remove(1);
        let findings = compare(&anchor, &walk(&store, Some(&anchor)));
        assert_eq!(
            findings,
            vec![Finding::Deleted {
                stream: id("order-b"),
                anchored_version: 5
            }]
        );
    }

    #[test]
    fn a_truncated_stream_is_named_with_both_heads() {
        let mut store = store();
        let anchor = anchor_of(&store);
        store[1].truncate(4);
        let findings = compare(&anchor, &walk(&store, Some(&anchor)));
        assert_eq!(
            findings,
            vec![Finding::Truncated {
                stream: id("order-b"),
                anchored_version: 5,
                head_version: 4
            }]
        );
    }

    #[test]
    fn a_rechained_stream_is_named_even_when_longer() {
        let base = store();
        let anchor = anchor_of(&base);
        for length in [5, 8] {
            let mut store = base.clone();
            // Rewritten from version 1 with recomputed hashes: its own chain holds.
            store[1] = events("order-b", length, 1);
            assert_eq!(crate::chain::verify_chain(&store[1]), Ok(()));
            let findings = compare(&anchor, &walk(&store, Some(&anchor)));
            assert!(
                matches!(&findings[..], [Finding::Rechained { stream, version: 5, found_hash: Some(_), .. }] if *stream == id("order-b")),
                "{findings:?}"
            );
        }
    }

    #[test]
    fn every_leaf_has_a_proof_that_verifies_and_only_against_its_root() {
        for n in [1usize, 2, 3, 5, 8, 13] {
            let leaves: Vec<AnchorLeaf> = (0..n)
                .map(|i| AnchorLeaf {
                    stream_id: id(&format!("s-{i:03}")),
                    version: i as u64 + 1,
                    hash: format!("{i:064x}"),
                })
                .collect();
            let anchor = Anchor::new("test", at(1), None, leaves);
            for leaf in &anchor.leaves {
                let proof = anchor.proof(&leaf.stream_id).expect("anchored");
                assert_eq!(proof.verify(&anchor.root), Ok(()), "n={n} {leaf:?}");
                assert!(proof.verify(&"0".repeat(64)).is_err());
            }
        }
    }

    #[test]
    fn a_forged_proof_is_refused() {
        let anchor = anchor_of(&store());
        let proof = anchor.proof(&id("order-b")).expect("anchored");
        // A lower head claimed for the stream.
        let mut lower = proof.clone();
        lower.leaf.version = 4;
        assert!(lower.verify(&anchor.root).is_err());
        // Another hash claimed.
        let mut other = proof.clone();
        other.leaf.hash = "f".repeat(64);
        assert!(other.verify(&anchor.root).is_err());
        // A sibling swapped, a position moved, a path cut short.
        let mut swapped = proof.clone();
        swapped.path[0] = hex::encode([7u8; 32]);
        assert!(swapped.verify(&anchor.root).is_err());
        let mut moved = proof.clone();
        moved.index = (moved.index + 1) % moved.size;
        assert!(moved.verify(&anchor.root).is_err());
        let mut short = proof.clone();
        short.path.pop();
        assert!(short.verify(&anchor.root).is_err());
        assert_eq!(proof.verify(&anchor.root), Ok(()));
        assert!(anchor.proof(&id("order-zzz")).is_none());
    }

    #[test]
    fn a_changed_anchor_fails_its_root_and_a_changed_log_its_chain() {
        let base = store();
        let first = anchor_of(&base);
        let mut grown = base.clone();
        grown[0] = self::grown(&base[0], 1);
        let second = Anchor::new("test", at(2), Some(&first), walk(&grown, None).leaves().expect("ok"));
        let third = Anchor::new("test", at(3), Some(&second), second.leaves.clone());
        assert_eq!(verify_log(&[first.clone(), second.clone(), third.clone()]), Ok(()));

        let mut lowered = second.clone();
        lowered.leaves[1].version -= 1;
        assert!(matches!(lowered.validate(2), Err(AnchorError::RootMismatch { .. })));

        // Rewritten consistently (root recomputed): the next anchor's link breaks.
        let forged = Anchor::new("test", second.created_at, Some(&first), lowered.leaves.clone());
        assert!(matches!(
            verify_log(&[first.clone(), forged, third.clone()]),
            Err(AnchorError::BrokenLog { position: 3, .. })
        ));
        // One removed from the middle.
        assert!(matches!(
            verify_log(&[first.clone(), third]),
            Err(AnchorError::BrokenLog { position: 2, .. })
        ));
        // A digest survives a JSON round trip: it is taken over canonical JSON.
        let text = serde_json::to_string(&second).expect("json");
        let back: Anchor = serde_json::from_str(&text).expect("parse");
        assert_eq!(back.digest(), second.digest());
    }

    #[test]
    fn a_later_anchor_that_drops_or_lowers_a_stream_is_named() {
        let base = store();
        let first = anchor_of(&base);
        let mut later = base.clone();
        later.remove(2);
        later[1].truncate(2);
        later[0] = events("order-a", 3, 9);
        let second = Anchor::new("test", at(2), Some(&first), walk(&later, None).leaves().expect("ok"));
        let streams: Vec<String> = succession(&first, &second)
            .iter()
            .map(|f| f.stream().to_string())
            .collect();
        assert_eq!(streams, ["inventory-x", "order-a", "order-b"]);
    }

    #[test]
    fn an_unreadable_head_is_not_anchored_silently() {
        let mut walker = HeadWalker::new();
        walker.push(&ScannedEvent::Unreadable {
            stream: id("order-q"),
            version: 1,
            reason: "bad".into(),
        });
        assert!(matches!(walker.leaves(), Err(AnchorError::UnreadableHead { .. })));
    }
}
