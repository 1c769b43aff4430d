//! `/api/v1/repos/{owner}/{repo}/pulls/{pull_number}/comments` (comments on lines of a pull
//! request's diff, GitHub's review comments) and `…/requested_reviewers`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use gitstratum_platform::{Comment, NewComment, PullState, Role, Scope, Side};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, Authenticated, Caller};
use crate::pulls::{PullBody, UserRef, body, find_pull, may_edit, pull_error, pulls};
use crate::repos::{authorize_repo, authorize_repo_role, require_scope};

/// The most reviewers one request names (GitHub's limit is 15 at a time).
const MAX_REVIEWERS: usize = 15;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CommentBody {
    pub id: i64,
    pub user: UserRef,
    pub body: String,
    pub path: String,
    /// `RIGHT` (the head's file) or `LEFT` (the base's).
    pub side: String,
    /// Its line in `commit_id`; `null` once a push changed that line (outdated).
    pub line: Option<i64>,
    /// The line it was made on, in `original_commit_id`.
    pub original_line: i64,
    /// The head it was last carried to.
    pub commit_id: String,
    pub original_commit_id: String,
    /// The comment this one answers (its thread).
    pub in_reply_to_id: Option<i64>,
    pub created_at: String,
    pub updated_at: String,
    pub html_url: String,
}

fn comment_body(state: &AppState, full_name: &str, number: i64, c: Comment) -> CommentBody {
    CommentBody {
        html_url: format!("{}/{full_name}/pull/{number}#discussion_r{}", state.public_url(), c.id),
        id: c.id,
        user: UserRef { login: c.author },
        body: c.body,
        path: c.path,
        side: c.side.as_str().to_owned(),
        line: c.line,
        original_line: c.original_line,
        commit_id: c.commit_sha,
        original_commit_id: c.original_commit,
        in_reply_to_id: c.in_reply_to,
        created_at: c.created_at.to_rfc3339(),
        updated_at: c.updated_at.to_rfc3339(),
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CreateComment {
    /// Markdown.
    pub body: String,
    /// The commit the line is counted in: the head (default) or a commit of its history.
    #[serde(default)]
    pub commit_id: Option<String>,
    /// The file (not needed for a reply).
    #[serde(default)]
    pub path: Option<String>,
    /// The line, from 1 (not needed for a reply).
    #[serde(default)]
    pub line: Option<i64>,
    /// `RIGHT` (default: the head's file) or `LEFT` (the base's).
    #[serde(default)]
    #[schema(pattern = "^(RIGHT|LEFT)$")]
    pub side: Option<String>,
    /// Answer this comment (in its thread, on its line).
    #[serde(default)]
    pub in_reply_to: Option<i64>,
}

#[utoipa::path(
    post,
    path = "/api/v1/repos/{owner}/{repo}/pulls/{pull_number}/comments",
    operation_id = "create_pull_comment",
    tag = "pulls",
    summary = "Comment on a line of a pull request's diff, or answer such a comment",
    description = "The comment follows its line as the head moves: lines added or removed above it move it; a push that changes the line itself outdates it (`line` becomes `null`).",
    request_body = CreateComment,
    responses((status = 201, description = "The comment", body = CommentBody), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn create(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path((owner, name, number)): Path<(String, String, i64)>,
    ApiJson(req): ApiJson<CreateComment>,
) -> Result<(StatusCode, Json<CommentBody>), ApiError> {
    require_scope(&caller, Scope::RepoWrite)?;
    // As reviews: whoever may read the repository may comment.
    let (repo, _) = authorize_repo_role(&state, Some(&caller), &owner, &name, Role::Read).await?;
    let pull = find_pull(&state, &repo, number).await?;
    if pull.state != PullState::Open {
        return Err(ApiError::validation("body", "the pull request is closed"));
    }
    let new = match req.in_reply_to {
        Some(parent_id) => {
            let parent = state.store().get_comment(pull.id, parent_id).await?.ok_or_else(|| {
                ApiError::validation("in_reply_to", format!("pull request #{number} has no comment {parent_id}"))
            })?;
            // A reply joins its thread: the thread's first comment, on its place.
            NewComment {
                body: req.body,
                path: parent.path,
                side: parent.side,
                original_commit: parent.original_commit,
                original_line: parent.original_line,
                commit_sha: parent.commit_sha,
                line: parent.line,
                in_reply_to: Some(parent.in_reply_to.unwrap_or(parent.id)),
            }
        }
        None => {
            let path =
                req.path.filter(|p| !p.is_empty()).ok_or_else(|| ApiError::validation("path", "name the file"))?;
            let line = req.line.ok_or_else(|| ApiError::validation("line", "name the line"))?;
            let text = req.side.as_deref().unwrap_or("RIGHT");
            let side = Side::parse(text)
                .ok_or_else(|| ApiError::validation("side", format!("{text:?} is not RIGHT or LEFT")))?;
            let commit = req.commit_id.unwrap_or_else(|| pull.head_sha.clone());
            let (commit_sha, now_line) =
                pulls(&state).place_comment(&pull, &commit, &path, side, line).await.map_err(|e| match e {
                    gitstratum_pulls::PullError::Refused(why) => ApiError::validation("line", why),
                    other => pull_error(other),
                })?;
            NewComment {
                body: req.body,
                path,
                side,
                original_commit: commit.to_ascii_lowercase(),
                original_line: line,
                commit_sha,
                line: now_line,
                in_reply_to: None,
            }
        }
    };
    let comment =
        state.store().add_comment(pull.id, &caller.account, &new, state.now()).await.map_err(|e| match e {
            gitstratum_platform::Error::Refused(why) => ApiError::validation("body", why),
            other => other.into(),
        })?;
    // A push that moved the head while the comment was placed has carried the others already:
    // carry this one too.
    let now = find_pull(&state, &repo, number).await?;
    let comment = if comment.line.is_some() && now.head_sha != comment.commit_sha {
        pulls(&state).follow_comments(&now, &now.head_sha).await.map_err(pull_error)?;
        state.store().get_comment(pull.id, comment.id).await?.unwrap_or(comment)
    } else {
        comment
    };
    let full = format!("{}/{}", repo.owner, repo.name);
    Ok((StatusCode::CREATED, Json(comment_body(&state, &full, number, comment))))
}

#[utoipa::path(
    get,
    path = "/api/v1/repos/{owner}/{repo}/pulls/{pull_number}/comments",
    operation_id = "list_pull_comments",
    tag = "pulls",
    security((), ("token" = [])),
    summary = "A pull request's line comments, oldest first",
    responses((status = 200, description = "The comments", body = Vec<CommentBody>), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((owner, name, number)): Path<(String, String, i64)>,
) -> Result<Json<Vec<CommentBody>>, ApiError> {
    let repo = authorize_repo(&state, caller.as_ref(), &owner, &name, Role::Read).await?;
    let pull = find_pull(&state, &repo, number).await?;
    let full = format!("{}/{}", repo.owner, repo.name);
    let comments = state.store().list_comments(pull.id).await?;
    Ok(Json(comments.into_iter().map(|c| comment_body(&state, &full, number, c)).collect()))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct Reviewers {
    /// Accounts, by name; each must be able to read the repository.
    #[serde(default)]
    pub reviewers: Vec<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RequestedReviewers {
    pub users: Vec<UserRef>,
    /// Always empty: teams are not asked here.
    pub teams: Vec<UserRef>,
}

#[utoipa::path(
    get,
    path = "/api/v1/repos/{owner}/{repo}/pulls/{pull_number}/requested_reviewers",
    operation_id = "list_requested_reviewers",
    tag = "pulls",
    security((), ("token" = [])),
    summary = "Who was asked to review a pull request and has not reviewed since",
    responses((status = 200, description = "The reviewers asked", body = RequestedReviewers), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn requested(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((owner, name, number)): Path<(String, String, i64)>,
) -> Result<Json<RequestedReviewers>, ApiError> {
    let repo = authorize_repo(&state, caller.as_ref(), &owner, &name, Role::Read).await?;
    let pull = find_pull(&state, &repo, number).await?;
    let users = state.store().review_requests(pull.id).await?.into_iter().map(|login| UserRef { login }).collect();
    Ok(Json(RequestedReviewers { users, teams: Vec::new() }))
}

/// The accounts named, each one who may read `repo`; a 422 naming the first that is not.
async fn reviewer_accounts(
    state: &AppState,
    repo: &gitstratum_platform::Repo,
    names: &[String],
) -> Result<Vec<gitstratum_platform::Account>, ApiError> {
    if names.is_empty() || names.len() > MAX_REVIEWERS {
        return Err(ApiError::validation("reviewers", format!("name 1 to {MAX_REVIEWERS} reviewers")));
    }
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let not_one = || ApiError::validation("reviewers", format!("{name} is not a collaborator of this repository"));
        let account = state.store().find_account(name).await?.filter(|a| !a.is_org).ok_or_else(not_one)?;
        let role = state.store().repo_role(account.id, repo).await?;
        if role.is_none() && repo.private {
            return Err(not_one());
        }
        out.push(account);
    }
    Ok(out)
}

#[utoipa::path(
    post,
    path = "/api/v1/repos/{owner}/{repo}/pulls/{pull_number}/requested_reviewers",
    operation_id = "request_reviewers",
    tag = "pulls",
    summary = "Ask accounts to review a pull request (its author or those who may write)",
    request_body = Reviewers,
    responses((status = 201, description = "The pull request", body = PullBody), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn request(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path((owner, name, number)): Path<(String, String, i64)>,
    ApiJson(req): ApiJson<Reviewers>,
) -> Result<(StatusCode, Json<PullBody>), ApiError> {
    require_scope(&caller, Scope::RepoWrite)?;
    let (repo, role) = authorize_repo_role(&state, Some(&caller), &owner, &name, Role::Read).await?;
    let pull = find_pull(&state, &repo, number).await?;
    if !may_edit(&caller, role, &pull) {
        return Err(ApiError::forbidden("only the author and those who may write may ask for reviews"));
    }
    let accounts = reviewer_accounts(&state, &repo, &req.reviewers).await?;
    if pull.author_id.is_some_and(|author| accounts.iter().any(|a| a.id == author)) {
        return Err(ApiError::validation("reviewers", "the author cannot review their own pull request"));
    }
    state.store().request_reviews(pull.id, &accounts, &caller.account.name, state.now()).await?;
    let now = find_pull(&state, &repo, number).await?;
    Ok((StatusCode::CREATED, Json(body(&state, &repo, now).await?)))
}

#[utoipa::path(
    delete,
    path = "/api/v1/repos/{owner}/{repo}/pulls/{pull_number}/requested_reviewers",
    operation_id = "remove_requested_reviewers",
    tag = "pulls",
    summary = "Withdraw review requests",
    request_body = Reviewers,
    responses((status = 200, description = "The pull request", body = PullBody), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn withdraw(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path((owner, name, number)): Path<(String, String, i64)>,
    ApiJson(req): ApiJson<Reviewers>,
) -> Result<Json<PullBody>, ApiError> {
    require_scope(&caller, Scope::RepoWrite)?;
    let (repo, role) = authorize_repo_role(&state, Some(&caller), &owner, &name, Role::Read).await?;
    let pull = find_pull(&state, &repo, number).await?;
    if !may_edit(&caller, role, &pull) {
        return Err(ApiError::forbidden("only the author and those who may write may ask for reviews"));
    }
    let mut ids = Vec::new();
    for name in &req.reviewers {
        if let Some(account) = state.store().find_account(name).await? {
            ids.push(account.id);
        }
    }
    state.store().withdraw_review_requests(pull.id, &ids).await?;
    let now = find_pull(&state, &repo, number).await?;
    Ok(Json(body(&state, &repo, now).await?))
}
