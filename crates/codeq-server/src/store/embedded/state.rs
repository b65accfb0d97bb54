//! The embedded backend's memory: every live task's state, where its
//! records lie in the journal, and the scheduling indexes over them.
//!
//! Transitions read and decide on this alone (no disk read under the
//! store's lock); only task bodies (payloads) and result records stay on
//! disk, read back outside the lock when an answer needs them.
//!
//! Memory is what bounds how many tasks a server holds, so an [`Entry`] is
//! small (about 100 bytes): the command is an index into a table of
//! commands, times are plain integers, and the texts few tasks have (worker,
//! error, reason, idempotency key) sit behind one optional pointer. Entries
//! live in a slab; the map from task id to slab slot stays small, so its
//! power-of-two growth costs little.
//!
//! Indexes, per command: the ready set ordered by (priority descending,
//! visible time, id), so a claim takes the first entry in O(log n) and
//! never scans; counters for delayed, in-progress and dead-lettered tasks.
//! Across commands: delayed tasks by visible time, leases by deadline,
//! terminal tasks by completion time (retention) and idempotency keys.
//!
//! Beside the tasks: the result callbacks owed (the outbox) and how the
//! last one of each kept task ended, the
//! worker-availability subscriptions, and the commands whose ready set
//! just went from empty to non-empty (announced to subscribers).

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

use codeq_core::{
    Command, Priority, QueueSettings, QueueStats, Subscription, TaskId, TaskState, TaskStatus,
    Timestamp,
};
use uuid::Uuid;

use super::log::Location;
use super::queues::{Commands, DeadKey, STATUSES, status_slot};
use super::records::Callback;
use crate::store::{CommandFilter, SettledCallback};

/// "No time": a lease or completion a task does not have.
const NO_TIME: Timestamp = Timestamp(i64::MIN);

/// What a record costs in the journal besides its value: the operation
/// header and key, and a share of a frame header.
pub const RECORD_OVERHEAD: u64 = 3 + 16 + 4 + 25;

/// The texts of a task few tasks have.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Texts {
    worker_id: Option<Box<str>>,
    error: Option<Box<str>>,
    last_reason: Option<Box<str>>,
    idempotency_key: Option<Box<str>>,
}

impl Texts {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// What memory keeps of one task (see the module docs).
#[derive(Debug, Clone)]
pub struct Entry {
    command: u32,
    /// Claim priority.
    pub priority: Priority,
    status: TaskStatus,
    dead_lettered: bool,
    /// The task has a result callback URL.
    pub has_webhook: bool,
    attempts: u32,
    /// Delivery limit.
    pub max_attempts: u32,
    replays: u32,
    round_start: u32,
    visible_at: Timestamp,
    updated_at: Timestamp,
    lease_until: Timestamp,
    completed_at: Timestamp,
    texts: Option<Box<Texts>>,
    /// Where its body lies.
    pub body: Location,
    /// Where its state record lies.
    pub state_at: Location,
    result: Location,
    /// The last batch that changed it: answers about it wait until this
    /// batch is durable.
    pub seq: u64,
}

/// A location that points nowhere (a task without a result, or a record
/// not yet read back during recovery).
const NOWHERE: Location = Location { segment: 0, offset: 0, len: 0 };

fn text(value: Option<&str>) -> Option<Box<str>> {
    value.map(Box::from)
}

fn time(value: Option<Timestamp>) -> Timestamp {
    value.unwrap_or(NO_TIME)
}

fn maybe(value: Timestamp) -> Option<Timestamp> {
    (value != NO_TIME).then_some(value)
}

/// Where an entry sits in the indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Place {
    command: u32,
    priority: Priority,
    status: TaskStatus,
    dead_lettered: bool,
    visible_at: Timestamp,
    lease_until: Timestamp,
    ended: Timestamp,
}

impl Entry {
    /// A new task's entry in recovery, for command number `command`.
    pub fn recovered(
        command: u32,
        priority: Priority,
        max_attempts: u32,
        key: Option<&str>,
    ) -> Self {
        Self::new(command, priority, max_attempts, key)
    }

    /// Recovery: the body's facts, learnt after its state.
    pub fn set_body_facts(
        &mut self,
        command: u32,
        priority: Priority,
        max_attempts: u32,
        key: Option<&str>,
    ) {
        self.command = command;
        self.priority = priority;
        self.max_attempts = max_attempts;
        if let Some(key) = key {
            self.texts.get_or_insert_with(Box::default).idempotency_key = Some(Box::from(key));
        }
    }

    /// A free slot's filler.
    fn vacant() -> Self {
        Self::new(u32::MAX, Priority::default(), 0, None)
    }

    fn place(&self) -> Place {
        Place {
            command: self.command,
            priority: self.priority,
            status: self.status,
            dead_lettered: self.dead_lettered,
            visible_at: self.visible_at,
            lease_until: self.lease_until,
            ended: maybe(self.completed_at).unwrap_or(self.updated_at),
        }
    }

    fn new(command: u32, priority: Priority, max_attempts: u32, key: Option<&str>) -> Self {
        let texts = Texts { idempotency_key: text(key), ..Texts::default() };
        Self {
            command,
            priority,
            status: TaskStatus::Pending,
            dead_lettered: false,
            has_webhook: false,
            attempts: 0,
            max_attempts,
            replays: 0,
            round_start: 0,
            visible_at: Timestamp(0),
            updated_at: Timestamp(0),
            lease_until: NO_TIME,
            completed_at: NO_TIME,
            texts: (!texts.is_empty()).then(|| Box::new(texts)),
            body: NOWHERE,
            state_at: NOWHERE,
            result: NOWHERE,
            seq: 0,
        }
    }

    /// The task's state.
    pub fn state(&self) -> TaskState {
        let texts = self.texts.as_deref();
        let owned = |pick: fn(&Texts) -> &Option<Box<str>>| {
            texts.and_then(|texts| pick(texts).as_deref().map(str::to_string))
        };
        TaskState {
            status: self.status,
            attempts: self.attempts,
            worker_id: owned(|texts| &texts.worker_id),
            lease_until: maybe(self.lease_until),
            visible_at: self.visible_at,
            error: owned(|texts| &texts.error),
            last_reason: owned(|texts| &texts.last_reason),
            dead_lettered: self.dead_lettered,
            updated_at: self.updated_at,
            completed_at: maybe(self.completed_at),
            replays: self.replays,
            round_start: self.round_start,
        }
    }

    /// Replaces the task's state.
    pub fn set_state(&mut self, state: &TaskState) {
        self.status = state.status;
        self.attempts = state.attempts;
        self.replays = state.replays;
        self.round_start = state.round_start;
        self.lease_until = time(state.lease_until);
        self.visible_at = state.visible_at;
        self.dead_lettered = state.dead_lettered;
        self.updated_at = state.updated_at;
        self.completed_at = time(state.completed_at);
        let texts = Texts {
            worker_id: text(state.worker_id.as_deref()),
            error: text(state.error.as_deref()),
            last_reason: text(state.last_reason.as_deref()),
            idempotency_key: self.texts.as_mut().and_then(|texts| texts.idempotency_key.take()),
        };
        self.texts = (!texts.is_empty()).then(|| Box::new(texts));
    }

    /// True when its error or last reason contains `text`.
    pub fn mentions(&self, text: &str) -> bool {
        self.texts.as_deref().is_some_and(|texts| {
            [&texts.error, &texts.last_reason]
                .into_iter()
                .any(|field| field.as_deref().is_some_and(|value| value.contains(text)))
        })
    }

    /// True when it is a dead letter.
    pub fn is_dead_letter(&self) -> bool {
        self.dead_lettered && self.status == TaskStatus::Failed
    }

    /// Deliveries so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Which delivery of its round its current one is.
    pub fn attempt_in_round(&self) -> u32 {
        codeq_core::lifecycle::attempt_in_round(self.attempts, self.round_start)
    }

    /// Its idempotency key.
    pub fn idempotency_key(&self) -> Option<&str> {
        self.texts.as_deref().and_then(|texts| texts.idempotency_key.as_deref())
    }

    /// Where its result record lies, once it has one.
    pub fn result(&self) -> Option<Location> {
        (self.result.len > 0).then_some(self.result)
    }

    /// Sets where its result record lies.
    pub fn set_result(&mut self, at: Location) {
        self.result = at;
    }

    /// Forgets its result record (deleted).
    pub fn clear_result(&mut self) {
        self.result = NOWHERE;
    }

    /// Bytes its records take in the journal.
    pub fn record_bytes(&self) -> u64 {
        let record = |at: Location| u64::from(at.len) + RECORD_OVERHEAD;
        record(self.body) + record(self.state_at) + self.result().map_or(0, record)
    }
}

/// A result callback owed, as memory keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owed {
    /// The delivery series, attempts and next attempt.
    pub callback: Callback,
    /// Where its record lies.
    pub at: Location,
    /// The batch that last wrote it.
    pub seq: u64,
}

/// How a task's last result callback ended, as memory keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    /// The outcome and attempts.
    pub settled: SettledCallback,
    /// Where its record lies.
    pub at: Location,
    /// The batch that last wrote it.
    pub seq: u64,
}

/// The commands a claim filter names (`None`: every command).
fn filter_commands(filter: &CommandFilter) -> Option<&[Command]> {
    match filter {
        CommandFilter::All => None,
        CommandFilter::Only(commands) => Some(commands),
    }
}

/// Which dead letters a page shows.
#[derive(Debug, Clone, Default)]
pub struct DeadWindow {
    /// Only those that failed before this time.
    pub before: Option<Timestamp>,
    /// Only those that failed after this time.
    pub after: Option<Timestamp>,
    /// Only those after this key (the previous page's last).
    pub cursor: Option<DeadKey>,
    /// Only those whose error or last reason contains this text.
    pub text: Option<String>,
}

/// A subscription, as memory keeps it.
#[derive(Debug, Clone)]
pub struct Subscribed {
    /// The subscription.
    pub subscription: Subscription,
    /// Where its record lies.
    pub at: Location,
    /// The batch that last wrote it.
    pub seq: u64,
}

/// Every live task and the indexes over them.
#[derive(Debug, Default)]
pub struct Tasks {
    /// Worker-availability subscriptions, by id.
    subscriptions: HashMap<Uuid, Subscribed>,
    /// Commands (by number) whose ready set went from empty to non-empty
    /// since [`Tasks::take_woken`] last ran.
    woken: Vec<u32>,
    /// Commands (by number) where a claim held back by a limit may now
    /// take a task (a task left `maxInFlight`, settings changed), since
    /// [`Tasks::take_freed`] last ran.
    freed: Vec<u32>,
    /// Result callbacks owed, by task, and by when they are due.
    owed: HashMap<TaskId, Owed>,
    owed_due: BTreeSet<(Timestamp, TaskId)>,
    /// How the last callback of a task ended, while its task is kept.
    settled: HashMap<TaskId, Settled>,
    slots: HashMap<TaskId, u32>,
    entries: Vec<Entry>,
    free: Vec<u32>,
    commands: Commands,
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

/// A new task's entry, as a plan describes it (before its command has a
/// number).
#[derive(Debug, Clone)]
pub struct NewEntry {
    /// Its queue.
    pub command: Command,
    /// Claim priority.
    pub priority: Priority,
    /// Delivery limit.
    pub max_attempts: u32,
    /// Its idempotency key.
    pub idempotency_key: Option<Box<str>>,
    /// It has a result callback URL.
    pub has_webhook: bool,
}

impl Tasks {
    /// The task `id`.
    pub fn get(&self, id: TaskId) -> Option<&Entry> {
        self.slots.get(&id).and_then(|slot| self.entries.get(*slot as usize))
    }

    /// The command of `entry`.
    pub fn command_of(&self, entry: &Entry) -> &Command {
        // Every entry's command was interned before the entry was stored.
        &self.commands.names[entry.command as usize]
    }

    /// How many tasks are live.
    pub fn len(&self) -> usize {
        self.slots.len()
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

    /// The entry of a new task (its state and records to be set).
    pub fn new_entry(&mut self, new: &NewEntry) -> Entry {
        let command = self.commands.intern(&new.command);
        let mut entry =
            Entry::new(command, new.priority, new.max_attempts, new.idempotency_key.as_deref());
        entry.has_webhook = new.has_webhook;
        entry
    }

    /// Adds a new task, or replaces one, and indexes it. A pending task
    /// visible at `now` or earlier is ready.
    pub fn put(&mut self, id: TaskId, entry: Entry, now: Timestamp) {
        if self.slots.contains_key(&id) {
            self.remove(id, now);
        }
        if let Some(key) = entry.idempotency_key() {
            self.idempotency.insert(Box::from(key), id);
        }
        self.live_bytes += entry.record_bytes();
        self.index(id, entry.place(), now);
        let slot = match self.free.pop() {
            Some(slot) => {
                self.entries[slot as usize] = entry;
                slot
            }
            None => {
                self.entries.push(entry);
                u32::try_from(self.entries.len() - 1).unwrap_or(u32::MAX)
            }
        };
        self.slots.insert(id, slot);
    }

    /// Changes a task in place (its state, its records), re-indexing it.
    pub fn update(&mut self, id: TaskId, now: Timestamp, change: impl FnOnce(&mut Entry)) {
        let Some(slot) = self.slots.get(&id).copied() else { return };
        let entry = &mut self.entries[slot as usize];
        let (before, bytes_before) = (entry.place(), entry.record_bytes());
        change(entry);
        let (after, bytes_after) = (entry.place(), entry.record_bytes());
        self.live_bytes = (self.live_bytes + bytes_after).saturating_sub(bytes_before);
        if before != after {
            self.unindex(id, before, now);
            self.index(id, after, now);
        }
    }

    /// Removes a task from memory and every index.
    pub fn remove(&mut self, id: TaskId, now: Timestamp) -> Option<Entry> {
        let slot = self.slots.remove(&id)?;
        let entry = std::mem::replace(&mut self.entries[slot as usize], Entry::vacant());
        self.free.push(slot);
        self.live_bytes = self.live_bytes.saturating_sub(entry.record_bytes());
        if let Some(key) = entry.idempotency_key()
            && self.idempotency.get(key) == Some(&id)
        {
            self.idempotency.remove(key);
        }
        self.unindex(id, entry.place(), now);
        Some(entry)
    }

    /// Updates where a record of task `id` lies (compaction moved it).
    pub fn relocate(&mut self, id: TaskId, update: impl FnOnce(&mut Entry), seq: u64) {
        let Some(slot) = self.slots.get(&id).copied() else { return };
        let entry = &mut self.entries[slot as usize];
        let before = entry.record_bytes();
        update(entry);
        entry.seq = entry.seq.max(seq);
        self.live_bytes = (self.live_bytes + entry.record_bytes()).saturating_sub(before);
    }

    fn index(&mut self, id: TaskId, place: Place, now: Timestamp) {
        let Some(queue) = self.commands.queue(place.command) else { return };
        queue.by_status[status_slot(place.status)].insert(id);
        match place.status {
            TaskStatus::Pending if place.visible_at <= now => {
                if queue.ready.is_empty() {
                    self.woken.push(place.command);
                }
                queue.ready.insert((Reverse(place.priority), place.visible_at, id));
            }
            TaskStatus::Pending => {
                queue.delayed += 1;
                self.delayed.insert((place.visible_at, id));
            }
            TaskStatus::InProgress => {
                queue.in_progress += 1;
                self.leases.insert((maybe(place.lease_until).unwrap_or(now), id));
            }
            TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled => {
                if place.dead_lettered {
                    queue.dead.insert((place.ended, id));
                }
                self.terminal.insert((place.ended, id));
            }
        }
    }

    fn unindex(&mut self, id: TaskId, place: Place, now: Timestamp) {
        let Some(queue) = self.commands.queue(place.command) else { return };
        queue.by_status[status_slot(place.status)].remove(&id);
        match place.status {
            TaskStatus::Pending => {
                if self.delayed.remove(&(place.visible_at, id)) {
                    queue.delayed = queue.delayed.saturating_sub(1);
                } else {
                    queue.ready.remove(&(Reverse(place.priority), place.visible_at, id));
                }
            }
            TaskStatus::InProgress => {
                queue.in_progress = queue.in_progress.saturating_sub(1);
                self.leases.remove(&(maybe(place.lease_until).unwrap_or(now), id));
                if queue.settings.max_in_flight.is_some() {
                    // A place under the limit: a parked claim may take a task.
                    self.freed.push(place.command);
                }
            }
            TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled => {
                if place.dead_lettered {
                    queue.dead.remove(&(place.ended, id));
                }
                self.terminal.remove(&(place.ended, id));
            }
        }
    }

    /// Moves a delayed task that became visible at `now` into its ready
    /// queue; its command.
    pub fn promote(&mut self, id: TaskId, now: Timestamp) -> Option<Command> {
        let slot = self.slots.get(&id).copied()?;
        let place = self.entries[slot as usize].place();
        self.unindex(id, place, now);
        self.index(id, place, now);
        self.commands.names.get(place.command as usize).cloned()
    }

    /// Recovery: the slot of task `id`, with a new entry from `make` when
    /// it has none yet (not indexed: [`Tasks::index_all`] does that).
    pub fn recovered_slot(&mut self, id: TaskId, make: impl FnOnce(&mut Self) -> Entry) -> u32 {
        if let Some(slot) = self.slots.get(&id) {
            return *slot;
        }
        let entry = make(self);
        let slot = match self.free.pop() {
            Some(slot) => {
                self.entries[slot as usize] = entry;
                slot
            }
            None => {
                self.entries.push(entry);
                u32::try_from(self.entries.len() - 1).unwrap_or(u32::MAX)
            }
        };
        self.slots.insert(id, slot);
        slot
    }

    /// Recovery: the entry in `slot`.
    pub fn recovered_entry(&mut self, slot: u32) -> &mut Entry {
        &mut self.entries[slot as usize]
    }

    /// Recovery: the entry of task `id`, when one was replayed.
    pub fn recovered_entry_of(&mut self, id: TaskId) -> Option<&mut Entry> {
        let slot = *self.slots.get(&id)?;
        self.entries.get_mut(slot as usize)
    }

    /// Recovery: forgets task `id` (deleted); its slot, when it had one.
    pub fn forget_recovered(&mut self, id: TaskId) -> Option<u32> {
        let slot = self.slots.remove(&id)?;
        self.entries[slot as usize] = Entry::vacant();
        self.free.push(slot);
        Some(slot)
    }

    /// Recovery: the number of a command (interned).
    pub fn command_number(&mut self, command: &Command) -> u32 {
        self.commands.intern(command)
    }

    /// Recovery: indexes every task, once all are replayed. `complete`
    /// tells whether the task in a slot has every record it needs.
    pub fn index_all(
        &mut self,
        now: Timestamp,
        complete: impl Fn(u32) -> bool,
    ) -> Result<(), TaskId> {
        let slots: Vec<(TaskId, u32)> = self.slots.iter().map(|(id, slot)| (*id, *slot)).collect();
        for (id, slot) in slots {
            if !complete(slot) {
                return Err(id);
            }
            let entry = &self.entries[slot as usize];
            let (place, bytes) = (entry.place(), entry.record_bytes());
            if let Some(key) = entry.idempotency_key() {
                self.idempotency.insert(Box::from(key), id);
            }
            self.live_bytes += bytes;
            self.index(id, place, now);
        }
        Ok(())
    }

    /// True when `command` has been used (its record is stored).
    pub fn knows(&self, command: &Command) -> bool {
        self.command_record(command).is_some()
    }

    /// How many commands are known.
    pub fn command_count(&self) -> usize {
        self.commands.names.len()
    }

    /// Remembers a command ever used, and where its record lies.
    pub fn add_command(&mut self, command: &Command, record: Location) {
        let number = self.commands.intern(command);
        let Some(queue) = self.commands.queue(number) else { return };
        self.live_bytes += u64::from(record.len) + RECORD_OVERHEAD;
        if let Some(old) = queue.record.replace(record) {
            self.live_bytes = self.live_bytes.saturating_sub(u64::from(old.len) + RECORD_OVERHEAD);
        }
    }

    /// Where the record of `command` lies.
    pub fn command_record(&self, command: &Command) -> Option<Location> {
        let number = self.commands.number(command)?;
        self.commands.queues.get(number as usize).and_then(|queue| queue.record)
    }

    /// The live task holding an idempotency key.
    pub fn idempotent(&self, key: &str) -> Option<TaskId> {
        self.idempotency.get(key).copied()
    }

    /// The best `count` ready tasks among `filter`'s commands that the
    /// commands' settings let a claim take at `now`, in claim order:
    /// highest priority, then earliest visible, then oldest id. Takes the
    /// rate limits' tokens for them.
    pub fn claimable(&self, filter: &CommandFilter, count: usize, now: Timestamp) -> Vec<TaskId> {
        let queues = &self.commands.queues;
        let numbers = self.commands.numbers_of(filter_commands(filter));
        let mut heads: Vec<_> = numbers
            .iter()
            .map(|number| &queues[*number as usize])
            .filter(|queue| !queue.ready.is_empty())
            .map(|queue| (queue, queue.capacity(count, now), queue.ready.iter(), 0usize))
            .filter(|(_, capacity, ..)| *capacity > 0)
            .collect();
        let mut next: Vec<_> = heads.iter_mut().map(|(_, _, ready, _)| ready.next()).collect();
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
            let (_, capacity, ready, taken) = &mut heads[index];
            *taken += 1;
            next[index] = if *taken < *capacity { ready.next() } else { None };
        }
        for (queue, _, _, taken) in &heads {
            queue.take_tokens(*taken);
        }
        best
    }

    /// When a rate limit next lets a ready task of `filter`'s commands
    /// through, when rate limits are all that hold them back.
    pub fn next_claimable_at(&self, filter: &CommandFilter, now: Timestamp) -> Option<Timestamp> {
        self.commands
            .numbers_of(filter_commands(filter))
            .iter()
            .filter_map(|number| self.commands.queues[*number as usize].next_token_at(now))
            .min()
    }

    /// Commands where a claim held back by a limit may now take a task,
    /// since the last call.
    pub fn take_freed(&mut self) -> Vec<Command> {
        let mut freed = std::mem::take(&mut self.freed);
        freed.sort_unstable();
        freed.dedup();
        freed
            .into_iter()
            .filter_map(|number| self.commands.names.get(number as usize).cloned())
            .collect()
    }

    /// Replaces the settings of `command` (stored at `at` by batch `seq`).
    pub fn set_settings(
        &mut self,
        command: &Command,
        settings: QueueSettings,
        stored: (Location, u64),
        now: Timestamp,
    ) {
        let number = self.commands.intern(command);
        let Some(queue) = self.commands.queue(number) else { return };
        queue.set_settings(settings, now);
        self.live_bytes += u64::from(stored.0.len) + RECORD_OVERHEAD;
        if let Some((old, _)) = queue.settings_record.replace(stored) {
            self.live_bytes = self.live_bytes.saturating_sub(u64::from(old.len) + RECORD_OVERHEAD);
        }
        self.freed.push(number);
    }

    /// The settings of `command`, and the batch that stored them (0 for
    /// the defaults).
    pub fn settings(&self, command: &Command) -> (QueueSettings, u64) {
        self.commands.queue_of(command).map_or((QueueSettings::default(), 0), |queue| {
            (queue.settings, queue.settings_record.map_or(0, |(_, seq)| seq))
        })
    }

    /// Where the settings record of `command` lies.
    pub fn settings_record(&self, command: &Command) -> Option<Location> {
        self.commands.queue_of(command).and_then(|queue| queue.settings_record).map(|(at, _)| at)
    }

    /// Updates where the settings record of `command` lies (compaction).
    pub fn relocate_settings(&mut self, command: &Command, at: Location, seq: u64) {
        let Some(number) = self.commands.number(command) else { return };
        if let Some(queue) = self.commands.queue(number)
            && let Some((place, stored)) = &mut queue.settings_record
        {
            *place = at;
            *stored = (*stored).max(seq);
        }
    }

    /// Tasks newest first (by id, that is by creation), of `command`
    /// (every command for `None`) and `status` (every status for `None`),
    /// older than `before`, at most `limit`.
    pub fn list(
        &self,
        command: Option<&Command>,
        status: Option<TaskStatus>,
        before: Option<TaskId>,
        limit: usize,
    ) -> Vec<TaskId> {
        let numbers = match command {
            Some(command) => self.commands.number(command).into_iter().collect(),
            None => self.commands.numbers_of(None),
        };
        let slots: Vec<usize> = match status {
            Some(status) => vec![status_slot(status)],
            None => (0..STATUSES).collect(),
        };
        let upper = before.map_or(Bound::Unbounded, Bound::Excluded);
        let mut heads: Vec<_> = numbers
            .iter()
            .flat_map(|number| {
                let queue = &self.commands.queues[*number as usize];
                slots
                    .iter()
                    .map(move |slot| queue.by_status[*slot].range((Bound::Unbounded, upper)).rev())
            })
            .collect();
        let mut next: Vec<Option<&TaskId>> = heads.iter_mut().map(Iterator::next).collect();
        let mut newest = Vec::with_capacity(limit.min(1024));
        while newest.len() < limit {
            let Some((index, id)) = next
                .iter()
                .enumerate()
                .filter_map(|(index, id)| id.map(|id| (index, id)))
                .max_by_key(|(_, id)| **id)
            else {
                break;
            };
            newest.push(*id);
            next[index] = heads[index].next();
        }
        newest
    }

    /// Dead letters of `command`, newest first, in `window`; at most
    /// `limit`.
    pub fn dead_letters(
        &self,
        command: &Command,
        window: &DeadWindow,
        limit: usize,
    ) -> Vec<DeadKey> {
        let Some(queue) = self.commands.queue_of(command) else { return Vec::new() };
        let upper = match window.cursor {
            Some(cursor) => Bound::Excluded(cursor),
            None => Bound::Unbounded,
        };
        queue
            .dead
            .range((Bound::Unbounded, upper))
            .rev()
            .filter(|(at, _)| window.before.is_none_or(|before| *at < before))
            .take_while(|(at, _)| window.after.is_none_or(|after| *at > after))
            .filter(|(_, id)| {
                window
                    .text
                    .as_deref()
                    .is_none_or(|text| self.get(*id).is_some_and(|entry| entry.mentions(text)))
            })
            .take(limit)
            .copied()
            .collect()
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

    /// Ids of terminal tasks that ended at or before `before` (not those
    /// whose result callback is still owed: retention waits for it).
    pub fn ended_before(&self, before: Timestamp, limit: usize) -> Vec<TaskId> {
        self.terminal
            .iter()
            .take_while(|(at, _)| *at <= before)
            .filter(|(_, id)| !self.owed.contains_key(id))
            .take(limit)
            .map(|(_, id)| *id)
            .collect()
    }

    /// Records (or replaces) the result callback owed for task `id`.
    pub fn owe(&mut self, id: TaskId, owed: Owed) {
        self.forgive(id);
        self.live_bytes += u64::from(owed.at.len) + RECORD_OVERHEAD;
        self.owed_due.insert((owed.callback.next_at, id));
        self.owed.insert(id, owed);
    }

    /// Keeps how the callback of task `id` ended, in place of the one
    /// owed.
    pub fn settle(&mut self, id: TaskId, settled: Settled) {
        self.forgive(id);
        self.live_bytes += u64::from(settled.at.len) + RECORD_OVERHEAD;
        self.settled.insert(id, settled);
    }

    /// How the last callback of task `id` ended, when kept.
    pub fn settled(&self, id: TaskId) -> Option<&Settled> {
        self.settled.get(&id)
    }

    /// Whether task `id` has an outbox record (owed or settled).
    pub fn has_callback_record(&self, id: TaskId) -> bool {
        self.owed.contains_key(&id) || self.settled.contains_key(&id)
    }

    /// Forgets the callback of task `id`, owed or settled (its record is
    /// deleted); the one owed, if any.
    pub fn forgive(&mut self, id: TaskId) -> Option<Owed> {
        if let Some(settled) = self.settled.remove(&id) {
            let bytes = u64::from(settled.at.len) + RECORD_OVERHEAD;
            self.live_bytes = self.live_bytes.saturating_sub(bytes);
        }
        let owed = self.owed.remove(&id)?;
        self.owed_due.remove(&(owed.callback.next_at, id));
        self.live_bytes = self.live_bytes.saturating_sub(u64::from(owed.at.len) + RECORD_OVERHEAD);
        Some(owed)
    }

    /// The callback owed for task `id`.
    pub fn owed(&self, id: TaskId) -> Option<&Owed> {
        self.owed.get(&id)
    }

    /// Callbacks due at `now`, earliest first.
    pub fn owed_due(&self, now: Timestamp, limit: usize) -> Vec<(TaskId, Owed)> {
        self.owed_due
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(limit)
            .filter_map(|(_, id)| self.owed.get(id).map(|owed| (*id, *owed)))
            .collect()
    }

    /// When the next callback is due; how many are owed.
    pub fn owed_summary(&self) -> (Option<Timestamp>, usize) {
        (self.owed_due.first().map(|(at, _)| *at), self.owed.len())
    }

    /// Updates where a callback record, owed or settled, lies
    /// (compaction moved it).
    pub fn relocate_callback(&mut self, id: TaskId, at: Location, seq: u64) {
        if let Some(owed) = self.owed.get_mut(&id) {
            owed.at = at;
            owed.seq = owed.seq.max(seq);
        } else if let Some(settled) = self.settled.get_mut(&id) {
            settled.at = at;
            settled.seq = settled.seq.max(seq);
        }
    }

    /// The commands whose ready set went from empty to non-empty since the
    /// last call and still has tasks, each with its ready count.
    pub fn take_woken(&mut self) -> Vec<(Command, u64)> {
        let mut woken = std::mem::take(&mut self.woken);
        woken.sort_unstable();
        woken.dedup();
        woken
            .into_iter()
            .filter_map(|number| {
                let ready = self.commands.queues.get(number as usize)?.ready.len() as u64;
                let command = self.commands.names.get(number as usize)?;
                (ready > 0).then(|| (command.clone(), ready))
            })
            .collect()
    }

    /// Records (or replaces) a subscription.
    pub fn subscribe(&mut self, subscribed: Subscribed) {
        self.unsubscribe(subscribed.subscription.id);
        self.live_bytes += u64::from(subscribed.at.len) + RECORD_OVERHEAD;
        self.subscriptions.insert(subscribed.subscription.id, subscribed);
    }

    /// Forgets a subscription.
    pub fn unsubscribe(&mut self, id: Uuid) -> Option<Subscribed> {
        let gone = self.subscriptions.remove(&id)?;
        self.live_bytes = self.live_bytes.saturating_sub(u64::from(gone.at.len) + RECORD_OVERHEAD);
        Some(gone)
    }

    /// The subscription `id`.
    pub fn subscription(&self, id: Uuid) -> Option<&Subscribed> {
        self.subscriptions.get(&id)
    }

    /// Every subscription.
    pub fn subscriptions(&self) -> impl Iterator<Item = &Subscribed> {
        self.subscriptions.values()
    }

    /// Updates where a subscription record lies (compaction moved it).
    pub fn relocate_subscription(&mut self, id: Uuid, at: Location, seq: u64) {
        if let Some(subscribed) = self.subscriptions.get_mut(&id) {
            subscribed.at = at;
            subscribed.seq = subscribed.seq.max(seq);
        }
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
        match self.commands.number(command) {
            Some(number) => self.commands.queues[number as usize].stats(command),
            None => QueueStats::empty(command.clone()),
        }
    }

    /// Depths of every command ever used, by name.
    pub fn all_stats(&self) -> Vec<QueueStats> {
        let mut stats: Vec<_> = self
            .commands
            .names
            .iter()
            .zip(&self.commands.queues)
            .filter(|(_, queue)| queue.record.is_some())
            .map(|(command, queue)| queue.stats(command))
            .collect();
        stats.sort_by(|a, b| a.command.cmp(&b.command));
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_small() {
        assert!(std::mem::size_of::<Entry>() <= 112, "{}", std::mem::size_of::<Entry>());
    }

    #[test]
    fn an_entry_keeps_every_field_of_a_state() {
        let mut tasks = Tasks::default();
        let new = NewEntry {
            command: Command::parse("c").unwrap(),
            priority: Priority::clamped(4),
            max_attempts: 3,
            idempotency_key: Some("k".into()),
            has_webhook: false,
        };
        let mut entry = tasks.new_entry(&new);
        let state = TaskState {
            status: TaskStatus::Failed,
            attempts: 2,
            worker_id: Some("w".into()),
            lease_until: None,
            visible_at: Timestamp(5),
            error: Some("boom".into()),
            last_reason: Some("flaky".into()),
            dead_lettered: true,
            updated_at: Timestamp(7),
            completed_at: Some(Timestamp(7)),
            replays: 2,
            round_start: 2,
        };
        entry.set_state(&state);
        assert_eq!(entry.state(), state);
        assert_eq!(entry.idempotency_key(), Some("k"));
        entry.set_state(&TaskState::new(Timestamp(9), Timestamp(9)));
        assert_eq!(entry.idempotency_key(), Some("k"), "the key outlives the state's texts");
    }
}
