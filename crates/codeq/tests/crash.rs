//! Crash test: producers and workers run against the real `codeq serve`,
//! the server gets SIGKILL, restarts on the same data directory, and
//! every acknowledged task and result is there; the rest complete.

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
        let mut child = Command::new(env!("CARGO_BIN_EXE_codeq"))
            .args(["serve", "--port", "0", "--data-dir"])
            .arg(data_dir)
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
