//! Object kinds and object ids.

pub use gix_hash::{Kind as HashKind, ObjectId, oid};

/// The four kinds of Git object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    Commit,
    Tree,
    Blob,
    Tag,
}

impl ObjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Commit => "commit",
            ObjectKind::Tree => "tree",
            ObjectKind::Blob => "blob",
            ObjectKind::Tag => "tag",
        }
    }

    pub fn from_name(name: &[u8]) -> Option<ObjectKind> {
        match name {
            b"commit" => Some(ObjectKind::Commit),
            b"tree" => Some(ObjectKind::Tree),
            b"blob" => Some(ObjectKind::Blob),
            b"tag" => Some(ObjectKind::Tag),
            _ => None,
        }
    }

    /// The type number in a pack entry header.
    pub fn pack_type(self) -> u8 {
        match self {
            ObjectKind::Commit => 1,
            ObjectKind::Tree => 2,
            ObjectKind::Blob => 3,
            ObjectKind::Tag => 4,
        }
    }
}

/// Why an object id could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SHA-1 collision attack detected while hashing an object")]
pub struct CollisionDetected;

/// The id of an object: SHA-1 of `"<kind> <len>\0" + data`, with SHA-1 collision detection
/// (an input crafted to collide is refused, as Git refuses it).
pub fn hash_object(kind: ObjectKind, data: &[u8]) -> Result<ObjectId, CollisionDetected> {
    let mut hasher = gix_hash::hasher(HashKind::Sha1);
    hasher.update(format!("{} {}\0", kind.as_str(), data.len()).as_bytes());
    hasher.update(data);
    hasher.try_finalize().map_err(|_| CollisionDetected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_git() {
        // `git hash-object -t blob --stdin <<< ''` (an empty blob) and the empty tree.
        assert_eq!(
            hash_object(ObjectKind::Blob, b"").expect("hash").to_string(),
            "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
        );
        assert_eq!(
            hash_object(ObjectKind::Tree, b"").expect("hash").to_string(),
            "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
        );
        assert_eq!(
            hash_object(ObjectKind::Blob, b"hello\n").expect("hash").to_string(),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
    }
}
