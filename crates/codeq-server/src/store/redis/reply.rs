//! What the scripts answer, read back into domain types.
//!
//! Every script answers an array: first a JSON object (built by `cjson`:
//! the script's own answer plus what every script reports — Redis's time,
//! the shift applied to the caller's times, commands with new ready work,
//! commands whose ready set went from empty to non-empty, the earliest
//! deadline made, the outbox's summary), then the raw field/value lists
//! of the task hashes it returns (payloads are not escaped into the JSON).

use std::collections::HashMap;

use codeq_core::{
    Artifact, Command, Priority, ResultRecord, ResultStatus, Task, TaskId, TaskState, TaskStatus,
    Timestamp,
};
use serde_json::Value;

use crate::store::{
    CallbackOutcome, OwedCallback, SettledCallback, StoreError, StoreResult, TransitionError,
};

/// One script's answer.
#[derive(Debug)]
pub struct Reply {
    /// The JSON object.
    pub body: Value,
    /// The hashes that follow it, each as a field → value map.
    pub hashes: Vec<Fields>,
}

/// A task hash's fields.
pub type Fields = HashMap<String, String>;

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("unexpected answer from Redis: {what}"))
}

fn text(value: redis::Value) -> StoreResult<String> {
    match value {
        redis::Value::BulkString(bytes) => String::from_utf8(bytes).map_err(corrupt),
        redis::Value::SimpleString(text) => Ok(text),
        other => Err(corrupt(format!("{other:?} is not text"))),
    }
}

fn fields(value: redis::Value) -> StoreResult<Fields> {
    let redis::Value::Array(items) = value else { return Err(corrupt("a hash is not a list")) };
    let mut fields = HashMap::with_capacity(items.len() / 2);
    let mut items = items.into_iter();
    while let (Some(name), Some(value)) = (items.next(), items.next()) {
        fields.insert(text(name)?, text(value)?);
    }
    Ok(fields)
}

impl Reply {
    /// Reads a script's raw answer.
    pub fn parse(value: redis::Value) -> StoreResult<Self> {
        let redis::Value::Array(items) = value else { return Err(corrupt("not a list")) };
        let mut items = items.into_iter();
        let head = items.next().ok_or_else(|| corrupt("empty"))?;
        let body = serde_json::from_str(&text(head)?).map_err(corrupt)?;
        let hashes = items.map(fields).collect::<StoreResult<_>>()?;
        Ok(Self { body, hashes })
    }

    /// A field of the JSON object.
    pub fn get(&self, name: &str) -> &Value {
        self.body.get(name).unwrap_or(&Value::Null)
    }

    /// A list field (`cjson` writes an empty list as `{}`).
    pub fn list(&self, name: &str) -> &[Value] {
        list(self.get(name))
    }

    /// An integer field.
    pub fn int(&self, name: &str) -> Option<i64> {
        int(self.get(name))
    }

    /// A text field.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.get(name).as_str()
    }

    /// The script's "now" (Redis's clock, or the caller's when it ran on
    /// that).
    pub fn now(&self) -> Timestamp {
        Timestamp(self.int("now").unwrap_or(0))
    }

    /// Milliseconds added to the caller's times (Redis's clock minus the
    /// caller's; 0 on the caller's clock).
    pub fn shift(&self) -> i64 {
        self.int("shift").unwrap_or(0)
    }

    /// The refusal the script answered, if any.
    pub fn refusal(&self) -> Option<TransitionError> {
        self.text("err").map(refusal)
    }
}

/// A JSON list (`{}` is an empty one).
pub fn list(value: &Value) -> &[Value] {
    value.as_array().map_or(&[], Vec::as_slice)
}

/// A JSON number as an integer (scripts' numbers are doubles).
pub fn int(value: &Value) -> Option<i64> {
    value.as_i64().or_else(|| value.as_f64().map(|float| float as i64))
}

/// A refusal code of the scripts (see `lib.lua`) as a transition error.
pub fn refusal(code: &str) -> TransitionError {
    let status = |text: &str| TaskStatus::parse(text).unwrap_or(TaskStatus::Pending);
    let mut parts = code.split(':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("NIP"), Some(found), _) => TransitionError::NotInProgress(status(found)),
        (Some("NO"), ..) => TransitionError::NotOwner,
        (Some("SA"), Some(given), Some(current)) => TransitionError::StaleAttempt {
            given: given.parse().unwrap_or(0),
            current: current.parse().unwrap_or(0),
        },
        (Some("LE"), ..) => TransitionError::LeaseExpired,
        (Some("RC"), ..) => TransitionError::ResultConflict,
        (Some("CX"), ..) => TransitionError::Cancelled,
        (Some("T"), Some(found), _) => TransitionError::Terminal(status(found)),
        _ => TransitionError::NotFound,
    }
}

fn required<'a>(fields: &'a Fields, name: &str) -> StoreResult<&'a str> {
    fields.get(name).map(String::as_str).ok_or_else(|| corrupt(format!("field {name} missing")))
}

fn number<T: std::str::FromStr>(fields: &Fields, name: &str) -> StoreResult<T> {
    required(fields, name)?.parse().map_err(|_| corrupt(format!("field {name} is not a number")))
}

fn time(fields: &Fields, name: &str) -> StoreResult<Option<Timestamp>> {
    fields
        .get(name)
        .map(|text| text.parse().map(Timestamp).map_err(|_| corrupt(format!("field {name}"))))
        .transpose()
}

fn optional(fields: &Fields, name: &str) -> Option<String> {
    fields.get(name).cloned()
}

/// A task's state from its hash.
pub fn state(fields: &Fields) -> StoreResult<TaskState> {
    let status = required(fields, "s")?;
    let status = TaskStatus::parse(status).ok_or_else(|| corrupt(format!("status {status}")))?;
    // A result leaves the lease end of the task's last delivery behind.
    let leased = status == TaskStatus::InProgress;
    Ok(TaskState {
        status,
        attempts: number(fields, "a")?,
        worker_id: optional(fields, "wk"),
        lease_until: if leased { time(fields, "lu")? } else { None },
        visible_at: Timestamp(number(fields, "va")?),
        error: optional(fields, "e"),
        last_reason: optional(fields, "lr"),
        dead_lettered: fields.get("d").is_some_and(|flag| flag == "1"),
        updated_at: Timestamp(number(fields, "ua")?),
        completed_at: time(fields, "co")?,
        replays: number(fields, "rp")?,
        // Absent until a replay sets it.
        round_start: if fields.contains_key("rb") { number(fields, "rb")? } else { 0 },
    })
}

/// A whole task from its hash.
pub fn task(id: TaskId, fields: &Fields) -> StoreResult<Task> {
    let command = required(fields, "c")?;
    Ok(Task {
        id,
        command: Command::parse(command).map_err(|_| corrupt(format!("command {command}")))?,
        payload: required(fields, "p")?.to_string(),
        priority: Priority::clamped(number(fields, "pr")?),
        webhook: optional(fields, "w"),
        max_attempts: number(fields, "m")?,
        idempotency_key: optional(fields, "k"),
        run_at: time(fields, "ra")?,
        created_at: Timestamp(number(fields, "ca")?),
        created_by: required(fields, "cb")?.to_string(),
        state: state(fields)?,
    })
}

/// A task's result record from its hash, when it has one.
pub fn result(id: TaskId, fields: &Fields) -> StoreResult<Option<ResultRecord>> {
    let Some(status) = fields.get("rs") else { return Ok(None) };
    let status = match status.as_str() {
        "COMPLETED" => ResultStatus::Completed,
        "FAILED" => ResultStatus::Failed,
        "CANCELLED" => ResultStatus::Cancelled,
        other => return Err(corrupt(format!("result status {other}"))),
    };
    let result = fields.get("rr").map(|json| serde_json::from_str(json)).transpose();
    let artifacts: Option<Vec<Artifact>> =
        fields.get("rx").map(|json| serde_json::from_str(json)).transpose().map_err(corrupt)?;
    Ok(Some(ResultRecord {
        task_id: id,
        status,
        result: result.map_err(corrupt)?,
        error: optional(fields, "re"),
        artifacts: artifacts.unwrap_or_default(),
        worker_id: optional(fields, "rw").unwrap_or_default(),
        completed_at: time(fields, "rc")?.unwrap_or(Timestamp(0)),
    }))
}

/// The callback a task's hash says it owes, if any (fields `ob` delivery,
/// `oa` attempts made, `on` next attempt).
pub fn owed(fields: &Fields) -> StoreResult<Option<OwedCallback>> {
    let Some(delivery) = fields.get("ob") else { return Ok(None) };
    Ok(Some(OwedCallback {
        delivery: delivery.parse().map_err(|_| corrupt(format!("delivery {delivery}")))?,
        attempts: fields.get("oa").map_or(Ok(0), |text| text.parse()).map_err(corrupt)?,
        next_at: time(fields, "on")?.unwrap_or(Timestamp(0)),
    }))
}

/// How a task's last callback ended, when its hash keeps it (fields `os`
/// outcome, `oa` attempts, written together) and owes no new one (`ob`).
/// An `os` without `oa` is one a replica of an earlier release left behind
/// when it ended a later callback: not this one's outcome.
pub fn settled(fields: &Fields) -> StoreResult<Option<SettledCallback>> {
    if fields.contains_key("ob") {
        return Ok(None);
    }
    let (Some(outcome), Some(attempts)) = (fields.get("os"), fields.get("oa")) else {
        return Ok(None);
    };
    Ok(Some(SettledCallback {
        outcome: CallbackOutcome::parse(outcome)
            .ok_or_else(|| corrupt(format!("callback outcome {outcome}")))?,
        attempts: attempts.parse().map_err(corrupt)?,
    }))
}

/// A task id in an answer.
pub fn task_id(value: &Value) -> StoreResult<TaskId> {
    let text = value.as_str().ok_or_else(|| corrupt("a task id is not text"))?;
    text.parse().map_err(|_| corrupt(format!("task id {text}")))
}

/// A command name in an answer.
pub fn command(value: &Value) -> StoreResult<Command> {
    let text = value.as_str().ok_or_else(|| corrupt("a command is not text"))?;
    Command::parse(text).map_err(|_| corrupt(format!("command {text}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_settled_callback_needs_its_outcome_and_attempts_and_nothing_owed() {
        let fields = |pairs: &[(&str, &str)]| -> Fields {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let gave_up = SettledCallback { outcome: CallbackOutcome::GaveUp, attempts: 5 };
        assert_eq!(settled(&fields(&[("os", "gave_up"), ("oa", "5")])).unwrap(), Some(gave_up));
        // Owed anew: the outcome kept is of an earlier series.
        let owed = fields(&[("os", "gave_up"), ("ob", "x"), ("oa", "0")]);
        assert_eq!(settled(&owed).unwrap(), None);
        // Left by an earlier release's replica that ended a later one.
        assert_eq!(settled(&fields(&[("os", "gave_up")])).unwrap(), None);
        assert!(settled(&fields(&[("os", "lost"), ("oa", "1")])).is_err());
    }

    #[test]
    fn refusal_codes_map_to_transition_errors() {
        assert_eq!(refusal("NF"), TransitionError::NotFound);
        assert_eq!(refusal("NIP:PENDING"), TransitionError::NotInProgress(TaskStatus::Pending));
        assert_eq!(refusal("SA:2:1"), TransitionError::StaleAttempt { given: 2, current: 1 });
        assert_eq!(refusal("T:CANCELLED"), TransitionError::Terminal(TaskStatus::Cancelled));
        assert_eq!(refusal("CX"), TransitionError::Cancelled);
    }

    #[test]
    fn an_empty_lua_table_is_an_empty_list() {
        assert!(list(&serde_json::json!({})).is_empty());
        assert_eq!(list(&serde_json::json!([1, 2])).len(), 2);
    }
}
