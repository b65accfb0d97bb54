//! The embedded backend's in-memory scheduling indexes, rebuilt from the
//! task records on start.
//!
//! Per command: the ready set ordered by (priority descending, visible
//! time, id), so a claim takes the first entry in O(log n) and never
//! scans; counters for delayed, in-progress and dead-lettered tasks.
//! Across commands: delayed tasks by visible time, leases by deadline,
//! terminal tasks by completion time (retention) and idempotency keys.
//! The indexes hold ids and keys only; the records live on disk.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};

use codeq_core::{Command, Priority, QueueStats, Task, TaskId, TaskStatus, Timestamp};

use crate::store::CommandFilter;

type ReadyKey = (Reverse<Priority>, Timestamp, TaskId);

/// One command's queues.
#[derive(Debug, Default)]
struct Queue {
    ready: BTreeSet<ReadyKey>,
    delayed: u64,
    in_progress: u64,
    dlq: u64,
}

/// All scheduling indexes of the embedded backend.
#[derive(Debug, Default)]
pub struct Indexes {
    queues: HashMap<Command, Queue>,
    delayed: BTreeSet<(Timestamp, TaskId)>,
    leases: BTreeSet<(Timestamp, TaskId)>,
    terminal: BTreeSet<(Timestamp, TaskId)>,
    idempotency: HashMap<String, TaskId>,
}

impl Indexes {
    /// Adds a task in the place its record says (used on create and on
    /// rebuild). A pending task visible at `now` or earlier is ready.
    pub fn insert(&mut self, task: &Task, now: Timestamp) {
        if let Some(key) = &task.idempotency_key {
            self.idempotency.insert(key.clone(), task.id);
        }
        let queue = self.queues.entry(task.command.clone()).or_default();
        match task.status {
            TaskStatus::Pending if task.visible_at <= now => {
                queue.ready.insert((Reverse(task.priority), task.visible_at, task.id));
            }
            TaskStatus::Pending => {
                queue.delayed += 1;
                self.delayed.insert((task.visible_at, task.id));
            }
            TaskStatus::InProgress => {
                queue.in_progress += 1;
                self.leases.insert((task.lease_until.unwrap_or(now), task.id));
            }
            TaskStatus::Completed | TaskStatus::Failed => {
                if task.dead_lettered {
                    queue.dlq += 1;
                }
                self.terminal.insert((task.completed_at.unwrap_or(task.updated_at), task.id));
            }
        }
    }

    /// Removes a task from wherever its record says it is.
    pub fn remove(&mut self, task: &Task, now: Timestamp) {
        let Some(queue) = self.queues.get_mut(&task.command) else { return };
        match task.status {
            TaskStatus::Pending => {
                if self.delayed.remove(&(task.visible_at, task.id)) {
                    queue.delayed = queue.delayed.saturating_sub(1);
                } else {
                    queue.ready.remove(&(Reverse(task.priority), task.visible_at, task.id));
                }
            }
            TaskStatus::InProgress => {
                queue.in_progress = queue.in_progress.saturating_sub(1);
                self.leases.remove(&(task.lease_until.unwrap_or(now), task.id));
            }
            TaskStatus::Completed | TaskStatus::Failed => {
                if task.dead_lettered {
                    queue.dlq = queue.dlq.saturating_sub(1);
                }
                self.terminal.remove(&(task.completed_at.unwrap_or(task.updated_at), task.id));
                if let Some(key) = &task.idempotency_key
                    && self.idempotency.get(key) == Some(&task.id)
                {
                    self.idempotency.remove(key);
                }
            }
        }
    }

    /// True when `command` has been used (it has a queue, maybe empty).
    pub fn knows(&self, command: &Command) -> bool {
        self.queues.contains_key(command)
    }

    /// Remembers a command with empty queues (rebuild of the known set).
    pub fn add_command(&mut self, command: Command) {
        self.queues.entry(command).or_default();
    }

    /// The live task holding an idempotency key.
    pub fn idempotent(&self, key: &str) -> Option<TaskId> {
        self.idempotency.get(key).copied()
    }

    /// Takes the best ready task among `filter`'s commands: highest
    /// priority, then earliest visible, then oldest id.
    pub fn pop_ready(&mut self, filter: &CommandFilter) -> Option<TaskId> {
        let best = match filter {
            CommandFilter::All => self.best_ready(self.queues.iter()),
            CommandFilter::Only(commands) => self.best_ready(
                commands.iter().filter_map(|command| self.queues.get_key_value(command)),
            ),
        };
        let (command, key) = best?;
        let queue = self.queues.get_mut(&command)?;
        queue.ready.remove(&key);
        Some(key.2)
    }

    fn best_ready<'a>(
        &self,
        queues: impl Iterator<Item = (&'a Command, &'a Queue)>,
    ) -> Option<(Command, ReadyKey)> {
        queues
            .filter_map(|(command, queue)| queue.ready.first().map(|key| (key, command)))
            .min_by_key(|(key, _)| **key)
            .map(|(key, command)| (command.clone(), *key))
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
        let mut stats: Vec<_> =
            self.queues.iter().map(|(command, queue)| stats_of(command, queue)).collect();
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
