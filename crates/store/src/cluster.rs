//! Cluster mode's object store: packs in object storage, each repository's pack list in
//! PostgreSQL ([`PgRefStore`]), and on each frontend a local [`RocksStore`] that is only a cache
//! of the listed packs (rebuilt from them, never replicated, safe to delete).
//!
//! **Storing a pack** (a push, after the frontend has verified it): upload it under a key never
//! reused (`packs/<repo>/<checksum><random>`), list it in PostgreSQL, then place it in the local
//! store. The refs move afterwards, in their own transaction ([`PgRefStore`]), so a ref never
//! names an object of an unlisted pack. A crash after the upload leaves an unlisted object that
//! [`ClusterStore::sweep_unlisted`] removes after a grace period; a crash after the listing, a
//! listed pack whose objects nothing may reach yet (harmless; any frontend can read it).
//! A pack is listed even when its push then loses a race on the refs: this frontend has its
//! objects locally, and a later push may rely on them, so every frontend must be able to get them.
//!
//! **Reading**: the local store answers. When it misses an object (a ref moved on another
//! frontend), the repository's pack list is read again and every listed pack this frontend has
//! not taken yet is downloaded, indexed with the same code a push uses, and placed locally —
//! then the read is answered again. Concurrent misses on one repository share one hydration
//! (a lock per repository; a listing that began after a miss answers it). The packs taken are
//! remembered in `<state dir>/<repo>.packs`, so a restart does not download them again.
//!
//! **Compaction** ([`ClusterStore::compact`]): a repository's listed packs (one per push) are
//! rolled into one — every object the frontend holds of it, entries copied as stored — which is
//! verified, uploaded and listed in place of the packs it replaces, in one transaction that
//! succeeds only if all of them are still listed (two frontends compacting at once: one wins,
//! the other's pack is swept as unlisted). Replaced packs' objects stay in object storage for a
//! grace period, for frontends still downloading them. A frontend that had taken every pack a
//! compaction replaced takes its pack without downloading it (it holds all of its objects).
//!
//! Left for later: local maintenance (bitmaps, delta search) on a frontend's cache, and pruning
//! what no ref reaches.

use std::collections::{HashMap, HashSet};
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gitstratum_git::{packfile, parse};

use crate::blob::BlobStore;
use crate::pg::{NewPack, PackRecord, PgRefStore};
use crate::rocks::RocksStore;
use crate::{
    CommitInfo, Error, IncomingPack, IndexedEntry, NewObject, Object, ObjectId, ObjectInfo, ObjectKind, ObjectStore,
    RawEntry, RawKind, RepoId, RepoStats, Result,
};

/// Bytes of delta bases held while indexing a downloaded pack (more are rebuilt from the file).
const DELTA_BASE_BUDGET: usize = 64 << 20;
/// The kind under which packs are kept in the blob store.
const PACKS: &str = "packs";

/// What a frontend holds of one repository's pack list.
#[derive(Default)]
struct Taken {
    loaded: bool,
    ids: HashSet<i64>,
    /// When the last listing that brought everything in began.
    listed: Option<Instant>,
}

pub struct ClusterStore {
    local: Arc<RocksStore>,
    pg: Arc<PgRefStore>,
    packs: Arc<dyn BlobStore>,
    state_dir: PathBuf,
    repos: Mutex<HashMap<RepoId, Arc<Mutex<Taken>>>>,
    max_object_size: u64,
}

impl std::fmt::Debug for ClusterStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterStore").field("state_dir", &self.state_dir).finish_non_exhaustive()
    }
}

fn io_error(what: &'static str) -> impl Fn(std::io::Error) -> Error {
    move |e| Error::Backend(format!("{what}: {e}"))
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl ClusterStore {
    /// `local` is this frontend's cache, `packs` the shared object storage (its staging
    /// directory on the same filesystem as `local`'s incoming directory, so staging a pack is a
    /// hard link), `state_dir` where the packs taken are remembered.
    pub fn new(
        local: Arc<RocksStore>,
        pg: Arc<PgRefStore>,
        packs: Arc<dyn BlobStore>,
        state_dir: &Path,
    ) -> Result<ClusterStore> {
        std::fs::create_dir_all(state_dir).map_err(io_error("creating the cluster state directory"))?;
        Ok(ClusterStore {
            local,
            pg,
            packs,
            state_dir: state_dir.to_owned(),
            repos: Mutex::new(HashMap::new()),
            max_object_size: 1 << 30,
        })
    }

    /// The local cache.
    pub fn local(&self) -> &Arc<RocksStore> {
        &self.local
    }

    fn slot(&self, repo: RepoId) -> Arc<Mutex<Taken>> {
        self.repos.lock().unwrap_or_else(std::sync::PoisonError::into_inner).entry(repo).or_default().clone()
    }

    fn taken_file(&self, repo: RepoId) -> PathBuf {
        self.state_dir.join(format!("{}.packs", repo.0))
    }

    fn load(&self, repo: RepoId, taken: &mut Taken) -> Result<()> {
        if taken.loaded {
            return Ok(());
        }
        match std::fs::read_to_string(self.taken_file(repo)) {
            Ok(text) => taken.ids.extend(text.lines().filter_map(|l| l.trim().parse::<i64>().ok())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("reading the packs taken")(e)),
        }
        taken.loaded = true;
        Ok(())
    }

    /// Remembers that `id` is in the local store (losing this is harmless: it is taken again).
    fn remember(&self, repo: RepoId, taken: &mut Taken, id: i64) -> Result<()> {
        taken.ids.insert(id);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.taken_file(repo))
            .map_err(io_error("recording a pack taken"))?;
        writeln!(file, "{id}").map_err(io_error("recording a pack taken"))
    }

    /// Brings every listed pack of `repo` into the local store, unless a listing that began after
    /// `since` already did.
    fn catch_up(&self, repo: RepoId, since: Instant) -> Result<()> {
        let slot = self.slot(repo);
        let mut taken = slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if taken.listed.is_some_and(|t| t >= since) {
            return Ok(());
        }
        self.load(repo, &mut taken)?;
        let began = Instant::now();
        for record in self.pg.packs_after(repo, 0)? {
            if taken.ids.contains(&record.id) {
                continue;
            }
            // A compaction of packs all taken here holds nothing new.
            if !record.replaced.is_empty() && record.replaced.iter().all(|id| taken.ids.contains(id)) {
                self.remember(repo, &mut taken, record.id)?;
                continue;
            }
            let started = Instant::now();
            self.take(repo, &record)?;
            tracing::info!(repo = repo.0, pack = %record.checksum, bytes = record.size, ms = started.elapsed().as_millis() as u64, "cluster: took a pack from object storage");
            metrics::counter!("gitstratum_cluster_packs_fetched_total").increment(1);
            self.remember(repo, &mut taken, record.id)?;
        }
        taken.listed = Some(began);
        Ok(())
    }

    /// Downloads a listed pack, indexes it as a push is indexed, and places it locally.
    fn take(&self, repo: RepoId, record: &PackRecord) -> Result<()> {
        let source = self.packs.open(&record.key).map_err(io_error("reading a pack from object storage"))?;
        let file = tempfile::Builder::new()
            .prefix("take-")
            .suffix(".pack")
            .tempfile_in(self.local.incoming_dir())
            .map_err(io_error("spooling a pack"))?;
        let indexed = index_pack(source, &file, self.max_object_size)
            .map_err(|e| Error::Corrupt(format!("pack {} in object storage: {e}", record.key)))?;
        if indexed.checksum != record.checksum {
            return Err(Error::Corrupt(format!("pack {} is not the pack listed ({})", record.key, record.checksum)));
        }
        self.local.put_pack(
            repo,
            IncomingPack {
                path: file.path(),
                checksum: indexed.checksum,
                entries: &indexed.entries,
                commits: &indexed.commits,
            },
        )
    }

    /// Rolls the repository's listed packs into one, if it lists at least `min_packs` (2 or
    /// more) not shared with a fork (shared packs stay as they are: rewriting them would store
    /// their objects twice). Returns how many packs were replaced, or `None` when there was
    /// nothing to do or another frontend compacted them first.
    pub fn compact(&self, repo: RepoId, min_packs: usize) -> Result<Option<usize>> {
        let (shared, listed): (Vec<PackRecord>, Vec<PackRecord>) =
            self.pg.packs_after(repo, 0)?.into_iter().partition(|p| p.shared);
        if listed.len() < min_packs.max(2) {
            return Ok(None);
        }
        // Everything listed is here then; what is here is all listed (packs replaced earlier hold
        // nothing their replacement does not). What the shared packs hold here stays out (they
        // stay listed), except delta bases of what goes in: the new pack is whole on its own.
        // (A shared pack this frontend took without downloading, as a compaction's, has no
        // registration here: its objects are written again, which costs space, not correctness.)
        self.catch_up(repo, Instant::now())?;
        let shared: HashSet<ObjectId> = shared.iter().map(|p| p.checksum).collect();
        let ids = self.local.object_ids_outside(repo, &shared)?;
        let file = tempfile::Builder::new()
            .prefix("compact-")
            .suffix(".pack")
            .tempfile_in(self.local.incoming_dir())
            .map_err(io_error("writing a pack"))?;
        {
            let count = u32::try_from(ids.len()).map_err(|_| Error::Backend("too many objects for one pack".into()))?;
            let mut writer = gitstratum_git::pack::Writer::new(BufWriter::new(file.as_file()), count)
                .map_err(io_error("writing a pack"))?;
            for chunk in ids.chunks(1024) {
                for (id, raw) in chunk.iter().zip(self.local.raw_many(repo, chunk)?) {
                    let raw = raw.ok_or_else(|| Error::Corrupt(format!("object {id} vanished while compacting")))?;
                    match raw.kind {
                        RawKind::Whole(kind) => writer.write_raw_object(kind, raw.size, &raw.compressed),
                        RawKind::Delta { base } => writer.write_raw_ref_delta(&base, raw.size, &raw.compressed),
                    }
                    .map_err(io_error("writing a pack"))?;
                }
            }
            let (mut out, _) = writer.finish().map_err(io_error("writing a pack"))?;
            out.flush().map_err(io_error("writing a pack"))?;
        }
        // Checked as a downloaded pack is, before anyone is pointed at it.
        let reader = std::fs::File::open(file.path()).map_err(io_error("reading a pack"))?;
        let spool = tempfile::NamedTempFile::new_in(self.local.incoming_dir()).map_err(io_error("checking a pack"))?;
        let indexed = index_pack(reader, &spool, self.max_object_size)
            .map_err(|e| Error::Corrupt(format!("the compacted pack: {e}")))?;
        drop(spool);
        let key = pack_key(repo, &indexed.checksum)?;
        let staged = self.packs.staging_dir().join(format!("compact-{}", key.rsplit('/').next().unwrap_or("")));
        if std::fs::hard_link(file.path(), &staged).is_err() {
            std::fs::copy(file.path(), &staged).map_err(io_error("staging a pack for object storage"))?;
        }
        let size = std::fs::metadata(&staged).map_err(io_error("staging a pack"))?.len();
        if let Err(e) = self.packs.commit(&staged, &key) {
            let _ = std::fs::remove_file(&staged);
            return Err(io_error("storing a pack in object storage")(e));
        }
        let new = NewPack { key, checksum: indexed.checksum, size, objects: indexed.entries.len() as u64 };
        let replaced: Vec<i64> = listed.iter().map(|p| p.id).collect();
        let slot = self.slot(repo);
        let mut taken = slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.load(repo, &mut taken)?;
        match self.pg.replace_packs(repo, &replaced, &new, now_ms())? {
            // This frontend holds every object of the new pack already.
            Some(id) => {
                self.remember(repo, &mut taken, id)?;
                metrics::counter!("gitstratum_cluster_compactions_total").increment(1);
                Ok(Some(replaced.len()))
            }
            None => Ok(None), // the uploaded pack is unlisted: the sweep removes it
        }
    }

    /// A read of the local store, answered again after catching up if it missed anything.
    fn read<T>(&self, repo: RepoId, read: impl Fn(&RocksStore) -> Result<Vec<Option<T>>>) -> Result<Vec<Option<T>>> {
        let since = Instant::now();
        let first = read(&self.local)?;
        if first.iter().all(Option::is_some) {
            return Ok(first);
        }
        self.catch_up(repo, since)?;
        read(&self.local)
    }

    /// Compacts every repository listing at least `min_packs` packs; returns how many were
    /// compacted. (The caller makes it one frontend's work at a time: two at once are correct,
    /// one of them wasted.)
    pub fn compact_all(&self, min_packs: usize) -> Result<usize> {
        let mut done = 0;
        for repo in self.pg.repos_with_packs(min_packs.max(2))? {
            match self.compact(repo, min_packs) {
                Ok(Some(packs)) => {
                    tracing::info!(repo = repo.0, packs, "cluster: compacted a repository's packs into one");
                    done += 1;
                }
                Ok(None) => {}
                // One repository's trouble does not hold up the others.
                Err(e) => tracing::warn!(repo = repo.0, error = %e, "cluster: compacting a repository failed"),
            }
        }
        Ok(done)
    }

    /// Deletes stored packs no list names that are older than `grace` (a crash between upload and
    /// listing, a compaction that lost its race, or a deleted repository's leftovers), and those
    /// a compaction replaced more than `grace` ago; returns how many.
    pub fn sweep_unlisted(&self, grace: Duration) -> Result<usize> {
        let stored = self.packs.list(PACKS).map_err(io_error("listing packs in object storage"))?;
        let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        let listed = self.pg.all_pack_keys(now_ms().saturating_sub(grace_ms))?;
        let cutoff = SystemTime::now().checked_sub(grace).unwrap_or(UNIX_EPOCH);
        let mut swept = 0;
        for (key, written) in stored {
            if written < cutoff && !listed.contains(&key) {
                self.packs.delete(&key).map_err(io_error("deleting an unlisted pack"))?;
                swept += 1;
            }
        }
        Ok(swept)
    }
}

/// A pack read and indexed: what placing it in a local store takes.
struct Indexed {
    checksum: ObjectId,
    entries: Vec<IndexedEntry>,
    commits: Vec<(ObjectId, parse::Commit)>,
}

/// Copies a pack from `source` into `file` while indexing it, resolves every delta (all within
/// the pack) and parses its commits: the checks a push gets, short of connectivity.
fn index_pack(
    source: impl std::io::Read,
    file: &tempfile::NamedTempFile,
    max_object_size: u64,
) -> std::result::Result<Indexed, String> {
    let scan = packfile::scan(
        BufReader::with_capacity(256 << 10, source),
        BufWriter::with_capacity(256 << 10, file.as_file()),
        max_object_size,
    )
    .map_err(|e| e.to_string())?;
    let mut commits = Vec::new();
    let mut visit = |id: &ObjectId, kind: ObjectKind, data: &[u8]| -> std::result::Result<(), String> {
        if kind == ObjectKind::Commit {
            commits.push((*id, parse::commit(data).map_err(|e| format!("commit {id}: {e}"))?));
        }
        Ok(())
    };
    let none = |_: &ObjectId| None;
    let resolution =
        packfile::resolve(file.as_file(), &scan, &none, DELTA_BASE_BUDGET, &mut visit).map_err(|e| e.to_string())?;
    file.as_file().sync_all().map_err(|e| e.to_string())?;
    Ok(Indexed { checksum: scan.checksum, entries: resolution.entries, commits })
}

/// A fresh key for a pack of `repo`: never reused, whatever its content.
fn pack_key(repo: RepoId, checksum: &ObjectId) -> Result<String> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| Error::Backend(format!("no randomness: {e}")))?;
    let random: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{PACKS}/{}/{checksum}{random}", repo.0))
}

impl ObjectStore for ClusterStore {
    fn put(&self, repo: RepoId, objects: &[NewObject]) -> Result<()> {
        crate::rocks::put_as_pack(self, repo, objects)
    }

    fn incoming_dir(&self) -> &Path {
        self.local.incoming_dir()
    }

    fn put_pack(&self, repo: RepoId, pack: IncomingPack<'_>) -> Result<()> {
        // A copy for the upload (a hard link: the local store moves the file itself).
        let key = pack_key(repo, &pack.checksum)?;
        let staged = self.packs.staging_dir().join(format!("pack-{}-{}", repo.0, key.rsplit('/').next().unwrap_or("")));
        if std::fs::hard_link(pack.path, &staged).is_err() {
            std::fs::copy(pack.path, &staged).map_err(io_error("staging a pack for object storage"))?;
        }
        let size = std::fs::metadata(&staged).map_err(io_error("staging a pack for object storage"))?.len();
        if let Err(e) = self.packs.commit(&staged, &key) {
            let _ = std::fs::remove_file(&staged);
            return Err(io_error("storing a pack in object storage")(e));
        }
        crate::failpoint("cluster:after-upload");
        let slot = self.slot(repo);
        let mut taken = slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.load(repo, &mut taken)?;
        let id = self.pg.list_pack(repo, &key, pack.checksum, size, pack.entries.len() as u64, now_ms())?;
        crate::failpoint("cluster:after-listing");
        self.local.put_pack(repo, pack)?;
        self.remember(repo, &mut taken, id)
    }

    fn get_many(&self, repo: RepoId, ids: &[ObjectId]) -> Result<Vec<Option<Object>>> {
        self.read(repo, |local| local.get_many(repo, ids))
    }

    fn info_many(&self, repo: RepoId, ids: &[ObjectId]) -> Result<Vec<Option<ObjectInfo>>> {
        self.read(repo, |local| local.info_many(repo, ids))
    }

    fn commits(&self, repo: RepoId, ids: &[ObjectId]) -> Result<Vec<Option<CommitInfo>>> {
        self.read(repo, |local| local.commits(repo, ids))
    }

    fn stats(&self, repo: RepoId) -> Result<RepoStats> {
        self.local.stats(repo)
    }

    fn raw_many(&self, repo: RepoId, ids: &[ObjectId]) -> Result<Vec<Option<RawEntry>>> {
        self.read(repo, |local| local.raw_many(repo, ids))
    }

    /// Lists `from`'s packs for `to` under the same keys: nothing is copied in object storage.
    /// (Each frontend takes `to`'s packs into its cache on its first miss, as for any repository.)
    fn fork(&self, from: RepoId, to: RepoId) -> Result<()> {
        self.pg.fork_packs(from, to, now_ms()).map(|_| ())
    }

    fn delete_repo(&self, repo: RepoId) -> Result<()> {
        let slot = self.slot(repo);
        let mut taken = slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for key in self.pg.unlist_repo_packs(repo)? {
            // What fails here is left to the sweep of unlisted packs.
            if let Err(e) = self.packs.delete(&key) {
                tracing::warn!(error = %e, %key, "cluster: could not delete a deleted repository's pack");
            }
        }
        self.local.delete_repo(repo)?;
        *taken = Taken::default();
        match std::fs::remove_file(self.taken_file(repo)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error("forgetting the packs taken")(e)),
            _ => Ok(()),
        }
    }

    fn pin(&self, repo: RepoId) -> crate::Pin {
        self.local.pin(repo)
    }

    // `reachable` and `reachable_reuse` keep their defaults (no bitmaps): a frontend's cache has
    // none, so clones walk the commit graph through the reads above.
}
