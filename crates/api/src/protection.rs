//! Protected branches (`/api/v1/repos/{owner}/{repo}/branches/{branch}/protection`, GitHub's
//! body), pull request reviews, and the enforcement of both: the guard a push runs under, and
//! the rules a merge must meet.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use gitstratum_frontend::{RefGuard, UpdateKind};
use gitstratum_platform::{Principal, Protection, Pull, PushKind, Repo, Review, ReviewState, Role, Scope};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, Authenticated, Caller, RequestMeta};
use crate::pulls::find_pull;
use crate::repos::{authorize_repo, authorize_repo_role, require_scope};

/// Whether `caller` administers `repo` (for the administrators' bypass of protections).
pub(crate) async fn is_admin(state: &AppState, caller: &Principal, repo: &Repo) -> Result<bool, ApiError> {
    if caller.is_site_admin() {
        return Ok(true);
    }
    Ok(state.store().repo_role(caller.account.id, repo).await? == Some(Role::Admin))
}

/// The words of the `strict` rule's refusal: the head lacks the base's tip (GitHub's `behind`).
pub(crate) const BEHIND: &str = "the head must be up to date with";

/// How a required check stands on a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CheckState {
    Passed,
    Pending,
    Failed,
    /// Nothing of that name ran for the commit.
    Missing,
}

impl CheckState {
    /// A job as a check: passed once it succeeded or was skipped, failed once it ended otherwise,
    /// pending until then.
    pub(crate) fn of_job(state: gitstratum_ci::JobState, conclusion: Option<gitstratum_ci::Conclusion>) -> CheckState {
        Self::of(state == gitstratum_ci::JobState::Completed, conclusion)
    }

    /// A run as a check, by the same rule as [`CheckState::of_job`].
    pub(crate) fn of_run(state: gitstratum_ci::RunState, conclusion: Option<gitstratum_ci::Conclusion>) -> CheckState {
        Self::of(state == gitstratum_ci::RunState::Completed, conclusion)
    }

    fn of(completed: bool, conclusion: Option<gitstratum_ci::Conclusion>) -> CheckState {
        use gitstratum_ci::Conclusion;
        match (completed, conclusion) {
            (true, Some(Conclusion::Success | Conclusion::Skipped)) => CheckState::Passed,
            (true, _) => CheckState::Failed,
            (false, _) => CheckState::Pending,
        }
    }

    /// Several checks as one: failed if one failed, else pending if one is, else passed;
    /// missing when there are none.
    pub(crate) fn combined(states: impl IntoIterator<Item = CheckState>) -> CheckState {
        states.into_iter().fold(CheckState::Missing, |all, one| match (all, one) {
            (CheckState::Failed, _) | (_, CheckState::Failed) => CheckState::Failed,
            (CheckState::Pending, _) | (_, CheckState::Pending) => CheckState::Pending,
            _ => CheckState::Passed,
        })
    }
}

/// The state of each of `names` on commit `sha`: a name is a job's name or a workflow's, from
/// the newest run of each workflow for the commit (GitHub's check runs and statuses).
pub(crate) async fn check_states(
    state: &AppState,
    repo_id: i64,
    sha: &str,
    names: &[String],
) -> Result<Vec<(String, CheckState)>, ApiError> {
    let mut seen = std::collections::HashSet::new();
    let mut found: Vec<(String, CheckState)> = Vec::new();
    for run in state.ci().runs_for_commit(repo_id, sha).await? {
        if !seen.insert(run.workflow_path.clone()) {
            continue; // an older run of the same workflow
        }
        found.push((run.workflow_name.clone(), CheckState::of_run(run.state, run.conclusion)));
        for job in state.ci().jobs(run.id).await? {
            found.push((job.name.clone(), CheckState::of_job(job.state, job.conclusion)));
        }
    }
    Ok(names
        .iter()
        .map(|name| {
            let overall = CheckState::combined(found.iter().filter(|(n, _)| n == name).map(|(_, s)| *s));
            (name.clone(), overall)
        })
        .collect())
}

/// The rules of a repository's protected branches for one push, asked from the blocking pool.
struct PushGuard {
    protections: Vec<Protection>,
    login: String,
    admin: bool,
    state: AppState,
    repo_id: i64,
    runtime: tokio::runtime::Handle,
}

impl RefGuard for PushGuard {
    fn check(&self, name: &str, kind: UpdateKind, new: Option<gitstratum_git::ObjectId>) -> Option<String> {
        let branch = name.strip_prefix("refs/heads/")?;
        let protection = gitstratum_platform::protection::protection_for(&self.protections, branch)?;
        let kind = match kind {
            UpdateKind::Create => PushKind::Create,
            UpdateKind::FastForward => PushKind::FastForward,
            UpdateKind::Force => PushKind::Force,
            UpdateKind::Delete => PushKind::Delete,
        };
        let checks_passed = || {
            let Some(new) = new else { return false };
            let states =
                self.runtime.block_on(check_states(&self.state, self.repo_id, &new.to_string(), &protection.checks));
            states.is_ok_and(|s| s.iter().all(|(_, st)| *st == CheckState::Passed))
        };
        protection.refuses_push(kind, &self.login, self.admin, checks_passed)
    }
}

/// The guard for a push by `caller` to `repo`: `None` when no branch of it is protected.
pub(crate) async fn push_guard(
    state: &AppState,
    caller: &Principal,
    repo: &Repo,
) -> Result<Option<Arc<dyn RefGuard>>, ApiError> {
    let protections = state.store().list_protections(repo.id).await?;
    if protections.is_empty() {
        return Ok(None);
    }
    Ok(Some(Arc::new(PushGuard {
        protections,
        login: caller.account.name.clone(),
        admin: is_admin(state, caller, repo).await?,
        state: state.clone(),
        repo_id: repo.id,
        runtime: tokio::runtime::Handle::current(),
    })))
}

/// Why the protection of its base refuses merging `pull` at its recorded tips by `caller` now
/// (`None` caller: by someone who bypasses nothing); `None`: it may be merged.
pub(crate) async fn refuses_merge(
    state: &AppState,
    caller: Option<&Principal>,
    repo: &Repo,
    pull: &Pull,
    contains_base: impl std::future::Future<Output = Result<bool, ApiError>>,
) -> Result<Option<String>, ApiError> {
    let Some(p) = state.store().protection_for(repo.id, &pull.base_ref).await? else { return Ok(None) };
    let (login, admin) = match caller {
        Some(caller) => (caller.account.name.as_str(), is_admin(state, caller, repo).await?),
        None => ("", false),
    };
    let rule = |why: String| Ok(Some(format!("protected branch ({}): {why}", p.pattern)));
    if p.require_pull_request && !p.pull_request_bypass(login, admin) {
        // Each reviewer's latest verdict (a comment changes none), from those who may write.
        let mut verdicts: Vec<(String, Review)> = Vec::new();
        for review in state.store().list_reviews(pull.id).await? {
            if review.state == ReviewState::Commented {
                continue;
            }
            verdicts.retain(|(who, _)| !who.eq_ignore_ascii_case(&review.reviewer));
            verdicts.push((review.reviewer.clone(), review));
        }
        let mut approvals = 0;
        for (who, review) in &verdicts {
            let may_write = match state.store().find_account(who).await? {
                Some(account) => state.store().repo_role(account.id, repo).await?.is_some_and(|r| r >= Role::Write),
                None => false,
            };
            if !may_write {
                continue;
            }
            match review.state {
                ReviewState::ChangesRequested => return rule(format!("{who} requested changes")),
                ReviewState::Approved if !p.dismiss_stale_reviews || review.commit_sha == pull.head_sha => {
                    approvals += 1
                }
                _ => {}
            }
        }
        if approvals < p.approvals {
            let stale = if p.dismiss_stale_reviews { " of the latest commit" } else { "" };
            return rule(format!("{} approving review(s){stale} required, {approvals} given", p.approvals));
        }
    }
    if p.require_checks && !p.admin_bypass(admin) {
        let states = check_states(state, repo.id, &pull.head_sha, &p.checks).await?;
        let unmet: Vec<String> = states
            .iter()
            .filter(|(_, s)| *s != CheckState::Passed)
            .map(|(name, s)| {
                let how = match s {
                    CheckState::Failed => "failed",
                    CheckState::Pending => "pending",
                    _ => "expected",
                };
                format!("{name} ({how})")
            })
            .collect();
        if !unmet.is_empty() {
            return rule(format!("required status checks have not passed: {}", unmet.join(", ")));
        }
        if p.strict && !contains_base.await? {
            return rule(format!("{BEHIND} {} first", pull.base_ref));
        }
    }
    Ok(None)
}

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct StatusChecks {
    /// The head must be up to date with the base before merging.
    #[serde(default)]
    pub strict: bool,
    /// Job or workflow names that must pass.
    #[serde(default)]
    pub contexts: Vec<String>,
}

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct BypassAllowances {
    #[serde(default)]
    pub users: Vec<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ReviewRules {
    #[serde(default)]
    pub dismiss_stale_reviews: bool,
    /// 0 to 6.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 6)]
    pub required_approving_review_count: i64,
    /// Users who may skip the pull request rules.
    pub bypass_pull_request_allowances: Option<BypassAllowances>,
}

/// GitHub's body: `null` (or absent) turns a rule off.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct PutProtection {
    pub required_status_checks: Option<StatusChecks>,
    /// The rules hold for administrators too.
    pub enforce_admins: Option<bool>,
    /// Changes must come through pull requests, with these review rules.
    pub required_pull_request_reviews: Option<ReviewRules>,
    /// Who may push (not supported: must be `null`).
    pub restrictions: Option<serde_json::Value>,
    pub allow_force_pushes: Option<bool>,
    pub allow_deletions: Option<bool>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Enabled {
    pub enabled: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserLogin {
    pub login: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReviewRulesBody {
    pub dismiss_stale_reviews: bool,
    pub required_approving_review_count: i64,
    pub bypass_pull_request_allowances: BypassBody,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BypassBody {
    pub users: Vec<UserLogin>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProtectionBody {
    pub url: String,
    /// The branch name or pattern.
    pub pattern: String,
    pub required_status_checks: Option<StatusChecks>,
    pub enforce_admins: Enabled,
    pub required_pull_request_reviews: Option<ReviewRulesBody>,
    pub allow_force_pushes: Enabled,
    pub allow_deletions: Enabled,
}

fn protection_body(state: &AppState, repo: &Repo, p: Protection) -> ProtectionBody {
    let url = format!(
        "{}/api/v1/repos/{}/{}/branches/{}/protection",
        state.public_url(),
        repo.owner,
        repo.name,
        p.pattern.replace('/', "%2F")
    );
    body_at(url, p)
}

fn body_at(url: String, p: Protection) -> ProtectionBody {
    ProtectionBody {
        url,
        required_status_checks: p.require_checks.then(|| StatusChecks { strict: p.strict, contexts: p.checks.clone() }),
        enforce_admins: Enabled { enabled: p.enforce_admins },
        required_pull_request_reviews: p.require_pull_request.then(|| ReviewRulesBody {
            dismiss_stale_reviews: p.dismiss_stale_reviews,
            required_approving_review_count: p.approvals,
            bypass_pull_request_allowances: BypassBody {
                users: p.bypass.iter().map(|login| UserLogin { login: login.clone() }).collect(),
            },
        }),
        allow_force_pushes: Enabled { enabled: p.allow_force_pushes },
        allow_deletions: Enabled { enabled: p.allow_deletions },
        pattern: p.pattern,
    }
}

fn protection_missing(branch: &str) -> ApiError {
    ApiError::not_found("protection.not_found", format!("branch {branch} is not protected"))
}

#[utoipa::path(
    put,
    path = "/api/v1/repos/{owner}/{repo}/branches/{branch}/protection",
    operation_id = "put_branch_protection",
    tag = "pulls",
    summary = "Protect a branch, or the branches a pattern names (admin)",
    request_body = PutProtection,
    responses((status = 200, description = "The protection as it is now", body = ProtectionBody), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn put(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    meta: RequestMeta,
    Path((owner, name, branch)): Path<(String, String, String)>,
    ApiJson(req): ApiJson<PutProtection>,
) -> Result<Json<ProtectionBody>, ApiError> {
    require_scope(&caller, Scope::RepoAdmin)?;
    let repo = authorize_repo(&state, Some(&caller), &owner, &name, Role::Admin).await?;
    gitstratum_platform::protection::validate_pattern(&branch).map_err(|why| ApiError::validation("branch", why))?;
    let protection = protection_from(&state, branch, req).await?;
    let saved = state.store().put_protection(&repo, &protection, &meta.actor(&caller), state.now()).await?;
    Ok(Json(protection_body(&state, &repo, saved)))
}

/// The rules GitHub's body asks for, for `pattern`; a 422 naming what does not fit.
async fn protection_from(state: &AppState, pattern: String, req: PutProtection) -> Result<Protection, ApiError> {
    if req.restrictions.as_ref().is_some_and(|r| !r.is_null()) {
        return Err(ApiError::validation("restrictions", "push restrictions are not supported; use null"));
    }
    let reviews = req.required_pull_request_reviews.as_ref();
    let approvals = reviews.map_or(0, |r| r.required_approving_review_count);
    if !(0..=gitstratum_platform::protection::MAX_APPROVALS).contains(&approvals) {
        return Err(ApiError::validation("required_pull_request_reviews", "required_approving_review_count is 0 to 6"));
    }
    let mut bypass = Vec::new();
    for login in reviews.and_then(|r| r.bypass_pull_request_allowances.as_ref()).map_or(&[][..], |b| &b.users) {
        match state.store().find_account(login).await? {
            Some(account) if !account.is_org => bypass.push(account.name),
            _ => return Err(ApiError::validation("required_pull_request_reviews", format!("no user named {login:?}"))),
        }
    }
    Ok(Protection {
        pattern,
        require_checks: req.required_status_checks.is_some(),
        strict: req.required_status_checks.as_ref().is_some_and(|c| c.strict),
        checks: req.required_status_checks.map(|c| c.contexts).unwrap_or_default(),
        require_pull_request: reviews.is_some(),
        approvals,
        dismiss_stale_reviews: reviews.is_some_and(|r| r.dismiss_stale_reviews),
        bypass,
        enforce_admins: req.enforce_admins.unwrap_or(false),
        allow_force_pushes: req.allow_force_pushes.unwrap_or(false),
        allow_deletions: req.allow_deletions.unwrap_or(false),
        ..Protection::default()
    })
}

fn org_default_url(state: &AppState, org: &str) -> String {
    format!("{}/api/v1/orgs/{org}/default_branch_protection", state.public_url())
}

#[utoipa::path(
    put,
    path = "/api/v1/orgs/{org}/default_branch_protection",
    operation_id = "put_org_default_protection",
    tag = "pulls",
    summary = "Set the protection every new repository of the organization gets on its default branch (its owners)",
    description = "GitHub's branch protection body. Repositories created in the organization (or forked into it) from now on get these rules on their default branch, in the transaction that creates them; those it has keep theirs.",
    request_body = PutProtection,
    responses((status = 200, description = "The default as it is now", body = ProtectionBody), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn put_org_default(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    meta: RequestMeta,
    Path(org): Path<String>,
    ApiJson(req): ApiJson<PutProtection>,
) -> Result<Json<ProtectionBody>, ApiError> {
    let org = crate::orgs::owned_org(&state, &caller, &org).await?;
    let protection = protection_from(&state, String::new(), req).await?;
    let saved = state.store().put_org_default_protection(&org, &protection, &meta.actor(&caller), state.now()).await?;
    Ok(Json(body_at(org_default_url(&state, &org.name), saved)))
}

#[utoipa::path(
    get,
    path = "/api/v1/orgs/{org}/default_branch_protection",
    operation_id = "get_org_default_protection",
    tag = "pulls",
    summary = "The protection new repositories of the organization get (its owners)",
    responses((status = 200, description = "The default", body = ProtectionBody), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn get_org_default(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(org): Path<String>,
) -> Result<Json<ProtectionBody>, ApiError> {
    let org = crate::orgs::owned_org(&state, &caller, &org).await?;
    let p = state.store().org_default_protection(org.id).await?.ok_or_else(|| {
        ApiError::not_found("protection.not_found", format!("{} has no default branch protection", org.name))
    })?;
    Ok(Json(body_at(org_default_url(&state, &org.name), p)))
}

#[utoipa::path(
    delete,
    path = "/api/v1/orgs/{org}/default_branch_protection",
    operation_id = "delete_org_default_protection",
    tag = "pulls",
    summary = "Stop protecting new repositories of the organization (its owners)",
    responses((status = 204, description = "Removed"), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn delete_org_default(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    meta: RequestMeta,
    Path(org): Path<String>,
) -> Result<StatusCode, ApiError> {
    let org = crate::orgs::owned_org(&state, &caller, &org).await?;
    if state.store().delete_org_default_protection(&org, &meta.actor(&caller), state.now()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("protection.not_found", format!("{} has no default branch protection", org.name)))
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/repos/{owner}/{repo}/branches/{branch}/protection",
    operation_id = "get_branch_protection",
    tag = "pulls",
    summary = "Read a branch's protection (admin)",
    responses((status = 200, description = "The protection", body = ProtectionBody), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn get(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path((owner, name, branch)): Path<(String, String, String)>,
) -> Result<Json<ProtectionBody>, ApiError> {
    let repo = authorize_repo(&state, Some(&caller), &owner, &name, Role::Admin).await?;
    let p = state.store().get_protection(repo.id, &branch).await?.ok_or_else(|| protection_missing(&branch))?;
    Ok(Json(protection_body(&state, &repo, p)))
}

#[utoipa::path(
    delete,
    path = "/api/v1/repos/{owner}/{repo}/branches/{branch}/protection",
    operation_id = "delete_branch_protection",
    tag = "pulls",
    summary = "Remove a branch's protection (admin)",
    responses((status = 204, description = "Removed"), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn delete(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    meta: RequestMeta,
    Path((owner, name, branch)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    require_scope(&caller, Scope::RepoAdmin)?;
    let repo = authorize_repo(&state, Some(&caller), &owner, &name, Role::Admin).await?;
    if state.store().delete_protection(&repo, &branch, &meta.actor(&caller), state.now()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(protection_missing(&branch))
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CreateReview {
    /// `APPROVE`, `REQUEST_CHANGES` or `COMMENT` (the last two need a body).
    #[schema(pattern = "^(APPROVE|REQUEST_CHANGES|COMMENT)$")]
    pub event: String,
    #[serde(default)]
    pub body: Option<String>,
    /// The head the review is of (default: the head now); refused if the head moved since.
    pub commit_id: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReviewBody {
    pub id: i64,
    pub user: UserLogin,
    pub body: String,
    /// `APPROVED`, `CHANGES_REQUESTED` or `COMMENTED`.
    pub state: String,
    pub commit_id: String,
    pub submitted_at: String,
}

fn review_body(r: Review) -> ReviewBody {
    ReviewBody {
        id: r.id,
        user: UserLogin { login: r.reviewer },
        body: r.body,
        state: r.state.as_str().to_owned(),
        commit_id: r.commit_sha,
        submitted_at: r.created_at.to_rfc3339(),
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/repos/{owner}/{repo}/pulls/{pull_number}/reviews",
    operation_id = "create_review",
    tag = "pulls",
    summary = "Review a pull request: approve, request changes or comment",
    request_body = CreateReview,
    responses((status = 200, description = "The review", body = ReviewBody), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn create_review(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path((owner, name, number)): Path<(String, String, i64)>,
    ApiJson(req): ApiJson<CreateReview>,
) -> Result<Json<ReviewBody>, ApiError> {
    require_scope(&caller, Scope::RepoWrite)?;
    let (repo, _) = authorize_repo_role(&state, Some(&caller), &owner, &name, Role::Read).await?;
    let pull = find_pull(&state, &repo, number).await?;
    let verdict = match req.event.as_str() {
        "APPROVE" => ReviewState::Approved,
        "REQUEST_CHANGES" => ReviewState::ChangesRequested,
        "COMMENT" => ReviewState::Commented,
        other => {
            return Err(ApiError::validation("event", format!("{other:?} is not APPROVE, REQUEST_CHANGES or COMMENT")));
        }
    };
    let body = req.body.unwrap_or_default();
    if verdict != ReviewState::Approved && body.trim().is_empty() {
        return Err(ApiError::validation("body", "a review that is not an approval needs a body"));
    }
    if verdict != ReviewState::Commented && pull.author_id == Some(caller.account.id) {
        return Err(ApiError::validation("event", "you cannot approve or request changes on your own pull request"));
    }
    if pull.state != gitstratum_platform::PullState::Open {
        return Err(ApiError::validation("event", "the pull request is closed"));
    }
    if let Some(commit) = &req.commit_id
        && !commit.eq_ignore_ascii_case(&pull.head_sha)
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "pull.moved",
            format!("the head is {} now, not {commit}; review it again", pull.head_sha),
        ));
    }
    let review =
        state.store().add_review(pull.id, &caller.account, verdict, &body, &pull.head_sha, state.now()).await?;
    Ok(Json(review_body(review)))
}

#[utoipa::path(
    get,
    path = "/api/v1/repos/{owner}/{repo}/pulls/{pull_number}/reviews",
    operation_id = "list_reviews",
    tag = "pulls",
    security((), ("token" = [])),
    summary = "A pull request's reviews, oldest first",
    responses((status = 200, description = "The reviews", body = Vec<ReviewBody>), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn list_reviews(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((owner, name, number)): Path<(String, String, i64)>,
) -> Result<Json<Vec<ReviewBody>>, ApiError> {
    let repo = authorize_repo(&state, caller.as_ref(), &owner, &name, Role::Read).await?;
    let pull = find_pull(&state, &repo, number).await?;
    Ok(Json(state.store().list_reviews(pull.id).await?.into_iter().map(review_body).collect()))
}
