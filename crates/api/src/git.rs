//! Git over smart HTTP: `GET /{owner}/{repo}/info/refs?service=…`, `POST …/git-upload-pack`,
//! `POST …/git-receive-pack`, with or without `.git` after the repository name.
//!
//! Access follows GitHub: public repositories read anonymously; a private repository asks an
//! anonymous client for credentials (401, so `git` prompts) and is "not found" to an
//! authenticated one that may not see it; pushing needs `repo:write` on a repository you own
//! (collaborators arrive with the platform's RBAC).

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gitstratum_frontend::{PackStats, Protocol, PushOutcome, ReceiveOptions, Service, UploadOptions};
use gitstratum_platform::{Denial, Principal, Repo, Role};
use gitstratum_store::{Actor, RepoId};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::AppState;
use crate::extract::Caller;

/// Largest request body a Git client may send (a push carries its pack; it is streamed to disk,
/// never held in memory). GitHub refuses pushes over 2 GiB; this leaves room above that.
pub const MAX_GIT_BODY_BYTES: u64 = 4 << 30;
/// How long a push waits for its turn to be read before it is refused (503, Retry-After).
pub(crate) const PUSH_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// How long a push's body may pause before the push is given up.
const BODY_IDLE: std::time::Duration = std::time::Duration::from_secs(60);
/// Largest fetch request (wants, haves, arguments: a few MiB for the largest negotiations).
pub const MAX_UPLOAD_REQUEST_BYTES: usize = 32 << 20;

/// A Git HTTP error: plain text, which `git` shows to the user.
pub struct GitError {
    status: StatusCode,
    pub(crate) message: String,
}

impl GitError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        GitError { status, message: message.into() }
    }

    fn not_found() -> Self {
        GitError::new(StatusCode::NOT_FOUND, "Repository not found.")
    }
}

impl IntoResponse for GitError {
    fn into_response(self) -> Response {
        let mut response = (self.status, format!("{}\n", self.message)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"GitStratum\", charset=\"UTF-8\""),
            );
        }
        response
    }
}

impl From<gitstratum_platform::Error> for GitError {
    fn from(e: gitstratum_platform::Error) -> Self {
        tracing::error!(error = %e, "platform error during a Git request");
        GitError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal server error")
    }
}

/// A malformed request is the client's problem (400, with the reason); anything else is ours.
impl From<gitstratum_frontend::Error> for GitError {
    fn from(e: gitstratum_frontend::Error) -> Self {
        match e {
            gitstratum_frontend::Error::Protocol(message) => GitError::new(StatusCode::BAD_REQUEST, message),
            other => internal(other),
        }
    }
}

fn internal(e: impl std::fmt::Display) -> GitError {
    tracing::error!(error = %e, "error during a Git request");
    GitError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal server error")
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Write,
}

/// Finds the repository and checks, through the one policy, that the caller may do `access`.
/// Git asks for credentials only on a 401, so a private (or missing) repository an anonymous
/// caller may not see answers 401 here (the API answers 404).
pub(crate) async fn authorize(
    state: &AppState,
    owner: &str,
    repo: &str,
    caller: Option<&Principal>,
    access: Access,
) -> Result<Repo, GitError> {
    let name = repo.strip_suffix(".git").unwrap_or(repo);
    // An anonymous caller cannot tell a missing repository from a private one: both ask for
    // credentials (as GitHub does).
    let missing = || match caller {
        None => GitError::new(StatusCode::UNAUTHORIZED, "Authentication required."),
        Some(_) => GitError::not_found(),
    };
    let repo = state.store().get_repo(owner, name).await?.ok_or_else(missing)?;
    let needed = if access == Access::Write { Role::Write } else { Role::Read };
    match crate::repos::repo_decision(state, caller, &repo, needed).await? {
        Ok(()) => Ok(repo),
        Err(Denial::NotFound) if caller.is_none() => {
            Err(GitError::new(StatusCode::UNAUTHORIZED, "Authentication required."))
        }
        Err(Denial::NotFound) => Err(GitError::not_found()),
        Err(Denial::Unauthenticated) => {
            Err(GitError::new(StatusCode::UNAUTHORIZED, "Authentication required to push."))
        }
        Err(Denial::Forbidden(reason)) => Err(GitError::new(
            StatusCode::FORBIDDEN,
            format!(
                "Permission to {}/{} denied to {}: {reason}.",
                repo.owner,
                repo.name,
                caller.map_or("anonymous", |p| p.account.name.as_str())
            ),
        )),
    }
}

fn protocol(headers: &HeaderMap) -> Protocol {
    Protocol::from_header(headers.get("git-protocol").and_then(|v| v.to_str().ok()))
}

fn git_response(service: Service, kind: &str, body: Body) -> Response {
    let content_type = format!("application/x-{}-{kind}", service.name());
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(&content_type).expect("ASCII content type"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, max-age=0, must-revalidate"));
    response
}

#[derive(Deserialize)]
pub struct InfoRefsQuery {
    service: Option<String>,
}

pub async fn info_refs(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((owner, repo)): Path<(String, String)>,
    Query(query): Query<InfoRefsQuery>,
    headers: HeaderMap,
) -> Result<Response, GitError> {
    let service = match query.service.as_deref() {
        Some("git-upload-pack") => Service::UploadPack,
        Some("git-receive-pack") => Service::ReceivePack,
        _ => {
            return Err(GitError::new(
                StatusCode::FORBIDDEN,
                "Only the smart HTTP protocol is supported; use git 2.26 or later.",
            ));
        }
    };
    let access = if service == Service::ReceivePack { Access::Write } else { Access::Read };
    let repo = authorize(&state, &owner, &repo, caller.as_ref(), access).await?;
    let git = state.git().clone();
    let protocol = protocol(&headers);
    let body = tokio::task::spawn_blocking(move || git.info_refs(RepoId(repo.id), service, protocol))
        .await
        .map_err(internal)??;
    Ok(git_response(service, "advertisement", Body::from(body)))
}

/// The request body, read only now (after the caller was authorized: an anonymous or refused
/// request never gets its body read), at most `limit` bytes, gunzipped (to at most `limit`)
/// when the client compressed it.
async fn request_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Vec<u8>, GitError> {
    let too_large = || too_large(limit as u64);
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let body = axum::body::to_bytes(body, limit).await.map_err(|e| {
        let over = std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source())
            .any(|e| e.is::<http_body_util::LengthLimitError>());
        if over {
            too_large()
        } else {
            GitError::new(StatusCode::BAD_REQUEST, format!("cannot read the request body: {e}"))
        }
    })?;
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    if !gzip {
        return Ok(body.to_vec());
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&body[..])
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| GitError::new(StatusCode::BAD_REQUEST, format!("invalid gzip request body: {e}")))?;
    if out.len() > limit {
        return Err(too_large());
    }
    Ok(out)
}

/// A request body read by blocking code as it arrives: an async task pulls frames from the
/// connection and hands them over a small channel, so at most a few frames are in memory. More
/// than `limit` bytes (compressed or not) is an error, as is a broken connection.
fn streamed_body(
    headers: &HeaderMap,
    body: Body,
    limit: u64,
    idle: std::time::Duration,
) -> Result<Box<dyn io::BufRead + Send>, GitError> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(4);
    tokio::spawn(async move {
        use http_body_util::BodyExt;
        let mut body = body;
        let mut total = 0u64;
        loop {
            // A client that stops sending holds a push permit: give it a minute, not forever.
            let frame = match tokio::time::timeout(idle, body.frame()).await {
                Ok(Some(frame)) => frame,
                Ok(None) => return,
                Err(_) => {
                    let abandoned = io::Error::other(format!("no data for {idle:?}: the push was abandoned"));
                    let _ = tx.send(Err(abandoned)).await;
                    return;
                }
            };
            let item = match frame {
                Ok(frame) => match frame.into_data() {
                    Ok(data) => {
                        total += data.len() as u64;
                        if total > limit {
                            Err(io::Error::other(format!("request body too large: at most {} MiB", limit >> 20)))
                        } else {
                            Ok(data)
                        }
                    }
                    Err(_) => continue,
                },
                Err(e) => Err(io::Error::other(format!("cannot read the request body: {e}"))),
            };
            let stop = item.is_err();
            if tx.send(item).await.is_err() || stop {
                return;
            }
        }
    });
    let raw = io::BufReader::with_capacity(64 << 10, ChannelReader { rx, current: Bytes::new() });
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    if !gzip {
        return Ok(Box::new(raw));
    }
    let inflated = Limited { inner: flate2::read::GzDecoder::new(raw), remaining: limit };
    Ok(Box::new(io::BufReader::with_capacity(64 << 10, inflated)))
}

fn too_large(limit: u64) -> GitError {
    GitError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("request body too large: at most {} MiB", limit >> 20))
}

/// The blocking end of [`streamed_body`].
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(data)) => self.current = data,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// A reader that fails past `remaining` bytes (a decompressed body over the limit).
struct Limited<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.remaining = self
            .remaining
            .checked_sub(n as u64)
            .ok_or_else(|| io::Error::other("request body too large once decompressed"))?;
        Ok(n)
    }
}

/// Carries output from a blocking producer to the response body as it is produced; a client
/// that goes away makes the next write fail, which stops the producer. Counts the bytes.
pub(crate) struct ChannelWriter {
    pub(crate) tx: mpsc::Sender<io::Result<Bytes>>,
    pub(crate) written: u64,
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tx
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "client went away"))?;
        self.written += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A response body fed from a channel.
pub(crate) struct ChannelStream(pub(crate) mpsc::Receiver<io::Result<Bytes>>);

impl futures_core::Stream for ChannelStream {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

pub async fn upload_pack(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, GitError> {
    let repo = authorize(&state, &owner, &repo, caller.as_ref(), Access::Read).await?;
    let protocol = protocol(&headers);
    let request = request_body(&headers, body, MAX_UPLOAD_REQUEST_BYTES).await?;
    let git = state.git().clone();
    // A few chunks in flight keep the producer busy without buffering the pack.
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(8);
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        let start = std::time::Instant::now();
        let mut out = ChannelWriter { tx: tx.clone(), written: 0 };
        match git.upload_pack(RepoId(repo.id), protocol, &request, &UploadOptions::default(), &mut out) {
            Ok(Some(stats)) => record_pack(protocol, &stats, out.written, start.elapsed()),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "upload-pack failed");
                metrics::counter!("gitstratum_git_upload_pack_errors_total").increment(1);
                let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
            }
        }
    });
    Ok(git_response(Service::UploadPack, "result", Body::from_stream(ChannelStream(rx))))
}

/// Metrics and a log line for a pack sent to a client.
pub(crate) fn record_pack(protocol: Protocol, stats: &PackStats, bytes: u64, elapsed: std::time::Duration) {
    let kind = match (stats.clone, stats.shallow, stats.filtered) {
        (_, _, true) => "partial",
        (_, true, _) => "shallow",
        (true, _, _) => "clone",
        (false, _, _) => "fetch",
    };
    let labels = [("protocol", protocol.label()), ("kind", kind)];
    metrics::counter!("gitstratum_git_packs_sent_total", &labels).increment(1);
    metrics::counter!("gitstratum_git_pack_objects_sent_total").increment(stats.objects as u64);
    metrics::counter!("gitstratum_git_pack_deltas_reused_total").increment(stats.reused_deltas as u64);
    metrics::counter!("gitstratum_git_pack_bytes_sent_total").increment(bytes);
    metrics::histogram!("gitstratum_git_upload_pack_duration_seconds", &labels).record(elapsed.as_secs_f64());
    tracing::info!(
        protocol = protocol.label(),
        kind,
        objects = stats.objects,
        reused_deltas = stats.reused_deltas,
        bytes,
        ms = elapsed.as_millis() as u64,
        "upload-pack: pack sent"
    );
}

pub async fn receive_pack(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, GitError> {
    let repo = authorize(&state, &owner, &repo, caller.as_ref(), Access::Write).await?;
    let principal = caller.expect("authorize requires a caller for writes");
    // Each push streams to disk with bounded memory; only so many at once, so pushes cannot
    // exhaust disk bandwidth or memory together. One waits a moment for its turn, then is told
    // to try again.
    let _permit = match tokio::time::timeout(PUSH_WAIT, state.push_bodies().clone().acquire_owned()).await {
        Ok(Ok(permit)) => permit,
        _ => {
            metrics::counter!("gitstratum_control_ratelimit_throttled_total", "limit" => "concurrent_pushes")
                .increment(1);
            let mut refused =
                GitError::new(StatusCode::SERVICE_UNAVAILABLE, "Too many pushes in progress; try again in a moment.")
                    .into_response();
            refused.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            return Ok(refused);
        }
    };
    let guard = crate::protection::push_guard(&state, &principal, &repo).await.map_err(|e| {
        tracing::warn!(error = %e.message, "receive-pack: reading the branch protections failed");
        GitError::new(StatusCode::SERVICE_UNAVAILABLE, "The branch protections cannot be read; try again in a moment.")
    })?;
    let options = ReceiveOptions { guard, ..ReceiveOptions::default() };
    let mut request = streamed_body(&headers, body, MAX_GIT_BODY_BYTES, BODY_IDLE)?;
    let git = state.git().clone();
    let actor = Actor { name: principal.account.name.clone(), time_ms: state.now().as_millis() };
    let repo_name = format!("{}/{}", repo.owner, repo.name);
    tracing::info!(repo = %repo_name, "receive-pack: applying push");
    let span = tracing::Span::current();
    let (report, outcome, received) = tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        let mut report = Vec::new();
        let mut counted = Counted { inner: &mut *request, count: 0 };
        let outcome = git.receive_pack(RepoId(repo.id), &mut counted, &actor, &options, &mut report);
        let received = counted.count;
        outcome.map(|o| (report, o, received))
    })
    .await
    .map_err(internal)??;
    record_push(&state, &repo_name, &outcome, received);
    Ok(git_response(Service::ReceivePack, "result", Body::from(report)))
}

/// Metrics, log lines and the CI ingestor's wake-up for a push applied (over HTTP or SSH).
pub(crate) fn record_push(state: &AppState, repo_name: &str, outcome: &PushOutcome, received: u64) {
    metrics::counter!("gitstratum_git_pushes_total", "result" => if outcome.rejected.is_empty() { "ok" } else { "rejected" })
        .increment(1);
    metrics::counter!("gitstratum_git_ref_updates_total").increment(outcome.updated.len() as u64);
    metrics::counter!("gitstratum_git_push_bytes_received_total").increment(received);
    for event in &outcome.updated {
        tracing::info!(repo = %repo_name, git_ref = %event.name, seq = event.seq, pusher = %event.pusher, "ref updated");
    }
    if !outcome.updated.is_empty() {
        // The CI ingestor reads the new events now rather than at its next poll.
        state.ci().ref_log_grew();
    }
    for (name, reason) in &outcome.rejected {
        tracing::info!(repo = %repo_name, git_ref = %name, reason = %reason, "ref update rejected");
    }
}

/// Counts the bytes read through it.
pub(crate) struct Counted<'a> {
    pub(crate) inner: &'a mut dyn io::BufRead,
    pub(crate) count: u64,
}

impl Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

impl io::BufRead for Counted<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        self.count += amt as u64;
        self.inner.consume(amt);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A push body that stops arriving is given up after the idle time (it would hold a push
    /// permit forever), and one over the limit fails as it passes it; what came before is read.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_or_oversized_push_body_fails_the_read() {
        struct Stalls(bool);
        impl futures_core::Stream for Stalls {
            type Item = io::Result<Bytes>;
            fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
                if std::mem::replace(&mut self.0, true) {
                    Poll::Pending
                } else {
                    Poll::Ready(Some(Ok(Bytes::from_static(b"0000"))))
                }
            }
        }
        let idle = std::time::Duration::from_millis(200);
        let Ok(mut reader) = streamed_body(&HeaderMap::new(), Body::from_stream(Stalls(false)), 1 << 20, idle) else {
            panic!("a reader")
        };
        let read = tokio::task::spawn_blocking(move || {
            let mut all = Vec::new();
            let result = reader.read_to_end(&mut all);
            (all, result)
        })
        .await
        .expect("join");
        assert_eq!(read.0, b"0000");
        assert!(read.1.expect_err("abandoned").to_string().contains("abandoned"));

        let Ok(mut reader) = streamed_body(&HeaderMap::new(), Body::from(vec![0u8; 4096]), 1024, idle) else {
            panic!("a reader")
        };
        let result = tokio::task::spawn_blocking(move || reader.read_to_end(&mut Vec::new())).await.expect("join");
        assert!(result.expect_err("too large").to_string().contains("too large"));
    }

    /// A body longer than the limit without a declared length (chunked) is told apart from a
    /// broken one: 413, as for a declared length over the limit.
    #[tokio::test]
    async fn an_oversized_body_is_refused_as_too_large() {
        let err = request_body(&HeaderMap::new(), Body::from(vec![0u8; 2048]), 1024).await.expect_err("too large");
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", err.message);
        let mut declared = HeaderMap::new();
        declared.insert(header::CONTENT_LENGTH, HeaderValue::from_static("4096"));
        let err = request_body(&declared, Body::empty(), 1024).await.expect_err("declared too large");
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(request_body(&HeaderMap::new(), Body::from("0000"), 1024).await.ok(), Some(b"0000".to_vec()));
    }
}
