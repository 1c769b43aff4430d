//! Walking the object graph: what a fetch must send, and whether a push is complete.
//!
//! Objects are loaded a frontier at a time with one batched lookup each, never one by one.
//! Blobs are never loaded while walking: a tree entry's mode says what it is.

use std::collections::{HashMap, HashSet};

use gitstratum_git::{ObjectId, ObjectKind, parse};
use gitstratum_store::{CommitInfo, ObjectStore, RepoId};

use crate::{Error, Result};

/// Reads an object that arrived in a push and is not stored yet; `None` when the push does not
/// have it.
pub(crate) type PackObject<'a> = dyn Fn(&ObjectId) -> Result<Option<(ObjectKind, Vec<u8>)>> + 'a;

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

/// Checks that everything reachable from `tip` is either in the push (`pack`) or already stored.
/// Stored objects are complete by construction (a push is stored only after this check), so the
/// walk stops at them. Returns the first missing object.
pub(crate) fn check_connected(
    store: &dyn ObjectStore,
    repo: RepoId,
    pack: &PackObject<'_>,
    tip: ObjectId,
) -> Result<Option<ObjectId>> {
    let mut seen: HashSet<ObjectId> = HashSet::new();
    let mut frontier = vec![tip];
    while !frontier.is_empty() {
        frontier.retain(|id| seen.insert(*id));
        let mut next = Vec::new();
        let mut outside = Vec::new();
        for id in &frontier {
            match pack(id)? {
                Some((kind, data)) => next.extend(children(id, kind, &data)?.into_iter().map(|(child, _)| child)),
                None => outside.push(*id),
            }
        }
        let present = store.has_many(repo, &outside)?;
        if let Some((id, _)) = outside.iter().zip(&present).find(|(_, present)| !**present) {
            return Ok(Some(*id));
        }
        frontier = next;
    }
    Ok(None)
}

/// Commit graph entries of `ids`; `None` for ids that are not commits. Commits the graph does
/// not know (it always should) are read and parsed instead.
pub(crate) fn load_commits(store: &dyn ObjectStore, repo: RepoId, ids: &[ObjectId]) -> Result<Vec<Option<CommitInfo>>> {
    let mut infos = store.commits(repo, ids)?;
    let unknown: Vec<usize> = infos.iter().enumerate().filter(|(_, c)| c.is_none()).map(|(i, _)| i).collect();
    if unknown.is_empty() {
        return Ok(infos);
    }
    let unknown_ids: Vec<ObjectId> = unknown.iter().map(|i| ids[*i]).collect();
    let kinds = store.info_many(repo, &unknown_ids)?;
    let commit_ids: Vec<(usize, ObjectId)> = unknown
        .iter()
        .zip(&kinds)
        .filter(|(_, k)| k.is_some_and(|k| k.kind == ObjectKind::Commit))
        .map(|(i, _)| (*i, ids[*i]))
        .collect();
    if commit_ids.is_empty() {
        return Ok(infos);
    }
    let just_ids: Vec<ObjectId> = commit_ids.iter().map(|(_, id)| *id).collect();
    for ((i, id), object) in commit_ids.iter().zip(store.get_many(repo, &just_ids)?) {
        if let Some(o) = object {
            let c = parse::commit(&o.data).map_err(|e| corrupt(id, e))?;
            infos[*i] = Some(CommitInfo { tree: c.tree, parents: c.parents, time: c.time, generation: 0 });
        }
    }
    Ok(infos)
}

/// Every commit reachable from `roots` (parents only), a frontier per batched lookup. Commits in
/// `boundary` are walked into but not past: a shallow client has them without their parents.
fn ancestors(
    store: &dyn ObjectStore,
    repo: RepoId,
    roots: &[ObjectId],
    boundary: &HashSet<ObjectId>,
) -> Result<HashMap<ObjectId, CommitInfo>> {
    let mut seen: HashMap<ObjectId, CommitInfo> = HashMap::new();
    let mut frontier: Vec<ObjectId> = roots.to_vec();
    while !frontier.is_empty() {
        frontier.sort_unstable();
        frontier.dedup();
        frontier.retain(|id| !seen.contains_key(id));
        let loaded = load_commits(store, repo, &frontier)?;
        let mut next = Vec::new();
        for (id, commit) in frontier.iter().zip(loaded) {
            let Some(commit) = commit else { continue };
            if !boundary.contains(id) {
                next.extend(commit.parents.iter().copied());
            }
            seen.insert(*id, commit);
        }
        frontier = next;
    }
    Ok(seen)
}

/// Whether every wanted commit reaches one of `common`: the negotiation may stop (`ready`).
/// Walks down from each want, stopping below the lowest generation among `common` (nothing
/// there can reach them). Wants that are not commits count as reaching. Gives up (answering
/// yes, which only makes the pack larger) after `budget` commits.
pub(crate) fn wants_reach_common(
    store: &dyn ObjectStore,
    repo: RepoId,
    wants: &[ObjectId],
    common: &[ObjectId],
    mut budget: usize,
) -> Result<bool> {
    if common.is_empty() {
        return Ok(false);
    }
    let common_set: HashSet<ObjectId> = common.iter().copied().collect();
    let floor = load_commits(store, repo, common)?.iter().flatten().map(|c| c.generation).min().unwrap_or(0);
    let mut reaching: HashSet<ObjectId> = common_set.clone();
    for want in load_commits(store, repo, wants)?.into_iter().zip(wants) {
        let (Some(info), want) = want else { continue };
        if reaching.contains(want) {
            continue;
        }
        let mut seen: HashSet<ObjectId> = HashSet::from([*want]);
        let mut frontier = info.parents.clone();
        let mut found = false;
        while !frontier.is_empty() && !found {
            frontier.retain(|id| seen.insert(*id));
            if frontier.iter().any(|id| reaching.contains(id)) {
                found = true;
                break;
            }
            if budget < frontier.len() {
                return Ok(true);
            }
            budget -= frontier.len();
            let mut next = Vec::new();
            for commit in load_commits(store, repo, &frontier)?.into_iter().flatten() {
                // At or below the lowest common generation, parents cannot be common. Generation 0
                // means "not in the graph": walk on.
                if commit.generation == 0 || commit.generation > floor {
                    next.extend(commit.parents);
                }
            }
            frontier = next;
        }
        if !found {
            return Ok(false);
        }
        reaching.insert(*want);
    }
    Ok(true)
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
    /// `blob:limit=<n>`: blobs smaller than n bytes (git leaves out those of at least n).
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
    /// `deepen-relative`: count `depth` from the client's shallow commits instead.
    pub deepen_relative: bool,
    /// `deepen-since <time>`: send no commit older than this (seconds since the epoch).
    pub deepen_since: Option<i64>,
    /// `deepen-not <ref>`, resolved: send no commit reachable from these.
    pub deepen_not: Vec<ObjectId>,
    /// The client's shallow commits (`shallow <id>`).
    pub client_shallow: HashSet<ObjectId>,
    pub filter: Option<Filter>,
}

impl FetchShape {
    /// Whether the client asked to change where its history is cut.
    pub(crate) fn deepens(&self) -> bool {
        self.depth.is_some() || self.deepen_since.is_some() || !self.deepen_not.is_empty()
    }
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
    /// Entries of a pack to copy as stored (not in `objects`).
    pub reuse: Option<gitstratum_store::PackReuse>,
}

/// The objects a fetch must send: reachable from `wants`, minus what the client has. The client
/// has every commit reachable from `common` (stopping at its shallow commits) and everything in
/// the trees of those commits (the boundary, as Git's own server assumes for thin packs).
/// Objects named in `wants` are always sent, whatever the filter. Without `with_trees`, only
/// commits and tags are listed (enough to answer a negotiation round's shallow list).
///
/// Shallow requests choose which commits are in the client's history: `deepen <n>` (counted
/// from the wants, or with `deepen-relative` from the client's shallow commits) cuts the walk at
/// a depth; `deepen-since` and `deepen-not` leave out commits older than a time or reachable from
/// a ref. A sent commit with a parent left out becomes shallow; a client shallow commit whose
/// parents are now all there is unshallowed.
pub(crate) fn objects_to_send(
    store: &dyn ObjectStore,
    repo: RepoId,
    wants: &[ObjectId],
    common: &[ObjectId],
    shape: &FetchShape,
    with_trees: bool,
) -> Result<FetchSet> {
    let have = ancestors(store, repo, common, &shape.client_shallow)?;
    let have_trees: Vec<ObjectId> = common.iter().filter_map(|id| have.get(id).map(|c| c.tree)).collect();
    let have_objects = tree_contents(store, repo, &have_trees)?;
    let wanted: HashSet<ObjectId> = wants.iter().copied().collect();
    let deepen = shape.deepens();
    let excluded_by_ref: HashSet<ObjectId> = if shape.deepen_not.is_empty() {
        HashSet::new()
    } else {
        ancestors(store, repo, &shape.deepen_not, &HashSet::new())?.into_keys().collect()
    };
    let depth_limit = shape.depth.map(|d| if shape.deepen_relative { d.saturating_add(1) } else { d });

    // Commits (and tags), breadth first so depth counts are minimal. A level of `None` means
    // no depth limit applies (yet): with `deepen-relative`, levels start at the client's shallow
    // commits.
    let mut seen: HashSet<ObjectId> = HashSet::new();
    let mut included: HashMap<ObjectId, Vec<ObjectId>> = HashMap::new();
    let mut included_order: Vec<ObjectId> = Vec::new();
    let mut cut: HashSet<ObjectId> = HashSet::new();
    // Commits at the depth limit: shallow even without parents, as C git reports them.
    let mut at_depth_limit: HashSet<ObjectId> = HashSet::new();
    let mut commits_and_tags = Vec::new();
    let mut roots: Vec<(ObjectId, ObjectKind)> = Vec::new();
    let start_level = if shape.depth.is_some() && !shape.deepen_relative { Some(1) } else { None };
    let mut frontier: Vec<(ObjectId, Option<u32>)> = wants.iter().map(|w| (*w, start_level)).collect();
    while !frontier.is_empty() {
        frontier.retain(|(id, _)| seen.insert(*id));
        // The client has these with all their history: nothing to send or walk. Deepening is the
        // exception: walk through what it has (sending none of it) down to its shallow commits,
        // and past them.
        frontier.retain(|(id, _)| deepen || !have.contains_key(id) || shape.client_shallow.contains(id));
        let ids: Vec<ObjectId> = frontier.iter().map(|(id, _)| *id).collect();
        let commits = load_commits(store, repo, &ids)?;
        let others: Vec<ObjectId> = ids.iter().zip(&commits).filter(|(_, c)| c.is_none()).map(|(id, _)| *id).collect();
        let mut other_objects = store.get_many(repo, &others)?.into_iter();
        let mut next = Vec::new();
        for ((id, level), commit) in frontier.iter().zip(commits) {
            let Some(commit) = commit else {
                let object = other_objects
                    .next()
                    .flatten()
                    .ok_or_else(|| Error::Protocol(format!("object {id} is missing from the repository")))?;
                match object.kind {
                    ObjectKind::Tag => {
                        commits_and_tags.push((*id, ObjectKind::Tag));
                        let tag = parse::tag(&object.data).map_err(|e| corrupt(id, e))?;
                        match tag.target_kind {
                            ObjectKind::Commit | ObjectKind::Tag => next.push((tag.target, *level)),
                            kind => roots.push((tag.target, kind)),
                        }
                    }
                    kind => roots.push((*id, kind)),
                }
                continue;
            };
            if shape.deepen_since.is_some_and(|since| commit.time < since) || excluded_by_ref.contains(id) {
                continue;
            }
            let client_has = have.contains_key(id);
            let client_shallow = shape.client_shallow.contains(id);
            if !client_has {
                commits_and_tags.push((*id, ObjectKind::Commit));
                roots.push((commit.tree, ObjectKind::Tree));
            }
            included.insert(*id, commit.parents.clone());
            included_order.push(*id);
            let level = match level {
                None if shape.deepen_relative && client_shallow => Some(1),
                other => *other,
            };
            if depth_limit.is_some_and(|limit| level.is_some_and(|l| l >= limit)) {
                cut.insert(*id);
                at_depth_limit.insert(*id);
            } else if client_shallow && client_has && !deepen {
                // The client keeps its boundary here.
                cut.insert(*id);
            } else {
                next.extend(commit.parents.iter().map(|p| (*p, level.map(|l| l + 1))));
            }
        }
        frontier = next;
    }
    if (shape.deepen_since.is_some() || !shape.deepen_not.is_empty()) && included.is_empty() {
        return Err(Error::Protocol("no commits selected for shallow requests".into()));
    }
    let mut shallow = Vec::new();
    let mut unshallow = Vec::new();
    for id in &included_order {
        let parents = &included[id];
        // A root is shallow only where the depth limit cut it (and unshallowed when deepened).
        if parents.is_empty() && !at_depth_limit.contains(id) && !shape.client_shallow.contains(id) {
            continue;
        }
        let complete = !cut.contains(id) && parents.iter().all(|p| included.contains_key(p) || have.contains_key(p));
        if shape.client_shallow.contains(id) {
            if complete && deepen {
                unshallow.push(*id);
            }
        } else if !complete && !have.contains_key(id) {
            shallow.push(*id);
        }
    }

    if !with_trees {
        let client_has = have.into_keys().collect();
        return Ok(FetchSet { objects: commits_and_tags, client_has, shallow, unshallow, reuse: None });
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
        // What the client is assumed to have is not sent, except what it names: a partial clone
        // fetches a missing blob by id while its commits are haves (as C git, which sends any
        // object it is asked for by name).
        frontier.retain(|(id, _, _)| (wanted.contains(id) || !have_objects.contains(id)) && seen_objects.insert(*id));
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
            // Sizes come from the object index: no blob is read.
            let mut kept = Vec::new();
            for chunk in blobs.chunks(4096) {
                let ids: Vec<ObjectId> = chunk.iter().map(|(id, _)| *id).collect();
                for (id, info) in ids.iter().zip(store.info_many(repo, &ids)?) {
                    // Git's definition: blobs of at least `limit` bytes are left out.
                    if wanted.contains(id) || info.is_some_and(|i| i.size < limit) {
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
    client_has.extend(have.into_keys());
    Ok(FetchSet { objects: all, client_has, shallow, unshallow, reuse: None })
}

#[cfg(test)]
mod tests {
    use super::{Filter, wants_reach_common};
    use gitstratum_git::{ObjectId, ObjectKind, hash_object};
    use gitstratum_store::mem::MemStore;
    use gitstratum_store::{NewObject, ObjectStore, RepoId};

    fn commit(store: &MemStore, parents: &[ObjectId], n: u32) -> ObjectId {
        let mut text = String::from("tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n");
        for p in parents {
            text.push_str(&format!("parent {p}\n"));
        }
        text.push_str(&format!("committer C <c@x> {n} +0000\n\n{n}\n"));
        let id = hash_object(ObjectKind::Commit, text.as_bytes()).expect("hash");
        store.put(RepoId(1), &[NewObject { id, kind: ObjectKind::Commit, data: text.into_bytes() }]).expect("put");
        id
    }

    #[test]
    fn ready_when_every_want_reaches_a_common_commit() {
        let store = MemStore::new();
        let mut main = vec![commit(&store, &[], 0)];
        for n in 1..50 {
            main.push(commit(&store, &[main[n as usize - 1]], n));
        }
        let other_root = commit(&store, &[], 100);
        let other_tip = commit(&store, &[other_root], 101);
        let repo = RepoId(1);
        let reach = |wants: &[ObjectId], common: &[ObjectId]| {
            wants_reach_common(&store, repo, wants, common, 10_000).expect("walk")
        };
        assert!(reach(&[main[49]], &[main[3]]));
        assert!(reach(&[main[49]], &[main[49]]), "a want the client has");
        assert!(!reach(&[main[49]], &[]));
        assert!(!reach(&[main[49]], &[other_root]), "unrelated history");
        assert!(!reach(&[main[49], other_tip], &[main[40]]), "every want must reach one");
        assert!(reach(&[main[49], other_tip], &[main[40], other_root]));
        assert!(!reach(&[main[10]], &[main[20]]), "a common commit above the want");
        // Past the budget the answer is yes: a larger pack, never a wrong one.
        assert!(wants_reach_common(&store, repo, &[main[49]], &[other_root], 5).expect("walk"));
    }

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
