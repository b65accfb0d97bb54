//! Storage faults, over HTTP: the embedded store runs on `FaultFs`, which
//! holds back, fails or forgets I/O. Nothing is answered before the fsync
//! of what it shows; a failed fsync or a full disk answers every caller,
//! is never retried, and the server exits; a power loss (only synced bytes
//! kept) loses no acknowledged change — and the same test catches a
//! missing fsync.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use codeq_core::TaskId;
use codeq_server::config::Durability;
use codeq_server::store::embedded::log::fault::FaultFs;
use codeq_server::store::embedded::log::{LogOptions, OpenError};
use codeq_server::store::embedded::{EmbeddedOptions, EmbeddedStore};
use codeq_server::store::{Signals, Store};
use reqwest::Method;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::helpers::{PRODUCER, TestApp, WORKER};

async fn spawn(fs: &FaultFs) -> (TestApp, Arc<EmbeddedStore>) {
    spawn_with(fs, EmbeddedOptions::new(Durability::Fsync)).await
}

async fn spawn_with(fs: &FaultFs, options: EmbeddedOptions) -> (TestApp, Arc<EmbeddedStore>) {
    let dir = tempfile::tempdir().unwrap();
    TestApp::start_on(Arc::new(fs.clone()), options, dir, |config| {
        // Completed tasks are deleted within a second: compaction has
        // dead records to reclaim during a power-cut run.
        config.retention_seconds = 0;
        config.cleanup_interval_seconds = 1;
    })
    .await
}

/// Segments of 16 KiB and compaction above 64 KiB: a power-cut run rolls
/// segments and compacts while it goes.
fn rolling() -> EmbeddedOptions {
    let log = LogOptions { segment_bytes: 16 * 1024, ..LogOptions::new(Durability::Fsync) };
    EmbeddedOptions {
        log,
        compact_above_bytes: 64 * 1024,
        ..EmbeddedOptions::new(Durability::Fsync)
    }
}

/// Polls `condition` until it holds (60 s at most: a bound on a hang, not
/// a timing; a loaded machine may need long).
async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Holds `fs`'s syncs back until it goes, or until the test opens the
/// gate itself: a failing test opens it too, so its server can stop
/// instead of waiting for ever on a held sync.
struct GateClosed(FaultFs);

impl GateClosed {
    fn new(fs: &FaultFs) -> Self {
        fs.close_gate();
        Self(fs.clone())
    }
}

impl Drop for GateClosed {
    fn drop(&mut self) {
        self.0.open_gate();
    }
}

/// Status, headers and JSON body of a finished background request.
async fn reply(
    handle: tokio::task::JoinHandle<reqwest::Response>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = handle.await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.json().await.unwrap_or_default())
}

/// The `codeq_storage_up` sample of one scrape, and its status.
async fn scrape_storage_up(app: &TestApp) -> (u16, String) {
    let response = app.http.get(format!("{}/metrics", app.base)).send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let up = text.lines().find(|line| line.starts_with("codeq_storage_up ")).unwrap_or("none");
    (status, up.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_while_storage_hangs_answers_in_time_without_the_depths() {
    let fs = FaultFs::new();
    let (app, store) = spawn(&fs).await;
    app.create_simple("held").await;
    assert_eq!(scrape_storage_up(&app).await, (200, "codeq_storage_up 1".to_owned()));

    // A create waits on a held fsync: the depths (read once durable) wait too.
    let _gate = GateClosed::new(&fs);
    let create = app.spawn_post("/tasks", PRODUCER, json!({ "command": "held", "payload": {} }));
    wait_until("the create waits", || store.durability_waiters() >= 1).await;
    let started = std::time::Instant::now();
    let scraped = scrape_storage_up(&app).await;
    let waited = started.elapsed();
    fs.open_gate();
    let (status, _, _) = reply(create).await;

    assert_eq!(scraped, (200, "codeq_storage_up 0".to_owned()));
    assert!(waited < Duration::from_secs(5), "the scrape waited {waited:?}");
    assert_eq!(status, 202);
    assert_eq!(scrape_storage_up(&app).await, (200, "codeq_storage_up 1".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_answer_leaves_before_the_fsync_of_the_state_it_shows() {
    let fs = FaultFs::new();
    let (app, store) = spawn(&fs).await;
    let id = app.create_simple("gated").await;
    app.claim_ok(WORKER, &["gated"]).await;

    let _gate = GateClosed::new(&fs);
    let result = json!({ "status": "COMPLETED", "result": { "ok": 1 }, "attempt": 1 });
    let original = app.spawn_post(&format!("/tasks/{id}/result"), WORKER, result.clone());
    wait_until("the result's fsync is held", || fs.syncs_waiting() >= 1).await;
    let keyed = json!({ "command": "gated", "payload": {}, "idempotencyKey": "k1" });
    let create = app.spawn_post("/tasks", PRODUCER, keyed.clone());
    wait_until("the create waits", || store.durability_waiters() >= 2).await;
    let replay = app.spawn_post("/tasks", PRODUCER, keyed);
    let repeat = app.spawn_post(&format!("/tasks/{id}/result"), WORKER, result);
    let read = {
        let request =
            app.http.get(format!("{}/v1/codeq/tasks/{id}", app.base)).bearer_auth(PRODUCER);
        tokio::spawn(async move { request.send().await.unwrap() })
    };
    wait_until("all five answers wait for durability", || store.durability_waiters() >= 5).await;
    for (name, handle) in [
        ("result", &original),
        ("create", &create),
        ("replay", &replay),
        ("repeat", &repeat),
        ("read", &read),
    ] {
        assert!(!handle.is_finished(), "the {name} was answered before its fsync");
    }

    fs.open_gate();
    let (status, _, stored) = reply(original).await;
    assert_eq!(status, 200);
    let (status, _, repeated) = reply(repeat).await;
    assert_eq!((status, &repeated), (200, &stored));
    let (status, _, created) = reply(create).await;
    assert_eq!(status, 202);
    let (status, headers, replayed) = reply(replay).await;
    assert_eq!((status, replayed["id"].as_str()), (202, created["id"].as_str()));
    assert_eq!(headers["idempotent-replayed"], "true");
    let (status, _, task) = reply(read).await;
    assert_eq!((status, task["status"].as_str()), (200, Some("COMPLETED")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_fails_every_waiter_is_not_retried_and_the_server_exits() {
    let fs = FaultFs::new();
    let (mut app, store) = spawn(&fs).await;
    app.create_simple("before").await;
    let _gate = GateClosed::new(&fs);
    let creates: Vec<_> = (0..3)
        .map(|n| {
            app.spawn_post(
                "/tasks",
                PRODUCER,
                json!({ "command": "doomed", "payload": { "n": n } }),
            )
        })
        .collect();
    wait_until("the three creates wait", || store.durability_waiters() >= 3).await;
    wait_until("a round waits for its fsync", || fs.syncs_waiting() == 1).await;
    fs.fail_syncs_after(0);
    let started = fs.syncs_started(); // the held one included
    fs.open_gate();

    for create in creates {
        let (status, headers, body) = reply(create).await;
        assert_eq!((status, body["code"].as_str()), (503, Some("storage_unavailable")), "{body}");
        assert!(headers.contains_key("retry-after"));
    }
    let health = app.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(health.status, 503);
    let exited = app.stopped_within(Duration::from_secs(2)).await;
    assert!(exited.is_err(), "the server must end with an error once storage failed");
    assert_eq!(fs.syncs_started(), started, "the failed fsync was retried, or more was synced");

    let (restarted, _dir) = reopen(app, store).await;
    let queues = restarted.all_queue_stats().await.unwrap();
    assert!(queues.iter().any(|q| q.command.as_str() == "before"), "{queues:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_507_to_its_callers_and_the_server_exits() {
    let fs = FaultFs::new();
    let (mut app, store) = spawn(&fs).await;
    fs.fail_writes_after_bytes(10);
    let full = app.post("/tasks", PRODUCER, json!({ "command": "full", "payload": {} })).await;
    assert_eq!((full.status, full.code()), (507, "insufficient_storage"), "{:?}", full.body);
    let after = app.post("/tasks", PRODUCER, json!({ "command": "full", "payload": {} })).await;
    assert_eq!((after.status, after.code()), (503, "storage_unavailable"));
    assert!(app.stopped_within(Duration::from_secs(2)).await.is_err());

    let (restarted, dir) = reopen(app, store).await;
    assert!(restarted.all_queue_stats().await.unwrap().is_empty(), "the refused task is not there");
    let torn = std::fs::read_dir(dir.path().join("store")).unwrap().filter_map(Result::ok);
    assert!(
        torn.into_iter().any(|entry| entry.file_name().to_string_lossy().starts_with("torn-")),
        "the cut-short write was set aside"
    );
}

/// Opens the store of a server that stopped, as a restart would: once the
/// old process's last references are gone (its lock with them).
async fn reopen(
    app: TestApp,
    store: Arc<EmbeddedStore>,
) -> (Arc<EmbeddedStore>, tempfile::TempDir) {
    let data = app.dir_after_stop();
    let dir = data.path().join("store");
    drop(store);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match EmbeddedStore::open(&dir, Durability::Fsync, Arc::new(Signals::new())) {
            Ok(store) => return (store, data),
            Err(OpenError::InUse(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(error) => panic!("a restart does not recover: {error}"),
        }
    }
}

/// What the server acknowledged: created tasks and stored results.
#[derive(Default, Clone)]
struct Acked {
    created: HashSet<String>,
    completed: HashSet<String>,
}

/// Producers (one of them creating batches, so that rounds span several
/// pages) and workers until `stop`; records every acknowledgement.
async fn workload(app: &TestApp, acked: Arc<Mutex<Acked>>, stop: CancellationToken) {
    let mut jobs = tokio::task::JoinSet::new();
    {
        let (http, base, acked, stop) =
            (app.http.clone(), app.base.clone(), acked.clone(), stop.clone());
        jobs.spawn(async move {
            let item = json!({ "command": "power", "payload": { "pad": "x".repeat(300) } });
            loop {
                let send = http
                    .post(format!("{base}/v1/codeq/tasks/batch"))
                    .bearer_auth(PRODUCER)
                    .json(&json!({ "tasks": vec![item.clone(); 40] }))
                    .send();
                let response =
                    tokio::select! { r = send => r.unwrap(), () = stop.cancelled() => return };
                let body: Value = response.json().await.unwrap();
                let mut acked = acked.lock().unwrap();
                for item in body["results"].as_array().unwrap() {
                    acked.created.insert(item["task"]["id"].as_str().unwrap().to_string());
                }
            }
        });
    }
    for producer in 0..4 {
        let (http, base, acked, stop) =
            (app.http.clone(), app.base.clone(), acked.clone(), stop.clone());
        jobs.spawn(async move {
            for n in 0.. {
                let send = http
                    .post(format!("{base}/v1/codeq/tasks"))
                    .bearer_auth(PRODUCER)
                    .json(&json!({ "command": "power", "payload": { "p": producer, "n": n } }))
                    .send();
                let response =
                    tokio::select! { r = send => r.unwrap(), () = stop.cancelled() => return };
                let task: Value = response.json().await.unwrap();
                acked.lock().unwrap().created.insert(task["id"].as_str().unwrap().to_string());
            }
        });
    }
    for _ in 0..4 {
        let (http, base, acked, stop) =
            (app.http.clone(), app.base.clone(), acked.clone(), stop.clone());
        jobs.spawn(async move {
            loop {
                let work = async {
                    let claim = http
                        .post(format!("{base}/v1/codeq/tasks/claim"))
                        .bearer_auth(WORKER)
                        .json(&json!({ "commands": ["power"], "waitSeconds": 1 }))
                        .send()
                        .await
                        .unwrap();
                    if claim.status() != 200 {
                        return;
                    }
                    let task: Value = claim.json().await.unwrap();
                    let id = task["id"].as_str().unwrap().to_string();
                    let done = http
                        .post(format!("{base}/v1/codeq/tasks/{id}/result"))
                        .bearer_auth(WORKER)
                        .json(&json!({ "status": "COMPLETED", "result": {}, "attempt": task["attempts"] }))
                        .send()
                        .await
                        .unwrap();
                    if done.status() == 200 {
                        acked.lock().unwrap().completed.insert(id);
                    }
                };
                tokio::select! { () = work => {}, () = stop.cancelled() => return }
            }
        });
    }
    while jobs.join_next().await.is_some() {}
}

/// Runs the workload on `fs`, cuts the power in the middle of it (keeps
/// only synced bytes), recovers from that image and lists every
/// acknowledged change missing from it.
async fn changes_lost_by_a_power_cut(fs: FaultFs, configure: impl FnOnce(&FaultFs)) -> Vec<String> {
    let (app, _store) = spawn_with(&fs, rolling()).await;
    configure(&fs);
    let acked = Arc::new(Mutex::new(Acked::default()));
    let stop = CancellationToken::new();
    let load = {
        let (acked, stop) = (acked.clone(), stop.clone());
        let app = &app;
        async move { workload(app, acked, stop).await }
    };
    let cut = async {
        wait_until("enough was acknowledged", || {
            let acked = acked.lock().unwrap();
            acked.created.len() >= 2_000 && acked.completed.len() >= 600
        })
        .await;
        // Cut while a round is written and not yet synced.
        let _gate = GateClosed::new(&fs);
        wait_until("a round waits for its fsync", || fs.syncs_waiting() >= 1).await;
        let before_cut = acked.lock().unwrap().clone();
        let image = tempfile::tempdir().unwrap();
        fs.crash_image(&app.dir.path().join("store"), &image.path().join("store")).unwrap();
        stop.cancel();
        fs.open_gate();
        (before_cut, image)
    };
    let ((), (acked, image)) = tokio::join!(load, cut);

    let signals = Arc::new(Signals::new());
    let store = match EmbeddedStore::open(&image.path().join("store"), Durability::Fsync, signals) {
        Ok(store) => store,
        Err(refused) => return vec![format!("recovery refused the image: {refused}")],
    };
    // A completed task may have been deleted by retention since (which is
    // no loss); a task that is there must have its result.
    let mut lost = Vec::new();
    for id in &acked.created {
        let task = store.get_task(id.parse::<TaskId>().unwrap()).await.unwrap();
        if task.is_none() && !acked.completed.contains(id) {
            lost.push(format!("created task {id}"));
        }
    }
    for id in &acked.completed {
        let id_ = id.parse::<TaskId>().unwrap();
        let present = store.get_task(id_).await.unwrap().is_some();
        if present && store.get_result(id_).await.unwrap().is_none() {
            lost.push(format!("result of {id}"));
        }
    }
    lost
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_loses_no_acknowledged_change() {
    let lost = changes_lost_by_a_power_cut(FaultFs::new(), |_| {}).await;
    assert!(
        lost.is_empty(),
        "{} acknowledged changes lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_with_pages_written_back_out_of_order_loses_nothing() {
    let lost = changes_lost_by_a_power_cut(FaultFs::new(), |fs| fs.scramble_unsynced(true)).await;
    assert!(
        lost.is_empty(),
        "{} acknowledged changes lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_power_cut_test_catches_a_missing_fsync() {
    let lost = changes_lost_by_a_power_cut(FaultFs::new(), |fs| fs.set_sync_noop(true)).await;
    assert!(!lost.is_empty(), "with fsync a no-op, a power cut must lose acknowledged changes");
}
