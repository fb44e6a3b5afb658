//! Cross-provider tests.
