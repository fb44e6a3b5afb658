//! What a storage provider can do, as data.

/// Capabilities of a storage provider.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct StorageCapabilities {
    /// `download_range`.
    pub range_reads: bool,
    /// `upload_stream` and `download_stream`.
    pub streaming: bool,
    /// `WriteCondition::IfNotExists` and `WriteCondition::IfMatch`.
    pub conditional_writes: bool,
    /// A CRC32C checksum of the content is recorded at upload and verified
    /// on whole downloads (objects earlier versions wrote keep their SHA-256
    /// and are checked with it).
    pub checksums: bool,
    /// `copy`.
    pub copy: bool,
    /// `signed_url` for GET.
    pub signed_urls: bool,
    /// `signed_url` for PUT.
    pub signed_upload_urls: bool,
    /// `fetch_signed` and `verify_signed`: the provider serves and checks its
    /// own signed URLs through the interface (memory, filesystem), so an
    /// HTTP layer in front of it
    /// (`truststream serve`) can answer them. `false` where a remote server
    /// answers the URLs (S3, Supabase): fetch those over HTTP.
    pub fetch_signed: bool,
    /// `create_bucket` / `delete_bucket`.
    pub manage_buckets: bool,
    /// The `public` flag of uploads is kept.
    pub public_objects: bool,
    /// Largest object accepted, if limited.
    pub max_object_size: Option<u64>,
}

impl StorageCapabilities {
    /// Everything off.
    pub const fn none() -> Self {
        StorageCapabilities {
            range_reads: false,
            streaming: false,
            conditional_writes: false,
            checksums: false,
            copy: false,
            signed_urls: false,
            signed_upload_urls: false,
            fetch_signed: false,
            manage_buckets: false,
            public_objects: false,
            max_object_size: None,
        }
    }
}

impl StorageCapabilities {
    /// Every feature on, objects limited to `max_object_size`: for providers
    /// that implement the whole interface themselves (memory, filesystem).
    /// Such a provider claims each flag added later as well, and the
    /// conformance suite holds it to every claim.
    pub const fn all(max_object_size: Option<u64>) -> Self {
        StorageCapabilities {
            range_reads: true,
            streaming: true,
            conditional_writes: true,
            checksums: true,
            copy: true,
            signed_urls: true,
            signed_upload_urls: true,
            fetch_signed: true,
            manage_buckets: true,
            public_objects: true,
            max_object_size,
        }
    }
}

impl Default for StorageCapabilities {
    fn default() -> Self {
        Self::none()
    }
}
