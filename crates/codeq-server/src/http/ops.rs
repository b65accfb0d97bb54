//! Operational endpoints without authentication: liveness, readiness,
//! metrics and the OpenAPI document.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::error::ApiError;
use super::openapi;
use crate::app::AppState;

/// The media type of the OpenMetrics text format.
const OPENMETRICS: &str = "application/openmetrics-text";

/// `GET /healthz`: 200 while the process serves; 503 once storage has
/// failed (the process is about to exit and recover on restart).
pub async fn healthz(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    app.scheduler.store().alive()?;
    Ok(Json(json!({ "status": "ok" })))
}

/// `GET /readyz`: 200 when storage answers, 503 otherwise.
pub async fn readyz(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    app.scheduler.store().health()?;
    Ok(Json(json!({ "status": "ready" })))
}

/// `GET /metrics`: the Prometheus text format, or OpenMetrics when the
/// scraper's `Accept` asks for it (as Prometheus does).
pub async fn metrics(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|accept| accept.contains(OPENMETRICS));
    let scheduler = &app.scheduler;
    let text = app
        .metrics
        .render(
            scheduler.store().as_ref(),
            scheduler.long_polls_waiting(),
            scheduler.clock().now(),
            openmetrics,
        )
        .await?;
    let content_type = if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        prometheus_client::encoding::prometheus_text::CONTENT_TYPE
    };
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static(content_type))], text).into_response())
}

/// `GET /openapi.json`: the OpenAPI 3.1 document of this API.
pub async fn openapi() -> Response {
    let json = HeaderValue::from_static("application/json");
    ([(header::CONTENT_TYPE, json)], openapi::document_json()).into_response()
}
