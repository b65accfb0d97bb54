//! Extractors: the caller's principal (authentication and scope checks,
//! in the order of the API: 401, then 403), and path parameters that never
//! fail on their own. Bodies are read by [`super::body::Body`].

use std::marker::PhantomData;

use axum::extract::path::ErrorKind;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, Path};
use axum::http::header;
use axum::http::request::Parts;

use super::error::ApiError;
use crate::app::AppState;
use crate::auth::{AuthError, Principal, RequestContext, Scope, codes};

async fn authenticate(parts: &Parts, state: &AppState) -> Result<Principal, ApiError> {
    // Two tokens are ambiguous: a proxy may check one and the server use
    // the other.
    let sent = parts.headers.get_all(header::AUTHORIZATION).iter().count();
    if sent > 1 {
        let message = format!("send one Authorization header, not {sent}");
        return Err(AuthError::unauthenticated(codes::MALFORMED_TOKEN, message).into());
    }
    let authorization = match parts.headers.get(header::AUTHORIZATION).map(|value| value.to_str()) {
        None => None,
        Some(Ok(text)) => Some(text),
        // Sent, but not text a token can be: malformed, not missing.
        Some(Err(_)) => {
            let message = "the Authorization header must be Bearer <token>, in visible ASCII";
            return Err(AuthError::unauthenticated(codes::MALFORMED_TOKEN, message).into());
        }
    };
    let x_role = parts.headers.get("x-role").and_then(|value| value.to_str().ok());
    let context = RequestContext { x_role };
    let principal = state.auth.authenticate_request(authorization, context).await?;
    super::observe::note_caller(&principal.sub);
    Ok(principal)
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

scopes!(
    Claim => Claim,
    Heartbeat => Heartbeat,
    Abandon => Abandon,
    Nack => Nack,
    Result => Result,
    Subscribe => Subscribe,
);

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

/// A path parameter as text, or `None` when it is not valid UTF-8 once
/// percent-decoded (`/tasks/%ff`). Each handler then answers as for any
/// other text that names nothing (404 for a task id, 400 for a command),
/// at its own point of the check order; the extraction itself never
/// answers with anything but JSON.
#[derive(Debug)]
pub struct PathText(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for PathText {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(text)) => Ok(Self(Some(text))),
            Err(PathRejection::FailedToDeserializePathParams(error))
                if matches!(error.kind(), ErrorKind::InvalidUtf8InPathParam { .. }) =>
            {
                Ok(Self(None))
            }
            // A route without exactly one parameter: a bug in the router.
            Err(rejection) => Err(ApiError::internal(rejection.body_text())),
        }
    }
}

/// Two path parameters as text (see [`PathText`]).
#[derive(Debug)]
pub struct PathTexts(pub Option<String>, pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for PathTexts {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<(String, String)>::from_request_parts(parts, state).await {
            Ok(Path((first, second))) => Ok(Self(Some(first), Some(second))),
            Err(PathRejection::FailedToDeserializePathParams(error))
                if matches!(error.kind(), ErrorKind::InvalidUtf8InPathParam { .. }) =>
            {
                Ok(Self(None, None))
            }
            // A route without exactly two parameters: a bug in the router.
            Err(rejection) => Err(ApiError::internal(rejection.body_text())),
        }
    }
}
