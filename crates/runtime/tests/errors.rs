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

/// A SQLite file that cannot be opened names the file, the filesystem's
/// reason, the key and where it was set; a missing parent directory is
/// created (db-sqlite does), so only one that cannot be made fails.
#[tokio::test]
async fn a_sqlite_file_that_cannot_be_opened_names_the_path_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain");
    std::fs::write(&file, b"x").unwrap();
    let cases = [
        (file.join("app.db"), "cannot create its directory"),
        (dir.path().to_path_buf(), "directory"),
    ];
    for (path, reason) in cases {
        let toml = format!(
            "[default.storage]\ntype = \"memory\"\n\
             [default.database]\ntype = \"sqlite\"\npath = {:?}\n",
            path.display().to_string()
        );
        let e = build_err(&toml, &[]).await;
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        let m = e.message();
        assert!(
            m.starts_with(&format!(
                "`database.path`: cannot open the SQLite database file {}: ",
                path.display()
            )),
            "{m}"
        );
        assert!(m.contains(reason), "{reason}: {m}");
        assert!(
            m.contains("set in inline TOML, table [default.database]"),
            "{m}"
        );
    }
    // Set in the environment (the default type, sqlite): the variable
    // is named.
    let toml = "[default.storage]\ntype = \"memory\"\n";
    let cwd_file = dir.path().join("cwd");
    std::fs::write(&cwd_file, b"x").unwrap();
    let e = build_err(
        toml,
        &[(
            "TRUSTSTREAM_DATABASE__PATH",
            &cwd_file.join("t.db").display().to_string(),
        )],
    )
    .await;
    assert!(
        e.message()
            .contains("set in the environment variable TRUSTSTREAM_DATABASE__PATH"),
        "{e}"
    );
}

/// PostgreSQL: a refused port says that host:port refused (at once, not
/// after the pool's acquire timeout, and without suggesting a bigger
/// pool); a URL that does not parse, or is not a PostgreSQL URL, is
/// refused. Each names `database.url` and never echoes its password.
#[tokio::test]
async fn postgres_connection_errors_name_database_url() {
    let cases = [
        (
            "postgres://app:hunter2@127.0.0.1:1/test",
            ErrorKind::Unavailable,
            "PostgreSQL at 127.0.0.1:1 refused the connection",
        ),
        (
            "mysql://app:hunter2@127.0.0.1:3306/app",
            ErrorKind::InvalidInput,
            "the url is not a PostgreSQL URL: its scheme is \"mysql\"",
        ),
        (
            "postgres://app:hunter2@[::1/test",
            ErrorKind::InvalidInput,
            "the PostgreSQL url is invalid",
        ),
    ];
    for (url, kind, says) in cases {
        let e = build_err(
            "[default.storage]\ntype = \"memory\"\n",
            &[
                ("TRUSTSTREAM_DATABASE__TYPE", "postgres"),
                ("TRUSTSTREAM_DATABASE__URL", url),
                // An hour: the refused port used to wait for it.
                ("TRUSTSTREAM_DATABASE__ACQUIRE_TIMEOUT_MS", "3600000"),
            ],
        )
        .await;
        assert_eq!(e.kind(), kind, "{url}: {e}");
        let m = e.message();
        assert!(m.starts_with(&format!("`database.url`: {says}")), "{m}");
        assert!(
            m.contains("set in the environment variable TRUSTSTREAM_DATABASE__URL"),
            "{m}"
        );
        assert!(!m.contains("max_connections"), "{m}");
        assert!(!format!("{e} {e:?}").contains("hunter2"), "{e:?}");
    }
}

/// A listening address already taken names the key (`realtime.listen`),
/// the address and what to do.
#[tokio::test]
async fn a_port_already_taken_names_realtime_listen() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let mut kinds = vec![("ws", "realtime ws")];
    if cfg!(feature = "realtime-socketio") {
        kinds.push(("socketio", "realtime socketio"));
    }
    for (kind, who) in kinds {
        let toml = format!("{MEMORY}[default.realtime]\ntype = \"{kind}\"\nlisten = \"{addr}\"\n");
        let e = build_err(&toml, &[]).await;
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{kind}: {e}");
        let m = e.message();
        assert!(
            m.starts_with(&format!(
                "`realtime.listen`: {who}: cannot listen on {addr}: "
            )),
            "{m}"
        );
        assert!(m.contains("set `listen` to a free address"), "{m}");
        assert!(
            m.contains("set in inline TOML, table [default.realtime]"),
            "{m}"
        );
    }
}

/// A storage root that cannot be created or used names the path, the
/// reason and `storage.root`.
#[tokio::test]
async fn an_unusable_storage_root_names_the_path_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain");
    std::fs::write(&file, b"x").unwrap();
    for root in [file.clone(), file.join("storage")] {
        let toml = format!(
            "[default.database]\ntype = \"memory\"\n\
             [default.storage]\ntype = \"fs\"\nroot = {:?}\n",
            root.display().to_string()
        );
        let e = build_err(&toml, &[]).await;
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        let m = e.message();
        assert!(
            m.starts_with(&format!(
                "`storage.root`: cannot use the storage root {}: ",
                root.display()
            )),
            "{m}"
        );
        assert!(
            m.contains("set in inline TOML, table [default.storage]"),
            "{m}"
        );
    }
}

/// `truststream serve` on a port already taken names `serve.bind`, and
/// where it was set: the `[serve]` table, or `--bind`.
#[cfg(feature = "serve")]
#[tokio::test]
async fn a_port_already_taken_names_serve_bind() {
    use truststream_runtime::serve;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "{MEMORY}[default.serve]\nbind = \"{addr}\"\ndata_dir = {:?}\n",
        dir.path().display().to_string()
    );
    let cfg = ConfigSources::new().toml_str(toml).load().unwrap();
    let regs = Arc::new(Registries::compiled_in());
    for (flag, set_in) in [
        (None, "set in inline TOML, table [default.serve]"),
        (Some(addr.as_str()), "set by --bind"),
    ] {
        let prepared = serve::prepare(&cfg, flag).unwrap();
        let e = match serve::bind(&regs, prepared).await {
            Ok(_) => panic!("bound a port already taken"),
            Err(e) => e,
        };
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
        let m = e.message();
        assert!(
            m.starts_with(&format!("`serve.bind`: serve: cannot listen on {addr}: ")),
            "{m}"
        );
        assert!(m.contains("set `bind` to a free address"), "{m}");
        assert!(m.ends_with(set_in), "{m}");
    }
}

/// `type = "none"` turns the database, storage and realtime off, as it
/// does auth and jobs: the runtime builds, each accessor's provider
/// refuses every call with `Unsupported` naming the key and where it was
/// set, and `check` and `health` list the interfaces as not configured.
#[tokio::test]
async fn database_storage_and_realtime_can_be_turned_off() {
    let toml = "[default.database]\ntype = \"none\"\n[default.storage]\ntype = \"none\"\n\
                [default.realtime]\ntype = \"none\"\n";
    let cfg = ConfigSources::new().toml_str(toml).load().unwrap();
    let rt = truststream_runtime::Runtime::builder()
        .config(cfg.clone())
        .build()
        .await
        .expect("a runtime with every interface off");
    let off = |e: Error, name: &str| {
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
        let m = e.message();
        assert!(
            m.starts_with(&format!(
                "the {name} is turned off: `{name}.type = \"none\"` (set in inline TOML, table \
                 [default.{name}])"
            )),
            "{m}"
        );
    };
    let e = rt
        .db()
        .read("agents", &truststream_core_db::Query::new())
        .await
        .unwrap_err();
    off(e, "database");
    off(rt.storage().list_buckets().await.unwrap_err(), "storage");
    let e = rt
        .storage()
        .download_with_metadata("b", "k", None)
        .await
        .unwrap_err();
    assert_eq!(e.operation(), Some("storage.download_with_metadata"));
    off(e, "storage");
    let e = match rt.realtime().channel("room", Default::default()).await {
        Ok(_) => panic!("a channel of a turned-off realtime"),
        Err(e) => e,
    };
    off(e, "realtime");
    assert!(rt.auth().is_none() && rt.jobs().is_none());

    let report = rt.check().await;
    assert!(report.is_ok(), "{report}");
    for i in &report.interfaces {
        assert_eq!(i.configured_type, "none", "{i:?}");
        assert!(i.provider.is_none() && i.health.is_none(), "{i:?}");
        assert_eq!(
            i.health_line(),
            format!("not configured ({}.type = \"none\")", i.interface)
        );
    }
    // The report built from the configuration alone says the same.
    let built = CompatibilityReport::check(&Arc::new(Registries::compiled_in()), &cfg).await;
    assert_eq!(
        built.to_json()["interfaces"],
        report.to_json()["interfaces"]
    );
    let health = rt.health(std::time::Duration::from_secs(5)).await;
    assert!(health.services.is_empty(), "{health:?}");
    assert_eq!(health.not_configured.len(), 4, "{health:?}");
    assert!(health.is_ok());
}

/// A switch to `type = "none"` turns an interface off (and a switch back
/// turns it on); switching the database off under auth `jwt` is refused,
/// naming both keys, and changes nothing.
#[tokio::test]
async fn a_switch_to_none_turns_an_interface_off() {
    let rt = truststream_runtime::Runtime::builder()
        .config(ConfigSources::new().toml_str(MEMORY).load().unwrap())
        .build()
        .await
        .unwrap();
    let _old = rt
        .switch_storage("none", serde_json::json!({}))
        .await
        .unwrap();
    let e = rt.storage().list_buckets().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.message().starts_with("the storage is turned off"), "{e}");
    let _old = rt
        .switch_storage("memory", serde_json::json!({}))
        .await
        .unwrap();
    rt.storage().list_buckets().await.unwrap();

    let _old = rt
        .switch_auth(
            "jwt",
            serde_json::json!({"jwt_secret": "0123456789abcdef0123456789abcdef"}),
        )
        .await
        .unwrap();
    let e = match rt.switch_database("none", serde_json::json!({})).await {
        Ok(_) => panic!("the database was switched off under auth jwt"),
        Err(e) => e,
    };
    assert!(
        e.message().contains("`auth.type = \"jwt\"`")
            && e.message().contains("`database.type = \"none\"`"),
        "{e}"
    );
    rt.db()
        .read("nowhere", &truststream_core_db::Query::new())
        .await
        .map(drop)
        .unwrap_or_else(|e| assert_ne!(e.kind(), ErrorKind::Unsupported, "{e}"));
}

/// What keeps its data in the database (auth `jwt`, jobs `database`,
/// `truststream serve`) with the database turned off: an error naming
/// both keys, where each was set, and what to change.
#[tokio::test]
async fn a_provider_that_needs_the_database_names_both_keys() {
    let off = "[default.database]\ntype = \"none\"\n[default.storage]\ntype = \"memory\"\n";
    let cases = [
        (
            format!(
                "{off}[default.auth]\ntype = \"jwt\"\n\
                 jwt_secret = \"0123456789abcdef0123456789abcdef\"\n"
            ),
            "`auth.type = \"jwt\"` (set in inline TOML, table [default.auth]) keeps its users",
        ),
        (
            format!("{off}[default.jobs]\ntype = \"database\"\n"),
            "`jobs.type = \"database\"` (set in inline TOML, table [default.jobs]) keeps its jobs",
        ),
    ];
    for (toml, says) in cases {
        let e = build_err(&toml, &[]).await;
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        let m = e.message();
        assert!(m.starts_with(says), "{m}");
        assert!(
            m.contains(
                "but `database.type = \"none\"` (set in inline TOML, table [default.database])"
            ),
            "{m}"
        );
        assert!(!m.contains("0123456789abcdef"), "{m}");
    }
    #[cfg(feature = "serve")]
    {
        let cfg = ConfigSources::new().toml_str(off).load().unwrap();
        let e = match truststream_runtime::serve::prepare(&cfg, None) {
            Ok(_) => panic!("serve prepared without a database"),
            Err(e) => e,
        };
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        assert!(
            e.message()
                .starts_with("truststream serve needs a database")
                && e.message()
                    .contains("`database.type = \"none\"` (set in inline TOML"),
            "{e}"
        );
    }
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

/// `check` and `health` list a turned-off interface as not configured.
#[test]
fn the_cli_lists_turned_off_interfaces() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("TRUSTSTREAM_DATABASE__TYPE", "none"),
        ("TRUSTSTREAM_STORAGE__TYPE", "none"),
        ("TRUSTSTREAM_REALTIME__TYPE", "none"),
    ];
    let r = truststream(dir.path(), &env, &["check"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    for i in ["database", "storage", "realtime"] {
        assert!(
            r.stdout.contains(&format!("{i}: none\n"))
                && r.stdout
                    .contains(&format!("health: not configured ({i}.type = \"none\")")),
            "{}",
            r.stdout
        );
    }
    let r = truststream(dir.path(), &env, &["health"]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    for i in ["database", "auth", "storage", "realtime"] {
        assert!(
            r.stdout
                .contains(&format!("{i}: not configured (not checked)")),
            "{}",
            r.stdout
        );
    }
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
