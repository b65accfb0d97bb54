//! What a storage engine reports about itself for the metrics: commit
//! rounds, their sizes, fsync latency and how far the durable watermark
//! trails what is queued. Backends without such an engine report nothing
//! (see [`super::Store::engine_stats`]).

/// A histogram read at one instant: per-bucket counts (not cumulative)
/// for the given upper bounds, plus one overflow bucket, and the sum.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Upper bounds of the buckets, ascending (the last bucket, beyond
    /// them, is `+Inf`).
    pub bounds: &'static [f64],
    /// Observations per bucket: `bounds.len() + 1` entries.
    pub counts: Vec<u64>,
    /// Sum of the observations.
    pub sum: f64,
}

impl HistogramSnapshot {
    /// How many observations in all.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// `(upper bound, count in that bucket alone)` pairs ending with
    /// `+Inf`, as the metrics encoder takes them (it accumulates them).
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        let bounds = self.bounds.iter().copied().chain(std::iter::once(f64::INFINITY));
        bounds.zip(self.counts.iter().copied()).collect()
    }
}

/// The embedded engine's counters, read at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineStats {
    /// Group-commit rounds written (one write and, with `durability:
    /// fsync`, one `fdatasync` per segment touched, per round).
    pub commit_rounds: u64,
    /// Frames (one per transition batch) those rounds wrote.
    pub commit_frames: u64,
    /// Bytes those rounds wrote.
    pub commit_bytes: u64,
    /// Frames per round.
    pub frames_per_round: HistogramSnapshot,
    /// Seconds each `fdatasync` of the journal took.
    pub fsync_seconds: HistogramSnapshot,
    /// The last batch queued for the journal.
    pub queued_seq: u64,
    /// The last batch known durable (the watermark).
    pub durable_seq: u64,
}

impl EngineStats {
    /// Batches queued and not yet durable.
    pub fn watermark_lag(&self) -> u64 {
        self.queued_seq.saturating_sub(self.durable_seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_end_with_infinity_and_count_the_total() {
        let snapshot = HistogramSnapshot { bounds: &[1.0, 2.0], counts: vec![3, 0, 2], sum: 9.5 };
        assert_eq!(snapshot.buckets(), vec![(1.0, 3), (2.0, 0), (f64::INFINITY, 2)]);
        assert_eq!(snapshot.count(), 5);
    }
}
