//! `codeq bench --wakeup N`: how fast an idle long poll wakes up.
//!
//! One worker long-polls the empty queue (`waitSeconds` 30); after a short
//! idle gap, so that the claim is parked in the server, one task is
//! created. The latency is from the create request being sent until the
//! claim's answer arrives. Rounds run one after the other.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use codeq_client::{BatchResult, Client, CreateTask, SubmitResult};
use serde::Serialize;
use serde_json::json;

use super::stats::{Samples, Summary};
use super::{Ending, Settings, write_table};

/// Idle time before each create: lets the claim reach the server and park.
pub const IDLE_GAP: Duration = Duration::from_millis(50);

/// The worker's long poll; the server's maximum.
const WAIT_SECONDS: u32 = 30;

/// The outcome of a wake-up run; `Display` is the plain-text report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WakeupReport {
    /// The server.
    pub base_url: String,
    /// The queue used.
    pub command: String,
    /// Rounds asked for.
    pub rounds: u32,
    /// How the run ended.
    pub ending: Ending,
    /// Create sent → claim answered, for rounds whose claim got the new task.
    pub wakeup: Summary,
    /// Create calls.
    pub create: Summary,
    /// Rounds whose claim ended empty although a task had been created.
    pub missed: u64,
    /// Tasks already in the queue (earlier runs), claimed and completed.
    pub leftovers: u64,
}

/// Runs `rounds` wake-up measurements.
pub async fn run(settings: Settings, rounds: u32) -> anyhow::Result<WakeupReport> {
    let client = settings.client()?;
    client
        .healthz()
        .await
        .with_context(|| format!("server at {} is not answering", settings.base_url))?;
    let interrupted = Arc::new(AtomicBool::new(false));
    let on_signal = {
        let interrupted = Arc::clone(&interrupted);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                interrupted.store(true, Ordering::SeqCst);
            }
        })
    };

    let mut leftovers = empty_queue(&client, &settings).await?;
    let claim = settings.claim_request(WAIT_SECONDS);
    let payload = json!({ "data": "x".repeat(settings.payload_bytes.saturating_sub(11)) });
    let (mut wakeup, mut create, mut missed) = (Samples::default(), Samples::default(), 0);
    let mut ending = Ending::Complete;
    for _ in 0..rounds {
        if interrupted.load(Ordering::SeqCst) {
            ending = Ending::Interrupted;
            break;
        }
        let waiter = {
            let (client, claim) = (client.clone(), claim.clone());
            tokio::spawn(async move {
                let claimed = client.claim(&claim).await;
                (claimed, Instant::now())
            })
        };
        tokio::time::sleep(IDLE_GAP).await;

        let sent = Instant::now();
        let created =
            match client.create_task(&CreateTask::new(&settings.command, payload.clone())).await {
                Ok(created) => created,
                Err(err) => {
                    waiter.abort();
                    return Err(err).context("failed to create a task");
                }
            };
        create.record(sent.elapsed());
        let (claimed, arrived) = waiter.await.context("the waiting worker panicked")?;
        let Some(task) = claimed.context("failed to claim")? else {
            // The wake-up was lost: take our task out so the next round starts idle.
            missed += 1;
            empty_queue(&client, &settings).await?;
            continue;
        };
        let done = SubmitResult::completed(task.attempts, json!({ "ok": true }));
        client.submit_result(&task.id, &done).await.context("failed to submit a result")?;
        if task.id == created.task.id {
            wakeup.record(arrived.saturating_duration_since(sent));
        } else {
            // An earlier run's task was in the way; ours is still queued
            // behind any others: empty the queue so the next round starts idle.
            leftovers += empty_queue(&client, &settings).await?;
        }
    }
    on_signal.abort();

    Ok(WakeupReport {
        base_url: settings.base_url.clone(),
        command: settings.command.clone(),
        rounds,
        ending,
        wakeup: wakeup.summarize(),
        create: create.summarize(),
        missed,
        leftovers,
    })
}

/// Claims and completes whatever is ready in the bench queue; returns how
/// many tasks that was.
async fn empty_queue(client: &Client, settings: &Settings) -> anyhow::Result<u64> {
    let claim = settings.claim_request(0);
    let mut emptied = 0;
    loop {
        let tasks = client.claim_batch(&claim, 100).await.context("failed to claim leftovers")?;
        if tasks.is_empty() {
            return Ok(emptied);
        }
        let results: Vec<BatchResult> = tasks
            .iter()
            .map(|task| BatchResult {
                task_id: task.id.clone(),
                result: SubmitResult::completed(task.attempts, json!({ "ok": true })),
            })
            .collect();
        client.submit_results_batch(&results).await.context("failed to complete leftovers")?;
        emptied += tasks.len() as u64;
    }
}

impl fmt::Display for WakeupReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "codeq bench --wakeup: rounds={} idle-gap={}ms wait={}s command={} server={}",
            self.rounds,
            IDLE_GAP.as_millis(),
            WAIT_SECONDS,
            self.command,
            self.base_url
        )?;
        if self.ending == Ending::Interrupted {
            let rounds =
                crate::output::count(u64::try_from(self.create.count).unwrap_or(0), "round");
            writeln!(f, "INCOMPLETE: interrupted after {rounds}")?;
        }
        writeln!(f)?;
        write_table(f, &[("wakeup", &self.wakeup), ("create", &self.create)])?;
        writeln!(f)?;
        writeln!(f, "missed wake-ups {}; leftover tasks completed {}", self.missed, self.leftovers)
    }
}
