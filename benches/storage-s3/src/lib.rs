//! The benchmark lives in `benches/s3.rs`; run it with
//! `cargo bench -p truststream-bench-storage-s3`.
