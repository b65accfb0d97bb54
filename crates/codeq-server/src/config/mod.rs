//! Server configuration: the YAML file, the environment and the `codeq
//! serve` flags, merged into one typed, validated [`Config`] (docs/configuration.md).
//!
//! The configuration is read and checked once, at startup, by
//! [`Config::load`]; the rest of the server takes a finished `Config` and
//! never reads the environment itself. Tests build the struct directly
//! ([`Config::default_for_tests`]) instead of setting env vars.
//!
//! Precedence, per key: flag > env > YAML file > default. The file comes
//! from `--config`, else `CODEQ_CONFIG`. Every key has an env var
//! `CODEQ_<UPPER_SNAKE_KEY>` and some also the original service's name
//! (`PORT`, `REDIS_ADDR`, …); the `CODEQ_` one wins. An unknown key in the
//! file or a bad value from any source is a [`ConfigError`] naming the key
//! and the source; `codeq serve` prints it and exits with code 2.
//! `docs/configuration.md` is the reference for operators.
//!
//! Layout:
//! - `sources`: the key table, and reading the file, env and flags into layers.
//! - `value`: the value types (enums, [`Secret`], timezone, URLs) and how
//!   each is read from text or YAML.
//! - `tokens`: `staticTokens` entries ([`StaticTokenConfig`]).

mod sources;
mod tokens;
mod value;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};

use codeq_core::{BackoffConfig, BackoffPolicy};
use time::UtcOffset;

use self::sources::{Layer, Sourced};
pub use self::tokens::{KNOWN_SCOPES, StaticTokenConfig, TokenKind, sha256_hex};
pub use self::value::{
    Durability, Env, LogFormat, LogLevel, Secret, StorageKind, UnknownKeyword, parse_timezone,
};
use crate::http::body::BodyLimits;

/// The env var naming the configuration file when `--config` is not given.
pub const CONFIG_PATH_ENV: &str = "CODEQ_CONFIG";

/// Values given on the `codeq serve` command line; they win over env and file.
#[derive(Debug, Clone, Default)]
pub struct ConfigOverrides {
    /// `--config FILE` (else env `CODEQ_CONFIG`).
    pub config_path: Option<PathBuf>,
    /// `--host`.
    pub host: Option<String>,
    /// `--port`.
    pub port: Option<u16>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--storage`.
    pub storage: Option<String>,
}

impl ConfigOverrides {
    /// The keys the flags set (and `CODEQ_CONFIG` for `--config`): their
    /// environment variables are not read.
    fn flagged(&self) -> Vec<&'static str> {
        let set = [
            (self.config_path.is_some(), CONFIG_PATH_ENV),
            (self.host.is_some(), "host"),
            (self.port.is_some(), "port"),
            (self.data_dir.is_some(), "dataDir"),
            (self.storage.is_some(), "storage"),
        ];
        set.into_iter().filter_map(|(set, key)| set.then_some(key)).collect()
    }
}

/// The server configuration, complete and validated. One field per key of
/// docs/configuration.md; the YAML name of each is given first in its doc.
#[derive(Debug, Clone)]
pub struct Config {
    /// `host`: address to listen on. Default `127.0.0.1`.
    pub host: String,
    /// `port`: port to listen on; 0 picks a free one (tests). Default 8080.
    pub port: u16,
    /// `env`: `dev` enables the `X-Role` header of docs/security.md. Default `prod`.
    pub env: Env,
    /// `timezone`: `UTC`, `Z` or a fixed offset such as `+02:00`, for
    /// human-facing times; API timestamps are always UTC. IANA zone names
    /// are not supported (no time zone database). Default UTC.
    pub timezone: UtcOffset,
    /// `logLevel`. Default `info`.
    pub log_level: LogLevel,
    /// `logFormat`. Default `json`, `text` in local mode (no tokens
    /// configured).
    pub log_format: LogFormat,
    /// `storage`: `embedded` or `redis`. Default `embedded`.
    pub storage: StorageKind,
    /// `dataDir`: the embedded store's directory, and where local mode keeps
    /// `credentials.json`. Default `./codeq-data`.
    pub data_dir: PathBuf,
    /// `durability`: `fsync` or `buffered` (embedded storage). Default `fsync`.
    pub durability: Durability,
    /// `redisAddr`: `host:port` of Redis or KVRocks. Default `localhost:6379`.
    pub redis_addr: String,
    /// `redisUsername`: the ACL user to authenticate as (with
    /// `redisPassword`). Default none: Redis's default user.
    pub redis_username: Option<String>,
    /// `redisPassword` (also `REDIS_PASSWORD`, `KVROCKS_PASSWORD`). Default none.
    pub redis_password: Option<Secret>,
    /// `redisDb`: database index. Default 0.
    pub redis_db: u32,
    /// `redisKeyPrefix`: every key is `<prefix>:…`. Default `codeq`.
    pub redis_key_prefix: String,
    /// `defaultLeaseSeconds`: lease of a claim that names none; 1 to
    /// `maxLeaseSeconds`. Default 300.
    pub default_lease_seconds: u64,
    /// `maxLeaseSeconds`: the longest lease a claim or heartbeat may ask
    /// for; at least 1. Default 43200.
    pub max_lease_seconds: u64,
    /// `maxAttemptsDefault`: deliveries before dead-lettering, for tasks
    /// that name none; 1 to 1000. Default 5.
    pub max_attempts_default: u32,
    /// `backoffPolicy`. Default `exp_full_jitter`.
    pub backoff_policy: BackoffPolicy,
    /// `backoffBaseSeconds`. Default 5.
    pub backoff_base_seconds: u64,
    /// `backoffMaxSeconds`: at least 1 and at least `backoffBaseSeconds`.
    /// Default 900.
    pub backoff_max_seconds: u64,
    /// `requeueInspectLimit`: the most items one reaper pass moves per
    /// command; at least 1. Default 200.
    pub requeue_inspect_limit: u32,
    /// `retentionSeconds`: how long terminal tasks and their results are
    /// kept (0: eligible for cleanup at once). Default 86400.
    pub retention_seconds: u64,
    /// `cleanupIntervalSeconds`: time between cleanup passes; 0 disables
    /// automatic cleanup. Default 3600.
    pub cleanup_interval_seconds: u64,
    /// `maxPayloadBytes`: the largest task payload; at least 1. Default 1 MiB.
    pub max_payload_bytes: usize,
    /// `maxArtifactBytes`: the largest artifact; at least 1. Default 10 MiB.
    pub max_artifact_bytes: usize,
    /// `maxCommands`: how many commands the storage knows at most (a task
    /// or queue settings of one more are refused); at least 1. Default
    /// 1000.
    pub max_commands: usize,
    /// `identityServiceUrl`: base URL of the identity service issuing
    /// producer JWTs; sets the defaults of the next two. Default none.
    pub identity_service_url: Option<String>,
    /// `identityJwksUrl`: JWKS of producer JWTs. Default
    /// `{identityServiceUrl}/v1/.well-known/jwks.json` when that is set.
    pub identity_jwks_url: Option<String>,
    /// `identityIssuer`: required `iss` of producer JWTs. Default
    /// `identityServiceUrl` when that is set.
    pub identity_issuer: Option<String>,
    /// `identityAudience`: `aud` producer JWTs must contain, when set.
    pub identity_audience: Option<String>,
    /// `identityServiceApiKey`: key for calls to the identity service.
    pub identity_service_api_key: Option<Secret>,
    /// `workerJwksUrl`: JWKS of worker JWTs. Default none (no worker JWTs).
    pub worker_jwks_url: Option<String>,
    /// `workerIssuer`: required `iss` of worker JWTs.
    pub worker_issuer: Option<String>,
    /// `workerAudience`: `aud` worker JWTs must contain. Default `codeq-worker`.
    pub worker_audience: String,
    /// `allowedClockSkewSeconds`: leeway on `exp`, `nbf`, `iat`. Default 60.
    pub allowed_clock_skew_seconds: u64,
    /// `allowProducerAsWorker`: producer tokens may call worker endpoints.
    /// Default false.
    pub allow_producer_as_worker: bool,
    /// `staticTokens` (env `CODEQ_STATIC_TOKENS` as a JSON array). Default empty.
    pub static_tokens: Vec<StaticTokenConfig>,
    /// `webhookHmacSecret`: signs every webhook when set. Default none.
    pub webhook_hmac_secret: Option<Secret>,
    /// `webhookTimeoutSeconds`: per delivery attempt; at least 1. Default 10.
    pub webhook_timeout_seconds: u64,
    /// `webhookAllowPrivateNetworks`: allow webhook targets on loopback,
    /// private and link-local addresses. Default false.
    pub webhook_allow_private_networks: bool,
    /// `subscriptionMinIntervalSeconds`: least time between two
    /// notifications to one subscription. Default 5.
    pub subscription_min_interval_seconds: u64,
    /// `subscriptionCleanupIntervalSeconds`: time between removals of
    /// expired subscriptions; at least 1. Default 60.
    pub subscription_cleanup_interval_seconds: u64,
    /// `resultWebhookMaxAttempts`: deliveries of one result callback; at
    /// least 1. Default 5.
    pub result_webhook_max_attempts: u32,
    /// `resultWebhookBaseBackoffSeconds`. Default 2.
    pub result_webhook_base_backoff_seconds: u64,
    /// `resultWebhookMaxBackoffSeconds`: at least 1 and at least the base.
    /// Default 60.
    pub result_webhook_max_backoff_seconds: u64,
    /// `localArtifactsDir`: where artifacts are stored. Default
    /// `<dataDir>/artifacts`, with the final `dataDir`.
    pub local_artifacts_dir: PathBuf,
    /// `publicBaseUrl`: the server's external URL, for links it hands out;
    /// a trailing `/` is removed. Default none.
    pub public_base_url: Option<String>,
    /// `shutdownGraceSeconds`: how long in-flight requests may take to
    /// finish after SIGINT/SIGTERM. Default 30.
    pub shutdown_grace_seconds: u64,
    /// `ui`: serve the web dashboard under `/ui/`. Default true.
    pub ui: bool,
    /// `maxInFlightCalls`: storage calls served at once; a request beyond
    /// it is answered 503 `overloaded` with `Retry-After` instead of
    /// queueing without end (parked long polls do not count). At least 1.
    /// Default 1024.
    pub max_in_flight_calls: usize,
    /// `requestHeadTimeoutSeconds`: how long a client may take to send a
    /// request's head (request line and headers), counted from the
    /// connection's opening or from the first byte of a later request on
    /// it; at least 1. Default 10.
    pub request_head_timeout_seconds: u64,
    /// `keepAliveTimeoutSeconds`: how long a connection may stay idle
    /// between two requests; at least 1. Default 60.
    pub keep_alive_timeout_seconds: u64,
    /// `bodyReadTimeoutSeconds`: the longest pause while a request body
    /// arrives; at least 1. Default 10.
    pub body_read_timeout_seconds: u64,
    /// `bodyMinBytesPerSecond`: a whole body must arrive within
    /// `bodyReadTimeoutSeconds` plus its length at this rate; at least 1.
    /// Default 16384.
    pub body_min_bytes_per_second: u64,
    /// `workerThreads`: threads serving requests. Default: one fewer than
    /// the CPUs (at least 1), leaving a core to the journal's committer
    /// (or the Redis store's thread), the log writer and the kernel's
    /// network and disk work (on 2 cores, one request thread ran 23 % more
    /// cycles per second at a quarter less CPU per cycle than two:
    /// docs/performance.md).
    pub worker_threads: Option<usize>,
    /// `maxConnections`: the most connections open at once; more wait in
    /// the listen backlog. At least 1. Default 10000 (lowered at start when
    /// the open-file limit cannot hold that many).
    pub max_connections: u32,
    /// `maxBodyBytesInFlight`: the most bytes of request bodies being
    /// received and handled at once, counted by their declared length;
    /// beyond, 503. At least the largest body one route accepts. Default
    /// 2 GiB.
    pub max_body_bytes_in_flight: u64,
}

impl Default for Config {
    /// The defaults of docs/configuration.md.
    fn default() -> Self {
        let data_dir = PathBuf::from("./codeq-data");
        Self {
            host: "127.0.0.1".to_string(),
            port: 8080,
            env: Env::Prod,
            timezone: UtcOffset::UTC,
            log_level: LogLevel::Info,
            log_format: LogFormat::Json,
            storage: StorageKind::Embedded,
            local_artifacts_dir: data_dir.join("artifacts"),
            data_dir,
            durability: Durability::Fsync,
            redis_addr: "localhost:6379".to_string(),
            redis_username: None,
            redis_password: None,
            redis_db: 0,
            redis_key_prefix: "codeq".to_string(),
            default_lease_seconds: 300,
            max_lease_seconds: 43_200,
            max_attempts_default: 5,
            backoff_policy: BackoffPolicy::ExpFullJitter,
            backoff_base_seconds: 5,
            backoff_max_seconds: 900,
            requeue_inspect_limit: 200,
            retention_seconds: 86_400,
            cleanup_interval_seconds: 3_600,
            max_payload_bytes: 1_048_576,
            max_artifact_bytes: 10_485_760,
            max_commands: crate::store::DEFAULT_MAX_COMMANDS,
            identity_service_url: None,
            identity_jwks_url: None,
            identity_issuer: None,
            identity_audience: None,
            identity_service_api_key: None,
            worker_jwks_url: None,
            worker_issuer: None,
            worker_audience: "codeq-worker".to_string(),
            allowed_clock_skew_seconds: 60,
            allow_producer_as_worker: false,
            static_tokens: Vec::new(),
            webhook_hmac_secret: None,
            webhook_timeout_seconds: 10,
            webhook_allow_private_networks: false,
            subscription_min_interval_seconds: 5,
            subscription_cleanup_interval_seconds: 60,
            result_webhook_max_attempts: 5,
            result_webhook_base_backoff_seconds: 2,
            result_webhook_max_backoff_seconds: 60,
            public_base_url: None,
            worker_threads: None,
            shutdown_grace_seconds: 30,
            ui: true,
            max_in_flight_calls: 1024,
            request_head_timeout_seconds: 10,
            keep_alive_timeout_seconds: 60,
            body_read_timeout_seconds: 10,
            body_min_bytes_per_second: 16 * 1024,
            max_connections: 10_000,
            max_body_bytes_in_flight: 2 * 1024 * 1024 * 1024,
        }
    }
}

/// Where a value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The built-in default.
    Default,
    /// The YAML file at this path.
    File(PathBuf),
    /// This environment variable.
    Env(String),
    /// This command-line flag.
    Flag(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("default"),
            Self::File(path) => write!(f, "file {}", path.display()),
            Self::Env(name) => write!(f, "env {name}"),
            Self::Flag(name) => write!(f, "flag {name}"),
        }
    }
}

/// Why the configuration could not be loaded. `codeq serve` prints it and
/// exits with code 2. No message holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {}: {source}", .path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The I/O failure.
        source: std::io::Error,
    },
    /// The file is not YAML.
    #[error("configuration file {} is not valid YAML: {message}", .path.display())]
    ParseFile {
        /// The file.
        path: PathBuf,
        /// The parser's message, with a position.
        message: String,
    },
    /// The file is YAML but not a mapping of keys to values.
    #[error("configuration file {} must be a mapping of keys to values", .path.display())]
    NotAMapping {
        /// The file.
        path: PathBuf,
    },
    /// The file has a key that is not a configuration key.
    #[error("unknown configuration key {key:?} in {}{}", .path.display(), did_you_mean(.suggestion))]
    UnknownKey {
        /// The key as written.
        key: String,
        /// The file.
        path: PathBuf,
        /// A key spelled almost the same.
        suggestion: Option<&'static str>,
    },
    /// A value is malformed, out of range or inconsistent with another.
    #[error("invalid value for {key} ({origin}): {reason}")]
    Invalid {
        /// The camelCase key.
        key: &'static str,
        /// Where the bad value came from.
        origin: Origin,
        /// What is wrong with it.
        reason: String,
    },
    /// A key that another key needs is not set.
    #[error("missing configuration key {key}: {reason}")]
    Missing {
        /// The camelCase key that is missing.
        key: &'static str,
        /// Which key needs it.
        reason: String,
    },
    /// An environment variable the configuration reads is not UTF-8.
    #[error("environment variable {name} is not valid UTF-8")]
    NotUnicode {
        /// The variable.
        name: String,
    },
}

fn did_you_mean(suggestion: &Option<&'static str>) -> String {
    suggestion.map(|key| format!(" (did you mean {key:?}?)")).unwrap_or_default()
}

impl Config {
    /// Loads the configuration from the flags in `overrides`, the
    /// environment as read through `env`, and the YAML file named by
    /// `overrides.config_path` or else `CODEQ_CONFIG`, over the defaults.
    ///
    /// `env` returns a variable's value; an empty value counts as unset.
    pub fn load(
        overrides: &ConfigOverrides,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let path = overrides
            .config_path
            .clone()
            .or_else(|| env(CONFIG_PATH_ENV).filter(|path| !path.is_empty()).map(PathBuf::from));
        let mut layer = match &path {
            Some(path) => sources::file_layer(path)?,
            None => Layer::default(),
        };
        layer.overlay(sources::env_layer(env)?);
        layer.overlay(sources::flag_layer(overrides)?);
        Self::resolve(layer)
    }

    /// [`Config::load`] with the process environment.
    pub fn from_process_env(overrides: &ConfigOverrides) -> Result<Config, ConfigError> {
        check_unicode(&|name| std::env::var_os(name), &overrides.flagged())?;
        Self::load(overrides, &|name| std::env::var(name).ok())
    }

    /// The defaults, with `data_dir` (and the artifacts below it) and port 0,
    /// for tests that build a server without reading any environment.
    pub fn default_for_tests(data_dir: &Path) -> Config {
        Config {
            port: 0,
            data_dir: data_dir.to_path_buf(),
            local_artifacts_dir: data_dir.join("artifacts"),
            ..Config::default()
        }
    }

    /// The retry policy of a nack or an expired lease.
    pub fn backoff(&self) -> BackoffConfig {
        BackoffConfig {
            policy: self.backoff_policy,
            base_seconds: self.backoff_base_seconds,
            max_seconds: self.backoff_max_seconds,
        }
    }

    /// Whether terminal tasks are removed automatically
    /// (`cleanupIntervalSeconds` is not 0). `retentionSeconds: 0` makes
    /// terminal tasks eligible at once, for automatic and admin cleanup alike.
    pub fn automatic_cleanup(&self) -> bool {
        self.cleanup_interval_seconds > 0
    }

    /// Local mode (docs/security.md): no producer JWKS, no worker JWKS and no static
    /// token is configured, so the server makes its own credentials.
    pub fn local_mode(&self) -> bool {
        self.identity_jwks_url.is_none()
            && self.worker_jwks_url.is_none()
            && self.static_tokens.is_empty()
    }

    /// Completes the stacked layers with defaults and derived values, and
    /// applies the rules that involve more than one key.
    fn resolve(layer: Layer) -> Result<Config, ConfigError> {
        let d = Config::default();

        let default_lease = pick(layer.default_lease_seconds, d.default_lease_seconds);
        let max_lease = pick(layer.max_lease_seconds, d.max_lease_seconds);
        not_above("defaultLeaseSeconds", &default_lease, "maxLeaseSeconds", &max_lease)?;
        let backoff_base = pick(layer.backoff_base_seconds, d.backoff_base_seconds);
        let backoff_max = pick(layer.backoff_max_seconds, d.backoff_max_seconds);
        not_above("backoffBaseSeconds", &backoff_base, "backoffMaxSeconds", &backoff_max)?;
        let result_base =
            pick(layer.result_webhook_base_backoff_seconds, d.result_webhook_base_backoff_seconds);
        let result_max =
            pick(layer.result_webhook_max_backoff_seconds, d.result_webhook_max_backoff_seconds);
        not_above(
            "resultWebhookBaseBackoffSeconds",
            &result_base,
            "resultWebhookMaxBackoffSeconds",
            &result_max,
        )?;

        // Producer JWTs: the service URL gives the JWKS and issuer defaults;
        // a JWKS without an issuer (or the reverse) would accept tokens
        // from anyone that key set signs for, so both or neither.
        let service = layer.identity_service_url.map(|url| url.value);
        let jwks = layer.identity_jwks_url.or_else(|| {
            service.as_ref().map(|url| Sourced {
                value: format!("{}/v1/.well-known/jwks.json", url.trim_end_matches('/')),
                origin: Origin::Default,
            })
        });
        let issuer = layer
            .identity_issuer
            .or_else(|| service.clone().map(|url| Sourced { value: url, origin: Origin::Default }));
        let or_service = Some("identityServiceUrl");
        both_or_neither(("identityJwksUrl", &jwks), ("identityIssuer", &issuer), or_service)?;
        if let (Some(audience), None) = (&layer.identity_audience, &jwks) {
            return Err(missing(
                "identityJwksUrl",
                "identityAudience",
                &audience.origin,
                or_service,
            ));
        }
        both_or_neither(
            ("workerJwksUrl", &layer.worker_jwks_url),
            ("workerIssuer", &layer.worker_issuer),
            None,
        )?;
        let worker_audience = pick(layer.worker_audience.clone(), d.worker_audience.clone());
        if let (Some(issuer), Some(worker_issuer), Some(audience)) =
            (&issuer, &layer.worker_issuer, &layer.identity_audience)
            && issuer.value == worker_issuer.value
            && audience.value == worker_audience.value
        {
            return Err(ConfigError::Invalid {
                key: "identityAudience",
                origin: audience.origin.clone(),
                reason: format!(
                    "{:?} is also workerAudience while identityIssuer is workerIssuer: a worker's \
                     token could not be told from a producer's; give them different audiences",
                    audience.value
                ),
            });
        }

        // An ACL user name is sent only with a password (AUTH user password).
        let redis = layer.storage.as_ref().is_some_and(|kind| kind.value == StorageKind::Redis);
        if let (true, Some(user), None) = (redis, &layer.redis_username, &layer.redis_password) {
            return Err(missing("redisPassword", "redisUsername", &user.origin, None));
        }

        let max_payload = pick(layer.max_payload_bytes, d.max_payload_bytes);
        let max_artifact = pick(layer.max_artifact_bytes, d.max_artifact_bytes);
        let body_budget = pick(layer.max_body_bytes_in_flight, d.max_body_bytes_in_flight);
        budget_holds_the_largest_body(&body_budget, &max_payload, &max_artifact)?;

        let static_tokens = pick(layer.static_tokens, d.static_tokens).value;
        // Local mode is a person at a laptop: readable lines by default.
        let local_mode =
            static_tokens.is_empty() && jwks.is_none() && layer.worker_jwks_url.is_none();
        let log_format = if local_mode { LogFormat::Text } else { d.log_format };

        let data_dir = pick(layer.data_dir, d.data_dir).value;
        let local_artifacts_dir =
            value(layer.local_artifacts_dir).unwrap_or_else(|| data_dir.join("artifacts"));

        Ok(Config {
            host: pick(layer.host, d.host).value,
            port: pick(layer.port, d.port).value,
            env: pick(layer.env, d.env).value,
            timezone: pick(layer.timezone, d.timezone).value,
            log_level: pick(layer.log_level, d.log_level).value,
            log_format: pick(layer.log_format, log_format).value,
            storage: pick(layer.storage, d.storage).value,
            data_dir,
            durability: pick(layer.durability, d.durability).value,
            redis_addr: pick(layer.redis_addr, d.redis_addr).value,
            redis_username: value(layer.redis_username),
            redis_password: value(layer.redis_password),
            redis_db: pick(layer.redis_db, d.redis_db).value,
            redis_key_prefix: pick(layer.redis_key_prefix, d.redis_key_prefix).value,
            default_lease_seconds: default_lease.value,
            max_lease_seconds: max_lease.value,
            max_attempts_default: pick(layer.max_attempts_default, d.max_attempts_default).value,
            backoff_policy: pick(layer.backoff_policy, d.backoff_policy).value,
            backoff_base_seconds: backoff_base.value,
            backoff_max_seconds: backoff_max.value,
            requeue_inspect_limit: pick(layer.requeue_inspect_limit, d.requeue_inspect_limit).value,
            retention_seconds: pick(layer.retention_seconds, d.retention_seconds).value,
            cleanup_interval_seconds: pick(
                layer.cleanup_interval_seconds,
                d.cleanup_interval_seconds,
            )
            .value,
            max_payload_bytes: max_payload.value,
            max_artifact_bytes: max_artifact.value,
            max_commands: pick(layer.max_commands, d.max_commands).value,
            identity_service_url: service,
            identity_jwks_url: value(jwks),
            identity_issuer: value(issuer),
            identity_audience: value(layer.identity_audience),
            identity_service_api_key: value(layer.identity_service_api_key),
            worker_jwks_url: value(layer.worker_jwks_url),
            worker_issuer: value(layer.worker_issuer),
            worker_audience: worker_audience.value,
            allowed_clock_skew_seconds: pick(
                layer.allowed_clock_skew_seconds,
                d.allowed_clock_skew_seconds,
            )
            .value,
            allow_producer_as_worker: pick(
                layer.allow_producer_as_worker,
                d.allow_producer_as_worker,
            )
            .value,
            static_tokens,
            webhook_hmac_secret: value(layer.webhook_hmac_secret),
            webhook_timeout_seconds: pick(layer.webhook_timeout_seconds, d.webhook_timeout_seconds)
                .value,
            webhook_allow_private_networks: pick(
                layer.webhook_allow_private_networks,
                d.webhook_allow_private_networks,
            )
            .value,
            subscription_min_interval_seconds: pick(
                layer.subscription_min_interval_seconds,
                d.subscription_min_interval_seconds,
            )
            .value,
            subscription_cleanup_interval_seconds: pick(
                layer.subscription_cleanup_interval_seconds,
                d.subscription_cleanup_interval_seconds,
            )
            .value,
            result_webhook_max_attempts: pick(
                layer.result_webhook_max_attempts,
                d.result_webhook_max_attempts,
            )
            .value,
            result_webhook_base_backoff_seconds: result_base.value,
            result_webhook_max_backoff_seconds: result_max.value,
            local_artifacts_dir,
            public_base_url: value(layer.public_base_url)
                .map(|url| url.trim_end_matches('/').to_string()),
            shutdown_grace_seconds: pick(layer.shutdown_grace_seconds, d.shutdown_grace_seconds)
                .value,
            ui: pick(layer.ui, d.ui).value,
            max_in_flight_calls: pick(layer.max_in_flight_calls, d.max_in_flight_calls).value,
            request_head_timeout_seconds: pick(
                layer.request_head_timeout_seconds,
                d.request_head_timeout_seconds,
            )
            .value,
            keep_alive_timeout_seconds: pick(
                layer.keep_alive_timeout_seconds,
                d.keep_alive_timeout_seconds,
            )
            .value,
            body_read_timeout_seconds: pick(
                layer.body_read_timeout_seconds,
                d.body_read_timeout_seconds,
            )
            .value,
            body_min_bytes_per_second: pick(
                layer.body_min_bytes_per_second,
                d.body_min_bytes_per_second,
            )
            .value,
            worker_threads: value(layer.worker_threads),
            max_connections: pick(layer.max_connections, d.max_connections).value,
            max_body_bytes_in_flight: body_budget.value,
        })
    }
}

impl Config {
    /// The request threads to start: `workerThreads`, else one fewer than
    /// the CPUs, at least 1.
    pub fn request_threads(&self) -> usize {
        self.worker_threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(1, |cpus| cpus.get().saturating_sub(1).max(1))
        })
    }
}

/// The layered value, else `default`.
fn pick<T>(slot: Option<Sourced<T>>, default: T) -> Sourced<T> {
    slot.unwrap_or(Sourced { value: default, origin: Origin::Default })
}

/// The layered value of an optional key.
fn value<T>(slot: Option<Sourced<T>>) -> Option<T> {
    slot.map(|sourced| sourced.value)
}

/// `low` must not exceed `high`.
fn not_above(
    low_key: &'static str,
    low: &Sourced<u64>,
    high_key: &str,
    high: &Sourced<u64>,
) -> Result<(), ConfigError> {
    if low.value > high.value {
        return Err(ConfigError::Invalid {
            key: low_key,
            origin: low.origin.clone(),
            reason: format!(
                "{} is more than {high_key} ({}, {})",
                low.value, high.value, high.origin
            ),
        });
    }
    Ok(())
}

/// `maxBodyBytesInFlight` must hold the largest body a route accepts, or
/// that route could never be served.
fn budget_holds_the_largest_body(
    budget: &Sourced<u64>,
    max_payload: &Sourced<usize>,
    max_artifact: &Sourced<usize>,
) -> Result<(), ConfigError> {
    let limits = BodyLimits::new(max_payload.value, max_artifact.value);
    let (route, largest) = limits.largest();
    if budget.value < largest as u64 {
        return Err(ConfigError::Invalid {
            key: "maxBodyBytesInFlight",
            origin: budget.origin.clone(),
            reason: format!(
                "{} is less than the largest request body the limits allow: {largest} bytes for {route} \
                 (from maxPayloadBytes {} and maxArtifactBytes {}); raise it or lower those",
                budget.value, max_payload.value, max_artifact.value
            ),
        });
    }
    Ok(())
}

/// Two keys that only make sense together: both or neither. `or_set`
/// names a key that would have supplied the missing one.
fn both_or_neither<A, B>(
    (a_key, a): (&'static str, &Option<Sourced<A>>),
    (b_key, b): (&'static str, &Option<Sourced<B>>),
    or_set: Option<&str>,
) -> Result<(), ConfigError> {
    match (a, b) {
        (Some(present), None) => Err(missing(b_key, a_key, &present.origin, or_set)),
        (None, Some(present)) => Err(missing(a_key, b_key, &present.origin, or_set)),
        _ => Ok(()),
    }
}

fn missing(key: &'static str, because: &str, origin: &Origin, or_set: Option<&str>) -> ConfigError {
    let alternative = or_set.map(|other| format!(" (or set {other})")).unwrap_or_default();
    ConfigError::Missing {
        key,
        reason: format!("required when {because} is set ({origin}){alternative}"),
    }
}

/// Refuses a variable that would be read (per key, the first of its names
/// that is set) and is not UTF-8: an error, not silently unset. One that
/// would not be read (a `PORT` beside `CODEQ_PORT`, or beside the flag
/// `--port`: keys `flagged`) is left alone.
fn check_unicode(
    var_os: &dyn Fn(&str) -> Option<std::ffi::OsString>,
    flagged: &[&str],
) -> Result<(), ConfigError> {
    let is_set = |name: &String| var_os(name).is_some_and(|value| !value.is_empty());
    let read = std::iter::once(CONFIG_PATH_ENV.to_string())
        .filter(|_| !flagged.contains(&CONFIG_PATH_ENV))
        .filter(is_set)
        .chain(
            sources::KEYS
                .iter()
                .filter(|spec| !flagged.contains(&spec.name))
                .filter_map(|spec| spec.env_names().find(is_set)),
        );
    for name in read {
        if var_os(&name).is_some_and(|value| value.to_str().is_none()) {
            return Err(ConfigError::NotUnicode { name });
        }
    }
    Ok(())
}
