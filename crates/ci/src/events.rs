//! Run events: `requested`, `in_progress` and `completed`, each written in the transaction of the
//! transition, for consumers such as the webhook dispatcher (`workflow_run` deliveries). Appends
//! are serialized (SQLite transactions begin `IMMEDIATE`; PostgreSQL locks the table until
//! commit), so ids become visible in order and a consumer's cursor never skips one.

use gitstratum_core::Timestamp;
use gitstratum_platform::db::{Conn, DbRow, FromDbRow};
use gitstratum_platform::store::Result;
use sea_query::{Expr, ExprTrait, Order, Query};

use crate::state::{Conclusion, RunState};
use crate::store::CiStore;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunEvent {
    pub id: i64,
    pub run_id: i64,
    pub repo_id: i64,
    /// `requested`, `in_progress` or `completed`.
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
            action: row.get("action")?,
            status: row.get("status")?,
            conclusion: row.get("conclusion")?,
            created_at: Timestamp(row.get("created_at")?),
        })
    }
}

const COLUMNS: [&str; 7] = ["id", "run_id", "repo_id", "action", "status", "conclusion", "created_at"];

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

impl CiStore {
    /// Run events after id `after`, oldest first.
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
