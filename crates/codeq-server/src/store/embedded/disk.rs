//! The durable half of the embedded backend: task and result records in
//! `fjall` (a pure-Rust LSM store), with group commit.
//!
//! Writes go into fjall at once (visible to reads, in the OS buffers, so a
//! process crash keeps them) and each writer then waits for
//! [`Disk::wait_durable`]: one syncer thread fsyncs the journal for every
//! write made since its last sync, so concurrent writers share one fsync.
//! A failed write or sync poisons the disk: the state on disk is what the
//! journal holds, and only a restart (which rebuilds from it) may go on.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;

use codeq_core::{ResultRecord, Task, TaskId};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use tokio::sync::watch;

use crate::config::Durability;
use crate::store::{StoreError, StoreResult};

/// Block cache for records read back (claims, gets): bounded so that a
/// large backlog does not grow the process.
const CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// Write buffer per keyspace before it is flushed to a table file; bounds
/// memory during recovery and under write bursts (docs/storage.md).
const MEMTABLE_BYTES: u64 = 16 * 1024 * 1024;

/// A change to write, built under the index lock and committed as one batch.
#[derive(Default)]
pub struct WriteSet {
    tasks: Vec<(TaskId, Vec<u8>)>,
    results: Vec<(TaskId, Vec<u8>)>,
    deletes: Vec<TaskId>,
}

impl WriteSet {
    /// Stores (or replaces) a task record.
    pub fn put_task(&mut self, task: &Task) -> StoreResult<()> {
        self.tasks.push((task.id, encode(task)?));
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

    fn is_empty(&self) -> bool {
        self.tasks.is_empty() && self.results.is_empty() && self.deletes.is_empty()
    }
}

fn encode<T: serde::Serialize>(value: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| StoreError::Corrupt(format!("cannot encode record: {e}")))
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt(format!("cannot decode record: {e}")))
}

/// Write sequence numbers: `written` counts committed batches, the syncer
/// publishes the highest one known durable.
struct SyncState {
    written: Mutex<u64>,
    more_written: Condvar,
    durable: watch::Sender<u64>,
}

/// The on-disk records and the group-commit syncer.
pub struct Disk {
    db: Database,
    tasks: Keyspace,
    results: Keyspace,
    durability: Durability,
    sync: Arc<SyncState>,
    poisoned: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    syncer: Mutex<Option<thread::JoinHandle<()>>>,
}

fn unavailable(context: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{context}: {error}"))
}

impl Disk {
    /// Opens (or creates) the store in `dir` and starts the syncer.
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
        let (durable, _) = watch::channel(0);
        let disk = Self {
            db,
            tasks,
            results,
            durability,
            sync: Arc::new(SyncState {
                written: Mutex::new(0),
                more_written: Condvar::new(),
                durable,
            }),
            poisoned: Arc::new(AtomicBool::new(false)),
            stop: Arc::new(AtomicBool::new(false)),
            syncer: Mutex::new(None),
        };
        if durability == Durability::Fsync {
            disk.start_syncer()?;
        }
        Ok(disk)
    }

    fn start_syncer(&self) -> StoreResult<()> {
        let db = self.db.clone();
        let sync = self.sync.clone();
        let poisoned = self.poisoned.clone();
        let stop = self.stop.clone();
        let handle = thread::Builder::new()
            .name("codeq-syncer".into())
            .spawn(move || run_syncer(&db, &sync, &poisoned, &stop))
            .map_err(|e| unavailable("cannot start the syncer thread", e))?;
        *self.syncer.lock().unwrap_or_else(PoisonError::into_inner) = Some(handle);
        Ok(())
    }

    /// Stops the syncer after its last round and waits for it, so that the
    /// database is released when the `Disk` is dropped.
    fn stop_syncer(&self) {
        self.stop.store(true, Ordering::Release);
        {
            let _written = self.sync.written.lock().unwrap_or_else(PoisonError::into_inner);
            self.sync.more_written.notify_one();
        }
        if let Some(handle) = self.syncer.lock().unwrap_or_else(PoisonError::into_inner).take() {
            let _ = handle.join();
        }
    }

    /// Refuses writes after a failure.
    pub fn check_writable(&self) -> StoreResult<()> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable(
                "storage stopped taking writes after a disk failure".into(),
            ));
        }
        Ok(())
    }

    /// Commits a change as one atomic batch (call under the index lock, so
    /// batches reach the journal in transition order). Returns the batch's
    /// sequence number for [`Disk::wait_durable`], or `None` when there
    /// was nothing to write.
    pub fn commit(&self, writes: WriteSet) -> StoreResult<Option<u64>> {
        if writes.is_empty() {
            return Ok(None);
        }
        self.check_writable()?;
        let mut written = self.sync.written.lock().unwrap_or_else(PoisonError::into_inner);
        let mut batch = self.db.batch();
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
        if let Err(error) = batch.commit() {
            self.poisoned.store(true, Ordering::Release);
            tracing::error!(%error, "storage write failed; refusing further writes until restart");
            return Err(unavailable("write failed", error));
        }
        *written += 1;
        self.sync.more_written.notify_one();
        Ok(Some(*written))
    }

    /// Waits until batch `seq` is durable under the configured durability.
    pub async fn wait_durable(&self, seq: u64) -> StoreResult<()> {
        if self.durability == Durability::Buffered {
            return Ok(());
        }
        let mut durable = self.sync.durable.subscribe();
        let reached =
            durable.wait_for(|done| *done >= seq || self.poisoned.load(Ordering::Acquire)).await;
        match reached {
            Ok(done) if *done >= seq => Ok(()),
            _ => Err(StoreError::Unavailable("storage could not make the change durable".into())),
        }
    }

    /// Reads a task record.
    pub fn task(&self, id: TaskId) -> StoreResult<Option<Task>> {
        let bytes = self.tasks.get(id.as_bytes()).map_err(|e| unavailable("read failed", e))?;
        bytes.map(|bytes| decode(&bytes)).transpose()
    }

    /// Reads a task record that the indexes say exists.
    pub fn existing_task(&self, id: TaskId) -> StoreResult<Task> {
        self.task(id)?
            .ok_or_else(|| StoreError::Corrupt(format!("task {id} is indexed but has no record")))
    }

    /// Reads a result record.
    pub fn result(&self, id: TaskId) -> StoreResult<Option<ResultRecord>> {
        let bytes = self.results.get(id.as_bytes()).map_err(|e| unavailable("read failed", e))?;
        bytes.map(|bytes| decode(&bytes)).transpose()
    }

    /// Every task record, in id order (for rebuilding the indexes).
    pub fn scan_tasks(&self) -> impl Iterator<Item = StoreResult<Task>> + '_ {
        self.tasks.iter().map(|guard| {
            let bytes = guard.value().map_err(|e| unavailable("scan failed", e))?;
            decode(&bytes)
        })
    }

    /// Fsyncs everything written so far and stops the syncer.
    pub fn close(&self) -> StoreResult<()> {
        self.stop_syncer();
        self.db.persist(PersistMode::SyncAll).map_err(|e| unavailable("final sync failed", e))
    }

    /// True when reads work (for readiness).
    pub fn ping(&self) -> StoreResult<()> {
        self.check_writable()?;
        self.tasks.first_key_value();
        Ok(())
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        self.stop_syncer();
    }
}

/// The syncer loop: wait for new writes, fsync once for all of them,
/// publish the highest durable sequence number.
fn run_syncer(db: &Database, sync: &SyncState, poisoned: &AtomicBool, stop: &AtomicBool) {
    let mut synced = 0;
    loop {
        let target = {
            let mut written = sync.written.lock().unwrap_or_else(PoisonError::into_inner);
            while *written == synced && !stop.load(Ordering::Acquire) {
                written = sync.more_written.wait(written).unwrap_or_else(PoisonError::into_inner);
            }
            *written
        };
        if stop.load(Ordering::Acquire) && target == synced {
            return;
        }
        if let Err(error) = db.persist(PersistMode::SyncData) {
            tracing::error!(%error, "fsync failed; refusing further writes until restart");
            poisoned.store(true, Ordering::Release);
            sync.durable.send_replace(synced);
            return;
        }
        synced = target;
        sync.durable.send_replace(synced);
    }
}
