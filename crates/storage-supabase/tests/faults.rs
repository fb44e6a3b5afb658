//! Faults against real sockets and hostile input: a local TCP server that
//! answers 500, HTML, closes mid-body or hangs; keys that must never reach
//! the server; uploads over `truststream serve`'s limit; per-segment
//! encoding; create-only uploads racing; credentials the server refuses.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use truststream_core_storage::{
    ByteRange, ErrorKind, ListOptions, Storage, StorageExt, UploadOptions, WriteCondition,
};
use truststream_storage_supabase::{SupabaseStorage, SupabaseStorageConfig};

const KEY: &str = "service-key-that-must-not-leak";

/// What the fake server does after reading a request head.
#[derive(Clone, Copy)]
enum Then {
    /// Writes the bytes and closes the connection.
    Answer(&'static [u8]),
    /// Reads and never answers.
    Hang,
}

/// A TCP server answering every connection with `then`; counts connections.
async fn fake(then: Then) -> (String, Arc<AtomicUsize>) {
    let (url, count, _) = fake_recording(then).await;
    (url, count)
}

/// Like [`fake`], also keeping each request head.
async fn fake_recording(then: Then) -> (String, Arc<AtomicUsize>, Arc<Mutex<Vec<String>>>) {
    let heads = Arc::new(Mutex::new(Vec::new()));
    let kept = heads.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            let kept = kept.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                kept.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&head).to_string());
                match then {
                    Then::Answer(bytes) => {
                        let _ = sock.write_all(bytes).await;
                        let _ = sock.flush().await;
                        // Dropped here: the connection closes.
                    }
                    Then::Hang => {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), count, heads)
}

fn client(url: &str) -> SupabaseStorage {
    let mut cfg = SupabaseStorageConfig::service_role(url, KEY);
    cfg.request_timeout_ms = 500;
    cfg.transfer_idle_timeout_ms = 500;
    cfg.connect_timeout_ms = 500;
    SupabaseStorage::new(cfg).unwrap()
}

fn no_secret(e: &truststream_core_storage::Error) {
    let shown = format!("{e} {e:?} {}", e.display_chain());
    assert!(!shown.contains(KEY), "the key leaked: {shown}");
}

#[tokio::test]
async fn server_errors_html_and_refused_connections_are_unavailable() {
    let (url, _) = fake(Then::Answer(
        b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\ncontent-length: 64\r\nconnection: close\r\n\r\n{\"statusCode\":\"500\",\"error\":\"internal\",\"message\":\"db down\"} ",
    ))
    .await;
    let s = client(&url);
    let e = s.get_metadata("b-1", "k.txt").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.is_retryable());
    no_secret(&e);

    let (url, _) = fake(Then::Answer(
        b"HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/html\r\ncontent-length: 40\r\nconnection: close\r\n\r\n<html><body>bad gateway</body></html>   ",
    ))
    .await;
    let s = client(&url);
    for e in [
        s.download("b-1", "k.txt").await.unwrap_err(),
        s.list("b-1", &ListOptions::new()).await.unwrap_err(),
        s.list_buckets().await.unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
        assert!(e.message().contains("HTML"), "{e}");
        no_secret(&e);
    }

    // 200 with an HTML page (a captive portal, a wrong `url`).
    let (url, _) = fake(Then::Answer(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 15\r\nconnection: close\r\n\r\n<!DOCTYPE html>",
    ))
    .await;
    let e = client(&url).get_metadata("b-1", "k").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");

    // Supabase's habit: HTTP 400 carrying the real status in the body.
    let (url, _) = fake(Then::Answer(
        b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 69\r\nconnection: close\r\n\r\n{\"statusCode\":\"404\",\"error\":\"not_found\",\"message\":\"Object not found\"}",
    ))
    .await;
    let e = client(&url).get_metadata("b-1", "k").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");

    // Nobody listening.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let s = client(&format!("http://127.0.0.1:{port}"));
    let e = s.get_metadata("b-1", "k").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    let h = s.health().await;
    assert!(!h.is_healthy());
    no_secret(&e);
}

#[tokio::test]
async fn a_body_cut_off_is_an_error_never_a_short_success() {
    // Content-Length promises 1000 bytes; 100 come, then the connection closes.
    let mut resp = b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: 1000\r\n\r\n".to_vec();
    resp.extend_from_slice(&[b'x'; 100]);
    let resp: &'static [u8] = Box::leak(resp.into_boxed_slice());
    let (url, _) = fake(Then::Answer(resp)).await;
    let s = client(&url);
    let e = s.download("b-1", "big.bin").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    no_secret(&e);
    let e = s
        .download_range("b-1", "big.bin", ByteRange::new(0, 1000))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    let mut stream = s.download_stream("b-1", "big.bin", None).await.unwrap();
    let mut got = 0;
    let mut failed = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => got += c.len(),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let e = failed.expect("the stream ended without an error after a cut-off body");
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(got <= 100);

    // Chunked, and the connection closes before the last chunk.
    let mut resp = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n64\r\n".to_vec();
    resp.extend_from_slice(&[b'y'; 100]);
    resp.extend_from_slice(b"\r\n");
    let resp: &'static [u8] = Box::leak(resp.into_boxed_slice());
    let (url, _) = fake(Then::Answer(resp)).await;
    let e = client(&url).download("b-1", "big.bin").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
}

#[tokio::test]
async fn a_hanging_server_is_a_timeout() {
    let (url, _) = fake(Then::Hang).await;
    let s = client(&url);
    let started = std::time::Instant::now();
    let e = s.get_metadata("b-1", "k").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    let e = s.download("b-1", "k").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    let e = s
        .upload("b-1", "k", Bytes::from("x"), &UploadOptions::new())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(started.elapsed() < Duration::from_secs(10));
    no_secret(&e);
}

#[tokio::test]
async fn hostile_keys_never_reach_the_server() {
    let (url, count) = fake(Then::Hang).await;
    let s = client(&url);
    let long = "k".repeat(1025);
    let bad = [
        "../x",
        "a/../../b",
        "a\0b",
        "/etc/passwd",
        "a//b",
        "a\\b",
        "./a",
        "dir/",
        "",
        long.as_str(),
        "a\nb",
    ];
    for key in bad {
        let kinds = [
            s.upload("b-1", key, Bytes::from("x"), &UploadOptions::new())
                .await
                .map(|_| ()),
            s.download("b-1", key).await.map(|_| ()),
            s.download_range("b-1", key, ByteRange::new(0, 1))
                .await
                .map(|_| ()),
            s.get_metadata("b-1", key).await.map(|_| ()),
            s.delete("b-1", key).await,
            s.copy("b-1", "ok.txt", "b-1", key).await.map(|_| ()),
            s.copy("b-1", key, "b-1", "ok.txt").await.map(|_| ()),
            s.move_object("b-1", key, "b-1", "ok.txt").await,
            s.signed_url(
                "b-1",
                key,
                truststream_core_storage::SignedUrlMethod::Get,
                Duration::from_secs(60),
            )
            .await
            .map(|_| ()),
        ];
        for (i, r) in kinds.into_iter().enumerate() {
            let e = r.unwrap_err();
            assert_eq!(
                e.kind(),
                ErrorKind::InvalidInput,
                "call {i} with {key:?}: {e}"
            );
        }
    }
    for bucket in ["../x", "A", "a/b", "ab", ""] {
        let e = s
            .upload(bucket, "k", Bytes::from("x"), &UploadOptions::new())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bucket:?}");
    }
    let e = s
        .list("b-1", &ListOptions::new().prefix("../"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let e = s
        .list("b-1", &ListOptions::new().cursor("not a cursor!"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    // Options the API would misread are refused too.
    for options in [
        UploadOptions::new().content_type("multipart/form-data; boundary=x"),
        UploadOptions::new().metadata("truststream-public", "true"),
        UploadOptions::new().metadata("bad key", "v"),
        UploadOptions::new().content_type("text/plain\r\nx-upsert: true"),
    ] {
        let e = s
            .upload("b-1", "k", Bytes::from("x"), &options)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{options:?}: {e}");
    }
    // Conditions the API cannot check are refused, never ignored.
    for condition in [
        WriteCondition::IfNotExists,
        WriteCondition::IfMatch("e".into()),
    ] {
        let e = s
            .upload(
                "b-1",
                "k",
                Bytes::from("x"),
                &UploadOptions::new().condition(condition),
            )
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    }
    assert_eq!(
        count.load(Ordering::SeqCst),
        0,
        "a refused call reached the server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_over_the_servers_limit_are_too_large() {
    let served = common::serve(64 * 1024).await;
    let s = served.service_client();
    s.create_bucket("limits").await.unwrap();
    let big = Bytes::from(vec![7u8; 1024 * 1024]);
    let e = s
        .upload("limits", "big.bin", big.clone(), &UploadOptions::new())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TooLarge, "{e}");
    // Streamed (no Content-Length): the server cuts it off while reading,
    // then reads and drops the rest before it answers, so the client gets
    // the 413 rather than a reset connection; nothing is stored.
    let chunks: Vec<truststream_core_storage::StorageResult<Bytes>> =
        (0..16).map(|_| Ok(big.slice(..64 * 1024))).collect();
    let e = s
        .upload_stream(
            "limits",
            "streamed.bin",
            Box::pin(futures::stream::iter(chunks)),
            &UploadOptions::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TooLarge, "{e}");
    assert!(!s.exists("limits", "big.bin").await.unwrap());
    assert!(!s.exists("limits", "streamed.bin").await.unwrap());
    // Just under the limit is fine.
    s.upload(
        "limits",
        "fits.bin",
        big.slice(..64 * 1024),
        &UploadOptions::new(),
    )
    .await
    .unwrap();

    // The client-side limit refuses before sending anything.
    let mut cfg = SupabaseStorageConfig::service_role(&served.url, &served.service);
    cfg.max_upload_bytes = Some(1000);
    let limited = SupabaseStorage::new(cfg).unwrap();
    assert_eq!(limited.capabilities().max_object_size, Some(1000));
    let e = limited
        .upload("limits", "x.bin", big.slice(..1001), &UploadOptions::new())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TooLarge, "{e}");
    let chunks: Vec<truststream_core_storage::StorageResult<Bytes>> =
        vec![Ok(big.slice(..600)), Ok(big.slice(..600))];
    let e = limited
        .upload_stream(
            "limits",
            "y.bin",
            Box::pin(futures::stream::iter(chunks)),
            &UploadOptions::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TooLarge, "{e}");
    assert!(!s.exists("limits", "y.bin").await.unwrap());
    served.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_with_reserved_url_characters_round_trip() {
    let served = common::serve(1024 * 1024).await;
    let s = served.service_client();
    s.create_bucket("chars").await.unwrap();
    let keys = [
        "a b/c d.txt",
        "100%/50%25.txt",
        "q?x=1&y=2#frag",
        "ré sumé/日本語 ✓.txt",
        "plus+sign/semi;colon,comma",
        "%2e%2e/x",
    ];
    for k in keys {
        let body = Bytes::from(format!("content of {k}"));
        let up = s
            .upload("chars", k, body.clone(), &UploadOptions::new())
            .await
            .unwrap();
        assert_eq!(up.key, k);
        assert_eq!(s.download("chars", k).await.unwrap(), body, "{k}");
        assert_eq!(s.get_metadata("chars", k).await.unwrap().key, k);
    }
    let mut listed = Vec::new();
    let mut options = ListOptions::new().limit(2);
    loop {
        let page = s.list("chars", &options).await.unwrap();
        listed.extend(page.objects.into_iter().map(|o| o.key));
        match page.next_cursor {
            Some(c) => options = options.cursor(c),
            None => break,
        }
    }
    let mut expected: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    expected.sort();
    assert_eq!(listed, expected);
    // The server's `search` ignores case and may treat `%`/`_` as
    // wildcards; the provider's prefix does not.
    let page = s
        .list("chars", &ListOptions::new().prefix("100%/50"))
        .await
        .unwrap();
    assert_eq!(page.objects.len(), 1);
    let page = s
        .list("chars", &ListOptions::new().prefix("Q"))
        .await
        .unwrap();
    assert!(page.objects.is_empty(), "{page:?}");
    // Signed URLs of such keys work.
    let url = s
        .signed_url(
            "chars",
            "q?x=1&y=2#frag",
            truststream_core_storage::SignedUrlMethod::Get,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let got = s
        .fetch_signed(
            truststream_core_storage::SignedUrlMethod::Get,
            &url.url,
            None,
        )
        .await
        .unwrap();
    assert_eq!(got, Some(Bytes::from("content of q?x=1&y=2#frag")));
    served.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_only_uploads_and_moves() {
    let served = common::serve(1024 * 1024).await;
    let s = served.service_client();
    s.create_bucket("once").await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.upload_new(
                "once",
                "lock",
                Bytes::from(format!("writer {i}")),
                &UploadOptions::new(),
            )
            .await
        }));
    }
    let mut winners = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.unwrap() {
            Ok(_) => winners.push(i),
            Err(e) => assert_eq!(e.kind(), ErrorKind::Conflict, "{e}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(
        s.download("once", "lock").await.unwrap(),
        Bytes::from(format!("writer {}", winners[0]))
    );
    // Move: the source goes, the destination appears; an existing
    // destination is a conflict.
    s.move_object("once", "lock", "once", "moved/lock")
        .await
        .unwrap();
    assert!(!s.exists("once", "lock").await.unwrap());
    assert!(s.exists("once", "moved/lock").await.unwrap());
    s.upload("once", "other", Bytes::from("o"), &UploadOptions::new())
        .await
        .unwrap();
    let e = s
        .move_object("once", "other", "once", "moved/lock")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    let e = s
        .move_object("once", "missing", "once", "x")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    served.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_the_server_refuses() {
    let served = common::serve(1024 * 1024).await;
    let s = served.service_client();
    s.create_bucket("private").await.unwrap();
    s.upload("private", "k.txt", Bytes::from("x"), &UploadOptions::new())
        .await
        .unwrap();
    // A wrong key.
    let wrong = SupabaseStorage::new(SupabaseStorageConfig::service_role(
        &served.url,
        "not-the-key",
    ))
    .unwrap();
    let e = wrong.get_metadata("private", "k.txt").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{e}");
    assert!(!wrong.health().await.is_healthy());
    // The anon key on a bucket without a policy: denied.
    let anon =
        SupabaseStorage::new(SupabaseStorageConfig::anon(&served.url, &served.anon)).unwrap();
    let e = anon
        .upload("private", "k2.txt", Bytes::from("x"), &UploadOptions::new())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    let e = anon.create_bucket("nope-bucket").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    // A forged user token.
    let forged = anon
        .with_access_token("eyJhbGciOiJIUzI1NiJ9.e30.forged")
        .unwrap();
    let e = forged.get_metadata("private", "k.txt").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{e}");
    assert!(!format!("{e:?}").contains("forged"));
    assert!(
        s.with_access_token("t").is_err(),
        "user tokens go with the anon key"
    );
    served.running.stop().await.unwrap();
}

#[tokio::test]
async fn registry_builds_the_provider_by_type_name() {
    let mut reg = truststream_core_storage::StorageRegistry::new("storage");
    truststream_storage_supabase::register(&mut reg);
    assert!(reg.contains("supabase"));
    let cfg = serde_json::json!({"url": "http://127.0.0.1:1", "anon_key": "a"});
    let store = reg.build("supabase", cfg, ()).await.unwrap();
    assert_eq!(store.info().name, "supabase");
    let bad = serde_json::json!({"url": "http://127.0.0.1:1", "anon_key": "a", "bukket": 1});
    let e = reg.build("supabase", bad, ()).await.err().unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let both =
        serde_json::json!({"url": "http://x", "anon_key": "a", "service_role_key": "topsecret"});
    let e = reg.build("supabase", both, ()).await.err().unwrap();
    assert!(!e.to_string().contains("topsecret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_token_sees_only_what_the_bucket_policy_allows() {
    use truststream_core_auth::{Auth, SignUp};
    use truststream_serve::{BucketPolicy, TableAction};
    let mut buckets = std::collections::BTreeMap::new();
    buckets.insert(
        "homes".to_string(),
        BucketPolicy {
            anon: vec![],
            authenticated: TableAction::ALL.to_vec(),
            owner_folder: true,
        },
    );
    let served = common::serve_with(1024 * 1024, buckets).await;
    served
        .service_client()
        .create_bucket("homes")
        .await
        .unwrap();
    let anon =
        SupabaseStorage::new(SupabaseStorageConfig::anon(&served.url, &served.anon)).unwrap();
    let mut users = Vec::new();
    for email in ["a@example.com", "b@example.com"] {
        let s = served
            .auth
            .sign_up(SignUp::new(email, "correct horse battery staple 42"))
            .await
            .unwrap();
        let handle = anon
            .with_access_token(s.access_token.expose().to_string())
            .unwrap();
        users.push((s.user.id.clone(), handle));
    }
    let (a_id, a) = &users[0];
    let (b_id, b) = &users[1];
    let a_key = format!("{a_id}/notes.txt");
    a.upload("homes", &a_key, Bytes::from("mine"), &UploadOptions::new())
        .await
        .unwrap();
    assert_eq!(
        a.download("homes", &a_key).await.unwrap(),
        Bytes::from("mine")
    );
    // B can neither read nor overwrite A's object, nor write into A's folder.
    let e = b.download("homes", &a_key).await.unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::PermissionDenied | ErrorKind::NotFound),
        "{e}"
    );
    let e = b
        .upload(
            "homes",
            &a_key,
            Bytes::from("theirs"),
            &UploadOptions::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    let e = b
        .list("homes", &ListOptions::new().prefix(format!("{a_id}/")))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    // B's own folder works.
    let b_key = format!("{b_id}/x.txt");
    b.upload("homes", &b_key, Bytes::from("b"), &UploadOptions::new())
        .await
        .unwrap();
    let page = b
        .list("homes", &ListOptions::new().prefix(format!("{b_id}/")))
        .await
        .unwrap();
    assert_eq!(page.objects.len(), 1);
    assert_eq!(
        a.download("homes", &a_key).await.unwrap(),
        Bytes::from("mine")
    );
    served.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folders_longer_than_one_list_request_are_paged() {
    let served = common::serve(1024 * 1024).await;
    let s = served.service_client();
    s.create_bucket("wide").await.unwrap();
    let requests: Vec<truststream_core_storage::UploadRequest> = (0..1010)
        .map(|i| truststream_core_storage::UploadRequest {
            bucket: "wide".into(),
            key: format!("k-{i:04}"),
            data: Bytes::from_static(b"x"),
            options: UploadOptions::new(),
        })
        .collect();
    for r in s.upload_multiple(requests, 16).await {
        r.unwrap();
    }
    s.upload("wide", "sub/inner", Bytes::from("y"), &UploadOptions::new())
        .await
        .unwrap();
    let mut keys = Vec::new();
    let mut pages = 0;
    let mut options = ListOptions::new().limit(400);
    loop {
        let page = s.list("wide", &options).await.unwrap();
        pages += 1;
        keys.extend(page.objects.into_iter().map(|o| o.key));
        match page.next_cursor {
            Some(c) => options = options.cursor(c),
            None => break,
        }
    }
    let mut expected: Vec<String> = (0..1010).map(|i| format!("k-{i:04}")).collect();
    expected.push("sub/inner".into());
    assert_eq!(keys, expected);
    assert_eq!(pages, 3);
    let page = s
        .list("wide", &ListOptions::new().delimited().prefix("k-100"))
        .await
        .unwrap();
    assert_eq!(page.objects.len(), 10);
    served.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_stops_reading_an_upload_is_a_timeout() {
    let (url, _, heads) = fake_recording(Then::Hang).await;
    let s = client(&url);
    let started = std::time::Instant::now();
    // Far more than the socket buffers hold: the send blocks once they fill.
    let big = Bytes::from(vec![1u8; 64 * 1024 * 1024]);
    let e = s
        .upload("b-1", "big.bin", big.clone(), &UploadOptions::new())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    let chunks =
        futures::stream::iter((0..1024).map(move |i| Ok(big.slice(i * 65536..(i + 1) * 65536))));
    let e = s
        .upload_stream("b-1", "big.bin", Box::pin(chunks), &UploadOptions::new())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    // A whole upload declares its length (the server can refuse it early).
    let heads = heads.lock().unwrap().clone();
    assert!(
        heads[0]
            .to_ascii_lowercase()
            .contains("content-length: 67108864"),
        "{}",
        heads[0]
    );
}
