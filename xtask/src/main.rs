//! Workspace tasks, run as `cargo xtask <task>` (alias in `.cargo/config.toml`).
//!
//! - `conformance [--provider NAME ...] [--interface db|storage|realtime|auth] [--case SUBSTR]`
//! - `test`: the one test command (fmt, clippy, tests, doc tests, rustdoc
//!   warnings, package lists, conformance, deny)
//! - `run`: `truststream check` and `truststream health` on the embedded default

mod conformance;
mod package;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  conformance [--provider NAME ...] [--interface db|storage|realtime|auth] [--case SUBSTR]
        run the behaviour suites in-process against every known provider
        (or the selected ones); prints a table, then `N passed, N failed, N skipped`;
        fails on a failed case and on a skip off the provider's pinned list
  test  fmt check, clippy -D warnings, tests (nextest when installed), doc tests
        (READMEs and docs/*.md included), the facade on its `embedded` features alone,
        rustdoc -D warnings, package lists (README, licences, no leftovers per crate),
        conformance, cargo deny (output in $CARGO_TARGET_DIR/deny.log); stops at the first failing step
  run   `truststream check` then `truststream health` on the embedded default
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((task, rest)) = args.split_first() else {
        eprint!("{USAGE}");
        return ExitCode::FAILURE;
    };
    match task.as_str() {
        "conformance" => conformance_task(rest),
        "test" => test_task(rest),
        "run" | "embedded" => run_task(rest),
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        other => {
            eprintln!("error: unknown task {other:?}\n");
            eprint!("{USAGE}");
            ExitCode::FAILURE
        }
    }
}

fn conformance_task(args: &[String]) -> ExitCode {
    let selection = match conformance::Selection::parse(args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = conformance::run(&selection);
    conformance::stop_garage();
    match result {
        Ok(outcome) => {
            outcome.print();
            if outcome.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (xtask lives one level below it).
fn root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root());
    c
}

/// Whether `cargo <sub> --version` works (the subcommand is installed).
fn has_cargo_subcommand(sub: &str) -> bool {
    cargo()
        .args([sub, "--version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// One step's outcome, for the summary.
struct StepResult {
    name: String,
    outcome: String,
}

/// Runs `cargo args...`, printing it as it starts; `Err(exit code)` on failure.
fn run_cargo(name: &str, args: &[&str], results: &mut Vec<StepResult>) -> Result<(), u8> {
    run_cargo_with(name, args, &[], results)
}

/// [`run_cargo`] with extra environment variables.
fn run_cargo_with(
    name: &str,
    args: &[&str],
    env: &[(&str, &str)],
    results: &mut Vec<StepResult>,
) -> Result<(), u8> {
    let shown: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v:?} ")).collect();
    println!("\n==> {name}: {}cargo {}", shown.concat(), args.join(" "));
    let status = cargo().envs(env.iter().copied()).args(args).status();
    let (ok, code, outcome) = match status {
        Ok(s) if s.success() => (true, 0, "ok".to_string()),
        Ok(s) => {
            let code = s.code().map_or(1, |c| u8::try_from(c).unwrap_or(1).max(1));
            (false, code, format!("FAILED (exit code {code})"))
        }
        Err(e) => (false, 1, format!("FAILED (could not start cargo: {e})")),
    };
    results.push(StepResult {
        name: name.to_string(),
        outcome,
    });
    if ok {
        Ok(())
    } else {
        Err(code)
    }
}

fn test_task(args: &[String]) -> ExitCode {
    if let Some(a) = args.first() {
        eprintln!("error: `cargo xtask test` takes no arguments, got {a:?}");
        return ExitCode::FAILURE;
    }
    let mut results = Vec::new();
    let mut conformance_line: Option<String> = None;
    let outcome = test_steps(&mut results, &mut conformance_line);
    // The S3 tests and the conformance entry started (or reused) the shared
    // Garage server; the run that needed it stops it.
    conformance::stop_garage();
    println!("\n==> summary");
    for r in &results {
        println!("  {:<12} {}", r.name, r.outcome);
    }
    match (&outcome, &conformance_line) {
        (_, Some(line)) => {
            if let Err(code) = outcome {
                println!("stopped at the first failing step (exit code {code})");
            }
            println!("{line}");
        }
        (Err(code), None) => {
            println!("conformance not run: stopped at the first failing step (exit code {code})");
        }
        (Ok(()), None) => println!("conformance not run"),
    }
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => ExitCode::from(code),
    }
}

/// The npm packages the realtime-js tests run (`tests/realtime-js`, pinned
/// by its lockfile): installed with `npm ci` when missing. Without npm the
/// step fails under `CI=true`; otherwise the tests that need the packages
/// skip with a message saying so.
fn node_packages(results: &mut Vec<StepResult>) -> Result<(), u8> {
    // Each project: its directory, a package `npm ci` installs, and the
    // tests that skip without it.
    let projects = [
        ("tests/realtime-js", "@supabase/realtime-js", "realtime-js"),
        ("tests/supabase-js", "@supabase/supabase-js", "supabase-js"),
        ("tests/socketio-js", "socket.io-client", "realtime-socketio"),
    ];
    for (path, package, tests) in projects {
        node_project(results, path, package, tests)?;
    }
    Ok(())
}

/// `npm ci` in `path` when its `node_modules` lacks `package`.
fn node_project(
    results: &mut Vec<StepResult>,
    path: &str,
    package: &str,
    tests: &str,
) -> Result<(), u8> {
    let dir = root().join(path);
    let name = format!("npm packages ({path})");
    if dir.join("node_modules").join(package).is_dir() {
        results.push(StepResult {
            name,
            outcome: "ok (installed)".into(),
        });
        return Ok(());
    }
    println!("\n==> npm packages: npm ci in {}", dir.display());
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .status();
    let ci = truststream_core::in_ci();
    let outcome = match status {
        Ok(s) if s.success() => "ok".to_string(),
        Ok(s) => format!("FAILED (npm ci exited with {s})"),
        Err(e) => format!("FAILED (could not run npm: {e})"),
    };
    let failed = outcome.starts_with("FAILED");
    results.push(StepResult {
        name,
        outcome: if failed && !ci {
            format!("{outcome}; the {tests} tests will skip")
        } else {
            outcome
        },
    });
    if failed && ci {
        return Err(1);
    }
    Ok(())
}

fn test_steps(
    results: &mut Vec<StepResult>,
    conformance_line: &mut Option<String>,
) -> Result<(), u8> {
    run_cargo("fmt", &["fmt", "--all", "--check"], results)?;
    run_cargo(
        "clippy",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        results,
    )?;
    node_packages(results)?;
    if has_cargo_subcommand("nextest") {
        run_cargo("tests", &["nextest", "run", "--workspace"], results)?;
    } else {
        println!("\n(cargo-nextest is not installed: using cargo test)");
        run_cargo("tests", &["test", "--workspace"], results)?;
    }
    run_cargo("doc tests", &["test", "--workspace", "--doc"], results)?;
    // The README's "build only what you use" line: the facade with exactly
    // the embedded default's features must build a runtime that starts.
    run_cargo(
        "embedded feature set",
        &[
            "test",
            "-p",
            "truststream",
            "--no-default-features",
            "--features",
            "embedded",
            "--test",
            "embedded",
        ],
        results,
    )?;
    // Broken or private intra-doc links fail here, not on docs.rs.
    run_cargo_with(
        "rustdoc",
        &["doc", "--workspace", "--no-deps", "--quiet"],
        &[("RUSTDOCFLAGS", "-D warnings")],
        results,
    )?;

    println!("\n==> package lists: cargo package --list, per publishable crate");
    match package::check(cargo) {
        Ok(n) => results.push(StepResult {
            name: "package lists".into(),
            outcome: format!("ok ({n} crates: README, licences, no leftovers)"),
        }),
        Err(problems) => {
            for p in &problems {
                eprintln!("error: {p}");
            }
            results.push(StepResult {
                name: "package lists".into(),
                outcome: format!("FAILED ({} problem(s))", problems.len()),
            });
            return Err(1);
        }
    }

    println!("\n==> conformance: every provider, in-process");
    match conformance::run(&conformance::Selection::default()) {
        Ok(outcome) => {
            let line = outcome.print();
            let failed = outcome.report.failed();
            let skips = outcome.skip_problems.len();
            results.push(StepResult {
                name: "conformance".into(),
                outcome: if outcome.is_ok() {
                    "ok".into()
                } else {
                    format!("FAILED ({failed} case(s), {skips} skip(s) off their pinned lists)")
                },
            });
            *conformance_line = Some(line);
            if !outcome.is_ok() {
                return Err(1);
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            results.push(StepResult {
                name: "conformance".into(),
                outcome: format!("FAILED ({e})"),
            });
            return Err(1);
        }
    }

    if has_cargo_subcommand("deny") {
        run_deny(results)?;
    } else if truststream_core::in_ci() {
        eprintln!("error: cargo-deny is not installed; install it with `cargo install cargo-deny --locked`");
        results.push(StepResult {
            name: "deny".into(),
            outcome: "FAILED (cargo-deny not installed; required under CI)".into(),
        });
        return Err(1);
    } else {
        println!("\n==> deny: skipped (cargo-deny is not installed; `cargo install cargo-deny --locked`)");
        results.push(StepResult {
            name: "deny".into(),
            outcome: "skipped (cargo-deny not installed)".into(),
        });
    }
    Ok(())
}

/// `cargo deny check bans licenses sources`, its output kept in a file.
///
/// A passing run prints thousands of duplicate-version warnings; the log
/// gets the counts, the file path and, when the check fails, the errors.
fn run_deny(results: &mut Vec<StepResult>) -> Result<(), u8> {
    let args = [
        "deny", "--color", "never", "check", "bans", "licenses", "sources",
    ];
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let log = dir.join("deny.log");
    println!(
        "\n==> deny: cargo {} (full output in {})",
        args.join(" "),
        log.display()
    );
    let output = match cargo().args(args).output() {
        Ok(o) => o,
        Err(e) => {
            results.push(StepResult {
                name: "deny".into(),
                outcome: format!("FAILED (could not start cargo: {e})"),
            });
            return Err(1);
        }
    };
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&log, &text)) {
        eprintln!("warning: cannot write {}: {e}", log.display());
    }
    let (warnings, errors) = deny_counts(&text);
    if output.status.success() {
        println!("{warnings} warning(s), {errors} error(s)");
        results.push(StepResult {
            name: "deny".into(),
            outcome: format!("ok ({warnings} warning(s), in {})", log.display()),
        });
        return Ok(());
    }
    // The errors in full (each block runs to the next diagnostic), then
    // cargo-deny's closing per-check lines.
    let mut in_error = false;
    for line in text.lines() {
        if line.starts_with("error") {
            in_error = true;
        } else if line.starts_with("warning") {
            in_error = false;
        }
        let closing = ["advisories", "bans", "licenses", "sources"]
            .iter()
            .any(|c| line.trim_start().starts_with(&format!("{c} ")));
        if in_error || closing {
            eprintln!("{line}");
        }
    }
    eprintln!(
        "{warnings} warning(s), {errors} error(s); full output in {}",
        log.display()
    );
    results.push(StepResult {
        name: "deny".into(),
        outcome: format!("FAILED ({errors} error(s))"),
    });
    Err(output
        .status
        .code()
        .map_or(1, |c| u8::try_from(c).unwrap_or(1).max(1)))
}

/// The warnings and errors in cargo-deny's output (diagnostic headers,
/// with a code, `error[banned]:`, or without one, `error: ...`).
fn deny_counts(text: &str) -> (usize, usize) {
    let count = |p: &str| {
        text.lines()
            .filter(|l| l.starts_with(&format!("{p}[")) || l.starts_with(&format!("{p}:")))
            .count()
    };
    (count("warning"), count("error"))
}

fn run_task(args: &[String]) -> ExitCode {
    if let Some(a) = args.first() {
        eprintln!("error: `cargo xtask run` takes no arguments, got {a:?}");
        return ExitCode::FAILURE;
    }
    // A fresh directory and no TRUSTSTREAM_* variables: nothing but the
    // embedded default can be picked up.
    let dir = std::env::temp_dir().join(format!("truststream-embedded-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("error: cannot create {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    let manifest = root().join("Cargo.toml");
    let mut code = ExitCode::SUCCESS;
    for sub in ["check", "health"] {
        println!("==> truststream {sub} (embedded default)");
        let mut cmd = cargo();
        cmd.current_dir(&dir).args([
            "run",
            "--quiet",
            "--manifest-path",
            &manifest.to_string_lossy(),
            "-p",
            "truststream-runtime",
            "--bin",
            "truststream",
            "--",
            sub,
        ]);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("TRUSTSTREAM_") {
                cmd.env_remove(k);
            }
        }
        match cmd.status() {
            Ok(s) if s.success() => {}
            Ok(s) => {
                eprintln!("error: truststream {sub} failed ({s})");
                code = ExitCode::FAILURE;
                break;
            }
            Err(e) => {
                eprintln!("error: cannot run cargo: {e}");
                code = ExitCode::FAILURE;
                break;
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    code
}
