//! The front door under abuse: slow and idle connections, the connection
//! cap, oversized and slow bodies, the budget of bodies in flight, and
//! request heads HTTP refuses. Misbehaving clients are raw sockets; the
//! timeouts under test are configured at 1 s so the suite stays quick.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::helpers::*;

/// The bound on anything a test waits for: far above the 1 s timeouts
/// configured here, so it only trips when the server does not act at all.
const WITHIN: Duration = Duration::from_secs(10);

/// A client on a raw socket.
struct Raw {
    reader: OwnedReadHalf,
    writer: Option<OwnedWriteHalf>,
    received: Vec<u8>,
}

/// A response read from a raw socket.
#[derive(Debug)]
struct RawReply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawReply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_string()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, value)| value.as_str())
    }

    /// Asserts a JSON error with a message and this status and code.
    fn assert_error(&self, status: u16, code: &str) {
        assert_eq!((self.status, self.code().as_str()), (status, code), "{self:?}");
        assert_eq!(self.header("content-type"), Some("application/json"));
        assert!(self.json()["error"].as_str().is_some_and(|e| !e.is_empty()), "{self:?}");
    }
}

impl Raw {
    async fn connect(app: &TestApp) -> Self {
        let (reader, writer) = TcpStream::connect(app.address()).await.unwrap().into_split();
        Self { reader, writer: Some(writer), received: Vec::new() }
    }

    async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.writer.as_mut().unwrap().write_all(bytes.as_ref()).await.unwrap();
    }

    /// Hands the sending side to another task.
    fn take_writer(&mut self) -> OwnedWriteHalf {
        self.writer.take().unwrap()
    }

    /// Reads what arrives next; false once the server closed the connection.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        let read = tokio::time::timeout(WITHIN, self.reader.read(&mut chunk))
            .await
            .expect("the server neither answered nor closed the connection");
        match read {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.received.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Reads one response (interim `1xx` ones included).
    async fn response(&mut self) -> RawReply {
        let head_end = loop {
            if let Some(at) = self.received.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            let open = self.fill().await;
            assert!(
                open,
                "closed without a response: {:?}",
                String::from_utf8_lossy(&self.received)
            );
        };
        let head = String::from_utf8(self.received[..head_end].to_vec()).unwrap();
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .map(|line| {
                let (name, value) = line.split_once(':').unwrap();
                (name.trim().to_ascii_lowercase(), value.trim().to_string())
            })
            .collect();
        let length: usize = headers
            .iter()
            .find(|(name, _)| name == "content-length")
            .map_or(0, |(_, value)| value.parse().unwrap());
        let end = head_end + 4 + length;
        while self.received.len() < end {
            assert!(self.fill().await, "closed in the middle of a response body");
        }
        let body = self.received[head_end + 4..end].to_vec();
        self.received.drain(..end);
        RawReply { status, headers, body }
    }

    /// Waits until the server closes the connection; returns what came
    /// before the close.
    async fn closed(&mut self) -> Vec<u8> {
        while self.fill().await {}
        std::mem::take(&mut self.received)
    }
}

/// Sends `bytes` every `every` (600 times at most) until the connection
/// refuses them: a client that never pauses long.
fn trickle(
    mut writer: OwnedWriteHalf,
    bytes: &'static [u8],
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for _ in 0..600 {
            if writer.write_all(bytes).await.is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
    })
}

/// Waits until `condition` holds.
async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WITHIN;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n")
}

fn post_head(path: &str, token: &str, length: usize, extra: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n{extra}\r\n"
    )
}

#[tokio::test]
async fn a_slow_header_client_is_disconnected_after_the_head_timeout_while_others_are_served() {
    let app = TestApp::spawn_with(|config| config.request_head_timeout_seconds = 1, false).await;
    let mut slow = Raw::connect(&app).await;
    slow.send("GET /healthz HTTP/1.1\r\nHost: test\r\n").await;
    // One header line every 200 ms, for far longer than the test waits:
    // only a head timeout that trickling does not extend ends it in time.
    let trickle = trickle(slow.take_writer(), b"X-Slow: 1\r\n", Duration::from_millis(200));

    app.assert_healthy().await;

    let reply = slow.response().await;
    reply.assert_error(408, "request_timeout");
    // No request was parsed to take an id from: the answer makes one.
    let request_id = reply.header("x-request-id").unwrap_or_default();
    assert!(uuid::Uuid::parse_str(request_id).is_ok(), "{reply:?}");
    slow.closed().await;
    let metrics = app.http.get(format!("{}/metrics", app.base)).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    let counted = r#"codeq_http_requests_total{method="OTHER",route="unmatched",status="408"} 1"#;
    assert!(metrics.lines().any(|line| line == counted), "{metrics}");
    tokio::time::timeout(WITHIN, trickle).await.unwrap().unwrap();
    app.assert_healthy().await;
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_head_timeout_without_an_answer() {
    let app = TestApp::spawn_with(
        |config| {
            config.request_head_timeout_seconds = 1;
            config.keep_alive_timeout_seconds = 60;
        },
        false,
    )
    .await;
    let mut silent = Raw::connect(&app).await;
    assert_eq!(silent.closed().await, b"", "nothing to answer, nothing sent");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout() {
    let app = TestApp::spawn_with(
        |config| {
            // A head timeout beyond the test's patience: only the
            // keep-alive timeout can close the connection in time.
            config.request_head_timeout_seconds = 60;
            config.keep_alive_timeout_seconds = 1;
        },
        false,
    )
    .await;
    let mut client = Raw::connect(&app).await;
    for _ in 0..2 {
        client.send(get("/healthz")).await;
        assert_eq!(client.response().await.status, 200, "kept alive between requests");
    }
    assert_eq!(client.closed().await, b"");
}

#[tokio::test]
async fn a_long_poll_outlives_the_head_and_keep_alive_timeouts() {
    let app = TestApp::spawn_with(
        |config| {
            config.request_head_timeout_seconds = 1;
            config.keep_alive_timeout_seconds = 1;
        },
        false,
    )
    .await;
    let polled =
        app.post("/tasks/claim", WORKER, json!({ "commands": ["none"], "waitSeconds": 3 }));
    assert_eq!(polled.await.status, 204, "answered at the end of its wait, not cut off");

    let waiting =
        app.spawn_post("/tasks/claim", WORKER, json!({ "commands": ["late"], "waitSeconds": 30 }));
    app.wait_for_long_polls(1).await;
    let id = app.create_simple("late").await;
    let claimed: Value = waiting.await.unwrap().json().await.unwrap();
    assert_eq!(claimed["id"], id.as_str());
}

#[tokio::test]
async fn a_flood_of_half_open_connections_up_to_the_cap_does_not_stop_a_legitimate_client() {
    let cap = 20;
    let app = TestApp::spawn_with(
        |config| {
            config.max_connections = cap as u32;
            config.request_head_timeout_seconds = 1;
        },
        false,
    )
    .await;
    let half_head = "GET /v1/codeq/admin/queues HTTP/1.1\r\nHost: test\r\n";
    let mut flood = Vec::new();
    for _ in 0..cap {
        let mut raw = Raw::connect(&app).await;
        raw.send(half_head).await;
        flood.push(raw);
    }
    wait_until("the flood fills the cap", || app.open_connections() == cap).await;
    // More of the flood, waiting in the backlog ahead of the client.
    for _ in 0..5 {
        let mut raw = Raw::connect(&app).await;
        raw.send(half_head).await;
        flood.push(raw);
    }

    let client = reqwest::Client::builder().timeout(WITHIN).build().unwrap();
    let reply = client
        .get(format!("{}/v1/codeq/admin/queues", app.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);

    for raw in &mut flood {
        raw.response().await.assert_error(408, "request_timeout");
        raw.closed().await;
    }
}

#[tokio::test]
async fn connections_idle_at_the_cap_make_room_for_a_new_client() {
    let cap = 5;
    let app = TestApp::spawn_with(|config| config.max_connections = cap as u32, false).await;
    // Clients that keep their connection after one request (keep-alive
    // 60 s) and send nothing more.
    let mut idle = Vec::new();
    for _ in 0..cap {
        let mut raw = Raw::connect(&app).await;
        raw.send("GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n").await;
        assert_eq!(raw.response().await.status, 200);
        idle.push(raw);
    }
    wait_until("the idle clients fill the cap", || app.open_connections() == cap).await;
    let client = reqwest::Client::builder().timeout(WITHIN).build().unwrap();
    let reply = client.get(format!("{}/healthz", app.base)).send().await.unwrap();
    assert_eq!(reply.status(), 200, "a new client waited for a keep-alive timeout");
    for raw in &mut idle {
        raw.closed().await;
    }
}

#[tokio::test]
async fn an_oversized_content_length_gets_413_before_any_body_is_sent() {
    // A server that waited for the body would not answer within WITHIN.
    let app = TestApp::spawn_with(|config| config.body_read_timeout_seconds = 60, false).await;
    let head = post_head("/v1/codeq/tasks", PRODUCER, 1_000_000_000_000, "");
    let mut client = Raw::connect(&app).await;
    client.send(head).await;
    client.response().await.assert_error(413, "body_too_large");

    let expecting =
        post_head("/v1/codeq/tasks/batch", PRODUCER, 1 << 30, "Expect: 100-continue\r\n");
    let mut client = Raw::connect(&app).await;
    client.send(expecting).await;
    let reply = client.response().await;
    reply.assert_error(413, "body_too_large");
    assert!(reply.json()["error"].as_str().unwrap().contains("1073741824 bytes"), "{reply:?}");
}

#[tokio::test]
async fn a_client_that_sends_a_refused_body_anyway_reads_its_413() {
    let app = TestApp::spawn().await;
    // Most clients write the whole body before reading: a server that
    // closed at once would make these writes fail (broken pipe, reset).
    let length = 16 * 1024 * 1024;
    let mut client = Raw::connect(&app).await;
    client.send(post_head("/v1/codeq/tasks", PRODUCER, length, "")).await;
    let chunk = vec![b' '; 64 * 1024];
    for _ in 0..length / chunk.len() {
        client.send(&chunk).await;
    }
    client.response().await.assert_error(413, "body_too_large");
}

#[tokio::test]
async fn a_refused_body_sent_slowly_is_not_read_for_long() {
    // A refused body is read for the body read timeout at most (1 s
    // here), whatever its length would allow at the minimum rate.
    let app = TestApp::spawn_with(|config| config.body_read_timeout_seconds = 1, false).await;
    let mut client = Raw::connect(&app).await;
    client.send(post_head("/v1/codeq/tasks", PRODUCER, 16 * 1024 * 1024, "")).await;
    // A byte every 200 ms: never a pause long enough to time out.
    let trickle = trickle(client.take_writer(), b" ", Duration::from_millis(200));
    let started = tokio::time::Instant::now();
    client.response().await.assert_error(413, "body_too_large");
    assert!(started.elapsed() < Duration::from_secs(5), "read for {:?}", started.elapsed());
    trickle.abort();
}

#[tokio::test]
async fn expect_100_continue_within_the_limit_gets_continue_then_the_answer() {
    let app = TestApp::spawn().await;
    let body = json!({ "command": "expect", "payload": { "n": 1 } }).to_string();
    let mut client = Raw::connect(&app).await;
    client
        .send(post_head("/v1/codeq/tasks", PRODUCER, body.len(), "Expect: 100-continue\r\n"))
        .await;
    assert_eq!(client.response().await.status, 100);
    client.send(&body).await;
    let created = client.response().await;
    assert_eq!(created.status, 202, "{created:?}");
    assert_eq!(created.json()["command"], "expect");
}

#[tokio::test]
async fn a_body_that_stops_arriving_gets_408_and_the_connection_closes() {
    let app = TestApp::spawn_with(|config| config.body_read_timeout_seconds = 1, false).await;
    let mut client = Raw::connect(&app).await;
    client.send(post_head("/v1/codeq/tasks", PRODUCER, 100, "")).await;
    client.send(r#"{"command":"#).await;
    let reply = client.response().await;
    reply.assert_error(408, "body_timeout");
    assert_eq!(reply.header("connection"), Some("close"));
    client.closed().await;
}

#[tokio::test]
async fn bodies_beyond_the_budget_in_flight_get_503_until_it_frees() {
    // Small item limits: the largest route takes 6,690,000 bytes, and the
    // budget is just that.
    let app = TestApp::spawn_with(
        |config| {
            config.max_payload_bytes = 1024;
            config.max_artifact_bytes = 1024;
            config.max_body_bytes_in_flight = 6_690_000;
        },
        false,
    )
    .await;
    // A worker sends most of a batch of results that takes nearly all of
    // it (a body holds budget for what it sent, not what it promised).
    let mut large = Raw::connect(&app).await;
    large.send(post_head("/v1/codeq/tasks/batch/results", WORKER, 6_600_000, "")).await;
    large.send(r#"{"results":["#).await;
    large.send(" ".repeat(6_500_000)).await;

    let tasks: Vec<Value> =
        (0..100).map(|n| json!({ "command": "b", "payload": { "n": n } })).collect();
    let batch = json!({ "tasks": tasks, "pad": "x".repeat(100_000) });
    let send_batch = || app.post("/tasks/batch", PRODUCER, batch.clone());
    let mut refused = send_batch().await;
    let deadline = tokio::time::Instant::now() + WITHIN;
    while refused.status == 200 && tokio::time::Instant::now() < deadline {
        refused = send_batch().await; // until the large body holds its share
    }
    assert_eq!((refused.status, refused.code()), (503, "overloaded"), "{:?}", refused.body);
    assert_eq!(refused.headers["retry-after"], "1");
    assert_eq!(
        app.post("/tasks", PRODUCER, json!({ "command": "b", "payload": {} })).await.status,
        202,
        "small bodies still fit"
    );

    drop(large);
    let mut accepted = send_batch().await;
    while accepted.status == 503 && tokio::time::Instant::now() < deadline {
        accepted = send_batch().await; // until the server noticed the client left
    }
    assert_eq!(accepted.status, 200, "{:?}", accepted.body);
}

#[tokio::test]
async fn bodies_promised_large_and_sent_a_byte_at_a_time_hold_no_budget_and_are_cut_off() {
    let app = TestApp::spawn_with(|config| config.body_read_timeout_seconds = 1, false).await;
    // Two results batches that together declare the whole 2 GiB budget
    // (the route's limit, and the rest), sent a byte every 100 ms: never a
    // pause of a second, and years at that rate.
    let mut slow = Vec::new();
    for length in [1_404_654_800, 742_828_032] {
        let mut raw = Raw::connect(&app).await;
        raw.send(post_head("/v1/codeq/tasks/batch/results", WORKER, length, "")).await;
        trickle(raw.take_writer(), b" ", Duration::from_millis(100));
        slow.push(raw);
    }
    let create = app.post("/tasks", PRODUCER, json!({ "command": "fast", "payload": {} })).await;
    assert_eq!(create.status, 202, "{:?}", create.body);
    for mut raw in slow {
        raw.response().await.assert_error(408, "body_timeout");
    }
}

#[tokio::test]
async fn a_body_sent_in_a_burst_then_a_trickle_is_cut_off_a_window_later() {
    let app = TestApp::spawn_with(|config| config.body_read_timeout_seconds = 1, false).await;
    // 1 MB at once (an hour of the 16 KiB/s average), then a byte every
    // 100 ms: each second after the first must bring 16 KiB.
    let mut raw = Raw::connect(&app).await;
    raw.send(post_head("/v1/codeq/tasks/batch", PRODUCER, 100_000_000, "")).await;
    raw.send(" ".repeat(1_000_000)).await;
    trickle(raw.take_writer(), b" ", Duration::from_millis(100));
    raw.response().await.assert_error(408, "body_timeout");
}

#[tokio::test]
async fn http_1_1_needs_exactly_one_host_and_http_1_0_none() {
    let app = TestApp::spawn().await;
    let mut client = Raw::connect(&app).await;
    client.send("GET /healthz HTTP/1.1\r\n\r\n").await;
    client.response().await.assert_error(400, "missing_host");

    let mut client = Raw::connect(&app).await;
    client.send("GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").await;
    client.response().await.assert_error(400, "invalid_host");

    let mut client = Raw::connect(&app).await;
    client.send("GET /healthz HTTP/1.0\r\n\r\n").await;
    assert_eq!(client.response().await.status, 200);
}

#[tokio::test]
async fn a_long_uri_and_large_headers_get_json_errors_up_to_the_parser_limit() {
    let app = TestApp::spawn().await;
    let long_uri = format!("/healthz?q={}", "x".repeat(9000));
    let reply = app.call(reqwest::Method::GET, &long_uri, None, None).await;
    assert_eq!((reply.status, reply.code()), (414, "uri_too_long"), "{:?}", reply.body);

    let mut client = Raw::connect(&app).await;
    client
        .send(format!(
            "GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: {}\r\n\r\n",
            "x".repeat(40_000)
        ))
        .await;
    client.response().await.assert_error(431, "headers_too_large");

    // A head that fills the parser's 64 KiB buffer unfinished: only the
    // parser can answer, with a bare 431. (Exactly the buffer's size, so
    // that the server reads all of it and closes cleanly.)
    let start = "GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: ";
    let mut client = Raw::connect(&app).await;
    client.send(format!("{start}{}", "x".repeat(64 * 1024 - start.len()))).await;
    let reply = client.response().await;
    assert_eq!((reply.status, reply.body.len()), (431, 0));
    app.assert_healthy().await;
}

#[tokio::test]
async fn shutdown_closes_idle_connections_without_waiting_for_their_timeout() {
    let app = TestApp::spawn().await;
    let mut idle = Raw::connect(&app).await;
    idle.send(get("/healthz")).await;
    assert_eq!(idle.response().await.status, 200);
    tokio::time::timeout(WITHIN, app.stop()).await.expect("an idle connection held up shutdown");
    assert_eq!(idle.closed().await, b"");
}

#[tokio::test]
async fn shutdown_closes_requests_still_running_after_the_grace_period() {
    let app = TestApp::spawn_with(
        |config| {
            config.shutdown_grace_seconds = 1;
            config.request_head_timeout_seconds = 600;
            config.body_read_timeout_seconds = 600;
        },
        false,
    )
    .await;
    // A request whose body stops halfway: busy, and no timeout of its own
    // would end it within the test's patience; only the grace period can.
    let mut stuck = Raw::connect(&app).await;
    stuck.send(post_head("/v1/codeq/tasks", PRODUCER, 100, "")).await;
    stuck.send(r#"{"command":"#).await;
    wait_until("the request is being read", || app.open_connections() == 1).await;
    tokio::time::timeout(WITHIN, app.stop()).await.expect("shutdown waited past its grace period");
    stuck.closed().await;
}
