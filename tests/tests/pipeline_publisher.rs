//! The stream publisher under failure, through the real EventBridge API of
//! the emulator: entries it refuses are retried, records that stay
//! unpublished are redelivered by the stream, and events too large for
//! EventBridge travel by reference — with the read models always equal to
//! an in-order replay (nothing lost, nothing counted twice).

mod pipeline_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use pipeline_support::{FailEntries, Pipeline, place, stock_skus};
use serde_json::json;
use tally_bus::{EventDetail, PublisherConfig};

async fn some_orders(pipeline: &Pipeline) {
    stock_skus(pipeline, &["oat", "rye"], 100).await;
    for i in 1..=6u32 {
        place(pipeline, &format!("p-{i}"), "fay", &[("oat", i, 200), ("rye", 1, 90)]).await;
    }
    pipeline.command("/orders/p-2/confirm", json!({})).await;
    pipeline.command("/orders/p-3/cancel", json!({})).await;
}

/// An entry EventBridge refuses once is published by the publisher's own
/// retry: no batch item failure, every event delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_refused_once_is_retried_by_the_publisher() {
    let budget = Arc::new(AtomicU32::new(1));
    let faults = FailEntries {
        needle: "\"subject\":\"order-p-4\"".into(),
        budget: Arc::clone(&budget),
    };
    let mut pipeline = Pipeline::deploy_with(Some(faults), |_| {}).await;
    some_orders(&pipeline).await;
    let published = pipeline.publish().await;
    assert_eq!(budget.load(Ordering::SeqCst), 0, "the fault was injected");
    assert_eq!((published.failed, published.discarded), (0, 0), "{published:?}");
    pipeline.drain().await;
    pipeline.assert_read_models_match_replay().await;
}

/// An entry refused on every attempt of one invocation is reported as the
/// batch's first unpublished record; the stream redelivers from it (events
/// after it are published again) and the projectors absorb the repeats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_left_unpublished_is_redelivered_by_the_stream_without_double_counting() {
    let attempts = PublisherConfig::new("unused").max_attempts;
    let budget = Arc::new(AtomicU32::new(attempts));
    let faults = FailEntries {
        needle: "\"subject\":\"order-p-1\"".into(),
        budget: Arc::clone(&budget),
    };
    let mut pipeline = Pipeline::deploy_with(Some(faults), |_| {}).await;
    some_orders(&pipeline).await;
    let published = pipeline.publish().await;
    assert_eq!(
        budget.load(Ordering::SeqCst),
        0,
        "every attempt of the first invocation failed"
    );
    assert_eq!(
        published.failed, 1,
        "one invocation reported a batch item failure: {published:?}"
    );
    assert_eq!(published.discarded, 0, "and the retry published it: {published:?}");
    assert!(published.invocations >= 2, "{published:?}");
    let projected = pipeline.project().await;
    assert_eq!(projected.failed, 0, "{projected:?}");
    pipeline.drain().await;
    pipeline.assert_read_models_match_replay().await;
}

/// Events larger than the inline limit go by reference (stream + version)
/// and the projector reads them from the events table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_too_large_for_the_bus_travel_by_reference() {
    // An OrderPlaced of two lines is larger than this; a confirmation is not.
    let mut pipeline = Pipeline::deploy_with(None, |config| config.inline_limit = 900).await;
    some_orders(&pipeline).await;
    pipeline.publish().await;
    let queue = pipeline.queue("OrderSummaryQueueUrl");
    let peek = pipeline
        .sqs
        .receive_message()
        .queue_url(&queue)
        .max_number_of_messages(10)
        .visibility_timeout(0)
        .send()
        .await
        .expect("peek");
    let details: Vec<EventDetail> = peek
        .messages
        .unwrap_or_default()
        .iter()
        .map(|m| {
            EventDetail::from_message_body(m.body.as_deref().unwrap_or_default())
                .expect("bus message")
                .detail
        })
        .collect();
    assert!(
        details
            .iter()
            .any(|d| d.event_type == "OrderPlaced" && d.data.is_none() && d.dataref.is_some()),
        "placed orders went by reference: {details:?}"
    );
    assert!(details.iter().all(|d| d.data.is_some() != d.dataref.is_some()));
    pipeline.drain().await;
    pipeline.assert_read_models_match_replay().await;
}
