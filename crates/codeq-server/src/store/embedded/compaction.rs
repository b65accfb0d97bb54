//! Compaction: reclaims journal space while the server runs.
//!
//! Once the journal is larger than `compact_above_bytes` and than twice
//! its live records, the oldest segment is compacted: its records that are
//! still live (the current body, state or result of a live task, a
//! callback owed, a subscription, a command's record or its settings) are written again at the end of the journal as
//! ordinary batches, then — once those are durable — the manifest moves
//! the journal's start past the segment (with a checkpoint of the changes
//! and live tasks at that moment) and the file is deleted.
//!
//! Always taking the oldest segment keeps the rules simple: a delete
//! never needs to be kept once every older segment is gone, so dead
//! records and deletes alike simply vanish. The journal stays within
//! about twice the live records plus a segment, whatever the traffic.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use codeq_core::{Command, TaskId, Timestamp};
use tokio_util::sync::CancellationToken;

use super::EmbeddedStore;
use super::log::frame::{self, FrameKind, Op, SEGMENT_HEADER_LEN};
use super::log::manifest::Checkpoint;
use super::log::{Location, Table};
use super::state::Tasks;
use crate::store::{StoreError, StoreResult};

/// How often the journal's size is looked at.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Live records rewritten per batch.
const MOVES_PER_BATCH: usize = 256;

/// Compacts whenever needed, until `stop` fires or the store is dropped.
pub async fn run(store: Weak<EmbeddedStore>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(CHECK_INTERVAL) => {}
        }
        let Some(store) = store.upgrade() else { return };
        while !stop.is_cancelled() && store.needs_compaction() {
            if let Err(error) = store.compact_oldest().await {
                tracing::warn!(%error, "journal compaction failed");
                break;
            }
        }
    }
}

/// A put read back from a segment being compacted.
struct Candidate<'a> {
    table: Table,
    key: &'a [u8],
    value: &'a [u8],
    at: Location,
}

/// The puts of a sealed segment, in order.
fn candidates(id: u32, bytes: &[u8]) -> StoreResult<Vec<Candidate<'_>>> {
    let damaged = |why: String| StoreError::Corrupt(format!("journal segment {id}: {why}"));
    let mut found = Vec::new();
    let mut at = SEGMENT_HEADER_LEN as usize;
    while at < bytes.len() {
        let parsed =
            frame::parse_frame(&bytes[at..]).map_err(|bad| damaged(format!("{bad:?} at {at}")))?;
        let FrameKind::Batch(body) = parsed.kind else {
            // The seal: the rest of the (preallocated) file is empty.
            break;
        };
        let body_start = (at + frame::FRAME_HEADER_LEN) as u64;
        for op in frame::ops(body).map_err(damaged)? {
            let Op::Put { table, key, value, at: value_at } = op else { continue };
            let Some(table) = Table::from_u8(table) else { continue };
            let offset = body_start + value_at as u64;
            found.push(Candidate { table, key, value, at: Location::new(id, offset, value.len()) });
        }
        at += parsed.len;
    }
    Ok(found)
}

/// True when the record at `candidate.at` is the one memory points at.
fn is_live(tasks: &Tasks, candidate: &Candidate<'_>) -> bool {
    if matches!(candidate.table, Table::Commands | Table::Settings) {
        let command =
            std::str::from_utf8(candidate.key).ok().and_then(|name| Command::parse(name).ok());
        let record = |command: &Command| match candidate.table {
            Table::Commands => tasks.command_record(command),
            _ => tasks.settings_record(command),
        };
        return command.is_some_and(|command| record(&command) == Some(candidate.at));
    }
    let Ok(key) = <[u8; 16]>::try_from(candidate.key) else { return false };
    if candidate.table == Table::Subscriptions {
        let id = uuid::Uuid::from_bytes(key);
        return tasks.subscription(id).is_some_and(|subscribed| subscribed.at == candidate.at);
    }
    let id = TaskId::from_bytes(key);
    if candidate.table == Table::Outbox {
        let owed = tasks.owed(id).map(|owed| owed.at);
        let settled = tasks.settled(id).map(|settled| settled.at);
        return owed.or(settled) == Some(candidate.at);
    }
    let Some(entry) = tasks.get(id) else { return false };
    match candidate.table {
        Table::Tasks => entry.body == candidate.at,
        Table::States => entry.state_at == candidate.at,
        Table::Results => entry.result() == Some(candidate.at),
        Table::Commands | Table::Outbox | Table::Subscriptions | Table::Settings => false,
    }
}

impl EmbeddedStore {
    /// True when the journal is over its size bound and has a sealed
    /// segment to compact.
    pub fn needs_compaction(&self) -> bool {
        let (journal, live) = self.sizes();
        let sealed = self.oldest_sealed().is_some();
        let bound = self.options.compact_above_bytes.max(live.saturating_mul(2));
        sealed && journal > bound.max(self.compaction_floor.load(Ordering::Relaxed))
    }

    /// The oldest segment, when it is sealed (the journal has moved on).
    fn oldest_sealed(&self) -> Option<u32> {
        self.lock().appender.oldest_sealed()
    }

    /// Compacts the oldest segment (see the module docs); false when there
    /// was none to compact.
    pub async fn compact_oldest(self: &Arc<Self>) -> StoreResult<bool> {
        let _compacting = self.compacting.lock().await;
        let Some(oldest) = self.oldest_sealed() else { return Ok(false) };
        let (before, _) = self.sizes();
        let queued = self.lock().appender.last_seq();
        self.durable(queued).await?;
        let store = self.clone();
        let bytes = tokio::task::spawn_blocking(move || store.log.read_segment(oldest))
            .await
            .map_err(|e| StoreError::Unavailable(format!("compaction task failed: {e}")))?
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let found = candidates(oldest, &bytes)?;
        for chunk in found.chunks(MOVES_PER_BATCH) {
            self.transact(Timestamp::now(), |tasks, plan| {
                for candidate in chunk.iter().filter(|candidate| is_live(tasks, candidate)) {
                    match candidate.table {
                        Table::Commands => {
                            let name = String::from_utf8_lossy(candidate.key);
                            if let Ok(command) = Command::parse(&name) {
                                plan.move_command(command)?;
                            }
                        }
                        Table::Settings => {
                            let name = String::from_utf8_lossy(candidate.key);
                            if let Ok(command) = Command::parse(&name) {
                                plan.move_settings(command, candidate.value)?;
                            }
                        }
                        table => {
                            let Ok(key) = <[u8; 16]>::try_from(candidate.key) else {
                                continue;
                            };
                            if table == Table::Subscriptions {
                                plan.move_subscription(
                                    uuid::Uuid::from_bytes(key),
                                    candidate.value,
                                )?;
                            } else {
                                plan.move_record(TaskId::from_bytes(key), table, candidate.value)?;
                            }
                        }
                    }
                }
                Ok(())
            })
            .await?;
        }
        let (seq, live) = {
            let core = self.lock();
            (core.appender.last_seq(), core.tasks.len() as u64)
        };
        self.durable(seq).await?;
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            store.log.drop_segments_before(oldest + 1, Checkpoint { seq, live })
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("compaction task failed: {e}")))?
        .map_err(|e| StoreError::Unavailable(format!("cannot drop a compacted segment: {e}")))?;
        self.lock().appender.forget_before(oldest + 1);
        // A segment that was mostly live gave little back: wait until the
        // journal has grown by another segment before trying again, rather
        // than rewriting live records over and over.
        let (after, _) = self.sizes();
        let segment = self.options.log.segment_bytes;
        let floor = if before.saturating_sub(after) < segment / 4 { after + segment } else { 0 };
        self.compaction_floor.store(floor, Ordering::Relaxed);
        tracing::debug!(
            segment = oldest,
            reclaimed = before.saturating_sub(after),
            "journal segment compacted"
        );
        Ok(true)
    }
}
