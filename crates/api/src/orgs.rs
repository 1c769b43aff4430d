//! `/api/v1/orgs`, `/api/v1/users` and `/api/v1/audit`: organizations and their members, accounts
//! created by administrators, and the audit log.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use gitstratum_platform::{Account, AuditEntry, AuditFilter, OrgRole, Principal, Scope, password};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, Authenticated, RequestMeta};
use crate::repos::{find_user, require_scope};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CreateOrg {
    pub name: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AccountBody {
    pub id: i64,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub site_admin: bool,
    pub created_at: String,
}

impl From<Account> for AccountBody {
    fn from(a: Account) -> Self {
        AccountBody {
            id: a.id,
            kind: if a.is_org { "Organization" } else { "User" },
            site_admin: a.is_admin,
            created_at: a.created_at.to_rfc3339(),
            name: a.name,
        }
    }
}

fn org_not_found(name: &str) -> ApiError {
    ApiError::not_found("org.not_found", format!("organization {name} not found"))
}

pub(crate) async fn find_org(state: &AppState, name: &str) -> Result<Account, ApiError> {
    match state.store().find_account(name).await? {
        Some(a) if a.is_org => Ok(a),
        _ => Err(org_not_found(name)),
    }
}

/// The organization, when the caller is a member of it (or a site administrator); to anyone
/// else it does not exist.
pub(crate) async fn member_org(state: &AppState, caller: &Principal, name: &str) -> Result<Account, ApiError> {
    let org = find_org(state, name).await?;
    if caller.is_site_admin() || state.store().org_role(org.id, caller.account.id).await?.is_some() {
        Ok(org)
    } else {
        Err(org_not_found(name))
    }
}

/// The organization, when the caller owns it (or is a site administrator) and the token may
/// administer.
pub(crate) async fn owned_org(state: &AppState, caller: &Principal, name: &str) -> Result<Account, ApiError> {
    let org = find_org(state, name).await?;
    if caller.is_site_admin() {
        return Ok(org);
    }
    match state.store().org_role(org.id, caller.account.id).await? {
        Some(OrgRole::Owner) => {
            require_scope(caller, Scope::RepoAdmin)?;
            Ok(org)
        }
        Some(OrgRole::Member) => Err(ApiError::forbidden(format!("only owners of {} may do this", org.name))),
        None => Err(org_not_found(name)),
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/orgs",
    operation_id = "create_org",
    tag = "orgs",
    summary = "Create an organization",
    request_body = CreateOrg,
    responses((status = 201, description = "Create an organization", body = AccountBody), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn create(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    meta: RequestMeta,
    ApiJson(body): ApiJson<CreateOrg>,
) -> Result<(StatusCode, Json<AccountBody>), ApiError> {
    require_scope(&caller, Scope::RepoAdmin)?;
    if caller.account.is_org {
        return Err(ApiError::forbidden("an organization cannot create organizations"));
    }
    let org = state.store().create_org(&body.name, &caller.account, &meta.actor(&caller), state.now()).await?;
    Ok((StatusCode::CREATED, Json(org.into())))
}

/// The caller's organizations (every organization for a site administrator).
#[utoipa::path(
    get,
    path = "/api/v1/orgs",
    operation_id = "list_orgs",
    tag = "orgs",
    summary = "Your organizations",
    responses((status = 200, description = "Your organizations", body = Vec<AccountBody>), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn list(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<Json<Vec<AccountBody>>, ApiError> {
    let member = (!caller.is_site_admin()).then_some(caller.account.id);
    Ok(Json(state.store().list_orgs(member).await?.into_iter().map(Into::into).collect()))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MemberBody {
    pub username: String,
    pub role: String,
}

#[utoipa::path(
    get,
    path = "/api/v1/orgs/{org}/members",
    tag = "orgs",
    summary = "Members of an organization",
    responses((status = 200, description = "Members of an organization", body = Vec<MemberBody>), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn members(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(name): Path<String>,
) -> Result<Json<Vec<MemberBody>>, ApiError> {
    let org = member_org(&state, &caller, &name).await?;
    let list = state.store().org_members(org.id).await?;
    Ok(Json(list.into_iter().map(|m| MemberBody { username: m.account.name, role: m.role.to_string() }).collect()))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct SetMember {
    /// `member` (the default) or `owner`.
    #[serde(default = "default_role")]
    #[schema(pattern = "^(member|owner)$")]
    pub role: String,
}

fn default_role() -> String {
    "member".into()
}

#[utoipa::path(
    put,
    path = "/api/v1/orgs/{org}/members/{username}",
    tag = "orgs",
    summary = "Add a member or change a role",
    request_body = SetMember,
    responses((status = 204, description = "Add a member or change a role"), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn set_member(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    meta: RequestMeta,
    Path((name, username)): Path<(String, String)>,
    ApiJson(body): ApiJson<SetMember>,
) -> Result<StatusCode, ApiError> {
    let org = owned_org(&state, &caller, &name).await?;
    let role: OrgRole = body.role.parse().map_err(|e: String| ApiError::validation("role", e))?;
    let user = find_user(&state, &username).await?;
    state.store().set_org_member(&org, &user, role, &meta.actor(&caller), state.now()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    delete,
    path = "/api/v1/orgs/{org}/members/{username}",
    tag = "orgs",
    summary = "Remove a member",
    responses((status = 204, description = "Remove a member"), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn remove_member(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    meta: RequestMeta,
    Path((name, username)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let org = owned_org(&state, &caller, &name).await?;
    let user = find_user(&state, &username).await?;
    if state.store().remove_org_member(&org, &user, &meta.actor(&caller), state.now()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("member.not_found", format!("{username} is not a member of {}", org.name)))
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct CreateUser {
    pub username: String,
    /// Lets the user log in (`POST /api/v1/session`); without it, only tokens work. 8 to 1024
    /// characters.
    #[schema(min_length = 8, max_length = 1024)]
    pub password: Option<String>,
    #[serde(default)]
    pub admin: bool,
}

/// Creates a user account (site administrators only).
#[utoipa::path(
    post,
    path = "/api/v1/users",
    tag = "users",
    summary = "Create an account (site admins)",
    request_body = CreateUser,
    responses((status = 201, description = "Create an account (site admins)", body = AccountBody), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn create_user(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    meta: RequestMeta,
    ApiJson(body): ApiJson<CreateUser>,
) -> Result<(StatusCode, Json<AccountBody>), ApiError> {
    if !caller.is_site_admin() {
        return Err(ApiError::forbidden("only site administrators may create accounts"));
    }
    let hash = match body.password {
        Some(password) => {
            password::validate_password(&password).map_err(|e| ApiError::validation("password", e))?;
            let hash = tokio::task::spawn_blocking(move || password::hash_password(&password))
                .await
                .map_err(ApiError::internal)?
                .map_err(ApiError::internal)?;
            Some(hash)
        }
        None => None,
    };
    let actor = meta.actor(&caller);
    let user = state.store().create_user(&body.username, body.admin, &actor, state.now()).await?;
    if let Some(hash) = hash {
        state.store().set_password_hash(&user, &hash, &actor, state.now()).await?;
    }
    Ok((StatusCode::CREATED, Json(user.into())))
}

fn site_admin_only(caller: &Principal, what: &str) -> Result<(), ApiError> {
    if caller.is_site_admin() {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!("only site administrators may {what}")))
    }
}

/// Suspends a user: every token and session it holds, its Git access and its CI jobs' tokens
/// stop working at once (site administrators; GitHub Enterprise Server's admin API).
#[utoipa::path(
    put,
    path = "/api/v1/users/{username}/suspended",
    tag = "users",
    summary = "Suspend a user (site admins)",
    responses((status = 204, description = "Suspended"), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn suspend(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    meta: RequestMeta,
    Path(username): Path<String>,
) -> Result<StatusCode, ApiError> {
    site_admin_only(&caller, "suspend accounts")?;
    let user = find_user(&state, &username).await?;
    if user.id == caller.account.id {
        return Err(ApiError::forbidden("you cannot suspend yourself"));
    }
    state.store().set_suspended(&user, true, &meta.actor(&caller), state.now()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Lifts a user's suspension (site administrators).
#[utoipa::path(
    delete,
    path = "/api/v1/users/{username}/suspended",
    tag = "users",
    summary = "Unsuspend a user (site admins)",
    responses((status = 204, description = "Unsuspended"), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn unsuspend(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    meta: RequestMeta,
    Path(username): Path<String>,
) -> Result<StatusCode, ApiError> {
    site_admin_only(&caller, "unsuspend accounts")?;
    let user = find_user(&state, &username).await?;
    state.store().set_suspended(&user, false, &meta.actor(&caller), state.now()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteUserQuery {
    /// The account (a user or an organization) the user's repositories go to; without it they
    /// are deleted.
    pub transfer_to: Option<String>,
}

/// Deletes a user (site administrators): its repositories are transferred to `transfer_to`, or
/// deleted; its tokens, keys, memberships and grants go with it. Refused when it is the last
/// owner of an organization.
#[utoipa::path(
    delete,
    path = "/api/v1/users/{username}",
    tag = "users",
    summary = "Delete a user (site admins)",
    params(DeleteUserQuery),
    responses((status = 204, description = "Deleted"), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn delete_user(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    meta: RequestMeta,
    Path(username): Path<String>,
    Query(q): Query<DeleteUserQuery>,
) -> Result<StatusCode, ApiError> {
    site_admin_only(&caller, "delete accounts")?;
    let user = find_user(&state, &username).await?;
    if user.id == caller.account.id {
        return Err(ApiError::forbidden("you cannot delete yourself"));
    }
    let heir = match &q.transfer_to {
        Some(name) => Some(
            state
                .store()
                .find_account(name)
                .await?
                .ok_or_else(|| ApiError::validation("transfer_to", format!("no account named {name:?}")))?,
        ),
        None => None,
    };
    if heir.as_ref().is_some_and(|h| h.id == user.id) {
        return Err(ApiError::validation("transfer_to", "the repositories must go to another account"));
    }
    let deleted = state.store().delete_user(&user, heir.as_ref(), &meta.actor(&caller), state.now()).await?;
    // Their rows are gone, so nothing reaches their Git data any more; remove it.
    for repo in deleted {
        let git = state.git().clone();
        tokio::task::spawn_blocking(move || git.delete_repo(gitstratum_store::RepoId(repo.id)))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Any user's tokens (site administrators).
#[utoipa::path(
    get,
    path = "/api/v1/users/{username}/tokens",
    tag = "users",
    summary = "A user's tokens (site admins)",
    responses((status = 200, description = "A user's tokens", body = Vec<crate::tokens::TokenBody>), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn user_tokens(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(username): Path<String>,
) -> Result<Json<Vec<crate::tokens::TokenBody>>, ApiError> {
    site_admin_only(&caller, "list other users' tokens")?;
    let user = find_user(&state, &username).await?;
    Ok(Json(state.store().list_tokens(user.id).await?.into_iter().map(Into::into).collect()))
}

/// Revokes any user's token (site administrators); audited.
#[utoipa::path(
    delete,
    path = "/api/v1/users/{username}/tokens/{id}",
    tag = "users",
    summary = "Revoke a user's token (site admins)",
    responses((status = 204, description = "Revoked"), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn revoke_user_token(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    meta: RequestMeta,
    Path((username, id)): Path<(String, i64)>,
) -> Result<StatusCode, ApiError> {
    site_admin_only(&caller, "revoke other users' tokens")?;
    let user = find_user(&state, &username).await?;
    if state.store().revoke_token(user.id, id, &meta.actor(&caller), state.now()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("token.not_found", format!("{username} has no token {id}")))
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only entries by this account (its name, or `system`).
    pub actor: Option<String>,
    /// Only entries of this action, such as `repo.create` or `token.revoke`.
    pub action: Option<String>,
    /// Only entries about this target, such as `alice/widgets`.
    pub target: Option<String>,
    /// Entries of one organization; its owners may read those.
    pub org: Option<String>,
    /// The `next_cursor` of the previous page.
    pub before: Option<i64>,
    /// Entries per page (default 50; a value outside 1 to 500 is taken as the nearer bound).
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditEntryBody {
    pub id: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub details: serde_json::Value,
    pub ip: Option<String>,
    pub request_id: Option<String>,
    pub created_at: String,
    pub hash: String,
    pub prev_hash: String,
}

impl From<AuditEntry> for AuditEntryBody {
    fn from(e: AuditEntry) -> Self {
        AuditEntryBody {
            id: e.id,
            details: serde_json::from_str(&e.details).unwrap_or(serde_json::Value::String(e.details)),
            actor: e.actor,
            action: e.action,
            target: e.target,
            ip: e.ip,
            request_id: e.request_id,
            created_at: e.created_at.to_rfc3339(),
            hash: e.hash,
            prev_hash: e.prev_hash,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditEntryBody>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    pub next_cursor: Option<i64>,
}

/// The audit log, newest first: everything for site administrators, an organization's entries
/// for its owners (`?org=`).
#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "audit",
    summary = "The audit log, newest first",
    params(AuditQuery),
    responses((status = 200, description = "The audit log, newest first", body = AuditPage), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn audit(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Query(q): Query<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let org_id = match &q.org {
        Some(name) => Some(owned_org(&state, &caller, name).await?.id),
        None if caller.is_site_admin() => None,
        None => {
            return Err(ApiError::forbidden(
                "only site administrators may read the whole audit log; owners of an organization may read its entries with ?org=",
            ));
        }
    };
    let limit = q.limit.unwrap_or(50).clamp(1, 500) as u64;
    let filter =
        AuditFilter { actor: q.actor, action: q.action, target: q.target, org_id, before: q.before, limit: limit + 1 };
    let mut entries = state.store().list_audit(&filter).await?;
    let more = entries.len() as u64 > limit;
    entries.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = if more { entries.last().map(|e| e.id) } else { None };
    Ok(Json(AuditPage { entries: entries.into_iter().map(Into::into).collect(), next_cursor }))
}
