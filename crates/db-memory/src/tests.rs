//! Unit tests for what the conformance suite cannot see.
