//! Checks of the command-line definition itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use clap::Parser as _;
use codeq::cli::{BenchMode, Cli, Commands};

#[test]
fn cli_definition_is_consistent() {
    Cli::command_line().debug_assert();
}

#[test]
fn bench_defaults_are_bounded_single_mode() {
    let cli = Cli::try_parse_from(["codeq", "bench"]).unwrap();

    let Commands::Bench(args) = cli.command else { panic!("expected bench") };
    assert_eq!(args.mode, BenchMode::Single);
    assert_eq!((args.producers, args.workers, args.batch_size), (4, 16, 100));
    assert_eq!((args.count, args.duration, args.wakeup), (None, None, None));
    assert_eq!(args.payload_bytes, 200);
    assert_eq!(args.command, "bench");
}

#[test]
fn bench_wakeup_takes_an_optional_round_count() {
    let bare = Cli::try_parse_from(["codeq", "bench", "--wakeup", "--json"]).unwrap();
    let given = Cli::try_parse_from(["codeq", "bench", "--wakeup", "5"]).unwrap();

    let (Commands::Bench(bare), Commands::Bench(given)) = (bare.command, given.command) else {
        panic!("expected bench")
    };
    assert_eq!(bare.wakeup, Some(200));
    assert!(bare.json);
    assert_eq!(given.wakeup, Some(5));
}

#[test]
fn bench_refuses_count_with_duration_and_oversized_batches() {
    assert!(Cli::try_parse_from(["codeq", "bench", "--count", "5", "--duration", "5"]).is_err());
    assert!(Cli::try_parse_from(["codeq", "bench", "--batch-size", "101"]).is_err());
    assert!(Cli::try_parse_from(["codeq", "bench", "--wakeup", "--mode", "batch"]).is_err());
}

#[test]
fn serve_flags_become_config_overrides() {
    let cli = Cli::try_parse_from(["codeq", "serve", "--port", "9000", "--data-dir", "d"]).unwrap();

    let Commands::Serve(args) = cli.command else { panic!("expected serve") };
    let overrides: codeq_server::config::ConfigOverrides = args.into();
    assert_eq!(overrides.port, Some(9000));
    assert_eq!(overrides.data_dir.as_deref(), Some(std::path::Path::new("d")));
    assert_eq!(overrides.host, None);
}

/// The commit of the checkout the tests run in, as build.rs reads it.
fn git_commit() -> Option<String> {
    let output = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    output.status.success().then(|| String::from_utf8(output.stdout).unwrap().trim().to_owned())
}

#[test]
fn version_and_dash_dash_version_print_the_version_with_the_commit() {
    let codeq = |arg: &str| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_codeq")).arg(arg).output();
        String::from_utf8(output.unwrap().stdout).unwrap()
    };
    let expected = match git_commit() {
        Some(commit) => format!("codeq {} ({commit})\n", env!("CARGO_PKG_VERSION")),
        None => format!("codeq {}\n", env!("CARGO_PKG_VERSION")),
    };

    assert_eq!(codeq("version"), expected);
    assert_eq!(codeq("--version"), expected);
}

#[test]
fn completions_are_printed_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_codeq"))
            .args(["completions", shell])
            .output()
            .unwrap();

        let script = String::from_utf8(output.stdout).unwrap();
        assert!(output.status.success(), "{shell}");
        for word in ["codeq", "worker", "producer-token", "events"] {
            assert!(script.contains(word), "{shell}: {word}");
        }
        if shell == "bash" {
            let mut check = std::process::Command::new("bash")
                .args(["-n", "/dev/stdin"])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            std::io::Write::write_all(&mut check.stdin.take().unwrap(), script.as_bytes()).unwrap();
            assert!(check.wait().unwrap().success(), "bash parses the script");
        }
    }
    let unknown = std::process::Command::new(env!("CARGO_BIN_EXE_codeq"))
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(2));
}

#[test]
fn completions_offer_the_queue_control_commands_and_flags() {
    for shell in ["bash", "zsh", "fish"] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_codeq"))
            .args(["completions", shell])
            .output()
            .unwrap();

        let script = String::from_utf8(output.stdout).unwrap();
        for word in
            ["dlq", "replay", "purge", "cancel", "pause", "resume", "max-in-flight", "no-rate"]
        {
            assert!(script.contains(word), "{shell}: {word}");
        }
        assert!(script.contains("IN_PROGRESS"), "{shell}: the statuses of task list --status");
    }
}

#[test]
fn global_options_typed_on_the_command_line_are_recorded_before_or_after_the_subcommand() {
    let before =
        Cli::try_parse_recording_flags(["codeq", "--producer-token", "p", "task", "get", "x"])
            .unwrap();
    let after =
        Cli::try_parse_recording_flags(["codeq", "task", "get", "x", "--worker-token", "w"])
            .unwrap();

    assert!(before.global.typed("producer_token"));
    assert!(!before.global.typed("worker_token"));
    assert!(after.global.typed("worker_token"));
}

/// Every `--help` text, with the command path it belongs to.
fn all_help(command: &mut clap::Command, path: String, out: &mut Vec<(String, String)>) {
    out.push((path.clone(), command.render_long_help().to_string()));
    for sub in command.get_subcommands_mut() {
        let name = sub.get_name().to_owned();
        all_help(sub, format!("{path} {name}"), out);
    }
}

#[test]
fn handlers_named_in_help_exist() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut helps = Vec::new();
    all_help(&mut Cli::command_line(), "codeq".into(), &mut helps);
    let worker_start = std::process::Command::new(env!("CARGO_BIN_EXE_codeq"))
        .args(["worker", "start", "--help"])
        .output()
        .unwrap();
    helps.push(("binary".into(), String::from_utf8(worker_start.stdout).unwrap()));

    let named: Vec<(String, String)> = helps
        .iter()
        .flat_map(|(path, help)| {
            help.split_whitespace()
                .filter(|word| word.contains("examples/"))
                .map(move |word| (path.clone(), word.trim_start_matches("./").to_owned()))
        })
        .collect();

    assert!(named.iter().any(|(path, _)| path == "binary"), "worker start names one");
    for (path, file) in named {
        assert!(root.join(&file).is_file(), "`{path} --help` names {file}, which does not exist");
    }
}

#[test]
fn a_bench_against_no_server_names_it_and_says_what_to_check() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_codeq"))
        .args(["bench", "--base-url", &url, "--producer-token", "p", "--worker-token", "w"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("cannot connect to {url}")), "{stderr}");
    assert!(stderr.contains(&format!("is `codeq serve` running at {url}?")), "{stderr}");
}

#[test]
fn claim_next_with_batch_mode_is_refused_as_a_configuration_error() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_codeq"))
        .args(["bench", "--producer-token", "p", "--worker-token", "w"])
        .args(["--mode", "batch", "--claim-next"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("does not apply to --mode batch"), "{stderr}");
}
