//! One SQL layer over SQLite (embedded) and PostgreSQL (production).
//!
//! Queries are built once with sea-query and rendered per dialect; values are bound by
//! [`bind`], never spliced into SQL. Rows decode through [`DbRow::get`], which requires a type to
//! decode on both backends, so code that compiles runs on both.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use sea_query::{PostgresQueryBuilder, QueryStatementWriter, SqliteQueryBuilder, Value, Values};
use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgPoolOptions, PgRow};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{
    Arguments, AssertSqlSafe, Database, Decode, Encode, PgConnection, PgPool, Postgres, Row, Sqlite, SqliteConnection,
    SqlitePool, Type,
};

/// Where platform state lives.
#[derive(Clone, PartialEq, Eq)]
pub enum DbTarget {
    /// A SQLite file (created when missing), in WAL mode with synchronous commits.
    Sqlite { path: PathBuf },
    /// A PostgreSQL URL; with `schema`, every table lives in that schema (created when missing),
    /// which lets test runs share one database without colliding.
    Postgres { url: String, schema: Option<String> },
}

impl fmt::Debug for DbTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbTarget::Sqlite { path } => f.debug_struct("Sqlite").field("path", path).finish(),
            DbTarget::Postgres { url, schema } => {
                f.debug_struct("Postgres").field("url", &redact_url(url)).field("schema", schema).finish()
            }
        }
    }
}

pub use gitstratum_pg::redact_url;

/// A connection pool on one of the two backends.
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Postgres(#[from] gitstratum_pg::ConnectError),
    #[error("cannot open the database: {0}")]
    Open(#[source] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl Db {
    /// Opens (and for SQLite creates) the database and brings its schema up to date.
    pub async fn connect(target: &DbTarget) -> Result<Db, ConnectError> {
        let db = match target {
            DbTarget::Sqlite { path } => {
                let options = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    // FULL: a commit the API acknowledged survives power loss, not only a crash.
                    .synchronous(SqliteSynchronous::Full)
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_secs(10));
                let pool = SqlitePoolOptions::new()
                    .max_connections(8)
                    .connect_with(options)
                    .await
                    .map_err(ConnectError::Open)?;
                Db::Sqlite(pool)
            }
            DbTarget::Postgres { url, schema } => {
                // On the primary among the URL's hosts, following it when it moves.
                let pool = PgPoolOptions::new().max_connections(16).acquire_timeout(Duration::from_secs(10));
                let pool = gitstratum_pg::connect(url, schema.as_deref(), pool).await?;
                Db::Postgres(pool)
            }
        };
        db.migrate().await?;
        Ok(db)
    }

    async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        match self {
            Db::Sqlite(pool) => migrator(SQLITE_MIGRATIONS).run(pool).await,
            Db::Postgres(pool) => migrator(POSTGRES_MIGRATIONS).run(pool).await,
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    /// A connection from the pool.
    pub async fn acquire(&self) -> Result<PooledConn, sqlx::Error> {
        Ok(match self {
            Db::Sqlite(pool) => PooledConn::Sqlite(pool.acquire().await?),
            Db::Postgres(pool) => PooledConn::Postgres(pool.acquire().await?),
        })
    }

    /// Starts a write transaction; dropped without [`Tx::commit`], it rolls back. On SQLite it
    /// takes the write lock at once (`BEGIN IMMEDIATE`, waiting up to the busy timeout), so a
    /// transaction that reads before it writes cannot fail when another writer commits between
    /// its read and its write.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        Ok(match self {
            Db::Sqlite(pool) => Tx::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?),
            Db::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        })
    }

    /// The singleton lock `key` (work only one server sharing the database should do at a time:
    /// a log consumer's tick), if no other server holds it; on SQLite (one server) always. It is
    /// a PostgreSQL session lock, released when the guard drops, or with the connection if the
    /// server dies.
    pub async fn try_singleton(&self, key: i32) -> Result<Option<Singleton>, sqlx::Error> {
        match self {
            Db::Sqlite(_) => Ok(Some(Singleton(None))),
            Db::Postgres(pool) => {
                let mut conn = pool.acquire().await?;
                let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
                    .bind(SINGLETON_CLASS)
                    .bind(key)
                    .fetch_one(&mut *conn)
                    .await?;
                Ok(got.then(|| Singleton(Some((conn, key)))))
            }
        }
    }

    /// On PostgreSQL, listens on `channel` for what other servers sharing the database (and
    /// schema: installations in other schemas are not heard) [`notify`] there, until aborted or
    /// `heard` answers `false`; `None` on SQLite (one server). The listener has a connection of
    /// its own, outside the pool, and reconnects with a growing pause when it loses it;
    /// [`Heard::Listening`] says each time it (re)starts listening, when anything sent meanwhile
    /// may have been missed.
    pub fn spawn_listener<F, Fut>(&self, channel: &'static str, mut heard: F) -> Option<tokio::task::JoinHandle<()>>
    where
        F: FnMut(Heard) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = bool> + Send,
    {
        let Db::Postgres(pool) = self else { return None };
        let pool = pool.clone();
        Some(tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            loop {
                // A pool of its own, made again at each start from the shared pool's current
                // options, so it listens on the primary also after it moved; its short acquire
                // timeout gives up on a dead primary soon and starts again from them.
                let own = PgPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(2))
                    .connect_lazy_with((*pool.connect_options()).clone().application_name(LISTENER_APPLICATION));
                let listening = async {
                    let mut listener = sqlx::postgres::PgListener::connect_with(&own).await?;
                    listener.listen(channel).await?;
                    // On the listener's own connection (the pool has just that one).
                    let schema: String = sqlx::query_scalar("SELECT current_schema()").fetch_one(&mut listener).await?;
                    Ok::<_, sqlx::Error>((listener, schema))
                };
                let (mut listener, schema) = match listening.await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(error = %e, channel, "cannot listen to the other servers; trying again");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                        continue;
                    }
                };
                backoff = Duration::from_millis(200);
                if !heard(Heard::Listening).await {
                    return;
                }
                loop {
                    let next = match listener.try_recv().await {
                        Ok(Some(n)) => match n.payload().split_once(' ') {
                            Some((from, payload)) if from == schema => Heard::Notified(payload.to_owned()),
                            _ => continue, // another installation's
                        },
                        // The connection was lost: listen again from the top, on wherever the
                        // primary is now, which says `Listening` once it listens.
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, channel, "lost the other servers' notifications; listening again");
                            break;
                        }
                    };
                    if !heard(next).await {
                        return;
                    }
                }
            }
        }))
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        self.acquire().await?.conn().execute_raw("SELECT 1").await.map(drop)
    }

    /// Waits for connections to be returned and closes them (SQLite checkpoints its WAL).
    pub async fn close(&self) {
        match self {
            Db::Sqlite(pool) => pool.close().await,
            Db::Postgres(pool) => pool.close().await,
        }
    }
}

struct MigrationSource {
    version: i64,
    description: &'static str,
    sql: &'static str,
}

const SQLITE_MIGRATIONS: &[MigrationSource] = &[
    MigrationSource { version: 1, description: "init", sql: include_str!("../migrations/sqlite/0001_init.sql") },
    MigrationSource {
        version: 2,
        description: "rbac audit",
        sql: include_str!("../migrations/sqlite/0002_rbac_audit.sql"),
    },
    MigrationSource {
        version: 3,
        description: "teams ssh keys",
        sql: include_str!("../migrations/sqlite/0003_teams_ssh_keys.sql"),
    },
    MigrationSource {
        version: 4,
        description: "webhooks",
        sql: include_str!("../migrations/sqlite/0004_webhooks.sql"),
    },
    MigrationSource {
        version: 5,
        description: "org hooks events",
        sql: include_str!("../migrations/sqlite/0005_org_hooks_events.sql"),
    },
    MigrationSource { version: 6, description: "ci", sql: include_str!("../migrations/sqlite/0006_ci.sql") },
    MigrationSource {
        version: 7,
        description: "ci annotations job concurrency",
        sql: include_str!("../migrations/sqlite/0007_ci_annotations_job_concurrency.sql"),
    },
    MigrationSource {
        version: 8,
        description: "secrets variables",
        sql: include_str!("../migrations/sqlite/0008_secrets_variables.sql"),
    },
    MigrationSource {
        version: 9,
        description: "webhook secrets sealed",
        sql: include_str!("../migrations/sqlite/0009_webhook_secrets_sealed.sql"),
    },
    MigrationSource {
        version: 10,
        description: "ci usage retention",
        sql: include_str!("../migrations/sqlite/0010_ci_usage_retention.sql"),
    },
    MigrationSource {
        version: 11,
        description: "ci tenant limits",
        sql: include_str!("../migrations/sqlite/0011_ci_tenant_limits.sql"),
    },
    MigrationSource {
        version: 12,
        description: "ci minute budget",
        sql: include_str!("../migrations/sqlite/0012_ci_minute_budget.sql"),
    },
    MigrationSource {
        version: 13,
        description: "ci queued at",
        sql: include_str!("../migrations/sqlite/0013_ci_queued_at.sql"),
    },
    MigrationSource {
        version: 14,
        description: "ci repo settings",
        sql: include_str!("../migrations/sqlite/0014_ci_repo_settings.sql"),
    },
    MigrationSource {
        version: 15,
        description: "ci artifacts caches",
        sql: include_str!("../migrations/sqlite/0015_ci_artifacts_caches.sql"),
    },
    MigrationSource {
        version: 16,
        description: "account suspension",
        sql: include_str!("../migrations/sqlite/0016_account_suspension.sql"),
    },
    MigrationSource {
        version: 17,
        description: "ci job actions",
        sql: include_str!("../migrations/sqlite/0017_ci_job_actions.sql"),
    },
    MigrationSource {
        version: 18,
        description: "ci actions shared",
        sql: include_str!("../migrations/sqlite/0018_ci_actions_shared.sql"),
    },
    MigrationSource {
        version: 19,
        description: "repo description",
        sql: include_str!("../migrations/sqlite/0019_repo_description.sql"),
    },
    MigrationSource { version: 20, description: "ci logs", sql: include_str!("../migrations/sqlite/0020_ci_logs.sql") },
    MigrationSource {
        version: 21,
        description: "login failures",
        sql: include_str!("../migrations/sqlite/0021_login_failures.sql"),
    },
    MigrationSource {
        version: 22,
        description: "rate windows",
        sql: include_str!("../migrations/sqlite/0022_rate_windows.sql"),
    },
    MigrationSource { version: 23, description: "pulls", sql: include_str!("../migrations/sqlite/0023_pulls.sql") },
    MigrationSource {
        version: 24,
        description: "protection reviews",
        sql: include_str!("../migrations/sqlite/0024_protection_reviews.sql"),
    },
    MigrationSource {
        version: 25,
        description: "pull events",
        sql: include_str!("../migrations/sqlite/0025_pull_events.sql"),
    },
    MigrationSource { version: 26, description: "forks", sql: include_str!("../migrations/sqlite/0026_forks.sql") },
    MigrationSource {
        version: 27,
        description: "pull comments",
        sql: include_str!("../migrations/sqlite/0027_pull_comments.sql"),
    },
    MigrationSource {
        version: 28,
        description: "org default protection",
        sql: include_str!("../migrations/sqlite/0028_org_default_protection.sql"),
    },
    MigrationSource {
        version: 29,
        description: "merge options",
        sql: include_str!("../migrations/sqlite/0029_merge_options.sql"),
    },
];
const POSTGRES_MIGRATIONS: &[MigrationSource] = &[
    MigrationSource { version: 1, description: "init", sql: include_str!("../migrations/postgres/0001_init.sql") },
    MigrationSource {
        version: 2,
        description: "rbac audit",
        sql: include_str!("../migrations/postgres/0002_rbac_audit.sql"),
    },
    MigrationSource {
        version: 3,
        description: "teams ssh keys",
        sql: include_str!("../migrations/postgres/0003_teams_ssh_keys.sql"),
    },
    MigrationSource {
        version: 4,
        description: "webhooks",
        sql: include_str!("../migrations/postgres/0004_webhooks.sql"),
    },
    MigrationSource {
        version: 5,
        description: "org hooks events",
        sql: include_str!("../migrations/postgres/0005_org_hooks_events.sql"),
    },
    MigrationSource { version: 6, description: "ci", sql: include_str!("../migrations/postgres/0006_ci.sql") },
    MigrationSource {
        version: 7,
        description: "ci annotations job concurrency",
        sql: include_str!("../migrations/postgres/0007_ci_annotations_job_concurrency.sql"),
    },
    MigrationSource {
        version: 8,
        description: "secrets variables",
        sql: include_str!("../migrations/postgres/0008_secrets_variables.sql"),
    },
    MigrationSource {
        version: 9,
        description: "webhook secrets sealed",
        sql: include_str!("../migrations/postgres/0009_webhook_secrets_sealed.sql"),
    },
    MigrationSource {
        version: 10,
        description: "ci usage retention",
        sql: include_str!("../migrations/postgres/0010_ci_usage_retention.sql"),
    },
    MigrationSource {
        version: 11,
        description: "ci tenant limits",
        sql: include_str!("../migrations/postgres/0011_ci_tenant_limits.sql"),
    },
    MigrationSource {
        version: 12,
        description: "ci minute budget",
        sql: include_str!("../migrations/postgres/0012_ci_minute_budget.sql"),
    },
    MigrationSource {
        version: 13,
        description: "ci queued at",
        sql: include_str!("../migrations/postgres/0013_ci_queued_at.sql"),
    },
    MigrationSource {
        version: 14,
        description: "ci repo settings",
        sql: include_str!("../migrations/postgres/0014_ci_repo_settings.sql"),
    },
    MigrationSource {
        version: 15,
        description: "ci artifacts caches",
        sql: include_str!("../migrations/postgres/0015_ci_artifacts_caches.sql"),
    },
    MigrationSource {
        version: 16,
        description: "account suspension",
        sql: include_str!("../migrations/postgres/0016_account_suspension.sql"),
    },
    MigrationSource {
        version: 17,
        description: "ci job actions",
        sql: include_str!("../migrations/postgres/0017_ci_job_actions.sql"),
    },
    MigrationSource {
        version: 18,
        description: "ci actions shared",
        sql: include_str!("../migrations/postgres/0018_ci_actions_shared.sql"),
    },
    MigrationSource {
        version: 19,
        description: "repo description",
        sql: include_str!("../migrations/postgres/0019_repo_description.sql"),
    },
    MigrationSource {
        version: 20,
        description: "ci logs",
        sql: include_str!("../migrations/postgres/0020_ci_logs.sql"),
    },
    MigrationSource {
        version: 21,
        description: "login failures",
        sql: include_str!("../migrations/postgres/0021_login_failures.sql"),
    },
    MigrationSource {
        version: 22,
        description: "rate windows",
        sql: include_str!("../migrations/postgres/0022_rate_windows.sql"),
    },
    MigrationSource { version: 23, description: "pulls", sql: include_str!("../migrations/postgres/0023_pulls.sql") },
    MigrationSource {
        version: 24,
        description: "protection reviews",
        sql: include_str!("../migrations/postgres/0024_protection_reviews.sql"),
    },
    MigrationSource {
        version: 25,
        description: "pull events",
        sql: include_str!("../migrations/postgres/0025_pull_events.sql"),
    },
    MigrationSource { version: 26, description: "forks", sql: include_str!("../migrations/postgres/0026_forks.sql") },
    MigrationSource {
        version: 27,
        description: "pull comments",
        sql: include_str!("../migrations/postgres/0027_pull_comments.sql"),
    },
    MigrationSource {
        version: 28,
        description: "org default protection",
        sql: include_str!("../migrations/postgres/0028_org_default_protection.sql"),
    },
    MigrationSource {
        version: 29,
        description: "merge options",
        sql: include_str!("../migrations/postgres/0029_merge_options.sql"),
    },
];

fn migrator(sources: &[MigrationSource]) -> Migrator {
    Migrator::with_migrations(
        sources
            .iter()
            .map(|m| {
                Migration::new(m.version, m.description.into(), MigrationType::Simple, m.sql.into_sql_str(), false)
            })
            .collect(),
    )
}

/// What a listener hears ([`Db::spawn_listener`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// Listening (again): notifications sent before may have been missed.
    Listening,
    /// A notification's payload.
    Notified(String),
}

/// Tells the servers listening on `channel` of this database and schema ([`Db::spawn_listener`])
/// `payload`, on `conn` (delivered when its transaction commits, if it is in one).
pub async fn notify(conn: &mut sqlx::PgConnection, channel: &str, payload: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, current_schema() || ' ' || $2)")
        .bind(channel)
        .bind(payload)
        .execute(conn)
        .await
        .map(|_| ())
}

/// The `application_name` of [`Db::spawn_listener`]'s connections, which tells them apart in
/// `pg_stat_activity` (an operator, or the failure suite, may end them to see them come back).
pub const LISTENER_APPLICATION: &str = "gitstratum listener";

/// Advisory lock class of [`Db::try_singleton`]'s locks (the first of the two `int4` keys).
const SINGLETON_CLASS: i32 = 0x6773_0010;

/// Held while this server does singleton work ([`Db::try_singleton`]).
pub struct Singleton(Option<(PoolConnection<Postgres>, i32)>);

impl Drop for Singleton {
    fn drop(&mut self) {
        if let Some((mut conn, key)) = self.0.take() {
            // Dropped inside the runtime (the consumers' ticks): unlock there; a connection whose
            // unlock failed is closed, which releases its locks.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1, $2)")
                        .bind(SINGLETON_CLASS)
                        .bind(key)
                        .execute(&mut *conn)
                        .await;
                    if unlocked.is_err() {
                        let _ = conn.detach();
                    }
                });
            } else {
                let _ = conn.detach();
            }
        }
    }
}

/// A pooled connection, returned to the pool on drop.
pub enum PooledConn {
    Sqlite(PoolConnection<Sqlite>),
    Postgres(PoolConnection<Postgres>),
}

impl PooledConn {
    pub fn conn(&mut self) -> Conn<'_> {
        match self {
            PooledConn::Sqlite(c) => Conn::Sqlite(c),
            PooledConn::Postgres(c) => Conn::Postgres(c),
        }
    }
}

/// An open transaction.
pub enum Tx {
    Sqlite(sqlx::Transaction<'static, Sqlite>),
    Postgres(sqlx::Transaction<'static, Postgres>),
}

impl Tx {
    pub fn conn(&mut self) -> Conn<'_> {
        match self {
            Tx::Sqlite(tx) => Conn::Sqlite(tx),
            Tx::Postgres(tx) => Conn::Postgres(tx),
        }
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await,
            Tx::Postgres(tx) => tx.commit().await,
        }
    }
}

/// A borrowed connection (from a pool or inside a transaction) that runs sea-query statements.
pub enum Conn<'c> {
    Sqlite(&'c mut SqliteConnection),
    Postgres(&'c mut PgConnection),
}

impl Conn<'_> {
    /// Runs a statement; returns the number of rows it affected.
    pub async fn execute(&mut self, stmt: &impl QueryStatementWriter) -> Result<u64, sqlx::Error> {
        match self {
            Conn::Sqlite(c) => {
                let (sql, values) = stmt.build(SqliteQueryBuilder);
                let args = bind::<Sqlite>(values)?;
                Ok(sqlx::query_with(AssertSqlSafe(sql), args).execute(&mut **c).await?.rows_affected())
            }
            Conn::Postgres(c) => {
                let (sql, values) = stmt.build(PostgresQueryBuilder);
                let args = bind::<Postgres>(values)?;
                Ok(sqlx::query_with(AssertSqlSafe(sql), args).execute(&mut **c).await?.rows_affected())
            }
        }
    }

    /// Runs fixed SQL that takes no parameters (valid on both dialects).
    pub async fn execute_raw(&mut self, sql: &'static str) -> Result<u64, sqlx::Error> {
        match self {
            Conn::Sqlite(c) => Ok(sqlx::query(sql).execute(&mut **c).await?.rows_affected()),
            Conn::Postgres(c) => Ok(sqlx::query(sql).execute(&mut **c).await?.rows_affected()),
        }
    }

    pub async fn fetch_all<T: FromDbRow>(&mut self, stmt: &impl QueryStatementWriter) -> Result<Vec<T>, sqlx::Error> {
        let rows = match self {
            Conn::Sqlite(c) => {
                let (sql, values) = stmt.build(SqliteQueryBuilder);
                let args = bind::<Sqlite>(values)?;
                let rows = sqlx::query_with(AssertSqlSafe(sql), args).fetch_all(&mut **c).await?;
                rows.into_iter().map(DbRow::Sqlite).collect::<Vec<_>>()
            }
            Conn::Postgres(c) => {
                let (sql, values) = stmt.build(PostgresQueryBuilder);
                let args = bind::<Postgres>(values)?;
                let rows = sqlx::query_with(AssertSqlSafe(sql), args).fetch_all(&mut **c).await?;
                rows.into_iter().map(DbRow::Postgres).collect::<Vec<_>>()
            }
        };
        rows.iter().map(T::from_row).collect()
    }

    pub async fn fetch_optional<T: FromDbRow>(
        &mut self,
        stmt: &impl QueryStatementWriter,
    ) -> Result<Option<T>, sqlx::Error> {
        let row = match self {
            Conn::Sqlite(c) => {
                let (sql, values) = stmt.build(SqliteQueryBuilder);
                let args = bind::<Sqlite>(values)?;
                sqlx::query_with(AssertSqlSafe(sql), args).fetch_optional(&mut **c).await?.map(DbRow::Sqlite)
            }
            Conn::Postgres(c) => {
                let (sql, values) = stmt.build(PostgresQueryBuilder);
                let args = bind::<Postgres>(values)?;
                sqlx::query_with(AssertSqlSafe(sql), args).fetch_optional(&mut **c).await?.map(DbRow::Postgres)
            }
        };
        row.as_ref().map(T::from_row).transpose()
    }

    pub async fn fetch_one<T: FromDbRow>(&mut self, stmt: &impl QueryStatementWriter) -> Result<T, sqlx::Error> {
        self.fetch_optional(stmt).await?.ok_or(sqlx::Error::RowNotFound)
    }
}

/// A result row from either backend.
pub enum DbRow {
    Sqlite(SqliteRow),
    Postgres(PgRow),
}

impl DbRow {
    /// Decodes a column by name; `T` must decode on both backends.
    pub fn get<T>(&self, column: &str) -> Result<T, sqlx::Error>
    where
        T: for<'r> Decode<'r, Sqlite> + Type<Sqlite> + for<'r> Decode<'r, Postgres> + Type<Postgres>,
    {
        match self {
            DbRow::Sqlite(row) => row.try_get(column),
            DbRow::Postgres(row) => row.try_get(column),
        }
    }
}

/// Maps a row to a value; written once for both backends through [`DbRow::get`].
pub trait FromDbRow: Sized {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error>;
}

impl FromDbRow for i64 {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        match row {
            DbRow::Sqlite(row) => row.try_get(0),
            DbRow::Postgres(row) => row.try_get(0),
        }
    }
}

impl FromDbRow for String {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        match row {
            DbRow::Sqlite(row) => row.try_get(0),
            DbRow::Postgres(row) => row.try_get(0),
        }
    }
}

/// Binds sea-query's values as sqlx arguments. Integers widen to `i64` (every id and time column
/// is `BIGINT`), so one statement binds the same way on both backends.
fn bind<DB: Database>(values: Values) -> Result<DB::Arguments, sqlx::Error>
where
    for<'a> Option<bool>: Encode<'a, DB> + Type<DB>,
    for<'a> Option<i64>: Encode<'a, DB> + Type<DB>,
    for<'a> Option<f64>: Encode<'a, DB> + Type<DB>,
    for<'a> Option<String>: Encode<'a, DB> + Type<DB>,
    for<'a> Option<Vec<u8>>: Encode<'a, DB> + Type<DB>,
{
    let mut args = DB::Arguments::default();
    for value in values {
        let added = match value {
            Value::Bool(v) => args.add(v),
            Value::TinyInt(v) => args.add(v.map(i64::from)),
            Value::SmallInt(v) => args.add(v.map(i64::from)),
            Value::Int(v) => args.add(v.map(i64::from)),
            Value::BigInt(v) => args.add(v),
            Value::TinyUnsigned(v) => args.add(v.map(i64::from)),
            Value::SmallUnsigned(v) => args.add(v.map(i64::from)),
            Value::Unsigned(v) => args.add(v.map(i64::from)),
            Value::BigUnsigned(v) => match v.map(i64::try_from).transpose() {
                Ok(v) => args.add(v),
                Err(e) => Err(e.into()),
            },
            Value::Float(v) => args.add(v.map(f64::from)),
            Value::Double(v) => args.add(v),
            Value::String(v) => args.add(v),
            Value::Char(v) => args.add(v.map(String::from)),
            Value::Bytes(v) => args.add(v),
            other => Err(format!("unsupported SQL value {other:?}").into()),
        };
        added.map_err(sqlx::Error::Encode)?;
    }
    Ok(args)
}

/// True when the error is a unique-constraint violation (a name already taken, say).
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    err.as_database_error().is_some_and(|e| e.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_passwords_only() {
        for (url, expected) in [
            ("postgres://u:pw@h:5432/db", "postgres://u:***@h:5432/db"),
            ("postgres://u@h/db", "postgres://u@h/db"),
            ("postgres://h/db", "postgres://h/db"),
            ("postgres://u:p@ss@h/db", "postgres://u:***@h/db"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redact_url(url), expected);
        }
    }
}
