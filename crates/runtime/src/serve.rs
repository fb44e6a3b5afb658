//! `truststream serve`: the configured providers behind Supabase's HTTP and
//! WebSocket APIs (the `truststream-serve` crate), started from
//! configuration.

use std::sync::Arc;

use serde_json::Value;
use truststream_core::{Error, Result};
use truststream_serve::{ApiKeys, Providers, ServeConfig, Server};

use crate::build::{database_on, set_in, setting_of, SETTING};
use crate::config::{Config, Interface, ProviderSection, SERVE_SECTION};
use crate::{Registries, Services};

/// The label of the embedded auth provider's signing secret (derived from
/// the server secret, so its tokens and the API keys never share a key).
const EMBEDDED_AUTH_LABEL: &str = "truststream serve: embedded auth-jwt access tokens v1";

/// What [`prepare`] made of the configuration.
pub struct Prepared {
    /// The configuration the providers are built from (auth filled in when
    /// none was configured).
    pub config: Config,
    /// The `[serve]` settings.
    pub serve: ServeConfig,
    /// The API keys.
    pub keys: ApiKeys,
    /// Whether the auth provider is the embedded one `serve` configured.
    pub embedded_auth: bool,
    /// Whether `bind` came from the command line (`--bind`), not from
    /// the `[serve]` table: an error about it names the flag.
    pub bind_from_flag: bool,
}

/// Reads the `[serve]` settings (with `bind` overridden when given), loads
/// or generates the API keys, and — a server needs an auth provider — when
/// `auth.type = "none"`, configures the `jwt` provider over the configured
/// database, signing with the secret kept beside the keys.
///
/// A configuration with the database turned off (`database.type =
/// "none"`) is refused: the server's `/rest/v1` API and its auth provider
/// keep their data there.
pub fn prepare(config: &Config, bind: Option<&str>) -> Result<Prepared> {
    if !database_on(config) {
        return Err(Error::invalid_input(format!(
            "truststream serve needs a database (its /rest/v1 API, and the users of its auth \
             provider), but `database.type = \"none\"` ({}): set `database.type` to a database \
             provider",
            set_in(config, "database", "type")
        )));
    }
    let mut serve = ServeConfig::from_json(Value::Object(config.serve_settings().clone()))?;
    if let Some(b) = bind {
        serve.bind = b.to_string();
    }
    let keys = ApiKeys::load_or_generate(&serve)?;
    let mut config = config.clone();
    let embedded_auth = config.is_off(Interface::Auth);
    if embedded_auth {
        let mut settings = serde_json::Map::new();
        settings.insert(
            "jwt_secret".into(),
            Value::String(
                keys.derived_secret(EMBEDDED_AUTH_LABEL)
                    .expose()
                    .to_string(),
            ),
        );
        config.set_section(Interface::Auth, ProviderSection::new("jwt", settings));
    }
    Ok(Prepared {
        config,
        serve,
        keys,
        embedded_auth,
        bind_from_flag: bind.is_some(),
    })
}

/// Builds the providers of `prepared` and binds the server (not yet
/// serving: see [`Server::run`]).
///
/// A `jwt` auth provider without an `issuer` setting (the embedded one
/// included) issues tokens as GoTrue does, `iss = "<public url>/auth/v1"`,
/// so a Supabase client's default issuer check (auth-supabase) accepts
/// them; a bind to port 0 is resolved to a free port first, since the
/// URL is needed before the providers are built.
pub async fn bind(
    registries: &Arc<Registries>,
    mut prepared: Prepared,
) -> Result<(Server, Services)> {
    let flag = prepared.bind_from_flag;
    gotrue_issuer_before_bind(&mut prepared.config, &mut prepared.serve)
        .await
        .map_err(|e| setting_error(e, &prepared.config, flag))?;
    served_signed_urls(&mut prepared.config, &prepared.serve).await;
    let services = Services::build(registries, &prepared.config).await?;
    let server = async {
        let Some(auth) = services.auth.clone() else {
            return Err(Error::invalid_input(
                "truststream serve needs an auth provider: set [<profile>.auth] type = \"jwt\" (or leave it unset)",
            ));
        };
        let providers = Providers {
            db: services.db.clone(),
            auth,
            storage: services.storage.clone(),
            metrics: metrics_renderer(&prepared.config),
        };
        Server::bind(providers, prepared.keys, prepared.serve)
            .await
            .map_err(|e| setting_error(e, &prepared.config, flag))
    };
    match server.await {
        Ok(server) => Ok((server, services)),
        Err(e) => {
            // Built for nothing (the port is taken, no auth): close every
            // provider, not just the database's pools.
            let _ = services.close().await;
            Err(e)
        }
    }
}

/// An error of the server about one of its `[serve]` settings (the
/// [`SETTING`] context: `bind` when the address cannot be listened on)
/// names the whole key, `serve.bind`, and where it was set (`--bind`, a
/// file's table, an environment variable, or the default).
fn setting_error(e: Error, config: &Config, bind_from_flag: bool) -> Error {
    let Some(setting) = setting_of(&e) else {
        return e;
    };
    let set_in = if setting == "bind" && bind_from_flag {
        "set by --bind".to_string()
    } else {
        set_in(config, SERVE_SECTION, setting)
    };
    Error::new(
        e.kind(),
        format!("`{SERVE_SECTION}.{setting}`: {}; {set_in}", e.message()),
    )
    .with_retryable(e.is_retryable())
}

/// [`gotrue_issuer`] when the auth section needs an issuer, with the URL
/// clients will reach the server at. Nothing else is resolved early: a
/// configured `public_url` needs no address, and a bind to port 0 stays
/// with the server when no issuer is made from it.
async fn gotrue_issuer_before_bind(config: &mut Config, serve: &mut ServeConfig) -> Result<()> {
    if !needs_gotrue_issuer(config) {
        return Ok(());
    }
    let public = match &serve.public_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => public_url_before_bind(serve).await?,
    };
    gotrue_issuer(config, &public);
    Ok(())
}

/// Whether the auth section is `jwt` without an `issuer` setting.
fn needs_gotrue_issuer(config: &Config) -> bool {
    let auth = config.section(Interface::Auth);
    auth.kind() == "jwt" && !auth.settings().contains_key("issuer")
}

/// The URL clients will reach the server at (`public_url`, else
/// `http://<bound address>`), known before the server binds: a bind to
/// port 0 is given a free port now.
async fn public_url_before_bind(serve: &mut ServeConfig) -> Result<String> {
    let cannot = |e: std::io::Error| {
        truststream_core_realtime::listen_error("serve", "bind", &serve.bind, e)
    };
    let addr = tokio::net::lookup_host(&serve.bind)
        .await
        .map_err(cannot)?
        .next()
        .ok_or_else(|| {
            Error::invalid_input(format!("serve: bind {} names no address", serve.bind))
                .with_context(SETTING, "bind")
        })?;
    let addr = if addr.port() == 0 {
        let probe = std::net::TcpListener::bind(addr).map_err(cannot)?;
        let addr = probe.local_addr().map_err(cannot)?;
        serve.bind = addr.to_string();
        addr
    } else {
        addr
    };
    Ok(serve.public_url(addr))
}

/// Sets the `jwt` auth provider's `issuer` to `<public>/auth/v1` (GoTrue's
/// `iss`) unless the configuration sets one.
fn gotrue_issuer(config: &mut Config, public: &str) {
    if !needs_gotrue_issuer(config) {
        return;
    }
    let auth = config.section(Interface::Auth);
    let mut settings = auth.settings().clone();
    settings.insert(
        "issuer".into(),
        Value::String(format!("{}/auth/v1", public.trim_end_matches('/'))),
    );
    let section = ProviderSection::new("jwt", settings).with_layers(auth.layers().clone());
    config.set_section(Interface::Auth, section);
}

/// Storage types that sign their own URLs and serve answers at
/// `/storage/v1/signed` (through `Storage::fetch_signed`).
const SELF_SIGNING_STORAGE: [&str; 2] = ["fs", "memory"];

/// The path under the public URL where serve answers them.
const SIGNED_URL_PATH: &str = "/storage/v1/signed";

/// Sets the `base_url` of an `fs` or `memory` storage that has none to
/// `<public url>/storage/v1/signed`, so the signed URLs it makes are
/// answered by this server (their own default, `fs://local`, is answered
/// by nothing). The public URL is `public_url`, else `http://<bind>`; with
/// neither a `public_url` nor a fixed port (a port-0 bind not yet
/// resolved) the storage keeps its default rather than the server binding
/// early for it.
async fn served_signed_urls(config: &mut Config, serve: &ServeConfig) {
    let storage = config.section(Interface::Storage);
    if !SELF_SIGNING_STORAGE.contains(&storage.kind())
        || storage.settings().contains_key("base_url")
    {
        return;
    }
    let public = match &serve.public_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => {
            let addr = tokio::net::lookup_host(&serve.bind)
                .await
                .ok()
                .and_then(|mut a| a.next());
            match addr {
                Some(addr) if addr.port() != 0 => serve.public_url(addr),
                _ => return,
            }
        }
    };
    signed_url_base(config, &public);
}

/// Sets the storage section's `base_url` to `<public>/storage/v1/signed`
/// (the section's type, other settings and layers kept).
fn signed_url_base(config: &mut Config, public: &str) {
    let storage = config.section(Interface::Storage);
    let mut settings = storage.settings().clone();
    settings.insert(
        "base_url".into(),
        Value::String(format!("{}{SIGNED_URL_PATH}", public.trim_end_matches('/'))),
    );
    let section =
        ProviderSection::new(storage.kind(), settings).with_layers(storage.layers().clone());
    config.set_section(Interface::Storage, section);
}

/// `/metrics` when some section has the metrics layer.
fn metrics_renderer(config: &Config) -> Option<truststream_serve::MetricsRenderer> {
    #[cfg(feature = "layer-metrics")]
    {
        let configured = Interface::ALL.iter().any(|i| {
            config
                .section(*i)
                .layers()
                .get("metrics")
                .is_some_and(|v| v != &Value::Bool(false))
        });
        if configured {
            match truststream_layer_metrics::install_prometheus() {
                Ok(exporter) => return Some(Arc::new(move || exporter.render())),
                Err(e) => tracing::warn!(error = %e, "serve: /metrics disabled"),
            }
        }
        None
    }
    #[cfg(not(feature = "layer-metrics"))]
    {
        let _ = config;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ConfigSources;

    fn auth_of(toml: &str) -> ProviderSection {
        let mut config = ConfigSources::new()
            .toml_str(toml.to_string())
            .load()
            .expect("config");
        gotrue_issuer(&mut config, "http://127.0.0.1:54321/");
        config.section(Interface::Auth).clone()
    }

    #[test]
    fn jwt_auth_issues_as_gotrue_unless_an_issuer_is_set() {
        let s = auth_of(
            "[default.auth]\ntype = \"jwt\"\njwt_secret = \"a secret of 32 bytes or more, really\"\n\
             [default.auth.layers.timeout]\nms = 5000\n",
        );
        assert_eq!(
            s.settings()["issuer"],
            "http://127.0.0.1:54321/auth/v1",
            "GoTrue's iss"
        );
        assert!(s.layers().contains_key("timeout"), "layers kept");
        let s = auth_of(
            "[default.auth]\ntype = \"jwt\"\njwt_secret = \"a secret of 32 bytes or more, really\"\n\
             issuer = \"mine\"\n",
        );
        assert_eq!(s.settings()["issuer"], "mine", "a configured issuer stays");
    }

    /// An `fs` or `memory` storage without a `base_url` signs URLs that
    /// this server answers; a configured `base_url`, another type, or a
    /// port-0 bind without `public_url` is left alone.
    #[tokio::test]
    async fn self_signing_storage_signs_urls_this_server_answers() {
        let base_of = |config: &Config| {
            config
                .section(Interface::Storage)
                .settings()
                .get("base_url")
                .cloned()
        };
        let serve = |bind: &str, public: Option<&str>| ServeConfig {
            bind: bind.into(),
            public_url: public.map(str::to_string),
            ..ServeConfig::default()
        };
        let fs = "[default.storage]\ntype = \"fs\"\nroot = \"/tmp/x\"\n\
                  [default.storage.layers.timeout]\nms = 5000\n";
        let mut c = loaded(fs);
        served_signed_urls(&mut c, &serve("127.0.0.1:54321", None)).await;
        assert_eq!(
            base_of(&c),
            Some(Value::from("http://127.0.0.1:54321/storage/v1/signed"))
        );
        let s = c.section(Interface::Storage);
        assert_eq!(s.kind(), "fs");
        assert_eq!(s.settings()["root"], "/tmp/x", "settings kept");
        assert!(s.layers().contains_key("timeout"), "layers kept");

        let mut c = loaded("[default.storage]\ntype = \"memory\"\n");
        served_signed_urls(&mut c, &serve("127.0.0.1:0", Some("https://api.example/"))).await;
        assert_eq!(
            base_of(&c),
            Some(Value::from("https://api.example/storage/v1/signed"))
        );

        for (toml, s) in [
            (
                "[default.storage]\ntype = \"fs\"\nbase_url = \"http://mine/files\"\n",
                serve("127.0.0.1:54321", None),
            ),
            (
                "[default.storage]\ntype = \"fs\"\n",
                serve("127.0.0.1:0", None),
            ),
        ] {
            let mut c = loaded(toml);
            let before = base_of(&c);
            served_signed_urls(&mut c, &s).await;
            assert_eq!(base_of(&c), before, "{toml} on {}", s.bind);
        }
    }

    fn loaded(toml: &str) -> Config {
        ConfigSources::new()
            .toml_str(toml.to_string())
            .load()
            .expect("config")
    }

    /// A port-0 bind is resolved early only when an issuer is made from
    /// the bound address: not with a configured `public_url` or `issuer`,
    /// nor for another auth type.
    #[tokio::test]
    async fn a_port_0_bind_is_resolved_early_only_for_an_issuer_made_from_it() {
        let jwt = "[default.auth]\ntype = \"jwt\"\njwt_secret = \"a secret of 32 bytes or more, really\"\n";
        let cases = [
            (format!("{jwt}issuer = \"mine\"\n"), None, "mine"),
            (
                jwt.to_string(),
                Some("https://api.example.com/"),
                "https://api.example.com/auth/v1",
            ),
        ];
        for (toml, public, issuer) in cases {
            let mut config = loaded(&toml);
            let mut serve = ServeConfig::from_json(serde_json::json!({})).expect("serve");
            serve.bind = "127.0.0.1:0".into();
            serve.public_url = public.map(str::to_string);
            gotrue_issuer_before_bind(&mut config, &mut serve)
                .await
                .expect("issuer");
            assert_eq!(serve.bind, "127.0.0.1:0", "{toml}");
            assert_eq!(config.section(Interface::Auth).settings()["issuer"], issuer);
        }
        let mut config = loaded(jwt);
        let mut serve = ServeConfig::from_json(serde_json::json!({})).expect("serve");
        serve.bind = "127.0.0.1:0".into();
        gotrue_issuer_before_bind(&mut config, &mut serve)
            .await
            .expect("issuer");
        assert_ne!(serve.bind, "127.0.0.1:0", "resolved for the issuer");
        assert_eq!(
            config.section(Interface::Auth).settings()["issuer"],
            format!("http://{}/auth/v1", serve.bind)
        );
    }
}
