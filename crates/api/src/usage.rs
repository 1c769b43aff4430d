//! CI usage of an organization: `GET /api/v1/orgs/{org}/usage?from=&to=` (its owners), or of the
//! caller's own repositories (`GET /api/v1/user/usage`): job minutes by runner labels and by
//! repository, and log storage, over a period, and the artifact and cache storage taken now; and
//! an organization's CI limits,
//! `/api/v1/orgs/{org}/ci/limits` (read by its owners, set by site administrators).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use gitstratum_core::Timestamp;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::Authenticated;
use crate::orgs::owned_org;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// The start (inclusive): `YYYY-MM-DD` or RFC 3339; default the first of this month (UTC).
    #[param(
        pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2}))?$"
    )]
    pub from: Option<String>,
    /// The end (exclusive): `YYYY-MM-DD` or RFC 3339; default now.
    #[param(
        pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2}))?$"
    )]
    pub to: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UsageBody {
    pub from: String,
    pub to: String,
    /// Job attempts that ran (completed, or lost with their runner).
    pub jobs: i64,
    pub job_minutes: f64,
    /// The stored (compressed) size of their logs.
    pub log_bytes: i64,
    pub by_labels: Vec<LabelUsage>,
    pub by_repository: Vec<RepoUsage>,
    /// What its kept artifacts take in storage now (compressed).
    pub artifact_bytes: i64,
    /// What its caches take in storage now (compressed).
    pub cache_bytes: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LabelUsage {
    /// The runner labels the jobs asked for (`runs-on`), space-separated.
    pub labels: String,
    pub jobs: i64,
    pub job_minutes: f64,
}

#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct RepoUsage {
    /// `owner/name`, or `#ID` for a repository deleted since.
    pub repository: String,
    pub jobs: i64,
    pub job_minutes: f64,
    pub log_bytes: i64,
    /// What its kept artifacts take in storage now (compressed).
    pub artifact_bytes: i64,
    /// What its caches take in storage now (compressed).
    pub cache_bytes: i64,
}

fn minutes(ms: i64) -> f64 {
    (ms as f64 / 60_000.0 * 100.0).round() / 100.0
}

/// `YYYY-MM-DD` (midnight UTC) or RFC 3339.
fn when(field: &'static str, text: &str) -> Result<Timestamp, ApiError> {
    let full = if text.len() == 10 { format!("{text}T00:00:00Z") } else { text.to_owned() };
    Timestamp::parse_rfc3339(&full)
        .ok_or_else(|| ApiError::validation(field, format!("{text:?} is not a date (YYYY-MM-DD) or an RFC 3339 time")))
}

/// Midnight UTC of the first day of `now`'s month.
fn month_start(now: Timestamp) -> Timestamp {
    let today = now.to_rfc3339();
    Timestamp::parse_rfc3339(&format!("{}-01T00:00:00Z", &today[..7])).unwrap_or(now)
}

#[utoipa::path(
    get,
    path = "/api/v1/orgs/{org}/usage",
    tag = "ci",
    summary = "An organization's CI usage over a period",
    params(UsageQuery),
    responses((status = 200, description = "Job minutes and log storage, by labels and by repository", body = UsageBody), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn org_usage(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(org): Path<String>,
    Query(q): Query<UsageQuery>,
) -> Result<Json<UsageBody>, ApiError> {
    let org = owned_org(&state, &caller, &org).await?;
    Ok(Json(usage_of(&state, org.id, &q).await?))
}

#[utoipa::path(
    get,
    path = "/api/v1/user/usage",
    tag = "ci",
    summary = "The CI usage of the caller's own repositories over a period",
    params(UsageQuery),
    responses((status = 200, description = "Job minutes and storage, by labels and by repository", body = UsageBody), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn user_usage(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Query(q): Query<UsageQuery>,
) -> Result<Json<UsageBody>, ApiError> {
    Ok(Json(usage_of(&state, caller.account.id, &q).await?))
}

/// `owner/name`, or `#ID` for a repository deleted since.
async fn repo_label(state: &AppState, repo_id: i64) -> Result<String, ApiError> {
    Ok(match state.store().get_repo_by_id(repo_id).await? {
        Some(repo) => format!("{}/{}", repo.owner, repo.name),
        None => format!("#{repo_id}"),
    })
}

/// A tenant's (the account owning repositories) usage over the query's period.
async fn usage_of(state: &AppState, tenant_id: i64, q: &UsageQuery) -> Result<UsageBody, ApiError> {
    let now = state.now();
    let from = q.from.as_deref().map(|t| when("from", t)).transpose()?.unwrap_or_else(|| month_start(now));
    let to = q.to.as_deref().map(|t| when("to", t)).transpose()?.unwrap_or(Timestamp(now.0 + 1));
    if to <= from {
        return Err(ApiError::validation("to", "the end comes after the start"));
    }
    let lines = state.ci().usage(tenant_id, from, to).await?;
    let mut by_labels: Vec<LabelUsage> = Vec::new();
    let mut by_repository: Vec<(i64, RepoUsage)> = Vec::new();
    for line in &lines {
        match by_labels.iter_mut().find(|l| l.labels == line.labels) {
            Some(l) => {
                l.jobs += line.jobs;
                l.job_minutes += minutes(line.duration_ms);
            }
            None => by_labels.push(LabelUsage {
                labels: line.labels.clone(),
                jobs: line.jobs,
                job_minutes: minutes(line.duration_ms),
            }),
        }
        match by_repository.iter_mut().find(|(id, _)| *id == line.repo_id) {
            Some((_, r)) => {
                r.jobs += line.jobs;
                r.job_minutes += minutes(line.duration_ms);
                r.log_bytes += line.log_bytes;
            }
            None => {
                let name = repo_label(state, line.repo_id).await?;
                by_repository.push((
                    line.repo_id,
                    RepoUsage {
                        repository: name,
                        jobs: line.jobs,
                        job_minutes: minutes(line.duration_ms),
                        log_bytes: line.log_bytes,
                        artifact_bytes: 0,
                        cache_bytes: 0,
                    },
                ));
            }
        }
    }
    // Storage now, by repository (one with storage but no jobs in the period is listed too).
    for (repo_id, artifact_bytes, cache_bytes) in state.artifacts().stored_bytes_by_repo(tenant_id).await? {
        match by_repository.iter_mut().find(|(id, _)| *id == repo_id) {
            Some((_, r)) => {
                r.artifact_bytes = artifact_bytes;
                r.cache_bytes = cache_bytes;
            }
            None => {
                let name = repo_label(state, repo_id).await?;
                let r = RepoUsage { repository: name, artifact_bytes, cache_bytes, ..RepoUsage::default() };
                by_repository.push((repo_id, r));
            }
        }
    }
    Ok(UsageBody {
        from: from.to_rfc3339(),
        to: to.to_rfc3339(),
        jobs: lines.iter().map(|l| l.jobs).sum(),
        job_minutes: minutes(lines.iter().map(|l| l.duration_ms).sum()),
        log_bytes: lines.iter().map(|l| l.log_bytes).sum(),
        by_labels,
        artifact_bytes: by_repository.iter().map(|(_, r)| r.artifact_bytes).sum(),
        cache_bytes: by_repository.iter().map(|(_, r)| r.cache_bytes).sum(),
        by_repository: by_repository.into_iter().map(|(_, r)| r).collect(),
    })
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LimitsBody {
    /// Jobs the organization may have running at once (`null`: the site's default).
    #[schema(minimum = 1)]
    pub max_running_jobs: Option<i64>,
    /// Runs not yet completed it may have; a run beyond fails at once, saying so (`null`: the
    /// site's default).
    #[schema(minimum = 1)]
    pub max_queued_runs: Option<i64>,
    /// Job minutes per calendar month (UTC); past it, its queued jobs fail, saying so (`null`:
    /// the site's default).
    #[schema(minimum = 1)]
    pub max_minutes_per_month: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LimitsView {
    /// The organization's own limits.
    #[serde(flatten)]
    pub own: LimitsBody,
    /// What applies: its own, else the site's defaults (`null`: no limit).
    pub effective: LimitsBody,
}

fn view(own: gitstratum_ci::TenantLimits, defaults: gitstratum_ci::TenantLimits) -> LimitsView {
    let effective = own.or(defaults);
    LimitsView {
        own: LimitsBody {
            max_running_jobs: own.max_running_jobs,
            max_queued_runs: own.max_queued_runs,
            max_minutes_per_month: own.max_minutes_per_month,
        },
        effective: LimitsBody {
            max_running_jobs: effective.max_running_jobs,
            max_queued_runs: effective.max_queued_runs,
            max_minutes_per_month: effective.max_minutes_per_month,
        },
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/orgs/{org}/ci/limits",
    tag = "ci",
    summary = "An organization's CI limits",
    responses((status = 200, description = "Its own limits and those that apply", body = LimitsView), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn org_limits(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(org): Path<String>,
) -> Result<Json<LimitsView>, ApiError> {
    let org = owned_org(&state, &caller, &org).await?;
    let own = state.ci().tenant_limits(org.id).await?;
    Ok(Json(view(own, state.ci().default_tenant_limits())))
}

#[utoipa::path(
    put,
    path = "/api/v1/orgs/{org}/ci/limits",
    tag = "ci",
    summary = "Set an organization's CI limits (site administrators)",
    request_body = LimitsBody,
    responses((status = 200, description = "Its limits now", body = LimitsView), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn set_org_limits(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    meta: crate::extract::RequestMeta,
    Path(org): Path<String>,
    crate::extract::ApiJson(body): crate::extract::ApiJson<LimitsBody>,
) -> Result<Json<LimitsView>, ApiError> {
    if !caller.is_site_admin() {
        return Err(ApiError::forbidden("only site administrators set CI limits"));
    }
    let org = owned_org(&state, &caller, &org).await?;
    for (field, value) in [
        ("max_running_jobs", body.max_running_jobs),
        ("max_queued_runs", body.max_queued_runs),
        ("max_minutes_per_month", body.max_minutes_per_month),
    ] {
        if value.is_some_and(|n| n < 1) {
            return Err(ApiError::validation(field, "a limit is 1 or more (null: the site's default)"));
        }
    }
    let limits = gitstratum_ci::TenantLimits {
        max_running_jobs: body.max_running_jobs,
        max_queued_runs: body.max_queued_runs,
        max_minutes_per_month: body.max_minutes_per_month,
    };
    state.ci().set_tenant_limits(org.id, limits, state.now()).await?;
    let event = gitstratum_platform::AuditEvent::new("ci.limits.set", format!("org:{}", org.name))
        .org(Some(org.id))
        .details(serde_json::to_string(&body).map_err(ApiError::internal)?);
    state.store().record_audit(&meta.actor(&caller), &event, state.now()).await?;
    Ok(Json(view(limits, state.ci().default_tenant_limits())))
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RepoCiSettings {
    /// Days this repository's job logs are kept after their job completed (`null`: the site's
    /// default).
    #[schema(minimum = 1, maximum = 36500)]
    pub log_retention_days: Option<i64>,
    /// The most days this repository's artifacts are kept (an upload's `retention-days` may ask
    /// for fewer; `null`: the site's default).
    #[schema(minimum = 1, maximum = 36500)]
    pub artifact_retention_days: Option<i64>,
    /// Any repository of this installation may use this repository's actions and reusable
    /// workflows (default false: when private, only its owner's repositories may).
    #[serde(default)]
    pub actions_shared: bool,
}

#[utoipa::path(
    get,
    path = "/api/v1/repos/{owner}/{repo}/ci/settings",
    tag = "ci",
    summary = "A repository's CI settings",
    responses((status = 200, description = "Its settings", body = RepoCiSettings), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn repo_settings(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path((owner, name)): Path<(String, String)>,
) -> Result<Json<RepoCiSettings>, ApiError> {
    let repo =
        crate::repos::authorize_repo(&state, Some(&caller), &owner, &name, gitstratum_platform::Role::Admin).await?;
    let settings = state.ci().repo_settings(repo.id).await?;
    Ok(Json(RepoCiSettings {
        log_retention_days: settings.log_retention_days,
        artifact_retention_days: settings.artifact_retention_days,
        actions_shared: settings.actions_shared,
    }))
}

#[utoipa::path(
    put,
    path = "/api/v1/repos/{owner}/{repo}/ci/settings",
    tag = "ci",
    summary = "Set a repository's CI settings (its admins)",
    request_body = RepoCiSettings,
    responses((status = 200, description = "Its settings now", body = RepoCiSettings), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn set_repo_settings(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    meta: crate::extract::RequestMeta,
    Path((owner, name)): Path<(String, String)>,
    crate::extract::ApiJson(body): crate::extract::ApiJson<RepoCiSettings>,
) -> Result<Json<RepoCiSettings>, ApiError> {
    let repo =
        crate::repos::authorize_repo(&state, Some(&caller), &owner, &name, gitstratum_platform::Role::Admin).await?;
    for (field, days) in
        [("log_retention_days", body.log_retention_days), ("artifact_retention_days", body.artifact_retention_days)]
    {
        if days.is_some_and(|d| !(1..=36_500).contains(&d)) {
            return Err(ApiError::validation(field, "1 to 36500 days (null: the site's default)"));
        }
    }
    let settings = gitstratum_ci::usage::RepoSettings {
        log_retention_days: body.log_retention_days,
        artifact_retention_days: body.artifact_retention_days,
        actions_shared: body.actions_shared,
        // Switched on and off through the Actions permissions, not here.
        disabled: state.ci().repo_settings(repo.id).await?.disabled,
    };
    state.ci().set_repo_settings(repo.id, settings, state.now()).await?;
    let event = gitstratum_platform::AuditEvent::new("ci.settings.set", format!("repo:{}/{}", repo.owner, repo.name))
        .details(serde_json::to_string(&body).map_err(ApiError::internal)?);
    state.store().record_audit(&meta.actor(&caller), &event, state.now()).await?;
    Ok(Json(body))
}

/// Whether a repository's CI runs (GitHub's `GET/PUT /repos/{owner}/{repo}/actions/permissions`,
/// its `enabled` field; `allowed_actions` is always `all` here).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ActionsPermissions {
    /// False: pushes and pull requests start no runs (a fork starts so, as on GitHub).
    pub enabled: bool,
    #[serde(default = "all_actions")]
    #[schema(pattern = "^all$")]
    pub allowed_actions: String,
}

fn all_actions() -> String {
    "all".to_owned()
}

#[utoipa::path(
    get,
    path = "/api/v1/repos/{owner}/{repo}/actions/permissions",
    tag = "ci",
    summary = "Whether the repository's CI runs (its admins)",
    responses((status = 200, description = "Its Actions permissions", body = ActionsPermissions), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn actions_permissions(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path((owner, name)): Path<(String, String)>,
) -> Result<Json<ActionsPermissions>, ApiError> {
    let repo =
        crate::repos::authorize_repo(&state, Some(&caller), &owner, &name, gitstratum_platform::Role::Admin).await?;
    let settings = state.ci().repo_settings(repo.id).await?;
    Ok(Json(ActionsPermissions { enabled: !settings.disabled, allowed_actions: all_actions() }))
}

#[utoipa::path(
    put,
    path = "/api/v1/repos/{owner}/{repo}/actions/permissions",
    tag = "ci",
    summary = "Switch the repository's CI on or off (its admins)",
    request_body = ActionsPermissions,
    responses((status = 204, description = "Set"), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn set_actions_permissions(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    meta: crate::extract::RequestMeta,
    Path((owner, name)): Path<(String, String)>,
    crate::extract::ApiJson(body): crate::extract::ApiJson<ActionsPermissions>,
) -> Result<StatusCode, ApiError> {
    let repo =
        crate::repos::authorize_repo(&state, Some(&caller), &owner, &name, gitstratum_platform::Role::Admin).await?;
    if body.allowed_actions != "all" {
        return Err(ApiError::validation("allowed_actions", "only \"all\" is supported"));
    }
    let mut settings = state.ci().repo_settings(repo.id).await?;
    settings.disabled = !body.enabled;
    state.ci().set_repo_settings(repo.id, settings, state.now()).await?;
    let event =
        gitstratum_platform::AuditEvent::new("ci.permissions.set", format!("repo:{}/{}", repo.owner, repo.name))
            .details(format!(r#"{{"enabled":{}}}"#, body.enabled));
    state.store().record_audit(&meta.actor(&caller), &event, state.now()).await?;
    Ok(StatusCode::NO_CONTENT)
}
