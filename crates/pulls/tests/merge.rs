//! The merge against the reference: every case is built with real git, merged by
//! `git merge-tree --write-tree` and by ours over the same objects, and the two must agree — the
//! same tree id when clean, the same conflicting paths when not. Rename detection is off on git's
//! side (`-X no-renames`): ours does not detect renames (README).

use std::path::{Path, PathBuf};
use std::process::Command;

use gitstratum_git::{ObjectId, ObjectKind};
use gitstratum_pulls::merge::{Odb, TreeMerge, merge_base, merge_content, merge_trees};
use gitstratum_store::mem::MemStore;
use gitstratum_store::{NewObject, ObjectStore, RepoId};

struct Repo {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn git(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .env("GIT_AUTHOR_NAME", "A")
        .env("GIT_AUTHOR_EMAIL", "a@example.com")
        .env("GIT_COMMITTER_NAME", "C")
        .env("GIT_COMMITTER_EMAIL", "c@example.com")
        .env("GIT_AUTHOR_DATE", "1700000000 +0000")
        .env("GIT_COMMITTER_DATE", "1700000000 +0000")
        .output()
        .expect("git runs")
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = git(dir, args);
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A file's state on a side: absent, or content with the executable bit.
type Files = Vec<(&'static str, Option<(String, bool)>)>;

impl Repo {
    fn new() -> Repo {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("r");
        std::fs::create_dir(&path).expect("mkdir");
        ok(&path, &["init", "-q", "-b", "main"]);
        Repo { _dir: dir, path }
    }

    /// Writes `files` on top of the checked-out commit and commits on `branch` (created from
    /// `from`); the commit id.
    fn commit(&self, from: Option<&str>, branch: &str, files: &Files) -> String {
        if let Some(from) = from {
            ok(&self.path, &["checkout", "-q", "-B", branch, from]);
        }
        for (name, state) in files {
            let file = self.path.join(name);
            match state {
                None => {
                    if file.is_dir() {
                        std::fs::remove_dir_all(&file).expect("rm dir");
                    } else if file.exists() {
                        std::fs::remove_file(&file).expect("rm");
                    }
                }
                Some((text, exec)) => {
                    std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
                    std::fs::write(&file, text).expect("write");
                    let mode = if *exec { 0o755 } else { 0o644 };
                    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(mode)).expect("chmod");
                }
            }
        }
        ok(&self.path, &["add", "-A"]);
        ok(&self.path, &["commit", "-q", "--allow-empty", "-m", branch]);
        ok(&self.path, &["rev-parse", "HEAD"])
    }

    /// Every object of the repository, in a store of ours.
    fn store(&self) -> MemStore {
        let out = Command::new("git")
            .args(["cat-file", "--batch-all-objects", "--batch"])
            .current_dir(&self.path)
            .output()
            .expect("cat-file");
        let data = out.stdout;
        let mut objects = Vec::new();
        let mut at = 0;
        while at < data.len() {
            let nl = at + data[at..].iter().position(|b| *b == b'\n').expect("header");
            let header = std::str::from_utf8(&data[at..nl]).expect("utf8");
            let mut parts = header.split(' ');
            let id = ObjectId::from_hex(parts.next().expect("id").as_bytes()).expect("hex");
            let kind = ObjectKind::from_name(parts.next().expect("kind").as_bytes()).expect("kind");
            let size: usize = parts.next().expect("size").parse().expect("size");
            objects.push(NewObject { id, kind, data: data[nl + 1..nl + 1 + size].to_vec() });
            at = nl + 1 + size + 1;
        }
        // Commits after the trees and blobs they name (the store indexes commits as they come).
        objects.sort_by_key(|o| o.kind == ObjectKind::Commit);
        let store = MemStore::new();
        let mut commits: Vec<NewObject> = objects.iter().filter(|o| o.kind == ObjectKind::Commit).cloned().collect();
        store
            .put(RepoId(1), &objects.into_iter().filter(|o| o.kind != ObjectKind::Commit).collect::<Vec<_>>())
            .expect("put");
        // Parents before children, so generations are right.
        commits.sort_by_key(|c| gitstratum_git::parse::commit(&c.data).expect("commit").time);
        let mut left = commits;
        while !left.is_empty() {
            let mut next = Vec::new();
            for c in left {
                let parents = gitstratum_git::parse::commit(&c.data).expect("commit").parents;
                let stored = store.commits(RepoId(1), &parents).expect("commits");
                if stored.iter().all(Option::is_some) {
                    store.put(RepoId(1), std::slice::from_ref(&c)).expect("put");
                } else {
                    next.push(c);
                }
            }
            left = next;
        }
        store
    }

    /// git's merge of `theirs` into `ours`: the tree, or the conflicting paths.
    fn git_merge(&self, ours: &str, theirs: &str) -> TreeMerge {
        let out = git(
            &self.path,
            &["merge-tree", "--write-tree", "--name-only", "--no-messages", "-X", "no-renames", ours, theirs],
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut lines = text.lines();
        let tree = lines.next().expect("a tree line").to_owned();
        match out.status.code() {
            Some(0) => TreeMerge::Clean(ObjectId::from_hex(tree.as_bytes()).expect("tree")),
            Some(1) => {
                // git moves a file that clashes with a directory aside as `path~<commit>`; ours
                // names the path itself.
                let unmoved = |l: &str| match l.rsplit_once('~') {
                    Some((path, id)) if id.len() == 40 && id.bytes().all(|b| b.is_ascii_hexdigit()) => path.to_owned(),
                    _ => l.to_owned(),
                };
                let mut paths: Vec<String> = lines.take_while(|l| !l.is_empty()).map(unmoved).collect();
                paths.sort();
                paths.dedup();
                TreeMerge::Conflict(paths)
            }
            other => panic!("merge-tree failed ({other:?}): {}", String::from_utf8_lossy(&out.stderr)),
        }
    }
}

fn our_merge(store: &MemStore, ours: &str, theirs: &str) -> TreeMerge {
    let (ours, theirs) =
        (ObjectId::from_hex(ours.as_bytes()).expect("hex"), ObjectId::from_hex(theirs.as_bytes()).expect("hex"));
    let mut odb = Odb::new(store, RepoId(1));
    let base = merge_base(&odb, ours, theirs).expect("merge base");
    let base_tree = base.map(|b| odb.commit(b).expect("commit").tree);
    let (ot, tt) = (odb.commit(ours).expect("ours").tree, odb.commit(theirs).expect("theirs").tree);
    match merge_trees(&mut odb, base_tree, ot, tt).expect("merge") {
        TreeMerge::Conflict(mut paths) => {
            paths.sort();
            TreeMerge::Conflict(paths)
        }
        clean => clean,
    }
}

fn text(lines: &[&str]) -> Option<(String, bool)> {
    Some((lines.iter().map(|l| format!("{l}\n")).collect(), false))
}

fn lines(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("line {i}")).collect()
}

fn with(n: usize, edits: &[(usize, &str)]) -> Option<(String, bool)> {
    let mut l = lines(n);
    for (i, t) in edits {
        l[*i] = (*t).to_owned();
    }
    Some((l.iter().map(|l| format!("{l}\n")).collect(), false))
}

/// One case: a base commit, then `ours` and `theirs` on branches from it.
fn case(name: &str, base: Files, ours: Files, theirs: Files) {
    let repo = Repo::new();
    let b = repo.commit(None, "main", &base);
    let o = repo.commit(Some(&b), "ours", &ours);
    let t = repo.commit(Some(&b), "theirs", &theirs);
    let store = repo.store();
    let expected = repo.git_merge(&o, &t);
    let got = our_merge(&store, &o, &t);
    assert_eq!(got, expected, "case {name}: ours vs git merge-tree");
}

#[test]
fn merges_agree_with_git_merge_tree() {
    case(
        "apart",
        vec![("f", with(20, &[]))],
        vec![("f", with(20, &[(2, "ours")]))],
        vec![("f", with(20, &[(15, "theirs")]))],
    );
    case(
        "overlap",
        vec![("f", with(20, &[]))],
        vec![("f", with(20, &[(5, "ours")]))],
        vec![("f", with(20, &[(5, "theirs")]))],
    );
    case(
        "touching",
        vec![("f", with(20, &[]))],
        vec![("f", with(20, &[(5, "ours")]))],
        vec![("f", with(20, &[(6, "theirs")]))],
    );
    case(
        "one apart",
        vec![("f", with(20, &[]))],
        vec![("f", with(20, &[(5, "ours")]))],
        vec![("f", with(20, &[(7, "theirs")]))],
    );
    case(
        "same change",
        vec![("f", with(20, &[]))],
        vec![("f", with(20, &[(5, "x")]))],
        vec![("f", with(20, &[(5, "x")]))],
    );
    case(
        "same and more",
        vec![("f", with(20, &[]))],
        vec![("f", with(20, &[(5, "x")]))],
        vec![("f", with(20, &[(5, "x"), (6, "y")]))],
    );
    case("add/add", vec![("g", text(&["g"]))], vec![("f", text(&["a", "b"]))], vec![("f", text(&["a", "c"]))]);
    case("add/add same", vec![("g", text(&["g"]))], vec![("f", text(&["a"]))], vec![("f", text(&["a"]))]);
    case("modify/delete", vec![("f", with(5, &[]))], vec![("f", with(5, &[(1, "x")]))], vec![("f", None)]);
    case("delete kept", vec![("f", with(5, &[])), ("g", text(&["g"]))], vec![("f", None)], vec![("g", text(&["h"]))]);
    case(
        "new directories",
        vec![("f", text(&["f"]))],
        vec![("a/b/one", text(&["1"])), ("a/c", text(&["c"]))],
        vec![("a/b/two", text(&["2"])), ("z/y", text(&["y"]))],
    );
    case(
        "mode and content",
        vec![("f", with(10, &[]))],
        vec![("f", Some((with(10, &[]).expect("text").0, true)))],
        vec![("f", with(10, &[(3, "theirs")]))],
    );
    case(
        "directory deleted, file in it changed",
        vec![("d/x", with(5, &[])), ("d/y", text(&["y"])), ("f", text(&["f"]))],
        vec![("d", None)],
        vec![("d/x", with(5, &[(2, "changed")]))],
    );
    case(
        "appends",
        vec![("f", text(&["a", "b"]))],
        vec![("f", text(&["a", "b", "ours"]))],
        vec![("f", text(&["a", "b", "theirs"]))],
    );
    case(
        "prepend and append",
        vec![("f", with(6, &[]))],
        vec![("f", text(&["top", "line 0", "line 1", "line 2", "line 3", "line 4", "line 5"]))],
        vec![("f", text(&["line 0", "line 1", "line 2", "line 3", "line 4", "line 5", "end"]))],
    );
    case(
        "no newline at end",
        vec![("f", Some(("a\nb\nc".to_owned(), false)))],
        vec![("f", Some(("A\nb\nc".to_owned(), false)))],
        vec![("f", Some(("a\nb\nC".to_owned(), false)))],
    );
    case(
        "file against directory",
        vec![("g", text(&["g"]))],
        vec![("p", text(&["file"]))],
        vec![("p/q", text(&["in a directory"]))],
    );
}

/// A small deterministic generator (xorshift), so a failure names a reproducible seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn random_edit(rng: &mut Rng, base: &[String], tag: &str) -> Option<(String, bool)> {
    let mut l = base.to_vec();
    for k in 0..1 + rng.below(4) {
        let at = rng.below(l.len().max(1));
        match rng.below(4) {
            0 => l[at] = format!("{tag} {k}"),
            1 => l.insert(at, format!("{tag} new {k}")),
            2 if l.len() > 2 => {
                l.remove(at);
            }
            _ => l[at] = format!("shared {at}"),
        }
    }
    Some((l.iter().map(|l| format!("{l}\n")).collect(), false))
}

#[test]
fn random_line_edits_merge_as_git_merges_them() {
    let repo = Repo::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut cases = Vec::new();
    for i in 0..60 {
        let base: Vec<String> = (0..12 + rng.below(20)).map(|j| format!("base {j} {}", rng.below(3))).collect();
        let base_file = Some((base.iter().map(|l| format!("{l}\n")).collect::<String>(), false));
        let b = repo.commit(Some("main").filter(|_| i > 0), "main", &vec![("f", base_file)]);
        let o = repo.commit(Some(&b), &format!("o{i}"), &vec![("f", random_edit(&mut rng, &base, "ours"))]);
        let t = repo.commit(Some(&b), &format!("t{i}"), &vec![("f", random_edit(&mut rng, &base, "theirs"))]);
        ok(&repo.path, &["checkout", "-q", "main"]);
        cases.push((i, o, t));
    }
    let store = repo.store();
    let mut clean = 0;
    for (i, o, t) in &cases {
        let expected = repo.git_merge(o, t);
        clean += usize::from(matches!(expected, TreeMerge::Clean(_)));
        assert_eq!(our_merge(&store, o, t), expected, "random case {i}");
    }
    assert!((10..=50).contains(&clean), "the cases mix clean merges and conflicts ({clean} of 60 clean)");
}

#[test]
fn content_merges_keep_both_sides_changes() {
    let base = b"a\nb\nc\nd\ne\n";
    assert_eq!(merge_content(base, b"A\nb\nc\nd\ne\n", b"a\nb\nc\nd\nE\n").as_deref(), Some(&b"A\nb\nc\nd\nE\n"[..]));
    assert_eq!(merge_content(base, b"a\nB\nc\nd\ne\n", b"a\nb\nC\nd\ne\n"), None, "touching changes conflict");
    assert_eq!(merge_content(base, b"a\nX\nc\nd\ne\n", b"a\nX\nc\nd\ne\n").as_deref(), Some(&b"a\nX\nc\nd\ne\n"[..]));
    assert_eq!(merge_content(b"\0bin", b"\0one", b"\0two"), None, "binary files with two changes conflict");
    assert_eq!(merge_content(b"\0bin", b"\0bin", b"\0two").as_deref(), Some(&b"\0two"[..]));
}
