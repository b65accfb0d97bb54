//! A damaged data directory is refused, through the real binary: `codeq
//! serve` exits 2 naming the problem and `codeq storage check` reports the
//! same, with nothing deleted or changed. `codeq storage backup` makes a
//! copy `codeq serve` starts from, with every task in it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn codeq() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_codeq"));
    command.env("CODEQ_LOG_LEVEL", "warn");
    command
}

/// A local-mode `codeq serve` on `dir`, port 0.
struct Server {
    child: Child,
    base: String,
    producer: String,
    worker: String,
}

fn serve(dir: &Path) -> Server {
    let mut child = codeq()
        .args(["serve", "--port", "0", "--data-dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let banner: Vec<String> =
        BufReader::new(child.stdout.take().unwrap()).lines().take(4).map(Result::unwrap).collect();
    let base = banner[0].split_whitespace().nth(3).unwrap().to_string();
    let token = |line: &str| line.split_whitespace().last().unwrap().to_string();
    Server { base, producer: token(&banner[2]), worker: token(&banner[3]), child }
}

impl Server {
    /// Creates `count` tasks and completes `done` of them; returns the ids
    /// of the created and of the completed ones.
    async fn populate(&self, count: usize, done: usize) -> (Vec<String>, Vec<String>) {
        let http = reqwest::Client::new();
        let mut created = Vec::new();
        for n in 0..count {
            let task: Value = http
                .post(format!("{}/v1/codeq/tasks", self.base))
                .bearer_auth(&self.producer)
                .json(&json!({ "command": "kept", "payload": { "n": n } }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            created.push(task["id"].as_str().unwrap().to_string());
        }
        let mut completed = Vec::new();
        for _ in 0..done {
            let task: Value = http
                .post(format!("{}/v1/codeq/tasks/claim", self.base))
                .bearer_auth(&self.worker)
                .json(&json!({ "commands": ["kept"] }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let id = task["id"].as_str().unwrap().to_string();
            let stored = http
                .post(format!("{}/v1/codeq/tasks/{id}/result", self.base))
                .bearer_auth(&self.worker)
                .json(&json!({ "status": "COMPLETED", "result": { "id": id } }))
                .send()
                .await
                .unwrap();
            assert_eq!(stored.status(), 200);
            completed.push(id);
        }
        (created, completed)
    }

    /// SIGTERM: a clean stop.
    fn stop(mut self) {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(self.child.wait().unwrap().success());
    }
}

/// A data directory with tasks in it, cleanly stopped.
async fn populated() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path());
    server.populate(30, 10).await;
    server.stop();
    dir
}

/// Runs `command`, killing it (and failing) if it takes over 20 s.
fn run(mut command: Command) -> Output {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("{command:?} did not end");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

/// Every file under `dir` but the locks, with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if path.is_dir() {
            files.extend(snapshot(&path));
        } else if name != "LOCK" && name != "serve.lock" {
            files.insert(path.clone(), std::fs::read(&path).unwrap());
        }
    }
    files
}

/// The lock files under `dir`, the server's and the store's.
fn locks(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(locks(&path));
        } else if path.file_name().is_some_and(|name| name == "LOCK" || name == "serve.lock") {
            found.push(path);
        }
    }
    found
}

/// `serve` and `storage check` refuse `dir` with exit code 2, naming
/// `problem`, and leave every file as it was.
fn assert_refused(dir: &Path, problem: &str) {
    let before = snapshot(dir);
    let mut start = codeq();
    start.args(["serve", "--port", "0", "--data-dir"]).arg(dir);
    let started = run(start);
    let stderr = String::from_utf8_lossy(&started.stderr);
    assert_eq!(started.status.code(), Some(2), "serve: {stderr}");
    assert!(stderr.contains(problem), "serve does not name {problem:?}: {stderr}");
    assert!(stderr.contains("Nothing was changed"), "{stderr}");
    assert!(stderr.contains("codeq storage check"), "serve says what to do: {stderr}");

    let mut check = codeq();
    check.args(["storage", "check"]).arg(dir);
    let checked = run(check);
    let stderr = String::from_utf8_lossy(&checked.stderr);
    assert_eq!(checked.status.code(), Some(2), "check: {stderr}");
    assert!(stderr.contains(problem), "check does not name {problem:?}: {stderr}");

    assert_eq!(snapshot(dir).keys().collect::<Vec<_>>(), before.keys().collect::<Vec<_>>());
    assert!(snapshot(dir) == before, "a refused start changed a file");
}

fn store(dir: &Path) -> PathBuf {
    dir.join("store")
}

/// The offset just past the last non-zero byte of `path` (the end of a
/// preallocated segment's data).
fn data_end(path: &Path) -> usize {
    let bytes = std::fs::read(path).unwrap();
    bytes.iter().rposition(|&byte| byte != 0).unwrap() + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_manifest_is_refused() {
    let dir = populated().await;
    std::fs::remove_file(store(dir.path()).join("MANIFEST")).unwrap();
    assert_refused(dir.path(), "MANIFEST is missing but journal segments are present");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_manifest_is_refused() {
    let dir = populated().await;
    std::fs::write(store(dir.path()).join("MANIFEST"), b"{\"format\": 1, \"firstSeg").unwrap();
    assert_refused(dir.path(), "MANIFEST is damaged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_journal_is_refused() {
    let dir = populated().await;
    std::fs::remove_file(store(dir.path()).join("00000001.log")).unwrap();
    assert_refused(dir.path(), "journal segment 00000001.log is missing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_truncated_inside_its_data_is_refused() {
    let dir = populated().await;
    let segment = store(dir.path()).join("00000001.log");
    let end = data_end(&segment);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(end as u64 - 20)
        .unwrap();
    assert_refused(dir.path(), "a frame is cut short");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_cut_at_a_frame_boundary_is_refused_by_the_manifest() {
    let dir = populated().await;
    let segment = store(dir.path()).join("00000001.log");
    let end = data_end(&segment);
    let mut bytes = std::fs::read(&segment).unwrap();
    // The last frame (a result) is over 25 bytes: find its start by
    // trying every offset until the rest parses as one frame.
    let last_frame_start = (16..end)
        .rev()
        .find(|&at| {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            at + 25 + len == end
        })
        .unwrap();
    bytes.truncate(last_frame_start);
    std::fs::write(&segment, &bytes).unwrap();
    assert_refused(dir.path(), "its end is missing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_bytes_in_the_journal_are_refused() {
    let dir = populated().await;
    let segment = store(dir.path()).join("00000001.log");
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[16 + 40] ^= 0x20;
    std::fs::write(&segment, &bytes).unwrap();
    assert_refused(dir.path(), "checksum mismatch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_starts_a_server_with_every_task() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path());
    let (created, completed) = server.populate(30, 10).await;
    server.stop();
    // A next segment filled ahead is no data: the copy leaves it out; an
    // artifact of the same name (or named like a lock) is data.
    std::fs::write(store(dir.path()).join("spare-segment"), vec![0; 4096]).unwrap();
    let artifacts = dir.path().join("artifacts").join("some-task").join("1");
    std::fs::create_dir_all(&artifacts).unwrap();
    for name in ["spare-segment", "LOCK", "serve.lock"] {
        std::fs::write(artifacts.join(name), name).unwrap();
    }

    let copy = tempfile::tempdir().unwrap();
    let target = copy.path().join("backup");
    let mut backup = codeq();
    backup.args(["storage", "backup"]).arg(dir.path()).arg(&target);
    let output = run(backup);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("tasks: 30"));
    assert!(!store(&target).join("spare-segment").exists(), "the spare was copied");
    for name in ["spare-segment", "LOCK", "serve.lock"] {
        let copied = target.join("artifacts").join("some-task").join("1").join(name);
        assert_eq!(std::fs::read_to_string(&copied).unwrap(), name, "artifact {name}");
    }

    let server = serve(&target);
    let http = reqwest::Client::new();
    for id in &created {
        let task = http
            .get(format!("{}/v1/codeq/tasks/{id}", server.base))
            .bearer_auth(&server.producer)
            .send()
            .await
            .unwrap();
        assert_eq!(task.status(), 200, "task {id} is in the copy");
    }
    for id in &completed {
        let result: Value = http
            .get(format!("{}/v1/codeq/tasks/{id}/result", server.base))
            .bearer_auth(&server.producer)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(result["result"]["result"]["id"], id.as_str());
    }
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_and_backup_leave_the_lock_files_as_they_found_them_and_copy_none() {
    let dir = populated().await;
    let left_by_serve = locks(dir.path());
    let storage = |args: &[&Path]| {
        let mut command = codeq();
        command.arg("storage").args(args);
        let output = run(command);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    };

    storage(&[Path::new("check"), dir.path()]);
    let kept = locks(dir.path());
    for lock in &left_by_serve {
        std::fs::remove_file(lock).unwrap();
    }
    let copy = tempfile::tempdir().unwrap();
    let target = copy.path().join("backup");
    storage(&[Path::new("check"), dir.path()]);
    storage(&[Path::new("backup"), dir.path(), &target]);

    assert_eq!(left_by_serve.len(), 2, "{left_by_serve:?}");
    assert_eq!(kept, left_by_serve, "a stopped server's lock files stay");
    assert_eq!(locks(dir.path()), Vec::<PathBuf>::new(), "none left where there was none");
    assert_eq!(locks(&target), Vec::<PathBuf>::new(), "none in the copy");
}

#[test]
fn check_of_a_directory_without_a_store_says_so_once() {
    let empty = tempfile::tempdir().unwrap();
    let missing = empty.path().join("not-there");

    let mut of_empty = codeq();
    of_empty.args(["storage", "check"]).arg(empty.path());
    let of_empty = run(of_empty);
    let mut of_missing = codeq();
    of_missing.args(["storage", "check"]).arg(&missing);
    let of_missing = run(of_missing);

    for output in [of_empty, of_missing] {
        let said = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{said}");
        assert_eq!(said.matches("there is no codeQ store in").count(), 1, "said once: {said}");
    }
}

#[test]
fn check_on_a_file_system_that_fails_exits_1_not_2_for_damage() {
    let dir = tempfile::tempdir().unwrap();
    // Its lock file cannot be opened for writing (as on a read-only mount).
    std::fs::create_dir_all(dir.path().join("serve.lock")).unwrap();
    std::fs::create_dir_all(dir.path().join("store")).unwrap();

    let mut check = codeq();
    check.args(["storage", "check"]).arg(dir.path());
    let check = run(check);

    let said = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(1), "{said}");
    assert_eq!(said.matches("os error 21").count(), 1, "said once: {said}");
}
