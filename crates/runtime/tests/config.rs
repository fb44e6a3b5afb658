//! Configuration layering, error messages and redaction, with injected
//! sources only (never the process environment).

use std::sync::Arc;

use serde_json::json;
use truststream_core::{Error, ErrorKind, Secret};
use truststream_core_db::Database;
use truststream_runtime::{Config, ConfigSources, Interface, Registries, Services};

const FILE: &str = r#"
[default.database]
type = "memory"

[default.storage]
type = "memory"
buckets = ["avatars"]
max_object_size = 1000

[production.storage]
max_object_size = 5000

[staging.database]
type = "memory"
"#;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The embedded default database: a SQLite file when compiled in.
const EMBEDDED_DB: &str = if cfg!(feature = "db-sqlite") {
    "sqlite"
} else {
    "memory"
};

#[test]
fn no_sources_is_the_embedded_default() {
    let cfg = ConfigSources::new().load().unwrap();
    assert_eq!(cfg.profile(), "default");
    assert_eq!(cfg.file(), None);
    for (i, t) in [
        (Interface::Database, EMBEDDED_DB),
        (Interface::Auth, "none"),
        (Interface::Storage, "fs"),
        (Interface::Realtime, "memory"),
    ] {
        assert_eq!(cfg.section(i).kind(), t, "{i}");
        assert!(cfg.section(i).settings().is_empty(), "{i}");
    }
    assert_eq!(cfg.origin("database.type"), Some("built-in defaults"));
}

#[test]
fn default_section_applies_and_profile_overrides() {
    let cfg = ConfigSources::new().toml_str(FILE).load().unwrap();
    let storage = cfg.section(Interface::Storage);
    assert_eq!(storage.settings()["max_object_size"], 1000);
    assert_eq!(storage.settings()["buckets"], json!(["avatars"]));

    let prod = ConfigSources::new()
        .toml_str(FILE)
        .profile("production")
        .load()
        .unwrap();
    let storage = prod.section(Interface::Storage);
    assert_eq!(prod.profile(), "production");
    assert_eq!(storage.settings()["max_object_size"], 5000);
    // [default] still applies under production.
    assert_eq!(storage.settings()["buckets"], json!(["avatars"]));
}

#[test]
fn env_overrides_file_and_profile_sections() {
    let cfg = ConfigSources::new()
        .toml_str(FILE)
        .env(env(&[
            ("TRUSTSTREAM_PROFILE", "production"),
            ("TRUSTSTREAM_STORAGE__MAX_OBJECT_SIZE", "100"),
            ("TRUSTSTREAM_DATABASE__TYPE", "memory"),
            ("TRUSTSTREAM_REALTIME__MAX_PAYLOAD_BYTES", "2048"),
            ("OTHER_VAR", "ignored"),
        ]))
        .load()
        .unwrap();
    assert_eq!(cfg.profile(), "production");
    // env beats [production.storage] and [default.storage]
    assert_eq!(
        cfg.section(Interface::Storage).settings()["max_object_size"],
        100
    );
    assert_eq!(
        cfg.section(Interface::Realtime).settings()["max_payload_bytes"],
        2048
    );
    assert_eq!(
        cfg.origin("storage.max_object_size"),
        Some("the environment (TRUSTSTREAM_* variables)")
    );
    assert_eq!(cfg.origin("storage.buckets"), Some("inline TOML"));
}

#[test]
fn explicit_profile_beats_env_profile() {
    let cfg = ConfigSources::new()
        .toml_str(FILE)
        .env(env(&[("TRUSTSTREAM_PROFILE", "production")]))
        .profile("staging")
        .load()
        .unwrap();
    assert_eq!(cfg.profile(), "staging");
    assert_eq!(
        cfg.section(Interface::Storage).settings()["max_object_size"],
        1000
    );
}

#[test]
fn quoted_env_value_stays_a_string() {
    let cfg = ConfigSources::new()
        .env(env(&[("TRUSTSTREAM_AUTH__JWT_SECRET", "\"12345\"")]))
        .load()
        .unwrap();
    assert_eq!(
        cfg.section(Interface::Auth).settings()["jwt_secret"],
        "12345"
    );
}

#[test]
fn config_file_is_read_from_env_and_malformed_toml_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, FILE).unwrap();
    let cfg = ConfigSources::new()
        .env(env(&[("TRUSTSTREAM_CONFIG", good.to_str().unwrap())]))
        .load()
        .unwrap();
    assert_eq!(cfg.file(), Some(good.to_str().unwrap()));
    assert_eq!(
        cfg.section(Interface::Storage).settings()["max_object_size"],
        1000
    );

    let bad = dir.path().join("broken.toml");
    std::fs::write(&bad, "[default.database\ntype = ").unwrap();
    let e = ConfigSources::new().file(&bad).load().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.message().contains("malformed configuration file"), "{e}");
    assert!(e.message().contains("broken.toml"), "{e}");

    let missing = dir.path().join("nope.toml");
    let e = ConfigSources::new().file(&missing).load().unwrap_err();
    assert!(
        e.message().contains("cannot read configuration file"),
        "{e}"
    );
    assert!(e.message().contains("nope.toml"), "{e}");
}

#[test]
fn section_outside_a_profile_is_explained() {
    let e = ConfigSources::new()
        .toml_str("[database]\ntype = \"memory\"\n")
        .load()
        .unwrap_err();
    assert!(e.message().contains("[default.database]"), "{e}");
}

#[test]
fn unknown_section_and_profile_are_errors() {
    let e = ConfigSources::new()
        .env(env(&[("TRUSTSTREAM_DATABSE__TYPE", "memory")]))
        .load()
        .unwrap_err();
    assert!(
        e.message()
            .contains("unknown configuration section `databse`"),
        "{e}"
    );
    assert!(
        e.message().contains("database, auth, storage, realtime"),
        "{e}"
    );

    let e = ConfigSources::new().profile("prod").load().unwrap_err();
    assert!(e.message().contains("unknown profile \"prod\""), "{e}");
    assert!(e.message().contains("production"), "{e}");

    // A profile the file defines is fine.
    let cfg = ConfigSources::new()
        .toml_str("[canary.storage]\nmax_object_size = 7\n")
        .profile("canary")
        .load()
        .unwrap();
    assert_eq!(
        cfg.section(Interface::Storage).settings()["max_object_size"],
        7
    );
}

#[test]
fn non_string_type_is_explained() {
    let e = ConfigSources::new()
        .env(env(&[("TRUSTSTREAM_DATABASE__TYPE", "42")]))
        .load()
        .unwrap_err();
    assert!(
        e.message()
            .contains("`database.type` must be a provider type name"),
        "{e}"
    );
    assert!(e.message().contains("TRUSTSTREAM_DATABASE__TYPE"), "{e}");
}

#[test]
fn redacted_hides_secrets_but_not_types() {
    let cfg = ConfigSources::new()
        .toml_str(
            r#"
[default.database]
type = "memory"
password = "hunter2"
url = "postgres://app:hunter2@db/app"
[default.auth]
type = "jwt"
jwt_secret = "s3cr3t-value"
"#,
        )
        .env(env(&[(
            "TRUSTSTREAM_STORAGE__SECRET_ACCESS_KEY",
            "AKIA-PRIVATE",
        )]))
        .load()
        .unwrap();
    let r = cfg.redacted();
    assert_eq!(r["database"]["type"], "memory");
    assert_eq!(r["auth"]["type"], "jwt");
    assert_eq!(r["database"]["password"], "<redacted>");
    assert_eq!(r["database"]["url"], "postgres://app:<redacted>@db/app");
    assert_eq!(r["auth"]["jwt_secret"], "<redacted>");
    assert_eq!(r["storage"]["secret_access_key"], "<redacted>");
    let shown = format!("{r} {cfg:?}");
    for secret in ["hunter2", "s3cr3t-value", "AKIA-PRIVATE"] {
        assert!(!shown.contains(secret), "{secret} leaked: {shown}");
    }
    // The unredacted form still has them, for the providers.
    assert_eq!(cfg.to_json()["auth"]["jwt_secret"], "s3cr3t-value");
}

/// A provider whose configuration requires a secret.
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct VaultConfig {
    api_key: Secret,
    #[serde(default)]
    region: Option<String>,
}

fn vault_registries() -> Arc<Registries> {
    let mut r = Registries::compiled_in();
    r.database.register("vault", |cfg, ()| async move {
        let _cfg: VaultConfig = truststream_core::parse_config("vault", cfg)?;
        Err::<Arc<dyn Database>, _>(Error::unavailable("vault is not reachable in tests"))
    });
    Arc::new(r)
}

async fn build_err(regs: &Arc<Registries>, cfg: &Config) -> Error {
    match Services::build(regs, cfg).await {
        Ok(_) => panic!("building services must fail for {cfg:?}"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn missing_required_secret_names_the_key_env_var_and_profile() {
    let regs = vault_registries();
    let cfg = ConfigSources::new()
        .toml_str("[staging.database]\ntype = \"vault\"\n")
        .profile("staging")
        .load()
        .unwrap();
    let e = build_err(&regs, &cfg).await;
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let m = e.message();
    assert!(
        m.contains("missing required setting `database.api_key`"),
        "{m}"
    );
    assert!(m.contains("TRUSTSTREAM_DATABASE__API_KEY"), "{m}");
    assert!(m.contains("[staging.database]"), "{m}");
    assert!(m.contains("\"staging\""), "{m}");
}

#[tokio::test]
async fn provider_errors_never_echo_secret_values() {
    let regs = vault_registries();
    // api_key given as a number: serde's message would echo it.
    let cfg = ConfigSources::new()
        .env(env(&[
            ("TRUSTSTREAM_DATABASE__TYPE", "vault"),
            ("TRUSTSTREAM_DATABASE__API_KEY", "987654321"),
        ]))
        .load()
        .unwrap();
    let e = build_err(&regs, &cfg).await;
    assert!(!e.to_string().contains("987654321"), "{e}");
    // The value is gone (core drops it; the runtime would redact it), but the
    // message still says what was expected.
    assert!(e.to_string().contains("expected a string"), "{e}");

    // With a valid key the provider's own (retryable) error comes through.
    let cfg = ConfigSources::new()
        .env(env(&[
            ("TRUSTSTREAM_DATABASE__TYPE", "vault"),
            ("TRUSTSTREAM_DATABASE__API_KEY", "sk-abc"),
        ]))
        .load()
        .unwrap();
    let e = build_err(&regs, &cfg).await;
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(e.is_retryable());
    assert!(e.message().contains("vault is not reachable"), "{e}");
}

#[tokio::test]
async fn unknown_type_names_key_value_and_known_types() {
    let regs = vault_registries();
    let cfg = ConfigSources::new()
        .env(env(&[("TRUSTSTREAM_DATABASE__TYPE", "oracle")]))
        .load()
        .unwrap();
    let e = build_err(&regs, &cfg).await;
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let m = e.message();
    assert!(
        m.starts_with("database.type: unknown database provider type \"oracle\""),
        "{m}"
    );
    let mut known = vec!["none", "memory"];
    if cfg!(feature = "db-postgres") {
        known.push("postgres");
    }
    if cfg!(feature = "db-sqlite") {
        known.push("sqlite");
    }
    if cfg!(feature = "db-supabase") {
        known.push("supabase");
    }
    known.push("vault");
    let known = format!("known types: {}", known.join(", "));
    assert!(m.contains(&known), "{m}");

    let cfg = ConfigSources::new()
        // Memory: the default SQLite file would land in the crate's ./data.
        .env(env(&[
            ("TRUSTSTREAM_AUTH__TYPE", "ldap"),
            ("TRUSTSTREAM_DATABASE__TYPE", "memory"),
        ]))
        .load()
        .unwrap();
    let e = build_err(&regs, &cfg).await;
    assert!(e.message().contains("auth.type"), "{e}");
    let known = if cfg!(feature = "auth-jwt") {
        "known types: none, jwt"
    } else {
        "known types: none"
    };
    assert!(e.message().contains(known), "{e}");
}

/// A provider this workspace ships but this build leaves out names the cargo
/// feature that compiles it in (storage-s3 is off by default).
#[tokio::test]
async fn a_provider_not_compiled_in_names_its_cargo_feature() {
    // (variable, type, key, feature, whether this build compiles it in)
    let all = [
        (
            "TRUSTSTREAM_STORAGE__TYPE",
            "s3",
            "storage.type",
            "`storage-s3`",
            cfg!(feature = "storage-s3"),
        ),
        (
            "TRUSTSTREAM_REALTIME__TYPE",
            "socketio",
            "realtime.type",
            "`realtime-socketio`",
            cfg!(feature = "realtime-socketio"),
        ),
        (
            "TRUSTSTREAM_DATABASE__TYPE",
            "postgres",
            "database.type",
            "`db-postgres`",
            cfg!(feature = "db-postgres"),
        ),
    ];
    for (var, kind, key, feature, compiled_in) in all {
        let mut regs = Registries::compiled_in();
        if compiled_in {
            // This build has it (the workspace's test run unifies
            // features): the same message from registries without it.
            let none = Registries::empty();
            match key {
                "storage.type" => regs.storage = none.storage,
                "realtime.type" => regs.realtime = none.realtime,
                _ => regs.database = none.database,
            }
        }
        let regs = Arc::new(regs);
        let mut vars = vec![(var, kind)];
        // Memory: the default SQLite file and file storage would land in
        // the crate's ./data.
        for (other, memory) in [
            ("TRUSTSTREAM_DATABASE__TYPE", "memory"),
            ("TRUSTSTREAM_STORAGE__TYPE", "memory"),
        ] {
            if var != other {
                vars.push((other, memory));
            }
        }
        let cfg = ConfigSources::new().env(env(&vars)).load().unwrap();
        let e = build_err(&regs, &cfg).await;
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        let m = e.message();
        assert!(m.starts_with(key), "{m}");
        assert!(m.contains("is not compiled in"), "{m}");
        assert!(m.contains(&format!("the cargo feature {feature}")), "{m}");
        assert!(m.contains("TRUSTSTREAM_"), "where it was set: {m}");
    }
}

#[tokio::test]
async fn unknown_setting_names_the_key() {
    let cfg = ConfigSources::new()
        .env(env(&[
            ("TRUSTSTREAM_STORAGE__BUCKETZ", "[\"a\"]"),
            // Memory: the default SQLite file would land in the crate's ./data.
            ("TRUSTSTREAM_DATABASE__TYPE", "memory"),
        ]))
        .load()
        .unwrap();
    let e = build_err(&Arc::new(Registries::compiled_in()), &cfg).await;
    assert!(
        e.message().contains("unknown setting `storage.bucketz`"),
        "{e}"
    );
}

#[tokio::test]
async fn embedded_default_builds_every_service() {
    // The default storage keeps files under ./data/storage; point it at a
    // temporary directory so the test leaves nothing behind.
    let root = tempfile::tempdir().unwrap();
    let cfg = ConfigSources::new()
        .env(env(&[
            ("TRUSTSTREAM_STORAGE__ROOT", root.path().to_str().unwrap()),
            (
                "TRUSTSTREAM_DATABASE__PATH",
                root.path().join("truststream.db").to_str().unwrap(),
            ),
        ]))
        .load()
        .unwrap();
    assert_eq!(cfg.section(Interface::Storage).kind(), "fs");
    let s = Services::build(&Arc::new(Registries::compiled_in()), &cfg)
        .await
        .unwrap();
    assert_eq!(s.db.info().name, EMBEDDED_DB);
    assert_eq!(s.storage.info().name, "fs");
    assert_eq!(s.realtime.info().name, "memory");
    assert!(s.auth.is_none());
    // Realtime is wired to the database's change feed.
    assert_eq!(
        serde_json::to_value(s.realtime.capabilities()).unwrap()["row_changes"],
        true
    );
}

#[tokio::test]
async fn settings_reach_the_provider() {
    let root = tempfile::tempdir().unwrap();
    let cfg = ConfigSources::new()
        .toml_str("[default.storage]\nbuckets = [\"avatars\", \"docs\"]\n")
        .env(env(&[
            ("TRUSTSTREAM_STORAGE__MAX_OBJECT_SIZE", "100"),
            ("TRUSTSTREAM_STORAGE__ROOT", root.path().to_str().unwrap()),
            // Memory: the default SQLite file would land in the crate's ./data.
            ("TRUSTSTREAM_DATABASE__TYPE", "memory"),
        ]))
        .load()
        .unwrap();
    let s = Services::build(&Arc::new(Registries::compiled_in()), &cfg)
        .await
        .unwrap();
    let names: Vec<String> = s
        .storage
        .list_buckets()
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.name)
        .collect();
    assert_eq!(names, ["avatars", "docs"]);
    assert_eq!(s.storage.capabilities().max_object_size, Some(100));
}

/// `[default.storage]` configures files; the tests below switch the type.
const FS_DEFAULT: &str = r#"
[default.storage]
type = "fs"
root = "/nonexistent/truststream-test"
max_object_size = 1000

[production.storage]
type = "memory"
buckets = ["avatars"]

[staging.storage]
max_object_size = 2000
"#;

#[tokio::test]
async fn a_profile_that_changes_the_type_starts_the_section_afresh() {
    let cfg = ConfigSources::new()
        .toml_str(FS_DEFAULT)
        .profile("production")
        .load()
        .unwrap();
    let storage = cfg.section(Interface::Storage);
    assert_eq!(storage.kind(), "memory");
    // `root` and `max_object_size` were for the fs provider.
    assert_eq!(storage.settings().keys().collect::<Vec<_>>(), ["buckets"]);
    let built = Arc::new(Registries::compiled_in())
        .build_storage(&cfg)
        .await
        .unwrap();
    assert_eq!(built.list_buckets().await.unwrap()[0].name, "avatars");

    // A profile that keeps the type still merges over [default.storage].
    let staging = ConfigSources::new()
        .toml_str(FS_DEFAULT)
        .profile("staging")
        .load()
        .unwrap();
    let storage = staging.section(Interface::Storage);
    assert_eq!(storage.kind(), "fs");
    assert_eq!(storage.settings()["root"], "/nonexistent/truststream-test");
    assert_eq!(storage.settings()["max_object_size"], 2000);
}

#[tokio::test]
async fn an_environment_variable_that_changes_the_type_starts_the_section_afresh() {
    let cfg = ConfigSources::new()
        .toml_str(FS_DEFAULT)
        .env(env(&[
            ("TRUSTSTREAM_STORAGE__TYPE", "memory"),
            ("TRUSTSTREAM_STORAGE__MAX_OBJECT_SIZE", "10"),
        ]))
        .load()
        .unwrap();
    let storage = cfg.section(Interface::Storage);
    assert_eq!(storage.kind(), "memory");
    // Only the environment's own settings: none from the file's fs section.
    assert_eq!(
        storage.settings().keys().collect::<Vec<_>>(),
        ["max_object_size"]
    );
    assert_eq!(storage.settings()["max_object_size"], 10);
    assert_eq!(
        cfg.origin("storage.type"),
        Some("the environment (TRUSTSTREAM_* variables)")
    );
    let built = Arc::new(Registries::compiled_in())
        .build_storage(&cfg)
        .await
        .unwrap();
    assert_eq!(built.info().name, "memory");

    // Under production the file already says memory: the variable changes
    // nothing, so [production.storage] still applies.
    let prod = ConfigSources::new()
        .toml_str(FS_DEFAULT)
        .env(env(&[
            ("TRUSTSTREAM_PROFILE", "production"),
            ("TRUSTSTREAM_STORAGE__TYPE", "memory"),
        ]))
        .load()
        .unwrap();
    assert_eq!(
        prod.section(Interface::Storage).settings()["buckets"],
        json!(["avatars"])
    );
    assert!(prod
        .section(Interface::Storage)
        .settings()
        .get("root")
        .is_none());

    // The same type from the environment keeps the file's settings.
    let same = ConfigSources::new()
        .toml_str(FS_DEFAULT)
        .env(env(&[("TRUSTSTREAM_STORAGE__TYPE", "fs")]))
        .load()
        .unwrap();
    assert_eq!(
        same.section(Interface::Storage).settings()["max_object_size"],
        1000
    );
}
