//! Every failure the API can answer, and the one place each becomes a status
//! code and a JSON body `{"error": code, "message": …}`. A client mistake is
//! always a 4xx; a 5xx means the service itself failed.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tally_core::{CommandError, StoreError};
use tally_domain::DomainError;
use tally_domain::views::ReadError;

/// An API failure.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed request: bad JSON, wrong types, invalid ids or parameters (400).
    #[error("{message}")]
    BadRequest {
        /// Machine-readable code.
        code: &'static str,
        /// Human-readable detail.
        message: String,
    },
    /// Nothing at this address (404).
    #[error("{message}")]
    NotFound {
        /// Machine-readable code.
        code: &'static str,
        /// Human-readable detail.
        message: String,
    },
    /// The body exceeds the limit (413).
    #[error("request body larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// An `Idempotency-Key` reused with another request (422).
    #[error("idempotency key was used with a different request")]
    IdempotencyKeyReused,
    /// The command failed.
    #[error(transparent)]
    Command(#[from] CommandError<DomainError>),
    /// A read model failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The store failed outside a command.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ApiError {
    /// A 400 with `code` and `message`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// A 404 with `code` and `message`.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::NotFound {
            code,
            message: message.into(),
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            Self::NotFound { code, .. } => (StatusCode::NOT_FOUND, code),
            Self::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::IdempotencyKeyReused => (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused"),
            Self::Command(CommandError::Rejected(domain)) => (domain_status(domain), domain.code()),
            Self::Command(CommandError::VersionMismatch { .. }) => (StatusCode::CONFLICT, "version_conflict"),
            Self::Command(CommandError::Contended { .. }) => (StatusCode::CONFLICT, "contended"),
            Self::Command(CommandError::Store(e)) | Self::Store(e) => store_status(e),
            Self::Read(ReadError::InvalidCursor) => (StatusCode::BAD_REQUEST, "invalid_cursor"),
            Self::Read(ReadError::Backend(_)) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        }
    }
}

fn domain_status(error: &DomainError) -> StatusCode {
    match error {
        DomainError::OrderNotFound { .. } | DomainError::SkuNotFound { .. } => StatusCode::NOT_FOUND,
        DomainError::SkuAlreadyRegistered { .. } | DomainError::OrderAlreadyExists { .. } => StatusCode::CONFLICT,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

fn store_status(error: &StoreError) -> (StatusCode, &'static str) {
    match error {
        StoreError::WrongExpectedVersion { .. } => (StatusCode::CONFLICT, "version_conflict"),
        StoreError::DuplicateIdempotencyKey { .. } => (StatusCode::CONFLICT, "idempotency_key_in_flight"),
        StoreError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        StoreError::InvalidAppend(_) | StoreError::Corrupt { .. } | StoreError::Backend(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "internal")
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = if status.is_server_error() {
            // Details of our own failures go to the log, not to the client.
            tracing::error!(error = %self, "request failed");
            "the service failed to handle the request; it is safe to retry".to_owned()
        } else {
            self.to_string()
        };
        (status, Json(json!({ "error": code, "message": message }))).into_response()
    }
}
