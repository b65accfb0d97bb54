//! The client's one error type, and how an error response body becomes one.

use serde::Deserialize;

/// The `code` given to an error response whose body is not the API's
/// `{"error", "code"}` shape (a proxy's HTML page, an empty body, …).
pub const UNPARSED_ERROR_CODE: &str = "http_error";

/// How much of an unparsable error body is kept as the message.
const MAX_RAW_MESSAGE_CHARS: usize = 200;

/// Which token a call needs; named by [`Error::MissingToken`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// The producer token (creating tasks, reading them, admin calls).
    Producer,
    /// The worker token (claiming and finishing tasks).
    Worker,
}

impl std::fmt::Display for TokenKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Producer => "producer",
            Self::Worker => "worker",
        })
    }
}

/// Everything a client call can fail with.
///
/// The underlying error of [`Error::Transport`] and [`Error::Decode`] is
/// their `source()`, not part of their message: print the whole chain
/// (e.g. anyhow's `{:#}`) to see it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error status. `code` is the API's stable
    /// snake_case code (or [`UNPARSED_ERROR_CODE`] when the body was not the
    /// API's error shape) and `message` its human-readable text.
    #[error("HTTP {status} {code}: {message}")]
    Api {
        /// The HTTP status (4xx or 5xx).
        status: u16,
        /// The stable error code, e.g. `stale_attempt`.
        code: String,
        /// The human-readable message, e.g. naming the invalid field.
        message: String,
    },
    /// The request did not complete: connection refused or reset, timeout,
    /// TLS failure, the response body could not be read, or the request
    /// could not be built at all (a token holding a newline: not repeated).
    #[error("request failed")]
    Transport(#[from] reqwest::Error),
    /// A successful response whose body is not what the API promises.
    #[error("unexpected response body (HTTP {status})")]
    Decode {
        /// The HTTP status of the response.
        status: u16,
        /// What did not parse.
        #[source]
        source: serde_json::Error,
    },
    /// The call needs a token the client was not given.
    #[error("no {0} token configured")]
    MissingToken(TokenKind),
    /// The base URL given to the client is not an absolute http(s) URL.
    #[error("invalid base URL {url:?}: {reason}")]
    InvalidBaseUrl {
        /// The URL as given.
        url: String,
        /// Why it was refused.
        reason: String,
    },
}

impl Error {
    /// The HTTP status of an [`Error::Api`] or [`Error::Decode`], or of a
    /// [`Error::Transport`] that came with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } | Self::Decode { status, .. } => Some(*status),
            Self::Transport(err) => err.status().map(|s| s.as_u16()),
            Self::MissingToken(_) | Self::InvalidBaseUrl { .. } => None,
        }
    }

    /// The API's error code of an [`Error::Api`].
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// True for a 401 or 403 answer: the token is invalid, or not allowed
    /// this call (a 403 may be about this one task or command, such as
    /// `not_owner` or `command_not_allowed`). A token that was never set
    /// is [`Error::MissingToken`], not this.
    pub fn is_auth(&self) -> bool {
        matches!(self.status(), Some(401 | 403))
    }

    /// Builds the [`Error::Api`] for an error response from its status and
    /// body. The API's `{"error", "code"}` body is parsed; anything else
    /// keeps a short prefix of the body (or the status' reason phrase) as
    /// the message, with the code [`UNPARSED_ERROR_CODE`].
    pub fn from_response_body(status: u16, body: &[u8]) -> Self {
        #[derive(Deserialize)]
        struct ErrorBody {
            error: String,
            code: String,
        }

        if let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) {
            return Self::Api { status, code: parsed.code, message: parsed.error };
        }
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        let message = if text.is_empty() {
            reqwest::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("unknown status")
                .to_owned()
        } else {
            text.chars().take(MAX_RAW_MESSAGE_CHARS).collect()
        };
        Self::Api { status, code: UNPARSED_ERROR_CODE.to_owned(), message }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn api_error_body_is_parsed_into_code_and_message() {
        let body = br#"{"error":"task is not in progress","code":"not_in_progress"}"#;

        let err = Error::from_response_body(409, body);

        match err {
            Error::Api { status, code, message } => {
                assert_eq!(status, 409);
                assert_eq!(code, "not_in_progress");
                assert_eq!(message, "task is not in progress");
            }
            other => panic!("expected Api, got {other:?}"),
        }
    }

    #[test]
    fn non_json_error_body_keeps_a_short_prefix_as_message() {
        let body = format!("<html>{}</html>", "x".repeat(1000));

        let err = Error::from_response_body(502, body.as_bytes());

        assert_eq!(err.code(), Some(UNPARSED_ERROR_CODE));
        assert_eq!(err.status(), Some(502));
        match err {
            Error::Api { message, .. } => {
                assert!(message.starts_with("<html>xxx"));
                assert_eq!(message.chars().count(), MAX_RAW_MESSAGE_CHARS);
            }
            other => panic!("expected Api, got {other:?}"),
        }
    }

    #[test]
    fn empty_error_body_uses_the_reason_phrase() {
        let err = Error::from_response_body(503, b"");

        match err {
            Error::Api { message, code, .. } => {
                assert_eq!(message, "Service Unavailable");
                assert_eq!(code, UNPARSED_ERROR_CODE);
            }
            other => panic!("expected Api, got {other:?}"),
        }
    }

    #[test]
    fn auth_statuses_are_recognised() {
        assert!(Error::from_response_body(401, b"").is_auth());
        assert!(Error::from_response_body(403, b"").is_auth());
        assert!(!Error::from_response_body(404, b"").is_auth());
        assert!(!Error::MissingToken(TokenKind::Worker).is_auth());
    }
}
