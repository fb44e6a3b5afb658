//! Large transfers: multipart uploads (bounded concurrency, aborted on
//! failure) and resumable, verified streaming downloads.

use std::collections::HashMap;

use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::primitives::ByteStream as SdkBody;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, MetadataDirective};
use bytes::{Bytes, BytesMut};
use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt};
use truststream_core_storage::{
    ByteRange, ByteStream, Checksum, ChecksumAlgorithm, ChecksumHasher, Error, ErrorKind,
    ObjectDownload, ObjectMeta, StorageResult, UploadOptions, WriteCondition,
};

use crate::error::{map_sdk, Target};
use crate::{condition_error, content_type_of, meta, quoted, range_header, S3Storage};

impl S3Storage {
    /// Uploads `data` (larger than the threshold) in parts of `part_size`.
    pub(crate) async fn multipart_bytes(
        &self,
        bucket: &str,
        key: &str,
        data: Bytes,
        options: &UploadOptions,
        checksum: Checksum,
        part_size: u64,
    ) -> StorageResult<ObjectMeta> {
        let metadata = meta::encode(options, Some(checksum))?;
        let step = usize::try_from(part_size).unwrap_or(usize::MAX);
        let size = data.len();
        let parts = futures::stream::iter(
            (0..size)
                .step_by(step)
                .map(move |at| Ok(data.slice(at..(at + step).min(size)))),
        );
        let etag = self
            .multipart(bucket, key, parts, options, metadata)
            .await?;
        Ok(self.uploaded(bucket, key, size as u64, etag, options, Some(checksum)))
    }

    /// Streamed upload: a single PUT when the stream ends within the
    /// threshold, multipart otherwise.
    pub(crate) async fn upload_from_stream(
        &self,
        bucket: &str,
        key: &str,
        mut data: ByteStream,
        options: &UploadOptions,
    ) -> StorageResult<ObjectMeta> {
        let threshold = usize::try_from(self.config().multipart_threshold).unwrap_or(usize::MAX);
        let mut head = BytesMut::new();
        let mut ended = false;
        while head.len() <= threshold {
            match data.next().await {
                // An error item aborts the upload: nothing was sent yet.
                Some(chunk) => head.extend_from_slice(&chunk?),
                None => {
                    ended = true;
                    break;
                }
            }
        }
        if ended {
            let head = head.freeze();
            let checksum = Checksum::crc32c(&head);
            return self.put_single(bucket, key, head, options, checksum).await;
        }

        // Too large to hold: multipart, hashing the parts as they pass. The
        // checksum is only known at the end, so it is added to the object's
        // metadata afterwards by a server-side copy onto itself.
        let part_size = usize::try_from(self.config().part_size_for(None)).unwrap_or(usize::MAX);
        let mut hasher = ChecksumHasher::new(ChecksumAlgorithm::Crc32c);
        let mut size = 0u64;
        let parts = rechunk(data, head, part_size).map(|part| {
            if let Ok(p) = &part {
                hasher.update(p);
                size += p.len() as u64;
            }
            part
        });
        let metadata = meta::encode(options, None)?;
        let etag = self
            .multipart(bucket, key, parts, options, metadata)
            .await?;
        let checksum = hasher.finish();
        let metadata = meta::encode(options, Some(checksum))?;
        let recorded = self
            .client()
            .copy_object()
            .copy_source(crate::list::copy_source(bucket, key))
            .copy_source_if_match(&etag)
            .bucket(bucket)
            .key(key)
            .metadata_directive(MetadataDirective::Replace)
            .content_type(content_type_of(options))
            .set_metadata(Some(metadata))
            .send()
            .await;
        match recorded {
            Ok(out) => {
                let etag = out
                    .copy_object_result()
                    .and_then(|r| r.e_tag())
                    .map(str::to_string)
                    .unwrap_or(etag);
                Ok(self.uploaded(bucket, key, size, etag, options, Some(checksum)))
            }
            Err(e) => {
                // The object is stored; only its checksum could not be
                // recorded (or it was replaced meanwhile). Downloads of it are
                // then not verified: say so in the result.
                tracing::warn!(
                    bucket,
                    key,
                    error = %map_sdk(e, Target::Object(bucket, key)),
                    "streamed multipart upload stored, but its checksum could not be recorded"
                );
                Ok(self.uploaded(bucket, key, size, etag, options, None))
            }
        }
    }

    fn uploaded(
        &self,
        bucket: &str,
        key: &str,
        size: u64,
        etag: String,
        options: &UploadOptions,
        checksum: Option<Checksum>,
    ) -> ObjectMeta {
        ObjectMeta {
            bucket: bucket.to_string(),
            key: key.to_string(),
            size,
            content_type: Some(content_type_of(options)),
            etag,
            last_modified: crate::now_seconds(),
            metadata: options.metadata.clone(),
            public: options.public,
            checksum,
        }
    }

    /// Runs one multipart upload of `parts`; returns the object's ETag. On
    /// any failure the upload is aborted, so no part becomes visible.
    async fn multipart<S>(
        &self,
        bucket: &str,
        key: &str,
        parts: S,
        options: &UploadOptions,
        metadata: HashMap<String, String>,
    ) -> StorageResult<String>
    where
        S: Stream<Item = StorageResult<Bytes>> + Send,
    {
        let created = self
            .client()
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .content_type(content_type_of(options))
            .set_metadata(Some(metadata))
            .send()
            .await
            .map_err(|e| map_sdk(e, Target::Object(bucket, key)))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| Error::internal("the S3 server returned no multipart upload id"))?
            .to_string();
        let result = async {
            let completed = self.send_parts(bucket, key, &upload_id, parts).await?;
            let mut req = self
                .client()
                .complete_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(completed))
                        .build(),
                );
            req = match &options.condition {
                WriteCondition::None => req,
                WriteCondition::IfNotExists => req.if_none_match("*"),
                WriteCondition::IfMatch(etag) => req.if_match(quoted(etag)),
            };
            let out = req
                .send()
                .await
                .map_err(|e| condition_error(map_sdk(e, Target::Object(bucket, key)), options))?;
            out.e_tag()
                .map(str::to_string)
                .ok_or_else(|| Error::internal("the S3 server returned no ETag for the upload"))
        }
        .await;
        if result.is_err() {
            let aborted = self
                .client()
                .abort_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
            if let Err(e) = aborted {
                // The parts stay invisible; a lifecycle rule or the server's
                // own cleanup removes them.
                tracing::warn!(
                    bucket,
                    key,
                    error = %map_sdk(e, Target::Object(bucket, key)),
                    "could not abort a failed multipart upload"
                );
            }
        }
        result
    }

    /// Sends the parts with at most `multipart_concurrency` in flight.
    async fn send_parts<S>(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: S,
    ) -> StorageResult<Vec<CompletedPart>>
    where
        S: Stream<Item = StorageResult<Bytes>> + Send,
    {
        let limit = self.config().multipart_concurrency.max(1);
        let mut parts = std::pin::pin!(parts);
        let mut in_flight = FuturesUnordered::new();
        let mut done = Vec::new();
        let mut number = 0i32;
        let mut exhausted = false;
        let result = 'outer: loop {
            while !exhausted && in_flight.len() < limit {
                match parts.next().await {
                    Some(Ok(body)) => {
                        number += 1;
                        let req = self
                            .client()
                            .upload_part()
                            .bucket(bucket)
                            .key(key)
                            .upload_id(upload_id)
                            .part_number(number)
                            .body(SdkBody::from(body));
                        let (b, k, n) = (bucket.to_string(), key.to_string(), number);
                        in_flight.push(tokio::spawn(async move {
                            let out = req
                                .send()
                                .await
                                .map_err(|e| map_sdk(e, Target::Object(&b, &k)))?;
                            Ok::<_, Error>(
                                CompletedPart::builder()
                                    .part_number(n)
                                    .set_e_tag(out.e_tag().map(str::to_string))
                                    .build(),
                            )
                        }));
                    }
                    // The source failed: abort (nothing is visible yet).
                    Some(Err(e)) => break 'outer Err(e),
                    None => exhausted = true,
                }
            }
            match in_flight.next().await {
                Some(Ok(Ok(part))) => done.push(part),
                Some(Ok(Err(e))) => break Err(e),
                Some(Err(join)) => {
                    break Err(Error::internal("a part upload task failed").with_source(join))
                }
                None => break Ok(()),
            }
        };
        for task in &in_flight {
            task.abort();
        }
        result?;
        done.sort_by_key(|p| p.part_number());
        Ok(done)
    }

    /// Opens a verified, resumable stream of the object (or a range of it);
    /// also returns the number of bytes it will yield.
    pub(crate) async fn open_stream(
        &self,
        bucket: &str,
        key: &str,
        range: Option<ByteRange>,
    ) -> StorageResult<(
        impl Stream<Item = StorageResult<Bytes>> + Send + 'static,
        u64,
    )> {
        let out = self.get_object(bucket, key, range).await?;
        Ok(self.stream_of(out, bucket, key, range))
    }

    /// One `GetObject` of the object (or a range of it): the object's
    /// metadata from the answer's headers (mapped as a HEAD's are), the
    /// range served and the verified, resumable stream of its body.
    pub(crate) async fn open_with_metadata(
        &self,
        bucket: &str,
        key: &str,
        range: Option<ByteRange>,
    ) -> StorageResult<ObjectDownload> {
        let out = self.get_object(bucket, key, range).await?;
        let meta = meta::ObjectHeaders::of_get(&out).into_meta(bucket, key);
        let (stream, len) = self.stream_of(out, bucket, key, range);
        let start = range.map_or(0, |r| r.start);
        Ok(ObjectDownload {
            meta,
            range: start..start + len,
            body: Box::pin(stream),
        })
    }

    /// Sends the `GetObject` of the object, with a `Range` header for `range`.
    async fn get_object(
        &self,
        bucket: &str,
        key: &str,
        range: Option<ByteRange>,
    ) -> StorageResult<GetObjectOutput> {
        let mut req = self.client().get_object().bucket(bucket).key(key);
        if let Some(r) = range {
            req = req.range(range_header(r.start, r.end));
        }
        req.send()
            .await
            .map_err(|e| map_sdk(e, Target::Object(bucket, key)))
    }

    /// The verified, resumable stream of a `GetObject` answer's body, and
    /// the number of bytes it will yield.
    fn stream_of(
        &self,
        out: GetObjectOutput,
        bucket: &str,
        key: &str,
        range: Option<ByteRange>,
    ) -> (
        impl Stream<Item = StorageResult<Bytes>> + Send + 'static,
        u64,
    ) {
        let start = range.map_or(0, |r| r.start);
        let len = out
            .content_length()
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0);
        let etag = out.e_tag().map(str::to_string);
        // Only a whole object can be checked against its checksum.
        let expected = match range {
            None => meta::decode(out.metadata()).checksum,
            Some(_) => None,
        };
        let state = Download {
            storage: self.clone(),
            bucket: bucket.to_string(),
            key: key.to_string(),
            etag,
            next: start,
            end: start + len,
            body: Some(out.body),
            resumes_left: self.config().resume_attempts,
            hasher: expected.map(|sum| ChecksumHasher::new(sum.algorithm())),
            expected,
            finished: false,
        };
        (futures::stream::unfold(state, Download::step), len)
    }
}

/// Regroups a stream of chunks into parts of `size` bytes (the last one may
/// be shorter), starting with `first`.
fn rechunk(
    input: ByteStream,
    first: BytesMut,
    size: usize,
) -> impl Stream<Item = StorageResult<Bytes>> + Send {
    futures::stream::unfold(
        (input, first, false),
        move |(mut input, mut buf, mut done)| async move {
            while !done && buf.len() < size {
                match input.next().await {
                    Some(Ok(c)) => buf.extend_from_slice(&c),
                    Some(Err(e)) => return Some((Err(e), (input, BytesMut::new(), true))),
                    None => done = true,
                }
            }
            if buf.is_empty() {
                return None;
            }
            let part = buf.split_to(buf.len().min(size)).freeze();
            Some((Ok(part), (input, buf, done)))
        },
    )
}

/// State of a streaming download.
struct Download {
    storage: S3Storage,
    bucket: String,
    key: String,
    /// The version being read; resumed requests must match it.
    etag: Option<String>,
    /// Offset of the next byte to yield.
    next: u64,
    /// One past the last byte to yield.
    end: u64,
    body: Option<SdkBody>,
    resumes_left: u32,
    hasher: Option<ChecksumHasher>,
    expected: Option<Checksum>,
    finished: bool,
}

impl Download {
    async fn step(mut self) -> Option<(StorageResult<Bytes>, Download)> {
        if self.finished {
            return None;
        }
        loop {
            let item = match self.body.as_mut() {
                Some(body) => body.next().await,
                None => return self.fail(Error::internal("download stream used after its end")),
            };
            match item {
                Some(Ok(chunk)) => {
                    if chunk.is_empty() {
                        continue;
                    }
                    let len = chunk.len() as u64;
                    if self.next + len > self.end {
                        let e = Error::internal(format!(
                            "the S3 server sent more bytes of object {:?} than announced",
                            self.key
                        ));
                        return self.fail(e);
                    }
                    self.next += len;
                    if let Some(h) = self.hasher.as_mut() {
                        h.update(&chunk);
                    }
                    return Some((Ok(chunk), self));
                }
                Some(Err(e)) if self.can_resume() => {
                    tracing::debug!(key = %self.key, at = self.next, error = %e, "resuming download");
                    self.resumes_left -= 1;
                    if let Err(e) = self.reopen().await {
                        return self.fail(e);
                    }
                }
                Some(Err(e)) => {
                    let e = Error::unavailable(format!(
                        "the download of object {:?} in bucket {:?} broke off at byte {} of {}",
                        self.key, self.bucket, self.next, self.end
                    ))
                    .with_source(e);
                    return self.fail(e);
                }
                None if self.next < self.end => {
                    if !self.can_resume() {
                        let e = Error::unavailable(format!(
                            "the download of object {:?} ended early, at byte {} of {}",
                            self.key, self.next, self.end
                        ));
                        return self.fail(e);
                    }
                    self.resumes_left -= 1;
                    if let Err(e) = self.reopen().await {
                        return self.fail(e);
                    }
                }
                None => {
                    self.finished = true;
                    if let (Some(h), Some(expected)) = (self.hasher.take(), self.expected) {
                        if let Err(e) = expected.verify(&h.finish(), &self.bucket, &self.key) {
                            return Some((Err(e), self));
                        }
                    }
                    return None;
                }
            }
        }
    }

    /// Whether a broken body may be resumed: bytes are missing, attempts are
    /// left, and the version is known (without an ETag the rest could come
    /// from another version, so the stream fails instead).
    fn can_resume(&self) -> bool {
        self.next < self.end && self.resumes_left > 0 && self.etag.is_some()
    }

    /// Asks for the rest, from the byte reached, of the same version.
    async fn reopen(&mut self) -> StorageResult<()> {
        let mut req = self
            .storage
            .client()
            .get_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .range(range_header(self.next, Some(self.end)));
        if let Some(etag) = &self.etag {
            req = req.if_match(etag);
        }
        let out = req.send().await.map_err(|e| {
            let e = map_sdk(e, Target::Object(&self.bucket, &self.key));
            if e.kind() == ErrorKind::Conflict || e.kind() == ErrorKind::NotFound {
                Error::conflict(format!(
                    "object {:?} in bucket {:?} changed or was deleted during the download \
                     (at byte {}); start the download again",
                    self.key, self.bucket, self.next
                ))
                .with_source(e)
            } else {
                e
            }
        })?;
        self.body = Some(out.body);
        Ok(())
    }

    fn fail(mut self, e: Error) -> Option<(StorageResult<Bytes>, Download)> {
        self.finished = true;
        self.body = None;
        Some((Err(e.with_operation("storage.download_stream")), self))
    }
}
