//! Errors that name the setting, the value and the fix (issue 18): each
//! message names the configuration key or the path that caused it, and
//! where the key was set. Also the CLI's output: each error once, logs on
//! stderr, `check --json`, `config` with the providers' defaults.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::truststream;
use truststream_core::{Error, ErrorKind};
use truststream_runtime::{CompatibilityReport, ConfigSources, Registries, Services};

fn vars(env: &[(&str, &str)]) -> Vec<(String, String)> {
    env.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn build_err(toml: &str, env: &[(&str, &str)]) -> Error {
    let cfg = ConfigSources::new()
        .toml_str(toml)
        .env(vars(env))
        .load()
        .expect("the configuration loads");
    let regs = Arc::new(Registries::compiled_in());
    match Services::build(&regs, &cfg).await {
        Ok(_) => panic!("the services were built"),
        Err(e) => e,
    }
}

/// Memory database and storage, so that no test writes under the crate.
const MEMORY: &str =
    "[default.database]\ntype = \"memory\"\n[default.storage]\ntype = \"memory\"\n";

#[tokio::test]
async fn a_wrong_value_type_names_the_key_and_the_table_it_was_set_in() {
    let toml = "[default.storage]\ntype = \"memory\"\n\
                [production.database]\ntype = \"postgres\"\n\
                url = \"postgres://app:hunter2@127.0.0.1:5432/test\"\nmax_connections = \"many\"\n";
    let e = build_err(toml, &[("TRUSTSTREAM_PROFILE", "production")]).await;
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    let m = e.message();
    assert!(
        m.starts_with("`database.max_connections`: invalid type"),
        "{m}"
    );
    assert!(m.contains("expected u32"), "{m}");
    assert!(
        m.contains("set in inline TOML, table [production.database]"),
        "{m}"
    );
    assert!(m.contains("\"postgres\""), "{m}");
    assert!(!m.contains("many") && !m.contains("hunter2"), "{m}");
}

#[tokio::test]
async fn a_wrong_value_type_from_the_environment_names_the_variable() {
    let e = build_err(
        MEMORY,
        &[("TRUSTSTREAM_DATABASE__MAX_ROWS_PER_TABLE", "lots")],
    )
    .await;
    let m = e.message();
    assert!(
        m.starts_with("`database.max_rows_per_table`: invalid type"),
        "{m}"
    );
    assert!(
        m.contains("set in the environment variable TRUSTSTREAM_DATABASE__MAX_ROWS_PER_TABLE"),
        "{m}"
    );
    assert!(!m.contains("lots"), "{m}");
}

/// Every interface's providers parse their sections through core's
/// `parse_config`: the key is named in each.
#[tokio::test]
async fn every_section_names_the_key_of_a_wrong_value() {
    let cases = [
        (
            "auth",
            "type = \"jwt\"\njwt_secret = true",
            "auth.jwt_secret",
        ),
        (
            "storage",
            "type = \"memory\"\nmax_object_size = \"big\"",
            "storage.max_object_size",
        ),
        ("storage", "type = \"fs\"\nroot = 7", "storage.root"),
        (
            "realtime",
            "type = \"memory\"\nmax_payload_bytes = \"x\"",
            "realtime.max_payload_bytes",
        ),
        (
            "realtime",
            "type = \"ws\"\nlisten = 4000",
            "realtime.listen",
        ),
        (
            "database",
            "type = \"sqlite\"\nmax_connections = \"many\"",
            "database.max_connections",
        ),
    ];
    for (section, body, key) in cases {
        let mut toml = String::new();
        for other in ["database", "storage"] {
            if other != section {
                toml.push_str(&format!("[default.{other}]\ntype = \"memory\"\n"));
            }
        }
        toml.push_str(&format!("[staging.{section}]\n{body}\n"));
        let e = build_err(&toml, &[("TRUSTSTREAM_PROFILE", "staging")]).await;
        let m = e.message();
        assert!(
            m.starts_with(&format!("`{key}`: invalid type")),
            "{key}: {m}"
        );
        assert!(
            m.contains(&format!("table [staging.{section}]")),
            "{key}: {m}"
        );
    }
}

/// A wrong value inside a nested table names the table that holds it.
#[tokio::test]
async fn a_wrong_nested_value_names_its_own_table() {
    let toml = format!(
        "{MEMORY}[default.auth]\ntype = \"jwt\"\n\
         jwt_secret = \"0123456789abcdef0123456789abcdef\"\n\
         [default.auth.argon2]\nmemory_kib = \"lots\"\n"
    );
    let e = build_err(&toml, &[]).await;
    let m = e.message();
    assert!(
        m.starts_with("`auth.argon2.memory_kib`: invalid type"),
        "{m}"
    );
    assert!(
        m.contains("set in inline TOML, table [default.auth.argon2]"),
        "{m}"
    );
    assert!(
        !m.contains("lots") && !m.contains("0123456789abcdef"),
        "{m}"
    );
}

/// An unknown setting inside a nested table is named with the tables
/// above it, not as if it sat at the top of the section.
#[tokio::test]
async fn an_unknown_nested_setting_names_its_full_key() {
    let toml = format!(
        "{MEMORY}[default.auth]\ntype = \"jwt\"\n\
         jwt_secret = \"0123456789abcdef0123456789abcdef\"\n\
         [default.auth.argon2]\nbogus = 1\n"
    );
    let e = build_err(&toml, &[]).await;
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    let m = e.message();
    assert!(m.starts_with("unknown setting `auth.argon2.bogus`"), "{m}");
    assert!(!m.contains("0123456789abcdef"), "{m}");
}

#[test]
fn a_profile_no_environment_uses_is_a_warning() {
    let cfg = ConfigSources::new()
        .toml_str(
            "[default.database]\ntype = \"memory\"\n[prodution.database]\ntype = \"postgres\"\n",
        )
        .load()
        .unwrap();
    let w = cfg.warnings().join("\n");
    assert!(w.contains("[prodution.*]"), "{w}");
    assert!(w.contains("did you mean [production.*]?"), "{w}");
    // The active profile, even one of the file's own, is no typo.
    let cfg = ConfigSources::new()
        .toml_str("[prodution.database]\ntype = \"memory\"\n")
        .profile("prodution")
        .load()
        .unwrap();
    assert!(cfg.warnings().is_empty(), "{:?}", cfg.warnings());
}

#[test]
fn a_selected_profile_without_a_table_is_a_warning() {
    let cfg = ConfigSources::new()
        .toml_str(
            "[default.database]\ntype = \"memory\"\n[production.database]\ntype = \"memory\"\n",
        )
        .profile("staging")
        .load()
        .unwrap();
    let w = cfg.warnings().join("\n");
    assert!(w.contains("no [staging.*] table"), "{w}");
    let cfg = ConfigSources::new()
        .toml_str("[staging.database]\ntype = \"memory\"\n")
        .profile("staging")
        .load()
        .unwrap();
    assert!(cfg.warnings().is_empty(), "{:?}", cfg.warnings());
}

#[test]
fn a_toml_error_keeps_its_caret_diagram_on_separate_lines() {
    let e = ConfigSources::new()
        .toml_str("[staging.storage\n")
        .load()
        .unwrap_err();
    let m = e.message();
    assert!(
        m.starts_with("malformed configuration file inline TOML:\n"),
        "{m}"
    );
    let caret = m
        .lines()
        .find(|l| l.trim_start().starts_with('|') && l.contains('^'));
    assert!(caret.is_some(), "no caret line: {m}");
    assert!(m.lines().any(|l| l.contains("[staging.storage")), "{m}");
}

/// The project's own helper variables stay out of the `TRUSTSTREAM_`
/// namespace, which the configuration loader reads (and refuses unknown
/// sections of): every variable with the prefix named in the sources is
/// `TRUSTSTREAM_CONFIG`, `TRUSTSTREAM_PROFILE` or a `SECTION__KEY`.
#[test]
fn helper_variables_are_not_in_the_configuration_namespace() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut bad = Vec::new();
    let mut stack = vec![
        root.join("crates"),
        root.join("xtask"),
        root.join("benches"),
        root.join(".ci"),
    ];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let p = entry.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if p.is_dir() {
                if !matches!(name, "target" | "node_modules" | "data") {
                    stack.push(p);
                }
                continue;
            }
            if !(name.ends_with(".rs") || name == "run" || name.ends_with(".sh")) {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&p) else {
                continue;
            };
            for (at, _) in text.match_indices("TRUSTSTREAM_") {
                let rest = &text[at + "TRUSTSTREAM_".len()..];
                let len = rest
                    .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                    .unwrap_or(rest.len());
                let var = &rest[..len];
                if var.is_empty() || var == "CONFIG" || var == "PROFILE" || var.contains("__") {
                    continue;
                }
                bad.push(format!("{}: TRUSTSTREAM_{var}", p.display()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "helper variables in the configuration namespace: {bad:#?}"
    );
}

#[test]
fn config_shows_the_providers_defaults_with_secrets_redacted() {
    let cfg = ConfigSources::new()
        .toml_str(
            "[default.database]\ntype = \"postgres\"\nurl = \"postgres://app_user:hunter2@db:5432/app\"\n\
             [default.auth]\ntype = \"jwt\"\njwt_secret = \"0123456789abcdef0123456789abcdef\"\n\
             [default.storage]\ntype = \"memory\"\n",
        )
        .load()
        .unwrap();
    let v = cfg.resolved_redacted();
    let db = &v["database"];
    assert!(db["max_connections"].is_u64(), "a pool size: {db}");
    let url = db["url"].as_str().unwrap();
    assert!(
        url.contains("app_user") && !url.contains("hunter2"),
        "{url}"
    );
    assert_eq!(v["auth"]["jwt_secret"], "<redacted>", "{v}");
    assert!(v["auth"]["access_token_ttl_secs"].is_u64(), "{v}");
    let text = v.to_string();
    assert!(!text.contains("0123456789abcdef"), "{text}");

    let v = ConfigSources::new().load().unwrap().resolved_redacted();
    if cfg!(feature = "db-sqlite") {
        assert!(v["database"]["path"].is_string(), "the SQLite path: {v}");
    }
}

#[tokio::test]
async fn check_json_has_profile_interfaces_layers_capabilities_and_health() {
    let cfg = ConfigSources::new()
        .toml_str(format!(
            "{MEMORY}[default.database.layers]\nmetrics = true\n[default.realtime]\ntype = \"memory\"\n"
        ))
        .load()
        .unwrap();
    let report = CompatibilityReport::check(&Arc::new(Registries::compiled_in()), &cfg).await;
    let text = serde_json::to_string(&report.to_json()).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["profile"], "default");
    assert_eq!(v["ok"], true);
    let interfaces = v["interfaces"].as_array().unwrap();
    let names: Vec<&str> = interfaces
        .iter()
        .map(|i| i["interface"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["database", "auth", "storage", "realtime"]);
    let db = &interfaces[0];
    assert_eq!(db["type"], "memory");
    assert_eq!(db["provider"]["name"], "memory");
    assert!(db["provider"]["version"].is_string());
    assert!(
        db["layers"][0].as_str().unwrap().starts_with("metrics"),
        "{db}"
    );
    assert!(
        db["capabilities"].is_object() && db["capabilities"]["transactions"].is_boolean(),
        "{db}"
    );
    assert_eq!(db["health"]["status"], "healthy");
    assert!(db["health"]["latency_ms"].is_number());
    assert!(db["error"].is_null());
    assert!(interfaces[1]["provider"].is_null() && interfaces[1]["health"].is_null());
    assert_eq!(v["jobs"]["type"], "none");
}

// ---- the binary ----

const MEMORY_ENV: [(&str, &str); 2] = [
    ("TRUSTSTREAM_DATABASE__TYPE", "memory"),
    ("TRUSTSTREAM_STORAGE__TYPE", "memory"),
];

#[test]
fn a_failed_provider_is_printed_once_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = MEMORY_ENV.to_vec();
    env.push(("TRUSTSTREAM_DATABASE__MAX_ROWS_PER_TABLE", "lots"));
    let r = truststream(dir.path(), &env, &["check"]);
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    let key = "`database.max_rows_per_table`";
    assert_eq!(r.stderr.matches(key).count(), 1, "{}", r.stderr);
    assert!(!r.stdout.contains(key), "also on stdout: {}", r.stdout);
    assert!(
        r.stdout.contains("failed to build (error on stderr)"),
        "{}",
        r.stdout
    );
}

#[test]
fn a_malformed_file_keeps_its_caret_diagram_in_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("truststream.toml"), "[staging.storage\n").unwrap();
    let r = truststream(dir.path(), &[], &["config"]);
    assert_eq!(r.code, Some(1));
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    assert!(r.stderr.lines().any(|l| l.contains('^')), "{}", r.stderr);
    assert_eq!(
        r.stderr.matches("malformed configuration file").count(),
        1,
        "{}",
        r.stderr
    );
}

#[test]
fn the_cli_warns_about_a_typo_profile() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("truststream.toml"),
        "[default.database]\ntype = \"memory\"\n[prodution.database]\ntype = \"memory\"\n",
    )
    .unwrap();
    let r = truststream(dir.path(), &[], &["config"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stderr.contains("warning: ") && r.stderr.contains("[prodution.*]"),
        "{}",
        r.stderr
    );
    serde_json::from_str::<serde_json::Value>(&r.stdout).expect("stdout stays JSON");
}

#[test]
fn check_json_prints_one_parsable_document() {
    let dir = tempfile::tempdir().unwrap();
    let r = truststream(dir.path(), &MEMORY_ENV, &["check", "--json"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON");
    assert_eq!(v["ok"], true);
    assert_eq!(v["interfaces"].as_array().unwrap().len(), 4);
}

#[test]
fn config_prints_the_providers_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let r = truststream(
        dir.path(),
        &[("TRUSTSTREAM_STORAGE__TYPE", "memory")],
        &["config"],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON");
    assert_eq!(v["database"]["type"], "sqlite");
    assert!(v["database"]["path"].is_string(), "{v}");
    assert!(v["database"]["max_connections"].is_u64(), "{v}");
}

/// The subscriber honours RUST_LOG and --log-format, writes to stderr only,
/// and shows the spans of the providers' layers (the metrics layer's
/// `truststream.call`, at debug).
#[test]
fn logs_go_to_stderr_as_text_or_json_at_the_rust_log_level() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = MEMORY_ENV.to_vec();
    env.push(("TRUSTSTREAM_DATABASE__LAYERS__METRICS", "true"));
    let quiet = truststream(dir.path(), &env, &["check", "--json"]);
    assert_eq!(quiet.code, Some(0), "{}", quiet.stderr);
    assert!(
        !quiet.stderr.contains("truststream.call"),
        "{}",
        quiet.stderr
    );

    env.push(("RUST_LOG", "debug"));
    let r = truststream(
        dir.path(),
        &env,
        &["--log-format", "json", "check", "--json"],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    serde_json::from_str::<serde_json::Value>(&r.stdout).expect("stdout is the report only");
    let events: Vec<serde_json::Value> = r
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let call = events
        .iter()
        .find(|e| e.to_string().contains("truststream.call"))
        .unwrap_or_else(|| panic!("no provider span: {}", r.stderr));
    assert!(
        call.to_string().contains("\"interface\":\"database\""),
        "{call}"
    );
    assert!(
        call["level"].is_string() && call["timestamp"].is_string(),
        "{call}"
    );

    let r = truststream(dir.path(), &env, &["check"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stderr.lines().any(|l| l.contains("truststream.call")),
        "{}",
        r.stderr
    );
    assert!(!r.stdout.contains("truststream.call"), "{}", r.stdout);
}
