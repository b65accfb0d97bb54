//! Prometheus metrics: every family of the metrics reference
//! (docs/operations.md), declared here once with its help text, labels
//! and buckets.
//!
//! Three kinds of source:
//! - counters and histograms bumped as things happen: task transitions by
//!   the scheduler and the reaper ([`Metrics::task_created`] and the
//!   like), requests by the HTTP layer ([`Metrics::http_request`]);
//! - gauges read at scrape time ([`Metrics::render`]): queue depths from
//!   the store's in-memory counts (`Store::all_queue_stats`, no scan), long
//!   polls waiting;
//! - the storage engine's own counters (`Store::engine_stats`), encoded as
//!   they are read (commit rounds, frames per round, fsync latency, the
//!   durable watermark's lag).
//!
//! Nothing here takes a lock that a request waits on for long: a family
//! lookup is a shared read lock and a hash; labels borrow `&'static str`
//! or share the command's `Arc`, so counting allocates nothing once a
//! series exists.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};

use codeq_core::{Command, QueueStats, ResultStatus, Subscription, TaskId, Timestamp};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::clock::{Clock, SystemClock};
use crate::store::{EngineStats, HistogramSnapshot, Store, StoreResult};
use crate::throughput::{Event, Throughput, Totals};

/// Buckets of `codeq_task_processing_latency_seconds`: 1 ms … 1 h.
pub const LATENCY_BUCKETS: &[f64] =
    &[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0];

/// Buckets of `codeq_http_request_duration_seconds`: 1 ms … 60 s (a
/// long poll of the longest wait, 30 s, answers a little after it: 35 s
/// tells those from slower answers).
pub const HTTP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 35.0, 60.0,
];

/// The `route` label of a request that matched no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// A command as a label value (shares the command's text).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CommandLabel(pub Command);

impl EncodeLabelValue for CommandLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.0.as_str(), encoder)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CommandLabels {
    command: CommandLabel,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StatusLabels {
    command: CommandLabel,
    status: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct QueueLabels {
    command: CommandLabel,
    queue: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct WebhookLabels {
    kind: &'static str,
    command: CommandLabel,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HttpLabels {
    method: &'static str,
    route: &'static str,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: &'static str,
}

/// What a webhook delivery was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookKind {
    /// `queue.ready` notifications of subscriptions.
    QueueReady,
    /// `task.result` callbacks.
    TaskResult,
}

impl WebhookKind {
    fn label(self) -> &'static str {
        match self {
            Self::QueueReady => "queue_ready",
            Self::TaskResult => "task_result",
        }
    }
}

type HistogramFamily<S> = Family<S, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS.iter().copied())
}

fn http_histogram() -> Histogram {
    Histogram::new(HTTP_BUCKETS.iter().copied())
}

/// How long a scrape waits for the queue depths: well within a scraper's
/// timeout (Prometheus: 10 s), so that a hung store (Redis stopped but
/// connected) costs the depths, not the scrape.
const DEPTHS_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// What the depth gauges are read from, within [`DEPTHS_WAIT`].
async fn queues_and_subscriptions(
    store: &dyn Store,
) -> StoreResult<(Vec<QueueStats>, Vec<Subscription>)> {
    let read = async { Ok((store.all_queue_stats().await?, store.subscriptions().await?)) };
    tokio::time::timeout(DEPTHS_WAIT, read).await.unwrap_or_else(|_| {
        Err(crate::store::StoreError::Unavailable("storage did not answer in time".into()))
    })
}

/// Every metric of one server. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    created: Family<CommandLabels, Counter>,
    claimed: Family<CommandLabels, Counter>,
    completed: Family<StatusLabels, Counter>,
    latency: HistogramFamily<StatusLabels>,
    lease_expired: Family<CommandLabels, Counter>,
    webhook_deliveries: Family<WebhookLabels, Counter>,
    queue_depth: Family<QueueLabels, Gauge>,
    dlq_depth: Family<CommandLabels, Gauge>,
    subscriptions: Family<CommandLabels, Gauge>,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: HistogramFamily<RouteLabels>,
    admission_rejections: Counter,
    cancelled: Family<CommandLabels, Counter>,
    replayed: Family<CommandLabels, Counter>,
    purged: Family<CommandLabels, Counter>,
    rate_limited: Counter,
    long_polls_waiting: Gauge,
    storage_up: Gauge,
    outbox_pending: Gauge,
    outbox_overdue: Gauge<f64, AtomicU64>,
    engine: Arc<EngineCollector>,
    throughput: Throughput,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every family registered, no series yet; the last hour's counts on
    /// the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// Every family registered, no series yet; the last hour's counts on
    /// `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        let mut metrics = Self {
            registry: Registry::default(),
            created: Family::default(),
            claimed: Family::default(),
            completed: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            lease_expired: Family::default(),
            webhook_deliveries: Family::default(),
            queue_depth: Family::default(),
            dlq_depth: Family::default(),
            subscriptions: Family::default(),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(http_histogram),
            admission_rejections: Counter::default(),
            cancelled: Family::default(),
            replayed: Family::default(),
            purged: Family::default(),
            rate_limited: Counter::default(),
            long_polls_waiting: Gauge::default(),
            storage_up: Gauge::default(),
            outbox_pending: Gauge::default(),
            outbox_overdue: Gauge::default(),
            engine: Arc::new(EngineCollector::default()),
            throughput: Throughput::new(clock),
        };
        metrics.register();
        metrics
    }

    fn register(&mut self) {
        let r = &mut self.registry;
        // Counters get their `_total` suffix from the encoder.
        r.register("codeq_task_created", "Tasks created", self.created.clone());
        r.register("codeq_task_claimed", "Task deliveries (claims)", self.claimed.clone());
        r.register(
            "codeq_task_completed",
            "Tasks that became terminal, by status (dead letters count as FAILED)",
            self.completed.clone(),
        );
        r.register(
            "codeq_task_processing_latency_seconds",
            "Seconds from a task's creation to its terminal state",
            self.latency.clone(),
        );
        r.register("codeq_lease_expired", "Leases that ran out", self.lease_expired.clone());
        r.register(
            "codeq_webhook_deliveries",
            "Webhook deliveries, by kind and outcome",
            self.webhook_deliveries.clone(),
        );
        r.register("codeq_queue_depth", "Tasks per queue state", self.queue_depth.clone());
        r.register("codeq_dlq_depth", "Dead-lettered tasks kept", self.dlq_depth.clone());
        r.register(
            "codeq_subscriptions_active",
            "Worker subscriptions not expired",
            self.subscriptions.clone(),
        );
        r.register(
            "codeq_http_requests",
            "HTTP requests answered, by route template and status",
            self.http_requests.clone(),
        );
        r.register(
            "codeq_http_request_duration_seconds",
            "Seconds from a request's arrival to its response",
            self.http_duration.clone(),
        );
        r.register(
            "codeq_admission_rejections",
            "Requests answered 503 overloaded (maxInFlightCalls or maxBodyBytesInFlight full)",
            self.admission_rejections.clone(),
        );
        r.register("codeq_task_cancelled", "Tasks cancelled", self.cancelled.clone());
        r.register("codeq_dlq_replayed", "Dead letters sent round again", self.replayed.clone());
        r.register("codeq_dlq_purged", "Dead letters deleted by a purge", self.purged.clone());
        r.register(
            "codeq_claims_rate_limited",
            "Claims that found ready tasks held back by a rate limit",
            self.rate_limited.clone(),
        );
        r.register(
            "codeq_long_polls_waiting",
            "Claims parked in a long poll",
            self.long_polls_waiting.clone(),
        );
        r.register(
            "codeq_storage_up",
            "1 when this scrape read the queue depths from storage, 0 when storage did not answer",
            self.storage_up.clone(),
        );
        r.register(
            "codeq_webhook_outbox_pending",
            "Result callbacks owed (the webhook outbox), delivered or given up later",
            self.outbox_pending.clone(),
        );
        r.register(
            "codeq_webhook_outbox_overdue_seconds",
            "How long the earliest owed callback has been due (0 when none is late)",
            self.outbox_overdue.clone(),
        );
        r.register_collector(Box::new(self.engine.clone()));
        r.register_collector(Box::new(crate::process_metrics::ProcessCollector::default()));
    }

    /// A task was stored (not an idempotent replay).
    pub fn task_created(&self, command: &Command) {
        self.created.get_or_create(&command_labels(command)).inc();
    }

    /// The last hour of counts per command, a minute at a time.
    pub fn throughput(&self) -> &Throughput {
        &self.throughput
    }

    /// What each of `commands` counted since the server started (read
    /// from the counters above; a series not yet created counts zero).
    pub fn throughput_totals(&self, commands: &[Command]) -> Vec<(Command, Totals)> {
        let count = |family: &Family<CommandLabels, Counter>, command: &Command| {
            family.get(&command_labels(command)).map_or(0, |counter| counter.get())
        };
        let ended = |command: &Command, status: ResultStatus| {
            let labels =
                StatusLabels { command: CommandLabel(command.clone()), status: status.as_str() };
            self.completed.get(&labels).map_or(0, |counter| counter.get())
        };
        commands
            .iter()
            .map(|command| {
                let mut totals = Totals::default();
                totals[Event::Created.slot()] = count(&self.created, command);
                totals[Event::Claimed.slot()] = count(&self.claimed, command);
                totals[Event::Completed.slot()] = ended(command, ResultStatus::Completed);
                totals[Event::Failed.slot()] = ended(command, ResultStatus::Failed);
                totals[Event::Cancelled.slot()] = count(&self.cancelled, command);
                totals[Event::LeaseExpired.slot()] = count(&self.lease_expired, command);
                (command.clone(), totals)
            })
            .collect()
    }

    /// `count` deliveries of `command` were handed out.
    pub fn tasks_claimed(&self, command: &Command, count: u64) {
        self.claimed.get_or_create(&command_labels(command)).inc_by(count);
    }

    /// A task became terminal at `ended` with `status` (a result, or a dead
    /// letter as `FAILED`). Its creation time is the one its id carries
    /// (UUID v7, milliseconds): `createdAt` on the system clock.
    pub fn task_terminal(
        &self,
        command: &Command,
        status: ResultStatus,
        id: TaskId,
        ended: Timestamp,
    ) {
        let labels =
            StatusLabels { command: CommandLabel(command.clone()), status: status.as_str() };
        self.completed.get_or_create(&labels).inc();
        if let Some(created) = created_millis(id) {
            let seconds = (ended.millis() - created).max(0) as f64 / 1000.0;
            self.latency.get_or_create(&labels).observe(seconds);
        }
    }

    /// Tasks of `command` were cancelled.
    pub fn tasks_cancelled(&self, command: &Command, count: u64) {
        // None: a call that found nothing adds no series (a command
        // nobody uses would stay listed until a restart).
        if count > 0 {
            self.cancelled.get_or_create(&command_labels(command)).inc_by(count);
        }
    }

    /// Dead letters of `command` were replayed.
    pub fn dead_letters_replayed(&self, command: &Command, count: u64) {
        // None: a call that found nothing adds no series (a command
        // nobody uses would stay listed until a restart).
        if count > 0 {
            self.replayed.get_or_create(&command_labels(command)).inc_by(count);
        }
    }

    /// Dead letters of `command` were purged.
    pub fn dead_letters_purged(&self, command: &Command, count: u64) {
        // None: a call that found nothing adds no series (a command
        // nobody uses would stay listed until a restart).
        if count > 0 {
            self.purged.get_or_create(&command_labels(command)).inc_by(count);
        }
    }

    /// A claim found ready tasks held back by a rate limit.
    pub fn claim_rate_limited(&self) {
        self.rate_limited.inc();
    }

    /// A lease of `command` ran out.
    pub fn lease_expired(&self, command: &Command) {
        self.lease_expired.get_or_create(&command_labels(command)).inc();
    }

    /// A webhook delivery ended (success: any 2xx).
    pub fn webhook_delivery(&self, kind: WebhookKind, command: &Command, success: bool) {
        let outcome = if success { "success" } else { "failure" };
        let labels =
            WebhookLabels { kind: kind.label(), command: CommandLabel(command.clone()), outcome };
        self.webhook_deliveries.get_or_create(&labels).inc();
    }

    /// A request was answered. `route` is the matched route template (or
    /// [`UNMATCHED_ROUTE`]); `overloaded` when the answer was 503
    /// `overloaded`.
    pub fn http_request(
        &self,
        method: &'static str,
        route: &'static str,
        status: u16,
        seconds: f64,
        overloaded: bool,
    ) {
        self.http_requests.get_or_create(&HttpLabels { method, route, status }).inc();
        self.http_duration.get_or_create(&RouteLabels { method, route }).observe(seconds);
        if overloaded {
            self.admission_rejections.inc();
        }
    }

    /// The exposition of every metric, reading the gauges of `store` and
    /// `long_polls` now: OpenMetrics text when `openmetrics`, else the
    /// Prometheus text format (0.0.4).
    pub async fn render(
        &self,
        store: &dyn Store,
        long_polls: usize,
        now: Timestamp,
        openmetrics: bool,
    ) -> StoreResult<String> {
        // A store that does not answer (Redis away) leaves the depths out,
        // not the scrape: the process's own metrics matter most then.
        match queues_and_subscriptions(store).await {
            Ok((queues, subscriptions)) => {
                self.storage_up.set(1);
                self.set_queue_gauges(&queues, &subscriptions, now);
            }
            Err(error) => {
                tracing::debug!(%error, "metrics without queue depths: storage did not answer");
                self.storage_up.set(0);
                self.queue_depth.clear();
                self.dlq_depth.clear();
                self.subscriptions.clear();
            }
        }
        let (earliest_due, owed) = store.callbacks_pending();
        self.outbox_pending.set(gauge_value(owed as u64));
        let overdue_millis = earliest_due.map_or(0, |due| (now.millis() - due.millis()).max(0));
        self.outbox_overdue.set(overdue_millis as f64 / 1000.0);
        self.long_polls_waiting.set(i64::try_from(long_polls).unwrap_or(i64::MAX));
        self.engine.set(store.engine_stats());
        let mut text = String::with_capacity(16 * 1024);
        let encoded = if openmetrics {
            prometheus_client::encoding::text::encode(&mut text, &self.registry)
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
        };
        // Writing to a String fails only if an encoder has a bug.
        encoded
            .map_err(|_| crate::store::StoreError::Corrupt("cannot encode the metrics".into()))?;
        Ok(text)
    }

    /// Depth gauges of every command, and a zero for each counter series
    /// of a known command that nothing has bumped yet (so `rate()` and
    /// `increase()` see the first event, and every family shows its
    /// labels).
    fn set_queue_gauges(
        &self,
        queues: &[QueueStats],
        subscriptions: &[Subscription],
        now: Timestamp,
    ) {
        let listening = Listening::count(subscriptions, now);
        for stats in queues {
            let command = CommandLabel(stats.command.clone());
            let depth = |queue: &'static str, value: u64| {
                let labels = QueueLabels { command: command.clone(), queue };
                self.queue_depth.get_or_create(&labels).set(gauge_value(value));
            };
            depth("ready", stats.ready);
            depth("delayed", stats.delayed);
            depth("in_progress", stats.in_progress);
            depth("dlq", stats.dlq);
            let labels = CommandLabels { command: command.clone() };
            self.dlq_depth.get_or_create(&labels).set(gauge_value(stats.dlq));
            self.set_listening(&stats.command, &listening);
            self.touch_counters(&command);
        }
        // Only known commands get a series (maxCommands bounds them): a
        // subscription naming one with no task or settings yet is counted
        // once it has one, not under a name a worker made up.
    }

    /// `codeq_subscriptions_active` of `command`: the live subscriptions
    /// that listen to it.
    fn set_listening(&self, command: &Command, listening: &Listening<'_>) {
        let labels = CommandLabels { command: CommandLabel(command.clone()) };
        self.subscriptions.get_or_create(&labels).set(gauge_value(listening.to(command)));
    }

    fn touch_counters(&self, command: &CommandLabel) {
        let labels = CommandLabels { command: command.clone() };
        for family in [
            &self.created,
            &self.claimed,
            &self.lease_expired,
            &self.cancelled,
            &self.replayed,
            &self.purged,
        ] {
            drop(family.get_or_create(&labels));
        }
        for status in [ResultStatus::Completed, ResultStatus::Failed] {
            let labels = StatusLabels { command: command.clone(), status: status.as_str() };
            drop(self.completed.get_or_create(&labels));
        }
        for kind in [WebhookKind::QueueReady, WebhookKind::TaskResult] {
            for outcome in ["success", "failure"] {
                let labels =
                    WebhookLabels { kind: kind.label(), command: command.clone(), outcome };
                drop(self.webhook_deliveries.get_or_create(&labels));
            }
        }
    }
}

fn command_labels(command: &Command) -> CommandLabels {
    CommandLabels { command: CommandLabel(command.clone()) }
}

/// How many live subscriptions listen to each command, counted in one pass
/// over them (a scrape costs the names they list, not names × commands).
struct Listening<'a> {
    /// Subscriptions to every command.
    to_all: u64,
    /// Subscriptions naming each command.
    by_command: HashMap<&'a Command, u64>,
}

impl<'a> Listening<'a> {
    fn count(subscriptions: &'a [Subscription], now: Timestamp) -> Self {
        let mut listening = Self { to_all: 0, by_command: HashMap::new() };
        for subscription in subscriptions.iter().filter(|s| s.expires_at > now) {
            match &subscription.commands {
                None => listening.to_all += 1,
                // A command named twice in one subscription counts once.
                Some(commands) => {
                    let named: HashSet<&Command> = commands.iter().collect();
                    for command in named {
                        *listening.by_command.entry(command).or_default() += 1;
                    }
                }
            }
        }
        listening
    }

    fn to(&self, command: &Command) -> u64 {
        self.to_all + self.by_command.get(command).copied().unwrap_or(0)
    }
}

fn gauge_value(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The creation time a task id carries (UUID v7), in Unix milliseconds.
pub fn created_millis(id: TaskId) -> Option<i64> {
    let (seconds, nanos) = id.0.get_timestamp()?.to_unix();
    let millis = seconds.checked_mul(1000)?.checked_add(u64::from(nanos / 1_000_000))?;
    i64::try_from(millis).ok()
}

/// The storage engine's counters, as read at the start of the scrape.
#[derive(Debug, Default)]
struct EngineCollector {
    latest: Mutex<Option<EngineStats>>,
}

impl EngineCollector {
    fn set(&self, stats: Option<EngineStats>) {
        *self.latest.lock().unwrap_or_else(PoisonError::into_inner) = stats;
    }
}

impl Collector for EngineCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(stats) = self.latest.lock().unwrap_or_else(PoisonError::into_inner).clone() else {
            return Ok(());
        };
        let counters = [
            ("codeq_storage_commit_rounds", "Group-commit rounds written", stats.commit_rounds),
            (
                "codeq_storage_commit_frames",
                "Journal frames (transitions) committed",
                stats.commit_frames,
            ),
            ("codeq_storage_commit_bytes", "Bytes committed to the journal", stats.commit_bytes),
        ];
        for (name, help, value) in counters {
            encode_const(&mut encoder, name, help, ConstCounter::new(value))?;
        }
        let histograms = [
            (
                "codeq_storage_commit_round_frames",
                "Frames per commit round (transitions per fsync)",
                &stats.frames_per_round,
            ),
            (
                "codeq_storage_fsync_duration_seconds",
                "Seconds one fdatasync of the journal took",
                &stats.fsync_seconds,
            ),
        ];
        for (name, help, snapshot) in histograms {
            encode_histogram(&mut encoder, name, help, snapshot)?;
        }
        let lag = ConstGauge::new(gauge_value(stats.watermark_lag()));
        let help = "Journal batches queued and not yet durable (queued minus durable sequence)";
        encode_const(&mut encoder, "codeq_storage_watermark_lag", help, lag)
    }
}

/// Encodes a metric read at the scrape (a collector's) as family `name`.
pub(crate) fn encode_const(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn encode_histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    snapshot: &HistogramSnapshot,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    let buckets = snapshot.buckets();
    metric.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
        snapshot.sum,
        snapshot.count(),
        &buckets,
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_id_carries_its_creation_time_to_the_millisecond() {
        let before = Timestamp::now().millis();
        let id = TaskId::generate();
        let after = Timestamp::now().millis();
        let created = created_millis(id).unwrap();
        assert!((before..=after).contains(&created), "{before} <= {created} <= {after}");
    }

    #[test]
    fn latency_is_measured_from_the_id_and_lands_in_its_bucket() {
        let metrics = Metrics::new();
        let command = Command::parse("LAT").unwrap();
        let id = TaskId::generate();
        let ended = Timestamp(created_millis(id).unwrap() + 7_000);
        metrics.task_terminal(&command, ResultStatus::Completed, id, ended);
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &metrics.registry).unwrap();
        let series = r#"{command="LAT",status="COMPLETED"}"#;
        assert!(text.contains(&format!("codeq_task_processing_latency_seconds_sum{series} 7.0\n")));
        assert!(text.contains(&format!("codeq_task_processing_latency_seconds_count{series} 1\n")));
        let le_5 = r#"_bucket{command="LAT",status="COMPLETED",le="5"} 0"#;
        let le_10 = r#"_bucket{command="LAT",status="COMPLETED",le="10"} 1"#;
        assert!(text.contains(le_5) && text.contains(le_10), "{text}");
    }
}
