//! Faulty servers on real sockets: a 500, an HTML page, a connection
//! closed mid-answer, a server that never answers, a port nobody listens
//! on. Each gets an error of the right kind that leaks no secret.
#![allow(clippy::unwrap_used)] // test code

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use truststream_auth_supabase::{SupabaseAuth, SupabaseAuthConfig};
use truststream_core_auth::{Auth, ErrorKind, SignIn, SignUp};

const ANON: &str = "anon-key-that-must-not-leak";
const PASSWORD: &str = "password-that-must-not-leak";

#[derive(Clone, Copy)]
enum Behaviour {
    /// Answer with this raw HTTP response, then close.
    Answer(&'static str),
    /// Read the request, then close without a word.
    Close,
    /// Read the request and never answer.
    Hang,
}

/// A TCP server that behaves as told on every connection.
async fn server(b: Behaviour) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                // One read is enough for these small requests.
                let _ = sock.read(&mut buf).await;
                match b {
                    Behaviour::Answer(raw) => {
                        let _ = sock.write_all(raw.as_bytes()).await;
                        let _ = sock.shutdown().await;
                    }
                    Behaviour::Close => drop(sock),
                    Behaviour::Hang => {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        drop(sock);
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

fn client(url: &str) -> SupabaseAuth {
    let mut cfg = SupabaseAuthConfig::new(url, ANON);
    cfg.jwt_secret = Some("a jwt secret of at least thirty-two bytes".into());
    cfg.request_timeout_ms = 500;
    cfg.connect_timeout_ms = 500;
    SupabaseAuth::new(cfg).unwrap()
}

fn response(status: &str, content_type: &str, body: &str) -> &'static str {
    Box::leak(
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_boxed_str(),
    )
}

async fn expect(url: &str, kind: ErrorKind, what: &str) {
    let auth = client(url);
    let e = auth
        .sign_in(SignIn::new("a@example.com", PASSWORD))
        .await
        .err()
        .unwrap_or_else(|| panic!("{what}: sign_in succeeded"));
    assert_eq!(e.kind(), kind, "{what}: {e}");
    let shown = format!("{e} {e:?} {}", e.display_chain());
    assert!(
        !shown.contains(PASSWORD) && !shown.contains(ANON),
        "{what}: a secret leaked: {shown}"
    );
    let e = auth
        .sign_up(SignUp::new("a@example.com", PASSWORD))
        .await
        .err()
        .unwrap_or_else(|| panic!("{what}: sign_up succeeded"));
    assert_eq!(e.kind(), kind, "{what} (sign_up): {e}");
    let h = auth.health().await;
    assert!(!h.is_healthy(), "{what}: health says healthy");
}

#[tokio::test]
async fn a_500_is_unavailable() {
    let url = server(Behaviour::Answer(response(
        "500 Internal Server Error",
        "application/json",
        r#"{"code":500,"error_code":"unexpected_failure","msg":"Unexpected failure, please check server logs for more information"}"#,
    )))
    .await;
    expect(&url, ErrorKind::Unavailable, "500").await;
}

#[tokio::test]
async fn a_500_that_echoes_the_password_does_not_leak_it() {
    let body: &'static str = Box::leak(
        format!(r#"{{"code":"unexpected_failure","message":"could not hash {PASSWORD}"}}"#)
            .into_boxed_str(),
    );
    let url = server(Behaviour::Answer(response(
        "500 Internal Server Error",
        "application/json",
        body,
    )))
    .await;
    expect(&url, ErrorKind::Unavailable, "500 echoing the password").await;
}

#[tokio::test]
async fn an_html_page_is_unavailable() {
    let html = "<html><body><h1>502 Bad Gateway</h1></body></html>";
    let url = server(Behaviour::Answer(response(
        "502 Bad Gateway",
        "text/html",
        html,
    )))
    .await;
    expect(&url, ErrorKind::Unavailable, "502 html").await;
    // An HTML page with a success status is no GoTrue answer either.
    let url = server(Behaviour::Answer(response(
        "200 OK",
        "text/html; charset=utf-8",
        html,
    )))
    .await;
    expect(&url, ErrorKind::Unavailable, "200 html").await;
    // Nor is a 401 page from a proxy in front.
    let url = server(Behaviour::Answer(response(
        "401 Unauthorized",
        "text/html",
        html,
    )))
    .await;
    expect(&url, ErrorKind::Unavailable, "401 html").await;
}

#[tokio::test]
async fn a_success_that_is_not_a_session_is_unavailable() {
    let url = server(Behaviour::Answer(response(
        "200 OK",
        "application/json",
        r#"{"hello":"world"}"#,
    )))
    .await;
    expect(&url, ErrorKind::Unavailable, "200 not a session").await;
}

#[tokio::test]
async fn a_429_is_rate_limited_and_a_504_a_timeout() {
    let url = server(Behaviour::Answer(response(
        "429 Too Many Requests",
        "application/json",
        r#"{"code":"over_request_rate_limit","message":"Request rate limit reached"}"#,
    )))
    .await;
    expect(&url, ErrorKind::RateLimited, "429").await;
    let url = server(Behaviour::Answer(response(
        "504 Gateway Timeout",
        "text/plain",
        "upstream timed out",
    )))
    .await;
    expect(&url, ErrorKind::Timeout, "504").await;
}

#[tokio::test]
async fn a_closed_connection_is_unavailable() {
    let url = server(Behaviour::Close).await;
    expect(&url, ErrorKind::Unavailable, "closed").await;
    // Closed in the middle of the body.
    let url = server(Behaviour::Answer(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{\"access_token\":",
    ))
    .await;
    expect(&url, ErrorKind::Unavailable, "truncated body").await;
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let url = server(Behaviour::Hang).await;
    let start = Instant::now();
    expect(&url, ErrorKind::Timeout, "hang").await;
    // Three calls of 500 ms each, not 30 s.
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn nobody_listening_is_unavailable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    expect(&format!("http://{addr}"), ErrorKind::Unavailable, "refused").await;
}

#[tokio::test]
async fn an_oversized_answer_is_unavailable() {
    let big: &'static str = Box::leak("x".repeat(2 << 20).into_boxed_str());
    let url = server(Behaviour::Answer(response(
        "200 OK",
        "application/json",
        big,
    )))
    .await;
    expect(&url, ErrorKind::Unavailable, "2 MiB answer").await;
}

#[tokio::test]
async fn hostile_input_is_refused_before_any_request() {
    // Nobody listens: an answer of another kind than Unavailable proves no
    // request was made.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let auth = client(&format!("http://{}", listener.local_addr().unwrap()));
    drop(listener);
    let huge = "p".repeat(5000);
    let e = auth
        .sign_up(SignUp::new("a@example.com", huge.as_str()))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(!e.to_string().contains(&huge[..100]));
    let e = auth
        .sign_in(SignIn::new("a\n@example.com", PASSWORD))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    for bad in ["", "with space", "new\nline", &"r".repeat(5000)] {
        let e = auth.refresh_session(bad).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{bad:.20?}");
    }
    let mut meta = serde_json::Map::new();
    meta.insert("blob".into(), serde_json::json!("m".repeat(20_000)));
    let mut req = SignUp::new("a@example.com", PASSWORD);
    req.user_metadata = meta;
    assert_eq!(
        auth.sign_up(req).await.unwrap_err().kind(),
        ErrorKind::TooLarge
    );
}

#[tokio::test]
async fn the_registry_builds_it_and_refuses_bad_configs_without_echoing_secrets() {
    use truststream_core_auth::{AuthDeps, AuthRegistry};
    let mut reg = AuthRegistry::new("auth");
    truststream_auth_supabase::register(&mut reg);
    let ok = reg
        .build(
            "supabase",
            serde_json::json!({"url": "http://127.0.0.1:54321", "anon_key": ANON}),
            AuthDeps { db: None },
        )
        .await
        .unwrap();
    assert_eq!(ok.info().name, "supabase");
    let caps = ok.capabilities();
    assert!(caps.sign_up && caps.password_sign_in && caps.refresh);
    assert!(!caps.revocation_checked && !caps.external_tokens);
    assert!(caps.private_tables.is_empty());

    for (what, cfg) in [
        (
            "missing anon_key",
            serde_json::json!({"url": "http://x.example"}),
        ),
        (
            "unknown field",
            serde_json::json!({"url": "http://x.example", "anon_key": ANON, "service_key": PASSWORD}),
        ),
        (
            "short secret",
            serde_json::json!({"url": "http://x.example", "anon_key": ANON, "jwt_secret": PASSWORD}),
        ),
        (
            "secret of the wrong type",
            serde_json::json!({"url": "http://x.example", "anon_key": ANON, "jwt_secret": [PASSWORD]}),
        ),
        (
            "credentials in the url",
            serde_json::json!({"url": format!("https://user:{PASSWORD}@x.example"), "anon_key": ANON}),
        ),
    ] {
        let e = match reg.build("supabase", cfg, AuthDeps { db: None }).await {
            Err(e) => e,
            Ok(_) => panic!("{what}: built"),
        };
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{what}: {e}");
        let shown = format!("{e} {e:?}");
        assert!(
            !shown.contains(PASSWORD) && !shown.contains(ANON),
            "{what}: a secret leaked: {shown}"
        );
    }
}
