//! S3-specific behaviour on a real Garage server: presigned URLs fetched with
//! a plain HTTP client, checksum verification, multipart uploads, resumed
//! downloads, error kinds. Shared behaviour is in the conformance suite.

#![allow(clippy::unwrap_used)] // test helpers, not library code

mod support;

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream as SdkBody;
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use truststream_core_storage::{
    ByteRange, Checksum, Error, ErrorKind, SignedUrlMethod, Storage, StorageExt, UploadOptions,
    WriteCondition,
};
use truststream_storage_s3::{S3Storage, S3StorageConfig};

fn pattern(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i / 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// A provider with small multipart settings, and a fresh bucket.
async fn setup(tune: impl FnOnce(&mut S3StorageConfig)) -> Option<(S3Storage, String)> {
    let garage = support::garage().await?;
    let mut cfg = garage.config();
    tune(&mut cfg);
    let store = S3Storage::connect(cfg).await.expect("connect");
    let bucket = support::fresh_bucket(&store).await.expect("bucket");
    Some((store, bucket))
}

async fn collect(store: &S3Storage, bucket: &str, key: &str) -> Result<Vec<u8>, Error> {
    let mut s = store.download_stream(bucket, key, None).await?;
    let mut out = Vec::new();
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c?);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_urls_work_and_refuse_tampering_and_expiry() {
    let Some((store, bucket)) = setup(|_| {}).await else {
        return;
    };
    let http = reqwest::Client::new();
    let key = "reports/ré sumé 1.txt";
    store
        .upload(
            &bucket,
            key,
            Bytes::from("secret report"),
            &UploadOptions::new(),
        )
        .await
        .unwrap();
    store
        .upload(
            &bucket,
            "reports/other.txt",
            Bytes::from("other"),
            &UploadOptions::new(),
        )
        .await
        .unwrap();
    let url = store
        .signed_url(&bucket, key, SignedUrlMethod::Get, Duration::from_secs(600))
        .await
        .unwrap()
        .url;
    let got = support::fetch(&http, SignedUrlMethod::Get, &url, None)
        .await
        .unwrap();
    assert_eq!(got, Some(Bytes::from("secret report")));

    // A changed byte of the signature.
    let sig_at = url.find("X-Amz-Signature=").expect("signature param") + 16;
    let mut bad = url.clone().into_bytes();
    bad[sig_at] = if bad[sig_at] == b'0' { b'1' } else { b'0' };
    let bad = String::from_utf8(bad).unwrap();
    let e = support::fetch(&http, SignedUrlMethod::Get, &bad, None)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");

    // Another key with the same signature.
    let other = url.replace("r%C3%A9%20sum%C3%A9%201.txt", "other.txt");
    assert_ne!(other, url, "the key is percent-encoded in the URL: {url}");
    let e = support::fetch(&http, SignedUrlMethod::Get, &other, None)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");

    // A longer expiry with the same signature.
    let longer = url.replace("X-Amz-Expires=600", "X-Amz-Expires=6000");
    assert_ne!(longer, url);
    let e = support::fetch(&http, SignedUrlMethod::Get, &longer, None)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");

    // Expired.
    let short = store
        .signed_url(&bucket, key, SignedUrlMethod::Get, Duration::from_secs(1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let e = support::fetch(&http, SignedUrlMethod::Get, &short.url, None)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");

    // PUT through a presigned URL, then read it back with the provider.
    let put = store
        .signed_url(
            &bucket,
            "uploads/in.bin",
            SignedUrlMethod::Put,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    support::fetch(&http, SignedUrlMethod::Put, &put.url, Some(pattern(1000)))
        .await
        .unwrap();
    assert_eq!(
        store.download(&bucket, "uploads/in.bin").await.unwrap(),
        pattern(1000)
    );
    // A PUT URL cannot be reused for another key.
    let moved = put.url.replace("in.bin", "evil.bin");
    let e = support::fetch(&http, SignedUrlMethod::Put, &moved, Some(Bytes::from("x")))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
    assert!(!store.exists(&bucket, "uploads/evil.bin").await.unwrap());

    for bad in [Duration::ZERO, Duration::from_secs(8 * 24 * 3600)] {
        let e = store
            .signed_url(&bucket, key, SignedUrlMethod::Get, bad)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }
    support::drop_bucket(&store, &bucket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_content_is_an_error_not_data() {
    let Some((store, bucket)) = setup(|_| {}).await else {
        return;
    };
    // An object whose bytes no longer match the checksum recorded for them
    // (what silent corruption on the server looks like to a client).
    // Both the CRC32C this version records and the SHA-256 earlier
    // versions recorded are checked.
    let original = b"the original bytes";
    for (name, value, recorded) in [
        (
            "truststream-checksum",
            Checksum::crc32c(original).to_string(),
            Checksum::crc32c(original),
        ),
        (
            "truststream-sha256",
            hex::encode(Sha256::digest(original)),
            Checksum::sha256(original),
        ),
    ] {
        store
            .sdk_client()
            .put_object()
            .bucket(&bucket)
            .key("rotten.txt")
            .set_metadata(Some(HashMap::from([(name.to_string(), value)])))
            .body(SdkBody::from(Bytes::from("the 0riginal bytes")))
            .send()
            .await
            .unwrap();
        let meta = store.get_metadata(&bucket, "rotten.txt").await.unwrap();
        assert_eq!(meta.checksum, Some(recorded));
        let e = store.download(&bucket, "rotten.txt").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Internal, "{e}");
        assert!(e.to_string().contains("corrupt"), "{e}");
        let e = collect(&store, &bucket, "rotten.txt").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Internal, "{e}");
    }

    // The provider's own uploads verify fine, including an empty object.
    for (k, data) in [("ok.txt", Bytes::from("fine")), ("empty", Bytes::new())] {
        let up = store
            .upload(&bucket, k, data.clone(), &UploadOptions::new())
            .await
            .unwrap();
        assert_eq!(up.checksum, Some(Checksum::crc32c(&data)));
        assert_eq!(store.download(&bucket, k).await.unwrap(), data);
    }
    support::drop_bucket(&store, &bucket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_uploads_roundtrip_with_checksum_and_metadata() {
    let Some((store, bucket)) = setup(|c| {
        c.multipart_threshold = 6 * 1024 * 1024;
        c.part_size = 5 * 1024 * 1024;
        c.multipart_concurrency = 3;
    })
    .await
    else {
        return;
    };
    let data = pattern(17 * 1024 * 1024 + 123);
    let options = UploadOptions::new()
        .content_type("application/x-test")
        .metadata("agentId", "42")
        .public(true);
    let up = store
        .upload(&bucket, "big.bin", data.clone(), &options)
        .await
        .unwrap();
    assert_eq!(up.checksum, Some(Checksum::crc32c(&data)));
    // Multipart ETags end in "-<parts>".
    assert!(up.etag.trim_matches('"').ends_with("-4"), "{}", up.etag);
    let meta = store.get_metadata(&bucket, "big.bin").await.unwrap();
    assert_eq!(meta.size, data.len() as u64);
    assert_eq!(meta.etag, up.etag);
    assert_eq!(meta.metadata, options.metadata);
    assert!(meta.public);
    assert_eq!(meta.content_type.as_deref(), Some("application/x-test"));
    assert_eq!(meta.checksum, up.checksum);
    assert!(store.download(&bucket, "big.bin").await.unwrap() == data);
    let mid = store
        .download_range(
            &bucket,
            "big.bin",
            ByteRange::new(5 * 1024 * 1024 - 10, 5 * 1024 * 1024 + 10),
        )
        .await
        .unwrap();
    assert_eq!(mid, data.slice(5 * 1024 * 1024 - 10..5 * 1024 * 1024 + 10));

    // Streamed, larger than the threshold: multipart, checksum recorded after.
    let chunks: Vec<Result<Bytes, Error>> = (0..data.len())
        .step_by(1_000_003)
        .map(|at| Ok(data.slice(at..(at + 1_000_003).min(data.len()))))
        .collect();
    let up = store
        .upload_stream(
            &bucket,
            "streamed.bin",
            Box::pin(futures::stream::iter(chunks)),
            &options,
        )
        .await
        .unwrap();
    assert_eq!(up.size, data.len() as u64);
    assert_eq!(up.checksum, Some(Checksum::crc32c(&data)));
    let meta = store.get_metadata(&bucket, "streamed.bin").await.unwrap();
    assert_eq!(meta.checksum, up.checksum);
    assert_eq!(meta.metadata, options.metadata);
    assert_eq!(meta.etag, up.etag);
    assert!(collect(&store, &bucket, "streamed.bin").await.unwrap() == data);
    support::drop_bucket(&store, &bucket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_multipart_stream_is_aborted_and_invisible() {
    let Some((store, bucket)) = setup(|c| {
        c.multipart_threshold = 5 * 1024 * 1024;
        c.part_size = 5 * 1024 * 1024;
    })
    .await
    else {
        return;
    };
    let big = pattern(12 * 1024 * 1024);
    let chunks: Vec<Result<Bytes, Error>> = vec![
        Ok(big.slice(..6 * 1024 * 1024)),
        Ok(big.slice(6 * 1024 * 1024..)),
        Err(Error::unavailable("the client went away")),
    ];
    let e = store
        .upload_stream(
            &bucket,
            "half.bin",
            Box::pin(futures::stream::iter(chunks)),
            &UploadOptions::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(!store.exists(&bucket, "half.bin").await.unwrap());
    let pending = store
        .sdk_client()
        .list_multipart_uploads()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    assert!(
        pending.uploads().is_empty(),
        "not aborted: {:?}",
        pending.uploads()
    );
    support::drop_bucket(&store, &bucket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garage_ignores_conditional_puts_so_they_are_unsupported() {
    let Some((store, bucket)) = setup(|_| {}).await else {
        return;
    };
    store
        .upload(&bucket, "k", Bytes::from("v1"), &UploadOptions::new())
        .await
        .unwrap();
    let create = UploadOptions::new().condition(WriteCondition::IfNotExists);
    match store.upload(&bucket, "k", Bytes::from("v2"), &create).await {
        // A server that honours the condition refuses the write.
        Err(e) if e.kind() == ErrorKind::Conflict => {
            assert!(store.capabilities().conditional_writes)
        }
        // Garage 2.5 ignores it: the provider must refuse, never overwrite.
        Err(e) if e.kind() == ErrorKind::Unsupported => {
            assert!(!store.capabilities().conditional_writes)
        }
        other => panic!("a create-only write over an object returned {other:?}"),
    }
    assert_eq!(
        store.download(&bucket, "k").await.unwrap(),
        Bytes::from("v1")
    );
    // The probe leaves nothing behind.
    let page = store.list(&bucket, &Default::default()).await.unwrap();
    assert_eq!(page.objects.len(), 1, "{:?}", page.objects);
    support::drop_bucket(&store, &bucket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_report_the_probed_answer_from_connect() {
    // A bucket to probe in exists before the provider connects.
    let Some((first, bucket)) = setup(|_| {}).await else {
        return;
    };
    let garage = support::garage().await.unwrap();
    // No probe bucket named: the connect probes in a bucket it lists.
    let mut cfg = garage.config();
    cfg.probe_bucket = None;
    let store = S3Storage::connect(cfg).await.unwrap();
    let reported = store.capabilities().conditional_writes;
    // The answer a probe gives now is the one reported before any call.
    let probed = store.probe_conditional_writes(&bucket).await.unwrap();
    assert_eq!(reported, probed, "capabilities before the probe answered");
    // Garage 2.5 ignores conditional PUTs.
    assert!(!reported, "Garage 2.5 reported conditional writes");
    // A provider told where to probe is exact too.
    let mut cfg = garage.config();
    cfg.probe_bucket = Some(bucket.clone());
    let told = S3Storage::connect(cfg).await.unwrap();
    assert_eq!(told.capabilities().conditional_writes, probed);
    // The probes leave nothing behind.
    let page = first.list(&bucket, &Default::default()).await.unwrap();
    assert!(page.objects.is_empty(), "{:?}", page.objects);
    support::drop_bucket(&first, &bucket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_writes_read_false_until_a_probe_could_run() {
    let Some(garage) = support::garage().await else {
        return;
    };
    // Nothing listens: the connect cannot probe (in a named bucket or in
    // one it lists), and does not fail.
    let mut cfg = garage.config();
    cfg.endpoint = Some("http://127.0.0.1:9".into());
    cfg.max_attempts = 1;
    let down = S3Storage::connect(cfg.clone()).await.unwrap();
    assert!(!down.capabilities().conditional_writes);
    cfg.probe_bucket = None;
    let down = S3Storage::connect(cfg.clone()).await.unwrap();
    assert!(!down.capabilities().conditional_writes);
    // A named bucket that does not exist is a configuration error.
    let mut missing = garage.config();
    missing.probe_bucket = Some("no-such-probe-bucket".into());
    let e = S3Storage::connect(missing).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    // Configured on, no probe: reported as configured.
    cfg.conditional_writes = truststream_storage_s3::ConditionalWrites::On;
    let on = S3Storage::connect(cfg).await.unwrap();
    assert!(on.capabilities().conditional_writes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_have_the_right_kinds() {
    let Some(garage) = support::garage().await else {
        return;
    };
    // Nothing listens: unavailable and retryable.
    let mut cfg = garage.config();
    cfg.endpoint = Some("http://127.0.0.1:9".into());
    cfg.max_attempts = 1;
    let down = S3Storage::connect(cfg).await.unwrap();
    let e = down.get_metadata("some-bucket", "k").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.is_retryable());
    assert!(!down.health().await.is_healthy());

    // Unknown key id / wrong secret: refused with a kind, never a panic.
    // (No probe bucket named: a refused probe in it would fail the connect.)
    let mut cfg = garage.config();
    cfg.secret_access_key = Some("0".repeat(64).into());
    cfg.probe_bucket = None;
    let wrong = S3Storage::connect(cfg).await.unwrap();
    let e = wrong.list_buckets().await.unwrap_err();
    assert!(
        matches!(
            e.kind(),
            ErrorKind::Unauthenticated | ErrorKind::PermissionDenied
        ),
        "{e}"
    );
    assert!(!e.to_string().contains(&garage.secret_access_key));
    let store = garage.storage().await.unwrap();
    let e = store
        .download_range("no-such-bucket-x", "k", ByteRange::new(5, 1))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let e = store.create_bucket("Bad_Name").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delimited_pages_of_one_cross_prefixes_and_keys_once() {
    let Some((store, bucket)) = setup(|_| {}).await else {
        return;
    };
    let keys = [
        "a.txt",
        "b/1.txt",
        "b/2.txt",
        "c.txt",
        "d/x/1.txt",
        "d/y.txt",
        "e.txt",
    ];
    for k in keys {
        store
            .upload(&bucket, k, Bytes::from("x"), &UploadOptions::new())
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut opts = truststream_core_storage::ListOptions::new()
        .delimited()
        .limit(1);
    for _ in 0..20 {
        let page = store.list(&bucket, &opts).await.unwrap();
        assert!(page.objects.len() + page.common_prefixes.len() <= 1);
        seen.extend(page.objects.into_iter().map(|o| o.key));
        seen.extend(page.common_prefixes);
        match page.next_cursor {
            Some(c) => opts.cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, ["a.txt", "b/", "c.txt", "d/", "e.txt"]);
    let e = store
        .list(
            &bucket,
            &truststream_core_storage::ListOptions::new().cursor("garbage!"),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    support::drop_bucket(&store, &bucket).await;
}
