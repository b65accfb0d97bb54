//! Worker-availability subscriptions: their life cycle (create, renew,
//! delete, lapse) and the notifier that tells idle workers work is ready.
//!
//! Subscriptions live in the store, so they survive a restart until their
//! TTL. When a command's ready set goes from empty to non-empty, by any
//! path (a new task, a delayed task or a nack's delay coming due, an
//! abandon, an expired lease), the store signals it with the ready count;
//! the notifier picks the subscriptions to tell (`codeq_core::subscription`)
//! and posts `queue.ready` to each from a bounded pool of its own. A
//! subscription held back by its `minIntervalSeconds` is told once the
//! interval ends if the command still has ready tasks then; a paused
//! command's news waits for its resume: a command resumed, or given
//! looser limits, with ready tasks is told as if it had just become ready
//! ([`Control`](super::control::Control)); so is every command with ready
//! tasks when the server starts. Best effort:
//! a failed notification is not retried; the worker's next claim (or long
//! poll) finds the work anyway.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use codeq_core::subscription::{Held, HeldBack, Rotation};
use codeq_core::{Command, DeliveryMode, Subscription, Timestamp};
use serde::Serialize;
use time::UtcOffset;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::outbound::{Outbound, Request};
use crate::clock::Clock;
use crate::http::views::Rfc3339;
use crate::metrics::{Metrics, WebhookKind};
use crate::store::{Signals, Store, StoreError};

/// Notifications posted at once.
const POOL: usize = 32;

/// A command with ready work, to tell its subscribers (or, for work that
/// waited out an interval, only those held back from it).
struct News {
    command: Command,
    depth: u64,
    only: Option<Vec<Held>>,
}

/// Where a notified worker claims.
const CLAIM_URL: &str = "/v1/codeq/tasks/claim";

/// The most live subscriptions one worker (`sub`) may hold: each is read
/// at every notification and scrape, so their number is bounded.
pub const MAX_SUBSCRIPTIONS_PER_WORKER: usize = 100;

/// Why a renewal or deletion was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    /// No such subscription (or it lapsed).
    #[error("no such subscription")]
    NotFound,
    /// The worker holds as many live subscriptions as one may.
    #[error(
        "this worker holds {MAX_SUBSCRIPTIONS_PER_WORKER} live subscriptions, the most one may: \
         delete one or let it lapse"
    )]
    TooMany,
    /// Another worker created it.
    #[error("this subscription belongs to another worker")]
    NotOwner,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A subscription as requested, checked by the HTTP layer.
#[derive(Debug)]
pub struct NewSubscription {
    /// Where notifications go.
    pub callback_url: String,
    /// Its commands (`None`: every command).
    pub commands: Option<Vec<Command>>,
    /// How notifications are spread.
    pub mode: DeliveryMode,
    /// Its group (`group` mode).
    pub group_id: Option<String>,
    /// Its time to live.
    pub ttl_seconds: u64,
    /// Least time between two notifications (`None`: the default).
    pub min_interval_seconds: Option<u64>,
}

/// The subscriptions service. Cheap to clone.
#[derive(Clone)]
pub struct Subscriptions {
    /// Where subscriptions are kept.
    pub store: Arc<dyn Store>,
    /// Tells when a command became ready.
    pub signals: Arc<Signals>,
    /// The webhook client.
    pub outbound: Arc<Outbound>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// The offset of `sentAt`.
    pub offset: UtcOffset,
    /// `subscriptionMinIntervalSeconds`.
    pub default_min_interval_seconds: u64,
    /// What the notifier has done so far.
    pub progress: Arc<Progress>,
    /// Notification outcomes are counted here.
    pub metrics: Arc<Metrics>,
    /// Held from counting a worker's subscriptions until its new one is
    /// stored, so that creates sent at once cannot all pass the bound.
    pub creating: Arc<tokio::sync::Mutex<()>>,
}

/// What the notifier has done: "ready" news handled, notifications sent
/// (delivered or not) and in flight.
#[derive(Debug, Default)]
pub struct Progress {
    handled: AtomicU64,
    sent: AtomicU64,
    in_flight: AtomicU64,
}

impl Progress {
    /// Commands' "became ready" news handled.
    pub fn handled(&self) -> u64 {
        self.handled.load(Ordering::SeqCst)
    }

    /// Notifications finished (delivered or not).
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    /// Notifications being sent now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::SeqCst)
    }
}

/// The body of a `queue.ready` notification.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReadyBody<'a> {
    event_type: &'a str,
    available: bool,
    queue_depth: u64,
    claim_url: &'static str,
    sent_at: Rfc3339,
    notification_id: Uuid,
}

impl Subscriptions {
    fn lapses_at(&self, ttl_seconds: u64) -> Timestamp {
        self.clock.now().plus_seconds(ttl_seconds)
    }

    /// Stores a new subscription of worker `owner`, unless it holds
    /// [`MAX_SUBSCRIPTIONS_PER_WORKER`] live ones already. Creates are
    /// taken one at a time by this server (they are rare); replicas on
    /// one Redis may each pass the bound once at the same moment.
    pub async fn create(
        &self,
        owner: &str,
        new: NewSubscription,
    ) -> Result<Subscription, SubscriptionError> {
        let _one_at_a_time = self.creating.lock().await;
        let now = self.clock.now();
        let held = self.store.subscriptions().await?;
        let live = held.iter().filter(|held| held.owner == owner && held.expires_at > now);
        if live.count() >= MAX_SUBSCRIPTIONS_PER_WORKER {
            return Err(SubscriptionError::TooMany);
        }
        let subscription = Subscription {
            id: Uuid::now_v7(),
            owner: owner.to_string(),
            callback_url: new.callback_url,
            commands: new.commands,
            mode: new.mode,
            group_id: new.group_id,
            min_interval_seconds: new
                .min_interval_seconds
                .unwrap_or(self.default_min_interval_seconds),
            expires_at: self.lapses_at(new.ttl_seconds),
        };
        self.store.put_subscription(subscription.clone()).await?;
        Ok(subscription)
    }

    /// The live subscription `id` of worker `owner`.
    async fn owned(&self, owner: &str, id: Uuid) -> Result<Subscription, SubscriptionError> {
        let subscription = self
            .store
            .get_subscription(id)
            .await?
            .filter(|subscription| subscription.expires_at > self.clock.now())
            .ok_or(SubscriptionError::NotFound)?;
        if subscription.owner != owner {
            return Err(SubscriptionError::NotOwner);
        }
        Ok(subscription)
    }

    /// Extends subscription `id` of worker `owner` to `ttl_seconds` from now.
    pub async fn renew(
        &self,
        owner: &str,
        id: Uuid,
        ttl_seconds: u64,
    ) -> Result<Subscription, SubscriptionError> {
        let mut subscription = self.owned(owner, id).await?;
        subscription.expires_at = self.lapses_at(ttl_seconds);
        self.store.put_subscription(subscription.clone()).await?;
        Ok(subscription)
    }

    /// Deletes subscription `id` of worker `owner`.
    pub async fn delete(&self, owner: &str, id: Uuid) -> Result<(), SubscriptionError> {
        self.owned(owner, id).await?;
        self.store.delete_subscription(id).await?;
        Ok(())
    }

    /// Notifies subscribers until `shutdown` fires.
    pub async fn notify(self, shutdown: CancellationToken) {
        let pool = Arc::new(Semaphore::new(POOL));
        let mut rotation = Rotation::default();
        let mut held = HeldBack::default();
        let mut owed = self.ready_at_start().await;
        loop {
            let look_again = held.next_due();
            let news = if !owed.is_empty() {
                std::mem::take(&mut owed)
            } else {
                tokio::select! {
                    taken = self.signals.take_became_ready() => {
                        taken.into_iter().map(|(command, depth)| News { command, depth, only: None }).collect()
                    }
                    () = self.sleep_until(look_again) => self.still_ready(&mut held).await,
                    () = shutdown.cancelled() => return,
                }
            };
            let all = match self.store.subscriptions().await {
                Ok(all) => all,
                Err(error) => {
                    // Late, not lost: the news waits for the next look.
                    tracing::warn!(%error, "cannot read subscriptions; looking again in a second");
                    owed = news;
                    let again = self.clock.now().plus_millis(1000);
                    tokio::select! {
                        () = self.clock.sleep_until(again) => continue,
                        () = shutdown.cancelled() => return,
                    }
                }
            };
            rotation.retain(&all);
            let now = self.clock.now();
            for News { command, depth, only } in news {
                let wanting: Vec<&Subscription> = all
                    .iter()
                    .filter(|subscription| subscription.wants(&command, now))
                    .filter(|subscription| {
                        only.as_ref()
                            .is_none_or(|only| only.iter().any(|held| held.covers(subscription)))
                    })
                    .collect();
                // A paused command's work is told at its resume (control.rs).
                if !wanting.is_empty() && only.is_none() && self.paused(&command).await {
                    self.progress.handled.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                let choice = rotation.choose(&command, &wanting, now);
                held.note(&command, &choice);
                for subscription in choice.chosen {
                    let Ok(place) = pool.clone().acquire_owned().await else { return };
                    let (notifier, url) = (self.clone(), subscription.callback_url.clone());
                    let (command, id) = (command.clone(), subscription.id);
                    self.progress.in_flight.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(async move {
                        notifier.send(id, &url, &command, depth).await;
                        notifier.progress.sent.fetch_add(1, Ordering::SeqCst);
                        notifier.progress.in_flight.fetch_sub(1, Ordering::SeqCst);
                        drop(place);
                    });
                }
                self.progress.handled.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// The news a start owes: every command with ready tasks. What became
    /// ready while the server was down (a delayed task coming due), and
    /// what an interval held back when it stopped, was told to no one, and
    /// the ready set will not go from empty to non-empty again to tell it.
    async fn ready_at_start(&self) -> Vec<News> {
        match self.store.all_queue_stats().await {
            Ok(all) => all
                .into_iter()
                .filter(|stats| stats.ready > 0 && !stats.settings.paused)
                .map(|stats| News { command: stats.command, depth: stats.ready, only: None })
                .collect(),
            Err(error) => {
                tracing::warn!(%error, "cannot read the queues at start: no notification for work already ready");
                Vec::new()
            }
        }
    }

    /// Whether `command` is paused (not when its settings cannot be read:
    /// a notification too many is better than one missing).
    async fn paused(&self, command: &Command) -> bool {
        self.store.queue_settings(command).await.is_ok_and(|settings| settings.paused)
    }

    /// Sleeps until `at`; forever when `None`.
    async fn sleep_until(&self, at: Option<Timestamp>) {
        match at {
            Some(at) => self.clock.sleep_until(at).await,
            None => std::future::pending().await,
        }
    }

    /// The news for those held back whose time has come (they leave
    /// `held`), for each command that still has ready tasks: told to them
    /// only.
    async fn still_ready(&self, held: &mut HeldBack) -> Vec<News> {
        let mut news = Vec::new();
        for (command, due) in held.take_due(self.clock.now()) {
            match self.store.queue_stats(&command).await {
                Ok(stats) if stats.ready > 0 && !stats.settings.paused => {
                    news.push(News { command, depth: stats.ready, only: Some(due) });
                }
                Ok(_) => {}
                Err(error) => tracing::debug!(%error, "cannot read a held command's depth"),
            }
        }
        news
    }

    /// Posts one `queue.ready` notification to `subscription`'s `url`.
    async fn send(&self, subscription: Uuid, url: &str, command: &Command, depth: u64) {
        let now = self.clock.now();
        let notification_id = Uuid::now_v7();
        let body = ReadyBody {
            event_type: command.as_str(),
            available: true,
            queue_depth: depth,
            claim_url: CLAIM_URL,
            sent_at: Rfc3339::new(now, self.offset),
            notification_id,
        };
        let Ok(body) = serde_json::to_vec(&body) else { return };
        let delivery = notification_id.to_string();
        let request = Request {
            url,
            event: "queue.ready",
            delivery: &delivery,
            body,
            timestamp: now.unix_seconds(),
        };
        let sent = self.outbound.send(request).await;
        self.metrics.webhook_delivery(WebhookKind::QueueReady, command, sent.is_ok());
        if let Err(error) = sent {
            tracing::info!(
                %error,
                command = command.as_str(),
                %subscription,
                "worker notification not delivered"
            );
        }
    }

    /// Removes lapsed subscriptions every `interval` until `shutdown`.
    pub async fn clean_up(self, interval: Duration, shutdown: CancellationToken) {
        let step = i64::try_from(interval.as_millis()).unwrap_or(i64::MAX);
        loop {
            let next = self.clock.now().plus_millis(step);
            tokio::select! {
                () = self.clock.sleep_until(next) => {}
                () = shutdown.cancelled() => return,
            }
            match self.store.remove_lapsed_subscriptions(self.clock.now()).await {
                Ok(0) => {}
                Ok(removed) => tracing::info!(removed, "lapsed subscriptions removed"),
                Err(error) => tracing::warn!(%error, "cannot remove lapsed subscriptions"),
            }
        }
    }
}
