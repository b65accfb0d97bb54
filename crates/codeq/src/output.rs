//! How client commands print: pretty JSON by default (for scripts), or
//! aligned columns with `--output table` (for people).

use std::fmt::Write as _;

use codeq_client::{QueueStats, Task, TaskWithResult};
use serde::Serialize;

use crate::cli::OutputFormat;

/// `1 task`, `2 tasks`: a count and its noun, in the plural unless 1.
pub fn count(n: u64, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

/// Prints `value` as pretty JSON.
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Prints a task in `format`.
pub fn task(format: OutputFormat, task: &Task) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => json(task),
        OutputFormat::Id => {
            println!("{}", task.id);
            Ok(())
        }
        OutputFormat::Table => {
            print!("{}", key_values(&task_rows(task)));
            Ok(())
        }
    }
}

/// Prints a task with its result in `format`.
pub fn task_with_result(format: OutputFormat, answer: &TaskWithResult) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => json(answer),
        OutputFormat::Id => {
            println!("{}", answer.task.id);
            Ok(())
        }
        OutputFormat::Table => {
            let record = &answer.result;
            let mut rows = vec![
                ("id", answer.task.id.clone()),
                ("command", answer.task.command.clone()),
                ("status", serde_plain(&record.status)),
                ("completedAt", record.completed_at.clone()),
            ];
            if let Some(result) = &record.result {
                rows.push(("result", result.to_string()));
            }
            if let Some(error) = &record.error {
                rows.push(("error", error.clone()));
            }
            for artifact in &record.artifacts {
                rows.push(("artifact", format!("{} {}", artifact.name, artifact.url)));
            }
            print!("{}", key_values(&rows));
            Ok(())
        }
    }
}

/// Prints queue stats in `format`: one object (JSON) or one row each (table).
pub fn queues(format: OutputFormat, stats: &[QueueStats], single: bool) -> anyhow::Result<()> {
    match (format, stats) {
        (OutputFormat::Json, [one]) if single => json(one),
        (OutputFormat::Json, _) => json(&serde_json::json!({ "queues": stats })),
        (OutputFormat::Id, _) => {
            stats.iter().for_each(|s| println!("{}", s.command));
            Ok(())
        }
        (OutputFormat::Table, _) => {
            print!("{}", queue_table(stats));
            Ok(())
        }
    }
}

fn task_rows(task: &Task) -> Vec<(&'static str, String)> {
    let mut rows = vec![
        ("id", task.id.clone()),
        ("command", task.command.clone()),
        ("status", serde_plain(&task.status)),
        ("priority", task.priority.to_string()),
        ("attempts", format!("{}/{}", task.attempts, task.max_attempts)),
        ("payload", task.payload.clone()),
    ];
    let optional = [
        ("workerId", &task.worker_id),
        ("leaseUntil", &task.lease_until),
        ("runAt", &task.run_at),
        ("webhook", &task.webhook),
        ("idempotencyKey", &task.idempotency_key),
        ("lastReason", &task.last_reason),
        ("error", &task.error),
    ];
    rows.extend(optional.into_iter().filter_map(|(k, v)| v.clone().map(|v| (k, v))));
    rows.push(("createdAt", task.created_at.clone()));
    rows.push(("updatedAt", task.updated_at.clone()));
    if let Some(done) = &task.completed_at {
        rows.push(("completedAt", done.clone()));
    }
    rows
}

/// An enum's JSON name without quotes (`IN_PROGRESS`).
fn serde_plain<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// `key  value` lines with the values aligned.
fn key_values(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter().fold(String::new(), |mut out, (key, value)| {
        let _ = writeln!(out, "{key:<width$}  {value}");
        out
    })
}

fn queue_table(stats: &[QueueStats]) -> String {
    let width = stats.iter().map(|s| s.command.len()).chain([7]).max().unwrap_or(7);
    let mut out = format!(
        "{:<width$}  {:>8}  {:>8}  {:>11}  {:>8}\n",
        "COMMAND", "READY", "DELAYED", "IN_PROGRESS", "DLQ"
    );
    for s in stats {
        let _ = writeln!(
            out,
            "{:<width$}  {:>8}  {:>8}  {:>11}  {:>8}",
            s.command, s.ready, s.delayed, s.in_progress, s.dlq
        );
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_singular_only_for_one() {
        assert_eq!(count(0, "task"), "0 tasks");
        assert_eq!(count(1, "task"), "1 task");
        assert_eq!(count(2, "round"), "2 rounds");
    }

    #[test]
    fn key_values_are_aligned() {
        let text = key_values(&[("id", "t-1".into()), ("command", "RENDER".into())]);

        assert_eq!(text, "id       t-1\ncommand  RENDER\n");
    }

    #[test]
    fn queue_table_has_a_header_and_a_row_per_queue() {
        let stats =
            [QueueStats { command: "RENDER".into(), ready: 3, delayed: 1, in_progress: 2, dlq: 0 }];

        let text = queue_table(&stats);

        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("COMMAND"));
        assert_eq!(lines[1].split_whitespace().collect::<Vec<_>>(), ["RENDER", "3", "1", "2", "0"]);
    }
}
