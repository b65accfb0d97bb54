//! Several `codeq serve` replicas (the real binary) on one real
//! `redis-server`, over real HTTP: every task delivered exactly once to 32
//! claimers spread over two replicas; a long poll on one replica woken by a
//! create on the other; two reapers expiring each lease once; result
//! callbacks sent once each with both replicas dispatching; Redis killed
//! under load and started again (AOF always): 503s in between, recovery
//! without a restart, nothing acknowledged lost.
//!
//! Skipped (with a printed notice) when `redis-server` is not on `PATH`,
//! unless `CODEQ_TEST_REDIS=required`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../codeq-server/tests/support/redis_server.rs"]
mod redis_server;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis_server::RedisServer;
use serde_json::{Value, json};
use tokio::time::Instant;

const PRODUCER: &str = "producer-token-for-the-redis-tests";
const WORKER: &str = "worker-token-for-the-redis-tests";

/// One `codeq serve` replica with `storage: redis`.
struct Replica {
    child: Child,
    base: String,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Replica {
    fn start(redis: &RedisServer, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("stderr.log");
        let tokens = json!([
            { "token": PRODUCER, "kind": "producer", "sub": "producer", "admin": true },
            { "token": WORKER, "kind": "worker", "sub": "worker" },
        ]);
        let mut child = Command::new(env!("CARGO_BIN_EXE_codeq"))
            .args(["serve", "--port", "0", "--storage", "redis", "--data-dir"])
            .arg(dir.path())
            .env("CODEQ_REDIS_ADDR", redis.addr())
            .env("CODEQ_STATIC_TOKENS", tokens.to_string())
            .env("CODEQ_WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true")
            .env("CODEQ_LOG_LEVEL", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let base = stdout
            .lines()
            .map(Result::unwrap)
            .find_map(|line| {
                let rest = line.strip_prefix("codeQ listening on ")?.to_string();
                rest.split_whitespace().next().map(str::to_string)
            })
            .unwrap_or_else(|| {
                panic!("the replica did not start: {}", std::fs::read_to_string(&log).unwrap())
            });
        Self { child, base, log, _dir: dir }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1/codeq{path}", self.base)
    }

    /// Sums every sample of the metric `name` on this replica.
    async fn metric(&self, http: &reqwest::Client, name: &str) -> f64 {
        let text =
            http.get(format!("{}/metrics", self.base)).send().await.unwrap().text().await.unwrap();
        text.lines()
            .filter(|line| line.starts_with(name) && line[name.len()..].starts_with(['{', ' ']))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    async fn ready_status(&self, http: &reqwest::Client) -> u16 {
        http.get(format!("{}/readyz", self.base)).send().await.unwrap().status().as_u16()
    }

    /// Asserts the process is still running and never panicked.
    fn assert_healthy(&mut self) {
        assert!(self.child.try_wait().unwrap().is_none(), "a replica exited");
        let log = std::fs::read_to_string(&self.log).unwrap();
        assert!(!log.contains("panicked"), "a replica panicked:\n{log}");
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap()
}

/// POSTs `body`: status and JSON body (null when none).
async fn post(http: &reqwest::Client, url: &str, token: &str, body: Value) -> (u16, Value) {
    let response = http.post(url).bearer_auth(token).json(&body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

async fn get(http: &reqwest::Client, url: &str) -> (u16, Value) {
    let response = http.get(url).bearer_auth(PRODUCER).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

/// Creates `count` tasks of `command` in batches of 100 spread over the
/// replicas; their ids.
async fn create_many(
    http: &reqwest::Client,
    replicas: &[&Replica],
    command: &str,
    count: usize,
    extra: Value,
) -> Vec<String> {
    let mut ids = Vec::with_capacity(count);
    for (batch, start) in (0..count).step_by(100).enumerate() {
        let tasks: Vec<Value> = (start..count.min(start + 100))
            .map(|n| {
                let mut task = json!({ "command": command, "payload": { "n": n } });
                for (key, value) in extra.as_object().unwrap() {
                    task[key] = value.clone();
                }
                task
            })
            .collect();
        let replica = replicas[batch % replicas.len()];
        let (status, body) =
            post(http, &replica.url("/tasks/batch"), PRODUCER, json!({ "tasks": tasks })).await;
        assert_eq!(status, 200, "{body}");
        for item in body["results"].as_array().unwrap() {
            ids.push(item["task"]["id"].as_str().expect("every item created").to_string());
        }
    }
    ids
}

/// Polls `check` until it holds (the condition the test waits for), for at
/// most `limit`.
async fn wait_for<F: std::future::Future<Output = bool>>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_claimers_on_two_replicas_get_each_of_5000_tasks_once() {
    let Some(redis) = RedisServer::start() else { return };
    let (a, b) = (Replica::start(&redis, &[]), Replica::start(&redis, &[]));
    let http = http();
    let ids = create_many(&http, &[&a, &b], "many", 5_000, json!({})).await;
    let delivered: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let mut claimers = tokio::task::JoinSet::new();
    for n in 0..32 {
        let replica = if n % 2 == 0 { &a } else { &b };
        let (http, delivered) = (http.clone(), delivered.clone());
        let (claim, base) = (replica.url("/tasks/claim"), replica.url(""));
        claimers.spawn(async move {
            let body = json!({ "commands": ["many"], "leaseSeconds": 300, "waitSeconds": 1 });
            loop {
                let (status, task) = post(&http, &claim, WORKER, body.clone()).await;
                if status == 204 {
                    return;
                }
                assert_eq!(status, 200, "{task}");
                let id = task["id"].as_str().unwrap().to_string();
                let attempt = task["attempts"].as_u64().unwrap();
                let result = json!({ "status": "COMPLETED", "result": {}, "attempt": attempt });
                let (status, body) =
                    post(&http, &format!("{base}/tasks/{id}/result"), WORKER, result).await;
                assert_eq!(status, 200, "{body}");
                delivered.lock().unwrap().push((id, attempt));
            }
        });
    }
    while let Some(joined) = claimers.join_next().await {
        joined.unwrap();
    }

    let delivered = delivered.lock().unwrap().clone();
    let distinct: HashSet<&String> = delivered.iter().map(|(id, _)| id).collect();
    assert_eq!(delivered.len(), 5_000, "every task delivered exactly once");
    assert_eq!(distinct.len(), 5_000);
    assert!(delivered.iter().all(|(_, attempt)| *attempt == 1), "no task delivered twice");
    assert_eq!(distinct, ids.iter().collect());
    let (_, stats) = get(&http, &a.url("/admin/queues/many")).await;
    assert_eq!((stats["ready"].as_u64(), stats["inProgress"].as_u64()), (Some(0), Some(0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_on_one_replica_wakes_on_a_create_on_the_other() {
    let Some(redis) = RedisServer::start() else { return };
    let (a, b) = (Replica::start(&redis, &[]), Replica::start(&redis, &[]));
    let http = http();
    let mut figures = Vec::new();
    for round in 0..10 {
        let command = format!("wake-{round}");
        let claim = {
            let (http, url) = (http.clone(), b.url("/tasks/claim"));
            let body = json!({ "commands": [command], "waitSeconds": 10 });
            tokio::spawn(async move {
                let (status, task) = post(&http, &url, WORKER, body).await;
                (status, task, Instant::now())
            })
        };
        wait_for(Duration::from_secs(10), "the long poll to park on B", || async {
            b.metric(&http, "codeq_long_polls_waiting").await >= 1.0
        })
        .await;
        let sent = Instant::now();
        let (status, _) =
            post(&http, &a.url("/tasks"), PRODUCER, json!({ "command": command, "payload": {} }))
                .await;
        assert_eq!(status, 202);
        let (status, task, woken) = claim.await.unwrap();
        assert_eq!(status, 200, "{task}");
        figures.push(woken.duration_since(sent));
    }
    figures.sort();
    let millis: Vec<f64> = figures.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    println!(
        "cross-replica wake-up, create sent on A → claim answered on B: median {:.1} ms, \
         max {:.1} ms (10 rounds: {millis:.1?})",
        millis[millis.len() / 2],
        millis[millis.len() - 1]
    );
    assert!(millis[millis.len() / 2] < 50.0, "median wake-up {millis:?} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_reapers_expire_each_lease_exactly_once() {
    let Some(redis) = RedisServer::start() else { return };
    // Expired tasks wait an hour: none can be claimed (and expire) again.
    let env = [
        ("CODEQ_BACKOFF_POLICY", "fixed"),
        ("CODEQ_BACKOFF_BASE_SECONDS", "3600"),
        ("CODEQ_BACKOFF_MAX_SECONDS", "3600"),
    ];
    let (a, b) = (Replica::start(&redis, &env), Replica::start(&redis, &env));
    let http = http();
    let ids = create_many(&http, &[&a, &b], "lapse", 400, json!({})).await;
    let mut claimed = 0;
    for replica in [&a, &b].iter().cycle().take(4) {
        let body = json!({ "commands": ["lapse"], "leaseSeconds": 1, "count": 100 });
        let (status, page) = post(&http, &replica.url("/tasks/claim/batch"), WORKER, body).await;
        assert_eq!(status, 200);
        claimed += page["tasks"].as_array().unwrap().len();
    }
    assert_eq!(claimed, 400);

    wait_for(Duration::from_secs(30), "every lease to expire", || async {
        let (_, stats) = get(&http, &a.url("/admin/queues/lapse")).await;
        stats["delayed"].as_u64() == Some(400)
    })
    .await;
    let expired = a.metric(&http, "codeq_lease_expired_total").await
        + b.metric(&http, "codeq_lease_expired_total").await;
    println!(
        "lease expiries counted: A {}, B {}",
        a.metric(&http, "codeq_lease_expired_total").await,
        b.metric(&http, "codeq_lease_expired_total").await
    );
    assert_eq!(expired, 400.0, "each lease expired exactly once over both reapers");
    for id in ids.iter().step_by(7) {
        let (_, task) = get(&http, &a.url(&format!("/tasks/{id}"))).await;
        assert_eq!(task["status"], "PENDING");
        assert_eq!(task["attempts"], 1);
        assert_eq!(task["lastReason"], "LEASE_EXPIRED");
    }
}

/// A webhook receiver counting deliveries per task.
async fn receiver() -> (String, Arc<Mutex<HashMap<String, usize>>>) {
    let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let counted = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::Json<Value>| {
            let counted = counted.clone();
            async move {
                let id = body["taskId"].as_str().unwrap_or_default().to_string();
                *counted.lock().unwrap().entry(id).or_default() += 1;
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_callbacks_are_sent_once_each_with_both_replicas_dispatching() {
    let Some(redis) = RedisServer::start() else { return };
    let (a, b) = (Replica::start(&redis, &[]), Replica::start(&redis, &[]));
    let http = http();
    let (hook, seen) = receiver().await;
    let ids = create_many(&http, &[&a, &b], "hooked", 400, json!({ "webhook": hook })).await;
    for (n, replica) in [&a, &b].iter().cycle().take(8).enumerate() {
        let body = json!({ "commands": ["hooked"], "count": 50 });
        let (status, page) = post(&http, &replica.url("/tasks/claim/batch"), WORKER, body).await;
        assert_eq!(status, 200, "round {n}");
        let results: Vec<Value> = page["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|task| json!({ "taskId": task["id"], "status": "COMPLETED", "result": {} }))
            .collect();
        let (status, _) = post(
            &http,
            &replica.url("/tasks/batch/results"),
            WORKER,
            json!({ "results": results }),
        )
        .await;
        assert_eq!(status, 200);
    }

    let delivered = "codeq_webhook_deliveries_total";
    // Well within a callback lease (callbacks taken but left unsent would
    // wait for it).
    wait_for(Duration::from_secs(10), "every callback to be delivered", || async {
        a.metric(&http, delivered).await + b.metric(&http, delivered).await >= 400.0
    })
    .await;
    wait_for(Duration::from_secs(10), "the outboxes to empty", || async {
        a.metric(&http, "codeq_webhook_outbox_pending").await == 0.0
            && b.metric(&http, "codeq_webhook_outbox_pending").await == 0.0
    })
    .await;
    let (by_a, by_b) = (a.metric(&http, delivered).await, b.metric(&http, delivered).await);
    println!("result callbacks sent: by A {by_a}, by B {by_b}");
    assert_eq!(by_a + by_b, 400.0, "no callback sent twice");
    assert!(by_a > 0.0 && by_b > 0.0, "both replicas dispatch");
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 400);
        assert!(ids.iter().all(|id| seen.get(id) == Some(&1)), "each task called back once");
    }
    // Either replica tells how each ended, whichever sent it.
    for id in &ids[..10] {
        let (_, detail) = get(&http, &b.url(&format!("/admin/tasks/{id}"))).await;
        let settled = json!({ "state": "settled", "outcome": "delivered", "attempts": 1 });
        assert_eq!(detail["webhook"], settled, "task {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_owed_before_a_redis_outage_is_sent_once_redis_is_back() {
    let Some(mut redis) = RedisServer::start() else { return };
    let quick_retries = [
        ("CODEQ_RESULT_WEBHOOK_BASE_BACKOFF_SECONDS", "1"),
        ("CODEQ_RESULT_WEBHOOK_MAX_BACKOFF_SECONDS", "1"),
        // A callback whose end was not written (Redis went away between
        // the attempt and the write) is sent again when its lease ends:
        // two timeouts and 5 s, 7 s here.
        ("CODEQ_WEBHOOK_TIMEOUT_SECONDS", "1"),
    ];
    let a = Replica::start(&redis, &quick_retries);
    let http = http();
    // The receiver fails until told otherwise.
    let failing = Arc::new(AtomicBool::new(true));
    let delivered = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let (failing, delivered) = (failing.clone(), delivered.clone());
            move || async move {
                if failing.load(Ordering::SeqCst) {
                    return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                }
                delivered.fetch_add(1, Ordering::SeqCst);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    create_many(&http, &[&a], "owed", 1, json!({ "webhook": hook })).await;
    let (status, claimed) =
        post(&http, &a.url("/tasks/claim"), WORKER, json!({ "commands": ["owed"] })).await;
    assert_eq!(status, 200);
    let id = claimed["id"].as_str().unwrap().to_string();
    let done = json!({ "status": "COMPLETED", "result": {} });
    assert_eq!(post(&http, &a.url(&format!("/tasks/{id}/result")), WORKER, done).await.0, 200);
    // The first attempt failed and its retry is stored (the write follows
    // the receiver's answer).
    let detail = a.url(&format!("/admin/tasks/{id}"));
    wait_for(Duration::from_secs(10), "the first attempt's retry to be stored", || async {
        get(&http, &detail).await.1["webhook"]["attempts"].as_u64() >= Some(1)
    })
    .await;

    // The retry comes due while Redis is away: its read fails.
    redis.kill();
    wait_for(Duration::from_secs(20), "a failed read of the outbox", || async {
        std::fs::read_to_string(&a.log).unwrap().contains("cannot read the webhook outbox")
    })
    .await;
    failing.store(false, Ordering::SeqCst);
    redis.start_again();
    // Nothing else is owed: only the dispatcher's own retry can send it.
    wait_for(Duration::from_secs(20), "the callback to be delivered", || async {
        delivered.load(Ordering::SeqCst) == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_redis_hangs_is_not_ready_until_it_answers_again() {
    let Some(redis) = RedisServer::start() else { return };
    let a = Replica::start(&redis, &[]);
    let http = http();
    assert_eq!(a.ready_status(&http).await, 200);

    // Hung, not gone: the connection stays open and nothing is answered.
    redis.freeze();
    let frozen_at = Instant::now();
    // A call that waits for Redis (the replica's own polls make some too).
    let waiting = tokio::spawn({
        let (http, url) = (http.clone(), a.url("/tasks"));
        async move { post(&http, &url, PRODUCER, json!({ "command": "hung", "payload": {} })).await }
    });
    wait_for(Duration::from_secs(8), "the replica to say it is not ready", || async {
        a.ready_status(&http).await == 503
    })
    .await;
    println!("not ready {:.1} s after Redis hung", frozen_at.elapsed().as_secs_f64());
    redis.thaw();
    wait_for(Duration::from_secs(10), "the replica to be ready again", || async {
        a.ready_status(&http).await == 200
    })
    .await;
    let (status, _) = waiting.await.unwrap();
    assert!([202, 503].contains(&status), "the waiting create answered {status}");
}

/// What the load saw: acknowledged creations and results, every status.
#[derive(Default)]
struct Load {
    created: Vec<(String, bool)>,
    completed: HashSet<String>,
    statuses: BTreeMap<u16, usize>,
    /// 503 answers without a `Retry-After` header.
    no_retry_after: usize,
    errors: Vec<String>,
}

impl Load {
    /// Counts what a request got: its answer's status, or its error (then
    /// `None`).
    fn answered(
        load: &Mutex<Load>,
        sent: reqwest::Result<reqwest::Response>,
    ) -> Option<reqwest::Response> {
        let mut load = load.lock().unwrap();
        match sent {
            Ok(response) => {
                load.saw(&response);
                Some(response)
            }
            Err(error) => {
                load.errors.push(error.to_string());
                None
            }
        }
    }

    /// Counts an answer's status (and a 503 without `Retry-After`).
    fn saw(&mut self, response: &reqwest::Response) {
        let status = response.status().as_u16();
        *self.statuses.entry(status).or_default() += 1;
        if status == 503 && !response.headers().contains_key("retry-after") {
            self.no_retry_after += 1;
        }
    }
}

async fn produce(
    http: reqwest::Client,
    url: String,
    load: Arc<Mutex<Load>>,
    stop: Arc<AtomicBool>,
    outage: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        let before_outage = !outage.load(Ordering::Relaxed);
        let sent = http
            .post(&url)
            .bearer_auth(PRODUCER)
            .json(&json!({ "command": "outage", "payload": {} }))
            .send()
            .await;
        let Some(response) = Load::answered(&load, sent) else { continue };
        if response.status().as_u16() == 202 {
            let task: Value = response.json().await.unwrap();
            let id = task["id"].as_str().unwrap().to_string();
            load.lock().unwrap().created.push((id, before_outage));
        }
    }
}

async fn consume(
    http: reqwest::Client,
    base: String,
    load: Arc<Mutex<Load>>,
    stop: Arc<AtomicBool>,
) {
    let body = json!({ "commands": ["outage"], "waitSeconds": 1 });
    while !stop.load(Ordering::Relaxed) {
        let claimed =
            http.post(format!("{base}/tasks/claim")).bearer_auth(WORKER).json(&body).send().await;
        let Some(response) = Load::answered(&load, claimed) else { continue };
        if response.status().as_u16() != 200 {
            continue;
        }
        let task: Value = response.json().await.unwrap();
        let id = task["id"].as_str().unwrap().to_string();
        let result = json!({ "status": "COMPLETED", "result": {}, "attempt": task["attempts"] });
        let url = format!("{base}/tasks/{id}/result");
        let sent = http.post(url).bearer_auth(WORKER).json(&result).send().await;
        if Load::answered(&load, sent).is_some_and(|response| response.status() == 200) {
            load.lock().unwrap().completed.insert(id);
        }
    }
}

fn acknowledged(load: &Mutex<Load>) -> usize {
    load.lock().unwrap().created.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_gives_503s_then_everything_recovers() {
    let Some(mut redis) = RedisServer::start() else { return };
    let (mut a, mut b) = (Replica::start(&redis, &[]), Replica::start(&redis, &[]));
    let http = http();
    let (load, stop, outage) = (
        Arc::new(Mutex::new(Load::default())),
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let mut clients = tokio::task::JoinSet::new();
    for replica in [&a, &b] {
        for _ in 0..2 {
            let url = replica.url("/tasks");
            clients.spawn(produce(http.clone(), url, load.clone(), stop.clone(), outage.clone()));
        }
        for _ in 0..4 {
            clients.spawn(consume(http.clone(), replica.url(""), load.clone(), stop.clone()));
        }
    }
    wait_for(Duration::from_secs(60), "load before the outage", || async {
        acknowledged(&load) >= 300
    })
    .await;

    outage.store(true, Ordering::Relaxed);
    redis.kill();
    let killed_at = Instant::now();
    wait_for(Duration::from_secs(20), "both replicas to report not ready", || async {
        a.ready_status(&http).await == 503 && b.ready_status(&http).await == 503
    })
    .await;
    wait_for(Duration::from_secs(20), "clients to get 503s", || async {
        load.lock().unwrap().statuses.get(&503).copied().unwrap_or(0) >= 20
    })
    .await;
    assert_eq!(http.get(format!("{}/healthz", a.base)).send().await.unwrap().status(), 200);
    // The scrape goes on without the depths, and says why.
    let scrape = http.get(format!("{}/metrics", a.base)).send().await.unwrap();
    assert_eq!(scrape.status(), 200);
    let text = scrape.text().await.unwrap();
    assert!(text.lines().any(|line| line == "codeq_storage_up 0"), "{text}");
    assert!(!text.contains("codeq_queue_depth{"), "{text}");

    redis.start_again();
    wait_for(Duration::from_secs(30), "both replicas to be ready again", || async {
        a.ready_status(&http).await == 200 && b.ready_status(&http).await == 200
    })
    .await;
    let recovered_after = killed_at.elapsed();
    wait_for(Duration::from_secs(10), "the depths back in the scrape", || async {
        a.metric(&http, "codeq_storage_up").await == 1.0
    })
    .await;
    let resumed_from = acknowledged(&load);
    wait_for(Duration::from_secs(60), "load after the outage", || async {
        acknowledged(&load) >= resumed_from + 300
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    while let Some(joined) = clients.join_next().await {
        joined.unwrap();
    }

    a.assert_healthy();
    b.assert_healthy();
    for replica in [&a, &b] {
        // An outage is the link's to report, not an ACL problem.
        let log = std::fs::read_to_string(&replica.log).unwrap();
        assert!(!log.contains("cannot subscribe"), "{log}");
        // One outage, told once each, not once per call or per second
        // (counted as messages: another line's error may quote one).
        for said in ["lost the connection to Redis", "Redis refused a call", "reaper pass failed"] {
            let times = log.matches(&format!(r#""message":"{said}"#)).count();
            assert!(times <= 1, "{said:?} logged {times} times in one outage:\n{log}");
        }
    }
    let load = std::mem::take(&mut *load.lock().unwrap());
    println!(
        "outage: statuses {:?}, {} created ({} before the kill), {} completed; ready again {:.1} s after the kill",
        load.statuses,
        load.created.len(),
        load.created.iter().filter(|(_, before)| *before).count(),
        load.completed.len(),
        recovered_after.as_secs_f64()
    );
    assert!(load.errors.is_empty(), "transport errors: {:?}", load.errors);
    assert_eq!(load.no_retry_after, 0, "every 503 carries Retry-After");
    let unexpected: Vec<_> =
        load.statuses.keys().filter(|status| ![200, 202, 204, 503].contains(*status)).collect();
    assert!(unexpected.is_empty(), "statuses other than 2xx and 503: {:?}", load.statuses);
    for (id, _) in &load.created {
        let (status, task) = get(&http, &a.url(&format!("/tasks/{id}"))).await;
        assert_eq!(status, 200, "acknowledged task {id} lost");
        if load.completed.contains(id) {
            assert_eq!(task["status"], "COMPLETED", "acknowledged result of {id} lost");
        }
    }
}

/// `codeq serve --storage redis` with `env` until it exits: its exit code
/// and stderr.
fn serve_until_exit(redis: &RedisServer, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_codeq"))
        .args(["serve", "--port", "0", "--storage", "redis", "--data-dir"])
        .arg(dir.path())
        .env("CODEQ_REDIS_ADDR", redis.addr())
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn a_replica_in_local_mode_warns_that_other_replicas_refuse_its_tokens() {
    let Some(redis) = RedisServer::start() else { return };
    let dir = tempfile::tempdir().unwrap();

    let (listening, stderr) = start_up_log(&redis, &dir.path().join("data"), "local mode on Redis");

    assert!(listening, "{stderr}");
    assert!(stderr.contains("local mode on Redis"), "{stderr}");
}

/// Starts `codeq serve --storage redis` without tokens on `data_dir`,
/// waits (10 s at most) until its log says `wanted`, and stops it:
/// whether it listened, and its log.
fn start_up_log(redis: &RedisServer, data_dir: &std::path::Path, wanted: &str) -> (bool, String) {
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_codeq"))
        .args(["serve", "--port", "0", "--storage", "redis", "--data-dir"])
        .arg(data_dir)
        .env("CODEQ_REDIS_ADDR", redis.addr())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let listening = stdout.lines().map_while(Result::ok).any(|line| line.contains("listening on"));
    // Log lines are written by a thread of their own, a moment later.
    let deadline = Instant::now() + Duration::from_secs(10);
    let said = || std::fs::read_to_string(&log).unwrap().contains(wanted);
    while !said() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    (listening, std::fs::read_to_string(&log).unwrap())
}

#[test]
fn a_wrong_or_missing_redis_password_is_refused_at_start_without_waiting() {
    let Some(redis) = RedisServer::start_with("always", &["--requirepass", "s3cret"]) else {
        return;
    };
    for env in [&[("CODEQ_REDIS_PASSWORD", "wrong")][..], &[]] {
        let started = std::time::Instant::now();
        let (code, stderr) = serve_until_exit(&redis, env);
        assert_eq!(code, Some(2), "{env:?}: {stderr}");
        assert!(stderr.contains("Redis refused codeQ's credentials"), "{env:?}: {stderr}");
        // Not the 30 s wait for a Redis that may come back.
        assert!(started.elapsed() < Duration::from_secs(20), "{env:?}: {:?}", started.elapsed());
    }
}

#[test]
fn a_database_or_a_password_redis_cannot_take_is_refused_at_start_without_waiting() {
    let Some(redis) = RedisServer::start() else { return };
    let cases = [
        (("CODEQ_REDIS_DB", "16"), "set redisDb"),
        (("CODEQ_REDIS_PASSWORD", "unneeded"), "leave both unset for a Redis without a password"),
    ];
    for (env, fix) in cases {
        let started = std::time::Instant::now();
        let (code, stderr) = serve_until_exit(&redis, &[env]);
        assert_eq!(code, Some(2), "{env:?}: {stderr}");
        assert!(stderr.contains(fix), "{env:?}: {stderr}");
        assert!(started.elapsed() < Duration::from_secs(20), "{env:?}: {:?}", started.elapsed());
    }
}

#[test]
fn a_data_directory_holding_an_embedded_store_is_pointed_out() {
    let Some(redis) = RedisServer::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("store")).unwrap();

    let (listening, stderr) = start_up_log(&redis, dir.path(), "holds an embedded store");

    assert!(listening, "{stderr}");
    assert!(stderr.contains("this dataDir holds an embedded store"), "{stderr}");
}

#[test]
fn a_redis_that_may_evict_keys_is_refused_at_start() {
    let Some(redis) = RedisServer::start_with("always", &["--maxmemory-policy", "allkeys-lru"])
    else {
        return;
    };
    let (code, stderr) = serve_until_exit(&redis, &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("maxmemory-policy allkeys-lru"), "{stderr}");
    assert!(stderr.contains("noeviction"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_comes_back_evicting_keys_is_not_written_to_until_fixed() {
    let Some(mut redis) = RedisServer::start() else { return };
    let replica = Replica::start(&redis, &[]);
    let http = http();
    let create = || async {
        let body = json!({ "command": "evictable", "payload": {} });
        post(&http, &replica.url("/tasks"), PRODUCER, body).await
    };
    assert_eq!(create().await.0, 202);

    redis.kill();
    redis.start_again_with(&["--maxmemory-policy", "allkeys-lru"]);
    let log = || std::fs::read_to_string(&replica.log).unwrap();
    wait_for(Duration::from_secs(20), "the replica to refuse the evicting Redis", || async {
        log().contains("Redis is back with maxmemory-policy allkeys-lru")
    })
    .await;
    let (status, refused) = create().await;
    assert_eq!((status, refused["code"].as_str()), (503, Some("storage_unavailable")));
    assert_eq!(replica.ready_status(&http).await, 503);

    assert_eq!(redis.command(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]), "+OK");
    wait_for(Duration::from_secs(20), "writes once the policy is fixed", || async {
        create().await.0 == 202
    })
    .await;
    let logged = log().matches(r#""message":"Redis is back with maxmemory-policy"#).count();
    assert_eq!(logged, 1, "said once, not once per attempt:\n{}", log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_at_its_maxmemory_answers_507_and_takes_writes_once_it_has_room() {
    let Some(redis) = RedisServer::start_with("always", &["--maxmemory", "4mb"]) else { return };
    let replica = Replica::start(&redis, &[]);
    let http = http();
    let pad = "x".repeat(200_000);
    let mut stored = Vec::new();
    let refused = loop {
        assert!(stored.len() < 100, "4 MiB never filled");
        let body = json!({ "command": "big", "payload": { "pad": pad } });
        let (status, answer) = post(&http, &replica.url("/tasks"), PRODUCER, body).await;
        match status {
            202 => stored.push(answer["id"].as_str().unwrap().to_string()),
            _ => break (status, answer),
        }
    };
    assert_eq!((refused.0, refused.1["code"].as_str()), (507, Some("insufficient_storage")));
    for id in &stored {
        assert_eq!(get(&http, &replica.url(&format!("/tasks/{id}"))).await.0, 200, "reads answer");
    }
    assert_eq!(redis.command(&["CONFIG", "SET", "maxmemory", "0"]), "+OK");
    let body = json!({ "command": "big", "payload": { "pad": pad } });
    assert_eq!(post(&http, &replica.url("/tasks"), PRODUCER, body).await.0, 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weak_persistence_is_warned_about_and_the_password_is_used() {
    let Some(redis) = RedisServer::start_with("everysec", &["--requirepass", "s3cret"]) else {
        return;
    };
    let mut replica = Replica::start(&redis, &[("CODEQ_REDIS_PASSWORD", "s3cret")]);
    let http = http();
    assert_eq!(replica.ready_status(&http).await, 200);
    let (status, _) =
        post(&http, &replica.url("/tasks"), PRODUCER, json!({ "command": "c", "payload": {} }))
            .await;
    assert_eq!(status, 202);
    replica.assert_healthy();
    // Log lines are written by a thread of their own, a moment later.
    let read_log = || std::fs::read_to_string(&replica.log).unwrap();
    wait_for(Duration::from_secs(10), "the persistence warning", || async {
        read_log().contains("appendfsync everysec")
    })
    .await;
    assert!(read_log().contains("lose"), "{}", read_log());
}

/// Redis's `PUBSUB NUMSUB` of codeQ's events channel: how many
/// connections (one per replica) listen to it.
fn events_listeners(redis: &RedisServer, user: &str, password: &str) -> u64 {
    let port = redis.addr().rsplit_once(':').unwrap().1.to_string();
    let output = Command::new("redis-cli")
        .args(["-p", &port, "--user", user, "--pass", password, "--no-auth-warning"])
        .args(["PUBSUB", "NUMSUB", "codeq:{*}:events"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.lines().nth(1).and_then(|count| count.trim().parse().ok()).unwrap_or_else(|| {
        panic!("PUBSUB NUMSUB answered {text:?} ({})", String::from_utf8_lossy(&output.stderr))
    })
}

/// The ACL rule docs/storage.md gives for codeQ's user, as redis-server
/// arguments.
const DOCUMENTED_ACL: &[&str] =
    &["--user", "codeq", "on", ">s3cret", "~codeq:*", "&codeq:*", "+@all", "-@dangerous"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_run_as_an_acl_user_with_the_documented_rights() {
    let mut args = vec!["--user", "default", "off"];
    args.extend(DOCUMENTED_ACL);
    // A user like the documented one but without the events channel.
    args.extend(["--user", "deaf", "on", ">s3cret", "~codeq:*", "+@all", "-@dangerous"]);
    let Some(redis) = RedisServer::start_with("always", &args) else { return };
    let as_codeq = [("CODEQ_REDIS_USERNAME", "codeq"), ("CODEQ_REDIS_PASSWORD", "s3cret")];
    let (a, mut b) = (Replica::start(&redis, &as_codeq), Replica::start(&redis, &as_codeq));
    let http = http();
    // Both replicas listen for each other's work.
    wait_for(Duration::from_secs(10), "both replicas to subscribe", || async {
        events_listeners(&redis, "codeq", "s3cret") == 2
    })
    .await;
    let (status, created) =
        post(&http, &a.url("/tasks"), PRODUCER, json!({ "command": "acl", "payload": {} })).await;
    assert_eq!(status, 202, "{created}");
    let (status, task) =
        post(&http, &b.url("/tasks/claim"), WORKER, json!({ "commands": ["acl"] })).await;
    assert_eq!(status, 200, "{task}");
    let id = task["id"].as_str().unwrap();
    let result = json!({ "status": "COMPLETED", "result": { "ok": true } });
    let (status, body) = post(&http, &b.url(&format!("/tasks/{id}/result")), WORKER, result).await;
    assert_eq!(status, 200, "{body}");
    let (status, stored) = get(&http, &a.url(&format!("/tasks/{id}/result"))).await;
    assert_eq!((status, &stored["result"]["result"]), (200, &json!({ "ok": true })), "{stored}");
    b.assert_healthy();
    // `-@dangerous` refuses CONFIG: start-up says it cannot check.
    let log = std::fs::read_to_string(&b.log).unwrap();
    assert!(log.contains("cannot read a Redis setting"), "{log}");

    // The same rights without the channel: the replica serves, and says
    // what it is missing.
    let deaf = Replica::start(
        &redis,
        &[("CODEQ_REDIS_USERNAME", "deaf"), ("CODEQ_REDIS_PASSWORD", "s3cret")],
    );
    assert_eq!(deaf.ready_status(&http).await, 200);
    wait_for(Duration::from_secs(10), "the subscription warning", || async {
        std::fs::read_to_string(&deaf.log).unwrap().contains("cannot subscribe")
    })
    .await;
    assert_eq!(events_listeners(&redis, "codeq", "s3cret"), 2);

    // The default user is off: a password alone is refused at start.
    let (code, stderr) = serve_until_exit(&redis, &[("CODEQ_REDIS_PASSWORD", "s3cret")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("redisUsername"), "{stderr}");
}

/// A CA and a server certificate for `localhost` made with the `openssl`
/// command; `None` (with a notice) without it.
fn certificates() -> Option<tempfile::TempDir> {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    std::fs::write(dir.path().join("ext.cnf"), "subjectAltName=DNS:localhost\n").unwrap();
    let made = run(&["version"])
        && run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=codeq-test-ca",
        ])
        && run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ])
        && run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
        ]);
    if !made {
        eprintln!("NOTICE: openssl is not available; skipping the TLS test");
        return None;
    }
    Some(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rediss_address_connects_over_tls_to_a_trusted_certificate() {
    let Some(certs) = certificates() else { return };
    let Some(redis) = RedisServer::start_tls(certs.path()) else { return };
    let addr = format!("rediss://localhost:{}", redis.addr().rsplit(':').next().unwrap());
    let ca = certs.path().join("ca.pem").display().to_string();
    // rustls-native-certs reads the roots from SSL_CERT_FILE when it is set.
    let replica = Replica::start(&redis, &[("CODEQ_REDIS_ADDR", &addr), ("SSL_CERT_FILE", &ca)]);
    let http = http();
    let (status, _) =
        post(&http, &replica.url("/tasks"), PRODUCER, json!({ "command": "tls", "payload": {} }))
            .await;
    assert_eq!(status, 202);
    let (status, task) =
        post(&http, &replica.url("/tasks/claim"), WORKER, json!({ "commands": ["tls"] })).await;
    assert_eq!((status, task["command"].as_str()), (200, Some("tls")));

    // Without the CA the certificate is not trusted: refused at once.
    let (code, stderr) = serve_until_exit(&redis, &[("CODEQ_REDIS_ADDR", &addr)]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("TLS certificate is not trusted"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_sent_at_once_to_two_replicas_pass_the_subscription_bound_by_one_each_at_most() {
    let Some(redis) = RedisServer::start() else { return };
    let replicas = [Replica::start(&redis, &[]), Replica::start(&redis, &[])];
    let http = http();
    let body = json!({ "callbackUrl": "http://127.0.0.1:9/ready", "eventTypes": ["bound"] });
    let sent: Vec<_> = (0..140)
        .map(|n| {
            let (http, url, body) =
                (http.clone(), replicas[n % 2].url("/workers/subscriptions"), body.clone());
            tokio::spawn(async move { post(&http, &url, WORKER, body).await })
        })
        .collect();
    let (mut stored, mut refused) = (0, 0);
    for answer in sent {
        match answer.await.unwrap() {
            (200, _) => stored += 1,
            (409, body) if body["code"] == "too_many_subscriptions" => refused += 1,
            other => panic!("{other:?}"),
        }
    }
    // Each replica takes its creates one at a time; the two may each let
    // one through at the same moment.
    assert!((100..=102).contains(&stored), "{stored} stored, {refused} refused");
    assert_eq!(stored + refused, 140);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reaper_that_redis_refuses_tries_again_a_second_later_not_at_once() {
    let Some(redis) = RedisServer::start() else { return };
    let replica = Replica::start(&redis, &[]);
    let http = http();
    let body = json!({ "command": "spin", "payload": {} });
    assert_eq!(post(&http, &replica.url("/tasks"), PRODUCER, body).await.0, 202);
    let claim = json!({ "commands": ["spin"], "leaseSeconds": 1 });
    let (status, task) = post(&http, &replica.url("/tasks/claim"), WORKER, claim.clone()).await;
    assert_eq!(status, 200, "{task}");
    // Every write refused from now on: the ended lease cannot be expired,
    // and its deadline stays in the past.
    assert_eq!(redis.command(&["CONFIG", "SET", "maxmemory", "1"]), "+OK");
    // Scripts called so far (the replica's calls are all scripts).
    let scripts = || {
        let stats = redis.info_field("commandstats", "cmdstat_evalsha").unwrap_or_default();
        let calls = stats.split(',').find_map(|field| field.strip_prefix("calls="));
        calls.map_or(0, |calls| calls.parse::<u64>().unwrap())
    };
    let errors =
        || redis.info_field("stats", "total_error_replies").unwrap().parse::<u64>().unwrap();
    let errors_before = errors();
    wait_for(Duration::from_secs(10), "a refused reaper pass", || async {
        errors() > errors_before
    })
    .await;
    let calls_before = scripts();
    tokio::time::sleep(Duration::from_secs(2)).await; // the window counted
    let calls = scripts() - calls_before;
    assert!(calls < 30, "{calls} script calls in 2 s of refusals");
    assert_eq!(redis.command(&["CONFIG", "SET", "maxmemory", "0"]), "+OK");
    let url = replica.url(&format!("/tasks/{}", task["id"].as_str().unwrap()));
    wait_for(Duration::from_secs(10), "the lease expired once Redis takes writes", || async {
        get(&http, &url).await.1["lastReason"] == "LEASE_EXPIRED"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_redis_refuses_writes_is_not_ready_until_they_pass_again() {
    let Some(redis) = RedisServer::start() else { return };
    let Some(primary) = RedisServer::start() else { return };
    let replica = Replica::start(&redis, &[]);
    let http = http();
    assert_eq!(replica.ready_status(&http).await, 200);
    // Made a read-only replica of another Redis, as after a failover to a
    // node the replica's address no longer points at.
    let (host, port) =
        primary.addr().rsplit_once(':').map(|(h, p)| (h.to_string(), p.to_string())).unwrap();
    assert_eq!(redis.command(&["REPLICAOF", &host, &port]), "+OK");
    // Not ready with no call made: the safety poll asks Redis its role,
    // and says why.
    wait_for(Duration::from_secs(10), "not ready while idle", || async {
        replica.ready_status(&http).await == 503
    })
    .await;
    wait_for(Duration::from_secs(10), "the warning", || async {
        std::fs::read_to_string(&replica.log).unwrap().contains("Redis says it is a replica")
    })
    .await;
    let create = || {
        let (http, url) = (http.clone(), replica.url("/tasks"));
        async move { post(&http, &url, PRODUCER, json!({ "command": "ro", "payload": {} })).await }
    };
    wait_for(Duration::from_secs(10), "a create refused by the read-only Redis", || async {
        let (status, body) = create().await;
        assert!([202, 503].contains(&status), "{status} {body}");
        status == 503
    })
    .await;
    assert_eq!(replica.ready_status(&http).await, 503, "ready right after a refused call");
    assert_eq!(redis.command(&["REPLICAOF", "NO", "ONE"]), "+OK");
    wait_for(Duration::from_secs(10), "the replica to be ready again", || async {
        replica.ready_status(&http).await == 200
    })
    .await;
    assert_eq!(create().await.0, 202);
}

#[test]
fn a_start_that_waits_for_a_read_only_redis_says_why_once() {
    let Some(redis) = RedisServer::start() else { return };
    let Some(primary) = RedisServer::start() else { return };
    let (host, port) =
        primary.addr().rsplit_once(':').map(|(h, p)| (h.to_string(), p.to_string())).unwrap();
    assert_eq!(redis.command(&["REPLICAOF", &host, &port]), "+OK");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_codeq"))
        .args(["serve", "--port", "0", "--storage", "redis", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("CODEQ_REDIS_ADDR", redis.addr())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let refused_writes = || {
        let stat = redis.info_field("errorstats", "errorstat_READONLY").unwrap_or_default();
        stat.strip_prefix("count=")
            .and_then(|rest| rest.split(',').next()?.parse().ok())
            .unwrap_or(0)
    };
    let until = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "never: {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    until("four tries at start refused", &|| refused_writes() >= 4_u64);
    assert_eq!(redis.command(&["REPLICAOF", "NO", "ONE"]), "+OK");
    let read_log = || std::fs::read_to_string(&log).unwrap();
    until("the store opened once Redis took writes", &|| {
        read_log().contains("storage opened (Redis)")
    });
    let _ = child.kill();
    let _ = child.wait();

    let log = read_log();
    for said in
        ["waiting for Redis", "Redis says it is a replica", "Redis refused a call (more refusals"]
    {
        assert_eq!(log.matches(said).count(), 1, "{said}:\n{log}");
    }
    assert!(log.matches("persistence is weaker").count() <= 1, "{log}");
}
