//! Benchmark crate: see `benches/supabase_rest.rs` and docs/benchmarks.md.
