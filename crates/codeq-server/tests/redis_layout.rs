//! The Redis backend's key layout: a store opened on data written with
//! the earlier layout (one id set per status, `s:<STATUS>`) moves those
//! ids into each command's `ids` set, leaving out tasks that are gone,
//! so listings see every task; and a listing by status, which walks those
//! sets in bounded steps, looks at each task once however many steps it
//! takes. Against a `redis-server` of its own (skipped with a notice
//! without one).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use codeq_core::lifecycle::Submission;
use codeq_core::{ResultStatus, Task, TaskId, TaskStatus, Timestamp};
use codeq_server::store::redis::{RedisStore, TimeSource};
use codeq_server::store::{ClaimSpec, CommandFilter, Completion, Signals, Store};
use redis::AsyncCommands;

#[path = "support/redis_server.rs"]
mod redis_server;
#[path = "support/tasks.rs"]
mod tasks;

use tasks::task_of;

const TASKS: usize = 2_500;

fn task(now: Timestamp) -> Task {
    task_of("up", now)
}

/// Rewrites the command's `ids` set as the earlier layout kept it: one
/// set per status, and no `ids`.
async fn write_earlier_layout(connection: &mut redis::aio::MultiplexedConnection) {
    let ids: Vec<String> = connection.zrange("codeq:{up}:ids", 0, -1).await.unwrap();
    for id in ids {
        let status: String = connection.hget(format!("codeq:{{up}}:t:{id}"), "s").await.unwrap();
        let _: () = connection.zadd(format!("codeq:{{up}}:s:{status}"), &id, 0).await.unwrap();
    }
    let _: () = connection.del("codeq:{up}:ids").await.unwrap();
    // An earlier version never marked its layout.
    let _: () = connection.del("codeq:{*}:layout").await.unwrap();
}

#[tokio::test]
async fn an_earlier_layout_is_moved_into_the_ids_sets_when_the_store_opens() {
    let Some(server) = redis_server::RedisServer::start() else { return };
    let options = server.store_options(TimeSource::Caller);
    let store = RedisStore::connect(options.clone(), Arc::new(Signals::new())).await.unwrap();
    let now = Timestamp::now();
    let created = store.create((0..TASKS).map(|_| task(now)).collect()).await.unwrap();
    let mut ids: Vec<TaskId> =
        created.into_iter().map(|created| created.task().expect("stored").id).collect();
    let spec = ClaimSpec {
        commands: CommandFilter::All,
        worker_id: "w1".into(),
        lease_until: now.plus_seconds(60),
        count: 2,
    };
    let claimed = store.claim(&spec, now).await.unwrap();
    let submission = Submission {
        status: ResultStatus::Completed,
        result: None,
        error: None,
        artifacts: vec![],
    };
    let done =
        Completion { task_id: claimed[0].id, worker_id: "w1".into(), attempt: None, submission };
    store.complete(vec![done], now).await.unwrap();
    store.close().await.unwrap();

    let client = redis::Client::open(format!("redis://{}/", server.addr())).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    write_earlier_layout(&mut connection).await;
    let gone = TaskId::generate().to_string();
    let _: () = connection.zadd("codeq:{up}:s:COMPLETED", &gone, 0).await.unwrap();

    let store = RedisStore::connect(options, Arc::new(Signals::new())).await.unwrap();
    ids.reverse();
    assert_eq!(store.list_tasks(None, None, None, TASKS + 1).await.unwrap(), ids);
    let completed = store.list_tasks(None, Some(TaskStatus::Completed), None, 10).await.unwrap();
    assert_eq!(completed, vec![claimed[0].id], "the task that is gone is left out");
    let running = store.list_tasks(None, Some(TaskStatus::InProgress), None, 10).await.unwrap();
    assert_eq!(running, vec![claimed[1].id]);
    let left: Vec<String> = connection.keys("codeq:{up}:s:*").await.unwrap();
    assert!(left.is_empty(), "the earlier sets are deleted: {left:?}");
    let layout: String = connection.get("codeq:{*}:layout").await.unwrap();
    assert_eq!(layout, "2", "the store is marked as moved");
}

#[tokio::test]
async fn a_store_marked_as_moved_does_not_look_for_an_earlier_layout_again() {
    let Some(server) = redis_server::RedisServer::start() else { return };
    let options = server.store_options(TimeSource::Caller);
    let store = RedisStore::connect(options.clone(), Arc::new(Signals::new())).await.unwrap();
    store.create(vec![task(Timestamp::now())]).await.unwrap();
    store.close().await.unwrap();
    let client = redis::Client::open(format!("redis://{}/", server.addr())).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let ids: Vec<String> = connection.zrange("codeq:{up}:ids", 0, -1).await.unwrap();
    let _: () = connection.zadd("codeq:{up}:s:PENDING", &ids[0], 0).await.unwrap();

    RedisStore::connect(options, Arc::new(Signals::new())).await.unwrap();
    let left: Vec<String> = connection.zrange("codeq:{up}:s:PENDING", 0, -1).await.unwrap();
    assert_eq!(left, ids, "a marked store is not searched again");
}

/// How many times Redis has run `command`, inside scripts included.
async fn calls_of(connection: &mut redis::aio::MultiplexedConnection, command: &str) -> u64 {
    let info: String =
        redis::cmd("INFO").arg("commandstats").query_async(connection).await.unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |calls| calls.parse().unwrap())
}

#[tokio::test]
async fn a_listing_by_status_looks_at_each_task_once_however_many_steps_it_takes() {
    let Some(server) = redis_server::RedisServer::start() else { return };
    let options = server.store_options(TimeSource::Caller);
    let store = RedisStore::connect(options, Arc::new(Signals::new())).await.unwrap();
    let now = Timestamp::now();
    // Three commands, each one's tasks all newer than the one before's,
    // more of them than one step of a walk looks at.
    for name in ["old", "middle", "new"] {
        store.create((0..2_500).map(|_| task_of(name, now)).collect()).await.unwrap();
    }
    let client = redis::Client::open(format!("redis://{}/", server.addr())).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let (reads, steps) =
        (calls_of(&mut connection, "hget").await, calls_of(&mut connection, "evalsha").await);
    let failed = store.list_tasks(None, Some(TaskStatus::Failed), None, 10).await.unwrap();
    assert!(failed.is_empty());
    let read = calls_of(&mut connection, "hget").await - reads;
    let taken = calls_of(&mut connection, "evalsha").await - steps;
    assert_eq!(read, 7_500, "each task's status read once");
    assert!(taken >= 4, "several bounded steps, not one long call: {taken}");
}
