//! What clients written for the original service rely on: `X-Role` in
//! `env: dev`, clamped `priority` and `waitSeconds`, and queue stats read
//! with a worker token (the Node SDK's `getQueueStats`).

use codeq_server::config::Env;
use reqwest::Method;

use crate::helpers::*;

/// `GET /v1/codeq/admin/queues` with `token` and, when given, `X-Role`.
async fn list_queues(app: &TestApp, token: &str, x_role: Option<&str>) -> u16 {
    let mut request = app.http.request(Method::GET, format!("{}/v1/codeq/admin/queues", app.base));
    request = request.bearer_auth(token);
    if let Some(role) = x_role {
        request = request.header("X-Role", role);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn in_dev_x_role_admin_makes_a_producer_token_without_a_role_an_admin() {
    let dev = TestApp::spawn_with(|config| config.env = Env::Dev, false).await;
    let prod = TestApp::spawn().await;

    assert_eq!(list_queues(&dev, PRODUCER, Some("ADMIN")).await, 200, "dev, X-Role");
    assert_eq!(list_queues(&dev, PRODUCER, None).await, 403, "dev, no header");
    assert_eq!(list_queues(&dev, PRODUCER, Some("USER")).await, 403, "dev, another role");
    assert_eq!(list_queues(&dev, WORKER, Some("ADMIN")).await, 403, "never a worker");
    assert_eq!(list_queues(&prod, PRODUCER, Some("ADMIN")).await, 403, "never outside dev");
    assert_eq!(list_queues(&prod, ADMIN, None).await, 200, "admin: true needs no header");
}
