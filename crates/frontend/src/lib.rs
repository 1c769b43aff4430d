//! The Git service: what `git clone`, `git fetch` and `git push` talk to, independent of the
//! transport (HTTP today, SSH later) and of where objects live (any [`ObjectStore`] and
//! [`RefStore`]).
//!
//! Every method is synchronous and CPU- or storage-bound: callers run it on a blocking pool.
//! Output goes to a `Write` sink as it is produced, so a pack is streamed, never held whole.
//!
//! What it must never do: authenticate or authorize (the caller has decided the request may
//! proceed), or know about HTTP.

#![forbid(unsafe_code)]

mod receive;
mod upload;
mod walk;

use std::sync::Arc;

use gitstratum_git::pktline;
use gitstratum_store::{ObjectStore, RefStore, RepoId};

pub use receive::{PushOutcome, ReceiveOptions};
pub use upload::UploadOptions;

/// The branch `HEAD` names until a push says otherwise.
pub const DEFAULT_HEAD: &str = "refs/heads/main";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] gitstratum_store::Error),
    #[error("{0}")]
    Protocol(String),
    #[error("writing the response failed: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

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
}

impl GitService {
    pub fn new(objects: Arc<dyn ObjectStore>, refs: Arc<dyn RefStore>) -> Self {
        GitService { objects, refs }
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

    /// The response to `GET info/refs?service=…` for smart HTTP: the service line, then the
    /// protocol v2 capability advertisement (upload-pack, when the client asked for v2) or the
    /// v0 ref advertisement.
    pub fn info_refs(&self, repo: RepoId, service: Service, v2: bool) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        pktline::write_text(&mut out, format!("# service={}", service.name()));
        pktline::write_flush(&mut out);
        match (service, v2) {
            (Service::UploadPack, true) => upload::advertise_v2(&mut out),
            (Service::UploadPack, false) => {
                return Err(Error::Protocol(
                    "this server speaks protocol version 2 for fetches; upgrade git (2.26 or later) or set protocol.version=2".into(),
                ));
            }
            (Service::ReceivePack, _) => receive::advertise(self, repo, &mut out)?,
        }
        Ok(out)
    }

    /// Removes a repository's Git data.
    pub fn delete_repo(&self, repo: RepoId) -> Result<()> {
        self.refs.delete_repo(repo)?;
        self.objects.delete_repo(repo)?;
        Ok(())
    }
}
