//! jsonwebtoken's crypto backends side by side: token validation per
//! algorithm, aws-lc (`aws_lc_rs`) against RustCrypto (`rust_crypto`).
//!
//! ```text
//! cargo bench -p truststream-bench-jwt-backends --features rust_crypto
//! cargo bench -p truststream-bench-jwt-backends --features rust_crypto -- --rounds 9 --no-callgrind
//! ```
//!
//! jsonwebtoken uses one crypto provider per process, so every measurement
//! runs in a child process of this binary (`--worker <backend> <alg> <n>`)
//! that installs the backend it measures, signs one token, validates it
//! n/10 times untimed and then n times timed, and prints the nanoseconds.
//! Rounds alternate the backends (and which one goes first) so drift hits
//! both alike. Each row gives each backend's median round as validations
//! per second with the lowest and highest round, and the ratio of the
//! medians with the lowest and highest per-round ratio.
//!
//! With valgrind on the PATH (and no `--no-callgrind`), instructions per
//! validation are counted too: `--count <backend> <alg> <n>` under
//! `valgrind --tool=callgrind` at n and at 2n, (I(2n) - I(n)) / n, so the
//! process's setup cancels.
//!
//! Without the `rust_crypto` feature the build has aws-lc only (as the
//! workspace does) and only its column is measured.

use std::hint::black_box;
use std::process::Command;
use std::time::Instant;

use jsonwebtoken::Algorithm;
use truststream_bench_jwt_backends::{parse_algorithm, Backend, Fixture, ALGORITHMS};

/// Timed validations per worker process, per algorithm: each round is a
/// few tenths of a second on the slower backend.
fn iterations(alg: Algorithm) -> u64 {
    match alg {
        Algorithm::HS256 => 100_000,
        Algorithm::RS256 => 3_000,
        _ => 2_000,
    }
}

/// Validations per callgrind run (the run at 2n follows).
fn counted(alg: Algorithm) -> u64 {
    match alg {
        Algorithm::HS256 => 2_000,
        _ => 100,
    }
}

fn fixture(backend: &str, alg: &str) -> Fixture {
    let b = Backend::parse(backend).unwrap_or_else(|| panic!("unknown backend {backend:?}"));
    let a = parse_algorithm(alg).unwrap_or_else(|| panic!("unknown algorithm {alg:?}"));
    b.install().expect("install the provider");
    Fixture::new(a).expect("fixture")
}

/// A child: one timed round.
fn worker(backend: &str, alg: &str, n: u64) {
    let f = fixture(backend, alg);
    for _ in 0..n / 10 {
        black_box(f.validate(black_box(&f.token)).expect("valid"));
    }
    let start = Instant::now();
    for _ in 0..n {
        black_box(f.validate(black_box(&f.token)).expect("valid"));
    }
    println!("{}", start.elapsed().as_nanos());
}

/// A child under callgrind: n validations, nothing timed.
fn count(backend: &str, alg: &str, n: u64) {
    let f = fixture(backend, alg);
    for _ in 0..n {
        black_box(f.validate(black_box(&f.token)).expect("valid"));
    }
}

fn child(args: &[&str]) -> Command {
    let exe = std::env::current_exe().expect("current exe");
    let mut c = Command::new(exe);
    c.args(args);
    c
}

/// One timed round in a fresh process: validations per second.
fn round(b: Backend, alg: Algorithm, n: u64) -> f64 {
    let out = child(&["--worker", b.name(), &format!("{alg:?}"), &n.to_string()])
        .output()
        .expect("start the worker");
    assert!(
        out.status.success(),
        "worker {} {alg:?} failed: {}",
        b.name(),
        String::from_utf8_lossy(&out.stderr)
    );
    let ns: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("the worker prints nanoseconds");
    n as f64 / (ns / 1e9)
}

/// Instructions callgrind collected for `n` validations in one process.
fn instructions(b: Backend, alg: Algorithm, n: u64) -> Option<u64> {
    let exe = std::env::current_exe().ok()?;
    let out = Command::new("valgrind")
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(exe)
        .args(["--count", b.name(), &format!("{alg:?}"), &n.to_string()])
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "callgrind {} {alg:?} failed: {}",
            b.name(),
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    // "==pid== Collected : 123456789"
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .find_map(|l| {
            l.split_once("Collected :")
                .map(|(_, n)| n.trim().to_string())
        })
        .and_then(|n| n.parse().ok())
}

fn per_op(b: Backend, alg: Algorithm) -> Option<f64> {
    let n = counted(alg);
    let one = instructions(b, alg, n)?;
    let two = instructions(b, alg, 2 * n)?;
    Some(two.saturating_sub(one) as f64 / n as f64)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(*x), hi.max(*x))
        })
}

fn rate(x: f64) -> String {
    if x >= 10_000.0 {
        format!("{:.0}k", x / 1000.0)
    } else {
        format!("{x:.0}")
    }
}

fn instr(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else {
        format!("{:.1}k", x / 1e3)
    }
}

fn valgrind_found() -> bool {
    Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or_default();
    for (flag, run) in [
        ("--worker", worker as fn(&str, &str, u64)),
        ("--count", count),
    ] {
        if let Some(i) = args.iter().position(|a| a == flag) {
            let n = arg(i + 3).parse().expect("<backend> <alg> <n>");
            run(arg(i + 1), arg(i + 2), n);
            return;
        }
    }
    let rounds: usize = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(9);
    let callgrind = !args.iter().any(|a| a == "--no-callgrind") && valgrind_found();
    let backends = Backend::available();
    if backends.len() < 2 {
        println!(
            "(built without the rust_crypto feature: aws-lc only; for the side by side, \
             cargo bench -p truststream-bench-jwt-backends --features rust_crypto)"
        );
    }
    println!(
        "== jsonwebtoken::decode (signature + claims, auth-jwt's validation), \
         {rounds} rounds, each a fresh process per backend"
    );
    for alg in ALGORITHMS {
        let n = iterations(alg);
        let mut per: Vec<Vec<f64>> = vec![Vec::new(); backends.len()];
        for r in 0..rounds {
            // Alternate which backend goes first.
            for k in 0..backends.len() {
                let i = (k + r) % backends.len();
                per[i].push(round(backends[i], alg, n));
            }
        }
        let mut line = format!("{:<6}", format!("{alg:?}"));
        for (b, v) in backends.iter().zip(&per) {
            let (lo, hi) = min_max(v);
            line.push_str(&format!(
                "  {}: {}/s ({}–{})",
                b.name(),
                rate(median(v)),
                rate(lo),
                rate(hi)
            ));
        }
        if let [aws, rust] = per.as_slice() {
            let ratios: Vec<f64> = aws.iter().zip(rust).map(|(a, r)| a / r).collect();
            let (lo, hi) = min_max(&ratios);
            line.push_str(&format!(
                "  aws_lc_rs/rust_crypto {:.2}x ({:.2}–{:.2})",
                median(aws) / median(rust),
                lo,
                hi
            ));
        }
        println!("{line}");
        if callgrind {
            let counts: Vec<Option<f64>> = backends.iter().map(|b| per_op(*b, alg)).collect();
            let mut line = format!("{:<6}", "");
            for (b, c) in backends.iter().zip(&counts) {
                let c = c.map_or("n/a".to_string(), instr);
                line.push_str(&format!("  {}: {c} instructions/validation", b.name()));
            }
            if let [Some(aws), Some(rust)] = counts.as_slice() {
                line.push_str(&format!("  rust_crypto/aws_lc_rs {:.2}x", rust / aws));
            }
            println!("{line}");
        }
    }
    if !callgrind {
        println!("(no instruction counts: valgrind not found or --no-callgrind)");
    }
}
