//! The load run's own HTTP/1.1 client.
//!
//! Each producer and worker keeps one keep-alive connection of its own and
//! sends requests whose fixed parts (paths, `Host`, `Authorization`, the
//! claim body) were prepared once; answers are read only as far as the run
//! needs them. The load generator shares the machine with the server, so
//! every microsecond it spends is one the server does not get: through the
//! general, pooled SDK client ([`codeq_client::Client`]) a single-item cycle
//! cost the bench about twice the CPU it costs through this one
//! (docs/performance.md, "The bench's own client").
//!
//! Plain `http://` only: the server itself speaks plain HTTP, and a run
//! through a TLS proxy would measure the proxy.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use codeq_client::{BatchResult, ClaimRequest, CreateTask, SubmitResult, Task};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue, USER_AGENT};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;

use crate::exit::{ConfigError, Unreachable};

/// Time allowed for one call, a long poll's wait on top.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Repeats of a failed call that may be repeated (as the SDK's client
/// does), the first after [`FIRST_RETRY_DELAY`], each next after twice as
/// long; a request that never left is sent again at once.
const RETRIES: u32 = 2;
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(200);

const BENCH_USER_AGENT: &str = concat!("codeq-bench/", env!("CARGO_PKG_VERSION"));

const TASKS: &str = "/v1/codeq/tasks";
const TASKS_BATCH: &str = "/v1/codeq/tasks/batch";
const CLAIM: &str = "/v1/codeq/tasks/claim";
const CLAIM_BATCH: &str = "/v1/codeq/tasks/claim/batch";
const RESULTS_BATCH: &str = "/v1/codeq/tasks/batch/results";

/// Why a call failed.
#[derive(Debug)]
pub enum CallError {
    /// The server answered with an error status, or with a body the run
    /// cannot read.
    Server(codeq_client::Error),
    /// No connection to the server could be opened.
    Connect(Unreachable),
    /// The connection closed before the request was written: the server
    /// never saw it.
    Unsent(String),
    /// The request was sent and no answer came: the connection was lost,
    /// or the call timed out. The connection is opened again on the next
    /// call.
    Transport(String),
}

/// Which failures of a call may be repeated.
#[derive(Debug, Clone, Copy)]
enum Retry {
    /// Only those where the server never saw the request.
    Unsent,
    /// Also a lost answer and 502–504: the call is safe to repeat.
    Safe,
}

impl CallError {
    /// Whether the call may be repeated after this failure.
    fn may_retry(&self, retry: Retry) -> bool {
        matches!(
            (self, retry),
            (Self::Connect(_) | Self::Unsent(_), _)
                | (
                    Self::Transport(_)
                        | Self::Server(codeq_client::Error::Api { status: 502..=504, .. }),
                    Retry::Safe
                )
        )
    }

    /// The server that could not be reached, if that is what failed.
    pub fn unreachable(&self) -> Option<&Unreachable> {
        match self {
            Self::Connect(unreachable) => Some(unreachable),
            _ => None,
        }
    }

    /// Whether every further call would fail the same way: configuration,
    /// auth, validation and protocol mismatches.
    pub fn is_fatal(&self) -> bool {
        use codeq_client::Error;
        match self {
            Self::Server(Error::Api { status, .. }) => {
                matches!(status, 400 | 401 | 403 | 404 | 413)
            }
            Self::Server(_) => true,
            Self::Connect(_) | Self::Unsent(_) | Self::Transport(_) => false,
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Server(err) => err.fmt(f),
            Self::Connect(unreachable) => unreachable.fmt(f),
            Self::Unsent(reason) | Self::Transport(reason) => write!(f, "request failed: {reason}"),
        }
    }
}

impl std::error::Error for CallError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Server(err) => Some(err),
            Self::Connect(_) | Self::Unsent(_) | Self::Transport(_) => None,
        }
    }
}

fn transport(what: &str, err: impl fmt::Display) -> CallError {
    CallError::Transport(format!("{what}: {err}"))
}

/// The server and the prepared parts of every request.
pub struct Endpoint {
    /// The base URL's origin, for messages.
    origin: String,
    /// `host:port` to connect to.
    address: String,
    host: HeaderValue,
    /// The base URL's path without its trailing `/` (empty at the root).
    base_path: String,
    producer: HeaderValue,
    worker: HeaderValue,
    tasks: Uri,
    tasks_batch: Uri,
    claim: Uri,
    claim_batch: Uri,
    results_batch: Uri,
}

/// Which token a call carries.
#[derive(Debug, Clone, Copy)]
enum Role {
    Producer,
    Worker,
    Anonymous,
}

impl Endpoint {
    /// The endpoint of the server at `base_url` (`http://host[:port][/path]`).
    pub fn new(
        base_url: &str,
        producer_token: &str,
        worker_token: &str,
    ) -> Result<Self, ConfigError> {
        let invalid = |why: &str| ConfigError::new(format!("invalid base URL {base_url:?}: {why}"));
        let url = reqwest::Url::parse(base_url).map_err(|err| invalid(&err.to_string()))?;
        if url.scheme() != "http" {
            return Err(invalid(
                "the load run speaks plain http:// (the server's own protocol); \
                 point it at the server, not at a TLS proxy",
            ));
        }
        let host = url.host_str().ok_or_else(|| invalid("it has no host"))?;
        let port = url.port_or_known_default().unwrap_or(80);
        let host_header = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let base_path = url.path().trim_end_matches('/').to_owned();
        let header = |value: String| {
            HeaderValue::try_from(value).map_err(|_| invalid("not valid in an HTTP header"))
        };
        let bearer = |token: &str| {
            HeaderValue::try_from(format!("Bearer {token}"))
                .map_err(|_| ConfigError::new("a token holds characters not valid in a header"))
        };
        let uri = |path: &str| {
            Uri::try_from(format!("{base_path}{path}")).map_err(|err| invalid(&err.to_string()))
        };
        Ok(Self {
            origin: url.origin().ascii_serialization(),
            address: format!("{host}:{port}"),
            host: header(host_header)?,
            producer: bearer(producer_token)?,
            worker: bearer(worker_token)?,
            tasks: uri(TASKS)?,
            tasks_batch: uri(TASKS_BATCH)?,
            claim: uri(CLAIM)?,
            claim_batch: uri(CLAIM_BATCH)?,
            results_batch: uri(RESULTS_BATCH)?,
            base_path,
        })
    }

    /// The URI of one task's `action` (`result`, `abandon`).
    fn task_uri(&self, id: &str, action: &str) -> Result<Uri, CallError> {
        Uri::try_from(format!("{}{TASKS}/{id}/{action}", self.base_path)).map_err(|_| {
            CallError::Server(codeq_client::Error::Api {
                status: 400,
                code: "invalid_task_id".into(),
                message: format!("the server handed out a task id not valid in a path: {id:?}"),
            })
        })
    }
}

/// One caller's connection to the server.
pub struct Conn {
    endpoint: Arc<Endpoint>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    /// A connection to `endpoint`, opened on the first call.
    pub fn new(endpoint: Arc<Endpoint>) -> Self {
        Self { endpoint, sender: None }
    }

    /// `GET /healthz`.
    pub async fn healthz(&mut self) -> Result<(), CallError> {
        let uri = Uri::try_from(format!("{}/healthz", self.endpoint.base_path))
            .map_err(|err| transport("invalid health URL", err))?;
        self.call(Method::GET, uri, Role::Anonymous, Bytes::new(), CALL_TIMEOUT, Retry::Safe)
            .await?;
        Ok(())
    }

    /// `POST /v1/codeq/tasks` (the answer's task is not read).
    pub async fn create(&mut self, task: &CreateTask) -> Result<(), CallError> {
        let uri = self.endpoint.tasks.clone();
        self.call(Method::POST, uri, Role::Producer, json(task)?, CALL_TIMEOUT, Retry::Unsent)
            .await?;
        Ok(())
    }

    /// `POST /v1/codeq/tasks/batch`: how many items succeeded and failed.
    pub async fn create_batch(&mut self, tasks: &[CreateTask]) -> Result<(u64, u64), CallError> {
        #[derive(Serialize)]
        struct Body<'a> {
            tasks: &'a [CreateTask],
        }
        let uri = self.endpoint.tasks_batch.clone();
        let body = json(&Body { tasks })?;
        let (status, answer) =
            self.call(Method::POST, uri, Role::Producer, body, CALL_TIMEOUT, Retry::Unsent).await?;
        let succeeded = item_outcomes(status, &answer)?;
        let ok = succeeded.iter().filter(|ok| **ok).count() as u64;
        Ok((ok, succeeded.len() as u64 - ok))
    }

    /// `POST /v1/codeq/tasks/claim` with the prepared `body`: the task, or
    /// none within `wait`.
    pub async fn claim(&mut self, body: Bytes, wait: Duration) -> Result<Option<Task>, CallError> {
        let uri = self.endpoint.claim.clone();
        let (status, answer) = self
            .call(Method::POST, uri, Role::Worker, body, CALL_TIMEOUT + wait, Retry::Unsent)
            .await?;
        if status == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        decode(status, &answer).map(Some)
    }

    /// `POST /v1/codeq/tasks/claim/batch` with the prepared `body`.
    pub async fn claim_batch(
        &mut self,
        body: Bytes,
        wait: Duration,
    ) -> Result<Vec<Task>, CallError> {
        #[derive(Deserialize)]
        struct Answer {
            tasks: Vec<Task>,
        }
        let uri = self.endpoint.claim_batch.clone();
        let (status, answer) = self
            .call(Method::POST, uri, Role::Worker, body, CALL_TIMEOUT + wait, Retry::Unsent)
            .await?;
        if status == StatusCode::NO_CONTENT {
            return Ok(Vec::new());
        }
        decode::<Answer>(status, &answer).map(|answer| answer.tasks)
    }

    /// `POST /v1/codeq/tasks/:id/result` (the stored record is not read).
    pub async fn submit_result(
        &mut self,
        id: &str,
        result: &SubmitResult,
    ) -> Result<(), CallError> {
        let uri = self.endpoint.task_uri(id, "result")?;
        self.call(Method::POST, uri, Role::Worker, json(result)?, CALL_TIMEOUT, Retry::Safe)
            .await?;
        Ok(())
    }

    /// `POST /v1/codeq/tasks/:id/result` with `claimNext`: the next task,
    /// when one came with the answer.
    pub async fn submit_result_and_claim(
        &mut self,
        id: &str,
        result: &SubmitResult,
        claim: &ClaimRequest,
    ) -> Result<Option<Task>, CallError> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Body<'a> {
            #[serde(flatten)]
            result: &'a SubmitResult,
            claim_next: &'a ClaimRequest,
        }
        #[derive(Deserialize)]
        struct Answer {
            next: Option<Task>,
        }
        let uri = self.endpoint.task_uri(id, "result")?;
        let body = json(&Body { result, claim_next: claim })?;
        let (status, answer) =
            self.call(Method::POST, uri, Role::Worker, body, CALL_TIMEOUT, Retry::Safe).await?;
        decode::<Answer>(status, &answer).map(|answer| answer.next)
    }

    /// `POST /v1/codeq/tasks/batch/results`: whether each item succeeded,
    /// in request order.
    pub async fn submit_results_batch(
        &mut self,
        results: &[BatchResult],
    ) -> Result<Vec<bool>, CallError> {
        #[derive(Serialize)]
        struct Body<'a> {
            results: &'a [BatchResult],
        }
        let uri = self.endpoint.results_batch.clone();
        let body = json(&Body { results })?;
        let (status, answer) =
            self.call(Method::POST, uri, Role::Worker, body, CALL_TIMEOUT, Retry::Safe).await?;
        item_outcomes(status, &answer)
    }

    /// `POST /v1/codeq/tasks/:id/abandon`.
    pub async fn abandon(&mut self, id: &str, attempt: u32) -> Result<(), CallError> {
        let uri = self.endpoint.task_uri(id, "abandon")?;
        let body = Bytes::from(format!("{{\"attempt\":{attempt}}}"));
        self.call(Method::POST, uri, Role::Worker, body, CALL_TIMEOUT, Retry::Unsent).await?;
        Ok(())
    }

    /// Makes a call, repeating it after a failure `retry` allows, up to
    /// [`RETRIES`] times.
    async fn call(
        &mut self,
        method: Method,
        uri: Uri,
        role: Role,
        body: Bytes,
        timeout: Duration,
        retry: Retry,
    ) -> Result<(StatusCode, Bytes), CallError> {
        let (mut retries, mut delay) = (0, FIRST_RETRY_DELAY);
        loop {
            let request = self.request(method.clone(), uri.clone(), role, body.clone());
            match self.call_once(request, timeout).await {
                Err(err) if retries < RETRIES && err.may_retry(retry) => {
                    if !matches!(err, CallError::Unsent(_)) {
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                    retries += 1;
                }
                done => return done,
            }
        }
    }

    /// Sends one request and reads its whole answer; an error status is
    /// [`CallError::Server`]. A call that fails or times out drops the
    /// connection (its state is unknown).
    async fn call_once(
        &mut self,
        request: Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), CallError> {
        let outcome = tokio::time::timeout(timeout, self.exchange(request)).await;
        let (status, answer) = match outcome {
            Ok(Ok(answer)) => answer,
            Ok(Err(err)) => {
                self.sender = None;
                return Err(err);
            }
            Err(_) => {
                self.sender = None;
                return Err(CallError::Transport(format!("no answer within {timeout:?}")));
            }
        };
        if !status.is_success() {
            let err = codeq_client::Error::from_response_body(status.as_u16(), &answer);
            return Err(CallError::Server(err));
        }
        Ok((status, answer))
    }

    fn request(&self, method: Method, uri: Uri, role: Role, body: Bytes) -> Request<Full<Bytes>> {
        let has_body = !body.is_empty();
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        headers.insert(HOST, self.endpoint.host.clone());
        headers.insert(USER_AGENT, HeaderValue::from_static(BENCH_USER_AGENT));
        match role {
            Role::Producer => drop(headers.insert(AUTHORIZATION, self.endpoint.producer.clone())),
            Role::Worker => drop(headers.insert(AUTHORIZATION, self.endpoint.worker.clone())),
            Role::Anonymous => {}
        }
        if has_body {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        request
    }

    async fn exchange(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Bytes), CallError> {
        let sender = self.ready_sender().await?;
        let response = sender.try_send_request(request).await.map_err(|mut err| {
            let unsent = err.take_message().is_some();
            let reason = err.into_error().to_string();
            if unsent { CallError::Unsent(reason) } else { transport("request failed", reason) }
        })?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|err| transport("reading the answer failed", err))?;
        Ok((status, body.to_bytes()))
    }

    /// The open connection, ready for a request; opened when there is none
    /// or the last one closed.
    async fn ready_sender(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, CallError> {
        let usable = match self.sender.as_mut() {
            Some(sender) => sender.ready().await.is_ok(),
            None => false,
        };
        if !usable {
            self.sender = Some(self.connect().await?);
        }
        self.sender.as_mut().ok_or_else(|| CallError::Transport("not connected".into()))
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, CallError> {
        let unreachable = |reason: String| {
            CallError::Connect(Unreachable { server: self.endpoint.origin.clone(), reason })
        };
        let stream = TcpStream::connect(&self.endpoint.address)
            .await
            .map_err(|err| unreachable(err.to_string()))?;
        stream.set_nodelay(true).map_err(|err| unreachable(err.to_string()))?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|err| unreachable(format!("HTTP handshake failed: {err}")))?;
        // Runs until the connection closes; its errors surface in the calls.
        tokio::spawn(connection);
        Ok(sender)
    }
}

/// The prepared body of a claim (single or batch).
pub fn claim_body(claim: &ClaimRequest, count: Option<u32>) -> Result<Bytes, CallError> {
    #[derive(Serialize)]
    struct Body<'a> {
        #[serde(flatten)]
        claim: &'a ClaimRequest,
        #[serde(skip_serializing_if = "Option::is_none")]
        count: Option<u32>,
    }
    json(&Body { claim, count })
}

fn json(value: &impl Serialize) -> Result<Bytes, CallError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|err| transport("cannot encode the request", err))
}

fn decode<T: serde::de::DeserializeOwned>(status: StatusCode, body: &[u8]) -> Result<T, CallError> {
    serde_json::from_slice(body).map_err(|source| {
        CallError::Server(codeq_client::Error::Decode { status: status.as_u16(), source })
    })
}

/// Whether each item of a batch answer succeeded (a failed one carries a
/// `code`).
fn item_outcomes(status: StatusCode, body: &[u8]) -> Result<Vec<bool>, CallError> {
    #[derive(Deserialize)]
    struct Item {
        code: Option<String>,
    }
    #[derive(Deserialize)]
    struct Answer {
        results: Vec<Item>,
    }
    let answer: Answer = decode(status, body)?;
    Ok(answer.results.iter().map(|item| item.code.is_none()).collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn paths_keep_the_base_urls_prefix_and_port() {
        let endpoint = Endpoint::new("http://127.0.0.1:8080/queue/", "p", "w").unwrap();
        assert_eq!(endpoint.address, "127.0.0.1:8080");
        assert_eq!(endpoint.host, "127.0.0.1:8080");
        assert_eq!(endpoint.claim, "/queue/v1/codeq/tasks/claim");
        assert_eq!(endpoint.task_uri("t-1", "result").unwrap(), "/queue/v1/codeq/tasks/t-1/result");
        assert_eq!(endpoint.producer, "Bearer p");

        let root = Endpoint::new("http://localhost", "p", "w").unwrap();
        assert_eq!(root.address, "localhost:80");
        assert_eq!(root.host, "localhost");
        assert_eq!(root.tasks, "/v1/codeq/tasks");
    }

    #[test]
    fn only_plain_http_is_accepted() {
        let err = Endpoint::new("https://codeq.example", "p", "w").err().unwrap();
        assert!(err.to_string().contains("plain http://"), "{err}");
        assert!(Endpoint::new("not a url", "p", "w").is_err());
    }

    #[test]
    fn a_task_id_that_cannot_be_a_path_is_a_fatal_error() {
        let endpoint = Endpoint::new("http://127.0.0.1:1", "p", "w").unwrap();
        let err = endpoint.task_uri("a b", "result").unwrap_err();
        assert!(err.is_fatal());
    }

    #[test]
    fn only_errors_every_call_would_repeat_are_fatal() {
        let api = |status| {
            CallError::Server(codeq_client::Error::Api {
                status,
                code: "x".into(),
                message: "x".into(),
            })
        };
        for status in [400, 401, 403, 404, 413] {
            assert!(api(status).is_fatal(), "{status}");
        }
        for status in [409, 429, 500, 503] {
            assert!(!api(status).is_fatal(), "{status}");
        }
        assert!(!CallError::Transport("reset".into()).is_fatal());
    }

    #[test]
    fn batch_answers_count_failed_items_by_their_code() {
        let body = br#"{"results":[{"task":{}},{"error":"bad","code":"invalid"},{"result":{}}]}"#;
        assert_eq!(item_outcomes(StatusCode::OK, body).unwrap(), [true, false, true]);
        assert!(item_outcomes(StatusCode::OK, b"[]").is_err());
    }

    /// A server that answers one request per connection, then closes it.
    async fn one_answer_per_connection() -> (String, tokio::task::JoinHandle<usize>) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let mut accepted = 0;
            while let Ok((mut socket, _)) = listener.accept().await {
                accepted += 1;
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.ends_with(b"\r\n\r\n") {
                    match socket.read(&mut buf).await.unwrap() {
                        0 => break,
                        n => request.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
                socket.write_all(answer).await.unwrap();
                if accepted == 2 {
                    return accepted;
                }
            }
            accepted
        });
        (url, server)
    }

    #[tokio::test]
    async fn a_closed_connection_is_opened_again_for_the_next_call() {
        let (url, server) = one_answer_per_connection().await;
        let mut conn = Conn::new(Arc::new(Endpoint::new(&url, "p", "w").unwrap()));
        conn.healthz().await.unwrap();
        conn.healthz().await.unwrap();
        assert_eq!(server.await.unwrap(), 2);
    }

    #[tokio::test]
    async fn an_unreachable_server_is_named_and_not_fatal() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let mut conn = Conn::new(Arc::new(Endpoint::new(&url, "p", "w").unwrap()));
        let err = conn.healthz().await.unwrap_err();
        assert_eq!(err.unreachable().map(|u| u.server.as_str()), Some(url.as_str()), "{err}");
        assert!(!err.is_fatal());
    }

    /// A server that answers `statuses` in turn, one request per
    /// connection; counts the requests.
    async fn answering(statuses: &'static [u16]) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let served = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&served);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await.unwrap() {
                        0 => break,
                        n => request.extend_from_slice(&buf[..n]),
                    }
                }
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let status = statuses[n.min(statuses.len() - 1)];
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}"
                );
                socket.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        (url, served)
    }

    #[tokio::test]
    async fn a_result_answered_503_is_sent_again_and_a_create_is_not() {
        use std::sync::atomic::Ordering;
        let result = SubmitResult::completed(1, serde_json::json!({}));
        let (url, served) = answering(&[503, 200]).await;
        let mut conn = Conn::new(Arc::new(Endpoint::new(&url, "p", "w").unwrap()));
        conn.submit_result("t-1", &result).await.unwrap();
        assert_eq!(served.load(Ordering::SeqCst), 2);

        let (url, served) = answering(&[503, 200]).await;
        let mut conn = Conn::new(Arc::new(Endpoint::new(&url, "p", "w").unwrap()));
        let err = conn.create(&CreateTask::new("A", serde_json::json!({}))).await.unwrap_err();
        assert!(matches!(err, CallError::Server(codeq_client::Error::Api { status: 503, .. })));
        assert_eq!(served.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn the_claim_body_carries_the_count_only_for_batches() {
        let claim =
            ClaimRequest { commands: vec!["A".into()], lease_seconds: None, wait_seconds: Some(1) };
        let single: serde_json::Value =
            serde_json::from_slice(&claim_body(&claim, None).unwrap()).unwrap();
        assert_eq!(single, serde_json::json!({"commands": ["A"], "waitSeconds": 1}));
        let batch: serde_json::Value =
            serde_json::from_slice(&claim_body(&claim, Some(7)).unwrap()).unwrap();
        assert_eq!(batch["count"], 7);
    }
}
