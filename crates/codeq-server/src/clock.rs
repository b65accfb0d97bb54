//! Time as the services see it: the system clock in production, a clock
//! the tests drive so that leases, delays and retention need no sleeping.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::time::Duration;

use codeq_core::Timestamp;
use tokio::sync::watch;

/// A source of "now" and of waiting until a given instant.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;

    /// Completes once [`Clock::now`] has reached `deadline`.
    fn sleep_until(&self, deadline: Timestamp) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// Wall-clock time.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn sleep_until(&self, deadline: Timestamp) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let wait = u64::try_from(deadline.millis() - self.now().millis()).unwrap_or(0);
        Box::pin(tokio::time::sleep(Duration::from_millis(wait)))
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<Timestamp>,
    moved: watch::Sender<Timestamp>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: Timestamp) -> Self {
        Self { now: Mutex::new(start), moved: watch::Sender::new(start) }
    }

    /// Moves the clock forward and wakes whoever waits for the new time.
    pub fn advance(&self, by: Duration) {
        let millis = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        *now = now.plus_millis(millis);
        self.moved.send_replace(*now);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn sleep_until(&self, deadline: Timestamp) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let mut moved = self.moved.subscribe();
        Box::pin(async move {
            // The sender lives as long as the clock, which outlives this future.
            let _ = moved.wait_for(|now| *now >= deadline).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use std::task::Poll;

    use super::*;

    #[tokio::test]
    async fn manual_clock_wakes_sleepers_when_advanced_past_their_deadline() {
        let clock = ManualClock::new(Timestamp(1_000));
        let mut sleeper = clock.sleep_until(Timestamp(3_000));
        clock.advance(Duration::from_secs(1));
        let woke_early =
            std::future::poll_fn(|cx| Poll::Ready(sleeper.as_mut().poll(cx).is_ready())).await;
        assert!(!woke_early, "woke before its deadline");
        clock.advance(Duration::from_secs(1));
        sleeper.await;
        assert_eq!(clock.now(), Timestamp(3_000));
    }
}
