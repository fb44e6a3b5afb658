//! Benchmarks only: see `benches/db.rs` and docs/benchmarks.md.
