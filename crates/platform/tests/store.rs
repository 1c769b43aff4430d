//! The platform data-access suite. Every case runs on SQLite and on PostgreSQL.
//!
//! PostgreSQL comes from `GITSTRATUM_TEST_POSTGRES_URL` (the test script sets it and starts the
//! server); each test gets its own schema. Without the variable the PostgreSQL half is skipped with
//! a note, unless `CI` is set, where a missing database is a failure.

use std::sync::atomic::{AtomicU64, Ordering};

use gitstratum_core::Timestamp;
use gitstratum_platform::{DbTarget, Error, NewToken, PlatformStore, Scope, Scopes};

const T0: Timestamp = Timestamp(1_700_000_000_000);

struct Harness {
    store: PlatformStore,
    _dir: Option<tempfile::TempDir>,
    /// The PostgreSQL schema to drop once the case has passed. A failed case leaves its schema
    /// for inspection; `scripts/test.sh` sweeps those older than an hour.
    pg_schema: Option<String>,
}

impl Harness {
    async fn sqlite() -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        let target = DbTarget::Sqlite { path: dir.path().join("platform.db") };
        let store = PlatformStore::open(&target).await.expect("open sqlite");
        // Opening again must find the schema current and change nothing.
        PlatformStore::open(&target).await.expect("re-open sqlite");
        Harness { store, _dir: Some(dir), pg_schema: None }
    }

    async fn postgres() -> Option<Harness> {
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
        Some(Harness { store, _dir: None, pg_schema: Some(schema) })
    }

    async fn passed(self) {
        if let (Some(schema), gitstratum_platform::Db::Postgres(pool)) = (&self.pg_schema, self.store.db()) {
            let drop = format!("DROP SCHEMA {schema} CASCADE");
            sqlx::query(sqlx::AssertSqlSafe(drop)).execute(pool).await.expect("drop test schema");
        }
        self.store.close().await;
    }
}

macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $case() {
                let h = super::Harness::sqlite().await;
                super::$case(&h.store).await;
                h.passed().await;
            })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $case() {
                let Some(h) = super::Harness::postgres().await else { return };
                super::$case(&h.store).await;
                h.passed().await;
            })*
        }
    };
}

suite!(
    bootstrap_creates_admin_once,
    bootstrap_rolls_back_when_persist_fails,
    tokens_authenticate_until_expiry,
    users_are_unique_case_insensitively,
    repositories_crud,
);

async fn bootstrap_creates_admin_once(store: &PlatformStore) {
    let mut persisted = None;
    let token = store
        .bootstrap_admin(T0, |t| {
            persisted = Some(t.clone());
            Ok(())
        })
        .await
        .expect("bootstrap")
        .expect("first bootstrap creates the admin");
    assert_eq!(persisted.as_ref(), Some(&token));
    let principal = store.authenticate(token.expose(), T0).await.expect("auth").expect("token works");
    assert_eq!(principal.account.name, "admin");
    assert!(principal.is_site_admin());
    assert!(store.bootstrap_admin(T0, |_| panic!("must not persist twice")).await.expect("second").is_none());
}

async fn bootstrap_rolls_back_when_persist_fails(store: &PlatformStore) {
    let err = store.bootstrap_admin(T0, |_| Err(std::io::Error::other("disk full"))).await.expect_err("persist fails");
    assert!(matches!(err, Error::Persist(_)), "{err:?}");
    assert!(store.find_account("admin").await.expect("query").is_none(), "rolled back");
    assert!(store.bootstrap_admin(T0, |_| Ok(())).await.expect("retry").is_some());
}

async fn tokens_authenticate_until_expiry(store: &PlatformStore) {
    let user = store.create_user("octo", false, T0).await.expect("user");
    let new = NewToken {
        name: "ci".into(),
        scopes: Scopes::new([Scope::RepoRead]),
        expires_at: Some(Timestamp(T0.0 + 1000)),
    };
    let (info, secret) = store.create_token(user.id, &new, T0).await.expect("token");
    assert_eq!(info.scopes, Scopes::new([Scope::RepoRead]));

    let principal = store.authenticate(secret.expose(), T0).await.expect("auth").expect("valid");
    assert_eq!(principal.account, user);
    assert_eq!(principal.token_id, info.id);
    assert!(principal.scopes.allows(Scope::RepoRead) && !principal.scopes.allows(Scope::RepoWrite));
    assert!(!principal.is_site_admin());

    let mut tampered = secret.expose().to_owned();
    tampered.pop();
    tampered.push('!');
    assert!(store.authenticate(&tampered, T0).await.expect("auth").is_none());
    assert!(store.authenticate("not-a-token", T0).await.expect("auth").is_none());
    assert!(store.authenticate("", T0).await.expect("auth").is_none());
    assert!(store.authenticate(secret.expose(), Timestamp(T0.0 + 1000)).await.expect("auth").is_none(), "expired");
}

async fn users_are_unique_case_insensitively(store: &PlatformStore) {
    store.create_user("Octo", false, T0).await.expect("user");
    let err = store.create_user("octo", false, T0).await.expect_err("duplicate");
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    let err = store.create_user("bad_name", false, T0).await.expect_err("invalid");
    assert!(matches!(err, Error::InvalidName { field: "username", .. }), "{err:?}");
    assert_eq!(store.find_account("OCTO").await.expect("find").map(|a| a.name), Some("Octo".to_owned()));
}

async fn repositories_crud(store: &PlatformStore) {
    let owner = store.create_user("octo", false, T0).await.expect("user");
    let other = store.create_user("other", false, T0).await.expect("user");
    let repo = store.create_repo(&owner, "Hello-World", true, T0).await.expect("create");
    assert_eq!((repo.owner.as_str(), repo.name.as_str(), repo.private), ("octo", "Hello-World", true));
    assert_eq!(repo.default_branch, "main");

    let found = store.get_repo("OCTO", "hello-world").await.expect("get").expect("found");
    assert_eq!(found, repo);

    let err = store.create_repo(&owner, "hello-WORLD", false, T0).await.expect_err("duplicate");
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    // The same name under another owner is fine.
    store.create_repo(&other, "Hello-World", false, T0).await.expect("other owner");
    let err = store.create_repo(&owner, "x.git", false, T0).await.expect_err("invalid");
    assert!(matches!(err, Error::InvalidName { field: "name", .. }), "{err:?}");

    store.create_repo(&owner, "alpha", false, T0).await.expect("create");
    let names: Vec<_> = store.list_repos(owner.id).await.expect("list").into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["alpha", "Hello-World"]);

    assert!(store.delete_repo(repo.id).await.expect("delete"));
    assert!(!store.delete_repo(repo.id).await.expect("delete again"));
    assert!(store.get_repo("octo", "Hello-World").await.expect("get").is_none());
}
