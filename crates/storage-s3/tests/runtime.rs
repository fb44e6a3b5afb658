//! The provider as the runtime builds it: `storage.type = "s3"` from layered
//! configuration (TOML + `TRUSTSTREAM_*` variables), keys redacted.

#![allow(clippy::unwrap_used)] // test helpers, not library code

mod support;

use bytes::Bytes;
use truststream_core_storage::{ErrorKind, UploadOptions};
use truststream_runtime::{ConfigSources, Interface, Runtime};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_builds_s3_from_configuration() {
    let Some(garage) = support::garage().await else {
        return;
    };
    let toml = format!(
        "[default.database]\ntype = \"memory\"\n\
         [default.storage]\ntype = \"s3\"\nendpoint = \"{}\"\nregion = \"garage\"\n\
         multipart_threshold = 10485760\nprobe_bucket = \"{}\"\n",
        garage.endpoint(),
        truststream_storage_s3::testing::PROBE_BUCKET
    );
    let config = ConfigSources::new()
        .toml_str(toml)
        .env([
            (
                "TRUSTSTREAM_STORAGE__ACCESS_KEY_ID",
                garage.access_key_id.clone(),
            ),
            (
                "TRUSTSTREAM_STORAGE__SECRET_ACCESS_KEY",
                garage.secret_access_key.clone(),
            ),
        ])
        .load()
        .expect("config");
    assert_eq!(config.section(Interface::Storage).kind(), "s3");
    let shown = config.redacted().to_string();
    assert!(!shown.contains(&garage.secret_access_key), "{shown}");

    let rt = Runtime::builder()
        .config(config)
        .build()
        .await
        .expect("runtime");
    let storage = rt.storage();
    assert_eq!(storage.info().name, "s3");
    assert!(storage.health().await.is_healthy());
    let bucket = format!("ts-rt-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    storage.create_bucket(&bucket).await.unwrap();
    storage
        .upload(
            &bucket,
            "hello.txt",
            Bytes::from("hi"),
            &UploadOptions::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        storage.download(&bucket, "hello.txt").await.unwrap(),
        Bytes::from("hi")
    );
    support::drop_bucket(storage.as_ref(), &bucket).await;

    // A bad setting fails the build with the option's name, no secret shown.
    let bad = ConfigSources::new()
        .toml_str("[default.database]\ntype = \"memory\"\n[default.storage]\ntype = \"s3\"\npart_size = 1024\nsecret_access_key = \"hunter2\"\naccess_key_id = \"x\"\n")
        .load()
        .unwrap();
    let e = match Runtime::builder().config(bad).build().await {
        Err(e) => e,
        Ok(_) => panic!("a 1 KiB part size was accepted"),
    };
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(e.to_string().contains("part_size"), "{e}");
    assert!(!e.to_string().contains("hunter2"), "{e}");
}
