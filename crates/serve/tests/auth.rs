//! `/auth/v1` over the JWT auth provider, driven over HTTP as auth-js
//! drives it.
#![allow(clippy::unwrap_used)] // test helpers, not library code

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use reqwest::{Client, Response, StatusCode};
use serde_json::{json, Map, Value};
use sha2::Sha256;
use truststream_auth_jwt::{Argon2Cost, JwtAuth, JwtAuthConfig};
use truststream_core_auth::Auth;
use truststream_core_db::Database;
use truststream_serve::{ApiKeys, Providers, Running, ServeConfig, Server};

const SECRET: &str = "an HS256 secret for the auth tests, 32+ bytes";
const PASSWORD: &str = "correct horse battery";

struct Env {
    server: Running,
    http: Client,
    _dir: Option<tempfile::TempDir>,
}

async fn jwt_auth(db: Arc<dyn Database>) -> Arc<dyn Auth> {
    let mut cfg = JwtAuthConfig::with_secret(SECRET);
    cfg.argon2 = Argon2Cost::minimal();
    cfg.refresh_reuse_interval_ms = 0;
    Arc::new(JwtAuth::new(cfg, db).await.unwrap())
}

async fn start_over(
    db: Arc<dyn Database>,
    config: ServeConfig,
    dir: Option<tempfile::TempDir>,
) -> Env {
    let auth = jwt_auth(db.clone()).await;
    start_with_auth(db, auth, config, dir).await
}

async fn start_with_auth(
    db: Arc<dyn Database>,
    auth: Arc<dyn Auth>,
    config: ServeConfig,
    dir: Option<tempfile::TempDir>,
) -> Env {
    let providers = Providers {
        db,
        auth,
        storage: Arc::new(truststream_storage_memory::MemoryStorage::new()),
        metrics: None,
    };
    let config = ServeConfig {
        bind: "127.0.0.1:0".into(),
        ..config
    };
    let server = Server::bind(providers, ApiKeys::generate(), config)
        .await
        .unwrap()
        .spawn();
    Env {
        server,
        http: Client::new(),
        _dir: dir,
    }
}

async fn start_with(config: ServeConfig) -> Env {
    let db: Arc<dyn Database> = Arc::new(truststream_db_memory::MemoryDatabase::new());
    start_over(db, config, None).await
}

async fn start() -> Env {
    start_with(ServeConfig::default()).await
}

async fn start_sqlite() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let db = truststream_db_sqlite::SqliteDatabase::open(
        truststream_db_sqlite::SqliteConfig::file(dir.path().join("auth.db")),
    )
    .await
    .unwrap();
    start_over(Arc::new(db), ServeConfig::default(), Some(dir)).await
}

impl Env {
    fn url(&self, path: &str) -> String {
        format!("{}/auth/v1{path}", self.server.url)
    }

    fn anon(&self) -> &str {
        self.server.keys.anon()
    }

    /// A request with the anon key, as auth-js sends one (no version
    /// header: the legacy error shape).
    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .header("apikey", self.anon())
    }

    fn post(&self, path: &str, body: Value) -> reqwest::RequestBuilder {
        self.req(reqwest::Method::POST, path).json(&body)
    }

    fn user_req(&self, method: reqwest::Method, token: &str) -> reqwest::RequestBuilder {
        self.req(method, "/user").bearer_auth(token)
    }

    async fn signup(&self, email: &str, password: &str, data: Value) -> Response {
        self.post(
            "/signup",
            json!({"email": email, "password": password, "data": data}),
        )
        .send()
        .await
        .unwrap()
    }

    async fn sign_in(&self, email: &str, password: &str) -> Response {
        self.post(
            "/token?grant_type=password",
            json!({"email": email, "password": password}),
        )
        .send()
        .await
        .unwrap()
    }

    async fn refresh(&self, token: &str) -> Response {
        self.post(
            "/token?grant_type=refresh_token",
            json!({ "refresh_token": token }),
        )
        .send()
        .await
        .unwrap()
    }

    async fn session(&self, email: &str) -> Value {
        let res = self.signup(email, PASSWORD, json!({})).await;
        assert_eq!(res.status(), StatusCode::OK);
        res.json().await.unwrap()
    }
}

fn payload(jwt: &str) -> Map<String, Value> {
    let part = jwt.split('.').nth(1).expect("a JWT has three parts");
    let bytes = URL_SAFE_NO_PAD.decode(part).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// An HS256 JWT of `claims` signed with `secret`.
fn sign(secret: &str, claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let input = format!("{header}.{body}");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(input.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{input}.{sig}")
}

/// Checks a legacy-shape error: `{code: <status>, error_code, msg}` and the
/// `x-sb-error-code` header.
async fn assert_legacy_error(res: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(res.status(), status);
    assert_eq!(
        res.headers()
            .get("x-sb-error-code")
            .and_then(|v| v.to_str().ok()),
        Some(code)
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["code"], json!(status.as_u16()), "{body}");
    assert_eq!(body["error_code"], json!(code), "{body}");
    assert!(
        body["msg"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body
}

fn assert_session_shape(s: &Value, email: &str) {
    assert_eq!(s["token_type"], "bearer");
    assert!(s["access_token"]
        .as_str()
        .is_some_and(|t| t.split('.').count() == 3));
    assert!(s["refresh_token"].as_str().is_some_and(|t| !t.is_empty()));
    let expires_in = s["expires_in"].as_i64().unwrap();
    assert!((800..=900).contains(&expires_in), "{expires_in}");
    let expires_at = s["expires_at"].as_i64().unwrap();
    let now = chrono::Utc::now().timestamp();
    assert!((expires_at - now - expires_in).abs() <= 2);
    let u = &s["user"];
    assert_user_shape(u, email);
    assert!(u["last_sign_in_at"].is_string());
}

fn assert_user_shape(u: &Value, email: &str) {
    assert!(u["id"].as_str().is_some_and(|id| id.len() == 36), "{u}");
    assert_eq!(u["aud"], "authenticated");
    assert_eq!(u["role"], "authenticated");
    assert_eq!(u["email"], email);
    assert_eq!(u["phone"], "");
    assert_eq!(u["app_metadata"]["provider"], "email");
    assert_eq!(u["app_metadata"]["providers"], json!(["email"]));
    assert!(u["user_metadata"].is_object());
    assert_eq!(u["identities"], json!([]));
    assert_eq!(u["is_anonymous"], false);
    for k in [
        "created_at",
        "updated_at",
        "confirmed_at",
        "email_confirmed_at",
    ] {
        let t = u[k].as_str().unwrap_or_else(|| panic!("{k} in {u}"));
        chrono::DateTime::parse_from_rfc3339(t).unwrap();
    }
}

#[tokio::test]
async fn signup_answers_a_session_with_supabase_claims() {
    let env = start().await;
    let res = env
        .signup("Ada@Example.com", PASSWORD, json!({"name": "Ada"}))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let s: Value = res.json().await.unwrap();
    assert_session_shape(&s, "ada@example.com");
    assert_eq!(s["user"]["user_metadata"], json!({"name": "Ada"}));

    let c = payload(s["access_token"].as_str().unwrap());
    assert_eq!(c["iss"], "truststream");
    assert_eq!(c["sub"], s["user"]["id"]);
    assert_eq!(c["aud"], "authenticated");
    assert_eq!(c["exp"], s["expires_at"]);
    let iat = c["iat"].as_i64().unwrap();
    assert!((iat - chrono::Utc::now().timestamp()).abs() <= 5);
    assert_eq!(c["email"], "ada@example.com");
    assert_eq!(c["phone"], "");
    assert_eq!(c["app_metadata"]["provider"], "email");
    assert_eq!(c["user_metadata"], json!({"name": "Ada"}));
    assert_eq!(c["role"], "authenticated");
    assert_eq!(c["aal"], "aal1");
    let amr = c["amr"].as_array().unwrap();
    assert_eq!(amr.len(), 1);
    assert_eq!(amr[0]["method"], "password");
    assert!((amr[0]["timestamp"].as_i64().unwrap() - iat).abs() <= 5);
    assert!(c["session_id"].as_str().is_some_and(|s| s.len() == 36));
    assert_eq!(c["is_anonymous"], false);

    // The same email again.
    let res = env.signup("ada@example.com", PASSWORD, json!({})).await;
    let body =
        assert_legacy_error(res, StatusCode::UNPROCESSABLE_ENTITY, "user_already_exists").await;
    assert_eq!(body["msg"], "User already registered");
}

#[tokio::test]
async fn signup_input_errors() {
    let env = start().await;
    let res = env.signup("ada@example.com", "short", json!({})).await;
    let body = assert_legacy_error(res, StatusCode::UNPROCESSABLE_ENTITY, "weak_password").await;
    assert!(body["weak_password"]["reasons"].is_array(), "{body}");
    let res = env.signup("not an email", PASSWORD, json!({})).await;
    assert_legacy_error(res, StatusCode::BAD_REQUEST, "validation_failed").await;
    let res = env
        .post("/signup", json!({"email": "ada@example.com"}))
        .send()
        .await
        .unwrap();
    assert_legacy_error(res, StatusCode::BAD_REQUEST, "validation_failed").await;
    let res = env
        .post(
            "/signup",
            json!({"phone": "+15555550100", "password": PASSWORD}),
        )
        .send()
        .await
        .unwrap();
    assert_legacy_error(res, StatusCode::BAD_REQUEST, "phone_provider_disabled").await;
    let res = env
        .post(
            "/signup",
            json!({"email": "ada@example.com", "password": PASSWORD, "data": "x"}),
        )
        .send()
        .await
        .unwrap();
    assert_legacy_error(res, StatusCode::BAD_REQUEST, "bad_json").await;
    // Nothing was made by the failures.
    let res = env.sign_in("ada@example.com", PASSWORD).await;
    assert_legacy_error(res, StatusCode::BAD_REQUEST, "invalid_credentials").await;
}

#[tokio::test]
async fn password_sign_in_and_wrong_password_in_both_error_shapes() {
    let env = start().await;
    env.session("ada@example.com").await;
    let res = env.sign_in("ADA@example.com", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK);
    let s: Value = res.json().await.unwrap();
    assert_session_shape(&s, "ada@example.com");

    let res = env.sign_in("ada@example.com", "wrong password!").await;
    let body = assert_legacy_error(res, StatusCode::BAD_REQUEST, "invalid_credentials").await;
    assert_eq!(body["msg"], "Invalid login credentials");
    // An unknown email answers the same.
    let res = env.sign_in("bob@example.com", PASSWORD).await;
    let body2 = assert_legacy_error(res, StatusCode::BAD_REQUEST, "invalid_credentials").await;
    assert_eq!(body, body2);

    // auth-js sends the version header and reads `code` as a string when
    // the answer carries the header too.
    let res = env
        .post(
            "/token?grant_type=password",
            json!({"email": "ada@example.com", "password": "wrong password!"}),
        )
        .header("X-Supabase-Api-Version", "2024-01-01")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(res.headers()["x-supabase-api-version"], "2024-01-01");
    assert_eq!(res.headers()["x-sb-error-code"], "invalid_credentials");
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body,
        json!({"code": "invalid_credentials", "message": "Invalid login credentials"})
    );
}

#[tokio::test]
async fn grant_types() {
    let env = start().await;
    for q in ["?grant_type=pkce", "?grant_type=id_token", ""] {
        let res = env
            .post(&format!("/token{q}"), json!({}))
            .send()
            .await
            .unwrap();
        assert_legacy_error(res, StatusCode::BAD_REQUEST, "unsupported_grant_type").await;
    }
}

#[tokio::test]
async fn refresh_rotates_and_a_reused_token_is_refused() {
    let env = start().await;
    let s = env.session("ada@example.com").await;
    let first = s["refresh_token"].as_str().unwrap();
    let res = env.refresh(first).await;
    assert_eq!(res.status(), StatusCode::OK);
    let s2: Value = res.json().await.unwrap();
    assert_session_shape(&s2, "ada@example.com");
    let second = s2["refresh_token"].as_str().unwrap();
    assert_ne!(first, second);
    assert_eq!(
        payload(s2["access_token"].as_str().unwrap())["session_id"],
        payload(s["access_token"].as_str().unwrap())["session_id"]
    );

    // The reuse interval is 0 here: the old token is refused ...
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let res = env.refresh(first).await;
    let body = assert_legacy_error(res, StatusCode::BAD_REQUEST, "refresh_token_not_found").await;
    assert_eq!(
        body["msg"],
        "Invalid Refresh Token: Refresh Token Not Found"
    );
    // ... and the reuse ended the session: the current token is refused too.
    let res = env.refresh(second).await;
    assert_legacy_error(res, StatusCode::BAD_REQUEST, "refresh_token_not_found").await;
    let res = env.refresh("garbage").await;
    assert_legacy_error(res, StatusCode::BAD_REQUEST, "refresh_token_not_found").await;
    let res = env
        .post("/token?grant_type=refresh_token", json!({}))
        .send()
        .await
        .unwrap();
    assert_legacy_error(res, StatusCode::BAD_REQUEST, "refresh_token_not_found").await;
}

#[tokio::test]
async fn get_and_put_user() {
    let env = start().await;
    let s = env.session("ada@example.com").await;
    let token = s["access_token"].as_str().unwrap();
    let res = env
        .user_req(reqwest::Method::GET, token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let u: Value = res.json().await.unwrap();
    assert_user_shape(&u, "ada@example.com");
    assert_eq!(u["id"], s["user"]["id"]);

    // Metadata is merged; null removes a key.
    let res = env
        .user_req(reqwest::Method::PUT, token)
        .json(&json!({"data": {"name": "Ada", "lang": "en"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = env
        .user_req(reqwest::Method::PUT, token)
        .json(&json!({"data": {"lang": null, "city": "London"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let u: Value = res.json().await.unwrap();
    assert_eq!(u["user_metadata"], json!({"name": "Ada", "city": "London"}));
    let u: Value = env
        .user_req(reqwest::Method::GET, token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(u["user_metadata"], json!({"name": "Ada", "city": "London"}));

    // A weak new password is refused; a good one replaces the old.
    let res = env
        .user_req(reqwest::Method::PUT, token)
        .json(&json!({"password": "short"}))
        .send()
        .await
        .unwrap();
    assert_legacy_error(res, StatusCode::UNPROCESSABLE_ENTITY, "weak_password").await;
    let res = env
        .user_req(reqwest::Method::PUT, token)
        .json(&json!({"password": "a brand new password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = env.sign_in("ada@example.com", PASSWORD).await;
    assert_legacy_error(res, StatusCode::BAD_REQUEST, "invalid_credentials").await;
    let res = env.sign_in("ada@example.com", "a brand new password").await;
    assert_eq!(res.status(), StatusCode::OK);

    // Email: another user's is refused, a free one taken.
    env.session("bob@example.com").await;
    let res = env
        .user_req(reqwest::Method::PUT, token)
        .json(&json!({"email": "bob@example.com"}))
        .send()
        .await
        .unwrap();
    assert_legacy_error(res, StatusCode::UNPROCESSABLE_ENTITY, "email_exists").await;
    let res = env
        .user_req(reqwest::Method::PUT, token)
        .json(&json!({"email": "ada@example.org"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let u: Value = res.json().await.unwrap();
    assert_eq!(u["email"], "ada@example.org");
    let res = env.sign_in("ada@example.org", "a brand new password").await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn user_needs_a_valid_bearer_token() {
    let env = start().await;
    let s = env.session("ada@example.com").await;
    let token = s["access_token"].as_str().unwrap();
    // No bearer token.
    let res = env.req(reqwest::Method::GET, "/user").send().await.unwrap();
    assert_legacy_error(res, StatusCode::UNAUTHORIZED, "no_authorization").await;
    // The anon key as bearer (what auth-js sends with no session).
    let res = env
        .user_req(reqwest::Method::GET, env.anon())
        .send()
        .await
        .unwrap();
    assert_legacy_error(res, StatusCode::FORBIDDEN, "bad_jwt").await;

    // Tokens made from the real one's claims: signed with the provider's
    // secret they pass (the forging works), with another secret or expired
    // they do not.
    let claims = Value::Object(payload(token));
    let resigned = sign(SECRET, &claims);
    let res = env
        .user_req(reqwest::Method::GET, &resigned)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let forged = sign("another secret of at least thirty-two bytes", &claims);
    let res = env
        .user_req(reqwest::Method::GET, &forged)
        .send()
        .await
        .unwrap();
    assert_legacy_error(res, StatusCode::FORBIDDEN, "bad_jwt").await;
    let mut expired = claims.clone();
    let past = chrono::Utc::now().timestamp() - 3600;
    expired["exp"] = json!(past);
    expired["iat"] = json!(past - 900);
    let res = env
        .user_req(reqwest::Method::GET, &sign(SECRET, &expired))
        .send()
        .await
        .unwrap();
    assert_legacy_error(res, StatusCode::FORBIDDEN, "bad_jwt").await;
    let res = env
        .user_req(reqwest::Method::PUT, &forged)
        .json(&json!({"data": {"x": 1}}))
        .send()
        .await
        .unwrap();
    assert_legacy_error(res, StatusCode::FORBIDDEN, "bad_jwt").await;
    let res = env
        .user_req(reqwest::Method::GET, "not.a.jwt")
        .send()
        .await
        .unwrap();
    assert_legacy_error(res, StatusCode::FORBIDDEN, "bad_jwt").await;
}

#[tokio::test]
async fn api_key_is_required() {
    let env = start().await;
    let s = env.session("ada@example.com").await;
    let token = s["access_token"].as_str().unwrap();
    let body = json!({"email": "bob@example.com", "password": PASSWORD});
    // No key.
    let res = env
        .http
        .post(env.url("/signup"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_legacy_error(res, StatusCode::UNAUTHORIZED, "no_api_key").await;
    // A wrong key, on every route that needs one.
    for (method, path) in [
        (reqwest::Method::POST, "/signup"),
        (reqwest::Method::POST, "/token?grant_type=password"),
        (reqwest::Method::POST, "/token?grant_type=refresh_token"),
        (reqwest::Method::GET, "/user"),
        (reqwest::Method::PUT, "/user"),
        (reqwest::Method::POST, "/logout"),
    ] {
        let res = env
            .http
            .request(method, env.url(path))
            .header("apikey", "not-a-key")
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_legacy_error(res, StatusCode::UNAUTHORIZED, "invalid_api_key").await;
    }
    // Nothing was signed up or out.
    let res = env.sign_in("bob@example.com", PASSWORD).await;
    assert_legacy_error(res, StatusCode::BAD_REQUEST, "invalid_credentials").await;
    let res = env
        .user_req(reqwest::Method::GET, token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // The public documents need none.
    for path in ["/health", "/settings", "/.well-known/jwks.json"] {
        let res = env.http.get(env.url(path)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn logout_local_and_global() {
    let env = start().await;
    let a = env.session("ada@example.com").await;
    let b: Value = env
        .sign_in("ada@example.com", PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    let c: Value = env
        .sign_in("ada@example.com", PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    let tok = |s: &Value| s["access_token"].as_str().unwrap().to_string();
    let user_status = |t: String| {
        let req = env.user_req(reqwest::Method::GET, &t);
        async move { req.send().await.unwrap().status() }
    };
    // The provider checks revocation (auth-jwt's default): a signed-out
    // session's tokens stop working at once.
    let logout = |t: String, scope: &'static str| {
        let req = env
            .req(reqwest::Method::POST, &format!("/logout?scope={scope}"))
            .bearer_auth(t);
        async move { req.send().await.unwrap() }
    };
    let res = logout(tok(&a), "nonsense").await;
    assert_legacy_error(res, StatusCode::BAD_REQUEST, "validation_failed").await;
    assert_eq!(user_status(tok(&a)).await, StatusCode::OK);

    let res = logout(tok(&a), "local").await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(user_status(tok(&a)).await, StatusCode::FORBIDDEN);
    assert_eq!(user_status(tok(&b)).await, StatusCode::OK);
    let res = env.refresh(a["refresh_token"].as_str().unwrap()).await;
    assert_legacy_error(res, StatusCode::BAD_REQUEST, "refresh_token_not_found").await;
    // The ended session's token: `session_not_found` (auth-js then clears
    // its session), on /user and on a second sign-out.
    let res = env
        .user_req(reqwest::Method::GET, &tok(&a))
        .send()
        .await
        .unwrap();
    let body = assert_legacy_error(res, StatusCode::FORBIDDEN, "session_not_found").await;
    assert_eq!(
        body["msg"],
        "Session from session_id claim in JWT does not exist"
    );
    let res = logout(tok(&a), "local").await;
    assert_legacy_error(res, StatusCode::FORBIDDEN, "session_not_found").await;

    let res = logout(tok(&b), "global").await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(user_status(tok(&b)).await, StatusCode::FORBIDDEN);
    assert_eq!(user_status(tok(&c)).await, StatusCode::FORBIDDEN);
    let res = env.refresh(c["refresh_token"].as_str().unwrap()).await;
    assert_legacy_error(res, StatusCode::BAD_REQUEST, "refresh_token_not_found").await;
    // A new sign-in works.
    assert_eq!(
        env.sign_in("ada@example.com", PASSWORD).await.status(),
        StatusCode::OK
    );
}

/// `POST /logout?scope=others` with `token`.
async fn logout_others(env: &Env, token: &str) -> Response {
    env.req(reqwest::Method::POST, "/logout?scope=others")
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn logout_others_keeps_this_session_and_ends_the_rest() {
    let env = start().await;
    let a = env.session("ada@example.com").await;
    let env = &env;
    let signed_in = |email: &'static str| async move {
        let res = env.sign_in(email, PASSWORD).await;
        assert_eq!(res.status(), StatusCode::OK);
        res.json::<Value>().await.unwrap()
    };
    let b = signed_in("ada@example.com").await;
    let c = signed_in("ada@example.com").await;
    let bob = env.session("bob@example.com").await;
    let tok = |s: &Value| s["access_token"].as_str().unwrap().to_string();
    let refresh_token = |s: &Value| s["refresh_token"].as_str().unwrap().to_string();
    let user_status = |t: String| {
        let req = env.user_req(reqwest::Method::GET, &t);
        async move { req.send().await.unwrap().status() }
    };

    let res = logout_others(env, &tok(&b)).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert!(res.bytes().await.unwrap().is_empty());
    // This session stays: its token works and its refresh token rotates.
    assert_eq!(user_status(tok(&b)).await, StatusCode::OK);
    let res = env.refresh(&refresh_token(&b)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let b2: Value = res.json().await.unwrap();
    assert_eq!(user_status(tok(&b2)).await, StatusCode::OK);
    // The user's other sessions are ended (auth-jwt checks revocation by
    // default), their refresh tokens too.
    for other in [&a, &c] {
        let res = env
            .user_req(reqwest::Method::GET, &tok(other))
            .send()
            .await
            .unwrap();
        assert_legacy_error(res, StatusCode::FORBIDDEN, "session_not_found").await;
        let res = env.refresh(&refresh_token(other)).await;
        assert_legacy_error(res, StatusCode::BAD_REQUEST, "refresh_token_not_found").await;
    }
    // Another user's session is untouched.
    assert_eq!(user_status(tok(&bob)).await, StatusCode::OK);
    let res = env.refresh(&refresh_token(&bob)).await;
    assert_eq!(res.status(), StatusCode::OK);
    // Again, with no other session left: still 204, this session still on.
    let res = logout_others(env, &tok(&b2)).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(user_status(tok(&b2)).await, StatusCode::OK);
    // An ended session cannot end the others.
    let res = logout_others(env, &tok(&a)).await;
    assert_legacy_error(res, StatusCode::FORBIDDEN, "session_not_found").await;
    // Without a user token: refused like the other scopes.
    let res = env
        .req(reqwest::Method::POST, "/logout?scope=others")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

/// What a layer over auth-jwt makes of `sign_out_others`.
#[derive(Clone, Copy)]
enum Others {
    /// Reports it absent and answers `Unsupported`: an honest provider
    /// without it.
    Refuse,
    /// Reports it absent and does it anyway: a lie.
    ReportAbsentButDo,
    /// Reports it present and answers `Unsupported`: a lie.
    ReportPresentButRefuse,
}

#[async_trait::async_trait]
impl truststream_layer::AuthLayer for Others {
    fn capabilities(&self, next: &dyn Auth) -> truststream_core_auth::AuthCapabilities {
        let mut caps = next.capabilities();
        caps.sign_out_others = matches!(self, Others::ReportPresentButRefuse);
        caps
    }
    async fn sign_out_others(
        &self,
        next: &dyn Auth,
        principal: &truststream_core_auth::Principal,
    ) -> truststream_core::Result<()> {
        match self {
            Others::ReportAbsentButDo => next.sign_out_others(principal).await,
            Others::Refuse | Others::ReportPresentButRefuse => Err(
                truststream_core::Error::unsupported("test: no sign_out_others"),
            ),
        }
    }
}

async fn jwt_auth_with(others: Others) -> Arc<dyn Auth> {
    let db: Arc<dyn Database> = Arc::new(truststream_db_memory::MemoryDatabase::new());
    Arc::new(truststream_layer::LayeredAuth::new(
        jwt_auth(db).await,
        Arc::new(others),
    ))
}

/// The auth suite's `sign_out_others` cases over auth-jwt behind `others`:
/// which failed and which were skipped.
async fn others_cases(others: Others) -> (Vec<&'static str>, Vec<&'static str>) {
    use truststream_conformance::{auth, factory, CaseOutcome};
    let report = auth::run(
        "jwt+others-layer",
        factory(move || async move {
            Ok(auth::AuthFixture {
                auth: jwt_auth_with(others).await,
                refresh_reuse_interval: std::time::Duration::ZERO,
            })
        }),
        Some("others"),
    )
    .await;
    report.print_table();
    assert_eq!(report.cases.len(), 2, "{}", report.summary());
    let failed = report
        .cases
        .iter()
        .filter(|c| matches!(c.outcome, CaseOutcome::Failed(_)))
        .map(|c| c.case)
        .collect();
    (failed, report.skipped_cases())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_sign_out_others_follows_the_capability() {
    let (failed, skipped) = others_cases(Others::Refuse).await;
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(
        skipped,
        ["signout.others_keeps_this_session_and_ends_the_rest"]
    );
    for lie in [Others::ReportAbsentButDo, Others::ReportPresentButRefuse] {
        let (failed, _) = others_cases(lie).await;
        assert!(failed.contains(&"capability.sign_out_others"), "{failed:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_layer_that_overrides_nothing_forwards_sign_out_others() {
    use truststream_conformance::{auth, factory};
    struct Nothing;
    impl truststream_layer::AuthLayer for Nothing {}
    let report = auth::run(
        "jwt+empty-layer",
        factory(|| async {
            let db: Arc<dyn Database> = Arc::new(truststream_db_memory::MemoryDatabase::new());
            let auth: Arc<dyn Auth> = Arc::new(truststream_layer::LayeredAuth::new(
                jwt_auth(db).await,
                Arc::new(Nothing),
            ));
            Ok(auth::AuthFixture {
                auth,
                refresh_reuse_interval: std::time::Duration::ZERO,
            })
        }),
        Some("others"),
    )
    .await;
    report.print_table();
    assert_eq!(report.failed(), 0, "{}", report.summary());
    assert_eq!(report.passed(), 2, "{}", report.summary());
}

#[tokio::test]
async fn logout_others_on_a_provider_without_it_is_not_supported() {
    let db: Arc<dyn Database> = Arc::new(truststream_db_memory::MemoryDatabase::new());
    let auth: Arc<dyn Auth> = Arc::new(truststream_layer::LayeredAuth::new(
        jwt_auth(db.clone()).await,
        Arc::new(Others::Refuse),
    ));
    let env = start_with_auth(db, auth, ServeConfig::default(), None).await;
    let a = env.session("ada@example.com").await;
    let b: Value = env
        .sign_in("ada@example.com", PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    let res = logout_others(&env, a["access_token"].as_str().unwrap()).await;
    assert_legacy_error(res, StatusCode::UNPROCESSABLE_ENTITY, "not_supported").await;
    // Nothing was ended.
    for s in [&a, &b] {
        let res = env
            .user_req(reqwest::Method::GET, s["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn settings_health_and_jwks() {
    let env = start().await;
    let s: Value = env
        .http
        .get(env.url("/settings"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(s["external"]["email"], true);
    assert_eq!(s["external"]["phone"], false);
    assert_eq!(s["disable_signup"], false);
    assert_eq!(s["mailer_autoconfirm"], true);
    assert_eq!(s["phone_autoconfirm"], false);
    assert_eq!(s["sms_provider"], "");
    assert_eq!(s["saml_enabled"], false);
    let h: Value = env
        .http
        .get(env.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h["name"], "GoTrue");
    assert!(h["version"].is_string() && h["description"].is_string());
    // HS256: no public keys.
    let j: Value = env
        .http
        .get(env.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(j, json!({"keys": []}));
    // An unknown route answers in the error shape.
    let res = env.req(reqwest::Method::GET, "/nope").send().await.unwrap();
    assert_legacy_error(res, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn oversized_and_malformed_bodies() {
    let env = start_with(ServeConfig {
        max_json_body_bytes: 1024,
        ..ServeConfig::default()
    })
    .await;
    let big =
        json!({"email": "ada@example.com", "password": PASSWORD, "data": {"x": "y".repeat(2000)}});
    let res = env.post("/signup", big).send().await.unwrap();
    assert_legacy_error(res, StatusCode::PAYLOAD_TOO_LARGE, "request_too_large").await;
    // Chunked (no Content-Length): the limit still holds.
    assert_eq!(chunked_status(&env, 8).await, 413);
    assert_eq!(chunked_status(&env, 1).await, 400); // whitespace only: no email
    for bad in ["{", "[1,2]", "\"x\"", "{\"email\": 1, \"password\": \"x\"}"] {
        let res = env
            .req(reqwest::Method::POST, "/signup")
            .header("content-type", "application/json")
            .body(bad)
            .send()
            .await
            .unwrap();
        assert_legacy_error(res, StatusCode::BAD_REQUEST, "bad_json").await;
    }
    let s = env.session("ada@example.com").await;
    let res = env
        .user_req(reqwest::Method::PUT, s["access_token"].as_str().unwrap())
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_legacy_error(res, StatusCode::BAD_REQUEST, "bad_json").await;
}

#[tokio::test]
async fn signup_disabled() {
    let mut config = ServeConfig::default();
    config.auth.disable_signup = true;
    let env = start_with(config).await;
    let res = env.signup("ada@example.com", PASSWORD, json!({})).await;
    assert_legacy_error(res, StatusCode::UNPROCESSABLE_ENTITY, "signup_disabled").await;
    let s: Value = env
        .http
        .get(env.url("/settings"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(s["disable_signup"], true);
    // The operator's key still makes users.
    let res = env
        .http
        .post(env.url("/signup"))
        .header("apikey", env.server.keys.service_role())
        .json(&json!({"email": "ada@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        env.sign_in("ada@example.com", PASSWORD).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn sqlite_signup_sign_in_refresh() {
    let env = start_sqlite().await;
    let s = env.session("ada@example.com").await;
    assert_session_shape(&s, "ada@example.com");
    let res = env.sign_in("ada@example.com", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = env.sign_in("ada@example.com", "wrong password!").await;
    assert_legacy_error(res, StatusCode::BAD_REQUEST, "invalid_credentials").await;
    let res = env.refresh(s["refresh_token"].as_str().unwrap()).await;
    assert_eq!(res.status(), StatusCode::OK);
    let s2: Value = res.json().await.unwrap();
    let res = env
        .user_req(reqwest::Method::GET, s2["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = env.signup("ada@example.com", PASSWORD, json!({})).await;
    assert_legacy_error(res, StatusCode::UNPROCESSABLE_ENTITY, "user_already_exists").await;
}

/// Sends `n` chunks of 256 spaces to the password grant as a chunked body
/// and returns the status code.
async fn chunked_status(env: &Env, n: usize) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut conn = tokio::net::TcpStream::connect(env.server.addr)
        .await
        .unwrap();
    let head = format!(
        "POST /auth/v1/token?grant_type=password HTTP/1.1\r\nhost: localhost\r\napikey: {}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
        env.anon()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..n {
        let chunk = format!("100\r\n{}\r\n", " ".repeat(256));
        if conn.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = conn.write_all(b"0\r\n\r\n").await;
    let mut buf = Vec::new();
    let _ = conn.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Records the auth calls that pass through a generic layer.
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<(String, truststream_layer::Access)>>);

impl truststream_layer::Around for Recorder {
    fn around<'a>(
        &'a self,
        op: truststream_layer::Op<'a>,
        next: truststream_layer::Next<'a>,
    ) -> futures::future::BoxFuture<'a, truststream_core::Result<()>> {
        self.0
            .lock()
            .unwrap()
            .push((op.method.to_string(), op.access));
        next.run()
    }
}

#[tokio::test]
async fn update_user_and_logout_others_pass_through_layers() {
    use truststream_layer::{Access, Generic, LayeredAuth};
    let db: Arc<dyn Database> = Arc::new(truststream_db_memory::MemoryDatabase::new());
    let recorder = Arc::new(Recorder::default());
    let layered: Arc<dyn Auth> = Arc::new(LayeredAuth::new(
        jwt_auth(db.clone()).await,
        Arc::new(Generic(recorder.clone())),
    ));
    let env = start_with_auth(db, layered, ServeConfig::default(), None).await;
    let s = env.session("ada@example.com").await;
    let res = env
        .user_req(reqwest::Method::PUT, s["access_token"].as_str().unwrap())
        .json(&json!({"data": {"name": "Ada"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let u: Value = res.json().await.unwrap();
    assert_eq!(u["user_metadata"], json!({"name": "Ada"}));
    let res = logout_others(&env, s["access_token"].as_str().unwrap()).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let seen = recorder.0.lock().unwrap().clone();
    for method in ["update_user", "sign_out_others"] {
        assert!(
            seen.iter().any(|(m, a)| m == method && *a == Access::Write),
            "{method}: {seen:?}"
        );
    }
}
