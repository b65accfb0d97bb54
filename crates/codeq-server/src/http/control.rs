//! Queue-control endpoints: cancel (the task's producer or an admin),
//! queue settings with pause and resume, the dead-letter queue (list,
//! replay, purge) and task listing (admins).

use std::collections::HashMap;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use codeq_core::{QueueSettings, TaskId, TaskStatus, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::admin::path_command;
use super::body::Body;
use super::error::ApiError;
use super::extract::{Admin, PathText, Producer};
use super::tasks::{check_batch_size, path_task_id, rfc3339_field, whole};
use super::views::TaskView;
use crate::app::AppState;
use crate::service::control::{CancelRefused, MAX_BULK, Page, Selection};
use crate::store::{DeadLetterFilter, DeadLetterKey};

/// The longest page.
const MAX_PAGE: usize = 1000;
/// A page's length when none is asked.
const DEFAULT_PAGE: usize = 100;
/// The longest cancel reason, in bytes.
const MAX_REASON_BYTES: usize = 1024;
/// Limits and rates above these are refused as mistakes.
const MAX_IN_FLIGHT: u32 = 1_000_000;
const MAX_RATE: f64 = 1_000_000.0;

impl From<CancelRefused> for ApiError {
    fn from(refused: CancelRefused) -> Self {
        match refused {
            CancelRefused::NotOwner => Self::new(
                StatusCode::FORBIDDEN,
                "not_owner",
                "only the task's producer or an admin may cancel it",
            ),
            CancelRefused::Transition(error) => error.into(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CancelBody {
    reason: Option<String>,
}

fn check_reason(reason: Option<&str>) -> Result<(), ApiError> {
    match reason {
        Some(text) if text.len() > MAX_REASON_BYTES => {
            Err(ApiError::field(format!("reason must be at most {MAX_REASON_BYTES} bytes")))
        }
        _ => Ok(()),
    }
}

/// `POST /v1/codeq/tasks/:id/cancel`
pub async fn cancel(
    State(app): State<AppState>,
    Producer(producer): Producer,
    PathText(id): PathText,
    body: Body,
) -> Result<Response, ApiError> {
    let request: CancelBody = body.json()?;
    check_reason(request.reason.as_deref())?;
    let id = path_task_id(id.as_deref())?;
    let mut outcomes =
        app.control.cancel(&producer.sub, producer.admin, &[id], request.reason).await?;
    outcomes.pop().unwrap_or(Err(CancelRefused::NotOwner))?;
    // Read back without a second admission place: the cancel is done, and
    // a 503 `overloaded` now would tell the caller that nothing was.
    let task = app.scheduler.store().get_task(id).await?;
    let task = task.ok_or_else(|| ApiError::from(task_gone()))?;
    Ok(Json(TaskView::new(&task, app.offset)).into_response())
}

fn task_gone() -> CancelRefused {
    CancelRefused::Transition(crate::store::TransitionError::NotFound)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CancelManyBody {
    ids: Vec<String>,
    reason: Option<String>,
}

/// `POST /v1/codeq/tasks/batch/cancel`: up to 100 ids, each on its own.
pub async fn cancel_many(
    State(app): State<AppState>,
    Producer(producer): Producer,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let request: CancelManyBody = body.json()?;
    check_batch_size("ids", request.ids.len())?;
    check_reason(request.reason.as_deref())?;
    let parsed: Vec<Option<TaskId>> =
        request.ids.iter().map(|text| text.parse::<TaskId>().ok()).collect();
    let known: Vec<TaskId> = parsed.iter().flatten().copied().collect();
    let mut outcomes = app
        .control
        .cancel(&producer.sub, producer.admin, &known, request.reason)
        .await?
        .into_iter();
    let mut results = Vec::with_capacity(parsed.len());
    for (text, id) in request.ids.iter().zip(&parsed) {
        let outcome = match id {
            Some(_) => outcomes.next().unwrap_or(Err(task_gone())),
            None => Err(task_gone()),
        };
        results.push(match outcome {
            Ok(state) => json!({ "taskId": text, "status": state.status.as_str() }),
            Err(refused) => {
                let error = ApiError::from(refused);
                json!({ "taskId": text, "error": error.message, "code": error.code })
            }
        });
    }
    Ok(Json(json!({ "results": results })))
}

/// Queue settings as sent: every field optional (absent: unset).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SettingsBody {
    paused: Option<bool>,
    #[serde(default, deserialize_with = "whole")]
    max_in_flight: Option<i64>,
    rate_per_second: Option<f64>,
    #[serde(default, deserialize_with = "whole")]
    burst: Option<i64>,
}

impl SettingsBody {
    fn validate(self) -> Result<QueueSettings, ApiError> {
        let max_in_flight = match self.max_in_flight {
            None => None,
            Some(n) if (1..=i64::from(MAX_IN_FLIGHT)).contains(&n) => Some(n as u32),
            Some(n) => {
                return Err(ApiError::field(format!(
                    "maxInFlight must be 1..{MAX_IN_FLIGHT}, got {n}"
                )));
            }
        };
        let rate_per_second = match self.rate_per_second {
            None => None,
            Some(rate) if rate > 0.0 && rate <= MAX_RATE => Some(rate),
            Some(rate) => {
                return Err(ApiError::field(format!(
                    "ratePerSecond must be above 0 and at most {MAX_RATE}, got {rate}"
                )));
            }
        };
        let burst = match self.burst {
            None => None,
            Some(_) if rate_per_second.is_none() => {
                return Err(ApiError::field("burst needs ratePerSecond"));
            }
            Some(n) if (1..=i64::from(MAX_IN_FLIGHT)).contains(&n) => Some(n as u32),
            Some(n) => {
                return Err(ApiError::field(format!("burst must be 1..{MAX_IN_FLIGHT}, got {n}")));
            }
        };
        Ok(QueueSettings {
            paused: self.paused.unwrap_or(false),
            max_in_flight,
            rate_per_second,
            burst,
        })
    }
}

/// `GET /v1/codeq/admin/queues/:command/settings`
pub async fn settings(
    State(app): State<AppState>,
    Admin(_): Admin,
    PathText(command): PathText,
) -> Result<Json<QueueSettings>, ApiError> {
    let command = path_command(command)?;
    Ok(Json(app.control.settings(&command).await?))
}

/// `PUT /v1/codeq/admin/queues/:command/settings`: replaces them all
/// (a field left out is unset). An empty body is refused, not read as
/// `{}`: sent by mistake, it would unpause the queue and lift its limits.
pub async fn put_settings(
    State(app): State<AppState>,
    Admin(_): Admin,
    PathText(command): PathText,
    body: Body,
) -> Result<Json<QueueSettings>, ApiError> {
    if body.is_blank() {
        return Err(ApiError::field(
            "the body is required: the settings to store ({} clears them all)",
        ));
    }
    let settings = body.json::<SettingsBody>()?.validate()?;
    let command = path_command(command)?;
    Ok(Json(app.control.set_settings(&command, settings).await?))
}

/// `POST /v1/codeq/admin/queues/:command/pause`
pub async fn pause(
    State(app): State<AppState>,
    Admin(_): Admin,
    PathText(command): PathText,
) -> Result<Json<QueueSettings>, ApiError> {
    let command = path_command(command)?;
    Ok(Json(app.control.set_paused(&command, true).await?))
}

/// `POST /v1/codeq/admin/queues/:command/resume`
pub async fn resume(
    State(app): State<AppState>,
    Admin(_): Admin,
    PathText(command): PathText,
) -> Result<Json<QueueSettings>, ApiError> {
    let command = path_command(command)?;
    Ok(Json(app.control.set_paused(&command, false).await?))
}

/// The query of a listing, as text (checked by hand, so that a bad
/// value gets the API's JSON error).
pub(super) type RawQuery = Result<Query<HashMap<String, String>>, QueryRejection>;

pub(super) fn query(raw: RawQuery) -> Result<HashMap<String, String>, ApiError> {
    raw.map(|Query(fields)| fields)
        .map_err(|rejection| ApiError::field(format!("query: {}", rejection.body_text())))
}

fn page_limit(fields: &HashMap<String, String>) -> Result<usize, ApiError> {
    match fields.get("limit") {
        None => Ok(DEFAULT_PAGE),
        Some(text) => match text.parse::<usize>() {
            Ok(n @ 1..=MAX_PAGE) => Ok(n),
            _ => Err(ApiError::field(format!("limit must be 1..{MAX_PAGE}, got {text:?}"))),
        },
    }
}

fn time_field(fields: &HashMap<String, String>, name: &str) -> Result<Option<Timestamp>, ApiError> {
    fields.get(name).map(|text| rfc3339_field(name, text)).transpose()
}

fn flag(fields: &HashMap<String, String>, name: &str) -> Result<bool, ApiError> {
    match fields.get(name).map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(ApiError::field(format!("{name} must be true or false, got {other:?}"))),
    }
}

fn bad_cursor() -> ApiError {
    ApiError::field("cursor is not one this server handed out")
}

/// A dead-letter cursor: `<failed at, ms>.<id>`, base64url.
fn dead_cursor(key: DeadLetterKey) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}.{}", key.0.millis(), key.1))
}

fn parse_dead_cursor(text: &str) -> Result<DeadLetterKey, ApiError> {
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad_cursor())?;
    let text = String::from_utf8(bytes).map_err(|_| bad_cursor())?;
    let (millis, id) = text.split_once('.').ok_or_else(bad_cursor)?;
    let millis = millis.parse::<i64>().map_err(|_| bad_cursor())?;
    Ok((Timestamp(millis), id.parse::<TaskId>().map_err(|_| bad_cursor())?))
}

/// A task-listing cursor: the last id, base64url.
fn task_cursor(id: TaskId) -> String {
    URL_SAFE_NO_PAD.encode(id.to_string())
}

fn parse_task_cursor(text: &str) -> Result<TaskId, ApiError> {
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad_cursor())?;
    String::from_utf8(bytes).ok().and_then(|id| id.parse().ok()).ok_or_else(bad_cursor)
}

fn dead_filter(fields: &HashMap<String, String>) -> Result<DeadLetterFilter, ApiError> {
    Ok(DeadLetterFilter {
        before: time_field(fields, "failedBefore")?,
        after: time_field(fields, "failedAfter")?,
        text: fields.get("errorContains").filter(|text| !text.is_empty()).cloned(),
    })
}

/// `{"tasks": [...], "nextCursor"?}`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PageBody<'a> {
    tasks: Vec<TaskView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

fn page_body<C>(
    page: &Page<C>,
    app: &AppState,
    payloads: bool,
    cursor: impl Fn(&C) -> String,
) -> Response {
    let tasks = page
        .tasks
        .iter()
        .map(|task| {
            let view = TaskView::new(task, app.offset);
            if payloads { view } else { view.without_payload() }
        })
        .collect();
    Json(PageBody { tasks, next_cursor: page.next.as_ref().map(cursor) }).into_response()
}

/// `GET /v1/codeq/admin/queues/:command/dlq`
pub async fn dead_letters(
    State(app): State<AppState>,
    Admin(_): Admin,
    PathText(command): PathText,
    raw: RawQuery,
) -> Result<Response, ApiError> {
    let fields = query(raw)?;
    let limit = page_limit(&fields)?;
    let filter = dead_filter(&fields)?;
    let cursor = fields.get("cursor").map(|text| parse_dead_cursor(text)).transpose()?;
    let payloads = flag(&fields, "includePayload")?;
    let command = path_command(command)?;
    let page = app.control.dead_letters(&command, &filter, cursor, limit).await?;
    Ok(page_body(&page, &app, payloads, |key| dead_cursor(*key)))
}

/// A replay or purge: `ids`, or the listing's filters; `limit`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BulkBody {
    ids: Option<Vec<String>>,
    error_contains: Option<String>,
    failed_before: Option<String>,
    failed_after: Option<String>,
    #[serde(default, deserialize_with = "whole")]
    limit: Option<i64>,
    rate_per_second: Option<f64>,
}

impl BulkBody {
    fn selection(&self) -> Result<(Selection, usize), ApiError> {
        let limit = match self.limit {
            None => 1000,
            Some(n) if (1..=MAX_BULK as i64).contains(&n) => n as usize,
            Some(n) => {
                return Err(ApiError::field(format!("limit must be 1..{MAX_BULK}, got {n}")));
            }
        };
        let time = |name: &str, text: &Option<String>| {
            text.as_deref().map(|text| rfc3339_field(name, text)).transpose()
        };
        let filter = DeadLetterFilter {
            before: time("failedBefore", &self.failed_before)?,
            after: time("failedAfter", &self.failed_after)?,
            text: self.error_contains.clone().filter(|text| !text.is_empty()),
        };
        let Some(ids) = &self.ids else { return Ok((Selection::Matching(filter), limit)) };
        if filter != DeadLetterFilter::default() {
            return Err(ApiError::field("give ids or filters, not both"));
        }
        if ids.is_empty() || ids.len() > MAX_BULK {
            return Err(ApiError::field(format!("ids must hold 1..{MAX_BULK} items")));
        }
        let ids = ids
            .iter()
            .map(|text| {
                text.parse::<TaskId>()
                    .map_err(|_| ApiError::field(format!("ids: {text:?} is not a task id")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((Selection::Ids(ids), limit))
    }
}

/// `POST /v1/codeq/admin/queues/:command/dlq/replay`
pub async fn replay(
    State(app): State<AppState>,
    Admin(_): Admin,
    PathText(command): PathText,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let request: BulkBody = body.json()?;
    let (selection, limit) = request.selection()?;
    let rate = match request.rate_per_second {
        None => None,
        Some(rate) if rate > 0.0 && rate <= MAX_RATE => Some(rate),
        Some(rate) => {
            return Err(ApiError::field(format!(
                "ratePerSecond must be above 0 and at most {MAX_RATE}, got {rate}"
            )));
        }
    };
    let command = path_command(command)?;
    let replayed = app.control.replay(&command, selection, limit, rate).await?;
    Ok(Json(json!({ "replayed": replayed.len(), "ids": replayed })))
}

/// `POST /v1/codeq/admin/queues/:command/dlq/purge`
pub async fn purge(
    State(app): State<AppState>,
    Admin(_): Admin,
    PathText(command): PathText,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let request: BulkBody = body.json()?;
    if request.rate_per_second.is_some() {
        return Err(ApiError::field("ratePerSecond applies to a replay only"));
    }
    let (selection, limit) = request.selection()?;
    let command = path_command(command)?;
    let purged = app.control.purge(&command, selection, limit).await?;
    Ok(Json(json!({ "purged": purged.len(), "ids": purged })))
}

/// `GET /v1/codeq/admin/tasks`
pub async fn list(
    State(app): State<AppState>,
    Admin(_): Admin,
    raw: RawQuery,
) -> Result<Response, ApiError> {
    let fields = query(raw)?;
    let limit = page_limit(&fields)?;
    let status = fields
        .get("status")
        .map(|text| {
            TaskStatus::parse(text).ok_or_else(|| {
                ApiError::field(format!(
                    "status must be PENDING, IN_PROGRESS, COMPLETED, FAILED or CANCELLED, got {text:?}"
                ))
            })
        })
        .transpose()?;
    let command = fields.get("command").map(|text| path_command(Some(text.clone()))).transpose()?;
    let cursor = fields.get("cursor").map(|text| parse_task_cursor(text)).transpose()?;
    let payloads = flag(&fields, "includePayload")?;
    let page = app.control.list(command.as_ref(), status, cursor, limit).await?;
    Ok(page_body(&page, &app, payloads, |id| task_cursor(*id)))
}
