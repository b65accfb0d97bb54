//! Artifact download: `GET /v1/codeq/tasks/:id/artifacts/:name` serves the
//! stored bytes, byte for byte, to the task's producer, its worker and
//! admins, and nothing once retention has deleted the task.

use base64::Engine;
use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

/// Bytes of every value, so that a text or encoding mix-up shows.
fn all_bytes() -> Vec<u8> {
    (0..=255u8).cycle().take(70_000).collect()
}

/// A completed task of `command` with one inline artifact; its id.
async fn completed_with_artifact(app: &TestApp, name: &str, bytes: &[u8]) -> String {
    let id = app.create_simple("art").await;
    app.claim_ok(WORKER, &["art"]).await;
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    let body = json!({
        "status": "COMPLETED",
        "result": {},
        "artifacts": [{ "name": name, "contentBase64": encoded, "contentType": "application/x-frames" }]
    });
    let done = app.post(&format!("/tasks/{id}/result"), WORKER, body).await;
    assert_eq!(done.status, 200, "{:?}", done.body);
    id
}

async fn download(
    app: &TestApp,
    path: &str,
    token: &str,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let response = app
        .http
        .get(format!("{}/v1/codeq{path}", app.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn an_artifact_comes_back_byte_for_byte_with_its_content_type() {
    let app = TestApp::spawn().await;
    let bytes = all_bytes();
    let id = completed_with_artifact(&app, "frames v2.bin", &bytes).await;
    let url = app.get(&format!("/tasks/{id}/result"), PRODUCER).await.body["result"]["artifacts"]
        [0]["url"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(url, format!("/v1/codeq/tasks/{id}/artifacts/frames%20v2.bin"));

    for token in [PRODUCER, WORKER, ADMIN] {
        let (status, headers, body) = download(&app, &url["/v1/codeq".len()..], token).await;
        assert_eq!(status, 200, "{token}");
        assert!(body == bytes, "{token}: the bytes differ");
        assert_eq!(headers["content-type"], "application/x-frames");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["content-disposition"], "attachment; filename*=UTF-8''frames%20v2.bin");
    }
}

#[tokio::test]
async fn the_stored_url_of_an_artifact_leads_to_it_whatever_its_name_holds() {
    let app = TestApp::spawn().await;
    for name in ["q?#%.txt", "a b+c&d=é.txt"] {
        let id = completed_with_artifact(&app, name, name.as_bytes()).await;
        let result = app.get(&format!("/tasks/{id}/result"), PRODUCER).await;
        let url = result.body["result"]["artifacts"][0]["url"].as_str().unwrap().to_string();
        assert!(!url.contains(['?', '#', ' ']), "{url}");

        let (status, _, body) = download(&app, &url["/v1/codeq".len()..], PRODUCER).await;
        assert_eq!(status, 200, "{name}: {url}");
        assert_eq!(body, name.as_bytes(), "{name}");
    }
}

#[tokio::test]
async fn only_its_producer_its_worker_and_admins_read_an_artifact() {
    let app = TestApp::spawn().await;
    let id = completed_with_artifact(&app, "out.bin", b"secret").await;
    let path = format!("/tasks/{id}/artifacts/out.bin");
    for token in [LIMITED_PRODUCER, WORKER2] {
        let reply = app.get(&path, token).await;
        assert_eq!((reply.status, reply.code()), (403, "not_owner"), "{token}");
    }
    for missing in ["other.bin", "a%2Fb", "%00"] {
        let reply = app.get(&format!("/tasks/{id}/artifacts/{missing}"), PRODUCER).await;
        assert_eq!((reply.status, reply.code()), (404, "artifact_not_found"), "{missing}");
    }
    let undecodable = app.get(&format!("/tasks/{id}/artifacts/%ff"), PRODUCER).await;
    assert_eq!(undecodable.status, 404);
    let unknown =
        app.get("/tasks/01890000-0000-7000-8000-000000000000/artifacts/out.bin", ADMIN).await;
    assert_eq!(unknown.status, 404);
}

#[tokio::test]
async fn retention_deletes_an_artifact_with_its_task() {
    // Cleanup by hand only (automatic cleanup also runs a pass at start).
    let no_automatic = |config: &mut codeq_server::config::Config| {
        config.retention_seconds = 0;
        config.cleanup_interval_seconds = 0;
    };
    let app = TestApp::spawn_with(no_automatic, false).await;
    let id = completed_with_artifact(&app, "gone.bin", b"bytes").await;
    let path = format!("/tasks/{id}/artifacts/gone.bin");
    assert_eq!(app.get(&path, PRODUCER).await.status, 200);
    let cleaned = app.post("/admin/tasks/cleanup", ADMIN, json!({})).await;
    assert_eq!(cleaned.body["deleted"], 1);
    assert_eq!(app.get(&path, PRODUCER).await.status, 404);
    assert!(!app.dir.path().join("artifacts").join(&id).exists(), "the files are deleted");
    let reply = app.call(Method::GET, &format!("/v1/codeq{path}"), Some(PRODUCER), None).await;
    assert_eq!(reply.code(), "artifact_not_found");
}

#[tokio::test]
async fn unsafe_or_repeated_artifact_names_and_oversized_bytes_are_refused_at_upload() {
    let app = TestApp::spawn_with(|config| config.max_artifact_bytes = 1000, false).await;
    let id = app.create_simple("art").await;
    app.claim_ok(WORKER, &["art"]).await;
    let long = "x".repeat(256);
    for name in ["..", ".", "a/b", "a\\b", "", long.as_str(), "tab\there", "nul\u{0}", "bell\u{7}"]
    {
        let body = json!({ "status": "COMPLETED", "result": {}, "artifacts": [{ "name": name, "contentBase64": "aGk=" }] });
        let reply = app.post(&format!("/tasks/{id}/result"), WORKER, body).await;
        assert_eq!((reply.status, reply.code()), (400, "invalid_artifact"), "{name:?}");
    }
    // One name twice: the second file would replace the first under one URL.
    for second in [
        json!({ "name": "out.txt", "contentBase64": "c2Vjb25k" }),
        json!({ "name": "out.txt", "url": "https://files.test/out.txt" }),
    ] {
        let body = json!({ "status": "COMPLETED", "result": {}, "artifacts": [{ "name": "out.txt", "contentBase64": "Zmlyc3Q=" }, second] });
        let reply = app.post(&format!("/tasks/{id}/result"), WORKER, body).await;
        assert_eq!((reply.status, reply.code()), (400, "invalid_artifact"), "{}", reply.body);
        assert!(
            reply.body["error"].as_str().unwrap().contains("\"out.txt\" appears twice"),
            "{}",
            reply.body
        );
    }
    // A content type the download could not send, or a URL without a host.
    for artifact in [
        json!({ "name": "a.html", "contentBase64": "aGk=", "contentType": "text/html\r\nX-Evil: 1" }),
        json!({ "name": "a.html", "url": "http://" }),
        json!({ "name": "a.html", "url": "http://a b/c" }),
    ] {
        let body = json!({ "status": "COMPLETED", "result": {}, "artifacts": [artifact] });
        let reply = app.post(&format!("/tasks/{id}/result"), WORKER, body).await;
        assert_eq!((reply.status, reply.code()), (400, "invalid_artifact"), "{artifact}");
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(vec![1u8; 1001]);
    let body = json!({ "status": "COMPLETED", "result": {}, "artifacts": [{ "name": "big", "contentBase64": encoded }] });
    let reply = app.post(&format!("/tasks/{id}/result"), WORKER, body).await;
    assert_eq!((reply.status, reply.code()), (413, "artifact_too_large"));
    assert_eq!(app.task(&id).await["status"], "IN_PROGRESS", "nothing refused was stored");
}

/// A result of `n` with one inline artifact `f` holding `bytes`.
fn result_with_bytes(n: u32, bytes: &[u8]) -> serde_json::Value {
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    json!({
        "status": "COMPLETED",
        "result": { "n": n },
        "artifacts": [{ "name": "f", "contentBase64": encoded }]
    })
}

#[tokio::test]
async fn a_refused_result_never_replaces_the_stored_results_files() {
    let app = TestApp::spawn().await;

    // One task twice in a batch: the second item is refused, writing nothing.
    let id = app.create_simple("twice").await;
    app.claim_ok(WORKER, &["twice"]).await;
    let mut first = result_with_bytes(1, b"ONE");
    first["taskId"] = json!(id);
    let mut second = result_with_bytes(2, b"TWO");
    second["taskId"] = json!(id);
    let batch =
        app.post("/tasks/batch/results", WORKER, json!({ "results": [first, second] })).await;
    assert_eq!(batch.body["results"][0]["result"]["result"], json!({ "n": 1 }), "{:?}", batch.body);
    assert_eq!(batch.body["results"][1]["code"], "invalid_field", "{:?}", batch.body);
    let (status, _, bytes) = download(&app, &format!("/tasks/{id}/artifacts/f"), ADMIN).await;
    assert_eq!((status, bytes.as_slice()), (200, b"ONE".as_slice()));

    // Two results of one delivery at once: whichever is stored, the file
    // is its own.
    for _ in 0..20 {
        let id = app.create_simple("race").await;
        app.claim_ok(WORKER, &["race"]).await;
        let path = format!("/tasks/{id}/result");
        let (one, two) = tokio::join!(
            app.post(&path, WORKER, result_with_bytes(1, b"ONE")),
            app.post(&path, WORKER, result_with_bytes(2, b"TWO")),
        );
        // Same outcome: the later one is answered with the stored record.
        assert_eq!((one.status, two.status), (200, 200), "{:?} {:?}", one.body, two.body);
        let stored = &one.body["result"];
        assert_eq!(stored, &two.body["result"], "both answers are the stored record");
        let expected: &[u8] = if stored["n"] == 1 { b"ONE" } else { b"TWO" };
        let (_, _, bytes) = download(&app, &format!("/tasks/{id}/artifacts/f"), ADMIN).await;
        assert_eq!(bytes, expected, "the stored result is {stored:?}");
    }
}

#[tokio::test]
async fn a_result_waiting_for_its_next_task_no_longer_holds_its_own() {
    let app = TestApp::spawn().await;
    let id = app.create_simple("held").await;
    app.claim_ok(WORKER, &["held"]).await;
    let path = format!("/tasks/{id}/result");
    let mut waiting = result_with_bytes(1, b"ONE");
    waiting["claimNext"] = json!({ "commands": ["nothing-here"], "waitSeconds": 5 });
    let request = app.http.post(format!("{}/v1/codeq{path}", app.base)).bearer_auth(WORKER);
    let first = tokio::spawn(async move { request.json(&waiting).send().await.unwrap() });
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while app.task(&id).await["status"] != "COMPLETED" {
        assert!(tokio::time::Instant::now() < deadline, "the result was not stored");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // The task is stored and the first call waits for a next task: a
    // repeat of the result is answered without waiting for that.
    let repeat = app.post(&path, WORKER, result_with_bytes(1, b"ONE")).await;
    assert_eq!(repeat.status, 200, "{:?}", repeat.body);
    assert!(!first.is_finished(), "the repeat waited for the first call's long poll");
    let first = first.await.unwrap();
    assert_eq!(first.status(), 200);
    let body: serde_json::Value = first.json().await.unwrap();
    assert!(body.get("next").is_none(), "{body}");
}

#[tokio::test]
async fn artifacts_of_tasks_deleted_before_a_stop_are_removed_at_the_next_start() {
    let app = TestApp::spawn().await;
    let kept = completed_with_artifact(&app, "kept.bin", b"still wanted").await;
    let dir = app.stop().await;
    // What a process stopped between a cleanup's delete and the removal of
    // the files leaves: the files of a task the store no longer has.
    let orphan = dir.path().join("artifacts").join(codeq_core::TaskId::generate().to_string());
    std::fs::create_dir_all(orphan.join("1")).unwrap();
    std::fs::write(orphan.join("1").join("out.bin"), b"left behind").unwrap();

    let app = TestApp::start(TestApp::config(dir.path()), dir, false).await;

    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while orphan.exists() {
        assert!(tokio::time::Instant::now() < deadline, "the orphaned files were never removed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let path = format!("/v1/codeq/tasks/{kept}/artifacts/kept.bin");
    let reply = app.call(Method::GET, &path, Some(PRODUCER), None).await;
    assert_eq!(reply.status, 200, "a live task's files stay");
}

/// A result body with a small inline artifact `first`, then as many bytes
/// again as the body limit allows, in four files (writing them takes a
/// while: room for a cancel or a client that leaves).
fn slow_result() -> serde_json::Value {
    let big = base64::engine::general_purpose::STANDARD.encode(vec![9u8; 2 * 1024 * 1024]);
    let mut artifacts = vec![json!({ "name": "first", "contentBase64": "Zmlyc3Q=" })];
    artifacts.extend((0..4).map(|n| json!({ "name": format!("big{n}"), "contentBase64": big })));
    json!({ "status": "COMPLETED", "result": {}, "artifacts": artifacts })
}

/// Waits (up to 20 s) until `done` holds.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_files_of_a_result_refused_after_they_were_written_are_removed() {
    let app = TestApp::spawn().await;
    let (mut refused, mut stored) = (0, 0);
    // The producer cancels while the worker's files are being written:
    // the store refuses the result. Whichever wins, no file stays that
    // no stored result lists.
    while refused < 2 && refused + stored < 20 {
        let id = app.create_simple("cancelled-midway").await;
        app.claim_ok(WORKER, &["cancelled-midway"]).await;
        let delivery = app.dir.path().join("artifacts").join(&id).join("1");
        let path = format!("/tasks/{id}/result");
        let submitted = Box::pin(app.post(&path, WORKER, slow_result()));
        let cancel = Box::pin(async {
            until("the first file is written", || delivery.join("first").exists()).await;
            app.post(&format!("/tasks/{id}/cancel"), PRODUCER, json!({})).await
        });
        let (submitted, cancelled) = tokio::join!(submitted, cancel);
        if submitted.status == 200 {
            stored += 1;
            assert_eq!(cancelled.code(), "task_terminal", "{:?}", cancelled.body);
            assert!(delivery.join("big3").exists(), "the stored result's files stay");
        } else {
            refused += 1;
            assert_eq!(submitted.code(), "task_cancelled", "{:?}", submitted.body);
            until("the refused result's files are removed", || !delivery.exists()).await;
        }
    }
    assert!(refused > 0, "the cancel never landed while the files were written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_files_of_a_result_whose_client_left_midway_are_removed() {
    let app = TestApp::spawn().await;
    let mut left = 0;
    for _ in 0..20 {
        let id = app.create_simple("left-midway").await;
        app.claim_ok(WORKER, &["left-midway"]).await;
        let delivery = app.dir.path().join("artifacts").join(&id).join("1");
        let request = app
            .http
            .post(format!("{}/v1/codeq/tasks/{id}/result", app.base))
            .bearer_auth(WORKER)
            .json(&slow_result());
        let sending = tokio::spawn(request.send());
        until("the first file is written", || delivery.join("first").exists()).await;
        sending.abort();
        // The server finishes what it started: the result stored with its
        // files, or not stored and its files removed.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        let stored = loop {
            if app.task(&id).await["status"] == "COMPLETED" {
                break true;
            }
            if !delivery.exists() {
                break false;
            }
            assert!(tokio::time::Instant::now() < deadline, "neither stored nor removed");
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        };
        if stored {
            assert!(delivery.join("big3").exists(), "the stored result's files stay");
        } else {
            left += 1;
            assert_eq!(app.task(&id).await["status"], "IN_PROGRESS");
        }
        if left == 2 {
            break;
        }
    }
    assert!(left > 0, "the client never left while the files were written");
}

#[tokio::test]
async fn a_result_lists_at_most_a_hundred_artifacts() {
    let app = TestApp::spawn().await;
    let id = app.create_simple("many").await;
    app.claim_ok(WORKER, &["many"]).await;
    let listed = |n: usize| -> Vec<serde_json::Value> {
        (0..n).map(|i| json!({ "name": format!("a{i}"), "url": "https://files.test/a" })).collect()
    };
    let body = json!({ "status": "COMPLETED", "result": {}, "artifacts": listed(101) });
    let reply = app.post(&format!("/tasks/{id}/result"), WORKER, body).await;
    assert_eq!((reply.status, reply.code()), (400, "invalid_artifact"), "{:?}", reply.body);
    assert!(reply.body["error"].as_str().unwrap().contains("at most 100"), "{:?}", reply.body);
    let body = json!({ "status": "COMPLETED", "result": {}, "artifacts": listed(100) });
    assert_eq!(app.post(&format!("/tasks/{id}/result"), WORKER, body).await.status, 200);
}

#[tokio::test]
async fn a_batch_of_results_carries_at_most_a_thousand_inline_artifacts() {
    let app = TestApp::spawn().await;
    let item = |n: usize| {
        let artifacts: Vec<serde_json::Value> =
            (0..100).map(|i| json!({ "name": format!("a{i}"), "contentBase64": "YQ==" })).collect();
        let id = format!("01890000-0000-7000-8000-{n:012}");
        json!({ "taskId": id, "status": "COMPLETED", "result": {}, "artifacts": artifacts })
    };
    let items: Vec<serde_json::Value> = (0..11).map(item).collect();
    let reply = app.post("/tasks/batch/results", WORKER, json!({ "results": items })).await;
    assert_eq!((reply.status, reply.code()), (400, "invalid_artifact"), "{:?}", reply.body);
    assert!(reply.body["error"].as_str().unwrap().contains("1100 inline artifacts"));
    // Ten such items pass the bound (each is then refused on its own: no such task).
    let items: Vec<serde_json::Value> = (0..10).map(item).collect();
    let reply = app.post("/tasks/batch/results", WORKER, json!({ "results": items })).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.body["results"][9]["code"], "task_not_found");
}
