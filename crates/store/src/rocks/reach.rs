//! Reachability bitmaps of a repository's main pack (what `git repack -b` writes, in a format of
//! our own): for selected commits (the branch and tag tips at the last full repack), the set of the main
//! pack's objects each reaches, one bit per object in pack order. A clone then unions the
//! bitmaps of the commits it reaches instead of reading every tree of the history, and walks
//! only what is newer than the last full repack.
//!
//! File `pack-<checksum>.reach` beside the pack, written durably before the batch that makes
//! the pack the repository's main pack (`repo_config` key `\0reach` → pack number):
//!
//! ```text
//! "GSRB" ‖ version (u32 = 1) ‖ n (u32) ‖ n object ids (pack order) ‖ n kinds (pack type codes)
//! ‖ m (u32) ‖ m × (commit id ‖ length (u32) ‖ bitmap) ‖ SHA-1 of everything before
//! ```
//!
//! A bitmap is run-length encoded: varints of alternating runs of clear and set bits, starting
//! with clear. A file that does not check out is ignored (the walk answers instead).

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::Arc;

use gitstratum_git::{ObjectId, ObjectKind, delta, parse};

use super::{RocksStore, backend, io_error, key, kind_from_code, oid_from};
use crate::{Error, ObjectStore, PackReuse, Reachable, RepoId, Result, ReuseEntry};

/// Key (after the repository) in `repo_config` of the pack whose bitmaps are current.
pub(super) const REACH_KEY: &[u8] = b"\0reach";
/// Bitmaps written at most per full repack (ref tips beyond it are walked at clone time).
const MAX_BITMAPS: usize = 2000;
/// Loaded bitmap files kept in memory (tokio's, for 395 tags and 75 branches over 153,681
/// objects, is 11 MB on disk and about 17 MB loaded).
const CACHED: usize = 4;

/// A dense set of positions.
#[derive(Clone)]
pub(super) struct Bits(Vec<u64>);

impl Bits {
    pub(super) fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }

    pub(super) fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    pub(super) fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }

    fn ones(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(w, word)| {
            let mut word = *word;
            std::iter::from_fn(move || {
                if word == 0 {
                    return None;
                }
                let bit = word.trailing_zeros() as usize;
                word &= word - 1;
                Some(w * 64 + bit)
            })
        })
    }

    /// Run-length encoding over the first `n` positions.
    fn encode(&self, n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let (mut at, mut want) = (0, false);
        while at < n {
            let start = at;
            while at < n && self.get(at) == want {
                at += 1;
            }
            delta::write_varint(&mut out, (at - start) as u64);
            want = !want;
        }
        out
    }

    /// Adds the positions of an encoded bitmap.
    /// Sets positions `from..to`, a word at a time (a clone ORs hundreds of bitmaps whose runs
    /// span thousands of objects).
    fn set_range(&mut self, from: usize, to: usize) {
        if from >= to {
            return;
        }
        let (first, last) = (from / 64, (to - 1) / 64);
        let head = !0u64 << (from % 64);
        let tail = !0u64 >> (63 - (to - 1) % 64);
        if first == last {
            self.0[first] |= head & tail;
            return;
        }
        self.0[first] |= head;
        for word in &mut self.0[first + 1..last] {
            *word = !0;
        }
        self.0[last] |= tail;
    }

    fn or_encoded(&mut self, data: &[u8], n: usize) -> Result<()> {
        let (mut at, mut set, mut pos) = (0usize, false, 0usize);
        while pos < data.len() {
            let run = delta::read_varint(data, &mut pos).map_err(|_| corrupt("truncated run"))?;
            let run = usize::try_from(run).map_err(|_| corrupt("run"))?;
            let end = at.checked_add(run).filter(|e| *e <= n).ok_or_else(|| corrupt("run past the end"))?;
            if set {
                self.set_range(at, end);
            }
            at = end;
            set = !set;
        }
        Ok(())
    }
}

fn corrupt(what: &str) -> Error {
    Error::Corrupt(format!("reachability bitmap: {what}"))
}

/// A loaded bitmap file.
pub(super) struct Reach {
    ids: Vec<ObjectId>,
    kinds: Vec<ObjectKind>,
    positions: HashMap<ObjectId, u32>,
    bitmaps: HashMap<ObjectId, Vec<u8>>,
    /// The main pack's number in the registry, and where its index is.
    pack: Option<(u64, std::path::PathBuf)>,
    /// Where each entry of the main pack is, read from its index the first time it is asked for.
    layout: std::sync::OnceLock<Option<Layout>>,
}

/// Where the main pack's entries are, by position (pack order).
struct Layout {
    offsets: Vec<u64>,
    ends: Vec<u64>,
    crcs: Vec<u32>,
}

impl Layout {
    /// Reads the main pack's index: entries sorted by offset must be the bitmap file's ids.
    fn read(reach: &Reach, idx_path: &std::path::Path, pack_len: u64) -> std::result::Result<Layout, String> {
        let bytes = std::fs::read(idx_path).map_err(|e| e.to_string())?;
        let entries: Vec<_> = super::shared::PackTable::read(&bytes, pack_len)?.in_pack_order().collect();
        if entries.len() != reach.ids.len() || entries.iter().zip(&reach.ids).any(|(e, id)| e.0 != *id) {
            return Err("the index does not list the bitmap file's objects in pack order".to_owned());
        }
        Ok(Layout {
            offsets: entries.iter().map(|e| e.1).collect(),
            ends: entries.iter().map(|e| e.2).collect(),
            crcs: entries.iter().map(|e| e.3).collect(),
        })
    }
}

impl Reach {
    /// No bitmaps and no main pack: [`RocksStore::collect`] over it walks everything.
    pub(super) fn empty() -> Reach {
        Reach {
            ids: Vec::new(),
            kinds: Vec::new(),
            positions: HashMap::new(),
            bitmaps: HashMap::new(),
            pack: None,
            layout: std::sync::OnceLock::new(),
        }
    }

    fn parse(bytes: &[u8]) -> Result<Reach> {
        let (body, trailer) = bytes.split_at_checked(bytes.len().saturating_sub(20)).ok_or_else(|| corrupt("short"))?;
        let sum = gitstratum_git::hash_object(ObjectKind::Blob, body).map_err(|_| corrupt("checksum"))?;
        if bytes.len() < 36 || sum.as_bytes() != trailer {
            return Err(corrupt("checksum"));
        }
        let mut rest = body.strip_prefix(b"GSRB\0\0\0\x01").ok_or_else(|| corrupt("header"))?;
        let mut take = |len: usize| -> Result<&[u8]> {
            let (head, tail) = rest.split_at_checked(len).ok_or_else(|| corrupt("truncated"))?;
            rest = tail;
            Ok(head)
        };
        let u32_of = |b: &[u8]| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize;
        let n = u32_of(take(4)?);
        let ids: Vec<ObjectId> = take(n.checked_mul(20).ok_or_else(|| corrupt("count"))?)?
            .chunks(20)
            .map(oid_from)
            .collect::<Result<_>>()?;
        let kinds: Vec<ObjectKind> =
            take(n)?.iter().map(|c| kind_from_code(*c).ok_or_else(|| corrupt("kind"))).collect::<Result<_>>()?;
        let m = u32_of(take(4)?);
        let mut bitmaps = HashMap::with_capacity(m.min(MAX_BITMAPS));
        for _ in 0..m {
            let commit = oid_from(take(20)?)?;
            let len = u32_of(take(4)?);
            bitmaps.insert(commit, take(len)?.to_vec());
        }
        let positions = ids.iter().enumerate().map(|(i, id)| (*id, i as u32)).collect();
        Ok(Reach { ids, kinds, positions, bitmaps, pack: None, layout: std::sync::OnceLock::new() })
    }

    fn serialize(ids: &[ObjectId], kinds: &[ObjectKind], bitmaps: &[(ObjectId, Vec<u8>)]) -> Vec<u8> {
        let mut out = b"GSRB\0\0\0\x01".to_vec();
        out.extend_from_slice(&(ids.len() as u32).to_be_bytes());
        for id in ids {
            out.extend_from_slice(id.as_bytes());
        }
        out.extend(kinds.iter().map(|k| k.pack_type()));
        out.extend_from_slice(&(bitmaps.len() as u32).to_be_bytes());
        for (commit, bits) in bitmaps {
            out.extend_from_slice(commit.as_bytes());
            out.extend_from_slice(&(bits.len() as u32).to_be_bytes());
            out.extend_from_slice(bits);
        }
        let sum = gitstratum_git::hash_object(ObjectKind::Blob, &out)
            .unwrap_or_else(|_| ObjectId::from_bytes_or_panic(&[0; 20]));
        out.extend_from_slice(sum.as_bytes());
        out
    }
}

/// The main pack's objects a walk found, and the others (in the order found).
type Found = (Bits, Vec<(ObjectId, ObjectKind)>);

/// What a walk that starts from bitmaps collects.
struct Collect<'a> {
    reach: &'a Reach,
    bits: Bits,
    /// Objects outside the main pack (pushed since), in the order found.
    extra: Vec<(ObjectId, ObjectKind)>,
    extra_seen: HashSet<ObjectId>,
}

impl Collect<'_> {
    /// Marks `id` as included; false when it already was.
    fn mark(&mut self, id: ObjectId, kind: ObjectKind) -> bool {
        match self.reach.positions.get(&id) {
            Some(p) if self.bits.get(*p as usize) => false,
            Some(p) => {
                self.bits.set(*p as usize);
                true
            }
            None => {
                let new = self.extra_seen.insert(id);
                if new {
                    self.extra.push((id, kind));
                }
                new
            }
        }
    }

    fn has(&self, id: &ObjectId) -> bool {
        match self.reach.positions.get(id) {
            Some(p) => self.bits.get(*p as usize),
            None => self.extra_seen.contains(id),
        }
    }
}

impl RocksStore {
    /// Every object reachable from `tips`, found through the main pack's bitmaps where they
    /// reach and by walking the rest (commits through the commit graph, trees read, a subtree
    /// already included skipped with what is under it). `None` when the repository has no
    /// current bitmaps, or when an object is missing (the walk then reports it). Without
    /// `with_blobs`, blobs are left out of the answer.
    pub(super) fn reach_from(
        &self,
        repo: RepoId,
        tips: &[ObjectId],
        with_blobs: bool,
    ) -> Result<Option<Vec<(ObjectId, ObjectKind)>>> {
        Ok(self.reach_reuse(repo, tips, with_blobs, false)?.map(|r| r.objects))
    }

    /// [`RocksStore::reach_from`]; with `reuse`, the main pack's objects are handed over as
    /// entries of its file, in pack order, when its index can be read (else they are listed
    /// with the others).
    pub(super) fn reach_reuse(
        &self,
        repo: RepoId,
        tips: &[ObjectId],
        with_blobs: bool,
        reuse: bool,
    ) -> Result<Option<Reachable>> {
        let Some(reach) = self.reach(repo)? else { return Ok(None) };
        let Some((bits, extra)) = self.collect(repo, &reach, tips, None)? else { return Ok(None) };
        let wanted = |k: &ObjectKind| with_blobs || *k != ObjectKind::Blob;
        let mut extra: Vec<(ObjectId, ObjectKind)> = extra.into_iter().filter(|(_, k)| wanted(k)).collect();
        let from_pack = || bits.ones().filter(|p| wanted(&reach.kinds[*p]));
        if reuse
            && let Some((number, idx_path)) = &reach.pack
            && let Some(file) = self.pack_file(*number)?
            && let Some(layout) = reach
                .layout
                .get_or_init(|| {
                    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
                    Layout::read(&reach, idx_path, len)
                        .inspect_err(|e| {
                            tracing::warn!(path = %idx_path.display(), error = %e, "the main pack's entries cannot be reused");
                        })
                        .ok()
                })
                .as_ref()
        {
            let entries = from_pack()
                .map(|p| ReuseEntry {
                    id: reach.ids[p],
                    kind: reach.kinds[p],
                    offset: layout.offsets[p],
                    end: layout.ends[p],
                    crc32: layout.crcs[p],
                })
                .collect();
            return Ok(Some(Reachable { objects: extra, reuse: Some(PackReuse { file, entries }) }));
        }
        let mut out: Vec<(ObjectId, ObjectKind)> = from_pack().map(|p| (reach.ids[p], reach.kinds[p])).collect();
        out.append(&mut extra);
        Ok(Some(Reachable { objects: out, reuse: None }))
    }

    /// The main pack's objects reachable from `tips`, and the other objects reachable from them
    /// (in the order found); `None` when an object is missing. With `names`, records for each
    /// tree and blob walked a hash of a name a tree gave it (git's `pack_name_hash`, for the
    /// delta search). Over [`Reach::empty`], a plain walk: everything is in the second part.
    pub(super) fn collect(
        &self,
        repo: RepoId,
        reach: &Reach,
        tips: &[ObjectId],
        mut names: Option<&mut HashMap<ObjectId, u32>>,
    ) -> Result<Option<Found>> {
        let n = reach.ids.len();
        let mut c = Collect { reach, bits: Bits::new(n), extra: Vec::new(), extra_seen: HashSet::new() };
        // Bitmapped tips first: what they cover is skipped by the walk of the rest.
        let mut frontier: Vec<ObjectId> = Vec::new();
        for tip in tips {
            match reach.bitmaps.get(tip) {
                Some(bitmap) => c.bits.or_encoded(bitmap, n)?,
                None => frontier.push(*tip),
            }
        }
        let mut trees: Vec<ObjectId> = Vec::new();
        while !frontier.is_empty() {
            let ids: Vec<ObjectId> = std::mem::take(&mut frontier).into_iter().filter(|id| !c.has(id)).collect();
            let kinds: Vec<Option<ObjectKind>> = {
                let unknown: Vec<ObjectId> =
                    ids.iter().filter(|id| !reach.positions.contains_key(*id)).copied().collect();
                let mut found = self.info_many(repo, &unknown)?.into_iter();
                ids.iter()
                    .map(|id| match reach.positions.get(id) {
                        Some(p) => Some(reach.kinds[*p as usize]),
                        None => found.next().flatten().map(|i| i.kind),
                    })
                    .collect()
            };
            let commits: Vec<ObjectId> =
                ids.iter().zip(&kinds).filter(|(_, k)| **k == Some(ObjectKind::Commit)).map(|(id, _)| *id).collect();
            let mut infos = self.commits(repo, &commits)?.into_iter();
            for (id, kind) in ids.iter().zip(kinds) {
                match kind {
                    Some(ObjectKind::Commit) => {
                        let info = infos.next().flatten().ok_or_else(|| corrupt("a commit without graph entry"))?;
                        if let Some(bitmap) = reach.bitmaps.get(id) {
                            c.bits.or_encoded(bitmap, n)?;
                        } else if c.mark(*id, ObjectKind::Commit) {
                            trees.push(info.tree);
                            frontier.extend(info.parents);
                        }
                    }
                    Some(ObjectKind::Tag) => {
                        if c.mark(*id, ObjectKind::Tag) {
                            let tag = self.get_many(repo, &[*id])?.pop().flatten().ok_or_else(|| corrupt("tag"))?;
                            let target = parse::tag(&tag.data).map_err(|e| Error::Corrupt(format!("tag {id}: {e}")))?;
                            match target.target_kind {
                                ObjectKind::Tree => trees.push(target.target),
                                ObjectKind::Blob => {
                                    c.mark(target.target, ObjectKind::Blob);
                                }
                                _ => frontier.push(target.target),
                            }
                        }
                    }
                    Some(ObjectKind::Tree) => trees.push(*id),
                    Some(ObjectKind::Blob) => {
                        c.mark(*id, ObjectKind::Blob);
                    }
                    // Not stored: let the walk report it.
                    None => return Ok(None),
                }
            }
        }
        while !trees.is_empty() {
            let batch: Vec<ObjectId> = std::mem::take(&mut trees).into_iter().filter(|t| !c.has(t)).collect();
            let mut read = Vec::new();
            for t in batch {
                if c.mark(t, ObjectKind::Tree) {
                    read.push(t);
                }
            }
            for chunk in read.chunks(256) {
                for (id, tree) in chunk.iter().zip(self.get_many(repo, chunk)?) {
                    let Some(tree) = tree else { return Ok(None) };
                    for entry in parse::tree(&tree.data).map_err(|e| Error::Corrupt(format!("tree {id}: {e}")))? {
                        if let Some(names) = names.as_deref_mut() {
                            names.entry(entry.id).or_insert_with(|| super::maintain::name_hash(entry.name));
                        }
                        match entry.kind() {
                            Some(ObjectKind::Tree) => trees.push(entry.id),
                            Some(ObjectKind::Blob) => {
                                c.mark(entry.id, ObjectKind::Blob);
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        Ok(Some((c.bits, c.extra)))
    }

    /// The repository's current bitmaps, loaded (and kept) once.
    fn reach(&self, repo: RepoId) -> Result<Option<Arc<Reach>>> {
        let Some(v) = self.db.get_cf(self.cf(super::REPO_CONFIG), key(repo, REACH_KEY)).map_err(backend)? else {
            return Ok(None);
        };
        let number = u64::from_be_bytes(v.as_slice().try_into().map_err(|_| corrupt("pack number"))?);
        if let Some(r) = self.reach_cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&number) {
            return Ok(Some(r.clone()));
        }
        let Some(record) = self.db.get_cf(self.cf(super::PACKS), number.to_be_bytes()).map_err(backend)? else {
            // Rolled into another pack since: walks answer until the next full repack.
            return Ok(None);
        };
        let path = self.pack_path_of(&record)?.with_extension("reach");
        let loaded =
            std::fs::read(&path).map_err(io_error("reading reachability bitmaps")).and_then(|b| Reach::parse(&b));
        let reach = match loaded {
            Ok(mut r) => {
                r.pack = Some((number, path.with_extension("idx")));
                Arc::new(r)
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "unusable reachability bitmaps: clones walk instead");
                return Ok(None);
            }
        };
        let mut cache = self.reach_cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() >= CACHED {
            cache.clear();
        }
        cache.insert(number, reach.clone());
        Ok(Some(reach))
    }

    /// Computes bitmaps for `tips` (commits, the first [`MAX_BITMAPS`] distinct ones) over a
    /// main pack whose entries are `ids` with `kinds`, in pack order, and writes them to `path`,
    /// synced.
    pub(super) fn write_reach(
        &self,
        repo: RepoId,
        path: &std::path::Path,
        ids: Vec<ObjectId>,
        kinds: Vec<ObjectKind>,
        tips: &[ObjectId],
    ) -> Result<()> {
        let n = ids.len();
        let mut reach = Reach {
            positions: ids.iter().enumerate().map(|(i, id)| (*id, i as u32)).collect(),
            ids,
            kinds,
            bitmaps: HashMap::new(),
            pack: None,
            layout: std::sync::OnceLock::new(),
        };
        // Oldest first, so each walk stops at the bitmaps of the ones before.
        let mut seen = HashSet::new();
        let chosen: Vec<ObjectId> = tips
            .iter()
            .filter(|id| reach.positions.contains_key(*id) && seen.insert(**id))
            .take(MAX_BITMAPS)
            .copied()
            .collect();
        let mut tips: Vec<(u32, ObjectId)> = chosen
            .iter()
            .zip(self.commits(repo, &chosen)?)
            .filter_map(|(id, c)| c.map(|c| (c.generation, *id)))
            .collect();
        tips.sort();
        let mut written = Vec::with_capacity(tips.len());
        for (_, tip) in tips {
            let Some((bits, _)) = self.collect(repo, &reach, &[tip], None)? else { continue };
            let encoded = bits.encode(n);
            reach.bitmaps.insert(tip, encoded.clone());
            written.push((tip, encoded));
        }
        let bytes = Reach::serialize(&reach.ids, &reach.kinds, &written);
        let file = std::fs::File::create(path).map_err(io_error("writing reachability bitmaps"))?;
        (&file).write_all(&bytes).map_err(io_error("writing reachability bitmaps"))?;
        file.sync_all().map_err(io_error("syncing reachability bitmaps"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_set_what_single_bits_would() {
        let n = 300;
        for (from, to) in [(0, 0), (0, 1), (3, 64), (63, 65), (0, 300), (64, 128), (65, 127), (10, 299), (128, 129)] {
            let mut by_range = Bits::new(n);
            by_range.set_range(from, to);
            let mut by_bit = Bits::new(n);
            (from..to).for_each(|i| by_bit.set(i));
            assert_eq!(by_range.0, by_bit.0, "{from}..{to}");
        }
    }
}
