//! What a new user runs into, through the real binary: local credentials,
//! `--profile`, 401 messages, connection errors, range checks, ids,
//! completions and versions.

use crate::support::{Server, WORKER, run_json};

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
