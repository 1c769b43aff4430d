//! A repository's settings, for its admins: description, visibility, collaborators and team grants, webhooks and their
//! deliveries (redeliver), secrets (names and dates; values write-only) and variables, CI
//! settings, and deleting it (confirmed by typing its name). Every change goes through the API's
//! own handler, so the rules, the audit log and the errors are the API's; a page only turns an
//! answer into a redirect (done) or the page again with the error (refused).

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use gitstratum_platform::{Repo, Role};
use maud::{Markup, html};

use super::repo::repo_header;
use super::{Ctx, csrf_ok, ts};
use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, Authenticated};

/// The repository when the viewer administers it; else the 404 page (as for a settings page on
/// GitHub: someone who may not change it does not learn it has one).
async fn administered(state: &AppState, ctx: &Ctx, owner: &str, name: &str) -> Result<(Repo, Authenticated), Response> {
    let Some(p) = ctx.viewer.0.clone() else { return Err(Redirect::to("/login").into_response()) };
    let repo = ctx.authorized_repo(state, owner, name, Role::Admin).await?;
    Ok((repo, Authenticated(p)))
}

/// Everything the settings page lists, read through the API's handlers.
struct Listed {
    collaborators: Vec<crate::repos::CollaboratorBody>,
    hooks: Vec<crate::hooks::HookBody>,
    secrets: crate::secrets::SecretList,
    variables: crate::secrets::VariableList,
    ci: crate::usage::RepoCiSettings,
    /// Whether its CI runs at all.
    ci_enabled: bool,
    /// For a repository of an organization: its team grants.
    teams: Option<Teams>,
}

struct Teams {
    grants: Vec<crate::repos::RepoTeamBody>,
    /// The organization's teams when the viewer may grant them (its owners and site admins, as
    /// the API's `PUT /orgs/{org}/teams/{team}/repos/…`); `None` for everyone else.
    grantable: Option<Vec<String>>,
}

async fn listed(state: &AppState, who: &Authenticated, repo: &Repo) -> Result<Listed, ApiError> {
    let path = || Path((repo.owner.clone(), repo.name.clone()));
    let st = || State(state.clone());
    let me = || Authenticated(who.0.clone());
    let Json(collaborators) =
        crate::repos::collaborators(st(), crate::extract::Caller(Some(who.0.clone())), path()).await?;
    let Json(hooks) = crate::hooks::list(st(), me(), path()).await?;
    let Json(secrets) = crate::secrets::list_repo_secrets(st(), me(), path()).await?;
    let Json(variables) = crate::secrets::list_repo_variables(st(), me(), path()).await?;
    let Json(ci) = crate::usage::repo_settings(st(), me(), path()).await?;
    let Json(permissions) = crate::usage::actions_permissions(st(), me(), path()).await?;
    let teams = match state.store().find_account(&repo.owner).await? {
        Some(owner) if owner.is_org => {
            let Json(grants) = crate::repos::teams(st(), crate::extract::Caller(Some(who.0.clone())), path()).await?;
            let grantable = match crate::orgs::owned_org(state, &who.0, &repo.owner).await {
                Ok(org) => Some(state.store().list_teams(org.id).await?.into_iter().map(|t| t.name).collect()),
                Err(_) => None,
            };
            Some(Teams { grants, grantable })
        }
        _ => None,
    };
    Ok(Listed { collaborators, hooks, secrets, variables, ci, ci_enabled: permissions.enabled, teams })
}

/// A labelled choice of repository role (`permission`), `write` chosen.
fn role_field(id: &str) -> Markup {
    html! {
        label for=(id) { "Role" }
        select id=(id) name="permission" {
            @for role in ["read", "triage", "write", "maintain", "admin"] {
                option value=(role) selected[role == "write"] { (role) }
            }
        }
    }
}

async fn settings_page(
    state: &AppState,
    ctx: &Ctx,
    repo: &Repo,
    who: &Authenticated,
    status: StatusCode,
    error: Option<String>,
) -> Response {
    let listed = match listed(state, who, repo).await {
        Ok(l) => l,
        Err(e) => return ctx.failed(e.message),
    };
    let now = state.now().0;
    let base = format!("/{}/{}/settings", repo.owner, repo.name);
    let full = format!("{}/{}", repo.owner, repo.name);
    let csrf = html! { input type="hidden" name="csrf" value=(ctx.csrf); };
    let days = |d: Option<i64>| d.map(|d| d.to_string()).unwrap_or_default();
    let body = html! {
        (repo_header(ctx, repo, "settings"))
        @if let Some(e) = &error { p.error role="alert" { (e) } }
        section.settings id="general" {
            h2 { "Description" }
            form.row method="post" action={ (base) "/description" } {
                (csrf)
                label for="description" { "Description" }
                input id="description" type="text" name="description" maxlength=(gitstratum_platform::MAX_DESCRIPTION_CHARS) value=(repo.description) placeholder="What this repository is";
                button type="submit" { "Save" }
            }
            h2 { "Visibility" }
            p { "This repository is " strong { (if repo.private { "private" } else { "public" }) } "." }
            (ctx.button(
                &format!("{base}/visibility"),
                Some(("private", if repo.private { "false" } else { "true" })),
                if repo.private { "Make public" } else { "Make private" },
                None,
            ))
        }
        section.settings id="collaborators" {
            h2 { "Collaborators" }
            @if listed.collaborators.is_empty() { p { "No collaborators yet." } }
            table.refs {
                tbody {
                    @for c in &listed.collaborators {
                        tr {
                            td { a href={ "/" (c.username) } { (c.username) } }
                            td { (c.permission) }
                            td {
                                (ctx.button(&format!("{base}/remove-collaborator"), Some(("username", &c.username)), "Remove", Some(&format!("Remove {}", c.username))))
                            }
                        }
                    }
                }
            }
            form.row method="post" action={ (base) "/collaborators" } {
                (csrf)
                label for="collaborator" { "Username" }
                input id="collaborator" type="text" name="username" required;
                (role_field("permission"))
                button type="submit" { "Add or change" }
            }
        }
        @if let Some(teams) = &listed.teams {
            section.settings id="teams" {
                h2 { "Teams" }
                @if teams.grants.is_empty() { p { "No team has been granted access." } }
                table.refs {
                    tbody {
                        @for t in &teams.grants {
                            tr {
                                td { (t.name) }
                                td { (t.permission) }
                                td {
                                    @if teams.grantable.is_some() {
                                        (ctx.button(&format!("{base}/remove-team"), Some(("team", &t.name)), "Remove", Some(&format!("Remove team {}", t.name))))
                                    }
                                }
                            }
                        }
                    }
                }
                @match &teams.grantable {
                    Some(names) if !names.is_empty() => {
                        form.row method="post" action={ (base) "/teams" } {
                            (csrf)
                            label for="team" { "Team" }
                            select id="team" name="team" {
                                @for name in names { option value=(name) { (name) } }
                            }
                            (role_field("team-permission"))
                            button type="submit" { "Grant or change" }
                        }
                    }
                    Some(_) => { p.meta { (repo.owner) " has no teams yet." } }
                    None => { p.meta { "Team access is granted by the owners of " (repo.owner) "." } }
                }
            }
        }
        section.settings id="hooks" {
            h2 { "Webhooks" }
            @if listed.hooks.is_empty() { p { "No webhooks yet." } }
            table.refs {
                tbody {
                    @for h in &listed.hooks {
                        tr {
                            td { a href={ (base) "/hooks/" (h.id) } { code { (h.url) } } }
                            td { (h.events.join(", ")) }
                            td { @if h.has_secret { "signed" } @else { "unsigned" } }
                            td {
                                (ctx.button(&format!("{base}/delete-hook"), Some(("id", &h.id.to_string())), "Delete", Some(&format!("Delete the webhook to {}", h.url))))
                            }
                        }
                    }
                }
            }
            form.stack method="post" action={ (base) "/hooks" } {
                (csrf)
                label for="hook-url" { "Payload URL" }
                input id="hook-url" type="text" name="url" placeholder="https://ci.example.com/hook" required;
                label for="hook-secret" { "Secret (signs each delivery; optional)" }
                input id="hook-secret" type="password" name="secret" autocomplete="off";
                fieldset {
                    legend { "Events" }
                    @for event in crate::hooks::EVENTS {
                        div {
                            input id={ "event-" (event) } type="checkbox" name="events" value=(event) checked[event == "push"];
                            " " label for={ "event-" (event) } { code { (event) } }
                        }
                    }
                }
                button type="submit" { "Add webhook" }
            }
        }
        section.settings id="secrets" {
            h2 { "Secrets" }
            p.meta { "Values are sealed when saved and never shown again; jobs see them as " code { "secrets.NAME" } "." }
            @if listed.secrets.secrets.is_empty() { p { "No secrets yet." } }
            table.refs {
                tbody {
                    @for s in &listed.secrets.secrets {
                        tr {
                            td { code { (s.name) } }
                            td { "updated " (ts(&s.updated_at, now)) }
                            td {
                                (ctx.button(&format!("{base}/delete-secret"), Some(("name", &s.name)), "Delete", Some(&format!("Delete secret {}", s.name))))
                            }
                        }
                    }
                }
            }
            form.stack method="post" action={ (base) "/secrets" } {
                (csrf)
                label for="secret-name" { "Name" }
                input id="secret-name" type="text" name="name" required pattern="[A-Za-z_][A-Za-z0-9_]*";
                label for="secret-value" { "Value" }
                textarea id="secret-value" name="value" rows="3" required autocomplete="off" {}
                button type="submit" { "Save secret" }
            }
        }
        section.settings id="variables" {
            h2 { "Variables" }
            @if listed.variables.variables.is_empty() { p { "No variables yet." } }
            table.refs {
                tbody {
                    @for v in &listed.variables.variables {
                        tr {
                            td { code { (v.name) } }
                            td { code { (v.value) } }
                            td { "updated " (ts(&v.updated_at, now)) }
                            td {
                                (ctx.button(&format!("{base}/delete-variable"), Some(("name", &v.name)), "Delete", Some(&format!("Delete variable {}", v.name))))
                            }
                        }
                    }
                }
            }
            form.stack method="post" action={ (base) "/variables" } {
                (csrf)
                label for="variable-name" { "Name" }
                input id="variable-name" type="text" name="name" required pattern="[A-Za-z_][A-Za-z0-9_]*";
                label for="variable-value" { "Value" }
                input id="variable-value" type="text" name="value" required;
                button type="submit" { "Save variable" }
            }
        }
        section.settings id="pulls" {
            h2 { "Pull requests" }
            form.stack method="post" action={ (base) "/merge" } {
                (csrf)
                @for (field, checked, label) in [
                    ("allow_merge_commit", repo.merge.allow_merge_commit, "Allow merge commits"),
                    ("allow_squash_merge", repo.merge.allow_squash_merge, "Allow squash merging"),
                    ("allow_rebase_merge", repo.merge.allow_rebase_merge, "Allow rebase merging"),
                    ("delete_branch_on_merge", repo.merge.delete_branch_on_merge, "Delete head branches once merged"),
                ] {
                    div {
                        input id=(field) type="checkbox" name=(field) value="true" checked[checked];
                        " " label for=(field) { (label) }
                    }
                }
                button type="submit" { "Save" }
            }
        }
        section.settings id="ci" {
            h2 { "CI" }
            form.stack method="post" action={ (base) "/actions" } {
                (csrf)
                div {
                    input id="ci-enabled" type="checkbox" name="enabled" value="true" checked[listed.ci_enabled];
                    " " label for="ci-enabled" { "Pushes and pull requests start this repository's workflows (a fork starts with this off)" }
                }
                button type="submit" { "Save" }
            }
            form.stack method="post" action={ (base) "/ci" } {
                (csrf)
                label for="log-days" { "Keep job logs for (days; empty: the site's default)" }
                input id="log-days" type="number" name="log_retention_days" min="1" max="36500" value=(days(listed.ci.log_retention_days));
                label for="artifact-days" { "Keep artifacts at most (days; empty: the site's default)" }
                input id="artifact-days" type="number" name="artifact_retention_days" min="1" max="36500" value=(days(listed.ci.artifact_retention_days));
                div {
                    input id="actions-shared" type="checkbox" name="actions_shared" value="true" checked[listed.ci.actions_shared];
                    " " label for="actions-shared" { "Any repository here may use this repository's actions and reusable workflows" }
                }
                button type="submit" { "Save CI settings" }
            }
        }
        section.settings.danger id="delete" {
            h2 { "Delete this repository" }
            p { "Its Git data, runs, logs, artifacts, webhooks and secrets go with it. This cannot be undone." }
            form.stack method="post" action={ (base) "/delete" } {
                (csrf)
                label for="confirm" { "Type " code { (full) } " to confirm" }
                input id="confirm" type="text" name="confirm" required autocomplete="off";
                button.danger type="submit" { "Delete this repository" }
            }
        }
    };
    ctx.respond(status, &format!("Settings · {full}"), body)
}

/// `/{owner}/{repo}/settings`.
pub(super) async fn page(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((owner, name)): Path<(String, String)>,
) -> Response {
    let (repo, who) = match administered(&state, &ctx, &owner, &name).await {
        Ok(r) => r,
        Err(page) => return page,
    };
    settings_page(&state, &ctx, &repo, &who, StatusCode::OK, None).await
}

fn days_field(form: &HashMap<String, String>, field: &'static str) -> Result<Option<i64>, ApiError> {
    match form.get(field).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| ApiError::validation(field, "a number of days")),
    }
}

/// `POST /{owner}/{repo}/settings/{action}`: one change, through the API handler that makes it.
pub(super) async fn act(
    State(state): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
    Path((owner, name, action)): Path<(String, String, String)>,
    axum::Form(pairs): axum::Form<Vec<(String, String)>>,
) -> Response {
    let (repo, who) = match administered(&state, &ctx, &owner, &name).await {
        Ok(r) => r,
        Err(page) => return page,
    };
    let events: Vec<String> = pairs.iter().filter(|(k, _)| k == "events").map(|(_, v)| v.clone()).collect();
    let form: HashMap<String, String> = pairs.into_iter().collect();
    let field = |k: &str| form.get(k).cloned().unwrap_or_default();
    if !csrf_ok(&headers, &field("csrf")) {
        let expired = Some("The form expired; try again.".to_owned());
        return settings_page(&state, &ctx, &repo, &who, StatusCode::FORBIDDEN, expired).await;
    }
    let (o, n) = (repo.owner.clone(), repo.name.clone());
    let st = || State(state.clone());
    let me = || Authenticated(who.0.clone());
    let settings = format!("/{o}/{n}/settings");
    let result: Result<String, ApiError> = match action.as_str() {
        "visibility" => {
            let body = crate::repos::UpdateRepo { private: Some(field("private") == "true"), ..Default::default() };
            crate::repos::update(st(), me(), ctx.request_meta(), Path((o, n)), ApiJson(body)).await.map(|_| "#general")
        }
        "description" => {
            let body = crate::repos::UpdateRepo { description: Some(field("description")), ..Default::default() };
            crate::repos::update(st(), me(), ctx.request_meta(), Path((o, n)), ApiJson(body)).await.map(|_| "#general")
        }
        "collaborators" => {
            let body = crate::repos::SetCollaborator { permission: field("permission") };
            let user = field("username").trim().to_owned();
            crate::repos::set_collaborator(st(), me(), ctx.request_meta(), Path((o, n, user)), ApiJson(body))
                .await
                .map(|_| "#collaborators")
        }
        "remove-collaborator" => {
            crate::repos::remove_collaborator(st(), me(), ctx.request_meta(), Path((o, n, field("username"))))
                .await
                .map(|_| "#collaborators")
        }
        "teams" | "remove-team" => {
            let path = Path((o.clone(), field("team"), o, n));
            if action == "teams" {
                let body = crate::keys_teams::TeamGrant { permission: field("permission") };
                crate::keys_teams::set_team_repo(st(), me(), ctx.request_meta(), path, ApiJson(body))
                    .await
                    .map(|_| "#teams")
            } else {
                crate::keys_teams::remove_team_repo(st(), me(), ctx.request_meta(), path).await.map(|_| "#teams")
            }
        }
        "hooks" => {
            let secret = Some(field("secret")).filter(|s| !s.is_empty());
            let events = if events.is_empty() { vec!["push".to_owned()] } else { events };
            let body = crate::hooks::CreateHook { url: field("url").trim().to_owned(), secret, events };
            crate::hooks::create(st(), me(), ctx.request_meta(), Path((o, n)), ApiJson(body)).await.map(|_| "#hooks")
        }
        "delete-hook" => match field("id").parse() {
            Ok(id) => crate::hooks::delete(st(), me(), ctx.request_meta(), Path((o, n, id))).await.map(|_| "#hooks"),
            Err(_) => Err(ApiError::validation("id", "a webhook id")),
        },
        "secrets" => {
            let body =
                crate::secrets::PutSecret { value: field("value"), visibility: None, selected_repositories: None };
            crate::secrets::put_repo_secret(st(), me(), ctx.request_meta(), Path((o, n, field("name"))), ApiJson(body))
                .await
                .map(|_| "#secrets")
        }
        "delete-secret" => {
            crate::secrets::delete_repo_secret(st(), me(), ctx.request_meta(), Path((o, n, field("name"))))
                .await
                .map(|_| "#secrets")
        }
        "variables" => {
            let body = crate::secrets::PutVariable { value: field("value") };
            crate::secrets::put_repo_variable(
                st(),
                me(),
                ctx.request_meta(),
                Path((o, n, field("name"))),
                ApiJson(body),
            )
            .await
            .map(|_| "#variables")
        }
        "delete-variable" => {
            crate::secrets::delete_repo_variable(st(), me(), ctx.request_meta(), Path((o, n, field("name"))))
                .await
                .map(|_| "#variables")
        }
        "ci" => match (days_field(&form, "log_retention_days"), days_field(&form, "artifact_retention_days")) {
            (Ok(log_retention_days), Ok(artifact_retention_days)) => {
                let body = crate::usage::RepoCiSettings {
                    log_retention_days,
                    artifact_retention_days,
                    actions_shared: field("actions_shared") == "true",
                };
                crate::usage::set_repo_settings(st(), me(), ctx.request_meta(), Path((o, n)), ApiJson(body))
                    .await
                    .map(|_| "#ci")
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
        },
        "merge" => {
            let on = |k: &str| Some(field(k) == "true");
            let body = crate::repos::UpdateRepo {
                allow_merge_commit: on("allow_merge_commit"),
                allow_squash_merge: on("allow_squash_merge"),
                allow_rebase_merge: on("allow_rebase_merge"),
                delete_branch_on_merge: on("delete_branch_on_merge"),
                ..Default::default()
            };
            crate::repos::update(st(), me(), ctx.request_meta(), Path((o, n)), ApiJson(body)).await.map(|_| "#pulls")
        }
        "actions" => {
            let body =
                crate::usage::ActionsPermissions { enabled: field("enabled") == "true", allowed_actions: "all".into() };
            crate::usage::set_actions_permissions(st(), me(), ctx.request_meta(), Path((o, n)), ApiJson(body))
                .await
                .map(|_| "#ci")
        }
        "delete" => {
            if field("confirm").trim() != format!("{o}/{n}") {
                Err(ApiError::validation("confirm", format!("Type {o}/{n} to delete this repository.")))
            } else {
                match crate::repos::delete(st(), me(), ctx.request_meta(), Path((o.clone(), n))).await {
                    Ok(_) => return Redirect::to(&format!("/{o}")).into_response(),
                    Err(e) => Err(e),
                }
            }
        }
        _ => return ctx.not_found(),
    }
    .map(|anchor| format!("{settings}{anchor}"));
    match result {
        Ok(to) => Redirect::to(&to).into_response(),
        Err(e) if e.status.is_client_error() => {
            // The change may have made the viewer no admin (visibility never does; a removed
            // collaborator could be themself): the page is read again under the same policy.
            match administered(&state, &ctx, &owner, &name).await {
                Ok((repo, who)) => settings_page(&state, &ctx, &repo, &who, e.status, Some(e.message)).await,
                Err(page) => page,
            }
        }
        Err(e) => ctx.failed(e.message),
    }
}

/// `/{owner}/{repo}/settings/hooks/{id}`: a webhook's recent deliveries, each with a button to
/// send it again.
pub(super) async fn hook(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((owner, name, id)): Path<(String, String, i64)>,
) -> Response {
    let (repo, who) = match administered(&state, &ctx, &owner, &name).await {
        Ok(r) => r,
        Err(page) => return page,
    };
    hook_page(&state, &ctx, &repo, who, id, StatusCode::OK, None).await
}

async fn hook_page(
    state: &AppState,
    ctx: &Ctx,
    repo: &Repo,
    who: Authenticated,
    id: i64,
    status: StatusCode,
    note: Option<String>,
) -> Response {
    let path = Path((repo.owner.clone(), repo.name.clone(), id));
    let deliveries = match crate::hooks::deliveries(State(state.clone()), who, path).await {
        Ok(Json(d)) => d,
        Err(e) if e.status.is_client_error() => return ctx.not_found(),
        Err(e) => return ctx.failed(e.message),
    };
    let now = state.now().0;
    let base = format!("/{}/{}/settings/hooks/{id}", repo.owner, repo.name);
    let body = html! {
        (repo_header(ctx, repo, "settings"))
        p { a href={ "/" (repo.owner) "/" (repo.name) "/settings#hooks" } { "← Webhooks" } }
        h2 { "Recent deliveries" }
        @if let Some(n) = &note { p role="status" { (n) } }
        @if deliveries.is_empty() { p { "Nothing was delivered yet." } }
        table.refs {
            thead { tr { th { "Event" } th { "State" } th { "Response" } th { "When" } th {} } }
            tbody {
                @for d in &deliveries {
                    tr {
                        td { code { (d.event) } br; span.meta { (d.guid) } }
                        td {
                            span class={ "state " (match d.state.as_str() { "delivered" => "ok", "failed" => "bad", _ => "running" }) } { (d.state) }
                            " · " (d.attempts) " attempts"
                        }
                        td {
                            @if let Some(code) = d.status_code { (code) }
                            @if let Some(e) = &d.error { " " span.error { (e) } }
                            @if let Some(ms) = d.duration_ms { " · " (ms) " ms" }
                        }
                        td { (ts(&d.created_at, now)) }
                        td {
                            (ctx.button(&format!("{base}/redeliver"), Some(("delivery", &d.id.to_string())), "Redeliver", None))
                        }
                    }
                }
            }
        }
    };
    ctx.respond(status, &format!("Webhook deliveries · {}/{}", repo.owner, repo.name), body)
}

#[derive(serde::Deserialize)]
pub(super) struct RedeliverForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    delivery: i64,
}

/// `POST /{owner}/{repo}/settings/hooks/{id}/redeliver` (`csrf`, `delivery`).
pub(super) async fn redeliver(
    State(state): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
    Path((owner, name, id)): Path<(String, String, i64)>,
    axum::Form(form): axum::Form<RedeliverForm>,
) -> Response {
    let (repo, who) = match administered(&state, &ctx, &owner, &name).await {
        Ok(r) => r,
        Err(page) => return page,
    };
    if !csrf_ok(&headers, &form.csrf) {
        let note = Some("The form expired; try again.".to_owned());
        return hook_page(&state, &ctx, &repo, who, id, StatusCode::FORBIDDEN, note).await;
    }
    let path = Path((repo.owner.clone(), repo.name.clone(), id, form.delivery));
    match crate::hooks::redeliver(State(state.clone()), Authenticated(who.0.clone()), path).await {
        Ok(_) => Redirect::to(&format!("/{}/{}/settings/hooks/{id}", repo.owner, repo.name)).into_response(),
        Err(e) if e.status.is_client_error() => {
            hook_page(&state, &ctx, &repo, who, id, e.status, Some(e.message)).await
        }
        Err(e) => ctx.failed(e.message),
    }
}
