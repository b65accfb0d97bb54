//! Authentication and authorization (docs/security.md).
//!
//! Trust model: every `/v1/codeq` request carries `Authorization: Bearer
//! <token>`. The [`Authenticator`] asks each configured [`TokenVerifier`]
//! (static tokens, producer and worker JWTs, or local-mode tokens) in
//! turn; the first to recognise the token yields a [`Principal`], and an
//! unrecognised token is a 401. Everything after that is decided from the
//! principal alone by its `require_*` / [`Principal::as_worker`] checks,
//! which the HTTP layer runs in the order docs/api.md gives and which answer 403.
//! Static tokens are held only as SHA-256 digests and compared in constant
//! time; local mode keeps its two generated tokens in a 0600 file and only
//! serves loopback. Tokens are never logged or echoed in errors.
//!
//! Layout:
//! - [`principal`]: `Principal`, `Scope(s)`, `EventTypes`, `AuthError` and the checks.
//! - [`provider`]: the `TokenVerifier` seam and the `Authenticator`.
//! - [`static_tokens`]: config `staticTokens`.
//! - [`verified`]: the bounded cache of verified JWTs.
//! - [`jwks`]: JWKS documents, fetched and cached.
//! - [`jwt`]: producer and worker JWTs.
//! - [`local`]: local-mode credentials and the loopback check.

pub mod jwks;
pub mod jwt;
pub mod local;
pub mod principal;
pub mod provider;
pub mod static_tokens;
pub mod verified;

pub use jwks::Jwks;
pub use jwt::{JwtVerifier, TrustedIssuer};
pub use local::{LocalCredentials, is_loopback_host};
pub use principal::{
    AuthError, EventTypes, EventTypesError, Principal, PrincipalKind, Scope, Scopes, UnknownScope,
    codes,
};
pub use provider::{Authenticator, RequestContext, TokenVerifier, VerifyFuture, bearer_token};
pub use static_tokens::{StaticGrant, StaticToken, StaticTokenError, StaticTokenVerifier};
