//! The Redis store runs its connection, merged calls and listener on a
//! thread of its own (`store/redis/thread.rs`), which ends with the store:
//! a server that retries its start against an absent Redis opens a store
//! per attempt, and none of them may leave a thread behind. Against a
//! `redis-server` of its own (skipped with a notice without one; threads
//! are counted in Linux's `/proc`). The only test in its binary, so that
//! it counts its own stores' threads.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use codeq_core::{Command, Timestamp};
use codeq_server::store::redis::{RedisOptions, RedisStore, TimeSource};
use codeq_server::store::{ClaimSpec, CommandFilter, Signals, Store};

#[path = "support/redis_server.rs"]
mod redis_server;
#[path = "support/tasks.rs"]
mod tasks;

/// Threads of this process named `codeq-redis`.
fn store_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|entry| std::fs::read_to_string(entry.unwrap().path().join("comm")).ok())
        .filter(|name| name.trim_end() == "codeq-redis")
        .count()
}

/// Waits (up to 5 s) until no store thread is left.
async fn no_store_thread_left(after: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while store_threads() > 0 {
        assert!(Instant::now() < deadline, "a store's thread outlived it {after}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "current_thread")]
async fn the_store_works_on_a_thread_of_its_own_that_ends_with_it() {
    let Some(server) = redis_server::RedisServer::start() else { return };
    if !std::path::Path::new("/proc/self/task").exists() {
        eprintln!("skipped: no /proc/self/task to count threads in");
        return;
    }
    assert_eq!(store_threads(), 0);
    let signals = Arc::new(Signals::new());

    // Options that name no port fail before any thread is started.
    let unusable = RedisOptions::from_addr("nohost", None, 0, "codeq");
    assert!(RedisStore::connect(unusable, signals.clone()).await.is_err());
    assert_eq!(store_threads(), 0, "a store that could not open left its thread");

    // Nothing listening: the open fails, as each start-up retry does.
    let absent = format!("127.0.0.1:{}", closed_port());
    for _ in 0..3 {
        let options = RedisOptions::from_addr(&absent, None, 0, "codeq");
        assert!(RedisStore::connect(options, signals.clone()).await.is_err());
    }
    no_store_thread_left("against an absent Redis").await;

    let store =
        RedisStore::connect(server.store_options(TimeSource::Redis), signals).await.unwrap();
    assert_eq!(store_threads(), 1, "one thread per store");
    let now = Timestamp::now();
    let created = store.create(vec![tasks::task_of("th", now)]).await.unwrap();
    let spec = ClaimSpec {
        worker_id: "w".into(),
        commands: CommandFilter::Only(vec![Command::parse("th").unwrap()]),
        lease_until: now.plus_seconds(60),
        count: 1,
    };
    let claimed = store.claim(&spec, now).await.unwrap();
    assert_eq!(claimed.len(), 1, "{created:?}");
    // Closed, the store still answers (its thread runs until it is gone).
    store.close().await.unwrap();
    assert!(store.get_task(claimed[0].id).await.unwrap().is_some());
    drop(store);
    no_store_thread_left("once dropped").await;
}
