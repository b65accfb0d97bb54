//! The embedded backend's memory: every live task's state, where its
//! records lie in the journal, and the scheduling indexes over them.
//!
//! Transitions read and decide on this alone (no disk read under the
//! store's lock); only task bodies (payloads) and result records stay on
//! disk, read back outside the lock when an answer needs them.
//!
//! Indexes, per command: the ready set ordered by (priority descending,
//! visible time, id), so a claim takes the first entry in O(log n) and
//! never scans; counters for delayed, in-progress and dead-lettered
//! tasks. Across commands: delayed tasks by visible time, leases by
//! deadline, terminal tasks by completion time (retention) and idempotency
//! keys.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};

use codeq_core::{Command, Priority, QueueStats, TaskId, TaskState, TaskStatus, Timestamp};

use super::log::Location;
use crate::store::CommandFilter;

type ReadyKey = (Reverse<Priority>, Timestamp, TaskId);

/// What memory keeps of one task.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its queue.
    pub command: Command,
    /// Claim priority.
    pub priority: Priority,
    /// Delivery limit.
    pub max_attempts: u32,
    /// Its idempotency key (freed when the task is deleted).
    pub idempotency_key: Option<Box<str>>,
    /// Its state.
    pub state: TaskState,
    /// Where its body lies.
    pub body: Location,
    /// Where its state record lies.
    pub state_at: Location,
    /// Where its result record lies, once it has one.
    pub result: Option<Location>,
    /// The last batch that changed it: answers about it wait until this
    /// batch is durable.
    pub seq: u64,
}

/// What a record costs in the journal besides its value: the operation
/// header and key, and a share of a frame header.
pub const RECORD_OVERHEAD: u64 = 3 + 16 + 4 + 25;

impl Entry {
    /// Bytes its records take in the journal.
    pub fn record_bytes(&self) -> u64 {
        let record = |len: u32| u64::from(len) + RECORD_OVERHEAD;
        record(self.body.len)
            + record(self.state_at.len)
            + self.result.map_or(0, |at| record(at.len))
    }
}

/// One command's queues.
#[derive(Debug, Default)]
struct Queue {
    ready: BTreeSet<ReadyKey>,
    delayed: u64,
    in_progress: u64,
    dlq: u64,
    /// Where the command's record lies (the set of commands ever used).
    record: Option<Location>,
}

/// Every live task and the indexes over them.
#[derive(Debug, Default)]
pub struct Tasks {
    entries: HashMap<TaskId, Entry>,
    queues: HashMap<Command, Queue>,
    delayed: BTreeSet<(Timestamp, TaskId)>,
    leases: BTreeSet<(Timestamp, TaskId)>,
    terminal: BTreeSet<(Timestamp, TaskId)>,
    idempotency: HashMap<Box<str>, TaskId>,
    /// Bytes of the live records in the journal (compaction compares the
    /// journal's size with it).
    live_bytes: u64,
    /// The last batch that deleted tasks: "no such task" is an answer
    /// that waits for it.
    deleted_seq: u64,
}

impl Tasks {
    /// The task `id`.
    pub fn get(&self, id: TaskId) -> Option<&Entry> {
        self.entries.get(&id)
    }

    /// How many tasks are live.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Bytes of the live records in the journal.
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// The last batch that deleted tasks.
    pub fn deleted_seq(&self) -> u64 {
        self.deleted_seq
    }

    /// Notes that batch `seq` deleted tasks.
    pub fn deleted_by(&mut self, seq: u64) {
        self.deleted_seq = self.deleted_seq.max(seq);
    }

    /// Adds or replaces a task, re-indexing it. A pending task visible at
    /// `now` or earlier is ready.
    pub fn put(&mut self, id: TaskId, entry: Entry, now: Timestamp) {
        self.remove(id, now);
        self.live_bytes += entry.record_bytes();
        self.index(id, &entry, now);
        self.entries.insert(id, entry);
    }

    /// Removes a task from memory and every index.
    pub fn remove(&mut self, id: TaskId, now: Timestamp) -> Option<Entry> {
        let entry = self.entries.remove(&id)?;
        self.live_bytes = self.live_bytes.saturating_sub(entry.record_bytes());
        self.unindex(id, &entry, now);
        Some(entry)
    }

    /// Updates where a record of task `id` lies (compaction moved it).
    pub fn relocate(&mut self, id: TaskId, update: impl FnOnce(&mut Entry), seq: u64) {
        if let Some(entry) = self.entries.get_mut(&id) {
            let before = entry.record_bytes();
            update(entry);
            entry.seq = entry.seq.max(seq);
            self.live_bytes = self.live_bytes + entry.record_bytes() - before;
        }
    }

    fn index(&mut self, id: TaskId, entry: &Entry, now: Timestamp) {
        if let Some(key) = &entry.idempotency_key {
            self.idempotency.insert(key.clone(), id);
        }
        let state = &entry.state;
        let queue = self.queues.entry(entry.command.clone()).or_default();
        match state.status {
            TaskStatus::Pending if state.visible_at <= now => {
                queue.ready.insert((Reverse(entry.priority), state.visible_at, id));
            }
            TaskStatus::Pending => {
                queue.delayed += 1;
                self.delayed.insert((state.visible_at, id));
            }
            TaskStatus::InProgress => {
                queue.in_progress += 1;
                self.leases.insert((state.lease_until.unwrap_or(now), id));
            }
            TaskStatus::Completed | TaskStatus::Failed => {
                if state.dead_lettered {
                    queue.dlq += 1;
                }
                self.terminal.insert((state.completed_at.unwrap_or(state.updated_at), id));
            }
        }
    }

    fn unindex(&mut self, id: TaskId, entry: &Entry, now: Timestamp) {
        if let Some(key) = &entry.idempotency_key
            && self.idempotency.get(key) == Some(&id)
        {
            self.idempotency.remove(key);
        }
        let Some(queue) = self.queues.get_mut(&entry.command) else { return };
        let state = &entry.state;
        match state.status {
            TaskStatus::Pending => {
                if self.delayed.remove(&(state.visible_at, id)) {
                    queue.delayed = queue.delayed.saturating_sub(1);
                } else {
                    queue.ready.remove(&(Reverse(entry.priority), state.visible_at, id));
                }
            }
            TaskStatus::InProgress => {
                queue.in_progress = queue.in_progress.saturating_sub(1);
                self.leases.remove(&(state.lease_until.unwrap_or(now), id));
            }
            TaskStatus::Completed | TaskStatus::Failed => {
                if state.dead_lettered {
                    queue.dlq = queue.dlq.saturating_sub(1);
                }
                self.terminal.remove(&(state.completed_at.unwrap_or(state.updated_at), id));
            }
        }
    }

    /// True when `command` has been used (it has a queue, maybe empty).
    pub fn knows(&self, command: &Command) -> bool {
        self.queues.get(command).is_some_and(|queue| queue.record.is_some())
    }

    /// Remembers a command ever used, and where its record lies.
    pub fn add_command(&mut self, command: Command, record: Location) {
        let queue = self.queues.entry(command).or_default();
        self.live_bytes += u64::from(record.len) + RECORD_OVERHEAD;
        if let Some(old) = queue.record.replace(record) {
            self.live_bytes = self.live_bytes.saturating_sub(u64::from(old.len) + RECORD_OVERHEAD);
        }
    }

    /// Where the record of `command` lies.
    pub fn command_record(&self, command: &Command) -> Option<Location> {
        self.queues.get(command).and_then(|queue| queue.record)
    }

    /// The live task holding an idempotency key.
    pub fn idempotent(&self, key: &str) -> Option<TaskId> {
        self.idempotency.get(key).copied()
    }

    /// The best `count` ready tasks among `filter`'s commands, in claim
    /// order: highest priority, then earliest visible, then oldest id.
    pub fn best_ready(&self, filter: &CommandFilter, count: usize) -> Vec<TaskId> {
        let mut heads: Vec<_> = match filter {
            CommandFilter::All => self.queues.values().map(|queue| queue.ready.iter()).collect(),
            CommandFilter::Only(commands) => commands
                .iter()
                .enumerate()
                // A command named twice is one queue: never take a task twice.
                .filter(|(index, command)| !commands[..*index].contains(command))
                .filter_map(|(_, command)| self.queues.get(command))
                .map(|queue| queue.ready.iter())
                .collect(),
        };
        let mut next: Vec<Option<&ReadyKey>> = heads.iter_mut().map(Iterator::next).collect();
        let mut best = Vec::with_capacity(count.min(64));
        while best.len() < count {
            let Some((index, key)) = next
                .iter()
                .enumerate()
                .filter_map(|(index, key)| key.map(|key| (index, key)))
                .min_by_key(|(_, key)| **key)
            else {
                break;
            };
            best.push(key.2);
            next[index] = heads[index].next();
        }
        best
    }

    /// Ids of delayed tasks visible at `now`, earliest first.
    pub fn due(&self, now: Timestamp, limit: usize) -> Vec<TaskId> {
        self.delayed
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(limit)
            .map(|(_, id)| *id)
            .collect()
    }

    /// Ids of in-progress tasks whose lease ended before `now`.
    pub fn expired(&self, now: Timestamp, limit: usize) -> Vec<TaskId> {
        self.leases
            .iter()
            .take_while(|(until, _)| *until < now)
            .take(limit)
            .map(|(_, id)| *id)
            .collect()
    }

    /// Ids of terminal tasks that ended at or before `before`.
    pub fn ended_before(&self, before: Timestamp, limit: usize) -> Vec<TaskId> {
        self.terminal
            .iter()
            .take_while(|(at, _)| *at <= before)
            .take(limit)
            .map(|(_, id)| *id)
            .collect()
    }

    /// The earliest delayed-visible time or lease end.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        let delayed = self.delayed.first().map(|(at, _)| *at);
        // A lease expires once `now` is past its end: the reaper wakes 1 ms later.
        let lease = self.leases.first().map(|(until, _)| until.plus_millis(1));
        delayed.into_iter().chain(lease).min()
    }

    /// Depths of one command (zeros when unknown).
    pub fn stats(&self, command: &Command) -> QueueStats {
        self.queues
            .get(command)
            .map_or_else(|| QueueStats::empty(command.clone()), |queue| stats_of(command, queue))
    }

    /// Depths of every known command, by name.
    pub fn all_stats(&self) -> Vec<QueueStats> {
        let mut stats: Vec<_> = self
            .queues
            .iter()
            .filter(|(_, queue)| queue.record.is_some())
            .map(|(command, queue)| stats_of(command, queue))
            .collect();
        stats.sort_by(|a, b| a.command.cmp(&b.command));
        stats
    }
}

fn stats_of(command: &Command, queue: &Queue) -> QueueStats {
    QueueStats {
        command: command.clone(),
        ready: queue.ready.len() as u64,
        delayed: queue.delayed,
        in_progress: queue.in_progress,
        dlq: queue.dlq,
    }
}
