//! Producer and worker JWTs against an in-process JWKS server, with keys
//! the tests generate (RSA and EC): what is refused with 401, what is
//! accepted, key rotation and the refetch limit, 403s, `X-Role`, and
//! static tokens side by side.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use codeq_server::config::{Config, Env};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::EncodePrivateKey;
use reqwest::Method;
use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey};
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};

use crate::helpers::*;

const PRODUCER_ISS: &str = "https://id.example.test";
const WORKER_ISS: &str = "https://workers.example.test";
const AUDIENCE: &str = "codeq";
const WORKER_AUDIENCE: &str = "codeq-worker";

/// One RSA key per test binary: generating it is the slow part.
fn rsa_private() -> &'static rsa::RsaPrivateKey {
    static KEY: OnceLock<rsa::RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap())
}

/// A signing key and its public JWK.
struct SigningKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn rsa_key(kid: &str) -> SigningKey {
    let private = rsa_private();
    let der = private.to_pkcs1_der().unwrap();
    SigningKey {
        kid: kid.into(),
        alg: Algorithm::RS256,
        encoding: EncodingKey::from_rsa_der(der.as_bytes()),
        jwk: json!({
            "kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
            "n": b64(&private.n().to_bytes_be()), "e": b64(&private.e().to_bytes_be()),
        }),
    }
}

fn ec_key(kid: &str) -> SigningKey {
    let secret = p256::SecretKey::random(&mut rsa::rand_core::OsRng);
    let der = secret.to_pkcs8_der().unwrap();
    let point = secret.public_key().to_encoded_point(false);
    SigningKey {
        kid: kid.into(),
        alg: Algorithm::ES256,
        encoding: EncodingKey::from_ec_der(der.as_bytes()),
        jwk: json!({
            "kty": "EC", "kid": kid, "crv": "P-256",
            "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap()),
        }),
    }
}

fn p384_key(kid: &str) -> SigningKey {
    let secret = p384::SecretKey::random(&mut rsa::rand_core::OsRng);
    let der = p384::pkcs8::EncodePrivateKey::to_pkcs8_der(&secret).unwrap();
    let point =
        p384::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&secret.public_key(), false);
    SigningKey {
        kid: kid.into(),
        alg: Algorithm::ES384,
        encoding: EncodingKey::from_ec_der(der.as_bytes()),
        jwk: json!({
            "kty": "EC", "kid": kid, "crv": "P-384",
            "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap()),
        }),
    }
}

fn ed25519_key(kid: &str) -> SigningKey {
    let mut seed = [0u8; 32];
    rsa::rand_core::RngCore::fill_bytes(&mut rsa::rand_core::OsRng, &mut seed);
    let secret = ed25519_dalek::SigningKey::from_bytes(&seed);
    let der = ed25519_dalek::pkcs8::EncodePrivateKey::to_pkcs8_der(&secret).unwrap();
    SigningKey {
        kid: kid.into(),
        alg: Algorithm::EdDSA,
        encoding: EncodingKey::from_ed_der(der.as_bytes()),
        jwk: json!({
            "kty": "OKP", "kid": kid, "crv": "Ed25519",
            "x": b64(secret.verifying_key().as_bytes()),
        }),
    }
}

/// The RSA key under another `kid`, with no `alg` in its JWK (so it
/// verifies RS256, RS384 and RS512), signing with `alg`.
fn rsa_key_for(kid: &str, alg: Algorithm) -> SigningKey {
    let mut key = rsa_key(kid);
    key.alg = alg;
    key.jwk.as_object_mut().unwrap().remove("alg");
    key
}

/// An in-process identity provider: serves a JWKS document the test
/// changes, and counts its hits.
struct Idp {
    url: String,
    hits: Arc<AtomicUsize>,
    keys: Arc<Mutex<Vec<Value>>>,
}

impl Idp {
    async fn start(keys: &[&SigningKey]) -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        let published: Arc<Mutex<Vec<Value>>> =
            Arc::new(Mutex::new(keys.iter().map(|key| key.jwk.clone()).collect()));
        let (h, k) = (hits.clone(), published.clone());
        let router = Router::new().route(
            "/jwks.json",
            get(move || async move {
                h.fetch_add(1, Ordering::SeqCst);
                let keys: Vec<Value> = k.lock().unwrap().clone();
                axum::Json(json!({ "keys": keys }))
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Self { url, hits, keys: published }
    }

    fn publish(&self, key: &SigningKey) {
        self.keys.lock().unwrap().push(key.jwk.clone());
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Producer and worker issuers on `url`, plus the usual static tokens.
fn trust(config: &mut Config, url: &str) {
    config.identity_jwks_url = Some(url.into());
    config.identity_issuer = Some(PRODUCER_ISS.into());
    config.identity_audience = Some(AUDIENCE.into());
    config.worker_jwks_url = Some(url.into());
    config.worker_issuer = Some(WORKER_ISS.into());
    config.worker_audience = WORKER_AUDIENCE.into();
}

async fn spawn(idp: &Idp) -> TestApp {
    spawn_with(idp, |_| {}).await
}

async fn spawn_with(idp: &Idp, change: impl FnOnce(&mut Config)) -> TestApp {
    let url = idp.url.clone();
    TestApp::spawn_with(
        move |config| {
            trust(config, &url);
            change(config);
        },
        false,
    )
    .await
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn producer_claims(sub: &str) -> Value {
    json!({ "iss": PRODUCER_ISS, "aud": AUDIENCE, "sub": sub, "exp": now() + 600, "iat": now() })
}

fn worker_claims(sub: &str, event_types: &[&str], scope: &str) -> Value {
    json!({
        "iss": WORKER_ISS, "aud": [WORKER_AUDIENCE, "other"], "sub": sub,
        "eventTypes": event_types, "scope": scope, "exp": now() + 600, "iat": now(),
    })
}

fn all_scopes() -> &'static str {
    "codeq:claim codeq:heartbeat codeq:abandon codeq:nack codeq:result codeq:subscribe"
}

fn sign(key: &SigningKey, claims: &Value) -> String {
    let mut header = Header::new(key.alg);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
}

/// A request with a bearer token and optional extra header.
async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
    extra: Option<(&str, &str)>,
) -> Reply {
    let mut request =
        app.http.request(method, format!("{}/v1/codeq{path}", app.base)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    if let Some((name, value)) = extra {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    Reply { status, headers, body }
}

/// Asserts the 401 shape: `WWW-Authenticate: Bearer` and `{error, code}`.
fn assert_401(reply: &Reply, code: &str, what: &str) {
    assert_eq!(reply.status, 401, "{what}: {:?}", reply.body);
    let challenge = reply.headers.get("www-authenticate").map(|v| v.to_str().unwrap());
    assert!(challenge.is_some_and(|v| v.starts_with("Bearer")), "{what}: {challenge:?}");
    assert!(reply.body["error"].as_str().is_some_and(|e| !e.is_empty()), "{what}");
    assert_eq!(reply.code(), code, "{what}: {:?}", reply.body);
}

async fn claim(app: &TestApp, token: &str, commands: &[&str]) -> Reply {
    call(app, Method::POST, "/tasks/claim", token, Some(json!({ "commands": commands })), None)
        .await
}

async fn create(app: &TestApp, token: &str, command: &str) -> Reply {
    let body = json!({ "command": command, "payload": { "n": 1 } });
    call(app, Method::POST, "/tasks", token, Some(body), None).await
}

#[tokio::test]
async fn valid_producer_and_worker_tokens_with_rsa_and_ec_keys_work() {
    let (rsa, ec) = (rsa_key("rsa-1"), ec_key("ec-1"));
    let idp = Idp::start(&[&rsa, &ec]).await;
    let app = spawn(&idp).await;

    let producer = sign(&rsa, &producer_claims("svc-a"));
    let created = create(&app, &producer, "render").await;
    assert_eq!(created.status, 202, "{:?}", created.body);

    let worker = sign(&ec, &worker_claims("w-jwt", &["render"], all_scopes()));
    let claimed = claim(&app, &worker, &["render"]).await;
    assert_eq!(claimed.status, 200, "{:?}", claimed.body);
    assert_eq!(claimed.body["workerId"], "w-jwt");
    let id = claimed.str("id").to_owned();
    let done = call(
        &app,
        Method::POST,
        &format!("/tasks/{id}/result"),
        &worker,
        Some(json!({ "status": "COMPLETED", "result": {} })),
        None,
    )
    .await;
    assert_eq!(done.status, 200, "{:?}", done.body);
    assert_eq!(idp.hits(), 1, "one start-up fetch serves every request");
}

#[tokio::test]
async fn every_accepted_algorithm_verifies() {
    let keys = [
        rsa_key_for("rs384", Algorithm::RS384),
        rsa_key_for("rs512", Algorithm::RS512),
        ec_key("es256"),
        p384_key("es384"),
        ed25519_key("eddsa"),
    ];
    let idp = Idp::start(&keys.iter().collect::<Vec<_>>()).await;
    let app = spawn(&idp).await;
    for key in &keys {
        let reply = create(&app, &sign(key, &producer_claims("svc-a")), "render").await;
        assert_eq!(reply.status, 202, "{:?}: {:?}", key.alg, reply.body);
    }
}

#[tokio::test]
async fn a_key_is_only_used_with_its_own_algorithm() {
    let (rsa, ec) = (rsa_key("rsa-1"), ec_key("ec-1"));
    let idp = Idp::start(&[&rsa, &ec]).await;
    let app = spawn(&idp).await;
    let claims = producer_claims("svc-a");
    // The RSA JWK says alg RS256: RS512 under its kid is refused.
    let rs512 = SigningKey { alg: Algorithm::RS512, ..rsa_key("rsa-1") };
    assert_401(&create(&app, &sign(&rs512, &claims), "render").await, "untrusted_key", "RS512");
    // An RSA signature under the EC key's kid finds no RSA key there.
    let wrong_kid = SigningKey { kid: ec.kid.clone(), ..rsa_key("x") };
    let reply = create(&app, &sign(&wrong_kid, &claims), "render").await;
    assert_401(&reply, "untrusted_key", "RS256 under an EC kid");
}

#[tokio::test]
async fn bad_tokens_get_401_with_a_bearer_challenge_and_a_code() {
    let rsa = rsa_key("rsa-1");
    let idp = Idp::start(&[&rsa]).await;
    let app = spawn(&idp).await;
    let claims = producer_claims("svc-a");

    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    );
    let public_pem = rsa_private().to_public_key().to_pkcs1_pem(Default::default()).unwrap();
    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.kid = Some(rsa.kid.clone());
    let hs256 =
        jsonwebtoken::encode(&hs_header, &claims, &EncodingKey::from_secret(public_pem.as_bytes()))
            .unwrap();
    let with = |field: &str, value: Value| {
        let mut claims = claims.clone();
        claims[field] = value;
        sign(&rsa, &claims)
    };
    let expired = with("exp", json!(now() - 61 - 5));
    let early = with("nbf", json!(now() + 60 + 30));
    let wrong_iss = with("iss", json!("https://evil.example.test"));
    let wrong_aud = with("aud", json!("someone-else"));
    let no_exp = {
        let mut claims = claims.clone();
        claims.as_object_mut().unwrap().remove("exp");
        sign(&rsa, &claims)
    };
    let unknown_kid = sign(&rsa_key("not-published"), &claims);
    let critical = {
        let mut header = Header::new(rsa.alg);
        header.kid = Some(rsa.kid.clone());
        header.crit = Some(vec!["urn:example:must-understand".into()]);
        jsonwebtoken::encode(&header, &claims, &rsa.encoding).unwrap()
    };
    let tampered = {
        let valid = sign(&rsa, &claims);
        let parts: Vec<&str> = valid.split('.').collect();
        let mut forged = claims.clone();
        forged["sub"] = json!("admin");
        format!("{}.{}.{}", parts[0], b64(forged.to_string().as_bytes()), parts[2])
    };

    for (what, token, code) in [
        ("alg none", none.as_str(), "unsupported_algorithm"),
        ("HS256 with the RSA public key as secret", &hs256, "unsupported_algorithm"),
        ("expired", &expired, "expired_token"),
        ("nbf beyond the skew", &early, "token_not_yet_valid"),
        ("wrong iss", &wrong_iss, "invalid_token"),
        ("wrong aud", &wrong_aud, "invalid_claims"),
        ("no exp", &no_exp, "invalid_claims"),
        ("unknown kid", &unknown_kid, "untrusted_key"),
        ("a critical header extension (crit)", &critical, "invalid_token"),
        ("tampered payload", &tampered, "invalid_signature"),
        ("not a token at all", "a.b.c", "invalid_token"),
    ] {
        assert_401(&create(&app, token, "render").await, code, what);
    }
    assert_eq!(idp.hits(), 2, "the start-up fetch and one refetch for the unknown kid");
}

#[tokio::test]
async fn worker_tokens_without_event_types_or_scope_get_401() {
    let ec = ec_key("ec-1");
    let idp = Idp::start(&[&ec]).await;
    let app = spawn(&idp).await;
    let mut no_types = worker_claims("w", &["render"], all_scopes());
    no_types.as_object_mut().unwrap().remove("eventTypes");
    let mut empty_types = worker_claims("w", &["render"], all_scopes());
    empty_types["eventTypes"] = json!([]);
    let mut no_scope = worker_claims("w", &["render"], all_scopes());
    no_scope.as_object_mut().unwrap().remove("scope");
    for (what, claims) in
        [("no eventTypes", no_types), ("empty eventTypes", empty_types), ("no scope", no_scope)]
    {
        let reply = claim(&app, &sign(&ec, &claims), &["render"]).await;
        assert_401(&reply, "invalid_claims", what);
    }
}

#[tokio::test]
async fn a_producer_token_on_a_worker_endpoint_needs_allow_producer_as_worker() {
    let rsa = rsa_key("rsa-1");
    let idp = Idp::start(&[&rsa]).await;
    let producer = sign(&rsa, &producer_claims("svc-a"));

    let strict = spawn(&idp).await;
    let refused = claim(&strict, &producer, &["render"]).await;
    assert_eq!((refused.status, refused.code()), (403, "not_worker"), "{:?}", refused.body);

    let lenient = spawn_with(&idp, |config| config.allow_producer_as_worker = true).await;
    lenient.create_simple("render").await;
    let claimed = claim(&lenient, &producer, &["render"]).await;
    assert_eq!(claimed.status, 200, "{:?}", claimed.body);
    assert_eq!(claimed.body["workerId"], "svc-a");
}

#[tokio::test]
async fn times_within_the_clock_skew_are_accepted() {
    let rsa = rsa_key("rsa-1");
    let idp = Idp::start(&[&rsa]).await;
    let app = spawn(&idp).await;
    let mut claims = producer_claims("svc-a");
    claims["exp"] = json!(now() - 30);
    claims["nbf"] = json!(now() + 30);
    claims["iat"] = json!(now() + 30);
    let reply = create(&app, &sign(&rsa, &claims), "render").await;
    assert_eq!(reply.status, 202, "{:?}", reply.body);
}

#[tokio::test]
async fn a_rotated_key_is_used_at_once_and_unknown_kids_refetch_at_most_every_30_seconds() {
    let (old, new) = (rsa_key("2024"), ec_key("2025"));
    let idp = Idp::start(&[&old]).await;
    let app = spawn(&idp).await;
    assert_eq!(idp.hits(), 1, "fetched at start-up");

    idp.publish(&new);
    let rotated = sign(&new, &producer_claims("svc-a"));
    let reply = create(&app, &rotated, "render").await;
    assert_eq!(reply.status, 202, "the new key is picked up: {:?}", reply.body);
    assert_eq!(idp.hits(), 2);

    for n in 0..5 {
        let unknown = sign(&rsa_key(&format!("bogus-{n}")), &producer_claims("svc-a"));
        assert_401(&create(&app, &unknown, "render").await, "untrusted_key", "unknown kid");
    }
    assert_eq!(idp.hits(), 2, "no second refetch within 30 s");
    assert_eq!(create(&app, &rotated, "render").await.status, 202);
}

#[tokio::test]
async fn a_withdrawn_key_stops_verifying_within_one_refresh_also_for_tokens_used_before() {
    let (kept, withdrawn) = (ec_key("kept"), rsa_key("compromised"));
    let idp = Idp::start(&[&kept, &withdrawn]).await;
    let url = idp.url.clone();
    let app = TestApp::spawn_with(move |config| trust(config, &url), true).await;
    let used = sign(&withdrawn, &producer_claims("svc-a"));
    let other = sign(&kept, &producer_claims("svc-b"));
    assert_eq!(create(&app, &used, "render").await.status, 202, "verified and cached");
    assert_eq!(create(&app, &other, "render").await.status, 202);

    idp.keys.lock().unwrap().retain(|jwk| jwk["kid"] != "compromised");
    app.advance(301); // the JWKS document (5 minutes) is stale

    assert_401(&create(&app, &used, "render").await, "untrusted_key", "a cached token");
    assert_eq!(create(&app, &other, "render").await.status, 202, "the kept key still verifies");
    // Start-up, the refresh, and the one unknown-kid refetch the now
    // unknown kid is allowed per 30 s.
    assert_eq!(idp.hits(), 3);
}

#[tokio::test]
async fn the_server_starts_with_its_jwks_down_and_refuses_only_jwts() {
    let app =
        TestApp::spawn_with(|config| trust(config, "http://127.0.0.1:1/jwks.json"), false).await;
    let rsa = rsa_key("rsa-1");
    let reply = create(&app, &sign(&rsa, &producer_claims("svc-a")), "render").await;
    assert_401(&reply, "jwks_unavailable", "JWKS down");
    assert_eq!(create(&app, PRODUCER, "render").await.status, 202, "static tokens still work");
    let ready = app.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, 200);
}

#[tokio::test]
async fn scopes_event_types_and_ownership_are_enforced_with_403() {
    let ec = ec_key("ec-1");
    let idp = Idp::start(&[&ec]).await;
    let app = spawn(&idp).await;
    let claim_only = sign(&ec, &worker_claims("w-a", &["render"], "codeq:claim"));
    let full_a = sign(&ec, &worker_claims("w-a", &["render"], all_scopes()));
    let full_b = sign(&ec, &worker_claims("w-b", &["render"], all_scopes()));
    let id = app.create_simple("render").await;

    let outside = claim(&app, &full_a, &["other"]).await;
    assert_eq!((outside.status, outside.code()), (403, "command_not_allowed"));

    let claimed = claim(&app, &claim_only, &["render"]).await;
    assert_eq!(claimed.status, 200, "{:?}", claimed.body);
    assert_eq!(claimed.str("id"), id);
    let heartbeat = format!("/tasks/{id}/heartbeat");
    let body = Some(json!({ "extendSeconds": 60 }));
    let no_scope = call(&app, Method::POST, &heartbeat, &claim_only, body.clone(), None).await;
    assert_eq!((no_scope.status, no_scope.code()), (403, "missing_scope"));
    let not_owner = call(&app, Method::POST, &heartbeat, &full_b, body.clone(), None).await;
    assert_eq!(not_owner.status, 403, "{:?}", not_owner.body);
    let owner = call(&app, Method::POST, &heartbeat, &full_a, body, None).await;
    assert_eq!(owner.status, 200, "{:?}", owner.body);
}

#[tokio::test]
async fn admin_comes_from_scope_or_role_and_x_role_only_in_dev() {
    let rsa = rsa_key("rsa-1");
    let idp = Idp::start(&[&rsa]).await;
    let plain = sign(&rsa, &producer_claims("svc-a"));
    let mut by_scope = producer_claims("svc-a");
    by_scope["scope"] = json!("openid codeq:admin");
    let by_scope = sign(&rsa, &by_scope);
    let mut by_role = producer_claims("svc-a");
    by_role["role"] = json!("ADMIN");
    let by_role = sign(&rsa, &by_role);
    let mut user = producer_claims("svc-a");
    user["role"] = json!("USER");
    let user = sign(&rsa, &user);
    let x_role = Some(("X-Role", "ADMIN"));

    let prod = spawn(&idp).await;
    let queues = "/admin/queues";
    for (what, token, extra, status) in [
        ("no rights", &plain, None, 403),
        ("codeq:admin scope", &by_scope, None, 200),
        ("role ADMIN", &by_role, None, 200),
        ("X-Role outside dev", &plain, x_role, 403),
    ] {
        let reply = call(&prod, Method::GET, queues, token, None, extra).await;
        assert_eq!(reply.status, status, "{what}: {:?}", reply.body);
        if status == 403 {
            assert_eq!(reply.code(), "not_admin", "{what}");
        }
    }

    let dev = spawn_with(&idp, |config| config.env = Env::Dev).await;
    for (what, token, extra, status) in [
        ("X-Role in dev", &plain, x_role, 200),
        ("the same token without X-Role", &plain, None, 403),
        ("X-Role with a role claim", &user, x_role, 403),
    ] {
        let reply = call(&dev, Method::GET, queues, token, None, extra).await;
        assert_eq!(reply.status, status, "{what}: {:?}", reply.body);
    }
}

#[tokio::test]
async fn static_tokens_and_jwts_work_side_by_side() {
    let (rsa, ec) = (rsa_key("rsa-1"), ec_key("ec-1"));
    let idp = Idp::start(&[&rsa, &ec]).await;
    let app = spawn(&idp).await;
    let jwt_producer = sign(&rsa, &producer_claims("svc-jwt"));
    let jwt_worker = sign(&ec, &worker_claims("w-jwt", &["a"], all_scopes()));

    assert_eq!(create(&app, &jwt_producer, "a").await.status, 202);
    assert_eq!(create(&app, PRODUCER, "b").await.status, 202);
    assert_eq!(claim(&app, WORKER, &["a"]).await.status, 200, "static worker, JWT task");
    let reply = claim(&app, &jwt_worker, &["a"]).await;
    assert_eq!(reply.status, 204, "nothing left for the JWT worker: {:?}", reply.body);
    assert_eq!(claim(&app, &jwt_worker, &["b"]).await.code(), "command_not_allowed");
    assert_eq!(app.get("/admin/queues", ADMIN).await.status, 200, "static admin");
}

#[tokio::test]
async fn a_worker_token_of_an_issuer_shared_with_producers_without_an_audience_is_a_workers() {
    let rsa = rsa_key("rsa-1");
    let idp = Idp::start(&[&rsa]).await;
    // One identity service for both, producers' audience unset.
    let app = spawn_with(&idp, |config| {
        config.identity_issuer = Some(WORKER_ISS.into());
        config.identity_audience = None;
    })
    .await;
    let worker = sign(&rsa, &worker_claims("w-1", &["render"], "codeq:claim codeq:admin"));
    let refused = create(&app, &worker, "billing").await;
    assert_eq!((refused.status, refused.code()), (403, "not_producer"), "{:?}", refused.body);
    let admin = call(&app, Method::GET, "/admin/queues", &worker, None, None).await;
    assert_eq!(admin.status, 403, "{:?}", admin.body);
    app.create_simple("render").await;
    assert_eq!(claim(&app, &worker, &["render"]).await.status, 200);
    let producer =
        json!({ "iss": WORKER_ISS, "aud": "anything", "sub": "svc", "exp": now() + 600 });
    assert_eq!(create(&app, &sign(&rsa, &producer), "billing").await.status, 202);
}
