//! `Task` and the small types it is made of.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::command::Command;
use crate::time::Timestamp;

/// A task's identity: a time-ordered UUID (v7) assigned by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(pub Uuid);

impl TaskId {
    /// A new time-ordered id.
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }

    /// The 16 bytes of the id, in time order when compared as bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// Rebuilds an id from its 16 bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(Uuid::from_bytes(bytes))
    }
}

impl FromStr for TaskId {
    type Err = uuid::Error;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(text).map(Self)
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

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
    /// The status as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::InProgress => "IN_PROGRESS",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
        }
    }

    /// Parses the status as the API spells it.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Pending, Self::InProgress, Self::Completed, Self::Failed, Self::Cancelled]
            .into_iter()
            .find(|status| status.as_str() == text)
    }

    /// `COMPLETED`, `FAILED` or `CANCELLED`: nothing more happens to the
    /// task (until a dead letter is replayed).
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

/// Claim priority, 0..=9, higher first.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Priority(u8);

impl Priority {
    /// The highest priority.
    pub const MAX: Priority = Priority(9);

    /// Clamps any integer into 0..=9, as the API promises.
    pub fn clamped(value: i64) -> Self {
        Self(value.clamp(0, 9) as u8)
    }

    /// The priority as a number.
    pub fn get(self) -> u8 {
        self.0
    }
}

/// The `error` of a task dead-lettered after its last delivery.
pub const MAX_ATTEMPTS_ERROR: &str = "MAX_ATTEMPTS";

/// The `lastReason` of a task whose lease ran out.
pub const LEASE_EXPIRED_REASON: &str = "LEASE_EXPIRED";

/// A task: what the producer asked for, fixed at creation, and its
/// [`TaskState`], which every transition replaces.
///
/// The API form (RFC 3339 times, payload as a JSON string) is made from it
/// at the edge. The serde form of each half is a storage form (a positional
/// binary encoding relies on the field order: a new field needs a new
/// record version).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Server-assigned id.
    pub id: TaskId,
    /// The queue it belongs to.
    pub command: Command,
    /// The producer's JSON payload, serialized compactly.
    pub payload: String,
    /// Claim priority.
    pub priority: Priority,
    /// Result callback URL.
    pub webhook: Option<String>,
    /// Delivery limit.
    pub max_attempts: u32,
    /// The producer's idempotency key, if any.
    pub idempotency_key: Option<String>,
    /// When the task becomes (or became) visible, if it was scheduled.
    pub run_at: Option<Timestamp>,
    /// Creation time.
    pub created_at: Timestamp,
    /// The `sub` of the producer that created it.
    pub created_by: String,
    /// Where the task is in its life cycle.
    pub state: TaskState,
}

/// The part of a task that transitions change (see [`crate::lifecycle`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskState {
    /// Life-cycle state.
    pub status: TaskStatus,
    /// Deliveries so far; incremented by every claim and only there (a
    /// replay does not reset it: it numbers deliveries for fencing).
    pub attempts: u32,
    /// The worker of the current delivery while in progress. Afterwards:
    /// on a terminal task the worker that submitted its result; on a
    /// pending task the worker whose lease lapsed (its result is still
    /// accepted until the next delivery); otherwise none. The API shows it
    /// only while the task is in progress.
    pub worker_id: Option<String>,
    /// When the current lease ends, while in progress.
    pub lease_until: Option<Timestamp>,
    /// When a pending task is (or was) ready to claim: orders the ready
    /// queue (FIFO within a priority) and the delayed set.
    pub visible_at: Timestamp,
    /// Terminal error (`MAX_ATTEMPTS` when dead-lettered).
    pub error: Option<String>,
    /// Last nack reason or `LEASE_EXPIRED`.
    pub last_reason: Option<String>,
    /// True when the task failed by exhausting its deliveries (it is in
    /// its command's dead-letter queue).
    pub dead_lettered: bool,
    /// Last change.
    pub updated_at: Timestamp,
    /// When the task became terminal.
    pub completed_at: Option<Timestamp>,
    /// How many times it was replayed from the dead-letter queue.
    pub replays: u32,
    /// `attempts` when its current round of deliveries began: 0, or its
    /// attempts at the last replay. A round has `max_attempts` deliveries
    /// ([`crate::lifecycle::delivery_limit`]).
    pub round_start: u32,
}

impl TaskState {
    /// The state of a new task, pending and visible at `visible_at`.
    pub fn new(visible_at: Timestamp, now: Timestamp) -> Self {
        Self {
            status: TaskStatus::Pending,
            attempts: 0,
            worker_id: None,
            lease_until: None,
            visible_at,
            error: None,
            last_reason: None,
            dead_lettered: false,
            updated_at: now,
            completed_at: None,
            replays: 0,
            round_start: 0,
        }
    }

    /// True when the task is pending but not yet visible at `now`.
    pub fn is_delayed(&self, now: Timestamp) -> bool {
        self.status == TaskStatus::Pending && self.visible_at > now
    }

    /// True when the task is pending and visible at `now`.
    pub fn is_ready(&self, now: Timestamp) -> bool {
        self.status == TaskStatus::Pending && self.visible_at <= now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_is_clamped_into_zero_to_nine() {
        assert_eq!(Priority::clamped(-3).get(), 0);
        assert_eq!(Priority::clamped(4).get(), 4);
        assert_eq!(Priority::clamped(42).get(), 9);
    }

    #[test]
    fn task_ids_are_time_ordered_and_round_trip_as_text() {
        let first = TaskId::generate();
        let second = TaskId::generate();
        assert!(first < second);
        assert_eq!(first.to_string().parse::<TaskId>().unwrap(), first);
        assert_eq!(TaskId::from_bytes(*first.as_bytes()), first);
    }

    #[test]
    fn only_completed_and_failed_are_terminal() {
        assert!(!TaskStatus::Pending.is_terminal());
        assert!(!TaskStatus::InProgress.is_terminal());
        assert!(TaskStatus::Completed.is_terminal());
        assert!(TaskStatus::Failed.is_terminal());
    }
}
