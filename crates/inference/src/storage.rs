//! Object storage by URI, through `object_store`: `file:///...` on one machine, `s3://bucket/key`
//! (any S3-compatible endpoint) in clusters.
//!
//! A [`Storage`] is rooted at one base URI (`--storage`); URIs outside it are refused, so a
//! job cannot make a worker read `/etc/shadow` or another tenant's bucket.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use url::Url;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("invalid storage URI {uri:?}: {reason}")]
    InvalidUri { uri: String, reason: String },
    #[error("{uri} is outside this service's storage ({root})")]
    OutsideRoot { uri: String, root: String },
    #[error("{uri} does not exist")]
    NotFound { uri: String },
    #[error("{uri} is {size} bytes; the limit is {limit}")]
    TooLarge { uri: String, size: u64, limit: u64 },
    #[error("storage error on {uri}: {message}")]
    Backend { uri: String, message: String },
}

impl StorageError {
    /// Caller mistakes (bad or foreign URIs, missing objects) as opposed to storage outages.
    pub fn is_client_error(&self) -> bool {
        matches!(self, Self::InvalidUri { .. } | Self::OutsideRoot { .. } | Self::NotFound { .. } | Self::TooLarge { .. })
    }
}

/// S3 settings beyond the URI; credentials come from the usual `AWS_*` environment.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// e.g. `http://minio.storage:9000` for S3-compatible stores.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub allow_http: bool,
    /// Access key and secret, overriding `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`.
    pub credentials: Option<(String, String)>,
}

pub struct Storage {
    root: Url,
    s3: S3Options,
    stores: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage").field("root", &self.root.as_str()).finish()
    }
}

fn invalid(uri: &str, reason: impl Into<String>) -> StorageError {
    StorageError::InvalidUri { uri: uri.to_string(), reason: reason.into() }
}

/// Parses a storage URI; a bare absolute path is taken as `file://`.
pub fn parse_uri(uri: &str) -> Result<Url, StorageError> {
    let url = if uri.starts_with('/') {
        Url::from_file_path(uri).map_err(|()| invalid(uri, "not an absolute path"))?
    } else {
        Url::parse(uri).map_err(|e| invalid(uri, e.to_string()))?
    };
    match url.scheme() {
        "file" => {}
        "s3" => {
            if url.host_str().unwrap_or("").is_empty() {
                return Err(invalid(uri, "s3 URIs need a bucket: s3://bucket/key"));
            }
        }
        other => return Err(invalid(uri, format!("unsupported scheme {other:?}; use file:// or s3://"))),
    }
    if url.path_segments().into_iter().flatten().any(|s| s == "..") {
        return Err(invalid(uri, "path must not contain .."));
    }
    Ok(url)
}

impl Storage {
    pub fn new(root: &str, s3: S3Options) -> Result<Self, StorageError> {
        let mut root = parse_uri(root)?;
        if !root.path().ends_with('/') {
            let p = format!("{}/", root.path());
            root.set_path(&p);
        }
        if root.scheme() == "file" {
            let dir = root.to_file_path().map_err(|()| invalid(root.as_str(), "not a local path"))?;
            std::fs::create_dir_all(&dir)
                .map_err(|e| StorageError::Backend { uri: root.to_string(), message: format!("cannot create {}: {e}", dir.display()) })?;
        }
        Ok(Self { root, s3, stores: Mutex::new(HashMap::new()) })
    }

    pub fn root(&self) -> &str {
        self.root.as_str()
    }

    /// URI of `key` (a relative path like `inputs/abc.jpg`) under the root.
    pub fn uri_for(&self, key: &str) -> String {
        format!("{}{}", self.root, key.trim_start_matches('/'))
    }

    fn resolve(&self, uri: &str) -> Result<(Arc<dyn ObjectStore>, ObjectPath), StorageError> {
        let url = parse_uri(uri)?;
        let inside =
            url.scheme() == self.root.scheme() && url.host_str() == self.root.host_str() && url.path().starts_with(self.root.path());
        if !inside {
            return Err(StorageError::OutsideRoot { uri: uri.to_string(), root: self.root.to_string() });
        }
        let key = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
        let store = {
            let mut stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
            match stores.get(&key) {
                Some(s) => s.clone(),
                None => {
                    let s = self.build(&url)?;
                    stores.insert(key, s.clone());
                    s
                }
            }
        };
        let path = ObjectPath::from_url_path(url.path()).map_err(|e| invalid(uri, e.to_string()))?;
        Ok((store, path))
    }

    fn build(&self, url: &Url) -> Result<Arc<dyn ObjectStore>, StorageError> {
        match url.scheme() {
            "file" => Ok(Arc::new(LocalFileSystem::new())),
            "s3" => {
                let mut b = AmazonS3Builder::from_env().with_bucket_name(url.host_str().unwrap_or_default());
                if let Some(e) = &self.s3.endpoint {
                    b = b.with_endpoint(e);
                }
                if let Some(r) = &self.s3.region {
                    b = b.with_region(r);
                }
                if let Some((key, secret)) = &self.s3.credentials {
                    b = b.with_access_key_id(key).with_secret_access_key(secret);
                }
                // Path-style addressing (`endpoint/bucket/key`) is object_store's default,
                // which is what S3-compatible servers without bucket DNS names need.
                b = b.with_allow_http(self.s3.allow_http);
                let s = b.build().map_err(|e| StorageError::Backend { uri: url.to_string(), message: e.to_string() })?;
                Ok(Arc::new(s))
            }
            other => Err(invalid(url.as_str(), format!("unsupported scheme {other:?}"))),
        }
    }

    fn map_err(uri: &str, e: object_store::Error) -> StorageError {
        match e {
            object_store::Error::NotFound { .. } => StorageError::NotFound { uri: uri.to_string() },
            e @ (object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. }) => StorageError::Backend {
                uri: uri.to_string(),
                message: format!("access denied; check the S3 credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY): {e}"),
            },
            other => StorageError::Backend { uri: uri.to_string(), message: other.to_string() },
        }
    }

    /// Reads a whole object, refusing (before reading) one larger than `limit` bytes.
    pub async fn get(&self, uri: &str, limit: u64) -> Result<Bytes, StorageError> {
        let (store, path) = self.resolve(uri)?;
        let res = store.get(&path).await.map_err(|e| Self::map_err(uri, e))?;
        if res.meta.size > limit {
            return Err(StorageError::TooLarge { uri: uri.to_string(), size: res.meta.size, limit });
        }
        res.bytes().await.map_err(|e| Self::map_err(uri, e))
    }

    /// Reads the bytes `range` of an object (an HTTP range request on S3).
    pub async fn get_range(&self, uri: &str, range: std::ops::Range<u64>) -> Result<Bytes, StorageError> {
        let (store, path) = self.resolve(uri)?;
        store.get_range(&path, range).await.map_err(|e| Self::map_err(uri, e))
    }

    /// The objects under `prefix` (a URI under the root, read as a directory), as
    /// `(uri, size)` sorted by URI.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, StorageError> {
        let (store, path) = self.resolve(prefix)?;
        let base = format!("{}://{}", self.root.scheme(), self.root.host_str().unwrap_or(""));
        let mut out = Vec::new();
        let mut objects = store.list(Some(&path));
        while let Some(meta) = objects.next().await {
            let meta = meta.map_err(|e| Self::map_err(prefix, e))?;
            let mut url = Url::parse(&format!("{base}/")).map_err(|e| invalid(prefix, e.to_string()))?;
            url.set_path(&format!("/{}", meta.location));
            out.push((url.to_string(), meta.size));
        }
        out.sort();
        Ok(out)
    }

    /// Streams an object (downloads never buffer the whole result).
    pub async fn get_stream(
        &self,
        uri: &str,
    ) -> Result<(u64, futures::stream::BoxStream<'static, Result<Bytes, StorageError>>), StorageError> {
        let (store, path) = self.resolve(uri)?;
        let res = store.get(&path).await.map_err(|e| Self::map_err(uri, e))?;
        let size = res.meta.size;
        let owned = uri.to_string();
        let stream = res.into_stream().map(move |r| r.map_err(|e| Self::map_err(&owned, e))).boxed();
        Ok((size, stream))
    }

    /// Writes a whole object atomically (readers never see a partial result).
    pub async fn put(&self, uri: &str, data: Bytes) -> Result<(), StorageError> {
        let (store, path) = self.resolve(uri)?;
        store.put(&path, PutPayload::from_bytes(data)).await.map_err(|e| Self::map_err(uri, e))?;
        Ok(())
    }

    /// Writes an object from a stream of chunks without holding it whole (uploads).
    pub async fn put_stream<S, E>(&self, uri: &str, mut chunks: S) -> Result<u64, StorageError>
    where
        S: futures::Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let (store, path) = self.resolve(uri)?;
        let upload = store.put_multipart(&path).await.map_err(|e| Self::map_err(uri, e))?;
        let mut writer = object_store::WriteMultipart::new(upload);
        let mut total = 0u64;
        while let Some(chunk) = chunks.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(StorageError::Backend { uri: uri.to_string(), message: e.to_string() });
                }
            };
            total += chunk.len() as u64;
            writer.wait_for_capacity(4).await.map_err(|e| Self::map_err(uri, e))?;
            writer.write(&chunk);
        }
        writer.finish().await.map_err(|e| Self::map_err(uri, e))?;
        Ok(total)
    }

    pub async fn delete(&self, uri: &str) -> Result<(), StorageError> {
        let (store, path) = self.resolve(uri)?;
        match store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Self::map_err(uri, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_uris() {
        assert!(parse_uri("file:///tmp/a.jpg").is_ok());
        assert!(parse_uri("/tmp/a.jpg").is_ok());
        assert!(parse_uri("s3://bucket/a.jpg").is_ok());
        assert!(matches!(parse_uri("http://x/a.jpg"), Err(StorageError::InvalidUri { .. })));
        assert!(matches!(parse_uri("s3:///a.jpg"), Err(StorageError::InvalidUri { .. })));
        assert!(matches!(parse_uri("not a uri"), Err(StorageError::InvalidUri { .. })));
    }

    #[tokio::test]
    async fn round_trip_and_root_confinement() {
        let dir = tempfile::tempdir().unwrap();
        let root = format!("file://{}", dir.path().display());
        let s = Storage::new(&root, S3Options::default()).unwrap();
        let uri = s.uri_for("inputs/a b.bin");
        s.put(&uri, Bytes::from_static(b"hello")).await.unwrap();
        assert_eq!(s.get(&uri, 100).await.unwrap(), Bytes::from_static(b"hello"));
        assert!(matches!(s.get(&uri, 3).await, Err(StorageError::TooLarge { size: 5, .. })));
        assert!(matches!(s.get(&s.uri_for("missing"), 10).await, Err(StorageError::NotFound { .. })));
        assert!(matches!(s.get("file:///etc/hostname", 10).await, Err(StorageError::OutsideRoot { .. })));
        let escape = format!("{root}/../x");
        assert!(s.get(&escape, 10).await.is_err());
        let chunks = futures::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from_static(b"ab")), Ok(Bytes::from_static(b"cd"))]);
        let streamed = s.uri_for("big/x");
        assert_eq!(s.put_stream(&streamed, chunks).await.unwrap(), 4);
        assert_eq!(s.get(&streamed, 10).await.unwrap(), Bytes::from_static(b"abcd"));
        s.delete(&streamed).await.unwrap();
        s.delete(&streamed).await.unwrap();
    }
}
