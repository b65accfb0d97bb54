//! The journal: codeQ's own append-only, checksummed log of changes, the
//! single source of truth of the embedded backend.
//!
//! Records are puts and deletes of `(table, key) → value`. A change (one
//! transition) is one [`frame::Batch`], appended to the current segment
//! file by the committer thread with group commit (one write and one
//! `fdatasync` per round). Sequence numbers and file positions are assigned
//! when a batch is queued ([`Appender::append`], called under the store's
//! lock, so the journal's order is the order of transitions), which is why
//! a value's [`Location`] is known at once; it may be read back once the
//! [`watermark`] has passed its batch.
//!
//! Layout of the store directory: `MANIFEST` ([`manifest`]), segments
//! `00000001.log`, `00000002.log`, … (each sealed by a frame naming the
//! next), `LOCK` (held while a process has the store open),
//! `spare-segment` (the next segment, filled ahead of time: [`spare`]) and
//! `torn-*.bin` (bytes of a torn final write set aside at recovery).
//!
//! Every byte goes through the [`fs::Fs`] seam; [`fault::FaultFs`] is the
//! one tests use to delay, fail or forget I/O.

mod commit_stats;
mod committer;
pub mod fault;
pub mod frame;
pub mod fs;
pub mod manifest;
mod recover;
pub mod spare;
pub mod watermark;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread;

use tokio::sync::{Semaphore, SemaphorePermit};

use self::commit_stats::CommitStats;
use self::committer::{Committer, Job, Seal};
use self::frame::{Batch, SEAL_FRAME_LEN, SEGMENT_HEADER_LEN, seal_frame};
use self::fs::{Fs, FsFile};
use self::manifest::{Checkpoint, Manifest};
use self::spare::Spare;
use self::watermark::Watermark;
use crate::config::Durability;

pub use self::recover::{LOCK_NAME, OpenError, Recovered, Repairs, Replay};

/// The tables of the embedded backend. Their numbers are part of the
/// on-disk format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Table {
    /// Task bodies: what the producer sent (written once).
    Tasks = 1,
    /// Task states (written by every transition).
    States = 2,
    /// Result records.
    Results = 3,
    /// Every command ever used.
    Commands = 4,
    /// Result callbacks owed (the webhook outbox).
    Outbox = 5,
    /// Worker-availability subscriptions.
    Subscriptions = 6,
    /// Per-command settings (pause, flow limits).
    Settings = 7,
}

impl Table {
    /// The table numbered `n`.
    pub fn from_u8(n: u8) -> Option<Self> {
        match n {
            1 => Some(Self::Tasks),
            2 => Some(Self::States),
            3 => Some(Self::Results),
            4 => Some(Self::Commands),
            5 => Some(Self::Outbox),
            6 => Some(Self::Subscriptions),
            7 => Some(Self::Settings),
            _ => None,
        }
    }
}

/// Where a value lies in the journal (12 bytes: memory keeps three per
/// task). A segment file never reaches 4 GiB: its frames are at most
/// 2 GiB and it is sealed past 16 MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Location {
    /// The segment.
    pub segment: u32,
    /// The value's first byte in the segment file.
    pub offset: u32,
    /// The value's length.
    pub len: u32,
}

impl Location {
    /// The location of a value of `len` bytes at `offset` of `segment`.
    pub fn new(segment: u32, offset: u64, len: usize) -> Self {
        let to_u32 = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        Self { segment, offset: to_u32(offset), len: to_u32(len as u64) }
    }
}

/// Tuning of the journal.
#[derive(Debug, Clone, Copy)]
pub struct LogOptions {
    /// `fsync` or `buffered`.
    pub durability: Durability,
    /// A segment is sealed once it would grow past this size. Segment
    /// files are preallocated to it (the first sparse, the later ones
    /// written full of zeros ahead: [`spare`]), so that an append does not
    /// change the file's size and `fdatasync` has no size to write.
    pub segment_bytes: u64,
    /// Batches queued and not yet written, at most (back-pressure).
    pub queue_slots: usize,
}

impl LogOptions {
    /// Defaults for `durability`.
    pub fn new(durability: Durability) -> Self {
        Self { durability, segment_bytes: 16 * 1024 * 1024, queue_slots: 8192 }
    }
}

/// The path of segment `id` in `dir`.
pub fn segment_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id:08}.log"))
}

/// The id of a segment file name.
pub fn segment_id(name: &str) -> Option<u32> {
    let digits = name.strip_suffix(".log")?;
    (digits.len() == 8 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// What the committer, the readers and the appender share.
pub(crate) struct Shared {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    segments: RwLock<HashMap<u32, Arc<dyn FsFile>>>,
    watermark: Watermark,
    slots: Semaphore,
    /// Serialises rewrites of the manifest (compaction, close).
    manifest: Mutex<Manifest>,
    /// What the committer did, for the metrics.
    stats: CommitStats,
}

impl Shared {
    fn segment(&self, id: u32) -> Option<Arc<dyn FsFile>> {
        self.segments.read().unwrap_or_else(PoisonError::into_inner).get(&id).cloned()
    }

    fn add_segment(&self, id: u32, file: Arc<dyn FsFile>) {
        self.segments.write().unwrap_or_else(PoisonError::into_inner).insert(id, file);
    }

    /// Stops the journal for good, outside a commit round.
    fn fail(&self, cause: String) {
        self.slots.close();
        let seq = self.watermark.durable() + 1;
        self.watermark.fail(watermark::Failure {
            disk_full: false,
            cause: cause.into(),
            first_seq: seq,
            last_seq: seq,
        });
    }
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The segment has been compacted away: look the value up again.
    #[error("the segment was compacted")]
    Moved,
    /// The disk failed.
    #[error("read from the journal failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The journal, open. See the module docs.
pub struct Log {
    shared: Arc<Shared>,
    committer: Mutex<Option<thread::JoinHandle<()>>>,
    /// Set while a filled spare segment waits for the next roll.
    spare_filled: Arc<AtomicBool>,
    _lock: std::fs::File,
}

/// The queueing end of the journal, kept under the store's lock.
pub struct Appender {
    shared: Arc<Shared>,
    jobs: Option<Sender<Job>>,
    next_seq: u64,
    segment: u32,
    tail: u64,
    segment_bytes: u64,
    /// Bytes of data of each sealed segment still in the journal.
    sealed: BTreeMap<u32, u64>,
}

/// A reserved place in the commit queue (see [`Log::reserve`]).
pub struct Slot<'a>(SemaphorePermit<'a>);

/// Why a batch could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The journal has failed or is closed.
    #[error("the journal is not taking writes")]
    Closed,
    /// The change is larger than one frame can hold.
    #[error("a change of {0} bytes is larger than the journal takes at once")]
    TooLarge(usize),
}

/// A journal replayed and checked, not yet open for writing (see
/// [`Log::recover`]).
pub struct Recovering {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    options: LogOptions,
    recovered: Recovered,
    lock: std::fs::File,
}

impl Recovering {
    /// What recovery found.
    pub fn recovered(&self) -> &Recovered {
        &self.recovered
    }

    /// Makes the repairs recovery reported, records the checkpoint of what
    /// was recovered, and starts the committer.
    pub fn start(self) -> Result<(Log, Appender), OpenError> {
        let Self { fs, dir, options, recovered, lock } = self;
        let segment_bytes = options.segment_bytes.max(SEGMENT_HEADER_LEN + 4096);
        recover::repair(fs.as_ref(), &dir, &recovered, segment_bytes)?;
        spare::remove_if_there(fs.as_ref(), &dir.join(spare::SPARE_NAME))?;
        let mut segments = HashMap::new();
        for id in recovered.first_segment..=recovered.last_segment {
            segments.insert(id, fs.open(&segment_path(&dir, id))?);
        }
        let manifest = Manifest {
            first_segment: recovered.first_segment,
            checkpoint: Checkpoint { seq: recovered.last_seq, live: recovered.live },
            clean: false,
            ..Manifest::new()
        };
        manifest.write(fs.as_ref(), &dir)?;
        let shared = Arc::new(Shared {
            fs,
            dir,
            segments: RwLock::new(segments),
            watermark: Watermark::new(recovered.last_seq),
            slots: Semaphore::new(options.queue_slots),
            manifest: Mutex::new(manifest),
            stats: CommitStats::new(recovered.last_seq),
        });
        let (sender, jobs) = mpsc::channel();
        let committer = Committer {
            shared: shared.clone(),
            durability: options.durability,
            segment_bytes,
            tails: HashMap::from([(recovered.last_segment, recovered.tail)]),
            spare: Spare::new(shared.fs.clone(), &shared.dir, segment_bytes),
        };
        let spare_filled = committer.spare.filled();
        let handle = thread::Builder::new()
            .name("codeq-committer".into())
            .spawn(move || committer.run_guarded(&jobs))?;
        let appender = Appender {
            shared: shared.clone(),
            jobs: Some(sender),
            next_seq: recovered.last_seq + 1,
            segment: recovered.last_segment,
            tail: recovered.tail,
            segment_bytes,
            sealed: recovered.sealed_sizes.iter().copied().collect(),
        };
        let committer = Mutex::new(Some(handle));
        Ok((Log { shared, committer, spare_filled, _lock: lock }, appender))
    }
}

impl Log {
    /// Replays the journal in `dir` (or finds none) into `replay` and
    /// checks it, changing nothing: [`Recovering::start`] then opens it.
    /// Refuses a journal that does not match its manifest (see
    /// [`OpenError`]).
    pub fn recover(
        fs: Arc<dyn Fs>,
        dir: &Path,
        options: LogOptions,
        replay: &mut dyn Replay,
    ) -> Result<Recovering, OpenError> {
        let lock = recover::lock(dir)?;
        let recovered = recover::recover(fs.as_ref(), dir, replay, recover::Mode::Open)?;
        Ok(Recovering { fs, dir: dir.to_path_buf(), options, recovered, lock })
    }

    /// Checks the journal in `dir` without changing anything, replaying it
    /// into `replay`. The store must not be open.
    pub fn check(fs: &dyn Fs, dir: &Path, replay: &mut dyn Replay) -> Result<Recovered, OpenError> {
        let _lock = recover::lock(dir)?;
        recover::recover(fs, dir, replay, recover::Mode::Check)
    }

    /// Waits for a place in the commit queue (back-pressure: the queue of
    /// batches not yet written is bounded).
    pub async fn reserve(&self) -> Result<Slot<'_>, AppendError> {
        self.shared.slots.acquire().await.map(Slot).map_err(|_| AppendError::Closed)
    }

    /// Two places at once, for two batches queued one after the other.
    pub async fn reserve_two(&self) -> Result<(Slot<'_>, Slot<'_>), AppendError> {
        let mut first = self.shared.slots.acquire_many(2).await.map_err(|_| AppendError::Closed)?;
        let second = first.split(1).ok_or(AppendError::Closed)?;
        Ok((Slot(first), Slot(second)))
    }

    /// The durable watermark.
    pub fn watermark(&self) -> &Watermark {
        &self.shared.watermark
    }

    /// Whether a filled spare segment waits for the next roll.
    pub fn spare_filled(&self) -> bool {
        self.spare_filled.load(Ordering::Acquire)
    }

    /// The committer's counters and the watermark, for the metrics.
    pub fn stats(&self) -> crate::store::EngineStats {
        self.shared.stats.snapshot(self.shared.watermark.durable())
    }

    /// Reads a value back. Its batch must be durable (wait for it first).
    pub fn read(&self, at: Location) -> Result<Vec<u8>, ReadError> {
        let file = self.shared.segment(at.segment).ok_or(ReadError::Moved)?;
        let mut bytes = vec![0; at.len as usize];
        file.read_exact_at(&mut bytes, u64::from(at.offset))?;
        Ok(bytes)
    }

    /// The bytes of a whole segment (compaction reads sealed ones).
    pub fn read_segment(&self, id: u32) -> Result<Vec<u8>, ReadError> {
        let file = self.shared.segment(id).ok_or(ReadError::Moved)?;
        let mut bytes = vec![0; usize::try_from(file.size()?).unwrap_or(usize::MAX)];
        file.read_exact_at(&mut bytes, 0)?;
        Ok(bytes)
    }

    /// The open segments, oldest first, with their sizes.
    pub fn segments(&self) -> Vec<(u32, u64)> {
        let segments = self.shared.segments.read().unwrap_or_else(PoisonError::into_inner);
        let mut sizes: Vec<(u32, u64)> =
            segments.iter().map(|(id, file)| (*id, file.size().unwrap_or(0))).collect();
        sizes.sort_unstable();
        sizes
    }

    /// Drops every segment before `first` once a checkpoint at or after
    /// the last batch they held is durable: the manifest is rewritten
    /// first, then the files are deleted.
    /// A failure here stops the journal like a failed write; after one,
    /// nothing is done.
    pub fn drop_segments_before(&self, first: u32, checkpoint: Checkpoint) -> std::io::Result<()> {
        if let Some(failure) = self.shared.watermark.failure() {
            return Err(std::io::Error::other(failure.cause.to_string()));
        }
        let dropped = self.try_drop_segments_before(first, checkpoint);
        if let Err(error) = &dropped {
            self.fail(format!("cannot drop compacted journal segments: {error}"));
        }
        dropped
    }

    /// Stops the journal for good (as a failed write does).
    fn fail(&self, cause: String) {
        self.shared.fail(cause);
    }

    fn try_drop_segments_before(&self, first: u32, checkpoint: Checkpoint) -> std::io::Result<()> {
        // The records moved out of the dropped segments must be on disk
        // before the segments go, whatever the durability setting.
        for (id, _) in self.segments().into_iter().filter(|(id, _)| *id >= first) {
            if let Some(file) = self.shared.segment(id) {
                file.sync_data()?;
            }
        }
        let mut manifest = self.shared.manifest.lock().unwrap_or_else(PoisonError::into_inner);
        let next = Manifest { first_segment: first, checkpoint, ..*manifest };
        next.write(self.shared.fs.as_ref(), &self.shared.dir)?;
        let old = manifest.first_segment;
        *manifest = next;
        drop(manifest);
        for id in old..first {
            self.shared.segments.write().unwrap_or_else(PoisonError::into_inner).remove(&id);
            match self.shared.fs.remove(&segment_path(&self.shared.dir, id)) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
                _ => {}
            }
        }
        self.shared.fs.sync_dir(&self.shared.dir)
    }

    /// Stops the committer once it has written what is queued (the
    /// appender must have been dropped or closed). Then, unless the
    /// journal failed, records a clean stop with `live` tasks: the next
    /// start expects the journal to end exactly here.
    pub fn close(&self, live: u64) -> Result<(), watermark::WaitError> {
        if let Some(handle) = self.committer.lock().unwrap_or_else(PoisonError::into_inner).take() {
            let _ = handle.join();
        }
        if let Some(failure) = self.shared.watermark.failure() {
            // Never written again after a failure: a batch that got an
            // error must not be made durable on the way out.
            return Err(watermark::WaitError::Failed(failure.cause));
        }
        let mut manifest = self.shared.manifest.lock().unwrap_or_else(PoisonError::into_inner);
        let segments = self.segments();
        for (id, _) in &segments {
            if let Some(file) = self.shared.segment(*id) {
                file.sync_data().map_err(|e| watermark::WaitError::Failed(e.to_string().into()))?;
            }
        }
        let seq = self.shared.watermark.durable();
        let next = Manifest { checkpoint: Checkpoint { seq, live }, clean: true, ..*manifest };
        next.write(self.shared.fs.as_ref(), &self.shared.dir)
            .map_err(|e| watermark::WaitError::Failed(e.to_string().into()))?;
        *manifest = next;
        Ok(())
    }
}

impl Appender {
    /// Queues `batch` as the next change; returns its sequence number and
    /// where each of its puts' values lies. Call with a reserved slot.
    pub fn append(
        &mut self,
        batch: Batch,
        slot: Slot<'_>,
    ) -> Result<(u64, Vec<Location>), AppendError> {
        let jobs = self.jobs.as_ref().ok_or(AppendError::Closed)?;
        if batch.is_too_large() {
            return Err(AppendError::TooLarge(batch.frame_len()));
        }
        let durable = self.shared.watermark.durable();
        let len = batch.frame_len() as u64;
        let mut seal = None;
        if self.tail > SEGMENT_HEADER_LEN && self.tail + len + SEAL_FRAME_LEN > self.segment_bytes {
            let next = self.segment + 1;
            seal = Some(Seal {
                segment: self.segment,
                offset: self.tail,
                bytes: seal_frame(self.next_seq, durable, next),
                opens: next,
            });
            self.next_seq += 1;
            self.sealed.insert(self.segment, self.tail + SEAL_FRAME_LEN);
            self.segment = next;
            self.tail = SEGMENT_HEADER_LEN;
        }
        let seq = self.next_seq;
        let (segment, offset) = (self.segment, self.tail);
        let locations = (0..)
            .map_while(|index| batch.value_span(index))
            .map(|(at, len)| Location::new(segment, offset + at, len as usize))
            .collect();
        let bytes = batch.finish(seq, durable);
        jobs.send(Job { seq, segment, offset, bytes, seal }).map_err(|_| AppendError::Closed)?;
        slot.0.forget();
        self.shared.stats.queued(seq);
        self.next_seq += 1;
        self.tail += len;
        Ok((seq, locations))
    }

    /// The last batch queued.
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// The segment new batches go to (older ones are sealed).
    pub fn segment(&self) -> u32 {
        self.segment
    }

    /// Bytes of data in the journal, queued ones included.
    pub fn journal_bytes(&self) -> u64 {
        self.sealed.values().sum::<u64>() + self.tail
    }

    /// The oldest sealed segment still in the journal.
    pub fn oldest_sealed(&self) -> Option<u32> {
        self.sealed.keys().next().copied()
    }

    /// Forgets the segments before `first` (compaction dropped them).
    pub fn forget_before(&mut self, first: u32) {
        self.sealed.retain(|id, _| *id >= first);
    }

    /// Stops queueing: the committer ends once it has written the rest.
    pub fn close(&mut self) {
        self.jobs = None;
    }

    /// True when the journal takes writes.
    pub fn is_open(&self) -> bool {
        self.jobs.is_some() && self.shared.watermark.failure().is_none()
    }
}
