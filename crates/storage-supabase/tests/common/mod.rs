//! An in-process `truststream serve` over storage-fs in a tempdir: the real
//! Storage API server these tests talk to.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use truststream_auth_jwt::{Argon2Cost, JwtAuth, JwtAuthConfig};
use truststream_core_db::Database;
use truststream_core_storage::Storage;
use truststream_db_memory::MemoryDatabase;
use truststream_serve::{ApiKeys, BucketPolicy, Providers, Running, ServeConfig, Server};
use truststream_storage_supabase::{SupabaseStorage, SupabaseStorageConfig};

/// A running server and what a client needs to reach it.
pub struct Served {
    /// The project URL (`http://127.0.0.1:<port>`).
    pub url: String,
    pub service: String,
    pub anon: String,
    pub running: Running,
    pub dir: tempfile::TempDir,
    /// The auth provider behind `/auth/v1` (to sign users up).
    pub auth: Arc<JwtAuth>,
}

impl Served {
    /// A provider with the service-role key.
    pub fn service_client(&self) -> SupabaseStorage {
        SupabaseStorage::new(SupabaseStorageConfig::service_role(
            &self.url,
            &self.service,
        ))
        .unwrap()
    }
}

/// Starts `truststream serve` (storage-fs, db-memory, auth-jwt) on a free
/// port, uploads limited to `max_upload_bytes`.
pub async fn serve(max_upload_bytes: u64) -> Served {
    serve_with(max_upload_bytes, BTreeMap::new()).await
}

/// Like [`serve`], with bucket policies.
pub async fn serve_with(max_upload_bytes: u64, buckets: BTreeMap<String, BucketPolicy>) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let db: Arc<dyn Database> = Arc::new(MemoryDatabase::new());
    let mut cfg = JwtAuthConfig::with_secret("storage-supabase test secret, 32+ bytes long");
    cfg.argon2 = Argon2Cost::minimal();
    let auth = Arc::new(JwtAuth::new(cfg, db.clone()).await.unwrap());
    let storage: Arc<dyn Storage> = Arc::new(
        truststream_storage_fs::FsStorage::open(dir.path().join("objects"))
            .await
            .unwrap(),
    );
    let config = ServeConfig {
        bind: "127.0.0.1:0".into(),
        data_dir: dir.path().join("data").to_string_lossy().into(),
        max_upload_bytes,
        buckets,
        ..ServeConfig::default()
    };
    let providers = Providers {
        db,
        auth: auth.clone(),
        storage,
        metrics: None,
    };
    let running = Server::bind(providers, ApiKeys::generate(), config)
        .await
        .unwrap()
        .spawn();
    Served {
        url: running.url.clone(),
        service: running.keys.service_role().to_string(),
        anon: running.keys.anon().to_string(),
        running,
        dir,
        auth,
    }
}
