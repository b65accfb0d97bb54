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
//! - [`tasks`], [`workers`], [`subscriptions`], [`admin`], [`control`],
//!   [`insight`], [`ops`]: the endpoints; [`views`]:
//!   their JSON; [`error`]: `ApiError`.
//! - [`openapi`]: the OpenAPI document of the routes below ([`routes`] is
//!   the one list both the router and the document's test read).
//! - [`observe`]: per request, the log line and the HTTP metrics.
//! - [`ui`]: the web dashboard's files under `/ui/` (not part of the API,
//!   nor of its document), with their security headers.

pub mod admin;
pub mod body;
pub mod connection;
pub mod control;
pub mod error;
pub mod extract;
pub mod insight;
pub mod observe;
pub mod openapi;
pub mod ops;
pub mod request_head;
pub mod serve;
pub mod subscriptions;
pub mod tasks;
pub mod ui;
pub mod views;
pub mod workers;

use std::sync::LazyLock;

use axum::handler::Handler;
use axum::http::{HeaderName, Method};
use axum::middleware;
use axum::routing::{MethodRouter, delete, get, post, put};
use axum::{Extension, Router};

use self::body::{BodyLimits, RouteBodyLimit};
use self::error::ApiError;
use crate::app::AppState;

/// The header carrying a request's id (taken from the client, or made).
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// One route: method, path template (as the router and the OpenAPI
/// document spell it) and handler.
pub struct Route {
    /// The method.
    pub method: Method,
    /// The path template, e.g. `/v1/codeq/tasks/{id}`.
    pub path: &'static str,
    handler: MethodRouter<AppState>,
}

impl Route {
    fn post<H: Handler<T, AppState>, T: 'static>(path: &'static str, handler: H) -> Self {
        Self { method: Method::POST, path, handler: post(handler) }
    }

    fn get<H: Handler<T, AppState>, T: 'static>(path: &'static str, handler: H) -> Self {
        Self { method: Method::GET, path, handler: get(handler) }
    }

    fn put<H: Handler<T, AppState>, T: 'static>(path: &'static str, handler: H) -> Self {
        Self { method: Method::PUT, path, handler: put(handler) }
    }

    fn delete<H: Handler<T, AppState>, T: 'static>(path: &'static str, handler: H) -> Self {
        Self { method: Method::DELETE, path, handler: delete(handler) }
    }

    /// Bodies of this route are limited to `bytes`.
    fn limit(mut self, bytes: usize) -> Self {
        self.handler = self.handler.layer(Extension(RouteBodyLimit(bytes)));
        self
    }
}

/// Every route of the server, with the body limits of `limits`.
pub fn routes(limits: &BodyLimits) -> Vec<Route> {
    let small = limits.small;
    vec![
        Route::post("/v1/codeq/tasks", tasks::create).limit(limits.create),
        Route::post("/v1/codeq/tasks/batch", tasks::create_batch).limit(limits.create_batch),
        Route::post("/v1/codeq/tasks/claim", workers::claim).limit(small),
        Route::post("/v1/codeq/tasks/claim/batch", workers::claim_batch).limit(small),
        Route::post("/v1/codeq/tasks/batch/results", workers::submit_results_batch)
            .limit(limits.result_batch),
        Route::get("/v1/codeq/tasks/{id}", tasks::get),
        Route::get("/v1/codeq/tasks/{id}/artifacts/{name}", tasks::artifact),
        Route::get("/v1/codeq/tasks/{id}/result", tasks::get_result),
        Route::post("/v1/codeq/tasks/{id}/result", workers::submit_result).limit(limits.result),
        Route::post("/v1/codeq/tasks/{id}/heartbeat", workers::heartbeat).limit(small),
        Route::post("/v1/codeq/tasks/{id}/abandon", workers::abandon).limit(small),
        Route::post("/v1/codeq/tasks/{id}/nack", workers::nack).limit(small),
        Route::post("/v1/codeq/tasks/{id}/cancel", control::cancel).limit(small),
        Route::post("/v1/codeq/tasks/batch/cancel", control::cancel_many).limit(small),
        Route::post("/v1/codeq/workers/subscriptions", subscriptions::create).limit(small),
        Route::post("/v1/codeq/workers/subscriptions/{id}/heartbeat", subscriptions::heartbeat)
            .limit(small),
        Route::delete("/v1/codeq/workers/subscriptions/{id}", subscriptions::delete),
        Route::get("/v1/codeq/admin/queues", admin::queues),
        Route::get("/v1/codeq/admin/queues/{command}", admin::queue),
        Route::get("/v1/codeq/admin/queues/{command}/stats", admin::queue),
        Route::post("/v1/codeq/admin/tasks/cleanup", admin::cleanup).limit(small),
        Route::get("/v1/codeq/admin/tasks", control::list),
        Route::get("/v1/codeq/admin/queues/{command}/settings", control::settings),
        Route::put("/v1/codeq/admin/queues/{command}/settings", control::put_settings).limit(small),
        Route::post("/v1/codeq/admin/queues/{command}/pause", control::pause).limit(small),
        Route::post("/v1/codeq/admin/queues/{command}/resume", control::resume).limit(small),
        Route::get("/v1/codeq/admin/queues/{command}/dlq", control::dead_letters),
        Route::post("/v1/codeq/admin/queues/{command}/dlq/replay", control::replay)
            .limit(limits.create_batch),
        Route::post("/v1/codeq/admin/queues/{command}/dlq/purge", control::purge)
            .limit(limits.create_batch),
        Route::get("/v1/codeq/admin/tasks/{id}", insight::task),
        Route::get("/v1/codeq/admin/throughput", insight::throughput),
        Route::get("/v1/codeq/admin/workers", insight::workers),
        Route::get("/healthz", ops::healthz),
        Route::get("/readyz", ops::readyz),
        Route::get("/metrics", ops::metrics),
        Route::get("/openapi.json", ops::openapi),
    ]
}

/// The path templates of [`routes`] and of the dashboard, each once (the
/// `route` labels).
static ROUTE_PATHS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    let mut paths: Vec<&'static str> = route_table().into_iter().map(|(_, path)| path).collect();
    paths.dedup();
    paths.extend(ui::PATHS);
    paths
});

/// Every `(method, path template)` the router serves.
pub fn route_table() -> Vec<(Method, &'static str)> {
    routes(&BodyLimits::new(1, 1)).into_iter().map(|route| (route.method, route.path)).collect()
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    let limits = BodyLimits::new(state.limits.max_payload_bytes, state.limits.max_artifact_bytes);
    let mut router = Router::new();
    for route in routes(&limits) {
        // Two methods of one path merge into one method router.
        router = router.route(route.path, route.handler);
    }
    if state.ui {
        router = router.merge(ui::router());
    }
    router
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), observe::request))
        .with_state(state)
}

async fn unknown_route() -> ApiError {
    ApiError::not_found("route_not_found", "no such route")
}

/// The 405 of a route that exists, for another method.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}
