//! `task` and `queue`: JSON and table output, and the exit codes of API
//! errors.

use crate::support::{Server, run, run_json};

#[test]
fn a_created_task_can_be_read_claimed_and_counted() {
    let server = Server::start();

    let created = run_json(server.codeq_with_tokens().args([
        "task",
        "create",
        "--event",
        "RENDER",
        "--payload",
        r#"{"jobId":"j-1"}"#,
        "--priority",
        "3",
    ]));
    let id = created["id"].as_str().unwrap();
    let fetched = run_json(server.codeq_with_tokens().args(["task", "get", id]));
    let stats = run_json(server.codeq_with_tokens().args(["queue", "inspect", "RENDER"]));
    let claimed = run_json(server.codeq_with_tokens().args([
        "task",
        "claim",
        "--commands",
        "RENDER",
        "--lease",
        "60",
    ]));
    let listed = run(server.codeq_with_tokens().args(["queue", "list", "--output", "table"]));

    assert_eq!(fetched["id"], id);
    assert_eq!(fetched["priority"], 3);
    assert_eq!(stats["ready"], 1);
    assert_eq!(claimed["id"], id);
    assert_eq!(claimed["status"], "IN_PROGRESS");
    let table = String::from_utf8(listed.stdout).unwrap();
    assert!(table.starts_with("COMMAND"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().eq(["RENDER", "0", "0", "1", "0", "no", "-", "-", "-"])),
        "{table}"
    );
}

#[test]
fn table_output_is_for_people() {
    let server = Server::start();

    let output = run(server.codeq_with_tokens().args([
        "task",
        "create",
        "--command",
        "A",
        "--output",
        "table",
    ]));

    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.lines().any(|l| l.starts_with("status") && l.ends_with("PENDING")), "{text}");
}

#[test]
fn an_empty_claim_prints_nothing_and_succeeds() {
    let server = Server::start();

    let output = run(server.codeq_with_tokens().args(["task", "claim", "--commands", "NONE"]));

    assert!(output.status.success());
    assert!(output.stdout.is_empty());
}

#[test]
fn a_refused_token_exits_3() {
    let server = Server::start();

    let output = run(server
        .codeq()
        .args(["--base-url", &server.base, "--producer-token", "nope"])
        .args(["task", "create", "--command", "A"]));

    assert_eq!(output.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&output.stderr).contains("401"));
}

#[test]
fn an_unknown_task_exits_4() {
    let server = Server::start();

    let unknown = "0196a3c2-5f1e-7d2a-9b3c-4e5f6a7b8c9d";
    let output = run(server.codeq_with_tokens().args(["task", "get", unknown]));

    assert_eq!(output.status.code(), Some(4));
}

#[test]
fn a_missing_token_or_bad_payload_exits_2() {
    let server = Server::start();

    let id = "0196a3c2-5f1e-7d2a-9b3c-4e5f6a7b8c9d";
    let no_token = run(server.codeq().args(["--base-url", &server.base, "task", "get", id]));
    let bad_payload = run(server.codeq_with_tokens().args([
        "task",
        "create",
        "--command",
        "A",
        "--payload",
        "{",
    ]));

    assert_eq!(no_token.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_token.stderr).contains("no producer token"));
    assert_eq!(bad_payload.status.code(), Some(2));
}

#[test]
fn every_command_has_examples_in_its_help() {
    let server = Server::start();
    let mut leaves = Vec::new();
    commands_of(&codeq::cli::Cli::command_line(), Vec::new(), &mut leaves);
    assert!(
        leaves.len() >= 28 && leaves.contains(&vec!["worker".into(), "start".into()]),
        "{leaves:?}"
    );
    for command in &leaves {
        let output = run(server.codeq().args(command).arg("--help"));
        let help = String::from_utf8(output.stdout).unwrap();
        assert!(help.contains("Examples:"), "{command:?}: {help}");
    }
}

/// The paths of the commands with no subcommand below `command` (`help` aside).
fn commands_of(command: &clap::Command, path: Vec<String>, out: &mut Vec<Vec<String>>) {
    let subcommands: Vec<&clap::Command> =
        command.get_subcommands().filter(|sub| sub.get_name() != "help").collect();
    if subcommands.is_empty() && !path.is_empty() {
        out.push(path);
        return;
    }
    for sub in subcommands {
        let mut path = path.clone();
        path.push(sub.get_name().to_owned());
        commands_of(sub, path, out);
    }
}

#[test]
fn a_repeated_idempotency_key_returns_the_same_task_and_says_so() {
    let server = Server::start();
    let create = || {
        let mut command = server.codeq_with_tokens();
        command.args(["task", "create", "--command", "A", "--idempotency-key", "k-1", "-o", "id"]);
        run(&mut command)
    };

    let first = create();
    let repeat = create();

    assert_eq!(first.stdout, repeat.stdout);
    assert!(String::from_utf8_lossy(&repeat.stderr).contains("nothing was created"));
    assert!(first.stderr.is_empty());
}

#[test]
fn a_reader_that_goes_away_ends_the_command_quietly_with_its_own_code() {
    let server = Server::start();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let created =
            run_json(server.codeq_with_tokens().args(["task", "create", "--event", "PIPE"]));
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    // `codeq … | true`: the reader is gone before anything is written.
    let with_stdout_closed = |args: &[&str]| {
        let mut command = server
            .codeq_with_tokens()
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(command.stdout.take());
        command.wait_with_output().unwrap()
    };
    let listing =
        with_stdout_closed(&["task", "list", "--all", "--limit", "1", "--command", "PIPE"]);
    let stderr = String::from_utf8_lossy(&listing.stderr);
    assert!(listing.status.success(), "{:?}: {stderr}", listing.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
    // A batch with a refused id still says so by its exit code.
    let missing = "01890000-0000-7000-8000-000000000000";
    let cancel = with_stdout_closed(&["task", "cancel", &ids[0], missing]);
    assert_eq!(cancel.status.code(), Some(4), "{}", String::from_utf8_lossy(&cancel.stderr));
    // Its errors too: `codeq task get <missing> 2>&1 | true`.
    let mut get = server
        .codeq_with_tokens()
        .args(["task", "get", missing])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop((get.stdout.take(), get.stderr.take()));
    assert_eq!(get.wait().unwrap().code(), Some(4), "not a panic (101)");
}
