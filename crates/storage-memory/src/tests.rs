//! Behaviour the conformance suite cannot see from outside: corruption
//! detection, size limits, cursors, configuration.

use super::*;
use truststream_core_storage::{ErrorKind, StorageExt, WriteCondition};

fn data(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

async fn store_with(bucket: &str) -> MemoryStorage {
    let s = MemoryStorage::new();
    s.create_bucket(bucket).await.unwrap();
    s
}

#[tokio::test]
async fn corruption_is_detected_by_every_read() {
    let s = store_with("docs").await;
    s.upload("docs", "a.txt", data("hello world"), &UploadOptions::new())
        .await
        .unwrap();
    assert!(s.corrupt_for_tests("docs", "a.txt"));
    assert!(!s.corrupt_for_tests("docs", "missing.txt"));

    let e = s.download("docs", "a.txt").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Internal);
    assert!(e.message().contains("corrupt"), "{e}");
    assert_eq!(e.operation(), Some("storage.download"));
    let e = s
        .download_range("docs", "a.txt", ByteRange::new(6, 11))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Internal);
    let e = s
        .download_stream("docs", "a.txt", None)
        .await
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::Internal);
    // Metadata is still readable, and re-uploading repairs the object.
    s.get_metadata("docs", "a.txt").await.unwrap();
    s.upload("docs", "a.txt", data("fixed"), &UploadOptions::new())
        .await
        .unwrap();
    assert_eq!(s.download("docs", "a.txt").await.unwrap(), "fixed");
}

#[tokio::test]
async fn corrupting_an_empty_object_is_detected() {
    let s = store_with("docs").await;
    s.upload("docs", "empty", Bytes::new(), &UploadOptions::new())
        .await
        .unwrap();
    assert!(s.corrupt_for_tests("docs", "empty"));
    let e = s.download("docs", "empty").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Internal);
}

#[tokio::test]
async fn max_object_size_limits_uploads_streams_and_is_reported() {
    let s = MemoryStorage::with_config(MemoryStorageConfig {
        buckets: vec!["docs".into()],
        max_object_size: Some(10),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(s.capabilities().max_object_size, Some(10));

    s.upload("docs", "ok", data("0123456789"), &UploadOptions::new())
        .await
        .unwrap();
    let e = s
        .upload("docs", "big", data("0123456789a"), &UploadOptions::new())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TooLarge);
    assert!(e.message().contains("10 bytes"), "{e}");

    let chunks: Vec<StorageResult<Bytes>> = vec![Ok(data("012345")), Ok(data("6789ab"))];
    let e = s
        .upload_stream(
            "docs",
            "big",
            Box::pin(futures::stream::iter(chunks)),
            &UploadOptions::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TooLarge);
    assert!(!s.exists("docs", "big").await.unwrap());
}

#[tokio::test]
async fn a_failing_stream_stores_nothing_and_keeps_the_old_object() {
    let s = store_with("docs").await;
    s.upload("docs", "k", data("old"), &UploadOptions::new())
        .await
        .unwrap();
    let chunks: Vec<StorageResult<Bytes>> = vec![
        Ok(data("new ")),
        Err(Error::unavailable("client went away")),
        Ok(data("never read")),
    ];
    let e = s
        .upload_stream(
            "docs",
            "k",
            Box::pin(futures::stream::iter(chunks)),
            &UploadOptions::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert_eq!(s.download("docs", "k").await.unwrap(), "old");
}

#[tokio::test]
async fn malformed_cursors_are_invalid_input() {
    let s = store_with("docs").await;
    for bad in ["!!!", "%%", "Zm9vLy9iYXI", "/w", "Li4"] {
        // "Zm9vLy9iYXI" is base64url of "foo//bar", "/w" is not base64url,
        // "Li4" is "..": none is something a page could have returned.
        let e = s
            .list("docs", &ListOptions::new().cursor(bad))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad}");
        assert!(e.message().contains("cursor"), "{e}");
    }
}

#[tokio::test]
async fn listing_continues_after_the_cursor_when_objects_change() {
    let s = store_with("docs").await;
    for k in ["b", "d", "f", "h"] {
        s.upload("docs", k, data("x"), &UploadOptions::new())
            .await
            .unwrap();
    }
    let p1 = s.list("docs", &ListOptions::new().limit(2)).await.unwrap();
    let keys: Vec<_> = p1.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, ["b", "d"]);
    // Added before the cursor (never shown), at it, and after it (shown).
    for k in ["a", "c", "e"] {
        s.upload("docs", k, data("x"), &UploadOptions::new())
            .await
            .unwrap();
    }
    s.delete("docs", "d").await.unwrap();
    let cursor = p1.next_cursor.unwrap();
    let p2 = s
        .list("docs", &ListOptions::new().limit(10).cursor(cursor))
        .await
        .unwrap();
    let keys: Vec<_> = p2.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, ["e", "f", "h"]);
    assert_eq!(p2.next_cursor, None);
}

#[tokio::test]
async fn delimited_pages_skip_whole_groups() {
    let s = store_with("docs").await;
    for k in ["a/1", "a/2", "a/3", "b", "c/1", "c/d/2", "e"] {
        s.upload("docs", k, data("x"), &UploadOptions::new())
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let mut o = ListOptions::new().delimited().limit(1);
        o.cursor = cursor;
        let page = s.list("docs", &o).await.unwrap();
        seen.extend(page.common_prefixes.iter().cloned());
        seen.extend(page.objects.iter().map(|m| m.key.clone()));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen, ["a/", "b", "c/", "e"]);

    let page = s
        .list("docs", &ListOptions::new().prefix("c/").delimited())
        .await
        .unwrap();
    assert_eq!(page.common_prefixes, ["c/d/"]);
    assert_eq!(page.objects.len(), 1);
    assert_eq!(page.objects[0].key, "c/1");
}

#[tokio::test]
async fn config_creates_buckets_and_rejects_bad_values() {
    let mut reg = StorageRegistry::new("storage");
    register(&mut reg);
    let s = reg
        .build(
            "memory",
            serde_json::json!({"buckets": ["one", "two"], "max_object_size": 5}),
            (),
        )
        .await
        .unwrap();
    let names: Vec<_> = s
        .list_buckets()
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.name)
        .collect();
    assert_eq!(names, ["one", "two"]);
    assert_eq!(s.capabilities().max_object_size, Some(5));
    assert_eq!(s.info().name, "memory");

    // Each build is a fresh, empty store.
    let fresh = reg
        .build("memory", serde_json::Value::Null, ())
        .await
        .unwrap();
    assert!(fresh.list_buckets().await.unwrap().is_empty());

    for bad in [
        serde_json::json!({"buckets": ["Bad_Name"]}),
        serde_json::json!({"signing_secret": "too short"}),
        serde_json::json!({"base_url": ""}),
        serde_json::json!({"bukets": ["typo"]}),
    ] {
        let e = reg.build("memory", bad.clone(), ()).await.err().unwrap();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad}");
    }
    let e = reg
        .build(
            "memory",
            serde_json::json!({"signing_secret": "too short"}),
            (),
        )
        .await
        .err()
        .unwrap();
    assert!(!e.to_string().contains("too short"), "secret leaked: {e}");
}

#[test]
fn config_debug_hides_the_secret() {
    let cfg = MemoryStorageConfig {
        signing_secret: Some(Secret::new("s".repeat(40))),
        ..Default::default()
    };
    assert!(!format!("{cfg:?}").contains("sss"));
    let json = serde_json::to_string(&cfg).unwrap();
    assert!(!json.contains("sss"), "{json}");
}

#[tokio::test]
async fn configured_secret_and_base_url_make_urls_portable() {
    let cfg = MemoryStorageConfig {
        buckets: vec!["docs".into()],
        signing_secret: Some(Secret::new("k".repeat(32))),
        base_url: Some("http://localhost:8080/storage/".into()),
        ..Default::default()
    };
    let a = MemoryStorage::with_config(cfg.clone()).unwrap();
    let b = MemoryStorage::with_config(cfg).unwrap();
    b.upload("docs", "x.txt", data("from b"), &UploadOptions::new())
        .await
        .unwrap();
    let url = a
        .signed_url(
            "docs",
            "x.txt",
            SignedUrlMethod::Get,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert!(
        url.url
            .starts_with("http://localhost:8080/storage/docs/x.txt?"),
        "{}",
        url.url
    );
    let got = b
        .fetch_signed(SignedUrlMethod::Get, &url.url, None)
        .await
        .unwrap();
    assert_eq!(got.as_deref(), Some(&b"from b"[..]));
}

#[tokio::test]
async fn urls_of_another_instance_are_rejected() {
    let a = store_with("docs").await;
    let b = store_with("docs").await;
    a.upload("docs", "x", data("x"), &UploadOptions::new())
        .await
        .unwrap();
    let url = a
        .signed_url("docs", "x", SignedUrlMethod::Get, Duration::from_secs(60))
        .await
        .unwrap();
    let e = b
        .fetch_signed(SignedUrlMethod::Get, &url.url, None)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    // Same path under b's own base URL: the signature still does not match.
    let forged = url.url.replace(a.signer.base_url(), b.signer.base_url());
    let e = b
        .fetch_signed(SignedUrlMethod::Get, &forged, None)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied);
}

#[tokio::test]
async fn signed_url_lifetime_is_checked_and_rounded_up() {
    let s = store_with("docs").await;
    for bad in [Duration::ZERO, Duration::from_secs(8 * 24 * 3600)] {
        let e = s
            .signed_url("docs", "x", SignedUrlMethod::Get, bad)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }
    let e = s
        .signed_url("nope", "x", SignedUrlMethod::Get, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    let before = Utc::now();
    let url = s
        .signed_url("docs", "x", SignedUrlMethod::Get, Duration::from_secs(1))
        .await
        .unwrap();
    assert!(url.expires_at >= before + chrono::Duration::seconds(1));
    assert!(url.expires_at <= before + chrono::Duration::seconds(3));
}

#[tokio::test]
async fn if_match_accepts_quoted_and_bare_etags() {
    let s = store_with("docs").await;
    let m = s
        .upload("docs", "k", data("v1"), &UploadOptions::new())
        .await
        .unwrap();
    assert!(m.etag.starts_with('"') && m.etag.ends_with('"'));
    let bare = m.etag.trim_matches('"').to_string();
    let m2 = s
        .upload(
            "docs",
            "k",
            data("v2"),
            &UploadOptions::new().condition(WriteCondition::IfMatch(bare)),
        )
        .await
        .unwrap();
    assert_ne!(m.etag, m2.etag);
    let e = s
        .upload(
            "docs",
            "missing",
            data("v"),
            &UploadOptions::new().condition(WriteCondition::IfMatch(m2.etag)),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
}

#[tokio::test]
async fn stream_is_a_snapshot_and_chunked() {
    let s = store_with("docs").await;
    let big = Bytes::from(vec![7u8; CHUNK_SIZE * 2 + 5]);
    s.upload("docs", "k", big.clone(), &UploadOptions::new())
        .await
        .unwrap();
    let stream = s.download_stream("docs", "k", None).await.unwrap();
    s.upload("docs", "k", data("replaced"), &UploadOptions::new())
        .await
        .unwrap();
    let chunks: Vec<Bytes> = stream.map(|c| c.unwrap()).collect().await;
    assert_eq!(
        chunks.iter().map(Bytes::len).collect::<Vec<_>>(),
        [CHUNK_SIZE, CHUNK_SIZE, 5]
    );
    assert_eq!(chunks.concat(), big);
}

#[tokio::test]
async fn health_and_debug() {
    let s = store_with("docs").await;
    assert!(s.health().await.is_healthy());
    let dbg = format!("{s:?}");
    assert!(
        dbg.contains("MemoryStorage") && dbg.contains("memory://"),
        "{dbg}"
    );
}
