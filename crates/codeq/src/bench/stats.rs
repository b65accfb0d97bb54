//! Latency samples and their percentiles.
//!
//! Samples are kept whole (microseconds in a `Vec<u64>`) and sorted once at
//! the end: exact percentiles, 8 bytes a sample (a million samples is 8 MB),
//! and no histogram dependency for a tool that runs for seconds or minutes.

use std::time::Duration;

use serde::Serialize;

/// Latencies of one kind of call, in microseconds.
#[derive(Debug, Clone, Default)]
pub struct Samples(Vec<u64>);

impl Samples {
    /// Records one latency.
    pub fn record(&mut self, latency: Duration) {
        self.record_micros(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
    }

    /// Records one latency given in microseconds.
    pub fn record_micros(&mut self, micros: u64) {
        self.0.push(micros);
    }

    /// Adds another set of samples (one per bench task) to this one.
    pub fn merge(&mut self, other: Samples) {
        self.0.extend(other.0);
    }

    /// How many samples there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sorts the samples and summarizes them.
    pub fn summarize(mut self) -> Summary {
        self.0.sort_unstable();
        let sorted = &self.0;
        let ms = |p: f64| percentile(sorted, p).map(micros_to_ms);
        Summary {
            count: sorted.len(),
            p50_ms: ms(50.0),
            p90_ms: ms(90.0),
            p99_ms: ms(99.0),
            max_ms: sorted.last().copied().map(micros_to_ms),
        }
    }
}

/// Count and percentiles of one kind of call, in milliseconds (`None`
/// when there were no samples).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Number of samples.
    pub count: usize,
    /// Median.
    pub p50_ms: Option<f64>,
    /// 90th percentile.
    pub p90_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
    /// Slowest sample.
    pub max_ms: Option<f64>,
}

/// The `p`-th percentile (0..=100) of ascending `sorted` samples by the
/// nearest-rank method: the smallest sample that at least `p`% of the
/// samples are less than or equal to. `None` for no samples.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    let rank = (p.clamp(0.0, 100.0) / 100.0 * n as f64).ceil() as usize;
    sorted.get(rank.clamp(1, n) - 1).copied()
}

fn micros_to_ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn percentile_of_one_to_hundred_is_the_rank_itself() {
        let sorted: Vec<u64> = (1..=100).collect();

        assert_eq!(percentile(&sorted, 50.0), Some(50));
        assert_eq!(percentile(&sorted, 90.0), Some(90));
        assert_eq!(percentile(&sorted, 99.0), Some(99));
        assert_eq!(percentile(&sorted, 100.0), Some(100));
        assert_eq!(percentile(&sorted, 0.0), Some(1));
    }

    #[test]
    fn percentile_rounds_the_rank_up() {
        let sorted = [10, 20, 30, 40];

        // 50% of 4 is rank 2; 90% of 4 is 3.6, so rank 4.
        assert_eq!(percentile(&sorted, 50.0), Some(20));
        assert_eq!(percentile(&sorted, 90.0), Some(40));
        assert_eq!(percentile(&sorted, 25.1), Some(20));
    }

    #[test]
    fn percentile_of_one_sample_is_that_sample() {
        assert_eq!(percentile(&[7], 1.0), Some(7));
        assert_eq!(percentile(&[7], 99.0), Some(7));
    }

    #[test]
    fn percentile_of_nothing_is_none() {
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn out_of_range_percentiles_are_clamped() {
        let sorted = [1, 2, 3];

        assert_eq!(percentile(&sorted, -5.0), Some(1));
        assert_eq!(percentile(&sorted, 250.0), Some(3));
    }

    #[test]
    fn summary_sorts_merged_samples_and_reports_milliseconds() {
        let mut first = Samples::default();
        let mut second = Samples::default();
        for micros in (1..=50).rev() {
            first.record_micros(micros * 1000);
        }
        for micros in 51..=100 {
            second.record(Duration::from_millis(micros));
        }
        first.merge(second);

        let summary = first.summarize();

        assert_eq!(summary.count, 100);
        assert_eq!(summary.p50_ms, Some(50.0));
        assert_eq!(summary.p90_ms, Some(90.0));
        assert_eq!(summary.p99_ms, Some(99.0));
        assert_eq!(summary.max_ms, Some(100.0));
    }

    #[test]
    fn summary_of_nothing_has_no_values() {
        let summary = Samples::default().summarize();

        assert_eq!(summary.count, 0);
        assert_eq!(summary.p50_ms, None);
        assert_eq!(summary.max_ms, None);
    }
}
