//! Walking the object graph: what a fetch must send, and whether a push is complete.
//!
//! Objects are loaded a frontier at a time with one batched lookup each, never one by one.
//! Blobs are never loaded while walking: a tree entry's mode says what it is.

use std::collections::{HashMap, HashSet};

use gitstratum_git::{ObjectId, ObjectKind, parse};
use gitstratum_store::{ObjectStore, RepoId};

use crate::{Error, Result};

/// Objects that arrived in a push, by id (borrowed from the decoded pack).
pub(crate) type PackObjects<'a> = HashMap<ObjectId, (ObjectKind, &'a [u8])>;

fn corrupt(id: &ObjectId, e: parse::ParseError) -> Error {
    Error::Protocol(format!("object {id} is malformed: {e}"))
}

/// The ids an object points to, with their kinds where known.
fn children(id: &ObjectId, kind: ObjectKind, data: &[u8]) -> Result<Vec<(ObjectId, Option<ObjectKind>)>> {
    Ok(match kind {
        ObjectKind::Commit => {
            let c = parse::commit(data).map_err(|e| corrupt(id, e))?;
            let mut out = vec![(c.tree, Some(ObjectKind::Tree))];
            out.extend(c.parents.into_iter().map(|p| (p, Some(ObjectKind::Commit))));
            out
        }
        ObjectKind::Tree => parse::tree(data)
            .map_err(|e| corrupt(id, e))?
            .into_iter()
            .filter_map(|e| e.kind().map(|k| (e.id, Some(k))))
            .collect(),
        ObjectKind::Tag => {
            let t = parse::tag(data).map_err(|e| corrupt(id, e))?;
            vec![(t.target, Some(t.target_kind))]
        }
        ObjectKind::Blob => Vec::new(),
    })
}

/// Checks that everything reachable from `tip` is either in `pack` or already stored. Stored
/// objects are complete by construction (a push is stored only after this check), so the walk
/// stops at them. Returns the first missing object.
pub(crate) fn check_connected(
    store: &dyn ObjectStore,
    repo: RepoId,
    pack: &PackObjects,
    tip: ObjectId,
) -> Result<Option<ObjectId>> {
    let mut seen: HashSet<ObjectId> = HashSet::new();
    let mut frontier = vec![tip];
    while !frontier.is_empty() {
        frontier.retain(|id| seen.insert(*id));
        let (in_pack, outside): (Vec<ObjectId>, Vec<ObjectId>) = frontier.iter().partition(|id| pack.contains_key(*id));
        let present = store.has_many(repo, &outside)?;
        if let Some((id, _)) = outside.iter().zip(&present).find(|(_, present)| !**present) {
            return Ok(Some(*id));
        }
        let mut next = Vec::new();
        for id in in_pack {
            let (kind, data) = &pack[&id];
            next.extend(children(&id, *kind, data)?.into_iter().map(|(child, _)| child));
        }
        frontier = next;
    }
    Ok(None)
}

/// Everything reachable from `roots` through commits (parents only), loaded in batches. Commits
/// in `boundary` are walked into but not past: a shallow client has them without their parents.
fn ancestors(
    store: &dyn ObjectStore,
    repo: RepoId,
    roots: &[ObjectId],
    boundary: &HashSet<ObjectId>,
) -> Result<HashSet<ObjectId>> {
    let mut seen = HashSet::new();
    let mut frontier: Vec<ObjectId> = roots.to_vec();
    while !frontier.is_empty() {
        frontier.retain(|id| seen.insert(*id));
        let loaded = store.get_many(repo, &frontier)?;
        let mut next = Vec::new();
        for (id, object) in frontier.iter().zip(loaded) {
            if boundary.contains(id) {
                continue;
            }
            if let Some(o) = object.filter(|o| o.kind == ObjectKind::Commit) {
                next.extend(parse::commit(&o.data).map_err(|e| corrupt(id, e))?.parents);
            }
        }
        frontier = next;
    }
    Ok(seen)
}

/// All trees and blobs reachable from the given trees.
fn tree_contents(store: &dyn ObjectStore, repo: RepoId, trees: &[ObjectId]) -> Result<HashSet<ObjectId>> {
    let mut seen = HashSet::new();
    let mut frontier: Vec<ObjectId> = trees.to_vec();
    while !frontier.is_empty() {
        frontier.retain(|id| seen.insert(*id));
        let loaded = store.get_many(repo, &frontier)?;
        let mut next = Vec::new();
        for (id, object) in frontier.iter().zip(loaded) {
            let Some(o) = object.filter(|o| o.kind == ObjectKind::Tree) else { continue };
            for entry in parse::tree(&o.data).map_err(|e| corrupt(id, e))? {
                match entry.kind() {
                    Some(ObjectKind::Tree) => next.push(entry.id),
                    Some(_) => {
                        seen.insert(entry.id);
                    }
                    None => {}
                }
            }
        }
        frontier = next;
    }
    Ok(seen)
}

/// A partial clone filter (`--filter=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Filter {
    /// `blob:none`
    NoBlobs,
    /// `blob:limit=<n>`: blobs of at most n bytes.
    BlobLimit(u64),
    /// `tree:<depth>`: trees and blobs less than `depth` levels below a commit's root tree.
    TreeDepth(u32),
    /// `object:type=<kind>`
    OnlyKind(ObjectKind),
}

impl Filter {
    pub(crate) fn parse(spec: &str) -> std::result::Result<Filter, String> {
        let size = |s: &str| -> Option<u64> {
            let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
            let n: u64 = digits.parse().ok()?;
            let mult = match unit.to_ascii_lowercase().as_str() {
                "" => 1,
                "k" => 1 << 10,
                "m" => 1 << 20,
                "g" => 1 << 30,
                _ => return None,
            };
            n.checked_mul(mult)
        };
        let invalid = || format!("invalid filter '{spec}'");
        if spec == "blob:none" {
            Ok(Filter::NoBlobs)
        } else if let Some(limit) = spec.strip_prefix("blob:limit=") {
            size(limit).map(Filter::BlobLimit).ok_or_else(invalid)
        } else if let Some(depth) = spec.strip_prefix("tree:") {
            depth.parse().map(Filter::TreeDepth).map_err(|_| invalid())
        } else if let Some(kind) = spec.strip_prefix("object:type=") {
            ObjectKind::from_name(kind.as_bytes()).map(Filter::OnlyKind).ok_or_else(invalid)
        } else {
            Err(format!(
                "the filter '{spec}' is not supported by this server; use blob:none, blob:limit=<n>, tree:<depth> or object:type=<type>"
            ))
        }
    }
}

/// What the client asked for beyond wants and haves.
#[derive(Debug, Clone, Default)]
pub(crate) struct FetchShape {
    /// `deepen <n>`: send commits at most n deep from the wants.
    pub depth: Option<u32>,
    /// The client's shallow commits (`shallow <id>`).
    pub client_shallow: HashSet<ObjectId>,
    pub filter: Option<Filter>,
}

/// What a fetch sends, and what the client is known to have.
pub(crate) struct FetchSet {
    /// Ids with kinds: commits and tags first, then trees, then blobs.
    pub objects: Vec<(ObjectId, ObjectKind)>,
    /// Objects the client has: bases a thin pack may delta against.
    pub client_has: HashSet<ObjectId>,
    /// Commits sent without their parents (the client records them as shallow).
    pub shallow: Vec<ObjectId>,
    /// Client shallow commits whose parents are now sent.
    pub unshallow: Vec<ObjectId>,
}

/// The objects a fetch must send: reachable from `wants`, minus what the client has. The client
/// has every commit reachable from `common` (stopping at its shallow commits) and everything in
/// the trees of those commits (the boundary, as Git's own server assumes for thin packs).
/// Objects named in `wants` are always sent, whatever the filter.
pub(crate) fn objects_to_send(
    store: &dyn ObjectStore,
    repo: RepoId,
    wants: &[ObjectId],
    common: &[ObjectId],
    shape: &FetchShape,
) -> Result<FetchSet> {
    let have_commits = ancestors(store, repo, common, &shape.client_shallow)?;
    let have_trees: Vec<ObjectId> = store
        .get_many(repo, common)?
        .into_iter()
        .zip(common)
        .filter_map(|(o, id)| {
            o.filter(|o| o.kind == ObjectKind::Commit)
                .map(|o| parse::commit(&o.data).map(|c| c.tree).map_err(|e| corrupt(id, e)))
        })
        .collect::<Result<_>>()?;
    let have_objects = tree_contents(store, repo, &have_trees)?;
    let wanted: HashSet<ObjectId> = wants.iter().copied().collect();

    // Commits (and tags), breadth first so depth counts are minimal.
    let mut seen: HashSet<ObjectId> = HashSet::new();
    let mut commits_and_tags = Vec::new();
    let mut roots: Vec<(ObjectId, ObjectKind)> = Vec::new();
    let mut shallow = Vec::new();
    let mut unshallow = Vec::new();
    let mut frontier: Vec<(ObjectId, u32)> = wants.iter().map(|w| (*w, 1)).collect();
    while !frontier.is_empty() {
        frontier.retain(|(id, _)| seen.insert(*id));
        // The client has these with all their history: nothing to send or walk. Deepening a
        // shallow client is the exception: walk through what it has (sending none of it) down
        // to its shallow commits, and past them.
        let deepening = shape.depth.is_some() && !shape.client_shallow.is_empty();
        frontier.retain(|(id, _)| deepening || !have_commits.contains(id) || shape.client_shallow.contains(id));
        let ids: Vec<ObjectId> = frontier.iter().map(|(id, _)| *id).collect();
        let loaded = store.get_many(repo, &ids)?;
        let mut next = Vec::new();
        for ((id, depth), object) in frontier.iter().zip(loaded) {
            let object =
                object.ok_or_else(|| Error::Protocol(format!("object {id} is missing from the repository")))?;
            match object.kind {
                ObjectKind::Commit => {
                    let commit = parse::commit(&object.data).map_err(|e| corrupt(id, e))?;
                    let client_has_it = have_commits.contains(id);
                    if !client_has_it {
                        commits_and_tags.push((*id, ObjectKind::Commit));
                        roots.push((commit.tree, ObjectKind::Tree));
                    }
                    let at_limit = shape.depth.is_some_and(|limit| *depth >= limit);
                    if at_limit {
                        if !client_has_it && !commit.parents.is_empty() {
                            shallow.push(*id);
                        }
                    } else if shape.client_shallow.contains(id) && client_has_it {
                        // A shallow boundary the client has: deepen past it only when asked.
                        if shape.depth.is_some() && !commit.parents.is_empty() {
                            unshallow.push(*id);
                            next.extend(commit.parents.iter().map(|p| (*p, depth + 1)));
                        }
                    } else {
                        next.extend(commit.parents.iter().map(|p| (*p, depth + 1)));
                    }
                }
                ObjectKind::Tag => {
                    commits_and_tags.push((*id, ObjectKind::Tag));
                    let tag = parse::tag(&object.data).map_err(|e| corrupt(id, e))?;
                    match tag.target_kind {
                        ObjectKind::Commit | ObjectKind::Tag => next.push((tag.target, *depth)),
                        kind => roots.push((tag.target, kind)),
                    }
                }
                kind => roots.push((*id, kind)),
            }
        }
        frontier = next;
    }

    // Trees and blobs under the commits, at a tree depth for `tree:<n>` filters.
    let mut trees = Vec::new();
    let mut blobs = Vec::new();
    let mut seen_objects: HashSet<ObjectId> = HashSet::new();
    let keep = |kind: ObjectKind, level: u32, id: &ObjectId| -> bool {
        wanted.contains(id)
            || match shape.filter {
                None | Some(Filter::BlobLimit(_)) => true,
                Some(Filter::NoBlobs) => kind != ObjectKind::Blob,
                Some(Filter::TreeDepth(limit)) => level < limit,
                Some(Filter::OnlyKind(k)) => k == kind,
            }
    };
    let mut frontier: Vec<(ObjectId, ObjectKind, u32)> = roots.into_iter().map(|(id, k)| (id, k, 0)).collect();
    while !frontier.is_empty() {
        frontier.retain(|(id, _, _)| !have_objects.contains(id) && seen_objects.insert(*id));
        let mut to_load = Vec::new();
        for (id, kind, level) in frontier.drain(..) {
            match kind {
                ObjectKind::Blob => {
                    if keep(kind, level, &id) {
                        blobs.push((id, level));
                    }
                }
                ObjectKind::Tree => {
                    if keep(kind, level, &id) {
                        trees.push((id, ObjectKind::Tree));
                    }
                    // Below a filtered tree, nothing is kept either (except for `object:type`).
                    let descend = match shape.filter {
                        Some(Filter::TreeDepth(limit)) => level + 1 < limit || wanted.contains(&id),
                        Some(Filter::OnlyKind(ObjectKind::Commit | ObjectKind::Tag)) => false,
                        _ => true,
                    };
                    if descend {
                        to_load.push((id, level));
                    }
                }
                other => commits_and_tags.push((id, other)),
            }
        }
        let ids: Vec<ObjectId> = to_load.iter().map(|(id, _)| *id).collect();
        let loaded = store.get_many(repo, &ids)?;
        for ((id, level), object) in to_load.iter().zip(loaded) {
            let object = object.ok_or_else(|| Error::Protocol(format!("tree {id} is missing from the repository")))?;
            for entry in parse::tree(&object.data).map_err(|e| corrupt(id, e))? {
                if let Some(kind) = entry.kind() {
                    frontier.push((entry.id, kind, level + 1));
                }
            }
        }
    }
    let blobs: Vec<(ObjectId, ObjectKind)> = match shape.filter {
        Some(Filter::BlobLimit(limit)) => {
            // Sizes need the blobs themselves; load them in batches.
            let mut kept = Vec::new();
            for chunk in blobs.chunks(256) {
                let ids: Vec<ObjectId> = chunk.iter().map(|(id, _)| *id).collect();
                for (id, object) in ids.iter().zip(store.get_many(repo, &ids)?) {
                    if wanted.contains(id) || object.is_some_and(|o| o.data.len() as u64 <= limit) {
                        kept.push((*id, ObjectKind::Blob));
                    }
                }
            }
            kept
        }
        _ => blobs.into_iter().map(|(id, _)| (id, ObjectKind::Blob)).collect(),
    };
    let mut all = commits_and_tags;
    all.extend(trees);
    all.extend(blobs);
    let mut client_has = have_objects;
    client_has.extend(have_commits);
    Ok(FetchSet { objects: all, client_has, shallow, unshallow })
}

#[cfg(test)]
mod tests {
    use super::Filter;
    use gitstratum_git::ObjectKind;

    #[test]
    fn filters() {
        for (spec, expected) in [
            ("blob:none", Ok(Filter::NoBlobs)),
            ("blob:limit=1k", Ok(Filter::BlobLimit(1024))),
            ("blob:limit=2M", Ok(Filter::BlobLimit(2 << 20))),
            ("blob:limit=10", Ok(Filter::BlobLimit(10))),
            ("tree:0", Ok(Filter::TreeDepth(0))),
            ("object:type=commit", Ok(Filter::OnlyKind(ObjectKind::Commit))),
        ] {
            assert_eq!(Filter::parse(spec), expected, "{spec}");
        }
        for bad in
            ["blob:limit=", "blob:limit=1x", "tree:x", "object:type=dir", "sparse:oid=abc", "combine:blob:none+tree:0"]
        {
            assert!(Filter::parse(bad).is_err(), "{bad}");
        }
    }
}
