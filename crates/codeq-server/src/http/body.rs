//! Request bodies: how large each route accepts them, how many bytes of
//! them may be in flight across all requests, how long one may take to
//! arrive, and the [`Body`] extractor that enforces all three before a
//! handler parses anything.
//!
//! A body is refused before any byte of it is kept when its declared
//! `Content-Length` is over the route's limit (413 `body_too_large`; a
//! client that sent `Expect: 100-continue` gets the 413 instead of `100
//! Continue`). A refused body of at most [`DRAIN_MAX_BYTES`] is read and
//! dropped first, for a few seconds at most and a few bodies at a time:
//! most clients send the whole body before they read the answer, and
//! closing the connection under them loses the 413 to a broken pipe.
//!
//! A body reserves the shared budget as it arrives (its first
//! [`ENVELOPE_BYTES`] at once, then in doubling steps up to its declared
//! length), never for bytes it has only promised: a `Content-Length` of a
//! gigabyte sent a byte at a time would otherwise hold the budget, and
//! stop every other body, for as long as it is allowed to take. When the
//! budget cannot grow, the request gets 503 `overloaded` with
//! `Retry-After`. And a body must keep a pace (`Pace`): after a first
//! `bodyReadTimeoutSeconds` of grace, every further one must bring
//! `bodyMinBytesPerSecond` times as many bytes, so neither a trickle nor
//! a burst followed by a trickle holds its reservation for long. The bytes
//! land in one buffer that grows with the reservation, and handlers parse
//! JSON borrowing from that buffer, so a request holds about one copy of
//! its body.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::body::{Bytes, HttpBody};
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::error::ApiError;
use super::tasks::MAX_BATCH;
use crate::app::AppState;

/// The largest refused body read (and dropped) before the 413, so that a
/// client still sending it gets the answer; a larger one is cut off.
pub const DRAIN_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// The longest a refused body is read for (less when the body read
/// timeout is shorter): a client that sends it slowly is cut off, so a
/// refused body never holds a connection as long as an accepted one may.
const DRAIN_MAX_TIME: Duration = Duration::from_secs(5);

/// Refused bodies read at once; more are cut off at once.
const DRAINS_AT_ONCE: usize = 16;

/// Room for the fields around a payload or an artifact in one request.
pub const ENVELOPE_BYTES: usize = 64 * 1024;

/// The body limit of each kind of route, derived from the item limits
/// (`maxPayloadBytes`, `maxArtifactBytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// `POST /tasks`: one payload and its envelope.
    pub create: usize,
    /// `POST /tasks/batch`: the create limit × 100.
    pub create_batch: usize,
    /// `POST /tasks/{id}/result`: `maxArtifactBytes` as base64 and an envelope.
    pub result: usize,
    /// `POST /tasks/batch/results`: the result limit × 100.
    pub result_batch: usize,
    /// Every other route that reads a body.
    pub small: usize,
}

impl BodyLimits {
    /// The limits for these item limits.
    pub fn new(max_payload_bytes: usize, max_artifact_bytes: usize) -> Self {
        let create = max_payload_bytes.saturating_add(ENVELOPE_BYTES);
        let result = (max_artifact_bytes / 3).saturating_mul(4).saturating_add(ENVELOPE_BYTES);
        Self {
            create,
            create_batch: create.saturating_mul(MAX_BATCH),
            result,
            result_batch: result.saturating_mul(MAX_BATCH),
            small: ENVELOPE_BYTES,
        }
    }

    /// The largest limit, and the route it belongs to.
    pub fn largest(&self) -> (&'static str, usize) {
        if self.result_batch >= self.create_batch {
            ("POST /v1/codeq/tasks/batch/results", self.result_batch)
        } else {
            ("POST /v1/codeq/tasks/batch", self.create_batch)
        }
    }
}

/// The body limit of the route a request matched. The router sets it on
/// each route that reads a body; without it, the small limit applies.
#[derive(Debug, Clone, Copy)]
pub struct RouteBodyLimit(pub usize);

/// The bytes of request bodies in flight, across all requests; counted in
/// KiB so that budgets beyond 4 GiB fit the semaphore's API.
#[derive(Debug)]
pub struct BodyBudget {
    kib: Arc<Semaphore>,
    /// Room for refused bodies being read to their end.
    drains: Semaphore,
}

impl BodyBudget {
    /// A budget of `bytes`.
    pub fn new(bytes: u64) -> Self {
        let kib = usize::try_from(kib_for(bytes)).unwrap_or(usize::MAX).min(Semaphore::MAX_PERMITS);
        Self { kib: Arc::new(Semaphore::new(kib)), drains: Semaphore::new(DRAINS_AT_ONCE) }
    }

    /// Bytes not reserved by any request right now.
    pub fn available_bytes(&self) -> u64 {
        self.kib.available_permits() as u64 * 1024
    }
}

fn kib_for(bytes: u64) -> u64 {
    bytes.div_ceil(1024)
}

/// Budget held by one request; given back when dropped.
#[derive(Debug, Default)]
pub struct Reservation {
    permit: Option<OwnedSemaphorePermit>,
}

impl Reservation {
    /// The bytes this reservation covers.
    fn bytes(&self) -> u64 {
        self.permit.as_ref().map_or(0, |permit| permit.num_permits() as u64 * 1024)
    }

    /// Grows the reservation to cover `bytes`; false when the budget cannot.
    fn grow_to(&mut self, budget: &BodyBudget, bytes: u64) -> bool {
        let missing = kib_for(bytes).saturating_sub(kib_for(self.bytes()));
        if missing == 0 {
            return true;
        }
        let Ok(missing) = u32::try_from(missing) else { return false };
        match budget.kib.clone().try_acquire_many_owned(missing) {
            Ok(more) => {
                match &mut self.permit {
                    Some(permit) => permit.merge(more),
                    None => self.permit = Some(more),
                }
                true
            }
            Err(_) => false,
        }
    }
}

/// How request bodies are read: the shared budget and the time limits.
#[derive(Debug, Clone)]
pub struct BodyReading {
    /// Bytes of bodies in flight (`maxBodyBytesInFlight`).
    pub budget: Arc<BodyBudget>,
    /// The longest pause between two pieces of a body (`bodyReadTimeoutSeconds`).
    pub pause: Duration,
    /// The slowest average rate a whole body may arrive at
    /// (`bodyMinBytesPerSecond`).
    pub min_bytes_per_second: u64,
}

impl BodyReading {
    /// When a body of `length` bytes must have arrived, if it starts now.
    fn deadline(&self, length: u64) -> Instant {
        self.on_time_until(Instant::now(), length)
    }

    /// The bytes each window of a body's [`Pace`] must bring.
    fn quota(&self) -> u64 {
        let bytes = u128::from(self.min_bytes_per_second) * self.pause.as_millis() / 1000;
        u64::try_from(bytes).unwrap_or(u64::MAX)
    }

    /// Until when a body that started at `start` is on time with
    /// `received` bytes: the grace, then `bodyMinBytesPerSecond` on average.
    fn on_time_until(&self, start: Instant, received: u64) -> Instant {
        let micros =
            u128::from(received) * 1_000_000 / u128::from(self.min_bytes_per_second.max(1));
        let transfer = Duration::from_micros(u64::try_from(micros).unwrap_or(u64::MAX));
        after(start, self.pause.saturating_add(transfer))
    }

    /// Reads `body` under `limit` bytes, within the budget and in time.
    /// `expects_continue`: the client waits for `100 Continue` before it
    /// sends the body (so a refusal need not read it).
    pub async fn read(
        &self,
        mut body: axum::body::Body,
        limit: usize,
        expects_continue: bool,
    ) -> Result<Body, ApiError> {
        let limit = limit as u64;
        let declared = body.size_hint().exact();
        if let Some(length) = declared.filter(|length| *length > limit) {
            if !expects_continue && length <= DRAIN_MAX_BYTES {
                self.drain(body, length).await;
            }
            return Err(too_large(Some(length), limit));
        }
        // At most this many bytes can come (the declared length is within
        // the limit).
        let most = declared.unwrap_or(limit);
        let mut reservation = Reservation::default();
        let mut buffer = Vec::new();
        if !reserve(&mut reservation, &mut buffer, &self.budget, 0, most) {
            return Err(busy());
        }
        let mut pace = Pace::new(self.pause, self.quota());
        loop {
            // What has already arrived needs no timer.
            let ready = poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await;
            let frame = match ready {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    let behind_at = pace.behind_at(buffer.len() as u64).ok_or_else(late)?;
                    let wait_until = later(self.pause).min(behind_at);
                    let frame = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx));
                    tokio::time::timeout_at(wait_until, frame).await.map_err(|_| late())?
                }
            };
            let Some(frame) = frame else { break };
            let frame = frame.map_err(|error| {
                ApiError::invalid("invalid_body", format!("cannot read the request body: {error}"))
            })?;
            let Ok(data) = frame.into_data() else { continue };
            let received = (buffer.len() + data.len()) as u64;
            if received > limit {
                return Err(too_large(None, limit));
            }
            if !reserve(&mut reservation, &mut buffer, &self.budget, received, most) {
                return Err(busy());
            }
            buffer.extend_from_slice(&data);
        }
        Ok(Body { bytes: Bytes::from(buffer), reservation })
    }
}

/// The pace a body must keep: the first window (`bodyReadTimeoutSeconds`
/// long) is a grace; each later one must bring `quota` bytes
/// (`bodyMinBytesPerSecond` × its length), so bytes sent early buy no
/// time later.
#[derive(Debug)]
struct Pace {
    window: Duration,
    quota: u64,
    /// The current window: when it began, the bytes received by then, and
    /// whether it is the grace.
    started: Instant,
    received_before: u64,
    grace: bool,
}

impl Pace {
    fn new(window: Duration, quota: u64) -> Self {
        Self { window, quota, started: Instant::now(), received_before: 0, grace: true }
    }

    /// With `received` bytes so far: when the body falls behind, if no
    /// more comes (far ahead when the window's quota is met), or `None`
    /// when it is behind already.
    fn behind_at(&mut self, received: u64) -> Option<Instant> {
        let brought = |pace: &Self| received.saturating_sub(pace.received_before);
        let now = Instant::now();
        if now >= after(self.started, self.window) {
            if !self.grace && brought(self) < self.quota {
                return None;
            }
            *self = Self { started: now, received_before: received, grace: false, ..*self };
        }
        Some(if self.grace || brought(self) >= self.quota {
            after(now, Duration::from_secs(365 * 24 * 3600))
        } else {
            after(self.started, self.window)
        })
    }
}

fn late() -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "body_timeout",
        "the request body did not arrive in time",
    )
}

/// Grows `reservation` (and `buffer`'s room with it) to cover `received`
/// bytes of a body of at most `most`: its first [`ENVELOPE_BYTES`] at
/// once, then in doubling steps. False when the budget cannot.
fn reserve(
    reservation: &mut Reservation,
    buffer: &mut Vec<u8>,
    budget: &BodyBudget,
    received: u64,
    most: u64,
) -> bool {
    if received <= reservation.bytes() && reservation.bytes() > 0 {
        return true;
    }
    let step = reservation.bytes().saturating_mul(2).max(ENVELOPE_BYTES as u64);
    let target = received.max(step).min(most.max(received));
    if !reservation.grow_to(budget, target) {
        return false;
    }
    buffer
        .reserve_exact(usize::try_from(target).unwrap_or(usize::MAX).saturating_sub(buffer.len()));
    true
}

impl BodyReading {
    /// Reads and drops a refused body of `length` bytes, until it ends,
    /// fails or is late (what happens then is the connection's business),
    /// when fewer than [`DRAINS_AT_ONCE`] others are being read.
    async fn drain(&self, mut body: axum::body::Body, length: u64) {
        let Ok(_room) = self.budget.drains.try_acquire() else { return };
        let deadline = self.deadline(length).min(later(self.pause.min(DRAIN_MAX_TIME)));
        loop {
            let wait_until = later(self.pause).min(deadline);
            let frame = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx));
            match tokio::time::timeout_at(wait_until, frame).await {
                Ok(Some(Ok(_))) => {}
                Ok(None | Some(Err(_))) | Err(_) => return,
            }
        }
    }
}

/// `by` after `at`; far in the future when that is beyond what `Instant`
/// holds (timeouts are configured, and a huge one must not panic).
pub fn after(at: Instant, by: Duration) -> Instant {
    at.checked_add(by).unwrap_or_else(|| at + Duration::from_secs(365 * 24 * 3600))
}

/// `by` from now (see [`after`]).
pub fn later(by: Duration) -> Instant {
    after(Instant::now(), by)
}

fn too_large(declared: Option<u64>, limit: u64) -> ApiError {
    let message = match declared {
        Some(length) => {
            format!("request body of {length} bytes is over this route's limit of {limit} bytes")
        }
        None => format!("request body is over this route's limit of {limit} bytes"),
    };
    ApiError::too_large("body_too_large", message)
}

fn busy() -> ApiError {
    ApiError::unavailable("overloaded", "too many request bodies are in flight; retry shortly", 1)
}

/// A request body, read whole under the route's limit, and the budget it
/// holds until the handler is done with it.
#[derive(Debug)]
pub struct Body {
    bytes: Bytes,
    reservation: Reservation,
}

impl FromRequest<AppState> for Body {
    type Rejection = ApiError;

    async fn from_request(request: Request, app: &AppState) -> Result<Self, Self::Rejection> {
        let limit = request.extensions().get::<RouteBodyLimit>().map_or(ENVELOPE_BYTES, |l| l.0);
        let expects_continue = request.headers().contains_key(axum::http::header::EXPECT);
        app.bodies.read(request.into_body(), limit, expects_continue).await
    }
}

impl Body {
    /// Parses the body as JSON, borrowing from it where `T` does; an empty
    /// body counts as `{}` (for endpoints whose fields are all optional).
    pub fn json<'a, T: Deserialize<'a>>(&'a self) -> Result<T, ApiError> {
        let bytes: &[u8] = if self.is_blank() { b"{}" } else { &self.bytes };
        parse_json(bytes)
    }

    /// Whether the body is empty or only whitespace (read as `{}`).
    pub fn is_blank(&self) -> bool {
        self.bytes.iter().all(u8::is_ascii_whitespace)
    }

    /// A handle on `part` of the body that needs no copy when `part` lies
    /// inside the body (text parsed without unescaping), else a copy.
    pub fn share(&self, part: &[u8]) -> Bytes {
        let whole = self.bytes.as_ptr_range();
        let inside = whole.start <= part.as_ptr() && part.as_ptr_range().end <= whole.end;
        if inside { self.bytes.slice_ref(part) } else { Bytes::copy_from_slice(part) }
    }

    /// Frees the bytes and keeps the budget, for a handler that has parsed
    /// what it needs and still holds data derived from the body.
    pub fn release(self) -> Reservation {
        self.reservation
    }
}

/// serde's message with Rust's type names (`expected struct ClaimBody`,
/// `expected f64`) said as the JSON they stand for (`expected a JSON
/// object`, `expected a number`).
fn without_type_names(message: &str) -> String {
    const EXPECTED: &str = "expected ";
    let Some(at) = message.find(EXPECTED) else { return message.to_owned() };
    let rest = &message[at + EXPECTED.len()..];
    let (json, named) = if let Some(name) = rest.strip_prefix("struct ") {
        ("a JSON object", EXPECTED.len() + "struct ".len() + identifier_len(name))
    } else {
        let name = &rest[..identifier_len(rest)];
        let json = match name {
            "f32" | "f64" => "a number",
            "u8" | "u16" | "u32" | "u64" | "usize" | "i8" | "i16" | "i32" | "i64" => {
                "a whole number"
            }
            _ => return message.to_owned(),
        };
        (json, EXPECTED.len() + name.len())
    };
    format!("{}expected {json}{}", &message[..at], &message[at + named..])
}

/// `message`, saying what serde_json's "unexpected end of hex escape"
/// is about: a `\u` escape of a leading UTF-16 surrogate that no
/// trailing one follows (a lone surrogate is no text).
fn surrogates_named(message: &str) -> String {
    const LONE: &str = "unexpected end of hex escape";
    const NAMED: &str = "a lone UTF-16 surrogate: a \\u escape from \\ud800 to \\udbff must be \
                         followed by one from \\udc00 to \\udfff";
    message.replacen(LONE, NAMED, 1)
}

/// The length of the Rust identifier `text` starts with.
fn identifier_len(text: &str) -> usize {
    text.find(|c: char| !c.is_ascii_alphanumeric() && c != '_').unwrap_or(text.len())
}

/// Parses a JSON object, naming the offending field in the error.
pub fn parse_json<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ApiError> {
    // serde reads a struct from an array too, field by field in order:
    // every body and batch item of the API is an object.
    let first = bytes.iter().find(|byte| !byte.is_ascii_whitespace());
    if first != Some(&b'{') && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok() {
        return Err(ApiError::field("invalid body: expected a JSON object"));
    }
    // The plain parser first (tracking the path costs on every request);
    // only a failure is parsed again to name the field.
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
    let parsed = serde_path_to_error::deserialize(&mut *deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let message = if inner.is_syntax() || inner.is_eof() {
            format!("malformed JSON: {}", surrogates_named(&inner.to_string()))
        } else if path == "." {
            format!("invalid body: {}", without_type_names(&inner.to_string()))
        } else {
            format!("invalid field {path}: {}", without_type_names(&inner.to_string()))
        };
        ApiError::invalid(if inner.is_data() { "invalid_field" } else { "malformed_json" }, message)
    })?;
    // The plain parser failed on something after the value.
    deserializer
        .end()
        .map_err(|error| ApiError::invalid("malformed_json", format!("malformed JSON: {error}")))?;
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_surrogate_in_a_string_is_named_as_such() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Reason {
            reason: String,
        }
        let lone = parse_json::<Reason>(br#"{"reason": "\ud800x"}"#).unwrap_err();
        assert_eq!(lone.code, "malformed_json");
        assert!(lone.message.contains("lone UTF-16 surrogate"), "{}", lone.message);
        assert!(lone.message.contains("at line 1 column"), "{}", lone.message);
        let paired = parse_json::<Reason>(br#"{"reason": "\ud83d\ude00"}"#).unwrap();
        assert_eq!(paired.reason, "\u{1f600}");
    }

    #[test]
    fn errors_name_json_not_the_servers_types() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Inner {
            a: u32,
        }
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Outer {
            next: Option<Inner>,
        }
        let error = parse_json::<Outer>(br#"{"next": 5}"#).unwrap_err();
        let message = error.message;
        assert!(message.contains("expected a JSON object"), "{message}");
        assert!(!message.contains("Inner"), "{message}");
        assert_eq!(without_type_names("no names here"), "no names here");
        assert_eq!(
            without_type_names(r#"invalid type: string "x", expected f64 at line 1 column 20"#),
            r#"invalid type: string "x", expected a number at line 1 column 20"#
        );
        assert_eq!(without_type_names("expected u32"), "expected a whole number");
        assert_eq!(without_type_names("expected a string"), "expected a string");
    }

    #[test]
    fn limits_with_the_default_item_limits_are_those_documented() {
        let limits = BodyLimits::new(1_048_576, 10_485_760);
        assert_eq!(limits.create, 1_114_112);
        assert_eq!(limits.create_batch, 111_411_200);
        assert_eq!(limits.result, 14_046_548);
        assert_eq!(limits.result_batch, 1_404_654_800);
        assert_eq!(limits.small, 65_536);
        assert_eq!(limits.largest(), ("POST /v1/codeq/tasks/batch/results", 1_404_654_800));
        let payload_heavy = BodyLimits::new(100 << 20, 1024);
        assert_eq!(payload_heavy.largest().0, "POST /v1/codeq/tasks/batch");
    }

    #[test]
    fn reservations_grow_within_the_budget_and_give_it_back_when_dropped() {
        let budget = BodyBudget::new(10 * 1024);
        let mut first = Reservation::default();
        assert!(first.grow_to(&budget, 6 * 1024));
        assert!(first.grow_to(&budget, 6 * 1024), "growing to what is held takes nothing");
        let mut second = Reservation::default();
        assert!(!second.grow_to(&budget, 5 * 1024), "6 KiB + 5 KiB is over 10 KiB");
        assert!(second.grow_to(&budget, 4 * 1024));
        assert_eq!(budget.available_bytes(), 0);
        drop(first);
        assert_eq!(budget.available_bytes(), 6 * 1024);
        assert!(second.grow_to(&budget, 9 * 1024 + 1), "rounded up to 10 KiB");
        assert_eq!(second.bytes(), 10 * 1024);
    }

    #[test]
    fn share_borrows_parts_of_the_body_and_copies_anything_else() {
        let body =
            Body { bytes: Bytes::from_static(b"{\"a\":\"xyz\"}"), reservation: <_>::default() };
        let inside = &body.bytes[6..9];
        let shared = body.share(inside);
        assert_eq!(&shared[..], b"xyz");
        assert_eq!(shared.as_ptr(), inside.as_ptr(), "no copy");
        let elsewhere = body.share(b"xyz");
        assert_eq!(&elsewhere[..], b"xyz");
    }
}
