//! Jobs between the queue and completion: runners register, lease a queued job whose labels they
//! all have, acknowledge it (or it returns to the queue), keep it with heartbeats, report steps,
//! and complete it; completing a job releases the jobs that need it (or skips them when it did
//! not succeed) and completes the run once every job has. Every transition is a guarded update
//! (`… WHERE state = expected AND runner_id = … AND attempt = …`), so a repeated, late or stale
//! message changes nothing. A lease that runs out re-queues its job: a job never acknowledged is
//! handed out again as the same attempt; a job whose runner went silent starts a new attempt, up
//! to [`MAX_ATTEMPTS`], and then fails saying why.

use gitstratum_core::Timestamp;
use gitstratum_platform::db::{Conn, DbRow, FromDbRow};
use gitstratum_platform::store::Result;
use gitstratum_platform::token::{JOB_TOKEN_PREFIX, TokenSecret, hash_token};
use sea_query::{Alias, Expr, ExprTrait, JoinType, Order, Query};

use crate::state::{Conclusion, JobState, RunState};
use crate::store::{CiStore, JOB_COLUMNS, Job, NewJob, RUN_COLUMNS, Run};

/// Attempts of a job whose runner is lost, before the job fails (by default).
pub const MAX_ATTEMPTS: i64 = 3;
/// How long a runner has to acknowledge a job it leased (by default).
pub const ACK_MS: i64 = 30_000;
/// How long a heartbeat keeps a job (by default); runners beat every [`HEARTBEAT_MS`].
pub const LEASE_MS: i64 = 60_000;
pub const HEARTBEAT_MS: i64 = 10_000;

/// The clocks of the runner protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a runner has to acknowledge a job it leased.
    pub ack_ms: i64,
    /// How long a heartbeat keeps a job.
    pub lease_ms: i64,
    /// How often runners beat (well inside the lease).
    pub heartbeat_ms: i64,
    /// Attempts of a job whose runner is lost, before the job fails.
    pub max_attempts: i64,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing { ack_ms: ACK_MS, lease_ms: LEASE_MS, heartbeat_ms: HEARTBEAT_MS, max_attempts: MAX_ATTEMPTS }
    }
}

impl Timing {
    /// A lease of `lease_seconds`, beaten every sixth of it (at least every second), acknowledged
    /// within half of it (at most 30 s).
    pub fn with_lease_seconds(lease_seconds: u64, max_attempts: i64) -> Timing {
        let lease_ms = i64::try_from(lease_seconds.clamp(3, 86_400) * 1000).unwrap_or(LEASE_MS);
        Timing {
            ack_ms: Ord::min(lease_ms / 2, ACK_MS),
            lease_ms,
            heartbeat_ms: Ord::max(lease_ms / 6, 1000),
            max_attempts: Ord::max(max_attempts, 1),
        }
    }
}
/// Queued jobs looked at per lease request.
const CANDIDATES: u64 = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runner {
    pub id: i64,
    pub name: String,
    pub labels: Vec<String>,
    pub account_id: i64,
}

impl FromDbRow for Runner {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok(Runner {
            id: row.get("id")?,
            name: row.get("name")?,
            labels: row.get::<String>("labels")?.split_whitespace().map(str::to_owned).collect(),
            account_id: row.get("account_id")?,
        })
    }
}

/// A runner's report of a step: it started (no conclusion) or ended, with the annotations it
/// printed.
#[derive(Debug, Clone, Copy)]
pub struct StepReport<'a> {
    pub number: i64,
    pub conclusion: Option<Conclusion>,
    pub annotations: &'a [crate::store::Annotation],
}

/// A tenant (the account owning the repositories) with queued jobs, as the scheduler sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tenant {
    pub id: i64,
    /// Its jobs leased or running now.
    pub running: i64,
    pub queued: i64,
    /// Its oldest queued job.
    pub oldest: i64,
}

/// Jobs (`j`) with their run (`ru`).
pub(crate) fn jobs_with_runs() -> sea_query::SelectStatement {
    Query::select()
        .from_as("ci_jobs", Alias::new("j"))
        .join_as(
            JoinType::InnerJoin,
            Alias::new("ci_runs"),
            Alias::new("ru"),
            Expr::col((Alias::new("ru"), Alias::new("id"))).equals((Alias::new("j"), Alias::new("run_id"))),
        )
        .to_owned()
}

/// Jobs (`j`) with their run (`ru`) and repository (`r`), whose `owner_id` is the tenant.
fn jobs_by_tenant() -> sea_query::SelectStatement {
    jobs_with_runs()
        .join_as(
            JoinType::InnerJoin,
            Alias::new("repos"),
            Alias::new("r"),
            Expr::col((Alias::new("r"), Alias::new("id"))).equals((Alias::new("ru"), Alias::new("repo_id"))),
        )
        .to_owned()
}

struct TenantCount {
    tenant: i64,
    n: i64,
    oldest: i64,
}

impl FromDbRow for TenantCount {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok(TenantCount { tenant: row.get("tenant")?, n: row.get("n")?, oldest: row.get("oldest")? })
    }
}

/// A job handed to a runner: the job, its run, and the job's token (shown this once).
#[derive(Debug)]
pub struct Lease {
    pub job: Job,
    pub run: Run,
    pub workflow: Option<String>,
    /// `workflow_dispatch` inputs (JSON).
    pub inputs: Option<String>,
    /// The `needs` context: `{<id>: {result, outputs}}`.
    pub needs: serde_json::Value,
    /// The `strategy` context: `fail-fast`, `job-index`, `job-total`, `max-parallel`.
    pub strategy: serde_json::Value,
    pub token: TokenSecret,
}

/// What a heartbeat tells the runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// Carry on; the lease now runs to the given time.
    Continue,
    /// The run was cancelled: stop the steps (those with `if: always()` or `cancelled()` still
    /// run) and complete the job as `cancelled`.
    Cancel,
    /// The job is no longer this runner's (its lease ran out, or it ended): stop it.
    Stop,
}

/// Whose job token this is: the job, and the run's repository and actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobToken {
    pub job_id: i64,
    pub repo_id: i64,
    pub actor: String,
}

impl CiStore {
    pub async fn register_runner(&self, account_id: i64, name: &str, labels: &[String], now: Timestamp) -> Result<i64> {
        let insert = Query::insert()
            .into_table("ci_runners")
            .columns(["name", "labels", "account_id", "created_at", "last_seen_at"])
            .values_panic([name.into(), labels.join(" ").into(), account_id.into(), now.0.into(), now.0.into()])
            .returning_col("id")
            .to_owned();
        Ok(self.db.acquire().await?.conn().fetch_one(&insert).await?)
    }

    pub async fn get_runner(&self, id: i64) -> Result<Option<Runner>> {
        let q = Query::select()
            .columns(["id", "name", "labels", "account_id"])
            .from("ci_runners")
            .and_where(Expr::col("id").eq(id))
            .to_owned();
        Ok(self.db.acquire().await?.conn().fetch_optional(&q).await?)
    }

    /// Leases the oldest queued job whose labels the runner all has; `None` when there is none.
    pub async fn lease_job(&self, runner: &Runner, now: Timestamp) -> Result<Option<Lease>> {
        let fits = |job: &Job| {
            job.runs_on.as_ref().is_some_and(|need| need.iter().all(|l| runner.labels.contains(l)))
                && job.not_before.is_none_or(|t| t <= now)
        };
        // Tenants take turns: the one with the fewest jobs running first (then the one waiting
        // longest), so a tenant that queued a thousand jobs cannot hold up another's one.
        let own_limits = self.all_tenant_limits().await?;
        for tenant in self.tenants_in_turn().await? {
            let limits = own_limits.get(&tenant.id).copied().unwrap_or_default().or(self.tenant_limits);
            if limits.max_running_jobs.is_some_and(|max| tenant.running >= max) {
                metrics::counter!("gitstratum_ci_jobs_throttled_total").increment(1);
                continue;
            }
            let jobs = self.queued_jobs_of(tenant.id).await?;
            if let Some(budget) = limits.max_minutes_per_month
                && self.used_ms(tenant.id, now.month_start()).await? >= budget.saturating_mul(60_000)
            {
                self.refuse_over_budget(&jobs, budget, now).await?;
                continue;
            }
            if let Some(lease) = self.lease_one(runner, jobs.into_iter().filter(fits), now).await? {
                if let Some(queued) = lease.job.queued_at {
                    let wait = Ord::max(now.0 - queued.0, 0) as f64 / 1000.0;
                    metrics::histogram!("gitstratum_ci_queue_wait_duration_seconds", "tenant" => tenant.id.to_string())
                        .record(wait);
                }
                return Ok(Some(lease));
            }
        }
        Ok(None)
    }

    /// Fails queued jobs of a tenant past its monthly minute budget, saying so.
    async fn refuse_over_budget(&self, jobs: &[Job], budget: i64, now: Timestamp) -> Result<()> {
        let why = format!("not run: the owner has used its {budget} job minutes of this month");
        for job in jobs {
            let mut tx = self.db.begin().await?;
            let update = finish_job(job.id, Conclusion::Failure, Some(why.clone()), now)
                .and_where(Expr::col("state").eq(JobState::Queued.as_str()))
                .to_owned();
            if tx.conn().execute(&update).await? == 1 {
                job_completed(&mut tx.conn(), job.id, now).await?;
                settle_run(&mut tx.conn(), job.run_id, now).await?;
            }
            tx.commit().await?;
        }
        metrics::counter!("gitstratum_ci_jobs_refused_for_quota_total").increment(jobs.len() as u64);
        Ok(())
    }

    /// Tenants (repository owners) with queued jobs, in the order they get the next runner.
    pub async fn tenants_in_turn(&self) -> Result<Vec<Tenant>> {
        let by_tenant = |states: &[&str]| {
            jobs_by_tenant()
                .expr_as(Expr::col((Alias::new("r"), Alias::new("owner_id"))), Alias::new("tenant"))
                .expr_as(Expr::col((Alias::new("j"), Alias::new("id"))).count(), Alias::new("n"))
                .expr_as(Expr::col((Alias::new("j"), Alias::new("id"))).min(), Alias::new("oldest"))
                .and_where(Expr::col((Alias::new("j"), Alias::new("state"))).is_in(states.iter().copied()))
                .group_by_col((Alias::new("r"), Alias::new("owner_id")))
                .to_owned()
        };
        let mut conn = self.db.acquire().await?;
        let queued: Vec<TenantCount> = conn.conn().fetch_all(&by_tenant(&[JobState::Queued.as_str()])).await?;
        let running: Vec<TenantCount> =
            conn.conn().fetch_all(&by_tenant(&[JobState::Leased.as_str(), JobState::InProgress.as_str()])).await?;
        let mut tenants: Vec<Tenant> = queued
            .into_iter()
            .map(|q| Tenant {
                id: q.tenant,
                running: running.iter().find(|r| r.tenant == q.tenant).map_or(0, |r| r.n),
                queued: q.n,
                oldest: q.oldest,
            })
            .collect();
        tenants.sort_by_key(|t| (t.running, t.oldest));
        Ok(tenants)
    }

    /// A tenant's queued jobs, oldest first (at most [`CANDIDATES`]).
    async fn queued_jobs_of(&self, tenant: i64) -> Result<Vec<Job>> {
        let q = jobs_by_tenant()
            .columns(JOB_COLUMNS.map(|c| (Alias::new("j"), Alias::new(c))))
            .and_where(Expr::col((Alias::new("j"), Alias::new("state"))).eq(JobState::Queued.as_str()))
            .and_where(Expr::col((Alias::new("r"), Alias::new("owner_id"))).eq(tenant))
            .order_by((Alias::new("j"), Alias::new("id")), Order::Asc)
            .limit(CANDIDATES)
            .to_owned();
        Ok(self.db.acquire().await?.conn().fetch_all(&q).await?)
    }

    /// Leases the first of `jobs` that may run now (max-parallel allowing) to `runner`.
    async fn lease_one(
        &self,
        runner: &Runner,
        jobs: impl Iterator<Item = Job>,
        now: Timestamp,
    ) -> Result<Option<Lease>> {
        for job in jobs {
            if let Some(max) = job.max_parallel {
                let running = Query::select()
                    .expr(Expr::col("id").count())
                    .from("ci_jobs")
                    .and_where(Expr::col("run_id").eq(job.run_id))
                    .and_where(Expr::col("job_key").eq(job.job_key.as_str()))
                    .and_where(Expr::col("state").is_in([JobState::Leased.as_str(), JobState::InProgress.as_str()]))
                    .to_owned();
                let running: i64 = self.db.acquire().await?.conn().fetch_one(&running).await?;
                if running >= max {
                    continue; // strategy.max-parallel
                }
            }
            let token =
                TokenSecret::generate_with_prefix(JOB_TOKEN_PREFIX).map_err(gitstratum_platform::Error::Random)?;
            let update = Query::update()
                .table("ci_jobs")
                .values([
                    ("state", JobState::Leased.as_str().into()),
                    ("runner_id", runner.id.into()),
                    ("lease_expires_at", (now.0 + self.timing.ack_ms).into()),
                    ("token_hash", hash_token(token.expose()).into()),
                ])
                .and_where(Expr::col("id").eq(job.id))
                .and_where(Expr::col("state").eq(JobState::Queued.as_str()))
                .to_owned();
            let mut conn = self.db.acquire().await?;
            if conn.conn().execute(&update).await? == 0 {
                continue; // another runner took it
            }
            let run_q = Query::select()
                .columns(RUN_COLUMNS)
                .from("ci_runs")
                .and_where(Expr::col("id").eq(job.run_id))
                .to_owned();
            let run: Run = conn.conn().fetch_one(&run_q).await?;
            let source_q = Query::select()
                .columns(["workflow", "inputs"])
                .from("ci_runs")
                .and_where(Expr::col("id").eq(job.run_id))
                .to_owned();
            let RunSource { workflow, inputs } = conn.conn().fetch_one(&source_q).await?;
            let siblings_q = Query::select()
                .columns(JOB_COLUMNS)
                .from("ci_jobs")
                .and_where(Expr::col("run_id").eq(job.run_id))
                .order_by("id", Order::Asc)
                .to_owned();
            let siblings: Vec<Job> = conn.conn().fetch_all(&siblings_q).await?;
            let needs = needs_context(&siblings, &job.needs);
            // GitHub's `strategy` context: this instance's place among its job's instances.
            let instances: Vec<i64> = siblings.iter().filter(|j| j.job_key == job.job_key).map(|j| j.id).collect();
            let total = instances.len().max(1);
            let strategy = serde_json::json!({
                "fail-fast": job.fail_fast,
                "job-index": instances.iter().position(|id| *id == job.id).unwrap_or(0),
                "job-total": total,
                "max-parallel": job.max_parallel.unwrap_or(total as i64),
            });
            let job = Job {
                state: JobState::Leased,
                runner_id: Some(runner.id),
                lease_expires_at: Some(Timestamp(now.0 + self.timing.ack_ms)),
                ..job
            };
            return Ok(Some(Lease { job, run, workflow, inputs, needs, strategy, token }));
        }
        Ok(None)
    }

    /// Fails a job the server leased but cannot hand over (its secrets cannot be opened, say),
    /// with `why`; its dependents and run settle as after any failure.
    pub async fn fail_lease(&self, job_id: i64, runner_id: i64, attempt: i64, why: &str, now: Timestamp) -> Result<()> {
        let mut tx = self.db.begin().await?;
        let update = finish_job(job_id, Conclusion::Failure, Some(why.to_owned()), now)
            .and_where(Expr::col("state").eq(JobState::Leased.as_str()))
            .and_where(Expr::col("runner_id").eq(runner_id))
            .and_where(Expr::col("attempt").eq(attempt))
            .to_owned();
        let mut released = false;
        if tx.conn().execute(&update).await? == 1 {
            released |= job_completed(&mut tx.conn(), job_id, now).await?;
            let run_id =
                Query::select().column("run_id").from("ci_jobs").and_where(Expr::col("id").eq(job_id)).to_owned();
            let run_id: i64 = tx.conn().fetch_one(&run_id).await?;
            released |= settle_run(&mut tx.conn(), run_id, now).await?;
        }
        tx.commit().await?;
        if released {
            self.wake_runners();
        }
        Ok(())
    }

    /// The runner confirms it has the job: it counts as started. False when the lease is gone.
    pub async fn ack_job(&self, job_id: i64, runner_id: i64, attempt: i64, now: Timestamp) -> Result<bool> {
        let mut tx = self.db.begin().await?;
        let update = Query::update()
            .table("ci_jobs")
            .values([
                ("state", JobState::InProgress.as_str().into()),
                ("started_at", now.0.into()),
                ("lease_expires_at", (now.0 + self.timing.lease_ms).into()),
            ])
            .and_where(Expr::col("id").eq(job_id))
            .and_where(Expr::col("state").eq(JobState::Leased.as_str()))
            .and_where(Expr::col("runner_id").eq(runner_id))
            .and_where(Expr::col("attempt").eq(attempt))
            .to_owned();
        if tx.conn().execute(&update).await? == 0 {
            return Ok(false);
        }
        let run_id = Query::select().column("run_id").from("ci_jobs").and_where(Expr::col("id").eq(job_id)).to_owned();
        let run_id: i64 = tx.conn().fetch_one(&run_id).await?;
        let start_run = Query::update()
            .table("ci_runs")
            .values([("state", RunState::InProgress.as_str().into()), ("started_at", now.0.into())])
            .and_where(Expr::col("id").eq(run_id))
            .and_where(Expr::col("state").eq(RunState::Queued.as_str()))
            .to_owned();
        if tx.conn().execute(&start_run).await? == 1 {
            crate::events::append_run_event(&mut tx.conn(), run_id, RunState::InProgress, None, now).await?;
        }
        crate::events::append_job_event(&mut tx.conn(), job_id, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Extends the lease of a running job; tells the runner to stop when the job is not its own.
    pub async fn heartbeat(&self, job_id: i64, runner_id: i64, attempt: i64, now: Timestamp) -> Result<Beat> {
        let update = Query::update()
            .table("ci_jobs")
            .value("lease_expires_at", now.0 + self.timing.lease_ms)
            .and_where(Expr::col("id").eq(job_id))
            .and_where(Expr::col("state").eq(JobState::InProgress.as_str()))
            .and_where(Expr::col("runner_id").eq(runner_id))
            .and_where(Expr::col("attempt").eq(attempt))
            .to_owned();
        let mut conn = self.db.acquire().await?;
        let beat = if conn.conn().execute(&update).await? == 1 {
            let cancel = Query::select()
                .column("id")
                .from("ci_jobs")
                .and_where(Expr::col("id").eq(job_id))
                .and_where(Expr::col("cancel_requested").eq(true))
                .to_owned();
            if conn.conn().fetch_optional::<i64>(&cancel).await?.is_some() { Beat::Cancel } else { Beat::Continue }
        } else {
            Beat::Stop
        };
        let seen = Query::update()
            .table("ci_runners")
            .value("last_seen_at", now.0)
            .and_where(Expr::col("id").eq(runner_id))
            .to_owned();
        conn.conn().execute(&seen).await?;
        Ok(beat)
    }

    /// Records a step starting (`conclusion` `None`) or ending. False when the job is not the
    /// runner's, or the step does not exist.
    pub async fn report_step(
        &self,
        job_id: i64,
        runner_id: i64,
        attempt: i64,
        report: StepReport<'_>,
        now: Timestamp,
    ) -> Result<bool> {
        let StepReport { number, conclusion, annotations } = report;
        let mut tx = self.db.begin().await?;
        if !holds(&mut tx.conn(), job_id, runner_id, attempt).await? {
            return Ok(false);
        }
        let mut update = Query::update().table("ci_steps").to_owned();
        match conclusion {
            None => {
                update
                    .values([("state", RunState::InProgress.as_str().into()), ("started_at", now.0.into())])
                    .and_where(Expr::col("state").eq(RunState::Queued.as_str()));
            }
            Some(c) => {
                update
                    .values([
                        ("state", RunState::Completed.as_str().into()),
                        ("conclusion", c.as_str().into()),
                        ("completed_at", now.0.into()),
                    ])
                    .and_where(Expr::col("state").ne(RunState::Completed.as_str()));
            }
        }
        update.and_where(Expr::col("job_id").eq(job_id)).and_where(Expr::col("number").eq(number));
        let changed = tx.conn().execute(&update).await? == 1;
        // Recorded with the step's ending, so a repeated report adds none twice.
        if changed && conclusion.is_some() && !annotations.is_empty() {
            let mut insert = Query::insert()
                .into_table("ci_annotations")
                .columns(crate::store::ANNOTATION_COLUMNS.iter().copied().chain(["created_at"]).map(Alias::new))
                .to_owned();
            for a in annotations {
                insert.values_panic([
                    job_id.into(),
                    attempt.into(),
                    number.into(),
                    a.level.as_str().into(),
                    a.message.as_str().into(),
                    a.title.clone().into(),
                    a.file.clone().into(),
                    a.line.into(),
                    a.end_line.into(),
                    a.col.into(),
                    now.0.into(),
                ]);
            }
            tx.conn().execute(&insert).await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    /// Completes a running job, releases or skips the jobs that need it, and completes the run
    /// when every job has. False when the job is not the runner's (a stale or repeated message).
    pub async fn complete_job(
        &self,
        job_id: i64,
        runner_id: i64,
        attempt: i64,
        conclusion: Conclusion,
        outputs: Option<&str>,
        now: Timestamp,
    ) -> Result<bool> {
        let mut tx = self.db.begin().await?;
        let q = Query::select().columns(JOB_COLUMNS).from("ci_jobs").and_where(Expr::col("id").eq(job_id)).to_owned();
        let Some(job): Option<Job> = tx.conn().fetch_optional(&q).await? else { return Ok(false) };
        let guard = |mut u: sea_query::UpdateStatement| {
            u.and_where(Expr::col("id").eq(job_id))
                .and_where(Expr::col("state").eq(JobState::InProgress.as_str()))
                .and_where(Expr::col("runner_id").eq(runner_id))
                .and_where(Expr::col("attempt").eq(attempt));
            u
        };
        // GitStratum's retry: a failed attempt goes back to the queue after its delay.
        if let Some(retry) = job.retry.filter(|r| conclusion == Conclusion::Failure && attempt < r.max_attempts) {
            let delay = retry_delay(retry, attempt);
            let why = format!(
                "attempt {attempt} failed; attempt {} after {:.1} s (retry)",
                attempt + 1,
                delay as f64 / 1000.0
            );
            let update = guard(
                requeue_update(attempt + 1, Some(why))
                    .values([("not_before", (now.0 + delay).into()), ("queued_at", (now.0 + delay).into())])
                    .to_owned(),
            );
            if tx.conn().execute(&update).await? == 0 {
                return Ok(false);
            }
            crate::usage::record_usage(&mut tx.conn(), &job, attempt, conclusion.as_str(), now).await?;
            reset_steps(&mut tx.conn(), job_id).await?;
            tx.commit().await?;
            return Ok(true);
        }
        let update =
            guard(finish_job(job_id, conclusion, None, now).value("outputs", outputs.map(str::to_owned)).to_owned());
        if tx.conn().execute(&update).await? == 0 {
            return Ok(false);
        }
        crate::usage::record_usage(&mut tx.conn(), &job, attempt, conclusion.as_str(), now).await?;
        let mut released = job_completed(&mut tx.conn(), job_id, now).await?;
        let run_id = job.run_id;
        // fail-fast: a failed matrix instance cancels its siblings.
        if conclusion == Conclusion::Failure && job.fail_fast {
            cancel_siblings(&mut tx.conn(), &job, now).await?;
        }
        released |= settle_run(&mut tx.conn(), run_id, now).await?;
        tx.commit().await?;
        if released {
            self.wake_runners();
        }
        Ok(true)
    }

    /// Re-queues jobs whose lease ran out: unacknowledged ones as the same attempt, running ones
    /// as a new attempt (or fails them when attempts are spent). Returns how many it touched.
    pub async fn expire_leases(&self, now: Timestamp) -> Result<usize> {
        let q = Query::select()
            .columns(JOB_COLUMNS)
            .from("ci_jobs")
            .and_where(Expr::col("state").is_in([JobState::Leased.as_str(), JobState::InProgress.as_str()]))
            .and_where(Expr::col("lease_expires_at").lt(now.0))
            .to_owned();
        let expired: Vec<Job> = self.db.acquire().await?.conn().fetch_all(&q).await?;
        let mut touched = 0;
        let mut released = false;
        for job in expired {
            let mut tx = self.db.begin().await?;
            let guard = |mut u: sea_query::UpdateStatement| {
                u.and_where(Expr::col("id").eq(job.id))
                    .and_where(Expr::col("state").eq(job.state.as_str()))
                    .and_where(Expr::col("attempt").eq(job.attempt))
                    .and_where(Expr::col("lease_expires_at").lt(now.0));
                u
            };
            let requeue = requeue_update;
            let update = match job.state {
                JobState::Leased => guard(requeue(job.attempt, job.message.clone())),
                _ if job.cancel_requested => {
                    let why = "cancelled; the runner stopped answering before it confirmed".to_owned();
                    guard(finish_job(job.id, Conclusion::Cancelled, Some(why), now))
                }
                _ if job.attempt < self.timing.max_attempts => {
                    let why = format!("attempt {} lost its runner (no heartbeat); retried", job.attempt);
                    guard(requeue(job.attempt + 1, Some(why)).value("queued_at", now.0).to_owned())
                }
                _ => {
                    let why = format!("the runner was lost on each of {} attempts", self.timing.max_attempts);
                    guard(finish_job(job.id, Conclusion::Failure, Some(why), now))
                }
            };
            if tx.conn().execute(&update).await? == 0 {
                continue; // it moved on meanwhile
            }
            touched += 1;
            if job.state == JobState::InProgress {
                // The lost attempt ran until its runner went silent.
                crate::usage::record_usage(&mut tx.conn(), &job, job.attempt, "lost", now).await?;
                if job.attempt < self.timing.max_attempts && !job.cancel_requested {
                    reset_steps(&mut tx.conn(), job.id).await?;
                    crate::events::append_job_event(&mut tx.conn(), job.id, now).await?;
                    released = true;
                } else {
                    released |= job_completed(&mut tx.conn(), job.id, now).await?;
                    released |= settle_run(&mut tx.conn(), job.run_id, now).await?;
                }
            } else {
                released = true;
            }
            tx.commit().await?;
        }
        if released {
            self.wake_runners();
        }
        Ok(touched)
    }

    /// Takes back, now, the jobs held by `account`'s earlier runners named `name` (an embedded
    /// runner that died with its server: nobody will heartbeat those leases). Returns how many.
    pub async fn release_runners(&self, account_id: i64, name: &str, keep: i64, now: Timestamp) -> Result<usize> {
        let runners = Query::select()
            .column("id")
            .from("ci_runners")
            .and_where(Expr::col("account_id").eq(account_id))
            .and_where(Expr::col("name").eq(name))
            .and_where(Expr::col("id").ne(keep))
            .to_owned();
        let expire = Query::update()
            .table("ci_jobs")
            .value("lease_expires_at", now.0 - 1)
            .and_where(Expr::col("runner_id").in_subquery(runners))
            .and_where(Expr::col("state").is_in([JobState::Leased.as_str(), JobState::InProgress.as_str()]))
            .to_owned();
        self.db.acquire().await?.conn().execute(&expire).await?;
        self.expire_leases(now).await
    }

    /// Whose job token `presented` is, while its job is leased or running.
    pub async fn job_token(&self, presented: &str) -> Result<Option<JobToken>> {
        if !presented.starts_with(JOB_TOKEN_PREFIX) {
            return Ok(None);
        }
        let q = Query::select()
            .column(("ci_jobs", "id"))
            .column(("ci_runs", "repo_id"))
            .column(("ci_runs", "actor"))
            .from("ci_jobs")
            .inner_join("ci_runs", Expr::col(("ci_runs", "id")).equals(("ci_jobs", "run_id")))
            .and_where(Expr::col(("ci_jobs", "token_hash")).eq(hash_token(presented)))
            .and_where(
                Expr::col(("ci_jobs", "state")).is_in([JobState::Leased.as_str(), JobState::InProgress.as_str()]),
            )
            .to_owned();
        Ok(self.db.acquire().await?.conn().fetch_optional(&q).await?)
    }

    /// Cancels a run: jobs not yet running end `cancelled` at once; running ones are told through
    /// their runner's next heartbeat. False when the run had already completed.
    pub async fn cancel_run(&self, run_id: i64, now: Timestamp) -> Result<bool> {
        let mut tx = self.db.begin().await?;
        let cancelled = cancel_run_in(&mut tx.conn(), run_id, "cancelled", now).await?;
        tx.commit().await?;
        if cancelled {
            // A pending run of the same concurrency group may have been released.
            self.wake_runners();
        }
        Ok(cancelled)
    }

    /// Runs a completed run again: every job (`only_failed` false), or only the jobs that did not
    /// succeed and the jobs that need them. Each job run again starts a new attempt (its earlier
    /// attempts' logs stay). False when the run has not completed or nothing is to be re-run.
    pub async fn rerun(&self, run_id: i64, only_failed: bool, now: Timestamp) -> Result<bool> {
        let mut tx = self.db.begin().await?;
        let run_q =
            Query::select().columns(RUN_COLUMNS).from("ci_runs").and_where(Expr::col("id").eq(run_id)).to_owned();
        let Some(run): Option<Run> = tx.conn().fetch_optional(&run_q).await? else { return Ok(false) };
        if run.state != RunState::Completed {
            return Ok(false);
        }
        let q =
            Query::select().columns(JOB_COLUMNS).from("ci_jobs").and_where(Expr::col("run_id").eq(run_id)).to_owned();
        let jobs: Vec<Job> = tx.conn().fetch_all(&q).await?;
        // The keys to run again: the failed ones, then (repeatedly) whatever needs one of them.
        let mut again: Vec<String> = jobs
            .iter()
            .filter(|j| !only_failed || j.conclusion != Some(Conclusion::Success))
            .map(|j| j.job_key.clone())
            .collect();
        loop {
            let more: Vec<String> = jobs
                .iter()
                .filter(|j| !again.contains(&j.job_key) && j.needs.iter().any(|n| again.contains(n)))
                .map(|j| j.job_key.clone())
                .collect();
            if more.is_empty() {
                break;
            }
            again.extend(more);
        }
        if again.is_empty() {
            return Ok(false);
        }
        for job in jobs.iter().filter(|j| again.contains(&j.job_key)) {
            // Every job run again waits; settling releases it (its needs and `if:` decide).
            let state = JobState::Waiting;
            let update = Query::update()
                .table("ci_jobs")
                .values([
                    ("state", state.as_str().into()),
                    ("conclusion", Option::<String>::None.into()),
                    ("message", Option::<String>::None.into()),
                    ("outputs", Option::<String>::None.into()),
                    ("attempt", (job.attempt + 1).into()),
                    ("runner_id", Option::<i64>::None.into()),
                    ("lease_expires_at", Option::<i64>::None.into()),
                    ("token_hash", Option::<String>::None.into()),
                    ("cancel_requested", false.into()),
                    ("blocked", false.into()),
                    ("logs_expired_at", Option::<i64>::None.into()),
                    ("not_before", Option::<i64>::None.into()),
                    ("started_at", Option::<i64>::None.into()),
                    ("completed_at", Option::<i64>::None.into()),
                ])
                .and_where(Expr::col("id").eq(job.id))
                .and_where(Expr::col("state").eq(JobState::Completed.as_str()))
                .to_owned();
            tx.conn().execute(&update).await?;
            reset_steps(&mut tx.conn(), job.id).await?;
        }
        let update = Query::update()
            .table("ci_runs")
            .values([
                ("state", RunState::Queued.as_str().into()),
                ("conclusion", Option::<String>::None.into()),
                ("completed_at", Option::<i64>::None.into()),
            ])
            .and_where(Expr::col("id").eq(run_id))
            .and_where(Expr::col("state").eq(RunState::Completed.as_str()))
            .to_owned();
        tx.conn().execute(&update).await?;
        crate::events::append_run_event(&mut tx.conn(), run_id, RunState::Queued, None, now).await?;
        settle_run(&mut tx.conn(), run_id, now).await?;
        tx.commit().await?;
        self.wake_runners();
        Ok(true)
    }

    pub async fn get_job(&self, id: i64) -> Result<Option<Job>> {
        let q = Query::select().columns(JOB_COLUMNS).from("ci_jobs").and_where(Expr::col("id").eq(id)).to_owned();
        Ok(self.db.acquire().await?.conn().fetch_optional(&q).await?)
    }
}

impl FromDbRow for JobToken {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok(JobToken { job_id: row.get("id")?, repo_id: row.get("repo_id")?, actor: row.get("actor")? })
    }
}

/// What a run's jobs run: the workflow and the inputs.
struct RunSource {
    workflow: Option<String>,
    inputs: Option<String>,
}

impl FromDbRow for RunSource {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok(RunSource { workflow: row.get("workflow")?, inputs: row.get("inputs")? })
    }
}

/// Whether the runner holds the job (running, its attempt).
async fn holds(conn: &mut Conn<'_>, job_id: i64, runner_id: i64, attempt: i64) -> Result<bool> {
    let q = Query::select()
        .column("id")
        .from("ci_jobs")
        .and_where(Expr::col("id").eq(job_id))
        .and_where(Expr::col("state").eq(JobState::InProgress.as_str()))
        .and_where(Expr::col("runner_id").eq(runner_id))
        .and_where(Expr::col("attempt").eq(attempt))
        .to_owned();
    Ok(conn.fetch_optional::<i64>(&q).await?.is_some())
}

/// Cancels a run in the caller's transaction: jobs not yet running end `cancelled` (with `why`) at
/// once; running ones are told through their runner's next heartbeat. False when it had completed.
pub(crate) async fn cancel_run_in(conn: &mut Conn<'_>, run_id: i64, why: &str, now: Timestamp) -> Result<bool> {
    let run_q = Query::select().columns(RUN_COLUMNS).from("ci_runs").and_where(Expr::col("id").eq(run_id)).to_owned();
    let Some(run): Option<Run> = conn.fetch_optional(&run_q).await? else { return Ok(false) };
    if run.state == RunState::Completed {
        return Ok(false);
    }
    let q = Query::select().columns(JOB_COLUMNS).from("ci_jobs").and_where(Expr::col("run_id").eq(run_id)).to_owned();
    let jobs: Vec<Job> = conn.fetch_all(&q).await?;
    for job in jobs {
        match job.state {
            JobState::Waiting | JobState::Queued | JobState::Leased => {
                let update = finish_job(job.id, Conclusion::Cancelled, Some(why.to_owned()), now)
                    .and_where(Expr::col("state").eq(job.state.as_str()))
                    .to_owned();
                if conn.execute(&update).await? == 1 {
                    job_completed(conn, job.id, now).await?;
                }
            }
            JobState::InProgress => {
                let update = Query::update()
                    .table("ci_jobs")
                    .value("cancel_requested", true)
                    .and_where(Expr::col("id").eq(job.id))
                    .and_where(Expr::col("state").eq(JobState::InProgress.as_str()))
                    .to_owned();
                conn.execute(&update).await?;
            }
            JobState::Completed => {}
        }
    }
    // A run cancelled before it was released from its group no longer blocks anything.
    let unblock =
        Query::update().table("ci_runs").value("blocked", false).and_where(Expr::col("id").eq(run_id)).to_owned();
    conn.execute(&unblock).await?;
    Box::pin(settle_run(conn, run_id, now)).await?;
    Ok(true)
}

/// The update that puts a job back in the queue as `attempt` (callers add the job and a guard).
fn requeue_update(attempt: i64, message: Option<String>) -> sea_query::UpdateStatement {
    Query::update()
        .table("ci_jobs")
        .values([
            ("state", JobState::Queued.as_str().into()),
            ("attempt", attempt.into()),
            ("runner_id", Option::<i64>::None.into()),
            ("lease_expires_at", Option::<i64>::None.into()),
            ("token_hash", Option::<String>::None.into()),
            ("started_at", Option::<i64>::None.into()),
            ("message", message.into()),
        ])
        .to_owned()
}

/// The delay before attempt `attempt + 1` of a retried job, in ms: the policy's delay, doubled for
/// each attempt after the first when exponential, with ±20 % jitter so retries spread out.
pub fn retry_delay(retry: crate::store::RetryPolicy, attempt: i64) -> i64 {
    use std::hash::{BuildHasher, Hasher};
    let doublings = if retry.exponential { Ord::min(u32::try_from(attempt - 1).unwrap_or(0), 20) } else { 0 };
    let base = Ord::max(retry.delay_ms, 0).saturating_mul(1i64 << doublings);
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    let jitter = (random % 401) as i64 - 200; // -200‰ … +200‰
    base + base * jitter / 1000
}

/// Cancels the other matrix instances of a failed job (`strategy.fail-fast`): those not yet running
/// at once, running ones through their runner's next heartbeat.
async fn cancel_siblings(conn: &mut Conn<'_>, job: &Job, now: Timestamp) -> Result<()> {
    let q = Query::select()
        .columns(JOB_COLUMNS)
        .from("ci_jobs")
        .and_where(Expr::col("run_id").eq(job.run_id))
        .and_where(Expr::col("job_key").eq(job.job_key.as_str()))
        .and_where(Expr::col("id").ne(job.id))
        .to_owned();
    let siblings: Vec<Job> = conn.fetch_all(&q).await?;
    let why = format!("cancelled: fail-fast, {} failed", job.name);
    for sibling in siblings {
        match sibling.state {
            JobState::Waiting | JobState::Queued | JobState::Leased => {
                let update = finish_job(sibling.id, Conclusion::Cancelled, Some(why.clone()), now)
                    .and_where(Expr::col("state").eq(sibling.state.as_str()))
                    .to_owned();
                if conn.execute(&update).await? == 1 {
                    job_completed(conn, sibling.id, now).await?;
                }
            }
            JobState::InProgress => {
                let update = Query::update()
                    .table("ci_jobs")
                    .value("cancel_requested", true)
                    .and_where(Expr::col("id").eq(sibling.id))
                    .and_where(Expr::col("state").eq(JobState::InProgress.as_str()))
                    .to_owned();
                conn.execute(&update).await?;
            }
            JobState::Completed => {}
        }
    }
    Ok(())
}

/// The update that completes a job (callers add their guard).
fn finish_job(
    job_id: i64,
    conclusion: Conclusion,
    message: Option<String>,
    now: Timestamp,
) -> sea_query::UpdateStatement {
    let mut update = Query::update()
        .table("ci_jobs")
        .values([
            ("state", JobState::Completed.as_str().into()),
            ("conclusion", conclusion.as_str().into()),
            ("completed_at", now.0.into()),
            ("lease_expires_at", Option::<i64>::None.into()),
            ("token_hash", Option::<String>::None.into()),
        ])
        .and_where(Expr::col("id").eq(job_id))
        .to_owned();
    if let Some(message) = message {
        update.value("message", message);
    }
    update
}

/// Steps a completed job never reported as finished are skipped.
/// A job has just completed (in the caller's transaction): its steps not yet ended are skipped,
/// a `completed` job event is appended, and the job waiting in its concurrency group (if any) is
/// queued. Returns whether a job was queued.
async fn job_completed(conn: &mut Conn<'_>, job_id: i64, now: Timestamp) -> Result<bool> {
    close_steps(conn, job_id, now).await?;
    crate::events::append_job_event(conn, job_id, now).await?;
    let q = Query::select()
        .columns(["repo_id", "concurrency_group"])
        .from("ci_jobs")
        .and_where(Expr::col("id").eq(job_id))
        .to_owned();
    match conn.fetch_optional::<JobGroup>(&q).await? {
        Some(JobGroup { repo_id: Some(repo_id), group: Some(group) }) => {
            release_job_group(conn, repo_id, &group, now).await
        }
        _ => Ok(false),
    }
}

struct JobGroup {
    repo_id: Option<i64>,
    group: Option<String>,
}

impl FromDbRow for JobGroup {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok(JobGroup { repo_id: row.get("repo_id")?, group: row.get("concurrency_group")? })
    }
}

/// The jobs of a repository's concurrency group that are not completed.
async fn group_jobs(conn: &mut Conn<'_>, repo_id: i64, group: &str) -> Result<Vec<Job>> {
    let q = Query::select()
        .columns(JOB_COLUMNS)
        .from("ci_jobs")
        .and_where(Expr::col("repo_id").eq(repo_id))
        .and_where(Expr::col("concurrency_group").eq(group))
        .and_where(Expr::col("state").ne(JobState::Completed.as_str()))
        .order_by("id", Order::Asc)
        .to_owned();
    Ok(conn.fetch_all(&q).await?)
}

/// Whether a job of its group holds the group (queued or running); a waiting job does not.
fn holds_group(job: &Job) -> bool {
    matches!(job.state, JobState::Queued | JobState::Leased | JobState::InProgress)
}

/// Queues the job waiting in a concurrency group once no job of the group is queued or running.
async fn release_job_group(conn: &mut Conn<'_>, repo_id: i64, group: &str, now: Timestamp) -> Result<bool> {
    let jobs = group_jobs(conn, repo_id, group).await?;
    if jobs.iter().any(holds_group) {
        return Ok(false);
    }
    let Some(next) = jobs.iter().find(|j| j.state == JobState::Waiting && j.blocked) else { return Ok(false) };
    let update = Query::update()
        .table("ci_jobs")
        .values([("state", JobState::Queued.as_str().into()), ("blocked", false.into()), ("queued_at", now.0.into())])
        .and_where(Expr::col("id").eq(next.id))
        .and_where(Expr::col("state").eq(JobState::Waiting.as_str()))
        .and_where(Expr::col("blocked").eq(true))
        .to_owned();
    if conn.execute(&update).await? == 0 {
        return Ok(false);
    }
    crate::events::append_job_event(conn, next.id, now).await?;
    Ok(true)
}

/// Places a job whose needs and `if:` let it run in its concurrency group (in the caller's
/// transaction), as GitHub keeps one running and one pending job per group: with
/// `cancel-in-progress` the group's other jobs are cancelled; otherwise a job already waiting in
/// the group is cancelled (this one replaces it) and this one waits while another holds the
/// group. Returns whether it may be queued now.
async fn join_job_group(conn: &mut Conn<'_>, job: &Job, group: &str, cancel: bool, now: Timestamp) -> Result<bool> {
    let repo_q = Query::select().column("repo_id").from("ci_runs").and_where(Expr::col("id").eq(job.run_id)).to_owned();
    let repo_id: i64 = conn.fetch_one(&repo_q).await?;
    let others: Vec<Job> = group_jobs(conn, repo_id, group).await?.into_iter().filter(|o| o.id != job.id).collect();
    let waiting: Vec<&Job> = others.iter().filter(|o| o.state == JobState::Waiting && o.blocked).collect();
    let holding: Vec<&Job> = others.iter().filter(|o| holds_group(o)).collect();
    let mut settle = Vec::new();
    // Waiting ones first: cancelling a holder could otherwise release one of them.
    for other in &waiting {
        let why = format!("cancelled: a newer job of concurrency group {group} is pending");
        let update = finish_job(other.id, Conclusion::Cancelled, Some(why), now)
            .and_where(Expr::col("state").eq(JobState::Waiting.as_str()))
            .to_owned();
        if conn.execute(&update).await? == 1 {
            close_steps(conn, other.id, now).await?;
            crate::events::append_job_event(conn, other.id, now).await?;
            settle.push(other.run_id);
        }
    }
    if cancel {
        for other in &holding {
            let why = format!("cancelled: a newer job of concurrency group {group} started");
            if other.state == JobState::InProgress {
                let update = Query::update()
                    .table("ci_jobs")
                    .values([("cancel_requested", true.into()), ("message", why.into())])
                    .and_where(Expr::col("id").eq(other.id))
                    .and_where(Expr::col("state").eq(JobState::InProgress.as_str()))
                    .to_owned();
                conn.execute(&update).await?;
                continue;
            }
            let update = finish_job(other.id, Conclusion::Cancelled, Some(why), now)
                .and_where(Expr::col("state").eq(other.state.as_str()))
                .to_owned();
            if conn.execute(&update).await? == 1 {
                close_steps(conn, other.id, now).await?;
                crate::events::append_job_event(conn, other.id, now).await?;
                settle.push(other.run_id);
            }
        }
    }
    settle.sort_unstable();
    settle.dedup();
    for run_id in settle.into_iter().filter(|r| *r != job.run_id) {
        Box::pin(settle_run(conn, run_id, now)).await?;
    }
    Ok(cancel || holding.is_empty())
}

async fn close_steps(conn: &mut Conn<'_>, job_id: i64, now: Timestamp) -> Result<()> {
    let update = Query::update()
        .table("ci_steps")
        .values([
            ("state", RunState::Completed.as_str().into()),
            ("conclusion", Conclusion::Skipped.as_str().into()),
            ("completed_at", now.0.into()),
        ])
        .and_where(Expr::col("job_id").eq(job_id))
        .and_where(Expr::col("state").ne(RunState::Completed.as_str()))
        .to_owned();
    conn.execute(&update).await?;
    Ok(())
}

/// A new attempt starts its steps afresh.
async fn reset_steps(conn: &mut Conn<'_>, job_id: i64) -> Result<()> {
    let update = Query::update()
        .table("ci_steps")
        .values([
            ("state", RunState::Queued.as_str().into()),
            ("conclusion", Option::<String>::None.into()),
            ("started_at", Option::<i64>::None.into()),
            ("completed_at", Option::<i64>::None.into()),
        ])
        .and_where(Expr::col("job_id").eq(job_id))
        .to_owned();
    conn.execute(&update).await?;
    Ok(())
}

/// A finished `needs` job's result, over all its matrix instances: GitHub's `needs.<id>.result`.
fn result_of(instances: &[&Job]) -> &'static str {
    let has = |c: Conclusion| instances.iter().any(|j| j.conclusion == Some(c));
    if has(Conclusion::Failure) || has(Conclusion::TimedOut) {
        "failure"
    } else if has(Conclusion::Cancelled) {
        "cancelled"
    } else if !instances.is_empty() && instances.iter().all(|j| j.conclusion == Some(Conclusion::Skipped)) {
        "skipped"
    } else {
        "success"
    }
}

/// The `needs` context of a job: `{<id>: {result, outputs}}` for each job it needs (outputs of
/// matrix instances merged, a later instance winning, as GitHub does).
pub fn needs_context(jobs: &[Job], needs: &[String]) -> serde_json::Value {
    let mut context = serde_json::Map::new();
    for key in needs {
        let instances: Vec<&Job> = jobs.iter().filter(|j| &j.job_key == key).collect();
        let mut outputs = serde_json::Map::new();
        for job in &instances {
            if let Some(serde_json::Value::Object(o)) =
                job.outputs.as_deref().and_then(|o| serde_json::from_str(o).ok())
            {
                outputs.extend(o);
            }
        }
        context.insert(key.clone(), serde_json::json!({"result": result_of(&instances), "outputs": outputs}));
    }
    serde_json::Value::Object(context)
}

/// Every job a job depends on, directly or through others (GitHub's status functions for a
/// job look at this whole chain), with its result.
fn ancestor_results(jobs: &[Job], needs: &[String]) -> Vec<(String, &'static str)> {
    let mut seen: Vec<String> = Vec::new();
    let mut todo: Vec<String> = needs.to_vec();
    while let Some(key) = todo.pop() {
        if seen.iter().any(|k| k.eq_ignore_ascii_case(&key)) {
            continue;
        }
        for job in jobs.iter().filter(|j| j.job_key.eq_ignore_ascii_case(&key)) {
            todo.extend(job.needs.iter().cloned());
        }
        seen.push(key);
    }
    seen.into_iter()
        .map(|key| {
            let instances: Vec<&Job> = jobs.iter().filter(|j| j.job_key.eq_ignore_ascii_case(&key)).collect();
            let result = result_of(&instances);
            (key, result)
        })
        .collect()
}

/// The expression context of a job's `if:`.
struct JobIf {
    values: gitstratum_workflow::expr::Dict,
    /// Each job of the chain the job depends on, with its result.
    ancestors: Vec<(String, &'static str)>,
}

impl JobIf {
    /// The results `success(…)`/`failure(…)` look at: the named jobs, or the whole chain.
    fn results(&self, args: &[gitstratum_workflow::expr::Value]) -> Vec<&'static str> {
        if args.is_empty() {
            return self.ancestors.iter().map(|(_, r)| *r).collect();
        }
        args.iter()
            .map(|a| a.to_coerced_string())
            .map(|name| {
                self.ancestors.iter().find(|(k, _)| k.eq_ignore_ascii_case(&name)).map_or("skipped", |(_, r)| *r)
            })
            .collect()
    }
}

impl gitstratum_workflow::expr::Context for JobIf {
    fn named_value(&self, name: &str) -> Option<gitstratum_workflow::expr::Value> {
        self.values.get(name).cloned()
    }

    fn call(
        &self,
        name: &str,
        args: &[gitstratum_workflow::expr::Value],
    ) -> Result<gitstratum_workflow::expr::Value, String> {
        use gitstratum_workflow::expr::Value;
        match name {
            "success" => Ok(Value::from(self.results(args).iter().all(|r| *r == "success"))),
            "failure" => Ok(Value::from(self.results(args).contains(&"failure"))),
            "always" => Ok(Value::from(true)),
            // A cancelled run's waiting jobs are cancelled outright; none is asked.
            "cancelled" => Ok(Value::from(false)),
            other => Err(format!("function '{other}' is not available in a job's if")),
        }
    }
}

/// What a run's `if:` expressions see besides `needs`: `github` and `inputs`.
struct RunContext {
    github: gitstratum_workflow::expr::Value,
    inputs: gitstratum_workflow::expr::Value,
    workflow: Option<gitstratum_workflow::Workflow>,
}

async fn run_context(conn: &mut Conn<'_>, run_id: i64) -> Result<RunContext> {
    use gitstratum_workflow::expr::Value;
    let run_q = Query::select().columns(RUN_COLUMNS).from("ci_runs").and_where(Expr::col("id").eq(run_id)).to_owned();
    let run: Run = conn.fetch_one(&run_q).await?;
    let source_q = Query::select()
        .columns(["workflow", "inputs"])
        .from("ci_runs")
        .and_where(Expr::col("id").eq(run_id))
        .to_owned();
    let RunSource { workflow, inputs } = conn.fetch_one(&source_q).await?;
    let repo_q = Query::select()
        .expr_as(Expr::col(("accounts", "name")), "owner")
        .expr_as(Expr::col(("repos", "name")), "name")
        .from("repos")
        .inner_join("accounts", Expr::col(("accounts", "id")).equals(("repos", "owner_id")))
        .and_where(Expr::col(("repos", "id")).eq(run.repo_id))
        .to_owned();
    let repository = conn.fetch_optional::<RepoName>(&repo_q).await?.map(|r| r.0).unwrap_or_default();
    let github = run.github_context(&repository);
    let inputs = inputs.and_then(|i| serde_json::from_str(&i).ok()).map_or(Value::Null, Value::from_json);
    let workflow = workflow.and_then(|w| serde_json::from_str(&w).ok());
    Ok(RunContext { github, inputs, workflow })
}

struct RepoName(String);

impl FromDbRow for RepoName {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok(RepoName(format!("{}/{}", row.get::<String>("owner")?, row.get::<String>("name")?)))
    }
}

/// Whether a job whose needs have all finished runs: its `if:` (default `success()`: every job
/// of the chain it depends on succeeded, as on GitHub, where a failure or a skip anywhere up the
/// chain skips it unless its `if:` says otherwise), or why not.
fn job_runs(run: &RunContext, jobs: &[Job], job: &Job) -> Result<(), (Conclusion, String)> {
    use gitstratum_workflow::expr::{self, Dict, Value};
    use gitstratum_workflow::load::places;
    let needs = needs_context(jobs, &job.needs);
    let ancestors = ancestor_results(jobs, &job.needs);
    let condition = run.workflow.as_ref().and_then(|w| w.jobs.get(&job.job_key)).and_then(|j| j.condition.clone());
    let Some(condition) = condition else {
        let failed: Vec<&str> = ancestors.iter().filter(|(_, r)| *r != "success").map(|(k, _)| k.as_str()).collect();
        if failed.is_empty() {
            return Ok(());
        }
        return Err((Conclusion::Skipped, format!("skipped: {} did not succeed", failed.join(", "))));
    };
    let mut values = Dict::new();
    values.insert("github", run.github.clone());
    values.insert("inputs", run.inputs.clone());
    values.insert("needs", Value::from_json(needs));
    values.insert("vars", Value::object(Dict::new()));
    let context = JobIf { values, ancestors };
    let evaluated = expr::parse(&condition, &places::JOB_IF.options())
        .map_err(|e| e.message)
        .and_then(|e| expr::evaluate(&e, &context, &condition).map_err(|e| e.message));
    match evaluated {
        Ok(v) if v.is_truthy() => Ok(()),
        Ok(_) => Err((Conclusion::Skipped, format!("skipped: if: {condition} was false"))),
        Err(e) => Err((Conclusion::Failure, format!("if: {e}"))),
    }
}

/// Releases waiting jobs whose needs have all finished and whose `if:` holds (by default: every
/// need succeeded), skips the others, repeats while that changes anything, and completes the run
/// when every job has. Returns whether a job was queued.
pub(crate) async fn settle_run(conn: &mut Conn<'_>, run_id: i64, now: Timestamp) -> Result<bool> {
    let group_q = Query::select()
        .columns(["repo_id", "concurrency_group", "blocked"])
        .from("ci_runs")
        .and_where(Expr::col("id").eq(run_id))
        .to_owned();
    let Some(group): Option<RunGroup> = conn.fetch_optional(&group_q).await? else { return Ok(false) };
    if group.blocked {
        return Ok(false); // pending behind its concurrency group's running run
    }
    let q = Query::select().columns(JOB_COLUMNS).from("ci_jobs").and_where(Expr::col("run_id").eq(run_id)).to_owned();
    let mut jobs: Vec<Job> = conn.fetch_all(&q).await?;
    let mut released = false;
    let mut context: Option<RunContext> = None;
    loop {
        let mut changed = false;
        let mut reload = false;
        for i in 0..jobs.len() {
            if jobs[i].state != JobState::Waiting || jobs[i].blocked {
                continue;
            }
            let done = |key: &String| jobs.iter().filter(|j| &j.job_key == key).all(|j| j.state == JobState::Completed);
            if !jobs[i].needs.iter().all(done) {
                continue;
            }
            if context.is_none() {
                context = Some(run_context(conn, run_id).await?);
            }
            let Some(run) = context.as_ref() else { continue };
            // A calling job (a reusable workflow's call) runs nowhere: it ends as its called jobs
            // did, with the call's outputs.
            let call_result =
                run.workflow.as_ref().and_then(|w| w.jobs.get(&jobs[i].job_key)).and_then(|j| j.call_result.clone());
            if let Some(result) = call_result {
                let (conclusion, outputs) = call_completion(run, &jobs, &result);
                let outputs = serde_json::to_string(&outputs).unwrap_or_else(|_| "{}".to_owned());
                let update = finish_job(jobs[i].id, conclusion, None, now)
                    .value("outputs", outputs.clone())
                    .and_where(Expr::col("state").eq(JobState::Waiting.as_str()))
                    .to_owned();
                if conn.execute(&update).await? == 1 {
                    released |= job_completed(conn, jobs[i].id, now).await?;
                }
                jobs[i].state = JobState::Completed;
                jobs[i].conclusion = Some(conclusion);
                jobs[i].outputs = Some(outputs);
                changed = true;
                continue;
            }
            let mut decision = job_runs(run, &jobs, &jobs[i]);
            if decision.is_ok() && jobs[i].runs_on.is_none() {
                // Its matrix or labels wait for what its needs produced (or planning it failed
                // when the run was created): plan it now.
                match expand_job(conn, run, &jobs, &jobs[i], group.repo_id, now).await? {
                    Ok(true) => {
                        reload = true;
                        changed = true;
                        break;
                    }
                    Ok(false) => {
                        decision = Err((Conclusion::Skipped, "skipped: its matrix has no combinations".to_owned()))
                    }
                    Err(why) => decision = Err((Conclusion::Failure, why)),
                }
            }
            // A job that may run takes its place in its concurrency group first.
            let may_queue = match (&decision, jobs[i].concurrency.clone()) {
                (Ok(()), Some((group, cancel))) => join_job_group(conn, &jobs[i], &group, cancel, now).await?,
                _ => true,
            };
            let update = match &decision {
                Ok(()) if may_queue => Query::update()
                    .table("ci_jobs")
                    .values([("state", JobState::Queued.as_str().into()), ("queued_at", now.0.into())])
                    .and_where(Expr::col("id").eq(jobs[i].id))
                    .to_owned(),
                Ok(()) => Query::update()
                    .table("ci_jobs")
                    .value("blocked", true)
                    .and_where(Expr::col("id").eq(jobs[i].id))
                    .to_owned(),
                Err((conclusion, why)) => finish_job(jobs[i].id, *conclusion, Some(why.clone()), now),
            };
            let guarded = update.to_owned().and_where(Expr::col("state").eq(JobState::Waiting.as_str())).to_owned();
            let took = conn.execute(&guarded).await? == 1;
            match decision {
                Ok(()) if may_queue => {
                    jobs[i].state = JobState::Queued;
                    released = true;
                    if took {
                        crate::events::append_job_event(conn, jobs[i].id, now).await?;
                    }
                }
                Ok(()) => jobs[i].blocked = true,
                Err((conclusion, _)) => {
                    jobs[i].state = JobState::Completed;
                    jobs[i].conclusion = Some(conclusion);
                    if took {
                        released |= job_completed(conn, jobs[i].id, now).await?;
                    }
                }
            }
            changed = true;
        }
        if reload {
            jobs = conn.fetch_all(&q).await?;
        }
        if !changed {
            break;
        }
    }
    if jobs.iter().all(|j| j.state == JobState::Completed) {
        let conclusions: Vec<Option<Conclusion>> = jobs.iter().map(|j| j.conclusion).collect();
        let has = |c: Conclusion| conclusions.contains(&Some(c));
        let conclusion = if has(Conclusion::Failure) || has(Conclusion::TimedOut) {
            Conclusion::Failure
        } else if has(Conclusion::Cancelled) {
            Conclusion::Cancelled
        } else if !jobs.is_empty() && conclusions.iter().all(|c| *c == Some(Conclusion::Skipped)) {
            Conclusion::Skipped
        } else {
            Conclusion::Success
        };
        let update = Query::update()
            .table("ci_runs")
            .values([
                ("state", RunState::Completed.as_str().into()),
                ("conclusion", conclusion.as_str().into()),
                ("completed_at", now.0.into()),
            ])
            .and_where(Expr::col("id").eq(run_id))
            .and_where(Expr::col("state").ne(RunState::Completed.as_str()))
            .to_owned();
        let completed = conn.execute(&update).await? == 1;
        if completed {
            crate::events::append_run_event(conn, run_id, RunState::Completed, Some(conclusion), now).await?;
        }
        if completed && let Some(name) = &group.group {
            // The group is free: its pending run (there is at most one) may go.
            let next = Query::select()
                .column("id")
                .from("ci_runs")
                .and_where(Expr::col("repo_id").eq(group.repo_id))
                .and_where(Expr::col("concurrency_group").eq(name.as_str()))
                .and_where(Expr::col("blocked").eq(true))
                .order_by("id", Order::Asc)
                .limit(1)
                .to_owned();
            if let Some(next) = conn.fetch_optional::<i64>(&next).await? {
                let unblock = Query::update()
                    .table("ci_runs")
                    .value("blocked", false)
                    .and_where(Expr::col("id").eq(next))
                    .to_owned();
                conn.execute(&unblock).await?;
                released |= Box::pin(settle_run(conn, next, now)).await?;
            }
        }
    }
    Ok(released)
}

/// How a calling job ends: as its called jobs did (a failure among them fails it, all skipped
/// skips it), with the called workflow's outputs over their results and outputs.
fn call_completion(
    run: &RunContext,
    jobs: &[Job],
    result: &gitstratum_workflow::model::CallResult,
) -> (Conclusion, serde_json::Map<String, serde_json::Value>) {
    let mut all: Vec<&Job> = Vec::new();
    let mut outputs = serde_json::Map::new();
    // One call per combination of a calling job's matrix: their outputs merged, a later
    // combination winning, as a matrix job's are.
    for prefix in &result.prefixes {
        // The `jobs` context is the `needs` context of the called jobs, by their own ids.
        let keys: Vec<String> = result.jobs.iter().map(|id| format!("{prefix}{id}")).collect();
        let by_key = needs_context(jobs, &keys);
        let context: serde_json::Map<String, serde_json::Value> =
            result.jobs.iter().zip(&keys).map(|(id, key)| (id.clone(), by_key[key].clone())).collect();
        all.extend(jobs.iter().filter(|j| keys.contains(&j.job_key)));
        let evaluated = gitstratum_workflow::call::call_outputs(
            result,
            serde_json::Value::Object(context),
            run.github.clone(),
            run.inputs.clone(),
        );
        outputs.extend(evaluated.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))));
    }
    (Conclusion::parse(result_of(&all)).unwrap_or(Conclusion::Success), outputs)
}

/// Plans a waiting job whose `runs_on` was not known when its run was created, now that the jobs
/// it needs have finished: the row becomes its first instance and the others are added beside
/// it (all waiting). `Ok(false)`: the matrix gave no instance; `Err`: why the job fails.
async fn expand_job(
    conn: &mut Conn<'_>,
    run: &RunContext,
    jobs: &[Job],
    job: &Job,
    repo_id: i64,
    now: Timestamp,
) -> Result<std::result::Result<bool, String>> {
    use gitstratum_workflow::expr::Value;
    use gitstratum_workflow::plan::{PlanContext, plan_deferred};
    let Some(workflow) = &run.workflow else {
        return Ok(Err("the run keeps no workflow to plan this job from".to_owned()));
    };
    let ctx = PlanContext {
        github: run.github.clone(),
        inputs: run.inputs.clone(),
        vars: Value::Null,
        needs: Value::from_json(needs_context(jobs, &every_key(jobs, workflow, job))),
    };
    let planned = match plan_deferred(workflow, &job.job_key, &ctx) {
        Ok(planned) => planned,
        Err(why) => return Ok(Err(why)),
    };
    let mut instances = planned.iter().map(|p| NewJob::planned(workflow, p));
    let Some(first) = instances.next() else { return Ok(Ok(false)) };
    let Some(labels) = &first.runs_on else {
        return Ok(Err("the job's runs-on gave no runner labels".to_owned()));
    };
    let update = Query::update()
        .table("ci_jobs")
        .values([
            ("name", first.name.as_str().into()),
            ("matrix", first.matrix.clone().into()),
            ("runs_on", labels.join(" ").into()),
            ("fail_fast", first.fail_fast.into()),
            ("max_parallel", first.max_parallel.into()),
            ("concurrency_group", first.concurrency.as_ref().map(|(g, _)| g.clone()).into()),
            ("concurrency_cancel", first.concurrency.as_ref().is_some_and(|(_, c)| *c).into()),
        ])
        .and_where(Expr::col("id").eq(job.id))
        .and_where(Expr::col("state").eq(JobState::Waiting.as_str()))
        .to_owned();
    if conn.execute(&update).await? != 1 {
        return Ok(Ok(true)); // someone else planned it: reload and see
    }
    for other in instances {
        crate::store::insert_job(conn, job.run_id, repo_id, &other, now).await?;
    }
    Ok(Ok(true))
}

/// The jobs whose results a waiting job's planning may read: the jobs it needs, and for a job a
/// reusable workflow call brought in, the jobs its callers need.
fn every_key(jobs: &[Job], workflow: &gitstratum_workflow::Workflow, job: &Job) -> Vec<String> {
    let mut keys = job.needs.clone();
    if let Some(planned) = workflow.jobs.get(&job.job_key) {
        for frame in &planned.call {
            keys.extend(frame.caller_needs.iter().cloned());
        }
    }
    keys.retain(|k| jobs.iter().any(|j| &j.job_key == k));
    keys.sort();
    keys.dedup();
    keys
}

/// A run's concurrency group and whether it is pending behind it.
struct RunGroup {
    repo_id: i64,
    group: Option<String>,
    blocked: bool,
}

impl FromDbRow for RunGroup {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok(RunGroup {
            repo_id: row.get("repo_id")?,
            group: row.get("concurrency_group")?,
            blocked: row.get("blocked")?,
        })
    }
}

/// Places a new run in its concurrency group (in its creating transaction, before it is settled):
/// with `cancel-in-progress` the group's other unfinished runs are cancelled; otherwise the new run
/// waits (blocked) while another of the group is unfinished, replacing any run already waiting, as
/// GitHub keeps one running and one pending run per group.
pub(crate) async fn join_group(
    conn: &mut Conn<'_>,
    run_id: i64,
    repo_id: i64,
    group: &str,
    cancel: bool,
    now: Timestamp,
) -> Result<()> {
    let others = Query::select()
        .columns(["id", "blocked"])
        .from("ci_runs")
        .and_where(Expr::col("repo_id").eq(repo_id))
        .and_where(Expr::col("concurrency_group").eq(group))
        .and_where(Expr::col("state").ne(RunState::Completed.as_str()))
        .and_where(Expr::col("id").ne(run_id))
        .to_owned();
    let others: Vec<GroupMember> = conn.fetch_all(&others).await?;
    if others.is_empty() {
        return Ok(());
    }
    if cancel {
        for other in &others {
            cancel_run_in(conn, other.id, &format!("cancelled: a newer run of concurrency group {group} started"), now)
                .await?;
        }
        return Ok(());
    }
    for other in others.iter().filter(|o| o.blocked) {
        cancel_run_in(conn, other.id, &format!("cancelled: a newer run of concurrency group {group} is pending"), now)
            .await?;
    }
    if others.iter().any(|o| !o.blocked) {
        let block =
            Query::update().table("ci_runs").value("blocked", true).and_where(Expr::col("id").eq(run_id)).to_owned();
        conn.execute(&block).await?;
    }
    Ok(())
}

struct GroupMember {
    id: i64,
    blocked: bool,
}

impl FromDbRow for GroupMember {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok(GroupMember { id: row.get("id")?, blocked: row.get("blocked")? })
    }
}

/// Takes back jobs whose lease ran out, every few seconds, until `stop` fires. On start this also
/// recovers the leases that expired while the server was down.
pub async fn run_reaper(
    ci: CiStore,
    clock: std::sync::Arc<dyn gitstratum_core::Clock>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    // Often enough that a lost runner's job is back in the queue soon after its lease ends.
    let every = u64::try_from(ci.timing.lease_ms / 6).unwrap_or(5000).clamp(250, 5000);
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(every));
    let mut reported: std::collections::BTreeSet<i64> = std::collections::BTreeSet::new();
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => return,
        }
        // Jobs whose retry delay has passed are leasable now: let waiting runners look.
        ci.wake_runners();
        match ci.expire_leases(clock.now()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, "ci: took back jobs whose runner stopped answering"),
            Err(e) => tracing::warn!(error = %e, "ci: expiring leases failed"),
        }
        // Queue depth per tenant (a tenant whose queue emptied reads 0).
        if let Ok(tenants) = ci.tenants_in_turn().await {
            let now: std::collections::BTreeSet<i64> = tenants.iter().map(|t| t.id).collect();
            for gone in reported.difference(&now) {
                metrics::gauge!("gitstratum_ci_queued_jobs", "tenant" => gone.to_string()).set(0.0);
            }
            for t in &tenants {
                metrics::gauge!("gitstratum_ci_queued_jobs", "tenant" => t.id.to_string()).set(t.queued as f64);
            }
            reported = now;
        }
    }
}
