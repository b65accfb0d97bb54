//! The seam between the `Authorization` header and the token sources:
//! [`TokenVerifier`] (one per source: static tokens, producer JWTs, worker
//! JWTs) and the [`Authenticator`] that asks them in turn.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::principal::{AuthError, Principal, codes};

/// The future a [`TokenVerifier`] returns.
pub type VerifyFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<Principal>, AuthError>> + Send + 'a>>;

/// What a verifier may look at besides the token itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestContext<'a> {
    /// The `X-Role` header (docs/security.md: honoured for producer tokens without
    /// a role, and only with `env: dev`).
    pub x_role: Option<&'a str>,
}

impl RequestContext<'_> {
    /// Whether the request asks for admin rights with `X-Role: ADMIN`.
    pub fn asks_for_admin(&self) -> bool {
        self.x_role == Some("ADMIN")
    }
}

/// One source of tokens.
///
/// `verify` answers:
/// - `Ok(Some(principal))`: the token is one of mine and valid;
/// - `Ok(None)`: not a token of mine, ask the next source;
/// - `Err(_)`: one of mine but refused (expired, bad signature, …); the
///   error is the answer, no other source is asked.
///
/// Async because JWT sources may fetch a JWKS document.
pub trait TokenVerifier: Send + Sync {
    /// Resolves `token` (the part after `Bearer `) to a principal.
    fn verify<'a>(&'a self, token: &'a str) -> VerifyFuture<'a>;

    /// Like [`verify`](Self::verify), with the rest of the request in
    /// view; sources that only look at the token keep this default.
    fn verify_request<'a>(
        &'a self,
        token: &'a str,
        context: RequestContext<'a>,
    ) -> VerifyFuture<'a> {
        let _ = context;
        self.verify(token)
    }
}

/// Resolves the `Authorization` header of a request to a [`Principal`] by
/// asking each configured [`TokenVerifier`] in order.
#[derive(Clone, Default)]
pub struct Authenticator {
    verifiers: Vec<Arc<dyn TokenVerifier>>,
}

impl Authenticator {
    /// An authenticator asking `verifiers` in this order.
    pub fn new(verifiers: Vec<Arc<dyn TokenVerifier>>) -> Self {
        Self { verifiers }
    }

    /// Adds a source, asked after the ones already there.
    pub fn push(&mut self, verifier: Arc<dyn TokenVerifier>) {
        self.verifiers.push(verifier);
    }

    /// Whether no token source is configured (the condition for local
    /// mode, docs/security.md).
    pub fn is_empty(&self) -> bool {
        self.verifiers.is_empty()
    }

    /// Resolves the raw `Authorization` header value (`None` when absent).
    ///
    /// 401 `missing_token` when there is no token, `malformed_token` when
    /// the header is not `Bearer <token>`, `invalid_token` when no source
    /// accepts the token; a source's own refusal is passed on.
    pub async fn authenticate(
        &self,
        authorization_header: Option<&str>,
    ) -> Result<Principal, AuthError> {
        self.authenticate_request(authorization_header, RequestContext::default()).await
    }

    /// Like [`authenticate`](Self::authenticate), passing the rest of the
    /// request (`X-Role`) to the sources.
    pub async fn authenticate_request(
        &self,
        authorization_header: Option<&str>,
        context: RequestContext<'_>,
    ) -> Result<Principal, AuthError> {
        let token = bearer_token(authorization_header)?;
        for verifier in &self.verifiers {
            if let Some(principal) = verifier.verify_request(token, context).await? {
                return Ok(principal);
            }
        }
        Err(AuthError::unauthenticated(codes::INVALID_TOKEN, "the bearer token is not valid"))
    }
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator").field("verifiers", &self.verifiers.len()).finish()
    }
}

/// Extracts the token from an `Authorization: Bearer <token>` header value.
///
/// The scheme is case-insensitive (RFC 7235); spaces around the token are
/// ignored; a token holding whitespace is malformed.
pub fn bearer_token(authorization_header: Option<&str>) -> Result<&str, AuthError> {
    let missing = || {
        AuthError::unauthenticated(
            codes::MISSING_TOKEN,
            "missing bearer token: send Authorization: Bearer <token>",
        )
    };
    let malformed = || {
        AuthError::unauthenticated(
            codes::MALFORMED_TOKEN,
            "the Authorization header must be Bearer <token>",
        )
    };

    let header = authorization_header.map(str::trim).ok_or_else(missing)?;
    if header.is_empty() {
        return Err(missing());
    }
    let (scheme, rest) = header.split_once([' ', '\t']).unwrap_or((header, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(malformed());
    }
    let token = rest.trim();
    if token.is_empty() {
        return Err(missing());
    }
    if token.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(malformed());
    }
    Ok(token)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::http::StatusCode;

    use super::*;
    use crate::auth::principal::{EventTypes, PrincipalKind, Scopes};

    fn code_of(header: Option<&str>) -> &'static str {
        let error = bearer_token(header).unwrap_err();
        assert_eq!(error.status(), StatusCode::UNAUTHORIZED);
        error.code()
    }

    #[test]
    fn bearer_token_is_taken_from_a_well_formed_header() {
        assert_eq!(bearer_token(Some("Bearer abc.def-ghi")).unwrap(), "abc.def-ghi");
        assert_eq!(bearer_token(Some("bearer abc")).unwrap(), "abc");
        assert_eq!(bearer_token(Some("BEARER   abc  ")).unwrap(), "abc");
    }

    #[test]
    fn missing_header_or_empty_token_is_missing_token() {
        assert_eq!(code_of(None), codes::MISSING_TOKEN);
        assert_eq!(code_of(Some("")), codes::MISSING_TOKEN);
        assert_eq!(code_of(Some("   ")), codes::MISSING_TOKEN);
        assert_eq!(code_of(Some("Bearer")), codes::MISSING_TOKEN);
        assert_eq!(code_of(Some("Bearer   ")), codes::MISSING_TOKEN);
    }

    #[test]
    fn wrong_scheme_or_split_token_is_malformed() {
        assert_eq!(code_of(Some("Basic dXNlcjpwYXNz")), codes::MALFORMED_TOKEN);
        assert_eq!(code_of(Some("Bearerabc")), codes::MALFORMED_TOKEN);
        assert_eq!(code_of(Some("abc")), codes::MALFORMED_TOKEN);
        assert_eq!(code_of(Some("Bearer abc def")), codes::MALFORMED_TOKEN);
    }

    /// Accepts one token, refuses another, ignores the rest; counts calls.
    struct Fake {
        accepts: &'static str,
        refuses: &'static str,
        calls: AtomicUsize,
    }

    impl TokenVerifier for Fake {
        fn verify<'a>(&'a self, token: &'a str) -> VerifyFuture<'a> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                if token == self.accepts {
                    Ok(Some(Principal {
                        kind: PrincipalKind::Worker,
                        sub: self.accepts.to_owned(),
                        event_types: EventTypes::All,
                        scopes: Scopes::all_worker(),
                        worker_group: None,
                        admin: false,
                    }))
                } else if token == self.refuses {
                    Err(AuthError::unauthenticated("token_expired", "expired"))
                } else {
                    Ok(None)
                }
            })
        }
    }

    fn fake(accepts: &'static str, refuses: &'static str) -> Arc<Fake> {
        Arc::new(Fake { accepts, refuses, calls: AtomicUsize::new(0) })
    }

    #[tokio::test]
    async fn verifiers_are_asked_in_order_until_one_answers() {
        let (first, second) = (fake("one", "bad"), fake("two", "-"));
        let auth = Authenticator::new(vec![first.clone(), second.clone()]);

        assert_eq!(auth.authenticate(Some("Bearer two")).await.unwrap().sub, "two");
        assert_eq!(auth.authenticate(Some("Bearer one")).await.unwrap().sub, "one");
        assert_eq!(
            (first.calls.load(Ordering::SeqCst), second.calls.load(Ordering::SeqCst)),
            (2, 1)
        );

        let refused = auth.authenticate(Some("Bearer bad")).await.unwrap_err();
        assert_eq!(refused.code(), "token_expired");
        assert_eq!(second.calls.load(Ordering::SeqCst), 1, "a refusal ends the search");
    }

    #[tokio::test]
    async fn a_token_no_verifier_knows_is_invalid() {
        let auth = Authenticator::new(vec![fake("one", "bad")]);
        let error = auth.authenticate(Some("Bearer nope")).await.unwrap_err();
        assert_eq!(
            (error.status(), error.code()),
            (StatusCode::UNAUTHORIZED, codes::INVALID_TOKEN)
        );
        assert_eq!(auth.authenticate(None).await.unwrap_err().code(), codes::MISSING_TOKEN);
    }

    #[tokio::test]
    async fn an_empty_authenticator_accepts_nothing() {
        let mut auth = Authenticator::default();
        assert!(auth.is_empty());
        let error = auth.authenticate(Some("Bearer x")).await.unwrap_err();
        assert_eq!(error.code(), codes::INVALID_TOKEN);
        auth.push(fake("x", "-"));
        assert!(!auth.is_empty());
        assert_eq!(auth.authenticate(Some("Bearer x")).await.unwrap().sub, "x");
    }
}
