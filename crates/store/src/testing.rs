//! Test support (feature `testing`): engines of a test's own, started and stopped by the project's
//! scripts — a Garage cluster (`scripts/garage.sh`), PostgreSQL servers to fail over
//! (`scripts/pg-nodes.sh`) — and a schema of a test's own on the test PostgreSQL server.

use std::path::Path;

use crate::blob::s3::S3Config;

/// Three Garage nodes (replication factor 3) on loopback, stopped when dropped.
pub struct Garage {
    dir: tempfile::TempDir,
    /// A client's settings, with node 1's endpoint.
    pub config: S3Config,
    /// Every node's S3 endpoint, node 1's first.
    pub endpoints: Vec<String>,
}

/// Runs `scripts/NAME WHAT DIR [ARG]`.
fn script(name: &str, what: &str, dir: &Path, arg: Option<u32>) -> std::process::Output {
    let mut command = std::process::Command::new("bash");
    command.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts").join(name)).arg(what).arg(dir);
    if let Some(arg) = arg {
        command.arg(arg.to_string());
    }
    command.output().unwrap_or_else(|e| panic!("run scripts/{name}: {e}"))
}

/// [`script`], which must succeed.
fn script_ok(name: &str, what: &str, dir: &Path, arg: Option<u32>) {
    let out = script(name, what, dir, arg);
    assert!(out.status.success(), "scripts/{name} {what}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Garage {
    /// Starts a cluster; `None` (with a message) when there is no Garage binary, which fails the
    /// test instead when `CI` is set (`scripts/test.sh` builds Garage first).
    pub fn start(prefix: &str) -> Option<Garage> {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = script("garage.sh", "up", dir.path(), None);
        if out.status.code() == Some(3) {
            let why = String::from_utf8_lossy(&out.stderr);
            assert!(std::env::var_os("CI").is_none(), "CI needs Garage: {why}");
            eprintln!("skipping what needs object storage: {why}");
            return None;
        }
        if !out.status.success() {
            // Whatever it started goes, whatever went wrong.
            script("garage.sh", "down", dir.path(), None);
            panic!("scripts/garage.sh up: {}", String::from_utf8_lossy(&out.stderr));
        }
        let info: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("garage.json")).expect("garage.json"))
                .expect("garage.json is JSON");
        let field = |k: &str| info[k].as_str().unwrap_or_default().to_owned();
        let config = S3Config {
            endpoint: field("endpoint"),
            bucket: field("bucket"),
            region: field("region"),
            access_key_id: field("access_key_id"),
            secret_access_key: field("secret_access_key"),
            prefix: prefix.to_owned(),
        };
        let endpoints = info["nodes"]
            .as_array()
            .map(|nodes| nodes.iter().filter_map(|n| n["s3"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        Some(Garage { dir, config, endpoints })
    }
}

impl Garage {
    /// SIGKILLs node `n` (1 to 3; node 1 serves the endpoint the clients use, so a test that
    /// means to keep serving kills 2 or 3).
    pub fn kill_node(&self, n: u32) {
        self.node("kill-node", n);
    }

    /// Starts node `n` again on its data, ports and identity.
    pub fn start_node(&self, n: u32) {
        self.node("start-node", n);
    }

    fn node(&self, what: &str, n: u32) {
        script_ok("garage.sh", what, self.dir.path(), Some(n));
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        script("garage.sh", "down", self.dir.path(), None);
    }
}

/// A PostgreSQL schema of a test's own on the test server (`GITSTRATUM_TEST_POSTGRES_URL`),
/// named as `scripts/test.sh` sweeps them (`gst_test_<unix seconds>_…`).
pub struct TestPg {
    pub url: String,
    pub schema: String,
}

impl TestPg {
    /// `None` (with a note) when there is no test server, which fails the test instead when
    /// `CI` is set.
    pub fn new() -> Option<TestPg> {
        let Ok(url) = std::env::var("GITSTRATUM_TEST_POSTGRES_URL") else {
            assert!(std::env::var_os("CI").is_none(), "CI is set but GITSTRATUM_TEST_POSTGRES_URL is not");
            eprintln!("note: GITSTRATUM_TEST_POSTGRES_URL is not set; skipping the PostgreSQL case");
            return None;
        };
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock");
        let schema = format!(
            "gst_test_{}_{}_{}_{}",
            now.as_secs(),
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            now.subsec_nanos()
        );
        Some(TestPg { url, schema })
    }

    /// A ref store on this schema (each call a new one, as another frontend would open).
    pub fn refs(&self) -> crate::pg::PgRefStore {
        crate::pg::PgRefStore::open(&self.url, Some(&self.schema)).expect("open the PostgreSQL ref store")
    }

    /// Drops the schema after a case that passed (a failed one keeps it for inspection). Works
    /// from async tests too: the drop runs on a thread of its own.
    pub fn passed(self) {
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&self.url).await.expect("connect");
                sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema)))
                    .execute(&mut conn)
                    .await
                    .expect("drop the test schema");
            });
        })
        .join()
        .expect("dropping the test schema");
    }
}

/// PostgreSQL servers of a test's own (`scripts/pg-nodes.sh`): node 1 a primary committing
/// synchronously, the others streaming replicas; killed when dropped.
pub struct PgNodes {
    dir: tempfile::TempDir,
    /// Every node, in order, as one multi-host URL.
    pub url: String,
}

impl PgNodes {
    /// Starts `n` nodes; `None` (with a note) when this machine has no PostgreSQL server
    /// binaries, which fails the test instead when `CI` is set.
    pub fn start(n: u32) -> Option<PgNodes> {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = script("pg-nodes.sh", "up", dir.path(), Some(n));
        if out.status.code() == Some(3) {
            let why = String::from_utf8_lossy(&out.stderr);
            assert!(std::env::var_os("CI").is_none(), "CI needs PostgreSQL's server binaries: {why}");
            eprintln!("skipping what needs PostgreSQL servers of its own: {why}");
            return None;
        }
        let nodes = PgNodes { url: String::from_utf8_lossy(&out.stdout).trim().to_owned(), dir };
        assert!(out.status.success(), "scripts/pg-nodes.sh up: {}", String::from_utf8_lossy(&out.stderr));
        Some(nodes)
    }

    /// SIGKILLs every process of node `i` (from 1).
    pub fn kill(&self, i: u32) {
        self.run("kill", i);
    }

    /// Promotes replica `i` and waits until it accepts writes.
    pub fn promote(&self, i: u32) {
        self.run("promote", i);
    }

    fn run(&self, what: &str, i: u32) {
        script_ok("pg-nodes.sh", what, self.dir.path(), Some(i));
    }
}

impl Drop for PgNodes {
    fn drop(&mut self) {
        script("pg-nodes.sh", "down", self.dir.path(), None);
    }
}
