//! A throwaway `redis-server` for tests: started from `PATH` on a free
//! loopback port in a temporary directory, with AOF on (`appendfsync
//! always` unless told otherwise), stopped when dropped.
//!
//! Without `redis-server` on `PATH` [`RedisServer::start`] prints a notice
//! and returns `None` so that the test is skipped — unless the
//! environment sets `CODEQ_TEST_REDIS=required` (CI does), when it fails.
//!
//! Shared by the test crates through `#[path]`.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running `redis-server`.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    fsync: &'static str,
    extra: Vec<String>,
    /// A directory holding `server.pem`, `server.key` and `ca.pem`: the
    /// port then speaks TLS only.
    tls: Option<PathBuf>,
}

/// The binary on `PATH`, if any.
fn binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join("redis-server")).find(|file| file.is_file())
}

fn required() -> bool {
    std::env::var("CODEQ_TEST_REDIS").is_ok_and(|value| value == "required")
}

impl RedisServer {
    /// Starts a server with `appendfsync always`; `None` (after a printed
    /// notice) when `redis-server` is not installed and not required.
    pub fn start() -> Option<Self> {
        Self::start_with_fsync("always")
    }

    /// Starts a server with the given `appendfsync` (`always`, `everysec`).
    pub fn start_with_fsync(fsync: &'static str) -> Option<Self> {
        Self::start_with(fsync, &[])
    }

    /// Starts a server with the given `appendfsync` and more arguments
    /// (`--maxmemory-policy allkeys-lru`, `--requirepass …`).
    pub fn start_with(fsync: &'static str, extra: &[&str]) -> Option<Self> {
        if binary().is_none() {
            assert!(
                !required(),
                "CODEQ_TEST_REDIS=required but redis-server is not on PATH (apt-get install redis-server)"
            );
            eprintln!(
                "NOTICE: redis-server is not on PATH; skipping a Redis test \
                 (set CODEQ_TEST_REDIS=required to make this an error)"
            );
            return None;
        }
        for _ in 0..20 {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let extra = extra.iter().map(|arg| arg.to_string()).collect();
            let mut server = Self { child: None, port: free_port(), dir, fsync, extra, tls: None };
            if server.launch() {
                return Some(server);
            }
        }
        panic!("redis-server did not start on any port tried");
    }

    /// Starts a server whose port speaks TLS only, with the certificate
    /// `server.pem` / `server.key` of `certs` (clients are not asked for
    /// one).
    pub fn start_tls(certs: &Path) -> Option<Self> {
        let mut server = Self::start()?;
        server.kill();
        server.tls = Some(certs.to_path_buf());
        if server.launch() {
            return Some(server);
        }
        assert!(!required(), "CODEQ_TEST_REDIS=required but redis-server did not start with TLS");
        eprintln!("NOTICE: this redis-server does not start with TLS; skipping a TLS test");
        None
    }

    /// Starts the process on `self.port`; false when it exited instead of
    /// becoming ready (the port was taken meanwhile).
    fn launch(&mut self) -> bool {
        let mut child = Command::new(binary().expect("redis-server on PATH"))
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--save", "", "--appendonly", "yes", "--appendfsync", self.fsync])
            .args(["--daemonize", "no", "--logfile", "", "--protected-mode", "no"])
            .args(&self.extra)
            .args(self.tls_args())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready =
            lines.by_ref().map_while(Result::ok).any(|line| line.contains("Ready to accept"));
        if !ready {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        // Keep draining its log so that the pipe never fills.
        std::thread::spawn(move || lines.for_each(drop));
        self.child = Some(child);
        true
    }

    fn tls_args(&self) -> Vec<String> {
        let Some(certs) = &self.tls else { return Vec::new() };
        let file = |name: &str| certs.join(name).display().to_string();
        vec![
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            self.port.to_string(),
            "--tls-cert-file".into(),
            file("server.pem"),
            "--tls-key-file".into(),
            file("server.key"),
            "--tls-ca-cert-file".into(),
            file("ca.pem"),
            "--tls-auth-clients".into(),
            "no".into(),
        ]
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Options for a store on this server (prefix `codeq`), on `time`.
    pub fn store_options(
        &self,
        time: codeq_server::store::redis::TimeSource,
    ) -> codeq_server::store::redis::RedisOptions {
        codeq_server::store::redis::RedisOptions {
            addr: self.addr(),
            tls: false,
            username: None,
            password: None,
            db: 0,
            prefix: "codeq".into(),
            time,
            threading: codeq_server::store::redis::Threading::Own,
            max_commands: codeq_server::store::DEFAULT_MAX_COMMANDS,
        }
    }

    /// The server's working directory (its AOF).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills the server with SIGKILL (nothing is flushed beyond what its
    /// `appendfsync` already wrote).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server (SIGSTOP) without closing its connections: it
    /// hangs, answering nothing, until [`RedisServer::thaw`].
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen server go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("redis-server is running");
        let sent = std::process::Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill {signal} failed");
    }

    /// Starts it again after [`RedisServer::kill`], on the same port and
    /// directory (it loads its AOF).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "redis-server is still running");
        assert!(self.launch(), "redis-server did not restart on port {}", self.port);
    }

    /// [`RedisServer::start_again`] with other extra arguments.
    pub fn start_again_with(&mut self, extra: &[&str]) {
        self.extra = extra.iter().map(|arg| arg.to_string()).collect();
        self.start_again();
    }

    /// Sends one command (its words) and returns Redis's first answer line.
    pub fn command(&self, words: &[&str]) -> String {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(self.addr()).expect("redis-server answers");
        let mut request = format!("*{}\r\n", words.len());
        for word in words {
            request.push_str(&format!("${}\r\n{word}\r\n", word.len()));
        }
        stream.write_all(request.as_bytes()).expect("the command is sent");
        let mut answer = [0; 256];
        let read = stream.read(&mut answer).expect("Redis answers");
        String::from_utf8_lossy(&answer[..read]).lines().next().unwrap_or_default().to_string()
    }

    /// The value of `field` in `INFO section` (`total_error_replies` of
    /// `stats`, say), or `None` when it is not there.
    pub fn info_field(&self, section: &str, field: &str) -> Option<String> {
        use std::io::{BufRead, BufReader, Read, Write};
        let mut stream = std::net::TcpStream::connect(self.addr()).expect("redis-server answers");
        let request = format!("*2\r\n$4\r\nINFO\r\n${}\r\n{section}\r\n", section.len());
        stream.write_all(request.as_bytes()).expect("the command is sent");
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        reader.read_line(&mut head).expect("Redis answers");
        let length: usize = head.trim().trim_start_matches('$').parse().expect("a bulk answer");
        let mut body = vec![0; length];
        reader.read_exact(&mut body).expect("the whole answer");
        let body = String::from_utf8_lossy(&body).into_owned();
        body.lines()
            .find_map(|line| Some(line.strip_prefix(field)?.strip_prefix(':')?.trim().to_string()))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("a bound address").port()
}
