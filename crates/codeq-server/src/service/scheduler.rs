//! The scheduler: every task transition a producer or worker asks for.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use codeq_core::{
    Command, Priority, ResultRecord, ResultStatus, Task, TaskId, TaskState, Timestamp, lifecycle,
};
use tokio::sync::{Notify, Semaphore, SemaphorePermit, futures::Notified};
use tokio_util::sync::CancellationToken;

use super::Policy;
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::store::{
    ClaimSpec, CommandFilter, Completed, CompletedAndNext, Completion, Created, Fence, Retried,
    Signals, Store, StoreError, StoreResult, TransitionError,
};

/// A validated create request.
#[derive(Debug, Clone)]
pub struct NewTask {
    /// The queue.
    pub command: Command,
    /// The payload, serialized compactly.
    pub payload: String,
    /// Claim priority.
    pub priority: Priority,
    /// Delivery limit, when the producer set one.
    pub max_attempts: Option<u32>,
    /// Result callback URL.
    pub webhook: Option<String>,
    /// Idempotency key.
    pub idempotency_key: Option<String>,
    /// When to make the task visible.
    pub schedule: Schedule,
    /// The creating producer's `sub`.
    pub created_by: String,
}

/// When a new task becomes visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// At once.
    Now,
    /// At an instant (`runAt`; in the past means now).
    At(Timestamp),
    /// After a delay (`delaySeconds`).
    After(u64),
}

/// A validated claim request.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    /// Where to take tasks from.
    pub commands: CommandFilter,
    /// The worker's `sub`.
    pub worker_id: String,
    /// Requested lease (default and cap applied here).
    pub lease_seconds: Option<u64>,
    /// Long-poll wait (0 = answer at once).
    pub wait: Duration,
    /// How many tasks at most.
    pub count: usize,
}

/// The task life cycle. Cheap to share behind an `Arc`.
pub struct Scheduler {
    store: Arc<dyn Store>,
    signals: Arc<Signals>,
    clock: Arc<dyn Clock>,
    policy: Policy,
    shutdown: CancellationToken,
    long_polls_waiting: AtomicUsize,
    /// Storage calls in flight (`maxInFlightCalls`).
    admission: Semaphore,
    /// Counts the transitions that happen.
    metrics: Arc<Metrics>,
}

impl Scheduler {
    /// A scheduler over `store`. Long polls end when `shutdown` fires.
    pub fn new(
        store: Arc<dyn Store>,
        signals: Arc<Signals>,
        clock: Arc<dyn Clock>,
        policy: Policy,
        shutdown: CancellationToken,
    ) -> Self {
        let admission = Semaphore::new(policy.max_in_flight_calls);
        Self {
            store,
            signals,
            clock,
            policy,
            shutdown,
            long_polls_waiting: AtomicUsize::new(0),
            admission,
            metrics: Arc::new(Metrics::new()),
        }
    }

    /// Counts transitions in `metrics` (by default, in metrics of its own).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// A place among the storage calls in flight, or `Busy` at once when
    /// all are taken (shedding load beats queueing without end).
    fn admit(&self) -> StoreResult<SemaphorePermit<'_>> {
        self.admission.try_acquire().map_err(|_| StoreError::Busy)
    }

    /// How many commands claims hold a wake-up notifier for (at most a
    /// sweep's worth more than those waiting).
    pub fn command_notifiers(&self) -> usize {
        self.signals.command_notifiers()
    }

    /// Whether the server is stopping (long polls answer, nothing new
    /// waits).
    pub fn is_stopping(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// How many claims are parked in a long poll right now.
    pub fn long_polls_waiting(&self) -> usize {
        self.long_polls_waiting.load(Ordering::Relaxed)
    }

    /// The limits in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The clock in use.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The store underneath (reads and admin calls).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Creates tasks, in order, as one durable write.
    pub async fn create(&self, requests: Vec<NewTask>) -> StoreResult<Vec<Created>> {
        let _admitted = self.admit()?;
        let now = self.clock.now();
        let tasks = requests.into_iter().map(|request| self.new_task(request, now)).collect();
        let created = self.store.create(tasks).await?;
        for task in &created {
            if let Created::New(task) = task {
                self.metrics.task_created(&task.command);
                tracing::debug!(
                    task_id = %task.id,
                    command = %task.command,
                    visible_at = %task.state.visible_at,
                    "task created"
                );
            }
        }
        Ok(created)
    }

    fn new_task(&self, request: NewTask, now: Timestamp) -> Task {
        let (run_at, visible_at) = match request.schedule {
            Schedule::Now => (None, now),
            Schedule::At(at) => (Some(at), at.max(now)),
            Schedule::After(0) => (None, now),
            Schedule::After(seconds) => {
                let at = now.plus_seconds(seconds);
                (Some(at), at)
            }
        };
        Task {
            id: TaskId::generate(),
            command: request.command,
            payload: request.payload,
            priority: request.priority,
            webhook: request.webhook,
            max_attempts: request.max_attempts.unwrap_or(self.policy.max_attempts_default),
            idempotency_key: request.idempotency_key,
            run_at,
            created_at: now,
            created_by: request.created_by,
            state: TaskState::new(visible_at, now),
        }
    }

    fn lease_until(&self, requested: Option<u64>, now: Timestamp) -> Timestamp {
        let seconds = requested
            .unwrap_or(self.policy.default_lease_seconds)
            .min(self.policy.max_lease_seconds);
        now.plus_seconds(seconds)
    }

    /// Claims up to `request.count` tasks, waiting up to `request.wait`
    /// for one to become ready. Empty when none came in time or the server
    /// is shutting down.
    pub async fn claim(&self, request: &ClaimRequest) -> StoreResult<Vec<Task>> {
        let deadline = tokio::time::Instant::now() + request.wait;
        let notifiers = self.notifiers(&request.commands);
        let mut woken_by: Option<usize> = None;
        let mut counted_held_back = false;
        loop {
            // Register interest before looking, so a task created between
            // the look and the wait still wakes us.
            let mut waits: Vec<Pin<Box<Notified<'_>>>> =
                notifiers.iter().map(|n| Box::pin(n.notified())).collect();
            for wait in &mut waits {
                wait.as_mut().enable();
            }
            let now = self.clock.now();
            let spec = self.claim_spec(request, now);
            let claimed = {
                let _admitted = self.admit().inspect_err(|_| {
                    // Refused a place after a wake-up: another waiter may
                    // take the task this one was woken for.
                    if let Some(index) = woken_by {
                        notifiers[index].notify_one();
                    }
                })?;
                self.store.claim(&spec, now).await?
            };
            if !claimed.is_empty() {
                self.count_claimed(&claimed);
                // Pass the wake-up on: another ready task may be waiting
                // for the waiter this one took it from.
                if let Some(index) = woken_by {
                    notifiers[index].notify_one();
                }
                return Ok(claimed);
            }
            // A rate limit that holds ready tasks back: wait for its next
            // token rather than answer 204 early.
            let next_token = self.next_token(&request.commands, now, &mut counted_held_back);
            if request.wait.is_zero() || self.shutdown.is_cancelled() {
                return Ok(claimed);
            }
            let _parked = Parked::new(&self.long_polls_waiting);
            let token = async {
                match next_token {
                    Some(at) => self.clock.sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                index = first_of(&mut waits) => woken_by = Some(index),
                () = token => woken_by = None,
                () = tokio::time::sleep_until(deadline) => return Ok(Vec::new()),
                () = self.shutdown.cancelled() => return Ok(Vec::new()),
            }
        }
    }

    fn claim_spec(&self, request: &ClaimRequest, now: Timestamp) -> ClaimSpec {
        ClaimSpec {
            commands: request.commands.clone(),
            worker_id: request.worker_id.clone(),
            lease_until: self.lease_until(request.lease_seconds, now),
            count: request.count,
        }
    }

    fn count_claimed(&self, claimed: &[Task]) {
        for task in claimed {
            self.metrics.tasks_claimed(&task.command, 1);
            tracing::debug!(
                task_id = %task.id,
                command = %task.command,
                worker = task.state.worker_id.as_deref().unwrap_or_default(),
                attempt = task.state.attempts,
                "task claimed"
            );
        }
    }

    /// When a rate limit that holds ready tasks of `commands` back gives
    /// its next token; the claim is counted as held back once, however
    /// often it looks again (`counted` says whether it was).
    fn next_token(
        &self,
        commands: &CommandFilter,
        now: Timestamp,
        counted: &mut bool,
    ) -> Option<Timestamp> {
        let next_token = self.store.next_claimable_at(commands, now);
        if next_token.is_some() && !*counted {
            self.metrics.claim_rate_limited();
            *counted = true;
        }
        next_token
    }

    fn notifiers(&self, commands: &CommandFilter) -> Vec<Arc<Notify>> {
        match commands {
            CommandFilter::All => vec![self.signals.any_command()],
            CommandFilter::Only(commands) => {
                commands.iter().map(|command| self.signals.command(command)).collect()
            }
        }
    }

    /// Extends the lease of a task the worker holds; its new state.
    pub async fn heartbeat(
        &self,
        id: TaskId,
        fence: Fence<'_>,
        extend_seconds: Option<u64>,
    ) -> StoreResult<TaskState> {
        let _admitted = self.admit()?;
        let now = self.clock.now();
        let state =
            self.store.heartbeat(id, fence, self.lease_until(extend_seconds, now), now).await?;
        if let Some(until) = state.lease_until {
            tracing::debug!(task_id = %id, lease_until = %until, "lease extended");
        }
        Ok(state)
    }

    /// Gives a held task back to the ready queue at once.
    pub async fn abandon(&self, id: TaskId, fence: Fence<'_>) -> StoreResult<()> {
        let _admitted = self.admit()?;
        self.store.abandon(id, fence, self.clock.now()).await?;
        tracing::debug!(task_id = %id, "task abandoned, ready again");
        Ok(())
    }

    /// Retries a held task later (the worker's delay capped by
    /// `backoffMaxSeconds`, else the backoff policy), or dead-letters it.
    ///
    /// The backoff grows with the delivery's place in its round (a replay
    /// starts a new round), so without a requested delay the task is read
    /// first; so it is when the worker did not name its delivery, and the
    /// nack is then fenced on the one read (repeated if the task moved on
    /// in between).
    pub async fn nack(
        &self,
        id: TaskId,
        fence: Fence<'_>,
        delay_seconds: Option<u64>,
        reason: Option<String>,
    ) -> StoreResult<Retried> {
        let _admitted = self.admit()?;
        const TRIES: usize = 3;
        let mut tries = 0;
        loop {
            tries += 1;
            let (attempt, delay) = match (fence.attempt, delay_seconds) {
                (Some(attempt), Some(_)) => (attempt, self.retry_delay(delay_seconds, attempt)),
                _ => {
                    let Some(state) = self.store.get_state(id).await? else {
                        return Err(TransitionError::NotFound.into());
                    };
                    let attempt = fence.attempt.unwrap_or(state.attempts);
                    let in_round = lifecycle::attempt_in_round(attempt, state.round_start);
                    (attempt, self.retry_delay(delay_seconds, in_round))
                }
            };
            let fenced = Fence { worker_id: fence.worker_id, attempt: Some(attempt) };
            let now = self.clock.now();
            let nacked = self.store.nack(id, fenced, delay, reason.clone(), now).await;
            match nacked {
                Ok(Retried::DeadLettered) => {
                    self.count_terminal(id, ResultStatus::Failed, now);
                    tracing::debug!(task_id = %id, attempt, "task nacked, dead-lettered");
                }
                Ok(Retried::Requeued { delay_seconds }) => {
                    tracing::debug!(task_id = %id, attempt, delay_seconds, "task nacked, to retry");
                }
                // Read again: the task moved on between the read and the nack.
                Err(StoreError::Transition(TransitionError::StaleAttempt { .. }))
                    if fence.attempt.is_none() && tries < TRIES =>
                {
                    continue;
                }
                Err(_) => {}
            }
            return nacked;
        }
    }

    /// The delay before the next delivery of a task nacked (or expired)
    /// on delivery `attempts` of its round.
    pub fn retry_delay(&self, requested: Option<u64>, attempts: u32) -> u64 {
        let backoff = self.policy.backoff;
        match requested {
            Some(seconds) => seconds.min(backoff.max_seconds),
            None => backoff.delay_seconds(attempts, &mut rand::rng()),
        }
    }

    /// Stores results, each on its own, as one durable write.
    pub async fn complete(
        &self,
        items: Vec<Completion>,
    ) -> StoreResult<Vec<Result<Completed, TransitionError>>> {
        let _admitted = self.admit()?;
        let outcomes = self.store.complete(items, self.clock.now()).await?;
        for outcome in &outcomes {
            if let Ok(Completed::Stored(record)) = outcome {
                self.finished(record);
            }
        }
        Ok(outcomes)
    }

    /// Stores a result and, when it is accepted, claims the worker's next
    /// task after it (a result with `claimNext`), waiting up to
    /// `next.wait` when none is ready. A claim that fails once the result
    /// is stored answers no task: the result stands.
    pub async fn complete_and_claim(
        &self,
        item: Completion,
        next: &ClaimRequest,
    ) -> StoreResult<(Result<Completed, TransitionError>, Vec<Task>)> {
        let (CompletedAndNext { outcome, next: claimed }, now) = {
            let _admitted = self.admit()?;
            let now = self.clock.now();
            let spec = self.claim_spec(next, now);
            (self.store.complete_and_claim(item, &spec, now).await?, now)
        };
        if let Ok(Completed::Stored(record)) = &outcome {
            self.finished(record);
        }
        if outcome.is_err() {
            return Ok((outcome, Vec::new()));
        }
        let claimed = match claimed {
            Ok(tasks) if !tasks.is_empty() => {
                self.count_claimed(&tasks);
                tasks
            }
            Ok(none) if next.wait.is_zero() => {
                self.next_token(&next.commands, now, &mut false);
                none
            }
            Ok(_) => self.claim_after_result(next).await,
            Err(error) => answered_without_claim(&error),
        };
        Ok((outcome, claimed))
    }

    /// The claim of [`Scheduler::complete_and_claim`] made on its own,
    /// after its result was stored (long polling as asked): a failure
    /// answers the result without a next task.
    pub async fn claim_after_result(&self, next: &ClaimRequest) -> Vec<Task> {
        self.claim(next).await.unwrap_or_else(|error| answered_without_claim(&error))
    }

    /// Counts and logs a task a worker's result made terminal.
    fn finished(&self, record: &ResultRecord) {
        self.count_terminal(record.task_id, record.status, record.completed_at);
        tracing::debug!(
            task_id = %record.task_id,
            status = record.status.as_str(),
            worker = %record.worker_id,
            "task finished"
        );
    }

    /// Counts a task that became terminal (its command read from memory).
    fn count_terminal(&self, id: TaskId, status: ResultStatus, at: Timestamp) {
        if let Some(command) = self.store.command_of(id) {
            self.metrics.task_terminal(&command, status, id, at);
        }
    }

    /// Reads a task.
    pub async fn task(&self, id: TaskId) -> StoreResult<Option<Task>> {
        let _admitted = self.admit()?;
        self.store.get_task(id).await
    }

    /// Reads a task's state.
    pub async fn task_state(&self, id: TaskId) -> StoreResult<Option<TaskState>> {
        let _admitted = self.admit()?;
        self.store.get_state(id).await
    }

    /// Reads a task and its result, when it has one.
    pub async fn task_with_result(&self, id: TaskId) -> StoreResult<Option<(Task, ResultRecord)>> {
        let _admitted = self.admit()?;
        let Some(task) = self.store.get_task(id).await? else { return Ok(None) };
        Ok(self.store.get_result(id).await?.map(|record| (task, record)))
    }
}

/// Counts a parked long poll for as long as it lives.
struct Parked<'a>(&'a AtomicUsize);

impl<'a> Parked<'a> {
    fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Completes when any of `waits` does, with its index.
fn first_of<'a, 'b>(waits: &'a mut [Pin<Box<Notified<'b>>>]) -> impl Future<Output = usize> + 'a {
    std::future::poll_fn(move |cx| {
        for (index, wait) in waits.iter_mut().enumerate() {
            if wait.as_mut().poll(cx).is_ready() {
                return Poll::Ready(index);
            }
        }
        Poll::Pending
    })
}

/// Logs a claim after a stored result that failed; no next task.
fn answered_without_claim(error: &StoreError) -> Vec<Task> {
    tracing::info!(%error, "the claim after a stored result failed: answered without one");
    Vec::new()
}
