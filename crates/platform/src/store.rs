//! The platform store: accounts, tokens and repositories, on whichever backend [`Db`] holds.

use gitstratum_core::{NameError, Timestamp, validate_repo_name, validate_username};
use sea_query::{Expr, ExprTrait, Func, OnConflict, Order, Query};

use crate::audit::{Actor, AuditEvent, append_audit};
use crate::db::{ConnectError, Db, DbRow, DbTarget, FromDbRow, is_unique_violation};
use crate::events::{RepoAction, append_repo_event};
use crate::token::{Scope, Scopes, TokenSecret, hash_token};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} already exists")]
    Conflict { what: String },
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("invalid {field}: {source}")]
    InvalidName {
        field: &'static str,
        #[source]
        source: NameError,
    },
    /// The request is well-formed but would break a rule (the last owner of an organization, say).
    #[error("{0}")]
    Refused(String),
    #[error("cannot generate a token: {0}")]
    Random(getrandom::Error),
    #[error("cannot persist the initial admin token: {0}")]
    Persist(#[source] std::io::Error),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Name of the account created on first start.
pub const INITIAL_ADMIN: &str = "admin";
/// Branch that `HEAD` of a new repository names.
pub const DEFAULT_BRANCH: &str = "main";
/// A token's `last_used_at` is written at most this often, so authentication stays a read.
const LAST_USED_RESOLUTION_MS: i64 = 60_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: i64,
    pub name: String,
    pub is_admin: bool,
    /// An organization rather than a user: it owns repositories and has members, never logs in.
    pub is_org: bool,
    pub created_at: Timestamp,
    /// Set while a site administrator has it suspended: it authenticates nowhere.
    pub suspended_at: Option<Timestamp>,
}

impl FromDbRow for Account {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok(Account {
            id: row.get("id")?,
            name: row.get("name")?,
            is_admin: row.get("is_admin")?,
            is_org: row.get::<String>("kind")? == "org",
            created_at: Timestamp(row.get("created_at")?),
            suspended_at: row.get::<Option<i64>>("suspended_at")?.map(Timestamp),
        })
    }
}

struct WithPassword(Account, Option<String>);

impl FromDbRow for WithPassword {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok(WithPassword(Account::from_row(row)?, row.get("password_hash")?))
    }
}

/// Failed logins and when their window began.
struct LoginFailures(i64, i64);

impl FromDbRow for LoginFailures {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok(LoginFailures(row.get("failures")?, row.get("since")?))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: i64,
    pub account_id: i64,
    pub name: String,
    pub scopes: Scopes,
    pub expires_at: Option<Timestamp>,
    pub last_used_at: Option<Timestamp>,
    pub created_at: Timestamp,
}

impl FromDbRow for TokenInfo {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        let scopes: String = row.get("scopes")?;
        Ok(TokenInfo {
            id: row.get("id")?,
            account_id: row.get("account_id")?,
            name: row.get("name")?,
            scopes: Scopes::parse(&scopes)
                .map_err(|word| sqlx::Error::Decode(format!("unknown scope {word:?} in stored token").into()))?,
            expires_at: row.get::<Option<i64>>("expires_at")?.map(Timestamp),
            last_used_at: row.get::<Option<i64>>("last_used_at")?.map(Timestamp),
            created_at: Timestamp(row.get("created_at")?),
        })
    }
}

/// What a request authenticated as: an account, through one token with its scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub account: Account,
    pub token_id: i64,
    pub scopes: Scopes,
    /// Set for a CI job's token: the one repository it may read (the policy refuses every
    /// other, and the API's `Authenticated` endpoints refuse it altogether).
    pub repo_only: Option<i64>,
    /// The token is a login session (made from a password), not a personal access token.
    pub session: bool,
    /// When the token stops working, if it does.
    pub expires_at: Option<Timestamp>,
}

impl Principal {
    /// Site administrator acting with an `admin`-scoped token.
    pub fn is_site_admin(&self) -> bool {
        self.account.is_admin && self.scopes.allows(Scope::Admin)
    }
}

/// The name login sessions' tokens have; no other token may take it.
pub const SESSION_TOKEN_NAME: &str = "session";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    pub name: String,
    pub scopes: Scopes,
    pub expires_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repo {
    pub id: i64,
    pub owner_id: i64,
    pub owner: String,
    pub name: String,
    pub private: bool,
    pub default_branch: String,
    /// One line saying what it is (empty: none).
    pub description: String,
    pub created_at: Timestamp,
    /// The repository it was forked from, while that exists.
    pub parent_id: Option<i64>,
    /// Its network of forks: the id of the repository the chain of forks began with (its own id
    /// when it is no fork). Pull requests go between repositories of one network.
    pub network_id: i64,
    /// How its pull requests may be merged.
    pub merge: MergeOptions,
}

/// How a repository's pull requests may be merged (GitHub's repository settings of those names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MergeOptions {
    pub allow_merge_commit: bool,
    pub allow_squash_merge: bool,
    pub allow_rebase_merge: bool,
    /// A merged pull request's head branch (in the repository itself) is deleted.
    pub delete_branch_on_merge: bool,
}

impl Default for MergeOptions {
    fn default() -> Self {
        MergeOptions {
            allow_merge_commit: true,
            allow_squash_merge: true,
            allow_rebase_merge: true,
            delete_branch_on_merge: false,
        }
    }
}

impl Repo {
    /// Whether it was made as a fork (even when its parent is gone since).
    pub fn is_fork(&self) -> bool {
        self.network_id != self.id
    }
}

/// The longest description kept (GitHub's limit).
pub const MAX_DESCRIPTION_CHARS: usize = 350;

/// A description as kept: trimmed, at most [`MAX_DESCRIPTION_CHARS`] characters, one line of
/// printable text.
pub fn validate_description(text: &str) -> std::result::Result<String, String> {
    let text = text.trim();
    if text.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(format!("a description has at most {MAX_DESCRIPTION_CHARS} characters"));
    }
    if text.chars().any(char::is_control) {
        return Err("a description is one line without control characters".to_owned());
    }
    Ok(text.to_owned())
}

impl FromDbRow for Repo {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok(Repo {
            id: row.get("id")?,
            owner_id: row.get("owner_id")?,
            owner: row.get("owner")?,
            name: row.get("name")?,
            private: row.get("private")?,
            default_branch: row.get("default_branch")?,
            description: row.get("description")?,
            created_at: Timestamp(row.get("created_at")?),
            parent_id: row.get("parent_id")?,
            network_id: row.get("network_id")?,
            merge: MergeOptions {
                allow_merge_commit: row.get("allow_merge_commit")?,
                allow_squash_merge: row.get("allow_squash_merge")?,
                allow_rebase_merge: row.get("allow_rebase_merge")?,
                delete_branch_on_merge: row.get("delete_branch_on_merge")?,
            },
        })
    }
}

/// Accounts, tokens and repositories. Cheap to clone (a pool handle).
#[derive(Clone, Debug)]
pub struct PlatformStore {
    pub(crate) db: Db,
}

pub(crate) const ACCOUNT_COLUMNS: [&str; 6] = ["id", "name", "kind", "is_admin", "created_at", "suspended_at"];
const TOKEN_COLUMNS: [&str; 8] =
    ["id", "account_id", "name", "scopes", "expires_at", "last_used_at", "created_at", "token_hash"];

impl PlatformStore {
    /// Opens the database (running migrations).
    pub async fn open(target: &DbTarget) -> Result<Self, ConnectError> {
        Ok(PlatformStore { db: Db::connect(target).await? })
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub async fn ping(&self) -> Result<()> {
        Ok(self.db.ping().await?)
    }

    pub async fn close(&self) {
        self.db.close().await;
    }

    /// On a database with no accounts, creates the `admin` account and an `admin`-scoped token,
    /// hands the token to `persist` (which writes it where the operator finds it) and only then
    /// commits. A crash before the commit leaves no accounts, so the next start tries again; a
    /// failed `persist` rolls back. Returns `None` when accounts already exist.
    pub async fn bootstrap_admin(
        &self,
        now: Timestamp,
        persist: impl FnOnce(&TokenSecret) -> std::io::Result<()>,
    ) -> Result<Option<TokenSecret>> {
        let mut tx = self.db.begin().await?;
        let count: i64 = tx
            .conn()
            .fetch_one(&Query::select().expr(Func::count(Expr::col("id"))).from("accounts").to_owned())
            .await?;
        if count > 0 {
            return Ok(None);
        }
        let account_id: i64 = tx.conn().fetch_one(&insert_account(INITIAL_ADMIN, "user", true, now)).await?;
        let secret = TokenSecret::generate().map_err(Error::Random)?;
        let token =
            NewToken { name: "initial admin token".into(), scopes: Scopes::new([Scope::Admin]), expires_at: None };
        tx.conn().execute(&insert_token(account_id, &token, &secret, now)).await?;
        let event = AuditEvent::new("account.bootstrap", format!("user:{INITIAL_ADMIN}"))
            .details(format!(r#"{{"token":{:?}}}"#, token.name));
        append_audit(&mut tx.conn(), &Actor::system(), &event, now).await?;
        persist(&secret).map_err(Error::Persist)?;
        tx.commit().await?;
        Ok(Some(secret))
    }

    pub async fn create_user(&self, name: &str, is_admin: bool, actor: &Actor, now: Timestamp) -> Result<Account> {
        validate_username(name).map_err(|source| Error::InvalidName { field: "username", source })?;
        let mut tx = self.db.begin().await?;
        let id: i64 = tx.conn().fetch_one(&insert_account(name, "user", is_admin, now)).await.map_err(|e| {
            if is_unique_violation(&e) { Error::Conflict { what: format!("account {name:?}") } } else { e.into() }
        })?;
        let event =
            AuditEvent::new("user.create", format!("user:{name}")).details(format!(r#"{{"admin":{is_admin}}}"#));
        append_audit(&mut tx.conn(), actor, &event, now).await?;
        tx.commit().await?;
        Ok(Account { id, name: name.to_owned(), is_admin, is_org: false, created_at: now, suspended_at: None })
    }

    /// Suspends a user (nothing it holds authenticates any more: tokens, sessions, Git, its CI
    /// jobs' tokens) or lifts the suspension; audited. Organizations are not suspended this way.
    pub async fn set_suspended(&self, account: &Account, suspended: bool, actor: &Actor, now: Timestamp) -> Result<()> {
        if account.is_org {
            return Err(Error::Refused(format!("{} is an organization; only users are suspended", account.name)));
        }
        let mut tx = self.db.begin().await?;
        tx.conn()
            .execute(
                &Query::update()
                    .table("accounts")
                    .value("suspended_at", suspended.then_some(now.0))
                    .and_where(Expr::col("id").eq(account.id))
                    .to_owned(),
            )
            .await?;
        let action = if suspended { "user.suspend" } else { "user.unsuspend" };
        append_audit(&mut tx.conn(), actor, &AuditEvent::new(action, format!("user:{}", account.name)), now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Sets a user's password to an already computed hash ([`crate::password::hash_password`],
    /// which callers run off the async threads: it is deliberately slow).
    pub async fn set_password_hash(&self, account: &Account, hash: &str, actor: &Actor, now: Timestamp) -> Result<()> {
        if account.is_org {
            return Err(Error::Refused(format!("{} is an organization; organizations do not log in", account.name)));
        }
        let mut tx = self.db.begin().await?;
        tx.conn()
            .execute(
                &Query::update()
                    .table("accounts")
                    .value("password_hash", hash)
                    .and_where(Expr::col("id").eq(account.id))
                    .to_owned(),
            )
            .await?;
        let event = AuditEvent::new("user.password.set", format!("user:{}", account.name));
        append_audit(&mut tx.conn(), actor, &event, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A user who may log in, with their password hash (`None`: no password set). Organizations
    /// and unknown names give `None`.
    pub async fn login_candidate(&self, name: &str) -> Result<Option<(Account, Option<String>)>> {
        let mut columns = ACCOUNT_COLUMNS.to_vec();
        columns.push("password_hash");
        let query = Query::select()
            .columns(columns)
            .from("accounts")
            .and_where(Expr::col("name_key").eq(name.to_ascii_lowercase()))
            .and_where(Expr::col("kind").eq("user"))
            .to_owned();
        let row: Option<WithPassword> = self.db.acquire().await?.conn().fetch_optional(&query).await?;
        Ok(row.map(|r| (r.0, r.1)))
    }

    /// Failed logins counted for `key` (`account:<name>`, `address:<ip>`) in its window, and when
    /// the window began; `None` when it has none, or its window (`window_ms` long) is over. Every
    /// server sharing the database counts the same failures.
    pub async fn login_failures(&self, key: &str, now: Timestamp, window_ms: i64) -> Result<Option<(u32, Timestamp)>> {
        let q = Query::select()
            .columns(["failures", "since"])
            .from("login_failures")
            .and_where(Expr::col("key").eq(key))
            .and_where(Expr::col("since").gt(now.0 - window_ms))
            .to_owned();
        let row: Option<LoginFailures> = self.db.acquire().await?.conn().fetch_optional(&q).await?;
        Ok(row.map(|r| (u32::try_from(r.0).unwrap_or(u32::MAX), Timestamp(r.1))))
    }

    /// Counts one more failed login for `key`, in one statement (servers failing at once each
    /// count): a window over starts again at 1.
    pub async fn record_login_failure(&self, key: &str, now: Timestamp, window_ms: i64) -> Result<()> {
        let over = || Expr::col(("login_failures", "since")).lte(now.0 - window_ms);
        let upsert = Query::insert()
            .into_table("login_failures")
            .columns(["key", "failures", "since"])
            .values_panic([key.into(), 1i64.into(), now.0.into()])
            .on_conflict(
                OnConflict::column("key")
                    .value(
                        "failures",
                        Expr::case(over(), 1i64).finally(Expr::col(("login_failures", "failures")).add(1i64)),
                    )
                    .value("since", Expr::case(over(), now.0).finally(Expr::col(("login_failures", "since"))))
                    .to_owned(),
            )
            .to_owned();
        self.db.acquire().await?.conn().execute(&upsert).await?;
        Ok(())
    }

    /// Forgets `key`'s failed logins (it logged in), and windows long over (`window_ms`).
    pub async fn clear_login_failures(&self, key: &str, now: Timestamp, window_ms: i64) -> Result<()> {
        let delete = Query::delete()
            .from_table("login_failures")
            .cond_where(
                sea_query::Cond::any().add(Expr::col("key").eq(key)).add(Expr::col("since").lte(now.0 - window_ms)),
            )
            .to_owned();
        self.db.acquire().await?.conn().execute(&delete).await?;
        Ok(())
    }

    /// Adds requests counted here to the cluster's counts of `minute` (per rate-limit key) and
    /// returns each key's total (in key order); counts of minutes before the last are dropped.
    pub async fn add_rate_counts(&self, minute: i64, counts: &[(i64, i64)]) -> Result<Vec<(i64, i64)>> {
        // In key order: servers adding to the same keys at once lock their rows in one order, so
        // they wait for each other instead of deadlocking (seen with three frontends).
        let mut counts = counts.to_vec();
        counts.sort_unstable_by_key(|&(key, _)| key);
        let mut tx = self.db.begin().await?;
        let mut totals = Vec::with_capacity(counts.len());
        for (key, n) in counts {
            let upsert = Query::insert()
                .into_table("rate_windows")
                .columns(["key", "minute", "n"])
                .values_panic([key.into(), minute.into(), n.into()])
                .on_conflict(
                    OnConflict::columns(["key", "minute"])
                        .value("n", Expr::col(("rate_windows", "n")).add(n))
                        .to_owned(),
                )
                .returning_col("n")
                .to_owned();
            let total: i64 = tx.conn().fetch_one(&upsert).await?;
            totals.push((key, total));
        }
        let old = Query::delete().from_table("rate_windows").and_where(Expr::col("minute").lt(minute - 1)).to_owned();
        tx.conn().execute(&old).await?;
        tx.commit().await?;
        Ok(totals)
    }

    /// Accounts (users and organizations) by name, `limit` of them after the name `after`
    /// (case-insensitively), for a site administrator's listing.
    pub async fn list_accounts(&self, after: Option<&str>, limit: u64) -> Result<Vec<Account>> {
        let mut q = Query::select()
            .columns(ACCOUNT_COLUMNS)
            .from("accounts")
            .order_by("name_key", Order::Asc)
            .limit(limit)
            .to_owned();
        if let Some(after) = after {
            q.and_where(Expr::col("name_key").gt(after.to_ascii_lowercase()));
        }
        Ok(self.db.acquire().await?.conn().fetch_all(&q).await?)
    }

    pub async fn find_account(&self, name: &str) -> Result<Option<Account>> {
        let query = Query::select()
            .columns(ACCOUNT_COLUMNS)
            .from("accounts")
            .and_where(Expr::col("name_key").eq(name.to_ascii_lowercase()))
            .to_owned();
        Ok(self.db.acquire().await?.conn().fetch_optional(&query).await?)
    }

    /// Creates a token; the secret is returned once and never stored.
    pub async fn create_token(
        &self,
        account_id: i64,
        token: &NewToken,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<(TokenInfo, TokenSecret)> {
        let secret = TokenSecret::generate().map_err(Error::Random)?;
        let mut tx = self.db.begin().await?;
        let id: i64 = tx.conn().fetch_one(&insert_token(account_id, token, &secret, now)).await?;
        let event = AuditEvent::new("token.create", format!("token:{id}"))
            .details(format!(r#"{{"account_id":{account_id},"name":{:?},"scopes":"{}"}}"#, token.name, token.scopes));
        append_audit(&mut tx.conn(), actor, &event, now).await?;
        tx.commit().await?;
        let info = TokenInfo {
            id,
            account_id,
            name: token.name.clone(),
            scopes: token.scopes.clone(),
            expires_at: token.expires_at,
            last_used_at: None,
            created_at: now,
        };
        Ok((info, secret))
    }

    /// An account's tokens, newest first (never their secrets: those are not stored).
    pub async fn list_tokens(&self, account_id: i64) -> Result<Vec<TokenInfo>> {
        let query = Query::select()
            .columns(TOKEN_COLUMNS)
            .from("tokens")
            .and_where(Expr::col("account_id").eq(account_id))
            .order_by("id", Order::Desc)
            .to_owned();
        Ok(self.db.acquire().await?.conn().fetch_all(&query).await?)
    }

    /// Revokes (deletes) one of an account's tokens; false when it has no such token. Takes effect
    /// at once: every request authenticates against the database.
    pub async fn revoke_token(&self, account_id: i64, token_id: i64, actor: &Actor, now: Timestamp) -> Result<bool> {
        let delete = Query::delete()
            .from_table("tokens")
            .and_where(Expr::col("id").eq(token_id))
            .and_where(Expr::col("account_id").eq(account_id))
            .to_owned();
        let event = AuditEvent::new("token.revoke", format!("token:{token_id}"))
            .details(format!(r#"{{"account_id":{account_id}}}"#));
        self.delete_audited(&delete, actor, &event, now).await
    }

    /// Resolves a presented token to its principal; `None` for unknown or expired tokens.
    pub async fn authenticate(&self, presented: &str, now: Timestamp) -> Result<Option<Principal>> {
        if !presented.starts_with(crate::token::TOKEN_PREFIX) {
            return Ok(None);
        }
        let mut conn = self.db.acquire().await?;
        let token: Option<TokenInfo> = conn
            .conn()
            .fetch_optional(
                &Query::select()
                    .columns(TOKEN_COLUMNS)
                    .from("tokens")
                    .and_where(Expr::col("token_hash").eq(hash_token(presented)))
                    .to_owned(),
            )
            .await?;
        let Some(token) = token else { return Ok(None) };
        if token.expires_at.is_some_and(|at| at <= now) {
            return Ok(None);
        }
        let Some(account) =
            credential_account(&mut conn, "tokens", token.id, token.last_used_at, token.account_id, now).await?
        else {
            // Every token and session of a suspended account stops working at once.
            return Ok(None);
        };
        let session = token.name == SESSION_TOKEN_NAME;
        Ok(Some(Principal {
            account,
            token_id: token.id,
            scopes: token.scopes,
            repo_only: None,
            session,
            expires_at: token.expires_at,
        }))
    }

    pub async fn create_repo(
        &self,
        owner: &Account,
        name: &str,
        private: bool,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<Repo> {
        self.create_described_repo(owner, name, private, "", actor, now).await
    }

    /// [`PlatformStore::create_repo`] with a description ([`validate_description`]).
    pub async fn create_described_repo(
        &self,
        owner: &Account,
        name: &str,
        private: bool,
        description: &str,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<Repo> {
        let description = validate_description(description).map_err(Error::Refused)?;
        let new = Repo {
            id: 0,
            owner_id: owner.id,
            owner: owner.name.clone(),
            name: name.to_owned(),
            private,
            default_branch: DEFAULT_BRANCH.to_owned(),
            description,
            created_at: now,
            parent_id: None,
            network_id: 0,
            merge: MergeOptions::default(),
        };
        let event = AuditEvent::new("repo.create", format!("repo:{}/{name}", owner.name))
            .details(format!(r#"{{"private":{private}}}"#));
        self.insert_repo(owner, new, event, actor).await
    }

    /// Records a fork of `parent` named `name` for `owner`: the parent's visibility, description
    /// and default branch, in the parent's network, with CI switched off (as GitHub starts a fork;
    /// its admins switch it on). Audited (`repo.fork`). The caller copies the Git data.
    pub async fn create_fork(
        &self,
        parent: &Repo,
        owner: &Account,
        name: &str,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<Repo> {
        let new = Repo {
            id: 0,
            owner_id: owner.id,
            owner: owner.name.clone(),
            name: name.to_owned(),
            private: parent.private,
            default_branch: parent.default_branch.clone(),
            description: parent.description.clone(),
            created_at: now,
            parent_id: Some(parent.id),
            network_id: parent.network_id,
            merge: MergeOptions::default(),
        };
        let event = AuditEvent::new("repo.fork", format!("repo:{}/{name}", owner.name))
            .details(format!(r#"{{"parent":"{}/{}","private":{}}}"#, parent.owner, parent.name, parent.private));
        self.insert_repo(owner, new, event, actor).await
    }

    /// Inserts `new` (its id and, for no fork, its network taken from the row), in one
    /// transaction with its audit entry `event`, a fork's CI switched off, the organization's
    /// default protection on its default branch, and its platform event.
    async fn insert_repo(&self, owner: &Account, mut new: Repo, event: AuditEvent, actor: &Actor) -> Result<Repo> {
        validate_repo_name(&new.name).map_err(|source| Error::InvalidName { field: "name", source })?;
        let now = new.created_at;
        let insert = Query::insert()
            .into_table("repos")
            .columns([
                "owner_id",
                "name",
                "name_key",
                "private",
                "default_branch",
                "description",
                "created_at",
                "parent_id",
                "network_id",
            ])
            .values_panic([
                owner.id.into(),
                new.name.as_str().into(),
                new.name.to_ascii_lowercase().into(),
                new.private.into(),
                new.default_branch.as_str().into(),
                new.description.as_str().into(),
                now.0.into(),
                new.parent_id.into(),
                new.parent_id.map(|_| new.network_id).into(),
            ])
            .returning_col("id")
            .to_owned();
        let mut tx = self.db.begin().await?;
        new.id = tx.conn().fetch_one(&insert).await.map_err(|e| {
            if is_unique_violation(&e) {
                Error::Conflict { what: format!("repository {}/{}", owner.name, new.name) }
            } else {
                e.into()
            }
        })?;
        if new.parent_id.is_none() {
            new.network_id = new.id;
        } else {
            let ci_off = Query::insert()
                .into_table("ci_repo_settings")
                .columns(["repo_id", "disabled", "updated_at"])
                .values_panic([new.id.into(), true.into(), now.0.into()])
                .to_owned();
            tx.conn().execute(&ci_off).await?;
        }
        append_audit(&mut tx.conn(), actor, &event.org(owner.is_org.then_some(owner.id)), now).await?;
        if owner.is_org {
            crate::protection::apply_org_default(&mut tx.conn(), owner.id, new.id, &new.default_branch, now).await?;
        }
        append_repo_event(&mut tx.conn(), RepoAction::Created, &new, actor, now).await?;
        tx.commit().await?;
        Ok(new)
    }

    /// The forks made of a repository (its direct children), oldest first.
    pub async fn list_forks(&self, repo_id: i64) -> Result<Vec<Repo>> {
        let query = repo_select()
            .and_where(Expr::col(("repos", "parent_id")).eq(repo_id))
            .order_by(("repos", "id"), Order::Asc)
            .to_owned();
        Ok(self.db.acquire().await?.conn().fetch_all(&query).await?)
    }

    /// The repository of `owner` in the network `network_id` (the oldest, should it have several):
    /// where a pull request's `head: "owner:branch"` points.
    pub async fn network_repo_of(&self, network_id: i64, owner: &str) -> Result<Option<Repo>> {
        let query = repo_select()
            .cond_where(
                sea_query::Cond::any()
                    .add(Expr::col(("repos", "network_id")).eq(network_id))
                    .add(Expr::col(("repos", "id")).eq(network_id)),
            )
            .and_where(Expr::col(("accounts", "name_key")).eq(owner.to_ascii_lowercase()))
            .order_by(("repos", "id"), Order::Asc)
            .to_owned();
        let found: Vec<Repo> = self.db.acquire().await?.conn().fetch_all(&query).await?;
        Ok(found.into_iter().next())
    }

    /// Finds a repository by owner and name, both case-insensitive.
    pub async fn get_repo(&self, owner: &str, name: &str) -> Result<Option<Repo>> {
        let query = repo_select()
            .and_where(Expr::col(("accounts", "name_key")).eq(owner.to_ascii_lowercase()))
            .and_where(Expr::col(("repos", "name_key")).eq(name.to_ascii_lowercase()))
            .to_owned();
        Ok(self.db.acquire().await?.conn().fetch_optional(&query).await?)
    }

    /// Repositories owned by an account, by name.
    pub async fn list_repos(&self, owner_id: i64) -> Result<Vec<Repo>> {
        let query = repo_select()
            .and_where(Expr::col(("repos", "owner_id")).eq(owner_id))
            .order_by(("repos", "name_key"), Order::Asc)
            .to_owned();
        Ok(self.db.acquire().await?.conn().fetch_all(&query).await?)
    }

    /// Repositories a user has a role on: their own, their organizations', and those they were
    /// granted, ordered by owner and name.
    pub async fn list_accessible_repos(&self, user_id: i64) -> Result<Vec<Repo>> {
        let orgs =
            Query::select().column("org_id").from("org_members").and_where(Expr::col("user_id").eq(user_id)).to_owned();
        let granted = Query::select()
            .column("repo_id")
            .from("repo_collaborators")
            .and_where(Expr::col("user_id").eq(user_id))
            .to_owned();
        let by_team = Query::select()
            .column(("team_repos", "repo_id"))
            .from("team_repos")
            .inner_join("team_members", Expr::col(("team_members", "team_id")).equals(("team_repos", "team_id")))
            .and_where(Expr::col(("team_members", "user_id")).eq(user_id))
            .to_owned();
        let query = repo_select()
            .cond_where(
                sea_query::Cond::any()
                    .add(Expr::col(("repos", "owner_id")).eq(user_id))
                    .add(Expr::col(("repos", "owner_id")).in_subquery(orgs))
                    .add(Expr::col(("repos", "id")).in_subquery(granted))
                    .add(Expr::col(("repos", "id")).in_subquery(by_team)),
            )
            .order_by(("accounts", "name_key"), Order::Asc)
            .order_by(("repos", "name_key"), Order::Asc)
            .to_owned();
        Ok(self.db.acquire().await?.conn().fetch_all(&query).await?)
    }

    /// Makes a repository private or public; false when it already was.
    pub async fn set_repo_private(&self, repo: &Repo, private: bool, actor: &Actor, now: Timestamp) -> Result<bool> {
        if repo.private == private {
            return Ok(false);
        }
        let org = self.owner_org(repo).await?;
        let mut tx = self.db.begin().await?;
        tx.conn()
            .execute(
                &Query::update()
                    .table("repos")
                    .value("private", private)
                    .and_where(Expr::col("id").eq(repo.id))
                    .to_owned(),
            )
            .await?;
        let event = AuditEvent::new("repo.visibility", format!("repo:{}/{}", repo.owner, repo.name))
            .org(org)
            .details(format!(r#"{{"private":{private}}}"#));
        append_audit(&mut tx.conn(), actor, &event, now).await?;
        let action = if private { RepoAction::Privatized } else { RepoAction::Publicized };
        let changed = Repo { private, ..repo.clone() };
        append_repo_event(&mut tx.conn(), action, &changed, actor, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Sets a repository's description ([`validate_description`]); returns it as kept.
    pub async fn set_repo_description(
        &self,
        repo: &Repo,
        description: &str,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<String> {
        let description = validate_description(description).map_err(Error::Refused)?;
        if description == repo.description {
            return Ok(description);
        }
        let org = self.owner_org(repo).await?;
        let mut tx = self.db.begin().await?;
        let update = Query::update()
            .table("repos")
            .value("description", description.clone())
            .and_where(Expr::col("id").eq(repo.id))
            .to_owned();
        tx.conn().execute(&update).await?;
        // No control characters (validated): quotes and backslashes are all JSON needs escaped.
        let quoted = description.replace('\\', "\\\\").replace('"', "\\\"");
        let event = AuditEvent::new("repo.update", format!("repo:{}/{}", repo.owner, repo.name))
            .org(org)
            .details(format!(r#"{{"description":"{quoted}"}}"#));
        append_audit(&mut tx.conn(), actor, &event, now).await?;
        tx.commit().await?;
        Ok(description)
    }

    /// Sets how a repository's pull requests may be merged; at least one method must stay
    /// allowed. Audited.
    pub async fn set_merge_options(
        &self,
        repo: &Repo,
        merge: MergeOptions,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<()> {
        if !(merge.allow_merge_commit || merge.allow_squash_merge || merge.allow_rebase_merge) {
            return Err(Error::Refused("at least one merge method must be allowed".to_owned()));
        }
        let org = self.owner_org(repo).await?;
        let update = Query::update()
            .table("repos")
            .value("allow_merge_commit", merge.allow_merge_commit)
            .value("allow_squash_merge", merge.allow_squash_merge)
            .value("allow_rebase_merge", merge.allow_rebase_merge)
            .value("delete_branch_on_merge", merge.delete_branch_on_merge)
            .and_where(Expr::col("id").eq(repo.id))
            .to_owned();
        let mut tx = self.db.begin().await?;
        tx.conn().execute(&update).await?;
        let event = AuditEvent::new("repo.update", format!("repo:{}/{}", repo.owner, repo.name)).org(org).details(format!(
            r#"{{"allow_merge_commit":{},"allow_squash_merge":{},"allow_rebase_merge":{},"delete_branch_on_merge":{}}}"#,
            merge.allow_merge_commit, merge.allow_squash_merge, merge.allow_rebase_merge, merge.delete_branch_on_merge
        ));
        append_audit(&mut tx.conn(), actor, &event, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes a repository; false when it was already gone.
    pub async fn delete_repo(&self, repo: &Repo, actor: &Actor, now: Timestamp) -> Result<bool> {
        let delete = Query::delete().from_table("repos").and_where(Expr::col("id").eq(repo.id)).to_owned();
        let event = AuditEvent::new("repo.delete", format!("repo:{}/{}", repo.owner, repo.name))
            .org(self.owner_org(repo).await?);
        let mut tx = self.db.begin().await?;
        if tx.conn().execute(&delete).await? == 0 {
            return Ok(false);
        }
        // Its forks stay (they hold their own objects), no longer naming a parent.
        let orphan = Query::update()
            .table("repos")
            .value("parent_id", Option::<i64>::None)
            .and_where(Expr::col("parent_id").eq(repo.id))
            .to_owned();
        tx.conn().execute(&orphan).await?;
        append_audit(&mut tx.conn(), actor, &event, now).await?;
        append_repo_event(&mut tx.conn(), RepoAction::Deleted, repo, actor, now).await?;
        tx.commit().await?;
        Ok(true)
    }
}

impl PlatformStore {
    /// Deletes a user account in one transaction: its repositories go to `heir` (a user or an
    /// organization) or, without one, are deleted; its tokens, keys, memberships and grants go
    /// with it. Refused — nothing changes — when it is the last owner of an organization, or when
    /// the heir already has a repository of the same name. Returns the repositories deleted (their
    /// Git data is the caller's to remove). Audited.
    pub async fn delete_user(
        &self,
        user: &Account,
        heir: Option<&Account>,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<Vec<Repo>> {
        if user.is_org {
            return Err(Error::Refused(format!("{} is an organization", user.name)));
        }
        let mut tx = self.db.begin().await?;
        let owned_orgs: Vec<i64> = tx
            .conn()
            .fetch_all(
                &Query::select()
                    .column("org_id")
                    .from("org_members")
                    .and_where(Expr::col("user_id").eq(user.id))
                    .and_where(Expr::col("role").eq("owner"))
                    .to_owned(),
            )
            .await?;
        for org in owned_orgs {
            let owners: i64 = tx
                .conn()
                .fetch_one(
                    &Query::select()
                        .expr(Expr::col("user_id").count())
                        .from("org_members")
                        .and_where(Expr::col("org_id").eq(org))
                        .and_where(Expr::col("role").eq("owner"))
                        .to_owned(),
                )
                .await?;
            if owners <= 1 {
                return Err(Error::Refused(format!(
                    "{} is the last owner of an organization; make someone else an owner first",
                    user.name
                )));
            }
        }
        let repos: Vec<Repo> = tx
            .conn()
            .fetch_all(&repo_select().and_where(Expr::col(("repos", "owner_id")).eq(user.id)).to_owned())
            .await?;
        let mut deleted = Vec::new();
        for repo in repos {
            let target = format!("repo:{}/{}", repo.owner, repo.name);
            match heir {
                Some(heir) => {
                    let taken: Option<i64> = tx
                        .conn()
                        .fetch_optional(
                            &Query::select()
                                .column("id")
                                .from("repos")
                                .and_where(Expr::col("owner_id").eq(heir.id))
                                .and_where(Expr::col("name_key").eq(repo.name.to_ascii_lowercase()))
                                .to_owned(),
                        )
                        .await?;
                    if taken.is_some() {
                        return Err(Error::Conflict { what: format!("repository {}/{}", heir.name, repo.name) });
                    }
                    tx.conn()
                        .execute(
                            &Query::update()
                                .table("repos")
                                .value("owner_id", heir.id)
                                .and_where(Expr::col("id").eq(repo.id))
                                .to_owned(),
                        )
                        .await?;
                    let event =
                        AuditEvent::new("repo.transfer", target).details(format!(r#"{{"to":{:?}}}"#, heir.name));
                    append_audit(&mut tx.conn(), actor, &event, now).await?;
                }
                None => {
                    tx.conn()
                        .execute(&Query::delete().from_table("repos").and_where(Expr::col("id").eq(repo.id)).to_owned())
                        .await?;
                    append_audit(&mut tx.conn(), actor, &AuditEvent::new("repo.delete", target), now).await?;
                    append_repo_event(&mut tx.conn(), RepoAction::Deleted, &repo, actor, now).await?;
                    deleted.push(repo);
                }
            }
        }
        tx.conn()
            .execute(&Query::delete().from_table("accounts").and_where(Expr::col("id").eq(user.id)).to_owned())
            .await?;
        append_audit(&mut tx.conn(), actor, &AuditEvent::new("user.delete", format!("user:{}", user.name)), now)
            .await?;
        tx.commit().await?;
        Ok(deleted)
    }
}

pub(crate) fn insert_account(name: &str, kind: &str, is_admin: bool, now: Timestamp) -> sea_query::InsertStatement {
    Query::insert()
        .into_table("accounts")
        .columns(["kind", "name", "name_key", "is_admin", "created_at"])
        .values_panic([kind.into(), name.into(), name.to_ascii_lowercase().into(), is_admin.into(), now.0.into()])
        .returning_col("id")
        .to_owned()
}

/// The account a credential (a token, an SSH key) belongs to, once the credential's use is
/// recorded in its `table` (at most once per [`LAST_USED_RESOLUTION_MS`], so authenticating stays
/// mostly a read); `None` while the account is suspended.
pub(crate) async fn credential_account(
    conn: &mut crate::db::PooledConn,
    table: &str,
    credential_id: i64,
    last_used_at: Option<Timestamp>,
    account_id: i64,
    now: Timestamp,
) -> Result<Option<Account>> {
    let account: Account = conn
        .conn()
        .fetch_one(
            &Query::select()
                .columns(ACCOUNT_COLUMNS)
                .from("accounts")
                .and_where(Expr::col("id").eq(account_id))
                .to_owned(),
        )
        .await?;
    if last_used_at.is_none_or(|at| now.0 - at.0 >= LAST_USED_RESOLUTION_MS) {
        conn.conn()
            .execute(
                &Query::update()
                    .table(sea_query::Alias::new(table))
                    .value("last_used_at", now.0)
                    .and_where(Expr::col("id").eq(credential_id))
                    .to_owned(),
            )
            .await?;
    }
    Ok(Some(account).filter(|a| a.suspended_at.is_none()))
}

fn insert_token(account_id: i64, token: &NewToken, secret: &TokenSecret, now: Timestamp) -> sea_query::InsertStatement {
    Query::insert()
        .into_table("tokens")
        .columns(["account_id", "name", "token_hash", "scopes", "expires_at", "created_at"])
        .values_panic([
            account_id.into(),
            token.name.as_str().into(),
            hash_token(secret.expose()).into(),
            token.scopes.to_string().into(),
            token.expires_at.map(|t| t.0).into(),
            now.0.into(),
        ])
        .returning_col("id")
        .to_owned()
}

pub(crate) fn repo_select() -> sea_query::SelectStatement {
    Query::select()
        .columns([
            ("repos", "id"),
            ("repos", "owner_id"),
            ("repos", "name"),
            ("repos", "private"),
            ("repos", "default_branch"),
            ("repos", "description"),
            ("repos", "created_at"),
            ("repos", "parent_id"),
            ("repos", "allow_merge_commit"),
            ("repos", "allow_squash_merge"),
            ("repos", "allow_rebase_merge"),
            ("repos", "delete_branch_on_merge"),
        ])
        .expr_as(Expr::col(("accounts", "name")), "owner")
        .expr_as(Func::coalesce([Expr::col(("repos", "network_id")), Expr::col(("repos", "id"))]), "network_id")
        .from("repos")
        .inner_join("accounts", Expr::col(("accounts", "id")).equals(("repos", "owner_id")))
        .to_owned()
}
