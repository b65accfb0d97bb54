//! Long polls: woken by the event, 204 at the end of the wait and on
//! shutdown.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn a_create_wakes_a_waiting_claim() {
    let app = TestApp::spawn().await;
    let waiting =
        app.spawn_post("/tasks/claim", WORKER, json!({ "commands": ["wake"], "waitSeconds": 30 }));
    app.wait_for_long_polls(1).await;
    let id = app.create_simple("wake").await;
    let response = waiting.await.unwrap();
    assert_eq!(response.status(), 200);
    let task: serde_json::Value = response.json().await.unwrap();
    assert_eq!(task["id"], id.as_str());
}

#[tokio::test]
async fn a_create_of_another_command_does_not_satisfy_the_wait() {
    let app = TestApp::spawn().await;
    app.create_simple("other").await;
    let reply =
        app.post("/tasks/claim", WORKER, json!({ "commands": ["mine"], "waitSeconds": 1 })).await;
    assert_eq!(reply.status, 204);
    assert_eq!(reply.body, serde_json::Value::Null, "204 has no body");
}

#[tokio::test]
async fn waiters_of_every_command_are_woken_too() {
    let app = TestApp::spawn().await;
    let waiting =
        app.spawn_post("/tasks/claim/batch", WORKER, json!({ "waitSeconds": 30, "count": 5 }));
    app.wait_for_long_polls(1).await;
    app.create_simple("anything").await;
    let response = waiting.await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn shutdown_answers_pending_long_polls_with_204() {
    let app = TestApp::spawn().await;
    let waiting = app.spawn_post("/tasks/claim", WORKER, json!({ "waitSeconds": 30 }));
    app.wait_for_long_polls(1).await;
    app.stop().await;
    assert_eq!(waiting.await.unwrap().status(), 204);
}

#[tokio::test]
async fn claims_naming_many_unknown_commands_leave_nothing_behind() {
    let app = TestApp::spawn().await;
    // 40 claims of 100 made-up commands each: 4,000 names, none waiting.
    for round in 0..40 {
        let commands: Vec<String> = (0..100).map(|n| format!("junk-{round}-{n}")).collect();
        let claim = app.post("/tasks/claim", WORKER, json!({ "commands": commands })).await;
        assert_eq!(claim.status, 204, "{:?}", claim.body);
    }
    let kept = app.command_notifiers();
    assert!(kept <= 1100, "{kept} notifiers kept for claims that ended");
    let commands: Vec<String> = (0..101).map(|n| format!("c{n}")).collect();
    let too_many = app.post("/tasks/claim", WORKER, json!({ "commands": commands })).await;
    assert_eq!((too_many.status, too_many.code()), (400, "invalid_field"));
}
