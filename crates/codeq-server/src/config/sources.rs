//! The key table and the three sources that fill it: the YAML file, the
//! environment and the command-line flags.
//!
//! Each source is read into a [`Layer`] (every key optional, each value
//! already parsed and checked on its own, with where it came from); the
//! layers are then stacked, flag over env over file, and the result is
//! completed with defaults and cross-key checks in the parent module.

use std::path::{Path, PathBuf};

use codeq_core::BackoffPolicy;
use serde_norway::Value;
use time::UtcOffset;

use super::tokens::StaticTokenConfig;
use super::value::{
    self, ConfigValue, Durability, Env, LogFormat, LogLevel, Raw, Secret, StorageKind,
};
use super::{ConfigError, ConfigOverrides, Origin};

/// One configuration key: its YAML name and its unprefixed legacy
/// environment names (after the `CODEQ_` one, in order of precedence).
#[derive(Debug)]
pub(super) struct KeySpec {
    /// The camelCase YAML name.
    pub name: &'static str,
    /// The original service's environment names.
    pub legacy: &'static [&'static str],
}

impl KeySpec {
    /// `CODEQ_<UPPER_SNAKE_KEY>`.
    pub fn env_name(&self) -> String {
        let mut name = String::from("CODEQ_");
        for c in self.name.chars() {
            if c.is_ascii_uppercase() {
                name.push('_');
            }
            name.push(c.to_ascii_uppercase());
        }
        name
    }

    /// Every environment name of the key, the winning one first.
    pub fn env_names(&self) -> impl Iterator<Item = String> + '_ {
        std::iter::once(self.env_name()).chain(self.legacy.iter().map(|name| name.to_string()))
    }
}

/// A value with the source it came from.
#[derive(Debug, Clone)]
pub(super) struct Sourced<T> {
    pub value: T,
    pub origin: Origin,
}

/// Declares every key once: the table [`KEYS`], the [`Layer`] struct and
/// its parsing dispatch. `=> check` names a single-value rule applied to
/// the value of every source.
macro_rules! config_keys {
    ($(
        $field:ident: $ty:ty = $key:literal $([$($legacy:literal),+])? $(=> $check:expr)?;
    )+) => {
        /// Every key, in documentation order.
        pub(super) const KEYS: &[KeySpec] = &[
            $( KeySpec { name: $key, legacy: &[$($($legacy),+)?] }, )+
        ];

        /// The keys one source sets.
        #[derive(Debug, Default)]
        pub(super) struct Layer {
            $( pub $field: Option<Sourced<$ty>>, )+
        }

        impl Layer {
            /// Parses and checks `raw` as the value of `key`; `Ok(false)`
            /// when there is no such key.
            pub fn set(&mut self, key: &str, raw: Raw<'_>, origin: &Origin) -> Result<bool, ConfigError> {
                match key {
                    $( $key => {
                        let value = <$ty as ConfigValue>::parse(raw)
                            $( .and_then(|value| ($check)(&value).map(|()| value)) )?
                            .map_err(|reason| ConfigError::Invalid {
                                key: $key,
                                origin: origin.clone(),
                                reason,
                            })?;
                        self.$field = Some(Sourced { value, origin: origin.clone() });
                    } )+
                    _ => return Ok(false),
                }
                Ok(true)
            }

            /// Lays `top` over `self`: each key `top` sets wins.
            pub fn overlay(&mut self, top: Layer) {
                $( if top.$field.is_some() { self.$field = top.$field; } )+
            }
        }
    };
}

config_keys! {
    host: String = "host" => value::listen_host;
    port: u16 = "port" ["PORT"];
    env: Env = "env";
    timezone: UtcOffset = "timezone";
    log_level: LogLevel = "logLevel";
    log_format: LogFormat = "logFormat";
    storage: StorageKind = "storage";
    data_dir: PathBuf = "dataDir";
    durability: Durability = "durability";
    redis_addr: String = "redisAddr" ["REDIS_ADDR"] => value::host_port;
    redis_username: String = "redisUsername" => value::no_whitespace;
    redis_password: Secret = "redisPassword" ["REDIS_PASSWORD", "KVROCKS_PASSWORD"];
    redis_db: u32 = "redisDb";
    redis_key_prefix: String = "redisKeyPrefix" => value::key_prefix;
    default_lease_seconds: u64 = "defaultLeaseSeconds" => value::positive;
    max_lease_seconds: u64 = "maxLeaseSeconds" => value::positive;
    max_attempts_default: u32 = "maxAttemptsDefault" ["MAX_ATTEMPTS_DEFAULT"] => value::attempts;
    backoff_policy: BackoffPolicy = "backoffPolicy" ["BACKOFF_POLICY"];
    backoff_base_seconds: u64 = "backoffBaseSeconds" ["BACKOFF_BASE_SECONDS"];
    backoff_max_seconds: u64 = "backoffMaxSeconds" ["BACKOFF_MAX_SECONDS"] => value::positive;
    requeue_inspect_limit: u32 = "requeueInspectLimit" => value::positive;
    retention_seconds: u64 = "retentionSeconds";
    cleanup_interval_seconds: u64 = "cleanupIntervalSeconds";
    max_payload_bytes: usize = "maxPayloadBytes" => value::positive;
    max_artifact_bytes: usize = "maxArtifactBytes" => value::positive;
    max_commands: usize = "maxCommands" => value::positive;
    identity_service_url: String = "identityServiceUrl" ["IDENTITY_SERVICE_URL"] => value::http_url;
    identity_jwks_url: String = "identityJwksUrl" ["IDENTITY_JWKS_URL"] => value::http_url;
    identity_issuer: String = "identityIssuer" ["IDENTITY_ISSUER"] => value::no_whitespace;
    identity_audience: String = "identityAudience" ["IDENTITY_AUDIENCE"] => value::no_whitespace;
    identity_service_api_key: Secret = "identityServiceApiKey";
    worker_jwks_url: String = "workerJwksUrl" ["WORKER_JWKS_URL"] => value::http_url;
    worker_issuer: String = "workerIssuer" ["WORKER_ISSUER"] => value::no_whitespace;
    worker_audience: String = "workerAudience" ["WORKER_AUDIENCE"] => value::no_whitespace;
    allowed_clock_skew_seconds: u64 = "allowedClockSkewSeconds" ["ALLOWED_CLOCK_SKEW_SECONDS"];
    allow_producer_as_worker: bool = "allowProducerAsWorker" ["ALLOW_PRODUCER_AS_WORKER"];
    static_tokens: Vec<StaticTokenConfig> = "staticTokens";
    webhook_hmac_secret: Secret = "webhookHmacSecret" ["WEBHOOK_HMAC_SECRET"];
    webhook_timeout_seconds: u64 = "webhookTimeoutSeconds" => value::positive;
    webhook_allow_private_networks: bool = "webhookAllowPrivateNetworks";
    subscription_min_interval_seconds: u64 =
        "subscriptionMinIntervalSeconds" ["SUBSCRIPTION_MIN_INTERVAL_SECONDS"];
    subscription_cleanup_interval_seconds: u64 =
        "subscriptionCleanupIntervalSeconds" ["SUBSCRIPTION_CLEANUP_INTERVAL_SECONDS"]
        => value::positive;
    result_webhook_max_attempts: u32 =
        "resultWebhookMaxAttempts" ["RESULT_WEBHOOK_MAX_ATTEMPTS"] => value::positive;
    result_webhook_base_backoff_seconds: u64 =
        "resultWebhookBaseBackoffSeconds" ["RESULT_WEBHOOK_BASE_BACKOFF_SECONDS"];
    result_webhook_max_backoff_seconds: u64 =
        "resultWebhookMaxBackoffSeconds" ["RESULT_WEBHOOK_MAX_BACKOFF_SECONDS"] => value::positive;
    local_artifacts_dir: PathBuf = "localArtifactsDir" ["LOCAL_ARTIFACTS_DIR"];
    public_base_url: String = "publicBaseUrl" => value::http_url;
    shutdown_grace_seconds: u64 = "shutdownGraceSeconds";
    ui: bool = "ui";
    max_in_flight_calls: usize = "maxInFlightCalls" => value::positive;
    request_head_timeout_seconds: u64 = "requestHeadTimeoutSeconds" => value::positive;
    keep_alive_timeout_seconds: u64 = "keepAliveTimeoutSeconds" => value::positive;
    body_read_timeout_seconds: u64 = "bodyReadTimeoutSeconds" => value::positive;
    body_min_bytes_per_second: u64 = "bodyMinBytesPerSecond" => value::positive;
    worker_threads: usize = "workerThreads" => value::positive;
    max_connections: u32 = "maxConnections" => value::positive;
    max_body_bytes_in_flight: u64 = "maxBodyBytesInFlight" => value::positive;
}

/// The key closest to an unknown one, when they differ only in case,
/// `_` or `-` (`data_dir`, `DataDir`, `data-dir` → `dataDir`).
fn suggestion(unknown: &str) -> Option<&'static str> {
    let fold = |name: &str| -> String {
        name.chars().filter(|c| !matches!(c, '_' | '-')).map(|c| c.to_ascii_lowercase()).collect()
    };
    let folded = fold(unknown);
    KEYS.iter().map(|spec| spec.name).find(|name| fold(name) == folded)
}

fn unknown_key(key: String, path: &Path) -> ConfigError {
    let suggestion = suggestion(&key);
    ConfigError::UnknownKey { key, path: path.to_path_buf(), suggestion }
}

/// Reads the YAML file at `path`. A key set to `null` (or left empty) is
/// treated as absent; an empty file sets nothing.
pub(super) fn file_layer(path: &Path) -> Result<Layer, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::ReadFile { path: path.to_path_buf(), source })?;
    let document: Value = serde_norway::from_str(&text).map_err(|error| {
        ConfigError::ParseFile { path: path.to_path_buf(), message: error.to_string() }
    })?;
    let mapping = match document {
        Value::Null => return Ok(Layer::default()),
        Value::Mapping(mapping) => mapping,
        _ => return Err(ConfigError::NotAMapping { path: path.to_path_buf() }),
    };
    let origin = Origin::File(path.to_path_buf());
    let mut layer = Layer::default();
    for (key, value) in &mapping {
        let name = match key {
            Value::String(name) => name.as_str(),
            other => {
                let shown = value::scalar_text(other).map(|text| text.into_owned());
                return Err(unknown_key(shown.unwrap_or_else(|_| "(not a name)".into()), path));
            }
        };
        if !KEYS.iter().any(|spec| spec.name == name) {
            return Err(unknown_key(name.to_string(), path));
        }
        if !value.is_null() {
            layer.set(name, Raw::Yaml(value), &origin)?;
        }
    }
    Ok(layer)
}

/// Reads every key's environment variables through `env`: the `CODEQ_`
/// name, else the legacy names in order. An empty variable counts as unset;
/// once one name is set the others are not read at all (platforms set
/// `PORT` on their own, and it must not break a `CODEQ_PORT` deployment).
pub(super) fn env_layer(env: &dyn Fn(&str) -> Option<String>) -> Result<Layer, ConfigError> {
    let mut layer = Layer::default();
    for spec in KEYS {
        let found = spec.env_names().find_map(|name| {
            env(&name).filter(|value| !value.is_empty()).map(|value| (name, value))
        });
        if let Some((name, value)) = found {
            layer.set(spec.name, Raw::Text(&value), &Origin::Env(name))?;
        }
    }
    Ok(layer)
}

/// The `codeq serve` flags.
pub(super) fn flag_layer(overrides: &ConfigOverrides) -> Result<Layer, ConfigError> {
    let mut layer = Layer::default();
    if let Some(host) = &overrides.host {
        layer.set("host", Raw::Text(host), &Origin::Flag("--host"))?;
    }
    if let Some(port) = overrides.port {
        layer.port = Some(Sourced { value: port, origin: Origin::Flag("--port") });
    }
    if let Some(data_dir) = &overrides.data_dir {
        let origin = Origin::Flag("--data-dir");
        if data_dir.as_os_str().is_empty() {
            let reason = "must not be empty".to_string();
            return Err(ConfigError::Invalid { key: "dataDir", origin, reason });
        }
        layer.data_dir = Some(Sourced { value: data_dir.clone(), origin });
    }
    if let Some(storage) = &overrides.storage {
        layer.set("storage", Raw::Text(storage), &Origin::Flag("--storage"))?;
    }
    Ok(layer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_are_codeq_upper_snake() {
        let names: Vec<String> = KEYS.iter().map(KeySpec::env_name).collect();
        for name in
            ["CODEQ_DATA_DIR", "CODEQ_MAX_PAYLOAD_BYTES", "CODEQ_BACKOFF_POLICY", "CODEQ_PORT"]
        {
            assert!(names.iter().any(|n| n == name), "{name}");
        }
        assert!(names.iter().any(|n| n == "CODEQ_RESULT_WEBHOOK_MAX_BACKOFF_SECONDS"));
    }

    #[test]
    fn unknown_keys_get_a_suggestion_when_only_spelling_differs() {
        assert_eq!(suggestion("data_dir"), Some("dataDir"));
        assert_eq!(suggestion("MAX-LEASE-SECONDS"), Some("maxLeaseSeconds"));
        assert_eq!(suggestion("fooBar"), None);
    }
}
