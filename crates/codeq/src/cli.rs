//! The command line (SPEC §8) as clap definitions; `main` dispatches.
//!
//! Kept free of behaviour so that a test can check the whole definition
//! with `Command::debug_assert()`.

use std::fmt;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use codeq_server::config::ConfigOverrides;
use serde::Serialize;

/// Where `codeq bench` looks for the server by default.
pub const DEFAULT_BASE_URL: &str = "http://127.0.0.1:8080";

/// The `codeq` binary: server, command line and worker runner.
#[derive(Debug, Parser)]
#[command(
    name = "codeq",
    version,
    about = "codeQ task queue: server, command line and load generator"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Commands,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Run the server.
    Serve(ServeArgs),
    /// Load-test a running server: task throughput and latency, or
    /// long-poll wake-up latency with --wakeup.
    Bench(BenchArgs),
    /// Print the version.
    Version,
}

/// `codeq serve`: flags that win over the environment and the config file.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Configuration file (YAML) [default: env CODEQ_CONFIG].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Port to listen on.
    #[arg(long, value_name = "N")]
    pub port: Option<u16>,
    /// Address to listen on.
    #[arg(long, value_name = "H")]
    pub host: Option<String>,
    /// Directory for data, credentials and artifacts.
    #[arg(long, value_name = "D")]
    pub data_dir: Option<PathBuf>,
    /// Storage backend.
    #[arg(long, value_name = "S")]
    pub storage: Option<String>,
}

impl From<ServeArgs> for ConfigOverrides {
    fn from(args: ServeArgs) -> Self {
        ConfigOverrides {
            config_path: args.config,
            host: args.host,
            port: args.port,
            data_dir: args.data_dir,
            storage: args.storage,
        }
    }
}

/// A token given on the command line or in the environment. Its `Debug`
/// hides it, so printing the parsed arguments never leaks it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The token itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(token: String) -> Self {
        Self(token)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<hidden>)")
    }
}

/// Which server to talk to, with which tokens.
#[derive(Debug, Clone, Args)]
pub struct ConnectionArgs {
    /// Server URL [default: the baseUrl of DIR/credentials.json (--data-dir)
    /// when its tokens are used, else http://127.0.0.1:8080].
    #[arg(long, env = "CODEQ_BASE_URL", value_name = "URL")]
    pub base_url: Option<String>,
    /// Producer token.
    #[arg(long, env = "CODEQ_PRODUCER_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub producer_token: Option<Secret>,
    /// Worker token.
    #[arg(long, env = "CODEQ_WORKER_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub worker_token: Option<Secret>,
}

/// How bench producers and workers call the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchMode {
    /// One task per create, claim and result call.
    Single,
    /// Batch create, batch claim and batch results of --batch-size tasks.
    Batch,
}

impl fmt::Display for BenchMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Single => "single",
            Self::Batch => "batch",
        })
    }
}

/// `codeq bench`: a load generator against an already running server.
///
/// Without a token on the command line or in the environment, both tokens
/// (and the base URL) are read from `<data-dir>/credentials.json`, as
/// written by a server in local mode.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Server and tokens.
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Data directory of a local-mode server, for credentials.json.
    #[arg(long, value_name = "DIR", default_value = "./codeq-data")]
    pub data_dir: PathBuf,
    /// Concurrent producers.
    #[arg(long, value_name = "P", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub producers: u32,
    /// Concurrent workers.
    #[arg(long, value_name = "W", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub workers: u32,
    /// Single calls or batch calls.
    #[arg(long, value_enum, default_value_t = BenchMode::Single)]
    pub mode: BenchMode,
    /// Tasks per batch call in batch mode (1..=100).
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub batch_size: u32,
    /// Total tasks to run through [default: 20000 unless --duration].
    #[arg(long, value_name = "N", conflicts_with = "duration", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Produce for this long, then stop producing and drain.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub duration: Option<u64>,
    /// Approximate size of each task's JSON payload.
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub payload_bytes: usize,
    /// Command (queue) the bench tasks go to.
    #[arg(long, value_name = "NAME", default_value = "bench")]
    pub command: String,
    /// Lease of claimed tasks [default: the server's].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u32).range(1..))]
    pub lease: Option<u32>,
    /// Measure idle long-poll wake-up latency instead, over N sequential
    /// rounds: a worker waits on the empty queue, one task is created, and
    /// the time from create sent to claim answered is recorded.
    #[arg(
        long,
        value_name = "N",
        num_args = 0..=1,
        default_missing_value = "200",
        value_parser = clap::value_parser!(u32).range(1..),
        conflicts_with_all = ["count", "duration", "mode", "batch_size", "producers", "workers"],
    )]
    pub wakeup: Option<u32>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}
