//! RocksDB storage, the single-node engine (seed 001's column families).
//!
//! | column family | key | value |
//! | --- | --- | --- |
//! | `objects` | repo ‖ oid | kind ‖ zlib(data) |
//! | `deltas` | repo ‖ oid | base oid ‖ delta |
//! | `refs` | repo ‖ ref name | oid |
//! | `repo_config` | repo ‖ `HEAD` | symbolic ref target |
//! | `events` | seq (u64, big-endian) | the ref-change event |
//!
//! Durability: object batches and ref batches are written with `sync`, so once `update` returns
//! the refs, their events and the objects they point to survive a crash or power loss. A ref
//! batch holds the refs and their events in one `WriteBatch`: both or neither.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use flate2::Compression;
use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;
use gitstratum_git::{ObjectId, ObjectKind};
use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType, Direction, IteratorMode, Options, WriteBatch,
    WriteOptions,
};

use crate::{
    Actor, Conflict, Error, NewObject, Object, ObjectStore, RefEvent, RefStore, RefUpdate, RepoId, Result, StoredDelta,
};

const OBJECTS: &str = "objects";
const DELTAS: &str = "deltas";
const REFS: &str = "refs";
const REPO_CONFIG: &str = "repo_config";
const EVENTS: &str = "events";

pub struct RocksStore {
    db: DB,
    /// Serializes compare-and-swap of refs (RocksDB writes are atomic, the read-check-write is not).
    ref_lock: Mutex<()>,
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
        let cf = |name: &str, compression: DBCompressionType| {
            let mut o = Options::default();
            o.set_compression_type(compression);
            ColumnFamilyDescriptor::new(name, o)
        };
        let cfs = vec![
            // Object values are zlib-compressed already.
            cf(OBJECTS, DBCompressionType::None),
            cf(DELTAS, DBCompressionType::Lz4),
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
        Ok(RocksStore { db, ref_lock: Mutex::new(()), last_seq: AtomicU64::new(last_seq) })
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

impl ObjectStore for RocksStore {
    fn put(&self, repo: RepoId, objects: &[NewObject]) -> Result<()> {
        let mut batch = WriteBatch::default();
        for o in objects {
            let mut enc = ZlibEncoder::new(Vec::with_capacity(o.data.len() / 2 + 16), Compression::fast());
            enc.write_all(&o.data).map_err(|e| Error::Backend(e.to_string()))?;
            let mut value = vec![kind_code(o.kind)];
            value.extend(enc.finish().map_err(|e| Error::Backend(e.to_string()))?);
            batch.put_cf(self.cf(OBJECTS), key(repo, o.id.as_bytes()), value);
            if let Some(d) = &o.delta {
                let mut value = d.base.as_bytes().to_vec();
                value.extend_from_slice(&d.delta);
                batch.put_cf(self.cf(DELTAS), key(repo, o.id.as_bytes()), value);
            }
        }
        self.db.write_opt(batch, &Self::synced()).map_err(backend)
    }

    fn get_many(&self, repo: RepoId, ids: &[ObjectId]) -> Result<Vec<Option<Object>>> {
        let keys: Vec<Vec<u8>> = ids.iter().map(|id| key(repo, id.as_bytes())).collect();
        let cf = self.cf(OBJECTS);
        let mut out = Vec::with_capacity(ids.len());
        for (i, value) in self.db.batched_multi_get_cf(cf, &keys, false).into_iter().enumerate() {
            let Some(value) = value.map_err(backend)? else {
                out.push(None);
                continue;
            };
            let (&code, compressed) =
                value.split_first().ok_or_else(|| Error::Corrupt(format!("empty value for object {}", ids[i])))?;
            let kind =
                kind_from_code(code).ok_or_else(|| Error::Corrupt(format!("object {} has kind {code}", ids[i])))?;
            let mut data = Vec::new();
            ZlibDecoder::new(compressed)
                .read_to_end(&mut data)
                .map_err(|e| Error::Corrupt(format!("object {}: {e}", ids[i])))?;
            out.push(Some(Object { kind, data }));
        }
        Ok(out)
    }

    fn has_many(&self, repo: RepoId, ids: &[ObjectId]) -> Result<Vec<bool>> {
        let keys: Vec<Vec<u8>> = ids.iter().map(|id| key(repo, id.as_bytes())).collect();
        self.db
            .batched_multi_get_cf(self.cf(OBJECTS), &keys, false)
            .into_iter()
            .map(|v| v.map(|v| v.is_some()).map_err(backend))
            .collect()
    }

    fn deltas(&self, repo: RepoId, ids: &[ObjectId]) -> Result<Vec<Option<StoredDelta>>> {
        let keys: Vec<Vec<u8>> = ids.iter().map(|id| key(repo, id.as_bytes())).collect();
        self.db
            .batched_multi_get_cf(self.cf(DELTAS), &keys, false)
            .into_iter()
            .map(|v| {
                let Some(v) = v.map_err(backend)? else { return Ok(None) };
                if v.len() < 20 {
                    return Err(Error::Corrupt("short delta record".into()));
                }
                Ok(Some(StoredDelta { base: oid_from(&v[..20])?, delta: v[20..].to_vec() }))
            })
            .collect()
    }

    fn delete_repo(&self, repo: RepoId) -> Result<()> {
        let start = repo.key_prefix();
        let end = RepoId(repo.0 + 1).key_prefix();
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(OBJECTS), start, end);
        batch.delete_range_cf(self.cf(DELTAS), start, end);
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
