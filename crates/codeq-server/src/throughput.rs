//! The last hour of each command's traffic, a minute at a time: tasks
//! created, delivered (claims), completed, failed (dead letters
//! included), cancelled, and leases that ran out. The dashboard draws its
//! charts from it (`GET /v1/codeq/admin/throughput`).
//!
//! Nothing is counted here as tasks move: [`run`] reads the Prometheus
//! counters the scheduler bumps anyway ([`Metrics::throughput_totals`])
//! once a second and adds what they gained to the current minute. So
//! create, claim and result pay nothing for it; an event lands in the
//! minute of the tick that saw it (at most a second late).
//!
//! Kept in memory only, as a ring of [`MINUTES`] slots per command (about
//! 3 KiB each): a restart starts it empty, and with several servers each
//! counts what it did. Prometheus (`/metrics`) is where longer and merged
//! histories belong.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use codeq_core::{Command, Timestamp};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::store::Store;

/// Minutes kept, the current one included.
pub const MINUTES: usize = 60;

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A task was stored.
    Created,
    /// A task was delivered.
    Claimed,
    /// A task ended `COMPLETED`.
    Completed,
    /// A task ended `FAILED` (a worker's failure or a dead letter).
    Failed,
    /// A task was cancelled.
    Cancelled,
    /// A lease ran out.
    LeaseExpired,
}

/// How many kinds of event are counted.
pub const EVENTS: usize = 6;

/// A command's counts since the server started, indexed by [`Event`].
pub type Totals = [u64; EVENTS];

impl Event {
    /// Its index in [`Totals`].
    pub fn slot(self) -> usize {
        self as usize
    }
}

/// A minute's number: minutes since the Unix epoch.
fn minute_of(at: Timestamp) -> i64 {
    at.millis().div_euclid(60_000)
}

/// One command's ring: slot `m mod MINUTES` holds minute `m` while
/// `minutes[slot] == m`, and is cleared when a later minute takes it.
#[derive(Debug)]
struct Ring {
    minutes: [i64; MINUTES],
    counts: [[u64; EVENTS]; MINUTES],
}

impl Ring {
    fn new() -> Self {
        Self { minutes: [i64::MIN; MINUTES], counts: [[0; EVENTS]; MINUTES] }
    }

    fn add(&mut self, minute: i64, event: usize, count: u64) {
        let slot = minute.rem_euclid(MINUTES as i64) as usize;
        match self.minutes[slot] {
            held if held == minute => {}
            // An event older than what the slot holds (a clock stepped
            // back) is past the window: dropped.
            held if held > minute => return,
            _ => {
                self.minutes[slot] = minute;
                self.counts[slot] = [0; EVENTS];
            }
        }
        self.counts[slot][event] += count;
    }

    /// The counts of the [`MINUTES`] minutes ending with `last`, oldest
    /// first.
    fn series(&self, last: i64) -> Series {
        let mut series = Series::default();
        for (index, minute) in (last - MINUTES as i64 + 1..=last).enumerate() {
            let slot = minute.rem_euclid(MINUTES as i64) as usize;
            if self.minutes[slot] == minute {
                let counts = &self.counts[slot];
                series.created[index] = counts[Event::Created.slot()];
                series.claimed[index] = counts[Event::Claimed.slot()];
                series.completed[index] = counts[Event::Completed.slot()];
                series.failed[index] = counts[Event::Failed.slot()];
                series.cancelled[index] = counts[Event::Cancelled.slot()];
                series.lease_expired[index] = counts[Event::LeaseExpired.slot()];
            }
        }
        series
    }
}

/// One command's counts per minute, oldest minute first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    /// Tasks created.
    pub created: [u64; MINUTES],
    /// Deliveries.
    pub claimed: [u64; MINUTES],
    /// Tasks completed.
    pub completed: [u64; MINUTES],
    /// Tasks failed, dead letters included.
    pub failed: [u64; MINUTES],
    /// Tasks cancelled.
    pub cancelled: [u64; MINUTES],
    /// Leases that ran out.
    pub lease_expired: [u64; MINUTES],
}

impl Default for Series {
    fn default() -> Self {
        Self {
            created: [0; MINUTES],
            claimed: [0; MINUTES],
            completed: [0; MINUTES],
            failed: [0; MINUTES],
            cancelled: [0; MINUTES],
            lease_expired: [0; MINUTES],
        }
    }
}

/// The last hour of every command's counts.
#[derive(Debug, Clone)]
pub struct Window {
    /// The start of the oldest minute.
    pub from: Timestamp,
    /// Each command's series, sorted by command.
    pub commands: Vec<(Command, Series)>,
}

/// Every command's ring, and the totals last sampled.
pub struct Throughput {
    clock: Arc<dyn Clock>,
    // A std mutex: taken once a second by the sampler and once per
    // dashboard read, never by a request that moves a task.
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    last: HashMap<Command, Totals>,
    rings: HashMap<Command, Ring>,
}

impl std::fmt::Debug for Throughput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throughput").finish_non_exhaustive()
    }
}

impl Throughput {
    /// Empty, on `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self { clock, inner: Mutex::default() }
    }

    /// Adds to the current minute what each command's totals gained since
    /// the previous sample (a command first seen gained all of them: the
    /// counters start at zero with the process).
    pub fn sample(&self, totals: impl IntoIterator<Item = (Command, Totals)>) {
        let minute = minute_of(self.clock.now());
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let Inner { last, rings } = &mut *inner;
        for (command, now) in totals {
            let before = last.get(&command).copied().unwrap_or_default();
            if now == before {
                continue;
            }
            let ring = rings.entry(command.clone()).or_insert_with(Ring::new);
            for (slot, (now, before)) in now.iter().zip(before).enumerate() {
                ring.add(minute, slot, now.saturating_sub(before));
            }
            last.insert(command, now);
        }
    }

    /// The last [`MINUTES`] minutes (the current one last) of every
    /// command with any count in them, or of `only`.
    pub fn window(&self, only: Option<&Command>) -> Window {
        let last = minute_of(self.clock.now());
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut commands: Vec<(Command, Series)> = inner
            .rings
            .iter()
            .filter(|(command, _)| only.is_none_or(|only| only == *command))
            .map(|(command, ring)| (command.clone(), ring.series(last)))
            .filter(|(_, series)| only.is_some() || *series != Series::default())
            .collect();
        drop(inner);
        if let Some(only) = only
            && commands.is_empty()
        {
            commands.push((only.clone(), Series::default()));
        }
        commands.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        let from = Timestamp((last - MINUTES as i64 + 1) * 60_000);
        Window { from, commands }
    }
}

/// Samples the counters of every command the store knows every `every`
/// until `shutdown`.
pub async fn run(
    metrics: Arc<Metrics>,
    store: Arc<dyn Store>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        match store.all_queue_stats().await {
            Ok(queues) => {
                let commands: Vec<Command> =
                    queues.into_iter().map(|queue| queue.command).collect();
                metrics.throughput().sample(metrics.throughput_totals(&commands));
            }
            // The store reports its own failure where it matters; the
            // charts just miss this second.
            Err(error) => tracing::debug!(%error, "throughput sample skipped"),
        }
    }
    tracing::debug!("throughput sampler stopped");
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::ManualClock;

    fn command(name: &str) -> Command {
        Command::parse(name).unwrap()
    }

    /// Totals with `count` of `event` and nothing else.
    fn totals(entries: &[(Event, u64)]) -> Totals {
        let mut totals = Totals::default();
        for (event, count) in entries {
            totals[event.slot()] = *count;
        }
        totals
    }

    /// 10:00:30 on some day, on a manual clock.
    fn at_half_minute() -> (Arc<ManualClock>, Throughput) {
        let start = 1_700_000_000_000 / 60_000 * 60_000 + 30_000;
        let clock = Arc::new(ManualClock::new(Timestamp(start)));
        let throughput = Throughput::new(clock.clone());
        (clock, throughput)
    }

    #[test]
    fn what_the_counters_gained_lands_in_the_minute_of_the_sample() {
        let (clock, throughput) = at_half_minute();
        let render = command("render");
        throughput.sample([(render.clone(), totals(&[(Event::Created, 3)]))]);
        clock.advance(Duration::from_secs(60));
        let later = totals(&[(Event::Created, 3), (Event::Claimed, 1), (Event::Completed, 1)]);
        throughput.sample([(render.clone(), later)]);
        let window = throughput.window(None);
        let (name, series) = &window.commands[0];
        assert_eq!(name, &render);
        assert_eq!((series.created[58], series.created[59]), (3, 0));
        assert_eq!((series.claimed[58], series.claimed[59]), (0, 1));
        assert_eq!(series.completed[59], 1);
        assert_eq!(minute_of(window.from) + 59, minute_of(clock.now()));
    }

    #[test]
    fn samples_within_a_minute_add_up() {
        let (clock, throughput) = at_half_minute();
        let render = command("render");
        throughput.sample([(render.clone(), totals(&[(Event::Failed, 1)]))]);
        clock.advance(Duration::from_secs(1));
        throughput.sample([(render.clone(), totals(&[(Event::Failed, 4)]))]);
        throughput.sample([(render.clone(), totals(&[(Event::Failed, 4)]))]);
        assert_eq!(throughput.window(None).commands[0].1.failed[59], 4);
    }

    #[test]
    fn minutes_older_than_an_hour_fall_out() {
        let (clock, throughput) = at_half_minute();
        let render = command("render");
        throughput.sample([(render.clone(), totals(&[(Event::Failed, 2)]))]);
        clock.advance(Duration::from_secs(59 * 60));
        assert_eq!(throughput.window(None).commands[0].1.failed[0], 2, "still the oldest minute");
        clock.advance(Duration::from_secs(60));
        assert!(throughput.window(None).commands.is_empty(), "an hour later nothing is left");
        // The slot is reused by the new minute, starting from zero.
        throughput.sample([(render.clone(), totals(&[(Event::Failed, 3)]))]);
        assert_eq!(throughput.window(None).commands[0].1.failed[59], 1);
    }

    #[test]
    fn a_minute_older_than_its_slot_is_dropped() {
        let mut ring = Ring::new();
        ring.add(120, Event::Created.slot(), 1);
        ring.add(60, Event::Created.slot(), 5);
        assert_eq!(ring.series(120).created[59], 1);
    }

    #[test]
    fn one_command_is_answered_even_when_idle() {
        let (_, throughput) = at_half_minute();
        throughput.sample([(command("a"), totals(&[(Event::Created, 1)]))]);
        let window = throughput.window(Some(&command("b")));
        assert_eq!(window.commands, vec![(command("b"), Series::default())]);
        assert_eq!(throughput.window(Some(&command("a"))).commands[0].1.created[59], 1);
    }
}
