//! Commit graph entries for a batch of new objects, shared by every implementation.

use std::collections::HashMap;

use gitstratum_git::{ObjectId, ObjectKind, parse};

use crate::{CommitInfo, Error, NewObject, Result};

/// The commit graph entries of the commits among `objects`. `stored` answers generation numbers
/// of parents that are not in the batch (`None`: not stored, counted as 0). Parents in the batch
/// are computed first, whatever order the batch is in.
pub fn commit_records(
    objects: &[NewObject],
    stored: impl FnOnce(&[ObjectId]) -> Result<Vec<Option<u32>>>,
) -> Result<Vec<(ObjectId, CommitInfo)>> {
    let mut parsed = Vec::new();
    for o in objects.iter().filter(|o| o.kind == ObjectKind::Commit) {
        let c = parse::commit(&o.data).map_err(|e| Error::Corrupt(format!("commit {}: {e}", o.id)))?;
        parsed.push((o.id, c));
    }
    commit_records_parsed(&parsed, stored)
}

/// [`commit_records`] of commits already parsed.
pub fn commit_records_parsed(
    commits: &[(ObjectId, parse::Commit)],
    stored: impl FnOnce(&[ObjectId]) -> Result<Vec<Option<u32>>>,
) -> Result<Vec<(ObjectId, CommitInfo)>> {
    let parsed: HashMap<ObjectId, &parse::Commit> = commits.iter().map(|(id, c)| (*id, c)).collect();
    let mut outside: Vec<ObjectId> =
        parsed.values().flat_map(|c| c.parents.iter()).filter(|p| !parsed.contains_key(*p)).copied().collect();
    outside.sort_unstable();
    outside.dedup();
    let mut generation: HashMap<ObjectId, u32> = HashMap::with_capacity(parsed.len() + outside.len());
    if !outside.is_empty() {
        for (id, g) in outside.iter().zip(stored(&outside)?) {
            generation.insert(*id, g.unwrap_or(0));
        }
    }
    // Iterative post-order walk: a commit's generation once all its parents have one.
    let mut out = Vec::with_capacity(parsed.len());
    for start in commits.iter().map(|(id, _)| *id) {
        let mut stack = vec![start];
        while let Some(&id) = stack.last() {
            if generation.contains_key(&id) {
                stack.pop();
                continue;
            }
            let commit = parsed[&id];
            let pending: Vec<ObjectId> =
                commit.parents.iter().filter(|p| !generation.contains_key(*p)).copied().collect();
            if pending.is_empty() {
                let g = commit.parents.iter().map(|p| generation[p]).max().unwrap_or(0).saturating_add(1);
                generation.insert(id, g);
                stack.pop();
            } else {
                // A cycle cannot occur (ids are hashes of content that names its parents).
                stack.extend(pending);
            }
        }
    }
    let mut seen = std::collections::HashSet::with_capacity(commits.len());
    for (id, c) in commits {
        if seen.insert(*id) {
            let info =
                CommitInfo { tree: c.tree, parents: c.parents.clone(), time: c.time, generation: generation[id] };
            out.push((*id, info));
        }
    }
    Ok(out)
}
