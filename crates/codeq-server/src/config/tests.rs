//! Loading, precedence and validation of the whole configuration.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, HashMap};
use std::io::Write;

use super::sources::KEYS;
use super::*;

/// An environment holding exactly `vars`.
fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let vars: HashMap<String, String> =
        vars.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect();
    move |name| vars.get(name).cloned()
}

fn load_env(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::load(&ConfigOverrides::default(), &env_of(vars))
}

/// A YAML file holding `text`; kept alive by the caller.
fn yaml_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

fn load_file(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let file = yaml_file(text);
    let overrides =
        ConfigOverrides { config_path: Some(file.path().to_path_buf()), ..Default::default() };
    Config::load(&overrides, &env_of(vars))
}

fn env_name(key: &str) -> String {
    KEYS.iter().find(|spec| spec.name == key).unwrap().env_name()
}

/// `(key, value, companions)`.
type Sample = (&'static str, &'static str, &'static [(&'static str, &'static str)]);

/// A valid value for every key that differs from its default, with the
/// other keys it needs to be valid (as `(key, value)`).
///
/// Without the sampled key, the companions alone either load or fail for
/// want of exactly that key (worker JWKS and issuer need each other).
const SAMPLES: &[Sample] = &[
    ("host", "0.0.0.0", &[]),
    ("port", "9000", &[]),
    ("env", "dev", &[]),
    ("timezone", "+02:00", &[]),
    ("logLevel", "debug", &[]),
    ("logFormat", "json", &[]),
    ("storage", "redis", &[]),
    ("dataDir", "/var/lib/codeq", &[]),
    ("durability", "buffered", &[]),
    ("redisAddr", "redis.internal:6380", &[]),
    ("redisUsername", "codeq", &[("redisPassword", "pw"), ("storage", "redis")]),
    ("redisPassword", "pw", &[]),
    ("redisDb", "3", &[]),
    ("redisKeyPrefix", "cq", &[]),
    ("defaultLeaseSeconds", "60", &[]),
    ("maxLeaseSeconds", "600", &[]),
    ("maxAttemptsDefault", "7", &[]),
    ("backoffPolicy", "linear", &[]),
    ("backoffBaseSeconds", "1", &[]),
    ("backoffMaxSeconds", "100", &[]),
    ("requeueInspectLimit", "50", &[]),
    ("retentionSeconds", "0", &[]),
    ("cleanupIntervalSeconds", "60", &[]),
    ("maxPayloadBytes", "2048", &[]),
    ("maxArtifactBytes", "4096", &[]),
    ("maxCommands", "5000", &[]),
    ("identityServiceUrl", "https://id.example", &[]),
    ("identityJwksUrl", "https://id.example/jwks", &[("identityServiceUrl", "https://id.example")]),
    ("identityIssuer", "https://issuer.example", &[("identityServiceUrl", "https://id.example")]),
    ("identityAudience", "codeq-producer", &[("identityServiceUrl", "https://id.example")]),
    ("identityServiceApiKey", "api-key", &[]),
    ("workerJwksUrl", "https://workers.example/jwks", &[("workerIssuer", "workers")]),
    ("workerIssuer", "workers", &[("workerJwksUrl", "https://workers.example/jwks")]),
    ("workerAudience", "jobs", &[]),
    ("allowedClockSkewSeconds", "5", &[]),
    ("allowProducerAsWorker", "true", &[]),
    ("staticTokens", r#"[{"token":"t0k3n","kind":"producer","sub":"ci"}]"#, &[]),
    ("webhookHmacSecret", "whsec", &[]),
    ("webhookTimeoutSeconds", "3", &[]),
    ("webhookAllowPrivateNetworks", "1", &[]),
    ("subscriptionMinIntervalSeconds", "0", &[]),
    ("subscriptionCleanupIntervalSeconds", "30", &[]),
    ("resultWebhookMaxAttempts", "9", &[]),
    ("resultWebhookBaseBackoffSeconds", "1", &[]),
    ("resultWebhookMaxBackoffSeconds", "30", &[]),
    ("localArtifactsDir", "/srv/artifacts", &[]),
    ("publicBaseUrl", "https://queue.example", &[]),
    ("shutdownGraceSeconds", "5", &[]),
    ("ui", "false", &[]),
    ("maxInFlightCalls", "64", &[]),
    ("requestHeadTimeoutSeconds", "5", &[]),
    ("keepAliveTimeoutSeconds", "30", &[]),
    ("bodyReadTimeoutSeconds", "20", &[]),
    ("bodyMinBytesPerSecond", "1024", &[]),
    ("workerThreads", "3", &[]),
    ("maxConnections", "500", &[]),
    ("maxBodyBytesInFlight", "3000000000", &[]),
];

fn sample(key: &str) -> (&'static str, &'static [(&'static str, &'static str)]) {
    let (_, value, companions) = SAMPLES.iter().find(|(name, ..)| *name == key).unwrap();
    (value, companions)
}

/// The env vars of `companions`, by their `CODEQ_` names.
fn companion_env(companions: &[(&str, &str)]) -> Vec<(String, String)> {
    companions.iter().map(|(key, value)| (env_name(key), value.to_string())).collect()
}

fn as_refs(vars: &[(String, String)]) -> Vec<(&str, &str)> {
    vars.iter().map(|(name, value)| (name.as_str(), value.as_str())).collect()
}

/// Asserts that setting `key` changed the configuration: `with` differs
/// from `without`, or `without` was refused for want of `key`.
fn assert_key_took_effect(key: &str, with: &Config, without: Result<Config, ConfigError>) {
    match without {
        Ok(without) => {
            assert_ne!(format!("{with:?}"), format!("{without:?}"), "{key} had no effect");
        }
        Err(ConfigError::Missing { key: missing, .. }) => assert_eq!(missing, key),
        Err(error) => panic!("{key}: {error}"),
    }
}

#[test]
fn log_format_defaults_to_json_once_tokens_are_configured_and_text_in_local_mode() {
    let tokens = r#"[{"token":"t0k3n","kind":"producer","sub":"ci"}]"#;
    let served = load_env(&[("CODEQ_STATIC_TOKENS", tokens)]).unwrap();
    assert_eq!(served.log_format, LogFormat::Json);
    assert!(!served.local_mode());
    let local = load_env(&[]).unwrap();
    assert_eq!(local.log_format, LogFormat::Text);
    assert!(local.local_mode());
    let chosen = load_env(&[("CODEQ_LOG_FORMAT", "json")]).unwrap();
    assert_eq!(chosen.log_format, LogFormat::Json, "a chosen format wins in local mode too");
}

#[test]
fn defaults_match_the_spec_table() {
    let config = load_env(&[]).unwrap();

    assert_eq!(config.host, "127.0.0.1");
    assert_eq!(config.port, 8080);
    assert_eq!(config.env, Env::Prod);
    assert_eq!(config.timezone, time::UtcOffset::UTC);
    assert_eq!(config.log_level, LogLevel::Info);
    assert_eq!(config.log_format, LogFormat::Text, "local mode: no tokens configured");
    assert_eq!(config.storage, StorageKind::Embedded);
    assert_eq!(config.data_dir, PathBuf::from("./codeq-data"));
    assert_eq!(config.durability, Durability::Fsync);
    assert_eq!(config.redis_addr, "localhost:6379");
    assert!(config.redis_username.is_none());
    assert!(config.redis_password.is_none());
    assert_eq!(config.redis_db, 0);
    assert_eq!(config.redis_key_prefix, "codeq");
    assert_eq!(config.default_lease_seconds, 300);
    assert_eq!(config.max_lease_seconds, 43_200);
    assert_eq!(config.max_attempts_default, 5);
    assert_eq!(config.backoff_policy, BackoffPolicy::ExpFullJitter);
    assert_eq!(config.backoff_base_seconds, 5);
    assert_eq!(config.backoff_max_seconds, 900);
    assert_eq!(config.requeue_inspect_limit, 200);
    assert_eq!(config.retention_seconds, 86_400);
    assert_eq!(config.cleanup_interval_seconds, 3_600);
    assert_eq!(config.max_payload_bytes, 1_048_576);
    assert_eq!(config.max_artifact_bytes, 10_485_760);
    assert_eq!(config.identity_service_url, None);
    assert_eq!(config.identity_jwks_url, None);
    assert_eq!(config.identity_issuer, None);
    assert_eq!(config.identity_audience, None);
    assert!(config.identity_service_api_key.is_none());
    assert_eq!(config.worker_jwks_url, None);
    assert_eq!(config.worker_issuer, None);
    assert_eq!(config.worker_audience, "codeq-worker");
    assert_eq!(config.allowed_clock_skew_seconds, 60);
    assert!(!config.allow_producer_as_worker);
    assert!(config.static_tokens.is_empty());
    assert!(config.webhook_hmac_secret.is_none());
    assert_eq!(config.webhook_timeout_seconds, 10);
    assert!(!config.webhook_allow_private_networks);
    assert_eq!(config.subscription_min_interval_seconds, 5);
    assert_eq!(config.subscription_cleanup_interval_seconds, 60);
    assert_eq!(config.result_webhook_max_attempts, 5);
    assert_eq!(config.result_webhook_base_backoff_seconds, 2);
    assert_eq!(config.result_webhook_max_backoff_seconds, 60);
    assert_eq!(config.local_artifacts_dir, PathBuf::from("./codeq-data/artifacts"));
    assert_eq!(config.public_base_url, None);
    assert_eq!(config.shutdown_grace_seconds, 30);
    assert!(config.ui);
    assert_eq!(config.request_head_timeout_seconds, 10);
    assert_eq!(config.keep_alive_timeout_seconds, 60);
    assert_eq!(config.body_read_timeout_seconds, 10);
    assert_eq!(config.body_min_bytes_per_second, 16_384);
    assert_eq!(config.max_connections, 10_000);
    assert_eq!(config.max_body_bytes_in_flight, 2_147_483_648);

    assert!(config.local_mode());
    assert!(config.automatic_cleanup());
    let local = Config { log_format: LogFormat::Text, ..Config::default() };
    assert_eq!(format!("{config:?}"), format!("{local:?}"));
}

#[test]
fn default_for_tests_uses_the_given_dir_and_port_zero() {
    let config = Config::default_for_tests(Path::new("/tmp/t1"));
    assert_eq!(config.port, 0);
    assert_eq!(config.data_dir, PathBuf::from("/tmp/t1"));
    assert_eq!(config.local_artifacts_dir, PathBuf::from("/tmp/t1/artifacts"));
    assert_eq!(config.max_attempts_default, 5);
}

#[test]
fn samples_cover_every_key_exactly_once() {
    let sampled: BTreeSet<&str> = SAMPLES.iter().map(|(key, ..)| *key).collect();
    let keys: BTreeSet<&str> = KEYS.iter().map(|spec| spec.name).collect();
    assert_eq!(sampled, keys);
    assert_eq!(SAMPLES.len(), KEYS.len());
}

#[test]
fn every_key_can_be_set_from_its_codeq_env_var() {
    for (key, value, companions) in SAMPLES {
        let base = companion_env(companions);
        let mut with = base.clone();
        with.push((env_name(key), value.to_string()));

        let without = load_env(&as_refs(&base));
        let with = load_env(&as_refs(&with)).unwrap_or_else(|e| panic!("{key}: {e}"));

        assert_key_took_effect(key, &with, without);
    }
}

#[test]
fn every_key_can_be_set_in_the_yaml_file_with_the_same_meaning() {
    for (key, value, companions) in SAMPLES {
        let mut env = companion_env(companions);
        env.push((env_name(key), value.to_string()));
        let from_env = load_env(&as_refs(&env)).unwrap();

        // staticTokens' JSON is YAML flow syntax; every scalar is written
        // as a quoted string, which numeric and boolean keys also accept.
        let yaml_value = |key: &str, value: &str| {
            if key == "staticTokens" { value.to_string() } else { format!("{value:?}") }
        };
        let mut yaml = format!("{key}: {}\n", yaml_value(key, value));
        for (other, other_value) in *companions {
            yaml.push_str(&format!("{other}: {}\n", yaml_value(other, other_value)));
        }
        let from_file = load_file(&yaml, &[]).unwrap_or_else(|e| panic!("{key}: {e}"));

        assert_eq!(format!("{from_file:?}"), format!("{from_env:?}"), "{key}");
    }
}

#[test]
fn yaml_numbers_and_booleans_are_read_natively() {
    let config = load_file(
        "port: 9000\nallowProducerAsWorker: true\nmaxPayloadBytes: 10\ntimezone: '-05:00'\n",
        &[],
    )
    .unwrap();
    assert_eq!(config.port, 9000);
    assert!(config.allow_producer_as_worker);
    assert_eq!(config.max_payload_bytes, 10);
    assert_eq!(config.timezone, time::UtcOffset::from_hms(-5, 0, 0).unwrap());
}

/// The unprefixed names of docs/configuration.md, each with the key it sets.
const LEGACY: &[(&str, &str)] = &[
    ("PORT", "port"),
    ("REDIS_ADDR", "redisAddr"),
    ("REDIS_PASSWORD", "redisPassword"),
    ("KVROCKS_PASSWORD", "redisPassword"),
    ("IDENTITY_SERVICE_URL", "identityServiceUrl"),
    ("IDENTITY_JWKS_URL", "identityJwksUrl"),
    ("IDENTITY_ISSUER", "identityIssuer"),
    ("IDENTITY_AUDIENCE", "identityAudience"),
    ("LOCAL_ARTIFACTS_DIR", "localArtifactsDir"),
    ("MAX_ATTEMPTS_DEFAULT", "maxAttemptsDefault"),
    ("BACKOFF_POLICY", "backoffPolicy"),
    ("BACKOFF_BASE_SECONDS", "backoffBaseSeconds"),
    ("BACKOFF_MAX_SECONDS", "backoffMaxSeconds"),
    ("WORKER_JWKS_URL", "workerJwksUrl"),
    ("WORKER_AUDIENCE", "workerAudience"),
    ("WORKER_ISSUER", "workerIssuer"),
    ("ALLOWED_CLOCK_SKEW_SECONDS", "allowedClockSkewSeconds"),
    ("ALLOW_PRODUCER_AS_WORKER", "allowProducerAsWorker"),
    ("WEBHOOK_HMAC_SECRET", "webhookHmacSecret"),
    ("SUBSCRIPTION_MIN_INTERVAL_SECONDS", "subscriptionMinIntervalSeconds"),
    ("SUBSCRIPTION_CLEANUP_INTERVAL_SECONDS", "subscriptionCleanupIntervalSeconds"),
    ("RESULT_WEBHOOK_MAX_ATTEMPTS", "resultWebhookMaxAttempts"),
    ("RESULT_WEBHOOK_BASE_BACKOFF_SECONDS", "resultWebhookBaseBackoffSeconds"),
    ("RESULT_WEBHOOK_MAX_BACKOFF_SECONDS", "resultWebhookMaxBackoffSeconds"),
];

#[test]
fn the_legacy_names_are_exactly_those_of_the_spec() {
    let declared: BTreeSet<(&str, &str)> = KEYS
        .iter()
        .flat_map(|spec| spec.legacy.iter().map(move |legacy| (*legacy, spec.name)))
        .collect();
    let expected: BTreeSet<(&str, &str)> = LEGACY.iter().copied().collect();
    assert_eq!(declared, expected);
}

#[test]
fn every_legacy_name_sets_its_key() {
    for (legacy, key) in LEGACY {
        let (value, companions) = sample(key);
        let mut via_legacy = companion_env(companions);
        via_legacy.push((legacy.to_string(), value.to_string()));
        let mut via_codeq = companion_env(companions);
        via_codeq.push((env_name(key), value.to_string()));

        let legacy_config = load_env(&as_refs(&via_legacy)).unwrap();
        let codeq_config = load_env(&as_refs(&via_codeq)).unwrap();
        let unset = load_env(&as_refs(&companion_env(companions)));

        assert_eq!(format!("{legacy_config:?}"), format!("{codeq_config:?}"), "{legacy}");
        assert_key_took_effect(key, &legacy_config, unset);
    }
}

#[test]
fn the_codeq_name_beats_the_legacy_name() {
    let config = load_env(&[("CODEQ_PORT", "7000"), ("PORT", "7001")]).unwrap();
    assert_eq!(config.port, 7000);

    // A platform's PORT is not even read when CODEQ_PORT is set.
    let config = load_env(&[("CODEQ_PORT", "7000"), ("PORT", "not-a-port")]).unwrap();
    assert_eq!(config.port, 7000);

    let config = load_env(&[
        ("CODEQ_REDIS_PASSWORD", "codeq"),
        ("REDIS_PASSWORD", "redis"),
        ("KVROCKS_PASSWORD", "kvrocks"),
    ])
    .unwrap();
    assert_eq!(config.redis_password.unwrap().expose(), "codeq");
}

#[test]
fn redis_password_beats_kvrocks_password() {
    let both = load_env(&[("REDIS_PASSWORD", "redis"), ("KVROCKS_PASSWORD", "kvrocks")]).unwrap();
    assert_eq!(both.redis_password.unwrap().expose(), "redis");
    let kvrocks = load_env(&[("KVROCKS_PASSWORD", "kvrocks")]).unwrap();
    assert_eq!(kvrocks.redis_password.unwrap().expose(), "kvrocks");
}

#[test]
fn flag_beats_env_beats_file_beats_default() {
    let file = yaml_file("port: 1111\ndataDir: /from/file\nstorage: redis\nhost: 10.0.0.1\n");
    let env = env_of(&[("CODEQ_PORT", "2222"), ("CODEQ_DATA_DIR", "/from/env")]);
    let no_env = env_of(&[]);
    let path = Some(file.path().to_path_buf());

    let flags = ConfigOverrides {
        config_path: path.clone(),
        port: Some(3333),
        data_dir: Some("/from/flag".into()),
        storage: Some("embedded".into()),
        host: Some("::1".into()),
    };
    let config = Config::load(&flags, &env).unwrap();
    assert_eq!(config.port, 3333);
    assert_eq!(config.data_dir, PathBuf::from("/from/flag"));
    assert_eq!(config.storage, StorageKind::Embedded);
    assert_eq!(config.host, "::1");

    let file_only = ConfigOverrides { config_path: path, ..Default::default() };
    let config = Config::load(&file_only, &env).unwrap();
    assert_eq!(config.port, 2222);
    assert_eq!(config.data_dir, PathBuf::from("/from/env"));
    assert_eq!(config.storage, StorageKind::Redis, "from the file");
    assert_eq!(config.host, "10.0.0.1", "from the file");

    let config = Config::load(&file_only, &no_env).unwrap();
    assert_eq!(config.port, 1111);
    assert_eq!(config.data_dir, PathBuf::from("/from/file"));

    let config = Config::load(&ConfigOverrides::default(), &no_env).unwrap();
    assert_eq!(config.port, 8080);
    assert_eq!(config.data_dir, PathBuf::from("./codeq-data"));
}

#[test]
fn the_file_comes_from_the_flag_else_codeq_config() {
    let flag_file = yaml_file("port: 1\n");
    let env_file = yaml_file("port: 2\n");
    let env_path = env_file.path().to_str().unwrap().to_string();
    let env = env_of(&[("CODEQ_CONFIG", &env_path)]);

    let from_env = Config::load(&ConfigOverrides::default(), &env).unwrap();
    assert_eq!(from_env.port, 2);

    let overrides =
        ConfigOverrides { config_path: Some(flag_file.path().to_path_buf()), ..Default::default() };
    assert_eq!(Config::load(&overrides, &env).unwrap().port, 1);
}

#[test]
fn an_empty_env_var_counts_as_unset() {
    let config = load_env(&[("CODEQ_PORT", ""), ("PORT", "7001"), ("CODEQ_HOST", "")]).unwrap();
    assert_eq!(config.port, 7001);
    assert_eq!(config.host, "127.0.0.1");
}

#[test]
fn port_zero_is_allowed() {
    assert_eq!(load_env(&[("CODEQ_PORT", "0")]).unwrap().port, 0);
}

#[test]
fn booleans_from_env_accept_true_false_one_and_zero() {
    for (text, want) in [("true", true), ("false", false), ("1", true), ("0", false)] {
        let config = load_env(&[("CODEQ_ALLOW_PRODUCER_AS_WORKER", text)]).unwrap();
        assert_eq!(config.allow_producer_as_worker, want, "{text}");
    }
}

#[test]
fn an_unknown_yaml_key_is_rejected_naming_it_and_the_file() {
    let file = yaml_file("port: 1\nfooBar: 2\n");
    let overrides =
        ConfigOverrides { config_path: Some(file.path().to_path_buf()), ..Default::default() };
    let error = Config::load(&overrides, &env_of(&[])).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("unknown configuration key \"fooBar\" in {}", file.path().display())
    );
}

#[test]
fn an_unknown_yaml_key_spelled_like_a_known_one_gets_a_suggestion() {
    let error = load_file("data_dir: /x\n", &[]).unwrap_err().to_string();
    assert!(error.ends_with("(did you mean \"dataDir\"?)"), "{error}");
    // Even when its value is null.
    let error = load_file("typo:\n", &[]).unwrap_err().to_string();
    assert!(error.starts_with("unknown configuration key \"typo\""), "{error}");
}

#[test]
fn bad_values_are_rejected_naming_the_key_and_the_source() {
    for (key, value, reason) in [
        ("port", "abc", r#""abc" is not a number 0..65535"#),
        ("port", "65536", "is not a number 0..65535"),
        ("port", "-1", "is not a number 0..65535"),
        ("host", "http://example.com", "is not a host name or IP address"),
        ("env", "staging", r#""staging" is not one of dev, prod"#),
        ("timezone", "Europe/Paris", "IANA zone names such as Europe/Paris are not supported"),
        ("logLevel", "verbose", "is not one of trace, debug, info, warn, error"),
        ("logFormat", "xml", "is not one of json, text"),
        ("storage", "s3", "is not one of embedded, redis"),
        ("durability", "sometimes", "is not one of fsync, buffered"),
        ("redisAddr", "localhost", "is not host:port"),
        ("redisDb", "x", "is not a number"),
        ("redisKeyPrefix", "a b", "must not contain whitespace"),
        ("defaultLeaseSeconds", "0", "0 is less than 1"),
        ("maxLeaseSeconds", "0", "0 is less than 1"),
        ("maxAttemptsDefault", "0", "0 is not within 1..1000"),
        ("maxAttemptsDefault", "1001", "1001 is not within 1..1000"),
        ("backoffPolicy", "random", "unknown backoff policy \"random\""),
        ("backoffBaseSeconds", "-5", "is not a number of 0 or more"),
        ("backoffMaxSeconds", "0", "0 is less than 1"),
        ("requeueInspectLimit", "0", "0 is less than 1"),
        ("retentionSeconds", "1d", "is not a number of 0 or more"),
        ("maxPayloadBytes", "0", "0 is less than 1"),
        ("maxArtifactBytes", "0", "0 is less than 1"),
        ("maxCommands", "0", "0 is less than 1"),
        ("identityServiceUrl", "id.example", "is not an absolute http:// or https:// URL"),
        ("identityJwksUrl", "ftp://id.example/jwks", "is not an absolute http:// or https://"),
        ("workerJwksUrl", "/jwks", "is not an absolute http:// or https:// URL"),
        ("publicBaseUrl", "https://", "is not an absolute http:// or https:// URL"),
        ("allowProducerAsWorker", "yes", "is not a boolean (true, false, 1 or 0)"),
        ("webhookAllowPrivateNetworks", "on", "is not a boolean"),
        ("webhookTimeoutSeconds", "0", "0 is less than 1"),
        ("subscriptionCleanupIntervalSeconds", "0", "0 is less than 1"),
        ("resultWebhookMaxAttempts", "0", "0 is less than 1"),
        ("resultWebhookMaxBackoffSeconds", "0", "0 is less than 1"),
        ("requestHeadTimeoutSeconds", "0", "0 is less than 1"),
        ("keepAliveTimeoutSeconds", "0", "0 is less than 1"),
        ("bodyReadTimeoutSeconds", "0", "0 is less than 1"),
        ("bodyMinBytesPerSecond", "0", "0 is less than 1"),
        ("maxConnections", "0", "0 is less than 1"),
        ("maxConnections", "-1", "is not a number 0..4294967295"),
        ("maxBodyBytesInFlight", "1e9", "is not a number of 0 or more"),
        ("maxBodyBytesInFlight", "1048576", "less than the largest request body the limits allow"),
        ("staticTokens", "[{}]", "entry 0: missing field"),
        ("staticTokens", "{", "not a JSON array of tokens"),
    ] {
        let name = env_name(key);
        let error = load_env(&[(&name, value)]).unwrap_err().to_string();
        let want = format!("invalid value for {key} (env {name}): ");
        assert!(error.starts_with(&want), "{key}={value}: {error}");
        assert!(error.contains(reason), "{key}={value}: {error}");
    }
}

#[test]
fn the_port_error_reads_as_documented() {
    let error = load_env(&[("CODEQ_PORT", "abc")]).unwrap_err();
    assert_eq!(
        error.to_string(),
        r#"invalid value for port (env CODEQ_PORT): "abc" is not a number 0..65535"#
    );
    let error = load_env(&[("PORT", "abc")]).unwrap_err();
    assert_eq!(
        error.to_string(),
        r#"invalid value for port (env PORT): "abc" is not a number 0..65535"#
    );
}

#[test]
fn a_bad_value_in_the_file_names_the_file() {
    let file = yaml_file("maxAttemptsDefault: 0\n");
    let overrides =
        ConfigOverrides { config_path: Some(file.path().to_path_buf()), ..Default::default() };
    let error = Config::load(&overrides, &env_of(&[])).unwrap_err().to_string();
    assert_eq!(
        error,
        format!(
            "invalid value for maxAttemptsDefault (file {}): 0 is not within 1..1000",
            file.path().display()
        )
    );
}

#[test]
fn a_bad_value_in_the_file_is_refused_even_when_env_overrides_it() {
    let error = load_file("port: abc\n", &[("CODEQ_PORT", "1")]).unwrap_err().to_string();
    assert!(error.starts_with("invalid value for port (file "), "{error}");
}

#[test]
fn a_bad_flag_names_the_flag() {
    let overrides = ConfigOverrides { storage: Some("s3".into()), ..Default::default() };
    let error = Config::load(&overrides, &env_of(&[])).unwrap_err().to_string();
    assert!(error.starts_with("invalid value for storage (flag --storage): "), "{error}");
    let overrides = ConfigOverrides { host: Some(String::new()), ..Default::default() };
    let error = Config::load(&overrides, &env_of(&[])).unwrap_err().to_string();
    assert!(error.starts_with("invalid value for host (flag --host): "), "{error}");
}

#[test]
fn yaml_strings_keys_refuse_numbers_that_yaml_would_rewrite() {
    let error = load_file("redisPassword: 1.10\n", &[]).unwrap_err().to_string();
    assert!(error.contains("must be a string (quote it)"), "{error}");
    assert!(!error.contains("1.1"), "{error}");
    let error = load_file("workerAudience: 12345\n", &[]).unwrap_err().to_string();
    assert!(error.contains("must be a string (quote it)"), "{error}");
    let config = load_file("redisPassword: '1.10'\n", &[]).unwrap();
    assert_eq!(config.redis_password.unwrap().expose(), "1.10");
}

/// docs/configuration.md, "Value formats".
#[test]
fn yaml_numbers_and_booleans_take_the_forms_yaml_reads() {
    for form in ["60", "'60'", "+60", "0x3C", "0o74"] {
        let config = load_file(&format!("defaultLeaseSeconds: {form}\n"), &[]).unwrap();
        assert_eq!(config.default_lease_seconds, 60, "{form}");
    }
    for refused in ["60.0", "'60.0'", "6e1", "'0x3C'", "-60"] {
        let loaded = load_file(&format!("defaultLeaseSeconds: {refused}\n"), &[]);
        assert!(loaded.is_err(), "{refused} was accepted");
    }
    let error = load_file("defaultLeaseSeconds: 6e1\n", &[]).unwrap_err().to_string();
    assert!(error.ends_with("is a fraction or has an exponent: write a whole number of 0 or more"));
    for form in ["true", "True", "TRUE", "'true'", "'1'"] {
        let config = load_file(&format!("allowProducerAsWorker: {form}\n"), &[]).unwrap();
        assert!(config.allow_producer_as_worker, "{form}");
    }
    for refused in ["yes", "on", "'yes'"] {
        let loaded = load_file(&format!("allowProducerAsWorker: {refused}\n"), &[]);
        assert!(loaded.is_err(), "{refused} was accepted");
    }
}

#[test]
fn yaml_lists_and_mappings_are_refused_for_single_values() {
    let error = load_file("port: [1, 2]\n", &[]).unwrap_err().to_string();
    assert!(error.contains("expected a single value, found a list"), "{error}");
    let error = load_file("host: {a: 1}\n", &[]).unwrap_err().to_string();
    assert!(error.contains("expected a single value, found a mapping"), "{error}");
}

#[test]
fn a_null_yaml_value_leaves_the_default_and_an_empty_file_is_fine() {
    let config = load_file("port:\npublicBaseUrl: ~\n", &[]).unwrap();
    assert_eq!(config.port, 8080);
    assert_eq!(config.public_base_url, None);
    assert_eq!(load_file("", &[]).unwrap().port, 8080);
    assert_eq!(load_file("# only a comment\n", &[]).unwrap().port, 8080);
}

#[test]
fn file_problems_are_reported_with_the_path() {
    let overrides = ConfigOverrides {
        config_path: Some("/nonexistent/codeq.yaml".into()),
        ..Default::default()
    };
    let error = Config::load(&overrides, &env_of(&[])).unwrap_err().to_string();
    assert!(
        error.starts_with("cannot read configuration file /nonexistent/codeq.yaml: "),
        "{error}"
    );

    let error = load_file("port: [\n", &[]).unwrap_err().to_string();
    assert!(error.contains("is not valid YAML"), "{error}");
    let error = load_file("- port\n", &[]).unwrap_err().to_string();
    assert!(error.contains("must be a mapping of keys to values"), "{error}");
    let error = load_file("port: 1\nport: 2\n", &[]).unwrap_err().to_string();
    assert!(error.contains("is not valid YAML") && error.contains("duplicate"), "{error}");
}

#[test]
fn the_default_lease_may_not_exceed_the_maximum() {
    let error =
        load_env(&[("CODEQ_DEFAULT_LEASE_SECONDS", "601"), ("CODEQ_MAX_LEASE_SECONDS", "600")])
            .unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid value for defaultLeaseSeconds (env CODEQ_DEFAULT_LEASE_SECONDS): \
         601 is more than maxLeaseSeconds (600, env CODEQ_MAX_LEASE_SECONDS)"
    );
    let error = load_env(&[("CODEQ_MAX_LEASE_SECONDS", "299")]).unwrap_err().to_string();
    assert!(error.contains("300 is more than maxLeaseSeconds (299, env"), "{error}");
    assert!(
        load_env(&[("CODEQ_DEFAULT_LEASE_SECONDS", "600"), ("CODEQ_MAX_LEASE_SECONDS", "600")])
            .is_ok()
    );
}

#[test]
fn the_backoff_base_may_not_exceed_its_maximum() {
    let error = load_env(&[("BACKOFF_BASE_SECONDS", "1000")]).unwrap_err().to_string();
    assert_eq!(
        error,
        "invalid value for backoffBaseSeconds (env BACKOFF_BASE_SECONDS): \
         1000 is more than backoffMaxSeconds (900, default)"
    );
    let config = load_env(&[("BACKOFF_BASE_SECONDS", "0")]).unwrap();
    assert_eq!(config.backoff().base_seconds, 0);

    let error = load_env(&[("RESULT_WEBHOOK_MAX_BACKOFF_SECONDS", "1")]).unwrap_err().to_string();
    assert!(
        error.starts_with("invalid value for resultWebhookBaseBackoffSeconds (default): 2 is more"),
        "{error}"
    );
}

#[test]
fn the_body_budget_must_hold_the_largest_body_the_item_limits_allow() {
    // With the default limits the largest body is a batch of results:
    // (10 MiB / 3 × 4 + 64 KiB) × 100 bytes.
    let largest = "1404654800";
    assert!(load_env(&[("CODEQ_MAX_BODY_BYTES_IN_FLIGHT", largest)]).is_ok());
    let error = load_env(&[("CODEQ_MAX_BODY_BYTES_IN_FLIGHT", "1404654799")]).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("POST /v1/codeq/tasks/batch/results"), "{message}");
    assert!(message.contains("maxArtifactBytes 10485760"), "{message}");
    // A larger artifact limit needs a larger budget; a smaller one lets the
    // budget go down with it.
    assert!(load_env(&[("CODEQ_MAX_ARTIFACT_BYTES", "104857600")]).is_err());
    let small =
        [("CODEQ_MAX_ARTIFACT_BYTES", "1024"), ("CODEQ_MAX_BODY_BYTES_IN_FLIGHT", "120000000")];
    assert!(load_env(&small).is_ok());
}

#[test]
fn local_artifacts_dir_follows_the_final_data_dir() {
    let file = yaml_file("dataDir: /from/file\n");
    let overrides = ConfigOverrides {
        config_path: Some(file.path().to_path_buf()),
        data_dir: Some("/from/flag".into()),
        ..Default::default()
    };
    let config = Config::load(&overrides, &env_of(&[])).unwrap();
    assert_eq!(config.local_artifacts_dir, PathBuf::from("/from/flag/artifacts"));

    let config = load_env(&[("CODEQ_DATA_DIR", "/d"), ("LOCAL_ARTIFACTS_DIR", "/a")]).unwrap();
    assert_eq!(config.data_dir, PathBuf::from("/d"));
    assert_eq!(config.local_artifacts_dir, PathBuf::from("/a"));
}

#[test]
fn identity_jwks_url_and_issuer_are_derived_from_the_service_url() {
    let config = load_env(&[("IDENTITY_SERVICE_URL", "https://id.example/")]).unwrap();
    assert_eq!(config.identity_service_url.as_deref(), Some("https://id.example/"));
    assert_eq!(
        config.identity_jwks_url.as_deref(),
        Some("https://id.example/v1/.well-known/jwks.json")
    );
    assert_eq!(config.identity_issuer.as_deref(), Some("https://id.example/"));
    assert!(!config.local_mode());

    let config = load_env(&[
        ("IDENTITY_SERVICE_URL", "https://id.example"),
        ("IDENTITY_JWKS_URL", "https://keys.example/jwks"),
        ("IDENTITY_ISSUER", "urn:issuer"),
    ])
    .unwrap();
    assert_eq!(config.identity_jwks_url.as_deref(), Some("https://keys.example/jwks"));
    assert_eq!(config.identity_issuer.as_deref(), Some("urn:issuer"));
}

#[test]
fn a_redis_user_name_without_a_password_is_refused() {
    let alone = [("CODEQ_STORAGE", "redis"), ("CODEQ_REDIS_USERNAME", "codeq")];
    let error = load_env(&alone).unwrap_err().to_string();
    assert_eq!(
        error,
        "missing configuration key redisPassword: required when redisUsername is set \
         (env CODEQ_REDIS_USERNAME)"
    );
    // Redis settings are not used with the embedded store.
    assert!(load_env(&[("CODEQ_REDIS_USERNAME", "codeq")]).is_ok());
    let both = load_env(&[("CODEQ_REDIS_USERNAME", "codeq"), ("REDIS_PASSWORD", "pw")]).unwrap();
    assert_eq!(both.redis_username.as_deref(), Some("codeq"));
}

#[test]
fn a_jwks_url_without_an_issuer_is_refused_and_the_reverse() {
    let error = load_env(&[("IDENTITY_JWKS_URL", "https://k.example")]).unwrap_err().to_string();
    assert_eq!(
        error,
        "missing configuration key identityIssuer: required when identityJwksUrl is set \
         (env IDENTITY_JWKS_URL) (or set identityServiceUrl)"
    );
    let error = load_env(&[("CODEQ_IDENTITY_ISSUER", "iss")]).unwrap_err().to_string();
    assert!(
        error
            .starts_with("missing configuration key identityJwksUrl: required when identityIssuer")
    );
    let error = load_env(&[("IDENTITY_AUDIENCE", "aud")]).unwrap_err().to_string();
    assert!(
        error.starts_with(
            "missing configuration key identityJwksUrl: required when identityAudience"
        )
    );
    let error = load_env(&[("WORKER_JWKS_URL", "https://w.example")]).unwrap_err().to_string();
    assert_eq!(
        error,
        "missing configuration key workerIssuer: required when workerJwksUrl is set (env WORKER_JWKS_URL)"
    );
    let error = load_env(&[("WORKER_ISSUER", "w")]).unwrap_err().to_string();
    assert!(error.starts_with("missing configuration key workerJwksUrl"), "{error}");
}

#[test]
fn one_issuer_for_producers_and_workers_needs_two_audiences() {
    let shared = [
        ("IDENTITY_JWKS_URL", "https://k.example"),
        ("IDENTITY_ISSUER", "https://id.example"),
        ("WORKER_JWKS_URL", "https://k.example"),
        ("WORKER_ISSUER", "https://id.example"),
    ];
    let same = [shared.as_slice(), &[("IDENTITY_AUDIENCE", "codeq-worker")]].concat();
    let error = load_env(&same).unwrap_err().to_string();
    assert!(error.contains("identityAudience") && error.contains("workerAudience"), "{error}");
    let other = [shared.as_slice(), &[("IDENTITY_AUDIENCE", "codeq-producer")]].concat();
    assert!(load_env(&other).is_ok());
    assert!(load_env(&shared).is_ok(), "no producer audience: told apart by the workers'");
}

#[test]
fn public_base_url_loses_its_trailing_slash() {
    let config = load_env(&[("CODEQ_PUBLIC_BASE_URL", "https://q.example/base/")]).unwrap();
    assert_eq!(config.public_base_url.as_deref(), Some("https://q.example/base"));
}

#[test]
fn static_tokens_load_from_the_file_and_from_json_in_env() {
    let yaml = "staticTokens:\n  - token: p-token\n    kind: producer\n    sub: ci\n    admin: true\n  \
                - tokenSha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n    \
                kind: worker\n    sub: w1\n    eventTypes: [GENERATE_MASTER]\n";
    let config = load_file(yaml, &[]).unwrap();
    assert_eq!(config.static_tokens.len(), 2);
    assert_eq!(config.static_tokens[0].token.as_ref().unwrap().expose(), "p-token");
    assert!(config.static_tokens[0].admin);
    assert_eq!(config.static_tokens[1].kind, TokenKind::Worker);
    assert!(!config.local_mode());

    let json = r#"[{"token":"w-token","kind":"worker","sub":"w2","scopes":["codeq:claim"]}]"#;
    let config = load_env(&[("CODEQ_STATIC_TOKENS", json)]).unwrap();
    assert_eq!(config.static_tokens[0].sub, "w2");
    assert_eq!(config.static_tokens[0].scopes, Some(vec!["codeq:claim".to_string()]));
}

#[test]
fn static_token_validation_names_the_entry() {
    for (entry, reason) in [
        ("{kind: worker, sub: w}", "entry 0: exactly one of token and tokenSha256 must be set"),
        ("{token: a, tokenSha256: b, kind: worker, sub: w}", "entry 0: tokenSha256 is not 64"),
        ("{tokenSha256: my-secret-token, kind: worker, sub: w}", "not the token)"),
        ("{tokenSha256: 987654321, kind: worker, sub: w}", "entry 0: "),
        ("{token: a, kind: producer, sub: p, scopes: [codeq:claim]}", "worker entries only"),
        ("{token: a, kind: producer, sub: p, workerGroup: g}", "worker entries only"),
        ("{token: a, kind: worker, sub: w, scopes: [codeq:admin]}", "may not list codeq:admin"),
        ("{token: a, kind: worker, sub: w, admin: true}", "producer entries only"),
        ("{token: a, kind: worker, sub: ' '}", "entry 0: sub must not be empty"),
        ("{token: a, kind: worker, sub: w, eventTypes: ['bad name']}", "is not \"*\" or a command"),
        (
            "{token: a, kind: worker, sub: w, scopes: [codeq:everything]}",
            "is not one of codeq:claim",
        ),
    ] {
        let error =
            load_file(&format!("staticTokens:\n  - {entry}\n"), &[]).unwrap_err().to_string();
        assert!(error.starts_with("invalid value for staticTokens (file "), "{error}");
        assert!(error.contains(reason), "{entry}: {error}");
        for token in ["my-secret-token", "987654321"] {
            assert!(!error.contains(token), "a token reaches the message: {error}");
        }
    }
}

#[test]
fn secrets_never_show_in_debug_output_or_errors() {
    let config = load_env(&[
        ("REDIS_PASSWORD", "redis-secret-1"),
        ("CODEQ_IDENTITY_SERVICE_API_KEY", "api-secret-2"),
        ("WEBHOOK_HMAC_SECRET", "hmac-secret-3"),
        ("CODEQ_STATIC_TOKENS", r#"[{"token":"token-secret-4","kind":"producer","sub":"p"}]"#),
    ])
    .unwrap();
    let shown = format!("{config:?}");
    for secret in ["redis-secret-1", "api-secret-2", "hmac-secret-3", "token-secret-4"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(shown.contains("Secret(***)"));
    assert_eq!(format!("{:?}", Secret::new("x")), "Secret(***)");
}

#[test]
fn the_backoff_config_carries_the_three_keys() {
    let config = load_env(&[("BACKOFF_POLICY", "fixed"), ("BACKOFF_MAX_SECONDS", "10")]).unwrap();
    let backoff = config.backoff();
    assert_eq!(backoff.policy, BackoffPolicy::Fixed);
    assert_eq!((backoff.base_seconds, backoff.max_seconds), (5, 10));
}

#[test]
fn only_a_zero_interval_disables_automatic_cleanup() {
    assert!(load_env(&[("CODEQ_RETENTION_SECONDS", "0")]).unwrap().automatic_cleanup());
    assert!(!load_env(&[("CODEQ_CLEANUP_INTERVAL_SECONDS", "0")]).unwrap().automatic_cleanup());
}

#[test]
fn the_reference_doc_lists_every_key_and_env_name() {
    let doc = include_str!("../../../../docs/configuration.md");
    for spec in KEYS {
        assert!(doc.contains(&format!("`{}`", spec.name)), "key {} undocumented", spec.name);
        for name in spec.env_names() {
            assert!(doc.contains(&format!("`{name}`")), "env {name} undocumented");
        }
    }
}

#[test]
#[cfg(unix)]
fn only_a_variable_that_would_be_read_must_be_utf8() {
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt as _;

    let env = |vars: Vec<(&'static str, OsString)>| {
        move |name: &str| vars.iter().find(|(set, _)| *set == name).map(|(_, value)| value.clone())
    };
    let garbled = || OsString::from_vec(vec![0xff]);
    // A platform's PORT beside CODEQ_PORT is never read.
    let beside = env(vec![("CODEQ_PORT", "0".into()), ("PORT", garbled())]);
    assert!(check_unicode(&beside, &[]).is_ok());
    let alone = env(vec![("PORT", garbled())]);
    assert!(
        matches!(check_unicode(&alone, &[]), Err(ConfigError::NotUnicode { name }) if name == "PORT")
    );
    let own = env(vec![("CODEQ_PORT", garbled()), ("PORT", "0".into())]);
    assert!(
        matches!(check_unicode(&own, &[]), Err(ConfigError::NotUnicode { name }) if name == "CODEQ_PORT")
    );
    let path = env(vec![("CODEQ_CONFIG", garbled())]);
    assert!(matches!(check_unicode(&path, &[]), Err(ConfigError::NotUnicode { .. })));
    // Empty counts as unset: the next name is the one read.
    let empty = env(vec![("CODEQ_PORT", "".into()), ("PORT", garbled())]);
    assert!(check_unicode(&empty, &[]).is_err());
    // A key a flag sets reads no variable (`--port 0`, `--config FILE`).
    assert!(check_unicode(&alone, &["port"]).is_ok());
    assert!(check_unicode(&path, &[CONFIG_PATH_ENV]).is_ok());
    let overrides = ConfigOverrides { port: Some(0), ..ConfigOverrides::default() };
    assert_eq!(overrides.flagged(), ["port"]);
}
