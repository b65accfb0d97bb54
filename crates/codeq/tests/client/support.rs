//! [`Server`]: a real codeQ server on 127.0.0.1:0 with its own data
//! directory, and [`Server::codeq`], the binary pointed at it with an empty
//! environment and its own `HOME`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use codeq_server::app::{App, Running};
use codeq_server::config::{Config, StaticTokenConfig, TokenKind};

/// Admin producer `producer`.
pub const PRODUCER: &str = "t-producer-0123456789";
/// Worker `worker-1`.
pub const WORKER: &str = "t-worker-0123456789";
/// Worker `worker-2`, which may claim, heartbeat and abandon but not
/// report a result or a nack.
pub const CLAIM_ONLY_WORKER: &str = "t-claim-only-0123456789";

/// How the server authenticates.
pub enum Mode {
    /// The static tokens above.
    StaticTokens,
    /// Local mode: generated tokens in `<dataDir>/credentials.json`.
    Local,
}

/// The real server, stopped on drop.
pub struct Server {
    pub base: String,
    pub data_dir: PathBuf,
    pub home: tempfile::TempDir,
    running: Option<Running>,
    runtime: tokio::runtime::Runtime,
    _data: tempfile::TempDir,
}

impl Server {
    pub fn start() -> Self {
        Self::start_in(Mode::StaticTokens)
    }

    pub fn start_in(mode: Mode) -> Self {
        let data = tempfile::tempdir().unwrap();
        let mut config = Config::default_for_tests(data.path());
        config.host = "127.0.0.1".into();
        config.port = 0;
        if let Mode::StaticTokens = mode {
            let mut admin = StaticTokenConfig::plain(PRODUCER, TokenKind::Producer, "producer");
            admin.admin = true;
            let mut claim_only =
                StaticTokenConfig::plain(CLAIM_ONLY_WORKER, TokenKind::Worker, "worker-2");
            claim_only.scopes = Some(
                ["codeq:claim", "codeq:heartbeat", "codeq:abandon"].map(String::from).to_vec(),
            );
            config.static_tokens = vec![
                admin,
                StaticTokenConfig::plain(WORKER, TokenKind::Worker, "worker-1"),
                claim_only,
            ];
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let running =
            runtime.block_on(async { App::build(config).await.unwrap().spawn().unwrap() });
        Self {
            base: running.base_url(),
            data_dir: data.path().to_path_buf(),
            home: tempfile::tempdir().unwrap(),
            running: Some(running),
            runtime,
            _data: data,
        }
    }

    /// The binary with only `PATH` and `HOME` set, run in `HOME` (so no
    /// `./codeq-data` of the developer's is picked up).
    pub fn codeq(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_codeq"));
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .current_dir(self.home.path());
        command
    }

    /// The binary with `--base-url` and both tokens.
    pub fn codeq_with_tokens(&self) -> Command {
        let mut command = self.codeq();
        command.args(["--base-url", &self.base, "--producer-token", PRODUCER]);
        command.args(["--worker-token", WORKER]);
        command
    }

    /// Runs `future` on the server's runtime (for test-side helpers).
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }
}

impl Server {
    /// Stops the server (for good: its clients then find nothing there).
    pub fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            self.runtime.block_on(running.stop()).unwrap();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = self.runtime.block_on(running.stop());
        }
    }
}

/// Runs `command` and returns its output, with stderr shown on failure.
pub fn run(command: &mut Command) -> Output {
    command.output().unwrap()
}

/// Runs `command`, requires success, and parses stdout as JSON.
pub fn run_json(command: &mut Command) -> serde_json::Value {
    let output = run(command);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(&output.stdout)))
}

/// A URL where nothing listens (the port was taken and given back).
pub fn closed_port() -> String {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", closed.local_addr().unwrap())
}
