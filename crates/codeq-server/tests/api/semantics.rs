//! The rules of the task model (docs/api.md), over HTTP.

use codeq_core::BackoffPolicy;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn claims_take_the_highest_priority_first_then_fifo_across_commands() {
    let app = TestApp::spawn().await;
    let low = app.create(json!({ "command": "a", "payload": {}, "priority": 1 })).await;
    let high1 = app.create(json!({ "command": "b", "payload": {}, "priority": 5 })).await;
    let high2 = app.create(json!({ "command": "a", "payload": {}, "priority": 5 })).await;
    let other = app.create(json!({ "command": "c", "payload": {}, "priority": 9 })).await;
    let order: Vec<_> = [
        app.claim_ok(WORKER, &["a", "b"]).await,
        app.claim_ok(WORKER, &["a", "b"]).await,
        app.claim_ok(WORKER, &["a", "b"]).await,
    ]
    .iter()
    .map(|t| t["id"].clone())
    .collect();
    assert_eq!(order, vec![high1["id"].clone(), high2["id"].clone(), low["id"].clone()]);
    assert_eq!(app.claim(WORKER, &["a", "b"]).await.status, 204, "c was not asked for");
    assert_eq!(app.claim_ok(WORKER, &["c"]).await["id"], other["id"]);
}

#[tokio::test]
async fn delayed_and_scheduled_tasks_become_claimable_on_time() {
    let app = TestApp::spawn_manual_clock().await;
    let delayed = app.create(json!({ "command": "d", "payload": {}, "delaySeconds": 60 })).await;
    assert!(delayed["runAt"].is_string());
    let run_at = (time::OffsetDateTime::now_utc() + time::Duration::seconds(30))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let scheduled = app
        .create(json!({ "command": "d", "payload": {}, "runAt": run_at, "delaySeconds": 999 }))
        .await;
    let past =
        app.create(json!({ "command": "d", "payload": {}, "runAt": "2001-01-01T00:00:00Z" })).await;
    assert_eq!(
        app.claim_ok(WORKER, &["d"]).await["id"],
        past["id"],
        "a runAt in the past is ready now"
    );
    assert_eq!(app.claim(WORKER, &["d"]).await.status, 204);

    app.advance(31);
    let claimed =
        app.post("/tasks/claim", WORKER, json!({ "commands": ["d"], "waitSeconds": 10 })).await;
    assert_eq!(claimed.body["id"], scheduled["id"], "runAt wins over delaySeconds");
    app.advance(30);
    let claimed =
        app.post("/tasks/claim", WORKER, json!({ "commands": ["d"], "waitSeconds": 10 })).await;
    assert_eq!(claimed.body["id"], delayed["id"]);
}

#[tokio::test]
async fn an_expired_lease_requeues_the_task_without_any_claim_traffic() {
    let app = TestApp::spawn_manual_clock().await;
    let id = app.create_simple("lease").await;
    let claimed = app
        .post("/tasks/claim", WORKER, json!({ "commands": ["lease"], "leaseSeconds": 10 }))
        .await;
    assert_eq!(claimed.status, 200);
    app.advance(11);
    let task = app.wait_for_status(&id, "PENDING").await;
    assert_eq!(task["lastReason"], "LEASE_EXPIRED");
    assert_eq!(task["attempts"], 1);
    assert!(task.get("workerId").is_none());
    // The lease rule: the old holder can no longer extend its lease, but
    // its result is still accepted as long as nobody claimed the task again.
    let heartbeat =
        app.post(&format!("/tasks/{id}/heartbeat"), WORKER, json!({ "attempt": 1 })).await;
    assert_eq!((heartbeat.status, heartbeat.code()), (409, "lease_expired"));
    let late = app
        .post(
            &format!("/tasks/{id}/result"),
            WORKER,
            json!({ "status": "COMPLETED", "result": {}, "attempt": 1 }),
        )
        .await;
    assert_eq!(late.status, 200, "{:?}", late.body);
    assert_eq!(app.get(&format!("/tasks/{id}"), WORKER).await.body["status"], "COMPLETED");
}

#[tokio::test]
async fn a_late_result_is_refused_once_the_task_was_delivered_again() {
    let app = TestApp::spawn_manual_clock().await;
    let id = app.create_simple("lease").await;
    let body = json!({ "commands": ["lease"], "leaseSeconds": 10 });
    assert_eq!(app.post("/tasks/claim", WORKER, body.clone()).await.status, 200);
    app.advance(11);
    app.wait_for_status(&id, "PENDING").await;
    app.advance(1000); // past any backoff
    let again =
        app.post("/tasks/claim", WORKER2, json!({ "commands": ["lease"], "waitSeconds": 5 })).await;
    assert_eq!((again.status, again.str("id")), (200, id.as_str()));
    let late = app
        .post(
            &format!("/tasks/{id}/result"),
            WORKER,
            json!({ "status": "COMPLETED", "result": {}, "attempt": 1 }),
        )
        .await;
    assert_eq!((late.status, late.code()), (403, "not_owner"));
}

#[tokio::test]
async fn each_backoff_policy_sets_the_nack_delay() {
    // base 5, max 900, after the first delivery (attempts = 1).
    let expected: [(BackoffPolicy, u64, u64); 5] = [
        (BackoffPolicy::Fixed, 5, 5),
        (BackoffPolicy::Linear, 5, 5),
        (BackoffPolicy::Exponential, 10, 10),
        (BackoffPolicy::ExpFullJitter, 0, 10),
        (BackoffPolicy::ExpEqualJitter, 5, 10),
    ];
    for (policy, low, high) in expected {
        let app = TestApp::spawn_with(|config| config.backoff_policy = policy, false).await;
        let id = app.create_simple("retry").await;
        app.claim_ok(WORKER, &["retry"]).await;
        let nacked =
            app.post(&format!("/tasks/{id}/nack"), WORKER, json!({ "reason": "try later" })).await;
        assert_eq!(nacked.status, 200);
        assert_eq!(nacked.body["status"], "requeued");
        let delay = nacked.body["delaySeconds"].as_u64().unwrap();
        assert!((low..=high).contains(&delay), "{policy}: {delay} not in {low}..={high}");
    }
}

/// A worker pool shares one token; one worker stalls past the lease of
/// the task's last delivery, which is dead-lettered, replayed and claimed
/// again. The stalled worker's calls name its old delivery and must be
/// refused: a replay must not hand a delivery number out again. The new
/// round backs off from its first step.
#[tokio::test]
async fn a_replayed_task_fences_out_its_old_delivery_and_backs_off_afresh() {
    let app = TestApp::spawn_with(
        |config| {
            config.backoff_policy = BackoffPolicy::Exponential;
            (config.backoff_base_seconds, config.backoff_max_seconds) = (1, 100);
        },
        true,
    )
    .await;
    let task = app.create(json!({ "command": "again", "payload": {}, "maxAttempts": 2 })).await;
    let id = task["id"].as_str().unwrap().to_string();
    let lease = json!({ "commands": ["again"], "leaseSeconds": 10 });
    assert_eq!(app.post("/tasks/claim", WORKER, lease.clone()).await.status, 200);
    let first = app.post(&format!("/tasks/{id}/nack"), WORKER, json!({ "attempt": 1 })).await;
    assert_eq!(first.body, json!({ "status": "requeued", "delaySeconds": 2 }));
    app.advance(2);
    let stalled = app.post("/tasks/claim", WORKER, lease.clone()).await;
    assert_eq!(stalled.body["attempts"], 2);
    app.advance(11); // the stalled worker's lease ends: dead-lettered
    app.wait_for_status(&id, "FAILED").await;
    let replay = app.post("/admin/queues/again/dlq/replay", ADMIN, json!({ "ids": [id] })).await;
    assert_eq!(replay.body["replayed"], 1);
    let current = app.post("/tasks/claim", WORKER, lease).await;
    assert_eq!(current.body["attempts"], 3, "delivery numbers go on");

    for (route, body) in [
        ("heartbeat", json!({ "attempt": 2 })),
        ("nack", json!({ "attempt": 2 })),
        ("result", json!({ "attempt": 2, "status": "FAILED", "error": "stale" })),
    ] {
        let stale = app.post(&format!("/tasks/{id}/{route}"), WORKER, body).await;
        assert_eq!((stale.status, stale.code()), (409, "stale_attempt"), "{route}");
    }
    let nacked = app.post(&format!("/tasks/{id}/nack"), WORKER, json!({ "attempt": 3 })).await;
    // The first delivery of the round, as after a create: base × 2^1.
    assert_eq!(nacked.body, json!({ "status": "requeued", "delaySeconds": 2 }));
}

#[tokio::test]
async fn a_task_is_dead_lettered_after_max_attempts_deliveries() {
    let app = TestApp::spawn().await;
    let id = app.create(json!({ "command": "dlq", "payload": {}, "maxAttempts": 2 })).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.claim_ok(WORKER, &["dlq"]).await;
    let first = app.post(&format!("/tasks/{id}/nack"), WORKER, json!({ "delaySeconds": 0 })).await;
    assert_eq!(first.body, json!({ "status": "requeued", "delaySeconds": 0 }));
    assert_eq!(app.claim_ok(WORKER, &["dlq"]).await["attempts"], 2);
    let second = app.post(&format!("/tasks/{id}/nack"), WORKER, json!({ "delaySeconds": 0 })).await;
    assert_eq!(second.body, json!({ "status": "dlq", "delaySeconds": 0 }));
    let task = app.task(&id).await;
    assert_eq!(
        (task["status"].as_str(), task["error"].as_str()),
        (Some("FAILED"), Some("MAX_ATTEMPTS"))
    );
    assert!(task["completedAt"].is_string());
    let result = app.get(&format!("/tasks/{id}/result"), PRODUCER).await;
    assert_eq!(result.body["result"]["status"], "FAILED");
    assert_eq!(result.body["result"]["error"], "MAX_ATTEMPTS");
    assert_eq!(app.get("/admin/queues/dlq", ADMIN).await.body["dlq"], 1);
}

#[tokio::test]
async fn an_idempotency_key_replays_the_existing_task() {
    let app = TestApp::spawn().await;
    let body = json!({ "command": "idem", "payload": { "v": 1 }, "idempotencyKey": "order-42" });
    let first = app.post("/tasks", PRODUCER, body.clone()).await;
    assert_eq!(first.status, 202);
    assert!(first.headers.get("idempotent-replayed").is_none());
    let second = app
        .post(
            "/tasks",
            PRODUCER,
            json!({ "command": "idem", "payload": { "v": 2 }, "idempotencyKey": "order-42" }),
        )
        .await;
    assert_eq!(second.status, 202);
    assert_eq!(second.headers["idempotent-replayed"], "true");
    assert_eq!(second.body, first.body);
    assert_eq!(app.get("/admin/queues/idem", ADMIN).await.body["ready"], 1);
}

#[tokio::test]
async fn a_key_held_by_a_task_of_another_command_conflicts() {
    let app = TestApp::spawn().await;
    let secret =
        json!({ "command": "allowed", "payload": { "card": "4111" }, "idempotencyKey": "k" });
    let first = app.post("/tasks", PRODUCER, secret).await;
    assert_eq!(first.status, 202);

    let other_command = json!({ "command": "other", "payload": {}, "idempotencyKey": "k" });
    let refused = app.post("/tasks", PRODUCER, other_command.clone()).await;
    assert_eq!(
        (refused.status, refused.code()),
        (409, "idempotency_conflict"),
        "{:?}",
        refused.body
    );
    assert!(!refused.body.to_string().contains("4111"), "{:?}", refused.body);
    // The same command from another producer (a replica with a token of
    // its own) is a repeat.
    let same_command = json!({ "command": "allowed", "payload": {}, "idempotencyKey": "k" });
    let other_producer = app.post("/tasks", LIMITED_PRODUCER, same_command.clone()).await;
    assert_eq!(other_producer.status, 202);
    assert_eq!(other_producer.body["id"], first.body["id"]);

    let batch =
        json!({ "tasks": [other_command, same_command, { "command": "allowed", "payload": {} }] });
    let items = app.post("/tasks/batch", PRODUCER, batch).await.body["results"].clone();
    assert_eq!(items[0]["code"], "idempotency_conflict", "{items}");
    assert_eq!(items[1]["task"]["id"], first.body["id"], "the producer's own repeat: {items}");
    assert!(items[2]["task"]["id"].is_string(), "{items}");
    assert_eq!(app.get("/admin/queues/other", ADMIN).await.body["ready"], 0, "nothing created");
    assert_eq!(app.get("/admin/queues/allowed", ADMIN).await.body["ready"], 2);
}

#[tokio::test]
async fn resubmitting_a_result_is_safe_but_a_different_outcome_conflicts() {
    let app = TestApp::spawn().await;
    let id = app.create_simple("res").await;
    app.claim_ok(WORKER, &["res"]).await;
    let path = format!("/tasks/{id}/result");
    let first =
        app.post(&path, WORKER, json!({ "status": "COMPLETED", "result": { "v": 1 } })).await;
    assert_eq!(first.status, 200);
    let same =
        app.post(&path, WORKER, json!({ "status": "COMPLETED", "result": { "v": 1 } })).await;
    assert_eq!((same.status, &same.body), (200, &first.body));
    let different =
        app.post(&path, WORKER, json!({ "status": "FAILED", "error": "changed my mind" })).await;
    assert_eq!((different.status, different.code()), (409, "result_conflict"));
    let other_worker =
        app.post(&path, WORKER2, json!({ "status": "COMPLETED", "result": { "v": 1 } })).await;
    assert_eq!(other_worker.status, 409);
    assert_eq!(app.get(&path, PRODUCER).await.body["result"], first.body);
}

#[tokio::test]
async fn a_stale_attempt_is_refused_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let id = app.create_simple("fence").await;
    app.claim_ok(WORKER, &["fence"]).await;
    app.post(&format!("/tasks/{id}/abandon"), WORKER, json!({ "attempt": 1 })).await;
    app.claim_ok(WORKER, &["fence"]).await; // delivery 2, same worker identity
    let before = app.task(&id).await;
    for (action, body) in [
        ("heartbeat", json!({ "attempt": 1 })),
        ("abandon", json!({ "attempt": 1 })),
        ("nack", json!({ "attempt": 1 })),
        ("result", json!({ "attempt": 1, "status": "COMPLETED", "result": {} })),
    ] {
        let reply = app.post(&format!("/tasks/{id}/{action}"), WORKER, body).await;
        assert_eq!((reply.status, reply.code()), (409, "stale_attempt"), "{action}");
    }
    assert_eq!(app.task(&id).await, before);
    let ok = app
        .post(
            &format!("/tasks/{id}/result"),
            WORKER,
            json!({ "attempt": 2, "status": "COMPLETED", "result": {} }),
        )
        .await;
    assert_eq!(ok.status, 200);
}

#[tokio::test]
async fn cleanup_deletes_old_terminal_tasks_and_keeps_pending_and_in_progress_ones() {
    // Cleanup by hand only (automatic cleanup also runs a pass at start).
    let no_automatic = |config: &mut codeq_server::config::Config| {
        config.retention_seconds = 0;
        config.cleanup_interval_seconds = 0;
    };
    let app = TestApp::spawn_with(no_automatic, false).await;
    let done =
        app.create(json!({ "command": "gc", "payload": {}, "idempotencyKey": "gc-1" })).await["id"]
            .as_str()
            .unwrap()
            .to_string();
    app.claim_ok(WORKER, &["gc"]).await;
    app.post(
        &format!("/tasks/{done}/result"),
        WORKER,
        json!({ "status": "COMPLETED", "result": {} }),
    )
    .await;
    let pending = app.create_simple("gc").await;
    let running = app.create_simple("gc2").await;
    app.claim_ok(WORKER, &["gc2"]).await;

    let early =
        app.post("/admin/tasks/cleanup", ADMIN, json!({ "before": "2001-01-01T00:00:00Z" })).await;
    assert_eq!((early.status, early.body["deleted"].as_u64()), (200, Some(0)));
    let reply = app.post("/admin/tasks/cleanup", ADMIN, json!({ "limit": 10 })).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["deleted"], 1);
    assert_eq!(reply.body["limit"], 10);
    assert!(reply.body["before"].is_string());
    assert_eq!(app.get(&format!("/tasks/{done}"), PRODUCER).await.status, 404);
    assert_eq!(app.get(&format!("/tasks/{done}/result"), PRODUCER).await.status, 404);
    assert_eq!(app.task(&pending).await["status"], "PENDING");
    assert_eq!(app.task(&running).await["status"], "IN_PROGRESS");
    let reused = app
        .post(
            "/tasks",
            PRODUCER,
            json!({ "command": "gc", "payload": {}, "idempotencyKey": "gc-1" }),
        )
        .await;
    assert!(
        reused.headers.get("idempotent-replayed").is_none(),
        "the key was deleted with its task"
    );
}

#[tokio::test]
async fn a_restart_runs_a_cleanup_pass_without_waiting_a_whole_interval() {
    // A server restarted more often than its cleanup interval (deploys, a
    // crash loop) must still apply retention.
    let hourly = |config: &mut codeq_server::config::Config| {
        config.retention_seconds = 0;
        config.cleanup_interval_seconds = 3_600;
    };
    // The first server runs no cleanup at all (its pass at start could
    // come after the task ends).
    let app = TestApp::spawn_with(|config| config.cleanup_interval_seconds = 0, false).await;
    let done = app.create_simple("hourly-gc").await;
    app.claim_ok(WORKER, &["hourly-gc"]).await;
    let path = format!("/tasks/{done}/result");
    app.post(&path, WORKER, json!({ "status": "COMPLETED", "result": {} })).await;
    assert_eq!(app.get(&format!("/tasks/{done}"), PRODUCER).await.status, 200);
    let dir = app.stop().await;
    let mut config = TestApp::config(dir.path());
    hourly(&mut config);
    let app = TestApp::start(config, dir, false).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while app.get(&format!("/tasks/{done}"), PRODUCER).await.status != 404 {
        assert!(tokio::time::Instant::now() < deadline, "no cleanup pass after the restart");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn state_survives_a_graceful_restart() {
    let app = TestApp::spawn().await;
    let id = app.create_simple("restart").await;
    let held = app.create_simple("restart").await;
    app.claim_ok(WORKER, &["restart"]).await;
    let dir = app.stop().await;
    let mut config = codeq_server::config::Config::default_for_tests(dir.path());
    config.port = 0;
    config.static_tokens = test_tokens();
    let app = TestApp::start(config, dir, false).await;
    assert_eq!(app.task(&id).await["status"], "IN_PROGRESS");
    assert_eq!(app.task(&held).await["status"], "PENDING");
    assert_eq!(app.claim_ok(WORKER2, &["restart"]).await["id"], held.as_str());
}

#[tokio::test]
async fn automatic_cleanup_deletes_terminal_tasks_past_retention_on_its_own() {
    let app = TestApp::spawn_with(
        |config| {
            config.retention_seconds = 0;
            config.cleanup_interval_seconds = 1;
        },
        false,
    )
    .await;
    let done = app.create_simple("auto-gc").await;
    let pending = app.create_simple("auto-gc").await;
    app.claim_ok(WORKER, &["auto-gc"]).await;
    app.post(
        &format!("/tasks/{done}/result"),
        WORKER,
        json!({ "status": "COMPLETED", "result": {} }),
    )
    .await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while app.get(&format!("/tasks/{done}"), PRODUCER).await.status != 404 {
        assert!(tokio::time::Instant::now() < deadline, "the terminal task was never cleaned up");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(app.task(&pending).await["status"], "PENDING");
}
