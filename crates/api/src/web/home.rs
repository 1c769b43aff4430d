//! The dashboard (`/`: your repositories, organizations and recent runs) and the pages of users
//! and organizations (`/{owner}`: the repositories the viewer may see; an organization's members
//! and teams for its members).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use gitstratum_platform::Role;
use maud::html;

use super::{Ctx, when};
use crate::AppState;

/// Repositories whose latest runs the dashboard looks at (the first by name).
const DASHBOARD_REPOS: usize = 20;
/// Runs the dashboard lists.
const DASHBOARD_RUNS: usize = 10;

/// `/`: the viewer's repositories, organizations and recent runs; or a way to sign in.
pub(super) async fn dashboard(State(state): State<AppState>, ctx: Ctx) -> Response {
    let Some(p) = &ctx.viewer.0 else {
        let body = html! {
            h1 { "GitStratum" }
            p { "Git hosting and CI. " a href="/login" { "Sign in" } " to see your repositories." }
        };
        return ctx.respond(StatusCode::OK, "Home", body);
    };
    let repos = match state.store().list_accessible_repos(p.account.id).await {
        Ok(r) => r,
        Err(e) => return ctx.failed(e),
    };
    let orgs = match state.store().list_orgs(Some(p.account.id)).await {
        Ok(o) => o,
        Err(e) => return ctx.failed(e),
    };
    // The latest runs across the viewer's repositories, newest first.
    let mut runs = Vec::new();
    for repo in repos.iter().take(DASHBOARD_REPOS) {
        match state.ci().list_runs(repo.id, None, DASHBOARD_RUNS as u64, &Default::default()).await {
            Ok(page) => runs.extend(page.runs.into_iter().map(|r| (repo, r))),
            Err(e) => return ctx.failed(e),
        }
    }
    runs.sort_by_key(|(_, r)| std::cmp::Reverse(r.created_at));
    runs.truncate(DASHBOARD_RUNS);
    let now = state.now().0;
    let body = html! {
        div.dashboard {
            section {
                h2 { "Your repositories" }
                @if repos.is_empty() {
                    p { "No repositories yet. Create one with " code { "gitstratum repo create NAME" } " or the API." }
                }
                ul.repos {
                    @for r in &repos {
                        li {
                            a href={ "/" (r.owner) "/" (r.name) } { (r.owner) " / " (r.name) }
                            @if r.private { " " span.badge { "private" } }
                        }
                    }
                }
                @if !orgs.is_empty() {
                    h2 { "Your organizations" }
                    ul.repos { @for o in &orgs { li { a href={ "/" (o.name) } { (o.name) } } } }
                }
            }
            section {
                h2 { "Recent runs" }
                @if runs.is_empty() { p { "No runs yet." } }
                ol.runs {
                    @for (repo, r) in &runs {
                        @let shown = crate::runs::RunBody::new(r.clone(), repo);
                        li {
                            (super::runs::outcome(&shown.status, shown.conclusion.as_deref()))
                            " "
                            a href={ "/" (repo.owner) "/" (repo.name) "/actions/runs/" (r.id) } { strong { (shown.display_title) } }
                            div.meta {
                                (repo.owner) "/" (repo.name) " · " (shown.name) " #" (shown.run_number) " · " code { (shown.head_branch) }
                                " · " (when(r.created_at.0 / 1000, now))
                            }
                        }
                    }
                }
            }
        }
    };
    ctx.respond(StatusCode::OK, "Home", body)
}

/// `/{owner}`: a user's or organization's repositories the viewer may see; an organization's
/// members and teams when the viewer is one of its members (or a site administrator).
pub(super) async fn owner(State(state): State<AppState>, ctx: Ctx, Path(owner): Path<String>) -> Response {
    let account = match state.store().find_account(&owner).await {
        Ok(Some(a)) => a,
        Ok(None) => return ctx.not_found(),
        Err(e) => return ctx.failed(e),
    };
    let all = match state.store().list_repos(account.id).await {
        Ok(r) => r,
        Err(e) => return ctx.failed(e),
    };
    let mut repos = Vec::with_capacity(all.len());
    for repo in all {
        match crate::repos::repo_decision(&state, ctx.viewer.0.as_ref(), &repo, Role::Read).await {
            Ok(Ok(())) => repos.push(repo),
            Ok(Err(_)) => {}
            Err(e) => return ctx.failed(e),
        }
    }
    // Members and teams: only for the organization's members (the API's rule).
    let mut people = None;
    if account.is_org
        && let Some(p) = &ctx.viewer.0
        && crate::orgs::member_org(&state, p, &account.name).await.is_ok()
    {
        let members = match state.store().org_members(account.id).await {
            Ok(m) => m,
            Err(e) => return ctx.failed(e),
        };
        let teams = match state.store().list_teams(account.id).await {
            Ok(t) => t,
            Err(e) => return ctx.failed(e),
        };
        let mut with_members = Vec::with_capacity(teams.len());
        for team in teams {
            match state.store().team_members(team.id).await {
                Ok(m) => with_members.push((team, m)),
                Err(e) => return ctx.failed(e),
            }
        }
        people = Some((members, with_members));
    }
    let body = html! {
        h1 { (account.name) @if account.is_org { " " span.badge { "organization" } } }
        h2 { "Repositories" }
        @if repos.is_empty() { p { "No repositories you may see." } }
        ul.repos {
            @for r in &repos {
                li {
                    a href={ "/" (r.owner) "/" (r.name) } { (r.name) }
                    @if r.private { " " span.badge { "private" } }
                }
            }
        }
        @if let Some((members, teams)) = &people {
            h2 { "Members" }
            ul.repos {
                @for m in members { li { a href={ "/" (m.account.name) } { (m.account.name) } " " span.badge { (m.role.to_string()) } } }
            }
            h2 { "Teams" }
            @if teams.is_empty() { p { "No teams yet." } }
            @for (team, members) in teams {
                section.team {
                    h3 { (team.name) }
                    p.meta {
                        @if members.is_empty() { "No members." }
                        @for (i, m) in members.iter().enumerate() {
                            @if i > 0 { ", " }
                            a href={ "/" (m.name) } { (m.name) }
                        }
                    }
                }
            }
        }
    };
    ctx.respond(StatusCode::OK, &account.name, body)
}
