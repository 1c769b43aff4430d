//! Runs, jobs and steps in the platform database. A run is created whole (with its jobs and
//! steps) in one transaction with the cursor of the log it came from; later transitions are
//! guarded updates (`… WHERE state = expected`), so a repeated or late message changes nothing.

use gitstratum_core::Timestamp;
use gitstratum_platform::db::{Conn, Db, DbRow, FromDbRow};
use gitstratum_platform::events::move_log_cursor;
use gitstratum_platform::store::Result;
use sea_query::{Alias, Expr, ExprTrait, Func, OnConflict, Order, Query};

use crate::state::{Conclusion, JobState, RunState};

/// A run to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRun {
    pub repo_id: i64,
    pub workflow_path: String,
    pub workflow_name: String,
    pub title: String,
    /// `push`, `workflow_dispatch`.
    pub event: String,
    /// What made it, unique per repository, commit and workflow: `push:<ref-log seq>`.
    pub event_key: String,
    pub git_ref: String,
    pub commit_sha: String,
    pub actor: String,
    /// Set when the run fails before anything runs (an invalid workflow): why. Such a run is
    /// created completed, with conclusion `failure`, and no jobs.
    pub failure: Option<String>,
    /// The validated workflow, as JSON: what its jobs run.
    pub workflow: Option<String>,
    /// `workflow_dispatch` inputs, as a JSON object.
    pub inputs: Option<String>,
    /// The workflow's concurrency group, evaluated, and whether it cancels runs in progress.
    pub concurrency: Option<(String, bool)>,
    pub jobs: Vec<NewJob>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    pub job_key: String,
    pub name: String,
    pub matrix: Option<String>,
    pub needs: Vec<String>,
    pub runs_on: Option<Vec<String>>,
    /// Step names, in order.
    pub steps: Vec<String>,
    /// A failed instance cancels the job's other matrix instances (GitHub's default).
    pub fail_fast: bool,
    /// At most this many instances of the job run at once.
    pub max_parallel: Option<i64>,
    /// The job's concurrency group, evaluated, and whether it cancels the group's jobs in
    /// progress.
    pub concurrency: Option<(String, bool)>,
    /// GitStratum's `retry:` extension.
    pub retry: Option<RetryPolicy>,
}

impl NewJob {
    /// The job row a planned job instance becomes. A job whose `runs_on` is not known (its matrix
    /// or labels need the outputs of the jobs it needs, or planning it failed) is planned again
    /// when those jobs have finished, and then runs or fails saying why.
    pub fn planned(workflow: &gitstratum_workflow::Workflow, job: &gitstratum_workflow::plan::PlannedJob) -> NewJob {
        let spec = workflow.jobs.get(&job.job_id);
        NewJob {
            job_key: job.job_id.clone(),
            name: job.display_name.clone(),
            matrix: job.matrix.as_ref().map(|m| gitstratum_workflow::plan::combination_to_json(m).to_string()),
            needs: job.needs.clone(),
            runs_on: job.runs_on.clone(),
            steps: spec.map_or_else(Vec::new, |j| {
                j.steps.iter().map(gitstratum_workflow::model::Step::display_name).collect()
            }),
            fail_fast: job.fail_fast,
            max_parallel: job.max_parallel,
            concurrency: job.concurrency.as_ref().map(|c| (c.group.clone(), c.cancel_in_progress)),
            retry: spec.and_then(|j| j.retry.as_ref()).map(|r| RetryPolicy {
                max_attempts: i64::from(r.max_attempts),
                delay_ms: (r.delay_seconds * 1000.0) as i64,
                exponential: r.exponential,
            }),
        }
    }
}

/// How a failed job is tried again: `max_attempts` in all, the second after `delay_ms`, each
/// further one after twice as long when `exponential` (with ±20 % jitter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: i64,
    pub delay_ms: i64,
    pub exponential: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub id: i64,
    pub repo_id: i64,
    pub run_number: i64,
    pub workflow_path: String,
    pub workflow_name: String,
    pub title: String,
    pub event: String,
    /// What made it (`push:<ref-log seq>`, `dispatch:<id>`).
    pub event_key: String,
    pub git_ref: String,
    pub commit_sha: String,
    pub actor: String,
    pub state: RunState,
    pub conclusion: Option<Conclusion>,
    pub message: Option<String>,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub completed_at: Option<Timestamp>,
}

impl Run {
    /// The `github` context of the run's expressions (`repository` is its `owner/name`).
    pub fn github_context(&self, repository: &str) -> gitstratum_workflow::expr::Value {
        gitstratum_workflow::plan::github_context(&gitstratum_workflow::plan::GithubEvent {
            event_name: &self.event,
            git_ref: &self.git_ref,
            sha: &self.commit_sha,
            repository,
            actor: &self.actor,
            workflow: &self.workflow_name,
            ..Default::default()
        })
    }
}

impl Run {
    /// The branch or tag the run is for (`head_branch`).
    pub fn ref_name(&self) -> &str {
        gitstratum_workflow::plan::ref_name(&self.git_ref)
    }
}

fn bad_value(column: &str, value: &str) -> sqlx::Error {
    sqlx::Error::Decode(format!("unknown {column} {value:?}").into())
}

fn conclusion(row: &DbRow) -> Result<Option<Conclusion>, sqlx::Error> {
    row.get::<Option<String>>("conclusion")?
        .map(|c| Conclusion::parse(&c).ok_or_else(|| bad_value("conclusion", &c)))
        .transpose()
}

fn time(row: &DbRow, column: &str) -> Result<Option<Timestamp>, sqlx::Error> {
    Ok(row.get::<Option<i64>>(column)?.map(Timestamp))
}

impl FromDbRow for Run {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        let state: String = row.get("state")?;
        Ok(Run {
            id: row.get("id")?,
            repo_id: row.get("repo_id")?,
            run_number: row.get("run_number")?,
            workflow_path: row.get("workflow_path")?,
            workflow_name: row.get("workflow_name")?,
            title: row.get("title")?,
            event: row.get("event")?,
            event_key: row.get("event_key")?,
            git_ref: row.get("git_ref")?,
            commit_sha: row.get("commit_sha")?,
            actor: row.get("actor")?,
            state: RunState::parse(&state).ok_or_else(|| bad_value("run state", &state))?,
            conclusion: conclusion(row)?,
            message: row.get("message")?,
            created_at: Timestamp(row.get("created_at")?),
            started_at: time(row, "started_at")?,
            completed_at: time(row, "completed_at")?,
        })
    }
}

pub(crate) const RUN_COLUMNS: [&str; 17] = [
    "id",
    "repo_id",
    "run_number",
    "workflow_path",
    "workflow_name",
    "title",
    "event",
    "event_key",
    "git_ref",
    "commit_sha",
    "actor",
    "state",
    "conclusion",
    "message",
    "created_at",
    "started_at",
    "completed_at",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: i64,
    pub run_id: i64,
    pub job_key: String,
    pub name: String,
    pub matrix: Option<String>,
    pub needs: Vec<String>,
    pub runs_on: Option<Vec<String>>,
    pub state: JobState,
    pub conclusion: Option<Conclusion>,
    /// Why it ended as it did, when that needs saying (a lost runner, a skipped dependency).
    pub message: Option<String>,
    /// Its `outputs`, a JSON object, once completed.
    pub outputs: Option<String>,
    pub attempt: i64,
    pub runner_id: Option<i64>,
    pub lease_expires_at: Option<Timestamp>,
    /// The run was cancelled while this job ran; its runner hears it in the heartbeat reply.
    pub cancel_requested: bool,
    pub fail_fast: bool,
    pub max_parallel: Option<i64>,
    pub retry: Option<RetryPolicy>,
    /// Queued, but not to be leased before this time (a retry's delay).
    pub not_before: Option<Timestamp>,
    /// The job's concurrency group (evaluated) and whether it cancels the group's jobs in
    /// progress.
    pub concurrency: Option<(String, bool)>,
    /// Waiting behind a job of its concurrency group.
    pub blocked: bool,
    /// When the retention sweeper deleted its logs.
    pub logs_expired_at: Option<Timestamp>,
    /// When it last became leasable (queued, or its retry delay over).
    pub queued_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub completed_at: Option<Timestamp>,
}

fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

impl FromDbRow for Job {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        let state: String = row.get("state")?;
        Ok(Job {
            id: row.get("id")?,
            run_id: row.get("run_id")?,
            job_key: row.get("job_key")?,
            name: row.get("name")?,
            matrix: row.get("matrix")?,
            needs: words(&row.get::<String>("needs")?),
            runs_on: row.get::<Option<String>>("runs_on")?.map(|r| words(&r)),
            state: JobState::parse(&state).ok_or_else(|| bad_value("job state", &state))?,
            conclusion: conclusion(row)?,
            message: row.get("message")?,
            outputs: row.get("outputs")?,
            attempt: row.get("attempt")?,
            runner_id: row.get("runner_id")?,
            lease_expires_at: time(row, "lease_expires_at")?,
            cancel_requested: row.get("cancel_requested")?,
            fail_fast: row.get("fail_fast")?,
            max_parallel: row.get("max_parallel")?,
            retry: match row.get::<Option<i64>>("retry_max")? {
                Some(max_attempts) => Some(RetryPolicy {
                    max_attempts,
                    delay_ms: row.get::<Option<i64>>("retry_delay_ms")?.unwrap_or(0),
                    exponential: row.get("retry_exponential")?,
                }),
                None => None,
            },
            not_before: time(row, "not_before")?,
            concurrency: row
                .get::<Option<String>>("concurrency_group")?
                .map(|g| row.get::<bool>("concurrency_cancel").map(|c| (g, c)))
                .transpose()?,
            blocked: row.get("blocked")?,
            logs_expired_at: time(row, "logs_expired_at")?,
            queued_at: time(row, "queued_at")?,
            created_at: Timestamp(row.get("created_at")?),
            started_at: time(row, "started_at")?,
            completed_at: time(row, "completed_at")?,
        })
    }
}

pub(crate) const JOB_COLUMNS: [&str; 29] = [
    "id",
    "run_id",
    "job_key",
    "name",
    "matrix",
    "needs",
    "runs_on",
    "state",
    "conclusion",
    "message",
    "outputs",
    "attempt",
    "runner_id",
    "lease_expires_at",
    "cancel_requested",
    "fail_fast",
    "max_parallel",
    "retry_max",
    "retry_delay_ms",
    "retry_exponential",
    "not_before",
    "concurrency_group",
    "concurrency_cancel",
    "blocked",
    "logs_expired_at",
    "queued_at",
    "created_at",
    "started_at",
    "completed_at",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub id: i64,
    pub job_id: i64,
    pub number: i64,
    pub name: String,
    pub state: RunState,
    pub conclusion: Option<Conclusion>,
    pub started_at: Option<Timestamp>,
    pub completed_at: Option<Timestamp>,
}

impl FromDbRow for Step {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        let state: String = row.get("state")?;
        Ok(Step {
            id: row.get("id")?,
            job_id: row.get("job_id")?,
            number: row.get("number")?,
            name: row.get("name")?,
            state: RunState::parse(&state).ok_or_else(|| bad_value("step state", &state))?,
            conclusion: conclusion(row)?,
            started_at: time(row, "started_at")?,
            completed_at: time(row, "completed_at")?,
        })
    }
}

const STEP_COLUMNS: [&str; 8] = ["id", "job_id", "number", "name", "state", "conclusion", "started_at", "completed_at"];

/// What runs are listed by: a state (`queued`, `in_progress`, `completed`) or a conclusion
/// (`success`, `failure`, …), as GitHub's `status` filter takes either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    State(RunState),
    Conclusion(Conclusion),
}

impl RunStatus {
    pub fn parse(text: &str) -> Option<RunStatus> {
        RunState::parse(text).map(RunStatus::State).or_else(|| Conclusion::parse(text).map(RunStatus::Conclusion))
    }
}

/// Which runs a listing shows: those matching every field that is given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    pub status: Option<RunStatus>,
    /// A branch name (`main`): runs of `refs/heads/main`.
    pub branch: Option<String>,
    /// An event (`push`, `pull_request`, `workflow_dispatch`, …).
    pub event: Option<String>,
    /// A workflow file: its name under `.github/workflows/` (`ci.yml`) or its path.
    pub workflow: Option<String>,
    /// The account whose push or action started the run.
    pub actor: Option<String>,
}

/// A page of runs, newest first, and the cursor of the next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPage {
    pub runs: Vec<Run>,
    pub next_before: Option<i64>,
}

/// The PostgreSQL channel servers sharing a database tell each other on that a job may have been
/// queued.
const QUEUED_CHANNEL: &str = "gitstratum_ci_queued";

/// CI state in the platform database. Clones share one wake-up signal: whoever queues a job
/// (the ingestor, a finished dependency, an expired lease) wakes the runners' long polls.
#[derive(Clone, Debug)]
pub struct CiStore {
    pub(crate) db: Db,
    pub(crate) queued: std::sync::Arc<tokio::sync::Notify>,
    closing: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Woken when a push has written ref-change events (the ingestor waits on it).
    pub(crate) ref_log: std::sync::Arc<tokio::sync::Notify>,
    pub(crate) timing: crate::orchestrate::Timing,
    /// The site's default limits per tenant (repository owner); each tenant may have its own.
    pub(crate) tenant_limits: TenantLimits,
}

/// Limits of one tenant (the account owning repositories); `None`: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantLimits {
    /// Jobs leased or running at once.
    pub max_running_jobs: Option<i64>,
    /// Runs not yet completed; a run beyond it fails at once, saying so.
    pub max_queued_runs: Option<i64>,
    /// Job minutes per calendar month (UTC); past it, queued jobs fail, saying so.
    pub max_minutes_per_month: Option<i64>,
}

impl TenantLimits {
    /// `self` where it sets a limit, else `defaults`.
    pub fn or(self, defaults: TenantLimits) -> TenantLimits {
        TenantLimits {
            max_running_jobs: self.max_running_jobs.or(defaults.max_running_jobs),
            max_queued_runs: self.max_queued_runs.or(defaults.max_queued_runs),
            max_minutes_per_month: self.max_minutes_per_month.or(defaults.max_minutes_per_month),
        }
    }
}

const LIMIT_COLUMNS: [&str; 4] = ["account_id", "max_running_jobs", "max_queued_runs", "max_minutes_per_month"];

struct TenantLimitRow {
    account_id: i64,
    limits: TenantLimits,
}

impl FromDbRow for TenantLimitRow {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok(TenantLimitRow {
            account_id: row.get("account_id")?,
            limits: TenantLimits {
                max_running_jobs: row.get("max_running_jobs")?,
                max_queued_runs: row.get("max_queued_runs")?,
                max_minutes_per_month: row.get("max_minutes_per_month")?,
            },
        })
    }
}

impl CiStore {
    pub fn new(db: Db) -> CiStore {
        CiStore {
            db,
            queued: std::sync::Arc::new(tokio::sync::Notify::new()),
            closing: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
            ref_log: std::sync::Arc::new(tokio::sync::Notify::new()),
            timing: crate::orchestrate::Timing::default(),
            tenant_limits: TenantLimits::default(),
        }
    }

    /// This store with the site's default limits per tenant.
    pub fn with_tenant_limits(mut self, limits: TenantLimits) -> CiStore {
        self.tenant_limits = TenantLimits {
            max_running_jobs: limits.max_running_jobs.filter(|n| *n > 0),
            max_queued_runs: limits.max_queued_runs.filter(|n| *n > 0),
            max_minutes_per_month: limits.max_minutes_per_month.filter(|n| *n > 0),
        };
        self
    }

    /// The site's default limits per tenant.
    pub fn default_tenant_limits(&self) -> TenantLimits {
        self.tenant_limits
    }

    /// A tenant's own limits (what it sets; the defaults fill the rest).
    pub async fn tenant_limits(&self, account_id: i64) -> Result<TenantLimits> {
        let q = Query::select()
            .columns(LIMIT_COLUMNS)
            .from("ci_tenant_limits")
            .and_where(Expr::col("account_id").eq(account_id))
            .to_owned();
        let row: Option<TenantLimitRow> = self.db.acquire().await?.conn().fetch_optional(&q).await?;
        Ok(row.map(|r| r.limits).unwrap_or_default())
    }

    /// Every tenant's own limits.
    pub(crate) async fn all_tenant_limits(&self) -> Result<std::collections::HashMap<i64, TenantLimits>> {
        let q = Query::select().columns(LIMIT_COLUMNS).from("ci_tenant_limits").to_owned();
        let rows: Vec<TenantLimitRow> = self.db.acquire().await?.conn().fetch_all(&q).await?;
        Ok(rows.into_iter().map(|r| (r.account_id, r.limits)).collect())
    }

    /// Sets a tenant's own limits (`None` in a field: the site's default).
    pub async fn set_tenant_limits(&self, account_id: i64, limits: TenantLimits, now: Timestamp) -> Result<()> {
        let upsert = Query::insert()
            .into_table("ci_tenant_limits")
            .columns(["account_id", "max_running_jobs", "max_queued_runs", "max_minutes_per_month", "updated_at"])
            .values_panic([
                account_id.into(),
                limits.max_running_jobs.into(),
                limits.max_queued_runs.into(),
                limits.max_minutes_per_month.into(),
                now.0.into(),
            ])
            .on_conflict(
                OnConflict::column("account_id")
                    .update_columns(["max_running_jobs", "max_queued_runs", "max_minutes_per_month", "updated_at"])
                    .to_owned(),
            )
            .to_owned();
        self.db.acquire().await?.conn().execute(&upsert).await?;
        Ok(())
    }

    /// This store with other protocol clocks (leases, heartbeats, attempts).
    pub fn with_timing(mut self, timing: crate::orchestrate::Timing) -> CiStore {
        self.timing = timing;
        self
    }

    pub fn timing(&self) -> crate::orchestrate::Timing {
        self.timing
    }

    /// A push wrote ref-change events: wakes the ingestor (which otherwise polls).
    pub fn ref_log_grew(&self) {
        self.ref_log.notify_one();
    }

    /// The server is stopping: runners' long polls end now (with no job) instead of holding the
    /// shutdown up.
    pub fn close(&self) {
        self.closing.store(true, std::sync::atomic::Ordering::SeqCst);
        self.queued.notify_waiters(); // this server's polls only: it is the one stopping
    }

    pub fn is_closing(&self) -> bool {
        self.closing.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Resolves when a job may have been queued since the call (a runner's long poll waits on it).
    pub fn job_queued(&self) -> tokio::sync::futures::Notified<'_> {
        self.queued.notified()
    }

    /// A job may have been queued: wakes the runners' long polls here and, on PostgreSQL, on
    /// every other server sharing the database (`NOTIFY`, after the commit that queued it; the
    /// payload names the schema, so installations sharing a database in schemas of their own do
    /// not wake each other).
    pub fn wake_runners(&self) {
        self.queued.notify_waiters();
        if let Db::Postgres(pool) = &self.db {
            let pool = pool.clone();
            tokio::spawn(async move {
                let notified = match pool.acquire().await {
                    Ok(mut conn) => gitstratum_platform::db::notify(&mut conn, QUEUED_CHANNEL, "").await,
                    Err(e) => Err(e),
                };
                if let Err(e) = notified {
                    tracing::debug!(error = %e, "cannot tell other servers a job was queued");
                }
            });
        }
    }

    /// On PostgreSQL, listens for the jobs other servers sharing the database queue (`LISTEN`) and
    /// wakes this server's runners' long polls for them; `None` on SQLite (one server). The
    /// listener has a connection of its own, outside the pool, and reconnects when it loses it; a
    /// notification lost meanwhile costs a runner at most one long poll (it polls again when
    /// its wait ends), and every reconnection wakes the polls to look again.
    pub fn spawn_wakeup_listener(&self) -> Option<tokio::task::JoinHandle<()>> {
        let (queued, closing) = (self.queued.clone(), self.closing.clone());
        self.db.spawn_listener(QUEUED_CHANNEL, move |_| {
            // A job queued elsewhere, or listening (again): whatever was queued meanwhile, the
            // polls look again.
            queued.notify_waiters();
            let open = !closing.load(std::sync::atomic::Ordering::SeqCst);
            async move { open }
        })
    }

    /// Creates runs (with their jobs and steps) and moves the log consumer `cursor` from `from`
    /// to `to`, all in one transaction — unless another server moved the cursor first (then
    /// nothing is created). A run already created for the same repository, commit, workflow and
    /// event is left as it is. Returns the ids of the runs created.
    pub async fn create_runs(
        &self,
        cursor: &str,
        from: u64,
        to: u64,
        runs: &[NewRun],
        now: Timestamp,
    ) -> Result<Vec<i64>> {
        let mut tx = self.db.begin().await?;
        if !move_log_cursor(&mut tx.conn(), cursor, from, to).await? {
            return Ok(Vec::new());
        }
        let mut created = Vec::new();
        for run in runs {
            if let Some(id) = insert_run(&mut tx.conn(), run, self.tenant_limits, now).await? {
                crate::orchestrate::settle_run(&mut tx.conn(), id, now).await?;
                created.push(id);
            }
        }
        tx.commit().await?;
        if !created.is_empty() {
            self.wake_runners();
        }
        Ok(created)
    }

    /// A log consumer's position (0 before its first event).
    pub async fn log_cursor(&self, name: &str) -> Result<u64> {
        gitstratum_platform::events::log_cursor(&mut self.db.acquire().await?.conn(), name).await
    }

    /// Creates one run outside any log (a `workflow_dispatch`); `None` when it already exists.
    pub async fn create_run(&self, run: &NewRun, now: Timestamp) -> Result<Option<i64>> {
        let mut tx = self.db.begin().await?;
        let id = insert_run(&mut tx.conn(), run, self.tenant_limits, now).await?;
        if let Some(id) = id {
            crate::orchestrate::settle_run(&mut tx.conn(), id, now).await?;
        }
        tx.commit().await?;
        if id.is_some() {
            self.wake_runners();
        }
        Ok(id)
    }

    pub async fn get_run(&self, id: i64) -> Result<Option<Run>> {
        let q = Query::select().columns(RUN_COLUMNS).from("ci_runs").and_where(Expr::col("id").eq(id)).to_owned();
        Ok(self.db.acquire().await?.conn().fetch_optional(&q).await?)
    }

    /// A repository's runs, newest first: `limit` of them with ids below `before`, those that
    /// match `filter` (each field that is given).
    pub async fn list_runs(
        &self,
        repo_id: i64,
        before: Option<i64>,
        limit: u64,
        filter: &RunFilter,
    ) -> Result<RunPage> {
        let mut q = Query::select()
            .columns(RUN_COLUMNS)
            .from("ci_runs")
            .and_where(Expr::col("repo_id").eq(repo_id))
            .order_by("id", Order::Desc)
            .limit(limit + 1)
            .to_owned();
        if let Some(before) = before {
            q.and_where(Expr::col("id").lt(before));
        }
        match filter.status {
            Some(RunStatus::State(state)) => {
                q.and_where(Expr::col("state").eq(state.as_str()));
            }
            Some(RunStatus::Conclusion(conclusion)) => {
                q.and_where(Expr::col("conclusion").eq(conclusion.as_str()));
            }
            None => {}
        }
        if let Some(branch) = &filter.branch {
            q.and_where(Expr::col("git_ref").eq(format!("refs/heads/{branch}")));
        }
        if let Some(event) = &filter.event {
            q.and_where(Expr::col("event").eq(event.as_str()));
        }
        if let Some(workflow) = &filter.workflow {
            // A file name (`ci.yml`) names the file under `.github/workflows/`.
            q.and_where(Expr::col("workflow_path").is_in([workflow.clone(), format!(".github/workflows/{workflow}")]));
        }
        if let Some(actor) = &filter.actor {
            q.and_where(Expr::col("actor").eq(actor.as_str()));
        }
        let mut runs: Vec<Run> = self.db.acquire().await?.conn().fetch_all(&q).await?;
        let more = runs.len() as u64 > limit;
        runs.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let next_before = if more { runs.last().map(|r| r.id) } else { None };
        Ok(RunPage { runs, next_before })
    }

    /// A repository's runs of one commit, newest first.
    pub async fn runs_for_commit(&self, repo_id: i64, sha: &str) -> Result<Vec<Run>> {
        let q = Query::select()
            .columns(RUN_COLUMNS)
            .from("ci_runs")
            .and_where(Expr::col("repo_id").eq(repo_id))
            .and_where(Expr::col("commit_sha").eq(sha))
            .order_by("id", Order::Desc)
            .limit(1000)
            .to_owned();
        Ok(self.db.acquire().await?.conn().fetch_all(&q).await?)
    }

    /// The runs of a repository that events named by `event_keys` started (`pull:<id>`, …),
    /// oldest first.
    pub async fn runs_for_events(&self, repo_id: i64, event_keys: &[String]) -> Result<Vec<Run>> {
        if event_keys.is_empty() {
            return Ok(Vec::new());
        }
        let q = Query::select()
            .columns(RUN_COLUMNS)
            .from("ci_runs")
            .and_where(Expr::col("repo_id").eq(repo_id))
            .and_where(Expr::col("event_key").is_in(event_keys.iter().map(String::as_str)))
            .order_by("id", Order::Asc)
            .limit(1000)
            .to_owned();
        Ok(self.db.acquire().await?.conn().fetch_all(&q).await?)
    }

    /// A run's jobs, in the order they were planned.
    pub async fn jobs(&self, run_id: i64) -> Result<Vec<Job>> {
        let q = Query::select()
            .columns(JOB_COLUMNS)
            .from("ci_jobs")
            .and_where(Expr::col("run_id").eq(run_id))
            .order_by("id", Order::Asc)
            .to_owned();
        Ok(self.db.acquire().await?.conn().fetch_all(&q).await?)
    }

    /// The steps of a run's jobs, by job and number.
    pub async fn steps(&self, run_id: i64) -> Result<Vec<Step>> {
        let jobs = Query::select().column("id").from("ci_jobs").and_where(Expr::col("run_id").eq(run_id)).to_owned();
        let q = Query::select()
            .columns(STEP_COLUMNS)
            .from("ci_steps")
            .and_where(Expr::col("job_id").in_subquery(jobs))
            .order_by("job_id", Order::Asc)
            .order_by("number", Order::Asc)
            .to_owned();
        Ok(self.db.acquire().await?.conn().fetch_all(&q).await?)
    }

    /// The annotations of a run's jobs (each job's current attempt), by job and step.
    pub async fn annotations(&self, run_id: i64) -> Result<Vec<Annotation>> {
        let q = of_current_attempts("ci_annotations", &ANNOTATION_COLUMNS, run_id)
            .order_by((Alias::new("a"), Alias::new("id")), Order::Asc)
            .to_owned();
        Ok(self.db.acquire().await?.conn().fetch_all(&q).await?)
    }
}

/// The rows of a per-attempt table (aliased `a`, with `job_id` and `attempt`) that belong to the
/// current attempts of a run's jobs.
fn of_current_attempts(table: &str, columns: &[&str], run_id: i64) -> sea_query::SelectStatement {
    Query::select()
        .columns(columns.iter().map(|c| (Alias::new("a"), Alias::new(*c))))
        .from_as(Alias::new(table), Alias::new("a"))
        .inner_join(
            Alias::new("ci_jobs"),
            Expr::col((Alias::new("ci_jobs"), Alias::new("id"))).equals((Alias::new("a"), Alias::new("job_id"))).and(
                Expr::col((Alias::new("ci_jobs"), Alias::new("attempt")))
                    .equals((Alias::new("a"), Alias::new("attempt"))),
            ),
        )
        .and_where(Expr::col((Alias::new("ci_jobs"), Alias::new("run_id"))).eq(run_id))
        .to_owned()
}

/// An action of another repository a job attempt used, and the commit it resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobAction {
    pub job_id: i64,
    pub attempt: i64,
    /// `owner/repo@ref`.
    pub uses: String,
    pub commit_sha: String,
}

impl FromDbRow for JobAction {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok(JobAction {
            job_id: row.get("job_id")?,
            attempt: row.get("attempt")?,
            uses: row.get("uses")?,
            commit_sha: row.get("commit_sha")?,
        })
    }
}

impl CiStore {
    /// Records the commit an action reference resolved to for a job attempt (the first
    /// resolution stands: the runner resolves each reference once per job).
    pub async fn record_job_action(&self, job_id: i64, attempt: i64, uses: &str, commit: &str) -> Result<()> {
        let insert = Query::insert()
            .into_table("ci_job_actions")
            .columns(["job_id", "attempt", "uses", "commit_sha"])
            .values_panic([job_id.into(), attempt.into(), uses.into(), commit.into()])
            .on_conflict(OnConflict::columns(["job_id", "attempt", "uses"]).do_nothing().to_owned())
            .to_owned();
        self.db.acquire().await?.conn().execute(&insert).await?;
        Ok(())
    }

    /// The actions the current attempts of a run's jobs used, in the order recorded.
    pub async fn job_actions(&self, run_id: i64) -> Result<Vec<JobAction>> {
        let q = of_current_attempts("ci_job_actions", &["job_id", "attempt", "uses", "commit_sha"], run_id)
            .order_by((Alias::new("a"), Alias::new("uses")), Order::Asc)
            .to_owned();
        Ok(self.db.acquire().await?.conn().fetch_all(&q).await?)
    }
}

/// An `::error::`, `::warning::` or `::notice::` a step printed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Annotation {
    pub job_id: i64,
    pub attempt: i64,
    pub step: i64,
    /// `error`, `warning` or `notice`.
    pub level: String,
    pub message: String,
    pub title: Option<String>,
    pub file: Option<String>,
    pub line: Option<i64>,
    pub end_line: Option<i64>,
    pub col: Option<i64>,
}

pub(crate) const ANNOTATION_COLUMNS: [&str; 10] =
    ["job_id", "attempt", "step", "level", "message", "title", "file", "line", "end_line", "col"];

impl FromDbRow for Annotation {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok(Annotation {
            job_id: row.get("job_id")?,
            attempt: row.get("attempt")?,
            step: row.get("step")?,
            level: row.get("level")?,
            message: row.get("message")?,
            title: row.get("title")?,
            file: row.get("file")?,
            line: row.get("line")?,
            end_line: row.get("end_line")?,
            col: row.get("col")?,
        })
    }
}

/// Inserts a run with its jobs and steps; `None` when it already exists.
/// Why a new run of `repo_id` may not queue: its tenant has as many unfinished runs as its limit.
async fn queue_full(conn: &mut Conn<'_>, repo_id: i64, defaults: TenantLimits) -> Result<Option<String>> {
    let tenant = Query::select().column("owner_id").from("repos").and_where(Expr::col("id").eq(repo_id)).to_owned();
    let Some(tenant): Option<i64> = conn.fetch_optional(&tenant).await? else { return Ok(None) };
    let own = Query::select()
        .columns(LIMIT_COLUMNS)
        .from("ci_tenant_limits")
        .and_where(Expr::col("account_id").eq(tenant))
        .to_owned();
    let own: Option<TenantLimitRow> = conn.fetch_optional(&own).await?;
    let Some(limit) = own.map(|r| r.limits).unwrap_or_default().or(defaults).max_queued_runs else { return Ok(None) };
    let repos = Query::select().column("id").from("repos").and_where(Expr::col("owner_id").eq(tenant)).to_owned();
    let unfinished = Query::select()
        .expr(Expr::col("id").count())
        .from("ci_runs")
        .and_where(Expr::col("repo_id").in_subquery(repos))
        .and_where(Expr::col("state").ne(RunState::Completed.as_str()))
        .to_owned();
    let unfinished: i64 = conn.fetch_one(&unfinished).await?;
    Ok((unfinished >= limit)
        .then(|| format!("not run: the owner already has {unfinished} runs waiting or running (its limit is {limit})")))
}

/// The advisory lock class of a repository's run numbering (`gitstratum-store` uses
/// `0x6773_000x`, the platform's singletons `0x6773_0010`).
const LOCK_RUN_NUMBERS: i32 = 0x6773_0020;

async fn insert_run(conn: &mut Conn<'_>, run: &NewRun, limits: TenantLimits, now: Timestamp) -> Result<Option<i64>> {
    // A run over its tenant's queue limit is created failed, saying why, with no jobs.
    let refused = match run.failure {
        Some(_) => None,
        None => queue_full(conn, run.repo_id, limits).await?,
    };
    let refused_run;
    let run = match refused {
        Some(why) => {
            refused_run = NewRun { failure: Some(why), jobs: Vec::new(), concurrency: None, ..run.clone() };
            &refused_run
        }
        None => run,
    };
    // One transaction at a time numbers a repository's runs: on PostgreSQL two (the ingestor's and
    // a dispatch, say) would otherwise read the same highest number, and one would fail on the
    // unique number (SQLite's write lock already serializes them).
    if let Conn::Postgres(pg) = conn {
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(LOCK_RUN_NUMBERS)
            .bind(run.repo_id as i32) // truncated: two repositories sharing a lock only wait
            .execute(&mut **pg)
            .await?;
    }
    let next_number = Query::select()
        .expr(Func::coalesce([Expr::col("run_number").max(), Expr::val(0i64)]))
        .from("ci_runs")
        .and_where(Expr::col("repo_id").eq(run.repo_id))
        .to_owned();
    let highest: i64 = conn.fetch_one(&next_number).await?;
    let number = highest + 1;
    let (state, conclusion, completed_at) = match run.failure {
        Some(_) => (RunState::Completed, Some(Conclusion::Failure.as_str()), Some(now.0)),
        None => (RunState::Queued, None, None),
    };
    let insert = Query::insert()
        .into_table("ci_runs")
        .columns([
            "repo_id",
            "run_number",
            "workflow_path",
            "workflow_name",
            "title",
            "event",
            "event_key",
            "git_ref",
            "commit_sha",
            "actor",
            "state",
            "conclusion",
            "message",
            "workflow",
            "inputs",
            "concurrency_group",
            "concurrency_cancel",
            "created_at",
            "completed_at",
        ])
        .values_panic([
            run.repo_id.into(),
            number.into(),
            run.workflow_path.as_str().into(),
            run.workflow_name.as_str().into(),
            run.title.as_str().into(),
            run.event.as_str().into(),
            run.event_key.as_str().into(),
            run.git_ref.as_str().into(),
            run.commit_sha.as_str().into(),
            run.actor.as_str().into(),
            state.as_str().into(),
            conclusion.into(),
            run.failure.clone().into(),
            run.workflow.clone().into(),
            run.inputs.clone().into(),
            run.concurrency.as_ref().map(|(g, _)| g.clone()).into(),
            run.concurrency.as_ref().is_some_and(|(_, c)| *c).into(),
            now.0.into(),
            completed_at.into(),
        ])
        .on_conflict(
            OnConflict::columns(["repo_id", "commit_sha", "workflow_path", "event_key"]).do_nothing().to_owned(),
        )
        .returning_col("id")
        .to_owned();
    let Some(run_id): Option<i64> = conn.fetch_optional(&insert).await? else { return Ok(None) };
    crate::events::append_run_event(conn, run_id, RunState::Queued, None, now).await?;
    if run.failure.is_some() {
        crate::events::append_run_event(conn, run_id, RunState::Completed, Some(Conclusion::Failure), now).await?;
    }
    if let (Some((group, cancel)), None) = (&run.concurrency, &run.failure) {
        crate::orchestrate::join_group(conn, run_id, run.repo_id, group, *cancel, now).await?;
    }
    for job in &run.jobs {
        insert_job(conn, run_id, run.repo_id, job, now).await?;
    }
    Ok(Some(run_id))
}

/// Inserts a job of a run with its steps. Every job starts waiting; settling releases those
/// whose needs and `if:` allow (and plans those whose `runs_on` is not known yet).
pub(crate) async fn insert_job(
    conn: &mut Conn<'_>,
    run_id: i64,
    repo_id: i64,
    job: &NewJob,
    now: Timestamp,
) -> Result<i64> {
    let state = JobState::Waiting;
    let insert = Query::insert()
        .into_table("ci_jobs")
        .columns([
            "run_id",
            "job_key",
            "name",
            "matrix",
            "needs",
            "runs_on",
            "state",
            "fail_fast",
            "max_parallel",
            "retry_max",
            "retry_delay_ms",
            "retry_exponential",
            "repo_id",
            "concurrency_group",
            "concurrency_cancel",
            "created_at",
        ])
        .values_panic([
            run_id.into(),
            job.job_key.as_str().into(),
            job.name.as_str().into(),
            job.matrix.clone().into(),
            job.needs.join(" ").into(),
            job.runs_on.as_ref().map(|labels| labels.join(" ")).into(),
            state.as_str().into(),
            job.fail_fast.into(),
            job.max_parallel.into(),
            job.retry.map(|r| r.max_attempts).into(),
            job.retry.map(|r| r.delay_ms).into(),
            job.retry.is_some_and(|r| r.exponential).into(),
            repo_id.into(),
            job.concurrency.as_ref().map(|(g, _)| g.clone()).into(),
            job.concurrency.as_ref().is_some_and(|(_, c)| *c).into(),
            now.0.into(),
        ])
        .returning_col("id")
        .to_owned();
    let job_id: i64 = conn.fetch_one(&insert).await?;
    for (number, name) in (1i64..).zip(&job.steps) {
        let insert = Query::insert()
            .into_table("ci_steps")
            .columns(["job_id", "number", "name", "state"])
            .values_panic([job_id.into(), number.into(), name.as_str().into(), RunState::Queued.as_str().into()])
            .to_owned();
        conn.execute(&insert).await?;
    }
    Ok(job_id)
}
