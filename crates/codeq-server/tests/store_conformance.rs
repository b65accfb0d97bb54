//! The `Store` conformance suite: the same behaviour, checked on every
//! backend. Each backend instantiates the whole suite with
//! `conformance_suite!(module_name, harness)`, where the harness opens the
//! backend (again, for restart tests) on its own state.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::Arc;

use codeq_core::lifecycle::Submission;
use codeq_core::{
    Command, DeliveryMode, JsonText, Priority, QueueSettings, ResultStatus, Subscription, Task,
    TaskId, TaskState, TaskStatus, Timestamp,
};
use codeq_server::config::Durability;
use codeq_server::store::embedded::EmbeddedStore;
use codeq_server::store::redis::{RedisStore, TimeSource};
use codeq_server::store::{
    CallbackOutcome, ClaimSpec, CommandFilter, Completed, Completion, Created,
    DEFAULT_MAX_COMMANDS, DeadLetterFilter, Expiry, Fence, LeaseEnd, Retried, SettledCallback,
    Signals, Store, StoreError, TransitionError,
};

/// Opens a backend on state that survives reopening.
trait Harness: Send + Sync {
    /// Opens it, announcing ready work through `signals`.
    fn open_signalled(&self, signals: Arc<Signals>) -> Arc<dyn Store>;

    fn open(&self) -> Arc<dyn Store> {
        self.open_signalled(Arc::new(Signals::new()))
    }
}

struct Embedded(tempfile::TempDir);

impl Harness for Embedded {
    fn open_signalled(&self, signals: Arc<Signals>) -> Arc<dyn Store> {
        EmbeddedStore::open(self.0.path(), Durability::Fsync, signals).unwrap()
    }
}

fn embedded() -> Option<Embedded> {
    Some(Embedded(tempfile::tempdir().unwrap()))
}

#[path = "support/redis_server.rs"]
mod redis_server;

/// A `redis-server` of its own. Reopening the store is a restart of
/// both: Redis is killed (SIGKILL) and started again on its AOF
/// (`appendfsync always`), then the store reconnects. The tests drive
/// time, so the scripts take the caller's clock.
struct Redis {
    server: std::sync::Mutex<redis_server::RedisServer>,
    opened: std::sync::atomic::AtomicBool,
}

impl Harness for Redis {
    fn open_signalled(&self, signals: Arc<Signals>) -> Arc<dyn Store> {
        let mut server = self.server.lock().unwrap();
        if self.opened.swap(true, std::sync::atomic::Ordering::SeqCst) {
            server.kill();
            server.start_again();
        }
        let options = server.store_options(TimeSource::Caller);
        // What a server's start-up does: connect and read the summaries the
        // synchronous methods answer from.
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(RedisStore::connect(options, signals))
        })
        .unwrap()
    }
}

/// `None` (skipped, with a printed notice) without `redis-server`.
fn redis() -> Option<Redis> {
    redis_server::RedisServer::start()
        .map(|server| Redis { server: server.into(), opened: false.into() })
}

/// A fixed past instant: a reopened store rebuilds on the real clock, so
/// test times must not lie in its future.
const T0: Timestamp = Timestamp(1_600_000_000_000);

fn at(seconds: i64) -> Timestamp {
    T0.plus_millis(seconds * 1000)
}

fn command(name: &str) -> Command {
    Command::parse(name).unwrap()
}

fn task(name: &str, priority: i64, visible_at: Timestamp) -> Task {
    Task {
        id: TaskId::generate(),
        command: command(name),
        payload: r#"{"n":1}"#.into(),
        priority: Priority::clamped(priority),
        webhook: None,
        max_attempts: 3,
        idempotency_key: None,
        run_at: None,
        created_at: at(0),
        created_by: "p".into(),
        state: TaskState::new(visible_at, at(0)),
    }
}

fn spec(filter: CommandFilter, count: usize, lease_until: Timestamp) -> ClaimSpec {
    ClaimSpec { commands: filter, worker_id: "w1".into(), lease_until, count }
}

fn only(name: &str) -> CommandFilter {
    CommandFilter::Only(vec![command(name)])
}

fn fence(attempt: Option<u32>) -> Fence<'static> {
    Fence { worker_id: "w1", attempt }
}

fn completion(id: TaskId, worker: &str, status: ResultStatus) -> Completion {
    let submission = Submission {
        status,
        result: (status == ResultStatus::Completed).then(|| serde_json::json!({"ok": true}).into()),
        error: (status == ResultStatus::Failed).then(|| "boom".to_string()),
        artifacts: Vec::new(),
    };
    Completion { task_id: id, worker_id: worker.into(), attempt: None, submission }
}

/// Expires every lease ended at `now` with a fixed delay, as the reaper
/// does with its backoff.
async fn expire_all(store: &dyn Store, now: Timestamp, delay_seconds: u64) -> Vec<Retried> {
    let ended = store.lease_ends(now, 100).await.unwrap();
    let expiries = ended.into_iter().map(|lease| Expiry { lease, delay_seconds }).collect();
    store.expire(expiries, now).await.unwrap().into_iter().map(|e| e.outcome).collect()
}

async fn create(store: &dyn Store, tasks: Vec<Task>) -> Vec<TaskId> {
    store
        .create(tasks)
        .await
        .unwrap()
        .into_iter()
        .map(|created| created.task().expect("stored").id)
        .collect()
}

async fn claim_one(store: &dyn Store, filter: CommandFilter, now: Timestamp) -> Option<Task> {
    store.claim(&spec(filter, 1, now.plus_seconds(30)), now).await.unwrap().pop()
}

async fn claims_highest_priority_first_then_fifo(h: &dyn Harness) {
    let store = h.open();
    let low = create(&*store, vec![task("a", 1, at(0))]).await[0];
    let high_first = create(&*store, vec![task("b", 7, at(0))]).await[0];
    let high_second = create(&*store, vec![task("a", 7, at(0))]).await[0];
    let all = CommandFilter::All;
    let order: Vec<TaskId> = [
        claim_one(&*store, all.clone(), at(1)).await.unwrap().id,
        claim_one(&*store, all.clone(), at(1)).await.unwrap().id,
        claim_one(&*store, all.clone(), at(1)).await.unwrap().id,
    ]
    .into();
    assert_eq!(order, vec![high_first, high_second, low]);
    assert!(claim_one(&*store, all, at(1)).await.is_none());
}

async fn claim_takes_only_the_requested_commands(h: &dyn Harness) {
    let store = h.open();
    create(&*store, vec![task("a", 9, at(0)), task("b", 0, at(0))]).await;
    let got = claim_one(&*store, only("b"), at(1)).await.unwrap();
    assert_eq!(got.command, command("b"));
    assert!(claim_one(&*store, only("c"), at(1)).await.is_none());
}

async fn claim_marks_the_delivery(h: &dyn Harness) {
    let store = h.open();
    let id = create(&*store, vec![task("a", 0, at(0))]).await[0];
    let got = claim_one(&*store, only("a"), at(5)).await.unwrap();
    assert_eq!((got.id, got.state.status, got.state.attempts), (id, TaskStatus::InProgress, 1));
    assert_eq!(got.state.worker_id.as_deref(), Some("w1"));
    assert_eq!(got.state.lease_until, Some(at(35)));
    assert_eq!(got.payload, r#"{"n":1}"#);
    assert_eq!(store.get_task(id).await.unwrap().unwrap(), got);
}

async fn batch_claim_returns_up_to_count(h: &dyn Harness) {
    let store = h.open();
    create(&*store, (0..5).map(|_| task("a", 0, at(0))).collect()).await;
    let got = store.claim(&spec(only("a"), 3, at(60)), at(1)).await.unwrap();
    assert_eq!(got.len(), 3);
    let rest = store.claim(&spec(only("a"), 10, at(60)), at(1)).await.unwrap();
    assert_eq!(rest.len(), 2);
}

async fn delayed_tasks_wait_until_due(h: &dyn Harness) {
    let store = h.open();
    let id = create(&*store, vec![task("a", 0, at(100))]).await[0];
    assert!(claim_one(&*store, only("a"), at(50)).await.is_none());
    assert_eq!(store.queue_stats(&command("a")).await.unwrap().delayed, 1);
    assert_eq!(store.next_deadline().map(|d| d <= at(100)), Some(true));
    assert_eq!(store.promote_due(at(99), 100).await.unwrap(), 0);
    assert_eq!(store.promote_due(at(100), 100).await.unwrap(), 1);
    assert_eq!(claim_one(&*store, only("a"), at(100)).await.unwrap().id, id);
}

async fn heartbeat_extends_the_lease_of_the_holder_only(h: &dyn Harness) {
    let store = h.open();
    let id = create(&*store, vec![task("a", 0, at(0))]).await[0];
    let unknown = store.heartbeat(TaskId::generate(), fence(None), at(90), at(2)).await;
    assert!(matches!(unknown, Err(StoreError::Transition(TransitionError::NotFound))));
    let pending = store.heartbeat(id, fence(None), at(90), at(2)).await;
    assert!(matches!(
        pending,
        Err(StoreError::Transition(TransitionError::NotInProgress(TaskStatus::Pending)))
    ));
    claim_one(&*store, only("a"), at(1)).await.unwrap();
    let other = store.heartbeat(id, Fence { worker_id: "w2", attempt: None }, at(90), at(2)).await;
    assert!(matches!(other, Err(StoreError::Transition(TransitionError::NotOwner))));
    let stale = store.heartbeat(id, fence(Some(2)), at(90), at(2)).await;
    assert!(matches!(
        stale,
        Err(StoreError::Transition(TransitionError::StaleAttempt { given: 2, current: 1 }))
    ));
    let extended = store.heartbeat(id, fence(Some(1)), at(90), at(2)).await.unwrap();
    assert_eq!(extended.lease_until, Some(at(90)));
    assert!(store.lease_ends(at(60), 100).await.unwrap().is_empty());
}

async fn a_heartbeat_after_the_lease_ended_is_refused(h: &dyn Harness) {
    let store = h.open();
    let id = create(&*store, vec![task("a", 0, at(0))]).await[0];
    claim_one(&*store, only("a"), at(0)).await.unwrap(); // lease until at(30)
    let late = store.heartbeat(id, fence(Some(1)), at(90), at(31)).await;
    assert!(
        matches!(late, Err(StoreError::Transition(TransitionError::LeaseExpired))),
        "before the reaper ran: {late:?}"
    );
    expire_all(&*store, at(31), 10).await;
    let later = store.heartbeat(id, fence(Some(1)), at(90), at(32)).await;
    assert!(
        matches!(later, Err(StoreError::Transition(TransitionError::LeaseExpired))),
        "after the reaper ran: {later:?}"
    );
    let state = store.get_state(id).await.unwrap().unwrap();
    assert_eq!((state.status, state.lease_until), (TaskStatus::Pending, None), "nothing extended");
}

async fn a_result_after_the_lease_ended_is_accepted_until_redelivery(h: &dyn Harness) {
    let store = h.open();
    let ids = create(&*store, vec![task("a", 0, at(0)), task("b", 0, at(0))]).await;
    claim_one(&*store, only("a"), at(0)).await.unwrap();
    claim_one(&*store, only("b"), at(0)).await.unwrap();
    // Task a: the reaper has not run yet; task b: requeued by the reaper,
    // not claimed since.
    let ended = store.lease_ends(at(31), 100).await.unwrap();
    assert_eq!(ended.len(), 2);
    let b_lease = ended.iter().copied().find(|lease| lease.task_id == ids[1]).unwrap();
    store.expire(vec![Expiry { lease: b_lease, delay_seconds: 10 }], at(31)).await.unwrap();
    for id in &ids {
        let mut late = completion(*id, "w1", ResultStatus::Completed);
        late.attempt = Some(1);
        let out = store.complete(vec![late], at(35)).await.unwrap();
        assert!(matches!(out[0], Ok(Completed::Stored(_))), "{out:?}");
        assert_eq!(store.get_task(*id).await.unwrap().unwrap().state.status, TaskStatus::Completed);
    }
    assert!(store.lease_ends(at(99), 100).await.unwrap().is_empty(), "no lease left to expire");
    for name in ["a", "b"] {
        let stats = store.queue_stats(&command(name)).await.unwrap();
        assert_eq!(
            (stats.ready, stats.delayed, stats.in_progress),
            (0, 0, 0),
            "{name} left its queue"
        );
    }

    let redelivered = create(&*store, vec![task("c", 0, at(0))]).await[0];
    claim_one(&*store, only("c"), at(40)).await.unwrap();
    expire_all(&*store, at(71), 0).await;
    let again = store
        .claim(&ClaimSpec { worker_id: "w2".into(), ..spec(only("c"), 1, at(200)) }, at(72))
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    let out = store.complete(vec![completion(redelivered, "w1", ResultStatus::Completed)], at(73));
    assert_eq!(out.await.unwrap()[0], Err(TransitionError::NotOwner));
}

/// What a claim answers is what it stored, and a result leaves nothing of
/// the delivery behind: no lease, no place in a live queue or status, the
/// task's error only for a failure or a cancel (the record keeps what the
/// worker sent); a replayed dead letter's result is its own.
async fn a_claim_answers_what_it_stored_and_a_result_keeps_nothing_of_the_delivery(
    h: &dyn Harness,
) {
    let store = h.open();
    let kept: Vec<Task> = (0..3).map(|_| task("kept", 0, at(0))).collect();
    let ids = create(&*store, kept).await;
    let revived = dead_letters(&*store, "revived", 1, |_| "flaky".into()).await[0];
    let replayed = store.replay(&command("revived"), vec![(revived, at(100))], at(100)).await;
    assert_eq!(replayed.unwrap(), vec![revived]);

    let noted = |id, status| {
        let mut result = completion(id, "w1", status);
        result.submission.error = Some("noted".into());
        result
    };
    for (name, result, task_error, status) in [
        ("kept", noted(ids[0], ResultStatus::Completed), None, TaskStatus::Completed),
        ("kept", completion(ids[1], "w1", ResultStatus::Failed), Some("boom"), TaskStatus::Failed),
        ("kept", noted(ids[2], ResultStatus::Cancelled), Some("noted"), TaskStatus::Cancelled),
        (
            "revived",
            completion(revived, "w1", ResultStatus::Completed),
            None,
            TaskStatus::Completed,
        ),
    ] {
        let id = result.task_id;
        let sent_error = result.submission.error.clone();
        let claimed = claim_one(&*store, only(name), at(101)).await.unwrap();
        assert_eq!(claimed.id, id);
        let stored = store.get_task(id).await.unwrap().unwrap();
        assert_eq!(claimed.state, stored.state, "the claim answers the state it stored");
        // The revived task's deliveries go on from its first round's one.
        let delivery = if name == "revived" { 2 } else { 1 };
        assert_eq!((claimed.state.attempts, claimed.state.lease_until), (delivery, Some(at(131))));

        let out = store.complete(vec![result], at(102)).await.unwrap();
        let Ok(Completed::Stored(record)) = &out[0] else { panic!("not stored: {out:?}") };
        assert_eq!(record.error, sent_error, "the record keeps the worker's error");
        assert_eq!(store.get_result(id).await.unwrap().as_ref(), Some(record));
        let done = store.get_task(id).await.unwrap().unwrap().state;
        assert_eq!((done.status, done.error.as_deref()), (status, task_error));
        assert_eq!(
            (done.lease_until, done.dead_lettered, done.completed_at),
            (None, false, Some(at(102)))
        );
        assert_eq!((done.worker_id.as_deref(), done.attempts), (Some("w1"), delivery));
        let listed = store.list_tasks(Some(&command(name)), Some(status), None, 10).await.unwrap();
        assert!(listed.contains(&id), "listed as {status:?}");
        for live in [TaskStatus::Pending, TaskStatus::InProgress] {
            let listed =
                store.list_tasks(Some(&command(name)), Some(live), None, 10).await.unwrap();
            assert!(!listed.contains(&id), "still listed as {live:?}");
        }
    }
    for name in ["kept", "revived"] {
        let stats = store.queue_stats(&command(name)).await.unwrap();
        assert_eq!((stats.ready, stats.delayed, stats.in_progress, stats.dlq), (0, 0, 0, 0));
        assert!(claim_one(&*store, only(name), at(200)).await.is_none());
    }
    assert!(store.lease_ends(at(999), 100).await.unwrap().is_empty(), "no lease left");
}

async fn abandon_requeues_at_once_keeping_attempts(h: &dyn Harness) {
    let store = h.open();
    let id = create(&*store, vec![task("a", 0, at(0))]).await[0];
    claim_one(&*store, only("a"), at(1)).await.unwrap();
    store.abandon(id, fence(Some(1)), at(2)).await.unwrap();
    let abandoned = store.get_state(id).await.unwrap().unwrap();
    assert_eq!(
        (abandoned.status, abandoned.attempts, abandoned.worker_id),
        (TaskStatus::Pending, 1, None)
    );
    let again = claim_one(&*store, only("a"), at(2)).await.unwrap();
    assert_eq!((again.id, again.state.attempts), (id, 2));
}

async fn nack_requeues_after_the_delay(h: &dyn Harness) {
    let store = h.open();
    let id = create(&*store, vec![task("a", 0, at(0))]).await[0];
    claim_one(&*store, only("a"), at(1)).await.unwrap();
    let outcome = store.nack(id, fence(Some(1)), 20, Some("flaky".into()), at(2)).await.unwrap();
    assert_eq!(outcome, Retried::Requeued { delay_seconds: 20 });
    let nacked = store.get_task(id).await.unwrap().unwrap().state;
    assert_eq!(
        (nacked.status, nacked.last_reason.as_deref(), nacked.visible_at),
        (TaskStatus::Pending, Some("flaky"), at(22))
    );
    assert!(claim_one(&*store, only("a"), at(21)).await.is_none());
    store.promote_due(at(22), 100).await.unwrap();
    assert_eq!(claim_one(&*store, only("a"), at(22)).await.unwrap().state.attempts, 2);
}

async fn the_last_delivery_dead_letters_on_nack(h: &dyn Harness) {
    let store = h.open();
    let mut t = task("a", 0, at(0));
    t.max_attempts = 2;
    let id = create(&*store, vec![t]).await[0];
    claim_one(&*store, only("a"), at(1)).await.unwrap();
    assert_eq!(
        store.nack(id, fence(None), 0, None, at(2)).await.unwrap(),
        Retried::Requeued { delay_seconds: 0 }
    );
    claim_one(&*store, only("a"), at(3)).await.unwrap();
    assert_eq!(
        store.nack(id, fence(Some(2)), 0, None, at(4)).await.unwrap(),
        Retried::DeadLettered
    );
    let dead = store.get_task(id).await.unwrap().unwrap().state;
    assert_eq!(
        (dead.status, dead.error.as_deref(), dead.attempts),
        (TaskStatus::Failed, Some("MAX_ATTEMPTS"), 2)
    );
    let record = store.get_result(id).await.unwrap().unwrap();
    assert_eq!(
        (record.status, record.error.as_deref()),
        (ResultStatus::Failed, Some("MAX_ATTEMPTS"))
    );
    assert_eq!(store.queue_stats(&command("a")).await.unwrap().dlq, 1);
}

async fn expired_leases_requeue_then_dead_letter(h: &dyn Harness) {
    let store = h.open();
    let mut t = task("a", 0, at(0));
    t.max_attempts = 2;
    let id = create(&*store, vec![t]).await[0];
    claim_one(&*store, only("a"), at(0)).await.unwrap(); // lease until at(30)
    assert!(
        store.lease_ends(at(30), 100).await.unwrap().is_empty(),
        "not ended at its end instant"
    );
    assert_eq!(
        store.lease_ends(at(31), 100).await.unwrap(),
        vec![LeaseEnd { task_id: id, attempts: 1, attempt_in_round: 1 }]
    );
    assert_eq!(
        expire_all(&*store, at(31), 10).await,
        vec![Retried::Requeued { delay_seconds: 10 }]
    );
    let requeued = store.get_task(id).await.unwrap().unwrap().state;
    assert_eq!(
        (requeued.status, requeued.last_reason.as_deref(), requeued.visible_at),
        (TaskStatus::Pending, Some("LEASE_EXPIRED"), at(41))
    );
    store.promote_due(at(41), 100).await.unwrap();
    claim_one(&*store, only("a"), at(41)).await.unwrap();
    assert_eq!(expire_all(&*store, at(72), 10).await, vec![Retried::DeadLettered]);
    assert_eq!(store.get_task(id).await.unwrap().unwrap().state.status, TaskStatus::Failed);
}

async fn an_expiry_skips_a_task_that_moved_on(h: &dyn Harness) {
    let store = h.open();
    let id = create(&*store, vec![task("a", 0, at(0))]).await[0];
    claim_one(&*store, only("a"), at(0)).await.unwrap();
    let ended = store.lease_ends(at(31), 100).await.unwrap();
    store.abandon(id, fence(Some(1)), at(31)).await.unwrap();
    claim_one(&*store, only("a"), at(31)).await.unwrap(); // delivery 2, lease until at(61)
    let expiries = ended.into_iter().map(|lease| Expiry { lease, delay_seconds: 0 }).collect();
    assert!(store.expire(expiries, at(62)).await.unwrap().is_empty(), "delivery 1 is gone");
    assert_eq!(store.get_state(id).await.unwrap().unwrap().status, TaskStatus::InProgress);
}

async fn results_are_terminal_and_idempotent(h: &dyn Harness) {
    let store = h.open();
    let id = create(&*store, vec![task("a", 0, at(0))]).await[0];
    claim_one(&*store, only("a"), at(1)).await.unwrap();
    let out =
        store.complete(vec![completion(id, "w2", ResultStatus::Completed)], at(2)).await.unwrap();
    assert_eq!(out[0], Err(TransitionError::NotOwner));
    let out =
        store.complete(vec![completion(id, "w1", ResultStatus::Completed)], at(2)).await.unwrap();
    let Ok(Completed::Stored(stored)) = &out[0] else { panic!("not stored: {out:?}") };
    assert_eq!((stored.completed_at, stored.worker_id.as_str()), (at(2), "w1"));
    let again =
        store.complete(vec![completion(id, "w1", ResultStatus::Completed)], at(3)).await.unwrap();
    assert_eq!(again[0], Ok(Completed::Repeated(stored.clone())));
    let other =
        store.complete(vec![completion(id, "w1", ResultStatus::Failed)], at(3)).await.unwrap();
    assert_eq!(other[0], Err(TransitionError::ResultConflict));
    let done = store.get_task(id).await.unwrap().unwrap().state;
    assert_eq!((done.status, done.completed_at), (TaskStatus::Completed, Some(at(2))));
    assert_eq!(store.get_result(id).await.unwrap().as_ref(), Some(stored));
    let pending = create(&*store, vec![task("a", 0, at(0))]).await[0];
    let out = store
        .complete(vec![completion(pending, "w1", ResultStatus::Completed)], at(3))
        .await
        .unwrap();
    assert_eq!(out[0], Err(TransitionError::NotInProgress(TaskStatus::Pending)));
}

async fn a_batch_sees_its_own_earlier_items(h: &dyn Harness) {
    let store = h.open();
    let id = create(&*store, vec![task("a", 0, at(0))]).await[0];
    claim_one(&*store, only("a"), at(1)).await.unwrap();
    let twice = vec![
        completion(id, "w1", ResultStatus::Completed),
        completion(id, "w1", ResultStatus::Completed),
        completion(id, "w1", ResultStatus::Failed),
    ];
    let out = store.complete(twice, at(2)).await.unwrap();
    let Ok(Completed::Stored(stored)) = &out[0] else { panic!("not stored: {out:?}") };
    assert_eq!(out[1], Ok(Completed::Repeated(stored.clone())));
    assert_eq!(out[2], Err(TransitionError::ResultConflict));
}

/// A result with `claimNext`: the result, then the claim, as one step.
async fn complete_and_claim(
    store: &dyn Store,
    id: TaskId,
    worker: &str,
    next: CommandFilter,
    now: Timestamp,
) -> (Result<Completed, TransitionError>, Vec<Task>) {
    let item = completion(id, worker, ResultStatus::Completed);
    let next = ClaimSpec { worker_id: worker.into(), ..spec(next, 1, now.plus_seconds(40)) };
    let done = store.complete_and_claim(item, &next, now).await.unwrap();
    (done.outcome, done.next.unwrap())
}

async fn a_result_with_the_next_claim_stores_it_then_claims_in_order(h: &dyn Harness) {
    let store = h.open();
    let first = create(&*store, vec![task("a", 0, at(0))]).await[0];
    claim_one(&*store, only("a"), at(1)).await.unwrap();
    let low = create(&*store, vec![task("a", 1, at(0))]).await[0];
    let high = create(&*store, vec![task("a", 7, at(0))]).await[0];
    // maxInFlight 1: the place the result frees is the one the claim takes.
    store.set_queue_settings(&command("a"), settings(false, Some(1), None), at(1)).await.unwrap();

    let (outcome, next) = complete_and_claim(&*store, first, "w1", only("a"), at(2)).await;
    let Ok(Completed::Stored(stored)) = outcome else { panic!("not stored: {outcome:?}") };
    assert_eq!((stored.task_id, stored.completed_at), (first, at(2)));
    let ids: Vec<TaskId> = next.iter().map(|t| t.id).collect();
    assert_eq!(ids, vec![high], "the highest priority next");
    let held = store.get_state(high).await.unwrap().unwrap();
    assert_eq!(held.status, TaskStatus::InProgress);
    assert_eq!(
        (held.worker_id.as_deref(), held.lease_until, held.attempts),
        (Some("w1"), Some(at(42)), 1)
    );
    assert_eq!(next[0].state, held, "the claim answers what it stored");

    // A repeat of a stored result is accepted again: the next task comes.
    store.set_queue_settings(&command("a"), settings(false, None, None), at(2)).await.unwrap();
    let (again, next) = complete_and_claim(&*store, first, "w1", only("a"), at(3)).await;
    assert_eq!(again, Ok(Completed::Repeated(stored)));
    assert_eq!(next.iter().map(|t| t.id).collect::<Vec<_>>(), vec![low]);
    // Nothing left: the result is stored and no task answered.
    let (outcome, next) = complete_and_claim(&*store, high, "w1", only("a"), at(4)).await;
    assert!(matches!(outcome, Ok(Completed::Stored(_))), "{outcome:?}");
    assert!(next.is_empty());
}

async fn a_refused_result_claims_no_next_task(h: &dyn Harness) {
    let store = h.open();
    let held = create(&*store, vec![task("a", 0, at(0))]).await[0];
    claim_one(&*store, only("a"), at(1)).await.unwrap();
    let ready = create(&*store, vec![task("a", 0, at(0))]).await[0];
    let (outcome, next) = complete_and_claim(&*store, held, "w2", only("a"), at(2)).await;
    assert_eq!(outcome, Err(TransitionError::NotOwner));
    assert!(next.is_empty(), "no claim for a refused result");
    assert_eq!(store.get_state(ready).await.unwrap().unwrap().status, TaskStatus::Pending);
    let (outcome, next) = complete_and_claim(&*store, ready, "w1", only("a"), at(2)).await;
    assert_eq!(outcome, Err(TransitionError::NotInProgress(TaskStatus::Pending)));
    assert!(next.is_empty());
    assert_eq!(store.get_state(ready).await.unwrap().unwrap().status, TaskStatus::Pending);
    // A rate limit holding claims back stays as it was: no claim ran.
    store
        .set_queue_settings(&command("a"), settings(false, None, Some(0.01)), at(2))
        .await
        .unwrap();
    create(&*store, vec![task("a", 0, at(0))]).await;
    claim_one(&*store, only("a"), at(2)).await.expect("the bucket's one token");
    let held_back = store.next_claimable_at(&only("a"), at(2)).expect("held back by the rate");
    let (outcome, next) = complete_and_claim(&*store, held, "w2", only("a"), at(2)).await;
    assert_eq!((outcome, next.len()), (Err(TransitionError::NotOwner), 0));
    assert_eq!(store.next_claimable_at(&only("a"), at(2)), Some(held_back));
    // A paused command: the result is stored, no task is claimed.
    store.set_queue_settings(&command("a"), settings(true, None, None), at(2)).await.unwrap();
    let (outcome, next) = complete_and_claim(&*store, held, "w1", only("a"), at(3)).await;
    assert!(matches!(outcome, Ok(Completed::Stored(_))), "{outcome:?}");
    assert!(next.is_empty(), "paused");
    assert_eq!(store.get_state(held).await.unwrap().unwrap().status, TaskStatus::Completed);
}

async fn idempotency_keys_return_the_live_task(h: &dyn Harness) {
    let store = h.open();
    let mut first = task("a", 0, at(0));
    first.idempotency_key = Some("k1".into());
    let mut second = task("a", 0, at(0));
    second.idempotency_key = Some("k1".into());
    let out = store.create(vec![first.clone(), second]).await.unwrap();
    assert_eq!(out[0], Created::New(first.clone()));
    assert_eq!(out[1], Created::Existing(first.clone()));
    assert_eq!(store.queue_stats(&command("a")).await.unwrap().ready, 1);
}

async fn cleanup_deletes_only_old_terminal_tasks(h: &dyn Harness) {
    let store = h.open();
    let mut keyed = task("a", 0, at(0));
    keyed.idempotency_key = Some("k".into());
    let ids =
        create(&*store, vec![keyed.clone(), task("a", 0, at(0)), task("a", 0, at(500))]).await;
    claim_one(&*store, only("a"), at(1)).await.unwrap();
    store.complete(vec![completion(ids[0], "w1", ResultStatus::Completed)], at(2)).await.unwrap();
    assert!(store.cleanup(at(1), 100).await.unwrap().is_empty());
    assert_eq!(store.cleanup(at(2), 100).await.unwrap(), vec![ids[0]]);
    assert_eq!(store.get_task(ids[0]).await.unwrap(), None);
    assert_eq!(store.get_result(ids[0]).await.unwrap(), None);
    assert!(store.get_task(ids[1]).await.unwrap().is_some(), "pending task kept");
    assert!(store.get_task(ids[2]).await.unwrap().is_some(), "delayed task kept");
    let mut again = task("a", 0, at(0));
    again.idempotency_key = Some("k".into());
    assert!(
        matches!(store.create(vec![again]).await.unwrap()[0], Created::New(_)),
        "key freed by cleanup"
    );
}

async fn cleanup_takes_the_oldest_first_across_commands(h: &dyn Harness) {
    let store = h.open();
    // Ended in this order, commands interleaved; one whose callback is
    // owed is passed over.
    let ends = [("x", 2), ("y", 3), ("x", 4), ("z", 5), ("y", 6), ("x", 7), ("z", 8)];
    let mut ended = Vec::new();
    for (name, second) in ends {
        let mut made = task(name, 0, at(0));
        if second == 5 {
            made.webhook = Some("https://hooks.example.com/owed".into());
        }
        let id = create(&*store, vec![made]).await[0];
        claim_one(&*store, only(name), at(1)).await.unwrap();
        store
            .complete(vec![completion(id, "w1", ResultStatus::Completed)], at(second))
            .await
            .unwrap();
        ended.push(id);
    }
    let mut order = Vec::new();
    for _ in 0..ends.len() {
        order.extend(store.cleanup(at(10), 1).await.unwrap());
    }
    let owed = ended.remove(3);
    assert_eq!(order, ended, "oldest first, the owed one kept");
    assert!(store.get_task(owed).await.unwrap().is_some());
    // Past the limit of one call: the next call goes on where it stopped.
    assert!(store.cleanup(at(10), 5).await.unwrap().is_empty());
}

async fn concurrent_claimers_never_share_a_task(h: &dyn Harness) {
    let store = h.open();
    let ids = create(&*store, (0..400).map(|_| task("a", 0, at(0))).collect()).await;
    let mut claimers = Vec::new();
    for worker in 0..16 {
        let store = store.clone();
        claimers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let spec = ClaimSpec {
                    commands: CommandFilter::All,
                    worker_id: format!("w{worker}"),
                    lease_until: at(60),
                    count: 1,
                };
                match store.claim(&spec, at(1)).await.unwrap().pop() {
                    Some(task) => got.push(task.id),
                    None => return got,
                }
            }
        }));
    }
    let mut seen = HashSet::new();
    for claimer in claimers {
        for id in claimer.await.unwrap() {
            assert!(seen.insert(id), "task {id} delivered twice");
        }
    }
    assert_eq!(seen, ids.into_iter().collect());
}

async fn state_survives_a_restart(h: &dyn Harness) {
    let (ready, delayed, held, done, keyed);
    {
        let store = h.open();
        let mut tasks = vec![
            task("a", 5, at(0)),
            task("a", 0, at(0)),
            task("a", 0, at(0)),
            task("a", 0, at(0)),
            task("a", 0, at(10_000_000_000)),
        ];
        tasks[3].idempotency_key = Some("key".into());
        let ids = create(&*store, tasks).await;
        (ready, held, done, keyed, delayed) = (ids[1], ids[0], ids[2], ids[3], ids[4]);
        claim_one(&*store, only("a"), at(1)).await.unwrap(); // the priority-5 task: held
        let finished = claim_one(&*store, only("a"), at(1)).await.unwrap();
        assert_eq!(finished.id, ready, "FIFO within priority 0");
        store.abandon(ready, fence(None), at(1)).await.unwrap();
        // `ready` is back at the tail, behind `done`.
        let next = claim_one(&*store, only("a"), at(1)).await.unwrap();
        assert_eq!(next.id, done);
        store.complete(vec![completion(done, "w1", ResultStatus::Completed)], at(2)).await.unwrap();
        store.close().await.unwrap();
    }
    let store = h.open();
    let stats = store.queue_stats(&command("a")).await.unwrap();
    assert_eq!((stats.ready, stats.delayed, stats.in_progress, stats.dlq), (2, 1, 1, 0));
    assert_eq!(store.get_task(held).await.unwrap().unwrap().state.status, TaskStatus::InProgress);
    assert!(store.get_result(done).await.unwrap().is_some());
    assert_eq!(store.get_task(delayed).await.unwrap().unwrap().state.status, TaskStatus::Pending);
    let mut dup = task("a", 0, at(0));
    dup.idempotency_key = Some("key".into());
    assert!(
        matches!(&store.create(vec![dup]).await.unwrap()[0], Created::Existing(t) if t.id == keyed)
    );
    assert_eq!(
        claim_one(&*store, only("a"), at(3)).await.unwrap().id,
        keyed,
        "older visible time first"
    );
    assert_eq!(claim_one(&*store, only("a"), at(3)).await.unwrap().id, ready);
    assert_eq!(expire_all(&*store, at(10_000), 10).await.len(), 3, "leases survive restart");
}

async fn a_result_is_kept_as_its_text_over_a_restart(h: &dyn Harness) {
    // What a parsed value would change: a big number's digits, a decimal's
    // spelling, a repeated key, key order, an escape; and nesting past
    // serde_json's limit of 128 for a parsed value.
    let deep = format!("{}1{}", "[".repeat(300), "]".repeat(300));
    let text = format!(
        r#"{{"z":0,"big":123456789012345678901234567890,"f":1.50,"k":1,"k":2,"e":"\u00e9","d":{deep}}}"#
    );
    let text = text.as_str();
    let id;
    {
        let store = h.open();
        id = create(&*store, vec![task("a", 0, at(0))]).await[0];
        claim_one(&*store, only("a"), at(1)).await.unwrap();
        let mut result = completion(id, "w1", ResultStatus::Completed);
        result.submission.result = Some(JsonText::from_text(text).unwrap());
        let out = store.complete(vec![result], at(2)).await.unwrap();
        let Ok(Completed::Stored(stored)) = &out[0] else { panic!("not stored: {out:?}") };
        assert_eq!(stored.result.as_ref().map(JsonText::as_str), Some(text));
        store.close().await.unwrap();
    }
    let store = h.open();
    let record = store.get_result(id).await.unwrap().unwrap();
    assert_eq!(record.result.as_ref().map(JsonText::as_str), Some(text));
}

async fn a_new_command_past_the_bound_is_refused_and_known_ones_are_not(h: &dyn Harness) {
    let named = |n: usize| task(&format!("c{n}"), 0, at(0));
    {
        let store = h.open();
        let below: Vec<Task> = (0..DEFAULT_MAX_COMMANDS - 1).map(named).collect();
        assert_eq!(create(&*store, below).await.len(), DEFAULT_MAX_COMMANDS - 1);
        // The last place goes to the first new command of the call; a
        // second new one is refused, each item on its own.
        let mut known = named(0);
        known.idempotency_key = Some("k".into());
        let call = vec![named(5_000), named(5_001), known.clone(), named(5_000)];
        let created = store.create(call).await.unwrap();
        assert!(matches!(created[0], Created::New(_)), "{:?}", created[0]);
        assert_eq!(created[1], Created::TooManyCommands(DEFAULT_MAX_COMMANDS));
        assert!(matches!(created[2], Created::New(_)), "a known command: {:?}", created[2]);
        assert!(matches!(created[3], Created::New(_)), "the command just added: {:?}", created[3]);
        // An idempotent repeat is answered whatever the bound.
        let again = store.create(vec![known]).await.unwrap();
        assert!(matches!(again[0], Created::Existing(_)), "{:?}", again[0]);
        let paused = settings(true, None, None);
        let refused = store.set_queue_settings(&command("other"), paused, at(1)).await;
        assert!(matches!(refused, Err(StoreError::TooManyCommands(DEFAULT_MAX_COMMANDS))));
        store.set_queue_settings(&command("c7"), paused, at(1)).await.unwrap();
        let refused = store.set_paused(&command("other"), true, at(1)).await;
        assert!(matches!(refused, Err(StoreError::TooManyCommands(DEFAULT_MAX_COMMANDS))));
        store.close().await.unwrap();
    }
    let store = h.open();
    let listed = store.all_queue_stats().await.unwrap();
    assert_eq!(listed.len(), DEFAULT_MAX_COMMANDS, "nothing of a refused command is kept");
    assert!(!listed.iter().any(|stats| ["c5001", "other"].contains(&stats.command.as_str())));
    let created = store.create(vec![named(6_000)]).await.unwrap();
    assert_eq!(created[0], Created::TooManyCommands(DEFAULT_MAX_COMMANDS), "over a restart too");
}

async fn every_command_ever_used_is_listed_after_cleanup_and_restart(h: &dyn Harness) {
    {
        let store = h.open();
        let id = create(&*store, vec![task("gone", 0, at(0))]).await[0];
        claim_one(&*store, only("gone"), at(1)).await.unwrap();
        store.complete(vec![completion(id, "w1", ResultStatus::Completed)], at(2)).await.unwrap();
        assert_eq!(store.cleanup(at(3), 10).await.unwrap(), vec![id]);
        store.close().await.unwrap();
    }
    let store = h.open();
    let listed: Vec<_> =
        store.all_queue_stats().await.unwrap().into_iter().map(|s| s.command).collect();
    assert_eq!(listed, vec![command("gone")]);
}

fn hooked(name: &str) -> Task {
    let mut t = task(name, 0, at(0));
    t.webhook = Some("https://hooks.example.com/done".into());
    t
}

async fn owed(store: &dyn Store, now: Timestamp) -> Vec<(TaskId, u32)> {
    let due = store.callbacks_due(now, 100).await.unwrap();
    due.into_iter().map(|callback| (callback.task_id, callback.attempts)).collect()
}

async fn a_task_with_a_webhook_owes_one_callback_until_it_is_done(h: &dyn Harness) {
    let store = h.open();
    let ids = create(&*store, vec![hooked("a"), task("a", 0, at(0))]).await;
    let (hooked_id, plain) = (ids[0], ids[1]);
    for id in [hooked_id, plain] {
        claim_one(&*store, only("a"), at(1)).await.unwrap();
        let done = completion(id, "w1", ResultStatus::Completed);
        store.complete(vec![done], at(2)).await.unwrap();
    }
    assert_eq!(owed(&*store, at(2)).await, vec![(hooked_id, 0)], "only the task with a webhook");
    assert_eq!(store.callbacks_pending().1, 1);
    assert_eq!(store.cleanup(at(3), 10).await.unwrap(), vec![plain], "retention waits for it");

    let due = store.callbacks_due(at(2), 10).await.unwrap().remove(0);
    store.callback_retry(hooked_id, due.delivery, 1, at(60)).await.unwrap();
    assert!(owed(&*store, at(59)).await.is_empty(), "not before its next attempt");
    assert_eq!(owed(&*store, at(60)).await, vec![(hooked_id, 1)]);
    store.callback_done(hooked_id, uuid::Uuid::now_v7(), None).await.unwrap();
    assert_eq!(store.callbacks_pending().1, 1, "another delivery series ends nothing");
    store.callback_done(hooked_id, due.delivery, None).await.unwrap();
    assert_eq!(store.callbacks_pending(), (None, 0));
    assert_eq!(store.cleanup(at(3), 10).await.unwrap(), vec![hooked_id]);
}

async fn dead_lettering_owes_a_callback(h: &dyn Harness) {
    let store = h.open();
    let (mut by_nack, mut by_expiry) = (hooked("a"), hooked("b"));
    by_nack.max_attempts = 1;
    by_expiry.max_attempts = 1;
    let ids = create(&*store, vec![by_nack, by_expiry]).await;
    claim_one(&*store, only("a"), at(0)).await.unwrap();
    assert_eq!(
        store.nack(ids[0], fence(None), 0, None, at(1)).await.unwrap(),
        Retried::DeadLettered
    );
    claim_one(&*store, only("b"), at(0)).await.unwrap();
    assert_eq!(expire_all(&*store, at(31), 0).await, vec![Retried::DeadLettered]);
    let mut due: Vec<TaskId> = owed(&*store, at(31)).await.into_iter().map(|(id, _)| id).collect();
    due.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(due, expected);
}

async fn a_tasks_owed_callback_is_read_until_it_is_done(h: &dyn Harness) {
    let store = h.open();
    let id = create(&*store, vec![hooked("a")]).await[0];
    assert_eq!(store.callback_owed(id).await.unwrap(), None);
    claim_one(&*store, only("a"), at(1)).await.unwrap();
    store.complete(vec![completion(id, "w1", ResultStatus::Completed)], at(2)).await.unwrap();
    let first = store.callback_owed(id).await.unwrap().expect("a callback is owed");
    assert_eq!(first.attempts, 0);
    store.callback_retry(id, first.delivery, 2, at(50)).await.unwrap();
    let retried = store.callback_owed(id).await.unwrap().expect("still owed");
    assert_eq!((retried.delivery, retried.attempts, retried.next_at), (first.delivery, 2, at(50)));
    store.callback_done(id, first.delivery, None).await.unwrap();
    assert_eq!(store.callback_owed(id).await.unwrap(), None);
}

async fn owed_callbacks_survive_a_restart(h: &dyn Harness) {
    let id;
    {
        let store = h.open();
        id = create(&*store, vec![hooked("a")]).await[0];
        claim_one(&*store, only("a"), at(1)).await.unwrap();
        store.complete(vec![completion(id, "w1", ResultStatus::Failed)], at(2)).await.unwrap();
        let delivery = store.callbacks_due(at(2), 1).await.unwrap()[0].delivery;
        store.callback_retry(id, delivery, 2, at(50)).await.unwrap();
        store.close().await.unwrap();
    }
    let store = h.open();
    assert_eq!(store.callbacks_pending(), (Some(at(50)), 1));
    assert_eq!(owed(&*store, at(50)).await, vec![(id, 2)]);
}

/// How a callback ended is kept until the task goes: over a restart, not
/// over a replay (the task owes a new one), and not past its deletion;
/// retention does not wait for it.
async fn a_callbacks_outcome_is_kept_until_its_task_goes(h: &dyn Harness) {
    let delivered = SettledCallback { outcome: CallbackOutcome::Delivered, attempts: 2 };
    let gave_up = SettledCallback { outcome: CallbackOutcome::GaveUp, attempts: 5 };
    let (kept, replayed);
    {
        let store = h.open();
        let mut once = hooked("b");
        once.max_attempts = 1;
        let ids = create(&*store, vec![hooked("a"), once]).await;
        (kept, replayed) = (ids[0], ids[1]);
        claim_one(&*store, only("a"), at(1)).await.unwrap();
        store.complete(vec![completion(kept, "w1", ResultStatus::Completed)], at(2)).await.unwrap();
        claim_one(&*store, only("b"), at(1)).await.unwrap();
        store.nack(replayed, fence(None), 0, None, at(2)).await.unwrap();
        assert_eq!(store.callback_settled(kept).await.unwrap(), None, "owed, not settled");
        for callback in store.callbacks_due(at(2), 10).await.unwrap() {
            let end = if callback.task_id == kept { delivered } else { gave_up };
            store.callback_done(callback.task_id, callback.delivery, Some(end)).await.unwrap();
        }
        assert_eq!(store.callback_owed(kept).await.unwrap(), None);
        assert_eq!(store.callback_settled(kept).await.unwrap(), Some(delivered));
        assert_eq!(store.callback_settled(replayed).await.unwrap(), Some(gave_up));
        store.close().await.unwrap();
    }
    let store = h.open();
    assert_eq!(store.callback_settled(kept).await.unwrap(), Some(delivered), "over a restart");
    assert_eq!(store.callbacks_pending(), (None, 0));

    // A replay forgets it; the task owes a new callback when it ends anew.
    let replay = store.replay(&command("b"), vec![(replayed, at(3))], at(3)).await.unwrap();
    assert_eq!(replay, vec![replayed]);
    assert_eq!(store.callback_settled(replayed).await.unwrap(), None, "forgotten by the replay");
    claim_one(&*store, only("b"), at(4)).await.unwrap();
    let done = completion(replayed, "w1", ResultStatus::Completed);
    store.complete(vec![done], at(5)).await.unwrap();
    assert!(store.callback_owed(replayed).await.unwrap().is_some());
    assert_eq!(store.callback_settled(replayed).await.unwrap(), None, "a new series is owed");

    // A purge takes it along with the dead letter.
    let mut purged = hooked("c");
    purged.max_attempts = 1;
    let purged = create(&*store, vec![purged]).await[0];
    claim_one(&*store, only("c"), at(4)).await.unwrap();
    store.nack(purged, fence(None), 0, None, at(4)).await.unwrap();
    let due = store.callbacks_due(at(4), 10).await.unwrap();
    let owed = due.iter().find(|callback| callback.task_id == purged).unwrap();
    store.callback_done(purged, owed.delivery, Some(gave_up)).await.unwrap();
    assert_eq!(store.callback_settled(purged).await.unwrap(), Some(gave_up));
    assert_eq!(store.purge(&command("c"), vec![purged]).await.unwrap(), vec![purged]);
    assert_eq!(store.callback_settled(purged).await.unwrap(), None, "purged with its task");

    // Retention does not wait for a settled callback, and takes it along.
    assert_eq!(store.cleanup(at(4), 10).await.unwrap(), vec![kept]);
    assert_eq!(store.callback_settled(kept).await.unwrap(), None);
    store.close().await.unwrap();
    drop(store);
    let store = h.open();
    assert_eq!(store.callback_settled(kept).await.unwrap(), None, "gone over a restart too");
    assert_eq!(store.callback_settled(purged).await.unwrap(), None);
}

fn subscription(owner: &str, expires_at: Timestamp) -> Subscription {
    Subscription {
        id: uuid::Uuid::now_v7(),
        owner: owner.into(),
        callback_url: "https://workers.example.com/ready".into(),
        commands: Some(vec![command("a")]),
        mode: DeliveryMode::Group,
        group_id: Some("g".into()),
        min_interval_seconds: 5,
        expires_at,
    }
}

async fn subscriptions_are_stored_renewed_deleted_and_kept_over_a_restart(h: &dyn Harness) {
    let (kept, mut renewed) = (subscription("w1", at(100)), subscription("w2", at(100)));
    {
        let store = h.open();
        let deleted = subscription("w3", at(100));
        for subscription in [&kept, &renewed, &deleted] {
            store.put_subscription(subscription.clone()).await.unwrap();
        }
        renewed.expires_at = at(500);
        store.put_subscription(renewed.clone()).await.unwrap();
        assert!(store.delete_subscription(deleted.id).await.unwrap());
        assert!(!store.delete_subscription(deleted.id).await.unwrap(), "gone already");
        assert_eq!(store.get_subscription(deleted.id).await.unwrap(), None);
        store.close().await.unwrap();
    }
    let store = h.open();
    assert_eq!(store.get_subscription(kept.id).await.unwrap(), Some(kept.clone()));
    assert_eq!(store.get_subscription(renewed.id).await.unwrap(), Some(renewed.clone()));
    let mut all = store.subscriptions().await.unwrap();
    all.sort_by_key(|subscription| subscription.id);
    assert_eq!(all, vec![kept, renewed]);
}

async fn lapsed_subscriptions_are_removed(h: &dyn Harness) {
    let store = h.open();
    let (lapsing, live) = (subscription("w1", at(10)), subscription("w1", at(11)));
    store.put_subscription(lapsing.clone()).await.unwrap();
    store.put_subscription(live.clone()).await.unwrap();
    assert_eq!(store.remove_lapsed_subscriptions(at(9)).await.unwrap(), 0);
    assert_eq!(store.remove_lapsed_subscriptions(at(10)).await.unwrap(), 1);
    assert_eq!(store.subscriptions().await.unwrap(), vec![live]);
}

/// The "became ready" news announced so far (without waiting).
async fn news(signals: &Signals) -> Vec<(Command, u64)> {
    let taken = tokio::time::timeout(std::time::Duration::ZERO, signals.take_became_ready());
    let mut news = taken.await.unwrap_or_default();
    news.sort();
    news
}

async fn a_queue_going_from_empty_to_ready_is_announced_with_its_depth(h: &dyn Harness) {
    let signals = Arc::new(Signals::new());
    let store = h.open_signalled(signals.clone());
    create(&*store, vec![task("a", 0, at(0)), task("a", 0, at(0))]).await;
    create(&*store, vec![task("b", 0, at(0))]).await;
    assert_eq!(news(&signals).await, vec![(command("a"), 2), (command("b"), 1)]);
    create(&*store, vec![task("a", 0, at(0))]).await;
    assert!(news(&signals).await.is_empty(), "a was not empty");

    let mut later = task("c", 0, at(20));
    later.max_attempts = 10;
    let delayed = create(&*store, vec![later]).await[0];
    assert!(news(&signals).await.is_empty(), "a delayed task is not ready");
    store.promote_due(at(20), 10).await.unwrap();
    assert_eq!(news(&signals).await, vec![(command("c"), 1)], "due");

    claim_one(&*store, only("c"), at(20)).await.unwrap();
    store.abandon(delayed, fence(None), at(21)).await.unwrap();
    assert_eq!(news(&signals).await, vec![(command("c"), 1)], "abandoned");

    claim_one(&*store, only("c"), at(21)).await.unwrap();
    store.nack(delayed, fence(None), 5, None, at(22)).await.unwrap();
    assert!(news(&signals).await.is_empty(), "not ready before the delay");
    store.promote_due(at(27), 10).await.unwrap();
    assert_eq!(news(&signals).await, vec![(command("c"), 1)], "nack delay elapsed");

    claim_one(&*store, only("c"), at(27)).await.unwrap();
    expire_all(&*store, at(58), 0).await;
    assert_eq!(news(&signals).await, vec![(command("c"), 1)], "lease expired");
}

async fn a_task_given_back_under_max_in_flight_is_announced_too(h: &dyn Harness) {
    let signals = Arc::new(Signals::new());
    let store = h.open_signalled(signals.clone());
    store.set_queue_settings(&command("m"), settings(false, Some(5), None), at(0)).await.unwrap();
    let id = create(&*store, vec![task("m", 0, at(0))]).await[0];
    assert_eq!(news(&signals).await, vec![(command("m"), 1)], "created");
    claim_one(&*store, only("m"), at(1)).await.unwrap();
    store.abandon(id, fence(None), at(2)).await.unwrap();
    assert_eq!(news(&signals).await, vec![(command("m"), 1)], "abandoned");
    claim_one(&*store, only("m"), at(3)).await.unwrap();
    store.nack(id, fence(None), 0, None, at(4)).await.unwrap();
    assert_eq!(news(&signals).await, vec![(command("m"), 1)], "nacked without a delay");
}

// ------------------------------------------------------------ queue control

fn settings(paused: bool, max_in_flight: Option<u32>, rate: Option<f64>) -> QueueSettings {
    QueueSettings { paused, max_in_flight, rate_per_second: rate, burst: None }
}

async fn cancel_one(
    store: &dyn Store,
    id: TaskId,
    now: Timestamp,
) -> Result<TaskState, TransitionError> {
    store.cancel(vec![id], Some("not needed".into()), now).await.unwrap().remove(0)
}

async fn cancel_works_in_every_state_and_stops_the_worker(h: &dyn Harness) {
    let store = h.open();
    let ids = create(
        &*store,
        vec![task("a", 0, at(0)), task("a", 0, at(1000)), task("b", 0, at(0)), hooked("c")],
    )
    .await;
    let (ready, delayed, held, hooked_id) = (ids[0], ids[1], ids[2], ids[3]);
    claim_one(&*store, only("b"), at(1)).await.unwrap();

    for id in [ready, delayed, held] {
        let cancelled = cancel_one(&*store, id, at(2)).await.unwrap();
        assert_eq!(cancelled.status, TaskStatus::Cancelled, "{id}");
        let record = store.get_result(id).await.unwrap().unwrap();
        assert_eq!(
            (record.status, record.error.as_deref()),
            (ResultStatus::Cancelled, Some("not needed"))
        );
    }
    assert!(
        claim_one(&*store, only("a"), at(2000)).await.is_none(),
        "cancelled tasks are not claimed"
    );
    let stats = store.queue_stats(&command("a")).await.unwrap();
    assert_eq!((stats.ready, stats.delayed, stats.in_progress), (0, 0, 0));

    // The worker of the cancelled delivery learns it at its next call.
    assert_eq!(
        store.heartbeat(held, fence(None), at(60), at(3)).await.unwrap_err().to_string(),
        "task was cancelled"
    );
    for refused in [
        store.abandon(held, fence(None), at(3)).await.map(|_| ()),
        store.nack(held, fence(None), 0, None, at(3)).await.map(|_| ()),
    ] {
        assert!(matches!(refused, Err(StoreError::Transition(TransitionError::Cancelled))));
    }
    let result =
        store.complete(vec![completion(held, "w1", ResultStatus::Completed)], at(3)).await.unwrap();
    assert_eq!(result[0].clone().map(|_| ()), Err(TransitionError::Cancelled));

    assert_eq!(
        cancel_one(&*store, held, at(4)).await,
        Err(TransitionError::Terminal(TaskStatus::Cancelled))
    );
    claim_one(&*store, only("c"), at(4)).await.unwrap();
    store
        .complete(vec![completion(hooked_id, "w1", ResultStatus::Completed)], at(5))
        .await
        .unwrap();
    assert_eq!(
        cancel_one(&*store, hooked_id, at(6)).await,
        Err(TransitionError::Terminal(TaskStatus::Completed))
    );
    assert_eq!(
        cancel_one(&*store, TaskId::generate(), at(6)).await,
        Err(TransitionError::NotFound)
    );
}

async fn a_cancelled_task_with_a_webhook_owes_a_callback(h: &dyn Harness) {
    let store = h.open();
    let id = create(&*store, vec![hooked("a")]).await[0];
    cancel_one(&*store, id, at(1)).await.unwrap();
    assert_eq!(owed(&*store, at(1)).await, vec![(id, 0)]);
}

async fn a_paused_command_is_skipped_until_resumed(h: &dyn Harness) {
    let signals = Arc::new(Signals::new());
    let store = h.open_signalled(signals.clone());
    create(&*store, vec![task("held", 0, at(0)), task("free", 0, at(0))]).await;
    store.set_queue_settings(&command("held"), settings(true, None, None), at(1)).await.unwrap();
    assert!(claim_one(&*store, only("held"), at(1)).await.is_none(), "paused");
    let any = claim_one(&*store, CommandFilter::All, at(1)).await.unwrap();
    assert_eq!(any.command, command("free"), "other commands are claimed");
    assert!(claim_one(&*store, CommandFilter::All, at(1)).await.is_none());
    assert!(store.queue_stats(&command("held")).await.unwrap().settings.paused);

    let woken = signals.command(&command("held"));
    store.set_queue_settings(&command("held"), settings(false, None, None), at(2)).await.unwrap();
    let wake = tokio::time::timeout(std::time::Duration::ZERO, woken.notified());
    assert!(wake.await.is_ok(), "a resume wakes parked claims");
    assert!(claim_one(&*store, only("held"), at(2)).await.is_some());
}

async fn a_pause_keeps_the_limits_stored_when_it_is(h: &dyn Harness) {
    let signals = Arc::new(Signals::new());
    let store = h.open_signalled(signals.clone());
    create(&*store, vec![task("p", 0, at(0))]).await;
    let limits = QueueSettings { burst: Some(3), ..settings(false, Some(2), Some(5.0)) };
    let before = store.set_queue_settings(&command("p"), limits, at(1)).await.unwrap();
    assert_eq!(before, QueueSettings::default(), "the settings before the write");

    // A pause changes the pause only: the limits stored stay (read and
    // written in one step, so a write just before it is not undone).
    let before = store.set_paused(&command("p"), true, at(2)).await.unwrap();
    assert_eq!(before, limits);
    let paused = QueueSettings { paused: true, ..limits };
    assert_eq!(store.queue_settings(&command("p")).await.unwrap(), paused);
    assert!(claim_one(&*store, only("p"), at(2)).await.is_none(), "paused");

    let woken = signals.command(&command("p"));
    assert_eq!(store.set_paused(&command("p"), false, at(3)).await.unwrap(), paused);
    let wake = tokio::time::timeout(std::time::Duration::ZERO, woken.notified());
    assert!(wake.await.is_ok(), "a resume wakes parked claims");
    assert_eq!(store.queue_settings(&command("p")).await.unwrap(), limits);
    assert!(claim_one(&*store, only("p"), at(3)).await.is_some(), "the bucket kept its tokens");
    // A pause of a command never used lists it, with no limits.
    assert_eq!(
        store.set_paused(&command("new"), true, at(4)).await.unwrap(),
        QueueSettings::default()
    );
    let listed = store.all_queue_stats().await.unwrap();
    assert!(listed.iter().any(|stats| stats.command == command("new") && stats.settings.paused));
}

async fn max_in_flight_holds_across_concurrent_claimers(h: &dyn Harness) {
    let store = h.open();
    let tasks: Vec<Task> = (0..200).map(|_| task("capped", 0, at(0))).collect();
    create(&*store, tasks).await;
    store
        .set_queue_settings(&command("capped"), settings(false, Some(3), None), at(0))
        .await
        .unwrap();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut claimers = Vec::new();
    for worker in 0..16 {
        let (store, done) = (store.clone(), done.clone());
        claimers.push(tokio::spawn(async move {
            let name = format!("w{worker}");
            loop {
                let spec = ClaimSpec {
                    commands: only("capped"),
                    worker_id: name.clone(),
                    lease_until: at(600),
                    count: 2,
                };
                let claimed = store.claim(&spec, at(1)).await.unwrap();
                if claimed.is_empty() {
                    if done.load(std::sync::atomic::Ordering::SeqCst) >= 200 {
                        return;
                    }
                    tokio::task::yield_now().await;
                    continue;
                }
                for task in claimed {
                    let item = completion(task.id, &name, ResultStatus::Completed);
                    store.complete(vec![item], at(2)).await.unwrap()[0].clone().unwrap();
                    done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        }));
    }
    let mut samples = 0;
    let mut most = 0;
    while done.load(std::sync::atomic::Ordering::SeqCst) < 200 {
        let in_progress = store.queue_stats(&command("capped")).await.unwrap().in_progress;
        most = most.max(in_progress);
        samples += 1;
        tokio::task::yield_now().await;
    }
    for claimer in claimers {
        claimer.await.unwrap();
    }
    assert!(most <= 3, "{most} in progress at once (of {samples} samples)");
    assert!(samples > 10, "sampled throughout: {samples}");
}

async fn a_rate_limit_spaces_claims(h: &dyn Harness) {
    let store = h.open();
    let tasks: Vec<Task> = (0..400).map(|_| task("paced", 0, at(0))).collect();
    create(&*store, tasks).await;
    store
        .set_queue_settings(&command("paced"), settings(false, None, Some(20.0)), at(0))
        .await
        .unwrap();
    let mut claimed = 0;
    for step in 0..1000 {
        // Ten seconds in 10 ms steps, claiming all a claim may take.
        let now = at(0).plus_millis(step * 10);
        claimed +=
            store.claim(&spec(only("paced"), 100, now.plus_seconds(60)), now).await.unwrap().len();
    }
    assert!((180..=220).contains(&claimed), "20 per second for 10 s: {claimed}");
    let now = at(0).plus_millis(9_990); // the last step: its token was just taken
    let next = store.next_claimable_at(&only("paced"), now).expect("held back by the rate");
    assert!(next > now && next <= now.plus_millis(50), "{next:?}");
    assert!(store.next_claimable_at(&only("other"), now).is_none());
    // A pause and resume keeps the bucket: no burst slips through.
    let rated = settings(false, None, Some(20.0));
    store
        .set_queue_settings(&command("paced"), QueueSettings { paused: true, ..rated }, now)
        .await
        .unwrap();
    store.set_queue_settings(&command("paced"), rated, now).await.unwrap();
    assert_eq!(store.next_claimable_at(&only("paced"), now), Some(next), "the bucket as it was");
    // So do the same settings written again: no claim gets a token yet.
    store.set_queue_settings(&command("paced"), rated, now).await.unwrap();
    let claimed = store.claim(&spec(only("paced"), 100, now.plus_seconds(60)), now).await.unwrap();
    assert_eq!(claimed.len(), 0, "a pause, a resume and a rewrite refilled the bucket");
    // A new rate starts with a full bucket.
    let faster = settings(false, None, Some(40.0));
    store.set_queue_settings(&command("paced"), faster, now).await.unwrap();
    let claimed = store.claim(&spec(only("paced"), 100, now.plus_seconds(60)), now).await.unwrap();
    assert_eq!(claimed.len(), 1, "a new rate's bucket (burst 1)");
}

/// Creates `count` tasks of `name` and dead-letters each by a nack with
/// `reason(i)`; their ids, oldest first.
async fn dead_letters(
    store: &dyn Store,
    name: &str,
    count: usize,
    reason: impl Fn(usize) -> String,
) -> Vec<TaskId> {
    let mut ids = Vec::new();
    for chunk in 0..count.div_ceil(100) {
        let size = (count - chunk * 100).min(100);
        let tasks: Vec<Task> = (0..size)
            .map(|_| {
                let mut t = task(name, 0, at(0));
                t.max_attempts = 1;
                t
            })
            .collect();
        let created = create(store, tasks).await;
        let claimed = store.claim(&spec(only(name), size, at(600)), at(1)).await.unwrap();
        assert_eq!(claimed.len(), size);
        for (n, id) in created.iter().enumerate() {
            let index = chunk * 100 + n;
            let outcome = store
                .nack(*id, fence(None), 0, Some(reason(index)), at(2 + index as i64))
                .await
                .unwrap();
            assert_eq!(outcome, Retried::DeadLettered);
        }
        ids.extend(created);
    }
    ids
}

async fn dead_letters_page_exactly_once_with_a_filter(h: &dyn Harness) {
    let store = h.open();
    let reason = |i: usize| {
        if i.is_multiple_of(2) { "upstream timeout".to_string() } else { "oom".to_string() }
    };
    let ids = dead_letters(&*store, "dl", 2500, reason).await;
    assert_eq!(store.queue_stats(&command("dl")).await.unwrap().dlq, 2500);
    let filter = DeadLetterFilter { text: Some("timeout".into()), ..DeadLetterFilter::default() };
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.dead_letters(&command("dl"), &filter, cursor, 100).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.windows(2).all(|pair| pair[0] > pair[1]), "newest first");
        cursor = page.last().copied();
        seen.extend(page.into_iter().map(|(_, id)| id));
    }
    let expected: HashSet<TaskId> = ids.iter().step_by(2).copied().collect();
    assert_eq!(seen.len(), 1250, "each once");
    assert_eq!(seen.iter().copied().collect::<HashSet<_>>(), expected);

    // Failed in (at(2 + 100), at(2 + 200)): 99 of them.
    let window = DeadLetterFilter {
        after: Some(at(102)),
        before: Some(at(202)),
        ..DeadLetterFilter::default()
    };
    let page = store.dead_letters(&command("dl"), &window, None, 1000).await.unwrap();
    assert_eq!(page.len(), 99);
    assert!(page.iter().all(|(failed, _)| *failed > at(102) && *failed < at(202)));
}

async fn replayed_dead_letters_come_back_once_each_at_their_turn(h: &dyn Harness) {
    let store = h.open();
    let ids = dead_letters(&*store, "again", 1000, |_| "flaky".into()).await;
    let now = at(5000);
    // 200 per second: the last one 4.995 s after the first.
    let items: Vec<(TaskId, Timestamp)> =
        ids.iter().enumerate().map(|(i, id)| (*id, now.plus_millis(i as i64 * 5))).collect();
    let replayed = store.replay(&command("again"), items, now).await.unwrap();
    assert_eq!(replayed.len(), 1000);
    let replay_again = store.replay(&command("again"), vec![(ids[0], now)], now).await.unwrap();
    assert!(replay_again.is_empty(), "no longer a dead letter");
    let first = store.get_task(ids[0]).await.unwrap().unwrap().state;
    assert_eq!((first.status, first.attempts, first.replays), (TaskStatus::Pending, 1, 1));
    assert!(store.get_result(ids[0]).await.unwrap().is_none(), "its dead-letter record is gone");
    assert_eq!(store.queue_stats(&command("again")).await.unwrap().dlq, 0);

    let mut claimed = HashSet::new();
    let mut claimed_by_half = 0;
    for step in 0..=100 {
        let t = now.plus_millis(step * 50);
        store.promote_due(t, 10_000).await.unwrap();
        for task in store.claim(&spec(only("again"), 100, t.plus_seconds(600)), t).await.unwrap() {
            assert!(claimed.insert(task.id), "{} claimed twice", task.id);
        }
        if step == 50 {
            claimed_by_half = claimed.len();
        }
    }
    assert_eq!(claimed.len(), 1000, "each once");
    assert!((450..=550).contains(&claimed_by_half), "half after 2.5 s: {claimed_by_half}");
}

/// A replay gives a dead letter `maxAttempts` deliveries more (however
/// many it had, abandons included), numbered on from the old ones, so
/// that a worker still holding an old delivery is fenced out (with a pool
/// sharing one identity too); its record and its owed callback are gone,
/// also after a restart.
async fn a_replay_gives_a_round_more_and_fences_out_the_old_deliveries(h: &dyn Harness) {
    let id;
    {
        let store = h.open();
        let mut twice = hooked("round");
        twice.max_attempts = 2;
        id = create(&*store, vec![twice]).await[0];
        claim_one(&*store, only("round"), at(1)).await.unwrap();
        store.nack(id, fence(Some(1)), 0, None, at(2)).await.unwrap();
        // Delivery 2 is given back (not counted against the limit);
        // delivery 3 lapses: dead-lettered by the reaper; its holder stalls.
        claim_one(&*store, only("round"), at(2)).await.unwrap();
        store.abandon(id, fence(Some(2)), at(2)).await.unwrap();
        claim_one(&*store, only("round"), at(3)).await.unwrap();
        assert_eq!(expire_all(&*store, at(40), 0).await, vec![Retried::DeadLettered]);
        assert!(store.callback_owed(id).await.unwrap().is_some());
        let replayed = store.replay(&command("round"), vec![(id, at(41))], at(41)).await;
        assert_eq!(replayed.unwrap(), vec![id]);
        assert_eq!(store.callback_owed(id).await.unwrap(), None, "the dead letter's is dropped");
        store.close().await.unwrap();
    }
    let store = h.open();
    assert_eq!(store.get_result(id).await.unwrap(), None, "the record stays deleted");
    assert_eq!(store.callback_owed(id).await.unwrap(), None, "the callback stays dropped");
    assert!(owed(&*store, at(1000)).await.is_empty());

    let again = claim_one(&*store, only("round"), at(42)).await.unwrap();
    assert_eq!((again.state.attempts, again.state.replays, again.state.round_start), (4, 1, 3));
    let state = store.get_state(id).await.unwrap().unwrap();
    assert_eq!(state, again.state, "the state read alone is the whole state");
    let stale = |attempt| Err(TransitionError::StaleAttempt { given: attempt, current: 4 });
    let refusal = |answer: Result<(), StoreError>| match answer {
        Err(StoreError::Transition(refused)) => Err(refused),
        other => panic!("not a refusal: {other:?}"),
    };
    for attempt in [1, 2, 3] {
        let beat = store.heartbeat(id, fence(Some(attempt)), at(100), at(43)).await;
        assert_eq!(refusal(beat.map(|_| ())), stale(attempt));
        let nacked = store.nack(id, fence(Some(attempt)), 0, None, at(43)).await;
        assert_eq!(refusal(nacked.map(|_| ())), stale(attempt));
    }
    let mut late = completion(id, "w1", ResultStatus::Failed);
    late.attempt = Some(3);
    let out = store.complete(vec![late], at(43)).await.unwrap();
    assert_eq!(out[0].as_ref().map(|_| ()).map_err(Clone::clone), stale(3));

    // Its round: delivery 4 lapses (requeued, the first of the round for
    // the backoff), delivery 5 is its last.
    let ended = store.lease_ends(at(80), 10).await.unwrap();
    assert_eq!(ended, vec![LeaseEnd { task_id: id, attempts: 4, attempt_in_round: 1 }]);
    assert_eq!(expire_all(&*store, at(80), 0).await, vec![Retried::Requeued { delay_seconds: 0 }]);
    claim_one(&*store, only("round"), at(81)).await.unwrap();
    let last = store.nack(id, fence(Some(5)), 0, None, at(82)).await.unwrap();
    assert_eq!(last, Retried::DeadLettered);
    let dead = store.get_task(id).await.unwrap().unwrap().state;
    assert_eq!((dead.attempts, dead.round_start, dead.replays), (5, 3, 1));
}

async fn a_purge_leaves_no_trace(h: &dyn Harness) {
    let store = h.open();
    let mut keyed = task("gone", 0, at(0));
    keyed.max_attempts = 1;
    keyed.idempotency_key = Some("once".into());
    let id = create(&*store, vec![keyed]).await[0];
    claim_one(&*store, only("gone"), at(1)).await.unwrap();
    store.nack(id, fence(None), 0, None, at(2)).await.unwrap();
    let others = dead_letters(&*store, "gone", 3, |_| "x".into()).await;
    let not_dead = create(&*store, vec![task("gone", 0, at(0))]).await[0];

    let purged = store.purge(&command("gone"), vec![id, others[0], not_dead]).await.unwrap();
    assert_eq!(purged, vec![id, others[0]], "only dead letters of the command");
    assert!(store.get_task(id).await.unwrap().is_none());
    assert!(store.get_result(id).await.unwrap().is_none());
    let mut again = task("gone", 0, at(3));
    again.idempotency_key = Some("once".into());
    assert!(
        matches!(&store.create(vec![again]).await.unwrap()[0], Created::New(_)),
        "the key is free"
    );
    assert_eq!(store.queue_stats(&command("gone")).await.unwrap().dlq, 2);
}

async fn settings_and_the_dead_letter_queue_survive_a_restart(h: &dyn Harness) {
    let limits = QueueSettings {
        paused: true,
        max_in_flight: Some(7),
        rate_per_second: Some(2.5),
        burst: Some(4),
    };
    let dead;
    {
        let store = h.open();
        dead = dead_letters(&*store, "kept", 3, |_| "x".into()).await;
        store.set_queue_settings(&command("kept"), limits, at(5)).await.unwrap();
        store.close().await.unwrap();
    }
    let store = h.open();
    assert_eq!(store.queue_settings(&command("kept")).await.unwrap(), limits);
    let page =
        store.dead_letters(&command("kept"), &DeadLetterFilter::default(), None, 10).await.unwrap();
    let mut ids: Vec<TaskId> = page.into_iter().map(|(_, id)| id).collect();
    ids.reverse();
    assert_eq!(ids, dead);
    create(&*store, vec![task("kept", 0, at(0))]).await;
    assert!(claim_one(&*store, only("kept"), at(10)).await.is_none(), "still paused");
}

/// A command paused (or limited) before its first task is listed with its
/// settings, as one with tasks is.
async fn a_command_with_settings_and_no_task_is_listed(h: &dyn Harness) {
    let store = h.open();
    store
        .set_queue_settings(&command("early"), settings(true, Some(2), None), at(1))
        .await
        .unwrap();
    let all = store.all_queue_stats().await.unwrap();
    let listed: Vec<&str> = all.iter().map(|stats| stats.command.as_str()).collect();
    assert_eq!(listed, ["early"]);
    assert_eq!(all[0], store.queue_stats(&command("early")).await.unwrap());
    assert_eq!((all[0].ready, all[0].in_progress), (0, 0));
    assert_eq!(store.queue_settings(&command("early")).await.unwrap().max_in_flight, Some(2));
}

async fn tasks_list_newest_first_by_command_and_status(h: &dyn Harness) {
    let store = h.open();
    let a = create(&*store, (0..5).map(|_| task("la", 0, at(0))).collect()).await;
    let b = create(&*store, (0..3).map(|_| task("lb", 0, at(0))).collect()).await;
    claim_one(&*store, only("la"), at(1)).await.unwrap(); // a[0] in progress
    let all = store.list_tasks(None, None, None, 100).await.unwrap();
    let mut expected: Vec<TaskId> = a.iter().chain(&b).copied().collect();
    expected.reverse();
    assert_eq!(all, expected, "newest first");
    let pending_a =
        store.list_tasks(Some(&command("la")), Some(TaskStatus::Pending), None, 2).await.unwrap();
    assert_eq!(pending_a, vec![a[4], a[3]]);
    let next = store
        .list_tasks(Some(&command("la")), Some(TaskStatus::Pending), Some(a[3]), 10)
        .await
        .unwrap();
    assert_eq!(next, vec![a[2], a[1]]);
    let running = store.list_tasks(None, Some(TaskStatus::InProgress), None, 10).await.unwrap();
    assert_eq!(running, vec![a[0]]);
}

/// A status that few tasks have is listed however many tasks of other
/// statuses lie between them, across commands, newest first.
async fn a_rare_status_is_listed_through_many_other_tasks(h: &dyn Harness) {
    let store = h.open();
    let oldest = create(&*store, vec![task("shallow", 0, at(0))]).await[0];
    let deep = create(&*store, (0..4_500).map(|_| task("deep", 0, at(0))).collect()).await;
    let newest = create(&*store, vec![task("shallow", 0, at(0))]).await[0];
    for name in ["shallow", "deep", "shallow"] {
        let claimed = claim_one(&*store, only(name), at(1)).await.unwrap();
        store
            .complete(vec![completion(claimed.id, "w1", ResultStatus::Completed)], at(2))
            .await
            .unwrap();
    }
    let completed = Some(TaskStatus::Completed);
    let listed = store.list_tasks(None, completed, None, 10).await.unwrap();
    assert_eq!(listed, vec![newest, deep[0], oldest]);
    assert_eq!(store.list_tasks(None, completed, None, 2).await.unwrap(), vec![newest, deep[0]]);
    let below = store.list_tasks(None, completed, Some(deep[0]), 10).await.unwrap();
    assert_eq!(below, vec![oldest]);
    let deep_command = command("deep");
    let pending = store.list_tasks(Some(&deep_command), Some(TaskStatus::Pending), None, 3);
    assert_eq!(pending.await.unwrap(), vec![deep[4_499], deep[4_498], deep[4_497]]);
}

macro_rules! conformance_suite {

    ($backend:ident, $harness:expr) => {
        mod $backend {
            use super::*;
            conformance_suite!(@tests $harness;
                claims_highest_priority_first_then_fifo,
                claim_takes_only_the_requested_commands,
                claim_marks_the_delivery,
                batch_claim_returns_up_to_count,
                delayed_tasks_wait_until_due,
                heartbeat_extends_the_lease_of_the_holder_only,
                abandon_requeues_at_once_keeping_attempts,
                a_heartbeat_after_the_lease_ended_is_refused,
                a_result_after_the_lease_ended_is_accepted_until_redelivery,
                a_claim_answers_what_it_stored_and_a_result_keeps_nothing_of_the_delivery,
                an_expiry_skips_a_task_that_moved_on,
                a_batch_sees_its_own_earlier_items,
                nack_requeues_after_the_delay,
                the_last_delivery_dead_letters_on_nack,
                expired_leases_requeue_then_dead_letter,
                results_are_terminal_and_idempotent,
                a_result_with_the_next_claim_stores_it_then_claims_in_order,
                a_refused_result_claims_no_next_task,
                idempotency_keys_return_the_live_task,
                cleanup_deletes_only_old_terminal_tasks,
                cleanup_takes_the_oldest_first_across_commands,
                concurrent_claimers_never_share_a_task,
                state_survives_a_restart,
                a_result_is_kept_as_its_text_over_a_restart,
                every_command_ever_used_is_listed_after_cleanup_and_restart,
                a_new_command_past_the_bound_is_refused_and_known_ones_are_not,
                a_task_with_a_webhook_owes_one_callback_until_it_is_done,
                dead_lettering_owes_a_callback,
                owed_callbacks_survive_a_restart,
                a_tasks_owed_callback_is_read_until_it_is_done,
                a_callbacks_outcome_is_kept_until_its_task_goes,
                subscriptions_are_stored_renewed_deleted_and_kept_over_a_restart,
                lapsed_subscriptions_are_removed,
                a_queue_going_from_empty_to_ready_is_announced_with_its_depth,
                a_task_given_back_under_max_in_flight_is_announced_too,
                cancel_works_in_every_state_and_stops_the_worker,
                a_cancelled_task_with_a_webhook_owes_a_callback,
                a_paused_command_is_skipped_until_resumed,
                a_pause_keeps_the_limits_stored_when_it_is,
                max_in_flight_holds_across_concurrent_claimers,
                a_rate_limit_spaces_claims,
                dead_letters_page_exactly_once_with_a_filter,
                replayed_dead_letters_come_back_once_each_at_their_turn,
                a_replay_gives_a_round_more_and_fences_out_the_old_deliveries,
                a_purge_leaves_no_trace,
                settings_and_the_dead_letter_queue_survive_a_restart,
                a_command_with_settings_and_no_task_is_listed,
                tasks_list_newest_first_by_command_and_status,
                a_rare_status_is_listed_through_many_other_tasks,
            );
        }
    };
    (@tests $harness:expr; $($test:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                // `None`: the backend is not available here (a notice was printed).
                let Some(harness) = $harness else { return };
                super::$test(&harness).await;
            }
        )*
    };
}

conformance_suite!(embedded_backend, embedded());
conformance_suite!(redis_backend, redis());
