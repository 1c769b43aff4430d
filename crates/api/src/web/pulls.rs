//! A repository's pull requests: the list, a pull request's conversation (its description,
//! checks, the merge box, the timeline, reviews) and its files (the diff with line comments
//! under their lines), and the forms that open, review, comment on, merge, close and reopen
//! them, and fork a repository. Every read and every change goes through the API's handler for
//! it (same rules, same messages).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use gitstratum_platform::Role;
use maud::{Markup, html};

use super::repo::{Notes, proposal, repo_header};
use super::{Ctx, csrf_ok, enc, markdown, trusted, ts};
use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, Authenticated, Caller};
use crate::pulls::PullBody;

/// A pull request's state as a badge: open, draft, merged or closed.
fn badge(p: &PullBody) -> Markup {
    let (class, word) = if p.merged {
        ("merged", "Merged")
    } else if p.state == "closed" {
        ("closed", "Closed")
    } else if p.draft {
        ("draft", "Draft")
    } else {
        ("open", "Open")
    };
    html! { span class={ "badge state-" (class) } { (word) } }
}

/// An API refusal as the page shows it: the 404 page for what the viewer may not see, else the
/// error page with the API's message.
fn refused(ctx: &Ctx, e: ApiError) -> Response {
    if e.status == StatusCode::NOT_FOUND || e.status == StatusCode::UNAUTHORIZED {
        ctx.not_found()
    } else if e.status.is_client_error() {
        ctx.respond(e.status, "Pull requests", html! { p.error role="alert" { (e.message) } })
    } else {
        ctx.failed(e.message)
    }
}

#[derive(serde::Deserialize)]
pub(super) struct ListQuery {
    state: Option<String>,
    page: Option<i64>,
}

/// `/{owner}/{repo}/pulls?state=open|closed|all`.
pub(super) async fn list(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((owner, name)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
) -> Response {
    let repo = match ctx.readable_repo(&state, &owner, &name).await {
        Ok(r) => r,
        Err(page) => return page,
    };
    let which = match q.state.as_deref() {
        Some("closed") => "closed",
        Some("all") => "all",
        _ => "open",
    };
    let page = q.page.unwrap_or(1).clamp(1, 1000);
    let query = crate::pulls::ListQuery { state: Some(which.to_owned()), page: Some(page), per_page: Some(30) };
    let listed = crate::pulls::list(
        State(state.clone()),
        Caller(ctx.viewer.0.clone()),
        Path((repo.owner.clone(), repo.name.clone())),
        Query(query),
    )
    .await;
    let pulls = match listed {
        Ok(axum::Json(list)) => list,
        Err(e) => return refused(&ctx, e),
    };
    let now = state.now().0;
    let base = format!("/{}/{}", repo.owner, repo.name);
    let body = html! {
        (repo_header(&ctx, &repo, "pulls"))
        div.bar {
            nav.filters aria-label="Which pull requests" {
                @for (key, label) in [("open", "Open"), ("closed", "Closed"), ("all", "All")] {
                    a href={ (base) "/pulls?state=" (key) } aria-current=[(key == which).then_some("page")] { (label) }
                }
            }
            a href={ (base) "/branches" } { "New pull request: compare a branch" }
        }
        @if pulls.is_empty() { p { "No " @if which != "all" { (which) " " } "pull requests." } }
        ol.pulls {
            @for p in &pulls {
                li {
                    (badge(p)) " "
                    a.summary href={ (base) "/pull/" (p.number) } { (p.title) }
                    div.meta {
                        "#" (p.number) " · " (p.head.label) " → " (p.base.ref_) " · opened by " (p.user.login) " "
                        (ts(&p.created_at, now))
                    }
                }
            }
        }
        nav.pages aria-label="Pages" {
            @if page > 1 { a href={ (base) "/pulls?state=" (which) "&page=" (page - 1) } rel="prev" { "Newer" } }
            @if pulls.len() == 30 { a href={ (base) "/pulls?state=" (which) "&page=" (page + 1) } rel="next" { "Older" } }
        }
    };
    ctx.respond(StatusCode::OK, &format!("Pull requests · {}/{}", repo.owner, repo.name), body)
}

/// The tabs of one pull request.
fn pull_tabs(base: &str, number: i64, tab: &str) -> Markup {
    html! {
        nav.tabs.pull-tabs aria-label="Pull request" {
            a href={ (base) "/pull/" (number) } aria-current=[(tab == "conversation").then_some("page")] { "Conversation" }
            a href={ (base) "/pull/" (number) "/files" } aria-current=[(tab == "files").then_some("page")] { "Files changed" }
        }
    }
}

fn pull_head(p: &PullBody, now: i64) -> Markup {
    html! {
        h2 { (p.title) " " span.number { "#" (p.number) } }
        p.meta {
            (badge(p)) " " strong { (p.user.login) } " wants to merge " code { (p.head.label) } " into " code { (p.base.ref_) }
            " · opened " (ts(&p.created_at, now))
        }
    }
}

/// The repository, when the viewer may read it, and its pull request `number` as the API reads
/// it; else the page to answer with.
async fn readable_pull(
    state: &AppState,
    ctx: &Ctx,
    owner: &str,
    name: &str,
    number: i64,
) -> Result<(gitstratum_platform::Repo, PullBody), Response> {
    let repo = ctx.readable_repo(state, owner, name).await?;
    let path = Path((repo.owner.clone(), repo.name.clone(), number));
    match crate::pulls::get(State(state.clone()), Caller(ctx.viewer.0.clone()), path).await {
        Ok(axum::Json(pull)) => Ok((repo, pull)),
        Err(e) => Err(refused(ctx, e)),
    }
}

/// `/{owner}/{repo}/pull/{number}`: the conversation.
pub(super) async fn page(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((owner, name, number)): Path<(String, String, i64)>,
) -> Response {
    conversation(&state, &ctx, &owner, &name, number, StatusCode::OK, None).await
}

async fn conversation(
    state: &AppState,
    ctx: &Ctx,
    owner: &str,
    name: &str,
    number: i64,
    status: StatusCode,
    error: Option<String>,
) -> Response {
    let (repo, pull) = match readable_pull(state, ctx, owner, name, number).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let (o, n) = (repo.owner.clone(), repo.name.clone());
    let st = || State(state.clone());
    let caller = || Caller(ctx.viewer.0.clone());
    let checks = crate::pull_timeline::checks(st(), caller(), Path((o.clone(), n.clone(), number))).await;
    let timeline = crate::pull_timeline::timeline(st(), caller(), Path((o.clone(), n.clone(), number))).await;
    let (checks, timeline) = match (checks, timeline) {
        (Ok(axum::Json(c)), Ok(axum::Json(t))) => (c, t),
        (Err(e), _) | (_, Err(e)) => return refused(ctx, e),
    };
    let now = state.now().0;
    let base = format!("/{o}/{n}");
    let action = |what: &str| format!("{base}/pull/{number}/{what}");
    let may_write = ctx.may(&repo, Role::Write);
    let is_author = ctx.viewer.0.as_ref().is_some_and(|v| v.account.name == pull.user.login);
    let full = format!("{o}/{n}");
    let md_base = markdown::Base { repo: &full, git_ref: &pull.head.sha, dir: "" };
    let description = match pull.body.as_deref() {
        Some(text) => trusted(markdown::render(text, &md_base)),
        None => trusted("<p class=\"note\">No description.</p>".to_owned()),
    };
    let body = html! {
        (repo_header(ctx, &repo, "pulls"))
        (pull_head(&pull, now))
        (pull_tabs(&base, number, "conversation"))
        @if let Some(e) = &error { p.error role="alert" { (e) } }
        section.description { (description) }
        @if !pull.requested_reviewers.is_empty() {
            p.meta { "Review requested from " @for (i, r) in pull.requested_reviewers.iter().enumerate() { @if i > 0 { ", " } strong { (r.login) } } }
        }
        section.checks aria-label="Checks" {
            h3 { "Checks " span class={ "badge check-" (checks.state) } { (checks.state) } }
            @if checks.check_runs.is_empty() { p.note { "No CI ran for this head." } }
            ul {
                @for c in &checks.check_runs {
                    li {
                        span class={ "badge check-" (c.conclusion.as_deref().unwrap_or(&c.status)) } { (c.conclusion.as_deref().unwrap_or(&c.status)) } " "
                        a href={ (base) "/actions/runs/" (c.run_id) "/job/" (c.job_id) } { (c.workflow) " / " (c.name) }
                        " (" (c.event) ")"
                    }
                }
            }
        }
        section.merge-box aria-label="Merging" {
            @if pull.merged {
                p { "Merged by " (pull.merged_by.as_ref().map_or("", |u| u.login.as_str())) " " @if let Some(at) = &pull.merged_at { (ts(at, now)) } }
            } @else if pull.state == "closed" {
                p { "Closed without merging." }
            } @else {
                @match pull.mergeable_state.as_str() {
                    "clean" => p.ok { "This branch has no conflicts with the base branch." },
                    "dirty" => div {
                        p.error { "This branch has conflicts that must be resolved:" }
                        ul { @for f in &pull.conflicting_files { li { code { (f) } } } }
                    },
                    "blocked" => p.error { "Merging is blocked: " (pull.blocked_by.as_deref().unwrap_or("a branch protection rule")) },
                    "behind" => p.error { "This branch is out of date with the base branch: " (pull.blocked_by.as_deref().unwrap_or("")) },
                    "draft" => p.note { "This pull request is still a draft." },
                    _ => p.note { "Checking whether it merges cleanly…" },
                }
                @if may_write && pull.mergeable == Some(true) {
                    form.inline method="post" action=(action("merge")) {
                        input type="hidden" name="csrf" value=(ctx.csrf);
                        input type="hidden" name="sha" value=(pull.head.sha);
                        label for="merge-method" { "Method " }
                        select id="merge-method" name="merge_method" {
                            @if repo.merge.allow_merge_commit { option value="merge" { "Create a merge commit" } }
                            @if repo.merge.allow_squash_merge { option value="squash" { "Squash and merge" } }
                            @if repo.merge.allow_rebase_merge { option value="rebase" { "Rebase and merge" } }
                        }
                        " "
                        button type="submit" { "Merge pull request" }
                    }
                }
            }
            @if may_write && pull.state == "closed" && pull.head.repo.as_ref().is_some_and(|r| r.id == repo.id) && pull.head.ref_ != repo.default_branch {
                (ctx.button(&action("delete-branch"), None, "Delete branch", Some("Delete the head branch")))
            }
            @if (may_write || is_author) && !pull.merged {
                @if pull.state == "open" { (ctx.button(&action("close"), None, "Close pull request", None)) }
                @else { (ctx.button(&action("reopen"), None, "Reopen pull request", None)) }
            }
        }
        section.timeline aria-label="Timeline" {
            h3 { "Timeline" }
            @if timeline.is_empty() { p.note { "Nothing has happened to it yet." } }
            ol.timeline {
                @for item in &timeline {
                    li class={ "event-" (item.event) } {
                        strong { (item.actor.as_ref().map_or("someone", |a| a.login.as_str())) } " "
                        @match item.event.as_str() {
                            "committed" => { "pushed " code { (short(item.sha.as_deref())) } }
                            "head_ref_force_pushed" => { "force-pushed from " code { (short(item.before.as_deref())) } " to " code { (short(item.sha.as_deref())) } }
                            "reviewed" => {
                                @match item.state.as_deref() {
                                    Some("approved") => "approved these changes",
                                    Some("changes_requested") => "requested changes",
                                    _ => "reviewed",
                                }
                            }
                            "line-commented" => { "commented on " code { (item.path.as_deref().unwrap_or("")) } @if item.line.is_none() { " (outdated)" } }
                            "workflow_run" => {
                                "ran " (item.body.as_deref().unwrap_or("a workflow")) ": "
                                (item.conclusion.as_deref().or(item.state.as_deref()).unwrap_or(""))
                                @if let Some(id) = item.id { " " a href={ (base) "/actions/runs/" (id) } { "details" } }
                            }
                            "merged" => { "merged this pull request" }
                            "closed" => { "closed this pull request" }
                            "reopened" => { "reopened this pull request" }
                            "converted_to_draft" => { "marked this pull request as a draft" }
                            "ready_for_review" => { "marked this pull request ready for review" }
                            "renamed" => { "edited this pull request" }
                            other => { (other) }
                        }
                        " " (ts(&item.created_at, now))
                        @if item.event != "workflow_run" && let Some(text) = &item.body {
                            div.comment { (trusted(markdown::render(text, &md_base))) }
                        }
                    }
                }
            }
        }
        @if ctx.viewer.0.is_some() && pull.state == "open" {
            form.stack method="post" action=(action("review")) {
                h3 { "Review" }
                input type="hidden" name="csrf" value=(ctx.csrf);
                input type="hidden" name="commit_id" value=(pull.head.sha);
                label for="review-body" { "Comment (Markdown)" }
                textarea id="review-body" name="body" rows="4" {}
                fieldset {
                    legend { "Verdict" }
                    label { input type="radio" name="event" value="COMMENT" checked; " Comment" }
                    @if !is_author {
                        label { input type="radio" name="event" value="APPROVE"; " Approve" }
                        label { input type="radio" name="event" value="REQUEST_CHANGES"; " Request changes" }
                    }
                }
                button type="submit" { "Submit review" }
            }
            @if may_write || is_author {
                form.inline method="post" action=(action("reviewers")) {
                    input type="hidden" name="csrf" value=(ctx.csrf);
                    label for="reviewers" { "Ask for a review from " }
                    input id="reviewers" type="text" name="reviewers" placeholder="user, user" required;
                    " "
                    button type="submit" { "Request" }
                }
            }
        }
    };
    ctx.respond(status, &format!("{} · Pull request #{number} · {o}/{n}", pull.title), body)
}

fn short(sha: Option<&str>) -> &str {
    sha.map_or("", |s| &s[..s.len().min(7)])
}

/// `/{owner}/{repo}/pull/{number}/files`: the diff, line comments under their lines (those no
/// longer on a line of the diff listed above it), and the form to comment on a line.
pub(super) async fn tab(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((owner, name, number, tab)): Path<(String, String, i64, String)>,
) -> Response {
    if tab != "files" {
        return ctx.not_found();
    }
    files(&state, &ctx, &owner, &name, number, StatusCode::OK, None).await
}

async fn files(
    state: &AppState,
    ctx: &Ctx,
    owner: &str,
    name: &str,
    number: i64,
    status: StatusCode,
    error: Option<String>,
) -> Response {
    let (repo, pull) = match readable_pull(state, ctx, owner, name, number).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let (o, n) = (repo.owner.clone(), repo.name.clone());
    let st = || State(state.clone());
    let caller = || Caller(ctx.viewer.0.clone());
    let comments = match crate::pull_comments::list(st(), caller(), Path((o.clone(), n.clone(), number))).await {
        Ok(axum::Json(c)) => c,
        Err(e) => return refused(ctx, e),
    };
    let now = state.now().0;
    let full = format!("{o}/{n}");
    let md_base = markdown::Base { repo: &full, git_ref: &pull.head.sha, dir: "" };
    // Threads: each comment that answers none, with its answers, under the line it is on now.
    let mut answers: HashMap<i64, Vec<&crate::pull_comments::CommentBody>> = HashMap::new();
    for c in &comments {
        if let Some(parent) = c.in_reply_to_id {
            answers.entry(parent).or_default().push(c);
        }
    }
    let thread = |c: &crate::pull_comments::CommentBody| -> Markup {
        html! {
            div.thread id={ "discussion_r" (c.id) } {
                @for one in std::iter::once(c).chain(answers.get(&c.id).into_iter().flatten().copied()) {
                    div.comment {
                        p.meta { strong { (one.user.login) } " " (ts(&one.created_at, now)) }
                        (trusted(markdown::render(&one.body, &md_base)))
                    }
                }
            }
        }
    };
    let mut notes = Notes::new();
    let mut elsewhere = Vec::new();
    for c in comments.iter().filter(|c| c.in_reply_to_id.is_none()) {
        match c.line {
            Some(line) if c.side == "RIGHT" && c.commit_id == pull.head.sha => {
                let key = (c.path.clone(), u32::try_from(line).unwrap_or(0));
                let markup = match notes.remove(&key) {
                    Some(before) => html! { (before) (thread(c)) },
                    None => thread(c),
                };
                notes.insert(key, markup);
            }
            _ => elsewhere.push(c),
        }
    }
    let (diff, paths) = match proposal(state, ctx, &repo, &pull.base.sha, &pull.head.sha, &notes).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let base = format!("/{o}/{n}");
    let body = html! {
        (repo_header(ctx, &repo, "pulls"))
        (pull_head(&pull, now))
        (pull_tabs(&base, number, "files"))
        @if let Some(e) = &error { p.error role="alert" { (e) } }
        @if !elsewhere.is_empty() {
            section.elsewhere {
                h3 { "Comments not on a line of this diff" }
                @for c in &elsewhere {
                    p.meta {
                        code { (c.path) } " line " (c.original_line) " of " code { (short(Some(&c.original_commit_id))) }
                        @if c.line.is_none() { " " span.badge { "outdated" } }
                        @if c.side == "LEFT" { " (the base's side)" }
                    }
                    (thread(c))
                }
            }
        }
        (diff)
        @if ctx.viewer.0.is_some() && pull.state == "open" {
            form.stack method="post" action={ (base) "/pull/" (number) "/comment" } {
                h3 { "Comment on a line" }
                input type="hidden" name="csrf" value=(ctx.csrf);
                input type="hidden" name="commit_id" value=(pull.head.sha);
                label for="comment-path" { "File" }
                select id="comment-path" name="path" { @for p in &paths { option value=(p) { (p) } } }
                label for="comment-line" { "Line (of the new file)" }
                input id="comment-line" type="number" name="line" min="1" required;
                label for="comment-body" { "Comment (Markdown)" }
                textarea id="comment-body" name="body" rows="3" required {}
                button type="submit" { "Comment" }
            }
            @if comments.iter().any(|c| c.in_reply_to_id.is_none()) {
                form.stack method="post" action={ (base) "/pull/" (number) "/comment" } {
                    h3 { "Answer a comment" }
                    input type="hidden" name="csrf" value=(ctx.csrf);
                    label for="reply-to" { "Comment" }
                    select id="reply-to" name="in_reply_to" {
                        @for c in comments.iter().filter(|c| c.in_reply_to_id.is_none()) {
                            option value=(c.id) { (c.user.login) " on " (c.path) ":" (c.original_line) }
                        }
                    }
                    label for="reply-body" { "Answer (Markdown)" }
                    textarea id="reply-body" name="body" rows="3" required {}
                    button type="submit" { "Answer" }
                }
            }
        }
    };
    ctx.respond(status, &format!("Files · Pull request #{number} · {o}/{n}"), body)
}

/// `POST /{owner}/{repo}/pull/{number}/{action}`: `merge`, `close`, `reopen`, `review`,
/// `comment`, `reviewers` — each through the API handler that does it.
pub(super) async fn act(
    State(state): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
    Path((owner, name, number, action)): Path<(String, String, i64, String)>,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> Response {
    let Some(p) = ctx.viewer.0.clone() else { return Redirect::to("/login").into_response() };
    let repo = match ctx.readable_repo(&state, &owner, &name).await {
        Ok(r) => r,
        Err(page) => return page,
    };
    let field = |k: &str| form.get(k).cloned().unwrap_or_default();
    let optional = |k: &str| form.get(k).filter(|v| !v.trim().is_empty()).cloned();
    let (o, n) = (repo.owner.clone(), repo.name.clone());
    if !csrf_ok(&headers, &field("csrf")) {
        let expired = Some("The form expired; try again.".to_owned());
        return conversation(&state, &ctx, &o, &n, number, StatusCode::FORBIDDEN, expired).await;
    }
    let st = || State(state.clone());
    let me = || Authenticated(p.clone());
    let path = || Path((o.clone(), n.clone(), number));
    let state_change = |to: &str| crate::pulls::UpdatePull {
        title: None,
        body: None,
        state: Some(to.to_owned()),
        base: None,
        draft: None,
    };
    let result: Result<&str, ApiError> = match action.as_str() {
        "merge" => {
            let body = crate::pulls::MergePull {
                commit_title: None,
                commit_message: None,
                sha: optional("sha"),
                merge_method: optional("merge_method"),
            };
            crate::pulls::merge(st(), me(), path(), ApiJson(body)).await.map(|_| "")
        }
        "close" => crate::pulls::update(st(), me(), path(), ApiJson(state_change("closed"))).await.map(|_| ""),
        "reopen" => crate::pulls::update(st(), me(), path(), ApiJson(state_change("open"))).await.map(|_| ""),
        "review" => {
            let body = crate::protection::CreateReview {
                event: field("event"),
                body: optional("body"),
                commit_id: optional("commit_id"),
            };
            crate::protection::create_review(st(), me(), path(), ApiJson(body)).await.map(|_| "")
        }
        "reviewers" => {
            let reviewers = field("reviewers").split([',', ' ']).filter(|s| !s.is_empty()).map(str::to_owned).collect();
            let body = crate::pull_comments::Reviewers { reviewers };
            crate::pull_comments::request(st(), me(), path(), ApiJson(body)).await.map(|_| "")
        }
        "delete-branch" => {
            // Only the branch as the pull request last saw it, in this repository.
            let pull = match crate::pulls::get(st(), Caller(Some(p.clone())), path()).await {
                Ok(axum::Json(pull)) => pull,
                Err(e) => return refused(&ctx, e),
            };
            let here = pull.head.repo.as_ref().is_some_and(|r| r.id == repo.id);
            let expected = gitstratum_git::ObjectId::from_hex(pull.head.sha.as_bytes()).ok();
            if !here || !ctx.may(&repo, Role::Write) {
                Err(ApiError::forbidden("only those who may write to this repository may delete its branches"))
            } else {
                match crate::branches::delete_branch(&state, &p, &repo, &pull.head.ref_, expected).await {
                    Ok(true) => Ok(""),
                    Ok(false) => {
                        Err(ApiError::validation("branch", format!("{} is gone or has moved since", pull.head.ref_)))
                    }
                    Err(e) => Err(e),
                }
            }
        }
        "comment" => {
            let body = crate::pull_comments::CreateComment {
                body: field("body"),
                commit_id: optional("commit_id"),
                path: optional("path"),
                line: field("line").trim().parse().ok(),
                side: None,
                in_reply_to: field("in_reply_to").trim().parse().ok(),
            };
            crate::pull_comments::create(st(), me(), path(), ApiJson(body)).await.map(|_| "/files")
        }
        _ => return ctx.not_found(),
    };
    match result {
        Ok(tab) => Redirect::to(&format!("/{o}/{n}/pull/{number}{tab}")).into_response(),
        Err(e) if e.status.is_client_error() && action == "comment" => {
            files(&state, &ctx, &o, &n, number, e.status, Some(e.message)).await
        }
        Err(e) if e.status.is_client_error() => {
            conversation(&state, &ctx, &o, &n, number, e.status, Some(e.message)).await
        }
        Err(e) => ctx.failed(e.message),
    }
}

/// `POST /{owner}/{repo}/pulls` (`csrf`, `base`, `head`, `title`, `body`, `draft`): opens a pull
/// request from the comparison page.
pub(super) async fn create(
    State(state): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
    Path((owner, name)): Path<(String, String)>,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> Response {
    let Some(p) = ctx.viewer.0.clone() else { return Redirect::to("/login").into_response() };
    let repo = match ctx.readable_repo(&state, &owner, &name).await {
        Ok(r) => r,
        Err(page) => return page,
    };
    let field = |k: &str| form.get(k).cloned().unwrap_or_default();
    let back = format!("/{}/{}/compare/{}...{}", repo.owner, repo.name, enc(&field("base")), enc(&field("head")));
    if !csrf_ok(&headers, &field("csrf")) {
        return ctx.respond(
            StatusCode::FORBIDDEN,
            "Pull requests",
            html! { p.error { "The form expired; " a href=(back) { "go back" } " and try again." } },
        );
    }
    let body = crate::pulls::CreatePull {
        title: field("title"),
        head: field("head"),
        base: field("base"),
        body: Some(field("body")).filter(|b| !b.trim().is_empty()),
        draft: field("draft") == "true",
    };
    let opened = crate::pulls::create(
        State(state.clone()),
        Authenticated(p),
        Path((repo.owner.clone(), repo.name.clone())),
        ApiJson(body),
    )
    .await;
    match opened {
        Ok((_, axum::Json(pull))) => {
            Redirect::to(&format!("/{}/{}/pull/{}", repo.owner, repo.name, pull.number)).into_response()
        }
        Err(e) if e.status.is_client_error() => ctx.respond(
            e.status,
            "Pull requests",
            html! { p.error role="alert" { (e.message) } p { a href=(back) { "Back to the comparison" } } },
        ),
        Err(e) => ctx.failed(e.message),
    }
}

/// `POST /{owner}/{repo}/fork`: forks the repository into the viewer's account.
pub(super) async fn fork(
    State(state): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
    Path((owner, name)): Path<(String, String)>,
    axum::Form(form): axum::Form<super::CsrfForm>,
) -> Response {
    let Some(p) = ctx.viewer.0.clone() else { return Redirect::to("/login").into_response() };
    let repo = match ctx.readable_repo(&state, &owner, &name).await {
        Ok(r) => r,
        Err(page) => return page,
    };
    if !csrf_ok(&headers, &form.csrf) {
        return ctx.respond(
            StatusCode::FORBIDDEN,
            "Fork",
            html! { p.error { "The form expired; go back and try again." } },
        );
    }
    let body = crate::repos::CreateFork { organization: None, name: None, default_branch_only: false };
    let forked = crate::repos::fork(
        State(state.clone()),
        Authenticated(p),
        ctx.request_meta(),
        Path((repo.owner.clone(), repo.name.clone())),
        ApiJson(body),
    )
    .await;
    match forked {
        Ok((_, axum::Json(fork))) => Redirect::to(&format!("/{}", enc(&fork.full_name))).into_response(),
        Err(e) if e.status.is_client_error() => ctx.respond(
            e.status,
            "Fork",
            html! {
                p.error role="alert" { (e.message) }
                p { a href={ "/" (repo.owner) "/" (repo.name) } { "Back to " (repo.owner) "/" (repo.name) } }
            },
        ),
        Err(e) => ctx.failed(e.message),
    }
}
