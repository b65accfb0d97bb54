//! The command line (docs/cli.md) as clap definitions; `main` dispatches.
//!
//! Kept free of behaviour, but for parsing (which global options were
//! typed, and keeping them out of `serve`), so that a test can check the
//! whole definition with `Command::debug_assert()`.

use std::fmt;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{
    ArgMatches, Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand, ValueEnum,
};
use codeq_server::config::ConfigOverrides;
use serde::Serialize;

/// Where the CLI looks for the server by default.
pub const DEFAULT_BASE_URL: &str = "http://127.0.0.1:8080";

/// The crate version and, when built in a git checkout, the commit:
/// `0.1.0 (1a2b3c4d5e6f)` (see build.rs).
pub const VERSION: &str = env!("CODEQ_VERSION");

/// The `codeq` binary: server, command line and worker runner.
#[derive(Debug, Parser)]
#[command(
    name = "codeq",
    version = VERSION,
    about = "codeQ task queue: server, command line and load generator"
)]
pub struct Cli {
    /// Server, tokens and profile.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Commands,
}

impl Cli {
    /// The whole command line: [`Cli::command`], with the global options,
    /// which are all client options, kept out of `serve`. Each is given to
    /// `serve` as a hidden option of the same id, so clap does not add the
    /// global one there: `serve --help` does not offer it, and `main`
    /// refuses it when typed ([`GlobalArgs::typed`]).
    pub fn command_line() -> clap::Command {
        let top = Self::command();
        let hidden: Vec<clap::Arg> = top
            .get_arguments()
            .filter(|arg| arg.is_global_set())
            .map(|arg| arg.clone().global(false).hide(true).env(None))
            .collect();
        top.mut_subcommand("serve", |serve| serve.args(hidden))
    }

    /// Parses the process's arguments (exiting with clap's message and
    /// code 2 on a usage error) and records which global options were
    /// typed on the command line.
    pub fn parse_recording_flags() -> Self {
        Self::from_matches(&Self::command_line().get_matches()).unwrap_or_else(|err| err.exit())
    }

    /// [`Cli::parse_recording_flags`] for a given argument list (tests).
    pub fn try_parse_recording_flags<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Self::from_matches(&Self::command_line().try_get_matches_from(args)?)
    }

    fn from_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut cli = Self::from_arg_matches(matches)?;
        let typed = |matches: &ArgMatches| -> Vec<String> {
            matches
                .ids()
                .filter(|id| matches.value_source(id.as_str()) == Some(ValueSource::CommandLine))
                .map(|id| id.as_str().to_owned())
                .collect()
        };
        cli.global.typed_ids = typed(matches);
        // `serve`'s hidden copies of the global options.
        if let Some(("serve", serve)) = matches.subcommand() {
            let globals: Vec<String> =
                Self::command().get_arguments().map(|arg| arg.get_id().to_string()).collect();
            cli.global.typed_ids.extend(typed(serve).into_iter().filter(|id| globals.contains(id)));
        }
        Ok(cli)
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Run the server.
    #[command(after_help = SERVE_EXAMPLES)]
    Serve(ServeArgs),
    /// Write or update the profile in ~/.codeq/config.yaml.
    #[command(after_help = INIT_EXAMPLES)]
    Init(InitArgs),
    /// Store, show and remove tokens.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Create, inspect, claim, cancel and list tasks.
    #[command(subcommand)]
    Task(TaskCommand),
    /// Queue depths (admin; one queue also with a worker token covering
    /// it), pause, resume and flow limits (admin).
    #[command(subcommand)]
    Queue(QueueCommand),
    /// A command's dead letters: list, replay, purge (admin).
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Run tasks through a handler program.
    #[command(subcommand)]
    Worker(WorkerCommand),
    /// Check or back up a stopped server's data directory.
    #[command(subcommand)]
    Storage(StorageCommand),
    /// Load-test a running server: task throughput and latency, or
    /// long-poll wake-up latency with --wakeup.
    #[command(after_help = BENCH_EXAMPLES)]
    Bench(BenchArgs),
    /// Print the version, with the commit it was built from.
    #[command(after_help = VERSION_EXAMPLES)]
    Version,
    /// Print a shell completion script.
    #[command(after_help = COMPLETIONS_EXAMPLES)]
    Completions(CompletionsArgs),
}

/// `codeq storage …`: offline care of an embedded store.
#[derive(Debug, Subcommand)]
pub enum StorageCommand {
    /// Run the start-up checks on a stopped server's data directory,
    /// changing nothing; exit code 2 when it is damaged.
    #[command(after_help = STORAGE_CHECK_EXAMPLES)]
    Check(StorageCheckArgs),
    /// Copy a stopped server's data directory, checked and synced, into a
    /// new directory that `codeq serve --data-dir` can start from.
    #[command(after_help = STORAGE_BACKUP_EXAMPLES)]
    Backup(StorageBackupArgs),
}

const STORAGE_CHECK_EXAMPLES: &str = "Examples:
  codeq storage check ./codeq-data
  codeq storage check /var/lib/codeq

The server must be stopped. See docs/storage.md for what is checked.";

const STORAGE_BACKUP_EXAMPLES: &str = "Examples:
  codeq storage backup ./codeq-data ./codeq-data.bak
  codeq serve --data-dir ./codeq-data.bak          # start from the copy

The server must be stopped; to back up a running server, snapshot its
file system instead (docs/storage.md).";

/// `codeq storage check DIR`.
#[derive(Debug, Clone, Args)]
pub struct StorageCheckArgs {
    /// The data directory (`dataDir` of the server).
    pub dir: PathBuf,
}

/// `codeq storage backup DIR OUT`.
#[derive(Debug, Clone, Args)]
pub struct StorageBackupArgs {
    /// The data directory to copy.
    pub dir: PathBuf,
    /// Where to put the copy (a new or empty directory).
    pub out: PathBuf,
}

const COMPLETIONS_EXAMPLES: &str = "Examples:
  codeq completions bash > ~/.local/share/bash-completion/completions/codeq
  codeq completions zsh > \"${fpath[1]}/_codeq\"
  codeq completions fish > ~/.config/fish/completions/codeq.fish";

/// `codeq completions SHELL`.
#[derive(Debug, Clone, Copy, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

const BENCH_EXAMPLES: &str = "Examples:
  codeq bench --count 30000                     # against the local server: 4 producers, 16 workers
  codeq bench --duration 10 --producers 24 --workers 64 --json
  codeq bench --mode batch --count 300000 --producers 3 --workers 8
  codeq bench --claim-next --duration 10        # results that ask for the next task
  codeq bench --wakeup 200                      # idle long-poll wake-up latency
  codeq bench --base-url http://127.0.0.1:8080 --producer-token P --worker-token W --count 10000

The tasks it creates are of command `bench` (--command); run it against a
server whose queues you can spare. docs/performance.md has the figures.";

const VERSION_EXAMPLES: &str = "Examples:
  codeq version                                 # codeq 0.1.0 (821daf25c91f)
  codeq --version";

const SERVE_EXAMPLES: &str = "Examples:
  codeq serve                                   # local mode: generated tokens, loopback only
  codeq serve --port 9000 --data-dir /var/lib/codeq
  codeq serve --config /etc/codeq/codeq.yaml
  CODEQ_DURABILITY=buffered CODEQ_LOG_FORMAT=text codeq serve

Every key of the configuration file can also be set by an environment
variable CODEQ_<KEY> (dataDir: CODEQ_DATA_DIR). Precedence: flag, then
environment, then file, then default. The keys are listed in
docs/configuration.md.

With no tokens configured (no staticTokens, no JWKS URL), the server runs
in local mode: it generates a producer and a worker token, saves them in
<data dir>/credentials.json, where the CLI on this machine finds them, and
listens on loopback addresses only.";

/// `codeq serve`: flags that win over the environment and the config file.
/// Their defaults and variables are spelled out here because the server
/// reads the environment itself (clap does not), with the original
/// service's unprefixed names too.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Configuration file (YAML) [env: CODEQ_CONFIG] [default: none].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Port to listen on; 0 picks a free one [env: CODEQ_PORT, PORT] [default: 8080].
    #[arg(long, value_name = "N")]
    pub port: Option<u16>,
    /// Address to listen on [env: CODEQ_HOST] [default: 127.0.0.1].
    #[arg(long, value_name = "H")]
    pub host: Option<String>,
    /// Directory for the store, credentials and artifacts [env: CODEQ_DATA_DIR]
    /// [default: ./codeq-data].
    #[arg(long, value_name = "D")]
    pub data_dir: Option<PathBuf>,
    /// Storage backend: embedded, or redis (several replicas on one Redis or KVRocks) [env: CODEQ_STORAGE] [default: embedded].
    #[arg(long, value_name = "S", value_parser = ["embedded", "redis"])]
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

/// The global flags of docs/cli.md: which server, which tokens, which profile.
/// Each wins over its environment variable, which wins over the profile.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Server URL [default: the profile's, else a local-mode server's, else
    /// http://127.0.0.1:8080].
    #[arg(long, global = true, env = "CODEQ_BASE_URL", value_name = "URL")]
    pub base_url: Option<String>,
    /// Producer token (producer, read and admin calls).
    #[arg(
        long,
        global = true,
        env = "CODEQ_PRODUCER_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub producer_token: Option<Secret>,
    /// Worker token (claims and results).
    #[arg(
        long,
        global = true,
        env = "CODEQ_WORKER_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub worker_token: Option<Secret>,
    /// Ask for admin rights with `X-Role: ADMIN` (servers with env: dev).
    #[arg(
        long,
        global = true,
        env = "CODEQ_ADMIN",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new(),
    )]
    pub admin: bool,
    /// Profile of ~/.codeq/config.yaml to use [default: its currentProfile].
    #[arg(long, global = true, env = "CODEQ_PROFILE", value_name = "NAME")]
    pub profile: Option<String>,
    /// Identity service URL, for `auth login`.
    #[arg(long, global = true, env = "CODEQ_IAM_BASE_URL", value_name = "URL")]
    pub iam_base_url: Option<String>,
    /// Identity service API key, for `auth login`.
    #[arg(
        long,
        global = true,
        env = "CODEQ_IAM_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub iam_api_key: Option<Secret>,
    /// The ids (field names) of the options above that were typed on the
    /// command line rather than taken from their environment variables;
    /// filled by [`Cli::parse_recording_flags`].
    #[arg(skip)]
    pub typed_ids: Vec<String>,
}

impl GlobalArgs {
    /// Whether the option with field name `id` was typed on the command line.
    pub fn typed(&self, id: &str) -> bool {
        self.typed_ids.iter().any(|typed| typed == id)
    }

    /// The first global option typed on the command line, as its flag
    /// (`--producer-token`): `serve` takes none of them.
    pub fn first_typed_flag(&self) -> Option<String> {
        self.typed_ids.first().map(|id| format!("--{}", id.replace('_', "-")))
    }
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
/// Server and tokens come from the global flags (or their environment
/// variables). Without a token there, both tokens (and the base URL) are
/// read from `<data-dir>/credentials.json`, as written by a server in
/// local mode.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
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
    /// At most N tasks created and not yet finished: producers wait for
    /// workers (a steady churn rather than a growing backlog).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_live: Option<u32>,
    /// Give every task this result callback URL, so that each completion
    /// also owes a webhook (a loopback receiver needs a server in local
    /// mode or with webhookAllowPrivateNetworks).
    #[arg(long, value_name = "URL", conflicts_with = "wakeup")]
    pub webhook: Option<String>,
    /// Workers ask for their next task with each result (`claimNext`): one
    /// call per task instead of two while tasks are ready (single mode).
    #[arg(long, conflicts_with = "wakeup")]
    pub claim_next: bool,
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

// ---- Client commands ------------------------------------------------------

const INIT_EXAMPLES: &str = "Examples:
  codeq init                                   # asks for the URL and tokens
  codeq init --no-prompt --base-url http://127.0.0.1:8080 --producer-token \"$P\"
  codeq --profile staging init --base-url https://codeq.staging.example";

/// `codeq init`: writes the selected profile and makes it current.
#[derive(Debug, Clone, Args)]
pub struct InitArgs {
    /// Do not ask; store only what the flags and environment give.
    #[arg(long)]
    pub no_prompt: bool,
}

/// How a command prints what it got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Pretty-printed JSON, for scripts (`jq`).
    #[default]
    Json,
    /// Aligned columns, for people.
    Table,
    /// Only the task id (or the queue names), for shell variables:
    /// `ID=$(codeq task create … -o id)`.
    Id,
}

/// The `--output` flag shared by the commands that print API objects.
#[derive(Debug, Clone, Copy, Args)]
pub struct OutputArgs {
    /// Output format.
    #[arg(long, short = 'o', value_name = "FORMAT", value_enum, default_value_t = OutputFormat::Json)]
    pub output: OutputFormat,
}

const AUTH_SET_EXAMPLES: &str = "Examples:
  codeq auth set --producer \"$PRODUCER_TOKEN\"
  codeq --profile prod auth set --producer P --worker W";
const AUTH_SHOW_EXAMPLES: &str = "Examples:
  codeq auth show
  codeq --profile prod auth show";
const AUTH_CLEAR_EXAMPLES: &str = "Examples:
  codeq auth clear            # both tokens
  codeq auth clear --worker";

const AUTH_LOGIN_EXAMPLES: &str = "Examples:
  codeq --iam-base-url https://iam.example/v1 --iam-api-key K auth login --email me@example.com
  printf '%s\\n' \"$PASSWORD\" | codeq auth login --email me@example.com --password-stdin --no-prompt
  codeq auth login --email me@example.com --tenant-id acme --scopes codeq:admin

Signs in at {iamBaseUrl}/signInWithPassword, exchanges the ID token at
{iamBaseUrl}/token/exchange and stores the access token as the profile's
producer token.";

/// `codeq auth …`.
#[derive(Debug, Clone, Subcommand)]
pub enum AuthCommand {
    /// Sign in at the identity service and store the producer token.
    #[command(after_help = AUTH_LOGIN_EXAMPLES)]
    Login(AuthLoginArgs),
    /// Store tokens in the selected profile.
    #[command(after_help = AUTH_SET_EXAMPLES)]
    Set(AuthSetArgs),
    /// Print the settings in effect, tokens masked.
    #[command(after_help = AUTH_SHOW_EXAMPLES)]
    Show,
    /// Remove tokens from the selected profile.
    #[command(after_help = AUTH_CLEAR_EXAMPLES)]
    Clear(AuthClearArgs),
}

/// `codeq auth login`.
#[derive(Debug, Clone, Args)]
pub struct AuthLoginArgs {
    /// Account e-mail [prompted when missing].
    #[arg(long, value_name = "E")]
    pub email: Option<String>,
    /// Read the password from the first line of stdin instead of a prompt.
    #[arg(long)]
    pub password_stdin: bool,
    /// Audience of the exchanged token.
    #[arg(long, value_name = "A", default_value = "codeq-producer")]
    pub audience: String,
    /// Tenant to sign in to.
    #[arg(long, value_name = "T")]
    pub tenant_id: Option<String>,
    /// Scopes to ask for.
    #[arg(long, value_name = "S,S", value_delimiter = ',')]
    pub scopes: Vec<String>,
    /// Fail instead of asking for what is missing.
    #[arg(long)]
    pub no_prompt: bool,
}

/// `codeq auth set`.
#[derive(Debug, Clone, Args)]
#[command(group = clap::ArgGroup::new("tokens").required(true).multiple(true))]
pub struct AuthSetArgs {
    /// Producer token to store.
    #[arg(long, value_name = "TOKEN", group = "tokens")]
    pub producer: Option<Secret>,
    /// Worker token to store.
    #[arg(long, value_name = "TOKEN", group = "tokens")]
    pub worker: Option<Secret>,
}

/// `codeq auth clear`: without a flag, both tokens.
#[derive(Debug, Clone, Copy, Args)]
pub struct AuthClearArgs {
    /// Remove the producer token.
    #[arg(long, conflicts_with = "all")]
    pub producer: bool,
    /// Remove the worker token.
    #[arg(long, conflicts_with = "all")]
    pub worker: bool,
    /// Remove both tokens (the default).
    #[arg(long)]
    pub all: bool,
}

const TASK_CREATE_EXAMPLES: &str = "Examples:
  codeq task create --command RENDER --payload '{\"jobId\":\"j-1\"}'
  codeq task create --event RENDER --priority 5 --delay 60 --idempotency-key order-42
  codeq task create --command RENDER --payload @job.json --output table
  render-job-spec | codeq task create --command RENDER --payload -";
const TASK_GET_EXAMPLES: &str = "Examples:
  codeq task get 0190a0a0-0000-7000-8000-000000000001
  codeq task get \"$ID\" | jq -r .status";
const TASK_RESULT_EXAMPLES: &str = "Examples:
  codeq task result \"$ID\"
  codeq task result \"$ID\" --output table";
const TASK_CLAIM_EXAMPLES: &str = "Examples:
  codeq task claim --commands RENDER --lease 60 --wait 10
  (prints nothing and exits 0 when no task arrived)";
const TASK_CANCEL_EXAMPLES: &str = "Examples:
  codeq task cancel \"$ID\" --reason 'order withdrawn'
  codeq task cancel \"$A\" \"$B\" \"$C\" --output table
  codeq task list --command RENDER --status PENDING --all -o id | xargs codeq task cancel

With one id, prints the task (now CANCELLED). With several, prints each
id's outcome and exits 4 if any was not cancelled.";
const TASK_LIST_EXAMPLES: &str = "Examples:
  codeq task list --output table
  codeq task list --command RENDER --status IN_PROGRESS --limit 20 -o table
  codeq task list --status FAILED --all --payload > failed.json

Newest first, one page (--limit, default 100) at a time: --cursor takes
the nextCursor of the previous page, --all reads every page.";
const TASK_CLEANUP_EXAMPLES: &str = "Examples:
  codeq task cleanup
  codeq task cleanup --limit 10000 -o table
  codeq task cleanup --before 2026-12-31T00:00:00Z

Deletes finished tasks (completed, failed, dead-lettered or cancelled),
with their results and artifacts, whose retention (completedAt + the
server's retentionSeconds) ended by --before: a time later than now
deletes them early. The server also does this by itself every
cleanupIntervalSeconds; PENDING and IN_PROGRESS tasks are never deleted.
At most --limit per call: when as many were deleted, run it again for
the rest. -o id prints the count.";

/// `codeq task …`.
#[derive(Debug, Clone, Subcommand)]
pub enum TaskCommand {
    /// Create a task and print it.
    #[command(after_help = TASK_CREATE_EXAMPLES)]
    Create(TaskCreateArgs),
    /// Print a task.
    #[command(after_help = TASK_GET_EXAMPLES)]
    Get(TaskIdArgs),
    /// Print a task's result (with the task).
    #[command(after_help = TASK_RESULT_EXAMPLES)]
    Result(TaskIdArgs),
    /// Claim one task under a lease and print it (worker token).
    #[command(after_help = TASK_CLAIM_EXAMPLES)]
    Claim(TaskClaimArgs),
    /// Cancel tasks (the producer that created them, or an admin).
    #[command(after_help = TASK_CANCEL_EXAMPLES)]
    Cancel(TaskCancelArgs),
    /// List tasks, newest first, by command and status (admin).
    #[command(after_help = TASK_LIST_EXAMPLES)]
    List(TaskListArgs),
    /// Delete finished tasks whose retention has ended (admin).
    #[command(after_help = TASK_CLEANUP_EXAMPLES)]
    Cleanup(TaskCleanupArgs),
}

/// `codeq task cleanup`.
#[derive(Debug, Clone, Args)]
pub struct TaskCleanupArgs {
    /// Most tasks to delete, 1..100000 [default: the server's, 1000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub limit: Option<u32>,
    /// Delete the tasks whose retention ended by this time (RFC 3339)
    /// [default: now].
    #[arg(long, value_name = "TS", value_parser = rfc3339)]
    pub before: Option<String>,
    /// Output format.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `codeq task create`.
#[derive(Debug, Clone, Args)]
pub struct TaskCreateArgs {
    /// Queue name.
    #[arg(long, visible_alias = "event", value_name = "C", value_parser = command_name)]
    pub command: String,
    /// JSON payload; `@FILE` reads it from a file, `-` from stdin.
    #[arg(long, value_name = "JSON", default_value = "{}")]
    pub payload: String,
    /// 0..9, higher is claimed first [default: 0].
    #[arg(
        long,
        value_name = "N",
        allow_negative_numbers = true,
        value_parser = clap::value_parser!(i32).range(0..=9)
    )]
    pub priority: Option<i32>,
    /// URL to receive the result.
    #[arg(long, value_name = "URL")]
    pub webhook: Option<String>,
    /// Delivery limit, 1..1000 [default: the server's].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_attempts: Option<u32>,
    /// A repeat with the same key returns the existing task.
    #[arg(long, value_name = "K")]
    pub idempotency_key: Option<String>,
    /// When the task becomes claimable (RFC 3339).
    #[arg(long, value_name = "TS", value_parser = rfc3339)]
    pub run_at: Option<String>,
    /// Seconds before the task becomes claimable.
    #[arg(long, value_name = "S", conflicts_with = "run_at")]
    pub delay: Option<u64>,
    /// Output format.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// A command about one task.
#[derive(Debug, Clone, Args)]
pub struct TaskIdArgs {
    /// The task's id.
    pub id: String,
    /// Output format.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `codeq task claim`.
#[derive(Debug, Clone, Args)]
pub struct TaskClaimArgs {
    /// Commands to claim from [default: the token's].
    #[arg(
        long,
        visible_alias = "events",
        value_name = "A,B",
        value_delimiter = ',',
        value_parser = command_name
    )]
    pub commands: Vec<String>,
    /// Lease in seconds, at least 1 [default: the server's].
    #[arg(long, value_name = "S", value_parser = clap::value_parser!(u32).range(1..))]
    pub lease: Option<u32>,
    /// Long poll: seconds to wait for a task, 0..30.
    #[arg(long, value_name = "S", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=30))]
    pub wait: u32,
    /// Output format.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `codeq task cancel ID…`.
#[derive(Debug, Clone, Args)]
pub struct TaskCancelArgs {
    /// The tasks' ids.
    #[arg(required = true, value_name = "ID")]
    pub ids: Vec<String>,
    /// Why (stored as the task's error), at most 1024 bytes.
    #[arg(long, value_name = "R")]
    pub reason: Option<String>,
    /// Output format.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// A task status, as the API spells it (`IN_PROGRESS`; any case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StatusArg {
    /// Waiting to be claimed (ready or delayed).
    Pending,
    /// Claimed under a lease.
    InProgress,
    /// Finished with a result.
    Completed,
    /// Finished with an error, or dead-lettered.
    Failed,
    /// Cancelled by its producer or an admin.
    Cancelled,
}

impl From<StatusArg> for codeq_client::TaskStatus {
    fn from(status: StatusArg) -> Self {
        match status {
            StatusArg::Pending => Self::Pending,
            StatusArg::InProgress => Self::InProgress,
            StatusArg::Completed => Self::Completed,
            StatusArg::Failed => Self::Failed,
            StatusArg::Cancelled => Self::Cancelled,
        }
    }
}

/// One page or every page of a listing.
#[derive(Debug, Clone, Args)]
pub struct PageArgs {
    /// Tasks per page, 1..1000 [default: 100].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: Option<u32>,
    /// Start at this page (the nextCursor of the previous one).
    #[arg(long, value_name = "X")]
    pub cursor: Option<String>,
    /// Read every page, following nextCursor to the end.
    #[arg(long)]
    pub all: bool,
    /// Include each task's payload.
    #[arg(long)]
    pub payload: bool,
}

/// `codeq task list`.
#[derive(Debug, Clone, Args)]
pub struct TaskListArgs {
    /// Only tasks of this command.
    #[arg(long, visible_alias = "event", value_name = "C", value_parser = command_name)]
    pub command: Option<String>,
    /// Only tasks with this status.
    #[arg(long, value_name = "S", value_enum, ignore_case = true)]
    pub status: Option<StatusArg>,
    /// Pages.
    #[command(flatten)]
    pub page: PageArgs,
    /// Output format.
    #[command(flatten)]
    pub output: OutputArgs,
}

const QUEUE_INSPECT_EXAMPLES: &str = "Examples:
  codeq queue inspect RENDER
  codeq queue inspect RENDER --output table";
const QUEUE_STATS_EXAMPLES: &str = "Examples:
  codeq queue stats --command RENDER";
const QUEUE_LIST_EXAMPLES: &str = "Examples:
  codeq queue list --output table";
const QUEUE_PAUSE_EXAMPLES: &str = "Examples:
  codeq queue pause RENDER
  codeq queue resume RENDER

While paused, claims skip the command (long polls keep waiting and wake on
resume); creates are still accepted, and the limits are kept.";
const QUEUE_RESUME_EXAMPLES: &str = "Examples:
  codeq queue resume RENDER --output table";
const QUEUE_SETTINGS_EXAMPLES: &str = "Examples:
  codeq queue settings RENDER                      # show them
  codeq queue settings RENDER --max-in-flight 4
  codeq queue settings RENDER --rate 2.5 --burst 5
  codeq queue settings RENDER --no-rate --no-max-in-flight

A change reads the settings, changes what the flags name and writes them
all back: the others are kept.";

/// `codeq queue …` (admin).
#[derive(Debug, Clone, Subcommand)]
pub enum QueueCommand {
    /// Depths of one command's queues.
    #[command(after_help = QUEUE_INSPECT_EXAMPLES)]
    Inspect(QueueInspectArgs),
    /// Same as `inspect`, with the command as a flag.
    #[command(after_help = QUEUE_STATS_EXAMPLES)]
    Stats(QueueStatsArgs),
    /// Depths of every command's queues.
    #[command(after_help = QUEUE_LIST_EXAMPLES)]
    List(OutputArgs),
    /// Stop claims of a command (creates are still accepted).
    #[command(after_help = QUEUE_PAUSE_EXAMPLES)]
    Pause(QueueNameArgs),
    /// Let claims of a paused command through again.
    #[command(after_help = QUEUE_RESUME_EXAMPLES)]
    Resume(QueueNameArgs),
    /// Show a command's settings, or change some of them.
    #[command(after_help = QUEUE_SETTINGS_EXAMPLES)]
    Settings(QueueSettingsArgs),
}

/// `codeq queue pause|resume CMD`.
#[derive(Debug, Clone, Args)]
pub struct QueueNameArgs {
    /// The command (queue name).
    #[arg(value_parser = command_name)]
    pub command: String,
    /// Output format.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// A command (queue) name the server takes: refused before any request
/// (and before the note on a command the server has not seen).
fn command_name(text: &str) -> Result<String, String> {
    codeq_core::Command::parse(text)
        .map(|_| text.to_owned())
        .map_err(|reason| format!("command {text:?} {reason}"))
}

/// The highest `maxInFlight`, `burst` and rate the server takes.
pub const MAX_LIMIT: u32 = 1_000_000;

/// A rate: a number above 0 and at most [`MAX_LIMIT`] per second.
fn rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate <= f64::from(MAX_LIMIT) => Ok(rate),
        _ => {
            Err(format!("a rate is a number of claims per second above 0 and at most {MAX_LIMIT}"))
        }
    }
}

/// `codeq queue settings CMD [flags]`.
#[derive(Debug, Clone, Args)]
pub struct QueueSettingsArgs {
    /// The command (queue name).
    #[arg(value_parser = command_name)]
    pub command: String,
    /// At most N of its tasks in progress at once, 1..1000000.
    #[arg(
        long,
        value_name = "N",
        conflicts_with = "no_max_in_flight",
        value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_LIMIT))
    )]
    pub max_in_flight: Option<u32>,
    /// Remove the in-flight limit.
    #[arg(long)]
    pub no_max_in_flight: bool,
    /// At most R claims per second on average (R may be a fraction: 0.5).
    #[arg(long, value_name = "R", conflicts_with = "no_rate", value_parser = rate)]
    pub rate: Option<f64>,
    /// Claims that may follow at once after an idle time, 1..1000000
    /// [default: 1]; needs a rate.
    #[arg(
        long,
        value_name = "B",
        conflicts_with = "no_rate",
        value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_LIMIT))
    )]
    pub burst: Option<u32>,
    /// Remove the rate limit (and its burst).
    #[arg(long)]
    pub no_rate: bool,
    /// Output format.
    #[command(flatten)]
    pub output: OutputArgs,
}

impl QueueSettingsArgs {
    /// True when a flag asks for a change.
    pub fn changes(&self) -> bool {
        self.max_in_flight.is_some()
            || self.no_max_in_flight
            || self.rate.is_some()
            || self.burst.is_some()
            || self.no_rate
    }
}

const DLQ_LIST_EXAMPLES: &str = "Examples:
  codeq dlq list RENDER --output table
  codeq dlq list RENDER --error-contains timeout --failed-after 2026-05-04T00:00:00Z
  codeq dlq list RENDER --all -o id

Newest first (by when they failed), one page (--limit, default 100) at a
time: --cursor takes the nextCursor of the previous page, --all reads
every page.";
const DLQ_REPLAY_EXAMPLES: &str = "Examples:
  codeq dlq replay RENDER \"$ID\"
  codeq dlq replay RENDER --error-contains timeout --rate 10
  codeq dlq replay RENDER --limit 10000

Each task is PENDING again with attempts 0, keeping its id and payload.
Without ids, the dead letters that pass the filters are taken, newest
first, at most --limit (default 1000). --rate R makes them ready R per
second instead of all at once.";
const DLQ_PURGE_EXAMPLES: &str = "Examples:
  codeq dlq purge RENDER \"$ID\" --yes
  codeq dlq purge RENDER --failed-before 2026-04-01T00:00:00Z

Deletes the tasks for good, with their results, idempotency keys and
artifacts. Asks first when stdin is a terminal; elsewhere --yes is
required (without it the command refuses, exit code 2).";

/// `codeq dlq …` (admin).
#[derive(Debug, Clone, Subcommand)]
pub enum DlqCommand {
    /// List a command's dead letters, newest first.
    #[command(after_help = DLQ_LIST_EXAMPLES)]
    List(DlqListArgs),
    /// Send dead letters round again.
    #[command(after_help = DLQ_REPLAY_EXAMPLES)]
    Replay(DlqReplayArgs),
    /// Delete dead letters for good.
    #[command(after_help = DLQ_PURGE_EXAMPLES)]
    Purge(DlqPurgeArgs),
}

/// An RFC 3339 time, checked before it is sent.
fn rfc3339(text: &str) -> Result<String, String> {
    match codeq_core::Timestamp::parse_rfc3339(text) {
        Some(_) => Ok(text.to_owned()),
        None => {
            Err("not an RFC 3339 time from 0000-01-02 to 9999-12-30, such as 2026-05-04T09:00:00Z"
                .to_owned())
        }
    }
}

/// Which dead letters: every one unless a flag narrows them.
#[derive(Debug, Clone, Args)]
pub struct DlqFilterArgs {
    /// Only those whose error or last nack reason contains T (case-sensitive).
    #[arg(long, value_name = "T")]
    pub error_contains: Option<String>,
    /// Only those that failed before T (RFC 3339).
    #[arg(long, value_name = "T", value_parser = rfc3339)]
    pub failed_before: Option<String>,
    /// Only those that failed after T (RFC 3339).
    #[arg(long, value_name = "T", value_parser = rfc3339)]
    pub failed_after: Option<String>,
}

impl DlqFilterArgs {
    /// The filter the API takes.
    pub fn filter(&self) -> codeq_client::DeadLetterFilter {
        codeq_client::DeadLetterFilter {
            error_contains: self.error_contains.clone(),
            failed_before: self.failed_before.clone(),
            failed_after: self.failed_after.clone(),
        }
    }
}

/// `codeq dlq list CMD`.
#[derive(Debug, Clone, Args)]
pub struct DlqListArgs {
    /// The command (queue name).
    #[arg(value_parser = command_name)]
    pub command: String,
    /// Which dead letters.
    #[command(flatten)]
    pub filter: DlqFilterArgs,
    /// Pages.
    #[command(flatten)]
    pub page: PageArgs,
    /// Output format.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `codeq dlq replay CMD [ID…]`.
#[derive(Debug, Clone, Args)]
pub struct DlqReplayArgs {
    /// The command (queue name).
    #[arg(value_parser = command_name)]
    pub command: String,
    /// The dead letters to replay [default: those the filters select].
    #[arg(value_name = "ID", conflicts_with_all = ["error_contains", "failed_before", "failed_after"])]
    pub ids: Vec<String>,
    /// Which dead letters, without ids.
    #[command(flatten)]
    pub filter: DlqFilterArgs,
    /// At most N of those the filters select, 1..10000 [default: 1000];
    /// not with ids (each id given is taken).
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..=10_000),
        conflicts_with = "ids"
    )]
    pub limit: Option<u32>,
    /// Make them ready R per second instead of all at once.
    #[arg(long, value_name = "R", value_parser = rate)]
    pub rate: Option<f64>,
    /// Output format.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `codeq dlq purge CMD [ID…]`.
#[derive(Debug, Clone, Args)]
pub struct DlqPurgeArgs {
    /// The command (queue name).
    #[arg(value_parser = command_name)]
    pub command: String,
    /// The dead letters to delete [default: those the filters select].
    #[arg(value_name = "ID", conflicts_with_all = ["error_contains", "failed_before", "failed_after"])]
    pub ids: Vec<String>,
    /// Which dead letters, without ids.
    #[command(flatten)]
    pub filter: DlqFilterArgs,
    /// At most N of those the filters select, 1..10000 [default: 1000];
    /// not with ids (each id given is taken).
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..=10_000),
        conflicts_with = "ids"
    )]
    pub limit: Option<u32>,
    /// Do not ask for confirmation (required when stdin is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Output format.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `codeq queue inspect CMD`.
#[derive(Debug, Clone, Args)]
pub struct QueueInspectArgs {
    /// The command (queue name).
    #[arg(value_parser = command_name)]
    pub command: String,
    /// Output format.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `codeq queue stats --command CMD`.
#[derive(Debug, Clone, Args)]
pub struct QueueStatsArgs {
    /// The command (queue name).
    #[arg(long, visible_alias = "event", value_name = "CMD")]
    pub command: String,
    /// Output format.
    #[command(flatten)]
    pub output: OutputArgs,
}

const WORKER_START_EXAMPLES: &str = "Examples:
  codeq worker start --events GREET --handler examples/handlers/greet.sh
  codeq worker start --commands RENDER,THUMB --concurrency 4 --lease 60 --handler ./render.py
  codeq worker start --events RENDER --handler ./render.sh --once

The handler gets the task JSON on stdin (and CODEQ_TASK_ID, CODEQ_TASK_COMMAND,
CODEQ_TASK_ATTEMPT in its environment) and prints
  {\"status\":\"COMPLETED\",\"result\":{...}}  or  {\"status\":\"FAILED\",\"error\":\"...\"}
A non-zero exit or other output asks for a retry, with the end of its stderr
as the reason. SIGINT/SIGTERM: no new claims, running handlers finish (a
second signal abandons them); the exit code is then 130.";

/// `codeq worker …`.
#[derive(Debug, Clone, Subcommand)]
pub enum WorkerCommand {
    /// Claim tasks and run a handler program for each.
    #[command(after_help = WORKER_START_EXAMPLES)]
    Start(WorkerStartArgs),
}

/// `codeq worker start`.
#[derive(Debug, Clone, Args)]
pub struct WorkerStartArgs {
    /// Commands to claim from [default: the token's].
    #[arg(
        long,
        visible_alias = "commands",
        value_name = "A,B",
        value_delimiter = ',',
        value_parser = command_name
    )]
    pub events: Vec<String>,
    /// Tasks handled at once.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub concurrency: u32,
    /// Program run for each task.
    #[arg(long, value_name = "PATH")]
    pub handler: PathBuf,
    /// Lease in seconds, renewed every lease/3 while the handler runs.
    #[arg(long, value_name = "S", default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..))]
    pub lease: u32,
    /// Long-poll wait of each claim, 0..30 seconds.
    #[arg(long, value_name = "S", default_value_t = 30, value_parser = clap::value_parser!(u32).range(0..=30))]
    pub poll: u32,
    /// Make one claim per --concurrency slot, handle what they bring, and exit.
    #[arg(long)]
    pub once: bool,
    /// Stop a handler that runs longer than S seconds (with every process
    /// it started) and nack its task [default: no limit].
    #[arg(long, value_name = "S", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: Option<u64>,
}
