//! The server's log as an operator reads it: the real binary at the most
//! verbose level, in both formats. Each request leaves one line with its
//! id, method, route template, status and latency; no token and no
//! payload or result ever reaches the log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

const PRODUCER_TOKEN: &str = "producer-SECRET-4f1d2c";
const WORKER_TOKEN: &str = "worker-SECRET-8e0b7a";
const WRONG_TOKEN: &str = "wrong-SECRET-19c3aa";
const PAYLOAD_MARKER: &str = "PAYLOAD-MARKER-5521";
const RESULT_MARKER: &str = "RESULT-MARKER-9034";
const REASON_MARKER: &str = "REASON-MARKER-7310";

/// Starts `codeq serve` with static tokens, `logLevel: trace` and
/// `format`, logging to `<dir>/stderr.log`; returns it and its base URL.
/// The request head timeout is 1 s.
fn serve(dir: &Path, format: &str) -> (Child, String) {
    let config = format!(
        "port: 0\nlogLevel: trace\nlogFormat: {format}\nrequestHeadTimeoutSeconds: 1\n\
         dataDir: {data}\nstaticTokens:\n  \
         - {{token: {PRODUCER_TOKEN}, kind: producer, sub: p1, admin: true}}\n  \
         - {{token: {WORKER_TOKEN}, kind: worker, sub: w1}}\n",
        data = dir.join("data").display()
    );
    std::fs::write(dir.join("codeq.yaml"), config).unwrap();
    let stderr = std::fs::File::create(dir.join("stderr.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_codeq"))
        .args(["serve", "--config"])
        .arg(dir.join("codeq.yaml"))
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let banner = BufReader::new(child.stdout.take().unwrap()).lines().next().unwrap().unwrap();
    let base = banner.split_whitespace().find(|word| word.starts_with("http://")).unwrap();
    (child, base.to_string())
}

fn stop(mut child: Child, dir: &Path) -> String {
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(child.wait().unwrap().success());
    std::fs::read_to_string(dir.join("stderr.log")).unwrap()
}

/// Drives a task through create, claim, nack, claim and result, plus a
/// refused token and an unknown route; returns the id the server made
/// for the one request sent without `X-Request-Id`.
async fn traffic(base: &str) -> String {
    let http = reqwest::Client::new();
    let post = |path: &str, token: &str, id: &str, body: Value| {
        http.post(format!("{base}/v1/codeq{path}"))
            .bearer_auth(token)
            .header("x-request-id", id)
            .json(&body)
    };
    let created = post(
        "/tasks",
        PRODUCER_TOKEN,
        "req-create-1",
        json!({
            "command": "LOGS", "payload": { "secret": PAYLOAD_MARKER }
        }),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(created.status(), 202);
    assert_eq!(created.headers()["x-request-id"], "req-create-1", "the id is echoed");
    let task: Value = created.json().await.unwrap();
    let id = task["id"].as_str().unwrap();
    let claim = json!({ "commands": ["LOGS"] });
    assert_eq!(
        post("/tasks/claim", WORKER_TOKEN, "req-claim-1", claim.clone())
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let nack = json!({ "delaySeconds": 0, "reason": REASON_MARKER });
    assert_eq!(
        post(&format!("/tasks/{id}/nack"), WORKER_TOKEN, "req-nack-1", nack)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        post("/tasks/claim", WORKER_TOKEN, "req-claim-2", claim).send().await.unwrap().status(),
        200
    );
    let result = json!({ "status": "COMPLETED", "result": { "out": RESULT_MARKER } });
    let stored = post(&format!("/tasks/{id}/result"), WORKER_TOKEN, "req-result-1", result);
    assert_eq!(stored.send().await.unwrap().status(), 200);
    let items: Vec<Value> = (0..3)
        .map(|n| json!({ "taskId": format!("0196a3c2-6a00-7c11-8d22-0e1f2a3b4c5{n}"), "status": "COMPLETED", "result": {} }))
        .collect();
    let batch =
        post("/tasks/batch/results", WORKER_TOKEN, "req-batch-1", json!({ "results": items }));
    assert_eq!(batch.send().await.unwrap().status(), 200);
    let refused = post("/tasks", WRONG_TOKEN, "req-refused-1", json!({ "command": "LOGS" }));
    assert_eq!(refused.send().await.unwrap().status(), 401);
    let unknown = http.get(format!("{base}/v1/codeq/no/{PAYLOAD_MARKER}")).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
    let generated = unknown.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(generated.len(), 36, "a UUID when the client sent none: {generated}");
    generated
}

fn assert_nothing_secret(log: &str) {
    for secret in
        [PRODUCER_TOKEN, WORKER_TOKEN, WRONG_TOKEN, PAYLOAD_MARKER, RESULT_MARKER, REASON_MARKER]
    {
        assert!(!log.contains(secret), "{secret} reached the log:\n{log}");
    }
    assert!(
        !log.to_ascii_lowercase().contains("bearer "),
        "an Authorization value reached the log"
    );
}

/// The request lines of the JSON log, by request id.
fn request_lines(log: &str) -> Vec<Value> {
    log.lines()
        .map(|line| {
            serde_json::from_str::<Value>(line).unwrap_or_else(|_| panic!("not JSON: {line}"))
        })
        .filter(|line| line["fields"]["message"] == "request")
        .collect()
}

fn line_of<'a>(lines: &'a [Value], request_id: &str) -> &'a Value {
    let found: Vec<&Value> =
        lines.iter().filter(|line| line["span"]["request_id"] == request_id).collect();
    assert_eq!(found.len(), 1, "one line per request ({request_id})");
    found[0]
}

#[tokio::test]
async fn json_logs_have_one_line_per_request_with_its_id_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let (child, base) = serve(dir.path(), "json");
    let generated = traffic(&base).await;
    let log = stop(child, dir.path());

    assert_nothing_secret(&log);
    let lines = request_lines(&log);
    let created = line_of(&lines, "req-create-1");
    assert_eq!(created["span"]["method"], "POST");
    assert_eq!(created["span"]["route"], "/v1/codeq/tasks");
    assert_eq!(created["fields"]["status"], 202);
    assert!(created["fields"]["latency_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(created["level"], "INFO");
    let nacked = line_of(&lines, "req-nack-1");
    assert_eq!(nacked["span"]["route"], "/v1/codeq/tasks/{id}/nack", "the template, not the path");
    // Who did it, and to which task.
    let task = created["fields"]["task_id"].as_str().unwrap();
    assert_eq!(task.len(), 36, "the created task's id: {created}");
    assert_eq!((&created["fields"]["sub"], &nacked["fields"]["sub"]), (&json!("p1"), &json!("w1")));
    assert_eq!(nacked["fields"]["task_id"], task, "the task the path names");
    assert_eq!(line_of(&lines, "req-claim-1")["fields"]["task_id"], task, "the task claimed");
    let refused = line_of(&lines, "req-refused-1");
    assert!(refused["fields"].get("sub").is_none(), "no caller: {refused}");
    let batch = line_of(&lines, "req-batch-1");
    assert!(batch["fields"].get("task_id").is_none(), "a batch's tasks are not listed: {batch}");
    for line in log.lines() {
        assert!(line.matches("\"task_id\"").count() <= 1, "a field twice: {line}");
    }
    assert_eq!(
        (&refused["fields"]["status"], &refused["fields"]["code"]),
        (&json!(401), &json!("invalid_token"))
    );
    let unknown = line_of(&lines, &generated);
    assert_eq!(unknown["span"]["route"], "unmatched");
    assert_eq!(unknown["fields"]["code"], "route_not_found");

    // Each state change at debug, on the line of the request that made it.
    let changes = state_changes(&log, task);
    let steps: Vec<(&str, &str)> = changes
        .iter()
        .map(|line| {
            (
                line["span"]["request_id"].as_str().unwrap(),
                line["fields"]["message"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("req-create-1", "task created"),
            ("req-claim-1", "task claimed"),
            ("req-nack-1", "task nacked, to retry"),
            ("req-claim-2", "task claimed"),
            ("req-result-1", "task finished"),
        ]
    );
    assert_eq!(
        (&changes[3]["fields"]["attempt"], &changes[3]["fields"]["worker"]),
        (&json!(2), &json!("w1"))
    );
    assert_eq!(changes[4]["fields"]["status"], "COMPLETED");
}

/// The debug lines of the JSON log about `task`'s state.
fn state_changes(log: &str, task: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["level"] == "DEBUG" && line["fields"]["task_id"] == task)
        .collect()
}

#[tokio::test]
async fn text_logs_written_to_a_file_carry_no_colours_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let (child, base) = serve(dir.path(), "text");
    traffic(&base).await;
    let log = stop(child, dir.path());

    assert_nothing_secret(&log);
    assert!(!log.contains('\u{1b}'), "no ANSI escapes when stderr is not a terminal");
    let created: Vec<&str> =
        log.lines().filter(|line| line.contains("request_id=\"req-create-1\"")).collect();
    let line = created
        .iter()
        .find(|line| line.contains(" request status="))
        .unwrap_or_else(|| panic!("{created:#?}"));
    for part in [
        "INFO",
        "method=\"POST\"",
        "route=\"/v1/codeq/tasks\"}",
        "sub=\"p1\" task_id=",
        "status=202",
        "latency_ms=",
    ] {
        assert!(line.contains(part), "{part} missing: {line}");
    }
}

#[tokio::test]
async fn a_request_head_that_never_arrives_leaves_a_line_with_the_id_of_its_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().unwrap();
    let (child, base) = serve(dir.path(), "json");
    let address = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n").await.unwrap();
    let mut answer = String::new();
    // The server closes the connection after its 408.
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        stream.read_to_string(&mut answer),
    );
    read.await.unwrap().unwrap();
    let log = stop(child, dir.path());

    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    let request_id = answer
        .lines()
        .find_map(|line| line.strip_prefix("x-request-id: "))
        .unwrap_or_else(|| panic!("no request id: {answer}"));
    let line = line_of(&request_lines(&log), request_id).clone();
    assert_eq!(line["target"], "codeq_server::http::observe", "{line}");
    assert_eq!(line["span"]["route"], "unmatched");
    assert_eq!(
        (&line["fields"]["status"], &line["fields"]["code"]),
        (&json!(408), &json!("request_timeout"))
    );
    assert_eq!(line["fields"]["latency_ms"], 1000.0);
}

#[tokio::test]
async fn heads_the_parser_refuses_leave_a_line_each_and_are_counted() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().unwrap();
    let (child, base) = serve(dir.path(), "json");
    let address = base.trim_start_matches("http://").to_string();
    let send = |head: Vec<u8>| {
        let address = address.clone();
        async move {
            let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
            stream.write_all(&head).await.unwrap();
            let mut answer = Vec::new();
            let read = stream.read_to_end(&mut answer);
            tokio::time::timeout(std::time::Duration::from_secs(30), read).await.unwrap().unwrap();
            String::from_utf8_lossy(&answer).into_owned()
        }
    };
    let garbage = send(b"GARBAGE\r\n\r\n".to_vec()).await;
    let mut large = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: ".to_vec();
    large.extend(std::iter::repeat_n(b'a', 200 * 1024));
    large.extend_from_slice(b"\r\n\r\n");
    let too_large = send(large).await;
    let mut long_uri = b"GET /".to_vec();
    long_uri.extend(std::iter::repeat_n(b'a', 70 * 1024));
    long_uri.extend_from_slice(b" HTTP/1.1\r\nHost: t\r\n\r\n");
    let uri_too_long = send(long_uri).await;
    let metrics = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    let log = stop(child, dir.path());

    assert!(garbage.starts_with("HTTP/1.1 400 "), "{garbage}");
    assert!(too_large.starts_with("HTTP/1.1 431 "), "{too_large}");
    assert!(uri_too_long.starts_with("HTTP/1.1 414 "), "{uri_too_long}");
    let lines = request_lines(&log);
    let refused = [(400, "malformed_request"), (414, "uri_too_long"), (431, "headers_too_large")];
    for (status, code) in refused {
        let found = lines.iter().filter(|line| line["fields"]["status"] == status).count();
        assert_eq!(found, 1, "one line for the {status}:\n{log}");
        let line = lines.iter().find(|line| line["fields"]["status"] == status).unwrap();
        assert_eq!(
            (&line["fields"]["code"], &line["span"]["route"]),
            (&json!(code), &json!("unmatched"))
        );
        let series = format!(
            "codeq_http_requests_total{{method=\"OTHER\",route=\"unmatched\",status=\"{status}\"}} 1"
        );
        assert!(metrics.contains(&series), "{series} missing:\n{metrics}");
    }
}

#[tokio::test]
async fn a_request_whose_client_leaves_before_its_answer_leaves_a_line_and_is_counted() {
    use tokio::io::AsyncWriteExt;

    let dir = tempfile::tempdir().unwrap();
    let (child, base) = serve(dir.path(), "json");
    let address = base.trim_start_matches("http://");
    let body = json!({ "commands": ["GONE"], "waitSeconds": 20 }).to_string();
    let head = format!(
        "POST /v1/codeq/tasks/claim HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {WORKER_TOKEN}\r\n\
         Content-Type: application/json\r\nX-Request-Id: req-gone-1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let metric = |name: &'static str| {
        let base = base.clone();
        async move {
            let text = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
            text.lines().find(|line| line.starts_with(name)).map(str::to_owned)
        }
    };
    // The claim parks in its long poll; then its client goes away.
    while metric("codeq_long_polls_waiting ").await.as_deref() != Some("codeq_long_polls_waiting 1")
    {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(stream);
    let counted =
        "codeq_http_requests_total{method=\"POST\",route=\"/v1/codeq/tasks/claim\",status=\"499\"}";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while metric(counted).await.is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the request that lost its client is never counted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let log = stop(child, dir.path());

    let line = line_of(&request_lines(&log), "req-gone-1").clone();
    assert_eq!(
        (&line["fields"]["status"], &line["fields"]["code"], &line["fields"]["sub"]),
        (&json!(499), &json!("client_gone"), &json!("w1")),
        "{line}"
    );
    assert!(
        line["fields"]["latency_ms"].as_f64().unwrap() < 20_000.0,
        "not the whole wait: {line}"
    );
}
