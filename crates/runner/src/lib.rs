//! The runner: registers with a server, long-polls for jobs, and runs each job's steps in a
//! bubblewrap sandbox, streaming the log and reporting steps and the result over the runner
//! protocol (`/api/v1/runner/`). `gitstratum serve` starts one in-process (the embedded runner);
//! `gitstratum runner` runs one anywhere else. Both speak only HTTP to the server.
//!
//! What it must never do: run a step outside the sandbox, or show the job's token in a log.

#![forbid(unsafe_code)]

mod actions;
pub mod exec;
mod files;
pub mod limits;
pub mod logship;
pub mod protocol;
pub mod sandbox;
mod uses;

use std::path::PathBuf;
use std::time::Duration;

pub use limits::Limits;
pub use sandbox::Network;

/// Labels every runner has unless told otherwise, so workflows written for GitHub run unchanged.
pub const DEFAULT_LABELS: [&str; 4] = ["self-hosted", "linux", "x64", "ubuntu-latest"];

#[derive(Clone)]
pub struct RunnerConfig {
    /// The server's base URL.
    pub server: String,
    /// A token of scope `ci:runner`.
    pub token: String,
    pub name: String,
    pub labels: Vec<String>,
    /// Where job workspaces are made (each job gets its own, removed afterwards).
    pub work_dir: PathBuf,
    pub network: Network,
    /// Memory and process limits of each job.
    pub limits: Limits,
    /// Jobs run at once.
    pub capacity: usize,
    /// Called with the runner's id once it has registered (the embedded runner uses it to take
    /// back what its predecessor held).
    pub on_registered: Option<std::sync::Arc<dyn Fn(i64) + Send + Sync>>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("the server refused: {0}")]
    Refused(String),
    #[error("cannot reach the server: {0}")]
    Http(#[from] reqwest::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("bubblewrap (bwrap) is not installed or cannot make a sandbox here: {0}")]
    NoSandbox(String),
}

/// Registers and runs up to `capacity` jobs at once until `stop` resolves (jobs in progress are
/// finished first, or stopped by the server through their heartbeats).
pub async fn run(
    config: RunnerConfig,
    http: reqwest::Client,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> Result<(), RunnerError> {
    sandbox::check().await.map_err(RunnerError::NoSandbox)?;
    std::fs::create_dir_all(&config.work_dir)?;
    let client = protocol::Client::new(http, &config.server, &config.token);
    let runner = client.register(&config.name, &config.labels).await?;
    tracing::info!(runner = runner.id, name = %config.name, labels = ?config.labels, capacity = config.capacity, "runner registered");
    if let Some(registered) = &config.on_registered {
        registered(runner.id);
    }
    let (stopping, stopped) = tokio::sync::watch::channel(false);
    let mut slots = tokio::task::JoinSet::new();
    for _ in 0..config.capacity.max(1) {
        slots.spawn(slot(client.clone(), runner.id, config.clone(), stopped.clone()));
    }
    let _ = stop.await;
    let _ = stopping.send(true);
    while slots.join_next().await.is_some() {}
    Ok(())
}

/// One job at a time: ask, run, ask again, until told to stop (a job being run is finished).
async fn slot(
    client: protocol::Client,
    runner: i64,
    config: RunnerConfig,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        let next = tokio::select! {
            next = client.request(runner) => next,
            _ = stop.changed() => return,
        };
        match next {
            Ok(Some(lease)) => {
                let job = lease.job_id;
                if let Err(e) = exec::run_job(&client, runner, &config, lease).await {
                    tracing::warn!(job, error = %e, "runner: the job did not finish cleanly");
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "runner: asking for a job failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }
}
