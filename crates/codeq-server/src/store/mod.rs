//! The `Store` trait: every state transition of a task as one atomic call,
//! and the backends that implement it.
//!
//! A store holds no policy: limits, defaults and backoff settings are
//! decided by the service layer and passed in. Each transition happens
//! completely or not at all, and returns only once it is durable under the
//! backend's durability setting. Calls take `now` so that tests can drive
//! time.
//!
//! Backends: [`embedded`] (in-memory indexes over a durable on-disk store).
//! A Redis backend plugs in behind the same trait and passes the same
//! conformance suite (`tests/store_conformance.rs`).

pub mod embedded;
mod signals;

use async_trait::async_trait;
use codeq_core::{
    BackoffConfig, Command, QueueStats, ResultRecord, Task, TaskId, TaskStatus, Timestamp,
};

pub use signals::Signals;

/// Which commands a claim may take from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandFilter {
    /// Every command.
    All,
    /// Only these (non-empty).
    Only(Vec<Command>),
}

impl CommandFilter {
    /// True when a task of `command` may be claimed through this filter.
    pub fn allows(&self, command: &Command) -> bool {
        match self {
            Self::All => true,
            Self::Only(commands) => commands.contains(command),
        }
    }
}

/// A claim request, as the store sees it.
#[derive(Debug, Clone)]
pub struct ClaimSpec {
    /// Where to take tasks from.
    pub commands: CommandFilter,
    /// The claiming worker's `sub`.
    pub worker_id: String,
    /// When the lease of each claimed task ends.
    pub lease_until: Timestamp,
    /// How many tasks at most (≥ 1).
    pub count: usize,
}

/// Who asks for a transition on a task, and which delivery they hold.
#[derive(Debug, Clone, Copy)]
pub struct Fence<'a> {
    /// The caller's `sub`; must equal the task's `workerId`.
    pub worker_id: &'a str,
    /// The delivery (`attempts`) the caller believes it holds; when given
    /// and different from the task's, the call is refused as stale.
    pub attempt: Option<u32>,
}

/// How long a requeued task waits before its next delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDelay {
    /// A delay chosen by the caller (already capped by the service).
    Seconds(u64),
    /// The configured backoff, applied to the task's attempts so far.
    Backoff(BackoffConfig),
}

/// The outcome of creating one task.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    /// A new task was stored.
    New(Task),
    /// A live task already held the idempotency key; nothing was created.
    Existing(Task),
}

/// The outcome of a nack (or an expired lease).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nacked {
    /// Back to the delayed set; visible again after this many seconds.
    Requeued {
        /// The delay applied.
        delay_seconds: u64,
    },
    /// The task had used all its deliveries and is now in the DLQ.
    DeadLettered,
}

/// One result submission.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The task.
    pub task_id: TaskId,
    /// The submitting worker's `sub` and delivery.
    pub worker_id: String,
    /// See [`Fence::attempt`].
    pub attempt: Option<u32>,
    /// The record to store (its `completed_at` is the transition's time).
    pub record: ResultRecord,
}

/// The outcome of a result submission.
#[derive(Debug, Clone, PartialEq)]
pub enum Completed {
    /// The task became terminal with this record.
    Stored(ResultRecord),
    /// The same worker repeated an accepted submission; nothing changed.
    Repeated(ResultRecord),
}

impl Completed {
    /// The stored record either way.
    pub fn record(&self) -> &ResultRecord {
        match self {
            Self::Stored(record) | Self::Repeated(record) => record,
        }
    }
}

/// A task whose lease ran out, and what became of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Expired {
    /// The task.
    pub task_id: TaskId,
    /// Its command.
    pub command: Command,
    /// Requeued with backoff or dead-lettered.
    pub outcome: Nacked,
}

/// Why a transition on one task was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// No such task.
    #[error("task not found")]
    NotFound,
    /// The task is not in progress (it is pending or terminal).
    #[error("task is {}, not IN_PROGRESS", .0.as_str())]
    NotInProgress(TaskStatus),
    /// The caller is not the worker holding the task.
    #[error("task is held by another worker")]
    NotOwner,
    /// The caller's delivery has ended (lease expired, task re-delivered).
    #[error("attempt {given} is stale: the task is on delivery {current}")]
    StaleAttempt {
        /// The attempt the caller sent.
        given: u32,
        /// The task's current attempts.
        current: u32,
    },
    /// The task is terminal with another outcome.
    #[error("task already has a result with another outcome")]
    ResultConflict,
}

/// A failure of the backend itself: the state is unknown or unreachable.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The transition was refused; nothing changed.
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// The backend cannot be reached or has stopped taking writes after a
    /// failure (the state on disk is intact; a restart recovers it).
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A stored record could not be read back.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// Checks that `task` is in progress and held by `fence`, in the order of
/// the API: state (409), ownership (403), delivery (409). Every backend
/// applies it inside its transition; the service may check early.
pub fn check_held(task: &Task, fence: Fence<'_>) -> Result<(), TransitionError> {
    if task.status != TaskStatus::InProgress {
        return Err(TransitionError::NotInProgress(task.status));
    }
    if task.worker_id.as_deref() != Some(fence.worker_id) {
        return Err(TransitionError::NotOwner);
    }
    match fence.attempt {
        Some(given) if given != task.attempts => {
            Err(TransitionError::StaleAttempt { given, current: task.attempts })
        }
        _ => Ok(()),
    }
}

/// Shorthand for store results.
pub type StoreResult<T> = Result<T, StoreError>;

/// Durable task state. Every method is one atomic transition (or a read)
/// and, for writes, returns only after the change is durable.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores new tasks (status `PENDING`, visible at `visible_at`), in
    /// order. A task whose idempotency key is held by a live task is not
    /// stored; the holder is returned instead.
    async fn create(&self, tasks: Vec<Task>) -> StoreResult<Vec<Created>>;

    /// Takes up to `spec.count` ready tasks (highest priority first, then
    /// earliest visible), marks them `IN_PROGRESS` for the worker under a
    /// lease and counts a delivery. Empty when nothing is ready.
    async fn claim(&self, spec: &ClaimSpec, now: Timestamp) -> StoreResult<Vec<Task>>;

    /// Extends the lease of an in-progress task held by `fence`.
    async fn heartbeat(
        &self,
        id: TaskId,
        fence: Fence<'_>,
        lease_until: Timestamp,
        now: Timestamp,
    ) -> StoreResult<Task>;

    /// Returns an in-progress task to ready at once; attempts unchanged.
    async fn abandon(&self, id: TaskId, fence: Fence<'_>, now: Timestamp) -> StoreResult<Task>;

    /// Requeues an in-progress task after a delay, or dead-letters it when
    /// it has used `maxAttempts` deliveries.
    async fn nack(
        &self,
        id: TaskId,
        fence: Fence<'_>,
        delay: RetryDelay,
        reason: Option<String>,
        now: Timestamp,
    ) -> StoreResult<Nacked>;

    /// Makes tasks terminal with their results, each on its own: one item's
    /// refusal does not affect the others.
    async fn complete(
        &self,
        items: Vec<Completion>,
        now: Timestamp,
    ) -> StoreResult<Vec<Result<Completed, TransitionError>>>;

    /// Reads a task.
    async fn get_task(&self, id: TaskId) -> StoreResult<Option<Task>>;

    /// Reads a task's result record.
    async fn get_result(&self, id: TaskId) -> StoreResult<Option<ResultRecord>>;

    /// Makes delayed tasks visible at `now` ready (at most `limit`).
    async fn promote_due(&self, now: Timestamp, limit: usize) -> StoreResult<usize>;

    /// Requeues (with `backoff`) or dead-letters in-progress tasks whose
    /// lease ended before `now` (at most `limit`).
    async fn expire_leases(
        &self,
        now: Timestamp,
        backoff: BackoffConfig,
        limit: usize,
    ) -> StoreResult<Vec<Expired>>;

    /// Depths of one command's queues (zeros when never used).
    async fn queue_stats(&self, command: &Command) -> StoreResult<QueueStats>;

    /// Depths of every command ever used.
    async fn all_queue_stats(&self) -> StoreResult<Vec<QueueStats>>;

    /// Deletes up to `limit` terminal tasks that became terminal at or
    /// before `completed_before`, with their results and idempotency keys.
    /// Returns the deleted ids (the caller removes their artifacts).
    async fn cleanup(&self, completed_before: Timestamp, limit: usize) -> StoreResult<Vec<TaskId>>;

    /// The earliest instant at which a delayed task becomes due or a lease
    /// ends, when the backend knows it (the reaper sleeps until then).
    fn next_deadline(&self) -> Option<Timestamp>;

    /// Checks the backend answers (for `/readyz`).
    async fn ping(&self) -> StoreResult<()>;

    /// Makes everything written so far durable and stops taking writes.
    async fn close(&self) -> StoreResult<()>;
}
