//! `truststream migrate` benchmarks: see `benches/migrate.rs`.
