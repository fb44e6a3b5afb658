//! A real `/auth/v1` to test against: `truststream serve` in process, its
//! auth over auth-jwt (HS256 with a known secret) on db-memory.
#![allow(dead_code, clippy::unwrap_used)] // test helpers, not library code

use std::sync::Arc;

use truststream_auth_jwt::{Argon2Cost, JwtAuth, JwtAuthConfig};
use truststream_auth_supabase::{SupabaseAuth, SupabaseAuthConfig};
use truststream_core_auth::Auth;
use truststream_core_db::Database;
use truststream_serve::{ApiKeys, Providers, Running, ServeConfig, Server};

/// The HS256 secret serve's auth-jwt signs with.
pub const SECRET: &str = "auth-supabase test secret, at least 32 bytes";
/// serve's refresh-token reuse interval.
pub const REUSE_INTERVAL_MS: u64 = 1_000;
/// The role new users get and what it grants (the conformance suite's).
pub const MEMBER_ROLE: &str = truststream_conformance::auth::MEMBER_ROLE;

/// A running server.
pub struct Gateway {
    pub server: Running,
}

impl Gateway {
    /// serve signing HS256 with [`SECRET`].
    pub async fn start() -> Gateway {
        Gateway::start_with(JwtAuthConfig::with_secret(SECRET)).await
    }

    /// serve signing ES256 with a test key, publishing its public key at
    /// `/auth/v1/.well-known/jwks.json`.
    pub async fn start_es256() -> Gateway {
        Gateway::start_with(JwtAuthConfig::with_private_key(
            truststream_auth_jwt::Algorithm::ES256,
            include_str!("../keys/ec_private.pem"),
        ))
        .await
    }

    async fn start_with(mut cfg: JwtAuthConfig) -> Gateway {
        let db: Arc<dyn Database> = Arc::new(truststream_db_memory::MemoryDatabase::new());
        // GoTrue's `iss`, `<url>/auth/v1`, as `truststream serve` gives a
        // jwt provider without an issuer: the port is picked first so the
        // URL is known before the provider is made.
        let bind = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        cfg.issuer = format!("http://{bind}/auth/v1");
        cfg.argon2 = Argon2Cost::minimal();
        cfg.refresh_reuse_interval_ms = REUSE_INTERVAL_MS;
        cfg.default_roles = vec![MEMBER_ROLE.into()];
        let auth: Arc<dyn Auth> = Arc::new(JwtAuth::new(cfg, db.clone()).await.unwrap());
        let providers = Providers {
            db,
            auth,
            storage: Arc::new(truststream_storage_memory::MemoryStorage::new()),
            metrics: None,
        };
        let config = ServeConfig {
            bind: bind.to_string(),
            ..ServeConfig::default()
        };
        let server = Server::bind(providers, ApiKeys::generate(), config)
            .await
            .unwrap()
            .spawn();
        Gateway { server }
    }

    /// auth-supabase's settings for this server (as the runtime passes
    /// them): the issuer is the default, `<url>/auth/v1`.
    pub fn settings(&self) -> serde_json::Value {
        serde_json::json!({
            "url": self.server.url,
            "anon_key": self.server.keys.anon(),
            "jwt_secret": SECRET,
            "request_timeout_ms": 20_000,
            "roles": { MEMBER_ROLE: truststream_conformance::auth::MEMBER_PERMISSIONS },
        })
    }

    pub fn config(&self) -> SupabaseAuthConfig {
        serde_json::from_value(self.settings()).unwrap()
    }

    pub fn client(&self) -> SupabaseAuth {
        SupabaseAuth::new(self.config()).unwrap()
    }
}

pub fn unique_email() -> String {
    format!(
        "sb-{}@example.com",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}
