//! Live streams (Server-Sent Events): a job's log as it is written, and a run's status as it
//! changes. A log subscriber gets appends from the log store's bounded live buffer; one that falls
//! behind it reads what it missed from storage and rejoins, so a slow subscriber never holds up a
//! runner or another subscriber. A log stream resumes from `Last-Event-ID` (`STEP:OFFSET`, where
//! its last event ended). Run status is read from the database at each subscriber's own pace.

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
    event_with(name, id.map(|id| id.to_string()).as_deref(), data)
}

fn event_with_id(name: &str, id: &str, data: &str) -> Bytes {
    event_with(name, Some(id), data)
}

fn event_with(name: &str, id: Option<&str>, data: &str) -> Bytes {
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
    security((), ("token" = [])),
    summary = "A job's log as it is written (Server-Sent Events)",
    params(JobLogQuery),
    responses((status = 200, description = "A `step` event (data: the step's number; 0 is what the runner says before the first step) whenever the log moves on to a step, `log` events (whole lines; the id is `STEP:OFFSET`, where the event ends in that step's log), then one `end` event with the job's conclusion. Send `Last-Event-ID` to resume.", content_type = "text/event-stream", body = String), (status = "4XX", description = "Refused; see the error code", body = crate::error::ErrorDoc))
)]
pub async fn job_log_stream(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<i64>,
    Query(q): Query<JobLogQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let job = readable_job(&state, caller.as_ref(), id).await?;
    crate::runs::refuse_expired(&job)?;
    let attempt = q.attempt.unwrap_or(job.attempt);
    let resume = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(parse_resume);
    Ok(follow_job_log(state, id, attempt, resume))
}

/// A job attempt's log as Server-Sent Events from `resume` (`(step, offset)`; the start when
/// `None`) until the attempt is over (shared by the API and the web UI's job page).
pub(crate) fn follow_job_log(state: AppState, id: i64, attempt: i64, resume: Option<(i64, u64)>) -> Response {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(16);
    tokio::spawn(async move {
        let (step, offset) = resume.unwrap_or((0, 0));
        let mut follower =
            Follower { job: id, attempt, step, offset, pending: Vec::new(), announced: resume.map(|r| r.0), tx };
        let _ = follower.follow(&state).await;
        state.logs().unsubscribe(id, attempt);
    });
    sse(rx)
}

/// `STEP:OFFSET`, as log events' ids say where they end.
pub(crate) fn parse_resume(text: &str) -> Option<(i64, u64)> {
    let (step, offset) = text.trim().split_once(':')?;
    Some((step.parse().ok()?, offset.parse().ok()?))
}

/// The subscriber has gone (or storage failed): the stream ends.
struct Gone;

/// One reader of a job attempt's log: live appends while it keeps up, storage when it does not.
struct Follower {
    job: i64,
    attempt: i64,
    /// The step being read, and how much of it was sent.
    step: i64,
    offset: u64,
    /// Read beyond `offset` but not sent (a line not ended yet).
    pending: Vec<u8>,
    /// The step the last `step` event named.
    announced: Option<i64>,
    tx: mpsc::Sender<io::Result<Bytes>>,
}

impl Follower {
    async fn send(&self, bytes: Bytes) -> Result<(), Gone> {
        self.tx.send(Ok(bytes)).await.map_err(|_| Gone)
    }

    /// Sends what is pending: whole lines, or everything when the step is `complete`.
    async fn emit(&mut self, complete: bool) -> Result<(), Gone> {
        if self.announced != Some(self.step) && !self.pending.is_empty() {
            self.announced = Some(self.step);
            self.send(event("step", None, &self.step.to_string())).await?;
        }
        let upto = if complete {
            self.pending.len()
        } else {
            self.pending.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1)
        };
        if upto == 0 {
            return Ok(());
        }
        let sent: Vec<u8> = self.pending.drain(..upto).collect();
        self.offset += upto as u64;
        let text = String::from_utf8_lossy(&sent);
        let text = text.strip_suffix('\n').unwrap_or(&text);
        let id = format!("{}:{}", self.step, self.offset);
        self.send(event_with_id("log", &id, text)).await
    }

    /// Moves on to `step`: the one being read is complete.
    async fn enter(&mut self, step: i64) -> Result<(), Gone> {
        self.emit(true).await?;
        self.step = step;
        self.offset = 0;
        Ok(())
    }

    /// Reads from storage what was not sent yet.
    async fn catch_up(&mut self, state: &AppState) -> Result<(), Gone> {
        let logs = state.logs();
        let steps = logs.steps(self.job, self.attempt).await.map_err(|_| Gone)?;
        let steps: Vec<i64> = steps.into_iter().map(|(s, _)| s).filter(|s| *s >= self.step).collect();
        for (i, &step) in steps.iter().enumerate() {
            if step > self.step {
                self.enter(step).await?;
            }
            self.pending = logs.read_step(self.job, self.attempt, step, self.offset).await.map_err(|_| Gone)?;
            self.emit(i + 1 < steps.len()).await?;
        }
        Ok(())
    }

    /// Takes in a live append.
    async fn take(&mut self, state: &AppState, chunk: gitstratum_ci::logs::Chunk) -> Result<(), Gone> {
        if chunk.step < self.step {
            return Ok(());
        }
        if chunk.step > self.step {
            // A later step: the one being read may have ended with appends this reader never
            // got (another server's announcement lost with a listener connection, say), so
            // storage says how it ended, and how the later one began.
            return self.catch_up(state).await;
        }
        let have = self.offset + self.pending.len() as u64;
        let end = chunk.offset + chunk.bytes.len() as u64;
        if end <= have {
            return Ok(());
        }
        if chunk.offset > have {
            return self.catch_up(state).await; // missed some
        }
        let skip = usize::try_from(have - chunk.offset).unwrap_or(usize::MAX);
        self.pending.extend_from_slice(&chunk.bytes[skip..]);
        self.emit(false).await
    }

    /// Whether the attempt is over (the job moved past it, or completed).
    async fn over(&self, state: &AppState) -> bool {
        match state.ci().get_job(self.job).await {
            Ok(Some(j)) => j.attempt > self.attempt || j.state == JobState::Completed,
            _ => true,
        }
    }

    async fn follow(&mut self, state: &AppState) -> Result<(), Gone> {
        use tokio::sync::broadcast::error::RecvError;
        let mut quiet = Duration::ZERO;
        'subscribe: loop {
            // Subscribe before reading storage, so nothing written between is missed.
            let mut rx = state.logs().subscribe(self.job, self.attempt);
            self.catch_up(state).await?;
            loop {
                let closed = match tokio::time::timeout(RECHECK, rx.recv()).await {
                    Ok(Ok(chunk)) => {
                        quiet = Duration::ZERO;
                        self.take(state, chunk).await?;
                        continue;
                    }
                    // Fell behind the live buffer: read what was missed from storage, rejoin.
                    Ok(Err(RecvError::Lagged(_))) => {
                        self.catch_up(state).await?;
                        continue;
                    }
                    Ok(Err(RecvError::Closed)) => true,
                    Err(_) => false,
                };
                if self.over(state).await {
                    self.catch_up(state).await?;
                    self.emit(true).await?;
                    let conclusion = match state.ci().get_job(self.job).await {
                        Ok(Some(j)) if j.attempt == self.attempt => {
                            j.conclusion.map_or("unknown", |c| c.as_str()).to_owned()
                        }
                        _ => "superseded".to_owned(),
                    };
                    let id = format!("{}:{}", self.step, self.offset);
                    return self.send(event_with_id("end", &id, &conclusion)).await;
                }
                if closed {
                    drop(rx);
                    continue 'subscribe;
                }
                // Quiet: look at storage anyway (a lease can end without a last append).
                self.catch_up(state).await?;
                quiet += RECHECK;
                if quiet >= KEEPALIVE {
                    quiet = Duration::ZERO;
                    self.send(Bytes::from_static(b": keepalive\n\n")).await?;
                }
            }
        }
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}/events",
    tag = "ci",
    security((), ("token" = [])),
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
