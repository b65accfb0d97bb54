//! Rebuilds the memory of the embedded backend from the journal at start.
//!
//! The journal is replayed change by change straight into the entries the
//! store keeps (no larger intermediate form: recovering a million tasks
//! takes the memory of a million entries). A task's records may arrive in
//! any order (compaction rewrites live records at the end of the
//! journal), so indexes are built once everything is replayed, after
//! checking that every task has both its body and its state.

use codeq_core::{Command, Priority, TaskId, Timestamp};

use super::log::{Location, Replay, Table};
use super::records::{
    Body, OutboxRecord, decode_outbox, decode_settings, decode_state, decode_subscription,
};
use super::state::{Entry, Owed, Settled, Subscribed, Tasks};
use crate::store::{StoreError, StoreResult};

const HAS_BODY: u8 = 1;
const HAS_STATE: u8 = 2;

/// The replay target; see the module docs.
#[derive(Default)]
pub struct Rebuild {
    tasks: Tasks,
    /// Which records each slot has received.
    received: Vec<u8>,
    with_body: u64,
}

fn task_id(key: &[u8]) -> Result<TaskId, String> {
    let bytes: [u8; 16] = key.try_into().map_err(|_| "a task key is not 16 bytes".to_string())?;
    Ok(TaskId::from_bytes(bytes))
}

fn stored_command(key: &[u8]) -> Result<Command, String> {
    let name = std::str::from_utf8(key).map_err(|_| "a command name is not UTF-8")?;
    Command::parse(name).map_err(|e| format!("stored command {name:?}: {e}"))
}

fn text(error: StoreError) -> String {
    error.to_string()
}

impl Rebuild {
    /// The slot of task `id` (a placeholder entry when new) and what it has
    /// received so far.
    fn slot(&mut self, id: TaskId) -> (u32, &mut u8) {
        let slot =
            self.tasks.recovered_slot(id, |_| Entry::recovered(0, Priority::default(), 0, None));
        let index = slot as usize;
        if self.received.len() <= index {
            self.received.resize(index + 1, 0);
        }
        (slot, &mut self.received[index])
    }

    fn put_body(&mut self, id: TaskId, value: &[u8], at: Location) -> Result<(), String> {
        let body = Body::decode(value).map_err(text)?;
        let command = self.tasks.command_number(&body.command().map_err(text)?);
        let (slot, received) = self.slot(id);
        let first = *received & HAS_BODY == 0;
        *received |= HAS_BODY;
        let entry = self.tasks.recovered_entry(slot);
        entry.set_body_facts(command, body.priority(), body.max_attempts(), body.idempotency_key());
        entry.has_webhook = body.webhook().is_some();
        entry.body = at;
        if first {
            self.with_body += 1;
        }
        Ok(())
    }

    fn put_state(&mut self, id: TaskId, value: &[u8], at: Location) -> Result<(), String> {
        let state = decode_state(value).map_err(text)?;
        let (slot, received) = self.slot(id);
        *received |= HAS_STATE;
        let entry = self.tasks.recovered_entry(slot);
        entry.set_state(&state);
        entry.state_at = at;
        Ok(())
    }
}

impl Replay for Rebuild {
    fn put(&mut self, table: u8, key: &[u8], value: &[u8], at: Location) -> Result<(), String> {
        match Table::from_u8(table) {
            Some(Table::Tasks) => self.put_body(task_id(key)?, value, at)?,
            Some(Table::States) => self.put_state(task_id(key)?, value, at)?,
            Some(Table::Results) => {
                let (slot, _) = self.slot(task_id(key)?);
                self.tasks.recovered_entry(slot).set_result(at);
            }
            Some(Table::Outbox) => match decode_outbox(value).map_err(text)? {
                OutboxRecord::Owed(callback) => {
                    self.tasks.owe(task_id(key)?, Owed { callback, at, seq: 0 });
                }
                OutboxRecord::Settled(settled) => {
                    self.tasks.settle(task_id(key)?, Settled { settled, at, seq: 0 });
                }
            },
            Some(Table::Subscriptions) => {
                let subscription = decode_subscription(value).map_err(text)?;
                self.tasks.subscribe(Subscribed { subscription, at, seq: 0 });
            }
            Some(Table::Settings) => {
                let settings = decode_settings(value).map_err(text)?;
                let command = stored_command(key)?;
                self.tasks.set_settings(&command, settings, (at, 0), Timestamp::now());
            }
            Some(Table::Commands) => self.tasks.add_command(&stored_command(key)?, at),
            None => return Err(format!("a record of unknown table {table}")),
        }
        Ok(())
    }

    fn delete(&mut self, table: u8, key: &[u8]) -> Result<(), String> {
        match Table::from_u8(table) {
            Some(Table::Outbox) => {
                self.tasks.forgive(task_id(key)?);
                return Ok(());
            }
            Some(Table::Subscriptions) => {
                let id: [u8; 16] =
                    key.try_into().map_err(|_| "a subscription key is not 16 bytes")?;
                self.tasks.unsubscribe(uuid::Uuid::from_bytes(id));
                return Ok(());
            }
            // A replayed dead letter's record, deleted with the replay.
            Some(Table::Results) => {
                if let Some(entry) = self.tasks.recovered_entry_of(task_id(key)?) {
                    entry.clear_result();
                }
                return Ok(());
            }
            _ => {}
        }
        if Table::from_u8(table) == Some(Table::Tasks)
            && let Some(slot) = self.tasks.forget_recovered(task_id(key)?)
        {
            let received = &mut self.received[slot as usize];
            if *received & HAS_BODY != 0 {
                self.with_body -= 1;
            }
            *received = 0;
        }
        Ok(())
    }

    fn live(&self) -> u64 {
        self.with_body
    }
}

impl Rebuild {
    /// The memory of the store once every change is replayed; `now`
    /// decides which pending tasks are ready.
    pub fn finish(self, now: Timestamp) -> StoreResult<Tasks> {
        let Self { mut tasks, received, .. } = self;
        let complete =
            |slot: u32| received.get(slot as usize).is_some_and(|got| *got == HAS_BODY | HAS_STATE);
        tasks.index_all(now, complete).map_err(|id| {
            StoreError::Corrupt(format!("task {id} lacks its body or its state record"))
        })?;
        // Queues found non-empty at start are not news.
        tasks.take_woken();
        tasks.take_freed();
        Ok(tasks)
    }
}
