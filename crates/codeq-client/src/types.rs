//! The API's JSON bodies (docs/api.md), field for field.
//!
//! Times are kept as the RFC 3339 strings the server sends; optional fields
//! the server omits are `None` (or empty), and optional request fields that
//! are `None` are left out of the body. Unknown response fields are ignored,
//! so a newer server does not break an older client.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A task's place in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskStatus {
    /// Waiting to be claimed (ready now, or delayed until `runAt`).
    Pending,
    /// Claimed by a worker under a lease.
    InProgress,
    /// Finished with a result.
    Completed,
    /// Finished with an error, or dead-lettered.
    Failed,
    /// Stopped by its producer or an admin before it finished.
    Cancelled,
}

impl TaskStatus {
    /// The status as the API spells it (`IN_PROGRESS`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::InProgress => "IN_PROGRESS",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
        }
    }
}

/// A task as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    /// Server-assigned id (a UUID; opaque to clients).
    pub id: String,
    /// The queue it belongs to.
    pub command: String,
    /// The producer's payload, re-serialized compactly, as a JSON string.
    /// See [`Task::payload_as`]. Empty when the server left it out
    /// (listings without `include_payload`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub payload: String,
    /// Claim priority, 0..=9, higher first.
    pub priority: u8,
    /// Result callback URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// Life-cycle state.
    pub status: TaskStatus,
    /// The claiming worker's `sub`, while in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// When the lease ends (advisory), while in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<String>,
    /// Deliveries so far. Send it back as `attempt` (fencing).
    pub attempts: u32,
    /// Delivery limit.
    pub max_attempts: u32,
    /// Terminal error (`MAX_ATTEMPTS` when dead-lettered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Last nack reason or `LEASE_EXPIRED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reason: Option<String>,
    /// When the task becomes (or became) visible, if it was scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<String>,
    /// The producer's idempotency key, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Creation time.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
    /// When the task became terminal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    /// How many times it was replayed from the dead-letter queue.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub replays: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Task {
    /// Parses the payload string into `T` (e.g. [`serde_json::Value`]).
    pub fn payload_as<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.payload)
    }
}

/// The body of `POST /v1/codeq/tasks` (and one item of the batch).
///
/// ```
/// use codeq_client::CreateTask;
///
/// let create = CreateTask { priority: Some(5), ..CreateTask::new("RENDER", serde_json::json!({"jobId": "j-1"})) };
/// assert_eq!(
///     serde_json::to_string(&create).unwrap(),
///     r#"{"command":"RENDER","payload":{"jobId":"j-1"},"priority":5}"#
/// );
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateTask {
    /// The queue name.
    pub command: String,
    /// Any JSON (an object in practice), sent as written.
    pub payload: Payload,
    /// 0..=9 (the server clamps other values); default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Delivery limit, 1..=1000; default the server's `maxAttemptsDefault`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Absolute http(s) URL to receive the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// 1..=256 chars; a repeat returns the existing task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// RFC 3339; when the task becomes claimable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<String>,
    /// Delay before the task becomes claimable; ignored when `run_at` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_seconds: Option<u64>,
}

impl CreateTask {
    /// A task for `command` with `payload` (a [`serde_json::Value`], or a
    /// [`Payload`] of JSON text) and every option left to the server.
    pub fn new(command: impl Into<String>, payload: impl Into<Payload>) -> Self {
        Self { command: command.into(), payload: payload.into(), ..Self::default() }
    }
}

/// JSON kept as text (a task's payload, a result): the server stores it as sent (key
/// order, a repeated key, a number's spelling and precision), and so does
/// this client, where a [`serde_json::Value`] would sort the keys, keep
/// one of a repeated key and round big numbers.
///
/// ```
/// use codeq_client::Payload;
///
/// let text = r#"{"z":1,"a":12345678901234567890123,"k":1,"k":2}"#;
/// assert_eq!(Payload::from_json(text).unwrap().as_json(), text);
/// // Sent compact: the server's size limits count the compact form.
/// assert_eq!(Payload::from_json("{ \"a\": [1, 2] }\n").unwrap().as_json(), r#"{"a":[1,2]}"#);
/// assert_eq!(Payload::from(serde_json::json!({"b": 1})).as_json(), r#"{"b":1}"#);
/// assert!(Payload::from_json("{oops").is_err());
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Payload(Box<serde_json::value::RawValue>);

impl Payload {
    /// JSON text, checked to be one JSON value and sent as written less
    /// the whitespace between its tokens (the server's size limits count
    /// the compact form, and an indented document may be several times
    /// larger).
    pub fn from_json(text: impl Into<String>) -> Result<Self, serde_json::Error> {
        let checked = serde_json::value::RawValue::from_string(text.into())?;
        serde_json::value::RawValue::from_string(codeq_core::json::compact(checked.get())).map(Self)
    }

    /// The JSON text.
    pub fn as_json(&self) -> &str {
        self.0.get()
    }
}

impl From<serde_json::Value> for Payload {
    fn from(value: serde_json::Value) -> Self {
        // A Value always has a JSON text; `null` stands in for the
        // impossible failure.
        Self(
            serde_json::value::to_raw_value(&value)
                .unwrap_or_else(|_| serde_json::value::RawValue::NULL.to_owned()),
        )
    }
}

/// `null`, as an absent payload is.
impl Default for Payload {
    fn default() -> Self {
        Self(serde_json::value::RawValue::NULL.to_owned())
    }
}

/// The same JSON text.
impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.as_json() == other.as_json()
    }
}

/// What [`Client::create_task`](crate::Client::create_task) returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Created {
    /// The task (the existing one when `replayed`).
    pub task: Task,
    /// True when the idempotency key matched an existing task and nothing
    /// was created (header `Idempotent-Replayed: true`). Also when this
    /// client repeated a keyed create whose first answer was lost: the
    /// key then finds the task that first try created, so `replayed`
    /// does not prove that another call created it.
    pub replayed: bool,
}

/// The body of a claim (`POST /v1/codeq/tasks/claim`); every field optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimRequest {
    /// Commands to claim from; empty ⇒ the token's `eventTypes`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<String>,
    /// Lease length; default the server's `defaultLeaseSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_seconds: Option<u32>,
    /// Long poll, 0..=30 s: how long to wait for a task before `204`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_seconds: Option<u32>,
}

impl ClaimRequest {
    /// A claim from `commands` with server defaults for lease and wait.
    pub fn new<I, S>(commands: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self { commands: commands.into_iter().map(Into::into).collect(), ..Self::default() }
    }
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatAck {
    /// Always true on success.
    pub ok: bool,
    /// The new end of the lease.
    pub lease_until: String,
}

/// Where a nacked task went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NackStatus {
    /// Back to the delayed set, retried after `delaySeconds`.
    Requeued,
    /// That was its last delivery: dead-lettered.
    Dlq,
}

/// The answer to a nack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NackOutcome {
    /// Requeued or dead-lettered.
    pub status: NackStatus,
    /// The delay applied (0 when dead-lettered).
    pub delay_seconds: u64,
}

/// The outcome a worker reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ResultStatus {
    /// The work succeeded; `result` holds its output.
    Completed,
    /// The work failed for good; `error` says why.
    Failed,
    /// The task was cancelled; `error` holds the reason given, if any.
    /// Found in result records only: a worker cannot submit it.
    Cancelled,
}

/// A file attached to a result: by `url`, or inline as `content_base64`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactUpload {
    /// A plain file name.
    pub name: String,
    /// Where the bytes already are (http/https).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The bytes, base64-encoded, to be stored by the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_base64: Option<String>,
    /// Media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

/// The body of `POST /v1/codeq/tasks/:id/result`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubmitResult {
    /// Completed or failed.
    pub status: ResultStatus,
    /// The output (a JSON object); required for `COMPLETED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Payload>,
    /// Why it failed; required for `FAILED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Files to attach.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<ArtifactUpload>,
    /// The delivery this result belongs to (the task's `attempts` when it
    /// was claimed): the server refuses a stale one with 409 `stale_attempt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
}

impl SubmitResult {
    /// A `COMPLETED` result for delivery `attempt`.
    pub fn completed(attempt: u32, result: impl Into<Payload>) -> Self {
        Self {
            status: ResultStatus::Completed,
            result: Some(result.into()),
            error: None,
            artifacts: Vec::new(),
            attempt: Some(attempt),
        }
    }

    /// A `FAILED` result for delivery `attempt`.
    pub fn failed(attempt: u32, error: impl Into<String>) -> Self {
        Self {
            status: ResultStatus::Failed,
            result: None,
            error: Some(error.into()),
            artifacts: Vec::new(),
            attempt: Some(attempt),
        }
    }
}

/// One item of `POST /v1/codeq/tasks/batch/results`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchResult {
    /// The task the result is for.
    pub task_id: String,
    /// The result, as for a single submission.
    #[serde(flatten)]
    pub result: SubmitResult,
}

/// A stored artifact, as returned in a result record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    /// A plain file name.
    pub name: String,
    /// Where to fetch it.
    pub url: String,
    /// Media type, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

/// The stored outcome of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResultRecord {
    /// The task it belongs to.
    pub task_id: String,
    /// Completed or failed.
    pub status: ResultStatus,
    /// The worker's output, for completed tasks, as its worker wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Payload>,
    /// Why the task failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Attached files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<Artifact>,
    /// When the task became terminal.
    pub completed_at: String,
}

/// The answer to `GET /v1/codeq/tasks/:id/result`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskWithResult {
    /// The task.
    pub task: Task,
    /// Its result.
    pub result: ResultRecord,
}

/// Why one item of a batch call failed (the rest of the batch is unaffected).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "camelCase")]
#[error("{code}: {error}")]
pub struct ItemError {
    /// The task the item was about (batch results only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// Human-readable message.
    pub error: String,
    /// Stable snake_case code, as for whole-request errors.
    pub code: String,
}

/// One item of a batch answer, in request order.
pub type BatchItem<T> = Result<T, ItemError>;

/// Depths of one command's queues, with its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueStats {
    /// The command.
    pub command: String,
    /// Pending and claimable now.
    pub ready: u64,
    /// Pending until a later time (scheduled or backing off).
    pub delayed: u64,
    /// Claimed under a lease.
    pub in_progress: u64,
    /// Dead-lettered.
    pub dlq: u64,
    /// Pause and flow limits (all unset from a server without them).
    #[serde(flatten)]
    pub settings: QueueSettings,
}

/// How claims of one command are held back (`GET|PUT
/// /v1/codeq/admin/queues/:command/settings`). The default holds nothing.
///
/// A `PUT` replaces all of them: a field left unset (`None`) is unset on
/// the server.
///
/// ```
/// use codeq_client::QueueSettings;
///
/// let settings = QueueSettings { rate_per_second: Some(2.5), ..QueueSettings::default() };
/// assert_eq!(serde_json::to_string(&settings).unwrap(), r#"{"paused":false,"ratePerSecond":2.5}"#);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueSettings {
    /// Claims skip the command (creates are still accepted).
    #[serde(default)]
    pub paused: bool,
    /// At most this many of its tasks in progress at once, 1..=1,000,000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
    /// Claims per second on average, above 0 and at most 1,000,000. A NaN
    /// or infinite rate fails the call before it is sent (JSON would carry
    /// it as `null`: no rate).
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "finite")]
    pub rate_per_second: Option<f64>,
    /// Claims that may follow one another at once after an idle time
    /// (1..=1,000,000; the server's default is 1). Needs a rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

/// A successful item of a batch cancel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelledTask {
    /// The id as sent.
    pub task_id: String,
    /// `CANCELLED`.
    pub status: TaskStatus,
}

/// A page of tasks, newest first (`GET /v1/codeq/admin/tasks` and
/// `GET /v1/codeq/admin/queues/:command/dlq`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskPage {
    /// The tasks (their `payload` empty unless asked for).
    pub tasks: Vec<Task>,
    /// The cursor of the next page; `None` on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Which tasks `GET /v1/codeq/admin/tasks` lists; every field optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskQuery {
    /// Only tasks of this command.
    pub command: Option<String>,
    /// Only tasks with this status.
    pub status: Option<TaskStatus>,
    /// Page length, 1..=1000 (server default 100).
    pub limit: Option<u32>,
    /// Where the page starts: a `next_cursor` of an earlier page.
    pub cursor: Option<String>,
    /// Include each task's payload.
    pub include_payload: bool,
}

impl TaskQuery {
    /// The query string's pairs.
    pub(crate) fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        if let Some(command) = &self.command {
            pairs.push(("command", command.clone()));
        }
        if let Some(status) = self.status {
            pairs.push(("status", status.as_str().to_owned()));
        }
        page_pairs(&mut pairs, self.limit, self.cursor.as_deref(), self.include_payload);
        pairs
    }
}

/// Which dead letters of a command a listing, replay or purge takes: those
/// whose error or last nack reason contains `error_contains` (case
/// sensitive), that failed strictly before `failed_before` and strictly
/// after `failed_after` (RFC 3339). Unset fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterFilter {
    /// Text the error or last nack reason contains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_contains: Option<String>,
    /// Failed before this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_before: Option<String>,
    /// Failed after this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_after: Option<String>,
}

impl DeadLetterFilter {
    /// True when no field filters.
    pub fn is_empty(&self) -> bool {
        self.error_contains.is_none() && self.failed_before.is_none() && self.failed_after.is_none()
    }
}

/// Which page of a command's dead letters `GET …/dlq` lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterQuery {
    /// Which dead letters.
    pub filter: DeadLetterFilter,
    /// Page length, 1..=1000 (server default 100).
    pub limit: Option<u32>,
    /// Where the page starts: a `next_cursor` of an earlier page.
    pub cursor: Option<String>,
    /// Include each task's payload.
    pub include_payload: bool,
}

impl DeadLetterQuery {
    /// The query string's pairs.
    pub(crate) fn pairs(&self) -> Vec<(&'static str, String)> {
        let filter = &self.filter;
        let mut pairs = Vec::new();
        let fields = [
            ("errorContains", &filter.error_contains),
            ("failedBefore", &filter.failed_before),
            ("failedAfter", &filter.failed_after),
        ];
        for (name, value) in fields {
            if let Some(value) = value {
                pairs.push((name, value.clone()));
            }
        }
        page_pairs(&mut pairs, self.limit, self.cursor.as_deref(), self.include_payload);
        pairs
    }
}

fn page_pairs(
    pairs: &mut Vec<(&'static str, String)>,
    limit: Option<u32>,
    cursor: Option<&str>,
    include_payload: bool,
) {
    if let Some(limit) = limit {
        pairs.push(("limit", limit.to_string()));
    }
    if let Some(cursor) = cursor {
        pairs.push(("cursor", cursor.to_owned()));
    }
    if include_payload {
        pairs.push(("includePayload", "true".to_owned()));
    }
}

/// Which dead letters a replay or a purge takes: named ones, or those
/// that pass a filter (newest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadLetterSelection {
    /// These ids (1..=10,000; ids that are not dead letters of the command
    /// are skipped).
    Ids(Vec<String>),
    /// Every dead letter that passes the filter (an empty filter: all).
    Matching(DeadLetterFilter),
}

/// The answer to a replay: how many dead letters went round again, and
/// which.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replayed {
    /// How many.
    pub replayed: u64,
    /// Their ids.
    pub ids: Vec<String>,
}

/// The answer to a purge: how many dead letters were deleted, and which.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purged {
    /// How many.
    pub purged: u64,
    /// Their ids.
    pub ids: Vec<String>,
}

/// The answer to `POST /v1/codeq/admin/tasks/cleanup`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CleanupOutcome {
    /// How many terminal tasks were deleted.
    pub deleted: u64,
    /// The retention cut-off used (RFC 3339).
    pub before: String,
    /// The limit used.
    pub limit: u64,
}

// Envelopes: bodies that wrap the types above on the wire.

#[derive(Serialize)]
pub(crate) struct CreateBatchBody<'a> {
    pub tasks: &'a [CreateTask],
}

/// `{"task": {…}}` or `{"error", "code"}`.
#[derive(Deserialize)]
pub(crate) struct RawCreateItem {
    #[serde(default)]
    task: Option<Task>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    code: Option<String>,
}

impl From<RawCreateItem> for BatchItem<Task> {
    fn from(raw: RawCreateItem) -> Self {
        match raw.task {
            Some(task) => Ok(task),
            None => Err(ItemError {
                task_id: None,
                error: raw.error.unwrap_or_default(),
                code: raw.code.unwrap_or_default(),
            }),
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct CreateBatchAnswer {
    pub results: Vec<RawCreateItem>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ClaimBatchBody<'a> {
    #[serde(flatten)]
    pub claim: &'a ClaimRequest,
    pub count: u32,
}

#[derive(Deserialize)]
pub(crate) struct ClaimBatchAnswer {
    pub tasks: Vec<Task>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HeartbeatBody {
    pub attempt: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extend_seconds: Option<u32>,
}

#[derive(Serialize)]
pub(crate) struct AbandonBody {
    pub attempt: u32,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NackBody<'a> {
    pub attempt: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_seconds: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
}

#[derive(Serialize)]
pub(crate) struct ResultBatchBody<'a> {
    pub results: &'a [BatchResult],
}

/// `{"taskId", "result": {…}}` or `{"taskId", "error", "code"}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawResultItem {
    #[serde(default)]
    task_id: Option<String>,
    #[serde(default)]
    result: Option<ResultRecord>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    code: Option<String>,
}

impl From<RawResultItem> for BatchItem<ResultRecord> {
    fn from(raw: RawResultItem) -> Self {
        match raw.result {
            Some(record) => Ok(record),
            None => Err(ItemError {
                task_id: raw.task_id,
                error: raw.error.unwrap_or_default(),
                code: raw.code.unwrap_or_default(),
            }),
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct ResultBatchAnswer {
    pub results: Vec<RawResultItem>,
}

#[derive(Deserialize)]
pub(crate) struct QueuesAnswer {
    pub queues: Vec<QueueStats>,
}

#[derive(Serialize)]
pub(crate) struct CancelBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
}

#[derive(Serialize)]
pub(crate) struct CancelBatchBody<'a> {
    pub ids: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
}

/// `{"taskId", "status"}` or `{"taskId", "error", "code"}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawCancelItem {
    task_id: String,
    #[serde(default)]
    status: Option<TaskStatus>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    code: Option<String>,
}

impl From<RawCancelItem> for BatchItem<CancelledTask> {
    fn from(raw: RawCancelItem) -> Self {
        match raw.status {
            Some(status) => Ok(CancelledTask { task_id: raw.task_id, status }),
            None => Err(ItemError {
                task_id: Some(raw.task_id),
                error: raw.error.unwrap_or_default(),
                code: raw.code.unwrap_or_default(),
            }),
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct CancelBatchAnswer {
    pub results: Vec<RawCancelItem>,
}

/// The body of a replay or a purge.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BulkBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ids: Option<&'a [String]>,
    #[serde(flatten)]
    pub filter: Option<&'a DeadLetterFilter>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "finite")]
    pub rate_per_second: Option<f64>,
}

/// A rate as JSON, refusing NaN and infinities: `serde_json` writes them
/// as `null`, which the server reads as "no rate" and which would clear a
/// limit without a word.
fn finite<S: serde::Serializer>(rate: &Option<f64>, serializer: S) -> Result<S::Ok, S::Error> {
    match rate {
        Some(rate) if !rate.is_finite() => Err(serde::ser::Error::custom(format!(
            "ratePerSecond must be a finite number, got {rate}"
        ))),
        _ => rate.serialize(serializer),
    }
}

impl<'a> BulkBody<'a> {
    pub fn new(selection: &'a DeadLetterSelection, limit: Option<u32>) -> Self {
        let (ids, filter) = match selection {
            DeadLetterSelection::Ids(ids) => (Some(ids.as_slice()), None),
            DeadLetterSelection::Matching(filter) => (None, Some(filter)),
        };
        Self { ids, filter, limit, rate_per_second: None }
    }
}

#[derive(Serialize)]
pub(crate) struct CleanupBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<&'a str>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_rate_that_is_not_a_finite_number_is_not_sent_as_null() {
        for rate in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let settings =
                QueueSettings { rate_per_second: Some(rate), ..QueueSettings::default() };
            let refused = serde_json::to_string(&settings).unwrap_err();
            assert!(refused.to_string().contains("finite"), "{refused}");
            let selection = DeadLetterSelection::Ids(vec!["x".into()]);
            let bulk = BulkBody { rate_per_second: Some(rate), ..BulkBody::new(&selection, None) };
            assert!(serde_json::to_string(&bulk).is_err());
        }
        let settings = QueueSettings { rate_per_second: Some(2.5), ..QueueSettings::default() };
        assert_eq!(serde_json::to_value(settings).unwrap()["ratePerSecond"], 2.5);
    }

    #[test]
    fn create_task_skips_unset_options() {
        let body = serde_json::to_value(CreateTask::new("RENDER", json!({"a": 1}))).unwrap();

        assert_eq!(body, json!({"command": "RENDER", "payload": {"a": 1}}));
    }

    #[test]
    fn create_task_uses_camel_case_names() {
        let create = CreateTask {
            priority: Some(3),
            max_attempts: Some(2),
            webhook: Some("https://example.test/hook".into()),
            idempotency_key: Some("k-1".into()),
            run_at: Some("2030-01-01T00:00:00Z".into()),
            delay_seconds: Some(10),
            ..CreateTask::new("RENDER", json!({}))
        };

        let body = serde_json::to_value(&create).unwrap();

        assert_eq!(
            body,
            json!({
                "command": "RENDER", "payload": {}, "priority": 3, "maxAttempts": 2,
                "webhook": "https://example.test/hook", "idempotencyKey": "k-1",
                "runAt": "2030-01-01T00:00:00Z", "delaySeconds": 10
            })
        );
    }

    #[test]
    fn empty_claim_request_is_an_empty_object() {
        assert_eq!(serde_json::to_value(ClaimRequest::default()).unwrap(), json!({}));
    }

    #[test]
    fn claim_batch_body_flattens_the_claim_and_adds_count() {
        let claim = ClaimRequest { wait_seconds: Some(1), ..ClaimRequest::new(["A", "B"]) };

        let body = serde_json::to_value(ClaimBatchBody { claim: &claim, count: 10 }).unwrap();

        assert_eq!(body, json!({"commands": ["A", "B"], "waitSeconds": 1, "count": 10}));
    }

    #[test]
    fn submit_result_carries_the_attempt_and_skips_the_rest() {
        let completed = serde_json::to_value(SubmitResult::completed(2, json!({"ok": true})));
        let failed = serde_json::to_value(SubmitResult::failed(1, "boom"));

        assert_eq!(
            completed.unwrap(),
            json!({"status": "COMPLETED", "result": {"ok": true}, "attempt": 2})
        );
        assert_eq!(failed.unwrap(), json!({"status": "FAILED", "error": "boom", "attempt": 1}));
    }

    #[test]
    fn batch_result_item_puts_task_id_beside_the_result_fields() {
        let item = BatchResult { task_id: "t-1".into(), result: SubmitResult::failed(1, "boom") };

        assert_eq!(
            serde_json::to_value(&item).unwrap(),
            json!({"taskId": "t-1", "status": "FAILED", "error": "boom", "attempt": 1})
        );
    }

    #[test]
    fn nack_and_heartbeat_bodies_skip_unset_options() {
        let nack = NackBody { attempt: 3, delay_seconds: None, reason: Some("busy") };
        let heartbeat = HeartbeatBody { attempt: 3, extend_seconds: None };

        assert_eq!(serde_json::to_value(nack).unwrap(), json!({"attempt": 3, "reason": "busy"}));
        assert_eq!(serde_json::to_value(heartbeat).unwrap(), json!({"attempt": 3}));
    }

    fn task_json() -> serde_json::Value {
        json!({
            "id": "0190a0a0-0000-7000-8000-000000000001", "command": "RENDER",
            "payload": "{\"jobId\":\"j-1\"}", "priority": 0, "status": "IN_PROGRESS",
            "workerId": "w-1", "leaseUntil": "2030-01-01T00:05:00Z", "attempts": 1,
            "maxAttempts": 5, "createdAt": "2030-01-01T00:00:00Z",
            "updatedAt": "2030-01-01T00:00:01Z", "somethingNew": true
        })
    }

    #[test]
    fn task_is_decoded_with_missing_options_and_unknown_fields() {
        let task: Task = serde_json::from_value(task_json()).unwrap();

        assert_eq!(task.status, TaskStatus::InProgress);
        assert_eq!(task.worker_id.as_deref(), Some("w-1"));
        assert_eq!(task.webhook, None);
        assert_eq!(task.payload_as::<serde_json::Value>().unwrap(), json!({"jobId": "j-1"}));
    }

    #[test]
    fn create_batch_items_become_results_in_order() {
        let answer: CreateBatchAnswer = serde_json::from_value(json!({"results": [
            {"task": task_json()},
            {"error": "command is invalid", "code": "invalid_command"}
        ]}))
        .unwrap();

        let items: Vec<BatchItem<Task>> = answer.results.into_iter().map(Into::into).collect();

        assert!(items[0].is_ok());
        let err = items[1].as_ref().unwrap_err();
        assert_eq!(err.code, "invalid_command");
        assert_eq!(err.task_id, None);
    }

    #[test]
    fn result_batch_items_keep_the_task_id_of_failures() {
        let answer: ResultBatchAnswer = serde_json::from_value(json!({"results": [
            {"taskId": "t-1", "result": {"taskId": "t-1", "status": "FAILED", "error": "boom",
                                         "completedAt": "2030-01-01T00:00:00Z"}},
            {"taskId": "t-2", "error": "stale attempt", "code": "stale_attempt"}
        ]}))
        .unwrap();

        let items: Vec<BatchItem<ResultRecord>> =
            answer.results.into_iter().map(Into::into).collect();

        let record = items[0].as_ref().unwrap();
        assert_eq!(record.status, ResultStatus::Failed);
        assert_eq!(record.error.as_deref(), Some("boom"));
        let err = items[1].as_ref().unwrap_err();
        assert_eq!(err.task_id.as_deref(), Some("t-2"));
        assert_eq!(err.code, "stale_attempt");
    }

    #[test]
    fn nack_outcome_is_decoded() {
        let outcome: NackOutcome =
            serde_json::from_value(json!({"status": "dlq", "delaySeconds": 0})).unwrap();

        assert_eq!(outcome, NackOutcome { status: NackStatus::Dlq, delay_seconds: 0 });
    }
    #[test]
    fn a_cancelled_task_and_its_replays_are_decoded() {
        let mut raw = task_json();
        raw["status"] = json!("CANCELLED");
        raw["replays"] = json!(2);

        let task: Task = serde_json::from_value(raw).unwrap();

        assert_eq!((task.status, task.replays), (TaskStatus::Cancelled, 2));
        assert_eq!(task.status.as_str(), "CANCELLED");
    }

    #[test]
    fn a_listed_task_without_payload_or_replays_keeps_them_out_when_printed() {
        let mut raw = task_json();
        raw.as_object_mut().unwrap().remove("payload");
        let page: TaskPage = serde_json::from_value(json!({"tasks": [raw]})).unwrap();

        let printed = serde_json::to_value(&page).unwrap();

        assert_eq!(page.next_cursor, None);
        assert!(printed["tasks"][0].get("payload").is_none());
        assert!(printed["tasks"][0].get("replays").is_none());
        assert!(printed.get("nextCursor").is_none());
    }

    #[test]
    fn queue_stats_carry_the_settings_and_default_them_when_absent() {
        let limited: QueueStats = serde_json::from_value(json!({
            "command": "A", "ready": 1, "delayed": 0, "inProgress": 0, "dlq": 0,
            "paused": true, "maxInFlight": 3, "ratePerSecond": 2.5
        }))
        .unwrap();
        let older: QueueStats = serde_json::from_value(json!({
            "command": "A", "ready": 1, "delayed": 0, "inProgress": 0, "dlq": 0
        }))
        .unwrap();

        assert_eq!(
            limited.settings,
            QueueSettings {
                paused: true,
                max_in_flight: Some(3),
                rate_per_second: Some(2.5),
                burst: None
            }
        );
        assert_eq!(older.settings, QueueSettings::default());
    }

    #[test]
    fn bulk_bodies_send_ids_or_filters() {
        let ids = DeadLetterSelection::Ids(vec!["t-1".into()]);
        let filter = DeadLetterFilter {
            error_contains: Some("timeout".into()),
            failed_before: Some("2030-01-01T00:00:00Z".into()),
            failed_after: None,
        };
        let matching = DeadLetterSelection::Matching(filter);
        let everything = DeadLetterSelection::Matching(DeadLetterFilter::default());

        let by_id = BulkBody { rate_per_second: Some(2.0), ..BulkBody::new(&ids, Some(5)) };

        assert_eq!(
            serde_json::to_value(by_id).unwrap(),
            json!({"ids": ["t-1"], "limit": 5, "ratePerSecond": 2.0})
        );
        assert_eq!(
            serde_json::to_value(BulkBody::new(&matching, None)).unwrap(),
            json!({"errorContains": "timeout", "failedBefore": "2030-01-01T00:00:00Z"})
        );
        assert_eq!(serde_json::to_value(BulkBody::new(&everything, None)).unwrap(), json!({}));
    }

    #[test]
    fn listing_queries_become_query_pairs() {
        let tasks = TaskQuery {
            command: Some("A".into()),
            status: Some(TaskStatus::InProgress),
            limit: Some(10),
            cursor: Some("c".into()),
            include_payload: true,
        };
        let dead = DeadLetterQuery {
            filter: DeadLetterFilter { error_contains: Some("x y".into()), ..Default::default() },
            ..DeadLetterQuery::default()
        };

        assert_eq!(
            tasks.pairs(),
            [
                ("command", "A".to_owned()),
                ("status", "IN_PROGRESS".to_owned()),
                ("limit", "10".to_owned()),
                ("cursor", "c".to_owned()),
                ("includePayload", "true".to_owned())
            ]
        );
        assert_eq!(dead.pairs(), [("errorContains", "x y".to_owned())]);
        assert!(TaskQuery::default().pairs().is_empty());
    }

    #[test]
    fn batch_cancel_items_keep_the_task_id_either_way() {
        let answer: CancelBatchAnswer = serde_json::from_value(json!({"results": [
            {"taskId": "t-1", "status": "CANCELLED"},
            {"taskId": "t-2", "error": "task is already COMPLETED", "code": "task_terminal"}
        ]}))
        .unwrap();

        let items: Vec<BatchItem<CancelledTask>> =
            answer.results.into_iter().map(Into::into).collect();

        assert_eq!(
            items[0],
            Ok(CancelledTask { task_id: "t-1".into(), status: TaskStatus::Cancelled })
        );
        let err = items[1].as_ref().unwrap_err();
        assert_eq!((err.task_id.as_deref(), err.code.as_str()), (Some("t-2"), "task_terminal"));
    }
}
