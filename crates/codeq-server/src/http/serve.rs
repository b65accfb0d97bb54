//! The accept loop: a cap on open connections, one task per connection
//! ([`super::connection`]), and the drain at shutdown.
//!
//! A connection is served in a slot. With every slot taken, the loop
//! accepts one more connection and waits with it for a slot; the next
//! ones wait in the kernel's listen backlog, and a warning says so. While
//! one waits, the connections idle between requests are asked to close
//! (again every 100 ms), as a web server drops its keep-alive
//! connections when it runs out: clients that keep connections open
//! without using them cannot hold every slot for the keep-alive timeout.
//! The connection timeouts close the others.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio::time::Instant;

use super::connection::{self, ConnectionTimeouts, Stops};
use crate::metrics::Metrics;

/// How often, at most, the same trouble is logged again.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// The pause after an accept failure that is not the client's (out of
/// file descriptors, most likely): enough not to spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// How often idle connections are asked again to close while every slot
/// is taken.
const RECLAIM_EVERY: Duration = Duration::from_millis(100);

/// The cap on open connections (`maxConnections`, or fewer when the
/// open-file limit is lower).
#[derive(Debug)]
pub struct ConnectionCap {
    slots: Arc<Semaphore>,
    max: u32,
    /// Asks the connections idle between requests to close.
    idle_wanted: Arc<Notify>,
}

impl ConnectionCap {
    /// At most `max` connections at once (at least 1).
    pub fn new(max: u32) -> Self {
        let max = max.max(1);
        let idle_wanted = Arc::new(Notify::new());
        Self { slots: Arc::new(Semaphore::new(max as usize)), max, idle_wanted }
    }

    /// The cap.
    pub fn max(&self) -> u32 {
        self.max
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        (self.max as usize).saturating_sub(self.slots.available_permits())
    }

    /// Waits for a slot, warning when none is free; `None` once closed.
    async fn slot(&self, warned: &mut Throttle) -> Option<OwnedSemaphorePermit> {
        match self.slots.clone().try_acquire_owned() {
            Ok(slot) => return Some(slot),
            Err(TryAcquireError::Closed) => return None,
            Err(TryAcquireError::NoPermits) => {}
        }
        if warned.ready() {
            tracing::warn!(
                max_connections = self.max,
                "connection limit reached: {} connections are open (maxConnections); new \
                 connections wait in the listen backlog until one closes",
                self.max
            );
        }
        loop {
            self.idle_wanted.notify_waiters();
            tokio::select! {
                slot = self.slots.clone().acquire_owned() => return slot.ok(),
                () = tokio::time::sleep(RECLAIM_EVERY) => {}
            }
        }
    }

    /// Waits until every connection has closed.
    async fn drained(&self) {
        let _ = self.slots.acquire_many(self.max).await;
    }
}

/// Serves `router` on `listener` until `stops.drain` is cancelled; then
/// stops accepting, lets each connection finish its request in progress
/// (or closes it at once on `stops.abort`), and returns once all are closed.
/// `metrics` counts the 408s answered before any request exists.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    timeouts: ConnectionTimeouts,
    cap: Arc<ConnectionCap>,
    stops: Stops,
    metrics: Arc<Metrics>,
) {
    let mut cap_warning = Throttle::new();
    let mut accept_warning = Throttle::new();
    loop {
        // A free slot first, if there is one; else a client is accepted
        // (one past the cap, so that idle connections close only when
        // someone is waiting) and waits for one.
        let free = cap.slots.clone().try_acquire_owned().ok();
        let accepted = tokio::select! {
            () = stops.drain.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                accept_failed(&error, &mut accept_warning).await;
                continue;
            }
        };
        let slot = match free {
            Some(slot) => slot,
            None => tokio::select! {
                () = stops.drain.cancelled() => break,
                slot = cap.slot(&mut cap_warning) => match slot {
                    Some(slot) => slot,
                    None => break,
                },
            },
        };
        let (router, stops, metrics) = (router.clone(), stops.clone(), metrics.clone());
        let slot = connection::Slot { permit: slot, idle_wanted: cap.idle_wanted.clone() };
        tokio::spawn(connection::serve(stream, router, timeouts, stops, slot, metrics));
    }
    drop(listener);
    cap.drained().await;
}

/// A failed accept: the client's doing (it went away) is ignored; anything
/// else (out of file descriptors) is logged and retried after a pause.
async fn accept_failed(error: &io::Error, warned: &mut Throttle) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(error.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        return;
    }
    if warned.ready() {
        tracing::error!(%error, "cannot accept connections; retrying");
    }
    tokio::time::sleep(ACCEPT_RETRY).await;
}

/// Lets a repeated warning through once per [`LOG_EVERY`].
#[derive(Debug)]
struct Throttle {
    last: Option<Instant>,
}

impl Throttle {
    fn new() -> Self {
        Self { last: None }
    }

    fn ready(&mut self) -> bool {
        let now = Instant::now();
        let ready = self.last.is_none_or(|last| now.duration_since(last) >= LOG_EVERY);
        if ready {
            self.last = Some(now);
        }
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_repeated_warning_is_let_through_once_a_minute() {
        let mut throttle = Throttle::new();
        assert!(throttle.ready());
        assert!(!throttle.ready());
        tokio::time::advance(LOG_EVERY).await;
        assert!(throttle.ready());
    }

    #[tokio::test]
    async fn the_cap_counts_open_connections_and_drains_when_all_are_gone() {
        let cap = ConnectionCap::new(2);
        let mut warned = Throttle::new();
        let first = cap.slot(&mut warned).await.unwrap();
        let second = cap.slot(&mut warned).await.unwrap();
        assert_eq!(cap.open(), 2);
        let third = tokio::spawn({
            let slots = cap.slots.clone();
            async move { slots.acquire_owned().await.unwrap() }
        });
        drop(first);
        let third = third.await.unwrap();
        assert_eq!(cap.open(), 2);
        drop((second, third));
        cap.drained().await;
    }
}
