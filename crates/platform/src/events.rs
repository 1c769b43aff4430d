//! Events of the platform itself: a repository created, deleted, made public or private. Each is
//! written in the transaction of the change (so it exists exactly when the change does) and read by
//! consumers the way they read the ref-change log, with a cursor (`log_cursors`) advanced in the
//! same transaction as the work derived from it: the webhook dispatcher now, the CI engine later.
//!
//! Appends are serialized (SQLite transactions begin `IMMEDIATE`; PostgreSQL locks the table until
//! commit), so ids become visible in increasing order and a cursor never skips an event that
//! commits late.

use gitstratum_core::Timestamp;
use sea_query::{Expr, ExprTrait, OnConflict, Order, Query};

use crate::audit::Actor;
use crate::db::{Conn, DbRow, FromDbRow};
use crate::store::{PlatformStore, Repo, Result};

/// What happened to a repository (the `action` of GitHub's `repository` event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoAction {
    Created,
    Deleted,
    Publicized,
    Privatized,
}

impl RepoAction {
    pub fn as_str(self) -> &'static str {
        match self {
            RepoAction::Created => "created",
            RepoAction::Deleted => "deleted",
            RepoAction::Publicized => "publicized",
            RepoAction::Privatized => "privatized",
        }
    }
}

/// One event, with the repository as it was when it happened (it may be gone since).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformEvent {
    pub id: i64,
    /// The webhook event name: `repository`.
    pub event: String,
    pub action: String,
    pub repo: Repo,
    /// Who did it (an account name, or the server).
    pub actor: String,
    pub created_at: Timestamp,
    /// `pull_request` and `pull_request_review` events: the pull request (its id), the review,
    /// and the pull request's head and base tips when it happened.
    pub pull: Option<PullRef>,
}

/// What a pull request event names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRef {
    pub pull_id: i64,
    pub review_id: Option<i64>,
    pub head_sha: String,
    pub base_sha: String,
}

impl FromDbRow for PlatformEvent {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok(PlatformEvent {
            id: row.get("id")?,
            event: row.get("event")?,
            action: row.get("action")?,
            repo: Repo {
                id: row.get("repo_id")?,
                owner_id: row.get("owner_id")?,
                owner: row.get("owner")?,
                name: row.get("name")?,
                private: row.get("private")?,
                default_branch: row.get("default_branch")?,
                // Events keep what identifies the repository, not its description.
                description: String::new(),
                created_at: Timestamp(row.get("repo_created_at")?),
                // Nor its place among forks.
                parent_id: None,
                network_id: row.get("repo_id")?,
                merge: crate::store::MergeOptions::default(),
            },
            actor: row.get("actor")?,
            created_at: Timestamp(row.get("created_at")?),
            pull: match row.get::<Option<i64>>("pull_id")? {
                Some(pull_id) => Some(PullRef {
                    pull_id,
                    review_id: row.get("review_id")?,
                    head_sha: row.get::<Option<String>>("head_sha")?.unwrap_or_default(),
                    base_sha: row.get::<Option<String>>("base_sha")?.unwrap_or_default(),
                }),
                None => None,
            },
        })
    }
}

const COLUMNS: [&str; 16] = [
    "id",
    "event",
    "action",
    "repo_id",
    "owner_id",
    "owner",
    "name",
    "private",
    "default_branch",
    "repo_created_at",
    "actor",
    "created_at",
    "pull_id",
    "review_id",
    "head_sha",
    "base_sha",
];

/// A log consumer's position (0 before its first event).
pub async fn log_cursor(conn: &mut Conn<'_>, name: &str) -> Result<u64> {
    let q = Query::select().column("seq").from("log_cursors").and_where(Expr::col("name").eq(name)).to_owned();
    let seq: Option<i64> = conn.fetch_optional(&q).await?;
    Ok(seq.map_or(0, |s| u64::try_from(s).unwrap_or(0)))
}

/// Moves a log consumer's cursor from `from` to `to`, in the caller's transaction (the one that
/// writes the work derived from the events after `from` up to `to`) — only if it is still at
/// `from`. Returns whether it moved: when two servers consume the same log, the one that finds the
/// cursor moved must roll its work back, so each event's work is committed exactly once. Done
/// first in the transaction, the loser waits on the cursor's row and fails before writing
/// anything.
pub async fn move_log_cursor(conn: &mut Conn<'_>, name: &str, from: u64, to: u64) -> Result<bool> {
    let (from, to) = (i64::try_from(from).unwrap_or(i64::MAX), i64::try_from(to).unwrap_or(i64::MAX));
    if from == 0 {
        let create = Query::insert()
            .into_table("log_cursors")
            .columns(["name", "seq"])
            .values_panic([name.into(), 0i64.into()])
            .on_conflict(OnConflict::column("name").do_nothing().to_owned())
            .to_owned();
        conn.execute(&create).await?;
    }
    let update = Query::update()
        .table("log_cursors")
        .value("seq", to)
        .and_where(Expr::col("name").eq(name))
        .and_where(Expr::col("seq").eq(from))
        .to_owned();
    Ok(conn.execute(&update).await? == 1)
}

/// Appends a repository event in the caller's transaction.
pub(crate) async fn append_repo_event(
    conn: &mut Conn<'_>,
    action: RepoAction,
    repo: &Repo,
    actor: &Actor,
    now: Timestamp,
) -> Result<()> {
    if let Conn::Postgres(_) = conn {
        conn.execute_raw("LOCK TABLE platform_events IN SHARE ROW EXCLUSIVE MODE").await?;
    }
    let insert = Query::insert()
        .into_table("platform_events")
        .columns(COLUMNS[1..12].iter().copied())
        .values_panic([
            "repository".into(),
            action.as_str().into(),
            repo.id.into(),
            repo.owner_id.into(),
            repo.owner.as_str().into(),
            repo.name.as_str().into(),
            repo.private.into(),
            repo.default_branch.as_str().into(),
            repo.created_at.0.into(),
            actor.name.as_str().into(),
            now.0.into(),
        ])
        .to_owned();
    conn.execute(&insert).await?;
    Ok(())
}

/// Appends a `pull_request` or `pull_request_review` event in the caller's transaction, with the
/// repository as it is (read in the same statement).
pub(crate) async fn append_pull_event(
    conn: &mut Conn<'_>,
    event: &str,
    action: &str,
    repo_id: i64,
    pull: &PullRef,
    actor: &str,
    now: Timestamp,
) -> Result<()> {
    if let Conn::Postgres(_) = conn {
        conn.execute_raw("LOCK TABLE platform_events IN SHARE ROW EXCLUSIVE MODE").await?;
    }
    let snapshot = Query::select()
        .expr(Expr::val(event))
        .expr(Expr::val(action))
        .column(("repos", "id"))
        .column(("repos", "owner_id"))
        .column(("accounts", "name"))
        .column(("repos", "name"))
        .column(("repos", "private"))
        .column(("repos", "default_branch"))
        .column(("repos", "created_at"))
        .expr(Expr::val(actor))
        .expr(Expr::val(now.0))
        .expr(Expr::val(pull.pull_id))
        .expr(Expr::val(pull.review_id))
        .expr(Expr::val(pull.head_sha.as_str()))
        .expr(Expr::val(pull.base_sha.as_str()))
        .from("repos")
        .inner_join("accounts", Expr::col(("accounts", "id")).equals(("repos", "owner_id")))
        .and_where(Expr::col(("repos", "id")).eq(repo_id))
        .to_owned();
    let insert = Query::insert()
        .into_table("platform_events")
        .columns(COLUMNS[1..].iter().copied())
        .select_from(snapshot)
        .map_err(|e| sqlx::Error::Protocol(format!("building an event insert: {e}")))?
        .to_owned();
    conn.execute(&insert).await?;
    Ok(())
}

impl PlatformStore {
    /// Moves a consumer's cursor from `from` to `to` on its own (a consumer whose work is
    /// idempotent and written elsewhere); false when another server moved it first.
    pub async fn advance_log_cursor(&self, name: &str, from: u64, to: u64) -> Result<bool> {
        let mut tx = self.db.begin().await?;
        let moved = move_log_cursor(&mut tx.conn(), name, from, to).await?;
        tx.commit().await?;
        Ok(moved)
    }

    /// One event by id.
    pub async fn platform_event(&self, id: i64) -> Result<Option<PlatformEvent>> {
        let q = Query::select().columns(COLUMNS).from("platform_events").and_where(Expr::col("id").eq(id)).to_owned();
        Ok(self.db.acquire().await?.conn().fetch_optional(&q).await?)
    }

    /// A pull request's events (opened, pushed to, reviewed, closed, …), oldest first, at most
    /// `limit`.
    pub async fn pull_events(&self, pull_id: i64, limit: u64) -> Result<Vec<PlatformEvent>> {
        let q = Query::select()
            .columns(COLUMNS)
            .from("platform_events")
            .and_where(Expr::col("pull_id").eq(pull_id))
            .order_by("id", Order::Asc)
            .limit(limit)
            .to_owned();
        Ok(self.db.acquire().await?.conn().fetch_all(&q).await?)
    }

    /// Events after id `after`, oldest first.
    pub async fn platform_events_after(&self, after: u64, limit: u64) -> Result<Vec<PlatformEvent>> {
        let q = Query::select()
            .columns(COLUMNS)
            .from("platform_events")
            .and_where(Expr::col("id").gt(i64::try_from(after).unwrap_or(i64::MAX)))
            .order_by("id", Order::Asc)
            .limit(limit)
            .to_owned();
        Ok(self.db.acquire().await?.conn().fetch_all(&q).await?)
    }
}
