//! Maintenance of a repository's packs: fewer packs (a geometric roll-up, as `git repack
//! --geometric=2` does), and a full repack that separates what refs reach from what they do not
//! (a cruft pack, as `git repack --cruft` writes) and prunes cruft older than a grace period.
//!
//! Entries are copied as they are stored (no inflate, no deflate): a delta whose base was
//! written earlier in the new pack becomes an OFS delta, any other stays a REF delta. The
//! exceptions are the deltas a full repack's search finds and the default branch's tip
//! ([`super::tip`]), which are written anew.
//!
//! Crash safety: the new packs are written under `incoming/`, made durable and put in place, and
//! one synced batch then registers them, re-points the objects they hold, unregisters the packs
//! they replace and drops pruned objects. Only after it are the old files removed; a crash
//! before it leaves unregistered files (removed when the store opens), a crash after it leaves
//! old files that are unregistered (the same). Readers that read a location just before the
//! batch retry with the new one ([`RocksStore::with_pack`]); a reader with the old file open
//! keeps reading it.
//!
//! Packs shared with a fork ([`super::shared`]) are left alone: never rolled up, repacked or
//! pruned (an object pruned from a pack of the repository's own that a shared pack also holds
//! is pointed at that copy), and a repository holding one keeps the bitmaps it had (a new main pack holds only
//! what is newer, and its objects are walked).
//!
//! Pruning never removes an object a ref reaches (the set is computed from the refs, and the
//! batch is written only if no ref moved since and no push holds a [`crate::Pin`]), nor one a
//! kept object needs as a delta base, nor one that has not been unreachable for the whole grace
//! period (objects first found unreachable go into a new cruft pack and are dropped only when
//! that pack is older than the grace period and they are still unreachable).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{BufWriter, Write};
use std::sync::atomic::Ordering;

use gitstratum_git::packfile::IndexedEntry;
use gitstratum_git::{ObjectId, ObjectKind, parse};
use rocksdb::{Direction, IteratorMode, WriteBatch};

use super::{
    COMMIT_GRAPH, Location, OBJECT_INDEX, PACKS, PackRecord, REPO_CONFIG, REPO_STATS, RocksStore, backend,
    decode_location, encode_location, encode_registry, io_error, key, oid_from, raw_in,
};
use crate::{Error, ObjectStore, RefStore, RepoId, Result};

/// What a maintenance run may do.
#[derive(Debug, Clone, Copy)]
pub struct Maintenance {
    /// Also repack everything: what refs reach into one pack, what they do not into a cruft
    /// pack, and drop cruft packs older than `prune_grace_ms`. Without it, only roll up small
    /// packs.
    pub full: bool,
    /// How long an object must have been unreachable before it is deleted.
    pub prune_grace_ms: i64,
    /// Milliseconds since the epoch.
    pub now_ms: i64,
}

/// What a maintenance run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Packs of the repository before and after.
    pub packs_before: usize,
    pub packs_after: usize,
    /// Entries copied into new packs.
    pub objects_written: u64,
    /// Objects moved into a new cruft pack (no ref reached them).
    pub cruft: u64,
    /// Objects stored whole that the repack wrote as deltas.
    pub deltas_found: u64,
    /// Objects of the default branch's tip stored as deltas against objects outside it that
    /// the repack wrote whole ([`super::tip`]).
    pub tip_whole: u64,
    /// Old chains' roots the repack made deltas against those tip objects.
    pub tip_reversed: u64,
    /// Objects deleted (unreachable for longer than the grace period).
    pub pruned: u64,
    /// Pruning was due but put off: a ref moved or a push was in flight meanwhile.
    pub prune_deferred: bool,
}

/// Where a full repack puts an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// The new main pack.
    Main,
    /// The new cruft pack.
    Cruft,
    /// Stays where it is (a cruft pack not yet expired, or a pack newer than the run).
    Stay,
    /// Deleted (in an expired cruft pack, unreachable).
    Delete,
}

/// Object counts of packs that form a geometric progression (each at least `factor` times all
/// smaller ones together) need no roll-up; returns how many of the smallest to roll into one so
/// that the rest do, as `git repack --geometric` chooses (`weights` sorted ascending).
fn geometric_split(weights: &[u64], factor: u64) -> usize {
    if weights.len() < 2 {
        return 0;
    }
    let mut i = weights.len() - 1;
    while i > 0 {
        if weights[i] < factor.saturating_mul(weights[i - 1]) {
            break;
        }
        i -= 1;
    }
    let mut split = if i > 0 { i + 1 } else { 0 };
    let mut total: u64 = weights[..split].iter().sum();
    while split < weights.len() && weights[split] < factor.saturating_mul(total) {
        total += weights[split];
        split += 1;
    }
    if split < 2 { 0 } else { split }
}

/// A pack being written by maintenance: its entries as indexed, and its bitmaps.
struct NewPack {
    file: tempfile::NamedTempFile,
    checksum: ObjectId,
    entries: Vec<IndexedEntry>,
    reach: Option<tempfile::NamedTempFile>,
}

impl RocksStore {
    /// Maintains one repository's packs (see the module). Runs one at a time; safe beside
    /// pushes, fetches and ref updates.
    pub fn maintain(&self, repo: RepoId, what: &Maintenance) -> Result<MaintenanceReport> {
        let _one = self.maintenance.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let packs: Vec<PackRecord> = self.repo_packs(repo)?;
        let mut report =
            MaintenanceReport { packs_before: packs.len(), packs_after: packs.len(), ..Default::default() };
        let shares = packs.iter().any(|p| p.shared);
        let own: Vec<PackRecord> = packs.into_iter().filter(|p| !p.shared).collect();
        if what.full {
            self.full_repack(repo, &own, shares, what, &mut report)?;
        } else {
            self.roll_up(repo, &own, &mut report)?;
        }
        report.packs_after = self.repo_packs(repo)?.len();
        Ok(report)
    }

    /// The registered packs of `repo`, oldest first.
    fn repo_packs(&self, repo: RepoId) -> Result<Vec<PackRecord>> {
        Ok(self.pack_records()?.into_iter().filter(|p| p.repo == repo).collect())
    }

    /// The packs of `repo` maintenance may rewrite: those not shared with a fork, oldest first.
    fn own_packs(&self, repo: RepoId) -> Result<Vec<PackRecord>> {
        Ok(self.repo_packs(repo)?.into_iter().filter(|p| !p.shared).collect())
    }

    /// Repositories with packs, and how many each has.
    pub fn repos_with_packs(&self) -> Result<Vec<(RepoId, usize)>> {
        let mut counts: HashMap<RepoId, usize> = HashMap::new();
        for p in self.pack_records()? {
            *counts.entry(p.repo).or_default() += 1;
        }
        let mut out: Vec<(RepoId, usize)> = counts.into_iter().collect();
        out.sort();
        Ok(out)
    }

    /// Whether a full repack of `repo` is due at `now_ms`: it never had one, or its last was at
    /// least `after_ms` ago and the repository changed since (a ref moved, a pack was added, or
    /// a cruft pack outlived `prune_grace_ms`).
    pub fn full_repack_due(&self, repo: RepoId, now_ms: i64, after_ms: i64, prune_grace_ms: i64) -> Result<bool> {
        let packs: Vec<PackRecord> = self.own_packs(repo)?;
        // Only shared packs: nothing a repack may touch.
        if packs.is_empty() {
            return Ok(false);
        }
        let Some((last_ms, digest)) = self.last_full_repack(repo)? else { return Ok(true) };
        if now_ms.saturating_sub(last_ms) < after_ms {
            return Ok(false);
        }
        let expired =
            packs.iter().any(|p| p.cruft_since_ms.is_some_and(|t| now_ms.saturating_sub(t) >= prune_grace_ms));
        let uncombined = packs.iter().filter(|p| p.cruft_since_ms.is_none()).count() > 1;
        Ok(expired || uncombined || digest != refs_digest(&self.list(repo)?))
    }

    /// When `repo` was last fully repacked, and a digest of its refs then.
    fn last_full_repack(&self, repo: RepoId) -> Result<Option<(i64, ObjectId)>> {
        let Some(v) = self.db.get_cf(self.cf(REPO_CONFIG), key(repo, MAINTAINED)).map_err(backend)? else {
            return Ok(None);
        };
        if v.len() != 28 {
            return Err(Error::Corrupt(format!("maintenance record of repository {}", repo.0)));
        }
        Ok(Some((i64::from_be_bytes(v[..8].try_into().expect("8 bytes")), oid_from(&v[8..])?)))
    }

    /// Whether a roll-up of `repo`'s packs would do something.
    pub fn needs_roll_up(&self, repo: RepoId) -> Result<bool> {
        let packs: Vec<PackRecord> = self.own_packs(repo)?;
        Ok(!self.roll_up_set(&packs)?.is_empty())
    }

    /// The packs of `packs` (a repository's own) a geometric roll-up would merge (cruft packs
    /// are left alone).
    fn roll_up_set(&self, packs: &[PackRecord]) -> Result<Vec<PackRecord>> {
        let candidates: Vec<&PackRecord> = packs.iter().filter(|p| p.cruft_since_ms.is_none()).collect();
        // One pack is its own progression: no need to open it (the scheduler asks every minute).
        if candidates.len() < 2 {
            return Ok(Vec::new());
        }
        let mut weighted = Vec::new();
        for p in candidates {
            weighted.push((self.pack_object_count(p)?, p.clone()));
        }
        weighted.sort_by_key(|(w, p)| (*w, p.number));
        let weights: Vec<u64> = weighted.iter().map(|(w, _)| *w).collect();
        let split = geometric_split(&weights, 2);
        Ok(weighted.into_iter().take(split).map(|(_, p)| p).collect())
    }

    /// Entries in a pack, from its header.
    fn pack_object_count(&self, pack: &PackRecord) -> Result<u64> {
        let mut header = [0u8; 12];
        let path = self.pack_path(pack.repo, &pack.checksum);
        let file = fs::File::open(&path).map_err(|e| Error::Corrupt(format!("pack {}: {e}", path.display())))?;
        std::io::Read::read_exact(&mut &file, &mut header).map_err(io_error("reading a pack header"))?;
        let count = gitstratum_git::pack::parse_pack_header(&header)
            .map_err(|e| Error::Corrupt(format!("pack {}: {e}", path.display())))?;
        Ok(u64::from(count))
    }

    /// Every object the index places in one of `packs`, with its location.
    fn objects_in(&self, repo: RepoId, packs: &HashSet<u64>) -> Result<Vec<(ObjectId, Location)>> {
        let prefix = repo.key_prefix();
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(OBJECT_INDEX), IteratorMode::From(&prefix, Direction::Forward)) {
            let (k, v) = item.map_err(backend)?;
            if !k.starts_with(&prefix) {
                break;
            }
            let id = oid_from(&k[8..])?;
            let location = decode_location(&id, &v)?;
            if packs.contains(&location.pack) {
                out.push((id, location));
            }
        }
        Ok(out)
    }

    fn roll_up(&self, repo: RepoId, packs: &[PackRecord], report: &mut MaintenanceReport) -> Result<()> {
        let sources = self.roll_up_set(packs)?;
        if sources.is_empty() {
            return Ok(());
        }
        let numbers: HashSet<u64> = sources.iter().map(|p| p.number).collect();
        let objects = self.objects_in(repo, &numbers)?;
        let main = self.write_pack(repo, objects)?;
        report.objects_written = main.as_ref().map_or(0, |p| p.entries.len() as u64);
        self.commit(repo, main, None, &numbers, &[], None, report)?;
        Ok(())
    }

    /// Repacks `packs` (the repository's own; `shares`: it holds shared packs besides).
    fn full_repack(
        &self,
        repo: RepoId,
        packs: &[PackRecord],
        shares: bool,
        what: &Maintenance,
        report: &mut MaintenanceReport,
    ) -> Result<()> {
        if packs.is_empty() {
            return Ok(());
        }
        // A push in flight has stored its pack but not moved its refs yet: what it brought would
        // look unreachable. Its refs are moments away; repack then.
        if self.pins.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains_key(&repo) {
            report.prune_deferred = true;
            return Ok(());
        }
        let refs = self.list(repo)?;
        // Everything the refs reach, walked (no bitmaps), with a name for each tree and blob.
        let mut names: HashMap<ObjectId, u32> = HashMap::new();
        let tips: Vec<ObjectId> = refs.iter().map(|(_, id)| *id).collect();
        let Some((_, found)) = self.collect(repo, &super::reach::Reach::empty(), &tips, Some(&mut names))? else {
            return Err(Error::Corrupt(format!("repository {}: an object its refs reach is missing", repo.0)));
        };
        let reachable: HashSet<ObjectId> = found.into_iter().map(|(id, _)| id).collect();
        let expired: HashSet<u64> = packs
            .iter()
            .filter(|p| p.cruft_since_ms.is_some_and(|t| what.now_ms.saturating_sub(t) >= what.prune_grace_ms))
            .map(|p| p.number)
            .collect();
        let cruft_packs: HashSet<u64> = packs.iter().filter(|p| p.cruft_since_ms.is_some()).map(|p| p.number).collect();
        let all: HashSet<u64> = packs.iter().map(|p| p.number).collect();
        let objects = self.objects_in(repo, &all)?;
        let mut fate: HashMap<ObjectId, (Fate, Location)> = objects
            .into_iter()
            .map(|(id, l)| {
                let f = if reachable.contains(&id) {
                    Fate::Main
                } else if expired.contains(&l.pack) {
                    Fate::Delete
                } else if cruft_packs.contains(&l.pack) {
                    Fate::Stay
                } else {
                    Fate::Cruft
                };
                (id, (f, l))
            })
            .collect();
        // Delta bases of what is kept are kept: beside a main object in the main pack (so it is
        // whole on its own), else at least in the cruft pack.
        loop {
            let mut moves = Vec::new();
            for (f, l) in fate.values() {
                let (Some(base), true) = (l.base, *f != Fate::Delete) else { continue };
                let want = if *f == Fate::Main { Fate::Main } else { Fate::Cruft };
                match fate.get(&base) {
                    Some((Fate::Delete, _)) => moves.push((base, want)),
                    Some((Fate::Cruft | Fate::Stay, _)) if want == Fate::Main => moves.push((base, Fate::Main)),
                    _ => {}
                }
            }
            if moves.is_empty() {
                break;
            }
            for (id, f) in moves {
                if let Some(entry) = fate.get_mut(&id) {
                    entry.0 = f;
                }
            }
        }
        let pick = |wanted: Fate| -> Vec<(ObjectId, Location)> {
            fate.iter().filter(|(_, (f, _))| *f == wanted).map(|(id, (_, l))| (*id, *l)).collect()
        };
        let (main_objects, cruft_objects, deleted) = (pick(Fate::Main), pick(Fate::Cruft), pick(Fate::Delete));
        // Only the packs whose every kept object moves are replaced: non-cruft packs, cruft
        // packs none of whose objects stays, and (when pruning) expired cruft packs.
        let staying: HashSet<u64> = fate.values().filter(|(f, _)| *f == Fate::Stay).map(|(_, l)| l.pack).collect();
        let replaced: HashSet<u64> = all
            .iter()
            .filter(|n| !cruft_packs.contains(n) || !(staying.contains(n) || expired.contains(n)))
            .copied()
            .collect();
        let mut deltas = self.find_deltas(repo, &main_objects, &names)?;
        report.deltas_found = deltas.len() as u64;
        // The default branch's tip whole (or deltas within it), so a depth=1 clone copies it.
        let tip = self.tip_objects(repo, &refs)?;
        let plan = self.tip_first(repo, &tip, &main_objects, &mut deltas)?;
        (report.tip_whole, report.tip_reversed) = (plan.whole.len() as u64, plan.reversed as u64);
        let mut main = self.write_pack_with(repo, main_objects, &deltas, &plan.whole)?;
        let cruft = self.write_pack(repo, cruft_objects)?;
        // Bitmaps cover one pack: beside shared packs, the bitmaps of the shared main pack (most
        // of the history) stay; a new main pack's would replace them with a sliver.
        if let Some(main) = main.as_mut().filter(|_| !shares) {
            // Bitmaps for the tips of branches and tags (what clones ask for); other refs (pull
            // requests, say) are walked down to them when asked for.
            let branch_or_tag = |name: &str| name.starts_with("refs/heads/") || name.starts_with("refs/tags/");
            let tips: Vec<ObjectId> = match refs.iter().any(|(name, _)| branch_or_tag(name)) {
                true => refs.iter().filter(|(name, _)| branch_or_tag(name)).map(|(_, id)| *id).collect(),
                false => refs.iter().map(|(_, id)| *id).collect(),
            };
            let tips = self.peel_to_commits(repo, tips)?;
            let file = tempfile::Builder::new()
                .prefix("reach-")
                .tempfile_in(&self.incoming)
                .map_err(io_error("creating a bitmap file"))?;
            let ids = main.entries.iter().map(|e| e.id).collect();
            let kinds = main.entries.iter().map(|e| e.kind).collect();
            self.write_reach(repo, file.path(), ids, kinds, &tips)?;
            main.reach = Some(file);
        }
        report.objects_written = main.as_ref().map_or(0, |p| p.entries.len() as u64);
        report.cruft = cruft.as_ref().map_or(0, |p| p.entries.len() as u64);
        let prune = Prune { refs: &refs, expired: &expired, deleted: &deleted, record: Vec::new() };
        let cruft = cruft.map(|c| (c, what.now_ms));
        let cruft_packs: Vec<u64> = cruft_packs.difference(&replaced).copied().collect();
        let mut record = what.now_ms.to_be_bytes().to_vec();
        record.extend_from_slice(refs_digest(&refs).as_bytes());
        let prune = Prune { record, ..prune };
        self.commit(repo, main, cruft, &replaced, &cruft_packs, Some(prune), report)?;
        Ok(())
    }

    /// The commits `ids` are or (through tags) point to; others are left out.
    pub(super) fn peel_to_commits(&self, repo: RepoId, ids: Vec<ObjectId>) -> Result<Vec<ObjectId>> {
        let mut out = Vec::with_capacity(ids.len());
        for (id, info) in ids.iter().zip(self.info_many(repo, &ids)?) {
            let (mut id, mut kind) = (*id, info.map(|i| i.kind));
            for _ in 0..8 {
                if kind != Some(ObjectKind::Tag) {
                    break;
                }
                let Some(tag) = self.get_many(repo, &[id])?.pop().flatten() else { break };
                let tag = parse::tag(&tag.data).map_err(|e| Error::Corrupt(format!("tag {id}: {e}")))?;
                (id, kind) = (tag.target, Some(tag.target_kind));
            }
            if kind == Some(ObjectKind::Commit) {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// A sliding-window delta search (as `git pack-objects` does) over the trees and blobs of
    /// `objects` that are stored whole: sorted by kind, name hash and size (largest first), each
    /// is tried against the ones before it in a window; a delta is kept when it is less than
    /// half the object. Bounded in time, window memory and depth. Returns object → (base,
    /// delta); new deltas only point back in the sorted order, so they form no cycle.
    fn find_deltas(
        &self,
        repo: RepoId,
        objects: &[(ObjectId, Location)],
        names: &HashMap<ObjectId, u32>,
    ) -> Result<HashMap<ObjectId, (ObjectId, Vec<u8>)>> {
        let started = std::time::Instant::now();
        let mut candidates: Vec<Candidate> = objects
            .iter()
            .filter(|(_, l)| {
                l.base.is_none()
                    && matches!(l.kind, ObjectKind::Blob | ObjectKind::Tree)
                    && (32..=DELTA_MAX_OBJECT).contains(&l.size)
            })
            .map(|(id, l)| (l.kind, names.get(id).copied().unwrap_or(0), std::cmp::Reverse(l.size), *id))
            .collect();
        candidates.sort();
        let mut found: HashMap<ObjectId, (ObjectId, Vec<u8>)> = HashMap::new();
        let mut depth: HashMap<ObjectId, u32> = HashMap::new();
        let mut held = 0usize;
        let mut window: std::collections::VecDeque<(ObjectKind, ObjectId, Vec<u8>)> = Default::default();
        let mut window_bytes = 0usize;
        // Read in batches of at most 256 objects and 32 MiB.
        let mut chunks: Vec<&[Candidate]> = Vec::new();
        let (mut start, mut bytes) = (0, 0u64);
        for (i, c) in candidates.iter().enumerate() {
            if i > start && (i - start >= 256 || bytes + c.2.0 > 32 << 20) {
                chunks.push(&candidates[start..i]);
                (start, bytes) = (i, 0);
            }
            bytes += c.2.0;
        }
        chunks.push(&candidates[start..]);
        for chunk in chunks {
            if started.elapsed() > DELTA_BUDGET || held > DELTA_HELD_BYTES {
                break;
            }
            let ids: Vec<ObjectId> = chunk.iter().map(|c| c.3).collect();
            for ((kind, ..), (id, object)) in chunk.iter().zip(ids.iter().zip(self.get_many(repo, &ids)?)) {
                let Some(object) = object else { continue };
                let mut best: Option<(ObjectId, Vec<u8>, u32)> = None;
                for (base_kind, base_id, base) in window.iter().rev() {
                    let base_depth = depth.get(base_id).copied().unwrap_or(0);
                    if base_kind != kind || base_depth >= DELTA_MAX_DEPTH || base.len() / 4 > object.data.len() {
                        continue;
                    }
                    let delta = gitstratum_git::delta::encode(base, &object.data);
                    let limit = best.as_ref().map_or(object.data.len() / 2, |(_, d, _)| d.len());
                    if delta.len() < limit {
                        best = Some((*base_id, delta, base_depth + 1));
                    }
                }
                if let Some((base, delta, d)) = best {
                    held += delta.len();
                    depth.insert(*id, d);
                    found.insert(*id, (base, delta));
                }
                window_bytes += object.data.len();
                window.push_back((*kind, *id, object.data));
                while window.len() > DELTA_WINDOW || (window_bytes > DELTA_WINDOW_BYTES && window.len() > 1) {
                    if let Some((_, _, gone)) = window.pop_front() {
                        window_bytes -= gone.len();
                    }
                }
            }
        }
        Ok(found)
    }

    /// Writes `objects` into a new pack under `incoming/`, entries copied as stored, in the
    /// order of their old packs and offsets (so OFS bases come first). `None` when empty.
    fn write_pack(&self, repo: RepoId, objects: Vec<(ObjectId, Location)>) -> Result<Option<NewPack>> {
        self.write_pack_with(repo, objects, &HashMap::new(), &HashSet::new())
    }

    /// [`RocksStore::write_pack`], writing the objects in `deltas` as the deltas found for them
    /// and those in `whole` whole (compressed anew).
    fn write_pack_with(
        &self,
        repo: RepoId,
        mut objects: Vec<(ObjectId, Location)>,
        deltas: &HashMap<ObjectId, (ObjectId, Vec<u8>)>,
        whole: &HashSet<ObjectId>,
    ) -> Result<Option<NewPack>> {
        if objects.is_empty() {
            return Ok(None);
        }
        objects.sort_by_key(|(_, l)| (l.pack, l.offset));
        if !deltas.is_empty() {
            objects = bases_first(objects, deltas);
        }
        let count = u32::try_from(objects.len()).map_err(|_| Error::Backend("too many objects for one pack".into()))?;
        let file = tempfile::Builder::new()
            .prefix("repack-")
            .suffix(".pack")
            .tempfile_in(&self.incoming)
            .map_err(io_error("creating a pack"))?;
        let mut written: HashMap<ObjectId, u64> = HashMap::with_capacity(objects.len());
        let mut entries = Vec::with_capacity(objects.len());
        let wrote = |e: std::io::Error| io_error("writing a pack")(e);
        let mut writer = gitstratum_git::pack::Writer::new(BufWriter::with_capacity(256 << 10, file.as_file()), count)
            .map_err(wrote)?;
        for (id, location) in &objects {
            let (offset, base) = if let Some((base, delta)) = deltas.get(id) {
                let offset = match written.get(base) {
                    Some(base_offset) => writer.write_ofs_delta(*base_offset, delta),
                    None => writer.write_ref_delta(base, delta),
                };
                (offset, Some(*base))
            } else if whole.contains(id) {
                let object = self
                    .get_many(repo, &[*id])?
                    .pop()
                    .flatten()
                    .ok_or_else(|| Error::Corrupt(format!("object {id} vanished while repacking")))?;
                (writer.write_object(location.kind, &object.data), None)
            } else {
                let raw = self.with_pack(repo, id, *location, raw_in)?;
                let offset = match raw.kind {
                    crate::RawKind::Whole(kind) => writer.write_raw_object(kind, raw.size, &raw.compressed),
                    crate::RawKind::Delta { base } => match written.get(&base) {
                        Some(base_offset) => writer.write_raw_ofs_delta(*base_offset, raw.size, &raw.compressed),
                        None => writer.write_raw_ref_delta(&base, raw.size, &raw.compressed),
                    },
                };
                (offset, location.base)
            };
            let offset = offset.map_err(wrote)?;
            written.insert(*id, offset);
            entries.push(IndexedEntry {
                id: *id,
                kind: location.kind,
                size: location.size,
                offset,
                end: writer.position(),
                crc32: writer.entry_crc32(),
                base,
            });
        }
        let (mut out, checksum) = writer.finish().map_err(wrote)?;
        out.flush().map_err(wrote)?;
        drop(out);
        Ok(Some(NewPack { file, checksum, entries, reach: None }))
    }

    /// Installs the new packs and, in one synced batch, registers them, re-points their objects,
    /// unregisters `replaced` (and, when pruning goes ahead, the expired cruft packs) and drops
    /// the pruned objects; then removes the files of the packs no longer registered. Does
    /// nothing (and returns false) when a source pack was unregistered meanwhile (the
    /// repository was deleted).
    #[allow(clippy::too_many_arguments)]
    fn commit(
        &self,
        repo: RepoId,
        main: Option<NewPack>,
        cruft: Option<(NewPack, i64)>,
        replaced: &HashSet<u64>,
        cruft_packs: &[u64],
        prune: Option<Prune<'_>>,
        report: &mut MaintenanceReport,
    ) -> Result<bool> {
        let new: Vec<(&NewPack, Option<i64>)> =
            main.iter().map(|p| (p, None)).chain(cruft.iter().map(|(p, t)| (p, Some(*t)))).collect();
        for (pack, _) in &new {
            self.place_pack(repo, pack.file.path(), &pack.checksum, &pack.entries)?;
            if let Some(reach) = &pack.reach {
                let path = self.pack_path(repo, &pack.checksum).with_extension("reach");
                std::fs::rename(reach.path(), &path).map_err(io_error("moving a bitmap file into place"))?;
                super::sync_dir(path.parent().unwrap_or(&self.packs_dir))?;
            }
        }
        crate::failpoint("maintain:before-commit");
        let _put = self.put_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let _refs = self.ref_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let pins = self.pins.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let records: HashMap<u64, PackRecord> = self.pack_records()?.into_iter().map(|p| (p.number, p)).collect();
        // A source unregistered (the repository was deleted) or shared by a fork meanwhile.
        if !replaced.iter().chain(cruft_packs).all(|n| records.get(n).is_some_and(|r| !r.shared)) {
            drop((pins, _refs, _put));
            let kept: HashSet<ObjectId> = records.values().filter(|p| p.repo == repo).map(|p| p.checksum).collect();
            for (pack, _) in new.iter().filter(|(p, _)| !kept.contains(&p.checksum)) {
                self.remove_pack_files(repo, &pack.checksum);
            }
            return Ok(false);
        }
        let mut batch = WriteBatch::default();
        let mut unregister: Vec<u64> = replaced.iter().copied().collect();
        if let Some(prune) = &prune {
            batch.put_cf(self.cf(REPO_CONFIG), key(repo, MAINTAINED), &prune.record);
        }
        if let Some(prune) = prune.filter(|p| !p.expired.is_empty() || !p.deleted.is_empty()) {
            let quiet = pins.get(&repo).copied().unwrap_or(0) == 0 && self.list(repo)? == *prune.refs;
            if quiet {
                unregister.extend(prune.expired.iter().copied());
                let mut stats = self.stats(repo)?;
                let shared: Vec<u64> =
                    records.values().filter(|r| r.repo == repo && r.shared).map(|r| r.number).collect();
                let mut pruned = 0u64;
                for (id, location) in prune.deleted {
                    // Nothing a shared pack holds is pruned: the index points at that copy instead.
                    if !shared.is_empty()
                        && let Some(copy) = self.location_in(repo, &shared, id, 0)?
                    {
                        batch.put_cf(self.cf(OBJECT_INDEX), key(repo, id.as_bytes()), encode_location(&copy));
                        continue;
                    }
                    batch.delete_cf(self.cf(OBJECT_INDEX), key(repo, id.as_bytes()));
                    batch.delete_cf(self.cf(COMMIT_GRAPH), key(repo, id.as_bytes()));
                    stats.objects = stats.objects.saturating_sub(1);
                    stats.bytes = stats.bytes.saturating_sub(location.size);
                    pruned += 1;
                }
                let mut counters = [0u8; 16];
                counters[..8].copy_from_slice(&stats.objects.to_be_bytes());
                counters[8..].copy_from_slice(&stats.bytes.to_be_bytes());
                batch.put_cf(self.cf(REPO_STATS), repo.key_prefix(), counters);
                report.pruned = pruned;
            } else {
                report.prune_deferred = true;
            }
        }
        for (pack, cruft_since) in &new {
            let number = self.next_pack.fetch_add(1, Ordering::SeqCst);
            batch.put_cf(
                self.cf(PACKS),
                number.to_be_bytes(),
                encode_registry(repo, &pack.checksum, *cruft_since, false),
            );
            if pack.reach.is_some() {
                batch.put_cf(self.cf(REPO_CONFIG), key(repo, super::reach::REACH_KEY), number.to_be_bytes());
            }
            for e in &pack.entries {
                let location = Location::of(e, number);
                batch.put_cf(self.cf(OBJECT_INDEX), key(repo, e.id.as_bytes()), encode_location(&location));
            }
        }
        for n in &unregister {
            batch.delete_cf(self.cf(PACKS), n.to_be_bytes());
        }
        self.db.write_opt(batch, &Self::synced()).map_err(backend)?;
        drop((pins, _refs, _put));
        crate::failpoint("maintain:after-commit");
        let mut open = self.open_packs.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        for n in &unregister {
            open.remove(n);
            self.bases.forget(*n);
        }
        drop(open);
        // A new pack can have the bytes (so the name) of one it replaces: keep what is registered.
        let kept: HashSet<ObjectId> = self.repo_packs(repo)?.into_iter().map(|p| p.checksum).collect();
        for n in &unregister {
            if let Some(record) = records.get(n).filter(|r| !kept.contains(&r.checksum)) {
                self.remove_pack_files(repo, &record.checksum);
            }
        }
        // The object index was just rewritten for every object moved: flushed, a clone's
        // lookups read sorted, cached blocks instead of searching a large memtable (measured on
        // tokio: a tenth of a full clone's server time). Only speed depends on it.
        if let Err(e) = self.db.flush_cf(self.cf(OBJECT_INDEX)) {
            tracing::warn!(error = %e, "cannot flush the object index after maintenance");
        }
        Ok(true)
    }

    /// Removes a pack's files (the pack and its index); a failure only leaves a file behind,
    /// which the next open removes.
    fn remove_pack_files(&self, repo: RepoId, checksum: &ObjectId) {
        let path = self.pack_path(repo, checksum);
        let _ = fs::remove_file(path.with_extension("reach"));
        let _ = fs::remove_file(path.with_extension("idx"));
        let _ = fs::remove_file(&path);
    }
}

/// What a full repack would prune, the refs it judged reachability by, and the record of the
/// repack (time and refs digest).
struct Prune<'a> {
    refs: &'a [(String, ObjectId)],
    expired: &'a HashSet<u64>,
    deleted: &'a [(ObjectId, Location)],
    record: Vec<u8>,
}

/// `objects` in their order, except that the base of a delta in `deltas` (when among them) comes
/// before it, so every new delta can be an OFS delta.
fn bases_first(
    objects: Vec<(ObjectId, Location)>,
    deltas: &HashMap<ObjectId, (ObjectId, Vec<u8>)>,
) -> Vec<(ObjectId, Location)> {
    let at: HashMap<ObjectId, usize> = objects.iter().enumerate().map(|(i, (id, _))| (*id, i)).collect();
    let mut placed = vec![false; objects.len()];
    let mut out = Vec::with_capacity(objects.len());
    for start in 0..objects.len() {
        // The chain of not yet placed new-delta bases under `start`, deepest first.
        let mut chain = vec![start];
        while let Some(base) = deltas.get(&objects[*chain.last().expect("not empty")].0).and_then(|(b, _)| at.get(b)) {
            if placed[*base] || chain.contains(base) {
                break;
            }
            chain.push(*base);
        }
        for i in chain.into_iter().rev() {
            if !placed[i] {
                placed[i] = true;
                out.push(objects[i]);
            }
        }
    }
    out
}

/// git's `pack_name_hash`: the last characters of a name weigh most, so sorting by it puts
/// files of one name (and then of one extension) together.
pub(super) fn name_hash(name: &[u8]) -> u32 {
    name.iter().filter(|c| !c.is_ascii_whitespace()).fold(0u32, |hash, c| (hash >> 2).wrapping_add(u32::from(*c) << 24))
}

/// An object the delta search looks at, in its sort order: kind, name hash, size (largest
/// first), id.
type Candidate = (ObjectKind, u32, std::cmp::Reverse<u64>, ObjectId);

/// Objects tried as bases for each object (git's `pack.window`).
const DELTA_WINDOW: usize = 10;
/// Bytes of objects the window may hold (git's `pack.windowMemory`).
const DELTA_WINDOW_BYTES: usize = 64 << 20;
/// Objects larger than this are not deltified (git's `core.bigFileThreshold` is 512 MiB).
const DELTA_MAX_OBJECT: u64 = 16 << 20;
/// Longest chain a new delta may end (git's `pack.depth` is 50).
const DELTA_MAX_DEPTH: u32 = 16;
/// Time a full repack may spend searching for deltas; what is left stays whole.
const DELTA_BUDGET: std::time::Duration = std::time::Duration::from_secs(60);
/// Bytes of new deltas held until they are written.
const DELTA_HELD_BYTES: usize = 256 << 20;

/// Key (after the repository) of the last full repack's record in `repo_config`.
const MAINTAINED: &[u8] = b"\0maintained";

/// A digest of a repository's refs, to tell whether they moved.
fn refs_digest(refs: &[(String, ObjectId)]) -> ObjectId {
    let mut text = Vec::with_capacity(refs.len() * 64);
    for (name, id) in refs {
        text.extend_from_slice(id.as_bytes());
        text.extend_from_slice(name.as_bytes());
        text.push(0);
    }
    gitstratum_git::hash_object(ObjectKind::Blob, &text).unwrap_or_else(|_| ObjectId::from_bytes_or_panic(&[0; 20]))
}

#[cfg(test)]
mod tests {
    use super::geometric_split;

    /// As `git repack --geometric=2`: packs already in progression stay, a run of small packs is
    /// rolled up, and the roll-up grows while the next pack is not twice the rolled total.
    #[test]
    fn geometric_split_matches_git() {
        assert_eq!(geometric_split(&[], 2), 0);
        assert_eq!(geometric_split(&[5], 2), 0);
        assert_eq!(geometric_split(&[1, 2, 4, 8], 2), 0);
        assert_eq!(geometric_split(&[10, 100, 1000], 2), 0);
        assert_eq!(geometric_split(&[1, 1], 2), 2);
        assert_eq!(geometric_split(&[1, 1, 1, 100], 2), 3);
        // Rolling the three small ones (total 7) makes the 10 too small beside them.
        assert_eq!(geometric_split(&[2, 2, 3, 10, 100], 2), 4);
        assert_eq!(geometric_split(&[3, 6, 6, 9], 2), 4);
    }
}
