//! `/api/v1/user/keys` (the caller's SSH public keys) and `/api/v1/orgs/{org}/teams` (teams, their
//! members and their repository grants).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use gitstratum_platform::{Scope, SshKey, Team};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, Authenticated, RequestMeta};
use crate::orgs::{member_org, owned_org};
use crate::repos::{find_user, parse_permission, require_scope};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct AddKey {
    /// At most 100 characters.
    #[schema(max_length = 100)]
    pub title: Option<String>,
    /// One `authorized_keys` line: `TYPE BASE64 [COMMENT]`.
    pub key: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyBody {
    pub id: i64,
    pub title: String,
    pub key: String,
    pub fingerprint: String,
    pub bits: i64,
    pub created_at: String,
    pub last_used_at: Option<String>,
}

impl From<SshKey> for KeyBody {
    fn from(k: SshKey) -> Self {
        KeyBody {
            id: k.id,
            key: format!("{} {}", k.key_type, k.key_blob),
            title: k.title,
            fingerprint: k.fingerprint,
            bits: k.bits,
            created_at: k.created_at.to_rfc3339(),
            last_used_at: k.last_used_at.map(|t| t.to_rfc3339()),
        }
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/user/keys",
    tag = "users",
    summary = "Your SSH keys",
    responses((status = 200, description = "Your SSH keys", body = Vec<KeyBody>), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn list_keys(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<Json<Vec<KeyBody>>, ApiError> {
    Ok(Json(state.store().list_ssh_keys(caller.account.id).await?.into_iter().map(Into::into).collect()))
}

/// Adds an SSH key. A key grants Git access as the user, so the token needs `repo:admin`.
#[utoipa::path(
    post,
    path = "/api/v1/user/keys",
    tag = "users",
    summary = "Add an SSH key",
    request_body = AddKey,
    responses((status = 201, description = "Add an SSH key", body = KeyBody), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn add_key(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    meta: RequestMeta,
    ApiJson(body): ApiJson<AddKey>,
) -> Result<(StatusCode, Json<KeyBody>), ApiError> {
    let added = add_key_for(&state, &caller, &meta, &body.key, body.title).await?;
    Ok((StatusCode::CREATED, Json(added.into())))
}

/// Adds an SSH public key to the caller's account (the API and the web UI's keys page): the
/// key must parse as OpenSSH writes it; the title defaults to its comment, then its type.
pub(crate) async fn add_key_for(
    state: &AppState,
    caller: &gitstratum_platform::Principal,
    meta: &RequestMeta,
    key: &str,
    title: Option<String>,
) -> Result<SshKey, ApiError> {
    require_scope(caller, Scope::RepoAdmin)?;
    let key = gitstratum_core::parse_ssh_public_key(key).map_err(|e| ApiError::validation("key", e.to_string()))?;
    let title = title.or_else(|| key.comment.clone()).unwrap_or_else(|| key.key_type.clone());
    if title.chars().count() > 100 {
        return Err(ApiError::validation("title", "a title has at most 100 characters"));
    }
    Ok(state.store().add_ssh_key(&caller.account, &title, &key, &meta.actor(caller), state.now()).await?)
}

#[utoipa::path(
    delete,
    path = "/api/v1/user/keys/{id}",
    tag = "users",
    summary = "Remove an SSH key",
    responses((status = 204, description = "Remove an SSH key"), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn remove_key(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    meta: RequestMeta,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    require_scope(&caller, Scope::RepoAdmin)?;
    if state.store().remove_ssh_key(&caller.account, id, &meta.actor(&caller), state.now()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("ssh_key.not_found", format!("you have no SSH key {id}")))
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CreateTeam {
    pub name: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TeamBody {
    pub id: i64,
    pub name: String,
    pub created_at: String,
}

impl From<Team> for TeamBody {
    fn from(t: Team) -> Self {
        TeamBody { id: t.id, name: t.name, created_at: t.created_at.to_rfc3339() }
    }
}

async fn team_of(state: &AppState, org_id: i64, org: &str, team: &str) -> Result<Team, ApiError> {
    state
        .store()
        .find_team(org_id, team)
        .await?
        .ok_or_else(|| ApiError::not_found("team.not_found", format!("organization {org} has no team {team}")))
}

#[utoipa::path(
    post,
    path = "/api/v1/orgs/{org}/teams",
    tag = "orgs",
    summary = "Create a team",
    request_body = CreateTeam,
    responses((status = 201, description = "Create a team", body = TeamBody), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn create_team(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    meta: RequestMeta,
    Path(org): Path<String>,
    ApiJson(body): ApiJson<CreateTeam>,
) -> Result<(StatusCode, Json<TeamBody>), ApiError> {
    let org = owned_org(&state, &caller, &org).await?;
    let team = state.store().create_team(&org, &body.name, &meta.actor(&caller), state.now()).await?;
    Ok((StatusCode::CREATED, Json(team.into())))
}

/// Teams of an organization (members of it may look).
#[utoipa::path(
    get,
    path = "/api/v1/orgs/{org}/teams",
    tag = "orgs",
    summary = "Teams of an organization",
    responses((status = 200, description = "Teams of an organization", body = Vec<TeamBody>), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn list_teams(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(name): Path<String>,
) -> Result<Json<Vec<TeamBody>>, ApiError> {
    let org = member_org(&state, &caller, &name).await?;
    Ok(Json(state.store().list_teams(org.id).await?.into_iter().map(Into::into).collect()))
}

#[utoipa::path(
    get,
    path = "/api/v1/orgs/{org}/teams/{team}/members",
    tag = "orgs",
    summary = "Members of a team",
    responses((status = 200, description = "Members of a team", body = Vec<String>), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn team_members(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path((name, team)): Path<(String, String)>,
) -> Result<Json<Vec<String>>, ApiError> {
    let org = member_org(&state, &caller, &name).await?;
    let team = team_of(&state, org.id, &name, &team).await?;
    Ok(Json(state.store().team_members(team.id).await?.into_iter().map(|a| a.name).collect()))
}

#[utoipa::path(
    put,
    path = "/api/v1/orgs/{org}/teams/{team}/members/{username}",
    tag = "orgs",
    summary = "Add a team member",
    responses((status = 204, description = "Add a team member"), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn add_team_member(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    meta: RequestMeta,
    Path((name, team, username)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let org = owned_org(&state, &caller, &name).await?;
    let team = team_of(&state, org.id, &name, &team).await?;
    let user = find_user(&state, &username).await?;
    state.store().add_team_member(&org, &team, &user, &meta.actor(&caller), state.now()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    delete,
    path = "/api/v1/orgs/{org}/teams/{team}/members/{username}",
    tag = "orgs",
    summary = "Remove a team member",
    responses((status = 204, description = "Remove a team member"), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn remove_team_member(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    meta: RequestMeta,
    Path((name, team, username)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let org = owned_org(&state, &caller, &name).await?;
    let team = team_of(&state, org.id, &name, &team).await?;
    let user = find_user(&state, &username).await?;
    if state.store().remove_team_member(&org, &team, &user, &meta.actor(&caller), state.now()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("member.not_found", format!("{username} is not in team {}", team.name)))
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct TeamGrant {
    /// `read`, `triage`, `write`, `maintain` or `admin`; `push`/`pull` as GitHub's aliases.
    #[serde(default = "default_permission")]
    #[schema(pattern = "^(read|triage|write|maintain|admin|push|pull)$")]
    pub permission: String,
}

fn default_permission() -> String {
    "read".into()
}

#[utoipa::path(
    put,
    path = "/api/v1/orgs/{org}/teams/{team}/repos/{owner}/{repo}",
    tag = "orgs",
    summary = "Grant a team a role on a repository",
    request_body = TeamGrant,
    responses((status = 204, description = "Grant a team a role on a repository"), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn set_team_repo(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    meta: RequestMeta,
    Path((name, team, owner, repo)): Path<(String, String, String, String)>,
    ApiJson(body): ApiJson<TeamGrant>,
) -> Result<StatusCode, ApiError> {
    let org = owned_org(&state, &caller, &name).await?;
    let team = team_of(&state, org.id, &name, &team).await?;
    let role = parse_permission(&body.permission)?;
    let repo = state
        .store()
        .get_repo(&owner, &repo)
        .await?
        .ok_or_else(|| ApiError::not_found("repo.not_found", format!("repository {owner}/{repo} not found")))?;
    state.store().set_team_repo(&org, &team, &repo, role, &meta.actor(&caller), state.now()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    delete,
    path = "/api/v1/orgs/{org}/teams/{team}/repos/{owner}/{repo}",
    tag = "orgs",
    summary = "Revoke a team's grant",
    responses((status = 204, description = "Revoke a team's grant"), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn remove_team_repo(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    meta: RequestMeta,
    Path((name, team, owner, repo)): Path<(String, String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let org = owned_org(&state, &caller, &name).await?;
    let team = team_of(&state, org.id, &name, &team).await?;
    let repo = state
        .store()
        .get_repo(&owner, &repo)
        .await?
        .ok_or_else(|| ApiError::not_found("repo.not_found", format!("repository {owner}/{repo} not found")))?;
    if state.store().remove_team_repo(&org, &team, &repo, &meta.actor(&caller), state.now()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("grant.not_found", format!("team {} has no grant on {owner}/{}", team.name, repo.name)))
    }
}
