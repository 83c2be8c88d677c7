//! Exactly-once effect on the read models through real SQS: every message
//! of the projection queues is taken off, then put back up to three times,
//! shuffled, with one dropped; the projectors must still end with what an
//! in-order replay computes (the dropped event recovered by gap repair,
//! nothing counted twice in sales by day).

mod pipeline_support;

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use pipeline_support::{Pipeline, place, stock_skus};
use serde_json::json;
use tally_bus::EventDetail;

/// Every visible message of `queue`, deleted from it.
async fn take_all(pipeline: &Pipeline, queue: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    loop {
        let out = pipeline
            .sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(10)
            .visibility_timeout(60)
            .send()
            .await
            .expect("receive");
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            return bodies;
        }
        for message in messages {
            bodies.push(message.body.clone().unwrap_or_default());
            pipeline
                .sqs
                .delete_message()
                .queue_url(queue)
                .receipt_handle(message.receipt_handle.unwrap_or_default())
                .send()
                .await
                .expect("delete");
        }
    }
}

/// (stream, version) of a bus message.
fn position(body: &str) -> (String, u64) {
    let detail = EventDetail::from_message_body(body).expect("bus message").detail;
    (detail.subject.to_string(), detail.streamversion)
}

/// Duplicates (1–3 copies each), a shuffle and one dropped first event of a
/// stream that has later events → read models equal to in-order replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_shuffled_and_dropped_deliveries_still_give_the_in_order_replay() {
    // The EMF recorder the Lambdas install (one per process: this binary has one test).
    let metrics = tally_bus::telemetry::init_metrics("projector").expect("metrics recorder");
    let mut pipeline = Pipeline::deploy().await;
    stock_skus(&pipeline, &["fig", "lime"], 500).await;
    for i in 0..8u32 {
        let order = format!("c-{i}");
        place(
            &pipeline,
            &order,
            &format!("cust-{}", i % 3),
            &[("fig", 1 + i, 120), ("lime", 2, 75)],
        )
        .await;
        match i % 4 {
            0 => {
                pipeline.command(&format!("/orders/{order}/confirm"), json!({})).await;
                pipeline.command(&format!("/orders/{order}/ship"), json!({})).await;
            }
            1 => {
                pipeline.command(&format!("/orders/{order}/cancel"), json!({})).await;
            }
            2 => {
                pipeline.command(&format!("/orders/{order}/confirm"), json!({})).await;
            }
            _ => {}
        }
    }
    let published = pipeline.publish().await;
    assert!(published.done > 0, "the stream held the events");

    let mut rng = fastrand::Rng::with_seed(0x7a11);
    let queues = ["OrderSummaryQueueUrl", "SalesByDayQueueUrl"];
    for queue in queues.map(|q| pipeline.queue(q)) {
        let bodies = take_all(&pipeline, &queue).await;
        assert_eq!(bodies.len(), 8 + 2 * 2 + 2 + 2, "one message per order event");
        // Drop the first event of a stream that has later ones: only gap
        // repair from the event store can bring it back.
        let dropped = bodies
            .iter()
            .position(|b| position(b) == ("order-c-0".to_owned(), 1))
            .expect("c-0 placed");
        let mut deliveries: Vec<&String> = Vec::new();
        for (i, body) in bodies.iter().enumerate() {
            if i != dropped {
                deliveries.extend(std::iter::repeat_n(body, rng.usize(1..=3)));
            }
        }
        rng.shuffle(&mut deliveries);
        for chunk in deliveries.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, body)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(*body)
                        .build()
                        .expect("entry")
                })
                .collect();
            pipeline
                .sqs
                .send_message_batch()
                .queue_url(&queue)
                .set_entries(Some(entries))
                .send()
                .await
                .expect("send");
        }
    }

    let mut emf = Vec::new();
    metrics.flush(&mut emf).expect("flush before projecting");
    let projected = pipeline.project().await;
    assert_eq!(projected.failed, 0, "chaos is not failure: {projected:?}");

    // What the projectors told CloudWatch, as EMF lines.
    emf.clear();
    metrics.flush(&mut emf).expect("flush");
    let documents: Vec<serde_json::Value> = String::from_utf8(emf)
        .expect("utf-8")
        .lines()
        .map(|line| serde_json::from_str(line).expect("an EMF line is JSON"))
        .collect();
    let total = |name: &str| -> f64 {
        documents
            .iter()
            .filter(|d| d["projection"].is_string())
            .filter_map(|d| d[name].as_f64())
            .sum()
    };
    let declared = |name: &str| {
        documents.iter().any(|d| {
            d["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["Name"] == name))
                && d["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Tally"
        })
    };
    for name in ["EventsApplied", "DuplicatesSkipped", "GapsRepaired", "ProjectionLagMs"] {
        assert!(declared(name), "{name} is an EMF metric: {documents:?}");
    }
    assert_eq!(
        total("EventsApplied"),
        2.0 * 16.0,
        "each event applied once per projection"
    );
    // The dropped event must be repaired in each projection; the shuffle
    // makes more gaps (a later version first), each repaired once.
    assert!(total("GapsRepaired") >= 2.0, "{documents:?}");
    assert!(total("DuplicatesSkipped") > 0.0);
    pipeline.assert_read_models_match_replay().await;
    let (_, c0) = pipeline.get("/orders/c-0").await;
    assert_eq!(
        (c0["status"].as_str(), c0["version"].as_u64()),
        (Some("shipped"), Some(3))
    );
}
