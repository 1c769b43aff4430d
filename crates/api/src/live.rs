//! Live streams (Server-Sent Events): a job's log as it is written, and a run's status as it
//! changes. Each subscriber reads at its own pace from storage (the log file, the database), so a
//! slow one falls behind on its own and never holds up a runner or another subscriber. A log
//! stream resumes from `Last-Event-ID` (the byte offset its last event ended at).

use std::io;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use gitstratum_ci::JobState;
use tokio::sync::mpsc;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::Caller;
use crate::git::ChannelStream;
use crate::runs::{JobLogQuery, readable_job, readable_run, run_detail};

/// A comment line this often keeps proxies from closing a quiet stream.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// A quiet log stream looks at its job this often anyway (a job can end without a last append,
/// when its lease runs out).
const RECHECK: Duration = Duration::from_secs(2);

fn sse(rx: mpsc::Receiver<io::Result<Bytes>>) -> Response {
    let mut response = Response::new(Body::from_stream(ChannelStream(rx)));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// One SSE event; `data` may hold several lines.
fn event(name: &str, id: Option<u64>, data: &str) -> Bytes {
    let mut out = String::new();
    if let Some(id) = id {
        out.push_str(&format!("id: {id}\n"));
    }
    out.push_str(&format!("event: {name}\n"));
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}/logs/stream",
    tag = "ci",
    summary = "A job's log as it is written (Server-Sent Events)",
    params(JobLogQuery),
    responses((status = 200, description = "`log` events (whole lines; the id is the byte offset after them), then one `end` event with the job's conclusion. Send `Last-Event-ID` to resume.", content_type = "text/event-stream", body = String), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn job_log_stream(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
    Query(q): Query<JobLogQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let job = readable_job(&state, caller.as_ref(), id).await?;
    let attempt = q.attempt.unwrap_or(job.attempt);
    let mut offset: u64 =
        headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(16);
    tokio::spawn(async move {
        let mut quiet = Duration::ZERO;
        loop {
            let appended = state.logs().appended();
            tokio::pin!(appended);
            appended.as_mut().enable();
            let Ok(bytes) = state.logs().read_from(id, attempt, offset).await else { return };
            // The attempt is over once the job has moved past it.
            let over = match state.ci().get_job(id).await {
                Ok(Some(j)) => j.attempt > attempt || j.state == JobState::Completed,
                _ => true,
            };
            // Whole lines only, so an event never ends inside a line (unless the log is over).
            let upto = if over { bytes.len() } else { bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1) };
            if upto > 0 {
                offset += upto as u64;
                let text = String::from_utf8_lossy(&bytes[..upto]);
                let text = text.strip_suffix('\n').unwrap_or(&text);
                if tx.send(Ok(event("log", Some(offset), text))).await.is_err() {
                    return; // the subscriber went away
                }
            }
            if over && upto == bytes.len() {
                let conclusion = match state.ci().get_job(id).await {
                    Ok(Some(j)) if j.attempt == attempt => j.conclusion.map_or("unknown", |c| c.as_str()).to_owned(),
                    _ => "superseded".to_owned(),
                };
                let _ = tx.send(Ok(event("end", Some(offset), &conclusion))).await;
                return;
            }
            if tokio::time::timeout(RECHECK, appended).await.is_err() {
                quiet += RECHECK;
                if quiet >= KEEPALIVE {
                    quiet = Duration::ZERO;
                    if tx.send(Ok(Bytes::from_static(b": keepalive\n\n"))).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    Ok(sse(rx))
}

#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}/events",
    tag = "ci",
    summary = "A run's status as it changes (Server-Sent Events)",
    responses((status = 200, description = "A `run` event with the run, its jobs and steps (as `GET /api/v1/runs/{id}`) now and at each change, within a second; the stream ends once the run has completed.", content_type = "text/event-stream", body = String), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn run_events(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let (run, repo) = readable_run(&state, caller.as_ref(), id).await?;
    drop(run);
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(16);
    tokio::spawn(async move {
        let mut last = String::new();
        let mut seq = 0u64;
        let mut quiet = Duration::ZERO;
        loop {
            let Ok(Some(detail)) = run_detail(&state, id, &repo).await else { return };
            let done = detail.run.status == "completed";
            let Ok(json) = serde_json::to_string(&detail) else { return };
            if json != last {
                seq += 1;
                if tx.send(Ok(event("run", Some(seq), &json))).await.is_err() {
                    return;
                }
                last = json;
                quiet = Duration::ZERO;
            }
            if done {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            quiet += Duration::from_secs(1);
            if quiet >= KEEPALIVE {
                quiet = Duration::ZERO;
                if tx.send(Ok(Bytes::from_static(b": keepalive\n\n"))).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok(sse(rx))
}
