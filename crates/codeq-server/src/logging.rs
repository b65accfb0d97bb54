//! Logging set-up, and the buffer log lines pass through on their way to
//! stderr.
//!
//! A request is logged once when it is answered; writing that line to
//! stderr on the request's own thread cost a system call per request (and
//! a stall whenever stderr was slow to drain). Lines are instead appended
//! to a shared buffer, and a thread of their own writes whatever has
//! gathered with one call: under load, many lines per write; when idle,
//! each line at once. Order is kept. The buffer is bounded: a writer that
//! finds it full waits for the thread to drain it (as a direct write to a
//! full pipe would), so nothing is dropped. [`flush`] writes what is left
//! before the process exits.

use std::io::Write;
use std::sync::{Condvar, Mutex, OnceLock, PoisonError};

use tracing_subscriber::fmt::MakeWriter;

use crate::config::{Config, LogFormat};

/// Bytes of log lines that may wait before writers wait for the thread.
const MAX_PENDING_BYTES: usize = 4 * 1024 * 1024;

/// Lines waiting for the writer thread.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    /// The thread is writing a batch (a flush waits for it).
    writing: bool,
}

/// The buffer between the log's callers and stderr.
#[derive(Default)]
struct Sink {
    pending: Mutex<Pending>,
    /// Signalled when lines arrive (to the thread) and when a batch has
    /// been written (to writers waiting for room, and to a flush).
    changed: Condvar,
}

static SINK: OnceLock<Sink> = OnceLock::new();

impl Sink {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn append(&self, line: &[u8]) {
        let mut pending = self.lock();
        while pending.bytes.len() >= MAX_PENDING_BYTES {
            pending = self.changed.wait(pending).unwrap_or_else(PoisonError::into_inner);
        }
        let was_empty = pending.bytes.is_empty();
        pending.bytes.extend_from_slice(line);
        drop(pending);
        if was_empty {
            self.changed.notify_all();
        }
    }

    /// The writer thread: waits for lines, writes each batch to `out` in
    /// one call.
    fn drain(&self, out: &mut impl Write) {
        loop {
            let batch = {
                let mut pending = self.lock();
                while pending.bytes.is_empty() {
                    pending = self.changed.wait(pending).unwrap_or_else(PoisonError::into_inner);
                }
                pending.writing = true;
                std::mem::take(&mut pending.bytes)
            };
            // Nothing to do about a failed write to stderr but go on.
            let _ = out.write_all(&batch);
            let _ = out.flush();
            self.lock().writing = false;
            self.changed.notify_all();
        }
    }

    /// Waits until every line appended so far is written.
    fn flush(&self) {
        let mut pending = self.lock();
        while !pending.bytes.is_empty() || pending.writing {
            pending = self.changed.wait(pending).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// A line writer for `tracing_subscriber`: each event arrives formatted, in
/// one `write`.
struct SinkWriter(&'static Sink);

impl Write for SinkWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        self.0.append(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct MakeSinkWriter(&'static Sink);

impl<'a> MakeWriter<'a> for MakeSinkWriter {
    type Writer = SinkWriter;

    fn make_writer(&'a self) -> SinkWriter {
        SinkWriter(self.0)
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

/// Sends log lines to stderr at `logLevel` in `logFormat` (`RUST_LOG`,
/// when set, wins).
pub fn init(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(config.log_level.to_string()));
    // Colours only for a person at a terminal, never in a file or a pipe.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi);
    match (sink(), config.log_format) {
        // The request's span once per line (`span`), not again as a list.
        (Some(sink), LogFormat::Json) => {
            builder.json().with_span_list(false).with_writer(MakeSinkWriter(sink)).init()
        }
        (Some(sink), LogFormat::Text) => builder.with_writer(MakeSinkWriter(sink)).init(),
        (None, LogFormat::Json) => {
            builder.json().with_span_list(false).with_writer(std::io::stderr).init()
        }
        (None, LogFormat::Text) => builder.with_writer(std::io::stderr).init(),
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

    use super::*;

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
