//! What the ingestor reads from Git: the workflow files at a commit, and the paths a push changed.
//! Synchronous (the object store is); callers run it on the blocking pool. Every read is bounded:
//! a repository cannot make the ingestor read without limit.

use gitstratum_git::parse;
use gitstratum_store::{ObjectId, ObjectKind, ObjectStore, RepoId};
use gitstratum_workflow::{WORKFLOW_DIRS, is_workflow_file};

/// Workflow files read at one commit, at most.
pub const MAX_WORKFLOW_FILES: usize = 100;
/// A workflow file larger than this is refused (a failed run says so).
pub const MAX_WORKFLOW_BYTES: usize = 512 * 1024;
/// Changed paths collected before giving up and treating the change as unknown (path filters then
/// let the push through, as GitHub does for very large diffs).
pub const MAX_CHANGED_PATHS: usize = 3000;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("storage: {0}")]
    Store(#[from] gitstratum_store::Error),
    #[error("object {0} is missing")]
    Missing(ObjectId),
    #[error(transparent)]
    Parse(#[from] parse::ParseError),
}

/// One workflow file: its path in the repository and its text (or why it cannot be read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowFile {
    pub path: String,
    pub text: Result<String, String>,
}

fn object(store: &dyn ObjectStore, repo: RepoId, id: ObjectId) -> Result<gitstratum_store::Object, SourceError> {
    store.get_many(repo, &[id])?.pop().flatten().ok_or(SourceError::Missing(id))
}

/// The commit a ref value names: itself, or what an annotated tag (chain) points to. `None` when
/// it names something else (a tag of a tree or blob).
pub fn peel_to_commit(store: &dyn ObjectStore, repo: RepoId, id: ObjectId) -> Result<Option<ObjectId>, SourceError> {
    let mut id = id;
    for _ in 0..8 {
        let obj = object(store, repo, id)?;
        match obj.kind {
            ObjectKind::Commit => return Ok(Some(id)),
            ObjectKind::Tag => id = parse::tag(&obj.data)?.target,
            _ => return Ok(None),
        }
    }
    Ok(None)
}

fn tree_of(store: &dyn ObjectStore, repo: RepoId, commit: ObjectId) -> Result<ObjectId, SourceError> {
    let info = store.commits(repo, &[commit])?.pop().flatten().ok_or(SourceError::Missing(commit))?;
    Ok(info.tree)
}

/// The entries of a tree as (name, mode, id).
fn entries(store: &dyn ObjectStore, repo: RepoId, tree: ObjectId) -> Result<Vec<(String, u32, ObjectId)>, SourceError> {
    let obj = object(store, repo, tree)?;
    Ok(parse::tree(&obj.data)?
        .into_iter()
        .map(|e| (String::from_utf8_lossy(e.name).into_owned(), e.mode, e.id))
        .collect())
}

fn subtree(store: &dyn ObjectStore, repo: RepoId, tree: ObjectId, path: &str) -> Result<Option<ObjectId>, SourceError> {
    let mut current = tree;
    for part in path.split('/') {
        let found =
            entries(store, repo, current)?.into_iter().find(|(name, mode, _)| name == part && *mode == 0o040000);
        match found {
            Some((_, _, id)) => current = id,
            None => return Ok(None),
        }
    }
    Ok(Some(current))
}

/// The workflow files at `commit`: those of the first folder of [`WORKFLOW_DIRS`] that exists,
/// sorted by path.
pub fn workflow_files(
    store: &dyn ObjectStore,
    repo: RepoId,
    commit: ObjectId,
) -> Result<Vec<WorkflowFile>, SourceError> {
    let root = tree_of(store, repo, commit)?;
    for dir in WORKFLOW_DIRS {
        let Some(tree) = subtree(store, repo, root, dir)? else { continue };
        let mut files = Vec::new();
        let mut listed = entries(store, repo, tree)?;
        listed.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, mode, id) in listed {
            if mode == 0o040000 || mode == 0o160000 || !is_workflow_file(&name) {
                continue;
            }
            if files.len() == MAX_WORKFLOW_FILES {
                break;
            }
            let path = format!("{dir}/{name}");
            let text = match store.info_many(repo, &[id])?.pop().flatten() {
                Some(info) if info.size > MAX_WORKFLOW_BYTES as u64 => Err(format!(
                    "the file has {} bytes; workflow files may have at most {MAX_WORKFLOW_BYTES}",
                    info.size
                )),
                _ => String::from_utf8(object(store, repo, id)?.data).map_err(|_| "the file is not UTF-8".to_owned()),
            };
            files.push(WorkflowFile { path, text });
        }
        return Ok(files);
    }
    Ok(Vec::new())
}

/// The paths that differ between two commits' trees (added, removed or changed files), or `None`
/// when there are more than [`MAX_CHANGED_PATHS`].
pub fn changed_paths(
    store: &dyn ObjectStore,
    repo: RepoId,
    old: ObjectId,
    new: ObjectId,
) -> Result<Option<Vec<String>>, SourceError> {
    let (old_tree, new_tree) = (tree_of(store, repo, old)?, tree_of(store, repo, new)?);
    let mut out = Vec::new();
    if diff(store, repo, Some(old_tree), Some(new_tree), "", &mut out)? { Ok(Some(out)) } else { Ok(None) }
}

/// Appends the paths under `prefix` that differ; false when the limit was reached.
fn diff(
    store: &dyn ObjectStore,
    repo: RepoId,
    old: Option<ObjectId>,
    new: Option<ObjectId>,
    prefix: &str,
    out: &mut Vec<String>,
) -> Result<bool, SourceError> {
    if old == new {
        return Ok(true);
    }
    let list = |tree: Option<ObjectId>| -> Result<Vec<(String, u32, ObjectId)>, SourceError> {
        tree.map_or(Ok(Vec::new()), |t| entries(store, repo, t))
    };
    let (old_entries, new_entries) = (list(old)?, list(new)?);
    let mut names: Vec<&String> = old_entries.iter().chain(&new_entries).map(|(n, _, _)| n).collect();
    names.sort();
    names.dedup();
    for name in names {
        let find = |entries: &[(String, u32, ObjectId)]| {
            entries.iter().find(|(n, _, _)| n == name).map(|(_, m, id)| (*m, *id))
        };
        let (a, b) = (find(&old_entries), find(&new_entries));
        if a == b {
            continue;
        }
        let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
        let is_tree = |e: Option<(u32, ObjectId)>| e.filter(|(m, _)| *m == 0o040000).map(|(_, id)| id);
        let (old_tree, new_tree) = (is_tree(a), is_tree(b));
        if (old_tree.is_some() || new_tree.is_some()) && !diff(store, repo, old_tree, new_tree, &path, out)? {
            return Ok(false);
        }
        // A file on either side (or a file replaced by a folder) is a changed path.
        let is_file = |e: Option<(u32, ObjectId)>| e.is_some_and(|(m, _)| m != 0o040000);
        if is_file(a) || is_file(b) {
            if out.len() == MAX_CHANGED_PATHS {
                return Ok(false);
            }
            out.push(path);
        }
    }
    Ok(true)
}

/// One workflow file by its name (`ci.yml`) at `commit`, from the first folder of
/// [`WORKFLOW_DIRS`] that exists; `None` when there is no such file.
pub fn workflow_file(
    store: &dyn ObjectStore,
    repo: RepoId,
    commit: ObjectId,
    name: &str,
) -> Result<Option<WorkflowFile>, SourceError> {
    Ok(workflow_files(store, repo, commit)?.into_iter().find(|f| f.path.rsplit('/').next() == Some(name)))
}

/// The most files, and bytes, an action repository may hand a runner.
pub const MAX_ACTION_FILES: usize = 20_000;
pub const MAX_ACTION_BYTES: u64 = 256 << 20;

/// What [`each_file`] hands every file to: its path, mode (`0o644` or `0o755`) and contents.
pub type FileSink<'a> = dyn FnMut(&str, u32, &[u8]) -> std::io::Result<()> + 'a;

/// Every regular file of the tree at `commit` as `(path, mode, contents)`, handed to `each`; symbolic links and submodules are left out (an action archive holds files only).
/// Fails past [`MAX_ACTION_FILES`] files or [`MAX_ACTION_BYTES`] bytes.
pub fn each_file(
    store: &dyn ObjectStore,
    repo: RepoId,
    commit: ObjectId,
    each: &mut FileSink<'_>,
) -> Result<(), String> {
    let root = tree_of(store, repo, commit).map_err(|e| e.to_string())?;
    let mut stack = vec![(String::new(), root)];
    let (mut files, mut bytes) = (0usize, 0u64);
    while let Some((prefix, tree)) = stack.pop() {
        for (name, mode, id) in entries(store, repo, tree).map_err(|e| e.to_string())? {
            let path = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
            match mode {
                0o040000 => stack.push((path, id)),
                0o100644 | 0o100755 | 0o100664 => {
                    let data = object(store, repo, id).map_err(|e| e.to_string())?.data;
                    files += 1;
                    bytes += data.len() as u64;
                    if files > MAX_ACTION_FILES || bytes > MAX_ACTION_BYTES {
                        return Err(format!(
                            "the repository holds more than {MAX_ACTION_FILES} files or {} MiB",
                            MAX_ACTION_BYTES >> 20
                        ));
                    }
                    let mode = if mode == 0o100755 { 0o755 } else { 0o644 };
                    each(&path, mode, &data).map_err(|e| e.to_string())?;
                }
                _ => {} // symbolic links, submodules
            }
        }
    }
    Ok(())
}

/// The text of the file at `path` in the tree of `commit`: `Ok(None)` when there is none;
/// `Err` text when it is too large for a workflow or not UTF-8.
pub fn text_file(
    store: &dyn ObjectStore,
    repo: RepoId,
    commit: ObjectId,
    path: &str,
) -> Result<Option<Result<String, String>>, SourceError> {
    let root = tree_of(store, repo, commit)?;
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    let tree = if dir.is_empty() { Some(root) } else { subtree(store, repo, root, dir)? };
    let Some(tree) = tree else { return Ok(None) };
    let Some((_, _, id)) = entries(store, repo, tree)?.into_iter().find(|(n, mode, _)| n == name && *mode != 0o040000)
    else {
        return Ok(None);
    };
    if let Some(info) = store.info_many(repo, &[id])?.pop().flatten()
        && info.size > MAX_WORKFLOW_BYTES as u64
    {
        return Ok(Some(Err(format!(
            "{path} has {} bytes; workflow files may have at most {MAX_WORKFLOW_BYTES}",
            info.size
        ))));
    }
    Ok(Some(String::from_utf8(object(store, repo, id)?.data).map_err(|_| format!("{path} is not UTF-8"))))
}
