//! Builds the server and runs it until shutdown (being written).

use std::process::ExitCode;

use crate::config::ConfigOverrides;

/// Runs `codeq serve`: loads the configuration, starts the server and
/// blocks until it has shut down. Exit code 2 for a configuration error.
pub fn serve_main(overrides: ConfigOverrides) -> ExitCode {
    let _ = overrides;
    ExitCode::SUCCESS
}
