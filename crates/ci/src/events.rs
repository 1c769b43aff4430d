//! Run events (`requested`, `in_progress`, `completed`) and job events (`queued`, `in_progress`,
//! `completed`; they name their job), each written in the transaction of the transition, for
//! consumers such as the webhook dispatcher (`workflow_run` and `workflow_job` deliveries). Appends
//! are serialized (SQLite transactions begin `IMMEDIATE`; PostgreSQL locks the table until
//! commit), so ids become visible in order and a consumer's cursor never skips one.

use gitstratum_core::Timestamp;
use gitstratum_platform::db::{Conn, DbRow, FromDbRow};
use gitstratum_platform::store::Result;
use sea_query::{Alias, Expr, ExprTrait, JoinType, Order, Query};

use crate::state::{Conclusion, RunState};
use crate::store::CiStore;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunEvent {
    pub id: i64,
    pub run_id: i64,
    pub repo_id: i64,
    /// The job, for a job event.
    pub job_id: Option<i64>,
    /// `requested`, `in_progress` or `completed` (a run); `queued`, `in_progress` or `completed`
    /// (a job).
    pub action: String,
    pub status: String,
    pub conclusion: Option<String>,
    pub created_at: Timestamp,
}

impl FromDbRow for RunEvent {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok(RunEvent {
            id: row.get("id")?,
            run_id: row.get("run_id")?,
            repo_id: row.get("repo_id")?,
            job_id: row.get("job_id")?,
            action: row.get("action")?,
            status: row.get("status")?,
            conclusion: row.get("conclusion")?,
            created_at: Timestamp(row.get("created_at")?),
        })
    }
}

const COLUMNS: [&str; 8] = ["id", "run_id", "repo_id", "job_id", "action", "status", "conclusion", "created_at"];

/// Appends a run event in the caller's transaction.
pub(crate) async fn append_run_event(
    conn: &mut Conn<'_>,
    run_id: i64,
    state: RunState,
    conclusion: Option<Conclusion>,
    now: Timestamp,
) -> Result<()> {
    if let Conn::Postgres(_) = conn {
        conn.execute_raw("LOCK TABLE ci_events IN SHARE ROW EXCLUSIVE MODE").await?;
    }
    let action = match state {
        RunState::Queued => "requested",
        RunState::InProgress => "in_progress",
        RunState::Completed => "completed",
    };
    let repo = Query::select().column("repo_id").from("ci_runs").and_where(Expr::col("id").eq(run_id)).to_owned();
    let repo_id: i64 = conn.fetch_one(&repo).await?;
    let insert = Query::insert()
        .into_table("ci_events")
        .columns(["run_id", "repo_id", "action", "status", "conclusion", "created_at"])
        .values_panic([
            run_id.into(),
            repo_id.into(),
            action.into(),
            state.as_str().into(),
            conclusion.map(Conclusion::as_str).into(),
            now.0.into(),
        ])
        .to_owned();
    conn.execute(&insert).await?;
    Ok(())
}

/// Appends a job event (`queued`, `in_progress`, `completed`: the job's state now) in the
/// caller's transaction.
pub(crate) async fn append_job_event(conn: &mut Conn<'_>, job_id: i64, now: Timestamp) -> Result<()> {
    if let Conn::Postgres(_) = conn {
        conn.execute_raw("LOCK TABLE ci_events IN SHARE ROW EXCLUSIVE MODE").await?;
    }
    let q = Query::select()
        .columns([(Alias::new("j"), Alias::new("run_id")), (Alias::new("r"), Alias::new("repo_id"))])
        .columns([(Alias::new("j"), Alias::new("state")), (Alias::new("j"), Alias::new("conclusion"))])
        .from_as("ci_jobs", Alias::new("j"))
        .join_as(
            JoinType::InnerJoin,
            Alias::new("ci_runs"),
            Alias::new("r"),
            Expr::col((Alias::new("r"), Alias::new("id"))).equals((Alias::new("j"), Alias::new("run_id"))),
        )
        .and_where(Expr::col((Alias::new("j"), Alias::new("id"))).eq(job_id))
        .to_owned();
    let Some(row): Option<JobEventRow> = conn.fetch_optional(&q).await? else { return Ok(()) };
    let state = crate::state::JobState::parse(&row.state).unwrap_or(crate::state::JobState::Queued);
    let insert = Query::insert()
        .into_table("ci_events")
        .columns(["run_id", "repo_id", "job_id", "action", "status", "conclusion", "created_at"])
        .values_panic([
            row.run_id.into(),
            row.repo_id.into(),
            job_id.into(),
            state.status().into(),
            state.status().into(),
            row.conclusion.into(),
            now.0.into(),
        ])
        .to_owned();
    conn.execute(&insert).await?;
    Ok(())
}

struct JobEventRow {
    run_id: i64,
    repo_id: i64,
    state: String,
    conclusion: Option<String>,
}

impl FromDbRow for JobEventRow {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok(JobEventRow {
            run_id: row.get("run_id")?,
            repo_id: row.get("repo_id")?,
            state: row.get("state")?,
            conclusion: row.get("conclusion")?,
        })
    }
}

impl CiStore {
    /// Run and job events after id `after`, oldest first.
    pub async fn run_events_after(&self, after: u64, limit: u64) -> Result<Vec<RunEvent>> {
        let q = Query::select()
            .columns(COLUMNS)
            .from("ci_events")
            .and_where(Expr::col("id").gt(i64::try_from(after).unwrap_or(i64::MAX)))
            .order_by("id", Order::Asc)
            .limit(limit)
            .to_owned();
        Ok(self.db.acquire().await?.conn().fetch_all(&q).await?)
    }
}
