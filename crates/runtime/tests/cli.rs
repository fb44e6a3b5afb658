//! The `truststream` binary, run as a user would: a temporary directory as
//! the working directory and no `TRUSTSTREAM_*` variables inherited.

mod common;

use common::truststream;

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

/// `truststream health` creates nothing: the embedded default's SQLite
/// file must exist first (`check` creates it, as the application does).
fn created_by_check(dir: &std::path::Path) {
    let r = truststream(dir, &[], &["check"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
}

/// On a fresh directory there is no database to check: `health` says so
/// (naming the file and how to create it), exits 1, and creates nothing.
#[test]
fn health_on_a_fresh_directory_creates_nothing_and_says_how_to_start() {
    let dir = tmp();
    let r = truststream(dir.path(), &[], &["health"]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("does not exist yet"), "{}", r.stdout);
    assert!(r.stdout.contains("truststream serve"), "{}", r.stdout);
    assert!(!dir.path().join("data/truststream.db").exists());
    // Nor the fs storage's root (data/storage): nothing under data/.
    assert!(!dir.path().join("data").exists());
}

#[test]
fn health_prints_a_row_per_configured_service_and_the_overall_status() {
    let dir = tmp();
    created_by_check(dir.path());
    let r = truststream(dir.path(), &[], &["health"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 6, "{}", r.stdout);
    let words = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    assert_eq!(
        words(lines[0]),
        ["service", "provider", "status", "time", "message"]
    );
    for (line, service, provider) in [
        (lines[1], "database", "sqlite"),
        (lines[2], "storage", "fs"),
        (lines[3], "realtime", "memory"),
    ] {
        let w = words(line);
        assert_eq!(w[..3], [service, provider, "healthy"], "{line}");
        assert_eq!(w[4], "ms", "{line}");
        assert!(w[3].parse::<f64>().is_ok(), "{line}");
    }
    assert_eq!(lines[4], "auth: not configured (not checked)");
    assert_eq!(lines[5], "overall: healthy (deadline 5000 ms)");
}

#[test]
fn health_json_has_the_overall_status_and_one_entry_per_configured_service() {
    let dir = tmp();
    created_by_check(dir.path());
    let r = truststream(dir.path(), &[], &["health", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON");
    assert_eq!(v["status"], "healthy", "{v}");
    assert_eq!(v["deadline_ms"], 5000, "{v}");
    assert!(
        v["checked_at_unix_ms"].as_u64().is_some_and(|t| t > 0),
        "{v}"
    );
    assert_eq!(v["not_configured"], serde_json::json!(["auth"]), "{v}");
    let services = v["services"].as_array().expect("services");
    let names: Vec<&str> = services
        .iter()
        .map(|s| s["service"].as_str().expect("a name"))
        .collect();
    assert_eq!(names, ["database", "storage", "realtime"], "{v}");
    for s in services {
        assert_eq!(s["status"], "healthy", "{s}");
        assert!(s["response_time_ms"].as_f64().is_some(), "{s}");
        assert!(s["provider"].is_string(), "{s}");
        assert!(s.get("message").is_some(), "{s}");
    }
}

/// A database server that accepts connections and never answers: the
/// check gives up at the deadline, says so, and the exit status is 1;
/// the other services are still checked (overall degraded).
#[cfg(feature = "db-postgres")]
#[test]
fn health_gives_up_on_a_service_at_the_deadline() {
    let dir = tmp();
    // The fs storage's root exists (a health check does not create it).
    std::fs::create_dir_all(dir.path().join("data/storage")).expect("test setup");
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let url = format!(
        "postgres://app:hunter2@{}/app",
        silent.local_addr().expect("its address")
    );
    let started = std::time::Instant::now();
    let r = truststream(
        dir.path(),
        &[
            ("TRUSTSTREAM_DATABASE__TYPE", "postgres"),
            ("TRUSTSTREAM_DATABASE__URL", &url),
        ],
        &["health", "--json", "--deadline-ms", "300"],
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert!(!r.stdout.contains("hunter2"), "{}", r.stdout);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON");
    assert_eq!(v["status"], "degraded", "{v}");
    assert_eq!(v["deadline_ms"], 300, "{v}");
    let db = &v["services"][0];
    assert_eq!(db["service"], "database", "{v}");
    assert_eq!(db["provider"], "postgres", "{v}");
    assert_eq!(db["status"], "unhealthy", "{v}");
    let message = db["message"].as_str().expect("a message");
    assert!(message.contains("within 300 ms"), "{message}");
    assert_eq!(v["services"][1]["status"], "healthy", "{v}");
    drop(silent);
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
        assert!(all.contains("known types: none, memory"), "{all}");
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

/// `check` lists each interface's layers outermost first (by rank, not by
/// the order they are set in), and names a bad layer key.
#[cfg(all(feature = "layer-metrics", feature = "layer-resilience"))]
#[test]
fn check_lists_the_layers_and_names_bad_layer_keys() {
    let dir = tmp();
    let file = dir.path().join("truststream.toml");
    std::fs::write(
        &file,
        "[default.database.layers]\nretry = { attempts = 4 }\nmetrics = true\n",
    )
    .expect("write the file");
    let r = truststream(dir.path(), &[], &["check"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let line = r
        .stdout
        .lines()
        .find(|l| l.starts_with("database: "))
        .expect("a database line");
    assert!(
        line.starts_with("database: sqlite 0.1.0, layers: metrics("),
        "{line}"
    );
    assert!(line.contains(") > retry("), "{line}");
    assert!(line.contains("attempts=4"), "{line}");
    assert!(
        r.stdout.contains("\nstorage: fs 0.1.0\n"),
        "no layers: {}",
        r.stdout
    );

    // An unknown layer, and a bad value, from the environment.
    for (var, value, key) in [
        (
            "TRUSTSTREAM_DATABASE__LAYERS__RETYR",
            "true",
            "unknown layer database.layers.retyr; known layers: ",
        ),
        (
            "TRUSTSTREAM_DATABASE__LAYERS__RETRY__ATTEMPTS",
            "lots",
            "database.layers.retry.attempts: ",
        ),
    ] {
        let r = truststream(dir.path(), &[(var, value)], &["check"]);
        assert_eq!(r.code, Some(1), "{var}: {}{}", r.stdout, r.stderr);
        let error = r
            .stderr
            .lines()
            .find(|l| l.starts_with("error: database: failed to build: "))
            .unwrap_or_else(|| panic!("no database error line: {}", r.stderr));
        assert!(error.contains(key), "{error}");
        assert!(
            error.ends_with("(set in the environment (TRUSTSTREAM_* variables))"),
            "{error}"
        );
        // The other interfaces are still checked.
        assert!(r.stdout.contains("\nstorage: fs 0.1.0\n"), "{}", r.stdout);
    }
}

/// `stats` runs its self-test on the configured (embedded default)
/// database and storage and prints the metrics, as a table or as JSON.
#[cfg(feature = "layer-metrics")]
#[test]
fn stats_prints_the_metrics_of_a_self_test_run() {
    let dir = tmp();
    let r = truststream(dir.path(), &[], &["stats", "--json", "--rows", "3"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON");
    assert_eq!(v["database"], "sqlite", "{v}");
    assert_eq!(v["storage"], "fs", "{v}");
    assert_eq!(v["failure"], serde_json::Value::Null, "{v}");
    let series = v["series"].as_array().expect("series");
    let calls = |interface: &str, op: &str| -> u64 {
        series
            .iter()
            .filter(|s| s["interface"] == interface && s["operation"] == op)
            .map(|s| s["count"].as_u64().expect("a count"))
            .sum()
    };
    assert_eq!(calls("database", "create"), 3, "{v}");
    assert_eq!(calls("database", "get"), 3, "{v}");
    assert_eq!(calls("storage", "upload"), 3, "{v}");
    assert_eq!(calls("storage", "download"), 3, "{v}");
    for s in series {
        assert!(s["p50_us"].as_u64().is_some(), "{s}");
        assert!(s["p99_us"].as_u64() >= s["p50_us"].as_u64(), "{s}");
    }

    let r = truststream(dir.path(), &[], &["stats", "--rows", "2"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let mut lines = r.stdout.lines();
    assert_eq!(
        lines.next(),
        Some("self-test: 2 rows on database \"sqlite\", 2 objects on storage \"fs\"")
    );
    let header: Vec<&str> = lines.next().expect("a header").split_whitespace().collect();
    assert_eq!(
        header[..4],
        ["interface", "provider", "operation", "target"]
    );
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("database") && l.contains(" create ")),
        "{}",
        r.stdout
    );
    // The help says where a running process's stats will be.
    let r = truststream(dir.path(), &[], &["stats", "--help"]);
    assert!(r.stdout.contains("/metrics"), "{}", r.stdout);
}
