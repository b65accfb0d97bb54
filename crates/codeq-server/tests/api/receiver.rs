//! A webhook receiver on 127.0.0.1 for tests: records every request and
//! answers from a script (then 200); requests to `/held…` are answered
//! only once [`Receiver::release`] is called.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use serde_json::Value;

/// A request a receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|value| value.to_str().ok()).unwrap_or_default()
    }
}

/// A webhook receiver on 127.0.0.1 that records every request and answers
/// from a script (then 200).
#[derive(Clone)]
pub struct Receiver {
    pub base: String,
    pub port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    held: Arc<tokio::sync::Semaphore>,
}

impl Receiver {
    pub async fn start(script: &[u16]) -> Self {
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let script: Arc<Mutex<VecDeque<StatusCode>>> = Arc::new(Mutex::new(
            script.iter().map(|code| StatusCode::from_u16(*code).unwrap()).collect(),
        ));
        let held = Arc::new(tokio::sync::Semaphore::new(0));
        let (log, answers, gate) = (received.clone(), script.clone(), held.clone());
        let handler = move |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
            let (log, answers, gate) = (log.clone(), answers.clone(), gate.clone());
            async move {
                log.lock().unwrap().push(Received { path: uri.path().to_string(), headers, body });
                if uri.path().starts_with("/held") {
                    let _ = gate.acquire().await;
                }
                let status = answers.lock().unwrap().pop_front().unwrap_or(StatusCode::OK);
                if status == StatusCode::FOUND {
                    return (status, [(header::LOCATION, "/elsewhere")]).into_response();
                }
                status.into_response()
            }
        };
        let app = axum::Router::new().fallback(handler);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base: format!("http://127.0.0.1:{port}"), port, received, held }
    }

    /// Answers the requests to `/held…`, those waiting and those to come.
    pub fn release(&self) {
        self.held.add_permits(tokio::sync::Semaphore::MAX_PERMITS / 2);
    }

    /// The requests to `path` so far.
    pub fn received_at(&self, path: &str) -> usize {
        self.received().iter().filter(|request| request.path == path).count()
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until `count` requests arrived; returns them.
    pub async fn wait_for(&self, count: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let received = self.received();
            if received.len() >= count {
                return received;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {count} requests",
                received.len()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
