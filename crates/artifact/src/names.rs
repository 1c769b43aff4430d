//! Artifact names and the paths of the files in an archive.

/// Characters GitHub refuses in artifact names and paths (they break zip extraction on some
/// systems).
const FORBIDDEN: &[char] = &['"', ':', '<', '>', '|', '*', '?', '\r', '\n', '\0'];

/// The longest artifact name.
pub const MAX_NAME_CHARS: usize = 256;
/// The longest path of a file in an archive, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;

/// An artifact's name: 1 to 256 characters, none of `" : < > | * ? \r \n \ /`, not `.` or `..`.
pub fn check_artifact_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("an artifact's name may not be empty".to_owned());
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(format!("an artifact's name has at most {MAX_NAME_CHARS} characters"));
    }
    if let Some(c) = name.chars().find(|c| FORBIDDEN.contains(c) || matches!(c, '\\' | '/') || c.is_control()) {
        return Err(format!("the artifact name {name:?} contains {c:?}, which is not allowed"));
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not an artifact name"));
    }
    Ok(())
}

/// A path inside an archive: relative, `/`-separated, without empty, `.` or `..` parts, without a
/// backslash or any of the characters GitHub refuses, so it names a place inside whatever
/// directory it is extracted into.
pub fn check_entry_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("an empty path".to_owned());
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(format!("a path longer than {MAX_PATH_BYTES} bytes"));
    }
    if path.starts_with('/') {
        return Err(format!("{path:?} is absolute"));
    }
    if let Some(c) = path.chars().find(|c| FORBIDDEN.contains(c) || *c == '\\' || c.is_control()) {
        return Err(format!("{path:?} contains {c:?}, which is not allowed"));
    }
    for part in path.split('/') {
        match part {
            "" => return Err(format!("{path:?} has an empty part")),
            "." | ".." => return Err(format!("{path:?} has a {part:?} part")),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_names() {
        for ok in ["dist", "build output", "report-1.2.3", "ünïcode", "a.b"] {
            assert!(check_artifact_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "  ", "a/b", "a\\b", "a:b", "what?", "x\ny", "..", "."] {
            assert!(check_artifact_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_artifact_name(&"n".repeat(257)).is_err());
    }

    #[test]
    fn entry_paths() {
        for ok in ["a", "dir/file.txt", "a/b/c/.hidden", "...", "a..b/c"] {
            assert!(check_entry_path(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/etc/passwd", "../x", "a/../b", "a/./b", "a//b", "a/", "a\\b", "c:/x", "a\0b", "."] {
            assert!(check_entry_path(bad).is_err(), "{bad:?}");
        }
    }
}
