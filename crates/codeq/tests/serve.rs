//! `codeq serve` as a user starts it: the real binary, its output, its
//! files and its exit codes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

fn codeq() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_codeq"));
    command.env("CODEQ_LOG_LEVEL", "warn");
    command
}

/// `codeq serve` in local mode on `dir` and port 0, with the four lines of
/// its start-up banner (printed once it listens).
fn serve(dir: &Path) -> (Child, Vec<String>) {
    let mut child = codeq()
        .args(["serve", "--port", "0", "--data-dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let banner =
        BufReader::new(child.stdout.take().unwrap()).lines().take(4).map(Result::unwrap).collect();
    (child, banner)
}

fn stop(mut child: Child) {
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(child.wait().unwrap().success(), "graceful shutdown exits 0");
}

#[test]
fn a_second_serve_on_a_data_dir_in_use_stops_without_touching_it() {
    let dir = tempfile::tempdir().unwrap();
    let (first, _) = serve(dir.path());
    let credentials = std::fs::read(dir.path().join("credentials.json")).unwrap();

    let second = codeq()
        .args(["serve", "--port", "0", "--data-dir"])
        .arg(dir.path())
        .env("CODEQ_LOG_FORMAT", "json")
        .output()
        .unwrap();

    let stderr = String::from_utf8_lossy(&second.stderr);
    let expected = format!(
        "data dir {} is in use by another codeq serve (pid {})",
        dir.path().display(),
        first.id()
    );
    // A log line in logFormat, as every other.
    let line: serde_json::Value =
        serde_json::from_str(stderr.trim()).unwrap_or_else(|_| panic!("one JSON line: {stderr}"));
    assert_eq!(line["level"], "ERROR", "{line}");
    assert!(line["fields"]["message"].as_str().unwrap().contains(&expected), "{stderr}");
    assert_eq!(second.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("Locked"), "the store was never opened: {stderr}");
    let after = std::fs::read(dir.path().join("credentials.json")).unwrap();
    assert_eq!(after, credentials, "credentials.json of the running server is untouched");
    stop(first);
}

#[test]
fn a_restart_says_it_reuses_the_saved_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let (first, generated) = serve(dir.path());
    stop(first);

    let (second, reused) = serve(dir.path());
    stop(second);

    assert!(generated[1].contains("generated these"), "{generated:?}");
    assert!(reused[1].contains("reusing these"), "{reused:?}");
    assert_eq!(generated[2..], reused[2..], "the same tokens");
}

#[test]
fn a_data_dir_that_is_a_file_is_refused_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("codeq-data");
    std::fs::write(&file, "").unwrap();

    let output = codeq().args(["serve", "--port", "0", "--data-dir"]).arg(&file).output().unwrap();

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("is a file, not a directory"), "{stderr}");
}

#[test]
fn local_mode_prints_the_tokens_it_saves_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (child, lines) = serve(dir.path());
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

    stop(child);
}

#[test]
fn a_stop_while_start_up_waits_for_redis_exits_cleanly_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let nothing_listens = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = nothing_listens.local_addr().unwrap().to_string();
    drop(nothing_listens);
    let mut child = codeq()
        .args(["serve", "--port", "0", "--data-dir"])
        .arg(dir.path())
        .env("CODEQ_STORAGE", "redis")
        .env("CODEQ_REDIS_ADDR", &addr)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines().map(Result::unwrap);
    stderr.by_ref().find(|line| line.contains("waiting for Redis")).expect("it waits for Redis");

    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();

    let status = child.wait().unwrap();
    let rest: Vec<String> = stderr.collect();
    assert!(status.success(), "a stop asked for exits 0, not by the signal: {status:?} {rest:?}");
    assert!(rest.iter().any(|line| line.contains("stopped during start-up")), "{rest:?}");
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

#[test]
fn serve_help_shows_examples_defaults_storage_values_and_env_names_but_no_client_options() {
    let output = codeq().args(["serve", "--help"]).output().unwrap();

    let help = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success());
    for expected in [
        "Examples:",
        "codeq serve --config",
        "[default: 8080]",
        "[default: ./codeq-data]",
        "[possible values: embedded, redis]",
        "[env: CODEQ_PORT, PORT]",
        "CODEQ_DATA_DIR",
        "CODEQ_<KEY>",
    ] {
        assert!(help.contains(expected), "{expected}: {help}");
    }
    for client_only in ["--base-url", "--producer-token", "--worker-token", "--profile", "--admin"]
    {
        assert!(!help.contains(client_only), "{client_only}: {help}");
    }
}

#[test]
fn serve_refuses_client_options_typed_on_its_command_line_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");

    let after = codeq().args(["serve", "--producer-token", "x", "--data-dir"]).arg(&data).output();
    let before = codeq().args(["--profile", "p", "serve", "--data-dir"]).arg(&data).output();

    for (output, flag) in [(after.unwrap(), "--producer-token"), (before.unwrap(), "--profile")] {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(&format!("serve does not take {flag}")), "{stderr}");
    }
    assert!(!data.exists(), "nothing was created");
}
