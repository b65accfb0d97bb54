//! Tasks for store tests that talk to a store directly.

#![allow(dead_code, clippy::unwrap_used)]

use codeq_core::{Command, Priority, Task, TaskId, TaskState, Timestamp};

/// A task of `command`, made and visible at `now`, with an empty payload.
pub fn task_of(command: &str, now: Timestamp) -> Task {
    Task {
        id: TaskId::generate(),
        command: Command::parse(command).unwrap(),
        payload: "{}".into(),
        priority: Priority::clamped(0),
        webhook: None,
        max_attempts: 3,
        idempotency_key: None,
        run_at: None,
        created_at: now,
        created_by: "p".into(),
        state: TaskState::new(now, now),
    }
}
