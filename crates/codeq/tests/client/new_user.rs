//! What a new user runs into, through the real binary: local credentials,
//! `--profile`, 401 messages, connection errors, range checks, ids,
//! completions and versions.

use crate::support::{Server, WORKER, run, run_json};

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
