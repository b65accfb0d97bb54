//! The embedded backend's journal, with segments small enough to roll
//! often: sealed segments recover, compaction reclaims space without
//! losing a live record (tasks, results, callbacks owed, subscriptions;
//! also across a restart or a crash), and damage to
//! the files is refused at open, with nothing changed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use codeq_core::lifecycle::Submission;
use codeq_core::{
    Command, DeliveryMode, Priority, ResultStatus, Subscription, Task, TaskId, TaskState, Timestamp,
};
use codeq_server::config::Durability;
use codeq_server::store::embedded::log::fault::FaultFs;
use codeq_server::store::embedded::log::frame;
use codeq_server::store::embedded::log::fs::RealFs;
use codeq_server::store::embedded::log::spare::SPARE_NAME;
use codeq_server::store::embedded::log::{LogOptions, OpenError};
use codeq_server::store::embedded::{EmbeddedOptions, EmbeddedStore};
use codeq_server::store::{
    CallbackOutcome, ClaimSpec, CommandFilter, Completion, Created, SettledCallback, Signals,
    Store, StoreError,
};

const T0: Timestamp = Timestamp(1_600_000_000_000);

/// Segments of about 8 KiB; compaction whenever a sealed segment exists
/// and the journal is over twice its live records.
fn options() -> EmbeddedOptions {
    let log = LogOptions { segment_bytes: 8 * 1024, ..LogOptions::new(Durability::Fsync) };
    EmbeddedOptions { log, compact_above_bytes: 0, ..EmbeddedOptions::new(Durability::Fsync) }
}

fn open(dir: &Path) -> Result<Arc<EmbeddedStore>, OpenError> {
    EmbeddedStore::open_with(Arc::new(RealFs), dir, options(), Arc::new(Signals::new()))
}

fn task(n: usize) -> Task {
    Task {
        id: TaskId::generate(),
        command: Command::parse("roll").unwrap(),
        payload: format!(r#"{{"n":{n:06},"pad":"{}"}}"#, "x".repeat(100)),
        priority: Priority::default(),
        webhook: None,
        max_attempts: 3,
        idempotency_key: None,
        run_at: None,
        created_at: T0,
        created_by: "p".into(),
        state: TaskState::new(T0, T0),
    }
}

fn subscription() -> Subscription {
    Subscription {
        id: uuid::Uuid::now_v7(),
        owner: "w".into(),
        callback_url: "https://workers.example.com/ready".into(),
        commands: None,
        mode: DeliveryMode::Fanout,
        group_id: None,
        min_interval_seconds: 0,
        expires_at: T0.plus_seconds(3600),
    }
}

async fn create(store: &dyn Store, count: usize) -> Vec<TaskId> {
    let mut ids = Vec::new();
    for n in 0..count {
        let task = task(n);
        ids.push(task.id);
        store.create(vec![task]).await.unwrap();
    }
    ids
}

/// Opens a store in `dir`, creates `count` tasks and closes it; their ids.
async fn closed_with_tasks(dir: &Path, count: usize) -> Vec<TaskId> {
    let store = open(dir).unwrap();
    let ids = create(&*store, count).await;
    store.close().await.unwrap();
    ids
}

/// A claim of one task of any command by worker `w`.
fn claim_one() -> ClaimSpec {
    ClaimSpec {
        commands: CommandFilter::All,
        worker_id: "w".into(),
        lease_until: T0.plus_seconds(600),
        count: 1,
    }
}

/// Worker `w`'s completed result of task `id`.
fn completion(id: TaskId) -> Completion {
    let submission = Submission {
        status: ResultStatus::Completed,
        result: Some(serde_json::json!({ "id": id.to_string() }).into()),
        error: None,
        artifacts: Vec::new(),
    };
    Completion { task_id: id, worker_id: "w".into(), attempt: None, submission }
}

/// Claims and completes `count` tasks; returns their ids.
async fn complete(store: &dyn Store, count: usize) -> Vec<TaskId> {
    let mut done = Vec::new();
    for _ in 0..count {
        let claimed = store.claim(&claim_one(), T0).await.unwrap().pop().unwrap();
        store.complete(vec![completion(claimed.id)], T0).await.unwrap()[0].clone().unwrap();
        done.push(claimed.id);
    }
    done
}

/// A task with a webhook, completed a second after [`T0`], whose callback
/// ended as `ended`; its id.
async fn settled_callback(store: &dyn Store, ended: SettledCallback) -> TaskId {
    let mut hooked = task(0);
    hooked.webhook = Some("https://hooks.example.com/settled".into());
    store.create(vec![hooked.clone()]).await.unwrap();
    let claimed = store.claim(&claim_one(), T0).await.unwrap().pop().unwrap();
    assert_eq!(claimed.id, hooked.id);
    let later = T0.plus_seconds(1);
    store.complete(vec![completion(hooked.id)], later).await.unwrap()[0].clone().unwrap();
    let owed = store.callbacks_due(later, 10).await.unwrap().pop().unwrap();
    store.callback_done(hooked.id, owed.delivery, Some(ended)).await.unwrap();
    hooked.id
}

/// Every file under `dir` with its bytes.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .map(|path| (path.clone(), std::fs::read(&path).unwrap()))
        .collect()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = files(dir)
        .into_keys()
        .filter(|path| path.extension().is_some_and(|e| e == "log"))
        .collect();
    found.sort();
    found
}

/// Opening must fail naming `problem`, and leave every file as it was.
fn assert_refused(dir: &Path, problem: &str) {
    let before = files(dir);
    match open(dir) {
        Err(OpenError::Damaged { problem: found, .. }) => {
            assert!(found.contains(problem), "refused for {found:?}, not {problem:?}")
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("opened a damaged store"),
    }
    let mut after = files(dir);
    after.remove(&dir.join("LOCK"));
    let mut before = before;
    before.remove(&dir.join("LOCK"));
    assert_eq!(before, after, "a refused open changed files");
    match EmbeddedStore::check(dir) {
        Err(OpenError::Damaged { problem: found, .. }) => assert!(found.contains(problem)),
        other => panic!("check did not report the damage: {:?}", other.map(|r| r.tasks)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_rolls_into_sealed_segments_and_recovers_from_all_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let ids = closed_with_tasks(dir.path(), 200).await;
    assert!(segments(dir.path()).len() >= 3, "{:?}", segments(dir.path()));
    let store = open(dir.path()).unwrap();
    assert!(store.recovered().clean_stop);
    for id in ids {
        assert!(store.get_task(id).await.unwrap().is_some(), "task {id} lost");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_reclaims_dead_segments_and_keeps_every_live_record() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    // In the oldest segment: a subscription, one deleted, a task whose
    // callback ended (kept past the cleanup below: it ended later), and a
    // task whose result callback stays owed.
    let (kept, dropped) = (subscription(), subscription());
    store.put_subscription(kept.clone()).await.unwrap();
    store.put_subscription(dropped.clone()).await.unwrap();
    store.delete_subscription(dropped.id).await.unwrap();
    let ended = SettledCallback { outcome: CallbackOutcome::Delivered, attempts: 1 };
    let settled = settled_callback(&*store, ended).await;
    let mut hooked = task(0);
    hooked.webhook = Some("https://hooks.example.com/x".into());
    store.create(vec![hooked.clone()]).await.unwrap();
    let ids = create(&*store, 150).await;
    let done = complete(&*store, 120).await;
    assert!(done.contains(&hooked.id));
    let deleted = store.cleanup(T0, 100).await.unwrap();
    assert_eq!(deleted.len(), 100);
    let before = segments(dir.path()).len();
    while store.compact_oldest().await.unwrap() && store.needs_compaction() {}
    let after = segments(dir.path());
    assert!(after.len() < before, "{before} segments before, {} after", after.len());
    assert!(!after.contains(&dir.path().join("00000001.log")), "the oldest segment is gone");

    let kept_results: Vec<TaskId> =
        done.iter().copied().filter(|id| !deleted.contains(id)).collect();
    let check = |store: Arc<EmbeddedStore>| {
        let (ids, deleted, kept_results) = (ids.clone(), deleted.clone(), kept_results.clone());
        let (kept, hooked) = (kept.clone(), hooked.clone());
        async move {
            for id in &ids {
                let found = store.get_task(*id).await.unwrap();
                assert_eq!(found.is_some(), !deleted.contains(id), "task {id}");
                if let Some(task) = found {
                    assert!(task.payload.contains(r#""pad":"#), "body of {id} intact");
                }
            }
            for id in &kept_results {
                let result = store.get_result(*id).await.unwrap().expect("result kept");
                assert_eq!(result.result.unwrap().as_str(), format!(r#"{{"id":"{id}"}}"#));
            }
            assert_eq!(
                store.all_queue_stats().await.unwrap().len(),
                1,
                "the command is remembered"
            );
            assert_eq!(store.subscriptions().await.unwrap(), vec![kept.clone()]);
            let owed = store.callbacks_due(T0, 10).await.unwrap();
            assert_eq!(owed.len(), 1, "the callback is still owed");
            assert_eq!(owed[0].task_id, hooked.id);
            assert_eq!(store.callback_settled(settled).await.unwrap(), Some(ended));
        }
    };
    check(store.clone()).await;
    store.close().await.unwrap();
    drop(store);
    check(open(dir.path()).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_journal_recovers_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let live = {
        let store = open(dir.path()).unwrap();
        let ids = create(&*store, 120).await;
        complete(&*store, 100).await;
        store.cleanup(T0, 100).await.unwrap();
        while store.compact_oldest().await.unwrap() && store.needs_compaction() {}
        create(&*store, 5).await;
        ids // the store is dropped without close: as after kill -9
    };
    let store = open(dir.path()).unwrap();
    assert!(!store.recovered().clean_stop);
    let mut found = 0;
    for id in live {
        found += usize::from(store.get_task(id).await.unwrap().is_some());
    }
    assert_eq!(found, 20, "the 20 tasks never completed are all there");
    assert_eq!(store.all_queue_stats().await.unwrap()[0].ready, 25);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_segment_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    closed_with_tasks(dir.path(), 200).await;
    std::fs::remove_file(dir.path().join("00000002.log")).unwrap();
    assert_refused(dir.path(), "00000002.log is missing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_segment_cut_short_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    closed_with_tasks(dir.path(), 200).await;
    let first =
        std::fs::OpenOptions::new().write(true).open(dir.path().join("00000001.log")).unwrap();
    first.set_len(3000).unwrap();
    assert_refused(dir.path(), "00000001.log at byte");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_empty_segment_after_the_journals_end_is_deleted_but_two_are_refused() {
    // A roll leaves at most one: the next segment is created before the
    // seal pointing at it, and the one after only once that seal is durable.
    let write_empty = |dir: &Path, id: u32| {
        let mut bytes = frame::segment_header(id).to_vec();
        bytes.resize(8 * 1024, 0);
        std::fs::write(dir.join(format!("{id:08}.log")), bytes).unwrap();
    };
    let dir = tempfile::tempdir().unwrap();
    let ids = closed_with_tasks(dir.path(), 10).await;
    write_empty(dir.path(), 2);
    write_empty(dir.path(), 3);
    assert_refused(dir.path(), "00000001.log at byte");

    std::fs::remove_file(dir.path().join("00000003.log")).unwrap();
    let store = open(dir.path()).expect("one empty segment after the end is an unfinished roll");
    for id in ids {
        assert!(store.get_task(id).await.unwrap().is_some(), "{id} lost");
    }
    assert_eq!(segments(dir.path()), [dir.path().join("00000001.log")], "the empty one is deleted");
}

/// A store in `dir` with `count` tasks, left as after kill -9 with a torn
/// write after its last frame: a frame header promising 500 bytes, of
/// which 33 made it to disk. The tasks, the torn bytes and where they are.
async fn crashed_with_a_torn_write(dir: &Path, count: usize) -> (Vec<TaskId>, Vec<u8>, u64) {
    use std::os::unix::fs::FileExt;
    let ids = {
        let store = open(dir).unwrap();
        create(&*store, count).await // dropped without close
    };
    let last = segments(dir).pop().unwrap();
    let end = EmbeddedStore::check(dir).unwrap().recovered.tail;
    let mut torn = 500u32.to_le_bytes().to_vec();
    torn.extend_from_slice(&[7; 33]);
    std::fs::OpenOptions::new().write(true).open(&last).unwrap().write_all_at(&torn, end).unwrap();
    (ids, torn, end)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_final_write_after_a_crash_is_set_aside_and_the_rest_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let (ids, torn, end) = crashed_with_a_torn_write(dir.path(), 10).await;

    let checked = EmbeddedStore::check(dir.path()).unwrap().recovered.repairs.torn;
    let store = open(dir.path()).unwrap();
    let cut = store.recovered().repairs.torn;
    assert_eq!(cut, Some((1, end, torn.len() as u64)), "what was written, not the zeros after");
    assert_eq!(checked, cut, "check reports what the start sets aside");
    for id in ids {
        assert!(store.get_task(id).await.unwrap().is_some());
    }
    let saved = files(dir.path())
        .into_iter()
        .find(|(path, _)| path.file_name().unwrap().to_string_lossy().starts_with("torn-"));
    let (_, bytes) = saved.expect("the torn bytes are kept aside");
    assert_eq!(bytes, torn, "what was written, not the zeros of the preallocated rest");
    create(&*store, 3).await;
    store.close().await.unwrap();
    drop(store);
    assert_eq!(open(dir.path()).unwrap().all_queue_stats().await.unwrap()[0].ready, 13);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_write_that_a_full_disk_cannot_set_aside_leaves_no_file_behind() {
    let dir = tempfile::tempdir().unwrap();
    let (ids, _, _) = crashed_with_a_torn_write(dir.path(), 3).await;
    let torn_files = || {
        files(dir.path())
            .into_iter()
            .filter(|(path, _)| path.file_name().unwrap().to_string_lossy().starts_with("torn-"))
            .count()
    };

    for _ in 0..3 {
        let full = FaultFs::new();
        full.fail_writes_after_bytes(0);
        assert!(open_on(&full, dir.path()).is_err(), "nothing to set the torn bytes aside in");
    }

    assert_eq!(torn_files(), 0, "a start that failed left a file behind");
    let store = open(dir.path()).unwrap();
    assert_eq!(torn_files(), 1);
    for id in ids {
        assert!(store.get_task(id).await.unwrap().is_some());
    }
}

fn open_on(fs: &FaultFs, dir: &Path) -> Result<Arc<EmbeddedStore>, OpenError> {
    EmbeddedStore::open_with(Arc::new(fs.clone()), dir, options(), Arc::new(Signals::new()))
}

/// Creates tasks one by one until the journal has rolled into a second
/// segment, on a throwaway store; how many it took.
async fn creates_to_roll() -> usize {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    let mut created = 0;
    while segments(dir.path()).len() < 2 {
        create(&*store, 1).await;
        created += 1;
    }
    created
}

/// Creates `task` in the background (a create that waits at the sync gate).
fn spawn_create(
    store: &Arc<EmbeddedStore>,
    task: Task,
) -> tokio::task::JoinHandle<Result<Vec<Created>, StoreError>> {
    let store = store.clone();
    tokio::spawn(async move { store.create(vec![task]).await })
}

/// Polls `condition` until it holds (10 s at most).
async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_cut_short_by_a_full_disk_leaves_none_of_its_changes() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::new();
    fs.refuse_creating(SPARE_NAME); // no other sync at the gate
    let (acknowledged, refused) = {
        let store = open_on(&fs, dir.path()).unwrap();
        fs.close_gate();
        let first = task(0);
        let acknowledged = first.id;
        let first = spawn_create(&store, first);
        wait_until("the first round waits for its fsync", || fs.syncs_waiting() == 1).await;
        // Two creates queue behind it, for the next round's one write; the
        // disk fills inside the second's frame, after the whole first.
        let small = task(1);
        let large = Task { payload: format!(r#"{{"pad":"{}"}}"#, "y".repeat(3000)), ..task(2) };
        let refused = vec![small.id, large.id];
        let small = spawn_create(&store, small);
        wait_until("the second create is queued", || store.durability_waiters() == 2).await;
        let large = spawn_create(&store, large);
        wait_until("the third create is queued", || store.durability_waiters() == 3).await;
        fs.fail_writes_after_bytes(1000);
        fs.open_gate();
        first.await.unwrap().unwrap();
        for answer in [small.await.unwrap(), large.await.unwrap()] {
            assert!(matches!(answer, Err(StoreError::DiskFull(_))), "{answer:?}");
        }
        (acknowledged, refused)
    };
    let store = open(dir.path()).expect("the journal recovers");
    assert!(store.get_task(acknowledged).await.unwrap().is_some(), "acknowledged task lost");
    for id in refused {
        let found = store.get_task(id).await.unwrap();
        assert!(found.is_none(), "task {id} was refused for a full disk, yet it is stored");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_or_a_write_that_cannot_be_spoilt_answers_outcome_unknown() {
    // A sync that fails for space may have written anything; a write cut
    // after 3 bytes cannot have its 8-byte start zeroed on the full disk.
    let faults: [fn(&FaultFs); 2] =
        [|fs| fs.fail_syncs_for_space_after(0), |fs| fs.fail_writes_after_bytes(3)];
    for fault in faults {
        let dir = tempfile::tempdir().unwrap();
        let fs = FaultFs::new();
        let store = open_on(&fs, dir.path()).unwrap();
        create(&*store, 1).await;
        fault(&fs);
        let answer = store.create(vec![task(1)]).await;
        assert!(matches!(answer, Err(StoreError::Unavailable(_))), "{answer:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_that_fills_the_disk_in_its_second_segment_answers_its_first_as_stored() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::new();
    fs.refuse_creating(SPARE_NAME); // no zeros written ahead to count
    let large = |n| Task { payload: format!(r#"{{"pad":"{}"}}"#, "y".repeat(3000)), ..task(n) };
    let (stored, refused) = {
        let store = open_on(&fs, dir.path()).unwrap();
        fs.close_gate();
        let first = spawn_create(&store, task(0));
        // At the gate (queued is not enough: a round not yet taken would
        // take the next creates with it).
        wait_until("the first round waits for its fsync", || fs.syncs_waiting() == 1).await;
        // The next round: two large frames in this 8 KiB segment, its
        // seal, then a third in the next segment, where the disk fills.
        let queued: Vec<Task> = (1..=3).map(large).collect();
        let ids: Vec<TaskId> = queued.iter().map(|task| task.id).collect();
        let mut answers = Vec::new();
        for (n, task) in queued.into_iter().enumerate() {
            answers.push(spawn_create(&store, task));
            wait_until("the create is queued", || store.durability_waiters() == n + 2).await;
        }
        fs.fail_writes_after_bytes(8_000);
        fs.open_gate();
        first.await.unwrap().unwrap();
        let mut answered = Vec::new();
        for answer in answers {
            answered.push(answer.await.unwrap().map(|_| ()));
        }
        assert!(answered[..2].iter().all(Result::is_ok), "{answered:?}");
        assert!(matches!(answered[2], Err(StoreError::DiskFull(_))), "{answered:?}");
        assert_eq!(segments(dir.path()).len(), 2, "the round rolled into a second segment");
        (ids[..2].to_vec(), ids[2])
    };
    let store = open(dir.path()).expect("the journal recovers");
    for id in stored {
        assert!(store.get_task(id).await.unwrap().is_some(), "acknowledged task {id} lost");
    }
    assert!(store.get_task(refused).await.unwrap().is_none(), "the refused task is stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_at_a_segment_roll_leaves_a_journal_that_recovers() {
    let before_roll = creates_to_roll().await - 1;
    for filled_ahead in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let fs = FaultFs::new();
        if !filled_ahead {
            fs.refuse_creating(SPARE_NAME);
        }
        let kept = {
            let store = open_on(&fs, dir.path()).unwrap();
            let kept = create(&*store, before_roll).await;
            assert_eq!(segments(dir.path()).len(), 1);
            if filled_ahead {
                wait_until("the spare is filled", || store.spare_segment_filled()).await;
            }
            fs.fail_writes_after_bytes(0);
            let refused = store.create(vec![task(0)]).await;
            assert!(matches!(refused, Err(StoreError::DiskFull(_))), "{refused:?}");
            kept
        };
        let store = open(dir.path()).expect("the journal recovers");
        for id in kept {
            assert!(store.get_task(id).await.unwrap().is_some(), "acknowledged task {id} lost");
        }
        assert_eq!(store.all_queue_stats().await.unwrap()[0].ready, before_roll as u64);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_while_a_segment_is_sealed_leaves_a_journal_that_recovers() {
    let before_roll = creates_to_roll().await - 1;
    for (held, filled_ahead) in (0..3).flat_map(|held| [(held, true), (held, false)]) {
        // Cut while the first, second or third sync of the rolling round
        // is held: the new segment's header, the seal, the new frame; with
        // the new segment filled ahead, and created sparse.
        let dir = tempfile::tempdir().unwrap();
        let fs = FaultFs::new();
        if !filled_ahead {
            fs.refuse_creating(SPARE_NAME);
        }
        let store = open_on(&fs, dir.path()).unwrap();
        let kept = create(&*store, before_roll).await;
        if filled_ahead {
            wait_until("the spare is filled", || store.spare_segment_filled()).await;
        }
        fs.open_gate_for(held);
        let rolling = {
            let store = store.clone();
            tokio::spawn(async move { store.create(vec![task(0)]).await })
        };
        wait_until("the roll waits for a sync", || fs.syncs_waiting() == 1).await;
        let image = tempfile::tempdir().unwrap();
        fs.crash_image(dir.path(), image.path()).unwrap();
        fs.open_gate();
        rolling.await.unwrap().unwrap();
        let recovered = open(image.path())
            .unwrap_or_else(|e| panic!("held sync {held}, filled ahead {filled_ahead}: {e}"));
        for id in &kept {
            assert!(
                recovered.get_task(*id).await.unwrap().is_some(),
                "held sync {held}, filled ahead {filled_ahead}: {id} lost"
            );
        }
    }
}

/// Queues `count` single-task creates, one by one, while the round
/// before them waits for its sync, so that they make up the next round
/// together. Returns the ids, the first being that round's.
async fn queue_one_round(
    store: &Arc<EmbeddedStore>,
    fs: &FaultFs,
    count: usize,
) -> (Vec<TaskId>, tokio::task::JoinSet<()>) {
    fs.close_gate();
    let queued = || store.engine_stats().map_or(0, |stats| stats.queued_seq);
    let (mut ids, mut creates) = (Vec::new(), tokio::task::JoinSet::new());
    for n in 0..=count {
        let task = task(n);
        ids.push(task.id);
        let before = queued();
        let store = store.clone();
        creates.spawn(async move {
            store.create(vec![task]).await.unwrap();
        });
        wait_until("the create is queued", || queued() > before).await;
    }
    wait_until("the round before waits for its sync", || fs.syncs_waiting() == 1).await;
    (ids, creates)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_in_a_round_that_fills_several_segments_leaves_a_journal_that_recovers() {
    // A round can roll more than once: a segment is then created, filled
    // and sealed within it, and a cut at its sync leaves it holding only
    // its header, followed by the next one, as empty. Cut at each sync of
    // such a round in turn, until the round gets through.
    let mut held = 0;
    loop {
        let dir = tempfile::tempdir().unwrap();
        let fs = FaultFs::new();
        // The rolls create sparse segments: no other thread syncs.
        fs.refuse_creating(SPARE_NAME);
        let store = open_on(&fs, dir.path()).unwrap();
        let kept = create(&*store, 5).await;
        let (round, creates) = queue_one_round(&store, &fs, 120).await;
        let started = fs.syncs_started();
        fs.open_gate_for(held);
        let round_written = || store.engine_stats().is_some_and(|stats| stats.watermark_lag() == 0);
        let sync_held = || fs.syncs_started() == started + held + 1 && fs.syncs_waiting() == 1;
        wait_until("a sync of the round is held", || sync_held() || round_written()).await;
        if round_written() {
            break;
        }
        let image = tempfile::tempdir().unwrap();
        fs.crash_image(dir.path(), image.path()).unwrap();
        fs.open_gate();
        creates.join_all().await;
        let recovered =
            open(image.path()).unwrap_or_else(|e| panic!("cut at sync {held} of the round: {e}"));
        for id in kept.iter().chain(&round[..1]) {
            assert!(recovered.get_task(*id).await.unwrap().is_some(), "sync {held}: {id} lost");
        }
        // The repaired journal takes changes and opens again.
        let added = create(&*recovered, 1).await;
        recovered.close().await.unwrap();
        drop(recovered);
        let reopened = open(image.path()).unwrap();
        assert!(reopened.get_task(added[0]).await.unwrap().is_some(), "sync {held}: lost later");
        held += 1;
    }
    // A round rolling twice syncs five times or more: each new segment's
    // header, each segment it writes to.
    assert!(held >= 5, "the round synced {held} times: it did not roll twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_loses_unsynced_frames_in_a_segment_filled_ahead() {
    // The spare's zeros are synced before frames go over them: a crash
    // image must still drop the frames never synced.
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::new();
    let store = open_on(&fs, dir.path()).unwrap();
    let mut kept = Vec::new();
    while segments(dir.path()).len() < 2 {
        kept.extend(create(&*store, 1).await);
    }
    fs.set_sync_noop(true);
    let unsynced = create(&*store, 5).await;
    assert_eq!(segments(dir.path()).len(), 2, "still in the segment filled ahead");
    let image = tempfile::tempdir().unwrap();
    fs.crash_image(dir.path(), image.path()).unwrap();

    let recovered = open(image.path()).unwrap();
    for id in kept {
        assert!(recovered.get_task(id).await.unwrap().is_some(), "synced task {id} lost");
    }
    for id in unsynced {
        assert!(recovered.get_task(id).await.unwrap().is_none(), "unsynced task {id} kept");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_without_syncs_fills_no_segment_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let log = LogOptions { segment_bytes: 8 * 1024, ..LogOptions::new(Durability::Buffered) };
    let options = EmbeddedOptions {
        log,
        compact_above_bytes: u64::MAX,
        ..EmbeddedOptions::new(Durability::Fsync)
    };
    let store =
        EmbeddedStore::open_with(Arc::new(RealFs), dir.path(), options, Arc::new(Signals::new()))
            .unwrap();
    while segments(dir.path()).len() < 2 {
        create(&*store, 1).await;
    }

    // One frame in the new segment: a sparse file has one block of it.
    let second = &segments(dir.path())[1];
    assert!(allocated(second) < 8 * 1024, "{} bytes allocated", allocated(second));
    assert!(!dir.path().join(SPARE_NAME).exists());
}

/// Bytes of disk the file at `path` has allocated.
fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_segment_is_the_spare_filled_ahead_or_else_a_sparse_file() {
    // Filled ahead; the spare cannot be created; the disk has less than
    // two segments free (the zeros would take the journal's last space).
    for (filled_ahead, refused, low_on_space) in
        [(true, false, false), (false, true, false), (false, false, true)]
    {
        let dir = tempfile::tempdir().unwrap();
        let fs = FaultFs::new();
        if refused {
            fs.refuse_creating(SPARE_NAME);
        }
        if low_on_space {
            fs.set_free_bytes(Some(2 * options().log.segment_bytes - 1));
        }
        let store = open_on(&fs, dir.path()).unwrap();
        let mut ids = Vec::new();
        while segments(dir.path()).len() < 2 {
            ids.extend(create(&*store, 1).await);
        }
        let spare = dir.path().join(SPARE_NAME);
        assert!(!spare.exists(), "the spare was renamed into place, or never made");
        // One frame in the new segment: a sparse file has one block of it.
        let second = &segments(dir.path())[1];
        if filled_ahead {
            assert!(allocated(second) >= 8 * 1024, "{} bytes allocated", allocated(second));
        } else {
            assert!(allocated(second) < 8 * 1024, "{} bytes allocated", allocated(second));
        }
        ids.extend(create(&*store, 100).await);
        store.close().await.unwrap();
        drop(store);

        std::fs::write(&spare, b"half written").unwrap();
        let store = open(dir.path()).unwrap();
        assert!(!spare.exists(), "a spare left over is deleted at start");
        for id in ids {
            assert!(store.get_task(id).await.unwrap().is_some(), "task {id} lost");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_written_back_out_of_order_is_a_torn_write_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::new();
    fs.scramble_unsynced(true);
    let log = LogOptions { segment_bytes: 1024 * 1024, ..LogOptions::new(Durability::Fsync) };
    let options = EmbeddedOptions {
        log,
        compact_above_bytes: u64::MAX,
        ..EmbeddedOptions::new(Durability::Fsync)
    };
    let signals = Arc::new(Signals::new());
    let store =
        EmbeddedStore::open_with(Arc::new(fs.clone()), dir.path(), options, signals).unwrap();
    let kept = create(&*store, 5).await;
    // One create held at its fsync; fifty more queue behind it and become
    // one round, written and held too.
    fs.close_gate();
    let first = {
        let store = store.clone();
        tokio::spawn(async move { create(&*store, 1).await })
    };
    wait_until("the first round is held", || fs.syncs_waiting() == 1).await;
    let burst: Vec<_> = (0..50)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { create(&*store, 1).await })
        })
        .collect();
    wait_until("the burst waits", || store.durability_waiters() >= 51).await;
    fs.open_gate_for(0);
    first.await.unwrap();
    wait_until("the burst's round is held", || fs.syncs_waiting() == 1).await;
    let image = tempfile::tempdir().unwrap();
    fs.crash_image(dir.path(), image.path()).unwrap();
    fs.open_gate();
    for created in burst {
        created.await.unwrap();
    }

    let recovered = open(image.path()).expect("a torn round recovers");
    let torn = recovered.recovered().repairs.torn;
    assert!(torn.is_some_and(|(_, _, bytes)| bytes > 4096), "the round was cut: {torn:?}");
    for id in kept {
        assert!(recovered.get_task(id).await.unwrap().is_some(), "acknowledged task {id} lost");
    }
    assert_eq!(recovered.all_queue_stats().await.unwrap()[0].ready, 6, "none of the burst");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_to_frames_followed_by_later_rounds_is_refused_not_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path()).unwrap();
        create(&*store, 10).await; // then dropped: as after kill -9
    }
    let segment = dir.path().join("00000001.log");
    let mut bytes = std::fs::read(&segment).unwrap();
    let mut starts = Vec::new();
    let mut at = 16;
    while let Ok(frame) = frame::parse_frame(&bytes[at..]) {
        starts.push(at);
        at += frame.len;
    }
    assert_eq!(starts.len(), 10, "ten creates");
    bytes[starts[3] + 30] ^= 0xff;
    bytes[starts[4] + 30] ^= 0xff;
    std::fs::write(&segment, &bytes).unwrap();
    assert_refused(dir.path(), "checksum mismatch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_torn_write_at_the_same_place_recovers_too() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path()).unwrap();
        create(&*store, 1).await; // then dropped: as after kill -9
    }
    let end = EmbeddedStore::check(dir.path()).unwrap().recovered.tail;
    let mut torn = 500u32.to_le_bytes().to_vec();
    torn.extend_from_slice(&[7; 33]);
    use std::os::unix::fs::FileExt;
    for _ in 0..2 {
        let segment = std::fs::OpenOptions::new().write(true).open(dir.path().join("00000001.log"));
        segment.unwrap().write_all_at(&torn, end).unwrap();
        let store = open(dir.path()).expect("recovers");
        assert_eq!(store.recovered().repairs.torn.map(|(_, offset, _)| offset), Some(end));
    }
    let saved = files(dir.path())
        .into_keys()
        .filter(|path| path.file_name().unwrap().to_string_lossy().starts_with("torn-"));
    assert_eq!(saved.count(), 2, "both torn writes kept aside");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_waits_for_the_delete_it_shows() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::new();
    let store = open_on(&fs, dir.path()).unwrap();
    let id = create(&*store, 1).await[0];
    complete(&*store, 1).await;
    fs.close_gate();
    let cleanup = {
        let store = store.clone();
        tokio::spawn(async move { store.cleanup(T0.plus_seconds(1), 10).await })
    };
    wait_until("the delete waits for its fsync", || store.durability_waiters() == 1).await;
    let read = {
        let store = store.clone();
        tokio::spawn(async move { store.get_task(id).await })
    };
    wait_until("the read waits too", || store.durability_waiters() == 2).await;
    assert!(!read.is_finished(), "'no such task' answered before the delete was durable");
    fs.open_gate();
    assert_eq!(cleanup.await.unwrap().unwrap(), vec![id]);
    assert_eq!(read.await.unwrap().unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_whose_holder_is_deleted_before_it_is_read_back_creates_anew() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::new();
    let store = open_on(&fs, dir.path()).unwrap();
    let keyed = |n| Task { idempotency_key: Some("k".into()), ..task(n) };
    store.create(vec![keyed(0)]).await.unwrap();
    let holder = complete(&*store, 1).await[0];
    fs.close_gate();
    let batch = vec![keyed(1), task(2)];
    let asked: Vec<TaskId> = batch.iter().map(|task| task.id).collect();
    let create = {
        let store = store.clone();
        tokio::spawn(async move { store.create(batch).await })
    };
    wait_until("the create waits for its fsync", || store.durability_waiters() == 1).await;
    // Retention deletes the key's holder after the create found it and
    // before the create reads it back.
    let cleanup = {
        let store = store.clone();
        tokio::spawn(async move { store.cleanup(T0.plus_seconds(1), 10).await })
    };
    wait_until("the delete waits for its fsync", || store.durability_waiters() == 2).await;
    fs.open_gate();

    assert_eq!(cleanup.await.unwrap().unwrap(), vec![holder]);
    let created = create.await.unwrap().expect("the batch is answered, not failed");
    let ids: Vec<TaskId> =
        created.iter().map(|created| created.task().expect("stored").id).collect();
    assert_eq!(ids, asked, "the key is free again: its task is created");
    assert!(created.iter().all(|created| matches!(created, Created::New(_))), "{created:?}");
    for id in ids {
        assert!(store.get_task(id).await.unwrap().is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_with_its_next_claim_is_answered_after_a_sync_and_both_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::new();
    let store = open_on(&fs, dir.path()).unwrap();
    let ids = create(&*store, 2).await;
    let spec = claim_one();
    let held = store.claim(&spec, T0).await.unwrap().pop().unwrap();
    let (first, next) = (held.id, ids[1]);
    fs.close_gate();
    let item = completion(first);
    let call = {
        let (store, spec) = (store.clone(), spec.clone());
        tokio::spawn(async move { store.complete_and_claim(item, &spec, T0).await })
    };
    wait_until("the answer waits for its fsync", || store.durability_waiters() >= 1).await;
    assert!(!call.is_finished(), "answered before anything was durable");
    let image = tempfile::tempdir().unwrap();
    fs.crash_image(dir.path(), image.path()).unwrap();
    {
        let crashed = open(image.path()).unwrap();
        let status = |id| {
            let crashed = crashed.clone();
            async move { crashed.get_task(id).await.unwrap().unwrap().state.status }
        };
        assert_eq!(status(first).await, codeq_core::TaskStatus::InProgress, "nothing synced");
        assert_eq!(status(next).await, codeq_core::TaskStatus::Pending);
    }
    fs.open_gate();
    let done = call.await.unwrap().unwrap();
    assert!(done.outcome.is_ok(), "{:?}", done.outcome);
    assert_eq!(done.next.unwrap().iter().map(|t| t.id).collect::<Vec<_>>(), vec![next]);
    // Answered: both are on disk.
    let image = tempfile::tempdir().unwrap();
    fs.crash_image(dir.path(), image.path()).unwrap();
    let crashed = open(image.path()).unwrap();
    let state = |id| {
        let crashed = crashed.clone();
        async move { crashed.get_task(id).await.unwrap().unwrap().state }
    };
    assert_eq!(state(first).await.status, codeq_core::TaskStatus::Completed);
    let claimed = state(next).await;
    assert_eq!(
        (claimed.status, claimed.worker_id.as_deref()),
        (codeq_core::TaskStatus::InProgress, Some("w"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_naming_a_command_twice_takes_each_task_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    create(&*store, 2).await;
    let roll = Command::parse("roll").unwrap();
    let spec = ClaimSpec {
        commands: CommandFilter::Only(vec![roll.clone(), roll]),
        worker_id: "w".into(),
        lease_until: T0.plus_seconds(60),
        count: 2,
    };
    let claimed = store.claim(&spec, T0).await.unwrap();
    assert_eq!(claimed.len(), 2);
    assert_ne!(claimed[0].id, claimed[1].id, "one task delivered twice in one claim");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_settles_when_little_is_dead() {
    let dir = tempfile::tempdir().unwrap();
    let log = LogOptions { segment_bytes: 64 * 1024, ..LogOptions::new(Durability::Fsync) };
    let options =
        EmbeddedOptions { log, compact_above_bytes: 0, ..EmbeddedOptions::new(Durability::Fsync) };
    let store =
        EmbeddedStore::open_with(Arc::new(RealFs), dir.path(), options, Arc::new(Signals::new()))
            .unwrap();
    for _ in 0..100 {
        let tiny = (0..100).map(|_| Task { payload: "{}".into(), ..task(0) }).collect();
        store.create(tiny).await.unwrap();
    }
    let mut passes = 0;
    while store.needs_compaction() {
        store.compact_oldest().await.unwrap();
        passes += 1;
        assert!(passes < 50, "compaction keeps rewriting live records");
    }
    let newest = segments(dir.path()).pop();
    assert!(!store.needs_compaction());
    create(&*store, 1).await;
    assert_eq!(segments(dir.path()).pop(), newest, "nothing rewritten without new traffic");
}
