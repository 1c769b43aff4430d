//! Git storage behind two traits, so the frontend never knows where bytes live:
//! [`ObjectStore`] (immutable, content-addressed objects, kept in packs as they arrived) and
//! [`RefStore`] (refs with atomic compare-and-swap batches, `HEAD`, and the ref-change event log).
//!
//! Implementations: [`mem::MemStore`] (tests) and [`rocks::RocksStore`] (packs on disk, RocksDB
//! for everything else; see its module). Both pass one conformance suite (`tests/conformance.rs`).
//!
//! Besides the objects themselves, storing objects records what serving needs without reading
//! them again: each object's kind and size (the object index: existence checks and `blob:limit`
//! filters never decompress an object) and, for commits, the commit graph (tree, parents,
//! committer time, generation number: walks and negotiation never parse a commit).
//!
//! Invariants every implementation keeps:
//! - objects are keyed by repository and id: a repository sees only its own objects;
//! - a ref update and its event are one atomic, durable write: after a crash there are either
//!   both or neither;
//! - a batch of ref updates applies entirely or not at all, and only if every ref still has the
//!   value the caller expected.
//!
//! What it must never do: parse protocols or decide policy (who may push, fast-forward rules);
//! those belong to the frontend.

#![forbid(unsafe_code)]

mod basecache;
pub mod blob;
pub mod bridge;
pub mod cluster;
mod graph;
pub mod mem;
pub mod pg;
pub mod rocks;
#[cfg(feature = "testing")]
pub mod testing;

pub use graph::{commit_records, commit_records_parsed};

/// Crash tests: with `GITSTRATUM_CRASH_AT=<name>` in its environment, the process dies at the
/// point of that name as a SIGKILL would leave it (no destructors, no cleanup). The points are
/// named where they are placed (`receive:*` in the frontend, `maintain:*` here).
pub fn failpoint(name: &str) {
    static POINT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if POINT.get_or_init(|| std::env::var("GITSTRATUM_CRASH_AT").ok()).as_deref() == Some(name) {
        eprintln!("GITSTRATUM_CRASH_AT={name}: dying here");
        std::process::abort();
    }
}

pub use gitstratum_git::{ObjectId, ObjectKind};

/// A repository's id (the platform's repository id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoId(pub i64);

impl RepoId {
    fn key_prefix(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("storage error: {0}")]
    Backend(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An object to store. The caller has verified that `id` is the hash of `kind` and `data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewObject {
    pub id: ObjectId,
    pub kind: ObjectKind,
    pub data: Vec<u8>,
}

/// A pack received and indexed ([`gitstratum_git::packfile`]), complete (a thin pack's bases
/// appended), in a file under [`ObjectStore::incoming_dir`], ready to become part of the store.
#[derive(Debug)]
pub struct IncomingPack<'a> {
    pub path: &'a std::path::Path,
    /// The pack's trailer.
    pub checksum: ObjectId,
    /// Every entry, in pack order.
    pub entries: &'a [IndexedEntry],
    /// The commits among them, parsed (for the commit graph).
    pub commits: &'a [(ObjectId, gitstratum_git::parse::Commit)],
}

pub use gitstratum_git::packfile::IndexedEntry;

/// What a stored entry holds, for copying it into another pack without inflating it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawKind {
    Whole(ObjectKind),
    Delta { base: ObjectId },
}

/// A stored pack entry: its zlib stream as stored, checked against the CRC-32 recorded when its
/// pack was indexed (a corrupt byte is an error, never served).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    pub kind: RawKind,
    /// Inflated size of `compressed`: the object's, or the delta's.
    pub size: u64,
    pub compressed: Vec<u8>,
}

/// A stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub kind: ObjectKind,
    pub data: Vec<u8>,
}

/// What the object index records about every stored object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectInfo {
    pub kind: ObjectKind,
    /// Uncompressed size in bytes.
    pub size: u64,
}

/// What the commit graph records about a stored commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    pub tree: ObjectId,
    pub parents: Vec<ObjectId>,
    /// Committer time, seconds since the epoch.
    pub time: i64,
    /// 1 for a root commit, else one more than the largest generation of its parents (a parent
    /// that is not stored counts as 0). A commit can reach another only if its generation is
    /// larger, which lets walks stop early.
    pub generation: u32,
}

/// Counters of a repository's stored objects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RepoStats {
    pub objects: u64,
    /// Uncompressed bytes.
    pub bytes: u64,
}

pub trait ObjectStore: Send + Sync + 'static {
    /// Stores objects (idempotent), with their object index entries, commit graph entries and the
    /// repository's counters. One call is one atomic, durable write.
    fn put(&self, repo: RepoId, objects: &[NewObject]) -> Result<()>;
    /// Where a pack being received is spooled (the same file system as the store's packs, so
    /// [`ObjectStore::put_pack`] can move it into place).
    fn incoming_dir(&self) -> &std::path::Path;
    /// Makes an indexed pack part of the repository: durable (the file synced and in place), then
    /// its objects indexed, with commit graph entries and counters, in one atomic, durable write.
    /// Objects already stored keep their place. The file is consumed (moved or removed).
    fn put_pack(&self, repo: RepoId, pack: IncomingPack<'_>) -> Result<()>;
    /// Looks up many objects in one batch; `None` for ids not stored.
    fn get_many(&self, repo: RepoId, ids: &[ObjectId]) -> Result<Vec<Option<Object>>>;
    /// Kind and size of many objects, without reading them; `None` for ids not stored.
    fn info_many(&self, repo: RepoId, ids: &[ObjectId]) -> Result<Vec<Option<ObjectInfo>>>;
    /// Which of `ids` are stored.
    fn has_many(&self, repo: RepoId, ids: &[ObjectId]) -> Result<Vec<bool>> {
        Ok(self.info_many(repo, ids)?.into_iter().map(|i| i.is_some()).collect())
    }
    /// Commit graph entries of many commits; `None` for ids that are not stored commits.
    fn commits(&self, repo: RepoId, ids: &[ObjectId]) -> Result<Vec<Option<CommitInfo>>>;
    /// The repository's counters.
    fn stats(&self, repo: RepoId) -> Result<RepoStats>;
    /// Stored entries as they are, for verbatim copying, in one batch; `None` for ids not stored.
    fn raw_many(&self, repo: RepoId, ids: &[ObjectId]) -> Result<Vec<Option<RawEntry>>>;
    /// Removes everything of a repository.
    fn delete_repo(&self, repo: RepoId) -> Result<()>;
    /// Gives `to`, a repository holding nothing yet, every object `from` holds (a fork), in one
    /// atomic, durable write, sharing the stored packs rather than copying them where the store
    /// can. The two stay independent: what either stores later, or deleting either, does not
    /// touch the other.
    fn fork(&self, from: RepoId, to: RepoId) -> Result<()>;
    /// Holds back the pruning of the repository's unreachable objects while the returned guard
    /// lives. A writer that relies on objects already stored (a push: thin bases, objects it
    /// did not send because the store has them) holds it from its first lookup until its refs
    /// moved, so no object it found can be pruned before a ref reaches it.
    fn pin(&self, _repo: RepoId) -> Pin {
        Pin::default()
    }
    /// Every object reachable from `tips` (without blobs unless `with_blobs`), from precomputed
    /// reachability (bitmaps) where the store has it; `None` when it has none for this
    /// repository (the caller walks).
    fn reachable(
        &self,
        _repo: RepoId,
        _tips: &[ObjectId],
        _with_blobs: bool,
    ) -> Result<Option<Vec<(ObjectId, ObjectKind)>>> {
        Ok(None)
    }
    /// [`ObjectStore::reachable`], with the objects of a pack the store can hand over to be
    /// copied as stored, in pack order, apart ([`Reachable::reuse`]).
    fn reachable_reuse(&self, repo: RepoId, tips: &[ObjectId], with_blobs: bool) -> Result<Option<Reachable>> {
        Ok(self.reachable(repo, tips, with_blobs)?.map(|objects| Reachable { objects, reuse: None }))
    }
}

/// Objects reachable from some tips, as precomputed reachability gives them.
pub struct Reachable {
    /// The objects `reuse` does not hold.
    pub objects: Vec<(ObjectId, ObjectKind)>,
    /// Entries of one pack, to copy into a response as they are stored.
    pub reuse: Option<PackReuse>,
}

/// Entries of one pack file, in pack order, each to be copied as stored (its CRC-32 checked as
/// it is read). A delta's base is another entry of the file.
pub struct PackReuse {
    pub file: std::sync::Arc<std::fs::File>,
    pub entries: Vec<ReuseEntry>,
}

/// One entry of a [`PackReuse`]: the object, and where its entry is (`offset..end`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReuseEntry {
    pub id: ObjectId,
    pub kind: ObjectKind,
    pub offset: u64,
    pub end: u64,
    pub crc32: u32,
}

/// See [`ObjectStore::pin`]; released when dropped.
#[derive(Default)]
pub struct Pin(Option<Box<dyn FnOnce() + Send + Sync>>);

impl Pin {
    pub fn new(release: impl FnOnce() + Send + Sync + 'static) -> Pin {
        Pin(Some(Box::new(release)))
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        if let Some(release) = self.0.take() {
            release();
        }
    }
}

impl std::fmt::Debug for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Pin(held)" } else { "Pin(none)" })
    }
}

/// One ref change: `old` is the value the ref must have now (`None`: must not exist), `new` the
/// value to give it (`None`: delete).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefUpdate {
    pub name: String,
    pub old: Option<ObjectId>,
    pub new: Option<ObjectId>,
}

/// A recorded ref change, as CI and webhooks read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefEvent {
    /// Position in the log; strictly increasing, never reused.
    pub seq: u64,
    pub repo: RepoId,
    pub name: String,
    pub old: Option<ObjectId>,
    pub new: Option<ObjectId>,
    pub pusher: String,
    /// Milliseconds since the epoch.
    pub time_ms: i64,
}

impl RefEvent {
    /// The event of applying `update` as `actor`, numbered `seq`.
    pub fn of(seq: u64, repo: RepoId, update: &RefUpdate, actor: &Actor) -> RefEvent {
        RefEvent {
            seq,
            repo,
            name: update.name.clone(),
            old: update.old,
            new: update.new,
            pusher: actor.name.clone(),
            time_ms: actor.time_ms,
        }
    }
}

/// Who made a change, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub name: String,
    pub time_ms: i64,
}

/// Why a batch was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ref {name} changed since it was read")]
pub struct Conflict {
    pub name: String,
}

/// Ref names as a client stores them (files in directories): `refs/heads/a` and
/// `refs/heads/a/b` cannot both exist.
#[derive(Debug, Default, Clone)]
pub struct RefNames(std::collections::BTreeSet<String>);

impl RefNames {
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> RefNames {
        RefNames(names.into_iter().map(str::to_owned).collect())
    }

    /// The ref `name` would clash with as file and directory: one that is a directory of it
    /// (`a` for `a/b`) or one inside it (`a/b` for `a`). A name that exists itself clashes with
    /// nothing.
    pub fn clash(&self, name: &str) -> Option<&str> {
        if self.0.contains(name) {
            return None;
        }
        if let Some(parent) = name.match_indices('/').map(|(i, _)| &name[..i]).find(|p| self.0.contains(*p)) {
            return self.0.get(parent).map(String::as_str);
        }
        let inside = format!("{name}/");
        self.0.range(inside.clone()..).next().filter(|n| n.starts_with(&inside)).map(String::as_str)
    }

    pub fn insert(&mut self, name: &str) {
        self.0.insert(name.to_owned());
    }

    pub fn remove(&mut self, name: &str) {
        self.0.remove(name);
    }

    /// The first update of a batch that would create a ref clashing with another, counting the
    /// batch's own deletions and creations.
    pub fn first_clash(mut self, updates: &[RefUpdate]) -> Option<&RefUpdate> {
        for u in updates.iter().filter(|u| u.new.is_none()) {
            self.remove(&u.name);
        }
        for u in updates.iter().filter(|u| u.new.is_some()) {
            if self.clash(&u.name).is_some() {
                return Some(u);
            }
            self.insert(&u.name);
        }
        None
    }
}

pub trait RefStore: Send + Sync + 'static {
    /// Every ref of a repository, sorted by name.
    fn list(&self, repo: RepoId) -> Result<Vec<(String, ObjectId)>>;
    fn get(&self, repo: RepoId, name: &str) -> Result<Option<ObjectId>>;
    /// Applies every update or none: each ref must still have its `old` value, and no ref may be
    /// created beside another as file and directory ([`RefNames`]; a conflict names it). Appends
    /// one event per update in the same atomic, durable write. Returns the events written.
    fn update(&self, repo: RepoId, updates: &[RefUpdate], actor: &Actor) -> Result<Result<Vec<RefEvent>, Conflict>>;
    /// Applies each update that can be applied, independently, in order (a non-atomic push):
    /// each ref must still have its `old` value (counting the updates before it) and may not
    /// clash as file and directory; the rest are skipped. One atomic, durable write for all that
    /// apply, with one event each. Returns, per update, its event or why it was skipped.
    fn update_each(
        &self,
        repo: RepoId,
        updates: &[RefUpdate],
        actor: &Actor,
    ) -> Result<Vec<Result<RefEvent, Conflict>>> {
        let mut out = Vec::with_capacity(updates.len());
        for u in updates {
            out.push(self.update(repo, std::slice::from_ref(u), actor)?.map(|mut events| events.remove(0)));
        }
        Ok(out)
    }
    /// The ref `HEAD` points to (`refs/heads/main`), if set.
    fn head(&self, repo: RepoId) -> Result<Option<String>>;
    fn set_head(&self, repo: RepoId, target: &str) -> Result<()>;
    /// Events after `after` (exclusive), oldest first, at most `limit`.
    fn events_after(&self, after: u64, limit: usize) -> Result<Vec<RefEvent>>;
    /// Removes a repository's refs and `HEAD` (its events stay: they are history).
    fn delete_repo(&self, repo: RepoId) -> Result<()>;
}
