//! The embedded backend: every live task's state in memory
//! (`state`), over codeQ's own journal on disk ([`log`]), for a single
//! process.
//!
//! A transition runs under one mutex and touches memory only: it decides
//! with the pure functions of `codeq_core::lifecycle`, builds its journal
//! batch and memory changes as a plan (`plan.rs`), queues the batch (which
//! assigns its sequence number and record locations), and only then
//! applies the changes to memory. The lock is a `std` mutex because these
//! critical sections are short and never await or do I/O.
//!
//! Every answer then waits, outside the lock, until the journal's durable
//! watermark covers the newest batch it shows (its own, or the one that
//! last changed what it read), so nothing is answered that a crash could
//! take back. Task bodies and result records are read from the journal
//! after that wait, outside the lock.
//!
//! A failed write or sync stops the journal for good ([`log::watermark`]):
//! every later call answers "unavailable", and [`Store::failed`] fires so
//! the process exits and recovers from disk on restart.

pub mod compaction;
pub mod log;
pub mod maintenance;
mod plan;
mod queues;
mod rebuild;
mod records;
mod state;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use codeq_core::lifecycle::{self, Completion as Decided};
use codeq_core::{
    Command, QueueSettings, QueueStats, ResultRecord, Subscription, Task, TaskId, TaskState,
    TaskStatus, Timestamp,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use self::log::fs::{Fs, RealFs};
use self::log::watermark::WaitError;
use self::log::{
    AppendError, Appender, Location, Log, LogOptions, OpenError, ReadError, Recovered, Slot,
};
use self::plan::Plan;
use self::rebuild::Rebuild;
use self::records::{Body, Callback, decode_result};
use self::state::{DeadWindow, Subscribed, Tasks};
use crate::config::Durability;
use crate::store::{
    ClaimSpec, CommandFilter, Completed, CompletedAndNext, Completion, Created,
    DEFAULT_MAX_COMMANDS, DeadLetterFilter, DeadLetterKey, DueCallback, Expired, Expiry, Fence,
    LeaseEnd, OwedCallback, Retried, SettledCallback, Signals, Store, StoreError, StoreResult,
    TransitionError,
};

/// Tuning of the embedded backend.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedOptions {
    /// The journal's.
    pub log: LogOptions,
    /// The journal is compacted once it is larger than this and than
    /// twice its live records.
    pub compact_above_bytes: u64,
    /// How many commands the store knows at most: a task or settings of
    /// one more are refused.
    pub max_commands: usize,
}

impl EmbeddedOptions {
    /// Defaults for `durability`.
    pub fn new(durability: Durability) -> Self {
        Self {
            log: LogOptions::new(durability),
            compact_above_bytes: 64 * 1024 * 1024,
            max_commands: DEFAULT_MAX_COMMANDS,
        }
    }
}

/// Memory and the queueing end of the journal, under one lock.
struct Core {
    tasks: Tasks,
    appender: Appender,
}

/// The embedded store. See the module docs.
pub struct EmbeddedStore {
    core: Mutex<Core>,
    log: Log,
    signals: Arc<Signals>,
    options: EmbeddedOptions,
    recovered: Recovered,
    /// Stops the compactor.
    stop: CancellationToken,
    /// Held while a segment is compacted (closing waits for it).
    compacting: tokio::sync::Mutex<()>,
    /// The journal size below which compaction does not run again, after
    /// a pass that reclaimed little (0: none).
    compaction_floor: std::sync::atomic::AtomicU64,
}

/// What the answer of a transition needs once its batch is durable.
struct Done<T> {
    value: T,
    wait_for: u64,
}

/// A task a claim took: where its body is and its new state.
type PlannedClaim = (TaskId, Location, TaskState);

/// A result's outcome as planned: stored, a repeat of the stored one (its
/// record still to read), or refused.
type PlannedCompletion = Result<Result<Completed, TaskId>, TransitionError>;

/// Plans the claim of `spec`: the ready tasks it takes.
fn plan_claim(
    live: &Tasks,
    plan: &mut Plan,
    spec: &ClaimSpec,
    now: Timestamp,
) -> StoreResult<Vec<PlannedClaim>> {
    let mut claimed = Vec::new();
    for id in live.claimable(&spec.commands, spec.count, now) {
        let (Some(entry), Some((current, _))) = (live.get(id), plan.state(live, id)) else {
            continue;
        };
        let state = lifecycle::claim(&current, &spec.worker_id, spec.lease_until, now);
        plan.set_state(id, state.clone(), None)?;
        claimed.push((id, entry.body, state));
    }
    Ok(claimed)
}

/// Plans results, each on its own.
fn plan_completions(
    live: &Tasks,
    plan: &mut Plan,
    items: Vec<Completion>,
    now: Timestamp,
) -> StoreResult<Vec<PlannedCompletion>> {
    let mut outcomes = Vec::with_capacity(items.len());
    for item in items {
        let Some((state, _)) = plan.state(live, item.task_id) else {
            outcomes.push(Err(TransitionError::NotFound));
            continue;
        };
        let decided =
            lifecycle::complete(item.task_id, &state, item.fence(), item.submission.clone(), now);
        outcomes.push(match decided {
            Ok(Decided::Stored { state: after, record }) => {
                plan_move(live, plan, item.task_id, &state, after, Some(&record), now)?;
                Ok(Ok(Completed::Stored(record)))
            }
            Ok(Decided::Repeated) => Ok(Err(item.task_id)),
            Err(refused) => Err(refused),
        });
    }
    Ok(outcomes)
}

fn wait_error(error: WaitError) -> StoreError {
    match error {
        WaitError::DiskFull(cause) => StoreError::DiskFull(cause.to_string()),
        WaitError::Failed(cause) => StoreError::Unavailable(cause.to_string()),
    }
}

fn not_taking_writes() -> StoreError {
    StoreError::Unavailable("storage stopped taking writes after a disk failure".into())
}

impl EmbeddedStore {
    /// Opens the store in `dir` on the real file system with default
    /// tuning, and rebuilds memory from the journal.
    pub fn open(
        dir: &Path,
        durability: Durability,
        signals: Arc<Signals>,
    ) -> Result<Arc<Self>, OpenError> {
        Self::open_with(Arc::new(RealFs), dir, EmbeddedOptions::new(durability), signals)
    }

    /// Opens the store in `dir` through `fs` (tests pass a
    /// [`log::fault::FaultFs`]). Compaction runs on the current Tokio
    /// runtime, when there is one.
    pub fn open_with(
        fs: Arc<dyn Fs>,
        dir: &Path,
        options: EmbeddedOptions,
        signals: Arc<Signals>,
    ) -> Result<Arc<Self>, OpenError> {
        fs.create_dir_all(dir)?;
        let mut rebuild = Rebuild::default();
        let recovering = Log::recover(fs, dir, options.log, &mut rebuild)?;
        // Everything is checked before anything is repaired or written.
        let tasks = rebuild.finish(Timestamp::now()).map_err(|error| OpenError::Damaged {
            dir: dir.to_path_buf(),
            problem: error.to_string(),
        })?;
        let recovered = recovering.recovered().clone();
        let (log, appender) = recovering.start()?;
        let store = Arc::new(Self {
            core: Mutex::new(Core { tasks, appender }),
            log,
            signals,
            options,
            recovered,
            stop: CancellationToken::new(),
            compacting: tokio::sync::Mutex::new(()),
            compaction_floor: std::sync::atomic::AtomicU64::new(0),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(compaction::run(Arc::downgrade(&store), store.stop.clone()));
        }
        Ok(store)
    }

    /// Checks the store in `dir` offline (the server must be stopped):
    /// replays the journal and rebuilds memory without changing a byte.
    pub fn check(dir: &Path) -> Result<CheckReport, OpenError> {
        let mut rebuild = Rebuild::default();
        let recovered = Log::check(&RealFs, dir, &mut rebuild)?;
        let tasks = rebuild.finish(Timestamp::now()).map_err(|error| OpenError::Damaged {
            dir: dir.to_path_buf(),
            problem: error.to_string(),
        })?;
        Ok(CheckReport { recovered, queues: tasks.all_stats(), tasks: tasks.len() as u64 })
    }

    /// How many answers wait for their batch to become durable.
    pub fn durability_waiters(&self) -> usize {
        self.log.watermark().waiting()
    }

    /// Whether the journal's next segment is filled ahead and waiting
    /// (see `log::spare`).
    pub fn spare_segment_filled(&self) -> bool {
        self.log.spare_filled()
    }

    /// What recovery found at open.
    pub fn recovered(&self) -> &Recovered {
        &self.recovered
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs one transition: plans it under the lock, queues its batch,
    /// applies it to memory, announces what became ready; then (lock
    /// released) waits until what it shows is durable.
    async fn transact<T>(
        &self,
        now: Timestamp,
        decide: impl FnOnce(&Tasks, &mut Plan) -> StoreResult<T>,
    ) -> StoreResult<Done<T>> {
        self.transact_sized(now, 0, decide).await
    }

    /// Stores `change` of the settings of `command` (read and written in
    /// one transition); the settings before.
    async fn change_settings(
        &self,
        command: &Command,
        now: Timestamp,
        change: impl FnOnce(QueueSettings) -> QueueSettings,
    ) -> StoreResult<QueueSettings> {
        let max_commands = self.options.max_commands;
        self.transact(now, |live, plan| {
            if !plan.may_know(live, command, max_commands) {
                return Err(StoreError::TooManyCommands(max_commands));
            }
            let (before, _) = live.settings(command);
            plan.set_settings(live, command, change(before))?;
            Ok(before)
        })
        .await
        .map(|done| done.value)
    }

    /// [`Self::transact`] with room for about `bytes` of records.
    async fn transact_sized<T>(
        &self,
        now: Timestamp,
        bytes: usize,
        decide: impl FnOnce(&Tasks, &mut Plan) -> StoreResult<T>,
    ) -> StoreResult<Done<T>> {
        let slot = self.log.reserve().await.map_err(|_| not_taking_writes())?;
        let done = self.queue(&mut self.lock(), slot, now, bytes, decide)?;
        self.durable(done.wait_for).await?;
        Ok(done)
    }

    /// Plans one transition under the lock (`core`), queues its batch in
    /// `slot`, applies it to memory and announces what became ready. Its
    /// answer must wait until `wait_for` is durable.
    fn queue<T>(
        &self,
        core: &mut Core,
        slot: Slot<'_>,
        now: Timestamp,
        bytes: usize,
        decide: impl FnOnce(&Tasks, &mut Plan) -> StoreResult<T>,
    ) -> StoreResult<Done<T>> {
        if !core.appender.is_open() {
            return Err(not_taking_writes());
        }
        let deadline_before = core.tasks.next_deadline();
        let mut plan = Plan::with_capacity(now, bytes);
        let value = decide(&core.tasks, &mut plan)?;
        let observed = plan.observed();
        if plan.is_empty() {
            return Ok(Done { value, wait_for: observed });
        }
        let (batch, pending) = plan.into_parts();
        let (seq, locations) = core.appender.append(batch, slot).map_err(|error| match error {
            AppendError::TooLarge(_) => StoreError::TooLarge(error.to_string()),
            AppendError::Closed => not_taking_writes(),
        })?;
        let applied = pending.apply(&mut core.tasks, seq, &locations);
        self.announce(&applied.ready, deadline_before, core.tasks.next_deadline());
        self.announce_woken(&mut core.tasks);
        if applied.owed {
            self.signals.callback_owed();
        }
        Ok(Done { value, wait_for: seq.max(observed) })
    }

    fn announce(
        &self,
        ready: &BTreeSet<Command>,
        before: Option<Timestamp>,
        after: Option<Timestamp>,
    ) {
        for command in ready {
            self.signals.ready(command);
        }
        let moved = match (before, after) {
            (Some(before), Some(after)) => after < before,
            (None, Some(_)) => true,
            _ => false,
        };
        if moved {
            self.signals.deadline_changed();
        }
    }

    /// Tells subscribers of the commands whose ready set went from empty
    /// to non-empty, and parked claims of the commands a limit no longer
    /// holds back.
    fn announce_woken(&self, tasks: &mut Tasks) {
        for (command, depth) in tasks.take_woken() {
            self.signals.became_ready(command, depth);
        }
        for command in tasks.take_freed() {
            self.signals.ready(&command);
        }
    }

    /// What `find` reads of a callback record in memory (with the batch
    /// that wrote it), once durable; nothing found waits for every batch
    /// queued, as it may be the news of one not yet durable.
    async fn read_callback<T>(
        &self,
        find: impl FnOnce(&Tasks) -> Option<(T, u64)>,
    ) -> StoreResult<Option<T>> {
        let (found, seq) = {
            let core = self.lock();
            match find(&core.tasks) {
                Some((found, seq)) => (Some(found), seq),
                None => (None, core.appender.last_seq()),
            }
        };
        self.durable(seq).await?;
        Ok(found)
    }

    async fn durable(&self, seq: u64) -> StoreResult<()> {
        self.log.watermark().wait(seq).await.map_err(wait_error)
    }

    /// Reads a record of task `id` whose batch is durable, following it
    /// when compaction moved it (`locate` picks it from the task again;
    /// its new place is read once durable).
    async fn read(
        &self,
        id: TaskId,
        mut at: Location,
        locate: impl Fn(&state::Entry) -> Option<Location>,
    ) -> StoreResult<Option<Vec<u8>>> {
        loop {
            match self.log.read(at) {
                Ok(bytes) => return Ok(Some(bytes)),
                Err(ReadError::Moved) => {
                    let moved = self
                        .lock()
                        .tasks
                        .get(id)
                        .and_then(|entry| Some((locate(entry)?, entry.seq)));
                    match moved {
                        Some((moved, seq)) if moved != at => {
                            self.durable(seq).await?;
                            at = moved;
                        }
                        Some(_) => {
                            return Err(StoreError::Corrupt("a record's segment is gone".into()));
                        }
                        None => return Ok(None),
                    }
                }
                Err(ReadError::Io(error)) => {
                    return Err(StoreError::Unavailable(format!("read failed: {error}")));
                }
            }
        }
    }

    /// The whole task `id`: its body read back, with `state`.
    async fn task_with(
        &self,
        id: TaskId,
        body: Location,
        state: TaskState,
        seq: u64,
    ) -> StoreResult<Option<Task>> {
        self.durable(seq).await?;
        let Some(bytes) = self.read(id, body, |entry| Some(entry.body)).await? else {
            return Ok(None);
        };
        Body::decode(&bytes)?.into_task(id, state).map(Some)
    }

    /// The tasks a planned claim took, each read once durable.
    async fn claimed_tasks(&self, done: Done<Vec<PlannedClaim>>) -> StoreResult<Vec<Task>> {
        let mut tasks = Vec::with_capacity(done.value.len());
        for (id, body, state) in done.value {
            if let Some(task) = self.task_with(id, body, state, done.wait_for).await? {
                tasks.push(task);
            }
        }
        Ok(tasks)
    }

    /// The outcomes of planned results, a repeat's stored record read.
    async fn completion_outcomes(
        &self,
        planned: Vec<PlannedCompletion>,
    ) -> StoreResult<Vec<Result<Completed, TransitionError>>> {
        let mut outcomes = Vec::with_capacity(planned.len());
        for outcome in planned {
            outcomes.push(match outcome {
                Ok(Ok(stored)) => Ok(stored),
                Ok(Err(repeated)) => match self.result_of(repeated).await? {
                    Some(record) => Ok(Completed::Repeated(record)),
                    None => {
                        return Err(StoreError::Corrupt(format!(
                            "task {repeated} lost its result"
                        )));
                    }
                },
                Err(refused) => Err(refused),
            });
        }
        Ok(outcomes)
    }

    /// The stored result of `id`, once durable.
    async fn result_of(&self, id: TaskId) -> StoreResult<Option<ResultRecord>> {
        let found = self.look_up(id, |entry| entry.result().map(|at| (at, entry.seq)));
        let (at, seq) = match found {
            Found::Yes(Some(found)) => found,
            Found::Yes(None) => return Ok(None),
            Found::Deleted(seq) => {
                self.durable(seq).await?;
                return Ok(None);
            }
        };
        self.durable(seq).await?;
        let located = self.read(id, at, |entry| entry.result()).await?;
        located.map(|bytes| decode_result(&bytes)).transpose()
    }

    /// What `pick` takes from task `id`, or the batch a "no such task"
    /// answer must wait for (the last delete).
    fn look_up<T>(&self, id: TaskId, pick: impl FnOnce(&state::Entry) -> T) -> Found<T> {
        let core = self.lock();
        match core.tasks.get(id) {
            Some(entry) => Found::Yes(pick(entry)),
            None => Found::Deleted(core.tasks.deleted_seq()),
        }
    }

    /// The journal's data and its live records', in bytes (compaction
    /// compares them).
    fn sizes(&self) -> (u64, u64) {
        let core = self.lock();
        (core.appender.journal_bytes(), core.tasks.live_bytes())
    }
}

/// Plans task `id`'s move from `before` to `after` (with the result record
/// it stores) and, when the move owes one, its result callback.
fn plan_move(
    live: &Tasks,
    plan: &mut Plan,
    id: TaskId,
    before: &TaskState,
    after: TaskState,
    result: Option<&ResultRecord>,
    now: Timestamp,
) -> StoreResult<()> {
    let has_webhook = live.get(id).is_some_and(|entry| entry.has_webhook);
    let owes = lifecycle::owes_callback(before, &after, has_webhook);
    plan.set_state(id, after, result)?;
    if owes {
        plan.owe(id, Callback { delivery: uuid::Uuid::now_v7(), attempts: 0, next_at: now })?;
    }
    Ok(())
}

/// A task found, or the batch that may have deleted it.
enum Found<T> {
    Yes(T),
    Deleted(u64),
}

/// What `codeq storage check` reports.
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// What replaying the journal found.
    pub recovered: Recovered,
    /// Live tasks.
    pub tasks: u64,
    /// Depths of every command.
    pub queues: Vec<QueueStats>,
}

/// A created task, or the holder of its key to read back (with the task
/// asked for, in case the holder is gone by then; short-lived: the size
/// difference of the variants does not matter).
#[allow(clippy::large_enum_variant)]
enum Planned {
    New(Task),
    Existing(TaskId, Task),
    TooManyCommands,
}

/// How many times a create is planned again when key holders it found
/// were deleted (by retention) before they could be read back.
const CREATE_ROUNDS: usize = 4;

impl EmbeddedStore {
    /// One create transaction: each task created, or the live holder of its
    /// idempotency key found.
    async fn plan_create(&self, tasks: Vec<Task>) -> StoreResult<Vec<Planned>> {
        let now = tasks.first().map_or_else(Timestamp::now, |task| task.created_at);
        // Room for every body: a batch of large payloads is encoded once.
        let bytes = tasks.iter().map(|task| task.payload.len() + 256).sum();
        let max_commands = self.options.max_commands;
        let done = self
            .transact_sized(now, bytes, |live, plan| {
                let mut keys = std::collections::HashMap::new();
                let mut planned = Vec::with_capacity(tasks.len());
                for task in tasks {
                    let key = task.idempotency_key.as_deref();
                    let holder =
                        key.and_then(|key| keys.get(key).copied().or(live.idempotent(key)));
                    if let Some(holder) = holder {
                        if let Some(entry) = live.get(holder) {
                            plan.observe(entry.seq);
                        }
                        planned.push(Planned::Existing(holder, task));
                        continue;
                    }
                    if !plan.may_know(live, &task.command, max_commands) {
                        planned.push(Planned::TooManyCommands);
                        continue;
                    }
                    if let Some(key) = key {
                        keys.insert(key.to_string(), task.id);
                    }
                    plan.create(live, &task)?;
                    planned.push(Planned::New(task));
                }
                Ok(planned)
            })
            .await?;
        Ok(done.value)
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    /// Holders of a key are read back after the transaction, outside the
    /// lock; retention may delete one in between. Its key is free then, so
    /// the tasks that met it are planned again (as a create after the
    /// deletion would be), rather than failing a request whose other
    /// tasks are stored.
    async fn create(&self, tasks: Vec<Task>) -> StoreResult<Vec<Created>> {
        let mut created: Vec<Option<Created>> = tasks.iter().map(|_| None).collect();
        let mut to_plan: Vec<(usize, Task)> = tasks.into_iter().enumerate().collect();
        for _ in 0..CREATE_ROUNDS {
            let (at, tasks): (Vec<usize>, Vec<Task>) = to_plan.into_iter().unzip();
            let planned = self.plan_create(tasks).await?;
            to_plan = Vec::new();
            for (at, planned) in at.into_iter().zip(planned) {
                created[at] = match planned {
                    Planned::New(task) => Some(Created::New(task)),
                    Planned::TooManyCommands => {
                        Some(Created::TooManyCommands(self.options.max_commands))
                    }
                    Planned::Existing(holder, task) => match self.get_task(holder).await? {
                        Some(holder) => Some(Created::Existing(holder)),
                        None => {
                            to_plan.push((at, task));
                            None
                        }
                    },
                };
            }
            if to_plan.is_empty() {
                return Ok(created.into_iter().flatten().collect());
            }
        }
        Err(StoreError::Unavailable(format!(
            "the holders of {} idempotency keys kept being deleted while this create read them",
            to_plan.len()
        )))
    }

    async fn claim(&self, spec: &ClaimSpec, now: Timestamp) -> StoreResult<Vec<Task>> {
        let done = self.transact(now, |live, plan| plan_claim(live, plan, spec, now)).await?;
        self.claimed_tasks(done).await
    }

    async fn heartbeat(
        &self,
        id: TaskId,
        fence: Fence<'_>,
        lease_until: Timestamp,
        now: Timestamp,
    ) -> StoreResult<TaskState> {
        let done = self
            .transact(now, |live, plan| {
                let (state, _) = plan.state(live, id).ok_or(TransitionError::NotFound)?;
                let next = lifecycle::heartbeat(&state, fence, lease_until, now);
                Ok(match next {
                    Ok(next) => {
                        plan.set_state(id, next.clone(), None)?;
                        Ok(next)
                    }
                    Err(refused) => Err(refused),
                })
            })
            .await?;
        Ok(done.value?)
    }

    async fn abandon(&self, id: TaskId, fence: Fence<'_>, now: Timestamp) -> StoreResult<()> {
        let done = self
            .transact(now, |live, plan| {
                let (state, _) = plan.state(live, id).ok_or(TransitionError::NotFound)?;
                Ok(match lifecycle::abandon(&state, fence, now) {
                    Ok(next) => plan.set_state(id, next, None).map(Ok)?,
                    Err(refused) => Err(refused),
                })
            })
            .await?;
        Ok(done.value?)
    }

    async fn nack(
        &self,
        id: TaskId,
        fence: Fence<'_>,
        delay_seconds: u64,
        reason: Option<String>,
        now: Timestamp,
    ) -> StoreResult<Retried> {
        let done = self
            .transact(now, |live, plan| {
                let (state, max_attempts) =
                    plan.state(live, id).ok_or(TransitionError::NotFound)?;
                Ok(
                    match lifecycle::nack(
                        id,
                        &state,
                        max_attempts,
                        fence,
                        delay_seconds,
                        reason,
                        now,
                    ) {
                        Ok(retry) => {
                            let result = retry.dead_letter.as_ref();
                            plan_move(live, plan, id, &state, retry.state, result, now)?;
                            Ok(retry.outcome)
                        }
                        Err(refused) => Err(refused),
                    },
                )
            })
            .await?;
        Ok(done.value?)
    }

    async fn complete(
        &self,
        items: Vec<Completion>,
        now: Timestamp,
    ) -> StoreResult<Vec<Result<Completed, TransitionError>>> {
        let done =
            self.transact(now, |live, plan| plan_completions(live, plan, items, now)).await?;
        self.completion_outcomes(done.value).await
    }

    /// The claim's batch is queued right behind the result's, under the
    /// same lock, so that one commit round usually takes both (the
    /// committer may have taken the first alone); the answer waits for
    /// both.
    async fn complete_and_claim(
        &self,
        item: Completion,
        next: &ClaimSpec,
        now: Timestamp,
    ) -> StoreResult<CompletedAndNext> {
        let (first, second) = self.log.reserve_two().await.map_err(|_| not_taking_writes())?;
        let (completed, claimed) = {
            let mut core = self.lock();
            let completed = self.queue(&mut core, first, now, 0, |live, plan| {
                plan_completions(live, plan, vec![item], now)
            })?;
            let claimed = match completed.value.first() {
                Some(Ok(_)) => Some(self.queue(&mut core, second, now, 0, |live, plan| {
                    plan_claim(live, plan, next, now)
                })),
                _ => None,
            };
            (completed, claimed)
        };
        self.durable(completed.wait_for).await?;
        let outcome = self.completion_outcomes(completed.value).await?.into_iter().next();
        let outcome = outcome
            .ok_or_else(|| StoreError::Corrupt("a result was stored without an outcome".into()))?;
        let next = match claimed {
            None => Ok(Vec::new()),
            Some(Ok(done)) => self.claimed_tasks(done).await,
            Some(Err(error)) => Err(error),
        };
        Ok(CompletedAndNext { outcome, next })
    }

    async fn get_task(&self, id: TaskId) -> StoreResult<Option<Task>> {
        match self.look_up(id, |entry| (entry.body, entry.state(), entry.seq)) {
            Found::Yes((body, state, seq)) => self.task_with(id, body, state, seq).await,
            Found::Deleted(seq) => self.durable(seq).await.map(|()| None),
        }
    }

    async fn get_state(&self, id: TaskId) -> StoreResult<Option<TaskState>> {
        match self.look_up(id, |entry| (entry.state(), entry.seq)) {
            Found::Yes((state, seq)) => self.durable(seq).await.map(|()| Some(state)),
            Found::Deleted(seq) => self.durable(seq).await.map(|()| None),
        }
    }

    async fn get_result(&self, id: TaskId) -> StoreResult<Option<ResultRecord>> {
        self.result_of(id).await
    }

    async fn promote_due(&self, now: Timestamp, limit: usize) -> StoreResult<usize> {
        // A pending task visible at `now` is ready by definition, on disk
        // and after a restart alike: promotion moves it between indexes
        // and writes nothing.
        let mut core = self.lock();
        let due = core.tasks.due(now, limit);
        let mut ready = BTreeSet::new();
        for id in &due {
            if let Some(command) = core.tasks.promote(*id, now) {
                ready.insert(command);
            }
        }
        self.announce_woken(&mut core.tasks);
        drop(core);
        for command in &ready {
            self.signals.ready(command);
        }
        Ok(due.len())
    }

    async fn lease_ends(&self, now: Timestamp, limit: usize) -> StoreResult<Vec<LeaseEnd>> {
        let core = self.lock();
        Ok(core
            .tasks
            .expired(now, limit)
            .into_iter()
            .filter_map(|id| {
                core.tasks.get(id).map(|entry| LeaseEnd {
                    task_id: id,
                    attempts: entry.attempts(),
                    attempt_in_round: entry.attempt_in_round(),
                })
            })
            .collect())
    }

    async fn expire(&self, expiries: Vec<Expiry>, now: Timestamp) -> StoreResult<Vec<Expired>> {
        let done = self
            .transact(now, |live, plan| {
                let mut expired = Vec::new();
                for expiry in expiries {
                    let id = expiry.lease.task_id;
                    let Some((state, max_attempts)) = plan.state(live, id) else { continue };
                    if state.attempts != expiry.lease.attempts {
                        continue;
                    }
                    let Some(retry) =
                        lifecycle::expire(id, &state, max_attempts, expiry.delay_seconds, now)
                    else {
                        continue;
                    };
                    let result = retry.dead_letter.as_ref();
                    plan_move(live, plan, id, &state, retry.state, result, now)?;
                    let command = live.get(id).map(|entry| live.command_of(entry).clone());
                    if let Some(command) = command {
                        expired.push(Expired { task_id: id, command, outcome: retry.outcome });
                    }
                }
                Ok(expired)
            })
            .await?;
        Ok(done.value)
    }

    async fn callbacks_due(&self, now: Timestamp, limit: usize) -> StoreResult<Vec<DueCallback>> {
        let due = self.lock().tasks.owed_due(now, limit);
        let newest = due.iter().map(|(_, owed)| owed.seq).max().unwrap_or(0);
        self.durable(newest).await?;
        Ok(due
            .into_iter()
            .map(|(task_id, owed)| DueCallback {
                task_id,
                delivery: owed.callback.delivery,
                attempts: owed.callback.attempts,
            })
            .collect())
    }

    async fn callback_done(
        &self,
        task_id: TaskId,
        delivery: uuid::Uuid,
        settled: Option<SettledCallback>,
    ) -> StoreResult<()> {
        self.transact(Timestamp::now(), |live, plan| {
            if live.owed(task_id).is_some_and(|owed| owed.callback.delivery == delivery) {
                match settled {
                    Some(settled) => plan.settle(task_id, settled)?,
                    None => plan.forgive(task_id)?,
                }
            }
            Ok(())
        })
        .await
        .map(|_| ())
    }

    async fn callback_retry(
        &self,
        task_id: TaskId,
        delivery: uuid::Uuid,
        attempts: u32,
        next_at: Timestamp,
    ) -> StoreResult<()> {
        self.transact(Timestamp::now(), |live, plan| {
            if live.owed(task_id).is_some_and(|owed| owed.callback.delivery == delivery) {
                plan.owe(task_id, Callback { delivery, attempts, next_at })?;
            }
            Ok(())
        })
        .await
        .map(|_| ())
    }

    fn callbacks_pending(&self) -> (Option<Timestamp>, usize) {
        self.lock().tasks.owed_summary()
    }

    async fn callback_owed(&self, id: TaskId) -> StoreResult<Option<OwedCallback>> {
        self.read_callback(|tasks| {
            let owed = tasks.owed(id)?;
            let Callback { delivery, attempts, next_at } = owed.callback;
            Some((OwedCallback { delivery, attempts, next_at }, owed.seq))
        })
        .await
    }

    async fn callback_settled(&self, id: TaskId) -> StoreResult<Option<SettledCallback>> {
        self.read_callback(|tasks| tasks.settled(id).map(|kept| (kept.settled, kept.seq))).await
    }

    async fn cancel(
        &self,
        ids: Vec<TaskId>,
        reason: Option<String>,
        now: Timestamp,
    ) -> StoreResult<Vec<Result<TaskState, TransitionError>>> {
        let done = self
            .transact(now, |live, plan| {
                let mut outcomes = Vec::with_capacity(ids.len());
                for id in &ids {
                    let Some((state, _)) = plan.state(live, *id) else {
                        outcomes.push(Err(TransitionError::NotFound));
                        continue;
                    };
                    match lifecycle::cancel(*id, &state, reason.clone(), now) {
                        Ok(cancelled) => {
                            let after = cancelled.state.clone();
                            plan_move(
                                live,
                                plan,
                                *id,
                                &state,
                                after,
                                Some(&cancelled.record),
                                now,
                            )?;
                            outcomes.push(Ok(cancelled.state));
                        }
                        Err(refused) => outcomes.push(Err(refused)),
                    }
                }
                Ok(outcomes)
            })
            .await?;
        Ok(done.value)
    }

    async fn queue_settings(&self, command: &Command) -> StoreResult<QueueSettings> {
        let (settings, seq) = self.lock().tasks.settings(command);
        self.durable(seq).await?;
        Ok(settings)
    }

    async fn set_queue_settings(
        &self,
        command: &Command,
        settings: QueueSettings,
        now: Timestamp,
    ) -> StoreResult<QueueSettings> {
        self.change_settings(command, now, |_| settings).await
    }

    async fn set_paused(
        &self,
        command: &Command,
        paused: bool,
        now: Timestamp,
    ) -> StoreResult<QueueSettings> {
        self.change_settings(command, now, |before| QueueSettings { paused, ..before }).await
    }

    fn next_claimable_at(&self, filter: &CommandFilter, now: Timestamp) -> Option<Timestamp> {
        self.lock().tasks.next_claimable_at(filter, now)
    }

    async fn dead_letters(
        &self,
        command: &Command,
        filter: &DeadLetterFilter,
        cursor: Option<DeadLetterKey>,
        limit: usize,
    ) -> StoreResult<Vec<DeadLetterKey>> {
        let window = DeadWindow {
            before: filter.before,
            after: filter.after,
            cursor,
            text: filter.text.clone(),
        };
        let (page, seq) = {
            let core = self.lock();
            (core.tasks.dead_letters(command, &window, limit), core.appender.last_seq())
        };
        self.durable(seq).await?;
        Ok(page)
    }

    async fn replay(
        &self,
        command: &Command,
        items: Vec<(TaskId, Timestamp)>,
        now: Timestamp,
    ) -> StoreResult<Vec<TaskId>> {
        let done = self
            .transact(now, |live, plan| {
                let mut replayed = Vec::with_capacity(items.len());
                for (id, visible_at) in &items {
                    let Some(entry) = live.get(*id) else { continue };
                    if live.command_of(entry) != command {
                        continue;
                    }
                    let Some((state, _)) = plan.state(live, *id) else { continue };
                    if let Some(again) = lifecycle::replay(&state, *visible_at, now) {
                        plan.set_state(*id, again, None)?;
                        plan.clear_result(*id)?;
                        // The dead letter's callback, if still owed, is
                        // dropped (and how an earlier one ended forgotten):
                        // the task owes one again when it ends anew.
                        if live.has_callback_record(*id) {
                            plan.forgive(*id)?;
                        }
                        replayed.push(*id);
                    }
                }
                Ok(replayed)
            })
            .await?;
        Ok(done.value)
    }

    async fn purge(&self, command: &Command, ids: Vec<TaskId>) -> StoreResult<Vec<TaskId>> {
        let done = self
            .transact(Timestamp::now(), |live, plan| {
                let mut purged = Vec::with_capacity(ids.len());
                for id in &ids {
                    let Some(entry) = live.get(*id) else { continue };
                    if live.command_of(entry) != command || !entry.is_dead_letter() {
                        continue;
                    }
                    plan.delete(*id)?;
                    if live.has_callback_record(*id) {
                        plan.forgive(*id)?;
                    }
                    purged.push(*id);
                }
                Ok(purged)
            })
            .await?;
        Ok(done.value)
    }

    async fn list_tasks(
        &self,
        command: Option<&Command>,
        status: Option<TaskStatus>,
        before: Option<TaskId>,
        limit: usize,
    ) -> StoreResult<Vec<TaskId>> {
        let (page, seq) = {
            let core = self.lock();
            (core.tasks.list(command, status, before, limit), core.appender.last_seq())
        };
        self.durable(seq).await?;
        Ok(page)
    }

    async fn put_subscription(&self, subscription: Subscription) -> StoreResult<()> {
        self.transact(Timestamp::now(), |_, plan| plan.subscribe(subscription)).await.map(|_| ())
    }

    async fn get_subscription(&self, id: Uuid) -> StoreResult<Option<Subscription>> {
        let (found, seq) = {
            let core = self.lock();
            match core.tasks.subscription(id) {
                Some(subscribed) => (Some(subscribed.subscription.clone()), subscribed.seq),
                None => (None, core.tasks.deleted_seq()),
            }
        };
        self.durable(seq).await?;
        Ok(found)
    }

    async fn delete_subscription(&self, id: Uuid) -> StoreResult<bool> {
        let done = self
            .transact(Timestamp::now(), |live, plan| {
                let found = live.subscription(id).is_some();
                if found {
                    plan.unsubscribe(id)?;
                }
                Ok(found)
            })
            .await?;
        Ok(done.value)
    }

    async fn subscriptions(&self) -> StoreResult<Vec<Subscription>> {
        let (all, seq) = {
            let core = self.lock();
            let all: Vec<&Subscribed> = core.tasks.subscriptions().collect();
            let newest = all.iter().map(|subscribed| subscribed.seq).max().unwrap_or(0);
            let seq = newest.max(core.tasks.deleted_seq());
            (all.into_iter().map(|subscribed| subscribed.subscription.clone()).collect(), seq)
        };
        self.durable(seq).await?;
        Ok(all)
    }

    async fn remove_lapsed_subscriptions(&self, now: Timestamp) -> StoreResult<usize> {
        let done = self
            .transact(now, |live, plan| {
                let lapsed: Vec<Uuid> = live
                    .subscriptions()
                    .filter(|subscribed| subscribed.subscription.expires_at <= now)
                    .map(|subscribed| subscribed.subscription.id)
                    .collect();
                for id in &lapsed {
                    plan.unsubscribe(*id)?;
                }
                Ok(lapsed.len())
            })
            .await?;
        Ok(done.value)
    }

    async fn queue_stats(&self, command: &Command) -> StoreResult<QueueStats> {
        let (stats, seq) = {
            let core = self.lock();
            (core.tasks.stats(command), core.appender.last_seq())
        };
        self.durable(seq).await?;
        Ok(stats)
    }

    async fn all_queue_stats(&self) -> StoreResult<Vec<QueueStats>> {
        let (stats, seq) = {
            let core = self.lock();
            (core.tasks.all_stats(), core.appender.last_seq())
        };
        self.durable(seq).await?;
        Ok(stats)
    }

    async fn cleanup(&self, completed_before: Timestamp, limit: usize) -> StoreResult<Vec<TaskId>> {
        let done = self
            .transact(completed_before, |live, plan| {
                let ended = live.ended_before(completed_before, limit);
                for id in &ended {
                    plan.delete(*id)?;
                    if live.has_callback_record(*id) {
                        plan.forgive(*id)?;
                    }
                }
                Ok(ended)
            })
            .await?;
        Ok(done.value)
    }

    fn next_deadline(&self) -> Option<Timestamp> {
        self.lock().tasks.next_deadline()
    }

    fn health(&self) -> StoreResult<()> {
        match self.log.watermark().failure() {
            Some(failure) => Err(StoreError::Unavailable(failure.cause.to_string())),
            None => Ok(()),
        }
    }

    fn failed(&self) -> CancellationToken {
        self.log.watermark().failed()
    }

    fn engine_stats(&self) -> Option<crate::store::EngineStats> {
        Some(self.log.stats())
    }

    fn command_of(&self, id: TaskId) -> Option<Command> {
        let core = self.lock();
        core.tasks.get(id).map(|entry| core.tasks.command_of(entry).clone())
    }

    async fn close(&self) -> StoreResult<()> {
        self.stop.cancel();
        let _compacting = self.compacting.lock().await;
        let live = {
            let mut core = self.lock();
            core.appender.close();
            core.tasks.len() as u64
        };
        self.log.close(live).map_err(wait_error)
    }
}
