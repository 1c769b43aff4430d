//! Outgoing webhooks, their delivery log and redelivery: `/api/v1/repos/{owner}/{repo}/hooks`
//! (the repository's admins) and `/api/v1/orgs/{org}/hooks` (the organization's owners; such a hook
//! hears every repository of the organization). Secrets are never returned.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use gitstratum_platform::{Account, Delivery, HookOwner, Principal, Repo, Role, Webhook};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, Authenticated, RequestMeta};
use crate::orgs::owned_org;
use crate::repos::authorize_repo;

/// Events a hook may subscribe to (`*` is all of them).
pub(crate) const EVENTS: [&str; 7] =
    ["push", "repository", "workflow_run", "workflow_job", "pull_request", "pull_request_review", "*"];

#[derive(Deserialize, utoipa::ToSchema)]
pub struct CreateHook {
    /// An `http://` or `https://` URL with a host, without user name or password, at most 2000
    /// characters, whose host resolves to addresses webhooks may reach.
    #[schema(pattern = r"^https?://[^\s/?#@]+([/?#]\S*)?$", max_length = 2000)]
    pub url: String,
    /// Signs each delivery (`X-Hub-Signature-256`); 1 to 256 bytes.
    #[schema(min_length = 1, max_length = 256)]
    pub secret: Option<String>,
    /// `push` (the default), `repository`, `workflow_run`, `workflow_job`, or `*` for all.
    #[serde(default = "default_events")]
    #[schema(min_items = 1)]
    pub events: Vec<String>,
}

fn default_events() -> Vec<String> {
    vec!["push".into()]
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HookBody {
    pub id: i64,
    pub url: String,
    pub events: Vec<String>,
    pub active: bool,
    /// Whether deliveries are signed; the secret itself is never shown.
    pub has_secret: bool,
    pub created_at: String,
}

impl From<Webhook> for HookBody {
    fn from(h: Webhook) -> Self {
        HookBody {
            id: h.id,
            url: h.url,
            events: h.events,
            active: h.active,
            has_secret: h.secret.is_some(),
            created_at: h.created_at.to_rfc3339(),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryBody {
    pub id: i64,
    pub guid: String,
    pub event: String,
    pub state: String,
    pub attempts: i64,
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub duration_ms: Option<i64>,
    pub created_at: String,
    pub delivered_at: Option<String>,
    pub next_attempt_at: Option<String>,
}

impl From<Delivery> for DeliveryBody {
    fn from(d: Delivery) -> Self {
        DeliveryBody {
            next_attempt_at: (d.state == "pending").then(|| d.next_attempt_at.to_rfc3339()),
            id: d.id,
            guid: d.guid,
            event: d.event,
            state: d.state,
            attempts: d.attempts,
            status_code: d.status_code,
            error: d.error,
            duration_ms: d.duration_ms,
            created_at: d.created_at.to_rfc3339(),
            delivered_at: d.delivered_at.map(|t| t.to_rfc3339()),
        }
    }
}

fn validate_url(url: &str) -> Result<(), ApiError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| ApiError::validation("url", "the URL must start with https:// or http://"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || url.contains(char::is_whitespace) || url.len() > 2000 {
        return Err(ApiError::validation("url", "the URL needs a host, no spaces, and at most 2000 characters"));
    }
    if host.contains('@') {
        return Err(ApiError::validation("url", "the URL may not carry a user name or password"));
    }
    Ok(())
}

/// The URL's host and port (`host`, `host:port`, `[v6]:port`), default port by scheme.
fn host_and_port(url: &str) -> Option<(String, u16)> {
    let (rest, default_port) = match url.strip_prefix("https://") {
        Some(rest) => (rest, 443),
        None => (url.strip_prefix("http://")?, 80),
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    if let Some(v6) = authority.strip_prefix('[') {
        let (addr, after) = v6.split_once(']')?;
        let port = after.strip_prefix(':').map_or(Some(default_port), |p| p.parse().ok())?;
        return Some((addr.to_owned(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host.to_owned(), port.parse().ok()?)),
        None => Some((authority.to_owned(), default_port)),
    }
}

/// Refuses a URL whose host resolves to an address webhooks may not reach (loopback,
/// link-local, private, …) unless the operator allowed it. Deliveries check again as they
/// connect, so a name that changes what it resolves to later is caught then.
async fn check_destination(state: &AppState, url: &str) -> Result<(), ApiError> {
    let (host, port) =
        host_and_port(url).ok_or_else(|| ApiError::validation("url", "the URL's host or port is invalid"))?;
    let lookup =
        tokio::time::timeout(std::time::Duration::from_secs(5), tokio::net::lookup_host((host.as_str(), port)));
    let addrs: Vec<std::net::SocketAddr> = match lookup.await {
        Ok(Ok(addrs)) => addrs.collect(),
        _ => return Err(ApiError::validation("url", format!("the host {host:?} does not resolve"))),
    };
    if addrs.is_empty() || addrs.iter().any(|a| !state.webhook_destinations().permits(&host, a.ip())) {
        return Err(ApiError::validation(
            "url",
            "the URL's host is a private or internal address; webhooks go to public addresses unless the administrator allows the host ([webhooks] allowed_hosts)",
        ));
    }
    Ok(())
}

fn validate_hook(body: &CreateHook) -> Result<(), ApiError> {
    validate_url(&body.url)?;
    if body.events.is_empty() {
        return Err(ApiError::validation(
            "events",
            "subscribe to at least one event (push, repository, workflow_run, workflow_job, or * for all)",
        ));
    }
    if let Some(unknown) = body.events.iter().find(|e| !EVENTS.contains(&e.as_str())) {
        return Err(ApiError::validation(
            "events",
            format!("unknown event {unknown:?}; known: push, repository, workflow_run, workflow_job, *"),
        ));
    }
    if body.secret.as_ref().is_some_and(|s| s.is_empty() || s.len() > 256) {
        return Err(ApiError::validation("secret", "a secret has 1 to 256 bytes"));
    }
    Ok(())
}

/// What a request's hooks (or secrets, or variables) belong to, once the caller is known to
/// administer it: a repository (its admins) or an organization (its owners).
pub(crate) enum Target {
    Repo(Repo),
    Org(Account),
}

impl Target {
    pub(crate) fn owner(&self) -> HookOwner<'_> {
        match self {
            Target::Repo(repo) => HookOwner::Repo(repo),
            Target::Org(org) => HookOwner::Org(org),
        }
    }

    pub(crate) async fn repo(
        state: &AppState,
        caller: &Principal,
        owner: &str,
        name: &str,
    ) -> Result<Target, ApiError> {
        Ok(Target::Repo(authorize_repo(state, Some(caller), owner, name, Role::Admin).await?))
    }

    pub(crate) async fn org(state: &AppState, caller: &Principal, org: &str) -> Result<Target, ApiError> {
        Ok(Target::Org(owned_org(state, caller, org).await?))
    }

    /// Webhook `id`, when it is one of this target's hooks.
    async fn hook(&self, state: &AppState, id: i64) -> Result<Webhook, ApiError> {
        let found = state.store().get_webhook(id).await?;
        let ours = |hook: &Webhook| match self {
            Target::Repo(repo) => hook.repo_id == Some(repo.id),
            Target::Org(org) => hook.org_id == Some(org.id),
        };
        found.filter(ours).ok_or_else(|| self.hook_not_found(id))
    }

    fn hook_not_found(&self, id: i64) -> ApiError {
        let whose = match self {
            Target::Repo(_) => "this repository",
            Target::Org(_) => "this organization",
        };
        ApiError::not_found("hook.not_found", format!("{whose} has no webhook {id}"))
    }
}

async fn create_hook(
    state: &AppState,
    caller: &Principal,
    meta: &RequestMeta,
    target: Target,
    body: CreateHook,
) -> Result<(StatusCode, Json<HookBody>), ApiError> {
    validate_hook(&body)?;
    check_destination(state, &body.url).await?;
    let hook = state
        .store()
        .create_webhook(
            target.owner(),
            &body.url,
            body.secret.as_deref().map(|secret| (secret, state.secrets_key())),
            &body.events,
            &meta.actor(caller),
            state.now(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(hook.into())))
}

async fn list_hooks(state: &AppState, target: Target) -> Result<Json<Vec<HookBody>>, ApiError> {
    Ok(Json(state.store().list_webhooks(target.owner()).await?.into_iter().map(Into::into).collect()))
}

async fn delete_hook(
    state: &AppState,
    caller: &Principal,
    meta: &RequestMeta,
    target: Target,
    id: i64,
) -> Result<StatusCode, ApiError> {
    if state.store().delete_webhook(target.owner(), id, &meta.actor(caller), state.now()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(target.hook_not_found(id))
    }
}

async fn hook_deliveries(state: &AppState, target: Target, id: i64) -> Result<Json<Vec<DeliveryBody>>, ApiError> {
    target.hook(state, id).await?;
    Ok(Json(state.store().list_deliveries(id, 100).await?.into_iter().map(Into::into).collect()))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Redelivered {
    pub id: i64,
}

async fn redeliver_hook(
    state: &AppState,
    target: Target,
    id: i64,
    delivery: i64,
) -> Result<(StatusCode, Json<Redelivered>), ApiError> {
    target.hook(state, id).await?;
    let guid = gitstratum_platform::webhooks::delivery_guid().map_err(ApiError::internal)?;
    match state.store().redeliver(id, delivery, &guid, state.now()).await? {
        Some(new_id) => Ok((StatusCode::ACCEPTED, Json(Redelivered { id: new_id }))),
        None => Err(ApiError::not_found("delivery.not_found", format!("webhook {id} has no delivery {delivery}"))),
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/repos/{owner}/{repo}/hooks",
    operation_id = "create_hook",
    tag = "webhooks",
    summary = "Add a webhook to a repository",
    request_body = CreateHook,
    responses((status = 201, description = "The new webhook", body = HookBody), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn create(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    meta: RequestMeta,
    Path((owner, name)): Path<(String, String)>,
    ApiJson(body): ApiJson<CreateHook>,
) -> Result<(StatusCode, Json<HookBody>), ApiError> {
    let target = Target::repo(&state, &caller, &owner, &name).await?;
    create_hook(&state, &caller, &meta, target, body).await
}

#[utoipa::path(
    get,
    path = "/api/v1/repos/{owner}/{repo}/hooks",
    operation_id = "list_hooks",
    tag = "webhooks",
    summary = "A repository's webhooks",
    responses((status = 200, description = "A repository's webhooks", body = Vec<HookBody>), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn list(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path((owner, name)): Path<(String, String)>,
) -> Result<Json<Vec<HookBody>>, ApiError> {
    list_hooks(&state, Target::repo(&state, &caller, &owner, &name).await?).await
}

#[utoipa::path(
    delete,
    path = "/api/v1/repos/{owner}/{repo}/hooks/{id}",
    operation_id = "delete_hook",
    tag = "webhooks",
    summary = "Delete a repository's webhook",
    responses((status = 204, description = "Deleted"), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn delete(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    meta: RequestMeta,
    Path((owner, name, id)): Path<(String, String, i64)>,
) -> Result<StatusCode, ApiError> {
    let target = Target::repo(&state, &caller, &owner, &name).await?;
    delete_hook(&state, &caller, &meta, target, id).await
}

#[utoipa::path(
    get,
    path = "/api/v1/repos/{owner}/{repo}/hooks/{id}/deliveries",
    tag = "webhooks",
    summary = "A repository webhook's deliveries",
    responses((status = 200, description = "The most recent deliveries, newest first", body = Vec<DeliveryBody>), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn deliveries(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path((owner, name, id)): Path<(String, String, i64)>,
) -> Result<Json<Vec<DeliveryBody>>, ApiError> {
    hook_deliveries(&state, Target::repo(&state, &caller, &owner, &name).await?, id).await
}

#[utoipa::path(
    post,
    path = "/api/v1/repos/{owner}/{repo}/hooks/{id}/deliveries/{delivery}/redeliver",
    tag = "webhooks",
    summary = "Send a repository webhook's delivery again",
    responses((status = 202, description = "Queued as a new delivery", body = Redelivered), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn redeliver(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path((owner, name, id, delivery)): Path<(String, String, i64, i64)>,
) -> Result<(StatusCode, Json<Redelivered>), ApiError> {
    redeliver_hook(&state, Target::repo(&state, &caller, &owner, &name).await?, id, delivery).await
}

#[utoipa::path(
    post,
    path = "/api/v1/orgs/{org}/hooks",
    operation_id = "create_org_hook",
    tag = "webhooks",
    summary = "Add a webhook to an organization (it hears every repository of the organization)",
    request_body = CreateHook,
    responses((status = 201, description = "The new webhook", body = HookBody), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn create_org(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    meta: RequestMeta,
    Path(org): Path<String>,
    ApiJson(body): ApiJson<CreateHook>,
) -> Result<(StatusCode, Json<HookBody>), ApiError> {
    let target = Target::org(&state, &caller, &org).await?;
    create_hook(&state, &caller, &meta, target, body).await
}

#[utoipa::path(
    get,
    path = "/api/v1/orgs/{org}/hooks",
    operation_id = "list_org_hooks",
    tag = "webhooks",
    summary = "An organization's webhooks",
    responses((status = 200, description = "An organization's webhooks", body = Vec<HookBody>), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn list_org(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(org): Path<String>,
) -> Result<Json<Vec<HookBody>>, ApiError> {
    list_hooks(&state, Target::org(&state, &caller, &org).await?).await
}

#[utoipa::path(
    delete,
    path = "/api/v1/orgs/{org}/hooks/{id}",
    operation_id = "delete_org_hook",
    tag = "webhooks",
    summary = "Delete an organization's webhook",
    responses((status = 204, description = "Deleted"), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn delete_org(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    meta: RequestMeta,
    Path((org, id)): Path<(String, i64)>,
) -> Result<StatusCode, ApiError> {
    let target = Target::org(&state, &caller, &org).await?;
    delete_hook(&state, &caller, &meta, target, id).await
}

#[utoipa::path(
    get,
    path = "/api/v1/orgs/{org}/hooks/{id}/deliveries",
    tag = "webhooks",
    summary = "An organization webhook's deliveries",
    responses((status = 200, description = "The most recent deliveries, newest first", body = Vec<DeliveryBody>), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn org_deliveries(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path((org, id)): Path<(String, i64)>,
) -> Result<Json<Vec<DeliveryBody>>, ApiError> {
    hook_deliveries(&state, Target::org(&state, &caller, &org).await?, id).await
}

#[utoipa::path(
    post,
    path = "/api/v1/orgs/{org}/hooks/{id}/deliveries/{delivery}/redeliver",
    tag = "webhooks",
    summary = "Send an organization webhook's delivery again",
    responses((status = 202, description = "Queued as a new delivery", body = Redelivered), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn org_redeliver(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path((org, id, delivery)): Path<(String, i64, i64)>,
) -> Result<(StatusCode, Json<Redelivered>), ApiError> {
    redeliver_hook(&state, Target::org(&state, &caller, &org).await?, id, delivery).await
}
