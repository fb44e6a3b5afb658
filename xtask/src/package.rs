//! The `package lists` step: what each publishable crate would ship.
//!
//! Every crate is pinned and published on its own, so each package must
//! carry its README and both licence files, and nothing a test run or a
//! local run left in the source tree (a `data/` directory, SQLite files).

use std::process::Command;

/// A package's problems, one line each; empty when it is fine.
fn problems(files: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for required in ["README.md", "LICENSE-MIT", "LICENSE-APACHE"] {
        if !files.contains(&required) {
            out.push(format!("missing {required}"));
        }
    }
    for f in files {
        // `data/` at the crate's root is where a run keeps its database and
        // files (`./data`); a `tests/data/` fixture directory is fine.
        let leftover = f.starts_with("data/")
            || [".db", ".db-wal", ".db-shm", ".sqlite"]
                .iter()
                .any(|ext| f.ends_with(ext));
        if leftover {
            out.push(format!(
                "ships {f} (a run's leftover; remove it or exclude it)"
            ));
        }
    }
    out
}

/// The names of the workspace's publishable packages (`publish` not
/// `false`), from `cargo metadata`.
fn publishable(cargo: impl Fn() -> Command) -> Result<Vec<String>, String> {
    let out = cargo()
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .output()
        .map_err(|e| format!("could not run cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("cargo metadata printed no JSON: {e}"))?;
    let packages = meta["packages"].as_array().cloned().unwrap_or_default();
    Ok(packages
        .iter()
        // `publish`: null = anywhere, [] = nowhere (`publish = false`).
        .filter(|p| p["publish"].as_array().is_none_or(|r| !r.is_empty()))
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect())
}

/// Lists every publishable package and checks it; `Err` holds the
/// problems found, one line each.
pub(crate) fn check(cargo: impl Fn() -> Command) -> Result<usize, Vec<String>> {
    let names = publishable(&cargo).map_err(|e| vec![e])?;
    let mut all = Vec::new();
    for name in &names {
        let out = cargo()
            .args(["package", "--list", "--allow-dirty", "--quiet", "-p", name])
            .output();
        let out = match out {
            Ok(o) if o.status.success() => o,
            Ok(o) => {
                all.push(format!(
                    "{name}: cargo package --list failed: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ));
                continue;
            }
            Err(e) => {
                all.push(format!("{name}: could not run cargo package: {e}"));
                continue;
            }
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let files: Vec<&str> = text.lines().map(str::trim).collect();
        all.extend(problems(&files).into_iter().map(|p| format!("{name}: {p}")));
    }
    if all.is_empty() {
        Ok(names.len())
    } else {
        Err(all)
    }
}

#[cfg(test)]
mod tests {
    use super::problems;

    #[test]
    fn a_complete_package_has_no_problems() {
        let files = [
            "Cargo.toml",
            "README.md",
            "LICENSE-MIT",
            "LICENSE-APACHE",
            "src/lib.rs",
        ];
        assert!(problems(&files).is_empty());
    }

    #[test]
    fn leftovers_and_missing_licences_are_named() {
        let files = [
            "README.md",
            "LICENSE-MIT",
            "data/truststream.db",
            "tests/x.db-wal",
            "tests/data/fixture.json",
        ];
        let p = problems(&files);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].contains("LICENSE-APACHE"));
        assert!(p[1].contains("data/truststream.db"));
        assert!(p[2].contains("tests/x.db-wal"));
    }
}
