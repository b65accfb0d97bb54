//! The web dashboard under `/ui/`: plain HTML, CSS and ES modules from
//! `crates/codeq-server/ui/`, built into the binary (no Node toolchain, no
//! build step, nothing fetched from elsewhere).
//!
//! The files hold no data and no secret: every page reads and changes
//! the queues through the admin API with the token the person signed in
//! with, kept in the tab's session storage and sent as `Authorization`
//! (never in a URL). So the files themselves need no token.
//!
//! Every answer under `/ui` carries a strict policy: scripts and styles
//! from this origin only (no inline script or style, no `eval`), requests
//! to this origin only, no framing, no referrer. Files are revalidated on
//! each load (`Cache-Control: no-cache` with an `ETag`), so a new binary
//! is never mixed with files cached from an old one.
//!
//! These routes are not part of the JSON API: they are left out of
//! [`super::routes`] and of the OpenAPI document, and mounted only when
//! the `ui` setting is on.

use std::sync::LazyLock;

use axum::Router;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::map_response;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::extract::PathText;
use super::method_not_allowed;
use crate::app::AppState;

/// The path templates these routes are matched by (labels of the HTTP
/// metrics).
pub const PATHS: [&str; 3] = ["/ui", "/ui/", "/ui/{*file}"];

/// The `Content-Security-Policy` of every answer under `/ui`.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// One file of the dashboard.
#[derive(Debug)]
pub struct Asset {
    /// Its path under `/ui/` (and under `ui/` in the crate).
    pub path: &'static str,
    /// Its media type.
    pub content_type: &'static str,
    /// Its bytes.
    pub bytes: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";

macro_rules! assets {
    ($($path:literal => $content_type:expr),+ $(,)?) => {
        /// Every file of the dashboard (a test checks this list against the
        /// directory, so none is forgotten).
        pub const ASSETS: &[Asset] = &[
            $(Asset {
                path: $path,
                content_type: $content_type,
                bytes: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/", $path)),
            },)+
        ];
    };
}

assets! {
    "index.html" => HTML,
    "style.css" => CSS,
    "icon.svg" => SVG,
    "js/app.js" => JS,
    "js/api.js" => JS,
    "js/dom.js" => JS,
    "js/format.js" => JS,
    "js/chart.js" => JS,
    "js/pages/signin.js" => JS,
    "js/pages/queues.js" => JS,
    "js/pages/queue.js" => JS,
    "js/pages/task.js" => JS,
    "js/pages/dead.js" => JS,
    "js/pages/workers.js" => JS,
}

/// Each asset's `ETag`: a digest of its bytes, computed once.
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|asset| {
            let digest = Sha256::digest(asset.bytes);
            let hex: String = digest[..12].iter().map(|byte| format!("{byte:02x}")).collect();
            HeaderValue::from_str(&format!("\"{hex}\"")).unwrap_or(HeaderValue::from_static("\"\""))
        })
        .collect()
});

/// The dashboard's routes, with the security headers on every answer.
pub fn router() -> Router<AppState> {
    Router::new()
        // Each with its own 405, so that the layer below secures it too.
        .route(PATHS[0], get(|| async { Redirect::permanent("/ui/") }).fallback(method_not_allowed))
        .route(PATHS[1], get(index).fallback(method_not_allowed))
        .route(PATHS[2], get(file).fallback(method_not_allowed))
        .layer(map_response(secure))
}

async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

async fn file(PathText(path): PathText, headers: HeaderMap) -> Response {
    serve(path.as_deref().unwrap_or_default(), &headers)
}

/// The asset at `path`, or 304 when the client holds it already, or 404.
fn serve(path: &str, headers: &HeaderMap) -> Response {
    let Some(index) = ASSETS.iter().position(|asset| asset.path == path) else {
        return ApiError::not_found("route_not_found", "no such file of the dashboard")
            .into_response();
    };
    let (asset, etag) = (&ASSETS[index], &ETAGS[index]);
    let cached = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|tag| tag.trim() == etag.to_str().unwrap_or_default());
    let common = [
        (header::ETAG, etag.clone()),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    if cached {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    let content_type = (header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    (common, [content_type], asset.bytes).into_response()
}

/// Adds the security headers to an answer.
async fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let set = [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (HeaderName::from_static("cross-origin-opener-policy"), "same-origin"),
    ];
    for (name, value) in set {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file under `ui/`, relative to it.
    fn files_on_disk() -> Vec<String> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ui");
        let mut found = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    let relative = path.strip_prefix(&root).unwrap();
                    found.push(relative.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        found.sort();
        found
    }

    #[test]
    fn every_file_of_the_ui_directory_is_served_and_nothing_else() {
        let mut served: Vec<String> = ASSETS.iter().map(|asset| asset.path.to_string()).collect();
        served.sort();
        assert_eq!(served, files_on_disk());
    }

    #[test]
    fn no_page_has_inline_script_or_style() {
        for asset in ASSETS.iter().filter(|asset| asset.content_type == HTML) {
            let text = std::str::from_utf8(asset.bytes).unwrap();
            for (at, _) in text.match_indices("<script") {
                let tag = &text[at..at + text[at..].find('>').unwrap()];
                assert!(tag.contains(" src="), "{}: inline script {tag}", asset.path);
            }
            assert!(!text.contains("<style"), "{}: inline style", asset.path);
            assert!(!text.contains(" style="), "{}: style attribute", asset.path);
            let handler = text.match_indices(" on").find(|(at, _)| {
                let name: String =
                    text[at + 3..].chars().take_while(char::is_ascii_alphabetic).collect();
                !name.is_empty() && text[at + 3 + name.len()..].starts_with('=')
            });
            assert_eq!(handler, None, "{}: an inline event handler", asset.path);
        }
    }

    #[test]
    fn nothing_is_loaded_from_another_origin() {
        for asset in ASSETS {
            let text = String::from_utf8_lossy(asset.bytes);
            for scheme in ["http://", "https://", "//cdn"] {
                let outside = text
                    .match_indices(scheme)
                    .map(|(at, _)| &text[at..(at + 40).min(text.len())])
                    .find(|url| !url.starts_with("http://www.w3.org/2000/svg"));
                assert_eq!(outside, None, "{} refers to another origin", asset.path);
            }
        }
    }

    #[test]
    fn etags_differ_between_files() {
        let mut tags: Vec<&HeaderValue> = ETAGS.iter().collect();
        tags.sort_by_key(|tag| tag.as_bytes());
        tags.dedup();
        assert_eq!(tags.len(), ASSETS.len());
    }
}
