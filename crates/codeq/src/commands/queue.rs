//! `codeq queue inspect|stats|list`: admin calls (one queue's stats also
//! with a worker token whose `eventTypes` cover it).

use codeq_client::TokenKind;

use super::call;
use crate::cli::{GlobalArgs, QueueCommand};
use crate::config::Resolved;
use crate::output;

/// Runs one `queue` subcommand.
pub fn run(global: &GlobalArgs, command: &QueueCommand) -> anyhow::Result<()> {
    let resolved = Resolved::load(global)?;
    let client = resolved.client()?;
    let (command, output) = match command {
        QueueCommand::Inspect(args) => (&args.command, args.output.output),
        QueueCommand::Stats(args) => (&args.command, args.output.output),
        QueueCommand::List(args) => {
            let stats = call(&resolved, TokenKind::Producer, client.queues())?;
            return output::queues(args.output, &stats, false);
        }
    };
    let stats = call(&resolved, resolved.reader_token(), client.queue_stats(command))?;
    output::queues(output, &[stats], true)
}
