//! The services: the rules of the task life cycle between the HTTP layer
//! and the store.
//!
//! - [`scheduler`]: create, claim (with long poll), heartbeat, abandon,
//!   nack and results: defaults, limits and backoff decided here.
//! - [`artifacts`]: artifact bytes written to `localArtifactsDir`.
//! - [`control`]: cancel, queue settings, the dead-letter queue, listing.
//! - [`reaper`]: promotes due tasks and expires leases on time.
//! - [`retention`]: deletes terminal tasks past their retention.
//! - [`outbound`]: the webhook client: signed, bounded, guarded.
//! - [`webhooks`]: result callbacks from the durable outbox.
//! - [`subscriptions`]: worker-availability subscriptions and their
//!   notifications.

pub mod artifacts;
pub mod control;
pub mod outbound;
pub mod reaper;
pub mod retention;
pub mod scheduler;
pub mod subscriptions;
pub mod webhooks;

use codeq_core::BackoffConfig;

/// The limits and defaults the services apply (from the configuration).
#[derive(Debug, Clone)]
pub struct Policy {
    /// Lease of a claim or heartbeat that names none.
    pub default_lease_seconds: u64,
    /// The longest lease granted.
    pub max_lease_seconds: u64,
    /// `maxAttempts` of a task that names none.
    pub max_attempts_default: u32,
    /// Retry delays after a nack or an expired lease.
    pub backoff: BackoffConfig,
    /// Most tasks one reaper pass moves.
    pub requeue_inspect_limit: usize,
    /// How long terminal tasks are kept.
    pub retention_seconds: u64,
    /// Storage calls served at once.
    pub max_in_flight_calls: usize,
}
