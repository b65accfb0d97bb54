//! Logging set-up, and the buffer log lines pass through on their way to
//! stderr.
//!
//! A request is logged once when it is answered; writing that line to
//! stderr on the request's own thread cost a system call per request (and
//! a stall whenever stderr was slow to drain). Lines are instead appended
//! to a shared buffer, and a thread of their own writes whatever has
//! gathered with one call. The thread lingers 10 ms after the first
//! line of a batch, so that under load a write carries hundreds of lines
//! and a caller wakes the thread once per batch, not once per line. Order
//! is kept. The buffer is bounded: a writer that finds it full waits for
//! the thread to drain it (as a direct write to a full pipe would), so
//! nothing is dropped. [`flush`] writes what is left before the process
//! exits.

use std::io::Write;
use std::sync::{Condvar, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;

use crate::config::Config;

mod line;

/// Bytes of log lines that may wait before writers wait for the thread.
const MAX_PENDING_BYTES: usize = 4 * 1024 * 1024;

/// Bytes after which the thread writes without waiting out its linger.
const EAGER_BYTES: usize = 256 * 1024;

/// How long the thread gathers lines after the first of a batch: the
/// most a line waits on its way to stderr.
const LINGER: Duration = Duration::from_millis(10);

/// Lines waiting for the writer thread.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    /// The thread waits for a first line (a caller must wake it).
    idle: bool,
    /// The thread is writing a batch (a flush waits for it).
    writing: bool,
    /// A flush waits: the thread writes at once.
    flushing: bool,
    /// Callers waiting for room or for a flush to end.
    waiting: usize,
}

impl Pending {
    fn ready_to_write(&self) -> bool {
        self.flushing || self.bytes.len() >= EAGER_BYTES
    }
}

/// The buffer between the log's callers and stderr.
#[derive(Default)]
struct Sink {
    pending: Mutex<Pending>,
    /// Wakes the thread (a first line, a full buffer, a flush).
    to_thread: Condvar,
    /// Wakes callers (room in the buffer, a batch written).
    to_callers: Condvar,
}

static SINK: OnceLock<Sink> = OnceLock::new();

impl Sink {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn append(&self, line: &[u8]) {
        let mut pending = self.lock();
        while pending.bytes.len() >= MAX_PENDING_BYTES {
            pending = self.wait_as_caller(pending);
        }
        pending.bytes.extend_from_slice(line);
        let wake = std::mem::take(&mut pending.idle) || pending.bytes.len() >= EAGER_BYTES;
        drop(pending);
        if wake {
            self.to_thread.notify_one();
        }
    }

    fn wait_as_caller<'a>(
        &self,
        mut pending: std::sync::MutexGuard<'a, Pending>,
    ) -> std::sync::MutexGuard<'a, Pending> {
        pending.waiting += 1;
        let mut pending = self.to_callers.wait(pending).unwrap_or_else(PoisonError::into_inner);
        pending.waiting -= 1;
        pending
    }

    /// The writer thread: waits for a first line, gathers more for
    /// [`LINGER`], writes the batch to `out` in one call.
    fn drain(&self, out: &mut impl Write) {
        loop {
            let batch = self.next_batch();
            // Nothing to do about a failed write to stderr but go on.
            let _ = out.write_all(&batch);
            let _ = out.flush();
            let mut pending = self.lock();
            pending.writing = false;
            if pending.waiting > 0 {
                self.to_callers.notify_all();
            }
        }
    }

    fn next_batch(&self) -> Vec<u8> {
        let mut pending = self.lock();
        while pending.bytes.is_empty() {
            pending.idle = true;
            pending = self.to_thread.wait(pending).unwrap_or_else(PoisonError::into_inner);
        }
        pending.idle = false;
        if !pending.ready_to_write() {
            pending = self
                .to_thread
                .wait_timeout_while(pending, LINGER, |pending| !pending.ready_to_write())
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        pending.writing = true;
        std::mem::take(&mut pending.bytes)
    }

    /// Waits until every line appended so far is written.
    fn flush(&self) {
        let mut pending = self.lock();
        while !pending.bytes.is_empty() || pending.writing {
            pending.flushing = true;
            self.to_thread.notify_one();
            pending = self.wait_as_caller(pending);
        }
        pending.flushing = false;
    }
}

/// The buffer and its writer thread, started on first use. `None` when
/// the thread cannot be started (logs then go straight to stderr).
fn sink() -> Option<&'static Sink> {
    static STARTED: OnceLock<bool> = OnceLock::new();
    let sink = SINK.get_or_init(Sink::default);
    let started = *STARTED.get_or_init(|| {
        let drain = || sink.drain(&mut std::io::stderr());
        std::thread::Builder::new().name("codeq-log".into()).spawn(drain).is_ok()
    });
    started.then_some(sink)
}

fn to_sink(line: &[u8]) {
    if let Some(sink) = SINK.get() {
        sink.append(line);
    }
}

fn to_stderr(line: &[u8]) {
    // Nothing to do about a failed write to stderr but go on.
    let _ = std::io::stderr().write_all(line);
}

/// Sends log lines to stderr at `logLevel` in `logFormat` (`RUST_LOG`,
/// when set, wins), without colours.
pub fn init(config: &Config) {
    let level = config.log_level.to_string();
    let (filter, refused) = log_filter(&level, std::env::var("RUST_LOG").ok());
    let output: line::Output = if sink().is_some() { to_sink } else { to_stderr };
    let subscriber = tracing_subscriber::registry()
        .with(filter)
        .with(line::Lines::new(config.log_format, output));
    // Set once per process; a second call (tests) keeps the first.
    let _ = tracing::subscriber::set_global_default(subscriber);
    if let Some(why) = refused {
        tracing::warn!("RUST_LOG is not a filter ({why}): logging at logLevel {level}");
    }
}

/// The filter of `rust_log` (`RUST_LOG`), else of `level`: an empty
/// `RUST_LOG` counts as unset (as an empty setting does everywhere; as a
/// filter it would turn every line off, errors too), and one that is not a
/// filter is refused, with why.
fn log_filter(level: &str, rust_log: Option<String>) -> (EnvFilter, Option<String>) {
    match rust_log.filter(|directives| !directives.trim().is_empty()) {
        None => (EnvFilter::new(level), None),
        Some(directives) => match EnvFilter::try_new(&directives) {
            Ok(filter) => (filter, None),
            Err(error) => (EnvFilter::new(level), Some(format!("{directives:?}: {error}"))),
        },
    }
}

/// Writes every log line still buffered (before the process exits).
pub fn flush() {
    if let Some(sink) = SINK.get() {
        sink.flush();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::filter::LevelFilter;

    use super::*;

    #[test]
    fn an_empty_rust_log_is_unset_and_one_that_is_no_filter_is_refused() {
        let most = |(filter, refused): (EnvFilter, Option<String>)| {
            (filter.max_level_hint(), refused.is_some())
        };

        assert_eq!(most(log_filter("info", None)), (Some(LevelFilter::INFO), false));
        assert_eq!(most(log_filter("info", Some(String::new()))), (Some(LevelFilter::INFO), false));
        assert_eq!(most(log_filter("info", Some("  ".into()))), (Some(LevelFilter::INFO), false));
        assert_eq!(most(log_filter("info", Some("warn".into()))), (Some(LevelFilter::WARN), false));
        assert_eq!(
            most(log_filter("warn", Some("garbage=[[[".into()))),
            (Some(LevelFilter::WARN), true)
        );
    }

    /// A writer that keeps what it is given, and counts the writes.
    #[derive(Clone, Default)]
    struct Kept(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Kept {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let mut kept = self.0.lock().unwrap();
            kept.0.extend_from_slice(bytes);
            kept.1 += 1;
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_arrives_in_order_and_a_flush_waits_for_them() {
        let sink: &'static Sink = Box::leak(Box::default());
        let kept = Kept::default();
        let mut out = kept.clone();
        std::thread::spawn(move || sink.drain(&mut out));
        let writers: Vec<_> = (0..4)
            .map(|writer| {
                std::thread::spawn(move || {
                    for n in 0..2500 {
                        sink.append(format!("{writer} {n}\n").as_bytes());
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        sink.flush();
        let (bytes, writes) = kept.0.lock().unwrap().clone();
        let text = String::from_utf8(bytes).unwrap();
        let mut last = [None; 4];
        for line in text.lines() {
            let (writer, n) = line.split_once(' ').unwrap();
            let (writer, n): (usize, usize) = (writer.parse().unwrap(), n.parse().unwrap());
            assert_eq!(last[writer].map_or(0, |previous: usize| previous + 1), n, "in order");
            last[writer] = Some(n);
        }
        assert_eq!(last, [Some(2499); 4], "every line, once flushed");
        assert!(writes <= 10_000, "batched: {writes} writes");
    }
}
