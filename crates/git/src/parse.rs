//! The parts of commits, trees and tags that walking the object graph needs.

use crate::object::{ObjectId, ObjectKind};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {kind}: {message}")]
pub struct ParseError {
    pub kind: &'static str,
    pub message: String,
}

fn err(kind: &'static str, message: impl Into<String>) -> ParseError {
    ParseError { kind, message: message.into() }
}

fn hex_id(kind: &'static str, hex: &[u8]) -> Result<ObjectId, ParseError> {
    ObjectId::from_hex(hex).map_err(|_| err(kind, format!("bad object id {:?}", String::from_utf8_lossy(hex))))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub tree: ObjectId,
    pub parents: Vec<ObjectId>,
    /// Committer time, seconds since the epoch (0 when unreadable).
    pub time: i64,
}

pub fn commit(data: &[u8]) -> Result<Commit, ParseError> {
    let mut tree = None;
    let mut parents = Vec::new();
    let mut time = 0;
    for line in data.split(|b| *b == b'\n') {
        if line.is_empty() {
            break; // end of headers
        }
        if let Some(hex) = line.strip_prefix(b"tree ") {
            tree = Some(hex_id("commit", hex)?);
        } else if let Some(hex) = line.strip_prefix(b"parent ") {
            parents.push(hex_id("commit", hex)?);
        } else if let Some(rest) = line.strip_prefix(b"committer ") {
            // "Name <email> 1700000000 +0000"
            let fields: Vec<&[u8]> = rest.rsplitn(3, |b| *b == b' ').collect();
            time = fields.get(1).and_then(|t| std::str::from_utf8(t).ok()).and_then(|t| t.parse().ok()).unwrap_or(0);
        }
    }
    Ok(Commit { tree: tree.ok_or_else(|| err("commit", "no tree line"))?, parents, time })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEntry<'a> {
    pub mode: u32,
    pub name: &'a [u8],
    pub id: ObjectId,
}

impl TreeEntry<'_> {
    /// What the entry points to; `None` for submodules (commits of another repository).
    pub fn kind(&self) -> Option<ObjectKind> {
        match self.mode {
            0o040000 => Some(ObjectKind::Tree),
            0o160000 => None,
            _ => Some(ObjectKind::Blob),
        }
    }
}

/// The entries of a tree: `<octal mode> <name>\0<20-byte id>` repeated.
pub fn tree(data: &[u8]) -> Result<Vec<TreeEntry<'_>>, ParseError> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let space = rest.iter().position(|b| *b == b' ').ok_or_else(|| err("tree", "entry without a mode"))?;
        let mode = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|m| u32::from_str_radix(m, 8).ok())
            .ok_or_else(|| err("tree", "bad mode"))?;
        rest = &rest[space + 1..];
        let nul = rest.iter().position(|b| *b == 0).ok_or_else(|| err("tree", "entry without a name"))?;
        let name = &rest[..nul];
        let id = rest.get(nul + 1..nul + 21).ok_or_else(|| err("tree", "truncated entry"))?;
        out.push(TreeEntry { mode, name, id: ObjectId::from_bytes_or_panic(id) });
        rest = &rest[nul + 21..];
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub target: ObjectId,
    pub target_kind: ObjectKind,
}

pub fn tag(data: &[u8]) -> Result<Tag, ParseError> {
    let mut target = None;
    let mut kind = None;
    for line in data.split(|b| *b == b'\n') {
        if line.is_empty() {
            break;
        }
        if let Some(hex) = line.strip_prefix(b"object ") {
            target = Some(hex_id("tag", hex)?);
        } else if let Some(k) = line.strip_prefix(b"type ") {
            kind = Some(ObjectKind::from_name(k).ok_or_else(|| err("tag", "unknown target type"))?);
        }
    }
    Ok(Tag {
        target: target.ok_or_else(|| err("tag", "no object line"))?,
        target_kind: kind.ok_or_else(|| err("tag", "no type line"))?,
    })
}

/// Whether Git would accept `name` as a ref name (`git check-ref-format` rules, full names only).
pub fn is_valid_ref_name(name: &str) -> bool {
    if !name.starts_with("refs/") || name.ends_with('/') || name.ends_with('.') || name.contains("//") {
        return false;
    }
    if name.contains("..") || name.contains("@{") || name == "@" {
        return false;
    }
    if name.bytes().any(|b| b < 0x20 || b == 0x7f || b" ~^:?*[\\".contains(&b)) {
        return false;
    }
    name.split('/').all(|part| !part.is_empty() && !part.starts_with('.') && !part.ends_with(".lock"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_objects() {
        let c = commit(b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nparent e69de29bb2d1d6434b8b29ae775ad8c2e48c5391\nauthor A <a@x> 1 +0000\ncommitter C <c@x> 1700000000 +0100\n\nmsg\ntree not-a-header\n").expect("valid");
        assert_eq!(c.parents.len(), 1);
        assert_eq!(c.time, 1_700_000_000);
        assert!(commit(b"parent x\n").is_err());

        let mut t = b"100644 a.txt\0".to_vec();
        t.extend_from_slice(&[1u8; 20]);
        t.extend_from_slice(b"40000 dir\0");
        t.extend_from_slice(&[2u8; 20]);
        t.extend_from_slice(b"160000 sub\0");
        t.extend_from_slice(&[3u8; 20]);
        let entries = tree(&t).expect("valid");
        assert_eq!(
            entries.iter().map(|e| e.kind()).collect::<Vec<_>>(),
            [Some(ObjectKind::Blob), Some(ObjectKind::Tree), None]
        );
        assert!(tree(&t[..t.len() - 1]).is_err());
        assert!(tree(b"xyz").is_err());

        let g = tag(b"object 4b825dc642cb6eb9a060e54bf8d69288fbee4904\ntype tree\ntag v1\n\nmsg").expect("valid");
        assert_eq!(g.target_kind, ObjectKind::Tree);
    }

    #[test]
    fn ref_names_follow_check_ref_format() {
        for good in ["refs/heads/main", "refs/heads/feature/x-1", "refs/tags/v1.0", "refs/heads/a.b"] {
            assert!(is_valid_ref_name(good), "{good}");
        }
        for bad in [
            "main",
            "refs/heads/",
            "refs//x",
            "refs/heads/a..b",
            "refs/heads/.hidden",
            "refs/heads/x.lock",
            "refs/heads/a b",
            "refs/heads/a~1",
            "refs/heads/a^",
            "refs/heads/a:b",
            "refs/heads/a?",
            "refs/heads/a*",
            "refs/heads/a[",
            "refs/heads/a\\b",
            "refs/heads/x@{1}",
            "refs/heads/end.",
            "refs/heads/\u{7f}",
        ] {
            assert!(!is_valid_ref_name(bad), "{bad:?}");
        }
    }
}

/// Who made a commit or tag, and when.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Signature {
    pub name: String,
    pub email: String,
    /// Seconds since the epoch.
    pub time: i64,
}

/// What people read of a commit: its author, committer and message (lossily decoded: a commit
/// may carry any bytes).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommitText {
    pub author: Signature,
    pub committer: Signature,
    pub message: String,
}

impl CommitText {
    /// The message's first line.
    pub fn summary(&self) -> &str {
        self.message.lines().next().unwrap_or_default()
    }
}

fn signature(line: &[u8]) -> Signature {
    let line = String::from_utf8_lossy(line);
    let (who, when) = line.rsplit_once('>').unwrap_or((&line, ""));
    let (name, email) = who.split_once('<').unwrap_or((who, ""));
    let time = when.split_whitespace().next().and_then(|t| t.parse().ok()).unwrap_or(0);
    Signature { name: name.trim().to_owned(), email: email.trim().to_owned(), time }
}

/// The author, committer and message of a commit; headers it lacks are left empty.
pub fn commit_text(data: &[u8]) -> CommitText {
    let mut out = CommitText::default();
    let (headers, message) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (data, &[][..]),
    };
    for line in headers.split(|b| *b == b'\n') {
        if let Some(rest) = line.strip_prefix(b"author ") {
            out.author = signature(rest);
        } else if let Some(rest) = line.strip_prefix(b"committer ") {
            out.committer = signature(rest);
        }
    }
    out.message = String::from_utf8_lossy(message).into_owned();
    out
}

#[cfg(test)]
mod text_tests {
    use super::*;

    #[test]
    fn commit_texts_read_what_people_see() {
        let data = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nparent 1111111111111111111111111111111111111111\nauthor A U Thor <a@example.com> 1700000000 +0100\ncommitter C O Mitter <c@example.com> 1700000100 +0000\n\nSubject line\n\nBody\n";
        let text = commit_text(data);
        assert_eq!(
            text.author,
            Signature { name: "A U Thor".into(), email: "a@example.com".into(), time: 1_700_000_000 }
        );
        assert_eq!(text.committer.time, 1_700_000_100);
        assert_eq!(text.summary(), "Subject line");
        assert_eq!(text.message, "Subject line\n\nBody\n");
        let odd = commit_text(b"author \xff<\n\n");
        assert_eq!(odd.author.time, 0);
        assert_eq!(commit_text(b"").summary(), "");
    }
}
