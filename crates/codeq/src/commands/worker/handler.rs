//! The handler protocol of `codeq worker start` (docs/cli.md): the task JSON
//! on stdin; on stdout `{"status":"COMPLETED","result":{…}}` or
//! `{"status":"FAILED","error":"…"}`; a non-zero exit or any other output
//! asks for a retry (nack) with the tail of stderr as the reason; so do
//! printing more than 16 MiB on stdout and running past `--timeout`,
//! which stop the handler with its process group. While the
//! handler runs, each line of its stderr is copied to the runner's,
//! prefixed with the task id.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use codeq_client::{ArtifactUpload, Outcome, Payload, SubmitResult, Task};
use serde::Deserialize;
use tokio::io::{
    AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWriteExt as _, BufReader,
};
use tokio::process::Command;

use crate::exit::ConfigError;

/// How much of the handler's stderr becomes the nack reason.
const STDERR_TAIL_BYTES: usize = 2000;
/// The longest stderr line relayed at once (a longer one is split).
const MAX_LINE_BYTES: u64 = 8192;
/// How much of unexpected stdout the nack reason shows.
const STDOUT_START_CHARS: usize = 200;
/// The most of a handler's stdout read: above the largest result a server
/// takes with default limits (about 13.4 MiB). A handler printing more is
/// stopped and its run is a nack.
const STDOUT_MAX_BYTES: usize = 16 * 1024 * 1024;
/// How much of a script the kernel reads for its `#!` line.
const SHEBANG_MAX_BYTES: u64 = 256;
/// How long a killed handler's pipes may take to close.
const KILLED_GRACE: Duration = Duration::from_secs(5);

/// The program `--handler` names, checked before anything is claimed: a
/// typo would otherwise nack, and in the end dead-letter, every task.
/// A path with a `/` must be an executable file; a bare name is looked up
/// in the current directory first (as `./name`, which is what people
/// mean by `--handler render.sh`), then on `PATH`. The file found must be
/// one the kernel runs ([`unrunnable`]).
pub fn resolve(handler: &Path) -> Result<PathBuf, ConfigError> {
    let found = find(handler)?;
    match unrunnable(&found) {
        Some(why) => Err(ConfigError::new(format!(
            "--handler {}: the system cannot run it: {why}",
            handler.display()
        ))),
        None => Ok(found),
    }
}

/// The executable file `handler` names (see [`resolve`]).
fn find(handler: &Path) -> Result<PathBuf, ConfigError> {
    let not_found = || {
        ConfigError::new(format!(
            "--handler {}: no such executable file (check the path and its execute bit)",
            handler.display()
        ))
    };
    if handler.components().count() > 1 || handler.is_absolute() {
        return is_executable(handler).then(|| handler.to_path_buf()).ok_or_else(not_found);
    }
    let here = Path::new(".").join(handler);
    if here.is_file() {
        return is_executable(&here).then_some(here).ok_or_else(not_found);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(handler))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(not_found)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Why the kernel would refuse to start the executable file at `path`
/// (`Exec format error`, or a missing interpreter), judged by its first
/// bytes: it runs an ELF binary, or a script whose `#!` line names an
/// executable interpreter. A file that cannot be read passes: the kernel
/// may run an execute-only binary.
fn unrunnable(path: &Path) -> Option<String> {
    use std::io::Read as _;
    let mut start = Vec::new();
    let file = std::fs::File::open(path).ok()?;
    file.take(SHEBANG_MAX_BYTES).read_to_end(&mut start).ok()?;
    if start.starts_with(b"\x7fELF") {
        return None;
    }
    let Some(line) = start.strip_prefix(b"#!") else {
        return Some(
            "it starts with neither a #! line nor an ELF header: give it a first line naming its \
             interpreter, such as #!/bin/sh or #!/usr/bin/env python3"
                .to_owned(),
        );
    };
    let line = String::from_utf8_lossy(line.split(|&byte| byte == b'\n').next().unwrap_or(line));
    if line.ends_with('\r') {
        return Some(
            "its #! line ends with a carriage return (Windows line endings), which the system \
             takes as part of the interpreter's name: convert the file (e.g. dos2unix)"
                .to_owned(),
        );
    }
    // Split as the kernel splits it: at spaces and tabs only.
    match line.split([' ', '\t']).find(|part| !part.is_empty()) {
        Some(interpreter) if is_executable(Path::new(interpreter)) => None,
        Some(interpreter) => {
            Some(format!("its #! line names {interpreter}, which is not an executable file"))
        }
        None => Some("its #! line names no interpreter".to_owned()),
    }
}

/// What a handler may print on stdout. A plain struct, not an enum
/// tagged by `status`: serde buffers a tagged enum's fields as values,
/// and the result is kept as the handler wrote it (its big numbers, key
/// order and repeated keys).
#[derive(Debug, Deserialize)]
struct Printed {
    status: PrintedStatus,
    #[serde(default)]
    result: Option<Payload>,
    /// `null` as absent: handlers often print every key.
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    artifacts: Option<serde_json::Value>,
}

/// The outcomes a handler may print.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum PrintedStatus {
    Completed,
    Failed,
}

/// Runs the program at `path` on `task` and turns how it ended into an
/// [`Outcome`]. A program still running after `limit` is stopped with its
/// process group, and its task nacked. Dropping the future kills the
/// program too.
pub async fn run(path: &Path, task: Task, limit: Option<Duration>) -> Outcome {
    let input = match serde_json::to_vec(&task) {
        Ok(input) => input,
        Err(err) => return Outcome::Retry(format!("could not encode the task: {err}")),
    };
    let mut command = Command::new(path);
    command
        .env("CODEQ_TASK_ID", &task.id)
        .env("CODEQ_TASK_COMMAND", &task.command)
        .env("CODEQ_TASK_ATTEMPT", task.attempts.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Its own process group: a Ctrl-C in the terminal reaches the
        // runner only, which then lets the handler finish (docs/cli.md).
        .process_group(0);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(err) => {
            return Outcome::Retry(format!("handler {} did not start: {err}", path.display()));
        }
    };
    let group = child.id().map(GroupKill);
    // Written from a task so that a handler that prints before reading
    // everything cannot deadlock against a full stdin pipe.
    if let Some(mut stdin) = child.stdin.take() {
        tokio::spawn(async move {
            // A handler may ignore its input and exit: a broken pipe is fine.
            let _ = stdin.write_all(&input).await;
        });
    }
    let relayed = relay_stderr(child.stderr.take(), &task.id);
    let stdout = child.stdout.take();
    let printed = async {
        let printed = read_stdout(stdout).await;
        // A handler that prints more than a result can be is stopped (its
        // pipe is closed too: it cannot block on it).
        if !matches!(printed, Stdout::Kept(_))
            && let Some(group) = &group
        {
            group.kill();
        }
        printed
    };
    let ended = {
        let ended = async {
            let (printed, stderr_tail) = tokio::join!(printed, relayed);
            (printed, stderr_tail, child.wait().await)
        };
        let mut ended = std::pin::pin!(ended);
        match limit {
            None => Ok(ended.await),
            Some(limit) => match tokio::time::timeout(limit, ended.as_mut()).await {
                Ok(ended) => Ok(ended),
                Err(_) => {
                    if let Some(group) = &group {
                        group.kill();
                    }
                    Err((limit, tail_after_kill(ended).await))
                }
            },
        }
    };
    std::mem::forget(group);
    let (printed, stderr_tail, finished) = match ended {
        Ok(ended) => ended,
        Err((limit, stderr_tail)) => {
            let what = format!("handler ran longer than {}s (--timeout): stopped", limit.as_secs());
            return Outcome::Retry(with_tail(&what, &stderr_tail));
        }
    };
    let status = match finished {
        Ok(status) => status,
        Err(err) => return Outcome::Retry(format!("handler {} failed: {err}", path.display())),
    };
    match printed {
        Stdout::Kept(stdout) => interpret(status, &stdout, &stderr_tail),
        Stdout::TooLong => Outcome::Retry(with_tail(
            &format!("handler printed more than {STDOUT_MAX_BYTES} bytes on stdout: stopped"),
            &stderr_tail,
        )),
        Stdout::Unreadable(err) => Outcome::Retry(with_tail(
            &format!("cannot read the handler's stdout: {err}"),
            &stderr_tail,
        )),
    }
}

/// The stderr tail of a run whose process group was just killed: its
/// pipes close as its processes die. A process that left the group (a
/// daemon) may hold them open: past [`KILLED_GRACE`], no tail.
async fn tail_after_kill<T>(
    ended: std::pin::Pin<&mut impl std::future::Future<Output = (Stdout, Vec<u8>, T)>>,
) -> Vec<u8> {
    tokio::time::timeout(KILLED_GRACE, ended).await.map(|(_, tail, _)| tail).unwrap_or_default()
}

/// A handler's stdout, if it could be read whole within
/// [`STDOUT_MAX_BYTES`].
enum Stdout {
    Kept(Vec<u8>),
    TooLong,
    Unreadable(std::io::Error),
}

/// Reads `stdout` to its end, or until it passes [`STDOUT_MAX_BYTES`].
async fn read_stdout(stdout: Option<impl AsyncRead + Unpin>) -> Stdout {
    let Some(mut stdout) = stdout else { return Stdout::Kept(Vec::new()) };
    let (mut kept, mut chunk) = (Vec::new(), vec![0; 64 * 1024]);
    loop {
        let n = match stdout.read(&mut chunk).await {
            Ok(0) => return Stdout::Kept(kept),
            Ok(n) => n,
            Err(err) => return Stdout::Unreadable(err),
        };
        if kept.len() + n > STDOUT_MAX_BYTES {
            return Stdout::TooLong;
        }
        // Grown by doubling, but never past the bound.
        let room = (kept.len() + n).max(kept.capacity() * 2).min(STDOUT_MAX_BYTES);
        kept.reserve_exact(room - kept.len());
        kept.extend_from_slice(&chunk[..n]);
    }
}

/// Copies `stderr` to ours line by line as `[<task id>] <line>` until it
/// closes, and returns its last [`STDERR_TAIL_BYTES`] (or a little more).
async fn relay_stderr(stderr: Option<impl AsyncRead + Unpin>, task_id: &str) -> Vec<u8> {
    let Some(stderr) = stderr else { return Vec::new() };
    let mut reader = BufReader::new(stderr);
    let (mut tail, mut line) = (Vec::new(), Vec::new());
    loop {
        line.clear();
        match (&mut reader).take(MAX_LINE_BYTES).read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return tail,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        errln!("[{task_id}] {}", text.trim_end_matches(['\n', '\r']));
        tail.extend_from_slice(&line);
        if tail.len() > 2 * STDERR_TAIL_BYTES {
            tail.drain(..tail.len() - STDERR_TAIL_BYTES);
        }
    }
}

/// Kills a handler's whole process group when dropped before the handler
/// finished (the task was abandoned or cancelled), or when told to (a
/// runaway or overdue handler): `kill_on_drop` alone would reach the
/// handler but not the programs it started, e.g. a shell script's `sleep`.
/// Sent with `kill(2)` itself, not the `kill` program, which a slim
/// container image may not have.
struct GroupKill(u32);

impl GroupKill {
    fn kill(&self) {
        let group = i32::try_from(self.0).ok().and_then(rustix::process::Pid::from_raw);
        if let Some(group) = group {
            // The group may be gone already: nothing is left to stop then.
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
    }
}

impl Drop for GroupKill {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The outcome of a finished handler run.
fn interpret(status: ExitStatus, stdout: &[u8], stderr: &[u8]) -> Outcome {
    if !status.success() {
        return Outcome::Retry(with_tail(&format!("handler {status}"), stderr));
    }
    let (outcome, artifacts) = match parse(stdout) {
        Some(Printed { status: PrintedStatus::Completed, result, artifacts, .. }) => {
            let result = result.unwrap_or_else(|| serde_json::json!({}).into());
            if !result.as_json().starts_with('{') {
                let what = "handler printed a result that is not a JSON object";
                return Outcome::Retry(with_tail(what, stderr));
            }
            (Outcome::Submit(SubmitResult::completed(0, result)), artifacts)
        }
        Some(Printed { status: PrintedStatus::Failed, error, artifacts, .. }) => {
            match error.filter(|error| !error.trim().is_empty()) {
                Some(error) => (Outcome::Failed(error), artifacts),
                None => {
                    let error = "handler reported FAILED without an error";
                    (Outcome::Failed(error.into()), artifacts)
                }
            }
        }
        None => {
            let what = format!(
                "handler output is not {{\"status\":\"COMPLETED\"|\"FAILED\",…}}: {}",
                describe_printed(stdout)
            );
            return Outcome::Retry(with_tail(&what, stderr));
        }
    };
    // Read on their own, so that a bad item is named as such.
    match serde_json::from_value::<Option<Vec<ArtifactUpload>>>(artifacts.unwrap_or_default()) {
        Ok(artifacts) => with_artifacts(outcome, artifacts.unwrap_or_default()),
        Err(error) => Outcome::Retry(with_tail(
            &format!(
                "handler printed artifacts that are not [{{\"name\",\"url\"|\"contentBase64\",…}}]: {error}"
            ),
            stderr,
        )),
    }
}

/// A result with the artifacts the handler printed, when it printed any.
fn with_artifacts(outcome: Outcome, artifacts: Vec<ArtifactUpload>) -> Outcome {
    if artifacts.is_empty() {
        return outcome;
    }
    // The worker sets the delivery's attempt.
    let body = match outcome {
        Outcome::Submit(body) => body,
        Outcome::Failed(error) => SubmitResult::failed(0, error),
        other => return other,
    };
    Outcome::Submit(SubmitResult { artifacts, ..body })
}

/// `it printed "…"` with the start of `stdout`, quoted on one line.
fn describe_printed(stdout: &[u8]) -> String {
    let text = String::from_utf8_lossy(stdout);
    let text = text.trim();
    if text.is_empty() {
        return "it printed nothing".to_owned();
    }
    let start: String = text.chars().take(STDOUT_START_CHARS).collect();
    let more = if start.len() < text.len() { " (cut)" } else { "" };
    format!("it printed {start:?}{more}")
}

/// The whole of stdout as the result JSON, else its last non-empty line
/// (so a handler may log to stdout before the result).
fn parse(stdout: &[u8]) -> Option<Printed> {
    let text = String::from_utf8_lossy(stdout);
    serde_json::from_str(text.trim()).ok().or_else(|| {
        let last = text.lines().rev().find(|l| !l.trim().is_empty())?;
        serde_json::from_str(last.trim()).ok()
    })
}

/// `what`, then the last [`STDERR_TAIL_BYTES`] of stderr if there is any.
fn with_tail(what: &str, stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim();
    let mut start = text.len().saturating_sub(STDERR_TAIL_BYTES);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    match &text[start..] {
        "" => what.to_owned(),
        tail => format!("{what}: {tail}"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::os::unix::process::ExitStatusExt as _;

    use codeq_client::ResultStatus;
    use serde_json::json;

    use super::*;

    fn exited(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    #[test]
    fn handlers_must_be_executable_files() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("h.sh");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();

        let not_executable = resolve(&script);
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let executable = resolve(&script);

        assert!(not_executable.is_err());
        assert_eq!(executable.unwrap(), script);
        assert!(resolve(&dir.path().join("missing.sh")).is_err());
        assert!(resolve(Path::new("sh")).unwrap().ends_with("sh"), "found on PATH");
    }

    #[test]
    fn a_completed_result_is_submitted_as_the_handler_wrote_it() {
        let out = br#"{"status":"COMPLETED","result":{"z":1,"big":123456789012345678901234567890,"k":1,"k":2}}"#;

        let Outcome::Submit(body) = interpret(exited(0), out, b"") else { panic!("not a Submit") };
        assert_eq!(body.status, ResultStatus::Completed);
        let kept = r#"{"z":1,"big":123456789012345678901234567890,"k":1,"k":2}"#;
        assert_eq!(body.result.as_ref().map(Payload::as_json), Some(kept));
    }

    #[test]
    fn artifacts_go_with_the_result_and_a_bad_list_is_named() {
        let none = br#"{"status":"COMPLETED","result":{},"artifacts":null}"#;
        assert_eq!(
            interpret(exited(0), none, b""),
            Outcome::Submit(SubmitResult::completed(0, json!({})))
        );
        let linked =
            br#"{"status":"FAILED","error":"e","artifacts":[{"name":"a","url":"https://x/a"}]}"#;
        let Outcome::Submit(body) = interpret(exited(0), linked, b"") else {
            panic!("not a Submit")
        };
        assert_eq!((body.error.as_deref(), body.artifacts.len()), (Some("e"), 1));
        let nameless = br#"{"status":"COMPLETED","artifacts":[{"url":"https://x/a"}]}"#;
        let Outcome::Retry(reason) = interpret(exited(0), nameless, b"") else {
            panic!("a nameless artifact was accepted")
        };
        assert!(reason.starts_with("handler printed artifacts that are not"), "{reason}");
    }

    #[test]
    fn null_fields_count_as_absent() {
        let completed =
            br#"{"status":"COMPLETED","result":{"ok":1},"error":null,"artifacts":null}"#;
        let failed = br#"{"status":"FAILED","result":null,"error":null}"#;

        let Outcome::Submit(body) = interpret(exited(0), completed, b"") else {
            panic!("not a Submit")
        };
        assert_eq!(body.result.as_ref().map(Payload::as_json), Some(r#"{"ok":1}"#));
        let reported = Outcome::Failed("handler reported FAILED without an error".into());
        assert_eq!(interpret(exited(0), failed, b""), reported);
    }

    #[test]
    fn log_lines_before_the_result_are_ignored() {
        let out = b"working...\n{\"status\":\"FAILED\",\"error\":\"bad input\"}\n";

        assert_eq!(interpret(exited(0), out, b""), Outcome::Failed("bad input".into()));
    }

    #[test]
    fn a_non_zero_exit_retries_with_the_stderr_tail() {
        let outcome =
            interpret(exited(3), b"{\"status\":\"COMPLETED\"}", b"line 1\ndisk on fire\n");

        let Outcome::Retry(reason) = outcome else { panic!("expected a retry") };
        assert!(reason.contains("exit status: 3"), "{reason}");
        assert!(reason.ends_with("line 1\ndisk on fire"), "{reason}");
    }

    #[test]
    fn output_that_is_not_a_result_retries_showing_its_start() {
        let Outcome::Retry(reason) = interpret(exited(0), b"hello\nworld\n", b"") else {
            panic!("expected a retry")
        };
        let long = describe_printed("x".repeat(500).as_bytes());

        assert!(reason.ends_with(r#"it printed "hello\nworld""#), "{reason}");
        assert_eq!(describe_printed(b" \n"), "it printed nothing");
        assert!(long.ends_with(&format!("{}\" (cut)", "x".repeat(10))), "{long}");
        assert!(long.len() < 250, "{long}");
        assert!(matches!(
            interpret(exited(0), br#"{"status":"COMPLETED","result":[1]}"#, b""),
            Outcome::Retry(_)
        ));
    }

    #[tokio::test]
    async fn relayed_stderr_keeps_a_bounded_tail_ending_with_the_last_line() {
        let stderr: String = (0..2000).map(|n| format!("line {n}\n")).collect();

        let tail = relay_stderr(Some(stderr.as_bytes()), "t-1").await;

        assert!(tail.len() <= 2 * STDERR_TAIL_BYTES, "{}", tail.len());
        assert!(tail.ends_with(b"line 1999\n"));
    }

    #[test]
    fn the_stderr_tail_is_bounded_and_cut_on_a_char_boundary() {
        let stderr = "é".repeat(STDERR_TAIL_BYTES);

        let reason = with_tail("x", stderr.as_bytes());

        assert!(reason.len() <= STDERR_TAIL_BYTES + 3);
        assert!(reason.ends_with('é'));
    }
}
