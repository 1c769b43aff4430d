//! The ingestor: a consumer of the ref-change log that turns pushes into runs, and of the platform
//! event log that turns pull request events into runs (`ingest_pulls`).
//!
//! For each batch of events it reads, for every push to a branch or tag, the workflow files at
//! the pushed commit, keeps those whose `on.push` filters match (branches, tags, and paths against
//! the files the push changed), plans their jobs, and creates the runs, with their jobs and steps
//! and the new cursor position, in one transaction. A crash before the commit leaves the cursor
//! where it was, so the batch is read again and nothing is lost; a crash after it cannot create a
//! run twice (the cursor moved with the runs, and a run is unique per repository, commit,
//! workflow and event anyway). Deleted refs start nothing; a push of many commits starts one run
//! per workflow, for the new tip. An invalid workflow file does not vanish silently: its run is
//! created failed, with the diagnostics as its message.

use std::sync::Arc;
use std::time::Duration;

use gitstratum_core::Clock;
use gitstratum_platform::{Mergeable, PlatformEvent, PlatformStore, Repo};
use gitstratum_store::{ObjectStore, RefEvent, RefStore};
use gitstratum_workflow::plan::{GithubEvent, PlanContext, github_context, plan};
use gitstratum_workflow::trigger::{PullRequestEvent, PushEvent, pull_request_triggers, push_triggers};

use crate::references::{References, Stores, read_references};
use crate::source::{self, WorkflowFile};
use crate::store::{CiStore, NewJob, NewRun};

/// The ingestor's cursor on the ref-change log.
pub const CURSOR: &str = "ci";
/// The ingestor's cursor on the platform event log (pull request events).
pub const PULL_CURSOR: &str = "ci.pulls";

/// The event key of the runs platform event `event_id` starts: `pull:<id>` for `pull_request`,
/// `pull_target:<id>` for `pull_request_target` (with the repository, commit and workflow, what
/// makes a run unique).
pub fn pull_event_key(event_id: i64, target: bool) -> String {
    format!("{}:{event_id}", if target { "pull_target" } else { "pull" })
}

/// What a run's event key made by [`pull_event_key`] names: the platform event's id (`None` if
/// it does not parse) and whether it is `pull_request_target`; `None` for a run of another event.
pub fn pull_event_of(key: &str) -> Option<(Option<i64>, bool)> {
    let (id, target) = match key.strip_prefix("pull:") {
        Some(id) => (id, false),
        None => (key.strip_prefix("pull_target:")?, true),
    };
    Some((id.parse().ok(), target))
}
/// How long a pull request event waits for its test merge before it is given up.
const MERGE_WAIT_MS: i64 = 60_000;
/// The ingestor also polls, for events written without a wake-up (another process, say).
const POLL: Duration = Duration::from_millis(500);
/// The ingestor's singleton lock ([`gitstratum_platform::db::Db::try_singleton`]).
const SINGLETON: i32 = 1;
const EVENTS_PER_BATCH: usize = 100;
/// Diagnostics kept in a failed run's message.
const MAX_DIAGNOSTICS: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Platform(#[from] gitstratum_platform::Error),
    #[error(transparent)]
    Store(#[from] gitstratum_store::Error),
    #[error(transparent)]
    Source(#[from] source::SourceError),
    #[error("a blocking task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

pub struct Ingestor {
    pub ci: CiStore,
    pub platform: PlatformStore,
    pub objects: Arc<dyn ObjectStore>,
    pub refs: Arc<dyn RefStore>,
    pub clock: Arc<dyn Clock>,
    /// Where actions of repositories this installation lacks are looked up.
    pub upstream: Arc<dyn crate::upstream::Upstream>,
}

/// What one push carries to planning: the workflow files at the new commit and the changed paths.
struct PushSource {
    commit: String,
    commit_id: gitstratum_store::ObjectId,
    files: Vec<WorkflowFile>,
    changed: Option<Vec<String>>,
}

impl Ingestor {
    /// Runs until `stop` fires.
    pub async fn run(self, mut stop: tokio::sync::oneshot::Receiver<()>) {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.ci.ref_log.notified() => {}
                _ = &mut stop => break,
            }
            // Drain what is there before waiting again.
            loop {
                match self.ingest_once().await {
                    Ok(0) => break,
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "ci: ingesting the ref-change log failed; retrying");
                        break;
                    }
                }
            }
        }
    }

    /// Ingests one batch; returns how many events it consumed (0 also when another server is
    /// ingesting: servers sharing a database take turns, so only one reads the pushed commits —
    /// the cursor's compare-and-swap keeps it exactly-once regardless).
    pub async fn ingest_once(&self) -> Result<usize, IngestError> {
        let turn = self.platform.db().try_singleton(SINGLETON).await.map_err(gitstratum_platform::Error::from)?;
        let Some(_turn) = turn else { return Ok(0) };
        let pushes = self.ingest_pushes().await?;
        let pulls = self.ingest_pulls().await?;
        Ok(pushes + pulls)
    }

    /// One batch of the ref-change log: the runs its pushes start.
    async fn ingest_pushes(&self) -> Result<usize, IngestError> {
        let after = self.platform.log_cursor(CURSOR).await?;
        let refs = self.refs.clone();
        let events = tokio::task::spawn_blocking(move || refs.events_after(after, EVENTS_PER_BATCH)).await??;
        let Some(last) = events.last().map(|e| e.seq) else { return Ok(0) };
        let mut runs = Vec::new();
        for event in &events {
            if event.new.is_none() || !(event.name.starts_with("refs/heads/") || event.name.starts_with("refs/tags/")) {
                continue;
            }
            let Some(repo) = self.platform.get_repo_by_id(event.repo.0).await? else { continue };
            if self.ci.repo_settings(repo.id).await?.disabled {
                continue; // its CI is switched off (a fork, until its admins switch it on)
            }
            let objects = self.objects.clone();
            let read_event = event.clone();
            let Some(source) = tokio::task::spawn_blocking(move || read_push(&*objects, &read_event)).await?? else {
                continue;
            };
            // What the workflows this push starts refer to (the others' references are not read).
            let push = push_event(event, &source);
            let texts = source
                .files
                .iter()
                .filter_map(|f| f.text.as_ref().ok())
                .filter(|text| gitstratum_workflow::load(text).is_ok_and(|w| push_triggers(&w, &push)))
                .cloned();
            let stores = Stores {
                platform: &self.platform,
                ci: &self.ci,
                objects: &self.objects,
                refs: &self.refs,
                upstream: self.upstream.as_ref(),
            };
            let referenced = read_references(stores, &repo, source.commit_id, texts.collect::<Vec<_>>()).await;
            runs.extend(runs_for_push(&repo, event, &source, &referenced));
        }
        let created = self.ci.create_runs(CURSOR, after, last, &runs, self.clock.now()).await?;
        if !created.is_empty() {
            metrics::counter!("gitstratum_ci_runs_created_total", "event" => "push").increment(created.len() as u64);
            tracing::info!(runs = ?created, "ci: runs created");
        }
        Ok(events.len())
    }
}

impl Ingestor {
    /// One batch of the platform event log: the runs its pull request events start
    /// (`pull_request` on the test merge, `pull_request_target` on the base), created with the
    /// log's cursor in one transaction, as pushes are. An event whose pull request's test merge is
    /// not computed yet holds the batch back (for at most [`MERGE_WAIT_MS`]).
    async fn ingest_pulls(&self) -> Result<usize, IngestError> {
        let after = self.platform.log_cursor(PULL_CURSOR).await?;
        let events = self.platform.platform_events_after(after, EVENTS_PER_BATCH as u64).await?;
        let mut runs = Vec::new();
        let mut last = None;
        let mut consumed = 0;
        for event in &events {
            match self.runs_for_pull_event(event).await? {
                None => break,
                Some(more) => {
                    runs.extend(more);
                    last = Some(u64::try_from(event.id).unwrap_or(0));
                    consumed += 1;
                }
            }
        }
        let Some(last) = last else { return Ok(0) };
        let created = self.ci.create_runs(PULL_CURSOR, after, last, &runs, self.clock.now()).await?;
        if !created.is_empty() {
            metrics::counter!("gitstratum_ci_runs_created_total", "event" => "pull_request")
                .increment(created.len() as u64);
            tracing::info!(runs = ?created, "ci: runs created for pull requests");
        }
        Ok(consumed)
    }

    /// The runs one platform event starts; `None`: not yet (its test merge is being computed).
    async fn runs_for_pull_event(&self, event: &PlatformEvent) -> Result<Option<Vec<NewRun>>, IngestError> {
        let none = Ok(Some(Vec::new()));
        if event.event != "pull_request" {
            return none;
        }
        let Some(named) = &event.pull else { return none };
        let Some(pull) = self.platform.get_pull_by_id(named.pull_id).await? else { return none };
        let Some(repo) = self.platform.get_repo_by_id(event.repo.id).await? else { return none };
        if self.ci.repo_settings(repo.id).await?.disabled {
            return none;
        }
        // The commit `pull_request` runs on: the test merge of the event's head.
        let merge = if event.action == "closed" {
            if pull.merged { pull.merge_commit_sha.clone() } else { pull.merge_sha.clone() }
        } else if pull.head_sha != named.head_sha {
            None // pushed to again since: that push's event runs
        } else {
            match pull.mergeable {
                Mergeable::Clean => pull.merge_sha.clone(),
                // GitHub runs no pull_request workflow while the pull request conflicts.
                Mergeable::Conflict => None,
                Mergeable::Unknown if self.clock.now().0 - event.created_at.0 < MERGE_WAIT_MS => return Ok(None),
                Mergeable::Unknown => {
                    tracing::warn!(
                        pull = pull.id,
                        event = event.id,
                        "ci: no test merge for a pull request event; no run"
                    );
                    None
                }
            }
        };
        let hex = |text: &str| gitstratum_store::ObjectId::from_hex(text.as_bytes()).ok();
        let merge = merge.as_deref().and_then(hex);
        let Some(base) = hex(&named.base_sha) else { return none };
        let objects = self.objects.clone();
        let rid = gitstratum_store::RepoId(repo.id);
        let read = tokio::task::spawn_blocking(move || -> Result<_, source::SourceError> {
            let merged = match merge {
                Some(m) => {
                    Some((source::workflow_files(&*objects, rid, m)?, source::changed_paths(&*objects, rid, base, m)?))
                }
                None => None,
            };
            Ok((merged, source::workflow_files(&*objects, rid, base)?))
        });
        let (merged, target_files) = read.await??;
        let mut runs = Vec::new();
        let merge_ref = format!("refs/pull/{}/merge", pull.number);
        let base_ref = format!("refs/heads/{}", pull.base_ref);
        let sources = [
            (false, merged.as_ref().map(|(files, changed)| (files, changed.as_deref())), merge, merge_ref.as_str()),
            (true, Some((&target_files, None)), Some(base), base_ref.as_str()),
        ];
        for (target, files, commit, git_ref) in sources {
            let (Some((files, changed)), Some(commit)) = (files, commit) else { continue };
            let trigger =
                PullRequestEvent { action: &event.action, base_branch: &pull.base_ref, changed_paths: changed };
            // Only valid workflows that name this event: a broken file fails its push's run, not
            // every pull request's.
            let texts: Vec<String> = files
                .iter()
                .filter_map(|f| f.text.as_ref().ok())
                .filter(|text| {
                    gitstratum_workflow::load(text).is_ok_and(|w| pull_request_triggers(&w, target, &trigger))
                })
                .cloned()
                .collect();
            if texts.is_empty() {
                continue;
            }
            let stores = Stores {
                platform: &self.platform,
                ci: &self.ci,
                objects: &self.objects,
                refs: &self.refs,
                upstream: self.upstream.as_ref(),
            };
            let referenced = read_references(stores, &repo, commit, texts).await;
            let commit_hex = commit.to_string();
            let ev = Event {
                name: if target { "pull_request_target" } else { "pull_request" },
                key: pull_event_key(event.id, target),
                git_ref,
                commit: &commit_hex,
                actor: &event.actor,
                head_ref: &pull.head_ref,
                base_ref: &pull.base_ref,
            };
            for file in files {
                let valid = file.text.as_ref().ok().and_then(|t| gitstratum_workflow::load(t).ok());
                if !valid.is_some_and(|w| pull_request_triggers(&w, target, &trigger)) {
                    continue;
                }
                runs.extend(plan_run(&repo, file, &ev, &referenced, |_| Decision::Run {
                    inputs: gitstratum_workflow::expr::Value::Null,
                }));
            }
        }
        Ok(Some(runs))
    }
}

/// Reads what planning needs from Git; `None` when the ref does not name a commit.
fn read_push(objects: &dyn ObjectStore, event: &RefEvent) -> Result<Option<PushSource>, source::SourceError> {
    let Some(new) = event.new else { return Ok(None) };
    let Some(commit) = source::peel_to_commit(objects, event.repo, new)? else { return Ok(None) };
    let files = source::workflow_files(objects, event.repo, commit)?;
    let old = match event.old {
        Some(old) => source::peel_to_commit(objects, event.repo, old)?,
        None => None,
    };
    // A new branch or tag: the changed paths are unknown, and path filters let it through.
    let changed = match old {
        Some(old) if !files.is_empty() => source::changed_paths(objects, event.repo, old, commit)?,
        _ => None,
    };
    Ok(Some(PushSource { commit: commit.to_string(), commit_id: commit, files, changed }))
}

/// What started a run.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    /// `push`, `workflow_dispatch`, `pull_request` or `pull_request_target`.
    pub name: &'a str,
    /// Unique per repository, commit and workflow for this event (`push:<seq>`, `dispatch:<id>`, `pull:<platform event id>`).
    pub key: String,
    pub git_ref: &'a str,
    pub commit: &'a str,
    pub actor: &'a str,
    /// Pull request events: the head and base branches (empty otherwise).
    pub head_ref: &'a str,
    pub base_ref: &'a str,
}

/// Whether a valid workflow runs for the event, and with which `inputs`.
pub enum Decision {
    Skip,
    Run {
        inputs: gitstratum_workflow::expr::Value,
    },
    /// It cannot run as asked (bad inputs): a failed run says why.
    Fail(String),
}

/// The run a workflow file makes for an event: `None` when the workflow does not run for it; a
/// failed run (with the diagnostics) when the file cannot be read or does not validate.
pub fn plan_run(
    repo: &Repo,
    file: &WorkflowFile,
    event: &Event<'_>,
    refs: &References,
    decide: impl FnOnce(&gitstratum_workflow::Workflow) -> Decision,
) -> Option<NewRun> {
    let base = NewRun {
        repo_id: repo.id,
        workflow_path: file.path.clone(),
        workflow_name: file.path.clone(),
        title: file.path.clone(),
        event: event.name.to_owned(),
        event_key: event.key.clone(),
        git_ref: event.git_ref.to_owned(),
        commit_sha: event.commit.to_owned(),
        actor: event.actor.to_owned(),
        failure: None,
        workflow: None,
        inputs: None,
        concurrency: None,
        jobs: Vec::new(),
    };
    let text = match &file.text {
        Ok(text) => text,
        Err(why) => return Some(NewRun { failure: Some(format!("{}: {why}", file.path)), ..base }),
    };
    let workflow = match gitstratum_workflow::load(text) {
        Ok(workflow) => workflow,
        Err(diagnostics) => {
            let mut message: Vec<String> =
                diagnostics.iter().take(MAX_DIAGNOSTICS).map(|d| d.display_in(&file.path).to_string()).collect();
            if diagnostics.len() > MAX_DIAGNOSTICS {
                message.push(format!("… and {} more", diagnostics.len() - MAX_DIAGNOSTICS));
            }
            return Some(NewRun { failure: Some(message.join("\n")), ..base });
        }
    };
    let name = workflow.name.clone().unwrap_or_else(|| file.path.clone());
    let base = NewRun { workflow_name: name.clone(), title: name.clone(), ..base };
    let inputs = match decide(&workflow) {
        Decision::Skip => return None,
        Decision::Fail(why) => return Some(NewRun { failure: Some(why), ..base }),
        Decision::Run { inputs } => inputs,
    };
    let full_name = format!("{}/{}", repo.owner, repo.name);
    let github = github_context(&GithubEvent {
        event_name: event.name,
        git_ref: event.git_ref,
        sha: event.commit,
        repository: &full_name,
        actor: event.actor,
        workflow: &name,
        head_ref: event.head_ref,
        base_ref: event.base_ref,
    });
    let inputs_json = (!matches!(inputs, gitstratum_workflow::expr::Value::Null)).then(|| inputs.to_json().to_string());
    // Reusable workflows it calls become their jobs (the files were read beforehand).
    let mut resolve = |uses: &str| -> Result<(String, String), String> {
        refs.workflows.get(uses).cloned().unwrap_or_else(|| Err(format!("'{uses}' could not be read")))
    };
    let mut workflow = match gitstratum_workflow::call::expand_calls(&workflow, &mut resolve) {
        Ok(expanded) => expanded,
        Err(e) => return Some(NewRun { failure: Some(format!("{}: {e}", file.path)), ..base }),
    };
    // A job with a step whose action cannot be used fails without running, saying where.
    for job in workflow.jobs.values_mut() {
        let file_shown = job.call.last().map_or(file.path.clone(), |f| f.uses.clone());
        let unusable = job.steps.iter().enumerate().find_map(|(n, step)| {
            let gitstratum_workflow::model::StepAction::Other { reference, .. } = &step.action else { return None };
            let Some(Err(why)) = refs.actions.get(reference) else { return None };
            Some(format!("{file_shown}:{}:{}: step {}: {why}", step.pos.line, step.pos.col, n + 1))
        });
        if unusable.is_some() {
            job.refused = unusable;
        }
    }
    let planned = match plan(&workflow, &PlanContext { github, inputs, ..Default::default() }) {
        Ok(planned) => planned,
        Err(e) => return Some(NewRun { failure: Some(format!("{}: {e}", file.path)), ..base }),
    };
    let jobs = planned.jobs.iter().map(|job| NewJob::planned(&workflow, job)).collect();
    Some(NewRun {
        title: planned.run_name.unwrap_or(name),
        workflow: serde_json::to_string(&workflow).ok(),
        inputs: inputs_json,
        concurrency: planned.concurrency.map(|c| (c.group, c.cancel_in_progress)),
        jobs,
        ..base
    })
}

/// What a push's trigger filters look at.
fn push_event<'a>(event: &'a RefEvent, source: &'a PushSource) -> PushEvent<'a> {
    PushEvent { git_ref: &event.name, changed_paths: source.changed.as_deref(), deleted: false }
}

/// The runs a push starts: one per workflow file whose filters match (or that is invalid).
fn runs_for_push(repo: &Repo, event: &RefEvent, source: &PushSource, refs: &References) -> Vec<NewRun> {
    let ev = Event {
        name: "push",
        key: format!("push:{}", event.seq),
        git_ref: &event.name,
        commit: &source.commit,
        actor: &event.pusher,
        head_ref: "",
        base_ref: "",
    };
    let push = push_event(event, source);
    source
        .files
        .iter()
        .filter_map(|file| {
            plan_run(repo, file, &ev, refs, |workflow| {
                if push_triggers(workflow, &push) {
                    Decision::Run { inputs: gitstratum_workflow::expr::Value::Null }
                } else {
                    Decision::Skip
                }
            })
        })
        .collect()
}
