//! docs/cli.md and the README as a new user follows them: their
//! walkthrough blocks, copied verbatim into `sh`, against a local-mode
//! server; and the example handlers of examples/handlers/ run by
//! `worker start`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{Mode, Server, run, run_json};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// The first ```sh block after `after` in the file `doc` of the repository.
fn sh_block(doc: &str, after: &str) -> String {
    let text = std::fs::read_to_string(repo_root().join(doc)).unwrap();
    let after_marker = text.split_once(after).unwrap_or_else(|| panic!("{after} in {doc}")).1;
    let block = after_marker.split_once("```sh\n").unwrap().1;
    block.split_once("```").unwrap().0.to_owned()
}

fn walkthrough_block() -> String {
    sh_block("docs/cli.md", "<!-- walkthrough:")
}

/// `sh` in the repository root with the binary first on PATH, the server's
/// HOME and data directory, and nothing else of the developer's.
fn shell(server: &Server) -> Command {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_codeq")).parent().unwrap().to_path_buf();
    let inherited = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::iter::once(bin_dir).chain(std::env::split_paths(&inherited));
    let mut command = Command::new("sh");
    command
        .env_clear()
        .env("PATH", std::env::join_paths(dirs).unwrap())
        .env("HOME", server.home())
        .env("CODEQ_DATA_DIR", &server.data_dir)
        .current_dir(repo_root());
    command
}

#[test]
fn the_walkthrough_of_docs_cli_md_creates_works_and_inspects_a_task() {
    let server = Server::start_in(Mode::Local);
    let script = walkthrough_block();

    let output = run(shell(&server).args(["-eu", "-c", &script]));

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{script}\n{stdout}\n{stderr}");
    assert!(stdout.contains(r#""greeting": "Hello, Ada!""#), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.split_whitespace().eq(["GREET", "0", "0", "0", "0", "no", "-", "-", "-"])),
        "{stdout}"
    );
    assert!(stderr.contains("1 completed"), "{stderr}");
}

#[test]
fn the_curl_walkthrough_of_the_readme_creates_claims_and_completes_a_task() {
    if !has("curl") {
        eprintln!("note: curl is not installed; the README's curl block is not exercised");
        return;
    }
    let server = Server::start_in(Mode::Local);
    let script = sh_block("README.md", "## A first task with curl")
        .replace("http://127.0.0.1:8080", &server.base);
    // The block runs beside ./codeq-data, as the README says.
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(&server.data_dir, dir.path().join("codeq-data")).unwrap();

    let output = run(shell(&server).current_dir(dir.path()).args(["-eu", "-c", &script]));

    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{script}\n{stdout}");
    assert!(stdout.contains(r#""status":"IN_PROGRESS""#), "the claim: {stdout}");
    assert!(stdout.contains(r#""result":{"url":"s3://bucket/j-1.wav"}"#), "{stdout}");
    assert!(
        stdout.contains(
            r#""command":"GENERATE_MASTER","delayed":0,"dlq":0,"inProgress":0,"paused":false,"ready":0"#
        ),
        "{stdout}"
    );
}

/// Runs `handler` (under examples/handlers/) on a task with `payload`.
fn work_with(server: &Server, handler: &str, payload: &str) -> serde_json::Value {
    let mut create = server.codeq_with_tokens();
    create.args(["task", "create", "--command", "GREET", "--payload", payload, "-o", "id"]);
    let id = String::from_utf8(run(&mut create).stdout).unwrap().trim().to_owned();
    let path = repo_root().join("examples/handlers").join(handler);
    let output = run(server
        .codeq_with_tokens()
        .args(["worker", "start", "--events", "GREET", "--once", "--handler"])
        .arg(path));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    run_json(server.codeq_with_tokens().args(["task", "result", &id]))
}

fn has(program: &str) -> bool {
    Command::new(program).arg("--version").output().is_ok_and(|o| o.status.success())
}

#[test]
fn the_example_handlers_greet_and_refuse_a_payload_without_a_name() {
    let server = Server::start();
    let mut handlers = vec!["greet.sh"];
    for (handler, interpreter) in [("greet.py", "python3"), ("greet.js", "node")] {
        if has(interpreter) {
            handlers.push(handler);
        } else {
            eprintln!("note: {interpreter} is not installed; {handler} is not exercised");
        }
    }

    for handler in handlers {
        let greeted = work_with(&server, handler, r#"{"name":"Ada"}"#);
        let refused = work_with(&server, handler, "{}");

        assert_eq!(greeted["result"]["result"]["greeting"], "Hello, Ada!", "{handler}");
        assert_eq!(refused["result"]["status"], "FAILED", "{handler}");
        assert_eq!(refused["result"]["error"], "payload has no name", "{handler}");
    }
}
