//! Bounded password hashing under abuse: at most `max_concurrent` argon2
//! hashes at once, a bounded queue with a deadline, `RateLimited` beyond it
//! (the same answer whether or not the email exists), sign-ups through the
//! same gate, and a burst of 500 sign-ins whose peak memory is measured in
//! a child process of this test binary.
#![allow(clippy::unwrap_used)] // test helpers, not library code

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use truststream_auth_jwt::{Argon2Cost, JwtAuth, JwtAuthConfig, PasswordHashing};
use truststream_core_auth::Error;
use truststream_core_auth::{Auth, AuthResult, ErrorKind, Session, SignIn, SignUp};

/// The test configuration with the default argon2id cost (19 MiB per hash)
/// and the given gate.
fn gated(max_concurrent: usize, max_queued: usize, queue_timeout_ms: u64) -> JwtAuthConfig {
    let mut c = config();
    c.argon2 = Argon2Cost::default();
    c.password_hashing = PasswordHashing {
        max_concurrent,
        max_queued,
        queue_timeout_ms,
    };
    c
}

/// Starts an unknown-email sign-in (a dummy-hash verification) and returns
/// once its hash runs, holding the gate's one slot for a while: the default
/// cost takes hundreds of milliseconds in a test build, the requests made
/// while it runs take microseconds.
async fn hold_the_slot(auth: &Arc<JwtAuth>) -> tokio::task::JoinHandle<AuthResult<Session>> {
    let busy = {
        let auth = auth.clone();
        tokio::spawn(async move {
            auth.sign_in(SignIn::new(unique_email(), "wrong password here"))
                .await
        })
    };
    let start = Instant::now();
    while auth.stats().hashes_running == 0 {
        assert!(start.elapsed() < Duration::from_secs(60), "no hash started");
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    busy
}

async fn release(busy: tokio::task::JoinHandle<AuthResult<Session>>) {
    assert!(
        !busy.is_finished(),
        "the slot was released before the refused requests were made: the case proved nothing"
    );
    let e = busy.await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated);
}

fn rate_limited(r: AuthResult<Session>, what: &str) -> Error {
    let e = r.map(|_| ()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RateLimited, "{what}: {e}");
    assert!(e.is_retryable(), "{what}");
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_gate_sign_ins_and_sign_ups_are_rate_limited_alike() {
    // One slot and no queue: while one hash runs, everything else that
    // needs a hash is refused at once.
    let mut c = gated(1, 0, 60_000);
    c.sign_in_rate_limit.max_failures = 1;
    let auth = Arc::new(provider(c).await);
    let known = unique_email();
    auth.sign_up(SignUp::new(&known, PASSWORD)).await.unwrap();

    let busy = hold_the_slot(&auth).await;
    let k = rate_limited(
        auth.sign_in(SignIn::new(&known, "wrong password here"))
            .await,
        "known email",
    );
    let u = rate_limited(
        auth.sign_in(SignIn::new(unique_email(), "wrong password here"))
            .await,
        "unknown email",
    );
    let good = rate_limited(
        auth.sign_in(SignIn::new(&known, PASSWORD)).await,
        "right password",
    );
    rate_limited(
        auth.sign_up(SignUp::new(unique_email(), PASSWORD)).await,
        "sign-up",
    );
    release(busy).await;
    // Whether the email exists or the password is right does not show.
    assert_eq!(k.to_string(), u.to_string());
    assert_eq!(k.to_string(), good.to_string());
    let stats = auth.stats();
    assert_eq!(stats.hashing_refused, 4);
    assert_eq!(stats.peak_concurrent_hashes, 1);

    // A refusal is no failed attempt: the account is not locked (one
    // failure would lock it), and the slot is free again.
    auth.sign_in(SignIn::new(&known, PASSWORD)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_waits_for_a_slot_until_its_deadline() {
    // A queue with a long deadline: the waiting sign-in gets the slot when
    // the running hash is done.
    let auth = Arc::new(provider(gated(1, 4, 60_000)).await);
    let email = unique_email();
    auth.sign_up(SignUp::new(&email, PASSWORD)).await.unwrap();
    let busy = hold_the_slot(&auth).await;
    let waiting = {
        let (auth, email) = (auth.clone(), email.clone());
        tokio::spawn(async move { auth.sign_in(SignIn::new(&email, PASSWORD)).await })
    };
    let start = Instant::now();
    while auth.stats().hashes_waiting == 0 {
        assert!(start.elapsed() < Duration::from_secs(60), "nothing queued");
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    release(busy).await;
    waiting.await.unwrap().unwrap();
    let stats = auth.stats();
    assert_eq!((stats.hashing_refused, stats.hashes_waiting), (0, 0));

    // A deadline of 1 ms: the wait ends long before the running hash does.
    let auth = Arc::new(provider(gated(1, 4, 1)).await);
    let busy = hold_the_slot(&auth).await;
    rate_limited(
        auth.sign_in(SignIn::new(&email, PASSWORD)).await,
        "after the queue deadline",
    );
    release(busy).await;
    assert_eq!(auth.stats().hashing_refused, 1);
}

/// Set in the child process that runs the burst (`TS_`, not `TRUSTSTREAM_`:
/// that prefix is the configuration's, and a loader would refuse the name).
const BURST_CHILD: &str = "TS_AUTH_JWT_BURST_CHILD";
const BURST_TEST: &str = "a_burst_of_500_sign_ins_stays_within_a_memory_bound";
const BURST: usize = 500;
/// Slots of the gate in the burst (fixed, so the bound does not depend on
/// the machine's core count).
const BURST_SLOTS: u64 = 2;
const MIB: u64 = 1024 * 1024;
/// The bound on the child's peak RSS growth during the burst: the hashing
/// memory of the slots (2 x 19 MiB), as much again for memory the allocator
/// keeps in the blocking threads' arenas, and 48 MiB for everything else
/// (500 tasks, the limiter's entries, the runtime): 124 MiB. Without the
/// gate the 500 verifications run at once on up to 512 blocking threads:
/// about 500 x 19 MiB = 9.3 GiB.
const RSS_BOUND: u64 = 2 * BURST_SLOTS * 19 * MIB + 48 * MIB;

/// A `/proc/self/status` field in bytes.
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"));
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib * 1024
}

/// The child: 500 concurrent sign-ins with unknown emails, then one
/// legitimate sign-in; prints what it measured as one JSON line.
fn burst_child() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let report = rt.block_on(async {
        let auth = Arc::new(provider(gated(BURST_SLOTS as usize, 64, 500)).await);
        let email = unique_email();
        auth.sign_up(SignUp::new(&email, PASSWORD)).await.unwrap();
        // Start the peak where the burst starts (Linux: "5" resets VmHWM to
        // the current RSS); the growth is measured from the RSS here.
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let rss_before = status_bytes("VmRSS:");
        let tasks: Vec<_> = (0..BURST)
            .map(|_| {
                let auth = auth.clone();
                tokio::spawn(async move {
                    auth.sign_in(SignIn::new(unique_email(), "wrong password here"))
                        .await
                })
            })
            .collect();
        let (mut unauthenticated, mut rate_limited, mut other) = (0, 0, Vec::new());
        for t in tasks {
            match t.await.unwrap() {
                Err(e) if e.kind() == ErrorKind::Unauthenticated => unauthenticated += 1,
                Err(e) if e.kind() == ErrorKind::RateLimited => rate_limited += 1,
                r => other.push(format!("{:?}", r.map(|_| ()))),
            }
        }
        let peak = status_bytes("VmHWM:");
        // A legitimate sign-in right after the burst.
        let after = auth.sign_in(SignIn::new(&email, PASSWORD)).await;
        let stats = auth.stats();
        json!({
            "rss_before": rss_before,
            "peak": peak,
            "unauthenticated": unauthenticated,
            "rate_limited": rate_limited,
            "other": other,
            "signed_in_after": after.is_ok(),
            "peak_concurrent_hashes": stats.peak_concurrent_hashes,
            "hashing_refused": stats.hashing_refused,
        })
    });
    println!("burst> {report}");
}

#[test]
fn a_burst_of_500_sign_ins_stays_within_a_memory_bound() {
    if std::env::var_os(BURST_CHILD).is_some() {
        burst_child();
        return;
    }
    // The burst runs in a process of its own, so that the peak RSS is the
    // burst's and no other test's.
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", BURST_TEST, "--nocapture", "--test-threads=1"])
        .env(BURST_CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the burst process failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = stdout
        .lines()
        .find_map(|l| l.split_once("burst> ").map(|(_, r)| r))
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or_else(|| panic!("no report from the burst process: {stdout}"));
    let n = |k: &str| report[k].as_u64().unwrap();
    let growth = n("peak").saturating_sub(n("rss_before"));
    eprintln!(
        "burst of {BURST}: peak RSS growth {} MiB (bound {} MiB), {report}",
        growth / MIB,
        RSS_BOUND / MIB
    );
    assert!(report["other"].as_array().unwrap().is_empty(), "{report}");
    assert_eq!(
        n("unauthenticated") + n("rate_limited"),
        BURST as u64,
        "{report}"
    );
    assert!(n("rate_limited") > 0, "{report}");
    assert_eq!(n("hashing_refused"), n("rate_limited"), "{report}");
    assert!(n("peak_concurrent_hashes") <= BURST_SLOTS, "{report}");
    assert!(
        growth <= RSS_BOUND,
        "peak RSS grew by {} MiB during the burst (bound {} MiB): {report}",
        growth / MIB,
        RSS_BOUND / MIB
    );
    assert!(report["signed_in_after"].as_bool().unwrap(), "{report}");
}
