//! One client connection: HTTP/1.1 served by hyper, with the connection
//! timeouts hyper leaves to the server.
//!
//! A connection is always in one of three phases, and only two of them
//! have a deadline:
//!
//! - **head**: waiting for a request head, counted from the connection's
//!   opening or from the first byte of a later request. It must be
//!   complete within the head timeout, or the connection is closed (with a
//!   408 JSON answer when some of it had arrived). Each new byte does not
//!   restart the clock, so a client trickling a header cannot hold on.
//! - **busy**: a request is being served, however long it takes: a long
//!   poll, a large upload (whose body has its own timeouts, see
//!   [`super::body`]), a slow handler. No deadline here.
//! - **idle**: between requests. Closed after the keep-alive timeout,
//!   counted from the response or from the last bytes of it that the
//!   client took, so a client that stops reading its answer is dropped too.
//!
//! The stream reports reads and writes to the phase (`Watched`), the
//! service reports requests starting and their responses ending
//! (`Tracked`); a watchdog loop next to the hyper connection closes it
//! when the deadline of its phase passes.
//!
//! The watchdog is not told of phase changes (that would cost a wake-up
//! per request): it looks at the phase at least every half of the shorter
//! timeout, and sleeps until the exact deadline when that comes sooner. A
//! phase therefore never goes unseen for longer than its own timeout, and
//! every deadline is kept to the timer's precision.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::http::{Request, Response};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::body::{after, later};
use super::error::ErrorBody;
use super::observe;
use super::request_head::PARSER_BUFFER_BYTES;
use crate::metrics::Metrics;

/// The connection timeouts (`requestHeadTimeoutSeconds`,
/// `keepAliveTimeoutSeconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionTimeouts {
    /// Time to receive a request head.
    pub head: Duration,
    /// Time a connection may stay idle between requests.
    pub keep_alive: Duration,
}

/// The shortest interval between two looks at a connection's phase, for
/// timeouts configured very short.
const MIN_LOOK_EVERY: Duration = Duration::from_millis(10);

/// How long a 408 answer may take to write before the connection is
/// dropped without it (a client that sends slowly may read slowly too).
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);

/// What a connection is doing.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for a request head since `since`; `started` once a byte of
    /// it has arrived.
    Head { since: Instant, started: bool },
    /// Serving `requests` (one, unless the client pipelines).
    Busy { requests: usize },
    /// No request since `since`.
    Idle { since: Instant },
}

/// Why a connection's deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expired {
    /// A request head began but did not complete in time.
    PartialHead,
    /// Nothing arrived in time (no head at all, or idle).
    Silent,
}

/// A connection's phase, shared by its stream, its service and its
/// watchdog.
#[derive(Debug)]
struct Activity {
    /// A `std` mutex: held for a few instructions, never across an await.
    phase: Mutex<Phase>,
}

impl Activity {
    fn new() -> Self {
        Self { phase: Mutex::new(Phase::Head { since: Instant::now(), started: false }) }
    }

    fn phase(&self) -> MutexGuard<'_, Phase> {
        // The phase is a plain value, valid whatever a panicking holder did.
        self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How long the head being read has been arriving (zero when no head
    /// is being read).
    fn head_age(&self) -> Duration {
        match *self.phase() {
            Phase::Head { since, .. } => since.elapsed(),
            Phase::Busy { .. } | Phase::Idle { .. } => Duration::ZERO,
        }
    }

    /// Bytes arrived from the client.
    fn on_read(&self) {
        let mut phase = self.phase();
        match *phase {
            Phase::Idle { .. } => *phase = Phase::Head { since: Instant::now(), started: true },
            Phase::Head { since, started: false } => *phase = Phase::Head { since, started: true },
            Phase::Head { .. } | Phase::Busy { .. } => {}
        }
    }

    /// The client took bytes of a response: an idle connection whose
    /// answer is still being read is not idle yet.
    fn on_write(&self) {
        let mut phase = self.phase();
        if let Phase::Idle { .. } = *phase {
            *phase = Phase::Idle { since: Instant::now() };
        }
    }

    /// A request head was parsed and the request is being served.
    fn request_started(self: &Arc<Self>) -> Serving {
        let mut phase = self.phase();
        let requests = match *phase {
            Phase::Busy { requests } => requests + 1,
            Phase::Head { .. } | Phase::Idle { .. } => 1,
        };
        *phase = Phase::Busy { requests };
        Serving(self.clone())
    }

    /// A response was sent whole, or dropped.
    fn request_finished(&self) {
        let mut phase = self.phase();
        *phase = match *phase {
            Phase::Busy { requests } if requests > 1 => Phase::Busy { requests: requests - 1 },
            _ => Phase::Idle { since: Instant::now() },
        };
    }

    /// Whether the connection is between requests.
    fn is_idle(&self) -> bool {
        matches!(*self.phase(), Phase::Idle { .. })
    }

    /// When the current phase ends the connection, if it does.
    fn deadline(&self, timeouts: &ConnectionTimeouts) -> Option<Instant> {
        match *self.phase() {
            Phase::Head { since, .. } => Some(after(since, timeouts.head)),
            Phase::Idle { since } => Some(after(since, timeouts.keep_alive)),
            Phase::Busy { .. } => None,
        }
    }

    /// Whether the current phase's deadline has passed by `now`.
    fn expired(&self, now: Instant, timeouts: &ConnectionTimeouts) -> Option<Expired> {
        match *self.phase() {
            Phase::Head { since, started } if now >= after(since, timeouts.head) => {
                Some(if started { Expired::PartialHead } else { Expired::Silent })
            }
            Phase::Idle { since } if now >= after(since, timeouts.keep_alive) => {
                Some(Expired::Silent)
            }
            _ => None,
        }
    }
}

/// A request being served; ends the busy phase when dropped (with the
/// response body, or with the request if it never got one).
#[derive(Debug)]
struct Serving(Arc<Activity>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// The TCP stream, reporting traffic to the connection's phase.
#[derive(Debug)]
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.on_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(written)) if written > 0) {
            this.activity.on_write();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(written)) if written > 0) {
            this.activity.on_write();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// The router as hyper calls it on this connection, marking each request
/// busy until its response body is done.
#[derive(Debug, Clone)]
struct ConnectionService {
    router: Router,
    activity: Arc<Activity>,
}

type ServiceFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for ConnectionService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ServiceFuture;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let serving = self.activity.request_started();
        let router = self.router.clone();
        Box::pin(async move {
            let response = router.oneshot(request.map(Body::new)).await?;
            Ok(response.map(|body| Body::new(Tracked { body, _serving: serving })))
        })
    }
}

/// A response body that ends its request's busy phase when hyper drops it
/// (sent whole, or the connection went away).
struct Tracked {
    body: Body,
    _serving: Serving,
}

impl HttpBody for Tracked {
    type Data = <Body as HttpBody>::Data;
    type Error = <Body as HttpBody>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// What ends a connection from outside.
#[derive(Debug, Clone)]
pub struct Stops {
    /// Shutdown: finish the request in progress, then close.
    pub drain: CancellationToken,
    /// The grace period is over: close now.
    pub abort: CancellationToken,
}

/// A connection's place under the cap.
#[derive(Debug)]
pub struct Slot {
    /// Given back when the connection closes.
    pub permit: OwnedSemaphorePermit,
    /// Fires when the cap is reached: a connection idle between requests
    /// closes to make room.
    pub idle_wanted: Arc<Notify>,
}

/// Serves `stream` until the client closes it, a timeout passes, the
/// server stops, or its slot is wanted while it is idle. `slot` is given
/// back when this returns.
pub async fn serve(
    stream: TcpStream,
    router: Router,
    timeouts: ConnectionTimeouts,
    stops: Stops,
    slot: Slot,
    metrics: Arc<Metrics>,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched { stream, activity: activity.clone() });
    let service = ConnectionService { router, activity: activity.clone() };
    let mut connection = http1::Builder::new()
        .keep_alive(true)
        .max_buf_size(PARSER_BUFFER_BYTES)
        // The head timeout is the watchdog's: hyper's would run from the
        // end of one response, leaving no separate keep-alive time.
        .header_read_timeout(None)
        .serve_connection(io, service);
    // Half the shorter timeout: a phase that began just after a look is
    // seen again well before its own deadline.
    let look_every = (timeouts.head.min(timeouts.keep_alive) / 2).max(MIN_LOOK_EVERY);
    let watchdog = tokio::time::sleep(look_every);
    tokio::pin!(watchdog);
    let mut draining = false;
    loop {
        let now = Instant::now();
        match activity.expired(now, &timeouts) {
            Some(Expired::PartialHead) => {
                let stream = connection.into_parts().io.into_inner().stream;
                say_request_timeout(stream, timeouts.head, &metrics).await;
                break;
            }
            Some(Expired::Silent) => break,
            None => {}
        }
        let next_look = after(now, look_every);
        let wake =
            activity.deadline(&timeouts).map_or(next_look, |deadline| deadline.min(next_look));
        watchdog.as_mut().reset(wake);
        tokio::select! {
            ended = &mut connection => {
                if let Err(error) = ended {
                    match refused_head(&error) {
                        Some((status, code)) => {
                            let request_id = uuid::Uuid::new_v4().to_string();
                            let took = activity.head_age();
                            observe::unparsed_head(&request_id, status, code, took, &metrics);
                        }
                        None => tracing::debug!(%error, "connection ended with an error"),
                    }
                }
                break;
            }
            () = &mut watchdog => {}
            () = stops.drain.cancelled(), if !draining => {
                Pin::new(&mut connection).graceful_shutdown();
                draining = true;
            }
            () = stops.abort.cancelled() => break,
            () = slot.idle_wanted.notified() => {
                if activity.is_idle() {
                    break;
                }
            }
        }
    }
    drop(slot);
}

/// The status the HTTP parser answered a head it could not read with
/// (it answers on its own, with no body, and closes), and the code its log
/// line carries; `None` for other ends of a connection.
fn refused_head(error: &hyper::Error) -> Option<(u16, &'static str)> {
    // hyper answers 414 to a URI it finds too long and 431 to a head
    // over its buffer, and tells the two apart only in its message.
    if error.is_parse_too_large() {
        return Some(if error.to_string().starts_with("URI too long") {
            (414, "uri_too_long")
        } else {
            (431, "headers_too_large")
        });
    }
    // hyper answers a bad method, URI, version or header with 400, and
    // nothing for an HTTP/2 preface or its own internal error.
    let internal = error.to_string().starts_with("internal error");
    let answered = error.is_parse() && !error.is_parse_version_h2() && !internal;
    answered.then_some((400, "malformed_request"))
}

/// Answers a request head that did not arrive in time with a 408 and
/// closes the stream; gives up on a client that does not take it. No
/// request was parsed, so the answer carries a new request id.
async fn say_request_timeout(mut stream: TcpStream, head_timeout: Duration, metrics: &Metrics) {
    const CODE: &str = "request_timeout";
    let message = format!(
        "the request head did not arrive within {} s (requestHeadTimeoutSeconds)",
        head_timeout.as_secs()
    );
    let body =
        serde_json::to_string(&ErrorBody { error: &message, code: CODE }).unwrap_or_default();
    let request_id = uuid::Uuid::new_v4().to_string();
    observe::unparsed_head(&request_id, 408, CODE, head_timeout, metrics);
    let response = format!(
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nx-request-id: {request_id}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let goodbye = async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout_at(later(GOODBYE_TIMEOUT), goodbye).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUTS: ConnectionTimeouts =
        ConnectionTimeouts { head: Duration::from_secs(10), keep_alive: Duration::from_secs(60) };

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_must_send_its_head_within_the_head_timeout() {
        let activity = Activity::new();
        let opened = Instant::now();
        assert_eq!(activity.deadline(&TIMEOUTS), Some(opened + TIMEOUTS.head));
        tokio::time::advance(Duration::from_secs(9)).await;
        activity.on_read();
        assert_eq!(
            activity.deadline(&TIMEOUTS),
            Some(opened + TIMEOUTS.head),
            "bytes do not extend it"
        );
        assert_eq!(activity.expired(opened + TIMEOUTS.head, &TIMEOUTS), Some(Expired::PartialHead));
        assert_eq!(
            Activity::new().expired(Instant::now() + TIMEOUTS.head, &TIMEOUTS),
            Some(Expired::Silent)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_progress_has_no_deadline_and_idle_time_starts_when_it_ends() {
        let activity = Arc::new(Activity::new());
        let serving = activity.request_started();
        assert_eq!(activity.deadline(&TIMEOUTS), None);
        tokio::time::advance(Duration::from_secs(300)).await;
        assert_eq!(activity.expired(Instant::now(), &TIMEOUTS), None, "a long poll is not idle");
        drop(serving);
        let finished = Instant::now();
        assert_eq!(activity.deadline(&TIMEOUTS), Some(finished + TIMEOUTS.keep_alive));
        tokio::time::advance(Duration::from_secs(30)).await;
        activity.on_write();
        assert_eq!(
            activity.deadline(&TIMEOUTS),
            Some(Instant::now() + TIMEOUTS.keep_alive),
            "the client is still reading its answer"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_byte_of_the_next_request_starts_the_head_timeout() {
        let activity = Arc::new(Activity::new());
        drop(activity.request_started());
        tokio::time::advance(Duration::from_secs(50)).await;
        activity.on_read();
        let started = Instant::now();
        assert_eq!(activity.deadline(&TIMEOUTS), Some(started + TIMEOUTS.head));
        assert_eq!(
            activity.expired(started + TIMEOUTS.head, &TIMEOUTS),
            Some(Expired::PartialHead)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn pipelined_requests_keep_the_connection_busy_until_the_last_ends() {
        let activity = Arc::new(Activity::new());
        let first = activity.request_started();
        let second = activity.request_started();
        drop(first);
        assert_eq!(activity.deadline(&TIMEOUTS), None);
        drop(second);
        assert!(activity.deadline(&TIMEOUTS).is_some());
    }
}
