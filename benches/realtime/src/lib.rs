//! The realtime fan-out benchmark lives in `benches/fanout.rs`; run it with
//! `cargo bench -p truststream-bench-realtime` (see `docs/benchmarks.md`).
//! This library holds the helpers the bench binaries share.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch: the send and receipt stamps, which
/// cross processes (and the Node server's `performance` clock).
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The resident set size of process `pid` in bytes (`/proc/<pid>/statm`,
/// 4 KiB pages); 0 when it cannot be read.
pub fn rss_of(pid: u32) -> u64 {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// The environment variable `name` as a number, or `default` when unset or
/// not a number.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
