//! `codeq queue inspect|stats|list`: admin calls (one queue's stats also
//! with a worker token whose `eventTypes` cover it).

use super::block_on;
use crate::cli::{GlobalArgs, QueueCommand};
use crate::config::Resolved;
use crate::output;

/// Runs one `queue` subcommand.
pub fn run(global: &GlobalArgs, command: &QueueCommand) -> anyhow::Result<()> {
    let client = Resolved::load(global)?.client()?;
    match command {
        QueueCommand::Inspect(args) => {
            let stats = block_on(client.queue_stats(&args.command))??;
            output::queues(args.output.output, &[stats], true)
        }
        QueueCommand::Stats(args) => {
            let stats = block_on(client.queue_stats(&args.command))??;
            output::queues(args.output.output, &[stats], true)
        }
        QueueCommand::List(args) => {
            let stats = block_on(client.queues())??;
            output::queues(args.output, &stats, false)
        }
    }
}
