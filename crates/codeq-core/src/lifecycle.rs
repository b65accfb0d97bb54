//! The rules of a task's life cycle, as pure functions.
//!
//! Each transition takes a task's [`TaskState`], the caller's inputs and
//! `now`, and returns the next state (with the result record it stores,
//! when it makes the task terminal) or a [`TransitionError`] saying why it
//! is refused. Nothing here decides a value that needs policy or
//! randomness: lease ends and retry delays are computed by the caller and
//! passed in. Storage backends apply these functions and store what they
//! return, so every backend follows the same rules.
//!
//! The lease rule: a heartbeat after the lease ended is refused
//! ([`TransitionError::LeaseExpired`]); a result for a delivery that ended
//! with its lease is still accepted until the task is delivered again (as
//! SQS accepts a delete for a message not yet received again). Abandon and
//! nack release a task and are accepted while it is in progress.

use crate::json::JsonText;
use crate::result::{Artifact, ResultRecord, ResultStatus};
use crate::task::{LEASE_EXPIRED_REASON, MAX_ATTEMPTS_ERROR, TaskId, TaskState, TaskStatus};
use crate::time::Timestamp;

/// Who asks for a transition on a task, and which delivery they hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence<'a> {
    /// The caller's `sub`; must equal the task's `workerId`.
    pub worker_id: &'a str,
    /// The delivery (`attempts`) the caller believes it holds; when given
    /// and different from the task's, the call is refused as stale.
    pub attempt: Option<u32>,
}

/// Why a transition on one task was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// No such task.
    #[error("task not found")]
    NotFound,
    /// The task is not in progress (it is pending or terminal).
    #[error("task is {}, not IN_PROGRESS", .0.as_str())]
    NotInProgress(TaskStatus),
    /// The caller is not the worker holding the task.
    #[error("task is held by another worker")]
    NotOwner,
    /// The caller's delivery has ended (task re-delivered).
    #[error("attempt {given} is stale: the task is on delivery {current}")]
    StaleAttempt {
        /// The attempt the caller sent.
        given: u32,
        /// The task's current attempts.
        current: u32,
    },
    /// The caller's lease has ended; only a result is still accepted.
    #[error("the lease has expired")]
    LeaseExpired,
    /// The task is terminal with another outcome, or from another worker
    /// or delivery.
    #[error("task already has another result (another outcome, worker or attempt)")]
    ResultConflict,
    /// The task was cancelled: its worker should stop.
    #[error("task was cancelled")]
    Cancelled,
    /// The task has already ended (it cannot be cancelled).
    #[error("task is already {}", .0.as_str())]
    Terminal(TaskStatus),
}

/// How the caller's delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// In progress and held by the caller (its lease may have ended before
    /// the reaper noticed).
    Held,
    /// Its lease ended and the reaper requeued the task; nobody has claimed
    /// it since.
    Lapsed,
}

/// Checks that `fence` holds (or held, until the lease ran out) the task,
/// in the order of the API: state (409), ownership (403), delivery (409).
fn hold(state: &TaskState, fence: Fence<'_>) -> Result<Hold, TransitionError> {
    if state.status == TaskStatus::Cancelled {
        return Err(TransitionError::Cancelled);
    }
    let lapsed = state.status == TaskStatus::Pending && state.worker_id.is_some();
    if state.status != TaskStatus::InProgress && !lapsed {
        return Err(TransitionError::NotInProgress(state.status));
    }
    if state.worker_id.as_deref() != Some(fence.worker_id) {
        return Err(if lapsed {
            TransitionError::NotInProgress(state.status)
        } else {
            TransitionError::NotOwner
        });
    }
    match fence.attempt {
        Some(given) if given != state.attempts => {
            Err(TransitionError::StaleAttempt { given, current: state.attempts })
        }
        _ if lapsed => Ok(Hold::Lapsed),
        _ => Ok(Hold::Held),
    }
}

/// Checks that `fence` holds the task now (for `check`-before-write
/// callers such as artifact uploads): in progress, or lapsed with its
/// result still accepted.
pub fn check_result_allowed(state: &TaskState, fence: Fence<'_>) -> Result<(), TransitionError> {
    if state.status == TaskStatus::Cancelled {
        return Err(TransitionError::Cancelled);
    }
    if state.status.is_terminal() {
        return Ok(());
    }
    hold(state, fence).map(|_| ())
}

/// A ready task delivered to `worker_id` under a lease: one more attempt.
pub fn claim(
    state: &TaskState,
    worker_id: &str,
    lease_until: Timestamp,
    now: Timestamp,
) -> TaskState {
    TaskState {
        status: TaskStatus::InProgress,
        attempts: state.attempts.saturating_add(1),
        worker_id: Some(worker_id.to_string()),
        lease_until: Some(lease_until),
        updated_at: now,
        ..state.clone()
    }
}

/// Extends the lease of a held task whose lease has not ended.
pub fn heartbeat(
    state: &TaskState,
    fence: Fence<'_>,
    lease_until: Timestamp,
    now: Timestamp,
) -> Result<TaskState, TransitionError> {
    match hold(state, fence)? {
        Hold::Held if state.lease_until.is_some_and(|until| until >= now) => {
            Ok(TaskState { lease_until: Some(lease_until), updated_at: now, ..state.clone() })
        }
        Hold::Held | Hold::Lapsed => Err(TransitionError::LeaseExpired),
    }
}

/// Gives a held task back to the ready queue at once; attempts unchanged.
pub fn abandon(
    state: &TaskState,
    fence: Fence<'_>,
    now: Timestamp,
) -> Result<TaskState, TransitionError> {
    match hold(state, fence)? {
        Hold::Held => Ok(TaskState {
            status: TaskStatus::Pending,
            worker_id: None,
            lease_until: None,
            visible_at: now,
            updated_at: now,
            ..state.clone()
        }),
        Hold::Lapsed => Err(TransitionError::NotInProgress(state.status)),
    }
}

/// What a retry (a nack or an expired lease) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retried {
    /// Back to the delayed set; visible again after this many seconds.
    Requeued {
        /// The delay applied.
        delay_seconds: u64,
    },
    /// The task had used all its deliveries and is now dead-lettered.
    DeadLettered,
}

/// The next state of a retried task, and the record of its dead-lettering.
#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    /// The task's next state.
    pub state: TaskState,
    /// Requeued or dead-lettered.
    pub outcome: Retried,
    /// The `{FAILED, MAX_ATTEMPTS}` result record of a dead-lettered task.
    pub dead_letter: Option<ResultRecord>,
}

/// Requeues a held task after `delay_seconds`, or dead-letters it when it
/// has used `max_attempts` deliveries.
pub fn nack(
    id: TaskId,
    state: &TaskState,
    max_attempts: u32,
    fence: Fence<'_>,
    delay_seconds: u64,
    reason: Option<String>,
    now: Timestamp,
) -> Result<Retry, TransitionError> {
    match hold(state, fence)? {
        Hold::Held => {
            let released = TaskState { worker_id: None, ..state.clone() };
            Ok(retry(id, &released, max_attempts, delay_seconds, reason, now))
        }
        Hold::Lapsed => Err(TransitionError::NotInProgress(state.status)),
    }
}

/// Requeues (after `delay_seconds`) or dead-letters a task whose lease
/// ended before `now`; `None` when it is not in progress or its lease has
/// not ended.
pub fn expire(
    id: TaskId,
    state: &TaskState,
    max_attempts: u32,
    delay_seconds: u64,
    now: Timestamp,
) -> Option<Retry> {
    let ended =
        state.status == TaskStatus::InProgress && state.lease_until.is_none_or(|until| until < now);
    ended.then(|| {
        let reason = Some(LEASE_EXPIRED_REASON.to_string());
        retry(id, state, max_attempts, delay_seconds, reason, now)
    })
}

/// The `attempts` at which a task is dead-lettered: `max_attempts`
/// deliveries after its round began (at the create, or at a replay).
/// `attempts` itself keeps counting across replays, since it numbers
/// deliveries for fencing: a stale worker's number must never become
/// current again.
pub fn delivery_limit(max_attempts: u32, round_start: u32) -> u32 {
    round_start.saturating_add(max_attempts)
}

/// Which delivery of its round delivery `attempts` is (1 for the first
/// after the create or a replay): what the retry backoff grows with.
pub fn attempt_in_round(attempts: u32, round_start: u32) -> u32 {
    attempts.saturating_sub(round_start).max(1)
}

/// Requeues `state` (keeping its `worker_id`: a requeued task with a
/// worker is one whose lease lapsed) or dead-letters it.
fn retry(
    id: TaskId,
    state: &TaskState,
    max_attempts: u32,
    delay_seconds: u64,
    reason: Option<String>,
    now: Timestamp,
) -> Retry {
    let released =
        TaskState { lease_until: None, last_reason: reason, updated_at: now, ..state.clone() };
    if state.attempts >= delivery_limit(max_attempts, state.round_start) {
        let record = ResultRecord {
            task_id: id,
            status: ResultStatus::Failed,
            result: None,
            error: Some(MAX_ATTEMPTS_ERROR.to_string()),
            artifacts: Vec::new(),
            worker_id: String::new(),
            completed_at: now,
        };
        let state = TaskState {
            status: TaskStatus::Failed,
            worker_id: None,
            error: Some(MAX_ATTEMPTS_ERROR.to_string()),
            dead_lettered: true,
            completed_at: Some(now),
            ..released
        };
        return Retry { state, outcome: Retried::DeadLettered, dead_letter: Some(record) };
    }
    let state = TaskState {
        status: TaskStatus::Pending,
        visible_at: now.plus_seconds(delay_seconds),
        ..released
    };
    Retry { state, outcome: Retried::Requeued { delay_seconds }, dead_letter: None }
}

/// What a worker submits as a task's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Submission {
    /// Completed or failed.
    pub status: ResultStatus,
    /// The output object of a completed task.
    pub result: Option<JsonText>,
    /// Why a failed task failed.
    pub error: Option<String>,
    /// Files attached.
    pub artifacts: Vec<Artifact>,
}

/// The outcome of a result submission (short-lived: the size difference
/// of the variants does not matter).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Completion {
    /// The task becomes terminal with this state and record.
    Stored {
        /// The terminal state.
        state: TaskState,
        /// The result record to store.
        record: ResultRecord,
    },
    /// The same worker repeated the submission that made the task
    /// terminal: nothing changes, the stored record is the answer.
    Repeated,
}

/// Makes a held (or lapsed) task terminal with the worker's result; on a
/// terminal task, tells a repeat of the accepted submission from a
/// conflicting one.
pub fn complete(
    id: TaskId,
    state: &TaskState,
    fence: Fence<'_>,
    submission: Submission,
    now: Timestamp,
) -> Result<Completion, TransitionError> {
    if state.status == TaskStatus::Cancelled {
        return Err(TransitionError::Cancelled);
    }
    if state.status.is_terminal() {
        return if repeats(state, fence, submission.status) {
            Ok(Completion::Repeated)
        } else {
            Err(TransitionError::ResultConflict)
        };
    }
    hold(state, fence)?;
    let record = ResultRecord {
        task_id: id,
        status: submission.status,
        result: submission.result,
        error: submission.error,
        artifacts: submission.artifacts,
        worker_id: fence.worker_id.to_string(),
        completed_at: now,
    };
    let state = TaskState {
        status: match record.status {
            ResultStatus::Completed => TaskStatus::Completed,
            ResultStatus::Failed => TaskStatus::Failed,
            ResultStatus::Cancelled => TaskStatus::Cancelled,
        },
        error: match record.status {
            ResultStatus::Failed | ResultStatus::Cancelled => record.error.clone(),
            ResultStatus::Completed => None,
        },
        worker_id: Some(fence.worker_id.to_string()),
        lease_until: None,
        completed_at: Some(now),
        updated_at: now,
        ..state.clone()
    };
    Ok(Completion::Stored { state, record })
}

/// A cancelled task's state and the record of its cancellation.
#[derive(Debug, Clone, PartialEq)]
pub struct Cancellation {
    /// The terminal `CANCELLED` state.
    pub state: TaskState,
    /// The `{CANCELLED, error: reason}` result record.
    pub record: ResultRecord,
}

/// Cancels a pending (ready or delayed) or in-progress task: it becomes
/// terminal at once. Its worker, if any, learns of it at its next call
/// ([`TransitionError::Cancelled`]). A terminal task cannot be cancelled.
pub fn cancel(
    id: TaskId,
    state: &TaskState,
    reason: Option<String>,
    now: Timestamp,
) -> Result<Cancellation, TransitionError> {
    if state.status.is_terminal() {
        return Err(TransitionError::Terminal(state.status));
    }
    let record = ResultRecord {
        task_id: id,
        status: ResultStatus::Cancelled,
        result: None,
        error: reason.clone(),
        artifacts: Vec::new(),
        worker_id: String::new(),
        completed_at: now,
    };
    let state = TaskState {
        status: TaskStatus::Cancelled,
        worker_id: None,
        lease_until: None,
        error: reason,
        completed_at: Some(now),
        updated_at: now,
        ..state.clone()
    };
    Ok(Cancellation { state, record })
}

/// True when the task is in its command's dead-letter queue.
pub fn is_dead_letter(state: &TaskState) -> bool {
    state.status == TaskStatus::Failed && state.dead_lettered
}

/// Sends a dead letter round again: pending, visible at `visible_at`,
/// with [`delivery_limit`] deliveries more (its `attempts` go on counting),
/// its replays counted. `None` for a task that is not a dead letter.
pub fn replay(state: &TaskState, visible_at: Timestamp, now: Timestamp) -> Option<TaskState> {
    is_dead_letter(state).then(|| TaskState {
        status: TaskStatus::Pending,
        worker_id: None,
        lease_until: None,
        visible_at,
        error: None,
        dead_lettered: false,
        completed_at: None,
        updated_at: now,
        replays: state.replays.saturating_add(1),
        round_start: state.attempts,
        ..state.clone()
    })
}

/// True when a transition from `before` to `after` owes the task's
/// producer a result callback: the task has a webhook and has just become
/// terminal (completed, failed, or dead-lettered by a nack or an expired
/// lease). One delivery series per task; it is stored with the transition
/// and sent once durable.
pub fn owes_callback(before: &TaskState, after: &TaskState, has_webhook: bool) -> bool {
    has_webhook && !before.status.is_terminal() && after.status.is_terminal()
}

/// True when a submission by `fence` with `status` repeats the one that
/// made the terminal task `state` terminal (same worker, same delivery
/// when given, same status; a dead-lettered task was ended by no worker).
pub fn repeats(state: &TaskState, fence: Fence<'_>, status: ResultStatus) -> bool {
    let same_status = matches!(
        (state.status, status),
        (TaskStatus::Completed, ResultStatus::Completed)
            | (TaskStatus::Failed, ResultStatus::Failed)
    );
    same_status
        && !state.dead_lettered
        && state.worker_id.as_deref() == Some(fence.worker_id)
        && fence.attempt.is_none_or(|attempt| attempt == state.attempts)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp(1_700_000_000_000);

    fn at(seconds: u64) -> Timestamp {
        T0.plus_seconds(seconds)
    }

    fn id() -> TaskId {
        TaskId::generate()
    }

    fn held_by(worker: &str, lease_until: Timestamp) -> TaskState {
        claim(&TaskState::new(T0, T0), worker, lease_until, T0)
    }

    fn w1(attempt: Option<u32>) -> Fence<'static> {
        Fence { worker_id: "w1", attempt }
    }

    fn done(status: ResultStatus) -> Submission {
        Submission {
            status,
            result: (status == ResultStatus::Completed)
                .then(|| serde_json::json!({"ok": 1}).into()),
            error: (status == ResultStatus::Failed).then(|| "boom".to_string()),
            artifacts: Vec::new(),
        }
    }

    #[test]
    fn claim_counts_a_delivery_and_sets_the_lease() {
        let state = held_by("w1", at(30));
        assert_eq!(state.status, TaskStatus::InProgress);
        assert_eq!((state.attempts, state.worker_id.as_deref()), (1, Some("w1")));
        assert_eq!(state.lease_until, Some(at(30)));
    }

    #[test]
    fn checks_run_state_then_owner_then_delivery() {
        let pending = TaskState::new(T0, T0);
        assert_eq!(
            heartbeat(&pending, w1(None), at(9), at(1)),
            Err(TransitionError::NotInProgress(TaskStatus::Pending))
        );
        let held = held_by("w2", at(30));
        assert_eq!(heartbeat(&held, w1(Some(7)), at(9), at(1)), Err(TransitionError::NotOwner));
        let held = held_by("w1", at(30));
        assert_eq!(
            abandon(&held, w1(Some(2)), at(1)),
            Err(TransitionError::StaleAttempt { given: 2, current: 1 })
        );
    }

    #[test]
    fn a_heartbeat_after_the_lease_ended_is_refused_even_before_the_reaper_ran() {
        let held = held_by("w1", at(30));
        assert!(heartbeat(&held, w1(Some(1)), at(60), at(30)).is_ok(), "at its end instant");
        assert_eq!(
            heartbeat(&held, w1(Some(1)), at(60), at(31)),
            Err(TransitionError::LeaseExpired)
        );
        let expired = expire(id(), &held, 5, 10, at(31)).unwrap().state;
        assert_eq!(
            heartbeat(&expired, w1(None), at(90), at(32)),
            Err(TransitionError::LeaseExpired)
        );
    }

    #[test]
    fn a_result_after_the_lease_ended_is_accepted_until_the_task_is_delivered_again() {
        let task = id();
        let held = held_by("w1", at(30));
        let late = complete(task, &held, w1(Some(1)), done(ResultStatus::Completed), at(40));
        assert!(matches!(late, Ok(Completion::Stored { .. })), "before the reaper ran");

        let expired = expire(task, &held, 5, 10, at(31)).unwrap().state;
        let Ok(Completion::Stored { state, record }) =
            complete(task, &expired, w1(Some(1)), done(ResultStatus::Completed), at(41))
        else {
            panic!("a lapsed delivery's result is refused")
        };
        assert_eq!((state.status, record.worker_id.as_str()), (TaskStatus::Completed, "w1"));
        let other = Fence { worker_id: "w2", attempt: None };
        assert_eq!(
            complete(task, &expired, other, done(ResultStatus::Completed), at(41)),
            Err(TransitionError::NotInProgress(TaskStatus::Pending))
        );

        let delivered_again = claim(&expired, "w2", at(99), at(45));
        assert_eq!(
            complete(task, &delivered_again, w1(Some(1)), done(ResultStatus::Completed), at(46)),
            Err(TransitionError::NotOwner)
        );
    }

    #[test]
    fn a_lapsed_delivery_cannot_be_nacked_or_abandoned() {
        let expired = expire(id(), &held_by("w1", at(30)), 5, 10, at(31)).unwrap().state;
        let refused = Err(TransitionError::NotInProgress(TaskStatus::Pending));
        assert_eq!(abandon(&expired, w1(None), at(32)), refused);
        assert_eq!(nack(id(), &expired, 5, w1(None), 0, None, at(32)).map(|r| r.state), refused);
    }

    #[test]
    fn nack_requeues_with_the_given_delay_until_the_last_delivery() {
        let task = id();
        let held = held_by("w1", at(30));
        let retry = nack(task, &held, 2, w1(Some(1)), 20, Some("flaky".into()), at(5)).unwrap();
        assert_eq!(retry.outcome, Retried::Requeued { delay_seconds: 20 });
        assert_eq!(retry.state.visible_at, at(25));
        assert_eq!(retry.state.last_reason.as_deref(), Some("flaky"));
        assert_eq!(retry.dead_letter, None);

        let again = claim(&retry.state, "w1", at(90), at(25));
        let last = nack(task, &again, 2, w1(Some(2)), 20, None, at(26)).unwrap();
        assert_eq!(last.outcome, Retried::DeadLettered);
        assert_eq!(
            (last.state.status, last.state.error.as_deref(), last.state.dead_lettered),
            (TaskStatus::Failed, Some(MAX_ATTEMPTS_ERROR), true)
        );
        let record = last.dead_letter.unwrap();
        assert_eq!(
            (record.status, record.error.as_deref()),
            (ResultStatus::Failed, Some("MAX_ATTEMPTS"))
        );
    }

    #[test]
    fn expire_touches_only_in_progress_tasks_past_their_lease() {
        let held = held_by("w1", at(30));
        assert_eq!(expire(id(), &held, 5, 10, at(30)), None);
        assert_eq!(expire(id(), &TaskState::new(T0, T0), 5, 10, at(99)), None);
        let retry = expire(id(), &held, 5, 10, at(31)).unwrap();
        assert_eq!(retry.state.last_reason.as_deref(), Some(LEASE_EXPIRED_REASON));
        assert_eq!(retry.state.visible_at, at(41));
    }

    #[test]
    fn repeating_the_accepted_result_is_not_a_conflict() {
        let task = id();
        let held = held_by("w1", at(30));
        let Ok(Completion::Stored { state, .. }) =
            complete(task, &held, w1(Some(1)), done(ResultStatus::Completed), at(2))
        else {
            panic!()
        };
        assert_eq!(
            complete(task, &state, w1(Some(1)), done(ResultStatus::Completed), at(3)),
            Ok(Completion::Repeated)
        );
        for (fence, status) in [
            (w1(None), ResultStatus::Failed),
            (Fence { worker_id: "w2", attempt: None }, ResultStatus::Completed),
            (w1(Some(2)), ResultStatus::Completed),
        ] {
            assert_eq!(
                complete(task, &state, fence, done(status), at(3)),
                Err(TransitionError::ResultConflict)
            );
        }
    }

    #[test]
    fn a_callback_is_owed_once_when_a_task_with_a_webhook_ends() {
        let held = held_by("w1", at(30));
        let Ok(Completion::Stored { state: done, .. }) =
            complete(id(), &held, w1(None), done(ResultStatus::Completed), at(2))
        else {
            panic!()
        };
        assert!(owes_callback(&held, &done, true));
        assert!(!owes_callback(&held, &done, false), "no webhook, no callback");
        assert!(!owes_callback(&done, &done, true), "a repeat owes nothing");
        let dead = nack(id(), &held, 1, w1(None), 0, None, at(2)).unwrap().state;
        assert!(owes_callback(&held, &dead, true), "dead-lettered by a nack");
        let expired = expire(id(), &held, 1, 0, at(31)).unwrap().state;
        assert!(owes_callback(&held, &expired, true), "dead-lettered by an expired lease");
        let requeued = nack(id(), &held, 5, w1(None), 0, None, at(2)).unwrap().state;
        assert!(!owes_callback(&held, &requeued, true), "requeued: not terminal");
    }

    #[test]
    fn no_worker_repeats_a_dead_letter() {
        let held = held_by("w1", at(30));
        let dead = nack(id(), &held, 1, w1(None), 0, None, at(2)).unwrap().state;
        assert_eq!(
            complete(id(), &dead, w1(None), done(ResultStatus::Failed), at(3)),
            Err(TransitionError::ResultConflict)
        );
    }

    #[test]
    fn cancel_ends_pending_and_held_tasks_and_refuses_terminal_ones() {
        let pending = TaskState::new(at(60), T0);
        let cancelled = cancel(id(), &pending, Some("not needed".into()), at(1)).unwrap();
        assert_eq!(cancelled.state.status, TaskStatus::Cancelled);
        assert_eq!(cancelled.state.completed_at, Some(at(1)));
        assert_eq!(cancelled.record.status, ResultStatus::Cancelled);
        assert_eq!(cancelled.record.error.as_deref(), Some("not needed"));

        let held = held_by("w1", at(30));
        let stopped = cancel(id(), &held, None, at(2)).unwrap().state;
        assert_eq!((stopped.worker_id.as_deref(), stopped.lease_until), (None, None));
        for call in [
            heartbeat(&stopped, w1(None), at(9), at(3)).map(|_| ()),
            abandon(&stopped, w1(None), at(3)).map(|_| ()),
            nack(id(), &stopped, 5, w1(None), 0, None, at(3)).map(|_| ()),
            complete(id(), &stopped, w1(None), done(ResultStatus::Completed), at(3)).map(|_| ()),
            check_result_allowed(&stopped, w1(None)),
        ] {
            assert_eq!(call, Err(TransitionError::Cancelled));
        }
        assert_eq!(
            cancel(id(), &stopped, None, at(4)).map(|_| ()),
            Err(TransitionError::Terminal(TaskStatus::Cancelled))
        );
    }

    #[test]
    fn replay_restarts_only_dead_letters_with_a_round_of_deliveries_more() {
        let held = held_by("w1", at(30));
        let dead = nack(id(), &held, 1, w1(None), 0, None, at(1)).unwrap().state;
        let again = replay(&dead, at(5), at(2)).unwrap();
        // The delivery numbers go on: the stale holder of delivery 1 stays stale.
        assert_eq!((again.status, again.attempts, again.replays), (TaskStatus::Pending, 1, 1));
        let second = TaskState {
            status: TaskStatus::InProgress,
            attempts: 2,
            worker_id: Some("w1".into()),
            lease_until: Some(at(30)),
            ..again.clone()
        };
        assert_eq!(
            hold(&second, w1(Some(1))),
            Err(TransitionError::StaleAttempt { given: 1, current: 2 })
        );
        let retried = nack(id(), &second, 1, w1(Some(2)), 0, None, at(3)).unwrap();
        assert_eq!(retried.outcome, Retried::DeadLettered, "one delivery per round");
        assert_eq!((again.round_start, delivery_limit(3, 7), attempt_in_round(8, 7)), (1, 10, 1));
        assert_eq!(attempt_in_round(0, 0), 1, "before the first delivery");
        assert_eq!(
            (again.visible_at, again.error.as_deref(), again.dead_lettered),
            (at(5), None, false)
        );
        assert_eq!(replay(&again, at(5), at(2)), None, "not a dead letter");
        let failed = complete(id(), &held, w1(None), done(ResultStatus::Failed), at(1)).unwrap();
        let Completion::Stored { state, .. } = failed else { panic!("stored") };
        assert_eq!(replay(&state, at(5), at(2)), None, "a failed result is not a dead letter");
    }
}
