//! Start-up checks of the Redis server codeQ is about to run on (the
//! eviction policy is checked again whenever Redis comes back: `link.rs`).
//!
//! - An eviction policy that may delete codeQ's keys (`allkeys-*`) is
//!   refused: Redis would silently drop tasks under memory pressure.
//!   `noeviction` (the default) and `volatile-*` (codeQ's keys never
//!   expire, so they are never chosen) are accepted.
//! - The AOF setting decides what a crash of Redis can take back; anything
//!   weaker than `appendonly yes` + `appendfsync always` is logged as a
//!   warning that says what can be lost.
//!
//! A server whose `CONFIG` command is disabled (some managed services) is
//! accepted with a warning: its settings cannot be read.

use std::collections::HashMap;

use super::RedisStore;
use crate::store::StoreError;

/// What the AOF settings make of an acknowledged change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `appendonly yes`, `appendfsync always`: on disk before the answer.
    Always,
    /// `appendfsync everysec`: up to about a second of acknowledged
    /// changes lost on a power cut or kernel crash (not on a Redis crash).
    EverySecond,
    /// `appendfsync no`: the kernel decides when; up to ~30 s lost on a
    /// power cut.
    Kernel,
    /// No AOF: everything since the last RDB snapshot lost when Redis stops.
    NoAof,
    /// The settings could not be read.
    Unknown,
}

/// Why start-up refuses the Redis server.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Redis did not answer.
    #[error("{0}")]
    Unreachable(StoreError),
    /// Redis is configured to lose keys (exit code 2).
    #[error("{0}")]
    Refused(String),
    /// Redis refused what codeQ is configured with (credentials, database,
    /// TLS certificate), which no wait changes: exit code 2 when it does
    /// so again (a proxy's passing error looks the same). The text says
    /// what to change.
    #[error("{0}")]
    Misconfigured(String),
}

/// Reads the server's settings; refuses an evicting policy and says how
/// durable Redis is (see [`warn_about`]). Waits for nothing: Redis must
/// answer now.
pub async fn check_server(store: &RedisStore) -> Result<Durability, CheckError> {
    let mut settings = HashMap::new();
    for name in ["maxmemory-policy", "appendonly", "appendfsync"] {
        let read: Result<HashMap<String, String>, _> = store
            .command(async |connection| {
                redis::cmd("CONFIG").arg("GET").arg(name).query_async(connection).await
            })
            .await;
        match read {
            Ok(values) => settings.extend(values),
            Err(StoreError::Unavailable(cause)) if let Some(fix) = what_to_fix(&cause) => {
                let cause = cause.trim_start_matches("Redis is unreachable: ");
                return Err(CheckError::Misconfigured(format!("{fix} ({cause})")));
            }
            Err(StoreError::Unavailable(cause)) if cause.contains("unreachable") => {
                return Err(CheckError::Unreachable(StoreError::Unavailable(cause)));
            }
            Err(error) => {
                tracing::warn!(%error, setting = name, "cannot read a Redis setting (CONFIG GET refused?)");
            }
        }
    }
    let policy = settings.get("maxmemory-policy").map(String::as_str).unwrap_or("");
    if evicts_keys(policy) {
        return Err(CheckError::Refused(format!(
            "Redis has maxmemory-policy {policy}: it may evict codeQ's keys and lose tasks. \
             Set maxmemory-policy noeviction (CONFIG SET maxmemory-policy noeviction, and in redis.conf)"
        )));
    }
    let durability = durability(&settings);
    Ok(durability)
}

/// True for a `maxmemory-policy` that may evict codeQ's keys: `allkeys-*`
/// (`volatile-*` only evicts keys that expire, which codeQ's never do).
pub fn evicts_keys(policy: &str) -> bool {
    policy.starts_with("allkeys-")
}

/// What to change when Redis refused the configuration itself (waiting
/// would not change the answer); `None` for anything else.
fn what_to_fix(cause: &str) -> Option<&'static str> {
    let said = |marks: &[&str]| marks.iter().any(|mark| cause.contains(mark));
    if said(&["AuthenticationFailed", "NOAUTH", "WRONGPASS"]) {
        Some(
            "Redis refused codeQ's credentials. Set redisPassword (CODEQ_REDIS_PASSWORD) to the \
             password of Redis's default user, or redisUsername (CODEQ_REDIS_USERNAME) and \
             redisPassword to an ACL user's; leave both unset for a Redis without a password",
        )
    } else if said(&["DB index is out of range"]) {
        Some(
            "Redis has no database of that number: set redisDb (CODEQ_REDIS_DB) below its `databases`",
        )
    } else if said(&["invalid peer certificate", "certificate verify failed"]) {
        Some(
            "Redis's TLS certificate is not trusted: give its CA in SSL_CERT_FILE, or use a \
             certificate the system trusts for the name in redisAddr",
        )
    } else {
        None
    }
}

fn durability(settings: &HashMap<String, String>) -> Durability {
    match (
        settings.get("appendonly").map(String::as_str),
        settings.get("appendfsync").map(String::as_str),
    ) {
        (Some("yes"), Some("always")) => Durability::Always,
        (Some("yes"), Some("everysec")) => Durability::EverySecond,
        (Some("yes"), Some(_)) => Durability::Kernel,
        (Some("no"), _) => Durability::NoAof,
        _ => Durability::Unknown,
    }
}

/// Warns when Redis's persistence may lose acknowledged changes.
pub fn warn_about(durability: Durability) {
    let loss = match durability {
        Durability::Always | Durability::Unknown => return,
        Durability::EverySecond => {
            "appendfsync everysec: a power cut or kernel crash of the Redis host can lose about the last second of acknowledged tasks and results"
        }
        Durability::Kernel => {
            "appendfsync no: a power cut of the Redis host can lose the last ~30 seconds of acknowledged tasks and results"
        }
        Durability::NoAof => {
            "appendonly no: when Redis stops or crashes, every acknowledged change since its last snapshot is lost"
        }
    };
    tracing::warn!("Redis persistence is weaker than appendfsync always; {loss}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn refusals_that_no_wait_changes_say_what_to_fix() {
        let cases = [
            ("WRONGPASS invalid username-password pair", "Set redisPassword"),
            ("Password authentication failed - AuthenticationFailed", "redisUsername"),
            ("ERR DB index is out of range", "set redisDb"),
            ("invalid peer certificate: UnknownIssuer", "SSL_CERT_FILE"),
        ];
        for (cause, fix) in cases {
            assert!(what_to_fix(cause).is_some_and(|text| text.contains(fix)), "{cause}");
        }
        assert_eq!(what_to_fix("Connection refused (os error 111)"), None);
    }

    #[test]
    fn durability_follows_the_aof_settings() {
        let always = settings(&[("appendonly", "yes"), ("appendfsync", "always")]);
        assert_eq!(durability(&always), Durability::Always);
        let everysec = settings(&[("appendonly", "yes"), ("appendfsync", "everysec")]);
        assert_eq!(durability(&everysec), Durability::EverySecond);
        assert_eq!(durability(&settings(&[("appendonly", "no")])), Durability::NoAof);
        assert_eq!(durability(&settings(&[])), Durability::Unknown);
    }
}
