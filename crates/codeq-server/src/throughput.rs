//! The last hour of each command's traffic, a minute at a time: tasks
//! created, delivered (claims), completed, failed (dead letters
//! included), cancelled, and leases that ran out. The dashboard draws its
//! charts from it (`GET /v1/codeq/admin/throughput`).
//!
//! Kept in memory only, as a ring of [`MINUTES`] slots per command (about
//! 3 KiB each): a restart starts it empty, and with several servers each
//! counts what it did. Prometheus (`/metrics`) is where longer and merged
//! histories belong.
//!
//! Counting is one shared read lock and a hash to find the command's ring,
//! then its own short lock; reading copies every ring (O(commands ×
//! 60)), with no store access.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use codeq_core::{Command, Timestamp};

use crate::clock::Clock;

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

const EVENTS: usize = 6;

impl Event {
    fn slot(self) -> usize {
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

    fn add(&mut self, minute: i64, event: Event, count: u64) {
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
        self.counts[slot][event.slot()] += count;
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

/// Every command's ring.
pub struct Throughput {
    clock: Arc<dyn Clock>,
    rings: RwLock<HashMap<Command, Arc<Mutex<Ring>>>>,
}

impl std::fmt::Debug for Throughput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throughput").finish_non_exhaustive()
    }
}

impl Throughput {
    /// Empty, on `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self { clock, rings: RwLock::default() }
    }

    /// Counts `count` events of `command` now.
    pub fn add(&self, command: &Command, event: Event, count: u64) {
        self.add_at(command, event, count, self.clock.now());
    }

    /// Counts `count` events of `command` at `at`.
    pub fn add_at(&self, command: &Command, event: Event, count: u64, at: Timestamp) {
        let minute = minute_of(at);
        let found = self.rings.read().unwrap_or_else(PoisonError::into_inner).get(command).cloned();
        let ring = match found {
            Some(ring) => ring,
            None => self
                .rings
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(command.clone())
                .or_insert_with(|| Arc::new(Mutex::new(Ring::new())))
                .clone(),
        };
        ring.lock().unwrap_or_else(PoisonError::into_inner).add(minute, event, count);
    }

    /// The last [`MINUTES`] minutes (the current one last) of every
    /// command with any count in them, or of `only`.
    pub fn window(&self, only: Option<&Command>) -> Window {
        let last = minute_of(self.clock.now());
        let rings = self.rings.read().unwrap_or_else(PoisonError::into_inner);
        let mut commands: Vec<(Command, Series)> = rings
            .iter()
            .filter(|(command, _)| only.is_none_or(|only| only == *command))
            .map(|(command, ring)| {
                let series = ring.lock().unwrap_or_else(PoisonError::into_inner).series(last);
                (command.clone(), series)
            })
            .filter(|(_, series)| only.is_some() || *series != Series::default())
            .collect();
        drop(rings);
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::ManualClock;

    fn command(name: &str) -> Command {
        Command::parse(name).unwrap()
    }

    /// 10:00:30 on some day, on a manual clock.
    fn at_half_minute() -> (Arc<ManualClock>, Throughput) {
        let clock = Arc::new(ManualClock::new(Timestamp(1_700_000_000_000 / 60_000 * 60_000 + 30_000)));
        let throughput = Throughput::new(clock.clone());
        (clock, throughput)
    }

    #[test]
    fn counts_land_in_their_minute_and_the_current_minute_is_last() {
        let (clock, throughput) = at_half_minute();
        let render = command("render");
        throughput.add(&render, Event::Created, 3);
        clock.advance(Duration::from_secs(60));
        throughput.add(&render, Event::Claimed, 1);
        throughput.add(&render, Event::Completed, 1);
        let window = throughput.window(None);
        let (name, series) = &window.commands[0];
        assert_eq!(name, &render);
        assert_eq!((series.created[58], series.created[59]), (3, 0));
        assert_eq!((series.claimed[58], series.claimed[59]), (0, 1));
        assert_eq!(series.completed[59], 1);
        assert_eq!(minute_of(window.from) + 59, minute_of(clock.now()));
    }

    #[test]
    fn minutes_older_than_an_hour_fall_out() {
        let (clock, throughput) = at_half_minute();
        let render = command("render");
        throughput.add(&render, Event::Failed, 2);
        clock.advance(Duration::from_secs(59 * 60));
        assert_eq!(throughput.window(None).commands[0].1.failed[0], 2, "still the oldest minute");
        clock.advance(Duration::from_secs(60));
        assert!(throughput.window(None).commands.is_empty(), "an hour later nothing is left");
        // The slot is reused by the new minute, starting from zero.
        throughput.add(&render, Event::Failed, 1);
        assert_eq!(throughput.window(None).commands[0].1.failed[59], 1);
    }

    #[test]
    fn an_event_from_before_the_slot_is_dropped() {
        let (clock, throughput) = at_half_minute();
        let render = command("render");
        throughput.add(&render, Event::Created, 1);
        let an_hour_ago = clock.now().plus_millis(-60 * 60_000);
        throughput.add_at(&render, Event::Created, 5, an_hour_ago);
        assert_eq!(throughput.window(None).commands[0].1.created[59], 1);
    }

    #[test]
    fn one_command_is_answered_even_when_idle() {
        let (_, throughput) = at_half_minute();
        throughput.add(&command("a"), Event::Created, 1);
        let window = throughput.window(Some(&command("b")));
        assert_eq!(window.commands, vec![(command("b"), Series::default())]);
        assert_eq!(throughput.window(Some(&command("a"))).commands[0].1.created[59], 1);
    }
}
