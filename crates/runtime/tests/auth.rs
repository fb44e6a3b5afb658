//! `auth.type = "jwt"` through configuration: built with the configured
//! database, a missing secret named with its key and variable, secrets
//! redacted.
#![cfg(all(
    feature = "auth-jwt",
    feature = "db-memory",
    feature = "storage-memory",
    feature = "realtime-memory"
))]

use std::sync::Arc;

use truststream_core_auth::{SignIn, SignUp};
use truststream_runtime::{ConfigSources, Interface, Registries, Services};

const FILE: &str = r#"
[default.database]
type = "memory"

[default.storage]
type = "memory"

[default.auth]
type = "jwt"
jwt_secret = "runtime test secret of at least 32 bytes"
default_roles = ["member"]
argon2 = { memory_kib = 8, iterations = 1, parallelism = 1 }

[default.auth.roles]
member = ["read:*"]
"#;

#[tokio::test]
async fn jwt_auth_is_built_over_the_configured_database() {
    assert!(Registries::compiled_in()
        .names(Interface::Auth)
        .contains(&"jwt"));
    let cfg = ConfigSources::new().toml_str(FILE).load().unwrap();
    assert!(!format!("{cfg:?}").contains("runtime test secret"));
    let services = Services::build(&Arc::new(Registries::compiled_in()), &cfg)
        .await
        .unwrap();
    let auth = services.auth.clone().expect("auth configured");
    assert_eq!(auth.info().name, "jwt");
    auth.sign_up(SignUp::new("ada@example.com", "correct horse battery"))
        .await
        .unwrap();
    let s = auth
        .sign_in(SignIn::new("ada@example.com", "correct horse battery"))
        .await
        .unwrap();
    let p = auth.validate_token(s.access_token.expose()).await.unwrap();
    assert!(auth.has_permission(&p, "read:agents").await.unwrap());
    // The users live in the configured database.
    let users = services
        .db
        .read("auth_users", &truststream_core_db::Query::new())
        .await
        .unwrap();
    assert_eq!(users.len(), 1);
}

#[tokio::test]
async fn a_missing_secret_names_the_key_and_the_variable() {
    let cfg = ConfigSources::new()
        .toml_str("[default.database]\ntype = \"memory\"\n[default.storage]\ntype = \"memory\"\n[default.auth]\ntype = \"jwt\"\n")
        .load()
        .unwrap();
    let Err(e) = Services::build(&Arc::new(Registries::compiled_in()), &cfg).await else {
        panic!("no secret, no provider");
    };
    let msg = e.to_string();
    assert!(msg.contains("auth.jwt_secret"), "{msg}");
    assert!(msg.contains("TRUSTSTREAM_AUTH__JWT_SECRET"), "{msg}");
}

#[tokio::test]
async fn a_short_secret_is_refused_without_echoing_it() {
    let cfg = ConfigSources::new()
        .toml_str("[default.database]\ntype = \"memory\"\n[default.storage]\ntype = \"memory\"\n[default.auth]\ntype = \"jwt\"\njwt_secret = \"hunter2hunter2\"\n")
        .load()
        .unwrap();
    let Err(e) = Services::build(&Arc::new(Registries::compiled_in()), &cfg).await else {
        panic!("short secret refused");
    };
    assert!(!e.to_string().contains("hunter2"), "{e}");
    assert!(e.to_string().contains("at least 32 bytes"), "{e}");
}
