//! The Redis store runs its connection, merged calls and listener on a
//! thread of its own (`store/redis/thread.rs`), which ends with the store:
//! a server that retries its start against an absent Redis opens a store
//! per attempt, and none of them may leave a thread behind. Against a
//! `redis-server` of its own (skipped with a notice without one). The
//! only test in its binary, so that it counts its own store's thread.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use codeq_core::{Command, Priority, Task, TaskId, TaskState, Timestamp};
use codeq_server::store::redis::{RedisStore, TimeSource};
use codeq_server::store::{ClaimSpec, CommandFilter, Signals, Store};

#[path = "support/redis_server.rs"]
mod redis_server;

/// Threads of this process named `codeq-redis`.
fn store_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|entry| std::fs::read_to_string(entry.unwrap().path().join("comm")).ok())
        .filter(|name| name.trim_end() == "codeq-redis")
        .count()
}

fn task(now: Timestamp) -> Task {
    Task {
        id: TaskId::generate(),
        command: Command::parse("th").unwrap(),
        payload: "{}".into(),
        priority: Priority::clamped(0),
        webhook: None,
        max_attempts: 3,
        idempotency_key: None,
        run_at: None,
        created_at: now,
        created_by: "p".into(),
        state: TaskState::new(now, now),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_store_works_on_a_thread_of_its_own_that_ends_with_it() {
    let Some(server) = redis_server::RedisServer::start() else { return };
    assert_eq!(store_threads(), 0);
    let store =
        RedisStore::connect(server.store_options(TimeSource::Redis), Arc::new(Signals::new()))
            .await
            .unwrap();
    assert_eq!(store_threads(), 1, "one thread per store");
    let now = Timestamp::now();
    let created = store.create(vec![task(now)]).await.unwrap();
    let spec = ClaimSpec {
        worker_id: "w".into(),
        commands: CommandFilter::Only(vec![Command::parse("th").unwrap()]),
        lease_until: now.plus_seconds(60),
        count: 1,
    };
    let claimed = store.claim(&spec, now).await.unwrap();
    assert_eq!(claimed.len(), 1, "{created:?}");
    drop(store);
    let deadline = Instant::now() + Duration::from_secs(5);
    while store_threads() > 0 {
        assert!(Instant::now() < deadline, "the store's thread outlived it");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
