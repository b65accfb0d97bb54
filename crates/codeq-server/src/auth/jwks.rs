//! JWKS documents (docs/security.md): fetched over HTTP, cached, and searched for
//! the key that verifies a token, by `kid` and `alg`.
//!
//! Rules:
//! - a fetched document is fresh for 5 minutes, or for the response's
//!   `Cache-Control: max-age` (capped at a day; `no-store`/`no-cache`
//!   mean 0);
//! - a `kid` the document does not hold triggers a refetch, at most one
//!   per 30 s whatever the outcome, so tokens with made-up `kid`s cannot
//!   turn the server into a load generator against the identity provider;
//!   a new key is picked up by the first request that uses it (the
//!   start-up fetch does not count against the 30 s);
//! - a stale document is fetched again on use, at most once per 30 s (a
//!   JWKS that is down is not asked on every request);
//! - a failed fetch keeps the keys already cached (they keep verifying);
//!   a key never seen stays unknown, so a token that needs it is refused
//!   (fail closed).
//!
//! Time comes from a [`Clock`], so the rules are tested without sleeping.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use codeq_core::Timestamp;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use reqwest::header::CACHE_CONTROL;
use serde::Deserialize;

use crate::clock::Clock;

/// How long a document without `max-age` stays fresh.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// The shortest time between two fetches of one document.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// The longest `max-age` honoured.
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// The largest document accepted.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// Why no key could be found for a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The document holds no key for this `kid` and `alg`, even after a
    /// refetch (or a refetch was not allowed yet).
    #[error("no key in the JWKS matches the token's kid and alg")]
    Unknown,
    /// The document could not be fetched and no cached key matches.
    #[error("the JWKS cannot be fetched")]
    Unavailable,
}

/// Why a fetch failed (logged; never shown to callers).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Connection, timeout or body error.
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    /// A non-2xx answer.
    #[error("answered HTTP {0}")]
    Status(u16),
    /// Over the 1 MiB a JWKS document may hold.
    #[error("document is over {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge,
    /// Not a JWKS document.
    #[error("not a JWKS document: {0}")]
    Invalid(#[from] serde_json::Error),
}

/// One signing key of the document.
struct PublicKey {
    kid: Option<String>,
    /// The key's `alg`, when the document names one.
    alg: Option<Algorithm>,
    /// The algorithms this key can verify, from its type and curve.
    usable_with: &'static [Algorithm],
    key: Arc<DecodingKey>,
}

impl PublicKey {
    /// Reads a JWK; `None` for keys that cannot verify a signature with an
    /// accepted algorithm (encryption keys, HMAC secrets, unknown types).
    fn from_jwk(jwk: &Jwk) -> Option<Self> {
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            return None;
        }
        let usable_with: &'static [Algorithm] = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => &[Algorithm::RS256, Algorithm::RS384, Algorithm::RS512],
            AlgorithmParameters::EllipticCurve(params) => match params.curve {
                EllipticCurve::P256 => &[Algorithm::ES256],
                EllipticCurve::P384 => &[Algorithm::ES384],
                _ => return None,
            },
            AlgorithmParameters::OctetKeyPair(params) => match params.curve {
                EllipticCurve::Ed25519 => &[Algorithm::EdDSA],
                _ => return None,
            },
            _ => return None,
        };
        let alg = match jwk.common.key_algorithm {
            None => None,
            Some(named) => Some(signing_algorithm(named)?),
        };
        let key = DecodingKey::from_jwk(jwk).ok()?;
        Some(Self { kid: jwk.common.key_id.clone(), alg, usable_with, key: Arc::new(key) })
    }

    fn verifies(&self, alg: Algorithm) -> bool {
        self.usable_with.contains(&alg) && self.alg.is_none_or(|own| own == alg)
    }
}

/// The accepted signing algorithm a JWK's `alg` names, if any.
fn signing_algorithm(named: KeyAlgorithm) -> Option<Algorithm> {
    match named {
        KeyAlgorithm::RS256 => Some(Algorithm::RS256),
        KeyAlgorithm::RS384 => Some(Algorithm::RS384),
        KeyAlgorithm::RS512 => Some(Algorithm::RS512),
        KeyAlgorithm::ES256 => Some(Algorithm::ES256),
        KeyAlgorithm::ES384 => Some(Algorithm::ES384),
        KeyAlgorithm::EdDSA => Some(Algorithm::EdDSA),
        _ => None,
    }
}

/// The cached document.
#[derive(Default)]
struct KeySet {
    keys: Vec<PublicKey>,
    fresh_until: Option<Timestamp>,
}

impl KeySet {
    fn is_fresh(&self, now: Timestamp) -> bool {
        self.fresh_until.is_some_and(|until| now < until)
    }

    /// The key for `kid` and `alg`. A token without `kid` is accepted only
    /// when exactly one key can verify its `alg` (no guessing among keys).
    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<Arc<DecodingKey>> {
        let mut candidates = self.keys.iter().filter(|key| key.verifies(alg));
        let found = match kid {
            Some(kid) => candidates.find(|key| key.kid.as_deref() == Some(kid)),
            None => candidates.next().filter(|_| candidates.next().is_none()),
        };
        found.map(|key| key.key.clone())
    }
}

/// When fetches were tried and how the last one went.
#[derive(Default)]
struct FetchState {
    /// Any fetch: gates refetching a stale document (so a JWKS that is
    /// down is not asked on every request).
    last_attempt: Option<Timestamp>,
    /// Fetches caused by an unknown `kid`: gated on their own, so the
    /// start-up fetch or a routine refresh does not delay a key rotation.
    last_for_unknown_kid: Option<Timestamp>,
    last_failed: bool,
}

/// Whether [`REFETCH_INTERVAL`] has passed since `last`. A clock that
/// jumped backwards counts as time passed, so it cannot block fetches.
fn interval_passed(last: Option<Timestamp>, now: Timestamp) -> bool {
    let interval = u64::try_from(REFETCH_INTERVAL.as_millis()).unwrap_or(u64::MAX);
    last.is_none_or(|last| now.millis().abs_diff(last.millis()) >= interval)
}

/// One JWKS URL and its cached keys.
pub struct Jwks {
    url: String,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    /// Read on every cache miss of the token cache; written after a fetch.
    /// A `std` lock: it is never held across an await.
    keys: RwLock<KeySet>,
    /// Serialises fetches, so concurrent requests for a new `kid` cause
    /// one fetch, and records when the last one happened.
    fetch: tokio::sync::Mutex<FetchState>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks").field("url", &self.url).finish_non_exhaustive()
    }
}

impl Jwks {
    /// A document at `url`, not fetched yet. `http` should have a timeout.
    pub fn new(url: impl Into<String>, http: reqwest::Client, clock: Arc<dyn Clock>) -> Self {
        Self {
            url: url.into(),
            http,
            clock,
            keys: RwLock::new(KeySet::default()),
            fetch: tokio::sync::Mutex::new(FetchState::default()),
        }
    }

    /// The document's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Fetches the document now (at start-up). Returns how many usable
    /// keys it holds.
    pub async fn refresh(&self) -> Result<usize, FetchError> {
        let mut fetch = self.fetch.lock().await;
        self.fetch_into(&mut fetch, self.clock.now()).await
    }

    /// The key that verifies a token signed with `alg` under `kid`,
    /// fetching the document when it is stale or lacks the key (within
    /// the 30 s rule).
    pub async fn key(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<DecodingKey>, KeyError> {
        if let Some(key) = self.cached(kid, alg, true) {
            return Ok(key);
        }
        let mut fetch = match self.cached(kid, alg, false) {
            // A known key of a stale document: refresh unless another
            // request already is, and never wait for that one (a slow JWKS
            // must not hold up tokens it has already signed).
            Some(stale) => match self.fetch.try_lock() {
                Ok(fetch) => fetch,
                Err(_) => return Ok(stale),
            },
            None => self.fetch.lock().await,
        };
        // Another request may have fetched while this one waited.
        if let Some(key) = self.cached(kid, alg, true) {
            return Ok(key);
        }
        let now = self.clock.now();
        let known = self.cached(kid, alg, false).is_some();
        let may_fetch = if known {
            interval_passed(fetch.last_attempt, now)
        } else {
            interval_passed(fetch.last_for_unknown_kid, now)
        };
        if may_fetch {
            if !known {
                fetch.last_for_unknown_kid = Some(now);
            }
            // The outcome is logged and recorded in `fetch`.
            let _ = self.fetch_into(&mut fetch, now).await;
        }
        match self.cached(kid, alg, false) {
            Some(key) => Ok(key),
            None if fetch.last_failed => Err(KeyError::Unavailable),
            None => Err(KeyError::Unknown),
        }
    }

    /// The cached key, if any; with `fresh_only`, only from a fresh document.
    fn cached(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
        fresh_only: bool,
    ) -> Option<Arc<DecodingKey>> {
        let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        if fresh_only && !keys.is_fresh(self.clock.now()) {
            return None;
        }
        keys.find(kid, alg)
    }

    async fn fetch_into(
        &self,
        state: &mut FetchState,
        now: Timestamp,
    ) -> Result<usize, FetchError> {
        state.last_attempt = Some(now);
        match self.download().await {
            Ok((keys, ttl)) => {
                let count = keys.len();
                let millis = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
                let set = KeySet { keys, fresh_until: Some(now.plus_millis(millis)) };
                *self.keys.write().unwrap_or_else(PoisonError::into_inner) = set;
                state.last_failed = false;
                tracing::info!(url = %self.url, keys = count, ttl_seconds = ttl.as_secs(), "JWKS fetched");
                Ok(count)
            }
            Err(error) => {
                state.last_failed = true;
                tracing::warn!(url = %self.url, %error, "cannot fetch the JWKS; cached keys stay in use, tokens needing other keys are refused");
                Err(error)
            }
        }
    }

    async fn download(&self) -> Result<(Vec<PublicKey>, Duration), FetchError> {
        let response = self.http.get(&self.url).send().await?;
        if !response.status().is_success() {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        let ttl = ttl(response.headers().get(CACHE_CONTROL).and_then(|v| v.to_str().ok()));
        if response.content_length().is_some_and(|len| len > MAX_DOCUMENT_BYTES as u64) {
            return Err(FetchError::TooLarge);
        }
        let body = response.bytes().await?;
        if body.len() > MAX_DOCUMENT_BYTES {
            return Err(FetchError::TooLarge);
        }
        Ok((parse_document(&body)?, ttl))
    }
}

/// The usable keys of a JWKS document. A key this server cannot use
/// (another type, curve or purpose, or malformed) is skipped rather than
/// failing the whole document.
fn parse_document(body: &[u8]) -> Result<Vec<PublicKey>, serde_json::Error> {
    #[derive(Deserialize)]
    struct Document {
        keys: Vec<serde_json::Value>,
    }
    let document: Document = serde_json::from_slice(body)?;
    Ok(document
        .keys
        .into_iter()
        .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
        .filter_map(|jwk| PublicKey::from_jwk(&jwk))
        .collect())
}

/// How long a response stays fresh, from its `Cache-Control` header.
fn ttl(cache_control: Option<&str>) -> Duration {
    let Some(header) = cache_control else {
        return DEFAULT_TTL;
    };
    let mut ttl = DEFAULT_TTL;
    for directive in header.split(',').map(str::trim) {
        let (name, value) = directive.split_once('=').unwrap_or((directive, ""));
        let name = name.trim();
        if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
            return Duration::ZERO;
        }
        if name.eq_ignore_ascii_case("max-age")
            && let Ok(seconds) = value.trim().trim_matches('"').parse::<u64>()
        {
            ttl = Duration::from_secs(seconds).min(MAX_TTL);
        }
    }
    ttl
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Router;
    use axum::http::HeaderMap;
    use axum::routing::get;
    use serde_json::{Value, json};

    use super::*;
    use crate::clock::ManualClock;

    /// A JWKS server whose document and `Cache-Control` the test changes,
    /// counting hits. The keys are syntactically valid: no signature is
    /// checked here.
    struct Server {
        url: String,
        hits: Arc<AtomicUsize>,
        document: Arc<Mutex<(Value, Option<&'static str>)>>,
    }

    impl Server {
        async fn start(kids: &[&str]) -> Self {
            let hits = Arc::new(AtomicUsize::new(0));
            let document = Arc::new(Mutex::new((keys(kids), None::<&'static str>)));
            let (h, d) = (hits.clone(), document.clone());
            let app = Router::new().route(
                "/jwks",
                get(move || async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    let (body, cache) = d.lock().unwrap().clone();
                    let mut headers = HeaderMap::new();
                    if let Some(cache) = cache {
                        headers.insert(CACHE_CONTROL, cache.parse().unwrap());
                    }
                    (headers, axum::Json(body))
                }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}/jwks", listener.local_addr().unwrap());
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            Self { url, hits, document }
        }

        fn serve(&self, kids: &[&str], cache_control: Option<&'static str>) {
            *self.document.lock().unwrap() = (keys(kids), cache_control);
        }

        fn hits(&self) -> usize {
            self.hits.load(Ordering::SeqCst)
        }
    }

    fn keys(kids: &[&str]) -> Value {
        let keys: Vec<Value> = kids
            .iter()
            .map(
                |kid| json!({ "kty": "RSA", "kid": kid, "alg": "RS256", "n": "AQAB", "e": "AQAB" }),
            )
            .collect();
        json!({ "keys": keys })
    }

    fn jwks(url: &str) -> (Jwks, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(Timestamp(1_000_000)));
        (Jwks::new(url, reqwest::Client::new(), clock.clone()), clock)
    }

    #[test]
    fn ttl_follows_max_age_and_defaults_to_five_minutes() {
        assert_eq!(ttl(None), DEFAULT_TTL);
        assert_eq!(ttl(Some("public, max-age=120")), Duration::from_secs(120));
        assert_eq!(ttl(Some("max-age=\"60\"")), Duration::from_secs(60));
        assert_eq!(ttl(Some("max-age=99999999")), MAX_TTL);
        assert_eq!(ttl(Some("max-age=abc")), DEFAULT_TTL);
        assert_eq!(ttl(Some("no-store")), Duration::ZERO);
    }

    #[test]
    fn documents_keep_only_signing_keys_for_accepted_algorithms() {
        let body = json!({ "keys": [
            { "kty": "RSA", "kid": "rsa", "n": "AQAB", "e": "AQAB" },
            { "kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB" },
            { "kty": "RSA", "kid": "ps", "alg": "PS256", "n": "AQAB", "e": "AQAB" },
            { "kty": "oct", "kid": "hmac", "k": "c2VjcmV0" },
            { "kty": "EC", "kid": "ec", "crv": "P-384", "x": "AQAB", "y": "AQAB" },
            { "kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "AQAB" },
            { "kty": "weird" }
        ]});
        let set = KeySet {
            keys: parse_document(body.to_string().as_bytes()).unwrap(),
            fresh_until: None,
        };
        let kids: Vec<_> = set.keys.iter().filter_map(|k| k.kid.as_deref()).collect();
        assert_eq!(kids, ["rsa", "ec", "ed"]);
        assert!(set.find(Some("rsa"), Algorithm::RS512).is_some());
        assert!(set.find(Some("rsa"), Algorithm::ES256).is_none(), "alg must fit the key type");
        assert!(set.find(Some("ec"), Algorithm::ES384).is_some());
        assert!(set.find(Some("ec"), Algorithm::ES256).is_none(), "curve must fit the alg");
        assert!(set.find(Some("ed"), Algorithm::EdDSA).is_some());
        assert!(set.find(None, Algorithm::EdDSA).is_some(), "the only EdDSA key");
        assert!(set.find(Some("hmac"), Algorithm::HS256).is_none());
    }

    #[test]
    fn a_token_without_kid_needs_exactly_one_candidate_key() {
        let body = keys(&["a", "b"]).to_string();
        let set = KeySet { keys: parse_document(body.as_bytes()).unwrap(), fresh_until: None };
        assert!(set.find(None, Algorithm::RS256).is_none());
    }

    #[tokio::test]
    async fn a_fresh_document_is_fetched_once() {
        let server = Server::start(&["a"]).await;
        let (jwks, clock) = jwks(&server.url);
        assert_eq!(jwks.refresh().await.unwrap(), 1);
        for _ in 0..3 {
            assert!(jwks.key(Some("a"), Algorithm::RS256).await.is_ok());
        }
        clock.advance(Duration::from_secs(299));
        assert!(jwks.key(Some("a"), Algorithm::RS256).await.is_ok());
        assert_eq!(server.hits(), 1);
    }

    #[tokio::test]
    async fn a_stale_document_is_fetched_again_after_its_max_age() {
        let server = Server::start(&["a"]).await;
        server.serve(&["a"], Some("max-age=60"));
        let (jwks, clock) = jwks(&server.url);
        jwks.key(Some("a"), Algorithm::RS256).await.unwrap();
        clock.advance(Duration::from_secs(59));
        jwks.key(Some("a"), Algorithm::RS256).await.unwrap();
        assert_eq!(server.hits(), 1);
        clock.advance(Duration::from_secs(1));
        jwks.key(Some("a"), Algorithm::RS256).await.unwrap();
        assert_eq!(server.hits(), 2);
    }

    #[tokio::test]
    async fn an_unknown_kid_refetches_at_most_once_per_30_seconds() {
        let server = Server::start(&["a"]).await;
        let (jwks, clock) = jwks(&server.url);
        jwks.refresh().await.unwrap();

        for _ in 0..5 {
            assert_eq!(
                jwks.key(Some("new"), Algorithm::RS256).await.unwrap_err(),
                KeyError::Unknown
            );
        }
        assert_eq!(server.hits(), 2, "one refetch for five requests");

        server.serve(&["a", "new"], None);
        clock.advance(Duration::from_secs(29));
        assert!(jwks.key(Some("new"), Algorithm::RS256).await.is_err(), "still rate-limited");
        assert_eq!(server.hits(), 2);
        clock.advance(Duration::from_secs(1));
        assert!(jwks.key(Some("new"), Algorithm::RS256).await.is_ok(), "rotation picked up");
        assert_eq!(server.hits(), 3);
    }

    #[tokio::test]
    async fn a_jwks_that_cannot_be_fetched_fails_closed_but_cached_keys_keep_working() {
        let server = Server::start(&["a"]).await;
        let (jwks, clock) = jwks(&server.url);
        jwks.refresh().await.unwrap();
        *server.document.lock().unwrap() = (json!("not a jwks"), None);

        clock.advance(DEFAULT_TTL);
        assert!(jwks.key(Some("a"), Algorithm::RS256).await.is_ok(), "stale key still used");
        assert!(jwks.key(Some("a"), Algorithm::RS256).await.is_ok());
        assert_eq!(server.hits(), 2, "a failing JWKS is not asked on every request");
        assert_eq!(jwks.key(Some("b"), Algorithm::RS256).await.unwrap_err(), KeyError::Unavailable);
        assert_eq!(server.hits(), 3);
    }

    #[tokio::test]
    async fn a_rotated_key_is_picked_up_right_after_the_start_up_fetch() {
        let server = Server::start(&["a"]).await;
        let (jwks, _clock) = jwks(&server.url);
        jwks.refresh().await.unwrap();
        server.serve(&["a", "b"], None);
        assert!(jwks.key(Some("b"), Algorithm::RS256).await.is_ok());
        assert_eq!(server.hits(), 2);
    }

    #[tokio::test]
    async fn a_slow_refresh_does_not_hold_up_known_keys() {
        let hits = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(tokio::sync::Notify::new());
        let (h, r) = (hits.clone(), release.clone());
        let app = Router::new().route(
            "/jwks",
            get(move || async move {
                if h.fetch_add(1, Ordering::SeqCst) > 0 {
                    r.notified().await;
                }
                axum::Json(keys(&["a"]))
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let (jwks, clock) = jwks(&url);
        let jwks = Arc::new(jwks);
        jwks.refresh().await.unwrap();
        clock.advance(DEFAULT_TTL);

        let refreshing = tokio::spawn({
            let jwks = jwks.clone();
            async move { jwks.key(Some("a"), Algorithm::RS256).await }
        });
        while hits.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        let meanwhile =
            tokio::time::timeout(Duration::from_secs(5), jwks.key(Some("a"), Algorithm::RS256))
                .await;
        assert!(meanwhile.expect("did not wait for the refresh").is_ok());

        release.notify_one();
        assert!(refreshing.await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn an_unreachable_jwks_is_unavailable() {
        let (jwks, _clock) = jwks("http://127.0.0.1:1/jwks");
        assert!(jwks.refresh().await.is_err());
        assert_eq!(jwks.key(Some("a"), Algorithm::RS256).await.unwrap_err(), KeyError::Unavailable);
    }
}
