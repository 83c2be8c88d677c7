//! `tally verify|import|stream --aws` as an operator runs them, against
//! template.yaml deployed into the emulator: the real binary, the stack's
//! tables named by `--stage`, data written through the command Lambda's
//! router and projected by the projector's runtime, tampering done with
//! the SDK around the store.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

mod support;

use aws_sdk_dynamodb::types::{AttributeValue, Select};
use serde_json::{Value, json};
use support::texts;
use tally_api::{ApiConfig, CommandState, QueryState};
use tally_core::deliver;
use tally_core::projection::History;
use tally_emulator::deploy::{Deployment, deploy_template};
use tally_store_dynamodb::schema::{EVENTS_PK, EVENTS_SK, READ_PK};
use tally_store_dynamodb::{DynamoConfig, DynamoHistory, DynamoReadModels, DynamoStore, ReadTables, Slot, SlotTables};

/// `tally <args> --aws --stage <stage>` against the emulator.
fn tally_on(stage: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(args)
        .args(["--aws", "--stage", stage])
        .env_remove("TALLY_DB")
        .env_remove("TALLY_STAGE")
        .env("RUST_LOG", "warn")
        .env("AWS_ENDPOINT_URL", tally_emulator::endpoint())
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .output()
        .expect("run tally")
}

/// `tally <args>` on the deployed stack.
fn tally(deployment: &Deployment, args: &[&str]) -> Output {
    tally_on(deployment.stack.trim_start_matches("tally-"), args)
}

/// The exit status, stdout and stderr of a run, for assertions.
fn outcome(output: &Output) -> (Option<i32>, String, String) {
    let (stdout, stderr) = texts(output);
    (output.status.code(), stdout, stderr)
}

/// The stack's handlers in-process: the command and query Lambdas' routers,
/// each served on a local port, built from the environment the template
/// gives their functions.
struct Stack {
    deployment: Deployment,
    client: aws_sdk_dynamodb::Client,
    store: DynamoStore,
    commands: String,
    queries: String,
}

/// Serves `router` on a port the OS picks; returns its address.
async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    tokio::spawn(async move { axum::serve(listener, router).await });
    address
}

impl Stack {
    async fn deploy() -> Self {
        let deployment = tokio::task::spawn_blocking(deploy_template).await.expect("deploy");
        let sdk = tally_emulator::sdk_config().await;
        let client = aws_sdk_dynamodb::Client::new(&sdk);

        let store_config = DynamoConfig::from_settings(deployment.env("CommandApiFunction")).expect("command settings");
        let config = ApiConfig::with_snapshot_interval(store_config.snapshot_interval);
        let store = DynamoStore::new(client.clone(), store_config);
        let commands = tally_api::command_router(CommandState::new(Arc::new(store.clone()), config));

        let query_env = deployment.env("QueryApiFunction");
        let reader = DynamoStore::new(
            client.clone(),
            DynamoConfig::reader_from_settings(query_env).expect("query settings"),
        );
        let reads = DynamoReadModels::new(
            client.clone(),
            ReadTables::from_settings(query_env).expect("query tables"),
        );
        let queries = tally_api::query_router(QueryState::new(Arc::new(reader), Arc::new(reads), config));

        Self {
            deployment,
            client,
            store,
            commands: serve(commands).await,
            queries: serve(queries).await,
        }
    }

    /// A command through the command Lambda's router; it must succeed.
    async fn command(&self, path: &str, body: Value) {
        let (address, uri, text) = (self.commands.clone(), path.to_owned(), body.to_string());
        let (status, answer) = tokio::task::spawn_blocking(move || support::request(&address, "POST", &uri, &text))
            .await
            .expect("request");
        assert!((200..300).contains(&status), "POST {path} {body} → {status} {answer}");
    }

    /// A query through the query Lambda's router.
    async fn get(&self, path: &str) -> (u16, Value) {
        let (address, uri) = (self.queries.clone(), path.to_owned());
        tokio::task::spawn_blocking(move || support::request(&address, "GET", &uri, ""))
            .await
            .expect("request")
    }

    fn events_table(&self) -> &str {
        self.deployment.output("EventsTableName")
    }

    /// Items in the events table, counted with a consistent Scan.
    async fn event_items(&self) -> i64 {
        let mut count = 0;
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(self.events_table())
                .consistent_read(true)
                .select(Select::Count)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .expect("count the events");
            count += i64::from(page.count);
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return count,
            }
        }
    }

    /// Two SKUs with stock, and orders o-1..o-6: o-1 shipped, o-2 and o-5
    /// confirmed, o-3 cancelled, the others placed.
    async fn seed_orders(&self) {
        for sku in ["SKU-1", "SKU-2"] {
            self.command("/inventory", json!({ "sku": sku, "name": format!("Product {sku}") }))
                .await;
            self.command(&format!("/inventory/{sku}/receipts"), json!({ "quantity": 100 }))
                .await;
        }
        for i in 1..=6u64 {
            let order = format!("o-{i}");
            let lines = json!([
                { "sku": "SKU-1", "quantity": i, "unit_price_cents": 1250 },
                { "sku": "SKU-2", "quantity": 1, "unit_price_cents": 499 },
            ]);
            self.command(
                "/orders",
                json!({ "order_id": order, "customer_id": format!("c-{}", i % 2), "lines": lines }),
            )
            .await;
            let next: &[&str] = match i {
                1 => &["confirm", "ship"],
                2 | 5 => &["confirm"],
                3 => &["cancel"],
                _ => &[],
            };
            for step in next {
                self.command(&format!("/orders/{order}/{step}"), json!({})).await;
            }
        }
    }

    /// Projects every order event into the live (blue) slot of
    /// `projection` with the projector's own runtime (`deliver` over the
    /// slot's sink), as the projector Lambda does for each message.
    async fn project(&self, projection: &str) {
        let env = self.deployment.env("QueryApiFunction");
        let tables = SlotTables::from_settings(projection, env)
            .expect("settings")
            .expect("projection");
        let sink = tables.sink(&self.client, Slot::Blue);
        let history = DynamoHistory::new(self.client.clone(), self.events_table(), 2);
        let mut at = history.origin();
        while !at.is_done() {
            let chunk = history
                .read_after(&at, 500, Some("order"))
                .await
                .expect("read the events");
            for event in &chunk.events {
                deliver(&self.store, &sink, event).await.expect("project");
            }
            at = chunk.end;
        }
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write the file");
    path.to_str().expect("utf-8 path").to_owned()
}

/// The rows of `tally verify chain`'s table of broken streams (stream, version).
fn broken_rows(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter(|line| line.starts_with("order-") || line.starts_with("inventory-"))
        .map(|line| {
            let mut cells = line.split_whitespace();
            let stream = cells.next().unwrap_or_default().to_owned();
            let version = cells.next().unwrap_or_default().to_owned();
            (stream, version)
        })
        .collect()
}

/// Given a stack whose events came through the command path, `verify chain
/// --aws` holds (exit 0); when one stored event's `data` is changed by hand,
/// it exits 1 naming exactly that stream and version and no other stream.
/// `stream show|state --aws` read the same table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_chain_and_stream_read_the_stacks_events_table() {
    let stack = Stack::deploy().await;
    stack.seed_orders().await;

    let (code, stdout, stderr) = outcome(&tally(&stack.deployment, &["verify", "chain", "--segments", "3"]));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("in 8 streams") && stdout.contains("every chain holds"),
        "{stdout}"
    );
    let (code, stdout, stderr) = outcome(&tally(&stack.deployment, &["verify", "chain", "--stream", "order-o-2"]));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("verified 2 events in 1 streams"), "{stdout}");

    // stream show / state, before anything is tampered with.
    let (code, stdout, stderr) = outcome(&tally(&stack.deployment, &["stream", "show", "order-o-1", "--json"]));
    assert_eq!(code, Some(0), "{stderr}");
    let shown: Value = serde_json::from_str(&stdout).expect("--json prints JSON");
    let listed: Vec<(u64, &str)> = shown["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| (e["version"].as_u64().unwrap_or(0), e["type"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        listed,
        [(1, "OrderPlaced"), (2, "OrderConfirmed"), (3, "OrderShipped")],
        "{shown}"
    );
    let (code, stdout, stderr) = outcome(&tally(
        &stack.deployment,
        &["stream", "state", "inventory-SKU-1", "--at", "1", "--json"],
    ));
    assert_eq!(code, Some(0), "{stderr}");
    let at_one: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(at_one["version"], 1, "{at_one}");
    assert_eq!(
        (
            at_one["state"]["on_hand"].as_u64(),
            at_one["state"]["reserved"].as_u64()
        ),
        (Some(0), Some(0))
    );
    let (_, stdout, _) = outcome(&tally(
        &stack.deployment,
        &["stream", "state", "inventory-SKU-1", "--json"],
    ));
    let now: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(
        now["version"], 10,
        "registered, received, 6 reservations, 1 commit, 1 release: {now}"
    );
    let (code, stdout, stderr) = outcome(&tally(
        &stack.deployment,
        &["stream", "state", "inventory-SKU-1", "--at", "yesterday"],
    ));
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("neither a version number nor an RFC 3339 time") && stderr.lines().count() == 1,
        "{stderr}"
    );

    // One event's data changed by hand in the events table.
    let key = |stream: &str, version: u64| {
        [
            (EVENTS_PK.to_owned(), AttributeValue::S(stream.to_owned())),
            (EVENTS_SK.to_owned(), AttributeValue::N(version.to_string())),
        ]
    };
    stack
        .client
        .update_item()
        .table_name(stack.events_table())
        .set_key(Some(key("order-o-2", 2).into()))
        .update_expression("SET #data = :data")
        .expression_attribute_names("#data", "data")
        .expression_attribute_values(":data", AttributeValue::S(r#"{"forged":true}"#.to_owned()))
        .send()
        .await
        .expect("tamper");

    let (code, stdout, stderr) = outcome(&tally(&stack.deployment, &["verify", "chain"]));
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert_eq!(
        broken_rows(&stdout),
        [("order-o-2".to_owned(), "2".to_owned())],
        "{stdout}"
    );
    assert!(stdout.contains("1 broken stream"), "{stdout}");
    let (code, stdout, _) = outcome(&tally(&stack.deployment, &["verify", "chain", "--stream", "order-o-2"]));
    assert_eq!(code, Some(1), "{stdout}");
    assert_eq!(
        broken_rows(&stdout),
        [("order-o-2".to_owned(), "2".to_owned())],
        "{stdout}"
    );
    let (code, _, _) = outcome(&tally(&stack.deployment, &["verify", "chain", "--stream", "order-o-1"]));
    assert_eq!(code, Some(0), "another stream still holds");
    let (code, _, stderr) = outcome(&tally(
        &stack.deployment,
        &["verify", "chain", "--stream", "order-o-99"],
    ));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("stream order-o-99 has no events"), "{stderr}");
}

/// Given order_summary projected by the projector's runtime into its live
/// table, `verify projections --aws` finds nothing (exit 0); when one row is
/// changed by hand, it exits 1 and reports exactly that row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_projections_reports_exactly_the_row_changed_by_hand() {
    let stack = Stack::deploy().await;
    stack.seed_orders().await;
    stack.project("order_summary").await;
    stack.project("sales_by_day").await;

    for projection in ["order_summary", "sales_by_day"] {
        let (code, stdout, stderr) = outcome(&tally(&stack.deployment, &["verify", "projections", projection]));
        assert_eq!(code, Some(0), "{projection}: {stdout}{stderr}");
        assert!(stdout.contains("0 differing, 0 missing, 0 extra"), "{stdout}");
    }
    let (_, stdout, _) = outcome(&tally(&stack.deployment, &["verify", "projections", "order_summary"]));
    assert!(stdout.contains("of 6 rows"), "every order has its row: {stdout}");

    stack
        .client
        .update_item()
        .table_name(stack.deployment.output("OrderSummaryTableName"))
        .key(READ_PK, AttributeValue::S("o-3".to_owned()))
        .update_expression("SET #status = :status, #total = :total")
        .expression_attribute_names("#status", "status")
        .expression_attribute_names("#total", "total_cents")
        .expression_attribute_values(":status", AttributeValue::S("shipped".to_owned()))
        .expression_attribute_values(":total", AttributeValue::N("1".to_owned()))
        .send()
        .await
        .expect("change the row");

    let (code, stdout, stderr) = outcome(&tally(&stack.deployment, &["verify", "projections", "order_summary"]));
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    let reported: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("DIFFERS") || l.starts_with("MISSING") || l.starts_with("EXTRA"))
        .collect();
    assert_eq!(reported, ["DIFFERS o-3"], "{stdout}");
    assert!(stdout.contains("1 differing, 0 missing, 0 extra of 6 rows"), "{stdout}");
    assert!(
        stdout.contains("status") && stdout.contains("\"cancelled\"") && stdout.contains("\"shipped\""),
        "the field, replayed and stored: {stdout}"
    );
    let (code, _, _) = outcome(&tally(&stack.deployment, &["verify", "projections", "sales_by_day"]));
    assert_eq!(code, Some(0), "the other model is untouched");
}

const ORDERS_CSV: &str = "\
order_id,customer_id,status,sku,quantity,unit_price_cents,placed_at
o-100,c-1,placed,SKU-1,3,1250,2025-12-01T09:30:00Z
o-100,c-1,placed,SKU-2,1,499,2025-12-01T09:30:00Z
o-101,c-2,confirmed,SKU-1,2,1250,2025-12-02T10:00:00Z
";

/// 60 SKUs (more than one DynamoDB transaction takes): SKU-1 holds 10,
/// SKU-2 4, SKU-3 none, the rest 7 each.
fn inventory_csv() -> String {
    let mut text = "sku,name,on_hand\n".to_owned();
    for i in 1..=60 {
        let on_hand = match i {
            1 => 10,
            2 => 4,
            3 => 0,
            _ => 7,
        };
        text.push_str(&format!("SKU-{i},Widget {i},{on_hand}\n"));
    }
    text
}

/// Given a fresh stack, a file with one bad row is refused naming its line
/// and nothing is written; good files bring the state in (read back through
/// the query API); importing them again writes nothing new; an order that
/// the stored stock cannot hold is refused before anything is written; a dry
/// run plans against the real tables and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_on_aws_is_validated_whole_and_idempotent() {
    let stack = Stack::deploy().await;
    let dir = tempfile::tempdir().expect("temp dir");

    let bad = write(
        dir.path(),
        "bad.csv",
        "sku,name,on_hand\nSKU-1,Blue widget,10\nSKU 2,Red widget,4\nSKU-3,Green widget,1\n",
    );
    let (code, stdout, stderr) = outcome(&tally(&stack.deployment, &["import", &bad]));
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("line 3, field sku") && stderr.contains("nothing was written"),
        "{stderr}"
    );
    assert_eq!(stack.event_items().await, 0);

    let inventory = write(dir.path(), "inventory.csv", &inventory_csv());
    let orders = write(dir.path(), "open-orders.csv", ORDERS_CSV);
    let (code, stdout, stderr) = outcome(&tally(&stack.deployment, &["import", &inventory]));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("imported 60 SKUs and 0 orders"), "{stdout}");
    let (code, stdout, stderr) = outcome(&tally(&stack.deployment, &["import", &orders]));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("imported 0 SKUs and 2 orders"), "{stdout}");

    let (status, sku) = stack.get("/inventory/SKU-1").await;
    assert_eq!(status, 200, "{sku}");
    assert_eq!(
        (
            sku["on_hand"].as_u64(),
            sku["reserved"].as_u64(),
            sku["available"].as_u64()
        ),
        (Some(10), Some(5), Some(5)),
        "{sku}"
    );
    let (status, last) = stack.get("/inventory/SKU-60").await;
    assert_eq!((status, last["on_hand"].as_u64()), (200, Some(7)), "{last}");
    let (status, events) = stack.get("/streams/order-o-100/events").await;
    assert_eq!(status, 200, "{events}");
    assert_eq!(events["events"][0]["type"], "OrderImported");
    assert_eq!(events["events"][0]["metadata"]["source"], "open-orders.csv:2");

    let written = stack.event_items().await;
    assert_eq!(written, 60 + 2 + 3, "60 SKUs, 2 orders, 3 reservations");
    for file in [&inventory, &orders] {
        let (code, stdout, stderr) = outcome(&tally(&stack.deployment, &["import", file]));
        assert_eq!(code, Some(0), "{stdout}{stderr}");
        assert!(stdout.contains("imported 0 SKUs and 0 orders"), "{stdout}");
    }
    assert_eq!(stack.event_items().await, written, "a second run writes nothing");

    // Validated against the stored stock: SKU-3 holds none, so line 3 fails
    // and the good order on line 2 is not written either.
    let oversold = write(
        dir.path(),
        "more-orders.csv",
        "order_id,customer_id,status,sku,quantity,unit_price_cents\n\
         o-200,c-3,placed,SKU-4,1,100\n\
         o-201,c-3,placed,SKU-3,1,100\n",
    );
    let (code, stdout, stderr) = outcome(&tally(&stack.deployment, &["import", &oversold]));
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("line 3, field quantity") && stderr.contains("nothing was written"),
        "{stderr}"
    );
    assert_eq!(stack.event_items().await, written);

    // One order is one transaction with its reservations: 1 item, plus 3
    // per line. The domain's most lines (32) fit; 33 are refused before
    // anything is written.
    let order_of = |order: &str, lines: std::ops::RangeInclusive<u32>| {
        let mut text = "order_id,customer_id,status,sku,quantity,unit_price_cents\n".to_owned();
        for i in lines {
            text.push_str(&format!("{order},c-4,placed,SKU-{i},1,100\n"));
        }
        text
    };
    let too_big = write(dir.path(), "too-big.csv", &order_of("o-300", 4..=36));
    let (code, stdout, stderr) = outcome(&tally(&stack.deployment, &["import", &too_big]));
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("line 2, field lines") && stderr.contains("at most 32"),
        "{stderr}"
    );
    assert_eq!(stack.event_items().await, written);
    let largest = write(dir.path(), "largest.csv", &order_of("o-301", 4..=35));
    let (code, stdout, stderr) = outcome(&tally(&stack.deployment, &["import", &largest]));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let written = written + 1 + 32;
    assert_eq!(stack.event_items().await, written);

    let new_sku = write(
        dir.path(),
        "new.csv",
        "sku,name,on_hand\nSKU-61,New widget,1\nSKU-1,Widget 1,10\n",
    );
    let (code, stdout, stderr) = outcome(&tally(&stack.deployment, &["import", &new_sku, "--dry-run"]));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("would import 1 SKUs and 0 orders") && stdout.contains("1 already imported"),
        "planned against the stack's tables: {stdout}"
    );
    assert_eq!(stack.event_items().await, written, "a dry run writes nothing");
}

/// `--aws` with a stage whose tables do not exist: every command ends with
/// exit 2 and one clear line naming the table, never a panic or an empty
/// store that "verifies" fine.
#[test]
fn a_stage_without_tables_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = write(dir.path(), "inventory.csv", "sku,name,on_hand\nSKU-1,Blue widget,10\n");
    let runs: [&[&str]; 8] = [
        &["rebuild", "order_summary"],
        &["rebuild", "sales_by_day", "--truncate"],
        &["verify", "chain"],
        &["verify", "chain", "--stream", "order-o-1"],
        &["verify", "projections", "order_summary"],
        &["import", &file],
        &["stream", "show", "order-o-1"],
        &["stream", "state", "order-o-1", "--at", "2"],
    ];
    for args in runs {
        let (code, stdout, stderr) = outcome(&tally_on("nosuchstage", args));
        assert_eq!(code, Some(2), "{args:?}: {stdout}{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.contains("tally-nosuchstage-events") && !stderr.contains("panicked"),
            "{args:?}: {stderr}"
        );
    }
}
