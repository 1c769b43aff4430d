//! A pull request's timeline (`…/pulls/{pull_number}/timeline`: what happened to it, in order) and
//! its checks (`…/pulls/{pull_number}/checks`: the CI of its current head, each job and the
//! combined state).

use axum::Json;
use axum::extract::{Path, State};
use gitstratum_ci::ingest::pull_event_key;
use gitstratum_ci::{Run, RunState};
use gitstratum_platform::{Pull, Repo, Role};
use serde::Serialize;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::Caller;
use crate::protection::CheckState;
use crate::pulls::{UserRef, find_pull, pulls};
use crate::repos::authorize_repo;

/// The most platform events one timeline reads.
const MAX_EVENTS: u64 = 2000;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TimelineItem {
    /// `committed` (the head moved forward), `head_ref_force_pushed` (the head moved to a
    /// commit that does not contain the old one), `reviewed`, `line-commented`, `closed`,
    /// `reopened`, `merged`, `converted_to_draft`, `ready_for_review`, `renamed` (edited) or
    /// `workflow_run` (a CI run of the pull request, with its state now).
    pub event: String,
    pub actor: Option<UserRef>,
    pub created_at: String,
    /// The head after the event (`committed`, `head_ref_force_pushed`), the reviewed commit,
    /// the commented commit, or the commit a run ran on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha: Option<String>,
    /// The head before (`committed`, `head_ref_force_pushed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    /// A review's state (`approved`, `changes_requested`, `commented`), a run's status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// A run's conclusion, once completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conclusion: Option<String>,
    /// A review's or a comment's text; a run's workflow name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// A line comment's file and line (`null` line: outdated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<i64>,
    /// A review's, a comment's or a run's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
}

impl TimelineItem {
    fn new(event: &str, actor: Option<&str>, at: gitstratum_core::Timestamp) -> TimelineItem {
        TimelineItem {
            event: event.to_owned(),
            actor: actor.map(|login| UserRef { login: login.to_owned() }),
            created_at: at.to_rfc3339(),
            sha: None,
            before: None,
            state: None,
            conclusion: None,
            body: None,
            path: None,
            line: None,
            id: None,
        }
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/repos/{owner}/{repo}/pulls/{pull_number}/timeline",
    operation_id = "pull_timeline",
    tag = "pulls",
    security((), ("token" = [])),
    summary = "What happened to a pull request, in order: pushes and force pushes, reviews, line comments, CI runs, closing, reopening, merging",
    responses((status = 200, description = "The timeline, oldest first", body = Vec<TimelineItem>), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn timeline(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((owner, name, number)): Path<(String, String, i64)>,
) -> Result<Json<Vec<TimelineItem>>, ApiError> {
    let repo = authorize_repo(&state, caller.as_ref(), &owner, &name, Role::Read).await?;
    let pull = find_pull(&state, &repo, number).await?;
    let events = state.store().pull_events(pull.id, MAX_EVENTS).await?;
    let reviews = state.store().list_reviews(pull.id).await?;
    let service = pulls(&state);
    // (time, order within the same time, item)
    let mut items: Vec<(i64, i64, TimelineItem)> = Vec::new();
    let mut head: Option<String> = None;
    let mut keys = Vec::new();
    // Merged is final: the last close of a merged pull request is its merge.
    let merge_event =
        events.iter().rposition(|e| e.event == "pull_request" && e.action == "closed").filter(|_| pull.merged);
    for (index, event) in events.iter().enumerate() {
        keys.extend([pull_event_key(event.id, false), pull_event_key(event.id, true)]);
        let named = event.pull.as_ref();
        let at = event.created_at;
        let mut item = match (event.event.as_str(), event.action.as_str()) {
            ("pull_request", "opened") => {
                head = named.map(|n| n.head_sha.clone());
                continue;
            }
            ("pull_request", "synchronize") => {
                let new = named.map(|n| n.head_sha.clone());
                let before = head.replace(new.clone().unwrap_or_default());
                // A force push: the new head does not contain the old one (or the old one is
                // gone from storage).
                let forced = match (&before, &new) {
                    (Some(old), Some(new)) => !service.head_in_base(repo.id, old, new).await.unwrap_or(false),
                    _ => false,
                };
                let mut item = TimelineItem::new(
                    if forced { "head_ref_force_pushed" } else { "committed" },
                    Some(&event.actor),
                    at,
                );
                item.sha = new;
                item.before = before;
                item
            }
            ("pull_request", "closed") if merge_event == Some(index) => {
                let mut item = TimelineItem::new("merged", pull.merged_by.as_deref(), at);
                item.sha = pull.merge_commit_sha.clone();
                item
            }
            ("pull_request", "closed" | "reopened" | "converted_to_draft" | "ready_for_review") => {
                TimelineItem::new(&event.action, Some(&event.actor), at)
            }
            ("pull_request", "edited") => TimelineItem::new("renamed", Some(&event.actor), at),
            ("pull_request_review", "submitted") => {
                let Some(review) = named.and_then(|n| n.review_id).and_then(|id| reviews.iter().find(|r| r.id == id))
                else {
                    continue;
                };
                let mut item = TimelineItem::new("reviewed", Some(&review.reviewer), at);
                item.state = Some(review.state.as_str().to_ascii_lowercase());
                item.body = Some(review.body.clone()).filter(|b| !b.is_empty());
                item.sha = Some(review.commit_sha.clone());
                item.id = Some(review.id);
                item
            }
            _ => continue,
        };
        if item.actor.as_ref().is_some_and(|a| a.login.is_empty()) {
            item.actor = None;
        }
        items.push((at.0, 0, item));
    }
    for comment in state.store().list_comments(pull.id).await? {
        let mut item = TimelineItem::new("line-commented", Some(&comment.author), comment.created_at);
        item.body = Some(comment.body);
        item.path = Some(comment.path);
        item.line = comment.line;
        item.sha = Some(comment.original_commit);
        item.id = Some(comment.id);
        items.push((comment.created_at.0, 1, item));
    }
    for run in state.ci().runs_for_events(repo.id, &keys).await? {
        let mut item = TimelineItem::new("workflow_run", Some(&run.actor), run.created_at);
        item.state = Some(run.state.as_str().to_owned());
        item.conclusion = run.conclusion.map(|c| c.as_str().to_owned());
        item.body = Some(run.workflow_name.clone());
        item.sha = Some(run.commit_sha.clone());
        item.id = Some(run.id);
        items.push((run.created_at.0, 2, item));
    }
    items.sort_by_key(|(at, order, _)| (*at, *order));
    Ok(Json(items.into_iter().map(|(_, _, item)| item).collect()))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CheckRun {
    /// The job's name.
    pub name: String,
    /// Its workflow's name.
    pub workflow: String,
    /// The event its run ran for (`pull_request`, `push`, …).
    pub event: String,
    /// `queued`, `in_progress` or `completed`.
    pub status: String,
    pub conclusion: Option<String>,
    pub run_id: i64,
    pub job_id: i64,
    /// The commit it ran on (for `pull_request`: the test merge).
    pub head_sha: String,
    pub html_url: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PullChecks {
    /// `success` (every check passed or was skipped), `failure` (one failed or was
    /// cancelled), `pending` (one has not finished), or `none` (no CI ran).
    pub state: String,
    /// The head the checks are of.
    pub head_sha: String,
    pub total_count: usize,
    pub check_runs: Vec<CheckRun>,
}

#[utoipa::path(
    get,
    path = "/api/v1/repos/{owner}/{repo}/pulls/{pull_number}/checks",
    operation_id = "pull_checks",
    tag = "pulls",
    security((), ("token" = [])),
    summary = "The checks of a pull request's current head: the jobs of the newest run of each workflow for each event (its pull_request runs on the test merge, and push runs of the head commit), and the combined state",
    responses((status = 200, description = "The checks", body = PullChecks), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn checks(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((owner, name, number)): Path<(String, String, i64)>,
) -> Result<Json<PullChecks>, ApiError> {
    let repo = authorize_repo(&state, caller.as_ref(), &owner, &name, Role::Read).await?;
    let pull = find_pull(&state, &repo, number).await?;
    Ok(Json(pull_checks(&state, &repo, &pull).await?))
}

/// The runs of a pull request's current head, newest of each workflow and event.
pub(crate) async fn head_runs(state: &AppState, repo: &Repo, pull: &Pull) -> Result<Vec<Run>, ApiError> {
    let events = state.store().pull_events(pull.id, MAX_EVENTS).await?;
    let keys: Vec<String> = events
        .iter()
        .filter(|e| e.pull.as_ref().is_some_and(|n| n.head_sha == pull.head_sha))
        .flat_map(|e| [pull_event_key(e.id, false), pull_event_key(e.id, true)])
        .collect();
    let mut runs = state.ci().runs_for_events(repo.id, &keys).await?;
    // Push runs of the head commit, in the repository the head lives in when it is this one.
    if pull.head_repo_id == Some(repo.id) {
        runs.extend(
            state.ci().runs_for_commit(repo.id, &pull.head_sha).await?.into_iter().filter(|r| r.event == "push"),
        );
    }
    runs.sort_by_key(|r| std::cmp::Reverse(r.id));
    let mut seen = std::collections::HashSet::new();
    runs.retain(|r| seen.insert((r.workflow_path.clone(), r.event.clone())));
    runs.reverse();
    Ok(runs)
}

async fn pull_checks(state: &AppState, repo: &Repo, pull: &Pull) -> Result<PullChecks, ApiError> {
    let mut check_runs = Vec::new();
    let mut states = Vec::new();
    for run in head_runs(state, repo, pull).await? {
        if run.state != RunState::Completed {
            states.push(CheckState::Pending);
        }
        for job in state.ci().jobs(run.id).await? {
            states.push(CheckState::of_job(job.state, job.conclusion));
            check_runs.push(CheckRun {
                html_url: format!(
                    "{}/{}/{}/actions/runs/{}/job/{}",
                    state.public_url(),
                    repo.owner,
                    repo.name,
                    run.id,
                    job.id
                ),
                name: job.name,
                workflow: run.workflow_name.clone(),
                event: run.event.clone(),
                status: job.state.status().to_owned(),
                conclusion: job.conclusion.map(|c| c.as_str().to_owned()),
                run_id: run.id,
                job_id: job.id,
                head_sha: run.commit_sha.clone(),
            });
        }
    }
    let state_word = match CheckState::combined(states) {
        _ if check_runs.is_empty() => "none",
        CheckState::Failed => "failure",
        CheckState::Pending => "pending",
        CheckState::Passed | CheckState::Missing => "success",
    };
    Ok(PullChecks {
        state: state_word.to_owned(),
        head_sha: pull.head_sha.clone(),
        total_count: check_runs.len(),
        check_runs,
    })
}
