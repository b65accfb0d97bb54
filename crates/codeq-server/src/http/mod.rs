//! The HTTP API: the axum router, one module per resource, the extractors
//! that authenticate and parse, and `ApiError`; and below the router, the
//! front door: connections, their timeouts and cap, request bodies and the
//! checks of the request head.
//!
//! Handlers hold no business rules: they parse and check the request,
//! call one service method, and shape the response.
//!
//! Layout:
//! - [`serve`]: the accept loop and the connection cap; [`connection`]:
//!   one connection and its head and keep-alive timeouts.
//! - [`request_head`]: URI and header size limits, `Host`.
//! - [`body`]: per-route body limits, the budget of bodies in flight, body
//!   timeouts, the `Body` extractor and JSON parsing.
//! - [`extract`]: the caller's principal, path parameters.
//! - [`tasks`], [`workers`], [`subscriptions`], [`admin`], [`ops`]: the
//!   endpoints; [`views`]:
//!   their JSON; [`error`]: `ApiError`.

pub mod admin;
pub mod body;
pub mod connection;
pub mod error;
pub mod extract;
pub mod ops;
pub mod request_head;
pub mod serve;
pub mod subscriptions;
pub mod tasks;
pub mod views;
pub mod workers;

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderName;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::{Extension, Router};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use self::body::{BodyLimits, RouteBodyLimit};
use self::error::ApiError;
use crate::app::AppState;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole API.
pub fn router(state: AppState) -> Router {
    let limits = BodyLimits::new(state.limits.max_payload_bytes, state.limits.max_artifact_bytes);
    let limit = |bytes: usize| Extension(RouteBodyLimit(bytes));
    let small = limit(limits.small);

    let api = Router::new()
        .route("/tasks", post(tasks::create).layer(limit(limits.create)))
        .route("/tasks/batch", post(tasks::create_batch).layer(limit(limits.create_batch)))
        .route("/tasks/claim", post(workers::claim).layer(small))
        .route("/tasks/claim/batch", post(workers::claim_batch).layer(small))
        .route(
            "/tasks/batch/results",
            post(workers::submit_results_batch).layer(limit(limits.result_batch)),
        )
        .route("/tasks/{id}", get(tasks::get))
        .route("/tasks/{id}/artifacts/{name}", get(tasks::artifact))
        .route(
            "/tasks/{id}/result",
            get(tasks::get_result).post(workers::submit_result).layer(limit(limits.result)),
        )
        .route("/tasks/{id}/heartbeat", post(workers::heartbeat).layer(small))
        .route("/tasks/{id}/abandon", post(workers::abandon).layer(small))
        .route("/tasks/{id}/nack", post(workers::nack).layer(small))
        .route("/workers/subscriptions", post(subscriptions::create).layer(small))
        .route("/workers/subscriptions/{id}/heartbeat", post(subscriptions::heartbeat).layer(small))
        .route("/workers/subscriptions/{id}", delete(subscriptions::delete))
        .route("/admin/queues", get(admin::queues))
        .route("/admin/queues/{command}", get(admin::queue))
        .route("/admin/queues/{command}/stats", get(admin::queue))
        .route("/admin/tasks/cleanup", post(admin::cleanup).layer(small));

    Router::new()
        .nest("/v1/codeq", api)
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(middleware::from_fn(request_head::check))
        .layer(middleware::from_fn(log_request))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

async fn unknown_route() -> ApiError {
    ApiError::not_found("route_not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}

/// One log line per request: method, route template, status, duration and
/// request id.
async fn log_request(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let request_id = request.headers().get(REQUEST_ID).cloned();
    let response = next.run(request).await;
    tracing::info!(
        %method,
        route = route.as_ref().map_or("unmatched", MatchedPath::as_str),
        status = response.status().as_u16(),
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        request_id = request_id.as_ref().and_then(|id| id.to_str().ok()).unwrap_or_default(),
        "request"
    );
    response
}
