//! The runner protocol's client side.

use serde::Deserialize;
use serde_json::json;

use crate::RunnerError;

#[derive(Debug, Clone, Deserialize)]
pub struct Registered {
    pub id: i64,
    pub heartbeat_seconds: i64,
}

/// A job handed to this runner (see the server's `JobLease`).
#[derive(Debug, Clone, Deserialize)]
pub struct Lease {
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
    pub job_key: String,
    pub name: String,
    pub matrix: Option<serde_json::Value>,
    pub workflow: serde_json::Value,
    #[serde(default)]
    pub inputs: serde_json::Value,
    #[serde(default)]
    pub needs: serde_json::Value,
    pub token: String,
    pub heartbeat_seconds: i64,
    /// The most the server keeps of one step's log.
    #[serde(default = "default_step_log_bytes")]
    pub log_step_max_bytes: u64,
    /// The secrets the job references (masked in its log).
    #[serde(default)]
    pub secrets: std::collections::BTreeMap<String, String>,
    /// The `vars` context.
    #[serde(default)]
    pub vars: std::collections::BTreeMap<String, String>,
    /// The server's URL (`GITHUB_SERVER_URL`).
    #[serde(default)]
    pub server_url: String,
    #[serde(default)]
    pub repository_id: i64,
    #[serde(default)]
    pub repository_owner_id: i64,
    #[serde(default)]
    pub actor_id: Option<i64>,
    /// The workflow file's path in the repository.
    #[serde(default)]
    pub workflow_path: String,
    /// The event's payload (`$GITHUB_EVENT_PATH`, `github.event`).
    #[serde(default)]
    pub event_payload: serde_json::Value,
    /// The `strategy` context.
    #[serde(default)]
    pub strategy: serde_json::Value,
}

fn default_step_log_bytes() -> u64 {
    64 << 20
}

/// What a heartbeat reply says, in increasing order of severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Signal {
    Continue,
    /// The run was cancelled: stop the step, run only `always()`/`cancelled()` steps, complete.
    Cancel,
    /// The job is not ours any more: kill everything, report nothing.
    Stop,
}

/// What the server said to a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Ok,
    /// The job is not this runner's any more: stop it.
    LeaseLost,
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    pub fn new(http: reqwest::Client, server: &str, token: &str) -> Client {
        Client { http, base: format!("{}/api/v1/runner", server.trim_end_matches('/')), token: token.to_owned() }
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.post(format!("{}{path}", self.base)).bearer_auth(&self.token)
    }

    async fn refused(response: reqwest::Response) -> RunnerError {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        RunnerError::Refused(format!("HTTP {status}: {body}"))
    }

    pub async fn register(&self, name: &str, labels: &[String]) -> Result<Registered, RunnerError> {
        let response = self.post("/register").json(&json!({"name": name, "labels": labels})).send().await?;
        if !response.status().is_success() {
            return Err(Self::refused(response).await);
        }
        Ok(response.json().await?)
    }

    /// Waits (up to the server's limit) for a job.
    pub async fn request(&self, runner: i64) -> Result<Option<Lease>, RunnerError> {
        let response =
            self.post(&format!("/{runner}/jobs/request")).timeout(std::time::Duration::from_secs(60)).send().await?;
        match response.status().as_u16() {
            204 => Ok(None),
            200 => Ok(Some(response.json().await?)),
            _ => Err(Self::refused(response).await),
        }
    }

    async fn report(&self, path: String, body: serde_json::Value) -> Result<Reply, RunnerError> {
        let response = self.post(&path).json(&body).send().await?;
        match response.status().as_u16() {
            200..=299 => Ok(Reply::Ok),
            409 => Ok(Reply::LeaseLost),
            _ => Err(Self::refused(response).await),
        }
    }

    pub async fn ack(&self, runner: i64, lease: &Lease) -> Result<Reply, RunnerError> {
        self.report(format!("/{runner}/jobs/{}/ack", lease.job_id), json!({"attempt": lease.attempt})).await
    }

    /// What the server says to keep doing.
    pub async fn heartbeat(&self, runner: i64, job: i64, attempt: i64) -> Result<Signal, RunnerError> {
        let response =
            self.post(&format!("/{runner}/jobs/{job}/heartbeat")).json(&json!({"attempt": attempt})).send().await?;
        if !response.status().is_success() {
            return Err(Self::refused(response).await);
        }
        let body: serde_json::Value = response.json().await?;
        Ok(match body["action"].as_str() {
            Some("continue") => Signal::Continue,
            Some("cancel") => Signal::Cancel,
            _ => Signal::Stop,
        })
    }

    pub async fn step(
        &self,
        runner: i64,
        job: i64,
        attempt: i64,
        number: usize,
        conclusion: Option<&str>,
        annotations: &[crate::logship::Annotation],
    ) -> Result<Reply, RunnerError> {
        let body = json!({"attempt": attempt, "conclusion": conclusion, "annotations": annotations});
        self.report(format!("/{runner}/jobs/{job}/steps/{number}"), body).await
    }

    pub async fn complete(
        &self,
        runner: i64,
        job: i64,
        attempt: i64,
        conclusion: &str,
        outputs: &std::collections::BTreeMap<String, String>,
    ) -> Result<Reply, RunnerError> {
        let body = json!({"attempt": attempt, "conclusion": conclusion, "outputs": outputs});
        self.report(format!("/{runner}/jobs/{job}/complete"), body).await
    }

    /// Sends log bytes of `step` starting at `offset`; returns the server's offset after them.
    pub async fn log(
        &self,
        runner: i64,
        job: i64,
        attempt: i64,
        step: i64,
        offset: u64,
        bytes: Vec<u8>,
    ) -> Result<LogReply, RunnerError> {
        let response = self
            .post(&format!("/{runner}/jobs/{job}/logs?attempt={attempt}&step={step}&offset={offset}"))
            .header("content-type", "application/octet-stream")
            .body(bytes)
            .send()
            .await?;
        match response.status().as_u16() {
            200 => {
                let body: serde_json::Value = response.json().await?;
                Ok(LogReply::Stored(body["offset"].as_u64().unwrap_or(offset)))
            }
            409 => {
                let have = response.headers().get(LOG_OFFSET).and_then(|v| v.to_str().ok()?.parse().ok());
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                if body["error"]["code"] == "log.gap" {
                    Ok(LogReply::Gap(have.unwrap_or(0)))
                } else {
                    Ok(LogReply::LeaseLost)
                }
            }
            _ => Err(Self::refused(response).await),
        }
    }
}

/// What the server said to a request about artifacts or caches.
#[derive(Debug)]
pub enum Answer {
    /// 2xx, with its JSON body (`Null` for 204).
    Ok(serde_json::Value),
    /// Refused for a reason worth telling the job (a 4xx other than a lost lease): code and message.
    No(String, String),
    LeaseLost,
}

/// The size of an upload's chunks.
pub const CHUNK_BYTES: usize = 8 << 20;
/// How many chunks of an upload are sent at once.
const UPLOADS_IN_FLIGHT: usize = 3;

impl Client {
    fn job_path(&self, runner: i64, job: i64, rest: &str) -> String {
        format!("{}/{runner}/jobs/{job}/{rest}", self.base)
    }

    async fn answer(response: reqwest::Response) -> Result<Answer, RunnerError> {
        let status = response.status();
        if status.is_success() {
            if status == reqwest::StatusCode::NO_CONTENT {
                return Ok(Answer::Ok(serde_json::Value::Null));
            }
            return Ok(Answer::Ok(response.json().await?));
        }
        if status.is_client_error() {
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            let code = body["error"]["code"].as_str().unwrap_or_default().to_owned();
            if code == "job.lease_lost" {
                return Ok(Answer::LeaseLost);
            }
            let message = body["error"]["message"].as_str().unwrap_or("refused").to_owned();
            return Ok(Answer::No(code, message));
        }
        Err(Self::refused(response).await)
    }

    /// A JSON request about the job (`rest` under `jobs/{job}/`).
    pub async fn job_request(
        &self,
        method: reqwest::Method,
        runner: i64,
        job: i64,
        rest: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, RunnerError> {
        let mut request = self.http.request(method, self.job_path(runner, job, rest)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        Self::answer(request.send().await?).await
    }

    /// Uploads the file at `path` into the job's upload `slot`: chunks addressed by offset, a few
    /// in flight at once (the server takes them in any order), each retried on a network error or a
    /// server error. Only one chunk's bytes per request are in memory.
    pub async fn upload(
        &self,
        runner: i64,
        job: i64,
        attempt: i64,
        slot: &str,
        path: &std::path::Path,
    ) -> Result<Answer, RunnerError> {
        use tokio::io::AsyncReadExt;
        let mut file = tokio::fs::File::open(path).await?;
        let len = file.metadata().await?.len();
        let mut inflight: tokio::task::JoinSet<Result<Answer, RunnerError>> = tokio::task::JoinSet::new();
        let mut offset = 0u64;
        loop {
            let mut chunk = vec![0u8; usize::try_from((len - offset).min(CHUNK_BYTES as u64)).unwrap_or(CHUNK_BYTES)];
            file.read_exact(&mut chunk).await?;
            let url = self.job_path(runner, job, &format!("uploads/{slot}?attempt={attempt}&offset={offset}"));
            let (http, token) = (self.http.clone(), self.token.clone());
            inflight.spawn(async move { Self::put_chunk(&http, &token, &url, chunk).await });
            offset += CHUNK_BYTES as u64;
            // Wait for a chunk to land when enough are in flight, and at the end for all of them.
            while inflight.len() >= UPLOADS_IN_FLIGHT || (offset >= len && !inflight.is_empty()) {
                match inflight.join_next().await {
                    Some(Ok(Ok(Answer::Ok(_)))) | None => {}
                    Some(Ok(Ok(other))) => return Ok(other),
                    Some(Ok(Err(e))) => return Err(e),
                    Some(Err(e)) => return Err(RunnerError::Io(std::io::Error::other(e.to_string()))),
                }
            }
            if offset >= len {
                return Ok(Answer::Ok(serde_json::Value::Null));
            }
        }
    }

    /// One chunk, retried up to five times (with backoff) on a network or server error.
    async fn put_chunk(http: &reqwest::Client, token: &str, url: &str, chunk: Vec<u8>) -> Result<Answer, RunnerError> {
        // Shared, so a retry sends it again without a copy.
        let chunk = bytes::Bytes::from(chunk);
        let mut failures = 0;
        loop {
            let sent = http
                .put(url)
                .bearer_auth(token)
                .header("content-type", "application/octet-stream")
                .body(chunk.clone())
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_server_error() && failures < 5 => {}
                Err(_) if failures < 5 => {}
                Ok(r) => return Self::answer(r).await,
                Err(e) => return Err(e.into()),
            }
            failures += 1;
            tokio::time::sleep(std::time::Duration::from_millis(200 << failures)).await;
        }
    }

    /// Downloads `rest` (under `jobs/{job}/`) into a new file at `to`; returns its length.
    pub async fn download(
        &self,
        runner: i64,
        job: i64,
        rest: &str,
        to: &std::path::Path,
    ) -> Result<Answer, RunnerError> {
        use tokio::io::AsyncWriteExt;
        let mut response = self.http.get(self.job_path(runner, job, rest)).bearer_auth(&self.token).send().await?;
        if !response.status().is_success() {
            return Self::answer(response).await;
        }
        let mut file = tokio::fs::File::create(to).await?;
        let mut bytes = 0u64;
        while let Some(chunk) = response.chunk().await? {
            file.write_all(&chunk).await?;
            bytes += chunk.len() as u64;
        }
        file.flush().await?;
        Ok(Answer::Ok(serde_json::json!({ "bytes": bytes })))
    }
}

/// The header of a gap reply that says how much of the step the server has.
pub const LOG_OFFSET: &str = "x-log-offset";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogReply {
    Stored(u64),
    /// The server has less of the step than the frame's offset: resend from the offset it has.
    Gap(u64),
    LeaseLost,
}
