//! Every `events/command-api/*.json` payload (API Gateway HTTP API v2
//! requests, the shape the Lambda receives) goes through the command
//! router over the DynamoDB store on the emulator, in file order, and gets
//! the answer its name promises.

use std::sync::Arc;

use http_body_util::BodyExt;
use lambda_http::tower::ServiceExt;
use serde_json::Value;
use tally_api::{ApiConfig, CommandState};
use tally_store_dynamodb::DynamoStore;

fn expected_status(name: &str) -> u16 {
    match name {
        n if n.contains("register") || n.contains("place-order") && !n.contains("insufficient") => 201,
        n if n.contains("insufficient") || n.contains("cancel-shipped") => 422,
        n if n.contains("malformed") => 400,
        _ => 200,
    }
}

/// Each payload file, fed to the command router as the Lambda receives it,
/// answers its expected status with a JSON body; a replayed idempotent
/// order answers the first response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_payload_file_gets_its_answer() {
    let client = tally_emulator::dynamodb(None).await;
    let tables = tally_emulator::create_tables(&client, Some(1)).await;
    let store = DynamoStore::new(client, tables);
    // As main.rs wires it.
    let router = tally_api::actor::from_api_gateway(tally_api::command_router(CommandState::new(
        Arc::new(store),
        ApiConfig::default(),
    )));

    let payloads = tally_emulator::payloads::payload_files("command-api");
    assert!(payloads.len() >= 8, "events/command-api holds the route payloads");
    let mut placed: Option<Value> = None;
    for (name, text) in &payloads {
        let request =
            lambda_http::request::from_str(text).unwrap_or_else(|e| panic!("{name}: not an API Gateway request: {e}"));
        let response = router.clone().oneshot(request).await.expect("router is infallible");
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.expect("body").to_bytes();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{name}: body is not JSON: {e}"));
        assert_eq!(status, expected_status(name), "{name}: {body}");
        if status >= 400 {
            assert!(body["error"].is_string(), "{name}: {body}");
        } else {
            assert!(
                body["stream_id"].is_string() && body["version"].is_u64(),
                "{name}: {body}"
            );
        }
        if name.contains("04-place-order") {
            placed = Some(body);
        }
    }
    // The order payload carries an Idempotency-Key: sending it again replays.
    let (_, order) = payloads
        .iter()
        .find(|(name, _)| name.contains("04-place-order"))
        .expect("order payload");
    let request = lambda_http::request::from_str(order).expect("request");
    let response = router.oneshot(request).await.expect("router is infallible");
    assert_eq!(response.status().as_u16(), 201);
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    let replayed: Value = serde_json::from_slice(&bytes).expect("JSON");
    assert_eq!(Some(replayed), placed);
}
