//! The embedded backend's per-command queues: each command's indexes
//! (ready set, dead letters, tasks by status) and counters, its settings
//! (pause, `maxInFlight`, rate limit) with the token bucket of its rate,
//! and the rules that decide how many of its tasks a claim may take now.
//!
//! A command is known by a number (entries store the number, not the
//! name). Its queue exists from the first task or setting that names it.

use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};

use codeq_core::{
    Command, Priority, QueueSettings, QueueStats, TaskId, TaskStatus, Timestamp, TokenBucket,
};

use super::log::Location;

/// The ready set's order: highest priority, then earliest visible, then
/// oldest id.
pub type ReadyKey = (Reverse<Priority>, Timestamp, TaskId);

/// A dead letter's key: when it failed, then its id.
pub type DeadKey = (Timestamp, TaskId);

/// Statuses a task can have (the size of [`Queue::by_status`]).
pub const STATUSES: usize = 5;

/// The place of `status` in [`Queue::by_status`].
pub fn status_slot(status: TaskStatus) -> usize {
    match status {
        TaskStatus::Pending => 0,
        TaskStatus::InProgress => 1,
        TaskStatus::Completed => 2,
        TaskStatus::Failed => 3,
        TaskStatus::Cancelled => 4,
    }
}

/// One command's queues.
#[derive(Debug, Default)]
pub struct Queue {
    /// Ready tasks in claim order.
    pub ready: BTreeSet<ReadyKey>,
    /// Pending tasks not yet visible.
    pub delayed: u64,
    /// Tasks in progress.
    pub in_progress: u64,
    /// Dead letters, by when they failed.
    pub dead: BTreeSet<DeadKey>,
    /// Every task, by status, in id (creation) order.
    pub by_status: [BTreeSet<TaskId>; STATUSES],
    /// Where the command's record lies (the set of commands ever used).
    pub record: Option<Location>,
    /// Pause and flow limits.
    pub settings: QueueSettings,
    /// Where the settings record lies, and the batch that wrote it.
    pub settings_record: Option<(Location, u64)>,
    /// The rate limit's bucket (claims are planned under the store's lock
    /// through a shared reference; the lock makes this cell safe).
    bucket: Cell<Option<TokenBucket>>,
}

impl Queue {
    /// Replaces the settings. A new rate or burst starts with a full
    /// bucket; a pause, a resume or a new `maxInFlight` keeps the bucket
    /// as it is (so a pause and resume lets no burst through).
    pub fn set_settings(&mut self, settings: QueueSettings, now: Timestamp) {
        let same_rate = (settings.rate_per_second, settings.burst)
            == (self.settings.rate_per_second, self.settings.burst);
        self.settings = settings;
        if !same_rate {
            self.bucket.set(TokenBucket::full(&settings, now));
        }
    }

    fn bucket(&self, now: Timestamp) -> Option<TokenBucket> {
        self.bucket.get().or_else(|| TokenBucket::full(&self.settings, now))
    }

    /// How many of its ready tasks a claim may take at `now`, at most
    /// `count`: none while paused, no more than `maxInFlight` allows, no
    /// more than the rate limit's tokens.
    pub fn capacity(&self, count: usize, now: Timestamp) -> usize {
        if self.settings.paused {
            return 0;
        }
        let mut capacity = count as u64;
        if let Some(max) = self.settings.max_in_flight {
            capacity = capacity.min(u64::from(max).saturating_sub(self.in_progress));
        }
        if let Some(mut bucket) = self.bucket(now) {
            capacity = capacity.min(bucket.available(&self.settings, now));
            self.bucket.set(Some(bucket));
        }
        usize::try_from(capacity).unwrap_or(count)
    }

    /// Takes `count` tokens from the rate limit, if it has one.
    pub fn take_tokens(&self, count: usize) {
        if let Some(mut bucket) = self.bucket.get() {
            bucket.take(count as u64);
            self.bucket.set(Some(bucket));
        }
    }

    /// When the rate limit next lets a ready task through, if it is what
    /// holds them back now.
    pub fn next_token_at(&self, now: Timestamp) -> Option<Timestamp> {
        let held_by_rate = !self.ready.is_empty()
            && !self.settings.paused
            && self.settings.max_in_flight.is_none_or(|max| self.in_progress < u64::from(max));
        let mut bucket = self.bucket(now).filter(|_| held_by_rate)?;
        (bucket.available(&self.settings, now) == 0)
            .then(|| bucket.next_token_at(&self.settings, now))
    }

    /// Depths and settings.
    pub fn stats(&self, command: &Command) -> QueueStats {
        QueueStats {
            command: command.clone(),
            ready: self.ready.len() as u64,
            delayed: self.delayed,
            in_progress: self.in_progress,
            dlq: self.dead.len() as u64,
            settings: self.settings,
        }
    }
}

/// The commands known, each with a number entries refer to it by.
#[derive(Debug, Default)]
pub struct Commands {
    /// Names by number.
    pub names: Vec<Command>,
    numbers: HashMap<Command, u32>,
    /// Queues by number.
    pub queues: Vec<Queue>,
}

impl Commands {
    /// The number of `command`, added when new.
    pub fn intern(&mut self, command: &Command) -> u32 {
        if let Some(number) = self.numbers.get(command) {
            return *number;
        }
        let number = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.names.push(command.clone());
        self.numbers.insert(command.clone(), number);
        self.queues.push(Queue::default());
        number
    }

    /// The number of `command`, if known.
    pub fn number(&self, command: &Command) -> Option<u32> {
        self.numbers.get(command).copied()
    }

    /// The queue numbered `number`.
    pub fn queue(&mut self, number: u32) -> Option<&mut Queue> {
        self.queues.get_mut(number as usize)
    }

    /// The queue of `command`, if known.
    pub fn queue_of(&self, command: &Command) -> Option<&Queue> {
        self.number(command).and_then(|number| self.queues.get(number as usize))
    }

    /// The numbers of the commands `filter` names that are known, each
    /// once (every command for `None`).
    pub fn numbers_of(&self, commands: Option<&[Command]>) -> Vec<u32> {
        match commands {
            None => (0..self.queues.len()).filter_map(|n| u32::try_from(n).ok()).collect(),
            Some(commands) => {
                let mut numbers: Vec<u32> =
                    commands.iter().filter_map(|command| self.number(command)).collect();
                // A command named twice is one queue: never take a task twice.
                numbers.sort_unstable();
                numbers.dedup();
                numbers
            }
        }
    }
}
