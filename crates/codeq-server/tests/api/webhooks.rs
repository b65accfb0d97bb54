//! Result callbacks, against real HTTP receivers on 127.0.0.1: the body
//! and its signature, retries until a 2xx, giving up after the last
//! attempt, dead letters, no redirects, and the private-network guard.

use codeq_server::service::outbound::sign;
use serde_json::json;

use crate::helpers::*;
use crate::receiver::Receiver;

const SECRET: &str = "whsec-test";

/// A server whose callbacks go to loopback receivers, retried at once.
async fn server(max_attempts: u32) -> TestApp {
    TestApp::spawn_with(
        |config| {
            config.webhook_allow_private_networks = true;
            config.webhook_hmac_secret = Some(codeq_server::config::Secret::new(SECRET));
            config.result_webhook_max_attempts = max_attempts;
            config.result_webhook_base_backoff_seconds = 0;
            config.result_webhook_max_backoff_seconds = 1;
        },
        false,
    )
    .await
}

/// Creates a task calling back `receiver`, claims and completes it.
async fn complete_one(app: &TestApp, receiver: &Receiver) -> String {
    complete_calling(app, &format!("{}/hook", receiver.base)).await
}

/// Creates a task calling back `webhook`, claims and completes it.
async fn complete_calling(app: &TestApp, webhook: &str) -> String {
    let task =
        app.create(json!({ "command": "hooked", "payload": { "n": 1 }, "webhook": webhook })).await;
    let id = task["id"].as_str().unwrap().to_string();
    app.claim_ok(WORKER, &["hooked"]).await;
    let done = app
        .post(
            &format!("/tasks/{id}/result"),
            WORKER,
            json!({ "status": "COMPLETED", "result": { "ok": true } }),
        )
        .await;
    assert_eq!(done.status, 200);
    id
}

/// Where task `id`'s callback stands, as the admin task view says.
async fn callback_state(app: &TestApp, id: &str) -> serde_json::Value {
    let detail = app.get(&format!("/admin/tasks/{id}"), ADMIN).await;
    assert_eq!(detail.status, 200, "{:?}", detail.body);
    detail.body["webhook"].clone()
}

#[tokio::test]
async fn a_callback_carries_the_result_and_a_valid_signature() {
    let app = server(5).await;
    let receiver = Receiver::start(&[]).await;
    let id = complete_one(&app, &receiver).await;
    let got = receiver.wait_for(1).await.remove(0);
    assert_eq!(got.path, "/hook");
    assert_eq!(got.header("x-codeq-event"), "task.result");
    assert_eq!(got.header("content-type"), "application/json");
    assert!(!got.header("x-codeq-delivery").is_empty());
    let timestamp: i64 = got.header("x-codeq-timestamp").parse().unwrap();
    assert!((timestamp - codeq_core::Timestamp::now().unix_seconds()).abs() < 60);
    assert_eq!(got.header("x-codeq-signature"), sign(SECRET, timestamp, &got.body));
    let body = got.json();
    assert_eq!(body["taskId"], id);
    assert_eq!(body["eventType"], "hooked");
    assert_eq!(body["status"], "COMPLETED");
    assert_eq!(body["result"], json!({ "ok": true }));
    assert!(body["completedAt"].as_str().unwrap().ends_with('Z'));
    app.wait_for_callbacks().await;
}

#[tokio::test]
async fn a_receiver_failing_twice_gets_one_delivery_after_them() {
    let app = server(5).await;
    let receiver = Receiver::start(&[500, 503]).await;
    let id = complete_one(&app, &receiver).await;
    let got = receiver.wait_for(3).await;
    app.wait_for_callbacks().await;
    assert_eq!(receiver.received().len(), 3, "delivered once, then nothing more");
    let settled = json!({ "state": "settled", "outcome": "delivered", "attempts": 3 });
    assert_eq!(callback_state(&app, &id).await, settled);
    let deliveries: Vec<&str> = got.iter().map(|r| r.header("x-codeq-delivery")).collect();
    assert!(deliveries.iter().all(|d| *d == deliveries[0]), "one delivery series");
}

#[tokio::test]
async fn a_retry_is_sent_on_time_while_another_receiver_holds_its_delivery() {
    let app = TestApp::spawn_with(
        |config| {
            config.webhook_allow_private_networks = true;
            // A retry is due a second at most after a failure: only the
            // dispatcher's timer starts it.
            config.result_webhook_base_backoff_seconds = 1;
            config.result_webhook_max_backoff_seconds = 1;
            // Longer than the wait below: the held delivery stays in flight.
            config.webhook_timeout_seconds = 60;
        },
        false,
    )
    .await;
    let receiver = Receiver::start(&[500]).await;
    complete_calling(&app, &format!("{}/held", receiver.base)).await;
    receiver.wait_for(1).await;
    complete_one(&app, &receiver).await;
    // The first attempt fails (500); its retry is due within a second.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while receiver.received_at("/hook") < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the retry waited for the held delivery: {} attempts at /hook",
            receiver.received_at("/hook")
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(receiver.received_at("/held"), 1, "the held delivery was still in flight");
    receiver.release();
    app.wait_for_callbacks().await;
}

#[tokio::test]
async fn a_receiver_that_always_fails_is_given_up_after_the_last_attempt() {
    let app = server(3).await;
    let receiver = Receiver::start(&[500; 10]).await;
    let id = complete_one(&app, &receiver).await;
    receiver.wait_for(3).await;
    app.wait_for_callbacks().await;
    assert_eq!(receiver.received().len(), 3, "resultWebhookMaxAttempts");
    let settled = json!({ "state": "settled", "outcome": "gave_up", "attempts": 3 });
    assert_eq!(callback_state(&app, &id).await, settled);
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let app = server(1).await;
    let receiver = Receiver::start(&[302]).await;
    complete_one(&app, &receiver).await;
    receiver.wait_for(1).await;
    app.wait_for_callbacks().await;
    let paths: Vec<String> = receiver.received().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, vec!["/hook"], "the redirect's target was never asked");
}

#[tokio::test]
async fn a_task_dead_lettered_by_a_nack_calls_back_failed_max_attempts() {
    let app = server(5).await;
    let receiver = Receiver::start(&[]).await;
    let task = app
        .create(
            json!({ "command": "dead", "payload": {}, "maxAttempts": 1, "webhook": receiver.base }),
        )
        .await;
    let id = task["id"].as_str().unwrap();
    app.claim_ok(WORKER, &["dead"]).await;
    let nacked = app.post(&format!("/tasks/{id}/nack"), WORKER, json!({})).await;
    assert_eq!(nacked.body["status"], "dlq");
    let body = receiver.wait_for(1).await[0].json();
    assert_eq!(
        (body["status"].as_str(), body["error"].as_str()),
        (Some("FAILED"), Some("MAX_ATTEMPTS"))
    );
}

#[tokio::test]
async fn a_task_dead_lettered_by_an_expired_lease_calls_back_failed_max_attempts() {
    let app = TestApp::spawn_with(
        |config| {
            config.webhook_allow_private_networks = true;
            config.result_webhook_base_backoff_seconds = 0;
        },
        true,
    )
    .await;
    let receiver = Receiver::start(&[]).await;
    let task = app
        .create(json!({ "command": "lapse", "payload": {}, "maxAttempts": 1, "webhook": receiver.base }))
        .await;
    let id = task["id"].as_str().unwrap().to_string();
    let claim = json!({ "commands": ["lapse"], "leaseSeconds": 5 });
    assert_eq!(app.post("/tasks/claim", WORKER, claim).await.status, 200);
    app.advance(6);
    app.wait_for_status(&id, "FAILED").await;
    let body = receiver.wait_for(1).await[0].json();
    assert_eq!(body["taskId"], id);
    assert_eq!(
        (body["status"].as_str(), body["error"].as_str()),
        (Some("FAILED"), Some("MAX_ATTEMPTS"))
    );
}

#[tokio::test]
async fn retention_keeps_a_task_whose_callback_is_still_owed() {
    let app = TestApp::spawn_with(
        |config| {
            config.webhook_allow_private_networks = true;
            config.retention_seconds = 0;
            config.cleanup_interval_seconds = 0; // by hand only
            config.result_webhook_base_backoff_seconds = 60;
            config.result_webhook_max_backoff_seconds = 60;
        },
        false,
    )
    .await;
    let receiver = Receiver::start(&[500]).await;
    let id = complete_one(&app, &receiver).await;
    receiver.wait_for(1).await;
    let cleaned = app.post("/admin/tasks/cleanup", ADMIN, json!({})).await;
    assert_eq!(cleaned.body["deleted"], 0, "the callback is still owed");
    assert_eq!(app.get(&format!("/tasks/{id}"), PRODUCER).await.status, 200);
}

/// A guarded server (not local mode: static tokens, default settings).
async fn guarded() -> TestApp {
    TestApp::spawn_with(|config| config.result_webhook_base_backoff_seconds = 0, false).await
}

#[tokio::test]
async fn private_literal_targets_are_refused_at_registration() {
    let app = guarded().await;
    for target in [
        "http://127.0.0.1:9/x",
        "http://10.0.0.1/x",
        "http://172.16.0.1/x",
        "http://192.168.0.1/x",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:9/x",
        "http://[fc00::1]/x",
        "http://[::127.0.0.1]:9/x",
        "http://[64:ff9b::7f00:1]:9/x",
        "http://[2002:7f00:1::]:9/x",
    ] {
        let reply = app
            .post("/tasks", PRODUCER, json!({ "command": "c", "payload": {}, "webhook": target }))
            .await;
        assert_eq!((reply.status, reply.code()), (400, "invalid_field"), "{target}");
        assert!(reply.str("error").contains("private address"), "{target}: {:?}", reply.body);
    }
}

#[tokio::test]
async fn a_host_name_resolving_to_a_private_address_is_never_called() {
    let app = guarded().await;
    let receiver = Receiver::start(&[]).await;
    let webhook = format!("http://localhost:{}/hook", receiver.port);
    let task = app.create(json!({ "command": "host", "payload": {}, "webhook": webhook })).await;
    let id = task["id"].as_str().unwrap();
    app.claim_ok(WORKER, &["host"]).await;
    let done = app
        .post(&format!("/tasks/{id}/result"), WORKER, json!({ "status": "FAILED", "error": "x" }))
        .await;
    assert_eq!(done.status, 200);
    app.wait_for_callbacks().await;
    assert!(receiver.received().is_empty(), "the receiver saw nothing");
    // Refused at each connection (the name may resolve elsewhere later):
    // tried as a failure, then given up.
    let attempts = codeq_server::config::Config::default().result_webhook_max_attempts;
    let settled = json!({ "state": "settled", "outcome": "gave_up", "attempts": attempts });
    assert_eq!(callback_state(&app, id).await, settled);
}

#[tokio::test]
async fn webhook_credentials_are_sent_as_basic_auth_and_never_shown() {
    let app = server(5).await;
    let receiver = Receiver::start(&[]).await;
    let webhook = receiver.base.replacen("http://", "http://user:s3cret@", 1) + "/hook";
    let id = complete_calling(&app, &webhook).await;
    let got = receiver.wait_for(1).await.remove(0);
    // base64("user:s3cret")
    assert_eq!(got.header("authorization"), "Basic dXNlcjpzM2NyZXQ=");

    // Its producer and admins see the URL, credentials hidden; anyone
    // else its origin only (a path or query may be the secret).
    let hidden = receiver.base.replacen("http://", "http://***@", 1) + "/hook";
    let origin = receiver.base.clone() + "/…";
    for (token, shown) in [(PRODUCER, &hidden), (ADMIN, &hidden), (WORKER, &origin)] {
        for path in [format!("/tasks/{id}"), format!("/tasks/{id}/result")] {
            let reply = app.get(&path, token).await;
            let task = reply.body.get("task").unwrap_or(&reply.body);
            assert_eq!(task["webhook"], shown.as_str(), "{token} {path}: {:?}", reply.body);
            assert!(!reply.body.to_string().contains("s3cret"));
        }
    }
    // Another producer repeating the key gets the task back, its webhook
    // as anyone else sees it.
    let keyed =
        json!({ "command": "allowed", "payload": {}, "idempotencyKey": "k", "webhook": webhook });
    assert_eq!(app.create(keyed).await["webhook"], hidden.as_str());
    let again = json!({ "command": "allowed", "payload": {}, "idempotencyKey": "k" });
    let replayed = app.post("/tasks", LIMITED_PRODUCER, again.clone()).await;
    assert_eq!(replayed.body["webhook"], origin.as_str(), "{:?}", replayed.body);
    let batch = app.post("/tasks/batch", LIMITED_PRODUCER, json!({ "tasks": [again] })).await;
    assert_eq!(batch.body["results"][0]["task"]["webhook"], origin.as_str(), "{:?}", batch.body);
    app.wait_for_callbacks().await;
}

#[tokio::test]
async fn a_callback_to_a_target_refused_since_it_was_given_is_settled_as_refused() {
    let app = server(5).await;
    let receiver = Receiver::start(&[]).await;
    let webhook = format!("{}/hook", receiver.base);
    let task = app.create(json!({ "command": "moved", "payload": {}, "webhook": webhook })).await;
    let id = task["id"].as_str().unwrap().to_string();
    // Restarted with the private-network guard on: the stored target is
    // now refused.
    let dir = app.stop().await;
    let app = TestApp::start(TestApp::config(dir.path()), dir, false).await;
    app.claim_ok(WORKER, &["moved"]).await;
    let done = json!({ "status": "COMPLETED", "result": {} });
    assert_eq!(app.post(&format!("/tasks/{id}/result"), WORKER, done).await.status, 200);
    app.wait_for_callbacks().await;
    assert!(receiver.received().is_empty(), "nothing was sent");
    let settled = json!({ "state": "settled", "outcome": "refused", "attempts": 0 });
    assert_eq!(callback_state(&app, &id).await, settled);
}
