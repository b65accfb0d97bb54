//! The codeQ server: HTTP API, authentication, scheduling services and
//! storage backends.
//!
//! Layout:
//! - [`auth`]: bearer tokens → `Principal`, and the scope / admin / eventTypes checks.
//! - [`config`]: YAML + env + flags → a validated `Config`.
//! - [`app`]: builds everything, binds the listener, runs until shutdown.
pub mod app;
pub mod auth;
pub mod config;
pub mod clock;
pub mod service;
pub mod store;
