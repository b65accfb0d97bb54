//! The reaper: makes delayed tasks ready and expires leases on time, with
//! no claim traffic needed.
//!
//! It sleeps until the store's next deadline (a delayed task's visible
//! time or a lease's end), and is woken early when a transition creates an
//! earlier one. Backends that cannot tell their next deadline are polled
//! once a second.

use std::sync::Arc;
use std::time::Duration;

use codeq_core::{ResultStatus, Timestamp};
use tokio_util::sync::CancellationToken;

use super::Policy;
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::store::{Expiry, Retried, Signals, Store, StoreResult};

/// How long the reaper sleeps when the store knows no deadline.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// How long the reaper waits after a storage error before trying again.
const ERROR_BACKOFF: Duration = Duration::from_secs(1);

/// Runs the reaper until `shutdown` fires, counting expiries in `metrics`.
pub async fn run(
    store: Arc<dyn Store>,
    signals: Arc<Signals>,
    clock: Arc<dyn Clock>,
    policy: Policy,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
) {
    // Failing since the last pass that worked: a storage outage fails a
    // pass a second, logged once.
    let mut failing = false;
    loop {
        let pass = reap_once(store.as_ref(), clock.as_ref(), &policy, &metrics).await;
        if pass.is_ok() && std::mem::take(&mut failing) {
            tracing::info!("reaper passes work again");
        }
        let idle_until = match pass {
            Ok(true) => continue,
            Ok(false) => clock.now().plus_millis(IDLE_POLL.as_millis() as i64),
            Err(error) => {
                if std::mem::replace(&mut failing, true) {
                    tracing::debug!(%error, "reaper pass failed");
                } else {
                    tracing::warn!(%error, "reaper pass failed (again at debug until one works)");
                }
                // The full pause, whatever deadlines are due: a deadline
                // already past (the lease the pass could not expire) would
                // wake it at once, a pass after a pass.
                let retry_at = clock.now().plus_millis(ERROR_BACKOFF.as_millis() as i64);
                tokio::select! {
                    () = clock.sleep_until(retry_at) => continue,
                    () = shutdown.cancelled() => return,
                }
            }
        };
        let wake_at = store.next_deadline().map_or(idle_until, |deadline| deadline.min(idle_until));
        tokio::select! {
            () = clock.sleep_until(wake_at) => {}
            () = signals.deadline_changed_wait() => {}
            () = shutdown.cancelled() => {
                tracing::debug!("reaper stopped");
                return;
            }
        }
    }
}

/// One pass: promote due tasks, expire leases (with the backoff decided
/// here, per delivery). True when a limit was hit and more work is
/// waiting.
async fn reap_once(
    store: &dyn Store,
    clock: &dyn Clock,
    policy: &Policy,
    metrics: &Metrics,
) -> StoreResult<bool> {
    let limit = policy.requeue_inspect_limit;
    let now: Timestamp = clock.now();
    let promoted = store.promote_due(now, limit).await?;
    let ended = store.lease_ends(now, limit).await?;
    let ended_count = ended.len();
    let expiries = ended
        .into_iter()
        .map(|lease| Expiry {
            lease,
            delay_seconds: policy.backoff.delay_seconds(lease.attempt_in_round, &mut rand::rng()),
        })
        .collect();
    let expired = if ended_count == 0 { Vec::new() } else { store.expire(expiries, now).await? };
    for task in &expired {
        metrics.lease_expired(&task.command);
        match task.outcome {
            Retried::Requeued { delay_seconds } => {
                tracing::debug!(task_id = %task.task_id, command = %task.command, delay_seconds, "lease expired, task requeued");
            }
            Retried::DeadLettered => {
                metrics.task_terminal(&task.command, ResultStatus::Failed, task.task_id, now);
                tracing::debug!(task_id = %task.task_id, command = %task.command, "lease expired, task dead-lettered");
            }
        }
    }
    Ok(promoted >= limit || ended_count >= limit)
}
