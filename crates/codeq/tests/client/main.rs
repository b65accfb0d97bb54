//! The `codeq` binary as a user runs it (`init`, `auth`, `task`, `queue`,
//! `dlq`, `worker`), against the real server started in-process for each
//! test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod auth;
mod control;
mod login;
mod new_user;
mod support;
mod task;
mod walkthrough;
mod worker;
