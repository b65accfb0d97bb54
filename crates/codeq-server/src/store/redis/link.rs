//! The link to Redis: one multiplexed connection shared by every call
//! (concurrent calls are pipelined on it, so they share Redis's event-loop
//! iterations and, with `appendfsync always`, its AOF fsyncs), with
//! connect and response timeouts, reconnected with backoff. The
//! connection runs on the store's thread (`thread.rs`).
//!
//! While Redis is unreachable every call fails at once with
//! `StoreError::Unavailable` (503 with `Retry-After`) rather than queueing:
//! a broken connection is dropped, and a new one is tried at most once per
//! backoff step (100 ms doubling to 1 s); the first call after Redis is
//! back (or the background probe) reconnects.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError};
use tokio::runtime::Handle;
use tokio::time::Instant;

use super::checks::evicts_keys;
use crate::store::StoreError;

/// How long connecting (TCP, TLS, AUTH, SELECT) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one call may wait for its answer.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Redis's error codes for a state in which it refuses every write for a
/// while: loading its data, a read-only replica, a replica cut off from
/// its primary, one whose snapshots fail, a script running too long.
const REFUSING_STATES: [&str; 5] = ["LOADING", "READONLY", "MASTERDOWN", "MISCONF", "BUSY"];

/// At most one warning of refused calls in this long (a Redis that takes
/// reads and refuses writes answers and refuses in turn).
const REFUSAL_WARN_EVERY: Duration = Duration::from_secs(60);
/// The first and the longest wait between two connection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// At most a second: a Redis back from an outage is in use again within
/// about a second, for one connection attempt a second per replica while
/// it is away.
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The current connection and when the next attempt may be made.
struct State {
    connection: Option<(MultiplexedConnection, u64)>,
    generation: u64,
    next_try: Instant,
    backoff: Duration,
    last_error: String,
}

/// A connection to Redis that reconnects itself. Cheap to share.
pub struct Link {
    client: Client,
    /// Where connections run (read and parse Redis's answers): the
    /// store's thread.
    runtime: Handle,
    state: Mutex<State>,
    connecting: tokio::sync::Mutex<()>,
    up: AtomicBool,
    waiting: Arc<Mutex<Waiting>>,
    /// The eviction policy could not be read on a reconnect (said once).
    policy_unreadable_said: AtomicBool,
}

/// Calls waiting for their answers, and since when Redis has answered
/// none: its last answer, or the first call after a quiet spell. A Redis
/// that hangs keeps its connection open and answers nothing.
#[derive(Debug)]
struct Waiting {
    calls: usize,
    answered_at: std::time::Instant,
    /// The current streak of refusals was warned of.
    streak_warned: bool,
    /// When a refusal was last warned of.
    warned_at: Option<std::time::Instant>,
    /// The last refusal that was no lack of memory (a Redis loading its
    /// data, a read-only replica), and when.
    unavailable: Option<(std::time::Instant, String)>,
}

/// One call's place among the [`Waiting`] ones, while it lives.
struct Call(Arc<Mutex<Waiting>>);

impl Call {
    fn new(waiting: &Arc<Mutex<Waiting>>) -> Self {
        let mut now_waiting = waiting.lock().unwrap_or_else(PoisonError::into_inner);
        if now_waiting.calls == 0 {
            now_waiting.answered_at = std::time::Instant::now();
        }
        now_waiting.calls += 1;
        Self(Arc::clone(waiting))
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Call {
    /// Answered or not (a caller that went away drops its call unanswered).
    fn drop(&mut self) {
        let mut waiting = self.waiting();
        waiting.calls = waiting.calls.saturating_sub(1);
    }
}

/// A connection handed to one call, and the generation to report its
/// failure against. The call counts as waiting for Redis while it lives.
pub struct Lease {
    /// The connection (a cheap clone of the shared one).
    pub connection: MultiplexedConnection,
    generation: u64,
    call: Call,
}

impl Lease {
    /// Redis answered this lease's call.
    pub fn answered(&self) {
        let mut waiting = self.call.waiting();
        waiting.answered_at = std::time::Instant::now();
        waiting.streak_warned = false;
    }

    /// Redis refused this lease's call; true (warn of it) once a streak
    /// of refusals (until a call is answered), as soon as the last warning
    /// is [`REFUSAL_WARN_EVERY`] old.
    fn refused(&self) -> bool {
        let mut waiting = self.call.waiting();
        let now = std::time::Instant::now();
        waiting.answered_at = now;
        let quiet = waiting.warned_at.is_none_or(|at| now - at >= REFUSAL_WARN_EVERY);
        let warn = !waiting.streak_warned && quiet;
        if warn {
            waiting.streak_warned = true;
            waiting.warned_at = Some(now);
        }
        warn
    }

    /// Redis refused this lease's call for a reason other than memory.
    fn unavailable(&self, error: &RedisError) {
        let mut waiting = self.call.waiting();
        waiting.unavailable = Some((std::time::Instant::now(), error.to_string()));
    }
}

impl Link {
    /// A link that connects on first use, its connections running on
    /// `runtime`.
    pub fn new(client: Client, runtime: Handle) -> Self {
        Self {
            client,
            runtime,
            state: Mutex::new(State {
                connection: None,
                generation: 0,
                next_try: Instant::now(),
                backoff: BACKOFF_MIN,
                last_error: String::new(),
            }),
            connecting: tokio::sync::Mutex::new(()),
            up: AtomicBool::new(false),
            waiting: Arc::new(Mutex::new(Waiting {
                calls: 0,
                answered_at: std::time::Instant::now(),
                streak_warned: false,
                warned_at: None,
                unavailable: None,
            })),
            policy_unreadable_said: AtomicBool::new(false),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The client (for pub/sub connections).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// True while the last call or probe reached Redis.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// How long calls have been waiting with no answer from Redis, when
    /// some are.
    pub fn unanswered_for(&self) -> Option<Duration> {
        let waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        (waiting.calls > 0).then(|| waiting.answered_at.elapsed())
    }

    /// Why Redis refused a call less than `within` ago for a reason other
    /// than memory (loading its data, read-only), when it did.
    pub fn refused_within(&self, within: Duration) -> Option<String> {
        let waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        let (at, why) = waiting.unavailable.as_ref()?;
        (at.elapsed() < within).then(|| why.clone())
    }

    /// Redis refuses writes for a reason found without a call (it says it
    /// is a replica): as a refused call, not ready for a while.
    pub fn mark_refusing_writes(&self, why: String) {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        waiting.unavailable = Some((std::time::Instant::now(), why));
    }

    /// Why Redis is unreachable, when it is.
    pub fn down_because(&self) -> String {
        self.state().last_error.clone()
    }

    /// The connection, connecting when there is none (at most one attempt
    /// per backoff step; calls in between fail at once).
    pub async fn get(self: &Arc<Self>) -> Result<Lease, StoreError> {
        if let Some(lease) = self.current() {
            return Ok(lease);
        }
        // On the store's thread, where the connection will run, and to the
        // end even if this caller goes away: an attempt's outcome (the
        // connection, or the next backoff step) is kept whoever waits.
        let link = Arc::clone(self);
        match self.runtime.spawn(async move { link.connect().await }).await {
            Ok(outcome) => outcome,
            Err(_) => Err(unreachable("the store has stopped")),
        }
    }

    /// Connects, one attempt at a time, unless another attempt has just
    /// connected or the backoff says to wait.
    async fn connect(&self) -> Result<Lease, StoreError> {
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(lease) = self.current() {
            return Ok(lease);
        }
        let waiting = {
            let state = self.state();
            (Instant::now() < state.next_try).then(|| state.last_error.clone())
        };
        if let Some(cause) = waiting {
            return Err(unreachable(&cause));
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let attempt = tokio::time::timeout(
            CONNECT_TIMEOUT + Duration::from_millis(500),
            self.client.get_multiplexed_async_connection_with_config(&config),
        )
        .await;
        match attempt {
            Ok(Ok(connection)) => match self.refusal_on_return(connection.clone()).await {
                Some(refusal) => Err(self.connect_failed(refusal)),
                None => Ok(self.connected(connection)),
            },
            Ok(Err(error)) => Err(self.connect_failed(error.to_string())),
            Err(_) => Err(self.connect_failed("connecting timed out".into())),
        }
    }

    /// Why a Redis that is back (after a lost connection) must not be
    /// written to: one that now may evict keys, as start-up refuses
    /// (`checks.rs`). `None` on the first connection, which start-up
    /// checks itself, and when the setting cannot be read.
    async fn refusal_on_return(&self, mut connection: MultiplexedConnection) -> Option<String> {
        if self.state().generation == 0 {
            return None;
        }
        let read: Result<std::collections::HashMap<String, String>, _> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory-policy")
            .query_async(&mut connection)
            .await;
        let policy = match read.map(|mut settings| settings.remove("maxmemory-policy")) {
            Ok(Some(policy)) => policy,
            Ok(None) | Err(_) => {
                if !self.policy_unreadable_said.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "cannot read Redis's maxmemory-policy after a reconnect (CONFIG GET refused?): \
                         an evicting policy set meanwhile is not noticed"
                    );
                }
                return None;
            }
        };
        if !evicts_keys(&policy) {
            return None;
        }
        let refusal = format!(
            "Redis is back with maxmemory-policy {policy}: it may evict codeQ's keys and lose \
             tasks, so calls answer 503 until it is noeviction (CONFIG SET maxmemory-policy noeviction)"
        );
        if self.state().last_error != refusal {
            tracing::error!("{refusal}");
        }
        Some(refusal)
    }

    fn current(&self) -> Option<Lease> {
        let state = self.state();
        state.connection.as_ref().map(|(connection, generation)| Lease {
            connection: connection.clone(),
            generation: *generation,
            call: Call::new(&self.waiting),
        })
    }

    fn connected(&self, connection: MultiplexedConnection) -> Lease {
        let mut state = self.state();
        state.generation += 1;
        state.connection = Some((connection.clone(), state.generation));
        state.backoff = BACKOFF_MIN;
        state.last_error.clear();
        self.up.store(true, Ordering::Relaxed);
        if state.generation > 1 {
            tracing::info!("reconnected to Redis");
        }
        Lease { connection, generation: state.generation, call: Call::new(&self.waiting) }
    }

    fn connect_failed(&self, cause: String) -> StoreError {
        let mut state = self.state();
        state.next_try = Instant::now() + state.backoff;
        state.backoff = (state.backoff * 2).min(BACKOFF_MAX);
        // Already down: an outage `failed` has reported, or a start-up
        // still waiting for Redis, which the server reports itself (once,
        // not once per attempt).
        if self.up.swap(false, Ordering::Relaxed) {
            tracing::warn!(%cause, "cannot reach Redis; calls answer 503 until it is back");
        } else {
            tracing::debug!(%cause, "cannot reach Redis");
        }
        state.last_error.clone_from(&cause);
        unreachable(&cause)
    }

    /// Maps a call's error; a broken connection is dropped so that the
    /// next call reconnects.
    pub fn failed(&self, lease: &Lease, error: RedisError) -> StoreError {
        let broken = error.is_io_error()
            || error.is_timeout()
            || error.is_connection_dropped()
            || error.is_connection_refusal()
            || error.is_unrecoverable_error();
        if broken {
            let mut state = self.state();
            if state
                .connection
                .as_ref()
                .is_some_and(|(_, generation)| *generation == lease.generation)
            {
                state.connection = None;
                state.last_error = error.to_string();
                if self.up.swap(false, Ordering::Relaxed) {
                    tracing::warn!(%error, "lost the connection to Redis; reconnecting");
                }
            }
            return unreachable(&error.to_string());
        }
        // Redis at its `maxmemory` (with `noeviction`) refuses writes and
        // did none of this call's: full, as a full disk is (507).
        if error.code() == Some("OOM") || error.to_string().contains("OOM command not allowed") {
            if lease.refused() {
                tracing::warn!(%error, "Redis is out of memory: writes are refused until it has room (more at debug, a warning a minute at most)");
            }
            return StoreError::DiskFull(format!("Redis is out of memory: {error}"));
        }
        // LOADING (a restarted Redis reading its AOF), READONLY (a
        // replica), a script error, a right the user lacks: the call did
        // nothing; the caller answers 503. The states that refuse every
        // write for a while also make the replica not ready. Logged once a
        // streak: a Redis loading its AOF refuses every call.
        if error.code().is_some_and(|code| REFUSING_STATES.contains(&code)) {
            lease.unavailable(&error);
        }
        if lease.refused() {
            tracing::warn!(%error, "Redis refused a call (more refusals at debug, a warning a minute at most)");
        } else {
            tracing::debug!(%error, "Redis refused a call");
        }
        StoreError::Unavailable(format!("Redis refused a call: {error}"))
    }
}

fn unreachable(cause: &str) -> StoreError {
    StoreError::Unavailable(format!("Redis is unreachable: {cause}"))
}
