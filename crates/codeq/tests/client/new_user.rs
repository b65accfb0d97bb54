//! What a new user runs into, through the real binary: local credentials,
//! `--profile`, 401 messages, connection errors, range checks, ids,
//! completions and versions.

use std::process::Command;

use crate::support::{Mode, Server, WORKER, closed_port, run, run_json};

#[test]
fn queue_inspect_works_with_only_a_worker_token() {
    let server = Server::start();

    let stats = run_json(
        server
            .codeq()
            .args(["--base-url", &server.base, "--worker-token", WORKER])
            .args(["queue", "inspect", "GREET"]),
    );

    assert_eq!(stats["command"], "GREET");
    assert_eq!(stats["ready"], 0);
}

#[test]
fn out_of_range_values_are_refused_before_anything_is_sent() {
    let server = Server::start();

    let refused = [
        vec!["task", "create", "--command", "A", "--priority", "42"],
        vec!["task", "create", "--command", "A", "--priority", "-1"],
        vec!["task", "create", "--command", "A", "--max-attempts", "0"],
        vec!["task", "create", "--command", "A", "--max-attempts", "1001"],
        vec!["task", "claim", "--commands", "A", "--wait", "31"],
        vec!["task", "claim", "--commands", "A", "--lease", "0"],
    ]
    .map(|args| run(server.codeq_with_tokens().args(&args)));
    let stats = run_json(server.codeq_with_tokens().args(["queue", "inspect", "A"]));

    for output in &refused {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("is not in"), "{stderr}");
    }
    assert!(String::from_utf8_lossy(&refused[0].stderr).contains("42 is not in 0..=9"));
    assert_eq!(stats["ready"], 0, "no task was created");
}

#[test]
fn a_profile_with_only_a_producer_token_finds_the_local_worker_token_by_localhost() {
    let server = Server::start_in(Mode::Local);
    let local: serde_json::Value =
        serde_json::from_slice(&std::fs::read(server.data_dir.join("credentials.json")).unwrap())
            .unwrap();
    let by_name = server.base.replace("127.0.0.1", "localhost");
    let producer = local["producerToken"].as_str().unwrap();
    let in_data_dir = |command: &mut Command| {
        command.env("CODEQ_DATA_DIR", &server.data_dir);
    };
    let mut init = server.codeq();
    init.args(["init", "--no-prompt", "--base-url", &by_name, "--producer-token", producer]);
    assert!(run(&mut init).status.success());

    let mut show = server.codeq();
    in_data_dir(show.args(["auth", "show"]));
    let shown = run_json(&mut show);
    let mut claim = server.codeq();
    in_data_dir(claim.args(["task", "claim", "--commands", "LOCAL"]));
    let claimed = run(&mut claim);

    assert_eq!(shown["producerToken"]["source"], "profile");
    assert_eq!(shown["workerToken"]["source"], "localCredentials");
    assert!(claimed.status.success(), "{}", String::from_utf8_lossy(&claimed.stderr));
}

#[test]
fn a_profile_that_does_not_exist_is_an_error() {
    let server = Server::start();
    run(server.codeq().args(["--profile", "dev", "init", "--no-prompt"]));

    let output = run(server.codeq().args(["--profile", "prod", "auth", "show"]));

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(r#"profile "prod" does not exist"#), "{stderr}");
    assert!(stderr.contains("(profiles: dev)"), "{stderr}");
}

#[test]
fn a_refused_token_is_named_with_where_it_came_from() {
    let server = Server::start();
    let create = ["task", "create", "--command", "A"];
    let base = ["--base-url", server.base.as_str()];
    let from_flag = run(server.codeq().args(base).args(["--producer-token", "wrong"]).args(create));
    let from_env = run(server.codeq().args(base).env("CODEQ_WORKER_TOKEN", "wrong").args([
        "task",
        "claim",
        "--commands",
        "A",
    ]));
    run(server
        .codeq()
        .args(["init", "--no-prompt", "--base-url", &server.base])
        .args(["--producer-token", "stale"]));
    let from_profile = run(server.codeq().args(create));
    let data = server.home().join("codeq-data");
    std::fs::create_dir_all(&data).unwrap();
    let stale = serde_json::json!({"baseUrl": server.base, "producerToken": "cqp_old", "workerToken": "cqw_old"});
    std::fs::write(data.join("credentials.json"), stale.to_string()).unwrap();
    let from_local = run(server.codeq().args(["task", "claim", "--commands", "A"]));

    for (output, source) in [
        (&from_flag, "the server did not accept the producer token from --producer-token"),
        (&from_env, "the server did not accept the worker token from CODEQ_WORKER_TOKEN"),
        (
            &from_profile,
            r#"the server did not accept the producer token from profile "default" of "#,
        ),
        (
            &from_local,
            "the server did not accept the worker token from ./codeq-data/credentials.json (local mode)",
        ),
    ] {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(3), "{stderr}");
        assert!(stderr.contains(source), "{stderr}");
        assert!(stderr.contains("HTTP 401 invalid_token"), "{stderr}");
    }
}

#[test]
fn a_server_that_is_not_running_gets_a_hint_instead_of_the_transport_chain() {
    let server = Server::start();
    let url = closed_port();

    let output = run(server.codeq().args(["--base-url", &url, "--producer-token", "p"]).args([
        "task",
        "create",
        "--command",
        "A",
    ]));

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with(&format!("codeq: cannot connect to {url} (")), "{stderr}");
    assert!(stderr.contains(&format!("hint: is `codeq serve` running at {url}?")), "{stderr}");
    assert!(!stderr.contains("error sending request"), "{stderr}");
}

#[test]
fn a_malformed_task_id_is_refused_as_such() {
    let server = Server::start();

    let get = run(server.codeq_with_tokens().args(["task", "get", "not-a-uuid"]));
    let result = run(server.codeq_with_tokens().args(["task", "result", "42"]));

    for (output, id) in [(get, "not-a-uuid"), (result, "42")] {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(&format!("task id {id:?} is malformed")), "{stderr}");
    }
}

#[test]
fn a_data_dir_that_is_a_file_gets_a_clear_error() {
    let server = Server::start();
    let file = server.home().join("codeq-data");
    std::fs::write(&file, "").unwrap();

    let output = run(server.codeq().args(["task", "create", "--command", "A"]));

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("data dir ./codeq-data is not a directory"), "{stderr}");
}
