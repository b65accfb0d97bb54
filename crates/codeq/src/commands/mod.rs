//! The client commands of SPEC §8, one module per command group; each
//! takes its parsed arguments and the global flags, and returns an error
//! whose chain decides the exit code ([`crate::exit`]).

pub mod auth;
pub mod queue;
pub mod task;
pub mod worker;

use std::future::Future;

use anyhow::Context as _;

/// Runs `future` to completion on a fresh single-threaded runtime: client
/// commands make a handful of sequential calls.
pub fn block_on<F: Future>(future: F) -> anyhow::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    Ok(runtime.block_on(future))
}
