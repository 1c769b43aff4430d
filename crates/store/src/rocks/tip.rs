//! The default branch's tip, stored so it can be sent on its own: what a depth=1 clone asks for.
//!
//! A full repack keeps the deltas it finds (and those pushed packs brought), and a delta points
//! wherever the delta search found its base: often at an older version of the file. A depth=1
//! clone does not send older versions, so each such object has to be resolved and compressed
//! again for every first request (most of its work, and of C git's: `pack-objects` searches for
//! new deltas instead). A full repack therefore writes every object of the tip of `HEAD` (its
//! commit and the trees and blobs of its root tree) whole, or as a delta whose base is also of
//! the tip, and makes the old base a delta against the new whole object where that is small: the
//! direction C git prefers anyway (recent versions whole, old ones as deltas). The pack stays
//! about the size it was, and the tip's entries are copied as they are.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use gitstratum_git::{ObjectId, ObjectKind, parse};

use super::{Location, RocksStore};
use crate::{ObjectStore, RefStore, RepoId, Result};

/// A tip with more objects than this is left as the delta search stored it (the whole objects
/// and the reversed deltas would be held at once).
const TIP_MAX_OBJECTS: usize = 200_000;
/// Bytes of tip objects and their old bases read at once.
const BATCH_BYTES: u64 = 32 << 20;
/// Time spent turning old bases into deltas against the tip; what is left stays whole.
const REVERSE_BUDGET: Duration = Duration::from_secs(30);
/// Longest delta chain an old base may head once it is a delta itself (git's `pack.depth`).
const MAX_CHAIN: u32 = 50;
/// Objects larger than this are not made deltas.
const MAX_OBJECT: u64 = 16 << 20;
/// Tip objects an old chain's root is tried against.
const TRIES_PER_ROOT: usize = 4;

/// What [`RocksStore::tip_first`] changed in a full repack's plan.
#[derive(Debug, Default)]
pub(super) struct TipPlan {
    /// Objects stored as deltas that the new pack holds whole.
    pub whole: HashSet<ObjectId>,
    /// Old bases that became deltas against a tip object.
    pub reversed: usize,
}

impl RocksStore {
    /// The commit `HEAD` names and every tree and blob of its root tree; empty when `HEAD` is
    /// unset or unborn, or the tip has more than [`TIP_MAX_OBJECTS`] objects.
    pub(super) fn tip_objects(&self, repo: RepoId, refs: &[(String, ObjectId)]) -> Result<HashSet<ObjectId>> {
        let mut out = HashSet::new();
        let Some(head) = self.head(repo)? else { return Ok(out) };
        let Some(tip) = refs.iter().find(|(name, _)| *name == head).map(|(_, id)| *id) else { return Ok(out) };
        let Some(commit) = self.peel_to_commits(repo, vec![tip])?.pop() else { return Ok(out) };
        let Some(object) = self.get_many(repo, &[commit])?.pop().flatten() else { return Ok(out) };
        let Ok(parsed) = parse::commit(&object.data) else { return Ok(out) };
        out.insert(commit);
        let mut trees = vec![parsed.tree];
        while !trees.is_empty() {
            let batch: Vec<ObjectId> = std::mem::take(&mut trees).into_iter().filter(|t| out.insert(*t)).collect();
            for object in self.get_many(repo, &batch)?.into_iter().flatten() {
                let Ok(entries) = parse::tree(&object.data) else { continue };
                for entry in entries {
                    match entry.kind() {
                        Some(ObjectKind::Tree) => trees.push(entry.id),
                        Some(_) => {
                            out.insert(entry.id);
                        }
                        None => {} // a submodule's commit is not ours
                    }
                }
            }
            if out.len() > TIP_MAX_OBJECTS {
                return Ok(HashSet::new());
            }
        }
        Ok(out)
    }

    /// Changes a full repack's plan (`objects` with their stored locations, and the `deltas` the
    /// search found) so every object of `tip` is written whole or as a delta against another
    /// object of `tip`. The whole object at the root of such an object's old chain (outside the
    /// tip: an older version, typically) becomes a delta against it, when that is less than half
    /// its size and keeps chains within [`MAX_CHAIN`], so the pack stays about its size.
    pub(super) fn tip_first(
        &self,
        repo: RepoId,
        tip: &HashSet<ObjectId>,
        objects: &[(ObjectId, Location)],
        deltas: &mut HashMap<ObjectId, (ObjectId, Vec<u8>)>,
    ) -> Result<TipPlan> {
        let mut plan = TipPlan::default();
        if tip.is_empty() {
            return Ok(plan);
        }
        let location: HashMap<ObjectId, &Location> = objects.iter().map(|(id, l)| (*id, l)).collect();
        // Tip objects whose base is not of the tip, with that base.
        let mut freed: Vec<(ObjectId, ObjectId)> = Vec::new();
        for (id, l) in objects.iter().filter(|(id, _)| tip.contains(id)) {
            let base = deltas.get(id).map(|(b, _)| *b).or(l.base);
            if let Some(base) = base.filter(|b| !tip.contains(b)) {
                deltas.remove(id);
                if l.base.is_some() {
                    plan.whole.insert(*id);
                }
                freed.push((*id, base));
            }
        }
        if freed.is_empty() {
            return Ok(plan);
        }
        // What each object is a delta against now (the freed tip objects are whole).
        let freed_ids: HashSet<ObjectId> = freed.iter().map(|(x, _)| *x).collect();
        let base_of = |id: &ObjectId| -> Option<ObjectId> {
            if freed_ids.contains(id) {
                return None;
            }
            deltas.get(id).map(|(b, _)| *b).or_else(|| location.get(id).and_then(|l| l.base))
        };
        let mut children: HashMap<ObjectId, Vec<ObjectId>> = HashMap::new();
        for (id, _) in objects {
            if let Some(base) = base_of(id) {
                children.entry(base).or_default().push(*id);
            }
        }
        // The new deltas: the whole object at the root of each freed tip object's old chain
        // (outside the tip) against that tip object.
        let root = |base: ObjectId| -> Option<ObjectId> {
            let mut at = base;
            for _ in 0..=MAX_CHAIN * 4 {
                if tip.contains(&at) {
                    return None; // the chain ends in the tip: nothing to turn around
                }
                match base_of(&at) {
                    Some(next) => at = next,
                    None => return Some(at),
                }
            }
            None
        };
        // Each root is tried against (at most a few of) the tip objects whose chains it heads;
        // the smallest delta wins.
        let mut tried: HashMap<ObjectId, usize> = HashMap::new();
        let mut too_deep: HashMap<ObjectId, bool> = HashMap::new();
        let pairs: Vec<(ObjectId, ObjectId)> = freed
            .iter()
            .filter_map(|(x, base)| Some((*x, root(*base)?)))
            .filter(|(x, y)| {
                let (Some(lx), Some(ly)) = (location.get(x), location.get(y)) else { return false };
                lx.kind == ly.kind
                    && matches!(ly.kind, ObjectKind::Blob | ObjectKind::Tree)
                    && (32..=MAX_OBJECT).contains(&ly.size)
                    && lx.size <= MAX_OBJECT
                    && lx.size / 4 <= ly.size
                    && !*too_deep.entry(*y).or_insert_with(|| height(&children, *y, MAX_CHAIN) >= MAX_CHAIN)
                    && {
                        let n = tried.entry(*y).or_default();
                        *n += 1;
                        *n <= TRIES_PER_ROOT
                    }
            })
            .collect();
        let mut best: HashMap<ObjectId, (ObjectId, Vec<u8>)> = HashMap::new();
        let started = Instant::now();
        let mut start = 0;
        while start < pairs.len() && started.elapsed() < REVERSE_BUDGET {
            let mut end = start;
            let mut bytes = 0u64;
            while end < pairs.len() && (end == start || bytes < BATCH_BYTES) {
                let (x, y) = pairs[end];
                bytes += location.get(&x).map_or(0, |l| l.size) + location.get(&y).map_or(0, |l| l.size);
                end += 1;
            }
            let ids: Vec<ObjectId> = pairs[start..end].iter().flat_map(|(x, y)| [*x, *y]).collect();
            let loaded = self.get_many(repo, &ids)?;
            for (i, (x, y)) in pairs[start..end].iter().enumerate() {
                let (Some(xo), Some(yo)) = (&loaded[2 * i], &loaded[2 * i + 1]) else { continue };
                let delta = gitstratum_git::delta::encode(&xo.data, &yo.data);
                let limit = best.get(y).map_or(yo.data.len() / 2, |(_, d)| d.len());
                if delta.len() < limit {
                    best.insert(*y, (*x, delta));
                }
            }
            start = end;
        }
        plan.reversed = best.len();
        deltas.extend(best);
        Ok(plan)
    }
}

/// How many delta links hang below `id` at most (0: nothing is a delta against it); stops
/// counting at `limit`.
fn height(children: &HashMap<ObjectId, Vec<ObjectId>>, id: ObjectId, limit: u32) -> u32 {
    let mut deepest = 0;
    let mut stack = vec![(id, 0u32)];
    while let Some((at, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        if deepest >= limit {
            return limit;
        }
        for child in children.get(&at).into_iter().flatten() {
            stack.push((*child, depth + 1));
        }
    }
    deepest
}
