//! Platform state: accounts, tokens and repositories (organizations, RBAC, audit and CI state
//! join later), stored in SQL.
//!
//! One codebase runs on SQLite (embedded, the default) and PostgreSQL (production): queries are
//! built with sea-query and rendered per dialect by [`db`]; each backend has its own migrations.
//! What it must never do: know about HTTP, Git or the data directory layout (it is given a
//! [`DbTarget`]). Key types: [`PlatformStore`], [`Db`], [`Principal`], [`Scopes`].

#![forbid(unsafe_code)]

pub mod db;
pub mod store;
pub mod token;

pub use db::{ConnectError, Db, DbTarget};
pub use store::{Account, Error, INITIAL_ADMIN, NewToken, PlatformStore, Principal, Repo, TokenInfo};
pub use token::{Scope, Scopes, TokenSecret};
