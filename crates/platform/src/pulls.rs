//! Pull requests: numbered per repository, a head branch proposed for a base branch.
//!
//! This module keeps their rows; what Git says about them (the tips, whether the head merges
//! cleanly, the test merge) is computed elsewhere (`gitstratum-pulls`) and recorded here with
//! [`PlatformStore::record_mergeability`], which only lands when the pull request still has the
//! tips it was computed for, so a late computation never overwrites a newer one.

use gitstratum_core::Timestamp;
use sea_query::{Expr, ExprTrait, Func, Order, Query};

use crate::db::{Conn, DbRow, FromDbRow};
use crate::events::{PullRef, append_pull_event};
use crate::store::{Error, PlatformStore, Result};

/// The longest title kept (GitHub's limit).
pub const MAX_TITLE_CHARS: usize = 256;
/// The longest body kept (GitHub's limit: 65536 characters).
pub const MAX_BODY_CHARS: usize = 65_536;
/// One transaction at a time numbers a repository's pull requests on PostgreSQL (advisory lock
/// class; SQLite's write lock serializes them already).
const LOCK_PULL_NUMBERS: i32 = 0x6773_0021;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullState {
    Open,
    Closed,
}

impl PullState {
    pub fn as_str(self) -> &'static str {
        match self {
            PullState::Open => "open",
            PullState::Closed => "closed",
        }
    }

    fn parse(text: &str) -> PullState {
        if text == "open" { PullState::Open } else { PullState::Closed }
    }
}

/// Whether the head merges into the base, as last computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mergeable {
    /// Not computed for the current tips yet.
    Unknown,
    Clean,
    Conflict,
}

impl Mergeable {
    pub fn as_str(self) -> &'static str {
        match self {
            Mergeable::Unknown => "unknown",
            Mergeable::Clean => "clean",
            Mergeable::Conflict => "conflict",
        }
    }

    fn parse(text: &str) -> Mergeable {
        match text {
            "clean" => Mergeable::Clean,
            "conflict" => Mergeable::Conflict,
            _ => Mergeable::Unknown,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pull {
    pub id: i64,
    pub repo_id: i64,
    pub number: i64,
    /// Who opened it (`None` once the account is deleted; `author` keeps the name).
    pub author_id: Option<i64>,
    pub author: String,
    pub title: String,
    pub body: String,
    pub draft: bool,
    pub state: PullState,
    /// The repository the head branch is in (`None` once it is deleted).
    pub head_repo_id: Option<i64>,
    /// A branch name (`feature`, not `refs/heads/feature`).
    pub head_ref: String,
    pub head_sha: String,
    pub base_ref: String,
    pub base_sha: String,
    pub mergeable: Mergeable,
    /// The paths that conflict, when `mergeable` is `Conflict`.
    pub conflicts: Vec<String>,
    /// The test merge of head into base (`refs/pull/N/merge`), when it merges cleanly.
    pub merge_sha: Option<String>,
    pub merged: bool,
    pub merged_by: Option<String>,
    /// The commit the merge made on the base branch.
    pub merge_commit_sha: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub closed_at: Option<Timestamp>,
    pub merged_at: Option<Timestamp>,
}

const COLUMNS: [&str; 24] = [
    "id",
    "repo_id",
    "number",
    "author_id",
    "author",
    "title",
    "body",
    "draft",
    "state",
    "head_repo_id",
    "head_ref",
    "head_sha",
    "base_ref",
    "base_sha",
    "mergeable",
    "conflicts",
    "merge_sha",
    "merged",
    "merged_by",
    "merge_commit_sha",
    "created_at",
    "updated_at",
    "closed_at",
    "merged_at",
];

impl FromDbRow for Pull {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        let state: String = row.get("state")?;
        let mergeable: String = row.get("mergeable")?;
        let conflicts: String = row.get("conflicts")?;
        Ok(Pull {
            id: row.get("id")?,
            repo_id: row.get("repo_id")?,
            number: row.get("number")?,
            author_id: row.get("author_id")?,
            author: row.get("author")?,
            title: row.get("title")?,
            body: row.get("body")?,
            draft: row.get("draft")?,
            state: PullState::parse(&state),
            head_repo_id: row.get("head_repo_id")?,
            head_ref: row.get("head_ref")?,
            head_sha: row.get("head_sha")?,
            base_ref: row.get("base_ref")?,
            base_sha: row.get("base_sha")?,
            mergeable: Mergeable::parse(&mergeable),
            conflicts: conflicts.lines().map(str::to_owned).collect(),
            merge_sha: row.get("merge_sha")?,
            merged: row.get("merged")?,
            merged_by: row.get("merged_by")?,
            merge_commit_sha: row.get("merge_commit_sha")?,
            created_at: Timestamp(row.get("created_at")?),
            updated_at: Timestamp(row.get("updated_at")?),
            closed_at: row.get::<Option<i64>>("closed_at")?.map(Timestamp),
            merged_at: row.get::<Option<i64>>("merged_at")?.map(Timestamp),
        })
    }
}

/// A pull request to open: the caller has checked that both branches exist (their tips are
/// `head_sha` and `base_sha`) and that the author may read the head.
#[derive(Debug, Clone)]
pub struct NewPull {
    pub head_repo_id: i64,
    pub head_ref: String,
    pub head_sha: String,
    pub base_ref: String,
    pub base_sha: String,
    pub title: String,
    pub body: String,
    pub draft: bool,
}

/// Changes to a pull request; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct PullEdit {
    pub title: Option<String>,
    pub body: Option<String>,
    pub state: Option<PullState>,
    /// A new base branch, with its tip.
    pub base: Option<(String, String)>,
    pub draft: Option<bool>,
}

/// What Git says about a pull request's tips.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mergeability {
    pub head_sha: String,
    pub base_sha: String,
    pub mergeable: Mergeable,
    pub conflicts: Vec<String>,
    pub merge_sha: Option<String>,
}

/// Which pull requests a listing shows (GitHub's `state` parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullFilter {
    Open,
    Closed,
    All,
}

/// A title as kept: trimmed, 1 to [`MAX_TITLE_CHARS`] characters, one line.
pub fn validate_title(text: &str) -> std::result::Result<String, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("a pull request needs a title".to_owned());
    }
    if text.chars().count() > MAX_TITLE_CHARS {
        return Err(format!("a title has at most {MAX_TITLE_CHARS} characters"));
    }
    if text.chars().any(char::is_control) {
        return Err("a title is one line without control characters".to_owned());
    }
    Ok(text.to_owned())
}

/// A body as kept: at most [`MAX_BODY_CHARS`] characters.
pub fn validate_body(text: &str) -> std::result::Result<String, String> {
    if text.chars().count() > MAX_BODY_CHARS {
        return Err(format!("a body has at most {MAX_BODY_CHARS} characters"));
    }
    Ok(text.to_owned())
}

fn select() -> sea_query::SelectStatement {
    Query::select().columns(COLUMNS).from("pulls").to_owned()
}

impl Pull {
    /// What an event about this pull request names (a review's id added by the caller).
    fn event_ref(&self) -> PullRef {
        PullRef { pull_id: self.id, review_id: None, head_sha: self.head_sha.clone(), base_sha: self.base_sha.clone() }
    }
}

/// Appends a `pull_request` event with `action` about `pull` as it is now.
async fn pull_event(conn: &mut Conn<'_>, pull: &Pull, action: &str, actor: &str, now: Timestamp) -> Result<()> {
    append_pull_event(conn, "pull_request", action, pull.repo_id, &pull.event_ref(), actor, now).await
}

async fn pull_by_id(conn: &mut Conn<'_>, id: i64) -> Result<Option<Pull>> {
    Ok(conn.fetch_optional(&select().and_where(Expr::col("id").eq(id)).to_owned()).await?)
}

impl PlatformStore {
    /// Opens a pull request, numbered one more than the repository's highest. Refused when an
    /// open pull request already proposes the same head for the same base.
    pub async fn create_pull(
        &self,
        repo_id: i64,
        author: &crate::Account,
        new: &NewPull,
        now: Timestamp,
    ) -> Result<Pull> {
        let title = validate_title(&new.title).map_err(Error::Refused)?;
        let body = validate_body(&new.body).map_err(Error::Refused)?;
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        if let Conn::Postgres(pg) = &mut conn {
            sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
                .bind(LOCK_PULL_NUMBERS)
                .bind(repo_id as i32) // truncated: two repositories sharing a lock only wait
                .execute(&mut **pg)
                .await?;
        }
        let existing = Query::select()
            .column("number")
            .from("pulls")
            .and_where(Expr::col("repo_id").eq(repo_id))
            .and_where(Expr::col("head_repo_id").eq(new.head_repo_id))
            .and_where(Expr::col("head_ref").eq(new.head_ref.as_str()))
            .and_where(Expr::col("base_ref").eq(new.base_ref.as_str()))
            .and_where(Expr::col("state").eq("open"))
            .to_owned();
        if let Some(number) = conn.fetch_optional::<i64>(&existing).await? {
            return Err(Error::Conflict { what: format!("pull request #{number} for {}", new.head_ref) });
        }
        let highest = Query::select()
            .expr(Func::coalesce([Expr::col("number").max(), Expr::val(0i64)]))
            .from("pulls")
            .and_where(Expr::col("repo_id").eq(repo_id))
            .to_owned();
        let number: i64 = conn.fetch_one::<i64>(&highest).await? + 1;
        let insert = Query::insert()
            .into_table("pulls")
            .columns([
                "repo_id",
                "number",
                "author_id",
                "author",
                "title",
                "body",
                "draft",
                "state",
                "head_repo_id",
                "head_ref",
                "head_sha",
                "base_ref",
                "base_sha",
                "mergeable",
                "created_at",
                "updated_at",
            ])
            .values_panic([
                repo_id.into(),
                number.into(),
                author.id.into(),
                author.name.as_str().into(),
                title.into(),
                body.into(),
                new.draft.into(),
                "open".into(),
                new.head_repo_id.into(),
                new.head_ref.as_str().into(),
                new.head_sha.as_str().into(),
                new.base_ref.as_str().into(),
                new.base_sha.as_str().into(),
                Mergeable::Unknown.as_str().into(),
                now.0.into(),
                now.0.into(),
            ])
            .to_owned();
        conn.execute(&insert).await?;
        let pull = conn
            .fetch_one::<Pull>(
                &select()
                    .and_where(Expr::col("repo_id").eq(repo_id))
                    .and_where(Expr::col("number").eq(number))
                    .to_owned(),
            )
            .await?;
        pull_event(&mut conn, &pull, "opened", &author.name, now).await?;
        tx.commit().await?;
        Ok(pull)
    }

    pub async fn get_pull_by_id(&self, id: i64) -> Result<Option<Pull>> {
        pull_by_id(&mut self.db.acquire().await?.conn(), id).await
    }

    pub async fn get_pull(&self, repo_id: i64, number: i64) -> Result<Option<Pull>> {
        let q =
            select().and_where(Expr::col("repo_id").eq(repo_id)).and_where(Expr::col("number").eq(number)).to_owned();
        let mut conn = self.db.acquire().await?;
        Ok(conn.conn().fetch_optional(&q).await?)
    }

    /// A repository's pull requests, newest first, `per_page` from `page` (1-based).
    pub async fn list_pulls(&self, repo_id: i64, filter: PullFilter, page: u64, per_page: u64) -> Result<Vec<Pull>> {
        let mut q = select().and_where(Expr::col("repo_id").eq(repo_id)).to_owned();
        match filter {
            PullFilter::Open => q.and_where(Expr::col("state").eq("open")),
            PullFilter::Closed => q.and_where(Expr::col("state").eq("closed")),
            PullFilter::All => &mut q,
        };
        q.order_by("number", Order::Desc).limit(per_page).offset(page.saturating_sub(1) * per_page);
        let mut conn = self.db.acquire().await?;
        Ok(conn.conn().fetch_all(&q).await?)
    }

    /// Open pull requests whose head is `branch` of repository `head_repo_id` (a push to it moves
    /// them), or whose base is `branch` of that repository.
    pub async fn open_pulls_on_branch(&self, repo_id: i64, branch: &str) -> Result<Vec<Pull>> {
        let q = select()
            .and_where(Expr::col("state").eq("open"))
            .cond_where(
                sea_query::Cond::any()
                    .add(Expr::col("head_repo_id").eq(repo_id).and(Expr::col("head_ref").eq(branch)))
                    .add(Expr::col("repo_id").eq(repo_id).and(Expr::col("base_ref").eq(branch))),
            )
            .order_by("id", Order::Asc)
            .to_owned();
        let mut conn = self.db.acquire().await?;
        Ok(conn.conn().fetch_all(&q).await?)
    }

    /// Changes title, body, state, base or draft; the pull request as it is now. Reopening is
    /// refused once merged, and when another open pull request proposes the same branches.
    pub async fn update_pull(&self, pull: &Pull, edit: &PullEdit, actor: &str, now: Timestamp) -> Result<Pull> {
        let mut values: Vec<(&str, Expr)> = vec![("updated_at", now.0.into())];
        if let Some(title) = &edit.title {
            values.push(("title", validate_title(title).map_err(Error::Refused)?.into()));
        }
        if let Some(body) = &edit.body {
            values.push(("body", validate_body(body).map_err(Error::Refused)?.into()));
        }
        if let Some(draft) = edit.draft {
            values.push(("draft", draft.into()));
        }
        let base_ref = edit.base.as_ref().map_or(pull.base_ref.as_str(), |(name, _)| name.as_str());
        if let Some((name, sha)) = &edit.base {
            if pull.state == PullState::Closed && pull.merged {
                return Err(Error::Refused("a merged pull request's base cannot change".to_owned()));
            }
            values.push(("base_ref", name.as_str().into()));
            values.push(("base_sha", sha.as_str().into()));
            values.push(("mergeable", Mergeable::Unknown.as_str().into()));
        }
        match edit.state {
            Some(PullState::Closed) if pull.state == PullState::Open => {
                values.push(("state", "closed".into()));
                values.push(("closed_at", now.0.into()));
            }
            Some(PullState::Open) if pull.state == PullState::Closed => {
                if pull.merged {
                    return Err(Error::Refused("a merged pull request cannot be reopened".to_owned()));
                }
                values.push(("state", "open".into()));
                values.push(("closed_at", Option::<i64>::None.into()));
                values.push(("mergeable", Mergeable::Unknown.as_str().into()));
            }
            _ => {}
        }
        let reopens = edit.state == Some(PullState::Open) && pull.state == PullState::Closed;
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        if reopens || (pull.state == PullState::Open && edit.base.is_some()) {
            let clash = Query::select()
                .column("number")
                .from("pulls")
                .and_where(Expr::col("repo_id").eq(pull.repo_id))
                .and_where(Expr::col("head_repo_id").eq(pull.head_repo_id))
                .and_where(Expr::col("head_ref").eq(pull.head_ref.as_str()))
                .and_where(Expr::col("base_ref").eq(base_ref))
                .and_where(Expr::col("state").eq("open"))
                .and_where(Expr::col("id").ne(pull.id))
                .to_owned();
            if let Some(number) = conn.fetch_optional::<i64>(&clash).await? {
                return Err(Error::Conflict { what: format!("pull request #{number} for {}", pull.head_ref) });
            }
        }
        let update = Query::update().table("pulls").values(values).and_where(Expr::col("id").eq(pull.id)).to_owned();
        conn.execute(&update).await?;
        let now_row = conn.fetch_one::<Pull>(&select().and_where(Expr::col("id").eq(pull.id)).to_owned()).await?;
        // GitHub's actions, each change its own event.
        let mut actions = Vec::new();
        if now_row.title != pull.title || now_row.body != pull.body || now_row.base_ref != pull.base_ref {
            actions.push("edited");
        }
        match (pull.draft, now_row.draft) {
            (false, true) => actions.push("converted_to_draft"),
            (true, false) => actions.push("ready_for_review"),
            _ => {}
        }
        match (pull.state, now_row.state) {
            (PullState::Open, PullState::Closed) => actions.push("closed"),
            (PullState::Closed, PullState::Open) => actions.push("reopened"),
            _ => {}
        }
        for action in actions {
            pull_event(&mut conn, &now_row, action, actor, now).await?;
        }
        tx.commit().await?;
        Ok(now_row)
    }

    /// Records the tips a pull request now has, when they differ from those recorded: its
    /// mergeability becomes unknown until [`PlatformStore::record_mergeability`]. Returns whether
    /// anything changed.
    pub async fn move_pull_tips(
        &self,
        pull_id: i64,
        head_sha: &str,
        base_sha: &str,
        actor: &str,
        now: Timestamp,
    ) -> Result<bool> {
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        let Some(before) = pull_by_id(&mut conn, pull_id).await? else { return Ok(false) };
        if before.state != PullState::Open || (before.head_sha == head_sha && before.base_sha == base_sha) {
            return Ok(false);
        }
        let update = Query::update()
            .table("pulls")
            .values([
                ("head_sha", head_sha.into()),
                ("base_sha", base_sha.into()),
                ("mergeable", Mergeable::Unknown.as_str().into()),
                ("conflicts", "".into()),
                ("updated_at", now.0.into()),
            ])
            .and_where(Expr::col("id").eq(pull_id))
            .to_owned();
        conn.execute(&update).await?;
        if before.head_sha != head_sha {
            // New commits on the head (GitHub sends nothing when only the base moves).
            let moved = Pull { head_sha: head_sha.to_owned(), base_sha: base_sha.to_owned(), ..before };
            pull_event(&mut conn, &moved, "synchronize", actor, now).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Records what Git says about a pull request's tips, only if it still has those tips (a
    /// computation for tips since moved is dropped). Returns whether it landed.
    pub async fn record_mergeability(&self, pull_id: i64, m: &Mergeability) -> Result<bool> {
        let update = Query::update()
            .table("pulls")
            .values([
                ("mergeable", m.mergeable.as_str().into()),
                ("conflicts", m.conflicts.join("\n").into()),
                ("merge_sha", m.merge_sha.clone().into()),
            ])
            .and_where(Expr::col("id").eq(pull_id))
            .and_where(Expr::col("head_sha").eq(m.head_sha.as_str()))
            .and_where(Expr::col("base_sha").eq(m.base_sha.as_str()))
            .to_owned();
        let mut conn = self.db.acquire().await?;
        Ok(conn.conn().execute(&update).await? > 0)
    }

    /// Marks an open pull request merged (and closed) by `by` with the commit `merge_commit`;
    /// false when it was not open any more (someone else merged or closed it first).
    pub async fn mark_pull_merged(&self, pull_id: i64, by: &str, merge_commit: &str, now: Timestamp) -> Result<bool> {
        let update = Query::update()
            .table("pulls")
            .values([
                ("state", "closed".into()),
                ("merged", true.into()),
                ("merged_by", by.into()),
                ("merge_commit_sha", merge_commit.into()),
                ("merged_at", now.0.into()),
                ("closed_at", now.0.into()),
                ("updated_at", now.0.into()),
            ])
            .and_where(Expr::col("id").eq(pull_id))
            .and_where(Expr::col("state").eq("open"))
            .to_owned();
        let mut tx = self.db.begin().await?;
        let mut conn = tx.conn();
        if conn.execute(&update).await? == 0 {
            return Ok(false);
        }
        if let Some(merged) = pull_by_id(&mut conn, pull_id).await? {
            pull_event(&mut conn, &merged, "closed", by, now).await?;
        }
        tx.commit().await?;
        Ok(true)
    }
}
