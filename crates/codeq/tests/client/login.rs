//! `auth login` against a stand-in identity service: an in-test HTTP
//! server answering the two calls of docs/cli.md (running a real identity
//! service here is not practical); codeQ itself is the real server.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::support::{PRODUCER, Server, closed_port, run, run_json};

const API_KEY: &str = "iam-key";
/// A password the stand-in refuses with 400 rather than 401.
const REFUSED_WITH_400: &str = "refused with 400";

/// What the stand-in was sent, for the assertions.
#[derive(Clone, Default)]
struct Seen {
    exchanges: Arc<Mutex<Vec<Value>>>,
}

fn key_ok(query: &std::collections::HashMap<String, String>) -> bool {
    query.get("key").map(String::as_str) == Some(API_KEY)
}

async fn sign_in(
    Query(query): Query<std::collections::HashMap<String, String>>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    if !key_ok(&query) {
        return (StatusCode::FORBIDDEN, Json(json!({"error": "bad key", "code": "bad_key"})));
    }
    if body == json!({"email": "ada@example.com", "password": "s3cret pass"}) {
        (StatusCode::OK, Json(json!({"idToken": "id-token-1", "expiresIn": "3600"})))
    } else if body["password"] == REFUSED_WITH_400 {
        // Firebase's way: 400 and a body that is not codeQ's error shape.
        (StatusCode::BAD_REQUEST, Json(json!({"error": "INVALID_PASSWORD"})))
    } else {
        let refused = json!({"error": "wrong password", "code": "invalid_password"});
        (StatusCode::UNAUTHORIZED, Json(refused))
    }
}

async fn exchange(
    State(seen): State<Seen>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    if !key_ok(&query) || body["idToken"] != "id-token-1" {
        return (StatusCode::UNAUTHORIZED, Json(json!({"error": "no", "code": "no"})));
    }
    seen.exchanges.lock().unwrap().push(body);
    // The codeQ server under test knows this token as its admin producer.
    (StatusCode::OK, Json(json!({"accessToken": PRODUCER, "tokenType": "Bearer"})))
}

/// Starts the stand-in on the server's runtime; returns its base URL.
fn start_iam(server: &Server, seen: Seen) -> String {
    let app = Router::new()
        .route("/v1/signInWithPassword", post(sign_in))
        .route("/v1/token/exchange", post(exchange))
        .with_state(seen);
    let addr: SocketAddr = server.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    });
    format!("http://{addr}/v1")
}

fn login(server: &Server, iam: &str, password: &str) -> std::process::Output {
    use std::io::Write as _;
    let mut child = server
        .codeq()
        .args(["--base-url", &server.base, "--iam-base-url", iam, "--iam-api-key", API_KEY])
        .args(["auth", "login", "--email", "ada@example.com", "--password-stdin"])
        .args(["--tenant-id", "acme", "--scopes", "codeq:admin,codeq:read"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn login_stores_the_exchanged_token_which_show_masks_and_clear_removes() {
    let server = Server::start();
    let seen = Seen::default();
    let iam = start_iam(&server, seen.clone());

    let output = login(&server, &iam, "s3cret pass");
    let shown = run_json(server.codeq().args(["auth", "show"]));
    let created = run_json(server.codeq().args([
        "--base-url",
        &server.base,
        "task",
        "create",
        "--command",
        "A",
    ]));
    run(server.codeq().args(["auth", "clear", "--producer"]));
    let cleared = run_json(server.codeq().args(["auth", "show"]));

    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let exchanges = seen.exchanges.lock().unwrap().clone();
    assert_eq!(
        exchanges,
        [json!({"idToken": "id-token-1", "audience": "codeq-producer", "tenantId": "acme",
                "scopes": ["codeq:admin", "codeq:read"]})]
    );
    assert_eq!(shown["producerToken"]["token"], "t-pr****");
    assert_eq!(shown["iamBaseUrl"], iam.as_str());
    assert!(!shown.to_string().contains(PRODUCER));
    assert_eq!(created["status"], "PENDING", "the stored token is used");
    assert_eq!(cleared["producerToken"], Value::Null);
}

/// True when `stderr` points at codeQ's server settings rather than the
/// identity service's.
fn blames_the_codeq_server(stderr: &str) -> bool {
    stderr.contains(" --base-url") || stderr.contains("codeq serve")
}

#[test]
fn a_refused_login_exits_3_naming_the_identity_services_answer_and_stores_nothing() {
    let server = Server::start();
    let iam = start_iam(&server, Seen::default());

    for (password, answer) in [
        ("wrong", "HTTP 401"),
        (REFUSED_WITH_400, r#"HTTP 400 http_error: {"error":"INVALID_PASSWORD"}"#),
    ] {
        let output = login(&server, &iam, password);

        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(3), "{stderr}");
        let refused = format!("codeq: the identity service at {iam} refused the sign-in: {answer}");
        assert!(stderr.contains(&refused), "{stderr}");
        assert!(stderr.contains("hint: check the e-mail and password"), "{stderr}");
        assert!(!blames_the_codeq_server(&stderr), "{stderr}");
    }
    assert!(!server.home().join(".codeq/config.yaml").exists());
}

#[test]
fn an_unreachable_identity_service_is_named_with_a_hint_at_iam_base_url() {
    let server = Server::start();
    let iam = format!("{}/v1", closed_port());

    let output = login(&server, &iam, "s3cret pass");

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let named = format!("codeq: cannot connect to the identity service at {iam} (");
    assert!(stderr.contains(&named), "{stderr}");
    assert!(stderr.contains("hint: is --iam-base-url"), "{stderr}");
    assert!(!blames_the_codeq_server(&stderr), "{stderr}");
}

#[test]
fn login_without_an_identity_service_exits_2() {
    let server = Server::start();

    let output = run(server.codeq().args(["auth", "login", "--email", "a@b.c", "--no-prompt"]));

    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--iam-base-url"));
}
