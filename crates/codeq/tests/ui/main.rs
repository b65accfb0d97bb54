//! The dashboard in a real browser: Debian's Chromium, headless, driven
//! over WebDriver against the real server, with the real `codeq worker
//! start` doing the work. Screenshots of every page are written to
//! `$CODEQ_UI_SCREENSHOTS` (default: `ui-screenshots` under Cargo's
//! target tmp dir); docs/ui.md shows the ones this test took.
//!
//! Without chromium and chromedriver the test prints why and passes,
//! unless `CODEQ_TEST_BROWSER=required` (as `.ci/run` sets).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "../client/support.rs"]
mod support;
mod webdriver;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use support::{PRODUCER, Server, WORKER};
use webdriver::{Browser, Installed, wait_until};

/// Tasks in the big queue (acceptance: the pages stay fast with 10,000).
const BULK: usize = 10_000;
/// Generous bound on a page load on a shared, busy CI machine.
const SLOW: Duration = Duration::from_secs(5);

/// The admin API, called directly to arrange and to compare.
struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Value {
        let mut request =
            self.http.request(method, format!("{}/v1/codeq{path}", self.base)).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let reply = request.send().await.unwrap();
        let status = reply.status();
        let body: Value = reply.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }

    async fn get(&self, path: &str) -> Value {
        self.call(reqwest::Method::GET, path, PRODUCER, None).await
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, token, Some(body)).await
    }

    async fn create(&self, command: &str, payload: Value, max_attempts: u32) -> String {
        let body = json!({ "command": command, "payload": payload, "maxAttempts": max_attempts });
        let created = self.post("/tasks", PRODUCER, body).await;
        created["id"].as_str().unwrap().to_string()
    }

    /// Claims one task of `command` as worker-1; its id.
    async fn claim(&self, command: &str) -> String {
        let claimed = self.post("/tasks/claim", WORKER, json!({ "commands": [command] })).await;
        claimed["id"].as_str().unwrap().to_string()
    }

    async fn finish(&self, id: &str, result: Value) {
        self.post(&format!("/tasks/{id}/result"), WORKER, result).await;
    }

    /// A dead letter of `command`: one delivery, nacked with `reason`.
    async fn dead_letter(&self, command: &str, payload: Value, reason: &str) -> String {
        let id = self.create(command, payload, 1).await;
        assert_eq!(self.claim(command).await, id);
        let nack =
            self.post(&format!("/tasks/{id}/nack"), WORKER, json!({ "reason": reason })).await;
        assert_eq!(nack["status"], "dlq");
        id
    }

    /// Claim requests served so far (any outcome), read from /metrics.
    async fn claims_served(&self) -> u64 {
        let text = self.http.get(format!("{}/metrics", self.base)).send().await.unwrap();
        let text = text.text().await.unwrap();
        text.lines()
            .filter(|line| line.starts_with("codeq_http_requests_total{"))
            .filter(|line| line.contains("route=\"/v1/codeq/tasks/claim"))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }
}

/// Where screenshots go.
fn screenshots() -> PathBuf {
    let dir = std::env::var_os("CODEQ_UI_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `codeq worker start` on `command`, completing every task.
/// A `codeq worker start` process, killed when dropped: a failing run
/// leaves none behind.
struct WorkerProcess(Child);

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_worker(server: &Server, command: &str) -> WorkerProcess {
    let handler = server.home().join("send.sh");
    std::fs::write(
        &handler,
        "#!/bin/sh\ncat >/dev/null\nprintf '{\"status\":\"COMPLETED\",\"result\":{\"sent\":true,\"id\":123456789012345678901234567890,\"cost\":1.50}}\\n'\n",
    )
    .unwrap();
    std::fs::set_permissions(&handler, std::fs::Permissions::from_mode(0o755)).unwrap();
    server
        .codeq_with_tokens()
        .args(["worker", "start", "--events", command, "--poll", "1", "--handler"])
        .arg(&handler)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(WorkerProcess)
        .unwrap()
}

/// The task queues the pages show: `render` with a little history,
/// `email` with two dead letters, `bulk` with [`BULK`] pending tasks.
/// What [`arrange`] made that the test looks for.
struct Arranged {
    /// A dead letter of `email` the test replays.
    replayed: String,
    /// A dead letter of `email` (error "mailbox full") the test purges.
    purged: String,
    /// A completed task of `render` with a stored artifact.
    rendered: String,
}

/// The queues, and the tasks the test looks for.
async fn arrange(api: &Api) -> Arranged {
    for n in 0..6 {
        api.create("render", json!({ "page": n, "format": "pdf" }), 3).await;
    }
    let mut rendered = String::new();
    for n in 0..4 {
        let id = api.claim("render").await;
        let result = match n {
            3 => json!({ "status": "FAILED", "error": "font missing: Inter", "attempt": 1 }),
            // "render ok\n": a stored artifact, downloaded only with a token.
            0 => {
                json!({ "status": "COMPLETED", "result": { "pages": 1 }, "attempt": 1, "artifacts": [
                { "name": "log.txt", "contentBase64": "cmVuZGVyIG9rCg==", "contentType": "text/plain" },
                // "odd name\n", under a name a URL must encode.
                { "name": "%41 a?b.txt", "contentBase64": "b2RkIG5hbWUK" }] })
            }
            _ => json!({ "status": "COMPLETED", "result": { "pages": n + 1 }, "attempt": 1 }),
        };
        api.finish(&id, result).await;
        if n == 0 {
            rendered = id;
        }
    }
    // A lease held by worker-1, for the Workers page.
    api.claim("render").await;
    let purged =
        api.dead_letter("email", json!({ "to": "grace@example.com" }), "mailbox full").await;
    let replayed = api
        .dead_letter(
            "email",
            json!({ "to": "ada@example.com", "template": "welcome" }),
            "smtp timeout",
        )
        .await;
    let started = Instant::now();
    for _ in 0..BULK / 100 {
        let tasks: Vec<Value> =
            (0..100).map(|n| json!({ "command": "bulk", "payload": { "n": n } })).collect();
        api.post("/tasks/batch", PRODUCER, json!({ "tasks": tasks })).await;
    }
    println!("arranged {BULK} tasks in bulk in {:?}", started.elapsed());
    Arranged { replayed, purged, rendered }
}

/// The numbers one queue's card shows, exact (from the data attributes).
async fn card_counts(browser: &Browser, command: &str) -> Value {
    let script = "const card = document.querySelector(`[data-command=\"${arguments[0]}\"]`);
        if (!card) return null;
        const read = (field) => Number(card.querySelector(`.count-${field}`).dataset.value);
        return { ready: read('ready'), delayed: read('delayed'), inProgress: read('inProgress'), dlq: read('dlq'),
                 paused: card.querySelector('.badge').textContent === 'paused' };";
    browser.script(script, json!([command])).await
}

async fn a_wrong_token_shows_an_error(browser: &Browser, base: &str, shots: &Path) {
    browser.goto(&format!("{base}/ui/")).await;
    browser.type_into("#token", "not-a-token").await;
    browser.click("form.signin button[type=submit]").await;
    wait_until("the sign-in error", || async {
        let text = browser.text("#signin-error").await?;
        text.contains("refused").then_some(())
    })
    .await;
    browser.screenshot(&shots.join("signin-error.png")).await;
    // A token the tab kept that the server no longer takes: back to sign in, saying why.
    browser.script("sessionStorage.setItem('codeq.adminToken', 'stale-token')", json!([])).await;
    browser.goto(&format!("{base}/ui/#/queues")).await;
    let shown = wait_until("the refused-token notice", || async {
        browser.text("#signin-error").await.filter(|text| text.contains("refused"))
    })
    .await;
    println!("wrong token: {shown}");
}

/// Signed in before any task exists: the Queues page says so.
async fn sign_in_by_keyboard_to_an_empty_server(browser: &Browser) {
    browser.type_into("#token", PRODUCER).await;
    browser.press("\u{E007}").await; // Enter submits the form.
    browser.wait_for_text("#queues .empty", "No command has been used yet.").await;
}

async fn queue_counts_match_the_api(browser: &Browser, api: &Api, base: &str, shots: &Path) {
    // A fresh load of the page, timed, with BULK tasks in one queue.
    browser.goto("about:blank").await;
    let started = Instant::now();
    browser.goto(&format!("{base}/ui/#/queues")).await;
    browser.find("[data-command=\"bulk\"]").await;
    let elapsed = started.elapsed();
    let shown_at =
        browser.script("return document.getElementById('main').dataset.shownAt", json!([])).await;
    println!(
        "Queues page (a fresh load) with {BULK} tasks in bulk: shown {elapsed:?} after the \
         navigation began (in the page: {shown_at} ms from navigation start)"
    );
    assert!(elapsed < SLOW, "the Queues page took {elapsed:?}");
    let queues = api.get("/admin/queues").await;
    for queue in queues["queues"].as_array().unwrap() {
        let command = queue["command"].as_str().unwrap();
        let shown = card_counts(browser, command).await;
        for field in ["ready", "delayed", "inProgress", "dlq", "paused"] {
            assert_eq!(shown[field], queue[field], "{command}.{field}: page {shown} API {queue}");
        }
    }
    assert_eq!(card_counts(browser, "bulk").await["ready"], BULK);
    // For people on the card, exact on hover.
    let ready = "[data-command='bulk'] .count-ready";
    assert_eq!(browser.text(ready).await.as_deref(), Some("10k"));
    let title = browser
        .script(&format!("return document.querySelector(\"{ready}\").title"), json!([]))
        .await;
    assert_eq!(title, "10,000");
    browser.screenshot(&shots.join("queues.png")).await;
}

async fn replay_a_dead_letter_and_see_it_complete(
    browser: &Browser,
    server: &Server,
    id: &str,
    shots: &Path,
) -> WorkerProcess {
    browser.click("nav a[href='#/dead']").await;
    browser.click("a[href='#/dead/email']").await;
    browser.find(&format!("a[href='#/task/{id}']")).await;
    browser.screenshot(&shots.join("dead-letters.png")).await;
    browser.click(&format!("a[href='#/task/{id}']")).await;
    browser.wait_for_text("#task-status", "FAILED").await;
    browser.screenshot(&shots.join("task-dead-letter.png")).await;
    // Set on this document: still there at the end means no reload.
    browser.script("window.sameDocument = true", json!([])).await;

    browser.click("#replay-task").await;
    browser.click("#confirm-ok").await;
    browser.wait_for_text("#task-status", "PENDING").await;
    let worker = start_worker(server, "email");
    let took = browser.wait_for_text("#task-status", "COMPLETED").await;
    println!("replayed task {id} shown COMPLETED {took:?} after the worker started");
    let same = browser.script("return window.sameDocument === true", json!([])).await;
    assert_eq!(same, true, "the page was reloaded");
    let result = browser.text("#result").await.unwrap();
    assert!(result.contains("\"sent\": true"), "{result}");
    // Digits a double would round, a decimal's trailing zero: as written.
    assert!(result.contains("\"id\": 123456789012345678901234567890"), "{result}");
    assert!(result.contains("\"cost\": 1.50"), "{result}");
    browser.screenshot(&shots.join("task.png")).await;
    worker
}

async fn an_artifact_is_downloaded_with_the_token(browser: &Browser, base: &str, task: &str) {
    browser.goto(&format!("{base}/ui/#/task/{task}")).await;
    browser.wait_for_text("#task-status", "COMPLETED").await;
    // Keep what the page hands to the browser as a file (and save nothing).
    browser.cdp("Browser.setDownloadBehavior", json!({ "behavior": "deny" })).await;
    let keep = "window.downloaded = [];
        const make = URL.createObjectURL;
        URL.createObjectURL = (blob) => { window.downloaded.push(blob); return make(blob); };";
    browser.script(keep, json!([])).await;
    browser.click("a.download").await;
    wait_until("the artifact's bytes", || async {
        let count = browser.script("return window.downloaded.length", json!([])).await;
        (count.as_u64() == Some(1)).then_some(())
    })
    .await;
    let text = browser.script("return window.downloaded[0].text()", json!([])).await;
    assert_eq!(text, "render ok\n");
    browser.click("ul.artifacts li:nth-child(2) a.download").await;
    wait_until("the oddly named artifact's bytes", || async {
        let count = browser.script("return window.downloaded.length", json!([])).await;
        (count.as_u64() == Some(2)).then_some(())
    })
    .await;
    let text = browser.script("return window.downloaded[1].text()", json!([])).await;
    assert_eq!(text, "odd name\n");
}

async fn purge_a_filtered_dead_letter(browser: &Browser, api: &Api, base: &str, id: &str) {
    browser.goto(&format!("{base}/ui/#/dead/email")).await;
    browser.type_into("#error-contains", "mailbox").await;
    browser.click("#dead-filter button[type=submit]").await;
    wait_until("the filter to leave one dead letter", || async {
        let rows = browser
            .script("return document.querySelectorAll('.dead tbody tr').length", json!([]))
            .await;
        (rows == 1).then_some(())
    })
    .await;
    browser.click(&format!("input[type=checkbox][value='{id}']")).await;
    browser.wait_for_text("#selected-count", "1 selected").await;
    browser.click("#purge-selected").await;
    // The confirmation says what is at stake; Escape would back out.
    let asked = browser.text_once_shown("dialog.confirm p").await;
    assert!(asked.contains("1 selected dead letter") && asked.contains("deleted"), "{asked}");
    browser.click("#confirm-ok").await;
    browser.wait_for_text("#notice", "Purged 1 dead letter.").await;
    assert_eq!(api.get("/admin/queues/email").await["dlq"], 0);
}

/// "Replay all matching" acts on the filter the form shows, even when it
/// was typed and not applied: here one of two dead letters.
async fn all_matching_acts_on_the_filter_shown(browser: &Browser, api: &Api, base: &str) {
    api.dead_letter("sms", json!({ "to": "+15550100" }), "carrier down").await;
    api.dead_letter("sms", json!({ "to": "+15550101" }), "number invalid").await;
    browser.goto(&format!("{base}/ui/#/dead/sms")).await;
    browser.type_into("#error-contains", "carrier").await;
    browser.click("#replay-matching").await;
    let asked = browser.text_once_shown("dialog.confirm p").await;
    assert!(asked.contains("whose error contains “carrier”"), "{asked}");
    browser.click("#confirm-ok").await;
    browser.wait_for_text("#notice", "Replayed 1 dead letter.").await;
    assert_eq!(api.get("/admin/queues/sms").await["dlq"], 1);
}

async fn pausing_stops_claims(browser: &Browser, api: &Api, base: &str, shots: &Path) {
    browser.goto(&format!("{base}/ui/#/queue/email")).await;
    browser.click("#pause-toggle").await;
    browser.wait_for_text(".queue-head .badge", "paused").await;
    for n in 0..3 {
        api.create("email", json!({ "to": format!("user{n}@example.com") }), 3).await;
    }
    // The worker keeps asking: two more claims served, none of them took a task.
    let before = api.claims_served().await;
    wait_until("two claims of the worker while paused", || async {
        (api.claims_served().await >= before + 2).then_some(())
    })
    .await;
    assert_eq!(api.get("/admin/queues/email").await["ready"], 3);
    browser.wait_for_text("#queue-counts .count-ready", "3").await;
    browser.screenshot(&shots.join("queue-paused.png")).await;

    browser.click("#pause-toggle").await;
    browser.wait_for_text(".queue-head .badge", "running").await;
    let took = browser.wait_for_text("#queue-counts .count-ready", "0").await;
    println!("after resume the worker drained email; the page showed 0 ready {took:?} later");
}

async fn a_whole_number_rate_is_saved_and_shown(browser: &Browser, api: &Api, base: &str) {
    let queue_page = format!("{base}/ui/#/queue/email");
    browser.goto(&queue_page).await;
    browser.type_into("#rate", "4").await;
    browser.click("#settings button[type=submit]").await;
    browser.wait_for_text("#notice", "Limits saved.").await;
    assert_eq!(api.get("/admin/queues/email/settings").await["ratePerSecond"], 4.0);
    // The server writes it as 4.0, which the page keeps as its source text.
    browser.wait_for_text(".queue-head .limits", "4/s").await;
    let field = browser.script("return document.querySelector('#rate').value", json!([])).await;
    assert_eq!(field, "4");
    browser.goto(&format!("{base}/ui/#/queues")).await;
    browser.wait_for_text("[data-command='email'] .limits", "4/s").await;
    // And taken off the same way.
    browser.goto(&queue_page).await;
    browser.find(".queue-head .limits").await;
    browser.script("document.querySelector('#rate').value = ''", json!([])).await;
    browser.click("#settings button[type=submit]").await;
    browser.wait_for_text(".queue-head .limits", "no limits").await;
    assert_eq!(api.get("/admin/queues/email/settings").await.get("ratePerSecond"), None);
}

async fn task_pages_page_through(browser: &Browser, base: &str, shots: &Path) {
    let started = Instant::now();
    browser.goto(&format!("{base}/ui/#/queue/bulk?state=PENDING")).await;
    browser.wait_for_text("#page-info", "Page 1 · 1–50").await;
    let first = started.elapsed();
    browser.screenshot(&shots.join("queue.png")).await;
    let mut pages = Vec::new();
    for page in 2..=5 {
        let started = Instant::now();
        browser.click("#next-page").await;
        let want = format!("Page {page} · {}–{}", (page - 1) * 50 + 1, page * 50);
        browser.wait_for_text("#page-info", &want).await;
        pages.push(started.elapsed());
    }
    let started = Instant::now();
    browser.click("#prev-page").await;
    browser.wait_for_text("#page-info", "Page 4 · 151–200").await;
    let back = started.elapsed();
    println!(
        "bulk ({BULK} pending): first page {first:?}; next pages {pages:?}; previous {back:?}"
    );
    assert!(first < SLOW && pages.iter().all(|took| *took < SLOW));
}

async fn workers_and_phone_width(browser: &Browser, base: &str, shots: &Path, task: &str) {
    browser.goto(&format!("{base}/ui/#/workers")).await;
    browser.wait_for_text("#workers table tbody tr td code", "worker-1").await;
    browser.screenshot(&shots.join("workers.png")).await;

    browser.screen(390, 844, true).await;
    let task_page = format!("#/task/{task}");
    let pages = [
        ("#/queues", Some("queues-phone.png"), "[data-command='bulk']"),
        ("#/queue/email", None, "#page-info"),
        (task_page.as_str(), Some("task-phone.png"), "#task-status"),
        ("#/dead/email", None, "#page-info"),
        ("#/workers", None, "#workers table"),
    ];
    for (hash, shot, ready) in pages {
        browser.goto(&format!("{base}/ui/{hash}")).await;
        browser.find(ready).await;
        let overflow = browser
            .script("return document.documentElement.scrollWidth - window.innerWidth", json!([]))
            .await;
        assert_eq!(overflow, 0, "{hash} scrolls sideways at phone width");
        if let Some(name) = shot {
            browser.screenshot(&shots.join(name)).await;
        }
    }
}

#[test]
fn the_dashboard_signs_in_replays_a_dead_letter_pauses_a_queue_and_pages_10000_tasks() {
    let installed = match webdriver::installed() {
        Ok(installed) => installed,
        Err(reason) => {
            let required =
                std::env::var("CODEQ_TEST_BROWSER").is_ok_and(|value| value == "required");
            assert!(!required, "CODEQ_TEST_BROWSER=required but {reason}");
            eprintln!("SKIPPED the browser test of the dashboard: {reason}");
            return;
        }
    };
    let server = Server::start();
    server.block_on(scenario(&server, &installed));
}

async fn scenario(server: &Server, installed: &Installed) {
    let api = Api { http: reqwest::Client::new(), base: server.base.clone() };
    let shots = screenshots();
    let browser = Browser::start(installed, 1280, 800).await;
    browser.screen(1280, 800, false).await;
    let base = &server.base;

    a_wrong_token_shows_an_error(&browser, base, &shots).await;
    sign_in_by_keyboard_to_an_empty_server(&browser).await;
    let arranged = arrange(&api).await;
    queue_counts_match_the_api(&browser, &api, base, &shots).await;
    let worker =
        replay_a_dead_letter_and_see_it_complete(&browser, server, &arranged.replayed, &shots)
            .await;
    an_artifact_is_downloaded_with_the_token(&browser, base, &arranged.rendered).await;
    purge_a_filtered_dead_letter(&browser, &api, base, &arranged.purged).await;
    all_matching_acts_on_the_filter_shown(&browser, &api, base).await;
    pausing_stops_claims(&browser, &api, base, &shots).await;
    a_whole_number_rate_is_saved_and_shown(&browser, &api, base).await;
    task_pages_page_through(&browser, base, &shots).await;
    workers_and_phone_width(&browser, base, &shots, &arranged.replayed).await;

    drop(worker);
    println!("screenshots in {}", shots.display());
}
