//! `/api/v1/tokens` and `/api/v1/user`: the caller's personal access tokens and account.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use gitstratum_core::Timestamp;
use gitstratum_platform::{NewToken, Principal, Scope, Scopes, TokenInfo};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, Authenticated, RequestMeta};
use crate::orgs::AccountBody;

/// Longest lifetime a token may be given, in days.
const MAX_EXPIRY_DAYS: u32 = 3650;
const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CreateToken {
    /// 1 to 100 characters, not all spaces, no control characters; leading and trailing spaces
    /// are dropped. `session` is reserved for login sessions.
    #[schema(
        max_length = 100,
        pattern = r"^(?! *[Ss][Ee][Ss][Ss][Ii][Oo][Nn] *$)[^\x00-\x1f\x7f]*[^\x00-\x20\x7f][^\x00-\x1f\x7f]*$"
    )]
    pub name: String,
    /// Scope names, e.g. `["repo:read", "repo:write"]`: `repo:read`, `repo:write`, `repo:admin`,
    /// `admin`, `ci:runner`, `user`.
    #[schema(min_items = 1)]
    pub scopes: Vec<String>,
    /// Days until the token stops working (1 to 3650); without it, it works until revoked (unless
    /// the site caps token lifetime).
    #[schema(minimum = 1, maximum = 3650)]
    pub expires_in_days: Option<u32>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenBody {
    pub id: i64,
    pub name: String,
    pub scopes: Vec<String>,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
    pub created_at: String,
}

impl From<TokenInfo> for TokenBody {
    fn from(t: TokenInfo) -> Self {
        TokenBody {
            id: t.id,
            name: t.name,
            scopes: t.scopes.iter().map(|s| s.to_string()).collect(),
            expires_at: t.expires_at.map(|t| t.to_rfc3339()),
            last_used_at: t.last_used_at.map(|t| t.to_rfc3339()),
            created_at: t.created_at.to_rfc3339(),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub info: TokenBody,
    /// The token itself, shown this once; only its hash is stored.
    pub token: String,
}

/// Whether the caller may mint a token with `wanted`: never more than its own token holds (so a
/// leaked narrow token cannot mint a broad one), `admin` only for site administrators.
/// Managing tokens is managing the account: a session (logged in with a password) may, and so may
/// a token with the `user` scope (or `admin`); a token made for repositories or runners may not.
fn may_manage_tokens(caller: &Principal) -> Result<(), ApiError> {
    if caller.scopes.allows(Scope::User) {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "managing tokens needs a session (log in with a password) or a token with the 'user' scope",
        ))
    }
}

fn may_grant(caller: &Principal, wanted: Scope) -> Result<(), ApiError> {
    let held = caller.scopes.allows(wanted) || (wanted == Scope::CiRunner && caller.is_site_admin());
    if wanted == Scope::Admin && !caller.account.is_admin {
        return Err(ApiError::forbidden("only site administrators may hold the 'admin' scope"));
    }
    if !held {
        return Err(ApiError::forbidden(format!(
            "this token cannot grant '{wanted}': a new token may not have scopes the current one lacks"
        )));
    }
    Ok(())
}

#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    operation_id = "create_token",
    tag = "users",
    summary = "Create a token",
    request_body = CreateToken,
    responses((status = 201, description = "Create a token", body = CreatedToken), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn create(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    meta: RequestMeta,
    ApiJson(body): ApiJson<CreateToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let (info, token) = mint(&state, &caller, &meta, &body).await?;
    Ok((StatusCode::CREATED, Json(CreatedToken { info: info.into(), token })))
}

/// Makes a token for the caller's account, under every rule of the API (the web UI's tokens page
/// comes here too): a valid name, known scopes the caller may grant, the site's lifetime cap,
/// never outliving the token that asks. Returns it with its secret (shown once).
pub(crate) async fn mint(
    state: &AppState,
    caller: &Principal,
    meta: &RequestMeta,
    body: &CreateToken,
) -> Result<(TokenInfo, String), ApiError> {
    may_manage_tokens(caller)?;
    let name = body.name.trim_matches(' ');
    if name.is_empty() || body.name.chars().count() > 100 || body.name.chars().any(|c| c.is_ascii_control()) {
        return Err(ApiError::validation(
            "name",
            "a token needs a name of 1 to 100 characters, not all spaces, without control characters",
        ));
    }
    if name.eq_ignore_ascii_case(gitstratum_platform::SESSION_TOKEN_NAME) {
        return Err(ApiError::validation("name", "'session' is the name of login sessions; choose another"));
    }
    if body.scopes.is_empty() {
        return Err(ApiError::validation("scopes", "a token needs at least one scope"));
    }
    let scopes = body
        .scopes
        .iter()
        .map(|word| {
            Scope::parse(word).ok_or_else(|| {
                ApiError::validation(
                    "scopes",
                    format!("unknown scope {word:?}; known: repo:read, repo:write, repo:admin, admin, ci:runner, user"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Scopes::new)?;
    for scope in scopes.iter() {
        may_grant(caller, scope)?;
    }
    if let Some(max) = state.token_max_days()
        && body.expires_in_days.is_none_or(|days| days > max)
    {
        return Err(ApiError::validation(
            "expires_in_days",
            format!("tokens on this server must expire within {max} days (set expires_in_days)"),
        ));
    }
    let expires_at = match body.expires_in_days {
        Some(0) => return Err(ApiError::validation("expires_in_days", "must be at least 1")),
        Some(days) if days > MAX_EXPIRY_DAYS => {
            return Err(ApiError::validation("expires_in_days", format!("must be at most {MAX_EXPIRY_DAYS}")));
        }
        Some(days) => Some(Timestamp(state.now().0 + i64::from(days) * DAY_MS)),
        None => None,
    };
    // A token never mints one that outlives it (a session stands for the account, which does
    // not expire).
    if let (false, Some(limit)) = (caller.session, caller.expires_at)
        && expires_at.is_none_or(|at| at > limit)
    {
        return Err(ApiError::forbidden(format!(
            "this token expires at {}; a token it creates must expire no later (set expires_in_days)",
            limit.to_rfc3339()
        )));
    }
    let new = NewToken { name: name.to_owned(), scopes, expires_at };
    let (info, secret) = state.store().create_token(caller.account.id, &new, &meta.actor(caller), state.now()).await?;
    Ok((info, secret.expose().to_owned()))
}

#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    operation_id = "list_tokens",
    tag = "users",
    summary = "Your tokens",
    responses((status = 200, description = "Your tokens", body = Vec<TokenBody>), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn list(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> Result<Json<Vec<TokenBody>>, ApiError> {
    may_manage_tokens(&caller)?;
    Ok(Json(state.store().list_tokens(caller.account.id).await?.into_iter().map(Into::into).collect()))
}

#[utoipa::path(
    delete,
    path = "/api/v1/tokens/{id}",
    tag = "users",
    summary = "Revoke a token",
    responses((status = 204, description = "Revoke a token"), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn revoke(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    meta: RequestMeta,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    may_manage_tokens(&caller)?;
    if state.store().revoke_token(caller.account.id, id, &meta.actor(&caller), state.now()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("token.not_found", format!("you have no token {id}")))
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WhoAmI {
    #[serde(flatten)]
    pub account: AccountBody,
    /// The scopes of the token this request used.
    pub scopes: Vec<String>,
}

/// The caller's account and the scopes of the token in use (`gitstratum whoami`).
#[utoipa::path(
    get,
    path = "/api/v1/user",
    tag = "users",
    summary = "Who you are",
    responses((status = 200, description = "Who you are", body = WhoAmI), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn whoami(Authenticated(caller): Authenticated) -> Json<WhoAmI> {
    let scopes = caller.scopes.iter().map(|s| s.to_string()).collect();
    Json(WhoAmI { account: caller.account.into(), scopes })
}
