//! The embedded backend's journal, with segments small enough to roll
//! often: sealed segments recover, compaction reclaims space without
//! losing a live record (also across a restart or a crash), and damage to
//! the files is refused at open, with nothing changed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use codeq_core::lifecycle::Submission;
use codeq_core::{Command, Priority, ResultStatus, Task, TaskId, TaskState, Timestamp};
use codeq_server::config::Durability;
use codeq_server::store::embedded::log::fs::RealFs;
use codeq_server::store::embedded::log::{LogOptions, OpenError};
use codeq_server::store::embedded::{EmbeddedOptions, EmbeddedStore};
use codeq_server::store::{ClaimSpec, CommandFilter, Completion, Signals, Store};

const T0: Timestamp = Timestamp(1_600_000_000_000);

/// Segments of about 8 KiB; compaction whenever a sealed segment exists
/// and the journal is over twice its live records.
fn options() -> EmbeddedOptions {
    let log = LogOptions { segment_bytes: 8 * 1024, ..LogOptions::new(Durability::Fsync) };
    EmbeddedOptions { log, compact_above_bytes: 0 }
}

fn open(dir: &Path) -> Result<Arc<EmbeddedStore>, OpenError> {
    EmbeddedStore::open_with(Arc::new(RealFs), dir, options(), Arc::new(Signals::new()))
}

fn task(n: usize) -> Task {
    Task {
        id: TaskId::generate(),
        command: Command::parse("roll").unwrap(),
        payload: format!(r#"{{"n":{n},"pad":"{}"}}"#, "x".repeat(100)),
        priority: Priority::default(),
        webhook: None,
        max_attempts: 3,
        idempotency_key: None,
        run_at: None,
        created_at: T0,
        state: TaskState::new(T0, T0),
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

/// Claims and completes `count` tasks; returns their ids.
async fn complete(store: &dyn Store, count: usize) -> Vec<TaskId> {
    let mut done = Vec::new();
    for _ in 0..count {
        let spec = ClaimSpec {
            commands: CommandFilter::All,
            worker_id: "w".into(),
            lease_until: T0.plus_seconds(600),
            count: 1,
        };
        let claimed = store.claim(&spec, T0).await.unwrap().pop().unwrap();
        let submission = Submission {
            status: ResultStatus::Completed,
            result: Some(serde_json::json!({ "id": claimed.id.to_string() })),
            error: None,
            artifacts: Vec::new(),
        };
        let completion =
            Completion { task_id: claimed.id, worker_id: "w".into(), attempt: None, submission };
        store.complete(vec![completion], T0).await.unwrap()[0].clone().unwrap();
        done.push(claimed.id);
    }
    done
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
    let ids = {
        let store = open(dir.path()).unwrap();
        let ids = create(&*store, 200).await;
        store.close().await.unwrap();
        ids
    };
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
    let ids = create(&*store, 150).await;
    let done = complete(&*store, 120).await;
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
                assert_eq!(result.result.unwrap()["id"], id.to_string());
            }
            assert_eq!(
                store.all_queue_stats().await.unwrap().len(),
                1,
                "the command is remembered"
            );
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
    let store = open(dir.path()).unwrap();
    create(&*store, 200).await;
    store.close().await.unwrap();
    drop(store);
    std::fs::remove_file(dir.path().join("00000002.log")).unwrap();
    assert_refused(dir.path(), "00000002.log is missing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_segment_cut_short_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    create(&*store, 200).await;
    store.close().await.unwrap();
    drop(store);
    let first =
        std::fs::OpenOptions::new().write(true).open(dir.path().join("00000001.log")).unwrap();
    first.set_len(3000).unwrap();
    assert_refused(dir.path(), "00000001.log at byte");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_final_write_after_a_crash_is_set_aside_and_the_rest_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let ids = {
        let store = open(dir.path()).unwrap();
        create(&*store, 10).await // dropped without close: as after kill -9
    };
    let last = segments(dir.path()).pop().unwrap();
    let report = EmbeddedStore::check(dir.path()).unwrap();
    let end = report.recovered.tail;
    // A frame header promising 500 bytes, of which 20 made it to disk.
    let mut torn = 500u32.to_le_bytes().to_vec();
    torn.extend_from_slice(&[7; 33]);
    use std::os::unix::fs::FileExt;
    std::fs::OpenOptions::new().write(true).open(&last).unwrap().write_all_at(&torn, end).unwrap();

    let store = open(dir.path()).unwrap();
    let cut = store.recovered().torn.map(|(segment, offset, _)| (segment, offset));
    assert_eq!(cut, Some((1, end)));
    for id in ids {
        assert!(store.get_task(id).await.unwrap().is_some());
    }
    let saved = files(dir.path())
        .into_iter()
        .find(|(path, _)| path.file_name().unwrap().to_string_lossy().starts_with("torn-"));
    let (_, bytes) = saved.expect("the torn bytes are kept aside");
    assert_eq!(&bytes[..torn.len()], torn.as_slice());
    create(&*store, 3).await;
    store.close().await.unwrap();
    drop(store);
    assert_eq!(open(dir.path()).unwrap().all_queue_stats().await.unwrap()[0].ready, 13);
}
