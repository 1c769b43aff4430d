//! `/api/v1/repos/{owner}/{repo}/pulls`: pull requests, shaped like GitHub's REST API.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use gitstratum_platform::{Mergeable, NewPull, Principal, Pull, PullEdit, PullFilter, PullState, Repo, Role, Scope};
use gitstratum_pulls::{MergeMethod, MergeRequest, PullError, Pulls};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, Authenticated, Caller};
use crate::repos::{authorize_repo, authorize_repo_role, require_scope};

/// The Git side of pull requests over this server's stores.
pub(crate) fn pulls(state: &AppState) -> Pulls {
    Pulls {
        platform: state.store().clone(),
        objects: state.git().objects().clone(),
        refs: state.git().refs().clone(),
        clock: state.clock().clone(),
    }
}

pub(crate) fn pull_error(e: PullError) -> ApiError {
    match e {
        PullError::Refused(why) => ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "pull.not_mergeable", why),
        PullError::Moved(why) => ApiError::new(StatusCode::CONFLICT, "pull.moved", why),
        PullError::Platform(e) => e.into(),
        other => ApiError::internal(other),
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserRef {
    pub login: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RepoRef {
    pub id: i64,
    pub name: String,
    pub full_name: String,
    pub private: bool,
    pub owner: UserRef,
}

/// One side of a pull request: a branch and its tip.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BranchRef {
    /// `owner:branch`.
    pub label: String,
    #[serde(rename = "ref")]
    pub ref_: String,
    pub sha: String,
    /// `null` once the repository is gone.
    pub repo: Option<RepoRef>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PullBody {
    pub id: i64,
    pub number: i64,
    /// `open` or `closed`.
    pub state: String,
    pub title: String,
    /// Markdown; `null` when empty.
    pub body: Option<String>,
    pub user: UserRef,
    pub draft: bool,
    pub head: BranchRef,
    pub base: BranchRef,
    pub merged: bool,
    /// `null` while it is being computed, as on GitHub.
    pub mergeable: Option<bool>,
    /// `clean`, `dirty` (conflicts), `blocked` (a protection rule holds it back), `behind` (the
    /// protection wants the head up to date with the base, and it is not), `draft`,
    /// `unknown`; for closed ones, `unknown`.
    pub mergeable_state: String,
    /// The paths that conflict (GitStratum's addition; GitHub has no field for it).
    pub conflicting_files: Vec<String>,
    /// When `mergeable_state` is `blocked`: the protection rule that holds it back, for someone
    /// who bypasses nothing (GitStratum's addition; read on a single pull request only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked_by: Option<String>,
    /// While open, the test merge (`refs/pull/N/merge`); once merged, the commit the merge made.
    pub merge_commit_sha: Option<String>,
    pub merged_by: Option<UserRef>,
    /// Who was asked to review and has not reviewed since.
    pub requested_reviewers: Vec<UserRef>,
    pub created_at: String,
    pub updated_at: String,
    pub closed_at: Option<String>,
    pub merged_at: Option<String>,
    pub url: String,
    pub html_url: String,
}

fn repo_ref(repo: &Repo) -> RepoRef {
    RepoRef {
        id: repo.id,
        name: repo.name.clone(),
        full_name: format!("{}/{}", repo.owner, repo.name),
        private: repo.private,
        owner: UserRef { login: repo.owner.clone() },
    }
}

impl PullBody {
    fn new(state: &AppState, repo: &Repo, head_repo: Option<&Repo>, p: Pull) -> PullBody {
        let (mergeable, mergeable_state) = match (p.state, p.mergeable) {
            (PullState::Closed, _) => (None, "unknown"),
            (_, Mergeable::Unknown) => (None, "unknown"),
            (_, Mergeable::Conflict) => (Some(false), "dirty"),
            (_, Mergeable::Clean) if p.draft => (Some(true), "draft"),
            (_, Mergeable::Clean) => (Some(true), "clean"),
        };
        let full = format!("{}/{}", repo.owner, repo.name);
        let head_owner = head_repo.map_or("unknown", |r| r.owner.as_str());
        PullBody {
            id: p.id,
            number: p.number,
            state: p.state.as_str().to_owned(),
            title: p.title,
            body: Some(p.body).filter(|b| !b.is_empty()),
            user: UserRef { login: p.author },
            draft: p.draft,
            head: BranchRef {
                label: format!("{head_owner}:{}", p.head_ref),
                ref_: p.head_ref,
                sha: p.head_sha,
                repo: head_repo.map(repo_ref),
            },
            base: BranchRef {
                label: format!("{}:{}", repo.owner, p.base_ref),
                ref_: p.base_ref,
                sha: p.base_sha,
                repo: Some(repo_ref(repo)),
            },
            merged: p.merged,
            mergeable,
            mergeable_state: mergeable_state.to_owned(),
            conflicting_files: p.conflicts,
            blocked_by: None,
            merge_commit_sha: if p.merged { p.merge_commit_sha } else { p.merge_sha },
            merged_by: p.merged_by.map(|login| UserRef { login }),
            requested_reviewers: Vec::new(),
            created_at: p.created_at.to_rfc3339(),
            updated_at: p.updated_at.to_rfc3339(),
            closed_at: p.closed_at.map(|t| t.to_rfc3339()),
            merged_at: p.merged_at.map(|t| t.to_rfc3339()),
            url: format!("{}/api/v1/repos/{full}/pulls/{}", state.public_url(), p.number),
            html_url: format!("{}/{full}/pull/{}", state.public_url(), p.number),
        }
    }
}

/// The body for a pull request of `repo` (its head repository looked up when it is another).
pub(crate) async fn body(state: &AppState, repo: &Repo, pull: Pull) -> Result<PullBody, ApiError> {
    let head_repo = match pull.head_repo_id {
        Some(id) if id == repo.id => Some(repo.clone()),
        Some(id) => state.store().get_repo_by_id(id).await?,
        None => None,
    };
    let requested = state.store().review_requests(pull.id).await?;
    let mut out = PullBody::new(state, repo, head_repo.as_ref(), pull);
    out.requested_reviewers = requested.into_iter().map(|login| UserRef { login }).collect();
    Ok(out)
}

pub(crate) async fn find_pull(state: &AppState, repo: &Repo, number: i64) -> Result<Pull, ApiError> {
    state
        .store()
        .get_pull(repo.id, number)
        .await?
        .ok_or_else(|| ApiError::not_found("pull.not_found", format!("pull request #{number} not found")))
}

/// Whether the head of `pull` contains the tip of its base (it is up to date), as recorded.
async fn contains_base(service: &Pulls, pull: &Pull) -> Result<bool, ApiError> {
    if pull.head_sha == pull.base_sha {
        return Ok(true);
    }
    service.head_in_base(pull.repo_id, &pull.base_sha, &pull.head_sha).await.map_err(pull_error)
}

/// A branch name as the API takes it (`feature`, `refs/heads/feature`), checked as Git would.
fn branch_name(field: &'static str, text: &str) -> Result<String, ApiError> {
    let name = text.strip_prefix("refs/heads/").unwrap_or(text);
    if name.is_empty() || !gitstratum_git::parse::is_valid_ref_name(&format!("refs/heads/{name}")) {
        return Err(ApiError::validation(field, format!("{text:?} is not a branch name")));
    }
    Ok(name.to_owned())
}

/// The tip of a branch of a repository, or a 422 naming the field.
async fn branch_tip(state: &AppState, repo: &Repo, branch: &str, field: &'static str) -> Result<String, ApiError> {
    let refs = state.git().refs().clone();
    let (rid, name) = (gitstratum_store::RepoId(repo.id), format!("refs/heads/{branch}"));
    let tip = tokio::task::spawn_blocking(move || refs.get(rid, &name))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    tip.map(|t| t.to_string())
        .ok_or_else(|| ApiError::validation(field, format!("{}/{} has no branch {branch}", repo.owner, repo.name)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CreatePull {
    pub title: String,
    /// `branch` of this repository, or `owner:branch`: a branch of `owner`'s repository in this
    /// repository's network of forks (this one, a fork of it, or what it was forked from).
    pub head: String,
    pub base: String,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub draft: bool,
}

#[utoipa::path(
    post,
    path = "/api/v1/repos/{owner}/{repo}/pulls",
    operation_id = "create_pull",
    tag = "pulls",
    summary = "Open a pull request",
    request_body = CreatePull,
    responses((status = 201, description = "Open a pull request", body = PullBody), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn create(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path((owner, name)): Path<(String, String)>,
    ApiJson(req): ApiJson<CreatePull>,
) -> Result<(StatusCode, Json<PullBody>), ApiError> {
    require_scope(&caller, Scope::RepoWrite)?;
    // As on GitHub, whoever may read a repository may propose changes to it.
    let repo = authorize_repo(&state, Some(&caller), &owner, &name, Role::Read).await?;
    let (head_repo, head) = match req.head.split_once(':') {
        Some((head_owner, branch)) if head_owner.eq_ignore_ascii_case(&repo.owner) => (repo.clone(), branch),
        Some((head_owner, branch)) => {
            let no_fork = || ApiError::validation("head", format!("{head_owner} has no fork of {owner}/{name}"));
            let fork = state.store().network_repo_of(repo.network_id, head_owner).await?.ok_or_else(no_fork)?;
            // A fork the caller may not read is no fork to them.
            if crate::repos::repo_decision(&state, Some(&caller), &fork, Role::Read).await?.is_err() {
                return Err(no_fork());
            }
            // A private repository's branch is copied into the base by proposing it: only those
            // who may push to it may do that, not everyone who may read it.
            if fork.private
                && !caller.is_site_admin()
                && state.store().repo_role(caller.account.id, &fork).await?.is_none_or(|r| r < Role::Write)
            {
                return Err(ApiError::validation(
                    "head",
                    format!("proposing a branch of the private {}/{} needs push access to it", fork.owner, fork.name),
                ));
            }
            (fork, branch)
        }
        None => (repo.clone(), req.head.as_str()),
    };
    let (head, base) = (branch_name("head", head)?, branch_name("base", &req.base)?);
    if head == base && head_repo.id == repo.id {
        return Err(ApiError::validation("head", "the head and the base are the same branch"));
    }
    let head_sha = branch_tip(&state, &head_repo, &head, "head").await?;
    let base_sha = branch_tip(&state, &repo, &base, "base").await?;
    let service = pulls(&state);
    if head_repo.id != repo.id {
        service.import_head(head_repo.id, repo.id, &head_sha).await.map_err(pull_error)?;
    }
    let new = NewPull {
        head_repo_id: head_repo.id,
        head_ref: head,
        head_sha,
        base_ref: base,
        base_sha,
        title: req.title,
        body: req.body.unwrap_or_default(),
        draft: req.draft,
    };
    if let Err(why) = gitstratum_platform::pulls::validate_title(&new.title) {
        return Err(ApiError::validation("title", why));
    }
    if service.head_in_base(repo.id, &new.head_sha, &new.base_sha).await.map_err(pull_error)? {
        return Err(ApiError::validation("head", format!("no commits between {} and {}", new.base_ref, new.head_ref)));
    }
    let pull = state.store().create_pull(repo.id, &caller.account, &new, state.now()).await.map_err(|e| match e {
        gitstratum_platform::Error::Conflict { what } => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "pull.already_exists", format!("{what} is already open"))
        }
        other => other.into(),
    })?;
    let pull = service.refresh(&pull).await.map_err(pull_error)?;
    tracing::info!(repo = %format!("{}/{}", repo.owner, repo.name), number = pull.number, "pull request opened");
    Ok((StatusCode::CREATED, Json(body(&state, &repo, pull).await?)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// `open` (the default), `closed` or `all`.
    #[param(pattern = "^(open|closed|all)$")]
    pub state: Option<String>,
    /// From 1 (a smaller value is taken as 1).
    pub page: Option<i64>,
    /// Per page (default 30; a value outside 1 to 100 is taken as the nearer bound).
    pub per_page: Option<i64>,
}

#[utoipa::path(
    get,
    path = "/api/v1/repos/{owner}/{repo}/pulls",
    operation_id = "list_pulls",
    tag = "pulls",
    security((), ("token" = [])),
    summary = "List pull requests, newest first",
    params(ListQuery),
    responses((status = 200, description = "List pull requests", body = Vec<PullBody>), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((owner, name)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<PullBody>>, ApiError> {
    let repo = authorize_repo(&state, caller.as_ref(), &owner, &name, Role::Read).await?;
    let filter = match q.state.as_deref().unwrap_or("open") {
        "open" => PullFilter::Open,
        "closed" => PullFilter::Closed,
        "all" => PullFilter::All,
        other => return Err(ApiError::validation("state", format!("{other:?} is not open, closed or all"))),
    };
    let per_page = q.per_page.unwrap_or(30).clamp(1, 100) as u64;
    // Pages beyond any repository's count are empty; bounded so the offset cannot overflow.
    let page = q.page.unwrap_or(1).clamp(1, 1 << 40) as u64;
    let list = state.store().list_pulls(repo.id, filter, page, per_page).await?;
    let mut out = Vec::with_capacity(list.len());
    for pull in list {
        out.push(body(&state, &repo, pull).await?);
    }
    Ok(Json(out))
}

#[utoipa::path(
    get,
    path = "/api/v1/repos/{owner}/{repo}/pulls/{pull_number}",
    operation_id = "get_pull",
    tag = "pulls",
    security((), ("token" = [])),
    summary = "Read a pull request",
    responses((status = 200, description = "Read a pull request", body = PullBody), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn get(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((owner, name, number)): Path<(String, String, i64)>,
) -> Result<Json<PullBody>, ApiError> {
    let repo = authorize_repo(&state, caller.as_ref(), &owner, &name, Role::Read).await?;
    let mut pull = find_pull(&state, &repo, number).await?;
    if pull.state == PullState::Open && pull.mergeable == Mergeable::Unknown {
        // GitHub starts the computation on read; so do we, and answer with it when it is quick.
        pull = pulls(&state).refresh(&pull).await.map_err(pull_error)?;
    }
    // A clean one its base's protection holds back is `blocked`, with the reason.
    let blocked = if pull.state == PullState::Open && pull.mergeable == Mergeable::Clean && !pull.draft {
        let service = pulls(&state);
        crate::protection::refuses_merge(&state, None, &repo, &pull, contains_base(&service, &pull)).await?
    } else {
        None
    };
    let mut answer = body(&state, &repo, pull).await?;
    if let Some(why) = blocked {
        // Only out of date with its base: GitHub's `behind`.
        let behind = why.contains(crate::protection::BEHIND);
        answer.mergeable_state = if behind { "behind" } else { "blocked" }.to_owned();
        answer.blocked_by = Some(why);
    }
    Ok(Json(answer))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct UpdatePull {
    pub title: Option<String>,
    pub body: Option<String>,
    /// `open` or `closed`.
    pub state: Option<String>,
    /// A new base branch.
    pub base: Option<String>,
    pub draft: Option<bool>,
}

/// May `caller` edit `pull`: its author, or whoever may write to the repository.
pub(crate) fn may_edit(caller: &Principal, role: Option<Role>, pull: &Pull) -> bool {
    pull.author_id == Some(caller.account.id) || role.is_some_and(|r| r >= Role::Write) || caller.is_site_admin()
}

#[utoipa::path(
    patch,
    path = "/api/v1/repos/{owner}/{repo}/pulls/{pull_number}",
    operation_id = "update_pull",
    tag = "pulls",
    summary = "Edit, close or reopen a pull request (its author, or push access)",
    request_body = UpdatePull,
    responses((status = 200, description = "Edit a pull request", body = PullBody), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn update(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path((owner, name, number)): Path<(String, String, i64)>,
    ApiJson(req): ApiJson<UpdatePull>,
) -> Result<Json<PullBody>, ApiError> {
    require_scope(&caller, Scope::RepoWrite)?;
    let (repo, role) = authorize_repo_role(&state, Some(&caller), &owner, &name, Role::Read).await?;
    let pull = find_pull(&state, &repo, number).await?;
    if !may_edit(&caller, role, &pull) {
        return Err(ApiError::forbidden("only its author or someone with push access may edit a pull request"));
    }
    let state_change = match req.state.as_deref() {
        None => None,
        Some("open") => Some(PullState::Open),
        Some("closed") => Some(PullState::Closed),
        Some(other) => return Err(ApiError::validation("state", format!("{other:?} is not open or closed"))),
    };
    let base = match req.base.as_deref() {
        None => None,
        Some(text) => {
            let branch = branch_name("base", text)?;
            if branch == pull.head_ref && pull.head_repo_id == Some(repo.id) {
                return Err(ApiError::validation("base", "the base cannot be the head branch"));
            }
            let tip = branch_tip(&state, &repo, &branch, "base").await?;
            Some((branch, tip))
        }
    };
    if let Some(title) = &req.title {
        gitstratum_platform::pulls::validate_title(title).map_err(|why| ApiError::validation("title", why))?;
    }
    let edit = PullEdit { title: req.title, body: req.body, state: state_change, base, draft: req.draft };
    let edited =
        state.store().update_pull(&pull, &edit, &caller.account.name, state.now()).await.map_err(|e| match e {
            gitstratum_platform::Error::Conflict { what } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "pull.already_exists",
                format!("{what} is already open"),
            ),
            other => other.into(),
        })?;
    let edited = pulls(&state).refresh(&edited).await.map_err(pull_error)?;
    Ok(Json(body(&state, &repo, edited).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct MergePull {
    pub commit_title: Option<String>,
    pub commit_message: Option<String>,
    /// The head the caller reviewed: refused with 409 if the head moved since.
    pub sha: Option<String>,
    /// `merge` (the default), `squash` or `rebase`.
    pub merge_method: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MergeResult {
    pub sha: String,
    pub merged: bool,
    pub message: String,
}

#[utoipa::path(
    put,
    path = "/api/v1/repos/{owner}/{repo}/pulls/{pull_number}/merge",
    operation_id = "merge_pull",
    tag = "pulls",
    summary = "Merge a pull request (push access)",
    request_body = MergePull,
    responses((status = 200, description = "Merged", body = MergeResult), (status = 405, description = "Not mergeable; the message says why", body = crate::error::ErrorDoc), (status = 409, description = "The head or base moved", body = crate::error::ErrorDoc), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn merge(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path((owner, name, number)): Path<(String, String, i64)>,
    ApiJson(req): ApiJson<MergePull>,
) -> Result<Json<MergeResult>, ApiError> {
    require_scope(&caller, Scope::RepoWrite)?;
    let repo = authorize_repo(&state, Some(&caller), &owner, &name, Role::Write).await?;
    let pull = find_pull(&state, &repo, number).await?;
    let method = match req.merge_method.as_deref() {
        None => MergeMethod::Merge,
        Some(text) => MergeMethod::parse(text)
            .ok_or_else(|| ApiError::validation("merge_method", format!("{text:?} is not merge, squash or rebase")))?,
    };
    let allowed = match method {
        MergeMethod::Merge => repo.merge.allow_merge_commit,
        MergeMethod::Squash => repo.merge.allow_squash_merge,
        MergeMethod::Rebase => repo.merge.allow_rebase_merge,
    };
    if !allowed {
        let word = req.merge_method.as_deref().unwrap_or("merge");
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "pull.method_not_allowed",
            format!("{word} merges are not allowed on this repository"),
        ));
    }
    let now = state.now();
    let request = MergeRequest {
        method,
        title: req.commit_title,
        message: req.commit_message,
        expected_head: req.sha,
        merger: gitstratum_pulls::merge::Signature {
            name: caller.account.name.clone(),
            email: format!("{}@users.noreply.gitstratum", caller.account.name),
            time: now.0 / 1000,
        },
        merger_login: caller.account.name.clone(),
    };
    // The rules of the base branch, on the tips as they are now.
    let service = pulls(&state);
    let pull = service.refresh(&pull).await.map_err(pull_error)?;
    if pull.state == PullState::Open
        && let Some(why) =
            crate::protection::refuses_merge(&state, Some(&caller), &repo, &pull, contains_base(&service, &pull))
                .await?
    {
        return Err(ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "pull.not_mergeable", why));
    }
    let sha = service.merge(&repo, &pull, &request).await.map_err(pull_error)?;
    tracing::info!(repo = %format!("{}/{}", repo.owner, repo.name), number, %sha, "pull request merged");
    // Its head branch goes too, when the repository says so, it is here, and it did not move.
    if repo.merge.delete_branch_on_merge
        && pull.head_repo_id == Some(repo.id)
        && let Ok(head) = gitstratum_git::ObjectId::from_hex(pull.head_sha.as_bytes())
        && let Err(e) = crate::branches::delete_branch(&state, &caller, &repo, &pull.head_ref, Some(head)).await
    {
        tracing::info!(branch = %pull.head_ref, error = %e.message, "the merged head branch stays");
    }
    Ok(Json(MergeResult { sha, merged: true, message: "Pull Request successfully merged".to_owned() }))
}

#[utoipa::path(
    get,
    path = "/api/v1/repos/{owner}/{repo}/pulls/{pull_number}/merge",
    operation_id = "pull_merged",
    tag = "pulls",
    security((), ("token" = [])),
    summary = "Whether a pull request has been merged (204) or not (404)",
    responses((status = 204, description = "Merged"), (status = 404, description = "Not merged", body = crate::error::ErrorDoc), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn merged(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((owner, name, number)): Path<(String, String, i64)>,
) -> Result<StatusCode, ApiError> {
    let repo = authorize_repo(&state, caller.as_ref(), &owner, &name, Role::Read).await?;
    let pull = find_pull(&state, &repo, number).await?;
    if pull.merged {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("pull.not_merged", format!("pull request #{number} is not merged")))
    }
}
