//! The files under deploy/ against what they depend on: the image builds
//! the binary the README builds, and every metric the Grafana dashboard
//! and the chart's alerts query is one a real server exports.
//!
//! (The image itself cannot be built on the machines these tests run on:
//! no Docker daemon. The chart is rendered by deploy/helm/test/check.sh.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use codeq_server::app::App;
use codeq_server::clock::SystemClock;
use codeq_server::config::{Config, StaticTokenConfig, TokenKind};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap()
}

/// The build command of the README's quick start.
fn readme_build_command() -> String {
    let readme = read("README.md");
    let line = readme
        .lines()
        .find(|line| line.starts_with("cargo build"))
        .expect("the README builds the binary with cargo build");
    line.trim().to_string()
}

#[test]
fn the_image_builds_the_binary_the_readme_builds() {
    let dockerfile = read("deploy/Dockerfile");
    let command = readme_build_command();
    assert_eq!(command, "cargo build --release -p codeq");
    let run = dockerfile
        .lines()
        .find(|line| line.trim_start().starts_with("RUN cargo build"))
        .expect("a RUN cargo build line");
    assert_eq!(run.trim_start().trim_end_matches('\\').trim(), format!("RUN {command}"));
    assert!(dockerfile.contains("target/release/codeq"), "it installs what that command built");
}

#[test]
fn the_image_runs_as_a_user_with_a_data_volume_and_a_health_check() {
    let dockerfile = read("deploy/Dockerfile");
    let stages = dockerfile.lines().filter(|line| line.starts_with("FROM ")).count();
    assert_eq!(stages, 2, "multi-stage: build, then a runtime image");
    assert!(dockerfile.contains("USER 10001:10001"));
    assert!(dockerfile.contains("VOLUME [\"/var/lib/codeq\"]"));
    assert!(dockerfile.contains("CODEQ_DATA_DIR=/var/lib/codeq"));
    let health = dockerfile.lines().skip_while(|l| !l.starts_with("HEALTHCHECK")).nth(1).unwrap();
    assert!(health.contains("/healthz"), "{health}");
    for compose in ["deploy/compose/compose.yaml", "deploy/compose/compose.redis.yaml"] {
        let text = read(compose);
        assert!(text.contains("dockerfile: deploy/Dockerfile"), "{compose} builds this image");
        assert!(text.contains("context: ../.."), "{compose}: from the repository root");
    }
}

/// Metric names (`codeq_…`) in `text`, suffixes of histogram series
/// removed.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("codeq_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        names.insert(family.to_string());
        rest = &tail[end..];
    }
    names
}

/// The names of the families a real server exports after some traffic.
async fn exported_names() -> BTreeSet<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default_for_tests(dir.path());
    config.static_tokens = vec![
        StaticTokenConfig::plain("p", TokenKind::Producer, "p"),
        StaticTokenConfig::plain("w", TokenKind::Worker, "w"),
    ];
    let app = App::build_with_clock(config, Arc::new(SystemClock)).await.unwrap();
    let server = app.spawn().unwrap();
    let http = reqwest::Client::new();
    let created = http
        .post(format!("{}/v1/codeq/tasks", server.base_url()))
        .bearer_auth("p")
        .json(&serde_json::json!({ "command": "DEPLOY", "payload": {} }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 202);
    // A task completed: a histogram shows in the Prometheus format once
    // it has a series.
    let claimed: serde_json::Value = http
        .post(format!("{}/v1/codeq/tasks/claim", server.base_url()))
        .bearer_auth("w")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let result = http
        .post(format!(
            "{}/v1/codeq/tasks/{}/result",
            server.base_url(),
            claimed["id"].as_str().unwrap()
        ))
        .bearer_auth("w")
        .json(&serde_json::json!({ "status": "COMPLETED", "result": {} }))
        .send()
        .await
        .unwrap();
    assert_eq!(result.status(), 200);
    let text = http.get(format!("{}/metrics", server.base_url())).send().await.unwrap();
    let text = text.text().await.unwrap();
    server.stop().await.unwrap();
    text.lines().filter(|line| !line.starts_with('#')).flat_map(metric_names).collect()
}

#[tokio::test]
async fn the_dashboard_and_the_alerts_query_only_metrics_the_server_exports() {
    let exported = exported_names().await;
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/codeq-dashboard.json")).unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| panel["targets"].as_array().unwrap().iter())
        .map(|target| target["expr"].as_str().unwrap().to_string())
        .collect();
    assert!(exprs.len() >= 12, "queue, DLQ, throughput, latency, webhooks, HTTP, engine panels");
    // One Prometheus may scrape several deployments: every series is of
    // the job chosen.
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(variables.iter().any(|variable| variable["name"] == "job"), "a job variable");
    for expr in &exprs {
        for (at, _) in expr.match_indices("codeq_") {
            let name_end = expr[at..].find(|c: char| !c.is_ascii_alphanumeric() && c != '_');
            let rest = &expr[at + name_end.unwrap_or(expr.len() - at)..];
            assert!(rest.starts_with(r#"{job=~"$job""#), "not filtered by job: {expr}");
        }
    }
    let rules = read("deploy/helm/codeq/templates/prometheusrule.yaml");
    for (source, text) in [("dashboard", exprs.join("\n")), ("alerts", rules)] {
        let used = metric_names(&text);
        assert!(!used.is_empty());
        let unknown: Vec<&String> = used.difference(&exported).collect();
        assert!(unknown.is_empty(), "{source} queries metrics nobody exports: {unknown:?}");
    }
}
