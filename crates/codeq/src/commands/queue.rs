//! `codeq queue inspect|stats|list|pause|resume|settings`: admin calls
//! (one queue's stats also with a worker token whose `eventTypes` cover
//! it).

use codeq_client::{QueueSettings, TokenKind};

use super::call;
use crate::cli::{GlobalArgs, QueueCommand, QueueSettingsArgs};
use crate::config::Resolved;
use crate::exit::ConfigError;
use crate::output;

/// Runs one `queue` subcommand.
pub fn run(global: &GlobalArgs, command: &QueueCommand) -> anyhow::Result<()> {
    let resolved = Resolved::load(global)?;
    let client = resolved.client()?;
    let admin = TokenKind::Producer;
    let (command, output) = match command {
        QueueCommand::Inspect(args) => (&args.command, args.output.output),
        QueueCommand::Stats(args) => (&args.command, args.output.output),
        QueueCommand::List(args) => {
            let stats = call(&resolved, admin, client.queues())?;
            return output::queues(args.output, &stats, false);
        }
        QueueCommand::Pause(args) => {
            note_if_unseen(&resolved, &client, &args.command)?;
            let settings = call(&resolved, admin, client.pause_queue(&args.command))?;
            return output::settings(args.output.output, &args.command, &settings);
        }
        QueueCommand::Resume(args) => {
            note_if_unseen(&resolved, &client, &args.command)?;
            let settings = call(&resolved, admin, client.resume_queue(&args.command))?;
            return output::settings(args.output.output, &args.command, &settings);
        }
        QueueCommand::Settings(args) => {
            let current = call(&resolved, admin, client.queue_settings(&args.command))?;
            let settings = if args.changes() {
                let wanted = changed(current, args)?;
                note_if_unseen(&resolved, &client, &args.command)?;
                call(&resolved, admin, client.set_queue_settings(&args.command, &wanted))?
            } else {
                current
            };
            return output::settings(args.output.output, &args.command, &settings);
        }
    };
    let stats = call(&resolved, resolved.reader_token(), client.queue_stats(command))?;
    output::queues(output, &[stats], true)
}

/// Says on stderr when the server has never seen `command` (no task, no
/// settings): a mistyped name (names are case-sensitive) would otherwise
/// set up a queue of its own without a word. Settings made ahead of a
/// command's first task are kept for it, so this is a note, not a refusal.
fn note_if_unseen(
    resolved: &Resolved,
    client: &codeq_client::Client,
    command: &str,
) -> anyhow::Result<()> {
    let known = call(resolved, TokenKind::Producer, client.queues())?;
    if !known.iter().any(|queue| queue.command == command) {
        const NAMED: usize = 10;
        let mut names: Vec<&str> =
            known.iter().take(NAMED).map(|queue| queue.command.as_str()).collect();
        if known.len() > NAMED {
            names.push("…");
        }
        let names = if names.is_empty() { "none".to_owned() } else { names.join(", ") };
        errln!(
            "codeq: note: the server has seen no task of {command} yet (names are \
             case-sensitive; known: {names}): its settings are kept for when one comes, \
             and the name is listed from now on (the server forgets no command)"
        );
    }
    Ok(())
}

/// `current` with what the flags change; the rest kept. (The server takes
/// the settings whole, so two changes at the same moment: the last wins.)
fn changed(current: QueueSettings, args: &QueueSettingsArgs) -> Result<QueueSettings, ConfigError> {
    let mut settings = current;
    if let Some(max) = args.max_in_flight {
        settings.max_in_flight = Some(max);
    }
    if args.no_max_in_flight {
        settings.max_in_flight = None;
    }
    if let Some(rate) = args.rate {
        settings.rate_per_second = Some(rate);
    }
    if let Some(burst) = args.burst {
        settings.burst = Some(burst);
    }
    if args.no_rate {
        settings.rate_per_second = None;
        settings.burst = None;
    }
    if settings.burst.is_some() && settings.rate_per_second.is_none() {
        return Err(ConfigError::new(format!(
            "--burst needs a rate, and {} has none: give --rate R too",
            args.command
        )));
    }
    Ok(settings)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Commands};

    fn settings_args(argv: &[&str]) -> QueueSettingsArgs {
        let mut full = vec!["codeq", "queue", "settings", "RENDER"];
        full.extend(argv);
        match Cli::try_parse_from(full).unwrap().command {
            Commands::Queue(QueueCommand::Settings(args)) => args,
            other => panic!("expected queue settings, got {other:?}"),
        }
    }

    fn limited() -> QueueSettings {
        QueueSettings {
            paused: true,
            max_in_flight: Some(4),
            rate_per_second: Some(2.0),
            burst: Some(3),
        }
    }

    #[test]
    fn a_change_keeps_what_its_flags_do_not_name() {
        let rate = changed(limited(), &settings_args(&["--rate", "0.5"])).unwrap();
        let unlimited =
            changed(limited(), &settings_args(&["--no-rate", "--no-max-in-flight"])).unwrap();

        assert_eq!(rate, QueueSettings { rate_per_second: Some(0.5), ..limited() });
        assert_eq!(unlimited, QueueSettings { paused: true, ..QueueSettings::default() });
        assert!(!settings_args(&[]).changes());
    }

    #[test]
    fn a_burst_without_any_rate_is_refused_before_a_request() {
        let err = changed(QueueSettings::default(), &settings_args(&["--burst", "5"])).unwrap_err();
        let kept = changed(limited(), &settings_args(&["--burst", "5"])).unwrap();

        assert!(err.to_string().contains("--rate"), "{err}");
        assert_eq!(kept.burst, Some(5));
    }

    #[test]
    fn contradicting_or_out_of_range_flags_are_usage_errors() {
        for argv in [
            &["--rate", "1", "--no-rate"][..],
            &["--burst", "2", "--no-rate"],
            &["--max-in-flight", "2", "--no-max-in-flight"],
            &["--max-in-flight", "0"],
            &["--rate", "0"],
            &["--rate", "-1"],
            &["--rate", "fast"],
        ] {
            let mut full = vec!["codeq", "queue", "settings", "RENDER"];
            full.extend(argv);
            assert!(Cli::try_parse_from(full).is_err(), "{argv:?}");
        }
    }
}
