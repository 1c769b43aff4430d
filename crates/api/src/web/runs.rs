//! A repository's CI pages: its runs (filtered by status, paginated), a run with its jobs, and a
//! job with its steps' logs. The same reads as the API (`runs::run_detail`, the log store), under
//! the same policy. While a run is in progress the run and job pages reload themselves every
//! few seconds (a `refresh` hint; no script).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use super::{Ctx, when};
use crate::AppState;
use crate::runs::{JobBody, RunBody};

/// Runs on one page.
const PER_PAGE: u64 = 30;
/// The most bytes of one step's log shown in the page (the rest: the API's raw log).
const MAX_STEP_LOG: usize = 1 << 20;

pub(super) fn outcome(status: &str, conclusion: Option<&str>) -> Markup {
    let (class, text) = match (status, conclusion) {
        ("completed", Some("success")) => ("ok", "✓ success"),
        ("completed", Some("failure")) => ("bad", "✗ failure"),
        ("completed", Some("timed_out")) => ("bad", "✗ timed out"),
        ("completed", Some("cancelled")) => ("muted", "⊘ cancelled"),
        ("completed", Some("skipped")) => ("muted", "– skipped"),
        ("completed", _) => ("muted", "completed"),
        ("in_progress", _) => ("running", "● in progress"),
        _ => ("muted", "○ queued"),
    };
    html! { span class={ "state " (class) } { (text) } }
}

fn seconds(rfc3339: &str) -> Option<i64> {
    gitstratum_core::Timestamp::parse_rfc3339(rfc3339).map(|t| t.0 / 1000)
}

/// Text a log line may show: ANSI escape sequences and other control characters removed (colours
/// are not kept yet), tabs kept.
pub(crate) fn inert(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // CSI: ESC [ params… final byte (0x40–0x7e); OSC: ESC ] … BEL or ESC \; else ESC x.
                match chars.next() {
                    Some('[') => {
                        for c in chars.by_ref() {
                            if ('\u{40}'..='\u{7e}').contains(&c) {
                                break;
                            }
                        }
                    }
                    Some(']') => {
                        while let Some(c) = chars.next() {
                            if c == '\u{7}' || (c == '\u{1b}' && chars.peek() == Some(&'\\')) {
                                chars.next_if_eq(&'\\');
                                break;
                            }
                        }
                    }
                    _ => {}
                }
            }
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// A run of a log line's text with one look: a colour class (`c31`…`c37`, `c91`…`c97`) and bold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Styled {
    pub text: String,
    pub colour: Option<u8>,
    pub bold: bool,
}

/// A log line split where its SGR escape sequences (`ESC [ … m`) change the colour or boldness;
/// the sequences themselves, every other escape and control character are dropped (as
/// [`inert`]). Only the basic and bright foreground colours and bold are kept.
pub(crate) fn styled(line: &str) -> Vec<Styled> {
    let mut out: Vec<Styled> = Vec::new();
    let (mut colour, mut bold) = (None, false);
    let mut rest = line;
    while !rest.is_empty() {
        let (text, after) = match rest.find("\u{1b}[") {
            Some(at) => (&rest[..at], Some(&rest[at + 2..])),
            None => (rest, None),
        };
        let text = inert(text);
        if !text.is_empty() {
            match out.last_mut() {
                Some(last) if last.colour == colour && last.bold == bold => last.text.push_str(&text),
                _ => out.push(Styled { text, colour, bold }),
            }
        }
        let Some(after) = after else { break };
        // Parameters up to the final byte; only `m` (SGR) changes the look.
        let end = after.find(|c: char| ('\u{40}'..='\u{7e}').contains(&c)).unwrap_or(after.len());
        if after[end..].starts_with('m') {
            let params = &after[..end];
            for p in if params.is_empty() { vec!["0"] } else { params.split(';').collect() } {
                match p.parse::<u8>() {
                    Ok(0) => (colour, bold) = (None, false),
                    Ok(1) => bold = true,
                    Ok(22) => bold = false,
                    Ok(39) => colour = None,
                    Ok(c @ (30..=37 | 90..=97)) => colour = Some(c),
                    _ => {}
                }
            }
        }
        rest = after.get(end + 1..).unwrap_or("");
    }
    out
}

/// A log line as the page shows it: coloured runs, and the runner's `##[error]`, `##[warning]`
/// and `##[notice]` lines set apart (the marker itself not shown).
fn log_line(line: &str) -> Markup {
    let markers = [("##[error]", "error"), ("##[warning]", "warning"), ("##[notice]", "notice")];
    let (class, line) = markers
        .iter()
        .find_map(|(m, class)| line.strip_prefix(m).map(|rest| (Some(*class), rest)))
        .unwrap_or((None, line));
    html! {
        span class=[class] {
            @for run in styled(line) {
                @if run.colour.is_none() && !run.bold { (run.text) }
                @else { span class={ @if let Some(c) = run.colour { "c" (c) } @if run.bold { " b" } } { (run.text) } }
            }
        }
    }
}

/// One line of a step's log: its number, the time the runner stamped it with (none on a line
/// the server added, or in a log from before runners stamped lines), and its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LogLine<'a> {
    number: usize,
    stamp: Option<&'a str>,
    text: &'a str,
}

/// A step's log, as lines and the `##[group]` … `##[endgroup]` runs of lines folded under their
/// title (as GitHub folds them; groups do not nest, a new group ends the open one).
enum LogBlock<'a> {
    Line(LogLine<'a>),
    /// `title`: the group's own line (its text without the marker). `open`: not ended yet (a
    /// live page's script puts the next lines in it).
    Group {
        title: LogLine<'a>,
        lines: Vec<LogLine<'a>>,
        open: bool,
    },
}

fn log_blocks(text: &str) -> Vec<LogBlock<'_>> {
    let mut out = Vec::new();
    let mut open: Option<LogBlock<'_>> = None;
    for (i, line) in text.lines().enumerate() {
        let (stamp, line) = gitstratum_core::Timestamp::split_log_stamp(line);
        let line = LogLine { number: i + 1, stamp, text: line };
        if let Some(title) = line.text.strip_prefix("##[group]") {
            out.extend(open.take());
            open = Some(LogBlock::Group { title: LogLine { text: title, ..line }, lines: Vec::new(), open: false });
        } else if line.text.starts_with("##[endgroup]") {
            out.extend(open.take());
        } else if let Some(LogBlock::Group { lines, .. }) = &mut open {
            lines.push(line);
        } else {
            out.push(LogBlock::Line(line));
        }
    }
    if let Some(LogBlock::Group { open, .. }) = &mut open {
        *open = true;
    }
    out.extend(open);
    out
}

/// The parts of a numbered, linkable log line (`#s{step}-L{n}`): its number, its time when
/// `stamps` (`HH:MM:SS` UTC, the whole stamp on hover) and its text.
fn line_parts(step: i64, line: &LogLine<'_>, stamps: bool) -> Markup {
    html! {
        a.num href={ "#s" (step) "-L" (line.number) } { (line.number) }
        @if stamps {
            @if let Some(stamp) = line.stamp { time.ts datetime=(stamp) title=(stamp) { (stamp.get(11..19).unwrap_or(stamp)) } }
            @else { span.ts {} }
        }
        span.t { (log_line(line.text)) }
    }
}

fn numbered(step: i64, line: &LogLine<'_>, stamps: bool) -> Markup {
    html! { div.l id={ "s" (step) "-L" (line.number) } { (line_parts(step, line, stamps)) } }
}

/// A step's log: its lines, groups folded (`data-lines`: how many lines it numbered, for the
/// live script to go on from); with `stamps`, each line's time before it.
fn log_view(step: i64, text: &str, stamps: bool) -> Markup {
    html! {
        div.log data-lines=(text.lines().count()) {
            @for block in log_blocks(text) {
                @match block {
                    LogBlock::Line(line) => (numbered(step, &line, stamps)),
                    LogBlock::Group { title, lines, open } => {
                        details.group data-open=[open.then_some("1")] {
                            summary id={ "s" (step) "-L" (title.number) } { (line_parts(step, &title, stamps)) }
                            @for line in &lines { (numbered(step, line, stamps)) }
                        }
                    }
                }
            }
        }
    }
}

/// `/{owner}/{repo}/actions`: the repository's runs, newest first.
pub(super) async fn list(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((owner, name)): Path<(String, String)>,
    Query(q): Query<crate::runs::RunsQuery>,
) -> Response {
    let repo = match ctx.readable_repo(&state, &owner, &name).await {
        Ok(r) => r,
        Err(page) => return page,
    };
    // A status that names nothing lists everything (the form only offers real ones).
    let filter = q
        .filter()
        .unwrap_or_else(|_| crate::runs::RunsQuery { status: None, ..q.clone() }.filter().unwrap_or_default());
    let page = match state.ci().list_runs(repo.id, q.before, PER_PAGE, &filter).await {
        Ok(p) => p,
        Err(e) => return ctx.failed(e),
    };
    let runs: Vec<RunBody> = page.runs.into_iter().map(|r| RunBody::new(r, &repo)).collect();
    let now = state.now().0;
    let base = format!("/{}/{}", repo.owner, repo.name);
    let field = |v: &Option<String>| v.clone().unwrap_or_default();
    let (status, branch, event, workflow) = (field(&q.status), field(&q.branch), field(&q.event), field(&q.workflow));
    let filtered = [&status, &branch, &event, &workflow].iter().any(|v| !v.is_empty());
    let kept = format!(
        "&status={}&branch={}&event={}&workflow={}",
        super::enc_query(&status),
        super::enc_query(&branch),
        super::enc_query(&event),
        super::enc_query(&workflow)
    );
    let body = html! {
        (super::repo::repo_header(&ctx, &repo, "actions"))
        form.filters method="get" action={ (base) "/actions" } {
            label for="workflow" { "Workflow" }
            input id="workflow" type="text" name="workflow" value=(workflow) placeholder="ci.yml" size="12";
            label for="branch" { "Branch" }
            input id="branch" type="text" name="branch" value=(branch) size="12";
            label for="event" { "Event" }
            select id="event" name="event" {
                @for e in ["", "push", "pull_request", "workflow_dispatch", "workflow_call", "schedule"] {
                    option value=(e) selected[event == e] { @if e.is_empty() { "any" } @else { (e) } }
                }
            }
            label for="status" { "Status" }
            select id="status" name="status" {
                @for s in ["", "queued", "in_progress", "completed", "success", "failure", "cancelled"] {
                    option value=(s) selected[status == s] { @if s.is_empty() { "all" } @else { (s) } }
                }
            }
            button type="submit" { "Filter" }
        }
        @if runs.is_empty() {
            @if filtered { p { "No runs match these filters." } }
            @else { p { "No runs yet. Push a workflow under " code { ".github/workflows/" } " to start one." } }
        }
        ol.runs {
            @for r in &runs {
                li {
                    (outcome(&r.status, r.conclusion.as_deref()))
                    " "
                    a href={ (base) "/actions/runs/" (r.id) } { strong { (r.display_title) } }
                    div.meta {
                        (r.name) " #" (r.run_number) " · " (r.event) " on " code { (r.head_branch) } " by " (r.actor)
                        @if let Some(t) = seconds(&r.created_at) { " · " (when(t, now)) }
                    }
                }
            }
        }
        @if let Some(next) = page.next_before {
            nav.pages { a rel="next" href={ (base) "/actions?before=" (next) (kept) } { "Older" } }
        }
    };
    ctx.respond(StatusCode::OK, &format!("Actions · {}/{}", repo.owner, repo.name), body)
}

/// The run `id` of this repository (a run of another repository is not found here).
async fn run_of(
    state: &AppState,
    ctx: &Ctx,
    owner: &str,
    name: &str,
    id: i64,
) -> Result<(gitstratum_platform::Repo, crate::runs::RunDetail), Response> {
    let repo = ctx.readable_repo(state, owner, name).await?;
    match crate::runs::run_detail(state, id, &repo).await {
        Ok(Some(detail)) if detail.run.repository == format!("{}/{}", repo.owner, repo.name) => Ok((repo, detail)),
        Ok(_) => Err(ctx.not_found()),
        Err(e) => Err(ctx.failed(e)),
    }
}

/// `/{owner}/{repo}/actions/runs/{id}/job/{job}/raw`: the job's whole log as text (the API's
/// `GET /api/v1/jobs/{id}/logs`, under the page's viewer), sandboxed like a raw file.
pub(super) async fn raw_log(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((owner, name, id, job_id)): Path<(String, String, i64, i64)>,
) -> Response {
    let detail = match run_of(&state, &ctx, &owner, &name, id).await {
        Ok((_, detail)) => detail,
        Err(page) => return page,
    };
    if !detail.jobs.iter().any(|j| j.id == job_id) {
        return ctx.not_found();
    }
    let query = crate::runs::JobLogQuery { attempt: None, step: None };
    match crate::runs::job_logs(
        State(state.clone()),
        crate::extract::Caller(ctx.viewer.0.clone()),
        Path(job_id),
        Query(query),
    )
    .await
    {
        Ok(mut response) => {
            let headers = response.headers_mut();
            headers.insert(
                axum::http::header::CONTENT_SECURITY_POLICY,
                axum::http::HeaderValue::from_static("default-src 'none'; sandbox"),
            );
            headers.insert(axum::http::header::X_CONTENT_TYPE_OPTIONS, axum::http::HeaderValue::from_static("nosniff"));
            response
        }
        Err(e) if e.status == StatusCode::GONE => {
            ctx.respond(StatusCode::GONE, "Log", html! { p { "This job's logs were deleted (log retention)." } })
        }
        Err(e) if e.status.is_client_error() => ctx.not_found(),
        Err(e) => ctx.failed(e.message),
    }
}

/// Bytes as people read them (`1.5 MiB`).
fn size(bytes: i64) -> String {
    let units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} bytes") } else { format!("{value:.1} {}", units[unit]) }
}

/// `/{owner}/{repo}/actions/runs/{id}/artifacts/{artifact}`: an artifact of the run as a zip
/// (the API's download, under the page's viewer).
pub(super) async fn artifact(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((owner, name, id, artifact)): Path<(String, String, i64, i64)>,
) -> Response {
    if let Err(page) = run_of(&state, &ctx, &owner, &name, id).await {
        return page;
    }
    match state.artifacts().list(id).await {
        Ok(list) if list.iter().any(|a| a.id == artifact) => {}
        Ok(_) => return ctx.not_found(),
        Err(e) => return ctx.failed(e),
    }
    match crate::artifacts::download(State(state.clone()), crate::extract::Caller(ctx.viewer.0.clone()), Path(artifact))
        .await
    {
        Ok(response) => response,
        Err(e) if e.status == StatusCode::GONE => {
            ctx.respond(StatusCode::GONE, "Artifact", html! { p { "This artifact was deleted (artifact retention)." } })
        }
        Err(e) if e.status.is_client_error() => ctx.not_found(),
        Err(e) => ctx.failed(e.message),
    }
}

/// `1m 5s`, `3s`.
fn duration(seconds: i64) -> String {
    match seconds {
        ..60 => format!("{}s", seconds.max(0)),
        60..3600 => format!("{}m {}s", seconds / 60, seconds % 60),
        _ => format!("{}h {}m", seconds / 3600, seconds % 3600 / 60),
    }
}

/// A job's line; `node` is its graph node's key and `needs` when the line is one (a job alone
/// under its key, not one of a matrix).
fn job_line(base: &str, run: i64, job: &JobBody, node: Option<(&str, String)>) -> Markup {
    let took = job.started_at.as_deref().and_then(seconds).zip(job.completed_at.as_deref().and_then(seconds));
    let (key, needs) = node.unzip();
    html! {
        li data-job=(job.id) data-key=[key] data-needs=[needs] {
            (outcome(&job.status, job.conclusion.as_deref()))
            " "
            a href={ (base) "/actions/runs/" (run) "/job/" (job.id) } { (job.name) }
            @if let Some((start, end)) = took { span.meta { " · " (duration(end - start)) } }
            @if !job.needs.is_empty() { span.meta { " · needs " (job.needs.join(", ")) } }
            @if job.attempt > 1 { span.meta { " · attempt " (job.attempt) } }
            @if !job.annotations.is_empty() { span.meta { " · " (job.annotations.len()) " annotations" } }
            @if let Some(m) = &job.message { pre.message { (m) } }
        }
    }
}

/// The jobs of a run, those of one matrix (one job key) grouped under it, in plan order.
fn job_groups(jobs: &[JobBody]) -> Vec<(&str, Vec<&JobBody>)> {
    let mut groups: Vec<(&str, Vec<&JobBody>)> = Vec::new();
    for job in jobs {
        match groups.iter_mut().find(|(key, _)| *key == job.key) {
            Some((_, members)) => members.push(job),
            None => groups.push((&job.key, vec![job])),
        }
    }
    groups
}

/// A group's state: running while any runs, else the worst conclusion.
fn group_outcome(jobs: &[&JobBody]) -> (&'static str, Option<&'static str>) {
    let has = |c: &str| jobs.iter().any(|j| j.conclusion.as_deref() == Some(c));
    if jobs.iter().any(|j| j.status == "in_progress") {
        ("in_progress", None)
    } else if jobs.iter().any(|j| j.status != "completed") {
        ("queued", None)
    } else if has("failure") || has("timed_out") {
        ("completed", Some("failure"))
    } else if has("cancelled") {
        ("completed", Some("cancelled"))
    } else if jobs.iter().all(|j| j.conclusion.as_deref() == Some("skipped")) {
        ("completed", Some("skipped"))
    } else {
        ("completed", Some("success"))
    }
}

/// The most stages drawn (deeper ones share the last column).
const MAX_STAGES: usize = 64;

/// The jobs laid out by stage: a job's stage is one more than the latest stage of the jobs it
/// `needs` (0 without needs), so the columns read left to right as the run's graph does.
fn stages<'a>(groups: Vec<(&'a str, Vec<&'a JobBody>)>) -> Vec<Vec<(&'a str, Vec<&'a JobBody>)>> {
    let mut depth: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    // Plans are acyclic and list a job after its needs, but a few passes cover any order.
    for _ in 0..groups.len().max(1) {
        let mut changed = false;
        for (key, members) in &groups {
            let needs = members.first().map(|j| j.needs.as_slice()).unwrap_or_default();
            let d = needs.iter().filter_map(|n| depth.get(n.as_str()).map(|d| d + 1)).max().unwrap_or(0);
            if depth.get(key) != Some(&d) {
                depth.insert(key, d);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let mut out: Vec<Vec<(&str, Vec<&JobBody>)>> = Vec::new();
    for group in groups {
        let d = depth.get(group.0).copied().unwrap_or(0).min(MAX_STAGES - 1);
        if out.len() <= d {
            out.resize_with(d + 1, Vec::new);
        }
        out[d].push(group);
    }
    out.retain(|stage| !stage.is_empty());
    out
}

/// A node of the graph: a job, or a matrix's jobs under their key. Its `data-key` and
/// `data-needs` (keys, space-separated) let page.js draw the edges between the columns.
fn group_item(base: &str, run: i64, key: &str, members: &[&JobBody]) -> Markup {
    let needs = members.first().map(|j| j.needs.join(" ")).unwrap_or_default();
    html! {
        @if let [one] = members { (job_line(base, run, one, Some((key, needs)))) }
        @else {
            @let (status, conclusion) = group_outcome(members);
            li.matrix data-key=(key) data-needs=(needs) {
                details open[status != "completed" || conclusion == Some("failure")] {
                    summary { (outcome(status, conclusion)) " " strong { (key) } span.meta { " · " (members.len()) " jobs" } }
                    ul.jobs { @for job in members { (job_line(base, run, job, None)) } }
                }
            }
        }
    }
}

fn jobs_view(base: &str, run: i64, jobs: &[JobBody]) -> Markup {
    let stages = stages(job_groups(jobs));
    html! {
        div.graph {
            @for (i, stage) in stages.iter().enumerate() {
                section.stage aria-label={ "Stage " (i + 1) } {
                    @if stages.len() > 1 { p.meta { "Stage " (i + 1) } }
                    ul.jobs { @for (key, members) in stage { (group_item(base, run, key, members)) } }
                }
            }
        }
    }
}

/// `/{owner}/{repo}/actions/runs/{id}`: the run, its jobs and what went wrong.
pub(super) async fn run(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((owner, name, id)): Path<(String, String, i64)>,
) -> Response {
    run_page(&state, &ctx, &owner, &name, id, StatusCode::OK, None).await
}

async fn run_page(
    state: &AppState,
    ctx: &Ctx,
    owner: &str,
    name: &str,
    id: i64,
    status: StatusCode,
    error: Option<String>,
) -> Response {
    let (repo, detail) = match run_of(state, ctx, owner, name, id).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    // Buttons for those who may act on the run (the API checks again when pressed).
    let may_write = ctx.may(&repo, gitstratum_platform::Role::Write);
    let artifacts = match crate::artifacts::run_artifacts(
        State(state.clone()),
        crate::extract::Caller(ctx.viewer.0.clone()),
        Path(id),
    )
    .await
    {
        Ok(axum::Json(list)) => list.artifacts,
        Err(e) => return ctx.failed(e.message),
    };
    let now = state.now().0;
    let base = format!("/{}/{}", repo.owner, repo.name);
    let r = &detail.run;
    let live = r.status != "completed";
    let events = format!("{base}/actions/runs/{}/events", r.id);
    let body = html! {
        (super::repo::repo_header(ctx, &repo, "actions"))
        h2 id="run-state" data-live-run=[live.then_some(&events)] { (outcome(&r.status, r.conclusion.as_deref())) " " (r.display_title) }
        p.meta {
            (r.name) " #" (r.run_number) " · " (r.event) " on " code { (r.head_branch) } " · commit "
            a href={ (base) "/commit/" (r.head_sha) } { code { (&r.head_sha[..r.head_sha.len().min(7)]) } }
            " · by " (r.actor)
            @if let Some(t) = seconds(&r.created_at) { " · " (when(t, now)) }
        }
        @if let Some(m) = &r.message { pre.message { (m) } }
        @if let Some(e) = &error { p.error role="alert" { (e) } }
        @if may_write {
            div.actions {
                @for (action, label, shown) in [
                    ("cancel", "Cancel run", r.status != "completed"),
                    ("rerun", "Re-run all jobs", r.status == "completed"),
                    ("rerun-failed", "Re-run failed jobs", r.status == "completed" && detail.jobs.iter().any(|j| j.conclusion.as_deref() == Some("failure"))),
                ] {
                    @if shown {
                        (ctx.button(&format!("{base}/actions/runs/{}/{action}", r.id), None, label, None))
                    }
                }
            }
        }
        h3 { "Jobs" }
        (jobs_view(&base, r.id, &detail.jobs))
        @if live { script src="/static/live.js" defer {} }
        @if !artifacts.is_empty() {
            h3 { "Artifacts" }
            table.refs {
                tbody {
                    @for a in &artifacts {
                        tr {
                            td {
                                @if a.expired { (a.name) " " span.badge { "expired" } }
                                @else { a href={ (base) "/actions/runs/" (r.id) "/artifacts/" (a.id) } download { (a.name) } }
                            }
                            td { (size(a.size_in_bytes)) " · " (a.files) " files" }
                            td.meta { code { (a.digest.get(..19).unwrap_or(&a.digest)) } }
                        }
                    }
                }
            }
        }
    };
    // Its script follows a run in progress (job states change in place; at its end the page is
    // read again); without JavaScript it reloads itself.
    let refresh = live.then_some(5);
    ctx.respond_live(status, &format!("{} #{} · {}/{}", r.name, r.run_number, repo.owner, repo.name), body, refresh)
}

/// `/{owner}/{repo}/actions/runs/{id}/events`: the run's state as Server-Sent Events (the API's
/// `GET /api/v1/runs/{id}/events`, under the page's viewer), for the run page's script.
pub(super) async fn run_events(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((owner, name, id)): Path<(String, String, i64)>,
) -> Response {
    if let Err(page) = run_of(&state, &ctx, &owner, &name, id).await {
        return page;
    }
    match crate::live::run_events(State(state.clone()), crate::extract::Caller(ctx.viewer.0.clone()), Path(id)).await {
        Ok(response) => response,
        Err(e) if e.status.is_client_error() => ctx.not_found(),
        Err(e) => ctx.failed(e.message),
    }
}

/// `/{owner}/{repo}/actions/runs/{id}/job/{job}`: the job's steps, each with its log.
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct JobQuery {
    /// `1`: each log line shows the time the runner wrote it.
    #[serde(default)]
    timestamps: Option<String>,
}

pub(super) async fn job(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((owner, name, id, job_id)): Path<(String, String, i64, i64)>,
    Query(q): Query<JobQuery>,
) -> Response {
    let stamps = q.timestamps.as_deref() == Some("1");
    let (repo, detail) = match run_of(&state, &ctx, &owner, &name, id).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let Some(job) = detail.jobs.iter().find(|j| j.id == job_id) else { return ctx.not_found() };
    let stored = match state.ci().get_job(job_id).await {
        Ok(Some(j)) => j,
        Ok(None) => return ctx.not_found(),
        Err(e) => return ctx.failed(e),
    };
    let live = job.status != "completed" && stored.logs_expired_at.is_none();
    // Each step's log as read now; for a job still running, only whole lines (the stream goes on
    // from the end of the last of them).
    let mut logs: Vec<(i64, Result<String, String>)> = Vec::new();
    let mut resume = (0i64, 0u64);
    if stored.logs_expired_at.is_none() {
        for step in &job.steps {
            let text = match state.logs().read_step(job_id, job.attempt, step.number, 0).await {
                Ok(bytes) => {
                    let whole =
                        if live { bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1) } else { bytes.len() };
                    if whole > 0 || step.number == 0 {
                        resume = resume.max((step.number, whole as u64));
                    }
                    let shown = &bytes[..whole.min(MAX_STEP_LOG)];
                    let mut text = String::from_utf8_lossy(shown).into_owned();
                    if whole > MAX_STEP_LOG {
                        text.push_str("\n[shown up to 1 MiB: the whole log is in the API]");
                    }
                    Ok(text)
                }
                Err(e) => Err(e.to_string()),
            };
            logs.push((step.number, text));
        }
    }
    let base = format!("/{}/{}", repo.owner, repo.name);
    let r = &detail.run;
    let stream = format!("{base}/actions/runs/{}/job/{job_id}/stream?from={}:{}", r.id, resume.0, resume.1);
    let body = html! {
        (super::repo::repo_header(&ctx, &repo, "actions"))
        p.crumbs { a href={ (base) "/actions/runs/" (r.id) } { (r.name) " #" (r.run_number) } " / " (job.name) }
        h2 { (outcome(&job.status, job.conclusion.as_deref())) " " (job.name) }
        @if let Some(m) = &job.message { pre.message { (m) } }
        @if stored.logs_expired_at.is_some() { p.note { "This job's logs were deleted (log retention)." } }
        @for a in &job.annotations {
            p.annotation { strong { (a.level) } " " (a.message) }
        }
        div.log-tools {
            label for="log-filter" hidden { "Search the log" }
            input id="log-filter" type="search" data-filter="div.steps" placeholder="Search the log (/)" hidden;
            @let page = format!("{base}/actions/runs/{}/job/{job_id}", r.id);
            @if stamps { a href=(page) { "Hide timestamps" } }
            @else { a href={ (page) "?timestamps=1" } { "Show timestamps" } }
            a href={ (page) "/raw" } { "Raw log" }
        }
        div.steps data-live-log=[live.then_some(&stream)] data-timestamps=[stamps.then_some("1")] {
            @for step in &job.steps {
                details.step data-step=(step.number) open[step.conclusion.as_deref() == Some("failure") || (live && step.status == "in_progress")] {
                    summary { (outcome(&step.status, step.conclusion.as_deref())) " " (step.name) }
                    @match logs.iter().find(|(n, _)| *n == step.number) {
                        Some((_, Ok(text))) => (log_view(step.number, text, stamps)),
                        _ => div.log {},
                    }
                    @if let Some((_, Err(e))) = logs.iter().find(|(n, _)| *n == step.number) {
                        p.note { "The log cannot be read: " (e) }
                    }
                }
            }
        }
        @if live { script src="/static/live.js" defer {} }
    };
    // Without JavaScript, a running job's page reloads itself instead.
    let refresh = (live).then_some(5);
    ctx.respond_live(StatusCode::OK, &format!("{} · {} #{}", job.name, r.name, r.run_number), body, refresh)
}

/// `POST /{owner}/{repo}/actions/runs/{id}/{cancel|rerun|rerun-failed}`: the run page's buttons,
/// through the API's own functions (write access, the run's state); back to the run page.
pub(super) async fn act(
    State(state): State<AppState>,
    ctx: Ctx,
    headers: axum::http::HeaderMap,
    Path((owner, name, id, action)): Path<(String, String, i64, String)>,
    axum::Form(form): axum::Form<super::CsrfForm>,
) -> Response {
    let Some(p) = ctx.viewer.0.clone() else { return axum::response::Redirect::to("/login").into_response() };
    if !super::csrf_ok(&headers, &form.csrf) {
        return run_page(
            &state,
            &ctx,
            &owner,
            &name,
            id,
            StatusCode::FORBIDDEN,
            Some("The form expired; try again.".into()),
        )
        .await;
    }
    // The run must be this repository's (and readable) before anything is done to it.
    if let Err(page) = run_of(&state, &ctx, &owner, &name, id).await {
        return page;
    }
    let done = match action.as_str() {
        "cancel" => crate::runs::cancel_run(&state, &p, id).await,
        "rerun" => crate::runs::rerun_run(&state, &p, id, false).await,
        "rerun-failed" => crate::runs::rerun_run(&state, &p, id, true).await,
        _ => return ctx.not_found(),
    };
    match done {
        Ok(_) => axum::response::Redirect::to(&format!("/{owner}/{name}/actions/runs/{id}")).into_response(),
        Err(e) if e.status.is_client_error() => {
            run_page(&state, &ctx, &owner, &name, id, e.status, Some(e.message)).await
        }
        Err(e) => ctx.failed(e.message),
    }
}

#[derive(serde::Deserialize)]
pub(super) struct StreamQuery {
    from: Option<String>,
}

/// `/{owner}/{repo}/actions/runs/{id}/job/{job}/stream`: the job's log as Server-Sent Events
/// (the API's stream, authorized by the page's viewer), from `?from=STEP:OFFSET` or the
/// `Last-Event-ID` a reconnecting browser sends.
pub(super) async fn stream(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((owner, name, id, job_id)): Path<(String, String, i64, i64)>,
    Query(q): Query<StreamQuery>,
    headers: axum::http::HeaderMap,
) -> Response {
    let (_, detail) = match run_of(&state, &ctx, &owner, &name, id).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    let Some(job) = detail.jobs.iter().find(|j| j.id == job_id) else { return ctx.not_found() };
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(crate::live::parse_resume)
        .or_else(|| q.from.as_deref().and_then(crate::live::parse_resume));
    crate::live::follow_job_log(state.clone(), job_id, job.attempt, resume)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_lose_escapes_and_controls() {
        assert_eq!(inert("\u{1b}[31mred\u{1b}[0m plain"), "red plain");
        assert_eq!(inert("a\u{1b}]0;title\u{7}b"), "ab");
        assert_eq!(inert("x\u{1b}]8;;http://e\u{1b}\\y"), "xy");
        assert_eq!(inert("tab\there\r\u{8}\u{0}"), "tab\there");
        assert_eq!(inert("<script>"), "<script>");
    }

    #[test]
    fn colours_and_markers_are_kept_as_classes_only() {
        let runs = styled("\u{1b}[1;31merror\u{1b}[0m: plain \u{1b}[32mok\u{1b}[39m\u{1b}[2Kend");
        let shown: Vec<(&str, Option<u8>, bool)> = runs.iter().map(|r| (r.text.as_str(), r.colour, r.bold)).collect();
        assert_eq!(
            shown,
            [("error", Some(31), true), (": plain ", None, false), ("ok", Some(32), false), ("end", None, false)]
        );
        let html = log_line("##[error]\u{1b}[31m<b>boom</b>").into_string();
        assert_eq!(html, r#"<span class="error"><span class="c31">&lt;b&gt;boom&lt;/b&gt;</span></span>"#);
        assert_eq!(styled("\u{1b}["), []);
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!((duration(3), duration(65), duration(7260)), ("3s".into(), "1m 5s".into(), "2h 1m".into()));
    }

    #[test]
    fn groups_fold_their_lines_under_their_title() {
        let text = "a\n##[group]Install <x>\nb\nc\n##[endgroup]\nd\n##[group]Open\ne";
        let line = |l: &LogLine<'_>| format!("{}:{}", l.number, l.text);
        let shape: Vec<String> = log_blocks(text)
            .iter()
            .map(|b| match b {
                LogBlock::Line(l) => line(l),
                LogBlock::Group { title, lines, open } => {
                    format!("{}{:?}{open}", line(title), lines.iter().map(line).collect::<Vec<_>>())
                }
            })
            .collect();
        assert_eq!(shape, ["1:a", "2:Install <x>[\"3:b\", \"4:c\"]false", "6:d", "7:Open[\"8:e\"]true"]);
        let html = log_view(1, text, false).into_string();
        assert!(html.contains(r##"<summary id="s1-L2"><a class="num" href="#s1-L2">2</a><span class="t"><span>Install &lt;x&gt;</span></span></summary>"##), "{html}");
        assert!(html.contains(r#"<div class="l" id="s1-L8">"#), "{html}");
    }

    #[test]
    fn runner_stamps_are_taken_off_and_shown_when_asked() {
        let text = "2026-12-04T14:01:20.1230000Z ##[group]Run make\n2026-12-04T14:01:21.0000000Z ok\n2026-12-04T14:01:22.5000000Z ##[endgroup]\nadded by the server";
        let blocks = log_blocks(text);
        let LogBlock::Group { title, lines, open: false } = &blocks[0] else { panic!("a group first") };
        assert_eq!((title.stamp, title.text), (Some("2026-12-04T14:01:20.1230000Z"), "Run make"));
        assert_eq!(lines[0].text, "ok");
        assert!(matches!(blocks[1], LogBlock::Line(LogLine { number: 4, stamp: None, text: "added by the server" })));
        let hidden = log_view(1, text, false).into_string();
        assert!(!hidden.contains("2026-12-04") && !hidden.contains("class=\"ts\""), "{hidden}");
        let shown = log_view(1, text, true).into_string();
        assert!(shown.contains(r#"<time class="ts" datetime="2026-12-04T14:01:21.0000000Z" title="2026-12-04T14:01:21.0000000Z">14:01:21</time><span class="t"><span>ok</span>"#), "{shown}");
        assert!(
            shown.contains(r#"<span class="ts"></span><span class="t"><span>added by the server</span>"#),
            "{shown}"
        );
    }
}
