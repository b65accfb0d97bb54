//! Who is calling and what they may do: [`Principal`], its [`Scopes`] and
//! [`EventTypes`], and the checks the HTTP layer runs on it, in the order
//! of docs/api.md (authentication 401, then scope / admin 403, …, then
//! `eventTypes` 403).

use std::fmt;

use axum::http::StatusCode;
use codeq_core::{Command, Task};

/// Stable `code` values of [`AuthError`], as sent in the error body.
pub mod codes {
    /// No `Authorization` header, or `Bearer` with nothing after it (401).
    pub const MISSING_TOKEN: &str = "missing_token";
    /// An `Authorization` header that is not `Bearer <token>` (401).
    pub const MALFORMED_TOKEN: &str = "malformed_token";
    /// A bearer token that no configured source accepts (401).
    pub const INVALID_TOKEN: &str = "invalid_token";
    /// A JWT whose `exp` (plus the allowed clock skew) has passed (401).
    pub const EXPIRED_TOKEN: &str = "expired_token";
    /// A JWT whose `nbf` is still ahead, beyond the allowed clock skew (401).
    pub const TOKEN_NOT_YET_VALID: &str = "token_not_yet_valid";
    /// A JWT signed with an algorithm this server refuses: `none`, HMAC,
    /// anything but RS256/384/512, ES256/384 and EdDSA (401).
    pub const UNSUPPORTED_ALGORITHM: &str = "unsupported_algorithm";
    /// A JWT whose `kid`/`alg` matches no key of its issuer's JWKS (401).
    pub const UNTRUSTED_KEY: &str = "untrusted_key";
    /// A JWT whose signature does not verify (401).
    pub const INVALID_SIGNATURE: &str = "invalid_signature";
    /// A JWT with a missing or wrong claim: `exp`, `aud`, `sub`, a future
    /// `iat`, a worker token without `eventTypes` or `scope` (401).
    pub const INVALID_CLAIMS: &str = "invalid_claims";
    /// A JWT whose key is not cached and whose JWKS cannot be fetched (401).
    pub const JWKS_UNAVAILABLE: &str = "jwks_unavailable";
    /// The token lacks the endpoint's scope (403).
    pub const MISSING_SCOPE: &str = "missing_scope";
    /// A requested command is outside the token's `eventTypes` (403).
    pub const COMMAND_NOT_ALLOWED: &str = "command_not_allowed";
    /// An admin endpoint called without admin rights (403).
    pub const NOT_ADMIN: &str = "not_admin";
    /// A worker endpoint called with a producer token while
    /// `allowProducerAsWorker` is off (403).
    pub const NOT_WORKER: &str = "not_worker";
    /// A producer endpoint called with a worker token (403).
    pub const NOT_PRODUCER: &str = "not_producer";
}

/// Why a request was refused by authentication or authorization.
///
/// Two families: [`Unauthenticated`](Self::Unauthenticated) answers 401
/// (with `WWW-Authenticate: Bearer`), [`Forbidden`](Self::Forbidden) 403.
/// The message is meant for the caller and never contains a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The caller could not be identified: 401.
    #[error("{message}")]
    Unauthenticated {
        /// Human-readable reason.
        message: String,
        /// Stable snake_case code, one of [`codes`].
        code: &'static str,
    },
    /// The caller is known but may not do this: 403.
    #[error("{message}")]
    Forbidden {
        /// Human-readable reason.
        message: String,
        /// Stable snake_case code, one of [`codes`].
        code: &'static str,
    },
}

impl AuthError {
    /// A 401 error.
    pub fn unauthenticated(code: &'static str, message: impl Into<String>) -> Self {
        Self::Unauthenticated { message: message.into(), code }
    }

    /// A 403 error.
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::Forbidden { message: message.into(), code }
    }

    /// The stable code sent in the error body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthenticated { code, .. } | Self::Forbidden { code, .. } => code,
        }
    }

    /// The human-readable message sent in the error body.
    pub fn message(&self) -> &str {
        match self {
            Self::Unauthenticated { message, .. } | Self::Forbidden { message, .. } => message,
        }
    }

    /// 401 or 403.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
        }
    }
}

/// Whether a token belongs to a producer or a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrincipalKind {
    /// Creates tasks; may be an admin.
    Producer,
    /// Claims and completes tasks.
    Worker,
}

impl PrincipalKind {
    /// `"producer"` or `"worker"`, as in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Producer => "producer",
            Self::Worker => "worker",
        }
    }
}

impl fmt::Display for PrincipalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One permission carried by a token (`codeq:<name>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `codeq:claim`: claim and batch claim.
    Claim,
    /// `codeq:heartbeat`: extend a lease.
    Heartbeat,
    /// `codeq:abandon`: give a task back.
    Abandon,
    /// `codeq:nack`: ask for a retry.
    Nack,
    /// `codeq:result`: submit results.
    Result,
    /// `codeq:subscribe`: manage push subscriptions.
    Subscribe,
    /// `codeq:admin`: the admin endpoints (producers only).
    Admin,
}

impl Scope {
    /// Every scope, in bit order.
    pub const ALL: [Scope; 7] = [
        Scope::Claim,
        Scope::Heartbeat,
        Scope::Abandon,
        Scope::Nack,
        Scope::Result,
        Scope::Subscribe,
        Scope::Admin,
    ];

    /// The scopes of the worker endpoints (all but [`Scope::Admin`]).
    pub const WORKER: [Scope; 6] = [
        Scope::Claim,
        Scope::Heartbeat,
        Scope::Abandon,
        Scope::Nack,
        Scope::Result,
        Scope::Subscribe,
    ];

    /// Looks up a scope by its `codeq:` name; `None` for any other text.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|scope| scope.as_str() == name)
    }

    /// The scope's name, e.g. `codeq:claim`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Claim => "codeq:claim",
            Self::Heartbeat => "codeq:heartbeat",
            Self::Abandon => "codeq:abandon",
            Self::Nack => "codeq:nack",
            Self::Result => "codeq:result",
            Self::Subscribe => "codeq:subscribe",
            Self::Admin => "codeq:admin",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A scope name that is not one of [`Scope::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown scope {0:?} (known: codeq:claim, codeq:heartbeat, codeq:abandon, codeq:nack, codeq:result, codeq:subscribe, codeq:admin)"
)]
pub struct UnknownScope(pub String);

/// A set of [`Scope`]s (a bitset: copying and checking are free).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Scopes(u8);

impl Scopes {
    /// No scope at all.
    pub const fn empty() -> Self {
        Self(0)
    }

    /// Every worker scope: what a worker token without `scopes` gets, and
    /// what a producer gets when acting as a worker.
    pub fn all_worker() -> Self {
        Scope::WORKER.into_iter().collect()
    }

    /// Parses scope names strictly: any unknown name is an error. (A JWT
    /// `scope` claim may carry foreign scopes; filter those with
    /// [`Scope::parse`] instead.)
    pub fn from_names<I, S>(names: I) -> Result<Self, UnknownScope>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        names.into_iter().try_fold(Self::empty(), |scopes, name| {
            let name = name.as_ref();
            Scope::parse(name)
                .map(|scope| scopes.with(scope))
                .ok_or_else(|| UnknownScope(name.to_owned()))
        })
    }

    /// This set plus `scope`.
    #[must_use]
    pub fn with(self, scope: Scope) -> Self {
        Self(self.0 | scope.bit())
    }

    /// Adds `scope`.
    pub fn insert(&mut self, scope: Scope) {
        self.0 |= scope.bit();
    }

    /// Whether `scope` is in the set.
    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// Whether the set holds no scope.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The scopes in the set, in [`Scope::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |scope| self.contains(*scope))
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<T: IntoIterator<Item = Scope>>(iter: T) -> Self {
        iter.into_iter().fold(Self::empty(), Self::with)
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter().map(Scope::as_str)).finish()
    }
}

/// Why an `eventTypes` list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventTypesError {
    /// The list is empty: it would allow nothing (use `["*"]` for every
    /// command).
    #[error("eventTypes must not be empty (use [\"*\"] to allow every command)")]
    Empty,
    /// An entry is neither `"*"` nor a valid command name.
    #[error("eventTypes entry {name:?} {reason}")]
    InvalidCommand {
        /// The entry as given.
        name: String,
        /// Why it is not a command name.
        reason: codeq_core::command::CommandError,
    },
}

/// The commands a token may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventTypes {
    /// Every command (`"*"`).
    All,
    /// Only these commands (never empty when built by
    /// [`from_names`](Self::from_names)).
    Only(Vec<Command>),
}

impl EventTypes {
    /// Parses a token's `eventTypes`: `"*"` anywhere means every command;
    /// otherwise each entry must be a valid command name. An empty list is
    /// refused.
    pub fn from_names<I, S>(names: I) -> Result<Self, EventTypesError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut commands: Vec<Command> = Vec::new();
        let mut all = false;
        for name in names {
            let name = name.as_ref();
            if name == "*" {
                all = true;
                continue;
            }
            let command = Command::parse(name).map_err(|reason| {
                EventTypesError::InvalidCommand { name: name.to_owned(), reason }
            })?;
            if !commands.contains(&command) {
                commands.push(command);
            }
        }
        match (all, commands.is_empty()) {
            (true, _) => Ok(Self::All),
            (false, true) => Err(EventTypesError::Empty),
            (false, false) => Ok(Self::Only(commands)),
        }
    }

    /// Whether `command` may be used.
    pub fn allows(&self, command: &Command) -> bool {
        match self {
            Self::All => true,
            Self::Only(commands) => commands.contains(command),
        }
    }

    /// Whether every one of `commands` may be used.
    pub fn allows_all(&self, commands: &[Command]) -> bool {
        commands.iter().all(|command| self.allows(command))
    }

    /// The first of `commands` that may not be used, if any.
    pub fn first_disallowed<'a>(&self, commands: &'a [Command]) -> Option<&'a Command> {
        commands.iter().find(|command| !self.allows(command))
    }
}

/// The identity a bearer token resolved to (docs/security.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Producer or worker.
    pub kind: PrincipalKind,
    /// The subject: a worker's `sub` becomes a claimed task's `workerId`.
    pub sub: String,
    /// The commands this principal may use.
    pub event_types: EventTypes,
    /// Worker scopes; for an admin producer, [`Scope::Admin`].
    pub scopes: Scopes,
    /// The worker group for push subscriptions, if any.
    pub worker_group: Option<String>,
    /// Admin rights (producers only; see [`require_admin`](Self::require_admin)).
    pub admin: bool,
}

impl Principal {
    /// Whether this is the producer that created `task`.
    pub fn produced(&self, task: &Task) -> bool {
        self.kind == PrincipalKind::Producer && self.sub == task.created_by
    }

    /// For producer endpoints: refuses a worker token (403 `not_producer`).
    pub fn require_producer(&self) -> Result<(), AuthError> {
        match self.kind {
            PrincipalKind::Producer => Ok(()),
            PrincipalKind::Worker => Err(AuthError::forbidden(
                codes::NOT_PRODUCER,
                "this endpoint needs a producer token, not a worker token",
            )),
        }
    }

    /// For admin endpoints: only a producer with admin rights passes
    /// (403 `not_admin`).
    pub fn require_admin(&self) -> Result<(), AuthError> {
        if self.kind == PrincipalKind::Producer && self.admin {
            Ok(())
        } else {
            Err(AuthError::forbidden(
                codes::NOT_ADMIN,
                "this endpoint needs an admin producer token",
            ))
        }
    }

    /// Makes a producer admin, as `X-Role: ADMIN` does in `env: dev` for
    /// a token without a role (the caller checks those conditions).
    pub fn grant_admin_role(&mut self) {
        self.admin = true;
        self.scopes.insert(Scope::Admin);
    }

    /// For worker endpoints, before any scope check: a worker passes as it
    /// is; a producer becomes the worker `sub` with every command and every
    /// worker scope when `allow_producer_as_worker` (config
    /// `allowProducerAsWorker`), else 403 `not_worker`.
    pub fn as_worker(&self, allow_producer_as_worker: bool) -> Result<Principal, AuthError> {
        match self.kind {
            PrincipalKind::Worker => Ok(self.clone()),
            PrincipalKind::Producer if allow_producer_as_worker => Ok(Principal {
                kind: PrincipalKind::Worker,
                sub: self.sub.clone(),
                event_types: EventTypes::All,
                scopes: Scopes::all_worker(),
                worker_group: None,
                admin: false,
            }),
            PrincipalKind::Producer => Err(AuthError::forbidden(
                codes::NOT_WORKER,
                "this endpoint needs a worker token (producer tokens are not accepted as workers)",
            )),
        }
    }

    /// Refuses a principal without `scope` (403 `missing_scope`).
    pub fn require_scope(&self, scope: Scope) -> Result<(), AuthError> {
        if self.scopes.contains(scope) {
            Ok(())
        } else {
            Err(AuthError::forbidden(codes::MISSING_SCOPE, format!("token lacks scope {scope}")))
        }
    }

    /// Refuses when any of `commands` is outside the principal's
    /// `eventTypes` (403 `command_not_allowed`, naming the first one).
    pub fn require_commands(&self, commands: &[Command]) -> Result<(), AuthError> {
        match self.event_types.first_disallowed(commands) {
            None => Ok(()),
            Some(command) => Err(AuthError::forbidden(
                codes::COMMAND_NOT_ALLOWED,
                format!("command {command} is not in the token's eventTypes"),
            )),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn command(name: &str) -> Command {
        Command::parse(name).unwrap()
    }

    fn producer(admin: bool) -> Principal {
        Principal {
            kind: PrincipalKind::Producer,
            sub: "svc-a".into(),
            event_types: EventTypes::All,
            scopes: if admin { Scopes::empty().with(Scope::Admin) } else { Scopes::empty() },
            worker_group: None,
            admin,
        }
    }

    fn worker(scopes: Scopes, event_types: EventTypes) -> Principal {
        Principal {
            kind: PrincipalKind::Worker,
            sub: "worker-1".into(),
            event_types,
            scopes,
            worker_group: Some("pool".into()),
            admin: false,
        }
    }

    fn forbidden_code(result: Result<(), AuthError>) -> &'static str {
        let error = result.unwrap_err();
        assert_eq!(error.status(), StatusCode::FORBIDDEN);
        error.code()
    }

    #[test]
    fn scope_names_round_trip_and_unknown_names_are_refused() {
        for scope in Scope::ALL {
            assert_eq!(Scope::parse(scope.as_str()), Some(scope));
        }
        assert_eq!(Scope::parse("claim"), None);
        assert_eq!(Scope::parse("codeq:CLAIM"), None);
        assert_eq!(
            Scopes::from_names(["codeq:claim", "openid"]),
            Err(UnknownScope("openid".into()))
        );
    }

    #[test]
    fn scopes_set_holds_exactly_what_was_put_in() {
        let scopes = Scopes::from_names(["codeq:claim", "codeq:result", "codeq:claim"]).unwrap();
        assert!(scopes.contains(Scope::Claim));
        assert!(scopes.contains(Scope::Result));
        assert!(!scopes.contains(Scope::Nack));
        assert_eq!(scopes.iter().collect::<Vec<_>>(), [Scope::Claim, Scope::Result]);
        assert_eq!(format!("{scopes:?}"), r#"{"codeq:claim", "codeq:result"}"#);
        assert!(Scopes::empty().is_empty());
    }

    #[test]
    fn all_worker_scopes_exclude_admin() {
        let scopes = Scopes::all_worker();
        for scope in Scope::WORKER {
            assert!(scopes.contains(scope), "{scope}");
        }
        assert!(!scopes.contains(Scope::Admin));
    }

    #[test]
    fn event_types_star_anywhere_means_all() {
        assert_eq!(EventTypes::from_names(["*"]), Ok(EventTypes::All));
        assert_eq!(EventTypes::from_names(["A", "*"]), Ok(EventTypes::All));
        assert!(EventTypes::All.allows(&command("ANYTHING")));
        assert!(EventTypes::All.allows_all(&[command("A"), command("B")]));
    }

    #[test]
    fn event_types_list_allows_only_its_commands() {
        let types =
            EventTypes::from_names(["GENERATE_MASTER", "render.v2", "GENERATE_MASTER"]).unwrap();
        assert_eq!(types, EventTypes::Only(vec![command("GENERATE_MASTER"), command("render.v2")]));
        assert!(types.allows(&command("GENERATE_MASTER")));
        assert!(!types.allows(&command("OTHER")));
        assert!(types.allows_all(&[command("render.v2"), command("GENERATE_MASTER")]));
        assert!(!types.allows_all(&[command("render.v2"), command("OTHER")]));
        assert!(types.allows_all(&[]));
    }

    #[test]
    fn event_types_refuse_empty_lists_and_bad_names() {
        assert_eq!(EventTypes::from_names(Vec::<String>::new()), Err(EventTypesError::Empty));
        assert!(matches!(
            EventTypes::from_names(["ok", "has space"]),
            Err(EventTypesError::InvalidCommand { name, .. }) if name == "has space"
        ));
    }

    #[test]
    fn require_producer_accepts_producers_and_refuses_workers() {
        assert_eq!(producer(false).require_producer(), Ok(()));
        let worker = worker(Scopes::all_worker(), EventTypes::All);
        assert_eq!(forbidden_code(worker.require_producer()), codes::NOT_PRODUCER);
    }

    #[test]
    fn require_admin_needs_an_admin_producer() {
        assert_eq!(producer(true).require_admin(), Ok(()));
        assert_eq!(forbidden_code(producer(false).require_admin()), codes::NOT_ADMIN);
        let mut worker = worker(Scopes::all_worker().with(Scope::Admin), EventTypes::All);
        worker.admin = true;
        assert_eq!(forbidden_code(worker.require_admin()), codes::NOT_ADMIN);
    }

    #[test]
    fn as_worker_passes_workers_through_unchanged() {
        let worker =
            worker(Scopes::empty().with(Scope::Claim), EventTypes::from_names(["A"]).unwrap());
        assert_eq!(worker.as_worker(false), Ok(worker.clone()));
        assert_eq!(worker.as_worker(true), Ok(worker));
    }

    #[test]
    fn as_worker_turns_a_producer_into_a_full_worker_only_when_allowed() {
        let producer = producer(true);
        let error = producer.as_worker(false).unwrap_err();
        assert_eq!((error.status(), error.code()), (StatusCode::FORBIDDEN, codes::NOT_WORKER));

        let as_worker = producer.as_worker(true).unwrap();
        assert_eq!(as_worker.kind, PrincipalKind::Worker);
        assert_eq!(as_worker.sub, "svc-a");
        assert_eq!(as_worker.event_types, EventTypes::All);
        assert_eq!(as_worker.scopes, Scopes::all_worker());
        assert!(!as_worker.admin);
    }

    #[test]
    fn require_scope_checks_the_scope_set() {
        let worker = worker(Scopes::empty().with(Scope::Claim), EventTypes::All);
        assert_eq!(worker.require_scope(Scope::Claim), Ok(()));
        let error = worker.require_scope(Scope::Nack).unwrap_err();
        assert_eq!(error.code(), codes::MISSING_SCOPE);
        assert_eq!(error.message(), "token lacks scope codeq:nack");
    }

    #[test]
    fn require_commands_names_the_first_command_outside_event_types() {
        let worker = worker(Scopes::all_worker(), EventTypes::from_names(["A", "B"]).unwrap());
        assert_eq!(worker.require_commands(&[command("B"), command("A")]), Ok(()));
        let error = worker.require_commands(&[command("A"), command("C")]).unwrap_err();
        assert_eq!(error.code(), codes::COMMAND_NOT_ALLOWED);
        assert_eq!(error.status(), StatusCode::FORBIDDEN);
        assert!(error.message().contains(" C "), "{}", error.message());
    }

    #[test]
    fn error_families_map_to_401_and_403() {
        let unauthenticated = AuthError::unauthenticated(codes::INVALID_TOKEN, "no");
        assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(unauthenticated.to_string(), "no");
        assert_eq!(AuthError::forbidden(codes::NOT_ADMIN, "no").status(), StatusCode::FORBIDDEN);
    }
}
