//! The committer thread: group commit of queued frames.
//!
//! It takes every frame queued since its last round (up to a bound),
//! writes each segment's share with one positional write, makes the round
//! durable with one `fdatasync` per segment touched (with `durability:
//! fsync`), then moves the watermark past the round.
//!
//! A roll to the next segment keeps the journal readable at every instant:
//! the next segment is created first (header synced, directory synced),
//! then the seal is written into the old segment, and the old segment is
//! synced before anything is written into the new one. So a new segment
//! holds frames only once the seal pointing at it is durable, and a crash
//! in between leaves at worst an unsealed segment followed by an empty one,
//! which recovery accepts. A round that rolls twice can leave the unsealed
//! segment empty too (created and sealed into within the round, its frames
//! not yet durable): the journal then ends at its header.
//!
//! A failed write or sync is never retried: the watermark fails, every
//! waiter is answered, and the thread ends. What the journal holds on disk
//! is the truth; a restart recovers from it. So that a "not stored" answer
//! (507, for a write refused by a full disk) stays true after the restart,
//! that write's first frame is spoilt (zeros over its length and checksum,
//! synced): recovery then cuts the write off whole as a torn write, though
//! frames at its start may have reached the disk. After a failed fsync the
//! outcome is unknown (503). Frames of the round synced before the failure
//! (in an earlier segment) are durable and answered so.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::mpsc::Receiver;

use super::frame::{SEGMENT_HEADER_LEN, segment_header};
use super::fs::FsFile;
use super::spare::Spare;
use super::watermark::Failure;
use super::{Shared, segment_path};
use crate::config::Durability;

/// Most frames one round takes.
const MAX_FRAMES_PER_ROUND: usize = 4096;

/// Most bytes one round takes (a round may exceed it by one frame).
const MAX_BYTES_PER_ROUND: usize = 32 * 1024 * 1024;

/// The seal that ends a segment before a frame goes to the next one.
pub struct Seal {
    /// The segment it ends.
    pub segment: u32,
    /// Where it goes in that segment.
    pub offset: u64,
    /// The encoded seal frame.
    pub bytes: Vec<u8>,
    /// The segment it opens.
    pub opens: u32,
}

/// A frame to write (a batch, holding one queue slot).
pub struct Job {
    /// Its batch number.
    pub seq: u64,
    /// The segment it belongs to.
    pub segment: u32,
    /// Where it goes in that segment.
    pub offset: u64,
    /// The encoded frame.
    pub bytes: Vec<u8>,
    /// A seal to write first, when the frame opens a new segment.
    pub seal: Option<Seal>,
}

/// One positional write of a round.
struct Write<'a> {
    segment: u32,
    offset: u64,
    bytes: &'a [u8],
    opens: Option<u32>,
    /// The batch whose frame it is (`None` for a seal).
    seq: Option<u64>,
}

/// The committer's state.
pub struct Committer {
    pub(super) shared: Arc<Shared>,
    pub(super) durability: Durability,
    /// The size new segment files are preallocated to.
    pub(super) segment_bytes: u64,
    /// Where the next frame of each open segment must go.
    pub(super) tails: HashMap<u32, u64>,
    /// The next segment's file, filled ahead of time.
    pub(super) spare: Spare,
}

/// A failed step, with whether the disk was full.
struct Failed {
    disk_full: bool,
    cause: String,
}

/// A round that failed: why, and the last batch made durable before
/// (when the round had synced part of itself into an earlier segment).
struct RoundFailed {
    failed: Failed,
    durable_through: Option<u64>,
}

fn failed(what: &str, error: &std::io::Error) -> Failed {
    Failed {
        disk_full: error.kind() == std::io::ErrorKind::StorageFull,
        cause: format!("{what}: {error}"),
    }
}

fn bug(cause: String) -> Failed {
    Failed { disk_full: false, cause }
}

impl Committer {
    /// [`Committer::run`], failing the journal if it panics (so no waiter
    /// is left waiting and the server exits).
    pub fn run_guarded(self, jobs: &Receiver<Job>) {
        let shared = self.shared.clone();
        if std::panic::catch_unwind(AssertUnwindSafe(|| self.run(jobs))).is_err() {
            shared.fail("the storage committer stopped unexpectedly".into());
        }
    }

    /// Commit rounds until the queue is closed and drained, or a step fails.
    pub fn run(mut self, jobs: &Receiver<Job>) {
        while let Ok(first) = jobs.recv() {
            if self.shared.watermark.failure().is_some() {
                return;
            }
            let mut round = vec![first];
            let mut bytes = round[0].bytes.len();
            while round.len() < MAX_FRAMES_PER_ROUND && bytes < MAX_BYTES_PER_ROUND {
                match jobs.try_recv() {
                    Ok(job) => {
                        bytes += job.bytes.len();
                        round.push(job);
                    }
                    Err(_) => break,
                }
            }
            let first_seq = round[0].seal.as_ref().map_or(round[0].seq, |_| round[0].seq - 1);
            let last_seq = round.last().map_or(first_seq, |job| job.seq);
            let committed = self.commit(&round);
            let slots = round.len();
            // The frames are written: free them before the waiters build
            // their answers (a large batch is not held twice).
            drop(round);
            if let Err(RoundFailed { failed, durable_through }) = committed {
                // Logged once by whoever acts on the failure (the server
                // exits); every waiter is told here.
                self.shared.slots.close();
                if let Some(durable) = durable_through {
                    self.shared.watermark.advance(durable);
                }
                self.shared.watermark.fail(Failure {
                    disk_full: failed.disk_full,
                    cause: failed.cause.into(),
                    first_seq: durable_through.map_or(first_seq, |durable| durable + 1),
                    last_seq,
                });
                return;
            }
            self.shared.watermark.advance(last_seq);
            self.shared.slots.add_permits(slots);
            self.shared.stats.round(slots, bytes);
        }
    }

    /// Writes one round and makes it durable.
    fn commit(&mut self, round: &[Job]) -> Result<(), RoundFailed> {
        let writes: Vec<Write<'_>> = round
            .iter()
            .flat_map(|job| {
                let seal = job.seal.as_ref().map(|seal| Write {
                    segment: seal.segment,
                    offset: seal.offset,
                    bytes: &seal.bytes,
                    opens: Some(seal.opens),
                    seq: None,
                });
                let frame = Write {
                    segment: job.segment,
                    offset: job.offset,
                    bytes: &job.bytes,
                    opens: None,
                    seq: Some(job.seq),
                };
                seal.into_iter().chain(std::iter::once(frame))
            })
            .collect();
        let mut durable_through = None;
        let mut start = 0;
        while start < writes.len() {
            let segment = writes[start].segment;
            let end = writes[start..]
                .iter()
                .position(|write| write.segment != segment)
                .map_or(writes.len(), |n| start + n);
            let run = &writes[start..end];
            if let Some(next) = run.iter().find_map(|write| write.opens) {
                self.open_segment(next)
                    .map_err(|failed| RoundFailed { failed, durable_through })?;
            }
            // Where the write goes, unless the journal has a bug.
            let at_tail = self.tails.get(&segment) == Some(&run[0].offset);
            if let Err(mut failed) = self.write(segment, run) {
                if !(failed.disk_full && at_tail && self.spoil(segment, run[0].offset)) {
                    // Frames of it may be replayed: the outcome is unknown.
                    failed.disk_full = false;
                }
                return Err(RoundFailed { failed, durable_through });
            }
            // Synced before the next segment gets anything (see the module
            // docs), and at the end of the round. A failed fsync is not
            // tried again, nor anything after it: what reached the disk is
            // unknown, and so is the outcome, even on a full disk.
            if let Err(mut failed) = self.sync(segment) {
                failed.disk_full = false;
                return Err(RoundFailed { failed, durable_through });
            }
            durable_through = run.iter().rev().find_map(|write| write.seq).or(durable_through);
            start = end;
        }
        Ok(())
    }

    /// Makes a failed write at `offset` of `segment` unreadable as a whole:
    /// zeros over its first frame's length and checksum, synced. Recovery
    /// then takes it for a torn write (or the journal's end) and cuts it
    /// off, with whatever frames of it reached the disk. A write stopped
    /// by a full disk leaves a prefix of its bytes: zeros where the first
    /// ones go mean nothing of it is there, and overwriting bytes just
    /// written needs no new space. False when it fails too.
    fn spoil(&self, segment: u32, offset: u64) -> bool {
        let Some(file) = self.shared.segment(segment) else { return false };
        let mut start = [0; 8];
        if file.read_exact_at(&mut start, offset).is_ok() && start == [0; 8] {
            return true;
        }
        file.write_all_at(&[0; 8], offset).and_then(|()| file.sync_data()).is_ok()
    }

    fn sync(&self, segment: u32) -> Result<(), Failed> {
        if self.durability != Durability::Fsync {
            return Ok(());
        }
        let file = self
            .shared
            .segment(segment)
            .ok_or_else(|| bug(format!("segment {segment} is not open")))?;
        let started = std::time::Instant::now();
        let synced = file.sync_data();
        self.shared.stats.synced(started.elapsed());
        synced.map_err(|e| failed("fdatasync of the journal failed", &e))
    }

    /// Writes consecutive frames of one segment with one write.
    fn write(&mut self, segment: u32, writes: &[Write<'_>]) -> Result<(), Failed> {
        let tail = self.tails.get(&segment).copied();
        let offset = writes[0].offset;
        if tail != Some(offset) {
            return Err(bug(format!(
                "journal bug: frame for segment {segment} at {offset}, tail {tail:?}"
            )));
        }
        let file = self
            .shared
            .segment(segment)
            .ok_or_else(|| bug(format!("segment {segment} is not open")))?;
        let result = if let [single] = writes {
            file.write_all_at(single.bytes, offset)
        } else {
            let bytes: Vec<u8> =
                writes.iter().flat_map(|write| write.bytes.iter().copied()).collect();
            file.write_all_at(&bytes, offset)
        };
        result.map_err(|e| failed("write to the journal failed", &e))?;
        let written: u64 = writes.iter().map(|write| write.bytes.len() as u64).sum();
        if writes.iter().any(|write| write.opens.is_some()) {
            self.tails.remove(&segment);
        } else {
            self.tails.insert(segment, offset + written);
            // Zeros written ahead only make syncs cheaper: without syncs
            // (`durability: buffered`) they would be writes for nothing.
            if self.durability == Durability::Fsync && offset + written > self.segment_bytes / 2 {
                self.spare.prepare();
            }
        }
        Ok(())
    }

    /// Creates segment `id` with its header, durably, before anything
    /// points at it: the spare renamed into place when one is ready, a
    /// sparse file otherwise.
    fn open_segment(&mut self, id: u32) -> Result<(), Failed> {
        let fs = self.shared.fs.clone();
        let dir = &self.shared.dir;
        let path = segment_path(dir, id);
        if let Some(spare) = self.spare.take() {
            let file = fs.open(spare).map_err(|e| failed("cannot open the spare segment", &e))?;
            write_header(file.as_ref(), id)?;
            fs.rename(spare, &path).map_err(|e| failed("cannot rename the spare segment", &e))?;
        } else {
            let file =
                fs.create(&path).map_err(|e| failed("cannot create a journal segment", &e))?;
            file.truncate(self.segment_bytes)
                .map_err(|e| failed("cannot preallocate a journal segment", &e))?;
            write_header(file.as_ref(), id)?;
        }
        fs.sync_dir(dir).map_err(|e| failed("cannot sync the journal directory", &e))?;
        // Opened again by its new name, so that every later write goes
        // through it.
        let file = fs.open(&path).map_err(|e| failed("cannot open a journal segment", &e))?;
        self.shared.add_segment(id, file);
        self.tails.insert(id, SEGMENT_HEADER_LEN);
        Ok(())
    }
}

/// Writes segment `id`'s header, durably.
fn write_header(file: &dyn FsFile, id: u32) -> Result<(), Failed> {
    file.write_all_at(&segment_header(id), 0)
        .map_err(|e| failed("write to the journal failed", &e))?;
    file.sync_data().map_err(|e| failed("fdatasync of the journal failed", &e))
}
