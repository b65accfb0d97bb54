//! `codeq bench`: a load generator against an already running server.
//!
//! Producers create tasks and workers claim them and submit results, each
//! in its own tokio task with a connection of its own ([`http`]); every call's
//! latency and every task's full cycle (create sent → result acknowledged)
//! is recorded. The send time travels in the task's payload, so no map is
//! shared between producers and workers and a worker can never see a task
//! before its producer has recorded it. `--wakeup` runs the idle long-poll
//! wake-up measurement of [`wakeup`] instead.
//!
//! Each producer and worker keeps its own samples and counters and hands
//! them back when it ends; the only shared state is a handful of atomics.

pub mod http;
pub mod stats;
pub mod wakeup;

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use codeq_client::{BatchResult, ClaimRequest, Client, CreateTask, SubmitResult, Task};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::cli::{BenchArgs, BenchMode, DEFAULT_BASE_URL, GlobalArgs};
use crate::exit::ConfigError;
use http::{CallError, Conn, Endpoint};
use stats::{Samples, Summary};

/// Tasks run through when neither `--count` nor `--duration` is given.
pub const DEFAULT_COUNT: u64 = 20_000;

/// How long a worker's claim waits for a task (long poll); also bounds how
/// long workers take to notice the end of the run.
const CLAIM_WAIT_SECONDS: u32 = 1;

/// With work outstanding, the run gives up when no task finishes for this
/// long (tasks lost by the server, or every call failing).
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Pause after a failed call that is worth retrying, so that a failing
/// server is not hammered in a tight loop.
const ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// How often the coordinator checks whether the run is over.
const CHECK_INTERVAL: Duration = Duration::from_millis(10);

/// The bench settings after defaults and credentials were resolved.
#[derive(Clone)]
pub struct Settings {
    /// Server URL.
    pub base_url: String,
    producer_token: String,
    worker_token: String,
    /// Concurrent producers.
    pub producers: u32,
    /// Concurrent workers.
    pub workers: u32,
    /// Single or batch calls.
    pub mode: BenchMode,
    /// Tasks per batch call (batch mode).
    pub batch_size: u32,
    /// When producers stop.
    pub target: Target,
    /// Approximate payload size in bytes.
    pub payload_bytes: usize,
    /// Queue of the bench tasks.
    pub command: String,
    /// Lease of claimed tasks, or the server's default.
    pub lease: Option<u32>,
    /// Tasks created and not yet finished, at most (producers wait).
    pub max_live: Option<u32>,
    /// Result callback URL of every task, if any.
    pub webhook: Option<String>,
    /// Results ask for the next task (`claimNext`).
    pub claim_next: bool,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("base_url", &self.base_url)
            .field("producers", &self.producers)
            .field("workers", &self.workers)
            .field("mode", &self.mode)
            .field("batch_size", &self.batch_size)
            .field("target", &self.target)
            .field("payload_bytes", &self.payload_bytes)
            .field("command", &self.command)
            .field("lease", &self.lease)
            .field("max_live", &self.max_live)
            .field("webhook", &self.webhook)
            .field("claim_next", &self.claim_next)
            .finish_non_exhaustive()
    }
}

/// When producers stop producing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// After this many tasks were issued.
    Count(u64),
    /// After this long.
    Duration(Duration),
}

/// `<data-dir>/credentials.json`, as written by a local-mode server.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    /// The server it belongs to.
    pub base_url: Option<String>,
    /// Its producer token.
    pub producer_token: Option<String>,
    /// Its worker token.
    pub worker_token: Option<String>,
}

impl Settings {
    /// Resolves the arguments: reads `credentials.json` when no token was
    /// given (local mode, docs/security.md).
    pub fn from_args(conn: &GlobalArgs, args: &BenchArgs) -> anyhow::Result<Self> {
        let credentials = if conn.producer_token.is_none() && conn.worker_token.is_none() {
            let path = args.data_dir.join("credentials.json");
            Some((load_credentials(&path)?, path))
        } else {
            None
        };
        let Connection { base_url, producer_token, worker_token } = choose_connection(
            conn.base_url.as_deref(),
            conn.producer_token.as_ref().map(|t| t.expose()),
            conn.worker_token.as_ref().map(|t| t.expose()),
            credentials.as_ref().map(|(c, p)| (c.as_ref(), p.as_path())),
        )?;
        if args.claim_next && args.mode == BenchMode::Batch {
            return Err(ConfigError::new(
                "--claim-next asks for the next task with a single result; \
                 it does not apply to --mode batch",
            )
            .into());
        }
        let target = match (args.count, args.duration) {
            (_, Some(seconds)) => Target::Duration(Duration::from_secs(seconds)),
            (count, None) => Target::Count(count.unwrap_or(DEFAULT_COUNT)),
        };
        Ok(Self {
            base_url,
            producer_token,
            worker_token,
            producers: args.producers,
            workers: args.workers,
            mode: args.mode,
            batch_size: args.batch_size,
            target,
            payload_bytes: args.payload_bytes,
            command: args.command.clone(),
            lease: args.lease,
            max_live: args.max_live,
            webhook: args.webhook.clone(),
            claim_next: args.claim_next,
        })
    }

    /// The SDK client of the wake-up run (one producer, one worker).
    pub fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::new(&self.base_url)?
            .with_producer_token(&self.producer_token)
            .with_worker_token(&self.worker_token))
    }

    fn claim_request(&self, wait_seconds: u32) -> ClaimRequest {
        ClaimRequest {
            commands: vec![self.command.clone()],
            lease_seconds: self.lease,
            wait_seconds: Some(wait_seconds),
        }
    }
}

/// Reads `credentials.json`; `None` when there is none.
fn load_credentials(path: &Path) -> anyhow::Result<Option<Credentials>> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let credentials = serde_json::from_slice(&bytes).map_err(|err| {
                ConfigError::new(format!("failed to parse {}: {err}", path.display()))
            })?;
            Ok(Some(credentials))
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).with_context(|| format!("failed to read {}", path.display())),
    }
}

/// The server and the tokens the bench uses.
#[derive(Debug, PartialEq, Eq)]
struct Connection {
    base_url: String,
    producer_token: String,
    worker_token: String,
}

impl Connection {
    fn new(base_url: &str, producer_token: &str, worker_token: &str) -> Self {
        Self {
            base_url: base_url.to_owned(),
            producer_token: producer_token.to_owned(),
            worker_token: worker_token.to_owned(),
        }
    }
}

/// Picks the base URL and both tokens: tokens from flags or environment
/// when any was given, else from `credentials` (looked for at the path
/// given beside it) as long as they are for the server asked for.
fn choose_connection(
    base_url: Option<&str>,
    producer_token: Option<&str>,
    worker_token: Option<&str>,
    credentials: Option<(Option<&Credentials>, &Path)>,
) -> Result<Connection, ConfigError> {
    let Some((credentials, path)) = credentials else {
        let base_url = base_url.unwrap_or(DEFAULT_BASE_URL);
        return match (producer_token, worker_token) {
            (Some(p), Some(w)) => Ok(Connection::new(base_url, p, w)),
            _ => Err(ConfigError::new(
                "the bench needs both a producer token and a worker token \
                 (--producer-token/--worker-token or CODEQ_PRODUCER_TOKEN/CODEQ_WORKER_TOKEN)",
            )),
        };
    };
    let Some(credentials) = credentials else {
        return Err(ConfigError::new(format!(
            "no tokens: pass --producer-token and --worker-token (or set CODEQ_PRODUCER_TOKEN \
             and CODEQ_WORKER_TOKEN), or point --data-dir at a local-mode server's data \
             directory ({} does not exist)",
            path.display()
        )));
    };
    let own_url = credentials.base_url.as_deref();
    if let (Some(asked), Some(own)) = (base_url, own_url) {
        let same_server = asked.trim_end_matches('/') == own.trim_end_matches('/');
        if !same_server {
            return Err(ConfigError::new(format!(
                "{} holds tokens for {own}, not for {asked}: pass the tokens explicitly",
                path.display()
            )));
        }
    }
    match (&credentials.producer_token, &credentials.worker_token) {
        (Some(p), Some(w)) => {
            Ok(Connection::new(base_url.or(own_url).unwrap_or(DEFAULT_BASE_URL), p, w))
        }
        _ => {
            Err(ConfigError::new(format!("{} lacks producerToken or workerToken", path.display())))
        }
    }
}

// ---- The load run -------------------------------------------------------

/// What producers and workers share while the run lasts.
struct Shared {
    settings: Settings,
    endpoint: Arc<Endpoint>,
    /// The body of every claim call.
    claim_body: Bytes,
    /// Identifies this run's tasks among leftovers of earlier runs.
    run_id: String,
    start: Instant,
    /// Tasks producers have reserved (count mode); never decreases.
    issued: AtomicU64,
    /// Tasks the server acknowledged creating.
    created: AtomicU64,
    /// This run's tasks that need no more waiting for: completed, or
    /// whose result submission failed.
    finished: AtomicU64,
    /// This run's tasks completed.
    completed: AtomicU64,
    /// When the latest completion was acknowledged, µs since `start`.
    last_completion_us: AtomicU64,
    stop_producers: AtomicBool,
    stop_workers: AtomicBool,
    /// The first error that makes going on pointless (bad token, …).
    fatal: Mutex<Option<CallError>>,
    /// The small object every result carries.
    result: serde_json::Value,
    /// Payload filler of the right length.
    filler: String,
    /// Places for tasks created and not yet finished (`--max-live`).
    live: Option<tokio::sync::Semaphore>,
}

impl Shared {
    fn micros_since_start(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn payload(&self, sent_us: u64) -> serde_json::Value {
        json!({ "run": self.run_id, "sentUs": sent_us, "data": self.filler })
    }

    /// One bench task, sent at `sent_us`.
    fn task(&self, sent_us: u64) -> CreateTask {
        let mut task = CreateTask::new(&self.settings.command, self.payload(sent_us));
        task.webhook.clone_from(&self.settings.webhook);
        task
    }

    /// Handles a failed call: fatal ones stop the run; for the others the
    /// caller backs off and goes on.
    async fn failed(&self, err: CallError) {
        if err.is_fatal() {
            if let Ok(mut fatal) = self.fatal.lock() {
                fatal.get_or_insert(err);
            }
            self.stop_producers.store(true, Ordering::SeqCst);
            self.stop_workers.store(true, Ordering::SeqCst);
        } else {
            tokio::time::sleep(ERROR_BACKOFF).await;
        }
    }

    /// Records the end of one of this run's tasks (or of a leftover).
    fn task_done(&self, task: &Task, counts: &mut WorkerCounts, acknowledged_us: u64) {
        match sent_us_of(task, &self.run_id) {
            Some(sent_us) => {
                counts.cycle.record_micros(acknowledged_us.saturating_sub(sent_us));
                self.completed.fetch_add(1, Ordering::SeqCst);
                self.finished.fetch_add(1, Ordering::SeqCst);
                self.free_live_place();
                self.last_completion_us.fetch_max(acknowledged_us, Ordering::SeqCst);
            }
            None => counts.foreign += 1,
        }
    }

    /// Waits for places for `n` more live tasks (with `--max-live`).
    async fn take_live_places(&self, n: u64) {
        if let Some(live) = &self.live
            && let Ok(places) = live.acquire_many(u32::try_from(n).unwrap_or(u32::MAX)).await
        {
            places.forget();
        }
    }

    /// A task of this run finished: its place is free.
    fn free_live_place(&self) {
        if let Some(live) = &self.live {
            live.add_permits(1);
        }
    }

    /// Reserves up to `wanted` tasks to create; 0 when producing is over.
    fn reserve(&self, wanted: u64) -> u64 {
        if self.stop_producers.load(Ordering::SeqCst) {
            return 0;
        }
        match self.settings.target {
            Target::Duration(duration) => {
                if self.start.elapsed() >= duration {
                    0
                } else {
                    wanted
                }
            }
            Target::Count(count) => self
                .issued
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |issued| {
                    (issued < count).then(|| issued + wanted.min(count - issued))
                })
                .map_or(0, |issued| wanted.min(count - issued)),
        }
    }
}

/// The send time (µs since the run's start) carried by one of this run's
/// tasks; `None` for a task of another run.
fn sent_us_of(task: &Task, run_id: &str) -> Option<u64> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct BenchPayload {
        run: String,
        sent_us: u64,
    }
    let payload: BenchPayload = task.payload_as().ok()?;
    (payload.run == run_id).then_some(payload.sent_us)
}

/// Filler so that `{"run":…,"sentUs":…,"data":"xxx…"}` is about `bytes` long.
fn filler(run_id: &str, bytes: usize) -> String {
    let envelope = json!({ "run": run_id, "sentUs": 1_000_000_000u64, "data": "" }).to_string();
    "x".repeat(bytes.saturating_sub(envelope.len()))
}

#[derive(Default)]
struct ProducerCounts {
    create: Samples,
    create_errors: u64,
}

#[derive(Default)]
struct WorkerCounts {
    claim: Samples,
    result: Samples,
    cycle: Samples,
    empty_claims: u64,
    claim_errors: u64,
    result_errors: u64,
    foreign: u64,
}

async fn produce(shared: Arc<Shared>) -> ProducerCounts {
    let mut counts = ProducerCounts::default();
    let mut conn = Conn::new(Arc::clone(&shared.endpoint));
    let batch = u64::from(shared.settings.batch_size);
    loop {
        let wanted = match shared.settings.mode {
            BenchMode::Single => 1,
            BenchMode::Batch => batch,
        };
        let n = shared.reserve(wanted);
        if n == 0 {
            break;
        }
        shared.take_live_places(n).await;
        let sent_us = shared.micros_since_start();
        let sent = Instant::now();
        let outcome = match shared.settings.mode {
            BenchMode::Single => conn.create(&shared.task(sent_us)).await.map(|()| (1, 0)),
            BenchMode::Batch => {
                let tasks: Vec<CreateTask> = (0..n).map(|_| shared.task(sent_us)).collect();
                conn.create_batch(&tasks).await
            }
        };
        match outcome {
            Ok((ok, failed)) => {
                counts.create.record(sent.elapsed());
                shared.created.fetch_add(ok, Ordering::SeqCst);
                counts.create_errors += failed;
            }
            Err(err) => {
                counts.create_errors += n;
                shared.failed(err).await;
            }
        }
    }
    counts
}

async fn work(shared: Arc<Shared>) -> WorkerCounts {
    let mut counts = WorkerCounts::default();
    let mut conn = Conn::new(Arc::clone(&shared.endpoint));
    let wait = Duration::from_secs(CLAIM_WAIT_SECONDS.into());
    let mut next: Option<Task> = None;
    while !shared.stop_workers.load(Ordering::SeqCst) {
        if let Some(task) = next.take() {
            next = submit_one(&shared, &mut conn, &task, &mut counts).await;
            continue;
        }
        let sent = Instant::now();
        let body = shared.claim_body.clone();
        let claimed = match shared.settings.mode {
            BenchMode::Single => conn.claim(body, wait).await.map(|t| t.into_iter().collect()),
            BenchMode::Batch => conn.claim_batch(body, wait).await,
        };
        let tasks: Vec<Task> = match claimed {
            Ok(tasks) if tasks.is_empty() => {
                counts.empty_claims += 1;
                continue;
            }
            Ok(tasks) => {
                counts.claim.record(sent.elapsed());
                tasks
            }
            Err(err) => {
                counts.claim_errors += 1;
                shared.failed(err).await;
                continue;
            }
        };
        match shared.settings.mode {
            BenchMode::Single => {
                for task in &tasks {
                    next = submit_one(&shared, &mut conn, task, &mut counts).await;
                }
            }
            BenchMode::Batch => submit_batch(&shared, &mut conn, &tasks, &mut counts).await,
        }
    }
    // A task handed over with the last result goes back to the queue.
    if let Some(task) = next {
        let _ = conn.abandon(&task.id, task.attempts).await;
    }
    counts
}

/// Submits `task`'s result; with `--claim-next`, returns the next task
/// when one came with the answer.
async fn submit_one(
    shared: &Shared,
    conn: &mut Conn,
    task: &Task,
    counts: &mut WorkerCounts,
) -> Option<Task> {
    let result = SubmitResult::completed(task.attempts, shared.result.clone());
    let sent = Instant::now();
    let submitted = if shared.settings.claim_next {
        let claim = shared.settings.claim_request(0);
        conn.submit_result_and_claim(&task.id, &result, &claim).await
    } else {
        conn.submit_result(&task.id, &result).await.map(|()| None)
    };
    match submitted {
        Ok(next) => {
            counts.result.record(sent.elapsed());
            shared.task_done(task, counts, shared.micros_since_start());
            next
        }
        Err(err) => {
            result_failed(shared, task, counts);
            shared.failed(err).await;
            None
        }
    }
}

async fn submit_batch(shared: &Shared, conn: &mut Conn, tasks: &[Task], counts: &mut WorkerCounts) {
    let results: Vec<BatchResult> = tasks
        .iter()
        .map(|task| BatchResult {
            task_id: task.id.clone(),
            result: SubmitResult::completed(task.attempts, shared.result.clone()),
        })
        .collect();
    let sent = Instant::now();
    match conn.submit_results_batch(&results).await {
        Ok(items) => {
            counts.result.record(sent.elapsed());
            let acknowledged_us = shared.micros_since_start();
            // Items answer in request order; a short answer leaves the
            // missing tasks failed.
            for (i, task) in tasks.iter().enumerate() {
                match items.get(i) {
                    Some(true) => shared.task_done(task, counts, acknowledged_us),
                    _ => result_failed(shared, task, counts),
                }
            }
        }
        Err(err) => {
            for task in tasks {
                result_failed(shared, task, counts);
            }
            shared.failed(err).await;
        }
    }
}

/// A result submission failed: the task is not waited for any longer
/// (its lease would have to expire before anyone could finish it).
fn result_failed(shared: &Shared, task: &Task, counts: &mut WorkerCounts) {
    counts.result_errors += 1;
    if sent_us_of(task, &shared.run_id).is_some() {
        shared.finished.fetch_add(1, Ordering::SeqCst);
        shared.free_live_place();
    }
}

/// How the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Ending {
    /// Every created task was finished.
    Complete,
    /// Nothing finished for [`STALL_TIMEOUT`] with work outstanding.
    Stalled,
    /// Ctrl-C.
    Interrupted,
}

/// Runs the load benchmark and reports on it. A fatal error (bad token,
/// validation, server unreachable at start) is returned as the error.
pub async fn run(settings: Settings) -> anyhow::Result<Report> {
    let endpoint = Arc::new(Endpoint::new(
        &settings.base_url,
        &settings.producer_token,
        &settings.worker_token,
    )?);
    Conn::new(Arc::clone(&endpoint))
        .healthz()
        .await
        .with_context(|| format!("server at {} is not answering", settings.base_url))?;
    let count = (settings.mode == BenchMode::Batch).then_some(settings.batch_size);
    let claim_body = http::claim_body(&settings.claim_request(CLAIM_WAIT_SECONDS), count)?;

    let run_id = format!("{}-{}", std::process::id(), unix_millis());
    let shared = Arc::new(Shared {
        filler: filler(&run_id, settings.payload_bytes),
        live: settings.max_live.map(|n| tokio::sync::Semaphore::new(n as usize)),
        result: json!({ "ok": true }),
        run_id,
        endpoint,
        claim_body,
        start: Instant::now(),
        issued: AtomicU64::new(0),
        created: AtomicU64::new(0),
        finished: AtomicU64::new(0),
        completed: AtomicU64::new(0),
        last_completion_us: AtomicU64::new(0),
        stop_producers: AtomicBool::new(false),
        stop_workers: AtomicBool::new(false),
        fatal: Mutex::new(None),
        settings,
    });
    let interrupted = Arc::new(AtomicBool::new(false));
    let on_signal = {
        let (shared, interrupted) = (Arc::clone(&shared), Arc::clone(&interrupted));
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                interrupted.store(true, Ordering::SeqCst);
                shared.stop_producers.store(true, Ordering::SeqCst);
            }
        })
    };

    let workers: Vec<_> =
        (0..shared.settings.workers).map(|_| tokio::spawn(work(Arc::clone(&shared)))).collect();
    let producers: Vec<_> = (0..shared.settings.producers)
        .map(|_| tokio::spawn(produce(Arc::clone(&shared))))
        .collect();
    let mut produced = ProducerCounts::default();
    for producer in producers {
        let counts = producer.await.context("a bench producer panicked")?;
        produced.create.merge(counts.create);
        produced.create_errors += counts.create_errors;
    }

    let ending = drain(&shared, &interrupted).await;
    shared.stop_workers.store(true, Ordering::SeqCst);
    on_signal.abort();
    let mut worked = WorkerCounts::default();
    for worker in workers {
        let counts = worker.await.context("a bench worker panicked")?;
        worked.claim.merge(counts.claim);
        worked.result.merge(counts.result);
        worked.cycle.merge(counts.cycle);
        worked.empty_claims += counts.empty_claims;
        worked.claim_errors += counts.claim_errors;
        worked.result_errors += counts.result_errors;
        worked.foreign += counts.foreign;
    }
    if let Some(err) = shared.fatal.lock().ok().and_then(|mut fatal| fatal.take()) {
        return Err(anyhow::Error::new(err).context("the bench stopped on an error"));
    }

    let completed = shared.completed.load(Ordering::SeqCst);
    let last_us = shared.last_completion_us.load(Ordering::SeqCst);
    let elapsed = if completed > 0 && ending == Ending::Complete {
        Duration::from_micros(last_us)
    } else {
        shared.start.elapsed()
    };
    let settings = &shared.settings;
    Ok(Report {
        mode: settings.mode,
        base_url: settings.base_url.clone(),
        producers: settings.producers,
        workers: settings.workers,
        batch_size: (settings.mode == BenchMode::Batch).then_some(settings.batch_size),
        count: match settings.target {
            Target::Count(count) => Some(count),
            Target::Duration(_) => None,
        },
        duration_seconds: match settings.target {
            Target::Count(_) => None,
            Target::Duration(duration) => Some(duration.as_secs()),
        },
        payload_bytes: settings.payload_bytes,
        command: settings.command.clone(),
        webhook: settings.webhook.clone(),
        claim_next: settings.claim_next,
        ending,
        elapsed_seconds: elapsed.as_secs_f64(),
        created: shared.created.load(Ordering::SeqCst),
        completed,
        cycles_per_second: if elapsed.is_zero() {
            0.0
        } else {
            completed as f64 / elapsed.as_secs_f64()
        },
        latency: Latency {
            create: produced.create.summarize(),
            claim: worked.claim.summarize(),
            result: worked.result.summarize(),
            cycle: worked.cycle.summarize(),
        },
        empty_claims: worked.empty_claims,
        errors: Errors {
            create: produced.create_errors,
            claim: worked.claim_errors,
            result: worked.result_errors,
        },
        foreign_tasks: worked.foreign,
    })
}

/// Waits, once producing is over, until every created task finished, the
/// run stalls, a fatal error stops it, or Ctrl-C.
async fn drain(shared: &Shared, interrupted: &AtomicBool) -> Ending {
    let mut last_finished = shared.finished.load(Ordering::SeqCst);
    let mut last_progress = Instant::now();
    loop {
        if interrupted.load(Ordering::SeqCst) {
            return Ending::Interrupted;
        }
        let finished = shared.finished.load(Ordering::SeqCst);
        if shared.stop_workers.load(Ordering::SeqCst)
            || finished >= shared.created.load(Ordering::SeqCst)
        {
            return Ending::Complete;
        }
        if finished != last_finished {
            (last_finished, last_progress) = (finished, Instant::now());
        } else if last_progress.elapsed() >= STALL_TIMEOUT {
            return Ending::Stalled;
        }
        tokio::time::sleep(CHECK_INTERVAL).await;
    }
}

fn unix_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis())
}

// ---- The report ---------------------------------------------------------

/// The outcome of a load run; `Display` is the plain-text report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Single or batch calls.
    pub mode: BenchMode,
    /// The server.
    pub base_url: String,
    /// Concurrent producers.
    pub producers: u32,
    /// Concurrent workers.
    pub workers: u32,
    /// Tasks per batch call (batch mode).
    pub batch_size: Option<u32>,
    /// Tasks asked for (count mode).
    pub count: Option<u64>,
    /// Production time (duration mode).
    pub duration_seconds: Option<u64>,
    /// Approximate payload size.
    pub payload_bytes: usize,
    /// The queue used.
    pub command: String,
    /// The result callback URL every task carried, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// Results asked for the next task (`claimNext`).
    pub claim_next: bool,
    /// How the run ended.
    pub ending: Ending,
    /// From the start to the last acknowledged result (or to the end of an
    /// incomplete run).
    pub elapsed_seconds: f64,
    /// Tasks the server acknowledged creating.
    pub created: u64,
    /// Tasks whose result the server acknowledged.
    pub completed: u64,
    /// `completed / elapsed_seconds`.
    pub cycles_per_second: f64,
    /// Latencies per call kind, and per task for the full cycle.
    pub latency: Latency,
    /// Claims that came back empty (long poll ended without a task).
    pub empty_claims: u64,
    /// Failed calls (create and result: per task; claim: per call).
    pub errors: Errors,
    /// Leftover tasks of earlier runs that were claimed and completed.
    pub foreign_tasks: u64,
}

/// Latency summaries; per request in batch mode, except `cycle` (per task).
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Create calls.
    pub create: Summary,
    /// Claim calls that returned tasks (long-poll wait included).
    pub claim: Summary,
    /// Result calls.
    pub result: Summary,
    /// Per task: create sent → result acknowledged.
    pub cycle: Summary,
}

/// Failure counts.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Errors {
    /// Tasks whose create failed.
    pub create: u64,
    /// Claim calls that failed.
    pub claim: u64,
    /// Tasks whose result submission failed.
    pub result: u64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "codeq bench: mode={}", self.mode)?;
        if let Some(batch_size) = self.batch_size {
            write!(f, " batch-size={batch_size}")?;
        }
        write!(f, " producers={} workers={}", self.producers, self.workers)?;
        match (self.count, self.duration_seconds) {
            (Some(count), _) => write!(f, " count={count}")?,
            (None, Some(seconds)) => write!(f, " duration={seconds}s")?,
            (None, None) => {}
        }
        write!(f, " payload={}B command={}", self.payload_bytes, self.command)?;
        if let Some(webhook) = &self.webhook {
            write!(f, " webhook={webhook}")?;
        }
        if self.claim_next {
            write!(f, " claim-next")?;
        }
        writeln!(f, " server={}", self.base_url)?;
        writeln!(
            f,
            "elapsed {:.2} s, {} created, {} completed, {:.1} cycles/s{}",
            self.elapsed_seconds,
            self.created,
            self.completed,
            self.cycles_per_second,
            match self.ending {
                Ending::Complete => "",
                Ending::Stalled => " (INCOMPLETE: stalled)",
                Ending::Interrupted => " (INCOMPLETE: interrupted)",
            }
        )?;
        writeln!(f)?;
        write_table(
            f,
            &[
                ("create", &self.latency.create),
                ("claim", &self.latency.claim),
                ("result", &self.latency.result),
                ("cycle", &self.latency.cycle),
            ],
        )?;
        writeln!(f)?;
        write!(
            f,
            "empty claims {}; errors: create {}, claim {}, result {}",
            self.empty_claims, self.errors.create, self.errors.claim, self.errors.result
        )?;
        if self.foreign_tasks > 0 {
            let leftovers = crate::output::count(self.foreign_tasks, "leftover task");
            write!(f, "; {leftovers} of earlier runs completed")?;
        }
        writeln!(f)
    }
}

/// The latency table: one row per call kind, milliseconds with 2 decimals.
pub(crate) fn write_table(f: &mut fmt::Formatter<'_>, rows: &[(&str, &Summary)]) -> fmt::Result {
    writeln!(
        f,
        "{:<8} {:>8} {:>10} {:>10} {:>10} {:>10}",
        "ms", "count", "p50", "p90", "p99", "max"
    )?;
    for (name, summary) in rows {
        let cell = |value: Option<f64>| value.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
        writeln!(
            f,
            "{:<8} {:>8} {:>10} {:>10} {:>10} {:>10}",
            name,
            summary.count,
            cell(summary.p50_ms),
            cell(summary.p90_ms),
            cell(summary.p99_ms),
            cell(summary.max_ms)
        )?;
    }
    Ok(())
}

/// `codeq bench`: resolves the settings, runs the chosen measurement on a
/// fresh runtime and prints its report (plain text, or JSON with `--json`).
pub fn main(conn: &GlobalArgs, args: &BenchArgs) -> anyhow::Result<Ending> {
    let settings = Settings::from_args(conn, args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let (text, json, ending) = match args.wakeup {
        Some(rounds) => {
            let report = runtime.block_on(wakeup::run(settings, rounds))?;
            (report.to_string(), serde_json::to_string_pretty(&report)?, report.ending)
        }
        None => {
            let report = runtime.block_on(run(settings))?;
            (report.to_string(), serde_json::to_string_pretty(&report)?, report.ending)
        }
    };
    if args.json {
        outln!("{json}");
    } else {
        out!("{text}");
    }
    Ok(ending)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn creds(base: Option<&str>) -> Credentials {
        Credentials {
            base_url: base.map(Into::into),
            producer_token: Some("p".into()),
            worker_token: Some("w".into()),
        }
    }

    #[test]
    fn explicit_tokens_win_and_need_both() {
        let both = choose_connection(None, Some("P"), Some("W"), None).unwrap();
        let one = choose_connection(None, Some("P"), None, None);

        assert_eq!(both, Connection::new(DEFAULT_BASE_URL, "P", "W"));
        assert!(one.is_err());
    }

    #[test]
    fn credentials_file_gives_tokens_and_base_url() {
        let file = creds(Some("http://127.0.0.1:9000"));
        let path = Path::new("d/credentials.json");

        let chosen = choose_connection(None, None, None, Some((Some(&file), path))).unwrap();

        assert_eq!(chosen, Connection::new("http://127.0.0.1:9000", "p", "w"));
    }

    #[test]
    fn credentials_for_another_server_are_not_used() {
        let file = creds(Some("http://127.0.0.1:9000/"));
        let path = Path::new("d/credentials.json");

        let same =
            choose_connection(Some("http://127.0.0.1:9000"), None, None, Some((Some(&file), path)));
        let other =
            choose_connection(Some("http://10.0.0.1:9000"), None, None, Some((Some(&file), path)));

        assert!(same.is_ok());
        assert!(other.is_err());
    }

    #[test]
    fn missing_credentials_file_is_a_configuration_error() {
        let path = Path::new("nowhere/credentials.json");

        let err = choose_connection(None, None, None, Some((None, path))).unwrap_err();

        assert!(err.to_string().contains("nowhere/credentials.json"));
    }

    #[test]
    fn credentials_file_is_parsed_and_absence_is_not_an_error() {
        let dir = std::env::temp_dir().join(format!("codeq-bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("credentials.json");
        std::fs::write(
            &path,
            r#"{"baseUrl":"http://127.0.0.1:8080","producerToken":"p","workerToken":"w"}"#,
        )
        .unwrap();

        let loaded = load_credentials(&path).unwrap().unwrap();
        let absent = load_credentials(&dir.join("absent.json")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();

        assert_eq!(loaded.producer_token.as_deref(), Some("p"));
        assert!(absent.is_none());
    }

    #[test]
    fn payload_has_about_the_requested_size() {
        let run_id = "1234-1700000000000";
        let shared_payload = |bytes| {
            json!({ "run": run_id, "sentUs": 123_456u64, "data": filler(run_id, bytes) })
                .to_string()
        };

        let len = shared_payload(200).len();

        assert!((190..=200).contains(&len), "payload is {len} bytes");
        assert!(shared_payload(10).len() > 10, "tiny sizes keep the envelope");
    }

    fn task_with_payload(payload: &str) -> Task {
        serde_json::from_value(json!({
            "id": "t-1", "command": "bench", "payload": payload, "priority": 0,
            "status": "IN_PROGRESS", "attempts": 1, "maxAttempts": 5,
            "createdAt": "2030-01-01T00:00:00Z", "updatedAt": "2030-01-01T00:00:00Z"
        }))
        .unwrap()
    }

    #[test]
    fn send_time_is_read_back_only_from_this_runs_tasks() {
        let ours = task_with_payload(r#"{"run":"r-1","sentUs":42,"data":"xx"}"#);
        let theirs = task_with_payload(r#"{"run":"r-0","sentUs":42,"data":"xx"}"#);
        let unrelated = task_with_payload(r#"{"jobId":"j-1"}"#);

        assert_eq!(sent_us_of(&ours, "r-1"), Some(42));
        assert_eq!(sent_us_of(&theirs, "r-1"), None);
        assert_eq!(sent_us_of(&unrelated, "r-1"), None);
    }
}
