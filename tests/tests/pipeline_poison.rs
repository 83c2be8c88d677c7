//! Poison messages and the dead-letter queue, through real SQS redrive.

mod pipeline_support;

use aws_sdk_dynamodb::types::AttributeValue;
use pipeline_support::{Pipeline, place, stock_skus};
use serde_json::json;
use tally_bus::dlq;
use tally_store_dynamodb::FailureLog;

/// A message that always fails lands in the DLQ after maxReceiveCount
/// while the rest of its batch is applied; after the cause is fixed, a
/// redrive brings it back and it is applied exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_dead_lettered_alone_and_applied_once_after_redrive() {
    let mut pipeline = Pipeline::deploy().await;
    stock_skus(&pipeline, &["nut"], 100).await;
    for order in ["bad", "good-1", "good-2", "good-3"] {
        place(&pipeline, order, "eve", &[("nut", 1, 250)]).await;
    }
    pipeline.drain().await;

    // The cause: someone broke o-bad's summary row by hand.
    let summaries = pipeline.deployment.output("OrderSummaryTableName").to_owned();
    pipeline
        .dynamodb
        .update_item()
        .table_name(&summaries)
        .key("pk", AttributeValue::S("bad".into()))
        .update_expression("SET #lines = :garbage")
        .expression_attribute_names("#lines", "lines")
        .expression_attribute_values(":garbage", AttributeValue::S("garbage".into()))
        .send()
        .await
        .expect("corrupt the row");

    for order in ["bad", "good-1", "good-2", "good-3"] {
        pipeline.command(&format!("/orders/{order}/confirm"), json!({})).await;
    }
    pipeline.publish().await;
    let projected = pipeline.project().await;
    assert_eq!(
        projected.failed, 3,
        "the poison message failed maxReceiveCount (3) times: {projected:?}"
    );
    for good in ["good-1", "good-2", "good-3"] {
        let (_, row) = pipeline.get(&format!("/orders/{good}")).await;
        assert_eq!(
            row["status"], "confirmed",
            "{good} was applied despite the poison beside it"
        );
    }

    let dlq_url = pipeline.queue("OrderSummaryDlqUrl");
    let source = pipeline.queue("OrderSummaryQueueUrl");
    let failures = FailureLog::new(
        pipeline.dynamodb.clone(),
        pipeline.deployment.output("CheckpointsTableName"),
    );
    let dead = dlq::list(&pipeline.sqs, &dlq_url, Some((&failures, "order_summary")))
        .await
        .expect("list");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(
        (dead[0].event_type.as_str(), dead[0].stream.as_str(), dead[0].version),
        ("OrderConfirmed", "order-bad", 2)
    );
    let error = dead[0].error.as_deref().unwrap_or_default();
    assert!(error.contains("unreadable summary row"), "the recorded error: {error}");
    assert_eq!(
        dlq::list(&pipeline.sqs, &dlq_url, None)
            .await
            .expect("list again")
            .len(),
        1,
        "listing consumes nothing"
    );
    let sales_dlq = dlq::list(&pipeline.sqs, &pipeline.queue("SalesByDayDlqUrl"), None)
        .await
        .expect("list sales dlq");
    assert!(
        sales_dlq.is_empty(),
        "the other projection was never affected: {sales_dlq:?}"
    );

    // The fix: drop the broken row; redrive; gap repair rebuilds it.
    pipeline
        .dynamodb
        .delete_item()
        .table_name(&summaries)
        .key("pk", AttributeValue::S("bad".into()))
        .send()
        .await
        .expect("delete the broken row");
    let moved = dlq::redrive(&pipeline.sqs, &dlq_url, &source).await.expect("redrive");
    assert_eq!(moved, 1);
    assert!(dlq::list(&pipeline.sqs, &dlq_url, None).await.expect("list").is_empty());
    let projected = pipeline.project().await;
    assert_eq!((projected.done, projected.failed), (1, 0), "{projected:?}");
    pipeline.assert_read_models_match_replay().await;
    let (_, bad) = pipeline.get("/orders/bad").await;
    assert_eq!(
        (bad["status"].as_str(), bad["version"].as_u64()),
        (Some("confirmed"), Some(2))
    );

    // The same message once more (a redrive that crashed between send and
    // delete leaves a copy behind): a skipped duplicate, not a second application.
    let today = chrono::Utc::now().date_naive();
    let report = format!(
        "/reports/sales?from={}&to={}",
        today.pred_opt().expect("day"),
        today.succ_opt().expect("day")
    );
    let (_, sales_before) = pipeline.get(&report).await;
    pipeline
        .sqs
        .send_message()
        .queue_url(&source)
        .message_body(&dead[0].body)
        .send()
        .await
        .expect("send the copy");
    let projected = pipeline.project().await;
    assert_eq!((projected.done, projected.failed), (1, 0), "{projected:?}");
    let order_summary = &pipeline.projectors[0].0;
    assert_eq!(order_summary.projection(), "order_summary");
    assert_eq!(
        order_summary.project_body(&dead[0].body).await.expect("project"),
        tally_core::Delivery::Duplicate,
        "the checkpoint has passed it"
    );
    let (_, again) = pipeline.get("/orders/bad").await;
    assert_eq!(again, bad, "the copy changed nothing");
    pipeline.assert_read_models_match_replay().await;
    let (_, sales_after) = pipeline.get(&report).await;
    assert_eq!(sales_before, sales_after);
}
