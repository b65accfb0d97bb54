//! What clients written for the original service rely on: `X-Role` in
//! `env: dev`, clamped `priority` and `waitSeconds`, and queue stats read
//! with a worker token (the Node SDK's `getQueueStats`).

use codeq_server::config::Env;
use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

/// `GET /v1/codeq/admin/queues` with `token` and, when given, `X-Role`.
async fn list_queues(app: &TestApp, token: &str, x_role: Option<&str>) -> u16 {
    let mut request = app.http.request(Method::GET, format!("{}/v1/codeq/admin/queues", app.base));
    request = request.bearer_auth(token);
    if let Some(role) = x_role {
        request = request.header("X-Role", role);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn in_dev_x_role_admin_makes_a_producer_token_without_a_role_an_admin() {
    let dev = TestApp::spawn_with(|config| config.env = Env::Dev, false).await;
    let prod = TestApp::spawn().await;

    assert_eq!(list_queues(&dev, PRODUCER, Some("ADMIN")).await, 200, "dev, X-Role");
    assert_eq!(list_queues(&dev, PRODUCER, None).await, 403, "dev, no header");
    assert_eq!(list_queues(&dev, PRODUCER, Some("USER")).await, 403, "dev, another role");
    assert_eq!(list_queues(&dev, WORKER, Some("ADMIN")).await, 403, "never a worker");
    assert_eq!(list_queues(&prod, PRODUCER, Some("ADMIN")).await, 403, "never outside dev");
    assert_eq!(list_queues(&prod, ADMIN, None).await, 200, "admin: true needs no header");
}

#[tokio::test]
async fn a_worker_reads_the_stats_of_the_commands_its_event_types_cover() {
    let app = TestApp::spawn().await;
    app.create_simple("allowed").await;

    let covered = app.get("/admin/queues/allowed", LIMITED).await;
    let stats_path = app.get("/admin/queues/allowed/stats", LIMITED).await;
    let outside = app.get("/admin/queues/other", LIMITED).await;
    let any = app.get("/admin/queues/other/stats", WORKER).await;
    let list = app.get("/admin/queues", WORKER).await;
    let cleanup = app.post("/admin/tasks/cleanup", WORKER, serde_json::json!({})).await;
    let producer = app.get("/admin/queues/allowed", PRODUCER).await;

    assert_eq!(covered.status, 200, "{:?}", covered.body);
    assert_eq!(covered.body["ready"], 1);
    assert_eq!(stats_path.body, covered.body);
    assert_eq!((outside.status, outside.code()), (403, "command_not_allowed"));
    assert_eq!((any.status, any.body["ready"].as_u64()), (200, Some(0)), "eventTypes *");
    assert_eq!((list.status, list.code()), (403, "not_admin"), "listing stays admin-only");
    assert_eq!((cleanup.status, cleanup.code()), (403, "not_admin"), "cleanup too");
    assert_eq!((producer.status, producer.code()), (403, "not_admin"));
}

/// Creates a task with `priority` written into the JSON as given.
async fn create_with_priority(app: &TestApp, priority: &str) -> Reply {
    let body = format!(r#"{{"command":"a","payload":{{}},"priority":{priority}}}"#);
    app.post("/tasks", PRODUCER, serde_json::from_str(&body).unwrap()).await
}

#[tokio::test]
async fn priority_is_clamped_into_0_to_9_whatever_integer_is_sent() {
    let app = TestApp::spawn().await;

    for (sent, stored) in [("42", 9), ("-3", 0), ("100000000000000000000", 9), ("5.0", 5), ("7", 7)]
    {
        let reply = create_with_priority(&app, sent).await;
        assert_eq!((reply.status, reply.body["priority"].as_i64()), (202, Some(stored)), "{sent}");
    }
    let fraction = create_with_priority(&app, "5.5").await;
    assert_eq!((fraction.status, fraction.code()), (400, "invalid_field"));
    assert!(fraction.str("error").contains("priority"), "{:?}", fraction.body);
}

#[tokio::test]
async fn wait_seconds_is_clamped_into_0_to_30() {
    let app = TestApp::spawn().await;

    let negative = app.post("/tasks/claim", WORKER, json!({ "waitSeconds": -5 })).await;
    let waiting = app.spawn_post(
        "/tasks/claim",
        WORKER,
        json!({ "commands": ["late"], "waitSeconds": 100_000_000_000_000_000_000.0 }),
    );
    app.wait_for_long_polls(1).await;
    let id = app.create_simple("late").await;
    let woken = waiting.await.unwrap();

    assert_eq!(negative.status, 204, "no wait: {:?}", negative.body);
    assert_eq!(woken.status(), 200);
    assert_eq!(woken.json::<serde_json::Value>().await.unwrap()["id"], id.as_str());
}
