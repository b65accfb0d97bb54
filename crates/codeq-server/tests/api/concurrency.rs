//! Many workers at once: every task is delivered exactly once.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_claimers_get_each_of_two_thousand_tasks_exactly_once() {
    let app = TestApp::spawn().await;
    for batch in 0..20 {
        let tasks: Vec<Value> = (0..100)
            .map(|i| json!({ "command": "race", "payload": { "n": batch * 100 + i } }))
            .collect();
        assert_eq!(app.post("/tasks/batch", PRODUCER, json!({ "tasks": tasks })).await.status, 200);
    }
    let mut workers = Vec::new();
    for _ in 0..32 {
        let (http, base) = (app.http.clone(), app.base.clone());
        workers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let claim = http
                    .post(format!("{base}/v1/codeq/tasks/claim"))
                    .bearer_auth(WORKER)
                    .json(&json!({ "commands": ["race"] }))
                    .send()
                    .await
                    .unwrap();
                if claim.status() == 204 {
                    return got;
                }
                let task: Value = claim.json().await.unwrap();
                let id = task["id"].as_str().unwrap().to_string();
                let done = http
                    .post(format!("{base}/v1/codeq/tasks/{id}/result"))
                    .bearer_auth(WORKER)
                    .json(&json!({ "status": "COMPLETED", "result": { "by": "w" }, "attempt": task["attempts"] }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(done.status(), 200);
                got.push(id);
            }
        }));
    }
    let mut deliveries: HashMap<String, usize> = HashMap::new();
    for worker in workers {
        for id in worker.await.unwrap() {
            *deliveries.entry(id).or_default() += 1;
        }
    }
    assert_eq!(deliveries.len(), 2000);
    assert!(deliveries.values().all(|&n| n == 1), "a task was delivered twice");
    let stats = app.get("/admin/queues/race", ADMIN).await.body;
    assert_eq!(
        stats,
        json!({ "command": "race", "ready": 0, "delayed": 0, "inProgress": 0, "dlq": 0, "paused": false })
    );
}
