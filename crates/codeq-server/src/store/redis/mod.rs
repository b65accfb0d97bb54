//! The Redis backend (`storage: redis`): every transition is one Lua
//! script run atomically by Redis (≥ 6.2) or KVRocks, so that several
//! `codeq serve` replicas can share one Redis: no crash or second replica
//! ever sees half a transition, no task is handed to two workers, and every
//! replica's reaper and dispatcher may run at once.
//!
//! Layout:
//! - `link.rs`: the connection (one multiplexed connection, timeouts,
//!   reconnect with backoff, 503 while Redis is unreachable);
//! - `scripts.rs` and `lua/`: the scripts (`lua/lib.lua` holds the keys,
//!   the clock, the indexes and the rules of `codeq_core::lifecycle`);
//! - `reply.rs`: answers read back into domain types;
//! - `batch.rs`: creates, claims and results that queue up behind one in
//!   flight go to Redis together, as one script call each;
//! - `events.rs`: the pub/sub listener (cross-replica wake-ups) and the
//!   safety poll;
//! - `checks.rs`: start-up checks of Redis's eviction and AOF settings;
//! - `thread.rs`: the store's own thread, where the connection, the
//!   merged calls and the listener run.
//!
//! **Time.** Scripts take the time from Redis (`TIME`), so that replicas
//! with skewed clocks agree on leases and delays: every time a caller
//! derived from its own clock (a lease end, a visible time, a retry) is
//! moved by the difference between Redis's clock and the caller's `now`.
//! A store opened with [`TimeSource::Caller`] (tests that drive a manual
//! clock) uses the caller's `now` instead. Subscription lifetimes are
//! kept on the replicas' clocks (minutes; a skew of seconds is harmless).
//!
//! **What the synchronous methods know** (`next_deadline`,
//! `callbacks_pending`, `next_claimable_at`, `command_of`): hints kept
//! from the scripts' answers, refreshed by the reaper's passes and by the
//! safety poll; times there are on this replica's clock.

mod batch;
mod checks;
mod events;
mod link;
mod reply;
mod scripts;
mod thread;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use codeq_core::{
    Command, JsonText, QueueSettings, QueueStats, ResultRecord, ResultStatus, Subscription, Task,
    TaskId, TaskState, TaskStatus, Timestamp, lifecycle,
};
use redis::{AsyncCommands, Script};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use self::batch::Batcher;
pub use self::checks::{CheckError, Durability, check_server, warn_about};
use self::link::Link;
use self::reply::{Fields, Reply};
use self::scripts::{Args, Scripts};
use crate::store::{
    ClaimSpec, CommandFilter, Completed, CompletedAndNext, Completion, Created,
    DEFAULT_MAX_COMMANDS, DeadLetterFilter, DeadLetterKey, DueCallback, Expired, Expiry, Fence,
    LeaseEnd, OwedCallback, Retried, SettledCallback, Signals, Store, StoreError, StoreResult,
    TransitionError,
};

/// Whose clock the scripts use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSource {
    /// Redis's (`TIME`): production.
    Redis,
    /// The caller's `now` (tests driving a manual clock).
    Caller,
}

/// Where the store's own tasks run: its connection (reading Redis's
/// answers), its merged calls and its pub/sub listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threading {
    /// A thread of the store's own (`thread.rs`): production.
    Own,
    /// The runtime the store is opened on. On a single-threaded runtime
    /// the calls a test makes at once are all queued before any is sent,
    /// so they are merged the same way every run.
    Current,
}

/// Where Redis is and how to use it.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `host:port` (see [`RedisOptions::from_addr`] for the `redisAddr`
    /// forms).
    pub addr: String,
    /// Connect with TLS (`rediss://`).
    pub tls: bool,
    /// `AUTH` user name (an ACL user; none: the default user).
    pub username: Option<String>,
    /// `AUTH` password.
    pub password: Option<String>,
    /// Database index.
    pub db: u32,
    /// Every key starts with `<prefix>:`.
    pub prefix: String,
    /// Whose clock the scripts use.
    pub time: TimeSource,
    /// Where the store's own tasks run.
    pub threading: Threading,
    /// How many commands the store knows at most: a task or settings of
    /// one more are refused.
    pub max_commands: usize,
}

impl RedisOptions {
    /// Options for `redisAddr` (`host:port`, `redis://host:port` or
    /// `rediss://host:port` for TLS), on Redis's clock.
    pub fn from_addr(addr: &str, password: Option<String>, db: u32, prefix: &str) -> Self {
        let (tls, bare) = match addr.split_once("://") {
            Some((scheme, bare)) => (scheme.eq_ignore_ascii_case("rediss"), bare),
            None => (false, addr),
        };
        Self {
            addr: bare.trim_end_matches('/').to_string(),
            tls,
            username: None,
            password,
            db,
            prefix: prefix.to_string(),
            time: TimeSource::Redis,
            threading: Threading::Own,
            max_commands: DEFAULT_MAX_COMMANDS,
        }
    }

    fn client(&self) -> StoreResult<redis::Client> {
        let (host, port) = self
            .addr
            .rsplit_once(':')
            .and_then(|(host, port)| Some((host.to_string(), port.parse::<u16>().ok()?)))
            .ok_or_else(|| StoreError::Unavailable(format!("{} is not host:port", self.addr)))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let addr = if self.tls {
            redis::ConnectionAddr::TcpTls { host, port, insecure: false, tls_params: None }
        } else {
            redis::ConnectionAddr::Tcp(host, port)
        };
        let mut settings = redis::RedisConnectionInfo::default().set_db(i64::from(self.db));
        if let Some(username) = &self.username {
            settings = settings.set_username(username);
        }
        if let Some(password) = &self.password {
            settings = settings.set_password(password);
        }
        let info = redis::IntoConnectionInfo::into_connection_info(addr)
            .map_err(|error| StoreError::Unavailable(error.to_string()))?
            .set_redis_settings(settings);
        redis::Client::open(info).map_err(|error| StoreError::Unavailable(error.to_string()))
    }
}

/// Hints for the synchronous methods (see the module docs), on this
/// replica's clock.
#[derive(Debug, Default)]
struct Hints {
    /// The earliest delayed task's visible time.
    delayed: Option<Timestamp>,
    /// The earliest lease end.
    lease: Option<Timestamp>,
    /// The earliest owed callback's next attempt, and how many are owed.
    outbox: (Option<Timestamp>, usize),
    /// When a rate limit next lets a claim of a command through.
    holds: HashMap<Command, Hold>,
    /// Commands of tasks this replica just ended (metrics labels).
    commands: HashMap<TaskId, Command>,
}

impl Hints {
    /// Keeps what a claim that ran at `now` told of the rate limits of the
    /// commands `filter` allows (`told`: those holding claims back, and
    /// until when), where no later claim told first.
    fn keep_holds(&mut self, filter: &CommandFilter, now: i64, told: HashMap<Command, Timestamp>) {
        for (command, hold) in &mut self.holds {
            if filter.allows(command) && hold.seen <= now {
                *hold = Hold { until: told.get(command).copied(), seen: now };
            }
        }
        for (command, until) in told {
            self.holds.entry(command).or_insert(Hold { until: Some(until), seen: now });
        }
    }
}

/// What the latest claim that looked at a rate-limited command said of it.
#[derive(Debug, Clone, Copy)]
struct Hold {
    /// When its rate limit lets the next claim through (`None`: now).
    until: Option<Timestamp>,
    /// Redis's time when that claim ran: two claim calls may be in flight
    /// and answered out of order, and the older answer must not win.
    seen: i64,
}

/// Calls waiting this long with no answer from Redis (hung, or blocked by
/// a long script) make the replica not ready: the scrape's depths give up
/// as soon (`metrics.rs`).
const UNANSWERED_NOT_READY: std::time::Duration = std::time::Duration::from_secs(2);

/// What `create` answers for a task it refused because its command would
/// be one more than the store may know.
const REFUSED_FOR_COMMANDS: &str = "!";

/// Bounds the commands remembered for `command_of`.
const COMMANDS_REMEMBERED: usize = 100_000;

/// Ids a listing looks at per call, at most, over all the commands it
/// lists (list.lua): a rare status among many tasks takes several short
/// calls, not one that holds Redis for long.
const LIST_SCAN: usize = 2_000;

/// Ids moved per call when an earlier key layout is upgraded.
const UPGRADE_STEP: usize = 2_000;

/// The Redis store. See the module docs.
pub struct RedisStore {
    link: Arc<Link>,
    scripts: Scripts,
    prefix: String,
    /// This replica's id on the events channel.
    origin: String,
    time: TimeSource,
    max_commands: usize,
    signals: Arc<Signals>,
    hints: Mutex<Hints>,
    /// Ends the background loops (the listener, the safety poll, the
    /// batch tasks): at `close`.
    stop: CancellationToken,
    /// Ends the store's thread, dropping whatever still runs there: when
    /// the store is dropped, so that calls in flight at `close` are still
    /// answered.
    ended: CancellationToken,
    /// Never fires: a Redis outage is waited out, not a reason to exit.
    never: CancellationToken,
    /// The last role check found Redis a replica (said once a streak).
    is_replica: AtomicBool,
    /// Creates merged into one `create` call (Redis time only).
    creates: Batcher<Task, Created>,
    /// Results merged into one `complete` call (Redis time only).
    completes: Batcher<Completion, Result<Completed, TransitionError>>,
    /// Claims merged into one `claim` call (Redis time only), each with
    /// its caller's now.
    claims: Batcher<(ClaimSpec, Timestamp), Vec<Task>>,
    /// Results with the claim of their worker's next task, merged into one
    /// `complete_claim` call (Redis time only).
    finishes: Batcher<(Completion, ClaimSpec, Timestamp), CompletedAndNext>,
}

/// Whose clock one call uses.
#[derive(Debug, Clone, Copy)]
enum Clock {
    /// The store's time source.
    Store,
    /// The caller's (reads that need no time; subscriptions).
    Caller,
}

impl RedisStore {
    /// Opens the store (connecting lazily) and starts, where
    /// `options.threading` says, its connection, merged calls, pub/sub
    /// listener and safety poll.
    pub fn open(options: RedisOptions, signals: Arc<Signals>) -> StoreResult<Arc<Self>> {
        let client = options.client()?;
        let ended = CancellationToken::new();
        let runtime = match options.threading {
            Threading::Own => thread::start(ended.clone()).map_err(|error| {
                StoreError::Unavailable(format!("cannot start the Redis store's thread: {error}"))
            })?,
            Threading::Current => tokio::runtime::Handle::try_current().map_err(|_| {
                StoreError::Unavailable("the Redis store was opened outside a runtime".into())
            })?,
        };
        let (creates, create_queue) = batch::channel();
        let (completes, complete_queue) = batch::channel();
        let (claims, claim_queue) = batch::channel();
        let (finishes, finish_queue) = batch::channel();
        let store = Arc::new(Self {
            link: Arc::new(Link::new(client, runtime.clone())),
            scripts: Scripts::new(),
            prefix: options.prefix.clone(),
            origin: Uuid::now_v7().simple().to_string(),
            time: options.time,
            max_commands: options.max_commands,
            signals,
            hints: Mutex::new(Hints::default()),
            stop: CancellationToken::new(),
            ended,
            never: CancellationToken::new(),
            is_replica: AtomicBool::new(false),
            creates,
            completes,
            claims,
            finishes,
        });
        let (owner, stop) = (Arc::downgrade(&store), store.stop.clone());
        runtime.spawn(events::listen(owner.clone(), stop.clone()));
        runtime.spawn(events::safety_poll(owner.clone(), stop.clone()));
        // A task weighs its payload too: a merged call stays a few MiB.
        let task_weight = |task: &Task| 1 + task.payload.len() / 16_384;
        runtime.spawn(batch::run(
            create_queue,
            owner.clone(),
            stop.clone(),
            task_weight,
            |store, tasks| async move { store.create_now(tasks, Timestamp::now()).await },
        ));
        runtime.spawn(batch::run(
            complete_queue,
            owner.clone(),
            stop.clone(),
            |_| 1,
            |store, items| async move { store.complete_now(items, Timestamp::now()).await },
        ));
        let claim_weight = |(spec, _): &(ClaimSpec, Timestamp)| spec.count.max(1);
        runtime.spawn(batch::run(
            claim_queue,
            owner.clone(),
            stop.clone(),
            claim_weight,
            |store, specs| async move { store.claim_now(&specs, Timestamp::now()).await },
        ));
        let finish_weight = |(_, spec, _): &(Completion, ClaimSpec, Timestamp)| 1 + spec.count;
        runtime.spawn(batch::run(
            finish_queue,
            owner,
            stop,
            finish_weight,
            |store, items| async move { store.complete_claim_now(&items, Timestamp::now()).await },
        ));
        Ok(store)
    }

    /// Opens the store and reads once what its synchronous methods
    /// report (the outbox's summary), so that they answer from the start.
    /// Fails when Redis does not answer.
    pub async fn connect(options: RedisOptions, signals: Arc<Signals>) -> StoreResult<Arc<Self>> {
        let store = Self::open(options, signals)?;
        store.upgrade_layout().await?;
        store.poll().await?;
        Ok(store)
    }

    /// Readies the store for a server about to start: checks Redis's
    /// settings (start-up refuses what it cannot run on; see
    /// [`check_server`]) and reads what the synchronous methods report.
    /// Asked again of the same store while Redis is not ready, so that
    /// what it warns about (a replica, refused writes) is said once.
    pub async fn check_for_start(&self) -> Result<Durability, CheckError> {
        let durability = check_server(self).await?;
        self.upgrade_layout().await.map_err(CheckError::Unreachable)?;
        self.poll().await.map_err(CheckError::Unreachable)?;
        Ok(durability)
    }

    /// Moves what an earlier key layout kept elsewhere into this one's
    /// keys (upgrade.lua), a bounded step per call; a no-op once done.
    async fn upgrade_layout(&self) -> StoreResult<()> {
        let mut args = Args::new();
        args.num(UPGRADE_STEP);
        let mut moved = 0;
        loop {
            let reply =
                self.call(&self.scripts.upgrade, Clock::Caller, Timestamp(0), &args).await?;
            match reply.int("moved").unwrap_or(0) {
                0 => break,
                step => moved += step,
            }
        }
        if moved > 0 {
            tracing::info!(moved, "moved the task ids of an earlier key layout into this one's");
        }
        Ok(())
    }

    fn hints(&self) -> MutexGuard<'_, Hints> {
        self.hints.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn key(&self, rest: &str) -> String {
        format!("{}:{{*}}:{rest}", self.prefix)
    }

    /// A plain command's connection and its error mapping.
    async fn command<T>(
        &self,
        run: impl AsyncFnOnce(&mut redis::aio::MultiplexedConnection) -> redis::RedisResult<T>,
    ) -> StoreResult<T> {
        let mut lease = self.link.get().await?;
        match run(&mut lease.connection).await {
            Ok(value) => {
                lease.answered();
                Ok(value)
            }
            Err(error) => Err(self.link.failed(&lease, error)),
        }
    }

    /// Runs `script` with the common arguments and `args`, then passes on
    /// what it reports (wake-ups, deadlines, the outbox).
    async fn call(
        &self,
        script: &Script,
        clock: Clock,
        now: Timestamp,
        args: &Args,
    ) -> StoreResult<Reply> {
        let mode = match (clock, self.time) {
            (Clock::Store, TimeSource::Redis) => "server",
            _ => "caller",
        };
        let mut invocation = script.prepare_invoke();
        invocation.arg(&self.prefix).arg(now.millis()).arg(mode).arg(&self.origin);
        for arg in &args.0 {
            invocation.arg(arg);
        }
        let mut lease = self.link.get().await?;
        let raw = match invocation.invoke_async::<redis::Value>(&mut lease.connection).await {
            Ok(raw) => {
                lease.answered();
                raw
            }
            Err(error) => return Err(self.link.failed(&lease, error)),
        };
        let reply = Reply::parse(raw)?;
        self.pass_on(&reply);
        Ok(reply)
    }

    /// Wakes local waiters for what a script reports, and keeps its
    /// deadlines and outbox summary as hints.
    fn pass_on(&self, reply: &Reply) {
        for command in reply.list("ready").iter().filter_map(|c| reply::command(c).ok()) {
            self.signals.ready(&command);
        }
        for woken in reply.list("woken") {
            let pair = reply::list(woken);
            let command = pair.first().and_then(|command| reply::command(command).ok());
            if let (Some(command), Some(depth)) = (command, pair.get(1).and_then(reply::int)) {
                self.signals.became_ready(command, depth.max(0) as u64);
            }
        }
        let shift = reply.shift();
        let local = |at: i64| Timestamp(at - shift);
        if let Some(deadline) = reply.int("deadline").map(local) {
            let earlier = {
                let mut hints = self.hints();
                let known = [hints.delayed, hints.lease.map(|at| at.plus_millis(1))];
                let earlier = known.into_iter().flatten().min().is_none_or(|min| deadline < min);
                // Leases and delays share one hint for the reaper's wake-up.
                hints.delayed = Some(hints.delayed.map_or(deadline, |at| at.min(deadline)));
                earlier
            };
            if earlier {
                self.signals.deadline_changed();
            }
        }
        if let Some(outbox) = reply.body.get("outbox") {
            let first = outbox.get("first").and_then(reply::int).map(local);
            let count = outbox.get("count").and_then(reply::int).unwrap_or(0);
            self.hints().outbox = (first, usize::try_from(count).unwrap_or(0));
        }
    }

    /// Wakes this replica's dispatcher when a transition owed a callback.
    fn owed(&self, reply: &Reply) {
        if reply.body.get("outbox").is_some() {
            self.signals.callback_owed();
        }
    }

    fn remember_command(&self, id: TaskId, command: Command) {
        let mut hints = self.hints();
        if hints.commands.len() >= COMMANDS_REMEMBERED {
            hints.commands.clear();
        }
        hints.commands.insert(id, command);
    }

    /// Reads task `id`'s hash (every field, or `names`).
    async fn read(&self, id: TaskId, names: &[&str]) -> StoreResult<Option<Fields>> {
        let mut args = Args::new();
        args.text(&id.to_string());
        for name in names {
            args.text(name);
        }
        let reply = self.call(&self.scripts.read, Clock::Caller, Timestamp(0), &args).await?;
        Ok(reply.hashes.into_iter().next())
    }

    async fn callbacks(
        &self,
        now: Timestamp,
        limit: usize,
        lease_until: Option<Timestamp>,
    ) -> StoreResult<Vec<DueCallback>> {
        let mut args = Args::new();
        args.num(limit).opt(lease_until.map(Timestamp::millis));
        let reply = self.call(&self.scripts.callbacks, Clock::Store, now, &args).await?;
        reply
            .list("callbacks")
            .iter()
            .map(|item| {
                let item = reply::list(item);
                let field = |index: usize| item.get(index).unwrap_or(&serde_json::Value::Null);
                let delivery = field(1).as_str().and_then(|text| text.parse::<Uuid>().ok());
                Ok(DueCallback {
                    task_id: reply::task_id(field(0))?,
                    delivery: delivery
                        .ok_or_else(|| StoreError::Corrupt("a callback's delivery".into()))?,
                    attempts: reply::int(field(2)).unwrap_or(0).max(0) as u32,
                })
            })
            .collect()
    }

    async fn callback_end(
        &self,
        task_id: TaskId,
        delivery: Uuid,
        end: CallbackEnd,
    ) -> StoreResult<()> {
        let mut args = Args::new();
        args.text(&task_id.to_string()).text(&delivery.to_string());
        match end {
            CallbackEnd::Retry { attempts, next_at } => {
                args.text("retry").num(attempts).num(next_at.millis()).text("")
            }
            CallbackEnd::Done(Some(settled)) => {
                args.text("done").num(settled.attempts).num(0).text(settled.outcome.as_str())
            }
            CallbackEnd::Done(None) => args.text("done").num(0).num(0).text(""),
        };
        self.call(&self.scripts.callback_end, Clock::Store, Timestamp::now(), &args).await?;
        Ok(())
    }

    async fn stats(&self, commands: &[&str]) -> StoreResult<Vec<QueueStats>> {
        let mut args = Args::new();
        for command in commands {
            args.text(command);
        }
        let reply = self.call(&self.scripts.stats, Clock::Caller, Timestamp(0), &args).await?;
        reply.list("stats").iter().map(|row| queue_stats(reply::list(row))).collect()
    }

    /// Runs `settings.lua`: sets `paused`, and the limits of `limits` when
    /// given (else they stay as they are); the settings before.
    async fn settings_op(
        &self,
        command: &Command,
        paused: bool,
        limits: Option<&QueueSettings>,
        now: Timestamp,
    ) -> StoreResult<QueueSettings> {
        let mut args = Args::new();
        args.text(command.as_str())
            .text(if paused { "1" } else { "0" })
            .opt(limits.and_then(|limits| limits.max_in_flight))
            .opt(limits.and_then(|limits| limits.rate_per_second))
            .opt(limits.and_then(|limits| limits.burst))
            .num(self.max_commands)
            .text(if limits.is_some() { "all" } else { "paused" });
        let reply = self.call(&self.scripts.settings, Clock::Store, now, &args).await?;
        if reply.get("refused") == &serde_json::Value::Bool(true) {
            return Err(StoreError::TooManyCommands(self.max_commands));
        }
        Ok(settings_of(reply.list("before")))
    }

    async fn subscriptions_op(&self, args: &Args, now: Timestamp) -> StoreResult<usize> {
        let reply = self.call(&self.scripts.subscriptions, Clock::Caller, now, args).await?;
        Ok(usize::try_from(reply.int("count").unwrap_or(0)).unwrap_or(0))
    }

    /// Refreshes the hints the safety poll keeps (outbox summary) and wakes
    /// claims parked on commands with ready work (a lost message is late
    /// by one poll at most).
    async fn poll(&self) -> StoreResult<()> {
        self.check_role().await;
        self.callbacks(Timestamp::now(), 0, None).await?;
        for stats in self.stats(&["*"]).await? {
            if stats.ready > 0 {
                self.signals.ready(&stats.command);
            }
        }
        Ok(())
    }

    /// Marks Redis as refusing writes while `HELLO` says it is a replica
    /// (`replica`, or `slave` as older versions and KVRocks say), so that
    /// this replica is not ready whether or not calls come (a read-only
    /// Redis refuses only writes). A Redis that cannot say
    /// (older than 6.2, or not Redis) is left to the calls.
    async fn check_role(&self) {
        let Ok(mut lease) = self.link.get().await else { return };
        let hello = redis::cmd("HELLO").query_async::<redis::Value>(&mut lease.connection).await;
        let Ok(hello) = hello else { return };
        lease.answered();
        match role_of(&hello).filter(|role| role == "replica" || role == "slave") {
            Some(role) => {
                if !self.is_replica.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        role,
                        "Redis says it is a replica, which refuses writes: this replica is not \
                         ready until Redis is a primary again (REPLICAOF NO ONE, or point \
                         redisAddr at the primary)"
                    );
                }
                self.link.mark_refusing_writes(format!(
                    "READONLY: Redis says it is a {role} (HELLO), which refuses writes"
                ));
            }
            None => {
                if self.is_replica.swap(false, Ordering::Relaxed) {
                    tracing::info!("Redis is a primary again: it takes writes");
                }
            }
        }
    }
}

/// The `role` field of a `HELLO` reply (pairs in a list on RESP2, a map
/// on RESP3).
fn role_of(hello: &redis::Value) -> Option<String> {
    let is_role = |key: &redis::Value| matches!(key, redis::Value::BulkString(k) if k == b"role");
    let text = |value: &redis::Value| match value {
        redis::Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        redis::Value::SimpleString(text) => Some(text.clone()),
        _ => None,
    };
    match hello {
        redis::Value::Array(items) => items
            .chunks(2)
            .find(|pair| pair.first().is_some_and(is_role))
            .and_then(|pair| pair.get(1))
            .and_then(text),
        redis::Value::Map(pairs) => {
            pairs.iter().find(|(key, _)| is_role(key)).and_then(|(_, v)| text(v))
        }
        _ => None,
    }
}

/// How `callback_end.lua` ends a callback.
enum CallbackEnd {
    /// Its next attempt, after `attempts`.
    Retry { attempts: u32, next_at: Timestamp },
    /// Ended, keeping how when given.
    Done(Option<SettledCallback>),
}

fn queue_stats(row: &[serde_json::Value]) -> StoreResult<QueueStats> {
    let command = reply::command(row.first().unwrap_or(&serde_json::Value::Null))?;
    let count = |index: usize| row.get(index).and_then(reply::int).unwrap_or(0).max(0) as u64;
    Ok(QueueStats {
        command,
        ready: count(1),
        delayed: count(2),
        in_progress: count(3),
        dlq: count(4),
        settings: settings_of(row.get(5..).unwrap_or_default()),
    })
}

/// Settings from the texts of the queue hash's `paused`, `mif`, `rate`
/// and `burst` (empty when not set).
fn settings_of(fields: &[serde_json::Value]) -> QueueSettings {
    let text = |index: usize| fields.get(index).and_then(|v| v.as_str()).filter(|v| !v.is_empty());
    QueueSettings {
        paused: text(0) == Some("1"),
        max_in_flight: text(1).and_then(|v| v.parse().ok()),
        rate_per_second: text(2).and_then(|v| v.parse().ok()),
        burst: text(3).and_then(|v| v.parse().ok()),
    }
}

/// A task as stored, moved to Redis's clock by `shift` milliseconds (a
/// `runAt` the producer gave stays as it is: see `create.lua`).
fn shifted(mut task: Task, shift: i64) -> Task {
    if shift != 0 {
        let given = given_run_at(&task);
        task.created_at = task.created_at.plus_millis(shift);
        task.state.updated_at = task.state.updated_at.plus_millis(shift);
        match given {
            Some(at) => task.state.visible_at = at.max(task.created_at),
            None => {
                task.run_at = task.run_at.map(|at| at.plus_millis(shift));
                task.state.visible_at = task.state.visible_at.plus_millis(shift);
            }
        }
    }
    task
}

/// `task`'s `runAt` when it is a moment the producer gave, to be kept as
/// it is whatever the replica's clock says. A `runAt` that is the creation
/// time plus whole seconds is a `delaySeconds` (api.md: "creation time +
/// `delaySeconds`"), a moment on the replica's clock that moves with
/// `createdAt`.
fn given_run_at(task: &Task) -> Option<Timestamp> {
    let after = |at: Timestamp| at.millis() - task.created_at.millis();
    task.run_at.filter(|at| after(*at) <= 0 || after(*at) % 1000 != 0)
}

fn create_args(max_commands: usize, tasks: &[Task]) -> Args {
    let mut args = Args::new();
    args.num(max_commands);
    for task in tasks {
        args.text(&task.id.to_string())
            .text(task.command.as_str())
            .text(&task.payload)
            .num(task.priority.get())
            .opt(task.webhook.as_deref())
            .num(task.max_attempts)
            .opt(task.idempotency_key.as_deref());
        match given_run_at(task) {
            Some(at) => args.text(&format!("@{}", at.millis())),
            None => args.opt(task.run_at.map(Timestamp::millis)),
        };
        args.num(task.created_at.millis())
            .text(&task.created_by)
            .num(task.state.visible_at.millis());
    }
    args
}

fn filter_args(args: &mut Args, filter: &CommandFilter) {
    match filter {
        CommandFilter::All => {
            args.text("*");
        }
        CommandFilter::Only(commands) => {
            for command in commands {
                args.text(command.as_str());
            }
        }
    }
}

fn status_text(status: ResultStatus) -> &'static str {
    status.as_str()
}

fn json_text<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|error| StoreError::Corrupt(error.to_string()))
}

/// A result's arguments (the `complete` script's 8 per item).
fn completion_arg(args: &mut Args, item: &Completion) -> StoreResult<()> {
    let submission = &item.submission;
    let result = submission.result.as_ref().map(JsonText::as_str);
    let artifacts =
        (!submission.artifacts.is_empty()).then(|| json_text(&submission.artifacts)).transpose()?;
    args.text(&item.task_id.to_string())
        .text(&item.worker_id)
        .opt(item.attempt)
        .text(status_text(submission.status))
        .opt(result)
        .opt(submission.error.as_deref())
        .opt(artifacts)
        .text(&Uuid::now_v7().to_string());
    Ok(())
}

/// The record a result the complete rule accepted at `now` is stored
/// as: what its worker sent (complete.lua writes the same fields).
fn stored_record(item: &Completion, now: Timestamp) -> ResultRecord {
    let submission = &item.submission;
    ResultRecord {
        task_id: item.task_id,
        status: submission.status,
        result: submission.result.clone(),
        error: submission.error.clone(),
        artifacts: submission.artifacts.clone(),
        worker_id: item.worker_id.clone(),
        completed_at: now,
    }
}

/// A claim request's arguments, made by a caller at `caller_now`.
fn claim_arg(args: &mut Args, spec: &ClaimSpec, caller_now: Timestamp) {
    let commands = match &spec.commands {
        CommandFilter::All => 1,
        CommandFilter::Only(commands) => commands.len(),
    };
    args.text(&spec.worker_id)
        .num(spec.lease_until.millis())
        .num(caller_now.millis())
        .num(spec.count)
        .num(commands);
    filter_args(args, &spec.commands);
}

#[async_trait]
impl Store for RedisStore {
    async fn create(&self, tasks: Vec<Task>) -> StoreResult<Vec<Created>> {
        match self.time {
            TimeSource::Redis => self.creates.call(tasks).await,
            TimeSource::Caller => {
                let now = tasks.first().map_or_else(Timestamp::now, |task| task.created_at);
                self.create_now(tasks, now).await
            }
        }
    }

    async fn claim(&self, spec: &ClaimSpec, now: Timestamp) -> StoreResult<Vec<Task>> {
        let claimed = match self.time {
            TimeSource::Redis => self.claims.call(vec![(spec.clone(), now)]).await?,
            TimeSource::Caller => self.claim_now(&[(spec.clone(), now)], now).await?,
        };
        Ok(claimed.into_iter().next().unwrap_or_default())
    }

    async fn heartbeat(
        &self,
        id: TaskId,
        fence: Fence<'_>,
        lease_until: Timestamp,
        now: Timestamp,
    ) -> StoreResult<TaskState> {
        let mut args = Args::new();
        args.text(&id.to_string())
            .text(fence.worker_id)
            .opt(fence.attempt)
            .num(lease_until.millis());
        let reply = self.call(&self.scripts.heartbeat, Clock::Store, now, &args).await?;
        if let Some(refused) = reply.refusal() {
            return Err(refused.into());
        }
        let fields = reply.hashes.first().ok_or(TransitionError::NotFound)?;
        reply::state(fields)
    }

    async fn abandon(&self, id: TaskId, fence: Fence<'_>, now: Timestamp) -> StoreResult<()> {
        let mut args = Args::new();
        args.text(&id.to_string()).text(fence.worker_id).opt(fence.attempt);
        let reply = self.call(&self.scripts.abandon, Clock::Store, now, &args).await?;
        reply.refusal().map_or(Ok(()), |refused| Err(refused.into()))
    }

    async fn nack(
        &self,
        id: TaskId,
        fence: Fence<'_>,
        delay_seconds: u64,
        reason: Option<String>,
        now: Timestamp,
    ) -> StoreResult<Retried> {
        let mut args = Args::new();
        args.text(&id.to_string())
            .text(fence.worker_id)
            .opt(fence.attempt)
            .num(delay_seconds)
            .opt(reason.as_deref())
            .text(&Uuid::now_v7().to_string());
        let reply = self.call(&self.scripts.nack, Clock::Store, now, &args).await?;
        if let Some(refused) = reply.refusal() {
            return Err(refused.into());
        }
        self.owed(&reply);
        if reply.get("dead").as_bool() == Some(true) {
            if let Ok(command) = reply::command(reply.get("cmd")) {
                self.remember_command(id, command);
            }
            return Ok(Retried::DeadLettered);
        }
        Ok(Retried::Requeued { delay_seconds })
    }

    async fn complete(
        &self,
        items: Vec<Completion>,
        now: Timestamp,
    ) -> StoreResult<Vec<Result<Completed, TransitionError>>> {
        match self.time {
            TimeSource::Redis => self.completes.call(items).await,
            TimeSource::Caller => self.complete_now(items, now).await,
        }
    }

    async fn complete_and_claim(
        &self,
        item: Completion,
        next: &ClaimSpec,
        now: Timestamp,
    ) -> StoreResult<CompletedAndNext> {
        let done = match self.time {
            TimeSource::Redis => self.finishes.call(vec![(item, next.clone(), now)]).await?,
            TimeSource::Caller => {
                self.complete_claim_now(&[(item, next.clone(), now)], now).await?
            }
        };
        done.into_iter()
            .next()
            .ok_or_else(|| StoreError::Corrupt("a result was stored without an outcome".into()))
    }

    async fn get_task(&self, id: TaskId) -> StoreResult<Option<Task>> {
        self.read(id, &[]).await?.map(|fields| reply::task(id, &fields)).transpose()
    }

    async fn get_state(&self, id: TaskId) -> StoreResult<Option<TaskState>> {
        let names = ["s", "a", "wk", "lu", "va", "e", "lr", "d", "ua", "co", "rp", "rb"];
        self.read(id, &names).await?.map(|fields| reply::state(&fields)).transpose()
    }

    async fn get_result(&self, id: TaskId) -> StoreResult<Option<ResultRecord>> {
        let names = ["rs", "rr", "re", "rx", "rw", "rc"];
        match self.read(id, &names).await? {
            Some(fields) => reply::result(id, &fields),
            None => Ok(None),
        }
    }

    async fn promote_due(&self, now: Timestamp, limit: usize) -> StoreResult<usize> {
        let mut args = Args::new();
        args.num(limit);
        let reply = self.call(&self.scripts.promote, Clock::Store, now, &args).await?;
        let shift = reply.shift();
        self.hints().delayed = reply.int("next").map(|at| Timestamp(at - shift));
        Ok(usize::try_from(reply.int("promoted").unwrap_or(0)).unwrap_or(0))
    }

    async fn lease_ends(&self, now: Timestamp, limit: usize) -> StoreResult<Vec<LeaseEnd>> {
        let mut args = Args::new();
        args.num(limit);
        let reply = self.call(&self.scripts.lease_ends, Clock::Store, now, &args).await?;
        let shift = reply.shift();
        self.hints().lease = reply.int("next").map(|at| Timestamp(at - shift));
        reply
            .list("ends")
            .iter()
            .map(|item| {
                let item = reply::list(item);
                let id = reply::task_id(item.first().unwrap_or(&serde_json::Value::Null))?;
                let number = |at: usize| {
                    let value = item.get(at).and_then(reply::int).unwrap_or(0);
                    u32::try_from(value).unwrap_or(0)
                };
                let attempts = number(1);
                let attempt_in_round = lifecycle::attempt_in_round(attempts, number(2));
                Ok(LeaseEnd { task_id: id, attempts, attempt_in_round })
            })
            .collect()
    }

    async fn expire(&self, expiries: Vec<Expiry>, now: Timestamp) -> StoreResult<Vec<Expired>> {
        let mut args = Args::new();
        for expiry in &expiries {
            args.text(&expiry.lease.task_id.to_string())
                .num(expiry.lease.attempts)
                .num(expiry.delay_seconds)
                .text(&Uuid::now_v7().to_string());
        }
        let reply = self.call(&self.scripts.expire, Clock::Store, now, &args).await?;
        self.owed(&reply);
        reply
            .list("expired")
            .iter()
            .map(|item| {
                let item = reply::list(item);
                let field = |index: usize| item.get(index).unwrap_or(&serde_json::Value::Null);
                let task_id = reply::task_id(field(0))?;
                let command = reply::command(field(1))?;
                let outcome = match reply::int(field(2)) {
                    Some(delay) if delay >= 0 => Retried::Requeued { delay_seconds: delay as u64 },
                    _ => {
                        self.remember_command(task_id, command.clone());
                        Retried::DeadLettered
                    }
                };
                Ok(Expired { task_id, command, outcome })
            })
            .collect()
    }

    async fn callbacks_due(&self, now: Timestamp, limit: usize) -> StoreResult<Vec<DueCallback>> {
        self.callbacks(now, limit, None).await
    }

    async fn take_callbacks(
        &self,
        now: Timestamp,
        limit: usize,
        lease_until: Timestamp,
    ) -> StoreResult<Vec<DueCallback>> {
        self.callbacks(now, limit, Some(lease_until)).await
    }

    fn leases_callbacks(&self) -> bool {
        true
    }

    async fn callback_done(
        &self,
        task_id: TaskId,
        delivery: Uuid,
        settled: Option<SettledCallback>,
    ) -> StoreResult<()> {
        self.callback_end(task_id, delivery, CallbackEnd::Done(settled)).await
    }

    async fn callback_retry(
        &self,
        task_id: TaskId,
        delivery: Uuid,
        attempts: u32,
        next_at: Timestamp,
    ) -> StoreResult<()> {
        self.callback_end(task_id, delivery, CallbackEnd::Retry { attempts, next_at }).await
    }

    fn callbacks_pending(&self) -> (Option<Timestamp>, usize) {
        self.hints().outbox
    }

    async fn callback_owed(&self, id: TaskId) -> StoreResult<Option<OwedCallback>> {
        let Some(fields) = self.read(id, &["ob", "oa", "on"]).await? else { return Ok(None) };
        reply::owed(&fields)
    }

    async fn callback_settled(&self, id: TaskId) -> StoreResult<Option<SettledCallback>> {
        let Some(fields) = self.read(id, &["ob", "os", "oa"]).await? else { return Ok(None) };
        reply::settled(&fields)
    }

    async fn cancel(
        &self,
        ids: Vec<TaskId>,
        reason: Option<String>,
        now: Timestamp,
    ) -> StoreResult<Vec<Result<TaskState, TransitionError>>> {
        let mut args = Args::new();
        args.opt(reason.as_deref());
        for id in &ids {
            args.text(&id.to_string()).text(&Uuid::now_v7().to_string());
        }
        let reply = self.call(&self.scripts.cancel, Clock::Store, now, &args).await?;
        self.owed(&reply);
        let mut states = reply.hashes.iter();
        reply
            .list("outcomes")
            .iter()
            .map(|outcome| match outcome.as_str().filter(|code| !code.is_empty()) {
                Some(code) => Ok(Err(reply::refusal(code))),
                None => {
                    let fields = states
                        .next()
                        .ok_or_else(|| StoreError::Corrupt("a cancelled task".into()))?;
                    Ok(Ok(reply::state(fields)?))
                }
            })
            .collect()
    }

    async fn queue_settings(&self, command: &Command) -> StoreResult<QueueSettings> {
        let stats = self.stats(&[command.as_str()]).await?;
        Ok(stats.into_iter().next().map(|stats| stats.settings).unwrap_or_default())
    }

    async fn set_queue_settings(
        &self,
        command: &Command,
        settings: QueueSettings,
        now: Timestamp,
    ) -> StoreResult<QueueSettings> {
        self.settings_op(command, settings.paused, Some(&settings), now).await
    }

    async fn set_paused(
        &self,
        command: &Command,
        paused: bool,
        now: Timestamp,
    ) -> StoreResult<QueueSettings> {
        self.settings_op(command, paused, None, now).await
    }

    fn next_claimable_at(&self, filter: &CommandFilter, _now: Timestamp) -> Option<Timestamp> {
        let hints = self.hints();
        hints
            .holds
            .iter()
            .filter(|(command, _)| filter.allows(command))
            .filter_map(|(_, hold)| hold.until)
            .min()
    }

    async fn dead_letters(
        &self,
        command: &Command,
        filter: &DeadLetterFilter,
        cursor: Option<DeadLetterKey>,
        limit: usize,
    ) -> StoreResult<Vec<DeadLetterKey>> {
        let mut args = Args::new();
        args.text(command.as_str())
            .opt(filter.before.map(Timestamp::millis))
            .opt(filter.after.map(Timestamp::millis))
            .opt(cursor.map(|(at, _)| at.millis()))
            .opt(cursor.map(|(_, id)| id.to_string()))
            .opt(filter.text.as_deref())
            .num(limit);
        let reply =
            self.call(&self.scripts.dead_letters, Clock::Caller, Timestamp(0), &args).await?;
        reply
            .list("page")
            .iter()
            .map(|item| {
                let item = reply::list(item);
                let failed = item.first().and_then(reply::int).unwrap_or(0);
                let id = reply::task_id(item.get(1).unwrap_or(&serde_json::Value::Null))?;
                Ok((Timestamp(failed), id))
            })
            .collect()
    }

    async fn replay(
        &self,
        command: &Command,
        items: Vec<(TaskId, Timestamp)>,
        now: Timestamp,
    ) -> StoreResult<Vec<TaskId>> {
        let mut args = Args::new();
        args.text(command.as_str());
        for (id, visible_at) in &items {
            args.text(&id.to_string()).num(visible_at.millis());
        }
        let reply = self.call(&self.scripts.replay, Clock::Store, now, &args).await?;
        reply.list("replayed").iter().map(reply::task_id).collect()
    }

    async fn purge(&self, command: &Command, ids: Vec<TaskId>) -> StoreResult<Vec<TaskId>> {
        let mut args = Args::new();
        args.text(command.as_str());
        for id in &ids {
            args.text(&id.to_string());
        }
        let reply = self.call(&self.scripts.purge, Clock::Caller, Timestamp(0), &args).await?;
        reply.list("purged").iter().map(reply::task_id).collect()
    }

    async fn list_tasks(
        &self,
        command: Option<&Command>,
        status: Option<TaskStatus>,
        mut before: Option<TaskId>,
        limit: usize,
    ) -> StoreResult<Vec<TaskId>> {
        let mut ids = Vec::with_capacity(limit.min(1024));
        // A walk that stopped short of a full page says where to go on
        // (list.lua).
        loop {
            let mut args = Args::new();
            args.opt(command.map(Command::as_str))
                .opt(status.map(TaskStatus::as_str))
                .opt(before.map(|id| id.to_string()))
                .num(limit - ids.len())
                .num(LIST_SCAN);
            let reply = self.call(&self.scripts.list, Clock::Caller, Timestamp(0), &args).await?;
            for id in reply.list("ids") {
                ids.push(reply::task_id(id)?);
            }
            let resume = reply.get("resume");
            if resume.is_null() {
                return Ok(ids);
            }
            before = Some(reply::task_id(resume)?);
        }
    }

    async fn put_subscription(&self, subscription: Subscription) -> StoreResult<()> {
        let mut args = Args::new();
        args.text("put")
            .text(&subscription.id.to_string())
            .num(subscription.expires_at.millis())
            .text(&json_text(&subscription)?);
        self.subscriptions_op(&args, Timestamp::now()).await.map(|_| ())
    }

    async fn get_subscription(&self, id: Uuid) -> StoreResult<Option<Subscription>> {
        let key = self.key("subs");
        let found: Option<String> =
            self.command(async |connection| connection.hget(&key, id.to_string()).await).await?;
        found
            .map(|json| serde_json::from_str(&json))
            .transpose()
            .map_err(|error| StoreError::Corrupt(error.to_string()))
    }

    async fn delete_subscription(&self, id: Uuid) -> StoreResult<bool> {
        let mut args = Args::new();
        args.text("delete").text(&id.to_string());
        Ok(self.subscriptions_op(&args, Timestamp::now()).await? > 0)
    }

    async fn subscriptions(&self) -> StoreResult<Vec<Subscription>> {
        let key = self.key("subs");
        let all: Vec<String> =
            self.command(async |connection| connection.hvals(&key).await).await?;
        all.iter()
            .map(|json| serde_json::from_str(json))
            .collect::<Result<_, _>>()
            .map_err(|error| StoreError::Corrupt(error.to_string()))
    }

    async fn remove_lapsed_subscriptions(&self, now: Timestamp) -> StoreResult<usize> {
        let mut args = Args::new();
        args.text("lapse");
        self.subscriptions_op(&args, now).await
    }

    async fn queue_stats(&self, command: &Command) -> StoreResult<QueueStats> {
        let stats = self.stats(&[command.as_str()]).await?;
        Ok(stats.into_iter().next().unwrap_or_else(|| QueueStats::empty(command.clone())))
    }

    async fn all_queue_stats(&self) -> StoreResult<Vec<QueueStats>> {
        self.stats(&["*"]).await
    }

    async fn cleanup(&self, completed_before: Timestamp, limit: usize) -> StoreResult<Vec<TaskId>> {
        let mut args = Args::new();
        args.num(completed_before.millis()).num(limit);
        let reply = self.call(&self.scripts.cleanup, Clock::Store, Timestamp::now(), &args).await?;
        reply.list("deleted").iter().map(reply::task_id).collect()
    }

    fn next_deadline(&self) -> Option<Timestamp> {
        let hints = self.hints();
        [hints.delayed, hints.lease.map(|at| at.plus_millis(1))].into_iter().flatten().min()
    }

    fn health(&self) -> StoreResult<()> {
        if !self.link.is_up() {
            return Err(StoreError::Unavailable(format!(
                "Redis is unreachable: {}",
                self.link.down_because()
            )));
        }
        if let Some(waited) =
            self.link.unanswered_for().filter(|waited| *waited >= UNANSWERED_NOT_READY)
        {
            return Err(StoreError::Unavailable(format!(
                "Redis has answered no call for {:.1} s",
                waited.as_secs_f64()
            )));
        }
        // Loading its data or read-only: calls are refused (the safety
        // poll's role check and the reaper's pass, each once a second,
        // keep this fresh while it lasts).
        match self.link.refused_within(UNANSWERED_NOT_READY) {
            Some(why) => Err(StoreError::Unavailable(format!("Redis refuses calls: {why}"))),
            None => Ok(()),
        }
    }

    fn alive(&self) -> StoreResult<()> {
        // An outage is waited out: restarting the process would not help.
        Ok(())
    }

    fn failed(&self) -> CancellationToken {
        self.never.clone()
    }

    async fn close(&self) -> StoreResult<()> {
        // Every answer is given once Redis has applied (and, with
        // `appendfsync always`, written) the change: nothing to flush.
        // Calls in flight are still answered: the thread runs until the
        // store is dropped.
        self.stop.cancel();
        Ok(())
    }

    fn command_of(&self, id: TaskId) -> Option<Command> {
        self.hints().commands.remove(&id)
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        // Ends the background loops, then the thread with its connection
        // (with `Threading::Current`, the loops only).
        self.stop.cancel();
        self.ended.cancel();
    }
}

impl RedisStore {
    /// Claims for each of `specs` (each with its caller's now, from which
    /// its lease end is rebased) in turn, in one `claim` call.
    async fn claim_now(
        &self,
        specs: &[(ClaimSpec, Timestamp)],
        now: Timestamp,
    ) -> StoreResult<Vec<Vec<Task>>> {
        let mut args = Args::new();
        for (spec, caller_now) in specs {
            claim_arg(&mut args, spec, *caller_now);
        }
        let reply = self.call(&self.scripts.claim, Clock::Store, now, &args).await?;
        let filters = specs.iter().map(|(spec, _)| &spec.commands);
        self.claims_of(&reply, filters, &mut reply.hashes.iter())
    }

    /// The tasks each claim of a reply took (one claim per filter, in
    /// order), read from `hashes`; keeps the rate-limit holds it told of.
    fn claims_of<'r, 'f>(
        &self,
        reply: &'r Reply,
        filters: impl ExactSizeIterator<Item = &'f CommandFilter>,
        hashes: &mut impl Iterator<Item = &'r Fields>,
    ) -> StoreResult<Vec<Vec<Task>>> {
        let claims = reply.list("claims");
        if claims.len() != filters.len() {
            return Err(StoreError::Corrupt(format!(
                "a claim for {} requests answered {}",
                filters.len(),
                claims.len()
            )));
        }
        let mut claimed = Vec::with_capacity(claims.len());
        let (now, shift) = (reply.now().millis(), reply.shift());
        for (filter, claim) in filters.zip(claims) {
            if claim.get("skipped").is_none() {
                self.keep_holds(filter, now, shift, reply::list(&claim["holds"]));
            }
            let mut taken = Vec::new();
            for id in reply::list(&claim["ids"]) {
                let fields = hashes.next().ok_or_else(|| {
                    StoreError::Corrupt("a claim answered fewer tasks than ids".into())
                })?;
                taken.push(reply::task(reply::task_id(id)?, fields)?);
            }
            claimed.push(taken);
        }
        Ok(claimed)
    }

    /// Stores `tasks` in one `create` call, sent at `now` (tasks' times are
    /// moments on this replica's clock, moved to Redis's by the difference
    /// of the two clocks at `now`).
    async fn create_now(&self, tasks: Vec<Task>, now: Timestamp) -> StoreResult<Vec<Created>> {
        let args = create_args(self.max_commands, &tasks);
        let reply = self.call(&self.scripts.create, Clock::Store, now, &args).await?;
        let shift = reply.shift();
        let mut holders = reply.hashes.iter();
        let made = reply.list("made");
        let mut created = Vec::with_capacity(tasks.len());
        for (task, outcome) in tasks.into_iter().zip(made) {
            match outcome.as_str().filter(|holder| !holder.is_empty()) {
                None => created.push(Created::New(shifted(task, shift))),
                Some(REFUSED_FOR_COMMANDS) => {
                    created.push(Created::TooManyCommands(self.max_commands));
                }
                Some(holder) => {
                    let id = reply::task_id(&serde_json::Value::from(holder))?;
                    let fields = holders
                        .next()
                        .ok_or_else(|| StoreError::Corrupt(format!("task {id} vanished")))?;
                    created.push(Created::Existing(reply::task(id, fields)?));
                }
            }
        }
        Ok(created)
    }

    /// Stores results in one `complete` call.
    async fn complete_now(
        &self,
        items: Vec<Completion>,
        now: Timestamp,
    ) -> StoreResult<Vec<Result<Completed, TransitionError>>> {
        let mut args = Args::new();
        for item in &items {
            completion_arg(&mut args, item)?;
        }
        let reply = self.call(&self.scripts.complete, Clock::Store, now, &args).await?;
        self.owed(&reply);
        self.outcomes_of(&reply, items.iter(), &mut reply.hashes.iter())
    }

    /// Stores results, each followed by the claim of its worker's next
    /// task when it is accepted, in one `complete_claim` call.
    async fn complete_claim_now(
        &self,
        items: &[(Completion, ClaimSpec, Timestamp)],
        now: Timestamp,
    ) -> StoreResult<Vec<CompletedAndNext>> {
        let mut args = Args::new();
        for (completion, spec, caller_now) in items {
            completion_arg(&mut args, completion)?;
            claim_arg(&mut args, spec, *caller_now);
        }
        let reply = self.call(&self.scripts.complete_claim, Clock::Store, now, &args).await?;
        self.owed(&reply);
        let mut hashes = reply.hashes.iter();
        let outcomes = self.outcomes_of(&reply, items.iter().map(|item| &item.0), &mut hashes)?;
        let filters = items.iter().map(|(_, spec, _)| &spec.commands);
        let claimed = self.claims_of(&reply, filters, &mut hashes)?;
        let done = outcomes.into_iter().zip(claimed);
        Ok(done.map(|(outcome, next)| CompletedAndNext { outcome, next: Ok(next) }).collect())
    }

    /// The outcome of each of `items` in a reply: a stored result's record
    /// is the one its caller sent, stored at the script's time; a
    /// repeat's, the one stored before, is read from `hashes`.
    fn outcomes_of<'r, 'c>(
        &self,
        reply: &'r Reply,
        items: impl Iterator<Item = &'c Completion>,
        hashes: &mut impl Iterator<Item = &'r Fields>,
    ) -> StoreResult<Vec<Result<Completed, TransitionError>>> {
        let answered = reply.list("outcomes");
        let mut outcomes = Vec::with_capacity(answered.len());
        for (item, outcome) in items.zip(answered) {
            if let Some(code) = outcome.get("err").and_then(|v| v.as_str()) {
                outcomes.push(Err(reply::refusal(code)));
                continue;
            }
            if outcome.get("ok").and_then(|v| v.as_str()) == Some("stored") {
                if let Ok(command) = reply::command(outcome.get("cmd").unwrap_or_default()) {
                    self.remember_command(item.task_id, command);
                }
                outcomes.push(Ok(Completed::Stored(stored_record(item, reply.now()))));
            } else {
                let lost = || StoreError::Corrupt(format!("task {} lost its result", item.task_id));
                let fields = hashes.next().ok_or_else(lost)?;
                let record = reply::result(item.task_id, fields)?.ok_or_else(lost)?;
                outcomes.push(Ok(Completed::Repeated(record)));
            }
        }
        Ok(outcomes)
    }

    /// Keeps the rate-limit holds a claim that ran at `now` (Redis's
    /// time) reported for its commands, unless a claim that ran later
    /// already told of them.
    fn keep_holds(
        &self,
        filter: &CommandFilter,
        now: i64,
        shift: i64,
        holds: &[serde_json::Value],
    ) {
        let told: HashMap<Command, Timestamp> = holds
            .iter()
            .filter_map(|hold| {
                let pair = reply::list(hold);
                let command = reply::command(pair.first()?).ok()?;
                Some((command, Timestamp(reply::int(pair.get(1)?)? - shift)))
            })
            .collect();
        self.hints().keep_holds(filter, now, told);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(name: &str) -> Command {
        Command::parse(name).expect("a valid command")
    }

    #[test]
    fn an_older_claims_answer_handled_last_does_not_undo_a_newer_one() {
        let (a, b) = (command("A"), command("B"));
        let only_a = CommandFilter::Only(vec![a.clone()]);
        let held_until = |hints: &Hints, c: &Command| hints.holds.get(c).and_then(|h| h.until);

        let mut hints = Hints::default();
        hints.keep_holds(&only_a, 100, HashMap::from([(a.clone(), Timestamp(150))]));
        // The claim that ran at 200 found A's bucket full again …
        hints.keep_holds(&only_a, 200, HashMap::new());
        // … and the one that ran at 120, handled after it, is stale.
        hints.keep_holds(&only_a, 120, HashMap::from([(a.clone(), Timestamp(180))]));
        assert_eq!(held_until(&hints, &a), None);

        // A later claim of every command tells of A and B.
        let told = HashMap::from([(a.clone(), Timestamp(260)), (b.clone(), Timestamp(270))]);
        hints.keep_holds(&CommandFilter::All, 250, told);
        assert_eq!(
            (held_until(&hints, &a), held_until(&hints, &b)),
            (Some(Timestamp(260)), Some(Timestamp(270)))
        );
    }

    #[test]
    fn redis_addr_takes_a_bare_address_or_a_redis_or_rediss_url() {
        let bare = RedisOptions::from_addr("cache:6379", None, 0, "codeq");
        assert_eq!((bare.addr.as_str(), bare.tls), ("cache:6379", false));
        let plain = RedisOptions::from_addr("redis://cache:6380/", None, 0, "codeq");
        assert_eq!((plain.addr.as_str(), plain.tls), ("cache:6380", false));
        let tls = RedisOptions::from_addr("rediss://cache:6381", Some("pw".into()), 2, "q");
        assert_eq!((tls.addr.as_str(), tls.tls, tls.db), ("cache:6381", true, 2));
        assert_eq!(tls.time, TimeSource::Redis);
        let upper = RedisOptions::from_addr("REDISS://cache:6381", None, 0, "q");
        assert_eq!((upper.addr.as_str(), upper.tls), ("cache:6381", true), "schemes ignore case");
    }

    #[test]
    fn a_client_is_built_for_ipv6_and_tls_addresses() {
        for addr in ["[::1]:6379", "rediss://localhost:6380"] {
            assert!(RedisOptions::from_addr(addr, None, 0, "codeq").client().is_ok(), "{addr}");
        }
        assert!(RedisOptions::from_addr("no-port", None, 0, "codeq").client().is_err());
    }

    #[test]
    fn the_role_is_read_from_either_shape_of_a_hello_reply() {
        use redis::Value::{Array, BulkString, Int, Map};
        let text = |t: &str| BulkString(t.as_bytes().to_vec());
        let resp2 = Array(vec![
            text("server"),
            text("redis"),
            text("proto"),
            Int(2),
            text("role"),
            text("replica"),
        ]);
        let resp3 = Map(vec![(text("proto"), Int(3)), (text("role"), text("master"))]);

        assert_eq!(role_of(&resp2).as_deref(), Some("replica"));
        assert_eq!(role_of(&resp3).as_deref(), Some("master"));
        assert_eq!(role_of(&Array(vec![text("server"), text("kvrocks")])), None);
    }
}
