//! The store's own thread: a single-threaded runtime that runs the
//! connection to Redis (reading and parsing its answers), the merged calls
//! and the events listener, until the store is dropped.
//!
//! On the request threads these tasks would wait in line behind every
//! ready HTTP connection: under load an answer from Redis sat unread for
//! milliseconds, holding one of a script's few places in flight
//! (`batch.rs`) while Redis had nothing to do. On a thread of their own
//! they run as soon as Redis answers, as the embedded store's committer
//! does on its (docs/performance.md, "The store's own thread").

use std::io;
use std::sync::mpsc;

use tokio::runtime::{Builder, Handle};
use tokio_util::sync::CancellationToken;

/// Starts the thread; it runs what is spawned on the handle answered until
/// `end` fires, then drops what is left. The runtime is made on the thread
/// itself, so that a thread that cannot start leaves no runtime to drop
/// on the caller's (an async context, where dropping one panics).
pub fn start(end: CancellationToken) -> io::Result<Handle> {
    let (handle_sender, handle) = mpsc::sync_channel(1);
    std::thread::Builder::new().name("codeq-redis".into()).spawn(move || {
        match Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => {
                let _ = handle_sender.send(Ok(runtime.handle().clone()));
                runtime.block_on(end.cancelled());
            }
            Err(error) => {
                let _ = handle_sender.send(Err(error));
            }
        }
    })?;
    handle.recv().map_err(|_| io::Error::other("the thread ended before it started"))?
}
