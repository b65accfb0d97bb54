//! Per-command queues: `QueueStats` (how many tasks are in each state),
//! `QueueSettings` (pause and flow limits) and the token bucket that
//! spaces claims of a rate-limited command.

use serde::{Deserialize, Serialize};

use crate::command::Command;
use crate::time::Timestamp;

/// Depths of one command's queues, with its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueStats {
    /// The command.
    pub command: Command,
    /// Pending and visible now.
    pub ready: u64,
    /// Pending until a later time (scheduled or backing off).
    pub delayed: u64,
    /// Claimed under a lease.
    pub in_progress: u64,
    /// Dead-lettered after their last delivery.
    pub dlq: u64,
    /// Pause and flow limits.
    #[serde(flatten)]
    pub settings: QueueSettings,
}

impl QueueStats {
    /// All zeros, for a command never used.
    pub fn empty(command: Command) -> Self {
        Self {
            command,
            ready: 0,
            delayed: 0,
            in_progress: 0,
            dlq: 0,
            settings: QueueSettings::default(),
        }
    }
}

/// How claims of one command are held back. The default holds nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueSettings {
    /// Claims skip the command (creates are still accepted).
    #[serde(default)]
    pub paused: bool,
    /// At most this many of its tasks in progress across all workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
    /// Claims per second, on average.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_second: Option<f64>,
    /// Claims that may follow one another at once after an idle time
    /// (the bucket's size; 1 when a rate is set and this is not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

impl QueueSettings {
    /// Whether these settings let claims through that `before` held back:
    /// a resume, or a looser `maxInFlight`, rate or burst (none is looser
    /// than any).
    pub fn lets_more_through_than(&self, before: &QueueSettings) -> bool {
        fn looser<T: PartialOrd>(before: Option<T>, after: Option<T>) -> bool {
            match (before, after) {
                (Some(_), None) => true,
                (Some(before), Some(after)) => after > before,
                (None, _) => false,
            }
        }
        !self.paused
            && (before.paused
                || looser(before.max_in_flight, self.max_in_flight)
                || looser(before.rate_per_second, self.rate_per_second)
                || looser(before.bucket_size(), self.bucket_size()))
    }

    /// The token bucket's size, when a rate is set.
    pub fn bucket_size(&self) -> Option<f64> {
        self.rate_per_second.map(|_| f64::from(self.burst.unwrap_or(1).max(1)))
    }
}

/// A token bucket: `tokens` as of `at`, refilled at the command's rate up
/// to its burst. One claimed task takes one token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    /// Tokens as of `at`.
    pub tokens: f64,
    /// When `tokens` was last brought up to date.
    pub at: Timestamp,
}

impl TokenBucket {
    /// A full bucket for `settings`, as of `now` (none without a rate).
    pub fn full(settings: &QueueSettings, now: Timestamp) -> Option<Self> {
        settings.bucket_size().map(|size| Self { tokens: size, at: now })
    }

    /// Brings the bucket up to `now` under `settings`.
    fn refill(&mut self, settings: &QueueSettings, now: Timestamp) {
        let (Some(rate), Some(size)) = (settings.rate_per_second, settings.bucket_size()) else {
            return;
        };
        let elapsed = (now.millis() - self.at.millis()).max(0) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * rate).min(size);
        self.at = now;
    }

    /// Whole tokens available at `now`.
    pub fn available(&mut self, settings: &QueueSettings, now: Timestamp) -> u64 {
        self.refill(settings, now);
        // A hair under a whole token counts: float steps must not lose one.
        (self.tokens + 1e-9).floor().max(0.0) as u64
    }

    /// Takes `count` tokens (after [`Self::available`] said they are there).
    pub fn take(&mut self, count: u64) {
        self.tokens = (self.tokens - count as f64).max(0.0);
    }

    /// When the next whole token is there, after `now`.
    pub fn next_token_at(&mut self, settings: &QueueSettings, now: Timestamp) -> Timestamp {
        self.refill(settings, now);
        let Some(rate) = settings.rate_per_second.filter(|rate| *rate > 0.0) else {
            return now;
        };
        let missing = (1.0 - self.tokens).max(0.0);
        // Rounded up to the millisecond, forgiving float noise.
        now.plus_millis((missing / rate * 1000.0 - 1e-6).ceil().max(0.0) as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timestamp = Timestamp(1_700_000_000_000);

    #[test]
    fn only_settings_that_let_more_claims_through_say_so() {
        let open = QueueSettings::default();
        let paused = QueueSettings { paused: true, ..open };
        let four = QueueSettings { max_in_flight: Some(4), ..open };
        let eight = QueueSettings { max_in_flight: Some(8), ..open };
        let slow = limited(1.0, None);
        let fast = limited(5.0, None);
        let bursty = limited(1.0, Some(10));
        for (before, after) in [
            (paused, open),
            (four, eight),
            (four, open),
            (slow, fast),
            (slow, bursty),
            (slow, open),
        ] {
            assert!(after.lets_more_through_than(&before), "{before:?} -> {after:?}");
        }
        for (before, after) in [
            (open, open),
            (open, paused),
            (eight, four),
            (open, four),
            (fast, slow),
            (open, slow),
            (bursty, slow),
            (paused, QueueSettings { paused: true, max_in_flight: None, ..four }),
        ] {
            assert!(!after.lets_more_through_than(&before), "{before:?} -> {after:?}");
        }
    }

    fn limited(rate: f64, burst: Option<u32>) -> QueueSettings {
        QueueSettings { rate_per_second: Some(rate), burst, ..QueueSettings::default() }
    }

    #[test]
    fn a_bucket_spaces_claims_at_its_rate() {
        let settings = limited(20.0, None);
        let mut bucket = TokenBucket::full(&settings, T).unwrap();
        let mut claimed = 0;
        for step in 0..=200 {
            let now = T.plus_millis(step * 50);
            let available = bucket.available(&settings, now);
            bucket.take(available);
            claimed += available;
        }
        assert_eq!(claimed, 201, "one at the start, then one per 50 ms for 10 s");
    }

    #[test]
    fn a_burst_lets_that_many_through_after_an_idle_time() {
        let settings = limited(2.0, Some(5));
        let mut bucket = TokenBucket::full(&settings, T).unwrap();
        assert_eq!(bucket.available(&settings, T), 5);
        bucket.take(5);
        assert_eq!(bucket.available(&settings, T.plus_millis(499)), 0);
        assert_eq!(bucket.next_token_at(&settings, T.plus_millis(499)), T.plus_millis(500));
        assert_eq!(bucket.available(&settings, T.plus_seconds(60)), 5, "never above the burst");
    }

    #[test]
    fn settings_show_only_what_is_set() {
        let json = serde_json::to_value(QueueSettings::default()).unwrap();
        assert_eq!(json, serde_json::json!({ "paused": false }));
        assert_eq!(TokenBucket::full(&QueueSettings::default(), T), None);
    }
}
