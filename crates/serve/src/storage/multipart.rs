//! A streaming `multipart/form-data` reader for uploads: the small text
//! fields before the file are read whole, the file part is handed on as a
//! stream, never buffered.

use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use truststream_core::Error;
use truststream_core_storage::{ByteStream, StorageResult};

/// Largest header block of one part.
const MAX_HEADERS: usize = 16 * 1024;
/// Largest text field read whole.
const MAX_FIELD: usize = 64 * 1024;
/// Most text fields before the file.
const MAX_FIELDS: usize = 32;

type Source = std::pin::Pin<Box<dyn Stream<Item = StorageResult<Bytes>> + Send>>;

/// The boundary of a `multipart/form-data` content type, if it is one.
pub(crate) fn boundary(content_type: &str) -> Option<String> {
    let mut parts = content_type.split(';');
    let mime = parts.next()?.trim();
    if !mime.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    parts.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_string())
            .filter(|b| !b.is_empty() && b.len() <= 200)
    })
}

/// A form's text fields and its file part.
pub(crate) struct Form {
    /// `(name, value)` of the text fields before the file.
    pub fields: Vec<(String, String)>,
    /// The file part's content type.
    pub content_type: Option<String>,
    /// The file part's content.
    pub file: ByteStream,
}

struct Reader {
    source: Source,
    buf: BytesMut,
    /// `\r\n--<boundary>`.
    delimiter: Vec<u8>,
    done: bool,
}

impl Reader {
    async fn fill(&mut self) -> StorageResult<bool> {
        if self.done {
            return Ok(false);
        }
        match self.source.next().await {
            Some(Ok(chunk)) => {
                self.buf.extend_from_slice(&chunk);
                Ok(true)
            }
            Some(Err(e)) => Err(e),
            None => {
                self.done = true;
                Ok(false)
            }
        }
    }

    fn truncated() -> Error {
        Error::invalid_input("the multipart body ended before its closing boundary")
    }

    /// Reads bytes up to `pattern` (consumed, not returned), at most `max`.
    async fn read_until(&mut self, pattern: &[u8], max: usize) -> StorageResult<Bytes> {
        loop {
            if let Some(i) = find(&self.buf, pattern) {
                let out = self.buf.split_to(i).freeze();
                self.buf.advance(pattern.len());
                return Ok(out);
            }
            if self.buf.len() > max + pattern.len() {
                return Err(Error::invalid_input("a multipart field is too large"));
            }
            if !self.fill().await? {
                return Err(Self::truncated());
            }
        }
    }

    /// After a delimiter: `--` ends the form, `\r\n` starts a part.
    async fn after_delimiter(&mut self) -> StorageResult<bool> {
        while self.buf.len() < 2 {
            if !self.fill().await? {
                return Err(Self::truncated());
            }
        }
        if &self.buf[..2] == b"--" {
            return Ok(false);
        }
        // Transport padding (spaces, tabs) may precede the line break.
        let line = self.read_until(b"\r\n", 1024).await?;
        if line.iter().any(|c| *c != b' ' && *c != b'\t') {
            return Err(Error::invalid_input("malformed multipart boundary line"));
        }
        Ok(true)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

struct PartHeaders {
    name: String,
    filename: Option<String>,
    content_type: Option<String>,
}

fn parse_headers(block: &[u8]) -> StorageResult<PartHeaders> {
    let text = std::str::from_utf8(block)
        .map_err(|_| Error::invalid_input("multipart part headers are not UTF-8"))?;
    let mut out = PartHeaders {
        name: String::new(),
        filename: None,
        content_type: None,
    };
    for line in text.split("\r\n") {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let k = k.trim();
        if k.eq_ignore_ascii_case("content-type") {
            out.content_type = Some(v.trim().to_string());
        } else if k.eq_ignore_ascii_case("content-disposition") {
            for param in split_params(v).into_iter().skip(1) {
                let Some((pk, pv)) = param.split_once('=') else {
                    continue;
                };
                let pv = unquote(pv.trim());
                match pk.trim().to_ascii_lowercase().as_str() {
                    "name" => out.name = pv,
                    "filename" => out.filename = Some(pv),
                    _ => {}
                }
            }
        }
    }
    Ok(out)
}

/// Splits on `;` outside double quotes.
fn split_params(v: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in v.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                out.push(&v[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&v[start..]);
    out
}

fn unquote(v: &str) -> String {
    match v.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(inner) => inner.replace("\\\"", "\"").replace("\\\\", "\\"),
        None => v.to_string(),
    }
}

/// Reads the text fields of a form up to its first file part (a part with
/// a `filename`, or one whose name is not `text_fields`'), and returns them
/// with the file part as a stream. A form without a file part is
/// `InvalidInput`.
pub(crate) async fn read_form(
    source: Source,
    boundary: &str,
    text_fields: &[&str],
) -> StorageResult<Form> {
    let mut reader = Reader {
        source,
        // The opening boundary has no line break before it: add one so
        // every boundary reads the same.
        buf: BytesMut::from(&b"\r\n"[..]),
        delimiter: format!("\r\n--{boundary}").into_bytes(),
        done: false,
    };
    let delimiter = reader.delimiter.clone();
    // The preamble, if any, is skipped.
    reader.read_until(&delimiter, MAX_FIELD).await?;
    let mut fields = Vec::new();
    loop {
        if !reader.after_delimiter().await? {
            return Err(Error::invalid_input("the multipart form has no file part"));
        }
        let block = reader.read_until(b"\r\n\r\n", MAX_HEADERS).await?;
        let headers = parse_headers(&block)?;
        let is_text = headers.filename.is_none() && text_fields.contains(&headers.name.as_str());
        if is_text {
            if fields.len() >= MAX_FIELDS {
                return Err(Error::invalid_input("too many multipart fields"));
            }
            let value = reader.read_until(&delimiter, MAX_FIELD).await?;
            let value = String::from_utf8(value.to_vec())
                .map_err(|_| Error::invalid_input("a multipart field is not UTF-8"))?;
            fields.push((headers.name, value));
            continue;
        }
        return Ok(Form {
            fields,
            content_type: headers.content_type,
            file: file_stream(reader),
        });
    }
}

/// The current part's content up to the next delimiter, as a stream.
fn file_stream(reader: Reader) -> ByteStream {
    Box::pin(futures::stream::unfold(Some(reader), |state| async move {
        let mut r = state?;
        loop {
            if let Some(i) = find(&r.buf, &r.delimiter) {
                let out = r.buf.split_to(i).freeze();
                // The part is complete; what follows is not needed.
                return (!out.is_empty()).then_some((Ok(out), None));
            }
            // All but a possible start of the delimiter can go out.
            let keep = r.delimiter.len() - 1;
            if r.buf.len() > keep {
                let n = r.buf.len() - keep;
                let out = r.buf.split_to(n).freeze();
                return Some((Ok(out), Some(r)));
            }
            match r.fill().await {
                Ok(true) => {}
                Ok(false) => return Some((Err(Reader::truncated()), None)),
                Err(e) => return Some((Err(e), None)),
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(body: &[u8], size: usize) -> Source {
        let parts: Vec<StorageResult<Bytes>> = body
            .chunks(size)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Box::pin(futures::stream::iter(parts))
    }

    async fn collect(mut s: ByteStream) -> StorageResult<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c?);
        }
        Ok(out)
    }

    fn form(content: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(
            b"--XyZ\r\nContent-Disposition: form-data; name=\"cacheControl\"\r\n\r\n3600\r\n",
        );
        body.extend_from_slice(
            b"--XyZ\r\nContent-Disposition: form-data; name=\"metadata\"\r\n\r\n{\"a\":1}\r\n",
        );
        body.extend_from_slice(b"--XyZ\r\nContent-Disposition: form-data; name=\"\"; filename=\"blob\"\r\nContent-Type: image/png\r\n\r\n");
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n--XyZ--\r\n");
        body
    }

    #[tokio::test]
    async fn reads_fields_and_streams_the_file() {
        let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let body = form(&content);
        for size in [1, 7, 100, 70_000, body.len()] {
            let f = read_form(chunks(&body, size), "XyZ", &["cacheControl", "metadata"])
                .await
                .unwrap();
            assert_eq!(f.fields.len(), 2);
            assert_eq!(f.fields[0], ("cacheControl".into(), "3600".into()));
            assert_eq!(f.content_type.as_deref(), Some("image/png"));
            assert_eq!(collect(f.file).await.unwrap(), content, "chunk size {size}");
        }
    }

    #[tokio::test]
    async fn a_truncated_file_is_an_error() {
        let body = form(b"hello world");
        let cut = &body[..body.len() - 14];
        let f = read_form(chunks(cut, 5), "XyZ", &["cacheControl", "metadata"])
            .await
            .unwrap();
        assert!(collect(f.file).await.is_err());
        assert!(boundary("multipart/form-data; boundary=\"abc\"").is_some());
        assert!(boundary("application/json").is_none());
    }
}
