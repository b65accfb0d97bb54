//! The one middleware every request passes: its id, the checks of its
//! head, and what it leaves behind (one log line and the HTTP metrics).
//!
//! The request id is the client's `X-Request-Id`, or a UUID the server
//! makes; the answer carries it back. Each request runs inside a `request`
//! span carrying that id, the method and the route template, so anything
//! logged while it is served (a 5xx cause, once, where it is turned into
//! an answer) carries them too. When it is answered, one `info` line adds
//! the status, the latency and, for an error, its `code`.
//!
//! One middleware instead of a layer per concern: each layer boxed and
//! moved the request's future once more (a tenth of the server's
//! instructions per request went to moving futures).
//!
//! A request head that never arrived in time is answered 408 by the
//! connection, before any request exists; its line is made here too
//! ([`unparsed_head`]), so that every request line has one target.
//!
//! What is logged is chosen field by field: never a header value but the
//! request id, never a body, never the raw path (a route template only).

use std::cell::RefCell;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use codeq_core::TaskId;
use tracing::{Instrument, Span};

use super::REQUEST_ID;
use super::error::ErrorCode;
use super::request_head;
use crate::app::AppState;
use crate::metrics::{Metrics, UNMATCHED_ROUTE};

/// The longest request id logged (a client may send anything).
const MAX_REQUEST_ID_LEN: usize = 128;

/// What a request's handler notes for its log line: who called, and the
/// task it was about. Kept in a task-local cell for the request (cheaper
/// than recording into the span: a few instructions, no formatting until
/// the line is written).
#[derive(Debug, Default)]
struct Notes {
    sub: Option<String>,
    task_id: Option<TaskId>,
}

tokio::task_local! {
    static NOTES: RefCell<Notes>;
}

/// The middleware: gives the request its id, checks its head, serves it
/// inside its span, then logs and counts it.
pub async fn request(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = route_label(request.extensions().get::<MatchedPath>());
    let id = request_id(&request);
    let span = tracing::info_span!("request", request_id = loggable(&id), method, route);
    let (mut response, notes) = match request_head::check_head(&request) {
        Ok(()) => {
            let served = async {
                let mut unanswered =
                    Unanswered { started, method, route, span: &span, app: &app, answered: false };
                let response = next.run(request).instrument(span.clone()).await;
                unanswered.answered = true;
                (response, NOTES.with(RefCell::take))
            };
            NOTES.scope(RefCell::default(), served).await
        }
        Err(error) => (error.into_response(), Notes::default()),
    };
    response.headers_mut().insert(REQUEST_ID, id);
    let seconds = started.elapsed().as_secs_f64();
    let status = response.status().as_u16();
    let code = response.extensions().get::<ErrorCode>().map(|code| code.0);
    app.metrics.http_request(method, route, status, seconds, code == Some("overloaded"));
    write_line(&span, status, seconds, code, &notes);
    response
}

/// The request's line, inside its `span`: its status, its latency in
/// milliseconds (to the microsecond), its error code, who called and the
/// task it was about.
fn write_line(span: &Span, status: u16, seconds: f64, code: Option<&str>, notes: &Notes) {
    let latency_ms = (seconds * 1e6).round() / 1e3;
    let sub = notes.sub.as_deref();
    let task_id = notes.task_id.map(tracing::field::display);
    span.in_scope(|| match code {
        Some(code) => tracing::info!(status, latency_ms, code, sub, task_id, "request"),
        None => tracing::info!(status, latency_ms, sub, task_id, "request"),
    });
}

/// A request being served, until it is answered. Dropped before that, it
/// leaves the request's line and counts it, with why (nothing was sent):
/// status 499 `client_gone` when its client went away (hyper drops what
/// it was serving), 503 `server_closed` when the server was stopping or
/// its storage had failed (it closes what is left), 500 `panic` when the
/// handler panicked.
struct Unanswered<'a> {
    started: Instant,
    method: &'static str,
    route: &'static str,
    span: &'a Span,
    app: &'a AppState,
    answered: bool,
}

impl Unanswered<'_> {
    fn why(&self) -> (u16, &'static str) {
        let scheduler = &self.app.scheduler;
        if std::thread::panicking() {
            (500, "panic")
        } else if scheduler.is_stopping() || scheduler.store().health().is_err() {
            (503, "server_closed")
        } else {
            (CLIENT_GONE, "client_gone")
        }
    }
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let (status, code) = self.why();
        let seconds = self.started.elapsed().as_secs_f64();
        self.app.metrics.http_request(self.method, self.route, status, seconds, false);
        // Dropped inside the request's task-local scope: its notes are there.
        let notes = NOTES.try_with(RefCell::take).unwrap_or_default();
        write_line(self.span, status, seconds, Some(code), &notes);
    }
}

/// The status logged for a request whose client left before its answer
/// (nginx's "client closed request"; never sent).
const CLIENT_GONE: u16 = 499;

/// Puts the caller's `sub` on the request's log line (who did it).
pub fn note_caller(sub: &str) {
    let _ = NOTES.try_with(|notes| notes.borrow_mut().sub = Some(sub.to_owned()));
}

/// Puts the task a request is about on its log line: the one its path
/// names, the one a create made, the one a claim took.
pub fn note_task(id: TaskId) {
    let _ = NOTES.try_with(|notes| notes.borrow_mut().task_id = Some(id));
}

/// The log line and metrics of a request head the connection answered
/// itself, with no request parsed (a 408 for one that did not arrive in
/// time, the parser's 400 or 431 for one it refused): the id its answer
/// carries (a new one), the unmatched route, no method (`OTHER` in the
/// metrics), and how long the head took as its latency.
pub fn unparsed_head(request_id: &str, status: u16, code: &str, took: Duration, metrics: &Metrics) {
    let seconds = took.as_secs_f64();
    metrics.http_request("OTHER", UNMATCHED_ROUTE, status, seconds, false);
    let span = tracing::info_span!("request", request_id, route = UNMATCHED_ROUTE);
    write_line(&span, status, seconds, Some(code), &Notes::default());
}

/// The client's `X-Request-Id`, or a new UUID (also for an empty one).
fn request_id(request: &Request) -> HeaderValue {
    match request.headers().get(REQUEST_ID).filter(|id| !id.is_empty()) {
        Some(id) => id.clone(),
        None => {
            let mut text = [0; uuid::fmt::Hyphenated::LENGTH];
            let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
            HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("-"))
        }
    }
}

/// The id as logged: printable text of a sensible length, else nothing.
fn loggable(id: &HeaderValue) -> &str {
    id.to_str().ok().filter(|id| id.len() <= MAX_REQUEST_ID_LEN).unwrap_or_default()
}

/// The route template as a `&'static str` from the route table (no
/// allocation), or [`UNMATCHED_ROUTE`].
fn route_label(matched: Option<&MatchedPath>) -> &'static str {
    let Some(matched) = matched else { return UNMATCHED_ROUTE };
    super::ROUTE_PATHS
        .iter()
        .find(|path| **path == matched.as_str())
        .copied()
        .unwrap_or(UNMATCHED_ROUTE)
}

/// The method as a label: the standard ones by name, anything else
/// `OTHER` (a client must not be able to make new series).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_of_the_table_is_its_own_label() {
        for (_, path) in super::super::route_table() {
            assert!(super::super::ROUTE_PATHS.contains(&path), "{path} has no label");
        }
        assert_eq!(route_label(None), UNMATCHED_ROUTE);
    }

    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "OTHER");
        assert_eq!(method_label(&Method::DELETE), "DELETE");
    }
}
