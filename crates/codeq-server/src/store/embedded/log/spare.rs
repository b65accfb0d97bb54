//! The spare segment: the next journal segment's file, written full of
//! zeros ahead of time by a thread of its own.
//!
//! A segment preallocated as a sparse file gets its blocks allocated as
//! the journal reaches them, and every allocation makes that round's
//! `fdatasync` write the file's block map as well (`fallocate` is no
//! better: its blocks are marked unwritten, and the first write to each
//! changes the map just the same). Over blocks already written, a sync
//! only has the data to write: full cycles per second rose by about 10 %
//! under load, where every round waits for the one before it
//! (docs/performance.md).
//!
//! Writing the zeros costs about as long as writing the segment (13 ms for
//! 16 MiB here), so it is done off the commit path: once the current
//! segment is half full, a thread fills [`SPARE_NAME`]; when the committer
//! rolls to a new segment, it gives the spare its header and renames it
//! into place, waiting for the fill to end if it has not (only a burst of
//! half a segment within those milliseconds meets one). When filling
//! failed, the new segment is created sparse, as before. Nor is a spare
//! filled while the disk has less than two segments' worth free: the
//! zeros would take space the journal's own writes may need first. A
//! spare left over from a previous run is deleted at start-up (it may be
//! half written).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use super::fs::Fs;

/// The spare's file name in the journal's directory.
pub const SPARE_NAME: &str = "spare-segment";

/// Zeros written per call, and synced, so that one large sync does not
/// hold the disk while commit rounds wait.
const CHUNK: usize = 1 << 20;

/// See the module docs.
pub struct Spare {
    fs: Arc<dyn Fs>,
    path: PathBuf,
    bytes: u64,
    preparing: Option<JoinHandle<io::Result<()>>>,
    /// Set once a spare is filled and synced, cleared when it is taken.
    filled: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Spare {
    /// No spare yet; one of `bytes` bytes in `dir` once asked for.
    pub fn new(fs: Arc<dyn Fs>, dir: &Path, bytes: u64) -> Self {
        Self {
            fs,
            path: dir.join(SPARE_NAME),
            bytes,
            preparing: None,
            filled: Arc::new(AtomicBool::new(false)),
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether a filled spare is waiting to be taken, for the tests.
    pub fn filled(&self) -> Arc<AtomicBool> {
        self.filled.clone()
    }

    /// Starts filling a spare, unless one is ready or being filled.
    pub fn prepare(&mut self) {
        if self.filled.load(Ordering::Acquire) || self.preparing.is_some() {
            return;
        }
        let (fs, path, bytes) = (self.fs.clone(), self.path.clone(), self.bytes);
        let (filled, stop) = (self.filled.clone(), self.stop.clone());
        let spawned = std::thread::Builder::new().name("codeq-spare".into()).spawn(move || {
            let filling = fill(fs.as_ref(), &path, bytes, &stop);
            if filling.is_err() {
                // Not left to take a full disk's last space.
                let _ = remove_if_there(fs.as_ref(), &path);
            }
            filling?;
            filled.store(true, Ordering::Release);
            Ok(())
        });
        match spawned {
            Ok(handle) => self.preparing = Some(handle),
            Err(error) => tracing::warn!(%error, "cannot start filling the next journal segment"),
        }
    }

    /// The spare's path when one is filled (waiting for a fill under way
    /// to end); it is then no longer the spare (the caller renames it).
    pub fn take(&mut self) -> Option<&Path> {
        if let Some(handle) = self.preparing.take() {
            let failure = match handle.join() {
                Ok(Ok(())) => None,
                Ok(Err(error)) => Some(error.to_string()),
                Err(_) => Some("the thread filling it panicked".to_owned()),
            };
            if let Some(error) = failure {
                // A full or failing disk: the roll still works (sparse),
                // and the journal's own writes will say more.
                tracing::warn!(
                    path = %self.path.display(),
                    %error,
                    "cannot fill the next journal segment ahead; it is created sparse (slower syncs)"
                );
            }
        }
        self.filled.swap(false, Ordering::AcqRel).then_some(self.path.as_path())
    }
}

impl Drop for Spare {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.preparing.take() {
            let _ = handle.join();
        }
    }
}

/// Writes `bytes` zeros into a new file at `path`, durably, unless `stop`
/// is set first.
fn fill(fs: &dyn Fs, path: &Path, bytes: u64, stop: &AtomicBool) -> io::Result<()> {
    remove_if_there(fs, path)?;
    let free = fs.free_bytes(path.parent().unwrap_or(Path::new(".")))?;
    if free < bytes.saturating_mul(2) {
        return Err(io::Error::new(
            io::ErrorKind::StorageFull,
            format!("{} MiB free, less than two segments", free >> 20),
        ));
    }
    let file = fs.create(path)?;
    let zeros = vec![0u8; CHUNK];
    let mut at = 0;
    while at < bytes {
        if stop.load(Ordering::Relaxed) {
            return Err(io::Error::other("stopped"));
        }
        let len = usize::try_from(bytes - at).map_or(CHUNK, |left| left.min(CHUNK));
        file.write_all_at(&zeros[..len], at)?;
        file.sync_data()?;
        at += len as u64;
    }
    Ok(())
}

/// Deletes the spare at `path`, if there is one.
pub fn remove_if_there(fs: &dyn Fs, path: &Path) -> io::Result<()> {
    match fs.remove(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}
