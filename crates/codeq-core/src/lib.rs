//! The words of codeQ's domain, with no I/O and no runtime.
//!
//! Layout:
//! - [`command`]: queue names (`Command`), parsed at the edge.
//! - [`task`]: `Task`, `TaskId`, `TaskStatus`, `Priority` and the timestamps they carry.
//! - [`result`]: what a worker reports (`ResultRecord`, `Artifact`).
//! - [`subscription`]: worker-availability subscriptions and who a
//!   notification goes to.
//! - [`lifecycle`]: the transitions of a task (claim, heartbeat, abandon,
//!   nack, expire, complete) as pure functions every backend applies.
//! - [`backoff`]: the retry delay policies of a nack or an expired lease.
//! - [`queue`]: per-command depths (`QueueStats`), pause and flow limits
//!   (`QueueSettings`) and the token bucket of a rate limit.
//! - [`json`]: JSON kept as its text (`JsonText`), as payloads and results are.
//! - [`time`]: `Timestamp`, milliseconds since the Unix epoch, and its RFC 3339 form.

pub mod backoff;
pub mod command;
pub mod json;
pub mod lifecycle;
pub mod queue;
pub mod result;
pub mod subscription;
pub mod task;
pub mod time;

pub use backoff::{BackoffConfig, BackoffPolicy};
pub use command::Command;
pub use json::JsonText;
pub use lifecycle::{Fence, TransitionError};
pub use queue::{QueueSettings, QueueStats, TokenBucket};
pub use result::{Artifact, ResultRecord, ResultStatus};
pub use subscription::{DeliveryMode, Subscription};
pub use task::{Priority, Task, TaskId, TaskState, TaskStatus};
pub use time::Timestamp;
