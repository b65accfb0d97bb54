//! `codeq`: parses the command line and dispatches.

use std::process::ExitCode;

use clap::Parser as _;
use codeq::bench::{self, Ending};
use codeq::cli::{Cli, Commands};
use codeq::exit;

/// mimalloc: the server and the bench allocate many small, short-lived
/// buffers per request; glibc's allocator spent a tenth of the CPU there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Commands::Serve(args) => codeq_server::app::serve_main(args.into()),
        Commands::Bench(args) => match bench::main(&args) {
            Ok(Ending::Complete) => ExitCode::SUCCESS,
            Ok(Ending::Stalled) => {
                eprintln!("codeq: the bench stalled: tasks were created but never finished");
                ExitCode::from(exit::GENERAL)
            }
            Ok(Ending::Interrupted) => ExitCode::from(exit::INTERRUPTED),
            Err(err) => exit::report(&err),
        },
        Commands::Version => {
            println!("codeq {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
    }
}
