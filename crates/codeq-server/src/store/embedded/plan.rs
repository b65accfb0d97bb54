//! A transition's plan: the records it writes and the memory changes it
//! makes, built without changing anything.
//!
//! A transition reads the live state ([`Tasks`]), decides with the pure
//! functions of `codeq_core::lifecycle`, and records its decisions here:
//! the journal batch (already encoded) and the matching memory changes.
//! Only once the batch is queued does [`Plan::apply`] change memory, which
//! cannot fail; a refusal or an encoding error before that leaves
//! everything as it was.

use std::collections::{BTreeSet, HashMap};

use codeq_core::{
    Command, QueueSettings, ResultRecord, Subscription, Task, TaskId, TaskState, Timestamp,
};
use uuid::Uuid;

use super::log::frame::{Batch, TooLarge};
use super::log::{Location, Table};
use super::records::{
    Callback, encode_body, encode_callback, encode_result, encode_settings, encode_settled,
    encode_state, encode_subscription,
};
use super::state::{NewEntry, Owed, Settled, Subscribed, Tasks};
use crate::store::{SettledCallback, StoreError, StoreResult};

impl From<TooLarge> for StoreError {
    fn from(error: TooLarge) -> Self {
        StoreError::Corrupt(error.to_string())
    }
}

/// A memory change, applied once the batch is queued. `usize` fields
/// index the batch's puts, whose locations the journal assigns.
#[derive(Debug)]
enum Change {
    New { id: TaskId, entry: Box<(NewEntry, TaskState)>, body: usize, state: usize },
    State { id: TaskId, state: TaskState, at: usize, result: Option<usize> },
    Delete { id: TaskId },
    Command { command: Command, at: usize },
    Moved { id: TaskId, table: Table, at: usize },
    Owe { id: TaskId, callback: Callback, at: usize },
    Forgive { id: TaskId },
    Settle { id: TaskId, settled: SettledCallback, at: usize },
    MovedCommand { command: Command, at: usize },
    Subscribe { subscription: Box<Subscription>, at: usize },
    Unsubscribe { id: Uuid },
    MovedSubscription { id: Uuid, at: usize },
    Settings { command: Command, settings: QueueSettings, at: usize },
    MovedSettings { command: Command, at: usize },
    ClearResult { id: TaskId },
}

/// See the module docs.
#[derive(Debug)]
pub struct Plan {
    now: Timestamp,
    batch: Batch,
    changes: Vec<Change>,
    /// States decided earlier in this plan (later steps see them).
    planned: HashMap<TaskId, TaskState>,
    /// Commands new in this plan.
    new_commands: BTreeSet<Command>,
    /// The newest batch whose state this plan looked at: the answer waits
    /// until it is durable even when the plan writes nothing.
    observed: u64,
}

/// What applying a plan did that others must hear of.
#[derive(Debug, Default)]
pub struct Applied {
    /// Commands that gained ready tasks.
    pub ready: BTreeSet<Command>,
    /// A result callback became owed.
    pub owed: bool,
}

impl Plan {
    /// An empty plan whose batch has room for about `bytes`.
    pub fn with_capacity(now: Timestamp, bytes: usize) -> Self {
        Self {
            now,
            batch: Batch::with_capacity(bytes),
            changes: Vec::new(),
            planned: HashMap::new(),
            new_commands: BTreeSet::new(),
            observed: 0,
        }
    }

    /// True when the plan writes nothing.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The newest batch the plan looked at.
    pub fn observed(&self) -> u64 {
        self.observed
    }

    /// Notes that the answer shows state written by batch `seq`.
    pub fn observe(&mut self, seq: u64) {
        self.observed = self.observed.max(seq);
    }

    /// The state of task `id` as this plan sees it (its own decisions
    /// first), noting what it observed.
    pub fn state(&mut self, tasks: &Tasks, id: TaskId) -> Option<(TaskState, u32)> {
        let Some(entry) = tasks.get(id) else {
            // "No such task" may show a delete not yet durable.
            self.observe(tasks.deleted_seq());
            return None;
        };
        self.observe(entry.seq);
        let state = match self.planned.get(&id) {
            Some(planned) => planned.clone(),
            None => entry.state(),
        };
        Some((state, entry.max_attempts))
    }

    /// Plans a new task (body and state), and its command's record when
    /// the command was never used.
    pub fn create(&mut self, tasks: &Tasks, task: &Task) -> StoreResult<()> {
        let id = task.id;
        let body =
            self.batch.put_with(Table::Tasks, id.as_bytes(), |buf| encode_body(task, buf))?;
        let state = self
            .batch
            .put_with(Table::States, id.as_bytes(), |buf| encode_state(&task.state, buf))?;
        let entry = NewEntry {
            command: task.command.clone(),
            priority: task.priority,
            max_attempts: task.max_attempts,
            idempotency_key: task.idempotency_key.as_deref().map(Box::from),
            has_webhook: task.webhook.is_some(),
        };
        let entry = Box::new((entry, task.state.clone()));
        self.changes.push(Change::New { id, entry, body, state });
        self.planned.insert(id, task.state.clone());
        self.know(tasks, &task.command)
    }

    /// True when a task or settings of `command` may be planned while the
    /// store knows `max` commands at most: it is known, or new in this plan
    /// already, or there is room for one more.
    pub fn may_know(&self, tasks: &Tasks, command: &Command, max: usize) -> bool {
        tasks.knows(command)
            || self.new_commands.contains(command)
            || tasks.command_count() + self.new_commands.len() < max
    }

    /// Plans the record of `command` when it was never used.
    fn know(&mut self, tasks: &Tasks, command: &Command) -> StoreResult<()> {
        if !tasks.knows(command) && self.new_commands.insert(command.clone()) {
            let at = self.batch.put(Table::Commands, command.as_str().as_bytes(), &[])?;
            self.changes.push(Change::Command { command: command.clone(), at });
        }
        Ok(())
    }

    /// Plans task `id`'s next state, and the result record it stores.
    pub fn set_state(
        &mut self,
        id: TaskId,
        state: TaskState,
        result: Option<&ResultRecord>,
    ) -> StoreResult<()> {
        let at =
            self.batch.put_with(Table::States, id.as_bytes(), |buf| encode_state(&state, buf))?;
        let result = match result {
            Some(record) => Some(
                self.batch
                    .put_with(Table::Results, id.as_bytes(), |buf| encode_result(record, buf))?,
            ),
            None => None,
        };
        self.planned.insert(id, state.clone());
        self.changes.push(Change::State { id, state, at, result });
        Ok(())
    }

    /// Plans the result callback owed for task `id` (a new series, or the
    /// next attempt of one).
    pub fn owe(&mut self, id: TaskId, callback: Callback) -> StoreResult<()> {
        let at = self
            .batch
            .put_with(Table::Outbox, id.as_bytes(), |buf| encode_callback(&callback, buf))?;
        self.changes.push(Change::Owe { id, callback, at });
        Ok(())
    }

    /// Plans forgetting the callback of task `id`, owed or settled (its
    /// record is deleted).
    pub fn forgive(&mut self, id: TaskId) -> StoreResult<()> {
        self.batch.delete(Table::Outbox, id.as_bytes())?;
        self.changes.push(Change::Forgive { id });
        Ok(())
    }

    /// Plans keeping how the callback of task `id` ended, in place of the
    /// one owed.
    pub fn settle(&mut self, id: TaskId, settled: SettledCallback) -> StoreResult<()> {
        let at = self
            .batch
            .put_with(Table::Outbox, id.as_bytes(), |buf| encode_settled(&settled, buf))?;
        self.changes.push(Change::Settle { id, settled, at });
        Ok(())
    }

    /// Plans the deletion of task `id` with its records.
    pub fn delete(&mut self, id: TaskId) -> StoreResult<()> {
        for table in [Table::Tasks, Table::States, Table::Results] {
            self.batch.delete(table, id.as_bytes())?;
        }
        self.changes.push(Change::Delete { id });
        Ok(())
    }

    /// Plans rewriting a live record of task `id` (compaction).
    pub fn move_record(&mut self, id: TaskId, table: Table, value: &[u8]) -> StoreResult<()> {
        let at = self.batch.put(table, id.as_bytes(), value)?;
        self.changes.push(Change::Moved { id, table, at });
        Ok(())
    }

    /// Plans rewriting the record of `command` (compaction).
    pub fn move_command(&mut self, command: Command) -> StoreResult<()> {
        let at = self.batch.put(Table::Commands, command.as_str().as_bytes(), &[])?;
        self.changes.push(Change::MovedCommand { command, at });
        Ok(())
    }

    /// Plans replacing the settings of `command` (a command never used
    /// becomes known).
    pub fn set_settings(
        &mut self,
        tasks: &Tasks,
        command: &Command,
        settings: QueueSettings,
    ) -> StoreResult<()> {
        let key = command.as_str().as_bytes();
        let at =
            self.batch.put_with(Table::Settings, key, |buf| encode_settings(&settings, buf))?;
        self.changes.push(Change::Settings { command: command.clone(), settings, at });
        self.know(tasks, command)
    }

    /// Plans rewriting the settings record of `command` (compaction).
    pub fn move_settings(&mut self, command: Command, value: &[u8]) -> StoreResult<()> {
        let at = self.batch.put(Table::Settings, command.as_str().as_bytes(), value)?;
        self.changes.push(Change::MovedSettings { command, at });
        Ok(())
    }

    /// Plans dropping the result record of task `id` (a replayed dead
    /// letter is no longer finished).
    pub fn clear_result(&mut self, id: TaskId) -> StoreResult<()> {
        self.batch.delete(Table::Results, id.as_bytes())?;
        self.changes.push(Change::ClearResult { id });
        Ok(())
    }

    /// Plans storing a subscription (new or renewed).
    pub fn subscribe(&mut self, subscription: Subscription) -> StoreResult<()> {
        let at = self.batch.put_with(Table::Subscriptions, subscription.id.as_bytes(), |buf| {
            encode_subscription(&subscription, buf)
        })?;
        self.changes.push(Change::Subscribe { subscription: Box::new(subscription), at });
        Ok(())
    }

    /// Plans deleting subscription `id`.
    pub fn unsubscribe(&mut self, id: Uuid) -> StoreResult<()> {
        self.batch.delete(Table::Subscriptions, id.as_bytes())?;
        self.changes.push(Change::Unsubscribe { id });
        Ok(())
    }

    /// Plans rewriting the record of subscription `id` (compaction).
    pub fn move_subscription(&mut self, id: Uuid, value: &[u8]) -> StoreResult<()> {
        let at = self.batch.put(Table::Subscriptions, id.as_bytes(), value)?;
        self.changes.push(Change::MovedSubscription { id, at });
        Ok(())
    }

    /// The batch to queue, and what to apply once it is queued.
    pub fn into_parts(self) -> (Batch, Pending) {
        (self.batch, Pending { now: self.now, changes: self.changes })
    }
}

/// The memory half of a plan, waiting for its batch's locations.
#[derive(Debug)]
pub struct Pending {
    now: Timestamp,
    changes: Vec<Change>,
}

impl Pending {
    /// Applies the plan to memory; `locations` are those of the batch's
    /// puts and `seq` its sequence number. Cannot fail.
    pub fn apply(self, tasks: &mut Tasks, seq: u64, locations: &[Location]) -> Applied {
        let now = self.now;
        let place = |index: usize| locations.get(index).copied();
        let mut applied = Applied::default();
        for change in self.changes {
            match change {
                Change::New { id, entry, body, state } => {
                    let (new, task_state) = *entry;
                    if task_state.is_ready(now) {
                        applied.ready.insert(new.command.clone());
                    }
                    let mut entry = tasks.new_entry(&new);
                    entry.set_state(&task_state);
                    if let (Some(body), Some(state_at)) = (place(body), place(state)) {
                        entry.body = body;
                        entry.state_at = state_at;
                    }
                    entry.seq = seq;
                    tasks.put(id, entry, now);
                }
                Change::State { id, state, at, result } => {
                    if state.is_ready(now)
                        && let Some(entry) = tasks.get(id)
                    {
                        applied.ready.insert(tasks.command_of(entry).clone());
                    }
                    tasks.update(id, now, |entry| {
                        entry.set_state(&state);
                        entry.state_at = place(at).unwrap_or(entry.state_at);
                        if let Some(result) = result.and_then(place) {
                            entry.set_result(result);
                        }
                        entry.seq = seq;
                    });
                }
                Change::Delete { id } => {
                    tasks.remove(id, now);
                    tasks.deleted_by(seq);
                }
                Change::Command { command, at } | Change::MovedCommand { command, at } => {
                    if let Some(record) = place(at) {
                        tasks.add_command(&command, record);
                    }
                }
                Change::Moved { id, table: Table::Outbox, at } => {
                    if let Some(moved) = place(at) {
                        tasks.relocate_callback(id, moved, seq);
                    }
                }
                Change::Moved { id, table, at } => {
                    let Some(moved) = place(at) else { continue };
                    tasks.relocate(
                        id,
                        |entry| match table {
                            Table::Tasks => entry.body = moved,
                            Table::States => entry.state_at = moved,
                            Table::Results => entry.set_result(moved),
                            Table::Commands
                            | Table::Outbox
                            | Table::Subscriptions
                            | Table::Settings => {}
                        },
                        seq,
                    );
                }
                Change::Owe { id, callback, at } => {
                    applied.owed |= callback.attempts == 0;
                    if let Some(at) = place(at) {
                        tasks.owe(id, Owed { callback, at, seq });
                    }
                }
                Change::Forgive { id } => {
                    tasks.forgive(id);
                }
                Change::Settle { id, settled, at } => {
                    if let Some(at) = place(at) {
                        tasks.settle(id, Settled { settled, at, seq });
                    }
                }
                Change::Subscribe { subscription, at } => {
                    if let Some(at) = place(at) {
                        tasks.subscribe(Subscribed { subscription: *subscription, at, seq });
                    }
                }
                Change::Unsubscribe { id } => {
                    tasks.unsubscribe(id);
                    tasks.deleted_by(seq);
                }
                Change::MovedSubscription { id, at } => {
                    if let Some(moved) = place(at) {
                        tasks.relocate_subscription(id, moved, seq);
                    }
                }
                Change::Settings { command, settings, at } => {
                    if let Some(at) = place(at) {
                        tasks.set_settings(&command, settings, (at, seq), now);
                    }
                }
                Change::MovedSettings { command, at } => {
                    if let Some(moved) = place(at) {
                        tasks.relocate_settings(&command, moved, seq);
                    }
                }
                Change::ClearResult { id } => {
                    tasks.update(id, now, |entry| {
                        entry.clear_result();
                        entry.seq = seq;
                    });
                }
            }
        }
        applied
    }
}
