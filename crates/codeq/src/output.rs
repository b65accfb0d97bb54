//! How client commands print: pretty JSON by default (for scripts), or
//! aligned columns with `--output table` (for people), or only ids with
//! `--output id` (for shell pipelines).

use std::fmt::Write as _;

use codeq_client::{
    BatchItem, CancelledTask, CleanupOutcome, Purged, QueueSettings, QueueStats, Replayed, Task,
    TaskPage, TaskWithResult,
};
use serde::Serialize;
use serde_json::json;

use crate::cli::OutputFormat;

/// Writes to stdout (what `out!` and `outln!` print with).
/// `print!` panics when stdout is a pipe whose reader has gone
/// (`codeq task list --all | head -1`); such a reader wants nothing more,
/// so nothing more is written, quietly, and the command ends with its own
/// exit code (a batch cancel with refused ids still exits 4). Any other
/// failed write ends it with exit code 1.
pub fn write_stdout(text: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    use std::sync::atomic::{AtomicBool, Ordering};
    static READER_GONE: AtomicBool = AtomicBool::new(false);
    if READER_GONE.load(Ordering::Relaxed) {
        return;
    }
    match std::io::stdout().lock().write_fmt(text) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {
            READER_GONE.store(true, Ordering::Relaxed);
        }
        Err(error) => {
            errln!("codeq: cannot write the output: {error}");
            std::process::exit(i32::from(crate::exit::GENERAL));
        }
    }
}

/// Writes to stderr, whatever becomes of it: `eprint!` panics when stderr
/// is a closed pipe (`codeq … 2>&1 | true`) or a full disk, and a command
/// (a worker runner draining its handlers, say) must end with its own
/// exit code all the same.
pub fn write_stderr(text: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = std::io::stderr().lock().write_fmt(text);
}

/// `1 task`, `2 tasks`: a count and its noun, in the plural unless 1.
pub fn count(n: u64, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

/// Prints `value` as pretty JSON.
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    // Laid out from compact text, not by serde_json's pretty printer,
    // which writes a result kept as text (`Payload`) as it came, on one line.
    outln!("{}", codeq_core::json::indent(&serde_json::to_string(value)?));
    Ok(())
}

/// Prints a task in `format`.
pub fn task(format: OutputFormat, task: &Task) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => json(task),
        OutputFormat::Id => {
            outln!("{}", task.id);
            Ok(())
        }
        OutputFormat::Table => {
            out!("{}", key_values(&task_rows(task)));
            Ok(())
        }
    }
}

/// Prints a task with its result in `format`.
pub fn task_with_result(format: OutputFormat, answer: &TaskWithResult) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => json(answer),
        OutputFormat::Id => {
            outln!("{}", answer.task.id);
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
                rows.push(("result", result.as_json().to_owned()));
            }
            if let Some(error) = &record.error {
                rows.push(("error", error.clone()));
            }
            for artifact in &record.artifacts {
                rows.push(("artifact", format!("{} {}", artifact.name, artifact.url)));
            }
            out!("{}", key_values(&rows));
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
            stats.iter().for_each(|s| outln!("{}", s.command));
            Ok(())
        }
        (OutputFormat::Table, _) => {
            out!("{}", queue_table(stats));
            Ok(())
        }
    }
}

/// Which columns a page of tasks shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// Any tasks (`task list`).
    Tasks,
    /// One command's dead letters (`dlq list`).
    DeadLetters,
}

/// Prints a page of tasks in `format`: the page (JSON), one id per line,
/// or one row per task.
pub fn task_page(format: OutputFormat, page: &TaskPage, listing: Listing) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => json(page),
        OutputFormat::Id => {
            page.tasks.iter().for_each(|task| outln!("{}", task.id));
            Ok(())
        }
        OutputFormat::Table => {
            out!(
                "{}",
                match listing {
                    Listing::Tasks => task_table(&page.tasks),
                    Listing::DeadLetters => dead_letter_table(&page.tasks),
                }
            );
            Ok(())
        }
    }
}

/// Prints the outcomes of a batch cancel in `format`: the API's
/// `{"results": [...]}` (JSON), the ids cancelled, or one row per id.
pub fn cancel_results(
    format: OutputFormat,
    items: &[BatchItem<CancelledTask>],
) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => {
            let results: Vec<serde_json::Value> = items
                .iter()
                .map(|item| match item {
                    Ok(cancelled) => json!(cancelled),
                    Err(refused) => json!(refused),
                })
                .collect();
            json(&json!({ "results": results }))
        }
        OutputFormat::Id => {
            items.iter().flatten().for_each(|cancelled| outln!("{}", cancelled.task_id));
            Ok(())
        }
        OutputFormat::Table => {
            out!("{}", cancel_table(items));
            Ok(())
        }
    }
}

/// Prints a command's settings in `format`: as the API shows them (JSON),
/// the command's name, or one line per setting.
pub fn settings(
    format: OutputFormat,
    command: &str,
    settings: &QueueSettings,
) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => json(settings),
        OutputFormat::Id => {
            outln!("{command}");
            Ok(())
        }
        OutputFormat::Table => {
            let (max_in_flight, rate, burst) = limits(settings);
            let rows = [
                ("command", command.to_owned()),
                ("paused", yes_no(settings.paused)),
                ("maxInFlight", max_in_flight),
                ("ratePerSecond", rate),
                ("burst", burst),
            ];
            out!("{}", key_values(&rows));
            Ok(())
        }
    }
}

/// Prints the answer of a replay in `format`.
pub fn replayed(format: OutputFormat, answer: &Replayed) -> anyhow::Result<()> {
    bulk(format, answer, "replayed", answer.replayed, &answer.ids)
}

/// Prints the answer of a purge in `format`.
pub fn purged(format: OutputFormat, answer: &Purged) -> anyhow::Result<()> {
    bulk(format, answer, "purged", answer.purged, &answer.ids)
}

/// What `task cleanup` deleted (`-o id` prints the count).
pub fn cleaned(format: OutputFormat, outcome: &CleanupOutcome) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => json(outcome),
        OutputFormat::Id => {
            outln!("{}", outcome.deleted);
            Ok(())
        }
        OutputFormat::Table => {
            let rows = [
                ("deleted", outcome.deleted.to_string()),
                ("before", outcome.before.clone()),
                ("limit", outcome.limit.to_string()),
            ];
            out!("{}", key_values(&rows));
            Ok(())
        }
    }
}

fn bulk<T: Serialize>(
    format: OutputFormat,
    answer: &T,
    verb: &'static str,
    count: u64,
    ids: &[String],
) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => json(answer),
        OutputFormat::Id => {
            ids.iter().for_each(|id| outln!("{id}"));
            Ok(())
        }
        OutputFormat::Table => {
            let mut rows = vec![(verb, count.to_string())];
            rows.extend(ids.iter().map(|id| ("id", id.clone())));
            out!("{}", key_values(&rows));
            Ok(())
        }
    }
}

/// `3/5`; after a replay, which gives `maxAttempts` more deliveries while
/// `attempts` goes on counting, `7 (replayed 1×, 5 per round)`.
fn attempts(task: &Task) -> String {
    if task.replays == 0 {
        format!("{}/{}", task.attempts, task.max_attempts)
    } else {
        format!("{} (replayed {}×, {} per round)", task.attempts, task.replays, task.max_attempts)
    }
}

/// [`attempts`] in a table cell: `3/5`, or `7 (replayed)`.
fn attempts_cell(task: &Task) -> String {
    if task.replays == 0 {
        format!("{}/{}", task.attempts, task.max_attempts)
    } else {
        format!("{} (replayed)", task.attempts)
    }
}

fn task_rows(task: &Task) -> Vec<(&'static str, String)> {
    let mut rows = vec![
        ("id", task.id.clone()),
        ("command", task.command.clone()),
        ("status", serde_plain(&task.status)),
        ("priority", task.priority.to_string()),
        ("attempts", attempts(task)),
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
    if task.replays > 0 {
        rows.push(("replays", task.replays.to_string()));
    }
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

/// How a column's cells line up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Align {
    Left,
    Right,
}

/// Columns as wide as their widest cell, separated by two spaces; the
/// last one is not padded (it may hold free text).
fn table(headers: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|(name, _)| name.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (index, ((cell, width), (_, align))) in
            cells.iter().zip(&widths).zip(headers).enumerate()
        {
            if index > 0 {
                out.push_str("  ");
            }
            match align {
                Align::Right => {
                    let _ = write!(out, "{cell:>width$}");
                }
                Align::Left if index == last => out.push_str(cell),
                Align::Left => {
                    let _ = write!(out, "{cell:<width$}");
                }
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(headers.iter().map(|(name, _)| *name).collect());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// Free text in one cell: its first line, at most 80 characters; `-` when
/// there is none.
fn cell_text(text: Option<&str>) -> String {
    const MAX: usize = 80;
    let Some(line) = text.and_then(|text| text.lines().next()).filter(|line| !line.is_empty())
    else {
        return "-".to_owned();
    };
    if line.chars().count() <= MAX {
        return line.to_owned();
    }
    let mut cut: String = line.chars().take(MAX - 1).collect();
    cut.push('…');
    cut
}

fn yes_no(flag: bool) -> String {
    (if flag { "yes" } else { "no" }).to_owned()
}

/// `maxInFlight`, rate and burst for people: `-` when unset, and the
/// burst a rate has by default (1).
fn limits(settings: &QueueSettings) -> (String, String, String) {
    let max_in_flight = settings.max_in_flight.map_or_else(|| "-".to_owned(), |n| n.to_string());
    let rate = settings.rate_per_second.map_or_else(|| "-".to_owned(), |rate| rate.to_string());
    let burst = match (settings.rate_per_second, settings.burst) {
        (None, _) => "-".to_owned(),
        (Some(_), burst) => burst.unwrap_or(1).to_string(),
    };
    (max_in_flight, rate, burst)
}

fn queue_table(stats: &[QueueStats]) -> String {
    use Align::{Left, Right};
    let headers = [
        ("COMMAND", Left),
        ("READY", Right),
        ("DELAYED", Right),
        ("IN_PROGRESS", Right),
        ("DLQ", Right),
        ("PAUSED", Left),
        ("MAX_IN_FLIGHT", Right),
        ("RATE/S", Right),
        ("BURST", Right),
    ];
    let rows: Vec<Vec<String>> = stats
        .iter()
        .map(|s| {
            let (max_in_flight, rate, burst) = limits(&s.settings);
            vec![
                s.command.clone(),
                s.ready.to_string(),
                s.delayed.to_string(),
                s.in_progress.to_string(),
                s.dlq.to_string(),
                yes_no(s.settings.paused),
                max_in_flight,
                rate,
                burst,
            ]
        })
        .collect();
    table(&headers, &rows)
}

fn task_table(tasks: &[Task]) -> String {
    use Align::{Left, Right};
    let headers = [
        ("ID", Left),
        ("COMMAND", Left),
        ("STATUS", Left),
        ("PRIORITY", Right),
        ("ATTEMPTS", Right),
        ("CREATED_AT", Left),
        ("REASON", Left),
    ];
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|task| {
            vec![
                task.id.clone(),
                task.command.clone(),
                task.status.as_str().to_owned(),
                task.priority.to_string(),
                attempts_cell(task),
                task.created_at.clone(),
                cell_text(task.error.as_deref().or(task.last_reason.as_deref())),
            ]
        })
        .collect();
    table(&headers, &rows)
}

fn dead_letter_table(tasks: &[Task]) -> String {
    use Align::{Left, Right};
    let headers = [
        ("ID", Left),
        ("ATTEMPTS", Right),
        ("REPLAYS", Right),
        ("FAILED_AT", Left),
        ("LAST_REASON", Left),
    ];
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|task| {
            vec![
                task.id.clone(),
                attempts_cell(task),
                task.replays.to_string(),
                task.completed_at.clone().unwrap_or_else(|| "-".to_owned()),
                cell_text(task.last_reason.as_deref()),
            ]
        })
        .collect();
    table(&headers, &rows)
}

fn cancel_table(items: &[BatchItem<CancelledTask>]) -> String {
    use Align::Left;
    let headers = [("ID", Left), ("OUTCOME", Left), ("MESSAGE", Left)];
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|item| match item {
            Ok(cancelled) => {
                vec![
                    cancelled.task_id.clone(),
                    cancelled.status.as_str().to_owned(),
                    "-".to_owned(),
                ]
            }
            Err(refused) => vec![
                refused.task_id.clone().unwrap_or_default(),
                refused.code.clone(),
                cell_text(Some(&refused.error)),
            ],
        })
        .collect();
    table(&headers, &rows)
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

    fn stats(command: &str, settings: QueueSettings) -> QueueStats {
        QueueStats {
            command: command.into(),
            ready: 3,
            delayed: 1,
            in_progress: 2,
            dlq: 0,
            settings,
        }
    }

    #[test]
    fn queue_table_has_a_header_and_a_row_per_queue_with_its_settings() {
        let limited = QueueSettings {
            paused: true,
            max_in_flight: Some(4),
            rate_per_second: Some(2.5),
            burst: None,
        };
        let stats = [stats("RENDER", QueueSettings::default()), stats("THUMB", limited)];

        let text = queue_table(&stats);

        let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0][0], "COMMAND");
        assert_eq!(lines[0][5..], ["PAUSED", "MAX_IN_FLIGHT", "RATE/S", "BURST"]);
        assert_eq!(lines[1], ["RENDER", "3", "1", "2", "0", "no", "-", "-", "-"]);
        assert_eq!(
            lines[2],
            ["THUMB", "3", "1", "2", "0", "yes", "4", "2.5", "1"],
            "burst 1 by default"
        );
    }

    #[test]
    fn table_columns_line_up_and_the_last_is_not_padded() {
        let text = table(
            &[("NAME", Align::Left), ("N", Align::Right), ("NOTE", Align::Left)],
            &[
                vec!["a".into(), "10".into(), "x".into()],
                vec!["long".into(), "2".into(), "".into()],
            ],
        );

        assert_eq!(text, "NAME   N  NOTE\na     10  x\nlong   2  \n");
    }

    #[test]
    fn free_text_cells_keep_one_short_line() {
        assert_eq!(cell_text(None), "-");
        assert_eq!(cell_text(Some("first\nsecond")), "first");
        let long = cell_text(Some(&"x".repeat(100)));
        assert_eq!(long.chars().count(), 80);
        assert!(long.ends_with('…'));
    }
}
