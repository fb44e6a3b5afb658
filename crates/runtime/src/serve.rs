//! `truststream serve`: the configured providers behind Supabase's HTTP and
//! WebSocket APIs (the `truststream-serve` crate), started from
//! configuration.

use std::sync::Arc;

use serde_json::Value;
use truststream_core::{Error, Result};
use truststream_serve::{ApiKeys, Providers, ServeConfig, Server};

use crate::config::{Config, Interface, ProviderSection, AUTH_NONE};
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
}

/// Reads the `[serve]` settings (with `bind` overridden when given), loads
/// or generates the API keys, and — a server needs an auth provider — when
/// `auth.type = "none"`, configures the `jwt` provider over the configured
/// database, signing with the secret kept beside the keys.
pub fn prepare(config: &Config, bind: Option<&str>) -> Result<Prepared> {
    let mut serve = ServeConfig::from_json(Value::Object(config.serve_settings().clone()))?;
    if let Some(b) = bind {
        serve.bind = b.to_string();
    }
    let keys = ApiKeys::load_or_generate(&serve)?;
    let mut config = config.clone();
    let embedded_auth = config.section(Interface::Auth).kind() == AUTH_NONE;
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
    })
}

/// Builds the providers of `prepared` and binds the server (not yet
/// serving: see [`Server::run`]).
pub async fn bind(registries: &Arc<Registries>, prepared: Prepared) -> Result<(Server, Services)> {
    let services = Services::build(registries, &prepared.config).await?;
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
    let server = Server::bind(providers, prepared.keys, prepared.serve).await?;
    Ok((server, services))
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
