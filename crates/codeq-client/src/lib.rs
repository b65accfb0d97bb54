//! A typed async client for the codeQ HTTP API (docs/api.md).
//!
//! [`Client`] has one method per endpoint; bodies and answers are the
//! types of [`types`], which mirror the API's JSON field for field. One
//! client holds one pooled keep-alive `reqwest::Client`; clone it freely.
//!
//! Layout:
//! - [`client`]: [`Client`], its [`ClientBuilder`], and which token each call sends.
//! - [`types`]: request and response bodies (`Task`, `CreateTask`, `ResultRecord`, …).
//! - [`error`]: [`Error`], including the API's `{"error", "code"}` bodies.
//! - [`iam`]: identity-service sign-in and token exchange, for `codeq auth login`.
//! - [`worker`]: [`Worker`], the claim → handle → report loop with
//!   heartbeats, concurrency and graceful stop.
#![warn(missing_docs)]

pub mod client;
pub mod error;
pub mod iam;
mod spread;
pub mod types;
pub mod worker;

pub use client::{Client, ClientBuilder, RetryPolicy};
pub use error::{Error, TokenKind};
pub use types::{
    Artifact, ArtifactUpload, BatchItem, BatchResult, CancelledTask, ClaimRequest, CleanupOutcome,
    CreateTask, Created, DeadLetterFilter, DeadLetterQuery, DeadLetterSelection, HeartbeatAck,
    ItemError, NackOutcome, NackStatus, Payload, Purged, QueueSettings, QueueStats, Replayed,
    ResultRecord, ResultStatus, SubmitResult, Task, TaskPage, TaskQuery, TaskStatus,
    TaskWithResult,
};
pub use worker::{Outcome, Worker};
