//! The open-file limit (`RLIMIT_NOFILE`): every connection is a file
//! descriptor, and so is every file of the store.
//!
//! At start, `codeq serve` raises its soft limit to the hard limit (a
//! process may do so without privileges), since the common default soft
//! limit of 1024 would let about a thousand idle sockets stop every new
//! client. The connection cap is then kept below the limit, leaving room
//! for the store's files, so that running out of descriptors never turns
//! into a storage failure.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Descriptors kept for everything but connections: the journal's
/// segment files (one per 16 MiB of journal, open while it lives),
/// artifact files being written, the runtime's own, standard streams.
pub const RESERVED_FDS: u64 = 1024;

/// The soft limit to ask for when the hard limit is unlimited (Linux
/// refuses more than `fs.nr_open`, 1,048,576 by default).
const UNLIMITED_TARGET: u64 = 1 << 20;

/// Raises the soft open-file limit to the hard limit, logging both when the
/// soft one was lower.
pub fn raise_soft_limit() {
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    let Some(soft) = current else { return };
    let target = maximum.unwrap_or(UNLIMITED_TARGET);
    if soft >= target {
        return;
    }
    match setrlimit(Resource::Nofile, Rlimit { current: Some(target), maximum }) {
        Ok(()) => tracing::info!(
            soft_was = soft,
            soft = target,
            hard = maximum,
            "raised the soft open-file limit (RLIMIT_NOFILE) from {soft} to the hard limit {target}"
        ),
        Err(error) => tracing::warn!(
            %error,
            soft,
            hard = maximum,
            "cannot raise the soft open-file limit (RLIMIT_NOFILE) from {soft}"
        ),
    }
}

/// The connection cap: `max_connections`, lowered to what the current
/// open-file limit leaves after [`RESERVED_FDS`] (or half of it, for a
/// small limit), with a warning when lowered.
pub fn connection_cap(max_connections: u32) -> u32 {
    let Some(soft) = getrlimit(Resource::Nofile).current else { return max_connections };
    let cap = cap_for(max_connections, soft);
    if cap < max_connections {
        tracing::warn!(
            open_file_limit = soft,
            max_connections,
            cap,
            "the open-file limit ({soft}) leaves room for {cap} connections, fewer than \
             maxConnections ({max_connections}); raise the hard limit (ulimit -Hn, systemd \
             LimitNOFILE=) to serve more at once"
        );
    }
    cap
}

fn cap_for(max_connections: u32, open_file_limit: u64) -> u32 {
    let room = open_file_limit.saturating_sub(RESERVED_FDS).max(open_file_limit / 2);
    u32::try_from(room).unwrap_or(u32::MAX).min(max_connections).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_room_for_the_store() {
        assert_eq!(cap_for(10_000, 1_048_576), 10_000);
        assert_eq!(cap_for(10_000, 20_000), 10_000);
        assert_eq!(cap_for(10_000, 8_192), 8_192 - 1_024);
        assert_eq!(cap_for(10_000, 1_024), 512, "half of a small limit");
        assert_eq!(cap_for(10_000, 1), 1);
        assert_eq!(cap_for(20, 1_024), 20);
    }
}
