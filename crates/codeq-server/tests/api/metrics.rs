//! `/metrics` read as a scraper reads it, after a flow whose every step
//! shows in the numbers: creates, claims, a nack that requeues, a lease
//! that expires into the dead-letter queue, a nack that dead-letters, a
//! result, a long poll, an overloaded request and an unknown route.

use openmetrics_parser::prometheus::parse_prometheus;
use openmetrics_parser::{
    HistogramValue, MetricsExposition, PrometheusMetricFamily, PrometheusType, PrometheusValue,
};
use reqwest::Method;
use serde_json::json;

use crate::helpers::*;
use crate::receiver::Receiver;

const FLOW: &str = "FLOW";

type Scrape = MetricsExposition<PrometheusType, PrometheusValue>;

/// The exposition in the Prometheus text format, parsed by a strict
/// parser (a grammar of the format: any line it cannot read fails).
async fn scrape(app: &TestApp) -> Scrape {
    let response = app.http.get(format!("{}/metrics", app.base)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    let text = response.text().await.unwrap();
    parse_prometheus(&text).unwrap_or_else(|error| panic!("{error:?} in\n{text}"))
}

/// The family `name`, of type `kind`, whose label names are exactly
/// those of `labels`.
fn family<'a>(
    scrape: &'a Scrape,
    name: &str,
    kind: PrometheusType,
    labels: &[(&str, &str)],
) -> &'a PrometheusMetricFamily {
    let family = scrape.families.get(name).unwrap_or_else(|| panic!("no family {name}"));
    assert_eq!(family.family_type, kind, "{name}");
    let mut names: Vec<&str> = family.get_label_names().iter().map(String::as_str).collect();
    let mut wanted: Vec<&str> = labels.iter().map(|(name, _)| *name).collect();
    names.sort_unstable();
    wanted.sort_unstable();
    assert_eq!(names, wanted, "labels of {name}");
    family
}

/// The value of the series of `name` with exactly `labels`.
fn series<'a>(
    scrape: &'a Scrape,
    name: &str,
    kind: PrometheusType,
    labels: &[(&str, &str)],
) -> &'a PrometheusValue {
    let family = family(scrape, name, kind, labels);
    let found: Vec<&PrometheusValue> = family
        .iter_samples()
        .filter(|sample| {
            let set = sample.get_labelset().unwrap();
            labels.iter().all(|(name, value)| set.get_label_value(name) == Some(*value))
        })
        .map(|sample| &sample.value)
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}");
    found[0]
}

fn counter(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    match series(scrape, name, PrometheusType::Counter, labels) {
        PrometheusValue::Counter(counter) => counter.value.as_f64(),
        other => panic!("{name}: {other:?}"),
    }
}

fn gauge(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    match series(scrape, name, PrometheusType::Gauge, labels) {
        PrometheusValue::Gauge(value) => value.as_f64(),
        other => panic!("{name}: {other:?}"),
    }
}

fn histogram<'a>(scrape: &'a Scrape, name: &str, labels: &[(&str, &str)]) -> &'a HistogramValue {
    match series(scrape, name, PrometheusType::Histogram, labels) {
        PrometheusValue::Histogram(histogram) => histogram,
        other => panic!("{name}: {other:?}"),
    }
}

/// The cumulative count of the bucket of upper bound `bound`.
fn cumulative_at(histogram: &HistogramValue, bound: f64) -> f64 {
    let bucket = histogram.buckets.iter().find(|bucket| bucket.upper_bound == bound);
    bucket.map(|bucket| bucket.count.as_f64()).unwrap_or_else(|| panic!("no bucket {bound}"))
}

async fn create(app: &TestApp, body: serde_json::Value) -> String {
    app.create(body).await["id"].as_str().unwrap().to_string()
}

async fn claim(app: &TestApp, lease: u64) -> serde_json::Value {
    let reply = app
        .post("/tasks/claim", WORKER, json!({ "commands": [FLOW], "leaseSeconds": lease }))
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.body
}

async fn nack(app: &TestApp, id: &str) -> String {
    let reply = app.post(&format!("/tasks/{id}/nack"), WORKER, json!({ "delaySeconds": 0 })).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.str("status").to_string()
}

#[tokio::test]
async fn every_metric_of_the_reference_shows_the_flow_it_counted() {
    let app = TestApp::spawn_with(|config| config.max_body_bytes_in_flight = 4096, true).await;
    // Five tasks, claimed in creation order (same priority, FIFO).
    let expiring = create(&app, json!({ "command": FLOW, "payload": {}, "maxAttempts": 2 })).await;
    let nacked = create(&app, json!({ "command": FLOW, "payload": {}, "maxAttempts": 1 })).await;
    let completed = create(&app, json!({ "command": FLOW, "payload": {} })).await;
    let held = create(&app, json!({ "command": FLOW, "payload": {} })).await;
    create(&app, json!({ "command": FLOW, "payload": {}, "delaySeconds": 3600 })).await;
    // Every terminal transition below happens 100 s after these creations.
    app.advance(100);

    assert_eq!(claim(&app, 60).await["id"], expiring.as_str());
    assert_eq!(nack(&app, &expiring).await, "requeued");
    assert_eq!(claim(&app, 60).await["id"], nacked.as_str());
    assert_eq!(nack(&app, &nacked).await, "dlq");
    assert_eq!(claim(&app, 60).await["id"], completed.as_str());
    let result = json!({ "status": "COMPLETED", "result": { "ok": true } });
    assert_eq!(app.post(&format!("/tasks/{completed}/result"), WORKER, result).await.status, 200);
    assert_eq!(claim(&app, 3600).await["id"], held.as_str());
    assert_eq!(claim(&app, 1).await["id"], expiring.as_str(), "its second delivery");
    app.advance(5);
    app.wait_for_status(&expiring, "FAILED").await;
    let ready = create(&app, json!({ "command": FLOW, "payload": {} })).await;

    // A long poll parked, an overloaded request, an unknown route.
    let waiting =
        app.spawn_post("/tasks/claim", WORKER, json!({ "commands": ["IDLE"], "waitSeconds": 30 }));
    app.wait_for_long_polls(1).await;
    let big = json!({ "command": FLOW, "payload": { "pad": "x".repeat(8000) } });
    assert_eq!(app.post("/tasks", PRODUCER, big).await.code(), "overloaded");
    assert_eq!(app.call(Method::GET, "/no/such/route", None, None).await.status, 404);

    let scrape = scrape(&app).await;
    let flow = [("command", FLOW)];
    assert_eq!(counter(&scrape, "codeq_task_created_total", &flow), 6.0);
    assert_eq!(counter(&scrape, "codeq_task_claimed_total", &flow), 5.0);
    let status = |status| [("command", FLOW), ("status", status)];
    assert_eq!(counter(&scrape, "codeq_task_completed_total", &status("COMPLETED")), 1.0);
    assert_eq!(counter(&scrape, "codeq_task_completed_total", &status("FAILED")), 2.0);
    assert_eq!(counter(&scrape, "codeq_lease_expired_total", &flow), 1.0);

    // Creation to terminal: 100 s for the result and the nack, 105 s for
    // the expiry (less the real time the steps took, well under 40 s).
    let latency = "codeq_task_processing_latency_seconds";
    let done = histogram(&scrape, latency, &status("COMPLETED"));
    assert_eq!((cumulative_at(done, 60.0), cumulative_at(done, 300.0)), (0.0, 1.0));
    let failed = histogram(&scrape, latency, &status("FAILED"));
    assert_eq!((cumulative_at(failed, 60.0), cumulative_at(failed, 300.0)), (0.0, 2.0));
    assert_eq!((cumulative_at(failed, 0.001), cumulative_at(failed, 3600.0)), (0.0, 2.0));
    assert_eq!(failed.count, Some(2));
    let sum = failed.sum.unwrap().as_f64();
    assert!((165.0..=205.0).contains(&sum), "100 s + 105 s, less the steps' real time: {sum}");

    let queue = |queue| [("command", FLOW), ("queue", queue)];
    assert_eq!(gauge(&scrape, "codeq_queue_depth", &queue("ready")), 1.0, "{ready}");
    assert_eq!(gauge(&scrape, "codeq_queue_depth", &queue("delayed")), 1.0);
    assert_eq!(gauge(&scrape, "codeq_queue_depth", &queue("in_progress")), 1.0);
    assert_eq!(gauge(&scrape, "codeq_queue_depth", &queue("dlq")), 2.0);
    assert_eq!(gauge(&scrape, "codeq_dlq_depth", &flow), 2.0);
    assert_eq!(gauge(&scrape, "codeq_subscriptions_active", &flow), 0.0, "no subscriber");
    for kind in ["queue_ready", "task_result"] {
        for outcome in ["success", "failure"] {
            let labels = [("kind", kind), ("command", FLOW), ("outcome", outcome)];
            assert_eq!(counter(&scrape, "codeq_webhook_deliveries_total", &labels), 0.0);
        }
    }

    let http = |method, route, status| [("method", method), ("route", route), ("status", status)];
    let requests = "codeq_http_requests_total";
    assert_eq!(counter(&scrape, requests, &http("POST", "/v1/codeq/tasks", "202")), 6.0);
    assert_eq!(counter(&scrape, requests, &http("POST", "/v1/codeq/tasks", "503")), 1.0);
    assert_eq!(counter(&scrape, requests, &http("POST", "/v1/codeq/tasks/{id}/nack", "200")), 2.0);
    assert_eq!(counter(&scrape, requests, &http("POST", "/v1/codeq/tasks/claim", "200")), 5.0);
    assert_eq!(counter(&scrape, requests, &http("GET", "unmatched", "404")), 1.0);
    for sample in scrape.families[requests].iter_samples() {
        let route = sample.get_labelset().unwrap().get_label_value("route").unwrap().to_string();
        assert!(route.starts_with('/') || route == "unmatched", "{route}");
        assert!(!route.contains(&expiring) && !route.contains("/no/such"), "raw path: {route}");
    }
    let duration = "codeq_http_request_duration_seconds";
    let nacks = [("method", "POST"), ("route", "/v1/codeq/tasks/{id}/nack")];
    assert_eq!(cumulative_at(histogram(&scrape, duration, &nacks), f64::INFINITY), 2.0);

    assert_eq!(counter(&scrape, "codeq_admission_rejections_total", &[]), 1.0);
    assert_eq!(gauge(&scrape, "codeq_long_polls_waiting", &[]), 1.0);
    let rounds = counter(&scrape, "codeq_storage_commit_rounds_total", &[]);
    let frames = counter(&scrape, "codeq_storage_commit_frames_total", &[]);
    assert!(rounds >= 1.0 && frames >= rounds, "{rounds} rounds, {frames} frames");
    let per_round = histogram(&scrape, "codeq_storage_commit_round_frames", &[]);
    assert_eq!(cumulative_at(per_round, f64::INFINITY), rounds);
    assert_eq!(per_round.sum.unwrap().as_f64(), frames);
    let fsyncs = histogram(&scrape, "codeq_storage_fsync_duration_seconds", &[]);
    assert!(cumulative_at(fsyncs, f64::INFINITY) >= rounds, "durability: fsync");
    assert_eq!(gauge(&scrape, "codeq_storage_watermark_lag", &[]), 0.0, "all answered: durable");

    // The parked claim takes a new task; the gauge follows.
    create(&app, json!({ "command": "IDLE", "payload": {} })).await;
    assert_eq!(waiting.await.unwrap().status(), 200);
    let after = scrape_until(&app, |s| gauge(s, "codeq_long_polls_waiting", &[]) == 0.0).await;
    assert_eq!(counter(&after, "codeq_task_claimed_total", &[("command", "IDLE")]), 1.0);
}

/// Scrapes until `done` holds (the long poll's guard drops just after
/// its answer leaves).
async fn scrape_until(app: &TestApp, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let scrape = scrape(app).await;
        if done(&scrape) {
            return scrape;
        }
        assert!(tokio::time::Instant::now() < deadline, "the condition never held");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn scrapers_that_ask_for_openmetrics_get_it_with_its_end_marker() {
    let app = TestApp::spawn().await;
    app.create_simple("OM").await;
    let response = app
        .http
        .get(format!("{}/metrics", app.base))
        .header("accept", "application/openmetrics-text;version=1.0.0,text/plain;q=0.5")
        .send()
        .await
        .unwrap();
    let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
    assert!(content_type.starts_with("application/openmetrics-text; version=1.0.0"));
    let text = response.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let parsed = openmetrics_parser::openmetrics::parse_openmetrics(&text)
        .unwrap_or_else(|error| panic!("{error:?} in\n{text}"));
    let created = &parsed.families["codeq_task_created"];
    assert_eq!(created.family_type, openmetrics_parser::OpenMetricsType::Counter);
    let sample = created.iter_samples().next().unwrap();
    assert_eq!(sample.get_labelset().unwrap().get_label_value("command"), Some("OM"));
    let histogram = &parsed.families["codeq_http_request_duration_seconds"];
    assert_eq!(histogram.family_type, openmetrics_parser::OpenMetricsType::Histogram);
}

#[tokio::test]
async fn webhook_deliveries_subscriptions_and_the_outbox_are_counted() {
    let app = TestApp::spawn_with(
        |config| {
            config.webhook_allow_private_networks = true;
            config.result_webhook_base_backoff_seconds = 0;
            config.subscription_min_interval_seconds = 0;
        },
        true,
    )
    .await;
    let listener = Receiver::start(&[]).await;
    let subscribe = json!({ "callbackUrl": listener.base, "eventTypes": [FLOW] });
    assert_eq!(app.post("/workers/subscriptions", WORKER, subscribe).await.status, 200);
    let flaky = Receiver::start(&[500]).await;
    let id = create(&app, json!({ "command": FLOW, "payload": {}, "webhook": flaky.base })).await;
    listener.wait_for(1).await;
    let owed =
        scrape_until(&app, |s| gauge(s, "codeq_subscriptions_active", &[("command", FLOW)]) == 1.0)
            .await;
    assert_eq!(gauge(&owed, "codeq_webhook_outbox_pending", &[]), 0.0);
    assert_eq!(claim(&app, 60).await["id"], id.as_str());
    let result = json!({ "status": "COMPLETED", "result": { "ok": true } });
    assert_eq!(app.post(&format!("/tasks/{id}/result"), WORKER, result).await.status, 200);
    flaky.wait_for(2).await;
    app.wait_for_callbacks().await;

    let scrape = scrape(&app).await;
    let delivered = |kind, outcome| {
        counter(
            &scrape,
            "codeq_webhook_deliveries_total",
            &[("kind", kind), ("command", FLOW), ("outcome", outcome)],
        )
    };
    assert_eq!(delivered("task_result", "failure"), 1.0, "the first attempt got a 500");
    assert_eq!(delivered("task_result", "success"), 1.0);
    assert_eq!(delivered("queue_ready", "success"), 1.0);
    assert_eq!(delivered("queue_ready", "failure"), 0.0);
    assert_eq!(gauge(&scrape, "codeq_webhook_outbox_pending", &[]), 0.0, "delivered");
    assert_eq!(gauge(&scrape, "codeq_webhook_outbox_overdue_seconds", &[]), 0.0);
}

#[tokio::test]
async fn a_subscription_is_counted_under_known_commands_only() {
    let app =
        TestApp::spawn_with(|config| config.webhook_allow_private_networks = true, true).await;
    let subscribe = json!({
        "callbackUrl": "http://127.0.0.1:9/ready",
        "eventTypes": ["NOT_YET"],
        "ttlSeconds": 60,
    });
    let subscribed = app.post("/workers/subscriptions", WORKER, subscribe).await;
    assert_eq!(subscribed.status, 200, "{:?}", subscribed.body);

    // A name no task or setting has made known gets no series: a worker
    // cannot add series by naming commands (maxCommands bounds them).
    let text = app.http.get(format!("{}/metrics", app.base)).send().await.unwrap();
    let text = text.text().await.unwrap();
    assert!(!text.contains(r#"command="NOT_YET""#), "{text}");
    app.create_simple("NOT_YET").await;
    let live = scrape(&app).await;
    assert_eq!(gauge(&live, "codeq_subscriptions_active", &[("command", "NOT_YET")]), 1.0);
    app.advance(61);
    let lapsed = scrape(&app).await;
    assert_eq!(gauge(&lapsed, "codeq_subscriptions_active", &[("command", "NOT_YET")]), 0.0);
}

#[tokio::test]
async fn admin_calls_that_find_nothing_add_no_series() {
    let app = TestApp::spawn().await;
    for call in ["dlq/replay", "dlq/purge"] {
        let path = format!("/admin/queues/NEVER_USED/{call}");
        let reply = app.post(&path, ADMIN, json!({})).await;
        assert_eq!(reply.status, 200, "{call}: {:?}", reply.body);
    }

    let text = app.http.get(format!("{}/metrics", app.base)).send().await.unwrap();
    let text = text.text().await.unwrap();
    assert!(!text.contains("NEVER_USED"), "{text}");
}

#[tokio::test]
async fn the_process_and_its_build_are_described() {
    let app = TestApp::spawn().await;
    let scrape = scrape(&app).await;
    let version = env!("CARGO_PKG_VERSION");
    let info = family(
        &scrape,
        "codeq_build_info",
        PrometheusType::Gauge,
        &[("version", version), ("revision", "")],
    );
    assert_eq!(info.iter_samples().count(), 1);
    assert!(counter(&scrape, "process_cpu_seconds_total", &[]) > 0.0, "the server has run");
    assert!(gauge(&scrape, "process_resident_memory_bytes", &[]) > 1_000_000.0);
    let open = gauge(&scrape, "process_open_fds", &[]);
    assert!(open >= 3.0 && open <= gauge(&scrape, "process_max_fds", &[]), "{open}");
    let started = gauge(&scrape, "process_start_time_seconds", &[]);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    assert!((now.as_secs_f64() - started).abs() < 600.0, "{started}");
}
