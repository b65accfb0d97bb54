//! The client commands of SPEC §8, one module per command group; each
//! takes its parsed arguments and the global flags, and returns an error
//! whose chain decides the exit code ([`crate::exit`]).

pub mod auth;
pub mod queue;
pub mod storage;
pub mod task;
pub mod worker;

use std::future::Future;

use anyhow::Context as _;
use codeq_client::TokenKind;

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
