//! Each endpoint once, with exact field names and statuses.

use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn create_returns_202_with_the_task_in_api_form() {
    let app = TestApp::spawn().await;
    let reply = app
        .post(
            "/tasks",
            PRODUCER,
            json!({
                "command": "GENERATE_MASTER",
                "payload": { "jobId": "j-1", "n": [1, 2] },
                "priority": 12,
                "maxAttempts": 7,
                "webhook": "https://example.com/hook",
                "idempotencyKey": "k-1"
            }),
        )
        .await;
    assert_eq!(reply.status, 202);
    let task = &reply.body;
    assert_eq!(task["command"], "GENERATE_MASTER");
    assert_eq!(task["payload"], r#"{"jobId":"j-1","n":[1,2]}"#, "payload is a compact JSON string");
    assert_eq!(task["priority"], 9, "clamped");
    assert_eq!(task["status"], "PENDING");
    assert_eq!(task["attempts"], 0);
    assert_eq!(task["maxAttempts"], 7);
    assert_eq!(task["webhook"], "https://example.com/hook");
    assert_eq!(task["idempotencyKey"], "k-1");
    assert!(task["id"].as_str().unwrap().parse::<uuid::Uuid>().is_ok());
    assert!(task["createdAt"].as_str().unwrap().ends_with('Z'));
    for absent in ["workerId", "leaseUntil", "error", "lastReason", "runAt", "completedAt"] {
        assert!(task.get(absent).is_none(), "{absent} should be omitted");
    }
    assert!(reply.headers.get("x-request-id").is_some());
    assert_eq!(app.task(task["id"].as_str().unwrap()).await, *task);
}

#[tokio::test]
async fn request_ids_are_echoed() {
    let app = TestApp::spawn().await;
    let response = app
        .http
        .get(format!("{}/healthz", app.base))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "abc-123");
    // An empty one is none: the answer carries a new id.
    let response = app
        .http
        .get(format!("{}/healthz", app.base))
        .header("x-request-id", "")
        .send()
        .await
        .unwrap();
    let given = response.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(given).is_ok(), "{given:?}");
}

#[tokio::test]
async fn a_task_goes_through_claim_heartbeat_and_result() {
    let app = TestApp::spawn().await;
    let id = app.create_simple("render").await;

    let claimed = app.claim_ok(WORKER, &["render"]).await;
    assert_eq!(claimed["id"], id.as_str());
    assert_eq!(claimed["status"], "IN_PROGRESS");
    assert_eq!(claimed["workerId"], "w1");
    assert_eq!(claimed["attempts"], 1);
    assert!(claimed["leaseUntil"].is_string());

    let beat = app
        .post(
            &format!("/tasks/{id}/heartbeat"),
            WORKER,
            json!({ "extendSeconds": 600, "attempt": 1 }),
        )
        .await;
    assert_eq!(beat.status, 200);
    assert_eq!(beat.body["ok"], true);
    assert!(beat.str("leaseUntil") > claimed["leaseUntil"].as_str().unwrap());

    let done = app
        .post(
            &format!("/tasks/{id}/result"),
            WORKER,
            json!({ "status": "COMPLETED", "result": { "url": "s3://x" }, "attempt": 1 }),
        )
        .await;
    assert_eq!(done.status, 200, "{:?}", done.body);
    assert_eq!(done.body["taskId"], id.as_str());
    assert_eq!(done.body["status"], "COMPLETED");
    assert_eq!(done.body["result"], json!({ "url": "s3://x" }));
    assert!(done.body["completedAt"].is_string());
    assert!(done.body.get("error").is_none());

    let fetched = app.get(&format!("/tasks/{id}/result"), PRODUCER).await;
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.body["task"]["status"], "COMPLETED");
    assert!(fetched.body["task"]["completedAt"].is_string());
    assert!(fetched.body["task"].get("workerId").is_none());
    assert_eq!(fetched.body["result"], done.body);
    // Workers may read too.
    assert_eq!(app.get(&format!("/tasks/{id}"), WORKER).await.status, 200);
}

#[tokio::test]
async fn a_result_with_claim_next_answers_the_next_task_once_the_result_is_stored() {
    let app = TestApp::spawn().await;
    let first = app.create_simple("render").await;
    let second = app.create_simple("render").await;
    app.claim_ok(WORKER, &["render"]).await;
    let app = &app;
    let submit = |id: &str, body: serde_json::Value| {
        let path = format!("/tasks/{id}/result");
        async move { app.post(&path, WORKER, body).await }
    };
    let done = json!({ "status": "COMPLETED", "result": {}, "attempt": 1 });
    let with_next = |claim: serde_json::Value| {
        let mut body = done.clone();
        body["claimNext"] = claim;
        body
    };

    // Refused before anything is stored: a bad claim, a token without
    // the claim scope.
    let bad = submit(&first, with_next(json!({ "leaseSeconds": 0 }))).await;
    assert_eq!((bad.status, bad.code()), (400, "invalid_field"), "{:?}", bad.body);
    let path = format!("/tasks/{first}/result");
    let unscoped = app.post(&path, REPORTER, with_next(json!({}))).await;
    assert_eq!((unscoped.status, unscoped.code()), (403, "missing_scope"));
    assert_eq!(app.task(&first).await["status"], "IN_PROGRESS");

    let answered = submit(&first, with_next(json!({ "commands": ["render"] }))).await;
    assert_eq!(answered.status, 200, "{:?}", answered.body);
    assert_eq!((answered.str("taskId"), answered.str("status")), (first.as_str(), "COMPLETED"));
    let next = &answered.body["next"];
    assert_eq!(
        (next["id"].as_str(), next["status"].as_str()),
        (Some(&*second), Some("IN_PROGRESS"))
    );
    assert_eq!(app.task(&second).await["workerId"], "w1");

    let last = submit(&second, with_next(json!({ "commands": ["render"] }))).await;
    assert_eq!(last.status, 200);
    assert!(last.body.get("next").is_none(), "nothing ready: no next: {:?}", last.body);

    let batch = app
        .post(
            "/tasks/batch/results",
            WORKER,
            json!({ "results": [{ "taskId": second, "status": "COMPLETED", "result": {}, "claimNext": {} }] }),
        )
        .await;
    assert_eq!(batch.body["results"][0]["code"], "invalid_field", "{:?}", batch.body);
}

#[tokio::test]
async fn a_result_with_claim_next_waits_for_a_task_when_asked_and_a_refused_one_claims_none() {
    let app = TestApp::spawn().await;
    let held = app.create_simple("render").await;
    app.claim_ok(WORKER, &["render"]).await;
    let path = format!("/tasks/{held}/result");
    let body = |wait: u64| {
        json!({ "status": "COMPLETED", "result": {}, "attempt": 1,
                "claimNext": { "commands": ["render"], "waitSeconds": wait } })
    };
    // Another worker's result is refused, and claims nothing.
    let ready = app.create_simple("render").await;
    let refused = app.post(&path, WORKER2, body(0)).await;
    assert_eq!((refused.status, refused.code()), (403, "not_owner"));
    assert_eq!(app.task(&ready).await["status"], "PENDING");
    app.claim_ok(WORKER2, &["render"]).await;

    // Nothing ready: with waitSeconds the answer waits for the next task.
    let app = std::sync::Arc::new(app);
    let waiting = tokio::spawn({
        let app = app.clone();
        async move { app.post(&path, WORKER, body(10)).await }
    });
    app.wait_for_long_polls(1).await;
    let later = app.create_simple("render").await;
    let answered = waiting.await.unwrap();
    assert_eq!(answered.status, 200, "{:?}", answered.body);
    assert_eq!(answered.str("status"), "COMPLETED");
    assert_eq!(answered.body["next"]["id"].as_str(), Some(later.as_str()));
    assert_eq!(app.task(&later).await["workerId"], "w1");
}

#[tokio::test]
async fn a_refused_claim_next_names_its_field_and_stores_no_result() {
    let app = TestApp::spawn().await;
    let held = app.create_simple("render").await;
    app.claim_ok(WORKER, &["render"]).await;
    let path = format!("/tasks/{held}/result");
    for (claim, named) in [
        (json!({ "leaseSeconds": 0 }), "claimNext.leaseSeconds"),
        (json!({ "commands": [] }), "claimNext.commands"),
        (json!({ "commands": ["not a name"] }), "claimNext.commands"),
        (json!({ "leaseSeconds": "ten" }), "claimNext.leaseSeconds"),
    ] {
        let body = json!({ "status": "COMPLETED", "result": {}, "claimNext": claim });
        let refused = app.post(&path, WORKER, body).await;
        assert_eq!(refused.status, 400, "{claim}: {:?}", refused.body);
        assert!(refused.str("error").contains(named), "{claim}: {:?}", refused.body);
    }
    assert_eq!(app.task(&held).await["status"], "IN_PROGRESS");
}

#[tokio::test]
async fn a_failed_result_is_terminal_but_not_dead_lettered() {
    let app = TestApp::spawn().await;
    let id = app.create_simple("render").await;
    app.claim_ok(WORKER, &["render"]).await;
    let failed = app
        .post(
            &format!("/tasks/{id}/result"),
            WORKER,
            json!({ "status": "FAILED", "error": "bad input" }),
        )
        .await;
    assert_eq!(failed.status, 200);
    assert_eq!(failed.body["error"], "bad input");
    let task = app.task(&id).await;
    assert_eq!(
        (task["status"].as_str(), task["error"].as_str()),
        (Some("FAILED"), Some("bad input"))
    );
    let stats = app.get("/admin/queues/render", ADMIN).await;
    assert_eq!(stats.body["dlq"], 0);
}

#[tokio::test]
async fn result_artifacts_by_url_and_inline_are_stored() {
    let app = TestApp::spawn().await;
    let id = app.create_simple("render").await;
    app.claim_ok(WORKER, &["render"]).await;
    let body = json!({
        "status": "COMPLETED",
        "result": {},
        "artifacts": [
            { "name": "remote.png", "url": "https://cdn.example.com/remote.png", "contentType": "image/png" },
            { "name": "log.txt", "contentBase64": "aGVsbG8=", "contentType": "text/plain" }
        ]
    });
    let done = app.post(&format!("/tasks/{id}/result"), WORKER, body).await;
    assert_eq!(done.status, 200, "{:?}", done.body);
    let artifacts = done.body["artifacts"].as_array().unwrap();
    assert_eq!(
        artifacts[0],
        json!({ "name": "remote.png", "url": "https://cdn.example.com/remote.png", "contentType": "image/png" })
    );
    assert_eq!(artifacts[1]["url"], format!("/v1/codeq/tasks/{id}/artifacts/log.txt"));
    let attempt_dir = app.dir.path().join("artifacts").join(&id).join("1");
    let stored = std::fs::read(attempt_dir.join("log.txt")).unwrap();
    assert_eq!(stored, b"hello");
}

#[tokio::test]
async fn a_batch_of_results_stores_each_inline_artifact_whole() {
    use base64::Engine;
    let app = TestApp::spawn().await;
    let first = app.create_simple("render").await;
    let second = app.create_simple("render").await;
    app.claim_ok(WORKER, &["render"]).await;
    app.claim_ok(WORKER, &["render"]).await;
    // Large enough to be decoded in several pieces.
    let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes);
    let item = |id: &str| json!({ "taskId": id, "status": "COMPLETED", "result": {}, "artifacts": [{ "name": "frames.bin", "contentBase64": encoded }] });
    let reply = app
        .post("/tasks/batch/results", WORKER, json!({ "results": [item(&first), item(&second)] }))
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    for (n, id) in [&first, &second].into_iter().enumerate() {
        let stored = &reply.body["results"][n]["result"]["artifacts"][0];
        assert_eq!(stored["url"], format!("/v1/codeq/tasks/{id}/artifacts/frames.bin"));
        let path = app.dir.path().join("artifacts").join(id).join("1").join("frames.bin");
        assert!(std::fs::read(path).unwrap() == bytes, "artifact of {id} differs");
    }
}

#[tokio::test]
async fn a_refused_result_writes_no_artifact_bytes() {
    let app = TestApp::spawn().await;
    let id = app.create_simple("render").await;
    app.claim_ok(WORKER, &["render"]).await;
    let body = json!({ "status": "COMPLETED", "result": {}, "artifacts": [{ "name": "x.txt", "contentBase64": "aGVsbG8=" }] });
    let refused = app.post(&format!("/tasks/{id}/result"), WORKER2, body).await;
    assert_eq!((refused.status, refused.code()), (403, "not_owner"));
    assert!(!app.dir.path().join("artifacts").join(&id).exists());
}

#[tokio::test]
async fn a_result_is_returned_as_the_worker_wrote_it() {
    let app = TestApp::spawn().await;
    let id = app.create_simple("render").await;
    app.claim_ok(WORKER, &["render"]).await;
    // A parsed value would round the big number, respell 1.50, keep one
    // `k` and sort the keys.
    let sent = r#"{ "z": 0, "big": 123456789012345678901234567890, "f": 1.50, "k": 1, "k": 2 }"#;
    let kept = r#""result":{"z":0,"big":123456789012345678901234567890,"f":1.50,"k":1,"k":2}"#;
    let body = format!(r#"{{"status": "COMPLETED", "attempt": 1, "result": {sent}}}"#);
    let url = format!("{}/v1/codeq/tasks/{id}/result", app.base);
    let request = app.http.post(url).bearer_auth(WORKER).header("content-type", "application/json");
    let answer = request.body(body).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let answered = answer.text().await.unwrap();
    assert!(answered.contains(kept), "{answered}");

    let url = format!("{}/v1/codeq/tasks/{id}/result", app.base);
    let fetched = app.http.get(url).bearer_auth(PRODUCER).send().await.unwrap();
    let fetched = fetched.text().await.unwrap();
    assert!(fetched.contains(kept), "{fetched}");
}

#[tokio::test]
async fn a_completed_task_carries_no_error_even_if_one_was_sent() {
    let app = TestApp::spawn().await;
    let id = app.create_simple("render").await;
    app.claim_ok(WORKER, &["render"]).await;
    let body = json!({ "status": "COMPLETED", "result": { "ok": true }, "error": "ignored" });
    assert_eq!(app.post(&format!("/tasks/{id}/result"), WORKER, body).await.status, 200);
    assert!(app.task(&id).await.get("error").is_none());
}

#[tokio::test]
async fn abandon_requeues_and_nack_reports_its_delay() {
    let app = TestApp::spawn().await;
    let id = app.create_simple("render").await;
    app.claim_ok(WORKER, &["render"]).await;
    let abandoned = app.post(&format!("/tasks/{id}/abandon"), WORKER, json!({})).await;
    assert_eq!((abandoned.status, abandoned.body.clone()), (200, json!({ "status": "requeued" })));
    let again = app.claim_ok(WORKER, &["render"]).await;
    assert_eq!((again["id"].as_str(), again["attempts"].as_u64()), (Some(id.as_str()), Some(2)));

    let nacked = app
        .post(
            &format!("/tasks/{id}/nack"),
            WORKER,
            json!({ "delaySeconds": 100000, "reason": "busy" }),
        )
        .await;
    assert_eq!(nacked.status, 200);
    assert_eq!(
        nacked.body,
        json!({ "status": "requeued", "delaySeconds": 900 }),
        "capped at backoffMaxSeconds"
    );
    let task = app.task(&id).await;
    assert_eq!(
        (task["status"].as_str(), task["lastReason"].as_str()),
        (Some("PENDING"), Some("busy"))
    );
    assert_eq!(app.claim(WORKER, &["render"]).await.status, 204);
}

#[tokio::test]
async fn a_nack_with_an_empty_reason_leaves_no_last_reason() {
    let app = TestApp::spawn().await;
    let id = app.create_simple("render").await;
    app.claim_ok(WORKER, &["render"]).await;

    let nacked = app.post(&format!("/tasks/{id}/nack"), WORKER, json!({ "reason": "" })).await;

    assert_eq!(nacked.status, 200);
    let task = app.task(&id).await;
    assert_eq!(task.get("lastReason"), None, "{task}");
}

#[tokio::test]
async fn batch_create_answers_each_item_in_order() {
    let app = TestApp::spawn().await;
    let reply = app
        .post(
            "/tasks/batch",
            PRODUCER,
            json!({ "tasks": [
                { "command": "a", "payload": { "i": 0 } },
                { "command": "bad name", "payload": {} },
                { "command": "b", "payload": { "i": 2 }, "priority": 3 },
                { "payload": {} }
            ]}),
        )
        .await;
    assert_eq!(reply.status, 200);
    let results = reply.body["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    assert_eq!(results[0]["task"]["command"], "a");
    assert_eq!(results[1]["code"], "invalid_command");
    assert!(results[1]["error"].as_str().unwrap().contains("bad name"));
    assert_eq!(results[2]["task"]["priority"], 3);
    assert_eq!(results[3]["code"], "invalid_field");
    assert!(results[3]["error"].as_str().unwrap().contains("command"), "{}", results[3]);
}

#[tokio::test]
async fn batch_claim_and_batch_results() {
    let app = TestApp::spawn().await;
    let tasks: Vec<_> =
        (0..5).map(|i| json!({ "command": "bulk", "payload": { "i": i } })).collect();
    assert_eq!(app.post("/tasks/batch", PRODUCER, json!({ "tasks": tasks })).await.status, 200);
    let claimed =
        app.post("/tasks/claim/batch", WORKER, json!({ "commands": ["bulk"], "count": 3 })).await;
    assert_eq!(claimed.status, 200);
    let claimed = claimed.body["tasks"].as_array().unwrap().clone();
    assert_eq!(claimed.len(), 3);
    let mut results: Vec<_> = claimed
        .iter()
        .map(|t| json!({ "taskId": t["id"], "status": "COMPLETED", "result": { "ok": true }, "attempt": 1 }))
        .collect();
    results.push(json!({ "taskId": "00000000-0000-7000-8000-000000000000", "status": "COMPLETED", "result": {} }));
    results.push(json!({ "taskId": claimed[0]["id"], "status": "FAILED" }));
    let reply = app.post("/tasks/batch/results", WORKER, json!({ "results": results })).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let items = reply.body["results"].as_array().unwrap();
    for (item, task) in items.iter().zip(&claimed) {
        assert_eq!(item["taskId"], task["id"]);
        assert_eq!(item["result"]["status"], "COMPLETED");
    }
    assert_eq!(items[3]["code"], "task_not_found");
    assert_eq!(items[4]["code"], "invalid_field");
    assert_eq!(items[4]["taskId"], claimed[0]["id"]);
    let rest = app.post("/tasks/claim/batch", WORKER, json!({ "count": 100 })).await;
    let rest = rest.body["tasks"].as_array().unwrap().clone();
    assert_eq!(rest.len(), 2);
    assert_eq!(app.post("/tasks/claim/batch", WORKER, json!({ "count": 100 })).await.status, 204);

    // A task appears once in a batch even when its first item is refused:
    // the second item is not applied in its place.
    let invalid_then_valid = json!({ "results": [
        { "taskId": rest[0]["id"], "status": "COMPLETED", "result": 5 },
        { "taskId": rest[0]["id"], "status": "FAILED", "error": "second" },
        { "taskId": rest[1]["id"], "status": 5 },
        { "taskId": rest[1]["id"], "status": "COMPLETED", "result": {} },
    ] });
    let reply = app.post("/tasks/batch/results", WORKER, invalid_then_valid).await;
    let items = reply.body["results"].as_array().unwrap();
    for (n, item) in items.iter().enumerate() {
        assert_eq!(item["code"], "invalid_field", "item {n}: {:?}", reply.body);
    }
    for task in &rest {
        assert_eq!(app.task(task["id"].as_str().unwrap()).await["status"], "IN_PROGRESS");
    }
}

#[tokio::test]
async fn admin_sees_queue_depths() {
    let app = TestApp::spawn().await;
    app.create_simple("q1").await;
    app.create_simple("q1").await;
    app.create(json!({ "command": "q1", "payload": {}, "delaySeconds": 3600 })).await;
    app.create_simple("q2").await;
    app.claim_ok(WORKER, &["q2"]).await;

    let one = app.get("/admin/queues/q1", ADMIN).await;
    assert_eq!(one.status, 200);
    assert_eq!(
        one.body,
        json!({ "command": "q1", "ready": 2, "delayed": 1, "inProgress": 0, "dlq": 0, "paused": false })
    );
    assert_eq!(app.get("/admin/queues/q1/stats", ADMIN).await.body, one.body);
    let unused = app.get("/admin/queues/never", ADMIN).await;
    assert_eq!(
        unused.body,
        json!({ "command": "never", "ready": 0, "delayed": 0, "inProgress": 0, "dlq": 0, "paused": false })
    );
    let all = app.get("/admin/queues", ADMIN).await;
    assert_eq!(all.body["queues"].as_array().unwrap().len(), 2);
    assert_eq!(
        all.body["queues"][1],
        json!({ "command": "q2", "ready": 0, "delayed": 0, "inProgress": 1, "dlq": 0, "paused": false })
    );
}

#[tokio::test]
async fn health_and_readiness_need_no_token() {
    let app = TestApp::spawn().await;
    app.assert_healthy().await;
    let ready = app.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, 200);
}

#[tokio::test]
async fn unknown_routes_answer_json_404() {
    let app = TestApp::spawn().await;
    let reply = app.call(Method::GET, "/v1/codeq/nothing", Some(PRODUCER), None).await;
    assert_eq!((reply.status, reply.code()), (404, "route_not_found"));
    assert!(reply.body["error"].is_string());
}

#[tokio::test]
async fn an_identical_resubmission_with_inline_artifacts_gets_the_stored_record() {
    let app = TestApp::spawn().await;
    let id = app.create_simple("again").await;
    app.claim_ok(WORKER, &["again"]).await;
    let name = "n".repeat(250);
    let body = json!({
        "status": "COMPLETED",
        "result": { "ok": true },
        "attempt": 1,
        "artifacts": [{ "name": name, "contentBase64": "aGVsbG8=" }]
    });
    let first = app.post(&format!("/tasks/{id}/result"), WORKER, body.clone()).await;
    assert_eq!(first.status, 200, "a 250-byte artifact name is stored: {:?}", first.body);
    let again = app.post(&format!("/tasks/{id}/result"), WORKER, body).await;
    assert_eq!((again.status, &again.body), (200, &first.body));
    let stored = app.dir.path().join("artifacts").join(&id).join("1").join(&name);
    assert_eq!(std::fs::read(stored).unwrap(), b"hello");
    let other = json!({ "status": "FAILED", "error": "no", "artifacts": [{ "name": "x", "contentBase64": "aGk=" }] });
    let conflict = app.post(&format!("/tasks/{id}/result"), WORKER, other).await;
    assert_eq!((conflict.status, conflict.code()), (409, "result_conflict"));
    assert!(
        !app.dir.path().join("artifacts").join(&id).join("1").join("x").exists(),
        "nothing written"
    );
}
