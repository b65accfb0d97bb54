//! `codeq`: parses the command line and dispatches.

use std::process::ExitCode;

use codeq::bench::{self, Ending};
use codeq::cli::{Cli, Commands, VERSION};
use codeq::commands::{auth, dlq, queue, storage, task, worker};
use codeq::exit;

/// mimalloc: the server and the bench allocate many small, short-lived
/// buffers per request; glibc's allocator spent a tenth of the CPU there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `eprintln!` that never panics (the library's `errln!`).
macro_rules! errln {
    ($($arg:tt)*) => { codeq::output::write_stderr(format_args!("{}\n", format_args!($($arg)*))) };
}

fn main() -> ExitCode {
    let cli = Cli::parse_recording_flags();
    let global = &cli.global;
    let done = match &cli.command {
        Commands::Serve(args) => {
            if let Some(flag) = global.first_typed_flag() {
                errln!(
                    "codeq: serve does not take {flag}: it is an option of the client commands \
                     (the server's tokens come from its configuration: docs/configuration.md)"
                );
                return ExitCode::from(exit::CONFIGURATION);
            }
            codeq_server::process_metrics::set_build_version(VERSION);
            return codeq_server::app::serve_main(args.clone().into());
        }
        Commands::Bench(args) => return bench_main(global, args),
        Commands::Version => {
            codeq::output::write_stdout(format_args!("codeq {VERSION}\n"));
            return ExitCode::SUCCESS;
        }
        Commands::Completions(args) => return completions(args.shell),
        Commands::Worker(command) => {
            return worker::run(global, command).unwrap_or_else(|err| exit::report(&err));
        }
        Commands::Init(args) => auth::init(global, args),
        Commands::Auth(command) => auth::run(global, command),
        Commands::Task(command) => task::run(global, command),
        Commands::Queue(command) => queue::run(global, command),
        Commands::Dlq(command) => dlq::run(global, command),
        Commands::Storage(command) => storage::run(command),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => exit::report(&err),
    }
}

/// Prints the completion script. It is generated into memory first:
/// clap_complete panics on a failed write, and stdout may be a closed pipe.
fn completions(shell: clap_complete::Shell) -> ExitCode {
    use std::io::Write as _;
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command_line(), "codeq", &mut script);
    match std::io::stdout().write_all(&script) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(err) => {
            errln!("codeq: cannot write the completion script: {err}");
            ExitCode::from(exit::GENERAL)
        }
    }
}

fn bench_main(global: &codeq::cli::GlobalArgs, args: &codeq::cli::BenchArgs) -> ExitCode {
    match bench::main(global, args) {
        Ok(Ending::Complete) => ExitCode::SUCCESS,
        Ok(Ending::Stalled) => {
            errln!("codeq: the bench stalled: tasks were created but never finished");
            ExitCode::from(exit::GENERAL)
        }
        Ok(Ending::Interrupted) => ExitCode::from(exit::INTERRUPTED),
        Err(err) => exit::report(&err),
    }
}
