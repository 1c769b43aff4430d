//! Workflow runs: `/api/v1/repos/{owner}/{repo}/runs` and `/api/v1/runs/{id}`. Reading a run needs
//! read access to its repository; a run of a repository the caller may not see is a 404.

use axum::Json;
use axum::extract::{Path, Query, State};
use gitstratum_ci::{Job, Run, Step};
use gitstratum_platform::{Denial, Repo, Role};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::Caller;
use crate::repos::{authorize_repo, repo_decision};

#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunsQuery {
    /// The `next_cursor` of the previous page.
    pub before: Option<i64>,
    /// Runs per page (default 30; a value outside 1 to 100 is taken as the nearer bound).
    pub limit: Option<i64>,
    /// Only runs with this status (`queued`, `in_progress`, `completed`) or conclusion
    /// (`success`, `failure`, `cancelled`, `skipped`, `timed_out`).
    #[param(pattern = "^(queued|in_progress|completed|success|failure|cancelled|skipped|timed_out)?$")]
    pub status: Option<String>,
    /// Only runs of this branch.
    pub branch: Option<String>,
    /// Only runs started by this event (`push`, `pull_request`, `workflow_dispatch`, …).
    pub event: Option<String>,
    /// Only runs of this workflow: its file name (`ci.yml`) or path.
    pub workflow: Option<String>,
    /// Only runs started by this account.
    pub actor: Option<String>,
}

impl RunsQuery {
    /// The listing's filter; a status that names nothing is an error the caller words.
    pub(crate) fn filter(&self) -> Result<gitstratum_ci::RunFilter, ApiError> {
        let given = |v: &Option<String>| v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned);
        let status = match given(&self.status) {
            None => None,
            Some(text) => Some(gitstratum_ci::RunStatus::parse(&text).ok_or_else(|| {
                ApiError::validation(
                    "status",
                    "one of queued, in_progress, completed, success, failure, cancelled, skipped, timed_out",
                )
            })?),
        };
        Ok(gitstratum_ci::RunFilter {
            status,
            branch: given(&self.branch),
            event: given(&self.event),
            workflow: given(&self.workflow),
            actor: given(&self.actor),
        })
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunBody {
    pub id: i64,
    /// The repository as `owner/name`.
    pub repository: String,
    /// Per repository, from 1.
    pub run_number: i64,
    /// The workflow's name.
    pub name: String,
    /// `run-name`, else the workflow's name.
    pub display_title: String,
    pub path: String,
    /// `push` or `workflow_dispatch`.
    pub event: String,
    pub head_ref: String,
    /// The branch or tag name, without `refs/heads/` or `refs/tags/`.
    pub head_branch: String,
    pub head_sha: String,
    pub actor: String,
    /// `queued`, `in_progress` or `completed`.
    pub status: String,
    /// Once completed: `success`, `failure`, `cancelled`, `skipped` or `timed_out`.
    pub conclusion: Option<String>,
    /// Why the run failed without running (the workflow file's problems).
    pub message: Option<String>,
    pub created_at: String,
    pub run_started_at: Option<String>,
    pub completed_at: Option<String>,
}

impl RunBody {
    pub(crate) fn new(run: Run, repo: &Repo) -> RunBody {
        let branch = run.ref_name().to_owned();
        RunBody {
            id: run.id,
            repository: format!("{}/{}", repo.owner, repo.name),
            run_number: run.run_number,
            name: run.workflow_name,
            display_title: run.title,
            path: run.workflow_path,
            event: run.event,
            head_branch: branch,
            head_ref: run.git_ref,
            head_sha: run.commit_sha,
            actor: run.actor,
            status: run.state.as_str().to_owned(),
            conclusion: run.conclusion.map(|c| c.as_str().to_owned()),
            message: run.message,
            created_at: run.created_at.to_rfc3339(),
            run_started_at: run.started_at.map(|t| t.to_rfc3339()),
            completed_at: run.completed_at.map(|t| t.to_rfc3339()),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StepBody {
    pub number: i64,
    pub name: String,
    pub status: String,
    pub conclusion: Option<String>,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
}

impl From<Step> for StepBody {
    fn from(s: Step) -> Self {
        StepBody {
            number: s.number,
            name: s.name,
            status: s.state.as_str().to_owned(),
            conclusion: s.conclusion.map(|c| c.as_str().to_owned()),
            started_at: s.started_at.map(|t| t.to_rfc3339()),
            completed_at: s.completed_at.map(|t| t.to_rfc3339()),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobBody {
    pub id: i64,
    /// The job's id in the workflow.
    pub key: String,
    /// Shown to people: the job's name, with its matrix values.
    pub name: String,
    /// This instance's matrix values.
    #[schema(value_type = Option<Object>)]
    pub matrix: Option<serde_json::Value>,
    /// Keys of the jobs it waits for.
    pub needs: Vec<String>,
    /// Runner labels it needs; absent until they are known (they may depend on other jobs).
    pub labels: Option<Vec<String>>,
    pub status: String,
    pub conclusion: Option<String>,
    pub attempt: i64,
    /// Why it ended as it did, when that needs saying (skipped, a lost runner).
    pub message: Option<String>,
    /// Its `outputs`, once completed.
    #[schema(value_type = Option<Object>)]
    pub outputs: Option<serde_json::Value>,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    pub steps: Vec<StepBody>,
    /// What this attempt's steps printed as `::error::`, `::warning::` or `::notice::`.
    pub annotations: Vec<AnnotationBody>,
    /// The actions of other repositories this attempt used, each with the commit it resolved
    /// to.
    pub actions: Vec<JobActionBody>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AnnotationBody {
    /// The step's number.
    pub step: i64,
    /// `error`, `warning` or `notice`.
    pub level: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_line: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub col: Option<i64>,
}

impl From<gitstratum_ci::Annotation> for AnnotationBody {
    fn from(a: gitstratum_ci::Annotation) -> Self {
        AnnotationBody {
            step: a.step,
            level: a.level,
            message: a.message,
            title: a.title,
            file: a.file,
            line: a.line,
            end_line: a.end_line,
            col: a.col,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobActionBody {
    /// `owner/repo@ref`, as the workflow named it.
    pub uses: String,
    /// The commit it resolved to.
    pub commit: String,
}

impl JobBody {
    fn new(job: Job, steps: Vec<StepBody>, annotations: Vec<AnnotationBody>, actions: Vec<JobActionBody>) -> JobBody {
        JobBody {
            id: job.id,
            key: job.job_key,
            name: job.name,
            matrix: job.matrix.and_then(|m| serde_json::from_str(&m).ok()),
            needs: job.needs,
            labels: job.runs_on,
            status: job.state.status().to_owned(),
            conclusion: job.conclusion.map(|c| c.as_str().to_owned()),
            attempt: job.attempt,
            message: job.message,
            outputs: job.outputs.and_then(|o| serde_json::from_str(&o).ok()),
            started_at: job.started_at.map(|t| t.to_rfc3339()),
            completed_at: job.completed_at.map(|t| t.to_rfc3339()),
            steps,
            annotations,
            actions,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: RunBody,
    pub jobs: Vec<JobBody>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunPageBody {
    pub runs: Vec<RunBody>,
    /// Pass as `before` for the next page; absent on the last one.
    pub next_cursor: Option<i64>,
}

fn run_not_found(id: i64) -> ApiError {
    ApiError::not_found("run.not_found", format!("no run {id}, or you may not see it"))
}

#[utoipa::path(
    get,
    path = "/api/v1/repos/{owner}/{repo}/runs",
    operation_id = "list_runs",
    tag = "ci",
    security((), ("token" = [])),
    summary = "A repository's workflow runs, newest first",
    params(RunsQuery),
    responses((status = 200, description = "A page of runs", body = RunPageBody), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((owner, name)): Path<(String, String)>,
    Query(q): Query<RunsQuery>,
) -> Result<Json<RunPageBody>, ApiError> {
    let repo = authorize_repo(&state, caller.as_ref(), &owner, &name, Role::Read).await?;
    let limit = q.limit.unwrap_or(30).clamp(1, 100) as u64;
    let page = state.ci().list_runs(repo.id, q.before, limit, &q.filter()?).await?;
    let runs = page.runs.into_iter().map(|r| RunBody::new(r, &repo)).collect();
    Ok(Json(RunPageBody { runs, next_cursor: page.next_before }))
}

#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}",
    operation_id = "get_run",
    tag = "ci",
    security((), ("token" = [])),
    summary = "A run with its jobs and steps",
    responses((status = 200, description = "The run", body = RunDetail), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn get(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
) -> Result<Json<RunDetail>, ApiError> {
    let (_, repo) = readable_run(&state, caller.as_ref(), id).await?;
    Ok(Json(run_detail(&state, id, &repo).await?.ok_or_else(|| run_not_found(id))?))
}

/// The run and its repository, when the caller may act on the repository with `needed` (a run of
/// a repository the caller may not see is missing).
pub(crate) async fn authorize_run(
    state: &AppState,
    caller: Option<&gitstratum_platform::Principal>,
    id: i64,
    needed: Role,
) -> Result<(Run, Repo), ApiError> {
    let run = state.ci().get_run(id).await?.ok_or_else(|| run_not_found(id))?;
    let repo = state.store().get_repo_by_id(run.repo_id).await?.ok_or_else(|| run_not_found(id))?;
    match repo_decision(state, caller, &repo, needed).await? {
        Ok(()) => Ok((run, repo)),
        Err(Denial::Unauthenticated) => Err(ApiError::unauthenticated("authentication required")),
        Err(Denial::Forbidden(reason)) => Err(ApiError::forbidden(reason)),
        Err(Denial::NotFound) => Err(run_not_found(id)),
    }
}

/// The run and its repository, when the caller may read it.
pub(crate) async fn readable_run(
    state: &AppState,
    caller: Option<&gitstratum_platform::Principal>,
    id: i64,
) -> Result<(Run, Repo), ApiError> {
    authorize_run(state, caller, id, Role::Read).await
}

/// The job, when the caller may read its run.
pub(crate) async fn readable_job(
    state: &AppState,
    caller: Option<&gitstratum_platform::Principal>,
    id: i64,
) -> Result<Job, ApiError> {
    let not_found = || ApiError::not_found("job.not_found", format!("no job {id}, or you may not see it"));
    let job = state.ci().get_job(id).await?.ok_or_else(not_found)?;
    match readable_run(state, caller, job.run_id).await {
        Ok(_) => Ok(job),
        Err(e) if e.status == axum::http::StatusCode::NOT_FOUND => Err(not_found()),
        Err(e) => Err(e),
    }
}

/// A run with its jobs and their steps.
pub(crate) async fn run_detail(
    state: &AppState,
    id: i64,
    repo: &Repo,
) -> Result<Option<RunDetail>, gitstratum_platform::Error> {
    let Some(run) = state.ci().get_run(id).await? else { return Ok(None) };
    let jobs = state.ci().jobs(run.id).await?;
    let mut steps = state.ci().steps(run.id).await?;
    let mut annotations = state.ci().annotations(run.id).await?;
    let mut actions = state.ci().job_actions(run.id).await?;
    let jobs = jobs
        .into_iter()
        .map(|job| {
            let (mine, rest): (Vec<Step>, Vec<Step>) = steps.drain(..).partition(|s| s.job_id == job.id);
            steps = rest;
            let (notes, rest): (Vec<_>, Vec<_>) = annotations.drain(..).partition(|a| a.job_id == job.id);
            annotations = rest;
            let (used, rest): (Vec<_>, Vec<_>) = actions.drain(..).partition(|a| a.job_id == job.id);
            actions = rest;
            let used = used.into_iter().map(|a| JobActionBody { uses: a.uses, commit: a.commit_sha }).collect();
            JobBody::new(
                job,
                mine.into_iter().map(Into::into).collect(),
                notes.into_iter().map(Into::into).collect(),
                used,
            )
        })
        .collect();
    Ok(Some(RunDetail { run: RunBody::new(run, repo), jobs }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobLogQuery {
    /// Which attempt's log (default: the job's current attempt).
    pub attempt: Option<i64>,
    /// Only this step's log (0: what the runner said before the first step).
    pub step: Option<i64>,
}

#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}/logs",
    tag = "ci",
    security((), ("token" = [])),
    summary = "A job's log so far (text): its steps' logs one after another, or one step's",
    params(JobLogQuery),
    responses((status = 200, description = "The log", content_type = "text/plain", body = String), (status = 410, description = "The logs were deleted (log retention)", body = crate::error::ErrorDoc), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn job_logs(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
    Query(q): Query<JobLogQuery>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let job = readable_job(&state, caller.as_ref(), id).await?;
    refuse_expired(&job)?;
    let attempt = q.attempt.unwrap_or(job.attempt);
    let log = match q.step {
        Some(step) => state.logs().read_step(id, attempt, step, 0).await,
        None => state.logs().read(id, attempt).await,
    }
    .map_err(ApiError::internal)?;
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], log).into_response())
}

/// 410 for a job whose logs the retention sweeper deleted.
pub(crate) fn refuse_expired(job: &Job) -> Result<(), ApiError> {
    match job.logs_expired_at {
        Some(at) => Err(ApiError::new(
            axum::http::StatusCode::GONE,
            "logs.expired",
            format!("the logs of job {} were deleted on {} (log retention)", job.id, at.to_rfc3339()),
        )),
        None => Ok(()),
    }
}

fn not_now(message: &str) -> ApiError {
    ApiError::new(axum::http::StatusCode::CONFLICT, "run.state", message.to_owned())
}

#[utoipa::path(
    post,
    path = "/api/v1/runs/{id}/cancel",
    tag = "ci",
    summary = "Cancel a run",
    responses((status = 202, description = "Jobs not yet running are cancelled; running ones stop at their runner's next heartbeat"), (status = "4XX", description = "Refused (409: the run has completed)", body = crate::error::ErrorDoc))
)]
pub async fn cancel(
    State(state): State<AppState>,
    crate::extract::Authenticated(caller): crate::extract::Authenticated,
    Path(id): Path<i64>,
) -> Result<axum::http::StatusCode, ApiError> {
    cancel_run(&state, &caller, id).await
}

/// Cancels a run the caller may write to (the API and the run page's button).
pub(crate) async fn cancel_run(
    state: &AppState,
    caller: &gitstratum_platform::Principal,
    id: i64,
) -> Result<axum::http::StatusCode, ApiError> {
    let (run, _) = authorize_run(state, Some(caller), id, Role::Write).await?;
    if state.ci().cancel_run(run.id, state.now()).await? {
        Ok(axum::http::StatusCode::ACCEPTED)
    } else {
        Err(not_now("the run has completed; there is nothing to cancel"))
    }
}

/// Runs a completed run's jobs (or its failed ones) again (the API and the run page's buttons).
pub(crate) async fn rerun_run(
    state: &AppState,
    caller: &gitstratum_platform::Principal,
    id: i64,
    only_failed: bool,
) -> Result<axum::http::StatusCode, ApiError> {
    let (run, _) = authorize_run(state, Some(caller), id, Role::Write).await?;
    if state.ci().rerun(run.id, only_failed, state.now()).await? {
        Ok(axum::http::StatusCode::CREATED)
    } else if run.state != gitstratum_ci::RunState::Completed {
        Err(not_now("the run has not completed; cancel it first or wait"))
    } else {
        Err(not_now("no job of this run failed"))
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/runs/{id}/rerun",
    tag = "ci",
    summary = "Run every job of a completed run again (each as a new attempt)",
    responses((status = 201, description = "Queued again"), (status = "4XX", description = "Refused (409: the run has not completed)", body = crate::error::ErrorDoc))
)]
pub async fn rerun(
    State(state): State<AppState>,
    crate::extract::Authenticated(caller): crate::extract::Authenticated,
    Path(id): Path<i64>,
) -> Result<axum::http::StatusCode, ApiError> {
    rerun_run(&state, &caller, id, false).await
}

#[utoipa::path(
    post,
    path = "/api/v1/runs/{id}/rerun-failed",
    tag = "ci",
    summary = "Run a completed run's failed jobs again, with the jobs that need them",
    responses((status = 201, description = "Queued again"), (status = "4XX", description = "Refused (409: not completed, or nothing failed)", body = crate::error::ErrorDoc))
)]
pub async fn rerun_failed(
    State(state): State<AppState>,
    crate::extract::Authenticated(caller): crate::extract::Authenticated,
    Path(id): Path<i64>,
) -> Result<axum::http::StatusCode, ApiError> {
    rerun_run(&state, &caller, id, true).await
}

/// The commit a branch or tag names now (`main`, `v1`, or a full ref such as `refs/heads/main`),
/// annotated tags peeled; with the full ref it was found under. `None` when there is none.
async fn resolve_commit(
    state: &AppState,
    repo: &Repo,
    name: &str,
) -> Result<Option<(String, gitstratum_store::ObjectId)>, ApiError> {
    let candidates = if name.starts_with("refs/") {
        vec![name.to_owned()]
    } else {
        vec![format!("refs/heads/{name}"), format!("refs/tags/{name}")]
    };
    let git = state.git().clone();
    let repo_id = gitstratum_store::RepoId(repo.id);
    tokio::task::spawn_blocking(move || -> Result<_, String> {
        for git_ref in candidates {
            let Some(id) = git.refs().get(repo_id, &git_ref).map_err(|e| e.to_string())? else { continue };
            let commit = gitstratum_ci::source::peel_to_commit(git.objects().as_ref(), repo_id, id)
                .map_err(|e| e.to_string())?;
            if let Some(commit) = commit {
                return Ok(Some((git_ref, commit)));
            }
        }
        Ok(None)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct DispatchBody {
    /// A branch or tag name, or a full ref (`refs/heads/main`).
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// Values for the workflow's `workflow_dispatch` inputs.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub inputs: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Dispatched {
    pub run_id: i64,
}

#[utoipa::path(
    post,
    path = "/api/v1/repos/{owner}/{repo}/workflows/{file}/dispatches",
    tag = "ci",
    summary = "Start a workflow_dispatch run of a workflow file at a ref",
    request_body = DispatchBody,
    responses((status = 201, description = "The run was created", body = Dispatched), (status = "4XX", description = "Refused (422: unknown ref, no such workflow, a workflow without workflow_dispatch, or bad inputs)", body = crate::error::ErrorDoc))
)]
pub async fn dispatch(
    State(state): State<AppState>,
    crate::extract::Authenticated(caller): crate::extract::Authenticated,
    Path((owner, name, file)): Path<(String, String, String)>,
    crate::extract::ApiJson(body): crate::extract::ApiJson<DispatchBody>,
) -> Result<(axum::http::StatusCode, Json<Dispatched>), ApiError> {
    use gitstratum_ci::ingest::{Decision, Event, plan_run};
    let repo = authorize_repo(&state, Some(&caller), &owner, &name, Role::Write).await?;
    if state.ci().repo_settings(repo.id).await?.disabled {
        return Err(ApiError::forbidden(format!(
            "CI is switched off for {owner}/{name} (its Actions permissions); its admins can switch it on"
        )));
    }
    let Some((git_ref, commit)) = resolve_commit(&state, &repo, &body.git_ref).await? else {
        return Err(ApiError::validation("ref", format!("no branch or tag {:?} in {owner}/{name}", body.git_ref)));
    };
    let git = state.git().clone();
    let repo_id = gitstratum_store::RepoId(repo.id);
    let file_name = file.clone();
    let workflow = tokio::task::spawn_blocking(move || {
        gitstratum_ci::source::workflow_file(git.objects().as_ref(), repo_id, commit, &file_name)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    let commit_id = commit;
    let commit = commit.to_string();
    let Some(workflow) = workflow else {
        return Err(ApiError::validation("file", format!("no workflow file {file:?} at {git_ref}")));
    };
    let key = format!("dispatch:{}", gitstratum_platform::webhooks::delivery_guid().map_err(ApiError::internal)?);
    let event = Event {
        name: "workflow_dispatch",
        key,
        git_ref: &git_ref,
        commit: &commit,
        actor: &caller.account.name,
        head_ref: "",
        base_ref: "",
    };
    let texts = workflow.text.clone().ok();
    let referenced =
        gitstratum_ci::references::read_references(state.reference_stores(), &repo, commit_id, texts).await;
    let mut refusal = None;
    let run =
        plan_run(&repo, &workflow, &event, &referenced, |wf| {
            match gitstratum_workflow::trigger::dispatch_inputs(wf, &body.inputs) {
                None => {
                    refusal = Some(ApiError::validation("file", format!("{file} does not run on workflow_dispatch")));
                    Decision::Skip
                }
                Some(Err(errors)) => {
                    let text: Vec<String> = errors.iter().map(|(n, m)| format!("input {n}: {m}")).collect();
                    refusal = Some(ApiError::validation("inputs", text.join("; ")));
                    Decision::Skip
                }
                Some(Ok(inputs)) => Decision::Run { inputs },
            }
        });
    if let Some(refusal) = refusal {
        return Err(refusal);
    }
    // An invalid file still makes its failed run, as a push would, so the caller sees why.
    let Some(run) = run else { return Err(ApiError::validation("file", "the workflow does not run")) };
    let run_id =
        state.ci().create_run(&run, state.now()).await?.ok_or_else(|| ApiError::internal("duplicate dispatch key"))?;
    metrics::counter!("gitstratum_ci_runs_created_total", "event" => "workflow_dispatch").increment(1);
    Ok((axum::http::StatusCode::CREATED, Json(Dispatched { run_id })))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CommitStatus {
    /// `pending`, `success`, `failure` or `error`: failure or error if any workflow says so,
    /// pending if any is still running (or none ran), else success.
    pub state: String,
    pub sha: String,
    pub total_count: usize,
    pub statuses: Vec<StatusBody>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatusBody {
    /// The workflow's name.
    pub context: String,
    pub state: String,
    pub description: String,
    pub target_url: String,
    pub run_id: i64,
    pub created_at: String,
    pub updated_at: String,
}

#[utoipa::path(
    get,
    path = "/api/v1/repos/{owner}/{repo}/commits/{sha}/status",
    tag = "ci",
    security((), ("token" = [])),
    summary = "The combined status of a commit (a branch or tag name works too): its latest run of each workflow",
    responses((status = 200, description = "The combined status", body = CommitStatus), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn commit_status(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((owner, name, sha)): Path<(String, String, String)>,
) -> Result<Json<CommitStatus>, ApiError> {
    let repo = authorize_repo(&state, caller.as_ref(), &owner, &name, Role::Read).await?;
    let sha = if sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        sha.to_ascii_lowercase()
    } else {
        // A branch or tag: the commit it names now.
        let resolved = resolve_commit(&state, &repo, &sha).await?.map(|(_, commit)| commit.to_string());
        resolved.ok_or_else(|| ApiError::not_found("ref.not_found", format!("no commit, branch or tag {sha:?}")))?
    };
    let mut seen = std::collections::HashSet::new();
    let mut statuses = Vec::new();
    for run in state.ci().runs_for_commit(repo.id, &sha).await? {
        if !seen.insert(run.workflow_path.clone()) {
            continue; // an older run of the same workflow
        }
        let (status, description) = match (run.state, run.conclusion) {
            (gitstratum_ci::RunState::Completed, Some(c)) => match c {
                gitstratum_ci::Conclusion::Success | gitstratum_ci::Conclusion::Skipped => {
                    ("success", format!("{}: {}", run.title, c.as_str()))
                }
                gitstratum_ci::Conclusion::Cancelled => ("error", format!("{}: cancelled", run.title)),
                _ => ("failure", format!("{}: {}", run.title, c.as_str())),
            },
            (s, _) => ("pending", format!("{}: {}", run.title, s.as_str())),
        };
        statuses.push(StatusBody {
            context: run.workflow_name.clone(),
            state: status.to_owned(),
            description,
            target_url: format!("{}/api/v1/runs/{}", state.public_url(), run.id),
            run_id: run.id,
            created_at: run.created_at.to_rfc3339(),
            updated_at: run.completed_at.or(run.started_at).unwrap_or(run.created_at).to_rfc3339(),
        });
    }
    let has = |s: &str| statuses.iter().any(|st| st.state == s);
    let combined = if has("failure") {
        "failure"
    } else if has("error") {
        "error"
    } else if statuses.is_empty() || has("pending") {
        "pending"
    } else {
        "success"
    };
    Ok(Json(CommitStatus { state: combined.to_owned(), sha, total_count: statuses.len(), statuses }))
}
