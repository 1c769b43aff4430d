//! Objects across a network of forks: a pull request from a fork brings the objects of its head
//! into the base repository (as GitHub's `refs/pull/N/head` does), so the base can point a ref at
//! it, merge it and serve it, while each repository keeps reading only its own objects.

use std::collections::HashSet;

use gitstratum_git::{ObjectId, ObjectKind, parse};
use gitstratum_store::{NewObject, ObjectStore, RepoId};

use crate::{PullError, Result};

/// Objects are written in batches of about this many bytes (each batch one durable write; none
/// is reachable from a ref before the caller moves one, so a partial copy is harmless).
const BATCH_BYTES: usize = 32 << 20;
const LOOKUP_BATCH: usize = 512;
const READ_BATCH: usize = 16;

/// Copies into `to` every object reachable from the commit `tip` of `from` that `to` does not
/// hold, walking down from `tip` and stopping at what `to` has (a commit or tree `to` holds is
/// whole there, by the store's connectivity rule). Returns how many objects were copied.
pub fn import_reachable(objects: &dyn ObjectStore, from: RepoId, to: RepoId, tip: ObjectId) -> Result<usize> {
    if from == to {
        return Ok(0);
    }
    // Nothing `to` relies on may be pruned while the copy is on its way to a ref.
    let _pin = objects.pin(to);
    let mut copied = 0;
    let mut batch = Batch::default();
    // The commits `to` lacks, written last and all at once: the commit graph gives a commit its
    // generation from its stored parents, so none may be stored before its parents.
    let mut commits = Vec::new();
    let mut trees = Vec::new();
    let mut frontier = vec![tip];
    let mut seen = HashSet::new();
    while !frontier.is_empty() {
        let ids: Vec<ObjectId> = frontier.drain(..).filter(|id| seen.insert(*id)).collect();
        for chunk in ids.chunks(LOOKUP_BATCH) {
            let have = objects.has_many(to, chunk)?;
            let missing: Vec<ObjectId> = chunk.iter().zip(have).filter(|(_, h)| !h).map(|(id, _)| *id).collect();
            for part in missing.chunks(READ_BATCH) {
                for (id, object) in read(objects, from, part)? {
                    if object.kind != ObjectKind::Commit {
                        return Err(PullError::Refused(format!("{id} is a {:?}, not a commit", object.kind)));
                    }
                    let commit =
                        parse::commit(&object.data).map_err(|e| PullError::Refused(format!("commit {id}: {e}")))?;
                    trees.push(commit.tree);
                    frontier.extend(commit.parents);
                    commits.push(NewObject { id, kind: object.kind, data: object.data });
                }
            }
        }
    }
    // Their trees and blobs, level by level.
    let mut level = trees;
    while !level.is_empty() {
        let ids: Vec<ObjectId> = level.drain(..).filter(|id| seen.insert(*id)).collect();
        for chunk in ids.chunks(LOOKUP_BATCH) {
            let have = objects.has_many(to, chunk)?;
            let missing: Vec<ObjectId> = chunk.iter().zip(have).filter(|(_, h)| !h).map(|(id, _)| *id).collect();
            for part in missing.chunks(READ_BATCH) {
                for (id, object) in read(objects, from, part)? {
                    if object.kind == ObjectKind::Tree {
                        let entries =
                            parse::tree(&object.data).map_err(|e| PullError::Refused(format!("tree {id}: {e}")))?;
                        // Submodule entries name commits of other repositories: nothing to copy.
                        level.extend(entries.iter().filter(|e| e.kind().is_some()).map(|e| e.id));
                    }
                    copied += batch.add(objects, to, NewObject { id, kind: object.kind, data: object.data })?;
                }
            }
        }
    }
    copied += batch.flush(objects, to)?;
    if !commits.is_empty() {
        objects.put(to, &commits)?;
        copied += commits.len();
    }
    Ok(copied)
}

/// The objects `ids` of `repo` (callers pass at most [`READ_BATCH`], so a run of large blobs is
/// never all in memory at once), each one that must be there.
fn read(
    objects: &dyn ObjectStore,
    repo: RepoId,
    ids: &[ObjectId],
) -> Result<Vec<(ObjectId, gitstratum_store::Object)>> {
    ids.iter()
        .zip(objects.get_many(repo, ids)?)
        .map(|(id, object)| object.map(|o| (*id, o)).ok_or_else(|| missing_in(repo, *id)))
        .collect()
}

fn missing_in(repo: RepoId, id: ObjectId) -> PullError {
    PullError::Store(gitstratum_store::Error::Corrupt(format!("object {id} is missing from repository {}", repo.0)))
}

#[derive(Default)]
struct Batch {
    objects: Vec<NewObject>,
    bytes: usize,
}

impl Batch {
    /// Adds an object; writes the batch once it is full. Returns how many objects were written.
    fn add(&mut self, store: &dyn ObjectStore, to: RepoId, object: NewObject) -> Result<usize> {
        self.bytes += object.data.len();
        self.objects.push(object);
        if self.bytes >= BATCH_BYTES { self.flush(store, to) } else { Ok(0) }
    }

    fn flush(&mut self, store: &dyn ObjectStore, to: RepoId) -> Result<usize> {
        if self.objects.is_empty() {
            return Ok(0);
        }
        store.put(to, &self.objects)?;
        let n = self.objects.len();
        self.objects.clear();
        self.bytes = 0;
        Ok(n)
    }
}
