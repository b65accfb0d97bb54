//! The client against the real codeQ server (in-process, 127.0.0.1, port 0,
//! its own data directory): status handling, headers, bodies, and which
//! token each kind of call sends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use codeq_client::{
    ClaimRequest, Client, CreateTask, DeadLetterFilter, DeadLetterQuery, DeadLetterSelection,
    Error, NackStatus, QueueSettings, ResultStatus, TaskQuery, TaskStatus,
};
use codeq_server::app::{App, Running};
use codeq_server::config::{Config, StaticTokenConfig, TokenKind};
use serde_json::json;

/// Producer `producer`, with admin rights.
const PRODUCER: &str = "t-producer";
/// Producer `plain-producer`, without admin rights.
const PLAIN_PRODUCER: &str = "t-plain-producer";
/// Worker `worker-1`.
const WORKER: &str = "t-worker";
/// The `sub` of [`WORKER`]: the `workerId` of the tasks it claims.
const WORKER_SUB: &str = "worker-1";
/// A token the server does not know.
const UNKNOWN: &str = "t-unknown";

fn token(token: &str, kind: TokenKind, sub: &str, admin: bool) -> StaticTokenConfig {
    StaticTokenConfig { admin, ..StaticTokenConfig::plain(token, kind, sub) }
}

/// The real server, running until [`Server::stop`].
struct Server {
    base: String,
    running: Running,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// [`Server::start`] with its configuration changed by `adjust`.
    async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), 0, adjust).await
    }

    /// A server on `port` (0: any) over the data directory `dir`.
    async fn start_in(dir: tempfile::TempDir, port: u16, adjust: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::default_for_tests(dir.path());
        config.host = "127.0.0.1".into();
        config.port = port;
        config.static_tokens = vec![
            token(PRODUCER, TokenKind::Producer, "producer", true),
            token(PLAIN_PRODUCER, TokenKind::Producer, "plain-producer", false),
            token(WORKER, TokenKind::Worker, WORKER_SUB, false),
        ];
        adjust(&mut config);
        let running = App::build(config).await.unwrap().spawn().unwrap();
        Self { base: running.base_url(), running, _dir: dir }
    }

    /// A client with `producer` and `worker` as its tokens.
    fn client_with(&self, producer: &str, worker: &str) -> Client {
        Client::new(&self.base).unwrap().with_producer_token(producer).with_worker_token(worker)
    }

    /// A client with the admin producer token and the worker token.
    fn client(&self) -> Client {
        self.client_with(PRODUCER, WORKER)
    }

    /// Stops the server gracefully; it must shut down cleanly.
    async fn stop(self) {
        self.running.stop().await.unwrap();
    }

    /// Stops the server, keeping its port and data directory for
    /// [`Stopped::start`].
    async fn stop_for_a_restart(self) -> Stopped {
        let port = self.base.rsplit_once(':').unwrap().1.parse().unwrap();
        self.running.stop().await.unwrap();
        Stopped { dir: self._dir, port }
    }
}

/// A server's port and data directory while it is stopped.
struct Stopped {
    dir: tempfile::TempDir,
    port: u16,
}

impl Stopped {
    /// The server again, where it was, with what it had stored.
    async fn start(self) -> Server {
        Server::start_in(self.dir, self.port, |_| {}).await
    }
}

#[tokio::test]
async fn create_sends_the_producer_token_and_reports_an_idempotent_replay() {
    let server = Server::start().await;
    let client = server.client();
    let keyed = CreateTask {
        idempotency_key: Some("order-42".into()),
        ..CreateTask::new("RENDER", json!({"n": 1}))
    };

    let first = client.create_task(&keyed).await.unwrap();
    let repeat = client.create_task(&keyed).await.unwrap();
    let unkeyed = client.create_task(&CreateTask::new("RENDER", json!({"n": 2}))).await.unwrap();

    assert!(!first.replayed);
    assert_eq!(first.task.status, TaskStatus::Pending);
    assert_eq!(first.task.idempotency_key.as_deref(), Some("order-42"));
    assert_eq!(first.task.payload_as::<serde_json::Value>().unwrap(), json!({"n": 1}));
    assert!(repeat.replayed, "the same idempotencyKey sent again is a replay");
    assert_eq!(repeat.task.id, first.task.id);
    assert!(!unkeyed.replayed);
    assert_ne!(unkeyed.task.id, first.task.id);
    assert_eq!(client.queue_stats("RENDER").await.unwrap().ready, 2, "the replay created nothing");
    // The producer slot's token is the one sent: a worker token there is
    // refused as not a producer's, although the worker slot holds one.
    let swapped = server.client_with(WORKER, PRODUCER);
    let err = swapped.create_task(&keyed).await.unwrap_err();
    assert_eq!((err.status(), err.code()), (Some(403), Some("not_producer")), "{err:?}");
    server.stop().await;
}

#[tokio::test]
async fn claim_sends_the_worker_token_and_maps_no_content_to_none() {
    let server = Server::start().await;
    let client = server.client();
    let created = client.create_task(&CreateTask::new("RENDER", json!({}))).await.unwrap().task;

    let claimed = client.claim(&ClaimRequest::new(["RENDER"])).await.unwrap().unwrap();
    let drained = client.claim(&ClaimRequest::new(["RENDER"])).await.unwrap();
    let never_used = client.claim(&ClaimRequest::new(["EMPTY"])).await.unwrap();

    assert_eq!(claimed.id, created.id);
    assert_eq!((claimed.status, claimed.attempts), (TaskStatus::InProgress, 1));
    assert_eq!(claimed.worker_id.as_deref(), Some(WORKER_SUB), "claimed under the worker token");
    assert_eq!(drained, None, "the only task is claimed: the queue is empty");
    assert_eq!(never_used, None);
    // A producer token in the worker slot is refused as not a worker's.
    let swapped = server.client_with(WORKER, PRODUCER);
    let err = swapped.claim(&ClaimRequest::new(["RENDER"])).await.unwrap_err();
    assert_eq!((err.status(), err.code()), (Some(403), Some("not_worker")), "{err:?}");
    server.stop().await;
}

#[tokio::test]
async fn reads_use_the_producer_token_else_the_worker_token() {
    let server = Server::start().await;
    let created = server.client().create_task(&CreateTask::new("RENDER", json!({}))).await;
    let id = created.unwrap().task.id;
    let worker_only = Client::new(&server.base).unwrap().with_worker_token(WORKER);

    let by_producer = server.client_with(PRODUCER, UNKNOWN).get_task(&id).await.unwrap();
    let by_worker = worker_only.get_task(&id).await.unwrap();
    let refused = server.client_with(UNKNOWN, WORKER).get_task(&id).await.unwrap_err();

    assert_eq!((by_producer.id.as_str(), by_producer.status), (id.as_str(), TaskStatus::Pending));
    assert_eq!(by_worker, by_producer);
    // With both set, the producer token is sent (and refused) even though
    // the worker token would have been accepted.
    assert_eq!((refused.status(), refused.code()), (Some(401), Some("invalid_token")));
    server.stop().await;
}

#[tokio::test]
async fn error_answers_become_api_errors_with_code_and_message() {
    let server = Server::start().await;
    let client = server.client();

    let missing = client.get_task("0190a0a0-0000-7000-8000-000000000001").await.unwrap_err();
    let invalid = client.create_task(&CreateTask::new("no spaces", json!({}))).await.unwrap_err();

    match missing {
        Error::Api { status, code, message } => {
            assert_eq!(
                (status, code.as_str(), message.as_str()),
                (404, "task_not_found", "task not found")
            );
        }
        other => panic!("expected Api, got {other:?}"),
    }
    match invalid {
        Error::Api { status, code, message } => {
            assert_eq!((status, code.as_str()), (400, "invalid_command"));
            assert!(message.contains("\"no spaces\""), "the message names the value: {message}");
        }
        other => panic!("expected Api, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn nack_sends_attempt_and_reason_and_decodes_the_outcome() {
    let server = Server::start().await;
    let client = server.client();
    client.create_task(&CreateTask::new("RENDER", json!({}))).await.unwrap();
    let task = client.claim(&ClaimRequest::new(["RENDER"])).await.unwrap().unwrap();

    let stale = client.nack(&task.id, task.attempts + 1, Some(7), Some("busy")).await.unwrap_err();
    let outcome = client.nack(&task.id, task.attempts, Some(7), Some("busy")).await.unwrap();

    assert_eq!((stale.status(), stale.code()), (Some(409), Some("stale_attempt")), "{stale:?}");
    assert_eq!((outcome.status, outcome.delay_seconds), (NackStatus::Requeued, 7));
    let requeued = client.get_task(&task.id).await.unwrap();
    assert_eq!(requeued.status, TaskStatus::Pending);
    assert_eq!(requeued.last_reason.as_deref(), Some("busy"));
    assert_eq!(client.queue_stats("RENDER").await.unwrap().delayed, 1);

    // A nack of the last allowed delivery dead-letters the task.
    let last = CreateTask { max_attempts: Some(1), ..CreateTask::new("LAST", json!({})) };
    client.create_task(&last).await.unwrap();
    let task = client.claim(&ClaimRequest::new(["LAST"])).await.unwrap().unwrap();
    let outcome = client.nack(&task.id, task.attempts, None, None).await.unwrap();
    assert_eq!((outcome.status, outcome.delay_seconds), (NackStatus::Dlq, 0));
    server.stop().await;
}

#[tokio::test]
async fn admin_calls_send_the_producer_token_and_queue_stats_also_the_worker_token() {
    let server = Server::start().await;
    let client = server.client();
    let claim = ClaimRequest::new(["RENDER"]);
    // One task in each queue state: in progress, dead-lettered, ready, delayed.
    client.create_task(&CreateTask::new("RENDER", json!({}))).await.unwrap();
    client.claim(&claim).await.unwrap().unwrap();
    let once = CreateTask { max_attempts: Some(1), ..CreateTask::new("RENDER", json!({})) };
    client.create_task(&once).await.unwrap();
    let doomed = client.claim(&claim).await.unwrap().unwrap();
    client.nack(&doomed.id, doomed.attempts, None, None).await.unwrap();
    client.create_task(&CreateTask::new("RENDER", json!({}))).await.unwrap();
    let later = CreateTask { delay_seconds: Some(3600), ..CreateTask::new("RENDER", json!({})) };
    client.create_task(&later).await.unwrap();

    let stats = client.queue_stats("RENDER").await.unwrap();
    let all = client.queues().await.unwrap();
    let not_admin = server.client_with(PLAIN_PRODUCER, WORKER).queue_stats("RENDER").await;
    let producer_only = Client::new(&server.base).unwrap().with_producer_token(PLAIN_PRODUCER);
    let refused = producer_only.queue_stats("RENDER").await;
    let worker_only = Client::new(&server.base).unwrap().with_worker_token(WORKER);
    let as_worker = worker_only.queue_stats("RENDER").await.unwrap();
    let no_producer = worker_only.queues().await;

    assert_eq!(stats.command, "RENDER");
    assert_eq!((stats.ready, stats.delayed, stats.in_progress, stats.dlq), (1, 1, 1, 1));
    assert_eq!(as_worker, stats, "one queue's stats also with a worker token");
    assert_eq!(not_admin.unwrap(), stats, "a producer that is not admin: the worker token");
    assert_eq!(all, vec![stats]);
    let refused = refused.unwrap_err();
    assert_eq!((refused.status(), refused.code()), (Some(403), Some("not_admin")));
    assert!(matches!(no_producer, Err(Error::MissingToken(codeq_client::TokenKind::Producer))));
    server.stop().await;
}

#[tokio::test]
async fn cancels_are_typed_and_a_refusal_keeps_its_code() {
    let server = Server::start().await;
    let client = server.client();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(client.create_task(&CreateTask::new("C", json!({}))).await.unwrap().task.id);
    }

    let one = client.cancel_task(&ids[0], Some("withdrawn")).await.unwrap();
    let again = client.cancel_task(&ids[0], None).await.unwrap_err();
    let by_others = server.client_with(PLAIN_PRODUCER, WORKER).cancel_task(&ids[1], None).await;
    let batch = client.cancel_tasks(&ids, None).await.unwrap();
    let record = client.get_result(&ids[0]).await.unwrap().result;

    assert_eq!((one.status, one.error.as_deref()), (TaskStatus::Cancelled, Some("withdrawn")));
    assert_eq!((again.status(), again.code()), (Some(409), Some("task_terminal")));
    assert_eq!(by_others.unwrap_err().code(), Some("not_owner"));
    assert_eq!(batch[0].as_ref().unwrap_err().code, "task_terminal");
    assert_eq!(batch[1].as_ref().unwrap().status, TaskStatus::Cancelled);
    assert_eq!(batch[2].as_ref().unwrap().task_id, ids[2]);
    assert_eq!(record.status, ResultStatus::Cancelled);
    server.stop().await;
}

#[tokio::test]
async fn queue_settings_pause_and_listings_are_admin_calls() {
    let server = Server::start().await;
    let client = server.client();
    let limits = QueueSettings {
        max_in_flight: Some(2),
        rate_per_second: Some(1.5),
        ..QueueSettings::default()
    };

    let stored = client.set_queue_settings("Q", &limits).await.unwrap();
    let paused = client.pause_queue("Q").await.unwrap();
    let read = client.queue_settings("Q").await.unwrap();
    let stats = client.queue_stats("Q").await.unwrap();
    let resumed = client.resume_queue("Q").await.unwrap();
    for _ in 0..3 {
        client.create_task(&CreateTask::new("Q", json!({"n": 1}))).await.unwrap();
    }
    let query = TaskQuery { command: Some("Q".into()), limit: Some(2), ..TaskQuery::default() };
    let first = client.list_tasks(&query).await.unwrap();
    let rest = TaskQuery { cursor: first.next_cursor.clone(), include_payload: true, ..query };
    let second = client.list_tasks(&rest).await.unwrap();
    let not_admin =
        server.client_with(PLAIN_PRODUCER, WORKER).list_tasks(&TaskQuery::default()).await;

    assert_eq!(stored, limits);
    assert_eq!(paused, QueueSettings { paused: true, ..limits }, "the limits kept");
    assert_eq!((read, stats.settings), (paused, paused));
    assert_eq!(resumed, limits);
    assert_eq!((first.tasks.len(), second.tasks.len()), (2, 1));
    assert_eq!(first.tasks[0].payload, "", "left out unless asked");
    assert_eq!(second.tasks[0].payload_as::<serde_json::Value>().unwrap(), json!({"n": 1}));
    assert_eq!(second.next_cursor, None);
    assert_eq!(not_admin.unwrap_err().code(), Some("not_admin"));
    server.stop().await;
}

#[tokio::test]
async fn dead_letters_are_listed_replayed_and_purged() {
    let server = Server::start().await;
    let client = server.client();
    let mut dead = Vec::new();
    for reason in ["timeout", "bad input", "timeout"] {
        let once = CreateTask { max_attempts: Some(1), ..CreateTask::new("D", json!({})) };
        client.create_task(&once).await.unwrap();
        let task = client.claim(&ClaimRequest::new(["D"])).await.unwrap().unwrap();
        client.nack(&task.id, task.attempts, None, Some(reason)).await.unwrap();
        dead.push(task.id);
    }
    let timeouts =
        DeadLetterFilter { error_contains: Some("timeout".into()), ..DeadLetterFilter::default() };

    let listed = client.dead_letters("D", &DeadLetterQuery::default()).await.unwrap();
    let query = DeadLetterQuery { filter: timeouts.clone(), ..DeadLetterQuery::default() };
    let matching = client.dead_letters("D", &query).await.unwrap();
    let replayed = client
        .replay_dead_letters("D", &DeadLetterSelection::Matching(timeouts), Some(1), None)
        .await
        .unwrap();
    let named = DeadLetterSelection::Ids(vec![dead[1].clone(), dead[2].clone()]);
    let purged = client.purge_dead_letters("D", &named, None).await.unwrap();

    let newest: Vec<&str> = dead.iter().rev().map(String::as_str).collect();
    assert_eq!(listed.tasks.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), newest);
    assert_eq!(matching.tasks.len(), 2);
    assert_eq!((replayed.replayed, replayed.ids.clone()), (1, vec![dead[2].clone()]));
    assert_eq!(client.get_task(&dead[2]).await.unwrap().replays, 1);
    assert_eq!((purged.purged, purged.ids), (1, vec![dead[1].clone()]), "dead[2] was replayed");
    assert_eq!(client.get_task(&dead[1]).await.unwrap_err().code(), Some("task_not_found"));
    server.stop().await;
}

#[tokio::test]
async fn health_and_readiness_are_ok_while_the_server_runs() {
    let server = Server::start().await;
    let client = Client::new(&server.base).unwrap();

    client.healthz().await.unwrap();
    client.readyz().await.unwrap();
    server.stop().await;
    let gone = client.readyz().await.unwrap_err();

    assert!(matches!(gone, Error::Transport(_)), "a stopped server is unreachable: {gone:?}");
}

#[tokio::test]
async fn an_unreachable_server_is_a_transport_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);

    let err = Client::new(url).unwrap().healthz().await.unwrap_err();

    assert!(matches!(err, Error::Transport(_)), "{err:?}");
}

#[tokio::test]
async fn a_server_that_comes_up_while_retrying_answers_the_repeated_read() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let url = format!("http://127.0.0.1:{port}");
    let patient = codeq_client::RetryPolicy {
        max_retries: 8,
        base_delay: std::time::Duration::from_millis(100),
        max_delay: std::time::Duration::from_millis(400),
    };
    let impatient = Client::builder(&url).retry_policy(codeq_client::RetryPolicy::NONE).build();
    let patient = Client::builder(&url).retry_policy(patient).build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default_for_tests(dir.path());
    config.host = "127.0.0.1".into();
    config.port = port;
    config.static_tokens = vec![token(PRODUCER, TokenKind::Producer, "producer", true)];

    let refused = impatient.unwrap().healthz().await;
    let late_start = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        App::build(config).await.unwrap().spawn().unwrap()
    });
    let answered = patient.healthz().await;
    let running = late_start.await.unwrap();

    assert!(matches!(refused, Err(Error::Transport(_))), "{refused:?}");
    assert!(answered.is_ok(), "{answered:?}");
    running.stop().await.unwrap();
}

/// A "server" that reads each request and closes the connection without
/// an answer (the answer lost); counts the requests it read.
fn answer_lost_server() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::Read as _;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = requests.clone();
    std::thread::spawn(move || {
        for connection in listener.incoming() {
            let Ok(mut connection) = connection else { return };
            let _read = connection.read(&mut [0; 4096]);
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    (url, requests)
}

#[tokio::test]
async fn a_result_with_a_claim_whose_answer_was_lost_is_not_repeated_by_the_client() {
    // A repeat would claim a second task while the first stays leased to
    // the worker; a plain result is safe to repeat, and is.
    let policy = codeq_client::RetryPolicy {
        max_retries: 2,
        base_delay: std::time::Duration::from_millis(10),
        max_delay: std::time::Duration::from_millis(20),
    };
    let (url, requests) = answer_lost_server();
    let client =
        Client::builder(&url).retry_policy(policy).build().unwrap().with_worker_token(WORKER);
    let result = codeq_client::SubmitResult::completed(1, json!({}));
    let claim = ClaimRequest::new(["RENDER"]);

    let with_claim = client.submit_result_and_claim("t1", &result, &claim).await;
    let sent_with_claim = requests.swap(0, std::sync::atomic::Ordering::SeqCst);
    let plain = client.submit_result("t1", &result).await;
    let sent_plain = requests.load(std::sync::atomic::Ordering::SeqCst);

    assert!(matches!(with_claim, Err(Error::Transport(_))), "{with_claim:?}");
    assert!(matches!(plain, Err(Error::Transport(_))), "{plain:?}");
    assert_eq!((sent_with_claim, sent_plain), (1, 3), "sent once, and once plus two repeats");
}

/// The claim of a result may long-poll: its wait comes on top of the
/// client's timeout, as for a claim of its own; else the result is stored
/// and the caller told the call failed.
#[tokio::test]
async fn a_result_whose_claim_long_polls_is_not_cut_off_by_the_timeout() {
    let server = Server::start().await;
    let client = Client::builder(&server.base)
        .timeout(std::time::Duration::from_secs(1))
        .build()
        .unwrap()
        .with_producer_token(PRODUCER)
        .with_worker_token(WORKER);
    client.create_task(&CreateTask::new("POLL", json!({}))).await.unwrap();
    let task = client.claim(&ClaimRequest::new(["POLL"])).await.unwrap().unwrap();
    let result = codeq_client::SubmitResult::completed(task.attempts, json!({}));
    let next = ClaimRequest { wait_seconds: Some(2), ..ClaimRequest::new(["POLL"]) };

    let answered = client.submit_result_and_claim(&task.id, &result, &next).await;

    let (record, next) = answered.expect("answered after the 2 s wait, past the 1 s timeout");
    assert_eq!((record.task_id.as_str(), next), (task.id.as_str(), None));
    server.stop().await;
}

/// The server's count of requests to `route` answered `status`.
async fn answered(base: &str, route: &str, status: &str) -> u64 {
    let text = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    let series = format!(
        "codeq_http_requests_total{{method=\"POST\",route=\"{route}\",status=\"{status}\"}} "
    );
    text.lines()
        .find_map(|line| line.strip_prefix(series.as_str()))
        .map_or(0, |count| count.trim().parse().unwrap())
}

/// The server's count of requests answered 503 `overloaded`.
async fn overloaded_answers(base: &str) -> u64 {
    let text = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    let line = text.lines().find(|l| l.starts_with("codeq_admission_rejections_total"));
    line.and_then(|l| l.split_whitespace().last()).map_or(0, |n| n.parse().unwrap())
}

#[tokio::test]
async fn a_503_with_retry_after_is_repeated_no_sooner_than_it_asks() {
    let (server, holder) = overloaded_server().await;
    let base = server.base.clone();
    let refused_before = overloaded_answers(&base).await;

    let patient = Client::builder(&base).build().unwrap().with_producer_token(PRODUCER);
    let started = std::time::Instant::now();
    let call = tokio::spawn(async move { patient.create_task(&keyed("patient")).await });
    // Once the first attempt has been refused, the budget is given back:
    // a repeat 100–200 ms later (the backoff alone) would get through.
    wait_for_refusals(&base, refused_before + 1).await;
    drop(holder);
    let created = call.await.unwrap();
    let waited = started.elapsed();

    assert!(created.is_ok(), "{created:?}");
    assert!(waited >= std::time::Duration::from_secs(1), "repeated after {waited:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_answer_is_repeated_even_for_calls_that_are_not_safe_to_repeat() {
    // 503 `overloaded` means nothing was done: an unkeyed create or batch,
    // which a lost answer would not let the client repeat, is repeated.
    let (server, holder) = overloaded_server().await;
    let base = server.base.clone();
    let refused_before = overloaded_answers(&base).await;

    let patient = Client::builder(&base).build().unwrap().with_producer_token(PRODUCER);
    let unkeyed = CreateTask::new("RETRY_AFTER", json!({"n": 1}));
    let mixed_batch = vec![keyed("batch-1"), CreateTask::new("RETRY_AFTER", json!({"n": 2}))];
    let (single_client, batch_client) = (patient.clone(), patient);
    let single_call = tokio::spawn(async move { single_client.create_task(&unkeyed).await });
    let batch_call =
        tokio::spawn(async move { batch_client.create_tasks_batch(&mixed_batch).await });
    wait_for_refusals(&base, refused_before + 2).await;
    drop(holder);

    let created = single_call.await.unwrap().expect("the unkeyed create was repeated");
    assert!(!created.replayed);
    let items = batch_call.await.unwrap().expect("the batch was repeated and got through");
    assert!(items.iter().all(|item| item.is_ok()), "{items:?}");
    server.stop().await;
}

/// A create of `RETRY_AFTER` with idempotency key `key`.
fn keyed(key: &str) -> CreateTask {
    CreateTask { idempotency_key: Some(key.into()), ..CreateTask::new("RETRY_AFTER", json!({})) }
}

/// A server whose whole request-body budget is held by a result batch of
/// the largest body, most of it sent (a body holds budget for what it
/// sent) and the rest held back (the stream returned): any other body gets
/// 503 `overloaded`, `Retry-After: 1`, until the stream is dropped.
async fn overloaded_server() -> (Server, tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt as _;

    let mut largest = 0;
    let server = Server::start_with(|config| {
        // Small item limits: the largest body is a few MB.
        config.max_payload_bytes = 1024;
        config.max_artifact_bytes = 1024;
        let limits = codeq_server::http::body::BodyLimits::new(
            config.max_payload_bytes,
            config.max_artifact_bytes,
        );
        largest = limits.largest().1;
        config.max_body_bytes_in_flight = largest as u64;
    })
    .await;
    let head = format!(
        "POST /v1/codeq/tasks/batch/results HTTP/1.1\r\nHost: codeq\r\n\
         Authorization: Bearer {WORKER}\r\nContent-Type: application/json\r\n\
         Content-Length: {largest}\r\n\r\n{{\"results\":["
    );
    // Past the last doubling step below the whole length: all of it held.
    let most = " ".repeat(largest * 2 / 3);
    let address = server.base.trim_start_matches("http://").to_owned();
    let hold = || async {
        let mut holder = tokio::net::TcpStream::connect(&address).await.unwrap();
        holder.write_all(head.as_bytes()).await.unwrap();
        holder.write_all(most.as_bytes()).await.unwrap();
        holder
    };
    let mut holder = hold().await;
    let impatient = Client::builder(&server.base)
        .retry_policy(codeq_client::RetryPolicy::NONE)
        .build()
        .unwrap()
        .with_producer_token(PRODUCER);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match impatient.create_task(&keyed("probe")).await {
            Err(Error::Api { status: 503, code, .. }) if code == "overloaded" => break,
            other => assert!(std::time::Instant::now() < deadline, "never overloaded: {other:?}"),
        }
        // A probe that held a little of the budget as the holder's head
        // arrived made the holder's reservation fail: it was answered
        // (503) and holds nothing. Hold again.
        if holder.try_read(&mut [0; 64]).is_ok() {
            holder = hold().await;
        }
    }
    (server, holder)
}

/// Waits until the server has answered `count` requests 503 `overloaded`.
async fn wait_for_refusals(base: &str, count: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while overloaded_answers(base).await < count {
        assert!(std::time::Instant::now() < deadline, "the first attempts never came");
        tokio::task::yield_now().await;
    }
}

// ---- Worker ---------------------------------------------------------------

mod worker {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use codeq_client::worker::Reported;
    use codeq_client::{CreateTask, Outcome, TaskStatus, Worker};
    use serde_json::json;
    use tokio::sync::{Notify, mpsc};

    use super::{Server, UNKNOWN};

    /// Handlers running right now, and the most seen at once.
    #[derive(Default)]
    struct Gauge {
        now: AtomicUsize,
        peak: AtomicUsize,
    }

    impl Gauge {
        fn enter(&self) {
            let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak.fetch_max(now, Ordering::SeqCst);
        }
        fn leave(&self) {
            self.now.fetch_sub(1, Ordering::SeqCst);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pool_of_four_completes_every_task_once_at_most_four_at_a_time() {
        let server = Server::start().await;
        let client = server.client();
        let mut ids = Vec::new();
        for n in 0..12 {
            ids.push(
                client
                    .create_task(&CreateTask::new("POOL", json!({"n": n})))
                    .await
                    .unwrap()
                    .task
                    .id,
            );
        }
        let gauge = Arc::new(Gauge::default());
        let seen = Arc::new(Mutex::new(HashMap::<String, u32>::new()));
        let worker = Worker::new(client.clone(), ["POOL"]).concurrency(4).wait_seconds(1);
        let stop = worker.stop_handle();
        let (handler_gauge, handler_seen) = (Arc::clone(&gauge), Arc::clone(&seen));

        let running = tokio::spawn(worker.run(move |task| {
            let (gauge, seen) = (Arc::clone(&handler_gauge), Arc::clone(&handler_seen));
            async move {
                gauge.enter();
                *seen.lock().unwrap().entry(task.id.clone()).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
                gauge.leave();
                Outcome::Completed(
                    json!({"n": task.payload_as::<serde_json::Value>().unwrap()["n"]}),
                )
            }
        }));
        while seen.lock().unwrap().len() < ids.len() || gauge.now.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.stop();
        let summary = running.await.unwrap().unwrap();

        assert_eq!((summary.completed, summary.total()), (12, 12));
        assert!(seen.lock().unwrap().values().all(|&n| n == 1), "each task handled once");
        let peak = gauge.peak.load(Ordering::SeqCst);
        assert!((2..=4).contains(&peak), "ran {peak} at once");
        for id in &ids {
            assert_eq!(client.get_task(id).await.unwrap().status, TaskStatus::Completed);
        }
        server.stop().await;
    }

    /// A worker running a handler that says when it has started, and
    /// completes with its result when told to finish.
    struct Held {
        started: Arc<Notify>,
        finish: Arc<Notify>,
        running: tokio::task::JoinHandle<Result<codeq_client::worker::Summary, super::Error>>,
    }

    fn run_held(worker: Worker, result: serde_json::Value) -> Held {
        let (started, finish) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let (handler_started, handler_finish) = (Arc::clone(&started), Arc::clone(&finish));
        let running = tokio::spawn(worker.run(move |_task| {
            let (started, finish) = (Arc::clone(&handler_started), Arc::clone(&handler_finish));
            let result = result.clone();
            async move {
                started.notify_one();
                finish.notified().await;
                Outcome::Completed(result)
            }
        }));
        Held { started, finish, running }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_result_is_sent_again_until_the_restarted_server_takes_it() {
        let server = Server::start().await;
        let client = server.client();
        let task = client.create_task(&CreateTask::new("RESTART", json!({}))).await.unwrap().task;
        let (retried, mut retries) = mpsc::unbounded_channel();
        // A 3 s lease, renewed every second while the handler runs.
        let worker = Worker::new(client.clone(), ["RESTART"])
            .once(true)
            .wait_seconds(1)
            .lease_seconds(3)
            .on_result_retry(move |retry| {
                let _ = retried.send((retry.task_id.to_owned(), retry.error.to_string()));
            });
        let Held { started, finish, running } = run_held(worker, json!({ "done": true }));

        started.notified().await;
        let claimed = std::time::Instant::now();
        let first_lease = client.get_task(&task.id).await.unwrap().lease_until;
        // The result is sent after the lease the claim gave has ended: the
        // worker may re-send it only because heartbeats moved its lease.
        while std::time::Instant::now() < claimed + Duration::from_millis(3300) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let renewed_lease = client.get_task(&task.id).await.unwrap().lease_until;
        assert!(renewed_lease > first_lease, "{renewed_lease:?} after {first_lease:?}");
        let stopped = server.stop_for_a_restart().await;
        finish.notify_one();
        let retry = tokio::time::timeout(Duration::from_secs(30), retries.recv()).await;
        let (retried_id, error) = retry.expect("no result was sent again").unwrap();
        let server = stopped.start().await;
        let summary = running.await.unwrap().unwrap();

        assert_eq!(retried_id, task.id);
        assert!(error.contains("request failed"), "{error}");
        assert_eq!((summary.completed, summary.report_failed), (1, 0));
        let stored = client.get_task(&task.id).await.unwrap();
        assert_eq!((stored.status, stored.attempts), (TaskStatus::Completed, 1));
        let result = client.get_result(&task.id).await.unwrap();
        assert_eq!(result.result.result, Some(json!({ "done": true }).into()));
        server.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_result_is_not_sent_again_past_its_lease() {
        let server = Server::start().await;
        let client = server.client();
        client.create_task(&CreateTask::new("GONE", json!({}))).await.unwrap();
        let worker =
            Worker::new(client.clone(), ["GONE"]).once(true).wait_seconds(1).lease_seconds(1);
        let Held { started, finish, running } = run_held(worker, json!({}));

        started.notified().await;
        let _stopped = server.stop_for_a_restart().await;
        finish.notify_one();
        let stopped_at = std::time::Instant::now();
        // The server never comes back: the worker gives up once the lease
        // it held has ended (the task is then another worker's to take).
        let summary = tokio::time::timeout(Duration::from_secs(30), running).await;
        let summary = summary.expect("the result was sent again past the lease").unwrap().unwrap();
        assert_eq!((summary.completed, summary.report_failed), (0, 1));
        let gave_up_after = stopped_at.elapsed();
        assert!(gave_up_after < Duration::from_millis(1500), "gave up after {gave_up_after:?}");
    }

    /// Slots claim as fast as handlers nack while tasks are ready, so a
    /// stop nearly always meets a claim in flight. A task it brings must
    /// be given back, not left leased to nobody until its lease ends (and
    /// then dead-lettered, with `maxAttempts: 1`, without ever running).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stop_leaves_no_task_leased_to_nobody() {
        let server = Server::start().await;
        let client = server.client();
        for round in 0..10 {
            let command = format!("STOP{round}");
            for _ in 0..20 {
                let task =
                    CreateTask { max_attempts: Some(1), ..CreateTask::new(&command, json!({})) };
                client.create_task(&task).await.unwrap();
            }
            let handled = Arc::new(AtomicUsize::new(0));
            let worker = Worker::new(client.clone(), [command.clone()]).concurrency(4);
            let stop = worker.stop_handle();
            let counted = handled.clone();
            let running = tokio::spawn(worker.run(move |_task| {
                counted.fetch_add(1, Ordering::SeqCst);
                async { Outcome::Retry("later".into()) }
            }));
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while handled.load(Ordering::SeqCst) < 8 {
                assert!(std::time::Instant::now() < deadline, "round {round}: too few handled");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            stop.stop();
            running.await.unwrap().unwrap();
            let stats = client.queue_stats(&command).await.unwrap();
            assert_eq!(stats.in_progress, 0, "round {round}: a task was left leased");
        }
        server.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_handler_nacks_its_task_and_the_other_slots_go_on() {
        a_panicking_handler(false).await;
    }

    /// Work done in the handler's call, before the future it returns (say,
    /// parsing the payload), may panic too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_handler_panicking_before_its_future_nacks_its_task_and_the_other_slots_go_on() {
        a_panicking_handler(true).await;
    }

    async fn a_panicking_handler(in_the_call: bool) {
        let server = Server::start().await;
        let client = server.client();
        let doomed = CreateTask::new("PANIC", json!({ "panic": true }));
        let doomed = client.create_task(&doomed).await.unwrap().task;
        let fine = client.create_task(&CreateTask::new("PANIC", json!({}))).await.unwrap().task;
        let worker = Worker::new(client.clone(), ["PANIC"]).concurrency(2).wait_seconds(1);
        let stop = worker.stop_handle();
        let running = tokio::spawn(worker.run(move |task| {
            let payload: serde_json::Value = task.payload_as().unwrap();
            let doomed = payload.get("panic").is_some();
            assert!(!(doomed && in_the_call), "boom");
            async move {
                assert!(!doomed, "boom");
                Outcome::Completed(json!({}))
            }
        }));
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while client.get_task(&fine.id).await.unwrap().status != TaskStatus::Completed
            || client.get_task(&doomed.id).await.unwrap().attempts == 0
            || client.get_task(&doomed.id).await.unwrap().status == TaskStatus::InProgress
        {
            assert!(std::time::Instant::now() < deadline, "the tasks were not both handled");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.stop();
        let summary = running.await.unwrap().unwrap();

        assert!(summary.completed >= 1 && summary.nacked >= 1, "{summary:?}");
        let nacked = client.get_task(&doomed.id).await.unwrap();
        let reason = nacked.last_reason.unwrap_or_default();
        assert!(reason.starts_with("the handler panicked: boom"), "{reason}");
        server.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_a_long_poll_an_empty_queue_is_asked_about_twice_a_second_or_so() {
        let server = Server::start().await;
        let worker = Worker::new(server.client(), ["EMPTY"]).wait_seconds(0);
        let stop = worker.stop_handle();
        let running = tokio::spawn(worker.run(|_task| async { Outcome::Abandon }));
        // A second of an empty queue.
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop.stop();
        running.await.unwrap().unwrap();

        let claims = super::answered(&server.base, "/v1/codeq/tasks/claim", "204").await;
        assert!((1..=8).contains(&claims), "{claims} empty claims in a second");
        server.stop().await;
    }

    #[tokio::test]
    async fn a_token_that_cannot_be_sent_ends_the_worker_at_once() {
        let server = Server::start().await;
        let client = super::Client::new(&server.base).unwrap().with_worker_token("t-worker\n");
        let worker = Worker::new(client, ["X"]).wait_seconds(1);
        let ended = tokio::time::timeout(
            Duration::from_secs(10),
            worker.run(|_task| async { Outcome::Abandon }),
        )
        .await
        .expect("the worker kept retrying a request it cannot build");
        assert!(matches!(ended, Err(super::Error::Transport(_))), "{ended:?}");
        server.stop().await;
    }

    #[tokio::test]
    async fn stop_lets_the_running_handler_finish_and_abandon_gives_the_task_back() {
        let server = Server::start().await;
        let client = server.client();
        let finished = client.create_task(&CreateTask::new("STOP", json!({}))).await.unwrap().task;
        let worker = Worker::new(client.clone(), ["STOP"]).wait_seconds(1);
        let stop = worker.stop_handle();
        let reports = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&reports);
        let worker = worker.on_task(move |report| log.lock().unwrap().push(report.reported));
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let started_tx = Arc::new(Mutex::new(Some(started_tx)));

        let running = tokio::spawn(worker.run(move |_task| {
            let started = started_tx.lock().unwrap().take();
            async move {
                if let Some(started) = started {
                    let _ = started.send(());
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
                Outcome::Completed(json!({"finished": true}))
            }
        }));
        started_rx.await.unwrap();
        stop.stop();
        let summary = running.await.unwrap().unwrap();

        assert_eq!(summary.completed, 1, "the running handler finished after stop");
        assert_eq!(*reports.lock().unwrap(), [Reported::Completed]);
        assert_eq!(client.get_task(&finished.id).await.unwrap().status, TaskStatus::Completed);

        let given_back =
            client.create_task(&CreateTask::new("STOP", json!({}))).await.unwrap().task;
        let worker = Worker::new(client.clone(), ["STOP"]).wait_seconds(1);
        let stop = worker.stop_handle();
        let running = tokio::spawn(worker.run(|_task| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Outcome::Completed(json!({}))
        }));
        while client.get_task(&given_back.id).await.unwrap().status != TaskStatus::InProgress {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.abandon();
        let summary = running.await.unwrap().unwrap();
        let task = client.get_task(&given_back.id).await.unwrap();

        assert_eq!(summary.abandoned, 1);
        assert_eq!((task.status, task.attempts), (TaskStatus::Pending, 1));
        server.stop().await;
    }

    #[tokio::test]
    async fn a_refused_worker_token_ends_the_run_with_the_auth_error() {
        let server = Server::start().await;
        let client = server.client_with(super::PRODUCER, UNKNOWN);

        let err =
            Worker::new(client, ["X"]).concurrency(3).run(|_task| async { Outcome::Abandon }).await;

        assert_eq!(err.unwrap_err().status(), Some(401));
        server.stop().await;
    }
}
