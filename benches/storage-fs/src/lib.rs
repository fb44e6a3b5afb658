//! Benchmarks only: see `benches/storage_fs.rs` and docs/benchmarks.md.
