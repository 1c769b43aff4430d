//! `/api/v1/session`: logging in with a username and password (for people; scripts use tokens),
//! and logging out. Failed attempts are limited per account and per client address.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gitstratum_core::Timestamp;
use gitstratum_platform::{Actor, AuditEvent, NewToken, Scope, Scopes, password};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, Authenticated, RequestMeta};

/// How long a session token works.
const SESSION_DAYS: i64 = 14;
const DAY_MS: i64 = 86_400_000;
/// Failed logins allowed per account, and per client address, within [`WINDOW_MS`].
const MAX_FAILURES_PER_ACCOUNT: u32 = 5;
const MAX_FAILURES_PER_ADDRESS: u32 = 20;
const WINDOW_MS: i64 = 15 * 60 * 1000;
/// Cookie the web UI's pages authenticate with (never accepted by the API).
pub const SESSION_COOKIE: &str = "gitstratum_session";

/// Seconds until `key` may try again, when it has `limit` failed logins in its window (counted
/// in the platform database, so every server of a cluster sees the same count).
async fn locked(state: &AppState, key: &str, limit: u32, now: Timestamp) -> Result<Option<u64>, ApiError> {
    Ok(state.store().login_failures(key, now, WINDOW_MS).await?.and_then(|(count, since)| {
        let ends = since.0 + WINDOW_MS;
        (count >= limit && now.0 < ends).then(|| u64::try_from((ends - now.0 + 999) / 1000).unwrap_or(1))
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct Login {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login").field("username", &self.username).field("password", &"***").finish()
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionBody {
    pub token: String,
    pub expires_at: String,
}

fn too_many(retry_after: u64) -> Response {
    let mut response = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "auth.too_many_attempts",
        format!("too many failed logins; try again in {retry_after} s"),
    )
    .into_response();
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    response
}

/// Logs in: answers a session token (and sets it as an HttpOnly cookie for the web UI).
#[utoipa::path(
    post,
    path = "/api/v1/session",
    tag = "users",
    security(()),
    summary = "Log in with a password",
    request_body = Login,
    responses((status = 201, description = "Log in with a password", body = SessionBody), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn login(
    State(state): State<AppState>,
    meta: RequestMeta,
    ApiJson(body): ApiJson<Login>,
) -> Result<Response, ApiError> {
    let (cookie, body) = match start_session(&state, &meta, &body.username, &body.password).await? {
        Started::Session { cookie, body } => (cookie, body),
        Started::Locked(wait) => return Ok(too_many(wait)),
    };
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    response.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).map_err(ApiError::internal)?);
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// What a login attempt gave.
pub(crate) enum Started {
    /// A session: its cookie (`Set-Cookie` value) and token.
    Session { cookie: String, body: SessionBody },
    /// Too many failures lately: try again in this many seconds.
    Locked(u64),
}

/// Checks `username`'s password as a sign-in does: failures are limited per account and per
/// address, recorded in the audit log, and take as long for unknown names as for known ones.
/// `Ok(Err(wait))`: locked out for `wait` seconds; a wrong password or unknown name: 401.
async fn verify_login(
    state: &AppState,
    meta: &RequestMeta,
    username: &str,
    password: &str,
) -> Result<Result<gitstratum_platform::Account, u64>, ApiError> {
    let now = state.now();
    let account_key = format!("account:{}", username.to_ascii_lowercase());
    let address_key = format!("address:{}", meta.ip.as_deref().unwrap_or("unknown"));
    let lockout = match locked(state, &account_key, MAX_FAILURES_PER_ACCOUNT, now).await? {
        Some(wait) => Some(wait),
        None => locked(state, &address_key, MAX_FAILURES_PER_ADDRESS, now).await?,
    };
    if let Some(wait) = lockout {
        metrics::counter!("gitstratum_control_ratelimit_throttled_total", "limit" => "login").increment(1);
        return Ok(Err(wait));
    }
    let candidate = state.store().login_candidate(username).await?;
    // Verify even for unknown accounts, so timing does not tell which names exist.
    let stored = candidate.as_ref().and_then(|(_, h)| h.clone());
    let password = password.to_owned();
    let matches = tokio::task::spawn_blocking(move || match stored {
        Some(hash) => password::verify_password(&hash, &password),
        None => {
            password::verify_password(password::dummy_hash(), &password);
            false
        }
    })
    .await
    .map_err(ApiError::internal)?;
    match (candidate, matches) {
        (Some((account, _)), true) => {
            state.store().clear_login_failures(&account_key, now, WINDOW_MS).await?;
            Ok(Ok(account))
        }
        _ => {
            state.store().record_login_failure(&account_key, now, WINDOW_MS).await?;
            state.store().record_login_failure(&address_key, now, WINDOW_MS).await?;
            metrics::counter!("gitstratum_control_auth_decisions_total", "result" => "login_failed").increment(1);
            let actor =
                Actor { id: None, name: username.to_owned(), ip: meta.ip.clone(), request_id: meta.request_id.clone() };
            let event = AuditEvent::new("session.failed", format!("user:{username}"));
            state.store().record_audit(&actor, &event, now).await?;
            Err(ApiError::new(StatusCode::UNAUTHORIZED, "auth.bad_credentials", "bad username or password"))
        }
    }
}

/// Whether `password` is `username`'s, under the sign-in's limits ([`verify_login`]; a lockout
/// is a 429): for pages that ask for the current password again (changing it).
pub(crate) async fn check_password(
    state: &AppState,
    meta: &RequestMeta,
    username: &str,
    password: &str,
) -> Result<bool, ApiError> {
    match verify_login(state, meta, username, password).await {
        Ok(Ok(_)) => Ok(true),
        Ok(Err(wait)) => Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "auth.locked",
            format!("Too many failed attempts; try again in {wait} s."),
        )),
        Err(e) if e.status == StatusCode::UNAUTHORIZED => Ok(false),
        Err(e) => Err(e),
    }
}

/// Checks a password ([`verify_login`]) and starts a session (the API's login and the web UI's
/// sign-in form).
pub(crate) async fn start_session(
    state: &AppState,
    meta: &RequestMeta,
    username: &str,
    password: &str,
) -> Result<Started, ApiError> {
    let now = state.now();
    let account = match verify_login(state, meta, username, password).await? {
        Ok(account) => account,
        Err(wait) => return Ok(Started::Locked(wait)),
    };
    if account.suspended_at.is_some() {
        return Err(ApiError::forbidden("this account is suspended"));
    }
    metrics::counter!("gitstratum_control_auth_decisions_total", "result" => "login").increment(1);
    let scopes =
        if account.is_admin { Scopes::new([Scope::Admin]) } else { Scopes::new([Scope::RepoAdmin, Scope::User]) };
    let expires_at = Timestamp(now.0 + SESSION_DAYS * DAY_MS);
    let new = NewToken { name: gitstratum_platform::SESSION_TOKEN_NAME.into(), scopes, expires_at: Some(expires_at) };
    let actor = Actor::account(account.id, &account.name).from(meta.ip.clone(), meta.request_id.clone());
    let (_, secret) = state.store().create_token(account.id, &new, &actor, now).await?;
    let secure = if state.public_url().starts_with("https://") { "; Secure" } else { "" };
    let cookie = format!(
        "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
        secret.expose(),
        SESSION_DAYS * 86_400
    );
    Ok(Started::Session {
        cookie,
        body: SessionBody { token: secret.expose().to_owned(), expires_at: expires_at.to_rfc3339() },
    })
}

/// Logs out: revokes the token this request used.
#[utoipa::path(
    delete,
    path = "/api/v1/session",
    tag = "users",
    summary = "Log out (revoke this token)",
    responses((status = 204, description = "Log out (revoke this token)"), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn logout(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    meta: RequestMeta,
) -> Result<Response, ApiError> {
    state.store().revoke_token(caller.account.id, caller.token_id, &meta.actor(&caller), state.now()).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    let expired = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0");
    response.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&expired).map_err(ApiError::internal)?);
    Ok(response)
}
