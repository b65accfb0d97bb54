//! Builds the server from a `Config`, binds its listener, runs it until a
//! shutdown signal, and shuts it down gracefully.
//!
//! `App::build` binds (port 0 works, for tests) and opens storage;
//! `App::run_until` serves until the given future completes, then: stops
//! accepting, answers pending long polls with 204, lets in-flight requests
//! finish within `shutdownGraceSeconds` (closing what is left after it),
//! stops the background jobs and makes storage durable.

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use codeq_core::{BackoffConfig, BackoffPolicy};
use time::UtcOffset;
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::local::Origin;
use crate::auth::{
    Authenticator, Jwks, JwtVerifier, LocalCredentials, PrincipalKind, StaticGrant, StaticToken,
    StaticTokenVerifier, TokenVerifier, TrustedIssuer, is_loopback_host,
};
use crate::clock::{Clock, SystemClock};
use crate::config::{
    Config, ConfigError, ConfigOverrides, Env, StaticTokenConfig, StorageKind, TokenKind,
};
use crate::data_dir::{DataDirError, DataDirLock};
use crate::fd_limit;
use crate::http;
use crate::http::body::{BodyBudget, BodyReading};
use crate::http::connection::{ConnectionTimeouts, Stops};
use crate::http::serve::ConnectionCap;
use crate::metrics::Metrics;
use crate::service::Policy;
use crate::service::artifacts::Artifacts;
use crate::service::control::Control;
use crate::service::outbound::Outbound;
use crate::service::scheduler::Scheduler;
use crate::service::subscriptions::Subscriptions;
use crate::service::webhooks::{Dispatcher, Retries};
use crate::service::{reaper, retention};
use crate::store::embedded::log::OpenError;
use crate::store::embedded::log::fs::RealFs;
use crate::store::embedded::maintenance;
use crate::store::embedded::{EmbeddedOptions, EmbeddedStore};
use crate::store::redis::{CheckError, RedisOptions, RedisStore, warn_about};
use crate::store::{Signals, Store};
use crate::throughput;

/// Size limits the HTTP layer enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `maxPayloadBytes`.
    pub max_payload_bytes: usize,
    /// `maxArtifactBytes`.
    pub max_artifact_bytes: usize,
}

/// What every handler shares: one allocation behind an `Arc`, so the
/// clone each extractor takes is one reference count, not one per service.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The services and settings behind [`AppState`].
pub struct Shared {
    /// The task life cycle.
    pub scheduler: Arc<Scheduler>,
    /// Token verification.
    pub auth: Arc<Authenticator>,
    /// Artifact bytes.
    pub artifacts: Arc<Artifacts>,
    /// Size limits.
    pub limits: Limits,
    /// The offset of every time the API prints.
    pub offset: UtcOffset,
    /// `allowProducerAsWorker`.
    pub allow_producer_as_worker: bool,
    /// How request bodies are read: budget and timeouts.
    pub bodies: BodyReading,
    /// The Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// The webhook client (and its private-network guard).
    pub outbound: Arc<Outbound>,
    /// Worker-availability subscriptions.
    pub subscriptions: Subscriptions,
    /// Cancel, queue settings, dead letters, listing.
    pub control: Control,
    /// `ui`: the dashboard is served under `/ui/`.
    pub ui: bool,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid (exit code 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The configuration asks for something this server refuses (exit code 2).
    #[error("{0}")]
    Refused(String),
    /// Anything else (exit code 1).
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<DataDirError> for StartError {
    fn from(error: DataDirError) -> Self {
        match error {
            DataDirError::Io { .. } => Self::Other(error.into()),
            refused => Self::Refused(refused.to_string()),
        }
    }
}

impl StartError {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Config(_) | Self::Refused(_) => ExitCode::from(2),
            Self::Other(_) => ExitCode::FAILURE,
        }
    }
}

/// A built server, bound and ready to run.
pub struct App {
    listener: TcpListener,
    state: AppState,
    store: Arc<dyn Store>,
    credentials: Option<(LocalCredentials, Origin)>,
    shutdown: CancellationToken,
    background: Vec<JoinHandle<()>>,
    grace: Duration,
    /// Held until the server has stopped (dropped last, with `self`).
    _data_dir_lock: DataDirLock,
    timeouts: ConnectionTimeouts,
    connections: Arc<ConnectionCap>,
}

impl App {
    /// Builds the server on the system clock.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        Self::build_with_clock(config, Arc::new(SystemClock)).await
    }

    /// Builds the server on `clock` (tests drive time with a manual clock).
    pub async fn build_with_clock(
        config: Config,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StartError> {
        Self::assemble(config, clock, None).await
    }

    /// Builds the server on a store opened by the caller, whose wake-ups
    /// go to `signals` (tests open the embedded store on a fault-injecting
    /// file system this way).
    pub async fn build_with_store(
        config: Config,
        clock: Arc<dyn Clock>,
        store: Arc<dyn Store>,
        signals: Arc<Signals>,
    ) -> Result<Self, StartError> {
        Self::assemble(config, clock, Some((store, signals))).await
    }

    async fn assemble(
        config: Config,
        clock: Arc<dyn Clock>,
        storage: Option<(Arc<dyn Store>, Arc<Signals>)>,
    ) -> Result<Self, StartError> {
        // Before anything is written to the directory.
        let data_dir_lock = DataDirLock::acquire(&config.data_dir)?;
        let local_mode = config.static_tokens.is_empty()
            && config.identity_jwks_url.is_none()
            && config.worker_jwks_url.is_none();
        if local_mode && !is_loopback_host(&config.host) {
            return Err(StartError::Refused(format!(
                "refusing to listen on {} in local mode (no tokens configured): set staticTokens or an identity provider, or bind a loopback address",
                config.host
            )));
        }
        if local_mode && config.storage == StorageKind::Redis {
            tracing::warn!(
                "local mode on Redis: this replica makes tokens of its own, which other replicas \
                 refuse; for several replicas configure staticTokens or an identity provider"
            );
        }
        let listener = listen(&config.host, config.port)
            .await
            .with_context(|| format!("cannot listen on {}:{}", config.host, config.port))?;
        let address = listener.local_addr().context("cannot read the bound address")?;

        // The store first: a store refused as damaged leaves every file
        // of the data directory (credentials included) as it was.
        let (store, signals) = match storage {
            Some(given) => given,
            None => {
                let signals = Arc::new(Signals::new());
                (open_store(&config, signals.clone()).await?, signals)
            }
        };
        warn_of_the_command_bound(store.as_ref(), config.max_commands).await;
        let (auth, credentials) = authenticator(&config, local_mode, address, &clock).await?;
        let shutdown = CancellationToken::new();
        let policy = policy(&config);
        let metrics = Arc::new(Metrics::with_clock(clock.clone()));
        let scheduler = Arc::new(
            Scheduler::new(
                store.clone(),
                signals.clone(),
                clock.clone(),
                policy.clone(),
                shutdown.clone(),
            )
            .with_metrics(metrics.clone()),
        );
        let artifacts = Arc::new(Artifacts::new(
            config.local_artifacts_dir.clone(),
            config.public_base_url.clone(),
            config.max_artifact_bytes,
        ));

        // Local mode runs on one machine: its webhooks are local too.
        let allow_private = config.webhook_allow_private_networks || local_mode;
        let outbound = Arc::new(
            Outbound::new(
                Duration::from_secs(config.webhook_timeout_seconds),
                config.webhook_hmac_secret.clone(),
                allow_private,
            )
            .context("cannot build the webhook client")?,
        );
        let dispatcher = Dispatcher {
            store: store.clone(),
            signals: signals.clone(),
            outbound: outbound.clone(),
            clock: clock.clone(),
            retries: Retries {
                max_attempts: config.result_webhook_max_attempts,
                backoff: BackoffConfig {
                    policy: BackoffPolicy::ExpEqualJitter,
                    base_seconds: config.result_webhook_base_backoff_seconds,
                    max_seconds: config.result_webhook_max_backoff_seconds,
                },
            },
            offset: config.timezone,
            metrics: metrics.clone(),
            lease: callback_lease(config.webhook_timeout_seconds),
        };
        let subscriptions = Subscriptions {
            store: store.clone(),
            signals: signals.clone(),
            outbound: outbound.clone(),
            clock: clock.clone(),
            offset: config.timezone,
            default_min_interval_seconds: config.subscription_min_interval_seconds,
            progress: Arc::default(),
            metrics: metrics.clone(),
            creating: Arc::default(),
        };
        let cleanup_every = Duration::from_secs(config.subscription_cleanup_interval_seconds);
        let mut background = vec![
            tokio::spawn(subscriptions.clone().notify(shutdown.clone())),
            tokio::spawn(subscriptions.clone().clean_up(cleanup_every, shutdown.clone())),
            tokio::spawn(reaper::run(
                store.clone(),
                signals.clone(),
                clock.clone(),
                policy,
                shutdown.clone(),
                metrics.clone(),
            )),
            tokio::spawn(dispatcher.run(shutdown.clone())),
            tokio::spawn(throughput::run(
                metrics.clone(),
                store.clone(),
                Duration::from_secs(1),
                shutdown.clone(),
            )),
        ];
        if sweeps_artifacts(&config) {
            background.push(tokio::spawn({
                let (store, artifacts, shutdown) =
                    (store.clone(), artifacts.clone(), shutdown.clone());
                async move {
                    artifacts.sweep_orphans(store.as_ref(), &shutdown).await;
                }
            }));
        }
        if config.automatic_cleanup() {
            let interval = Duration::from_secs(config.cleanup_interval_seconds);
            let clock = clock.clone();
            let now = move || clock.now();
            background.push(tokio::spawn(retention::run(
                store.clone(),
                artifacts.clone(),
                config.retention_seconds,
                interval,
                now,
                shutdown.clone(),
            )));
        }

        let control = Control {
            store: store.clone(),
            clock: clock.clone(),
            artifacts: artifacts.clone(),
            metrics: metrics.clone(),
            signals: signals.clone(),
        };
        let state = AppState(Arc::new(Shared {
            outbound,
            subscriptions,
            control,
            scheduler,
            auth: Arc::new(auth),
            artifacts,
            limits: Limits {
                max_payload_bytes: config.max_payload_bytes,
                max_artifact_bytes: config.max_artifact_bytes,
            },
            offset: config.timezone,
            allow_producer_as_worker: config.allow_producer_as_worker,
            bodies: BodyReading {
                budget: Arc::new(BodyBudget::new(config.max_body_bytes_in_flight)),
                pause: Duration::from_secs(config.body_read_timeout_seconds),
                min_bytes_per_second: config.body_min_bytes_per_second,
            },
            metrics,
            ui: config.ui,
        }));
        let timeouts = ConnectionTimeouts {
            head: Duration::from_secs(config.request_head_timeout_seconds),
            keep_alive: Duration::from_secs(config.keep_alive_timeout_seconds),
        };
        let connections =
            Arc::new(ConnectionCap::new(fd_limit::connection_cap(config.max_connections)));
        let grace = Duration::from_secs(config.shutdown_grace_seconds);
        Ok(Self {
            listener,
            state,
            store,
            credentials,
            shutdown,
            background,
            grace,
            _data_dir_lock: data_dir_lock,
            timeouts,
            connections,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The scheduler (tests observe parked long polls through it).
    pub fn scheduler(&self) -> Arc<Scheduler> {
        self.state.scheduler.clone()
    }

    /// The subscriptions service (tests observe its notifier through it).
    pub fn subscriptions(&self) -> Subscriptions {
        self.state.subscriptions.clone()
    }

    /// The cap on open connections, and how many are open.
    pub fn connections(&self) -> Arc<ConnectionCap> {
        self.connections.clone()
    }

    /// The local-mode credentials, and whether they were made or reused.
    pub fn credentials(&self) -> Option<(&LocalCredentials, Origin)> {
        self.credentials.as_ref().map(|(credentials, origin)| (credentials, *origin))
    }

    /// Serves on the current runtime until [`Running::stop`] (for tests and
    /// for programs that embed the server).
    pub fn spawn(self) -> std::io::Result<Running> {
        let address = self.local_addr()?;
        let connections = self.connections();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(self.run_until(async move {
            let _ = stopped.await;
        }));
        Ok(Running { address, stop, task, connections })
    }

    /// Serves until `signal` completes, then shuts down gracefully.
    pub async fn run_until(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let metrics = self.state.metrics.clone();
        let router = http::router(self.state);
        let stops = Stops { drain: self.shutdown.clone(), abort: CancellationToken::new() };
        let mut server = tokio::spawn(http::serve::serve(
            self.listener,
            router,
            self.timeouts,
            self.connections,
            stops.clone(),
            metrics,
        ));
        let storage_failed = self.store.failed();
        tokio::select! {
            () = signal => tracing::info!("shutting down"),
            () = storage_failed.cancelled() => {
                return exit_on_storage_failure(&stops, self.store.as_ref(), &self.background, server).await;
            }
            finished = &mut server => {
                self.shutdown.cancel();
                finished.context("server task failed")?;
            }
        }
        self.shutdown.cancel();
        if tokio::time::timeout(self.grace, &mut server).await.is_err() {
            tracing::warn!(
                grace_seconds = self.grace.as_secs(),
                "in-flight requests did not finish within the grace period; closing them"
            );
            stops.abort.cancel();
            if tokio::time::timeout(ABORT_WAIT, server).await.is_err() {
                tracing::warn!("connections did not close after the grace period");
            }
        }
        for job in self.background {
            let _ = job.await;
        }
        self.store.close().await.context("cannot flush storage")?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Crash-only: once storage has failed, nothing it holds in memory can be
/// trusted and nothing more may be written. Every call is answered 503
/// (507 for the batch that hit a full disk) for a moment, so the answers
/// in flight leave and clients learn why; then the process ends so that a
/// supervisor restarts it and recovery rebuilds from disk.
async fn exit_on_storage_failure<T>(
    stops: &Stops,
    store: &dyn Store,
    background: &[JoinHandle<()>],
    mut server: JoinHandle<T>,
) -> anyhow::Result<()> {
    let cause = store.health().err().map(|e| e.to_string()).unwrap_or_default();
    // Answer 503 (rather than refuse connections) for a moment, then stop.
    let _ = tokio::time::timeout(STORAGE_FAILURE_DRAIN, &mut server).await;
    stops.drain.cancel();
    stops.abort.cancel();
    if tokio::time::timeout(ABORT_WAIT, &mut server).await.is_err() {
        server.abort();
    }
    for job in background {
        job.abort();
    }
    anyhow::bail!("{cause}; exiting so that a restart recovers from disk")
}

/// How long answers in flight may take to leave once storage has failed.
const STORAGE_FAILURE_DRAIN: Duration = Duration::from_millis(500);
/// How long connections may take to close once told to at the end of the
/// grace period (they only need to be dropped).
const ABORT_WAIT: Duration = Duration::from_secs(1);

/// A server started with [`App::spawn`].
pub struct Running {
    address: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
    connections: Arc<ConnectionCap>,
}

impl Running {
    /// `http://<address>` of the server.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The address the server listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.connections.open()
    }

    /// Shuts the server down gracefully and waits until it has stopped.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await.context("server task failed")?
    }

    /// Waits until the server stops on its own (as after a storage
    /// failure), without asking it to.
    pub async fn stopped(&mut self) -> anyhow::Result<()> {
        (&mut self.task).await.context("server task failed")?
    }
}

fn policy(config: &Config) -> Policy {
    Policy {
        default_lease_seconds: config.default_lease_seconds,
        max_lease_seconds: config.max_lease_seconds,
        max_attempts_default: config.max_attempts_default,
        backoff: BackoffConfig {
            policy: config.backoff_policy,
            base_seconds: config.backoff_base_seconds,
            max_seconds: config.backoff_max_seconds,
        },
        requeue_inspect_limit: usize::try_from(config.requeue_inspect_limit).unwrap_or(usize::MAX),
        retention_seconds: config.retention_seconds,
        max_in_flight_calls: config.max_in_flight_calls,
    }
}

async fn open_store(config: &Config, signals: Arc<Signals>) -> Result<Arc<dyn Store>, StartError> {
    match config.storage {
        StorageKind::Embedded => {
            let dir = config.data_dir.join(maintenance::STORE_DIR);
            let options = EmbeddedOptions {
                max_commands: config.max_commands,
                ..EmbeddedOptions::new(config.durability)
            };
            let started = std::time::Instant::now();
            let opened = tokio::task::spawn_blocking(move || {
                EmbeddedStore::open_with(Arc::new(RealFs), &dir, options, signals)
            })
            .await
            .context("storage open task failed")?;
            let store = opened.map_err(|error| refused_store(config, error))?;
            let recovered = store.recovered();
            tracing::info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                tasks = recovered.live,
                journal_bytes = recovered.bytes,
                clean_stop = recovered.clean_stop,
                "storage opened"
            );
            Ok(store)
        }
        StorageKind::Redis => {
            warn_of_an_embedded_store(config);
            open_redis(config, signals).await
        }
    }
}

/// Says at start when the store knows as many commands as `maxCommands`
/// allows (or more: the bound was lowered): a task of a new command is
/// refused until the bound is raised.
async fn warn_of_the_command_bound(store: &dyn Store, max_commands: usize) {
    let Ok(known) = store.all_queue_stats().await.map(|stats| stats.len()) else { return };
    if known >= max_commands {
        tracing::warn!(
            known,
            max_commands,
            "the store knows as many commands as maxCommands allows: tasks and settings of a new \
             command are refused (409 too_many_commands) until it is raised"
        );
    }
}

/// A data directory that holds an embedded store keeps its tasks there:
/// `storage: redis` neither serves nor moves them. Said once at start.
fn warn_of_an_embedded_store(config: &Config) {
    let store = config.data_dir.join(maintenance::STORE_DIR);
    if store.is_dir() {
        tracing::warn!(
            store = %store.display(),
            "this dataDir holds an embedded store: its tasks are not served with storage: redis \
             (docs/storage.md, \"From embedded to Redis\")"
        );
    }
}

/// How long a result callback taken for delivery is kept from the other
/// replicas: two attempts' timeouts and a margin for reading the task.
fn callback_lease(webhook_timeout_seconds: u64) -> Duration {
    Duration::from_secs(webhook_timeout_seconds.saturating_mul(2).saturating_add(5))
}

/// How long start-up waits for Redis to answer before giving up.
const REDIS_START_WAIT: Duration = Duration::from_secs(30);

/// Opens the Redis store: waits (up to [`REDIS_START_WAIT`]) until Redis
/// answers, then refuses (exit 2) a server configured to evict keys.
async fn open_redis(config: &Config, signals: Arc<Signals>) -> Result<Arc<dyn Store>, StartError> {
    let options = RedisOptions {
        username: config.redis_username.clone(),
        max_commands: config.max_commands,
        ..RedisOptions::from_addr(
            &config.redis_addr,
            config.redis_password.as_ref().map(|secret| secret.expose().to_string()),
            config.redis_db,
            &config.redis_key_prefix,
        )
    };
    let deadline = tokio::time::Instant::now() + REDIS_START_WAIT;
    let mut refused_before = false;
    let mut waiting_said = false;
    let store = RedisStore::open(options, signals)
        .map_err(|error| StartError::Refused(format!("cannot use redisAddr: {error}")))?;
    loop {
        match store.check_for_start().await {
            Ok(durability) => {
                warn_about(durability);
                tracing::info!(
                    addr = %config.redis_addr,
                    prefix = %config.redis_key_prefix,
                    ?durability,
                    "storage opened (Redis)"
                );
                return Ok(store);
            }
            Err(CheckError::Refused(why)) => return Err(StartError::Refused(why)),
            Err(CheckError::Misconfigured(why)) if refused_before => {
                return Err(StartError::Refused(why));
            }
            Err(CheckError::Misconfigured(why)) => {
                tracing::warn!(%why, addr = %config.redis_addr, "Redis refused the configuration; asking once more");
                refused_before = true;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(CheckError::Unreachable(error)) if tokio::time::Instant::now() >= deadline => {
                return Err(StartError::Other(anyhow::anyhow!(
                    "Redis at {} was not ready within {} s: {error}",
                    config.redis_addr,
                    REDIS_START_WAIT.as_secs()
                )));
            }
            Err(CheckError::Unreachable(error)) => {
                refused_before = false;
                if !waiting_said {
                    waiting_said = true;
                    tracing::warn!(%error, addr = %config.redis_addr, "waiting for Redis (up to 30 s)");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Whether the artifacts of deleted tasks are swept at start: only where
/// the artifact directory is the embedded store's own (`dataDir/artifacts`),
/// so that a store that is not theirs (another data directory, a Redis
/// other replicas or deployments share a volume with) never removes them.
fn sweeps_artifacts(config: &Config) -> bool {
    config.storage == StorageKind::Embedded
        && config.local_artifacts_dir == config.data_dir.join("artifacts")
}

/// Why the store did not open, and what the operator can do.
fn refused_store(config: &Config, error: OpenError) -> StartError {
    let data_dir = config.data_dir.display();
    match error {
        OpenError::Damaged { .. } => StartError::Refused(format!(
            "{error}.\nNothing was changed. Run `codeq storage check {data_dir}` for details; \
             restore the data directory from a backup (`codeq storage backup`), or move it \
             away to start empty."
        )),
        OpenError::InUse(_) => {
            StartError::Refused(format!("{error}: is another `codeq serve` running on {data_dir}?"))
        }
        OpenError::Io(cause) if cause.kind() == std::io::ErrorKind::StorageFull => {
            StartError::Other(anyhow::anyhow!(
                "cannot open storage in {data_dir}: {cause}: free some space on its disk and \
                 start again (nothing acknowledged is lost)"
            ))
        }
        OpenError::Io(cause) => {
            StartError::Other(anyhow::anyhow!("cannot open storage in {data_dir}: {cause}"))
        }
    }
}

/// Connections the kernel completes and holds while every connection slot
/// is taken (capped by `net.core.somaxconn`). Beyond it, new clients' SYNs
/// are dropped and they retry after 1 s, 3 s, 7 s…; in the backlog they are
/// accepted in turn as slots free.
const LISTEN_BACKLOG: u32 = 1024;

/// Binds `host:port` (the first address it resolves to that can be bound)
/// with [`LISTEN_BACKLOG`].
async fn listen(host: &str, port: u16) -> std::io::Result<TcpListener> {
    let mut failure = None;
    for address in tokio::net::lookup_host((host, port)).await? {
        let socket = if address.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        match socket.bind(address) {
            Ok(()) => return socket.listen(LISTEN_BACKLOG),
            Err(error) => failure = Some(error),
        }
    }
    Err(failure.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, "the host resolves to no address")
    }))
}

/// How long one JWKS request may take.
const JWKS_TIMEOUT: Duration = Duration::from_secs(5);

/// The token sources: in local mode the generated tokens; otherwise the
/// static tokens first (a cheap digest comparison), then the JWT issuers.
async fn authenticator(
    config: &Config,
    local_mode: bool,
    address: SocketAddr,
    clock: &Arc<dyn Clock>,
) -> Result<(Authenticator, Option<(LocalCredentials, Origin)>), StartError> {
    if local_mode {
        let base_url = format!("http://{address}");
        let (credentials, origin) = LocalCredentials::load_or_create(&config.data_dir, &base_url)
            .with_context(|| {
            format!("cannot write credentials in {}", config.data_dir.display())
        })?;
        let auth = Authenticator::new(vec![Arc::new(credentials.verifier())]);
        return Ok((auth, Some((credentials, origin))));
    }
    let mut verifiers: Vec<Arc<dyn TokenVerifier>> = Vec::new();
    if !config.static_tokens.is_empty() {
        let verifier = static_verifier(&config.static_tokens).map_err(StartError::Refused)?;
        verifiers.push(Arc::new(verifier.honouring_x_role(config.env == Env::Dev)));
    }
    if let Some(verifier) = jwt_verifier(config, clock)? {
        fetch_jwks(&verifier).await;
        verifiers.push(Arc::new(verifier));
    }
    Ok((Authenticator::new(verifiers), None))
}

/// The verifier of producer and worker JWTs, when a JWKS URL is set. Two
/// issuers sharing one JWKS URL share its cache.
fn jwt_verifier(
    config: &Config,
    clock: &Arc<dyn Clock>,
) -> Result<Option<JwtVerifier>, StartError> {
    if config.identity_jwks_url.is_none() && config.worker_jwks_url.is_none() {
        return Ok(None);
    }
    let http = reqwest::Client::builder()
        .timeout(JWKS_TIMEOUT)
        .build()
        .context("cannot build the JWKS HTTP client")?;
    let mut documents: Vec<Arc<Jwks>> = Vec::new();
    let mut jwks_for = |url: &str| {
        if let Some(found) = documents.iter().find(|jwks| jwks.url() == url) {
            return found.clone();
        }
        let jwks = Arc::new(Jwks::new(url, http.clone(), clock.clone()));
        documents.push(jwks.clone());
        jwks
    };
    let mut issuers = Vec::new();
    let sources = [
        (
            PrincipalKind::Producer,
            &config.identity_jwks_url,
            &config.identity_issuer,
            config.identity_audience.clone(),
            "identityIssuer",
        ),
        (
            PrincipalKind::Worker,
            &config.worker_jwks_url,
            &config.worker_issuer,
            Some(config.worker_audience.clone()).filter(|aud| !aud.is_empty()),
            "workerIssuer",
        ),
    ];
    for (kind, url, issuer, audience, issuer_key) in sources {
        let Some(url) = url else { continue };
        let issuer = issuer.clone().ok_or_else(|| {
            StartError::Refused(format!("{issuer_key} is required with its JWKS URL"))
        })?;
        issuers.push(TrustedIssuer { kind, issuer, audience, jwks: jwks_for(url) });
    }
    let skew = Duration::from_secs(config.allowed_clock_skew_seconds);
    let honour_x_role = config.env == Env::Dev;
    Ok(Some(JwtVerifier::new(issuers, clock.clone(), skew, honour_x_role)))
}

/// Fetches every JWKS once before serving. A JWKS that is down does not
/// stop the server: it is logged, and its tokens are refused until a later
/// fetch succeeds (the first token that needs it tries again, then at most
/// one try per 30 s).
async fn fetch_jwks(verifier: &JwtVerifier) {
    for jwks in verifier.jwks() {
        if jwks.refresh().await.is_err() {
            tracing::warn!(
                url = jwks.url(),
                "starting without this JWKS: tokens it signs get 401 until it can be fetched"
            );
        }
    }
}

/// The verifier of the configured `staticTokens`.
fn static_verifier(entries: &[StaticTokenConfig]) -> Result<StaticTokenVerifier, String> {
    let tokens = entries
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            let grant = StaticGrant {
                kind: match entry.kind {
                    TokenKind::Producer => PrincipalKind::Producer,
                    TokenKind::Worker => PrincipalKind::Worker,
                },
                sub: entry.sub.clone(),
                event_types: entry.event_types.clone(),
                scopes: entry.scopes.clone(),
                worker_group: entry.worker_group.clone(),
                admin: entry.admin,
            };
            let token = match (&entry.token, &entry.token_sha256) {
                (Some(token), _) => StaticToken::from_plain(token.expose(), grant),
                (None, Some(digest)) => StaticToken::from_sha256_hex(digest, grant),
                (None, None) => {
                    return Err(format!("staticTokens[{index}]: needs token or tokenSha256"));
                }
            };
            token.map_err(|e| format!("staticTokens[{index}]: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    StaticTokenVerifier::new(tokens).map_err(|e| format!("staticTokens: {e}"))
}

/// Runs `codeq serve`: loads the configuration, starts the server and
/// blocks until it has shut down. Exit code 2 for a configuration error.
pub fn serve_main(overrides: ConfigOverrides) -> ExitCode {
    let config = match Config::from_process_env(&overrides) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("codeq: configuration error: {error}");
            return ExitCode::from(2);
        }
    };
    crate::logging::init(&config);
    fd_limit::raise_soft_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.request_threads())
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("codeq: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // From here on, what goes wrong is a log line in `logFormat`.
    let code = runtime.block_on(async move {
        // Installed first: a stop asked for during start-up (a long wait
        // for Redis, say) ends it cleanly, not by the signal's default.
        let mut signal = match shutdown_signal() {
            Ok(signal) => Box::pin(signal),
            Err(error) => {
                tracing::error!("cannot install signal handlers: {error}");
                return ExitCode::FAILURE;
            }
        };
        let built = tokio::select! {
            built = App::build(config.clone()) => built,
            () = &mut signal => {
                tracing::warn!("stopped during start-up, before the server was ready");
                return ExitCode::SUCCESS;
            }
        };
        let app = match built {
            Ok(app) => app,
            Err(error) => {
                tracing::error!("{error:#}");
                return error.exit_code();
            }
        };
        announce(&app, &config);
        match app.run_until(signal).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!("{error:#}");
                ExitCode::FAILURE
            }
        }
    });
    crate::logging::flush();
    code
}

/// Prints where the server listens and, in local mode, its tokens. A
/// closed stdout (the launcher went away) is not a reason to stop serving.
fn announce(app: &App, config: &Config) {
    use std::io::Write;
    let address = app.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let mut out = std::io::stdout().lock();
    let mut lines = vec![format!(
        "codeQ listening on http://{address} (storage: {}, data: {})",
        config.storage,
        config.data_dir.display()
    )];
    if let Some((credentials, origin)) = app.credentials() {
        let saved = LocalCredentials::path(&config.data_dir);
        lines.push(match origin {
            Origin::Generated => format!(
                "local mode: no tokens configured, generated these (saved in {}):",
                saved.display()
            ),
            Origin::Reused => format!(
                "local mode: no tokens configured, reusing these (from {}):",
                saved.display()
            ),
        });
        lines.push(format!("  producer token: {}", credentials.producer_token));
        lines.push(format!("  worker token:   {}", credentials.worker_token));
    }
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
    let _ = out.flush();
}

/// Registers SIGINT and SIGTERM handlers now (so a signal that arrives
/// right after start-up is not lost) and returns a future that completes on
/// either.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_data_directory_s_own_artifacts_are_swept() {
        let dir = std::path::Path::new("/srv/codeq");
        let own = Config::default_for_tests(dir);
        let elsewhere =
            Config { local_artifacts_dir: "/mnt/shared/artifacts".into(), ..own.clone() };
        let on_redis = Config { storage: StorageKind::Redis, ..own.clone() };

        assert!(sweeps_artifacts(&own));
        assert!(!sweeps_artifacts(&elsewhere), "another store's files may be there");
        assert!(!sweeps_artifacts(&on_redis), "a shared store and per-replica files");
    }
}
