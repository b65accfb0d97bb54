//! Operational endpoints without authentication: liveness and readiness.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::error::ApiError;
use crate::app::AppState;

/// `GET /healthz`: 200 while the process serves; 503 once storage has
/// failed (the process is about to exit and recover on restart).
pub async fn healthz(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    app.scheduler.store().health()?;
    Ok(Json(json!({ "status": "ok" })))
}

/// `GET /readyz`: 200 when storage answers, 503 otherwise.
pub async fn readyz(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    app.scheduler.store().health()?;
    Ok(Json(json!({ "status": "ready" })))
}
