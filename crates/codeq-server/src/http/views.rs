//! The API's JSON forms of tasks and results: RFC 3339 times in the
//! configured offset, absent optional fields omitted.

use std::borrow::Cow;

use codeq_core::time::RFC3339_MAX_LEN;
use codeq_core::{Artifact, JsonText, ResultRecord, Task, TaskId, TaskStatus, Timestamp};
use serde::{Serialize, Serializer};
use time::UtcOffset;

use crate::auth::Principal;
use crate::service::outbound::{hide_credentials, origin_only};

/// A time printed as RFC 3339 in the configured offset, without allocating.
#[derive(Debug, Clone, Copy)]
pub struct Rfc3339(Timestamp, UtcOffset);

impl Rfc3339 {
    /// `at` in `offset`.
    pub fn new(at: Timestamp, offset: UtcOffset) -> Self {
        Self(at, offset)
    }
}

impl Serialize for Rfc3339 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut buffer = [0u8; RFC3339_MAX_LEN];
        serializer.serialize_str(self.0.rfc3339_in(self.1, &mut buffer))
    }
}

/// A task as the API shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskView<'a> {
    id: TaskId,
    command: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a str>,
    priority: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook: Option<Cow<'a, str>>,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    worker_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lease_until: Option<Rfc3339>,
    attempts: u32,
    max_attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    run_at: Option<Rfc3339>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idempotency_key: Option<&'a str>,
    created_at: Rfc3339,
    updated_at: Rfc3339,
    #[serde(skip_serializing_if = "Option::is_none")]
    completed_at: Option<Rfc3339>,
    #[serde(skip_serializing_if = "is_zero")]
    replays: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl<'a> TaskView<'a> {
    /// The view of `task` with times in `offset`.
    pub fn new(task: &'a Task, offset: UtcOffset) -> Self {
        let time = |at: Timestamp| Rfc3339(at, offset);
        let state = &task.state;
        let in_progress = state.status == TaskStatus::InProgress;
        Self {
            id: task.id,
            command: task.command.as_str(),
            payload: Some(&task.payload),
            priority: task.priority.get(),
            webhook: task.webhook.as_deref().map(hide_credentials),
            status: state.status.as_str(),
            worker_id: state.worker_id.as_deref().filter(|_| in_progress),
            lease_until: state.lease_until.filter(|_| in_progress).map(time),
            attempts: state.attempts,
            max_attempts: task.max_attempts,
            error: state.error.as_deref(),
            last_reason: state.last_reason.as_deref(),
            run_at: task.run_at.map(time),
            idempotency_key: task.idempotency_key.as_deref(),
            created_at: time(task.created_at),
            updated_at: time(state.updated_at),
            completed_at: state.completed_at.map(time),
            replays: state.replays,
        }
    }

    /// The view of `task` for `caller`: a caller other than the task's
    /// producer and admins sees only its webhook's origin, as a webhook's
    /// path or query often holds its secret (a Slack URL, `?token=`).
    pub fn seen_by(task: &'a Task, offset: UtcOffset, caller: &Principal) -> Self {
        let view = Self::new(task, offset);
        if caller.admin || caller.produced(task) {
            return view;
        }
        Self { webhook: task.webhook.as_deref().map(origin_only), ..view }
    }

    /// The same view without the payload (listings, unless asked).
    pub fn without_payload(self) -> Self {
        Self { payload: None, ..self }
    }
}

/// A result record as the API shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResultView<'a> {
    task_id: TaskId,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a JsonText>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "<[Artifact]>::is_empty")]
    artifacts: &'a [Artifact],
    completed_at: Rfc3339,
}

impl<'a> ResultView<'a> {
    /// The view of `record` with times in `offset`.
    pub fn new(record: &'a ResultRecord, offset: UtcOffset) -> Self {
        Self {
            task_id: record.task_id,
            status: record.status.as_str(),
            result: record.result.as_ref(),
            error: record.error.as_deref(),
            artifacts: &record.artifacts,
            completed_at: Rfc3339(record.completed_at, offset),
        }
    }
}

/// A result and the worker's next task (`claimNext`).
#[derive(Debug, Serialize)]
pub struct ResultAndNext<'a> {
    /// The stored result.
    #[serde(flatten)]
    pub result: ResultView<'a>,
    /// The task claimed next, when one was ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<TaskView<'a>>,
}

/// `{"tasks": [...]}`.
#[derive(Debug, Serialize)]
pub struct TasksBody<'a> {
    /// The tasks.
    pub tasks: Vec<TaskView<'a>>,
}

/// `{"results": [...]}` of a batch answer.
#[derive(Debug, Serialize)]
pub struct ResultsBody<T> {
    /// One item per request item, in order.
    pub results: Vec<T>,
}

/// `{"task": {...}, "result": {...}}`.
#[derive(Debug, Serialize)]
pub struct TaskWithResult<'a> {
    /// The task.
    pub task: TaskView<'a>,
    /// Its result.
    pub result: ResultView<'a>,
}

/// The `{error, code}` of one batch item (with its `taskId` when known).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorItem {
    /// The item's task, for result batches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// Message.
    pub error: String,
    /// Code.
    pub code: &'static str,
}

/// One item of a batch create answer (short-lived: the size difference
/// of the variants does not matter).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum CreatedItem<'a> {
    /// `{"task": {...}}`.
    Task {
        /// The created (or replayed) task.
        task: TaskView<'a>,
    },
    /// `{"error", "code"}`.
    Error(ErrorItem),
}

/// One item of a batch results answer.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ResultItem<'a> {
    /// `{"taskId", "result": {...}}`.
    Result {
        /// The task.
        #[serde(rename = "taskId")]
        task_id: String,
        /// Its stored result.
        result: ResultView<'a>,
    },
    /// `{"taskId", "error", "code"}`.
    Error(ErrorItem),
}
