//! Worker-availability subscriptions: create, heartbeat (renew) and
//! delete, for workers with scope `codeq:subscribe`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use codeq_core::{Command, DeliveryMode, Subscription};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::body::Body;
use super::error::ApiError;
use super::extract::{PathText, Worker, scope};
use super::tasks::AnyInteger;
use crate::app::AppState;
use crate::auth::{AuthError, EventTypes, Principal};
use crate::service::outbound::check_http_url;
use crate::service::subscriptions::{NewSubscription, SubscriptionError};

/// `ttlSeconds` when none is given.
const DEFAULT_TTL_SECONDS: i64 = 300;
/// The longest `ttlSeconds`: a day (a worker renews well before).
const MAX_TTL_SECONDS: i64 = 86_400;
/// The longest `minIntervalSeconds`: an hour.
const MAX_MIN_INTERVAL_SECONDS: i64 = 3_600;
/// The longest `groupId`.
const MAX_GROUP_ID_BYTES: usize = 128;
/// The most commands `eventTypes` (and a claim's `commands`) may name: a
/// worker listening to more omits it for its token's own, or asks for
/// `"*"`.
pub const MAX_EVENT_TYPES: usize = 100;

impl From<SubscriptionError> for ApiError {
    fn from(error: SubscriptionError) -> Self {
        match error {
            SubscriptionError::NotFound => not_found(),
            SubscriptionError::NotOwner => {
                Self::new(StatusCode::FORBIDDEN, "not_owner", error.to_string())
            }
            SubscriptionError::TooMany => {
                Self::new(StatusCode::CONFLICT, "too_many_subscriptions", error.to_string())
            }
            SubscriptionError::Store(error) => error.into(),
        }
    }
}

fn not_found() -> ApiError {
    ApiError::not_found("subscription_not_found", "subscription not found")
}

fn subscription_id(text: Option<&str>) -> Result<Uuid, ApiError> {
    text.and_then(|text| text.parse().ok()).ok_or_else(not_found)
}

fn answer(subscription: &Subscription, app: &AppState) -> Json<Value> {
    Json(json!({
        "subscriptionId": subscription.id,
        "expiresAt": subscription.expires_at.to_rfc3339(app.offset),
    }))
}

fn ttl_seconds(ttl: Option<AnyInteger>) -> Result<u64, ApiError> {
    match ttl.map_or(DEFAULT_TTL_SECONDS, |n| n.0) {
        n @ 1..=MAX_TTL_SECONDS => Ok(n as u64),
        n => Err(ApiError::field(format!("ttlSeconds must be 1..{MAX_TTL_SECONDS}, got {n}"))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateBody {
    callback_url: Option<String>,
    event_types: Option<Vec<String>>,
    ttl_seconds: Option<AnyInteger>,
    delivery_mode: Option<String>,
    group_id: Option<String>,
    min_interval_seconds: Option<AnyInteger>,
}

/// A subscription's group, by the token's `workerGroup` rules: a token
/// with a group subscribes in `group` mode by default, in its own group
/// only; `group` mode needs a group.
fn mode_and_group(
    worker: &Principal,
    mode: Option<&str>,
    group_id: Option<String>,
) -> Result<(DeliveryMode, Option<String>), ApiError> {
    let mode = match mode {
        None if worker.worker_group.is_some() => DeliveryMode::Group,
        None => DeliveryMode::Fanout,
        Some(text) => DeliveryMode::parse(text).ok_or_else(|| {
            ApiError::field(format!(
                "deliveryMode must be \"fanout\", \"group\" or \"hash\", got {text:?}"
            ))
        })?,
    };
    if let Some(group) = &group_id
        && (group.is_empty() || group.len() > MAX_GROUP_ID_BYTES)
    {
        return Err(ApiError::field(format!("groupId must be 1..{MAX_GROUP_ID_BYTES} bytes")));
    }
    let group_id = match (&worker.worker_group, group_id) {
        (Some(own), Some(asked)) if *own != asked => {
            return Err(AuthError::forbidden(
                "group_not_allowed",
                format!("groupId must be the token's workerGroup {own:?}"),
            )
            .into());
        }
        (Some(own), _) => Some(own.clone()),
        (None, asked) => asked,
    };
    if mode == DeliveryMode::Group && group_id.is_none() {
        return Err(ApiError::field("groupId is required for deliveryMode \"group\""));
    }
    Ok((mode, group_id))
}

/// The commands to listen to: the requested ones (each within the
/// token's `eventTypes`), or the token's own. `None`: every command.
fn listened_commands(
    worker: &Principal,
    requested: Option<Vec<String>>,
) -> Result<Option<Vec<Command>>, ApiError> {
    let Some(names) = requested else {
        return Ok(match &worker.event_types {
            EventTypes::All => None,
            EventTypes::Only(commands) => Some(commands.clone()),
        });
    };
    if names.is_empty() {
        return Err(ApiError::field("eventTypes must not be empty (omit it for the token's own)"));
    }
    if names.len() > MAX_EVENT_TYPES {
        return Err(ApiError::field(format!(
            "eventTypes may name at most {MAX_EVENT_TYPES} commands, got {} (omit it for the \
             token's own, or ask for \"*\")",
            names.len()
        )));
    }
    if names.iter().any(|name| name == "*") {
        return match worker.event_types {
            EventTypes::All => Ok(None),
            EventTypes::Only(_) => Err(AuthError::forbidden(
                "command_not_allowed",
                "eventTypes \"*\" needs a token allowed every command",
            )
            .into()),
        };
    }
    let commands = names
        .iter()
        .map(|name| {
            Command::parse(name).map_err(|reason| {
                ApiError::invalid("invalid_command", format!("eventTypes: {name:?} {reason}"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    worker.require_commands(&commands)?;
    Ok(Some(commands))
}

/// `POST /v1/codeq/workers/subscriptions`
pub async fn create(
    State(app): State<AppState>,
    Worker(worker, ..): Worker<scope::Subscribe>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let request: CreateBody = body.json()?;
    let callback_url =
        request.callback_url.ok_or_else(|| ApiError::field("callbackUrl is required"))?;
    check_http_url(&callback_url).map_err(|why| ApiError::field(format!("callbackUrl {why}")))?;
    app.outbound
        .check_target(&callback_url)
        .map_err(|why| ApiError::field(format!("callbackUrl {why}")))?;
    let ttl_seconds = ttl_seconds(request.ttl_seconds)?;
    let min_interval_seconds = match request.min_interval_seconds.map(|n| n.0) {
        None => None,
        Some(n @ 0..=MAX_MIN_INTERVAL_SECONDS) => Some(n as u64),
        Some(n) => {
            return Err(ApiError::field(format!(
                "minIntervalSeconds must be 0..{MAX_MIN_INTERVAL_SECONDS}, got {n}"
            )));
        }
    };
    let (mode, group_id) =
        mode_and_group(&worker, request.delivery_mode.as_deref(), request.group_id)?;
    let commands = listened_commands(&worker, request.event_types)?;
    let new = NewSubscription {
        callback_url,
        commands,
        mode,
        group_id,
        ttl_seconds,
        min_interval_seconds,
    };
    let subscription = app.subscriptions.create(&worker.sub, new).await?;
    Ok(answer(&subscription, &app))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HeartbeatBody {
    ttl_seconds: Option<AnyInteger>,
}

/// `POST /v1/codeq/workers/subscriptions/:id/heartbeat`
pub async fn heartbeat(
    State(app): State<AppState>,
    Worker(worker, ..): Worker<scope::Subscribe>,
    PathText(id): PathText,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let request: HeartbeatBody = body.json()?;
    let ttl_seconds = ttl_seconds(request.ttl_seconds)?;
    let id = subscription_id(id.as_deref())?;
    let subscription = app.subscriptions.renew(&worker.sub, id, ttl_seconds).await?;
    Ok(answer(&subscription, &app))
}

/// `DELETE /v1/codeq/workers/subscriptions/:id`
pub async fn delete(
    State(app): State<AppState>,
    Worker(worker, ..): Worker<scope::Subscribe>,
    PathText(id): PathText,
) -> Result<StatusCode, ApiError> {
    let id = subscription_id(id.as_deref())?;
    app.subscriptions.delete(&worker.sub, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
