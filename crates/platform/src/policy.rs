//! The one access policy: who may do what to a repository. Every request that touches a
//! repository (REST API, Git over HTTP, and CI later) asks [`decide`], so the rules live here and
//! are tested as a table.
//!
//! The rules, as on GitHub:
//! - a site administrator acting with an `admin`-scoped token may do anything;
//! - a caller's role on a repository is the highest of: owner of it (admin), owner of the
//!   organization that owns it (admin), member of that organization (read, the organization's base
//!   permission), and a role granted to them as a collaborator;
//! - everyone, anonymous callers included, may read a public repository;
//! - a token caps what its holder may do: `repo:read` reads, `repo:write` up to maintain,
//!   `repo:admin` (or `admin`) everything the role allows;
//! - a private repository the caller may not read does not exist for them (404, never 403), so
//!   private names do not leak; an anonymous caller who needs more than read is asked to log in
//!   (401); an authenticated one who may read but not act is refused (403).

use std::fmt;
use std::str::FromStr;

use crate::store::Principal;
use crate::token::Scope;

/// A role on a repository, weakest first: each includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Read,
    Triage,
    Write,
    Maintain,
    Admin,
}

impl Role {
    pub const ALL: [Role; 5] = [Role::Read, Role::Triage, Role::Write, Role::Maintain, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Triage => "triage",
            Role::Write => "write",
            Role::Maintain => "maintain",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown permission {s:?}; expected read, triage, write, maintain or admin"))
    }
}

/// Why a request is refused, which decides the HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// The caller may not know the repository exists: 404.
    NotFound,
    /// Anonymous, and the action needs an account: 401.
    Unauthenticated,
    /// Authenticated, may see the repository, may not do this: 403, with the reason.
    Forbidden(String),
}

/// What the policy needs to know about a repository and the caller's standing on it.
#[derive(Debug, Clone, Copy)]
pub struct RepoAccess<'a> {
    pub caller: Option<&'a Principal>,
    /// The repository asked about.
    pub repo_id: i64,
    /// The caller's role from ownership, organization and collaborator grants (not visibility).
    pub role: Option<Role>,
    pub private: bool,
}

/// The most a token lets its holder do on repositories.
fn scope_ceiling(principal: &Principal) -> Option<Role> {
    let s = &principal.scopes;
    if s.allows(Scope::RepoAdmin) || s.allows(Scope::Admin) {
        Some(Role::Admin)
    } else if s.allows(Scope::RepoWrite) {
        Some(Role::Maintain)
    } else if s.allows(Scope::RepoRead) {
        Some(Role::Read)
    } else {
        None
    }
}

/// Whether `access.caller` may act on the repository with the powers of `needed`.
pub fn decide(access: RepoAccess<'_>, needed: Role) -> Result<(), Denial> {
    let Some(principal) = access.caller else {
        return if access.private {
            Err(Denial::NotFound)
        } else if needed == Role::Read {
            Ok(())
        } else {
            Err(Denial::Unauthenticated)
        };
    };
    // A CI job's token exists for one repository; every other is missing, even a public one.
    if principal.repo_only.is_some_and(|only| only != access.repo_id) {
        return Err(Denial::NotFound);
    }
    if principal.is_site_admin() {
        return Ok(());
    }
    let ceiling = scope_ceiling(principal);
    // The role the token lets the caller use.
    let usable = access.role.min(ceiling);
    let can_read = !access.private || usable.is_some();
    if !can_read {
        return Err(Denial::NotFound);
    }
    if needed == Role::Read || usable.is_some_and(|r| r >= needed) {
        return Ok(());
    }
    if access.role.is_some_and(|r| r >= needed) {
        let scope = if needed == Role::Admin { Scope::RepoAdmin } else { Scope::RepoWrite };
        return Err(Denial::Forbidden(format!("this token lacks the '{scope}' scope")));
    }
    Err(Denial::Forbidden(format!("you need the {needed} permission on this repository")))
}

#[cfg(test)]
mod tests {
    use gitstratum_core::Timestamp;

    use super::*;
    use crate::store::Account;
    use crate::token::Scopes;

    fn principal(admin: bool, scopes: &[Scope]) -> Principal {
        Principal {
            account: Account {
                id: 7,
                name: "octo".into(),
                is_admin: admin,
                is_org: false,
                created_at: Timestamp(0),
                suspended_at: None,
            },
            token_id: 1,
            scopes: Scopes::new(scopes.iter().copied()),
            repo_only: None,
            session: false,
            expires_at: None,
        }
    }

    /// (caller, role, private, needed, expected)
    type Row<'a> = (Option<&'a Principal>, Option<Role>, bool, Role, Result<(), Denial>);

    #[test]
    fn the_table() {
        use Denial::*;
        use Role::*;
        let anon = None;
        let reader = principal(false, &[Scope::RepoRead]);
        let writer = principal(false, &[Scope::RepoWrite]);
        let full = principal(false, &[Scope::RepoAdmin]);
        let runner = principal(false, &[Scope::CiRunner]);
        let site_admin = principal(true, &[Scope::Admin]);
        let admin_weak_token = principal(true, &[Scope::RepoRead]);
        // A job token of repository 1 (the table's repository), and one of repository 2.
        let job = Principal { repo_only: Some(1), ..principal(false, &[Scope::RepoRead]) };
        let other_job = Principal { repo_only: Some(2), ..principal(true, &[Scope::Admin]) };
        let forbidden = |m: &str| Forbidden(m.to_owned());
        #[rustfmt::skip]
        let table: Vec<Row<'_>> = vec![
            // Anonymous callers read public repositories only.
            (anon, None, false, Read, Ok(())),
            (anon, None, false, Write, Err(Unauthenticated)),
            (anon, None, true, Read, Err(NotFound)),
            (anon, None, true, Write, Err(NotFound)),
            // Visibility: no role on a private repository hides it, whatever the token.
            (Some(&full), None, true, Read, Err(NotFound)),
            (Some(&full), None, true, Admin, Err(NotFound)),
            (Some(&full), None, false, Read, Ok(())),
            (Some(&full), None, false, Write, Err(forbidden("you need the write permission on this repository"))),
            // Roles.
            (Some(&full), Some(Read), true, Read, Ok(())),
            (Some(&full), Some(Read), true, Write, Err(forbidden("you need the write permission on this repository"))),
            (Some(&full), Some(Triage), true, Write, Err(forbidden("you need the write permission on this repository"))),
            (Some(&full), Some(Write), true, Write, Ok(())),
            (Some(&full), Some(Write), true, Admin, Err(forbidden("you need the admin permission on this repository"))),
            (Some(&full), Some(Maintain), true, Maintain, Ok(())),
            (Some(&full), Some(Admin), true, Admin, Ok(())),
            // Scopes cap roles.
            (Some(&reader), Some(Admin), true, Read, Ok(())),
            (Some(&reader), Some(Admin), true, Write, Err(forbidden("this token lacks the 'repo:write' scope"))),
            (Some(&writer), Some(Admin), true, Write, Ok(())),
            (Some(&writer), Some(Admin), true, Maintain, Ok(())),
            (Some(&writer), Some(Admin), true, Admin, Err(forbidden("this token lacks the 'repo:admin' scope"))),
            // A token with no repository scope sees what anonymous callers see, and no more.
            (Some(&runner), Some(Admin), true, Read, Err(NotFound)),
            (Some(&runner), Some(Admin), false, Read, Ok(())),
            (Some(&runner), Some(Admin), false, Write, Err(forbidden("this token lacks the 'repo:write' scope"))),
            // Site administrators, with an admin token only.
            (Some(&site_admin), None, true, Admin, Ok(())),
            (Some(&admin_weak_token), None, true, Read, Err(NotFound)),
            // A job token reads its repository with its pusher's role, and sees no other.
            (Some(&job), Some(Admin), true, Read, Ok(())),
            (Some(&job), Some(Admin), true, Write, Err(forbidden("this token lacks the 'repo:write' scope"))),
            (Some(&job), None, true, Read, Err(NotFound)),
            (Some(&other_job), Some(Admin), false, Read, Err(NotFound)),
            (Some(&other_job), None, true, Admin, Err(NotFound)),
        ];
        for (i, (caller, role, private, needed, expected)) in table.into_iter().enumerate() {
            let got = decide(RepoAccess { caller, repo_id: 1, role, private }, needed);
            assert_eq!(got, expected, "row {i}: role {role:?}, private {private}, needs {needed}");
        }
    }

    #[test]
    fn roles_parse_and_order() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("owner".parse::<Role>().is_err());
        assert!(Role::Read < Role::Triage && Role::Maintain < Role::Admin);
    }
}
