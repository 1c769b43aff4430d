//! Naming rules, as GitHub applies them, so names that work there work here.

/// Why a name was refused. The message is shown to users as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name must not be empty")]
    Empty,
    #[error("name is {len} characters long; at most {max} are allowed")]
    TooLong { len: usize, max: usize },
    #[error("name contains {found:?}; only letters, digits, '-', '_' and '.' are allowed")]
    InvalidChar { found: char },
    #[error("name {0:?} is reserved")]
    Reserved(String),
    #[error("name must not end in \".git\"")]
    GitSuffix,
    #[error("name may only contain letters, digits and single hyphens, and may not begin or end with a hyphen")]
    BadHyphen,
}

/// Longest repository name GitHub accepts.
pub const MAX_REPO_NAME_LEN: usize = 100;
/// Longest user or organization name GitHub accepts.
pub const MAX_USERNAME_LEN: usize = 39;

/// A repository name: `[A-Za-z0-9._-]`, 1 to 100 characters, not `.` or `..`, not ending in `.git`
/// (the Git URL `owner/name.git` would be ambiguous otherwise).
pub fn validate_repo_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    let len = name.chars().count();
    if len > MAX_REPO_NAME_LEN {
        return Err(NameError::TooLong { len, max: MAX_REPO_NAME_LEN });
    }
    if let Some(found) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))) {
        return Err(NameError::InvalidChar { found });
    }
    if name == "." || name == ".." {
        return Err(NameError::Reserved(name.to_owned()));
    }
    if name.to_ascii_lowercase().ends_with(".git") {
        return Err(NameError::GitSuffix);
    }
    Ok(())
}

/// [`validate_repo_name`] as a JSON Schema pattern (ECMA-262), for the API's document.
pub const REPO_NAME_PATTERN: &str = r"^(?!\.{1,2}$)(?!.*\.[Gg][Ii][Tt]$)[A-Za-z0-9._-]{1,100}$";

/// [`validate_username`] as a JSON Schema pattern (ECMA-262, which has no case-insensitive flag:
/// reserved names are spelled as character classes); `maxLength` [`MAX_USERNAME_LEN`] goes beside
/// it.
pub fn username_pattern() -> String {
    let reserved: Vec<String> =
        RESERVED_USERNAMES
            .iter()
            .map(|name| {
                name.chars()
                    .map(|c| {
                        if c.is_ascii_alphabetic() { format!("[{}{c}]", c.to_ascii_uppercase()) } else { c.to_string() }
                    })
                    .collect()
            })
            .collect();
    format!("^(?!(?:{})$)[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*$", reserved.join("|"))
}

/// Names that would collide with routes of the web UI and API.
const RESERVED_USERNAMES: &[&str] =
    &["api", "admin-ui", "assets", "login", "logout", "metrics", "healthz", "readyz", "settings", "static"];

/// A user or organization name: ASCII letters, digits and single hyphens, 1 to 39 characters,
/// not beginning or ending with a hyphen.
pub fn validate_username(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    let len = name.chars().count();
    if len > MAX_USERNAME_LEN {
        return Err(NameError::TooLong { len, max: MAX_USERNAME_LEN });
    }
    if let Some(found) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-')) {
        return Err(NameError::InvalidChar { found });
    }
    if name.starts_with('-') || name.ends_with('-') || name.contains("--") {
        return Err(NameError::BadHyphen);
    }
    if RESERVED_USERNAMES.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(NameError::Reserved(name.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_repo(name: &str, ok: bool) {
        assert_eq!(validate_repo_name(name).is_ok(), ok, "repo name {name:?}: {:?}", validate_repo_name(name));
    }

    #[test]
    fn repo_names() {
        for good in ["a", "hello-world", "Hello_World.rs", "x.y.z", "...", ".github", "a".repeat(100).as_str(), "gitx"]
        {
            check_repo(good, true);
        }
        for bad in
            ["", ".", "..", "a b", "a/b", "é", "repo.git", "repo.GIT", "x\0", "a".repeat(101).as_str(), "semi;colon"]
        {
            check_repo(bad, false);
        }
    }

    #[test]
    fn username_pattern_spells_reserved_names_case_insensitively() {
        let pattern = username_pattern();
        assert!(pattern.starts_with("^(?!(?:[Aa][Pp][Ii]|[Aa][Dd][Mm][Ii][Nn]-[Uu][Ii]|"), "{pattern}");
        assert!(pattern.ends_with(")$)[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*$"), "{pattern}");
    }

    #[test]
    fn repo_name_errors_are_specific() {
        assert_eq!(validate_repo_name("a/b"), Err(NameError::InvalidChar { found: '/' }));
        assert_eq!(validate_repo_name("x.git"), Err(NameError::GitSuffix));
        assert_eq!(validate_repo_name(&"a".repeat(101)), Err(NameError::TooLong { len: 101, max: 100 }));
    }

    #[test]
    fn usernames() {
        for good in ["a", "octo-cat", "A1", "a".repeat(39).as_str()] {
            assert!(validate_username(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "a-", "a--b", "a_b", "a.b", "api", "API", "a".repeat(40).as_str()] {
            assert!(validate_username(bad).is_err(), "{bad}");
        }
    }
}
