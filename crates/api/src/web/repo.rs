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

use super::markdown::{self, Base};
use super::{Ctx, csrf_ok, enc, trusted, when};
use super::{diff, highlight};
use crate::AppState;

/// Files larger than this are not shown in the page (the raw file is linked).
const MAX_RENDERED: usize = 1 << 20;
/// Commits on one page of history.
const PER_PAGE: usize = 30;
/// The most commits a history of one path looks at (deeper: clone it).
const MAX_PATH_WALK: usize = 20_000;
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
    /// The commit `git_ref` named when the file was read (for a permalink).
    commit: ObjectId,
    path: String,
    mode: u32,
    id: ObjectId,
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
                Ok(Some(File { git_ref, commit: tip, path, mode, id, data }))
            }
            _ => Ok(None),
        }
    }

    fn peel(&self, id: ObjectId) -> Result<Option<ObjectId>, String> {
        gitstratum_ci::source::peel_to_commit(self.objects.as_ref(), self.id, id).map_err(|e| e.to_string())
    }

    /// The names the ref switcher offers: up to 200 branches (by name) and 100 tags (by name,
    /// last first: `v2.0` before `v1.9`, as version tags usually sort).
    fn ref_names(&self) -> Result<(Vec<String>, Vec<String>), String> {
        let refs = self.refs.list(self.id).map_err(|e| e.to_string())?;
        let branches = refs.iter().filter_map(|(n, _)| n.strip_prefix("refs/heads/").map(str::to_owned)).take(200);
        let tags = refs.iter().rev().filter_map(|(n, _)| n.strip_prefix("refs/tags/").map(str::to_owned)).take(100);
        Ok((branches.collect(), tags.collect()))
    }

    /// Up to `limit` commits from `tip`, newest first by committer time, after skipping `skip`;
    /// with a `path`, only those that changed what is there (git's default simplification: a
    /// commit with the path as one of its parents had it is left out), looking at no more than
    /// [`MAX_PATH_WALK`] commits. Whether there are more; whether the walk was cut.
    fn history(
        &self,
        tip: ObjectId,
        path: &str,
        skip: usize,
        limit: usize,
    ) -> Result<(Vec<Shown>, bool, bool), String> {
        let mut seen = std::collections::HashSet::new();
        let mut queue: std::collections::BinaryHeap<(i64, ObjectId)> = std::collections::BinaryHeap::new();
        let mut out = Vec::new();
        let (mut skipped, mut walked) = (0, 0);
        if let Some((c, _)) = self.commit(tip)? {
            seen.insert(tip);
            queue.push((c.time, tip));
        }
        while let Some((_, id)) = queue.pop() {
            let Some((c, shown)) = self.commit(id)? else { continue };
            let mut parent_trees = Vec::with_capacity(c.parents.len());
            for p in c.parents {
                let info = self.objects.commits(self.id, &[p]).map_err(|e| e.to_string())?.pop().flatten();
                if let Some(info) = info {
                    parent_trees.push(info.tree);
                    if seen.insert(p) {
                        queue.push((info.time, p));
                    }
                }
            }
            if !path.is_empty() {
                walked += 1;
                if walked > MAX_PATH_WALK {
                    return Ok((out, false, true));
                }
                let here = self.at_path(c.tree, path)?;
                let mut same = false;
                for tree in &parent_trees {
                    if self.at_path(*tree, path)? == here {
                        same = true;
                        break;
                    }
                }
                if same || (parent_trees.is_empty() && here.is_none()) {
                    continue;
                }
            }
            if skipped < skip {
                skipped += 1;
                continue;
            }
            if out.len() == limit {
                return Ok((out, true, false));
            }
            out.push(shown);
        }
        Ok((out, false, false))
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

pub(super) fn repo_header(ctx: &Ctx, repo: &Repo, tab: &str) -> Markup {
    let base = format!("/{}/{}", repo.owner, repo.name);
    html! {
        div.repo-head {
            h1 {
                a href={ "/" (repo.owner) } { (repo.owner) } " / " a href=(base) { strong { (repo.name) } }
                @if repo.private { " " span.badge { "private" } }
                @if repo.is_fork() { " " span.badge { "fork" } }
            }
            nav.tabs aria-label="Repository" {
                a href=(base) aria-current=[(tab == "code").then_some("page")] data-hotkey="g c" aria-keyshortcuts="g c" { "Code" }
                a href={ (base) "/commits/" (enc(&repo.default_branch)) } aria-current=[(tab == "commits").then_some("page")] data-hotkey="g h" aria-keyshortcuts="g h" { "Commits" }
                a href={ (base) "/branches" } aria-current=[(tab == "branches").then_some("page")] data-hotkey="g b" aria-keyshortcuts="g b" { "Branches" }
                a href={ (base) "/tags" } aria-current=[(tab == "tags").then_some("page")] data-hotkey="g t" aria-keyshortcuts="g t" { "Tags" }
                a href={ (base) "/pulls" } aria-current=[(tab == "pulls").then_some("page")] data-hotkey="g p" aria-keyshortcuts="g p" { "Pull requests" }
                a href={ (base) "/actions" } aria-current=[(tab == "actions").then_some("page")] data-hotkey="g a" aria-keyshortcuts="g a" { "Actions" }
                @if ctx.may(repo, gitstratum_platform::Role::Admin) {
                    a href={ (base) "/settings" } aria-current=[(tab == "settings").then_some("page")] data-hotkey="g s" aria-keyshortcuts="g s" { "Settings" }
                }
            }
        }
    }
}

/// The branch and tag switcher: the same page (`view`: `tree` or `blob`, at `path`) at another ref.
fn switcher(
    repo: &Repo,
    current: &str,
    (branches, tags): &(Vec<String>, Vec<String>),
    view: &str,
    path: &str,
) -> Markup {
    let at = |name: &str| {
        let mut href = format!("/{}/{}/{view}/{}", repo.owner, repo.name, enc(name));
        if !path.is_empty() {
            href.push('/');
            href.push_str(&enc(path));
        }
        href
    };
    let kind = if branches.iter().any(|b| b == current) {
        "Branch: "
    } else if tags.iter().any(|t| t == current) {
        "Tag: "
    } else {
        "At: "
    };
    html! {
        details.switch {
            summary { (kind) strong { (current) } }
            @if !branches.is_empty() {
                p.meta { "Branches" }
                ul { @for b in branches { li { a href=(at(b)) aria-current=[(b == current).then_some("true")] { (b) } } } }
            }
            @if !tags.is_empty() {
                p.meta { "Tags" }
                ul { @for t in tags { li { a href=(at(t)) aria-current=[(t == current).then_some("true")] { (t) } } } }
            }
        }
    }
}

/// `a / b / c` links for a path at a ref.
fn breadcrumbs(repo: &Repo, git_ref: &str, path: &str) -> Markup {
    let base = format!("/{}/{}/tree/{}", repo.owner, repo.name, enc(git_ref));
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    html! {
        nav.crumbs aria-label="Path" {
            a href=(base) { (repo.name) }
            @for (i, part) in parts.iter().enumerate() {
                " / "
                @if i + 1 == parts.len() { strong { (part) } }
                @else { a href={ (base) "/" (enc(&parts[..=i].join("/"))) } { (part) } }
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
                                a href={ "/" (repo.owner) "/" (repo.name) "/" (if e.is_dir() { "tree" } else { "blob" }) "/" (enc(git_ref)) "/" (enc(&prefix)) (enc(&e.name)) } { (e.name) }
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
        Ok(Some((shown, entries, readme, g.ref_names()?)))
    })
    .await;
    let read = match read {
        Ok(r) => r,
        Err(page) => return page,
    };
    let now = state.now().0;
    let status = match &read {
        Some((last, ..)) => ci_status(&state, &ctx, &repo, &last.id.to_string()).await,
        None => html! {},
    };
    // What it was forked from, when the viewer may see that.
    let parent = match repo.parent_id {
        Some(id) => match state.store().get_repo_by_id(id).await {
            Ok(Some(parent))
                if crate::repos::repo_decision(
                    &state,
                    ctx.viewer.0.as_ref(),
                    &parent,
                    gitstratum_platform::Role::Read,
                )
                .await
                .is_ok_and(|d| d.is_ok()) =>
            {
                Some(format!("{}/{}", parent.owner, parent.name))
            }
            _ => None,
        },
        None => None,
    };
    let body = html! {
        (repo_header(&ctx, &repo, "code"))
        @if let Some(parent) = &parent { p.meta { "Forked from " a href={ "/" (parent) } { (parent) } } }
        @if !repo.description.is_empty() { p.description { (repo.description) } }
        @if ctx.viewer.0.is_some() {
            (ctx.button(&format!("/{}/{}/fork", repo.owner, repo.name), None, "Fork", Some("Fork this repository into your account")))
        }
        div.clone {
            label for="clone-url" { "Clone" }
            input id="clone-url" type="text" readonly value=(clone_url);
            button type="button" data-copy="#clone-url" hidden { "Copy" }
        }
        @if let Some(ssh_url) = state.ssh_url(&repo.owner, &repo.name) {
            div.clone {
                label for="clone-ssh" { "SSH" }
                input id="clone-ssh" type="text" readonly value=(ssh_url);
                button type="button" data-copy="#clone-ssh" hidden { "Copy" }
            }
        }
        @match &read {
            None => {
                section.empty {
                    h2 { "This repository is empty" }
                    p { "Push an existing repository:" }
                    pre { "git remote add origin " (clone_url) "\ngit push -u origin " (repo.default_branch) }
                }
            }
            Some((last, entries, readme, names)) => {
                div.bar {
                    (switcher(&repo, &repo.default_branch, names, "tree", ""))
                    span.last {
                        a href={ "/" (repo.owner) "/" (repo.name) "/commits/" (enc(&repo.default_branch)) } { (last.text.summary()) }
                        " · " (last.text.author.name) " · " (when(last.text.committer.time, now))
                        (status)
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
                Ok(Some((git_ref, path, entries, readme, git.ref_names()?)))
            }
            _ => Ok(None),
        }
    })
    .await;
    let (git_ref, path, entries, readme, names) = match read {
        Ok(Some(found)) => found,
        Ok(None) => return ctx.not_found(),
        Err(page) => return page,
    };
    let body = html! {
        (repo_header(&ctx, &repo, "code"))
        div.bar { (switcher(&repo, &git_ref, &names, "tree", &path)) }
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
        git.file_at(&rest)?
            .map(|File { git_ref, commit, path, mode, id, data }| {
                let content = if mode == 0o120000 {
                    Content::Text(format!("symbolic link to {}", String::from_utf8_lossy(&data)))
                } else {
                    content_of(&path, &data)
                };
                let highlighted = match &content {
                    Content::Text(text) if mode != 0o120000 => highlight::lines(id, &path, text),
                    _ => None,
                };
                (git_ref, commit, path, data.len(), content, highlighted)
            })
            .map(|found| git.ref_names().map(|names| (found, names)))
            .transpose()
    })
    .await;
    let ((git_ref, commit, path, size, content, highlighted), names) = match read {
        Ok(Some(found)) => found,
        Ok(None) => return ctx.not_found(),
        Err(page) => return page,
    };
    let raw = format!("/{}/{}/raw/{}/{}", repo.owner, repo.name, enc(&git_ref), enc(&path));
    let body = html! {
        (repo_header(&ctx, &repo, "code"))
        div.bar { (switcher(&repo, &git_ref, &names, "blob", &path)) }
        (breadcrumbs(&repo, &git_ref, &path))
        div.file-bar {
            span { (size) " bytes" }
            a href=(raw) { "Raw" }
            a href=(raw) download { "Download" }
            a href={ "/" (repo.owner) "/" (repo.name) "/commits/" (enc(&git_ref)) "/" (enc(&path)) } { "History" }
            a href={ "/" (repo.owner) "/" (repo.name) "/blob/" (commit) "/" (enc(&path)) } data-hotkey="y" aria-keyshortcuts="y"
                title="This file at the commit the page shows (y)" { "Permalink" }
        }
        @match &content {
            Content::Text(text) => {
                table.code {
                    tbody {
                        @for (i, line) in text.lines().enumerate() {
                            tr id={ "L" (i + 1) } {
                                td.num { a href={ "#L" (i + 1) } { (i + 1) } }
                                td.line {
                                    code {
                                        @match highlighted.as_ref().and_then(|h| h.get(i)) {
                                            // Escaped by the highlighter (its spans carry classes only).
                                            Some(html) => (trusted(html.clone())),
                                            None => (line),
                                        }
                                    }
                                }
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
        let Some((git_ref, tip, path)) = git.split_ref(&rest)? else { return Ok(None) };
        let path = path.trim_end_matches('/').to_owned();
        let (list, more, cut) = git.history(tip, &path, (page - 1) * PER_PAGE, PER_PAGE)?;
        Ok(Some((git_ref, path, list, more, cut)))
    })
    .await;
    let (git_ref, path, list, more, cut) = match read {
        Ok(Some(found)) => found,
        Ok(None) => return ctx.not_found(),
        Err(page) => return page,
    };
    let now = state.now().0;
    let base = if path.is_empty() {
        format!("/{}/{}/commits/{}", repo.owner, repo.name, enc(&git_ref))
    } else {
        format!("/{}/{}/commits/{}/{}", repo.owner, repo.name, enc(&git_ref), enc(&path))
    };
    let body = html! {
        (repo_header(&ctx, &repo, "commits"))
        h2 { "Commits on " (git_ref) @if !path.is_empty() { " to " code { (path) } } }
        @if cut { p.note { "Only the latest " (MAX_PATH_WALK) " commits were looked at; clone the repository for the rest of this file's history." } }
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

impl Git {
    /// What changed from `old` (`None`: nothing) to `new`, each file's diff within the page's
    /// budget; whether the list of files was cut.
    fn changes(&self, old: Option<ObjectId>, new: ObjectId) -> Result<(Vec<ShownChange>, bool), String> {
        let read_tree = |t: ObjectId| -> Result<diff::Entries, String> {
            Ok(self.entries(t)?.into_iter().map(|e| (e.name, e.mode, e.id)).collect())
        };
        let (changes, truncated) = diff::changed_paths(old, Some(new), &read_tree)?;
        let mut budget = diff::MAX_LINES;
        let blob = |side: diff::Side| -> Result<Vec<u8>, String> {
            match side {
                Some((mode, id)) if mode != 0o160000 => Ok(self.object(id)?.map(|o| o.data).unwrap_or_default()),
                _ => Ok(Vec::new()),
            }
        };
        let mut shown = Vec::with_capacity(changes.len());
        for change in changes {
            let d = diff::file_diff(&blob(change.old)?, &blob(change.new)?, &mut budget);
            shown.push(ShownChange { change, diff: d });
        }
        Ok((shown, truncated))
    }
}

/// What is shown under lines of a diff (a pull request's line comments): by path and line of the
/// new side.
pub(super) type Notes = std::collections::BTreeMap<(String, u32), Markup>;

/// The changed files with their diffs (a commit's, a comparison's, a pull request's): counts,
/// then each file, collapsible, with `notes` under the lines they are on.
fn changes_view(changes: &[ShownChange], truncated: bool, notes: &Notes) -> Markup {
    let (added, removed) = changes.iter().fold((0, 0), |(a, r), c| match &c.diff {
        diff::FileDiff::Text { added, removed, .. } => (a + added, r + removed),
        _ => (a, r),
    });
    html! {
        p.stats {
            strong { (changes.len()) } " changed files with " span.add { (added) " additions" } " and " span.del { (removed) " deletions" }
            @if truncated { " (only the first " (diff::MAX_FILES) " files are listed)" }
        }
        @for c in changes {
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
                                        @if let diff::Line::Context { new, .. } | diff::Line::Added { new, .. } = l
                                            && !notes.is_empty() && let Some(note) = notes.get(&(c.change.path.clone(), *new)) {
                                            tr.comments { td.num {} td.num {} td { (note) } }
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
    }
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
        let (changes, truncated) = git.changes(parent_tree, parsed.tree)?;
        Ok(Some((shown, parsed.parents, changes, truncated)))
    })
    .await;
    let (shown, parents, changes, truncated) = match read {
        Ok(Some(found)) => found,
        Ok(None) => return ctx.not_found(),
        Err(page) => return page,
    };
    let now = state.now().0;
    let base = format!("/{}/{}", repo.owner, repo.name);
    let summary = shown.text.summary().to_owned();
    let body_text = shown.text.message.split_once('\n').map(|(_, rest)| rest.trim()).unwrap_or_default().to_owned();
    let status = ci_status(&state, &ctx, &repo, &shown.id.to_string()).await;
    let body = html! {
        (repo_header(&ctx, &repo, "commits"))
        section.commit {
            h2 { (summary) (status) }
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
        (changes_view(&changes, truncated, &Notes::new()))
    };
    ctx.respond(StatusCode::OK, &format!("{summary} · {}/{}", repo.owner, repo.name), body)
}

/// Branches whose CI status the branches page shows (the most recently committed).
const MAX_BRANCH_STATUSES: usize = 30;

/// The most commits an ahead/behind count walks before saying "at least".
const MAX_AHEAD_BEHIND: usize = 1000;

/// What painting two histories down the commit graph found.
struct Walk {
    /// Commits only `a` reaches, newest (by generation) first.
    only_a: Vec<ObjectId>,
    /// How many commits only `b` reaches.
    only_b: usize,
    /// A best common ancestor (`git merge-base a b`), if they share history.
    base: Option<ObjectId>,
}

impl Git {
    /// Paints `a`'s and `b`'s histories down the commit graph by generation (git's
    /// `rev-list --left-right a...b` and `merge-base`); `None` past [`MAX_AHEAD_BEHIND`] commits
    /// walked.
    fn walk(&self, a: ObjectId, b: ObjectId) -> Result<Option<Walk>, String> {
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
        let mut walk = Walk { only_a: Vec::new(), only_b: 0, base: None };
        let mut walked = 0;
        // Commits painted with one side only and not yet popped: once none is, the rest is common.
        while queue.iter().any(|(_, id)| flags[id] != A | B) {
            let Some((_, id)) = queue.pop() else { break };
            walked += 1;
            if walked > MAX_AHEAD_BEHIND {
                return Ok(None);
            }
            let flag = flags[&id];
            match flag {
                A => walk.only_a.push(id),
                B => walk.only_b += 1,
                // Popped in generation order, so every descendant was painted before: the first
                // common commit popped is a best common ancestor.
                _ => {
                    walk.base.get_or_insert(id);
                }
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
        if walk.base.is_none() {
            walk.base = queue.peek().map(|(_, id)| *id);
        }
        Ok(Some(walk))
    }

    /// How many commits `a` has that `b` lacks, and `b` has that `a` lacks.
    fn ahead_behind(&self, a: ObjectId, b: ObjectId) -> Result<Option<(usize, usize)>, String> {
        Ok(self.walk(a, b)?.map(|w| (w.only_a.len(), w.only_b)))
    }
}

/// The combined CI status of a commit (the API's `commits/{sha}/status`), linked to its runs;
/// nothing when no workflow ran for it.
async fn ci_status(state: &AppState, ctx: &Ctx, repo: &Repo, sha: &str) -> Markup {
    let status = crate::runs::commit_status(
        State(state.clone()),
        crate::extract::Caller(ctx.viewer.0.clone()),
        Path((repo.owner.clone(), repo.name.clone(), sha.to_owned())),
    )
    .await;
    let Ok(axum::Json(status)) = status else { return html! {} };
    if status.statuses.is_empty() {
        return html! {};
    }
    let (class, mark) = match status.state.as_str() {
        "success" => ("ok", "✓"),
        "failure" | "error" => ("bad", "✗"),
        _ => ("running", "●"),
    };
    let title: Vec<String> = status.statuses.iter().map(|s| s.description.clone()).collect();
    let run = status.statuses.first().map(|s| s.run_id).unwrap_or_default();
    html! {
        " "
        a class={ "state " (class) } href={ "/" (repo.owner) "/" (repo.name) "/actions/runs/" (run) } title=(title.join("\n"))
            aria-label={ "CI: " (status.state) } { (mark) }
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
    let may_write = ctx.may(&repo, gitstratum_platform::Role::Write);
    // The CI status of the most recently committed branches (one lookup each).
    let mut statuses = Vec::with_capacity(list.len());
    for (i, (_, shown, _)) in list.iter().enumerate() {
        statuses.push(if i < MAX_BRANCH_STATUSES {
            ci_status(&state, &ctx, &repo, &shown.id.to_string()).await
        } else {
            html! {}
        });
    }
    let body = html! {
        (repo_header(&ctx, &repo, "branches"))
        table.refs {
            thead { tr { th { "Branch" } th { "Last commit" } th { "Behind | Ahead" } th {} } }
            tbody {
                @for ((name, shown, counts), status) in list.iter().zip(&statuses) {
                    tr {
                        td {
                            a href={ (base) "/tree/" (enc(name)) } { (name) }
                            @if *name == repo.default_branch { " " span.badge { "default" } }
                            (status)
                        }
                        td { a href={ (base) "/commit/" (shown.id) } { (shown.text.summary()) } " · " (when(shown.text.committer.time, now)) }
                        td {
                            @match counts {
                                Some((ahead, behind)) => { (behind) " | " (ahead) }
                                None => @if *name == repo.default_branch { "—" } @else { "many" },
                            }
                        }
                        td {
                            @if *name != repo.default_branch {
                                a href={ (base) "/compare/" (enc(&repo.default_branch)) "..." (enc(name)) } { "Compare" }
                                @if may_write {
                                    " "
                                    (ctx.button(&format!("{base}/branches/delete"), Some(("branch", name)), "Delete", Some(&format!("Delete branch {name}"))))
                                }
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
        (repo_header(&ctx, &repo, "tags"))
        @if list.is_empty() { p { "No tags yet." } }
        table.refs {
            tbody {
                @for (name, shown) in &list {
                    tr {
                        td { a href={ (base) "/tree/" (enc(name)) } { (name) } }
                        td { a href={ (base) "/commit/" (shown.id) } { code { (&shown.id.to_string()[..7]) } } " · " (when(shown.text.committer.time, now)) }
                    }
                }
            }
        }
    };
    ctx.respond(StatusCode::OK, &format!("Tags · {}/{}", repo.owner, repo.name), body)
}

/// The most commits a comparison lists.
const MAX_COMPARED: usize = 250;

/// Splits a compare spec (`base...head`, `base..head`, or just `head` against `default`).
fn compare_spec<'a>(spec: &'a str, default: &'a str) -> (&'a str, &'a str, bool) {
    if let Some((base, head)) = spec.split_once("...") {
        (base, head, true)
    } else if let Some((base, head)) = spec.split_once("..") {
        (base, head, false)
    } else {
        (default, spec, true)
    }
}

/// `/{owner}/{repo}/compare/{base}...{head}`: the commits `head` has that `base` lacks, and what
/// they changed since the two met (their merge base, as GitHub and `git diff base...head`
/// show); with `..`, the two trees compared directly.
pub(super) async fn compare(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((owner, name, spec)): Path<(String, String, String)>,
) -> Response {
    let (repo, git) = match readable(&state, &ctx, &owner, &name).await {
        Ok(r) => r,
        Err(page) => return page,
    };
    let (base_name, head_name, three_dots) = compare_spec(&spec, &repo.default_branch);
    let (base_name, head_name) = (base_name.to_owned(), head_name.to_owned());
    let (b, h) = (base_name.clone(), head_name.clone());
    let read = blocking(&ctx, move || {
        let (Some((_, base, rest_b)), Some((_, head, rest_h))) = (git.split_ref(&b)?, git.split_ref(&h)?) else {
            return Ok(None);
        };
        if !rest_b.is_empty() || !rest_h.is_empty() {
            return Ok(None);
        }
        git.comparison(base, head, three_dots).map(Some)
    })
    .await;
    let (mut commits, counted, changes, truncated) = match read {
        Ok(Some(found)) => found,
        Ok(None) => return ctx.not_found(),
        Err(page) => return page,
    };
    // Oldest first, as GitHub lists a comparison (the walk found them newest first, by
    // generation: reversed, parents come before their children).
    commits.reverse();
    let now = state.now().0;
    let base = format!("/{}/{}", repo.owner, repo.name);
    let body = html! {
        (repo_header(&ctx, &repo, "branches"))
        h2 { "Comparing " code { (base_name) } (if three_dots { "..." } else { ".." }) code { (head_name) } }
        @match counted {
            Some((ahead, behind)) => p.meta {
                code { (head_name) } " is " (ahead) " commits ahead of and " (behind) " behind " code { (base_name) } "."
                @if ahead > MAX_COMPARED { " The first " (MAX_COMPARED) " are listed." }
            },
            None => p.meta { "These histories are too far apart to list their commits; the trees are compared directly." },
        }
        @if !commits.is_empty() {
            ol.commits {
                @for c in &commits {
                    li {
                        a.summary href={ (base) "/commit/" (c.id) } { (c.text.summary()) }
                        div.meta { (c.text.author.name) " committed " (when(c.text.committer.time, now)) " · " code { (&c.id.to_string()[..7]) } }
                    }
                }
            }
        }
        @if ctx.viewer.0.is_some() && three_dots && counted.is_some_and(|(ahead, _)| ahead > 0) {
            form.stack.new-pull method="post" action={ (base) "/pulls" } {
                h3 { "Open a pull request" }
                input type="hidden" name="csrf" value=(ctx.csrf);
                input type="hidden" name="base" value=(base_name);
                input type="hidden" name="head" value=(head_name);
                label for="pull-title" { "Title" }
                input id="pull-title" type="text" name="title" required maxlength="256"
                    value=(commits.last().map(|c| c.text.summary().to_owned()).unwrap_or_default());
                label for="pull-body" { "Description (Markdown)" }
                textarea id="pull-body" name="body" rows="6" {}
                label { input type="checkbox" name="draft" value="true"; " Open it as a draft" }
                button type="submit" { "Open a pull request" }
            }
        }
        @if changes.is_empty() { p { "There is nothing to compare: the trees are the same." } }
        @else { (changes_view(&changes, truncated, &Notes::new())) }
    };
    ctx.respond(StatusCode::OK, &format!("Comparing {base_name}...{head_name} · {}/{}", repo.owner, repo.name), body)
}

#[derive(serde::Deserialize)]
pub(super) struct DeleteBranch {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    branch: String,
}

/// `POST /{owner}/{repo}/branches/delete` (`csrf`, `branch`): deletes a branch as a push of its
/// deletion would (writers; never the default branch), through the ref log, so CI and webhooks
/// see it.
pub(super) async fn delete_branch(
    State(state): State<AppState>,
    ctx: Ctx,
    headers: axum::http::HeaderMap,
    Path((owner, name)): Path<(String, String)>,
    axum::Form(form): axum::Form<DeleteBranch>,
) -> Response {
    let Some(p) = ctx.viewer.0.clone() else { return ctx.not_found() };
    let repo = match ctx.authorized_repo(&state, &owner, &name, gitstratum_platform::Role::Write).await {
        Ok(r) => r,
        Err(page) => return page,
    };
    if !csrf_ok(&headers, &form.csrf) {
        return ctx.respond(
            StatusCode::FORBIDDEN,
            "Branches",
            html! { p.error { "The form expired; go back and try again." } },
        );
    }
    // Gone already or moved since the page was read: the list as it is now shows that.
    match crate::branches::delete_branch(&state, &p, &repo, &form.branch, None).await {
        Ok(_) => axum::response::Redirect::to(&format!("/{}/{}/branches", repo.owner, repo.name)).into_response(),
        Err(e) if e.status.is_client_error() => {
            ctx.respond(e.status, "Branches", html! { p.error role="alert" { (e.message) } })
        }
        Err(e) => ctx.failed(e.message),
    }
}

/// What a comparison shows: the commits `head` has that `base` lacks (newest first, at most
/// [`MAX_COMPARED`]), how many each side has that the other lacks (`None`: too far apart to
/// walk), and the changes from where they met (`three_dots`; else from `base`) to `head`.
type Comparison = (Vec<Shown>, Option<(usize, usize)>, Vec<ShownChange>, bool);

impl Git {
    fn comparison(&self, base: ObjectId, head: ObjectId, three_dots: bool) -> Result<Comparison, String> {
        let walk = self.walk(head, base)?;
        let from = match (&walk, three_dots) {
            (Some(w), true) => w.base,
            _ => Some(base),
        };
        let commits: Vec<Shown> = match &walk {
            Some(w) => w
                .only_a
                .iter()
                .take(MAX_COMPARED)
                .filter_map(|id| self.commit(*id).transpose())
                .map(|r| r.map(|(_, shown)| shown))
                .collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        let old_tree = match from {
            Some(id) => self.commit(id)?.map(|(c, _)| c.tree),
            None => None,
        };
        let (new, _) = self.commit(head)?.ok_or("the head commit is missing")?;
        let (changes, truncated) = self.changes(old_tree, new.tree)?;
        let counted = walk.as_ref().map(|w| (w.only_a.len(), w.only_b));
        Ok((commits, counted, changes, truncated))
    }
}

/// A pull request's proposal, as its Files tab shows it: the head's commits the base lacks
/// (oldest first) and the diff from where the two met to the head (`git diff base...head`), with
/// `notes` under their lines; and the paths it changes.
pub(super) async fn proposal(
    state: &AppState,
    ctx: &Ctx,
    repo: &Repo,
    base: &str,
    head: &str,
    notes: &Notes,
) -> Result<(Markup, Vec<String>), Response> {
    let git = Git { objects: state.git().objects().clone(), refs: state.git().refs().clone(), id: RepoId(repo.id) };
    let (Ok(base), Ok(head)) = (ObjectId::from_hex(base.as_bytes()), ObjectId::from_hex(head.as_bytes())) else {
        return Ok((html! { p.note { "Its commits are not known yet." } }, Vec::new()));
    };
    let (mut commits, _, changes, truncated) = blocking(ctx, move || git.comparison(base, head, true)).await?;
    commits.reverse();
    let now = state.now().0;
    let base_url = format!("/{}/{}", repo.owner, repo.name);
    let paths = changes.iter().map(|c| c.change.path.clone()).collect();
    let markup = html! {
        h3 { (commits.len()) @if commits.len() == 1 { " commit" } @else { " commits" } }
        ol.commits {
            @for c in &commits {
                li {
                    a.summary href={ (base_url) "/commit/" (c.id) } { (c.text.summary()) }
                    div.meta { (c.text.author.name) " committed " (when(c.text.committer.time, now)) " · " code { (&c.id.to_string()[..7]) } }
                }
            }
        }
        @if changes.is_empty() { p { "No files changed." } }
        @else { (changes_view(&changes, truncated, notes)) }
    };
    Ok((markup, paths))
}
