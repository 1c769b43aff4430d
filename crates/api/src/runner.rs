//! The runner protocol, under `/api/v1/runner/`: HTTP and JSON, for runners holding a token of
//! scope `ci:runner`. A runner registers (its labels), long-polls for a job (the request is held
//! open until a job it can run is queued, or `wait` seconds pass), acknowledges the job it was
//! handed (or the job returns to the queue), heartbeats to keep it (the reply says whether to stop),
//! sends its log as frames addressed by byte offset (resends are harmless; the reply is the offset
//! the server has), reports steps and completes the job. Every report names the job's attempt, so
//! a stale runner's messages change nothing.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use gitstratum_ci::{Annotation, Beat, Conclusion, Runner};
use gitstratum_platform::{Principal, Scope};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, Authenticated};
use crate::repos::require_scope;

/// The longest a job request is held open.
pub const MAX_WAIT_SECONDS: u64 = 30;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct Register {
    /// 1 to 100 characters, no control characters.
    #[schema(pattern = r"^[^\x00-\x1f\x7f-\x9f]{1,100}$")]
    pub name: String,
    /// 1 to 50 labels, each 1 to 100 printable ASCII characters without spaces.
    #[schema(min_items = 1, max_items = 50)]
    pub labels: Vec<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Registered {
    pub id: i64,
    pub name: String,
    pub labels: Vec<String>,
    /// Send a heartbeat this often while running a job.
    pub heartbeat_seconds: i64,
    /// A job whose runner is silent this long is taken back.
    pub lease_seconds: i64,
}

/// [`valid_label`] as a JSON Schema pattern.
pub(crate) const LABEL_PATTERN: &str = "^[!-~]{1,100}$";

fn valid_label(label: &str) -> bool {
    !label.is_empty() && label.len() <= 100 && label.chars().all(|c| c.is_ascii_graphic())
}

#[utoipa::path(
    post,
    path = "/api/v1/runner/register",
    tag = "runner",
    summary = "Register a runner",
    request_body = Register,
    responses((status = 201, description = "Registered", body = Registered), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn register(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiJson(body): ApiJson<Register>,
) -> Result<(StatusCode, Json<Registered>), ApiError> {
    require_scope(&caller, Scope::CiRunner)?;
    if body.name.is_empty() || body.name.chars().count() > 100 || body.name.chars().any(char::is_control) {
        return Err(ApiError::validation("name", "a runner's name has 1 to 100 printable characters"));
    }
    if body.labels.is_empty() || body.labels.len() > 50 || !body.labels.iter().all(|l| valid_label(l)) {
        return Err(ApiError::validation(
            "labels",
            "1 to 50 labels, each 1 to 100 printable characters without spaces",
        ));
    }
    let id = state.ci().register_runner(caller.account.id, &body.name, &body.labels, state.now()).await?;
    Ok((
        StatusCode::CREATED,
        Json(Registered {
            id,
            name: body.name,
            labels: body.labels,
            heartbeat_seconds: state.ci().timing().heartbeat_ms / 1000,
            lease_seconds: state.ci().timing().lease_ms / 1000,
        }),
    ))
}

/// The runner, when it is the caller's.
pub(crate) async fn own_runner(state: &AppState, caller: &Principal, id: i64) -> Result<Runner, ApiError> {
    require_scope(caller, Scope::CiRunner)?;
    match state.ci().get_runner(id).await? {
        Some(runner) if runner.account_id == caller.account.id => Ok(runner),
        _ => Err(ApiError::not_found("runner.not_found", format!("you have no runner {id}"))),
    }
}

/// The job, when the calling runner `id` holds its `attempt` running; else a lost lease (409).
pub(crate) async fn held_job(
    state: &AppState,
    caller: &Principal,
    id: i64,
    job: i64,
    attempt: i64,
) -> Result<gitstratum_ci::Job, ApiError> {
    let runner = own_runner(state, caller, id).await?;
    match state.ci().get_job(job).await? {
        Some(j)
            if j.runner_id == Some(runner.id)
                && j.attempt == attempt
                && j.state == gitstratum_ci::JobState::InProgress =>
        {
            Ok(j)
        }
        _ => Err(lease_lost(job)),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Seconds to hold the request open for a job (0 to 30; default 30).
    pub wait: Option<u64>,
}

/// A job handed to a runner.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobLease {
    pub job_id: i64,
    pub attempt: i64,
    pub run_id: i64,
    pub run_number: i64,
    pub repository: String,
    pub clone_url: String,
    pub sha: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub event: String,
    pub actor: String,
    /// The job's key in the workflow.
    pub job_key: String,
    pub name: String,
    #[schema(value_type = Option<Object>)]
    pub matrix: Option<serde_json::Value>,
    /// The validated workflow (GitStratum's model), of which the runner runs `jobs[job_key]`.
    #[schema(value_type = Object)]
    pub workflow: serde_json::Value,
    /// The `inputs` context (`workflow_dispatch` runs).
    #[schema(value_type = Object)]
    pub inputs: serde_json::Value,
    /// The `needs` context: `{<id>: {result, outputs}}` of the jobs it needs.
    #[schema(value_type = Object)]
    pub needs: serde_json::Value,
    /// Reads this repository (Git over HTTP, as the password) while the job runs; shown once.
    pub token: String,
    pub heartbeat_seconds: i64,
    /// Acknowledge within this many seconds, or the job goes back to the queue.
    pub ack_seconds: i64,
    /// The most of one step's log the server keeps (past it: a truncation marker).
    pub log_step_max_bytes: u64,
    /// The secrets the job's workflow references (the `secrets` context), opened; the runner masks
    /// their values in the log.
    pub secrets: std::collections::BTreeMap<String, String>,
    /// The `vars` context: the organization's and the repository's variables.
    pub vars: std::collections::BTreeMap<String, String>,
    /// The server's URL (`GITHUB_SERVER_URL`; the API is under `/api/v1`).
    pub server_url: String,
    pub repository_id: i64,
    pub repository_owner_id: i64,
    /// The account that started the run, when it still exists.
    pub actor_id: Option<i64>,
    /// The workflow file's path in the repository (`GITHUB_WORKFLOW_REF`).
    pub workflow_path: String,
    /// The event's payload, as GitHub would write it (`GITHUB_EVENT_PATH`, `github.event`).
    #[schema(value_type = Object)]
    pub event_payload: serde_json::Value,
    /// The `strategy` context: `fail-fast`, `job-index`, `job-total`, `max-parallel`.
    #[schema(value_type = Object)]
    pub strategy: serde_json::Value,
}

/// The payload of the event that started a run: a push as the ref-change log recorded it (with
/// its head commit), a pull request event (`pull_request`), a dispatch with its inputs.
async fn event_payload(
    state: &AppState,
    run: &gitstratum_ci::Run,
    repo: &gitstratum_platform::Repo,
    inputs: &serde_json::Value,
) -> serde_json::Value {
    use gitstratum_ci::payload;
    let public_url = state.public_url().to_owned();
    if let Some((Some(id), _)) = gitstratum_ci::ingest::pull_event_of(&run.event_key) {
        let payload = match state.store().platform_event(id).await {
            Ok(Some(event)) => payload::pull_event_payload(state.store(), &event, &public_url).await.ok().flatten(),
            _ => None,
        };
        return payload
            .unwrap_or_else(|| serde_json::json!({"repository": payload::repository_json(repo, &public_url)}));
    }
    if run.event != "push" {
        return payload::dispatch_payload(&run.git_ref, inputs, &run.workflow_path, &run.actor, repo, &public_url);
    }
    let Some(seq) = run.event_key.strip_prefix("push:").and_then(|s| s.parse::<u64>().ok()) else {
        return serde_json::json!({"ref": run.git_ref, "after": run.commit_sha, "repository": payload::repository_json(repo, &public_url)});
    };
    let objects = state.git().objects().clone();
    let refs = state.git().refs().clone();
    let repo = repo.clone();
    let read = tokio::task::spawn_blocking(move || {
        let event = refs.events_after(seq.saturating_sub(1), 1).ok()?.into_iter().find(|e| e.seq == seq)?;
        let head = event.new.and_then(|id| payload::commit_json(objects.as_ref(), event.repo, id));
        Some(payload::push_payload(&event, &repo, &public_url, head))
    });
    read.await.ok().flatten().unwrap_or_else(|| serde_json::json!({"ref": run.git_ref, "after": run.commit_sha}))
}

/// Whether a run was started by a `pull_request` event of a pull request whose head is in another
/// repository (a fork). When the event or the pull request cannot be found any more, it counts
/// as one: the answer decides whether secrets are handed out.
async fn from_fork(state: &AppState, run: &gitstratum_ci::Run) -> Result<bool, ApiError> {
    let Some((id, false)) = gitstratum_ci::ingest::pull_event_of(&run.event_key) else { return Ok(false) };
    let Some(event) = (match id {
        Some(id) => state.store().platform_event(id).await?,
        None => None,
    }) else {
        return Ok(true);
    };
    let Some(named) = event.pull else { return Ok(true) };
    let pull = state.store().get_pull_by_id(named.pull_id).await?;
    Ok(pull.is_none_or(|p| p.head_repo_id != Some(run.repo_id)))
}

#[utoipa::path(
    post,
    path = "/api/v1/runner/{id}/jobs/request",
    tag = "runner",
    summary = "Wait for a job (long poll)",
    params(WaitQuery),
    responses((status = 200, description = "A job, to acknowledge", body = JobLease), (status = 204, description = "No job within the wait"), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn request(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<i64>,
    Query(q): Query<WaitQuery>,
) -> Result<Response, ApiError> {
    let runner = own_runner(&state, &caller, id).await?;
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(q.wait.unwrap_or(MAX_WAIT_SECONDS).min(MAX_WAIT_SECONDS));
    loop {
        // Listen before looking, so a job queued between the look and the wait still wakes us.
        let queued = state.ci().job_queued();
        tokio::pin!(queued);
        queued.as_mut().enable();
        if state.ci().is_closing() {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        if let Some(lease) = state.ci().lease_job(&runner, state.now()).await? {
            let repo = state.store().get_repo_by_id(lease.run.repo_id).await?;
            let workflow: serde_json::Value =
                lease.workflow.as_deref().and_then(|w| serde_json::from_str(w).ok()).unwrap_or_default();
            // The secrets its workflow references (no others), and the variables. A run of a pull
            // request from a fork gets no secrets at all, as on GitHub (its token, like every
            // job's, only reads the repository).
            let (secrets, vars) = match &repo {
                Some(repo) if from_fork(&state, &lease.run).await? => {
                    (Default::default(), state.store().variables_for_repo(repo).await?)
                }
                Some(repo) => {
                    let wanted = gitstratum_workflow::refs::referenced_secrets(&workflow, &lease.job.job_key).names();
                    match state.store().secrets_for_repo(repo, wanted.as_deref(), state.secrets_key()).await {
                        Ok(secrets) => (secrets, state.store().variables_for_repo(repo).await?),
                        Err(e) => {
                            // Not this runner's problem, nor worth retrying: the job fails, saying why.
                            tracing::error!(job = lease.job.id, error = %e, "cannot open the secrets of a job");
                            let why = format!("not run: its secrets cannot be opened on this server ({e})");
                            let job = &lease.job;
                            state.ci().fail_lease(job.id, runner.id, job.attempt, &why, state.now()).await?;
                            continue;
                        }
                    }
                }
                None => Default::default(),
            };
            let mut inputs: serde_json::Value =
                lease.inputs.as_deref().and_then(|i| serde_json::from_str(i).ok()).unwrap_or_default();
            let mut secrets = secrets;
            // A job a reusable workflow call brought in gets the inputs and secrets its callers
            // pass, evaluated now that the jobs they need have finished.
            let frames: Vec<gitstratum_workflow::model::CallFrame> =
                serde_json::from_value(workflow["jobs"][&lease.job.job_key]["call"].clone()).unwrap_or_default();
            if !frames.is_empty() {
                match call_values(&state, &lease, &frames, inputs.clone(), &secrets, &vars).await {
                    Ok((call_inputs, call_secrets)) => {
                        inputs = call_inputs;
                        secrets = call_secrets;
                    }
                    Err(why) => {
                        let job = &lease.job;
                        let why = format!("not run: {why}");
                        state.ci().fail_lease(job.id, runner.id, job.attempt, &why, state.now()).await?;
                        continue;
                    }
                }
            }
            let event = match &repo {
                Some(repo) => event_payload(&state, &lease.run, repo, &inputs).await,
                None => serde_json::Value::Null,
            };
            let actor_id = state.store().find_account(&lease.run.actor).await?.map(|a| a.id);
            let (repository_id, repository_owner_id) = repo.as_ref().map_or((0, 0), |r| (r.id, r.owner_id));
            let repository = repo.map(|r| format!("{}/{}", r.owner, r.name)).unwrap_or_default();
            let body = JobLease {
                job_id: lease.job.id,
                attempt: lease.job.attempt,
                run_id: lease.run.id,
                run_number: lease.run.run_number,
                clone_url: format!("{}/{repository}.git", state.public_url()),
                repository,
                sha: lease.run.commit_sha,
                git_ref: lease.run.git_ref,
                event: lease.run.event,
                actor: lease.run.actor,
                job_key: lease.job.job_key,
                name: lease.job.name,
                matrix: lease.job.matrix.as_deref().and_then(|m| serde_json::from_str(m).ok()),
                workflow,
                inputs,
                needs: lease.needs,
                token: lease.token.expose().to_owned(),
                heartbeat_seconds: state.ci().timing().heartbeat_ms / 1000,
                ack_seconds: state.ci().timing().ack_ms / 1000,
                log_step_max_bytes: state.logs().step_cap(),
                secrets,
                vars,
                server_url: state.public_url().to_owned(),
                repository_id,
                repository_owner_id,
                actor_id,
                workflow_path: lease.run.workflow_path.clone(),
                event_payload: event,
                strategy: lease.strategy,
            };
            metrics::counter!("gitstratum_ci_jobs_leased_total").increment(1);
            return Ok(Json(body).into_response());
        }
        if tokio::time::timeout_at(deadline, queued).await.is_err() {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
    }
}

/// The `inputs` and `secrets` of a job inside reusable workflow calls: its callers' `with:` and
/// `secrets:`, outermost first, over the run's inputs and the repository's secrets.
async fn call_values(
    state: &AppState,
    lease: &gitstratum_ci::Lease,
    frames: &[gitstratum_workflow::model::CallFrame],
    inputs: serde_json::Value,
    secrets: &std::collections::BTreeMap<String, String>,
    vars: &std::collections::BTreeMap<String, String>,
) -> Result<(serde_json::Value, std::collections::BTreeMap<String, String>), String> {
    use gitstratum_workflow::expr::{Dict, Value};
    let jobs = state.ci().jobs(lease.run.id).await.map_err(|e| e.to_string())?;
    let repo = state.store().get_repo_by_id(lease.run.repo_id).await.map_err(|e| e.to_string())?;
    let repository = repo.map(|r| format!("{}/{}", r.owner, r.name)).unwrap_or_default();
    let github = lease.run.github_context(&repository);
    let dict = |m: &std::collections::BTreeMap<String, String>| -> Value {
        Value::object(m.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect::<Dict>())
    };
    let top = gitstratum_workflow::call::CallValues {
        github,
        vars: dict(vars),
        inputs: Value::from_json(inputs),
        secrets: dict(secrets),
    };
    let needs_of = |keys: &[String]| gitstratum_ci::orchestrate::needs_context(&jobs, keys);
    let values = gitstratum_workflow::call::callee_values(frames, top, &needs_of)?;
    let secrets = match &values.secrets {
        Value::Object(dict) => dict.iter().map(|(k, v)| (k.to_owned(), v.to_coerced_string())).collect(),
        _ => Default::default(),
    };
    Ok((values.inputs.to_json(), secrets))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct AttemptBody {
    pub attempt: i64,
}

pub(crate) fn lease_lost(job: i64) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "job.lease_lost", format!("job {job} is not yours (any more); stop it"))
}

#[utoipa::path(
    post,
    path = "/api/v1/runner/{id}/jobs/{job}/ack",
    tag = "runner",
    summary = "Acknowledge a leased job: it counts as started",
    request_body = AttemptBody,
    responses((status = 204, description = "Started"), (status = "4XX", description = "Refused (409: the lease is gone)", body = crate::error::ErrorDoc))
)]
pub async fn ack(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path((id, job)): Path<(i64, i64)>,
    ApiJson(body): ApiJson<AttemptBody>,
) -> Result<StatusCode, ApiError> {
    let runner = own_runner(&state, &caller, id).await?;
    if state.ci().ack_job(job, runner.id, body.attempt, state.now()).await? {
        // An earlier attempt lost its runner: its log is finished as it is.
        if body.attempt > 1 {
            if let Err(e) = state.logs().finish(job, body.attempt - 1).await {
                tracing::warn!(job, error = %e, "cannot finish the log of the previous attempt");
            }
            state.logs().close(job, body.attempt - 1);
        }
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(lease_lost(job))
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BeatReply {
    /// `continue`; `cancel` (the run was cancelled: stop the steps, run those with `if: always()`
    /// or `cancelled()`, complete the job as `cancelled`); or `stop` (the job is no longer this
    /// runner's: kill it and report nothing more).
    pub action: String,
    pub heartbeat_seconds: i64,
}

#[utoipa::path(
    post,
    path = "/api/v1/runner/{id}/jobs/{job}/heartbeat",
    tag = "runner",
    summary = "Keep a running job",
    request_body = AttemptBody,
    responses((status = 200, description = "What to do", body = BeatReply), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn heartbeat(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path((id, job)): Path<(i64, i64)>,
    ApiJson(body): ApiJson<AttemptBody>,
) -> Result<Json<BeatReply>, ApiError> {
    let runner = own_runner(&state, &caller, id).await?;
    let action = match state.ci().heartbeat(job, runner.id, body.attempt, state.now()).await? {
        Beat::Continue => "continue",
        Beat::Cancel => "cancel",
        Beat::Stop => "stop",
    };
    Ok(Json(BeatReply { action: action.to_owned(), heartbeat_seconds: state.ci().timing().heartbeat_ms / 1000 }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    pub attempt: i64,
    /// The step the frame belongs to: 0 before the first step, the step's number, or one more
    /// than the last step for what comes after. A step's frames all come before the next step's.
    #[serde(default)]
    pub step: i64,
    /// Where in the step's log this frame starts.
    pub offset: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LogAck {
    /// Send the step's next frame from here.
    pub offset: u64,
}

#[utoipa::path(
    post,
    path = "/api/v1/runner/{id}/jobs/{job}/logs",
    tag = "runner",
    summary = "Append a log frame at a byte offset of a step's log",
    params(LogQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, description = "Stored up to (past the step's cap, bytes are acknowledged and dropped)", body = LogAck), (status = "4XX", description = "Refused (409 `log.gap`: the server has less of the step than the offset; resend from the `X-Log-Offset` header's offset)", body = crate::error::ErrorDoc))
)]
pub async fn logs(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path((id, job)): Path<(i64, i64)>,
    Query(q): Query<LogQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    held_job(&state, &caller, id, job, q.attempt).await?;
    if q.step < 0 || q.step > 10_000 {
        return Err(ApiError::validation("step", "a step number from 0 to 10000"));
    }
    match state.logs().append(job, q.attempt, q.step, q.offset, &body).await {
        Ok(offset) => Ok(Json(LogAck { offset }).into_response()),
        Err(e @ gitstratum_ci::logs::LogError::Gap { have, .. }) => {
            let mut response = ApiError::new(StatusCode::CONFLICT, "log.gap", e.to_string()).into_response();
            response.headers_mut().insert("x-log-offset", have.into());
            Ok(response)
        }
        Err(e) => Err(ApiError::internal(e)),
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct StepReport {
    pub attempt: i64,
    /// Absent when the step starts; its conclusion when it ends.
    #[schema(pattern = "^(success|failure|cancelled|skipped|timed_out)$")]
    pub conclusion: Option<String>,
    /// What the step printed as `::error::`, `::warning::` or `::notice::` (with its ending; at
    /// most 30).
    #[serde(default)]
    #[schema(max_items = 30)]
    pub annotations: Vec<AnnotationReport>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct AnnotationReport {
    /// `error`, `warning` or `notice`.
    #[schema(pattern = "^(error|warning|notice)$")]
    pub level: String,
    pub message: String,
    pub title: Option<String>,
    pub file: Option<String>,
    pub line: Option<i64>,
    pub end_line: Option<i64>,
    pub col: Option<i64>,
}

/// The most annotations one step report may carry.
const MAX_STEP_ANNOTATIONS: usize = 30;

fn annotations(job: i64, attempt: i64, step: i64, reports: Vec<AnnotationReport>) -> Result<Vec<Annotation>, ApiError> {
    if reports.len() > MAX_STEP_ANNOTATIONS {
        return Err(ApiError::validation("annotations", format!("at most {MAX_STEP_ANNOTATIONS} per step")));
    }
    let clip = |text: String, chars: usize| -> String {
        if text.chars().count() > chars { text.chars().take(chars).collect() } else { text }
    };
    reports
        .into_iter()
        .map(|a| {
            if !matches!(a.level.as_str(), "error" | "warning" | "notice") {
                return Err(ApiError::validation("annotations", "an annotation's level is error, warning or notice"));
            }
            Ok(Annotation {
                job_id: job,
                attempt,
                step,
                level: a.level,
                message: clip(a.message, 4096),
                title: a.title.map(|t| clip(t, 256)),
                file: a.file.map(|f| clip(f, 1024)),
                line: a.line,
                end_line: a.end_line,
                col: a.col,
            })
        })
        .collect()
}

fn parse_conclusion(text: &str) -> Result<Conclusion, ApiError> {
    Conclusion::parse(text)
        .ok_or_else(|| ApiError::validation("conclusion", "one of success, failure, cancelled, skipped, timed_out"))
}

#[utoipa::path(
    post,
    path = "/api/v1/runner/{id}/jobs/{job}/steps/{number}",
    tag = "runner",
    summary = "Report a step starting or ending",
    request_body = StepReport,
    responses((status = 204, description = "Recorded"), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn step(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path((id, job, number)): Path<(i64, i64, i64)>,
    ApiJson(body): ApiJson<StepReport>,
) -> Result<StatusCode, ApiError> {
    let runner = own_runner(&state, &caller, id).await?;
    let conclusion = body.conclusion.as_deref().map(parse_conclusion).transpose()?;
    let annotations = annotations(job, body.attempt, number, body.annotations)?;
    let ci = state.ci();
    if ci
        .report_step(
            job,
            runner.id,
            body.attempt,
            gitstratum_ci::StepReport { number, conclusion, annotations: &annotations },
            state.now(),
        )
        .await?
    {
        return Ok(StatusCode::NO_CONTENT);
    }
    // A repeated report of what is already recorded is fine; anything else is a lost lease.
    match ci.get_job(job).await? {
        Some(j)
            if j.runner_id == Some(runner.id)
                && j.attempt == body.attempt
                && j.state == gitstratum_ci::JobState::InProgress =>
        {
            Ok(StatusCode::NO_CONTENT)
        }
        _ => Err(lease_lost(job)),
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct Complete {
    pub attempt: i64,
    #[schema(pattern = "^(success|failure|cancelled|skipped|timed_out)$")]
    pub conclusion: String,
    /// The job's `outputs`, evaluated by the runner.
    #[serde(default)]
    pub outputs: std::collections::BTreeMap<String, String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/runner/{id}/jobs/{job}/complete",
    tag = "runner",
    summary = "Complete a job",
    request_body = Complete,
    responses((status = 204, description = "Completed (or already was, by this runner and attempt)"), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn complete(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path((id, job)): Path<(i64, i64)>,
    ApiJson(body): ApiJson<Complete>,
) -> Result<StatusCode, ApiError> {
    let runner = own_runner(&state, &caller, id).await?;
    let conclusion = parse_conclusion(&body.conclusion)?;
    let outputs = (!body.outputs.is_empty())
        .then(|| serde_json::to_string(&body.outputs))
        .transpose()
        .map_err(ApiError::internal)?;
    if outputs.as_ref().is_some_and(|o| o.len() > 1 << 20) {
        return Err(ApiError::validation("outputs", "a job's outputs may have at most 1 MiB"));
    }
    // The log first: a completed job's log is finished (compressed) and durable.
    state.logs().finish(job, body.attempt).await.map_err(ApiError::internal)?;
    let completed =
        state.ci().complete_job(job, runner.id, body.attempt, conclusion, outputs.as_deref(), state.now()).await?;
    state.logs().close(job, body.attempt);
    // Uploads it did not finish are dropped.
    state.artifacts().discard_staged(job, body.attempt).await;
    if completed {
        // The finished log's size joins the attempt's usage.
        match state.logs().stored_bytes(job, body.attempt).await {
            Ok(bytes) => state.ci().record_log_bytes(job, body.attempt, bytes).await?,
            Err(e) => tracing::warn!(job, error = %e, "cannot measure a finished log"),
        }
        metrics::counter!("gitstratum_ci_jobs_completed_total", "conclusion" => conclusion.as_str()).increment(1);
        return Ok(StatusCode::NO_CONTENT);
    }
    match state.ci().get_job(job).await? {
        Some(j)
            if j.runner_id == Some(runner.id)
                && j.attempt == body.attempt
                && j.state == gitstratum_ci::JobState::Completed =>
        {
            Ok(StatusCode::NO_CONTENT)
        }
        _ => Err(lease_lost(job)),
    }
}
