//! RocksDB storage, the single-node engine (seed 001's column families), with objects in packs.
//!
//! Objects live in pack files, as pushes sent them (thin packs completed):
//! `packs/<repo id>/pack-<checksum>.pack` beside the database files, each with its `.idx`
//! (version 2, as `git index-pack` writes it). RocksDB holds everything else:
//!
//! | column family | key | value |
//! | --- | --- | --- |
//! | `packs` | pack number (u64) | repo ‖ pack checksum [‖ 1 ‖ made (ms, i64): a cruft pack] [‖ 2: shared] |
//! | `object_index` | repo ‖ oid | kind ‖ size (u64) ‖ pack (u64) ‖ offset (u64) ‖ end (u64) ‖ CRC-32 (u32) [‖ delta base oid] |
//! | `commit_graph` | repo ‖ oid | tree ‖ generation (u32) ‖ time (i64) ‖ parents |
//! | `repo_stats` | repo | objects (u64) ‖ bytes (u64) |
//! | `refs` | repo ‖ ref name | oid |
//! | `repo_config` | repo ‖ `HEAD` | symbolic ref target |
//! | | repo ‖ `\0inherited` | packs not in the object index: a fork's, shared with its parent ([`shared`]) |
//! | | repo ‖ `\0reach`, `\0maintained` | the main pack's bitmaps; the last full repack ([`maintain`]) |
//! | `events` | seq (u64) | the ref-change event |
//! | `objects`, `deltas` | repo ‖ oid | formats 1 and 2 kept objects here; emptied on upgrade |
//! | `pack_cache` | unused (the pack cache lives in files of its own) | |
//!
//! Integers are big-endian. Durability: a pack is synced and renamed into place (and its
//! directory synced) before one synced batch registers it and indexes its objects; ref batches
//! are synced too. So once `update` returns, the refs, their events and every object they reach
//! survive a crash or power loss; a crash before the registering batch leaves an unregistered
//! file, removed when the store is next opened (as are spooled pushes in `packs/incoming/`).
//!
//! Data written in formats 1 and 2 (every object its own zlib value) is converted on open: one
//! pack per repository, the stored zlib streams copied into it as they are.
//!
//! Maintenance ([`maintain`]) rewrites packs: a new pack is durable and registered, and the
//! objects re-pointed to it, in one batch before the old files go. A reader whose location went
//! stale in between (its pack is no longer registered) reads the location again.

mod maintain;
mod reach;
mod shared;
mod tip;

pub use maintain::{Maintenance, MaintenanceReport};

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use flate2::read::ZlibDecoder;
use gitstratum_git::pack::ReadError;
use gitstratum_git::packfile::{self, Header, IndexedEntry};
use gitstratum_git::{ObjectId, ObjectKind, parse};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType, Direction, IteratorMode,
    Options, WriteBatch, WriteOptions,
};

use crate::basecache::Lru;
use crate::{
    Actor, CommitInfo, Conflict, Error, IncomingPack, NewObject, Object, ObjectInfo, ObjectStore, RawEntry, RawKind,
    RefEvent, RefStore, RefUpdate, RepoId, RepoStats, Result, commit_records_parsed,
};

const OBJECTS: &str = "objects";
const DELTAS: &str = "deltas";
const PACKS: &str = "packs";
const OBJECT_INDEX: &str = "object_index";
const COMMIT_GRAPH: &str = "commit_graph";
const REPO_STATS: &str = "repo_stats";
const PACK_CACHE: &str = "pack_cache";
/// One block cache shared by every column family.
const BLOCK_CACHE_BYTES: usize = 64 << 20;
/// All memtables together (RocksDB flushes the largest when they reach it).
const MEMTABLE_BUDGET: usize = 64 << 20;
/// Objects resolved from delta chains, kept for the next read.
const BASE_CACHE_BYTES: usize = 64 << 20;
/// Pack files kept open at once.
const MAX_OPEN_PACKS: usize = 512;
/// Longest delta chain followed when reading (packs we index never exceed what C git writes).
const MAX_CHAIN: usize = 10_000;
/// How many REF delta bases a read follows through the object index, one inside the other (a
/// bound on recursion). Installing a pack points an object stored as a delta at a whole copy the
/// pack holds (a thin pack's appended base), so such chains stay a link or two long; the bound
/// is generous for data written before that.
const MAX_REF_NESTING: usize = 64;
const REFS: &str = "refs";
const REPO_CONFIG: &str = "repo_config";
const EVENTS: &str = "events";

/// Key of the storage format version, in the default column family.
const FORMAT_KEY: &[u8] = b"format";
/// Format 2 added `object_index`, `commit_graph` and `repo_stats`; format 3 keeps objects in
/// packs; format 4 shares packs with forks ([`shared`]: registry flags an older build cannot read).
const FORMAT: u32 = 4;

pub struct RocksStore {
    db: DB,
    /// Serializes compare-and-swap of refs (RocksDB writes are atomic, the read-check-write is not).
    ref_lock: Mutex<()>,
    /// Serializes pack registration, whose counters are read, added to and written back.
    put_lock: Mutex<()>,
    last_seq: AtomicU64,
    packs_dir: PathBuf,
    incoming: PathBuf,
    next_pack: AtomicU64,
    open_packs: RwLock<HashMap<u64, Arc<File>>>,
    bases: Lru,
    /// Pushes in flight per repository ([`ObjectStore::pin`]): while any is, nothing is pruned.
    pins: Arc<Mutex<HashMap<RepoId, usize>>>,
    /// One maintenance run at a time.
    maintenance: Mutex<()>,
    /// Reachability bitmaps loaded, by pack number.
    reach_cache: Mutex<HashMap<u64, Arc<reach::Reach>>>,
    /// Indexes of inherited packs loaded ([`shared`]).
    tables: Mutex<shared::Tables>,
}

fn backend(e: rocksdb::Error) -> Error {
    Error::Backend(e.to_string())
}

fn io_error(what: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Backend(format!("{what}: {e}"))
}

fn kind_code(kind: ObjectKind) -> u8 {
    kind.pack_type()
}

fn kind_from_code(code: u8) -> Option<ObjectKind> {
    match code {
        1 => Some(ObjectKind::Commit),
        2 => Some(ObjectKind::Tree),
        3 => Some(ObjectKind::Blob),
        4 => Some(ObjectKind::Tag),
        _ => None,
    }
}

fn key(repo: RepoId, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + rest.len());
    k.extend_from_slice(&repo.key_prefix());
    k.extend_from_slice(rest);
    k
}

fn oid_from(bytes: &[u8]) -> Result<ObjectId> {
    if bytes.len() != 20 {
        return Err(Error::Corrupt(format!("object id of {} bytes", bytes.len())));
    }
    Ok(ObjectId::from_bytes_or_panic(bytes))
}

/// Where an object is: its object index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Location {
    kind: ObjectKind,
    size: u64,
    pack: u64,
    offset: u64,
    end: u64,
    crc32: u32,
    base: Option<ObjectId>,
}

impl Location {
    /// Where an indexed entry of pack `pack` is.
    fn of(e: &IndexedEntry, pack: u64) -> Location {
        Location { kind: e.kind, size: e.size, pack, offset: e.offset, end: e.end, crc32: e.crc32, base: e.base }
    }
}

fn encode_location(l: &Location) -> Vec<u8> {
    let mut v = Vec::with_capacity(57);
    v.push(kind_code(l.kind));
    for n in [l.size, l.pack, l.offset, l.end] {
        v.extend_from_slice(&n.to_be_bytes());
    }
    v.extend_from_slice(&l.crc32.to_be_bytes());
    if let Some(base) = l.base {
        v.extend_from_slice(base.as_bytes());
    }
    v
}

fn decode_location(id: &ObjectId, v: &[u8]) -> Result<Location> {
    let corrupt = || Error::Corrupt(format!("object index entry of {id}"));
    if v.len() != 37 && v.len() != 57 {
        return Err(corrupt());
    }
    let n = |at: usize| u64::from_be_bytes(v[at..at + 8].try_into().expect("8 bytes"));
    Ok(Location {
        kind: kind_from_code(v[0]).ok_or_else(corrupt)?,
        size: n(1),
        pack: n(9),
        offset: n(17),
        end: n(25),
        crc32: u32::from_be_bytes(v[33..37].try_into().expect("4 bytes")),
        base: if v.len() == 57 { Some(oid_from(&v[37..])?) } else { None },
    })
}

fn pack_name(checksum: &ObjectId) -> String {
    format!("pack-{checksum}")
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error("syncing a pack directory"))
}

impl RocksStore {
    /// Opens (creating when missing) the database in `path`; packs live in `path/packs`.
    pub fn open(path: &Path) -> Result<RocksStore> {
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_compression_type(DBCompressionType::Lz4);
        // Memory is bounded for the whole database, not per column family: RocksDB's defaults give
        // every column family its own 32 MiB block cache and 64 MiB memtables, which for nine of
        // them let a server that had served a few clones grow past 700 MB.
        db_opts.set_db_write_buffer_size(MEMTABLE_BUDGET);
        let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let cf = |name: &str, compression: DBCompressionType| {
            let mut o = Options::default();
            o.set_compression_type(compression);
            o.set_write_buffer_size(MEMTABLE_BUDGET / 4);
            let mut table = BlockBasedOptions::default();
            table.set_block_cache(&cache);
            table.set_cache_index_and_filter_blocks(true);
            o.set_block_based_table_factory(&table);
            ColumnFamilyDescriptor::new(name, o)
        };
        let cfs = vec![
            // Object values of formats 1 and 2 are zlib-compressed already.
            cf(OBJECTS, DBCompressionType::None),
            cf(DELTAS, DBCompressionType::Lz4),
            cf(PACKS, DBCompressionType::None),
            cf(OBJECT_INDEX, DBCompressionType::Lz4),
            cf(COMMIT_GRAPH, DBCompressionType::Lz4),
            cf(REPO_STATS, DBCompressionType::None),
            cf(PACK_CACHE, DBCompressionType::None),
            cf(REFS, DBCompressionType::Lz4),
            cf(REPO_CONFIG, DBCompressionType::Lz4),
            cf(EVENTS, DBCompressionType::Lz4),
        ];
        let db = DB::open_cf_descriptors(&db_opts, path, cfs).map_err(backend)?;
        let last_key = |name: &str| -> Result<Option<u64>> {
            let handle = db.cf_handle(name).ok_or_else(|| Error::Corrupt(format!("missing {name} column family")))?;
            match db.iterator_cf(handle, IteratorMode::End).next() {
                Some(Ok((k, _))) => Ok(Some(u64::from_be_bytes(
                    k.as_ref().try_into().map_err(|_| Error::Corrupt(format!("{name} key")))?,
                ))),
                Some(Err(e)) => Err(backend(e)),
                None => Ok(None),
            }
        };
        let last_seq = last_key(EVENTS)?.unwrap_or(0);
        let next_pack = last_key(PACKS)?.map_or(1, |n| n + 1);
        let packs_dir = path.join("packs");
        let incoming = packs_dir.join("incoming");
        fs::create_dir_all(&incoming).map_err(io_error("creating the packs directory"))?;
        let store = RocksStore {
            db,
            ref_lock: Mutex::new(()),
            put_lock: Mutex::new(()),
            last_seq: AtomicU64::new(last_seq),
            packs_dir,
            incoming,
            next_pack: AtomicU64::new(next_pack),
            open_packs: RwLock::default(),
            bases: Lru::new(BASE_CACHE_BYTES),
            pins: Arc::default(),
            maintenance: Mutex::new(()),
            reach_cache: Mutex::default(),
            tables: Mutex::default(),
        };
        store.remove_leftovers()?;
        store.upgrade()?;
        Ok(store)
    }

    /// Removes what a crash left behind: spooled pushes, and pack files never registered.
    fn remove_leftovers(&self) -> Result<()> {
        for entry in fs::read_dir(&self.incoming).map_err(io_error("listing incoming packs"))?.flatten() {
            let _ = fs::remove_file(entry.path());
        }
        let registered: HashSet<PathBuf> = self.registered_packs()?.into_iter().map(|(_, path)| path).collect();
        for dir in fs::read_dir(&self.packs_dir).map_err(io_error("listing packs"))?.flatten() {
            if dir.path() == self.incoming || !dir.path().is_dir() {
                continue;
            }
            for file in fs::read_dir(dir.path()).map_err(io_error("listing packs"))?.flatten() {
                let path = file.path();
                if !registered.contains(&path.with_extension("pack")) {
                    let _ = fs::remove_file(&path);
                }
            }
        }
        Ok(())
    }

    /// Every registered pack: its number and the path of its `.pack` file.
    fn registered_packs(&self) -> Result<Vec<(u64, PathBuf)>> {
        Ok(self.pack_records()?.into_iter().map(|r| (r.number, self.pack_path(r.repo, &r.checksum))).collect())
    }

    /// Every registered pack, oldest first.
    fn pack_records(&self) -> Result<Vec<PackRecord>> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(PACKS), IteratorMode::Start) {
            let (k, v) = item.map_err(backend)?;
            let number = u64::from_be_bytes(k.as_ref().try_into().map_err(|_| Error::Corrupt("pack key".into()))?);
            out.push(decode_registry(number, &v)?);
        }
        Ok(out)
    }

    fn pack_path_of(&self, value: &[u8]) -> Result<PathBuf> {
        let record = decode_registry(0, value)?;
        Ok(self.pack_path(record.repo, &record.checksum))
    }

    fn pack_path(&self, repo: RepoId, checksum: &ObjectId) -> PathBuf {
        self.packs_dir.join(repo.0.to_string()).join(format!("{}.pack", pack_name(checksum)))
    }

    /// Brings data of an older format up to [`FORMAT`].
    fn upgrade(&self) -> Result<()> {
        let version = match self.db.get(FORMAT_KEY).map_err(backend)? {
            Some(v) => u32::from_be_bytes(v.as_slice().try_into().map_err(|_| Error::Corrupt("format key".into()))?),
            // A database without objects is new, not old.
            None if self.db.iterator_cf(self.cf(OBJECTS), IteratorMode::Start).next().is_none() => FORMAT,
            None => 1,
        };
        if version > FORMAT {
            return Err(Error::Corrupt(format!(
                "the data directory has storage format {version}; this build reads format {FORMAT} and older"
            )));
        }
        if version < 3 {
            self.convert_to_packs()?;
        }
        self.db.put(FORMAT_KEY, FORMAT.to_be_bytes()).map_err(backend)
    }

    /// Moves objects stored one per value (formats 1 and 2) into one pack per repository, the
    /// stored zlib streams copied as they are; rebuilds the object index, commit graph and
    /// counters. A repository's old values are deleted in the batch that registers its pack, so
    /// a crash part way resumes with the repositories not yet converted. Memory: the index of
    /// the largest repository.
    fn convert_to_packs(&self) -> Result<()> {
        while let Some(item) = self.db.iterator_cf(self.cf(OBJECTS), IteratorMode::Start).next() {
            let (k, _) = item.map_err(backend)?;
            let (repo, _) = split_object_key(&k)?;
            self.convert_repo(repo)?;
        }
        Ok(())
    }

    fn convert_repo(&self, repo: RepoId) -> Result<()> {
        let prefix = repo.key_prefix();
        let range = || self.db.iterator_cf(self.cf(OBJECTS), IteratorMode::From(&prefix, Direction::Forward));
        let mut count = 0u32;
        for item in range() {
            let (k, _) = item.map_err(backend)?;
            if !k.starts_with(&prefix) {
                break;
            }
            count += 1;
        }
        let temp = tempfile::Builder::new()
            .prefix("convert-")
            .suffix(".pack")
            .tempfile_in(&self.incoming)
            .map_err(io_error("creating a pack"))?;
        let mut commits = Vec::new();
        {
            let mut writer = gitstratum_git::pack::Writer::new(BufWriter::new(temp.as_file()), count)
                .map_err(io_error("writing a pack"))?;
            for item in range() {
                let (k, v) = item.map_err(backend)?;
                if !k.starts_with(&prefix) {
                    break;
                }
                let (_, id) = split_object_key(&k)?;
                let object = decode_object(&id, &v)?;
                if object.kind == ObjectKind::Commit {
                    let c = parse::commit(&object.data).map_err(|e| Error::Corrupt(format!("commit {id}: {e}")))?;
                    commits.push((id, c));
                }
                writer
                    .write_raw_object(object.kind, object.data.len() as u64, &v[1..])
                    .map_err(io_error("writing a pack"))?;
            }
            let (mut out, _) = writer.finish().map_err(io_error("writing a pack"))?;
            out.flush().map_err(io_error("writing a pack"))?;
        }
        let (checksum, entries) = index_whole_pack(temp.path())?;
        let pack = IncomingPack { path: temp.path(), checksum, entries: &entries, commits: &commits };
        self.install_pack(repo, pack, true, |batch, db| {
            for cf in [OBJECTS, DELTAS] {
                batch.delete_range_cf(cf_of(db, cf), repo.key_prefix(), RepoId(repo.0 + 1).key_prefix());
            }
        })
    }

    fn cf(&self, name: &str) -> &ColumnFamily {
        cf_of(&self.db, name)
    }

    fn synced() -> WriteOptions {
        let mut o = WriteOptions::default();
        o.set_sync(true);
        o
    }

    /// Keys of a column family that start with `prefix`.
    fn keys_with_prefix(&self, cf: &str, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(cf), IteratorMode::From(prefix, Direction::Forward)) {
            let (k, v) = item.map_err(backend)?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// Every object the repository's object index lists (a fork's inherited packs are not
    /// listed there; cluster mode's local stores hold no forks).
    pub fn object_ids(&self, repo: RepoId) -> Result<Vec<ObjectId>> {
        self.keys_with_prefix(OBJECT_INDEX, &repo.key_prefix())?.iter().map(|(k, _)| oid_from(&k[8..])).collect()
    }

    /// The objects the repository's object index lists, except those it places in a pack of
    /// one of these checksums, and the delta bases of those it keeps (wherever they are, down
    /// their chains): a set that is whole on its own as a pack.
    pub fn object_ids_outside(&self, repo: RepoId, checksums: &HashSet<ObjectId>) -> Result<Vec<ObjectId>> {
        let excluded: HashSet<u64> = self
            .pack_records()?
            .into_iter()
            .filter(|p| p.repo == repo && checksums.contains(&p.checksum))
            .map(|p| p.number)
            .collect();
        let mut kept = HashSet::new();
        let mut bases = Vec::new();
        for (k, v) in self.keys_with_prefix(OBJECT_INDEX, &repo.key_prefix())? {
            let id = oid_from(&k[8..])?;
            let location = decode_location(&id, &v)?;
            if !excluded.contains(&location.pack) {
                kept.insert(id);
                bases.extend(location.base);
            }
        }
        while !bases.is_empty() {
            let new: Vec<ObjectId> = bases.drain(..).filter(|b| kept.insert(*b)).collect();
            for (id, location) in new.iter().zip(self.locations(repo, &new)?) {
                let location = location.ok_or_else(|| Error::Corrupt(format!("delta base {id} is missing")))?;
                bases.extend(location.base);
            }
        }
        let mut out: Vec<ObjectId> = kept.into_iter().collect();
        out.sort_unstable();
        Ok(out)
    }

    /// Flushes memtables and the WAL (for a clean shutdown).
    pub fn flush(&self) -> Result<()> {
        self.db.flush_wal(true).map_err(backend)?;
        self.db.flush().map_err(backend)
    }

    /// The open file of pack `number`; `None` when it is not registered (any more: maintenance
    /// replaced it, and the caller's location is stale).
    fn pack_file(&self, number: u64) -> Result<Option<Arc<File>>> {
        if let Some(f) = self.open_packs.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(&number) {
            return Ok(Some(f.clone()));
        }
        let Some(value) = self.db.get_cf(self.cf(PACKS), number.to_be_bytes()).map_err(backend)? else {
            return Ok(None);
        };
        let path = self.pack_path_of(&value)?;
        let file = match File::open(&path) {
            Ok(file) => Arc::new(file),
            // Maintenance replaced it between the two reads: the caller's location is stale.
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && self.db.get_cf(self.cf(PACKS), number.to_be_bytes()).map_err(backend)?.is_none() =>
            {
                return Ok(None);
            }
            Err(e) => return Err(Error::Corrupt(format!("pack {}: {e}", path.display()))),
        };
        let mut open = self.open_packs.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        // A bound on descriptors: past it, start over (readers keep the files they hold).
        if open.len() >= MAX_OPEN_PACKS {
            open.clear();
        }
        open.insert(number, file.clone());
        Ok(Some(file))
    }

    /// Runs `read` on the pack file holding `id` at `location`; when maintenance moved the object
    /// since its location was read, reads the location again.
    fn with_pack<T>(
        &self,
        repo: RepoId,
        id: &ObjectId,
        location: Location,
        read: impl Fn(&Location, &File) -> Result<T>,
    ) -> Result<T> {
        let mut location = location;
        for _ in 0..4 {
            if let Some(file) = self.pack_file(location.pack)? {
                return read(&location, &file);
            }
            location = self
                .locations(repo, std::slice::from_ref(id))?
                .pop()
                .flatten()
                .ok_or_else(|| Error::Corrupt(format!("object {id} was removed while it was read")))?;
        }
        Err(Error::Corrupt(format!("object {id} moved between packs too often while it was read")))
    }

    fn locations(&self, repo: RepoId, ids: &[ObjectId]) -> Result<Vec<Option<Location>>> {
        self.locations_nested(repo, ids, 0)
    }

    /// Where `ids` are: the object index, else the inherited packs' indexes ([`shared`]).
    /// `depth` counts REF delta bases looked up one inside the other.
    fn locations_nested(&self, repo: RepoId, ids: &[ObjectId], depth: usize) -> Result<Vec<Option<Location>>> {
        let found = self.multi_get(OBJECT_INDEX, repo, ids, decode_location)?;
        self.or_inherited(repo, ids, found, |packs, id| self.location_in(repo, packs, id, depth))
    }

    /// `found` (what the object index answered for `ids`), its misses looked up in the
    /// repository's inherited packs ([`shared`]) with `find`.
    fn or_inherited<T>(
        &self,
        repo: RepoId,
        ids: &[ObjectId],
        mut found: Vec<Option<T>>,
        find: impl Fn(&[u64], &ObjectId) -> Result<Option<T>>,
    ) -> Result<Vec<Option<T>>> {
        if found.iter().any(Option::is_none) {
            let inherited = self.inherited(repo)?;
            if !inherited.is_empty() {
                for (slot, id) in found.iter_mut().zip(ids).filter(|(slot, _)| slot.is_none()) {
                    *slot = find(&inherited, id)?;
                }
            }
        }
        Ok(found)
    }

    /// Reads object `id` at `location`; REF delta bases are found through the object index.
    fn read_located(
        &self,
        repo: RepoId,
        id: &ObjectId,
        location: Location,
        depth: usize,
    ) -> Result<(ObjectKind, Arc<Vec<u8>>)> {
        self.with_pack(repo, id, location, |location, file| self.read_in(repo, location, file, depth))
    }

    fn read_in(
        &self,
        repo: RepoId,
        location: &Location,
        file: &File,
        depth: usize,
    ) -> Result<(ObjectKind, Arc<Vec<u8>>)> {
        let ref_base = |id: &ObjectId| -> std::result::Result<Option<packfile::Resolved>, ReadError> {
            if depth > MAX_REF_NESTING {
                return Err(ReadError::Entry {
                    offset: location.offset,
                    message: "REF delta bases nest too deep".into(),
                });
            }
            let found =
                self.locations(repo, std::slice::from_ref(id)).map_err(|e| ReadError::Io(std::io::Error::other(e)))?;
            match found.into_iter().next().flatten() {
                Some(l) => self
                    .read_located(repo, id, l, depth + 1)
                    .map(Some)
                    .map_err(|e| ReadError::Io(std::io::Error::other(e))),
                None => Ok(None),
            }
        };
        let cache = self.bases.for_pack(location.pack);
        let (kind, data) = packfile::read_object(file, location.offset, &ref_base, &cache, MAX_CHAIN)
            .map_err(|e| Error::Corrupt(format!("pack {}: {e}", location.pack)))?;
        if kind != location.kind || data.len() as u64 != location.size {
            return Err(Error::Corrupt(format!(
                "pack {} at offset {}: holds a {} of {} bytes, indexed as a {} of {}",
                location.pack,
                location.offset,
                kind.as_str(),
                data.len(),
                location.kind.as_str(),
                location.size
            )));
        }
        Ok((kind, data))
    }

    /// Makes the pack at `path` durable and puts it in place with its index (written from
    /// `entries`), the directories synced: what must be true before a batch registers it.
    fn place_pack(&self, repo: RepoId, path: &Path, checksum: &ObjectId, entries: &[IndexedEntry]) -> Result<()> {
        let dir = self.packs_dir.join(repo.0.to_string());
        fs::create_dir_all(&dir).map_err(io_error("creating a pack directory"))?;
        let name = pack_name(checksum);
        let final_path = dir.join(format!("{name}.pack"));
        File::open(path).and_then(|f| f.sync_all()).map_err(io_error("syncing a pack"))?;
        fs::rename(path, &final_path).map_err(io_error("moving a pack into place"))?;
        let idx_temp = dir.join(format!("{name}.idx.tmp"));
        {
            let file = File::create(&idx_temp).map_err(io_error("writing a pack index"))?;
            let mut out = BufWriter::new(&file);
            packfile::write_idx(&mut out, entries, checksum).map_err(io_error("writing a pack index"))?;
            out.flush().map_err(io_error("writing a pack index"))?;
            drop(out);
            file.sync_all().map_err(io_error("syncing a pack index"))?;
        }
        fs::rename(&idx_temp, dir.join(format!("{name}.idx"))).map_err(io_error("moving a pack index"))?;
        sync_dir(&dir)?;
        sync_dir(&self.packs_dir)
    }

    /// Registers an indexed pack and indexes its objects (see [`ObjectStore::put_pack`]). With
    /// `replace`, every object is indexed anew and the counters recomputed (conversion); `extra`
    /// adds to the registering batch.
    fn install_pack(
        &self,
        repo: RepoId,
        pack: IncomingPack<'_>,
        replace: bool,
        extra: impl FnOnce(&mut WriteBatch, &DB),
    ) -> Result<()> {
        let _guard = self.put_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let ids: Vec<ObjectId> = pack.entries.iter().map(|e| e.id).collect();
        let stored = if replace { vec![false; ids.len()] } else { self.has_many(repo, &ids)? };
        let mut seen = HashSet::with_capacity(ids.len());
        let new: Vec<&IndexedEntry> = pack
            .entries
            .iter()
            .zip(stored)
            .filter(|(e, stored)| !stored && seen.insert(e.id))
            .map(|(e, _)| e)
            .collect();
        // Objects stored as deltas that this pack holds whole (a thin pack's appended bases) are
        // pointed at the whole copy: otherwise each push of a changed file would add a link to a
        // chain of deltas across packs, its base the last push's delta.
        let whole: Vec<&IndexedEntry> = if replace {
            Vec::new()
        } else {
            pack.entries.iter().filter(|e| e.base.is_none() && !seen.contains(&e.id)).collect()
        };
        let mut rebased = Vec::new();
        if !whole.is_empty() {
            let ids: Vec<ObjectId> = whole.iter().map(|e| e.id).collect();
            for (e, location) in whole.into_iter().zip(self.locations(repo, &ids)?) {
                if location.is_some_and(|l| l.base.is_some()) && seen.insert(e.id) {
                    rebased.push(e);
                }
            }
        }
        if new.is_empty() && rebased.is_empty() && !replace {
            let _ = fs::remove_file(pack.path);
            return Ok(());
        }
        self.place_pack(repo, pack.path, &pack.checksum, pack.entries)?;

        let number = self.next_pack.fetch_add(1, Ordering::SeqCst);
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(PACKS), number.to_be_bytes(), encode_registry(repo, &pack.checksum, None, false));
        let new_ids: HashSet<ObjectId> = new.iter().map(|e| e.id).collect();
        let commits: Vec<(ObjectId, parse::Commit)> =
            pack.commits.iter().filter(|(id, _)| new_ids.contains(id)).cloned().collect();
        let records = commit_records_parsed(&commits, |parents| {
            self.commits(repo, parents).map(|c| c.into_iter().map(|c| c.map(|c| c.generation)).collect())
        })?;
        let mut stats = if replace { RepoStats::default() } else { self.stats(repo)? };
        for e in &new {
            let location = Location::of(e, number);
            batch.put_cf(self.cf(OBJECT_INDEX), key(repo, e.id.as_bytes()), encode_location(&location));
            stats.objects += 1;
            stats.bytes += e.size;
        }
        for e in &rebased {
            batch.put_cf(self.cf(OBJECT_INDEX), key(repo, e.id.as_bytes()), encode_location(&Location::of(e, number)));
        }
        for (id, info) in &records {
            batch.put_cf(self.cf(COMMIT_GRAPH), key(repo, id.as_bytes()), encode_commit(info));
        }
        let mut counters = [0u8; 16];
        counters[..8].copy_from_slice(&stats.objects.to_be_bytes());
        counters[8..].copy_from_slice(&stats.bytes.to_be_bytes());
        batch.put_cf(self.cf(REPO_STATS), repo.key_prefix(), counters);
        extra(&mut batch, &self.db);
        self.db.write_opt(batch, &Self::synced()).map_err(backend)
    }
}

/// The entry at `l` as stored (see [`ObjectStore::raw_many`]).
fn raw_in(l: &Location, file: &File) -> Result<RawEntry> {
    let corrupt = |e: ReadError| Error::Corrupt(format!("pack {} at offset {}: {e}", l.pack, l.offset));
    let mut raw = packfile::raw_entry(file, l.offset, l.end, l.crc32).map_err(corrupt)?;
    let header = packfile::parse_header(&raw, l.offset).map_err(corrupt)?;
    let kind = match (header.header, l.base) {
        (Header::Whole(kind), _) => RawKind::Whole(kind),
        (_, Some(base)) => RawKind::Delta { base },
        (_, None) => return Err(Error::Corrupt(format!("delta {} has no base in the index", l.offset))),
    };
    let compressed = raw.split_off(header.header_len as usize);
    Ok(RawEntry { kind, size: header.size, compressed })
}

/// A registered pack.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PackRecord {
    number: u64,
    repo: RepoId,
    checksum: ObjectId,
    /// For a cruft pack (objects no ref reached when it was written): when it was written.
    cruft_since_ms: Option<i64>,
    /// Its file is shared with a fork (or the repository forked from): maintenance never
    /// rewrites or removes it, so the bytes stay shared ([`shared`]).
    shared: bool,
}

/// Registry value: repo ‖ checksum, then optional tagged fields: `1 ‖ made (ms)` for a cruft
/// pack, `2` for a shared one.
fn encode_registry(repo: RepoId, checksum: &ObjectId, cruft_since_ms: Option<i64>, shared: bool) -> Vec<u8> {
    let mut v = Vec::with_capacity(38);
    v.extend_from_slice(&repo.key_prefix());
    v.extend_from_slice(checksum.as_bytes());
    if let Some(ms) = cruft_since_ms {
        v.push(1);
        v.extend_from_slice(&ms.to_be_bytes());
    }
    if shared {
        v.push(2);
    }
    v
}

fn decode_registry(number: u64, v: &[u8]) -> Result<PackRecord> {
    let corrupt = || Error::Corrupt(format!("registry entry of pack {number}"));
    if v.len() < 28 {
        return Err(corrupt());
    }
    let (mut cruft_since_ms, mut shared) = (None, false);
    let mut rest = &v[28..];
    while let Some((tag, tail)) = rest.split_first() {
        rest = match tag {
            1 if cruft_since_ms.is_none() && tail.len() >= 8 => {
                cruft_since_ms = Some(i64::from_be_bytes(tail[..8].try_into().map_err(|_| corrupt())?));
                &tail[8..]
            }
            2 if !shared => {
                shared = true;
                tail
            }
            _ => return Err(corrupt()),
        };
    }
    Ok(PackRecord {
        number,
        repo: RepoId(i64::from_be_bytes(v[..8].try_into().map_err(|_| corrupt())?)),
        checksum: oid_from(&v[8..28])?,
        cruft_since_ms,
        shared,
    })
}

fn cf_of<'a>(db: &'a DB, name: &str) -> &'a ColumnFamily {
    db.cf_handle(name).expect("column families are created in open, because create_missing_column_families is set")
}

/// Stores the objects not stored yet as one pack of whole objects, through `store`'s
/// [`ObjectStore::put_pack`].
pub(crate) fn put_as_pack(store: &impl ObjectStore, repo: RepoId, objects: &[NewObject]) -> Result<()> {
    let ids: Vec<ObjectId> = objects.iter().map(|o| o.id).collect();
    let stored = store.has_many(repo, &ids)?;
    let mut seen = HashSet::new();
    let new: Vec<&NewObject> =
        objects.iter().zip(stored).filter(|(o, s)| !s && seen.insert(o.id)).map(|(o, _)| o).collect();
    if new.is_empty() {
        return Ok(());
    }
    let pack = WholePack::write(store.incoming_dir(), &new)?;
    store.put_pack(repo, pack.incoming())
}

/// A pack of whole objects written from [`NewObject`]s, indexed, in an incoming directory.
pub(crate) struct WholePack {
    file: tempfile::NamedTempFile,
    checksum: ObjectId,
    entries: Vec<IndexedEntry>,
    commits: Vec<(ObjectId, parse::Commit)>,
}

impl WholePack {
    pub(crate) fn write(incoming: &Path, objects: &[&NewObject]) -> Result<WholePack> {
        let file = tempfile::Builder::new()
            .prefix("put-")
            .suffix(".pack")
            .tempfile_in(incoming)
            .map_err(io_error("creating a pack"))?;
        {
            let count =
                u32::try_from(objects.len()).map_err(|_| Error::Backend("too many objects for one pack".into()))?;
            let mut writer = gitstratum_git::pack::Writer::new(BufWriter::new(file.as_file()), count)
                .map_err(io_error("writing a pack"))?;
            for o in objects {
                writer.write_object(o.kind, &o.data).map_err(io_error("writing a pack"))?;
            }
            let (mut out, _) = writer.finish().map_err(io_error("writing a pack"))?;
            out.flush().map_err(io_error("writing a pack"))?;
        }
        let (checksum, entries) = index_whole_pack(file.path())?;
        let mut commits = Vec::new();
        for o in objects.iter().filter(|o| o.kind == ObjectKind::Commit) {
            commits.push((o.id, parse::commit(&o.data).map_err(|e| Error::Corrupt(format!("commit {}: {e}", o.id)))?));
        }
        Ok(WholePack { file, checksum, entries, commits })
    }

    pub(crate) fn incoming(&self) -> IncomingPack<'_> {
        IncomingPack { path: self.file.path(), checksum: self.checksum, entries: &self.entries, commits: &self.commits }
    }
}

/// Index entries of a pack of whole objects (what this store writes itself): scanned, every id
/// computed from the data.
fn index_whole_pack(path: &Path) -> Result<(ObjectId, Vec<IndexedEntry>)> {
    let file = File::open(path).map_err(io_error("reading a pack"))?;
    let scan = packfile::scan(BufReader::new(file), std::io::sink(), u64::MAX)
        .map_err(|e| Error::Corrupt(format!("a pack just written: {e}")))?;
    let entries = scan
        .entries
        .iter()
        .map(|e| e.whole().ok_or_else(|| Error::Corrupt("a pack of whole objects holds a delta".into())))
        .collect::<Result<_>>()?;
    Ok((scan.checksum, entries))
}

fn split_object_key(k: &[u8]) -> Result<(RepoId, ObjectId)> {
    if k.len() != 28 {
        return Err(Error::Corrupt("object key".into()));
    }
    let repo = RepoId(i64::from_be_bytes(k[..8].try_into().map_err(|_| Error::Corrupt("object key".into()))?));
    Ok((repo, oid_from(&k[8..])?))
}

fn decode_object(id: &ObjectId, value: &[u8]) -> Result<Object> {
    let (&code, compressed) =
        value.split_first().ok_or_else(|| Error::Corrupt(format!("empty value for object {id}")))?;
    let kind = kind_from_code(code).ok_or_else(|| Error::Corrupt(format!("object {id} has kind {code}")))?;
    let mut data = Vec::new();
    ZlibDecoder::new(compressed).read_to_end(&mut data).map_err(|e| Error::Corrupt(format!("object {id}: {e}")))?;
    Ok(Object { kind, data })
}

/// Kind and size: the head of an object index entry.
fn decode_info(id: &ObjectId, v: &[u8]) -> Result<ObjectInfo> {
    let corrupt = || Error::Corrupt(format!("object index entry of {id}"));
    if v.len() < 9 {
        return Err(corrupt());
    }
    let kind = kind_from_code(v[0]).ok_or_else(corrupt)?;
    Ok(ObjectInfo { kind, size: u64::from_be_bytes(v[1..9].try_into().map_err(|_| corrupt())?) })
}

fn encode_commit(c: &CommitInfo) -> Vec<u8> {
    let mut v = Vec::with_capacity(32 + 20 * (1 + c.parents.len()));
    v.extend_from_slice(c.tree.as_bytes());
    v.extend_from_slice(&c.generation.to_be_bytes());
    v.extend_from_slice(&c.time.to_be_bytes());
    for p in &c.parents {
        v.extend_from_slice(p.as_bytes());
    }
    v
}

fn decode_commit(id: &ObjectId, v: &[u8]) -> Result<CommitInfo> {
    let corrupt = || Error::Corrupt(format!("commit graph entry of {id}"));
    if v.len() < 32 || !(v.len() - 32).is_multiple_of(20) {
        return Err(corrupt());
    }
    Ok(CommitInfo {
        tree: oid_from(&v[..20])?,
        generation: u32::from_be_bytes(v[20..24].try_into().map_err(|_| corrupt())?),
        time: i64::from_be_bytes(v[24..32].try_into().map_err(|_| corrupt())?),
        parents: v[32..].chunks(20).map(oid_from).collect::<Result<_>>()?,
    })
}

fn decode_stats(v: &[u8]) -> Result<RepoStats> {
    if v.len() != 16 {
        return Err(Error::Corrupt("repository counters".into()));
    }
    let (a, b) = v.split_at(8);
    Ok(RepoStats {
        objects: u64::from_be_bytes(a.try_into().map_err(|_| Error::Corrupt("counters".into()))?),
        bytes: u64::from_be_bytes(b.try_into().map_err(|_| Error::Corrupt("counters".into()))?),
    })
}

impl RocksStore {
    /// The refs a batch's creations could clash with as file and directory: those named by a
    /// directory of a created ref and those inside one. Point reads and prefix scans, not the
    /// whole list: a mirror push of thousands of refs, one update each, stays linear.
    fn refs_near(&self, repo: RepoId, updates: &[RefUpdate]) -> Result<Vec<String>> {
        let mut near = Vec::new();
        for u in updates.iter().filter(|u| u.old.is_none() && u.new.is_some()) {
            for parent in u.name.match_indices('/').map(|(i, _)| &u.name[..i]) {
                if self.get(repo, parent)?.is_some() {
                    near.push(parent.to_owned());
                }
            }
            for (k, _) in self.keys_with_prefix(REFS, &key(repo, format!("{}/", u.name).as_bytes()))? {
                near.push(String::from_utf8(k[8..].to_vec()).map_err(|_| Error::Corrupt("ref name".into()))?);
            }
        }
        Ok(near)
    }

    /// One batched lookup of `ids` in a per-repository column family, each value decoded.
    fn multi_get<T>(
        &self,
        cf: &str,
        repo: RepoId,
        ids: &[ObjectId],
        decode: impl Fn(&ObjectId, &[u8]) -> Result<T>,
    ) -> Result<Vec<Option<T>>> {
        let keys: Vec<Vec<u8>> = ids.iter().map(|id| key(repo, id.as_bytes())).collect();
        self.db
            .batched_multi_get_cf(self.cf(cf), &keys, false)
            .into_iter()
            .zip(ids)
            .map(|(v, id)| v.map_err(backend)?.map(|v| decode(id, &v)).transpose())
            .collect()
    }
}

impl ObjectStore for RocksStore {
    /// Writes the objects not stored yet as a pack of whole objects.
    fn put(&self, repo: RepoId, objects: &[NewObject]) -> Result<()> {
        put_as_pack(self, repo, objects)
    }

    fn incoming_dir(&self) -> &Path {
        &self.incoming
    }

    fn put_pack(&self, repo: RepoId, pack: IncomingPack<'_>) -> Result<()> {
        self.install_pack(repo, pack, false, |_, _| {})
    }

    fn get_many(&self, repo: RepoId, ids: &[ObjectId]) -> Result<Vec<Option<Object>>> {
        self.locations(repo, ids)?
            .into_iter()
            .zip(ids)
            .map(|(l, id)| {
                l.map(|l| {
                    self.read_located(repo, id, l, 0).map(|(kind, data)| Object {
                        kind,
                        data: Arc::try_unwrap(data).unwrap_or_else(|d| (*d).clone()),
                    })
                })
                .transpose()
            })
            .collect()
    }

    fn info_many(&self, repo: RepoId, ids: &[ObjectId]) -> Result<Vec<Option<ObjectInfo>>> {
        let found = self.multi_get(OBJECT_INDEX, repo, ids, decode_info)?;
        self.or_inherited(repo, ids, found, |packs, id| self.inherited_info(repo, packs, id))
    }

    fn commits(&self, repo: RepoId, ids: &[ObjectId]) -> Result<Vec<Option<CommitInfo>>> {
        self.multi_get(COMMIT_GRAPH, repo, ids, decode_commit)
    }

    fn stats(&self, repo: RepoId) -> Result<RepoStats> {
        match self.db.get_cf(self.cf(REPO_STATS), repo.key_prefix()).map_err(backend)? {
            Some(v) => decode_stats(&v),
            None => Ok(RepoStats::default()),
        }
    }

    fn raw_many(&self, repo: RepoId, ids: &[ObjectId]) -> Result<Vec<Option<RawEntry>>> {
        self.locations(repo, ids)?
            .into_iter()
            .zip(ids)
            .map(|(l, id)| l.map(|l| self.with_pack(repo, id, l, raw_in)).transpose())
            .collect()
    }

    fn reachable(
        &self,
        repo: RepoId,
        tips: &[ObjectId],
        with_blobs: bool,
    ) -> Result<Option<Vec<(ObjectId, ObjectKind)>>> {
        self.reach_from(repo, tips, with_blobs)
    }

    fn reachable_reuse(&self, repo: RepoId, tips: &[ObjectId], with_blobs: bool) -> Result<Option<crate::Reachable>> {
        self.reach_reuse(repo, tips, with_blobs, true)
    }

    fn pin(&self, repo: RepoId) -> crate::Pin {
        *self.pins.lock().unwrap_or_else(std::sync::PoisonError::into_inner).entry(repo).or_default() += 1;
        let pins = self.pins.clone();
        crate::Pin::new(move || {
            let mut pins = pins.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(n) = pins.get_mut(&repo) {
                *n -= 1;
                if *n == 0 {
                    pins.remove(&repo);
                }
            }
        })
    }

    /// Shares `from`'s packs with `to`, their index included; copies the commit graph and
    /// counters (see [`shared`]).
    fn fork(&self, from: RepoId, to: RepoId) -> Result<()> {
        self.fork_shared(from, to)
    }

    fn delete_repo(&self, repo: RepoId) -> Result<()> {
        let start = repo.key_prefix();
        let end = RepoId(repo.0 + 1).key_prefix();
        let _guard = self.put_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut batch = WriteBatch::default();
        for cf in [OBJECTS, DELTAS, OBJECT_INDEX, COMMIT_GRAPH, PACK_CACHE] {
            batch.delete_range_cf(self.cf(cf), start, end);
        }
        batch.delete_cf(self.cf(REPO_STATS), start);
        let mut numbers = Vec::new();
        for item in self.db.iterator_cf(self.cf(PACKS), IteratorMode::Start) {
            let (k, v) = item.map_err(backend)?;
            if v.starts_with(&start) {
                batch.delete_cf(self.cf(PACKS), &k);
                numbers.push(u64::from_be_bytes(k.as_ref().try_into().map_err(|_| Error::Corrupt("pack key".into()))?));
            }
        }
        self.db.write_opt(batch, &Self::synced()).map_err(backend)?;
        {
            let mut open = self.open_packs.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut tables = self.tables.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for n in &numbers {
                open.remove(n);
                self.bases.forget(*n);
                tables.forget(*n);
            }
        }
        match fs::remove_dir_all(self.packs_dir.join(repo.0.to_string())) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error("removing packs")(e)),
            _ => Ok(()),
        }
    }
}

fn encode_event(e: &RefEvent) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&e.repo.0.to_be_bytes());
    v.extend_from_slice(&e.time_ms.to_be_bytes());
    for id in [e.old, e.new] {
        match id {
            Some(id) => {
                v.push(1);
                v.extend_from_slice(id.as_bytes());
            }
            None => v.push(0),
        }
    }
    let name = e.name.as_bytes();
    v.extend_from_slice(&u32::try_from(name.len()).unwrap_or(u32::MAX).to_be_bytes());
    v.extend_from_slice(name);
    v.extend_from_slice(e.pusher.as_bytes());
    v
}

fn decode_event(seq: u64, v: &[u8]) -> Result<RefEvent> {
    let corrupt = || Error::Corrupt(format!("event {seq}"));
    let mut pos = 0;
    let mut take = |n: usize| -> Result<&[u8]> {
        let s = v.get(pos..pos + n).ok_or_else(corrupt)?;
        pos += n;
        Ok(s)
    };
    let repo = RepoId(i64::from_be_bytes(take(8)?.try_into().map_err(|_| corrupt())?));
    let time_ms = i64::from_be_bytes(take(8)?.try_into().map_err(|_| corrupt())?);
    let mut ids = [None, None];
    for slot in &mut ids {
        if take(1)?[0] == 1 {
            *slot = Some(oid_from(take(20)?)?);
        }
    }
    let len = u32::from_be_bytes(take(4)?.try_into().map_err(|_| corrupt())?) as usize;
    let name = String::from_utf8(take(len)?.to_vec()).map_err(|_| corrupt())?;
    let pusher = String::from_utf8(v[pos..].to_vec()).map_err(|_| corrupt())?;
    Ok(RefEvent { seq, repo, name, old: ids[0], new: ids[1], pusher, time_ms })
}

impl RocksStore {
    /// Adds a ref update and its event (number `seq`) to `batch`; returns the event.
    fn stage(&self, batch: &mut WriteBatch, repo: RepoId, u: &RefUpdate, seq: u64, actor: &Actor) -> RefEvent {
        let k = key(repo, u.name.as_bytes());
        match u.new {
            Some(id) => batch.put_cf(self.cf(REFS), k, id.as_bytes()),
            None => batch.delete_cf(self.cf(REFS), k),
        }
        let event = RefEvent::of(seq, repo, u, actor);
        batch.put_cf(self.cf(EVENTS), seq.to_be_bytes(), encode_event(&event));
        event
    }
}

impl RefStore for RocksStore {
    fn list(&self, repo: RepoId) -> Result<Vec<(String, ObjectId)>> {
        self.keys_with_prefix(REFS, &repo.key_prefix())?
            .into_iter()
            .map(|(k, v)| {
                let name = String::from_utf8(k[8..].to_vec()).map_err(|_| Error::Corrupt("ref name".into()))?;
                Ok((name, oid_from(&v)?))
            })
            .collect()
    }

    fn get(&self, repo: RepoId, name: &str) -> Result<Option<ObjectId>> {
        self.db.get_cf(self.cf(REFS), key(repo, name.as_bytes())).map_err(backend)?.map(|v| oid_from(&v)).transpose()
    }

    fn update(&self, repo: RepoId, updates: &[RefUpdate], actor: &Actor) -> Result<Result<Vec<RefEvent>, Conflict>> {
        let _guard = self.ref_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for u in updates {
            if self.get(repo, &u.name)? != u.old {
                return Ok(Err(Conflict { name: u.name.clone() }));
            }
        }
        let near = self.refs_near(repo, updates)?;
        if let Some(u) = crate::RefNames::new(near.iter().map(String::as_str)).first_clash(updates) {
            return Ok(Err(Conflict { name: u.name.clone() }));
        }
        let mut batch = WriteBatch::default();
        let mut events = Vec::with_capacity(updates.len());
        let mut seq = self.last_seq.load(Ordering::SeqCst);
        for u in updates {
            seq += 1;
            events.push(self.stage(&mut batch, repo, u, seq, actor));
        }
        self.db.write_opt(batch, &Self::synced()).map_err(backend)?;
        // Published only after the write is durable, under the lock.
        self.last_seq.store(seq, Ordering::SeqCst);
        Ok(Ok(events))
    }

    /// All that apply in one synced batch: a mirror push of thousands of refs is one write, not
    /// thousands.
    fn update_each(
        &self,
        repo: RepoId,
        updates: &[RefUpdate],
        actor: &Actor,
    ) -> Result<Vec<Result<RefEvent, Conflict>>> {
        let _guard = self.ref_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let near = self.refs_near(repo, updates)?;
        let mut names = crate::RefNames::new(near.iter().map(String::as_str));
        let mut now: HashMap<&str, Option<ObjectId>> = HashMap::new();
        let mut batch = WriteBatch::default();
        let mut seq = self.last_seq.load(Ordering::SeqCst);
        let mut out = Vec::with_capacity(updates.len());
        for u in updates {
            let current = match now.get(u.name.as_str()) {
                Some(value) => *value,
                None => self.get(repo, &u.name)?,
            };
            let clashes = u.new.is_some() && current.is_none() && names.clash(&u.name).is_some();
            if current != u.old || clashes {
                out.push(Err(Conflict { name: u.name.clone() }));
                continue;
            }
            match u.new {
                Some(_) => names.insert(&u.name),
                None => names.remove(&u.name),
            }
            now.insert(&u.name, u.new);
            seq += 1;
            out.push(Ok(self.stage(&mut batch, repo, u, seq, actor)));
        }
        if !batch.is_empty() {
            self.db.write_opt(batch, &Self::synced()).map_err(backend)?;
            self.last_seq.store(seq, Ordering::SeqCst);
        }
        Ok(out)
    }

    fn head(&self, repo: RepoId) -> Result<Option<String>> {
        self.db
            .get_cf(self.cf(REPO_CONFIG), key(repo, b"HEAD"))
            .map_err(backend)?
            .map(|v| String::from_utf8(v).map_err(|_| Error::Corrupt("HEAD".into())))
            .transpose()
    }

    fn set_head(&self, repo: RepoId, target: &str) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(REPO_CONFIG), key(repo, b"HEAD"), target.as_bytes());
        self.db.write_opt(batch, &Self::synced()).map_err(backend)
    }

    fn events_after(&self, after: u64, limit: usize) -> Result<Vec<RefEvent>> {
        let start = (after + 1).to_be_bytes();
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(EVENTS), IteratorMode::From(&start, Direction::Forward)).take(limit) {
            let (k, v) = item.map_err(backend)?;
            let seq = u64::from_be_bytes(k.as_ref().try_into().map_err(|_| Error::Corrupt("event key".into()))?);
            out.push(decode_event(seq, &v)?);
        }
        Ok(out)
    }

    fn delete_repo(&self, repo: RepoId) -> Result<()> {
        let start = repo.key_prefix();
        let end = RepoId(repo.0 + 1).key_prefix();
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(REFS), start, end);
        batch.delete_range_cf(self.cf(REPO_CONFIG), start, end);
        self.db.write_opt(batch, &Self::synced()).map_err(backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::ZlibEncoder;
    use gitstratum_git::hash_object;

    /// What formats 1 and 2 stored for an object: kind, then its zlib stream.
    fn legacy_value(kind: ObjectKind, data: &[u8]) -> Vec<u8> {
        let mut enc = ZlibEncoder::new(Vec::new(), Compression::fast());
        enc.write_all(data).expect("compress");
        let mut value = vec![kind_code(kind)];
        value.extend(enc.finish().expect("compress"));
        value
    }

    /// A database written before the object index and commit graph existed is converted on open.
    #[test]
    fn format_1_is_upgraded() {
        let dir = tempfile::tempdir().expect("temp dir");
        let repo = RepoId(7);
        let text = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\ncommitter C <c@x> 5 +0000\n\nm\n";
        let id = hash_object(ObjectKind::Commit, text).expect("hash");
        {
            let s = RocksStore::open(dir.path()).expect("open");
            // What format 1 wrote: the object alone, and no format key.
            s.db.put_cf(s.cf(OBJECTS), key(repo, id.as_bytes()), legacy_value(ObjectKind::Commit, text))
                .expect("write");
            s.db.delete(FORMAT_KEY).expect("write");
            assert!(!s.has_many(repo, &[id]).expect("has")[0], "not indexed yet");
        }
        let s = RocksStore::open(dir.path()).expect("reopen");
        assert!(s.has_many(repo, &[id]).expect("has")[0]);
        let c = s.commits(repo, &[id]).expect("commits").pop().flatten().expect("in the graph");
        assert_eq!((c.generation, c.time), (1, 5));
        assert_eq!(s.stats(repo).expect("stats").objects, 1);
        assert_eq!(s.get_many(repo, &[id]).expect("get")[0].as_ref().map(|o| o.data.as_slice()), Some(&text[..]));
    }

    /// A format 2 database (objects, deltas, index, graph and counters in column families, as
    /// the release before packs wrote them) is converted to one pack per repository: every
    /// object reads back, the old values are gone, and the pack is one C git can verify.
    #[test]
    fn format_2_is_converted_to_packs() {
        let dir = tempfile::tempdir().expect("temp dir");
        let blobs: Vec<Vec<u8>> = (0..20).map(|i| format!("blob {i}\n").repeat(i + 1).into_bytes()).collect();
        let tree = b"".to_vec();
        let tree_id = hash_object(ObjectKind::Tree, &tree).expect("hash");
        let commit = format!("tree {tree_id}\ncommitter C <c@x> 5 +0000\n\nm\n").into_bytes();
        let mut objects: Vec<(RepoId, ObjectKind, Vec<u8>)> =
            blobs.iter().map(|b| (RepoId(1), ObjectKind::Blob, b.clone())).collect();
        objects.push((RepoId(1), ObjectKind::Tree, tree.clone()));
        objects.push((RepoId(1), ObjectKind::Commit, commit.clone()));
        objects.push((RepoId(2), ObjectKind::Blob, b"other\n".to_vec()));
        {
            let s = RocksStore::open(dir.path()).expect("open");
            for (repo, kind, data) in &objects {
                let id = hash_object(*kind, data).expect("hash");
                let k = key(*repo, id.as_bytes());
                s.db.put_cf(s.cf(OBJECTS), &k, legacy_value(*kind, data)).expect("write");
                let mut info = vec![kind_code(*kind)];
                info.extend_from_slice(&(data.len() as u64).to_be_bytes());
                s.db.put_cf(s.cf(OBJECT_INDEX), &k, info).expect("write");
            }
            s.db.put_cf(s.cf(DELTAS), key(RepoId(1), tree_id.as_bytes()), [0u8; 24]).expect("write");
            s.db.put(FORMAT_KEY, 2u32.to_be_bytes()).expect("write");
        }
        let s = RocksStore::open(dir.path()).expect("reopen converts");
        for (repo, kind, data) in &objects {
            let id = hash_object(*kind, data).expect("hash");
            let got = s.get_many(*repo, &[id]).expect("get").pop().flatten().expect("converted");
            assert_eq!((got.kind, &got.data), (*kind, data));
            let raw = s.raw_many(*repo, &[id]).expect("raw").pop().flatten().expect("raw entry");
            assert_eq!(raw.kind, RawKind::Whole(*kind));
        }
        assert!(s.db.iterator_cf(s.cf(OBJECTS), IteratorMode::Start).next().is_none());
        assert!(s.db.iterator_cf(s.cf(DELTAS), IteratorMode::Start).next().is_none());
        assert_eq!(s.stats(RepoId(1)).expect("stats").objects, 22);
        let commit_id = hash_object(ObjectKind::Commit, &commit).expect("hash");
        assert!(s.commits(RepoId(1), &[commit_id]).expect("graph")[0].is_some());
        let packs = s.registered_packs().expect("packs");
        assert_eq!(packs.len(), 2, "one pack per repository");
        if std::process::Command::new("git").arg("--version").output().is_ok() {
            for (_, path) in packs {
                let out = std::process::Command::new("git")
                    .args(["verify-pack", "-v"])
                    .arg(path.with_extension("idx"))
                    .output()
                    .expect("git verify-pack");
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            }
        }
        drop(s);
        // Nothing left to convert the next time.
        let s = RocksStore::open(dir.path()).expect("reopen");
        assert_eq!(s.registered_packs().expect("packs").len(), 2);
    }

    /// A flipped byte in a stored pack is found when the object is read, verbatim (the entry's
    /// CRC-32) or resolved (zlib's checksum), and reported as corruption: never handed out.
    #[test]
    fn a_corrupt_pack_byte_is_reported_not_served() {
        let dir = tempfile::tempdir().expect("temp dir");
        let s = RocksStore::open(dir.path()).expect("open");
        let data = b"some text worth keeping\n".repeat(100);
        let id = hash_object(ObjectKind::Blob, &data).expect("hash");
        let other = hash_object(ObjectKind::Blob, b"other").expect("hash");
        s.put(
            RepoId(3),
            &[
                NewObject { id, kind: ObjectKind::Blob, data: data.clone() },
                NewObject { id: other, kind: ObjectKind::Blob, data: b"other".to_vec() },
            ],
        )
        .expect("put");
        let location = s.locations(RepoId(3), &[id]).expect("index")[0].expect("indexed");
        let (_, path) = s.registered_packs().expect("packs").pop().expect("a pack");
        let mut bytes = fs::read(&path).expect("read");
        bytes[(location.offset + location.end) as usize / 2] ^= 0x20;
        fs::write(&path, bytes).expect("write");
        drop(s);
        let s = RocksStore::open(dir.path()).expect("reopen");
        assert!(matches!(s.raw_many(RepoId(3), &[id]), Err(Error::Corrupt(_))));
        assert!(matches!(s.get_many(RepoId(3), &[id]), Err(Error::Corrupt(_))));
        assert_eq!(
            s.get_many(RepoId(3), &[other]).expect("the other object is intact")[0].as_ref().map(|o| o.data.clone()),
            Some(b"other".to_vec())
        );
    }

    /// A crash between writing a pack and registering it leaves a file nobody indexed: removed
    /// on open, as is a push spooled to `incoming/`.
    #[test]
    fn leftovers_of_a_crash_are_removed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let orphan = dir.path().join("packs/9/pack-0000000000000000000000000000000000000000.pack");
        {
            let s = RocksStore::open(dir.path()).expect("open");
            s.put(
                RepoId(9),
                &[NewObject {
                    id: hash_object(ObjectKind::Blob, b"x").expect("hash"),
                    kind: ObjectKind::Blob,
                    data: b"x".to_vec(),
                }],
            )
            .expect("put");
            fs::write(&orphan, b"PACK").expect("orphan");
            fs::write(s.incoming_dir().join("push-1.pack"), b"PACK").expect("spooled");
        }
        let s = RocksStore::open(dir.path()).expect("reopen");
        assert!(!orphan.exists());
        assert_eq!(fs::read_dir(s.incoming_dir()).expect("incoming").count(), 0);
        assert!(s.has_many(RepoId(9), &[hash_object(ObjectKind::Blob, b"x").expect("hash")]).expect("has")[0]);
    }
}
