//! How the embedded backend's records are encoded in the journal.
//!
//! | table | key | value |
//! |---|---|---|
//! | `Tasks` | task id (16 bytes) | body: format byte `1`, then postcard of [`Body`] |
//! | `States` | task id | format byte `1`, then postcard of `TaskState` |
//! | `Results` | task id | the result record, JSON |
//! | `Commands` | command name | empty |
//! | `Outbox` | task id | owed: format byte `1`, then postcard of [`Callback`]; ended: format byte `2`, then the outcome and attempts |
//! | `Subscriptions` | subscription id (16 bytes) | the subscription, JSON |
//! | `Settings` | command name | the command's settings, JSON |
//!
//! A task's body (what the producer sent) is written once; each
//! transition writes only the small state record. Postcard is positional:
//! a new field needs a new format byte (a state record with a
//! `round_start` is format 3, one without format 2, as since `replays`
//! was added; formats 1 and 2 read with the fields they lack 0).

use codeq_core::{
    Command, Priority, QueueSettings, ResultRecord, Subscription, Task, TaskId, TaskState,
    Timestamp,
};
use serde::{Deserialize, Serialize};

use crate::store::{CallbackOutcome, SettledCallback, StoreError, StoreResult};

const FORMAT_V1: u8 = 1;

/// What the producer sent, as stored: every field of a task but its state.
#[derive(Debug, Serialize, Deserialize)]
pub struct Body<'a> {
    #[serde(borrow)]
    command: &'a str,
    #[serde(borrow)]
    payload: &'a str,
    priority: Priority,
    #[serde(borrow)]
    webhook: Option<&'a str>,
    max_attempts: u32,
    #[serde(borrow)]
    idempotency_key: Option<&'a str>,
    run_at: Option<Timestamp>,
    created_at: Timestamp,
    #[serde(borrow)]
    created_by: &'a str,
}

impl<'a> Body<'a> {
    /// The body of `task`.
    pub fn of(task: &'a Task) -> Self {
        Self {
            command: task.command.as_str(),
            payload: &task.payload,
            priority: task.priority,
            webhook: task.webhook.as_deref(),
            max_attempts: task.max_attempts,
            idempotency_key: task.idempotency_key.as_deref(),
            run_at: task.run_at,
            created_at: task.created_at,
            created_by: &task.created_by,
        }
    }

    /// Reads a body back (borrowing from `bytes`).
    pub fn decode(bytes: &'a [u8]) -> StoreResult<Self> {
        match bytes.split_first() {
            Some((&FORMAT_V1, record)) => postcard::from_bytes(record)
                .map_err(|e| StoreError::Corrupt(format!("cannot decode a task body: {e}"))),
            _ => Err(StoreError::Corrupt("a task body of an unknown format".into())),
        }
    }

    /// The command it names.
    pub fn command(&self) -> StoreResult<Command> {
        Command::parse(self.command)
            .map_err(|e| StoreError::Corrupt(format!("stored command {:?}: {e}", self.command)))
    }

    /// Claim priority.
    pub fn priority(&self) -> Priority {
        self.priority
    }

    /// Delivery limit.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Idempotency key.
    pub fn idempotency_key(&self) -> Option<&'a str> {
        self.idempotency_key
    }

    /// The result callback URL.
    pub fn webhook(&self) -> Option<&'a str> {
        self.webhook
    }

    /// The whole task, with `state`.
    pub fn into_task(self, id: TaskId, state: TaskState) -> StoreResult<Task> {
        Ok(Task {
            id,
            command: self.command()?,
            payload: self.payload.to_string(),
            priority: self.priority,
            webhook: self.webhook.map(str::to_string),
            max_attempts: self.max_attempts,
            idempotency_key: self.idempotency_key.map(str::to_string),
            run_at: self.run_at,
            created_at: self.created_at,
            created_by: self.created_by.to_string(),
            state,
        })
    }
}

/// Appends the encoded body of `task` to `buf`.
pub fn encode_body(task: &Task, buf: &mut Vec<u8>) -> StoreResult<()> {
    buf.push(FORMAT_V1);
    postcard::to_io(&Body::of(task), buf)
        .map(|_| ())
        .map_err(|e| StoreError::Corrupt(format!("cannot encode a task body: {e}")))
}

/// A state record with `replays` (format 1 is format 2 without that last
/// field).
const STATE_V2: u8 = 2;

/// A state record with `round_start` after `replays`.
const STATE_V3: u8 = 3;

/// Appends the encoded `state` to `buf`: format 2 unless it has a
/// `round_start` (only a replay gives one), so that the release before
/// format 3 still reads a data directory that never saw a replay.
pub fn encode_state(state: &TaskState, buf: &mut Vec<u8>) -> StoreResult<()> {
    let start = buf.len();
    buf.push(STATE_V3);
    postcard::to_io(state, &mut *buf)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode a task state: {e}")))?;
    if state.round_start == 0 {
        // `round_start` is the last field, a varint: 0 is one zero byte.
        buf.pop();
        buf[start] = STATE_V2;
    }
    Ok(())
}

/// Reads a state record back.
pub fn decode_state(bytes: &[u8]) -> StoreResult<TaskState> {
    // The fields an older format lacks are last, varints: 0 is one zero
    // byte each.
    let with_zeros = |record: &[u8], missing: usize| {
        let mut completed = Vec::with_capacity(record.len() + missing);
        completed.extend_from_slice(record);
        completed.resize(record.len() + missing, 0);
        postcard::from_bytes(&completed)
    };
    let decoded = match bytes.split_first() {
        Some((&STATE_V3, record)) => postcard::from_bytes(record),
        Some((&STATE_V2, record)) => with_zeros(record, 1),
        Some((&FORMAT_V1, record)) => with_zeros(record, 2),
        _ => return Err(StoreError::Corrupt("a task state of an unknown format".into())),
    };
    decoded.map_err(|e| StoreError::Corrupt(format!("cannot decode a task state: {e}")))
}

/// A result callback owed: its delivery series, attempts so far and when
/// the next attempt is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Callback {
    /// Identifies the delivery series (`X-CodeQ-Delivery`).
    pub delivery: uuid::Uuid,
    /// Attempts made.
    pub attempts: u32,
    /// When the next attempt is due.
    pub next_at: Timestamp,
}

/// Appends the encoded `callback` to `buf`.
pub fn encode_callback(callback: &Callback, buf: &mut Vec<u8>) -> StoreResult<()> {
    buf.push(FORMAT_V1);
    postcard::to_io(callback, buf)
        .map(|_| ())
        .map_err(|e| StoreError::Corrupt(format!("cannot encode a callback: {e}")))
}

/// The format byte of an outbox record that keeps how a callback ended.
const SETTLED_V1: u8 = 2;

/// How a callback ended, as stored: the outcome as a number.
#[derive(Serialize, Deserialize)]
struct StoredSettled {
    outcome: u8,
    attempts: u32,
}

/// Appends the encoded `settled` to `buf`.
pub fn encode_settled(settled: &SettledCallback, buf: &mut Vec<u8>) -> StoreResult<()> {
    buf.push(SETTLED_V1);
    let stored =
        StoredSettled { outcome: outcome_code(settled.outcome), attempts: settled.attempts };
    postcard::to_io(&stored, buf)
        .map(|_| ())
        .map_err(|e| StoreError::Corrupt(format!("cannot encode a callback's end: {e}")))
}

/// The number an outcome is stored as (fixed: records on disk keep it).
fn outcome_code(outcome: CallbackOutcome) -> u8 {
    match outcome {
        CallbackOutcome::Delivered => 0,
        CallbackOutcome::GaveUp => 1,
        CallbackOutcome::Refused => 2,
    }
}

/// An outbox record: the callback a task owes, or how its last one ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxRecord {
    /// Owed.
    Owed(Callback),
    /// Ended.
    Settled(SettledCallback),
}

/// Reads an outbox record back.
pub fn decode_outbox(bytes: &[u8]) -> StoreResult<OutboxRecord> {
    let corrupt =
        |e: postcard::Error| StoreError::Corrupt(format!("cannot decode a callback: {e}"));
    match bytes.split_first() {
        Some((&FORMAT_V1, record)) => {
            postcard::from_bytes(record).map(OutboxRecord::Owed).map_err(corrupt)
        }
        Some((&SETTLED_V1, record)) => {
            let stored: StoredSettled = postcard::from_bytes(record).map_err(corrupt)?;
            let outcome = CallbackOutcome::ALL
                .into_iter()
                .find(|outcome| outcome_code(*outcome) == stored.outcome)
                .ok_or_else(|| {
                    StoreError::Corrupt(format!("a callback outcome {} unknown", stored.outcome))
                })?;
            Ok(OutboxRecord::Settled(SettledCallback { outcome, attempts: stored.attempts }))
        }
        _ => Err(StoreError::Corrupt("a callback of an unknown format".into())),
    }
}

/// Appends the encoded result `record` to `buf`.
pub fn encode_result(record: &ResultRecord, buf: &mut Vec<u8>) -> StoreResult<()> {
    serde_json::to_writer(buf, record)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode a result: {e}")))
}

/// Reads a result record back.
pub fn decode_result(bytes: &[u8]) -> StoreResult<ResultRecord> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt(format!("cannot decode a result: {e}")))
}

/// Appends the encoded `subscription` to `buf`.
pub fn encode_subscription(subscription: &Subscription, buf: &mut Vec<u8>) -> StoreResult<()> {
    serde_json::to_writer(buf, subscription)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode a subscription: {e}")))
}

/// Reads a subscription record back.
pub fn decode_subscription(bytes: &[u8]) -> StoreResult<Subscription> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt(format!("cannot decode a subscription: {e}")))
}

/// Appends the encoded `settings` to `buf`.
pub fn encode_settings(settings: &QueueSettings, buf: &mut Vec<u8>) -> StoreResult<()> {
    serde_json::to_writer(buf, settings)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode queue settings: {e}")))
}

/// Reads a settings record back.
pub fn decode_settings(bytes: &[u8]) -> StoreResult<QueueSettings> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt(format!("cannot decode queue settings: {e}")))
}

#[cfg(test)]
mod tests {
    use codeq_core::TaskStatus;

    use super::*;

    fn task() -> Task {
        let mut state = TaskState::new(Timestamp(1_700_000_000_000), Timestamp(1_700_000_000_000));
        state.status = TaskStatus::InProgress;
        state.worker_id = Some("w1".into());
        state.lease_until = Some(Timestamp(1_700_000_030_000));
        state.attempts = 2;
        Task {
            id: TaskId::generate(),
            command: Command::parse("encode").unwrap(),
            payload: r#"{"k":"v"}"#.into(),
            priority: Priority::clamped(3),
            webhook: Some("https://example.com/hook".into()),
            max_attempts: 5,
            idempotency_key: Some("k".into()),
            run_at: None,
            created_at: Timestamp(1_700_000_000_000),
            created_by: "producer".into(),
            state,
        }
    }

    #[test]
    fn bodies_and_states_round_trip() {
        let task = task();
        let mut body = Vec::new();
        encode_body(&task, &mut body).unwrap();
        let mut state = Vec::new();
        encode_state(&task.state, &mut state).unwrap();
        assert_eq!(state[0], STATE_V2, "format 2 while no replay began a round");
        let back = Body::decode(&body).unwrap().into_task(task.id, decode_state(&state).unwrap());
        assert_eq!(back.unwrap(), task);
        assert!(state.len() < 40, "a state record is small: {} bytes", state.len());
    }

    #[test]
    fn states_of_formats_1_and_2_read_with_the_fields_they_lack_0() {
        let mut state = task().state;
        (state.replays, state.round_start) = (3, 7);
        let mut bytes = Vec::new();
        encode_state(&state, &mut bytes).unwrap();
        assert_eq!(bytes[0], STATE_V3);
        assert_eq!(decode_state(&bytes).unwrap(), state);
        // Formats 2 and 1: the same fields but the last one or two (one-byte
        // varints here).
        let mut v2 = bytes[..bytes.len() - 1].to_vec();
        v2[0] = STATE_V2;
        let mut v1 = bytes[..bytes.len() - 2].to_vec();
        v1[0] = FORMAT_V1;
        assert_eq!(decode_state(&v2).unwrap(), TaskState { round_start: 0, ..state.clone() });
        assert_eq!(decode_state(&v1).unwrap(), TaskState { replays: 0, round_start: 0, ..state });
    }

    #[test]
    fn a_record_of_an_unknown_format_is_corrupt_not_misread() {
        let mut bytes = Vec::new();
        encode_state(&task().state, &mut bytes).unwrap();
        bytes[0] = b'{';
        assert!(matches!(decode_state(&bytes), Err(StoreError::Corrupt(_))));
        assert!(matches!(Body::decode(&[]), Err(StoreError::Corrupt(_))));
    }
}
