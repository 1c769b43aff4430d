//! Actions (and reusable workflows) of upstream sources: other Git hosts an operator names in
//! `[actions] sources`, looked up, in order, for an `owner/repo` no repository of this
//! installation has. This module holds what does not know HTTP: the [`Upstream`] seam the server
//! implements, and the [`Snapshot`] of one fetched commit (its files, read with the same code as
//! a repository's: [`crate::source`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use gitstratum_git::pack;
use gitstratum_store::mem::MemStore;
use gitstratum_store::{NewObject, ObjectId, ObjectStore, RepoId};

use crate::source;

/// The most bytes of pack fetched for one action commit.
pub const MAX_PACK_BYTES: usize = 100 << 20;
/// The most bytes its objects may come to once inflated and resolved.
pub const MAX_OBJECT_BYTES: u64 = 512 << 20;

/// Where an upstream source has `owner/repo`, and the commit the reference named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The repository's URL at the source.
    pub url: String,
    pub commit: ObjectId,
}

/// Why an upstream lookup found nothing usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// No source has the repository.
    Repository,
    /// The first source that has it has no such reference.
    Reference(String),
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The upstream sources of actions, in order.
pub trait Upstream: Send + Sync {
    /// The sources' base URLs, in order (empty: none configured).
    fn sources(&self) -> &[String];

    /// The commit `git_ref` (a tag, a branch or a full commit id) names in `owner/repo` at the
    /// first source that has that repository. `Err(Ok(…))`: not found; `Err(Err(text))`: a source
    /// failed (unreachable, refusing, not speaking protocol version 2).
    fn resolve<'a>(
        &'a self,
        owner: &'a str,
        repo: &'a str,
        git_ref: &'a str,
    ) -> BoxFuture<'a, Result<Found, Result<Missing, String>>>;

    /// The files of a found commit (fetched once, then cached).
    fn snapshot<'a>(&'a self, found: &'a Found) -> BoxFuture<'a, Result<Arc<Snapshot>, String>>;
}

/// No upstream sources: every lookup finds nothing.
pub struct NoUpstream;

impl Upstream for NoUpstream {
    fn sources(&self) -> &[String] {
        &[]
    }

    fn resolve<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: &'a str,
    ) -> BoxFuture<'a, Result<Found, Result<Missing, String>>> {
        Box::pin(async { Err(Ok(Missing::Repository)) })
    }

    fn snapshot<'a>(&'a self, _: &'a Found) -> BoxFuture<'a, Result<Arc<Snapshot>, String>> {
        Box::pin(async { Err("no upstream sources are configured".to_owned()) })
    }
}

/// Whether `name` can be an owner or repository name at a source (what may go into its URL).
pub fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name != "."
        && name != ".."
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Whether `name` can be a tag or branch name (git's `check-ref-format` rules that matter for a
/// request line: no space, control character, `~^:?*[\`, `..`, `@{`, leading `-` or `/`).
pub fn is_ref_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with(['-', '/', '.'])
        && !name.ends_with(['/', '.'])
        && !name.ends_with(".lock")
        && !name.contains("..")
        && !name.contains("@{")
        && !name.contains("//")
        && !name.chars().any(|c| c.is_control() || c == ' ' || "~^:?*[\\".contains(c))
}

/// One commit of an upstream repository and every object its tree needs, held in memory.
pub struct Snapshot {
    objects: Arc<MemStore>,
    pub commit: ObjectId,
    /// The bytes its objects come to.
    pub bytes: u64,
}

impl Snapshot {
    /// The repository id its objects are kept under in [`Snapshot::objects`].
    pub const REPO: RepoId = RepoId(0);

    /// Reads a fetched pack: every object hashed and its deltas resolved, then checked to hold
    /// `commit` and everything its tree needs (a file of it that is missing fails here, not when
    /// a runner unpacks it).
    pub fn from_pack(bytes: &[u8], commit: ObjectId) -> Result<Snapshot, String> {
        let reader = pack::Reader::with_limit(bytes, MAX_OBJECT_BYTES).map_err(|e| format!("the pack: {e}"))?;
        let mut entries = Vec::with_capacity(reader.len().min(100_000) as usize);
        // What resolving will make: bases as they are, deltas as large as they say.
        let mut total = 0u64;
        for entry in reader {
            let entry = entry.map_err(|e| format!("the pack: {e}"))?;
            total += match entry.kind {
                pack::EntryKind::Base(_) => entry.data.len() as u64,
                _ => gitstratum_git::delta::sizes(&entry.data).map_err(|e| format!("the pack: {e}"))?.1,
            };
            if total > MAX_OBJECT_BYTES {
                return Err(format!("its objects come to more than {} MiB", MAX_OBJECT_BYTES >> 20));
            }
            entries.push(entry);
        }
        let resolved = pack::resolve_all(&entries, &|_| None).map_err(|e| format!("the pack: {e}"))?;
        drop(entries);
        let objects: Vec<NewObject> =
            resolved.into_iter().map(|r| NewObject { id: r.id, kind: r.kind, data: r.data }).collect();
        let store = Arc::new(MemStore::new());
        store.put(Self::REPO, &objects).map_err(|e| e.to_string())?;
        let snapshot = Snapshot { objects: store, commit, bytes: total };
        match source::peel_to_commit(snapshot.objects.as_ref(), Self::REPO, commit) {
            Ok(Some(c)) if c == commit => {}
            Ok(_) => return Err(format!("{commit} is not a commit")),
            Err(e) => return Err(format!("the pack does not hold the commit: {e}")),
        }
        source::each_file(snapshot.objects.as_ref(), Self::REPO, commit, &mut |_, _, _| Ok(()))
            .map_err(|e| format!("the pack does not hold all of {commit}: {e}"))?;
        Ok(snapshot)
    }

    /// The objects, for [`crate::source`]'s readers (under [`Snapshot::REPO`]).
    pub fn objects(&self) -> Arc<dyn ObjectStore> {
        self.objects.clone()
    }
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot").field("commit", &self.commit).field("bytes", &self.bytes).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_may_go_into_a_url_or_a_request() {
        for good in ["actions", "setup-node", "a.b_c", "X1"] {
            assert!(is_name(good), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "a%2f", "a?b", "ü"] {
            assert!(!is_name(bad), "{bad}");
        }
        for good in ["v4", "v4.1.0", "releases/v2", "main"] {
            assert!(is_ref_name(good), "{good}");
        }
        for bad in ["", "-x", "/x", "x/", "a..b", "a b", "a\nb", "x.lock", "a@{1}", "a^", "a:b", ".x", "a//b"] {
            assert!(!is_ref_name(bad), "{bad}");
        }
    }

    #[test]
    fn a_pack_without_the_commit_or_its_files_is_refused() {
        let blob = b"hello\n".to_vec();
        let blob_id = gitstratum_git::hash_object(gitstratum_git::ObjectKind::Blob, &blob).expect("hash");
        let mut tree = b"100644 a.txt\0".to_vec();
        tree.extend_from_slice(blob_id.as_bytes());
        let tree_id = gitstratum_git::hash_object(gitstratum_git::ObjectKind::Tree, &tree).expect("hash");
        let commit = format!("tree {tree_id}\nauthor A <a@x> 1 +0000\ncommitter A <a@x> 1 +0000\n\nm\n").into_bytes();
        let commit_id = gitstratum_git::hash_object(gitstratum_git::ObjectKind::Commit, &commit).expect("hash");
        let write = |objects: &[(gitstratum_git::ObjectKind, &[u8])]| {
            let mut w = pack::Writer::new(Vec::new(), objects.len() as u32).expect("writer");
            for (kind, data) in objects {
                w.write_object(*kind, data).expect("write");
            }
            w.finish().expect("finish").0
        };
        use gitstratum_git::ObjectKind::{Blob, Commit, Tree};
        let whole = write(&[(Commit, &commit), (Tree, &tree), (Blob, &blob)]);
        let snapshot = Snapshot::from_pack(&whole, commit_id).expect("complete");
        let text = source::text_file(snapshot.objects().as_ref(), Snapshot::REPO, commit_id, "a.txt").expect("read");
        assert_eq!(text, Some(Ok("hello\n".to_owned())));
        let without_blob = write(&[(Commit, &commit), (Tree, &tree)]);
        assert!(Snapshot::from_pack(&without_blob, commit_id).expect_err("refused").contains("does not hold all"));
        assert!(Snapshot::from_pack(&whole, blob_id).expect_err("refused").contains("not a commit"));
        let mut damaged = whole.clone();
        let at = damaged.len() - 25;
        damaged[at] ^= 0xff;
        assert!(Snapshot::from_pack(&damaged, commit_id).is_err());
        assert!(Snapshot::from_pack(b"not a pack", commit_id).is_err());
    }
}
