//! Protected branches and pull request reviews.
//!
//! A protection is a set of rules for the branches of a repository whose names match a pattern
//! (`main`, `release/*`): what GitHub's branch protection holds. [`Protection::refuses_push`] is
//! the rule for a push; merging checks the rest (reviews, status checks) with what the caller
//! gathers. Changing a protection is audited.

use gitstratum_core::Timestamp;
use sea_query::{Expr, ExprTrait, Order, Query};

use crate::audit::{Actor, AuditEvent, append_audit};
use crate::db::{DbRow, FromDbRow};
use crate::events::{PullRef, append_pull_event};
use crate::store::{Error, PlatformStore, Repo, Result};

/// The most approving reviews a rule may require (GitHub's limit).
pub const MAX_APPROVALS: i64 = 6;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Protection {
    /// The branch names it applies to: a name, or a pattern where `*` matches within one path
    /// segment, `**` across segments and `?` one character (GitHub's fnmatch rules).
    pub pattern: String,
    /// Status checks must pass before merging (`required_status_checks` is set).
    pub require_checks: bool,
    /// The head must contain the base's tip (up to date) before merging.
    pub strict: bool,
    /// The checks, by name: a job's name or a workflow's name.
    pub checks: Vec<String>,
    /// Changes reach the branch only through pull requests (`required_pull_request_reviews` is
    /// set).
    pub require_pull_request: bool,
    /// Approving reviews needed to merge (0 to [`MAX_APPROVALS`]).
    pub approvals: i64,
    /// Only approvals of the head as it is now count.
    pub dismiss_stale_reviews: bool,
    /// Users who may push and merge without meeting the pull request rules.
    pub bypass: Vec<String>,
    /// The rules hold for the repository's administrators too.
    pub enforce_admins: bool,
    pub allow_force_pushes: bool,
    pub allow_deletions: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl FromDbRow for Protection {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        let list = |text: String| text.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect();
        Ok(Protection {
            pattern: row.get("pattern")?,
            require_checks: row.get("require_checks")?,
            strict: row.get("strict")?,
            checks: list(row.get("checks")?),
            require_pull_request: row.get("require_pr")?,
            approvals: row.get("approvals")?,
            dismiss_stale_reviews: row.get("dismiss_stale")?,
            bypass: list(row.get("bypass")?),
            enforce_admins: row.get("enforce_admins")?,
            allow_force_pushes: row.get("allow_force")?,
            allow_deletions: row.get("allow_delete")?,
            created_at: Timestamp(row.get("created_at")?),
            updated_at: Timestamp(row.get("updated_at")?),
        })
    }
}

const COLUMNS: [&str; 13] = [
    "pattern",
    "require_checks",
    "strict",
    "checks",
    "require_pr",
    "approvals",
    "dismiss_stale",
    "bypass",
    "enforce_admins",
    "allow_force",
    "allow_delete",
    "created_at",
    "updated_at",
];

/// The row of `p` in `table`, keyed by `key` (`repo_id` or `org_id`) = `id`.
pub(crate) fn protection_insert(
    (table, key, id): (&str, &str, i64),
    p: &Protection,
    created: Timestamp,
    now: Timestamp,
) -> sea_query::InsertStatement {
    let lines = |list: &[String]| list.join("\n");
    Query::insert()
        .into_table(sea_query::Alias::new(table))
        .columns([key].into_iter().chain(COLUMNS).map(sea_query::Alias::new))
        .values_panic([
            id.into(),
            p.pattern.as_str().into(),
            p.require_checks.into(),
            p.strict.into(),
            lines(&p.checks).into(),
            p.require_pull_request.into(),
            p.approvals.into(),
            p.dismiss_stale_reviews.into(),
            lines(&p.bypass).into(),
            p.enforce_admins.into(),
            p.allow_force_pushes.into(),
            p.allow_deletions.into(),
            created.0.into(),
            now.0.into(),
        ])
        .to_owned()
}

/// The default protection of organization `org_id`, read in a transaction that creates one of its
/// repositories, and given to the repository's `branch` as its protection.
pub(crate) async fn apply_org_default(
    conn: &mut crate::db::Conn<'_>,
    org_id: i64,
    repo_id: i64,
    branch: &str,
    now: Timestamp,
) -> Result<()> {
    let q = Query::select()
        .columns(COLUMNS)
        .from("org_default_protections")
        .and_where(Expr::col("org_id").eq(org_id))
        .to_owned();
    if let Some(default) = conn.fetch_optional::<Protection>(&q).await? {
        let p = Protection { pattern: branch.to_owned(), ..default };
        conn.execute(&protection_insert(("branch_protections", "repo_id", repo_id), &p, now, now)).await?;
    }
    Ok(())
}

/// What a push does to a branch, for [`Protection::refuses_push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushKind {
    Create,
    FastForward,
    /// The new tip does not contain the old one.
    Force,
    Delete,
}

impl Protection {
    /// Whether `pattern` names `branch` (GitHub's fnmatch: `*` stays within a `/` segment, `**`
    /// crosses them, `?` is one character other than `/`).
    pub fn matches(&self, branch: &str) -> bool {
        glob(self.pattern.as_bytes(), branch.as_bytes())
    }

    /// Whether a repository administrator skips every rule but force pushes and deletions (as
    /// on GitHub, unless the rules are enforced for administrators too).
    pub fn admin_bypass(&self, admin: bool) -> bool {
        admin && !self.enforce_admins
    }

    /// Whether `login` skips the pull request rules (reviews included): an administrator as
    /// [`Protection::admin_bypass`] says, or a user the rule names.
    pub fn pull_request_bypass(&self, login: &str, admin: bool) -> bool {
        self.admin_bypass(admin) || self.bypass.iter().any(|b| b.eq_ignore_ascii_case(login))
    }

    /// Why a push of `kind` by `login` to a branch this protects is refused, in words git
    /// prints (`None`: allowed). The status checks of a direct push are the caller's to read
    /// (`checks_passed`, asked only when they matter).
    pub fn refuses_push(
        &self,
        kind: PushKind,
        login: &str,
        admin: bool,
        checks_passed: impl FnOnce() -> bool,
    ) -> Option<String> {
        let rule = |why: &str| Some(format!("protected branch ({}): {why}", self.pattern));
        match kind {
            PushKind::Delete if !self.allow_deletions => return rule("cannot be deleted"),
            PushKind::Force if !self.allow_force_pushes => return rule("cannot be force-pushed"),
            PushKind::Delete => return None,
            _ => {}
        }
        if self.require_pull_request && !self.pull_request_bypass(login, admin) {
            return rule("changes must be made through a pull request");
        }
        if self.require_checks && !self.checks.is_empty() && !self.admin_bypass(admin) && !checks_passed() {
            return rule(&format!("required status checks must pass first ({})", self.checks.join(", ")));
        }
        None
    }
}

/// fnmatch with FNM_PATHNAME, plus `**`.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) if rest.first() == Some(&b'*') => {
            let rest = &rest[1..];
            (0..=text.len()).any(|i| glob(rest, &text[i..]))
        }
        Some((b'*', rest)) => {
            let segment = text.iter().position(|b| *b == b'/').unwrap_or(text.len());
            (0..=segment).any(|i| glob(rest, &text[i..]))
        }
        Some((b'?', rest)) => text.first().is_some_and(|c| *c != b'/') && glob(rest, &text[1..]),
        Some((c, rest)) => text.first() == Some(c) && glob(rest, &text[1..]),
    }
}

/// A review's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewState {
    Approved,
    ChangesRequested,
    Commented,
}

impl ReviewState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewState::Approved => "APPROVED",
            ReviewState::ChangesRequested => "CHANGES_REQUESTED",
            ReviewState::Commented => "COMMENTED",
        }
    }

    pub fn parse(text: &str) -> Option<ReviewState> {
        match text {
            "APPROVED" => Some(ReviewState::Approved),
            "CHANGES_REQUESTED" => Some(ReviewState::ChangesRequested),
            "COMMENTED" => Some(ReviewState::Commented),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Review {
    pub id: i64,
    pub pull_id: i64,
    pub reviewer_id: Option<i64>,
    pub reviewer: String,
    pub state: ReviewState,
    pub body: String,
    /// The head it was made on.
    pub commit_sha: String,
    pub created_at: Timestamp,
}

impl FromDbRow for Review {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        let state: String = row.get("state")?;
        Ok(Review {
            id: row.get("id")?,
            pull_id: row.get("pull_id")?,
            reviewer_id: row.get("reviewer_id")?,
            reviewer: row.get("reviewer")?,
            state: ReviewState::parse(&state).unwrap_or(ReviewState::Commented),
            body: row.get("body")?,
            commit_sha: row.get("commit_sha")?,
            created_at: Timestamp(row.get("created_at")?),
        })
    }
}

/// Checks a pattern as the API takes it: a branch name or a glob of one.
pub fn validate_pattern(pattern: &str) -> std::result::Result<(), String> {
    let bad_char = |c: char| c.is_control() || matches!(c, ' ' | '~' | '^' | ':' | '\\' | '[');
    let fine = !pattern.is_empty()
        && pattern.len() <= 255
        && !pattern.chars().any(bad_char)
        && !pattern.contains("..")
        && !pattern.contains("//")
        && !pattern.starts_with('/')
        && !pattern.ends_with('/')
        && !pattern.ends_with(".lock");
    if !fine {
        return Err(format!("{pattern:?} is not a branch name or pattern"));
    }
    Ok(())
}

impl PlatformStore {
    /// Creates or replaces the protection of `pattern` (audited).
    pub async fn put_protection(
        &self,
        repo: &Repo,
        p: &Protection,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<Protection> {
        validate_pattern(&p.pattern).map_err(Error::Refused)?;
        if !(0..=MAX_APPROVALS).contains(&p.approvals) {
            return Err(Error::Refused(format!("required approving reviews are 0 to {MAX_APPROVALS}")));
        }
        let created = self.get_protection(repo.id, &p.pattern).await?.map_or(now, |old| old.created_at);
        let mut tx = self.db.begin().await?;
        let delete = Query::delete()
            .from_table("branch_protections")
            .and_where(Expr::col("repo_id").eq(repo.id))
            .and_where(Expr::col("pattern").eq(p.pattern.as_str()))
            .to_owned();
        tx.conn().execute(&delete).await?;
        tx.conn().execute(&protection_insert(("branch_protections", "repo_id", repo.id), p, created, now)).await?;
        let event = AuditEvent::new("branch_protection.update", format!("repo:{}/{}", repo.owner, repo.name))
            .org(self.owner_org(repo).await?)
            .details(format!(r#"{{"pattern":{:?}}}"#, p.pattern));
        append_audit(&mut tx.conn(), actor, &event, now).await?;
        tx.commit().await?;
        Ok(self.get_protection(repo.id, &p.pattern).await?.unwrap_or_else(|| p.clone()))
    }

    /// Sets an organization's default protection: what each repository created in it from now on
    /// gets on its default branch (repositories it has already keep theirs). Audited.
    pub async fn put_org_default_protection(
        &self,
        org: &crate::Account,
        p: &Protection,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<Protection> {
        if !(0..=MAX_APPROVALS).contains(&p.approvals) {
            return Err(Error::Refused(format!("required approving reviews are 0 to {MAX_APPROVALS}")));
        }
        let p = Protection { pattern: String::new(), ..p.clone() };
        let created = self.org_default_protection(org.id).await?.map_or(now, |old| old.created_at);
        let mut tx = self.db.begin().await?;
        let delete =
            Query::delete().from_table("org_default_protections").and_where(Expr::col("org_id").eq(org.id)).to_owned();
        tx.conn().execute(&delete).await?;
        tx.conn().execute(&protection_insert(("org_default_protections", "org_id", org.id), &p, created, now)).await?;
        let event = AuditEvent::new("org.default_protection.update", format!("org:{}", org.name)).org(Some(org.id));
        append_audit(&mut tx.conn(), actor, &event, now).await?;
        tx.commit().await?;
        Ok(Protection { created_at: created, updated_at: now, ..p })
    }

    /// An organization's default protection, if it has one.
    pub async fn org_default_protection(&self, org_id: i64) -> Result<Option<Protection>> {
        let q = Query::select()
            .columns(COLUMNS)
            .from("org_default_protections")
            .and_where(Expr::col("org_id").eq(org_id))
            .to_owned();
        Ok(self.db.acquire().await?.conn().fetch_optional(&q).await?)
    }

    /// Removes an organization's default protection; false when it had none. Audited.
    pub async fn delete_org_default_protection(
        &self,
        org: &crate::Account,
        actor: &Actor,
        now: Timestamp,
    ) -> Result<bool> {
        let delete =
            Query::delete().from_table("org_default_protections").and_where(Expr::col("org_id").eq(org.id)).to_owned();
        let mut tx = self.db.begin().await?;
        if tx.conn().execute(&delete).await? == 0 {
            return Ok(false);
        }
        let event = AuditEvent::new("org.default_protection.delete", format!("org:{}", org.name)).org(Some(org.id));
        append_audit(&mut tx.conn(), actor, &event, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn get_protection(&self, repo_id: i64, pattern: &str) -> Result<Option<Protection>> {
        let q = Query::select()
            .columns(COLUMNS)
            .from("branch_protections")
            .and_where(Expr::col("repo_id").eq(repo_id))
            .and_where(Expr::col("pattern").eq(pattern))
            .to_owned();
        Ok(self.db.acquire().await?.conn().fetch_optional(&q).await?)
    }

    /// Every protection of a repository, by pattern.
    pub async fn list_protections(&self, repo_id: i64) -> Result<Vec<Protection>> {
        let q = Query::select()
            .columns(COLUMNS)
            .from("branch_protections")
            .and_where(Expr::col("repo_id").eq(repo_id))
            .order_by("pattern", Order::Asc)
            .to_owned();
        Ok(self.db.acquire().await?.conn().fetch_all(&q).await?)
    }

    /// The protection that applies to `branch`: the one named exactly, else the first pattern
    /// (by name) that matches.
    pub async fn protection_for(&self, repo_id: i64, branch: &str) -> Result<Option<Protection>> {
        Ok(protection_for(&self.list_protections(repo_id).await?, branch).cloned())
    }

    /// Removes a protection (audited); false when there was none.
    pub async fn delete_protection(&self, repo: &Repo, pattern: &str, actor: &Actor, now: Timestamp) -> Result<bool> {
        let delete = Query::delete()
            .from_table("branch_protections")
            .and_where(Expr::col("repo_id").eq(repo.id))
            .and_where(Expr::col("pattern").eq(pattern))
            .to_owned();
        let mut tx = self.db.begin().await?;
        if tx.conn().execute(&delete).await? == 0 {
            return Ok(false);
        }
        let event = AuditEvent::new("branch_protection.delete", format!("repo:{}/{}", repo.owner, repo.name))
            .org(self.owner_org(repo).await?)
            .details(format!(r#"{{"pattern":{pattern:?}}}"#));
        append_audit(&mut tx.conn(), actor, &event, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records a review of a pull request's head `commit_sha`.
    #[allow(clippy::too_many_arguments)] // the pull request, who, what, on which head, when
    pub async fn add_review(
        &self,
        pull_id: i64,
        reviewer: &crate::Account,
        state: ReviewState,
        body: &str,
        commit_sha: &str,
        now: Timestamp,
    ) -> Result<Review> {
        if body.chars().count() > crate::pulls::MAX_BODY_CHARS {
            return Err(Error::Refused(format!("a review has at most {} characters", crate::pulls::MAX_BODY_CHARS)));
        }
        let insert = Query::insert()
            .into_table("pull_reviews")
            .columns(["pull_id", "reviewer_id", "reviewer", "state", "body", "commit_sha", "created_at"])
            .values_panic([
                pull_id.into(),
                reviewer.id.into(),
                reviewer.name.as_str().into(),
                state.as_str().into(),
                body.into(),
                commit_sha.into(),
                now.0.into(),
            ])
            .returning_col("id")
            .to_owned();
        let pull = Query::select()
            .columns(["repo_id", "head_sha", "base_sha"])
            .from("pulls")
            .and_where(Expr::col("id").eq(pull_id))
            .to_owned();
        let mut tx = self.db.begin().await?;
        let Some(PullTips(repo_id, head_sha, base_sha)) = tx.conn().fetch_optional::<PullTips>(&pull).await? else {
            return Err(Error::NotFound { what: format!("pull request {pull_id}") });
        };
        let id: i64 = tx.conn().fetch_one(&insert).await?;
        // A review answers its reviewer's request.
        let answered = Query::delete()
            .from_table("pull_review_requests")
            .and_where(Expr::col("pull_id").eq(pull_id))
            .and_where(Expr::col("account_id").eq(reviewer.id))
            .to_owned();
        tx.conn().execute(&answered).await?;
        let named = PullRef { pull_id, review_id: Some(id), head_sha, base_sha };
        append_pull_event(&mut tx.conn(), "pull_request_review", "submitted", repo_id, &named, &reviewer.name, now)
            .await?;
        tx.commit().await?;
        Ok(Review {
            id,
            pull_id,
            reviewer_id: Some(reviewer.id),
            reviewer: reviewer.name.clone(),
            state,
            body: body.to_owned(),
            commit_sha: commit_sha.to_owned(),
            created_at: now,
        })
    }

    /// A pull request's reviews, oldest first.
    pub async fn list_reviews(&self, pull_id: i64) -> Result<Vec<Review>> {
        let q = Query::select()
            .columns(["id", "pull_id", "reviewer_id", "reviewer", "state", "body", "commit_sha", "created_at"])
            .from("pull_reviews")
            .and_where(Expr::col("pull_id").eq(pull_id))
            .order_by("id", Order::Asc)
            .to_owned();
        Ok(self.db.acquire().await?.conn().fetch_all(&q).await?)
    }
}

/// A pull request's repository and tips.
struct PullTips(i64, String, String);

impl FromDbRow for PullTips {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok(PullTips(row.get("repo_id")?, row.get("head_sha")?, row.get("base_sha")?))
    }
}

/// [`PlatformStore::protection_for`] over a repository's protections.
pub fn protection_for<'a>(protections: &'a [Protection], branch: &str) -> Option<&'a Protection> {
    protections.iter().find(|p| p.pattern == branch).or_else(|| protections.iter().find(|p| p.matches(branch)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_github_fnmatch() {
        let p = |pattern: &str| Protection { pattern: pattern.into(), ..Protection::default() };
        assert!(p("main").matches("main"));
        assert!(!p("main").matches("main2"));
        assert!(p("release/*").matches("release/1.0"));
        assert!(!p("release/*").matches("release/1.0/hotfix"), "* stays within a segment");
        assert!(p("release/**").matches("release/1.0/hotfix"));
        assert!(p("v?").matches("v1"));
        assert!(!p("*").matches("a/b"));
        assert!(p("**").matches("a/b"));
    }

    #[test]
    fn pushes_are_refused_by_the_rule_that_applies() {
        let rules =
            Protection { pattern: "main".into(), require_pull_request: true, approvals: 1, ..Protection::default() };
        let refused = |kind, admin| rules.refuses_push(kind, "octo", admin, || true);
        assert!(refused(PushKind::Delete, true).expect("refused").contains("cannot be deleted"));
        assert!(refused(PushKind::Force, true).expect("refused").contains("cannot be force-pushed"));
        assert!(refused(PushKind::FastForward, false).expect("refused").contains("through a pull request"));
        assert_eq!(refused(PushKind::FastForward, true), None, "administrators bypass");
        let enforced = Protection { enforce_admins: true, ..rules.clone() };
        assert!(enforced.refuses_push(PushKind::FastForward, "octo", true, || true).is_some(), "not when enforced");
        let named = Protection { bypass: vec!["Octo".into()], ..enforced.clone() };
        assert_eq!(named.refuses_push(PushKind::FastForward, "octo", false, || true), None, "a named user bypasses");
        let checks = Protection { require_checks: true, checks: vec!["build".into()], ..Protection::default() };
        assert!(
            checks.refuses_push(PushKind::FastForward, "octo", false, || false).expect("refused").contains("build")
        );
        assert_eq!(checks.refuses_push(PushKind::FastForward, "octo", false, || true), None);
        let both = [p_("*"), p_("main")];
        let most_specific = protection_for(&both, "main").expect("found");
        assert_eq!(most_specific.pattern, "main");
    }

    fn p_(pattern: &str) -> Protection {
        Protection { pattern: pattern.into(), ..Protection::default() }
    }
}
