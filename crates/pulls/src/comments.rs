//! Line comments in Git: where a comment's line is in a file, and where it is after the file
//! changed. A line keeps its comment while a push leaves it as it was (it moves with the lines
//! added or removed above it); once a push changes or removes the line itself, the comment is
//! outdated (its original place is kept).

use gitstratum_git::{ObjectId, ObjectKind, parse};

use crate::merge::{MergeError, Odb};

/// The bytes of the file at `path` (slash-separated) in `commit`; `None` when there is no file
/// there (nothing, a directory, a submodule).
pub fn file_at(odb: &Odb<'_>, commit: ObjectId, path: &str) -> Result<Option<Vec<u8>>, MergeError> {
    let mut tree = odb.commit(commit)?.tree;
    let parts: Vec<&str> = path.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        let (kind, data) = odb.read(tree)?;
        if kind != ObjectKind::Tree {
            return Ok(None);
        }
        let entries = parse::tree(&data)?;
        let Some(entry) = entries.iter().find(|e| e.name == part.as_bytes()) else { return Ok(None) };
        match (entry.kind(), i + 1 == parts.len()) {
            (Some(ObjectKind::Blob), true) if entry.mode != 0o120000 => return Ok(Some(odb.read(entry.id)?.1)),
            (Some(ObjectKind::Tree), false) => tree = entry.id,
            _ => return Ok(None),
        }
    }
    Ok(None)
}

/// How many lines a file has (a last line without a newline counts).
pub fn line_count(data: &[u8]) -> usize {
    imara_diff::sources::byte_lines(data).count()
}

/// Where line `line` (from 1) of `old` is in `new`: shifted by the lines added and removed above
/// it, or `None` when the change touched the line itself.
pub fn map_line(old: &[u8], new: &[u8], line: u32) -> Option<u32> {
    if line == 0 {
        return None;
    }
    if old == new {
        return Some(line);
    }
    let input = imara_diff::InternedInput::new(old, new);
    let mut diff = imara_diff::Diff::compute(imara_diff::Algorithm::Myers, &input);
    diff.postprocess_lines(&input);
    let target = line - 1;
    let mut shift = 0i64;
    for hunk in diff.hunks() {
        let (removed, added) = (hunk.before.end - hunk.before.start, hunk.after.end - hunk.after.start);
        if hunk.before.start > target {
            break; // below the line
        }
        if removed > 0 && hunk.before.end > target {
            return None; // the line itself was changed or removed
        }
        // Above it (lines inserted right above it included): it moves.
        shift += i64::from(added) - i64::from(removed);
    }
    u32::try_from(i64::from(target) + shift + 1).ok()
}

/// Where a comment on `line` of `path` at `from` is at `to` (`None`: outdated, the line changed
/// or the file is gone).
pub fn follow(odb: &Odb<'_>, from: ObjectId, to: ObjectId, path: &str, line: u32) -> Result<Option<u32>, MergeError> {
    if from == to {
        return Ok(Some(line));
    }
    let (Some(old), Some(new)) = (file_at(odb, from, path)?, file_at(odb, to, path)?) else { return Ok(None) };
    Ok(map_line(&old, &new, line))
}

#[cfg(test)]
mod tests {
    use super::map_line;

    fn text(lines: &[&str]) -> Vec<u8> {
        lines.iter().map(|l| format!("{l}\n")).collect::<String>().into_bytes()
    }

    #[test]
    fn lines_move_with_changes_above_and_go_stale_when_changed() {
        let old = text(&["a", "b", "c", "d", "e"]);
        assert_eq!(map_line(&old, &old, 3), Some(3));
        // Two lines inserted at the top, one removed above: c moves down by one.
        let new = text(&["x", "y", "a", "c", "d", "e"]);
        assert_eq!(map_line(&old, &new, 3), Some(4));
        assert_eq!(map_line(&old, &new, 2), None, "b was removed");
        assert_eq!(map_line(&old, &new, 5), Some(6));
        // Inserted right above the line; the line itself unchanged.
        let new = text(&["a", "b", "new", "c", "d", "e"]);
        assert_eq!(map_line(&old, &new, 3), Some(4));
        assert_eq!(map_line(&old, &new, 2), Some(2));
        // The line itself changed.
        let new = text(&["a", "b", "C", "d", "e"]);
        assert_eq!(map_line(&old, &new, 3), None);
        assert_eq!(map_line(&old, &new, 4), Some(4));
        // Changed below: nothing moves.
        let new = text(&["a", "b", "c", "d", "E", "f"]);
        assert_eq!(map_line(&old, &new, 3), Some(3));
        assert_eq!(map_line(&old, &new, 0), None);
    }
}
