//! What an operator looks at (admins; read-only): the last hour of each
//! command's traffic, the workers the server knows of (leases held,
//! subscriptions), and one task in full with its result and callback.
//! The dashboard's pages are built on these.
//!
//! Each is answered from memory or an index, never by a scan of the
//! tasks: throughput O(commands × 60), workers O(commands + leases read +
//! subscriptions), one task a lookup and at most two record reads.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use codeq_core::{Command, Subscription, Timestamp};
use serde::Serialize;

use super::admin::path_command;
use super::control::{RawQuery, query};
use super::error::ApiError;
use super::extract::{Admin, PathText};
use super::tasks::path_task_id;
use super::views::{ResultView, Rfc3339, TaskView};
use crate::app::AppState;
use crate::service::control::{Lease, TaskDetail};
use crate::throughput::{MINUTES, Series};

/// Leases listed when no `limit` is asked.
const DEFAULT_LEASES: usize = 1000;
/// The most leases one answer lists.
const MAX_LEASES: usize = 10_000;

/// One command's counts per minute.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CommandSeries<'a> {
    command: &'a str,
    created: &'a [u64],
    claimed: &'a [u64],
    completed: &'a [u64],
    failed: &'a [u64],
    cancelled: &'a [u64],
    lease_expired: &'a [u64],
}

impl<'a> CommandSeries<'a> {
    fn new(command: &'a Command, series: &'a Series) -> Self {
        Self {
            command: command.as_str(),
            created: &series.created,
            claimed: &series.claimed,
            completed: &series.completed,
            failed: &series.failed,
            cancelled: &series.cancelled,
            lease_expired: &series.lease_expired,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ThroughputBody<'a> {
    from: Rfc3339,
    minutes: usize,
    commands: Vec<CommandSeries<'a>>,
}

/// `GET /v1/codeq/admin/throughput`: the last hour per minute, of every
/// command with traffic in it (or of `?command=`).
pub async fn throughput(
    State(app): State<AppState>,
    Admin(_): Admin,
    raw: RawQuery,
) -> Result<Response, ApiError> {
    let fields = query(raw)?;
    let only = fields.get("command").map(|text| path_command(Some(text.clone()))).transpose()?;
    let window = app.metrics.throughput().window(only.as_ref());
    let body = ThroughputBody {
        from: Rfc3339::new(window.from, app.offset),
        minutes: MINUTES,
        commands: window
            .commands
            .iter()
            .map(|(command, series)| CommandSeries::new(command, series))
            .collect(),
    };
    Ok(Json(body).into_response())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LeaseView<'a> {
    task_id: String,
    command: &'a str,
    worker_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    lease_until: Option<Rfc3339>,
    attempts: u32,
}

/// One worker (`sub`) and what it holds.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WorkerView<'a> {
    worker_id: &'a str,
    leases: usize,
    commands: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_lease_end: Option<Rfc3339>,
    subscriptions: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SubscriptionView<'a> {
    subscription_id: String,
    worker_id: &'a str,
    callback_url: &'a str,
    event_types: Vec<&'a str>,
    delivery_mode: codeq_core::DeliveryMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    group_id: Option<&'a str>,
    min_interval_seconds: u64,
    expires_at: Rfc3339,
}

impl<'a> SubscriptionView<'a> {
    fn new(subscription: &'a Subscription, app: &AppState) -> Self {
        let event_types = match &subscription.commands {
            None => vec!["*"],
            Some(commands) => commands.iter().map(Command::as_str).collect(),
        };
        Self {
            subscription_id: subscription.id.to_string(),
            worker_id: &subscription.owner,
            callback_url: &subscription.callback_url,
            event_types,
            delivery_mode: subscription.mode,
            group_id: subscription.group_id.as_deref(),
            min_interval_seconds: subscription.min_interval_seconds,
            expires_at: Rfc3339::new(subscription.expires_at, app.offset),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WorkersBody<'a> {
    workers: Vec<WorkerView<'a>>,
    leases: Vec<LeaseView<'a>>,
    truncated: bool,
    subscriptions: Vec<SubscriptionView<'a>>,
}

/// Groups leases and subscriptions by worker, sorted by worker id.
fn by_worker<'a>(
    leases: &'a [Lease],
    subscriptions: &'a [Subscription],
    app: &AppState,
) -> Vec<WorkerView<'a>> {
    fn entry<'w, 'a>(
        workers: &'w mut BTreeMap<&'a str, WorkerView<'a>>,
        id: &'a str,
    ) -> &'w mut WorkerView<'a> {
        workers.entry(id).or_insert_with(|| WorkerView {
            worker_id: id,
            leases: 0,
            commands: Vec::new(),
            next_lease_end: None,
            subscriptions: 0,
        })
    }
    let mut workers: BTreeMap<&str, WorkerView<'a>> = BTreeMap::new();
    let mut ends: BTreeMap<&str, Timestamp> = BTreeMap::new();
    for lease in leases {
        let worker = entry(&mut workers, &lease.worker_id);
        worker.leases += 1;
        if !worker.commands.contains(&lease.command.as_str()) {
            worker.commands.push(lease.command.as_str());
        }
        if let Some(until) = lease.lease_until {
            let end = ends.entry(&lease.worker_id).or_insert(until);
            *end = (*end).min(until);
        }
    }
    for subscription in subscriptions {
        entry(&mut workers, &subscription.owner).subscriptions += 1;
    }
    for (id, end) in ends {
        if let Some(worker) = workers.get_mut(id) {
            worker.next_lease_end = Some(Rfc3339::new(end, app.offset));
        }
    }
    workers.into_values().collect()
}

/// `GET /v1/codeq/admin/workers`: leases held (up to `?limit=`, default
/// 1000) grouped by worker, and the subscriptions that have not lapsed.
pub async fn workers(
    State(app): State<AppState>,
    Admin(_): Admin,
    raw: RawQuery,
) -> Result<Response, ApiError> {
    let fields = query(raw)?;
    let limit = match fields.get("limit") {
        None => DEFAULT_LEASES,
        Some(text) => match text.parse::<usize>() {
            Ok(n @ 1..=MAX_LEASES) => n,
            _ => {
                return Err(ApiError::field(format!(
                    "limit must be 1..{MAX_LEASES}, got {text:?}"
                )));
            }
        },
    };
    let held = app.control.leases(limit).await?;
    let now = app.scheduler.clock().now();
    let mut subscriptions = app.scheduler.store().subscriptions().await?;
    subscriptions.retain(|subscription| subscription.expires_at > now);
    subscriptions.sort_by(|a, b| (&a.owner, a.id).cmp(&(&b.owner, b.id)));
    let body = WorkersBody {
        workers: by_worker(&held.leases, &subscriptions, &app),
        leases: held
            .leases
            .iter()
            .map(|lease| LeaseView {
                task_id: lease.task_id.to_string(),
                command: lease.command.as_str(),
                worker_id: &lease.worker_id,
                lease_until: lease.lease_until.map(|at| Rfc3339::new(at, app.offset)),
                attempts: lease.attempts,
            })
            .collect(),
        truncated: held.truncated,
        subscriptions: subscriptions
            .iter()
            .map(|subscription| SubscriptionView::new(subscription, &app))
            .collect(),
    };
    Ok(Json(body).into_response())
}

/// Where a task's result callback stands.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WebhookView {
    /// `waiting` (the task has not ended), `owed` (being delivered) or
    /// `settled` (delivered, given up after its last attempt, or refused).
    state: &'static str,
    /// How a settled callback ended, when kept: `delivered`, `gave_up`
    /// or `refused`.
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempts: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_attempt_at: Option<Rfc3339>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delivery_id: Option<String>,
}

impl WebhookView {
    fn new(detail: &TaskDetail, app: &AppState) -> Option<Self> {
        detail.task.webhook.as_ref()?;
        let view = match (&detail.callback, detail.task.state.status.is_terminal()) {
            (_, false) => Self::plain("waiting"),
            (None, true) => Self {
                outcome: detail.settled.map(|settled| settled.outcome.as_str()),
                attempts: detail.settled.map(|settled| settled.attempts),
                ..Self::plain("settled")
            },
            (Some(owed), true) => Self {
                state: "owed",
                outcome: None,
                attempts: Some(owed.attempts),
                next_attempt_at: Some(Rfc3339::new(owed.next_at, app.offset)),
                delivery_id: Some(owed.delivery.to_string()),
            },
        };
        Some(view)
    }

    fn plain(state: &'static str) -> Self {
        Self { state, outcome: None, attempts: None, next_attempt_at: None, delivery_id: None }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DetailBody<'a> {
    task: TaskView<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_worker_id: Option<&'a str>,
    dead_lettered: bool,
    visible_at: Rfc3339,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<ResultView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook: Option<WebhookView>,
}

/// `GET /v1/codeq/admin/tasks/:id`: the task with its payload, its
/// result once it has ended, the worker of its last delivery and where
/// its result callback stands.
pub async fn task(
    State(app): State<AppState>,
    Admin(_): Admin,
    PathText(id): PathText,
) -> Result<Response, ApiError> {
    let id = path_task_id(id.as_deref())?;
    let detail = app
        .control
        .task_detail(id)
        .await?
        .ok_or_else(|| ApiError::not_found("task_not_found", "task not found"))?;
    let state = &detail.task.state;
    let body = DetailBody {
        task: TaskView::new(&detail.task, app.offset),
        last_worker_id: state.worker_id.as_deref(),
        dead_lettered: state.dead_lettered && state.status.is_terminal(),
        visible_at: Rfc3339::new(state.visible_at, app.offset),
        result: detail.result.as_ref().map(|record| ResultView::new(record, app.offset)),
        webhook: WebhookView::new(&detail, &app),
    };
    Ok(Json(body).into_response())
}
