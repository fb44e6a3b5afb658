//! Benchmarks only: see `benches/serve.rs` and docs/benchmarks.md.
