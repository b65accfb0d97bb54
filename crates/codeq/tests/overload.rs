//! Overload, against the real binary: 2,000 clients at once on a server
//! that serves 4 storage calls at a time. Every client gets an answer —
//! 202, or 503 `overloaded` with `Retry-After` — none hangs, no other 5xx,
//! and the server's memory stays bounded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

const CLIENTS: usize = 2_000;

/// The server's peak resident memory so far, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|line| line.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_clients_get_an_answer_or_a_503_and_memory_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_codeq"))
        .args(["serve", "--port", "0", "--data-dir"])
        .arg(dir.path())
        .env("CODEQ_MAX_IN_FLIGHT_CALLS", "4")
        .env("CODEQ_LOG_LEVEL", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let banner: Vec<String> =
        BufReader::new(server.stdout.take().unwrap()).lines().take(3).map(Result::unwrap).collect();
    let base = banner[0].split_whitespace().nth(3).unwrap().to_string();
    let producer = banner[2].split_whitespace().last().unwrap().to_string();
    let before = peak_rss_kib(server.id());

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(CLIENTS));
    let mut clients = tokio::task::JoinSet::new();
    for n in 0..CLIENTS {
        let (http, base, producer, start) =
            (http.clone(), base.clone(), producer.clone(), start.clone());
        clients.spawn(async move {
            start.wait().await;
            let response = http
                .post(format!("{base}/v1/codeq/tasks"))
                .bearer_auth(&producer)
                .json(&json!({ "command": "crowd", "payload": { "n": n } }))
                .send()
                .await
                .expect("every client gets an answer in time");
            let status = response.status().as_u16();
            let retry_after = response.headers().contains_key("retry-after");
            let body: Value = response.json().await.unwrap_or_default();
            (status, retry_after, body["code"].as_str().unwrap_or_default().to_string())
        });
    }
    let mut answers: BTreeMap<u16, usize> = BTreeMap::new();
    while let Some(answer) = clients.join_next().await {
        let (status, retry_after, code) = answer.unwrap();
        *answers.entry(status).or_default() += 1;
        match status {
            202 => {}
            503 => {
                assert_eq!(code, "overloaded");
                assert!(retry_after, "a 503 says when to retry");
            }
            other => panic!("status {other} ({code}) under overload"),
        }
    }
    assert_eq!(answers.values().sum::<usize>(), CLIENTS);
    assert!(answers.contains_key(&503), "4 calls at a time cannot take 2,000 at once: {answers:?}");
    assert!(answers.contains_key(&202), "some are served: {answers:?}");

    let stats: Value = http
        .get(format!("{base}/v1/codeq/admin/queues/crowd"))
        .bearer_auth(&producer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["ready"], answers[&202], "every 202 is a task, every 503 none");

    let grown_mib = (peak_rss_kib(server.id()) - before) / 1024;
    assert!(grown_mib < 256, "2,000 connections grew the server by {grown_mib} MiB");
    println!("answers {answers:?}; peak RSS grew by {grown_mib} MiB");
    server.kill().unwrap();
    server.wait().unwrap();
}
