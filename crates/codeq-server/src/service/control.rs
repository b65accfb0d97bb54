//! Queue control: cancelling tasks, per-command settings (pause, flow
//! limits), the dead-letter queue (list, replay, purge) and task listing;
//! and what an operator looks at: the leases held, one task with its
//! result and callback.
//!
//! The store decides each change atomically (`lifecycle::cancel`,
//! `lifecycle::replay`, the settings record); this layer checks who may
//! ask, resolves a filter into ids page by page, paces replays and reads
//! the tasks a page shows.

use std::collections::HashSet;
use std::sync::Arc;

use codeq_core::{
    Command, QueueSettings, ResultRecord, Task, TaskId, TaskState, TaskStatus, Timestamp,
};

use super::artifacts::Artifacts;
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::store::{
    DeadLetterFilter, DeadLetterKey, OwedCallback, SettledCallback, Signals, Store, StoreResult,
    TransitionError,
};

/// Most ids one replay or purge touches.
pub const MAX_BULK: usize = 10_000;

/// Why a cancel of one task was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelRefused {
    /// Only its producer or an admin may cancel it.
    NotOwner,
    /// The store refused the transition (not found, already terminal).
    Transition(TransitionError),
}

/// Which dead letters a replay or purge takes: named ones, or those that
/// pass a filter.
#[derive(Debug, Clone)]
pub enum Selection {
    /// These ids (others than dead letters of the command are skipped).
    Ids(Vec<TaskId>),
    /// Every dead letter that passes the filter.
    Matching(DeadLetterFilter),
}

/// A page of tasks, and the cursor of the next one.
#[derive(Debug)]
pub struct Page<C> {
    /// The tasks, newest first.
    pub tasks: Vec<Task>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<C>,
}

/// A lease held now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The task.
    pub task_id: TaskId,
    /// Its command.
    pub command: Command,
    /// The worker (`sub`) holding it.
    pub worker_id: String,
    /// When the lease ends.
    pub lease_until: Option<Timestamp>,
    /// Its delivery number.
    pub attempts: u32,
}

/// Leases held now, and whether there were more than were read.
#[derive(Debug, Clone)]
pub struct Leases {
    /// Newest delivery first within each command, commands by name.
    pub leases: Vec<Lease>,
    /// More leases are held than `leases` shows.
    pub truncated: bool,
}

/// One task as an operator sees it.
#[derive(Debug, Clone)]
pub struct TaskDetail {
    /// The task.
    pub task: Task,
    /// Its result record, once it has ended.
    pub result: Option<ResultRecord>,
    /// The result callback it still owes, if any.
    pub callback: Option<OwedCallback>,
    /// How its last callback ended, when it owes none and that is kept.
    pub settled: Option<SettledCallback>,
}

/// The queue-control service. Cheap to clone.
#[derive(Clone)]
pub struct Control {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Artifact files (a purge removes them).
    pub artifacts: Arc<Artifacts>,
    /// Counts cancels, replays and purges.
    pub metrics: Arc<Metrics>,
    /// Tells the subscription notifier of a command resumed with work.
    pub signals: Arc<Signals>,
}

impl Control {
    /// Cancels tasks for `caller` (a producer `sub`, admin or not), each on
    /// its own: a task may be cancelled by the producer that created it or
    /// by an admin.
    pub async fn cancel(
        &self,
        caller: &str,
        admin: bool,
        ids: &[TaskId],
        reason: Option<String>,
    ) -> StoreResult<Vec<Result<TaskState, CancelRefused>>> {
        let mut outcomes: Vec<Option<Result<TaskState, CancelRefused>>> = vec![None; ids.len()];
        let mut allowed = Vec::with_capacity(ids.len());
        let mut commands = Vec::with_capacity(ids.len());
        for (index, id) in ids.iter().enumerate() {
            match self.store.get_task(*id).await? {
                None => {
                    outcomes[index] =
                        Some(Err(CancelRefused::Transition(TransitionError::NotFound)))
                }
                Some(task) if !admin && task.created_by != caller => {
                    outcomes[index] = Some(Err(CancelRefused::NotOwner));
                }
                Some(task) => {
                    allowed.push((index, *id));
                    commands.push(task.command);
                }
            }
        }
        let done = self
            .store
            .cancel(allowed.iter().map(|(_, id)| *id).collect(), reason, self.clock.now())
            .await?;
        for (((index, id), outcome), command) in allowed.iter().zip(done).zip(&commands) {
            if outcome.is_ok() {
                self.metrics.tasks_cancelled(command, 1);
                tracing::debug!(task_id = %id, %command, by = caller, "task cancelled");
            }
            outcomes[*index] = Some(outcome.map_err(CancelRefused::Transition));
        }
        Ok(outcomes
            .into_iter()
            .map(|outcome| {
                outcome.unwrap_or(Err(CancelRefused::Transition(TransitionError::NotFound)))
            })
            .collect())
    }

    /// The settings of `command`.
    pub async fn settings(&self, command: &Command) -> StoreResult<QueueSettings> {
        self.store.queue_settings(command).await
    }

    /// Replaces the settings of `command`; returns them.
    pub async fn set_settings(
        &self,
        command: &Command,
        settings: QueueSettings,
    ) -> StoreResult<QueueSettings> {
        let before = self.store.set_queue_settings(command, settings, self.clock.now()).await?;
        self.settings_changed(command, &before, settings).await;
        Ok(settings)
    }

    /// Pauses (or resumes) `command`, keeping its limits (as they are when
    /// the pause is stored: a settings write just before is kept); returns
    /// the settings.
    pub async fn set_paused(&self, command: &Command, paused: bool) -> StoreResult<QueueSettings> {
        let before = self.store.set_paused(command, paused, self.clock.now()).await?;
        let settings = QueueSettings { paused, ..before };
        self.settings_changed(command, &before, settings).await;
        Ok(settings)
    }

    /// Logs a settings change and tells subscribers when it lets more
    /// claims through.
    async fn settings_changed(
        &self,
        command: &Command,
        before: &QueueSettings,
        settings: QueueSettings,
    ) {
        tracing::debug!(
            %command,
            paused = settings.paused,
            max_in_flight = settings.max_in_flight,
            rate_per_second = settings.rate_per_second,
            burst = settings.burst,
            "queue settings changed"
        );
        if settings.lets_more_through_than(before) {
            self.tell_if_ready(command).await;
        }
    }

    /// Tells subscribers of `command` of its ready tasks, when its new
    /// settings let more claims through: a resume (or looser limits) is
    /// the news a worker told earlier, and answered 204 then, waits for.
    async fn tell_if_ready(&self, command: &Command) {
        match self.store.queue_stats(command).await {
            Ok(stats) if stats.ready > 0 => self.signals.became_ready(command.clone(), stats.ready),
            Ok(_) => {}
            Err(error) => tracing::debug!(%error, "cannot read the depth of a resumed command"),
        }
    }

    /// A page of dead letters of `command`, newest first.
    pub async fn dead_letters(
        &self,
        command: &Command,
        filter: &DeadLetterFilter,
        cursor: Option<DeadLetterKey>,
        limit: usize,
    ) -> StoreResult<Page<DeadLetterKey>> {
        // One more than the page tells whether another page follows.
        let mut keys = self.store.dead_letters(command, filter, cursor, limit + 1).await?;
        let next = more(&mut keys, limit);
        let ids: Vec<TaskId> = keys.iter().map(|(_, id)| *id).collect();
        let tasks = self.read_all(ids).await?;
        Ok(Page { tasks, next })
    }

    /// A page of tasks newest first, of `command` and `status` when given.
    pub async fn list(
        &self,
        command: Option<&Command>,
        status: Option<TaskStatus>,
        cursor: Option<TaskId>,
        limit: usize,
    ) -> StoreResult<Page<TaskId>> {
        let mut ids = self.store.list_tasks(command, status, cursor, limit + 1).await?;
        let next = more(&mut ids, limit);
        let tasks = self.read_all(ids).await?;
        Ok(Page { tasks, next })
    }

    /// Does `op` to the dead letters `selection` names, at most `limit` of
    /// a filter's, and returns the ids it took (fewer where a concurrent
    /// call took some first). A filter's dead letters are read page by
    /// page, each after the last one seen, until `limit` are taken or none
    /// is left: a call racing another is not left short while dead
    /// letters remain.
    async fn take_selected(
        &self,
        command: &Command,
        selection: Selection,
        limit: usize,
        op: DeadLetterOp,
    ) -> StoreResult<Vec<TaskId>> {
        let filter = match selection {
            // Named ids are all taken (the API bounds how many), each once.
            Selection::Ids(mut ids) => {
                let mut seen = HashSet::with_capacity(ids.len());
                ids.retain(|id| seen.insert(*id));
                return self.take(command, op, ids, 0).await;
            }
            Selection::Matching(filter) => filter,
        };
        let mut taken = Vec::new();
        let mut after = None;
        while taken.len() < limit {
            let wanted = limit - taken.len();
            let keys = self.store.dead_letters(command, &filter, after, wanted).await?;
            let Some(&last) = keys.last() else { break };
            after = Some(last);
            let last_page = keys.len() < wanted;
            let ids = keys.into_iter().map(|(_, id)| id).collect();
            let done = taken.len();
            taken.extend(self.take(command, op, ids, done).await?);
            if last_page {
                break;
            }
        }
        Ok(taken)
    }

    /// Does `op` to dead letters `ids`, `done` having been taken before
    /// them; the ids it took.
    async fn take(
        &self,
        command: &Command,
        op: DeadLetterOp,
        ids: Vec<TaskId>,
        done: usize,
    ) -> StoreResult<Vec<TaskId>> {
        match op {
            DeadLetterOp::Replay { now, rate_per_second } => {
                let items = ids
                    .into_iter()
                    .enumerate()
                    .map(|(turn, id)| (id, turn_at(now, done + turn, rate_per_second)))
                    .collect();
                self.store.replay(command, items, now).await
            }
            DeadLetterOp::Purge => {
                let purged = self.store.purge(command, ids).await?;
                for id in &purged {
                    self.artifacts.remove_all(*id).await;
                }
                Ok(purged)
            }
        }
    }

    /// Sends the selected dead letters of `command` round again (at most
    /// `limit` of those a filter selects); spaced `1 / rate_per_second` apart when a rate is given
    /// (each becomes ready at its turn). Returns the ids replayed.
    pub async fn replay(
        &self,
        command: &Command,
        selection: Selection,
        limit: usize,
        rate_per_second: Option<f64>,
    ) -> StoreResult<Vec<TaskId>> {
        let op = DeadLetterOp::Replay { now: self.clock.now(), rate_per_second };
        let replayed = self.take_selected(command, selection, limit, op).await?;
        self.metrics.dead_letters_replayed(command, replayed.len() as u64);
        for id in &replayed {
            tracing::debug!(task_id = %id, %command, "dead letter replayed");
        }
        Ok(replayed)
    }

    /// Deletes the selected dead letters of `command` with their results,
    /// keys and artifacts (at most `limit` of those a filter selects). Returns the ids deleted.
    pub async fn purge(
        &self,
        command: &Command,
        selection: Selection,
        limit: usize,
    ) -> StoreResult<Vec<TaskId>> {
        let purged = self.take_selected(command, selection, limit, DeadLetterOp::Purge).await?;
        self.metrics.dead_letters_purged(command, purged.len() as u64);
        for id in &purged {
            tracing::debug!(task_id = %id, %command, "dead letter purged");
        }
        Ok(purged)
    }

    /// Up to `limit` leases held now, read command by command from the
    /// in-progress index (no task body is read).
    pub async fn leases(&self, limit: usize) -> StoreResult<Leases> {
        let mut leases = Vec::new();
        let mut truncated = false;
        for queue in self.store.all_queue_stats().await? {
            if queue.in_progress == 0 {
                continue;
            }
            let room = limit - leases.len();
            if room == 0 {
                truncated = true;
                break;
            }
            let ids = self
                .store
                .list_tasks(Some(&queue.command), Some(TaskStatus::InProgress), None, room + 1)
                .await?;
            truncated |= ids.len() > room;
            for id in ids.into_iter().take(room) {
                // A task that moved on since the index was read is left out.
                let Some(state) = self.store.get_state(id).await? else { continue };
                let (TaskStatus::InProgress, Some(worker_id)) = (state.status, state.worker_id)
                else {
                    continue;
                };
                leases.push(Lease {
                    task_id: id,
                    command: queue.command.clone(),
                    worker_id,
                    lease_until: state.lease_until,
                    attempts: state.attempts,
                });
            }
        }
        Ok(Leases { leases, truncated })
    }

    /// Task `id` with its result and owed callback; `None` when unknown.
    pub async fn task_detail(&self, id: TaskId) -> StoreResult<Option<TaskDetail>> {
        let Some(task) = self.store.get_task(id).await? else { return Ok(None) };
        let terminal = task.state.status.is_terminal();
        let result = if terminal { self.store.get_result(id).await? } else { None };
        let callback = match &task.webhook {
            Some(_) if terminal => self.store.callback_owed(id).await?,
            _ => None,
        };
        let settled = match &task.webhook {
            Some(_) if terminal && callback.is_none() => self.store.callback_settled(id).await?,
            _ => None,
        };
        Ok(Some(TaskDetail { task, result, callback, settled }))
    }

    async fn read_all(&self, ids: Vec<TaskId>) -> StoreResult<Vec<Task>> {
        let mut tasks = Vec::new();
        for id in ids {
            // A task deleted since the page was read is left out.
            if let Some(task) = self.store.get_task(id).await? {
                tasks.push(task);
            }
        }
        Ok(tasks)
    }
}

/// Cuts `items` (read with one extra) to `limit`; the cursor of the next
/// page (the last kept) when there was more.
fn more<T: Copy>(items: &mut Vec<T>, limit: usize) -> Option<T> {
    if items.len() <= limit {
        return None;
    }
    items.truncate(limit);
    items.last().copied()
}

/// What a replay or a purge does to the dead letters it takes.
#[derive(Debug, Clone, Copy)]
enum DeadLetterOp {
    /// Round again, the `turn`-th at [`turn_at`].
    Replay { now: Timestamp, rate_per_second: Option<f64> },
    /// Deleted, with results, keys and artifacts.
    Purge,
}

/// When the `turn`-th replayed task becomes ready: now, or `turn / rate`
/// seconds later.
fn turn_at(now: Timestamp, turn: usize, rate_per_second: Option<f64>) -> Timestamp {
    match rate_per_second {
        Some(rate) if rate > 0.0 => now.plus_millis((turn as f64 * 1000.0 / rate) as i64),
        _ => now,
    }
}
