//! Queue control over HTTP: cancel, queue settings (pause, maxInFlight,
//! rate limits) with long polls, the dead-letter queue and task listing.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;

/// Creates a task of `command` as `PRODUCER`; its id.
async fn task_of(app: &TestApp, command: &str) -> String {
    app.create_simple(command).await
}

/// Creates `count` tasks of `command` and dead-letters each (one delivery,
/// nacked with `reason`); their ids, oldest first.
async fn dead(app: &TestApp, command: &str, count: usize, reason: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..count {
        let task = app.create(json!({ "command": command, "payload": {}, "maxAttempts": 1 })).await;
        let id = task["id"].as_str().unwrap().to_string();
        app.claim_ok(WORKER, &[command]).await;
        let nack =
            app.post(&format!("/tasks/{id}/nack"), WORKER, json!({ "reason": reason })).await;
        assert_eq!(nack.body["status"], "dlq");
        ids.push(id);
    }
    ids
}

fn ids_of(page: &Value) -> Vec<String> {
    page["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_producer_cancels_its_task_and_the_worker_learns_at_its_next_call() {
    let app = TestApp::spawn().await;
    let pending = task_of(&app, "c").await;
    let cancelled = app
        .post(
            &format!("/tasks/{pending}/cancel"),
            PRODUCER,
            json!({ "reason": "no longer needed" }),
        )
        .await;
    assert_eq!(cancelled.status, 200, "{:?}", cancelled.body);
    assert_eq!(
        (cancelled.str("status"), cancelled.str("error")),
        ("CANCELLED", "no longer needed")
    );
    let result = app.get(&format!("/tasks/{pending}/result"), PRODUCER).await;
    assert_eq!(result.body["result"]["status"], "CANCELLED");

    let held = task_of(&app, "c").await;
    app.claim_ok(WORKER, &["c"]).await;
    let other = app.post(&format!("/tasks/{held}/cancel"), LIMITED_PRODUCER, json!({})).await;
    assert_eq!((other.status, other.code()), (403, "not_owner"), "another producer");
    let by_admin = app.post(&format!("/tasks/{held}/cancel"), ADMIN, json!({})).await;
    assert_eq!(by_admin.status, 200, "an admin may cancel any task");
    for call in ["heartbeat", "nack", "abandon"] {
        let reply = app.post(&format!("/tasks/{held}/{call}"), WORKER, json!({})).await;
        assert_eq!((reply.status, reply.code()), (409, "task_cancelled"), "{call}");
    }
    let result = json!({ "status": "COMPLETED", "result": {} });
    let reply = app.post(&format!("/tasks/{held}/result"), WORKER, result).await;
    assert_eq!((reply.status, reply.code()), (409, "task_cancelled"));

    let again = app.post(&format!("/tasks/{held}/cancel"), PRODUCER, json!({})).await;
    assert_eq!((again.status, again.code()), (409, "task_terminal"));
    assert!(again.str("error").contains("CANCELLED"), "{:?}", again.body);
    let unknown =
        app.post("/tasks/0190a8c4-0000-7000-8000-000000000000/cancel", PRODUCER, json!({})).await;
    assert_eq!((unknown.status, unknown.code()), (404, "task_not_found"));
    let worker = app.post(&format!("/tasks/{pending}/cancel"), WORKER, json!({})).await;
    assert_eq!((worker.status, worker.code()), (403, "not_producer"));
}

#[tokio::test]
async fn a_batch_cancel_answers_each_id_on_its_own() {
    let app = TestApp::spawn().await;
    let (first, second) = (task_of(&app, "b").await, task_of(&app, "b").await);
    app.post(&format!("/tasks/{second}/cancel"), PRODUCER, json!({})).await;
    let ids = json!({ "ids": [first, second, "not-an-id"], "reason": "batch" });
    let reply = app.post("/tasks/batch/cancel", PRODUCER, ids).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let results = reply.body["results"].as_array().unwrap();
    assert_eq!(results[0], json!({ "taskId": first, "status": "CANCELLED" }));
    assert_eq!(results[1]["code"], "task_terminal");
    assert_eq!(results[2]["code"], "task_not_found");
    let empty = app.post("/tasks/batch/cancel", PRODUCER, json!({ "ids": [] })).await;
    assert_eq!((empty.status, empty.code()), (400, "invalid_field"));
}

#[tokio::test]
async fn settings_are_checked_shown_in_stats_and_admin_only() {
    let app = TestApp::spawn().await;
    let path = "/admin/queues/limited/settings";
    let body = json!({ "maxInFlight": 3, "ratePerSecond": 2.5, "burst": 5 });
    let reply = app.call(Method::PUT, &format!("/v1/codeq{path}"), Some(ADMIN), Some(body)).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(
        reply.body,
        json!({ "paused": false, "maxInFlight": 3, "ratePerSecond": 2.5, "burst": 5 })
    );
    let stats = app.get("/admin/queues/limited", ADMIN).await.body;
    assert_eq!((stats["maxInFlight"].clone(), stats["paused"].clone()), (json!(3), json!(false)));
    assert_eq!(app.get(path, ADMIN).await.body["ratePerSecond"], 2.5);
    for bad in [
        json!({ "maxInFlight": 0 }),
        json!({ "ratePerSecond": 0 }),
        json!({ "ratePerSecond": -1 }),
        json!({ "burst": 3 }),
        json!({ "paused": "yes" }),
    ] {
        let reply = app
            .call(Method::PUT, &format!("/v1/codeq{path}"), Some(ADMIN), Some(bad.clone()))
            .await;
        assert_eq!((reply.status, reply.code()), (400, "invalid_field"), "{bad}");
    }
    // An empty body (sent by mistake) does not clear them; `{}` does.
    let empty = app.call(Method::PUT, &format!("/v1/codeq{path}"), Some(ADMIN), None).await;
    assert_eq!((empty.status, empty.code()), (400, "invalid_field"), "{:?}", empty.body);
    assert_eq!(app.get(path, ADMIN).await.body["maxInFlight"], 3, "kept");
    let not_admin =
        app.call(Method::PUT, &format!("/v1/codeq{path}"), Some(PRODUCER), Some(json!({}))).await;
    assert_eq!((not_admin.status, not_admin.code()), (403, "not_admin"));
    let bad_name = app.post("/admin/queues/bad%20name/pause", ADMIN, json!({})).await;
    assert_eq!((bad_name.status, bad_name.code()), (400, "invalid_command"));
}

#[tokio::test]
async fn a_paused_queue_holds_claims_and_a_long_poll_wakes_on_resume() {
    let app = TestApp::spawn().await;
    assert_eq!(app.post("/admin/queues/held/pause", ADMIN, json!({})).await.body["paused"], true);
    task_of(&app, "held").await;
    assert_eq!(app.claim(WORKER, &["held"]).await.status, 204, "paused");
    let poll =
        app.spawn_post("/tasks/claim", WORKER, json!({ "commands": ["held"], "waitSeconds": 10 }));
    app.wait_for_long_polls(1).await;
    let resumed_at = Instant::now();
    assert_eq!(app.post("/admin/queues/held/resume", ADMIN, json!({})).await.body["paused"], false);
    let answer = poll.await.unwrap();
    let waited = resumed_at.elapsed();
    assert_eq!(answer.status(), 200);
    println!("long poll answered {:.1} ms after the resume", waited.as_secs_f64() * 1000.0);
    assert!(waited < Duration::from_millis(50), "woke {waited:?} after the resume");
}

#[tokio::test]
async fn a_long_poll_held_by_max_in_flight_wakes_when_a_task_finishes() {
    let app = TestApp::spawn().await;
    let body = json!({ "maxInFlight": 1 });
    let reply =
        app.call(Method::PUT, "/v1/codeq/admin/queues/one/settings", Some(ADMIN), Some(body)).await;
    assert_eq!(reply.status, 200);
    task_of(&app, "one").await;
    task_of(&app, "one").await;
    let first = app.claim_ok(WORKER, &["one"]).await;
    assert_eq!(app.claim(WORKER2, &["one"]).await.status, 204, "one in flight at most");
    let poll =
        app.spawn_post("/tasks/claim", WORKER2, json!({ "commands": ["one"], "waitSeconds": 10 }));
    app.wait_for_long_polls(1).await;
    let id = first["id"].as_str().unwrap();
    let done = json!({ "status": "COMPLETED", "result": {} });
    assert_eq!(app.post(&format!("/tasks/{id}/result"), WORKER, done).await.status, 200);
    assert_eq!(poll.await.unwrap().status(), 200, "the freed place went to the parked claim");
}

#[tokio::test]
async fn a_rate_limited_long_poll_waits_for_the_next_token() {
    let app = TestApp::spawn_manual_clock().await;
    let body = json!({ "ratePerSecond": 0.5 });
    let reply = app
        .call(Method::PUT, "/v1/codeq/admin/queues/slow/settings", Some(ADMIN), Some(body))
        .await;
    assert_eq!(reply.status, 200);
    task_of(&app, "slow").await;
    task_of(&app, "slow").await;
    app.claim_ok(WORKER, &["slow"]).await;
    assert_eq!(app.claim(WORKER, &["slow"]).await.status, 204, "the next token is 2 s away");
    let poll =
        app.spawn_post("/tasks/claim", WORKER, json!({ "commands": ["slow"], "waitSeconds": 30 }));
    app.wait_for_long_polls(1).await;
    // A new task wakes the parked claim, which looks again (within the
    // round trip of the read below) and waits on.
    let woken = task_of(&app, "slow").await;
    assert_eq!(app.task(&woken).await["status"], "PENDING");
    app.advance(2);
    assert_eq!(poll.await.unwrap().status(), 200, "answered at the token, not with a 204");
    // Counted once per claim held back (the 204 and the long poll), not
    // once per look.
    let metrics = app.http.get(format!("{}/metrics", app.base)).send().await.unwrap();
    let text = metrics.text().await.unwrap();
    assert!(text.lines().any(|line| line == "codeq_claims_rate_limited_total 2"), "{text}");
}

#[tokio::test]
async fn dead_letters_page_filter_replay_and_purge() {
    let app = TestApp::spawn().await;
    let timeouts = dead(&app, "dl", 5, "upstream timeout").await;
    let others = dead(&app, "dl", 3, "bad input").await;

    let first = app.get("/admin/queues/dl/dlq?limit=3", ADMIN).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    let newest: Vec<String> = others.iter().rev().cloned().collect();
    assert_eq!(ids_of(&first.body), newest);
    assert!(first.body["tasks"][0].get("payload").is_none(), "no payload unless asked");
    let cursor = first.str("nextCursor").to_string();
    let second = app
        .get(&format!("/admin/queues/dl/dlq?limit=10&cursor={cursor}&includePayload=true"), ADMIN)
        .await;
    let older: Vec<String> = timeouts.iter().rev().cloned().collect();
    assert_eq!(ids_of(&second.body), older);
    assert!(second.body.get("nextCursor").is_none(), "the last page");
    assert_eq!(second.body["tasks"][0]["payload"], "{}");

    let filtered = app.get("/admin/queues/dl/dlq?errorContains=timeout", ADMIN).await;
    assert_eq!(ids_of(&filtered.body).len(), 5);
    for bad in ["limit=0", "limit=1001", "cursor=zzz", "failedBefore=yesterday", "includePayload=1"]
    {
        let reply = app.get(&format!("/admin/queues/dl/dlq?{bad}"), ADMIN).await;
        assert_eq!((reply.status, reply.code()), (400, "invalid_field"), "{bad}");
    }

    let replay = app
        .post(
            "/admin/queues/dl/dlq/replay",
            ADMIN,
            json!({ "errorContains": "timeout", "limit": 2 }),
        )
        .await;
    assert_eq!(replay.body["replayed"], 2, "{:?}", replay.body);
    let replayed = replay.body["ids"][0].as_str().unwrap().to_string();
    let task = app.task(&replayed).await;
    assert_eq!(
        (task["status"].clone(), task["attempts"].clone(), task["replays"].clone()),
        (json!("PENDING"), json!(1), json!(1)),
        "its one delivery stays counted"
    );
    let claimed = app.claim_ok(WORKER, &["dl"]).await;
    assert!(replay.body["ids"].as_array().unwrap().contains(&claimed["id"]));

    let named_twice = json!({ "ids": [others[0], replayed, others[0]] });
    let purge = app.post("/admin/queues/dl/dlq/purge", ADMIN, named_twice).await;
    assert_eq!(purge.body, json!({ "purged": 1, "ids": [others[0]] }), "dead letters, each once");
    assert_eq!(app.get(&format!("/tasks/{}", others[0]), PRODUCER).await.status, 404);
    let both = app
        .post(
            "/admin/queues/dl/dlq/purge",
            ADMIN,
            json!({ "ids": [others[1]], "errorContains": "x" }),
        )
        .await;
    assert_eq!((both.status, both.code()), (400, "invalid_field"));
    assert_eq!(app.get("/admin/queues/dl", ADMIN).await.body["dlq"], 5);
    let named = app
        .post(
            "/admin/queues/dl/dlq/replay",
            ADMIN,
            json!({ "ids": [others[1], others[2]], "limit": 1 }),
        )
        .await;
    assert_eq!(named.body["replayed"], 2, "named ids are all replayed: {:?}", named.body);
    let not_admin = app.get("/admin/queues/dl/dlq", PRODUCER).await;
    assert_eq!((not_admin.status, not_admin.code()), (403, "not_admin"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_replays_and_purges_each_take_their_limit_while_dead_letters_remain() {
    let app = TestApp::spawn().await;
    dead(&app, "raced", 300, "x").await;
    // 20 calls of 20 against 300: a call short of its limit means none
    // were left, however the calls interleave.
    let calls: Vec<_> = (0..20)
        .map(|n| {
            let verb = if n % 2 == 0 { "replay" } else { "purge" };
            let path = format!("/admin/queues/raced/dlq/{verb}");
            app.spawn_post(&path, ADMIN, json!({ "limit": 20 }))
        })
        .collect();
    let mut taken = Vec::new();
    for call in calls {
        let body: Value = call.await.unwrap().json().await.unwrap();
        let ids = body["ids"].as_array().unwrap_or_else(|| panic!("{body}"));
        taken.extend(ids.iter().map(|id| id.as_str().unwrap().to_string()));
    }
    let stats = app.get("/admin/queues/raced", ADMIN).await;
    assert_eq!(stats.body["dlq"], 0, "dead letters left behind: {:?}", stats.body);
    let count = taken.len();
    taken.sort();
    taken.dedup();
    assert_eq!((taken.len(), count), (300, 300), "each taken once");
}

#[tokio::test]
async fn a_paced_replay_makes_each_task_ready_at_its_turn() {
    let app = TestApp::spawn_manual_clock().await;
    let ids = dead(&app, "paced", 10, "x").await;
    let replay =
        app.post("/admin/queues/paced/dlq/replay", ADMIN, json!({ "ratePerSecond": 2 })).await;
    assert_eq!(replay.body["replayed"], 10);
    let mut claimed = Vec::new();
    for second in 0..=5 {
        if second > 0 {
            app.advance(1);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        // Two become ready each second (the reaper promotes them).
        while claimed.len() < (2 * second + 1).min(10) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} claimed at {second} s",
                claimed.len()
            );
            if let Some(task) = app.claim(WORKER, &["paced"]).await.body.get("id").cloned() {
                claimed.push(task.as_str().unwrap().to_string());
            }
        }
        assert_eq!(app.claim(WORKER, &["paced"]).await.status, 204, "none early at {second} s");
    }
    claimed.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(claimed, expected, "each once");
}

#[tokio::test]
async fn tasks_are_listed_newest_first_by_command_and_status() {
    let app = TestApp::spawn().await;
    let a: Vec<String> = futures_ids(&app, "la", 4).await;
    let b: Vec<String> = futures_ids(&app, "lb", 2).await;
    app.claim_ok(WORKER, &["la"]).await; // a[0]
    let all = app.get("/admin/tasks", ADMIN).await;
    let mut expected: Vec<String> = a.iter().chain(&b).cloned().collect();
    expected.reverse();
    assert_eq!(ids_of(&all.body), expected);
    let page = app.get("/admin/tasks?command=la&status=PENDING&limit=2", ADMIN).await;
    assert_eq!(ids_of(&page.body), vec![a[3].clone(), a[2].clone()]);
    let next = page.str("nextCursor").to_string();
    let rest =
        app.get(&format!("/admin/tasks?command=la&status=PENDING&cursor={next}"), ADMIN).await;
    assert_eq!(ids_of(&rest.body), vec![a[1].clone()]);
    let running = app.get("/admin/tasks?status=IN_PROGRESS&includePayload=true", ADMIN).await;
    assert_eq!(ids_of(&running.body), vec![a[0].clone()]);
    assert!(running.body["tasks"][0].get("payload").is_some());
    let bad = app.get("/admin/tasks?status=DONE", ADMIN).await;
    assert_eq!((bad.status, bad.code()), (400, "invalid_field"));
}

async fn futures_ids(app: &TestApp, command: &str, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..count {
        ids.push(task_of(app, command).await);
    }
    ids
}

#[tokio::test]
async fn times_at_the_end_of_year_9999_are_refused_or_shown_in_any_offset() {
    let offset = time::UtcOffset::from_hms(23, 59, 0).unwrap();
    let app = TestApp::spawn_with(|config| config.timezone = offset, false).await;
    let shown = |value: &Value| {
        let text = value.as_str().unwrap_or_default();
        codeq_core::Timestamp::parse_rfc3339(text).unwrap_or_else(|| panic!("{text:?}"))
    };
    // Past what +23:59 can show in RFC 3339: refused, nothing stored.
    let late = json!({ "command": "late", "payload": {}, "runAt": "9999-12-31T23:30:00Z" });
    let refused = app.post("/tasks", PRODUCER, late).await;
    assert_eq!((refused.status, refused.code()), (400, "invalid_field"), "{:?}", refused.body);
    assert!(refused.str("error").contains("runAt"), "{:?}", refused.body);
    let cleanup = json!({ "before": "9999-12-31T23:00:00Z" });
    let refused = app.post("/admin/tasks/cleanup", ADMIN, cleanup).await;
    assert_eq!((refused.status, refused.code()), (400, "invalid_field"), "{:?}", refused.body);
    // The latest time taken is shown in the offset.
    let latest = json!({ "command": "late", "payload": {}, "runAt": "9999-12-30T00:00:00Z" });
    let created = app.post("/tasks", PRODUCER, latest).await;
    assert_eq!(created.status, 202, "{:?}", created.body);
    assert_eq!(created.body["runAt"], "9999-12-30T23:59:00+23:59");
    // A replay paced at one task in 1e300 seconds: the second stops at the
    // latest time instead of leaving the range.
    let ids = dead(&app, "paced", 2, "x").await;
    let replay = json!({ "ratePerSecond": 1e-300 });
    let replayed = app.post("/admin/queues/paced/dlq/replay", ADMIN, replay).await;
    assert_eq!(replayed.body["replayed"], 2, "{:?}", replayed.body);
    let mut visible = Vec::new();
    for id in &ids {
        visible.push(shown(&app.get(&format!("/admin/tasks/{id}"), ADMIN).await.body["visibleAt"]));
    }
    assert!(visible.contains(&codeq_core::Timestamp::LATEST), "{visible:?}");
    let listed = app.get("/admin/tasks?includePayload=true", ADMIN).await;
    assert_eq!(listed.status, 200, "{:?}", listed.body);
    for task in listed.body["tasks"].as_array().unwrap() {
        for field in ["createdAt", "updatedAt", "runAt"] {
            if !task[field].is_null() {
                shown(&task[field]);
            }
        }
    }
}

#[tokio::test]
async fn commands_past_max_commands_are_refused_and_add_no_metric_series() {
    let app = TestApp::spawn_with(|config| config.max_commands = 2, false).await;
    app.create_simple("first").await;
    app.create_simple("second").await;
    let refused = app.post("/tasks", PRODUCER, json!({ "command": "third", "payload": {} })).await;
    assert_eq!((refused.status, refused.code()), (409, "too_many_commands"), "{:?}", refused.body);
    assert!(refused.str("error").contains("maxCommands"), "{:?}", refused.body);
    let batch = json!({ "tasks": [
        { "command": "third", "payload": {} },
        { "command": "first", "payload": {} },
    ] });
    let results = app.post("/tasks/batch", PRODUCER, batch).await.body["results"].clone();
    assert_eq!(results[0]["code"], "too_many_commands", "{results}");
    assert_eq!(results[1]["task"]["command"], "first", "{results}");
    let paused = app.post("/admin/queues/third/pause", ADMIN, json!({})).await;
    assert_eq!((paused.status, paused.code()), (409, "too_many_commands"));
    assert_eq!(app.post("/admin/queues/second/pause", ADMIN, json!({})).await.status, 200);
    let queues = app.get("/admin/queues", ADMIN).await.body;
    let names: Vec<&str> =
        queues["queues"].as_array().unwrap().iter().filter_map(|q| q["command"].as_str()).collect();
    assert_eq!(names, ["first", "second"], "{queues}");
    let metrics = app.http.get(format!("{}/metrics", app.base)).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(metrics.contains(r#"command="second""#), "the scrape lists known commands");
    assert!(!metrics.contains(r#"command="third""#), "a refused command has no series");
}
