//! The committer thread: group commit of queued frames.
//!
//! It takes every frame queued since its last round (up to a bound),
//! writes each segment's share with one positional write, makes the round
//! durable with one `fdatasync` per segment touched (with `durability:
//! fsync`), then moves the watermark past the round. A seal frame opens
//! the next segment first (created, header synced, directory synced), so
//! a durable seal always points at a segment that exists.
//!
//! A failed write or sync is never retried: the watermark fails, every
//! waiter is answered, and the thread ends. What the journal holds on disk
//! is the truth; a restart recovers from it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::Receiver;

use super::frame::{SEGMENT_HEADER_LEN, segment_header};
use super::watermark::Failure;
use super::{Shared, segment_path};
use crate::config::Durability;

/// Most frames one round takes.
const MAX_FRAMES_PER_ROUND: usize = 4096;

/// Most bytes one round takes (a round may exceed it by one frame).
const MAX_BYTES_PER_ROUND: usize = 32 * 1024 * 1024;

/// A frame to write.
pub struct Job {
    /// Its batch number.
    pub seq: u64,
    /// The segment it belongs to.
    pub segment: u32,
    /// Where it goes in that segment.
    pub offset: u64,
    /// The encoded frame.
    pub bytes: Vec<u8>,
    /// For a seal frame: the segment it opens.
    pub opens: Option<u32>,
    /// True when a queue slot was taken for it (given back once written).
    pub holds_slot: bool,
}

/// The committer's state.
pub struct Committer {
    pub(super) shared: Arc<Shared>,
    pub(super) durability: Durability,
    /// The size new segment files are preallocated to.
    pub(super) segment_bytes: u64,
    /// Where the next frame of each open segment must go.
    pub(super) tails: HashMap<u32, u64>,
}

/// A failed step, with whether the disk was full.
struct Failed {
    disk_full: bool,
    cause: String,
}

fn failed(what: &str, error: &std::io::Error) -> Failed {
    Failed {
        disk_full: error.kind() == std::io::ErrorKind::StorageFull,
        cause: format!("{what}: {error}"),
    }
}

impl Committer {
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
            let first_seq = round[0].seq;
            let last_seq = round.last().map_or(first_seq, |job| job.seq);
            if let Err(failure) = self.commit(&round) {
                // Logged once by whoever acts on the failure (the server
                // exits); every waiter is told here.
                self.shared.slots.close();
                self.shared.watermark.fail(Failure {
                    disk_full: failure.disk_full,
                    cause: failure.cause.into(),
                    first_seq,
                    last_seq,
                });
                return;
            }
            let slots = round.iter().filter(|job| job.holds_slot).count();
            // The frames are written: free them before the waiters build
            // their answers (a large batch is not held twice).
            drop(round);
            self.shared.watermark.advance(last_seq);
            self.shared.slots.add_permits(slots);
        }
    }

    /// Writes one round and makes it durable.
    fn commit(&mut self, round: &[Job]) -> Result<(), Failed> {
        let mut touched = Vec::new();
        let mut start = 0;
        while start < round.len() {
            let segment = round[start].segment;
            let end = round[start..]
                .iter()
                .position(|job| job.segment != segment)
                .map_or(round.len(), |n| start + n);
            for job in &round[start..end] {
                if let Some(next) = job.opens {
                    self.open_segment(next)?;
                }
            }
            self.write(segment, &round[start..end])?;
            touched.push(segment);
            start = end;
        }
        if self.durability == Durability::Fsync {
            for segment in touched {
                let file = self.shared.segment(segment).ok_or_else(|| Failed {
                    disk_full: false,
                    cause: format!("segment {segment} is not open"),
                })?;
                file.sync_data().map_err(|e| failed("fdatasync of the journal failed", &e))?;
            }
        }
        Ok(())
    }

    /// Writes consecutive frames of one segment with one write.
    fn write(&mut self, segment: u32, jobs: &[Job]) -> Result<(), Failed> {
        let tail = self.tails.get(&segment).copied();
        let offset = jobs[0].offset;
        if tail != Some(offset) {
            return Err(Failed {
                disk_full: false,
                cause: format!(
                    "journal bug: frame for segment {segment} at {offset}, tail {tail:?}"
                ),
            });
        }
        let file = self.shared.segment(segment).ok_or_else(|| Failed {
            disk_full: false,
            cause: format!("segment {segment} is not open"),
        })?;
        let result = if jobs.len() == 1 {
            file.write_all_at(&jobs[0].bytes, offset)
        } else {
            let bytes: Vec<u8> = jobs.iter().flat_map(|job| job.bytes.iter().copied()).collect();
            file.write_all_at(&bytes, offset)
        };
        result.map_err(|e| failed("write to the journal failed", &e))?;
        let written: u64 = jobs.iter().map(|job| job.bytes.len() as u64).sum();
        self.tails.insert(segment, offset + written);
        Ok(())
    }

    /// Creates segment `id` with its header, durably, before anything
    /// points at it.
    fn open_segment(&mut self, id: u32) -> Result<(), Failed> {
        let fs = &self.shared.fs;
        let path = segment_path(&self.shared.dir, id);
        let file = fs.create(&path).map_err(|e| failed("cannot create a journal segment", &e))?;
        file.write_all_at(&segment_header(id), 0)
            .map_err(|e| failed("write to the journal failed", &e))?;
        file.truncate(self.segment_bytes)
            .map_err(|e| failed("cannot preallocate a journal segment", &e))?;
        file.sync_data().map_err(|e| failed("fdatasync of the journal failed", &e))?;
        fs.sync_dir(&self.shared.dir)
            .map_err(|e| failed("cannot sync the journal directory", &e))?;
        self.shared.add_segment(id, file);
        self.tails.insert(id, SEGMENT_HEADER_LEN);
        Ok(())
    }
}
