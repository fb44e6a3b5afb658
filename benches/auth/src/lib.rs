//! Benchmarks live in `benches/auth.rs` (`cargo bench -p truststream-bench-auth`).
