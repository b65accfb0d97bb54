//! The durable half of the embedded backend: task and result records in
//! `fjall` (a pure-Rust LSM store), written by one committer thread with
//! group commit.
//!
//! A transition hands its writes to [`Disk::commit`] (under the index lock,
//! so batches keep transition order) and waits for [`Disk::wait_durable`]
//! outside it. The committer takes every batch queued since its last round,
//! writes them as one fjall batch (one `write`) and, with `durability:
//! fsync`, makes them durable with one `fdatasync` before acknowledging them
//! all. Request threads never wait on disk I/O: fjall holds its journal
//! lock during a sync, so only the committer touches the journal.
//!
//! Until the committer has written a batch, its records are served from an
//! in-memory overlay, so every read sees the latest transition.
//!
//! A failed write or sync poisons the disk: what the journal holds is the
//! truth, and only a restart (which rebuilds from it) may go on.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;

use codeq_core::{Command, ResultRecord, Task, TaskId};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use tokio::sync::oneshot;

use crate::config::Durability;
use crate::store::{StoreError, StoreResult};

/// Block cache for records read back (claims, gets): bounded so that a
/// large backlog does not grow the process.
const CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// Write buffer per keyspace before it is flushed to a table file; bounds
/// memory during recovery and under write bursts (docs/storage.md).
const MEMTABLE_BYTES: u64 = 16 * 1024 * 1024;

/// Most batches one commit round takes, so a flood of writers still gets
/// acknowledgements in bounded rounds.
const MAX_BATCHES_PER_ROUND: usize = 4096;

/// A change to write, built under the index lock and committed as one unit.
#[derive(Default)]
pub struct WriteSet {
    tasks: Vec<(TaskId, Vec<u8>)>,
    results: Vec<(TaskId, Vec<u8>)>,
    deletes: Vec<TaskId>,
    commands: Vec<String>,
}

impl WriteSet {
    /// Stores (or replaces) a task record.
    pub fn put_task(&mut self, task: &Task) -> StoreResult<()> {
        self.tasks.push((task.id, encode_task(task)?));
        Ok(())
    }

    /// Stores a result record.
    pub fn put_result(&mut self, record: &ResultRecord) -> StoreResult<()> {
        self.results.push((record.task_id, encode(record)?));
        Ok(())
    }

    /// Deletes a task and its result.
    pub fn delete(&mut self, id: TaskId) {
        self.deletes.push(id);
    }

    /// Remembers a command used for the first time (admin lists every
    /// command ever used, also once retention has deleted its tasks).
    pub fn put_command(&mut self, command: &Command) {
        self.commands.push(command.as_str().to_string());
    }

    fn is_empty(&self) -> bool {
        self.tasks.is_empty()
            && self.results.is_empty()
            && self.deletes.is_empty()
            && self.commands.is_empty()
    }
}

/// The first byte of a task record: its encoding. Version 1 is postcard
/// (compact binary, positional) of `codeq_core::Task`.
const TASK_RECORD_V1: u8 = 1;

/// Encodes a task record: written three times per task (create, claim,
/// result) and read back by most transitions, so compact and cheap.
fn encode_task(task: &Task) -> StoreResult<Vec<u8>> {
    postcard::to_extend(task, vec![TASK_RECORD_V1])
        .map_err(|e| StoreError::Corrupt(format!("cannot encode task: {e}")))
}

fn decode_task(bytes: &[u8]) -> StoreResult<Task> {
    match bytes.split_first() {
        Some((&TASK_RECORD_V1, record)) => postcard::from_bytes(record)
            .map_err(|e| StoreError::Corrupt(format!("cannot decode task: {e}"))),
        _ => Err(StoreError::Corrupt("task record of an unknown format".into())),
    }
}

/// Encodes a result record (JSON: written once, read rarely, and its
/// `result` is arbitrary JSON).
fn encode<T: serde::Serialize>(value: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| StoreError::Corrupt(format!("cannot encode record: {e}")))
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt(format!("cannot decode record: {e}")))
}

fn unavailable(context: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{context}: {error}"))
}

/// A record not yet written by the committer: the batch it belongs to and
/// its bytes (`None`: deleted).
type Unwritten = (u64, Option<Vec<u8>>);

/// Records of batches the committer has not written yet.
#[derive(Default)]
struct Overlay {
    tasks: HashMap<TaskId, Unwritten>,
    results: HashMap<TaskId, Unwritten>,
}

/// What the committer and the request side share.
struct Shared {
    overlay: Mutex<Overlay>,
    poisoned: AtomicBool,
}

/// A queued batch: its number, its writes, and who to tell once durable.
struct Queued {
    seq: u64,
    writes: WriteSet,
    durable: oneshot::Sender<()>,
}

/// The promise that a committed batch becomes durable.
pub struct Durable(oneshot::Receiver<()>);

impl Durable {
    /// Waits until the batch is durable under the configured durability.
    pub async fn wait(self) -> StoreResult<()> {
        self.0.await.map_err(|_| {
            StoreError::Unavailable("storage could not make the change durable".into())
        })
    }
}

/// The on-disk records and the committer.
pub struct Disk {
    tasks: Keyspace,
    results: Keyspace,
    commands: Keyspace,
    shared: Arc<Shared>,
    queue: Mutex<Option<mpsc::Sender<Queued>>>,
    next_batch: Mutex<u64>,
    committer: Mutex<Option<thread::JoinHandle<()>>>,
}

impl Disk {
    /// Opens (or creates) the store in `dir` and starts the committer.
    pub fn open(dir: &Path, durability: Durability) -> StoreResult<Self> {
        let db = Database::builder(dir)
            .cache_size(CACHE_BYTES)
            .open()
            .map_err(|e| unavailable(&format!("cannot open {}", dir.display()), e))?;
        let options = || KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES);
        let tasks =
            db.keyspace("tasks", options).map_err(|e| unavailable("cannot open tasks", e))?;
        let results =
            db.keyspace("results", options).map_err(|e| unavailable("cannot open results", e))?;
        let commands =
            db.keyspace("commands", options).map_err(|e| unavailable("cannot open commands", e))?;
        let shared = Arc::new(Shared {
            overlay: Mutex::new(Overlay::default()),
            poisoned: AtomicBool::new(false),
        });
        let (queue, batches) = mpsc::channel();
        let committer = Committer {
            db,
            tasks: tasks.clone(),
            results: results.clone(),
            commands: commands.clone(),
            durability,
            shared: shared.clone(),
        };
        let handle = thread::Builder::new()
            .name("codeq-committer".into())
            .spawn(move || committer.run(&batches))
            .map_err(|e| unavailable("cannot start the committer thread", e))?;
        Ok(Self {
            tasks,
            results,
            commands,
            shared,
            queue: Mutex::new(Some(queue)),
            next_batch: Mutex::new(0),
            committer: Mutex::new(Some(handle)),
        })
    }

    /// Refuses writes after a failure.
    pub fn check_writable(&self) -> StoreResult<()> {
        if self.shared.poisoned.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable(
                "storage stopped taking writes after a disk failure".into(),
            ));
        }
        Ok(())
    }

    /// Queues a change as one atomic batch (call under the index lock, so
    /// batches keep transition order); its records are readable at once.
    /// Returns the promise of its durability, or `None` when there was
    /// nothing to write.
    pub fn commit(&self, writes: WriteSet) -> StoreResult<Option<Durable>> {
        if writes.is_empty() {
            return Ok(None);
        }
        self.check_writable()?;
        let mut next = self.next_batch.lock().unwrap_or_else(PoisonError::into_inner);
        let batch = *next + 1;
        {
            let mut overlay = self.shared.overlay.lock().unwrap_or_else(PoisonError::into_inner);
            for (id, bytes) in &writes.tasks {
                overlay.tasks.insert(*id, (batch, Some(bytes.clone())));
            }
            for (id, bytes) in &writes.results {
                overlay.results.insert(*id, (batch, Some(bytes.clone())));
            }
            for id in &writes.deletes {
                overlay.tasks.insert(*id, (batch, None));
                overlay.results.insert(*id, (batch, None));
            }
        }
        let (durable, promise) = oneshot::channel();
        let queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let sent = queue.as_ref().map(|queue| queue.send(Queued { seq: batch, writes, durable }));
        if !matches!(sent, Some(Ok(()))) {
            self.shared.poisoned.store(true, Ordering::Release);
            return Err(StoreError::Unavailable("storage is closed".into()));
        }
        *next = batch;
        Ok(Some(Durable(promise)))
    }

    /// Reads a task record.
    pub fn task(&self, id: TaskId) -> StoreResult<Option<Task>> {
        if let Some(unwritten) = self.unwritten(id, |overlay| &overlay.tasks) {
            return unwritten.map(|bytes| decode_task(&bytes)).transpose();
        }
        let bytes = self.tasks.get(id.as_bytes()).map_err(|e| unavailable("read failed", e))?;
        bytes.map(|bytes| decode_task(&bytes)).transpose()
    }

    /// Reads a task record that the indexes say exists.
    pub fn existing_task(&self, id: TaskId) -> StoreResult<Task> {
        self.task(id)?
            .ok_or_else(|| StoreError::Corrupt(format!("task {id} is indexed but has no record")))
    }

    /// Reads a result record.
    pub fn result(&self, id: TaskId) -> StoreResult<Option<ResultRecord>> {
        if let Some(unwritten) = self.unwritten(id, |overlay| &overlay.results) {
            return unwritten.map(|bytes| decode(&bytes)).transpose();
        }
        let bytes = self.results.get(id.as_bytes()).map_err(|e| unavailable("read failed", e))?;
        bytes.map(|bytes| decode(&bytes)).transpose()
    }

    /// The record of `id` in the overlay, if a batch not yet written holds it.
    fn unwritten(
        &self,
        id: TaskId,
        table: impl Fn(&Overlay) -> &HashMap<TaskId, Unwritten>,
    ) -> Option<Option<Vec<u8>>> {
        let overlay = self.shared.overlay.lock().unwrap_or_else(PoisonError::into_inner);
        table(&overlay).get(&id).map(|(_, bytes)| bytes.clone())
    }

    /// Every task record, in id order (for rebuilding the indexes on open,
    /// before any write).
    pub fn scan_tasks(&self) -> impl Iterator<Item = StoreResult<Task>> + '_ {
        self.tasks.iter().map(|guard| {
            let bytes = guard.value().map_err(|e| unavailable("scan failed", e))?;
            decode_task(&bytes)
        })
    }

    /// Every command ever used (for rebuilding the indexes on open).
    pub fn scan_commands(&self) -> impl Iterator<Item = StoreResult<Command>> + '_ {
        self.commands.iter().map(|guard| {
            let name = guard.key().map_err(|e| unavailable("scan failed", e))?;
            let name = std::str::from_utf8(&name)
                .map_err(|_| StoreError::Corrupt("command name is not UTF-8".into()))?;
            Command::parse(name)
                .map_err(|e| StoreError::Corrupt(format!("stored command {name:?}: {e}")))
        })
    }

    /// Writes (and syncs) everything queued, then stops the committer.
    pub fn close(&self) -> StoreResult<()> {
        self.stop_committer();
        self.check_writable()
    }

    fn stop_committer(&self) {
        // Dropping the queue lets the committer finish what is queued and end.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(handle) = self.committer.lock().unwrap_or_else(PoisonError::into_inner).take() {
            let _ = handle.join();
        }
    }

    /// True when the store takes writes (for readiness).
    pub fn ping(&self) -> StoreResult<()> {
        self.check_writable()?;
        self.tasks.first_key_value();
        Ok(())
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        self.stop_committer();
    }
}

/// The committer thread's side.
struct Committer {
    db: Database,
    tasks: Keyspace,
    results: Keyspace,
    commands: Keyspace,
    durability: Durability,
    shared: Arc<Shared>,
}

impl Committer {
    /// Commit rounds until the queue is closed and drained. Each batch's
    /// writer is told exactly when its round is durable (no broadcast).
    fn run(&self, batches: &mpsc::Receiver<Queued>) {
        while let Ok(first) = batches.recv() {
            let mut round = vec![first];
            while round.len() < MAX_BATCHES_PER_ROUND {
                match batches.try_recv() {
                    Ok(batch) => round.push(batch),
                    Err(_) => break,
                }
            }
            let last = round.last().map_or(0, |queued| queued.seq);
            let mut promises = Vec::with_capacity(round.len());
            let written = self.write(round.into_iter().map(|queued| {
                promises.push(queued.durable);
                queued.writes
            }));
            if let Err(error) = written {
                // Dropping the promises tells every waiter its change failed.
                tracing::error!(%error, "storage write failed; refusing further writes until restart");
                self.shared.poisoned.store(true, Ordering::Release);
                return;
            }
            let mut overlay = self.shared.overlay.lock().unwrap_or_else(PoisonError::into_inner);
            overlay.tasks.retain(|_, (seq, _)| *seq > last);
            overlay.results.retain(|_, (seq, _)| *seq > last);
            drop(overlay);
            for promise in promises {
                let _ = promise.send(());
            }
        }
        if let Err(error) = self.db.persist(PersistMode::SyncAll) {
            tracing::error!(%error, "final storage sync failed");
            self.shared.poisoned.store(true, Ordering::Release);
        }
    }

    /// Writes one round as one fjall batch and syncs it when required.
    fn write(&self, round: impl Iterator<Item = WriteSet>) -> fjall::Result<()> {
        let mut batch = self.db.batch();
        for writes in round {
            for (id, bytes) in writes.tasks {
                batch.insert(&self.tasks, id.as_bytes().to_vec(), bytes);
            }
            for (id, bytes) in writes.results {
                batch.insert(&self.results, id.as_bytes().to_vec(), bytes);
            }
            for id in writes.deletes {
                batch.remove(&self.tasks, id.as_bytes().to_vec());
                batch.remove(&self.results, id.as_bytes().to_vec());
            }
            for command in writes.commands {
                batch.insert(&self.commands, command.into_bytes(), Vec::new());
            }
        }
        batch.commit()?;
        match self.durability {
            Durability::Fsync => self.db.persist(PersistMode::SyncData),
            Durability::Buffered => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use codeq_core::{Command, Priority, TaskStatus, Timestamp};

    use super::*;

    fn task() -> Task {
        Task {
            id: TaskId::generate(),
            command: Command::parse("encode").unwrap(),
            payload: r#"{"k":"v"}"#.into(),
            priority: Priority::clamped(3),
            webhook: Some("https://example.com/hook".into()),
            status: TaskStatus::InProgress,
            worker_id: Some("w1".into()),
            lease_until: Some(Timestamp(1_700_000_030_000)),
            attempts: 2,
            max_attempts: 5,
            error: None,
            last_reason: Some("LEASE_EXPIRED".into()),
            run_at: None,
            visible_at: Timestamp(1_700_000_000_000),
            idempotency_key: Some("k".into()),
            dead_lettered: false,
            created_at: Timestamp(1_700_000_000_000),
            updated_at: Timestamp(1_700_000_001_000),
            completed_at: None,
        }
    }

    #[test]
    fn task_records_round_trip_and_are_smaller_than_json() {
        let task = task();
        let bytes = encode_task(&task).unwrap();
        assert_eq!(bytes[0], TASK_RECORD_V1);
        assert_eq!(decode_task(&bytes).unwrap(), task);
        assert!(bytes.len() < serde_json::to_vec(&task).unwrap().len() / 2);
    }

    #[test]
    fn a_record_of_an_unknown_format_is_corrupt_not_misread() {
        let mut bytes = encode_task(&task()).unwrap();
        bytes[0] = b'{';
        assert!(matches!(decode_task(&bytes), Err(StoreError::Corrupt(_))));
        assert!(matches!(decode_task(&[]), Err(StoreError::Corrupt(_))));
    }
}
