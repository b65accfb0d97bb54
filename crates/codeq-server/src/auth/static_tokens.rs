//! Static tokens (config `staticTokens`, docs/security.md) for deployments without
//! an identity provider, and the local-mode credentials.
//!
//! A static token has no `role`, so with `env: dev` a producer entry
//! without `admin: true` becomes admin by `X-Role: ADMIN`, as a producer
//! JWT without a `role` claim does.
//!
//! Only the SHA-256 digest of each token is kept. A presented token is
//! hashed and its digest compared with every entry in constant time, so the
//! time taken says nothing about how close a guess was, nor which entry
//! (if any) matched.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use super::principal::{
    EventTypes, EventTypesError, Principal, PrincipalKind, Scope, Scopes, UnknownScope,
};
use super::provider::{RequestContext, TokenVerifier, VerifyFuture};

/// What a static token grants: the plain fields of a `staticTokens` entry
/// (all but the token itself), as read from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticGrant {
    /// `kind`.
    pub kind: PrincipalKind,
    /// `sub`: must not be empty.
    pub sub: String,
    /// `eventTypes`: `None` or a list holding `"*"` means every command.
    pub event_types: Option<Vec<String>>,
    /// `scopes` (worker entries only): `None` means every worker scope.
    pub scopes: Option<Vec<String>>,
    /// `workerGroup` (worker entries only).
    pub worker_group: Option<String>,
    /// `admin` (producer entries only).
    pub admin: bool,
}

/// Why a `staticTokens` entry was refused. Messages name the config keys;
/// the caller adds which entry (e.g. `staticTokens[2]: …`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StaticTokenError {
    /// `token` is empty.
    #[error("token must not be empty")]
    EmptyToken,
    /// `tokenSha256` is not 64 hex digits.
    #[error("tokenSha256 must be 64 hexadecimal characters (the SHA-256 of the token)")]
    InvalidSha256,
    /// `sub` is empty.
    #[error("sub must not be empty")]
    EmptySub,
    /// `workerGroup` is given but empty.
    #[error("workerGroup must not be empty when given")]
    EmptyWorkerGroup,
    /// `eventTypes` is invalid.
    #[error(transparent)]
    EventTypes(#[from] EventTypesError),
    /// `scopes` names an unknown scope.
    #[error("scopes: {0}")]
    UnknownScope(#[from] UnknownScope),
    /// `scopes` lists `codeq:admin`.
    #[error(
        "scopes may not list codeq:admin: admin rights come from admin: true on a producer entry"
    )]
    AdminScope,
    /// `scopes` is given on a producer entry.
    #[error("scopes apply to worker entries only (for an admin producer, set admin: true)")]
    ScopesOnProducer,
    /// `workerGroup` is given on a producer entry.
    #[error("workerGroup applies to worker entries only")]
    WorkerGroupOnProducer,
    /// `admin: true` on a worker entry.
    #[error("admin: true applies to producer entries only")]
    AdminOnWorker,
    /// Two entries have the same token.
    #[error("the entries for sub {first:?} and sub {second:?} have the same token")]
    Duplicate {
        /// `sub` of the earlier entry.
        first: String,
        /// `sub` of the later entry.
        second: String,
    },
}

/// One static token: the SHA-256 of the token and the principal it
/// resolves to.
#[derive(Clone, PartialEq, Eq)]
pub struct StaticToken {
    sha256: [u8; 32],
    principal: Principal,
}

impl StaticToken {
    /// An entry given with its token in clear (`token`).
    pub fn from_plain(token: &str, grant: StaticGrant) -> Result<Self, StaticTokenError> {
        if token.is_empty() {
            return Err(StaticTokenError::EmptyToken);
        }
        Ok(Self { sha256: sha256(token), principal: principal_of(grant)? })
    }

    /// An entry given by the hex SHA-256 of its token (`tokenSha256`;
    /// either case is accepted).
    pub fn from_sha256_hex(hex: &str, grant: StaticGrant) -> Result<Self, StaticTokenError> {
        Ok(Self { sha256: parse_sha256_hex(hex)?, principal: principal_of(grant)? })
    }

    /// An entry for a token whose principal is already built (local mode).
    pub(crate) fn for_principal(token: &str, principal: Principal) -> Self {
        Self { sha256: sha256(token), principal }
    }

    /// The principal this token resolves to.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// The token's SHA-256 digest.
    pub fn sha256(&self) -> &[u8; 32] {
        &self.sha256
    }
}

impl fmt::Debug for StaticToken {
    /// Leaves the digest out: it is as good as the token against an offline
    /// guess of a weak token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticToken").field("principal", &self.principal).finish_non_exhaustive()
    }
}

/// Resolves the configured static tokens.
#[derive(Debug, Clone, Default)]
pub struct StaticTokenVerifier {
    tokens: Vec<StaticToken>,
    honour_x_role: bool,
}

impl StaticTokenVerifier {
    /// A verifier for `tokens`; refuses two entries with the same token.
    pub fn new(tokens: Vec<StaticToken>) -> Result<Self, StaticTokenError> {
        for (i, later) in tokens.iter().enumerate() {
            if let Some(earlier) = tokens[..i].iter().find(|t| t.sha256 == later.sha256) {
                return Err(StaticTokenError::Duplicate {
                    first: earlier.principal.sub.clone(),
                    second: later.principal.sub.clone(),
                });
            }
        }
        Ok(Self { tokens, honour_x_role: false })
    }

    /// A verifier for entries known to hold distinct tokens.
    pub(crate) fn new_unchecked(tokens: Vec<StaticToken>) -> Self {
        Self { tokens, honour_x_role: false }
    }

    /// Lets `X-Role: ADMIN` make a producer without `admin` an admin
    /// (`env: dev`).
    #[must_use]
    pub fn honouring_x_role(mut self, honour: bool) -> Self {
        self.honour_x_role = honour;
        self
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The entries.
    pub fn tokens(&self) -> &[StaticToken] {
        &self.tokens
    }

    /// The principal of `token`, if it is one of the entries.
    ///
    /// Every entry is compared, without branching on the outcome until the
    /// end, so the time taken depends only on the number of entries.
    pub fn lookup(&self, token: &str) -> Option<&Principal> {
        let digest = sha256(token);
        let mut found = subtle::Choice::from(0);
        let mut index = 0u32;
        for (i, entry) in self.tokens.iter().enumerate() {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            let equal = entry.sha256.ct_eq(&digest);
            index = u32::conditional_select(&index, &i, equal);
            found |= equal;
        }
        if bool::from(found) {
            self.tokens.get(usize::try_from(index).ok()?).map(StaticToken::principal)
        } else {
            None
        }
    }
}

impl TokenVerifier for StaticTokenVerifier {
    fn verify<'a>(&'a self, token: &'a str) -> VerifyFuture<'a> {
        self.verify_request(token, RequestContext::default())
    }

    fn verify_request<'a>(
        &'a self,
        token: &'a str,
        context: RequestContext<'a>,
    ) -> VerifyFuture<'a> {
        let principal = self.lookup(token).cloned().map(|mut principal| {
            let producer = principal.kind == PrincipalKind::Producer;
            if self.honour_x_role && producer && context.asks_for_admin() {
                principal.grant_admin_role();
            }
            principal
        });
        Box::pin(std::future::ready(Ok(principal)))
    }
}

/// The SHA-256 digest of `token`.
pub fn sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The lowercase hex form of a digest, as `tokenSha256` expects it.
pub fn sha256_hex(token: &str) -> String {
    sha256(token).iter().map(|byte| format!("{byte:02x}")).collect()
}

fn parse_sha256_hex(hex: &str) -> Result<[u8; 32], StaticTokenError> {
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return Err(StaticTokenError::InvalidSha256);
    }
    let mut digest = [0u8; 32];
    for (byte, pair) in digest.iter_mut().zip(hex.chunks_exact(2)) {
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(StaticTokenError::InvalidSha256),
        };
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Ok(digest)
}

/// Builds the principal of an entry, applying the defaults of docs/security.md: a worker
/// without `scopes` gets every worker scope, without `eventTypes` every
/// command; a producer carries [`Scope::Admin`] exactly when `admin`.
fn principal_of(grant: StaticGrant) -> Result<Principal, StaticTokenError> {
    let StaticGrant { kind, sub, event_types, scopes, worker_group, admin } = grant;
    if sub.is_empty() {
        return Err(StaticTokenError::EmptySub);
    }
    if worker_group.as_deref() == Some("") {
        return Err(StaticTokenError::EmptyWorkerGroup);
    }
    let event_types = match event_types {
        None => EventTypes::All,
        Some(names) => EventTypes::from_names(names)?,
    };
    let scopes = match (kind, scopes) {
        (PrincipalKind::Worker, None) => Scopes::all_worker(),
        (PrincipalKind::Worker, Some(names)) => {
            let scopes = Scopes::from_names(names)?;
            if scopes.contains(Scope::Admin) {
                return Err(StaticTokenError::AdminScope);
            }
            scopes
        }
        (PrincipalKind::Producer, Some(_)) => return Err(StaticTokenError::ScopesOnProducer),
        (PrincipalKind::Producer, None) if admin => Scopes::empty().with(Scope::Admin),
        (PrincipalKind::Producer, None) => Scopes::empty(),
    };
    match kind {
        PrincipalKind::Worker if admin => return Err(StaticTokenError::AdminOnWorker),
        PrincipalKind::Producer if worker_group.is_some() => {
            return Err(StaticTokenError::WorkerGroupOnProducer);
        }
        _ => {}
    }
    Ok(Principal { kind, sub, event_types, scopes, worker_group, admin })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::Arc;

    use axum::http::StatusCode;
    use codeq_core::Command;

    use super::*;
    use crate::auth::principal::codes;
    use crate::auth::provider::Authenticator;

    fn grant(kind: PrincipalKind, sub: &str) -> StaticGrant {
        StaticGrant {
            kind,
            sub: sub.into(),
            event_types: None,
            scopes: None,
            worker_group: None,
            admin: false,
        }
    }

    fn names(list: &[&str]) -> Option<Vec<String>> {
        Some(list.iter().map(|s| s.to_string()).collect())
    }

    fn authenticator(tokens: Vec<StaticToken>) -> Authenticator {
        Authenticator::new(vec![Arc::new(StaticTokenVerifier::new(tokens).unwrap())])
    }

    #[test]
    fn sha256_hex_is_lowercase_and_round_trips() {
        // printf abc | sha256sum
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_hex("abc"), abc);
        assert_eq!(parse_sha256_hex(abc).unwrap(), sha256("abc"));
        assert_eq!(parse_sha256_hex(&abc.to_uppercase()).unwrap(), sha256("abc"));
    }

    #[test]
    fn malformed_sha256_entries_are_refused() {
        let worker = || grant(PrincipalKind::Worker, "w");
        for hex in ["", "abc", &"0".repeat(63), &"0".repeat(65), &format!("{}g", "0".repeat(63))] {
            assert_eq!(
                StaticToken::from_sha256_hex(hex, worker()),
                Err(StaticTokenError::InvalidSha256),
                "{hex}"
            );
        }
        assert_eq!(StaticToken::from_plain("", worker()), Err(StaticTokenError::EmptyToken));
    }

    #[tokio::test]
    async fn plain_and_sha256_entries_both_authenticate() {
        let auth = authenticator(vec![
            StaticToken::from_plain("plain-secret", grant(PrincipalKind::Producer, "p")).unwrap(),
            StaticToken::from_sha256_hex(
                &sha256_hex("hashed-secret"),
                grant(PrincipalKind::Worker, "w"),
            )
            .unwrap(),
        ]);

        let producer = auth.authenticate(Some("Bearer plain-secret")).await.unwrap();
        assert_eq!((producer.kind, producer.sub.as_str()), (PrincipalKind::Producer, "p"));
        let worker = auth.authenticate(Some("Bearer hashed-secret")).await.unwrap();
        assert_eq!((worker.kind, worker.sub.as_str()), (PrincipalKind::Worker, "w"));
    }

    #[tokio::test]
    async fn a_wrong_token_is_401_invalid_token() {
        let auth = authenticator(vec![
            StaticToken::from_plain("right", grant(PrincipalKind::Worker, "w")).unwrap(),
        ]);
        for wrong in ["Bearer wrong", "Bearer righ", "Bearer right2", "Bearer RIGHT"] {
            let error = auth.authenticate(Some(wrong)).await.unwrap_err();
            assert_eq!(
                (error.status(), error.code()),
                (StatusCode::UNAUTHORIZED, codes::INVALID_TOKEN)
            );
        }
        // The digest itself is not a token.
        let error = auth.authenticate(Some(&format!("Bearer {}", sha256_hex("right")))).await;
        assert_eq!(error.unwrap_err().code(), codes::INVALID_TOKEN);
    }

    #[test]
    fn a_worker_entry_without_scopes_or_event_types_gets_everything() {
        let token = StaticToken::from_plain("t", grant(PrincipalKind::Worker, "w")).unwrap();
        let principal = token.principal();
        assert_eq!(principal.scopes, Scopes::all_worker());
        assert_eq!(principal.event_types, EventTypes::All);
        assert!(!principal.admin);
    }

    #[test]
    fn a_worker_entry_keeps_its_scopes_event_types_and_group() {
        let mut grant = grant(PrincipalKind::Worker, "w");
        grant.scopes = names(&["codeq:claim", "codeq:result"]);
        grant.event_types = names(&["RENDER"]);
        grant.worker_group = Some("gpu".into());
        let token = StaticToken::from_plain("t", grant).unwrap();
        let principal = token.principal();
        assert!(principal.require_scope(Scope::Claim).is_ok());
        assert!(principal.require_scope(Scope::Nack).is_err());
        assert_eq!(
            principal.event_types,
            EventTypes::Only(vec![Command::parse("RENDER").unwrap()])
        );
        assert_eq!(principal.worker_group.as_deref(), Some("gpu"));
    }

    #[test]
    fn star_in_event_types_means_all() {
        let mut grant = grant(PrincipalKind::Worker, "w");
        grant.event_types = names(&["RENDER", "*"]);
        let token = StaticToken::from_plain("t", grant).unwrap();
        assert_eq!(token.principal().event_types, EventTypes::All);
    }

    #[test]
    fn admin_comes_only_from_the_admin_flag_of_a_producer() {
        let plain = StaticToken::from_plain("t", grant(PrincipalKind::Producer, "p")).unwrap();
        assert!(plain.principal().require_admin().is_err());
        assert!(!plain.principal().scopes.contains(Scope::Admin));

        let mut admin_grant = grant(PrincipalKind::Producer, "p");
        admin_grant.admin = true;
        let admin = StaticToken::from_plain("t", admin_grant).unwrap();
        assert!(admin.principal().require_admin().is_ok());
        assert!(admin.principal().scopes.contains(Scope::Admin));

        let mut scoped = grant(PrincipalKind::Producer, "p");
        scoped.scopes = names(&["codeq:admin"]);
        assert_eq!(StaticToken::from_plain("t", scoped), Err(StaticTokenError::ScopesOnProducer));

        let mut worker_admin_scope = grant(PrincipalKind::Worker, "w");
        worker_admin_scope.scopes = names(&["codeq:claim", "codeq:admin"]);
        assert_eq!(
            StaticToken::from_plain("t", worker_admin_scope),
            Err(StaticTokenError::AdminScope)
        );

        let mut worker_admin = grant(PrincipalKind::Worker, "w");
        worker_admin.admin = true;
        assert_eq!(
            StaticToken::from_plain("t", worker_admin),
            Err(StaticTokenError::AdminOnWorker)
        );
    }

    #[test]
    fn invalid_entries_are_refused_with_the_key_named() {
        let mut unknown = grant(PrincipalKind::Worker, "w");
        unknown.scopes = names(&["codeq:fly"]);
        let error = StaticToken::from_plain("t", unknown).unwrap_err();
        assert!(error.to_string().starts_with("scopes: unknown scope \"codeq:fly\""), "{error}");

        let mut bad_command = grant(PrincipalKind::Worker, "w");
        bad_command.event_types = names(&["no spaces"]);
        let error = StaticToken::from_plain("t", bad_command).unwrap_err();
        assert!(error.to_string().contains("eventTypes"), "{error}");

        let mut empty_types = grant(PrincipalKind::Worker, "w");
        empty_types.event_types = names(&[]);
        assert!(StaticToken::from_plain("t", empty_types).is_err());

        assert_eq!(
            StaticToken::from_plain("t", grant(PrincipalKind::Worker, "")),
            Err(StaticTokenError::EmptySub)
        );
        let mut group = grant(PrincipalKind::Producer, "p");
        group.worker_group = Some("g".into());
        assert_eq!(
            StaticToken::from_plain("t", group),
            Err(StaticTokenError::WorkerGroupOnProducer)
        );
    }

    #[test]
    fn two_entries_with_the_same_token_are_refused() {
        let error = StaticTokenVerifier::new(vec![
            StaticToken::from_plain("same", grant(PrincipalKind::Worker, "a")).unwrap(),
            StaticToken::from_sha256_hex(&sha256_hex("same"), grant(PrincipalKind::Producer, "b"))
                .unwrap(),
        ])
        .unwrap_err();
        assert_eq!(error, StaticTokenError::Duplicate { first: "a".into(), second: "b".into() });
    }

    #[test]
    fn lookup_finds_the_matching_entry_among_many() {
        let tokens = (0..5)
            .map(|i| {
                StaticToken::from_plain(
                    &format!("token-{i}"),
                    grant(PrincipalKind::Worker, &format!("w{i}")),
                )
                .unwrap()
            })
            .collect();
        let verifier = StaticTokenVerifier::new(tokens).unwrap();
        for i in 0..5 {
            assert_eq!(verifier.lookup(&format!("token-{i}")).unwrap().sub, format!("w{i}"));
        }
        assert!(verifier.lookup("token-5").is_none());
        assert!(StaticTokenVerifier::default().lookup("").is_none());
    }

    #[test]
    fn debug_output_shows_neither_token_nor_digest() {
        let token = StaticToken::from_plain("s3cret", grant(PrincipalKind::Worker, "w")).unwrap();
        let debug = format!("{token:?}");
        assert!(!debug.contains("s3cret") && !debug.contains("sha256"), "{debug}");
    }
}
