//! RocksDB storage, the single-node engine (seed 001's column families).
//!
//! | column family | key | value |
//! | --- | --- | --- |
//! | `objects` | repo ‖ oid | kind ‖ zlib(data) |
//! | `deltas` | repo ‖ oid | base oid ‖ delta |
//! | `object_index` | repo ‖ oid | kind ‖ size (u64) |
//! | `commit_graph` | repo ‖ oid | tree ‖ generation (u32) ‖ time (i64) ‖ parents |
//! | `repo_stats` | repo | objects (u64) ‖ bytes (u64) |
//! | `refs` | repo ‖ ref name | oid |
//! | `repo_config` | repo ‖ `HEAD` | symbolic ref target |
//! | `events` | seq (u64) | the ref-change event |
//! | `pack_cache` | reserved for cached packs of hot clones | |
//!
//! Integers are big-endian. Durability: object batches and ref batches are written with `sync`,
//! so once `update` returns the refs, their events and the objects they point to survive a crash
//! or power loss. An object batch holds the objects with their index, commit graph and counter
//! entries; a ref batch holds the refs and their events: each is all or nothing.
//!
//! Data written before the object index and commit graph existed (format 1) is indexed once
//! when the database is opened.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use flate2::Compression;
use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;
use gitstratum_git::{ObjectId, ObjectKind};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType, Direction, IteratorMode,
    Options, WriteBatch, WriteOptions,
};

use crate::{
    Actor, CommitInfo, Conflict, Error, NewObject, Object, ObjectInfo, ObjectStore, RefEvent, RefStore, RefUpdate,
    RepoId, RepoStats, Result, StoredDelta, commit_records,
};

const OBJECTS: &str = "objects";
const DELTAS: &str = "deltas";
const OBJECT_INDEX: &str = "object_index";
const COMMIT_GRAPH: &str = "commit_graph";
const REPO_STATS: &str = "repo_stats";
const PACK_CACHE: &str = "pack_cache";
/// One block cache shared by every column family.
const BLOCK_CACHE_BYTES: usize = 64 << 20;
/// All memtables together (RocksDB flushes the largest when they reach it).
const MEMTABLE_BUDGET: usize = 64 << 20;
const REFS: &str = "refs";
const REPO_CONFIG: &str = "repo_config";
const EVENTS: &str = "events";

/// Key of the storage format version, in the default column family.
const FORMAT_KEY: &[u8] = b"format";
/// Format 2 added `object_index`, `commit_graph` and `repo_stats`.
const FORMAT: u32 = 2;

pub struct RocksStore {
    db: DB,
    /// Serializes compare-and-swap of refs (RocksDB writes are atomic, the read-check-write is not).
    ref_lock: Mutex<()>,
    /// Serializes object batches, whose counters are read, added to and written back.
    put_lock: Mutex<()>,
    last_seq: AtomicU64,
}

fn backend(e: rocksdb::Error) -> Error {
    Error::Backend(e.to_string())
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

impl RocksStore {
    /// Opens (creating when missing) the database in `path`.
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
            // Object values are zlib-compressed already.
            cf(OBJECTS, DBCompressionType::None),
            cf(DELTAS, DBCompressionType::Lz4),
            cf(OBJECT_INDEX, DBCompressionType::Lz4),
            cf(COMMIT_GRAPH, DBCompressionType::Lz4),
            cf(REPO_STATS, DBCompressionType::None),
            cf(PACK_CACHE, DBCompressionType::None),
            cf(REFS, DBCompressionType::Lz4),
            cf(REPO_CONFIG, DBCompressionType::Lz4),
            cf(EVENTS, DBCompressionType::Lz4),
        ];
        let db = DB::open_cf_descriptors(&db_opts, path, cfs).map_err(backend)?;
        let last_seq = {
            let events = db.cf_handle(EVENTS).ok_or_else(|| Error::Corrupt("missing events column family".into()))?;
            match db.iterator_cf(events, IteratorMode::End).next() {
                Some(Ok((k, _))) => {
                    u64::from_be_bytes(k.as_ref().try_into().map_err(|_| Error::Corrupt("event key".into()))?)
                }
                Some(Err(e)) => return Err(backend(e)),
                None => 0,
            }
        };
        let store =
            RocksStore { db, ref_lock: Mutex::new(()), put_lock: Mutex::new(()), last_seq: AtomicU64::new(last_seq) };
        store.upgrade()?;
        Ok(store)
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
        if version < 2 {
            self.reindex()?;
        }
        self.db.put(FORMAT_KEY, FORMAT.to_be_bytes()).map_err(backend)
    }

    /// Rebuilds the object index, commit graph and counters from the objects, one repository at
    /// a time with all its objects in one batch (so generation numbers see the whole history).
    /// A one-time cost, in memory proportional to the largest repository.
    fn reindex(&self) -> Result<()> {
        let mut pending: Vec<NewObject> = Vec::new();
        let mut current: Option<RepoId> = None;
        for item in self.db.iterator_cf(self.cf(OBJECTS), IteratorMode::Start) {
            let (k, v) = item.map_err(backend)?;
            let (repo, id) = split_object_key(&k)?;
            if let Some(c) = current.filter(|c| *c != repo) {
                self.put(c, &std::mem::take(&mut pending))?;
            }
            current = Some(repo);
            let object = decode_object(&id, &v)?;
            pending.push(NewObject { id, kind: object.kind, data: object.data, delta: None });
        }
        if let Some(c) = current {
            self.put(c, &pending)?;
        }
        Ok(())
    }

    fn cf(&self, name: &str) -> &ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column families are created in open, because create_missing_column_families is set")
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

    /// Flushes memtables and the WAL (for a clean shutdown).
    pub fn flush(&self) -> Result<()> {
        self.db.flush_wal(true).map_err(backend)?;
        self.db.flush().map_err(backend)
    }
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

fn encode_info(info: ObjectInfo) -> [u8; 9] {
    let mut v = [0; 9];
    v[0] = kind_code(info.kind);
    v[1..].copy_from_slice(&info.size.to_be_bytes());
    v
}

fn decode_info(id: &ObjectId, v: &[u8]) -> Result<ObjectInfo> {
    let corrupt = || Error::Corrupt(format!("object index entry of {id}"));
    if v.len() != 9 {
        return Err(corrupt());
    }
    let kind = kind_from_code(v[0]).ok_or_else(corrupt)?;
    Ok(ObjectInfo { kind, size: u64::from_be_bytes(v[1..].try_into().map_err(|_| corrupt())?) })
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
    fn put(&self, repo: RepoId, objects: &[NewObject]) -> Result<()> {
        let _guard = self.put_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let ids: Vec<ObjectId> = objects.iter().map(|o| o.id).collect();
        let stored = self.has_many(repo, &ids)?;
        let new: Vec<&NewObject> = objects.iter().zip(stored).filter(|(_, s)| !s).map(|(o, _)| o).collect();
        if new.is_empty() {
            return Ok(());
        }
        let records = commit_records(objects, |parents| {
            self.commits(repo, parents).map(|c| c.into_iter().map(|c| c.map(|c| c.generation)).collect())
        })?;
        let mut stats = self.stats(repo)?;
        let mut batch = WriteBatch::default();
        let mut seen = std::collections::HashSet::with_capacity(new.len());
        for o in new {
            if !seen.insert(o.id) {
                continue;
            }
            let k = key(repo, o.id.as_bytes());
            let mut enc = ZlibEncoder::new(Vec::with_capacity(o.data.len() / 2 + 16), Compression::fast());
            enc.write_all(&o.data).map_err(|e| Error::Backend(e.to_string()))?;
            let mut value = vec![kind_code(o.kind)];
            value.extend(enc.finish().map_err(|e| Error::Backend(e.to_string()))?);
            batch.put_cf(self.cf(OBJECTS), &k, value);
            batch.put_cf(
                self.cf(OBJECT_INDEX),
                &k,
                encode_info(ObjectInfo { kind: o.kind, size: o.data.len() as u64 }),
            );
            if let Some(d) = &o.delta {
                let mut value = d.base.as_bytes().to_vec();
                value.extend_from_slice(&d.delta);
                batch.put_cf(self.cf(DELTAS), &k, value);
            }
            stats.objects += 1;
            stats.bytes += o.data.len() as u64;
        }
        for (id, info) in &records {
            batch.put_cf(self.cf(COMMIT_GRAPH), key(repo, id.as_bytes()), encode_commit(info));
        }
        let mut counters = [0u8; 16];
        counters[..8].copy_from_slice(&stats.objects.to_be_bytes());
        counters[8..].copy_from_slice(&stats.bytes.to_be_bytes());
        batch.put_cf(self.cf(REPO_STATS), repo.key_prefix(), counters);
        self.db.write_opt(batch, &Self::synced()).map_err(backend)
    }

    fn get_many(&self, repo: RepoId, ids: &[ObjectId]) -> Result<Vec<Option<Object>>> {
        self.multi_get(OBJECTS, repo, ids, decode_object)
    }

    fn info_many(&self, repo: RepoId, ids: &[ObjectId]) -> Result<Vec<Option<ObjectInfo>>> {
        self.multi_get(OBJECT_INDEX, repo, ids, decode_info)
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

    fn deltas(&self, repo: RepoId, ids: &[ObjectId]) -> Result<Vec<Option<StoredDelta>>> {
        self.multi_get(DELTAS, repo, ids, |id, v| {
            if v.len() < 20 {
                return Err(Error::Corrupt(format!("short delta record of {id}")));
            }
            Ok(StoredDelta { base: oid_from(&v[..20])?, delta: v[20..].to_vec() })
        })
    }

    fn delete_repo(&self, repo: RepoId) -> Result<()> {
        let start = repo.key_prefix();
        let end = RepoId(repo.0 + 1).key_prefix();
        let mut batch = WriteBatch::default();
        for cf in [OBJECTS, DELTAS, OBJECT_INDEX, COMMIT_GRAPH, PACK_CACHE] {
            batch.delete_range_cf(self.cf(cf), start, end);
        }
        batch.delete_cf(self.cf(REPO_STATS), start);
        self.db.write_opt(batch, &Self::synced()).map_err(backend)
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
            let k = key(repo, u.name.as_bytes());
            match u.new {
                Some(id) => batch.put_cf(self.cf(REFS), k, id.as_bytes()),
                None => batch.delete_cf(self.cf(REFS), k),
            }
            seq += 1;
            let event = RefEvent {
                seq,
                repo,
                name: u.name.clone(),
                old: u.old,
                new: u.new,
                pusher: actor.name.clone(),
                time_ms: actor.time_ms,
            };
            batch.put_cf(self.cf(EVENTS), seq.to_be_bytes(), encode_event(&event));
            events.push(event);
        }
        self.db.write_opt(batch, &Self::synced()).map_err(backend)?;
        // Published only after the write is durable, under the lock.
        self.last_seq.store(seq, Ordering::SeqCst);
        Ok(Ok(events))
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
    use gitstratum_git::hash_object;

    /// A database written before the object index and commit graph existed is indexed on open.
    #[test]
    fn format_1_is_upgraded() {
        let dir = tempfile::tempdir().expect("temp dir");
        let repo = RepoId(7);
        let text = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\ncommitter C <c@x> 5 +0000\n\nm\n";
        let id = hash_object(ObjectKind::Commit, text).expect("hash");
        {
            let s = RocksStore::open(dir.path()).expect("open");
            // What format 1 wrote: the object alone, and no format key.
            let mut enc = ZlibEncoder::new(Vec::new(), Compression::fast());
            enc.write_all(text).expect("compress");
            let mut value = vec![kind_code(ObjectKind::Commit)];
            value.extend(enc.finish().expect("compress"));
            s.db.put_cf(s.cf(OBJECTS), key(repo, id.as_bytes()), value).expect("write");
            s.db.delete(FORMAT_KEY).expect("write");
            assert!(!s.has_many(repo, &[id]).expect("has")[0], "not indexed yet");
        }
        let s = RocksStore::open(dir.path()).expect("reopen");
        assert!(s.has_many(repo, &[id]).expect("has")[0]);
        let c = s.commits(repo, &[id]).expect("commits").pop().flatten().expect("in the graph");
        assert_eq!((c.generation, c.time), (1, 5));
        assert_eq!(s.stats(repo).expect("stats").objects, 1);
    }
}
