//! The dashboard's read routes: one task in full, the last hour of
//! traffic, and the workers holding leases.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{ADMIN, PRODUCER, TestApp, WORKER};

/// Polls the throughput of `command` until `field` sums to `want` (the
/// counters are sampled once a second).
async fn wait_for_throughput(app: &TestApp, command: &str, field: &str, want: u64) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let reply = app.get(&format!("/admin/throughput?command={command}"), ADMIN).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        let series = reply.body["commands"][0].clone();
        let sum: u64 = series[field].as_array().unwrap().iter().map(|n| n.as_u64().unwrap()).sum();
        if sum == want {
            return reply.body;
        }
        assert!(tokio::time::Instant::now() < deadline, "{field} never reached {want}: {series}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn throughput_shows_the_last_hour_per_minute() {
    let app = TestApp::spawn().await;
    let id = app.create_simple("charted").await;
    app.claim_ok(WORKER, &["charted"]).await;
    let done = json!({ "status": "COMPLETED", "result": {}, "attempt": 1 });
    assert_eq!(app.post(&format!("/tasks/{id}/result"), WORKER, done).await.status, 200);

    let body = wait_for_throughput(&app, "charted", "completed", 1).await;

    assert_eq!(body["minutes"], 60);
    let series = &body["commands"][0];
    assert_eq!(series["command"], "charted");
    assert_eq!(series["created"].as_array().unwrap().len(), 60);
    assert_eq!(series["created"][59], 1, "the current minute is last");
    assert_eq!(series["claimed"][59], 1);
    assert_eq!(series["failed"][59], 0);
    let all = app.get("/admin/throughput", ADMIN).await;
    assert_eq!(all.body["commands"].as_array().unwrap().len(), 1, "only commands with traffic");
}

#[tokio::test]
async fn a_task_in_full_has_its_result_and_last_worker() {
    let app = TestApp::spawn().await;
    let task = app
        .create(json!({ "command": "full", "payload": { "n": 7 }, "webhook": "https://example.com/hook" }))
        .await;
    let id = task["id"].as_str().unwrap();
    app.claim_ok(WORKER, &["full"]).await;

    let running = app.get(&format!("/admin/tasks/{id}"), ADMIN).await;
    assert_eq!(running.status, 200);
    assert_eq!(running.body["task"]["status"], "IN_PROGRESS");
    assert_eq!(running.body["task"]["payload"], r#"{"n":7}"#);
    assert_eq!(running.body["lastWorkerId"], "w1");
    assert_eq!(running.body["webhook"]["state"], "waiting");
    assert!(running.body.get("result").is_none());

    let failed = json!({ "status": "FAILED", "error": "boom", "attempt": 1 });
    assert_eq!(app.post(&format!("/tasks/{id}/result"), WORKER, failed).await.status, 200);
    let ended = app.get(&format!("/admin/tasks/{id}"), ADMIN).await;
    assert_eq!(ended.body["result"]["status"], "FAILED");
    assert_eq!(ended.body["result"]["error"], "boom");
    assert_eq!(ended.body["lastWorkerId"], "w1");
    assert!(["owed", "settled"].contains(&ended.body["webhook"]["state"].as_str().unwrap()));
    assert_eq!(ended.body["deadLettered"], false);
}

#[tokio::test]
async fn a_task_in_full_shows_its_result_as_the_worker_wrote_it() {
    let app = TestApp::spawn().await;
    let id = app.create_simple("deep").await;
    app.claim_ok(WORKER, &["deep"]).await;
    // Past a parsed value's 128 levels, with digits a float would round.
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let result = format!(r#"{{"big":123456789012345678901234567890,"d":{deep}}}"#);
    let body = format!(r#"{{"status":"COMPLETED","result":{result}}}"#);
    let url = format!("{}/v1/codeq/tasks/{id}/result", app.base);
    let request = app.http.post(url).bearer_auth(WORKER).header("content-type", "application/json");
    assert_eq!(request.body(body).send().await.unwrap().status(), 200);

    let url = format!("{}/v1/codeq/admin/tasks/{id}", app.base);
    let shown = app.http.get(url).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(shown.status(), 200);
    let text = shown.text().await.unwrap();
    assert!(text.contains(&format!(r#""result":{result}"#)), "{text}");
}

#[tokio::test]
async fn only_admins_read_the_insight_routes_and_an_unknown_task_is_404() {
    let app = TestApp::spawn().await;
    for path in
        ["/admin/throughput", "/admin/workers", "/admin/tasks/0190a2b4-7c1e-7000-8000-000000000000"]
    {
        assert_eq!(app.get(path, PRODUCER).await.status, 403, "{path}");
    }
    let unknown = app.get("/admin/tasks/0190a2b4-7c1e-7000-8000-000000000000", ADMIN).await;
    assert_eq!((unknown.status, unknown.code()), (404, "task_not_found"));
    let malformed = app.get("/admin/tasks/not-an-id", ADMIN).await;
    assert_eq!((malformed.status, malformed.code()), (404, "task_not_found"));
}

#[tokio::test]
async fn workers_lists_the_leases_held_by_worker() {
    let app = TestApp::spawn().await;
    let first = app.create_simple("leased").await;
    app.create_simple("leased").await;
    app.claim_ok(WORKER, &["leased"]).await;

    let reply = app.get("/admin/workers", ADMIN).await;

    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["truncated"], false);
    let workers = reply.body["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0]["workerId"], "w1");
    assert_eq!(workers[0]["leases"], 1);
    assert_eq!(workers[0]["commands"], json!(["leased"]));
    assert_eq!(reply.body["leases"][0]["taskId"], first.as_str());
    assert!(reply.body["leases"][0]["leaseUntil"].is_string());
    assert_eq!(app.get("/admin/workers?limit=0", ADMIN).await.status, 400);
}
