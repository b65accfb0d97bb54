//! HTTP-level tests: the real server on port 0, called over real HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod artifacts;
mod bad_input;
mod compat;
mod concurrency;
mod control;
mod faults;
mod front_door;
mod helpers;
mod insight;
mod jwt;
mod lifecycle;
mod long_poll;
mod metrics;
mod openapi;
mod receiver;
mod semantics;
mod subscriptions;
mod ui;
mod webhooks;
