//! Everything a storage holds, to compare a primary with its secondary.

use std::collections::BTreeMap;

use truststream_core_storage::{ListOptions, Storage};

/// One object as the composite replicates it (ETags and times differ
/// between providers and are left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub data: Vec<u8>,
    pub content_type: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub public: bool,
}

/// `(bucket, key) -> object` of every bucket, and the bucket names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub buckets: Vec<String>,
    pub objects: BTreeMap<(String, String), Object>,
}

pub async fn snapshot(storage: &dyn Storage) -> Snapshot {
    let mut snap = Snapshot::default();
    let mut buckets: Vec<String> = storage
        .list_buckets()
        .await
        .expect("list_buckets")
        .into_iter()
        .map(|b| b.name)
        .collect();
    buckets.sort();
    for bucket in &buckets {
        let mut options = ListOptions::new();
        loop {
            let page = storage.list(bucket, &options).await.expect("list");
            for meta in page.objects {
                let data = storage.download(bucket, &meta.key).await.expect("download");
                // What a listing carries differs by provider (S3 lists no
                // content type): the object's own metadata.
                let meta = storage
                    .get_metadata(bucket, &meta.key)
                    .await
                    .expect("get_metadata");
                snap.objects.insert(
                    (bucket.clone(), meta.key.clone()),
                    Object {
                        data: data.to_vec(),
                        content_type: meta.content_type,
                        metadata: meta.metadata,
                        public: meta.public,
                    },
                );
            }
            match page.next_cursor {
                Some(c) => options = options.cursor(c),
                None => break,
            }
        }
    }
    snap.buckets = buckets;
    snap
}
