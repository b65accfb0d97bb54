//! The exit codes of docs/cli.md, and which errors map to which.

use std::fmt;
use std::process::ExitCode;

use codeq_client::error::UNPARSED_ERROR_CODE;

/// Success.
pub const OK: u8 = 0;
/// Any other failure.
pub const GENERAL: u8 = 1;
/// Bad configuration or arguments (no token, bad URL, …).
pub const CONFIGURATION: u8 = 2;
/// The server refused the token (401/403).
pub const AUTHENTICATION: u8 = 3;
/// The server answered with another API error.
pub const API: u8 = 4;
/// Stopped by SIGINT/SIGTERM.
pub const INTERRUPTED: u8 = 130;

/// A configuration problem found before talking to the server; exits 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(String);

impl ConfigError {
    /// A configuration error with a message that says what to fix.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Some items of a command about several tasks were refused by the
/// server (their outcomes were printed); exits 4, as an API error does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartlyRefused(String);

impl PartlyRefused {
    /// `message` says how many were refused and why.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for PartlyRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PartlyRefused {}

/// A failed call of `auth login` to the identity service: the service
/// and its answer, without the client error itself, so that codeQ's own
/// hints (`--base-url`, `codeq serve`) stay out. A refusal (any 4xx: a
/// wrong password, an unknown user or key) exits 3, the rest 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityServiceError {
    message: String,
    refused: bool,
}

impl IdentityServiceError {
    /// The error of a call to the identity service at `url`.
    pub fn new(url: &str, err: codeq_client::Error) -> Self {
        let refused = err.status().is_some_and(|status| (400..500).contains(&status));
        let message = match (refused, unreachable_server(&err)) {
            (true, _) => format!("the identity service at {url} refused the sign-in: {err}"),
            (false, Some(unreachable)) => {
                format!("cannot connect to the identity service at {url} ({})", unreachable.reason)
            }
            (false, None) => {
                format!("the identity service at {url} failed: {:#}", anyhow::Error::new(err))
            }
        };
        Self { message, refused }
    }

    /// What to check.
    pub fn hint(&self) -> &'static str {
        if self.refused {
            "check the e-mail and password (a wrong --iam-api-key, or an --iam-base-url that is \
             not the identity service's, is refused too)"
        } else {
            "is --iam-base-url (CODEQ_IAM_BASE_URL, or the profile's iamBaseUrl) the identity \
             service's URL, and is it up?"
        }
    }
}

impl fmt::Display for IdentityServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for IdentityServiceError {}

/// The exit code for an error: the first client or configuration error in
/// its chain decides.
pub fn code_for(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if cause.is::<ConfigError>() {
            return CONFIGURATION;
        }
        if let Some(iam) = cause.downcast_ref::<IdentityServiceError>() {
            return if iam.refused { AUTHENTICATION } else { GENERAL };
        }
        if cause.is::<PartlyRefused>() {
            return API;
        }
        if let Some(client) = cause.downcast_ref::<codeq_client::Error>() {
            return match client {
                codeq_client::Error::MissingToken(_)
                | codeq_client::Error::InvalidBaseUrl { .. } => CONFIGURATION,
                err if err.is_auth() => AUTHENTICATION,
                // Not the API's error shape: a proxy's page, another server.
                codeq_client::Error::Api { code, .. } if code == UNPARSED_ERROR_CODE => GENERAL,
                codeq_client::Error::Api { .. } => API,
                _ => GENERAL,
            };
        }
    }
    GENERAL
}

/// Prints the error with its causes (and, for a missing token or a server
/// that does not answer, what to do) to stderr and gives its exit code.
pub fn report(err: &anyhow::Error) -> ExitCode {
    let unreachable = err.chain().find_map(|cause| {
        cause.downcast_ref().and_then(unreachable_server).or_else(|| {
            cause.downcast_ref::<crate::bench::http::CallError>()?.unreachable().cloned()
        })
    });
    match unreachable {
        Some(unreachable) => {
            errln!("codeq: {unreachable}");
            errln!("hint: {}", unreachable.hint());
        }
        None => {
            errln!("codeq: {err:#}");
            let identity_service_hint = || {
                err.chain()
                    .find_map(|cause| cause.downcast_ref::<IdentityServiceError>())
                    .map(IdentityServiceError::hint)
            };
            if let Some(hint) =
                missing_token_hint(err).or_else(|| api_hint(err)).or_else(identity_service_hint)
            {
                errln!("hint: {hint}");
            }
        }
    }
    ExitCode::from(code_for(err))
}

/// A server the client could not connect to: its URL (scheme, host and
/// port) and the innermost cause (`Connection refused (os error 111)`),
/// instead of reqwest's chain of wrappers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreachable {
    /// `http://127.0.0.1:8080`.
    pub server: String,
    /// Why the connection failed.
    pub reason: String,
}

impl Unreachable {
    /// What to check.
    pub fn hint(&self) -> String {
        format!("is `codeq serve` running at {}? (else pass --base-url)", self.server)
    }
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot connect to {} ({})", self.server, self.reason)
    }
}

/// The server of a failed connection, if `err` is one.
pub fn unreachable_server(err: &codeq_client::Error) -> Option<Unreachable> {
    let codeq_client::Error::Transport(transport) = err else { return None };
    if !transport.is_connect() {
        return None;
    }
    let server = transport
        .url()
        .map_or_else(|| "the server".to_owned(), |url| url.origin().ascii_serialization());
    let mut cause: &dyn std::error::Error = transport;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    Some(Unreachable { server, reason: cause.to_string() })
}

/// What to do about a missing token.
fn missing_token_hint(err: &anyhow::Error) -> Option<&'static str> {
    let missing = err.chain().find_map(|cause| match cause.downcast_ref() {
        Some(codeq_client::Error::MissingToken(kind)) => Some(*kind),
        _ => None,
    })?;
    Some(match missing {
        codeq_client::TokenKind::Producer => {
            "pass --producer-token, set CODEQ_PRODUCER_TOKEN, store one with `codeq auth set \
             --producer T` or `codeq auth login`, or run beside a local-mode server's ./codeq-data \
             (its tokens serve only that server's address: a base URL from --base-url, \
             CODEQ_BASE_URL or the profile must name it)"
        }
        codeq_client::TokenKind::Worker => {
            "pass --worker-token, set CODEQ_WORKER_TOKEN, store one with `codeq auth set \
             --worker T`, or run beside a local-mode server's ./codeq-data (its tokens serve \
             only that server's address: a base URL from --base-url, CODEQ_BASE_URL or the \
             profile must name it)"
        }
    })
}

/// What an API answer that does not fit the call suggests: the base URL
/// points at the wrong place.
fn api_hint(err: &anyhow::Error) -> Option<&'static str> {
    let code = err.chain().find_map(|cause| match cause.downcast_ref() {
        Some(codeq_client::Error::Api { code, .. }) => Some(code.as_str()),
        _ => None,
    })?;
    match code {
        "route_not_found" => Some(
            "--base-url is the server's root, such as http://127.0.0.1:8080 (the CLI adds \
             /v1/codeq/…); or the server is older than this CLI",
        ),
        UNPARSED_ERROR_CODE => Some(
            "that answer is not codeQ's: is --base-url a codeQ server (or a proxy in front of one)?",
        ),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use anyhow::Context as _;

    use super::*;

    fn wrapped<E: std::error::Error + Send + Sync + 'static>(err: E) -> anyhow::Error {
        Err::<(), _>(err).context("the bench stopped").unwrap_err()
    }

    #[test]
    fn errors_map_to_the_spec_exit_codes() {
        let api = |status| {
            let body = br#"{"error":"refused","code":"task_terminal"}"#;
            codeq_client::Error::from_response_body(status, body)
        };
        let not_ours = codeq_client::Error::from_response_body(404, b"<html>Not Found</html>");

        assert_eq!(code_for(&wrapped(ConfigError::new("no token"))), CONFIGURATION);
        assert_eq!(code_for(&wrapped(api(401))), AUTHENTICATION);
        assert_eq!(code_for(&wrapped(api(403))), AUTHENTICATION);
        assert_eq!(code_for(&wrapped(api(409))), API);
        assert_eq!(code_for(&wrapped(not_ours)), GENERAL);
        assert_eq!(code_for(&wrapped(PartlyRefused::new("1 of 2 tasks"))), API);
        assert_eq!(
            code_for(&wrapped(codeq_client::Error::MissingToken(codeq_client::TokenKind::Worker))),
            CONFIGURATION
        );
        assert_eq!(code_for(&anyhow::anyhow!("something else")), GENERAL);
    }

    #[test]
    fn a_missing_token_comes_with_a_hint_naming_the_flag() {
        let missing = wrapped(codeq_client::Error::MissingToken(codeq_client::TokenKind::Worker));

        assert!(missing_token_hint(&missing).unwrap().contains("--worker-token"));
        assert_eq!(missing_token_hint(&anyhow::anyhow!("other")), None);
    }

    #[test]
    fn an_answer_from_the_wrong_place_hints_at_the_base_url() {
        let no_route = br#"{"error":"no such route","code":"route_not_found"}"#;
        let no_route = wrapped(codeq_client::Error::from_response_body(404, no_route));
        let not_ours = wrapped(codeq_client::Error::from_response_body(502, b"<html>"));
        let refused = br#"{"error":"no such task","code":"task_not_found"}"#;
        let refused = wrapped(codeq_client::Error::from_response_body(404, refused));

        assert!(api_hint(&no_route).unwrap().contains("--base-url is the server's root"));
        assert!(api_hint(&not_ours).unwrap().contains("not codeQ's"));
        assert_eq!(api_hint(&refused), None);
    }
}
