//! Usage metering and log retention.
//!
//! Every job attempt that ran leaves a usage row (in the transaction that ends it): its tenant
//! (the account owning the repository), repository, runner labels, how it ended and how long it
//! ran; its stored log size is added once the log is finished. Usage rows outlive runs and
//! repositories. Logs older than the retention are deleted by [`sweep_logs`]; their jobs remember
//! when (`logs_expired_at`), so the API can answer 410 rather than an empty log.

use gitstratum_core::Timestamp;
use gitstratum_platform::db::{Conn, DbRow, FromDbRow};
use gitstratum_platform::store::Result;
use sea_query::{Alias, Expr, ExprTrait, Func, JoinType, OnConflict, Order, Query};

use crate::logs::LogStore;
use crate::store::{CiStore, Job};

/// Records that `job`'s attempt `attempt` ran until `now` and ended `how` (a conclusion, or
/// `lost`), in the caller's transaction. Recording the same attempt twice changes nothing.
pub(crate) async fn record_usage(
    conn: &mut Conn<'_>,
    job: &Job,
    attempt: i64,
    how: &str,
    now: Timestamp,
) -> Result<()> {
    let owner = Query::select()
        .expr_as(Expr::col((Alias::new("ru"), Alias::new("repo_id"))), Alias::new("repo_id"))
        .expr_as(Expr::col((Alias::new("r"), Alias::new("owner_id"))), Alias::new("tenant_id"))
        .from_as("ci_runs", Alias::new("ru"))
        .join_as(
            JoinType::InnerJoin,
            Alias::new("repos"),
            Alias::new("r"),
            Expr::col((Alias::new("r"), Alias::new("id"))).equals((Alias::new("ru"), Alias::new("repo_id"))),
        )
        .and_where(Expr::col((Alias::new("ru"), Alias::new("id"))).eq(job.run_id))
        .to_owned();
    let Some(owner): Option<Owner> = conn.fetch_optional(&owner).await? else { return Ok(()) };
    let duration = job.started_at.map_or(0, |t| Ord::max(now.0 - t.0, 0));
    let insert = Query::insert()
        .into_table("ci_usage")
        .columns(["job_id", "attempt", "repo_id", "tenant_id", "labels", "conclusion", "duration_ms", "completed_at"])
        .values_panic([
            job.id.into(),
            attempt.into(),
            owner.repo_id.into(),
            owner.tenant_id.into(),
            job.runs_on.as_ref().map(|l| l.join(" ")).unwrap_or_default().into(),
            how.into(),
            duration.into(),
            now.0.into(),
        ])
        .on_conflict(OnConflict::columns(["job_id", "attempt"]).do_nothing().to_owned())
        .to_owned();
    conn.execute(&insert).await?;
    Ok(())
}

/// A repository's own CI settings; `None`: the site's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RepoSettings {
    /// Days its job logs are kept.
    pub log_retention_days: Option<i64>,
    /// Days its artifacts are kept at most.
    pub artifact_retention_days: Option<i64>,
    /// Any repository of the installation may use its actions and reusable workflows (else,
    /// when it is private, only its owner's repositories may).
    pub actions_shared: bool,
    /// Its CI is switched off: nothing starts runs (GitHub's Actions permissions, `enabled`
    /// false). A fork starts so.
    pub disabled: bool,
}

impl FromDbRow for RepoSettings {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok(RepoSettings {
            log_retention_days: row.get("log_retention_days")?,
            artifact_retention_days: row.get("artifact_retention_days")?,
            actions_shared: row.get("actions_shared")?,
            disabled: row.get("disabled")?,
        })
    }
}

struct Owner {
    repo_id: i64,
    tenant_id: i64,
}

impl FromDbRow for Owner {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok(Owner { repo_id: row.get("repo_id")?, tenant_id: row.get("tenant_id")? })
    }
}

/// Usage of one repository with one set of runner labels, over a period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageLine {
    pub repo_id: i64,
    /// The runner labels the jobs asked for, space-separated.
    pub labels: String,
    pub jobs: i64,
    pub duration_ms: i64,
    pub log_bytes: i64,
}

impl FromDbRow for UsageLine {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok(UsageLine {
            repo_id: row.get("repo_id")?,
            labels: row.get("labels")?,
            jobs: row.get("jobs")?,
            duration_ms: row.get("duration_ms")?,
            log_bytes: row.get("log_bytes")?,
        })
    }
}

impl CiStore {
    /// Adds the size of an attempt's finished log to its usage.
    pub async fn record_log_bytes(&self, job_id: i64, attempt: i64, bytes: u64) -> Result<()> {
        let update = Query::update()
            .table("ci_usage")
            .value("log_bytes", i64::try_from(bytes).unwrap_or(i64::MAX))
            .and_where(Expr::col("job_id").eq(job_id))
            .and_where(Expr::col("attempt").eq(attempt))
            .to_owned();
        self.db.acquire().await?.conn().execute(&update).await?;
        Ok(())
    }

    /// A tenant's usage of attempts that ended in `[from, to)`, by repository and labels.
    pub async fn usage(&self, tenant_id: i64, from: Timestamp, to: Timestamp) -> Result<Vec<UsageLine>> {
        let q = Query::select()
            .columns(["repo_id", "labels"])
            .expr_as(Expr::col("id").count(), Alias::new("jobs"))
            .expr_as(Expr::cust("CAST(SUM(duration_ms) AS BIGINT)"), Alias::new("duration_ms"))
            .expr_as(Expr::cust("CAST(SUM(log_bytes) AS BIGINT)"), Alias::new("log_bytes"))
            .from("ci_usage")
            .and_where(Expr::col("tenant_id").eq(tenant_id))
            .and_where(Expr::col("completed_at").gte(from.0))
            .and_where(Expr::col("completed_at").lt(to.0))
            .group_by_col("repo_id")
            .group_by_col("labels")
            .order_by("repo_id", Order::Asc)
            .order_by("labels", Order::Asc)
            .to_owned();
        Ok(self.db.acquire().await?.conn().fetch_all(&q).await?)
    }

    /// The job time (ms) a tenant's attempts that ended since `from` took.
    pub async fn used_ms(&self, tenant_id: i64, from: Timestamp) -> Result<i64> {
        let q = Query::select()
            .expr(Expr::cust("CAST(COALESCE(SUM(duration_ms), 0) AS BIGINT)"))
            .from("ci_usage")
            .and_where(Expr::col("tenant_id").eq(tenant_id))
            .and_where(Expr::col("completed_at").gte(from.0))
            .to_owned();
        Ok(self.db.acquire().await?.conn().fetch_one(&q).await?)
    }

    /// Completed jobs whose logs are kept and past their retention at `now`: their repository's
    /// own (`ci_repo_settings`), else `default_ms` (at most `limit` jobs).
    pub async fn jobs_with_logs_expired(&self, now: Timestamp, default_ms: i64, limit: u64) -> Result<Vec<i64>> {
        let q = crate::orchestrate::jobs_with_runs()
            .column((Alias::new("j"), Alias::new("id")))
            .join_as(
                JoinType::LeftJoin,
                Alias::new("ci_repo_settings"),
                Alias::new("st"),
                Expr::col((Alias::new("st"), Alias::new("repo_id"))).equals((Alias::new("ru"), Alias::new("repo_id"))),
            )
            .and_where(Expr::col((Alias::new("j"), Alias::new("logs_expired_at"))).is_null())
            .and_where(Expr::col((Alias::new("j"), Alias::new("completed_at"))).is_not_null())
            .and_where(Expr::col((Alias::new("j"), Alias::new("completed_at"))).lt(Expr::val(now.0).sub(
                Func::coalesce([
                    Expr::col((Alias::new("st"), Alias::new("log_retention_days"))).mul(86_400_000i64),
                    Expr::val(default_ms),
                ]),
            )))
            .order_by((Alias::new("j"), Alias::new("id")), Order::Asc)
            .limit(limit)
            .to_owned();
        Ok(self.db.acquire().await?.conn().fetch_all(&q).await?)
    }

    /// A repository's own CI settings.
    pub async fn repo_settings(&self, repo_id: i64) -> Result<RepoSettings> {
        let q = Query::select()
            .columns(["log_retention_days", "artifact_retention_days", "actions_shared", "disabled"])
            .from("ci_repo_settings")
            .and_where(Expr::col("repo_id").eq(repo_id))
            .to_owned();
        let found: Option<RepoSettings> = self.db.acquire().await?.conn().fetch_optional(&q).await?;
        Ok(found.unwrap_or_default())
    }

    /// Sets a repository's own CI settings.
    pub async fn set_repo_settings(&self, repo_id: i64, settings: RepoSettings, now: Timestamp) -> Result<()> {
        let columns = ["log_retention_days", "artifact_retention_days", "actions_shared", "disabled", "updated_at"];
        let upsert = Query::insert()
            .into_table("ci_repo_settings")
            .columns(["repo_id", columns[0], columns[1], columns[2], columns[3], columns[4]])
            .values_panic([
                repo_id.into(),
                settings.log_retention_days.into(),
                settings.artifact_retention_days.into(),
                settings.actions_shared.into(),
                settings.disabled.into(),
                now.0.into(),
            ])
            .on_conflict(OnConflict::column("repo_id").update_columns(columns).to_owned())
            .to_owned();
        self.db.acquire().await?.conn().execute(&upsert).await?;
        Ok(())
    }

    /// Notes that a job's logs were deleted.
    pub async fn mark_logs_expired(&self, job_id: i64, now: Timestamp) -> Result<()> {
        let update = Query::update()
            .table("ci_jobs")
            .value("logs_expired_at", now.0)
            .and_where(Expr::col("id").eq(job_id))
            .to_owned();
        self.db.acquire().await?.conn().execute(&update).await?;
        Ok(())
    }
}

/// Deletes the logs of jobs past their retention at `now` (their repository's own, else
/// `default_ms`): files first, then the mark, so an interrupted sweep is finished by the next.
/// Returns how many jobs.
pub async fn sweep_logs(ci: &CiStore, logs: &LogStore, now: Timestamp, default_ms: i64) -> Result<usize> {
    let mut swept = 0;
    loop {
        let jobs = ci.jobs_with_logs_expired(now, default_ms, 100).await?;
        if jobs.is_empty() {
            return Ok(swept);
        }
        for job in jobs {
            if let Err(e) = logs.delete_job(job).await {
                tracing::warn!(job, error = %e, "ci: cannot delete an expired log");
                return Ok(swept);
            }
            ci.mark_logs_expired(job, now).await?;
            swept += 1;
        }
    }
}
