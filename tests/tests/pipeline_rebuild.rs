//! Rebuilds on AWS (the emulator), with the read side running: the core's
//! rebuild driver over the events table's parallel Scan
//! (`DynamoHistory`) and the two-table generations (`DynamoGenerations`),
//! exactly as `tally rebuild --aws` runs them, while the driver keeps the
//! stream publisher and the projector handlers going.

mod pipeline_support;

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use pipeline_support::{Pipeline, place, stock_skus};
use serde_json::json;
use tally_core::projection::{BatchProjectionSink, History, RebuildMode, RebuildOptions, RebuildReport, rebuild};
use tally_domain::views;
use tally_store_dynamodb::{DynamoGenerations, DynamoHistory, Slot, SlotTables};

const ORDER_SUMMARY_PROJECTOR: &str = "OrderSummaryProjectorFunction";
const SALES_PROJECTOR: &str = "SalesByDayProjectorFunction";

fn generations(pipeline: &Pipeline, function: &str, projection: &str, segments: u32) -> DynamoGenerations {
    let tables = SlotTables::from_settings(projection, pipeline.deployment.env(function))
        .expect("settings")
        .expect("a projection");
    DynamoGenerations::new(
        pipeline.dynamodb.clone(),
        tables,
        history(pipeline, segments),
        Duration::ZERO,
        100,
    )
}

fn history(pipeline: &Pipeline, segments: u32) -> DynamoHistory {
    DynamoHistory::new(
        pipeline.dynamodb.clone(),
        pipeline.deployment.output("EventsTableName"),
        segments,
    )
}

async fn run(pipeline: &Pipeline, function: &str, projection: &str, mode: RebuildMode, finish: bool) -> RebuildReport {
    let generations = generations(pipeline, function, projection, 3);
    let options = RebuildOptions {
        chunk: 7,
        catch_up: 3,
        finish,
    };
    rebuild(&history(pipeline, 3), &generations, mode, options, &mut ())
        .await
        .expect("rebuild")
}

/// Sets one attribute of an order's row in `table`, by hand.
async fn corrupt_row(pipeline: &Pipeline, table: &str, order_id: &str, field: &str, value: AttributeValue) {
    pipeline
        .dynamodb
        .update_item()
        .table_name(table)
        .key("pk", AttributeValue::S(order_id.to_owned()))
        .update_expression("SET #f = :v")
        .expression_attribute_names("#f", field)
        .expression_attribute_values(":v", value)
        .send()
        .await
        .expect("corrupt a row");
}

async fn seed(pipeline: &mut Pipeline) {
    stock_skus(pipeline, &["apple", "pear"], 500).await;
    for i in 0..12 {
        let customer = ["ann", "bob", "cat"][i % 3];
        place(
            pipeline,
            &format!("o-{i}"),
            customer,
            &[("apple", 1 + i as u32 % 3, 150), ("pear", 1, 300)],
        )
        .await;
        match i % 4 {
            0 => {
                pipeline.command(&format!("/orders/o-{i}/confirm"), json!({})).await;
            }
            1 => {
                pipeline.command(&format!("/orders/o-{i}/cancel"), json!({})).await;
            }
            _ => {}
        }
    }
    pipeline.drain().await;
}

/// Given a corrupted order_summary row and the pipeline running, when a
/// blue-green rebuild replays into the green table: queries answer from
/// the old (blue, corrupt) generation until the switch; orders placed and
/// changed meanwhile are projected into both; after the switch every query
/// route equals an in-order replay, the corrupt row repaired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_rebuild_repairs_a_row_and_keeps_what_was_accepted_meanwhile() {
    let mut pipeline = Pipeline::deploy().await;
    seed(&mut pipeline).await;
    let blue = pipeline.deployment.output("OrderSummaryTableName").to_owned();
    let green = pipeline.deployment.output("OrderSummaryGreenTableName").to_owned();
    corrupt_row(&pipeline, &blue, "o-2", "status", AttributeValue::S("shipped".into())).await;
    let (_, before) = pipeline.get("/orders/o-2").await;
    assert_eq!(before["status"], "shipped", "the corruption is what readers see");

    // Replay into green, leave blue live.
    let built = run(
        &pipeline,
        ORDER_SUMMARY_PROJECTOR,
        views::ORDER_SUMMARY,
        RebuildMode::BlueGreen,
        false,
    )
    .await;
    assert!(!built.finished);
    assert_eq!(built.build_generation, 2);
    tokio::time::sleep(Duration::from_millis(1_100)).await; // past the readers' cache of the live slot
    let (_, during) = pipeline.get("/orders/o-2").await;
    assert_eq!(during["status"], "shipped", "still the old generation");

    // Commands accepted during the rebuild: the projectors write both slots.
    place(&pipeline, "o-new", "dan", &[("pear", 2, 300)]).await;
    pipeline.command("/orders/o-3/confirm", json!({})).await;
    pipeline.drain().await;
    let (status, on_blue) = pipeline.get("/orders/o-new").await;
    assert_eq!(
        (status.as_u16(), on_blue["status"].as_str()),
        (200, Some("placed")),
        "{on_blue}"
    );
    let green_row = pipeline
        .dynamodb
        .get_item()
        .table_name(&green)
        .key("pk", AttributeValue::S("o-new".into()))
        .consistent_read(true)
        .send()
        .await
        .expect("read green");
    assert!(
        green_row.item.is_some(),
        "the new order reached the generation being built"
    );

    // Finish: resumes the recorded build, switches, drops blue.
    let finished = run(
        &pipeline,
        ORDER_SUMMARY_PROJECTOR,
        views::ORDER_SUMMARY,
        RebuildMode::BlueGreen,
        true,
    )
    .await;
    assert!(finished.resumed && finished.finished, "{finished:?}");
    assert_eq!(finished.dropped, 1);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (_, after) = pipeline.get("/orders/o-2").await;
    assert_eq!(after["status"], "placed", "the new generation is live: {after}");
    pipeline.assert_read_models_match_replay().await;
    let left = pipeline
        .dynamodb
        .scan()
        .table_name(&blue)
        .send()
        .await
        .expect("scan blue")
        .count;
    assert_eq!(left, 0, "the old generation was dropped");

    // And the projectors now write green only: another change lands there.
    pipeline.command("/orders/o-new/confirm", json!({})).await;
    pipeline.drain().await;
    pipeline.assert_read_models_match_replay().await;
}

/// Given sales_by_day with a tampered day, when a truncate rebuild runs (the
/// projectors leave the emptying to it), then the model equals the replay,
/// and events accepted afterwards are projected into it as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncate_rebuild_refills_sales_by_day_in_place() {
    let mut pipeline = Pipeline::deploy().await;
    seed(&mut pipeline).await;
    let sales = pipeline.deployment.output("SalesByDayTableName").to_owned();
    let days = pipeline
        .dynamodb
        .scan()
        .table_name(&sales)
        .send()
        .await
        .expect("scan")
        .items
        .unwrap_or_default();
    let day = days.first().and_then(|d| d.get("pk")).cloned().expect("a sales day");
    pipeline
        .dynamodb
        .update_item()
        .table_name(&sales)
        .key("pk", day)
        .update_expression("ADD #o :n")
        .expression_attribute_names("#o", "orders")
        .expression_attribute_values(":n", AttributeValue::N("1000".into()))
        .send()
        .await
        .expect("tamper");
    let report = run(
        &pipeline,
        SALES_PROJECTOR,
        views::SALES_BY_DAY,
        RebuildMode::Truncate,
        true,
    )
    .await;
    assert!(report.finished && !report.resumed, "{report:?}");
    pipeline.assert_read_models_match_replay().await;
    place(&pipeline, "o-after", "eve", &[("apple", 4, 150)]).await;
    pipeline.drain().await;
    pipeline.assert_read_models_match_replay().await;
}

/// Given a rebuild aborted at random points (its task dropped mid-request,
/// as a kill would leave it), when it is run again until it finishes, the
/// model equals an in-order replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_killed_at_random_points_resumes_to_the_replay() {
    let mut pipeline = Pipeline::deploy().await;
    seed(&mut pipeline).await;
    let summaries = pipeline.deployment.output("OrderSummaryTableName").to_owned();
    corrupt_row(
        &pipeline,
        &summaries,
        "o-5",
        "total_cents",
        AttributeValue::N("1".into()),
    )
    .await;
    let total = history(&pipeline, 3)
        .count_after(&history(&pipeline, 3).origin(), None)
        .await
        .expect("count");
    assert!(total > 50, "enough events to be killed midway: {total}");
    let mut kills = 0;
    for attempt in 0.. {
        assert!(attempt < 30, "the rebuild never finished");
        let generations = generations(&pipeline, ORDER_SUMMARY_PROJECTOR, views::ORDER_SUMMARY, 3);
        let history = history(&pipeline, 3);
        // One event per chunk: every chunk is a recorded position, and the
        // whole rebuild takes long enough (a second or more) for the
        // random kills below to land midway.
        let options = RebuildOptions {
            chunk: 1,
            catch_up: 1,
            finish: true,
        };
        let mut task =
            tokio::spawn(
                async move { rebuild(&history, &generations, RebuildMode::BlueGreen, options, &mut ()).await },
            );
        let budget = Duration::from_millis(if kills < 3 { fastrand::u64(10..150) } else { 60_000 });
        match tokio::time::timeout(budget, &mut task).await {
            Ok(done) => {
                let report = done.expect("join").expect("rebuild");
                assert!(report.finished, "{report:?}");
                eprintln!("finished after {kills} kills: {report:?}");
                break;
            }
            Err(_) => {
                // Killed: the task is dropped wherever it was, mid-request included.
                task.abort();
                let _ = task.await;
                kills += 1;
            }
        }
    }
    assert!(kills >= 1, "killed at least once");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    pipeline.assert_read_models_match_replay().await;
}

/// Given the history and an empty model, when two replays apply it as
/// batches at the same time (each read its checkpoints before either
/// wrote), then every event lands once: the loser of each conditional
/// write or transaction falls back to event-by-event and finds duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_batches_apply_each_event_once() {
    let pipeline = Pipeline::deploy().await;
    stock_skus(&pipeline, &["apple", "pear"], 500).await;
    for i in 0..30 {
        place(
            &pipeline,
            &format!("r-{i}"),
            "ann",
            &[("apple", 1 + i % 2, 150), ("pear", 1, 300)],
        )
        .await;
        if i % 3 == 0 {
            pipeline.command(&format!("/orders/r-{i}/cancel"), json!({})).await;
        }
    }
    let events: Vec<_> = pipeline.all_events().await.into_values().flatten().collect();
    for (function, projection) in [
        (ORDER_SUMMARY_PROJECTOR, views::ORDER_SUMMARY),
        (SALES_PROJECTOR, views::SALES_BY_DAY),
    ] {
        let tables = SlotTables::from_settings(projection, pipeline.deployment.env(function))
            .expect("settings")
            .expect("a projection");
        let (one, two) = (
            tables.sink(&pipeline.dynamodb, Slot::Blue),
            tables.sink(&pipeline.dynamodb, Slot::Blue),
        );
        let (a, b) = tokio::join!(one.apply_batch(&events), two.apply_batch(&events));
        let (a, b) = (a.expect("first replay"), b.expect("second replay"));
        let followed = events.iter().filter(|e| e.stream_id.category() == "order").count() as u64;
        assert_eq!(
            a.applied + b.applied,
            followed,
            "{projection}: each event applied once: {a:?} {b:?}"
        );
        assert_eq!(a.duplicates + b.duplicates, followed, "{projection}: and skipped once");
    }
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    pipeline.assert_read_models_match_replay().await;
}
