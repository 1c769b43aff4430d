//! Cluster mode end to end: three frontends (`serve` in this process, each its own data
//! directory) on one PostgreSQL schema and one three-node Garage cluster, driven by the real `git`
//! client.

mod common;

use std::path::Path;

use common::{Git, metrics_handle};
use gitstratum_ci::testing::{Garage, TestPg};
use gitstratum_server::{Config, ConfigLayer, Server};
use serde_json::json;
use tokio::sync::oneshot;

/// A frontend: its URL, its data directory, and how to stop it.
struct Frontend {
    base: String,
    data_dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), gitstratum_server::Error>>,
}

impl Frontend {
    async fn stop(mut self) -> tempfile::TempDir {
        let _ = self.stop.take().expect("running").send(());
        self.task.await.expect("join").expect("clean shutdown");
        self.data_dir
    }
}

fn cluster_config(pg: &TestPg, garage: &Garage) -> ConfigLayer {
    ConfigLayer {
        database_url: Some(format!("{}?options%5Bsearch_path%5D={}", pg.url, pg.schema)),
        secrets_key: Some("ab".repeat(32)),
        cluster: Some("true".into()),
        embedded_runner: Some("false".into()),
        // Compaction looks every second, so it runs among the pushes below.
        git_maintenance_secs: Some("1".into()),
        ..common::object_storage_layer(&garage.config)
    }
}

/// Starts a frontend on `data_dir` (a fresh one when `None`); returns it with the first admin's
/// token if it was the one that created it.
async fn frontend(config: &ConfigLayer, data_dir: Option<tempfile::TempDir>) -> (Frontend, Option<String>) {
    let data_dir = data_dir.unwrap_or_else(|| tempfile::tempdir().expect("temp dir"));
    let flags = ConfigLayer { data_dir: Some(data_dir.path().to_owned()), ..ConfigLayer::default() };
    let config = Config::from_layers(config.clone(), ConfigLayer::default(), flags).expect("config");
    let server = Server::open(config, metrics_handle()).await.expect("open");
    let token = server.initial_admin_token.as_ref().map(|t| t.expose().to_owned());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(listener, async move {
        let _ = rx.await;
    }));
    (Frontend { base, data_dir, stop: Some(tx), task }, token)
}

/// A cluster of a test's own: its database schema, its object store, its settings (`adjust`ed),
/// and `n` frontends, the first of which created the admin (the others found it) and a
/// repository `admin/app`.
struct Cluster {
    pg: TestPg,
    garage: Garage,
    config: ConfigLayer,
    token: String,
    http: reqwest::Client,
}

async fn cluster(
    name: &str,
    n: usize,
    adjust: impl FnOnce(ConfigLayer) -> ConfigLayer,
) -> Option<(Cluster, Vec<Frontend>)> {
    let pg = TestPg::new()?;
    let garage = Garage::start(name)?;
    drop(pg.refs()); // creates the schema
    let config = adjust(cluster_config(&pg, &garage));
    let (first, token) = frontend(&config, None).await;
    let token = token.expect("the first frontend creates the admin");
    let mut frontends = vec![first];
    for _ in 1..n {
        let (next, none) = frontend(&config, None).await;
        assert!(none.is_none(), "one installation, one first admin");
        frontends.push(next);
    }
    let http = gitstratum_server::http::client().expect("client");
    let created = http
        .post(format!("{}/api/v1/repos", frontends[n - 1].base))
        .bearer_auth(&token)
        .json(&json!({"name": "app"}))
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), 201);
    Some((Cluster { pg, garage, config, token, http }, frontends))
}

impl Cluster {
    /// A GET of the API as the admin, its JSON.
    async fn get(&self, url: &str) -> serde_json::Value {
        self.http.get(url).bearer_auth(&self.token).send().await.expect("request").json().await.expect("json")
    }

    async fn stop(self, frontends: Vec<Frontend>) {
        for f in frontends {
            f.stop().await;
        }
        self.pg.passed();
    }
}

fn remote(f: &Frontend, token: &str) -> String {
    format!("http://x:{token}@{}/admin/app.git", f.base.trim_start_matches("http://"))
}

async fn ls_remote(git: &Git, dir: &Path, url: &str) -> String {
    git.ok(dir, &["ls-remote", url]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_frontends_serve_one_repository() {
    let Some((c, frontends)) = cluster("frontends", 3, |config| config).await else { return };
    let [one, two, three]: [Frontend; 3] = frontends.try_into().unwrap_or_else(|_| unreachable!());
    let (token, http, config) = (c.token.clone(), c.http.clone(), c.config.clone());

    // Failed logins count in the shared database: five spread over the frontends lock the
    // account on all of them.
    for (i, f) in [&one, &two, &three, &one, &two].into_iter().enumerate() {
        let resp = http
            .post(format!("{}/api/v1/session", f.base))
            .json(&json!({"username": "admin", "password": format!("guess-{i}")}))
            .send()
            .await
            .expect("login");
        assert_eq!(resp.status(), 401);
    }
    let locked = http
        .post(format!("{}/api/v1/session", three.base))
        .json(&json!({"username": "admin", "password": "guess-5"}))
        .send()
        .await
        .expect("login");
    assert_eq!(locked.status(), 429, "locked out on every frontend");

    // Push through one; clone through two and three.
    let tmp = tempfile::tempdir().expect("temp dir");
    let git = Git::new(tmp.path());
    let src = tmp.path().join("src");
    git.repo_with_commits(&src, 12).await;
    std::fs::create_dir_all(src.join(".github/workflows")).expect("workflows");
    std::fs::write(
        src.join(".github/workflows/ci.yml"),
        "on:\n  push:\n    branches: [main]\njobs:\n  build:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo hello from the cluster\n",
    )
    .expect("workflow");
    git.ok(&src, &["add", "-A"]).await;
    git.ok(&src, &["commit", "-q", "-m", "ci"]).await;
    // A runner polls frontend two (its jobs are queued by whichever frontend ingests the push).
    let runner_token: serde_json::Value = http
        .post(format!("{}/api/v1/tokens", one.base))
        .bearer_auth(&token)
        .json(&json!({"name": "runner", "scopes": ["ci:runner"]}))
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    let (stop_runner, runner_stopped) = oneshot::channel::<()>();
    let runner = tokio::spawn(gitstratum_runner::run(
        gitstratum_runner::RunnerConfig {
            server: two.base.clone(),
            token: runner_token["token"].as_str().expect("token").to_owned(),
            name: "polls-two".into(),
            labels: gitstratum_runner::DEFAULT_LABELS.map(str::to_owned).to_vec(),
            work_dir: tmp.path().join("runner"),
            network: gitstratum_runner::Network::default(),
            limits: gitstratum_runner::Limits::default(),
            capacity: 1,
            on_registered: None,
        },
        http.clone(),
        runner_stopped,
    ));
    git.ok(&src, &["push", "-q", &remote(&one, &token), "main"]).await;

    // Every frontend's ingestor reads the same ref-change log: the push starts exactly one run,
    // seen from any frontend.
    let mut seen = 0;
    for _ in 0..100 {
        let page: serde_json::Value = c.get(&format!("{}/api/v1/repos/admin/app/runs", three.base)).await;
        seen = page["runs"].as_array().map_or(0, Vec::len);
        if seen > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(seen, 1, "the push started a run");

    // Its job, run by the runner on frontend two, is followed live on frontend three (its log
    // lives in the shared database): the step's output, then the end.
    let run: serde_json::Value = c.get(&format!("{}/api/v1/repos/admin/app/runs", three.base)).await;
    let run_id = run["runs"][0]["id"].as_i64().expect("run id");
    let detail: serde_json::Value = c.get(&format!("{}/api/v1/runs/{run_id}", three.base)).await;
    let job_id = detail["jobs"][0]["id"].as_i64().expect("job id");
    let stream = http
        .get(format!("{}/api/v1/jobs/{job_id}/logs/stream", three.base))
        .bearer_auth(&token)
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), 200);
    let text = tokio::time::timeout(std::time::Duration::from_secs(60), stream.text())
        .await
        .expect("the job ends")
        .expect("body");
    assert!(text.contains("hello from the cluster"), "{text}");
    assert!(text.contains("event: end\n") && text.contains("data: success"), "{text}");
    let _ = stop_runner.send(());
    let _ = runner.await;
    for (i, f) in [&two, &three].into_iter().enumerate() {
        let dst = tmp.path().join(format!("clone{i}"));
        git.ok(tmp.path(), &["clone", "-q", &remote(f, &token), dst.to_str().expect("utf-8")]).await;
        git.fsck(&dst).await;
        assert_eq!(git.ok(&dst, &["rev-parse", "HEAD"]).await, git.ok(&src, &["rev-parse", "HEAD"]).await);
    }
    let listed: Vec<String> = [&one, &two, &three].iter().map(|f| remote(f, &token)).collect();
    let first = ls_remote(&git, tmp.path(), &listed[0]).await;
    assert!(first.contains("refs/heads/main"));
    for url in &listed[1..] {
        assert_eq!(ls_remote(&git, tmp.path(), url).await, first, "every frontend shows the same refs");
    }

    // Five pushers on each frontend race on one branch, three times: first all creating it from
    // the same commit, then each building on the tip it fetched through its frontend. Exactly one
    // push wins per old value of the branch, and every acknowledged push is in its history after.
    let base_tip = git.ok(&src, &["rev-parse", "HEAD"]).await.trim().to_owned();
    let mut acknowledged: Vec<(String, String)> = Vec::new(); // (commit, the branch value it replaced)
    for round in 0..3 {
        let mut pushers = Vec::new();
        for (f, url) in listed.iter().enumerate() {
            for p in 0..5 {
                let (git, url, dir) = (git.clone(), url.clone(), tmp.path().join(format!("pusher{f}{p}")));
                let src = src.clone();
                pushers.push(tokio::spawn(async move {
                    if round == 0 {
                        let (from, to) = (src.to_str().expect("utf-8"), dir.to_str().expect("utf-8"));
                        git.ok(src.parent().expect("parent"), &["clone", "-q", from, to]).await;
                    } else {
                        git.ok(&dir, &["fetch", "-q", &url, "race"]).await;
                        git.ok(&dir, &["reset", "-q", "--hard", "FETCH_HEAD"]).await;
                    }
                    let old = git.ok(&dir, &["rev-parse", "HEAD"]).await.trim().to_owned();
                    std::fs::write(dir.join(format!("p{f}{p}.txt")), format!("round {round}\n")).expect("write");
                    git.ok(&dir, &["add", "-A"]).await;
                    git.ok(&dir, &["commit", "-q", "-m", &format!("pusher {f} {p} round {round}")]).await;
                    let mine = git.ok(&dir, &["rev-parse", "HEAD"]).await.trim().to_owned();
                    let out = git.run(&dir, &["push", "-q", &url, "HEAD:refs/heads/race"]).await;
                    (out.status.success(), mine, old)
                }));
            }
        }
        let mut won = 0;
        for p in pushers {
            let (ok, mine, old) = p.await.expect("pusher");
            if ok {
                won += 1;
                acknowledged.push((mine, old));
            }
        }
        assert!(won >= 1, "round {round}: some push wins");
        if round == 0 {
            assert_eq!(won, 1, "all create the branch from one commit: exactly one creation wins");
        }
    }
    let olds: std::collections::HashSet<&str> = acknowledged.iter().map(|(_, old)| old.as_str()).collect();
    assert_eq!(olds.len(), acknowledged.len(), "one winner per old value of the branch: {acknowledged:?}");
    let check = tmp.path().join("check");
    git.ok(tmp.path(), &["clone", "-q", &listed[2], check.to_str().expect("utf-8")]).await;
    git.ok(&check, &["fetch", "-q", "origin", "race"]).await;
    let race = git.ok(&check, &["rev-parse", "FETCH_HEAD"]).await.trim().to_owned();
    git.ok(&check, &["merge-base", "--is-ancestor", &base_tip, &race]).await;
    for (commit, _) in &acknowledged {
        git.ok(&check, &["merge-base", "--is-ancestor", commit, &race]).await;
    }
    git.fsck(&check).await;

    // Still one run for the push on main after every ingestor has had its turns (the race
    // branch matches no workflow).
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let page: serde_json::Value = c.get(&format!("{}/api/v1/repos/admin/app/runs", one.base)).await;
    assert_eq!(page["runs"].as_array().map(Vec::len), Some(1), "exactly one run: {page}");

    // The pushes (every racer's pack is listed, winner or not) were compacted meanwhile.
    let refs = c.pg.refs();
    let mut packs = usize::MAX;
    for _ in 0..100 {
        packs = refs.packs_after(gitstratum_store::RepoId(1), 0).expect("packs").len();
        if packs < 8 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(packs < 8, "the repository's packs were compacted: {packs} listed");
    drop(refs);

    // A frontend whose cache is gone (a new machine) serves the repository from object storage.
    let dir = three.stop().await;
    std::fs::remove_dir_all(dir.path().join("git")).expect("drop the cache");
    let (three, _) = frontend(&config, Some(dir)).await;
    let again = tmp.path().join("again");
    git.ok(tmp.path(), &["clone", "-q", &remote(&three, &token), again.to_str().expect("utf-8")]).await;
    git.fsck(&again).await;
    assert_eq!(
        ls_remote(&git, tmp.path(), &remote(&three, &token)).await,
        ls_remote(&git, tmp.path(), &listed[0]).await
    );

    c.stop(vec![one, two, three]).await;
}

/// One of the three object-storage nodes dies during a stream of pushes and clones, then comes
/// back: no push or clone fails, and what was pushed meanwhile is served afterwards. (Node 1
/// serves the S3 endpoint the frontends use; in production a load balancer spreads over all.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_an_object_node_fails_no_push_or_clone() {
    let Some((c, frontends)) = cluster("lossy", 2, |config| config).await else { return };
    let [one, two]: [Frontend; 2] = frontends.try_into().unwrap_or_else(|_| unreachable!());
    let (token, config, garage) = (c.token.clone(), c.config.clone(), &c.garage);
    let tmp = tempfile::tempdir().expect("temp dir");
    let git = Git::new(tmp.path());
    let src = tmp.path().join("src");
    git.repo_with_commits(&src, 3).await;
    git.ok(&src, &["push", "-q", &remote(&one, &token), "main"]).await;
    for round in 0..6 {
        if round == 2 {
            garage.kill_node(3);
        }
        if round == 4 {
            garage.start_node(3);
        }
        std::fs::write(src.join("round.txt"), format!("{round}\n")).expect("write");
        git.ok(&src, &["add", "-A"]).await;
        git.ok(&src, &["commit", "-qm", &format!("round {round}")]).await;
        git.ok(&src, &["push", "-q", &remote(&one, &token), "main"]).await;
        // A frontend that never saw this repository's packs before takes them all.
        let (fresh, _) = frontend(&config, None).await;
        let dst = tmp.path().join(format!("clone{round}"));
        for f in [&two, &fresh] {
            let _ = std::fs::remove_dir_all(&dst);
            git.ok(tmp.path(), &["clone", "-q", &remote(f, &token), dst.to_str().expect("utf-8")]).await;
            git.fsck(&dst).await;
            assert_eq!(git.ok(&dst, &["rev-parse", "HEAD"]).await, git.ok(&src, &["rev-parse", "HEAD"]).await);
        }
        fresh.stop().await;
    }
    c.stop(vec![one, two]).await;
}

/// A client's rate limit holds across the frontends: requests spread over two of them are
/// refused once the cluster's count for the minute reaches the limit, though each frontend alone
/// has seen fewer than the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limits_hold_across_frontends() {
    let limited = |config| ConfigLayer { rate_limit_per_client: Some("30".into()), ..config };
    let Some((c, frontends)) = cluster("limits", 2, limited).await else { return };
    let [one, two]: [Frontend; 2] = frontends.try_into().unwrap_or_else(|_| unreachable!());
    let (token, http) = (c.token.clone(), c.http.clone());
    let mut statuses = Vec::new();
    for i in 0..56 {
        let f = if i % 2 == 0 { &one } else { &two };
        let resp = http.get(format!("{}/api/v1/user", f.base)).bearer_auth(&token).send().await.expect("request");
        statuses.push(resp.status().as_u16());
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(statuses[..20].iter().all(|s| *s == 200), "{statuses:?}");
    // 28 requests each: under either frontend's own limit, over the cluster's.
    assert!(statuses.contains(&429), "the cluster's limit held: {statuses:?}");
    c.stop(vec![one, two]).await;
}

/// PostgreSQL fails over under a running frontend: its database is two servers of the test's own
/// (a primary committing synchronously and its replica), named in one multi-host URL. The primary
/// is killed and the replica promoted; the same frontend, not restarted, takes pushes and API
/// writes again once it has found the new primary, nothing it acknowledged before is lost, and a
/// frontend started afterwards (an empty cache) serves the same refs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn frontends_follow_the_postgres_primary_without_a_restart() {
    let Some(nodes) = gitstratum_ci::testing::PgNodes::start(2) else { return };
    let Some(garage) = Garage::start("failover") else { return };
    let config = ConfigLayer {
        database_url: Some(nodes.url.clone()),
        secrets_key: Some("ab".repeat(32)),
        cluster: Some("true".into()),
        embedded_runner: Some("false".into()),
        ..common::object_storage_layer(&garage.config)
    };
    let (one, token) = frontend(&config, None).await;
    let token = token.expect("the first frontend creates the admin");
    let http = gitstratum_server::http::client().expect("client");
    let create = |name: &'static str| {
        let (http, url, token) = (http.clone(), format!("{}/api/v1/repos", one.base), token.clone());
        async move { http.post(url).bearer_auth(token).json(&json!({"name": name})).send().await.map(|r| r.status()) }
    };
    assert_eq!(create("app").await.expect("create"), 201);

    let tmp = tempfile::tempdir().expect("temp dir");
    let git = Git::new(tmp.path());
    let src = tmp.path().join("src");
    git.repo_with_commits(&src, 5).await;
    git.ok(&src, &["push", "-q", &remote(&one, &token), "main"]).await;
    let acknowledged = git.ok(&src, &["rev-parse", "HEAD"]).await;

    let nodes = tokio::task::spawn_blocking(move || {
        nodes.kill(1);
        nodes.promote(2);
        nodes
    })
    .await
    .expect("fail over");

    // The same frontend pushes again once it has found the new primary (a deadline, not a
    // measurement).
    git.ok(&src, &["commit", "-q", "--allow-empty", "-m", "after the failover"]).await;
    let started = std::time::Instant::now();
    let mut refused = 0;
    while !git.run(&src, &["push", "-q", &remote(&one, &token), "main"]).await.status.success() {
        refused += 1;
        assert!(started.elapsed() < std::time::Duration::from_secs(60), "no push got through after the failover");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    eprintln!("pushes refused while the frontend looked for the new primary: {refused}");
    let head = git.ok(&src, &["rev-parse", "HEAD"]).await;
    assert_eq!(create("after").await.expect("create"), 201, "platform writes follow the primary too");

    // A frontend started now (its URL lists the dead primary first) serves the same refs, with
    // the push acknowledged before the failover in their history.
    let (two, none) = frontend(&config, None).await;
    assert!(none.is_none());
    let work = tmp.path().join("work");
    let clone = work.to_str().expect("utf-8 path");
    git.ok(tmp.path(), &["clone", "-q", &remote(&two, &token), clone]).await;
    git.fsck(&work).await;
    assert_eq!(git.ok(&work, &["rev-parse", "HEAD"]).await, head);
    git.ok(&work, &["merge-base", "--is-ancestor", acknowledged.trim(), "HEAD"]).await;
    assert_eq!(
        ls_remote(&git, tmp.path(), &remote(&one, &token)).await,
        ls_remote(&git, tmp.path(), &remote(&two, &token)).await
    );
    one.stop().await;
    two.stop().await;
    drop(nodes);
}
