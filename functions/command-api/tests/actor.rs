//! The caller API Gateway's authorizer established is each event's `actor`:
//! real-shaped HTTP API payloads with an IAM and a JWT authorizer context
//! (`events/command-api/1*-caller.json`) go through lambda_http's request
//! parsing and the router as `main.rs` wires it, over the DynamoDB store on
//! the emulator, and the stored events name the caller; a header claiming
//! an actor changes nothing.

use std::sync::Arc;

use axum::Router;
use lambda_http::http::HeaderValue;
use lambda_http::tower::ServiceExt;
use tally_api::{ApiConfig, CommandState};
use tally_core::{EventStore, StreamId};
use tally_store_dynamodb::DynamoStore;

fn payload(name: &str) -> lambda_http::Request {
    let (_, text) = tally_emulator::payloads::payload_files("command-api")
        .into_iter()
        .find(|(file, _)| file == name)
        .unwrap_or_else(|| panic!("events/command-api/{name}.json"));
    lambda_http::request::from_str(&text).unwrap_or_else(|e| panic!("{name}: not an API Gateway request: {e}"))
}

async fn send(router: &Router, request: lambda_http::Request) -> u16 {
    let response = router.clone().oneshot(request).await.expect("router is infallible");
    response.status().as_u16()
}

/// No authorizer: no actor, even with a header claiming one. IAM: the
/// principal's ARN. JWT: the token's `sub`. The forged `x-tally-actor`
/// header in both authenticated payloads is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authorizer_context_names_the_actor() {
    let client = tally_emulator::dynamodb(None).await;
    let tables = tally_emulator::create_tables(&client, Some(1)).await;
    let store = Arc::new(DynamoStore::new(client, tables));
    // As main.rs wires it.
    let router = tally_api::actor::from_api_gateway(tally_api::command_router(CommandState::new(
        store.clone(),
        ApiConfig::default(),
    )));

    let mut unauthenticated = payload("01-register-sku");
    unauthenticated.headers_mut().insert(
        "x-tally-actor",
        HeaderValue::from_static("arn:aws:iam::123456789012:root"),
    );
    assert_eq!(send(&router, unauthenticated).await, 201);
    assert_eq!(send(&router, payload("10-receive-stock-iam-caller")).await, 200);
    assert_eq!(send(&router, payload("11-receive-stock-jwt-caller")).await, 200);

    let stream = StreamId::of("inventory", "SKU-EV-1").expect("stream id");
    let events = store.read_range(&stream, 1, None).await.expect("read the stream");
    let actors: Vec<Option<&str>> = events.iter().map(|e| e.metadata.actor.as_deref()).collect();
    assert_eq!(
        actors,
        [
            None,
            Some("arn:aws:sts::123456789012:assumed-role/tally-operator/ops-alice"),
            Some("8c1f2d4e-7b3a-4e9d-a1c6-2f5e8d9c0b7a"),
        ]
    );
}
