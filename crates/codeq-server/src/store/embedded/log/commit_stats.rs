//! `CommitStats`: what the committer did, as atomics it bumps once per
//! round and per `fdatasync` (no lock, no allocation), read by the
//! metrics at scrape time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::store::{EngineStats, HistogramSnapshot};

/// Upper bounds of the frames-per-round buckets.
pub const FRAME_BOUNDS: &[f64] =
    &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0];

/// Upper bounds of the fsync-latency buckets, in seconds (100 µs … 5 s).
pub const FSYNC_BOUNDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A histogram of fixed buckets made of atomics.
#[derive(Debug)]
struct AtomicHistogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    /// The sum, in the unit's millionths (frames ×10⁶, or microseconds).
    sum_micros: AtomicU64,
}

impl AtomicHistogram {
    fn new(bounds: &'static [f64]) -> Self {
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self { bounds, counts, sum_micros: AtomicU64::new(0) }
    }

    fn observe(&self, value: f64) {
        let bucket =
            self.bounds.iter().position(|bound| value <= *bound).unwrap_or(self.bounds.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add((value * 1e6) as u64, Ordering::Relaxed);
    }

    fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds,
            counts: self.counts.iter().map(|count| count.load(Ordering::Relaxed)).collect(),
            sum: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct CommitStats {
    rounds: AtomicU64,
    frames: AtomicU64,
    bytes: AtomicU64,
    queued_seq: AtomicU64,
    frames_per_round: AtomicHistogram,
    fsync_seconds: AtomicHistogram,
}

impl CommitStats {
    /// Nothing counted yet; `queued_seq` starts where the journal does.
    pub fn new(queued_seq: u64) -> Self {
        Self {
            rounds: AtomicU64::new(0),
            frames: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            queued_seq: AtomicU64::new(queued_seq),
            frames_per_round: AtomicHistogram::new(FRAME_BOUNDS),
            fsync_seconds: AtomicHistogram::new(FSYNC_BOUNDS),
        }
    }

    /// A batch was queued as number `seq`.
    pub fn queued(&self, seq: u64) {
        self.queued_seq.fetch_max(seq, Ordering::Relaxed);
    }

    /// A round of `frames` frames and `bytes` bytes was made durable.
    pub fn round(&self, frames: usize, bytes: usize) {
        self.rounds.fetch_add(1, Ordering::Relaxed);
        self.frames.fetch_add(frames as u64, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.frames_per_round.observe(frames as f64);
    }

    /// One `fdatasync` took `elapsed`.
    pub fn synced(&self, elapsed: Duration) {
        self.fsync_seconds.observe(elapsed.as_secs_f64());
    }

    /// The counters now, with the watermark standing at `durable_seq`.
    pub fn snapshot(&self, durable_seq: u64) -> EngineStats {
        EngineStats {
            commit_rounds: self.rounds.load(Ordering::Relaxed),
            commit_frames: self.frames.load(Ordering::Relaxed),
            commit_bytes: self.bytes.load(Ordering::Relaxed),
            frames_per_round: self.frames_per_round.snapshot(),
            fsync_seconds: self.fsync_seconds.snapshot(),
            queued_seq: self.queued_seq.load(Ordering::Relaxed),
            durable_seq,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_and_syncs_land_in_their_buckets() {
        let stats = CommitStats::new(7);
        stats.round(3, 300);
        stats.round(1, 100);
        stats.synced(Duration::from_micros(700));
        stats.queued(9);
        let snapshot = stats.snapshot(8);
        assert_eq!((snapshot.commit_rounds, snapshot.commit_frames), (2, 4));
        assert_eq!(snapshot.commit_bytes, 400);
        assert_eq!(snapshot.frames_per_round.counts[..3], [1, 0, 1], "1 and 3 (≤ 4)");
        assert_eq!(snapshot.frames_per_round.sum, 4.0);
        assert_eq!(snapshot.fsync_seconds.count(), 1);
        assert_eq!(snapshot.fsync_seconds.counts[3], 1, "700 µs is in the 1 ms bucket");
        assert_eq!(snapshot.watermark_lag(), 1);
    }
}
