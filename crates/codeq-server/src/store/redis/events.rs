//! Cross-replica wake-ups and the safety poll.
//!
//! Scripts that give a command ready work (create, promote, requeue by
//! abandon, a lease's expiry, a resume, a place freed under
//! `maxInFlight`) publish `<origin> <command>…` on `<prefix>:{*}:events`.
//! Every replica listens and wakes its long polls of those commands
//! (`Signals::ready`); the replica that ran the script has already done so
//! from the script's answer (and told its subscription notifier, so that
//! one notification goes out per event, not one per replica), and skips
//! its own messages. A message lost while a replica was disconnected is
//! made up for by the safety poll, which also keeps the outbox hint fresh
//! and doubles as the health probe that reconnects after an outage.

use std::sync::Weak;
use std::time::Duration;

use codeq_core::Command;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::RedisStore;

/// How often the safety poll runs.
pub const SAFETY_POLL: Duration = Duration::from_secs(1);

/// How long the listener waits before resubscribing after a failure.
const RESUBSCRIBE_AFTER: Duration = Duration::from_millis(500);

/// Listens to the events channel until `stop` fires or the store is gone.
///
/// Redis refusing the subscription itself (an ACL user without the
/// channel: `NOPERM`) is a warning, once in a row: until it is allowed,
/// work made on other replicas wakes this one's long polls only at the
/// safety poll. A subscription that ends, or cannot be made while Redis
/// is unreachable, is an outage, which the link reports already.
pub async fn listen(store: Weak<RedisStore>, stop: CancellationToken) {
    let mut failing = false;
    loop {
        let outcome = tokio::select! {
            outcome = listen_once(&store, &mut failing) => outcome,
            () = stop.cancelled() => return,
        };
        match outcome {
            Ok(()) => return,
            Err(error) if !failing && refused_by_redis(&error) => {
                failing = true;
                tracing::warn!(
                    %error,
                    "cannot subscribe to Redis's events channel; other replicas' work wakes long \
                     polls here only at the {}s safety poll until it is back",
                    SAFETY_POLL.as_secs()
                );
            }
            Err(error) => tracing::debug!(%error, "Redis events subscription failed again"),
        }
        tokio::select! {
            () = tokio::time::sleep(RESUBSCRIBE_AFTER) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// One subscription, until it breaks (`Err`) or the store is gone (`Ok`).
/// Clears `failing` once subscribed.
async fn listen_once(store: &Weak<RedisStore>, failing: &mut bool) -> redis::RedisResult<()> {
    let (client, channel, origin) = {
        let Some(store) = store.upgrade() else { return Ok(()) };
        (store.link.client().clone(), store.key("events"), store.origin.clone())
    };
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(&channel).await?;
    if std::mem::take(failing) {
        tracing::info!("subscribed to Redis's events channel again");
    }
    // Whatever was published while unsubscribed is found by looking now.
    if let Some(store) = store.upgrade() {
        let _ = store.poll().await;
    }
    let mut messages = pubsub.into_on_message();
    while let Some(message) = messages.next().await {
        let Some(store) = store.upgrade() else { return Ok(()) };
        let payload: String = message.get_payload()?;
        let mut words = payload.split(' ');
        if words.next() == Some(origin.as_str()) {
            continue;
        }
        for command in words.filter_map(|word| Command::parse(word).ok()) {
            store.signals.ready(&command);
        }
    }
    Err(redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "the events subscription closed",
    )))
}

/// Whether Redis answered with a refusal (as opposed to a connection
/// that broke, timed out or could not be made).
fn refused_by_redis(error: &redis::RedisError) -> bool {
    !(error.is_io_error()
        || error.is_connection_refusal()
        || error.is_connection_dropped()
        || error.is_timeout())
}

/// Polls every [`SAFETY_POLL`] until `stop` fires or the store is gone.
pub async fn safety_poll(store: Weak<RedisStore>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(SAFETY_POLL) => {}
            () = stop.cancelled() => return,
        }
        let Some(store) = store.upgrade() else { return };
        if let Err(error) = store.poll().await {
            tracing::debug!(%error, "Redis safety poll failed");
        }
    }
}
