//! The Redis backend merges creates, claims and results that arrive
//! together into one script call each (`store/redis/batch.rs`): each
//! caller still gets exactly its own answer, and rules that span callers
//! (one task per claim, a shared rate limit, idempotency keys, a repeated
//! result) hold inside a merged call as they do across calls. Runs on the
//! store's production clock (Redis's `TIME`), where merging is on, against
//! a `redis-server` of its own (skipped with a notice without one).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::Arc;

use codeq_core::lifecycle::Submission;
use codeq_core::{
    Command, Priority, QueueSettings, ResultStatus, Task, TaskId, TaskState, Timestamp,
};
use codeq_server::store::redis::{RedisOptions, RedisStore, Threading, TimeSource};
use codeq_server::store::{
    ClaimSpec, CommandFilter, Completed, Completion, Created, Signals, Store,
};
use futures_util::future::join_all;

#[path = "support/redis_server.rs"]
mod redis_server;

struct Fixture {
    store: Arc<RedisStore>,
    server: redis_server::RedisServer,
}

async fn fixture() -> Option<Fixture> {
    let server = redis_server::RedisServer::start()?;
    // On the test's single-threaded runtime, so that the calls each test
    // makes at once are merged the same way every run.
    let options =
        RedisOptions { threading: Threading::Current, ..server.store_options(TimeSource::Redis) };
    let store = RedisStore::connect(options, Arc::new(Signals::new())).await.unwrap();
    Some(Fixture { store, server })
}

impl Fixture {
    /// EVALSHA calls Redis has run so far (scripts' own commands aside).
    async fn script_calls(&self) -> u64 {
        let client = redis::Client::open(format!("redis://{}/", self.server.addr())).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let info: String =
            redis::cmd("INFO").arg("commandstats").query_async(&mut connection).await.unwrap();
        info.lines()
            .find_map(|line| line.strip_prefix("cmdstat_evalsha:calls="))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |calls| calls.parse().unwrap())
    }
}

fn command(name: &str) -> Command {
    Command::parse(name).unwrap()
}

fn task(name: &str, key: Option<&str>) -> Task {
    task_at(name, key, Timestamp::now())
}

/// A task its caller made at `now` (its visible time too).
fn task_at(name: &str, key: Option<&str>, now: Timestamp) -> Task {
    Task {
        id: TaskId::generate(),
        command: command(name),
        payload: r#"{"n":1}"#.into(),
        priority: Priority::clamped(0),
        webhook: None,
        max_attempts: 3,
        idempotency_key: key.map(str::to_string),
        run_at: None,
        created_at: now,
        created_by: "producer".into(),
        state: TaskState::new(now, now),
    }
}

/// A claim whose lease its caller asked for at `now`, for `seconds`.
fn claim_at(name: &str, worker: &str, now: Timestamp, seconds: u64) -> ClaimSpec {
    ClaimSpec { lease_until: now.plus_seconds(seconds), ..claim_spec(name, worker) }
}

fn claim_spec(name: &str, worker: &str) -> ClaimSpec {
    ClaimSpec {
        commands: CommandFilter::Only(vec![command(name)]),
        worker_id: worker.into(),
        lease_until: Timestamp::now().plus_seconds(60),
        count: 1,
    }
}

fn completion(id: TaskId, worker: &str) -> Completion {
    let submission = Submission {
        status: ResultStatus::Completed,
        result: Some(serde_json::json!({"ok": true}).into()),
        error: None,
        artifacts: Vec::new(),
    };
    Completion { task_id: id, worker_id: worker.into(), attempt: None, submission }
}

// One thread: every call below is queued before the batch tasks run, so
// each group goes to Redis as one call.
#[tokio::test(flavor = "current_thread")]
async fn claims_arriving_together_go_as_one_call_and_each_gets_its_own_task() {
    let Some(f) = fixture().await else { return };
    let store: &dyn Store = &*f.store;
    store.create((0..40).map(|_| task("ma", None)).collect()).await.unwrap();
    store.create((0..40).map(|_| task("mb", None)).collect()).await.unwrap();
    let before = f.script_calls().await;
    let specs: Vec<ClaimSpec> = (0..80)
        .map(|i| match i % 2 {
            0 => claim_spec("ma", &format!("wa-{i}")),
            _ => claim_spec("mb", &format!("wb-{i}")),
        })
        .collect();
    let claims = join_all(specs.iter().map(|spec| store.claim(spec, Timestamp::now()))).await;
    let calls = f.script_calls().await - before;
    let mut seen = HashSet::new();
    for (spec, claimed) in specs.iter().zip(claims) {
        let claimed = claimed.unwrap();
        assert_eq!(claimed.len(), 1, "{} got {} tasks", spec.worker_id, claimed.len());
        let task = &claimed[0];
        assert!(spec.commands.allows(&task.command), "{} got a {}", spec.worker_id, task.command);
        assert_eq!(task.state.worker_id.as_deref(), Some(spec.worker_id.as_str()));
        assert!(seen.insert(task.id), "task {} claimed twice", task.id);
    }
    // One call, or two when Redis first answered NOSCRIPT.
    assert!(calls <= 2, "80 claims took {calls} script calls");
}

#[tokio::test(flavor = "current_thread")]
async fn claims_merged_into_one_call_share_their_command_s_rate_limit() {
    let Some(f) = fixture().await else { return };
    let store: &dyn Store = &*f.store;
    let limited =
        QueueSettings { rate_per_second: Some(0.01), burst: Some(5), ..Default::default() };
    store.set_queue_settings(&command("rl"), limited, Timestamp::now()).await.unwrap();
    store.create((0..20).map(|_| task("rl", None)).collect()).await.unwrap();
    let specs: Vec<ClaimSpec> = (0..20).map(|i| claim_spec("rl", &format!("w-{i}"))).collect();
    let claims = join_all(specs.iter().map(|spec| store.claim(spec, Timestamp::now()))).await;
    let taken: usize = claims.into_iter().map(|claimed| claimed.unwrap().len()).sum();
    assert_eq!(taken, 5, "a burst of 5 gives 5 tasks, merged or not");
    let filter = CommandFilter::Only(vec![command("rl")]);
    assert!(store.next_claimable_at(&filter, Timestamp::now()).is_some(), "the hold is known");
}

#[tokio::test(flavor = "current_thread")]
async fn creates_merged_into_one_call_keep_idempotency_between_callers() {
    let Some(f) = fixture().await else { return };
    let store: &dyn Store = &*f.store;
    let batches = vec![
        vec![task("ik", Some("same"))],
        vec![task("ik", None), task("ik", None)],
        vec![task("ik", Some("same"))],
    ];
    let created = join_all(batches.into_iter().map(|batch| store.create(batch))).await;
    let created: Vec<Vec<Created>> = created.into_iter().map(Result::unwrap).collect();
    assert_eq!(created.iter().map(Vec::len).collect::<Vec<_>>(), vec![1, 2, 1]);
    let Created::New(first) = &created[0][0] else { panic!("the first key holder is new") };
    let Created::Existing(holder) = &created[2][0] else { panic!("the second is the holder") };
    assert_eq!(holder.id, first.id);
    assert!(created[1].iter().all(|outcome| matches!(outcome, Created::New(_))));
}

#[tokio::test(flavor = "current_thread")]
async fn results_merged_into_one_call_are_each_answered_on_their_own() {
    let Some(f) = fixture().await else { return };
    let store: &dyn Store = &*f.store;
    store.create(vec![task("rs", None), task("rs", None)]).await.unwrap();
    let spec = ClaimSpec { count: 2, ..claim_spec("rs", "w") };
    let held = store.claim(&spec, Timestamp::now()).await.unwrap();
    assert_eq!(held.len(), 2);
    let (a, b) = (held[0].id, held[1].id);
    let items = vec![
        vec![completion(a, "w")],
        vec![completion(a, "w")],
        vec![completion(b, "someone-else")],
    ];
    let outcomes = join_all(items.into_iter().map(|item| store.complete(item, Timestamp::now())));
    let outcomes: Vec<_> = outcomes.await.into_iter().map(|o| o.unwrap().remove(0)).collect();
    assert!(matches!(outcomes[0], Ok(Completed::Stored(_))), "{:?}", outcomes[0]);
    assert!(matches!(outcomes[1], Ok(Completed::Repeated(_))), "{:?}", outcomes[1]);
    assert!(outcomes[2].is_err(), "another worker's result is refused: {:?}", outcomes[2]);
}

#[tokio::test(flavor = "current_thread")]
async fn results_with_next_claims_merged_into_one_call_each_get_their_own_next_task() {
    let Some(f) = fixture().await else { return };
    let store: &dyn Store = &*f.store;
    let workers: Vec<String> = (0..24).map(|i| format!("w-{i}")).collect();
    store.create((0..24).map(|_| task("rn", None)).collect()).await.unwrap();
    let mut held = Vec::new();
    for worker in &workers {
        held.push(store.claim(&claim_spec("rn", worker), Timestamp::now()).await.unwrap()[0].id);
    }
    // 20 more ready: the first 20 results get one each, the last 4 none.
    store.create((0..20).map(|_| task("rn", None)).collect()).await.unwrap();
    // The first result is another worker's: refused, and it claims nothing.
    let mut items: Vec<(TaskId, &str)> = vec![(held[1], workers[0].as_str())];
    items.extend(held.iter().zip(&workers).map(|(id, worker)| (*id, worker.as_str())));
    let before = f.script_calls().await;
    let mut specs: Vec<ClaimSpec> =
        items.iter().map(|(_, worker)| claim_spec("rn", worker)).collect();
    // The refused item's claim names three commands: its arguments are
    // skipped whole.
    specs[0].commands = CommandFilter::Only(vec![command("rn"), command("x1"), command("x2")]);
    let done = join_all(items.iter().zip(&specs).map(|((id, worker), spec)| {
        store.complete_and_claim(completion(*id, worker), spec, Timestamp::now())
    }))
    .await;
    let calls = f.script_calls().await - before;
    assert!(done[0].as_ref().unwrap().outcome.is_err(), "another worker's result is refused");
    let mut seen = HashSet::new();
    let mut with_next = 0;
    for (done, (id, worker)) in done.into_iter().zip(&items) {
        let done = done.unwrap();
        let next = done.next.unwrap();
        if done.outcome.is_err() {
            assert!(next.is_empty(), "a refused result claimed {next:?}");
            continue;
        }
        let Ok(Completed::Stored(record)) = done.outcome else {
            panic!("{worker}: {:?}", done.outcome)
        };
        assert_eq!(record.task_id, *id);
        for task in &next {
            assert_eq!(task.state.worker_id.as_deref(), Some(*worker));
            assert!(seen.insert(task.id), "task {} claimed twice", task.id);
            assert!(!held.contains(&task.id), "a finished task was claimed again");
        }
        with_next += next.len();
    }
    assert_eq!(with_next, 20, "each ready task went to one worker");
    assert!(calls <= 2, "25 results took {calls} script calls");
}

#[tokio::test(flavor = "current_thread")]
async fn tasks_from_callers_merged_at_different_moments_are_all_ready_at_once() {
    let Some(f) = fixture().await else { return };
    let store: &dyn Store = &*f.store;
    // One caller made its task 50 ms before the other (it waited in the
    // queue): each task's times are its own caller's, so both are ready now.
    let now = Timestamp::now();
    let (early, late) = tokio::join!(
        store.create(vec![task_at("mo", None, now.plus_millis(-50))]),
        store.create(vec![task_at("mo", None, now)]),
    );
    let (Created::New(early), Created::New(late)) =
        (early.unwrap().remove(0), late.unwrap().remove(0))
    else {
        panic!("both are new")
    };
    let spec = ClaimSpec { count: 2, ..claim_spec("mo", "w") };
    let claimed = store.claim(&spec, Timestamp::now()).await.unwrap();
    let ids: HashSet<TaskId> = claimed.iter().map(|task| task.id).collect();
    assert_eq!(ids, HashSet::from([early.id, late.id]), "both claimable at once");
    let stored_after = Timestamp::now().plus_millis(1_000);
    assert!(claimed.iter().all(|task| task.created_at <= stored_after), "no time in the future");
}

#[tokio::test(flavor = "current_thread")]
async fn a_lease_runs_from_the_moment_its_caller_asked_whatever_the_merge() {
    let Some(f) = fixture().await else { return };
    let store: &dyn Store = &*f.store;
    store.create(vec![task("ml", None), task("ml", None)]).await.unwrap();
    // Two callers, one of which asked 30 s before the call was sent: each
    // lease still lasts the 60 s its caller asked for, from Redis's now.
    let now = Timestamp::now();
    let asked_earlier = now.plus_millis(-30_000);
    let (early, late) = (claim_at("ml", "wa", asked_earlier, 60), claim_at("ml", "wb", now, 60));
    let (a, b) = tokio::join!(store.claim(&early, asked_earlier), store.claim(&late, now));
    for claimed in [a.unwrap(), b.unwrap()] {
        let lease = claimed[0].state.lease_until.unwrap();
        assert!(lease >= now.plus_seconds(59), "lease ends {lease:?}, asked 60 s from {now:?}");
        assert!(lease <= Timestamp::now().plus_seconds(61), "lease ends {lease:?}");
    }
}

#[tokio::test]
async fn a_run_at_the_producer_gave_is_kept_to_the_millisecond_on_redis_s_clock() {
    let Some(fixture) = fixture().await else { return };
    // Redis's clock and this one differ by a millisecond in a good share
    // of calls, even on one host: moments this replica computed move by
    // that much, a moment the producer gave must not. (One that is the
    // creation time plus whole seconds is a delay's, which moves with the
    // creation time: not this one.)
    for _ in 0..300 {
        let mut scheduled = task("given", None);
        let given = scheduled.created_at.plus_millis(3_600_007);
        scheduled.run_at = Some(given);
        scheduled.state.visible_at = given;
        let created = fixture.store.create(vec![scheduled]).await.unwrap();
        let Created::New(created) = &created[0] else { panic!("{created:?}") };
        assert_eq!(created.run_at, Some(given), "as answered");
        assert_eq!(created.state.visible_at, given, "as answered");
        let stored = fixture.store.get_task(created.id).await.unwrap().unwrap();
        assert_eq!((stored.run_at, stored.state.visible_at), (Some(given), given), "as stored");
    }
}
