//! The embedded backend: scheduling indexes in memory (`index.rs`) over
//! task and result records on disk (`disk.rs`), for a single process.
//!
//! Every transition runs under one mutex: it reads the records it needs,
//! updates the indexes, writes the new records as one batch, and releases
//! the lock; then it waits, outside the lock, until the batch is durable
//! (group commit) before answering. The lock is a `std` mutex because the
//! critical sections are short and never await. Reads see changes before
//! they are durable; no write is acknowledged before.

mod disk;
mod index;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use codeq_core::task::{LEASE_EXPIRED_REASON, MAX_ATTEMPTS_ERROR};
use codeq_core::{
    BackoffConfig, Command, QueueStats, ResultRecord, ResultStatus, Task, TaskId, TaskStatus,
    Timestamp,
};

use self::disk::{Disk, Durable, WriteSet};
use self::index::Indexes;
use crate::config::Durability;
use crate::store::{
    ClaimSpec, Completed, Completion, Created, Expired, Fence, Nacked, RetryDelay, Signals, Store,
    StoreResult, TransitionError, check_held,
};

/// The embedded store. See the module docs.
pub struct EmbeddedStore {
    indexes: Mutex<Indexes>,
    disk: Disk,
    signals: Arc<Signals>,
}

impl EmbeddedStore {
    /// Opens the store in `dir` and rebuilds the indexes from its records.
    pub fn open(dir: &Path, durability: Durability, signals: Arc<Signals>) -> StoreResult<Self> {
        let disk = Disk::open(dir, durability)?;
        let now = Timestamp::now();
        let mut indexes = Indexes::default();
        for command in disk.scan_commands() {
            indexes.add_command(command?);
        }
        for task in disk.scan_tasks() {
            indexes.insert(&task?, now);
        }
        Ok(Self { indexes: Mutex::new(indexes), disk, signals })
    }

    fn lock(&self) -> MutexGuard<'_, Indexes> {
        self.indexes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs one transition under the lock, commits its writes as one
    /// batch, announces what became ready, then (lock released) waits until
    /// the batch is durable. A refused transition writes nothing.
    async fn transact<T>(
        &self,
        change: impl FnOnce(&mut Txn<'_>) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let (value, durable) = self.run_locked(change)?;
        if let Some(durable) = durable {
            durable.wait().await?;
        }
        Ok(value)
    }

    fn run_locked<T>(
        &self,
        change: impl FnOnce(&mut Txn<'_>) -> StoreResult<T>,
    ) -> StoreResult<(T, Option<Durable>)> {
        self.disk.check_writable()?;
        let indexes = self.lock();
        let deadline_before = indexes.next_deadline();
        let mut txn = Txn {
            disk: &self.disk,
            indexes,
            deadline_before,
            tasks: HashMap::new(),
            results: Vec::new(),
            deleted: Vec::new(),
            ready: BTreeSet::new(),
            new_commands: Vec::new(),
        };
        let value = change(&mut txn)?;
        let (batch, ready, deadline_moved) = txn.commit()?;
        for command in &ready {
            self.signals.ready(command);
        }
        if deadline_moved {
            self.signals.deadline_changed();
        }
        Ok((value, batch))
    }
}

/// One transition in progress: the index lock, plus the records it changed
/// (read back by later steps of the same call before they are on disk).
struct Txn<'a> {
    disk: &'a Disk,
    indexes: MutexGuard<'a, Indexes>,
    deadline_before: Option<Timestamp>,
    tasks: HashMap<TaskId, Task>,
    results: Vec<ResultRecord>,
    deleted: Vec<TaskId>,
    ready: BTreeSet<Command>,
    new_commands: Vec<Command>,
}

impl Txn<'_> {
    fn task(&self, id: TaskId) -> StoreResult<Option<Task>> {
        match self.tasks.get(&id) {
            Some(task) => Ok(Some(task.clone())),
            None => self.disk.task(id),
        }
    }

    fn existing_task(&self, id: TaskId) -> StoreResult<Task> {
        match self.tasks.get(&id) {
            Some(task) => Ok(task.clone()),
            None => self.disk.existing_task(id),
        }
    }

    fn result(&self, id: TaskId) -> StoreResult<Option<ResultRecord>> {
        match self.results.iter().rev().find(|record| record.task_id == id) {
            Some(record) => Ok(Some(record.clone())),
            None => self.disk.result(id),
        }
    }

    /// Replaces `old` by `new` in the indexes and the write set.
    fn update(&mut self, old: &Task, new: Task, now: Timestamp) {
        self.indexes.remove(old, now);
        self.insert(new, now);
    }

    fn insert(&mut self, task: Task, now: Timestamp) {
        if !self.indexes.knows(&task.command) {
            self.new_commands.push(task.command.clone());
        }
        self.indexes.insert(&task, now);
        if task.status == TaskStatus::Pending && task.visible_at <= now {
            self.ready.insert(task.command.clone());
        }
        self.tasks.insert(task.id, task);
    }

    /// A task in progress and held by `fence`, checked in the order of the
    /// API: existence, state, ownership, delivery.
    fn held_task(&self, id: TaskId, fence: Fence<'_>) -> StoreResult<Task> {
        let task = self.task(id)?.ok_or(TransitionError::NotFound)?;
        check_held(&task, fence)?;
        Ok(task)
    }

    /// Requeues a held task with a delay, or dead-letters it after its last
    /// delivery.
    fn requeue_or_dead_letter(
        &mut self,
        task: Task,
        delay: RetryDelay,
        reason: Option<String>,
        now: Timestamp,
    ) -> Nacked {
        let mut next = task.clone();
        next.worker_id = None;
        next.lease_until = None;
        next.last_reason = reason;
        next.updated_at = now;
        if task.attempts >= task.max_attempts {
            next.status = TaskStatus::Failed;
            next.error = Some(MAX_ATTEMPTS_ERROR.to_string());
            next.dead_lettered = true;
            next.completed_at = Some(now);
            self.results.push(ResultRecord {
                task_id: task.id,
                status: ResultStatus::Failed,
                result: None,
                error: Some(MAX_ATTEMPTS_ERROR.to_string()),
                artifacts: Vec::new(),
                worker_id: String::new(),
                completed_at: now,
            });
            self.update(&task, next, now);
            return Nacked::DeadLettered;
        }
        let delay_seconds = match delay {
            RetryDelay::Seconds(seconds) => seconds,
            RetryDelay::Backoff(backoff) => backoff.delay_seconds(task.attempts, &mut rand::rng()),
        };
        next.status = TaskStatus::Pending;
        next.visible_at = now.plus_seconds(delay_seconds);
        self.update(&task, next, now);
        Nacked::Requeued { delay_seconds }
    }

    /// Writes the change as one batch; returns its sequence number, the
    /// commands that gained ready tasks and whether an earlier deadline
    /// appeared.
    fn commit(self) -> StoreResult<(Option<Durable>, BTreeSet<Command>, bool)> {
        let mut writes = WriteSet::default();
        for task in self.tasks.values() {
            writes.put_task(task)?;
        }
        for record in &self.results {
            writes.put_result(record)?;
        }
        for id in &self.deleted {
            writes.delete(*id);
        }
        for command in &self.new_commands {
            writes.put_command(command);
        }
        let seq = self.disk.commit(writes)?;
        let deadline_after = self.indexes.next_deadline();
        let moved = match (self.deadline_before, deadline_after) {
            (Some(before), Some(after)) => after < before,
            (None, Some(_)) => true,
            _ => false,
        };
        Ok((seq, self.ready, moved))
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn create(&self, tasks: Vec<Task>) -> StoreResult<Vec<Created>> {
        self.transact(|txn| {
            let mut created = Vec::with_capacity(tasks.len());
            for task in tasks {
                let holder =
                    task.idempotency_key.as_deref().and_then(|key| txn.indexes.idempotent(key));
                match holder {
                    Some(holder) => created.push(Created::Existing(txn.existing_task(holder)?)),
                    None => {
                        let now = task.created_at;
                        txn.insert(task.clone(), now);
                        created.push(Created::New(task));
                    }
                }
            }
            Ok(created)
        })
        .await
    }

    async fn claim(&self, spec: &ClaimSpec, now: Timestamp) -> StoreResult<Vec<Task>> {
        self.transact(|txn| {
            let mut claimed = Vec::new();
            while claimed.len() < spec.count {
                let Some(id) = txn.indexes.pop_ready(&spec.commands) else { break };
                let mut task = txn.existing_task(id)?;
                task.status = TaskStatus::InProgress;
                task.attempts = task.attempts.saturating_add(1);
                task.worker_id = Some(spec.worker_id.clone());
                task.lease_until = Some(spec.lease_until);
                task.updated_at = now;
                txn.insert(task.clone(), now);
                claimed.push(task);
            }
            Ok(claimed)
        })
        .await
    }

    async fn heartbeat(
        &self,
        id: TaskId,
        fence: Fence<'_>,
        lease_until: Timestamp,
        now: Timestamp,
    ) -> StoreResult<Task> {
        self.transact(|txn| {
            let task = txn.held_task(id, fence)?;
            let mut next = task.clone();
            next.lease_until = Some(lease_until);
            next.updated_at = now;
            txn.update(&task, next.clone(), now);
            Ok(next)
        })
        .await
    }

    async fn abandon(&self, id: TaskId, fence: Fence<'_>, now: Timestamp) -> StoreResult<Task> {
        self.transact(|txn| {
            let task = txn.held_task(id, fence)?;
            let mut next = task.clone();
            next.status = TaskStatus::Pending;
            next.worker_id = None;
            next.lease_until = None;
            next.visible_at = now;
            next.updated_at = now;
            txn.update(&task, next.clone(), now);
            Ok(next)
        })
        .await
    }

    async fn nack(
        &self,
        id: TaskId,
        fence: Fence<'_>,
        delay: RetryDelay,
        reason: Option<String>,
        now: Timestamp,
    ) -> StoreResult<Nacked> {
        self.transact(|txn| {
            let task = txn.held_task(id, fence)?;
            Ok(txn.requeue_or_dead_letter(task, delay, reason, now))
        })
        .await
    }

    async fn complete(
        &self,
        items: Vec<Completion>,
        now: Timestamp,
    ) -> StoreResult<Vec<Result<Completed, TransitionError>>> {
        self.transact(|txn| items.into_iter().map(|item| complete_one(txn, item, now)).collect())
            .await
    }

    async fn get_task(&self, id: TaskId) -> StoreResult<Option<Task>> {
        self.disk.task(id)
    }

    async fn get_result(&self, id: TaskId) -> StoreResult<Option<ResultRecord>> {
        self.disk.result(id)
    }

    async fn promote_due(&self, now: Timestamp, limit: usize) -> StoreResult<usize> {
        // Promotion changes no record (a pending task visible at `now` is
        // ready by definition, also on rebuild): nothing to make durable.
        self.transact(|txn| {
            let due = txn.indexes.due(now, limit);
            for id in &due {
                let task = txn.existing_task(*id)?;
                txn.indexes.remove(&task, now);
                txn.indexes.insert(&task, now);
                txn.ready.insert(task.command);
            }
            Ok(due.len())
        })
        .await
    }

    async fn expire_leases(
        &self,
        now: Timestamp,
        backoff: BackoffConfig,
        limit: usize,
    ) -> StoreResult<Vec<Expired>> {
        self.transact(|txn| {
            let mut expired = Vec::new();
            for id in txn.indexes.expired(now, limit) {
                let task = txn.existing_task(id)?;
                let command = task.command.clone();
                let reason = Some(LEASE_EXPIRED_REASON.to_string());
                let outcome =
                    txn.requeue_or_dead_letter(task, RetryDelay::Backoff(backoff), reason, now);
                expired.push(Expired { task_id: id, command, outcome });
            }
            Ok(expired)
        })
        .await
    }

    async fn queue_stats(&self, command: &Command) -> StoreResult<QueueStats> {
        Ok(self.lock().stats(command))
    }

    async fn all_queue_stats(&self) -> StoreResult<Vec<QueueStats>> {
        Ok(self.lock().all_stats())
    }

    async fn cleanup(&self, completed_before: Timestamp, limit: usize) -> StoreResult<Vec<TaskId>> {
        self.transact(|txn| {
            let ended = txn.indexes.ended_before(completed_before, limit);
            for id in &ended {
                let task = txn.existing_task(*id)?;
                txn.indexes.remove(&task, completed_before);
                txn.deleted.push(*id);
            }
            Ok(ended)
        })
        .await
    }

    fn next_deadline(&self) -> Option<Timestamp> {
        self.lock().next_deadline()
    }

    async fn ping(&self) -> StoreResult<()> {
        self.disk.ping()
    }

    async fn close(&self) -> StoreResult<()> {
        let _indexes = self.lock();
        self.disk.close()
    }
}

/// Makes one task terminal with its result, or says why not.
fn complete_one(
    txn: &mut Txn<'_>,
    item: Completion,
    now: Timestamp,
) -> StoreResult<Result<Completed, TransitionError>> {
    let Some(task) = txn.task(item.task_id)? else { return Ok(Err(TransitionError::NotFound)) };
    if task.status.is_terminal() {
        return Ok(match txn.result(item.task_id)? {
            Some(stored) if stored.is_repeated_by(&item.worker_id, item.record.status) => {
                Ok(Completed::Repeated(stored))
            }
            _ => Err(TransitionError::ResultConflict),
        });
    }
    if let Err(refused) =
        check_held(&task, Fence { worker_id: &item.worker_id, attempt: item.attempt })
    {
        return Ok(Err(refused));
    }
    let mut record = item.record;
    record.worker_id = item.worker_id;
    record.completed_at = now;
    let mut next = task.clone();
    next.status = match record.status {
        ResultStatus::Completed => TaskStatus::Completed,
        ResultStatus::Failed => TaskStatus::Failed,
    };
    next.error = match record.status {
        ResultStatus::Failed => record.error.clone(),
        ResultStatus::Completed => None,
    };
    next.worker_id = None;
    next.lease_until = None;
    next.completed_at = Some(now);
    next.updated_at = now;
    txn.update(&task, next, now);
    txn.results.push(record.clone());
    Ok(Ok(Completed::Stored(record)))
}
