//! Retention: terminal tasks are deleted, with their results, artifacts
//! and idempotency keys, `retentionSeconds` after they ended. Pending and
//! in-progress tasks are never deleted.

use std::sync::Arc;
use std::time::Duration;

use codeq_core::Timestamp;
use tokio_util::sync::CancellationToken;

use super::artifacts::Artifacts;
use crate::store::{Store, StoreResult};

/// Deletes terminal tasks whose retention deadline is at or before
/// `before`, at most `limit`; returns how many.
pub async fn cleanup(
    store: &dyn Store,
    artifacts: &Artifacts,
    retention_seconds: u64,
    before: Timestamp,
    limit: usize,
) -> StoreResult<usize> {
    let retention_millis =
        i64::try_from(retention_seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
    let completed_before = before.plus_millis(-retention_millis);
    let deleted = store.cleanup(completed_before, limit).await?;
    for id in &deleted {
        artifacts.remove_all(*id).await;
        tracing::debug!(task_id = %id, "task removed after its retention");
    }
    Ok(deleted.len())
}

/// Runs automatic cleanup at once and then every `interval`, until
/// `shutdown` fires. The pass at start is what applies retention on a
/// server restarted more often than `interval` (deploys, a crash loop).
pub async fn run(
    store: Arc<dyn Store>,
    artifacts: Arc<Artifacts>,
    retention_seconds: u64,
    interval: Duration,
    now: impl Fn() -> Timestamp + Send,
    shutdown: CancellationToken,
) {
    const BATCH: usize = 1000;
    loop {
        loop {
            if shutdown.is_cancelled() {
                return; // a long backlog must not hold up a stop
            }
            match cleanup(store.as_ref(), &artifacts, retention_seconds, now(), BATCH).await {
                Ok(deleted) if deleted == BATCH => continue,
                Ok(deleted) => {
                    tracing::info!(deleted, "retention cleanup done");
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, "retention cleanup failed");
                    break;
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
