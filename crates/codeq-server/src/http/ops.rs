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
    let openmetrics = prefers_openmetrics(&headers);
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

/// Whether `Accept` asks for OpenMetrics before the Prometheus text
/// format: its `q` above 0 and at least that of `text/plain`.
fn prefers_openmetrics(headers: &HeaderMap) -> bool {
    let (mut openmetrics, mut text) = (0.0f32, 0.0f32);
    let ranges = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','));
    for range in ranges {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default();
        let q = parts
            .find_map(|part| part.strip_prefix("q=").or_else(|| part.strip_prefix("Q=")))
            .and_then(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        if media.eq_ignore_ascii_case(OPENMETRICS) {
            openmetrics = openmetrics.max(q);
        } else if media.eq_ignore_ascii_case("text/plain") {
            text = text.max(q);
        }
    }
    openmetrics > 0.0 && openmetrics >= text
}

/// `GET /openapi.json`: the OpenAPI 3.1 document of this API.
pub async fn openapi() -> Response {
    let json = HeaderValue::from_static("application/json");
    ([(header::CONTENT_TYPE, json)], openapi::document_json()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepting(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn openmetrics_is_sent_when_the_scraper_prefers_it() {
        let prometheus = "application/openmetrics-text;version=1.0.0;q=0.5,\
                          application/openmetrics-text;version=0.0.1;q=0.4,\
                          text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert!(prefers_openmetrics(&accepting(&[prometheus])));
        assert!(prefers_openmetrics(&accepting(&["text/html", "application/openmetrics-text"])));
        for not in [
            "application/openmetrics-text;q=0",
            "application/openmetrics-text;Q=0",
            "text/plain;q=0.9, application/openmetrics-text;q=0.5",
            "text/plain",
            "*/*",
        ] {
            assert!(!prefers_openmetrics(&accepting(&[not])), "{not}");
        }
        assert!(!prefers_openmetrics(&HeaderMap::new()));
    }
}
