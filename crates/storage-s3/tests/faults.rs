//! Faults against a real Garage server: a connection cut mid-download (a
//! proxy that drops the first response part-way), and the server killed
//! mid-upload then restarted on the same data directory and port.

#![allow(clippy::unwrap_used)] // test helpers, not library code

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use truststream_core_storage::{
    Checksum, Error, ErrorKind, ListOptions, Storage, StorageExt, UploadOptions,
};
use truststream_storage_s3::testing::Garage;
use truststream_storage_s3::S3Storage;

fn pattern(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i / 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// A TCP proxy in front of the S3 server. The first connection's response
/// bytes are cut after `cut_after` bytes (both sides closed); every later
/// connection waits for a permit of `gate` before it is forwarded.
struct CutProxy {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    bytes_down: Arc<AtomicU64>,
    gate: Arc<Semaphore>,
}

impl CutProxy {
    async fn start(upstream: SocketAddr, cut_after: u64, open: bool) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let bytes_down = Arc::new(AtomicU64::new(0));
        let gate = Arc::new(Semaphore::new(if open { 1000 } else { 0 }));
        let (c, b, g) = (connections.clone(), bytes_down.clone(), gate.clone());
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let n = c.fetch_add(1, Ordering::SeqCst);
                let (b, g) = (b.clone(), g.clone());
                tokio::spawn(async move {
                    if n > 0 {
                        g.acquire().await.unwrap().forget();
                    }
                    let server = TcpStream::connect(upstream).await.unwrap();
                    let limit = if n == 0 { cut_after } else { u64::MAX };
                    pipe(client, server, limit, b).await;
                });
            }
        });
        CutProxy {
            addr,
            connections,
            bytes_down,
            gate,
        }
    }
}

async fn pipe(client: TcpStream, server: TcpStream, limit: u64, down: Arc<AtomicU64>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut cr, &mut sw).await;
    });
    let mut sent = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match sr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let take = (n as u64).min(limit - sent) as usize;
        if cw.write_all(&buf[..take]).await.is_err() {
            break;
        }
        sent += take as u64;
        down.fetch_add(take as u64, Ordering::SeqCst);
        if sent >= limit {
            break;
        }
    }
    up.abort();
}

async fn proxied(garage: &Garage, proxy: &CutProxy) -> S3Storage {
    let mut cfg = garage.config();
    cfg.endpoint = Some(format!("http://{}", proxy.addr));
    // No probe at connect: the proxy counts and cuts connections.
    cfg.conditional_writes = truststream_storage_s3::ConditionalWrites::Off;
    S3Storage::connect(cfg).await.unwrap()
}

fn upstream(garage: &Garage) -> SocketAddr {
    garage
        .endpoint()
        .trim_start_matches("http://")
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_cut_mid_stream_resumes_from_the_byte_reached() {
    let Some(garage) = support::garage().await else {
        return;
    };
    let direct = garage.storage().await.unwrap();
    let bucket = support::fresh_bucket(&direct).await.unwrap();
    let size = 6 * 1024 * 1024;
    let data = pattern(size);
    direct
        .upload(&bucket, "movie.bin", data.clone(), &UploadOptions::new())
        .await
        .unwrap();

    let cut = 2 * 1024 * 1024;
    let proxy = CutProxy::start(upstream(&garage), cut, true).await;
    let store = proxied(&garage, &proxy).await;
    let mut stream = store
        .download_stream(&bucket, "movie.bin", None)
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Some(chunk) = stream.next().await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert!(got == data, "resumed body differs ({} bytes)", got.len());
    assert_eq!(proxy.connections.load(Ordering::SeqCst), 2, "one resume");
    // Resumed from the byte reached: the object crossed the proxy about
    // once, not once plus the part before the cut.
    let down = proxy.bytes_down.load(Ordering::SeqCst);
    assert!(
        down < size as u64 + 64 * 1024,
        "{down} bytes for a {size}-byte object: the download started over"
    );

    // download() uses the same path and verifies the checksum at the end.
    let proxy = CutProxy::start(upstream(&garage), cut, true).await;
    let store = proxied(&garage, &proxy).await;
    assert!(store.download(&bucket, "movie.bin").await.unwrap() == data);
    assert_eq!(proxy.connections.load(Ordering::SeqCst), 2);
    support::drop_bucket(&direct, &bucket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_replaced_before_the_resume_is_a_conflict_not_a_mixed_body() {
    let Some(garage) = support::garage().await else {
        return;
    };
    let direct = garage.storage().await.unwrap();
    let bucket = support::fresh_bucket(&direct).await.unwrap();
    let data = pattern(4 * 1024 * 1024);
    direct
        .upload(&bucket, "doc.bin", data.clone(), &UploadOptions::new())
        .await
        .unwrap();
    let proxy = CutProxy::start(upstream(&garage), 1024 * 1024, false).await;
    let mut stream = proxied(&garage, &proxy)
        .await
        .download_stream(&bucket, "doc.bin", None)
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let collector = tokio::spawn(async move {
        let mut got = 0usize;
        let mut tx = Some(tx);
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => got += c.len(),
                Err(e) => return (got, Some(e)),
            }
            if got > 0 {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(());
                }
            }
        }
        (got, None::<Error>)
    });
    rx.await.unwrap();
    // The first connection is cut; wait for the resume to connect, replace
    // the object, then let the resumed request through.
    for _ in 0..100 {
        if proxy.connections.load(Ordering::SeqCst) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    direct
        .upload(
            &bucket,
            "doc.bin",
            pattern(4 * 1024 * 1024 + 1),
            &UploadOptions::new(),
        )
        .await
        .unwrap();
    proxy.gate.add_permits(10);
    let (got, err) = collector.await.unwrap();
    let e = err.expect("the stream must fail, not mix two versions");
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert!(got < data.len(), "{got}");
    support::drop_bucket(&direct, &bucket).await;
}

/// Chunks of `data`, one per 1 MiB, pausing between them; `at` fires when
/// chunk `fire_at` has been handed over.
fn slow_source(
    data: Bytes,
    fire_at: usize,
    at: tokio::sync::oneshot::Sender<()>,
) -> truststream_core_storage::ByteStream {
    let mut at = Some(at);
    let chunks: Vec<Bytes> = (0..data.len())
        .step_by(1024 * 1024)
        .map(|i| data.slice(i..(i + 1024 * 1024).min(data.len())))
        .collect();
    Box::pin(
        futures::stream::iter(chunks.into_iter().enumerate()).then(move |(i, c)| {
            if i == fire_at {
                if let Some(tx) = at.take() {
                    let _ = tx.send(());
                }
            }
            async move {
                tokio::time::sleep(Duration::from_millis(30)).await;
                Ok::<_, Error>(c)
            }
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_upload_then_restarted() {
    if support::garage().await.is_none() {
        return;
    }
    let mut garage = Garage::start_private().await.expect("private garage");
    let mut cfg = garage.config();
    cfg.multipart_threshold = 5 * 1024 * 1024;
    cfg.part_size = 5 * 1024 * 1024;
    cfg.multipart_concurrency = 2;
    cfg.max_attempts = 2;
    cfg.connect_timeout_ms = 500;
    let store = S3Storage::connect(cfg).await.unwrap();
    let bucket = support::fresh_bucket(&store).await.unwrap();
    let data = pattern(40 * 1024 * 1024);

    let (tx, rx) = tokio::sync::oneshot::channel();
    let source = slow_source(data.clone(), 12, tx);
    let (s, b) = (store.clone(), bucket.clone());
    let upload = tokio::spawn(async move {
        s.upload_stream(&b, "video.bin", source, &UploadOptions::new())
            .await
    });
    rx.await.unwrap();
    garage.kill();
    let e = upload.await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.is_retryable());

    garage.restart().await.expect("restart");
    // Nothing partial became visible.
    assert!(!store.exists(&bucket, "video.bin").await.unwrap());
    let page = store.list(&bucket, &ListOptions::new()).await.unwrap();
    assert!(page.objects.is_empty(), "{:?}", page.objects);

    // The retried upload succeeds, whole and verified.
    let up = store
        .upload(&bucket, "video.bin", data.clone(), &UploadOptions::new())
        .await
        .unwrap();
    assert_eq!(up.checksum, Some(Checksum::crc32c(&data)));
    assert!(store.download(&bucket, "video.bin").await.unwrap() == data);
}
