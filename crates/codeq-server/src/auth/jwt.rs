//! Producer and worker JWTs (docs/security.md), verified against the
//! JWKS of their issuer.
//!
//! One [`JwtVerifier`] serves every [`TrustedIssuer`] (the identity
//! service for producers, the worker issuer for workers). For a token it
//! runs, in this order:
//! 1. shape: three dot-separated parts with a JSON header, else not a JWT
//!    (`Ok(None)`: another source may know the token);
//! 2. the verified-token cache (by the token's SHA-256, until `exp`), as
//!    long as the key that verified the token is still in its JWKS: a
//!    key withdrawn from the JWKS stops verifying cached tokens too, once
//!    the document is refreshed (it stays fresh 5 minutes, or its
//!    `max-age`);
//! 3. the header's `alg`, before anything else is trusted: only
//!    RS256/RS384/RS512/ES256/ES384/EdDSA; `none` and HMAC are refused;
//! 4. the (not yet verified) `iss` picks the issuer; an unknown issuer is
//!    `Ok(None)`. Nothing is trusted on that basis: it only chooses which
//!    JWKS must verify the signature;
//! 5. the key by `kid` and `alg` from that issuer's [`Jwks`], then the
//!    signature;
//! 6. `exp` (required), `nbf`, `iat`, each with `allowedClockSkewSeconds`,
//!    and `aud` when the issuer has an audience;
//! 7. the claims become a [`Principal`]: producers by `sub` (or `email`),
//!    `role` and `scope`; workers by `sub`, `eventTypes` (required,
//!    non-empty), `scope` (required) and `workerGroup`.
//!
//! `X-Role: ADMIN` makes a producer admin only with `env: dev` and only for
//! a token without a `role` claim; it is applied per request, after the
//! cache, since the same token may come with or without the header.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use codeq_core::Timestamp;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use super::jwks::{Jwks, KeyError};
use super::principal::{AuthError, EventTypes, Principal, PrincipalKind, Scope, Scopes, codes};
use super::provider::{RequestContext, TokenVerifier, VerifyFuture};
use super::verified::{DEFAULT_CAPACITY, VerifiedTokens};
use crate::clock::Clock;

/// The `role` claim value that means admin.
const ADMIN_ROLE: &str = "ADMIN";

/// One issuer whose tokens this server accepts.
#[derive(Debug)]
pub struct TrustedIssuer {
    /// Producer (identity service) or worker tokens.
    pub kind: PrincipalKind,
    /// The exact `iss` of its tokens.
    pub issuer: String,
    /// The value `aud` must contain, when set.
    pub audience: Option<String>,
    /// Where its signing keys are published.
    pub jwks: Arc<Jwks>,
}

impl TrustedIssuer {
    fn audience_matches(&self, aud: Option<&Audience>) -> bool {
        match (&self.audience, aud) {
            (None, _) => true,
            (Some(wanted), Some(aud)) => aud.contains(wanted),
            (Some(_), None) => false,
        }
    }
}

/// What a verified token grants, before the per-request `X-Role`.
#[derive(Debug, Clone)]
struct Grant {
    principal: Principal,
    /// A producer token without `role`: `X-Role` may apply (in `env: dev`).
    role_header_allowed: bool,
}

impl Grant {
    fn resolve(&self, context: RequestContext<'_>, honour_x_role: bool) -> Principal {
        let mut principal = self.principal.clone();
        if honour_x_role && self.role_header_allowed && context.asks_for_admin() {
            principal.grant_admin_role();
        }
        principal
    }
}

/// A verified token in the cache: its grant, and the key that verified it.
struct Verified {
    grant: Grant,
    jwks: Arc<Jwks>,
    kid: Option<String>,
    alg: Algorithm,
    key: Arc<DecodingKey>,
}

impl Verified {
    /// Whether the key that verified the token is still the one its JWKS
    /// publishes under that `kid` (the document is refreshed first when it
    /// is stale). A refresh makes new key objects, so a cached token is
    /// verified again once per refresh; that costs one signature check
    /// per token every few minutes.
    async fn key_still_published(&self) -> bool {
        let current = self.jwks.key(self.kid.as_deref(), self.alg).await;
        current.is_ok_and(|key| Arc::ptr_eq(&key, &self.key))
    }
}

/// Verifies producer and worker JWTs.
pub struct JwtVerifier {
    issuers: Vec<TrustedIssuer>,
    clock: Arc<dyn Clock>,
    skew_seconds: f64,
    honour_x_role: bool,
    verified: VerifiedTokens<Arc<Verified>>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier").field("issuers", &self.issuers).finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// A verifier for `issuers`, checking times on `clock` with `skew`
    /// (`allowedClockSkewSeconds`); `honour_x_role` is `env: dev`.
    pub fn new(
        issuers: Vec<TrustedIssuer>,
        clock: Arc<dyn Clock>,
        skew: Duration,
        honour_x_role: bool,
    ) -> Self {
        Self {
            issuers,
            clock,
            skew_seconds: skew.as_secs_f64(),
            honour_x_role,
            verified: VerifiedTokens::new(DEFAULT_CAPACITY),
        }
    }

    /// The JWKS documents of the issuers, each once (to fetch them at
    /// start-up).
    pub fn jwks(&self) -> Vec<Arc<Jwks>> {
        let mut documents: Vec<Arc<Jwks>> = Vec::new();
        for issuer in &self.issuers {
            if !documents.iter().any(|known| Arc::ptr_eq(known, &issuer.jwks)) {
                documents.push(issuer.jwks.clone());
            }
        }
        documents
    }

    async fn verify_token(
        &self,
        token: &str,
        context: RequestContext<'_>,
    ) -> Result<Option<Principal>, AuthError> {
        let Some((header, payload)) = split(token) else {
            return Ok(None);
        };
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = self.clock.now();
        if let Some(cached) = self.verified.get(&digest, now) {
            if cached.key_still_published().await {
                return Ok(Some(cached.grant.resolve(context, self.honour_x_role)));
            }
            self.verified.remove(&digest);
        }
        let Some(header) = decode_segment::<RawHeader>(header) else {
            return Ok(None);
        };
        let alg = accepted_algorithm(&header.alg)?;
        if header.crit.is_some() {
            return Err(AuthError::unauthenticated(
                codes::INVALID_TOKEN,
                "the token's header lists critical extensions (crit), which this server does not support",
            ));
        }
        let Some(issuer) = decode_segment::<Routing>(payload).and_then(|r| self.issuer_for(&r))
        else {
            return Ok(None);
        };
        let key = issuer.jwks.key(header.kid.as_deref(), alg).await.map_err(key_error)?;
        // The signature covers the payload, so the `iss` that chose the
        // issuer is now verified too.
        let claims = verify_signature(token, &key, alg)?;
        let expires_at = self.check_times(&claims, now)?;
        if !issuer.audience_matches(claims.aud.as_ref()) {
            return Err(invalid_claims("the token's aud does not name this service"));
        }
        let grant = match issuer.kind {
            PrincipalKind::Producer => producer_grant(claims)?,
            PrincipalKind::Worker => worker_grant(claims)?,
        };
        let principal = grant.resolve(context, self.honour_x_role);
        let verified = Verified { grant, jwks: issuer.jwks.clone(), kid: header.kid, alg, key };
        self.verified.insert(digest, Arc::new(verified), expires_at, now);
        Ok(Some(principal))
    }

    /// The issuer of a token: the one with its `iss`; when several share
    /// it, the first whose audience the token names, else the first with
    /// no audience to match. An issuer with an audience the token names
    /// comes before one without: a worker token (`aud` the workers') of an
    /// issuer shared with producers who set no audience is a worker's.
    fn issuer_for(&self, routing: &Routing) -> Option<&TrustedIssuer> {
        let iss = routing.iss.as_deref()?;
        let candidates = || self.issuers.iter().filter(|issuer| issuer.issuer == iss);
        let named = |issuer: &&TrustedIssuer| {
            issuer.audience.is_some() && issuer.audience_matches(routing.aud.as_ref())
        };
        candidates()
            .find(named)
            .or_else(|| candidates().find(|issuer| issuer.audience.is_none()))
            .or_else(|| candidates().next())
    }

    /// Checks `exp` (required), `nbf` and `iat` against `now` with the
    /// skew; returns when the token expires.
    fn check_times(&self, claims: &Claims, now: Timestamp) -> Result<Timestamp, AuthError> {
        let now_seconds = now.millis() as f64 / 1000.0;
        let skew = self.skew_seconds;
        let exp = claims.exp.ok_or_else(|| invalid_claims("the token has no exp"))?;
        if now_seconds >= exp + skew {
            return Err(AuthError::unauthenticated(codes::EXPIRED_TOKEN, "the token has expired"));
        }
        if claims.nbf.is_some_and(|nbf| nbf > now_seconds + skew) {
            return Err(AuthError::unauthenticated(
                codes::TOKEN_NOT_YET_VALID,
                "the token is not valid yet (nbf)",
            ));
        }
        if claims.iat.is_some_and(|iat| iat > now_seconds + skew) {
            return Err(invalid_claims("the token was issued in the future (iat)"));
        }
        Ok(Timestamp((exp * 1000.0) as i64))
    }
}

impl TokenVerifier for JwtVerifier {
    fn verify<'a>(&'a self, token: &'a str) -> VerifyFuture<'a> {
        Box::pin(self.verify_token(token, RequestContext::default()))
    }

    fn verify_request<'a>(
        &'a self,
        token: &'a str,
        context: RequestContext<'a>,
    ) -> VerifyFuture<'a> {
        Box::pin(self.verify_token(token, context))
    }
}

/// The header fields read before verification.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    kid: Option<String>,
    /// Header extensions the verifier must understand (RFC 7515
    /// §4.1.11): this server understands none. `Some` whenever the field
    /// is there, `null` too.
    #[serde(default, deserialize_with = "present")]
    crit: Option<serde::de::IgnoredAny>,
}

/// `Some` for a field that is there, whatever it holds.
fn present<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<serde::de::IgnoredAny>, D::Error> {
    serde::Deserialize::deserialize(deserializer).map(Some)
}

/// The payload fields that choose the issuer (not yet verified).
#[derive(Deserialize)]
struct Routing {
    iss: Option<String>,
    aud: Option<Audience>,
}

/// `aud`: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, wanted: &str) -> bool {
        match self {
            Self::One(aud) => aud == wanted,
            Self::Many(auds) => auds.iter().any(|aud| aud == wanted),
        }
    }
}

/// The claims read from a verified token. Times are NumericDates
/// (seconds, possibly fractional).
#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    aud: Option<Audience>,
    exp: Option<f64>,
    nbf: Option<f64>,
    iat: Option<f64>,
    email: Option<String>,
    role: Option<String>,
    scope: Option<String>,
    #[serde(rename = "eventTypes")]
    event_types: Option<Vec<String>>,
    #[serde(rename = "workerGroup")]
    worker_group: Option<String>,
}

/// The header and payload parts of a `header.payload.signature` token.
/// The signature may be empty (an `alg: none` token must still be seen as
/// a JWT, to be refused).
fn split(token: &str) -> Option<(&str, &str)> {
    let mut parts = token.split('.');
    let (header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || header.is_empty() || payload.is_empty() {
        return None;
    }
    Some((header, payload))
}

fn decode_segment<T: DeserializeOwned>(segment: &str) -> Option<T> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The algorithm named by a token's header, if this server accepts it.
fn accepted_algorithm(name: &str) -> Result<Algorithm, AuthError> {
    match name {
        "RS256" => Ok(Algorithm::RS256),
        "RS384" => Ok(Algorithm::RS384),
        "RS512" => Ok(Algorithm::RS512),
        "ES256" => Ok(Algorithm::ES256),
        "ES384" => Ok(Algorithm::ES384),
        "EdDSA" => Ok(Algorithm::EdDSA),
        _ => Err(AuthError::unauthenticated(
            codes::UNSUPPORTED_ALGORITHM,
            "the token's alg is not accepted (RS256, RS384, RS512, ES256, ES384 or EdDSA)",
        )),
    }
}

fn key_error(error: KeyError) -> AuthError {
    match error {
        KeyError::Unknown => AuthError::unauthenticated(
            codes::UNTRUSTED_KEY,
            "the token's kid and alg match no key of its issuer",
        ),
        KeyError::Unavailable => AuthError::unauthenticated(
            codes::JWKS_UNAVAILABLE,
            "the keys of the token's issuer cannot be fetched right now",
        ),
    }
}

/// Checks the signature and reads the claims. Time and audience checks
/// are left to the caller (on the injected clock), so the library checks
/// nothing but the signature and `alg`.
fn verify_signature(token: &str, key: &DecodingKey, alg: Algorithm) -> Result<Claims, AuthError> {
    let mut validation = Validation::new(alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.leeway = 0;
    jsonwebtoken::decode::<Claims>(token, key, &validation).map(|data| data.claims).map_err(
        |error| match error.kind() {
            ErrorKind::InvalidSignature => AuthError::unauthenticated(
                codes::INVALID_SIGNATURE,
                "the token's signature does not verify",
            ),
            ErrorKind::Json(_) => invalid_claims("the token's claims are malformed"),
            _ => AuthError::unauthenticated(codes::INVALID_TOKEN, "the bearer token is not valid"),
        },
    )
}

fn invalid_claims(message: &str) -> AuthError {
    AuthError::unauthenticated(codes::INVALID_CLAIMS, message)
}

/// A non-empty claim value.
fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|value| !value.trim().is_empty())
}

/// The known `codeq:` scopes of a space-delimited `scope` claim; foreign
/// scopes (`openid`, …) are ignored.
fn scopes(scope: &str) -> Scopes {
    scope.split_whitespace().filter_map(Scope::parse).collect()
}

/// A producer: `sub` (or `email`), admin by `codeq:admin` or `role: ADMIN`.
fn producer_grant(claims: Claims) -> Result<Grant, AuthError> {
    let sub = non_empty(claims.sub)
        .or_else(|| non_empty(claims.email))
        .ok_or_else(|| invalid_claims("the token has no sub"))?;
    let admin = claims.scope.as_deref().is_some_and(|s| scopes(s).contains(Scope::Admin))
        || claims.role.as_deref() == Some(ADMIN_ROLE);
    let principal = Principal {
        kind: PrincipalKind::Producer,
        sub,
        event_types: EventTypes::All,
        scopes: if admin { Scopes::empty().with(Scope::Admin) } else { Scopes::empty() },
        worker_group: None,
        admin,
    };
    Ok(Grant { principal, role_header_allowed: claims.role.is_none() })
}

/// A worker: `sub`, `eventTypes` (required, non-empty), `scope`
/// (required; worker scopes only), optional `workerGroup`.
fn worker_grant(claims: Claims) -> Result<Grant, AuthError> {
    let sub = non_empty(claims.sub).ok_or_else(|| invalid_claims("the token has no sub"))?;
    let names =
        claims.event_types.ok_or_else(|| invalid_claims("the worker token has no eventTypes"))?;
    let event_types = EventTypes::from_names(names).map_err(|error| {
        AuthError::unauthenticated(codes::INVALID_CLAIMS, format!("the token's {error}"))
    })?;
    let scope = claims.scope.ok_or_else(|| invalid_claims("the worker token has no scope"))?;
    let scopes = scopes(&scope).iter().filter(|scope| *scope != Scope::Admin).collect();
    let principal = Principal {
        kind: PrincipalKind::Worker,
        sub,
        event_types,
        scopes,
        worker_group: non_empty(claims.worker_group),
        admin: false,
    };
    Ok(Grant { principal, role_header_allowed: false })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn claims(json: serde_json::Value) -> Claims {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn only_asymmetric_algorithms_are_accepted() {
        for name in ["RS256", "RS384", "RS512", "ES256", "ES384", "EdDSA"] {
            assert!(accepted_algorithm(name).is_ok(), "{name}");
        }
        for name in ["none", "None", "HS256", "HS384", "HS512", "PS256", "ES512", ""] {
            let error = accepted_algorithm(name).unwrap_err();
            assert_eq!(error.code(), codes::UNSUPPORTED_ALGORITHM, "{name}");
        }
    }

    #[test]
    fn a_crit_header_is_seen_whatever_it_holds() {
        let header = |text: &str| serde_json::from_str::<RawHeader>(text).unwrap();
        assert!(header(r#"{"alg":"RS256"}"#).crit.is_none());
        for crit in [r#"["b64"]"#, "[]", "null", "1"] {
            let text = format!(r#"{{"alg":"RS256","crit":{crit}}}"#);
            assert!(header(&text).crit.is_some(), "{text}");
        }
    }

    #[test]
    fn only_three_part_tokens_are_jwts() {
        assert_eq!(split("a.b.c"), Some(("a", "b")));
        assert_eq!(split("a.b."), Some(("a", "b")), "alg none has no signature");
        assert_eq!(split("static-token"), None);
        assert_eq!(split("a.b"), None);
        assert_eq!(split("a.b.c.d"), None);
        assert_eq!(split(".b.c"), None);
    }

    #[test]
    fn producer_admin_comes_from_scope_or_role() {
        let by_scope =
            producer_grant(claims(json_claims(r#"{"sub":"p","scope":"openid codeq:admin"}"#)))
                .unwrap();
        assert!(by_scope.principal.admin);
        assert!(by_scope.role_header_allowed);
        let by_role = producer_grant(claims(json_claims(r#"{"sub":"p","role":"ADMIN"}"#))).unwrap();
        assert!(by_role.principal.admin);
        assert!(!by_role.role_header_allowed);
        let plain =
            producer_grant(claims(json_claims(r#"{"email":"a@b.c","role":"USER"}"#))).unwrap();
        assert!(!plain.principal.admin);
        assert_eq!(plain.principal.sub, "a@b.c", "email stands in for a missing sub");
        assert!(producer_grant(claims(json_claims("{}"))).is_err());
    }

    #[test]
    fn x_role_applies_only_when_honoured_and_the_token_has_no_role() {
        let admin = RequestContext { x_role: Some("ADMIN") };
        let no_role = producer_grant(claims(json_claims(r#"{"sub":"p"}"#))).unwrap();
        assert!(no_role.resolve(admin, true).admin);
        assert!(no_role.resolve(admin, true).require_admin().is_ok());
        assert!(!no_role.resolve(admin, false).admin, "env prod");
        assert!(!no_role.resolve(RequestContext::default(), true).admin);
        let user = producer_grant(claims(json_claims(r#"{"sub":"p","role":"USER"}"#))).unwrap();
        assert!(!user.resolve(admin, true).admin, "a role claim wins over the header");
    }

    #[test]
    fn worker_claims_need_event_types_and_scope() {
        let ok = worker_grant(claims(json_claims(
            r#"{"sub":"w","eventTypes":["render"],"scope":"codeq:claim codeq:admin openid","workerGroup":"g"}"#,
        )))
        .unwrap()
        .principal;
        assert_eq!(ok.scopes, Scopes::empty().with(Scope::Claim), "no admin for workers");
        assert_eq!(ok.worker_group.as_deref(), Some("g"));
        assert_eq!(ok.kind, PrincipalKind::Worker);

        for json in [
            r#"{"sub":"w","scope":"codeq:claim"}"#,
            r#"{"sub":"w","eventTypes":[],"scope":"codeq:claim"}"#,
            r#"{"sub":"w","eventTypes":["render"]}"#,
            r#"{"eventTypes":["render"],"scope":"codeq:claim"}"#,
        ] {
            let error = worker_grant(claims(json_claims(json))).unwrap_err();
            assert_eq!(error.code(), codes::INVALID_CLAIMS, "{json}");
        }
    }

    fn json_claims(text: &str) -> serde_json::Value {
        serde_json::from_str(text).unwrap()
    }

    mod with_a_jwks {
        use std::sync::Mutex;

        use axum::Router;
        use axum::routing::get;
        use jsonwebtoken::{EncodingKey, Header};
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        use p256::pkcs8::EncodePrivateKey;
        use serde_json::{Value, json};

        use super::super::*;
        use crate::clock::ManualClock;

        const START_SECONDS: i64 = 1_700_000_000;

        /// Serves `keys` (changeable) as a JWKS; returns its URL.
        async fn serve(keys: Arc<Mutex<Vec<Value>>>) -> String {
            let router = Router::new().route(
                "/jwks",
                get(move || async move {
                    let keys = keys.lock().unwrap().clone();
                    axum::Json(json!({ "keys": keys }))
                }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}/jwks", listener.local_addr().unwrap());
            tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
            url
        }

        fn ec_key() -> (EncodingKey, Value) {
            let secret = p256::SecretKey::random(&mut rsa::rand_core::OsRng);
            let point = secret.public_key().to_encoded_point(false);
            let jwk = json!({
                "kty": "EC", "kid": "k1", "crv": "P-256",
                "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
                "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
            });
            (EncodingKey::from_ec_der(secret.to_pkcs8_der().unwrap().as_bytes()), jwk)
        }

        fn worker_token(key: &EncodingKey, sub: &str) -> String {
            let mut header = Header::new(Algorithm::ES256);
            header.kid = Some("k1".into());
            let claims = json!({
                "iss": "workers", "aud": "codeq-worker", "sub": sub, "eventTypes": ["*"],
                "scope": "codeq:claim", "exp": START_SECONDS + 600,
            });
            jsonwebtoken::encode(&header, &claims, key).unwrap()
        }

        /// A verifier of worker tokens signed by the keys in `published`.
        async fn verifier(published: Arc<Mutex<Vec<Value>>>) -> (JwtVerifier, Arc<ManualClock>) {
            let url = serve(published).await;
            let clock = Arc::new(ManualClock::new(Timestamp(START_SECONDS * 1000)));
            let jwks = Arc::new(Jwks::new(url, reqwest::Client::new(), clock.clone()));
            let issuer = TrustedIssuer {
                kind: PrincipalKind::Worker,
                issuer: "workers".into(),
                audience: Some("codeq-worker".into()),
                jwks,
            };
            let verifier =
                JwtVerifier::new(vec![issuer], clock.clone(), Duration::from_secs(60), false);
            (verifier, clock)
        }

        #[tokio::test]
        async fn a_cached_token_stops_verifying_once_a_refresh_finds_its_key_withdrawn() {
            let (key, jwk) = ec_key();
            let published = Arc::new(Mutex::new(vec![jwk]));
            let (verifier, clock) = verifier(published.clone()).await;
            let token = worker_token(&key, "w1");
            assert_eq!(verifier.verify(&token).await.unwrap().unwrap().sub, "w1");

            // Withdrawn, but the document is still fresh: not seen yet.
            published.lock().unwrap().clear();
            clock.advance(Duration::from_secs(200));
            assert_eq!(verifier.verify(&token).await.unwrap().unwrap().sub, "w1", "cached");

            // Stale: the next use refreshes it, and the cached token goes too.
            clock.advance(Duration::from_secs(101));
            assert_eq!(verifier.verify(&token).await.unwrap_err().code(), codes::UNTRUSTED_KEY);
            assert_eq!(
                verifier.verify(&worker_token(&key, "w2")).await.unwrap_err().code(),
                codes::UNTRUSTED_KEY
            );
        }

        #[tokio::test]
        async fn a_token_whose_key_stays_published_verifies_until_its_exp() {
            let (key, jwk) = ec_key();
            let (verifier, clock) = verifier(Arc::new(Mutex::new(vec![jwk]))).await;
            let token = worker_token(&key, "w1");
            assert_eq!(verifier.verify(&token).await.unwrap().unwrap().sub, "w1");

            clock.advance(Duration::from_secs(301));
            assert_eq!(verifier.verify(&token).await.unwrap().unwrap().sub, "w1", "refreshed");

            // exp is START + 600, plus 60 s of skew.
            clock.advance(Duration::from_secs(360));
            assert_eq!(verifier.verify(&token).await.unwrap_err().code(), codes::EXPIRED_TOKEN);
        }

        #[tokio::test]
        async fn tokens_of_unknown_issuers_and_non_jwts_are_left_to_other_sources() {
            let clock = Arc::new(ManualClock::new(Timestamp(START_SECONDS * 1000)));
            let jwks = Arc::new(Jwks::new(
                "http://127.0.0.1:1/jwks",
                reqwest::Client::new(),
                clock.clone(),
            ));
            let issuer = TrustedIssuer {
                kind: PrincipalKind::Producer,
                issuer: "producers".into(),
                audience: None,
                jwks,
            };
            let verifier = JwtVerifier::new(vec![issuer], clock, Duration::from_secs(60), false);
            let (key, _) = ec_key();
            assert_eq!(verifier.verify(&worker_token(&key, "w")).await, Ok(None), "iss workers");
            assert_eq!(verifier.verify("plain-static-token").await, Ok(None));
        }
    }
}
