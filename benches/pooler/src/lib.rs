//! Nothing here: the benchmark is `benches/pooler.rs`.
