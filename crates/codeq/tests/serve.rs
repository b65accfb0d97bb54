//! `codeq serve` as a user starts it: the real binary, its output, its
//! files and its exit codes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

fn codeq() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_codeq"));
    command.env("CODEQ_LOG_LEVEL", "warn");
    command
}

#[test]
fn local_mode_prints_the_tokens_it_saves_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = codeq()
        .args(["serve", "--port", "0", "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines: Vec<String> =
        BufReader::new(child.stdout.take().unwrap()).lines().take(4).map(Result::unwrap).collect();
    assert!(lines[0].starts_with("codeQ listening on http://127.0.0.1:"), "{lines:?}");
    let token_of = |label: &str| {
        lines
            .iter()
            .find_map(|l| l.trim().strip_prefix(label))
            .map(|t| t.trim().to_string())
            .unwrap()
    };
    let credentials_path = dir.path().join("credentials.json");
    let credentials: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&credentials_path).unwrap()).unwrap();
    assert_eq!(credentials["producerToken"], token_of("producer token:"));
    assert_eq!(credentials["workerToken"], token_of("worker token:"));
    assert_eq!(std::fs::metadata(&credentials_path).unwrap().permissions().mode() & 0o777, 0o600);

    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(child.wait().unwrap().success(), "graceful shutdown exits 0");
}

#[test]
fn local_mode_refuses_a_non_loopback_address_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let output = codeq()
        .args(["serve", "--host", "0.0.0.0", "--port", "0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("local mode"));
}

#[test]
fn a_bad_configuration_value_stops_start_up_with_exit_code_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let output = codeq()
        .args(["serve", "--port", "0", "--data-dir"])
        .arg(dir.path())
        .env("CODEQ_MAX_ATTEMPTS_DEFAULT", "zero")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("maxAttemptsDefault"), "{stderr}");
}

#[test]
fn an_unknown_key_in_the_file_stops_start_up_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("codeq.yaml");
    std::fs::write(&file, "port: 0\nretentionSecs: 5\n").unwrap();
    let output = codeq()
        .args(["serve", "--config"])
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("retentionSecs"));
}
