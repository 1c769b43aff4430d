//! Personal access tokens: generation, hashing and scopes.
//!
//! A token is `gst_` followed by 40 base62 characters (about 238 bits of entropy); the prefix lets
//! secret scanners recognise a leaked token. Only its SHA-256 is stored, so a database leak does not
//! leak usable tokens, and lookups by hash do not compare secrets byte by byte.

use std::fmt;

use sha2::{Digest, Sha256};

pub const TOKEN_PREFIX: &str = "gst_";
/// The prefix of a CI job's token: it reads the job's repository, and only while the job runs.
pub const JOB_TOKEN_PREFIX: &str = "gstj_";
const TOKEN_BODY_LEN: usize = 40;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A freshly generated token; shown to its owner once, then only its hash is kept.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSecret(String);

impl TokenSecret {
    pub fn generate() -> Result<Self, getrandom::Error> {
        Self::generate_with_prefix(TOKEN_PREFIX)
    }

    /// A token of another kind (a CI job's, say), told apart by its prefix.
    pub fn generate_with_prefix(prefix: &str) -> Result<Self, getrandom::Error> {
        let mut body = String::with_capacity(TOKEN_BODY_LEN);
        let mut buf = [0u8; 64];
        while body.len() < TOKEN_BODY_LEN {
            getrandom::fill(&mut buf)?;
            // Rejection sampling: 248 = 4 × 62, so bytes below it map to base62 without bias.
            for b in buf.iter().filter(|&&b| b < 248) {
                if body.len() == TOKEN_BODY_LEN {
                    break;
                }
                body.push(char::from(BASE62[usize::from(*b % 62)]));
            }
        }
        Ok(TokenSecret(format!("{prefix}{body}")))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecret(***)")
    }
}

/// Hex SHA-256 of a presented token, the key tokens are stored and looked up under.
pub fn hash_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut out = String::with_capacity(64);
    for byte in digest {
        out.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(byte & 0xf)]));
    }
    out
}

/// What a token may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    RepoRead,
    RepoWrite,
    RepoAdmin,
    Admin,
    CiRunner,
    /// Managing the account itself: creating, listing and revoking its tokens. Sessions have it;
    /// `admin` implies it.
    User,
}

impl Scope {
    pub const ALL: [Scope; 6] =
        [Scope::RepoRead, Scope::RepoWrite, Scope::RepoAdmin, Scope::Admin, Scope::CiRunner, Scope::User];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::RepoRead => "repo:read",
            Scope::RepoWrite => "repo:write",
            Scope::RepoAdmin => "repo:admin",
            Scope::Admin => "admin",
            Scope::CiRunner => "ci:runner",
            Scope::User => "user",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == s)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of scopes. `admin` implies every repository scope; `repo:admin` implies write, write implies read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes(Vec<Scope>);

impl Scopes {
    pub fn new(scopes: impl IntoIterator<Item = Scope>) -> Self {
        let mut v: Vec<Scope> = scopes.into_iter().collect();
        v.sort();
        v.dedup();
        Scopes(v)
    }

    /// Parses the stored, space-separated form; unknown words are an error naming the word.
    pub fn parse(s: &str) -> Result<Self, String> {
        s.split_whitespace()
            .map(|w| Scope::parse(w).ok_or_else(|| w.to_owned()))
            .collect::<Result<Vec<_>, _>>()
            .map(Scopes::new)
    }

    pub fn iter(&self) -> impl Iterator<Item = Scope> + '_ {
        self.0.iter().copied()
    }

    /// Whether the set grants `wanted`, counting implied scopes.
    pub fn allows(&self, wanted: Scope) -> bool {
        self.0.iter().any(|&held| {
            held == wanted
                || match held {
                    Scope::Admin => wanted != Scope::CiRunner,
                    Scope::RepoAdmin => matches!(wanted, Scope::RepoWrite | Scope::RepoRead),
                    Scope::RepoWrite => wanted == Scope::RepoRead,
                    _ => false,
                }
        })
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, scope) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(scope.as_str())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_base62_and_distinct() {
        let a = TokenSecret::generate().expect("os rng");
        let b = TokenSecret::generate().expect("os rng");
        assert_ne!(a, b);
        let body = a.expose().strip_prefix(TOKEN_PREFIX).expect("prefix");
        assert_eq!(body.len(), 40);
        assert!(body.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(format!("{a:?}"), "TokenSecret(***)");
    }

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(hash_token("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn scopes_round_trip_and_imply() {
        let s = Scopes::parse("repo:write ci:runner repo:write").expect("valid");
        assert_eq!(s.to_string(), "repo:write ci:runner");
        assert!(s.allows(Scope::RepoRead) && s.allows(Scope::RepoWrite) && s.allows(Scope::CiRunner));
        assert!(!s.allows(Scope::RepoAdmin) && !s.allows(Scope::Admin));
        let admin = Scopes::new([Scope::Admin]);
        assert!(admin.allows(Scope::RepoAdmin) && !admin.allows(Scope::CiRunner));
        assert_eq!(Scopes::parse("repo:read bogus"), Err("bogus".to_owned()));
    }
}
