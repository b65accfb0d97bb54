//! `worker start` with shell handlers: results, nacks with stderr,
//! heartbeats past the lease, and the graceful stop on SIGTERM.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{CLAIM_ONLY_WORKER, PRODUCER, Server, closed_port, run, run_json};

/// Writes an executable `/bin/sh` script named `name` into the server's HOME.
fn handler(server: &Server, name: &str, body: &str) -> PathBuf {
    executable(server, name, &format!("#!/bin/sh\n{body}\n"))
}

/// Writes `text` into a file named `name` in the server's HOME, mode 0755.
fn executable(server: &Server, name: &str, text: &str) -> PathBuf {
    let path = server.home().join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn create(server: &Server, command: &str, payload: &str) -> String {
    let created = run_json(server.codeq_with_tokens().args([
        "task",
        "create",
        "--command",
        command,
        "--payload",
        payload,
    ]));
    created["id"].as_str().unwrap().to_owned()
}

fn worker(server: &Server, command: &str, handler: &Path) -> Command {
    let mut worker = server.codeq_with_tokens();
    worker.args(["worker", "start", "--events", command, "--poll", "1", "--handler"]).arg(handler);
    worker
}

fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(Instant::now() < deadline, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Shell lines that write the handler's pid (its process group's id) to
/// `path`, whole or not at all.
fn records_its_pid(path: &Path) -> String {
    format!("echo $$ > '{0}.tmp'\nmv '{0}.tmp' '{0}'", path.display())
}

/// A handler that records its pid into the returned path, then sleeps a
/// minute (its `sleep` outlives any test unless its group is stopped);
/// that path and the handler's.
fn sleeps_a_minute(server: &Server) -> (PathBuf, PathBuf) {
    let started = server.home().join("started");
    let body = format!("cat >/dev/null\n{}\nsleep 60", records_its_pid(&started));
    (started.clone(), handler(server, "sleeps.sh", &body))
}

/// The process group of a handler that ran [`records_its_pid`] into `path`.
struct HandlerGroup(String);

impl HandlerGroup {
    fn of(path: &Path) -> Self {
        Self(format!("-{}", std::fs::read_to_string(path).unwrap().trim()))
    }

    fn alive(&self) -> bool {
        let probe = Command::new("kill").args(["-0", "--", &self.0]).stderr(Stdio::null()).status();
        probe.unwrap().success()
    }

    /// Whether the group is gone within `limit`. Killed processes linger
    /// until reaped (kill -0 still finds them), so this allows a moment.
    fn gone_within(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        !self.alive()
    }

    fn kill(&self) {
        Command::new("kill").args(["-KILL", "--", &self.0]).status().unwrap();
    }
}

/// A `PATH` with only the programs the test handlers use: no `kill`, as
/// in a slim container image. The runner must stop process groups without
/// it.
fn path_without_kill(server: &Server) -> PathBuf {
    let bin = server.home().join("bin-without-kill");
    std::fs::create_dir_all(&bin).unwrap();
    for program in ["sh", "cat", "sleep", "mv"] {
        let found = Command::new("sh").args(["-c", &format!("command -v {program}")]).output();
        let found = String::from_utf8(found.unwrap().stdout).unwrap();
        std::os::unix::fs::symlink(found.trim(), bin.join(program)).unwrap();
    }
    bin
}

/// Waits until task `id` is `status` (a frozen runner's lease lapsed:
/// the reaper requeued it).
fn wait_for_status(server: &Server, id: &str, status: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while run_json(server.codeq_with_tokens().args(["task", "get", id]))["status"] != status {
        assert!(Instant::now() < deadline, "task {id} never became {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the server has refused `count` heartbeats with a 409 (two:
/// the runner has acted on the first).
fn wait_for_heartbeats_refused(server: &Server, count: u64) {
    let refused = r#"codeq_http_requests_total{method="POST",route="/v1/codeq/tasks/{id}/heartbeat",status="409"} "#;
    let refusals = || {
        let scrape = server.block_on(async {
            reqwest::get(format!("{}/metrics", server.base)).await?.text().await
        });
        let text = scrape.unwrap();
        let line = text.lines().find_map(|line| line.strip_prefix(refused));
        line.map_or(0, |count| count.trim().parse::<u64>().unwrap())
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while refusals() < count {
        assert!(Instant::now() < deadline, "fewer than {count} heartbeats refused");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The output of `child` once it exits, within `limit`; past it, runs
/// `clean_up`, kills `child` and fails with `failure`.
fn output_within(
    mut child: Child,
    limit: Duration,
    failure: &str,
    clean_up: impl FnOnce(),
) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            clean_up();
            child.kill().unwrap();
            panic!("{failure}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn once_runs_the_handler_on_the_task_and_submits_its_result() {
    let server = Server::start();
    let id = create(&server, "ECHO", r#"{"jobId":"j-1"}"#);
    // Echoes the task id it read on stdin, and the payload's jobId.
    let echo = handler(
        &server,
        "echo.sh",
        r#"input=$(cat)
id=$(printf '%s' "$input" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
case "$input" in *j-1*) job=j-1 ;; *) job=none ;; esac
printf '{"status":"COMPLETED","result":{"seen":"%s","job":"%s","env":"%s"}}\n' "$id" "$job" "$CODEQ_TASK_ID""#,
    );

    let output = run(worker(&server, "ECHO", &echo).arg("--once"));
    let answer = run_json(server.codeq_with_tokens().args(["task", "result", &id]));

    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(answer["result"]["status"], "COMPLETED");
    assert_eq!(answer["result"]["result"]["seen"], id.as_str());
    assert_eq!(answer["result"]["result"]["job"], "j-1");
    assert_eq!(answer["result"]["result"]["env"], id.as_str());
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains(&format!("task {id} command=ECHO attempt=1 completed in")), "{log}");
    assert!(log.contains("1 completed"), "{log}");
}

#[test]
fn once_makes_one_claim_per_concurrency_slot() {
    let server = Server::start();
    let ids: Vec<String> = (0..4).map(|_| create(&server, "ONCE3", "{}")).collect();
    let quick = handler(&server, "quick.sh", "cat >/dev/null\necho '{\"status\":\"COMPLETED\"}'");

    let output = run(worker(&server, "ONCE3", &quick).args(["--once", "--concurrency", "3"]));

    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    assert!(log.contains("3 completed"), "{log}");
    let statuses: Vec<String> = ids
        .iter()
        .map(|id| {
            run_json(server.codeq_with_tokens().args(["task", "get", id]))["status"].to_string()
        })
        .collect();
    assert_eq!(statuses.iter().filter(|s| s.contains("COMPLETED")).count(), 3, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| s.contains("PENDING")).count(), 1, "{statuses:?}");
}

#[test]
fn once_exits_1_when_the_result_could_not_be_sent_within_the_lease() {
    let mut server = Server::start();
    let id = create(&server, "LOST", "{}");
    let (started, go) = (server.home().join("started"), server.home().join("go"));
    let waits = handler(
        &server,
        "waits.sh",
        &format!(
            "cat >/dev/null\ntouch '{}'\nwhile [ ! -e '{}' ]; do sleep 0.05; done\necho '{{\"status\":\"COMPLETED\"}}'",
            started.display(),
            go.display()
        ),
    );
    let child = worker(&server, "LOST", &waits)
        .args(["--once", "--lease", "2"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&started);
    server.stop();
    std::fs::write(&go, "").unwrap();
    let output = child.wait_with_output().unwrap();

    let log = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{log}");
    assert!(log.contains(&format!("task {id} result not accepted yet, next attempt in")), "{log}");
    let given_up = format!("task {id} command=LOST attempt=1 not-reported");
    let line = log.lines().find(|line| line.contains(&given_up)).unwrap_or_default();
    let why = "report not accepted: the lease ended before it was accepted: ";
    assert!(line.contains(why), "{log}");
}

#[test]
fn artifacts_a_handler_prints_are_stored_with_its_result() {
    let server = Server::start();
    let id = create(&server, "FILES", "{}");
    // "hello" in base64, and a link.
    let files = handler(
        &server,
        "files.sh",
        r#"cat >/dev/null
echo '{"status":"COMPLETED","result":{"ok":true},"artifacts":[{"name":"hello.txt","contentBase64":"aGVsbG8=","contentType":"text/plain"},{"name":"big.mp4","url":"https://cdn.example.com/big.mp4"}]}'"#,
    );

    let output = run(worker(&server, "FILES", &files).arg("--once"));
    let answer = run_json(server.codeq_with_tokens().args(["task", "result", &id]));

    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let artifacts = answer["result"]["artifacts"].as_array().unwrap();
    let names: Vec<&str> = artifacts.iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["hello.txt", "big.mp4"], "{answer}");
    assert_eq!(artifacts[1]["url"], "https://cdn.example.com/big.mp4");
    // Without publicBaseUrl the server gives a path on itself.
    let stored = format!("{}{}", server.base, artifacts[0]["url"].as_str().unwrap());
    let body = server.block_on(async move {
        let response =
            reqwest::Client::new().get(stored).bearer_auth(PRODUCER).send().await.unwrap();
        response.text().await.unwrap()
    });
    assert_eq!(body, "hello");
}

#[test]
fn a_result_the_server_refuses_fails_the_task_with_the_refusal() {
    let server = Server::start();
    let id = create(&server, "BADFILE", "{}");
    let bad = handler(
        &server,
        "bad.sh",
        r#"cat >/dev/null
echo '{"status":"COMPLETED","artifacts":[{"name":"../escape","contentBase64":"aGVsbG8="}]}'"#,
    );

    let output = run(worker(&server, "BADFILE", &bad).arg("--once"));
    let task = run_json(server.codeq_with_tokens().args(["task", "get", &id]));

    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    assert!(log.contains(&format!("task {id} command=BADFILE attempt=1 failed")), "{log}");
    assert!(log.contains("invalid_artifact"), "{log}");
    // Failed once, not run again: the handler's work is done.
    assert_eq!((task["status"].as_str(), task["attempts"].as_u64()), (Some("FAILED"), Some(1)));
    let error = task["error"].as_str().unwrap();
    assert!(error.starts_with("the result was refused: HTTP 400 invalid_artifact"), "{error}");
}

#[test]
fn a_failing_handler_is_nacked_with_its_stderr() {
    let server = Server::start();
    let id = create(&server, "FAIL", "{}");
    let failing = handler(&server, "fail.sh", "cat >/dev/null\necho 'disk on fire' >&2\nexit 3");

    let output = run(worker(&server, "FAIL", &failing).arg("--once"));
    let task = run_json(server.codeq_with_tokens().args(["task", "get", &id]));

    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(task["status"], "PENDING");
    assert_eq!(task["attempts"], 1);
    let reason = task["lastReason"].as_str().unwrap();
    assert!(reason.contains("exit status: 3") && reason.contains("disk on fire"), "{reason}");
    // The line says when it comes back: the server's backoff.
    let log = String::from_utf8_lossy(&output.stderr);
    let line = log.lines().find(|line| line.contains(" nacked in ")).expect("a nacked line");
    let again = line.split(", again in ").nth(1).and_then(|rest| rest.split("s:").next());
    let detail: serde_json::Value = server.block_on(async {
        let url = format!("{}/v1/codeq/admin/tasks/{id}", server.base);
        let asked = reqwest::Client::new().get(url).bearer_auth(PRODUCER).send().await.unwrap();
        asked.json().await.unwrap()
    });
    let moment = |at: &serde_json::Value| {
        codeq_core::Timestamp::parse_rfc3339(at.as_str().unwrap()).unwrap().millis()
    };
    let backoff = (moment(&detail["visibleAt"]) - moment(&task["updatedAt"])) / 1000;
    assert_eq!(again, Some(backoff.to_string().as_str()), "{line}");
    assert!(line.ends_with(": handler exit status: 3: disk on fire"), "{line}");
}

#[test]
fn a_handler_printing_more_than_16_mib_is_stopped_and_nacked() {
    let server = Server::start();
    let id = create(&server, "LOUD", "{}");
    // Prints for ever, even once its stdout is closed: only being killed
    // ends it.
    let started = server.home().join("started");
    let loud = handler(
        &server,
        "loud.sh",
        &format!(
            "cat >/dev/null\n{}\necho 'printing' >&2\n\
             trap '' PIPE\nwhile :; do yes xxxxxxxxxxxxxxx 2>/dev/null; done",
            records_its_pid(&started)
        ),
    );

    let child =
        worker(&server, "LOUD", &loud).arg("--once").stderr(Stdio::piped()).spawn().unwrap();
    let output = output_within(
        child,
        Duration::from_secs(60),
        "the runner did not stop a handler printing for ever",
        // Not left burning a core for the tests after this one.
        || HandlerGroup::of(&started).kill(),
    );
    let task = run_json(server.codeq_with_tokens().args(["task", "get", &id]));

    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!((task["status"].as_str(), task["attempts"].as_u64()), (Some("PENDING"), Some(1)));
    let reason = task["lastReason"].as_str().unwrap();
    assert!(reason.contains("more than 16777216 bytes on stdout: stopped"), "{reason}");
    assert!(reason.contains("printing"), "with the tail of its stderr: {reason}");
}

#[test]
fn a_handler_running_past_its_timeout_is_stopped_and_nacked() {
    let server = Server::start();
    let id = create(&server, "SLOW", "{}");
    let started = server.home().join("started");
    let slow = handler(
        &server,
        "slow.sh",
        &format!(
            "{}\ncat >/dev/null\necho 'waiting on the lock' >&2\nsleep 60\necho '{{}}'",
            records_its_pid(&started)
        ),
    );

    let child = worker(&server, "SLOW", &slow)
        .args(["--once", "--timeout", "2"])
        .env("PATH", path_without_kill(&server))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = output_within(
        child,
        Duration::from_secs(30),
        "the runner let the handler run past its timeout",
        || HandlerGroup::of(&started).kill(),
    );
    let task = run_json(server.codeq_with_tokens().args(["task", "get", &id]));

    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(HandlerGroup::of(&started).gone_within(Duration::from_secs(5)), "its sleep lives on");
    assert_eq!((task["status"].as_str(), task["attempts"].as_u64()), (Some("PENDING"), Some(1)));
    let reason = task["lastReason"].as_str().unwrap();
    assert_eq!(reason, "handler ran longer than 2s (--timeout): stopped: waiting on the lock");
}

#[test]
fn a_handler_reporting_failed_fails_the_task() {
    let server = Server::start();
    let id = create(&server, "BAD", "{}");
    let refusing =
        handler(&server, "refuse.sh", r#"echo '{"status":"FAILED","error":"bad input"}'"#);

    run(worker(&server, "BAD", &refusing).arg("--once"));
    let answer = run_json(server.codeq_with_tokens().args(["task", "result", &id]));

    assert_eq!(answer["task"]["status"], "FAILED");
    assert_eq!(answer["result"]["error"], "bad input");
}

#[test]
fn heartbeats_keep_a_handler_three_times_longer_than_the_lease_and_it_is_delivered_once() {
    let server = Server::start();
    let id = create(&server, "SLOW", "{}");
    let runs = server.home().join("runs");
    let slow = handler(
        &server,
        "slow.sh",
        &format!(
            "cat >/dev/null\necho run >> '{}'\nsleep 6\necho '{{\"status\":\"COMPLETED\",\"result\":{{}}}}'",
            runs.display()
        ),
    );
    let mut main = worker(&server, "SLOW", &slow);
    let main = main.args(["--once", "--lease", "2"]).stderr(Stdio::piped()).spawn().unwrap();
    wait_for(&runs);
    // A second runner competes for the queue while the handler runs: had
    // the lease lapsed, it would have been handed the task again.
    let mut rival = worker(&server, "SLOW", &slow).stderr(Stdio::null()).spawn().unwrap();

    let output = main.wait_with_output().unwrap();
    let answer = run_json(server.codeq_with_tokens().args(["task", "result", &id]));
    Command::new("kill").args(["-TERM", &rival.id().to_string()]).status().unwrap();
    rival.wait().unwrap();

    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(answer["result"]["status"], "COMPLETED");
    assert_eq!(answer["task"]["attempts"], 1);
    assert_eq!(std::fs::read_to_string(&runs).unwrap(), "run\n", "delivered exactly once");
}

#[test]
fn sigterm_lets_the_running_handler_finish_and_exits_130() {
    a_stop_signal_lets_the_running_handler_finish("TERM");
}

/// A closed terminal: the handlers run in their own process group, so
/// the hangup reaches the runner only, which must drain as for SIGTERM
/// rather than die and leave them unsupervised.
#[test]
fn sighup_lets_the_running_handler_finish_and_exits_130() {
    a_stop_signal_lets_the_running_handler_finish("HUP");
}

/// Started with SIGHUP ignored (as `nohup` does), the runner keeps it
/// ignored: it goes on claiming after a hangup.
#[test]
fn under_nohup_a_hangup_is_ignored() {
    let server = Server::start();
    let first = create(&server, "NOHUP", "{}");
    let done = handler(&server, "done.sh", "cat >/dev/null\necho '{\"status\":\"COMPLETED\"}'");
    let mut ignoring = with_hangup(&worker(&server, "NOHUP", &done), true);
    let child = ignoring.stderr(Stdio::piped()).spawn().unwrap();
    let completed = |id: &str| {
        run_json(server.codeq_with_tokens().args(["task", "get", id]))["status"] == "COMPLETED"
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !completed(&first) {
        assert!(Instant::now() < deadline, "the first task was never done");
        std::thread::sleep(Duration::from_millis(20));
    }

    Command::new("kill").args(["-HUP", &child.id().to_string()]).status().unwrap();
    let second = create(&server, "NOHUP", "{}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !completed(&second) {
        assert!(Instant::now() < deadline, "the runner stopped claiming after the hangup");
        std::thread::sleep(Duration::from_millis(20));
    }
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let output = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{log}");
    assert!(log.contains("2 completed"), "{log}");
}

/// `runner` started with SIGHUP ignored (as under `nohup`) or at its
/// default action, whatever the tests were started with: by `env`, since
/// a shell cannot reset a signal ignored when it started (`trap - HUP`
/// under `nohup` leaves it ignored).
fn with_hangup(runner: &Command, ignored: bool) -> Command {
    let mut shell = Command::new("env");
    shell.arg(if ignored { "--ignore-signal=HUP" } else { "--default-signal=HUP" });
    shell.arg(runner.get_program());
    shell.args(runner.get_args()).env_clear();
    if let Some(dir) = runner.get_current_dir() {
        shell.current_dir(dir);
    }
    for (key, value) in runner.get_envs() {
        if let Some(value) = value {
            shell.env(key, value);
        }
    }
    shell
}

fn a_stop_signal_lets_the_running_handler_finish(signal: &str) {
    let server = Server::start();
    let id = create(&server, "TERM", "{}");
    let started = server.home().join("started");
    let slow = handler(
        &server,
        "slow.sh",
        &format!(
            "cat >/dev/null\ntouch '{}'\nsleep 1\necho '{{\"status\":\"COMPLETED\",\"result\":{{\"finished\":true}}}}'",
            started.display()
        ),
    );
    // SIGHUP's default action, even when the tests run under `nohup`.
    let mut runner = with_hangup(&worker(&server, "TERM", &slow), false);
    let child = runner.stderr(Stdio::piped()).spawn().unwrap();

    wait_for(&started);
    Command::new("kill").args([&format!("-{signal}"), &child.id().to_string()]).status().unwrap();
    let output = child.wait_with_output().unwrap();
    let answer = run_json(server.codeq_with_tokens().args(["task", "result", &id]));

    let log = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "SIG{signal}: {log}");
    assert_eq!(answer["result"]["result"]["finished"], true);
    assert!(log.contains("1 completed"), "{log}");
}

#[test]
fn a_second_signal_abandons_the_running_handler() {
    let server = Server::start();
    let id = create(&server, "STUCK", "{}");
    let (started, stuck) = sleeps_a_minute(&server);
    let child = worker(&server, "STUCK", &stuck).stderr(Stdio::piped()).spawn().unwrap();

    wait_for(&started);
    let begun = Instant::now();
    for _ in 0..2 {
        Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }
    let output = child.wait_with_output().unwrap();
    let task = run_json(server.codeq_with_tokens().args(["task", "get", &id]));

    let log = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{log}");
    assert!(begun.elapsed() < Duration::from_secs(10), "the handler was not waited for");
    assert_eq!(task["status"], "PENDING", "given back at once");
    assert_eq!(task["attempts"], 1);
    assert!(log.contains("1 abandoned"), "{log}");
    // The handler's `sleep 60` would outlive this easily.
    let group = HandlerGroup::of(&started);
    assert!(
        group.gone_within(Duration::from_secs(10)),
        "the handler's own children were killed with it"
    );
}

#[test]
fn a_task_cancelled_while_its_handler_runs_stops_the_handler() {
    let server = Server::start();
    let id = create(&server, "LONG", "{}");
    let (started, long) = sleeps_a_minute(&server);
    // A 6 s lease: a heartbeat every 2 s.
    let child = worker(&server, "LONG", &long)
        .args(["--lease", "6"])
        .env("PATH", path_without_kill(&server))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&started);
    let group = HandlerGroup::of(&started);
    assert!(group.alive());

    let cancelled = run_json(server.codeq_with_tokens().args(["task", "cancel", &id]));
    assert_eq!(cancelled["status"], "CANCELLED");
    // The next heartbeat is refused with task_cancelled; the runner kills
    // the handler's group (its `sleep 60` would outlive this easily).
    assert!(group.gone_within(Duration::from_secs(20)), "the cancelled task's handler was stopped");
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let output = child.wait_with_output().unwrap();

    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains(&format!("task {id} command=LONG attempt=1 cancelled")), "{log}");
    assert!(log.contains("0 not reported, 1 cancelled"), "{log}");
    let task = run_json(server.codeq_with_tokens().args(["task", "get", &id]));
    assert_eq!(task["status"], "CANCELLED");
}

/// The runner is frozen past its lease; thawed, its heartbeats meet the
/// lapsed lease (the handler goes on), then the task is claimed again: at
/// its next heartbeat the runner must stop the handler, not let two
/// deliveries run side by side.
#[test]
fn a_handler_whose_lease_was_lost_is_stopped() {
    let server = Server::start();
    let id = create(&server, "LOST", "{}");
    let (started, long) = sleeps_a_minute(&server);
    let child = worker(&server, "LOST", &long)
        .args(["--lease", "2"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&started);
    let group = HandlerGroup::of(&started);
    let runner = child.id().to_string();

    Command::new("kill").args(["-STOP", &runner]).status().unwrap();
    wait_for_status(&server, &id, "PENDING");
    Command::new("kill").args(["-CONT", &runner]).status().unwrap();
    wait_for_heartbeats_refused(&server, 2);
    assert!(group.alive(), "the handler of a lapsed, unclaimed delivery was stopped");
    let deadline = Instant::now() + Duration::from_secs(20);
    let again = loop {
        let claimed = run(server.codeq_with_tokens().args([
            "task",
            "claim",
            "--commands",
            "LOST",
            "--lease",
            "60",
            "--wait",
            "1",
        ]));
        if !claimed.stdout.is_empty() {
            break serde_json::from_slice::<serde_json::Value>(&claimed.stdout).unwrap();
        }
        assert!(Instant::now() < deadline, "the lapsed task was never claimed again");
    };

    let stopped = group.gone_within(Duration::from_secs(10));
    if !stopped {
        group.kill();
    }
    Command::new("kill").args(["-TERM", &runner]).status().unwrap();
    let output = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(stopped, "the handler of the lost delivery ran on: {log}");
    assert_eq!((again["id"].as_str(), again["attempts"].as_u64()), (Some(id.as_str()), Some(2)));
    let line = log.lines().find(|line| line.contains(&format!("task {id} "))).unwrap_or_default();
    assert!(line.contains("attempt=1 not-reported"), "{log}");
    assert!(
        line.contains("the task was taken over while the handler ran, so it was stopped"),
        "{log}"
    );
}

/// The runner is frozen past its lease, and nobody claims the task in the
/// meantime: its heartbeats are refused (`lease_expired`), but the server
/// still takes this delivery's result, so the handler must be let finish.
#[test]
fn a_handler_whose_lease_lapsed_unclaimed_finishes_and_its_result_is_taken() {
    let server = Server::start();
    let id = create(&server, "LAPSED", "{}");
    let started = server.home().join("started");
    let finish = server.home().join("finish");
    let slow = handler(
        &server,
        "slow.sh",
        &format!(
            "cat >/dev/null\n{}\nwhile [ ! -e '{}' ]; do sleep 0.05; done\necho '{{\"status\":\"COMPLETED\",\"result\":{{\"late\":true}}}}'",
            records_its_pid(&started),
            finish.display()
        ),
    );
    let child = worker(&server, "LAPSED", &slow)
        .args(["--lease", "2", "--once"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&started);
    let runner = child.id().to_string();

    Command::new("kill").args(["-STOP", &runner]).status().unwrap();
    wait_for_status(&server, &id, "PENDING");
    Command::new("kill").args(["-CONT", &runner]).status().unwrap();
    // Its next heartbeats (every lease/3) meet the lapsed lease.
    wait_for_heartbeats_refused(&server, 2);
    let group = HandlerGroup::of(&started);
    assert!(group.alive(), "the handler of a lapsed, unclaimed delivery was stopped");
    std::fs::write(&finish, b"").unwrap();
    let output =
        output_within(child, Duration::from_secs(30), "the runner never ended", || group.kill());

    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    assert!(log.contains(&format!("task {id} command=LAPSED attempt=1 completed")), "{log}");
    let answer = run_json(server.codeq_with_tokens().args(["task", "result", &id]));
    assert_eq!(answer["result"]["result"]["late"], true);
}

#[test]
fn a_refused_worker_token_stops_the_runner_with_exit_code_3() {
    let server = Server::start();
    let noop = handler(&server, "noop.sh", "cat >/dev/null");

    let output = run(server
        .codeq()
        .args(["--base-url", &server.base, "--worker-token", "not-a-token"])
        .args(["worker", "start", "--events", "X", "--handler"])
        .arg(&noop));

    assert_eq!(output.status.code(), Some(3), "{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn a_token_that_may_not_report_stops_the_runner_with_the_refusal_and_gives_the_task_back() {
    let server = Server::start();
    let id = create(&server, "NOREPORT", "{}");
    let second = create(&server, "NOREPORT", "{}");
    let ok = handler(&server, "ok.sh", r#"cat >/dev/null; echo '{"status":"COMPLETED"}'"#);

    let child = server
        .codeq()
        .args(["--base-url", &server.base, "--worker-token", CLAIM_ONLY_WORKER])
        .args(["worker", "start", "--events", "NOREPORT", "--poll", "1", "--handler"])
        .arg(&ok)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = output_within(
        child,
        Duration::from_secs(60),
        "the runner went on claiming tasks it may not report",
        || {},
    );

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("not-reported") && stderr.contains("missing_scope"), "{stderr}");
    // Neither task waits out a lease: the refused one was given back, and
    // no other was claimed after the refusal.
    for task in [&id, &second] {
        let shown = run_json(server.codeq_with_tokens().args(["task", "get", task.as_str()]));
        assert_eq!(shown["status"], "PENDING", "{shown}");
    }
}

#[test]
fn without_a_worker_token_the_runner_exits_2_with_a_hint() {
    let server = Server::start();
    let noop = handler(&server, "noop.sh", "cat >/dev/null");

    let output = run(server
        .codeq()
        .args(["--base-url", &server.base, "worker", "start", "--events", "X", "--handler"])
        .arg(&noop));

    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("hint: pass --worker-token"));
}

#[test]
fn concurrency_two_runs_two_handlers_at_once() {
    let server = Server::start();
    let ids = [create(&server, "PAIR", "{}"), create(&server, "PAIR", "{}")];
    let dir = server.home().join("pair");
    std::fs::create_dir_all(&dir).unwrap();
    // Each handler waits until both have started: with one slot the first
    // would give up after 10 s and fail the task.
    let pair = handler(
        &server,
        "pair.sh",
        &format!(
            r#"cat >/dev/null
touch '{dir}'/"$CODEQ_TASK_ID"
for _ in $(seq 100); do
  [ "$(ls '{dir}' | wc -l)" -ge 2 ] && {{ echo '{{"status":"COMPLETED","result":{{}}}}'; exit 0; }}
  sleep 0.1
done
echo '{{"status":"FAILED","error":"ran alone"}}'"#,
            dir = dir.display()
        ),
    );
    let mut command = worker(&server, "PAIR", &pair);
    let child = command.args(["--concurrency", "2"]).stderr(Stdio::piped()).spawn().unwrap();

    let deadline = Instant::now() + Duration::from_secs(20);
    let finished = |id: &str| {
        let task = run_json(server.codeq_with_tokens().args(["task", "get", id]));
        task["status"] != "PENDING" && task["status"] != "IN_PROGRESS"
    };
    while !ids.iter().all(|id| finished(id)) {
        assert!(Instant::now() < deadline, "the pair never finished");
        std::thread::sleep(Duration::from_millis(50));
    }
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let output = child.wait_with_output().unwrap();

    for id in &ids {
        let answer = run_json(server.codeq_with_tokens().args(["task", "result", id]));
        assert_eq!(answer["result"]["status"], "COMPLETED", "{answer}");
    }
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("2 completed"), "{log}");
}

#[test]
fn a_handler_that_does_not_exist_exits_2_before_claiming() {
    let server = Server::start();
    let id = create(&server, "TYPO", "{}");

    let output = run(worker(&server, "TYPO", Path::new("./no-such-handler.sh")).arg("--once"));
    let task = run_json(server.codeq_with_tokens().args(["task", "get", &id]));

    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no-such-handler.sh"));
    assert_eq!((task["status"].as_str(), task["attempts"].as_u64()), (Some("PENDING"), Some(0)));
}

#[test]
fn a_handler_the_system_cannot_start_exits_2_before_claiming() {
    let server = Server::start();
    let id = create(&server, "NSB", "{}");
    let no_shebang = executable(&server, "noshebang.py", "print(1)\n");
    let no_interpreter = executable(&server, "gone.py", "#!/no/such/python3\nprint(1)\n");
    let windows = executable(&server, "crlf.sh", "#!/bin/sh\r\ncat >/dev/null\r\n");

    let unmarked = run(worker(&server, "NSB", &no_shebang).arg("--once"));
    let interpreter_gone = run(worker(&server, "NSB", &no_interpreter).arg("--once"));
    let crlf = run(worker(&server, "NSB", &windows).arg("--once"));
    let task = run_json(server.codeq_with_tokens().args(["task", "get", &id]));

    let stderr = String::from_utf8_lossy(&unmarked.stderr);
    assert_eq!(unmarked.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("noshebang.py: the system cannot run it"), "{stderr}");
    assert!(stderr.contains("such as #!/bin/sh or #!/usr/bin/env python3"), "{stderr}");
    let stderr = String::from_utf8_lossy(&interpreter_gone.stderr);
    assert_eq!(interpreter_gone.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("its #! line names /no/such/python3"), "{stderr}");
    let stderr = String::from_utf8_lossy(&crlf.stderr);
    assert_eq!(crlf.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("Windows line endings"), "{stderr}");
    assert_eq!((task["status"].as_str(), task["attempts"].as_u64()), (Some("PENDING"), Some(0)));
}

#[test]
fn a_bare_handler_name_is_found_in_the_current_directory() {
    let server = Server::start();
    let id = create(&server, "BARE", "{}");
    handler(&server, "bare.sh", r#"echo '{"status":"COMPLETED","result":{"bare":true}}'"#);

    let output = run(worker(&server, "BARE", Path::new("bare.sh")).arg("--once"));
    let answer = run_json(server.codeq_with_tokens().args(["task", "result", &id]));

    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(answer["result"]["result"]["bare"], true);
}

#[test]
fn once_against_an_unreachable_server_fails_instead_of_reporting_nothing_to_do() {
    let server = Server::start();
    let noop = handler(&server, "noop.sh", "cat >/dev/null");
    let url = closed_port();

    let output = run(server
        .codeq()
        .args(["--base-url", &url, "--worker-token", "w"])
        .args(["worker", "start", "--events", "X", "--once", "--handler"])
        .arg(&noop));

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("hint: is `codeq serve` running at {url}?")), "{stderr}");
}

#[test]
fn a_worker_whose_server_is_down_says_once_per_step_that_it_retries() {
    let server = Server::start();
    let noop = handler(&server, "noop.sh", "cat >/dev/null");
    let url = closed_port();
    let mut child = server
        .codeq()
        .args(["--base-url", &url, "--worker-token", "w"])
        .args(["worker", "start", "--events", "X", "--concurrency", "3", "--handler"])
        .arg(&noop)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // The first lines: the banner, then one per backoff step (0.5 s, 1 s).
    let (lines, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
            let _ = lines.send(line.unwrap());
        }
    });
    let retries: Vec<String> = (0..3)
        .map(|_| rx.recv_timeout(Duration::from_secs(20)).unwrap())
        .filter(|line| line.contains("claim failed"))
        .collect();
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let status = child.wait().unwrap();

    assert_eq!(retries.len(), 2, "{retries:?}");
    let connect = format!(": cannot connect to {url} (");
    assert!(retries.iter().all(|line| line.contains(&connect)), "{retries:?}");
    assert!(retries[0].ends_with("is `codeq serve` running there?"), "{retries:?}");
    // The pause doubles from 0.5 s, each drawn from its upper half.
    let pause = |line: &str| -> f64 {
        let after = line.split("claim failed, next attempt in ").nth(1).unwrap();
        after.split("s: ").next().unwrap().parse().unwrap()
    };
    let (first, second) = (pause(&retries[0]), pause(&retries[1]));
    assert!((0.25..=0.5).contains(&first), "{retries:?}");
    assert!((0.5..=1.0).contains(&second), "{retries:?}");
    assert_eq!(status.code(), Some(130));
}

#[test]
fn the_handlers_stderr_is_relayed_with_the_task_id_and_bad_output_is_shown() {
    let server = Server::start();
    let id = create(&server, "CHATTY", "{}");
    let chatty = handler(
        &server,
        "chatty.sh",
        "cat >/dev/null\necho 'step 1' >&2\necho 'step 2' >&2\necho hello",
    );

    let output = run(worker(&server, "CHATTY", &chatty).arg("--once"));
    let task = run_json(server.codeq_with_tokens().args(["task", "get", &id]));

    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains(&format!("[{id}] step 1\n[{id}] step 2\n")), "{log}");
    assert!(
        log.contains(r#"is not {"status":"COMPLETED"|"FAILED",…}: it printed "hello""#),
        "{log}"
    );
    let reason = task["lastReason"].as_str().unwrap();
    assert!(
        reason.contains(r#"it printed "hello""#) && reason.ends_with("step 1\nstep 2"),
        "{reason}"
    );
}

#[test]
fn the_last_failed_attempt_is_logged_as_dead_lettered() {
    let server = Server::start();
    let mut create = server.codeq_with_tokens();
    create.args(["task", "create", "--command", "LAST", "--max-attempts", "1", "-o", "id"]);
    let id = String::from_utf8(run(&mut create).stdout).unwrap().trim().to_owned();
    let failing = handler(&server, "fail.sh", "cat >/dev/null\nexit 1");

    let output = run(worker(&server, "LAST", &failing).arg("--once"));
    let task = run_json(server.codeq_with_tokens().args(["task", "get", &id]));

    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains(&format!("task {id} command=LAST attempt=1 dead-lettered in")), "{log}");
    assert!(
        log.contains("stopped after 1 task: 0 completed, 0 failed, 0 nacked, 1 dead-lettered"),
        "{log}"
    );
    assert_eq!(
        (task["status"].as_str(), task["error"].as_str()),
        (Some("FAILED"), Some("MAX_ATTEMPTS"))
    );
}
