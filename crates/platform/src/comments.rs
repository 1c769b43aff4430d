//! Comments on lines of a pull request's diff (GitHub's review comments) and requested reviewers.
//!
//! A comment is made on a line of a file at a commit of the pull request; as the head moves,
//! `gitstratum-pulls` maps each live comment's line through the push's diff and records where it
//! is now ([`PlatformStore::move_comments`]), or that its line changed (outdated: `line` is
//! `None`, the original place kept).

use gitstratum_core::Timestamp;
use sea_query::{Expr, ExprTrait, Order, Query};

use crate::db::{DbRow, FromDbRow};
use crate::store::{Account, Error, PlatformStore, Result};

/// The longest path a comment may name.
const MAX_PATH: usize = 4096;

/// Which side of the diff a comment is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The head's version of the file (added and unchanged lines).
    Right,
    /// The base's version (removed lines).
    Left,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Right => "RIGHT",
            Side::Left => "LEFT",
        }
    }

    pub fn parse(text: &str) -> Option<Side> {
        match text {
            "RIGHT" => Some(Side::Right),
            "LEFT" => Some(Side::Left),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment {
    pub id: i64,
    pub pull_id: i64,
    pub author_id: Option<i64>,
    pub author: String,
    pub body: String,
    pub path: String,
    pub side: Side,
    /// The commit and line it was made on.
    pub original_commit: String,
    pub original_line: i64,
    /// The commit its `line` is counted in: the head it was last carried to.
    pub commit_sha: String,
    /// Its line in `commit_sha`; `None` once that line changed (outdated).
    pub line: Option<i64>,
    pub in_reply_to: Option<i64>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

const COMMENT_COLUMNS: [&str; 14] = [
    "id",
    "pull_id",
    "author_id",
    "author",
    "body",
    "path",
    "side",
    "original_commit",
    "original_line",
    "commit_sha",
    "line",
    "in_reply_to",
    "created_at",
    "updated_at",
];

impl FromDbRow for Comment {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        let side: String = row.get("side")?;
        Ok(Comment {
            id: row.get("id")?,
            pull_id: row.get("pull_id")?,
            author_id: row.get("author_id")?,
            author: row.get("author")?,
            body: row.get("body")?,
            path: row.get("path")?,
            side: Side::parse(&side).unwrap_or(Side::Right),
            original_commit: row.get("original_commit")?,
            original_line: row.get("original_line")?,
            commit_sha: row.get("commit_sha")?,
            line: row.get("line")?,
            in_reply_to: row.get("in_reply_to")?,
            created_at: Timestamp(row.get("created_at")?),
            updated_at: Timestamp(row.get("updated_at")?),
        })
    }
}

/// A comment to record: the caller has checked that `line` is a line of `path` at
/// `original_commit` on `side`, and found where it is in the current head (`commit_sha`, `line`).
#[derive(Debug, Clone)]
pub struct NewComment {
    pub body: String,
    pub path: String,
    pub side: Side,
    pub original_commit: String,
    pub original_line: i64,
    pub commit_sha: String,
    pub line: Option<i64>,
    pub in_reply_to: Option<i64>,
}

/// Where a live comment is now, after the head moved: its commit and line (`None`: outdated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommentMove {
    pub id: i64,
    pub commit_sha: String,
    pub line: Option<i64>,
}

struct Name(String);

impl FromDbRow for Name {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok(Name(row.get("name")?))
    }
}

impl PlatformStore {
    /// Records a comment on a line of a pull request's diff.
    pub async fn add_comment(
        &self,
        pull_id: i64,
        author: &Account,
        new: &NewComment,
        now: Timestamp,
    ) -> Result<Comment> {
        if new.body.trim().is_empty() {
            return Err(Error::Refused("a comment needs a body".to_owned()));
        }
        if new.body.chars().count() > crate::pulls::MAX_BODY_CHARS {
            return Err(Error::Refused(format!("a comment has at most {} characters", crate::pulls::MAX_BODY_CHARS)));
        }
        if new.path.is_empty() || new.path.len() > MAX_PATH {
            return Err(Error::Refused("a comment names a file's path".to_owned()));
        }
        let insert = Query::insert()
            .into_table("pull_comments")
            .columns(COMMENT_COLUMNS[1..].iter().copied())
            .values_panic([
                pull_id.into(),
                author.id.into(),
                author.name.as_str().into(),
                new.body.as_str().into(),
                new.path.as_str().into(),
                new.side.as_str().into(),
                new.original_commit.as_str().into(),
                new.original_line.into(),
                new.commit_sha.as_str().into(),
                new.line.into(),
                new.in_reply_to.into(),
                now.0.into(),
                now.0.into(),
            ])
            .returning_col("id")
            .to_owned();
        let id: i64 = self.db.acquire().await?.conn().fetch_one(&insert).await?;
        Ok(Comment {
            id,
            pull_id,
            author_id: Some(author.id),
            author: author.name.clone(),
            body: new.body.clone(),
            path: new.path.clone(),
            side: new.side,
            original_commit: new.original_commit.clone(),
            original_line: new.original_line,
            commit_sha: new.commit_sha.clone(),
            line: new.line,
            in_reply_to: new.in_reply_to,
            created_at: now,
            updated_at: now,
        })
    }

    /// A pull request's line comments, oldest first.
    pub async fn list_comments(&self, pull_id: i64) -> Result<Vec<Comment>> {
        let q = Query::select()
            .columns(COMMENT_COLUMNS)
            .from("pull_comments")
            .and_where(Expr::col("pull_id").eq(pull_id))
            .order_by("id", Order::Asc)
            .to_owned();
        Ok(self.db.acquire().await?.conn().fetch_all(&q).await?)
    }

    /// One comment of a pull request.
    pub async fn get_comment(&self, pull_id: i64, id: i64) -> Result<Option<Comment>> {
        let q = Query::select()
            .columns(COMMENT_COLUMNS)
            .from("pull_comments")
            .and_where(Expr::col("pull_id").eq(pull_id))
            .and_where(Expr::col("id").eq(id))
            .to_owned();
        Ok(self.db.acquire().await?.conn().fetch_optional(&q).await?)
    }

    /// The comments that still sit on a line of some commit: those a push may move.
    pub async fn live_comments(&self, pull_id: i64) -> Result<Vec<Comment>> {
        let q = Query::select()
            .columns(COMMENT_COLUMNS)
            .from("pull_comments")
            .and_where(Expr::col("pull_id").eq(pull_id))
            .and_where(Expr::col("line").is_not_null())
            .order_by("id", Order::Asc)
            .to_owned();
        Ok(self.db.acquire().await?.conn().fetch_all(&q).await?)
    }

    /// Records where comments are after the head moved, each only if it still sits where the
    /// mover read it (`from`: the commit it was counted in), so two refreshes racing move each
    /// comment once.
    pub async fn move_comments(&self, moves: &[(CommentMove, String)]) -> Result<()> {
        if moves.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.begin().await?;
        for (m, from) in moves {
            let update = Query::update()
                .table("pull_comments")
                .value("commit_sha", m.commit_sha.as_str())
                .value("line", m.line)
                .and_where(Expr::col("id").eq(m.id))
                .and_where(Expr::col("commit_sha").eq(from.as_str()))
                .to_owned();
            tx.conn().execute(&update).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Asks `reviewers` to review a pull request (again, for those asked before).
    pub async fn request_reviews(&self, pull_id: i64, reviewers: &[Account], by: &str, now: Timestamp) -> Result<()> {
        let mut tx = self.db.begin().await?;
        for reviewer in reviewers {
            let delete = Query::delete()
                .from_table("pull_review_requests")
                .and_where(Expr::col("pull_id").eq(pull_id))
                .and_where(Expr::col("account_id").eq(reviewer.id))
                .to_owned();
            tx.conn().execute(&delete).await?;
            let insert = Query::insert()
                .into_table("pull_review_requests")
                .columns(["pull_id", "account_id", "requested_by", "created_at"])
                .values_panic([pull_id.into(), reviewer.id.into(), by.into(), now.0.into()])
                .to_owned();
            tx.conn().execute(&insert).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Withdraws review requests (also how a review answers its reviewer's request).
    pub async fn withdraw_review_requests(&self, pull_id: i64, account_ids: &[i64]) -> Result<()> {
        if account_ids.is_empty() {
            return Ok(());
        }
        let delete = Query::delete()
            .from_table("pull_review_requests")
            .and_where(Expr::col("pull_id").eq(pull_id))
            .and_where(Expr::col("account_id").is_in(account_ids.iter().copied()))
            .to_owned();
        self.db.acquire().await?.conn().execute(&delete).await?;
        Ok(())
    }

    /// The accounts asked to review a pull request who have not reviewed since, by name.
    pub async fn review_requests(&self, pull_id: i64) -> Result<Vec<String>> {
        let q = Query::select()
            .column(("accounts", "name"))
            .from("pull_review_requests")
            .inner_join("accounts", Expr::col(("accounts", "id")).equals(("pull_review_requests", "account_id")))
            .and_where(Expr::col(("pull_review_requests", "pull_id")).eq(pull_id))
            .order_by(("accounts", "name_key"), Order::Asc)
            .to_owned();
        let names: Vec<Name> = self.db.acquire().await?.conn().fetch_all(&q).await?;
        Ok(names.into_iter().map(|n| n.0).collect())
    }
}
