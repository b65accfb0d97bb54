//! `/openapi.json`: OpenAPI 3.1, and exactly the routes the router serves,
//! each with its schemas and error answers.

use std::collections::BTreeSet;

use codeq_server::http::route_table;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;

async fn document(app: &TestApp) -> Value {
    let reply = app.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["content-type"], "application/json");
    reply.body
}

/// `(METHOD, path)` of every operation of the document.
fn operations(document: &Value) -> BTreeSet<(String, String)> {
    let paths = document["paths"].as_object().expect("paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            let methods = item.as_object().expect("path item").keys();
            methods.map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect()
}

#[tokio::test]
async fn the_document_lists_exactly_the_routes_of_the_router() {
    let app = TestApp::spawn().await;
    let document = document(&app).await;
    assert_eq!(document["openapi"], "3.1.0");
    let routed: BTreeSet<(String, String)> = route_table()
        .into_iter()
        .map(|(method, path)| (method.to_string(), path.to_string()))
        .collect();
    let documented = operations(&document);
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    assert!(undocumented.is_empty(), "routes missing from /openapi.json: {undocumented:?}");
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(unrouted.is_empty(), "documented but not routed: {unrouted:?}");
}

#[tokio::test]
async fn every_documented_operation_is_served() {
    let app = TestApp::spawn().await;
    let document = document(&app).await;
    for (method, path) in operations(&document) {
        let concrete = path
            .replace("{id}", "0190a8c4-0000-7000-8000-000000000000")
            .replace("{command}", "GREET");
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let body = (method == Method::POST).then(|| json!({}));
        let reply = app.call(method.clone(), &concrete, Some(ADMIN), body).await;
        assert!(
            !matches!(reply.code(), "route_not_found" | "method_not_allowed"),
            "{method} {path}: {:?}",
            reply.body
        );
    }
}

#[tokio::test]
async fn every_operation_has_its_schemas_and_error_answers() {
    let app = TestApp::spawn().await;
    let document = document(&app).await;
    let schemas = document["components"]["schemas"].as_object().expect("schemas");
    for (method, path) in operations(&document) {
        let operation = &document["paths"][&path][method.to_lowercase()];
        let responses = operation["responses"].as_object().expect("responses");
        let success = responses.keys().find(|status| status.starts_with('2')).expect("a 2xx");
        // A 204 has no body to describe.
        assert!(
            success == "204" || responses[success]["content"].is_object(),
            "{method} {path}: the {success} answer has no schema"
        );
        let errors: Vec<&Value> = responses
            .iter()
            .filter(|(status, _)| status.starts_with('4') || status.starts_with('5'))
            .map(|(_, response)| response)
            .collect();
        // The document itself and the scrape (storage down leaves the
        // depths out of it) always answer 200.
        if !["/openapi.json", "/metrics"].contains(&path.as_str()) {
            assert!(!errors.is_empty(), "{method} {path}: no error answers");
        }
        for error in errors {
            let schema = &error["content"]["application/json"]["schema"]["$ref"];
            assert_eq!(schema, "#/components/schemas/ErrorBody", "{method} {path}");
        }
        // Every 503 the server sends carries `Retry-After`.
        if let Some(unavailable) = responses.get("503") {
            assert!(
                unavailable["headers"]["Retry-After"].is_object(),
                "{method} {path}: the 503 answer does not declare Retry-After"
            );
        }
        // Pause and resume take no body (one is ignored).
        let bodiless = path.ends_with("/pause") || path.ends_with("/resume");
        if bodiless {
            assert!(operation.get("requestBody").is_none(), "{method} {path}");
        } else if method == "POST" {
            let body = &operation["requestBody"]["content"]["application/json"]["schema"]["$ref"];
            let name = body.as_str().and_then(|r| r.strip_prefix("#/components/schemas/"));
            assert!(name.is_some_and(|name| schemas.contains_key(name)), "{method} {path}");
        }
        if path.starts_with("/v1/codeq") {
            assert_eq!(operation["security"], json!([{ "bearer": [] }]), "{method} {path}");
        }
        // A command in the path or query is a name the server checks.
        let parameters = operation["parameters"].as_array().cloned().unwrap_or_default();
        for command in parameters.iter().filter(|p| p["name"] == "command") {
            let name = &command["schema"]["$ref"];
            assert_eq!(name, "#/components/schemas/CommandName", "{method} {path}");
        }
    }
    let name = &schemas["CommandName"];
    assert_eq!(
        (&name["pattern"], &name["maxLength"], &name["minLength"]),
        (&json!("^[A-Za-z0-9_.:-]+$"), &json!(128), &json!(1))
    );
}

#[tokio::test]
async fn a_listed_task_may_lack_its_payload_where_a_task_may_not() {
    let app = TestApp::spawn().await;
    let created = app.create(json!({ "command": "LISTED", "payload": { "a": 1 } })).await;
    let listed = app.call(Method::GET, "/v1/codeq/admin/tasks?command=LISTED", Some(ADMIN), None);
    let listed = listed.await;
    let document = document(&app).await;
    let schemas = &document["components"]["schemas"];
    let required = |name: &str| -> Vec<Value> {
        schemas[name]["required"].as_array().cloned().unwrap_or_default()
    };

    // What the route answers: a listed task without its payload.
    assert_eq!(listed.status, 200, "{:?}", listed.body);
    assert_eq!(listed.body["tasks"][0]["id"], created["id"]);
    assert!(listed.body["tasks"][0].get("payload").is_none(), "{:?}", listed.body);
    // What the document says of it.
    let items = &schemas["TaskPage"]["properties"]["tasks"]["items"]["$ref"];
    assert_eq!(items, "#/components/schemas/ListedTask");
    assert!(!required("ListedTask").contains(&json!("payload")));
    assert!(required("ListedTask").contains(&json!("id")));
    assert!(required("Task").contains(&json!("payload")));
}

#[tokio::test]
async fn every_page_size_is_bounded_as_the_server_bounds_it() {
    let app = TestApp::spawn().await;
    let document = document(&app).await;
    let mut limits = 0;
    for (method, path) in operations(&document) {
        let operation = &document["paths"][&path][method.to_lowercase()];
        let parameters = operation["parameters"].as_array().cloned().unwrap_or_default();
        for limit in parameters.iter().filter(|p| p["name"] == "limit") {
            limits += 1;
            let schema = &limit["schema"];
            assert_eq!(schema["minimum"], 1, "{method} {path}");
            let maximum = schema["maximum"].as_u64().expect("a maximum");
            let route = path["/v1/codeq".len()..].replace("{command}", "Q");
            let over = app.get(&format!("{route}?limit={}", maximum + 1), ADMIN).await;
            assert_eq!(over.status, 400, "{method} {path}: limit {} over the maximum", maximum + 1);
            let at = app.get(&format!("{route}?limit={maximum}"), ADMIN).await;
            assert_eq!(at.status, 200, "{method} {path}: limit {maximum}");
        }
    }
    assert!(limits >= 3, "{limits} listings with a limit");
}

#[tokio::test]
async fn the_payload_schema_allows_every_json_type_the_server_takes_and_not_null() {
    let app = TestApp::spawn().await;
    let document = document(&app).await;
    let payload = &document["components"]["schemas"]["CreateTask"]["properties"]["payload"];
    let allowed: BTreeSet<String> = payload["oneOf"]
        .as_array()
        .unwrap_or_else(|| panic!("one schema per type: {payload}"))
        .iter()
        .map(|schema| schema["type"].as_str().unwrap().to_string())
        .collect();
    for (kind, example) in [
        ("object", json!({ "a": 1 })),
        ("array", json!([1])),
        ("string", json!("s")),
        ("number", json!(1.5)),
        ("boolean", json!(true)),
        ("null", Value::Null),
    ] {
        let create = json!({ "command": "PAYLOADS", "payload": example });
        let answer = app.call(Method::POST, "/v1/codeq/tasks", Some(PRODUCER), Some(create)).await;
        let taken = answer.status == 202;
        assert_eq!(allowed.contains(kind), taken, "{kind}: the server answered {}", answer.status);
    }
}
