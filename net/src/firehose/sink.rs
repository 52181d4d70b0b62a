//! Where objects land: an S3-compatible endpoint (`millrace serve --s3-endpoint URL`:
//! PutObject, path-style, SigV4 service `s3`), or, with none configured, the embedded
//! default: each bucket a folder under the data directory, each object a file written
//! durably (temporary file, fdatasync, rename, fsync of the folder) before it counts as
//! delivered. A delivery is confirmed only when the object is durable at its destination;
//! the worker advances its cursor after that and not before.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::aws::sigv4::{self, Payload, SignedRequest};

/// Credentials and region for an S3 endpoint.
#[derive(Debug, Clone)]
pub struct S3Endpoint {
    /// `http://host:port` or `https://host:port`, no path.
    pub url: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub region: String,
}

impl S3Endpoint {
    /// The endpoint at `url` with credentials from `MILLRACE_S3_ACCESS_KEY_ID` /
    /// `MILLRACE_S3_SECRET_ACCESS_KEY`, else the standard `AWS_ACCESS_KEY_ID` /
    /// `AWS_SECRET_ACCESS_KEY`; region from `AWS_REGION`/`AWS_DEFAULT_REGION` or `region`.
    pub fn from_env(url: &str, region: &str) -> Result<S3Endpoint, String> {
        let var = |names: [&str; 2]| {
            names.iter().find_map(|name| std::env::var(name).ok().filter(|value| !value.is_empty()))
        };
        let access_key_id = var(["MILLRACE_S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"]).ok_or(
            "--s3-endpoint needs credentials: set MILLRACE_S3_ACCESS_KEY_ID and MILLRACE_S3_SECRET_ACCESS_KEY \
             (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)",
        )?;
        let secret_access_key = var(["MILLRACE_S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"])
            .ok_or("--s3-endpoint needs MILLRACE_S3_SECRET_ACCESS_KEY (or AWS_SECRET_ACCESS_KEY)")?;
        let region = var(["AWS_REGION", "AWS_DEFAULT_REGION"]).unwrap_or_else(|| region.to_owned());
        let url = url.trim_end_matches('/').to_owned();
        let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
        match rest {
            Some(rest) if !rest.is_empty() && !rest.contains('/') => {}
            _ => {
                return Err(format!(
                    "--s3-endpoint {url}: expected http://host[:port] or https://host[:port]"
                ))
            }
        }
        Ok(S3Endpoint { url, access_key_id, secret_access_key, region })
    }
}

/// One object to store.
pub struct Object<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    /// Shared, so that a retry or the writer thread takes it without a copy.
    pub body: bytes::Bytes,
    pub content_encoding: Option<&'a str>,
    /// SSE-KMS key for an S3 endpoint.
    pub kms_key: Option<&'a str>,
}

#[derive(Clone)]
pub enum Sink {
    Local { root: PathBuf },
    S3(S3Endpoint),
}

impl Sink {
    pub fn describe(&self) -> String {
        match self {
            Sink::Local { root } => format!("buckets as folders under {}", root.display()),
            Sink::S3(endpoint) => format!("S3 at {}", endpoint.url),
        }
    }

    /// Stores one object durably; the error says why not (the caller retries).
    pub async fn put(&self, object: &Object<'_>) -> Result<(), String> {
        match self {
            Sink::Local { root } => {
                let path = local_path(root, object.bucket, object.key);
                let body = object.body.clone();
                tokio::task::spawn_blocking(move || write_durably(&path, &body))
                    .await
                    .map_err(|error| format!("the writer task failed: {error}"))?
            }
            Sink::S3(endpoint) => put_object(endpoint, object).await,
        }
    }

    /// Reads one object whole (an analytics application's reference data), at most `limit`
    /// bytes; the error says why not.
    pub async fn get(&self, bucket: &str, key: &str, limit: usize) -> Result<Vec<u8>, String> {
        match self {
            Sink::Local { root } => {
                let path = local_path(root, bucket, key);
                let body = tokio::task::spawn_blocking(move || std::fs::read(&path))
                    .await
                    .map_err(|error| format!("the reader task failed: {error}"))?
                    .map_err(|error| format!("s3://{bucket}/{key}: {error}"))?;
                if body.len() > limit {
                    return Err(format!("s3://{bucket}/{key} is {} bytes, more than {limit}", body.len()));
                }
                Ok(body)
            }
            Sink::S3(endpoint) => get_object(endpoint, bucket, key, limit).await,
        }
    }
}

/// The file of an object: S3 keys are any text, so path segments that a file system would
/// read as something else (`.`, `..`, empty) are escaped, and the key never leaves its
/// bucket's folder.
pub fn local_path(root: &Path, bucket: &str, key: &str) -> PathBuf {
    let mut path = root.join(bucket);
    for segment in key.split('/') {
        match segment {
            "" => path.push("%2F"),
            "." => path.push("%2E"),
            ".." => path.push("%2E%2E"),
            other => path.push(other),
        }
    }
    // A key ending in `/` names a folder-like object; keep it a file.
    path
}

fn write_durably(path: &Path, body: &[u8]) -> Result<(), String> {
    let folder = path.parent().ok_or("an object path has a folder")?;
    std::fs::create_dir_all(folder).map_err(|error| format!("creating {}: {error}", folder.display()))?;
    let name = path.file_name().and_then(|name| name.to_str()).unwrap_or("object");
    let temporary = folder.join(format!(".{name}.partial"));
    let fail = |what: &str, error: std::io::Error| format!("{what} {}: {error}", temporary.display());
    write_file(&temporary, body).map_err(|(what, error)| fail(what, error))?;
    std::fs::rename(&temporary, path).map_err(|error| fail("renaming", error))?;
    std::fs::File::open(folder)
        .and_then(|dir| dir.sync_all())
        .map_err(|error| format!("syncing {}: {error}", folder.display()))
}

/// Block size of direct writes (and the alignment of their buffer).
const DIRECT_BLOCK: usize = 4096;

/// Writes `body` to a new file at `path` and makes it durable. Large bodies are written with
/// direct I/O (padded to whole blocks, then cut to their length): the page cache copy of a
/// buffered write costs more than the device write here, and an object once stored is not
/// read again by this process. Where the file system refuses direct I/O (tmpfs), or for
/// small bodies, a buffered write.
fn write_file(path: &Path, body: &[u8]) -> Result<(), (&'static str, std::io::Error)> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if body.len() >= 64 << 10 {
        let direct = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(path);
        match direct {
            Ok(file) => return write_direct(file, body),
            Err(error) if error.raw_os_error() == Some(libc::EINVAL) => {}
            Err(error) => return Err(("creating", error)),
        }
    }
    let mut file = std::fs::File::create(path).map_err(|error| ("creating", error))?;
    file.write_all(body).map_err(|error| ("writing", error))?;
    file.sync_data().map_err(|error| ("syncing", error))
}

fn write_direct(file: std::fs::File, body: &[u8]) -> Result<(), (&'static str, std::io::Error)> {
    use std::os::unix::fs::FileExt;
    let padded = body.len().div_ceil(DIRECT_BLOCK) * DIRECT_BLOCK;
    // An aligned block-multiple window of a larger allocation (no unsafe code for an aligned
    // allocator).
    let mut storage = vec![0u8; padded + DIRECT_BLOCK];
    let skip = storage.as_ptr().align_offset(DIRECT_BLOCK);
    let buffer = &mut storage[skip..skip + padded];
    buffer[..body.len()].copy_from_slice(body);
    let mut at = 0usize;
    while at < padded {
        // Direct writes complete in whole blocks; a short one leaves the rest to write.
        let written = file.write_at(&buffer[at..], at as u64).map_err(|error| ("writing", error))?;
        if written == 0 || written % DIRECT_BLOCK != 0 {
            let error =
                std::io::Error::new(std::io::ErrorKind::WriteZero, format!("short write: {written} bytes"));
            return Err(("writing", error));
        }
        at += written;
    }
    file.set_len(body.len() as u64).map_err(|error| ("truncating", error))?;
    // fdatasync also makes the new length durable: it is needed to read the data back.
    file.sync_data().map_err(|error| ("syncing", error))
}

/// PutObject: `PUT /{bucket}/{key}`, path-style, payload signed.
async fn put_object(endpoint: &S3Endpoint, object: &Object<'_>) -> Result<(), String> {
    let target = super::http::Target::parse(&endpoint.url)?;
    let raw_path = format!("/{}/{}", object.bucket, object.key);
    let path = sigv4::uri_encode(&raw_path, false);
    let amz_date = sigv4::format_amz_date(now_ms());
    let mut headers = vec![
        ("content-length".to_owned(), object.body.len().to_string()),
        ("content-type".to_owned(), "application/octet-stream".to_owned()),
        ("host".to_owned(), target.host_header.clone()),
        ("x-amz-content-sha256".to_owned(), sigv4::hex(&Sha256::digest(&object.body))),
        ("x-amz-date".to_owned(), amz_date.clone()),
    ];
    if let Some(encoding) = object.content_encoding {
        headers.push(("content-encoding".to_owned(), encoding.to_owned()));
    }
    if let Some(key) = object.kms_key {
        headers.push(("x-amz-server-side-encryption".to_owned(), "aws:kms".to_owned()));
        headers.push(("x-amz-server-side-encryption-aws-kms-key-id".to_owned(), key.to_owned()));
    }
    // The path is signed as S3 signs it: encoded once (the signer encodes what it is given).
    let signed = SignedRequest {
        method: "PUT",
        path: &raw_path,
        query: "",
        headers: &headers,
        payload: Payload::Body(&object.body),
    };
    let authorization = sigv4::sign(
        &signed,
        &endpoint.access_key_id,
        &endpoint.secret_access_key,
        &endpoint.region,
        "s3",
        &amz_date,
    );
    headers.push(("authorization".to_owned(), authorization));
    let answer = target
        .call("PUT", &path, &headers, object.body.clone(), Duration::from_secs(120), 64 << 10)
        .await
        .map_err(|error| format!("PutObject s3://{}/{}: {error}", object.bucket, object.key))?;
    if answer.status == 200 {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(&answer.body[..answer.body.len().min(400)]).into_owned();
        Err(format!("PutObject s3://{}/{} answered {}: {text}", object.bucket, object.key, answer.status))
    }
}

/// GetObject: `GET /{bucket}/{key}`, path-style.
async fn get_object(endpoint: &S3Endpoint, bucket: &str, key: &str, limit: usize) -> Result<Vec<u8>, String> {
    let target = super::http::Target::parse(&endpoint.url)?;
    let raw_path = format!("/{bucket}/{key}");
    let path = sigv4::uri_encode(&raw_path, false);
    let amz_date = sigv4::format_amz_date(now_ms());
    let mut headers = vec![
        ("host".to_owned(), target.host_header.clone()),
        ("x-amz-content-sha256".to_owned(), sigv4::hex(&Sha256::digest(b""))),
        ("x-amz-date".to_owned(), amz_date.clone()),
    ];
    let signed = SignedRequest {
        method: "GET",
        path: &raw_path,
        query: "",
        headers: &headers,
        payload: Payload::Body(b""),
    };
    let authorization = sigv4::sign(
        &signed,
        &endpoint.access_key_id,
        &endpoint.secret_access_key,
        &endpoint.region,
        "s3",
        &amz_date,
    );
    headers.push(("authorization".to_owned(), authorization));
    let answer = target
        .call("GET", &path, &headers, bytes::Bytes::new(), Duration::from_secs(60), limit)
        .await
        .map_err(|error| format!("GetObject s3://{bucket}/{key}: {error}"))?;
    if answer.status == 200 {
        Ok(answer.body.to_vec())
    } else {
        let text = String::from_utf8_lossy(&answer.body[..answer.body.len().min(400)]).into_owned();
        Err(format!("GetObject s3://{bucket}/{key} answered {}: {text}", answer.status))
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_read_back_exactly_whether_written_direct_or_buffered() {
        let folder = std::env::temp_dir().join(format!("millrace-sink-{}", std::process::id()));
        let sizes = [0, 1, 4095, 4096, (64 << 10) - 1, 64 << 10, (64 << 10) + 1, (5 << 20) + 3];
        for (index, size) in sizes.into_iter().enumerate() {
            let body: Vec<u8> = (0..size).map(|i| (i * 7 + index) as u8).collect();
            let path = folder.join(format!("{index}/object"));
            write_durably(&path, &body).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), body, "{size} bytes");
            // Written again (a retried delivery), the object is replaced whole.
            write_durably(&path, &body[..size / 2]).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), &body[..size / 2], "{size} bytes, rewritten");
        }
        std::fs::remove_dir_all(&folder).unwrap();
    }

    #[test]
    fn keys_never_leave_their_bucket_folder() {
        let root = Path::new("/data/s3");
        assert_eq!(local_path(root, "b", "2026/12/01/x.gz"), Path::new("/data/s3/b/2026/12/01/x.gz"));
        assert_eq!(
            local_path(root, "b", "../../etc/passwd"),
            Path::new("/data/s3/b/%2E%2E/%2E%2E/etc/passwd")
        );
        assert_eq!(local_path(root, "b", "/a//b"), Path::new("/data/s3/b/%2F/a/%2F/b"));
    }

    #[test]
    fn local_objects_are_written_whole() {
        let dir = std::env::temp_dir().join(format!("millrace-sink-{}", std::process::id()));
        let path = local_path(&dir, "bucket", "a/b/object");
        write_durably(&path, b"payload").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"payload");
        assert!(!path.with_file_name(".object.partial").exists());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
