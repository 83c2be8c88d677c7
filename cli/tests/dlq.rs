//! `tally dlq list|redrive` against the template deployed into the
//! emulator, through `AWS_ENDPOINT_URL` like any AWS endpoint.

use std::collections::HashSet;
use std::process::{Command, Output, Stdio};

use aws_sdk_sqs::types::QueueAttributeName;

use serde_json::Value;
use tally_emulator::deploy::{Deployment, deploy_template};

fn tally(deployment: &Deployment, args: &[&str]) -> Output {
    let stage = deployment.stack.trim_start_matches("tally-");
    Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(args)
        .args(["--stage", stage])
        .env("AWS_ENDPOINT_URL", tally_emulator::endpoint())
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .output()
        .expect("run tally")
}

fn bus_message(stream: &str, version: u64) -> String {
    serde_json::json!({
        "version": "0",
        "detail-type": "OrderConfirmed",
        "source": "tally",
        "detail": {
            "specversion": "1.0",
            "id": "019ab0c4-2f1e-7c3a-9d41-6f3b2a1c0e02",
            "source": "tally",
            "type": "OrderConfirmed",
            "subject": stream,
            "streamversion": version,
            "time": "2026-11-23T08:00:00.000Z",
            "dataref": format!("tally:events/{stream}/{version}")
        }
    })
    .to_string()
}

/// A dead message is listed with its event, stream, version and the error
/// the projector recorded; redrive moves it back and says how many moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_list_shows_the_dead_message_and_redrive_moves_it_back() {
    let deployment = tokio::task::spawn_blocking(deploy_template).await.expect("deploy");
    let sdk = tally_emulator::sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    sqs.send_message()
        .queue_url(deployment.output("OrderSummaryDlqUrl"))
        .message_body(bus_message("order-cli-1", 2))
        .send()
        .await
        .expect("dead-letter a message");
    let failures = tally_store_dynamodb::FailureLog::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        deployment.output("CheckpointsTableName"),
    );
    let stream = tally_core::StreamId::parse("order-cli-1").expect("stream");
    failures
        .record("order_summary", &stream, 2, "unreadable summary row: lines")
        .await
        .expect("record the failure");

    let listed = tally(&deployment, &["dlq", "list", "order_summary"]);
    let stdout = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(
        stdout.contains("OrderConfirmed") && stdout.contains("order-cli-1"),
        "{stdout}"
    );
    assert!(
        stdout.contains("unreadable summary row"),
        "the recorded error: {stdout}"
    );

    let json = tally(&deployment, &["dlq", "list", "order_summary", "--json"]);
    let letters: Value = serde_json::from_slice(&json.stdout).expect("--json prints JSON");
    assert_eq!(
        letters.as_array().map(Vec::len),
        Some(1),
        "listing consumed nothing: {letters}"
    );
    assert_eq!(letters[0]["version"], 2);

    let redriven = tally(&deployment, &["dlq", "redrive", "order_summary", "--wait", "1"]);
    let stdout = String::from_utf8_lossy(&redriven.stdout);
    assert!(
        redriven.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&redriven.stderr)
    );
    assert!(stdout.contains("moved 1 message"), "{stdout}");
    let back = sqs
        .receive_message()
        .queue_url(deployment.output("OrderSummaryQueueUrl"))
        .send()
        .await
        .expect("receive");
    let bodies: Vec<String> = back
        .messages
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.body)
        .collect();
    assert_eq!(
        bodies,
        vec![bus_message("order-cli-1", 2)],
        "the same message, back in its queue"
    );
}

/// An unknown projection is a clear error and a non-zero exit, not a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_of_an_unknown_projection_is_refused_clearly() {
    let deployment = tokio::task::spawn_blocking(deploy_template).await.expect("deploy");
    let out = tally(&deployment, &["dlq", "list", "orders_by_weather"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("unknown projection") && !stderr.contains("panicked"),
        "{stderr}"
    );

    // A stage that was never deployed, and a queue URL that names no queue:
    // one clear line each, exit status 2.
    let missing_stage = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["dlq", "list", "order_summary", "--stage", "nosuchstage"])
        .env("AWS_ENDPOINT_URL", tally_emulator::endpoint())
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .output()
        .expect("run tally");
    let no_queue = format!("{}/123456789012/tally-no-such-queue", tally_emulator::endpoint());
    for (out, names) in [
        (missing_stage, "tally-nosuchstage-order-summary"),
        (tally(&deployment, &["dlq", "list", &no_queue]), "tally-no-such-queue"),
    ] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.lines().count() == 1 && stderr.contains(names) && !stderr.contains("panicked"),
            "{stderr}"
        );
    }
}

/// Sends `count` dead messages to `queue`, ten per request; returns their
/// message ids.
async fn fill(sqs: &aws_sdk_sqs::Client, queue: &str, count: u64) -> Vec<String> {
    let mut ids = Vec::new();
    let versions: Vec<u64> = (1..=count).collect();
    for batch in versions.chunks(10) {
        let entries = batch
            .iter()
            .map(|version| {
                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(version.to_string())
                    .message_body(bus_message(&format!("order-many-{version}"), *version))
                    .build()
                    .expect("entry")
            })
            .collect();
        let sent = sqs
            .send_message_batch()
            .queue_url(queue)
            .set_entries(Some(entries))
            .send()
            .await
            .expect("dead-letter messages");
        assert!(sent.failed.is_empty(), "{:?}", sent.failed);
        ids.extend(sent.successful.into_iter().map(|ok| ok.message_id));
    }
    ids
}

/// A count attribute of `queue` (exact in the emulator).
async fn count(sqs: &aws_sdk_sqs::Client, queue: &str, name: QueueAttributeName) -> u64 {
    sqs.get_queue_attributes()
        .queue_url(queue)
        .attribute_names(name.clone())
        .send()
        .await
        .expect("queue attributes")
        .attributes
        .and_then(|a| a.get(&name).cloned())
        .and_then(|n| n.parse().ok())
        .expect("a count")
}

/// `ApproximateNumberOfMessages` of `queue`.
async fn visible(sqs: &aws_sdk_sqs::Client, queue: &str) -> u64 {
    count(sqs, queue, QueueAttributeName::ApproximateNumberOfMessages).await
}

/// Given a DLQ holding 25 messages, when it is listed with --max 7, then
/// exactly 7 distinct messages are shown and the listing ends, saying it
/// showed 7 of about 25 and that more may exist; nothing was consumed (a
/// listing with the default --max then shows all 25).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_list_shows_at_most_max_messages_and_says_more_exist() {
    let deployment = tokio::task::spawn_blocking(deploy_template).await.expect("deploy");
    let sdk = tally_emulator::sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let dlq = deployment.output("OrderSummaryDlqUrl");
    fill(&sqs, dlq, 25).await;

    let json = tally(&deployment, &["dlq", "list", "order_summary", "--json", "--max", "7"]);
    let stderr = String::from_utf8_lossy(&json.stderr);
    assert!(json.status.success(), "{stderr}");
    let letters: Value = serde_json::from_slice(&json.stdout).expect("--json prints JSON");
    let ids: HashSet<&str> = letters
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|l| l["message_id"].as_str())
        .collect();
    assert_eq!(ids.len(), 7, "exactly --max distinct messages: {letters}");
    assert!(
        stderr.contains("showed 7") && stderr.contains("about 25") && stderr.contains("more may exist"),
        "{stderr}"
    );

    let table = tally(&deployment, &["dlq", "list", "order_summary", "--max", "7"]);
    let stdout = String::from_utf8_lossy(&table.stdout);
    assert!(table.status.success(), "{stdout}");
    assert_eq!(stdout.matches("OrderConfirmed").count(), 7, "{stdout}");
    assert!(
        stdout.contains("showed 7") && stdout.contains("more may exist"),
        "{stdout}"
    );

    let all = tally(&deployment, &["dlq", "list", "order_summary", "--json"]);
    let letters: Value = serde_json::from_slice(&all.stdout).expect("--json prints JSON");
    assert_eq!(letters.as_array().map(Vec::len), Some(25), "listing consumed nothing");
    assert_eq!(visible(&sqs, dlq).await, 25);
}

/// Given a dead message delayed by 2 s (invisible to a short poll), when
/// the DLQ is redriven with --wait 4, then the long poll finds it and it is
/// moved: a redrive does not stop at the first empty answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_redrive_long_polls_for_messages_a_short_poll_misses() {
    let deployment = tokio::task::spawn_blocking(deploy_template).await.expect("deploy");
    let sdk = tally_emulator::sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    sqs.send_message()
        .queue_url(deployment.output("OrderSummaryDlqUrl"))
        .message_body(bus_message("order-late-1", 3))
        .delay_seconds(2)
        .send()
        .await
        .expect("dead-letter a delayed message");
    let redriven = tally(&deployment, &["dlq", "redrive", "order_summary", "--wait", "4"]);
    let stdout = String::from_utf8_lossy(&redriven.stdout);
    assert!(
        redriven.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&redriven.stderr)
    );
    assert!(stdout.contains("moved 1 message"), "{stdout}");
    assert_eq!(visible(&sqs, deployment.output("OrderSummaryQueueUrl")).await, 1);
}

/// Given a redrive under way, when its DLQ is purged between a receive and
/// the delete of what it sent back (the emulator then answers the delete's
/// entries with `ReceiptHandleIsInvalid` in `Failed`, as SQS does for a
/// handle of a message no longer there), then the redrive exits 2 naming
/// those messages and does not count them as moved: moved + named = what
/// reached the source queue. The purge races the redrive, so each attempt
/// uses fresh queues (the emulator allows one purge a minute per queue)
/// until one attempt lands between receive and delete; every attempt's
/// report must add up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_redrive_reports_failed_deletes_and_exits_non_zero() {
    let deployment = tokio::task::spawn_blocking(deploy_template).await.expect("deploy");
    let stage = deployment.stack.trim_start_matches("tally-").to_owned();
    let sdk = tally_emulator::sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let mut failures_seen = 0;
    for attempt in 0..8 {
        let create = |name: String| {
            let sqs = sqs.clone();
            async move {
                sqs.create_queue()
                    .queue_name(name)
                    .send()
                    .await
                    .expect("create queue")
                    .queue_url
                    .expect("queue url")
            }
        };
        let dlq = create(format!("redrive-purged-dlq-{attempt}")).await;
        let source = create(format!("redrive-purged-src-{attempt}")).await;
        let ids: HashSet<String> = fill(&sqs, &dlq, 300).await.into_iter().collect();

        let child = Command::new(env!("CARGO_BIN_EXE_tally"))
            .args([
                "dlq", "redrive", &dlq, "--source", &source, "--wait", "1", "--stage", &stage,
            ])
            .env("AWS_ENDPOINT_URL", tally_emulator::endpoint())
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the redrive");
        // The emulator answers one request at a time, and the redrive's
        // next request gets in before the test's next one (seen: a purge
        // sent once the source queue is not empty lands between a delete
        // and the next receive). So: wait for the first batch sent back,
        // then for the next receive (messages in flight in the DLQ); the
        // purge then lands after that batch's send, before its delete.
        while visible(&sqs, &source).await == 0 {}
        while count(&sqs, &dlq, QueueAttributeName::ApproximateNumberOfMessagesNotVisible).await == 0 {}
        sqs.purge_queue().queue_url(&dlq).send().await.expect("purge the DLQ");
        let output = child.wait_with_output().expect("redrive output");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
        let moved: u64 = stdout
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("`moved N message(s)`: {stdout}"));
        let reached = visible(&sqs, &source).await;
        let named: Vec<&str> = ids
            .iter()
            .filter(|id| stderr.contains(id.as_str()))
            .map(String::as_str)
            .collect();
        if output.status.success() {
            assert_eq!(
                moved, reached,
                "attempt {attempt}: every message sent back was deleted: {stdout}"
            );
            continue;
        }
        assert_eq!(output.status.code(), Some(2), "{stdout}{stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.contains("could not be deleted") && stderr.contains("ReceiptHandleIsInvalid"),
            "{stderr}"
        );
        let undeleted: u64 = stderr
            .split("; ")
            .find(|part| part.contains("could not be deleted"))
            .and_then(|part| part.trim_start_matches("tally: ").split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("a count of undeleted messages: {stderr}"));
        assert!(undeleted > 0);
        assert_eq!(
            moved + undeleted,
            reached,
            "attempt {attempt}: moved ({moved}) + failed deletes ({undeleted}) = sent back ({reached}): {stderr}"
        );
        assert_eq!(
            named.len() as u64,
            undeleted.min(10),
            "the failed messages are named: {stderr}"
        );
        failures_seen += 1;
        break;
    }
    assert!(
        failures_seen > 0,
        "no purge landed between a receive and its delete in 8 attempts"
    );
}
