//! Worker endpoints: claim (single and batch, with long poll), heartbeat,
//! abandon, nack and results (single and batch).

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use codeq_core::lifecycle::{Submission, check_result_allowed};
use codeq_core::{Command, ResultStatus, TaskId, Timestamp};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::error::ApiError;
use super::extract::{Body, Worker, parse_json, scope};
use super::tasks::{AnyInteger, check_batch_size, error_item, task_id};
use super::views::{ResultItem, ResultView, ResultsBody, TaskView, TasksBody};
use crate::app::AppState;
use crate::auth::{EventTypes, Principal};
use crate::service::artifacts::{ArtifactUpload, Prepared};
use crate::service::scheduler::ClaimRequest;
use crate::store::{CommandFilter, Completion, Fence, Retried, TransitionError};

/// The longest long poll, in seconds (larger requests are shortened,
/// negative ones do not wait).
const MAX_WAIT_SECONDS: i64 = 30;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClaimBody {
    commands: Option<Vec<String>>,
    lease_seconds: Option<i64>,
    wait_seconds: Option<AnyInteger>,
    count: Option<i64>,
}

impl ClaimBody {
    fn validate(
        self,
        worker: &Principal,
        max_lease: u64,
        count: usize,
    ) -> Result<ClaimRequest, ApiError> {
        let lease_seconds = match self.lease_seconds {
            None => None,
            Some(n) if n >= 1 && n as u64 <= max_lease => Some(n as u64),
            Some(n) => {
                return Err(ApiError::field(format!(
                    "leaseSeconds must be 1..{max_lease}, got {n}"
                )));
            }
        };
        let wait_seconds = self.wait_seconds.map_or(0, |n| n.0.clamp(0, MAX_WAIT_SECONDS));
        let wait = Duration::from_secs(u64::try_from(wait_seconds).unwrap_or(0));
        let commands = claimable_commands(worker, self.commands)?;
        Ok(ClaimRequest { commands, worker_id: worker.sub.clone(), lease_seconds, wait, count })
    }
}

/// The commands a claim may take from: the requested ones (each valid and
/// within the token's `eventTypes`, else 400 / 403), or the token's own.
fn claimable_commands(
    worker: &Principal,
    requested: Option<Vec<String>>,
) -> Result<CommandFilter, ApiError> {
    let Some(names) = requested else {
        return Ok(match &worker.event_types {
            EventTypes::All => CommandFilter::All,
            EventTypes::Only(commands) => CommandFilter::Only(commands.clone()),
        });
    };
    if names.is_empty() {
        return Err(ApiError::field(
            "commands must not be empty (omit it to claim from every allowed command)",
        ));
    }
    let commands = names
        .iter()
        .map(|name| {
            Command::parse(name).map_err(|reason| {
                ApiError::invalid("invalid_command", format!("commands: {name:?} {reason}"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    worker.require_commands(&commands)?;
    Ok(CommandFilter::Only(commands))
}

/// `POST /v1/codeq/tasks/claim`
pub async fn claim(
    State(app): State<AppState>,
    Worker(worker, ..): Worker<scope::Claim>,
    body: Body,
) -> Result<Response, ApiError> {
    let request =
        body.json::<ClaimBody>()?.validate(&worker, app.scheduler.policy().max_lease_seconds, 1)?;
    let claimed = app.scheduler.claim(&request).await?;
    Ok(match claimed.first() {
        Some(task) => Json(TaskView::new(task, app.offset)).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

/// `POST /v1/codeq/tasks/claim/batch`
pub async fn claim_batch(
    State(app): State<AppState>,
    Worker(worker, ..): Worker<scope::Claim>,
    body: Body,
) -> Result<Response, ApiError> {
    let mut request: ClaimBody = body.json()?;
    let count = match request.count.take() {
        Some(n @ 1..=100) => n as usize,
        Some(n) => return Err(ApiError::field(format!("count must be 1..100, got {n}"))),
        None => return Err(ApiError::field("count is required (1..100)")),
    };
    let request = request.validate(&worker, app.scheduler.policy().max_lease_seconds, count)?;
    let claimed = app.scheduler.claim(&request).await?;
    if claimed.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let tasks = claimed.iter().map(|task| TaskView::new(task, app.offset)).collect();
    Ok(Json(TasksBody { tasks }).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HeartbeatBody {
    extend_seconds: Option<i64>,
    attempt: Option<u32>,
}

/// `POST /v1/codeq/tasks/:id/heartbeat`
pub async fn heartbeat(
    State(app): State<AppState>,
    Worker(worker, ..): Worker<scope::Heartbeat>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let request: HeartbeatBody = body.json()?;
    let max_lease = app.scheduler.policy().max_lease_seconds;
    let extend = match request.extend_seconds {
        None => None,
        Some(n) if n >= 1 && n as u64 <= max_lease => Some(n as u64),
        Some(n) => {
            return Err(ApiError::field(format!("extendSeconds must be 1..{max_lease}, got {n}")));
        }
    };
    let fence = Fence { worker_id: &worker.sub, attempt: request.attempt };
    let state = app.scheduler.heartbeat(task_id(&id)?, fence, extend).await?;
    let lease_until = state.lease_until.unwrap_or(Timestamp(0)).to_rfc3339(app.offset);
    Ok(Json(json!({ "ok": true, "leaseUntil": lease_until })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AbandonBody {
    attempt: Option<u32>,
}

/// `POST /v1/codeq/tasks/:id/abandon`
pub async fn abandon(
    State(app): State<AppState>,
    Worker(worker, ..): Worker<scope::Abandon>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let request: AbandonBody = body.json()?;
    let fence = Fence { worker_id: &worker.sub, attempt: request.attempt };
    app.scheduler.abandon(task_id(&id)?, fence).await?;
    Ok(Json(json!({ "status": "requeued" })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NackBody {
    delay_seconds: Option<i64>,
    reason: Option<String>,
    attempt: Option<u32>,
}

/// `POST /v1/codeq/tasks/:id/nack`
pub async fn nack(
    State(app): State<AppState>,
    Worker(worker, ..): Worker<scope::Nack>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let request: NackBody = body.json()?;
    let delay = match request.delay_seconds {
        Some(n) if n < 0 => {
            return Err(ApiError::field(format!("delaySeconds must be >= 0, got {n}")));
        }
        other => other.map(|n| n as u64),
    };
    let fence = Fence { worker_id: &worker.sub, attempt: request.attempt };
    let outcome = app.scheduler.nack(task_id(&id)?, fence, delay, request.reason).await?;
    Ok(Json(match outcome {
        Retried::Requeued { delay_seconds } => {
            json!({ "status": "requeued", "delaySeconds": delay_seconds })
        }
        Retried::DeadLettered => json!({ "status": "dlq", "delaySeconds": 0 }),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArtifactBody {
    name: String,
    url: Option<String>,
    content_base64: Option<String>,
    content_type: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResultBody {
    #[serde(deserialize_with = "result_status")]
    status: ResultStatus,
    result: Option<Value>,
    error: Option<String>,
    #[serde(default)]
    artifacts: Vec<ArtifactBody>,
    attempt: Option<u32>,
}

/// `COMPLETED` or `FAILED`, with an error that says so (serde's own
/// enum error for a number is "expected value").
fn result_status<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<ResultStatus, D::Error> {
    let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
    match text.as_ref() {
        "COMPLETED" => Ok(ResultStatus::Completed),
        "FAILED" => Ok(ResultStatus::Failed),
        other => Err(serde::de::Error::custom(format!(
            "expected \"COMPLETED\" or \"FAILED\", got {other:?}"
        ))),
    }
}

impl ResultBody {
    /// Checks the outcome's fields: `COMPLETED` needs a `result` object,
    /// `FAILED` a non-empty `error`.
    fn check(&self) -> Result<(), ApiError> {
        match self.status {
            ResultStatus::Completed if !matches!(self.result, Some(Value::Object(_))) => {
                Err(ApiError::field("result must be a JSON object when status is COMPLETED"))
            }
            ResultStatus::Failed if self.error.as_deref().is_none_or(str::is_empty) => {
                Err(ApiError::field("error must be a non-empty string when status is FAILED"))
            }
            _ => Ok(()),
        }
    }
}

/// Validates one submission, stores its artifact bytes and builds the
/// completion to hand to the store.
///
/// Bytes are written only for a delivery this worker holds (the store
/// checks again, atomically, when the result is stored), under that
/// delivery's own directory: a repeat of an accepted submission, or one
/// from another delivery, never overwrites the files of the result that
/// was stored. A repeat on a terminal task writes nothing; the store
/// answers it with the stored record.
async fn prepare_completion(
    app: &AppState,
    worker: &Principal,
    task: TaskId,
    body: ResultBody,
) -> Result<Completion, ApiError> {
    body.check()?;
    let uploads = body
        .artifacts
        .into_iter()
        .map(|a| ArtifactUpload {
            name: a.name,
            url: a.url,
            content_base64: a.content_base64,
            content_type: a.content_type,
        })
        .collect();
    let prepared = app.artifacts.prepare(uploads)?;
    let fence = Fence { worker_id: &worker.sub, attempt: body.attempt };
    let artifacts = if prepared.iter().any(Prepared::has_bytes) {
        let state = app.scheduler.task_state(task).await?.ok_or(TransitionError::NotFound)?;
        check_result_allowed(&state, fence)?;
        if state.status.is_terminal() {
            Vec::new()
        } else {
            app.artifacts.store(task, state.attempts, prepared).await?
        }
    } else {
        app.artifacts.store(task, 0, prepared).await?
    };
    let submission =
        Submission { status: body.status, result: body.result, error: body.error, artifacts };
    Ok(Completion {
        task_id: task,
        worker_id: worker.sub.clone(),
        attempt: body.attempt,
        submission,
    })
}

/// `POST /v1/codeq/tasks/:id/result`
pub async fn submit_result(
    State(app): State<AppState>,
    Worker(worker, ..): Worker<scope::Result>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let request: ResultBody = body.json()?;
    let id = task_id(&id)?;
    let completion = prepare_completion(&app, &worker, id, request).await?;
    let outcome = app.scheduler.complete(vec![completion]).await?.into_iter().next();
    match outcome {
        Some(Ok(completed)) => {
            Ok(Json(ResultView::new(completed.record(), app.offset)).into_response())
        }
        Some(Err(refused)) => Err(refused.into()),
        None => Err(ApiError::internal("complete returned nothing")),
    }
}

#[derive(Debug, Deserialize)]
struct BatchResultsBody {
    results: Vec<Box<RawValue>>,
}

/// Just the `taskId` of a batch item, to label an item that fails to parse.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ItemTaskId {
    task_id: Option<String>,
}

/// `POST /v1/codeq/tasks/batch/results`
pub async fn submit_results_batch(
    State(app): State<AppState>,
    Worker(worker, ..): Worker<scope::Result>,
    body: Body,
) -> Result<Response, ApiError> {
    let request: BatchResultsBody = body.json()?;
    check_batch_size("results", request.results.len())?;
    let mut checked: Vec<(String, Result<Completion, ApiError>)> =
        Vec::with_capacity(request.results.len());
    for item in request.results {
        let text = item.get().as_bytes();
        let claimed_id = serde_json::from_slice::<ItemTaskId>(text)
            .unwrap_or_default()
            .task_id
            .unwrap_or_default();
        // The item is a result body with a `taskId`: parsed as one (not
        // flattened, so a wrong field is named in the error).
        let completion = match (task_id(&claimed_id), parse_json::<ResultBody>(text)) {
            (_, Err(error)) => Err(error),
            (Err(_), Ok(_)) if claimed_id.is_empty() => Err(ApiError::field("taskId is required")),
            (Err(error), Ok(_)) => Err(error),
            (Ok(id), Ok(body)) => prepare_completion(&app, &worker, id, body).await,
        };
        checked.push((claimed_id, completion));
    }
    let valid: Vec<Completion> =
        checked.iter().filter_map(|(_, item)| item.as_ref().ok().cloned()).collect();
    let outcomes = app.scheduler.complete(valid).await?;
    let mut outcomes = outcomes.iter();
    let results = checked
        .into_iter()
        .map(|(id, item)| {
            let outcome = item.and_then(|_| match outcomes.next() {
                Some(Ok(completed)) => Ok(completed.record()),
                Some(Err(refused)) => Err(ApiError::from(refused.clone())),
                None => Err(ApiError::internal("batch results lost an item")),
            });
            match outcome {
                Ok(record) => {
                    ResultItem::Result { task_id: id, result: ResultView::new(record, app.offset) }
                }
                Err(error) => ResultItem::Error(error_item(Some(id), error)),
            }
        })
        .collect();
    Ok(Json(ResultsBody { results }).into_response())
}
