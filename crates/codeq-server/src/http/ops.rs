//! Operational endpoints without authentication: liveness and readiness.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::error::ApiError;
use crate::app::AppState;

/// `GET /healthz`: the process is up.
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 when storage answers, 503 otherwise.
pub async fn readyz(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    app.scheduler.store().ping().await?;
    Ok(Json(json!({ "status": "ready" })))
}
