//! Queue control through the binary: `task cancel`, `task list`, `queue
//! pause|resume|settings` and `dlq list|replay|purge`, with their JSON,
//! tables, ids and exit codes.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use codeq_client::{ClaimRequest, Client, CreateTask};
use serde_json::{Value, json};

use crate::support::{PRODUCER, Server, WORKER, run, run_json};

/// `codeq_with_tokens` running `args`.
fn codeq(server: &Server, args: &[&str]) -> Output {
    run(server.codeq_with_tokens().args(args))
}

/// `codeq_with_tokens` running `args`, which must succeed, as JSON.
fn codeq_json(server: &Server, args: &[&str]) -> Value {
    run_json(server.codeq_with_tokens().args(args))
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn create(server: &Server, command: &str) -> String {
    let created = codeq_json(server, &["task", "create", "--command", command, "--payload", "{}"]);
    created["id"].as_str().unwrap().to_owned()
}

/// The ids of a page's tasks, in order.
fn ids_of(page: &Value) -> Vec<String> {
    page["tasks"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().to_owned()).collect()
}

/// The non-empty lines of stdout.
fn lines(output: &Output) -> Vec<String> {
    stdout(output).lines().filter(|l| !l.is_empty()).map(str::to_owned).collect()
}

/// Dead-letters `count` new tasks of `command` (one delivery each, nacked
/// with `reason`) through the client library; their ids, oldest first.
fn dead_letters(server: &Server, command: &str, count: usize, reason: &str) -> Vec<String> {
    let client = Client::new(&server.base).unwrap().with_producer_token(PRODUCER);
    let client = client.with_worker_token(WORKER);
    server.block_on(async {
        let mut ids = Vec::new();
        for _ in 0..count {
            let create =
                CreateTask { max_attempts: Some(1), ..CreateTask::new(command, json!({})) };
            let id = client.create_task(&create).await.unwrap().task.id;
            let claimed = client.claim(&ClaimRequest::new([command])).await.unwrap().unwrap();
            assert_eq!(claimed.id, id);
            client.nack(&id, claimed.attempts, None, Some(reason)).await.unwrap();
            ids.push(id);
        }
        ids
    })
}

#[test]
fn the_result_of_a_task_without_one_says_what_state_the_task_is_in() {
    let server = Server::start();
    let pending = create(&server, "NORESULT");
    let absent = "0196a3c2-6a00-7c11-8d22-0e1f2a3b4c5d";

    let of_pending = codeq(&server, &["task", "result", &pending]);
    let of_absent = codeq(&server, &["task", "result", absent]);

    let said = String::from_utf8_lossy(&of_pending.stderr);
    assert_eq!(of_pending.status.code(), of_absent.status.code(), "the 404's exit code: {said}");
    assert!(
        said.contains(&format!(
            "task {pending} is PENDING (0 of 5 deliveries made): no result yet"
        )),
        "{said}"
    );
    let said = String::from_utf8_lossy(&of_absent.stderr);
    assert!(said.contains("result_not_found") && !said.contains("PENDING"), "{said}");
}

#[test]
fn cancelling_one_task_prints_it_cancelled_with_its_reason() {
    let server = Server::start();
    let id = create(&server, "C");

    let cancelled = codeq_json(&server, &["task", "cancel", &id, "--reason", "not needed"]);
    let answer = codeq_json(&server, &["task", "result", &id]);
    let table = codeq(&server, &["task", "get", &id, "-o", "table"]);

    assert_eq!(cancelled["id"], id.as_str());
    assert_eq!(
        (cancelled["status"].as_str(), cancelled["error"].as_str()),
        (Some("CANCELLED"), Some("not needed"))
    );
    assert_eq!(answer["result"]["status"], "CANCELLED");
    assert_eq!(answer["result"]["error"], "not needed");
    let text = stdout(&table);
    assert!(text.lines().any(|l| l.starts_with("status") && l.ends_with("CANCELLED")), "{text}");
}

#[test]
fn cancelling_a_terminal_task_prints_task_terminal_and_exits_4() {
    let server = Server::start();
    let id = create(&server, "C");
    codeq_json(&server, &["task", "cancel", &id]);

    let again = codeq(&server, &["task", "cancel", &id]);
    let malformed = codeq(&server, &["task", "cancel", &id, "not-an-id"]);

    assert_eq!(again.status.code(), Some(4), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("HTTP 409 task_terminal: task is already CANCELLED"),
        "{}",
        stderr(&again)
    );
    assert!(again.stdout.is_empty());
    assert_eq!(malformed.status.code(), Some(2), "checked before any request");
    assert!(stderr(&malformed).contains("\"not-an-id\" is malformed"), "{}", stderr(&malformed));
}

#[test]
fn cancelling_several_tasks_prints_each_outcome_and_exits_4_if_any_was_refused() {
    let server = Server::start();
    let ids: Vec<String> = (0..3).map(|_| create(&server, "B")).collect();
    codeq_json(&server, &["task", "cancel", &ids[1]]);
    let unknown = "0196a3c2-5f1e-7d2a-9b3c-4e5f6a7b8c9d";

    let mixed = codeq(&server, &["task", "cancel", &ids[0], &ids[1], unknown, "-o", "table"]);
    let fine = codeq(&server, &["task", "cancel", &ids[2], "-o", "json", "--reason", "batch"]);

    assert_eq!(mixed.status.code(), Some(4), "{}", stderr(&mixed));
    assert!(stderr(&mixed).contains("2 of 3 tasks not cancelled"), "{}", stderr(&mixed));
    let rows: Vec<Vec<String>> = lines(&mixed)
        .iter()
        .map(|l| l.split_whitespace().take(2).map(str::to_owned).collect())
        .collect();
    assert_eq!(rows[0], ["ID", "OUTCOME"]);
    assert_eq!(rows[1], [ids[0].as_str(), "CANCELLED"]);
    assert_eq!(rows[2], [ids[1].as_str(), "task_terminal"]);
    assert_eq!(rows[3], [unknown, "task_not_found"]);
    assert!(fine.status.success(), "{}", stderr(&fine));
    let task = codeq_json(&server, &["task", "get", &ids[2]]);
    assert_eq!(task["error"], "batch", "one id: the single route, with the reason");
}

#[test]
fn a_batch_cancel_answers_in_json_and_ids() {
    let server = Server::start();
    let ids: Vec<String> = (0..2).map(|_| create(&server, "J")).collect();
    let more: Vec<String> = (0..2).map(|_| create(&server, "J")).collect();

    let answer = codeq_json(&server, &["task", "cancel", &ids[0], &ids[1]]);
    let printed = codeq(&server, &["task", "cancel", &more[0], &more[1], "-o", "id"]);

    assert_eq!(
        answer,
        json!({"results": [
            {"taskId": ids[0], "status": "CANCELLED"},
            {"taskId": ids[1], "status": "CANCELLED"}
        ]})
    );
    assert!(printed.status.success(), "{}", stderr(&printed));
    assert_eq!(lines(&printed), more);
}

/// Writes an executable `/bin/sh` script into the server's HOME.
fn handler(server: &Server, name: &str, body: &str) -> std::path::PathBuf {
    let path = server.home().join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(Instant::now() < deadline, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_worker_whose_task_is_cancelled_while_it_runs_has_its_result_refused() {
    let server = Server::start();
    let id = create(&server, "RUN");
    let (started, go) = (server.home().join("started"), server.home().join("go"));
    let waiting = handler(
        &server,
        "wait.sh",
        &format!(
            "cat >/dev/null\ntouch '{}'\nwhile [ ! -e '{}' ]; do sleep 0.05; done\n\
             echo '{{\"status\":\"COMPLETED\",\"result\":{{}}}}'",
            started.display(),
            go.display()
        ),
    );
    let worker = server
        .codeq_with_tokens()
        .args(["worker", "start", "--events", "RUN", "--once", "--handler"])
        .arg(&waiting)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    wait_for(&started);
    let cancelled = codeq_json(&server, &["task", "cancel", &id]);
    std::fs::write(&go, "").unwrap();
    let output = worker.wait_with_output().unwrap();
    let task = codeq_json(&server, &["task", "get", &id]);

    assert_eq!(cancelled["status"], "CANCELLED");
    assert!(cancelled.get("workerId").is_none(), "no longer held");
    let log = stderr(&output);
    // The handler ended before its next heartbeat: its result is refused
    // as cancelled.
    assert!(log.contains(&format!("task {id} command=RUN attempt=1 cancelled")), "{log}");
    assert_eq!(task["status"], "CANCELLED", "the worker's result did not undo the cancel");
}

#[test]
fn task_list_pages_newest_first_by_command_and_status() {
    let server = Server::start();
    let listed: Vec<String> = (0..3).map(|_| create(&server, "L")).collect();
    create(&server, "M");
    let newest_first: Vec<String> = listed.iter().rev().cloned().collect();

    let first = codeq_json(&server, &["task", "list", "--command", "L", "--limit", "2"]);
    let cursor = first["nextCursor"].as_str().unwrap().to_owned();
    let rest = codeq_json(&server, &["task", "list", "--command", "L", "--cursor", &cursor]);
    let all =
        codeq(&server, &["task", "list", "--command", "L", "--limit", "1", "--all", "-o", "id"]);
    let pending = codeq_json(&server, &["task", "list", "--status", "pending", "--payload"]);
    let table = codeq(&server, &["task", "list", "--command", "L", "--limit", "1", "-o", "table"]);

    assert_eq!(ids_of(&first), newest_first[..2]);
    assert!(first["tasks"][0].get("payload").is_none(), "no payload unless asked");
    assert_eq!(ids_of(&rest), newest_first[2..]);
    assert!(rest.get("nextCursor").is_none(), "the last page");
    assert_eq!(lines(&all), newest_first, "every page, one id a line");
    assert!(all.stderr.is_empty(), "no page left to tell of: {}", stderr(&all));
    assert_eq!(ids_of(&pending).len(), 4);
    assert_eq!(pending["tasks"][0]["payload"], "{}");
    let rows = lines(&table);
    assert!(rows[0].starts_with("ID") && rows[0].contains("STATUS"), "{rows:?}");
    assert!(rows[1].starts_with(&newest_first[0]) && rows[1].contains("PENDING"), "{rows:?}");
    assert!(stderr(&table).contains("more follow: --cursor "), "{}", stderr(&table));
}

#[test]
fn task_list_refuses_an_unknown_status_before_a_request() {
    let server = Server::start();

    let output = codeq(&server, &["task", "list", "--status", "DONE"]);

    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("IN_PROGRESS"),
        "the statuses are listed: {}",
        stderr(&output)
    );
}

#[test]
fn a_paused_queue_keeps_its_tasks_until_resumed_and_shows_it_in_the_table() {
    let server = Server::start();
    let id = create(&server, "P");

    let paused = codeq_json(&server, &["queue", "pause", "P"]);
    let held = codeq(&server, &["task", "claim", "--commands", "P"]);
    let table = codeq(&server, &["queue", "list", "-o", "table"]);
    let resumed = codeq(&server, &["queue", "resume", "P", "-o", "table"]);
    let claimed = codeq_json(&server, &["task", "claim", "--commands", "P"]);

    assert_eq!(paused, json!({"paused": true}));
    assert!(held.status.success() && held.stdout.is_empty(), "no task while paused");
    let text = stdout(&table);
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().eq(["P", "1", "0", "0", "0", "yes", "-", "-", "-"])),
        "{text}"
    );
    let shown = stdout(&resumed);
    assert!(shown.lines().any(|l| l.split_whitespace().eq(["paused", "no"])), "{shown}");
    assert_eq!(claimed["id"], id.as_str());
}

#[test]
fn queue_settings_change_only_what_the_flags_name() {
    let server = Server::start();

    let shown = codeq_json(&server, &["queue", "settings", "S"]);
    let limited = codeq_json(&server, &["queue", "settings", "S", "--max-in-flight", "1"]);
    let rated = codeq_json(&server, &["queue", "settings", "S", "--rate", "0.5", "--burst", "3"]);
    codeq_json(&server, &["queue", "pause", "S"]);
    let unlimited = codeq_json(&server, &["queue", "settings", "S", "--no-max-in-flight"]);
    let stats = codeq_json(&server, &["queue", "stats", "--command", "S"]);
    let cleared = codeq_json(&server, &["queue", "settings", "S", "--no-rate"]);
    let burst_alone = codeq(&server, &["queue", "settings", "S", "--burst", "2"]);

    assert_eq!(shown, json!({"paused": false}));
    assert_eq!(limited, json!({"paused": false, "maxInFlight": 1}));
    assert_eq!(rated, json!({"paused": false, "maxInFlight": 1, "ratePerSecond": 0.5, "burst": 3}));
    assert_eq!(unlimited, json!({"paused": true, "ratePerSecond": 0.5, "burst": 3}), "pause kept");
    assert_eq!(
        (stats["paused"].clone(), stats["ratePerSecond"].clone()),
        (json!(true), json!(0.5))
    );
    assert_eq!(cleared, json!({"paused": true}));
    assert_eq!(burst_alone.status.code(), Some(2), "{}", stderr(&burst_alone));
    assert!(stderr(&burst_alone).contains("--burst needs a rate"), "{}", stderr(&burst_alone));
}

#[test]
fn max_in_flight_set_from_the_command_line_holds_the_second_claim() {
    let server = Server::start();
    create(&server, "ONE");
    create(&server, "ONE");
    codeq_json(&server, &["queue", "settings", "ONE", "--max-in-flight", "1"]);

    let first = codeq_json(&server, &["task", "claim", "--commands", "ONE"]);
    let second = codeq(&server, &["task", "claim", "--commands", "ONE"]);
    let table = codeq(&server, &["queue", "inspect", "ONE", "-o", "table"]);

    assert_eq!(first["status"], "IN_PROGRESS");
    assert!(second.status.success() && second.stdout.is_empty(), "one in flight at most");
    let text = stdout(&table);
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().eq(["ONE", "1", "0", "1", "0", "no", "1", "-", "-"])),
        "{text}"
    );
}

#[test]
fn dlq_list_filters_and_pages_newest_first() {
    let server = Server::start();
    let timeouts = dead_letters(&server, "D", 3, "upstream timeout");
    let others = dead_letters(&server, "D", 1, "bad input");

    let all = codeq_json(&server, &["dlq", "list", "D"]);
    let filtered = codeq(
        &server,
        &["dlq", "list", "D", "--error-contains", "timeout", "--limit", "1", "--all", "-o", "id"],
    );
    let first = codeq_json(&server, &["dlq", "list", "D", "--limit", "2"]);
    let table = codeq(&server, &["dlq", "list", "D", "-o", "table"]);
    let bad_time = codeq(&server, &["dlq", "list", "D", "--failed-after", "yesterday"]);

    let mut newest: Vec<String> = timeouts.iter().chain(&others).cloned().collect();
    newest.reverse();
    assert_eq!(ids_of(&all), newest);
    assert_eq!(lines(&filtered), newest[1..], "the timeouts, every page");
    assert_eq!(ids_of(&first), newest[..2]);
    assert!(first["nextCursor"].is_string());
    let rows = lines(&table);
    assert_eq!(
        rows[0].split_whitespace().collect::<Vec<_>>(),
        ["ID", "ATTEMPTS", "REPLAYS", "FAILED_AT", "LAST_REASON"]
    );
    assert!(rows[1].starts_with(&others[0]) && rows[1].ends_with("bad input"), "{rows:?}");
    assert_eq!(bad_time.status.code(), Some(2), "{}", stderr(&bad_time));
}

#[test]
fn dlq_replay_sends_named_dead_letters_round_again_and_names_those_it_could_not() {
    let server = Server::start();
    let dead = dead_letters(&server, "R", 3, "boom");
    let alive = create(&server, "R");

    let replayed = codeq_json(&server, &["dlq", "replay", "R", &dead[0]]);
    let task = codeq_json(&server, &["task", "get", &dead[0]]);
    let partly = codeq(&server, &["dlq", "replay", "R", &dead[1], &alive, "-o", "id"]);
    let filtered =
        codeq_json(&server, &["dlq", "replay", "R", "--error-contains", "boom", "--rate", "100"]);
    let stats = codeq_json(&server, &["queue", "inspect", "R"]);

    assert_eq!(replayed, json!({"replayed": 1, "ids": [dead[0]]}));
    assert_eq!(
        (task["status"].as_str(), task["attempts"].as_u64(), task["replays"].as_u64()),
        (Some("PENDING"), Some(1), Some(1)),
        "its one delivery stays counted (fencing)"
    );
    assert_eq!(partly.status.code(), Some(4));
    assert_eq!(lines(&partly), [dead[1].clone()]);
    let log = stderr(&partly);
    assert!(log.contains("1 of 2 tasks not replayed") && log.contains(&alive), "{log}");
    assert_eq!(filtered, json!({"replayed": 1, "ids": [dead[2]]}));
    assert_eq!(stats["dlq"], 0);
}

#[test]
fn dlq_purge_without_a_terminal_refuses_unless_yes_is_given() {
    let server = Server::start();
    let dead = dead_letters(&server, "G", 3, "bad input");

    let refused =
        run(server.codeq_with_tokens().args(["dlq", "purge", "G", &dead[0]]).stdin(Stdio::null()));
    let kept = codeq_json(&server, &["task", "get", &dead[0]]);
    let purged = run(server
        .codeq_with_tokens()
        .args(["dlq", "purge", "G", &dead[0], "--yes", "-o", "table"])
        .stdin(Stdio::null()));
    let gone = codeq(&server, &["task", "get", &dead[0]]);
    let by_filter = codeq_json(
        &server,
        &["dlq", "purge", "G", "--error-contains", "bad", "--limit", "1", "-y"],
    );
    let stats = codeq_json(&server, &["queue", "inspect", "G"]);

    assert_eq!(refused.status.code(), Some(2));
    assert!(stderr(&refused).contains("pass --yes"), "{}", stderr(&refused));
    assert!(refused.stdout.is_empty());
    assert_eq!(kept["status"], "FAILED", "nothing purged");
    assert!(purged.status.success(), "{}", stderr(&purged));
    let text = stdout(&purged);
    assert!(text.lines().any(|l| l.split_whitespace().eq(["purged", "1"])), "{text}");
    assert!(text.lines().any(|l| l.split_whitespace().eq(["id", dead[0].as_str()])), "{text}");
    assert_eq!(gone.status.code(), Some(4), "deleted");
    assert_eq!(by_filter, json!({"purged": 1, "ids": [dead[2]]}), "newest first, at most --limit");
    assert_eq!(stats["dlq"], 1);
}

#[test]
fn settings_for_a_command_the_server_never_saw_are_kept_with_a_note() {
    let server = Server::start();
    create(&server, "RENDER");

    let mistyped = codeq(&server, &["queue", "pause", "render"]);
    let known = codeq(&server, &["queue", "pause", "RENDER"]);
    let ahead = codeq(&server, &["queue", "settings", "LATER", "--max-in-flight", "2"]);

    assert!(mistyped.status.success() && known.status.success() && ahead.status.success());
    let note = stderr(&mistyped);
    assert!(
        note.contains("seen no task of render yet") && note.contains("known: RENDER"),
        "{note}"
    );
    assert!(!stderr(&known).contains("note:"), "{}", stderr(&known));
    assert!(stderr(&ahead).contains("seen no task of LATER"), "{}", stderr(&ahead));
}

#[test]
fn an_invalid_command_name_is_refused_before_any_request_or_note() {
    let server = Server::start();

    for args in [
        &["queue", "pause", "render jobs"][..],
        &["queue", "resume", "render jobs"],
        &["queue", "settings", "render jobs", "--max-in-flight", "2"],
        &["queue", "inspect", "render jobs"],
        &["task", "create", "--command", "render jobs"],
        &["task", "claim", "--commands", "render,render jobs"],
        &["task", "list", "--command", "render jobs"],
        &["dlq", "list", "render jobs"],
        &["worker", "start", "--events", "render jobs", "--handler", "/bin/true"],
    ] {
        let refused = codeq(&server, args);

        let said = stderr(&refused);
        assert_eq!(refused.status.code(), Some(2), "{args:?}: {said}");
        assert!(said.contains(r#"command "render jobs" may only contain"#), "{args:?}: {said}");
        assert!(!said.contains("note:"), "{args:?}: {said}");
    }
}

#[test]
fn control_commands_without_a_producer_token_exit_2_with_a_hint() {
    let server = Server::start();
    let worker_only = |args: &[&str]| {
        run(server.codeq().args(["--base-url", &server.base, "--worker-token", WORKER]).args(args))
    };

    let list = worker_only(&["task", "list"]);
    let pause = worker_only(&["queue", "pause", "X"]);

    for output in [list, pause] {
        assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
        assert!(stderr(&output).contains("no producer token"), "{}", stderr(&output));
        assert!(stderr(&output).contains("hint: pass --producer-token"), "{}", stderr(&output));
    }
}

#[test]
fn cleanup_deletes_finished_tasks_whose_retention_ended_and_nothing_else() {
    let server = Server::start();
    let dead = dead_letters(&server, "CLEAN", 2, "broken");
    let created =
        run_json(server.codeq_with_tokens().args(["task", "create", "--command", "CLEAN"]));
    let pending = created["id"].as_str().unwrap();

    // Finished a moment ago: their retention has not ended.
    let now = run_json(server.codeq_with_tokens().args(["task", "cleanup"]));
    assert_eq!(now["deleted"], 0, "{now}");
    assert_eq!(now["limit"], 1000, "the server's default");

    let later = run(server.codeq_with_tokens().args([
        "task",
        "cleanup",
        "--before",
        "2999-01-01T00:00:00Z",
        "--limit",
        "10",
        "-o",
        "table",
    ]));
    let table = stdout(&later);
    assert!(table.lines().any(|l| l.split_whitespace().eq(["deleted", "2"])), "{table}");
    assert!(table.lines().any(|l| l.split_whitespace().eq(["limit", "10"])), "{table}");
    for id in &dead {
        let gone = run(server.codeq_with_tokens().args(["task", "get", id]));
        assert_eq!(gone.status.code(), Some(4), "{id}: {}", stderr(&gone));
    }
    let kept = run_json(server.codeq_with_tokens().args(["task", "get", pending]));
    assert_eq!(kept["status"], "PENDING");

    let malformed = run(server.codeq_with_tokens().args(["task", "cleanup", "--before", "soon"]));
    assert_eq!(malformed.status.code(), Some(2), "checked before any request");
    let workers = run(server.codeq().args(["--base-url", &server.base]).args([
        "--producer-token",
        WORKER,
        "task",
        "cleanup",
    ]));
    assert_eq!(workers.status.code(), Some(3), "{}", stderr(&workers));
}
