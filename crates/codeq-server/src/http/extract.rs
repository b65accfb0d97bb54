//! Extractors: the caller's principal (authentication and scope checks,
//! in the order of the API: 401, then 403), and JSON bodies parsed after
//! those checks with errors that name the field.

use std::marker::PhantomData;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::app::AppState;
use crate::auth::{AuthError, Principal, RequestContext, Scope};

async fn authenticate(parts: &Parts, state: &AppState) -> Result<Principal, ApiError> {
    let authorization =
        parts.headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok());
    let x_role = parts.headers.get("x-role").and_then(|value| value.to_str().ok());
    let context = RequestContext { x_role };
    Ok(state.auth.authenticate_request(authorization, context).await?)
}

/// Defines an extractor of the authenticated principal that passes `check`.
macro_rules! principal_extractor {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        pub struct $name(pub Principal);

        impl FromRequestParts<AppState> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(
                parts: &mut Parts,
                state: &AppState,
            ) -> Result<Self, Self::Rejection> {
                let principal = authenticate(parts, state).await?;
                let check: fn(&Principal) -> Result<(), AuthError> = $check;
                check(&principal)?;
                Ok(Self(principal))
            }
        }
    };
}

principal_extractor!(
    /// Any authenticated caller, producer or worker.
    Caller,
    |_| Ok(())
);
principal_extractor!(
    /// A producer.
    Producer,
    Principal::require_producer
);
principal_extractor!(
    /// A producer with admin rights.
    Admin,
    Principal::require_admin
);

/// The scope a worker endpoint requires.
pub trait RequiredScope {
    /// The scope.
    const SCOPE: Scope;
}

macro_rules! scopes {
    ($($name:ident => $scope:ident),* $(,)?) => {
        /// Marker types naming the scope of each worker endpoint.
        pub mod scope {
            use super::{RequiredScope, Scope};
            $(
                #[doc = concat!("Requires `", stringify!($scope), "`.")]
                pub struct $name;
                impl RequiredScope for $name {
                    const SCOPE: Scope = Scope::$scope;
                }
            )*
        }
    };
}

scopes!(Claim => Claim, Heartbeat => Heartbeat, Abandon => Abandon, Nack => Nack, Result => Result);

/// A worker (or a producer allowed to act as one) holding scope `S`.
pub struct Worker<S>(pub Principal, pub PhantomData<S>);

impl<S: RequiredScope> FromRequestParts<AppState> for Worker<S> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let principal = authenticate(parts, state).await?;
        let worker = principal.as_worker(state.allow_producer_as_worker)?;
        worker.require_scope(S::SCOPE)?;
        Ok(Self(worker, PhantomData))
    }
}

/// The raw request body, limited by the route's body limit (413 beyond).
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Bytes::from_request(request, state).await {
            Ok(bytes) => Ok(Self(bytes)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::too_large("body_too_large", "request body is over the size limit"))
            }
            Err(rejection) => Err(ApiError::invalid("invalid_body", rejection.body_text())),
        }
    }
}

impl Body {
    /// Parses the body as JSON; an empty body counts as `{}` (for
    /// endpoints whose fields are all optional).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        let bytes: &[u8] = if self.0.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &self.0 };
        parse_json(bytes)
    }
}

/// Parses JSON, naming the offending field in the error.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // The plain parser first (tracking the path costs on every request);
    // only a failure is parsed again to name the field.
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
    let parsed = serde_path_to_error::deserialize(&mut *deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let message = if inner.is_syntax() || inner.is_eof() {
            format!("malformed JSON: {inner}")
        } else if path == "." {
            format!("invalid body: {inner}")
        } else {
            format!("invalid field {path}: {inner}")
        };
        ApiError::invalid(if inner.is_data() { "invalid_field" } else { "malformed_json" }, message)
    })?;
    // The plain parser failed on something after the value.
    deserializer
        .end()
        .map_err(|error| ApiError::invalid("malformed_json", format!("malformed JSON: {error}")))?;
    Ok(parsed)
}
