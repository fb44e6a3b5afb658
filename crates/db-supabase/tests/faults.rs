//! A server that misbehaves: 500s, HTML, a connection closed mid-answer, an
//! answer that never comes, nothing listening. Each is an error of the
//! right kind, with no secret in it.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use truststream_core::ErrorKind;
use truststream_core_db::{Database, Query};
use truststream_db_supabase::{SupabaseDb, SupabaseDbConfig};

const KEY: &str = "service-role-key-that-must-never-leak";

/// What the fake server does with each request.
#[derive(Clone, Copy)]
enum Behaviour {
    Answer(&'static str),
    Close,
    Hang,
}

/// Serves every connection with `b`; returns the URL.
async fn fake(b: Behaviour) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = sock.read(&mut buf).await;
                match b {
                    Behaviour::Answer(raw) => {
                        let _ = sock.write_all(raw.as_bytes()).await;
                        let _ = sock.shutdown().await;
                    }
                    Behaviour::Close => drop(sock),
                    Behaviour::Hang => tokio::time::sleep(Duration::from_secs(60)).await,
                }
            });
        }
    });
    format!("http://{addr}")
}

fn db(url: &str) -> SupabaseDb {
    let mut cfg = SupabaseDbConfig::service_role(url, KEY);
    cfg.request_timeout_ms = 500;
    cfg.connect_timeout_ms = 500;
    SupabaseDb::new(cfg).expect("config")
}

async fn kind_of(url: &str) -> truststream_core::Error {
    let e = db(url)
        .read("agents", &Query::new())
        .await
        .expect_err("the call must fail");
    assert!(!e.to_string().contains(KEY), "{e}");
    assert!(!format!("{e:?}").contains(KEY), "{e:?}");
    e
}

#[tokio::test]
async fn a_500_with_a_postgrest_body_is_unavailable() {
    let url = fake(Behaviour::Answer(
        "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\ncontent-length: 48\r\nconnection: close\r\n\r\n{\"code\":\"XX000\",\"message\":\"boom\",\"details\":null}",
    ))
    .await;
    let e = kind_of(&url).await;
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.is_retryable());
    assert!(e.message().contains("boom"), "{e}");
}

#[tokio::test]
async fn an_html_error_page_is_unavailable() {
    let url = fake(Behaviour::Answer(
        "HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/html\r\ncontent-length: 51\r\nconnection: close\r\n\r\n<html><body><h1>502 Bad Gateway</h1></body></html>",
    ))
    .await;
    let e = kind_of(&url).await;
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(!e.message().contains("<html>"));
}

#[tokio::test]
async fn html_with_200_is_unavailable_not_rows() {
    let url = fake(Behaviour::Answer(
        "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 13\r\nconnection: close\r\n\r\n<html></html>",
    ))
    .await;
    let e = kind_of(&url).await;
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
}

#[tokio::test]
async fn a_closed_connection_is_unavailable_and_not_marked_unapplied() {
    let url = fake(Behaviour::Close).await;
    let e = kind_of(&url).await;
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.is_retryable());
    assert!(
        !e.is_unapplied(),
        "the request was sent: its outcome is unknown"
    );
}

#[tokio::test]
async fn a_truncated_answer_is_unavailable() {
    let url = fake(Behaviour::Answer(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n[{\"id\":1",
    ))
    .await;
    let e = kind_of(&url).await;
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
}

#[tokio::test]
async fn a_hanging_server_times_out() {
    let url = fake(Behaviour::Hang).await;
    let started = std::time::Instant::now();
    let e = kind_of(&url).await;
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(e.is_retryable());
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn nothing_listening_is_unavailable_and_unapplied() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let e = db(&url)
        .create("agents", serde_json::Map::new())
        .await
        .expect_err("nothing listens");
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.is_unapplied(), "no connection: nothing was sent");
    let h = db(&url).health().await;
    assert!(!h.is_healthy());
}

#[tokio::test]
async fn status_codes_without_bodies() {
    for (raw, want) in [
        (
            "HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            ErrorKind::Unauthenticated,
        ),
        (
            "HTTP/1.1 429 Too Many Requests\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            ErrorKind::RateLimited,
        ),
        (
            "HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            ErrorKind::TooLarge,
        ),
        (
            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            ErrorKind::Unavailable,
        ),
    ] {
        let url = fake(Behaviour::Answer(raw)).await;
        let e = kind_of(&url).await;
        assert_eq!(e.kind(), want, "{raw}: {e}");
    }
}
