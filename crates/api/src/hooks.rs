//! `/api/v1/repos/{owner}/{repo}/hooks`: outgoing webhooks, their delivery log and redelivery.
//! Managing hooks needs the admin permission on the repository; secrets are never returned.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use gitstratum_platform::{Delivery, Principal, Role, Webhook};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, Authenticated, RequestMeta};
use crate::repos::authorize_repo;

/// Events a hook may subscribe to (`*` is all of them).
const EVENTS: [&str; 2] = ["push", "*"];

#[derive(Deserialize, utoipa::ToSchema)]
pub struct CreateHook {
    pub url: String,
    pub secret: Option<String>,
    #[serde(default = "default_events")]
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
    if url.starts_with("https://") {
        return Err(ApiError::validation(
            "url",
            "https:// webhook URLs need TLS support, which this build does not have yet; use http://",
        ));
    }
    let rest =
        url.strip_prefix("http://").ok_or_else(|| ApiError::validation("url", "the URL must start with http://"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || host.contains(char::is_whitespace) || url.len() > 2000 {
        return Err(ApiError::validation("url", "the URL needs a host, no spaces, and at most 2000 characters"));
    }
    Ok(())
}

#[utoipa::path(
    post,
    path = "/api/v1/repos/{owner}/{repo}/hooks",
    tag = "webhooks",
    summary = "Add a webhook",
    request_body = CreateHook,
    responses((status = 201, description = "Add a webhook", body = HookBody), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn create(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    meta: RequestMeta,
    Path((owner, name)): Path<(String, String)>,
    ApiJson(body): ApiJson<CreateHook>,
) -> Result<(StatusCode, Json<HookBody>), ApiError> {
    let repo = authorize_repo(&state, Some(&caller), &owner, &name, Role::Admin).await?;
    validate_url(&body.url)?;
    if body.events.is_empty() {
        return Err(ApiError::validation("events", "subscribe to at least one event (push, or * for all)"));
    }
    if let Some(unknown) = body.events.iter().find(|e| !EVENTS.contains(&e.as_str())) {
        return Err(ApiError::validation("events", format!("unknown event {unknown:?}; known: push, *")));
    }
    if body.secret.as_ref().is_some_and(|s| s.is_empty() || s.len() > 256) {
        return Err(ApiError::validation("secret", "a secret has 1 to 256 bytes"));
    }
    let hook = state
        .store()
        .create_webhook(&repo, &body.url, body.secret.as_deref(), &body.events, &meta.actor(&caller), state.now())
        .await?;
    Ok((StatusCode::CREATED, Json(hook.into())))
}

#[utoipa::path(
    get,
    path = "/api/v1/repos/{owner}/{repo}/hooks",
    tag = "webhooks",
    summary = "List webhooks",
    responses((status = 200, description = "List webhooks", body = Vec<HookBody>), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn list(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path((owner, name)): Path<(String, String)>,
) -> Result<Json<Vec<HookBody>>, ApiError> {
    let repo = authorize_repo(&state, Some(&caller), &owner, &name, Role::Admin).await?;
    Ok(Json(state.store().list_webhooks(repo.id).await?.into_iter().map(Into::into).collect()))
}

/// Checks the caller administers the repository and that webhook `id` is one of its hooks.
async fn repo_hook(
    state: &AppState,
    caller: &Principal,
    owner: &str,
    name: &str,
    id: i64,
) -> Result<Webhook, ApiError> {
    let repo = authorize_repo(state, Some(caller), owner, name, Role::Admin).await?;
    match state.store().get_webhook(id).await? {
        Some(hook) if hook.repo_id == repo.id => Ok(hook),
        _ => Err(hook_not_found(id)),
    }
}

fn hook_not_found(id: i64) -> ApiError {
    ApiError::not_found("hook.not_found", format!("this repository has no webhook {id}"))
}

#[utoipa::path(
    delete,
    path = "/api/v1/repos/{owner}/{repo}/hooks/{id}",
    tag = "webhooks",
    summary = "Delete a webhook",
    responses((status = 204, description = "Delete a webhook"), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn delete(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    meta: RequestMeta,
    Path((owner, name, id)): Path<(String, String, i64)>,
) -> Result<StatusCode, ApiError> {
    let repo = authorize_repo(&state, Some(&caller), &owner, &name, Role::Admin).await?;
    if state.store().delete_webhook(&repo, id, &meta.actor(&caller), state.now()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(hook_not_found(id))
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/repos/{owner}/{repo}/hooks/{id}/deliveries",
    tag = "webhooks",
    summary = "A webhook's deliveries",
    responses((status = 200, description = "A webhook's deliveries", body = Vec<DeliveryBody>), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn deliveries(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path((owner, name, id)): Path<(String, String, i64)>,
) -> Result<Json<Vec<DeliveryBody>>, ApiError> {
    repo_hook(&state, &caller, &owner, &name, id).await?;
    Ok(Json(state.store().list_deliveries(id, 100).await?.into_iter().map(Into::into).collect()))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Redelivered {
    pub id: i64,
}

#[utoipa::path(
    post,
    path = "/api/v1/repos/{owner}/{repo}/hooks/{id}/deliveries/{delivery}/redeliver",
    tag = "webhooks",
    summary = "Send a delivery again",
    responses((status = 202, description = "Send a delivery again", body = Redelivered), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn redeliver(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path((owner, name, id, delivery)): Path<(String, String, i64, i64)>,
) -> Result<(StatusCode, Json<Redelivered>), ApiError> {
    repo_hook(&state, &caller, &owner, &name, id).await?;
    let guid = gitstratum_platform::webhooks::delivery_guid().map_err(ApiError::internal)?;
    match state.store().redeliver(id, delivery, &guid, state.now()).await? {
        Some(new_id) => Ok((StatusCode::ACCEPTED, Json(Redelivered { id: new_id }))),
        None => Err(ApiError::not_found("delivery.not_found", format!("webhook {id} has no delivery {delivery}"))),
    }
}
