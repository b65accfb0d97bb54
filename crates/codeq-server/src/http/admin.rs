//! Admin endpoints: queue depths and cleanup of terminal tasks. One
//! command's depths are also readable with a worker token whose
//! `eventTypes` cover the command.

use axum::Json;
use axum::extract::State;
use codeq_core::{Command, QueueStats};
use serde::Deserialize;
use serde_json::{Value, json};

use super::body::Body;
use super::error::ApiError;
use super::extract::{Admin, Caller, PathText};
use super::tasks::{rfc3339_field, whole};
use crate::app::AppState;
use crate::auth::PrincipalKind;
use crate::service::retention;

/// `GET /v1/codeq/admin/queues`
pub async fn queues(State(app): State<AppState>, Admin(_): Admin) -> Result<Json<Value>, ApiError> {
    let queues = app.scheduler.store().all_queue_stats().await?;
    Ok(Json(json!({ "queues": queues })))
}

/// `GET /v1/codeq/admin/queues/:command` (and `…/stats`): for an admin, or
/// for a worker whose `eventTypes` cover the command.
pub async fn queue(
    State(app): State<AppState>,
    Caller(caller): Caller,
    PathText(command): PathText,
) -> Result<Json<QueueStats>, ApiError> {
    let worker = caller.kind == PrincipalKind::Worker;
    if !worker {
        caller.require_admin()?;
    }
    let command = path_command(command)?;
    if worker {
        caller.require_commands(std::slice::from_ref(&command))?;
    }
    Ok(Json(app.scheduler.store().queue_stats(&command).await?))
}

/// The command named in a path (400 `invalid_command` when it is not one).
pub fn path_command(text: Option<String>) -> Result<Command, ApiError> {
    let Some(text) = text else {
        return Err(ApiError::invalid(
            "invalid_command",
            "the command in the path is not valid UTF-8 once percent-decoded",
        ));
    };
    Command::parse(&text).map_err(|reason| {
        ApiError::invalid("invalid_command", format!("command {text:?} {reason}"))
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CleanupBody {
    #[serde(default, deserialize_with = "whole")]
    limit: Option<i64>,
    before: Option<String>,
}

/// The most tasks one cleanup call deletes.
const MAX_CLEANUP_LIMIT: i64 = 100_000;

/// `POST /v1/codeq/admin/tasks/cleanup`
pub async fn cleanup(
    State(app): State<AppState>,
    Admin(_): Admin,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let request: CleanupBody = body.json()?;
    let limit = match request.limit {
        None => 1000,
        Some(n @ 1..=MAX_CLEANUP_LIMIT) => n as usize,
        Some(n) => {
            return Err(ApiError::field(format!("limit must be 1..{MAX_CLEANUP_LIMIT}, got {n}")));
        }
    };
    let before = match &request.before {
        None => app.scheduler.clock().now(),
        Some(text) => rfc3339_field("before", text)?,
    };
    let retention_seconds = app.scheduler.policy().retention_seconds;
    let store = app.scheduler.store().as_ref();
    let deleted =
        retention::cleanup(store, &app.artifacts, retention_seconds, before, limit).await?;
    Ok(Json(json!({ "deleted": deleted, "before": before.to_rfc3339(app.offset), "limit": limit })))
}
