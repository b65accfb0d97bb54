//! `codeq task create|get|result|claim|cancel|list|cleanup`.

use codeq_client::{ClaimRequest, Client, CreateTask, Payload, TaskQuery, TaskStatus, TokenKind};

use super::{call, check_task_id};
use crate::cli::{
    GlobalArgs, TaskCancelArgs, TaskClaimArgs, TaskCleanupArgs, TaskCommand, TaskCreateArgs,
    TaskListArgs,
};
use crate::config::Resolved;
use crate::exit::{ConfigError, PartlyRefused};
use crate::output::{self, Listing};

/// Most ids one batch cancel takes; more are sent in several.
const CANCEL_BATCH: usize = 100;

/// Runs one `task` subcommand.
pub fn run(global: &GlobalArgs, command: &TaskCommand) -> anyhow::Result<()> {
    if let TaskCommand::Get(args) | TaskCommand::Result(args) = command {
        check_task_id(&args.id)?;
    }
    if let TaskCommand::Cancel(args) = command {
        args.ids.iter().try_for_each(|id| check_task_id(id))?;
    }
    let resolved = Resolved::load(global)?;
    let client = resolved.client()?;
    let reader = resolved.reader_token();
    match command {
        TaskCommand::Create(args) => {
            let body = create_body(args)?;
            let created = call(&resolved, TokenKind::Producer, client.create_task(&body))?;
            if created.replayed {
                errln!("codeq: the idempotency key matched an existing task; nothing was created");
            }
            output::task(args.output.output, &created.task)
        }
        TaskCommand::Get(args) => {
            let task = call(&resolved, reader, client.get_task(&args.id))?;
            output::task(args.output.output, &task)
        }
        TaskCommand::Result(args) => {
            let answer = match super::block_on(client.get_result(&args.id))? {
                Ok(answer) => answer,
                Err(err) => return Err(no_result(&resolved, &client, &args.id, err)),
            };
            output::task_with_result(args.output.output, &answer)
        }
        TaskCommand::Claim(args) => {
            match call(&resolved, TokenKind::Worker, client.claim(&claim_body(args)))? {
                Some(task) => output::task(args.output.output, &task),
                None => {
                    errln!("codeq: no task available");
                    Ok(())
                }
            }
        }
        TaskCommand::Cancel(args) => cancel(&resolved, &client, args),
        TaskCommand::List(args) => list(&resolved, &client, args),
        TaskCommand::Cleanup(args) => cleanup(&resolved, &client, args),
    }
}

/// A result the server does not have: for a task that exists, says what
/// state it is in (the server's 404 does not tell a task still running
/// from no task at all).
fn no_result(
    resolved: &Resolved,
    client: &Client,
    id: &str,
    err: codeq_client::Error,
) -> anyhow::Error {
    let reader = resolved.reader_token();
    if err.code() == Some("result_not_found")
        && let Ok(Ok(task)) = super::block_on(client.get_task(id))
    {
        let status = task.status.as_str();
        let state = match task.status {
            TaskStatus::Pending | TaskStatus::InProgress => format!(
                "task {id} is {status} ({} of {} deliveries made): no result yet",
                task.attempts, task.max_attempts
            ),
            _ => format!("task {id} is {status} and has no result"),
        };
        return anyhow::Error::new(err).context(state);
    }
    super::name_refused_token(resolved, reader, err)
}

/// One id: the single cancel, printing the task. Several: batch cancels of
/// up to 100, printing each id's outcome; any refused exits 4.
fn cancel(resolved: &Resolved, client: &Client, args: &TaskCancelArgs) -> anyhow::Result<()> {
    let reason = args.reason.as_deref();
    let format = args.output.output;
    if let [id] = args.ids.as_slice() {
        let task = call(resolved, TokenKind::Producer, client.cancel_task(id, reason))?;
        return output::task(format, &task);
    }
    let mut items = Vec::with_capacity(args.ids.len());
    for chunk in args.ids.chunks(CANCEL_BATCH) {
        items.extend(call(resolved, TokenKind::Producer, client.cancel_tasks(chunk, reason))?);
    }
    output::cancel_results(format, &items)?;
    let refused = items.iter().filter(|item| item.is_err()).count();
    if refused > 0 {
        let total = output::count(items.len() as u64, "task");
        return Err(PartlyRefused::new(format!("{refused} of {total} not cancelled")).into());
    }
    Ok(())
}

fn cleanup(resolved: &Resolved, client: &Client, args: &TaskCleanupArgs) -> anyhow::Result<()> {
    let cleaned = client.cleanup(args.limit, args.before.as_deref());
    let outcome = call(resolved, TokenKind::Producer, cleaned)?;
    output::cleaned(args.output.output, &outcome)
}

fn list(resolved: &Resolved, client: &Client, args: &TaskListArgs) -> anyhow::Result<()> {
    let page = super::pages(args.page.cursor.clone(), args.page.all, |cursor| {
        let query = TaskQuery {
            command: args.command.clone(),
            status: args.status.map(Into::into),
            limit: args.page.limit,
            cursor,
            include_payload: args.page.payload,
        };
        call(resolved, TokenKind::Producer, client.list_tasks(&query))
    })?;
    output::task_page(args.output.output, &page, Listing::Tasks)?;
    super::tell_next_page(&page, args.output.output);
    Ok(())
}

/// The create body; a payload that is not JSON is a usage error.
fn create_body(args: &TaskCreateArgs) -> Result<CreateTask, ConfigError> {
    let text = payload_text(&args.payload)?;
    // Sent as written, as the server keeps it (key order, a repeated key,
    // big numbers), less the whitespace between tokens (`Payload`).
    let payload = Payload::from_json(text.trim())
        .map_err(|err| ConfigError::new(format!("--payload is not valid JSON: {err}")))?;
    Ok(CreateTask {
        priority: args.priority,
        max_attempts: args.max_attempts,
        webhook: args.webhook.clone(),
        idempotency_key: args.idempotency_key.clone(),
        run_at: args.run_at.clone(),
        delay_seconds: args.delay,
        ..CreateTask::new(&args.command, payload)
    })
}

/// The payload's JSON text: the argument itself, the contents of the file
/// after `@`, or stdin for `-`.
fn payload_text(arg: &str) -> Result<String, ConfigError> {
    let read_failed = |what: &str, err: std::io::Error| {
        ConfigError::new(format!("--payload: failed to read {what}: {err}"))
    };
    if arg == "-" {
        return std::io::read_to_string(std::io::stdin()).map_err(|err| read_failed("stdin", err));
    }
    match arg.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).map_err(|err| read_failed(path, err)),
        None => Ok(arg.to_owned()),
    }
}

fn claim_body(args: &TaskClaimArgs) -> ClaimRequest {
    ClaimRequest {
        commands: args.commands.clone(),
        lease_seconds: args.lease,
        wait_seconds: Some(args.wait),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Commands};

    fn create_args(argv: &[&str]) -> TaskCreateArgs {
        let mut full = vec!["codeq", "task", "create"];
        full.extend(argv);
        match Cli::try_parse_from(full).unwrap().command {
            Commands::Task(TaskCommand::Create(args)) => args,
            other => panic!("expected task create, got {other:?}"),
        }
    }

    #[test]
    fn create_flags_become_the_request_body() {
        // Sent as written: key order, a repeated key, a big number.
        let payload = r#"{"z":1,"a":12345678901234567890123,"e":1e2,"k":1,"k":2}"#;
        let args = create_args(&["--event", "RENDER", "--payload", payload, "--delay", "5"]);

        let body = create_body(&args).unwrap();

        assert_eq!(body.command, "RENDER");
        assert_eq!(body.payload.as_json(), payload);
        assert_eq!(body.delay_seconds, Some(5));
    }

    #[test]
    fn a_bad_run_at_or_one_with_a_delay_is_a_usage_error() {
        let parse = |extra: &[&str]| {
            let mut full = vec!["codeq", "task", "create", "--command", "A"];
            full.extend(extra);
            Cli::try_parse_from(full).map(|_| ()).map_err(|error| error.kind())
        };

        assert_eq!(parse(&["--run-at", "yesterday"]), Err(clap::error::ErrorKind::ValueValidation));
        assert_eq!(
            parse(&["--run-at", "2030-01-01T00:00:00Z", "--delay", "5"]),
            Err(clap::error::ErrorKind::ArgumentConflict)
        );
        assert_eq!(parse(&["--run-at", "2030-01-01T00:00:00Z"]), Ok(()));
    }

    #[test]
    fn a_payload_can_come_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("payload.json");
        std::fs::write(&file, "{\n    \"from\": \"file\",\n    \"n\": [1, 2]\n}\n").unwrap();
        let arg = format!("@{}", file.display());

        let body = create_body(&create_args(&["--command", "A", "--payload", &arg])).unwrap();
        let missing = payload_text("@/nonexistent/payload.json").unwrap_err();

        assert_eq!(body.payload.as_json(), r#"{"from":"file","n":[1,2]}"#, "sent compact");
        assert!(missing.to_string().contains("/nonexistent/payload.json"));
    }

    #[test]
    fn a_payload_that_is_not_json_is_a_configuration_error() {
        let args = create_args(&["--command", "RENDER", "--payload", "{oops"]);

        let err = create_body(&args).unwrap_err();

        assert!(err.to_string().contains("--payload"));
    }
}
