//! Personal settings: the signed-in account's tokens — listed (never their secrets), made under
//! the API's rules (`tokens::mint`: scopes the session may grant, the site's lifetime cap), shown
//! once when made, and revoked. Every form carries the CSRF token.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};

use super::{CsrfForm, Ctx, csrf_ok, when};
use crate::AppState;
use crate::tokens::CreateToken;

/// The scopes a person may tick, with what they allow.
const SCOPES: [(&str, &str); 6] = [
    ("repo:read", "read repositories (clone, fetch, the API)"),
    ("repo:write", "push"),
    ("repo:admin", "manage repositories"),
    ("user", "manage your account and tokens"),
    ("ci:runner", "register CI runners"),
    ("admin", "administer the site (site administrators only)"),
];

fn to_login() -> Response {
    Redirect::to("/login").into_response()
}

async fn tokens_page(
    state: &AppState,
    ctx: &Ctx,
    status: StatusCode,
    made: Option<(String, String)>,
    error: Option<String>,
) -> Response {
    let Some(p) = &ctx.viewer.0 else { return to_login() };
    let tokens = match state.store().list_tokens(p.account.id).await {
        Ok(t) => t,
        Err(e) => return ctx.failed(e),
    };
    let now = state.now().0;
    let body: Markup = html! {
        h1 { "Tokens" }
        p { "Personal access tokens work for Git over HTTP (as the password) and for the API (" code { "Authorization: Bearer" } "). Sessions from signing in are listed as " code { "session" } "." }
        @if let Some((name, secret)) = &made {
            section.made role="status" {
                p { "Your new token " strong { (name) } ". Copy it now: it is not shown again." }
                input id="new-token" type="text" readonly value=(secret) aria-label="The new token";
            }
        }
        @if let Some(e) = &error { p.error role="alert" { (e) } }
        table.refs {
            thead { tr { th { "Name" } th { "Scopes" } th { "Expires" } th { "Last used" } th {} } }
            tbody {
                @for t in &tokens {
                    tr {
                        td { (t.name) }
                        td { (t.scopes.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")) }
                        td { @if let Some(at) = t.expires_at { (when(at.0 / 1000, now)) } @else { "never" } }
                        td { @if let Some(at) = t.last_used_at { (when(at.0 / 1000, now)) } @else { "—" } }
                        td {
                            (ctx.button(&format!("/settings/tokens/{}/revoke", t.id), None, "Revoke", None))
                        }
                    }
                }
            }
        }
        h2 { "New token" }
        form.stack method="post" action="/settings/tokens" {
            input type="hidden" name="csrf" value=(ctx.csrf);
            label for="token-name" { "Name" }
            input id="token-name" type="text" name="name" maxlength="100" required;
            fieldset {
                legend { "Scopes" }
                @for (scope, what) in SCOPES {
                    div {
                        input id={ "scope-" (scope) } type="checkbox" name="scope" value=(scope);
                        " " label for={ "scope-" (scope) } { code { (scope) } " — " (what) }
                    }
                }
            }
            label for="token-days" { "Expires in days (empty: never, unless the site caps it)" }
            input id="token-days" type="number" name="expires_in_days" min="1" max="3650";
            button type="submit" { "Make token" }
        }
    };
    ctx.respond(status, "Tokens", body)
}

/// `/settings/tokens`.
pub(super) async fn tokens(State(state): State<AppState>, ctx: Ctx) -> Response {
    if ctx.viewer.0.is_none() {
        return to_login();
    }
    tokens_page(&state, &ctx, StatusCode::OK, None, None).await
}

/// `POST /settings/tokens`: `csrf`, `name`, `scope` (repeated), `expires_in_days`.
pub(super) async fn create(
    State(state): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
    axum::Form(pairs): axum::Form<Vec<(String, String)>>,
) -> Response {
    let Some(p) = ctx.viewer.0.clone() else { return to_login() };
    let mut form = CreateToken { name: String::new(), scopes: Vec::new(), expires_in_days: None };
    let mut csrf = String::new();
    let mut bad_days = false;
    for (key, value) in pairs {
        match key.as_str() {
            "csrf" => csrf = value,
            "name" => form.name = value,
            "scope" => form.scopes.push(value),
            "expires_in_days" if !value.trim().is_empty() => match value.trim().parse() {
                Ok(days) => form.expires_in_days = Some(days),
                Err(_) => bad_days = true,
            },
            _ => {}
        }
    }
    if !csrf_ok(&headers, &csrf) {
        return tokens_page(&state, &ctx, StatusCode::FORBIDDEN, None, Some("The form expired; try again.".into()))
            .await;
    }
    if bad_days {
        let why = Some("Expiry must be a number of days.".to_owned());
        return tokens_page(&state, &ctx, StatusCode::UNPROCESSABLE_ENTITY, None, why).await;
    }
    match crate::tokens::mint(&state, &p, &ctx.meta, &form).await {
        Ok((info, secret)) => tokens_page(&state, &ctx, StatusCode::CREATED, Some((info.name, secret)), None).await,
        Err(e) if e.status.is_client_error() => tokens_page(&state, &ctx, e.status, None, Some(e.message)).await,
        Err(e) => ctx.failed(e.message),
    }
}

/// `POST /settings/tokens/{id}/revoke`.
pub(super) async fn revoke(
    State(state): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
    Path(id): Path<i64>,
    axum::Form(form): axum::Form<CsrfForm>,
) -> Response {
    let Some(p) = ctx.viewer.0.clone() else { return to_login() };
    if !csrf_ok(&headers, &form.csrf) {
        return tokens_page(&state, &ctx, StatusCode::FORBIDDEN, None, Some("The form expired; try again.".into()))
            .await;
    }
    match state.store().revoke_token(p.account.id, id, &ctx.meta.actor(&p), state.now()).await {
        // Revoking the session this page runs on signs the viewer out.
        Ok(_) if id == p.token_id => to_login(),
        Ok(_) => Redirect::to("/settings/tokens").into_response(),
        Err(e) => ctx.failed(e),
    }
}

async fn keys_page(state: &AppState, ctx: &Ctx, status: StatusCode, error: Option<String>) -> Response {
    let Some(p) = &ctx.viewer.0 else { return to_login() };
    let keys = match state.store().list_ssh_keys(p.account.id).await {
        Ok(k) => k,
        Err(e) => return ctx.failed(e),
    };
    let now = state.now().0;
    let body = html! {
        h1 { "SSH keys" }
        p { "Keys listed here let Git over SSH act as you." }
        @if let Some(e) = &error { p.error role="alert" { (e) } }
        @if keys.is_empty() { p { "No keys yet." } }
        table.refs {
            tbody {
                @for k in &keys {
                    tr {
                        td { strong { (k.title) } br; code { (k.fingerprint) } }
                        td { (k.key_type) " · " (k.bits) " bits" }
                        td { "added " (when(k.created_at.0 / 1000, now)) }
                        td { @if let Some(at) = k.last_used_at { "used " (when(at.0 / 1000, now)) } @else { "never used" } }
                        td {
                            (ctx.button(&format!("/settings/keys/{}/delete", k.id), None, "Delete", None))
                        }
                    }
                }
            }
        }
        h2 { "New key" }
        form.stack method="post" action="/settings/keys" {
            input type="hidden" name="csrf" value=(ctx.csrf);
            label for="key-title" { "Title (empty: the key's comment)" }
            input id="key-title" type="text" name="title" maxlength="100";
            label for="key-text" { "Key (" code { "ssh-ed25519 AAAA… you@host" } ")" }
            textarea id="key-text" name="key" rows="4" required {}
            button type="submit" { "Add key" }
        }
    };
    ctx.respond(status, "SSH keys", body)
}

/// `/settings/keys`.
pub(super) async fn keys(State(state): State<AppState>, ctx: Ctx) -> Response {
    keys_page(&state, &ctx, StatusCode::OK, None).await
}

#[derive(serde::Deserialize)]
pub(super) struct KeyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    key: String,
}

/// `POST /settings/keys`: `csrf`, `title`, `key`.
pub(super) async fn add_key(
    State(state): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
    axum::Form(form): axum::Form<KeyForm>,
) -> Response {
    let Some(p) = ctx.viewer.0.clone() else { return to_login() };
    if !csrf_ok(&headers, &form.csrf) {
        return keys_page(&state, &ctx, StatusCode::FORBIDDEN, Some("The form expired; try again.".into())).await;
    }
    let title = Some(form.title.trim().to_owned()).filter(|t| !t.is_empty());
    match crate::keys_teams::add_key_for(&state, &p, &ctx.meta, &form.key, title).await {
        Ok(_) => Redirect::to("/settings/keys").into_response(),
        Err(e) if e.status.is_client_error() => keys_page(&state, &ctx, e.status, Some(e.message)).await,
        Err(e) => ctx.failed(e.message),
    }
}

/// `POST /settings/keys/{id}/delete`.
pub(super) async fn delete_key(
    State(state): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
    Path(id): Path<i64>,
    axum::Form(form): axum::Form<CsrfForm>,
) -> Response {
    let Some(p) = ctx.viewer.0.clone() else { return to_login() };
    if !csrf_ok(&headers, &form.csrf) {
        return keys_page(&state, &ctx, StatusCode::FORBIDDEN, Some("The form expired; try again.".into())).await;
    }
    match state.store().remove_ssh_key(&p.account, id, &ctx.meta.actor(&p), state.now()).await {
        Ok(_) => Redirect::to("/settings/keys").into_response(),
        Err(e) => ctx.failed(e),
    }
}

fn password_body(ctx: &Ctx, note: Option<(&str, bool)>) -> Markup {
    html! {
        h1 { "Password" }
        @if let Some((text, ok)) = note {
            @if ok { p.made role="status" { (text) } } @else { p.error role="alert" { (text) } }
        }
        form.stack method="post" action="/settings/password" {
            input type="hidden" name="csrf" value=(ctx.csrf);
            label for="current-password" { "Current password" }
            input id="current-password" type="password" name="current" autocomplete="current-password" required;
            label for="new-password" { "New password (at least " (gitstratum_platform::password::MIN_PASSWORD_LEN) " characters)" }
            input id="new-password" type="password" name="new" autocomplete="new-password" required
                minlength=(gitstratum_platform::password::MIN_PASSWORD_LEN);
            label for="confirm-password" { "New password again" }
            input id="confirm-password" type="password" name="confirm" autocomplete="new-password" required;
            button type="submit" { "Change password" }
        }
        p.meta { "Changing it signs you out everywhere else (your other sessions end); tokens keep working." }
    }
}

/// `/settings/password`.
pub(super) async fn password(ctx: Ctx) -> Response {
    if ctx.viewer.0.is_none() {
        return to_login();
    }
    ctx.respond(StatusCode::OK, "Password", password_body(&ctx, None))
}

#[derive(serde::Deserialize)]
pub(super) struct PasswordForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    current: String,
    #[serde(default)]
    new: String,
    #[serde(default)]
    confirm: String,
}

/// `POST /settings/password` (`csrf`, `current`, `new`, `confirm`): the current password is
/// checked as a sign-in checks it (failures count toward the same lockout), then the new one is
/// stored and every other session of the account ends.
pub(super) async fn change_password(
    State(state): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
    axum::Form(form): axum::Form<PasswordForm>,
) -> Response {
    let Some(p) = ctx.viewer.0.clone() else { return to_login() };
    let refuse = |status, text: &str| ctx.respond(status, "Password", password_body(&ctx, Some((text, false))));
    if !csrf_ok(&headers, &form.csrf) {
        return refuse(StatusCode::FORBIDDEN, "The form expired; try again.");
    }
    if form.new != form.confirm {
        return refuse(StatusCode::UNPROCESSABLE_ENTITY, "The new password and its confirmation differ.");
    }
    if let Err(why) = gitstratum_platform::password::validate_password(&form.new) {
        return refuse(StatusCode::UNPROCESSABLE_ENTITY, &format!("The new password is not accepted: {why}."));
    }
    // The current password, checked the way a sign-in checks it (limits, audit, timing).
    match crate::session::check_password(&state, &ctx.meta, &p.account.name, &form.current).await {
        Ok(true) => {}
        Ok(false) => return refuse(StatusCode::UNAUTHORIZED, "The current password is wrong."),
        Err(e) if e.status.is_client_error() => return refuse(e.status, &e.message),
        Err(e) => return ctx.failed(e.message),
    }
    let new = form.new.clone();
    let hash = match tokio::task::spawn_blocking(move || gitstratum_platform::password::hash_password(&new)).await {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => return ctx.failed(e),
        Err(e) => return ctx.failed(e),
    };
    let actor = ctx.meta.actor(&p);
    if let Err(e) = state.store().set_password_hash(&p.account, &hash, &actor, state.now()).await {
        return ctx.failed(e);
    }
    // Every other session ends: whoever else was signed in with the old password is out.
    let tokens = match state.store().list_tokens(p.account.id).await {
        Ok(t) => t,
        Err(e) => return ctx.failed(e),
    };
    for t in tokens.iter().filter(|t| t.name == gitstratum_platform::SESSION_TOKEN_NAME && t.id != p.token_id) {
        if let Err(e) = state.store().revoke_token(p.account.id, t.id, &actor, state.now()).await {
            return ctx.failed(e);
        }
    }
    ctx.respond(StatusCode::OK, "Password", password_body(&ctx, Some(("Your password was changed.", true))))
}
