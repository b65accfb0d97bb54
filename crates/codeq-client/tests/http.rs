//! The client against canned HTTP answers: status handling, headers and
//! which token each kind of call sends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use codeq_client::{ClaimRequest, Client, CreateTask, Error, NackStatus, TaskStatus};
use serde_json::{Value, json};

fn task(status: &str, worker_id: Option<&str>) -> Value {
    let mut task = json!({
        "id": "t-1", "command": "RENDER", "payload": "{}", "priority": 0, "status": status,
        "attempts": 1, "maxAttempts": 5,
        "createdAt": "2030-01-01T00:00:00Z", "updatedAt": "2030-01-01T00:00:00Z"
    });
    if let Some(worker_id) = worker_id {
        task["workerId"] = json!(worker_id);
    }
    task
}

/// The bearer token the request carried, or "-".
fn token(headers: &HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("-")
        .to_owned()
}

async fn create(headers: HeaderMap, Json(body): Json<Value>) -> Response {
    // The caller's token comes back as workerId, for the test to check.
    let mut response =
        (StatusCode::ACCEPTED, Json(task("PENDING", Some(&token(&headers))))).into_response();
    if body["idempotencyKey"] == "seen" {
        response.headers_mut().insert("Idempotent-Replayed", "true".parse().unwrap());
    }
    response
}

async fn claim(headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if body["commands"][0] == "EMPTY" {
        return StatusCode::NO_CONTENT.into_response();
    }
    Json(task("IN_PROGRESS", Some(&token(&headers)))).into_response()
}

async fn read_task(headers: HeaderMap, uri: Uri) -> Response {
    if uri.path().ends_with("/missing") {
        let body = json!({"error": "task not found", "code": "not_found"});
        return (StatusCode::NOT_FOUND, Json(body)).into_response();
    }
    Json(task("PENDING", Some(&token(&headers)))).into_response()
}

async fn nack(Json(body): Json<Value>) -> Response {
    if body != json!({"attempt": 1, "reason": "busy"}) {
        let body = json!({"error": format!("unexpected body {body}"), "code": "bad_request"});
        return (StatusCode::BAD_REQUEST, Json(body)).into_response();
    }
    Json(json!({"status": "requeued", "delaySeconds": 7})).into_response()
}

async fn queue_stats(headers: HeaderMap, uri: Uri) -> Json<Value> {
    let command = uri.path().rsplit('/').next().unwrap().to_owned();
    let dlq = if token(&headers) == "p" { 4 } else { 0 };
    Json(json!({"command": command, "ready": 1, "delayed": 2, "inProgress": 3, "dlq": dlq}))
}

async fn spawn() -> String {
    let app = Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(|| async { StatusCode::SERVICE_UNAVAILABLE }))
        .route("/v1/codeq/tasks", post(create))
        .route("/v1/codeq/tasks/claim", post(claim))
        .route("/v1/codeq/tasks/{id}", get(read_task))
        .route("/v1/codeq/tasks/{id}/nack", post(nack))
        .route("/v1/codeq/admin/queues/{command}", get(queue_stats));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

fn both_tokens(url: &str) -> Client {
    Client::new(url).unwrap().with_producer_token("p").with_worker_token("w")
}

#[tokio::test]
async fn create_sends_the_producer_token_and_reports_an_idempotent_replay() {
    let client = both_tokens(&spawn().await);
    let fresh = CreateTask::new("RENDER", json!({}));
    let repeat = CreateTask { idempotency_key: Some("seen".into()), ..fresh.clone() };

    let first = client.create_task(&fresh).await.unwrap();
    let second = client.create_task(&repeat).await.unwrap();

    assert!(!first.replayed);
    assert!(second.replayed);
    assert_eq!(first.task.status, TaskStatus::Pending);
    assert_eq!(first.task.worker_id.as_deref(), Some("p"));
}

#[tokio::test]
async fn claim_sends_the_worker_token_and_maps_no_content_to_none() {
    let client = both_tokens(&spawn().await);

    let claimed = client.claim(&ClaimRequest::new(["RENDER"])).await.unwrap().unwrap();
    let empty = client.claim(&ClaimRequest::new(["EMPTY"])).await.unwrap();

    assert_eq!(claimed.worker_id.as_deref(), Some("w"));
    assert_eq!(empty, None);
}

#[tokio::test]
async fn reads_use_the_producer_token_else_the_worker_token() {
    let url = spawn().await;
    let worker_only = Client::new(&url).unwrap().with_worker_token("w");

    let by_producer = both_tokens(&url).get_task("t-1").await.unwrap();
    let by_worker = worker_only.get_task("t-1").await.unwrap();

    assert_eq!(by_producer.worker_id.as_deref(), Some("p"));
    assert_eq!(by_worker.worker_id.as_deref(), Some("w"));
}

#[tokio::test]
async fn error_answers_become_api_errors_with_code_and_message() {
    let client = both_tokens(&spawn().await);

    let err = client.get_task("missing").await.unwrap_err();

    match err {
        Error::Api { status, code, message } => {
            assert_eq!(
                (status, code.as_str(), message.as_str()),
                (404, "not_found", "task not found")
            );
        }
        other => panic!("expected Api, got {other:?}"),
    }
}

#[tokio::test]
async fn nack_sends_attempt_and_reason_and_decodes_the_outcome() {
    let client = both_tokens(&spawn().await);

    let outcome = client.nack("t-1", 1, None, Some("busy")).await.unwrap();

    assert_eq!((outcome.status, outcome.delay_seconds), (NackStatus::Requeued, 7));
}

#[tokio::test]
async fn admin_calls_send_the_producer_token() {
    let client = both_tokens(&spawn().await);

    let stats = client.queue_stats("RENDER").await.unwrap();

    assert_eq!((stats.command.as_str(), stats.in_progress, stats.dlq), ("RENDER", 3, 4));
}

#[tokio::test]
async fn health_is_ok_and_unready_is_a_503() {
    let client = Client::new(spawn().await).unwrap();

    client.healthz().await.unwrap();
    let unready = client.readyz().await.unwrap_err();

    assert_eq!(unready.status(), Some(503));
}

#[tokio::test]
async fn an_unreachable_server_is_a_transport_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);

    let err = Client::new(url).unwrap().healthz().await.unwrap_err();

    assert!(matches!(err, Error::Transport(_)), "{err:?}");
}
