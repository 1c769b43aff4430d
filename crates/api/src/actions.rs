//! Actions from repositories of this installation, for the runner of a job: `uses:
//! owner/repo[/path]@ref` resolved to a commit, and that commit's files as an archive (the
//! artifact format), so the runner can cache it by commit id.
//!
//! Who may use which action repository (`gitstratum_ci::references::may_use`): the job's own
//! repository, any public repository, a private repository of the same owner as the job's
//! repository (GitHub's "accessible from repositories owned by the same user or organization"),
//! and one whose CI settings share it with the installation. Any other repository is answered as
//! missing, as if it did not exist. When no repository here has the name, the installation's
//! upstream sources (`[actions] sources`) are asked, in order (`gitstratum_ci::references::locate`).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use gitstratum_ci::references::{self, Located, Unusable};
use gitstratum_platform::Principal;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::Authenticated;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ActionQuery {
    pub attempt: i64,
    /// A tag, a branch or a full commit id (tags first, as git resolves a name).
    #[serde(rename = "ref")]
    #[param(min_length = 1, max_length = 255, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]+$")]
    pub git_ref: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ResolvedAction {
    /// `owner/name` as stored.
    pub repository: String,
    /// The commit the reference names now.
    pub commit: String,
    /// The upstream repository's URL, for an action of an upstream source; `null` for one of
    /// this installation.
    pub source: Option<String>,
}

/// Where the job's action `owner/name@git_ref` is read from and its commit: a repository of this
/// installation the job may use, else an upstream source's (404 when neither has it, never saying
/// whether a repository the job may not use exists; 502 when an upstream source failed).
async fn locate(
    state: &AppState,
    caller: &Principal,
    (id, job, attempt): (i64, i64, i64),
    owner: &str,
    name: &str,
    git_ref: &str,
) -> Result<Located, ApiError> {
    let job = crate::runner::held_job(state, caller, id, job, attempt).await?;
    let lost = || crate::runner::lease_lost(job.id);
    let run = state.ci().get_run(job.run_id).await?.ok_or_else(lost)?;
    let job_repo = state.store().get_repo_by_id(run.repo_id).await?.ok_or_else(lost)?;
    references::locate(state.reference_stores(), &job_repo, owner, name, git_ref, "job").await.map_err(|e| match e {
        Unusable::Repository(m) => ApiError::not_found("action.not_found", name_for_message(&m)),
        Unusable::Reference(m) => ApiError::not_found("action.ref_not_found", name_for_message(&m)),
        Unusable::Upstream(m) => ApiError::new(StatusCode::BAD_GATEWAY, "action.upstream_failed", m),
        Unusable::Internal(m) => ApiError::internal(m),
    })
}

fn name_for_message(name: &str) -> String {
    name.chars().take(600).collect()
}

/// A reference as the runner sends it: 1 to 255 characters, no control characters (as the
/// runner's parser of `uses:` allows).
fn checked(q: &ActionQuery) -> Result<&str, ApiError> {
    let r = q.git_ref.as_str();
    if r.is_empty() || r.chars().count() > 255 || r.chars().any(char::is_control) {
        return Err(ApiError::validation("ref", "a tag, branch or commit id of 1 to 255 characters"));
    }
    Ok(r)
}

#[utoipa::path(
    get,
    path = "/api/v1/runner/{id}/jobs/{job}/actions/{owner}/{repo}",
    tag = "runner",
    summary = "Resolve an action's repository and reference (tag, branch or commit) to a commit, for a job that may use it",
    params(ActionQuery),
    responses((status = 200, description = "Resolved", body = ResolvedAction), (status = "4XX", description = "Refused (404: no such repository this job may use, here or upstream, or no such reference)", body = crate::error::ErrorDoc), (status = 502, description = "An upstream source failed", body = crate::error::ErrorDoc))
)]
pub async fn resolve_action(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path((id, job, owner, name)): Path<(i64, i64, String, String)>,
    Query(q): Query<ActionQuery>,
) -> Result<Json<ResolvedAction>, ApiError> {
    let git_ref = checked(&q)?;
    let located = locate(&state, &caller, (id, job, q.attempt), &owner, &name, git_ref).await?;
    let commit = located.commit.to_string();
    // The job's record says which commit each action it used was.
    let uses = format!("{}@{git_ref}", located.name);
    state.ci().record_job_action(job, q.attempt, &uses, &commit).await?;
    Ok(Json(ResolvedAction { repository: located.name, commit, source: located.source }))
}

#[utoipa::path(
    get,
    path = "/api/v1/runner/{id}/jobs/{job}/actions/{owner}/{repo}/archive",
    tag = "runner",
    summary = "An action repository's files at a commit, as an archive (the artifact format, zstd-compressed)",
    params(ActionQuery),
    responses((status = 200, description = "The archive", content_type = "application/zstd"), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc), (status = 502, description = "An upstream source failed", body = crate::error::ErrorDoc))
)]
pub async fn action_archive(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path((id, job, owner, name)): Path<(i64, i64, String, String)>,
    Query(q): Query<ActionQuery>,
) -> Result<Response, ApiError> {
    let git_ref = checked(&q)?;
    let located = locate(&state, &caller, (id, job, q.attempt), &owner, &name, git_ref).await?;
    let Located { objects, repo: repo_id, commit, .. } = located;
    let body = crate::artifacts::blocking_body("an action archive", move |out| {
        let mut writer = gitstratum_artifact::Writer::new(out)?;
        gitstratum_ci::source::each_file(objects.as_ref(), repo_id, commit, &mut |path, mode, data| {
            if gitstratum_artifact::check_entry_path(path).is_err() {
                return Ok(()); // a name the archive cannot carry (`:` or `*` in it, say)
            }
            writer.add(path, mode, data.len() as u64, &mut &data[..])
        })
        .map_err(std::io::Error::other)?;
        writer.finish()?;
        Ok(())
    });
    Ok(([(header::CONTENT_TYPE, "application/zstd")], body).into_response())
}
