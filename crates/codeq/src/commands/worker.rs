//! `codeq worker start`: runs a handler program per task on top of
//! [`codeq_client::Worker`], with one log line per task, a summary on exit
//! and the two-stage SIGINT/SIGTERM/SIGHUP stop of docs/cli.md.

mod handler;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use codeq_client::worker::{ClaimRetry, ResultRetry, StopHandle, Summary, TaskReport};
use codeq_client::{TokenKind, Worker};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::{GlobalArgs, WorkerCommand, WorkerStartArgs};
use crate::config::Resolved;
use crate::exit;

/// Runs one `worker` subcommand; the exit code includes 130 after a signal.
pub fn run(global: &GlobalArgs, command: &WorkerCommand) -> anyhow::Result<ExitCode> {
    match command {
        WorkerCommand::Start(args) => start(global, args),
    }
}

fn start(global: &GlobalArgs, args: &WorkerStartArgs) -> anyhow::Result<ExitCode> {
    let handler_path = handler::resolve(&args.handler)?;
    let resolved = Resolved::load(global)?;
    let client = resolved.worker_client()?;
    let worker = Worker::new(client, args.events.iter().cloned())
        .concurrency(usize::try_from(args.concurrency).unwrap_or(1))
        .lease_seconds(args.lease)
        .wait_seconds(args.poll)
        .once(args.once)
        .on_task(log_task)
        .on_claim_retry(log_claim_retry)
        .on_result_retry(log_result_retry);
    let handler_path = Arc::new(handler_path);
    let limit = args.timeout.map(Duration::from_secs);
    errln!(
        "codeq worker: claiming {} from {} (concurrency {}, lease {}s, handler {})",
        describe_events(&args.events),
        resolved.base_url,
        args.concurrency,
        args.lease,
        args.handler.display()
    );
    super::block_on(async move {
        let interrupted = Arc::new(AtomicBool::new(false));
        watch_signals(worker.stop_handle(), Arc::clone(&interrupted))?;
        let summary =
            worker.run(move |task| run_handler(Arc::clone(&handler_path), task, limit)).await;
        let summary =
            summary.map_err(|err| super::name_refused_token(&resolved, TokenKind::Worker, err))?;
        errln!("codeq worker: {}", describe_summary(&summary));
        let code = if interrupted.load(Ordering::SeqCst) {
            exit::INTERRUPTED
        } else if args.once && summary.report_failed > 0 {
            // The one task handled may run again: say so to the caller.
            exit::GENERAL
        } else {
            exit::OK
        };
        Ok(ExitCode::from(code))
    })?
}

async fn run_handler(
    path: Arc<PathBuf>,
    task: codeq_client::Task,
    limit: Option<Duration>,
) -> codeq_client::Outcome {
    handler::run(&path, task, limit).await
}

/// First SIGINT/SIGTERM/SIGHUP: stop claiming, let handlers finish.
/// Second: abandon them. The handlers are registered before the first
/// claim. A hangup (the terminal closed) is a stop like the others: dying
/// of it would leave the handlers, in their own process group, running
/// unsupervised while their tasks' leases end. Under `nohup` (SIGHUP
/// ignored when the runner starts) a hangup stays ignored.
fn watch_signals(stop: StopHandle, interrupted: Arc<AtomicBool>) -> anyhow::Result<()> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = if hangup_ignored() { None } else { Some(signal(SignalKind::hangup())?) };
    tokio::spawn(async move {
        let mut next_signal = async || {
            let hung_up = async {
                match hangup.as_mut() {
                    Some(hangup) => hangup.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = terminate.recv() => {},
                _ = interrupt.recv() => {},
                _ = hung_up => {},
            }
        };
        next_signal().await;
        interrupted.store(true, Ordering::SeqCst);
        errln!(
            "codeq worker: stopping: no new claims; running handlers finish (signal again to abandon them)"
        );
        stop.stop();
        next_signal().await;
        errln!("codeq worker: abandoning running tasks");
        stop.abandon();
    });
    Ok(())
}

/// Whether this process started with SIGHUP ignored (`nohup`), read from
/// `/proc/self/status` (its `SigIgn` mask; SIGHUP is bit 0): registering
/// a handler would undo that.
fn hangup_ignored() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else { return false };
    status
        .lines()
        .find_map(|line| line.strip_prefix("SigIgn:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & 1 != 0)
}

fn describe_events(events: &[String]) -> String {
    if events.is_empty() { "the token's commands".to_owned() } else { events.join(",") }
}

/// One line per task: id, command, attempt, outcome, duration; then why
/// the report was not accepted, and the handler's reason.
fn log_task(report: &TaskReport) {
    let outcome = report.reported.as_str();
    let refused = report
        .report_error
        .as_deref()
        .map(|error| format!(": report not accepted: {}", first_line(error)))
        .unwrap_or_default();
    let reason =
        report.detail.as_deref().map(|d| format!(": {}", first_line(d))).unwrap_or_default();
    let again =
        report.again_in.map(|delay| format!(", again in {}s", delay.as_secs())).unwrap_or_default();
    let detail = format!("{again}{refused}{reason}");
    errln!(
        "codeq worker: task {} command={} attempt={} {outcome} in {:.3}s{detail}",
        report.id,
        report.command,
        report.attempt,
        report.duration.as_secs_f64()
    );
}

/// One line per backoff step while claims fail (slot 0 speaks for all:
/// the slots fail and back off together).
fn log_claim_retry(retry: &ClaimRetry<'_>) {
    if retry.slot != 0 {
        return;
    }
    let error = match exit::unreachable_server(retry.error) {
        Some(unreachable) => format!("{unreachable}: is `codeq serve` running there?"),
        None => with_causes(retry.error),
    };
    errln!(
        "codeq worker: claim failed, next attempt in {:.3}s: {error}",
        retry.pause.as_secs_f64()
    );
}

/// One line per pause before a result is sent again.
fn log_result_retry(retry: &ResultRetry<'_>) {
    let error = match exit::unreachable_server(retry.error) {
        Some(unreachable) => unreachable.to_string(),
        None => with_causes(retry.error),
    };
    errln!(
        "codeq worker: task {} result not accepted yet, next attempt in {:.3}s: {error}",
        retry.task_id,
        retry.pause.as_secs_f64()
    );
}

/// An error and its causes, `: `-separated.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text = format!("{text}: {inner}");
        cause = inner.source();
    }
    text
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

fn describe_summary(summary: &Summary) -> String {
    format!(
        "stopped after {}: {} completed, {} failed, {} nacked, {} dead-lettered, {} abandoned, {} not reported, {} cancelled",
        crate::output::count(summary.total(), "task"),
        summary.completed,
        summary.failed,
        summary.nacked,
        summary.dead_lettered,
        summary.abandoned,
        summary.report_failed,
        summary.cancelled
    )
}
