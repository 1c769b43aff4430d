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

/// The header of a gap reply that says how much of the step the server has.
pub const LOG_OFFSET: &str = "x-log-offset";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogReply {
    Stored(u64),
    /// The server has less of the step than the frame's offset: resend from the offset it has.
    Gap(u64),
    LeaseLost,
}
