//! [`Worker`]: the claim → handle → report loop, for the CLI runner and for
//! Rust programs that embed a worker.
//!
//! Each of `concurrency` slots long-polls for one task, runs the handler on
//! it while heartbeating every `lease / 3`, and reports the handler's
//! [`Outcome`] (result, nack or abandon), always with the delivery's
//! `attempt` so that a report for a delivery that already ended is refused
//! by the server (fencing) instead of overwriting a newer one. A result
//! also asks for the slot's next task (`claimNext`, without waiting): one
//! call instead of two while work is ready; the slot long-polls only when
//! none was.
//!
//! Stopping is two-staged, as for the CLI's signals: [`StopHandle::stop`]
//! ends claiming and lets running handlers finish;
//! [`StopHandle::abandon`] also drops the running handlers and gives their
//! tasks back. A task cancelled while its handler runs is noticed at the
//! next heartbeat (the server answers `task_cancelled`): its handler
//! future is dropped at once, at whatever `.await` it is waiting on, and
//! nothing is reported. So is a handler whose delivery a heartbeat finds
//! taken over (`stale_attempt`, `not_owner`: the task was claimed again;
//! `not_in_progress`, `task_not_found`); its task is counted as not
//! reported. A heartbeat refused with `lease_expired` only means the lease
//! lapsed: the server still takes this delivery's result until someone
//! claims the task again, so the handler goes on and the heartbeats too,
//! until one finds it taken over. A handler must therefore tolerate being
//! dropped, as it must for [`StopHandle::abandon`].
//!
//! A report that is not accepted comes with its error
//! ([`TaskReport::report_error`]). A result or nack refused because this
//! worker may not report at all (401, or 403 `missing_scope` /
//! `not_worker`: every later report would be refused too) ends the worker
//! with that error, as a refused claim does: claiming stops, and the task
//! is given back where the token allows it. A refusal about one task
//! (`not_owner`, `lease_expired`, `stale_attempt`…) does not.
//!
//! A result that gets no answer, or a 5xx (a server restarting, Redis
//! away), is sent again with a pause that doubles from 0.5 s up to 30 s,
//! for as long as the task's lease lasts (the result is fenced by its
//! attempt, so a repeat cannot land twice): a restart of a few seconds
//! does not throw away a finished handler's work, which would otherwise
//! run again once its lease ended.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::client::Client;
use crate::error::Error;
use crate::spread::spread;
use crate::types::{ClaimRequest, NackStatus, ResultStatus, SubmitResult, Task};

/// The longest long poll the server honours.
pub const MAX_WAIT_SECONDS: u32 = 30;
/// The lease asked for when none is configured: the server's default
/// `defaultLeaseSeconds`. A server configured with a `maxLeaseSeconds`
/// below it refuses the claim (400 `invalid_field`): set
/// [`Worker::lease_seconds`] to fit.
pub const DEFAULT_LEASE_SECONDS: u32 = 300;
/// Pause after a failed claim before the next try; doubles up to
/// [`MAX_RETRY_PAUSE`].
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(500);
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(30);

/// What the handler decided about a task.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Outcome {
    /// Finished: submit a `COMPLETED` result with this object.
    Completed(serde_json::Value),
    /// Failed for good: submit a `FAILED` result with this error.
    Failed(String),
    /// Submit this result as it is, artifacts and all (its `attempt` is
    /// set to the delivery's).
    Submit(SubmitResult),
    /// Try again later: nack with this reason (and the server's backoff).
    Retry(String),
    /// Give the task back untouched (attempts unchanged): it is ready again
    /// at once, with no backoff and no limit, so a handler that always
    /// abandons hands the task round in a tight loop. To try later, use
    /// [`Outcome::Retry`].
    Abandon,
}

/// How a task ended, as far as this worker knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reported {
    /// A `COMPLETED` result was accepted.
    Completed,
    /// A `FAILED` result was accepted.
    Failed,
    /// Nacked and requeued: it will be delivered again.
    Nacked,
    /// Nacked on its last delivery: dead-lettered.
    DeadLettered,
    /// Given back (by the handler, or by [`StopHandle::abandon`]).
    Abandoned,
    /// The report was refused or never arrived (lease lost, server down…).
    ReportFailed,
    /// Cancelled while the handler ran: the handler was dropped at its
    /// next heartbeat, or its report was refused with `task_cancelled`.
    Cancelled,
}

impl Reported {
    /// How logs name it: `completed`, `failed`, `nacked`, `dead-lettered`,
    /// `abandoned`, `not-reported` or `cancelled`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Nacked => "nacked",
            Self::DeadLettered => "dead-lettered",
            Self::Abandoned => "abandoned",
            Self::ReportFailed => "not-reported",
            Self::Cancelled => "cancelled",
        }
    }
}

/// One finished task, for logs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TaskReport {
    /// The task's id.
    pub id: String,
    /// Its command.
    pub command: String,
    /// The delivery it was.
    pub attempt: u32,
    /// How it ended.
    pub reported: Reported,
    /// The handler's reason or error, when it gave one.
    pub detail: Option<String>,
    /// Why the report was refused or never arrived: with
    /// [`Reported::ReportFailed`], or with [`Reported::Failed`] when a
    /// result the server refused as invalid was submitted as a failure.
    pub report_error: Option<String>,
    /// With [`Reported::Nacked`]: the delay before the task is delivered
    /// again (the server's backoff).
    pub again_in: Option<Duration>,
    /// Claim to report.
    pub duration: Duration,
}

/// Counts of how tasks ended, returned by [`Worker::run`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Summary {
    /// Completed results accepted.
    pub completed: u64,
    /// Failed results accepted.
    pub failed: u64,
    /// Nacks accepted that requeued the task.
    pub nacked: u64,
    /// Nacks accepted that dead-lettered the task.
    pub dead_lettered: u64,
    /// Tasks given back.
    pub abandoned: u64,
    /// Reports refused or lost.
    pub report_failed: u64,
    /// Tasks cancelled while their handler ran.
    pub cancelled: u64,
}

impl Summary {
    /// All tasks handled.
    pub fn total(&self) -> u64 {
        self.completed
            + self.failed
            + self.nacked
            + self.dead_lettered
            + self.abandoned
            + self.report_failed
            + self.cancelled
    }

    fn add(&mut self, reported: Reported) {
        match reported {
            Reported::Completed => self.completed += 1,
            Reported::Failed => self.failed += 1,
            Reported::Nacked => self.nacked += 1,
            Reported::DeadLettered => self.dead_lettered += 1,
            Reported::Abandoned => self.abandoned += 1,
            Reported::ReportFailed => self.report_failed += 1,
            Reported::Cancelled => self.cancelled += 1,
        }
    }

    fn merge(&mut self, other: Summary) {
        self.completed += other.completed;
        self.failed += other.failed;
        self.nacked += other.nacked;
        self.dead_lettered += other.dead_lettered;
        self.abandoned += other.abandoned;
        self.report_failed += other.report_failed;
        self.cancelled += other.cancelled;
    }
}

/// Stops a running [`Worker`]; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct StopHandle {
    claiming: CancellationToken,
    running: CancellationToken,
}

impl StopHandle {
    /// No new claims; running handlers finish and are reported. A claim
    /// just sent may still answer for half a second: a task it brings is
    /// given back at once (reported `Abandoned`); a claim parked in a long
    /// poll is dropped. Await [`Worker::run`] to the end: dropping
    /// its future leaves the running tasks leased until their leases end.
    pub fn stop(&self) {
        self.claiming.cancel();
    }

    /// No new claims, and running handlers are dropped; their tasks are
    /// abandoned (ready again at once).
    pub fn abandon(&self) {
        self.claiming.cancel();
        self.running.cancel();
    }
}

/// A claim that failed with an error a later claim may not repeat
/// (server down, 503), for logs: the worker waits `pause`, then tries again.
#[derive(Debug)]
pub struct ClaimRetry<'a> {
    /// Which of the `concurrency` slots failed (0-based). The slots fail
    /// and back off together when the server is down, so logging slot 0
    /// says it once per step.
    pub slot: usize,
    /// The error.
    pub error: &'a Error,
    /// The wait before the next claim: a step that doubles from 0.5 s up
    /// to 30 s, each pause drawn between half the step and all of it.
    pub pause: Duration,
}

/// A result that got no answer or a 5xx, for logs: the worker waits
/// `pause`, then sends it again (while the task's lease lasts).
#[derive(Debug)]
pub struct ResultRetry<'a> {
    /// The task whose result is repeated.
    pub task_id: &'a str,
    /// The error.
    pub error: &'a Error,
    /// The wait before the next try: a step that doubles from 0.5 s up to
    /// 30 s, each pause drawn between half the step and all of it.
    pub pause: Duration,
}

type OnTask = Arc<dyn Fn(&TaskReport) + Send + Sync>;
type OnClaimRetry = Arc<dyn Fn(&ClaimRetry<'_>) + Send + Sync>;
type OnResultRetry = Arc<dyn Fn(&ResultRetry<'_>) + Send + Sync>;

/// A pool of claim loops over one [`Client`] (which needs a worker token).
///
/// ```no_run
/// use codeq_client::{Client, worker::{Outcome, Worker}};
///
/// # async fn run() -> Result<(), codeq_client::Error> {
/// let client = Client::new("http://127.0.0.1:8080")?.with_worker_token("worker-token");
/// let worker = Worker::new(client, ["RENDER"]).concurrency(4).lease_seconds(60);
/// let stop = worker.stop_handle();
/// tokio::spawn(async move {
///     let _ = tokio::signal::ctrl_c().await;
///     stop.stop();
/// });
/// let summary = worker
///     .run(|task| async move {
///         match task.payload_as::<serde_json::Value>() {
///             Ok(payload) => Outcome::Completed(serde_json::json!({ "echo": payload })),
///             Err(err) => Outcome::Failed(format!("bad payload: {err}")),
///         }
///     })
///     .await?;
/// println!("{} tasks", summary.total());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
#[must_use]
pub struct Worker {
    client: Client,
    commands: Vec<String>,
    concurrency: usize,
    lease_seconds: u32,
    wait_seconds: u32,
    once: bool,
    stop: StopHandle,
    on_task: Option<OnTask>,
    on_claim_retry: Option<OnClaimRetry>,
    on_result_retry: Option<OnResultRetry>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("commands", &self.commands)
            .field("concurrency", &self.concurrency)
            .field("lease_seconds", &self.lease_seconds)
            .field("wait_seconds", &self.wait_seconds)
            .field("once", &self.once)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker for `commands` (empty: the token's) with one slot, the
    /// default lease and 30 s long polls.
    pub fn new<I, S>(client: Client, commands: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            client,
            commands: commands.into_iter().map(Into::into).collect(),
            concurrency: 1,
            lease_seconds: DEFAULT_LEASE_SECONDS,
            wait_seconds: MAX_WAIT_SECONDS,
            once: false,
            stop: StopHandle::default(),
            on_task: None,
            on_claim_retry: None,
            on_result_retry: None,
        }
    }

    /// Tasks handled at once (at least 1).
    pub fn concurrency(mut self, slots: usize) -> Self {
        self.concurrency = slots.max(1);
        self
    }

    /// Lease asked for at claim and renewed by each heartbeat (at least 1 s).
    pub fn lease_seconds(mut self, seconds: u32) -> Self {
        self.lease_seconds = seconds.max(1);
        self
    }

    /// Long-poll wait of each claim, 0..=30 s. With 0 a claim that finds
    /// nothing is followed by a pause of 0.25–0.5 s before the next.
    pub fn wait_seconds(mut self, seconds: u32) -> Self {
        self.wait_seconds = seconds.min(MAX_WAIT_SECONDS);
        self
    }

    /// Make one claim per slot ([`Worker::concurrency`], each one long
    /// poll), handle what they bring, and stop; a failed claim is then an
    /// error rather than retried.
    pub fn once(mut self, once: bool) -> Self {
        self.once = once;
        self
    }

    /// Called after each task is reported (for a log line).
    pub fn on_task(mut self, callback: impl Fn(&TaskReport) + Send + Sync + 'static) -> Self {
        self.on_task = Some(Arc::new(callback));
        self
    }

    /// Called before each pause after a failed claim that will be retried
    /// (for a log line: otherwise a worker whose server is down is silent).
    pub fn on_claim_retry(
        mut self,
        callback: impl Fn(&ClaimRetry<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.on_claim_retry = Some(Arc::new(callback));
        self
    }

    /// Called before each pause after a result that will be sent again
    /// (for a log line).
    pub fn on_result_retry(
        mut self,
        callback: impl Fn(&ResultRetry<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.on_result_retry = Some(Arc::new(callback));
        self
    }

    /// A handle that stops [`Worker::run`] from elsewhere.
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// The heartbeat period: a third of the lease, so two heartbeats can
    /// be lost before the lease ends.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.lease_seconds) * 1000 / 3)
            .max(Duration::from_millis(100))
    }

    /// Claims and handles tasks until stopped (or after one claim per
    /// slot with [`Worker::once`]). Fails on an error every further claim would
    /// repeat: a refused token (401/403), a missing token, a bad request.
    pub async fn run<H, F>(self, handler: H) -> Result<Summary, Error>
    where
        H: Fn(Task) -> F + Send + Sync + 'static,
        F: Future<Output = Outcome> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let mut loops = JoinSet::new();
        for slot in 0..self.concurrency {
            loops.spawn(self.clone().slot(slot, Arc::clone(&handler)));
        }
        let mut summary = Summary::default();
        let mut failure = None;
        while let Some(joined) = loops.join_next().await {
            match joined {
                Ok(Ok(part)) => summary.merge(part),
                Ok(Err(err)) => {
                    // One fatal error ends every slot's claiming; running
                    // handlers still finish.
                    self.stop.stop();
                    failure.get_or_insert(err);
                }
                Err(panic) => std::panic::resume_unwind(panic.into_panic()),
            }
        }
        failure.map_or(Ok(summary), Err)
    }

    /// One slot: claim, handle, report, until stopped.
    async fn slot<H, F>(self, slot: usize, handler: Arc<H>) -> Result<Summary, Error>
    where
        H: Fn(Task) -> F + Send + Sync + 'static,
        F: Future<Output = Outcome> + Send + 'static,
    {
        let mut summary = Summary::default();
        let mut pause = FIRST_RETRY_PAUSE;
        let claim = self.claim_request();
        let mut next: Option<Task> = None;
        loop {
            let claimed = match next.take() {
                // Handed over with a result as stop came: give it back,
                // and say so as for any task.
                Some(task) if self.stop.claiming.is_cancelled() => {
                    let given_back = self.client.abandon(&task.id, task.attempts).await;
                    let report = TaskReport {
                        reported: if given_back.is_ok() {
                            Reported::Abandoned
                        } else {
                            Reported::ReportFailed
                        },
                        report_error: given_back.err().as_ref().map(with_causes),
                        detail: None,
                        again_in: None,
                        duration: Duration::ZERO,
                        id: task.id,
                        command: task.command,
                        attempt: task.attempts,
                    };
                    summary.add(report.reported);
                    if let Some(callback) = &self.on_task {
                        callback(&report);
                    }
                    return Ok(summary);
                }
                Some(task) => Ok(Some(task)),
                None if self.stop.claiming.is_cancelled() => return Ok(summary),
                None => {
                    let sent = Instant::now();
                    let claiming = self.client.claim(&claim);
                    let mut claiming = std::pin::pin!(claiming);
                    tokio::select! {
                        claimed = &mut claiming => claimed,
                        () = self.stop.claiming.cancelled() => {
                            // A claim in flight when stop comes may be
                            // bringing a task (one was ready): it is given
                            // back above, rather than left leased to nobody
                            // until its lease ends (and dead-lettered then,
                            // if that was its last delivery). A claim that
                            // has waited long already is parked in a long
                            // poll: it is dropped at once (the server hands
                            // nothing to a poll whose caller left), so that
                            // work arriving now goes to another worker, and
                            // a stop is quick.
                            if sent.elapsed() > PARKED_AFTER {
                                return Ok(summary);
                            }
                            match tokio::time::timeout(STOP_GRACE, &mut claiming).await {
                                Ok(Ok(Some(task))) => {
                                    next = Some(task);
                                    continue;
                                }
                                _ => return Ok(summary),
                            }
                        }
                    }
                }
            };
            match claimed {
                Ok(Some(task)) => {
                    pause = FIRST_RETRY_PAUSE;
                    let handled = self.handle(task, handler.as_ref()).await;
                    next = handled.next;
                    summary.add(handled.report.reported);
                    if let Some(callback) = &self.on_task {
                        callback(&handled.report);
                    }
                    if let Some(refused) = handled.refused_for_good {
                        // No other slot claims a task it could not report
                        // either; then, best effort, this one need not
                        // wait out its lease.
                        self.stop.stop();
                        let report = &handled.report;
                        let _ = self.client.abandon(&report.id, report.attempt).await;
                        return Err(refused);
                    }
                }
                // Without a long poll an empty answer would be asked
                // again at once, in a tight loop.
                Ok(None) if self.wait_seconds == 0 && !self.once => {
                    tokio::select! {
                        () = self.stop.claiming.cancelled() => return Ok(summary),
                        () = tokio::time::sleep(spread(FIRST_RETRY_PAUSE)) => {}
                    }
                }
                Ok(None) => {}
                // With `once` there is no later claim to retry in.
                Err(err) if is_fatal(&err) || self.once => return Err(err),
                Err(error) => {
                    let waiting = spread(pause);
                    if let Some(callback) = &self.on_claim_retry {
                        callback(&ClaimRetry { slot, error: &error, pause: waiting });
                    }
                    tokio::select! {
                        () = self.stop.claiming.cancelled() => return Ok(summary),
                        () = tokio::time::sleep(waiting) => {}
                    }
                    pause = (pause * 2).min(MAX_RETRY_PAUSE);
                }
            }
            if self.once {
                return Ok(summary);
            }
        }
    }

    fn claim_request(&self) -> ClaimRequest {
        ClaimRequest {
            commands: self.commands.clone(),
            lease_seconds: Some(self.lease_seconds),
            wait_seconds: Some(self.wait_seconds),
        }
    }

    /// Runs the handler under heartbeats and reports its outcome.
    async fn handle<H, F>(&self, task: Task, handler: &H) -> Handled
    where
        H: Fn(Task) -> F,
        F: Future<Output = Outcome> + Send + 'static,
    {
        let started = Instant::now();
        let (id, command, attempt) = (task.id.clone(), task.command.clone(), task.attempts);
        // The call itself may panic too (work done before its `async`
        // block, e.g. parsing the payload): that nacks the task as a panic
        // in the future does, rather than ending the worker.
        let work = match std::panic::catch_unwind(AssertUnwindSafe(|| handler(task))) {
            Ok(future) => HandlerRun(tokio::spawn(future)),
            Err(panic) => {
                let why = format!("the handler panicked: {}", panic_message(panic));
                HandlerRun(tokio::spawn(std::future::ready(Outcome::Retry(why))))
            }
        };
        let mut held_until = started + self.lease();
        let ran = tokio::select! {
            ran = self.with_heartbeats(&id, attempt, work, &mut held_until) => ran,
            () = self.stop.running.cancelled() => Ran::Finished(Outcome::Abandon),
        };
        let detail = match &ran {
            Ran::Finished(Outcome::Failed(text) | Outcome::Retry(text)) => Some(text.clone()),
            Ran::Finished(Outcome::Submit(body)) => body.error.clone(),
            Ran::Finished(Outcome::Completed(_) | Outcome::Abandon)
            | Ran::Cancelled
            | Ran::TakenOver(_) => None,
        };
        let sent = match ran {
            Ran::Finished(outcome) => self.report(&id, attempt, outcome, held_until).await,
            Ran::Cancelled => Sent::accepted(Reported::Cancelled, None),
            Ran::TakenOver(refusal) => Sent {
                context: Some("the task was taken over while the handler ran, so it was stopped"),
                ..Self::sent(Err(refusal), false)
            },
        };
        let report_error = sent.refusal.as_ref().map(|error| {
            let why = with_causes(error);
            match sent.context {
                Some(context) => format!("{context}: {why}"),
                None => why,
            }
        });
        let refused_for_good = sent.refusal.filter(|_| sent.ends_the_worker);
        let report = TaskReport {
            id,
            command,
            attempt,
            reported: sent.reported,
            detail,
            report_error,
            again_in: sent.again_in,
            duration: started.elapsed(),
        };
        Handled { report, next: sent.next, refused_for_good }
    }

    /// The lease each claim and heartbeat asks for.
    fn lease(&self) -> Duration {
        Duration::from_secs(u64::from(self.lease_seconds))
    }

    /// Awaits `work` while renewing the lease every [`Self::heartbeat_interval`],
    /// moving `held_until` with each renewal. A heartbeat in flight (a slow
    /// or unreachable server) never holds `work` up: both are polled. When
    /// a heartbeat finds the task cancelled or taken over (delivered
    /// again), `work` is dropped unfinished: another delivery may be
    /// running it already. A lapsed lease (`lease_expired`) keeps `work`
    /// and the heartbeats going (its result is still taken until the task
    /// is claimed again). Any other refusal (the token may not heartbeat)
    /// only stops the renewals.
    async fn with_heartbeats<F>(
        &self,
        id: &str,
        attempt: u32,
        work: F,
        held_until: &mut Instant,
    ) -> Ran
    where
        F: Future<Output = Outcome>,
    {
        let mut work = std::pin::pin!(work);
        let mut ticks = tokio::time::interval(self.heartbeat_interval());
        // A slow heartbeat call delays the next one rather than causing a
        // burst of catch-up calls.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await; // the first tick is immediate: the claim just set the lease
        let mut renewing = true;
        let mut in_flight = std::pin::pin!(None);
        loop {
            tokio::select! {
                outcome = &mut work => return Ran::Finished(outcome),
                _ = ticks.tick(), if renewing && in_flight.is_none() => {
                    let sent_at = Instant::now();
                    let beat = self.client.heartbeat(id, attempt, Some(self.lease_seconds));
                    in_flight.set(Some(async move { (sent_at, beat.await) }));
                }
                (sent_at, beat) = async {
                    match in_flight.as_mut().as_pin_mut() {
                        Some(beat) => beat.await,
                        None => std::future::pending().await,
                    }
                } => {
                    in_flight.set(None);
                    match beat {
                        Ok(_) => *held_until = sent_at + self.lease(),
                        Err(err) if err.code() == Some("task_cancelled") => return Ran::Cancelled,
                        Err(err) if taken_over(&err) => return Ran::TakenOver(err),
                        // A lapsed lease, a 5xx, no answer, or a token the
                        // server could not check yet may pass: keep trying.
                        Err(err) if err.code() == Some("lease_expired") => {}
                        Err(err) if !may_pass(&err) => renewing = false,
                        Err(_) => {}
                    }
                }
            }
        }
    }

    /// Sends the outcome (the client repeats it where that is safe; a
    /// result, until `held_until`); a result also claims the next task
    /// unless this is the last claim.
    async fn report(&self, id: &str, attempt: u32, outcome: Outcome, held_until: Instant) -> Sent {
        // A refused abandon (a stop, a token without `codeq:abandon`) is
        // not a reason to stop: the task comes back when its lease ends.
        let giving_back = matches!(outcome, Outcome::Abandon);
        let sent = match outcome {
            Outcome::Completed(result) => {
                let body = SubmitResult::completed(attempt, result);
                return self.send_result(id, body, held_until).await;
            }
            Outcome::Failed(error) => {
                let body = SubmitResult::failed(attempt, error);
                return self.send_result(id, body, held_until).await;
            }
            Outcome::Submit(body) => {
                let body = SubmitResult { attempt: Some(attempt), ..body };
                return self.send_result(id, body, held_until).await;
            }
            Outcome::Retry(reason) => return self.nack(id, attempt, &reason).await,
            Outcome::Abandon => {
                self.client.abandon(id, attempt).await.map(|()| (Reported::Abandoned, None))
            }
        };
        Self::sent(sent, giving_back)
    }

    /// Submits a result. One the server refuses as invalid (400, or 413
    /// too large) would be refused again at every delivery: the task
    /// fails instead, with the refusal (and the handler's own error) as
    /// its error, rather than being left to its lease and run again.
    async fn send_result(&self, id: &str, body: SubmitResult, held_until: Instant) -> Sent {
        let reported = match body.status {
            ResultStatus::Failed => Reported::Failed,
            _ => Reported::Completed,
        };
        let (sent, lease_ended) = self.submit(id, &body, reported, held_until).await;
        let context = lease_ended.then_some("the lease ended before it was accepted");
        match sent {
            Err(refused) if matches!(refused.status(), Some(400 | 413)) => {
                let mut error = format!("the result was refused: {}", with_causes(&refused));
                if let Some(own) = &body.error {
                    error.push_str(&format!("; the handler's error: {own}"));
                }
                let failed = SubmitResult::failed(body.attempt.unwrap_or_default(), error);
                match self.client.submit_result(id, &failed).await {
                    Ok(_) => {
                        Sent { refusal: Some(refused), ..Sent::accepted(Reported::Failed, None) }
                    }
                    Err(_) => Self::sent(Err(refused), false),
                }
            }
            sent => Sent { context, ..Self::sent(sent, false) },
        }
    }

    /// Nacks with `reason`, after the server's backoff.
    async fn nack(&self, id: &str, attempt: u32, reason: &str) -> Sent {
        match self.client.nack(id, attempt, None, Some(reason)).await {
            Ok(nacked) => match nacked.status {
                NackStatus::Requeued => Sent {
                    again_in: Some(Duration::from_secs(nacked.delay_seconds)),
                    ..Sent::accepted(Reported::Nacked, None)
                },
                NackStatus::Dlq => Sent::accepted(Reported::DeadLettered, None),
            },
            Err(err) => Self::sent(Err(err), false),
        }
    }

    /// What a report's answer comes to.
    fn sent(sent: Result<(Reported, Option<Task>), Error>, giving_back: bool) -> Sent {
        match sent {
            Ok((reported, next)) => Sent::accepted(reported, next),
            // Cancelled while the handler ran, and it finished before a
            // heartbeat told us.
            Err(err) if err.code() == Some("task_cancelled") => {
                Sent::accepted(Reported::Cancelled, None)
            }
            Err(err) => Sent {
                ends_the_worker: !giving_back && refuses_every_report(&err),
                refusal: Some(err),
                ..Sent::accepted(Reported::ReportFailed, None)
            },
        }
    }

    /// Submits a result, with a claim for the next task while claiming
    /// goes on; one that gets no answer or a 5xx is sent again (without
    /// the claim) until `held_until`, or until the running tasks are
    /// abandoned. Also answers whether it gave up because the lease ended.
    async fn submit(
        &self,
        id: &str,
        body: &SubmitResult,
        reported: Reported,
        held_until: Instant,
    ) -> (Result<(Reported, Option<Task>), Error>, bool) {
        let mut sent = if self.once || self.stop.claiming.is_cancelled() {
            self.client.submit_result(id, body).await.map(|_| None)
        } else {
            let claim = ClaimRequest { wait_seconds: Some(0), ..self.claim_request() };
            self.client.submit_result_and_claim(id, body, &claim).await.map(|(_, next)| next)
        };
        let mut pause = FIRST_RETRY_PAUSE;
        let mut lease_ended = false;
        while let Err(error) = &sent {
            if !may_pass(error) {
                break;
            }
            let left = held_until.saturating_duration_since(Instant::now());
            if left < LAST_TRY {
                lease_ended = true;
                break;
            }
            // Near the lease's end, the pause leaves half of what is left
            // for one more try.
            let waiting = spread(pause).min(left / 2);
            if let Some(callback) = &self.on_result_retry {
                callback(&ResultRetry { task_id: id, error, pause: waiting });
            }
            tokio::select! {
                () = self.stop.running.cancelled() => break,
                () = tokio::time::sleep(waiting) => {}
            }
            // Not past the lease either while the call itself waits.
            let lease_end = tokio::time::Instant::from_std(held_until);
            match tokio::time::timeout_at(lease_end, self.client.submit_result(id, body)).await {
                Ok(answer) => sent = answer.map(|_| None),
                Err(_) => {
                    lease_ended = true;
                    break;
                }
            }
            pause = (pause * 2).min(MAX_RETRY_PAUSE);
        }
        let lease_ended = lease_ended && sent.is_err();
        (sent.map(|next| (reported, next)), lease_ended)
    }
}

/// A handler running as a task of its own: a panic in it nacks its task
/// (with the panic's message) instead of ending the worker and every
/// other slot's task with it. Dropping it stops the handler, as dropping
/// its future would.
struct HandlerRun(tokio::task::JoinHandle<Outcome>);

impl Future for HandlerRun {
    type Output = Outcome;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Outcome> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|joined| {
            joined
                .unwrap_or_else(|stopped| Outcome::Retry(format!("the handler {}", ended(stopped))))
        })
    }
}

impl Drop for HandlerRun {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How a handler task ended without an outcome.
fn ended(stopped: tokio::task::JoinError) -> String {
    if !stopped.is_panic() {
        return "was stopped".to_owned();
    }
    format!("panicked: {}", panic_message(stopped.into_panic()))
}

/// The text a panic carried.
fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text value".to_owned())
}

/// What reporting an outcome came to.
struct Sent {
    reported: Reported,
    /// The next task, when a result brought one.
    next: Option<Task>,
    /// Why the report was refused or lost.
    refusal: Option<Error>,
    /// Every later report would be refused too.
    ends_the_worker: bool,
    /// What led to the refusal, when more than the refusal itself: a
    /// result given up unanswered because the lease ended, a handler
    /// stopped because its lease was lost.
    context: Option<&'static str>,
    /// A nacked task's delay before its next delivery.
    again_in: Option<Duration>,
}

impl Sent {
    fn accepted(reported: Reported, next: Option<Task>) -> Self {
        Self {
            reported,
            next,
            refusal: None,
            ends_the_worker: false,
            context: None,
            again_in: None,
        }
    }
}

/// How a handler run under heartbeats ended.
#[derive(Debug)]
enum Ran {
    /// The handler finished.
    Finished(Outcome),
    /// A heartbeat found the task cancelled: the handler was stopped.
    Cancelled,
    /// A heartbeat found the task taken over: the handler was stopped.
    TakenOver(Error),
}

/// One task handled and reported.
struct Handled {
    report: TaskReport,
    next: Option<Task>,
    /// A refusal every later report would meet too: it ends the worker,
    /// as a refused claim does.
    refused_for_good: Option<Error>,
}

/// Whether a refused result or nack says that this worker may not report
/// at all (rather than not this task): an unknown token, or one without
/// the scope or the kind to report. Not `not_owner`, which is about one
/// task whose lease lapsed and another worker holds.
fn refuses_every_report(err: &Error) -> bool {
    match err.status() {
        Some(401) => err.code() != Some(JWKS_UNAVAILABLE),
        Some(403) => matches!(err.code(), Some("missing_scope" | "not_worker")),
        _ => false,
    }
}

/// An error's text with its causes.
fn with_causes(err: &Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// Errors that every further claim would repeat. Not `jwks_unavailable`:
/// the server could not fetch its identity provider's keys this time,
/// which says nothing of the token.
fn is_fatal(err: &Error) -> bool {
    match err {
        Error::MissingToken(_) | Error::InvalidBaseUrl { .. } => true,
        // The request could not be built (a token with a newline): no
        // later claim builds it either.
        Error::Transport(transport) if transport.is_builder() => true,
        Error::Api { .. } if err.code() == Some(JWKS_UNAVAILABLE) => false,
        Error::Api { status, .. } => matches!(status, 400 | 401 | 403 | 404),
        Error::Transport(_) | Error::Decode { .. } => false,
    }
}

/// Whether a refused heartbeat says this delivery is over: the task was
/// claimed again (by this identity or another), ended otherwise, or is
/// gone. The worker must not go on as if it still held the task.
fn taken_over(err: &Error) -> bool {
    matches!(err.code(), Some("not_owner" | "stale_attempt" | "not_in_progress" | "task_not_found"))
}

/// Errors a later try may not get: no answer, a 5xx, a token the server
/// could not check for now.
fn may_pass(err: &Error) -> bool {
    match err {
        Error::Transport(transport) => !transport.is_builder(),
        Error::Api { status, .. } => *status >= 500 || err.code() == Some(JWKS_UNAVAILABLE),
        Error::MissingToken(_) | Error::InvalidBaseUrl { .. } | Error::Decode { .. } => false,
    }
}

/// How long a claim in flight when stop comes may still answer (with a
/// task to give back) before it is dropped.
const STOP_GRACE: Duration = Duration::from_millis(500);

/// A claim in flight longer than this when stop comes is taken as parked
/// in a long poll (one that finds a ready task answers in milliseconds).
const PARKED_AFTER: Duration = Duration::from_millis(200);

/// Less of the lease than this left, a result is not sent again.
const LAST_TRY: Duration = Duration::from_millis(100);

/// The 401 code of a token the server could not check for now.
const JWKS_UNAVAILABLE: &str = "jwks_unavailable";

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn worker() -> Worker {
        Worker::new(Client::new("http://127.0.0.1:9").unwrap(), ["A"])
    }

    #[tokio::test]
    async fn a_heartbeat_that_gets_no_answer_does_not_hold_the_handler_up() {
        // Accepts connections (the kernel does) and never answers them.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", silent.local_addr().unwrap());
        let client = Client::new(&url).unwrap().with_worker_token("w");
        let worker = Worker::new(client, ["A"]).lease_seconds(1);
        let work = async {
            // Three heartbeat periods: the first heartbeat starts and hangs.
            tokio::time::sleep(Duration::from_secs(1)).await;
            Outcome::Completed(serde_json::json!({}))
        };
        let mut held_until = Instant::now();
        let started = Instant::now();
        let outcome = tokio::time::timeout(
            Duration::from_secs(10),
            worker.with_heartbeats("t", 1, work, &mut held_until),
        )
        .await
        .expect("the handler waited for the heartbeat");
        assert!(matches!(outcome, Ran::Finished(Outcome::Completed(_))), "{outcome:?}");
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
        drop(silent);
    }

    #[test]
    fn only_a_refusal_of_the_worker_itself_ends_it() {
        let api = |status: u16, code: &str| Error::Api {
            status,
            code: code.to_owned(),
            message: String::new(),
        };
        for ends in [api(401, "invalid_token"), api(403, "missing_scope"), api(403, "not_worker")] {
            assert!(refuses_every_report(&ends), "{ends}");
        }
        for goes_on in [
            api(403, "not_owner"),
            api(409, "lease_expired"),
            api(409, "stale_attempt"),
            api(404, "task_not_found"),
            api(400, "invalid_field"),
            api(503, "storage_unavailable"),
        ] {
            assert!(!refuses_every_report(&goes_on), "{goes_on}");
        }
    }

    #[test]
    fn heartbeats_come_three_times_per_lease() {
        assert_eq!(worker().lease_seconds(30).heartbeat_interval(), Duration::from_secs(10));
        assert_eq!(worker().lease_seconds(1).heartbeat_interval(), Duration::from_millis(333));
    }

    #[test]
    fn the_long_poll_is_capped_at_the_servers_maximum() {
        assert_eq!(worker().wait_seconds(300).claim_request().wait_seconds, Some(30));
        assert_eq!(worker().lease_seconds(7).claim_request().lease_seconds, Some(7));
    }

    #[test]
    fn only_errors_every_claim_would_repeat_are_fatal() {
        assert!(is_fatal(&Error::from_response_body(401, b"")));
        assert!(is_fatal(&Error::from_response_body(403, b"")));
        assert!(!is_fatal(&Error::from_response_body(503, b"")));
        assert!(!is_fatal(&Error::from_response_body(500, b"")));
        let unchecked = br#"{"error":"cannot fetch the JWKS","code":"jwks_unavailable"}"#;
        assert!(!is_fatal(&Error::from_response_body(401, unchecked)));
        assert!(!refuses_every_report(&Error::from_response_body(401, unchecked)));
    }

    #[test]
    fn the_summary_counts_each_ending() {
        let mut summary = Summary::default();
        for reported in [Reported::Completed, Reported::Completed, Reported::Nacked] {
            summary.add(reported);
        }

        assert_eq!((summary.completed, summary.nacked, summary.total()), (2, 1, 3));
    }
}
