//! Artifacts and caches over HTTP.
//!
//! For runners (`/api/v1/runner/{id}/jobs/{job}/…`, a runner token, only while it holds the job's
//! attempt): upload chunks into a slot by byte offset (in any order, several at once), finish a
//! slot as an artifact or a cache naming its length and SHA-256,
//! list and fetch the run's artifacts, look up and fetch the repository's caches. A job reaches
//! only its own run's artifacts and its own repository's caches.
//!
//! For people: a run's artifacts, an artifact's zip (streamed, with its exact length; 410 once
//! retention deleted it), deleting one, and a repository's caches. A job's token may not use
//! these: a job gets artifacts through its runner.

use std::io::{self, Write};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use gitstratum_ci::artifacts::{ArtifactError, NewArtifact, Upload, Uploader};
use gitstratum_ci::{Artifact, Cache, Job, Run};
use gitstratum_platform::{Principal, Repo, Role};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, Authenticated, Caller, RequestMeta};
use crate::git::{ChannelStream, ChannelWriter};

impl From<ArtifactError> for ApiError {
    fn from(e: ArtifactError) -> Self {
        match e {
            ArtifactError::Invalid(why) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "artifact.invalid", why),
            ArtifactError::TooBig(why) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "artifact.too_big", why),
            ArtifactError::Conflict(why) => ApiError::new(StatusCode::CONFLICT, "artifact.exists", why),
            e @ ArtifactError::NoUpload(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "artifact.no_upload", e.to_string())
            }
            ArtifactError::Db(e) => e.into(),
            ArtifactError::Io(e) => ApiError::internal(e),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ArtifactBody {
    pub id: i64,
    pub name: String,
    pub run_id: i64,
    pub job_id: i64,
    /// The bytes of its files.
    pub size_in_bytes: i64,
    /// The bytes it takes in storage (compressed).
    pub stored_bytes: i64,
    pub files: i64,
    /// `sha256:` of the stored archive.
    pub digest: String,
    /// Whether retention deleted it (its download answers 410).
    pub expired: bool,
    pub created_at: String,
    pub expires_at: String,
    /// Where its zip is.
    pub archive_download_url: String,
}

impl ArtifactBody {
    fn new(a: Artifact, public_url: &str) -> Self {
        ArtifactBody {
            archive_download_url: format!("{public_url}/api/v1/artifacts/{}/download", a.id),
            id: a.id,
            name: a.name,
            run_id: a.run_id,
            job_id: a.job_id,
            size_in_bytes: a.size_bytes,
            stored_bytes: a.stored_bytes,
            files: a.files,
            digest: format!("sha256:{}", a.digest),
            expired: a.expired_at.is_some(),
            created_at: a.created_at.to_rfc3339(),
            expires_at: a.expired_at.unwrap_or(a.expires_at).to_rfc3339(),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ArtifactList {
    pub total_count: usize,
    pub artifacts: Vec<ArtifactBody>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CacheBody {
    pub id: i64,
    pub key: String,
    pub version: String,
    /// The ref whose run saved it.
    #[serde(rename = "ref")]
    pub scope: String,
    pub size_in_bytes: i64,
    pub stored_bytes: i64,
    pub created_at: String,
    pub last_accessed_at: String,
}

impl From<Cache> for CacheBody {
    fn from(c: Cache) -> Self {
        CacheBody {
            id: c.id,
            key: c.key,
            version: c.version,
            scope: c.scope,
            size_in_bytes: c.size_bytes,
            stored_bytes: c.stored_bytes,
            created_at: c.created_at.to_rfc3339(),
            last_accessed_at: c.last_used_at.to_rfc3339(),
        }
    }
}

/// The job, its run and repository, when the calling runner holds the job's `attempt`.
async fn held(
    state: &AppState,
    caller: &Principal,
    id: i64,
    job: i64,
    attempt: i64,
) -> Result<(Job, Run, Repo), ApiError> {
    let job = crate::runner::held_job(state, caller, id, job, attempt).await?;
    let lost = || crate::runner::lease_lost(job.id);
    let run = state.ci().get_run(job.run_id).await?.ok_or_else(lost)?;
    let repo = state.store().get_repo_by_id(run.repo_id).await?.ok_or_else(lost)?;
    Ok((job, run, repo))
}

fn uploader<'a>(job: &Job, run: &'a Run, repo: &Repo) -> Uploader<'a> {
    Uploader {
        job_id: job.id,
        attempt: job.attempt,
        run_id: run.id,
        repo_id: repo.id,
        tenant_id: repo.owner_id,
        git_ref: &run.git_ref,
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ChunkQuery {
    pub attempt: i64,
    /// Where in the slot this chunk starts.
    pub offset: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UploadAck {
    /// The offset just past the chunk.
    pub offset: u64,
}

#[utoipa::path(
    put,
    path = "/api/v1/runner/{id}/jobs/{job}/uploads/{slot}",
    tag = "runner",
    summary = "Write a chunk (at most 8 MiB) of an upload at a byte offset of a slot (any order; resends are harmless)",
    params(ChunkQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, description = "Stored", body = UploadAck), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn upload_chunk(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path((id, job, slot)): Path<(i64, i64, String)>,
    Query(q): Query<ChunkQuery>,
    body: Bytes,
) -> Result<Json<UploadAck>, ApiError> {
    // A chunk needs only the job (its run and repository matter when the upload is finished).
    let job = crate::runner::held_job(&state, &caller, id, job, q.attempt).await?;
    let offset = state.artifacts().append_chunk(job.id, job.attempt, &slot, q.offset, body).await?;
    Ok(Json(UploadAck { offset }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct FinishArtifact {
    pub attempt: i64,
    /// The slot the archive was uploaded into.
    pub slot: String,
    /// The archive's length in bytes.
    pub length: u64,
    /// The archive's SHA-256 (hex): a chunk lost or damaged on the way is caught.
    #[schema(pattern = "^[0-9A-Fa-f]{64}$")]
    pub sha256: String,
    pub name: String,
    /// Days to keep it (at most the repository's retention).
    pub retention_days: Option<u64>,
    /// Replace an artifact of the same name that another job uploaded.
    #[serde(default)]
    pub overwrite: bool,
}

#[utoipa::path(
    post,
    path = "/api/v1/runner/{id}/jobs/{job}/artifacts",
    tag = "runner",
    summary = "Finish an upload as an artifact of the job's run (the archive is checked whole)",
    request_body = FinishArtifact,
    responses((status = 201, description = "Kept", body = ArtifactBody), (status = "4XX", description = "Refused: 413 too big, 409 the name is taken, 422 a bad archive or name", body = crate::error::ErrorDoc))
)]
pub async fn finish_artifact(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path((id, job)): Path<(i64, i64)>,
    ApiJson(body): ApiJson<FinishArtifact>,
) -> Result<(StatusCode, Json<ArtifactBody>), ApiError> {
    let (job, run, repo) = held(&state, &caller, id, job, body.attempt).await?;
    let new = NewArtifact {
        upload: Upload { slot: &body.slot, length: body.length, sha256: &body.sha256 },
        name: &body.name,
        retention_days: body.retention_days,
        overwrite: body.overwrite,
    };
    let started = std::time::Instant::now();
    let artifact = state.artifacts().finish_artifact(uploader(&job, &run, &repo), new, state.now()).await?;
    tracing::info!(
        run = run.id,
        job = job.id,
        artifact = artifact.id,
        name = %artifact.name,
        bytes = artifact.size_bytes,
        check_ms = started.elapsed().as_millis() as u64,
        "ci: artifact uploaded (checked and kept)"
    );
    Ok((StatusCode::CREATED, Json(ArtifactBody::new(artifact, state.public_url()))))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AttemptQuery {
    pub attempt: i64,
}

#[utoipa::path(
    get,
    path = "/api/v1/runner/{id}/jobs/{job}/artifacts",
    tag = "runner",
    summary = "The artifacts of the job's run (kept ones)",
    params(AttemptQuery),
    responses((status = 200, description = "Its artifacts", body = ArtifactList), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn job_artifacts(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path((id, job)): Path<(i64, i64)>,
    Query(q): Query<AttemptQuery>,
) -> Result<Json<ArtifactList>, ApiError> {
    let (_, run, _) = held(&state, &caller, id, job, q.attempt).await?;
    let artifacts: Vec<ArtifactBody> = state
        .artifacts()
        .list(run.id)
        .await?
        .into_iter()
        .filter(|a| a.expired_at.is_none())
        .map(|a| ArtifactBody::new(a, state.public_url()))
        .collect();
    Ok(Json(ArtifactList { total_count: artifacts.len(), artifacts }))
}

/// A response body written by `produce` on a blocking thread as the client reads it; an error
/// ends the body broken (and is logged as `what`).
pub(crate) fn blocking_body(
    what: &'static str,
    produce: impl FnOnce(&mut dyn Write) -> io::Result<()> + Send + 'static,
) -> Body {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(8);
    tokio::task::spawn_blocking(move || {
        let mut out = io::BufWriter::with_capacity(256 * 1024, ChannelWriter { tx: tx.clone(), written: 0 });
        if let Err(e) = produce(&mut out).and_then(|()| out.flush()) {
            tracing::warn!(error = %e, "cannot serve {what}");
            let _ = tx.blocking_send(Err(e));
        }
    });
    Body::from_stream(ChannelStream(rx))
}

/// A blob (an archive as stored), streamed.
fn blob_response(state: &AppState, key: String) -> Response {
    let artifacts = state.artifacts_arc();
    let body = blocking_body("an archive", move |out| {
        io::copy(&mut artifacts.open_blob(&key)?, out)?;
        Ok(())
    });
    ([(header::CONTENT_TYPE, "application/zstd")], body).into_response()
}

#[utoipa::path(
    get,
    path = "/api/v1/runner/{id}/jobs/{job}/artifacts/{artifact}/archive",
    tag = "runner",
    summary = "An artifact of the job's run, as its archive (zstd-compressed)",
    params(AttemptQuery),
    responses((status = 200, description = "The archive", content_type = "application/zstd"), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn job_artifact_archive(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path((id, job, artifact)): Path<(i64, i64, i64)>,
    Query(q): Query<AttemptQuery>,
) -> Result<Response, ApiError> {
    let (_, run, _) = held(&state, &caller, id, job, q.attempt).await?;
    let artifact = match state.artifacts().get(artifact).await? {
        // Only the job's own run's.
        Some(a) if a.run_id == run.id => a,
        _ => return Err(artifact_not_found(artifact)),
    };
    refuse_expired(&artifact)?;
    Ok(blob_response(&state, artifact.blob_key))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CacheLookup {
    pub attempt: i64,
    pub key: String,
    /// Key prefixes to fall back on, in order (at most 32).
    #[serde(default)]
    #[schema(max_items = 32)]
    pub restore_keys: Vec<String>,
    /// What the cache holds (a hash of its paths); only caches of the same version match.
    pub version: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/runner/{id}/jobs/{job}/caches/lookup",
    tag = "runner",
    summary = "Find the cache a job restores: exact key, else newest with a restore-keys prefix; the run's ref first, then the default branch",
    request_body = CacheLookup,
    responses((status = 200, description = "Found", body = CacheBody), (status = 204, description = "None"), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn cache_lookup(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path((id, job)): Path<(i64, i64)>,
    ApiJson(body): ApiJson<CacheLookup>,
) -> Result<Response, ApiError> {
    let (_, run, repo) = held(&state, &caller, id, job, body.attempt).await?;
    if body.restore_keys.len() > 32 {
        return Err(ApiError::validation("restore_keys", "at most 32"));
    }
    let default_ref = format!("refs/heads/{}", repo.default_branch);
    let mut scopes = vec![run.git_ref.as_str()];
    if run.git_ref != default_ref {
        scopes.push(&default_ref);
    }
    let found = state
        .artifacts()
        .find_cache(repo.id, &scopes, &body.key, &body.restore_keys, &body.version, state.now())
        .await?;
    Ok(match found {
        Some(cache) => Json(CacheBody::from(cache)).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct FinishCache {
    pub attempt: i64,
    pub slot: String,
    /// The archive's length in bytes.
    pub length: u64,
    /// The archive's SHA-256 (hex).
    #[schema(pattern = "^[0-9A-Fa-f]{64}$")]
    pub sha256: String,
    pub key: String,
    pub version: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/runner/{id}/jobs/{job}/caches",
    tag = "runner",
    summary = "Finish an upload as a cache of the run's ref (caches are immutable)",
    request_body = FinishCache,
    responses((status = 201, description = "Saved", body = CacheBody), (status = "4XX", description = "Refused: 409 the key exists already, 413 too big, 422 a bad archive", body = crate::error::ErrorDoc))
)]
pub async fn finish_cache(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path((id, job)): Path<(i64, i64)>,
    ApiJson(body): ApiJson<FinishCache>,
) -> Result<(StatusCode, Json<CacheBody>), ApiError> {
    let (job, run, repo) = held(&state, &caller, id, job, body.attempt).await?;
    let cache = state
        .artifacts()
        .finish_cache(
            uploader(&job, &run, &repo),
            Upload { slot: &body.slot, length: body.length, sha256: &body.sha256 },
            &body.key,
            &body.version,
            state.now(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(cache.into())))
}

#[utoipa::path(
    get,
    path = "/api/v1/runner/{id}/jobs/{job}/caches/{cache}/archive",
    tag = "runner",
    summary = "A cache of the job's repository, as its archive (zstd-compressed)",
    params(AttemptQuery),
    responses((status = 200, description = "The archive", content_type = "application/zstd"), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn cache_archive(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path((id, job, cache)): Path<(i64, i64, i64)>,
    Query(q): Query<AttemptQuery>,
) -> Result<Response, ApiError> {
    let (_, run, repo) = held(&state, &caller, id, job, q.attempt).await?;
    let default_ref = format!("refs/heads/{}", repo.default_branch);
    match state.artifacts().get_cache(cache).await? {
        Some(c) if c.repo_id == repo.id && (c.scope == run.git_ref || c.scope == default_ref) => {
            Ok(blob_response(&state, c.blob_key))
        }
        _ => Err(ApiError::not_found("cache.not_found", format!("no cache {cache} for this job"))),
    }
}

fn artifact_not_found(id: i64) -> ApiError {
    ApiError::not_found("artifact.not_found", format!("no artifact {id}, or you may not see it"))
}

fn refuse_expired(artifact: &Artifact) -> Result<(), ApiError> {
    match artifact.expired_at {
        Some(at) => Err(ApiError::new(
            StatusCode::GONE,
            "artifact.expired",
            format!("artifact {} was deleted on {} (artifact retention)", artifact.id, at.to_rfc3339()),
        )),
        None => Ok(()),
    }
}

/// A job's token may not use the artifact API (its runner fetches the run's artifacts).
fn refuse_job_token(caller: Option<&Principal>) -> Result<(), ApiError> {
    match caller {
        Some(p) if p.repo_only.is_some() => {
            Err(ApiError::forbidden("a job's token may not read artifacts; its runner fetches its run's"))
        }
        _ => Ok(()),
    }
}

/// The artifact, when the caller may act on its run's repository with `needed`.
async fn authorize_artifact(
    state: &AppState,
    caller: Option<&Principal>,
    id: i64,
    needed: Role,
) -> Result<(Artifact, Repo), ApiError> {
    refuse_job_token(caller)?;
    let artifact = state.artifacts().get(id).await?.ok_or_else(|| artifact_not_found(id))?;
    match crate::runs::authorize_run(state, caller, artifact.run_id, needed).await {
        Ok((_, repo)) => Ok((artifact, repo)),
        Err(e) if e.status == StatusCode::NOT_FOUND => Err(artifact_not_found(id)),
        Err(e) => Err(e),
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}/artifacts",
    tag = "ci",
    security((), ("token" = [])),
    summary = "A run's artifacts",
    responses((status = 200, description = "Its artifacts (expired ones say so)", body = ArtifactList), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn run_artifacts(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
) -> Result<Json<ArtifactList>, ApiError> {
    refuse_job_token(caller.as_ref())?;
    crate::runs::readable_run(&state, caller.as_ref(), id).await?;
    let artifacts: Vec<ArtifactBody> =
        state.artifacts().list(id).await?.into_iter().map(|a| ArtifactBody::new(a, state.public_url())).collect();
    Ok(Json(ArtifactList { total_count: artifacts.len(), artifacts }))
}

#[utoipa::path(
    get,
    path = "/api/v1/artifacts/{id}",
    operation_id = "get_artifact",
    tag = "ci",
    security((), ("token" = [])),
    summary = "An artifact",
    responses((status = 200, description = "The artifact", body = ArtifactBody), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn get(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
) -> Result<Json<ArtifactBody>, ApiError> {
    let (artifact, _) = authorize_artifact(&state, caller.as_ref(), id, Role::Read).await?;
    Ok(Json(ArtifactBody::new(artifact, state.public_url())))
}

#[utoipa::path(
    delete,
    path = "/api/v1/artifacts/{id}",
    operation_id = "delete_artifact",
    tag = "ci",
    summary = "Delete an artifact (write access to its repository)",
    responses((status = 204, description = "Deleted"), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn delete(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    meta: RequestMeta,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    let (artifact, repo) = authorize_artifact(&state, Some(&caller), id, Role::Write).await?;
    state.artifacts().delete(&artifact).await?;
    let event =
        gitstratum_platform::AuditEvent::new("ci.artifact.delete", format!("repo:{}/{}", repo.owner, repo.name))
            .details(format!(r#"{{"artifact":{},"name":{:?},"run":{}}}"#, artifact.id, artifact.name, artifact.run_id));
    state.store().record_audit(&meta.actor(&caller), &event, state.now()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/api/v1/artifacts/{id}/download",
    tag = "ci",
    security((), ("token" = [])),
    summary = "An artifact's files as a zip (streamed; Content-Length is exact)",
    responses((status = 200, description = "The zip", content_type = "application/zip"), (status = 410, description = "Deleted by artifact retention", body = crate::error::ErrorDoc), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn download(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let (artifact, _) = authorize_artifact(&state, caller.as_ref(), id, Role::Read).await?;
    refuse_expired(&artifact)?;
    let artifacts = state.artifacts_arc();
    let (key, created) = (artifact.blob_key.clone(), artifact.created_at.0 / 1000);
    let body = blocking_body("an artifact's zip", move |out| {
        let mut zip = gitstratum_artifact::zip::ZipWriter::new(out, created);
        gitstratum_artifact::read_archive(
            artifacts.open_blob(&key)?,
            &gitstratum_artifact::Limits::NONE,
            |entry, data| {
                zip.start_file(&entry.path, entry.mode)?;
                io::copy(data, &mut zip)?;
                zip.end_file()
            },
        )
        .map_err(|e| io::Error::other(e.to_string()))?;
        zip.finish().map(|_| ())
    });
    let disposition = format!("attachment; filename=\"{}.zip\"", artifact.name.replace(['"', '\\'], "_"));
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/zip"));
    headers.insert(header::CONTENT_LENGTH, artifact.zip_bytes.into());
    if let Ok(value) = header::HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

#[utoipa::path(
    get,
    path = "/api/v1/repos/{owner}/{repo}/caches",
    tag = "ci",
    summary = "A repository's caches, most recently used first",
    responses((status = 200, description = "Its caches", body = [CacheBody]), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn repo_caches(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path((owner, name)): Path<(String, String)>,
) -> Result<Json<Vec<CacheBody>>, ApiError> {
    let repo = crate::repos::authorize_repo(&state, Some(&caller), &owner, &name, Role::Read).await?;
    Ok(Json(state.artifacts().list_caches(repo.id).await?.into_iter().map(Into::into).collect()))
}

#[utoipa::path(
    delete,
    path = "/api/v1/repos/{owner}/{repo}/caches/{cache}",
    tag = "ci",
    summary = "Delete a cache (write access)",
    responses((status = 204, description = "Deleted"), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn delete_cache(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path((owner, name, cache)): Path<(String, String, i64)>,
) -> Result<StatusCode, ApiError> {
    let repo = crate::repos::authorize_repo(&state, Some(&caller), &owner, &name, Role::Write).await?;
    match state.artifacts().get_cache(cache).await? {
        Some(c) if c.repo_id == repo.id => {
            state.artifacts().delete_cache(&c).await?;
            Ok(StatusCode::NO_CONTENT)
        }
        _ => Err(ApiError::not_found("cache.not_found", format!("{owner}/{name} has no cache {cache}"))),
    }
}
