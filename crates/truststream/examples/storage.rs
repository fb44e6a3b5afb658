//! Files on the embedded default (a directory per bucket under
//! `./data/storage`): upload with a content type and metadata, download
//! whole and in part, list by prefix, copy, delete, and a signed URL.
//!
//! ```sh
//! cargo run -p truststream --example storage
//! ```
//!
//! `TRUSTSTREAM_STORAGE__TYPE=s3` (with its endpoint and bucket settings)
//! moves the same calls to S3.

use std::path::Path;
use std::time::Duration;

use truststream::prelude::*;
use truststream::storage::{ByteRange, ListOptions, SignedUrlMethod};
use truststream::ConfigSources;

/// What the run found.
#[derive(Debug)]
pub struct Report {
    /// The downloaded bytes of `reports/2026/q1.csv`.
    pub body: Bytes,
    /// Its first 5 bytes, downloaded as a range (`0..5`).
    pub head: Bytes,
    /// The content type and metadata read back.
    pub content_type: Option<String>,
    /// `author` from the object's metadata.
    pub author: Option<String>,
    /// Keys under `reports/` after the copy and the delete.
    pub keys: Vec<String>,
    /// A signed download URL, when the provider can sign.
    pub signed_url: Option<String>,
}

/// Runs the storage calls against the runtime's storage.
pub async fn run(runtime: &Runtime) -> Result<Report> {
    let storage = runtime.storage();
    let csv = Bytes::from_static(b"agent,score\nada,97\ngrace,93\n");
    let options = UploadOptions::new()
        .content_type("text/csv")
        .metadata("author", "ada");
    storage
        .upload("docs", "reports/2026/q1.csv", csv.clone(), &options)
        .await?;
    storage
        .upload(
            "docs",
            "reports/2026/draft.txt",
            Bytes::from_static(b"draft"),
            &UploadOptions::new(),
        )
        .await?;

    let body = storage.download("docs", "reports/2026/q1.csv").await?;
    let head = storage
        .download_range("docs", "reports/2026/q1.csv", ByteRange::new(0, 5))
        .await?;
    let meta = storage.get_metadata("docs", "reports/2026/q1.csv").await?;

    storage
        .copy("docs", "reports/2026/q1.csv", "docs", "reports/latest.csv")
        .await?;
    storage.delete("docs", "reports/2026/draft.txt").await?;
    let page = storage
        .list("docs", &ListOptions::new().prefix("reports/"))
        .await?;
    let keys = page.objects.into_iter().map(|o| o.key).collect();

    let signed_url = if storage.capabilities().signed_urls {
        let url = storage
            .signed_url(
                "docs",
                "reports/latest.csv",
                SignedUrlMethod::Get,
                Duration::from_secs(600),
            )
            .await?;
        Some(url.url)
    } else {
        None
    };
    Ok(Report {
        body,
        head,
        content_type: meta.content_type,
        author: meta.metadata.get("author").cloned(),
        keys,
        signed_url,
    })
}

/// The embedded default's storage (bucket `docs`), kept under `dir`.
pub async fn embedded_runtime(dir: &Path) -> Result<Runtime> {
    let toml = format!(
        "[default.database]\ntype = \"sqlite\"\npath = {:?}\n\
         [default.storage]\ntype = \"fs\"\nroot = {:?}\nbuckets = [\"docs\"]\n",
        dir.join("app.db"),
        dir.join("storage"),
    );
    let config = ConfigSources::new().toml_str(&toml).load()?;
    Runtime::builder().config(config).build().await
}

#[tokio::main]
async fn main() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::internal(e.to_string()))?;
    let runtime = embedded_runtime(dir.path()).await?;
    let report = run(&runtime).await?;
    println!(
        "downloaded {} bytes ({:?})",
        report.body.len(),
        report.content_type
    );
    println!(
        "first line starts {:?}",
        String::from_utf8_lossy(&report.head)
    );
    println!("under reports/: {:?}", report.keys);
    if let Some(url) = &report.signed_url {
        println!("signed for 10 minutes: {url}");
    }
    Ok(())
}
