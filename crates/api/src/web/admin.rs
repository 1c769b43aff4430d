//! Site administration, for site administrators only (anyone else: the 404 page): the accounts
//! (suspend and lift a suspension, through the API's handlers) and the audit log with its filters.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use gitstratum_platform::Principal;
use maud::{Markup, html};

use super::{CsrfForm, Ctx, csrf_ok, enc_query, when};
use crate::AppState;
use crate::extract::{Authenticated, RequestMeta};

/// Accounts on one page.
const ACCOUNTS_PER_PAGE: u64 = 100;

fn admin(ctx: &Ctx) -> Option<Principal> {
    ctx.viewer.0.clone().filter(|p| p.is_site_admin())
}

fn tabs(tab: &str) -> Markup {
    html! {
        h1 { "Site administration" }
        nav.tabs aria-label="Administration" {
            a href="/-/admin/accounts" aria-current=[(tab == "accounts").then_some("page")] { "Accounts" }
            a href="/-/admin/audit" aria-current=[(tab == "audit").then_some("page")] { "Audit log" }
        }
    }
}

#[derive(serde::Deserialize)]
pub(super) struct AccountsQuery {
    after: Option<String>,
}

/// `/-/admin/accounts`: every account by name, [`ACCOUNTS_PER_PAGE`] a page.
pub(super) async fn accounts(State(state): State<AppState>, ctx: Ctx, Query(q): Query<AccountsQuery>) -> Response {
    let Some(me) = admin(&ctx) else { return ctx.not_found() };
    accounts_page(&state, &ctx, &me, q.after.as_deref(), StatusCode::OK, None).await
}

async fn accounts_page(
    state: &AppState,
    ctx: &Ctx,
    me: &Principal,
    after: Option<&str>,
    status: StatusCode,
    error: Option<String>,
) -> Response {
    let list = match state.store().list_accounts(after, ACCOUNTS_PER_PAGE).await {
        Ok(l) => l,
        Err(e) => return ctx.failed(e),
    };
    let now = state.now().0;
    let body = html! {
        (tabs("accounts"))
        @if let Some(e) = &error { p.error role="alert" { (e) } }
        p.meta { "New users: " code { "gitstratum user create NAME" } " or " code { "POST /api/v1/users" } "." }
        table.refs {
            thead { tr { th { "Account" } th { "Kind" } th { "Created" } th { "State" } th {} } }
            tbody {
                @for a in &list {
                    tr {
                        td { a href={ "/" (a.name) } { (a.name) } @if a.is_admin { " " span.badge { "site admin" } } }
                        td { (if a.is_org { "organization" } else { "user" }) }
                        td { (when(a.created_at.0 / 1000, now)) }
                        td { @if let Some(at) = a.suspended_at { span.error { "suspended " } (when(at.0 / 1000, now)) } @else { "active" } }
                        td {
                            @if !a.is_org && a.id != me.account.id {
                                @let action = if a.suspended_at.is_some() { "unsuspend" } else { "suspend" };
                                @let label = if a.suspended_at.is_some() { "Lift suspension" } else { "Suspend" };
                                (ctx.button(&format!("/-/admin/accounts/{}/{action}", a.name), None, label, Some(&format!("{action} {}", a.name))))
                            }
                        }
                    }
                }
            }
        }
        @if let Some(last) = list.last().filter(|_| list.len() as u64 == ACCOUNTS_PER_PAGE) {
            nav.pages { a rel="next" href={ "/-/admin/accounts?after=" (enc_query(&last.name)) } { "More" } }
        }
    };
    ctx.respond(status, "Accounts · Administration", body)
}

/// `POST /-/admin/accounts/{name}/{suspend|unsuspend}`.
pub(super) async fn act(
    State(state): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
    Path((name, action)): Path<(String, String)>,
    axum::Form(form): axum::Form<CsrfForm>,
) -> Response {
    let Some(me) = admin(&ctx) else { return ctx.not_found() };
    if !csrf_ok(&headers, &form.csrf) {
        let expired = Some("The form expired; try again.".to_owned());
        return accounts_page(&state, &ctx, &me, None, StatusCode::FORBIDDEN, expired).await;
    }
    let meta = RequestMeta { ip: ctx.meta.ip.clone(), request_id: ctx.meta.request_id.clone() };
    let who = Authenticated(me.clone());
    let result = match action.as_str() {
        "suspend" => crate::orgs::suspend(State(state.clone()), who, meta, Path(name)).await,
        "unsuspend" => crate::orgs::unsuspend(State(state.clone()), who, meta, Path(name)).await,
        _ => return ctx.not_found(),
    };
    match result {
        Ok(_) => Redirect::to("/-/admin/accounts").into_response(),
        Err(e) if e.status.is_client_error() => accounts_page(&state, &ctx, &me, None, e.status, Some(e.message)).await,
        Err(e) => ctx.failed(e.message),
    }
}

/// `/-/admin/audit`: the audit log, newest first, filtered by actor, action and target (the
/// API's `GET /api/v1/audit`).
pub(super) async fn audit(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(q): Query<crate::orgs::AuditQuery>,
) -> Response {
    let Some(me) = admin(&ctx) else { return ctx.not_found() };
    let field = |v: &Option<String>| v.clone().unwrap_or_default();
    let (actor, action, target) = (field(&q.actor), field(&q.action), field(&q.target));
    let given = |v: &str| Some(v.trim().to_owned()).filter(|v| !v.is_empty());
    let query = crate::orgs::AuditQuery {
        actor: given(&actor),
        action: given(&action),
        target: given(&target),
        org: None,
        before: q.before,
        limit: Some(100),
    };
    let page = match crate::orgs::audit(State(state.clone()), Authenticated(me), Query(query)).await {
        Ok(Json(page)) => page,
        Err(e) if e.status.is_client_error() => return ctx.not_found(),
        Err(e) => return ctx.failed(e.message),
    };
    let now = state.now().0;
    let body = html! {
        (tabs("audit"))
        form.filters method="get" action="/-/admin/audit" {
            label for="actor" { "Actor" }
            input id="actor" type="text" name="actor" value=(actor) size="12";
            label for="action" { "Action" }
            input id="action" type="text" name="action" value=(action) placeholder="repo.create" size="14";
            label for="target" { "Target" }
            input id="target" type="text" name="target" value=(target) size="16";
            button type="submit" { "Filter" }
        }
        @if page.entries.is_empty() { p { "No entries." } }
        table.refs {
            thead { tr { th { "When" } th { "Actor" } th { "Action" } th { "Target" } th { "From" } } }
            tbody {
                @for e in &page.entries {
                    tr {
                        td {
                            @match gitstratum_core::Timestamp::parse_rfc3339(&e.created_at) {
                                Some(t) => (when(t.0 / 1000, now)),
                                None => (e.created_at),
                            }
                        }
                        td { (e.actor) }
                        td { code { (e.action) } }
                        td { (e.target) }
                        td.meta { (e.ip.as_deref().unwrap_or("")) @if let Some(r) = &e.request_id { " · " (r) } }
                    }
                }
            }
        }
        @if let Some(next) = page.next_cursor {
            nav.pages {
                a rel="next" href={ "/-/admin/audit?before=" (next) "&actor=" (enc_query(&actor)) "&action=" (enc_query(&action)) "&target=" (enc_query(&target)) } { "Older" }
            }
        }
    };
    ctx.respond(StatusCode::OK, "Audit log · Administration", body)
}
