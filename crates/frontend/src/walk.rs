//! Walking the object graph: what a fetch must send, and whether a push is complete.
//!
//! Objects are loaded a frontier at a time with one batched lookup each, never one by one.
//! Blobs are never loaded while walking: a tree entry's mode says what it is.

use std::collections::{HashMap, HashSet};

use gitstratum_git::{ObjectId, ObjectKind, parse};
use gitstratum_store::{ObjectStore, RepoId};

use crate::{Error, Result};

/// Objects that arrived in a push, by id.
pub(crate) type PackObjects = HashMap<ObjectId, (ObjectKind, Vec<u8>)>;

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

/// Everything reachable from `roots` through commits (parents only), loaded in batches.
fn ancestors(store: &dyn ObjectStore, repo: RepoId, roots: &[ObjectId]) -> Result<HashSet<ObjectId>> {
    let mut seen = HashSet::new();
    let mut frontier: Vec<ObjectId> = roots.to_vec();
    while !frontier.is_empty() {
        frontier.retain(|id| seen.insert(*id));
        let loaded = store.get_many(repo, &frontier)?;
        let mut next = Vec::new();
        for (id, object) in frontier.iter().zip(loaded) {
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

/// What a fetch sends, and what the client is known to have.
pub(crate) struct FetchSet {
    /// Ids with kinds: commits and tags first, then trees, then blobs.
    pub objects: Vec<(ObjectId, ObjectKind)>,
    /// Objects the client has: bases a thin pack may delta against.
    pub client_has: HashSet<ObjectId>,
}

/// The objects a fetch must send: reachable from `wants`, minus what the client has. The client
/// has every commit reachable from `common` and everything in the trees of those commits (the
/// boundary, as Git's own server assumes for thin packs). Returns ids with kinds, commits and
/// tags first, then trees, then blobs.
pub(crate) fn objects_to_send(
    store: &dyn ObjectStore,
    repo: RepoId,
    wants: &[ObjectId],
    common: &[ObjectId],
) -> Result<FetchSet> {
    let have_commits = ancestors(store, repo, common)?;
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

    let mut seen: HashSet<ObjectId> = HashSet::new();
    let mut commits_and_tags = Vec::new();
    let mut trees = Vec::new();
    let mut blobs = Vec::new();
    let mut frontier: Vec<(ObjectId, Option<ObjectKind>)> = wants.iter().map(|w| (*w, None)).collect();
    while !frontier.is_empty() {
        frontier.retain(|(id, _)| !have_commits.contains(id) && !have_objects.contains(id) && seen.insert(*id));
        // Blobs need no loading: their kind is known from the tree that names them.
        let (known_blobs, to_load): (Vec<_>, Vec<_>) =
            frontier.into_iter().partition(|(_, k)| *k == Some(ObjectKind::Blob));
        blobs.extend(known_blobs.into_iter().map(|(id, _)| (id, ObjectKind::Blob)));
        let ids: Vec<ObjectId> = to_load.iter().map(|(id, _)| *id).collect();
        let loaded = store.get_many(repo, &ids)?;
        let mut next = Vec::new();
        for (id, object) in ids.iter().zip(loaded) {
            let object =
                object.ok_or_else(|| Error::Protocol(format!("object {id} is missing from the repository")))?;
            match object.kind {
                ObjectKind::Tree => trees.push((*id, ObjectKind::Tree)),
                ObjectKind::Blob => blobs.push((*id, ObjectKind::Blob)),
                kind => commits_and_tags.push((*id, kind)),
            }
            next.extend(children(id, object.kind, &object.data)?);
        }
        frontier = next;
    }
    let mut all = commits_and_tags;
    all.extend(trees);
    all.extend(blobs);
    let mut client_has = have_objects;
    client_has.extend(have_commits);
    Ok(FetchSet { objects: all, client_has })
}
