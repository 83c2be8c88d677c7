//! Every `events/query-api/*.json` payload (API Gateway HTTP API v2 GET
//! requests) goes through the query router as the Lambda receives it,
//! against the template deployed into the emulator, after the
//! `events/command-api/` walkthrough (register, receive, adjust, place,
//! confirm, ship) has gone through the command router. No projector runs:
//! inventory is inline, and the order comes from the events table through
//! `min_version`.

use std::sync::Arc;

use http_body_util::BodyExt;
use lambda_http::tower::ServiceExt;
use serde_json::Value;
use tally_api::{ApiConfig, CommandState, QueryState};
use tally_store_dynamodb::{DynamoConfig, DynamoReadModels, DynamoStore, ReadTables};

async fn call(router: &axum::Router, name: &str, text: &str) -> (u16, Value) {
    let request =
        lambda_http::request::from_str(text).unwrap_or_else(|e| panic!("{name}: not an API Gateway request: {e}"));
    let response = router.clone().oneshot(request).await.expect("router is infallible");
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{name}: body is not JSON: {e}"));
    (status, body)
}

/// Each query payload answers what its name promises.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_payload_gets_its_answer() {
    let deployment = tokio::task::spawn_blocking(tally_emulator::deploy::deploy_template)
        .await
        .expect("deploy");
    let client = aws_sdk_dynamodb::Client::new(&tally_emulator::sdk_config().await);
    let commands = tally_api::command_router(CommandState::new(
        Arc::new(DynamoStore::new(
            client.clone(),
            DynamoConfig::from_settings(deployment.env("CommandApiFunction")).expect("command settings"),
        )),
        ApiConfig::default(),
    ));
    for (name, text) in tally_emulator::payloads::payload_files("command-api").iter().take(6) {
        let (status, body) = call(&commands, name, text).await;
        assert!(status < 300, "walkthrough step {name}: {status} {body}");
    }

    let env = deployment.env("QueryApiFunction");
    let store = DynamoStore::new(
        client.clone(),
        DynamoConfig::reader_from_settings(env).expect("settings"),
    );
    let reads = DynamoReadModels::new(client, ReadTables::from_settings(env).expect("tables"));
    let queries = tally_api::query_router(QueryState::new(Arc::new(store), Arc::new(reads), ApiConfig::default()));
    let answers = tally_emulator::payloads::payload_files("query-api");
    assert!(answers.len() >= 8, "events/query-api holds the route payloads");
    for (name, text) in &answers {
        let (status, body) = call(&queries, name, text).await;
        let expected = match name.as_str() {
            n if n.contains("unknown") => 404,
            n if n.contains("bad-") => 400,
            _ => 200,
        };
        assert_eq!(status, expected, "{name}: {body}");
        match name.as_str() {
            n if n.contains("get-inventory") => {
                // The walkthrough's order was shipped: nothing is reserved any more.
                assert_eq!(body["sku"], "SKU-EV-1", "{body}");
                assert_eq!(body["reserved"], 0, "{body}");
            }
            n if n.contains("get-order") => {
                assert_eq!(
                    (body["status"].as_str(), body["version"].as_u64()),
                    (Some("shipped"), Some(3)),
                    "{body}"
                );
            }
            n if n.contains("stream-events") => assert_eq!(body["events"].as_array().map(Vec::len), Some(3)),
            n if n.contains("openapi") => assert!(body["paths"].is_object()),
            n if n.contains("customer-orders") || n.contains("sales") => {
                assert!(body.is_object(), "{body}")
            }
            _ if expected >= 400 => assert!(body["error"].is_string(), "{name}: {body}"),
            _ => {}
        }
    }
}
