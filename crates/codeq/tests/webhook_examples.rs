//! The signature checks of docs/webhooks.md, run on a real callback: the
//! real `codeq serve` binary (local mode, its secret set through
//! `CODEQ_WEBHOOK_HMAC_SECRET`) completes a task whose webhook is a
//! receiver on 127.0.0.1, and each example (Python, Node.js, Rust) must
//! accept that request as it arrived and refuse it with a changed body, a
//! wrong secret, a changed timestamp or an old one. The guide must show
//! exactly the files that are run, and its sample request must carry the
//! signature it claims.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../../docs/examples/verify_webhook.rs"]
mod verify_webhook;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use codeq_server::service::outbound::sign;
use serde_json::{Value, json};

const SECRET: &str = "whsec-examples-2f9c";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn examples_dir() -> PathBuf {
    repo_root().join("docs/examples")
}

/// One callback as the receiver got it.
#[derive(Debug)]
struct Captured {
    task_id: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Captured {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|value| value.to_str().ok()).unwrap_or_default()
    }
}

/// A `codeq serve` child process, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The callback of one completed task, captured once for every test.
fn captured() -> &'static Captured {
    static CAPTURED: OnceLock<Captured> = OnceLock::new();
    CAPTURED.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(capture())
    })
}

async fn capture() -> Captured {
    // The receiver hands the first request it gets to the test.
    let (sender, mut received) = tokio::sync::mpsc::unbounded_channel::<(HeaderMap, Bytes)>();
    let handler = move |headers: HeaderMap, body: Bytes| {
        let sender = sender.clone();
        async move {
            let _ = sender.send((headers, body));
            axum::http::StatusCode::OK
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let webhook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, axum::Router::new().fallback(handler)).into_future());

    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_codeq"))
        .args(["serve", "--port", "0", "--data-dir"])
        .arg(dir.path())
        .env("CODEQ_WEBHOOK_HMAC_SECRET", SECRET)
        .env("CODEQ_LOG_LEVEL", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Kept open until the end: a server writing to a closed pipe would fail.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let _server = Server(child);
    let base = (&mut stdout)
        .lines()
        .map(Result::unwrap)
        .find_map(|line| {
            let rest = line.strip_prefix("codeQ listening on ")?;
            rest.split_whitespace().next().map(str::to_string)
        })
        .expect("the server printed no address");
    let credentials: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("credentials.json")).unwrap())
            .unwrap();
    let (producer, worker) = (
        credentials["producerToken"].as_str().unwrap(),
        credentials["workerToken"].as_str().unwrap(),
    );

    let http = reqwest::Client::new();
    let post = |path: &str, token: &str, body: Value| {
        http.post(format!("{base}/v1/codeq{path}")).bearer_auth(token).json(&body).send()
    };
    let task = json!({ "command": "GREET", "payload": { "name": "Zoë" }, "webhook": webhook });
    let created = post("/tasks", producer, task).await.unwrap();
    assert_eq!(created.status(), 202);
    let task_id = created.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let claimed = post("/tasks/claim", worker, json!({ "commands": ["GREET"] })).await.unwrap();
    assert_eq!(claimed.status(), 200);
    // Not ASCII, so that a check working on re-encoded text would fail.
    let result = json!({ "status": "COMPLETED", "result": { "greeting": "Grüß dich, Zoë ✓" } });
    let done = post(&format!("/tasks/{task_id}/result"), worker, result).await.unwrap();
    assert_eq!(done.status(), 200);

    let (headers, body) = tokio::time::timeout(Duration::from_secs(30), received.recv())
        .await
        .expect("no callback within 30 s")
        .unwrap();
    Captured { task_id, headers, body: body.to_vec() }
}

fn unix_now() -> i64 {
    codeq_core::Timestamp::now().unix_seconds()
}

/// Runs `verify` on the real callback and on forgeries of it.
fn check_example(name: &str, verify: impl Fn(&str, &str, &str, &[u8]) -> bool) {
    let got = captured();
    let (timestamp, signature, body) =
        (got.header("x-codeq-timestamp"), got.header("x-codeq-signature"), got.body.as_slice());

    assert!(verify(SECRET, timestamp, signature, body), "{name}: refused the real callback");

    let mut tampered = body.to_vec();
    let at = tampered.windows(4).position(|w| w == b"Gr\xc3\xbc").unwrap();
    tampered[at] = b'g';
    assert!(!verify(SECRET, timestamp, signature, &tampered), "{name}: accepted a changed body");
    let mut longer = body.to_vec();
    longer.push(b' ');
    assert!(!verify(SECRET, timestamp, signature, &longer), "{name}: accepted a longer body");
    assert!(!verify("another-secret", timestamp, signature, body), "{name}: wrong secret");
    let later = (timestamp.parse::<i64>().unwrap() + 1).to_string();
    assert!(!verify(SECRET, &later, signature, body), "{name}: accepted a changed timestamp");
    assert!(!verify(SECRET, timestamp, "", body), "{name}: accepted an empty signature");

    // Correctly signed: accepted when recent, refused when an hour old.
    let now = unix_now();
    let fresh = sign(SECRET, now, body);
    assert!(verify(SECRET, &now.to_string(), &fresh, body), "{name}: refused a fresh signature");
    let old = now - 3600;
    let stale = sign(SECRET, old, body);
    assert!(!verify(SECRET, &old.to_string(), &stale, body), "{name}: accepted an old timestamp");
}

/// Runs `program` with `args`, `body` on stdin; its trimmed stdout. The
/// program must exit 0: an exception is not a refusal.
fn run(program: &str, example: &str, args: &[&str], body: &[u8]) -> String {
    let mut child = Command::new(program)
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| {
            panic!("cannot run {program} ({err}): it is needed to test docs/examples/{example}")
        });
    child.stdin.take().unwrap().write_all(body).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{example} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// The answer of a script that prints `true` or `false`.
fn verdict(printed: String) -> bool {
    match printed.to_lowercase().as_str() {
        "true" => true,
        "false" => false,
        other => panic!("the example printed {other:?}"),
    }
}

const PYTHON: &str = "import sys
sys.path.insert(0, sys.argv[1])
from verify_webhook import verify_webhook
print(verify_webhook(sys.argv[2], sys.argv[3], sys.argv[4], sys.stdin.buffer.read()))";

const NODE: &str = r#"const { verifyWebhook } = require(process.argv[1] + "/verify_webhook.js");
const body = require("node:fs").readFileSync(0);
console.log(verifyWebhook(process.argv[2], process.argv[3], process.argv[4], body));"#;

#[test]
fn the_python_example_accepts_a_real_callback_and_refuses_forgeries() {
    let dir = examples_dir();
    let dir = dir.to_str().unwrap();
    check_example("verify_webhook.py", |secret, timestamp, signature, body| {
        let args = ["-c", PYTHON, dir, secret, timestamp, signature];
        verdict(run("python3", "verify_webhook.py", &args, body))
    });
}

#[test]
fn the_node_example_accepts_a_real_callback_and_refuses_forgeries() {
    let dir = examples_dir();
    let dir = dir.to_str().unwrap();
    check_example("verify_webhook.js", |secret, timestamp, signature, body| {
        let args = ["-e", NODE, dir, secret, timestamp, signature];
        verdict(run("node", "verify_webhook.js", &args, body))
    });
}

#[test]
fn the_rust_example_accepts_a_real_callback_and_refuses_forgeries() {
    check_example("verify_webhook.rs", |secret, timestamp, signature, body| {
        verify_webhook::verify_webhook(secret.as_bytes(), timestamp, signature, body)
    });
}

#[test]
fn a_real_callback_has_the_documented_headers_and_body() {
    let got = captured();

    assert_eq!(got.header("content-type"), "application/json");
    assert_eq!(got.header("x-codeq-event"), "task.result");
    assert!(uuid_like(got.header("x-codeq-delivery")), "{:?}", got.header("x-codeq-delivery"));
    let timestamp: i64 = got.header("x-codeq-timestamp").parse().unwrap();
    assert!((unix_now() - timestamp).abs() < 300);
    let signature = got.header("x-codeq-signature");
    assert_eq!(signature, sign(SECRET, timestamp, &got.body));
    assert!(
        signature.len() == 64 && signature.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    );

    let body: Value = serde_json::from_slice(&got.body).unwrap();
    let keys: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["artifacts", "completedAt", "error", "eventType", "result", "status", "taskId"],
        "{body}"
    );
    assert_eq!(body["taskId"], got.task_id.as_str());
    assert_eq!(body["eventType"], "GREET");
    assert_eq!(body["status"], "COMPLETED");
    assert_eq!(body["result"], json!({ "greeting": "Grüß dich, Zoë ✓" }));
    assert_eq!((&body["error"], &body["artifacts"]), (&Value::Null, &json!([])));
    assert!(body["completedAt"].as_str().unwrap().ends_with('Z'));
}

fn uuid_like(text: &str) -> bool {
    let groups: Vec<usize> = text.split('-').map(str::len).collect();
    groups == [8, 4, 4, 4, 12] && text.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit())
}

/// The fenced blocks of a markdown page: (language, text).
fn code_blocks(markdown: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in markdown.lines() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(language)) => open = Some((language.trim().to_string(), String::new())),
            (Some(_), Some(_)) => blocks.extend(open.take()),
            (Some((_, text)), None) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, None) => {}
        }
    }
    blocks
}

#[test]
fn the_guide_shows_exactly_the_examples_that_are_run() {
    let guide = std::fs::read_to_string(repo_root().join("docs/webhooks.md")).unwrap();
    let blocks = code_blocks(&guide);

    for (file, language) in [
        ("verify_webhook.py", "python"),
        ("verify_webhook.js", "js"),
        ("verify_webhook.rs", "rust"),
    ] {
        let code = std::fs::read_to_string(examples_dir().join(file)).unwrap();
        let shown = blocks.iter().filter(|(lang, _)| lang == language).collect::<Vec<_>>();
        assert!(
            shown.iter().any(|(_, text)| *text == code),
            "docs/webhooks.md has no ```{language} block equal to docs/examples/{file}"
        );
    }
}

#[test]
fn the_guides_sample_request_is_signed_with_the_secret_it_names() {
    let guide = std::fs::read_to_string(repo_root().join("docs/webhooks.md")).unwrap();
    let blocks = code_blocks(&guide);
    let request = &blocks.iter().find(|(_, text)| text.starts_with("POST ")).unwrap().1;
    let (head, body) = request.split_once("\n\n").unwrap();
    let body = body.trim_end_matches('\n');
    let header = |name: &str| {
        head.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(": ")).unwrap()
    };

    assert!(guide.contains("signed with the secret `whsec-example`"));
    let timestamp: i64 = header("X-CodeQ-Timestamp").parse().unwrap();
    assert_eq!(header("X-CodeQ-Signature"), sign("whsec-example", timestamp, body.as_bytes()));
    assert_eq!(header("Content-Length"), body.len().to_string());
    let body: Value = serde_json::from_str(body).unwrap();
    let keys: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["artifacts", "completedAt", "error", "eventType", "result", "status", "taskId"]
    );
}

#[test]
fn code_blocks_are_read_with_their_language() {
    let page = "text\n```python\na = 1\n\nb = 2\n```\n```\nplain\n```\n";

    assert_eq!(
        code_blocks(page),
        [("python".to_string(), "a = 1\n\nb = 2\n".to_string()), (String::new(), "plain\n".into())]
    );
}
