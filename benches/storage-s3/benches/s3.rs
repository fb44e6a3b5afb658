//! storage-s3 vs raw aws-sdk-s3 vs object_store's AmazonS3, against the same
//! Garage server, side by side in one run.
//!
//! ```text
//! cargo bench -p truststream-bench-storage-s3 [-- --rounds 5 --quick --part-mib 8 --concurrency 4]
//! ```
//!
//! A private single-node Garage (the `testing` launcher, so nothing else
//! loads it) and one bucket. Workloads, each on its own key prefix per side:
//! put and get of 1,000 objects of 4 KiB (16 requests in flight), put and get
//! of one 64 MiB object, and a listing of 1,000 keys. Rounds alternate the
//! sides so drift hits all alike; the median round counts. Output: ops/s (or
//! MiB/s) per side and the ratio storage-s3 / raw.
//!
//! The raw client is built like the provider's (same endpoint, path style,
//! credentials, retries; checksum calculation `WhenRequired`), so the ratio
//! is the provider's own cost: the CRC32C of every upload and download,
//! metadata encoding, validation.
//!
//! The 64 MiB put compares the same work: the provider uploads a multipart
//! upload in parts of `part_size` (default 8 MiB) with `multipart_concurrency`
//! (default 4) parts in flight, and so do the other two sides in the headline
//! row (the SDK's `CreateMultipartUpload` + `UploadPart` + `Complete`, and
//! object_store's `WriteMultipart` with the same chunk size and concurrency).
//! A second, labelled row sends the object as one PUT on the raw and
//! object_store sides (what their plain `put` does), the provider unchanged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use truststream_core_storage::{ListOptions, Storage, UploadOptions};
use truststream_storage_s3::testing::{Garage, REGION};

const SMALL: usize = 4 * 1024;
const COUNT: usize = 1000;
const LARGE: usize = 64 * 1024 * 1024;
const IN_FLIGHT: usize = 16;
const BUCKET: &str = "bench";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Ts,
    Raw,
    Os,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Ts => "storage-s3",
            Side::Raw => "aws-sdk-s3",
            Side::Os => "object_store",
        }
    }
    fn prefix(self) -> &'static str {
        match self {
            Side::Ts => "ts",
            Side::Raw => "raw",
            Side::Os => "os",
        }
    }
}

struct Clients {
    ts: Arc<dyn Storage>,
    raw: aws_sdk_s3::Client,
    os: Arc<AmazonS3>,
    /// The provider's multipart settings, used by every side's multipart put.
    part_size: usize,
    concurrency: usize,
}

fn raw_client(g: &Garage) -> aws_sdk_s3::Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .http_client(http)
        .endpoint_url(g.endpoint())
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new(
            &g.access_key_id,
            &g.secret_access_key,
            None,
            None,
            "bench",
        ))
        .force_path_style(true)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

fn os_client(g: &Garage) -> Arc<AmazonS3> {
    Arc::new(
        AmazonS3Builder::new()
            .with_endpoint(g.endpoint())
            .with_bucket_name(BUCKET)
            .with_region(REGION)
            .with_access_key_id(&g.access_key_id)
            .with_secret_access_key(&g.secret_access_key)
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .build()
            .expect("object_store client"),
    )
}

fn payload(len: usize, seed: usize) -> Bytes {
    (0..len)
        .map(|i| ((i * 31 + seed) % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

async fn put_small(c: &Clients, side: Side, data: &Bytes) {
    futures::stream::iter(0..COUNT)
        .map(|i| {
            let key = format!("{}/small/{i:04}", side.prefix());
            let data = data.clone();
            async move {
                match side {
                    Side::Ts => {
                        c.ts.upload(BUCKET, &key, data, &UploadOptions::new())
                            .await
                            .expect("ts put");
                    }
                    Side::Raw => {
                        c.raw
                            .put_object()
                            .bucket(BUCKET)
                            .key(&key)
                            .body(ByteStream::from(data))
                            .send()
                            .await
                            .expect("raw put");
                    }
                    Side::Os => {
                        c.os.put(&Path::from(key), PutPayload::from(data))
                            .await
                            .expect("os put");
                    }
                }
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<()>>()
        .await;
}

async fn get_one(c: &Clients, side: Side, key: String) -> usize {
    match side {
        Side::Ts => c.ts.download(BUCKET, &key).await.expect("ts get").len(),
        Side::Raw => c
            .raw
            .get_object()
            .bucket(BUCKET)
            .key(&key)
            .send()
            .await
            .expect("raw get")
            .body
            .collect()
            .await
            .expect("raw body")
            .into_bytes()
            .len(),
        Side::Os => {
            c.os.get(&Path::from(key))
                .await
                .expect("os get")
                .bytes()
                .await
                .expect("os body")
                .len()
        }
    }
}

async fn get_small(c: &Clients, side: Side) {
    let total: usize = futures::stream::iter(0..COUNT)
        .map(|i| get_one(c, side, format!("{}/small/{i:04}", side.prefix())))
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<usize>>()
        .await
        .into_iter()
        .sum();
    assert_eq!(total, COUNT * SMALL);
}

/// How the raw and object_store sides send the 64 MiB object.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LargePut {
    /// A multipart upload with the provider's part size and concurrency.
    Multipart,
    /// One PUT (their plain `put`).
    Single,
}

async fn put_large(c: &Clients, side: Side, data: &Bytes, how: LargePut) {
    let key = format!("{}/large", side.prefix());
    match (side, how) {
        (Side::Ts, _) => {
            c.ts.upload(BUCKET, &key, data.clone(), &UploadOptions::new())
                .await
                .expect("ts put large");
        }
        (Side::Raw, LargePut::Single) => {
            c.raw
                .put_object()
                .bucket(BUCKET)
                .key(&key)
                .body(ByteStream::from(data.clone()))
                .send()
                .await
                .expect("raw put large");
        }
        (Side::Raw, LargePut::Multipart) => raw_multipart(c, &key, data).await,
        (Side::Os, LargePut::Single) => {
            c.os.put(&Path::from(key), PutPayload::from(data.clone()))
                .await
                .expect("os put large");
        }
        (Side::Os, LargePut::Multipart) => {
            let upload =
                c.os.put_multipart(&Path::from(key))
                    .await
                    .expect("os multipart");
            let mut w = object_store::WriteMultipart::new_with_chunk_size(upload, c.part_size);
            let mut rest = data.clone();
            while !rest.is_empty() {
                w.wait_for_capacity(c.concurrency).await.expect("os part");
                let n = rest.len().min(c.part_size);
                w.put(rest.split_to(n));
            }
            w.finish().await.expect("os complete");
        }
    }
}

/// The SDK's multipart upload, parts of `part_size` with `concurrency`
/// in flight: what a user writes by hand to match the provider.
async fn raw_multipart(c: &Clients, key: &str, data: &Bytes) {
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
    let up = c
        .raw
        .create_multipart_upload()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .expect("raw create multipart");
    let id = up.upload_id().expect("upload id").to_string();
    let parts: Vec<(i32, Bytes)> = (0..data.len())
        .step_by(c.part_size)
        .zip(1..)
        .map(|(start, n)| (n, data.slice(start..(start + c.part_size).min(data.len()))))
        .collect();
    let mut done: Vec<CompletedPart> = futures::stream::iter(parts)
        .map(|(n, body)| {
            let (raw, id) = (&c.raw, &id);
            async move {
                let out = raw
                    .upload_part()
                    .bucket(BUCKET)
                    .key(key)
                    .upload_id(id)
                    .part_number(n)
                    .body(ByteStream::from(body))
                    .send()
                    .await
                    .expect("raw upload part");
                CompletedPart::builder()
                    .part_number(n)
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .build()
            }
        })
        .buffer_unordered(c.concurrency)
        .collect()
        .await;
    done.sort_by_key(|p| p.part_number());
    c.raw
        .complete_multipart_upload()
        .bucket(BUCKET)
        .key(key)
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(done))
                .build(),
        )
        .send()
        .await
        .expect("raw complete multipart");
}

async fn list(c: &Clients, side: Side) {
    let prefix = format!("{}/small/", side.prefix());
    let n = match side {
        Side::Ts => {
            let mut n = 0;
            let mut opts = ListOptions::new().prefix(prefix);
            loop {
                let page = c.ts.list(BUCKET, &opts).await.expect("ts list");
                n += page.objects.len();
                match page.next_cursor {
                    Some(cur) => opts.cursor = Some(cur),
                    None => break n,
                }
            }
        }
        Side::Raw => {
            let mut n = 0;
            let mut token = None;
            loop {
                let out = c
                    .raw
                    .list_objects_v2()
                    .bucket(BUCKET)
                    .prefix(&prefix)
                    .set_continuation_token(token)
                    .send()
                    .await
                    .expect("raw list");
                n += out.contents().len();
                match out.next_continuation_token() {
                    Some(t) if out.is_truncated() == Some(true) => token = Some(t.to_string()),
                    _ => break n,
                }
            }
        }
        Side::Os => {
            c.os.list(Some(&Path::from(prefix.trim_end_matches('/'))))
                .try_collect::<Vec<_>>()
                .await
                .expect("os list")
                .len()
        }
    };
    assert_eq!(n, COUNT, "{side:?} listed {n}");
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Lowest and highest of the per-round ratios `other / ours` (round i of
/// both sides ran in the same round).
fn spread(ours: &[Duration], other: &[Duration]) -> String {
    let r: Vec<f64> = ours
        .iter()
        .zip(other)
        .map(|(a, b)| b.as_secs_f64() / a.as_secs_f64())
        .collect();
    let lo = r.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = r.iter().copied().fold(0.0, f64::max);
    format!("{lo:.2}-{hi:.2}")
}

struct Row {
    name: &'static str,
    unit: &'static str,
    /// Units of work per run (ops or MiB).
    work: f64,
    times: [Vec<Duration>; 3],
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(if args.iter().any(|a| a == "--quick") {
            1
        } else {
            5
        });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let flag = |name: &str| -> Option<u64> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1)?.parse().ok())
    };
    let tune = Tune {
        part_mib: flag("--part-mib"),
        concurrency: flag("--concurrency"),
    };
    rt.block_on(run(rounds, tune));
}

/// Overrides of the provider's multipart settings (`--part-mib N`,
/// `--concurrency N`); the defaults are the provider's.
#[derive(Clone, Copy, Default)]
struct Tune {
    part_mib: Option<u64>,
    concurrency: Option<u64>,
}

async fn run(rounds: usize, tune: Tune) {
    let garage = match Garage::start_private().await {
        Ok(g) => g,
        Err(e) => {
            eprintln!("cannot start garage: {e}");
            std::process::exit(2);
        }
    };
    let mut cfg = garage.config();
    if let Some(p) = tune.part_mib {
        cfg.part_size = p * 1024 * 1024;
    }
    if let Some(c) = tune.concurrency {
        cfg.multipart_concurrency = usize::try_from(c).expect("concurrency");
    }
    let part_size = usize::try_from(cfg.part_size).expect("part size");
    let concurrency = cfg.multipart_concurrency;
    let ts = truststream_storage_s3::S3Storage::connect(cfg)
        .await
        .expect("storage-s3");
    ts.create_bucket(BUCKET).await.expect("bucket");
    let clients = Clients {
        ts: Arc::new(ts),
        raw: raw_client(&garage),
        os: os_client(&garage),
        part_size,
        concurrency,
    };
    let small = payload(SMALL, 1);
    let large = payload(LARGE, 2);
    let sides = [Side::Ts, Side::Raw, Side::Os];
    let mut rows = vec![
        Row {
            name: "put 1,000 x 4 KiB",
            unit: "ops/s",
            work: COUNT as f64,
            times: Default::default(),
        },
        Row {
            name: "get 1,000 x 4 KiB",
            unit: "ops/s",
            work: COUNT as f64,
            times: Default::default(),
        },
        Row {
            name: "put 64 MiB",
            unit: "MiB/s",
            work: 64.0,
            times: Default::default(),
        },
        Row {
            name: "put 64 MiB, 1 PUT*",
            unit: "MiB/s",
            work: 64.0,
            times: Default::default(),
        },
        Row {
            name: "get 64 MiB",
            unit: "MiB/s",
            work: 64.0,
            times: Default::default(),
        },
        Row {
            name: "list 1,000 keys",
            unit: "lists/s",
            work: 1.0,
            times: Default::default(),
        },
    ];
    // Warm-up: connections, the first objects.
    for side in sides {
        put_small(&clients, side, &small).await;
        put_large(&clients, side, &large, LargePut::Multipart).await;
    }
    for round in 0..rounds {
        // One workload at a time for every side, the order of the sides
        // rotating each round, so no side's timing always follows its own
        // heavy step (the server's background work after a 64 MiB upload
        // would otherwise land on that side's listing).
        for (row, workload) in rows.iter_mut().enumerate() {
            for k in 0..3 {
                let side = sides[(k + round) % 3];
                let t = Instant::now();
                match row {
                    0 => put_small(&clients, side, &small).await,
                    1 => get_small(&clients, side).await,
                    2 => put_large(&clients, side, &large, LargePut::Multipart).await,
                    3 => put_large(&clients, side, &large, LargePut::Single).await,
                    4 => {
                        let n = get_one(&clients, side, format!("{}/large", side.prefix())).await;
                        assert_eq!(n, LARGE);
                    }
                    _ => {
                        for _ in 0..10 {
                            list(&clients, side).await;
                        }
                    }
                }
                let elapsed = if row == 5 {
                    t.elapsed() / 10
                } else {
                    t.elapsed()
                };
                workload.times[side as usize].push(elapsed);
            }
        }
        eprintln!("round {} of {rounds} done", round + 1);
    }
    println!(
        "\n{:<20} {:>14} {:>14} {:>14} {:>22} {:>22}",
        "workload", "storage-s3", "aws-sdk-s3", "object_store", "ts/raw (rounds)", "ts/os (rounds)"
    );
    for r in &rows {
        let rate: Vec<f64> = r
            .times
            .iter()
            .map(|t| r.work / median(t.clone()).as_secs_f64())
            .collect();
        println!(
            "{:<20} {:>8.1} {:<5} {:>8.1} {:<5} {:>8.1} {:<5} {:>8.2}x ({}) {:>8.2}x ({})",
            r.name,
            rate[0],
            r.unit,
            rate[1],
            r.unit,
            rate[2],
            r.unit,
            rate[0] / rate[1],
            spread(&r.times[0], &r.times[1]),
            rate[0] / rate[2],
            spread(&r.times[0], &r.times[2]),
        );
    }
    println!(
        "\n(median of {rounds} round(s); {} sides: {}; multipart puts in {} MiB parts, {} in flight on every side;",
        sides.len(),
        sides.map(Side::name).join(", "),
        part_size / (1024 * 1024),
        concurrency
    );
    println!(
        "* the raw and object_store sides send one PUT, storage-s3 its default multipart upload)"
    );
}
