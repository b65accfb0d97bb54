//! Worker-availability subscriptions over real HTTP, with real receivers
//! on 127.0.0.1: the delivery modes, the throttle, lapsing, ownership,
//! every path that makes a queue ready, the guard and restarts.

use std::time::Duration;

use codeq_core::BackoffPolicy;
use codeq_server::service::outbound::sign;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::receiver::{Received, Receiver};

const SECRET: &str = "subscribe-secret";

/// A server on a manual clock whose notifications may go to loopback,
/// unthrottled unless a subscription asks, retrying at once.
async fn server() -> TestApp {
    TestApp::spawn_with(
        |config| {
            config.webhook_allow_private_networks = true;
            config.webhook_hmac_secret = Some(codeq_server::config::Secret::new(SECRET));
            config.subscription_min_interval_seconds = 0;
            config.backoff_policy = BackoffPolicy::Fixed;
            config.backoff_base_seconds = 0;
        },
        true,
    )
    .await
}

/// Subscribes `token` with `fields` (plus the receiver's URL).
async fn subscribe(app: &TestApp, token: &str, receiver: &Receiver, fields: Value) -> Reply {
    let mut body = json!({ "callbackUrl": format!("{}/ready", receiver.base) });
    body.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
    app.post("/workers/subscriptions", token, body).await
}

/// Subscribes and returns the subscription id (asserting 200).
async fn subscribed(app: &TestApp, receiver: &Receiver, fields: Value) -> String {
    let reply = subscribe(app, WORKER, receiver, fields).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.str("subscriptionId").to_string()
}

/// Makes `command` ready (one new task), waits for the notifier to handle
/// it, then empties the queue again.
async fn ready_round(app: &TestApp, command: &str) {
    let before = app.notifier_handled();
    app.create_simple(command).await;
    app.wait_for_notifier(before + 1).await;
    app.claim_ok(WORKER, &[command]).await;
}

fn bodies(received: &[Received]) -> Vec<Value> {
    received.iter().map(Received::json).collect()
}

#[tokio::test]
async fn a_notification_names_the_command_its_depth_and_is_signed() {
    let app = server().await;
    let receiver = Receiver::start(&[]).await;
    subscribed(&app, &receiver, json!({ "eventTypes": ["ping"] })).await;
    app.create_simple("ping").await;
    let got = receiver.wait_for(1).await.remove(0);
    assert_eq!(got.path, "/ready");
    assert_eq!(got.header("x-codeq-event"), "queue.ready");
    let timestamp: i64 = got.header("x-codeq-timestamp").parse().unwrap();
    assert_eq!(got.header("x-codeq-signature"), sign(SECRET, timestamp, &got.body));
    let body = got.json();
    assert_eq!(body["eventType"], "ping");
    assert_eq!(body["available"], true);
    assert_eq!(body["queueDepth"], 1);
    assert_eq!(body["claimUrl"], "/v1/codeq/tasks/claim");
    assert_eq!(got.header("x-codeq-delivery"), body["notificationId"].as_str().unwrap());
    assert!(body["sentAt"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn fanout_reaches_every_live_subscriber_of_the_command() {
    let app = server().await;
    let receivers = [Receiver::start(&[]).await, Receiver::start(&[]).await];
    for receiver in &receivers {
        subscribed(&app, receiver, json!({ "eventTypes": ["fan"], "deliveryMode": "fanout" }))
            .await;
    }
    let elsewhere = Receiver::start(&[]).await;
    subscribed(&app, &elsewhere, json!({ "eventTypes": ["other"] })).await;
    ready_round(&app, "fan").await;
    for receiver in &receivers {
        let told = bodies(&receiver.received());
        assert_eq!(told.len(), 1, "every subscriber once");
        assert_eq!(told[0]["eventType"], "fan");
    }
    assert!(elsewhere.received().is_empty(), "another command's subscriber heard nothing");
}

#[tokio::test]
async fn group_reaches_one_subscriber_per_group_in_turn() {
    let app = server().await;
    let group_a = [Receiver::start(&[]).await, Receiver::start(&[]).await];
    let group_b = Receiver::start(&[]).await;
    let mut ids = Vec::new();
    for receiver in &group_a {
        let fields = json!({ "eventTypes": ["job"], "deliveryMode": "group", "groupId": "a" });
        ids.push(subscribed(&app, receiver, fields).await);
    }
    let fields = json!({ "eventTypes": ["job"], "deliveryMode": "group", "groupId": "b" });
    subscribed(&app, &group_b, fields).await;
    // The rotation goes by subscription id.
    let first = if ids[0] < ids[1] { 0 } else { 1 };
    let mut turns = Vec::new();
    for _ in 0..4 {
        let before: Vec<usize> = group_a.iter().map(|r| r.received().len()).collect();
        ready_round(&app, "job").await;
        let after: Vec<usize> = group_a.iter().map(|r| r.received().len()).collect();
        let told: Vec<usize> = (0..2).filter(|i| after[*i] > before[*i]).collect();
        assert_eq!(told.len(), 1, "one subscriber of group a per notification");
        turns.push(told[0]);
    }
    assert_eq!(turns, vec![first, 1 - first, first, 1 - first]);
    assert_eq!(group_b.received().len(), 4, "group b's only subscriber every time");
}

#[tokio::test]
async fn hash_picks_one_subscriber_stable_within_a_minute() {
    let app = server().await;
    let receivers =
        [Receiver::start(&[]).await, Receiver::start(&[]).await, Receiver::start(&[]).await];
    let mut ids = Vec::new();
    for receiver in &receivers {
        let fields = json!({ "eventTypes": ["hashed"], "deliveryMode": "hash" });
        ids.push(subscribed(&app, receiver, fields).await);
    }
    let mut by_id: Vec<usize> = (0..3).collect();
    by_id.sort_by_key(|i| ids[*i].clone());
    // Stand at the start of a minute.
    let clock = app.clock.clone().unwrap();
    let now_ms = codeq_server::clock::Clock::now(clock.as_ref()).millis();
    clock.advance(Duration::from_millis((60_000 - now_ms.rem_euclid(60_000)) as u64));
    let minute = codeq_server::clock::Clock::now(clock.as_ref()).millis() / 60_000;
    let expected = |minute: i64| by_id[minute.rem_euclid(3) as usize];
    for round in 0..2 {
        ready_round(&app, "hashed").await;
        let counts: Vec<usize> = receivers.iter().map(|r| r.received().len()).collect();
        let mut want = vec![0; 3];
        want[expected(minute)] = round + 1;
        assert_eq!(counts, want, "the same subscriber all minute");
        app.advance(20);
    }
    app.advance(20); // the next minute: another subscriber
    ready_round(&app, "hashed").await;
    let counts: Vec<usize> = receivers.iter().map(|r| r.received().len()).collect();
    let mut want = vec![0; 3];
    want[expected(minute)] = 2;
    want[expected(minute + 1)] = 1;
    assert_eq!(counts, want);
}

#[tokio::test]
async fn the_minimum_interval_holds_back_a_second_notification() {
    let app = server().await;
    let receiver = Receiver::start(&[]).await;
    subscribed(&app, &receiver, json!({ "eventTypes": ["slow"], "minIntervalSeconds": 10 })).await;
    ready_round(&app, "slow").await;
    ready_round(&app, "slow").await;
    assert_eq!(receiver.received().len(), 1, "throttled");
    app.advance(10);
    ready_round(&app, "slow").await;
    assert_eq!(receiver.received().len(), 2, "told again once the interval passed");
}

#[tokio::test]
async fn work_that_waits_out_the_interval_is_told_once_it_ends() {
    let app = server().await;
    let receiver = Receiver::start(&[]).await;
    subscribed(&app, &receiver, json!({ "eventTypes": ["held"], "minIntervalSeconds": 10 })).await;
    ready_round(&app, "held").await;
    // Ready again inside the interval: held back, and the task stays.
    let before = app.notifier_handled();
    app.create_simple("held").await;
    app.wait_for_notifier(before + 1).await;
    assert_eq!(receiver.received().len(), 1, "throttled");
    app.advance(10);
    let got = receiver.wait_for(2).await;
    assert_eq!(got[1].json()["queueDepth"], 1, "told of the task that waited");
}

#[tokio::test]
async fn a_resumed_command_with_ready_work_is_told() {
    let app = server().await;
    let receiver = Receiver::start(&[]).await;
    subscribed(&app, &receiver, json!({ "eventTypes": ["paused"] })).await;
    app.create_simple("paused").await;
    receiver.wait_for(1).await;
    let pause = app.post("/admin/queues/paused/pause", ADMIN, json!({})).await;
    assert_eq!(pause.status, 200, "{:?}", pause.body);
    assert_eq!(app.claim(WORKER, &["paused"]).await.status, 204, "a paused command gives nothing");
    let resume = app.post("/admin/queues/paused/resume", ADMIN, json!({})).await;
    assert_eq!(resume.status, 200, "{:?}", resume.body);
    let got = receiver.wait_for(2).await;
    assert_eq!(got[1].json()["queueDepth"], 1, "the resume is the news");
}

#[tokio::test]
async fn work_created_while_paused_is_told_at_the_resume_not_before() {
    let app = server().await;
    let receiver = Receiver::start(&[]).await;
    subscribed(&app, &receiver, json!({ "eventTypes": ["stopped"] })).await;
    let pause = app.post("/admin/queues/stopped/pause", ADMIN, json!({})).await;
    assert_eq!(pause.status, 200, "{:?}", pause.body);
    let before = app.notifier_handled();
    app.create_simple("stopped").await;
    app.wait_for_notifier(before + 1).await;
    assert_eq!(receiver.received().len(), 0, "nothing a claim could take");
    let resume = app.post("/admin/queues/stopped/resume", ADMIN, json!({})).await;
    assert_eq!(resume.status, 200, "{:?}", resume.body);
    let got = receiver.wait_for(1).await;
    assert_eq!(got[0].json()["queueDepth"], 1, "the resume is the news");
}

#[tokio::test]
async fn settings_that_hold_more_back_tell_nobody() {
    const SETTINGS: &str = "/v1/codeq/admin/queues/tight/settings";
    let app = server().await;
    let receiver = Receiver::start(&[]).await;
    subscribed(&app, &receiver, json!({ "eventTypes": ["tight", "zed"] })).await;
    app.create_simple("tight").await;
    receiver.wait_for(1).await;
    let before = app.notifier_handled();
    for limit in [8, 4, 4] {
        let settings = json!({ "maxInFlight": limit });
        let put = app.call(Method::PUT, SETTINGS, Some(ADMIN), Some(settings)).await;
        assert_eq!(put.status, 200, "{:?}", put.body);
    }
    // A notification of another command, raised after them, handled last.
    app.create_simple("zed").await;
    receiver.wait_for(2).await;
    app.wait_for_notifier(before + 1).await;
    let events: Vec<Value> =
        bodies(&receiver.received()).iter().map(|b| b["eventType"].clone()).collect();
    assert_eq!(events, vec![json!("tight"), json!("zed")], "tightening told nobody");
    // Loosening does.
    let put = app.call(Method::PUT, SETTINGS, Some(ADMIN), Some(json!({ "maxInFlight": 5 }))).await;
    assert_eq!(put.status, 200, "{:?}", put.body);
    assert_eq!(receiver.wait_for(3).await[2].json()["eventType"], "tight");
}

#[tokio::test]
async fn a_lapsed_subscription_gets_nothing_and_is_removed() {
    let app = TestApp::spawn_with(
        |config| {
            config.webhook_allow_private_networks = true;
            config.subscription_cleanup_interval_seconds = 60;
        },
        true,
    )
    .await;
    let receiver = Receiver::start(&[]).await;
    let id = subscribed(&app, &receiver, json!({ "eventTypes": ["late"], "ttlSeconds": 5 })).await;
    app.advance(5);
    ready_round(&app, "late").await;
    assert!(receiver.received().is_empty(), "a lapsed subscription is not told");
    let renewal =
        app.post(&format!("/workers/subscriptions/{id}/heartbeat"), WORKER, json!({})).await;
    assert_eq!((renewal.status, renewal.code()), (404, "subscription_not_found"));
    assert_eq!(app.stored_subscriptions().await, 1, "kept until the cleanup runs");
    app.advance(60);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.stored_subscriptions().await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the lapsed subscription was not removed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn only_the_creating_worker_renews_or_deletes() {
    let app = server().await;
    let receiver = Receiver::start(&[]).await;
    let reply = subscribe(&app, WORKER, &receiver, json!({ "ttlSeconds": 60 })).await;
    let id = reply.str("subscriptionId").to_string();
    let first_expiry = reply.str("expiresAt").to_string();
    let heartbeat = format!("/workers/subscriptions/{id}/heartbeat");
    let other = app.post(&heartbeat, WORKER2, json!({ "ttlSeconds": 60 })).await;
    assert_eq!((other.status, other.code()), (403, "not_owner"));
    let path = format!("/v1/codeq/workers/subscriptions/{id}");
    let other = app.call(Method::DELETE, &path, Some(WORKER2), None).await;
    assert_eq!((other.status, other.code()), (403, "not_owner"));

    app.advance(30);
    let renewed = app.post(&heartbeat, WORKER, json!({ "ttlSeconds": 60 })).await;
    assert_eq!(renewed.status, 200, "{:?}", renewed.body);
    assert_eq!(renewed.str("subscriptionId"), id);
    assert!(renewed.str("expiresAt") > first_expiry.as_str(), "the renewal extends it");

    let deleted = app.call(Method::DELETE, &path, Some(WORKER), None).await;
    assert_eq!(deleted.status, 204);
    let again = app.call(Method::DELETE, &path, Some(WORKER), None).await;
    assert_eq!((again.status, again.code()), (404, "subscription_not_found"));
    for unknown in ["not-a-uuid", "0191a0d0-0000-7000-8000-000000000000"] {
        let reply = app
            .post(&format!("/workers/subscriptions/{unknown}/heartbeat"), WORKER, json!({}))
            .await;
        assert_eq!((reply.status, reply.code()), (404, "subscription_not_found"), "{unknown}");
    }
}

#[tokio::test]
async fn subscriptions_are_checked_against_the_token() {
    let app = server().await;
    let receiver = Receiver::start(&[]).await;
    let cases = [
        (WORKER, json!({ "callbackUrl": null }), 400, "invalid_field"),
        (WORKER, json!({ "callbackUrl": "ftp://example.com/x" }), 400, "invalid_field"),
        (WORKER, json!({ "deliveryMode": "broadcast" }), 400, "invalid_field"),
        (WORKER, json!({ "deliveryMode": "group" }), 400, "invalid_field"),
        (WORKER, json!({ "ttlSeconds": 0 }), 400, "invalid_field"),
        (WORKER, json!({ "minIntervalSeconds": -1 }), 400, "invalid_field"),
        (WORKER, json!({ "eventTypes": [] }), 400, "invalid_field"),
        (WORKER, json!({ "eventTypes": ["bad name"] }), 400, "invalid_command"),
        (LIMITED, json!({}), 403, "missing_scope"),
        (PRODUCER, json!({}), 403, "not_worker"),
        (GROUPED, json!({ "eventTypes": ["other"] }), 403, "command_not_allowed"),
        (GROUPED, json!({ "eventTypes": ["*"] }), 403, "command_not_allowed"),
        (GROUPED, json!({ "groupId": "g2" }), 403, "group_not_allowed"),
    ];
    for (token, fields, status, code) in cases {
        let reply = subscribe(&app, token, &receiver, fields.clone()).await;
        assert_eq!((reply.status, reply.code()), (status, code), "{fields}: {:?}", reply.body);
    }
    let grouped = subscribe(&app, GROUPED, &receiver, json!({})).await;
    assert_eq!(grouped.status, 200, "a grouped worker subscribes in its group by default");
}

#[tokio::test]
async fn a_worker_lists_at_most_100_commands_and_holds_at_most_100_subscriptions() {
    let app = server().await;
    let receiver = Receiver::start(&[]).await;
    let names = |n: usize| (0..n).map(|i| format!("c{i}")).collect::<Vec<_>>();
    let too_many = subscribe(&app, WORKER, &receiver, json!({ "eventTypes": names(101) })).await;
    assert_eq!((too_many.status, too_many.code()), (400, "invalid_field"), "{:?}", too_many.body);
    // 110 sent at once: exactly 100 pass.
    let body =
        json!({ "callbackUrl": format!("{}/ready", receiver.base), "eventTypes": names(100) });
    let sent: Vec<_> =
        (0..110).map(|_| app.spawn_post("/workers/subscriptions", WORKER, body.clone())).collect();
    let (mut held, mut refused) = (Vec::new(), 0);
    for answer in sent {
        let answer = answer.await.unwrap();
        let status = answer.status().as_u16();
        let body: Value = answer.json().await.unwrap();
        match status {
            200 => held.push(body["subscriptionId"].as_str().unwrap().to_string()),
            409 if body["code"] == "too_many_subscriptions" => refused += 1,
            _ => panic!("{status} {body}"),
        }
    }
    assert_eq!((held.len(), refused), (100, 10));
    // Each of the 100 counted once per (known) command it names.
    app.create_simple("c99").await;
    let scrape = app.http.get(format!("{}/metrics", app.base)).send().await.unwrap();
    let text = scrape.text().await.unwrap();
    assert!(text.contains("codeq_subscriptions_active{command=\"c99\"} 100"), "{text}");

    let path = format!("/v1/codeq/workers/subscriptions/{}", held[0]);
    assert_eq!(app.call(Method::DELETE, &path, Some(WORKER), None).await.status, 204);
    assert_eq!(subscribe(&app, WORKER, &receiver, json!({})).await.status, 200, "room again");
}

#[tokio::test]
async fn a_grouped_worker_defaults_to_its_group() {
    let app = server().await;
    let receivers = [Receiver::start(&[]).await, Receiver::start(&[]).await];
    for receiver in &receivers {
        assert_eq!(subscribe(&app, GROUPED, receiver, json!({})).await.status, 200);
    }
    ready_round(&app, "allowed").await;
    let told: usize = receivers.iter().map(|r| r.received().len()).sum();
    assert_eq!(told, 1, "one member of group g1");
}

/// A subscriber of `command` whose notifications the test reads.
async fn listening(app: &TestApp, command: &str) -> Receiver {
    let receiver = Receiver::start(&[]).await;
    subscribed(app, &receiver, json!({ "eventTypes": [command] })).await;
    receiver
}

/// The depths of every notification so far.
fn depths(receiver: &Receiver) -> Vec<u64> {
    receiver.received().iter().map(|r| r.json()["queueDepth"].as_u64().unwrap()).collect()
}

#[tokio::test]
async fn a_batch_of_new_tasks_is_one_notification_with_its_depth() {
    let app = server().await;
    let receiver = listening(&app, "batch").await;
    let tasks: Vec<Value> =
        (0..3).map(|n| json!({ "command": "batch", "payload": { "n": n } })).collect();
    let before = app.notifier_handled();
    assert_eq!(app.post("/tasks/batch", PRODUCER, json!({ "tasks": tasks })).await.status, 200);
    app.wait_for_notifier(before + 1).await;
    // A fourth task finds the queue non-empty: no news.
    app.create_simple("batch").await;
    let barrier = listening(&app, "barrier").await;
    ready_round(&app, "barrier").await;
    assert_eq!(barrier.received().len(), 1);
    assert_eq!(depths(&receiver), vec![3]);
}

#[tokio::test]
async fn a_delayed_task_coming_due_notifies() {
    let app = server().await;
    let receiver = listening(&app, "later").await;
    app.create(json!({ "command": "later", "payload": {}, "delaySeconds": 30 })).await;
    let before = app.notifier_handled();
    app.advance(30);
    app.wait_for_notifier(before + 1).await;
    assert_eq!(depths(&receiver), vec![1]);
}

#[tokio::test]
async fn a_nack_delay_elapsing_notifies() {
    let app = server().await;
    let receiver = listening(&app, "retry").await;
    let task = app.create(json!({ "command": "retry", "payload": {} })).await;
    let id = task["id"].as_str().unwrap();
    receiver.wait_for(1).await;
    app.claim_ok(WORKER, &["retry"]).await;
    let nack = app.post(&format!("/tasks/{id}/nack"), WORKER, json!({ "delaySeconds": 20 })).await;
    assert_eq!(nack.status, 200);
    let before = app.notifier_handled();
    app.advance(20);
    app.wait_for_notifier(before + 1).await;
    assert_eq!(depths(&receiver), vec![1, 1]);
}

#[tokio::test]
async fn an_abandon_notifies() {
    let app = server().await;
    let receiver = listening(&app, "giveback").await;
    let task = app.create(json!({ "command": "giveback", "payload": {} })).await;
    let id = task["id"].as_str().unwrap();
    receiver.wait_for(1).await;
    app.claim_ok(WORKER, &["giveback"]).await;
    let before = app.notifier_handled();
    assert_eq!(app.post(&format!("/tasks/{id}/abandon"), WORKER, json!({})).await.status, 200);
    app.wait_for_notifier(before + 1).await;
    assert_eq!(depths(&receiver), vec![1, 1]);
}

#[tokio::test]
async fn an_expired_lease_notifies() {
    let app = server().await;
    let receiver = listening(&app, "lapse").await;
    app.create(json!({ "command": "lapse", "payload": {}, "maxAttempts": 3 })).await;
    receiver.wait_for(1).await;
    let claim = json!({ "commands": ["lapse"], "leaseSeconds": 5 });
    assert_eq!(app.post("/tasks/claim", WORKER, claim).await.status, 200);
    let before = app.notifier_handled();
    app.advance(6);
    app.wait_for_notifier(before + 1).await;
    assert_eq!(depths(&receiver), vec![1, 1]);
}

#[tokio::test]
async fn a_guarded_server_refuses_private_targets_and_never_calls_them() {
    let app =
        TestApp::spawn_with(|config| config.subscription_min_interval_seconds = 0, true).await;
    let receiver = Receiver::start(&[]).await;
    for target in [
        "http://127.0.0.1:9/x",
        "http://10.0.0.1/x",
        "http://172.16.0.1/x",
        "http://192.168.0.1/x",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:9/x",
        "http://[fc00::1]/x",
    ] {
        let reply =
            app.post("/workers/subscriptions", WORKER, json!({ "callbackUrl": target })).await;
        assert_eq!((reply.status, reply.code()), (400, "invalid_field"), "{target}");
        assert!(reply.str("error").contains("private address"), "{target}: {:?}", reply.body);
    }
    let by_name = format!("http://localhost:{}/ready", receiver.port);
    let reply = app
        .post(
            "/workers/subscriptions",
            WORKER,
            json!({ "callbackUrl": by_name, "eventTypes": ["x"] }),
        )
        .await;
    assert_eq!(reply.status, 200, "a host name is checked when it is called");
    ready_round(&app, "x").await;
    assert!(receiver.received().is_empty(), "the receiver saw nothing");
}

#[tokio::test]
async fn a_subscription_survives_a_restart_until_its_ttl() {
    let app = server().await;
    let receiver = Receiver::start(&[]).await;
    let id =
        subscribed(&app, &receiver, json!({ "eventTypes": ["kept"], "ttlSeconds": 600 })).await;
    let dir = app.stop().await;
    let mut config = TestApp::config(dir.path());
    config.webhook_allow_private_networks = true;
    let app = TestApp::start(config, dir, false).await;
    let renewal =
        app.post(&format!("/workers/subscriptions/{id}/heartbeat"), WORKER, json!({})).await;
    assert_eq!(renewal.status, 200, "{:?}", renewal.body);
    app.create_simple("kept").await;
    assert_eq!(receiver.wait_for(1).await[0].json()["eventType"], "kept");
}

#[tokio::test]
async fn work_still_ready_at_a_restart_is_told_after_it() {
    let app = server().await;
    let receiver = Receiver::start(&[]).await;
    subscribed(&app, &receiver, json!({ "eventTypes": ["held"], "minIntervalSeconds": 10 })).await;
    subscribed(&app, &receiver, json!({ "eventTypes": ["emptied", "later"] })).await;
    ready_round(&app, "emptied").await;
    ready_round(&app, "held").await;
    // Ready again inside the interval: held back when the server stops.
    let before = app.notifier_handled();
    app.create_simple("held").await;
    app.wait_for_notifier(before + 1).await;
    assert_eq!(receiver.received().len(), 2, "throttled");

    let dir = app.stop().await;
    let mut config = TestApp::config(dir.path());
    config.webhook_allow_private_networks = true;
    config.webhook_hmac_secret = Some(codeq_server::config::Secret::new(SECRET));
    let app = TestApp::start(config, dir, false).await;
    app.wait_for_notifier(1).await;
    // News owed at the start go out before any later news.
    app.create_simple("later").await;

    let got = bodies(&receiver.wait_for(4).await);
    let told: Vec<(&Value, &Value)> =
        got[2..].iter().map(|body| (&body["eventType"], &body["queueDepth"])).collect();
    assert_eq!(told, [(&json!("held"), &json!(1)), (&json!("later"), &json!(1))]);
}
