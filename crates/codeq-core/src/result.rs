//! What a worker reports when a task ends.

use serde::{Deserialize, Serialize};

use crate::json::JsonText;
use crate::task::TaskId;
use crate::time::Timestamp;

/// The outcome a worker reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ResultStatus {
    /// The work succeeded; `result` holds its output.
    Completed,
    /// The work failed for good; `error` says why.
    Failed,
    /// The task was cancelled; `error` holds the reason given, if any.
    Cancelled,
}

impl ResultStatus {
    /// The status as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
        }
    }
}

/// A file produced by a task, referenced by URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    /// A plain file name.
    pub name: String,
    /// Where the bytes are.
    pub url: String,
    /// Media type, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

/// The stored outcome of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResultRecord {
    /// The task this result belongs to.
    pub task_id: TaskId,
    /// Completed or failed.
    pub status: ResultStatus,
    /// The worker's output (a JSON object), for completed tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<JsonText>,
    /// Why the task failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Files the worker attached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<Artifact>,
    /// The `sub` of the worker that submitted it (empty for dead letters).
    #[serde(default)]
    pub worker_id: String,
    /// When the task became terminal.
    pub completed_at: Timestamp,
}
