//! `tally dlq list|redrive` against the template deployed into the
//! emulator, through `AWS_ENDPOINT_URL` like any AWS endpoint.

use std::process::{Command, Output};

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

    let redriven = tally(&deployment, &["dlq", "redrive", "order_summary"]);
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
