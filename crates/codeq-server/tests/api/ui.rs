//! The dashboard's files under `/ui/`: served without a token, with the
//! security headers on every answer, revalidated by `ETag`, and absent
//! with `ui: false`.

use reqwest::Method;

use crate::helpers::TestApp;

const HEADERS: [(&str, &str); 3] = [
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
];

fn assert_secure(path: &str, headers: &reqwest::header::HeaderMap) {
    for (name, value) in HEADERS {
        assert_eq!(headers[name], value, "{path}: {name}");
    }
    let policy = headers["content-security-policy"].to_str().unwrap();
    for directive in
        ["default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"]
    {
        assert!(policy.contains(directive), "{path}: {directive} missing from {policy}");
    }
    assert!(!policy.contains("unsafe-inline") && !policy.contains("unsafe-eval"), "{policy}");
}

#[tokio::test]
async fn the_dashboard_is_served_with_the_security_headers_and_no_token() {
    let app = TestApp::spawn().await;

    for (path, content_type) in [
        ("/ui/", "text/html; charset=utf-8"),
        ("/ui/js/app.js", "text/javascript; charset=utf-8"),
        ("/ui/style.css", "text/css; charset=utf-8"),
        ("/ui/icon.svg", "image/svg+xml"),
    ] {
        let reply = app.call(Method::GET, path, None, None).await;
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.headers["content-type"], content_type, "{path}");
        assert_eq!(reply.headers["cache-control"], "no-cache", "{path}");
        assert_secure(path, &reply.headers);
    }
    let missing = app.call(Method::GET, "/ui/js/nothing.js", None, None).await;
    assert_eq!(missing.status, 404);
    assert_secure("/ui/js/nothing.js", &missing.headers);
    let bare = app.call(Method::GET, "/ui", None, None).await;
    assert_secure("/ui", &bare.headers);
    for (method, path) in
        [(Method::POST, "/ui/"), (Method::POST, "/ui"), (Method::DELETE, "/ui/js/app.js")]
    {
        let refused = app.call(method.clone(), path, None, None).await;
        assert_eq!(
            (refused.status, refused.code()),
            (405, "method_not_allowed"),
            "{method} {path}"
        );
        assert_secure(path, &refused.headers);
    }
}

#[tokio::test]
async fn a_file_the_browser_holds_is_answered_304() {
    let app = TestApp::spawn().await;
    let first = app.http.get(format!("{}/ui/style.css", app.base)).send().await.unwrap();
    let etag = first.headers()["etag"].clone();

    let again = app
        .http
        .get(format!("{}/ui/style.css", app.base))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();

    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()["x-frame-options"], "DENY");
}

#[tokio::test]
async fn ui_false_serves_no_dashboard() {
    let app = TestApp::spawn_with(|config| config.ui = false, false).await;

    let reply = app.call(Method::GET, "/ui/", None, None).await;

    assert_eq!(reply.status, 404);
    assert_eq!(reply.code(), "route_not_found");
    assert_eq!(app.call(Method::GET, "/healthz", None, None).await.status, 200);
}
