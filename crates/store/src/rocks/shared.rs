//! Forks share their parent's packs: files, index and all.
//!
//! Forking hard-links every pack file of the parent (`.pack`, `.idx`, and the `.reach` bitmaps)
//! under the fork's directory and registers the links as the fork's packs, marked **shared**.
//! The fork's object index stays empty for them: it lists them as **inherited** (`repo_config`
//! key `\0inherited` → their pack numbers), and a lookup the object index misses is answered from
//! the inherited packs' own `.idx` files (offset and CRC-32 there; kind, size and delta base
//! read from the entry headers, as C git reads a pack through its `.idx`). Only the commit graph
//! (about 85 bytes a commit) and the counters are copied. So forking costs a few directory
//! entries and one batch of the commit graph; the pack and index bytes on disk are the parent's.
//!
//! Shared packs stay shared: maintenance never rewrites or removes a shared pack, in the fork
//! or in the parent (whose packs are marked shared by the fork), so a repack on either side does
//! not turn the shared bytes into two copies. Their objects are never pruned (a network keeps
//! what it once held, as GitHub's and GitLab's object pools do; an object pruned from a pack of
//! a side's own that a shared pack also holds is pointed at the shared copy), and the bitmaps of
//! the main pack at the time of the fork stay the bitmaps of both (newer objects are walked).
//! Each side still reads only what its own registrations hold: the fork cannot read what the
//! parent receives after the fork, nor the parent the fork's.
//!
//! Deleting either side removes its registrations and its links; the other's links keep the
//! bytes.

use std::collections::HashMap;
use std::fs::{self, File};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use gitstratum_git::packfile::{self, Header};
use gitstratum_git::{ObjectId, ObjectKind};
use rocksdb::WriteBatch;

use super::{
    COMMIT_GRAPH, Location, MAX_CHAIN, MAX_REF_NESTING, PACKS, REPO_CONFIG, REPO_STATS, RocksStore, backend,
    encode_registry, io_error, key, kind_from_code, sync_dir,
};
use crate::{Error, ObjectInfo, RepoId, Result};

/// Key (after the repository) in `repo_config` of the packs whose objects the object index
/// does not list: pack numbers (u64 each).
pub(super) const INHERITED_KEY: &[u8] = b"\0inherited";
/// Entries of inherited packs' indexes kept in memory at once (about 48 bytes each).
const TABLE_ENTRIES: usize = 2 << 20;

/// An inherited pack's index, read from its `.idx`; each entry's kind and size are read from
/// the pack the first time they are asked for, and kept.
pub(super) struct PackTable {
    /// Object ids, sorted (the index's order); a position is an index into these.
    ids: Vec<ObjectId>,
    offsets: Vec<u64>,
    crcs: Vec<u32>,
    /// Positions sorted by offset.
    by_offset: Vec<u32>,
    /// Each position's place in `by_offset`.
    rank: Vec<u32>,
    /// Where the last entry ends (before the pack's trailing checksum).
    data_end: u64,
    /// Kind code << 60 | size, or 0 while not read.
    info: Vec<AtomicU64>,
}

impl PackTable {
    /// Reads a pack's index (`idx`, of a pack of `pack_len` bytes), checking that its entries
    /// neither overlap nor run past the pack.
    pub(super) fn read(idx: &[u8], pack_len: u64) -> std::result::Result<PackTable, String> {
        let (entries, _) = packfile::read_idx(idx).map_err(|e| e.to_string())?;
        let n = entries.len();
        let mut by_offset: Vec<u32> = (0..n).map(|i| i as u32).collect();
        by_offset.sort_unstable_by_key(|i| entries[*i as usize].offset);
        let mut rank = vec![0u32; n];
        for (r, i) in by_offset.iter().enumerate() {
            rank[*i as usize] = r as u32;
        }
        let data_end = pack_len.saturating_sub(20);
        let sorted = by_offset.iter().map(|i| entries[*i as usize].offset);
        if sorted.clone().next().is_some_and(|first| first < 12)
            || sorted.clone().zip(sorted.skip(1)).any(|(a, b)| a >= b)
            || by_offset.last().is_some_and(|i| entries[*i as usize].offset >= data_end)
        {
            return Err("entries overlap or run past the pack".to_owned());
        }
        Ok(PackTable {
            ids: entries.iter().map(|e| e.id).collect(),
            offsets: entries.iter().map(|e| e.offset).collect(),
            crcs: entries.iter().map(|e| e.crc32).collect(),
            by_offset,
            rank,
            data_end,
            info: (0..n).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    /// Every entry in pack order: id, offset, end, CRC-32.
    pub(super) fn in_pack_order(&self) -> impl Iterator<Item = (ObjectId, u64, u64, u32)> + '_ {
        self.by_offset.iter().map(|p| {
            let p = *p as usize;
            (self.ids[p], self.offsets[p], self.end(p), self.crcs[p])
        })
    }

    fn find(&self, id: &ObjectId) -> Option<usize> {
        self.ids.binary_search(id).ok()
    }

    fn at_offset(&self, offset: u64) -> Option<usize> {
        self.by_offset
            .binary_search_by_key(&offset, |i| self.offsets[*i as usize])
            .ok()
            .map(|r| self.by_offset[r] as usize)
    }

    fn end(&self, pos: usize) -> u64 {
        match self.by_offset.get(self.rank[pos] as usize + 1) {
            Some(next) => self.offsets[*next as usize],
            None => self.data_end,
        }
    }

    fn info(&self, pos: usize) -> Option<(ObjectKind, u64)> {
        let v = self.info[pos].load(Ordering::Relaxed);
        kind_from_code((v >> 60) as u8).map(|kind| (kind, v & ((1 << 60) - 1)))
    }

    fn set_info(&self, pos: usize, kind: ObjectKind, size: u64) {
        if size < 1 << 60 {
            self.info[pos].store(u64::from(kind.pack_type()) << 60 | size, Ordering::Relaxed);
        }
    }
}

/// The loaded tables, by pack number, and how many entries they hold together.
#[derive(Default)]
pub(super) struct Tables {
    loaded: HashMap<u64, Arc<PackTable>>,
    entries: usize,
}

impl Tables {
    pub(super) fn forget(&mut self, number: u64) {
        if let Some(t) = self.loaded.remove(&number) {
            self.entries -= t.ids.len();
        }
    }
}

fn decode_inherited(repo: RepoId, v: &[u8]) -> Result<Vec<u64>> {
    if !v.len().is_multiple_of(8) {
        return Err(Error::Corrupt(format!("inherited packs of repository {}", repo.0)));
    }
    Ok(v.chunks(8).map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes"))).collect())
}

impl RocksStore {
    /// The packs of `repo` its object index does not list (see the module).
    pub(super) fn inherited(&self, repo: RepoId) -> Result<Vec<u64>> {
        match self.db.get_cf(self.cf(REPO_CONFIG), key(repo, INHERITED_KEY)).map_err(backend)? {
            Some(v) => decode_inherited(repo, &v),
            None => Ok(Vec::new()),
        }
    }

    /// Pack `number`'s table and open file; `None` when it is not registered.
    fn table(&self, number: u64) -> Result<Option<(Arc<PackTable>, Arc<File>)>> {
        let Some(file) = self.pack_file(number)? else { return Ok(None) };
        if let Some(t) = self.tables.lock().unwrap_or_else(std::sync::PoisonError::into_inner).loaded.get(&number) {
            return Ok(Some((t.clone(), file)));
        }
        let Some(value) = self.db.get_cf(self.cf(PACKS), number.to_be_bytes()).map_err(backend)? else {
            return Ok(None);
        };
        let idx = self.pack_path_of(&value)?.with_extension("idx");
        let bytes = fs::read(&idx).map_err(|e| Error::Corrupt(format!("pack index {}: {e}", idx.display())))?;
        let len = file.metadata().map_err(io_error("reading a pack"))?.len();
        let table = Arc::new(
            PackTable::read(&bytes, len).map_err(|e| Error::Corrupt(format!("pack index {}: {e}", idx.display())))?,
        );
        let mut tables = self.tables.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Another reader loaded it meanwhile.
        if let Some(t) = tables.loaded.get(&number) {
            return Ok(Some((t.clone(), file)));
        }
        // A bound on memory: past it, start over (readers keep the tables they hold).
        if tables.entries + table.ids.len() > TABLE_ENTRIES {
            *tables = Tables::default();
        }
        tables.entries += table.ids.len();
        tables.loaded.insert(number, table.clone());
        Ok(Some((table, file)))
    }

    /// Where `id` is in one of the packs `numbers` (of `repo`), read through their indexes.
    /// `depth` counts REF delta bases looked up one inside the other (a bound on recursion).
    pub(super) fn location_in(
        &self,
        repo: RepoId,
        numbers: &[u64],
        id: &ObjectId,
        depth: usize,
    ) -> Result<Option<Location>> {
        for number in numbers {
            let Some((table, file)) = self.table(*number)? else { continue };
            let Some(pos) = table.find(id) else { continue };
            let offset = table.offsets[pos];
            let corrupt = |e: gitstratum_git::pack::ReadError| Error::Corrupt(format!("pack {number}: {e}"));
            let header = packfile::header_at(&*file, offset).map_err(corrupt)?;
            let base = match header.header {
                Header::Whole(_) => None,
                Header::OfsDelta { base_offset } => Some(
                    table.ids[table.at_offset(base_offset).ok_or_else(|| {
                        Error::Corrupt(format!("pack {number} at offset {offset}: the delta base is not an entry"))
                    })?],
                ),
                Header::RefDelta { base } => Some(base),
            };
            let (kind, size) = self.table_info(repo, *number, &table, &file, pos, depth)?;
            return Ok(Some(Location {
                kind,
                size,
                pack: *number,
                offset,
                end: table.end(pos),
                crc32: table.crcs[pos],
                base,
            }));
        }
        Ok(None)
    }

    /// Kind and size of `id` in one of the inherited packs `numbers`.
    pub(super) fn inherited_info(&self, repo: RepoId, numbers: &[u64], id: &ObjectId) -> Result<Option<ObjectInfo>> {
        for number in numbers {
            let Some((table, file)) = self.table(*number)? else { continue };
            if let Some(pos) = table.find(id) {
                let (kind, size) = self.table_info(repo, *number, &table, &file, pos, 0)?;
                return Ok(Some(ObjectInfo { kind, size }));
            }
        }
        Ok(None)
    }

    /// Kind and size of the entry at `pos`: a whole object's from its header; a delta's size
    /// from the delta's header, its kind its base's (down the chain, every link's kept).
    fn table_info(
        &self,
        repo: RepoId,
        number: u64,
        table: &PackTable,
        file: &File,
        pos: usize,
        depth: usize,
    ) -> Result<(ObjectKind, u64)> {
        if let Some(info) = table.info(pos) {
            return Ok(info);
        }
        let corrupt = |e: gitstratum_git::pack::ReadError| Error::Corrupt(format!("pack {number}: {e}"));
        let malformed =
            |at: usize, what: String| Error::Corrupt(format!("pack {number} at offset {}: {what}", table.offsets[at]));
        // The deltas on the way down, with where each one's data starts.
        let mut chain: Vec<(usize, u64)> = Vec::new();
        let mut at = pos;
        let kind = loop {
            if let Some((kind, _)) = table.info(at) {
                break kind;
            }
            if chain.len() > MAX_CHAIN {
                return Err(malformed(pos, "the delta chain is too deep".into()));
            }
            let offset = table.offsets[at];
            let header = packfile::header_at(file, offset).map_err(corrupt)?;
            let data = offset + header.header_len;
            match header.header {
                Header::Whole(kind) => {
                    table.set_info(at, kind, header.size);
                    if chain.is_empty() {
                        return Ok((kind, header.size));
                    }
                    break kind;
                }
                Header::OfsDelta { base_offset } => {
                    chain.push((at, data));
                    at = table
                        .at_offset(base_offset)
                        .ok_or_else(|| malformed(at, "the delta base is not an entry".into()))?;
                }
                Header::RefDelta { base } => {
                    chain.push((at, data));
                    if let Some(p) = table.find(&base) {
                        at = p;
                        continue;
                    }
                    if depth >= MAX_REF_NESTING {
                        return Err(malformed(at, "REF delta bases nest too deep".into()));
                    }
                    let found = self.locations_nested(repo, &[base], depth + 1)?.pop().flatten();
                    break found.ok_or_else(|| malformed(at, format!("delta base {base} is missing")))?.kind;
                }
            }
        };
        let mut answer = None;
        for (p, data) in chain {
            let size = packfile::delta_result_size_at(file, data, table.offsets[p]).map_err(corrupt)?;
            table.set_info(p, kind, size);
            if p == pos {
                answer = Some((kind, size));
            }
        }
        answer.ok_or_else(|| malformed(pos, "the entry was not read".into()))
    }

    /// Forks `from` into `to` (see the module): one synced batch under the put lock, after the
    /// links are in place and synced.
    pub(super) fn fork_shared(&self, from: RepoId, to: RepoId) -> Result<()> {
        // Under the put lock no batch registers or unregisters a pack (pushes, maintenance), so
        // the registry read here is current and every file it names is in place.
        let _guard = self.put_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let dir = self.packs_dir.join(to.0.to_string());
        fs::create_dir_all(&dir).map_err(io_error("creating a pack directory"))?;
        let mut batch = WriteBatch::default();
        let mut numbers = HashMap::new();
        let mut inherited = Vec::new();
        for record in self.pack_records()?.into_iter().filter(|r| r.repo == from) {
            let source = self.pack_path(from, &record.checksum);
            let target = self.pack_path(to, &record.checksum);
            for ext in ["idx", "reach", "pack"] {
                let (source, target) = (source.with_extension(ext), target.with_extension(ext));
                if ext == "reach" && !source.exists() {
                    continue;
                }
                let _ = fs::remove_file(&target);
                if fs::hard_link(&source, &target).is_err() {
                    fs::copy(&source, &target).map_err(io_error("copying a pack for a fork"))?;
                    File::open(&target).and_then(|f| f.sync_all()).map_err(io_error("syncing a pack"))?;
                }
            }
            let number = self.next_pack.fetch_add(1, Ordering::SeqCst);
            numbers.insert(record.number, number);
            inherited.extend_from_slice(&number.to_be_bytes());
            batch.put_cf(
                self.cf(PACKS),
                number.to_be_bytes(),
                encode_registry(to, &record.checksum, record.cruft_since_ms, true),
            );
            if !record.shared {
                batch.put_cf(
                    self.cf(PACKS),
                    record.number.to_be_bytes(),
                    encode_registry(from, &record.checksum, record.cruft_since_ms, true),
                );
            }
        }
        sync_dir(&dir)?;
        sync_dir(&self.packs_dir)?;
        // Every object `from` holds is in these packs: those its index lists, and those of its
        // own inherited packs.
        batch.put_cf(self.cf(REPO_CONFIG), key(to, INHERITED_KEY), inherited);
        if let Some(v) = self.db.get_cf(self.cf(REPO_CONFIG), key(from, super::reach::REACH_KEY)).map_err(backend)?
            && let Some(n) = v.as_slice().try_into().ok().map(u64::from_be_bytes).and_then(|n| numbers.get(&n))
        {
            batch.put_cf(self.cf(REPO_CONFIG), key(to, super::reach::REACH_KEY), n.to_be_bytes());
        }
        for (k, v) in self.keys_with_prefix(COMMIT_GRAPH, &from.key_prefix())? {
            batch.put_cf(self.cf(COMMIT_GRAPH), key(to, &k[8..]), v);
        }
        if let Some(stats) = self.db.get_cf(self.cf(REPO_STATS), from.key_prefix()).map_err(backend)? {
            batch.put_cf(self.cf(REPO_STATS), to.key_prefix(), stats);
        }
        self.db.write_opt(batch, &Self::synced()).map_err(backend)
    }
}
