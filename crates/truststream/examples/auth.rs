//! Users on the embedded default (auth-jwt, its tables in the configured
//! database): sign-up, sign-in, a refresh, token validation, permissions,
//! and the guide's `requireAuth` guarding axum routes.
//!
//! ```sh
//! cargo run -p truststream --example auth
//! ```

use std::path::Path;
use std::sync::Arc;

use axum::{routing::get, Router};
use truststream::http::{require_auth, Authenticated};
use truststream::prelude::*;
use truststream::ConfigSources;

/// What the run saw.
#[derive(Debug)]
pub struct Report {
    /// The signed-in user's id.
    pub user_id: String,
    /// Their roles.
    pub roles: Vec<String>,
    /// Whether they may `write:agents` (members may) and `delete:agents`
    /// (only admins may).
    pub may_write: bool,
    /// See `may_write`.
    pub may_delete: bool,
    /// The old refresh token was refused when presented a second time.
    pub reused_refresh_refused: bool,
    /// ... and that revoked the session: its access token no longer validates.
    pub session_revoked: bool,
    /// HTTP statuses: `/me` without a token, `/me` with one,
    /// `/agents/delete` with the member's token.
    pub statuses: [u16; 3],
    /// The body of the authorised `/me`.
    pub me: String,
}

/// The application's routes: `/me` for any signed-in user,
/// `/agents/delete` for holders of `delete:agents`.
pub fn app(auth: Arc<dyn Auth>) -> Result<Router> {
    async fn me(Authenticated(principal): Authenticated) -> String {
        principal.user_id
    }
    Ok(Router::new()
        .route("/me", get(me).layer(require_auth(auth.clone(), None)?))
        .route(
            "/agents/delete",
            get(|| async { "deleted" }).layer(require_auth(auth, Some("delete:agents"))?),
        ))
}

/// Runs the auth calls, then serves [`app`] on a loopback port and calls it.
pub async fn run(runtime: &Runtime) -> Result<Report> {
    let auth = runtime
        .auth()
        .ok_or_else(|| Error::internal("no auth provider configured"))?;

    auth.sign_up(SignUp::new(
        "ada@example.com",
        "correct horse battery staple",
    ))
    .await?;
    let session = auth
        .sign_in(SignIn::new(
            "ada@example.com",
            "correct horse battery staple",
        ))
        .await?;
    let principal = auth.validate_token(session.access_token.expose()).await?;
    let may_write = auth.has_permission(&principal, "write:agents").await?;
    let may_delete = auth.has_permission(&principal, "delete:agents").await?;

    // A refresh rotates the refresh token: the new session replaces the old.
    let fresh = auth.refresh_session(session.refresh_token.expose()).await?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| Error::internal(e.to_string()))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::internal(e.to_string()))?;
    let app = app(auth.clone())?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let http = reqwest::Client::new();
    let get = |path: &str, token: Option<&str>| {
        let mut req = http.get(format!("http://{addr}{path}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    let net = |e: reqwest::Error| Error::internal(e.to_string());
    let token = fresh.access_token.expose();
    let anonymous = get("/me", None).await.map_err(net)?;
    let signed_in = get("/me", Some(token)).await.map_err(net)?;
    let signed_in_status = signed_in.status().as_u16();
    let me = signed_in.text().await.map_err(net)?;
    let forbidden = get("/agents/delete", Some(token)).await.map_err(net)?;
    server.abort();

    // Presenting a used refresh token again (past `refresh_reuse_interval_ms`,
    // 0 here, 10 s by default for two tabs refreshing at once) is taken as
    // theft: refused, and the whole session is revoked.
    let reused_refresh_refused = auth
        .refresh_session(session.refresh_token.expose())
        .await
        .is_err();
    let session_revoked = auth.validate_token(token).await.is_err();

    Ok(Report {
        user_id: principal.user_id,
        roles: principal.roles,
        may_write,
        may_delete,
        reused_refresh_refused,
        session_revoked,
        statuses: [
            anonymous.status().as_u16(),
            signed_in_status,
            forbidden.status().as_u16(),
        ],
        me,
    })
}

/// The embedded default with auth-jwt: users in the SQLite database under
/// `dir`; members may read anything and write agents.
pub async fn embedded_runtime(dir: &Path) -> Result<Runtime> {
    let toml = format!(
        "[default.database]\ntype = \"sqlite\"\npath = {:?}\n\
         [default.auth]\ntype = \"jwt\"\n\
         jwt_secret = \"an example secret of at least 32 bytes, from the environment in production\"\n\
         default_roles = [\"member\"]\nrefresh_reuse_interval_ms = 0\n\
         [default.auth.roles]\nadmin = [\"*\"]\nmember = [\"read:*\", \"write:agents\"]\n",
        dir.join("app.db"),
    );
    let config = ConfigSources::new().toml_str(&toml).load()?;
    Runtime::builder().config(config).build().await
}

#[tokio::main]
async fn main() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::internal(e.to_string()))?;
    let runtime = embedded_runtime(dir.path()).await?;
    let r = run(&runtime).await?;
    println!("signed in as {} with roles {:?}", r.user_id, r.roles);
    println!(
        "write:agents {}, delete:agents {}",
        r.may_write, r.may_delete
    );
    println!(
        "a used refresh token presented again: refused {}, session revoked {}",
        r.reused_refresh_refused, r.session_revoked
    );
    println!(
        "GET /me without a token: {}, with one: {} ({}); GET /agents/delete: {}",
        r.statuses[0], r.statuses[1], r.me, r.statuses[2]
    );
    Ok(())
}
