//! Client mode speaks TLS (`wss://`, feature `tls`, on by default): a
//! Supabase project's `/realtime/v1` accepts nothing else.

#![cfg(feature = "tls")]

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use truststream_core::ErrorKind;
use truststream_realtime_ws::{WsRealtime, WsRealtimeConfig};

/// A `wss://` URL reaches the server as a TLS handshake: a server that
/// answers plain HTTP fails the handshake (`Unavailable`, naming the hub),
/// where a build without TLS would refuse the scheme before connecting.
#[tokio::test]
async fn wss_urls_open_a_tls_handshake() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut first = [0u8; 1];
        sock.read_exact(&mut first).await.unwrap();
        // 0x16: a TLS record of type handshake (the ClientHello).
        let _ = sock
            .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            .await;
        first[0]
    });
    let url = format!("wss://127.0.0.1:{}/realtime/v1/websocket", addr.port());
    let Err(e) = WsRealtime::connect(WsRealtimeConfig::client(&url, Some("key-not-echoed"))).await
    else {
        panic!("a plain-HTTP server cannot complete a TLS handshake");
    };
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    let text = e.to_string();
    assert!(text.contains("127.0.0.1"), "{text}");
    assert!(
        !text.contains("key-not-echoed"),
        "the api key leaked: {text}"
    );
    assert_eq!(
        server.await.unwrap(),
        0x16,
        "the client did not start with a TLS ClientHello"
    );
}
