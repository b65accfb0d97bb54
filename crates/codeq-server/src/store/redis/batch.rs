//! Calls of one script that arrive while the previous ones are in flight,
//! sent together as one call when one of those returns.
//!
//! Redis runs scripts one at a time, and a script's fixed cost (its
//! library's functions, its arguments, its answer) is paid per call, not
//! per task: many producers creating one task each, or many workers
//! storing one result each, cost Redis much less as one call of many
//! items. The scripts that take several items (`create`, `claim`,
//! `complete`, `complete_claim`) treat each item on its own (claims in
//! turn, sharing each command's rate limit and `maxInFlight` places as
//! calls one after the other would), so a merged call answers each
//! caller exactly as its own call would have. At low load every call goes alone
//! and at once; under load the calls that queue up behind those in flight
//! go next, together. [`CALLS_IN_FLIGHT`] calls of a script may be in
//! flight at once, so that with `appendfsync always` a call does not wait
//! for the fsync of the one before it to be sent.
//!
//! The calls run on a task of their own, not on a caller's: a caller
//! that goes away (its client disconnected) does not take the others'
//! answers with it.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Weak};

use futures_util::FutureExt;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::store::{StoreError, StoreResult};

/// The weight merged into one call at most (see [`run`]'s `weight`); a
/// caller's own items may weigh more and then go alone.
const MERGED_WEIGHT: usize = 256;

/// Calls of one script in flight at once, at most. Two: with `appendfsync
/// always`, a second call waits in Redis for the next fsync instead of
/// behind the first one's answer (docs/performance.md, "Redis backend");
/// more made merged calls smaller and gained nothing.
const CALLS_IN_FLIGHT: usize = 2;

/// One caller's items and where its answers go.
struct Job<I, O> {
    items: Vec<I>,
    answer: oneshot::Sender<StoreResult<Vec<O>>>,
}

/// The callers' side: hands items to the batch task, waits for answers.
pub struct Batcher<I, O> {
    jobs: mpsc::UnboundedSender<Job<I, O>>,
}

/// The batch task's side, taken by [`run`].
pub struct Queue<I, O> {
    jobs: mpsc::UnboundedReceiver<Job<I, O>>,
}

/// A batcher and its queue.
pub fn channel<I, O>() -> (Batcher<I, O>, Queue<I, O>) {
    let (jobs, queue) = mpsc::unbounded_channel();
    (Batcher { jobs }, Queue { jobs: queue })
}

impl<I, O> Batcher<I, O> {
    /// Sends `items` with the next call and answers their outcomes, in
    /// order, one per item.
    pub async fn call(&self, items: Vec<I>) -> StoreResult<Vec<O>> {
        let (answer, answered) = oneshot::channel();
        self.jobs
            .send(Job { items, answer })
            .map_err(|_| StoreError::Unavailable("the store is closed".into()))?;
        answered.await.map_err(|_| {
            StoreError::Unavailable("the store closed before the call was answered".into())
        })?
    }
}

/// Runs the calls: whenever fewer than [`CALLS_IN_FLIGHT`] are in flight,
/// takes the jobs queued (up to [`MERGED_WEIGHT`], by `weight` of each
/// item), calls `script` with their items through `owner` (while it lives)
/// on a task of its own, and hands each job its share of the answers,
/// until `stop` or the owner goes. A job whose caller has gone is dropped unsent
/// (a claim for nobody would lease tasks to nobody). A panic in `script`
/// fails that call's callers, not the ones after.
pub async fn run<S, I, O, W, F, Fut>(
    mut queue: Queue<I, O>,
    owner: Weak<S>,
    stop: CancellationToken,
    weight: W,
    script: F,
) where
    W: Fn(&I) -> usize,
    F: Fn(Arc<S>, Vec<I>) -> Fut,
    Fut: Future<Output = StoreResult<Vec<O>>> + Send + 'static,
    O: Send + 'static,
{
    let weigh = |job: &Job<I, O>| job.items.iter().map(&weight).sum::<usize>();
    let slots = Arc::new(Semaphore::new(CALLS_IN_FLIGHT));
    let mut next: Option<Job<I, O>> = None;
    loop {
        let slot = tokio::select! {
            () = stop.cancelled() => return,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
        };
        let first = match next.take() {
            Some(job) => job,
            None => tokio::select! {
                () = stop.cancelled() => return,
                job = queue.jobs.recv() => match job {
                    Some(job) => job,
                    None => return,
                },
            },
        };
        let mut total = weigh(&first);
        let mut jobs = vec![first];
        while total < MERGED_WEIGHT {
            let Ok(job) = queue.jobs.try_recv() else { break };
            let job_weight = weigh(&job);
            if total + job_weight > MERGED_WEIGHT {
                next = Some(job);
                break;
            }
            total += job_weight;
            jobs.push(job);
        }
        jobs.retain(|job| !job.answer.is_closed());
        if jobs.is_empty() {
            continue;
        }
        let Some(store) = owner.upgrade() else { return };
        let mut sizes = Vec::with_capacity(jobs.len());
        let mut answers = Vec::with_capacity(jobs.len());
        let mut items = Vec::new();
        for job in jobs {
            sizes.push(job.items.len());
            answers.push(job.answer);
            items.extend(job.items);
        }
        let call = AssertUnwindSafe(script(store, items)).catch_unwind();
        tokio::spawn(async move {
            let outcome = call.await.unwrap_or_else(|_| {
                Err(StoreError::Unavailable("a storage call failed unexpectedly".into()))
            });
            share(outcome, sizes, answers);
            drop(slot);
        });
    }
}

/// Hands each caller its share of one call's outcomes (or its failure).
fn share<O>(
    outcome: StoreResult<Vec<O>>,
    sizes: Vec<usize>,
    answers: Vec<oneshot::Sender<StoreResult<Vec<O>>>>,
) {
    match outcome {
        Ok(outcomes) if outcomes.len() == sizes.iter().sum::<usize>() => {
            let mut outcomes = outcomes.into_iter();
            for (size, answer) in sizes.into_iter().zip(answers) {
                let _gone = answer.send(Ok(outcomes.by_ref().take(size).collect()));
            }
        }
        Ok(outcomes) => {
            let error = StoreError::Corrupt(format!(
                "a merged call answered {} outcomes for {} items",
                outcomes.len(),
                sizes.iter().sum::<usize>()
            ));
            for answer in answers {
                let _gone = answer.send(Err(error.clone()));
            }
        }
        Err(error) => {
            for answer in answers {
                let _gone = answer.send(Err(error.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// Counts calls; answers each item doubled.
    #[derive(Default)]
    struct Doubler {
        calls: AtomicUsize,
    }

    async fn double(store: Arc<Doubler>, items: Vec<u32>) -> StoreResult<Vec<u32>> {
        store.calls.fetch_add(1, Ordering::SeqCst);
        tokio::task::yield_now().await;
        Ok(items.into_iter().map(|item| item * 2).collect())
    }

    /// A batch task calling `script` for a fresh [`Doubler`].
    struct Running {
        store: Arc<Doubler>,
        batcher: Arc<Batcher<u32, u32>>,
        stop: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    fn running<W, F, Fut>(weight: W, script: F) -> Running
    where
        W: Fn(&u32) -> usize + Send + Sync + 'static,
        F: Fn(Arc<Doubler>, Vec<u32>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = StoreResult<Vec<u32>>> + Send + 'static,
    {
        let store = Arc::new(Doubler::default());
        let (batcher, queue) = channel();
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(queue, Arc::downgrade(&store), stop.clone(), weight, script));
        Running { store, batcher: Arc::new(batcher), stop, task }
    }

    impl Running {
        async fn stop(self) {
            self.stop.cancel();
            self.task.await.unwrap();
        }
    }

    #[tokio::test]
    async fn callers_waiting_together_share_one_call_and_get_their_own_answers() {
        // Queued before the task runs: all three go in its first call.
        let running = running(|_| 1, double);
        let batcher = &running.batcher;
        let (a, b, c) = tokio::join!(
            batcher.call(vec![1, 2]),
            batcher.call(vec![3]),
            batcher.call(vec![4, 5, 6]),
        );
        assert_eq!(a.unwrap(), vec![2, 4]);
        assert_eq!(b.unwrap(), vec![6]);
        assert_eq!(c.unwrap(), vec![8, 10, 12]);
        assert_eq!(running.store.calls.load(Ordering::SeqCst), 1);
        running.stop().await;
    }

    #[tokio::test]
    async fn a_second_call_goes_while_the_first_is_in_flight_and_a_third_waits() {
        let gate = Arc::new(tokio::sync::Notify::new());
        let held = {
            let gate = Arc::clone(&gate);
            move |store: Arc<Doubler>, items: Vec<u32>| {
                let gate = Arc::clone(&gate);
                async move {
                    store.calls.fetch_add(1, Ordering::SeqCst);
                    gate.notified().await;
                    Ok(items.into_iter().map(|item| item * 2).collect())
                }
            }
        };
        let running = running(|_| 1, held);
        let store = &running.store;
        let call = |item: u32| {
            let batcher = Arc::clone(&running.batcher);
            tokio::spawn(async move { batcher.call(vec![item]).await })
        };
        let started = |n: usize| {
            let store = Arc::clone(store);
            tokio::time::timeout(Duration::from_secs(5), async move {
                while store.calls.load(Ordering::SeqCst) < n {
                    tokio::task::yield_now().await;
                }
            })
        };
        let first = call(1);
        started(1).await.expect("the first call started");
        let second = call(2);
        started(2).await.expect("the second call started while the first was in flight");
        let third = call(3);
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(store.calls.load(Ordering::SeqCst), 2, "two calls in flight at most");
        gate.notify_waiters();
        started(3).await.expect("the third call started once one had returned");
        gate.notify_waiters();
        assert_eq!(first.await.unwrap().unwrap(), vec![2]);
        assert_eq!(second.await.unwrap().unwrap(), vec![4]);
        assert_eq!(third.await.unwrap().unwrap(), vec![6]);
        running.stop().await;
    }

    #[tokio::test]
    async fn a_failed_call_fails_every_caller_in_it() {
        let failing =
            |_: Arc<Doubler>, _: Vec<u32>| async { Err(StoreError::Unavailable("down".into())) };
        let running = running(|_| 1, failing);
        let (a, b) = tokio::join!(running.batcher.call(vec![1]), running.batcher.call(vec![2]));
        assert!(matches!(a, Err(StoreError::Unavailable(_))));
        assert!(matches!(b, Err(StoreError::Unavailable(_))));
        running.stop().await;
    }

    #[tokio::test]
    async fn a_caller_gets_an_error_once_the_store_is_gone() {
        let (batcher, queue) = channel::<u32, u32>();
        let store = Arc::new(Doubler::default());
        let owner = Arc::downgrade(&store);
        drop(store);
        let task = tokio::spawn(run(queue, owner, CancellationToken::new(), |_| 1, double));
        assert!(matches!(batcher.call(vec![1]).await, Err(StoreError::Unavailable(_))));
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_caller_that_went_away_is_not_sent() {
        let store = Arc::new(Doubler::default());
        let (batcher, queue) = channel();
        let stop = CancellationToken::new();
        // Polled once (its job is queued), then dropped.
        assert!(batcher.call(vec![7]).now_or_never().is_none());
        let task = tokio::spawn(run(queue, Arc::downgrade(&store), stop.clone(), |_| 1, double));
        assert_eq!(batcher.call(vec![1]).await.unwrap(), vec![2]);
        assert_eq!(store.calls.load(Ordering::SeqCst), 1, "only the live caller's call ran");
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn items_beyond_the_merged_weight_wait_for_the_next_call() {
        let running = running(|item: &u32| *item as usize, double);
        let batcher = &running.batcher;
        let heavy = u32::try_from(MERGED_WEIGHT).unwrap();
        let (a, b, c) =
            tokio::join!(batcher.call(vec![1]), batcher.call(vec![heavy]), batcher.call(vec![2]),);
        assert_eq!((a.unwrap(), b.unwrap(), c.unwrap()), (vec![2], vec![heavy * 2], vec![4]));
        assert_eq!(running.store.calls.load(Ordering::SeqCst), 3, "the heavy one went alone");
        running.stop().await;
    }

    #[tokio::test]
    async fn a_panicking_call_fails_its_callers_and_the_next_call_runs() {
        let panics_on_zero = |store: Arc<Doubler>, items: Vec<u32>| async move {
            assert!(items != [0], "boom");
            double(store, items).await
        };
        let running = running(|_| 1, panics_on_zero);
        assert!(matches!(running.batcher.call(vec![0]).await, Err(StoreError::Unavailable(_))));
        assert_eq!(running.batcher.call(vec![3]).await.unwrap(), vec![6]);
        running.stop().await;
    }
}
