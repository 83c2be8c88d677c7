//! The events table read whole: what rebuilds, `verify projections` and
//! `verify chain` read on AWS instead of the 24-hour DynamoDB stream.
//!
//! DynamoDB has no global order, and projections need none: only each
//! stream's events in version order. A Scan returns a partition's items
//! together, in sort-key (version) order, and a parallel Scan gives each
//! partition to exactly one segment. So the history is read as `segments`
//! parallel Scans, each page by page; a chunk is the next page of every
//! unfinished segment, concatenated. Within a segment a stream's events come
//! in version order across pages, which is the [`History`] contract.
//!
//! The cursor is every segment's `LastEvaluatedKey` (or "done"), plus the
//! count of items read, so a killed rebuild resumes exactly where its last
//! recorded chunk ended. Reads are strongly consistent: an event appended
//! before a rebuild's replay starts must be in it.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use futures_util::future::try_join_all;
use serde::{Deserialize, Serialize};
use tally_core::chain::{ChainReport, ChainWalker, ScannedEvent};
use tally_core::projection::{History, HistoryChunk, Progress};
use tally_core::{EventEnvelope, StoreError, StreamId};

use crate::errors::sdk_error;
use crate::items::{EventItem, Item};
use crate::schema::{EVENTS_PK, EVENTS_SK};
use crate::store::number;

/// Parallel Scan segments by default: enough to keep a few DynamoDB
/// partitions busy from one machine without throttling an on-demand table.
pub const DEFAULT_SEGMENTS: u32 = 4;

/// Where one Scan segment stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SegmentPosition {
    /// Not read yet.
    Start,
    /// Read up to and including this item.
    After {
        /// Its stream.
        stream: String,
        /// Its version.
        version: u64,
    },
    /// Read to the end.
    Done,
}

/// A position in a parallel Scan of the events table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanCursor {
    /// One position per segment.
    pub segments: Vec<SegmentPosition>,
    /// Items read before this position (for progress).
    pub read: u64,
}

impl ScanCursor {
    /// The position before everything, in `segments` segments.
    pub fn origin(segments: u32) -> Self {
        Self {
            segments: vec![SegmentPosition::Start; segments.max(1) as usize],
            read: 0,
        }
    }

    /// Whether every segment is read to its end.
    pub fn is_done(&self) -> bool {
        self.segments.iter().all(|s| *s == SegmentPosition::Done)
    }
}

/// The events table as a [`History`]: a resumable parallel Scan.
#[derive(Debug, Clone)]
pub struct DynamoHistory {
    client: Client,
    table: String,
    segments: u32,
}

/// One page of one segment.
struct Page {
    items: Vec<Item>,
    next: SegmentPosition,
}

fn position_of(key: Option<Item>) -> Result<SegmentPosition, StoreError> {
    let Some(key) = key.filter(|k| !k.is_empty()) else {
        return Ok(SegmentPosition::Done);
    };
    match (key.get(EVENTS_PK), key.get(EVENTS_SK)) {
        (Some(AttributeValue::S(stream)), Some(AttributeValue::N(version))) if version.parse::<u64>().is_ok() => {
            Ok(SegmentPosition::After {
                stream: stream.clone(),
                version: version.parse().unwrap_or_default(),
            })
        }
        _ => Err(StoreError::Backend(
            format!("the scan handed back a key not of the events table's schema: {key:?}").into(),
        )),
    }
}

/// The scanned form of an item: an envelope, or why it is not one. An item
/// whose very key does not parse cannot be placed in a chain: an error.
fn scanned(item: Item) -> Result<ScannedEvent, StoreError> {
    let stream = match item.get(EVENTS_PK) {
        Some(AttributeValue::S(s)) => s.clone(),
        other => {
            return Err(StoreError::Backend(
                format!("an event item without a stream id: {other:?}").into(),
            ));
        }
    };
    let version = match item.get(EVENTS_SK).map(|v| v.as_n().map(|n| n.parse::<u64>())) {
        Some(Ok(Ok(version))) => version,
        _ => {
            return Err(StoreError::corrupt(
                &stream,
                0,
                "an event item without a numeric version",
            ));
        }
    };
    let stream_id = StreamId::parse(&stream).map_err(|e| StoreError::corrupt(&stream, version, e))?;
    Ok(match EventItem::parse(item).and_then(EventItem::into_envelope) {
        Ok((envelope, snapshot)) => ScannedEvent::stored(envelope, snapshot.as_ref()),
        Err(error) => ScannedEvent::Unreadable {
            stream: stream_id,
            version,
            reason: error.to_string(),
        },
    })
}

fn envelope(item: Item) -> Result<EventEnvelope, StoreError> {
    EventItem::parse(item)?.into_envelope().map(|(envelope, _)| envelope)
}

impl DynamoHistory {
    /// The history of the events table `table`, read in `segments` parallel segments.
    pub fn new(client: Client, table: impl Into<String>, segments: u32) -> Self {
        Self {
            client,
            table: table.into(),
            segments: segments.clamp(1, 1_000),
        }
    }

    /// The events table.
    pub fn table(&self) -> &str {
        &self.table
    }

    async fn page(
        &self,
        segment: u32,
        at: &SegmentPosition,
        limit: usize,
        category: Option<&str>,
    ) -> Result<Page, StoreError> {
        let start = match at {
            SegmentPosition::Done => {
                return Ok(Page {
                    items: Vec::new(),
                    next: SegmentPosition::Done,
                });
            }
            SegmentPosition::Start => None,
            SegmentPosition::After { stream, version } => Some(Item::from([
                (EVENTS_PK.to_owned(), AttributeValue::S(stream.clone())),
                (EVENTS_SK.to_owned(), number(*version)),
            ])),
        };
        let mut scan = self
            .client
            .scan()
            .table_name(&self.table)
            .consistent_read(true)
            .segment(segment as i32)
            .total_segments(self.segments as i32)
            .limit(limit.clamp(1, i32::MAX as usize) as i32)
            .set_exclusive_start_key(start);
        if let Some(category) = category {
            scan = scan
                .filter_expression("begins_with(#pk, :prefix)")
                .expression_attribute_names("#pk", EVENTS_PK)
                .expression_attribute_values(":prefix", AttributeValue::S(format!("{category}-")));
        }
        let page = scan.send().await.map_err(sdk_error)?;
        Ok(Page {
            items: page.items.unwrap_or_default(),
            next: position_of(page.last_evaluated_key)?,
        })
    }

    /// One page of every unfinished segment, at once.
    async fn round(
        &self,
        after: &ScanCursor,
        limit: usize,
        category: Option<&str>,
    ) -> Result<(Vec<Vec<Item>>, ScanCursor), StoreError> {
        if after.segments.len() != self.segments as usize {
            return Err(StoreError::Backend(
                format!(
                    "the recorded scan position has {} segments, this scan {}: resume with --segments {}",
                    after.segments.len(),
                    self.segments,
                    after.segments.len()
                )
                .into(),
            ));
        }
        let open = after
            .segments
            .iter()
            .filter(|s| **s != SegmentPosition::Done)
            .count()
            .max(1);
        let per_segment = limit.div_ceil(open).max(1);
        let pages = try_join_all(
            after
                .segments
                .iter()
                .enumerate()
                .map(|(segment, at)| self.page(segment as u32, at, per_segment, category)),
        )
        .await?;
        let mut next = ScanCursor {
            segments: Vec::with_capacity(pages.len()),
            read: after.read,
        };
        let mut items = Vec::with_capacity(pages.len());
        for page in pages {
            next.read += page.items.len() as u64;
            next.segments.push(page.next);
            items.push(page.items);
        }
        Ok((items, next))
    }

    /// Walks every stream's hash chain: one [`ChainWalker`] per segment (a
    /// segment holds whole streams, in version order), all segments at once.
    pub async fn verify_chains(&self, page: usize, progress: &mut dyn Progress) -> Result<ChainReport, StoreError> {
        let progress = std::sync::Mutex::new(progress);
        let walks = (0..self.segments).map(|segment| {
            let progress = &progress;
            async move {
                let mut walker = ChainWalker::new();
                let mut at = SegmentPosition::Start;
                while at != SegmentPosition::Done {
                    let page = self.page(segment, &at, page, None).await?;
                    let count = page.items.len() as u64;
                    for item in page.items {
                        walker.push(&scanned(item)?);
                    }
                    if let Ok(mut progress) = progress.lock() {
                        progress.advance(count);
                    }
                    at = page.next;
                }
                Ok::<_, StoreError>(walker.finish())
            }
        });
        let reports = try_join_all(walks).await?;
        let mut total = ChainReport::default();
        for report in reports {
            total.streams += report.streams;
            total.events += report.events;
            total.breaks.extend(report.breaks);
        }
        total.breaks.sort_by(|a, b| a.stream.cmp(&b.stream));
        Ok(total)
    }

    /// Walks one stream's hash chain, reading it with a Query.
    pub async fn verify_chain_of(&self, stream: &StreamId) -> Result<ChainReport, StoreError> {
        let mut walker = ChainWalker::new();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .key_condition_expression("#pk = :pk")
                .expression_attribute_names("#pk", EVENTS_PK)
                .expression_attribute_values(":pk", AttributeValue::S(stream.to_string()))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(sdk_error)?;
            for item in page.items.unwrap_or_default() {
                walker.push(&scanned(item)?);
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(walker.finish()),
            }
        }
    }

    /// The table's item count as DynamoDB reports it (refreshed about every
    /// six hours on AWS): an estimate, for progress bars only. Where
    /// DescribeTable does not answer in a form the SDK reads (the emulator's
    /// CloudFormation tables), the items are counted with a `COUNT` Scan.
    pub async fn estimated_items(&self) -> Result<u64, StoreError> {
        match self.client.describe_table().table_name(&self.table).send().await {
            Ok(described) => Ok(described
                .table
                .and_then(|t| t.item_count)
                .map_or(0, |n| n.max(0) as u64)),
            Err(error) => {
                tracing::debug!(error = %sdk_error(error), "no item count from DescribeTable; counting");
                self.count_items().await
            }
        }
    }

    /// Counts the items with a parallel `Select=COUNT` Scan.
    async fn count_items(&self) -> Result<u64, StoreError> {
        let counts = (0..self.segments).map(|segment| async move {
            let mut count = 0u64;
            let mut start: Option<Item> = None;
            loop {
                let page = self
                    .client
                    .scan()
                    .table_name(&self.table)
                    .segment(segment as i32)
                    .total_segments(self.segments as i32)
                    .select(aws_sdk_dynamodb::types::Select::Count)
                    .set_exclusive_start_key(start.take())
                    .send()
                    .await
                    .map_err(sdk_error)?;
                count += page.count.max(0) as u64;
                match page.last_evaluated_key {
                    Some(key) if !key.is_empty() => start = Some(key),
                    _ => return Ok::<_, StoreError>(count),
                }
            }
        });
        Ok(try_join_all(counts).await?.into_iter().sum())
    }
}

#[async_trait]
impl History for DynamoHistory {
    type Cursor = ScanCursor;

    fn origin(&self) -> ScanCursor {
        ScanCursor::origin(self.segments)
    }

    /// Reads rounds of pages until `limit` events (of `category`) are in
    /// hand or every segment is done: an empty chunk means the end, never a
    /// page that the filter happened to empty.
    async fn read_after(
        &self,
        after: &ScanCursor,
        limit: usize,
        category: Option<&str>,
    ) -> Result<HistoryChunk<ScanCursor>, StoreError> {
        let mut events = Vec::new();
        let mut cursor = after.clone();
        while events.len() < limit.max(1) && !cursor.is_done() {
            let (pages, next) = self.round(&cursor, limit - events.len().min(limit), category).await?;
            for item in pages.into_iter().flatten() {
                events.push(envelope(item)?);
            }
            cursor = next;
        }
        Ok(HistoryChunk { events, end: cursor })
    }

    /// The table's estimated item count less what the cursor has read: all
    /// categories, so an estimate from above when `category` is given.
    async fn count_after(&self, after: &ScanCursor, _category: Option<&str>) -> Result<u64, StoreError> {
        Ok(self.estimated_items().await?.saturating_sub(after.read))
    }
}

/// How long to wait between attempts when DynamoDB hands work back
/// (unprocessed items): short, growing, capped.
pub(crate) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(25u64.saturating_mul(1 << attempt.min(6)))
}
