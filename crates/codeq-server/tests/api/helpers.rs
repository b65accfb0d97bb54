//! `TestApp`: the real server on 127.0.0.1, port 0, with its own data
//! directory, static tokens for every kind of caller, and typed helpers
//! to call it over real HTTP.

use std::sync::Arc;
use std::time::Duration;

use codeq_core::Timestamp;
use codeq_server::app::{App, Running};
use codeq_server::clock::{Clock, ManualClock, SystemClock};
use codeq_server::config::{Config, StaticTokenConfig, TokenKind};
use codeq_server::service::scheduler::Scheduler;
use codeq_server::service::subscriptions::Subscriptions;
use codeq_server::store::Signals;
use codeq_server::store::embedded::log::fs::Fs;
use codeq_server::store::embedded::{EmbeddedOptions, EmbeddedStore};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// Producer with admin rights.
pub const ADMIN: &str = "t-admin";
/// Producer without admin rights.
pub const PRODUCER: &str = "t-producer";
/// Worker `w1`, every command and scope.
pub const WORKER: &str = "t-worker";
/// Worker `w2`, every command and scope.
pub const WORKER2: &str = "t-worker2";
/// Worker `w3`: only command `allowed`, only scope `codeq:claim`.
pub const LIMITED: &str = "t-limited";
/// Producer `p2`: only command `allowed`.
pub const LIMITED_PRODUCER: &str = "t-limited-producer";
/// Worker `w4` of worker group `g1`: only command `allowed`.
pub const GROUPED: &str = "t-grouped";
/// A worker that may submit results but not claim.
pub const REPORTER: &str = "t-reporter";

/// The static tokens every test server accepts.
pub fn test_tokens() -> Vec<StaticTokenConfig> {
    let token = StaticTokenConfig::plain;
    let mut admin = token(ADMIN, TokenKind::Producer, "admin");
    admin.admin = true;
    let mut limited = token(LIMITED, TokenKind::Worker, "w3");
    limited.event_types = Some(vec!["allowed".into()]);
    limited.scopes = Some(vec!["codeq:claim".into()]);
    let mut limited_producer = token(LIMITED_PRODUCER, TokenKind::Producer, "p2");
    limited_producer.event_types = Some(vec!["allowed".into()]);
    let mut grouped = token(GROUPED, TokenKind::Worker, "w4");
    grouped.event_types = Some(vec!["allowed".into()]);
    grouped.worker_group = Some("g1".into());
    let mut reporter = token(REPORTER, TokenKind::Worker, "w1");
    reporter.scopes = Some(vec!["codeq:result".into()]);
    vec![
        reporter,
        grouped,
        limited_producer,
        admin,
        token(PRODUCER, TokenKind::Producer, "producer"),
        token(WORKER, TokenKind::Worker, "w1"),
        token(WORKER2, TokenKind::Worker, "w2"),
        limited,
    ]
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    /// The `code` of an error body.
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or_default()
    }

    /// A string field of the body.
    pub fn str(&self, field: &str) -> &str {
        self.body[field].as_str().unwrap_or_default()
    }
}

/// A running server.
pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub clock: Option<Arc<ManualClock>>,
    pub dir: tempfile::TempDir,
    scheduler: Arc<Scheduler>,
    subscriptions: Subscriptions,
    server: Running,
}

impl TestApp {
    /// A server on the system clock with the test tokens.
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}, false).await
    }

    /// A server on a clock the test drives.
    pub async fn spawn_manual_clock() -> Self {
        Self::spawn_with(|_| {}, true).await
    }

    /// A server with a changed configuration.
    pub async fn spawn_with(change: impl FnOnce(&mut Config), manual_clock: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default_for_tests(dir.path());
        config.host = "127.0.0.1".into();
        config.port = 0;
        config.static_tokens = test_tokens();
        change(&mut config);
        Self::start(config, dir, manual_clock).await
    }

    /// Starts a server with `config` whose data lives in `dir`.
    pub async fn start(config: Config, dir: tempfile::TempDir, manual_clock: bool) -> Self {
        let manual = manual_clock.then(|| Arc::new(ManualClock::new(Timestamp::now())));
        let clock: Arc<dyn Clock> = match &manual {
            Some(clock) => clock.clone(),
            None => Arc::new(SystemClock),
        };
        let app = App::build_with_clock(config, clock).await.unwrap();
        Self::serve(app, dir, manual).await
    }

    /// The test configuration for data in `dir`.
    pub fn config(dir: &std::path::Path) -> Config {
        let mut config = Config::default_for_tests(dir);
        config.host = "127.0.0.1".into();
        config.port = 0;
        config.static_tokens = test_tokens();
        config
    }

    /// Starts a server whose embedded store (in `<dir>/store`) does its
    /// I/O through `fs`; returns the store too.
    pub async fn start_on(
        fs: Arc<dyn Fs>,
        options: EmbeddedOptions,
        dir: tempfile::TempDir,
        change: impl FnOnce(&mut Config),
    ) -> (Self, Arc<EmbeddedStore>) {
        let mut config = Self::config(dir.path());
        change(&mut config);
        let signals = Arc::new(Signals::new());
        let store =
            EmbeddedStore::open_with(fs, &dir.path().join("store"), options, signals.clone())
                .unwrap();
        let app = App::build_with_store(config, Arc::new(SystemClock), store.clone(), signals)
            .await
            .unwrap();
        (Self::serve(app, dir, None).await, store)
    }

    async fn serve(app: App, dir: tempfile::TempDir, manual: Option<Arc<ManualClock>>) -> Self {
        let (scheduler, subscriptions) = (app.scheduler(), app.subscriptions());
        let server = app.spawn().unwrap();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        let base = server.base_url();
        Self { base, http, clock: manual, dir, scheduler, subscriptions, server }
    }

    /// The address the server listens on (for raw sockets).
    pub fn address(&self) -> std::net::SocketAddr {
        self.server.address()
    }

    /// Connections the server has open now.
    pub fn open_connections(&self) -> usize {
        self.server.open_connections()
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(self) -> tempfile::TempDir {
        self.server.stop().await.unwrap();
        self.dir
    }

    /// The data directory of a server that stopped (everything else of
    /// it dropped).
    pub fn dir_after_stop(self) -> tempfile::TempDir {
        self.dir
    }

    /// Waits (at most `within`) for the server to stop on its own; its
    /// result.
    pub async fn stopped_within(&mut self, within: Duration) -> anyhow::Result<()> {
        tokio::time::timeout(within, self.server.stopped()).await.expect("the server did not stop")
    }

    /// Moves the manual clock forward.
    pub fn advance(&self, seconds: u64) {
        self.clock
            .as_ref()
            .expect("spawned with a manual clock")
            .advance(Duration::from_secs(seconds));
    }

    /// Any request; `body` `None` sends no body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        Reply { status, headers, body }
    }

    /// POST under `/v1/codeq`.
    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call(Method::POST, &format!("/v1/codeq{path}"), Some(token), Some(body)).await
    }

    /// Starts a POST under `/v1/codeq` in the background (a long poll).
    pub fn spawn_post(
        &self,
        path: &str,
        token: &'static str,
        body: Value,
    ) -> JoinHandle<reqwest::Response> {
        let request =
            self.http.post(format!("{}/v1/codeq{path}", self.base)).bearer_auth(token).json(&body);
        tokio::spawn(async move { request.send().await.unwrap() })
    }

    /// GET under `/v1/codeq`.
    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.call(Method::GET, &format!("/v1/codeq{path}"), Some(token), None).await
    }

    /// Creates a task and returns its JSON (asserting 202).
    pub async fn create(&self, body: Value) -> Value {
        let reply = self.post("/tasks", PRODUCER, body).await;
        assert_eq!(reply.status, 202, "create failed: {:?}", reply.body);
        reply.body
    }

    /// Creates a task of `command` with a small payload; returns its id.
    pub async fn create_simple(&self, command: &str) -> String {
        self.create(json!({ "command": command, "payload": { "n": 1 } })).await["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Claims one task as `worker` from `commands`, without waiting.
    pub async fn claim(&self, worker: &str, commands: &[&str]) -> Reply {
        self.post("/tasks/claim", worker, json!({ "commands": commands })).await
    }

    /// Claims one task and returns it (asserting 200).
    pub async fn claim_ok(&self, worker: &str, commands: &[&str]) -> Value {
        let reply = self.claim(worker, commands).await;
        assert_eq!(reply.status, 200, "claim failed: {:?}", reply.body);
        reply.body
    }

    /// Reads a task (asserting 200).
    pub async fn task(&self, id: &str) -> Value {
        let reply = self.get(&format!("/tasks/{id}"), PRODUCER).await;
        assert_eq!(reply.status, 200, "get failed: {:?}", reply.body);
        reply.body
    }

    /// Waits until the task's status is `status` (the reaper acts on its own).
    pub async fn wait_for_status(&self, id: &str, status: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let task = self.task(id).await;
            if task["status"] == status {
                return task;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "task {id} never became {status}: {task}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until `n` claims are parked in a long poll.
    pub async fn wait_for_long_polls(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.scheduler.long_polls_waiting() < n {
            assert!(tokio::time::Instant::now() < deadline, "no long poll started waiting");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// How many commands claims hold a wake-up notifier for.
    pub fn command_notifiers(&self) -> usize {
        self.scheduler.command_notifiers()
    }

    /// How many result callbacks are still owed.
    pub fn callbacks_pending(&self) -> usize {
        self.scheduler.store().callbacks_pending().1
    }

    /// Waits until no result callback is owed.
    pub async fn wait_for_callbacks(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while self.callbacks_pending() > 0 {
            assert!(tokio::time::Instant::now() < deadline, "callbacks still owed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until the subscription notifier has handled `news` "became
    /// ready" events in all and has no notification in flight.
    pub async fn wait_for_notifier(&self, news: u64) {
        let progress = &self.subscriptions.progress;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while progress.handled() < news || progress.in_flight() > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the notifier handled {} of {news}",
                progress.handled()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// "Became ready" events the notifier has handled so far.
    pub fn notifier_handled(&self) -> u64 {
        self.subscriptions.progress.handled()
    }

    /// How many subscriptions the store holds (lapsed ones included).
    pub async fn stored_subscriptions(&self) -> usize {
        self.scheduler.store().subscriptions().await.unwrap().len()
    }

    /// `/healthz` answers 200.
    pub async fn assert_healthy(&self) {
        let reply = self.call(Method::GET, "/healthz", None, None).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, json!({ "status": "ok" }));
    }
}
