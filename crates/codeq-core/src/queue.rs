//! `QueueStats`: how many tasks of a command are in each state.

use serde::{Deserialize, Serialize};

use crate::command::Command;

/// Depths of one command's queues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueStats {
    /// The command.
    pub command: Command,
    /// Pending and visible now.
    pub ready: u64,
    /// Pending until a later time (scheduled or backing off).
    pub delayed: u64,
    /// Claimed under a lease.
    pub in_progress: u64,
    /// Dead-lettered after their last delivery.
    pub dlq: u64,
}

impl QueueStats {
    /// All zeros, for a command never used.
    pub fn empty(command: Command) -> Self {
        Self { command, ready: 0, delayed: 0, in_progress: 0, dlq: 0 }
    }
}
