//! Actions from repositories of this installation, for the runner of a job: `uses:
//! owner/repo[/path]@ref` resolved to a commit, and that commit's files as an archive (the
//! artifact format), so the runner can cache it by commit id.
//!
//! Who may use which action repository (`gitstratum_ci::references::may_use`): the job's own
//! repository, any public repository, a private repository of the same owner as the job's
//! repository (GitHub's "accessible from repositories owned by the same user or organization"),
//! and one whose CI settings share it with the installation. Any other repository is answered as
//! missing, as if it did not exist.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use gitstratum_platform::{Principal, Repo};
use gitstratum_store::{ObjectId, RepoId};
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
}

/// The action repository, when the job may use it; else 404 (never saying it exists).
async fn usable_repo(
    state: &AppState,
    caller: &Principal,
    id: i64,
    job: i64,
    attempt: i64,
    owner: &str,
    name: &str,
) -> Result<Repo, ApiError> {
    let job = crate::runner::held_job(state, caller, id, job, attempt).await?;
    let lost = || crate::runner::lease_lost(job.id);
    let run = state.ci().get_run(job.run_id).await?.ok_or_else(lost)?;
    let job_repo = state.store().get_repo_by_id(run.repo_id).await?.ok_or_else(lost)?;
    let missing = || {
        ApiError::not_found("action.not_found", format!("no repository {owner}/{name} this job may use actions from"))
    };
    let repo = state.store().get_repo(owner, name).await?.ok_or_else(missing)?;
    if gitstratum_ci::references::may_use(state.ci(), &job_repo, &repo).await? { Ok(repo) } else { Err(missing()) }
}

/// The commit `name` names in `repo`: a full commit id that is there, else a tag, else a branch.
async fn resolve(state: &AppState, repo: &Repo, name: &str) -> Result<ObjectId, ApiError> {
    let git = state.git().clone();
    let (repo_id, wanted) = (RepoId(repo.id), name.to_owned());
    let found = tokio::task::spawn_blocking(move || {
        gitstratum_ci::references::resolve_name(git.objects().as_ref(), git.refs().as_ref(), repo_id, &wanted)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    found.ok_or_else(|| {
        ApiError::not_found(
            "action.ref_not_found",
            format!("{}/{} has no tag, branch or commit '{}'", repo.owner, repo.name, name_for_message(name)),
        )
    })
}

fn name_for_message(name: &str) -> String {
    name.chars().take(200).collect()
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
    responses((status = 200, description = "Resolved", body = ResolvedAction), (status = "4XX", description = "Refused (404: no such repository this job may use, or no such reference)", body = crate::error::ErrorDoc))
)]
pub async fn resolve_action(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path((id, job, owner, name)): Path<(i64, i64, String, String)>,
    Query(q): Query<ActionQuery>,
) -> Result<Json<ResolvedAction>, ApiError> {
    let git_ref = checked(&q)?;
    let repo = usable_repo(&state, &caller, id, job, q.attempt, &owner, &name).await?;
    let commit = resolve(&state, &repo, git_ref).await?;
    // The job's record says which commit each action it used was.
    let uses = format!("{}/{}@{git_ref}", repo.owner, repo.name);
    state.ci().record_job_action(job, q.attempt, &uses, &commit.to_string()).await?;
    Ok(Json(ResolvedAction { repository: format!("{}/{}", repo.owner, repo.name), commit: commit.to_string() }))
}

#[utoipa::path(
    get,
    path = "/api/v1/runner/{id}/jobs/{job}/actions/{owner}/{repo}/archive",
    tag = "runner",
    summary = "An action repository's files at a commit, as an archive (the artifact format, zstd-compressed)",
    params(ActionQuery),
    responses((status = 200, description = "The archive", content_type = "application/zstd"), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn action_archive(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path((id, job, owner, name)): Path<(i64, i64, String, String)>,
    Query(q): Query<ActionQuery>,
) -> Result<Response, ApiError> {
    let git_ref = checked(&q)?;
    let repo = usable_repo(&state, &caller, id, job, q.attempt, &owner, &name).await?;
    let commit = resolve(&state, &repo, git_ref).await?;
    let git = state.git().clone();
    let repo_id = RepoId(repo.id);
    let body = crate::artifacts::blocking_body("an action archive", move |out| {
        let mut writer = gitstratum_artifact::Writer::new(out)?;
        let objects = git.objects();
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
