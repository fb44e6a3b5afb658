//! Benchmarks only: see `benches/layers.rs` and docs/benchmarks.md ("Layers").
