//! The realtime fan-out benchmark lives in `benches/fanout.rs`; run it with
//! `cargo bench -p truststream-bench-realtime` (see `docs/benchmarks.md`).
