//! `staticTokens`: bearer tokens defined in the configuration (docs/security.md),
//! for small deployments without an identity provider.
//!
//! In the YAML file the key holds a list of entries; in the environment
//! `CODEQ_STATIC_TOKENS` holds the same list as a JSON array. Each entry is
//! checked here once; the auth module only compares.

use std::collections::HashSet;
use std::fmt;

use codeq_core::Command;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use serde_norway::Value;
use sha2::{Digest, Sha256};

use super::value::{ConfigValue, Secret};
use crate::auth::StaticTokenError;

/// Every scope a static (worker) token may list. Admin rights come from
/// `admin: true` on a producer entry instead.
pub const KNOWN_SCOPES: [&str; 6] = [
    "codeq:claim",
    "codeq:heartbeat",
    "codeq:abandon",
    "codeq:nack",
    "codeq:result",
    "codeq:subscribe",
];

/// Who a static token speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// Creates tasks (and administers queues with `admin: true`).
    Producer,
    /// Claims and completes tasks.
    Worker,
}

impl TokenKind {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Producer => "producer",
            Self::Worker => "worker",
        }
    }
}

/// One entry of `staticTokens`, validated.
///
/// Exactly one of `token` and `token_sha256` is set. A worker entry without
/// `scopes` gets every worker scope and without `eventTypes` gets `["*"]`;
/// that default is applied by the auth module, which knows the principal's
/// shape, so `None` here means "not given".
#[derive(Debug, Clone)]
pub struct StaticTokenConfig {
    /// `token`: the token itself.
    pub token: Option<Secret>,
    /// `tokenSha256`: the SHA-256 of the token, 64 lowercase hex digits
    /// (upper case is accepted and lowered).
    pub token_sha256: Option<String>,
    /// `kind`: `producer` or `worker`.
    pub kind: TokenKind,
    /// `sub`: the principal's subject (a worker's `workerId`).
    pub sub: String,
    /// `eventTypes`: each `*` or a valid command name; never empty when set.
    pub event_types: Option<Vec<String>>,
    /// `scopes`: each one of [`KNOWN_SCOPES`].
    pub scopes: Option<Vec<String>>,
    /// `workerGroup`.
    pub worker_group: Option<String>,
    /// `admin`: producer tokens only; default false.
    pub admin: bool,
}

impl StaticTokenConfig {
    /// An entry for a plain `token` of `kind` and `sub`, with the defaults
    /// of everything else (all commands; all worker scopes; not admin).
    pub fn plain(token: &str, kind: TokenKind, sub: &str) -> Self {
        Self {
            token: Some(Secret::new(token)),
            token_sha256: None,
            kind,
            sub: sub.into(),
            event_types: None,
            scopes: None,
            worker_group: None,
            admin: false,
        }
    }

    /// The SHA-256 of the token as lowercase hex, whichever way it was given.
    pub fn sha256_hex(&self) -> String {
        match (&self.token_sha256, &self.token) {
            (Some(digest), _) => digest.clone(),
            (None, Some(token)) => sha256_hex(token.expose().as_bytes()),
            (None, None) => String::new(),
        }
    }
}

/// SHA-256 of `bytes` as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|byte| format!("{byte:02x}")).collect()
}

/// An entry as written, before validation.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawEntry {
    #[serde(default)]
    token: Option<SecretText>,
    /// Read as a secret: a token written here by mistake is not echoed.
    #[serde(default)]
    token_sha256: Option<SecretText>,
    kind: TokenKind,
    sub: String,
    #[serde(default)]
    event_types: Option<Vec<String>>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    worker_group: Option<String>,
    #[serde(default)]
    admin: bool,
}

/// A token read from a string, whose errors never echo it (serde's default
/// "invalid type: integer `123`, expected a string" would).
struct SecretText(String);

const NOT_A_STRING: &str = "token must be a string (quote it)";

impl<'de> Deserialize<'de> for SecretText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SecretVisitor;

        impl Visitor<'_> for SecretVisitor {
            type Value = SecretText;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<SecretText, E> {
                Ok(SecretText(text.to_string()))
            }

            // Numbers are refused rather than turned into text: YAML would
            // have already rewritten `0123` or `1e3`, and the default errors
            // would print the number.
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<SecretText, E> {
                Err(E::custom(NOT_A_STRING))
            }

            fn visit_i64<E: de::Error>(self, _: i64) -> Result<SecretText, E> {
                Err(E::custom(NOT_A_STRING))
            }

            fn visit_u128<E: de::Error>(self, _: u128) -> Result<SecretText, E> {
                Err(E::custom(NOT_A_STRING))
            }

            fn visit_i128<E: de::Error>(self, _: i128) -> Result<SecretText, E> {
                Err(E::custom(NOT_A_STRING))
            }

            fn visit_f64<E: de::Error>(self, _: f64) -> Result<SecretText, E> {
                Err(E::custom(NOT_A_STRING))
            }

            fn visit_bool<E: de::Error>(self, _: bool) -> Result<SecretText, E> {
                Err(E::custom(NOT_A_STRING))
            }
        }

        deserializer.deserialize_any(SecretVisitor)
    }
}

impl RawEntry {
    fn validate(self) -> Result<StaticTokenConfig, String> {
        self.check_kind_fits()?;
        let token = match self.token {
            Some(SecretText(text)) if text.is_empty() => {
                return Err("token must not be empty".to_string());
            }
            Some(SecretText(text)) if text.chars().any(char::is_whitespace) => {
                return Err("token must not contain whitespace".to_string());
            }
            Some(SecretText(text)) => Some(Secret::new(text)),
            None => None,
        };
        let token_sha256 = match self.token_sha256 {
            Some(SecretText(digest))
                if digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                Some(digest.to_ascii_lowercase())
            }
            // Not echoed: a token put here by mistake would reach the log.
            Some(_) => {
                return Err("tokenSha256 is not 64 hex digits (the SHA-256 of the token, \
                            not the token)"
                    .to_string());
            }
            None => None,
        };
        if token.is_some() == token_sha256.is_some() {
            return Err("exactly one of token and tokenSha256 must be set".to_string());
        }
        if self.sub.trim().is_empty() {
            return Err("sub must not be empty".to_string());
        }
        if let Some(event_types) = &self.event_types {
            if event_types.is_empty() {
                return Err("eventTypes must not be empty (leave it out for all)".to_string());
            }
            for event_type in event_types {
                if event_type != "*" {
                    Command::parse(event_type).map_err(|error| {
                        format!(
                            "eventTypes: {event_type:?} is not \"*\" or a command name: {error}"
                        )
                    })?;
                }
            }
        }
        for scope in self.scopes.iter().flatten() {
            if !KNOWN_SCOPES.contains(&scope.as_str()) {
                return Err(format!("scopes: {scope:?} is not one of {}", KNOWN_SCOPES.join(", ")));
            }
        }
        if self.worker_group.as_deref().is_some_and(|group| group.trim().is_empty()) {
            return Err("workerGroup must not be empty (leave it out instead)".to_string());
        }
        Ok(StaticTokenConfig {
            token,
            token_sha256,
            kind: self.kind,
            sub: self.sub,
            event_types: self.event_types,
            scopes: self.scopes,
            worker_group: self.worker_group,
            admin: self.admin,
        })
    }
}

impl RawEntry {
    /// Refuses what applies to the other kind of entry: checked here, with
    /// the rest of the configuration, before the server touches storage.
    fn check_kind_fits(&self) -> Result<(), String> {
        let refused = match self.kind {
            TokenKind::Worker if self.admin => Some(StaticTokenError::AdminOnWorker),
            TokenKind::Producer if self.scopes.is_some() => {
                Some(StaticTokenError::ScopesOnProducer)
            }
            TokenKind::Producer if self.worker_group.is_some() => {
                Some(StaticTokenError::WorkerGroupOnProducer)
            }
            _ if self.scopes.iter().flatten().any(|scope| scope == "codeq:admin") => {
                Some(StaticTokenError::AdminScope)
            }
            _ => None,
        };
        refused.map_or(Ok(()), |error| Err(error.to_string()))
    }
}

/// Validates every entry and refuses two entries for the same token (the
/// principal would depend on which one the auth module tried first).
fn validate_all(entries: Vec<Result<RawEntry, String>>) -> Result<Vec<StaticTokenConfig>, String> {
    let mut seen = HashSet::new();
    let mut tokens = Vec::with_capacity(entries.len());
    for (index, entry) in entries.into_iter().enumerate() {
        let token = entry
            .and_then(RawEntry::validate)
            .map_err(|reason| format!("entry {index}: {reason}"))?;
        if !seen.insert(token.sha256_hex()) {
            return Err(format!("entry {index}: the same token as an earlier entry"));
        }
        tokens.push(token);
    }
    Ok(tokens)
}

impl ConfigValue for Vec<StaticTokenConfig> {
    /// `CODEQ_STATIC_TOKENS`: a JSON array of entries.
    fn from_text(text: &str) -> Result<Self, String> {
        // Parsed to a generic value first: a syntax error then carries a
        // position, never a piece of the text (which holds tokens).
        let document: serde_json::Value = serde_json::from_str(text)
            .map_err(|error| format!("not a JSON array of tokens: {error}"))?;
        let serde_json::Value::Array(items) = document else {
            return Err("not a JSON array of tokens".to_string());
        };
        validate_all(
            items
                .into_iter()
                .map(|item| serde_json::from_value(item).map_err(|error| error.to_string()))
                .collect(),
        )
    }

    fn from_yaml(value: &Value) -> Result<Self, String> {
        let Value::Sequence(items) = value else {
            return Err("expected a list of tokens".to_string());
        };
        validate_all(
            items
                .iter()
                .map(|item| {
                    serde_norway::from_value(item.clone()).map_err(|error| error.to_string())
                })
                .collect(),
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const DIGEST: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn parse_yaml(text: &str) -> Result<Vec<StaticTokenConfig>, String> {
        Vec::<StaticTokenConfig>::from_yaml(&serde_norway::from_str(text).unwrap())
    }

    #[test]
    fn a_full_entry_is_read_with_every_field() {
        let tokens = parse_yaml(
            "- token: s3cret\n  kind: worker\n  sub: w1\n  eventTypes: [\"*\", GENERATE_MASTER]\n  \
             scopes: [codeq:claim, codeq:result]\n  workerGroup: gpu\n\
             - tokenSha256: 9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08\n  \
             kind: producer\n  sub: ci\n  admin: true\n",
        )
        .unwrap();
        let worker = &tokens[0];
        assert_eq!(worker.token.as_ref().map(Secret::expose), Some("s3cret"));
        assert_eq!(worker.token_sha256, None);
        assert_eq!(worker.kind, TokenKind::Worker);
        assert_eq!(worker.sub, "w1");
        assert_eq!(worker.event_types, Some(vec!["*".into(), "GENERATE_MASTER".into()]));
        assert_eq!(worker.scopes, Some(vec!["codeq:claim".into(), "codeq:result".into()]));
        assert_eq!(worker.worker_group.as_deref(), Some("gpu"));
        assert!(!worker.admin);
        let producer = &tokens[1];
        assert_eq!(producer.token_sha256.as_deref(), Some(DIGEST), "lowered");
        assert_eq!(producer.kind, TokenKind::Producer);
        assert!(producer.admin);
        assert_eq!(producer.event_types, None);
        assert_eq!(producer.scopes, None);
    }

    #[test]
    fn the_digest_of_a_plain_token_is_its_sha256() {
        let tokens = parse_yaml("- {token: test, kind: producer, sub: p}").unwrap();
        assert_eq!(tokens[0].sha256_hex(), DIGEST);
    }

    #[test]
    fn the_json_form_reads_the_same_entries() {
        let tokens = Vec::<StaticTokenConfig>::from_text(
            r#"[{"tokenSha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","kind":"worker","sub":"w","eventTypes":["A"]}]"#,
        )
        .unwrap();
        assert_eq!(tokens[0].kind, TokenKind::Worker);
        assert_eq!(tokens[0].event_types, Some(vec!["A".to_string()]));
    }

    #[test]
    fn invalid_entries_are_refused_with_their_index_and_reason() {
        let sha = format!("tokenSha256: {DIGEST}");
        for (entry, reason) in [
            ("{kind: worker, sub: w}", "exactly one of token and tokenSha256"),
            (&format!("{{token: t, {sha}, kind: worker, sub: w}}"), "exactly one of token and"),
            ("{token: t, kind: worker, sub: ''}", "sub must not be empty"),
            ("{token: t, kind: worker}", "missing field `sub`"),
            ("{token: t, kind: robot, sub: w}", "unknown variant `robot`"),
            ("{token: '', kind: worker, sub: w}", "token must not be empty"),
            ("{token: 'a b', kind: worker, sub: w}", "token must not contain whitespace"),
            ("{tokenSha256: abc, kind: worker, sub: w}", "is not 64 hex digits"),
            (&format!("{{tokenSha256: {}, kind: worker, sub: w}}", "g".repeat(64)), "64 hex"),
            ("{token: t, kind: worker, sub: w, eventTypes: []}", "eventTypes must not be empty"),
            ("{token: t, kind: worker, sub: w, eventTypes: [a b]}", "is not \"*\" or a command"),
            ("{token: t, kind: worker, sub: w, scopes: [codeq:all]}", "\"codeq:all\" is not one"),
            ("{token: t, kind: worker, sub: w, workerGroup: ''}", "workerGroup must not be empty"),
            ("{token: t, kind: worker, sub: w, admin: true}", "admin: true applies to producer"),
            ("{token: t, kind: worker, sub: w, role: x}", "unknown field `role`"),
        ] {
            let yaml = format!("- {{token: first, kind: producer, sub: p}}\n- {entry}\n");
            let error = parse_yaml(&yaml).unwrap_err();
            assert!(error.starts_with("entry 1: "), "{entry}: {error}");
            assert!(error.contains(reason), "{entry}: {error}");
        }
    }

    #[test]
    fn two_entries_for_one_token_are_refused() {
        let error = parse_yaml(&format!(
            "- {{token: test, kind: producer, sub: a}}\n- {{tokenSha256: {DIGEST}, kind: worker, sub: b}}"
        ))
        .unwrap_err();
        assert_eq!(error, "entry 1: the same token as an earlier entry");
    }

    #[test]
    fn errors_never_echo_a_token() {
        for yaml in
            ["- {token: 123456, kind: worker, sub: w}", "- {token: 1.5e3, kind: worker, sub: w}"]
        {
            let error = parse_yaml(yaml).unwrap_err();
            assert!(error.contains("token must be a string (quote it)"), "{error}");
            assert!(!error.contains("123456") && !error.contains("1.5") && !error.contains("1500"));
        }
        let error = Vec::<StaticTokenConfig>::from_text(r#"[{"token": "hunter2"#).unwrap_err();
        assert!(!error.contains("hunter2"), "{error}");
        let error = Vec::<StaticTokenConfig>::from_text(r#""hunter2""#).unwrap_err();
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn the_list_must_be_a_list() {
        assert!(parse_yaml("token: x").unwrap_err().contains("expected a list"));
        assert!(Vec::<StaticTokenConfig>::from_text("{}").unwrap_err().contains("JSON array"));
    }
}
