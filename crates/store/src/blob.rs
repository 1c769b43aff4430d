//! Where artifact and cache archives rest: a [`BlobStore`], on the filesystem ([`FsBlobStore`],
//! under the data directory's `blobs/`) or in S3-compatible object storage ([`s3::S3BlobStore`],
//! cluster mode). Both pass one conformance suite (`tests/blobs.rs`).
//!
//! Uploads are staged in a local directory first (so a resent chunk or a restarted server loses
//! nothing), checked, then committed under a fresh key: durably, before any row names it. A crash
//! between the two leaves an unnamed blob, never a row naming a missing one.
//!
//! The trait is synchronous: callers run it on blocking threads (`spawn_blocking`), and a remote
//! store would do the same with its own client.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

pub mod s3;

pub trait BlobStore: Send + Sync + 'static {
    /// A local directory uploads are staged in.
    fn staging_dir(&self) -> &Path;
    /// Makes the staged file at `staged` the blob `key`, durably; the staged file is gone after.
    fn commit(&self, staged: &Path, key: &str) -> io::Result<()>;
    fn open(&self, key: &str) -> io::Result<Box<dyn Read + Send>>;
    /// Deletes a blob; deleting a missing one is fine.
    fn delete(&self, key: &str) -> io::Result<()>;
    /// The blobs of `kind` (`artifacts`, `caches`): their keys and when they were written.
    fn list(&self, kind: &str) -> io::Result<Vec<(String, std::time::SystemTime)>>;
}

/// Blobs as files: `ROOT/<key>`, keys being `kind/xx/xxxxxxxx…` of lowercase hex.
#[derive(Debug)]
pub struct FsBlobStore {
    root: PathBuf,
    staging: PathBuf,
}

impl FsBlobStore {
    pub fn open(root: PathBuf) -> io::Result<FsBlobStore> {
        let staging = root.join("staging");
        std::fs::create_dir_all(&staging)?;
        Ok(FsBlobStore { root, staging })
    }

    fn path(&self, key: &str) -> io::Result<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }
}

/// Keys are `kind/xx/xxxx…`: parts of lowercase letters and digits, nothing else (no `..`, no
/// absolute path, no empty part), whatever stores them.
fn check_key(key: &str) -> io::Result<()> {
    let fine = !key.is_empty()
        && key.split('/').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    if fine { Ok(()) } else { Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad blob key {key:?}"))) }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl BlobStore for FsBlobStore {
    fn staging_dir(&self) -> &Path {
        &self.staging
    }

    fn commit(&self, staged: &Path, key: &str) -> io::Result<()> {
        let target = self.path(key)?;
        let dir = target.parent().ok_or_else(|| io::Error::other("a blob key names no directory"))?;
        std::fs::create_dir_all(dir)?;
        std::fs::File::open(staged)?.sync_all()?;
        std::fs::rename(staged, &target)?;
        sync_dir(dir)?;
        sync_dir(&self.staging)
    }

    fn open(&self, key: &str) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(io::BufReader::with_capacity(256 * 1024, std::fs::File::open(self.path(key)?)?)))
    }

    fn delete(&self, key: &str) -> io::Result<()> {
        match std::fs::remove_file(self.path(key)?) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn list(&self, kind: &str) -> io::Result<Vec<(String, std::time::SystemTime)>> {
        let mut out = Vec::new();
        let fans = match std::fs::read_dir(self.path(kind)?) {
            Ok(fans) => fans,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for fan in fans {
            let fan = fan?;
            let Some(fan_name) = fan.file_name().to_str().map(str::to_owned) else { continue };
            for blob in std::fs::read_dir(fan.path())? {
                let blob = blob?;
                let Some(name) = blob.file_name().to_str().map(str::to_owned) else { continue };
                let written = blob.metadata()?.modified()?;
                out.push((format!("{kind}/{fan_name}/{name}"), written));
            }
        }
        Ok(out)
    }
}

/// A fresh key for a blob of `kind` (`artifacts`, `caches`): 128 random bits, fanned out by the
/// first byte.
pub fn new_key(kind: &str) -> io::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| io::Error::other(format!("no randomness: {e}")))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{kind}/{}/{}", &hex[..2], &hex[2..]))
}
