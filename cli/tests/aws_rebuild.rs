//! `tally rebuild --aws` as an operator runs it, against template.yaml
//! deployed into the emulator: the real binary, killed with SIGKILL at
//! random points and started again, ends with a model equal to an in-order
//! replay of the events table; a row corrupted by hand is repaired.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

mod support;

use aws_sdk_dynamodb::types::AttributeValue;
use support::{append_in_chunks, order_appends};
use tally_core::Decider;
use tally_core::projection::verify_projection;
use tally_domain::Order;
use tally_domain::recompute::MemoryModel;
use tally_emulator::deploy::{Deployment, deploy_template};
use tally_store_dynamodb::{DynamoConfig, DynamoHistory, DynamoStore, LiveModel, SlotTables};

const ORDERS: u64 = 400;

/// `tally <args> --aws` on the deployment, settling 0 s and with a 1 s
/// lease (a killed run's lease blocks the next one that long).
fn tally(deployment: &Deployment, args: &[&str]) -> Command {
    tally_with(deployment, args, &["--settle", "0", "--lease-ttl", "1"])
}

fn tally_with(deployment: &Deployment, args: &[&str], settings: &[&str]) -> Command {
    let stage = deployment.stack.trim_start_matches("tally-");
    let mut command = Command::new(env!("CARGO_BIN_EXE_tally"));
    command
        .args(args)
        .args(["--aws", "--stage", stage])
        .args(settings)
        .env_remove("TALLY_DB")
        .env("RUST_LOG", "warn")
        .env("AWS_ENDPOINT_URL", tally_emulator::endpoint())
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1");
    command
}

fn finished(output: Output) -> String {
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    assert!(output.status.success(), "tally failed: {stdout}\n{stderr}");
    stdout
}

/// The live model of `projection` against an in-memory replay: the
/// differences, and the streams not projected up to their head.
async fn differences(deployment: &Deployment, client: &aws_sdk_dynamodb::Client, projection: &str) -> (usize, usize) {
    let env = deployment.env("QueryApiFunction");
    let tables = SlotTables::from_settings(projection, env)
        .expect("settings")
        .expect("projection");
    let history = DynamoHistory::new(client.clone(), deployment.output("EventsTableName"), 2);
    let memory = MemoryModel::new(projection).expect("memory model");
    let verdict = verify_projection(
        &history,
        &LiveModel::new(client.clone(), tables),
        &memory,
        Some(Order::CATEGORY),
        500,
        &mut (),
    )
    .await
    .expect("verify");
    (verdict.diffs.len(), verdict.behind.len())
}

/// Given orders in the events table and no model, when `tally rebuild
/// order_summary --aws` is killed (SIGKILL) at random points and run again
/// until it finishes, then the model equals an in-order replay; a row then
/// corrupted by hand is repaired by the next (blue-green) rebuild, and a
/// truncate rebuild of sales_by_day killed and resumed ends equal too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_killed_by_sigkill_resumes_to_the_replay_and_repairs_rows() {
    let deployment = tokio::task::spawn_blocking(deploy_template).await.expect("deploy");
    let sdk = tally_emulator::sdk_config().await;
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let config = DynamoConfig::from_settings(deployment.env("CommandApiFunction")).expect("settings");
    // Straight into the events table (20 orders of at most 3 events and no
    // inline rows per transaction: within DynamoDB's 100 items).
    append_in_chunks(
        &DynamoStore::new(client.clone(), config),
        order_appends(0..ORDERS, 5),
        20,
    )
    .await;

    for (projection, mode) in [("order_summary", None), ("sales_by_day", Some("--truncate"))] {
        let mut kills = 0;
        for attempt in 0.. {
            assert!(attempt < 20, "{projection}: the rebuild never finished");
            let mut args = vec!["rebuild", projection, "--chunk", "100", "--segments", "2"];
            args.extend(mode);
            let mut child = tally(&deployment, &args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn tally");
            if kills < 2 {
                std::thread::sleep(Duration::from_millis(fastrand::u64(150..700)));
                if child.try_wait().expect("poll").is_none() {
                    child.kill().expect("SIGKILL");
                    child.wait().expect("reap");
                    // Its lease (1 s) must expire before the next run.
                    std::thread::sleep(Duration::from_millis(1_200));
                    kills += 1;
                    continue;
                }
            }
            let stdout = finished(child.wait_with_output().expect("wait"));
            assert!(stdout.contains(projection), "{stdout}");
            break;
        }
        eprintln!("{projection}: killed {kills} times, then finished");
        assert!(kills >= 1, "{projection}: the rebuild was never killed midway");
        assert_eq!(
            differences(&deployment, &client, projection).await,
            (0, 0),
            "{projection} after {kills} kills equals the replay"
        );
    }

    // A row corrupted by hand in the live table (green, after the first
    // blue-green rebuild), then another rebuild: repaired, blue live again.
    let green = deployment.output("OrderSummaryGreenTableName");
    client
        .update_item()
        .table_name(green)
        .key("pk", AttributeValue::S("o7".into()))
        .update_expression("SET #s = :s")
        .expression_attribute_names("#s", "status")
        .expression_attribute_values(":s", AttributeValue::S("cancelled".into()))
        .send()
        .await
        .expect("corrupt");
    assert_eq!(differences(&deployment, &client, "order_summary").await, (1, 0));
    let stdout = finished(tally(&deployment, &["rebuild", "order_summary"]).output().expect("run"));
    assert!(stdout.contains("is live (blue-green)"), "{stdout}");
    assert_eq!(differences(&deployment, &client, "order_summary").await, (0, 0));
    let blue = deployment.output("OrderSummaryTableName");
    let row = client
        .get_item()
        .table_name(blue)
        .key("pk", AttributeValue::S("o7".into()))
        .consistent_read(true)
        .send()
        .await
        .expect("read")
        .item
        .expect("o7 in the blue table, live again");
    assert_eq!(row.get("status"), Some(&AttributeValue::S("confirmed".into())));
}

/// The rebuild lease item of `projection` in the checkpoints table: holder
/// and expiry (ms).
async fn lease_item(
    client: &aws_sdk_dynamodb::Client,
    deployment: &Deployment,
    projection: &str,
) -> Option<(String, i64)> {
    let item = client
        .get_item()
        .table_name(deployment.output("CheckpointsTableName"))
        .key("pk", AttributeValue::S(format!("#lease|{projection}")))
        .consistent_read(true)
        .send()
        .await
        .expect("read the lease")
        .item?;
    let holder = item.get("holder")?.as_s().ok()?.clone();
    let expires = item.get("expires_at_ms")?.as_n().ok()?.parse().ok()?;
    Some((holder, expires))
}

async fn write_lease_item(
    client: &aws_sdk_dynamodb::Client,
    deployment: &Deployment,
    projection: &str,
    holder: &str,
    expires_at_ms: i64,
) {
    client
        .put_item()
        .table_name(deployment.output("CheckpointsTableName"))
        .item("pk", AttributeValue::S(format!("#lease|{projection}")))
        .item("holder", AttributeValue::S(holder.to_owned()))
        .item("expires_at_ms", AttributeValue::N(expires_at_ms.to_string()))
        .send()
        .await
        .expect("write the lease");
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Runs `command`; asserts it was refused because `holder` holds the
/// lease: exit status 2, one line naming the holder and until when.
fn assert_refused(mut command: Command, holder: &str) {
    let output = command.output().expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("already running") && stderr.contains(holder) && stderr.contains("until"),
        "names the holder and until when: {stderr}"
    );
}

/// Given a truncate rebuild of sales_by_day --aws holding its lease (it
/// settles 4 s before emptying), when another rebuild of sales_by_day
/// starts, then it is refused (exit 2, naming the first run and until when);
/// the first is then SIGKILLed: the next run is refused until the lease (2 s)
/// expires, then takes it, resumes and releases it. A lease item written
/// with an expiry in the past blocks nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_rebuild_on_aws_is_refused_until_the_lease_is_released_or_expires() {
    let deployment = tokio::task::spawn_blocking(deploy_template).await.expect("deploy");
    let sdk = tally_emulator::sdk_config().await;
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let config = DynamoConfig::from_settings(deployment.env("CommandApiFunction")).expect("settings");
    append_in_chunks(&DynamoStore::new(client.clone(), config), order_appends(0..100, 5), 20).await;
    let args = ["rebuild", "sales_by_day", "--truncate"];

    // A lease of 9 s, renewed every 3 s: after the kill it has seconds left,
    // enough for the refusal below on a loaded machine.
    let mut first = tally_with(&deployment, &args, &["--settle", "4", "--lease-ttl", "9"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the first rebuild");
    let pid = format!("pid {}", first.id());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !lease_item(&client, &deployment, "sales_by_day")
        .await
        .is_some_and(|(holder, _)| holder.ends_with(&pid))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the first rebuild never took its lease"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_refused(tally(&deployment, &["rebuild", "sales_by_day"]), &pid);

    first.kill().expect("SIGKILL");
    first.wait().expect("reap");
    let (_, expires) = lease_item(&client, &deployment, "sales_by_day")
        .await
        .expect("the killed run's lease is left behind");
    assert!(expires > now_ms() + 200, "not yet expired");
    assert_refused(tally(&deployment, &args), &pid);
    tokio::time::sleep(Duration::from_millis((expires - now_ms()).max(0) as u64 + 200)).await;
    let stdout = finished(tally(&deployment, &args).output().expect("run"));
    assert!(
        stdout.contains("sales_by_day") && stdout.contains("resumed"),
        "{stdout}"
    );
    assert_eq!(lease_item(&client, &deployment, "sales_by_day").await, None, "released");
    assert_eq!(differences(&deployment, &client, "sales_by_day").await, (0, 0));

    write_lease_item(
        &client,
        &deployment,
        "sales_by_day",
        "ghost@nowhere pid 1",
        now_ms() - 1_000,
    )
    .await;
    finished(tally(&deployment, &["rebuild", "sales_by_day"]).output().expect("run"));
    write_lease_item(
        &client,
        &deployment,
        "sales_by_day",
        "ghost@nowhere pid 1",
        now_ms() + 60_000,
    )
    .await;
    assert_refused(tally(&deployment, &["rebuild", "sales_by_day"]), "ghost@nowhere pid 1");
}
