//! Wake-ups shared by the store and the services: "a command has ready
//! work" for long polls, "an earlier deadline exists" for the reaper, "a
//! callback is owed" for the webhook dispatcher, and "a command's ready
//! set went from empty to non-empty" for subscription notifications.
//!
//! Long polls use `notify_one` semantics: each ready event wakes at most one
//! waiter of the command and one waiter of "any command", so a busy queue
//! does not wake every idle worker for each task. A waiter registers before
//! it checks the store (no lost wake-up) and passes the wake-up on when it
//! claimed something (so a second ready task is not left unannounced).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use codeq_core::Command;
use tokio::sync::Notify;

/// The wake-up hub. Cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct Signals {
    per_command: Mutex<Notifiers>,
    any_command: Arc<Notify>,
    deadline: Notify,
    callbacks: Notify,
    /// Commands that became ready, with their ready count, not yet taken
    /// (one entry per command: a burst coalesces).
    became_ready: Mutex<HashMap<Command, u64>>,
    became_ready_notify: Notify,
}

/// The notifiers of commands that claims wait on, swept of those no claim
/// holds once there are `sweep_at`.
#[derive(Debug)]
struct Notifiers {
    map: HashMap<Command, Arc<Notify>>,
    sweep_at: usize,
}

/// The smallest size at which the notifiers are swept.
const SWEEP_AT_LEAST: usize = 1024;

impl Default for Notifiers {
    fn default() -> Self {
        Self { map: HashMap::new(), sweep_at: SWEEP_AT_LEAST }
    }
}

impl Signals {
    /// A hub with no waiters.
    pub fn new() -> Self {
        Self::default()
    }

    /// The notifier of `command`'s ready set.
    pub fn command(&self, command: &Command) -> Arc<Notify> {
        let mut notifiers = self.per_command.lock().unwrap_or_else(PoisonError::into_inner);
        if notifiers.map.len() >= notifiers.sweep_at {
            // Claims name any commands, known or not: keep only those a
            // claim holds now (a sweep each time the map doubles).
            notifiers.map.retain(|_, notify| Arc::strong_count(notify) > 1);
            notifiers.sweep_at = (notifiers.map.len() * 2).max(SWEEP_AT_LEAST);
        }
        notifiers.map.entry(command.clone()).or_default().clone()
    }

    /// How many commands have a notifier now.
    pub fn command_notifiers(&self) -> usize {
        self.per_command.lock().unwrap_or_else(PoisonError::into_inner).map.len()
    }

    /// The notifier of "some command has ready work".
    pub fn any_command(&self) -> Arc<Notify> {
        self.any_command.clone()
    }

    /// Tells waiters that `command` has ready work.
    pub fn ready(&self, command: &Command) {
        let notify = {
            let notifiers = self.per_command.lock().unwrap_or_else(PoisonError::into_inner);
            notifiers.map.get(command).cloned()
        };
        if let Some(notify) = notify {
            notify.notify_one();
        }
        self.any_command.notify_one();
    }

    /// Tells the reaper a deadline earlier than the ones it knew may exist.
    pub fn deadline_changed(&self) {
        self.deadline.notify_one();
    }

    /// Waits for [`Signals::deadline_changed`].
    pub async fn deadline_changed_wait(&self) {
        self.deadline.notified().await;
    }

    /// Tells the webhook dispatcher a result callback is owed.
    pub fn callback_owed(&self) {
        self.callbacks.notify_one();
    }

    /// Waits for [`Signals::callback_owed`].
    pub async fn callback_owed_wait(&self) {
        self.callbacks.notified().await;
    }

    /// Tells the notifier that `command`'s ready set went from empty to
    /// `depth` tasks.
    pub fn became_ready(&self, command: Command, depth: u64) {
        let mut pending = self.became_ready.lock().unwrap_or_else(PoisonError::into_inner);
        pending.insert(command, depth);
        drop(pending);
        self.became_ready_notify.notify_one();
    }

    /// Waits until some command became ready, then takes every one.
    pub async fn take_became_ready(&self) -> Vec<(Command, u64)> {
        loop {
            let taken: Vec<(Command, u64)> = {
                let mut pending = self.became_ready.lock().unwrap_or_else(PoisonError::into_inner);
                pending.drain().collect()
            };
            if !taken.is_empty() {
                return taken;
            }
            self.became_ready_notify.notified().await;
        }
    }
}
