//! The store's own thread: a single-threaded runtime that runs the
//! connection to Redis (reading and parsing its answers), the merged calls
//! and the events listener, until the store stops.
//!
//! On the request threads these tasks would wait in line behind every
//! ready HTTP connection: under load an answer from Redis sat unread for
//! milliseconds, holding one of a script's few places in flight
//! (`batch.rs`) while Redis had nothing to do. On a thread of their own
//! they run as soon as Redis answers, as the embedded store's committer
//! does on its (docs/performance.md, "Redis backend").

use std::io;

use tokio::runtime::{Builder, Handle};
use tokio_util::sync::CancellationToken;

/// Starts the thread; it runs what is spawned on the handle answered until
/// `stop` fires, then drops what is left.
pub fn start(stop: CancellationToken) -> io::Result<Handle> {
    let runtime = Builder::new_current_thread().enable_all().build()?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name("codeq-redis".into())
        .spawn(move || runtime.block_on(stop.cancelled()))?;
    Ok(handle)
}
