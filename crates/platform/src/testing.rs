//! Test support (feature `testing`): a platform database for one test case, on SQLite in a
//! temporary directory or on PostgreSQL in a schema of its own, so suites of any crate run the
//! same cases on both backends.
//!
//! PostgreSQL comes from `GITSTRATUM_TEST_POSTGRES_URL` (the test script sets it and starts the
//! server). Without the variable the PostgreSQL case is skipped with a note, unless `CI` is set,
//! where a missing database is a failure.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Db, DbTarget, PlatformStore};

pub struct TestDb {
    pub store: PlatformStore,
    _dir: Option<tempfile::TempDir>,
    /// The PostgreSQL schema to drop once the case has passed. A failed case leaves its schema
    /// for inspection; `scripts/test.sh` sweeps those older than an hour.
    pg_schema: Option<String>,
    /// Where the database is, to open it again (a second server on the same database).
    pub target: DbTarget,
}

impl TestDb {
    /// A fresh SQLite database (opened twice: the second open must find the schema current).
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let target = DbTarget::Sqlite { path: dir.path().join("platform.db") };
        let store = PlatformStore::open(&target).await.expect("open sqlite");
        PlatformStore::open(&target).await.expect("re-open sqlite");
        TestDb { store, _dir: Some(dir), pg_schema: None, target }
    }

    /// A fresh schema on the test PostgreSQL server; `None` (with a note) when there is none.
    pub async fn postgres() -> Option<TestDb> {
        let Ok(url) = std::env::var("GITSTRATUM_TEST_POSTGRES_URL") else {
            assert!(std::env::var_os("CI").is_none(), "CI is set but GITSTRATUM_TEST_POSTGRES_URL is not");
            eprintln!("note: GITSTRATUM_TEST_POSTGRES_URL is not set; skipping the PostgreSQL case");
            return None;
        };
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock");
        let schema = format!(
            "gst_test_{}_{}_{}_{}",
            now.as_secs(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            now.subsec_nanos()
        );
        let target = DbTarget::Postgres { url, schema: Some(schema.clone()) };
        let store = PlatformStore::open(&target).await.expect("open postgres");
        PlatformStore::open(&target).await.expect("re-open postgres");
        Some(TestDb { store, _dir: None, pg_schema: Some(schema), target })
    }

    /// Cleans up after a case that passed.
    pub async fn passed(self) {
        if let (Some(schema), Db::Postgres(pool)) = (&self.pg_schema, self.store.db()) {
            let drop = format!("DROP SCHEMA {schema} CASCADE");
            sqlx::query(sqlx::AssertSqlSafe(drop)).execute(pool).await.expect("drop test schema");
        }
        self.store.close().await;
    }
}

/// Runs each named `async fn(&PlatformStore)` as two tests, `sqlite::name` and `postgres::name`.
#[macro_export]
macro_rules! both_backends {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $case() {
                let db = $crate::testing::TestDb::sqlite().await;
                super::$case(&db.store).await;
                db.passed().await;
            })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $case() {
                let Some(db) = $crate::testing::TestDb::postgres().await else { return };
                super::$case(&db.store).await;
                db.passed().await;
            })*
        }
    };
}
