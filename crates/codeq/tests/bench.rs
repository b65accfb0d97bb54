//! Runs the bench against a minimal in-memory stand-in for the codeQ API
//! (create, claim with long poll, result; single and batch), checking that
//! every mode runs to completion and counts what it did. The stand-in is
//! deliberately tiny: the server's behaviour is tested in codeq-server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser as _;
use codeq::bench::{self, Ending, Settings};
use codeq::cli::{Cli, Commands};
use serde_json::{Value, json};
use tokio::sync::Notify;

const PRODUCER: &str = "Bearer producer";
const WORKER: &str = "Bearer worker";

#[derive(Default)]
struct Mock {
    queue: Mutex<Queue>,
    wake: Notify,
}

#[derive(Default)]
struct Queue {
    next_id: u64,
    ready: VecDeque<Value>,
    completed: u64,
}

fn unauthorized() -> Response {
    let body = json!({"error": "invalid token", "code": "unauthorized"});
    (StatusCode::UNAUTHORIZED, Json(body)).into_response()
}

fn authorized(headers: &HeaderMap, expected: &str) -> bool {
    headers.get("authorization").is_some_and(|value| value == expected)
}

impl Mock {
    fn create(&self, body: &Value) -> Value {
        let mut queue = self.queue.lock().unwrap();
        queue.next_id += 1;
        let task = json!({
            "id": format!("task-{}", queue.next_id), "command": body["command"],
            "payload": body["payload"].to_string(), "priority": 0, "status": "PENDING",
            "attempts": 0, "maxAttempts": 5,
            "createdAt": "2030-01-01T00:00:00Z", "updatedAt": "2030-01-01T00:00:00Z"
        });
        queue.ready.push_back(task.clone());
        task
    }

    /// Up to `count` tasks, waiting up to `wait` for the first one.
    async fn claim(&self, count: usize, wait: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register before looking, so a create in between is not missed.
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            {
                let mut queue = self.queue.lock().unwrap();
                let n = count.min(queue.ready.len());
                if n > 0 {
                    return queue
                        .ready
                        .drain(..n)
                        .map(|mut task| {
                            task["status"] = json!("IN_PROGRESS");
                            task["attempts"] = json!(1);
                            task
                        })
                        .collect();
                }
            }
            if tokio::time::timeout_at(deadline, woken).await.is_err() {
                return Vec::new();
            }
        }
    }

    fn complete(&self, task_id: &str, body: &Value) -> Value {
        self.queue.lock().unwrap().completed += 1;
        json!({"taskId": task_id, "status": body["status"], "result": body["result"],
               "completedAt": "2030-01-01T00:00:01Z"})
    }
}

fn wait_of(body: &Value) -> Duration {
    Duration::from_secs(body["waitSeconds"].as_u64().unwrap_or(0))
}

async fn create(
    State(mock): State<Arc<Mock>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !authorized(&headers, PRODUCER) {
        return unauthorized();
    }
    let task = mock.create(&body);
    mock.wake.notify_waiters();
    (StatusCode::ACCEPTED, Json(task)).into_response()
}

async fn create_batch(
    State(mock): State<Arc<Mock>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !authorized(&headers, PRODUCER) {
        return unauthorized();
    }
    let results: Vec<Value> =
        body["tasks"].as_array().unwrap().iter().map(|t| json!({"task": mock.create(t)})).collect();
    mock.wake.notify_waiters();
    Json(json!({ "results": results })).into_response()
}

async fn claim(
    State(mock): State<Arc<Mock>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !authorized(&headers, WORKER) {
        return unauthorized();
    }
    match mock.claim(1, wait_of(&body)).await.pop() {
        Some(task) => Json(task).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

async fn claim_batch(
    State(mock): State<Arc<Mock>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !authorized(&headers, WORKER) {
        return unauthorized();
    }
    let count = body["count"].as_u64().unwrap() as usize;
    let tasks = mock.claim(count, wait_of(&body)).await;
    if tasks.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    Json(json!({ "tasks": tasks })).into_response()
}

async fn result(
    State(mock): State<Arc<Mock>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !authorized(&headers, WORKER) {
        return unauthorized();
    }
    Json(mock.complete(&id, &body)).into_response()
}

async fn result_batch(
    State(mock): State<Arc<Mock>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !authorized(&headers, WORKER) {
        return unauthorized();
    }
    let results: Vec<Value> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            let id = item["taskId"].as_str().unwrap();
            json!({"taskId": id, "result": mock.complete(id, item)})
        })
        .collect();
    Json(json!({ "results": results })).into_response()
}

/// Starts the stand-in on a free port; returns its base URL and state.
async fn spawn_mock() -> (String, Arc<Mock>) {
    let mock = Arc::new(Mock::default());
    let app = Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/v1/codeq/tasks", post(create))
        .route("/v1/codeq/tasks/batch", post(create_batch))
        .route("/v1/codeq/tasks/claim", post(claim))
        .route("/v1/codeq/tasks/claim/batch", post(claim_batch))
        .route("/v1/codeq/tasks/{id}/result", post(result))
        .route("/v1/codeq/tasks/batch/results", post(result_batch))
        .with_state(Arc::clone(&mock));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, mock)
}

fn settings(url: &str, extra: &[&str]) -> Settings {
    let mut argv = vec!["codeq", "bench", "--base-url", url];
    argv.extend(["--producer-token", "producer", "--worker-token", "worker"]);
    argv.extend(extra);
    let Commands::Bench(args) = Cli::try_parse_from(argv).unwrap().command else {
        panic!("expected bench")
    };
    Settings::from_args(&args).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_mode_completes_every_task_and_times_each_cycle() {
    let (url, mock) = spawn_mock().await;

    let report =
        bench::run(settings(&url, &["--count", "300", "--producers", "2", "--workers", "4"]))
            .await
            .unwrap();

    assert_eq!(report.ending, Ending::Complete);
    assert_eq!((report.created, report.completed), (300, 300));
    assert_eq!(report.latency.create.count, 300);
    assert_eq!(report.latency.claim.count, 300);
    assert_eq!(report.latency.result.count, 300);
    assert_eq!(report.latency.cycle.count, 300);
    assert_eq!((report.errors.create, report.errors.claim, report.errors.result), (0, 0, 0));
    assert!(report.cycles_per_second > 0.0);
    assert_eq!(mock.queue.lock().unwrap().completed, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_mode_times_requests_but_counts_tasks() {
    let (url, mock) = spawn_mock().await;
    let extra = ["--mode", "batch", "--batch-size", "40", "--count", "250", "--workers", "3"];

    let report = bench::run(settings(&url, &extra)).await.unwrap();

    assert_eq!(report.ending, Ending::Complete);
    assert_eq!(report.completed, 250);
    // 250 tasks in batches of at most 40: 6 full batches and one of 10.
    assert_eq!(report.latency.create.count, 7);
    assert_eq!(report.latency.cycle.count, 250);
    assert!(report.latency.result.count <= report.latency.claim.count);
    assert_eq!(mock.queue.lock().unwrap().completed, 250);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["mode"], "batch");
    assert_eq!(json["latency"]["cycle"]["count"], 250);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duration_mode_stops_producing_and_drains() {
    let (url, mock) = spawn_mock().await;

    let report = bench::run(settings(&url, &["--duration", "1", "--workers", "2"])).await.unwrap();

    assert_eq!(report.ending, Ending::Complete);
    assert!(report.created > 0);
    assert_eq!(report.completed, report.created);
    assert!(mock.queue.lock().unwrap().ready.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wakeup_mode_measures_each_round() {
    let (url, _mock) = spawn_mock().await;

    let report = bench::wakeup::run(settings(&url, &[]), 3).await.unwrap();

    assert_eq!(report.ending, Ending::Complete);
    assert_eq!(report.wakeup.count, 3);
    assert_eq!((report.missed, report.leftovers), (0, 0));
    assert!(report.to_string().contains("wakeup"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_stops_the_bench_with_the_auth_exit_code() {
    let (url, _mock) = spawn_mock().await;
    let argv = [
        "codeq",
        "bench",
        "--base-url",
        &url,
        "--producer-token",
        "bad",
        "--worker-token",
        "worker",
    ];
    let Commands::Bench(args) = Cli::try_parse_from(argv).unwrap().command else { panic!() };

    let err = bench::run(Settings::from_args(&args).unwrap()).await.unwrap_err();

    assert_eq!(codeq::exit::code_for(&err), codeq::exit::AUTHENTICATION);
}
