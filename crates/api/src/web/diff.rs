//! What a commit changed, as its page shows it: the files (two trees compared, exact renames
//! paired as git's rename detection pairs identical contents), and for each text file its hunks
//! with three lines of context (imara-diff's histogram algorithm, as `git diff --histogram`).
//! Bounded: at most [`MAX_FILES`] files, files over [`MAX_FILE`] bytes or binary are named, not
//! diffed, and at most [`MAX_LINES`] lines of diff in all.

use std::collections::HashMap;

use gitstratum_store::ObjectId;
use imara_diff::intern::InternedInput;
use imara_diff::{Algorithm, diff};

/// The most changed files listed.
pub(crate) const MAX_FILES: usize = 300;
/// Files larger than this are not diffed.
const MAX_FILE: usize = 512 * 1024;
/// The most diff lines shown on one page.
pub(crate) const MAX_LINES: usize = 20_000;
/// Lines of context around a change.
const CONTEXT: u32 = 3;

/// One side of a changed path: its mode and object.
pub(crate) type Side = Option<(u32, ObjectId)>;

/// A path whose entry differs between two trees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    pub path: String,
    /// Where it was, for a rename.
    pub from: Option<String>,
    pub old: Side,
    pub new: Side,
}

/// The entries of a tree: name → (mode, id). `read` gives a tree's entries.
pub(crate) type Entries = Vec<(String, u32, ObjectId)>;

const TREE: u32 = 0o040000;

/// Paths whose entries differ between `old` and `new` (trees; `None`: empty), sorted by path,
/// at most [`MAX_FILES`] (then `true`: more were left out). Identical subtrees are skipped
/// unread.
pub(crate) fn changed_paths(
    old: Option<ObjectId>,
    new: Option<ObjectId>,
    read: &dyn Fn(ObjectId) -> Result<Entries, String>,
) -> Result<(Vec<Change>, bool), String> {
    let mut out = Vec::new();
    let mut truncated = false;
    let mut stack = vec![(String::new(), old, new)];
    while let Some((prefix, a, b)) = stack.pop() {
        if a == b {
            continue;
        }
        let a_entries: HashMap<String, (u32, ObjectId)> =
            a.map(read).transpose()?.unwrap_or_default().into_iter().map(|(n, m, id)| (n, (m, id))).collect();
        let b_entries: HashMap<String, (u32, ObjectId)> =
            b.map(read).transpose()?.unwrap_or_default().into_iter().map(|(n, m, id)| (n, (m, id))).collect();
        let mut names: Vec<&String> = a_entries.keys().chain(b_entries.keys()).collect();
        names.sort();
        names.dedup();
        for name in names {
            let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
            let (x, y) = (a_entries.get(name).copied(), b_entries.get(name).copied());
            if x == y {
                continue;
            }
            let subtree = |s: Option<(u32, ObjectId)>| s.filter(|(m, _)| *m == TREE).map(|(_, id)| id);
            let file = |s: Option<(u32, ObjectId)>| s.filter(|(m, _)| *m != TREE);
            if subtree(x).is_some() || subtree(y).is_some() {
                stack.push((path.clone(), subtree(x), subtree(y)));
            }
            let (fx, fy) = (file(x), file(y));
            if fx != fy {
                if out.len() == MAX_FILES {
                    truncated = true;
                    continue;
                }
                out.push(Change { path, from: None, old: fx, new: fy });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((pair_renames(out), truncated))
}

/// An added and a deleted file with the same contents become one rename.
fn pair_renames(changes: Vec<Change>) -> Vec<Change> {
    let mut deleted: HashMap<ObjectId, Vec<usize>> = HashMap::new();
    for (i, c) in changes.iter().enumerate() {
        if let (Some((_, id)), None) = (c.old, c.new) {
            deleted.entry(id).or_default().push(i);
        }
    }
    let mut used = vec![false; changes.len()];
    let mut from: Vec<Option<usize>> = vec![None; changes.len()];
    for (i, c) in changes.iter().enumerate() {
        if let (None, Some((_, id))) = (c.old, c.new)
            && let Some(d) = deleted.get_mut(&id).and_then(Vec::pop)
        {
            used[d] = true;
            from[i] = Some(d);
        }
    }
    changes
        .iter()
        .enumerate()
        .filter(|(i, _)| !used[*i])
        .map(|(i, c)| match from[i] {
            Some(d) => {
                Change { path: c.path.clone(), from: Some(changes[d].path.clone()), old: changes[d].old, new: c.new }
            }
            None => c.clone(),
        })
        .collect()
}

/// One line of a hunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Line {
    Context { old: u32, new: u32, text: String },
    Removed { old: u32, text: String },
    Added { new: u32, text: String },
}

/// A hunk: its header (`@@ -a,b +c,d @@`) and lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hunk {
    pub header: String,
    pub lines: Vec<Line>,
}

/// What a file's diff shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FileDiff {
    Text {
        hunks: Vec<Hunk>,
        added: usize,
        removed: usize,
    },
    Binary,
    TooLarge,
    /// The page's line budget ran out before this file.
    Elided,
}

/// Whether contents are binary, as git decides: a NUL byte in the first 8,000 bytes.
pub(crate) fn is_binary(data: &[u8]) -> bool {
    data[..data.len().min(8000)].contains(&0)
}

/// The diff of one file's two contents (empty for a side that does not exist); `budget` is the
/// lines the page may still show, reduced by what this file shows.
pub(crate) fn file_diff(old: &[u8], new: &[u8], budget: &mut usize) -> FileDiff {
    if is_binary(old) || is_binary(new) {
        return FileDiff::Binary;
    }
    if old.len() > MAX_FILE || new.len() > MAX_FILE {
        return FileDiff::TooLarge;
    }
    if *budget == 0 {
        return FileDiff::Elided;
    }
    let (old, new) = (String::from_utf8_lossy(old), String::from_utf8_lossy(new));
    let input = InternedInput::new(old.as_ref(), new.as_ref());
    let mut changes: Vec<(std::ops::Range<u32>, std::ops::Range<u32>)> = Vec::new();
    diff(Algorithm::Histogram, &input, |before: std::ops::Range<u32>, after: std::ops::Range<u32>| {
        changes.push((before, after));
    });
    let line = |tokens: &[imara_diff::intern::Token], i: u32| -> String {
        input.interner[tokens[i as usize]].trim_end_matches('\n').trim_end_matches('\r').to_owned()
    };
    let (before, after) = (&input.before[..], &input.after[..]);
    let (mut added, mut removed) = (0, 0);
    let mut hunks: Vec<Hunk> = Vec::new();
    // Group changes whose context would touch into one hunk, as git does.
    let mut i = 0;
    while i < changes.len() {
        let mut j = i;
        while j + 1 < changes.len() && changes[j + 1].0.start <= changes[j].0.end + 2 * CONTEXT {
            j += 1;
        }
        let start_old = changes[i].0.start.saturating_sub(CONTEXT);
        let start_new = changes[i].1.start - (changes[i].0.start - start_old);
        let end_old = (changes[j].0.end + CONTEXT).min(before.len() as u32);
        let mut lines = Vec::new();
        let (mut o, mut n) = (start_old, start_new);
        for (b, a) in &changes[i..=j] {
            while o < b.start {
                lines.push(Line::Context { old: o + 1, new: n + 1, text: line(before, o) });
                o += 1;
                n += 1;
            }
            for k in b.clone() {
                lines.push(Line::Removed { old: k + 1, text: line(before, k) });
                removed += 1;
            }
            for k in a.clone() {
                lines.push(Line::Added { new: k + 1, text: line(after, k) });
                added += 1;
            }
            o = b.end;
            n = a.end;
        }
        while o < end_old && (n as usize) < after.len() {
            lines.push(Line::Context { old: o + 1, new: n + 1, text: line(before, o) });
            o += 1;
            n += 1;
        }
        let (old_len, new_len) = (o - start_old, n - start_new);
        // As git writes ranges: a count of 1 left out, an empty range at the line before it.
        let range = |start: u32, len: u32| match len {
            0 => format!("{start},0"),
            1 => format!("{}", start + 1),
            _ => format!("{},{len}", start + 1),
        };
        let header = format!("@@ -{} +{} @@", range(start_old, old_len), range(start_new, new_len));
        *budget = budget.saturating_sub(lines.len());
        hunks.push(Hunk { header, lines });
        i = j + 1;
        if *budget == 0 {
            break;
        }
    }
    FileDiff::Text { hunks, added, removed }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ObjectId {
        ObjectId::from_bytes_or_panic(&[n; 20])
    }

    #[test]
    fn hunks_are_what_git_diff_prints() {
        let old: String = (1..=20).map(|i| format!("line {i}\n")).collect();
        let new = old.replace("line 5\n", "line five\n").replace("line 18\n", "");
        let mut budget = 1000;
        let FileDiff::Text { hunks, added, removed } = file_diff(old.as_bytes(), new.as_bytes(), &mut budget) else {
            panic!("a text diff")
        };
        assert_eq!((added, removed), (1, 2));
        // `git diff` of the same change: two hunks.
        let headers: Vec<&str> = hunks.iter().map(|h| h.header.as_str()).collect();
        assert_eq!(headers, ["@@ -2,7 +2,7 @@", "@@ -15,6 +15,5 @@"]);
        assert_eq!(hunks[0].lines[3], Line::Removed { old: 5, text: "line 5".into() });
        assert_eq!(hunks[0].lines[4], Line::Added { new: 5, text: "line five".into() });
        let mut budget = 1000;
        let FileDiff::Text { hunks, added, .. } = file_diff(b"", b"a\nb\n", &mut budget) else { panic!("text") };
        assert_eq!((hunks[0].header.as_str(), added), ("@@ -0,0 +1,2 @@", 2));
        let FileDiff::Text { hunks, .. } = file_diff(b"", b"a\n", &mut budget) else { panic!("text") };
        assert_eq!(hunks[0].header, "@@ -0,0 +1 @@");
        assert_eq!(file_diff(b"\0bin", b"x", &mut budget), FileDiff::Binary);
    }

    #[test]
    fn changed_paths_pair_exact_renames_and_skip_equal_subtrees() {
        let trees: HashMap<ObjectId, Entries> = HashMap::from([
            (
                id(1),
                vec![("a.txt".into(), 0o100644, id(10)), ("dir".into(), TREE, id(3)), ("same".into(), TREE, id(4))],
            ),
            (
                id(2),
                vec![("b.txt".into(), 0o100644, id(10)), ("dir".into(), TREE, id(5)), ("same".into(), TREE, id(4))],
            ),
            (id(3), vec![("x".into(), 0o100644, id(11))]),
            (id(5), vec![("x".into(), 0o100644, id(12)), ("y".into(), 0o100755, id(13))]),
        ]);
        let read = |t: ObjectId| trees.get(&t).cloned().ok_or_else(|| format!("read {t}"));
        let (changes, truncated) = changed_paths(Some(id(1)), Some(id(2)), &read).expect("diff");
        assert!(!truncated);
        let shown: Vec<(String, Option<String>)> = changes.iter().map(|c| (c.path.clone(), c.from.clone())).collect();
        assert_eq!(shown, [("b.txt".into(), Some("a.txt".into())), ("dir/x".into(), None), ("dir/y".into(), None)]);
        let (root, _) = changed_paths(None, Some(id(3)), &read).expect("diff");
        assert_eq!(root.len(), 1);
    }
}
