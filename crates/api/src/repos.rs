//! `/api/v1/repos`: create, read and delete repositories.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use gitstratum_platform::{Principal, Repo, Scope};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, Authenticated, Caller};

#[derive(Debug, Deserialize)]
pub struct CreateRepo {
    pub name: String,
    /// Defaults to the caller. Another account needs a site administrator.
    pub owner: Option<String>,
    #[serde(default)]
    pub private: bool,
}

#[derive(Debug, Serialize)]
pub struct RepoBody {
    pub id: i64,
    pub owner: String,
    pub name: String,
    pub full_name: String,
    pub private: bool,
    pub default_branch: String,
    pub clone_url: String,
    pub created_at: String,
}

impl RepoBody {
    fn new(repo: Repo, state: &AppState) -> Self {
        RepoBody {
            clone_url: format!("{}/{}/{}.git", state.public_url(), repo.owner, repo.name),
            full_name: format!("{}/{}", repo.owner, repo.name),
            id: repo.id,
            created_at: repo.created_at.to_rfc3339(),
            owner: repo.owner,
            name: repo.name,
            private: repo.private,
            default_branch: repo.default_branch,
        }
    }
}

fn require_scope(principal: &Principal, scope: Scope) -> Result<(), ApiError> {
    if principal.scopes.allows(scope) {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!("this token lacks the '{scope}' scope")))
    }
}

/// Whether the caller may see the repository at all. A repository the caller may not see is
/// reported as missing (404), never as forbidden, so private names do not leak.
fn can_read(caller: Option<&Principal>, repo: &Repo) -> bool {
    if !repo.private {
        return true;
    }
    caller.is_some_and(|p| p.is_site_admin() || (p.account.id == repo.owner_id && p.scopes.allows(Scope::RepoRead)))
}

fn repo_not_found(owner: &str, name: &str) -> ApiError {
    ApiError::not_found("repo.not_found", format!("repository {owner}/{name} not found"))
}

pub async fn create(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiJson(body): ApiJson<CreateRepo>,
) -> Result<(StatusCode, Json<RepoBody>), ApiError> {
    require_scope(&caller, Scope::RepoWrite)?;
    let owner = match body.owner.as_deref() {
        None => caller.account.clone(),
        Some(name) if name.eq_ignore_ascii_case(&caller.account.name) => caller.account.clone(),
        Some(name) => {
            if !caller.is_site_admin() {
                return Err(ApiError::forbidden(format!("you may not create repositories for {name}")));
            }
            state
                .store()
                .find_account(name)
                .await?
                .ok_or_else(|| ApiError::validation("owner", format!("no account named {name:?}")))?
        }
    };
    let repo = state.store().create_repo(&owner, &body.name, body.private, state.now()).await.map_err(|e| match e {
        gitstratum_platform::Error::Conflict { .. } => ApiError::new(
            StatusCode::CONFLICT,
            "repo.already_exists",
            format!("repository {}/{} already exists", owner.name, body.name),
        ),
        other => other.into(),
    })?;
    tracing::info!(repo = %format!("{}/{}", repo.owner, repo.name), actor = %caller.account.name, "repository created");
    Ok((StatusCode::CREATED, Json(RepoBody::new(repo, &state))))
}

pub async fn get(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((owner, name)): Path<(String, String)>,
) -> Result<Json<RepoBody>, ApiError> {
    match state.store().get_repo(&owner, &name).await? {
        Some(repo) if can_read(caller.as_ref(), &repo) => Ok(Json(RepoBody::new(repo, &state))),
        _ => Err(repo_not_found(&owner, &name)),
    }
}

pub async fn delete(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path((owner, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let repo = match state.store().get_repo(&owner, &name).await? {
        Some(repo) if can_read(Some(&caller), &repo) => repo,
        _ => return Err(repo_not_found(&owner, &name)),
    };
    if !(caller.is_site_admin() || caller.account.id == repo.owner_id) {
        return Err(ApiError::forbidden(format!("you may not delete {}/{}", repo.owner, repo.name)));
    }
    require_scope(&caller, Scope::RepoAdmin)?;
    state.store().delete_repo(repo.id).await?;
    // The platform row is gone, so nothing can reach the Git data any more; remove it.
    let git = state.git().clone();
    let repo_id = gitstratum_store::RepoId(repo.id);
    tokio::task::spawn_blocking(move || git.delete_repo(repo_id))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    tracing::info!(repo = %format!("{}/{}", repo.owner, repo.name), actor = %caller.account.name, "repository deleted");
    Ok(StatusCode::NO_CONTENT)
}
