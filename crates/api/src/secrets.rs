//! CI secrets and variables: `/api/v1/repos/{owner}/{repo}/secrets` and `…/variables` (the
//! repository's admins), `/api/v1/orgs/{org}/secrets` and `…/variables` (the organization's
//! owners). A secret's value goes in and never comes out: lists name secrets and their dates only.
//! Every change is in the audit log (names, never values).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use gitstratum_platform::Principal;
use gitstratum_platform::secrets::{SecretInfo, Variable, Visibility};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, Authenticated, RequestMeta};
use crate::hooks::Target;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct PutSecret {
    /// The value (at most 48 KiB). Send it over HTTPS; it is sealed at once and never shown again.
    pub value: String,
    /// Organization secrets: `all` (the default), `private` (private repositories) or `selected`.
    #[schema(pattern = "^(all|private|selected)$")]
    pub visibility: Option<String>,
    /// With `selected`: the names of the organization's repositories that see the secret.
    pub selected_repositories: Option<Vec<String>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SecretBody {
    pub name: String,
    pub created_at: String,
    pub updated_at: String,
    /// Organization secrets: `all`, `private` or `selected`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visibility: Option<String>,
    /// Organization secrets of visibility `selected`: the repositories' names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selected_repositories: Option<Vec<String>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SecretList {
    pub total_count: usize,
    pub secrets: Vec<SecretBody>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct PutVariable {
    pub value: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VariableBody {
    pub name: String,
    pub value: String,
    pub created_at: String,
    pub updated_at: String,
}

impl From<Variable> for VariableBody {
    fn from(v: Variable) -> Self {
        VariableBody {
            name: v.name,
            value: v.value,
            created_at: v.created_at.to_rfc3339(),
            updated_at: v.updated_at.to_rfc3339(),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VariableList {
    pub total_count: usize,
    pub variables: Vec<VariableBody>,
}

fn created_or_updated(created: bool) -> StatusCode {
    if created { StatusCode::CREATED } else { StatusCode::NO_CONTENT }
}

fn not_found(kind: &str, name: &str) -> ApiError {
    ApiError::not_found("not_found", format!("no {kind} {}", name.to_ascii_uppercase()))
}

/// An organization secret's visibility from the request: repository names resolved to the
/// organization's repositories.
async fn visibility(state: &AppState, target: &Target, body: &PutSecret) -> Result<Option<Visibility>, ApiError> {
    let Target::Org(org) = target else {
        if body.visibility.is_some() || body.selected_repositories.is_some() {
            return Err(ApiError::validation("visibility", "only organization secrets have a visibility"));
        }
        return Ok(None);
    };
    match body.visibility.as_deref() {
        None | Some("all") => Ok(Some(Visibility::All)),
        Some("private") => Ok(Some(Visibility::Private)),
        Some("selected") => {
            let mut ids = Vec::new();
            for name in body.selected_repositories.iter().flatten() {
                let repo = state.store().get_repo(&org.name, name).await?.ok_or_else(|| {
                    ApiError::validation("selected_repositories", format!("{} has no repository {name}", org.name))
                })?;
                ids.push(repo.id);
            }
            Ok(Some(Visibility::Selected(ids)))
        }
        Some(other) => Err(ApiError::validation("visibility", format!("{other:?} is not all, private or selected"))),
    }
}

async fn put_secret(
    state: &AppState,
    caller: &Principal,
    meta: &RequestMeta,
    target: Target,
    name: &str,
    body: PutSecret,
) -> Result<StatusCode, ApiError> {
    let visibility = visibility(state, &target, &body).await?;
    let created = state
        .store()
        .put_secret(
            target.owner(),
            name,
            &body.value,
            visibility.as_ref(),
            state.secrets_key(),
            &meta.actor(caller),
            state.now(),
        )
        .await?;
    Ok(created_or_updated(created))
}

async fn list_secrets(state: &AppState, target: Target) -> Result<Json<SecretList>, ApiError> {
    let secrets = state.store().list_secrets(target.owner()).await?;
    let mut out = Vec::with_capacity(secrets.len());
    for SecretInfo { name, created_at, updated_at, visibility } in secrets {
        let selected_repositories = match &visibility {
            Some(Visibility::Selected(ids)) => {
                let mut names = Vec::new();
                for id in ids {
                    if let Some(repo) = state.store().get_repo_by_id(*id).await? {
                        names.push(repo.name);
                    }
                }
                Some(names)
            }
            _ => None,
        };
        out.push(SecretBody {
            name,
            created_at: created_at.to_rfc3339(),
            updated_at: updated_at.to_rfc3339(),
            visibility: visibility.as_ref().map(|v| v.as_str().to_owned()),
            selected_repositories,
        });
    }
    Ok(Json(SecretList { total_count: out.len(), secrets: out }))
}

async fn delete_secret(
    state: &AppState,
    caller: &Principal,
    meta: &RequestMeta,
    target: Target,
    name: &str,
) -> Result<StatusCode, ApiError> {
    if state.store().delete_secret(target.owner(), name, &meta.actor(caller), state.now()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found("secret", name))
    }
}

async fn put_variable(
    state: &AppState,
    caller: &Principal,
    meta: &RequestMeta,
    target: Target,
    name: &str,
    body: PutVariable,
) -> Result<StatusCode, ApiError> {
    let created =
        state.store().put_variable(target.owner(), name, &body.value, &meta.actor(caller), state.now()).await?;
    Ok(created_or_updated(created))
}

async fn list_variables(state: &AppState, target: Target) -> Result<Json<VariableList>, ApiError> {
    let variables: Vec<VariableBody> =
        state.store().list_variables(target.owner()).await?.into_iter().map(Into::into).collect();
    Ok(Json(VariableList { total_count: variables.len(), variables }))
}

async fn delete_variable(
    state: &AppState,
    caller: &Principal,
    meta: &RequestMeta,
    target: Target,
    name: &str,
) -> Result<StatusCode, ApiError> {
    if state.store().delete_variable(target.owner(), name, &meta.actor(caller), state.now()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found("variable", name))
    }
}

#[utoipa::path(
    put,
    path = "/api/v1/repos/{owner}/{repo}/secrets/{name}",
    tag = "secrets",
    summary = "Create or replace a repository secret",
    request_body = PutSecret,
    responses((status = 201, description = "Created"), (status = 204, description = "Replaced"), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn put_repo_secret(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    meta: RequestMeta,
    Path((owner, repo, name)): Path<(String, String, String)>,
    ApiJson(body): ApiJson<PutSecret>,
) -> Result<StatusCode, ApiError> {
    let target = Target::repo(&state, &caller, &owner, &repo).await?;
    put_secret(&state, &caller, &meta, target, &name, body).await
}

#[utoipa::path(
    get,
    path = "/api/v1/repos/{owner}/{repo}/secrets",
    tag = "secrets",
    summary = "A repository's secrets (names and dates, never values)",
    responses((status = 200, description = "The secrets", body = SecretList), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn list_repo_secrets(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path((owner, repo)): Path<(String, String)>,
) -> Result<Json<SecretList>, ApiError> {
    list_secrets(&state, Target::repo(&state, &caller, &owner, &repo).await?).await
}

#[utoipa::path(
    delete,
    path = "/api/v1/repos/{owner}/{repo}/secrets/{name}",
    tag = "secrets",
    summary = "Delete a repository secret",
    responses((status = 204, description = "Deleted"), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn delete_repo_secret(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    meta: RequestMeta,
    Path((owner, repo, name)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let target = Target::repo(&state, &caller, &owner, &repo).await?;
    delete_secret(&state, &caller, &meta, target, &name).await
}

#[utoipa::path(
    put,
    path = "/api/v1/orgs/{org}/secrets/{name}",
    tag = "secrets",
    summary = "Create or replace an organization secret",
    request_body = PutSecret,
    responses((status = 201, description = "Created"), (status = 204, description = "Replaced"), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn put_org_secret(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    meta: RequestMeta,
    Path((org, name)): Path<(String, String)>,
    ApiJson(body): ApiJson<PutSecret>,
) -> Result<StatusCode, ApiError> {
    let target = Target::org(&state, &caller, &org).await?;
    put_secret(&state, &caller, &meta, target, &name, body).await
}

#[utoipa::path(
    get,
    path = "/api/v1/orgs/{org}/secrets",
    tag = "secrets",
    summary = "An organization's secrets (names, dates and visibility, never values)",
    responses((status = 200, description = "The secrets", body = SecretList), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn list_org_secrets(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(org): Path<String>,
) -> Result<Json<SecretList>, ApiError> {
    list_secrets(&state, Target::org(&state, &caller, &org).await?).await
}

#[utoipa::path(
    delete,
    path = "/api/v1/orgs/{org}/secrets/{name}",
    tag = "secrets",
    summary = "Delete an organization secret",
    responses((status = 204, description = "Deleted"), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn delete_org_secret(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    meta: RequestMeta,
    Path((org, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let target = Target::org(&state, &caller, &org).await?;
    delete_secret(&state, &caller, &meta, target, &name).await
}

#[utoipa::path(
    put,
    path = "/api/v1/repos/{owner}/{repo}/variables/{name}",
    tag = "secrets",
    summary = "Create or replace a repository variable (the `vars` context)",
    request_body = PutVariable,
    responses((status = 201, description = "Created"), (status = 204, description = "Replaced"), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn put_repo_variable(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    meta: RequestMeta,
    Path((owner, repo, name)): Path<(String, String, String)>,
    ApiJson(body): ApiJson<PutVariable>,
) -> Result<StatusCode, ApiError> {
    let target = Target::repo(&state, &caller, &owner, &repo).await?;
    put_variable(&state, &caller, &meta, target, &name, body).await
}

#[utoipa::path(
    get,
    path = "/api/v1/repos/{owner}/{repo}/variables",
    tag = "secrets",
    summary = "A repository's variables",
    responses((status = 200, description = "The variables", body = VariableList), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn list_repo_variables(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path((owner, repo)): Path<(String, String)>,
) -> Result<Json<VariableList>, ApiError> {
    list_variables(&state, Target::repo(&state, &caller, &owner, &repo).await?).await
}

#[utoipa::path(
    delete,
    path = "/api/v1/repos/{owner}/{repo}/variables/{name}",
    tag = "secrets",
    summary = "Delete a repository variable",
    responses((status = 204, description = "Deleted"), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn delete_repo_variable(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    meta: RequestMeta,
    Path((owner, repo, name)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let target = Target::repo(&state, &caller, &owner, &repo).await?;
    delete_variable(&state, &caller, &meta, target, &name).await
}

#[utoipa::path(
    put,
    path = "/api/v1/orgs/{org}/variables/{name}",
    tag = "secrets",
    summary = "Create or replace an organization variable (every repository of the organization sees it)",
    request_body = PutVariable,
    responses((status = 201, description = "Created"), (status = 204, description = "Replaced"), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn put_org_variable(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    meta: RequestMeta,
    Path((org, name)): Path<(String, String)>,
    ApiJson(body): ApiJson<PutVariable>,
) -> Result<StatusCode, ApiError> {
    let target = Target::org(&state, &caller, &org).await?;
    put_variable(&state, &caller, &meta, target, &name, body).await
}

#[utoipa::path(
    get,
    path = "/api/v1/orgs/{org}/variables",
    tag = "secrets",
    summary = "An organization's variables",
    responses((status = 200, description = "The variables", body = VariableList), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn list_org_variables(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(org): Path<String>,
) -> Result<Json<VariableList>, ApiError> {
    list_variables(&state, Target::org(&state, &caller, &org).await?).await
}

#[utoipa::path(
    delete,
    path = "/api/v1/orgs/{org}/variables/{name}",
    tag = "secrets",
    summary = "Delete an organization variable",
    responses((status = 204, description = "Deleted"), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn delete_org_variable(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    meta: RequestMeta,
    Path((org, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let target = Target::org(&state, &caller, &org).await?;
    delete_variable(&state, &caller, &meta, target, &name).await
}
