//! A small WebDriver client (the W3C protocol over HTTP, JSON in and out)
//! driving Debian's `chromium` through `chromedriver`, headless. Only
//! what the dashboard test needs: navigate, find, click, type, run a
//! script, take a screenshot, and wait for a condition by polling.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

/// The key W3C WebDriver names element references by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long a wait lasts before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Where the browser and its driver are, when both are installed.
pub struct Installed {
    pub chromium: PathBuf,
    pub chromedriver: PathBuf,
}

/// Looks `name` up on `PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| candidate.is_file())
}

/// Chromium and chromedriver, or `None` with the reason.
pub fn installed() -> Result<Installed, String> {
    let chromium = on_path("chromium").or_else(|| on_path("chromium-browser"));
    let chromedriver = on_path("chromedriver");
    match (chromium, chromedriver) {
        (Some(chromium), Some(chromedriver)) => Ok(Installed { chromium, chromedriver }),
        _ => Err("chromium and chromedriver are not both on PATH \
                  (apt-get install -y chromium chromium-driver)"
            .into()),
    }
}

/// A free port on 127.0.0.1 (released before chromedriver binds it).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A reference to an element of the page.
#[derive(Debug, Clone)]
pub struct Element(String);

/// One browser session; the browser and its driver end on drop.
pub struct Browser {
    http: reqwest::Client,
    session: String,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile.
    pub async fn start(installed: &Installed, width: u32, height: u32) -> Self {
        let port = free_port();
        let driver = Command::new(&installed.chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let profile = tempfile::tempdir().unwrap();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        let base = format!("http://127.0.0.1:{port}");
        wait_for_driver(&http, &base).await;
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            &format!("--window-size={width},{height}"),
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": installed.chromium, "args": args },
            "goog:loggingPrefs": { "browser": "ALL" },
        } } });
        let reply = http.post(format!("{base}/session")).json(&capabilities).send().await.unwrap();
        let body: Value = reply.json().await.unwrap();
        let id =
            body["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {body}"));
        Self { http, session: format!("{base}/session/{id}"), driver, _profile: profile }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let reply: Value = request.send().await.unwrap().json().await.unwrap();
        if reply["value"].get("error").is_some() {
            panic!("WebDriver {path}: {}", reply["value"]);
        }
        reply["value"].clone()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// Loads `url`.
    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and
    /// returns what it returns.
    pub async fn script(&self, script: &str, args: Value) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": args })).await
    }

    /// The element `css` selects, waiting for it to appear.
    pub async fn find(&self, css: &str) -> Element {
        let body = json!({ "using": "css selector", "value": css });
        let http = &self.http;
        let url = format!("{}/element", self.session);
        let found = poll(|| async {
            let reply: Value = http.post(&url).json(&body).send().await.ok()?.json().await.ok()?;
            reply["value"][ELEMENT].as_str().map(|id| Element(id.to_string()))
        })
        .await;
        match found {
            Some(element) => element,
            None => self.fail(&format!("element {css}")).await,
        }
    }

    /// Fails the test after waiting for `what`, with what the page shows
    /// and what its console said.
    pub async fn fail(&self, what: &str) -> ! {
        let page = self.script("return document.body.innerText", json!([])).await;
        let url = self.call(reqwest::Method::GET, "/url", None).await;
        let logs = self.post("/se/log", json!({ "type": "browser" })).await;
        panic!("waited {PATIENCE:?} for {what} at {url}\npage: {page}\nconsole: {logs:#}");
    }

    /// Clicks the element `css` selects (once it is there).
    pub async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.post(&format!("/element/{}/click", element.0), json!({})).await;
    }

    /// Types `text` into the element `css` selects.
    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.post(&format!("/element/{}/clear", element.0), json!({})).await;
        self.post(&format!("/element/{}/value", element.0), json!({ "text": text })).await;
    }

    /// Sends `keys` (WebDriver key codes allowed) to whatever has focus.
    pub async fn press(&self, keys: &str) {
        let actions: Vec<Value> = keys
            .chars()
            .flat_map(|key| {
                [
                    json!({ "type": "keyDown", "value": key }),
                    json!({ "type": "keyUp", "value": key }),
                ]
            })
            .collect();
        let body = json!({ "actions": [{ "type": "key", "id": "keyboard", "actions": actions }] });
        self.post("/actions", body).await;
    }

    /// The text of the element `css` selects, or `None` when there is none.
    pub async fn text(&self, css: &str) -> Option<String> {
        let value = self
            .script(
                "const el = document.querySelector(arguments[0]); return el ? el.textContent : null;",
                json!([css]),
            )
            .await;
        value.as_str().map(str::to_string)
    }

    /// The text of the element `css` selects, once there is one (a dialog
    /// opened by a click may be drawn a moment later).
    pub async fn text_once_shown(&self, css: &str) -> String {
        match poll(|| self.text(css)).await {
            Some(text) => text,
            None => self.fail(&format!("{css} to be shown")).await,
        }
    }

    /// Waits until the element `css` selects shows `want`; returns how long it took.
    pub async fn wait_for_text(&self, css: &str, want: &str) -> Duration {
        let started = Instant::now();
        let shown = poll(|| async {
            (self.text(css).await.as_deref().map(str::trim) == Some(want)).then_some(())
        })
        .await;
        if shown.is_none() {
            self.fail(&format!("{css} to show {want:?}")).await;
        }
        started.elapsed()
    }

    /// Emulates a screen of `width` × `height` CSS pixels (`mobile`: a phone).
    pub async fn screen(&self, width: u32, height: u32, mobile: bool) {
        let params =
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile });
        self.cdp("Emulation.setDeviceMetricsOverride", params).await;
    }

    /// Runs a Chrome DevTools Protocol command (chromedriver's extension).
    pub async fn cdp(&self, command: &str, params: Value) -> Value {
        self.post("/goog/cdp/execute", json!({ "cmd": command, "params": params })).await
    }

    /// Saves a PNG of the viewport to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let value = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let bytes = STANDARD.decode(value.as_str().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the browser through its driver, then the driver itself.
        let _ = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let runtime =
                        tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
                    runtime.block_on(async { self.http.delete(&self.session).send().await }).ok()
                })
                .join()
        });
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

async fn wait_for_driver(http: &reqwest::Client, base: &str) {
    wait_until("chromedriver to listen", || async {
        let reply = http.get(format!("{base}/status")).send().await.ok()?;
        let body: Value = reply.json().await.ok()?;
        body["value"]["ready"].as_bool().filter(|ready| *ready)
    })
    .await;
}

/// Polls `probe` every 50 ms until it gives a value; fails the test after
/// [`PATIENCE`], naming `what` it waited for.
pub async fn wait_until<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    match poll(probe).await {
        Some(value) => value,
        None => panic!("waited {PATIENCE:?} for {what}"),
    }
}

/// Polls `probe` every 50 ms until it gives a value, or [`PATIENCE`] passed.
async fn poll<T, F, Fut>(mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = probe().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
