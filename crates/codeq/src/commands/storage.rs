//! `codeq storage check | backup`: the offline checks and backups of
//! `codeq_server::store::embedded::maintenance`, printed for people.
//!
//! A damaged store exits 2, as `codeq serve` does when it refuses one.

use std::fmt::Write as _;

use codeq_server::data_dir::DataDirError;
use codeq_server::store::embedded::CheckReport;
use codeq_server::store::embedded::log::OpenError;
use codeq_server::store::embedded::maintenance::{self, MaintenanceError};

use crate::cli::{StorageBackupArgs, StorageCheckArgs, StorageCommand};
use crate::exit::ConfigError;

/// Runs a `codeq storage` command.
pub fn run(command: &StorageCommand) -> anyhow::Result<()> {
    match command {
        StorageCommand::Check(args) => check(args),
        StorageCommand::Backup(args) => backup(args),
    }
}

/// A refused store (or a refused target) is a configuration problem
/// (exit 2), as at start-up; a file system that fails (read-only, an I/O
/// error) is not the store's damage (exit 1).
fn explain(error: MaintenanceError) -> anyhow::Error {
    match error {
        failed @ (MaintenanceError::DataDir(DataDirError::Io { .. })
        | MaintenanceError::Refused(OpenError::Io(_))) => failed.into(),
        refused @ (MaintenanceError::Refused(_)
        | MaintenanceError::NoStore(_)
        | MaintenanceError::DataDir(_)
        | MaintenanceError::TargetNotEmpty(_)) => ConfigError::new(refused.to_string()).into(),
        other => other.into(),
    }
}

fn check(args: &StorageCheckArgs) -> anyhow::Result<()> {
    let report = maintenance::check(&args.dir).map_err(explain)?;
    out!("{}", describe(&args.dir.display().to_string(), &report));
    Ok(())
}

fn backup(args: &StorageBackupArgs) -> anyhow::Result<()> {
    let report = maintenance::backup(&args.dir, &args.out).map_err(explain)?;
    out!("{}", describe(&args.dir.display().to_string(), &report.checked));
    outln!(
        "backed up to {}: {} files, {} bytes, checked",
        args.out.display(),
        report.files,
        report.bytes
    );
    Ok(())
}

/// The report of a check, one fact per line.
pub fn describe(dir: &str, report: &CheckReport) -> String {
    let recovered = &report.recovered;
    let mut text = String::new();
    let _ = writeln!(text, "{dir}: the store is sound");
    let _ = writeln!(
        text,
        "  journal: segments {}..{}, {} bytes, {} changes up to change {}",
        recovered.first_segment,
        recovered.last_segment,
        recovered.bytes,
        recovered.frames,
        recovered.last_seq
    );
    let _ = writeln!(
        text,
        "  previous stop: {}",
        if recovered.clean_stop {
            "clean"
        } else {
            "not clean (killed or crashed): the next start replays the journal, as always"
        }
    );
    let repairs = &recovered.repairs;
    if let Some((segment, offset, bytes)) = repairs.torn {
        let _ = writeln!(
            text,
            "  torn final write: {bytes} bytes at segment {segment}, byte {offset} (never acknowledged; the next start sets it aside)"
        );
    }
    if !repairs.empty.is_empty() {
        let _ = writeln!(
            text,
            "  empty segments {:?} after an unfinished segment roll: the next start deletes them",
            repairs.empty
        );
    }
    if !repairs.obsolete.is_empty() {
        let _ = writeln!(
            text,
            "  left-over segments {:?} (from a compaction that stopped half-way): the next start deletes them",
            repairs.obsolete
        );
    }
    let _ = writeln!(text, "  tasks: {}", report.tasks);
    for queue in &report.queues {
        let _ = writeln!(
            text,
            "  queue {}: ready {}, delayed {}, in progress {}, dead-lettered {}",
            queue.command, queue.ready, queue.delayed, queue.in_progress, queue.dlq
        );
    }
    text
}
