//! A repository's pages: its home (files at the default branch, the README rendered, clone URL),
//! trees and files at any branch, tag or commit, raw files, and history. Reads go through the
//! object store on the blocking pool, bounded: a listing reads one tree, a file page one blob
//! (rendered only below [`MAX_RENDERED`]), a history page [`PER_PAGE`] commits past its offset.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gitstratum_git::parse;
use gitstratum_platform::Repo;
use gitstratum_store::{ObjectId, ObjectKind, ObjectStore, RefStore, RepoId};
use maud::{Markup, html};

use super::diff;
use super::markdown::{self, Base};
use super::{Ctx, trusted, when};
use crate::AppState;

/// Files larger than this are not shown in the page (the raw file is linked).
const MAX_RENDERED: usize = 1 << 20;
/// Commits on one page of history.
const PER_PAGE: usize = 30;
/// The furthest page of history (deeper history: clone it).
const MAX_PAGE: usize = 1000;

/// What a page of a repository reads from: its objects and refs.
#[derive(Clone)]
struct Git {
    objects: Arc<dyn ObjectStore>,
    refs: Arc<dyn RefStore>,
    id: RepoId,
}

/// A tree entry as listed.
struct Entry {
    name: String,
    mode: u32,
    id: ObjectId,
}

impl Entry {
    fn is_dir(&self) -> bool {
        self.mode == 0o040000
    }
}

/// A file a URL names: its ref, path, mode and contents.
struct File {
    git_ref: String,
    path: String,
    mode: u32,
    data: Vec<u8>,
}

/// A commit as shown.
struct Shown {
    id: ObjectId,
    text: parse::CommitText,
}

impl Git {
    fn object(&self, id: ObjectId) -> Result<Option<gitstratum_store::Object>, String> {
        Ok(self.objects.get_many(self.id, &[id]).map_err(|e| e.to_string())?.pop().flatten())
    }

    fn commit(&self, id: ObjectId) -> Result<Option<(parse::Commit, Shown)>, String> {
        let Some(o) = self.object(id)? else { return Ok(None) };
        if o.kind != ObjectKind::Commit {
            return Ok(None);
        }
        let parsed = parse::commit(&o.data).map_err(|e| e.to_string())?;
        Ok(Some((parsed, Shown { id, text: parse::commit_text(&o.data) })))
    }

    fn entries(&self, tree: ObjectId) -> Result<Vec<Entry>, String> {
        let Some(o) = self.object(tree)? else { return Err(format!("tree {tree} is missing")) };
        let mut out: Vec<Entry> = parse::tree(&o.data)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|e| Entry { name: String::from_utf8_lossy(e.name).into_owned(), mode: e.mode, id: e.id })
            .collect();
        // Folders first, then files, each by name (as GitHub lists them).
        out.sort_by(|a, b| b.is_dir().cmp(&a.is_dir()).then_with(|| a.name.cmp(&b.name)));
        Ok(out)
    }

    /// The entry at `path` under the commit's tree (`None` at the root means the tree itself).
    fn at_path(&self, root: ObjectId, path: &str) -> Result<Option<(u32, ObjectId)>, String> {
        let mut current = (0o040000, root);
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if current.0 != 0o040000 {
                return Ok(None);
            }
            match self.entries(current.1)?.into_iter().find(|e| e.name == part) {
                Some(e) => current = (e.mode, e.id),
                None => return Ok(None),
            }
        }
        Ok(Some(current))
    }

    /// Splits `rest` (`{ref}/{path}`, the ref possibly holding slashes) into the longest branch
    /// or tag it starts with (or a full commit id) and the path after it; the commit it names.
    fn split_ref(&self, rest: &str) -> Result<Option<(String, ObjectId, String)>, String> {
        let refs = self.refs.list(self.id).map_err(|e| e.to_string())?;
        let named = |name: &str| {
            ["refs/heads/", "refs/tags/"]
                .iter()
                .find_map(|p| refs.iter().find(|(n, _)| n.strip_prefix(p) == Some(name)).map(|(_, id)| *id))
        };
        let mut cuts: Vec<usize> = rest.match_indices('/').map(|(i, _)| i).collect();
        cuts.push(rest.len());
        for &cut in cuts.iter().rev() {
            let (name, path) = (&rest[..cut], rest[cut..].trim_start_matches('/'));
            let id = match named(name) {
                Some(id) => Some(id),
                None if name.len() == 40 => ObjectId::from_hex(name.as_bytes()).ok(),
                None => None,
            };
            if let Some(id) = id
                && let Some(commit) = self.peel(id)?
            {
                return Ok(Some((name.to_owned(), commit, path.to_owned())));
            }
        }
        Ok(None)
    }

    /// The file `rest` (`{ref}/{path}`) names: its ref, path, mode and contents; `None` when it
    /// is not a file (a folder, a submodule, nothing).
    fn file_at(&self, rest: &str) -> Result<Option<File>, String> {
        let Some((git_ref, tip, path)) = self.split_ref(rest)? else { return Ok(None) };
        let (commit, _) = self.commit(tip)?.ok_or("the commit is missing")?;
        match self.at_path(commit.tree, &path)? {
            Some((mode, id)) if mode != 0o040000 && mode != 0o160000 => {
                let data = self.object(id)?.ok_or("the file's object is missing")?.data;
                Ok(Some(File { git_ref, path, mode, data }))
            }
            _ => Ok(None),
        }
    }

    fn peel(&self, id: ObjectId) -> Result<Option<ObjectId>, String> {
        gitstratum_ci::source::peel_to_commit(self.objects.as_ref(), self.id, id).map_err(|e| e.to_string())
    }

    fn branches(&self) -> Result<Vec<String>, String> {
        let refs = self.refs.list(self.id).map_err(|e| e.to_string())?;
        Ok(refs.iter().filter_map(|(n, _)| n.strip_prefix("refs/heads/").map(str::to_owned)).take(200).collect())
    }

    /// Up to `limit` commits from `tip`, newest first by committer time, after skipping `skip`.
    fn history(&self, tip: ObjectId, skip: usize, limit: usize) -> Result<(Vec<Shown>, bool), String> {
        let mut seen = std::collections::HashSet::new();
        let mut queue: std::collections::BinaryHeap<(i64, ObjectId)> = std::collections::BinaryHeap::new();
        let mut out = Vec::new();
        let mut skipped = 0;
        if let Some((c, _)) = self.commit(tip)? {
            seen.insert(tip);
            queue.push((c.time, tip));
        }
        while let Some((_, id)) = queue.pop() {
            let Some((c, shown)) = self.commit(id)? else { continue };
            for p in c.parents {
                if seen.insert(p)
                    && let Some(info) = self.objects.commits(self.id, &[p]).map_err(|e| e.to_string())?.pop().flatten()
                {
                    queue.push((info.time, p));
                }
            }
            if skipped < skip {
                skipped += 1;
                continue;
            }
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push(shown);
        }
        Ok((out, false))
    }
}

/// The repository, when the viewer may read it; else the 404 page.
async fn readable(state: &AppState, ctx: &Ctx, owner: &str, name: &str) -> Result<(Repo, Git), Response> {
    let repo = ctx.readable_repo(state, owner, name).await?;
    let git = Git { objects: state.git().objects().clone(), refs: state.git().refs().clone(), id: RepoId(repo.id) };
    Ok((repo, git))
}

async fn blocking<T: Send + 'static>(
    ctx: &Ctx,
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ctx.failed(e)),
        Err(e) => Err(ctx.failed(e)),
    }
}

pub(super) fn repo_header(repo: &Repo, tab: &str) -> Markup {
    let base = format!("/{}/{}", repo.owner, repo.name);
    html! {
        div.repo-head {
            h1 {
                a href={ "/" (repo.owner) } { (repo.owner) } " / " a href=(base) { strong { (repo.name) } }
                @if repo.private { " " span.badge { "private" } }
            }
            nav.tabs aria-label="Repository" {
                a href=(base) aria-current=[(tab == "code").then_some("page")] { "Code" }
                a href={ (base) "/commits/" (repo.default_branch) } aria-current=[(tab == "commits").then_some("page")] { "Commits" }
                a href={ (base) "/branches" } aria-current=[(tab == "branches").then_some("page")] { "Branches" }
                a href={ (base) "/tags" } aria-current=[(tab == "tags").then_some("page")] { "Tags" }
                a href={ (base) "/actions" } aria-current=[(tab == "actions").then_some("page")] { "Actions" }
            }
        }
    }
}

/// `a / b / c` links for a path at a ref.
fn breadcrumbs(repo: &Repo, git_ref: &str, path: &str) -> Markup {
    let base = format!("/{}/{}/tree/{git_ref}", repo.owner, repo.name);
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    html! {
        nav.crumbs aria-label="Path" {
            a href=(base) { (repo.name) }
            @for (i, part) in parts.iter().enumerate() {
                " / "
                @if i + 1 == parts.len() { strong { (part) } }
                @else { a href={ (base) "/" (parts[..=i].join("/")) } { (part) } }
            }
        }
    }
}

fn listing(repo: &Repo, git_ref: &str, dir: &str, entries: &[Entry]) -> Markup {
    let prefix = if dir.is_empty() { String::new() } else { format!("{dir}/") };
    html! {
        table.files {
            tbody {
                @for e in entries {
                    tr {
                        td.kind { @if e.is_dir() { "dir" } @else if e.mode == 0o160000 { "sub" } @else if e.mode == 0o120000 { "link" } @else { "file" } }
                        td {
                            @if e.mode == 0o160000 {
                                span title={ "submodule at " (e.id) } { (e.name) " @ " (&e.id.to_string()[..7]) }
                            } @else {
                                a href={ "/" (repo.owner) "/" (repo.name) "/" (if e.is_dir() { "tree" } else { "blob" }) "/" (git_ref) "/" (prefix) (e.name) } { (e.name) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn readme(git: &Git, entries: &[Entry], repo: &Repo, git_ref: &str, dir: &str) -> Result<Option<Markup>, String> {
    let Some(e) = entries
        .iter()
        .find(|e| !e.is_dir() && e.name.eq_ignore_ascii_case("readme.md"))
        .or_else(|| entries.iter().find(|e| !e.is_dir() && e.name.to_ascii_lowercase().starts_with("readme")))
    else {
        return Ok(None);
    };
    let Some(o) = git.object(e.id)? else { return Ok(None) };
    let text = String::from_utf8_lossy(&o.data[..o.data.len().min(markdown::MAX_MARKDOWN)]).into_owned();
    let full = format!("{}/{}", repo.owner, repo.name);
    let body = if e.name.to_ascii_lowercase().ends_with(".md") || e.name.to_ascii_lowercase().ends_with(".markdown") {
        trusted(markdown::render(&text, &Base { repo: &full, git_ref, dir }))
    } else {
        trusted(html! { pre { (text) } }.into_string())
    };
    Ok(Some(html! { section.readme { h2 { (e.name) } div.markdown { (body) } } }))
}

/// `/{owner}/{repo}`: files at the default branch, its last commit, the README, clone URLs.
pub(super) async fn home(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((owner, name)): Path<(String, String)>,
) -> Response {
    let (repo, git) = match readable(&state, &ctx, &owner, &name).await {
        Ok(r) => r,
        Err(page) => return page,
    };
    let clone_url = format!("{}/{}/{}.git", state.public_url(), repo.owner, repo.name);
    let branch = repo.default_branch.clone();
    let (r, g) = (repo.clone(), git.clone());
    let read = blocking(&ctx, move || {
        let Some((_, tip, _)) = g.split_ref(&branch)? else { return Ok(None) };
        let (commit, shown) = g.commit(tip)?.ok_or("the branch's commit is missing")?;
        let entries = g.entries(commit.tree)?;
        let readme = readme(&g, &entries, &r, &branch, "")?;
        Ok(Some((shown, entries, readme, g.branches()?)))
    })
    .await;
    let read = match read {
        Ok(r) => r,
        Err(page) => return page,
    };
    let now = state.now().0;
    let body = html! {
        (repo_header(&repo, "code"))
        div.clone {
            label for="clone-url" { "Clone" }
            input id="clone-url" type="text" readonly value=(clone_url);
        }
        @match &read {
            None => {
                section.empty {
                    h2 { "This repository is empty" }
                    p { "Push an existing repository:" }
                    pre { "git remote add origin " (clone_url) "\ngit push -u origin " (repo.default_branch) }
                }
            }
            Some((last, entries, readme, branches)) => {
                div.bar {
                    details.switch {
                        summary { "Branch: " strong { (repo.default_branch) } }
                        ul { @for b in branches { li { a href={ "/" (repo.owner) "/" (repo.name) "/tree/" (b) } { (b) } } } }
                    }
                    span.last {
                        a href={ "/" (repo.owner) "/" (repo.name) "/commits/" (repo.default_branch) } { (last.text.summary()) }
                        " · " (last.text.author.name) " · " (when(last.text.committer.time, now))
                    }
                }
                (listing(&repo, &repo.default_branch, "", entries))
                @if let Some(r) = readme { (r) }
            }
        }
    };
    ctx.respond(StatusCode::OK, &format!("{}/{}", repo.owner, repo.name), body)
}

/// `/{owner}/{repo}/tree/{ref}/{path}`.
pub(super) async fn tree(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((owner, name, rest)): Path<(String, String, String)>,
) -> Response {
    let (repo, git) = match readable(&state, &ctx, &owner, &name).await {
        Ok(r) => r,
        Err(page) => return page,
    };
    let r = repo.clone();
    let read = blocking(&ctx, move || {
        let Some((git_ref, tip, path)) = git.split_ref(&rest)? else { return Ok(None) };
        let (commit, _) = git.commit(tip)?.ok_or("the commit is missing")?;
        match git.at_path(commit.tree, &path)? {
            Some((0o040000, tree)) => {
                let entries = git.entries(tree)?;
                let readme = readme(&git, &entries, &r, &git_ref, &path)?;
                Ok(Some((git_ref, path, entries, readme)))
            }
            _ => Ok(None),
        }
    })
    .await;
    let (git_ref, path, entries, readme) = match read {
        Ok(Some(found)) => found,
        Ok(None) => return ctx.not_found(),
        Err(page) => return page,
    };
    let body = html! {
        (repo_header(&repo, "code"))
        (breadcrumbs(&repo, &git_ref, &path))
        (listing(&repo, &git_ref, &path, &entries))
        @if let Some(r) = readme { (r) }
    };
    ctx.respond(StatusCode::OK, &format!("{path} at {git_ref} · {}/{}", repo.owner, repo.name), body)
}

/// What a file is, for showing it.
enum Content {
    Text(String),
    Image,
    Binary,
    TooLarge,
}

fn image_type(path: &str) -> Option<&'static str> {
    let lower = path.to_ascii_lowercase();
    let ext = lower.rsplit_once('.')?.1;
    Some(match ext {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "ico" => "image/x-icon",
        _ => return None,
    })
}

fn content_of(path: &str, data: &[u8]) -> Content {
    if image_type(path).is_some() {
        Content::Image
    } else if diff::is_binary(data) {
        Content::Binary
    } else if data.len() > MAX_RENDERED {
        Content::TooLarge
    } else {
        Content::Text(String::from_utf8_lossy(data).into_owned())
    }
}

/// `/{owner}/{repo}/blob/{ref}/{path}`: the file with numbered, linkable lines (`#L10`).
pub(super) async fn blob(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((owner, name, rest)): Path<(String, String, String)>,
) -> Response {
    let (repo, git) = match readable(&state, &ctx, &owner, &name).await {
        Ok(r) => r,
        Err(page) => return page,
    };
    let read = blocking(&ctx, move || {
        Ok(git.file_at(&rest)?.map(|File { git_ref, path, mode, data }| {
            let content = if mode == 0o120000 {
                Content::Text(format!("symbolic link to {}", String::from_utf8_lossy(&data)))
            } else {
                content_of(&path, &data)
            };
            (git_ref, path, data.len(), content)
        }))
    })
    .await;
    let (git_ref, path, size, content) = match read {
        Ok(Some(found)) => found,
        Ok(None) => return ctx.not_found(),
        Err(page) => return page,
    };
    let raw = format!("/{}/{}/raw/{git_ref}/{path}", repo.owner, repo.name);
    let body = html! {
        (repo_header(&repo, "code"))
        (breadcrumbs(&repo, &git_ref, &path))
        div.file-bar {
            span { (size) " bytes" }
            a href=(raw) { "Raw" }
            a href=(raw) download { "Download" }
        }
        @match &content {
            Content::Text(text) => {
                table.code {
                    tbody {
                        @for (i, line) in text.lines().enumerate() {
                            tr id={ "L" (i + 1) } {
                                td.num { a href={ "#L" (i + 1) } { (i + 1) } }
                                td.line { code { (line) } }
                            }
                        }
                    }
                }
            }
            Content::Image => { p.image { img src=(raw) alt=(path); } }
            Content::Binary => { p { "Binary file not shown. " a href=(raw) { "View raw" } } }
            Content::TooLarge => { p { "This file is too large to show. " a href=(raw) { "View raw" } } }
        }
    };
    ctx.respond(StatusCode::OK, &format!("{path} at {git_ref} · {}/{}", repo.owner, repo.name), body)
}

/// `/{owner}/{repo}/raw/{ref}/{path}`: the file's bytes, as text or an image, never as a page
/// of this site (sandboxed, not sniffed).
pub(super) async fn raw(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((owner, name, rest)): Path<(String, String, String)>,
) -> Response {
    let (_, git) = match readable(&state, &ctx, &owner, &name).await {
        Ok(r) => r,
        Err(page) => return page,
    };
    let read = blocking(&ctx, move || Ok(git.file_at(&rest)?.map(|f| (f.path, f.data)))).await;
    let (path, data) = match read {
        Ok(Some(found)) => found,
        Ok(None) => return ctx.not_found(),
        Err(page) => return page,
    };
    let kind = match image_type(&path) {
        Some(t) => t,
        None if diff::is_binary(&data) => "application/octet-stream",
        None => "text/plain; charset=utf-8",
    };
    let mut response = (StatusCode::OK, data).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; sandbox"),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

#[derive(serde::Deserialize)]
pub(super) struct PageQuery {
    page: Option<usize>,
}

/// `/{owner}/{repo}/commits/{ref}`: history, [`PER_PAGE`] commits a page.
pub(super) async fn commits(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((owner, name, rest)): Path<(String, String, String)>,
    Query(q): Query<PageQuery>,
) -> Response {
    let (repo, git) = match readable(&state, &ctx, &owner, &name).await {
        Ok(r) => r,
        Err(page) => return page,
    };
    let page = q.page.unwrap_or(1).clamp(1, MAX_PAGE);
    let read = blocking(&ctx, move || {
        let Some((git_ref, tip, _)) = git.split_ref(&rest)? else { return Ok(None) };
        let (list, more) = git.history(tip, (page - 1) * PER_PAGE, PER_PAGE)?;
        Ok(Some((git_ref, list, more)))
    })
    .await;
    let (git_ref, list, more) = match read {
        Ok(Some(found)) => found,
        Ok(None) => return ctx.not_found(),
        Err(page) => return page,
    };
    let now = state.now().0;
    let base = format!("/{}/{}/commits/{git_ref}", repo.owner, repo.name);
    let body = html! {
        (repo_header(&repo, "commits"))
        h2 { "Commits on " (git_ref) }
        ol.commits {
            @for c in &list {
                li {
                    a.summary href={ "/" (repo.owner) "/" (repo.name) "/commit/" (c.id) } { (c.text.summary()) }
                    div.meta { (c.text.author.name) " committed " (when(c.text.committer.time, now)) " · " code { (&c.id.to_string()[..7]) } }
                }
            }
        }
        nav.pages aria-label="Pages" {
            @if page > 1 { a href={ (base) "?page=" (page - 1) } rel="prev" { "Newer" } }
            @if more && page < MAX_PAGE { a href={ (base) "?page=" (page + 1) } rel="next" { "Older" } }
        }
    };
    ctx.respond(StatusCode::OK, &format!("Commits · {}/{}", repo.owner, repo.name), body)
}

/// A changed file as its commit page shows it.
struct ShownChange {
    change: diff::Change,
    diff: diff::FileDiff,
}

/// `/{owner}/{repo}/commit/{sha}`: the commit's message, people, parents, and what it changed
/// (against its first parent, as GitHub shows a merge; a root commit against nothing).
pub(super) async fn commit(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((owner, name, rest)): Path<(String, String, String)>,
) -> Response {
    let (repo, git) = match readable(&state, &ctx, &owner, &name).await {
        Ok(r) => r,
        Err(page) => return page,
    };
    let read = blocking(&ctx, move || {
        let Some((_, id, path)) = git.split_ref(&rest)? else { return Ok(None) };
        if !path.is_empty() {
            return Ok(None);
        }
        let Some((parsed, shown)) = git.commit(id)? else { return Ok(None) };
        let parent_tree = match parsed.parents.first() {
            Some(p) => git.commit(*p)?.map(|(c, _)| c.tree),
            None => None,
        };
        let read_tree = |t: ObjectId| -> Result<diff::Entries, String> {
            Ok(git.entries(t)?.into_iter().map(|e| (e.name, e.mode, e.id)).collect())
        };
        let (changes, truncated) = diff::changed_paths(parent_tree, Some(parsed.tree), &read_tree)?;
        let mut budget = diff::MAX_LINES;
        let blob = |side: diff::Side| -> Result<Vec<u8>, String> {
            match side {
                Some((mode, id)) if mode != 0o160000 => Ok(git.object(id)?.map(|o| o.data).unwrap_or_default()),
                _ => Ok(Vec::new()),
            }
        };
        let mut shown_changes = Vec::with_capacity(changes.len());
        for change in changes {
            let d = diff::file_diff(&blob(change.old)?, &blob(change.new)?, &mut budget);
            shown_changes.push(ShownChange { change, diff: d });
        }
        Ok(Some((shown, parsed.parents, shown_changes, truncated)))
    })
    .await;
    let (shown, parents, changes, truncated) = match read {
        Ok(Some(found)) => found,
        Ok(None) => return ctx.not_found(),
        Err(page) => return page,
    };
    let now = state.now().0;
    let base = format!("/{}/{}", repo.owner, repo.name);
    let (added, removed) = changes.iter().fold((0, 0), |(a, r), c| match &c.diff {
        diff::FileDiff::Text { added, removed, .. } => (a + added, r + removed),
        _ => (a, r),
    });
    let summary = shown.text.summary().to_owned();
    let body_text = shown.text.message.split_once('\n').map(|(_, rest)| rest.trim()).unwrap_or_default().to_owned();
    let body = html! {
        (repo_header(&repo, "commits"))
        section.commit {
            h2 { (summary) }
            @if !body_text.is_empty() { pre.message { (body_text) } }
            p.meta {
                (shown.text.author.name) " authored " (when(shown.text.author.time, now))
                @if shown.text.committer.name != shown.text.author.name {
                    " · " (shown.text.committer.name) " committed " (when(shown.text.committer.time, now))
                }
            }
            p.meta {
                "commit " code { (shown.id) }
                @for p in &parents { " · parent " a href={ (base) "/commit/" (p) } { code { (&p.to_string()[..7]) } } }
                " · " a href={ (base) "/tree/" (shown.id) } { "Browse files" }
            }
        }
        p.stats {
            strong { (changes.len()) } " changed files with " span.add { (added) " additions" } " and " span.del { (removed) " deletions" }
            @if truncated { " (only the first " (diff::MAX_FILES) " files are listed)" }
        }
        @for c in &changes {
            details.file open {
                summary {
                    @if let Some(from) = &c.change.from { code { (from) } " → " }
                    code { (c.change.path) }
                    @match &c.diff {
                        diff::FileDiff::Text { added, removed, .. } => { " " span.add { "+" (added) } " " span.del { "−" (removed) } }
                        _ => {}
                    }
                }
                @match &c.diff {
                    diff::FileDiff::Text { hunks, .. } => {
                        @if hunks.is_empty() { p.note { "No changes to the contents (the mode or the file's kind changed)." } }
                        table.diff {
                            tbody {
                                @for h in hunks {
                                    tr.hunk { td.num {} td.num {} td { code { (h.header) } } }
                                    @for l in &h.lines {
                                        @match l {
                                            diff::Line::Context { old, new, text } => tr { td.num { (old) } td.num { (new) } td.line { code { " " (text) } } },
                                            diff::Line::Removed { old, text } => tr.del { td.num { (old) } td.num {} td.line { code { "-" (text) } } },
                                            diff::Line::Added { new, text } => tr.add { td.num {} td.num { (new) } td.line { code { "+" (text) } } },
                                        }
                                    }
                                }
                            }
                        }
                    }
                    diff::FileDiff::Binary => { p.note { "Binary file not shown." } }
                    diff::FileDiff::TooLarge => { p.note { "This file is too large to show its diff." } }
                    diff::FileDiff::Elided => { p.note { "Not shown: this page shows at most 20,000 lines of diff." } }
                }
            }
        }
    };
    ctx.respond(StatusCode::OK, &format!("{summary} · {}/{}", repo.owner, repo.name), body)
}

/// The most commits an ahead/behind count walks before saying "at least".
const MAX_AHEAD_BEHIND: usize = 1000;

impl Git {
    /// How many commits `a` has that `b` lacks, and `b` has that `a` lacks (git's
    /// `rev-list --left-right --count a...b`), painting both histories down the commit graph by
    /// generation; `None` past [`MAX_AHEAD_BEHIND`] commits walked.
    fn ahead_behind(&self, a: ObjectId, b: ObjectId) -> Result<Option<(usize, usize)>, String> {
        use std::collections::{BinaryHeap, HashMap};
        const A: u8 = 1;
        const B: u8 = 2;
        let mut flags: HashMap<ObjectId, u8> = HashMap::new();
        let mut queue: BinaryHeap<(u32, ObjectId)> = BinaryHeap::new();
        let info = |id: ObjectId| -> Result<Option<gitstratum_store::CommitInfo>, String> {
            Ok(self.objects.commits(self.id, &[id]).map_err(|e| e.to_string())?.pop().flatten())
        };
        for (id, flag) in [(a, A), (b, B)] {
            let Some(i) = info(id)? else { return Ok(None) };
            let entry = flags.entry(id).or_insert(0);
            if *entry == 0 {
                queue.push((i.generation, id));
            }
            *entry |= flag;
        }
        let (mut ahead, mut behind, mut walked) = (0, 0, 0);
        // Commits painted with one side only and not yet popped: once none is, the rest is common.
        while queue.iter().any(|(_, id)| flags[id] != A | B) {
            let Some((_, id)) = queue.pop() else { break };
            walked += 1;
            if walked > MAX_AHEAD_BEHIND {
                return Ok(None);
            }
            let flag = flags[&id];
            match flag {
                A => ahead += 1,
                B => behind += 1,
                _ => {}
            }
            let Some(i) = info(id)? else { continue };
            for p in i.parents {
                let Some(pi) = info(p)? else { continue };
                let entry = flags.entry(p).or_insert(0);
                if *entry | flag != *entry {
                    if *entry == 0 {
                        queue.push((pi.generation, p));
                    }
                    *entry |= flag;
                }
            }
        }
        Ok(Some((ahead, behind)))
    }
}

/// `/{owner}/{repo}/branches`: every branch with its last commit and how far it is ahead of and
/// behind the default branch.
pub(super) async fn branches(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((owner, name)): Path<(String, String)>,
) -> Response {
    let (repo, git) = match readable(&state, &ctx, &owner, &name).await {
        Ok(r) => r,
        Err(page) => return page,
    };
    let default = repo.default_branch.clone();
    let read = blocking(&ctx, move || {
        let refs = git.refs.list(git.id).map_err(|e| e.to_string())?;
        let default_tip =
            refs.iter().find(|(n, _)| n.strip_prefix("refs/heads/") == Some(default.as_str())).map(|(_, id)| *id);
        let mut out = Vec::new();
        for (name, id) in refs.iter().filter_map(|(n, id)| n.strip_prefix("refs/heads/").map(|b| (b, *id))).take(500) {
            let Some((_, shown)) = git.commit(id)? else { continue };
            let counts = match default_tip {
                Some(d) if name != default => git.ahead_behind(id, d)?.map(Some).unwrap_or(None),
                _ => None,
            };
            out.push((name.to_owned(), shown, counts));
        }
        // The default branch first, then the most recently committed.
        out.sort_by_key(|(n, s, _)| (*n != default, std::cmp::Reverse(s.text.committer.time)));
        Ok(out)
    })
    .await;
    let list = match read {
        Ok(l) => l,
        Err(page) => return page,
    };
    let now = state.now().0;
    let base = format!("/{}/{}", repo.owner, repo.name);
    let body = html! {
        (repo_header(&repo, "branches"))
        table.refs {
            thead { tr { th { "Branch" } th { "Last commit" } th { "Behind | Ahead" } } }
            tbody {
                @for (name, shown, counts) in &list {
                    tr {
                        td {
                            a href={ (base) "/tree/" (name) } { (name) }
                            @if *name == repo.default_branch { " " span.badge { "default" } }
                        }
                        td { a href={ (base) "/commit/" (shown.id) } { (shown.text.summary()) } " · " (when(shown.text.committer.time, now)) }
                        td {
                            @match counts {
                                Some((ahead, behind)) => { (behind) " | " (ahead) }
                                None => @if *name == repo.default_branch { "—" } @else { "many" },
                            }
                        }
                    }
                }
            }
        }
    };
    ctx.respond(StatusCode::OK, &format!("Branches · {}/{}", repo.owner, repo.name), body)
}

/// `/{owner}/{repo}/tags`: every tag with the commit it names, newest first.
pub(super) async fn tags(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((owner, name)): Path<(String, String)>,
) -> Response {
    let (repo, git) = match readable(&state, &ctx, &owner, &name).await {
        Ok(r) => r,
        Err(page) => return page,
    };
    let read = blocking(&ctx, move || {
        let refs = git.refs.list(git.id).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for (name, id) in refs.iter().filter_map(|(n, id)| n.strip_prefix("refs/tags/").map(|t| (t, *id))).take(1000) {
            let Some(commit) = git.peel(id)? else { continue };
            let Some((_, shown)) = git.commit(commit)? else { continue };
            out.push((name.to_owned(), shown));
        }
        out.sort_by_key(|(_, s)| std::cmp::Reverse(s.text.committer.time));
        Ok(out)
    })
    .await;
    let list = match read {
        Ok(l) => l,
        Err(page) => return page,
    };
    let now = state.now().0;
    let base = format!("/{}/{}", repo.owner, repo.name);
    let body = html! {
        (repo_header(&repo, "tags"))
        @if list.is_empty() { p { "No tags yet." } }
        table.refs {
            tbody {
                @for (name, shown) in &list {
                    tr {
                        td { a href={ (base) "/tree/" (name) } { (name) } }
                        td { a href={ (base) "/commit/" (shown.id) } { code { (&shown.id.to_string()[..7]) } } " · " (when(shown.text.committer.time, now)) }
                    }
                }
            }
        }
    };
    ctx.respond(StatusCode::OK, &format!("Tags · {}/{}", repo.owner, repo.name), body)
}
