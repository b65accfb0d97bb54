//! Producer endpoints (create, batch create) and the reads any caller may
//! make (task, result).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use codeq_core::{Command, Priority, Task, TaskId, Timestamp};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use super::body::{Body, parse_json};
use super::error::ApiError;
use super::extract::{Caller, PathText, PathTexts, Producer};
use super::views::{CreatedItem, ErrorItem, ResultView, ResultsBody, TaskView, TaskWithResult};
use crate::app::AppState;
use crate::auth::PrincipalKind;
use crate::service::artifacts::percent_encode;
use crate::service::outbound::{Outbound, check_http_url};
use crate::service::scheduler::{NewTask, Schedule};
use crate::store::{Created, StoreError};

/// The longest `delaySeconds` accepted: ten years (a longer delay is a
/// mistake, and a time beyond year 9999 has no RFC 3339 form).
pub const MAX_DELAY_SECONDS: i64 = 10 * 365 * 24 * 3600;

/// Most items in one batch request.
pub const MAX_BATCH: usize = 100;

const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The body of a create request; the payload is borrowed from the body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateBody<'a> {
    command: String,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
    priority: Option<AnyInteger>,
    #[serde(default, deserialize_with = "whole")]
    max_attempts: Option<i64>,
    webhook: Option<String>,
    idempotency_key: Option<String>,
    run_at: Option<String>,
    #[serde(default, deserialize_with = "whole")]
    delay_seconds: Option<i64>,
}

impl CreateBody<'_> {
    /// Checks every field (the message names the field).
    fn validate(
        self,
        max_payload_bytes: usize,
        producer: &str,
        outbound: &Outbound,
    ) -> Result<NewTask, ApiError> {
        let command = Command::parse(&self.command).map_err(|reason| {
            ApiError::invalid("invalid_command", format!("command {:?} {reason}", self.command))
        })?;
        let payload = match self.payload {
            Some(raw) if raw.get() != "null" => codeq_core::json::compact(raw.get()),
            _ => return Err(ApiError::field("payload is required")),
        };
        if payload.len() > max_payload_bytes {
            return Err(ApiError::too_large(
                "payload_too_large",
                format!(
                    "payload is {} bytes, over maxPayloadBytes ({max_payload_bytes})",
                    payload.len()
                ),
            ));
        }
        let max_attempts = match self.max_attempts {
            None => None,
            Some(n @ 1..=1000) => Some(n as u32),
            Some(n) => {
                return Err(ApiError::field(format!("maxAttempts must be 1..1000, got {n}")));
            }
        };
        if let Some(webhook) = &self.webhook {
            check_http_url(webhook).map_err(|why| ApiError::field(format!("webhook {why}")))?;
            outbound
                .check_target(webhook)
                .map_err(|why| ApiError::field(format!("webhook {why}")))?;
        }
        if let Some(key) = &self.idempotency_key
            && !(1..=256).contains(&key.chars().count())
        {
            return Err(ApiError::field("idempotencyKey must be 1..256 characters"));
        }
        let schedule = match (&self.run_at, self.delay_seconds) {
            (Some(text), _) => Schedule::At(rfc3339_field("runAt", text)?),
            (None, Some(seconds @ 0..=MAX_DELAY_SECONDS)) => Schedule::After(seconds as u64),
            (None, Some(seconds)) => {
                return Err(ApiError::field(format!(
                    "delaySeconds must be 0..{MAX_DELAY_SECONDS} (ten years), got {seconds}"
                )));
            }
            (None, None) => Schedule::Now,
        };
        Ok(NewTask {
            command,
            payload,
            priority: Priority::clamped(self.priority.map_or(0, |p| p.0)),
            max_attempts,
            webhook: self.webhook,
            idempotency_key: self.idempotency_key,
            schedule,
            created_by: producer.to_string(),
        })
    }
}

/// A JSON integer of any size, saturated to `i64`, for the fields the API
/// clamps into their range instead of refusing (`priority`,
/// `waitSeconds`): `1e3` and `5.0` count as integers, `5.5` is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnyInteger(pub i64);

impl<'de> Deserialize<'de> for AnyInteger {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let number = serde_json::Number::deserialize(deserializer)?;
        if let Some(n) = number.as_i64() {
            return Ok(Self(n));
        }
        match number.as_f64() {
            // `as` saturates: beyond i64 is i64::MAX (or MIN).
            Some(n) if n.fract() == 0.0 => Ok(Self(n as i64)),
            _ => Err(D::Error::custom(format!("expected an integer, got {number}"))),
        }
    }
}

/// A time field: RFC 3339, from 0000-01-02 to 9999-12-30 (so that it can
/// be shown in any offset).
pub fn rfc3339_field(name: &str, text: &str) -> Result<Timestamp, ApiError> {
    Timestamp::parse_rfc3339(text).ok_or_else(|| {
        ApiError::field(format!(
            "{name} {text:?} is not an RFC 3339 time from 0000-01-02T00:00:00Z to 9999-12-30T00:00:00Z"
        ))
    })
}

/// An optional integer field the API refuses out of range: whole numbers
/// written as `5.0` or `1e3` count, as JSON Schema's `integer` does
/// (beyond `i64` they saturate, and the range check refuses them); `5.5`
/// is refused.
pub fn whole<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
{
    let Some(AnyInteger(n)) = Option::<AnyInteger>::deserialize(deserializer)? else {
        return Ok(None);
    };
    T::try_from(n).map(Some).map_err(|_| D::Error::custom("a whole number out of range"))
}

/// `POST /v1/codeq/tasks`
pub async fn create(
    State(app): State<AppState>,
    Producer(producer): Producer,
    body: Body,
) -> Result<Response, ApiError> {
    let request: CreateBody = body.json()?;
    let task = request.validate(app.limits.max_payload_bytes, &producer.sub, &app.outbound)?;
    producer.require_commands(std::slice::from_ref(&task.command))?;
    let command = task.command.clone();
    let created = app.scheduler.create(vec![task]).await?;
    let Some(created) = created.into_iter().next() else {
        return Err(ApiError::internal("create returned nothing"));
    };
    let (task, replayed) = match &created {
        Created::New(task) => (task, false),
        Created::Existing(task) => (check_repeat(task, &command)?, true),
        Created::TooManyCommands(max) => return Err(StoreError::TooManyCommands(*max).into()),
    };
    super::observe::note_task(task.id);
    let mut response = (StatusCode::ACCEPTED, Json(TaskView::seen_by(task, app.offset, &producer)))
        .into_response();
    if replayed {
        response.headers_mut().insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// A batch create: each item is borrowed from the body, unparsed.
#[derive(Debug, Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow)]
    tasks: Vec<&'a RawValue>,
}

/// `POST /v1/codeq/tasks/batch`
pub async fn create_batch(
    State(app): State<AppState>,
    Producer(producer): Producer,
    body: Body,
) -> Result<Response, ApiError> {
    let request: BatchBody = body.json()?;
    check_batch_size("tasks", request.tasks.len())?;
    // Each item's refusal in request order, and the valid tasks moved out
    // (no copy of their payloads).
    let mut refusals: Vec<Option<ApiError>> = Vec::with_capacity(request.tasks.len());
    let mut valid: Vec<NewTask> = Vec::with_capacity(request.tasks.len());
    let mut commands: Vec<Command> = Vec::with_capacity(request.tasks.len());
    for item in request.tasks {
        let checked = parse_json::<CreateBody>(item.get().as_bytes())
            .and_then(|body| {
                body.validate(app.limits.max_payload_bytes, &producer.sub, &app.outbound)
            })
            .and_then(|task| {
                producer.require_commands(std::slice::from_ref(&task.command))?;
                Ok(task)
            });
        match checked {
            Ok(task) => {
                commands.push(task.command.clone());
                valid.push(task);
                refusals.push(None);
            }
            Err(error) => refusals.push(Some(error)),
        }
    }
    // The payloads are copied out: the request bytes can go before the
    // store makes its own copies.
    let _budget = body.release();
    let created = app.scheduler.create(valid).await?;
    let answer_bytes = created
        .iter()
        .map(|created| created.task().map_or(0, |task| task.payload.len()) * 9 / 8 + 512)
        .sum();
    let mut created = created.iter().zip(&commands);
    let results = refusals
        .into_iter()
        .map(|refusal| {
            let outcome = match refusal {
                Some(error) => Err(error),
                None => match created.next() {
                    Some((Created::New(task), _)) => Ok(task),
                    Some((Created::Existing(task), command)) => check_repeat(task, command),
                    Some((Created::TooManyCommands(max), _)) => {
                        Err(StoreError::TooManyCommands(*max).into())
                    }
                    None => Err(ApiError::internal("batch create lost an item")),
                },
            };
            match outcome {
                Ok(task) => {
                    CreatedItem::Task { task: TaskView::seen_by(task, app.offset, &producer) }
                }
                Err(error) => CreatedItem::Error(error_item(None, error)),
            }
        })
        .collect();
    json_sized(&ResultsBody { results }, answer_bytes)
}

/// The existing task a create of `command` got for its `idempotencyKey`,
/// when it is that create's repeat: a task of the same command (from any
/// producer, so that replicas of one producer with tokens of their own
/// still share their keys). A task of another command is 409
/// `idempotency_conflict`: it does not pass for the one asked for.
fn check_repeat<'a>(existing: &'a Task, command: &Command) -> Result<&'a Task, ApiError> {
    if existing.command != *command {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "idempotency_conflict",
            "idempotencyKey is already used by a task of another command: choose a key of your own",
        ));
    }
    Ok(existing)
}

/// A JSON answer written into a buffer of about `capacity` bytes, so that
/// a large answer is not copied over and over while it grows.
pub fn json_sized<T: serde::Serialize>(value: &T, capacity: usize) -> Result<Response, ApiError> {
    let mut bytes = Vec::with_capacity(capacity);
    serde_json::to_writer(&mut bytes, value).map_err(ApiError::internal)?;
    let content_type = [(axum::http::header::CONTENT_TYPE, "application/json")];
    Ok((content_type, bytes).into_response())
}

/// The `{error, code}` of one batch item.
pub fn error_item(task_id: Option<String>, error: ApiError) -> ErrorItem {
    ErrorItem { task_id, error: error.message, code: error.code }
}

/// 400 unless `len` is 1..=100.
pub fn check_batch_size(field: &str, len: usize) -> Result<(), ApiError> {
    if (1..=MAX_BATCH).contains(&len) {
        Ok(())
    } else {
        Err(ApiError::field(format!("{field} must hold 1..{MAX_BATCH} items, got {len}")))
    }
}

/// Parses a task id; an id that is not a UUID (or not text at all) names
/// no task.
pub fn task_id(text: Option<&str>) -> Result<TaskId, ApiError> {
    text.and_then(|text| text.parse().ok())
        .ok_or_else(|| ApiError::not_found("task_not_found", "task not found"))
}

/// [`task_id`] of the task a request's path names, noted on its log line.
pub fn path_task_id(text: Option<&str>) -> Result<TaskId, ApiError> {
    let id = task_id(text)?;
    super::observe::note_task(id);
    Ok(id)
}

/// `GET /v1/codeq/tasks/:id`
pub async fn get(
    State(app): State<AppState>,
    Caller(caller): Caller,
    PathText(id): PathText,
) -> Result<Response, ApiError> {
    let id = path_task_id(id.as_deref())?;
    let task = app
        .scheduler
        .task(id)
        .await?
        .ok_or_else(|| ApiError::not_found("task_not_found", "task not found"))?;
    Ok(Json(TaskView::seen_by(&task, app.offset, &caller)).into_response())
}

/// `GET /v1/codeq/tasks/:id/result`
pub async fn get_result(
    State(app): State<AppState>,
    Caller(caller): Caller,
    PathText(id): PathText,
) -> Result<Response, ApiError> {
    let id = path_task_id(id.as_deref())?;
    let (task, record) = app.scheduler.task_with_result(id).await?.ok_or_else(|| {
        ApiError::not_found("result_not_found", "task not found or has no result yet")
    })?;
    let body = TaskWithResult {
        task: TaskView::seen_by(&task, app.offset, &caller),
        result: ResultView::new(&record, app.offset),
    };
    Ok(Json(body).into_response())
}

/// `GET /v1/codeq/tasks/:id/artifacts/:name`: the stored bytes of an
/// inline artifact, for the task's producer, the worker that holds (or
/// completed) it, and admins.
pub async fn artifact(
    State(app): State<AppState>,
    Caller(caller): Caller,
    PathTexts(id, name): PathTexts,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::not_found("artifact_not_found", "no such artifact");
    let id = path_task_id(id.as_deref())?;
    let name = name.ok_or_else(not_found)?;
    let (task, record) = app.scheduler.task_with_result(id).await?.ok_or_else(not_found)?;
    let producer = caller.produced(&task);
    let worker = caller.kind == PrincipalKind::Worker
        && task.state.worker_id.as_deref() == Some(caller.sub.as_str());
    if !(caller.admin || producer || worker) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "not_owner",
            "only the task's producer, its worker or an admin may read its artifacts",
        ));
    }
    let artifact = record
        .artifacts
        .iter()
        .find(|artifact| artifact.name == name && app.artifacts.serves_at(&artifact.url, id, &name))
        .ok_or_else(not_found)?;
    let bytes =
        app.artifacts.read(id, task.state.attempts, &artifact.name).await.map_err(|error| {
            match error.kind() {
                std::io::ErrorKind::NotFound => not_found(),
                _ => ApiError::internal(error),
            }
        })?;
    let content_type = artifact.content_type.as_deref().unwrap_or("application/octet-stream");
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap_or(OCTET_STREAM)),
        (header::CONTENT_DISPOSITION, attachment(&artifact.name)),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
    ];
    Ok((headers, bytes).into_response())
}

const OCTET_STREAM: HeaderValue = HeaderValue::from_static("application/octet-stream");

/// `attachment; filename*=UTF-8''<name, percent-encoded>` (RFC 6266).
fn attachment(name: &str) -> HeaderValue {
    let value = format!("attachment; filename*=UTF-8''{}", percent_encode(name));
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("attachment"))
}
