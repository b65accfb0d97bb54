//! Runs the bench against the real codeQ server (in-process, 127.0.0.1,
//! port 0, its own data directory) in every mode, checking that each runs
//! to completion, counts what it did, and that the server agrees: every
//! task the bench reports completed is finished on the server and nothing
//! is left queued. With `--webhook`, a receiver on 127.0.0.1 gets one
//! callback per completed task.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser as _;
use codeq::bench::{self, Ending, Settings};
use codeq::cli::{Cli, Commands};
use codeq_client::{Client, CreateTask, QueueStats};
use codeq_server::app::{App, Running};
use codeq_server::config::{Config, StaticTokenConfig, TokenKind};
use serde_json::json;

/// Producer with admin rights (the checks below read queue stats).
const PRODUCER: &str = "t-producer";
/// Worker `w1`.
const WORKER: &str = "t-worker";
/// The bench's default queue.
const COMMAND: &str = "bench";

/// The real server, running until [`Server::stop`].
struct Server {
    base: String,
    /// Admin producer and worker: the test's own view of the server.
    client: Client,
    running: Running,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default_for_tests(dir.path());
        config.host = "127.0.0.1".into();
        config.port = 0;
        adjust(&mut config);
        let mut admin = StaticTokenConfig::plain(PRODUCER, TokenKind::Producer, "producer");
        admin.admin = true;
        config.static_tokens =
            vec![admin, StaticTokenConfig::plain(WORKER, TokenKind::Worker, "w1")];
        let running = App::build(config).await.unwrap().spawn().unwrap();
        let base = running.base_url();
        let client =
            Client::new(&base).unwrap().with_producer_token(PRODUCER).with_worker_token(WORKER);
        Self { base, client, running, _dir: dir }
    }

    /// The bench queue's depths.
    async fn queue(&self) -> QueueStats {
        self.client.queue_stats(COMMAND).await.unwrap()
    }

    /// Deletes every finished (completed or failed) task and says how many
    /// there were.
    async fn finished_tasks(&self) -> u64 {
        let outcome = self.client.cleanup(Some(100_000), Some("2100-01-01T00:00:00Z")).await;
        outcome.unwrap().deleted
    }

    /// Asserts that nothing of the bench queue waits or runs any more.
    async fn assert_queue_idle(&self) {
        let stats = self.queue().await;
        assert_eq!((stats.ready, stats.delayed, stats.in_progress, stats.dlq), (0, 0, 0, 0));
    }

    /// Stops the server gracefully; it must shut down cleanly.
    async fn stop(self) {
        self.running.stop().await.unwrap();
    }
}

fn settings_with_tokens(url: &str, producer: &str, worker: &str, extra: &[&str]) -> Settings {
    let mut argv = vec!["codeq", "bench", "--base-url", url];
    argv.extend(["--producer-token", producer, "--worker-token", worker]);
    argv.extend(extra);
    let cli = Cli::try_parse_from(argv).unwrap();
    let Commands::Bench(args) = cli.command else { panic!("expected bench") };
    Settings::from_args(&cli.global, &args).unwrap()
}

fn settings(url: &str, extra: &[&str]) -> Settings {
    settings_with_tokens(url, PRODUCER, WORKER, extra)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_mode_completes_every_task_and_times_each_cycle() {
    let server = Server::start().await;

    let report = bench::run(settings(
        &server.base,
        &["--count", "300", "--producers", "2", "--workers", "4"],
    ))
    .await
    .unwrap();

    assert_eq!(report.ending, Ending::Complete);
    assert_eq!((report.created, report.completed), (300, 300));
    assert_eq!(report.latency.create.count, 300);
    assert_eq!(report.latency.claim.count, 300);
    assert_eq!(report.latency.result.count, 300);
    assert_eq!(report.latency.cycle.count, 300);
    assert_eq!((report.errors.create, report.errors.claim, report.errors.result), (0, 0, 0));
    assert_eq!(report.foreign_tasks, 0);
    assert!(report.cycles_per_second > 0.0);
    server.assert_queue_idle().await;
    assert_eq!(server.finished_tasks().await, 300);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_claim_next_results_bring_the_next_task() {
    let server = Server::start().await;
    // Producers first, then workers find a backlog: most tasks come with
    // a result rather than from a claim.
    let extra = ["--count", "300", "--producers", "4", "--workers", "2", "--claim-next"];

    let report = bench::run(settings(&server.base, &extra)).await.unwrap();

    assert_eq!(report.ending, Ending::Complete);
    assert!(report.claim_next);
    assert_eq!((report.created, report.completed, report.latency.result.count), (300, 300, 300));
    assert!(report.latency.claim.count < 300, "{} claims", report.latency.claim.count);
    assert_eq!((report.errors.create, report.errors.claim, report.errors.result), (0, 0, 0));
    server.assert_queue_idle().await;
    assert_eq!(server.finished_tasks().await, 300);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_mode_times_requests_but_counts_tasks() {
    let server = Server::start().await;
    let extra = ["--mode", "batch", "--batch-size", "40", "--count", "250", "--workers", "3"];

    let report = bench::run(settings(&server.base, &extra)).await.unwrap();

    assert_eq!(report.ending, Ending::Complete);
    assert_eq!((report.created, report.completed), (250, 250));
    // 250 tasks in batches of at most 40: 6 full batches and one of 10.
    assert_eq!(report.latency.create.count, 7);
    assert_eq!(report.latency.cycle.count, 250);
    assert!(report.latency.result.count <= report.latency.claim.count);
    assert_eq!((report.errors.create, report.errors.claim, report.errors.result), (0, 0, 0));
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["mode"], "batch");
    assert_eq!(json["latency"]["cycle"]["count"], 250);
    server.assert_queue_idle().await;
    assert_eq!(server.finished_tasks().await, 250);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duration_mode_stops_producing_and_drains() {
    let server = Server::start().await;
    let extra = ["--duration", "1", "--producers", "1", "--workers", "2"];

    let report = bench::run(settings(&server.base, &extra)).await.unwrap();

    assert_eq!(report.ending, Ending::Complete);
    assert!(report.created > 0);
    assert_eq!(report.completed, report.created);
    server.assert_queue_idle().await;
    assert_eq!(server.finished_tasks().await, report.created);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wakeup_mode_measures_each_round_after_clearing_leftovers() {
    let server = Server::start().await;
    // Tasks of an earlier run, in the way of the first round.
    for n in 0..2 {
        server.client.create_task(&CreateTask::new(COMMAND, json!({ "n": n }))).await.unwrap();
    }

    let report = bench::wakeup::run(settings(&server.base, &[]), 3).await.unwrap();

    assert_eq!(report.ending, Ending::Complete);
    assert_eq!(report.wakeup.count, 3);
    assert_eq!(report.create.count, 3);
    assert_eq!((report.missed, report.leftovers), (0, 2));
    assert!(report.to_string().contains("wakeup"));
    server.assert_queue_idle().await;
    assert_eq!(server.finished_tasks().await, 3 + 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_stops_the_bench_with_the_auth_exit_code() {
    let server = Server::start().await;
    let settings = settings_with_tokens(&server.base, "not-a-token", WORKER, &["--count", "10"]);

    let err = bench::run(settings).await.unwrap_err();

    assert_eq!(codeq::exit::code_for(&err), codeq::exit::AUTHENTICATION);
    let refused = err.chain().find_map(|cause| cause.downcast_ref::<codeq_client::Error>());
    let refused = refused.expect("the client's error is in the chain");
    assert_eq!((refused.status(), refused.code()), (Some(401), Some("invalid_token")));
    server.assert_queue_idle().await;
    assert_eq!(server.finished_tasks().await, 0, "nothing was created");
    server.stop().await;
}

/// A webhook receiver on 127.0.0.1 that answers 200 and keeps each body.
struct Receiver {
    url: String,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Receiver {
    async fn start() -> Self {
        let bodies: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let log = bodies.clone();
        let handler = move |body: axum::body::Bytes| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push(serde_json::from_slice(&body).unwrap());
                axum::http::StatusCode::OK
            }
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(axum::serve(listener, axum::Router::new().fallback(handler)).into_future());
        Self { url, bodies }
    }

    /// Waits until `count` callbacks arrived; returns them.
    async fn wait_for(&self, count: usize) -> Vec<serde_json::Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let bodies = self.bodies.lock().unwrap().clone();
            if bodies.len() >= count {
                return bodies;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {count} callbacks",
                bodies.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_webhook_every_completed_task_calls_back_once() {
    let server = Server::start_with(|config| config.webhook_allow_private_networks = true).await;
    let receiver = Receiver::start().await;
    let extra =
        ["--count", "200", "--producers", "2", "--workers", "4", "--webhook", &receiver.url];

    let report = bench::run(settings(&server.base, &extra)).await.unwrap();

    assert_eq!(report.ending, Ending::Complete);
    assert_eq!((report.created, report.completed), (200, 200));
    assert_eq!(report.webhook.as_deref(), Some(receiver.url.as_str()));
    assert!(report.to_string().contains(&format!("webhook={}", receiver.url)));
    let bodies = receiver.wait_for(200).await;
    let ids: HashSet<&str> = bodies.iter().map(|body| body["taskId"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 200, "one callback per task");
    assert!(
        bodies.iter().all(|body| body["status"] == "COMPLETED" && body["eventType"] == COMMAND)
    );
    server.assert_queue_idle().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_the_server_refuses_stops_the_bench_with_its_reason() {
    // Not local mode and private networks not allowed: a loopback target is refused.
    let server = Server::start().await;
    let extra = ["--count", "10", "--webhook", "http://127.0.0.1:9/hook"];

    let err = bench::run(settings(&server.base, &extra)).await.unwrap_err();

    let refused = err.chain().find_map(|cause| cause.downcast_ref::<codeq_client::Error>());
    let refused = refused.expect("the client's error is in the chain");
    assert_eq!((refused.status(), refused.code()), (Some(400), Some("invalid_field")));
    assert!(refused.to_string().contains("private address"), "{refused}");
    server.assert_queue_idle().await;
    server.stop().await;
}
