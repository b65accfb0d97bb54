//! The process's own metrics, as every Prometheus client library exports
//! them (`process_cpu_seconds_total`, memory, file descriptors, start
//! time), read from `/proc/self` at each scrape; and `codeq_build_info`,
//! the version and commit of the running binary. Off Linux (no `/proc`)
//! the process families are left out.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::metrics::encode_const;

/// The kernel's clock ticks per second in `/proc/<pid>/stat` (`USER_HZ`:
/// 100 on every architecture Linux builds for by default).
const TICKS_PER_SECOND: f64 = 100.0;

/// The version the binary gives itself (`0.1.0 (1a2b3c4d5e6f)`), set
/// once by `codeq serve`; the crate's version when not set.
static BUILD_VERSION: OnceLock<String> = OnceLock::new();

/// Sets the version `codeq_build_info` shows (the first call wins).
pub fn set_build_version(version: &str) {
    let _ = BUILD_VERSION.set(version.to_owned());
}

/// `(version, revision)` of the running binary.
fn build_labels() -> (String, String) {
    let full = BUILD_VERSION.get().map_or(env!("CARGO_PKG_VERSION"), String::as_str);
    match full.split_once(" (") {
        Some((version, rest)) => (version.to_owned(), rest.trim_end_matches(')').to_owned()),
        None => (full.to_owned(), String::new()),
    }
}

/// Encodes the process families and the build info at each scrape.
#[derive(Debug)]
pub struct ProcessCollector {
    started: f64,
}

impl Default for ProcessCollector {
    fn default() -> Self {
        let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Self { started: since_epoch.as_secs_f64() }
    }
}

/// What `/proc/self` says of the process now.
#[derive(Debug, Default, PartialEq)]
struct Usage {
    cpu_seconds: f64,
    virtual_bytes: u64,
    resident_bytes: u64,
    open_fds: u64,
    max_fds: Option<u64>,
}

impl Usage {
    /// Read from `/proc/self`; `None` where there is none.
    fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |fds| fds.count() as u64);
        let mut usage = parse(&stat, &status, &limits)?;
        usage.open_fds = open_fds;
        Some(usage)
    }
}

/// The usage in `/proc/self/stat`, `status` and `limits` texts.
fn parse(stat: &str, status: &str, limits: &str) -> Option<Usage> {
    // After the command name (in parentheses, which may hold anything),
    // the fields from the third (state) on.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let field = |number: usize| fields.get(number - 3)?.parse::<u64>().ok();
    let cpu_ticks = field(14)? + field(15)?;
    let resident_kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())?;
    let max_fds = limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok());
    Some(Usage {
        cpu_seconds: cpu_ticks as f64 / TICKS_PER_SECOND,
        virtual_bytes: field(23)?,
        resident_bytes: resident_kib * 1024,
        open_fds: 0,
        max_fds,
    })
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (version, revision) = build_labels();
        let labels = [("version", version), ("revision", revision)];
        let info = ConstGauge::new(1);
        let help = "The running binary: its version and the commit it was built from";
        let mut described =
            encoder.encode_descriptor("codeq_build_info", help, None, info.metric_type())?;
        info.encode(described.encode_family(&labels)?)?;
        let Some(usage) = Usage::read() else { return Ok(()) };
        let cpu = ConstCounter::new(usage.cpu_seconds);
        let help = "User and system CPU time spent, in seconds";
        encode_const(&mut encoder, "process_cpu_seconds", help, cpu)?;
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                usage.resident_bytes as f64,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                usage.virtual_bytes as f64,
            ),
            ("process_open_fds", "Open file descriptors", usage.open_fds as f64),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch, in seconds",
                self.started,
            ),
        ];
        let max_fds = usage.max_fds.map(|max| {
            ("process_max_fds", "Most open file descriptors allowed (soft limit)", max as f64)
        });
        for (name, help, value) in gauges.into_iter().chain(max_fds) {
            encode_const(&mut encoder, name, help, ConstGauge::new(value))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_texts_are_read_field_by_field() {
        // A command name with spaces and a parenthesis in it.
        let stat = "4242 (codeq (x) y) S 1 4242 4242 0 -1 4194560 1195 0 0 0 250 130 0 0 20 0 \
                    7 0 9077 123461632 2051 18446744073709551615";
        let status = "Name:\tcodeq\nVmRSS:\t    8204 kB\nThreads:\t7\n";
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            16384                524288               files\n";
        let usage = parse(stat, status, limits).unwrap();
        assert_eq!(
            usage,
            Usage {
                cpu_seconds: 3.8,
                virtual_bytes: 123_461_632,
                resident_bytes: 8204 * 1024,
                open_fds: 0,
                max_fds: Some(16384),
            }
        );
        assert_eq!(parse("garbage", status, limits), None);
    }

    #[test]
    fn the_build_version_gives_the_version_and_the_commit() {
        set_build_version("0.1.0 (1a2b3c4d5e6f)");
        assert_eq!(build_labels(), ("0.1.0".to_owned(), "1a2b3c4d5e6f".to_owned()));
    }
}
