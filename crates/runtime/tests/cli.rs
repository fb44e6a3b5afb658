//! The `truststream` binary, run as a user would: a temporary directory as
//! the working directory and no `TRUSTSTREAM_*` variables inherited.

use std::path::Path;
use std::process::{Command, Output};

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn truststream(cwd: &Path, env: &[(&str, &str)], args: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_truststream"));
    cmd.current_dir(cwd).args(args);
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

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

#[test]
fn check_on_the_embedded_default() {
    let dir = tmp();
    let r = truststream(dir.path(), &[], &["check"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let out = &r.stdout;
    assert!(out.contains("profile: default"), "{out}");
    assert!(out.contains("database: sqlite 0.1.0"), "{out}");
    assert!(dir.path().join("data/truststream.db").exists());
    assert!(out.contains("storage: fs 0.1.0"), "{out}");
    assert!(out.contains("realtime: memory 0.1.0"), "{out}");
    assert!(out.contains("auth: none"), "{out}");
    // capability lines and one health line per interface
    assert!(out.contains("  transactions: true"), "{out}");
    assert!(out.contains("  range_reads: true"), "{out}");
    assert!(out.contains("  presence: true"), "{out}");
    assert_eq!(out.matches("  health: ").count(), 4, "{out}");
    assert_eq!(out.matches("health: healthy (").count(), 3, "{out}");
}

/// `realtime.type = "ws"` starts the WebSocket hub, and `check` reports it.
#[cfg(feature = "realtime-ws")]
#[test]
fn check_reports_the_websocket_hub() {
    let dir = tmp();
    let r = truststream(
        dir.path(),
        &[
            ("TRUSTSTREAM_REALTIME__TYPE", "ws"),
            ("TRUSTSTREAM_REALTIME__LISTEN", "127.0.0.1:0"),
        ],
        &["check"],
    );
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let out = &r.stdout;
    assert!(out.contains("realtime: ws 0.1.0"), "{out}");
    assert!(out.contains("  remote: true"), "{out}");
    assert!(out.contains("  row_changes: true"), "{out}");
    assert_eq!(out.matches("health: healthy (").count(), 3, "{out}");
}

/// A provider that fails to build shows its cause, once: `Error`'s
/// `Display` no longer appends the source (issue 13), and the CLI still
/// names what went wrong.
#[cfg(feature = "realtime-ws")]
#[test]
fn a_failed_provider_shows_its_cause_once() {
    let dir = tmp();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let addr = taken.local_addr().expect("its address").to_string();
    let r = truststream(
        dir.path(),
        &[
            ("TRUSTSTREAM_REALTIME__TYPE", "ws"),
            ("TRUSTSTREAM_REALTIME__LISTEN", &addr),
        ],
        &["check"],
    );
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    let line = r
        .stderr
        .lines()
        .find(|l| l.starts_with("error: realtime:"))
        .unwrap_or_else(|| panic!("no realtime error line: {}", r.stderr));
    assert!(line.contains(&addr), "{line}");
    // The bind error ("Address already in use (os error 98)" on Linux).
    assert_eq!(line.matches("(os error ").count(), 1, "{line}");
}

#[test]
fn health_prints_one_line_per_service() {
    let dir = tmp();
    let r = truststream(dir.path(), &[], &["health"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", r.stdout);
    assert!(lines[0].starts_with("database: healthy ("), "{}", lines[0]);
    assert!(lines[0].ends_with(" ms)"), "{}", lines[0]);
    assert!(lines[1].starts_with("auth: not configured"), "{}", lines[1]);
    assert!(lines[2].starts_with("storage: healthy ("), "{}", lines[2]);
    assert!(lines[3].starts_with("realtime: healthy ("), "{}", lines[3]);
}

#[test]
fn unknown_database_type_fails_naming_key_value_and_known_types() {
    let dir = tmp();
    for cmd in ["check", "health"] {
        let r = truststream(
            dir.path(),
            &[("TRUSTSTREAM_DATABASE__TYPE", "oracle")],
            &[cmd],
        );
        assert_eq!(r.code, Some(1), "{cmd}: {}{}", r.stdout, r.stderr);
        let all = format!("{}{}", r.stdout, r.stderr);
        assert!(all.contains("database.type"), "{all}");
        assert!(all.contains("\"oracle\""), "{all}");
        assert!(all.contains("known types: memory"), "{all}");
    }
}

#[test]
fn config_reads_cwd_file_with_profile_and_redacts_secrets() {
    let dir = tmp();
    std::fs::write(
        dir.path().join("truststream.toml"),
        r#"
[default.storage]
buckets = ["avatars"]
signing_secret = "0123456789abcdef0123456789abcdef-TOPSECRET"

[production.storage]
max_object_size = 4096
"#,
    )
    .unwrap();
    let r = truststream(
        dir.path(),
        &[("TRUSTSTREAM_DATABASE__PASSWORD", "hunter2")],
        &["--profile", "production", "config"],
    );
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("config prints JSON");
    assert_eq!(v["profile"], "production");
    assert_eq!(v["file"], "truststream.toml");
    assert_eq!(v["storage"]["type"], "fs");
    assert_eq!(v["storage"]["max_object_size"], 4096);
    assert_eq!(v["storage"]["signing_secret"], "<redacted>");
    assert_eq!(v["database"]["password"], "<redacted>");
    assert!(!r.stdout.contains("TOPSECRET") && !r.stdout.contains("hunter2"));

    // The same file drives `check`: the profile's limit shows as a capability.
    let r = truststream(
        dir.path(),
        &[("TRUSTSTREAM_PROFILE", "production")],
        &["check"],
    );
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("profile: production"), "{}", r.stdout);
    assert!(r.stdout.contains("  max_object_size: 4096"), "{}", r.stdout);
}

#[test]
fn config_flag_overrides_env_and_malformed_file_is_named() {
    let dir = tmp();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[staging.storage]\nmax_object_size = 9\n").unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[staging.storage\n").unwrap();

    let r = truststream(
        dir.path(),
        &[("TRUSTSTREAM_CONFIG", bad.to_str().unwrap())],
        &[
            "--config",
            good.to_str().unwrap(),
            "--profile",
            "staging",
            "config",
        ],
    );
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("\"max_object_size\": 9"), "{}", r.stdout);

    let r = truststream(
        dir.path(),
        &[("TRUSTSTREAM_CONFIG", bad.to_str().unwrap())],
        &["check"],
    );
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("malformed configuration file"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("bad.toml"), "{}", r.stderr);
}

#[test]
fn bad_setting_fails_check_but_reports_the_others() {
    let dir = tmp();
    let r = truststream(
        dir.path(),
        &[("TRUSTSTREAM_STORAGE__SIGNING_SECRET", "short-secret")],
        &["check"],
    );
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("database: sqlite 0.1.0"), "{}", r.stdout);
    assert!(r.stdout.contains("storage: fs (not built)"), "{}", r.stdout);
    assert!(!format!("{}{}", r.stdout, r.stderr).contains("short-secret"));
}

#[test]
fn unknown_profile_is_an_error() {
    let dir = tmp();
    let r = truststream(dir.path(), &[], &["--profile", "prod", "health"]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("unknown profile \"prod\""),
        "{}",
        r.stderr
    );
}
