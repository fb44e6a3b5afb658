//! The `truststream` binary, run as a user would: in a given working
//! directory, with no `TRUSTSTREAM_*` variables and no `RUST_LOG` inherited
//! (a developer's log level would add lines to stderr), only `env`.

use std::path::Path;
use std::process::{Command, Output};

/// What a run of the binary gave back.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `truststream args...` in `cwd` with only `env` of the configuration
/// variables set.
pub fn truststream(cwd: &Path, env: &[(&str, &str)], args: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_truststream"));
    cmd.current_dir(cwd).args(args).env_remove("RUST_LOG");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TRUSTSTREAM_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("the truststream binary runs");
    Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}
