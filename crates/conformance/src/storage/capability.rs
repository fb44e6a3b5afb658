//! Capabilities that tell the truth: one case per flag.
//!
//! Each case makes the call the flag is about. A provider that reports the
//! flag `true` must serve it; one that reports `false` must answer
//! [`ErrorKind::Unsupported`] and change nothing (the stored object, the
//! bucket list). The cases run whatever the flag says: a provider that
//! reports `conditional_writes = false` and then overwrites silently fails
//! `capability.conditional_writes`. `checksums` gates no call: a provider
//! without it must not claim a checksum in the metadata it returns.

use bytes::Bytes;
use futures::StreamExt;
use truststream_core::{Error, ErrorKind};
use truststream_core_storage::{ByteRange, SignedUrlMethod, UploadOptions, WriteCondition};

use super::{caps, get, put, unique_bucket, StorageFixture};
use crate::{ensure, ensure_eq, expect_kind, CaseResult, Failure};

/// Whether `key` exists (through `get_metadata`).
async fn exists(fx: &StorageFixture, key: &str) -> Result<bool, Failure> {
    match fx.storage.get_metadata(&fx.bucket, key).await {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// `IfNotExists` and `IfMatch` are checked (a failed one is `Conflict`), or
/// a conditional upload is `Unsupported`; either way the stored object is
/// the first one.
pub(super) async fn conditional_writes(fx: StorageFixture) -> CaseResult {
    let first = put(&fx, "cond.txt", "first").await?;
    let wrong_etag = format!("\"not-{}\"", first.etag.trim_matches('"'));
    for condition in [
        WriteCondition::IfNotExists,
        WriteCondition::IfMatch(wrong_etag),
    ] {
        let what = format!("an upload with {condition:?} over an existing object");
        let r = fx
            .storage
            .upload(
                &fx.bucket,
                "cond.txt",
                Bytes::from("second"),
                &UploadOptions::new().condition(condition),
            )
            .await;
        if caps(&fx).conditional_writes {
            expect_kind(r, ErrorKind::Conflict, &what)?;
        } else {
            expect_kind(
                r,
                ErrorKind::Unsupported,
                &format!("{what} without conditional_writes"),
            )?;
        }
        ensure_eq!(
            get(&fx, "cond.txt").await?,
            Bytes::from("first"),
            "{what} changed nothing"
        );
    }
    Ok(())
}

/// `download_range` serves a range, or is `Unsupported`.
pub(super) async fn range_reads(fx: StorageFixture) -> CaseResult {
    put(&fx, "range.txt", "0123456789").await?;
    let r = fx
        .storage
        .download_range(&fx.bucket, "range.txt", ByteRange::new(2, 5))
        .await;
    if caps(&fx).range_reads {
        ensure_eq!(r?, Bytes::from("234"));
    } else {
        expect_kind(
            r,
            ErrorKind::Unsupported,
            "download_range without range_reads",
        )?;
    }
    Ok(())
}

/// `upload_stream` and `download_stream` work, or are `Unsupported` and no
/// object appears.
pub(super) async fn streaming(fx: StorageFixture) -> CaseResult {
    put(&fx, "stream-src.txt", "streamed").await?;
    let chunks: Vec<Result<Bytes, Error>> = vec![Ok(Bytes::from("a")), Ok(Bytes::from("b"))];
    let up = fx
        .storage
        .upload_stream(
            &fx.bucket,
            "stream-up.txt",
            Box::pin(futures::stream::iter(chunks)),
            &UploadOptions::new(),
        )
        .await;
    let down = fx
        .storage
        .download_stream(&fx.bucket, "stream-src.txt", None)
        .await;
    if caps(&fx).streaming {
        up?;
        ensure_eq!(get(&fx, "stream-up.txt").await?, Bytes::from("ab"));
        let mut body = Vec::new();
        let mut stream = down?;
        while let Some(chunk) = stream.next().await {
            body.extend_from_slice(&chunk?);
        }
        ensure_eq!(body, b"streamed".to_vec());
    } else {
        expect_kind(
            up,
            ErrorKind::Unsupported,
            "upload_stream without streaming",
        )?;
        ensure!(
            !exists(&fx, "stream-up.txt").await?,
            "upload_stream stored nothing"
        );
        match down {
            Err(e) if e.kind() == ErrorKind::Unsupported => {}
            Err(e) => {
                return Err(Failure::new(format!(
                    "download_stream without streaming: expected unsupported, got {e}"
                )))
            }
            Ok(_) => {
                return Err(Failure::new(
                    "download_stream without streaming: expected unsupported, got a stream",
                ))
            }
        }
    }
    Ok(())
}

/// Uploads record a checksum of the content, or none is claimed.
pub(super) async fn checksums(fx: StorageFixture) -> CaseResult {
    let up = put(&fx, "sum.txt", "summed").await?;
    let meta = fx.storage.get_metadata(&fx.bucket, "sum.txt").await?;
    if caps(&fx).checksums {
        for (what, m) in [("upload", &up), ("get_metadata", &meta)] {
            ensure!(
                m.checksum.as_ref().is_some_and(|c| c.matches(b"summed")),
                "{what}: checksum {:?} does not match the content",
                m.checksum
            );
        }
    } else {
        ensure!(
            up.checksum.is_none() && meta.checksum.is_none(),
            "a provider without checksums claims one: {:?} / {:?}",
            up.checksum,
            meta.checksum
        );
    }
    Ok(())
}

/// `copy` copies, or is `Unsupported` and no destination appears.
pub(super) async fn copy(fx: StorageFixture) -> CaseResult {
    put(&fx, "copy-src.txt", "copied").await?;
    let r = fx
        .storage
        .copy(&fx.bucket, "copy-src.txt", &fx.bucket, "copy-dst.txt")
        .await;
    if caps(&fx).copy {
        r?;
        ensure_eq!(get(&fx, "copy-dst.txt").await?, Bytes::from("copied"));
    } else {
        expect_kind(r, ErrorKind::Unsupported, "copy without copy")?;
        ensure!(!exists(&fx, "copy-dst.txt").await?, "copy stored nothing");
    }
    Ok(())
}

/// `signed_url` for GET and for PUT each follow their own flag.
pub(super) async fn signed_urls(fx: StorageFixture) -> CaseResult {
    put(&fx, "signed.txt", "signed").await?;
    let c = caps(&fx);
    for (method, flag, name) in [
        (SignedUrlMethod::Get, c.signed_urls, "signed_urls"),
        (
            SignedUrlMethod::Put,
            c.signed_upload_urls,
            "signed_upload_urls",
        ),
    ] {
        let r = fx
            .storage
            .signed_url(
                &fx.bucket,
                "signed.txt",
                method,
                std::time::Duration::from_secs(60),
            )
            .await;
        if flag {
            let url = r?;
            ensure!(!url.url.is_empty(), "{method:?}: empty URL");
        } else {
            expect_kind(
                r,
                ErrorKind::Unsupported,
                &format!("signed_url({method:?}) without {name}"),
            )?;
        }
    }
    ensure_eq!(get(&fx, "signed.txt").await?, Bytes::from("signed"));
    Ok(())
}

/// `create_bucket` / `delete_bucket` work, or are `Unsupported` and the
/// bucket list does not change.
pub(super) async fn manage_buckets(fx: StorageFixture) -> CaseResult {
    let name = unique_bucket();
    let r = fx.storage.create_bucket(&name).await;
    let listed =
        |buckets: &[truststream_core_storage::BucketInfo]| buckets.iter().any(|b| b.name == name);
    if caps(&fx).manage_buckets {
        r?;
        ensure!(
            listed(&fx.storage.list_buckets().await?),
            "the new bucket is listed"
        );
        fx.storage.delete_bucket(&name).await?;
        ensure!(
            !listed(&fx.storage.list_buckets().await?),
            "the bucket is gone"
        );
    } else {
        expect_kind(
            r,
            ErrorKind::Unsupported,
            "create_bucket without manage_buckets",
        )?;
        ensure!(
            !listed(&fx.storage.list_buckets().await?),
            "no bucket was created"
        );
        expect_kind(
            fx.storage.delete_bucket(&fx.bucket).await,
            ErrorKind::Unsupported,
            "delete_bucket without manage_buckets",
        )?;
    }
    Ok(())
}

/// A public upload keeps its flag, or is `Unsupported` and stores nothing.
pub(super) async fn public_objects(fx: StorageFixture) -> CaseResult {
    let r = fx
        .storage
        .upload(
            &fx.bucket,
            "public.txt",
            Bytes::from("public"),
            &UploadOptions::new().public(true),
        )
        .await;
    if caps(&fx).public_objects {
        ensure!(r?.public, "the upload's metadata says public");
        let meta = fx.storage.get_metadata(&fx.bucket, "public.txt").await?;
        ensure!(meta.public, "the stored metadata says public");
    } else {
        expect_kind(
            r,
            ErrorKind::Unsupported,
            "a public upload without public_objects",
        )?;
        ensure!(
            !exists(&fx, "public.txt").await?,
            "the upload stored nothing"
        );
    }
    Ok(())
}

/// `fetch_signed` serves the provider's own URL, or is `Unsupported` (and
/// so is `verify_signed`) and writes nothing.
pub(super) async fn fetch_signed(fx: StorageFixture) -> CaseResult {
    put(&fx, "fetched.txt", "fetched").await?;
    let get_url = if caps(&fx).signed_urls {
        fx.storage
            .signed_url(
                &fx.bucket,
                "fetched.txt",
                SignedUrlMethod::Get,
                std::time::Duration::from_secs(60),
            )
            .await?
            .url
    } else {
        format!("https://example.invalid/{}/fetched.txt", fx.bucket)
    };
    let got = fx
        .storage
        .fetch_signed(SignedUrlMethod::Get, &get_url, None)
        .await;
    if caps(&fx).fetch_signed {
        ensure_eq!(got?, Some(Bytes::from("fetched")));
        return Ok(());
    }
    expect_kind(
        got,
        ErrorKind::Unsupported,
        "fetch_signed (GET) without fetch_signed",
    )?;
    expect_kind(
        fx.storage
            .verify_signed(SignedUrlMethod::Get, &get_url)
            .await,
        ErrorKind::Unsupported,
        "verify_signed without fetch_signed",
    )?;
    let put_url = if caps(&fx).signed_upload_urls {
        fx.storage
            .signed_url(
                &fx.bucket,
                "fetched-put.txt",
                SignedUrlMethod::Put,
                std::time::Duration::from_secs(60),
            )
            .await?
            .url
    } else {
        format!("https://example.invalid/{}/fetched-put.txt", fx.bucket)
    };
    expect_kind(
        fx.storage
            .fetch_signed(SignedUrlMethod::Put, &put_url, Some(Bytes::from("x")))
            .await,
        ErrorKind::Unsupported,
        "fetch_signed (PUT) without fetch_signed",
    )?;
    ensure!(
        !exists(&fx, "fetched-put.txt").await?,
        "fetch_signed without the capability stored an object"
    );
    Ok(())
}
