//! Jobs benchmarks: TrustStream's PostgreSQL jobs provider against apalis
//! (apalis-postgres 1.x) on the same PostgreSQL server; see
//! `benches/jobs.rs` and `docs/benchmarks.md`.
