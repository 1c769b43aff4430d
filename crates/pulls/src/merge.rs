//! Three-way merges on stored objects, as `git merge` makes them (its default `ort` strategy),
//! in Rust: the merge base of two commits, a tree merge path by path, and a line merge of files
//! both sides changed (imara-diff's Myers diff of each side against the base, then git's rules
//! for which changes conflict).
//!
//! Where it differs from git on purpose (said in the README): renames are not detected (a file
//! renamed on one side and changed on the other is a modify/delete conflict), and with several
//! merge bases (criss-cross histories) the newest is used instead of merging them into a virtual
//! one. Nothing is written to the store here: the merge hands back the new objects.

use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};

use gitstratum_git::{ObjectId, ObjectKind, hash_object, parse};
use gitstratum_store::{CommitInfo, NewObject, ObjectStore, RepoId};

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error(transparent)]
    Store(#[from] gitstratum_store::Error),
    #[error("object {0} is missing")]
    Missing(ObjectId),
    #[error("object {0} is not a {1}")]
    WrongKind(ObjectId, &'static str),
    #[error(transparent)]
    Parse(#[from] parse::ParseError),
    #[error("SHA-1 collision detected while writing an object")]
    Collision,
}

pub type Result<T, E = MergeError> = std::result::Result<T, E>;

/// git's empty tree: never stored, always known.
pub const EMPTY_TREE: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";
/// The first bytes git looks at to call a file binary (a NUL among them).
const BINARY_PROBE: usize = 8000;
/// Files larger than this that both sides changed are a conflict rather than read whole for a
/// line merge (a server merges many pull requests; git's own merge has no such bound).
pub const MAX_MERGE_BYTES: u64 = 64 << 20;
/// Conflicting paths listed (a merge stops naming them after this many; it still conflicts).
pub const MAX_CONFLICTS: usize = 1000;

const MODE_TREE: u32 = 0o040000;
const MODE_FILE: u32 = 0o100644;
const MODE_EXEC: u32 = 0o100755;

fn empty_tree() -> ObjectId {
    ObjectId::from_hex(EMPTY_TREE.as_bytes()).expect("a valid id")
}

/// Objects read from a repository's store, and the ones a merge made, with a cache.
pub struct Odb<'a> {
    store: &'a dyn ObjectStore,
    repo: RepoId,
    /// New objects, in the order made (what the caller writes).
    pub written: Vec<NewObject>,
    made: HashMap<ObjectId, usize>,
}

impl<'a> Odb<'a> {
    pub fn new(store: &'a dyn ObjectStore, repo: RepoId) -> Odb<'a> {
        Odb { store, repo, written: Vec::new(), made: HashMap::new() }
    }

    pub fn read(&self, id: ObjectId) -> Result<(ObjectKind, Vec<u8>)> {
        if let Some(&i) = self.made.get(&id) {
            let o = &self.written[i];
            return Ok((o.kind, o.data.clone()));
        }
        let object = self.store.get_many(self.repo, &[id])?.pop().flatten().ok_or(MergeError::Missing(id))?;
        Ok((object.kind, object.data))
    }

    fn read_kind(&self, id: ObjectId, kind: ObjectKind) -> Result<Vec<u8>> {
        let (got, data) = self.read(id)?;
        if got != kind {
            return Err(MergeError::WrongKind(id, kind.as_str()));
        }
        Ok(data)
    }

    /// Hashes an object and keeps it for the caller to write.
    pub fn write(&mut self, kind: ObjectKind, data: Vec<u8>) -> Result<ObjectId> {
        let id = hash_object(kind, &data).map_err(|_| MergeError::Collision)?;
        if !self.made.contains_key(&id) {
            self.made.insert(id, self.written.len());
            self.written.push(NewObject { id, kind, data });
        }
        Ok(id)
    }

    pub fn commit(&self, id: ObjectId) -> Result<CommitInfo> {
        if let Some(&i) = self.made.get(&id) {
            let c = parse::commit(&self.written[i].data)?;
            return Ok(CommitInfo { tree: c.tree, parents: c.parents, time: c.time, generation: u32::MAX });
        }
        self.store.commits(self.repo, &[id])?.pop().flatten().ok_or(MergeError::WrongKind(id, "commit"))
    }

    fn tree(&self, id: ObjectId) -> Result<BTreeMap<Vec<u8>, Entry>> {
        if id == empty_tree() {
            return Ok(BTreeMap::new());
        }
        let data = self.read_kind(id, ObjectKind::Tree)?;
        Ok(parse::tree(&data)?.into_iter().map(|e| (e.name.to_vec(), Entry { mode: e.mode, id: e.id })).collect())
    }
}

/// The newest common ancestor of `a` and `b` (git's paint-down walk over the commit graph);
/// `None` when their histories are unrelated.
pub fn merge_base(odb: &Odb<'_>, a: ObjectId, b: ObjectId) -> Result<Option<ObjectId>> {
    const ONE: u8 = 1;
    const TWO: u8 = 2;
    const STALE: u8 = 4;
    const RESULT: u8 = 8;
    if a == b {
        return Ok(Some(a));
    }
    let mut flags: HashMap<ObjectId, u8> = HashMap::new();
    let mut info: HashMap<ObjectId, CommitInfo> = HashMap::new();
    // Newest first: by generation, then committer time.
    let mut queue: BinaryHeap<(u32, i64, ObjectId)> = BinaryHeap::new();
    for (id, flag) in [(a, ONE), (b, TWO)] {
        let c = odb.commit(id)?;
        queue.push((c.generation, c.time, id));
        info.insert(id, c);
        flags.insert(id, flag);
    }
    let mut results = Vec::new();
    while queue.iter().any(|(_, _, id)| flags[id] & STALE == 0) {
        let Some((_, _, id)) = queue.pop() else { break };
        let mut f = flags[&id] & (ONE | TWO | STALE);
        if f == ONE | TWO {
            if flags[&id] & RESULT == 0 {
                flags.insert(id, flags[&id] | RESULT);
                results.push(id);
            }
            f |= STALE;
        }
        let parents = info[&id].parents.clone();
        for parent in parents {
            let pf = flags.get(&parent).copied().unwrap_or(0);
            if pf & f == f {
                continue;
            }
            if let std::collections::hash_map::Entry::Vacant(slot) = info.entry(parent) {
                let Ok(c) = odb.commit(parent) else { continue }; // a shallow boundary
                slot.insert(c);
            }
            flags.insert(parent, pf | f);
            let c = &info[&parent];
            queue.push((c.generation, c.time, parent));
        }
    }
    Ok(results
        .into_iter()
        // A result reached from another result is not a best common ancestor.
        .filter(|id| flags[id] & STALE == 0)
        .max_by_key(|id| (info[id].generation, info[id].time, *id)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    mode: u32,
    id: ObjectId,
}

impl Entry {
    fn is_tree(&self) -> bool {
        self.mode == MODE_TREE
    }
    fn is_file(&self) -> bool {
        self.mode == MODE_FILE || self.mode == MODE_EXEC
    }
}

/// A tree merge: the merged tree, or the paths that conflict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeMerge {
    Clean(ObjectId),
    Conflict(Vec<String>),
}

/// Merges `theirs` into `ours` against `base` (trees; `None` base: no common history).
pub fn merge_trees(odb: &mut Odb<'_>, base: Option<ObjectId>, ours: ObjectId, theirs: ObjectId) -> Result<TreeMerge> {
    let mut conflicts = Vec::new();
    let tree = merge_tree(odb, base.unwrap_or_else(empty_tree), ours, theirs, "", &mut conflicts)?;
    if conflicts.is_empty() {
        Ok(TreeMerge::Clean(tree.unwrap_or_else(empty_tree)))
    } else {
        conflicts.truncate(MAX_CONFLICTS);
        Ok(TreeMerge::Conflict(conflicts))
    }
}

/// The merged tree (`None` when it is empty), conflicts added to `conflicts` with `prefix`.
fn merge_tree(
    odb: &mut Odb<'_>,
    base: ObjectId,
    ours: ObjectId,
    theirs: ObjectId,
    prefix: &str,
    conflicts: &mut Vec<String>,
) -> Result<Option<ObjectId>> {
    if ours == theirs || base == theirs {
        return Ok(Some(ours).filter(|t| *t != empty_tree()));
    }
    if base == ours {
        return Ok(Some(theirs).filter(|t| *t != empty_tree()));
    }
    let (b, o, t) = (odb.tree(base)?, odb.tree(ours)?, odb.tree(theirs)?);
    let names: BTreeSet<&Vec<u8>> = b.keys().chain(o.keys()).chain(t.keys()).collect();
    let mut out: Vec<(Vec<u8>, Entry)> = Vec::new();
    for name in names {
        let (be, oe, te) = (b.get(name).copied(), o.get(name).copied(), t.get(name).copied());
        let path = format!("{prefix}{}", String::from_utf8_lossy(name));
        let merged = if oe == te || be == te {
            oe
        } else if be == oe {
            te
        } else {
            merge_entry(odb, be, oe, te, &path, conflicts)?
        };
        if let Some(e) = merged {
            out.push((name.clone(), e));
        }
    }
    if out.is_empty() {
        return Ok(None);
    }
    // git orders entries by name, a tree's name as if it ended in '/'.
    out.sort_by(|(a, ea), (b, eb)| {
        let key = |n: &Vec<u8>, e: &Entry| {
            let mut k = n.clone();
            if e.is_tree() {
                k.push(b'/');
            }
            k
        };
        key(a, ea).cmp(&key(b, eb))
    });
    let mut data = Vec::new();
    for (name, e) in &out {
        data.extend_from_slice(format!("{:o} ", e.mode).as_bytes());
        data.extend_from_slice(name);
        data.push(0);
        data.extend_from_slice(e.id.as_bytes());
    }
    Ok(Some(odb.write(ObjectKind::Tree, data)?))
}

/// One path both sides changed, differently.
fn merge_entry(
    odb: &mut Odb<'_>,
    be: Option<Entry>,
    oe: Option<Entry>,
    te: Option<Entry>,
    path: &str,
    conflicts: &mut Vec<String>,
) -> Result<Option<Entry>> {
    let tree_or_none = |e: Option<Entry>| e.is_none_or(|e| e.is_tree());
    // Directories on every side that has the path: merge inside (a deleted directory is empty,
    // so a file changed in it on the other side is a modify/delete conflict at the file).
    if tree_or_none(be) && tree_or_none(oe) && tree_or_none(te) {
        let id = |e: Option<Entry>| e.map_or_else(empty_tree, |e| e.id);
        let tree = merge_tree(odb, id(be), id(oe), id(te), &format!("{path}/"), conflicts)?;
        return Ok(tree.map(|id| Entry { mode: MODE_TREE, id }));
    }
    let (Some(o), Some(t)) = (oe, te) else {
        conflicts.push(path.to_owned()); // modified on one side, deleted (or made a directory) on the other
        return Ok(oe);
    };
    if !(o.is_file() && t.is_file()) || be.is_some_and(|b| !b.is_file()) {
        conflicts.push(path.to_owned()); // symlinks, submodules, a file against a directory
        return Ok(oe);
    }
    let mode = match be {
        _ if o.mode == t.mode => o.mode,
        Some(b) if b.mode == o.mode => t.mode,
        Some(b) if b.mode == t.mode => o.mode,
        _ => {
            conflicts.push(path.to_owned());
            return Ok(oe);
        }
    };
    if o.id == t.id {
        return Ok(Some(Entry { mode, id: o.id }));
    }
    let ids: Vec<ObjectId> = [be.map(|b| b.id), Some(o.id), Some(t.id)].into_iter().flatten().collect();
    let sizes = odb.store.info_many(odb.repo, &ids)?;
    if sizes.iter().flatten().any(|info| info.size > MAX_MERGE_BYTES) {
        conflicts.push(path.to_owned());
        return Ok(oe);
    }
    let base = match be {
        Some(b) => odb.read_kind(b.id, ObjectKind::Blob)?,
        None => Vec::new(),
    };
    let (ours, theirs) = (odb.read_kind(o.id, ObjectKind::Blob)?, odb.read_kind(t.id, ObjectKind::Blob)?);
    match merge_content(&base, &ours, &theirs) {
        Some(merged) => Ok(Some(Entry { mode, id: odb.write(ObjectKind::Blob, merged)? })),
        None => {
            conflicts.push(path.to_owned());
            Ok(oe)
        }
    }
}

fn is_binary(data: &[u8]) -> bool {
    data[..data.len().min(BINARY_PROBE)].contains(&0)
}

/// A line merge of two changed versions of a file: `None` when they conflict. Changes conflict as
/// in git: when their ranges of base lines overlap or touch (an insertion right next to another
/// change included) and the two sides' resulting lines differ. Binary files merge only when one
/// side kept the base.
pub fn merge_content(base: &[u8], ours: &[u8], theirs: &[u8]) -> Option<Vec<u8>> {
    if ours == theirs || base == theirs {
        return Some(ours.to_vec());
    }
    if base == ours {
        return Some(theirs.to_vec());
    }
    if is_binary(base) || is_binary(ours) || is_binary(theirs) {
        return None;
    }
    let side = |after: &[u8]| {
        let input = imara_diff::InternedInput::new(base, after);
        let mut diff = imara_diff::Diff::compute(imara_diff::Algorithm::Myers, &input);
        diff.postprocess_lines(&input);
        diff.hunks().collect::<Vec<_>>()
    };
    fn lines(data: &[u8]) -> Vec<&[u8]> {
        imara_diff::sources::byte_lines(data).collect()
    }
    let (b, o, t) = (lines(base), lines(ours), lines(theirs));
    let sides = [(side(ours), &o), (side(theirs), &t)];
    let mut out: Vec<u8> = Vec::with_capacity(ours.len().max(theirs.len()));
    let mut next = [0usize, 0usize]; // the next hunk of each side
    let mut shift = [0i64, 0i64]; // each side's lines minus the base's, before `pos`
    let mut pos = 0u32; // base lines copied so far
    loop {
        // The group starts at the earliest hunk left.
        let starts = [0, 1].map(|s| sides[s].0.get(next[s]).map(|h| h.before.start));
        let Some(start) = starts.iter().flatten().min().copied() else { break };
        let mut end = start;
        let mut taken = [next[0], next[1]];
        // Take every hunk that overlaps or touches the group, from either side, until none does.
        loop {
            let mut grew = false;
            for s in 0..2 {
                while let Some(h) = sides[s].0.get(taken[s]) {
                    // git: two changes are apart only when one ends before the other starts.
                    if h.before.start > end {
                        break;
                    }
                    end = end.max(h.before.end);
                    taken[s] += 1;
                    grew = true;
                }
            }
            if !grew {
                break;
            }
        }
        for line in &b[pos as usize..start as usize] {
            out.extend_from_slice(line);
        }
        // Each side's lines for base lines start..end.
        let mut texts: [Option<&[&[u8]]>; 2] = [None, None];
        for s in 0..2 {
            if taken[s] == next[s] {
                continue; // this side kept these lines
            }
            let delta: i64 =
                sides[s].0[next[s]..taken[s]].iter().map(|h| h.after.len() as i64 - h.before.len() as i64).sum();
            let from = (i64::from(start) + shift[s]) as usize;
            let to = (i64::from(end) + shift[s] + delta) as usize;
            texts[s] = Some(&sides[s].1[from..to]);
            shift[s] += delta;
            next[s] = taken[s];
        }
        let chosen = match texts {
            [Some(a), Some(b)] if a == b => a,
            [Some(_), Some(_)] => return None,
            [Some(a), None] | [None, Some(a)] => a,
            [None, None] => &[],
        };
        for line in chosen {
            out.extend_from_slice(line);
        }
        pos = end;
    }
    for line in &b[pos as usize..] {
        out.extend_from_slice(line);
    }
    Some(out)
}

pub use gitstratum_git::parse::Signature;

/// A signature as a commit header writes it (UTC).
fn signature_line(s: &Signature) -> String {
    // Names and emails with <, > or newlines would break the header: drop those characters.
    let clean = |s: &str| s.chars().filter(|c| !matches!(c, '<' | '>' | '\n' | '\0')).collect::<String>();
    format!("{} <{}> {} +0000", clean(&s.name).trim(), clean(&s.email).trim(), s.time)
}

/// Writes a commit object; its id.
pub fn write_commit(
    odb: &mut Odb<'_>,
    tree: ObjectId,
    parents: &[ObjectId],
    author: &Signature,
    committer: &Signature,
    message: &str,
) -> Result<ObjectId> {
    let mut text = format!("tree {tree}\n");
    for p in parents {
        text.push_str(&format!("parent {p}\n"));
    }
    text.push_str(&format!(
        "author {}\ncommitter {}\n\n{}",
        signature_line(author),
        signature_line(committer),
        message.trim_end()
    ));
    text.push('\n');
    odb.write(ObjectKind::Commit, text.into_bytes())
}
