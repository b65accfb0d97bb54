//! The client commands of docs/cli.md, one module per command group; each
//! takes its parsed arguments and the global flags, and returns an error
//! whose chain decides the exit code ([`crate::exit`]).

pub mod auth;
pub mod dlq;
pub mod queue;
pub mod storage;
pub mod task;
pub mod worker;

use std::future::Future;

use anyhow::Context as _;
use codeq_client::{TaskPage, TokenKind};

use crate::config::Resolved;

/// Runs `future` to completion on a fresh single-threaded runtime: client
/// commands make a handful of sequential calls.
pub fn block_on<F: Future>(future: F) -> anyhow::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    Ok(runtime.block_on(future))
}

/// Runs one API call of a command that sends the `kind` token, naming
/// that token and where it came from when the server refuses it.
pub fn call<T>(
    resolved: &Resolved,
    kind: TokenKind,
    future: impl Future<Output = Result<T, codeq_client::Error>>,
) -> anyhow::Result<T> {
    block_on(future)?.map_err(|err| name_refused_token(resolved, kind, err))
}

/// A 401 or 403 with the token it was for (`the server did not accept
/// the worker token from CODEQ_WORKER_TOKEN: HTTP 401 …`); other errors
/// unchanged.
pub fn name_refused_token(
    resolved: &Resolved,
    kind: TokenKind,
    err: codeq_client::Error,
) -> anyhow::Error {
    let explained = match (err.status(), resolved.describe_token(kind)) {
        (Some(401), Some(source)) => {
            format!("the server did not accept the {kind} token from {source}")
        }
        (Some(403), Some(source)) => {
            format!("the {kind} token from {source} is not allowed to do this")
        }
        _ => return err.into(),
    };
    anyhow::Error::new(err).context(explained)
}

/// One page of a listing, or with `all` every page from `cursor` on,
/// following `nextCursor` to the end (then without a `nextCursor`).
pub fn pages(
    cursor: Option<String>,
    all: bool,
    mut fetch: impl FnMut(Option<String>) -> anyhow::Result<TaskPage>,
) -> anyhow::Result<TaskPage> {
    let mut page = fetch(cursor)?;
    if !all {
        return Ok(page);
    }
    while let Some(next) = page.next_cursor.take() {
        let more = fetch(Some(next))?;
        page.tasks.extend(more.tasks);
        page.next_cursor = more.next_cursor;
    }
    Ok(page)
}

/// Says on stderr where the next page starts, for the formats that do
/// not print the cursor.
pub fn tell_next_page(page: &TaskPage, format: crate::cli::OutputFormat) {
    if let (Some(next), false) = (&page.next_cursor, format == crate::cli::OutputFormat::Json) {
        errln!("codeq: more follow: --cursor {next} (or --all for every page)");
    }
}

/// A task id is a UUID: anything else is refused before a request (the
/// server would only say 404).
pub fn check_task_id(id: &str) -> Result<(), crate::exit::ConfigError> {
    id.parse::<codeq_core::TaskId>().map(|_| ()).map_err(|_| {
        crate::exit::ConfigError::new(format!(
            "task id {id:?} is malformed: a task id is a UUID such as \
             0196a3c2-5f1e-7d2a-9b3c-4e5f6a7b8c9d (`task create -o id` prints one)"
        ))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn page(ids: &[&str], next: Option<&str>) -> TaskPage {
        let tasks = ids
            .iter()
            .map(|id| {
                serde_json::from_value(serde_json::json!({
                    "id": id, "command": "A", "priority": 0, "status": "FAILED",
                    "attempts": 1, "maxAttempts": 1,
                    "createdAt": "2030-01-01T00:00:00Z", "updatedAt": "2030-01-01T00:00:00Z"
                }))
                .unwrap()
            })
            .collect();
        TaskPage { tasks, next_cursor: next.map(str::to_owned) }
    }

    /// Three pages; records the cursors asked for.
    fn fetch(
        asked: &mut Vec<Option<String>>,
    ) -> impl FnMut(Option<String>) -> anyhow::Result<TaskPage> + '_ {
        move |cursor| {
            asked.push(cursor.clone());
            Ok(match cursor.as_deref() {
                None => page(&["a", "b"], Some("c1")),
                Some("c1") => page(&["c"], Some("c2")),
                _ => page(&["d"], None),
            })
        }
    }

    #[test]
    fn all_follows_the_cursor_to_the_last_page_and_one_page_does_not() {
        let (mut every, mut one) = (Vec::new(), Vec::new());

        let all = pages(None, true, fetch(&mut every)).unwrap();
        let first = pages(None, false, fetch(&mut one)).unwrap();

        let ids: Vec<&str> = all.tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c", "d"]);
        assert_eq!(all.next_cursor, None);
        assert_eq!(every, [None, Some("c1".into()), Some("c2".into())]);
        assert_eq!((first.tasks.len(), first.next_cursor.as_deref()), (2, Some("c1")));
        assert_eq!(one, [None]);
    }
}
