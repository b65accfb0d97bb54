//! The typed value of one configuration key, and how it is read from an
//! environment variable (text) or from the YAML file.
//!
//! Every reader returns a short reason on failure (`"abc" is not a number
//! 0..65535`); the caller adds the key and where the value came from. A
//! reason never repeats a secret.

use std::borrow::Cow;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use codeq_core::BackoffPolicy;
use serde_norway::Value;
use time::UtcOffset;

/// A value as one source holds it.
#[derive(Debug, Clone, Copy)]
pub(super) enum Raw<'a> {
    /// From an environment variable or a command-line flag.
    Text(&'a str),
    /// From the YAML file (never `null`: a `null` leaves the key unset).
    Yaml(&'a Value),
}

/// A type that a configuration key can hold.
pub(super) trait ConfigValue: Sized {
    /// Reads the value from text.
    fn from_text(text: &str) -> Result<Self, String>;

    /// Reads the value from YAML; by default a scalar read as text, so
    /// `port: 8080` and `port: "8080"` mean the same.
    fn from_yaml(value: &Value) -> Result<Self, String> {
        Self::from_text(&scalar_text(value)?)
    }

    /// Reads the value from either source.
    fn parse(raw: Raw<'_>) -> Result<Self, String> {
        match raw {
            Raw::Text(text) => Self::from_text(text),
            Raw::Yaml(value) => Self::from_yaml(value),
        }
    }
}

/// A YAML scalar as text; lists and mappings are refused.
pub(super) fn scalar_text(value: &Value) -> Result<Cow<'_, str>, String> {
    match value {
        Value::String(text) => Ok(Cow::Borrowed(text)),
        Value::Number(number) => Ok(Cow::Owned(number.to_string())),
        Value::Bool(flag) => Ok(Cow::Owned(flag.to_string())),
        Value::Null => Ok(Cow::Borrowed("")),
        Value::Sequence(_) => Err("expected a single value, found a list".to_string()),
        Value::Mapping(_) => Err("expected a single value, found a mapping".to_string()),
        Value::Tagged(_) => Err("expected a single value, found a tagged value".to_string()),
    }
}

/// A secret (password, API key, HMAC key, token).
///
/// Its `Debug` prints `Secret(***)` and it has no `Display`, so a `Config`
/// can be logged whole without leaking it; read it with [`Secret::expose`]
/// only where it is used.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The text of a YAML string; numbers and booleans are refused rather than
/// converted, because YAML has already rewritten them (`0123`, `1e3`, `1.10`)
/// and the error would print a secret.
fn yaml_string(value: &Value) -> Result<&str, String> {
    match value {
        Value::String(text) => Ok(text),
        Value::Number(_) | Value::Bool(_) => Err("must be a string (quote it)".to_string()),
        // Lists and mappings are refused there; `null` never gets here.
        other => scalar_text(other).map(|_| ""),
    }
}

impl ConfigValue for Secret {
    fn from_text(text: &str) -> Result<Self, String> {
        // Deliberately not trimmed: a secret is used byte for byte.
        if text.is_empty() {
            return Err("must not be empty (leave the key out instead)".to_string());
        }
        Ok(Self::new(text))
    }

    fn from_yaml(value: &Value) -> Result<Self, String> {
        Self::from_text(yaml_string(value)?)
    }
}

impl ConfigValue for String {
    fn from_text(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Err("must not be empty (leave the key out instead)".to_string());
        }
        Ok(text.to_string())
    }

    fn from_yaml(value: &Value) -> Result<Self, String> {
        Self::from_text(yaml_string(value)?)
    }
}

impl ConfigValue for PathBuf {
    fn from_text(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Err("must not be empty".to_string());
        }
        Ok(PathBuf::from(text))
    }

    fn from_yaml(value: &Value) -> Result<Self, String> {
        Self::from_text(yaml_string(value)?)
    }
}

impl ConfigValue for bool {
    fn from_text(text: &str) -> Result<Self, String> {
        match text.trim() {
            "1" => Ok(true),
            "0" => Ok(false),
            word if word.eq_ignore_ascii_case("true") => Ok(true),
            word if word.eq_ignore_ascii_case("false") => Ok(false),
            _ => Err(format!("{text:?} is not a boolean (true, false, 1 or 0)")),
        }
    }
}

/// Unsigned integers, with the words their error uses for the range.
macro_rules! unsigned_value {
    ($($ty:ty => $range:literal),+ $(,)?) => {$(
        impl ConfigValue for $ty {
            fn from_text(text: &str) -> Result<Self, String> {
                text.trim().parse().map_err(|_| format!("{text:?} is not a number {}", $range))
            }

            /// A YAML float is refused without echoing it: YAML has
            /// already rewritten it (`6e1` reads as 60.0).
            fn from_yaml(value: &Value) -> Result<Self, String> {
                if let Value::Number(number) = value
                    && number.is_f64()
                {
                    return Err(format!(
                        "is a fraction or has an exponent: write a whole number {}",
                        $range
                    ));
                }
                Self::from_text(&scalar_text(value)?)
            }
        }
    )+};
}

unsigned_value! {
    u16 => "0..65535",
    u32 => "0..4294967295",
    u64 => "of 0 or more",
    usize => "of 0 or more",
}

/// A value outside a fixed set of words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not one of {expected}")]
pub struct UnknownKeyword {
    /// What was given.
    pub value: String,
    /// The accepted words, comma separated.
    pub expected: String,
}

/// An enum read from one of a fixed set of lowercase words.
macro_rules! keyword_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$variant_meta:meta])* $variant:ident = $word:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub enum $name {
            $( $(#[$variant_meta])* $variant, )+
        }

        impl $name {
            /// Every value, in documentation order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The configuration spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $word,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownKeyword;

            fn from_str(word: &str) -> Result<Self, Self::Err> {
                Self::ALL.iter().copied().find(|value| value.as_str() == word).ok_or_else(|| {
                    UnknownKeyword {
                        value: word.to_string(),
                        expected: Self::ALL
                            .iter()
                            .map(|value| value.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    }
                })
            }
        }

        impl ConfigValue for $name {
            fn from_text(text: &str) -> Result<Self, String> {
                text.trim().parse().map_err(|error: UnknownKeyword| error.to_string())
            }
        }
    };
}

keyword_enum! {
    /// `env`: what kind of deployment this is.
    pub enum Env {
        /// Development: enables the `X-Role: ADMIN` header for producer tokens
        /// without a role (docs/security.md). Never use it in production.
        Dev = "dev",
        /// Production (the default).
        #[default]
        Prod = "prod",
    }
}

keyword_enum! {
    /// `logFormat`: how log lines are written.
    pub enum LogFormat {
        /// One JSON object per line (the default).
        #[default]
        Json = "json",
        /// Human-readable text.
        Text = "text",
    }
}

keyword_enum! {
    /// `logLevel`: the least severe level that is logged.
    pub enum LogLevel {
        /// Everything.
        Trace = "trace",
        /// Per state change detail.
        Debug = "debug",
        /// One line per request and lifecycle events (the default).
        #[default]
        Info = "info",
        /// Problems the server works around.
        Warn = "warn",
        /// Failures only.
        Error = "error",
    }
}

impl From<LogLevel> for tracing::Level {
    fn from(level: LogLevel) -> Self {
        match level {
            LogLevel::Trace => tracing::Level::TRACE,
            LogLevel::Debug => tracing::Level::DEBUG,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Warn => tracing::Level::WARN,
            LogLevel::Error => tracing::Level::ERROR,
        }
    }
}

keyword_enum! {
    /// `storage`: which backend holds the state.
    pub enum StorageKind {
        /// In-process, on disk under `dataDir` (the default).
        #[default]
        Embedded = "embedded",
        /// Redis ≥ 6.2 or KVRocks at `redisAddr`.
        Redis = "redis",
    }
}

keyword_enum! {
    /// `durability`: when the embedded store answers a write.
    pub enum Durability {
        /// After the change is fsynced (group commit); survives power loss
        /// (the default).
        #[default]
        Fsync = "fsync",
        /// After the change is written to the OS; survives a process crash,
        /// not a power loss.
        Buffered = "buffered",
    }
}

impl ConfigValue for BackoffPolicy {
    fn from_text(text: &str) -> Result<Self, String> {
        text.trim().parse().map_err(|error: codeq_core::backoff::UnknownPolicy| error.to_string())
    }
}

impl ConfigValue for UtcOffset {
    fn from_text(text: &str) -> Result<Self, String> {
        parse_timezone(text.trim())
    }
}

/// Reads `timezone`: `UTC`, `Z` or a fixed offset `±HH:MM`, `±HHMM` or `±HH`.
///
/// IANA zone names (`Europe/Paris`) are refused: resolving them needs a
/// time zone database, which codeQ does not ship or depend on, and a fixed
/// offset never changes with daylight saving time behind the operator's back.
pub fn parse_timezone(text: &str) -> Result<UtcOffset, String> {
    let refuse = || {
        format!(
            "{text:?} is not UTC, Z or a fixed offset like +02:00 \
             (IANA zone names such as Europe/Paris are not supported)"
        )
    };
    if text.eq_ignore_ascii_case("utc") || text.eq_ignore_ascii_case("z") {
        return Ok(UtcOffset::UTC);
    }
    let (sign, rest) = match text.as_bytes().first() {
        Some(b'+') => (1, &text[1..]),
        Some(b'-') => (-1, &text[1..]),
        _ => return Err(refuse()),
    };
    let (hours, minutes) = match rest.split_once(':') {
        Some(parts) => parts,
        None if rest.len() == 4 => rest.split_at(2),
        None => (rest, "00"),
    };
    let two_digits = |part: &str| -> Option<i8> {
        if part.len() == 2 && part.bytes().all(|b| b.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let (Some(hours), Some(minutes)) = (two_digits(hours), two_digits(minutes)) else {
        return Err(refuse());
    };
    if hours > 23 || minutes > 59 {
        return Err(refuse());
    }
    UtcOffset::from_hms(sign * hours, sign * minutes, 0).map_err(|_| refuse())
}

/// Refuses anything but an absolute `http://` or `https://` URL with a host.
///
/// A deliberately small check (no URL crate): the scheme, a non-empty
/// authority, no whitespace. The HTTP client reports anything subtler when
/// the URL is used.
pub(super) fn http_url(url: &str) -> Result<(), String> {
    let refuse = || format!("{url:?} is not an absolute http:// or https:// URL");
    let rest = crate::service::outbound::after_http_scheme(url).ok_or_else(refuse)?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') || url.chars().any(char::is_whitespace) {
        return Err(refuse());
    }
    Ok(())
}

/// `host`: a host name or IP address to listen on, not a URL.
pub(super) fn listen_host(host: &str) -> Result<(), String> {
    if host.contains("://") || host.contains('/') || host.chars().any(char::is_whitespace) {
        return Err(format!("{host:?} is not a host name or IP address"));
    }
    Ok(())
}

/// `redisAddr`: `host:port`, or `redis://host:port` / `rediss://host:port`
/// (TLS).
pub(super) fn host_port(addr: &str) -> Result<(), String> {
    let refuse = || {
        format!(
            "{addr:?} is not host:port, redis://host:port or rediss://host:port (e.g. localhost:6379)"
        )
    };
    let bare = match addr.split_once("://") {
        Some((scheme, rest))
            if scheme.eq_ignore_ascii_case("redis") || scheme.eq_ignore_ascii_case("rediss") =>
        {
            rest
        }
        Some((scheme, _)) => {
            return Err(format!(
                "{addr:?} has the scheme {scheme}://; Redis takes host:port, redis://host:port \
                 or rediss://host:port"
            ));
        }
        None => addr,
    }
    .trim_end_matches('/');
    // Credentials in the address would be logged with it: not echoed.
    if bare.contains('@') {
        return Err("holds user information (user:password@): put the password in \
                    redisPassword and give host:port only"
            .to_string());
    }
    let (host, port) = bare.rsplit_once(':').ok_or_else(refuse)?;
    let malformed = host.is_empty() || host.contains('/') || port.parse::<u16>().is_err();
    if malformed || addr.chars().any(char::is_whitespace) {
        return Err(refuse());
    }
    Ok(())
}

/// `redisKeyPrefix`: no whitespace, and no `{` or `}`, which would change
/// the Redis Cluster hash tags of the key layout.
pub(super) fn key_prefix(prefix: &str) -> Result<(), String> {
    no_whitespace(prefix)?;
    if prefix.contains(['{', '}']) {
        return Err(format!(
            "{prefix:?} must not contain {{ or }} (they would change the keys' hash tags)"
        ));
    }
    Ok(())
}

/// A word without whitespace (`redisKeyPrefix`, audiences, issuers).
pub(super) fn no_whitespace(word: &str) -> Result<(), String> {
    if word.chars().any(char::is_whitespace) {
        return Err(format!("{word:?} must not contain whitespace"));
    }
    Ok(())
}

/// At least 1.
pub(super) fn positive<T: Copy + PartialOrd + From<u8> + fmt::Display>(
    value: &T,
) -> Result<(), String> {
    if *value < T::from(1) {
        return Err(format!("{value} is less than 1"));
    }
    Ok(())
}

/// `maxAttemptsDefault`: 1..=1000.
pub(super) fn attempts(value: &u32) -> Result<(), String> {
    if !(1..=1000).contains(value) {
        return Err(format!("{value} is not within 1..1000"));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn timezone_accepts_utc_z_and_fixed_offsets() {
        let offset = |h, m| UtcOffset::from_hms(h, m, 0).unwrap();
        for (text, want) in [
            ("UTC", UtcOffset::UTC),
            ("utc", UtcOffset::UTC),
            ("Z", UtcOffset::UTC),
            ("+00:00", UtcOffset::UTC),
            ("+02:00", offset(2, 0)),
            ("-05:30", offset(-5, -30)),
            ("+0530", offset(5, 30)),
            ("+09", offset(9, 0)),
            ("-23:59", offset(-23, -59)),
        ] {
            assert_eq!(parse_timezone(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn timezone_refuses_zone_names_and_malformed_offsets() {
        for text in ["Europe/Paris", "02:00", "+2:00", "+24:00", "+02:60", "+02:00:00", "", "GMT"] {
            let error = parse_timezone(text).unwrap_err();
            assert!(error.contains("fixed offset like +02:00"), "{text}: {error}");
        }
    }

    #[test]
    fn http_urls_must_be_absolute_with_a_host() {
        for good in
            ["http://id.example", "https://id.example:8443/v1", "HTTPS://a.b?x#y", "http://u@h"]
        {
            assert_eq!(http_url(good), Ok(()), "{good}");
        }
        for bad in ["ftp://x", "id.example", "/v1/jwks", "http://", "https://:80/", "http://a b"] {
            assert!(http_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_key_prefix_keeps_the_hash_tags() {
        assert_eq!(key_prefix("codeq"), Ok(()));
        assert_eq!(key_prefix("team-a:codeq%1"), Ok(()));
        for bad in ["a{b}", "a}", "{", "a b"] {
            assert!(key_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn booleans_accept_true_false_one_and_zero() {
        for (text, want) in [("true", true), ("FALSE", false), ("1", true), ("0", false)] {
            assert_eq!(bool::from_text(text), Ok(want), "{text}");
        }
        for text in ["yes", "no", "on", "2", ""] {
            assert!(bool::from_text(text).is_err(), "{text}");
        }
    }

    #[test]
    fn redis_address_needs_a_port() {
        assert_eq!(host_port("localhost:6379"), Ok(()));
        assert_eq!(host_port("[::1]:6379"), Ok(()));
        assert_eq!(host_port("rediss://redis.internal:6380"), Ok(()));
        assert_eq!(host_port("redis://127.0.0.1:6379"), Ok(()));
        assert_eq!(host_port("REDISS://redis.internal:6380"), Ok(()));
        for bad in ["localhost", ":6379", "h:port", "h:70000", "h/x:6379", "redis://h/0:6379"] {
            assert!(host_port(bad).is_err(), "{bad}");
        }
        for other in ["http://127.0.0.1:6379", "tcp://h:6379", "unix:///tmp/r.sock"] {
            let error = host_port(other).unwrap_err();
            assert!(error.contains("has the scheme"), "{other}: {error}");
        }
        let with_password = host_port("redis://user:s3cret@redis:6379").unwrap_err();
        assert!(with_password.contains("redisPassword"), "{with_password}");
        assert!(!with_password.contains("s3cret"), "{with_password}");
    }

    #[test]
    fn keywords_round_trip_and_list_the_choices_on_error() {
        for level in LogLevel::ALL {
            assert_eq!(level.as_str().parse::<LogLevel>(), Ok(*level));
        }
        let error = "verbose".parse::<LogLevel>().unwrap_err();
        assert_eq!(error.to_string(), r#""verbose" is not one of trace, debug, info, warn, error"#);
    }

    #[test]
    fn secret_debug_hides_the_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert_eq!(format!("{:?}", Some(secret.clone())), "Some(Secret(***))");
        assert_eq!(secret.expose(), "hunter2");
    }
}
