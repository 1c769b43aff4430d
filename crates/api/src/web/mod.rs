//! The web UI: server-rendered pages (maud templates, escaped by construction) over the same
//! platform, CI and Git code the API uses, under GitHub's URLs. Every page reads with JavaScript
//! off; nothing is loaded from elsewhere (the stylesheet is compiled in).
//!
//! - Who: the session cookie a sign-in sets ([`Viewer`]); tokens never authenticate pages, and the
//!   cookie never authenticates the API.
//! - Access: the API's one policy ([`crate::repos::repo_decision`]): a repository the viewer may
//!   not read is a 404 page, as in the API.
//! - Forms: every state-changing form carries a CSRF token that must equal the `gitstratum_csrf`
//!   cookie (double submit; the cookie is `SameSite=Strict`).
//! - Headers: a Content-Security-Policy without `unsafe-inline` and `frame-ancestors 'none'` on
//!   every page; raw files are served sandboxed.

mod admin;
mod diff;
mod highlight;
mod home;
mod markdown;
mod pulls;
mod repo;
mod repo_settings;
mod runs;
mod settings;

use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use gitstratum_platform::Principal;
use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::AppState;
use crate::extract::RequestMeta;
use crate::session::{SESSION_COOKIE, Started, start_session};

/// The cookie CSRF tokens are checked against.
const CSRF_COOKIE: &str = "gitstratum_csrf";
/// The pages' policy: only this server's stylesheet, scripts and images (and `data:` images).
const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; img-src 'self' data:; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
const STYLE: &str = include_str!("style.css");
const LIVE: &str = include_str!("live.js");
const PAGE: &str = include_str!("page.js");

/// The pages' routes (merged beside the API's and Git's).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home::dashboard))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/static/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
        .route("/settings/tokens", get(settings::tokens).post(settings::create))
        .route("/settings/tokens/{id}/revoke", post(settings::revoke))
        .route("/settings/keys", get(settings::keys).post(settings::add_key))
        .route("/settings/keys/{id}/delete", post(settings::delete_key))
        .route("/settings/password", get(settings::password).post(settings::change_password))
        .route("/-/admin/accounts", get(admin::accounts))
        .route("/-/admin/accounts/{name}/{action}", post(admin::act))
        .route("/-/admin/audit", get(admin::audit))
        .route("/{owner}", get(home::owner))
        .route("/{owner}/{repo}", get(repo::home))
        .route("/{owner}/{repo}/tree/{*rest}", get(repo::tree))
        .route("/{owner}/{repo}/blob/{*rest}", get(repo::blob))
        .route("/{owner}/{repo}/raw/{*rest}", get(repo::raw))
        .route("/{owner}/{repo}/commits/{*rest}", get(repo::commits))
        .route("/{owner}/{repo}/commit/{*rest}", get(repo::commit))
        .route("/{owner}/{repo}/branches", get(repo::branches))
        .route("/{owner}/{repo}/branches/delete", post(repo::delete_branch))
        .route("/{owner}/{repo}/compare/{*spec}", get(repo::compare))
        .route("/{owner}/{repo}/pulls", get(pulls::list).post(pulls::create))
        .route("/{owner}/{repo}/pull/{number}", get(pulls::page))
        .route("/{owner}/{repo}/pull/{number}/{action}", get(pulls::tab).post(pulls::act))
        .route("/{owner}/{repo}/fork", post(pulls::fork))
        .route("/{owner}/{repo}/settings", get(repo_settings::page))
        .route("/{owner}/{repo}/settings/hooks/{id}", get(repo_settings::hook))
        .route("/{owner}/{repo}/settings/hooks/{id}/redeliver", post(repo_settings::redeliver))
        .route("/{owner}/{repo}/settings/{action}", post(repo_settings::act))
        .route("/{owner}/{repo}/tags", get(repo::tags))
        .route("/{owner}/{repo}/actions", get(runs::list))
        .route("/{owner}/{repo}/actions/runs/{id}", get(runs::run))
        .route("/{owner}/{repo}/actions/runs/{id}/job/{job}", get(runs::job))
        .route("/{owner}/{repo}/actions/runs/{id}/{action}", post(runs::act))
        .route("/{owner}/{repo}/actions/runs/{id}/artifacts/{artifact}", get(runs::artifact))
        .route("/{owner}/{repo}/actions/runs/{id}/job/{job}/stream", get(runs::stream))
        .route("/{owner}/{repo}/actions/runs/{id}/job/{job}/raw", get(runs::raw_log))
        .route("/{owner}/{repo}/actions/runs/{id}/events", get(runs::run_events))
        .route("/static/live.js", get(|| async { asset("text/javascript; charset=utf-8", LIVE) }))
        .route("/static/page.js", get(|| async { asset("text/javascript; charset=utf-8", PAGE) }))
        .layer(axum::middleware::map_response(page_headers))
}

async fn page_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.entry(header::CONTENT_SECURITY_POLICY).or_insert(HeaderValue::from_static(CSP));
    headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-cache"));
    response
}

/// Who is looking: the account of a valid session cookie, else nobody.
pub(crate) struct Viewer(pub Option<Principal>);

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE) else { return Ok(Viewer(None)) };
        match state.store().authenticate(token, state.now()).await {
            // Only a sign-in's session: a token pasted into a cookie does not make a page viewer.
            Ok(Some(p)) if p.session && p.repo_only.is_none() && p.account.suspended_at.is_none() => {
                Ok(Viewer(Some(p)))
            }
            _ => Ok(Viewer(None)),
        }
    }
}

/// What every page needs: who is looking, their CSRF token (and the cookie that makes it, when
/// new), and the request's id for errors.
pub(crate) struct Ctx {
    pub viewer: Viewer,
    pub csrf: String,
    set_csrf: Option<String>,
    pub meta: RequestMeta,
    /// The viewer's role on the repository the page is about (its id, and the role its access was
    /// last decided on), set when that access is checked; [`Ctx::may`] asks the policy with it.
    repo_role: std::sync::Mutex<Option<(i64, Option<gitstratum_platform::Role>)>>,
}

impl FromRequestParts<AppState> for Ctx {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let viewer = Viewer::from_request_parts(parts, state).await?;
        let meta = RequestMeta::from_request_parts(parts, state).await?;
        let (csrf, set_csrf) = csrf_token(&parts.headers);
        Ok(Ctx { viewer, csrf, set_csrf, meta, repo_role: Default::default() })
    }
}

impl Ctx {
    /// A page in the site's layout; `refresh`: seconds after which the browser reloads it (with
    /// `scripted`, only a browser without JavaScript: the page's script keeps it current).
    pub(crate) fn page(&self, title: &str, body: Markup, refresh: Option<u32>, scripted: bool) -> Markup {
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    @if let Some(seconds) = refresh {
                        @if scripted { noscript { meta http-equiv="refresh" content=(seconds); } }
                        @else { meta http-equiv="refresh" content=(seconds); }
                    }
                    title { (title) " · GitStratum" }
                    link rel="stylesheet" href="/static/style.css";
                    script src="/static/page.js" defer {}
                }
                body {
                    header.site {
                        a.brand href="/" { "GitStratum" }
                        nav {
                            @if let Some(p) = &self.viewer.0 {
                                span.who { (p.account.name) }
                                a href="/settings/tokens" { "Tokens" }
                                a href="/settings/keys" { "SSH keys" }
                                a href="/settings/password" { "Password" }
                                @if p.is_site_admin() { a href="/-/admin/accounts" { "Admin" } }
                                (self.button("/logout", None, "Sign out", None))
                            } @else {
                                a href="/login" { "Sign in" }
                            }
                        }
                    }
                    main { (body) }
                }
            }
        }
    }

    /// A form that is one button: a POST of `action` with the CSRF token and, when given, one more
    /// hidden field; `aria`: the button's accessible name when its label alone is ambiguous.
    pub(crate) fn button(&self, action: &str, field: Option<(&str, &str)>, label: &str, aria: Option<&str>) -> Markup {
        html! {
            form.inline method="post" action=(action) {
                input type="hidden" name="csrf" value=(self.csrf);
                @if let Some((name, value)) = field { input type="hidden" name=(name) value=(value); }
                button type="submit" aria-label=[aria] { (label) }
            }
        }
    }

    /// A finished page response (with the CSRF cookie when it is new).
    pub(crate) fn respond(&self, status: StatusCode, title: &str, body: Markup) -> Response {
        self.respond_refreshing(status, title, body, None)
    }

    /// [`Ctx::respond`] for a page that changes by itself (a run in progress): reloaded after
    /// `refresh` seconds.
    pub(crate) fn respond_refreshing(
        &self,
        status: StatusCode,
        title: &str,
        body: Markup,
        refresh: Option<u32>,
    ) -> Response {
        self.respond_page(status, self.page(title, body, refresh, false))
    }

    /// [`Ctx::respond_refreshing`] for a page whose script follows it live: only a browser
    /// without JavaScript reloads it.
    pub(crate) fn respond_live(&self, status: StatusCode, title: &str, body: Markup, refresh: Option<u32>) -> Response {
        self.respond_page(status, self.page(title, body, refresh, true))
    }

    fn respond_page(&self, status: StatusCode, markup: Markup) -> Response {
        let response =
            (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], markup.into_string()).into_response();
        with_cookie(response, self.set_csrf.clone())
    }

    /// The repository, when the viewer may read it (the API's policy); else the 404 page (or the
    /// 500 page when the policy could not be asked).
    pub(crate) async fn readable_repo(
        &self,
        state: &AppState,
        owner: &str,
        name: &str,
    ) -> Result<gitstratum_platform::Repo, Response> {
        self.authorized_repo(state, owner, name, gitstratum_platform::Role::Read).await
    }

    /// The repository, when the viewer has the powers of `needed` on it (the API's policy);
    /// else the 404 page (the 500 page when the policy could not be asked). Remembers the
    /// viewer's role for [`Ctx::may`].
    pub(crate) async fn authorized_repo(
        &self,
        state: &AppState,
        owner: &str,
        name: &str,
        needed: gitstratum_platform::Role,
    ) -> Result<gitstratum_platform::Repo, Response> {
        match crate::repos::authorize_repo_role(state, self.viewer.0.as_ref(), owner, name, needed).await {
            Ok((mut repo, role)) => {
                // What a clone checks out is what the pages call the default branch.
                repo.default_branch = crate::repos::default_branch(state, &repo);
                if let Ok(mut remembered) = self.repo_role.lock() {
                    *remembered = Some((repo.id, role));
                }
                Ok(repo)
            }
            Err(e) if e.status.is_client_error() => Err(self.not_found()),
            Err(e) => Err(self.failed(e.message)),
        }
    }

    /// Whether the viewer has the powers of `needed` on `repo`, the repository this page checked
    /// access to (the policy asked again with the role found then; any other repository: no).
    pub(crate) fn may(&self, repo: &gitstratum_platform::Repo, needed: gitstratum_platform::Role) -> bool {
        let Some((id, role)) = self.repo_role.lock().ok().and_then(|r| *r) else { return false };
        let access = gitstratum_platform::policy::RepoAccess {
            caller: self.viewer.0.as_ref(),
            repo_id: repo.id,
            role,
            private: repo.private,
        };
        id == repo.id && gitstratum_platform::policy::decide(access, needed).is_ok()
    }

    /// The 404 page: also what a private repository the viewer may not read looks like.
    pub(crate) fn not_found(&self) -> Response {
        self.respond(
            StatusCode::NOT_FOUND,
            "Not found",
            html! { h1 { "Not found" } p { "There is nothing here, or you may not see it." } },
        )
    }

    /// The 500 page: the request id, nothing else.
    pub(crate) fn failed(&self, error: impl std::fmt::Display) -> Response {
        let id = self.meta.request_id.as_deref().unwrap_or("-");
        tracing::error!(error = %error, request_id = id, "a page failed");
        self.respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Error",
            html! { h1 { "Something went wrong" } p { "Request " code { (id) } } },
        )
    }
}

/// The viewer's CSRF token, and the `Set-Cookie` that makes it when there is none yet.
pub(crate) fn csrf_token(headers: &HeaderMap) -> (String, Option<String>) {
    if let Some(t) = cookie(headers, CSRF_COOKIE).filter(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return (t.to_owned(), None);
    }
    let mut bytes = [0u8; 16];
    let _ = getrandom::fill(&mut bytes);
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let set = format!("{CSRF_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict");
    (token, Some(set))
}

/// Whether a form's token is the viewer's (constant time).
pub(crate) fn csrf_ok(headers: &HeaderMap, presented: &str) -> bool {
    let Some(expected) = cookie(headers, CSRF_COOKIE) else { return false };
    expected.len() == 32
        && presented.len() == expected.len()
        && presented.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

fn with_cookie(mut response: Response, set: Option<String>) -> Response {
    if let Some(value) = set.and_then(|s| HeaderValue::from_str(&s).ok()) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// One of the compiled-in files (cached an hour by browsers).
fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=3600")], body).into_response()
}

fn login_body(ctx: &Ctx, error: Option<&str>) -> Markup {
    html! {
        h1 { "Sign in" }
        @if let Some(e) = error { p.error role="alert" { (e) } }
        form.stack method="post" action="/login" {
            input type="hidden" name="csrf" value=(ctx.csrf);
            label for="username" { "Username" }
            input id="username" type="text" name="username" autocomplete="username" required autofocus;
            label for="password" { "Password" }
            input id="password" type="password" name="password" autocomplete="current-password" required;
            button type="submit" { "Sign in" }
        }
    }
}

async fn login_form(ctx: Ctx) -> Response {
    ctx.respond(StatusCode::OK, "Sign in", login_body(&ctx, None))
}

#[derive(serde::Deserialize)]
struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

async fn login(
    State(state): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
    axum::Form(form): axum::Form<LoginForm>,
) -> Response {
    if !csrf_ok(&headers, &form.csrf) {
        return ctx.respond(StatusCode::FORBIDDEN, "Sign in", login_body(&ctx, Some("The form expired; try again.")));
    }
    match start_session(&state, &ctx.meta, &form.username, &form.password).await {
        Ok(Started::Session { cookie, .. }) => with_cookie(Redirect::to("/").into_response(), Some(cookie)),
        Ok(Started::Locked(wait)) => {
            let message = format!("Too many failed sign-ins; try again in {wait} s.");
            ctx.respond(StatusCode::TOO_MANY_REQUESTS, "Sign in", login_body(&ctx, Some(&message)))
        }
        Err(e) if e.status.is_client_error() => ctx.respond(
            e.status,
            "Sign in",
            login_body(&ctx, Some("Bad username or password, or the account is suspended.")),
        ),
        Err(e) => ctx.failed(e.message),
    }
}

/// A form whose only field that matters is its CSRF token (sign out, the buttons that revoke,
/// delete, cancel or re-run).
#[derive(serde::Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

async fn logout(
    State(state): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
    axum::Form(form): axum::Form<CsrfForm>,
) -> Response {
    if !csrf_ok(&headers, &form.csrf) {
        return ctx.respond(StatusCode::FORBIDDEN, "Sign out", html! { p { "The form expired." } });
    }
    if let Some(p) = &ctx.viewer.0
        && let Err(e) = state.store().revoke_token(p.account.id, p.token_id, &ctx.meta.actor(p), state.now()).await
    {
        return ctx.failed(e);
    }
    let expired = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0");
    with_cookie(Redirect::to("/").into_response(), Some(expired))
}

/// "3 days ago", with the absolute time in UTC for the `title`.
pub(crate) fn when(seconds: i64, now_ms: i64) -> Markup {
    let future = seconds > now_ms / 1000;
    let ago = (now_ms / 1000 - seconds).abs();
    let (n, unit) = match ago {
        0..60 => (ago, "second"),
        60..3600 => (ago / 60, "minute"),
        3600..86_400 => (ago / 3600, "hour"),
        86_400..3_888_000 => (ago / 86_400, "day"),
        3_888_000..31_536_000 => (ago / 2_592_000, "month"),
        _ => (ago / 31_536_000, "year"),
    };
    let absolute = gitstratum_core::Timestamp(seconds.saturating_mul(1000)).to_rfc3339();
    let amount = if n == 1 { format!("1 {unit}") } else { format!("{n} {unit}s") };
    let text = if future { format!("in {amount}") } else { format!("{amount} ago") };
    html! { time datetime=(absolute) title=(absolute) { (text) } }
}

/// An RFC 3339 time the API answered with, as [`when`] shows it (the text itself if it does not
/// parse).
pub(crate) fn ts(rfc3339: &str, now_ms: i64) -> Markup {
    match gitstratum_core::Timestamp::parse_rfc3339(rfc3339) {
        Some(t) => when(t.0 / 1000, now_ms),
        None => html! { (rfc3339) },
    }
}

impl Ctx {
    /// The request's origin, for the audit entries of the API handlers a page calls.
    pub(crate) fn request_meta(&self) -> RequestMeta {
        RequestMeta { ip: self.meta.ip.clone(), request_id: self.meta.request_id.clone() }
    }
}

/// `s` for a URL path: every byte but unreserved ones and `/` percent-encoded, so a branch or
/// file named `a#b?c` or `%41` links to itself (axum decodes path captures back).
pub(crate) fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `s` for a URL's query: [`enc`], with `/` encoded too.
pub(crate) fn enc_query(s: &str) -> String {
    enc(s).replace('/', "%2F")
}

/// Inline markup already made safe (HTML the Markdown renderer produced from escaped events).
pub(crate) fn trusted(html: String) -> PreEscaped<String> {
    PreEscaped(html)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_name() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; gitstratum_csrf=abc; b=2"));
        assert_eq!(cookie(&h, "gitstratum_csrf"), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
    }

    #[test]
    fn csrf_tokens_must_equal_the_cookie() {
        let (token, set) = csrf_token(&HeaderMap::new());
        assert_eq!(token.len(), 32);
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(&format!("{CSRF_COOKIE}={token}")).expect("header"));
        assert!(set.expect("a new cookie").contains("SameSite=Strict"));
        assert!(csrf_ok(&h, &token));
        assert!(!csrf_ok(&h, "0".repeat(32).as_str()));
        assert!(!csrf_ok(&h, ""));
        assert!(!csrf_ok(&HeaderMap::new(), &token));
        assert_eq!(csrf_token(&h).0, token);
    }

    #[test]
    fn url_paths_are_encoded_except_slashes() {
        assert_eq!(enc("feature/a b#c?d%e"), "feature/a%20b%23c%3Fd%25e");
        assert_eq!(enc("\u{e9}t\u{e9}.md"), "%C3%A9t%C3%A9.md");
    }

    #[test]
    fn times_read_as_people_say_them() {
        let now = 1_700_000_000_000;
        assert!(when(1_700_000_000 - 3 * 86_400, now).into_string().contains(">3 days ago<"));
        assert!(when(1_700_000_000 - 60, now).into_string().contains(">1 minute ago<"));
        assert!(when(1_700_000_000 + 30 * 86_400, now).into_string().contains(">in 30 days<"));
    }
}
