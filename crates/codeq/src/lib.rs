//! The `codeq` binary's library: command-line definitions and the
//! commands that are not the server (which lives in `codeq-server`).
//!
//! Layout:
//! - [`cli`]: the clap definition of every subcommand and flag.
//! - [`config`]: client profiles (`~/.codeq/config.yaml`), env, flags and
//!   the local-mode fallback, merged into the settings a command uses.
//! - [`commands`]: `init`, `auth`, `task`, `queue`, `dlq`, `worker`, `storage`.
//! - [`output`]: JSON or table printing of API objects.
//! - [`bench`](mod@bench): `codeq bench`, the load generator (and [`bench::stats`], its percentiles).
//! - [`exit`]: exit codes and the error → exit code mapping.
#![warn(missing_docs)]

/// `print!` that does not panic on a closed stdout: see
/// [`output::write_stdout`].
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::write_stdout(format_args!($($arg)*)) };
}

/// `println!` that does not panic on a closed stdout: see
/// [`output::write_stdout`].
macro_rules! outln {
    ($($arg:tt)*) => { $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `eprint!` that never panics: see [`output::write_stderr`].
macro_rules! err {
    ($($arg:tt)*) => { $crate::output::write_stderr(format_args!($($arg)*)) };
}

/// `eprintln!` that never panics: see [`output::write_stderr`].
macro_rules! errln {
    ($($arg:tt)*) => { $crate::output::write_stderr(format_args!("{}\n", format_args!($($arg)*))) };
}

pub mod bench;
pub mod cli;
pub mod commands;
pub mod config;
pub mod exit;
pub mod output;
