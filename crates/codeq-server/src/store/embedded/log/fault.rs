//! [`FaultFs`]: the fault-injection seam of the embedded backend.
//!
//! It wraps the real file system (real files, real `fdatasync`) and keeps
//! track of what a power loss would leave: each file as of its last
//! successful `sync_data` (every write since undone, whether it extended
//! the file or overwrote zeros written ahead), and only the directory
//! entries made durable by a `sync_dir`. [`FaultFs::crash_image`] copies exactly that
//! into a new directory, which a test then opens as if the machine had
//! lost power. Tests can also delay, hold back or fail syncs, fail writes
//! or the creation of a named file with a full disk, or turn `sync_data`
//! into a no-op — after which the power-loss test must (and does) find
//! acknowledged writes missing.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::fs::{Fs, FsFile, RealFs};

/// What a power loss would keep of one file.
#[derive(Debug, Clone, Default)]
struct Durable {
    /// The directory entry exists after a power loss.
    entry_synced: bool,
    /// The file's size as of its last sync.
    synced_size: u64,
    /// What each write since the last sync overwrote, oldest first: where,
    /// and the bytes that were there (shorter than the write where it went
    /// past the end of the file). Undone in reverse order, they give the
    /// file as of its last sync, whatever it held before (zeros written
    /// ahead, old frames, holes).
    undo: Vec<(u64, Vec<u8>)>,
    /// For a rename not yet made durable: what the target held before
    /// (`Some(None)`: it did not exist).
    replaced: Option<Option<Vec<u8>>>,
}

/// Injected faults and the bookkeeping of durability.
#[derive(Debug, Default)]
struct State {
    files: HashMap<PathBuf, Durable>,
    sync_noop: bool,
    sync_delay: Option<Duration>,
    syncs_gated: bool,
    /// Syncs let through before the gate closes again.
    passes_before_gate: Option<u64>,
    syncs_waiting: usize,
    syncs_started: u64,
    syncs_done: u64,
    fail_syncs_after: Option<u64>,
    /// Injected sync failures report a full disk instead of an I/O error.
    syncs_fail_for_space: bool,
    bytes_written: u64,
    /// The ranges each file has had written: rewriting inside one needs no
    /// new space, so a full disk does not refuse it.
    written: HashMap<PathBuf, Vec<(u64, u64)>>,
    fail_writes_after_bytes: Option<u64>,
    /// File names whose creation fails.
    refused_names: Vec<String>,
    /// What `free_bytes` answers instead of the real file system.
    free_bytes: Option<u64>,
    scramble_unsynced: bool,
}

/// The shared half: the state and the gate's condition variable.
#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    gate: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A file system that can fail, delay or forget; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct FaultFs {
    shared: Arc<Shared>,
}

impl FaultFs {
    /// A fault-free wrapper of the real file system.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `free_bytes` answer `bytes` (`None`: the real figure).
    pub fn set_free_bytes(&self, bytes: Option<u64>) {
        self.shared.lock().free_bytes = bytes;
    }

    /// Makes `sync_data` do nothing (and make nothing durable).
    pub fn set_sync_noop(&self, noop: bool) {
        self.shared.lock().sync_noop = noop;
    }

    /// Makes every `sync_data` take at least `delay`.
    pub fn set_sync_delay(&self, delay: Option<Duration>) {
        self.shared.lock().sync_delay = delay;
    }

    /// Holds every `sync_data` back until [`FaultFs::open_gate`].
    pub fn close_gate(&self) {
        self.shared.lock().syncs_gated = true;
    }

    /// Lets held-back syncs (and later ones) proceed.
    pub fn open_gate(&self) {
        let mut state = self.shared.lock();
        state.syncs_gated = false;
        state.passes_before_gate = None;
        self.shared.gate.notify_all();
    }

    /// Lets the held-back syncs go, and `passes` more, then holds the
    /// later ones back.
    pub fn open_gate_for(&self, passes: u64) {
        let mut state = self.shared.lock();
        state.syncs_gated = false;
        state.passes_before_gate = Some(passes);
        self.shared.gate.notify_all();
    }

    /// How many syncs wait at the closed gate.
    pub fn syncs_waiting(&self) -> usize {
        self.shared.lock().syncs_waiting
    }

    /// How many syncs were asked for (failed ones included).
    pub fn syncs_started(&self) -> u64 {
        self.shared.lock().syncs_started
    }

    /// How many syncs have completed.
    pub fn syncs_done(&self) -> u64 {
        self.shared.lock().syncs_done
    }

    /// Makes every sync after the next `count` fail with an I/O error.
    pub fn fail_syncs_after(&self, count: u64) {
        let mut state = self.shared.lock();
        state.fail_syncs_after = Some(state.syncs_done + count);
    }

    /// As [`FaultFs::fail_syncs_after`], the failure being a full disk (as
    /// delayed allocation reports one at `fsync`).
    pub fn fail_syncs_for_space_after(&self, count: u64) {
        self.fail_syncs_after(count);
        self.shared.lock().syncs_fail_for_space = true;
    }

    /// Makes writes fail with "no space left on device" once `bytes` more
    /// bytes have been written (the write that crosses it is cut short).
    /// A rewrite of bytes written before takes no space and goes through.
    pub fn fail_writes_after_bytes(&self, bytes: u64) {
        let mut state = self.shared.lock();
        state.fail_writes_after_bytes = Some(state.bytes_written + bytes);
    }

    /// Makes every creation of a file named `name` fail (with a full
    /// disk).
    pub fn refuse_creating(&self, name: &str) {
        self.shared.lock().refused_names.push(name.to_owned());
    }

    /// Makes crash images keep, of each file's bytes written but not
    /// synced, every other 4 KiB page (as a disk that wrote back some pages
    /// of the last round and not others), instead of none.
    pub fn scramble_unsynced(&self, scramble: bool) {
        self.shared.lock().scramble_unsynced = scramble;
    }

    /// Copies what a power loss now would leave of `dir` (recursively)
    /// into `to`: files the wrapper did not write are copied whole; files
    /// it wrote keep their synced bytes, if their directory entry is
    /// durable.
    pub fn crash_image(&self, dir: &Path, to: &Path) -> io::Result<()> {
        let state = self.shared.lock();
        copy_durable(&state, dir, to)
    }

    fn track_created(&self, path: &Path) {
        self.shared.lock().files.insert(path.to_path_buf(), Durable::default());
    }

    fn sync_entries(&self, dir: &Path) {
        let mut state = self.shared.lock();
        for (path, durable) in &mut state.files {
            if path.parent() == Some(dir) {
                durable.entry_synced = true;
                durable.replaced = None;
            }
        }
    }
}

fn copy_durable(state: &State, dir: &Path, to: &Path) -> io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_durable(state, &path, &target)?;
            continue;
        }
        match state.files.get(&path) {
            None => {
                std::fs::copy(&path, &target)?;
            }
            Some(Durable { replaced: Some(old), .. }) => {
                if let Some(old) = old {
                    std::fs::write(&target, old)?;
                }
            }
            Some(durable) if durable.entry_synced => {
                let bytes = std::fs::read(&path)?;
                std::fs::write(&target, as_synced(bytes, durable, state.scramble_unsynced))?;
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// `bytes`, the file now, as a power loss would leave it: every write
/// since the last sync undone (with `scramble`, only in every other 4 KiB
/// page from the first one written: pages of a round written back out of
/// order), at its size as of the last sync.
fn as_synced(mut bytes: Vec<u8>, durable: &Durable, scramble: bool) -> Vec<u8> {
    const PAGE: u64 = 4096;
    let first_page = durable.undo.iter().map(|(offset, _)| offset / PAGE).min().unwrap_or(0);
    let lost = |page: u64| !scramble || (page - first_page).is_multiple_of(2);
    for (offset, old) in durable.undo.iter().rev() {
        for (at, byte) in (*offset..).zip(old) {
            if lost(at / PAGE) {
                let at = usize::try_from(at).unwrap_or(usize::MAX);
                if at < bytes.len() {
                    bytes[at] = *byte;
                }
            }
        }
    }
    bytes.resize(usize::try_from(durable.synced_size).unwrap_or(usize::MAX), 0);
    bytes
}

/// A file of [`FaultFs`].
struct FaultFile {
    path: PathBuf,
    inner: Arc<dyn FsFile>,
    shared: Arc<Shared>,
}

impl FsFile for FaultFile {
    /// What a write overwrites is read first, and both happen under the
    /// state's lock, so that a crash image never sees a write without its
    /// undo record.
    fn write_all_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        let mut state = self.shared.lock();
        let end = offset + bytes.len() as u64;
        let rewrite = state
            .written
            .get(&self.path)
            .is_some_and(|ranges| ranges.iter().any(|&(from, to)| from <= offset && end <= to));
        let room = state
            .fail_writes_after_bytes
            .filter(|_| !rewrite)
            .map_or(u64::MAX, |limit| limit.saturating_sub(state.bytes_written));
        let allowed = usize::try_from(room).unwrap_or(usize::MAX).min(bytes.len());
        state.bytes_written += allowed as u64;
        // Appends extend the last range: the list stays short.
        let ranges = state.written.entry(self.path.clone()).or_default();
        match ranges.last_mut() {
            Some((_, to)) if *to == offset => *to = offset + allowed as u64,
            _ => ranges.push((offset, offset + allowed as u64)),
        }
        let there = self.inner.size()?.saturating_sub(offset).min(allowed as u64);
        let mut old = vec![0; usize::try_from(there).unwrap_or(allowed)];
        self.inner.read_exact_at(&mut old, offset)?;
        self.inner.write_all_at(&bytes[..allowed], offset)?;
        state.files.entry(self.path.clone()).or_default().undo.push((offset, old));
        if allowed < bytes.len() {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "no space left on device (injected)",
            ));
        }
        Ok(())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_exact_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut state = self.shared.lock();
        state.syncs_started += 1;
        state.syncs_waiting += 1;
        match state.passes_before_gate {
            Some(0) => state.syncs_gated = true,
            Some(passes) if !state.syncs_gated => state.passes_before_gate = Some(passes - 1),
            _ => {}
        }
        while state.syncs_gated {
            state = self.shared.gate.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        state.syncs_waiting -= 1;
        let (noop, delay) = (state.sync_noop, state.sync_delay);
        let fail = state.fail_syncs_after.is_some_and(|after| state.syncs_done >= after);
        let for_space = state.syncs_fail_for_space;
        // What a sync covers: the writes before it started.
        let written = state.files.get(&self.path).map_or(0, |durable| durable.undo.len());
        let size = self.inner.size()?;
        drop(state);
        if let Some(delay) = delay {
            std::thread::sleep(delay);
        }
        if fail && for_space {
            let full = "fsync failed: no space left on device (injected)";
            return Err(io::Error::new(io::ErrorKind::StorageFull, full));
        }
        if fail {
            return Err(io::Error::other("fsync failed: input/output error (injected)"));
        }
        if !noop {
            self.inner.sync_data()?;
        }
        let mut state = self.shared.lock();
        state.syncs_done += 1;
        if !noop {
            let durable = state.files.entry(self.path.clone()).or_default();
            durable.undo.drain(..written.min(durable.undo.len()));
            durable.synced_size = size;
        }
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        self.inner.size()
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        self.inner.truncate(len)?;
        let mut state = self.shared.lock();
        // A cut is taken as durable at once (what it cut off is gone
        // either way); a growth only once synced.
        let durable = state.files.entry(self.path.clone()).or_default();
        durable.synced_size = durable.synced_size.min(len);
        Ok(())
    }
}

impl Fs for FaultFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        RealFs.create_dir_all(dir)
    }

    fn free_bytes(&self, dir: &Path) -> io::Result<u64> {
        let set = self.shared.lock().free_bytes;
        set.map_or_else(|| RealFs.free_bytes(dir), Ok)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        RealFs.list(dir)
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn FsFile>> {
        let name = path.file_name().map(|name| name.to_string_lossy().into_owned());
        if name.is_some_and(|name| self.shared.lock().refused_names.contains(&name)) {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "no space left on device (injected)",
            ));
        }
        let inner = RealFs.create(path)?;
        self.track_created(path);
        Ok(Arc::new(FaultFile { path: path.to_path_buf(), inner, shared: self.shared.clone() }))
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn FsFile>> {
        let inner = RealFs.open(path)?;
        let len = inner.size()?;
        self.shared.lock().files.entry(path.to_path_buf()).or_insert(Durable {
            entry_synced: true,
            synced_size: len,
            undo: Vec::new(),
            replaced: None,
        });
        Ok(Arc::new(FaultFile { path: path.to_path_buf(), inner, shared: self.shared.clone() }))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        RealFs.read(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.shared.lock();
        let replaced = match state.files.get(to) {
            Some(durable) if !durable.entry_synced => None,
            Some(durable) => std::fs::read(to)
                .ok()
                .map(|bytes| as_synced(bytes, durable, state.scramble_unsynced)),
            None => std::fs::read(to).ok(),
        };
        RealFs.rename(from, to)?;
        let mut moved = state.files.remove(from).unwrap_or_default();
        moved.replaced = Some(replaced);
        moved.entry_synced = true;
        state.files.insert(to.to_path_buf(), moved);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        RealFs.remove(path)?;
        self.shared.lock().files.remove(path);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        RealFs.sync_dir(dir)?;
        self.sync_entries(dir);
        Ok(())
    }
}
