//! Result callbacks: the dispatcher that sends what the outbox owes.
//!
//! A task with a `webhook` that becomes terminal owes one callback; the
//! transition that ends it writes the callback into the store's outbox in
//! the same batch, so a callback exists exactly when its task's end is
//! durable, and survives a restart. The dispatcher takes callbacks that
//! are due (only once durable), posts them from a bounded pool of its own
//! (a slow receiver holds one place of the pool and never an API call),
//! and then ends each (2xx, or attempts used up) or schedules its next
//! attempt with exponential backoff and jitter. Delivery is at least once:
//! a callback in flight when the server stops is sent again after the
//! restart. When several replicas share the store, each callback is taken
//! under a lease ([`Store::take_callbacks`]), so that two replicas never
//! send it at once; one taken by a replica that died is sent again once
//! the lease ends.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use codeq_core::{BackoffConfig, JsonText, ResultRecord, Task, TaskId};
use serde::Serialize;
use time::UtcOffset;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use super::outbound::{Outbound, Request, SendError};
use crate::clock::Clock;
use crate::http::views::Rfc3339;
use crate::metrics::{Metrics, WebhookKind};
use crate::store::{CallbackOutcome, DueCallback, SettledCallback, Signals, Store};

/// Callbacks posted at once.
const POOL: usize = 32;

/// How long the dispatcher sleeps when nothing is owed (new callbacks
/// wake it at once).
const IDLE: Duration = Duration::from_secs(5);

/// How soon the outbox is read again while callbacks that are due are all
/// being sent (by a slow receiver): the next one due behind them is
/// started at most this late.
const IN_FLIGHT_LOOK_AGAIN: Duration = Duration::from_millis(200);

/// The pause before the outbox is read again after a read failed (its
/// storage away): the callbacks owed before the failure are due all the
/// same, and nothing else would wake the dispatcher for them.
const READ_AGAIN: Duration = Duration::from_secs(1);

/// How the dispatcher retries.
#[derive(Debug, Clone, Copy)]
pub struct Retries {
    /// `resultWebhookMaxAttempts`.
    pub max_attempts: u32,
    /// Exponential backoff with jitter between attempts.
    pub backoff: BackoffConfig,
}

/// What the dispatcher needs. Cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    /// The store holding the outbox.
    pub store: Arc<dyn Store>,
    /// Wake-ups when a callback is owed.
    pub signals: Arc<Signals>,
    /// The webhook client.
    pub outbound: Arc<Outbound>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Retry policy.
    pub retries: Retries,
    /// The offset of the times in the body.
    pub offset: UtcOffset,
    /// Delivery outcomes are counted here.
    pub metrics: Arc<Metrics>,
    /// How long a callback taken for delivery is kept from the other
    /// replicas sharing the store (longer than one attempt can take).
    pub lease: Duration,
}

/// The callbacks being delivered. A read of the outbox may return a
/// callback whose delivery finishes while the read runs (the read saw it
/// still owed): those finished during a read are not started from it.
#[derive(Debug, Default)]
struct InFlight {
    delivering: HashSet<TaskId>,
    finished_during_read: HashSet<TaskId>,
    reading: bool,
}

impl InFlight {
    /// A read of the outbox begins; how many are in flight.
    fn begin_read(&mut self) -> usize {
        self.reading = true;
        self.finished_during_read.clear();
        self.delivering.len()
    }

    /// The read's callbacks have been started.
    fn end_read(&mut self) {
        self.reading = false;
        self.finished_during_read.clear();
    }

    /// True (and noted) when the callback of `id` may start now.
    fn start(&mut self, id: TaskId) -> bool {
        !self.finished_during_read.contains(&id) && self.delivering.insert(id)
    }

    /// The delivery of `id` ended.
    fn finish(&mut self, id: TaskId) {
        self.delivering.remove(&id);
        if self.reading {
            self.finished_during_read.insert(id);
        }
    }
}

fn lock(tracker: &Mutex<InFlight>) -> std::sync::MutexGuard<'_, InFlight> {
    tracker.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The body of a result callback.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResultBody<'a> {
    task_id: TaskId,
    event_type: &'a str,
    status: &'static str,
    result: Option<&'a JsonText>,
    error: Option<&'a str>,
    artifacts: &'a [codeq_core::Artifact],
    completed_at: Rfc3339,
}

impl Dispatcher {
    /// Sends callbacks until `shutdown` fires.
    pub async fn run(self, shutdown: CancellationToken) {
        let pool = Arc::new(Semaphore::new(POOL));
        let tracker: Arc<Mutex<InFlight>> = Arc::default();
        let finished = Arc::new(Notify::new());
        let mut read_failed = false;
        loop {
            let free = pool.available_permits();
            if free > 0 {
                let busy = lock(&tracker).begin_read();
                let now = self.clock.now();
                let lease_until = now.plus_millis(self.lease.as_millis() as i64);
                // A store that does not lease answers the ones in flight too.
                let limit = if self.store.leases_callbacks() { free } else { busy + free };
                let due = self.store.take_callbacks(now, limit, lease_until).await;
                match due {
                    Ok(due) => {
                        if read_failed {
                            tracing::info!("the webhook outbox is read again");
                        }
                        read_failed = false;
                        self.start(due, &pool, &tracker, &finished);
                    }
                    Err(error) if read_failed => {
                        tracing::debug!(%error, "cannot read the webhook outbox")
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot read the webhook outbox: reading it again every second");
                        read_failed = true;
                    }
                }
                lock(&tracker).end_read();
            }
            let now = self.clock.now();
            let idle = now.plus_millis(IDLE.as_millis() as i64);
            let next = if read_failed {
                now.plus_millis(READ_AGAIN.as_millis() as i64)
            } else {
                match self.store.callbacks_pending().0 {
                    // Due, yet not started by the read above: being sent.
                    // The ones due behind them are not in the summary.
                    Some(at) if at <= now => {
                        now.plus_millis(IN_FLIGHT_LOOK_AGAIN.as_millis() as i64)
                    }
                    Some(at) => at.min(idle),
                    None => idle,
                }
            };
            tokio::select! {
                () = self.clock.sleep_until(next), if pool.available_permits() > 0 => {}
                () = self.signals.callback_owed_wait() => {}
                () = finished.notified() => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// Starts a delivery for each due callback not in flight (nor just
    /// finished: see [`InFlight`]).
    fn start(
        &self,
        due: Vec<DueCallback>,
        pool: &Arc<Semaphore>,
        tracker: &Arc<Mutex<InFlight>>,
        finished: &Arc<Notify>,
    ) {
        for callback in due {
            let Ok(place) = pool.clone().try_acquire_owned() else { return };
            if !lock(tracker).start(callback.task_id) {
                continue;
            }
            let (dispatcher, tracker, finished) = (self.clone(), tracker.clone(), finished.clone());
            tokio::spawn(async move {
                dispatcher.deliver(callback).await;
                lock(&tracker).finish(callback.task_id);
                drop(place);
                finished.notify_one();
            });
        }
    }

    /// One attempt of one callback, and what follows from it.
    async fn deliver(&self, callback: DueCallback) {
        let id = callback.task_id;
        let (task, record) = match self.load(id).await {
            Ok(Some(loaded)) => loaded,
            Ok(None) => {
                // Nothing left to say (the task has no result or webhook).
                self.end(callback, None).await;
                return;
            }
            Err(error) => {
                tracing::warn!(%error, task_id = %id, "cannot read a task to call back");
                return;
            }
        };
        let Some(url) = task.webhook.as_deref() else {
            self.end(callback, None).await;
            return;
        };
        let body = ResultBody {
            task_id: id,
            event_type: task.command.as_str(),
            status: record.status.as_str(),
            result: record.result.as_ref(),
            error: record.error.as_deref(),
            artifacts: &record.artifacts,
            completed_at: Rfc3339::new(record.completed_at, self.offset),
        };
        let Ok(body) = serde_json::to_vec(&body) else { return };
        let delivery = callback.delivery.to_string();
        let timestamp = self.clock.now().unix_seconds();
        let request = Request { url, event: "task.result", delivery: &delivery, body, timestamp };
        let attempts = callback.attempts + 1;
        let sent = self.outbound.send(request).await;
        self.metrics.webhook_delivery(WebhookKind::TaskResult, &task.command, sent.is_ok());
        match sent {
            Ok(()) => {
                tracing::debug!(task_id = %id, attempts, "result callback delivered");
                self.end(callback, Some(settled(CallbackOutcome::Delivered, attempts))).await;
            }
            Err(SendError::Refused(why)) => {
                tracing::warn!(task_id = %id, %why, "result callback refused: not sent");
                // Attempts made: those before, none now.
                let made = callback.attempts;
                self.end(callback, Some(settled(CallbackOutcome::Refused, made))).await;
            }
            Err(SendError::Failed(why)) if attempts >= self.retries.max_attempts => {
                tracing::warn!(task_id = %id, attempts, %why, "result callback failed; giving up");
                self.end(callback, Some(settled(CallbackOutcome::GaveUp, attempts))).await;
            }
            Err(SendError::Failed(why)) => {
                let delay = self.retries.backoff.delay_seconds(attempts, &mut rand::rng());
                let next_at = self.clock.now().plus_seconds(delay);
                tracing::info!(task_id = %id, attempts, %why, delay, "result callback failed; will retry");
                if let Err(error) =
                    self.store.callback_retry(id, callback.delivery, attempts, next_at).await
                {
                    tracing::warn!(%error, task_id = %id, "cannot schedule a callback's retry");
                }
            }
        }
    }

    async fn load(&self, id: TaskId) -> crate::store::StoreResult<Option<(Task, ResultRecord)>> {
        let Some(task) = self.store.get_task(id).await? else { return Ok(None) };
        Ok(self.store.get_result(id).await?.map(|record| (task, record)))
    }

    /// Ends `callback`, keeping how when `settled` says.
    async fn end(&self, callback: DueCallback, settled: Option<SettledCallback>) {
        let (id, delivery) = (callback.task_id, callback.delivery);
        if let Err(error) = self.store.callback_done(id, delivery, settled).await {
            tracing::warn!(%error, task_id = %id, "cannot end a callback");
        }
    }
}

/// How a callback ended, after `attempts`.
fn settled(outcome: CallbackOutcome, attempts: u32) -> SettledCallback {
    SettledCallback { outcome, attempts }
}
