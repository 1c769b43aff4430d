//! `/api/v1/repos`: create, read and delete repositories.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use gitstratum_platform::{Denial, Principal, Repo, RepoAccess, Role, Scope, decide};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, Authenticated, Caller, RequestMeta};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CreateRepo {
    pub name: String,
    /// Defaults to the caller. Another account needs a site administrator.
    pub owner: Option<String>,
    #[serde(default)]
    pub private: bool,
    /// One line saying what it is (at most 350 characters).
    #[serde(default)]
    pub description: Option<String>,
}

/// A description as the API takes it: valid, or a 422 naming the field.
fn description(text: &str) -> Result<String, ApiError> {
    gitstratum_platform::validate_description(text).map_err(|why| ApiError::validation("description", why))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RepoBody {
    pub id: i64,
    pub owner: String,
    pub name: String,
    pub full_name: String,
    pub private: bool,
    pub default_branch: String,
    /// `null` when it has none, as on GitHub.
    pub description: Option<String>,
    pub clone_url: String,
    /// The SSH clone URL (GitHub's field); `null` when the server does not serve Git over SSH.
    pub ssh_url: Option<String>,
    pub created_at: String,
    /// Whether it was made as a fork of another repository.
    pub fork: bool,
    /// Which merge methods its pull requests may use.
    pub allow_merge_commit: bool,
    pub allow_squash_merge: bool,
    pub allow_rebase_merge: bool,
    /// A merged pull request's head branch (of this repository) is deleted.
    pub delete_branch_on_merge: bool,
    /// The repository it was forked from, when it still exists and the caller may read it (in
    /// the answers about one repository; listings leave it out).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(no_recursion)]
    pub parent: Option<Box<RepoBody>>,
}

/// The branch `HEAD` names in Git storage (what a clone checks out; the first push to an empty
/// repository may have picked it), else the repository's recorded default.
pub(crate) fn default_branch(state: &AppState, repo: &Repo) -> String {
    match state.git().refs().head(gitstratum_store::RepoId(repo.id)) {
        Ok(Some(head)) => head.strip_prefix("refs/heads/").unwrap_or(&head).to_owned(),
        _ => repo.default_branch.clone(),
    }
}

impl RepoBody {
    fn new(mut repo: Repo, state: &AppState) -> Self {
        repo.default_branch = default_branch(state, &repo);
        RepoBody {
            clone_url: format!("{}/{}/{}.git", state.public_url(), repo.owner, repo.name),
            ssh_url: state.ssh_url(&repo.owner, &repo.name),
            full_name: format!("{}/{}", repo.owner, repo.name),
            id: repo.id,
            created_at: repo.created_at.to_rfc3339(),
            owner: repo.owner,
            name: repo.name,
            private: repo.private,
            default_branch: repo.default_branch,
            description: Some(repo.description).filter(|d| !d.is_empty()),
            fork: repo.network_id != repo.id,
            allow_merge_commit: repo.merge.allow_merge_commit,
            allow_squash_merge: repo.merge.allow_squash_merge,
            allow_rebase_merge: repo.merge.allow_rebase_merge,
            delete_branch_on_merge: repo.merge.delete_branch_on_merge,
            parent: None,
        }
    }

    /// [`RepoBody::new`] with its `parent`, when `caller` may read it.
    async fn with_parent(repo: Repo, state: &AppState, caller: Option<&Principal>) -> Result<Self, ApiError> {
        let parent = match repo.parent_id {
            Some(id) => state.store().get_repo_by_id(id).await?,
            None => None,
        };
        let mut body = RepoBody::new(repo, state);
        if let Some(parent) = parent
            && repo_decision(state, caller, &parent, Role::Read).await?.is_ok()
        {
            body.parent = Some(Box::new(RepoBody::new(parent, state)));
        }
        Ok(body)
    }
}

pub(crate) fn require_scope(principal: &Principal, scope: Scope) -> Result<(), ApiError> {
    if principal.scopes.allows(scope) {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!("this token lacks the '{scope}' scope")))
    }
}

fn repo_not_found(owner: &str, name: &str) -> ApiError {
    ApiError::not_found("repo.not_found", format!("repository {owner}/{name} not found"))
}

/// Asks the one policy whether `caller` may act on `repo` with the powers of `needed` (looking up
/// the caller's role), and counts the decision. The API and the Git frontend both come here.
pub(crate) async fn repo_decision(
    state: &AppState,
    caller: Option<&Principal>,
    repo: &Repo,
    needed: Role,
) -> Result<Result<(), Denial>, gitstratum_platform::Error> {
    Ok(role_and_decision(state, caller, repo, needed).await?.1)
}

/// [`repo_decision`], with the caller's role it was decided on (for asking the policy again
/// about the same repository without another lookup: [`decide`] with it).
async fn role_and_decision(
    state: &AppState,
    caller: Option<&Principal>,
    repo: &Repo,
    needed: Role,
) -> Result<(Option<Role>, Result<(), Denial>), gitstratum_platform::Error> {
    let role = match caller {
        Some(p) => state.store().repo_role(p.account.id, repo).await?,
        None => None,
    };
    let decision = decide(RepoAccess { caller, repo_id: repo.id, role, private: repo.private }, needed);
    let result = match &decision {
        Ok(()) => "allowed",
        Err(Denial::NotFound) => "not_found",
        Err(Denial::Unauthenticated) => "unauthenticated",
        Err(Denial::Forbidden(_)) => "forbidden",
    };
    metrics::counter!("gitstratum_control_auth_decisions_total", "result" => result).increment(1);
    Ok((role, decision))
}

/// Finds a repository and checks, through the one policy, that the caller may act on it with the
/// powers of `needed`. A repository the caller may not see is missing (404), never forbidden.
pub(crate) async fn authorize_repo(
    state: &AppState,
    caller: Option<&Principal>,
    owner: &str,
    name: &str,
    needed: Role,
) -> Result<Repo, ApiError> {
    Ok(authorize_repo_role(state, caller, owner, name, needed).await?.0)
}

/// [`authorize_repo`], with the caller's role on the repository (the web pages ask the policy
/// again with it: may this viewer write, administer?).
pub(crate) async fn authorize_repo_role(
    state: &AppState,
    caller: Option<&Principal>,
    owner: &str,
    name: &str,
    needed: Role,
) -> Result<(Repo, Option<Role>), ApiError> {
    let repo = state.store().get_repo(owner, name).await?.ok_or_else(|| repo_not_found(owner, name))?;
    match role_and_decision(state, caller, &repo, needed).await? {
        (role, Ok(())) => Ok((repo, role)),
        (_, Err(Denial::NotFound)) => Err(repo_not_found(owner, name)),
        (_, Err(Denial::Unauthenticated)) => Err(ApiError::unauthenticated("authentication required")),
        (_, Err(Denial::Forbidden(reason))) => Err(ApiError::forbidden(reason)),
    }
}

/// Whether `caller` may create repositories for `owner`, another account than their own: its
/// members for an organization (GitHub's default), site administrators for any.
async fn may_create_for(
    state: &AppState,
    caller: &Principal,
    owner: &gitstratum_platform::Account,
) -> Result<(), ApiError> {
    let member = owner.is_org && state.store().org_role(owner.id, caller.account.id).await?.is_some();
    if member || caller.is_site_admin() {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!("you may not create repositories for {}", owner.name)))
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/repos",
    operation_id = "create_repo",
    tag = "repos",
    summary = "Create a repository",
    request_body = CreateRepo,
    responses((status = 201, description = "Create a repository", body = RepoBody), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn create(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    meta: RequestMeta,
    ApiJson(body): ApiJson<CreateRepo>,
) -> Result<(StatusCode, Json<RepoBody>), ApiError> {
    require_scope(&caller, Scope::RepoWrite)?;
    let owner = match body.owner.as_deref() {
        None => caller.account.clone(),
        Some(name) if name.eq_ignore_ascii_case(&caller.account.name) => caller.account.clone(),
        Some(name) => {
            let owner = state
                .store()
                .find_account(name)
                .await?
                .ok_or_else(|| ApiError::validation("owner", format!("no account named {name:?}")))?;
            may_create_for(&state, &caller, &owner).await?;
            owner
        }
    };
    let actor = meta.actor(&caller);
    let described = description(body.description.as_deref().unwrap_or_default())?;
    let repo = state
        .store()
        .create_described_repo(&owner, &body.name, body.private, &described, &actor, state.now())
        .await
        .map_err(|e| match e {
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

#[utoipa::path(
    get,
    path = "/api/v1/repos/{owner}/{repo}",
    operation_id = "get_repo",
    tag = "repos",
    security((), ("token" = [])),
    summary = "Read a repository",
    responses((status = 200, description = "Read a repository", body = RepoBody), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn get(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((owner, name)): Path<(String, String)>,
) -> Result<Json<RepoBody>, ApiError> {
    let repo = authorize_repo(&state, caller.as_ref(), &owner, &name, Role::Read).await?;
    Ok(Json(RepoBody::with_parent(repo, &state, caller.as_ref()).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CreateFork {
    /// The organization to fork into (its members may); default the caller's own account.
    #[serde(default)]
    pub organization: Option<String>,
    /// The fork's name; default the repository's.
    #[serde(default)]
    pub name: Option<String>,
    /// Copy only the default branch (default: every branch and tag).
    #[serde(default)]
    pub default_branch_only: bool,
}

#[utoipa::path(
    post,
    path = "/api/v1/repos/{owner}/{repo}/forks",
    operation_id = "create_fork",
    tag = "repos",
    summary = "Fork a repository",
    description = "Makes a fork for the caller (or an organization they belong to) of a repository they may read: \
        its branches and tags, its visibility (a private repository's forks are private), and every object, \
        sharing the stored packs instead of copying them. The fork's CI starts switched off, as on GitHub \
        (`PUT …/actions/permissions` switches it on). Pull requests go between the repositories of one network of forks.",
    request_body = CreateFork,
    responses((status = 202, description = "The fork (ready at once)", body = RepoBody), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn fork(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    meta: RequestMeta,
    Path((owner, name)): Path<(String, String)>,
    ApiJson(body): ApiJson<CreateFork>,
) -> Result<(StatusCode, Json<RepoBody>), ApiError> {
    require_scope(&caller, Scope::RepoWrite)?;
    let parent = authorize_repo(&state, Some(&caller), &owner, &name, Role::Read).await?;
    let fork_owner =
        match body.organization.as_deref() {
            None => caller.account.clone(),
            Some(org) => {
                let account =
                    state.store().find_account(org).await?.filter(|a| a.is_org).ok_or_else(|| {
                        ApiError::validation("organization", format!("no organization named {org:?}"))
                    })?;
                may_create_for(&state, &caller, &account).await?;
                account
            }
        };
    let fork_name = body.name.clone().unwrap_or_else(|| parent.name.clone());
    let actor = meta.actor(&caller);
    let fork =
        state.store().create_fork(&parent, &fork_owner, &fork_name, &actor, state.now()).await.map_err(
            |e| match e {
                gitstratum_platform::Error::Conflict { .. } => ApiError::new(
                    StatusCode::CONFLICT,
                    "repo.already_exists",
                    format!("repository {}/{fork_name} already exists (name the fork with \"name\")", fork_owner.name),
                ),
                other => other.into(),
            },
        )?;
    let (objects, refs) = (state.git().objects().clone(), state.git().refs().clone());
    let (from, to) = (gitstratum_store::RepoId(parent.id), gitstratum_store::RepoId(fork.id));
    let (default_branch, who, now_ms) = (default_branch(&state, &parent), caller.account.name.clone(), state.now().0);
    let copied = tokio::task::spawn_blocking(move || -> gitstratum_store::Result<()> {
        // The refs first, then the objects: whatever a push adds to the parent in between is in
        // the objects, so every ref copied names objects the fork has. (A repack of the parent
        // keeps what was reachable for its grace period, and the pin holds pruning meanwhile.)
        let _pin = objects.pin(from);
        let head = refs.head(from)?;
        let listed = refs.list(from)?;
        objects.fork(from, to)?;
        let wanted = |name: &str| {
            if body.default_branch_only {
                name == format!("refs/heads/{default_branch}")
            } else {
                name.starts_with("refs/heads/") || name.starts_with("refs/tags/")
            }
        };
        let updates: Vec<gitstratum_store::RefUpdate> = listed
            .into_iter()
            .filter(|(name, _)| wanted(name))
            .map(|(name, id)| gitstratum_store::RefUpdate { name, old: None, new: Some(id) })
            .collect();
        if !updates.is_empty() {
            let actor = gitstratum_store::Actor { name: who, time_ms: now_ms };
            refs.update(to, &updates, &actor)?
                .map_err(|c| gitstratum_store::Error::Backend(format!("the new fork's ref {} exists", c.name)))?;
        }
        if let Some(head) = head {
            refs.set_head(to, &head)?;
        }
        Ok(())
    })
    .await
    .map_err(ApiError::internal)?;
    if let Err(e) = copied {
        // Nothing half-made stays behind: the fork's row and whatever of its Git data was written.
        let _ = state.store().delete_repo(&fork, &actor, state.now()).await;
        let git = state.git().clone();
        let _ = tokio::task::spawn_blocking(move || git.delete_repo(to)).await;
        return Err(ApiError::internal(e));
    }
    tracing::info!(parent = %format!("{}/{}", parent.owner, parent.name), fork = %format!("{}/{}", fork.owner, fork.name), "repository forked");
    Ok((StatusCode::ACCEPTED, Json(RepoBody::with_parent(fork, &state, Some(&caller)).await?)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ForksQuery {
    /// From 1 (a smaller value is taken as 1).
    pub page: Option<i64>,
    /// Per page (default 30; a value outside 1 to 100 is taken as the nearer bound).
    pub per_page: Option<i64>,
}

#[utoipa::path(
    get,
    path = "/api/v1/repos/{owner}/{repo}/forks",
    operation_id = "list_forks",
    tag = "repos",
    security((), ("token" = [])),
    summary = "List a repository's forks (those the caller may read), oldest first",
    params(ForksQuery),
    responses((status = 200, description = "Its forks", body = Vec<RepoBody>), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn forks(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((owner, name)): Path<(String, String)>,
    axum::extract::Query(q): axum::extract::Query<ForksQuery>,
) -> Result<Json<Vec<RepoBody>>, ApiError> {
    let repo = authorize_repo(&state, caller.as_ref(), &owner, &name, Role::Read).await?;
    let per_page = q.per_page.unwrap_or(30).clamp(1, 100) as usize;
    let page = q.page.unwrap_or(1).max(1) as usize;
    let mut visible = Vec::new();
    for fork in state.store().list_forks(repo.id).await? {
        if repo_decision(&state, caller.as_ref(), &fork, Role::Read).await?.is_ok() {
            visible.push(fork);
        }
    }
    Ok(Json(
        visible
            .into_iter()
            .skip((page - 1).saturating_mul(per_page))
            .take(per_page)
            .map(|r| RepoBody::new(r, &state))
            .collect(),
    ))
}

#[utoipa::path(
    delete,
    path = "/api/v1/repos/{owner}/{repo}",
    operation_id = "delete_repo",
    tag = "repos",
    summary = "Delete a repository",
    responses((status = 204, description = "Delete a repository"), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn delete(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    meta: RequestMeta,
    Path((owner, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let repo = authorize_repo(&state, Some(&caller), &owner, &name, Role::Admin).await?;
    state.store().delete_repo(&repo, &meta.actor(&caller), state.now()).await?;
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct SetCollaborator {
    /// `read`, `triage`, `write`, `maintain` or `admin`; `push`/`pull` as GitHub's aliases.
    #[serde(default = "default_permission")]
    #[schema(pattern = "^(read|triage|write|maintain|admin|push|pull)$")]
    pub permission: String,
}

fn default_permission() -> String {
    "write".into()
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CollaboratorBody {
    pub username: String,
    pub permission: String,
}

#[utoipa::path(
    get,
    path = "/api/v1/repos/{owner}/{repo}/collaborators",
    tag = "repos",
    security((), ("token" = [])),
    summary = "List collaborators (needs push access)",
    responses((status = 200, description = "List collaborators", body = Vec<CollaboratorBody>), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn collaborators(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((owner, name)): Path<(String, String)>,
) -> Result<Json<Vec<CollaboratorBody>>, ApiError> {
    // As on GitHub: listing who has access (and how much) needs push access.
    let repo = authorize_repo(&state, caller.as_ref(), &owner, &name, Role::Write).await?;
    let list = state.store().collaborators(repo.id).await?;
    Ok(Json(
        list.into_iter()
            .map(|m| CollaboratorBody { username: m.account.name, permission: m.role.to_string() })
            .collect(),
    ))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RepoTeamBody {
    /// The team's name within the repository's organization.
    pub name: String,
    pub permission: String,
}

#[utoipa::path(
    get,
    path = "/api/v1/repos/{owner}/{repo}/teams",
    tag = "repos",
    security((), ("token" = [])),
    summary = "List the teams granted access (needs push access)",
    responses((status = 200, description = "List the teams granted access", body = Vec<RepoTeamBody>), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn teams(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((owner, name)): Path<(String, String)>,
) -> Result<Json<Vec<RepoTeamBody>>, ApiError> {
    // The collaborators' rule: who has access (and how much) is for those with push access.
    let repo = authorize_repo(&state, caller.as_ref(), &owner, &name, Role::Write).await?;
    let grants = state.store().repo_teams(repo.id).await?;
    Ok(Json(grants.into_iter().map(|g| RepoTeamBody { name: g.team.name, permission: g.role.to_string() }).collect()))
}

#[utoipa::path(
    put,
    path = "/api/v1/repos/{owner}/{repo}/collaborators/{username}",
    tag = "repos",
    summary = "Grant a collaborator a role",
    request_body = SetCollaborator,
    responses((status = 204, description = "Grant a collaborator a role"), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn set_collaborator(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    meta: RequestMeta,
    Path((owner, name, username)): Path<(String, String, String)>,
    ApiJson(body): ApiJson<SetCollaborator>,
) -> Result<StatusCode, ApiError> {
    let repo = authorize_repo(&state, Some(&caller), &owner, &name, Role::Admin).await?;
    let role = parse_permission(&body.permission)?;
    let user = find_user(&state, &username).await?;
    state.store().set_collaborator(&repo, &user, role, &meta.actor(&caller), state.now()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    delete,
    path = "/api/v1/repos/{owner}/{repo}/collaborators/{username}",
    tag = "repos",
    summary = "Revoke a collaborator",
    responses((status = 204, description = "Revoke a collaborator"), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn remove_collaborator(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    meta: RequestMeta,
    Path((owner, name, username)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let repo = authorize_repo(&state, Some(&caller), &owner, &name, Role::Admin).await?;
    let user = find_user(&state, &username).await?;
    if state.store().remove_collaborator(&repo, &user, &meta.actor(&caller), state.now()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("collaborator.not_found", format!("{username} is not a collaborator")))
    }
}

/// A `permission` field: a role name, or GitHub's aliases `pull` (read) and `push` (write).
pub(crate) fn parse_permission(permission: &str) -> Result<Role, ApiError> {
    match permission {
        "pull" => Ok(Role::Read),
        "push" => Ok(Role::Write),
        other => other.parse().map_err(|e: String| ApiError::validation("permission", e)),
    }
}

/// A user account by name (404 for unknown names and for organizations).
pub(crate) async fn find_user(state: &AppState, username: &str) -> Result<gitstratum_platform::Account, ApiError> {
    match state.store().find_account(username).await? {
        Some(a) if !a.is_org => Ok(a),
        _ => Err(ApiError::not_found("user.not_found", format!("no user named {username:?}"))),
    }
}

/// Repositories the caller has a role on (`gitstratum repo list`).
#[utoipa::path(
    get,
    path = "/api/v1/user/repos",
    tag = "users",
    summary = "Repositories you have a role on",
    responses((status = 200, description = "Repositories you have a role on", body = Vec<RepoBody>), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn list_mine(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<Json<Vec<RepoBody>>, ApiError> {
    require_scope(&caller, Scope::RepoRead)?;
    let repos = state.store().list_accessible_repos(caller.account.id).await?;
    Ok(Json(repos.into_iter().map(|r| RepoBody::new(r, &state)).collect()))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct UpdateRepo {
    pub private: Option<bool>,
    /// An empty one removes it.
    #[serde(default)]
    pub description: Option<String>,
    /// Merge methods its pull requests may use (at least one stays allowed).
    #[serde(default)]
    pub allow_merge_commit: Option<bool>,
    #[serde(default)]
    pub allow_squash_merge: Option<bool>,
    #[serde(default)]
    pub allow_rebase_merge: Option<bool>,
    /// Delete a merged pull request's head branch (of this repository).
    #[serde(default)]
    pub delete_branch_on_merge: Option<bool>,
}

/// Changes a repository's visibility and description; needs admin on it.
#[utoipa::path(
    patch,
    path = "/api/v1/repos/{owner}/{repo}",
    operation_id = "update_repo",
    tag = "repos",
    summary = "Change a repository's visibility or description",
    request_body = UpdateRepo,
    responses((status = 200, description = "Change a repository's visibility or description", body = RepoBody), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn update(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    meta: RequestMeta,
    Path((owner, name)): Path<(String, String)>,
    ApiJson(body): ApiJson<UpdateRepo>,
) -> Result<Json<RepoBody>, ApiError> {
    let mut repo = authorize_repo(&state, Some(&caller), &owner, &name, Role::Admin).await?;
    // Everything is checked before anything changes.
    let described = body.description.as_deref().map(description).transpose()?;
    if body.private == Some(false) && repo.private && repo.is_fork() {
        // Its network's objects would be readable by anyone through it.
        return Err(ApiError::validation("private", "a private fork stays private"));
    }
    let merge = gitstratum_platform::MergeOptions {
        allow_merge_commit: body.allow_merge_commit.unwrap_or(repo.merge.allow_merge_commit),
        allow_squash_merge: body.allow_squash_merge.unwrap_or(repo.merge.allow_squash_merge),
        allow_rebase_merge: body.allow_rebase_merge.unwrap_or(repo.merge.allow_rebase_merge),
        delete_branch_on_merge: body.delete_branch_on_merge.unwrap_or(repo.merge.delete_branch_on_merge),
    };
    if !(merge.allow_merge_commit || merge.allow_squash_merge || merge.allow_rebase_merge) {
        return Err(ApiError::validation("allow_merge_commit", "at least one merge method must stay allowed"));
    }
    if merge != repo.merge {
        state.store().set_merge_options(&repo, merge, &meta.actor(&caller), state.now()).await?;
        repo.merge = merge;
    }
    if let Some(text) = described {
        repo.description = state.store().set_repo_description(&repo, &text, &meta.actor(&caller), state.now()).await?;
    }
    if let Some(private) = body.private {
        state.store().set_repo_private(&repo, private, &meta.actor(&caller), state.now()).await?;
        repo.private = private;
    }
    Ok(Json(RepoBody::new(repo, &state)))
}
