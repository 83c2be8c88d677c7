//! The guard in front of the API when it is served on a loopback address
//! without authentication (`tally serve`). Loopback keeps other machines
//! out, but not a web page in the developer's browser: a page can post a
//! form to `http://127.0.0.1:3000` (cross-site request forgery), or point
//! its own DNS name at 127.0.0.1 and then read and write the API as a
//! same-origin page (DNS rebinding). So this layer answers only requests
//! addressed to the served address by name (`Host`), refuses a
//! state-changing request a page from another origin sent (`Origin`), and
//! takes state-changing requests only as JSON, a content type no HTML form
//! can send and a cross-origin script cannot send without a CORS preflight
//! this server never grants.
//!
//! A refused request never reaches a handler, so it writes nothing. This
//! layer must never run on the Lambda path: there API Gateway owns the
//! Host, and its authorizer decides who may call.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::json;

/// Why a request to the loopback server was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    /// The `Host` (or the request target's authority) is not the served
    /// address: a DNS-rebinding page, or a misdirected client (421). Send
    /// `Host: 127.0.0.1:<port>` or `localhost:<port>`.
    #[error("this server answers only to {expected}; the request was addressed to {got:?}")]
    MisdirectedHost {
        /// The accepted `Host` values, for the message.
        expected: String,
        /// What the request named.
        got: String,
    },
    /// A state-changing request sent by a page of another origin (403).
    #[error("state-changing requests from origin {origin:?} are refused; only the served address may send them")]
    CrossOrigin {
        /// The request's `Origin`.
        origin: String,
    },
    /// A state-changing request that is not JSON (415): send
    /// `Content-Type: application/json`.
    #[error("state-changing requests must be sent as Content-Type: application/json (got {got:?})")]
    UnsupportedMediaType {
        /// The request's content type, empty when it had none.
        got: String,
    },
}

impl Refused {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::MisdirectedHost { .. } => (StatusCode::MISDIRECTED_REQUEST, "misdirected_request"),
            Self::CrossOrigin { .. } => (StatusCode::FORBIDDEN, "cross_origin_request"),
            Self::UnsupportedMediaType { .. } => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        }
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        (status, Json(json!({ "error": code, "message": self.to_string() }))).into_response()
    }
}

/// The names a request to the served address may carry: `host:port` for
/// the address itself and for `localhost`.
#[derive(Debug, Clone)]
pub struct ServedAddress {
    authorities: Vec<String>,
}

impl ServedAddress {
    /// The authorities of `address` (a loopback address `tally serve` bound).
    pub fn new(address: SocketAddr) -> Self {
        let port = address.port();
        let ip = match address.ip() {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        };
        let mut authorities = vec![format!("{ip}:{port}"), format!("localhost:{port}")];
        if port == 80 {
            // A client leaves the default port out of Host.
            authorities.extend([ip, "localhost".to_owned()]);
        }
        Self { authorities }
    }

    fn accepts_authority(&self, authority: &str) -> bool {
        self.authorities.iter().any(|a| a.eq_ignore_ascii_case(authority))
    }

    fn accepts_origin(&self, origin: &str) -> bool {
        origin
            .strip_prefix("http://")
            .is_some_and(|authority| self.accepts_authority(authority))
    }

    fn misdirected(&self, got: &str) -> Refused {
        Refused::MisdirectedHost {
            expected: self.authorities.join(" or "),
            got: got.to_owned(),
        }
    }

    /// Checks a request's method and headers (and the authority of its
    /// target, when it came in absolute form).
    pub fn check(&self, method: &Method, target_authority: Option<&str>, headers: &HeaderMap) -> Result<(), Refused> {
        let host = headers.get(header::HOST).map(|h| h.to_str().unwrap_or("(not ASCII)"));
        // HTTP/1.1 requires a Host: without one the request names no address we serve.
        if !host.is_some_and(|host| self.accepts_authority(host)) {
            return Err(self.misdirected(host.unwrap_or_default()));
        }
        if let Some(authority) = target_authority
            && !self.accepts_authority(authority)
        {
            return Err(self.misdirected(authority));
        }
        // GET, HEAD, OPTIONS, TRACE change nothing; everything else might.
        if method.is_safe() {
            return Ok(());
        }
        for origin in headers.get_all(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("(not ASCII)");
            if !self.accepts_origin(origin) {
                return Err(Refused::CrossOrigin {
                    origin: origin.to_owned(),
                });
            }
        }
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .map(|c| c.to_str().unwrap_or("(not ASCII)"))
            .unwrap_or_default();
        // `application/json; charset=utf-8` is JSON too; the parameters do not matter here.
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return Err(Refused::UnsupportedMediaType {
                got: content_type.to_owned(),
            });
        }
        Ok(())
    }
}

/// `router` behind the loopback guard for the address it is served on.
pub fn guard(router: Router, served: SocketAddr) -> Router {
    router.layer(middleware::from_fn_with_state(
        Arc::new(ServedAddress::new(served)),
        refuse_foreign_requests,
    ))
}

async fn refuse_foreign_requests(State(served): State<Arc<ServedAddress>>, request: Request, next: Next) -> Response {
    let authority = request.uri().authority().map(|a| a.as_str());
    match served.check(request.method(), authority, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refused) => {
            tracing::warn!(method = %request.method(), uri = %request.uri(), reason = %refused, "request refused");
            refused.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn served() -> ServedAddress {
        ServedAddress::new("127.0.0.1:3000".parse().expect("address"))
    }

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_str(value).expect("header value"));
        }
        map
    }

    fn json_post(extra: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut pairs = vec![
            (header::HOST, "127.0.0.1:3000"),
            (header::CONTENT_TYPE, "application/json"),
        ];
        pairs.extend_from_slice(extra);
        headers(&pairs)
    }

    /// The served address, and localhost on its port, in any letter case.
    #[test]
    fn host_must_name_the_served_address() {
        let s = served();
        for host in ["127.0.0.1:3000", "localhost:3000", "LOCALHOST:3000"] {
            assert_eq!(
                s.check(&Method::GET, None, &headers(&[(header::HOST, host)])),
                Ok(()),
                "{host}"
            );
        }
        for host in [
            "evil.example:3000",
            "127.0.0.1:3001",
            "localhost",
            "127.0.0.1",
            "[::1]:3000",
            "",
        ] {
            assert!(
                matches!(
                    s.check(&Method::GET, None, &headers(&[(header::HOST, host)])),
                    Err(Refused::MisdirectedHost { .. })
                ),
                "{host}"
            );
        }
        assert!(matches!(
            s.check(&Method::GET, None, &HeaderMap::new()),
            Err(Refused::MisdirectedHost { .. })
        ));
        // An absolute-form target names its authority too.
        assert!(matches!(
            s.check(
                &Method::GET,
                Some("evil.example:3000"),
                &headers(&[(header::HOST, "127.0.0.1:3000")])
            ),
            Err(Refused::MisdirectedHost { .. })
        ));
    }

    /// IPv6 loopback is written in brackets; port 80 may be left out.
    #[test]
    fn ipv6_and_default_port_authorities() {
        let v6 = ServedAddress::new("[::1]:8080".parse().expect("address"));
        assert_eq!(
            v6.check(&Method::GET, None, &headers(&[(header::HOST, "[::1]:8080")])),
            Ok(())
        );
        let port80 = ServedAddress::new("127.0.0.1:80".parse().expect("address"));
        assert_eq!(
            port80.check(&Method::GET, None, &headers(&[(header::HOST, "localhost")])),
            Ok(())
        );
    }

    /// A state-changing request from another origin (or the opaque `null`) is refused; the served origin passes.
    #[test]
    fn foreign_origin_is_refused_for_state_changes() {
        let s = served();
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            for origin in [
                "http://evil.example",
                "null",
                "https://127.0.0.1:3000",
                "http://127.0.0.1:3000.evil.example",
            ] {
                assert_eq!(
                    s.check(&method, None, &json_post(&[(header::ORIGIN, origin)])),
                    Err(Refused::CrossOrigin {
                        origin: origin.to_owned()
                    }),
                    "{method} {origin}"
                );
            }
        }
        assert_eq!(
            s.check(
                &Method::POST,
                None,
                &json_post(&[(header::ORIGIN, "http://localhost:3000")])
            ),
            Ok(())
        );
        assert_eq!(
            s.check(&Method::POST, None, &json_post(&[])),
            Ok(()),
            "curl sends no Origin"
        );
        // A read from another origin is harmless: the browser hides the answer from the page.
        let get = headers(&[
            (header::HOST, "127.0.0.1:3000"),
            (header::ORIGIN, "http://evil.example"),
        ]);
        assert_eq!(s.check(&Method::GET, None, &get), Ok(()));
    }

    /// State changes must be JSON: the form content types and none at all are refused.
    #[test]
    fn state_changes_must_be_json() {
        let s = served();
        for content_type in [
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "text/plain",
        ] {
            let h = headers(&[(header::HOST, "127.0.0.1:3000"), (header::CONTENT_TYPE, content_type)]);
            assert!(matches!(
                s.check(&Method::POST, None, &h),
                Err(Refused::UnsupportedMediaType { .. })
            ));
        }
        let no_type = headers(&[(header::HOST, "127.0.0.1:3000")]);
        assert!(matches!(
            s.check(&Method::POST, None, &no_type),
            Err(Refused::UnsupportedMediaType { .. })
        ));
        let charset = headers(&[
            (header::HOST, "127.0.0.1:3000"),
            (header::CONTENT_TYPE, "Application/JSON; charset=utf-8"),
        ]);
        assert_eq!(s.check(&Method::POST, None, &charset), Ok(()));
        assert_eq!(
            s.check(&Method::GET, None, &no_type),
            Ok(()),
            "a GET needs no content type"
        );
    }
}
