//! The one rule for "are we running under CI?", shared by every test
//! support module, the provider test helpers and the xtask.

/// Name of the environment variable CI services set.
pub const CI_VAR: &str = "CI";

/// Whether the process runs under CI: the `CI` environment variable is set
/// to anything but empty, `0` or `false` (any case). GitHub Actions, GitLab
/// and most services set `CI=true`; some set `CI=1`; `.ci/run` sets
/// `CI=true`.
///
/// Under CI a test that needs a server (PostgreSQL, Garage, npm packages)
/// fails when the server is missing instead of skipping.
pub fn in_ci() -> bool {
    std::env::var(CI_VAR).is_ok_and(|v| is_ci_value(&v))
}

/// Whether a test that drives published npm packages can run: `node` is on
/// `PATH` and `dir/node_modules` holds every one of `packages`. When not, it
/// panics under CI ([`in_ci`]) and otherwise prints `SKIPPED <test>: ...`
/// with what to install, and answers `false`.
///
/// `test` names the test in those messages (`"the socket.io test"`).
pub fn node_packages_ready(test: &str, dir: &std::path::Path, packages: &[&str]) -> bool {
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let modules = dir.join("node_modules");
    let installed = packages.iter().all(|p| modules.join(p).is_dir());
    if node && installed {
        return true;
    }
    let what = if node {
        format!("the npm packages: run `npm ci` in {}", dir.display())
    } else {
        "Node.js 20 (`node` on PATH)".to_string()
    };
    if in_ci() {
        panic!("CI=true and {test} needs {what}");
    }
    eprintln!("SKIPPED {test}: it needs {what}");
    false
}

/// The rule of [`in_ci`] for one value of `CI`.
///
/// ```
/// use truststream_core::is_ci_value;
/// assert!(is_ci_value("true") && is_ci_value("1") && is_ci_value("TRUE") && is_ci_value("yes"));
/// assert!(!is_ci_value("") && !is_ci_value("0") && !is_ci_value("false") && !is_ci_value(" False "));
/// ```
pub fn is_ci_value(value: &str) -> bool {
    let v = value.trim();
    !(v.is_empty() || v == "0" || v.eq_ignore_ascii_case("false"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_and_true_are_both_ci() {
        for v in ["1", "true", "True", "yes", "on"] {
            assert!(is_ci_value(v), "{v}");
        }
        for v in ["", "0", "false", "FALSE", "  "] {
            assert!(!is_ci_value(v), "{v:?}");
        }
    }
}
