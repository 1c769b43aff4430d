//! Deleting a branch outside a push: `DELETE /api/v1/repos/{owner}/{repo}/git/refs/heads/{branch}`
//! (GitHub's endpoint), the branches page's Delete and a merged pull request's "Delete branch".
//! One rule for all: those who may write; never the default branch; a protected branch only if
//! its protection allows deletions; the deletion goes through the ref-change log as a pushed one
//! would (CI, webhooks and pull requests see it).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use gitstratum_platform::{Principal, PushKind, Repo, Role, Scope};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::Authenticated;
use crate::repos::{authorize_repo, require_scope};

/// Deletes `branch` of `repo` as `caller` (who may write to it), if it still points at
/// `expected` (when given). `Ok(false)`: it was gone already, or had moved.
pub(crate) async fn delete_branch(
    state: &AppState,
    caller: &Principal,
    repo: &Repo,
    branch: &str,
    expected: Option<gitstratum_git::ObjectId>,
) -> Result<bool, ApiError> {
    if branch == crate::repos::default_branch(state, repo) {
        return Err(ApiError::validation("branch", "the default branch cannot be deleted"));
    }
    let protections = state.store().list_protections(repo.id).await?;
    if let Some(p) = gitstratum_platform::protection::protection_for(&protections, branch) {
        let admin = crate::protection::is_admin(state, caller, repo).await?;
        if let Some(why) = p.refuses_push(PushKind::Delete, &caller.account.name, admin, || false) {
            return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "branch.protected", why));
        }
    }
    let refs = state.git().refs().clone();
    let id = gitstratum_store::RepoId(repo.id);
    let name = format!("refs/heads/{branch}");
    let actor = gitstratum_store::Actor { name: caller.account.name.clone(), time_ms: state.now().as_millis() };
    let deleted = tokio::task::spawn_blocking(move || -> gitstratum_store::Result<bool> {
        let Some(current) = refs.get(id, &name)? else { return Ok(false) };
        if expected.is_some_and(|e| e != current) {
            return Ok(false);
        }
        let update = gitstratum_store::RefUpdate { name, old: Some(current), new: None };
        Ok(refs.update(id, &[update], &actor)?.is_ok())
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    if deleted {
        tracing::info!(repo = %format!("{}/{}", repo.owner, repo.name), %branch, actor = %caller.account.name, "branch deleted");
        state.ci().ref_log_grew();
    }
    Ok(deleted)
}

#[utoipa::path(
    delete,
    path = "/api/v1/repos/{owner}/{repo}/git/refs/heads/{branch}",
    operation_id = "delete_branch",
    tag = "repos",
    summary = "Delete a branch (push access; not the default branch; a protected one only if its rules allow deletions)",
    responses((status = 204, description = "Deleted"), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn delete(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path((owner, name, branch)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    require_scope(&caller, Scope::RepoWrite)?;
    let repo = authorize_repo(&state, Some(&caller), &owner, &name, Role::Write).await?;
    if delete_branch(&state, &caller, &repo, &branch, None).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("branch.not_found", format!("no branch {branch} in {owner}/{name}")))
    }
}
