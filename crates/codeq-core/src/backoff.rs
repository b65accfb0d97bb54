//! Retry delays after a nack or an expired lease.
//!
//! With `a` the attempts so far, `base` and `max` in seconds:
//! fixed `base`; linear `base*max(1,a)`; exponential `min(max, base*2^a)`;
//! full jitter `rand[0, d]`; equal jitter `d/2 + rand[0, d/2]`, where
//! `d = min(max, base*2^a)`. Never above `max`.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// How the delay grows with each attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackoffPolicy {
    /// Always `base`.
    Fixed,
    /// `base * attempts`.
    Linear,
    /// `base * 2^attempts`.
    Exponential,
    /// A uniform draw in `[0, base * 2^attempts]` (spreads retries widest).
    ExpFullJitter,
    /// Half the exponential delay plus a uniform draw over the other half.
    ExpEqualJitter,
}

impl BackoffPolicy {
    /// Every policy, in the order the documentation lists them.
    pub const ALL: [BackoffPolicy; 5] =
        [Self::Fixed, Self::Linear, Self::Exponential, Self::ExpFullJitter, Self::ExpEqualJitter];

    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fixed => "fixed",
            Self::Linear => "linear",
            Self::Exponential => "exponential",
            Self::ExpFullJitter => "exp_full_jitter",
            Self::ExpEqualJitter => "exp_equal_jitter",
        }
    }
}

impl fmt::Display for BackoffPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown policy name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown backoff policy {0:?} (expected fixed, linear, exponential, exp_full_jitter or exp_equal_jitter)"
)]
pub struct UnknownPolicy(pub String);

impl FromStr for BackoffPolicy {
    type Err = UnknownPolicy;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|policy| policy.as_str() == name)
            .ok_or_else(|| UnknownPolicy(name.to_string()))
    }
}

/// A policy with its bounds, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// The growth rule.
    pub policy: BackoffPolicy,
    /// `backoffBaseSeconds`.
    pub base_seconds: u64,
    /// `backoffMaxSeconds`: no delay exceeds it.
    pub max_seconds: u64,
}

impl BackoffConfig {
    /// The delay in seconds before the next delivery of a task that has
    /// been delivered `attempts` times; `rng` draws the jitter.
    pub fn delay_seconds(&self, attempts: u32, rng: &mut impl Rng) -> u64 {
        let base = self.base_seconds;
        let max = self.max_seconds;
        let exponential = || {
            let factor = 1u64.checked_shl(attempts.min(63)).unwrap_or(u64::MAX);
            base.saturating_mul(factor).min(max)
        };
        let delay = match self.policy {
            BackoffPolicy::Fixed => base,
            BackoffPolicy::Linear => base.saturating_mul(u64::from(attempts.max(1))),
            BackoffPolicy::Exponential => exponential(),
            BackoffPolicy::ExpFullJitter => rng.random_range(0..=exponential()),
            BackoffPolicy::ExpEqualJitter => {
                // Whole seconds from d/2 (rounded up, so never below it) to d.
                let d = exponential();
                (d - d / 2) + rng.random_range(0..=d / 2)
            }
        };
        delay.min(max)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn config(policy: BackoffPolicy) -> BackoffConfig {
        BackoffConfig { policy, base_seconds: 5, max_seconds: 900 }
    }

    fn delays(policy: BackoffPolicy, rng: &mut StdRng) -> Vec<u64> {
        (0..12).map(|a| config(policy).delay_seconds(a, rng)).collect()
    }

    #[test]
    fn fixed_is_always_base() {
        let mut rng = StdRng::seed_from_u64(1);
        assert!(delays(BackoffPolicy::Fixed, &mut rng).iter().all(|&d| d == 5));
    }

    #[test]
    fn linear_grows_by_base_per_attempt_from_at_least_one() {
        let mut rng = StdRng::seed_from_u64(1);
        let got = delays(BackoffPolicy::Linear, &mut rng);
        assert_eq!(&got[..4], &[5, 5, 10, 15]);
    }

    #[test]
    fn exponential_doubles_until_the_cap() {
        let mut rng = StdRng::seed_from_u64(1);
        let got = delays(BackoffPolicy::Exponential, &mut rng);
        assert_eq!(got, vec![5, 10, 20, 40, 80, 160, 320, 640, 900, 900, 900, 900]);
    }

    #[test]
    fn full_jitter_stays_within_zero_and_the_exponential_delay() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut exact = StdRng::seed_from_u64(7);
        let got = delays(BackoffPolicy::ExpFullJitter, &mut rng);
        let ceiling = delays(BackoffPolicy::Exponential, &mut exact);
        assert!(got.iter().zip(&ceiling).all(|(d, c)| d <= c));
        // Seeded: the same draws every run, and not all at the ceiling.
        assert_ne!(got, ceiling);
        let mut again = StdRng::seed_from_u64(7);
        assert_eq!(got, delays(BackoffPolicy::ExpFullJitter, &mut again));
    }

    #[test]
    fn equal_jitter_stays_within_half_and_all_of_the_exponential_delay() {
        let mut rng = StdRng::seed_from_u64(9);
        let mut exact = StdRng::seed_from_u64(9);
        let got = delays(BackoffPolicy::ExpEqualJitter, &mut rng);
        let ceiling = delays(BackoffPolicy::Exponential, &mut exact);
        for (d, c) in got.iter().zip(&ceiling) {
            assert!(2 * d >= *c && d <= c, "{d} not in [{c}/2, {c}]");
        }
    }

    #[test]
    fn equal_jitter_never_drops_below_half_of_an_odd_delay() {
        let cfg = BackoffConfig {
            policy: BackoffPolicy::ExpEqualJitter,
            base_seconds: 1,
            max_seconds: 3,
        };
        let mut rng = StdRng::seed_from_u64(5);
        let drawn: std::collections::BTreeSet<u64> =
            (0..200).map(|_| cfg.delay_seconds(2, &mut rng)).collect();
        assert_eq!(drawn, [2, 3].into(), "from 1.5 to 3 seconds, in whole seconds");
    }

    #[test]
    fn no_policy_exceeds_the_maximum_even_with_huge_attempts() {
        let mut rng = StdRng::seed_from_u64(3);
        for policy in BackoffPolicy::ALL {
            let cfg = BackoffConfig { policy, base_seconds: 1000, max_seconds: 900 };
            assert!(cfg.delay_seconds(u32::MAX, &mut rng) <= 900, "{policy}");
        }
    }

    #[test]
    fn policies_parse_from_their_configuration_names() {
        for policy in BackoffPolicy::ALL {
            assert_eq!(policy.as_str().parse::<BackoffPolicy>(), Ok(policy));
        }
        assert!("sometimes".parse::<BackoffPolicy>().is_err());
    }
}
