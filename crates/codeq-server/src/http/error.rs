//! `ApiError`: every failure of a request as a status and a JSON body
//! `{"error": "<message>", "code": "<stable_code>"}`.
//!
//! Messages of 4xx errors name the field or the reason. 5xx bodies never
//! carry internals: the cause is logged once, here, and the client gets a
//! generic message.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::auth::AuthError;
use crate::service::artifacts::ArtifactError;
use crate::store::{StoreError, TransitionError};

/// A request failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable snake_case code.
    pub code: &'static str,
    /// Human-readable message naming the field or reason.
    pub message: String,
    /// Seconds a client should wait before retrying (`Retry-After`).
    pub retry_after: Option<u32>,
}

/// The `code` of an error answer, kept in the response's extensions for
/// the request's log line and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode(pub &'static str);

/// The JSON body of every error.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    /// Message.
    pub error: &'a str,
    /// Code.
    pub code: &'a str,
}

impl ApiError {
    /// Any status with a code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after: None }
    }

    /// 503, with the seconds to wait before a retry.
    pub fn unavailable(code: &'static str, message: impl Into<String>, retry_after: u32) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
        }
    }

    /// 400 for an invalid field (the message names it).
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 400 `invalid_field`.
    pub fn field(message: impl Into<String>) -> Self {
        Self::invalid("invalid_field", message)
    }

    /// 404.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// 413.
    pub fn too_large(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, code, message)
    }

    /// The same error about a field of the object `field`: a 400's
    /// message names it as `field.` + the inner field.
    #[must_use]
    pub fn within(mut self, field: &str) -> Self {
        if self.status == StatusCode::BAD_REQUEST {
            self.message = format!("{field}.{}", self.message);
        }
        self
    }

    /// 500, with the cause logged and hidden from the client.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: &self.message, code: self.code };
        let mut response = (self.status, axum::Json(body)).into_response();
        response.extensions_mut().insert(ErrorCode(self.code));
        let headers = response.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        // A client too slow to send its request is not kept for another.
        if self.status == StatusCode::REQUEST_TIMEOUT {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

impl From<TransitionError> for ApiError {
    fn from(error: TransitionError) -> Self {
        let message = error.to_string();
        match error {
            TransitionError::NotFound => Self::not_found("task_not_found", message),
            TransitionError::NotInProgress(_) => {
                Self::new(StatusCode::CONFLICT, "not_in_progress", message)
            }
            TransitionError::NotOwner => Self::new(StatusCode::FORBIDDEN, "not_owner", message),
            TransitionError::StaleAttempt { .. } => {
                Self::new(StatusCode::CONFLICT, "stale_attempt", message)
            }
            TransitionError::ResultConflict => {
                Self::new(StatusCode::CONFLICT, "result_conflict", message)
            }
            TransitionError::LeaseExpired => {
                Self::new(StatusCode::CONFLICT, "lease_expired", message)
            }
            TransitionError::Cancelled => {
                Self::new(StatusCode::CONFLICT, "task_cancelled", message)
            }
            TransitionError::Terminal(_) => {
                Self::new(StatusCode::CONFLICT, "task_terminal", message)
            }
        }
    }
}

/// `Retry-After` of a storage failure: the embedded store's server exits
/// at once and a supervisor restarts it; Redis is waited for.
const RETRY_AFTER_STORAGE_SECONDS: u32 = 5;

/// `Retry-After` of a request shed because too many are in flight.
const RETRY_AFTER_BUSY_SECONDS: u32 = 1;

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Transition(refused) => refused.into(),
            // The cause is logged once, where the storage failed (then the
            // embedded store's server exits and a restart recovers from
            // disk; with Redis, calls get through once it is back).
            StoreError::Unavailable(_) => Self::unavailable(
                "storage_unavailable",
                "storage is unavailable: retry once it is back (a change asked for may or may not have been made; a read changes nothing)",
                RETRY_AFTER_STORAGE_SECONDS,
            ),
            StoreError::DiskFull(_) => Self::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "insufficient_storage",
                "the server's storage is full (its disk, or Redis at its maxmemory): the change was not stored",
            ),
            StoreError::TooLarge(why) => Self::too_large(
                "batch_too_large",
                format!("{why}: send fewer or smaller items per request"),
            ),
            StoreError::Busy => Self::unavailable(
                "overloaded",
                "too many requests in flight; retry shortly",
                RETRY_AFTER_BUSY_SECONDS,
            ),
            StoreError::TooManyCommands(max) => Self::new(
                StatusCode::CONFLICT,
                "too_many_commands",
                format!(
                    "the server knows as many commands as maxCommands ({max}) allows: a new command is refused (use one of the commands in use, or raise maxCommands)"
                ),
            ),
            StoreError::Corrupt(cause) => Self::internal(cause),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        Self::new(error.status(), error.code(), error.message().to_string())
    }
}

impl From<ArtifactError> for ApiError {
    fn from(error: ArtifactError) -> Self {
        match error {
            ArtifactError::Invalid(message) => Self::invalid("invalid_artifact", message),
            ArtifactError::TooLarge { .. } => {
                Self::too_large("artifact_too_large", error.to_string())
            }
            ArtifactError::Io(cause) if cause.kind() == std::io::ErrorKind::StorageFull => {
                Self::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "insufficient_storage",
                    "the server's disk is full: the artifact was not stored",
                )
            }
            ArtifactError::Io(cause) => Self::internal(cause),
        }
    }
}
