//! Crash test: producers and workers run against the real `codeq serve`,
//! the server gets SIGKILL, restarts on the same data directory, and
//! every acknowledged task and result is there; the rest complete. A
//! result callback in flight at the kill is delivered after the restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

/// A `codeq serve` child process in local mode on a free port.
struct Server {
    child: Child,
    base: String,
    producer: String,
    worker: String,
}

impl Server {
    fn start(data_dir: &Path) -> Self {
        Self::start_with(data_dir, &[])
    }

    fn start_with(data_dir: &Path, env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_codeq"))
            .args(["serve", "--port", "0", "--data-dir"])
            .arg(data_dir)
            .envs(env.iter().copied())
            .env("CODEQ_BACKOFF_POLICY", "fixed")
            .env("CODEQ_BACKOFF_BASE_SECONDS", "0")
            .env("CODEQ_LOG_LEVEL", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut base = None;
        for line in stdout.lines() {
            let line = line.unwrap();
            if let Some(rest) = line.strip_prefix("codeQ listening on ") {
                base = rest.split_whitespace().next().map(str::to_string);
                break;
            }
        }
        let base = base.expect("server printed no address");
        let credentials: Value =
            serde_json::from_slice(&std::fs::read(data_dir.join("credentials.json")).unwrap())
                .unwrap();
        Self {
            child,
            base,
            producer: credentials["producerToken"].as_str().unwrap().into(),
            worker: credentials["workerToken"].as_str().unwrap().into(),
        }
    }

    /// POSTs `body` to `/v1/codeq{path}` with `token`: status and JSON body.
    async fn post(
        &self,
        http: &reqwest::Client,
        path: &str,
        token: &str,
        body: Value,
    ) -> (u16, Value) {
        let response = http
            .post(format!("{}/v1/codeq{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or_default())
    }

    /// GETs `/v1/codeq{path}` with the producer token: status and JSON body.
    async fn get(&self, http: &reqwest::Client, path: &str) -> (u16, Value) {
        let response = http
            .get(format!("{}/v1/codeq{path}", self.base))
            .bearer_auth(&self.producer)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or_default())
    }

    fn kill(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Default)]
struct Acked {
    created: HashSet<String>,
    completed: HashSet<String>,
}

async fn produce(
    http: reqwest::Client,
    base: String,
    token: String,
    acked: Arc<Mutex<Acked>>,
    stop: Arc<tokio::sync::Notify>,
) {
    for n in 0.. {
        let send = http
            .post(format!("{base}/v1/codeq/tasks"))
            .bearer_auth(&token)
            .json(&json!({ "command": "crash", "payload": { "n": n } }))
            .send();
        let response = tokio::select! { r = send => r, () = stop.notified() => return };
        let Ok(response) = response else { return };
        if response.status() != 202 {
            return;
        }
        let Ok(task) = response.json::<Value>().await else { return };
        acked.lock().unwrap().created.insert(task["id"].as_str().unwrap().to_string());
    }
}

/// Claims and completes tasks until the server goes away or `deadline`.
async fn work(
    http: reqwest::Client,
    base: String,
    token: String,
    acked: Arc<Mutex<Acked>>,
    deadline: Option<Instant>,
) {
    loop {
        if deadline.is_some_and(|d| Instant::now() > d) {
            return;
        }
        let claim = http
            .post(format!("{base}/v1/codeq/tasks/claim"))
            .bearer_auth(&token)
            .json(&json!({ "commands": ["crash"], "leaseSeconds": 1, "waitSeconds": 1 }))
            .send()
            .await;
        let Ok(claim) = claim else { return };
        if claim.status() == 204 {
            continue;
        }
        let Ok(task) = claim.json::<Value>().await else { return };
        let id = task["id"].as_str().unwrap().to_string();
        let result = http
            .post(format!("{base}/v1/codeq/tasks/{id}/result"))
            .bearer_auth(&token)
            .json(&json!({ "status": "COMPLETED", "result": { "ok": true }, "attempt": task["attempts"] }))
            .send()
            .await;
        match result {
            Ok(response) if response.status() == 200 => {
                acked.lock().unwrap().completed.insert(id);
            }
            Ok(_) => {} // lease lost to expiry: another worker will finish it
            Err(_) => return,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_server_loses_no_acknowledged_task_or_result() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let acked = Arc::new(Mutex::new(Acked::default()));

    let server = Server::start(dir.path());
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut load = Vec::new();
    for _ in 0..4 {
        load.push(tokio::spawn(produce(
            http.clone(),
            server.base.clone(),
            server.producer.clone(),
            acked.clone(),
            stop.clone(),
        )));
        load.push(tokio::spawn(work(
            http.clone(),
            server.base.clone(),
            server.worker.clone(),
            acked.clone(),
            None,
        )));
    }
    // Kill mid-flight, once enough has been acknowledged on both sides.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (created, completed) = {
            let acked = acked.lock().unwrap();
            (acked.created.len(), acked.completed.len())
        };
        if created >= 500 && completed >= 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "load made too little progress: {created} created, {completed} completed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill();
    for task in load {
        let _ = task.await;
    }

    let server = Server::start(dir.path());
    let (created, completed) = {
        let acked = acked.lock().unwrap();
        (acked.created.clone(), acked.completed.clone())
    };
    for id in &created {
        let (status, _) = server.get(&http, &format!("/tasks/{id}")).await;
        assert_eq!(status, 200, "acknowledged task {id} lost");
    }
    for id in &completed {
        let (status, body) = server.get(&http, &format!("/tasks/{id}/result")).await;
        assert_eq!(status, 200, "acknowledged result of {id} lost");
        assert_eq!(body["result"]["status"], "COMPLETED");
    }

    // The rest complete: leases of tasks held at the crash expire within a second.
    let finish_by = Instant::now() + Duration::from_secs(60);
    let workers: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(work(
                http.clone(),
                server.base.clone(),
                server.worker.clone(),
                acked.clone(),
                Some(finish_by),
            ))
        })
        .collect();
    loop {
        let (_, stats) = server.get(&http, "/admin/queues/crash").await;
        if stats["ready"] == 0 && stats["delayed"] == 0 && stats["inProgress"] == 0 {
            break;
        }
        assert!(Instant::now() < finish_by, "tasks left after restart: {stats}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for worker in workers {
        worker.abort();
    }
    for id in &created {
        let (_, task) = server.get(&http, &format!("/tasks/{id}")).await;
        assert_eq!(task["status"], "COMPLETED", "task {id} did not complete");
    }
}

/// A webhook receiver on 127.0.0.1: until `answer` is set it holds every
/// request open; after, it answers 200 and records the body.
struct Receiver {
    url: String,
    answer: Arc<tokio::sync::watch::Sender<bool>>,
    asked: Arc<Mutex<usize>>,
    delivered: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    async fn start() -> Self {
        let (answer, answering) = tokio::sync::watch::channel(false);
        let (asked, delivered): (Arc<Mutex<usize>>, Arc<Mutex<Vec<Value>>>) = Default::default();
        let (count, log) = (asked.clone(), delivered.clone());
        let handler = move |body: axum::body::Bytes| {
            let (count, log, mut answering) = (count.clone(), log.clone(), answering.clone());
            async move {
                *count.lock().unwrap() += 1;
                if !*answering.borrow_and_update() {
                    // Held open; whatever follows, this request is not a delivery.
                    answering.wait_for(|answer| *answer).await.unwrap();
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                }
                log.lock().unwrap().push(serde_json::from_slice(&body).unwrap());
                axum::http::StatusCode::OK
            }
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(handler);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, answer: Arc::new(answer), asked, delivered }
    }

    async fn wait_until(&self, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done(self) {
            assert!(Instant::now() < deadline, "the receiver never {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_in_flight_at_a_kill_is_delivered_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let receiver = Receiver::start().await;
    let quick_retries = [("CODEQ_RESULT_WEBHOOK_BASE_BACKOFF_SECONDS", "0")];
    let server = Server::start_with(dir.path(), &quick_retries);

    let task = json!({ "command": "hooked", "payload": {}, "webhook": receiver.url });
    let (status, task) = server.post(&http, "/tasks", &server.producer, task).await;
    assert_eq!(status, 202);
    let id = task["id"].as_str().unwrap().to_string();
    let claim = json!({ "commands": ["hooked"], "leaseSeconds": 60 });
    let (status, _) = server.post(&http, "/tasks/claim", &server.worker, claim).await;
    assert_eq!(status, 200);
    let result = json!({ "status": "COMPLETED", "result": { "n": 7 } });
    let (status, _) =
        server.post(&http, &format!("/tasks/{id}/result"), &server.worker, result).await;
    assert_eq!(status, 200);

    receiver.wait_until("was called", |r| *r.asked.lock().unwrap() >= 1).await;
    server.kill();
    assert!(receiver.delivered.lock().unwrap().is_empty(), "nothing was answered before the kill");
    receiver.answer.send_replace(true);

    let _server = Server::start_with(dir.path(), &quick_retries);
    receiver.wait_until("got the callback", |r| !r.delivered.lock().unwrap().is_empty()).await;
    let delivered = receiver.delivered.lock().unwrap().clone();
    assert_eq!(delivered[0]["taskId"], id.as_str());
    assert_eq!(delivered[0]["result"], json!({ "n": 7 }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_settings_survive_a_kill_and_hold_right_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let server = Server::start(dir.path());
    let settings = json!({ "paused": true, "maxInFlight": 2 });
    let put = http
        .put(format!("{}/v1/codeq/admin/queues/limited/settings", server.base))
        .bearer_auth(&server.producer)
        .json(&settings)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    for n in 0..3 {
        let task = json!({ "command": "limited", "payload": { "n": n } });
        assert_eq!(server.post(&http, "/tasks", &server.producer, task).await.0, 202);
    }
    server.kill();

    let server = Server::start(dir.path());
    let (status, stored) = server.get(&http, "/admin/queues/limited/settings").await;
    assert_eq!((status, stored), (200, json!({ "paused": true, "maxInFlight": 2 })));
    let claim = json!({ "commands": ["limited"] });
    let (status, _) = server.post(&http, "/tasks/claim", &server.worker, claim.clone()).await;
    assert_eq!(status, 204, "still paused after the restart");
    let (status, _) =
        server.post(&http, "/admin/queues/limited/resume", &server.producer, json!({})).await;
    assert_eq!(status, 200);
    for expected in [200, 200, 204] {
        let (status, _) = server.post(&http, "/tasks/claim", &server.worker, claim.clone()).await;
        assert_eq!(status, expected, "maxInFlight 2 holds after the restart");
    }
}
