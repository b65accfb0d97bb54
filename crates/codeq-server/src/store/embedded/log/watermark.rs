//! The durable watermark: the highest batch the committer has made
//! durable, and the callers waiting for it to pass their batch.
//!
//! Every answer of the embedded backend waits here first, for the newest
//! batch the answer depends on. When the committer fails, the watermark
//! stops for good: the callers of the failed round learn why (a full disk
//! or an I/O error), everyone after gets "unavailable".

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// Why the journal stopped taking writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The disk was full.
    pub disk_full: bool,
    /// What failed, for the log.
    pub cause: Arc<str>,
    /// The batches of the round that failed.
    pub first_seq: u64,
    /// The last batch of that round.
    pub last_seq: u64,
}

/// What a waiter learns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitError {
    /// Its own batch failed on a full disk.
    DiskFull(Arc<str>),
    /// The journal failed (its batch or an earlier one); the outcome of its
    /// batch is unknown.
    Failed(Arc<str>),
}

type Waiter = oneshot::Sender<Result<(), WaitError>>;

#[derive(Default)]
struct Waiters {
    by_seq: BTreeMap<u64, Vec<Waiter>>,
    failure: Option<Failure>,
}

/// See the module docs.
#[derive(Default)]
pub struct Watermark {
    durable: AtomicU64,
    waiters: Mutex<Waiters>,
    failed: CancellationToken,
}

impl Failure {
    fn answer(&self, seq: u64) -> WaitError {
        if self.disk_full && (self.first_seq..=self.last_seq).contains(&seq) {
            WaitError::DiskFull(self.cause.clone())
        } else {
            WaitError::Failed(self.cause.clone())
        }
    }
}

impl Watermark {
    /// A watermark standing at `durable`.
    pub fn new(durable: u64) -> Self {
        Self { durable: AtomicU64::new(durable), ..Self::default() }
    }

    fn lock(&self) -> MutexGuard<'_, Waiters> {
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The highest durable batch.
    pub fn durable(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// How many callers wait for a batch to become durable.
    pub fn waiting(&self) -> usize {
        self.lock().by_seq.values().map(Vec::len).sum()
    }

    /// The failure that stopped the journal, if any.
    pub fn failure(&self) -> Option<Failure> {
        self.lock().failure.clone()
    }

    /// Completes when the journal fails.
    pub fn failed(&self) -> CancellationToken {
        self.failed.clone()
    }

    /// Waits until batch `seq` is durable.
    pub async fn wait(&self, seq: u64) -> Result<(), WaitError> {
        if self.durable() >= seq {
            return Ok(());
        }
        let receiver = {
            let mut waiters = self.lock();
            if let Some(failure) = &waiters.failure {
                return Err(failure.answer(seq));
            }
            // Checked again under the lock: `advance` stores, then locks.
            if self.durable() >= seq {
                return Ok(());
            }
            let (sender, receiver) = oneshot::channel();
            waiters.by_seq.entry(seq).or_default().push(sender);
            receiver
        };
        receiver.await.unwrap_or_else(|_| Err(WaitError::Failed("the journal stopped".into())))
    }

    /// Moves the watermark to `seq` and wakes the waiters it covers.
    pub fn advance(&self, seq: u64) {
        self.durable.fetch_max(seq, Ordering::AcqRel);
        let ready = {
            let mut waiters = self.lock();
            let later = waiters.by_seq.split_off(&(seq + 1));
            std::mem::replace(&mut waiters.by_seq, later)
        };
        for sender in ready.into_values().flatten() {
            let _ = sender.send(Ok(()));
        }
    }

    /// Stops the watermark for good and answers every waiter.
    pub fn fail(&self, failure: Failure) {
        let waiting = {
            let mut waiters = self.lock();
            if waiters.failure.is_some() {
                return;
            }
            waiters.failure = Some(failure.clone());
            std::mem::take(&mut waiters.by_seq)
        };
        self.failed.cancel();
        for (seq, senders) in waiting {
            for sender in senders {
                let _ = sender.send(Err(failure.answer(seq)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_wake_once_their_batch_is_durable() {
        let watermark = Arc::new(Watermark::new(3));
        assert_eq!(watermark.wait(2).await, Ok(()));
        let waiting = tokio::spawn({
            let watermark = watermark.clone();
            async move { watermark.wait(5).await }
        });
        watermark.advance(4);
        assert!(!waiting.is_finished());
        watermark.advance(5);
        assert_eq!(waiting.await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn a_failure_answers_its_round_with_its_cause_and_the_rest_as_failed() {
        let watermark = Arc::new(Watermark::new(0));
        let spawn_wait = |seq| {
            let watermark = watermark.clone();
            tokio::spawn(async move { watermark.wait(seq).await })
        };
        let (in_round, after) = (spawn_wait(2), spawn_wait(9));
        tokio::task::yield_now().await;
        watermark.fail(Failure {
            disk_full: true,
            cause: "full".into(),
            first_seq: 1,
            last_seq: 3,
        });
        assert_eq!(in_round.await.unwrap(), Err(WaitError::DiskFull("full".into())));
        assert_eq!(after.await.unwrap(), Err(WaitError::Failed("full".into())));
        assert!(watermark.failed().is_cancelled());
        assert_eq!(watermark.wait(1).await, Err(WaitError::DiskFull("full".into())));
    }
}
