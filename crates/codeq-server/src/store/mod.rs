//! The `Store` trait: every state transition of a task as one atomic call,
//! and the backends that implement it.
//!
//! A store holds no policy: the rules of each transition are the pure
//! functions of `codeq_core::lifecycle`, and limits, defaults, lease ends
//! and retry delays are decided by the service layer and passed in. Each
//! transition happens completely or not at all. Every answer — a change,
//! a refusal, a replay, a read — is given only once the state it shows is
//! durable under the backend's durability setting. Calls take `now` so
//! that tests can drive time.
//!
//! Backends: [`embedded`] (in-memory state over codeQ's own journal) and
//! [`redis`] (one Lua script per transition, shared by several replicas).
//! Both pass the same conformance suite (`tests/store_conformance.rs`).

pub mod embedded;
mod engine_stats;
pub mod redis;
mod signals;

use async_trait::async_trait;
use codeq_core::lifecycle::Submission;
use codeq_core::{
    Command, QueueSettings, QueueStats, ResultRecord, Subscription, Task, TaskId, TaskState,
    TaskStatus, Timestamp,
};
use tokio_util::sync::CancellationToken;

pub use codeq_core::lifecycle::{Fence, Retried, TransitionError};
pub use engine_stats::{EngineStats, HistogramSnapshot};
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

/// What a result stored with the claim of the worker's next task came to
/// ([`Store::complete_and_claim`]).
#[derive(Debug)]
pub struct CompletedAndNext {
    /// The result's outcome, as [`Store::complete`] answers it.
    pub outcome: Result<Completed, TransitionError>,
    /// The tasks claimed after it: empty when none was ready or the
    /// result was refused; an error when the claim alone failed.
    pub next: StoreResult<Vec<Task>>,
}

/// How many commands a store knows at most, unless configured otherwise
/// (`maxCommands`).
pub const DEFAULT_MAX_COMMANDS: usize = 1000;

/// The outcome of creating one task.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    /// A new task was stored.
    New(Task),
    /// A live task already held the idempotency key; nothing was created.
    Existing(Task),
    /// Not stored: its command is new and the store knows as many commands
    /// as it may (this many: `maxCommands`).
    TooManyCommands(usize),
}

impl Created {
    /// The created task, or the one holding its idempotency key.
    pub fn task(&self) -> Option<&Task> {
        match self {
            Self::New(task) | Self::Existing(task) => Some(task),
            Self::TooManyCommands(_) => None,
        }
    }
}

/// One result submission.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The task.
    pub task_id: TaskId,
    /// The submitting worker's `sub`.
    pub worker_id: String,
    /// See [`Fence::attempt`].
    pub attempt: Option<u32>,
    /// What the worker reports.
    pub submission: Submission,
}

impl Completion {
    /// The submitter as a fence.
    pub fn fence(&self) -> Fence<'_> {
        Fence { worker_id: &self.worker_id, attempt: self.attempt }
    }
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

/// An in-progress task whose lease has ended (found by
/// [`Store::lease_ends`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseEnd {
    /// The task.
    pub task_id: TaskId,
    /// Its delivery, which the expiry must still find.
    pub attempts: u32,
    /// Which delivery of its round that is
    /// ([`lifecycle::attempt_in_round`](codeq_core::lifecycle::attempt_in_round)):
    /// what the backoff grows with.
    pub attempt_in_round: u32,
}

/// An expiry the service decided: the delay before the next delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    /// The task and delivery (skipped when the task has moved on).
    pub lease: LeaseEnd,
    /// Seconds before the next delivery (unused when dead-lettered).
    pub delay_seconds: u64,
}

/// A task whose lease ran out, and what became of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Expired {
    /// The task.
    pub task_id: TaskId,
    /// Its command.
    pub command: Command,
    /// Requeued with backoff or dead-lettered.
    pub outcome: Retried,
}

/// A result callback due for an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueCallback {
    /// The task whose result it carries.
    pub task_id: TaskId,
    /// Its delivery series (`X-CodeQ-Delivery`).
    pub delivery: uuid::Uuid,
    /// Attempts made so far.
    pub attempts: u32,
}

/// A result callback still owed: not yet delivered, not given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwedCallback {
    /// Its delivery series (`X-CodeQ-Delivery`).
    pub delivery: uuid::Uuid,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due.
    pub next_at: Timestamp,
}

/// How a result callback series ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackOutcome {
    /// The receiver answered 2xx.
    Delivered,
    /// Every attempt failed: given up.
    GaveUp,
    /// Its URL was refused when its turn came (a private address, say):
    /// not sent then.
    Refused,
}

impl CallbackOutcome {
    /// The name the API shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::GaveUp => "gave_up",
            Self::Refused => "refused",
        }
    }

    /// The outcome named `name` ([`CallbackOutcome::as_str`]).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|outcome| outcome.as_str() == name)
    }

    /// Every outcome.
    pub const ALL: [Self; 3] = [Self::Delivered, Self::GaveUp, Self::Refused];
}

/// A result callback series that ended, as kept until its task is
/// deleted (or owes a new series).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettledCallback {
    /// How it ended.
    pub outcome: CallbackOutcome,
    /// Attempts made.
    pub attempts: u32,
}

/// A dead letter's place in its command's dead-letter queue: when it
/// failed, then its id (pages are newest first).
pub type DeadLetterKey = (Timestamp, TaskId);

/// Which dead letters of a command a page or a bulk action takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterFilter {
    /// Only those that failed before this time.
    pub before: Option<Timestamp>,
    /// Only those that failed after this time.
    pub after: Option<Timestamp>,
    /// Only those whose error or last nack reason contains this text.
    pub text: Option<String>,
}

/// A failure of the backend itself: the state is unknown or unreachable.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The transition was refused; nothing changed.
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// The backend cannot be reached or has stopped taking writes after a
    /// failure (the state on disk is intact; a restart recovers it). The
    /// outcome of the call is unknown.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The change was not stored: the storage is full. The embedded
    /// backend (a full disk) then stops taking writes, as for
    /// [`StoreError::Unavailable`]; Redis (at its `maxmemory`) takes them
    /// again once it has room.
    #[error("storage is full: {0}")]
    DiskFull(String),
    /// The change is too large to store as one (a batch of very large
    /// results); nothing was done.
    #[error("{0}")]
    TooLarge(String),
    /// Too many calls are in flight; nothing was done (retry shortly).
    #[error("too many requests in flight")]
    Busy,
    /// The call names a new command and the store knows as many commands
    /// as it may (the bound); nothing was done.
    #[error("the store knows {0} commands, as many as it may (maxCommands)")]
    TooManyCommands(usize),
    /// A stored record could not be read back.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// Shorthand for store results.
pub type StoreResult<T> = Result<T, StoreError>;

/// Durable task state. Every method is one atomic transition (or a read)
/// and answers only once what it shows is durable.
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

    /// Extends the lease of an in-progress task held by `fence` whose
    /// lease has not ended; returns its new state.
    async fn heartbeat(
        &self,
        id: TaskId,
        fence: Fence<'_>,
        lease_until: Timestamp,
        now: Timestamp,
    ) -> StoreResult<TaskState>;

    /// Returns an in-progress task to ready at once; attempts unchanged.
    async fn abandon(&self, id: TaskId, fence: Fence<'_>, now: Timestamp) -> StoreResult<()>;

    /// Requeues an in-progress task after `delay_seconds`, or dead-letters
    /// it when it has used `maxAttempts` deliveries.
    async fn nack(
        &self,
        id: TaskId,
        fence: Fence<'_>,
        delay_seconds: u64,
        reason: Option<String>,
        now: Timestamp,
    ) -> StoreResult<Retried>;

    /// Makes tasks terminal with their results, each on its own: one item's
    /// refusal does not affect the others.
    async fn complete(
        &self,
        items: Vec<Completion>,
        now: Timestamp,
    ) -> StoreResult<Vec<Result<Completed, TransitionError>>>;

    /// Stores one result and, when it is accepted (stored, or a repeat of
    /// the stored one), claims for `next` after it, as [`Store::complete`]
    /// then [`Store::claim`] would, both durable before the answer: a
    /// result with `claimNext`. A claim that fails leaves the result
    /// stored.
    async fn complete_and_claim(
        &self,
        item: Completion,
        next: &ClaimSpec,
        now: Timestamp,
    ) -> StoreResult<CompletedAndNext>;

    /// Reads a task.
    async fn get_task(&self, id: TaskId) -> StoreResult<Option<Task>>;

    /// Reads a task's state (no body).
    async fn get_state(&self, id: TaskId) -> StoreResult<Option<TaskState>>;

    /// Reads a task's result record.
    async fn get_result(&self, id: TaskId) -> StoreResult<Option<ResultRecord>>;

    /// Makes delayed tasks visible at `now` ready (at most `limit`).
    async fn promote_due(&self, now: Timestamp, limit: usize) -> StoreResult<usize>;

    /// In-progress tasks whose lease ended before `now` (at most `limit`).
    async fn lease_ends(&self, now: Timestamp, limit: usize) -> StoreResult<Vec<LeaseEnd>>;

    /// Requeues or dead-letters each task of `expiries` that is still on
    /// that delivery with its lease ended before `now`.
    async fn expire(&self, expiries: Vec<Expiry>, now: Timestamp) -> StoreResult<Vec<Expired>>;

    /// Result callbacks due at `now` (at most `limit`), once their records
    /// are durable: a callback is owed by the transition that made its task
    /// terminal, written with it.
    async fn callbacks_due(&self, now: Timestamp, limit: usize) -> StoreResult<Vec<DueCallback>>;

    /// Result callbacks due at `now` (at most `limit`), taken for delivery
    /// until `lease_until`: a backend shared by several processes answers
    /// none of them again, to any of them, before then (unless retried or
    /// ended), so two replicas never send the same callback at once; one
    /// that crashed mid-delivery is sent again after the lease. A backend
    /// of one process (the embedded one) answers as
    /// [`Store::callbacks_due`]: its dispatcher keeps track of what it is
    /// sending.
    async fn take_callbacks(
        &self,
        now: Timestamp,
        limit: usize,
        lease_until: Timestamp,
    ) -> StoreResult<Vec<DueCallback>> {
        let _ = lease_until;
        self.callbacks_due(now, limit).await
    }

    /// Whether [`Store::take_callbacks`] leases what it answers (a backend
    /// shared by several processes): it then never answers a callback
    /// being delivered, so a dispatcher asks only for as many as it can
    /// start — any more would sit leased, unsent, until their lease ends.
    fn leases_callbacks(&self) -> bool {
        false
    }

    /// Ends a callback (delivered, or given up): retention may then delete
    /// its task. `settled`, when given, is kept for
    /// [`Store::callback_settled`]. Nothing when `delivery` is no longer
    /// the one owed.
    async fn callback_done(
        &self,
        task_id: TaskId,
        delivery: uuid::Uuid,
        settled: Option<SettledCallback>,
    ) -> StoreResult<()>;

    /// Schedules the next attempt of a callback, after `attempts` made.
    async fn callback_retry(
        &self,
        task_id: TaskId,
        delivery: uuid::Uuid,
        attempts: u32,
        next_at: Timestamp,
    ) -> StoreResult<()>;

    /// When the next owed callback is due, and how many are owed.
    fn callbacks_pending(&self) -> (Option<Timestamp>, usize);

    /// The result callback task `id` owes, while it owes one: from the
    /// transition that ended the task until the callback is delivered or
    /// given up.
    async fn callback_owed(&self, id: TaskId) -> StoreResult<Option<OwedCallback>>;

    /// How task `id`'s last callback series ended, when one ended with an
    /// outcome kept and no new series is owed since (a replay forgets it).
    async fn callback_settled(&self, id: TaskId) -> StoreResult<Option<SettledCallback>>;

    /// Cancels tasks, each on its own: a pending, delayed or in-progress
    /// task becomes `CANCELLED` with a result record (and a callback when
    /// it has a webhook); a terminal one is refused.
    async fn cancel(
        &self,
        ids: Vec<TaskId>,
        reason: Option<String>,
        now: Timestamp,
    ) -> StoreResult<Vec<Result<TaskState, TransitionError>>>;

    /// The settings of `command` (the defaults when never set).
    async fn queue_settings(&self, command: &Command) -> StoreResult<QueueSettings>;

    /// Replaces the settings of `command`; a parked claim they now let
    /// through is woken. The settings before.
    async fn set_queue_settings(
        &self,
        command: &Command,
        settings: QueueSettings,
        now: Timestamp,
    ) -> StoreResult<QueueSettings>;

    /// Pauses or resumes `command`, its limits as they are, in one step (a
    /// settings write in between is not undone); the settings before.
    async fn set_paused(
        &self,
        command: &Command,
        paused: bool,
        now: Timestamp,
    ) -> StoreResult<QueueSettings>;

    /// When a rate limit next lets a ready task of `filter`'s commands
    /// through, when rate limits are what hold them back now (a claim that
    /// found nothing waits until then).
    fn next_claimable_at(&self, filter: &CommandFilter, now: Timestamp) -> Option<Timestamp>;

    /// Dead letters of `command`, newest first, after `cursor`, that pass
    /// `filter`; at most `limit`.
    async fn dead_letters(
        &self,
        command: &Command,
        filter: &DeadLetterFilter,
        cursor: Option<DeadLetterKey>,
        limit: usize,
    ) -> StoreResult<Vec<DeadLetterKey>>;

    /// Sends dead letters of `command` round again, each visible at the
    /// time paired with it, with a new round of deliveries begun
    /// ([`codeq_core::lifecycle::replay`]), its result record deleted, a
    /// callback still owed dropped, and its replays counted; returns those
    /// replayed (ids that are not dead letters of `command` are skipped).
    async fn replay(
        &self,
        command: &Command,
        items: Vec<(TaskId, Timestamp)>,
        now: Timestamp,
    ) -> StoreResult<Vec<TaskId>>;

    /// Deletes dead letters of `command` among `ids`, with their results
    /// and idempotency keys; returns those deleted (the caller removes
    /// their artifacts).
    async fn purge(&self, command: &Command, ids: Vec<TaskId>) -> StoreResult<Vec<TaskId>>;

    /// Task ids newest first (by creation), of `command` and `status`
    /// when given, created before the task `before`; at most `limit`.
    async fn list_tasks(
        &self,
        command: Option<&Command>,
        status: Option<TaskStatus>,
        before: Option<TaskId>,
        limit: usize,
    ) -> StoreResult<Vec<TaskId>>;

    /// Stores a subscription, new or renewed (same id).
    async fn put_subscription(&self, subscription: Subscription) -> StoreResult<()>;

    /// Reads a subscription (a lapsed one too, until removed).
    async fn get_subscription(&self, id: uuid::Uuid) -> StoreResult<Option<Subscription>>;

    /// Deletes a subscription; false when there was none.
    async fn delete_subscription(&self, id: uuid::Uuid) -> StoreResult<bool>;

    /// Every subscription (lapsed ones too, until removed).
    async fn subscriptions(&self) -> StoreResult<Vec<Subscription>>;

    /// Removes the subscriptions lapsed at `now`; how many.
    async fn remove_lapsed_subscriptions(&self, now: Timestamp) -> StoreResult<usize>;

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

    /// `Ok` while the backend answers and takes writes (for `/healthz`
    /// and `/readyz`).
    fn health(&self) -> StoreResult<()>;

    /// `Ok` unless the backend has stopped for good (for `/healthz`, the
    /// liveness probe: a restart is what would help). By default the same
    /// as [`Store::health`]; a backend that waits out an outage by itself
    /// (Redis) stays alive while unreachable.
    fn alive(&self) -> StoreResult<()> {
        self.health()
    }

    /// Fires when the backend has stopped for good (a failed write or
    /// sync): the process should exit and recover on restart.
    fn failed(&self) -> CancellationToken;

    /// Makes everything written so far durable and stops taking writes.
    async fn close(&self) -> StoreResult<()>;

    /// The engine's own counters (commit rounds, fsyncs, watermark), for
    /// the metrics; `None` for a backend without such an engine.
    fn engine_stats(&self) -> Option<EngineStats> {
        None
    }

    /// The command of a live task, read from memory without I/O (labels
    /// the metrics of results and dead letters); `None` when unknown or
    /// when the backend cannot tell without a read.
    fn command_of(&self, _id: TaskId) -> Option<Command> {
        None
    }
}
