//! `require_auth` over real HTTP: an axum server on 127.0.0.1:0, requests
//! with reqwest, auth-jwt over an in-memory database.
#![allow(clippy::unwrap_used)] // test helpers, not library code

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use serde_json::Value;
use truststream_auth_http::{require_auth, Authenticated};
use truststream_auth_jwt::{Argon2Cost, JwtAuth, JwtAuthConfig};
use truststream_core_auth::{Auth, ErrorKind, SignUp};
use truststream_core_db::Database;

struct Server {
    base: String,
    auth: Arc<JwtAuth>,
    db: Arc<truststream_db_memory::MemoryDatabase>,
    client: reqwest::Client,
}

async fn me(Authenticated(p): Authenticated) -> String {
    p.user_id
}

async fn server() -> Server {
    let db = Arc::new(truststream_db_memory::MemoryDatabase::new());
    let mut cfg = JwtAuthConfig::with_secret("http test secret, at least 32 bytes");
    cfg.argon2 = Argon2Cost::minimal();
    cfg.default_roles = vec!["member".into()];
    cfg.roles.insert(
        "member".into(),
        vec!["read:*".into(), "write:agents".into()],
    );
    let auth = Arc::new(JwtAuth::new(cfg, db.clone()).await.unwrap());
    let dyn_auth: Arc<dyn Auth> = auth.clone();
    let app = Router::new()
        .route("/public", get(|| async { "hello" }))
        .route(
            "/me",
            get(me).layer(require_auth(dyn_auth.clone(), None).unwrap()),
        )
        .route(
            "/agents",
            get(me).layer(require_auth(dyn_auth.clone(), Some("read:agents")).unwrap()),
        )
        .route(
            "/agents/delete",
            get(me).layer(require_auth(dyn_auth, Some("delete:agents")).unwrap()),
        )
        // A handler that asks for the principal without the layer.
        .route("/forgot-the-layer", get(me));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Server {
        base: format!("http://{addr}"),
        auth,
        db,
        client: reqwest::Client::new(),
    }
}

impl Server {
    async fn get(&self, path: &str, authorization: Option<&str>) -> (u16, Option<String>, String) {
        let mut req = self.client.get(format!("{}{path}", self.base));
        if let Some(a) = authorization {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let challenge = resp
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_string());
        (status, challenge, resp.text().await.unwrap())
    }

    async fn token(&self) -> (String, String) {
        static N: AtomicU64 = AtomicU64::new(0);
        let email = format!("u{}@example.com", N.fetch_add(1, Ordering::Relaxed));
        let s = self
            .auth
            .sign_up(SignUp::new(email, "correct horse battery"))
            .await
            .unwrap();
        (s.access_token.expose().to_string(), s.user.id)
    }
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_malformed_credentials_are_401_with_a_json_error() {
    let s = server().await;
    assert_eq!(s.get("/public", None).await.0, 200);
    for auth in [
        None,
        Some("Basic dXNlcjpwdw=="),
        Some("Bearer"),
        Some("Bearer  "),
    ] {
        let (status, challenge, body) = s.get("/me", auth).await;
        assert_eq!(status, 401, "{auth:?}");
        assert_eq!(challenge.as_deref(), Some("Bearer"), "{auth:?}");
        assert_eq!(json(&body)["code"], "unauthenticated", "{auth:?}");
        assert_eq!(json(&body)["error"], "authentication required");
    }
    for token in ["garbage", "a.b.c", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."] {
        let (status, challenge, body) = s.get("/me", Some(&format!("Bearer {token}"))).await;
        assert_eq!(status, 401, "{token}");
        assert_eq!(challenge.as_deref(), Some("Bearer error=\"invalid_token\""));
        assert_eq!(json(&body)["code"], "invalid_token");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_reaches_the_handler_with_its_principal() {
    let s = server().await;
    let (token, user_id) = s.token().await;
    let (status, _, body) = s.get("/me", Some(&format!("Bearer {token}"))).await;
    assert_eq!((status, body.as_str()), (200, user_id.as_str()));
    // Scheme is case-insensitive.
    assert_eq!(s.get("/me", Some(&format!("bearer {token}"))).await.0, 200);
    // Permission granted by a wildcard.
    let (status, _, body) = s.get("/agents", Some(&format!("Bearer {token}"))).await;
    assert_eq!((status, body.as_str()), (200, user_id.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_permission_is_403() {
    let s = server().await;
    let (token, _) = s.token().await;
    let (status, challenge, body) = s
        .get("/agents/delete", Some(&format!("Bearer {token}")))
        .await;
    assert_eq!(status, 403);
    assert_eq!(challenge, None);
    let b = json(&body);
    assert_eq!(b["code"], "permission_denied");
    assert_eq!(b["permission"], "delete:agents");
    // No token at all on a permission route is still 401, not 403.
    assert_eq!(s.get("/agents/delete", None).await.0, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_out_session_is_401_and_a_database_outage_is_503() {
    let s = server().await;
    let (token, _) = s.token().await;
    let p = s.auth.validate_token(&token).await.unwrap();
    s.auth.sign_out(&p).await.unwrap();
    assert_eq!(s.get("/me", Some(&format!("Bearer {token}"))).await.0, 401);

    let (token, _) = s.token().await;
    s.db.disconnect().await.unwrap();
    assert_eq!(
        s.auth.validate_token(&token).await.unwrap_err().kind(),
        ErrorKind::Unavailable
    );
    let (status, _, body) = s.get("/me", Some(&format!("Bearer {token}"))).await;
    assert_eq!(status, 503);
    assert_eq!(json(&body)["code"], "unavailable");
    s.db.connect().await.unwrap();
    assert_eq!(s.get("/me", Some(&format!("Bearer {token}"))).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_extractor_without_the_layer_refuses() {
    let s = server().await;
    let (token, _) = s.token().await;
    let (status, _, _) = s
        .get("/forgot-the-layer", Some(&format!("Bearer {token}")))
        .await;
    assert_eq!(status, 401);
}

#[test]
fn a_malformed_permission_is_refused_when_the_layer_is_built() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let auth: Arc<dyn Auth> = rt.block_on(async {
        let mut cfg = JwtAuthConfig::with_secret("http test secret, at least 32 bytes");
        cfg.argon2 = Argon2Cost::minimal();
        Arc::new(
            JwtAuth::new(cfg, Arc::new(truststream_db_memory::MemoryDatabase::new()))
                .await
                .unwrap(),
        )
    });
    let e = require_auth(auth, Some("read agents")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}
