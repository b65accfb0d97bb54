//! Spreading pauses: a pause that many clients take at once (after an
//! outage every worker's claim fails together) is drawn from its upper
//! half, so that their next tries do not all arrive together.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

/// A pause between half of `pause` and `pause`, drawn anew on each call.
pub(crate) fn spread(pause: Duration) -> Duration {
    let half = pause / 2;
    let room = u64::try_from((pause - half).as_nanos()).unwrap_or(u64::MAX);
    if room == 0 {
        return pause;
    }
    // Each RandomState has fresh keys (seeded by the OS, then counted up),
    // so hashing a constant gives a new random number without a dependency.
    let random = RandomState::new().hash_one(0u8);
    half + Duration::from_nanos(random % room.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spread_pause_lies_in_the_upper_half_and_varies() {
        let pause = Duration::from_secs(2);
        let drawn: Vec<Duration> = (0..100).map(|_| spread(pause)).collect();

        assert!(drawn.iter().all(|d| *d >= Duration::from_secs(1) && *d <= pause), "{drawn:?}");
        let distinct: std::collections::BTreeSet<_> = drawn.iter().collect();
        assert!(distinct.len() > 90, "{} distinct of 100", distinct.len());
        assert_eq!(spread(Duration::ZERO), Duration::ZERO);
    }
}
