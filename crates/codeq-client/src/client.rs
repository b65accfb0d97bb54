//! [`Client`]: one method per API call, over one pooled `reqwest::Client`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::de::DeserializeOwned;

use crate::error::{Error, TokenKind};
use crate::spread::spread;
use crate::types::{
    AbandonBody, BatchItem, BatchResult, BulkBody, CancelBatchAnswer, CancelBatchBody, CancelBody,
    CancelledTask, ClaimBatchAnswer, ClaimBatchBody, ClaimRequest, CleanupBody, CleanupOutcome,
    CreateBatchAnswer, CreateBatchBody, CreateTask, Created, DeadLetterQuery, DeadLetterSelection,
    HeartbeatAck, HeartbeatBody, NackBody, NackOutcome, Purged, QueueSettings, QueueStats,
    QueuesAnswer, Replayed, ResultBatchAnswer, ResultBatchBody, ResultRecord, SubmitResult, Task,
    TaskPage, TaskQuery, TaskWithResult,
};

/// Default time allowed for one request, connect to last body byte. A long
/// poll gets its `waitSeconds` on top.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time allowed to open a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default number of idle keep-alive connections kept per host. Enough for
/// a worker pool and producers to reuse their connections instead of
/// reconnecting; raise it for more concurrent callers.
pub const DEFAULT_POOL_MAX_IDLE_PER_HOST: usize = 64;
/// Default time an idle keep-alive connection is kept.
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The header that marks an idempotent replay of a create.
const REPLAYED_HEADER: &str = "idempotent-replayed";
/// The header asking a dev-mode server for admin rights.
const ADMIN_ROLE_HEADER: &str = "x-role";

/// Which token a call sends.
#[derive(Debug, Clone, Copy)]
enum Auth {
    /// Producer calls and admin calls.
    Producer,
    /// Worker calls.
    Worker,
    /// Reads (tasks, results, one queue's stats): the producer token, else
    /// the worker token.
    Reader,
    /// Health endpoints.
    None,
}

/// Which failures of a call may be repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Repeating the call changes nothing more (reads, results,
    /// heartbeats, keyed creates): retried on any transport error and on
    /// 502/503/504, and on 507 (storage full: Redis at its `maxmemory`
    /// takes writes again once it has room).
    Safe,
    /// Retried only when the server did nothing with the request: the
    /// connection could not be made, the token could not be checked yet,
    /// or the server was too busy to take it (503 `overloaded`) (claims,
    /// results with a claim, nacks, abandons, cancels, unkeyed creates).
    ConnectOnly,
}

/// How often and how patiently failed calls are repeated (see
/// [`ClientBuilder::retry_policy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Repeats after the first try (0 disables retries).
    pub max_retries: u32,
    /// Pause before the first repeat; doubled for each further one. Each
    /// pause is drawn between half of it and all of it, so that clients
    /// failing together do not repeat together. After an answer with
    /// `Retry-After` (in seconds; 503 `overloaded`: 1 s,
    /// `storage_unavailable`: 5 s), the pause is that long plus the
    /// backoff; one that asks for more than `max_delay` is not repeated.
    pub base_delay: Duration,
    /// Longest pause.
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// No retries.
    pub const NONE: Self =
        Self { max_retries: 0, base_delay: Duration::ZERO, max_delay: Duration::ZERO };

    fn delay(&self, retry: u32) -> Duration {
        self.base_delay.saturating_mul(2u32.saturating_pow(retry)).min(self.max_delay)
    }

    /// The pause before repeat `retry + 1`: the backoff, spread, after
    /// what the server's `Retry-After` asks; `None` (no repeat) when it
    /// asks for more than `max_delay`.
    fn pause(&self, retry: u32, asked: Option<Duration>) -> Option<Duration> {
        let asked = asked.unwrap_or_default();
        (asked <= self.max_delay).then(|| asked + spread(self.delay(retry)))
    }
}

impl Default for RetryPolicy {
    /// Two repeats, after 100–200 ms and 200–400 ms.
    fn default() -> Self {
        Self {
            max_retries: 2,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(2),
        }
    }
}

/// A typed client for the codeQ HTTP API.
///
/// Producer calls send the producer token, worker calls the worker token,
/// admin calls the producer token, and reads (`get_task`, `get_result`,
/// `queue_stats`) the producer token or, without one, the worker token. A call whose token is
/// missing fails with [`Error::MissingToken`] without a request.
///
/// Failed calls are repeated per the [`RetryPolicy`]: calls that are safe
/// to repeat (reads, results without `claimNext`, heartbeats, creates with
/// an idempotency key) on any transport error and on 502/503/504; every
/// other call only when the server did nothing with it: the connection
/// could not be made, the answer was 401 `jwks_unavailable` (the server
/// could not fetch its identity provider's keys this time, and checks
/// tokens before anything else), or 503 `overloaded` (too busy to take
/// the call). A repeat waits what the answer's `Retry-After` asks, plus the
/// backoff; an answer that asks for longer than the policy's `max_delay`
/// is returned instead.
///
/// Cloning is cheap and clones share one connection pool, so one client can
/// serve many tasks.
///
/// ```no_run
/// use codeq_client::{ClaimRequest, Client, CreateTask, SubmitResult};
/// use serde_json::json;
///
/// # async fn run() -> Result<(), codeq_client::Error> {
/// let client = Client::new("http://127.0.0.1:8080")?
///     .with_producer_token("producer-token")
///     .with_worker_token("worker-token");
///
/// let created = client.create_task(&CreateTask::new("RENDER", json!({"jobId": "j-1"}))).await?;
/// println!("created {}", created.task.id);
///
/// let claim = ClaimRequest { wait_seconds: Some(10), ..ClaimRequest::new(["RENDER"]) };
/// if let Some(task) = client.claim(&claim).await? {
///     let done = SubmitResult::completed(task.attempts, json!({"ok": true}));
///     client.submit_result(&task.id, &done).await?;
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base_url: Url,
    timeout: Duration,
    producer_token: Option<Arc<str>>,
    worker_token: Option<Arc<str>>,
    admin_role: bool,
    retry: RetryPolicy,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Tokens are credentials: say whether they are set, never what they are.
        f.debug_struct("Client")
            .field("base_url", &self.base_url.as_str())
            .field("timeout", &self.timeout)
            .field("producer_token", &self.producer_token.as_ref().map(|_| "<set>"))
            .field("worker_token", &self.worker_token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// Configures a [`Client`]; made by [`Client::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ClientBuilder {
    base_url: String,
    timeout: Duration,
    connect_timeout: Duration,
    pool_max_idle_per_host: usize,
    pool_idle_timeout: Duration,
    retry: RetryPolicy,
}

impl ClientBuilder {
    /// How failed calls are repeated (default [`RetryPolicy::default`]).
    pub fn retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Time allowed for one request (a long poll gets its wait on top).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Time allowed to open a connection.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Idle keep-alive connections kept per host; set it to at least the
    /// number of concurrent callers sharing the client.
    pub fn pool_max_idle_per_host(mut self, max: usize) -> Self {
        self.pool_max_idle_per_host = max;
        self
    }

    /// How long an idle keep-alive connection is kept.
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.pool_idle_timeout = timeout;
        self
    }

    /// Builds the client (without tokens; add them with
    /// [`Client::with_producer_token`] and [`Client::with_worker_token`]).
    pub fn build(self) -> Result<Client, Error> {
        let base_url = parse_base_url(&self.base_url)?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("codeq-client/", env!("CARGO_PKG_VERSION")))
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            .pool_max_idle_per_host(self.pool_max_idle_per_host)
            .pool_idle_timeout(self.pool_idle_timeout)
            .tcp_nodelay(true)
            .tcp_keepalive(Duration::from_secs(60))
            .build()?;
        Ok(Client {
            http,
            base_url,
            timeout: self.timeout,
            producer_token: None,
            worker_token: None,
            admin_role: false,
            retry: self.retry,
        })
    }
}

/// Accepts an absolute http(s) URL that can take path segments.
fn parse_base_url(text: &str) -> Result<Url, Error> {
    let invalid =
        |reason: &str| Error::InvalidBaseUrl { url: text.to_owned(), reason: reason.into() };
    let url = Url::parse(text).map_err(|err| invalid(&err.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if url.cannot_be_a_base() {
        return Err(invalid("it cannot have a path"));
    }
    Ok(url)
}

impl Client {
    /// A client for the server at `base_url` (e.g. `http://127.0.0.1:8080`;
    /// a path prefix is kept) with default settings and no tokens.
    pub fn new(base_url: impl Into<String>) -> Result<Self, Error> {
        Self::builder(base_url).build()
    }

    /// A builder for a client with non-default timeouts or pool settings.
    pub fn builder(base_url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            base_url: base_url.into(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            pool_max_idle_per_host: DEFAULT_POOL_MAX_IDLE_PER_HOST,
            pool_idle_timeout: DEFAULT_POOL_IDLE_TIMEOUT,
            retry: RetryPolicy::default(),
        }
    }

    /// Sets the token sent by producer, read and admin calls.
    #[must_use]
    pub fn with_producer_token(mut self, token: impl Into<String>) -> Self {
        self.producer_token = Some(Arc::from(token.into()));
        self
    }

    /// Sets the token sent by worker calls (and reads without a producer token).
    #[must_use]
    pub fn with_worker_token(mut self, token: impl Into<String>) -> Self {
        self.worker_token = Some(Arc::from(token.into()));
        self
    }

    /// Sends `X-Role: ADMIN` with producer and admin calls when `admin`:
    /// a server with `env: dev` then treats a producer token without a
    /// `role` claim as admin (docs/security.md); other servers ignore the header.
    #[must_use]
    pub fn with_admin_role(mut self, admin: bool) -> Self {
        self.admin_role = admin;
        self
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &Url {
        &self.base_url
    }

    // ---- Producers ------------------------------------------------------

    /// `POST /v1/codeq/tasks`: creates a task, or returns the existing one
    /// for a repeated idempotency key (`replayed`).
    pub async fn create_task(&self, task: &CreateTask) -> Result<Created, Error> {
        let request = self.request(Method::POST, &["v1", "codeq", "tasks"], Auth::Producer)?;
        let response = self.send(request.json(task), creates_retry([task])).await?;
        let replayed = response
            .headers()
            .get(REPLAYED_HEADER)
            .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"true"));
        Ok(Created { task: decode(response).await?, replayed })
    }

    /// `POST /v1/codeq/tasks/batch`: creates 1..=100 tasks; each item
    /// succeeds or fails on its own, answered in request order. Repeated
    /// after a lost answer or a 502–504 only when every task has an
    /// idempotency key (a repeat then creates nothing twice).
    pub async fn create_tasks_batch(
        &self,
        tasks: &[CreateTask],
    ) -> Result<Vec<BatchItem<Task>>, Error> {
        let request =
            self.request(Method::POST, &["v1", "codeq", "tasks", "batch"], Auth::Producer)?;
        let body = CreateBatchBody { tasks };
        let response = self.send(request.json(&body), creates_retry(tasks)).await?;
        let answer: CreateBatchAnswer = decode(response).await?;
        Ok(answer.results.into_iter().map(Into::into).collect())
    }

    /// `POST /v1/codeq/tasks/:id/cancel`: ends a pending or in-progress
    /// task as `CANCELLED` (its producer, or an admin); the task as it is
    /// now. A terminal task is refused with 409 `task_terminal`.
    pub async fn cancel_task(&self, id: &str, reason: Option<&str>) -> Result<Task, Error> {
        let request =
            self.request(Method::POST, &["v1", "codeq", "tasks", id, "cancel"], Auth::Producer)?;
        // Not repeated: a second try of a cancel that went through would
        // answer `task_terminal`.
        let response = self.send(request.json(&CancelBody { reason }), Retry::ConnectOnly).await?;
        decode(response).await
    }

    /// `POST /v1/codeq/tasks/batch/cancel`: cancels 1..=100 tasks, each on
    /// its own, answered in request order.
    pub async fn cancel_tasks(
        &self,
        ids: &[String],
        reason: Option<&str>,
    ) -> Result<Vec<BatchItem<CancelledTask>>, Error> {
        let path = ["v1", "codeq", "tasks", "batch", "cancel"];
        let request = self.request(Method::POST, &path, Auth::Producer)?;
        let body = CancelBatchBody { ids, reason };
        let response = self.send(request.json(&body), Retry::ConnectOnly).await?;
        let answer: CancelBatchAnswer = decode(response).await?;
        Ok(answer.results.into_iter().map(Into::into).collect())
    }

    // ---- Workers --------------------------------------------------------

    /// `POST /v1/codeq/tasks/claim`: one task under a lease, or `None` when
    /// none became available within `wait_seconds` (`204`).
    pub async fn claim(&self, claim: &ClaimRequest) -> Result<Option<Task>, Error> {
        let request =
            self.request(Method::POST, &["v1", "codeq", "tasks", "claim"], Auth::Worker)?;
        let request = request.json(claim).timeout(self.long_poll_timeout(claim));
        let response = self.send(request, Retry::ConnectOnly).await?;
        if response.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        decode(response).await.map(Some)
    }

    /// `POST /v1/codeq/tasks/claim/batch`: up to `count` (1..=100) tasks;
    /// empty when none became available within `wait_seconds` (`204`).
    pub async fn claim_batch(&self, claim: &ClaimRequest, count: u32) -> Result<Vec<Task>, Error> {
        let path = ["v1", "codeq", "tasks", "claim", "batch"];
        let request = self.request(Method::POST, &path, Auth::Worker)?;
        let body = ClaimBatchBody { claim, count };
        let request = request.json(&body).timeout(self.long_poll_timeout(claim));
        let response = self.send(request, Retry::ConnectOnly).await?;
        if response.status() == StatusCode::NO_CONTENT {
            return Ok(Vec::new());
        }
        let answer: ClaimBatchAnswer = decode(response).await?;
        Ok(answer.tasks)
    }

    /// `POST /v1/codeq/tasks/:id/heartbeat`: the lease of delivery
    /// `attempt` now ends `extend_seconds` from now (default: the server's
    /// lease length), whatever was left of it.
    pub async fn heartbeat(
        &self,
        id: &str,
        attempt: u32,
        extend_seconds: Option<u32>,
    ) -> Result<HeartbeatAck, Error> {
        let request =
            self.request(Method::POST, &["v1", "codeq", "tasks", id, "heartbeat"], Auth::Worker)?;
        let body = HeartbeatBody { attempt, extend_seconds };
        let response = self.send(request.json(&body), Retry::Safe).await?;
        decode(response).await
    }

    /// `POST /v1/codeq/tasks/:id/abandon`: gives delivery `attempt` back;
    /// the task is ready again at once, its attempts unchanged.
    pub async fn abandon(&self, id: &str, attempt: u32) -> Result<(), Error> {
        let request =
            self.request(Method::POST, &["v1", "codeq", "tasks", id, "abandon"], Auth::Worker)?;
        self.send(request.json(&AbandonBody { attempt }), Retry::ConnectOnly).await?;
        Ok(())
    }

    /// `POST /v1/codeq/tasks/:id/nack`: asks for a retry of delivery
    /// `attempt` after `delay_seconds` (default: the backoff policy); the
    /// task is dead-lettered if that was its last delivery.
    pub async fn nack(
        &self,
        id: &str,
        attempt: u32,
        delay_seconds: Option<u32>,
        reason: Option<&str>,
    ) -> Result<NackOutcome, Error> {
        let request =
            self.request(Method::POST, &["v1", "codeq", "tasks", id, "nack"], Auth::Worker)?;
        let body = NackBody { attempt, delay_seconds, reason };
        let response = self.send(request.json(&body), Retry::ConnectOnly).await?;
        decode(response).await
    }

    /// `POST /v1/codeq/tasks/:id/result`: finishes the task. Repeating the
    /// same submission returns the stored record, so it is safe to retry.
    pub async fn submit_result(
        &self,
        id: &str,
        result: &SubmitResult,
    ) -> Result<ResultRecord, Error> {
        let request =
            self.request(Method::POST, &["v1", "codeq", "tasks", id, "result"], Auth::Worker)?;
        let response = self.send(request.json(result), Retry::Safe).await?;
        decode(response).await
    }

    /// `POST /v1/codeq/tasks/:id/result` with `claimNext`: stores the
    /// result, then claims the worker's next task (`claim`'s commands and
    /// lease; a `waitSeconds` there delays the answer up to that long) and
    /// answers both: the stored record, and the task when one was ready.
    ///
    /// Repeated only when the server did nothing with it (like a claim): a
    /// repeat after a lost answer would claim a second task while the
    /// first stays leased to this worker, unknown to it. Send the result
    /// again with [`Client::submit_result`] instead.
    pub async fn submit_result_and_claim(
        &self,
        id: &str,
        result: &SubmitResult,
        claim: &ClaimRequest,
    ) -> Result<(ResultRecord, Option<Task>), Error> {
        let request =
            self.request(Method::POST, &["v1", "codeq", "tasks", id, "result"], Auth::Worker)?;
        let body = ResultAndClaim { result, claim_next: claim };
        // Its claim may long-poll: the wait comes on top of the timeout.
        let request = request.json(&body).timeout(self.long_poll_timeout(claim));
        let response = self.send(request, Retry::ConnectOnly).await?;
        // The record and `next` share one object; read twice rather than
        // through `#[serde(flatten)]`, which cannot keep the result as text.
        let status = response.status().as_u16();
        let body = response.bytes().await?;
        let record: ResultRecord = parse(status, &body)?;
        let NextTask { next } = parse(status, &body)?;
        Ok((record, next))
    }

    /// `POST /v1/codeq/tasks/batch/results`: finishes 1..=100 tasks; each
    /// item succeeds or fails on its own, answered in request order.
    pub async fn submit_results_batch(
        &self,
        results: &[BatchResult],
    ) -> Result<Vec<BatchItem<ResultRecord>>, Error> {
        let path = ["v1", "codeq", "tasks", "batch", "results"];
        let request = self.request(Method::POST, &path, Auth::Worker)?;
        let response = self.send(request.json(&ResultBatchBody { results }), Retry::Safe).await?;
        let answer: ResultBatchAnswer = decode(response).await?;
        Ok(answer.results.into_iter().map(Into::into).collect())
    }

    // ---- Reads ----------------------------------------------------------

    /// `GET /v1/codeq/tasks/:id`.
    pub async fn get_task(&self, id: &str) -> Result<Task, Error> {
        let request = self.request(Method::GET, &["v1", "codeq", "tasks", id], Auth::Reader)?;
        decode(self.send(request, Retry::Safe).await?).await
    }

    /// `GET /v1/codeq/tasks/:id/result`: the task and its result (404 while
    /// it has none).
    pub async fn get_result(&self, id: &str) -> Result<TaskWithResult, Error> {
        let request =
            self.request(Method::GET, &["v1", "codeq", "tasks", id, "result"], Auth::Reader)?;
        decode(self.send(request, Retry::Safe).await?).await
    }

    // ---- Admin ----------------------------------------------------------

    /// `GET /v1/codeq/admin/queues`: stats of every command ever used.
    pub async fn queues(&self) -> Result<Vec<QueueStats>, Error> {
        let request =
            self.request(Method::GET, &["v1", "codeq", "admin", "queues"], Auth::Producer)?;
        let answer: QueuesAnswer = decode(self.send(request, Retry::Safe).await?).await?;
        Ok(answer.queues)
    }

    /// `GET /v1/codeq/admin/queues/:command`: one command's stats (zeros
    /// for an unused command), for an admin or for a worker whose
    /// `eventTypes` cover the command. A producer token that is not an
    /// admin's is followed by the worker token, when there is one.
    pub async fn queue_stats(&self, command: &str) -> Result<QueueStats, Error> {
        let path = ["v1", "codeq", "admin", "queues", command];
        let request = self.request(Method::GET, &path, Auth::Reader)?;
        match self.send(request, Retry::Safe).await {
            Err(refused) if refused.code() == Some("not_admin") && self.worker_token.is_some() => {
                let request = self.request(Method::GET, &path, Auth::Worker)?;
                decode(self.send(request, Retry::Safe).await?).await
            }
            answered => decode(answered?).await,
        }
    }

    /// `POST /v1/codeq/admin/tasks/cleanup`: deletes up to `limit` (server
    /// default 1000) terminal tasks whose retention ended by `before`
    /// (RFC 3339; default now). Not repeated once the server may have seen
    /// it: a repeat would delete another `limit` and count only those.
    pub async fn cleanup(
        &self,
        limit: Option<u32>,
        before: Option<&str>,
    ) -> Result<CleanupOutcome, Error> {
        let path = ["v1", "codeq", "admin", "tasks", "cleanup"];
        let request = self.request(Method::POST, &path, Auth::Producer)?;
        let response =
            self.send(request.json(&CleanupBody { limit, before }), Retry::ConnectOnly).await?;
        decode(response).await
    }

    /// `GET /v1/codeq/admin/tasks`: a page of tasks, newest first.
    pub async fn list_tasks(&self, query: &TaskQuery) -> Result<TaskPage, Error> {
        let path = ["v1", "codeq", "admin", "tasks"];
        let request = self.request(Method::GET, &path, Auth::Producer)?.query(&query.pairs());
        decode(self.send(request, Retry::Safe).await?).await
    }

    /// `GET /v1/codeq/admin/queues/:command/settings`.
    pub async fn queue_settings(&self, command: &str) -> Result<QueueSettings, Error> {
        let path = ["v1", "codeq", "admin", "queues", command, "settings"];
        let request = self.request(Method::GET, &path, Auth::Producer)?;
        decode(self.send(request, Retry::Safe).await?).await
    }

    /// `PUT /v1/codeq/admin/queues/:command/settings`: replaces all of
    /// them (an unset field is unset); the settings stored.
    pub async fn set_queue_settings(
        &self,
        command: &str,
        settings: &QueueSettings,
    ) -> Result<QueueSettings, Error> {
        let path = ["v1", "codeq", "admin", "queues", command, "settings"];
        let request = self.request(Method::PUT, &path, Auth::Producer)?;
        decode(self.send(request.json(settings), Retry::Safe).await?).await
    }

    /// `POST /v1/codeq/admin/queues/:command/pause`: claims skip the
    /// command until resumed; its limits are kept. The settings.
    pub async fn pause_queue(&self, command: &str) -> Result<QueueSettings, Error> {
        self.pause_or_resume(command, "pause").await
    }

    /// `POST /v1/codeq/admin/queues/:command/resume`: the settings.
    pub async fn resume_queue(&self, command: &str) -> Result<QueueSettings, Error> {
        self.pause_or_resume(command, "resume").await
    }

    async fn pause_or_resume(&self, command: &str, verb: &str) -> Result<QueueSettings, Error> {
        let path = ["v1", "codeq", "admin", "queues", command, verb];
        let request = self.request(Method::POST, &path, Auth::Producer)?;
        // Repeating either changes nothing more.
        decode(self.send(request.json(&serde_json::json!({})), Retry::Safe).await?).await
    }

    /// `GET /v1/codeq/admin/queues/:command/dlq`: a page of the command's
    /// dead letters, newest first.
    pub async fn dead_letters(
        &self,
        command: &str,
        query: &DeadLetterQuery,
    ) -> Result<TaskPage, Error> {
        let path = ["v1", "codeq", "admin", "queues", command, "dlq"];
        let request = self.request(Method::GET, &path, Auth::Producer)?.query(&query.pairs());
        decode(self.send(request, Retry::Safe).await?).await
    }

    /// `POST /v1/codeq/admin/queues/:command/dlq/replay`: sends the
    /// selected dead letters (at most `limit`, 1..=10,000, server default
    /// 1000) round again, spaced `1 / rate_per_second` apart when a rate
    /// is given.
    pub async fn replay_dead_letters(
        &self,
        command: &str,
        selection: &DeadLetterSelection,
        limit: Option<u32>,
        rate_per_second: Option<f64>,
    ) -> Result<Replayed, Error> {
        let path = ["v1", "codeq", "admin", "queues", command, "dlq", "replay"];
        let request = self.request(Method::POST, &path, Auth::Producer)?;
        let body = BulkBody { rate_per_second, ..BulkBody::new(selection, limit) };
        decode(self.send(request.json(&body), Retry::ConnectOnly).await?).await
    }

    /// `POST /v1/codeq/admin/queues/:command/dlq/purge`: deletes the
    /// selected dead letters (at most `limit`) with their results,
    /// idempotency keys and artifacts.
    pub async fn purge_dead_letters(
        &self,
        command: &str,
        selection: &DeadLetterSelection,
        limit: Option<u32>,
    ) -> Result<Purged, Error> {
        let path = ["v1", "codeq", "admin", "queues", command, "dlq", "purge"];
        let request = self.request(Method::POST, &path, Auth::Producer)?;
        let body = BulkBody::new(selection, limit);
        decode(self.send(request.json(&body), Retry::ConnectOnly).await?).await
    }

    // ---- Operations -----------------------------------------------------

    /// `GET /healthz`: `Ok` while the server process is up.
    pub async fn healthz(&self) -> Result<(), Error> {
        self.send(self.request(Method::GET, &["healthz"], Auth::None)?, Retry::Safe).await?;
        Ok(())
    }

    /// `GET /readyz`: `Ok` when the server's storage answers; otherwise an
    /// [`Error::Api`] with status 503 (or [`Error::Transport`] when the
    /// server itself does not answer).
    pub async fn readyz(&self) -> Result<(), Error> {
        // Not retried on 503: "not ready" is the answer asked for.
        self.send(self.request(Method::GET, &["readyz"], Auth::None)?, Retry::ConnectOnly).await?;
        Ok(())
    }

    // ---- Plumbing -------------------------------------------------------

    /// A request to `base_url` + `segments` (each percent-encoded as one
    /// path segment) carrying the token `auth` asks for.
    fn request(
        &self,
        method: Method,
        segments: &[&str],
        auth: Auth,
    ) -> Result<RequestBuilder, Error> {
        let mut url = self.base_url.clone();
        {
            let mut path = url.path_segments_mut().map_err(|()| Error::InvalidBaseUrl {
                url: self.base_url.to_string(),
                reason: "it cannot have a path".into(),
            })?;
            path.pop_if_empty().extend(segments);
        }
        let mut request = self.http.request(method, url);
        Ok(match self.token(auth)? {
            Some((kind, token)) => {
                if self.admin_role && kind == TokenKind::Producer {
                    request = request.header(ADMIN_ROLE_HEADER, "ADMIN");
                }
                request.bearer_auth(token)
            }
            None => request,
        })
    }

    /// The token `auth` sends, and which one it is.
    fn token(&self, auth: Auth) -> Result<Option<(TokenKind, &str)>, Error> {
        let producer = self.producer_token.as_deref().map(|t| (TokenKind::Producer, t));
        let worker = self.worker_token.as_deref().map(|t| (TokenKind::Worker, t));
        let token = match auth {
            Auth::None => return Ok(None),
            Auth::Producer => producer.ok_or(TokenKind::Producer),
            Auth::Worker => worker.ok_or(TokenKind::Worker),
            Auth::Reader => producer.or(worker).ok_or(TokenKind::Producer),
        };
        token.map(Some).map_err(Error::MissingToken)
    }

    /// Sends `request`, repeating it per the retry policy while `retry`
    /// allows. A body that cannot be cloned (none here: all are JSON) is
    /// sent once.
    async fn send(&self, request: RequestBuilder, retry: Retry) -> Result<Response, Error> {
        let mut attempt = 0;
        loop {
            let Some(copy) = request.try_clone() else {
                return send_once(request).await.map_err(|refused| refused.error);
            };
            match send_once(copy).await {
                Ok(response) => return Ok(response),
                Err(refused) => {
                    let pause = self.retry.pause(attempt, refused.retry_after);
                    let again =
                        attempt < self.retry.max_retries && may_retry(&refused.error, retry);
                    match pause.filter(|_| again) {
                        Some(pause) => tokio::time::sleep(pause).await,
                        None => return Err(refused.error),
                    }
                    attempt += 1;
                }
            }
        }
    }

    fn long_poll_timeout(&self, claim: &ClaimRequest) -> Duration {
        self.timeout + Duration::from_secs(claim.wait_seconds.unwrap_or(0).into())
    }
}

/// A failed attempt, with the pause its answer asked for.
struct Refused {
    error: Error,
    /// `Retry-After` (in seconds; the date form is not used by codeQ).
    retry_after: Option<Duration>,
}

impl From<reqwest::Error> for Refused {
    fn from(error: reqwest::Error) -> Self {
        Self { error: error.into(), retry_after: None }
    }
}

/// Sends `request` once; a non-2xx answer becomes [`Error::Api`].
async fn send_once(request: RequestBuilder) -> Result<Response, Refused> {
    let response = request.send().await?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|seconds| seconds.trim().parse().ok())
        .map(Duration::from_secs);
    // An unreadable error body still yields the status; the read error
    // itself would hide it.
    let body = response.bytes().await.unwrap_or_default();
    Err(Refused { error: Error::from_response_body(status.as_u16(), &body), retry_after })
}

/// How a create of `tasks` may be repeated: after a lost answer only when
/// every task has an idempotency key (a repeat then creates nothing twice).
fn creates_retry<'a>(tasks: impl IntoIterator<Item = &'a CreateTask>) -> Retry {
    let keyed = tasks.into_iter().all(|task| task.idempotency_key.is_some());
    if keyed { Retry::Safe } else { Retry::ConnectOnly }
}

/// Whether a failed attempt of a call may be repeated.
fn may_retry(err: &Error, retry: Retry) -> bool {
    match (err, retry) {
        // Not connected: the server never saw the request.
        (Error::Transport(err), _) if err.is_connect() => true,
        // Refused before anything was done: the token could not be
        // checked for now (authentication comes first), or the server was
        // too busy to take the call (docs/api.md: "nothing was done").
        (Error::Api { code, .. }, _) if code == "jwks_unavailable" || code == "overloaded" => true,
        // A request that could not be built (a token with a newline) is
        // built the same way again.
        (Error::Transport(err), Retry::Safe) => !err.is_builder(),
        (Error::Api { status: 502..=504 | 507, .. }, Retry::Safe) => true,
        _ => false,
    }
}

/// A result with a claim for the next task.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ResultAndClaim<'a> {
    #[serde(flatten)]
    result: &'a SubmitResult,
    claim_next: &'a ClaimRequest,
}

/// The task the answer to [`ResultAndClaim`] carries beside its record.
#[derive(serde::Deserialize)]
struct NextTask {
    next: Option<Task>,
}

/// Reads the whole body and parses it as `T`.
async fn decode<T: DeserializeOwned>(response: Response) -> Result<T, Error> {
    let status = response.status().as_u16();
    let body = response.bytes().await?;
    parse(status, &body)
}

/// An answer's `body`, received with `status`, read as a `T`.
fn parse<T: DeserializeOwned>(status: u16, body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|source| Error::Decode { status, source })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn client(base: &str) -> Client {
        Client::new(base).unwrap()
    }

    fn url_of(client: &Client, segments: &[&str], auth: Auth) -> String {
        let request = client.request(Method::GET, segments, auth).unwrap().build().unwrap();
        request.url().to_string()
    }

    #[test]
    fn paths_are_joined_to_the_base_url() {
        let plain = client("http://127.0.0.1:8080");
        let with_slash = client("http://127.0.0.1:8080/");
        let prefixed = client("https://example.test/queue/");

        assert_eq!(
            url_of(&plain, &["v1", "codeq", "tasks"], Auth::None),
            "http://127.0.0.1:8080/v1/codeq/tasks"
        );
        assert_eq!(url_of(&with_slash, &["healthz"], Auth::None), "http://127.0.0.1:8080/healthz");
        assert_eq!(
            url_of(&prefixed, &["v1", "codeq", "tasks"], Auth::None),
            "https://example.test/queue/v1/codeq/tasks"
        );
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        let client = client("http://127.0.0.1:8080");

        let url = url_of(&client, &["v1", "codeq", "tasks", "a/b?c"], Auth::None);

        assert_eq!(url, "http://127.0.0.1:8080/v1/codeq/tasks/a%2Fb%3Fc");
    }

    #[test]
    fn invalid_base_urls_are_refused() {
        assert!(matches!(Client::new("127.0.0.1:8080"), Err(Error::InvalidBaseUrl { .. })));
        assert!(matches!(Client::new("ftp://example.test"), Err(Error::InvalidBaseUrl { .. })));
        assert!(matches!(Client::new("mailto:a@b.c"), Err(Error::InvalidBaseUrl { .. })));
    }

    #[test]
    fn calls_without_their_token_fail_before_sending() {
        let client = client("http://127.0.0.1:8080");

        let producer = client.request(Method::POST, &["x"], Auth::Producer);
        let worker = client.request(Method::POST, &["x"], Auth::Worker);

        assert!(matches!(producer, Err(Error::MissingToken(TokenKind::Producer))));
        assert!(matches!(worker, Err(Error::MissingToken(TokenKind::Worker))));
    }

    #[test]
    fn reads_fall_back_to_the_worker_token() {
        let worker_only = client("http://127.0.0.1:8080").with_worker_token("w");
        let both = client("http://127.0.0.1:8080").with_producer_token("p").with_worker_token("w");

        assert_eq!(worker_only.token(Auth::Reader).unwrap(), Some((TokenKind::Worker, "w")));
        assert_eq!(both.token(Auth::Reader).unwrap(), Some((TokenKind::Producer, "p")));
        assert_eq!(both.token(Auth::Worker).unwrap(), Some((TokenKind::Worker, "w")));
    }

    #[test]
    fn the_admin_role_header_goes_with_producer_calls_only() {
        let client =
            client("http://127.0.0.1:8080").with_producer_token("p").with_worker_token("w");
        let admin = client.clone().with_admin_role(true);
        let role = |c: &Client, auth| {
            let request = c.request(Method::GET, &["x"], auth).unwrap().build().unwrap();
            request.headers().get(ADMIN_ROLE_HEADER).map(|v| v.to_str().unwrap().to_owned())
        };

        assert_eq!(role(&admin, Auth::Producer).as_deref(), Some("ADMIN"));
        assert_eq!(role(&admin, Auth::Reader).as_deref(), Some("ADMIN"));
        assert_eq!(role(&admin, Auth::Worker), None);
        assert_eq!(role(&client, Auth::Producer), None);
    }

    #[test]
    fn debug_output_hides_tokens() {
        let client = client("http://127.0.0.1:8080").with_producer_token("secret-token");

        let printed = format!("{client:?}");

        assert!(!printed.contains("secret-token"));
        assert!(printed.contains("<set>"));
    }

    #[test]
    fn only_safe_calls_are_repeated_after_the_server_may_have_seen_them() {
        let unavailable = Error::from_response_body(503, b"");
        let conflict = Error::from_response_body(409, b"");

        let full =
            Error::from_response_body(507, br#"{"error":"full","code":"insufficient_storage"}"#);

        assert!(may_retry(&unavailable, Retry::Safe));
        assert!(!may_retry(&unavailable, Retry::ConnectOnly));
        assert!(may_retry(&full, Retry::Safe));
        assert!(!may_retry(&full, Retry::ConnectOnly));
        assert!(!may_retry(&conflict, Retry::Safe));
    }

    #[test]
    fn a_call_refused_before_anything_was_done_is_repeated_whatever_the_call() {
        let refused = |status, code: &str| {
            let body = format!(r#"{{"error":"x","code":"{code}"}}"#);
            Error::from_response_body(status, body.as_bytes())
        };
        for nothing_done in [refused(401, "jwks_unavailable"), refused(503, "overloaded")] {
            assert!(may_retry(&nothing_done, Retry::ConnectOnly), "{nothing_done}");
        }
        for not_repeated in [refused(503, "storage_unavailable"), refused(401, "invalid_token")] {
            assert!(!may_retry(&not_repeated, Retry::ConnectOnly), "{not_repeated}");
        }
    }

    #[test]
    fn creates_are_repeated_after_a_lost_answer_only_when_every_task_has_a_key() {
        let keyed = |key: &str| CreateTask {
            idempotency_key: Some(key.into()),
            ..CreateTask::new("RENDER", serde_json::json!({}))
        };
        let unkeyed = CreateTask::new("RENDER", serde_json::json!({}));

        assert_eq!(creates_retry([&keyed("a")]), Retry::Safe);
        assert_eq!(creates_retry(&[keyed("a"), keyed("b")]), Retry::Safe);
        assert_eq!(creates_retry(&[keyed("a"), unkeyed.clone()]), Retry::ConnectOnly);
        assert_eq!(creates_retry([&unkeyed]), Retry::ConnectOnly);
    }

    #[test]
    fn retry_pauses_double_up_to_the_maximum() {
        let policy = RetryPolicy {
            max_retries: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
        };

        let pauses: Vec<_> = (0..4).map(|n| policy.delay(n).as_millis()).collect();

        assert_eq!(pauses, [100, 200, 300, 300]);
    }

    #[test]
    fn a_retry_after_comes_before_the_backoff_and_one_too_long_is_not_waited_for() {
        let policy = RetryPolicy {
            max_retries: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        };
        let within = |pause: Option<Duration>, from: u64, to: u64| {
            pause
                .is_some_and(|p| p >= Duration::from_millis(from) && p <= Duration::from_millis(to))
        };

        assert!(within(policy.pause(0, Some(Duration::from_secs(1))), 1050, 1100));
        assert!(within(policy.pause(0, None), 50, 100));
        assert_eq!(policy.pause(0, Some(Duration::from_secs(5))), None, "over max_delay");
    }

    #[test]
    fn long_polls_get_their_wait_on_top_of_the_timeout() {
        let client = client("http://127.0.0.1:8080");
        let claim = ClaimRequest { wait_seconds: Some(30), ..ClaimRequest::default() };

        assert_eq!(client.long_poll_timeout(&claim), DEFAULT_TIMEOUT + Duration::from_secs(30));
    }
}
