//! Offline care of a stopped server's data directory: `codeq storage
//! check` (the start-up checks, run without changing a byte) and `codeq
//! storage backup` (a checked, consistent, durable copy that `codeq serve`
//! can start from).
//!
//! Both hold the data directory's lock while they work, so a server cannot
//! start on it in the meantime, and refuse when one is running. The lock
//! files they create to do so are removed when they are done: they leave
//! the directory as they found it. Backing up
//! a running server is done below the server: a file-system snapshot of
//! the data directory is a crash image, which recovery opens like any
//! other (docs/storage.md).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{CheckReport, EmbeddedStore};
use crate::data_dir::{DataDirError, DataDirLock, LOCK_FILE};
use crate::store::embedded::log::spare::SPARE_NAME;
use crate::store::embedded::log::{LOCK_NAME, OpenError};

/// The store's directory inside a data directory.
pub const STORE_DIR: &str = "store";

/// Why a check or backup did not complete.
#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    /// The store does not match what codeQ wrote (or is not there).
    #[error(transparent)]
    Refused(OpenError),
    /// The data directory is missing, in use or not a directory.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// The data directory holds no store.
    #[error("there is no codeQ store in {} (no `store` directory there, or no such directory: is it the server's --data-dir?)", .0.display())]
    NoStore(PathBuf),
    /// The backup's target is not empty.
    #[error("{} exists and is not empty: back up into a new directory", .0.display())]
    TargetNotEmpty(PathBuf),
    /// Copying failed.
    #[error("{context}: {cause}")]
    Io {
        /// What was being done.
        context: String,
        /// What failed (in the message, not a `source`: a chain printed
        /// whole would say it twice).
        cause: io::Error,
    },
    /// The copy does not hold what the original held.
    #[error("the copy does not match the original: {0}")]
    Mismatch(String),
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> MaintenanceError {
    let context = context.into();
    move |cause| MaintenanceError::Io { context, cause }
}

/// The held lock of a data directory. Dropping it removes the lock files
/// that were not there before it was taken: the store's (taken and
/// released by its check), then the data directory's own, while it is
/// still held, so that no server can have opened it in between.
struct Held {
    created: Vec<PathBuf>,
    _lock: DataDirLock,
}

impl Drop for Held {
    fn drop(&mut self) {
        for path in &self.created {
            // At worst an empty lock file stays: it locks nothing.
            let _ = fs::remove_file(path);
        }
    }
}

/// The lock files of the data directory `dir`, the store's first.
fn lock_files(dir: &Path) -> [PathBuf; 2] {
    [dir.join(STORE_DIR).join(LOCK_NAME), dir.join(LOCK_FILE)]
}

/// Locks the data directory `dir` of a stopped server.
fn lock(dir: &Path) -> Result<Held, MaintenanceError> {
    if !dir.is_dir() {
        return Err(MaintenanceError::NoStore(dir.to_path_buf()));
    }
    let created = lock_files(dir).into_iter().filter(|path| fs::symlink_metadata(path).is_err());
    let created = created.collect();
    Ok(Held { created, _lock: DataDirLock::acquire(dir)? })
}

/// Runs the start-up checks on the data directory `dir` without changing
/// anything.
pub fn check(dir: &Path) -> Result<CheckReport, MaintenanceError> {
    let _lock = lock(dir)?;
    check_store(dir)
}

/// [`EmbeddedStore::check`] of the store in the data directory `dir`.
fn check_store(dir: &Path) -> Result<CheckReport, MaintenanceError> {
    let store = dir.join(STORE_DIR);
    if !store.is_dir() {
        return Err(MaintenanceError::NoStore(dir.to_path_buf()));
    }
    EmbeddedStore::check(&store).map_err(MaintenanceError::Refused)
}

/// What a backup copied.
#[derive(Debug, Clone)]
pub struct BackupReport {
    /// The checked state of the original (and of the copy).
    pub checked: CheckReport,
    /// Files copied.
    pub files: u64,
    /// Bytes copied.
    pub bytes: u64,
}

/// Copies the data directory `dir` of a stopped server to `out` (which
/// must not exist or be empty): checks the original, copies every file
/// but the locks and the spare segment, syncs the copy, and checks that it holds the same tasks.
pub fn backup(dir: &Path, out: &Path) -> Result<BackupReport, MaintenanceError> {
    let _lock = lock(dir)?;
    let checked = check_store(dir)?;
    let occupied = fs::read_dir(out).map(|mut entries| entries.next().is_some()).unwrap_or(false);
    if occupied {
        return Err(MaintenanceError::TargetNotEmpty(out.to_path_buf()));
    }
    let mut copied = Copied::default();
    let [store_lock, dir_lock] = lock_files(dir);
    let left_out = [dir_lock, store_lock, dir.join(STORE_DIR).join(SPARE_NAME)];
    copy_tree(dir, out, &left_out, &mut copied)?;
    let _copy_lock = lock(out)?;
    let copy = check_store(out)?;
    if copy.tasks != checked.tasks || copy.recovered.last_seq != checked.recovered.last_seq {
        return Err(MaintenanceError::Mismatch(format!(
            "{} tasks up to change {} in the original, {} up to change {} in the copy",
            checked.tasks, checked.recovered.last_seq, copy.tasks, copy.recovered.last_seq
        )));
    }
    Ok(BackupReport { checked, files: copied.files, bytes: copied.bytes })
}

#[derive(Default)]
struct Copied {
    files: u64,
    bytes: u64,
}

/// Copies `from` into `to` recursively, each file and directory synced;
/// the files at the paths `left_out` (the locks and the spare segment; an
/// artifact of the same name elsewhere is copied) are not.
fn copy_tree(
    from: &Path,
    to: &Path,
    left_out: &[PathBuf],
    copied: &mut Copied,
) -> Result<(), MaintenanceError> {
    crate::data_dir::create_private_dir(to)
        .map_err(io_error(format!("cannot create {}", to.display())))?;
    let entries =
        fs::read_dir(from).map_err(io_error(format!("cannot read {}", from.display())))?;
    for entry in entries {
        let entry = entry.map_err(io_error(format!("cannot read {}", from.display())))?;
        let name = entry.file_name();
        let (source, target) = (entry.path(), to.join(&name));
        if left_out.contains(&source) {
            continue;
        }
        let kind =
            entry.file_type().map_err(io_error(format!("cannot read {}", source.display())))?;
        if kind.is_dir() {
            copy_tree(&source, &target, left_out, copied)?;
            continue;
        }
        let bytes = fs::copy(&source, &target).map_err(io_error(format!(
            "cannot copy {} to {}",
            source.display(),
            target.display()
        )))?;
        fs::File::open(&target)
            .and_then(|file| file.sync_all())
            .map_err(io_error(format!("cannot sync {}", target.display())))?;
        copied.files += 1;
        copied.bytes += bytes;
    }
    fs::File::open(to)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error(format!("cannot sync {}", to.display())))
}
