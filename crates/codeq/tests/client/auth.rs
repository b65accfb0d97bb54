//! `init` and `auth`: the profile file, masking, precedence, local mode,
//! and the configuration exit code.

use std::process::Command;

use crate::support::{Mode, PRODUCER, Server, WORKER, run, run_json};

/// A well-formed id no task has.
const UNKNOWN_ID: &str = "0196a3c2-5f1e-7d2a-9b3c-4e5f6a7b8c9d";

#[test]
fn auth_set_stores_tokens_that_show_masks_and_clear_removes() {
    let server = Server::start();

    let set = run(server.codeq().args(["auth", "set", "--producer", PRODUCER, "--worker", WORKER]));
    let shown = run_json(server.codeq().args(["auth", "show"]));
    run(server.codeq().args(["auth", "clear", "--worker"]));
    let after_clear = run_json(server.codeq().args(["auth", "show"]));

    assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
    let printed = shown.to_string();
    assert!(!printed.contains(PRODUCER) && !printed.contains(WORKER), "{printed}");
    assert_eq!(shown["producerToken"]["token"], "t-pr****");
    assert_eq!(shown["producerToken"]["source"], "profile");
    assert_eq!(shown["profile"], "default");
    assert_eq!(after_clear["workerToken"], serde_json::Value::Null);
    assert_eq!(after_clear["producerToken"]["token"], "t-pr****");
}

#[test]
fn init_without_prompt_writes_a_profile_that_later_commands_use() {
    let server = Server::start();

    let init = run(server.codeq().args(["--profile", "local", "init", "--no-prompt"]).args([
        "--base-url",
        &server.base,
        "--producer-token",
        PRODUCER,
    ]));
    let created = run_json(server.codeq().args(["task", "create", "--command", "A"]));

    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    let file = std::fs::read_to_string(server.home().join(".codeq/config.yaml")).unwrap();
    assert!(file.contains("currentProfile: local"), "{file}");
    assert_eq!(created["command"], "A");
    assert_eq!(created["status"], "PENDING");
}

#[test]
fn environment_overrides_the_profile() {
    let server = Server::start();
    run(server.codeq().args(["init", "--no-prompt", "--base-url", "http://127.0.0.1:9"]));

    let shown = run_json(
        server
            .codeq()
            .env("CODEQ_BASE_URL", &server.base)
            .env("CODEQ_PRODUCER_TOKEN", PRODUCER)
            .args(["auth", "show"]),
    );

    assert_eq!(shown["baseUrl"], server.base.as_str());
    assert_eq!(shown["producerToken"]["source"], "env");
}

#[test]
fn without_a_token_the_local_mode_servers_credentials_are_used() {
    let server = Server::start_in(Mode::Local);

    let created = run_json(server.codeq().env("CODEQ_DATA_DIR", &server.data_dir).args([
        "task",
        "create",
        "--command",
        "LOCAL",
        "--payload",
        r#"{"n":1}"#,
    ]));
    let elsewhere = run(server.codeq().env("CODEQ_DATA_DIR", &server.data_dir).args([
        "--base-url",
        "http://127.0.0.1:9",
        "task",
        "create",
        "--command",
        "LOCAL",
    ]));

    assert_eq!(created["payload"], r#"{"n":1}"#);
    assert_eq!(elsewhere.status.code(), Some(2), "no token for another server");
}

#[test]
fn a_broken_config_file_exits_2_naming_the_file() {
    let server = Server::start();
    let dir = server.home().join(".codeq");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.yaml"), "profiles: [not, a, map]\n").unwrap();

    let output = run(server.codeq().args(["task", "get", UNKNOWN_ID]));

    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("config.yaml"));
}

/// Runs `command` (an `init`) with `answers` on stdin, the prompts on stderr.
fn answering(command: &mut Command, answers: &str) -> std::process::Output {
    use std::io::Write as _;
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(answers.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn init_asks_for_what_the_flags_did_not_give() {
    let server = Server::start();

    // URL, producer token, and an empty answer keeping no worker token.
    let answers = format!("{}\n{PRODUCER}\n\n", server.base);
    let output = answering(server.codeq().arg("init"), &answers);
    let shown = run_json(server.codeq().args(["auth", "show"]));

    let prompts = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{prompts}");
    assert!(prompts.contains("Server URL [http://127.0.0.1:8080]"), "{prompts}");
    assert_eq!(shown["baseUrl"], server.base.as_str());
    assert_eq!(shown["producerToken"]["source"], "profile");
    assert_eq!(shown["workerToken"], serde_json::Value::Null);
}

#[test]
fn a_broken_credentials_file_is_reported_when_its_tokens_are_needed() {
    let server = Server::start();
    let data = server.home().join("codeq-data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("credentials.json"), "{not json").unwrap();

    let needed = run(server.codeq().args(["task", "get", UNKNOWN_ID]));
    let not_needed = run(server.codeq_with_tokens().args(["task", "get", UNKNOWN_ID]));

    assert_eq!(needed.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&needed.stderr).contains("credentials.json"));
    assert_eq!(not_needed.status.code(), Some(4), "tokens given: the file is not read");
}

#[test]
fn codeq_admin_accepts_the_usual_spellings_of_true_and_false() {
    let server = Server::start();

    for (value, expected) in
        [("1", true), ("true", true), ("yes", true), ("0", false), ("off", false)]
    {
        let shown = run_json(server.codeq().env("CODEQ_ADMIN", value).args(["auth", "show"]));

        assert_eq!(shown["admin"], expected, "CODEQ_ADMIN={value}");
    }
}

#[test]
fn init_offers_and_keeps_the_local_mode_servers_url_not_the_default() {
    let server = Server::start_in(Mode::Local);
    let beside_it = || {
        let mut command = server.codeq();
        command.env("CODEQ_DATA_DIR", &server.data_dir);
        command
    };

    let prompted = answering(beside_it().arg("init"), "\n\n\n");
    let listed = run(beside_it().args(["queue", "list"]));
    std::fs::remove_file(server.home().join(".codeq/config.yaml")).unwrap();
    let unprompted = run(beside_it().args(["init", "--no-prompt"]));
    let shown = run_json(beside_it().args(["auth", "show"]));

    let prompts = String::from_utf8_lossy(&prompted.stderr);
    assert!(prompted.status.success(), "{prompts}");
    assert!(prompts.contains(&format!("Server URL [{}]", server.base)), "{prompts}");
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    assert!(unprompted.status.success(), "{}", String::from_utf8_lossy(&unprompted.stderr));
    assert_eq!(shown["baseUrl"], server.base.as_str());
    assert_eq!(shown["producerToken"]["source"], "localCredentials");
}

#[test]
fn the_local_mode_servers_url_is_used_however_many_tokens_are_configured() {
    let server = Server::start_in(Mode::Local);
    let local: serde_json::Value =
        serde_json::from_slice(&std::fs::read(server.data_dir.join("credentials.json")).unwrap())
            .unwrap();
    let token = |name: &str| local[name].as_str().unwrap().to_owned();
    let create = |env: &[(&str, String)]| {
        let mut command = server.codeq();
        command.env("CODEQ_DATA_DIR", &server.data_dir).envs(env.iter().cloned());
        run(command.args(["task", "create", "--command", "A", "-o", "id"]))
    };

    let producer = ("CODEQ_PRODUCER_TOKEN", token("producerToken"));
    let worker = ("CODEQ_WORKER_TOKEN", token("workerToken"));
    let one = create(std::slice::from_ref(&producer));
    let both = create(&[producer, worker]);

    assert!(one.status.success(), "{}", String::from_utf8_lossy(&one.stderr));
    assert!(both.status.success(), "{}", String::from_utf8_lossy(&both.stderr));
}

#[test]
fn values_later_commands_could_not_use_are_refused_when_they_are_set() {
    let server = Server::start();

    let set = run(server.codeq().args(["auth", "set", "--worker", "bad token"]));
    let init = run(server.codeq().args(["init", "--no-prompt", "--base-url", "localhost:18732"]));
    let answered = answering(server.codeq().arg("init"), &format!("{}\ncqp bad\n\n", server.base));

    for (output, message) in [
        (set, "the worker token from --worker holds a character a request header cannot carry"),
        (init, r#"invalid base URL "localhost:18732": the scheme must be http or https"#),
        (answered, r#"the producer token for profile "default" holds a character"#),
    ] {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(message), "{stderr}");
    }
    assert!(!server.home().join(".codeq/config.yaml").exists(), "nothing was written");
}
