//! Worker endpoints: claim (single and batch, with long poll), heartbeat,
//! abandon, nack and results (single and batch).

use std::borrow::Cow;
use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use codeq_core::lifecycle::{Submission, check_result_allowed};
use codeq_core::{Command, JsonText, ResultStatus, TaskId, Timestamp};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::body::{Body, parse_json};
use super::error::ApiError;
use super::extract::{PathText, Worker, scope};
use super::subscriptions::MAX_EVENT_TYPES;
use super::tasks::{AnyInteger, check_batch_size, error_item, path_task_id, task_id, whole};
use super::views::{ResultAndNext, ResultItem, ResultView, ResultsBody, TaskView, TasksBody};
use crate::app::AppState;
use crate::auth::{EventTypes, Principal, Scope};
use crate::service::artifacts::{ArtifactUpload, Held, Prepared, Written};
use crate::service::scheduler::ClaimRequest;
use crate::store::{
    CommandFilter, Completed, Completion, Fence, Retried, StoreResult, TransitionError,
};

/// The longest long poll, in seconds (larger requests are shortened,
/// negative ones do not wait).
const MAX_WAIT_SECONDS: i64 = 30;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClaimBody {
    commands: Option<Vec<String>>,
    #[serde(default, deserialize_with = "whole")]
    lease_seconds: Option<i64>,
    wait_seconds: Option<AnyInteger>,
    #[serde(default, deserialize_with = "whole")]
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
    if names.len() > MAX_EVENT_TYPES {
        return Err(ApiError::field(format!(
            "commands may name at most {MAX_EVENT_TYPES} commands, got {} (omit it to claim from \
             every allowed command)",
            names.len()
        )));
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
        Some(task) => {
            super::observe::note_task(task.id);
            Json(TaskView::seen_by(task, app.offset, &worker)).into_response()
        }
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
    let tasks = claimed.iter().map(|task| TaskView::seen_by(task, app.offset, &worker)).collect();
    Ok(Json(TasksBody { tasks }).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HeartbeatBody {
    #[serde(default, deserialize_with = "whole")]
    extend_seconds: Option<i64>,
    #[serde(default, deserialize_with = "whole")]
    attempt: Option<u32>,
}

/// `POST /v1/codeq/tasks/:id/heartbeat`
pub async fn heartbeat(
    State(app): State<AppState>,
    Worker(worker, ..): Worker<scope::Heartbeat>,
    PathText(id): PathText,
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
    let state = app.scheduler.heartbeat(path_task_id(id.as_deref())?, fence, extend).await?;
    let lease_until = state.lease_until.unwrap_or(Timestamp(0)).to_rfc3339(app.offset);
    Ok(Json(json!({ "ok": true, "leaseUntil": lease_until })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AbandonBody {
    #[serde(default, deserialize_with = "whole")]
    attempt: Option<u32>,
}

/// `POST /v1/codeq/tasks/:id/abandon`
pub async fn abandon(
    State(app): State<AppState>,
    Worker(worker, ..): Worker<scope::Abandon>,
    PathText(id): PathText,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let request: AbandonBody = body.json()?;
    let fence = Fence { worker_id: &worker.sub, attempt: request.attempt };
    app.scheduler.abandon(path_task_id(id.as_deref())?, fence).await?;
    Ok(Json(json!({ "status": "requeued" })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NackBody {
    #[serde(default, deserialize_with = "whole")]
    delay_seconds: Option<i64>,
    reason: Option<String>,
    #[serde(default, deserialize_with = "whole")]
    attempt: Option<u32>,
}

/// `POST /v1/codeq/tasks/:id/nack`
pub async fn nack(
    State(app): State<AppState>,
    Worker(worker, ..): Worker<scope::Nack>,
    PathText(id): PathText,
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
    // An empty reason is no reason (it clears `lastReason`, as none does).
    let reason = request.reason.filter(|reason| !reason.is_empty());
    let outcome = app.scheduler.nack(path_task_id(id.as_deref())?, fence, delay, reason).await?;
    Ok(Json(match outcome {
        Retried::Requeued { delay_seconds } => {
            json!({ "status": "requeued", "delaySeconds": delay_seconds })
        }
        Retried::DeadLettered => json!({ "status": "dlq", "delaySeconds": 0 }),
    }))
}

/// An artifact as submitted; inline content is borrowed from the body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArtifactBody<'a> {
    name: String,
    url: Option<String>,
    #[serde(borrow)]
    content_base64: Option<Cow<'a, str>>,
    content_type: Option<String>,
}

/// A result submission. `Id` is what `taskId` holds: ignored for
/// `POST /tasks/{id}/result` (as any unknown field), required in batches.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResultBody<'a, Id = IgnoredAny> {
    #[serde(default)]
    task_id: Id,
    #[serde(deserialize_with = "result_status")]
    status: ResultStatus,
    #[serde(borrow)]
    result: Option<&'a RawValue>,
    error: Option<String>,
    /// Absent or `null` for none, as every optional field.
    #[serde(borrow, default)]
    artifacts: Option<Vec<ArtifactBody<'a>>>,
    #[serde(default, deserialize_with = "whole")]
    attempt: Option<u32>,
    /// A claim answered with the result (the single result route only).
    claim_next: Option<ClaimBody>,
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

impl<Id> ResultBody<'_, Id> {
    /// Whether it carries inline artifact bytes to write.
    fn carries_bytes(&self) -> bool {
        self.inline_artifacts() > 0
    }

    /// How many artifacts carry their bytes (each a file to write).
    fn inline_artifacts(&self) -> usize {
        self.artifacts.iter().flatten().filter(|artifact| artifact.content_base64.is_some()).count()
    }

    /// Checks the outcome's fields: `COMPLETED` needs a `result` object,
    /// `FAILED` a non-empty `error`.
    fn check(&self) -> Result<(), ApiError> {
        match self.status {
            ResultStatus::Completed
                if !self.result.is_some_and(|raw| raw.get().starts_with('{')) =>
            {
                Err(ApiError::field("result must be a JSON object when status is COMPLETED"))
            }
            ResultStatus::Failed if self.error.as_deref().is_none_or(str::is_empty) => {
                Err(ApiError::field("error must be a non-empty string when status is FAILED"))
            }
            _ => Ok(()),
        }
    }
}

/// Stores a checked submission's artifact bytes (decoded from the request
/// body one piece at a time) and builds the completion to hand to the
/// store.
///
/// Bytes are written only for a delivery this worker holds (the store
/// checks again, atomically, when the result is stored), under that
/// delivery's own directory: a repeat of an accepted submission, or one
/// from another delivery, never overwrites the files of the result that
/// was stored. A repeat on a terminal task writes nothing; the store
/// answers it with the stored record. The caller holds the task's
/// artifacts ([`Artifacts::hold`]) from before this call until the store
/// has answered, so that two submissions of one delivery never both write
/// (the later one's bytes under the earlier one's record). The files
/// written come back as [`Written`]: kept once the result is stored,
/// removed if it is not.
async fn prepare_completion<Id>(
    app: &AppState,
    worker: &Principal,
    task: TaskId,
    body: &Body,
    submission: ResultBody<'_, Id>,
) -> Result<(Completion, Option<Written>), ApiError> {
    let uploads = submission
        .artifacts
        .unwrap_or_default()
        .into_iter()
        .map(|a| ArtifactUpload {
            name: a.name,
            url: a.url,
            content_base64: a.content_base64.map(|text| body.share(text.as_bytes())),
            content_type: a.content_type,
        })
        .collect();
    let prepared = app.artifacts.prepare(uploads).await?;
    let fence = Fence { worker_id: &worker.sub, attempt: submission.attempt };
    let (artifacts, written) = if prepared.iter().any(Prepared::has_bytes) {
        let state = app.scheduler.task_state(task).await?.ok_or(TransitionError::NotFound)?;
        check_result_allowed(&state, fence)?;
        if state.status.is_terminal() {
            (Vec::new(), None)
        } else {
            let store = app.scheduler.store();
            let written = Written::new(&app.artifacts, store, task, state.attempts, &prepared);
            let stored = app.artifacts.store(task, state.attempts, prepared, written.as_ref());
            (stored.await?, written)
        }
    } else {
        (app.artifacts.store(task, 0, prepared, None).await?, None)
    };
    let decided = Submission {
        status: submission.status,
        result: submission.result.map(JsonText::compacted),
        error: submission.error,
        artifacts,
    };
    let completion = Completion {
        task_id: task,
        worker_id: worker.sub.clone(),
        attempt: submission.attempt,
        submission: decided,
    };
    Ok((completion, written))
}

/// Keeps a submission's files when the store took its result (stored, or
/// the repeat of one stored); otherwise they go as `written` is dropped.
fn keep_if_taken<T>(written: Option<Written>, outcome: &Result<T, TransitionError>) {
    if let (Some(written), Ok(_)) = (written, outcome) {
        written.kept();
    }
}

/// Runs `store_step`, the store call of results that wrote `files`, to
/// its end even when the request is dropped meanwhile (its client gone):
/// the files are then kept or removed once the store has answered, never
/// while the call may still land (a Redis call merged into a batch runs
/// on after its caller is dropped). `held` is released with it. A call
/// that holds no task (no inline bytes) is made as it is.
async fn store_results<T: Send + 'static>(
    files: Vec<Option<Written>>,
    held: Held,
    store_step: impl Future<Output = StoreResult<T>> + Send + 'static,
    outcomes: fn(&T) -> Vec<&Result<Completed, TransitionError>>,
) -> Result<T, ApiError> {
    let keep = move |stored: &StoreResult<T>| {
        if let Ok(stored) = stored {
            for (files, outcome) in files.into_iter().zip(outcomes(stored)) {
                keep_if_taken(files, outcome);
            }
        }
    };
    if held.is_empty() {
        let stored = store_step.await;
        keep(&stored);
        return Ok(stored?);
    }
    let finished = tokio::spawn(async move {
        let stored = store_step.await;
        keep(&stored);
        drop(held);
        stored
    });
    Ok(finished.await.map_err(ApiError::internal)??)
}

/// `POST /v1/codeq/tasks/:id/result`; with `claimNext`, the answer also
/// carries the worker's next task (`next`, absent when none is ready),
/// claimed right after the result is stored, in the same store step, and
/// answered once both are durable.
pub async fn submit_result(
    State(app): State<AppState>,
    Worker(worker, ..): Worker<scope::Result>,
    PathText(id): PathText,
    body: Body,
) -> Result<Response, ApiError> {
    let mut request: ResultBody = body.json()?;
    request.check()?;
    // Checked before the result is stored: a bad claim stores nothing.
    let claim_next = match request.claim_next.take() {
        Some(claim) => {
            worker.require_scope(Scope::Claim)?;
            let max_lease = app.scheduler.policy().max_lease_seconds;
            Some(claim.validate(&worker, max_lease, 1).map_err(|error| error.within("claimNext"))?)
        }
        None => None,
    };
    let id = path_task_id(id.as_deref())?;
    let held = app.artifacts.hold(request.carries_bytes().then_some(id)).await;
    let (completion, written) = prepare_completion(&app, &worker, id, &body, request).await?;
    let scheduler = app.scheduler.clone();
    let Some(claim) = claim_next else {
        let completing = async move { scheduler.complete(vec![completion]).await };
        let stored = store_results(vec![written], held, completing, |all| all.iter().collect());
        let outcome = stored.await?.into_iter().next();
        let completed =
            outcome.ok_or_else(|| ApiError::internal("complete returned nothing"))??;
        return Ok(Json(ResultView::new(completed.record(), app.offset)).into_response());
    };
    // A held task is released once its result is stored, not after a long
    // poll: the claim looks once with it, and waits (if asked) without it.
    let holding = !held.is_empty();
    let look_once;
    let first_look = if holding {
        look_once = ClaimRequest { wait: Duration::ZERO, ..claim.clone() };
        &look_once
    } else {
        &claim
    };
    let first_look = first_look.clone();
    let completing = async move { scheduler.complete_and_claim(completion, &first_look).await };
    let stored = store_results(vec![written], held, completing, |(outcome, _)| vec![outcome]);
    let (outcome, mut claimed) = stored.await?;
    let completed = outcome?;
    if holding && claimed.is_empty() && !claim.wait.is_zero() {
        claimed = app.scheduler.claim_after_result(&claim).await;
    }
    let result = ResultView::new(completed.record(), app.offset);
    let next = claimed.first().map(|task| TaskView::seen_by(task, app.offset, &worker));
    Ok(Json(ResultAndNext { result, next }).into_response())
}

/// A batch of results: each item is borrowed from the body, unparsed.
#[derive(Debug, Deserialize)]
struct BatchResultsBody<'a> {
    #[serde(borrow)]
    results: Vec<&'a RawValue>,
}

/// Just the `taskId` of a batch item, to label an item that fails to parse.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ItemTaskId {
    task_id: Option<String>,
}

/// A batch item parsed and checked: its `taskId` to echo, and its task
/// and submission or its refusal.
type ParsedItem<'a> = (String, Result<(TaskId, ResultBody<'a, Option<String>>), ApiError>);

/// Parses and checks one item of a batch of results; `seen` holds the
/// tasks of the items before it, valid or not (a task may appear once in
/// a batch: a later item for it is refused even when the first one was).
fn parse_item<'a>(item: &'a RawValue, seen: &mut HashSet<TaskId>) -> ParsedItem<'a> {
    let text = item.get().as_bytes();
    let parsed = parse_json::<ResultBody<Option<String>>>(text);
    let label = match &parsed {
        Ok(submission) => submission.task_id.clone(),
        Err(_) => serde_json::from_slice::<ItemTaskId>(text).unwrap_or_default().task_id,
    };
    let id = label.as_deref().map(|label| task_id(Some(label)));
    if let Some(Ok(id)) = id
        && !seen.insert(id)
    {
        let refused = ApiError::field(format!("taskId {id} appears more than once in the batch"));
        return (label.unwrap_or_default(), Err(refused));
    }
    let submission = match parsed {
        Ok(submission) => submission,
        Err(error) => return (label.unwrap_or_default(), Err(error)),
    };
    let (Some(label), Some(id)) = (label, id) else {
        return (String::new(), Err(ApiError::field("taskId is required")));
    };
    if submission.claim_next.is_some() {
        let refused = ApiError::field("claimNext is taken by the single result route only");
        return (label, Err(refused));
    }
    if let Err(refused) = submission.check() {
        return (label, Err(refused));
    }
    (label, id.map(|id| (id, submission)))
}

/// The most inline artifacts (files to write, two fsyncs each) one batch
/// of results may carry, whatever its items (each may list 100).
const MAX_INLINE_ARTIFACTS_PER_BATCH: usize = 1000;

/// `POST /v1/codeq/tasks/batch/results`
pub async fn submit_results_batch(
    State(app): State<AppState>,
    Worker(worker, ..): Worker<scope::Result>,
    body: Body,
) -> Result<Response, ApiError> {
    let request: BatchResultsBody = body.json()?;
    check_batch_size("results", request.results.len())?;
    let mut seen = HashSet::with_capacity(request.results.len());
    let items: Vec<ParsedItem> =
        request.results.into_iter().map(|item| parse_item(item, &mut seen)).collect();
    let inline: usize = items
        .iter()
        .filter_map(|(_, parsed)| parsed.as_ref().ok())
        .map(|(_, submission)| submission.inline_artifacts())
        .sum();
    if inline > MAX_INLINE_ARTIFACTS_PER_BATCH {
        return Err(ApiError::invalid(
            "invalid_artifact",
            format!(
                "the batch carries {inline} inline artifacts; at most \
                 {MAX_INLINE_ARTIFACTS_PER_BATCH} per request (each is a file to write)"
            ),
        ));
    }
    let writing = items.iter().filter_map(|(_, parsed)| match parsed {
        Ok((id, submission)) if submission.carries_bytes() => Some(*id),
        _ => None,
    });
    let held = app.artifacts.hold(writing).await;
    // Each item's label and refusal in request order; the valid
    // completions moved out. Items are prepared one after the other, so
    // at most one artifact is being decoded at a time.
    let mut labels: Vec<(String, Option<ApiError>)> = Vec::with_capacity(items.len());
    let mut valid: Vec<Completion> = Vec::with_capacity(items.len());
    let mut written: Vec<Option<Written>> = Vec::with_capacity(items.len());
    for (label, parsed) in items {
        let completion = match parsed {
            Ok((id, submission)) => prepare_completion(&app, &worker, id, &body, submission).await,
            Err(refused) => Err(refused),
        };
        match completion {
            Ok((completion, files)) => {
                valid.push(completion);
                written.push(files);
                labels.push((label, None));
            }
            Err(error) => labels.push((label, Some(error))),
        }
    }
    let _budget = body.release();
    let scheduler = app.scheduler.clone();
    let completing = async move { scheduler.complete(valid).await };
    let outcomes = store_results(written, held, completing, |all| all.iter().collect()).await?;
    let mut outcomes = outcomes.iter();
    let results = labels
        .into_iter()
        .map(|(id, refusal)| {
            let outcome = match refusal {
                Some(error) => Err(error),
                None => match outcomes.next() {
                    Some(Ok(completed)) => Ok(completed.record()),
                    Some(Err(refused)) => Err(ApiError::from(refused.clone())),
                    None => Err(ApiError::internal("batch results lost an item")),
                },
            };
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
