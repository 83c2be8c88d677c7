//! The authenticated caller of a command, recorded as the `actor` of every
//! event it writes. On AWS the caller is whoever API Gateway's authorizer
//! let through: the IAM principal's ARN (SigV4) or the JWT's `sub` claim,
//! read from the request context API Gateway attaches to the Lambda event.
//! The command Lambda maps that context to an [`Actor`] request extension
//! ([`from_api_gateway`]); the router hands it to the command context.
//!
//! This module must never take the actor from anything a client sends
//! (a header, the body, the query): a client can write any header, but
//! only API Gateway writes the request context, after the authorizer
//! checked the signature or the token. `tally serve` has no
//! authentication, so its events carry no actor.

use std::fmt;

use axum::Router;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use lambda_http::request::RequestContext;

/// Longest actor kept (an IAM role-session ARN is at most ~2 KiB; a `sub`
/// is usually a UUID). Longer is not a caller we can name faithfully, and
/// the value lands in every event item.
const ACTOR_MAX_LEN: usize = 2048;

/// Who sent a command, as the authorizer established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(String);

impl Actor {
    /// The caller API Gateway's HTTP API authorizer established: the IAM
    /// principal's ARN, or the JWT's `sub` claim. `None` for a request no
    /// authorizer checked (an unauthenticated stage, or no API Gateway at all).
    pub fn from_request_context(context: &RequestContext) -> Option<Self> {
        // The HTTP API (payload 2.0) is the only integration the template
        // has; a REST API or ALB context names nobody here.
        let RequestContext::ApiGatewayV2(context) = context else {
            return None;
        };
        let authorizer = context.authorizer.as_ref()?;
        let iam = authorizer.iam.as_ref().and_then(|iam| iam.user_arn.as_deref());
        let jwt = authorizer
            .jwt
            .as_ref()
            .and_then(|jwt| jwt.claims.get("sub"))
            .map(String::as_str);
        iam.or(jwt).and_then(Self::parse)
    }

    /// An actor named `name`: 1 to 2048 bytes without control characters
    /// (an ARN, or a `sub`, which an issuer may spell in any Unicode), or
    /// `None`: a line break in an actor would forge lines in logs and tables.
    pub fn parse(name: &str) -> Option<Self> {
        let valid = !name.is_empty() && name.len() <= ACTOR_MAX_LEN && !name.chars().any(char::is_control);
        valid.then(|| Self(name.to_owned()))
    }

    /// The actor as recorded in event metadata.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The actor of the request being handled, when the router was given one
    /// (see [`scoped`]).
    pub(crate) fn current() -> Option<Self> {
        CURRENT.try_with(Clone::clone).ok().flatten()
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

tokio::task_local! {
    /// The [`Actor`] extension of the request being handled. The command
    /// handlers' extractors (method, URI, headers, body) do not reach the
    /// request's extensions, so the router's outermost layer lifts the
    /// extension into this task-local for the handler's future.
    static CURRENT: Option<Actor>;
}

/// The command Lambda's outer layer: sets the request's [`Actor`] extension
/// from the API Gateway request context lambda_http attached, and removes
/// any other (extensions do not come from the wire, but only the
/// authorizer's word may count).
pub fn from_api_gateway(router: Router) -> Router {
    router.layer(middleware::map_request(actor_from_context))
}

async fn actor_from_context(mut request: Request) -> Request {
    let actor = request
        .extensions()
        .get::<RequestContext>()
        .and_then(Actor::from_request_context);
    let extensions = request.extensions_mut();
    extensions.remove::<Actor>();
    if let Some(actor) = actor {
        extensions.insert(actor);
    }
    request
}

/// Makes the request's [`Actor`] extension visible to the handlers (see
/// [`CURRENT`]). Every served router has this layer.
pub(crate) fn scoped(router: Router) -> Router {
    router.layer(middleware::from_fn(scope_actor))
}

async fn scope_actor(request: Request, next: Next) -> Response {
    let actor = request.extensions().get::<Actor>().cloned();
    CURRENT.scope(actor, next.run(request)).await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::Request as HttpRequest;
    use http_body_util::BodyExt;
    use lambda_http::RequestExt;
    use tower::ServiceExt;

    use super::*;
    use crate::{ApiConfig, AppState};

    fn context_of(payload: serde_json::Value) -> RequestContext {
        lambda_http::request::from_str(&payload.to_string())
            .expect("an API Gateway HTTP API request")
            .request_context()
    }

    fn payload(authorizer: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "version": "2.0",
            "routeKey": "POST /inventory",
            "rawPath": "/inventory",
            "rawQueryString": "",
            "headers": { "content-type": "application/json" },
            "requestContext": {
                "accountId": "123456789012",
                "apiId": "a1b2c3d4e5",
                "authorizer": authorizer,
                "domainName": "a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com",
                "domainPrefix": "a1b2c3d4e5",
                "http": { "method": "POST", "path": "/inventory", "protocol": "HTTP/1.1",
                          "sourceIp": "203.0.113.7", "userAgent": "curl/8.5.0" },
                "requestId": "req-actor",
                "routeKey": "POST /inventory",
                "stage": "$default",
                "time": "23/Nov/2026:06:00:00 +0000",
                "timeEpoch": 1795413600000_u64
            },
            "isBase64Encoded": false,
            "body": "{}"
        })
    }

    /// An IAM (SigV4) authorizer context names the principal's ARN.
    #[test]
    fn iam_context_names_the_user_arn() {
        let context = context_of(payload(serde_json::json!({ "iam": {
            "accessKey": "ASIAEXAMPLE", "accountId": "123456789012", "callerId": "AROAEXAMPLE:ops",
            "principalOrgId": null, "userId": "AROAEXAMPLE:ops",
            "userArn": "arn:aws:sts::123456789012:assumed-role/tally-ops/ops"
        }})));
        assert_eq!(
            Actor::from_request_context(&context).map(|a| a.to_string()),
            Some("arn:aws:sts::123456789012:assumed-role/tally-ops/ops".to_owned())
        );
    }

    /// A JWT authorizer context names the token's `sub`, not its other claims.
    #[test]
    fn jwt_context_names_the_sub_claim() {
        let context = context_of(payload(serde_json::json!({ "jwt": {
            "claims": { "iss": "https://issuer.example.com/", "aud": "tally", "sub": "user-8c1f", "email": "a@example.com" },
            "scopes": null
        }})));
        assert_eq!(
            Actor::from_request_context(&context).map(|a| a.to_string()),
            Some("user-8c1f".to_owned())
        );
    }

    /// No authorizer (Authorizer=NONE), or a token without `sub`: no actor.
    #[test]
    fn unauthenticated_context_names_nobody() {
        let mut none = payload(serde_json::Value::Null);
        if let Some(context) = none["requestContext"].as_object_mut() {
            context.remove("authorizer");
        }
        assert_eq!(Actor::from_request_context(&context_of(none)), None);
        let no_sub = payload(serde_json::json!({ "jwt": { "claims": { "iss": "x" }, "scopes": null } }));
        assert_eq!(Actor::from_request_context(&context_of(no_sub)), None);
    }

    /// Names that could not be a principal are not recorded.
    #[test]
    fn parse_refuses_empty_long_and_control_characters() {
        assert_eq!(Actor::parse(""), None);
        assert_eq!(Actor::parse("tab\there"), None);
        assert_eq!(Actor::parse("evil\nforged-line"), None);
        assert_eq!(Actor::parse(&"a".repeat(ACTOR_MAX_LEN + 1)), None);
        assert!(Actor::parse(&"a".repeat(ACTOR_MAX_LEN)).is_some());
    }

    async fn call(router: &Router, request: HttpRequest<Body>) -> (u16, serde_json::Value) {
        let response = router.clone().oneshot(request).await.expect("router is infallible");
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.expect("body").to_bytes();
        (status, serde_json::from_slice(&bytes).expect("JSON body"))
    }

    fn receipt(actor: Option<Actor>) -> HttpRequest<Body> {
        let mut request = HttpRequest::post("/inventory/A/receipts")
            .header("content-type", "application/json")
            .header("x-tally-actor", "arn:aws:iam::123456789012:root")
            .body(Body::from(r#"{"quantity":1}"#))
            .expect("request");
        if let Some(actor) = actor {
            request.extensions_mut().insert(actor);
        }
        request
    }

    /// The whole router over SQLite: the `Actor` extension (what
    /// `from_api_gateway` sets on AWS) lands in the event's metadata and the
    /// history route shows it; a header claiming an actor records none.
    #[tokio::test]
    async fn history_shows_the_actor_and_a_header_cannot_claim_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = tally_store_sqlite::SqliteStore::open(dir.path().join("tally.db")).expect("open store");
        let router = crate::router(AppState::new(
            Arc::new(store.clone()),
            Arc::new(store),
            ApiConfig::default(),
        ));
        let register = HttpRequest::post("/inventory")
            .header("content-type", "application/json")
            .body(Body::from(r#"{"sku":"A","name":"Widget"}"#))
            .expect("request");
        assert_eq!(call(&router, register).await.0, 201);
        assert_eq!(call(&router, receipt(None)).await.0, 200);
        let operator = Actor::parse("arn:aws:sts::123456789012:assumed-role/tally-operator/ops-alice");
        assert_eq!(call(&router, receipt(operator)).await.0, 200);

        let history = HttpRequest::get("/streams/inventory-A/events")
            .body(Body::empty())
            .expect("request");
        let (status, body) = call(&router, history).await;
        assert_eq!(status, 200, "{body}");
        let actors: Vec<&serde_json::Value> = body["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| &e["metadata"]["actor"])
            .collect();
        assert_eq!(
            actors,
            [
                &serde_json::Value::Null,
                &serde_json::Value::Null,
                &serde_json::json!("arn:aws:sts::123456789012:assumed-role/tally-operator/ops-alice"),
            ],
            "{body}"
        );
    }
}
