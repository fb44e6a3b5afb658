#![doc = include_str!("../README.md")]

pub mod auth;
pub mod db;
mod harness;
pub mod jobs;
pub mod realtime;
pub mod storage;

pub use harness::{factory, Case, CaseFn, CaseOutcome, CaseReport, Factory, Failure, Report};

/// The result of one case body.
pub type CaseResult = Result<(), Failure>;

/// Fails the case with a message unless `cond` holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !($cond) {
            return Err($crate::Failure::new(format!("{} (at {}:{})", format!($($arg)+), file!(), line!())));
        }
    };
    ($cond:expr) => {
        if !($cond) {
            return Err($crate::Failure::new(format!("check failed: {} (at {}:{})", stringify!($cond), file!(), line!())));
        }
    };
}

/// Fails the case unless the two values are equal, showing both.
#[macro_export]
macro_rules! ensure_eq {
    ($left:expr, $right:expr $(,)?) => {
        $crate::ensure_eq!($left, $right, "{} == {}", stringify!($left), stringify!($right))
    };
    ($left:expr, $right:expr, $($arg:tt)+) => {
        match (&$left, &$right) {
            (l, r) => {
                if l != r {
                    return Err($crate::Failure::new(format!(
                        "{}: left = {:?}, right = {:?} (at {}:{})",
                        format!($($arg)+), l, r, file!(), line!()
                    )));
                }
            }
        }
    };
}

/// Fails the case unless `result` is an error of `kind`.
pub fn expect_kind<T: std::fmt::Debug>(
    result: Result<T, truststream_core::Error>,
    kind: truststream_core::ErrorKind,
    what: &str,
) -> CaseResult {
    match result {
        Err(e) if e.kind() == kind => Ok(()),
        Err(e) => Err(Failure::new(format!(
            "{what}: expected a {kind} error, got {} error: {e}",
            e.kind()
        ))),
        Ok(v) => Err(Failure::new(format!(
            "{what}: expected a {kind} error, got Ok({v:?})"
        ))),
    }
}
