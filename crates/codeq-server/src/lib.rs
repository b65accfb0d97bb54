//! The codeQ server: HTTP API, authentication, scheduling services and
//! storage backends.
//!
//! Layout:
//! - [`config`]: YAML + env + flags → a validated `Config`.
//! - [`app`]: builds everything, binds the listener, runs until shutdown.
//! - [`data_dir`]: the data directory's lock (one server per directory).
//! - [`http`]: the axum router, one module per resource, `ApiError`; and
//!   the front door below it: connections, timeouts, request bodies.
//! - [`fd_limit`]: the open-file limit, raised at start; the connection cap
//!   it allows.
//! - [`metrics`]: the Prometheus metrics, their families and how they are read;
//!   [`process_metrics`]: the process's own (CPU, memory, descriptors) and the build.
//! - [`logging`]: log set-up, and the buffer lines pass through to stderr.
//! - [`auth`]: bearer tokens → `Principal`, and the scope / admin / eventTypes checks.
//! - [`service`]: the task life cycle (scheduler), artifacts, reaper, retention.
//! - [`store`]: the `Store` trait (one atomic call per transition) and its backends.
//! - [`throughput`]: the last hour of each command's counts, per minute
//!   (the dashboard's charts).
//! - [`clock`]: system time, or a clock tests drive.

pub mod app;
pub mod auth;
pub mod clock;
pub mod config;
pub mod data_dir;
pub mod fd_limit;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod process_metrics;
pub mod service;
pub mod store;
pub mod throughput;
