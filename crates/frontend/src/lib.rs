//! The Git service: what `git clone`, `git fetch` and `git push` talk to, independent of the
//! transport (smart HTTP's requests, or a conversation over SSH) and of where objects live (any [`ObjectStore`] and
//! [`RefStore`]).
//!
//! Every method is synchronous and CPU- or storage-bound: callers run it on a blocking pool.
//! Output goes to a `Write` sink as it is produced, so a pack is streamed, never held whole.
//!
//! What it must never do: authenticate or authorize (the caller has decided the request may
//! proceed), or know about HTTP.

#![forbid(unsafe_code)]

pub mod pack_cache;
mod receive;
mod upload;
mod walk;

use std::sync::Arc;

use gitstratum_git::pktline;
use gitstratum_store::{ObjectStore, RefStore, RepoId};

pub use receive::{HIDDEN_REFS, PushOutcome, ReceiveOptions, RefGuard, UpdateKind};
pub use upload::{PackStats, UploadOptions};

/// Crash points of a push ([`gitstratum_store::failpoint`]): `receive:after-spool` (the pack is
/// on disk, not indexed), `receive:before-store` (indexed, not stored), `receive:before-refs`
/// (stored and durable, refs not moved), `receive:after-refs` (refs moved, the client not told).
/// Cluster mode's store adds `cluster:after-upload` and `cluster:after-listing`.
pub(crate) use gitstratum_store::failpoint;

/// The branch `HEAD` names until a push says otherwise.
pub const DEFAULT_HEAD: &str = "refs/heads/main";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] gitstratum_store::Error),
    /// The request cannot be served as asked (the client gets the message).
    #[error("{0}")]
    Protocol(String),
    #[error("writing the response failed: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The protocol version a client asked for (the `Git-Protocol` header or environment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    V0,
    V1,
    V2,
}

impl Protocol {
    pub fn label(self) -> &'static str {
        match self {
            Protocol::V0 => "v0",
            Protocol::V1 => "v1",
            Protocol::V2 => "v2",
        }
    }

    /// Reads a `Git-Protocol` value such as `version=2` (colon-separated parameters; the highest
    /// version named wins, absent means version 0).
    pub fn from_header(value: Option<&str>) -> Protocol {
        let mut protocol = Protocol::V0;
        for part in value.unwrap_or_default().split(':') {
            match part.trim() {
                "version=2" => protocol = Protocol::V2,
                "version=1" if protocol == Protocol::V0 => protocol = Protocol::V1,
                _ => {}
            }
        }
        protocol
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    UploadPack,
    ReceivePack,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::UploadPack => "git-upload-pack",
            Service::ReceivePack => "git-receive-pack",
        }
    }
}

/// The Git service over a pair of stores.
#[derive(Clone)]
pub struct GitService {
    objects: Arc<dyn ObjectStore>,
    refs: Arc<dyn RefStore>,
    pack_cache: Option<Arc<pack_cache::PackCache>>,
}

impl GitService {
    pub fn new(objects: Arc<dyn ObjectStore>, refs: Arc<dyn RefStore>) -> Self {
        GitService { objects, refs, pack_cache: None }
    }

    /// Serves fetches (every protocol version) through a pack cache.
    pub fn with_pack_cache(mut self, cache: Arc<pack_cache::PackCache>) -> Self {
        self.pack_cache = Some(cache);
        self
    }

    pub fn objects(&self) -> &Arc<dyn ObjectStore> {
        &self.objects
    }

    pub fn refs(&self) -> &Arc<dyn RefStore> {
        &self.refs
    }

    /// The `HEAD` target of a repository.
    pub fn head(&self, repo: RepoId) -> Result<String> {
        Ok(self.refs.head(repo)?.unwrap_or_else(|| DEFAULT_HEAD.to_owned()))
    }

    /// The response to `GET info/refs?service=…` for smart HTTP: the service line, then
    /// [`GitService::advertisement`].
    pub fn info_refs(&self, repo: RepoId, service: Service, protocol: Protocol) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        pktline::write_text(&mut out, format!("# service={}", service.name()));
        pktline::write_flush(&mut out);
        out.extend_from_slice(&self.advertisement(repo, service, protocol)?);
        Ok(out)
    }

    /// What a client reads first from a service: the protocol v2 capability advertisement
    /// (upload-pack, when the client asked for v2) or the ref advertisement (after a `version 1`
    /// line for v1). Over SSH it is all the server says before the client speaks.
    pub fn advertisement(&self, repo: RepoId, service: Service, protocol: Protocol) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        if protocol == Protocol::V1 {
            pktline::write_text(&mut out, "version 1");
        }
        match (service, protocol) {
            (Service::UploadPack, Protocol::V2) => upload::advertise_v2(&mut out),
            (Service::UploadPack, _) => self.advertise_v0(repo, &mut out)?,
            (Service::ReceivePack, _) => receive::advertise(self, repo, &mut out)?,
        }
        Ok(out)
    }

    /// Handles an upload-pack request in the protocol the client asked for. Returns what was
    /// sent when the response carried a pack.
    pub fn upload_pack(
        &self,
        repo: RepoId,
        protocol: Protocol,
        body: &[u8],
        options: &UploadOptions,
        out: &mut dyn std::io::Write,
    ) -> Result<Option<PackStats>> {
        match protocol {
            Protocol::V2 => self.upload_pack_v2(repo, body, options, out),
            Protocol::V0 | Protocol::V1 => self.upload_pack_v0(repo, body, options, out),
        }
    }

    /// Removes a repository's Git data.
    pub fn delete_repo(&self, repo: RepoId) -> Result<()> {
        self.refs.delete_repo(repo)?;
        self.objects.delete_repo(repo)?;
        Ok(())
    }
}
