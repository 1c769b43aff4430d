//! Platform state: accounts, organizations, tokens, repositories, roles and the audit log (CI
//! state joins later), stored in SQL; and the one access policy ([`policy::decide`]).
//!
//! One codebase runs on SQLite (embedded, the default) and PostgreSQL (production): queries are
//! built with sea-query and rendered per dialect by [`db`]; each backend has its own migrations.
//! What it must never do: know about HTTP, Git or the data directory layout (it is given a
//! [`DbTarget`]). Key types: [`PlatformStore`], [`Db`], [`Principal`], [`Scopes`].

#![forbid(unsafe_code)]

pub mod audit;
pub mod comments;
pub mod db;
pub mod events;
pub mod keys_teams;
pub mod orgs;
pub mod password;
pub mod policy;
pub mod protection;
pub mod pulls;
pub mod secrets;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod token;
pub mod webhooks;

pub use audit::{Actor, AuditEntry, AuditEvent, AuditFilter, AuditVerification};
pub use comments::{Comment, CommentMove, NewComment, Side};
pub use db::{ConnectError, Db, DbTarget};
pub use events::{PlatformEvent, PullRef, RepoAction};
pub use keys_teams::{SshKey, Team, TeamGrant};
pub use orgs::{Member, OrgRole};
pub use policy::{Denial, RepoAccess, Role, decide};
pub use protection::{Protection, PushKind, Review, ReviewState};
pub use pulls::{Mergeability, Mergeable, NewPull, Pull, PullEdit, PullFilter, PullState};
pub use secrets::{SecretKey, Visibility};
pub use store::{
    Account, Error, INITIAL_ADMIN, MAX_DESCRIPTION_CHARS, MergeOptions, NewToken, PlatformStore, Principal, Repo,
    SESSION_TOKEN_NAME, TokenInfo, validate_description,
};
pub use token::{Scope, Scopes, TokenSecret};
pub use webhooks::{AttemptOutcome, Delivery, HookOwner, NewDelivery, Webhook};
