//! Blobs in S3-compatible object storage (AWS S3, Garage, Ceph RGW, MinIO), through the
//! `object_store` crate: cluster mode keeps artifact and cache archives there, so every frontend
//! reads what any frontend wrote.
//!
//! The object store never decides anything: keys are fresh (128 random bits, [`super::new_key`])
//! and written once, deletes are idempotent, and no conditional request is ever relied on —
//! conditional puts are switched off in the client, so a call that would need one fails loudly
//! instead of being silently ignored (as Garage ignores `If-None-Match`).
//!
//! The endpoint may be a comma-separated list (every node of a Garage cluster, say): requests go
//! to the one that answered last, and one that cannot be reached or fails moves them on to the
//! next, so losing the node a frontend talks to fails nothing. With a list, each endpoint gets a
//! short connect timeout, a request timeout of [`ENDPOINT_TIMEOUT`] and no retry of its own (the
//! next endpoint is the retry), so a dead endpoint costs seconds, and one that went silent (cut
//! off the network: nothing answered, nothing refused) at most [`ENDPOINT_TIMEOUT`], not
//! object_store's default 30 s per try and three minutes of retries.
//!
//! [`BlobStore`] is synchronous; each call runs its requests as a task on the runtime handed to
//! [`S3BlobStore::open`] and waits ([`crate::bridge::wait_on`]), so it may be called from any
//! thread that is not one of that runtime's workers. Reads fetch the object in ranges of
//! [`READ_CHUNK`] bytes as they are read, so memory stays bounded whatever the blob's size.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig, WriteMultipart,
};
use tokio::io::AsyncReadExt;
use tokio::runtime::Handle;

use super::BlobStore;

/// How much of a blob one read request fetches.
pub const READ_CHUNK: u64 = 8 << 20;
/// Uploads up to this size go in one request; larger ones in parts of this size.
const PART: usize = 8 << 20;
/// With several endpoints, how long one request (an 8 MiB part or range at most) may take on an
/// endpoint before the next one is asked.
pub const ENDPOINT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the blobs are: an S3 endpoint, a bucket and credentials.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct S3Config {
    /// `http://127.0.0.1:3900`, or several separated by commas (tried in turn); empty for AWS
    /// itself.
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Every key goes under this prefix (`gitstratum/`), so one bucket can hold other things.
    pub prefix: String,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("prefix", &self.prefix)
            .finish()
    }
}

#[derive(Debug)]
pub struct S3BlobStore {
    endpoints: Endpoints,
    prefix: String,
    runtime: Handle,
    staging: PathBuf,
}

/// A client per endpoint, and which one answered last.
#[derive(Debug, Clone)]
struct Endpoints {
    stores: Arc<[Arc<dyn ObjectStore>]>,
    last_good: Arc<AtomicUsize>,
}

impl Endpoints {
    /// Runs `op` on the endpoint that answered last, then on the others in turn while it fails
    /// for a reason another endpoint might not have (anything but "not found" and "already
    /// exists"); the last error if every one failed.
    async fn call<T, F, Fut>(&self, op: F) -> Result<T, object_store::Error>
    where
        F: Fn(Arc<dyn ObjectStore>) -> Fut,
        Fut: Future<Output = Result<T, object_store::Error>>,
    {
        let first = self.last_good.load(Ordering::Relaxed);
        let n = self.stores.len();
        let mut tried = 0;
        loop {
            let at = (first + tried) % n;
            match op(self.stores[at].clone()).await {
                Ok(v) => {
                    self.last_good.store(at, Ordering::Relaxed);
                    if n > 1 {
                        // Which endpoint of the list answers now (0 is the first).
                        metrics::gauge!("gitstratum_object_storage_endpoint").set(at as f64);
                    }
                    return Ok(v);
                }
                Err(e @ (object_store::Error::NotFound { .. } | object_store::Error::AlreadyExists { .. })) => {
                    return Err(e);
                }
                Err(e) if tried + 1 < n => {
                    tracing::warn!(error = %e, endpoint = at, "object storage endpoint failed; trying the next");
                    metrics::counter!("gitstratum_object_storage_failovers_total").increment(1);
                    tried += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// [`Endpoints::call`] run on `runtime` from a thread outside it, waiting for the answer.
    fn call_on<T, F, Fut>(&self, runtime: &Handle, op: F) -> io::Result<Result<T, object_store::Error>>
    where
        T: Send + 'static,
        F: Fn(Arc<dyn ObjectStore>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, object_store::Error>> + Send,
    {
        let endpoints = self.clone();
        wait(runtime, async move { endpoints.call(op).await })
    }

    fn current(&self) -> Arc<dyn ObjectStore> {
        self.stores[self.last_good.load(Ordering::Relaxed) % self.stores.len()].clone()
    }
}

fn io_error(e: object_store::Error) -> io::Error {
    match e {
        object_store::Error::NotFound { path, .. } => {
            io::Error::new(io::ErrorKind::NotFound, format!("no blob at {path}"))
        }
        other => io::Error::other(format!("object storage: {other}")),
    }
}

impl S3BlobStore {
    /// A client for `config`; uploads are staged in `staging` (a local directory). Nothing is
    /// sent until the store is used.
    pub fn open(config: &S3Config, runtime: Handle, staging: PathBuf) -> io::Result<S3BlobStore> {
        // The client is reqwest's, whose TLS needs a process-wide crypto provider (the server's
        // `http::client_builder` installs the same one; installing twice is harmless).
        let _ = rustls::crypto::ring::default_provider().install_default();
        std::fs::create_dir_all(&staging)?;
        let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_owned());
        if config.bucket.is_empty() {
            return Err(invalid("object storage needs a bucket"));
        }
        let endpoints: Vec<&str> =
            if config.endpoint.is_empty() { vec![""] } else { config.endpoint.split(',').map(str::trim).collect() };
        if endpoints.iter().any(|e| e.is_empty()) && endpoints.len() > 1 {
            return Err(invalid("object storage: the endpoint list has an empty entry"));
        }
        let several = endpoints.len() > 1;
        let mut stores: Vec<Arc<dyn ObjectStore>> = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            let mut builder = AmazonS3Builder::new()
                .with_bucket_name(&config.bucket)
                .with_region(if config.region.is_empty() { "us-east-1" } else { &config.region })
                .with_access_key_id(&config.access_key_id)
                .with_secret_access_key(&config.secret_access_key)
                // Never rely on a conditional put: S3-compatible stores differ (Garage ignores
                // If-None-Match), so a put that would need one must fail rather than overwrite.
                .with_conditional_put(S3ConditionalPut::Disabled);
            if several {
                // Another endpoint is the retry: give up on this one soon. (Before the endpoint's
                // settings: the client options replace the ones `with_allow_http` sets.)
                builder = builder
                    .with_client_options(
                        ClientOptions::new()
                            .with_connect_timeout(Duration::from_secs(2))
                            .with_timeout(ENDPOINT_TIMEOUT),
                    )
                    .with_retry(RetryConfig {
                        backoff: BackoffConfig::default(),
                        max_retries: 0,
                        retry_timeout: ENDPOINT_TIMEOUT,
                    });
            }
            if !endpoint.is_empty() {
                builder = builder
                    .with_endpoint(endpoint)
                    .with_allow_http(endpoint.starts_with("http://"))
                    .with_virtual_hosted_style_request(false);
            }
            stores.push(Arc::new(builder.build().map_err(|e| invalid(&format!("object storage: {e}")))?));
        }
        let prefix = config.prefix.trim_matches('/').to_owned();
        let endpoints = Endpoints { stores: stores.into(), last_good: Arc::new(AtomicUsize::new(0)) };
        Ok(S3BlobStore { endpoints, prefix, runtime, staging })
    }

    /// The client of the endpoint in use (tests use it to check what the client refuses).
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.endpoints.current()
    }

    fn location(&self, key: &str) -> io::Result<ObjectPath> {
        super::check_key(key)?;
        Ok(if self.prefix.is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{}/{key}", self.prefix))
        })
    }
}

impl BlobStore for S3BlobStore {
    fn staging_dir(&self) -> &Path {
        &self.staging
    }

    fn commit(&self, staged: &Path, key: &str) -> io::Result<()> {
        let location = self.location(key)?;
        let staged_path = staged.to_owned();
        // A whole upload is tried again on the next endpoint (the key is new, the bytes the same).
        self.endpoints
            .call_on(&self.runtime, move |store| upload(store, location.clone(), staged_path.clone()))?
            .map_err(io_error)?;
        std::fs::remove_file(staged)
    }

    fn open(&self, key: &str) -> io::Result<Box<dyn Read + Send>> {
        let location = self.location(key)?;
        let at = location.clone();
        let size = self
            .endpoints
            .call_on(&self.runtime, move |store| {
                let at = at.clone();
                async move { store.head(&at).await }
            })?
            .map_err(io_error)?
            .size;
        Ok(Box::new(RangeReader {
            endpoints: self.endpoints.clone(),
            runtime: self.runtime.clone(),
            location,
            size,
            next: 0,
            chunk: bytes::Bytes::new(),
        }))
    }

    fn delete(&self, key: &str) -> io::Result<()> {
        let location = self.location(key)?;
        let deleted = self.endpoints.call_on(&self.runtime, move |store| {
            let at = location.clone();
            async move { store.delete(&at).await }
        })?;
        match deleted {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(io_error(e)),
        }
    }

    fn list(&self, kind: &str) -> io::Result<Vec<(String, std::time::SystemTime)>> {
        use futures_util::TryStreamExt;
        let prefix = self.location(kind)?;
        let strip = if self.prefix.is_empty() { String::new() } else { format!("{}/", self.prefix) };
        let listed: Vec<object_store::ObjectMeta> = self
            .endpoints
            .call_on(&self.runtime, move |store| {
                let prefix = prefix.clone();
                async move { store.list(Some(&prefix)).try_collect().await }
            })?
            .map_err(io_error)?;
        Ok(listed
            .into_iter()
            .filter_map(|meta| {
                let key = meta.location.as_ref().strip_prefix(&strip)?.to_owned();
                let millis = u64::try_from(meta.last_modified.timestamp_millis()).unwrap_or(0);
                Some((key, std::time::UNIX_EPOCH + std::time::Duration::from_millis(millis)))
            })
            .collect())
    }
}

/// Uploads the file at `staged` to `location` (in parts when it is large; a failed multipart
/// upload is aborted, so the store keeps no parts of it).
async fn upload(store: Arc<dyn ObjectStore>, location: ObjectPath, staged: PathBuf) -> Result<(), object_store::Error> {
    let local = |e: io::Error| object_store::Error::Generic { store: "local staging", source: Box::new(e) };
    let mut file = tokio::fs::File::open(&staged).await.map_err(local)?;
    let size = file.metadata().await.map_err(local)?.len();
    if size <= PART as u64 {
        let mut data = Vec::with_capacity(size as usize);
        file.read_to_end(&mut data).await.map_err(local)?;
        store.put(&location, PutPayload::from(data)).await?;
        return Ok(());
    }
    let upload = store.put_multipart(&location).await?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
    let mut buf = vec![0u8; 1 << 20];
    let sent = async {
        loop {
            let n = file.read(&mut buf).await.map_err(local)?;
            if n == 0 {
                return Ok(());
            }
            writer.wait_for_capacity(2).await?;
            writer.write(&buf[..n]);
        }
    }
    .await;
    match sent {
        Err(e) => {
            let _ = writer.abort().await;
            Err(e)
        }
        Ok(()) => writer.finish().await.map(drop),
    }
}

/// Runs `work` on `runtime` from any thread ([`crate::bridge::wait_on`]).
fn wait<T: Send + 'static>(runtime: &Handle, work: impl Future<Output = T> + Send + 'static) -> io::Result<T> {
    crate::bridge::wait_on(runtime, work).ok_or_else(|| io::Error::other("the object storage client's runtime stopped"))
}

/// A blob read in ranges as it is read.
struct RangeReader {
    endpoints: Endpoints,
    runtime: Handle,
    location: ObjectPath,
    size: u64,
    /// The offset of the first byte not fetched yet.
    next: u64,
    /// Fetched, not yet read.
    chunk: bytes::Bytes,
}

impl Read for RangeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.chunk.is_empty() {
            if self.next >= self.size || buf.is_empty() {
                return Ok(0);
            }
            let end = (self.next + READ_CHUNK).min(self.size);
            let range = self.next..end;
            let at = self.location.clone();
            let chunk = self
                .endpoints
                .call_on(&self.runtime, move |store| {
                    let (at, range) = (at.clone(), range.clone());
                    async move { store.get_range(&at, range).await }
                })?
                .map_err(io_error)?;
            if chunk.is_empty() {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the blob ended early"));
            }
            self.next += chunk.len() as u64;
            self.chunk = chunk;
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        let _ = self.chunk.split_to(n);
        Ok(n)
    }
}
