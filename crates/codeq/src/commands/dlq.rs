//! `codeq dlq list|replay|purge`: a command's dead letters (admin calls).
//!
//! A replay or purge takes the ids given, or else the dead letters the
//! filters select (newest first). Named ids the server skipped (not dead
//! letters of the command) exit 4 after the answer is printed. A purge
//! deletes for good, so it asks first on a terminal and refuses to run
//! unattended without `--yes`.

use std::io::{self, BufRead as _, IsTerminal as _, Write as _};

use codeq_client::{DeadLetterQuery, DeadLetterSelection, TokenKind};

use super::{call, check_task_id};
use crate::cli::{DlqCommand, DlqFilterArgs, DlqListArgs, DlqPurgeArgs, DlqReplayArgs, GlobalArgs};
use crate::config::Resolved;
use crate::exit::{ConfigError, PartlyRefused};
use crate::output::{self, Listing};

/// Runs one `dlq` subcommand.
pub fn run(global: &GlobalArgs, command: &DlqCommand) -> anyhow::Result<()> {
    match command {
        DlqCommand::List(args) => list(global, args),
        DlqCommand::Replay(args) => replay(global, args),
        DlqCommand::Purge(args) => purge(global, args),
    }
}

fn list(global: &GlobalArgs, args: &DlqListArgs) -> anyhow::Result<()> {
    let resolved = Resolved::load(global)?;
    let client = resolved.client()?;
    let page = super::pages(args.page.cursor.clone(), args.page.all, |cursor| {
        let query = DeadLetterQuery {
            filter: args.filter.filter(),
            limit: args.page.limit,
            cursor,
            include_payload: args.page.payload,
        };
        call(&resolved, TokenKind::Producer, client.dead_letters(&args.command, &query))
    })?;
    output::task_page(args.output.output, &page, Listing::DeadLetters)?;
    super::tell_next_page(&page, args.output.output);
    Ok(())
}

/// The ids given (checked), or the filters; and the limit to send (with
/// ids, none: the arguments refuse `--limit` beside them).
fn selection(
    ids: &[String],
    filter: &DlqFilterArgs,
    limit: Option<u32>,
) -> Result<(DeadLetterSelection, Option<u32>), ConfigError> {
    if ids.is_empty() {
        return Ok((DeadLetterSelection::Matching(filter.filter()), limit));
    }
    ids.iter().try_for_each(|id| check_task_id(id))?;
    Ok((DeadLetterSelection::Ids(ids.to_vec()), limit))
}

/// The ids asked for that are not in `done`, as an error naming them.
fn skipped(asked: &[String], done: &[String], verb: &str, command: &str) -> anyhow::Result<()> {
    let missed: Vec<&str> =
        asked.iter().filter(|id| !done.contains(id)).map(String::as_str).collect();
    if missed.is_empty() {
        return Ok(());
    }
    Err(PartlyRefused::new(format!(
        "{} of {} not {verb} (not a dead letter of {command}): {}",
        missed.len(),
        output::count(asked.len() as u64, "task"),
        missed.join(", ")
    ))
    .into())
}

fn replay(global: &GlobalArgs, args: &DlqReplayArgs) -> anyhow::Result<()> {
    let (selection, limit) = selection(&args.ids, &args.filter, args.limit)?;
    let resolved = Resolved::load(global)?;
    let client = resolved.client()?;
    let replayed = call(
        &resolved,
        TokenKind::Producer,
        client.replay_dead_letters(&args.command, &selection, limit, args.rate),
    )?;
    output::replayed(args.output.output, &replayed)?;
    skipped(&args.ids, &replayed.ids, "replayed", &args.command)
}

fn purge(global: &GlobalArgs, args: &DlqPurgeArgs) -> anyhow::Result<()> {
    let (selection, limit) = selection(&args.ids, &args.filter, args.limit)?;
    let resolved = Resolved::load(global)?;
    if !args.yes {
        // Without the token the call would fail anyway: say so before asking.
        if resolved.producer_token.is_none() {
            return Err(codeq_client::Error::MissingToken(TokenKind::Producer).into());
        }
        confirm(&purge_question(args, &selection, &resolved.base_url))?;
    }
    let client = resolved.client()?;
    let purged = call(
        &resolved,
        TokenKind::Producer,
        client.purge_dead_letters(&args.command, &selection, limit),
    )?;
    output::purged(args.output.output, &purged)?;
    skipped(&args.ids, &purged.ids, "purged", &args.command)
}

/// What a purge is about to delete, in words.
fn purge_question(args: &DlqPurgeArgs, selection: &DeadLetterSelection, server: &str) -> String {
    let which = match selection {
        DeadLetterSelection::Ids(ids) => {
            format!("{} of {}", output::count(ids.len() as u64, "dead letter"), args.command)
        }
        DeadLetterSelection::Matching(filter) => {
            let mut which = format!("the dead letters of {}", args.command);
            if let Some(text) = &filter.error_contains {
                which.push_str(&format!(" whose error contains {text:?}"));
            }
            if let Some(before) = &filter.failed_before {
                which.push_str(&format!(", failed before {before}"));
            }
            if let Some(after) = &filter.failed_after {
                which.push_str(&format!(", failed after {after}"));
            }
            format!("{which} (at most {}, newest first)", args.limit.unwrap_or(1000))
        }
    };
    format!("Delete {which} at {server} for good, with their results and artifacts? [y/N] ")
}

/// Asks `question` on the terminal; anything but yes declines. Without a
/// terminal there is no one to ask: a configuration error (exit 2).
fn confirm(question: &str) -> anyhow::Result<()> {
    if !io::stdin().is_terminal() {
        return Err(ConfigError::new(
            "dlq purge deletes tasks for good and stdin is not a terminal to confirm it on: \
             pass --yes",
        )
        .into());
    }
    err!("{question}");
    io::stderr().flush()?;
    let mut answer = String::new();
    io::stdin().lock().read_line(&mut answer)?;
    if is_yes(&answer) { Ok(()) } else { Err(anyhow::anyhow!("not confirmed: nothing was purged")) }
}

fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Commands};

    fn purge_args(argv: &[&str]) -> DlqPurgeArgs {
        let mut full = vec!["codeq", "dlq", "purge", "RENDER"];
        full.extend(argv);
        match Cli::try_parse_from(full).unwrap().command {
            Commands::Dlq(DlqCommand::Purge(args)) => args,
            other => panic!("expected dlq purge, got {other:?}"),
        }
    }

    const ID: &str = "0196a3c2-5f1e-7d2a-9b3c-4e5f6a7b8c9d";

    #[test]
    fn only_yes_confirms() {
        for yes in ["y\n", "YES\n", " yes "] {
            assert!(is_yes(yes), "{yes:?}");
        }
        for no in ["", "\n", "n\n", "no", "yep"] {
            assert!(!is_yes(no), "{no:?}");
        }
    }

    #[test]
    fn ids_are_checked_and_filters_take_the_limit_as_given() {
        let args = purge_args(&[ID]);
        let (by_id, limit) = selection(&args.ids, &args.filter, args.limit).unwrap();
        let args = purge_args(&["--limit", "7"]);
        let (_, given) = selection(&args.ids, &args.filter, args.limit).unwrap();
        let args = purge_args(&["not-an-id"]);
        let bad = selection(&args.ids, &args.filter, args.limit);

        assert_eq!(by_id, DeadLetterSelection::Ids(vec![ID.into()]));
        assert_eq!((limit, given), (None, Some(7)));
        assert!(bad.unwrap_err().to_string().contains("not-an-id"));
    }

    #[test]
    fn filters_select_when_no_id_is_given_and_cannot_be_mixed_with_ids() {
        let args = purge_args(&["--error-contains", "timeout"]);
        let (matching, limit) = selection(&args.ids, &args.filter, args.limit).unwrap();
        let mixed = Cli::try_parse_from([
            "codeq",
            "dlq",
            "purge",
            "RENDER",
            ID,
            "--error-contains",
            "timeout",
        ]);
        let bad_time =
            Cli::try_parse_from(["codeq", "dlq", "list", "RENDER", "--failed-before", "yesterday"]);
        let ids_and_limit =
            |verb| Cli::try_parse_from(["codeq", "dlq", verb, "RENDER", ID, "--limit", "1"]);

        let DeadLetterSelection::Matching(filter) = matching else { panic!("filters") };
        assert_eq!(filter.error_contains.as_deref(), Some("timeout"));
        assert_eq!(limit, None, "the server's default");
        assert!(mixed.is_err());
        assert!(bad_time.is_err());
        // Every id named is taken: a limit beside them would be ignored.
        assert!(ids_and_limit("purge").is_err() && ids_and_limit("replay").is_err());
    }

    #[test]
    fn the_purge_question_names_what_goes() {
        let args = purge_args(&["--error-contains", "timeout", "--limit", "50"]);
        let (selection, _) = selection(&args.ids, &args.filter, args.limit).unwrap();

        let question = purge_question(&args, &selection, "http://127.0.0.1:8080");

        assert!(question.contains("dead letters of RENDER whose error contains \"timeout\""));
        assert!(question.contains("at most 50"), "{question}");
        assert!(question.ends_with("[y/N] "));
    }

    #[test]
    fn ids_left_out_of_the_answer_are_named() {
        let asked = vec!["a".to_owned(), "b".to_owned()];

        let err = skipped(&asked, &["a".to_owned()], "replayed", "RENDER").unwrap_err();

        assert_eq!(code_of(&err), crate::exit::API);
        assert!(err.to_string().starts_with("1 of 2 tasks not replayed"), "{err}");
        assert!(err.to_string().ends_with(": b"), "{err}");
        assert!(skipped(&[], &[], "purged", "RENDER").is_ok(), "filters name no ids");
    }

    fn code_of(err: &anyhow::Error) -> u8 {
        crate::exit::code_for(err)
    }
}
