//! `codeq`: parses the command line and dispatches.

use std::process::ExitCode;

use codeq::bench::{self, Ending};
use codeq::cli::{Cli, Commands};
use codeq::commands::{auth, queue, task, worker};
use codeq::exit;

/// mimalloc: the server and the bench allocate many small, short-lived
/// buffers per request; glibc's allocator spent a tenth of the CPU there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse_recording_flags();
    let global = &cli.global;
    let done = match &cli.command {
        Commands::Serve(args) => {
            if let Some(flag) = global.first_typed_flag() {
                eprintln!(
                    "codeq: serve does not take {flag}: it is an option of the client commands \
                     (the server's tokens come from its configuration: docs/configuration.md)"
                );
                return ExitCode::from(exit::CONFIGURATION);
            }
            return codeq_server::app::serve_main(args.clone().into());
        }
        Commands::Bench(args) => return bench_main(global, args),
        Commands::Version => {
            println!("codeq {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Commands::Worker(command) => {
            return worker::run(global, command).unwrap_or_else(|err| exit::report(&err));
        }
        Commands::Init(args) => auth::init(global, args),
        Commands::Auth(command) => auth::run(global, command),
        Commands::Task(command) => task::run(global, command),
        Commands::Queue(command) => queue::run(global, command),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => exit::report(&err),
    }
}

fn bench_main(global: &codeq::cli::GlobalArgs, args: &codeq::cli::BenchArgs) -> ExitCode {
    match bench::main(global, args) {
        Ok(Ending::Complete) => ExitCode::SUCCESS,
        Ok(Ending::Stalled) => {
            eprintln!("codeq: the bench stalled: tasks were created but never finished");
            ExitCode::from(exit::GENERAL)
        }
        Ok(Ending::Interrupted) => ExitCode::from(exit::INTERRUPTED),
        Err(err) => exit::report(&err),
    }
}
