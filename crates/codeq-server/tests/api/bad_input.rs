//! Bad input, table-driven per endpoint: each case gets its status and a
//! `{error, code}` body, none gets a 5xx, and the server stays healthy.

use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

struct Case {
    name: &'static str,
    method: Method,
    path: String,
    token: Option<&'static str>,
    body: Option<String>,
    status: u16,
    code: &'static str,
}

fn case(
    name: &'static str,
    method: Method,
    path: &str,
    token: Option<&'static str>,
    body: Option<&str>,
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        name,
        method,
        path: path.to_string(),
        token,
        body: body.map(str::to_string),
        status,
        code,
    }
}

fn post(
    name: &'static str,
    path: &str,
    token: &'static str,
    body: &str,
    status: u16,
    code: &'static str,
) -> Case {
    case(name, Method::POST, path, Some(token), Some(body), status, code)
}

async fn run(app: &TestApp, cases: Vec<Case>) {
    for case in cases {
        let mut request =
            app.http.request(case.method.clone(), format!("{}{}", app.base, case.path));
        if let Some(token) = case.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = case.body {
            request = request.header("content-type", "application/json").body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let www_authenticate = response.headers().get("www-authenticate").cloned();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        assert_eq!(status, case.status, "{}: {body}", case.name);
        assert_eq!(body["code"], case.code, "{}: {body}", case.name);
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{}: no error message in {body}",
            case.name
        );
        if status == 401 {
            assert_eq!(www_authenticate.unwrap(), "Bearer", "{}", case.name);
        }
    }
    app.assert_healthy().await;
}

#[tokio::test]
async fn producer_endpoints_refuse_bad_input() {
    let app = TestApp::spawn_with(|config| config.max_payload_bytes = 1024, false).await;
    let big_payload = format!(r#"{{"command":"a","payload":{{"x":"{}"}}}}"#, "y".repeat(2000));
    let huge_body = format!(r#"{{"command":"a","payload":{{"x":"{}"}}}}"#, "y".repeat(200_000));
    let too_many =
        json!({ "tasks": vec![json!({ "command": "a", "payload": {} }); 101] }).to_string();
    let t = "/v1/codeq/tasks";
    run(
        &app,
        vec![
            case(
                "no token",
                Method::POST,
                t,
                None,
                Some(r#"{"command":"a","payload":{}}"#),
                401,
                "missing_token",
            ),
            post(
                "unknown token",
                t,
                "nope",
                r#"{"command":"a","payload":{}}"#,
                401,
                "invalid_token",
            ),
            post(
                "worker on a producer endpoint",
                t,
                WORKER,
                r#"{"command":"a","payload":{}}"#,
                403,
                "not_producer",
            ),
            post(
                "command outside the producer's eventTypes",
                t,
                LIMITED_PRODUCER,
                r#"{"command":"a","payload":{}}"#,
                403,
                "command_not_allowed",
            ),
            post("malformed JSON", t, PRODUCER, r#"{"command":"a","#, 400, "malformed_json"),
            post("not an object", t, PRODUCER, "[1,2]", 400, "invalid_field"),
            post("missing command", t, PRODUCER, r#"{"payload":{}}"#, 400, "invalid_field"),
            post("missing payload", t, PRODUCER, r#"{"command":"a"}"#, 400, "invalid_field"),
            post(
                "command of wrong type",
                t,
                PRODUCER,
                r#"{"command":5,"payload":{}}"#,
                400,
                "invalid_field",
            ),
            post(
                "priority of wrong type",
                t,
                PRODUCER,
                r#"{"command":"a","payload":{},"priority":"high"}"#,
                400,
                "invalid_field",
            ),
            post(
                "invalid command name",
                t,
                PRODUCER,
                r#"{"command":"no spaces","payload":{}}"#,
                400,
                "invalid_command",
            ),
            post(
                "empty command name",
                t,
                PRODUCER,
                r#"{"command":"","payload":{}}"#,
                400,
                "invalid_command",
            ),
            post(
                "negative delay",
                t,
                PRODUCER,
                r#"{"command":"a","payload":{},"delaySeconds":-1}"#,
                400,
                "invalid_field",
            ),
            post(
                "bad runAt",
                t,
                PRODUCER,
                r#"{"command":"a","payload":{},"runAt":"tomorrow"}"#,
                400,
                "invalid_field",
            ),
            post(
                "maxAttempts zero",
                t,
                PRODUCER,
                r#"{"command":"a","payload":{},"maxAttempts":0}"#,
                400,
                "invalid_field",
            ),
            post(
                "maxAttempts too big",
                t,
                PRODUCER,
                r#"{"command":"a","payload":{},"maxAttempts":1001}"#,
                400,
                "invalid_field",
            ),
            post(
                "webhook not http",
                t,
                PRODUCER,
                r#"{"command":"a","payload":{},"webhook":"ftp://x"}"#,
                400,
                "invalid_field",
            ),
            post(
                "empty idempotency key",
                t,
                PRODUCER,
                r#"{"command":"a","payload":{},"idempotencyKey":""}"#,
                400,
                "invalid_field",
            ),
            post(
                "payload over maxPayloadBytes",
                t,
                PRODUCER,
                &big_payload,
                413,
                "payload_too_large",
            ),
            post("body over the limit", t, PRODUCER, &huge_body, 413, "body_too_large"),
            post(
                "empty batch",
                "/v1/codeq/tasks/batch",
                PRODUCER,
                r#"{"tasks":[]}"#,
                400,
                "invalid_field",
            ),
            post(
                "batch over 100",
                "/v1/codeq/tasks/batch",
                PRODUCER,
                &too_many,
                400,
                "invalid_field",
            ),
            post(
                "batch without tasks",
                "/v1/codeq/tasks/batch",
                PRODUCER,
                "{}",
                400,
                "invalid_field",
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn worker_endpoints_refuse_bad_input() {
    let app = TestApp::spawn().await;
    let pending = app.create_simple("bad").await;
    let held = app.create_simple("held").await;
    app.claim_ok(WORKER, &["held"]).await;
    let unknown = "01890000-0000-7000-8000-000000000000";
    let claim = "/v1/codeq/tasks/claim";
    let hb = |id: &str| format!("/v1/codeq/tasks/{id}/heartbeat");
    let result = |id: &str| format!("/v1/codeq/tasks/{id}/result");
    run(
        &app,
        vec![
            case("claim without token", Method::POST, claim, None, Some("{}"), 401, "missing_token"),
            post("producer on a worker endpoint", claim, PRODUCER, "{}", 403, "not_worker"),
            post("claim malformed", claim, WORKER, "{", 400, "malformed_json"),
            post("claim lease zero", claim, WORKER, r#"{"leaseSeconds":0}"#, 400, "invalid_field"),
            post("claim lease over max", claim, WORKER, r#"{"leaseSeconds":99999999}"#, 400, "invalid_field"),
            post("claim empty commands", claim, WORKER, r#"{"commands":[]}"#, 400, "invalid_field"),
            post("claim invalid command", claim, WORKER, r#"{"commands":["a b"]}"#, 400, "invalid_command"),
            post("claim commands of wrong type", claim, WORKER, r#"{"commands":"a"}"#, 400, "invalid_field"),
            post("claim outside eventTypes", claim, LIMITED, r#"{"commands":["other"]}"#, 403, "command_not_allowed"),
            post("batch claim without count", "/v1/codeq/tasks/claim/batch", WORKER, "{}", 400, "invalid_field"),
            post("batch claim count 0", "/v1/codeq/tasks/claim/batch", WORKER, r#"{"count":0}"#, 400, "invalid_field"),
            post("batch claim count 101", "/v1/codeq/tasks/claim/batch", WORKER, r#"{"count":101}"#, 400, "invalid_field"),
            post("heartbeat missing scope", &hb(&held), LIMITED, "{}", 403, "missing_scope"),
            post("heartbeat unknown task", &hb(unknown), WORKER, "{}", 404, "task_not_found"),
            post("heartbeat id not a uuid", &hb("not-an-id"), WORKER, "{}", 404, "task_not_found"),
            post("heartbeat id not UTF-8", &hb("%ff"), WORKER, "{}", 404, "task_not_found"),
            post("heartbeat id not UTF-8, bad body", &hb("%ff"), WORKER, "{", 400, "malformed_json"),
            post("abandon id not UTF-8", "/v1/codeq/tasks/%ff/abandon", WORKER, "{}", 404, "task_not_found"),
            post("nack id not UTF-8", "/v1/codeq/tasks/%ff/nack", WORKER, "{}", 404, "task_not_found"),
            post("result id not UTF-8", &result("%ff"), WORKER, r#"{"status":"COMPLETED","result":{}}"#, 404, "task_not_found"),
            post("result id not a uuid, bad body", &result("not-an-id"), WORKER, r#"{"status":"COMPLETED"}"#, 400, "invalid_field"),
            post("result id not a uuid, bad claimNext", &result("not-an-id"), WORKER, r#"{"status":"FAILED","error":"x","claimNext":{"leaseSeconds":0}}"#, 400, "invalid_field"),
            post("heartbeat pending task", &hb(&pending), WORKER, "{}", 409, "not_in_progress"),
            post("heartbeat by another worker", &hb(&held), WORKER2, "{}", 403, "not_owner"),
            post("heartbeat extend zero", &hb(&held), WORKER, r#"{"extendSeconds":0}"#, 400, "invalid_field"),
            post("heartbeat attempt of wrong type", &hb(&held), WORKER, r#"{"attempt":"one"}"#, 400, "invalid_field"),
            post("abandon pending task", &format!("/v1/codeq/tasks/{pending}/abandon"), WORKER, "{}", 409, "not_in_progress"),
            post("nack negative delay", &format!("/v1/codeq/tasks/{held}/nack"), WORKER, r#"{"delaySeconds":-5}"#, 400, "invalid_field"),
            post("nack by another worker", &format!("/v1/codeq/tasks/{held}/nack"), WORKER2, "{}", 403, "not_owner"),
            post("result without status", &result(&held), WORKER, r#"{"result":{}}"#, 400, "invalid_field"),
            post("result with unknown status", &result(&held), WORKER, r#"{"status":"DONE","result":{}}"#, 400, "invalid_field"),
            post("completed without result", &result(&held), WORKER, r#"{"status":"COMPLETED"}"#, 400, "invalid_field"),
            post("completed with a non-object result", &result(&held), WORKER, r#"{"status":"COMPLETED","result":3}"#, 400, "invalid_field"),
            post("failed without error", &result(&held), WORKER, r#"{"status":"FAILED","error":""}"#, 400, "invalid_field"),
            post("artifact with a path name", &result(&held), WORKER, r#"{"status":"COMPLETED","result":{},"artifacts":[{"name":"../x","url":"https://a/b"}]}"#, 400, "invalid_artifact"),
            post("artifact not base64", &result(&held), WORKER, r#"{"status":"COMPLETED","result":{},"artifacts":[{"name":"x","contentBase64":"%%%"}]}"#, 400, "invalid_artifact"),
            post("result unknown task", &result(unknown), WORKER, r#"{"status":"COMPLETED","result":{}}"#, 404, "task_not_found"),
            post("result pending task", &result(&pending), WORKER, r#"{"status":"COMPLETED","result":{}}"#, 409, "not_in_progress"),
            post("result by another worker", &result(&held), WORKER2, r#"{"status":"COMPLETED","result":{}}"#, 403, "not_owner"),
            post("batch results empty", "/v1/codeq/tasks/batch/results", WORKER, r#"{"results":[]}"#, 400, "invalid_field"),
            post("artifacts of wrong type", &result(&held), WORKER, r#"{"status":"COMPLETED","result":{},"artifacts":{}}"#, 400, "invalid_field"),
        ],
    )
    .await;
    assert_eq!(app.task(&held).await["status"], "IN_PROGRESS", "nothing changed the held task");
}

#[tokio::test]
async fn read_and_admin_endpoints_refuse_bad_input() {
    let app = TestApp::spawn().await;
    let pending = app.create_simple("read").await;
    let unknown = "01890000-0000-7000-8000-000000000000";
    let get = |name, path: &str, token, status, code| {
        case(name, Method::GET, path, token, None, status, code)
    };
    let cleanup = "/v1/codeq/admin/tasks/cleanup";
    run(
        &app,
        vec![
            get(
                "get without token",
                &format!("/v1/codeq/tasks/{pending}"),
                None,
                401,
                "missing_token",
            ),
            get(
                "get unknown task",
                &format!("/v1/codeq/tasks/{unknown}"),
                Some(PRODUCER),
                404,
                "task_not_found",
            ),
            get(
                "result not there yet",
                &format!("/v1/codeq/tasks/{pending}/result"),
                Some(PRODUCER),
                404,
                "result_not_found",
            ),
            get(
                "result of unknown task",
                &format!("/v1/codeq/tasks/{unknown}/result"),
                Some(WORKER),
                404,
                "result_not_found",
            ),
            // Path parameters that are not UTF-8 once percent-decoded.
            get("get id not UTF-8", "/v1/codeq/tasks/%ff", Some(PRODUCER), 404, "task_not_found"),
            get(
                "result id not UTF-8",
                "/v1/codeq/tasks/%ff/result",
                Some(PRODUCER),
                404,
                "task_not_found",
            ),
            get(
                "get id not UTF-8 without token",
                "/v1/codeq/tasks/%ff",
                None,
                401,
                "missing_token",
            ),
            get(
                "queue name not UTF-8",
                "/v1/codeq/admin/queues/%ff",
                Some(ADMIN),
                400,
                "invalid_command",
            ),
            get(
                "queue stats name not UTF-8",
                "/v1/codeq/admin/queues/%C3%28/stats",
                Some(ADMIN),
                400,
                "invalid_command",
            ),
            get(
                "queue name not UTF-8 as non-admin",
                "/v1/codeq/admin/queues/%ff",
                Some(PRODUCER),
                403,
                "not_admin",
            ),
            get("queues as non-admin", "/v1/codeq/admin/queues", Some(PRODUCER), 403, "not_admin"),
            get("queues as worker", "/v1/codeq/admin/queues", Some(WORKER), 403, "not_admin"),
            get(
                "queue with bad name",
                "/v1/codeq/admin/queues/a%20b",
                Some(ADMIN),
                400,
                "invalid_command",
            ),
            post("cleanup as non-admin", cleanup, PRODUCER, "{}", 403, "not_admin"),
            post("cleanup limit zero", cleanup, ADMIN, r#"{"limit":0}"#, 400, "invalid_field"),
            post(
                "cleanup bad before",
                cleanup,
                ADMIN,
                r#"{"before":"yesterday"}"#,
                400,
                "invalid_field",
            ),
            get("unknown route", "/v1/codeq/unknown", Some(ADMIN), 404, "route_not_found"),
            case(
                "wrong method",
                Method::DELETE,
                "/v1/codeq/tasks",
                Some(ADMIN),
                None,
                405,
                "method_not_allowed",
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_body_with_characters_after_its_json_value_is_refused() {
    let app = TestApp::spawn().await;
    let trailing = app
        .http
        .post(format!("{}/v1/codeq/tasks", app.base))
        .bearer_auth(PRODUCER)
        .header("content-type", "application/json")
        .body(r#"{"command":"X","payload":{}} xyz"#)
        .send()
        .await
        .unwrap();
    assert_eq!(trailing.status(), 400);
    let body: serde_json::Value = trailing.json().await.unwrap();
    assert_eq!(body["code"], "malformed_json");
    assert!(body["error"].as_str().unwrap().contains("trailing characters"), "{body}");
    let stats = app.get("/admin/queues", ADMIN).await;
    assert_eq!(stats.body["queues"], json!([]), "nothing was created");
}

#[tokio::test]
async fn a_wrong_typed_result_status_is_named_alone_and_in_a_batch() {
    let app = TestApp::spawn().await;
    let id = app.create_simple("typed").await;
    app.claim_ok(WORKER, &["typed"]).await;
    let single = app.post(&format!("/tasks/{id}/result"), WORKER, json!({ "status": 5 })).await;
    assert_eq!((single.status, single.code()), (400, "invalid_field"));
    assert!(single.str("error").contains("status"), "{:?}", single.body);
    let batch = app
        .post("/tasks/batch/results", WORKER, json!({ "results": [{ "taskId": id, "status": 5 }] }))
        .await;
    let item = &batch.body["results"][0];
    assert_eq!(item["code"], "invalid_field", "{item}");
    assert!(item["error"].as_str().unwrap().contains("status"), "{item}");
    // The body is checked before the task id, as on every route.
    let bad_both = json!({ "results": [{ "taskId": "not-an-id", "status": "COMPLETED" }] });
    let batch = app.post("/tasks/batch/results", WORKER, bad_both).await;
    let item = &batch.body["results"][0];
    assert_eq!((&item["taskId"], &item["code"]), (&json!("not-an-id"), &json!("invalid_field")));
    let unknown = app
        .post(&format!("/tasks/{id}/result"), WORKER, json!({ "status": "DONE", "result": {} }))
        .await;
    assert!(
        unknown.str("error").contains(r#"expected "COMPLETED" or "FAILED""#),
        "{:?}",
        unknown.body
    );
}

#[tokio::test]
async fn a_delay_too_long_to_have_a_date_is_refused() {
    let app = TestApp::spawn().await;
    let reply = app
        .post(
            "/tasks",
            PRODUCER,
            json!({ "command": "later", "payload": {}, "delaySeconds": i64::MAX }),
        )
        .await;
    assert_eq!((reply.status, reply.code()), (400, "invalid_field"));
    assert!(reply.str("error").contains("delaySeconds"), "{:?}", reply.body);
    let ten_years = app
        .post(
            "/tasks",
            PRODUCER,
            json!({ "command": "later", "payload": {}, "delaySeconds": 315_360_000 }),
        )
        .await;
    assert_eq!(ten_years.status, 202);
    assert!(ten_years.str("runAt").starts_with("20"), "{:?}", ten_years.body);
}

#[tokio::test]
async fn whole_numbers_written_with_a_fraction_count_as_integers_everywhere() {
    let app = TestApp::spawn().await;
    // `5.0` is an integer to JSON Schema, and so to the API.
    let created = app
        .post("/tasks", PRODUCER, json!({ "command": "whole", "payload": {}, "maxAttempts": 5.0 }))
        .await;
    assert_eq!(created.status, 202, "{:?}", created.body);
    assert_eq!(created.body["maxAttempts"], 5);
    let claim = json!({ "commands": ["whole"], "leaseSeconds": 60.0, "count": 1e0 });
    let claimed = app.post("/tasks/claim/batch", WORKER, claim).await;
    assert_eq!(claimed.status, 200, "{:?}", claimed.body);
    let id = claimed.body["tasks"][0]["id"].as_str().unwrap().to_string();
    let heartbeat = json!({ "extendSeconds": 30.0, "attempt": 1.0 });
    let beat = app.post(&format!("/tasks/{id}/heartbeat"), WORKER, heartbeat).await;
    assert_eq!(beat.status, 200, "{:?}", beat.body);
    // A fraction, or a whole number out of the field's range, is refused.
    let nack = format!("/tasks/{id}/nack");
    for (path, token, body, field) in [
        (
            "/tasks",
            PRODUCER,
            json!({ "command": "whole", "payload": {}, "maxAttempts": 5.5 }),
            "maxAttempts",
        ),
        (nack.as_str(), WORKER, json!({ "attempt": -1.0 }), "attempt"),
        (nack.as_str(), WORKER, json!({ "attempt": 1e10 }), "attempt"),
    ] {
        let refused = app.post(path, token, body).await;
        assert_eq!((refused.status, refused.code()), (400, "invalid_field"), "{:?}", refused.body);
        assert!(refused.str("error").contains(field), "{:?}", refused.body);
    }
    assert_eq!(app.task(&id).await["status"], "IN_PROGRESS", "nothing refused changed the task");
}

#[tokio::test]
async fn a_body_that_is_not_a_json_object_is_refused_and_stores_nothing() {
    let app = TestApp::spawn().await;
    // serde would read these as the fields in order.
    let array = json!(["ARRAY", { "x": 1 }, 7, 3, null, null, null, null]);
    let as_fields = app.call(Method::POST, "/v1/codeq/tasks", Some(PRODUCER), Some(array)).await;
    assert_eq!(
        (as_fields.status, as_fields.code()),
        (400, "invalid_field"),
        "{:?}",
        as_fields.body
    );
    assert!(as_fields.str("error").contains("JSON object"), "{:?}", as_fields.body);
    let path = "/v1/codeq/admin/queues/ARRAY/settings";
    let settings = app.call(Method::PUT, path, Some(ADMIN), Some(json!([true, 1, 1.0, 1]))).await;
    assert_eq!((settings.status, settings.code()), (400, "invalid_field"), "{:?}", settings.body);
    let item = json!({ "tasks": [["ARRAY", {}]] });
    let batch = app.post("/tasks/batch", PRODUCER, item).await;
    assert_eq!(batch.body["results"][0]["code"], "invalid_field", "{:?}", batch.body);
    let queue = app.get("/admin/queues/ARRAY", ADMIN).await;
    assert_eq!(
        (queue.body["ready"].clone(), queue.body["paused"].clone()),
        (json!(0), json!(false))
    );
}

#[tokio::test]
async fn an_authorization_header_that_is_not_text_is_malformed_not_missing() {
    let app = TestApp::spawn().await;
    let value = reqwest::header::HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap();
    let response = app
        .http
        .get(format!("{}/v1/codeq/admin/queues", app.base))
        .header(reqwest::header::AUTHORIZATION, value)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "malformed_token", "{body}");
}

#[tokio::test]
async fn a_result_nested_past_a_parsers_limit_is_kept_as_sent() {
    let app = TestApp::spawn().await;
    let id = app.create_simple("deep").await;
    app.claim_ok(WORKER, &["deep"]).await;
    // 200 levels: past serde_json's 128 for a parsed value. A result is
    // kept as text, as a payload is, so only the body limit bounds it.
    let nested = (0..200).fold(json!(1), |inner, _| json!([inner]));
    let body = format!(r#"{{"status":"COMPLETED","result":{{"a":{nested}}}}}"#);
    let url = format!("{}/v1/codeq/tasks/{id}/result", app.base);
    let request = app.http.post(url).bearer_auth(WORKER).header("content-type", "application/json");
    assert_eq!(request.body(body).send().await.unwrap().status(), 200);

    let url = format!("{}/v1/codeq/tasks/{id}/result", app.base);
    let fetched = app.http.get(url).bearer_auth(PRODUCER).send().await.unwrap();
    let fetched = fetched.text().await.unwrap();
    assert!(fetched.contains(&format!(r#""result":{{"a":{nested}}}"#)), "{fetched}");
}

#[tokio::test]
async fn two_authorization_headers_are_refused_whichever_comes_first() {
    let app = TestApp::spawn().await;
    for tokens in [[PRODUCER, ADMIN], [ADMIN, PRODUCER]] {
        let mut headers = reqwest::header::HeaderMap::new();
        for token in tokens {
            let value = format!("Bearer {token}").parse().unwrap();
            headers.append(reqwest::header::AUTHORIZATION, value);
        }
        let url = format!("{}/v1/codeq/admin/queues", app.base);
        let response = app.http.get(url).headers(headers).send().await.unwrap();
        assert_eq!(response.status(), 401, "{tokens:?}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["code"], "malformed_token", "{body}");
    }
}
