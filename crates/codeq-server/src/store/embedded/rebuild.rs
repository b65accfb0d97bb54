//! Rebuilds the memory of the embedded backend from the journal at start.
//!
//! The journal is replayed change by change; a task's records may arrive
//! in any order (compaction rewrites live records at the end of the
//! journal), so each task is gathered until the end, then checked whole:
//! a task with a state but no body (or the reverse) is damage.

use std::collections::HashMap;

use codeq_core::{Command, TaskId, Timestamp};

use super::log::{Location, Replay, Table};
use super::records::{Body, decode_state};
use super::state::{Entry, Tasks};
use crate::store::{StoreError, StoreResult};

/// What a task's body tells memory.
struct BodyFacts {
    command: Command,
    priority: codeq_core::Priority,
    max_attempts: u32,
    idempotency_key: Option<Box<str>>,
    at: Location,
}

/// A task gathered so far.
#[derive(Default)]
struct Partial {
    body: Option<BodyFacts>,
    state: Option<(codeq_core::TaskState, Location)>,
    result: Option<Location>,
}

/// The replay target; see the module docs.
#[derive(Default)]
pub struct Rebuild {
    tasks: HashMap<TaskId, Partial>,
    commands: HashMap<Command, Location>,
    with_body: u64,
}

fn task_id(key: &[u8]) -> Result<TaskId, String> {
    let bytes: [u8; 16] = key.try_into().map_err(|_| "a task key is not 16 bytes".to_string())?;
    Ok(TaskId::from_bytes(bytes))
}

fn text(error: StoreError) -> String {
    error.to_string()
}

impl Replay for Rebuild {
    fn put(&mut self, table: u8, key: &[u8], value: &[u8], at: Location) -> Result<(), String> {
        match Table::from_u8(table) {
            Some(Table::Tasks) => {
                let body = Body::decode(value).map_err(text)?;
                let facts = BodyFacts {
                    command: body.command().map_err(text)?,
                    priority: body.priority(),
                    max_attempts: body.max_attempts(),
                    idempotency_key: body.idempotency_key().map(Box::from),
                    at,
                };
                let partial = self.tasks.entry(task_id(key)?).or_default();
                if partial.body.replace(facts).is_none() {
                    self.with_body += 1;
                }
            }
            Some(Table::States) => {
                let state = decode_state(value).map_err(text)?;
                self.tasks.entry(task_id(key)?).or_default().state = Some((state, at));
            }
            Some(Table::Results) => {
                self.tasks.entry(task_id(key)?).or_default().result = Some(at);
            }
            Some(Table::Commands) => {
                let name = std::str::from_utf8(key).map_err(|_| "a command name is not UTF-8")?;
                let command =
                    Command::parse(name).map_err(|e| format!("stored command {name:?}: {e}"))?;
                self.commands.insert(command, at);
            }
            None => return Err(format!("a record of unknown table {table}")),
        }
        Ok(())
    }

    fn delete(&mut self, table: u8, key: &[u8]) -> Result<(), String> {
        if Table::from_u8(table) == Some(Table::Tasks)
            && let Some(partial) = self.tasks.remove(&task_id(key)?)
            && partial.body.is_some()
        {
            self.with_body -= 1;
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
        let mut tasks = Tasks::default();
        for (command, at) in self.commands {
            tasks.add_command(command, at);
        }
        for (id, partial) in self.tasks {
            let (Some(body), Some((state, state_at))) = (partial.body, partial.state) else {
                return Err(StoreError::Corrupt(format!(
                    "task {id} lacks its body or its state record"
                )));
            };
            let entry = Entry {
                command: body.command,
                priority: body.priority,
                max_attempts: body.max_attempts,
                idempotency_key: body.idempotency_key,
                state,
                body: body.at,
                state_at,
                result: partial.result,
                seq: 0,
            };
            tasks.put(id, entry, now);
        }
        Ok(tasks)
    }
}
