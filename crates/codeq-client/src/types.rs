//! The API's JSON bodies (SPEC §1, §2), field for field.
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
    /// See [`Task::payload_as`].
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
    /// Any JSON (an object in practice).
    pub payload: serde_json::Value,
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
    /// A task for `command` with `payload` and every option left to the server.
    pub fn new(command: impl Into<String>, payload: serde_json::Value) -> Self {
        Self { command: command.into(), payload, ..Self::default() }
    }
}

/// What [`Client::create_task`](crate::Client::create_task) returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Created {
    /// The task (the existing one when `replayed`).
    pub task: Task,
    /// True when the idempotency key matched an existing task and nothing
    /// was created (header `Idempotent-Replayed: true`).
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
    pub result: Option<serde_json::Value>,
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
    pub fn completed(attempt: u32, result: serde_json::Value) -> Self {
        Self {
            status: ResultStatus::Completed,
            result: Some(result),
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// The worker's output, for completed tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
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

/// Depths of one command's queues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
}
