//! The CI ingestor end to end: real `git push`es to the server start workflow runs, exactly as the
//! workflow files at the pushed commit say (branch, tag and path filters), each run with its jobs
//! (matrices expanded) and steps; invalid workflow files give failed runs with their diagnostics;
//! deleted refs start nothing; runs are read through the API with the repository's permissions.

use std::path::Path;
use std::time::Duration;

use common::{Git, Receiver, TestServer, runs_of};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

mod common;

const CI: &str = "name: CI
on:
  push:
    branches: [main]
    paths: ['src/**']
jobs:
  build:
    strategy:
      matrix:
        os: [linux, mac]
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - run: |
          make
          make install
  test:
    needs: build
    runs-on: [self-hosted, linux]
    steps:
      - name: Unit tests
        run: make test
";

const RELEASE: &str = "name: Release
run-name: Release ${{ github.ref_name }}
on:
  push:
    tags: ['v*']
jobs:
  publish:
    runs-on: ubuntu-latest
    steps:
      - run: echo publish
";

const BROKEN: &str = "on: push
jobs:
  oops:
    runs-on: ubuntu-latest
    steps:
      - run: echo ${{ nope( }}
";

fn write(dir: &Path, path: &str, text: &str) {
    let path = dir.join(path);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

async fn commit(git: &Git, dir: &Path, message: &str) {
    git.ok(dir, &["add", "-A"]).await;
    git.ok(dir, &["commit", "-q", "-m", message]).await;
}

/// The repository's runs, newest first, once there are `n` (within 20 s).
async fn runs(s: &TestServer, token: &str, n: usize) -> Vec<Value> {
    runs_of(s, token, "admin/app", n).await
}

/// The CI store of a test server's database, for what the API does not do (expiring leases or
/// logs at a chosen time).
async fn ci_store(s: &TestServer) -> gitstratum_ci::CiStore {
    let store = gitstratum_platform::PlatformStore::open(&gitstratum_platform::DbTarget::Sqlite {
        path: s.data_dir.path().join("platform.db"),
    })
    .await
    .expect("store");
    gitstratum_ci::CiStore::new(store.db().clone())
}

fn summary(runs: &[Value]) -> Vec<(String, String, String)> {
    runs.iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
            (s("path"), s("head_branch"), s("conclusion"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_start_the_runs_their_workflows_ask_for() {
    let s = TestServer::start().await;
    let token = s.admin_token.clone();
    let (status, _) = s.create_repo(Some(&token), json!({"name": "app"})).await;
    assert_eq!(status, 201);
    let tmp = tempfile::tempdir().expect("temp dir");
    let git = Git::new(tmp.path());
    let src = tmp.path().join("src");
    let url = format!("http://x:{token}@{}/admin/app.git", s.base.trim_start_matches("http://"));
    std::fs::create_dir_all(&src).expect("dir");
    git.ok(&src, &["init", "-q", "-b", "main"]).await;
    write(&src, ".github/workflows/ci.yml", CI);
    write(&src, ".github/workflows/release.yml", RELEASE);
    write(&src, ".github/workflows/broken.yml", BROKEN);
    write(&src, "src/main.c", "int main() {}\n");
    commit(&git, &src, "first").await;
    // Three commits in one push: one run per workflow, for the tip.
    write(&src, "src/a.c", "\n");
    commit(&git, &src, "second").await;
    write(&src, "src/b.c", "\n");
    commit(&git, &src, "third").await;
    git.ok(&src, &["push", "-q", &url, "main"]).await;
    let head = git.ok(&src, &["rev-parse", "HEAD"]).await.trim().to_owned();

    // A new branch: CI runs (its changed paths are unknown), the broken workflow fails, the tag
    // workflow stays quiet.
    let first = runs(&s, &token, 2).await;
    let mut got = summary(&first);
    got.sort();
    assert_eq!(
        got,
        [
            (".github/workflows/broken.yml".into(), "main".into(), "failure".into()),
            (".github/workflows/ci.yml".into(), "main".into(), String::new()),
        ]
    );
    let broken = first.iter().find(|r| r["path"] == ".github/workflows/broken.yml").expect("broken run");
    assert_eq!(broken["status"], "completed");
    let message = broken["message"].as_str().unwrap_or_default();
    assert!(message.starts_with(".github/workflows/broken.yml:6:"), "diagnostics with positions: {message}");
    let ci = first.iter().find(|r| r["path"] == ".github/workflows/ci.yml").expect("ci run");
    assert_eq!(
        (ci["status"].as_str(), ci["name"].as_str(), ci["event"].as_str()),
        (Some("queued"), Some("CI"), Some("push"))
    );
    assert_eq!((ci["head_sha"].as_str(), ci["actor"].as_str()), (Some(head.as_str()), Some("admin")));

    let (status, detail) = s.send(Method::GET, &format!("/api/v1/runs/{}", ci["id"]), Some(&token), None).await;
    assert_eq!(status, 200, "{detail}");
    let jobs: Vec<(String, String, Value)> = detail["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| {
            (
                j["name"].as_str().unwrap_or_default().to_owned(),
                j["status"].as_str().unwrap_or_default().to_owned(),
                j["labels"].clone(),
            )
        })
        .collect();
    assert_eq!(
        jobs,
        [
            ("build (linux)".into(), "queued".into(), json!(["ubuntu-latest"])),
            ("build (mac)".into(), "queued".into(), json!(["ubuntu-latest"])),
            ("test".into(), "queued".into(), json!(["self-hosted", "linux"])),
        ]
    );
    assert_eq!(detail["jobs"][0]["matrix"], json!({"os": "linux"}));
    assert_eq!(detail["jobs"][2]["needs"], json!(["build"]));
    let steps: Vec<&str> =
        detail["jobs"][0]["steps"].as_array().expect("steps").iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(steps, ["Run actions/checkout@v4", "Run make"]);
    assert_eq!(detail["jobs"][2]["steps"][0]["name"], "Unit tests");

    // A change outside src/: CI's path filter keeps it quiet; the broken workflow fails again.
    write(&src, "README.md", "docs\n");
    commit(&git, &src, "docs").await;
    git.ok(&src, &["push", "-q", &url, "main"]).await;
    let second = runs(&s, &token, 3).await;
    assert_eq!(second[0]["path"], ".github/workflows/broken.yml");
    // A change in src/ runs CI.
    write(&src, "src/main.c", "int main() { return 0; }\n");
    commit(&git, &src, "code").await;
    git.ok(&src, &["push", "-q", &url, "main"]).await;
    let third = runs(&s, &token, 5).await;
    let mut newest: Vec<_> = summary(&third[..2]).into_iter().map(|r| r.0).collect();
    newest.sort();
    assert_eq!(newest, [".github/workflows/broken.yml", ".github/workflows/ci.yml"]);
    assert_eq!(third[0]["run_number"].as_i64().max(third[1]["run_number"].as_i64()), Some(5));

    // A tag runs the release workflow (named by its run-name); deleting it runs nothing.
    git.ok(&src, &["tag", "-a", "v1.0", "-m", "v1.0"]).await;
    git.ok(&src, &["push", "-q", &url, "v1.0"]).await;
    let fourth = runs(&s, &token, 7).await;
    let release = fourth[..2].iter().find(|r| r["path"] == ".github/workflows/release.yml").expect("release run");
    assert_eq!(
        (release["display_title"].as_str(), release["head_branch"].as_str()),
        (Some("Release v1.0"), Some("v1.0"))
    );
    git.ok(&src, &["push", "-q", &url, ":refs/tags/v1.0", ":main"]).await;
    // The deletions are behind the ingestor's cursor once a later push is ingested.
    git.ok(&src, &["push", "-q", &url, "main:other"]).await;
    let fifth = runs(&s, &token, 8).await;
    assert_eq!(summary(&fifth[..1]), [(".github/workflows/broken.yml".into(), "other".into(), "failure".into())]);

    // Runs of a private repository are for those who may read it.
    let (status, _) =
        s.send(Method::PATCH, "/api/v1/repos/admin/app", Some(&token), Some(json!({"private": true}))).await;
    assert_eq!(status, 200);
    let run = format!("/api/v1/runs/{}", ci["id"]);
    assert_eq!(s.send(Method::GET, &run, None, None).await.0, 404);
    assert_eq!(s.send(Method::GET, "/api/v1/repos/admin/app/runs", None, None).await.0, 404);
    let stranger = s.user_token("stranger", &[gitstratum_platform::Scope::RepoRead]).await;
    assert_eq!(s.send(Method::GET, &run, Some(&stranger), None).await.0, 404);
    assert_eq!(s.send(Method::GET, "/api/v1/runs/999999", Some(&token), None).await.0, 404);
    s.stop().await;
}

/// The run's detail once it has completed (within 90 s).
async fn completed(s: &TestServer, token: &str, run: &Value) -> Value {
    let path = format!("/api/v1/runs/{}", run["id"]);
    let mut last = Value::Null;
    for _ in 0..900 {
        let (_, detail) = s.send(Method::GET, &path, Some(token), None).await;
        if detail["status"] == "completed" {
            return detail;
        }
        last = detail;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the run did not complete: {last}");
}

/// A job log without its groups (`##[group]` … `##[endgroup]`; each step opens with one: the script or the
/// action's inputs as written in the workflow): what the steps printed.
fn step_output(log: &str) -> String {
    let mut out = String::new();
    let mut in_header = false;
    for line in log.lines() {
        if line.starts_with("##[group]") {
            in_header = true;
        } else if in_header && line == "##[endgroup]" {
            in_header = false;
        } else if !in_header {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// A log as the steps wrote it: the time the runner stamps each line with taken off (each line
/// a real runner writes must have one).
fn unstamped(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    for line in log.split_inclusive('\n') {
        out.push_str(gitstratum_core::Timestamp::split_log_stamp(line).1);
    }
    out
}

/// A job's whole log through the API, without the runner's stamps.
async fn job_log(s: &TestServer, token: &str, job: &Value) -> String {
    unstamped(&stamped_job_log(s, token, job).await)
}

/// A job's whole log through the API, as stored.
async fn stamped_job_log(s: &TestServer, token: &str, job: &Value) -> String {
    let response = s
        .http
        .get(s.url(&format!("/api/v1/jobs/{}/logs", job["id"])))
        .bearer_auth(token)
        .send()
        .await
        .expect("log request");
    assert_eq!(response.status(), 200);
    response.text().await.expect("log text")
}

/// The embedded runner runs a pushed workflow for real: checkout with the job's token, steps in
/// the bubblewrap sandbox (no host network, no data directory), expressions, `needs`, a failing
/// step, `if: failure()`, and a dependent skipped because its need failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_runner_runs_jobs_in_the_sandbox() {
    let s = TestServer::start_with(gitstratum_server::ConfigLayer {
        embedded_runner: Some("true".into()),
        ..Default::default()
    })
    .await;
    let token = s.admin_token.clone();
    let (status, _) = s.create_repo(Some(&token), json!({"name": "app", "private": true})).await;
    assert_eq!(status, 201);
    let mut receiver = Receiver::start().await;
    let hook = json!({"url": receiver.url, "events": ["workflow_run"]});
    let (status, _) = s.send(Method::POST, "/api/v1/repos/admin/app/hooks", Some(&token), Some(hook)).await;
    assert_eq!(status, 201);
    let tmp = tempfile::tempdir().expect("temp dir");
    let git = Git::new(tmp.path());
    let src = tmp.path().join("src");
    let port = s.base.rsplit(':').next().expect("port").to_owned();
    let data_dir = s.data_dir.path().display().to_string();
    let workflow = format!(
        r#"name: Build
on: push
env:
  GREETING: hello ${{{{ github.ref_name }}}}
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
        with:
          fetch-depth: 0
      - name: Show
        run: |
          cat README.md
          echo "commits=$(git rev-list --count HEAD)"
          echo "greeting=$GREETING ws=$GITHUB_WORKSPACE sha=${{{{ github.sha }}}}"
      - name: Sandbox
        run: |
          test ! -e "{data_dir}" || {{ echo "the data directory is visible"; exit 1; }}
          if (echo > /dev/tcp/127.0.0.1/{port}) 2>/dev/null; then echo "the host network is reachable"; exit 1; fi
          test ! -e /etc/shadow || {{ echo "/etc/shadow is visible"; exit 1; }}
          echo "sandboxed as $(id -u) in $(pwd)"
  test:
    needs: build
    runs-on: [self-hosted, linux]
    steps:
      - run: echo tested
      - run: exit 3
      - run: echo not reached
      - if: failure()
        run: echo cleaning up after the failure
  deploy:
    needs: test
    runs-on: ubuntu-latest
    steps:
      - run: echo never
"#
    );
    std::fs::create_dir_all(&src).expect("dir");
    git.ok(&src, &["init", "-q", "-b", "main"]).await;
    write(&src, ".github/workflows/build.yml", &workflow);
    commit(&git, &src, "first").await;
    write(&src, "README.md", "the readme of app\n");
    commit(&git, &src, "second").await;
    let url = format!("http://x:{token}@{}/admin/app.git", s.base.trim_start_matches("http://"));
    git.ok(&src, &["push", "-q", &url, "main"]).await;
    let head = git.ok(&src, &["rev-parse", "HEAD"]).await.trim().to_owned();

    let run = runs(&s, &token, 1).await.remove(0);
    let detail = completed(&s, &token, &run).await;
    assert_eq!(detail["conclusion"], "failure", "{detail:#}");
    let jobs = detail["jobs"].as_array().expect("jobs");
    let ends: Vec<(&str, &str)> = jobs
        .iter()
        .map(|j| (j["key"].as_str().unwrap_or_default(), j["conclusion"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(ends, [("build", "success"), ("test", "failure"), ("deploy", "skipped")], "{detail:#}");
    let steps: Vec<&str> = jobs[1]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["conclusion"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(steps, ["success", "failure", "skipped", "success"]);
    assert!(detail["run_started_at"].is_string() && jobs[0]["started_at"].is_string());

    let build = job_log(&s, &token, &jobs[0]).await;
    assert!(build.contains("the readme of app"), "checkout worked: {build}");
    assert!(build.contains("commits=2"), "fetch-depth: 0 fetched the whole history: {build}");
    // The commit's combined status, by id and by branch.
    for at in [head.as_str(), "main"] {
        let (status, combined) =
            s.send(Method::GET, &format!("/api/v1/repos/admin/app/commits/{at}/status"), Some(&token), None).await;
        assert_eq!(status, 200, "{combined}");
        assert_eq!((combined["state"].as_str(), combined["sha"].as_str()), (Some("failure"), Some(head.as_str())));
        assert_eq!(
            (combined["total_count"].as_i64(), combined["statuses"][0]["context"].as_str()),
            (Some(1), Some("Build"))
        );
    }
    let (status, _) = s.send(Method::GET, "/api/v1/repos/admin/app/commits/nope/status", Some(&token), None).await;
    assert_eq!(status, 404);
    assert!(build.contains(&format!("greeting=hello main ws=/workspace sha={head}")), "{build}");
    assert!(build.contains("sandboxed as"), "{build}");
    assert!(!build.contains("gstj_"), "the job's token never reaches the log");
    // workflow_run webhooks: requested, in progress, completed, in that order.
    let mut actions = Vec::new();
    while actions.len() < 3 {
        let (headers, body) = receiver.next().await;
        assert_eq!(headers["x-github-event"], "workflow_run");
        let payload: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(payload["workflow_run"]["id"], run["id"]);
        actions.push((
            payload["action"].as_str().unwrap_or_default().to_owned(),
            payload["workflow_run"]["conclusion"].as_str().map(str::to_owned),
        ));
    }
    assert_eq!(
        actions,
        [("requested".into(), None), ("in_progress".into(), None), ("completed".into(), Some("failure".into()))]
    );
    let test = job_log(&s, &token, &jobs[1]).await;
    assert!(test.contains("tested") && test.contains("cleaning up after the failure"), "{test}");
    assert!(!test.contains("not reached"), "{test}");
    // The job's token ended with its job.
    s.stop().await;
}

/// The runner protocol, spoken by hand: acknowledgement, stale and repeated messages, log frames
/// by offset, the job's token (its repository only, while the job runs), and a lost runner's job
/// coming back as a new attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runner_protocol_survives_repeats_and_lost_runners() {
    let s = TestServer::start().await;
    let admin = s.admin_token.clone();
    for (name, private) in [("app", true), ("other", true)] {
        let (status, _) = s.create_repo(Some(&admin), json!({"name": name, "private": private})).await;
        assert_eq!(status, 201);
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let git = Git::new(tmp.path());
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).expect("dir");
    git.ok(&src, &["init", "-q", "-b", "main"]).await;
    write(
        &src,
        ".github/workflows/ci.yml",
        "on: push\njobs:\n  one:\n    runs-on: [self-hosted, gpu]\n    steps:\n      - run: echo one\n",
    );
    commit(&git, &src, "first").await;
    let url = format!("http://x:{admin}@{}/admin/app.git", s.base.trim_start_matches("http://"));
    git.ok(&src, &["push", "-q", &url, "main"]).await;
    let run = runs(&s, &admin, 1).await.remove(0);

    let runner_token = s.user_token("admin", &[gitstratum_platform::Scope::CiRunner]).await;
    let rt = Some(runner_token.as_str());
    // Only ci:runner tokens speak the protocol; labels decide which jobs a runner gets.
    let (status, _) = s
        .send(Method::POST, "/api/v1/runner/register", Some(&admin), Some(json!({"name": "r", "labels": ["x"]})))
        .await;
    assert_eq!(status, 403);
    let (status, _) =
        s.send(Method::POST, "/api/v1/runner/register", rt, Some(json!({"name": "r", "labels": []}))).await;
    assert_eq!(status, 422);
    let (_, cpu) = s
        .send(Method::POST, "/api/v1/runner/register", rt, Some(json!({"name": "cpu", "labels": ["self-hosted"]})))
        .await;
    let (status, none) =
        s.send(Method::POST, &format!("/api/v1/runner/{}/jobs/request?wait=0", cpu["id"]), rt, None).await;
    assert_eq!(status, 204, "{none}");
    let (_, gpu) = s
        .send(
            Method::POST,
            "/api/v1/runner/register",
            rt,
            Some(json!({"name": "gpu", "labels": ["self-hosted", "gpu"]})),
        )
        .await;
    let r = gpu["id"].as_i64().expect("runner id");
    let (status, lease) = s.send(Method::POST, &format!("/api/v1/runner/{r}/jobs/request?wait=1"), rt, None).await;
    assert_eq!(status, 200, "{lease}");
    assert_eq!((lease["run_id"].clone(), lease["attempt"].as_i64()), (run["id"].clone(), Some(1)));
    let job = lease["job_id"].as_i64().expect("job");
    let job_token = lease["token"].as_str().expect("token").to_owned();
    assert!(job_token.starts_with("gstj_"));
    let at = |attempt: i64| Some(json!({"attempt": attempt}));

    // Acknowledge once; again, or for another attempt, is a lost lease (409).
    assert_eq!(s.send(Method::POST, &format!("/api/v1/runner/{r}/jobs/{job}/ack"), rt, at(2)).await.0, 409);
    assert_eq!(s.send(Method::POST, &format!("/api/v1/runner/{r}/jobs/{job}/ack"), rt, at(1)).await.0, 204);
    assert_eq!(s.send(Method::POST, &format!("/api/v1/runner/{r}/jobs/{job}/ack"), rt, at(1)).await.0, 409);
    let (_, beat) = s.send(Method::POST, &format!("/api/v1/runner/{r}/jobs/{job}/heartbeat"), rt, at(1)).await;
    assert_eq!(beat["action"], "continue");
    let (_, detail) = s.send(Method::GET, &format!("/api/v1/runs/{}", run["id"]), Some(&admin), None).await;
    assert_eq!(
        (detail["status"].as_str(), detail["jobs"][0]["status"].as_str()),
        (Some("in_progress"), Some("in_progress"))
    );

    // The job's token clones its repository, and nothing else; the API's other endpoints refuse it.
    let host = s.base.trim_start_matches("http://");
    let clone = tmp.path().join("clone");
    let with_job_token = |repo: &str| format!("http://x:{job_token}@{host}/admin/{repo}.git");
    git.ok(tmp.path(), &["clone", "-q", &with_job_token("app"), clone.to_str().expect("utf-8")]).await;
    let err = git.fails(tmp.path(), &["clone", "-q", &with_job_token("other"), "other"]).await;
    assert!(err.contains("not found") || err.contains("404"), "{err}");
    assert_eq!(s.send(Method::GET, "/api/v1/user", Some(&job_token), None).await.0, 403);
    assert_eq!(s.send(Method::GET, "/api/v1/repos/admin/other", Some(&job_token), None).await.0, 404);
    assert_eq!(s.send(Method::GET, "/api/v1/repos/admin/app", Some(&job_token), None).await.0, 200);
    // Artifacts reach a job only through its runner, and only its own run's.
    let artifacts = format!("/api/v1/runs/{}/artifacts", run["id"]);
    assert_eq!(s.send(Method::GET, &artifacts, Some(&job_token), None).await.0, 403);
    let (status, mine) =
        s.send(Method::GET, &format!("/api/v1/runner/{r}/jobs/{job}/artifacts?attempt=1"), rt, None).await;
    assert_eq!((status.as_u16(), mine["total_count"].as_i64()), (200, Some(0)), "{mine}");
    let (status, _) =
        s.send(Method::GET, &format!("/api/v1/runner/{r}/jobs/{job}/artifacts/1/archive?attempt=1"), rt, None).await;
    assert_eq!(status, 404);
    let err = git.fails(&clone, &["push", "-q", &with_job_token("app"), "HEAD:refs/heads/evil"]).await;
    assert!(err.contains("403") || err.contains("denied") || err.contains("scope"), "{err}");

    // An artifact over the protocol: a chunk, then finishing the slot. An archive with a `../`
    // path is refused whole; a good one is kept.
    let upload = |slot: &'static str, bytes: Vec<u8>| {
        let request = s
            .http
            .put(s.url(&format!("/api/v1/runner/{r}/jobs/{job}/uploads/{slot}?attempt=1&offset=0")))
            .bearer_auth(&runner_token)
            .body(bytes);
        async move { request.send().await.expect("chunk").status().as_u16() }
    };
    let finish = |slot: &str, name: &str, bytes: &[u8]| {
        use sha2::Digest;
        let sha256: String = sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect();
        let body = json!({"attempt": 1, "slot": slot, "name": name, "length": bytes.len(), "sha256": sha256});
        let path = format!("/api/v1/runner/{r}/jobs/{job}/artifacts");
        let s = &s;
        async move { s.send(Method::POST, &path, rt, Some(body)).await }
    };
    let mut evil = b"GSAR\x01F".to_vec();
    evil.extend_from_slice(&7u16.to_be_bytes());
    evil.extend_from_slice(b"../evil");
    evil.extend_from_slice(&0o644u32.to_be_bytes());
    evil.extend_from_slice(&1u64.to_be_bytes());
    evil.extend_from_slice(b"x\0\0\0\0E");
    let evil = zstd::stream::encode_all(&evil[..], 1).expect("zstd");
    assert_eq!(upload("evil", evil.clone()).await, 200);
    let (status, refused) = finish("evil", "evil", &evil).await;
    assert_eq!((status.as_u16(), refused["error"]["code"].as_str()), (422, Some("artifact.invalid")), "{refused}");
    let mut good = gitstratum_artifact::Writer::new(Vec::new()).expect("writer");
    good.add("report.txt", 0o644, 2, &mut &b"ok"[..]).expect("add");
    let good = good.finish().expect("archive");
    assert_eq!(upload("good", good.clone()).await, 200);
    let (status, kept) = finish("good", "report", &good).await;
    assert_eq!(status, 201, "{kept}");

    // Log frames by offset: a resend adds nothing, an overlap only its new part, a gap is refused.
    let log = |offset: u64, body: &'static str| {
        let request = s
            .http
            .post(s.url(&format!("/api/v1/runner/{r}/jobs/{job}/logs?attempt=1&offset={offset}")))
            .bearer_auth(&runner_token)
            .body(body);
        async move {
            let response = request.send().await.expect("log frame");
            (response.status().as_u16(), response.json::<Value>().await.expect("json"))
        }
    };
    assert_eq!(log(0, "hello ").await, (200, json!({"offset": 6})));
    assert_eq!(log(0, "hello ").await, (200, json!({"offset": 6})));
    assert_eq!(log(3, "lo world\n").await, (200, json!({"offset": 12})));
    assert_eq!(log(50, "x").await.0, 409);
    let step = |number: i64, conclusion: Option<&'static str>| {
        let path = format!("/api/v1/runner/{r}/jobs/{job}/steps/{number}");
        let s = &s;
        async move { s.send(Method::POST, &path, rt, Some(json!({"attempt": 1, "conclusion": conclusion}))).await }
    };
    assert_eq!(step(1, None).await.0, 204);
    assert_eq!(step(1, Some("success")).await.0, 204);
    assert_eq!(step(1, Some("success")).await.0, 204, "a repeated report is fine");
    assert_eq!(step(1, Some("bogus")).await.0, 422);

    // The runner goes silent: its lease runs out and the job comes back as attempt 2.
    let ci = ci_store(&s).await;
    let later = gitstratum_core::Timestamp(gitstratum_core::Clock::now(&gitstratum_core::SystemClock).0 + 120_000);
    assert_eq!(ci.expire_leases(later).await.expect("expire"), 1);
    let (_, beat) = s.send(Method::POST, &format!("/api/v1/runner/{r}/jobs/{job}/heartbeat"), rt, at(1)).await;
    assert_eq!(beat["action"], "stop", "the old attempt is told to stop");
    assert_eq!(
        s.send(
            Method::POST,
            &format!("/api/v1/runner/{r}/jobs/{job}/complete"),
            rt,
            Some(json!({"attempt": 1, "conclusion": "success"}))
        )
        .await
        .0,
        409
    );
    assert_eq!(
        s.send(Method::GET, "/api/v1/repos/admin/app", Some(&job_token), None).await.0,
        401,
        "the old token died with its attempt"
    );
    let (status, again) = s.send(Method::POST, &format!("/api/v1/runner/{r}/jobs/request?wait=1"), rt, None).await;
    assert_eq!(
        (status.as_u16(), again["job_id"].as_i64(), again["attempt"].as_i64()),
        (200, Some(job), Some(2)),
        "{again}"
    );
    assert_eq!(s.send(Method::POST, &format!("/api/v1/runner/{r}/jobs/{job}/ack"), rt, at(2)).await.0, 204);
    let done = Some(json!({"attempt": 2, "conclusion": "success"}));
    assert_eq!(s.send(Method::POST, &format!("/api/v1/runner/{r}/jobs/{job}/complete"), rt, done.clone()).await.0, 204);
    assert_eq!(
        s.send(Method::POST, &format!("/api/v1/runner/{r}/jobs/{job}/complete"), rt, done).await.0,
        204,
        "repeat"
    );
    let (_, detail) = s.send(Method::GET, &format!("/api/v1/runs/{}", run["id"]), Some(&admin), None).await;
    assert_eq!(
        (detail["status"].as_str(), detail["conclusion"].as_str()),
        (Some("completed"), Some("success")),
        "{detail}"
    );
    assert_eq!(detail["jobs"][0]["attempt"], 2);
    // Each attempt keeps its own log.
    let first =
        s.http.get(s.url(&format!("/api/v1/jobs/{job}/logs?attempt=1"))).bearer_auth(&admin).send().await.expect("log");
    assert_eq!(first.text().await.expect("text"), "hello world\n");

    // Another run's job sees none of this run's artifacts, even by id.
    write(&src, "more.txt", "more");
    commit(&git, &src, "second").await;
    git.ok(&src, &["push", "-q", &url, "main"]).await;
    runs(&s, &admin, 2).await;
    let (status, next) = s.send(Method::POST, &format!("/api/v1/runner/{r}/jobs/request?wait=5"), rt, None).await;
    assert_eq!(status, 200, "{next}");
    let other = next["job_id"].as_i64().expect("job");
    assert_ne!(next["run_id"], run["id"]);
    assert_eq!(s.send(Method::POST, &format!("/api/v1/runner/{r}/jobs/{other}/ack"), rt, at(1)).await.0, 204);
    let path = format!("/api/v1/runner/{r}/jobs/{other}/artifacts");
    let (_, list) = s.send(Method::GET, &format!("{path}?attempt=1"), rt, None).await;
    assert_eq!(list["total_count"], 0, "{list}");
    let (status, _) = s.send(Method::GET, &format!("{path}/{}/archive?attempt=1", kept["id"]), rt, None).await;
    assert_eq!(status, 404, "another run's artifact");
    let (_, mine) = s.send(Method::GET, &format!("/api/v1/runs/{}/artifacts", run["id"]), Some(&admin), None).await;
    assert_eq!(mine["artifacts"][0]["name"], "report", "{mine}");
    s.stop().await;
}

/// Cancelling a run stops its running step through the runner's heartbeat (an `if: always()` step
/// still runs), cancels what had not started, and a cancelled job can be run again as a new attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_the_runner_and_rerun_starts_a_new_attempt() {
    let Fixture { s, token, tmp: _tmp, git, src } = Fixture::new(true, false, Default::default()).await;
    write(
        &src,
        ".github/workflows/slow.yml",
        "on: push
jobs:
  quick:
    runs-on: ubuntu-latest
    steps:
      - run: echo quick
  slow:
    runs-on: ubuntu-latest
    steps:
      - run: echo sleeping; sleep 300
      - run: echo not after a cancel
      - if: always()
        run: echo cleanup ran
  after:
    needs: slow
    runs-on: ubuntu-latest
    steps:
      - run: echo after
",
    );
    commit(&git, &src, "first").await;
    let url = format!("http://x:{token}@{}/admin/app.git", s.base.trim_start_matches("http://"));
    git.ok(&src, &["push", "-q", &url, "main"]).await;
    let run = runs(&s, &token, 1).await.remove(0);
    let path = format!("/api/v1/runs/{}", run["id"]);

    // Wait for the slow job to be sleeping, then cancel.
    sleeping(&s, &token, &path, 1).await;
    assert_eq!(s.send(Method::POST, &format!("{path}/rerun"), Some(&token), None).await.0, 409, "still running");
    assert_eq!(s.send(Method::POST, &format!("{path}/cancel"), Some(&token), None).await.0, 202);
    let detail = completed(&s, &token, &run).await;
    assert_eq!(detail["conclusion"], "cancelled", "{detail:#}");
    let ends: Vec<&str> =
        detail["jobs"].as_array().expect("jobs").iter().map(|j| j["conclusion"].as_str().unwrap_or_default()).collect();
    assert_eq!(ends, ["success", "cancelled", "cancelled"], "{detail:#}");
    let steps: Vec<&str> = detail["jobs"][1]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["conclusion"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(steps, ["cancelled", "skipped", "success"]);
    let log = job_log(&s, &token, &detail["jobs"][1]).await;
    assert!(
        log.contains("The run was cancelled.") && log.contains("cleanup ran") && !log.contains("not after"),
        "{log}"
    );
    assert_eq!(s.send(Method::POST, &format!("{path}/cancel"), Some(&token), None).await.0, 409, "already completed");

    // Re-run the failed part: the slow job and what needs it, as attempt 2; quick keeps its result.
    assert_eq!(s.send(Method::POST, &format!("{path}/rerun-failed"), Some(&token), None).await.0, 201);
    sleeping(&s, &token, &path, 2).await;
    let (_, detail) = s.send(Method::GET, &path, Some(&token), None).await;
    assert_eq!(
        (detail["jobs"][0]["attempt"].as_i64(), detail["jobs"][0]["conclusion"].as_str()),
        (Some(1), Some("success"))
    );
    assert_eq!(
        (detail["jobs"][2]["attempt"].as_i64(), detail["jobs"][2]["status"].as_str()),
        (Some(2), Some("queued"))
    );
    assert_eq!(s.send(Method::POST, &format!("{path}/cancel"), Some(&token), None).await.0, 202);
    let detail = completed(&s, &token, &run).await;
    assert_eq!(detail["conclusion"], "cancelled");
    // A reader may not cancel.
    let reader = s.user_token("reader", &[gitstratum_platform::Scope::RepoRead]).await;
    assert_eq!(s.send(Method::POST, &format!("{path}/rerun"), Some(&reader), None).await.0, 403);
    s.stop().await;
}

/// Waits until the run's second job (attempt `attempt`) runs its first step.
async fn sleeping(s: &TestServer, token: &str, path: &str, attempt: i64) {
    for _ in 0..600 {
        let (_, detail) = s.send(Method::GET, path, Some(token), None).await;
        let slow = &detail["jobs"][1];
        if slow["status"] == "in_progress" && slow["attempt"] == attempt && slow["steps"][0]["status"] == "in_progress"
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the slow job never started");
}

/// `workflow_dispatch`: inputs checked against the workflow's declarations, the run started at the
/// ref, and the inputs in the job's `inputs` context.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_dispatch_starts_a_run_with_inputs() {
    let Fixture { s, token, tmp: _tmp, git, src } = Fixture::new(true, true, Default::default()).await;
    write(
        &src,
        ".github/workflows/deploy.yml",
        "name: Deploy
run-name: Deploy ${{ inputs.env }}
on:
  push:
    branches: [release]
  workflow_dispatch:
    inputs:
      env:
        type: choice
        options: [staging, production]
        required: true
      dry:
        type: boolean
        default: true
jobs:
  go:
    runs-on: ubuntu-latest
    steps:
      - run: echo \"deploying to ${{ inputs.env }} dry=${{ inputs.dry }}\"
",
    );
    write(
        &src,
        ".github/workflows/ci.yml",
        "on: push\njobs:\n  a:\n    runs-on: [nowhere]\n    steps:\n      - run: echo\n",
    );
    commit(&git, &src, "first").await;
    let url = format!("http://x:{token}@{}/admin/app.git", s.base.trim_start_matches("http://"));
    git.ok(&src, &["push", "-q", &url, "main"]).await;
    let ci_run = runs(&s, &token, 1).await.remove(0);
    assert_eq!(ci_run["path"], ".github/workflows/ci.yml", "the push ran ci.yml only");

    let dispatch = |file: &str| format!("/api/v1/repos/admin/app/workflows/{file}/dispatches");
    let refused =
        |status: StatusCode, body: &Value| (status.as_u16(), body["error"]["field"].as_str().map(str::to_owned));
    let (status, body) =
        s.send(Method::POST, &dispatch("deploy.yml"), Some(&token), Some(json!({"ref": "nope"}))).await;
    assert_eq!(refused(status, &body), (422, Some("ref".into())), "{body}");
    let (status, body) =
        s.send(Method::POST, &dispatch("missing.yml"), Some(&token), Some(json!({"ref": "main"}))).await;
    assert_eq!(refused(status, &body), (422, Some("file".into())), "{body}");
    let (status, body) = s.send(Method::POST, &dispatch("ci.yml"), Some(&token), Some(json!({"ref": "main"}))).await;
    assert_eq!(refused(status, &body), (422, Some("file".into())), "{body}");
    let (status, body) = s
        .send(
            Method::POST,
            &dispatch("deploy.yml"),
            Some(&token),
            Some(json!({"ref": "main", "inputs": {"env": "qa"}})),
        )
        .await;
    assert_eq!(refused(status, &body), (422, Some("inputs".into())), "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("input env")), "{body}");
    let stranger = s.user_token("stranger", &[gitstratum_platform::Scope::RepoWrite]).await;
    let (status, _) =
        s.send(Method::POST, &dispatch("deploy.yml"), Some(&stranger), Some(json!({"ref": "main"}))).await;
    assert_eq!(status, 404, "a private repository stays hidden");

    let body = json!({"ref": "main", "inputs": {"env": "production"}});
    let (status, made) = s.send(Method::POST, &dispatch("deploy.yml"), Some(&token), Some(body)).await;
    assert_eq!(status, 201, "{made}");
    let run = json!({"id": made["run_id"]});
    let detail = completed(&s, &token, &run).await;
    assert_eq!(
        (detail["event"].as_str(), detail["display_title"].as_str()),
        (Some("workflow_dispatch"), Some("Deploy production"))
    );
    assert_eq!(
        (detail["conclusion"].as_str(), detail["head_ref"].as_str()),
        (Some("success"), Some("refs/heads/main")),
        "{detail}"
    );
    let log = job_log(&s, &token, &detail["jobs"][0]).await;
    assert!(log.contains("deploying to production dry=true"), "{log}");
    s.stop().await;
}

/// Reads an SSE response until an event named `last` has arrived (within 60 s); the whole text.
async fn read_sse(mut response: reqwest::Response, last: &str) -> String {
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !text.contains(&format!("event: {last}\n")) {
        let chunk = tokio::time::timeout_at(deadline, response.chunk()).await.expect("in time").expect("chunk");
        let Some(chunk) = chunk else { break };
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    text
}

/// The `log` events of an SSE text: each event's id and its lines (each ending in a newline).
fn log_events(text: &str) -> Vec<(String, String)> {
    text.split("\n\n")
        .filter(|block| block.lines().any(|l| l == "event: log"))
        .map(|block| {
            let id = block.lines().find_map(|l| l.strip_prefix("id: ")).unwrap_or_default().to_owned();
            let data = block.lines().filter_map(|l| l.strip_prefix("data: ")).map(|l| format!("{l}\n")).collect();
            (id, data)
        })
        .collect()
}

/// Live streams: a job's log arrives while the job runs, whole lines with `STEP:OFFSET` event ids,
/// then `end`; a stream resumed with `Last-Event-ID` starts after that point; the run's events end
/// with the completed run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_and_status_stream_live() {
    let Fixture { s, token, tmp: _tmp, git, src } = Fixture::new(true, false, Default::default()).await;
    write(
        &src,
        ".github/workflows/slow.yml",
        "on: push\njobs:\n  count:\n    runs-on: ubuntu-latest\n    steps:\n      - run: for i in 1 2 3; do echo line $i; sleep 1; done\n",
    );
    commit(&git, &src, "first").await;
    let url = format!("http://x:{token}@{}/admin/app.git", s.base.trim_start_matches("http://"));
    git.ok(&src, &["push", "-q", &url, "main"]).await;
    let run = runs(&s, &token, 1).await.remove(0);
    let events = s
        .http
        .get(s.url(&format!("/api/v1/runs/{}/events", run["id"])))
        .bearer_auth(&token)
        .send()
        .await
        .expect("events");
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    let (_, detail) = s.send(Method::GET, &format!("/api/v1/runs/{}", run["id"]), Some(&token), None).await;
    let job = detail["jobs"][0]["id"].clone();
    let stream =
        s.http.get(s.url(&format!("/api/v1/jobs/{job}/logs/stream"))).bearer_auth(&token).send().await.expect("stream");
    assert_eq!(stream.status(), 200);
    let started = std::time::Instant::now();
    let text = read_sse(stream, "end").await;
    assert!(text.contains("Z line 1\n") && text.contains("Z line 3\n"), "{text}");
    assert!(text.contains("event: end\ndata: success"), "{text}");
    assert!(started.elapsed() >= Duration::from_secs(1), "the log streamed while the job ran");
    assert!(text.contains("event: step\ndata: 1\n"), "the step's log is announced: {text}");
    // Resume after the first log event: what follows, and nothing before it.
    let logs = log_events(&text);
    let (first_id, first_text) = logs.first().cloned().expect("a log event");
    assert!(first_id.contains(':'), "ids are STEP:OFFSET: {first_id}");
    let resumed = s
        .http
        .get(s.url(&format!("/api/v1/jobs/{job}/logs/stream")))
        .bearer_auth(&token)
        .header("last-event-id", first_id)
        .send()
        .await
        .expect("resume");
    let rest = read_sse(resumed, "end").await;
    let log = stamped_job_log(&s, &token, &detail["jobs"][0]).await;
    assert!(log.starts_with(&first_text), "{log}");
    let got: String = log_events(&rest).into_iter().map(|(_, text)| text).collect();
    assert_eq!(got, log[first_text.len()..], "{rest}");
    let statuses = read_sse(events, "run").await;
    assert!(statuses.contains("event: run"), "{statuses}");
    s.stop().await;
}

/// Steps pass values on: `$GITHUB_OUTPUT` (one line and several), `$GITHUB_ENV`, `$GITHUB_PATH`,
/// `steps.<id>.outputs`; job `outputs` reach `needs.<id>.outputs`; job `if:` decides on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_env_files_and_job_conditions() {
    let Fixture { s, token, tmp: _tmp, git, src } = Fixture::new(true, false, Default::default()).await;
    write(
        &src,
        ".github/workflows/flow.yml",
        r#"on: push
jobs:
  produce:
    runs-on: ubuntu-latest
    outputs:
      version: ${{ steps.v.outputs.version }}
      notes: ${{ steps.v.outputs.notes }}
    steps:
      - id: v
        run: |
          echo "version=1.2.3" >> "$GITHUB_OUTPUT"
          { echo "notes<<END"; echo "first"; echo "second"; echo "END"; } >> "$GITHUB_OUTPUT"
          echo "FROM_STEP=carried" >> "$GITHUB_ENV"
          mkdir -p "$HOME/bin"
          printf '#!/bin/sh\necho the tool ran\n' > "$HOME/bin/mytool"
          chmod +x "$HOME/bin/mytool"
          echo "$HOME/bin" >> "$GITHUB_PATH"
      - run: |
          echo "env ${FROM_STEP}"
          mytool
          echo "step said ${{ steps.v.outputs.version }} ${{ steps.v.outcome }}"
          echo "::add-mask::s3cr3t-value"
          echo "the value is s3cr3t-value"
          echo '## A summary' >> "$GITHUB_STEP_SUMMARY"
  consume:
    needs: produce
    runs-on: ubuntu-latest
    steps:
      - run: echo "got ${{ needs.produce.outputs.version }} ${{ needs.produce.result }}"
  elsewhere:
    if: github.ref == 'refs/heads/release'
    runs-on: ubuntu-latest
    steps:
      - run: echo never
  on-failure:
    needs: produce
    if: failure()
    runs-on: ubuntu-latest
    steps:
      - run: echo never
  finally:
    needs: [consume, on-failure]
    if: always() && needs.consume.result == 'success'
    runs-on: ubuntu-latest
    steps:
      - run: echo finally ran
"#,
    );
    commit(&git, &src, "first").await;
    let url = format!("http://x:{token}@{}/admin/app.git", s.base.trim_start_matches("http://"));
    git.ok(&src, &["push", "-q", &url, "main"]).await;
    let run = runs(&s, &token, 1).await.remove(0);
    let detail = completed(&s, &token, &run).await;
    let jobs = detail["jobs"].as_array().expect("jobs");
    let ends: Vec<(&str, &str)> = jobs
        .iter()
        .map(|j| (j["key"].as_str().unwrap_or_default(), j["conclusion"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(
        ends,
        [
            ("produce", "success"),
            ("consume", "success"),
            ("elsewhere", "skipped"),
            ("on-failure", "skipped"),
            ("finally", "success")
        ],
        "{detail:#}"
    );
    assert_eq!(detail["conclusion"], "success");
    let produce = job_log(&s, &token, &jobs[0]).await;
    assert_eq!(jobs[0]["outputs"], json!({"version": "1.2.3", "notes": "first\nsecond"}), "{produce}");
    assert_eq!(jobs[2]["message"], "skipped: if: success() && (github.ref == 'refs/heads/release') was false");
    assert!(produce.contains("env carried") && produce.contains("the tool ran"), "{produce}");
    assert!(produce.contains("step said 1.2.3 success"), "{produce}");
    // Masked in what the step printed (its header shows the script as written in the workflow,
    // as GitHub's runner does: `add-mask` takes effect when the script runs).
    assert!(produce.contains("the value is ***") && !step_output(&produce).contains("s3cr3t-value"), "{produce}");
    assert!(produce.contains("## A summary"), "{produce}");
    let consume = job_log(&s, &token, &jobs[1]).await;
    assert!(consume.contains("got 1.2.3 success"), "{consume}");
    let finally = job_log(&s, &token, &jobs[4]).await;
    assert!(finally.contains("finally ran"), "{finally}");
    s.stop().await;
}

/// Each job is held to its memory and process limits (cgroups); exceeding one fails the step and
/// its log says which limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_held_to_their_memory_and_process_limits() {
    let Fixture { s, token, tmp: _tmp, git, src } = Fixture::new(
        true,
        false,
        gitstratum_server::ConfigLayer {
            runner_memory_mb: Some("64".into()),
            runner_processes: Some("32".into()),
            ..Default::default()
        },
    )
    .await;
    write(
        &src,
        ".github/workflows/limits.yml",
        r#"on: push
jobs:
  memory:
    runs-on: ubuntu-latest
    steps:
      - run: python3 -c "a = bytearray(512 * 1024 * 1024); print(len(a))"
  forks:
    runs-on: ubuntu-latest
    steps:
      - shell: python3 {0}
        run: |
          import os, time
          for i in range(200):
              if os.fork() == 0:
                  time.sleep(30)
                  os._exit(0)
  fine:
    runs-on: ubuntu-latest
    steps:
      - run: python3 -c "a = bytearray(8 * 1024 * 1024); print('allocated', len(a))"
"#,
    );
    commit(&git, &src, "first").await;
    let url = format!("http://x:{token}@{}/admin/app.git", s.base.trim_start_matches("http://"));
    git.ok(&src, &["push", "-q", &url, "main"]).await;
    let run = runs(&s, &token, 1).await.remove(0);
    let detail = completed(&s, &token, &run).await;
    let jobs = detail["jobs"].as_array().expect("jobs");
    let log = |i: usize| job_log(&s, &token, &jobs[i]);
    let (memory, forks, fine) = (log(0).await, log(1).await, log(2).await);
    if memory.contains("cannot limit the job's memory and processes") {
        // No writable cgroups on this machine: say so rather than pretend.
        eprintln!("note: cgroups unavailable here; limits untested: {memory}");
        s.stop().await;
        return;
    }
    let ends: Vec<&str> = jobs.iter().map(|j| j["conclusion"].as_str().unwrap_or_default()).collect();
    assert_eq!(ends, ["failure", "failure", "success"], "{detail:#}\n{memory}\n{forks}\n{fine}");
    assert!(memory.contains("exceeded the job's memory limit (64 MiB)"), "{memory}");
    assert!(forks.contains("exceeded the job's process limit (32 processes)"), "{forks}");
    assert!(fine.contains("allocated 8388608"), "{fine}");
    s.stop().await;
}

/// A burst: one push of 200 branches is 200 ref updates, and makes exactly 200 runs (the ingestor
/// reads the log in batches; none is lost or doubled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_200_ref_updates_makes_exactly_200_runs() {
    let Fixture { s, token, tmp: _tmp, git, src } = Fixture::new(false, false, Default::default()).await;
    write(
        &src,
        ".github/workflows/ci.yml",
        "on: push\njobs:\n  a:\n    runs-on: [nowhere]\n    steps:\n      - run: echo\n",
    );
    commit(&git, &src, "first").await;
    for i in 0..199 {
        git.ok(&src, &["branch", &format!("b{i:03}")]).await;
    }
    let url = format!("http://x:{token}@{}/admin/app.git", s.base.trim_start_matches("http://"));
    git.ok(&src, &["push", "-q", &url, "--all"]).await;
    let mut total = 0;
    for _ in 0..300 {
        let (_, page) = s.send(Method::GET, "/api/v1/repos/admin/app/runs?limit=100", Some(&token), None).await;
        let first = page["runs"].as_array().map_or(0, Vec::len);
        let mut count = first;
        let mut cursor = page["next_cursor"].clone();
        while let Some(before) = cursor.as_i64() {
            let (_, more) = s
                .send(
                    Method::GET,
                    &format!("/api/v1/repos/admin/app/runs?limit=100&before={before}"),
                    Some(&token),
                    None,
                )
                .await;
            count += more["runs"].as_array().map_or(0, Vec::len);
            cursor = more["next_cursor"].clone();
        }
        total = count;
        if total >= 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(total, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, page) = s.send(Method::GET, "/api/v1/repos/admin/app/runs?limit=1", Some(&token), None).await;
    assert_eq!(page["runs"][0]["run_number"], 200, "no run twice");
    s.stop().await;
}

/// A matrix run by the real runner (both instances, fail-fast off), `continue-on-error`, a step
/// timeout (the step `timed_out`, an `always()` step after it still runs, the job fails) and a job
/// timeout (the job `timed_out`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrices_continue_on_error_and_timeouts() {
    let Fixture { s, token, tmp: _tmp, git, src } = Fixture::new(true, false, Default::default()).await;
    write(
        &src,
        ".github/workflows/mixed.yml",
        r#"on: push
jobs:
  build:
    strategy:
      fail-fast: false
      matrix:
        n: [1, 2]
    runs-on: ubuntu-latest
    steps:
      - run: echo instance ${{ matrix.n }}
      - run: exit 1
        continue-on-error: true
      - run: echo went on ${{ matrix.n }}
  slow-step:
    runs-on: ubuntu-latest
    steps:
      - run: sleep 30
        timeout-minutes: 0.05
      - if: always()
        run: echo after the timeout
  slow-job:
    runs-on: ubuntu-latest
    timeout-minutes: 0.05
    steps:
      - run: sleep 30
"#,
    );
    commit(&git, &src, "first").await;
    let url = format!("http://x:{token}@{}/admin/app.git", s.base.trim_start_matches("http://"));
    git.ok(&src, &["push", "-q", &url, "main"]).await;
    let run = runs(&s, &token, 1).await.remove(0);
    let detail = completed(&s, &token, &run).await;
    assert_eq!(detail["conclusion"], "failure", "{detail:#}");
    let jobs = detail["jobs"].as_array().expect("jobs");
    let ends: Vec<(&str, &str)> = jobs
        .iter()
        .map(|j| (j["name"].as_str().unwrap_or_default(), j["conclusion"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(
        ends,
        [("build (1)", "success"), ("build (2)", "success"), ("slow-step", "failure"), ("slow-job", "timed_out")],
        "{detail:#}"
    );
    for (i, job) in jobs[..2].iter().enumerate() {
        let log = job_log(&s, &token, job).await;
        assert!(log.contains(&format!("went on {}", i + 1)), "{log}");
    }
    let steps: Vec<&str> =
        jobs[2]["steps"].as_array().expect("steps").iter().map(|s| s["conclusion"].as_str().unwrap_or("")).collect();
    assert_eq!(steps, ["timed_out", "success"], "{detail:#}");
    assert!(job_log(&s, &token, &jobs[2]).await.contains("after the timeout"));
    s.stop().await;
}

/// Workflow commands and per-step logs: `::error::`/`::warning::` become the job's annotations
/// (and `##[error]` lines), `::group::` a group; a step that prints past the step log cap (1 MiB
/// here) is cut with a marker while the job goes on; each step's log can be read alone; and
/// `workflow_job` webhooks tell a job's queued, in-progress and completed moments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotations_step_logs_and_job_webhooks() {
    let config = gitstratum_server::ConfigLayer { ci_log_step_max_mb: Some("1".into()), ..Default::default() };
    let Fixture { s, token, tmp: _tmp, git, src } = Fixture::new(true, false, config).await;
    let mut receiver = Receiver::start().await;
    let hook = json!({"url": receiver.url, "events": ["workflow_job"]});
    let (status, _) = s.send(Method::POST, "/api/v1/repos/admin/app/hooks", Some(&token), Some(hook)).await;
    assert_eq!(status, 201);
    write(
        &src,
        ".github/workflows/notes.yml",
        r#"on: push
jobs:
  check:
    runs-on: ubuntu-latest
    steps:
      - name: Lint
        run: |
          echo "::group::Checking"
          echo "::error file=src/main.rs,line=3,title=Lint::unused variable"
          echo "::warning::deprecated call"
          echo "::endgroup::"
      - name: Noisy
        run: |
          set +o pipefail
          yes 'a line of output that repeats' | head -c 3000000
      - name: After
        run: echo after the noise
"#,
    );
    commit(&git, &src, "first").await;
    let url = format!("http://x:{token}@{}/admin/app.git", s.base.trim_start_matches("http://"));
    git.ok(&src, &["push", "-q", &url, "main"]).await;
    let run = runs(&s, &token, 1).await.remove(0);
    let detail = completed(&s, &token, &run).await;
    assert_eq!(detail["conclusion"], "success", "{detail:#}");
    let job = &detail["jobs"][0];
    let notes: Vec<(i64, &str, &str)> = job["annotations"]
        .as_array()
        .expect("annotations")
        .iter()
        .map(|a| {
            (a["step"].as_i64().unwrap_or(0), a["level"].as_str().unwrap_or(""), a["message"].as_str().unwrap_or(""))
        })
        .collect();
    assert_eq!(notes, [(1, "error", "unused variable"), (1, "warning", "deprecated call")], "{job:#}");
    assert_eq!(
        (job["annotations"][0]["file"].as_str(), job["annotations"][0]["line"].as_i64()),
        (Some("src/main.rs"), Some(3))
    );

    let step_log = |n: i64| {
        let request = s.http.get(s.url(&format!("/api/v1/jobs/{}/logs?step={n}", job["id"]))).bearer_auth(&token);
        async move { request.send().await.expect("log").text().await.expect("text") }
    };
    let lint = step_log(1).await;
    // Each line the runner wrote starts with the time it was written, as on GitHub.
    assert!(lint.lines().all(|l| gitstratum_core::Timestamp::split_log_stamp(l).0.is_some()), "stamped lines: {lint}");
    let lint = unstamped(&lint);
    assert!(
        lint.contains("##[group]Checking\n##[error]unused variable\n##[warning]deprecated call\n##[endgroup]"),
        "{lint}"
    );
    let noisy = step_log(2).await;
    assert!(noisy.len() < (1 << 20) + 4096, "cut near the cap: {} bytes", noisy.len());
    assert!(noisy.ends_with("##[truncated] this step's log passed 1048576 bytes; the rest of it was not kept\n"));
    assert!(step_log(3).await.contains("after the noise"), "the job went on");
    let whole = job_log(&s, &token, job).await;
    assert!(
        whole.contains("unused variable") && whole.contains("after the noise") && whole.contains("Job ended: success")
    );

    // workflow_job: queued, in progress, completed (with the conclusion).
    let mut actions = Vec::new();
    while actions.len() < 3 {
        let (headers, body) = receiver.next().await;
        assert_eq!(headers["x-github-event"], "workflow_job");
        let payload: Value = serde_json::from_str(&body).expect("json");
        assert_eq!((&payload["workflow_job"]["id"], &payload["workflow_job"]["run_id"]), (&job["id"], &run["id"]));
        actions.push((
            payload["action"].as_str().unwrap_or_default().to_owned(),
            payload["workflow_job"]["conclusion"].as_str().map(str::to_owned),
        ));
    }
    assert_eq!(
        actions,
        [("queued".into(), None), ("in_progress".into(), None), ("completed".into(), Some("success".into()))]
    );
    s.stop().await;
}

/// Secrets through the API: a value goes in and never comes out (lists name secrets only); names
/// are checked; only the repository's admins may touch them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_go_in_and_never_come_out() {
    let Fixture { s, token, tmp: _tmp, git: _git, src: _src } = Fixture::new(false, false, Default::default()).await;
    let put = |name: &str, body: Value| {
        let path = format!("/api/v1/repos/admin/app/secrets/{name}");
        let s = &s;
        let token = token.clone();
        async move { s.send(Method::PUT, &path, Some(&token), Some(body)).await }
    };
    assert_eq!(put("deploy_key", json!({"value": "hunter2-value"})).await.0, 201);
    assert_eq!(put("DEPLOY_KEY", json!({"value": "hunter3-value"})).await.0, 204, "replaced");
    let (status, body) = put("GITHUB_X", json!({"value": "x"})).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(put("1ABC", json!({"value": "x"})).await.0, 422);
    assert_eq!(put("BIG", json!({"value": "x".repeat(49 * 1024)})).await.0, 422);
    assert_eq!(put("ORGONLY", json!({"value": "x", "visibility": "all"})).await.0, 422);
    let (status, list) = s.send(Method::GET, "/api/v1/repos/admin/app/secrets", Some(&token), None).await;
    assert_eq!(status, 200);
    assert_eq!((list["total_count"].as_i64(), list["secrets"][0]["name"].as_str()), (Some(1), Some("DEPLOY_KEY")));
    assert!(!list.to_string().contains("hunter"), "{list}");
    let reader = s.user_token("reader", &[gitstratum_platform::Scope::RepoRead]).await;
    let (status, _) = s.send(Method::GET, "/api/v1/repos/admin/app/secrets", Some(&reader), None).await;
    assert!(status == 403 || status == 404, "{status}");
    let (status, _) = s.send(Method::DELETE, "/api/v1/repos/admin/app/secrets/nope", Some(&token), None).await;
    assert_eq!(status, 404);
    let (status, _) = s.send(Method::DELETE, "/api/v1/repos/admin/app/secrets/deploy_key", Some(&token), None).await;
    assert_eq!(status, 204);
    let (status, _) = s
        .send(Method::PUT, "/api/v1/repos/admin/app/variables/region", Some(&token), Some(json!({"value": "eu-west"})))
        .await;
    assert_eq!(status, 201);
    let (_, vars) = s.send(Method::GET, "/api/v1/repos/admin/app/variables", Some(&token), None).await;
    assert_eq!(
        (vars["variables"][0]["name"].as_str(), vars["variables"][0]["value"].as_str()),
        (Some("REGION"), Some("eu-west"))
    );
    // The audit log names the changes, never the values.
    let (_, audit) = s.send(Method::GET, "/api/v1/audit?action=secret.update", Some(&token), None).await;
    assert!(audit.to_string().contains("DEPLOY_KEY") && !audit.to_string().contains("hunter"), "{audit}");
    s.stop().await;
}

/// A job is handed the secrets its workflow references and no others (the lease, read by hand).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_gets_only_the_secrets_it_references() {
    let Fixture { s, token, tmp: _tmp, git, src } = Fixture::new(false, false, Default::default()).await;
    for (name, value) in [("TOKEN_A", "alpha-value"), ("TOKEN_B", "bravo-value")] {
        let path = format!("/api/v1/repos/admin/app/secrets/{name}");
        assert_eq!(s.send(Method::PUT, &path, Some(&token), Some(json!({"value": value}))).await.0, 201);
    }
    write(
        &src,
        ".github/workflows/ci.yml",
        "on: push\njobs:\n  a:\n    runs-on: x\n    env:\n      A: ${{ secrets.token_a }}\n    steps:\n      - run: echo secrets.TOKEN_B is only text here\n",
    );
    commit(&git, &src, "first").await;
    let url = format!("http://x:{token}@{}/admin/app.git", s.base.trim_start_matches("http://"));
    git.ok(&src, &["push", "-q", &url, "main"]).await;
    runs(&s, &token, 1).await;
    let runner_token = s.user_token("admin", &[gitstratum_platform::Scope::CiRunner]).await;
    let rt = Some(runner_token.as_str());
    let (_, runner) =
        s.send(Method::POST, "/api/v1/runner/register", rt, Some(json!({"name": "r", "labels": ["x"]}))).await;
    let (status, lease) =
        s.send(Method::POST, &format!("/api/v1/runner/{}/jobs/request?wait=5", runner["id"]), rt, None).await;
    assert_eq!(status, 200, "{lease}");
    assert_eq!(lease["secrets"], json!({"TOKEN_A": "alpha-value"}), "{lease}");

    // A secret that cannot be opened (damaged, or another key): the job fails, saying why, and is
    // not handed out again and again.
    let store = gitstratum_platform::PlatformStore::open(&gitstratum_platform::DbTarget::Sqlite {
        path: s.data_dir.path().join("platform.db"),
    })
    .await
    .expect("store");
    let damage = sea_query::Query::update().table("secrets").value("sealed", "AAAA").to_owned();
    store.db().acquire().await.expect("conn").conn().execute(&damage).await.expect("damage");
    write(&src, "README.md", "again\n");
    commit(&git, &src, "second").await;
    git.ok(&src, &["push", "-q", &url, "main"]).await;
    let second = runs(&s, &token, 2).await.remove(0);
    let (status, none) =
        s.send(Method::POST, &format!("/api/v1/runner/{}/jobs/request?wait=2", runner["id"]), rt, None).await;
    assert_eq!(status, 204, "{none}");
    let detail = completed(&s, &token, &second).await;
    assert_eq!(detail["conclusion"], "failure", "{detail:#}");
    let message = detail["jobs"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("secrets cannot be opened"), "{message}");
    s.stop().await;
}

/// Secrets in a real job: what it references reaches it, and every form of every secret value is
/// masked in the log (plain, base64, URL-encoded, each line of a multi-line one, GITHUB_TOKEN);
/// variables are plain; a secret reaches a step's environment only where `env:` maps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_values_are_masked_in_every_form() {
    let Fixture { s, token, tmp: _tmp, git, src } = Fixture::new(true, false, Default::default()).await;
    for (name, value) in [("TOKEN_A", "alpha/secret value+123"), ("MULTI", "first line secret\nsecond line secret")] {
        let path = format!("/api/v1/repos/admin/app/secrets/{name}");
        assert_eq!(s.send(Method::PUT, &path, Some(&token), Some(json!({"value": value}))).await.0, 201);
    }
    let (status, _) = s
        .send(Method::PUT, "/api/v1/repos/admin/app/variables/REGION", Some(&token), Some(json!({"value": "eu-west"})))
        .await;
    assert_eq!(status, 201);
    write(
        &src,
        ".github/workflows/secrets.yml",
        r#"on: push
jobs:
  use:
    runs-on: ubuntu-latest
    steps:
      - env:
          A: ${{ secrets.token_a }}
        run: |
          echo "plain=$A"
          echo "b64=$(printf %s "$A" | base64)"
          echo "inb64=$(printf 'xy%sz' "$A" | base64 -w0)"
          echo "url=$(python3 -c 'import os,urllib.parse;print(urllib.parse.quote(os.environ["A"], safe=""))')"
          echo "region=${{ vars.REGION }}"
          echo "token=${{ secrets.GITHUB_TOKEN }}"
          printf '%s\n' "${{ secrets.MULTI }}"
      - run: echo "unmapped=[${A:-}]"
"#,
    );
    commit(&git, &src, "first").await;
    let url = format!("http://x:{token}@{}/admin/app.git", s.base.trim_start_matches("http://"));
    git.ok(&src, &["push", "-q", &url, "main"]).await;
    let run = runs(&s, &token, 1).await.remove(0);
    let detail = completed(&s, &token, &run).await;
    assert_eq!(detail["conclusion"], "success", "{detail:#}");
    let log = job_log(&s, &token, &detail["jobs"][0]).await;
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode("alpha/secret value+123");
    for leak in
        ["alpha", "secret value", &b64[..12], "alpha%2Fsecret", "first line secret", "second line secret", "gstj_"]
    {
        assert!(!log.contains(leak), "{leak:?} leaked:\n{log}");
    }
    for shown in ["plain=***", "url=***", "region=eu-west", "token=***", "unmapped=[]"] {
        assert!(log.contains(shown), "{shown:?} missing:\n{log}");
    }
    s.stop().await;
}

/// Usage of an organization after a real run (jobs, minutes, log bytes, by labels and repository),
/// and logs past their retention: deleted, and the API answers 410.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_reported_and_old_logs_expire() {
    let s = TestServer::start_with(gitstratum_server::ConfigLayer {
        embedded_runner: Some("true".into()),
        ..Default::default()
    })
    .await;
    let token = s.admin_token.clone();
    assert_eq!(s.send(Method::POST, "/api/v1/orgs", Some(&token), Some(json!({"name": "acme"}))).await.0, 201);
    assert_eq!(s.create_repo(Some(&token), json!({"name": "web", "owner": "acme"})).await.0, 201);
    let tmp = tempfile::tempdir().expect("temp dir");
    let git = Git::new(tmp.path());
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).expect("dir");
    git.ok(&src, &["init", "-q", "-b", "main"]).await;
    write(
        &src,
        ".github/workflows/ci.yml",
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo metered\n",
    );
    commit(&git, &src, "first").await;
    let url = format!("http://x:{token}@{}/acme/web.git", s.base.trim_start_matches("http://"));
    git.ok(&src, &["push", "-q", &url, "main"]).await;
    let run = runs_of(&s, &token, "acme/web", 1).await.remove(0);
    let detail = completed(&s, &token, &run).await;
    assert_eq!(detail["conclusion"], "success", "{detail:#}");
    let (status, usage) = s.send(Method::GET, "/api/v1/orgs/acme/usage", Some(&token), None).await;
    assert_eq!(status, 200, "{usage}");
    assert_eq!(usage["jobs"], 1, "{usage}");
    assert_eq!(usage["by_repository"][0]["repository"], "acme/web", "{usage}");
    assert_eq!(usage["by_labels"][0]["labels"], "ubuntu-latest", "{usage}");
    // The scheduler's queue wait, by tenant (the organization's id).
    let metrics = s.http.get(s.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("gitstratum_ci_queue_wait_duration_seconds_bucket{tenant="), "{metrics}");
    assert!(usage["log_bytes"].as_i64().is_some_and(|b| b > 0), "{usage}");
    let (status, _) = s.send(Method::GET, "/api/v1/orgs/acme/usage?from=2020-13-01", Some(&token), None).await;
    assert_eq!(status, 422);
    let (_, empty) =
        s.send(Method::GET, "/api/v1/orgs/acme/usage?from=2020-01-01&to=2020-02-01", Some(&token), None).await;
    assert_eq!(empty["jobs"], 0, "{empty}");
    // The organization's own CI limits: set by site administrators, read by its owners.
    let limits = |body: Value| s.send(Method::PUT, "/api/v1/orgs/acme/ci/limits", Some(&token), Some(body));
    let (status, set) = limits(json!({"max_running_jobs": 3})).await;
    assert_eq!(status, 200, "{set}");
    assert_eq!((set["max_running_jobs"].as_i64(), set["effective"]["max_running_jobs"].as_i64()), (Some(3), Some(3)));
    assert!(set["effective"]["max_queued_runs"].is_null(), "no default limit: {set}");
    assert_eq!(limits(json!({"max_running_jobs": 0})).await.0, 422);
    let outsider = s.user_token("outsider", &[gitstratum_platform::Scope::RepoAdmin]).await;
    let (status, _) = s
        .send(Method::PUT, "/api/v1/orgs/acme/ci/limits", Some(&outsider), Some(json!({"max_running_jobs": 99})))
        .await;
    assert_eq!(status, 403);
    let (_, got) = s.send(Method::GET, "/api/v1/orgs/acme/ci/limits", Some(&token), None).await;
    assert_eq!(got["max_running_jobs"], 3, "{got}");
    // A repository's own log retention.
    let settings = |body: Value| s.send(Method::PUT, "/api/v1/repos/acme/web/ci/settings", Some(&token), Some(body));
    assert_eq!(settings(json!({"log_retention_days": 0})).await.0, 422);
    assert_eq!(settings(json!({"log_retention_days": 30})).await.0, 200);
    let (_, got) = s.send(Method::GET, "/api/v1/repos/acme/web/ci/settings", Some(&token), None).await;
    assert_eq!(got["log_retention_days"], 30, "{got}");
    assert_eq!(settings(json!({"log_retention_days": null})).await.0, 200);

    // 200 days later, with the default 90-day retention, the log is gone.
    let job = &detail["jobs"][0];
    let ci = ci_store(&s).await;
    let logs = gitstratum_ci::LogStore::new(s.data_dir.path().join("blobs/logs"));
    let later =
        gitstratum_core::Timestamp(gitstratum_core::Clock::now(&gitstratum_core::SystemClock).0 + 200 * 86_400_000);
    let swept = gitstratum_ci::usage::sweep_logs(&ci, &logs, later, 90 * 86_400_000).await.expect("sweep");
    assert_eq!(swept, 1);
    assert!(!s.data_dir.path().join(format!("blobs/logs/{}", job["id"])).exists());
    let (status, body) = s.send(Method::GET, &format!("/api/v1/jobs/{}/logs", job["id"]), Some(&token), None).await;
    assert_eq!((status.as_u16(), body["error"]["code"].as_str()), (410, Some("logs.expired")), "{body}");
    s.stop().await;
}

/// Artifacts end to end, with the embedded runner: one job uploads (a directory, an exclude
/// pattern, a retention), another downloads it by name; a link out of the workspace and a
/// missing artifact fail their jobs, saying why; the API lists the run's artifacts and serves a
/// zip (exact length, valid to Python's zipfile); a job's token may not read them; storage is
/// metered; after the retention the artifact answers 410.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_travel_between_jobs_and_download_as_a_zip() {
    let Fixture { s, token, tmp, git, src } = Fixture::new(true, false, Default::default()).await;
    write(
        &src,
        ".github/workflows/art.yml",
        r#"on: push
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - run: |
          mkdir -p dist/sub
          echo hello > dist/a.txt
          head -c 100000 /dev/zero | tr '\0' x > dist/sub/big.txt
          echo map > dist/a.map
          echo hidden > dist/.env
      - uses: actions/upload-artifact@v4
        id: up
        with:
          name: dist
          path: |
            dist/
            !dist/**/*.map
          retention-days: 5
      - run: echo "uploaded ${{ steps.up.outputs.artifact-id }}"
  use:
    needs: build
    runs-on: ubuntu-latest
    steps:
      - uses: actions/download-artifact@v4
        with:
          name: dist
          path: got
      - run: |
          cat got/a.txt
          test ! -e got/a.map && test ! -e got/.env && echo "no map, no hidden"
          wc -c < got/sub/big.txt
  evil:
    runs-on: ubuntu-latest
    steps:
      - run: ln -s /etc/hostname leak
      - uses: actions/upload-artifact@v4
        with:
          name: leak
          path: leak
  missing:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/download-artifact@v4
        with:
          name: nope
"#,
    );
    commit(&git, &src, "first").await;
    let url = format!("http://x:{token}@{}/admin/app.git", s.base.trim_start_matches("http://"));
    git.ok(&src, &["push", "-q", &url, "main"]).await;
    let run = runs(&s, &token, 1).await.remove(0);
    let detail = completed(&s, &token, &run).await;
    let jobs = detail["jobs"].as_array().expect("jobs");
    let ends: Vec<(&str, &str)> = jobs
        .iter()
        .map(|j| (j["name"].as_str().unwrap_or_default(), j["conclusion"].as_str().unwrap_or_default()))
        .collect();
    if ends != [("build", "success"), ("use", "success"), ("evil", "failure"), ("missing", "failure")] {
        let mut logs = String::new();
        for job in jobs {
            logs.push_str(&job_log(&s, &token, job).await);
        }
        panic!("{ends:?}\n{logs}");
    }
    let log = job_log(&s, &token, &jobs[1]).await;
    assert!(log.contains("hello") && log.contains("no map, no hidden") && log.contains("100000"), "{log}");
    let log = job_log(&s, &token, &jobs[2]).await;
    assert!(log.contains("outside the workspace"), "{log}");
    let log = job_log(&s, &token, &jobs[3]).await;
    assert!(log.contains("artifact \"nope\" not found in this run"), "{log}");

    let (status, list) =
        s.send(Method::GET, &format!("/api/v1/runs/{}/artifacts", run["id"]), Some(&token), None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["total_count"], 1, "{list}");
    let artifact = &list["artifacts"][0];
    assert_eq!((artifact["name"].as_str(), artifact["files"].as_i64()), (Some("dist"), Some(2)), "{artifact}");
    assert_eq!(artifact["size_in_bytes"], 100_006, "{artifact}");
    assert!(job_log(&s, &token, &jobs[0]).await.contains(&format!("uploaded {}", artifact["id"])));
    let zip = s
        .http
        .get(s.url(&format!("/api/v1/artifacts/{}/download", artifact["id"])))
        .bearer_auth(&token)
        .send()
        .await
        .expect("download");
    assert_eq!(zip.status(), 200);
    let length = zip.content_length();
    let bytes = zip.bytes().await.expect("zip");
    assert_eq!(length, Some(bytes.len() as u64), "the announced length is the length");
    let file = tmp.path().join("dist.zip");
    std::fs::write(&file, &bytes).expect("write zip");
    let check = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); assert z.testzip() is None; \
             print(sorted(z.namelist())); print(z.read('a.txt').decode().strip())",
        ])
        .arg(&file)
        .output()
        .expect("python3");
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{out} {}", String::from_utf8_lossy(&check.stderr));
    assert_eq!(out, "['a.txt', 'sub/big.txt']\nhello\n");
    // Storage is metered for the repository's owner.
    let (_, usage) = s.send(Method::GET, "/api/v1/user/usage", Some(&token), None).await;
    assert!(usage["artifact_bytes"].as_i64().is_some_and(|b| b > 0 && b < 100_006), "compressed: {usage}");
    assert_eq!(usage["by_repository"][0]["artifact_bytes"], usage["artifact_bytes"], "{usage}");
    // Someone who may not read the repository sees nothing (it is public: anyone may read).
    let (status, _) = s.send(Method::DELETE, &format!("/api/v1/artifacts/{}", artifact["id"]), None, None).await;
    assert_eq!(status, 401);

    // After its 5 days, the artifact is gone: 410, and the list says so.
    let ci = ci_store(&s).await;
    let blobs = gitstratum_ci::blob::FsBlobStore::open(s.data_dir.path().join("blobs")).expect("blobs");
    let artifacts = gitstratum_ci::Artifacts::new(ci, std::sync::Arc::new(blobs), Default::default());
    let later =
        gitstratum_core::Timestamp(gitstratum_core::Clock::now(&gitstratum_core::SystemClock).0 + 6 * 86_400_000);
    assert_eq!(artifacts.sweep(later).await.expect("sweep"), 1);
    let path = format!("/api/v1/artifacts/{}/download", artifact["id"]);
    let (status, body) = s.send(Method::GET, &path, Some(&token), None).await;
    assert_eq!((status.as_u16(), body["error"]["code"].as_str()), (410, Some("artifact.expired")), "{body}");
    let (_, list) = s.send(Method::GET, &format!("/api/v1/runs/{}/artifacts", run["id"]), Some(&token), None).await;
    assert_eq!(list["artifacts"][0]["expired"], true, "{list}");
    s.stop().await;
}

/// With `[object_storage]` set, artifact archives live in S3-compatible object storage (a real
/// three-node Garage cluster, replication factor 3), not under the data directory: uploaded by one
/// job, downloaded by the next and through the API, and deleted from the bucket by retention.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_live_in_object_storage_when_configured() {
    let Some(garage) = gitstratum_ci::testing::Garage::start("site") else { return };
    let config = common::object_storage_layer(&garage.config);
    let Fixture { s, token, tmp: _tmp, git, src } = Fixture::new(true, false, config).await;
    write(
        &src,
        ".github/workflows/art.yml",
        r#"on: push
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - run: mkdir dist && echo from-s3 > dist/a.txt
      - uses: actions/upload-artifact@v4
        with:
          name: dist
          path: dist/
          retention-days: 1
  use:
    needs: build
    runs-on: ubuntu-latest
    steps:
      - uses: actions/download-artifact@v4
        with:
          name: dist
      - run: cat a.txt
"#,
    );
    commit(&git, &src, "first").await;
    let url = format!("http://x:{token}@{}/admin/app.git", s.base.trim_start_matches("http://"));
    git.ok(&src, &["push", "-q", &url, "main"]).await;
    let run = runs(&s, &token, 1).await.remove(0);
    let detail = completed(&s, &token, &run).await;
    let jobs = detail["jobs"].as_array().expect("jobs");
    assert_eq!(detail["conclusion"], "success", "{detail}\n{}", job_log(&s, &token, &jobs[0]).await);
    assert!(job_log(&s, &token, &jobs[1]).await.contains("from-s3"));

    let runtime = tokio::runtime::Handle::current();
    let staging = tempfile::tempdir().expect("tmp");
    let bucket =
        gitstratum_ci::blob::s3::S3BlobStore::open(&garage.config, runtime, staging.path().to_owned()).expect("client");
    let listed = tokio::task::spawn_blocking({
        let bucket = std::sync::Arc::new(bucket);
        move || gitstratum_ci::blob::BlobStore::list(bucket.as_ref(), "artifacts")
    });
    let listed = listed.await.expect("join").expect("list the bucket");
    assert_eq!(listed.len(), 1, "the archive is in the bucket: {listed:?}");
    assert!(!s.data_dir.path().join("blobs/artifacts").exists(), "and not under the data directory");
    let (_, list) = s.send(Method::GET, &format!("/api/v1/runs/{}/artifacts", run["id"]), Some(&token), None).await;
    let zip = s
        .http
        .get(s.url(&format!("/api/v1/artifacts/{}/download", list["artifacts"][0]["id"])))
        .bearer_auth(&token)
        .send()
        .await
        .expect("download");
    assert_eq!(zip.status(), 200);
    assert!(zip.bytes().await.expect("zip").windows(8).any(|w| w == b"from-s3\n"), "the file is in the zip");
    s.stop().await;
    drop(garage);
}

/// `actions/cache` end to end: a miss saves after the job; the next run on the branch restores
/// the newest cache by a restore-keys prefix (workspace and $HOME paths) and an exact key hits
/// without saving again; a run on another branch falls back to the default branch's caches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caches_restore_by_key_prefix_and_from_the_default_branch() {
    let Fixture { s, token, tmp: _tmp, git, src } = Fixture::new(true, false, Default::default()).await;
    write(
        &src,
        ".github/workflows/cache.yml",
        r#"on: push
jobs:
  prefix:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/cache@v4
        id: c
        with:
          path: |
            deps
            ~/.tool
          key: deps-${{ github.sha }}
          restore-keys: |
            deps-
      - run: |
          echo "hit=${{ steps.c.outputs.cache-hit }} matched=${{ steps.c.outputs.cache-matched-key }}"
          echo "deps from $(cat deps/from 2>/dev/null || echo nothing), tool $(cat ~/.tool/t 2>/dev/null || echo none)"
          mkdir -p deps ~/.tool
          echo "$GITHUB_SHA" > deps/from
          echo sharp > ~/.tool/t
  exact:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: actions/cache@v4
        id: c
        with:
          path: out
          key: fixed-${{ hashFiles('**/lock.txt') }}
      - run: |
          echo "exact hit=${{ steps.c.outputs.cache-hit }}"
          mkdir -p out && echo built > out/f
"#,
    );
    write(&src, "deps/lock.txt", "pinned");
    let url = format!("http://x:{token}@{}/admin/app.git", s.base.trim_start_matches("http://"));
    let mut shas = Vec::new();
    let mut logs = Vec::new();
    for (n, branch) in [(1, "main"), (2, "main"), (3, "feature")] {
        write(&src, "n.txt", &n.to_string());
        commit(&git, &src, &format!("commit {n}")).await;
        let sha = git.ok(&src, &["rev-parse", "HEAD"]).await.trim().to_owned();
        git.ok(&src, &["push", "-q", &url, &format!("HEAD:refs/heads/{branch}")]).await;
        let run = runs(&s, &token, n).await.remove(0);
        let detail = completed(&s, &token, &run).await;
        assert_eq!(detail["conclusion"], "success", "{detail:#}");
        let jobs = detail["jobs"].as_array().expect("jobs");
        logs.push((job_log(&s, &token, &jobs[0]).await, job_log(&s, &token, &jobs[1]).await));
        shas.push(sha);
    }
    let (prefix, exact) = &logs[0];
    assert!(prefix.contains("hit=false matched=") && prefix.contains("deps from nothing, tool none"), "{prefix}");
    assert!(prefix.contains(&format!("Cache saved with key \"deps-{}\"", shas[0])), "{prefix}");
    // hashFiles('**/lock.txt'): the SHA-256 of the SHA-256 of the one file it matches.
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    use sha2::Digest;
    let fixed = format!("fixed-{}", hex(&sha2::Sha256::digest(sha2::Sha256::digest(b"pinned"))));
    assert!(
        exact.contains("exact hit=false") && exact.contains(&format!("Cache saved with key \"{fixed}\"")),
        "{exact}"
    );
    let (prefix, exact) = &logs[1];
    assert!(prefix.contains(&format!("hit=false matched=deps-{}", shas[0])), "{prefix}");
    assert!(prefix.contains(&format!("deps from {}, tool sharp", shas[0])), "{prefix}");
    assert!(exact.contains("exact hit=true") && !exact.contains("Cache saved"), "{exact}");
    // Another branch: nothing of its own, so the default branch's newest.
    let (prefix, _) = &logs[2];
    assert!(prefix.contains(&format!("deps from {}", shas[1])), "{prefix}");
    let (status, caches) = s.send(Method::GET, "/api/v1/repos/admin/app/caches", Some(&token), None).await;
    assert_eq!(status, 200, "{caches}");
    let mut keys: Vec<(String, String)> = caches
        .as_array()
        .expect("caches")
        .iter()
        .map(|c| (c["key"].as_str().unwrap_or_default().to_owned(), c["ref"].as_str().unwrap_or_default().to_owned()))
        .collect();
    keys.sort();
    let main = "refs/heads/main".to_owned();
    let mut expected = vec![
        (format!("deps-{}", shas[0]), main.clone()),
        (format!("deps-{}", shas[1]), main.clone()),
        (format!("deps-{}", shas[2]), "refs/heads/feature".to_owned()),
        (fixed, main),
    ];
    expected.sort();
    assert_eq!(keys, expected);
    s.stop().await;
}

/// A server (with or without the embedded runner), a repository `admin/app`, and a local
/// repository `src` to push from.
/// Workflows that used to end differently than on GitHub, each run for real and held to GitHub's
/// documented result: the implied `success()` of `if:` for steps and jobs, status functions over
/// the whole chain of `needs` (and naming jobs), `env` (from `$GITHUB_ENV` and the step's own)
/// in a step's `if:`, legacy workflow commands, one `/tmp` per job, GitHub's default variables,
/// contexts and event payload, matrices from `needs` outputs (and an empty one failing its job),
/// spliced and inserted matrix values, a strategy without a matrix, a job without steps, and an
/// action this runner cannot run failing its step with a clear message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_end_as_they_do_on_github() {
    let Fixture { s, token, tmp: _tmp, git, src } = Fixture::new(true, false, Default::default()).await;
    write(
        &src,
        ".github/workflows/conditions.yml",
        r#"name: conditions
on: push
jobs:
  steps:
    runs-on: ubuntu-latest
    steps:
      - run: exit 1
      - if: github.event_name == 'push'
        run: echo SHOULD-NOT-RUN
      - if: always() && github.event_name == 'push'
        run: echo always-ran
  fail:
    runs-on: ubuntu-latest
    steps:
      - run: exit 1
  recover:
    needs: fail
    if: success() || failure()
    runs-on: ubuntu-latest
    steps:
      - run: echo recovered
  next:
    needs: recover
    runs-on: ubuntu-latest
    steps:
      - run: echo SHOULD-NOT-RUN
  named:
    needs: recover
    if: success('recover')
    runs-on: ubuntu-latest
    steps:
      - run: echo named ran
  implied:
    needs: fail
    if: github.event_name == 'push'
    runs-on: ubuntu-latest
    steps:
      - run: echo SHOULD-NOT-RUN
"#,
    );
    write(
        &src,
        ".github/workflows/env.yml",
        r#"name: env
on: push
jobs:
  env:
    runs-on: ubuntu-latest
    steps:
      - id: first
        run: |
          echo "FROM_FILE=yes" >> "$GITHUB_ENV"
          mkdir -p /tmp/tools
          printf '#!/bin/sh\necho tool-in-tmp\n' > /tmp/tools/mytool
          chmod +x /tmp/tools/mytool
          echo /tmp/tools >> "$GITHUB_PATH"
          echo "::set-output name=legacy::old-style"
          echo "::save-state name=st::1"
      - if: env.FROM_FILE == 'yes'
        run: echo if-saw-env
      - if: env.STEP_OWN == 'mine'
        env:
          STEP_OWN: mine
        run: echo if-saw-step-env
      - run: |
          mytool
          echo "legacy=${{ steps.first.outputs.legacy }}"
          for v in GITHUB_RUN_ATTEMPT GITHUB_SERVER_URL GITHUB_API_URL GITHUB_REPOSITORY_OWNER GITHUB_REPOSITORY_ID GITHUB_REF_TYPE GITHUB_WORKFLOW GITHUB_WORKFLOW_REF GITHUB_WORKFLOW_SHA GITHUB_ACTOR_ID GITHUB_TRIGGERING_ACTOR GITHUB_EVENT_PATH GITHUB_ACTION GITHUB_RETENTION_DAYS GITHUB_STATE RUNNER_NAME RUNNER_TOOL_CACHE RUNNER_TEMP; do
            eval "val=\${$v-UNSET}"
            echo "$v=$val"
          done
          echo "HEAD_REF=[${GITHUB_HEAD_REF-UNSET}]"
          python3 -c 'import json, os; e = json.load(open(os.environ["GITHUB_EVENT_PATH"])); print("event", e["ref"], e["after"] == os.environ["GITHUB_SHA"], e["head_commit"]["message"])'
          echo "ctx ${{ github.run_attempt }} ${{ github.event.head_commit.message }} ${{ github.action }} ${{ runner.name != '' }}"
  unsecure:
    runs-on: ubuntu-latest
    env:
      ACTIONS_ALLOW_UNSECURE_COMMANDS: 'true'
    steps:
      - run: |
          echo "::set-env name=SET_BY_CMD::hello"
          echo "::add-path::/opt/legacy-bin"
      - run: echo "set-env=$SET_BY_CMD path=$PATH"
  secure:
    runs-on: ubuntu-latest
    steps:
      - run: echo "::set-env name=X::1"
"#,
    );
    write(
        &src,
        ".github/workflows/matrix.yml",
        r#"name: matrix
on: push
jobs:
  setup:
    runs-on: ubuntu-latest
    outputs:
      matrix: ${{ steps.m.outputs.matrix }}
      empty: ${{ steps.m.outputs.empty }}
    steps:
      - id: m
        run: |
          echo 'matrix={"n":[1,2]}' >> "$GITHUB_OUTPUT"
          echo 'empty={}' >> "$GITHUB_OUTPUT"
  from-needs:
    needs: setup
    runs-on: ubuntu-latest
    strategy:
      matrix: ${{ fromJSON(needs.setup.outputs.matrix) }}
    steps:
      - run: echo "n=${{ matrix.n }}"
  empty:
    needs: setup
    runs-on: ubuntu-latest
    strategy:
      matrix: ${{ fromJSON(needs.setup.outputs.empty) }}
    steps:
      - run: echo never
  spliced:
    runs-on: ubuntu-latest
    strategy:
      matrix:
        v:
          - one
          - ${{ fromJSON('["two","three"]') }}
        ${{ insert }}: ${{ fromJSON('{"os":["l"]}') }}
    steps:
      - run: echo "${{ matrix.v }}-${{ matrix.os }} ${{ strategy.job-index }}/${{ strategy.job-total }} ${{ strategy.fail-fast }}"
  no-matrix:
    runs-on: ubuntu-latest
    strategy:
      fail-fast: false
    steps:
      - run: echo plain
  after:
    needs: from-needs
    runs-on: ubuntu-latest
    steps:
      - run: echo "after ${{ needs.from-needs.result }}"
"#,
    );
    write(
        &src,
        ".github/workflows/other.yml",
        r#"name: other
on: push
jobs:
  uses-other:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/setup-node@v4
  no-steps:
    runs-on: ubuntu-latest
  in-container:
    runs-on: ubuntu-latest
    container: alpine:3
    steps:
      - run: echo SHOULD-NOT-RUN
"#,
    );
    write(
        &src,
        ".github/workflows/defaults.yml",
        r#"name: defaults
on: push
defaults:
  run:
    shell: sh
    working-directory: /tmp
jobs:
  workflow-defaults:
    runs-on: ubuntu-latest
    steps:
      - run: '[ -z "$BASH_VERSION" ] && echo "not bash, in $(pwd)"'
  computed:
    runs-on: ubuntu-latest
    strategy:
      matrix:
        ${{ github.event_name }}-dir: ['/home/runner']
    steps:
      - run: echo "computed ${{ matrix.push-dir }} in $(pwd)"
        working-directory: ${{ matrix.push-dir }}
"#,
    );
    commit(&git, &src, "the commit message").await;
    let url = format!("http://x:{token}@{}/admin/app.git", s.base.trim_start_matches("http://"));
    git.ok(&src, &["push", "-q", &url, "main"]).await;
    let mut details = std::collections::HashMap::new();
    for run in runs(&s, &token, 5).await {
        let detail = completed(&s, &token, &run).await;
        details.insert(detail["name"].as_str().unwrap_or_default().to_owned(), detail);
    }
    let ends = |workflow: &str| -> std::collections::BTreeMap<String, (String, String)> {
        details[workflow]["jobs"]
            .as_array()
            .expect("jobs")
            .iter()
            .map(|j| {
                let s = |k: &str| j[k].as_str().unwrap_or_default().to_owned();
                (s("name"), (s("conclusion"), s("message")))
            })
            .collect()
    };
    let job = |workflow: &str, name: &str| -> Value {
        details[workflow]["jobs"].as_array().expect("jobs").iter().find(|j| j["name"] == name).cloned().expect(name)
    };

    // Conditions: GitHub's implied success(), and the whole chain of needs.
    let conditions = ends("conditions");
    let conclusion = |name: &str| conditions[name].0.as_str();
    assert_eq!(
        ["steps", "fail", "recover", "next", "named", "implied"].map(conclusion),
        ["failure", "failure", "success", "skipped", "success", "skipped"],
        "{conditions:#?}"
    );
    let log = job_log(&s, &token, &job("conditions", "steps")).await;
    assert!(log.contains("always-ran") && !log.contains("SHOULD-NOT-RUN"), "{log}");
    assert!(conditions["next"].1.contains("fail did not succeed"), "{conditions:#?}");

    // Env, commands, /tmp, default variables and the event payload.
    let env = ends("env");
    assert_eq!(["env", "unsecure", "secure"].map(|n| env[n].0.as_str()), ["success", "success", "failure"], "{env:#?}");
    let log = job_log(&s, &token, &job("env", "env")).await;
    for needle in [
        "if-saw-env",
        "if-saw-step-env",
        "tool-in-tmp",
        "legacy=old-style",
        "GITHUB_RUN_ATTEMPT=1",
        &format!("GITHUB_SERVER_URL={}", s.base),
        &format!("GITHUB_API_URL={}/api/v1", s.base),
        "GITHUB_REPOSITORY_OWNER=admin",
        "GITHUB_REF_TYPE=branch",
        "GITHUB_WORKFLOW=env",
        "GITHUB_WORKFLOW_REF=admin/app/.github/workflows/env.yml@refs/heads/main",
        "GITHUB_TRIGGERING_ACTOR=admin",
        "GITHUB_EVENT_PATH=/__gitstratum/files/event.json",
        "GITHUB_ACTION=__run_3",
        "GITHUB_RETENTION_DAYS=90",
        "RUNNER_TOOL_CACHE=/home/runner/_tool",
        "RUNNER_TEMP=/tmp",
        "HEAD_REF=[]",
        "event refs/heads/main True the commit message",
        "ctx 1 the commit message __run_3 true",
    ] {
        assert!(log.contains(needle), "{needle:?} not in:\n{log}");
    }
    for unset in ["GITHUB_REPOSITORY_ID=UNSET", "GITHUB_ACTOR_ID=UNSET", "GITHUB_STATE=UNSET", "RUNNER_NAME=UNSET"] {
        assert!(!log.contains(unset), "{unset} in:\n{log}");
    }
    let log = job_log(&s, &token, &job("env", "unsecure")).await;
    assert!(log.contains("set-env=hello path=/opt/legacy-bin:"), "{log}");
    let log = job_log(&s, &token, &job("env", "secure")).await;
    assert!(log.contains("The `set-env` command is disabled."), "{log}");

    // Matrices.
    let matrix = ends("matrix");
    let names: Vec<&str> = matrix.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "after",
            "empty",
            "from-needs (1)",
            "from-needs (2)",
            "no-matrix",
            "setup",
            "spliced (one, l)",
            "spliced (three, l)",
            "spliced (two, l)"
        ],
        "{matrix:#?}"
    );
    for (name, (conclusion, message)) in &matrix {
        let want = if name == "empty" { "failure" } else { "success" };
        assert_eq!(conclusion, want, "{name}: {message}");
    }
    assert!(matrix["empty"].1.contains("Matrix must define at least one vector"), "{matrix:#?}");
    assert!(job_log(&s, &token, &job("matrix", "from-needs (2)")).await.contains("n=2"));
    let log = job_log(&s, &token, &job("matrix", "spliced (three, l)")).await;
    assert!(log.contains("three-l 2/3 true"), "the strategy context: {log}");
    assert!(job_log(&s, &token, &job("matrix", "after")).await.contains("after success"));

    // The workflow's `defaults.run`; a computed vector name; `working-directory` from an expression.
    assert_eq!(details["defaults"]["conclusion"], "success", "{:#}", details["defaults"]);
    let log = job_log(&s, &token, &job("defaults", "workflow-defaults")).await;
    assert!(log.contains("not bash, in /tmp"), "{log}");
    let log = job_log(&s, &token, &job("defaults", "computed (/home/runner)")).await;
    assert!(log.contains("computed /home/runner in /home/runner"), "{log}");

    // An action this installation does not have fails its step, saying so; a job without steps
    // succeeds.
    let other = ends("other");
    assert_eq!(
        ["uses-other", "no-steps", "in-container"].map(|n| other[n].0.as_str()),
        ["failure", "success", "failure"],
        "{other:#?}"
    );
    assert!(other["in-container"].1.contains("container"), "{other:#?}");
    assert!(
        other["uses-other"].1.contains(
            "Unable to resolve action 'actions/setup-node@v4': no repository actions/setup-node this job may use"
        ),
        "{other:#?}"
    );
    s.stop().await;
}

/// Actions from the job's workspace (`uses: ./path`), run as GitHub runs them: a composite action
/// with inputs (a default), outputs over its steps, `$GITHUB_ENV`/`$GITHUB_PATH` reaching the
/// rest of the job, `github.action_path` and a nested composite action; a JavaScript action with
/// `INPUT_*`, outputs, state and a `post` script at the job's end; a Docker action refused with
/// its reason; an `action.yml` with a mistake reported at its line and column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_from_the_workspace_run_as_on_github() {
    let Fixture { s, token, tmp: _tmp, git, src } = Fixture::new(true, false, Default::default()).await;
    write(
        &src,
        ".github/workflows/flow.yml",
        r#"on: push
jobs:
  use:
    runs-on: ubuntu-latest
    outputs:
      greeting: ${{ steps.greet.outputs.greeting }}
    steps:
      - uses: actions/checkout@v4
      - id: greet
        uses: ./.github/actions/greet
        with:
          who: world
          extra: ignored
      - run: |
          echo "outer got ${{ steps.greet.outputs.greeting }} ${{ steps.greet.outcome }}"
          echo "env from action: $FROM_ACTION"
          helper-tool
      - id: js
        uses: ./.github/actions/js
        with:
          name: Mona
      - run: echo "js said ${{ steps.js.outputs.said }}"
      - id: docker
        uses: ./.github/actions/docker
        continue-on-error: true
      - run: echo "docker step ${{ steps.docker.outcome }}"
  bad:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: ./.github/actions/bad
  missing:
    runs-on: ubuntu-latest
    steps:
      - uses: ./.github/actions/greet
"#,
    );
    write(
        &src,
        ".github/actions/greet/action.yml",
        r#"name: Greet
inputs:
  who:
    required: true
  punctuation:
    default: "!"
outputs:
  greeting:
    value: ${{ steps.make.outputs.text }}
runs:
  using: composite
  steps:
    - id: make
      shell: bash
      run: echo "text=hello ${{ inputs.who }}${{ inputs.punctuation }}" >> "$GITHUB_OUTPUT"
    - shell: bash
      run: |
        echo "FROM_ACTION=set" >> "$GITHUB_ENV"
        mkdir -p "$HOME/tools"
        printf '#!/bin/sh\necho helper ran\n' > "$HOME/tools/helper-tool"
        chmod +x "$HOME/tools/helper-tool"
        echo "$HOME/tools" >> "$GITHUB_PATH"
        echo "path is ${{ github.action_path }} $GITHUB_ACTION_PATH"
        cat "$GITHUB_ACTION_PATH/data.txt"
    - if: failure()
      shell: bash
      run: echo never runs
    - uses: ./.github/actions/inner
      with:
        x: nested
"#,
    );
    write(&src, ".github/actions/greet/data.txt", "data beside the action\n");
    write(
        &src,
        ".github/actions/inner/action.yaml",
        "name: Inner\ninputs:\n  x: {}\nruns:\n  using: composite\n  steps:\n    - run: echo \"inner ${{ inputs.x }}\"\n      shell: sh\n",
    );
    write(
        &src,
        ".github/actions/js/action.yml",
        "name: JS\ninputs:\n  name:\n    required: true\noutputs:\n  said:\n    description: what it said\nruns:\n  using: node20\n  main: main.js\n  post: post.js\n",
    );
    write(
        &src,
        ".github/actions/js/main.js",
        r#"const fs = require('fs');
const name = process.env.INPUT_NAME;
console.log(`main sees ${name} in ${process.cwd()}`);
fs.appendFileSync(process.env.GITHUB_OUTPUT, `said=hi ${name}\n`);
fs.appendFileSync(process.env.GITHUB_STATE, `phase=main-ran\n`);
console.log('::save-state name=legacy::old-style');
"#,
    );
    write(
        &src,
        ".github/actions/js/post.js",
        "console.log(`post saw state ${process.env.STATE_phase} ${process.env.STATE_legacy}`);\n",
    );
    write(&src, ".github/actions/docker/action.yml", "name: D\nruns:\n  using: docker\n  image: Dockerfile\n");
    write(
        &src,
        ".github/actions/bad/action.yml",
        "name: Bad\nruns:\n  using: composite\n  steps:\n    - run: echo no shell\n",
    );
    commit(&git, &src, "actions").await;
    let url = format!("http://x:{token}@{}/admin/app.git", s.base.trim_start_matches("http://"));
    git.ok(&src, &["push", "-q", &url, "main"]).await;
    let run = runs(&s, &token, 1).await.remove(0);
    let detail = completed(&s, &token, &run).await;
    let jobs = detail["jobs"].as_array().expect("jobs");
    let ends: Vec<(&str, &str)> = jobs
        .iter()
        .map(|j| (j["key"].as_str().unwrap_or_default(), j["conclusion"].as_str().unwrap_or_default()))
        .collect();
    let used = job_log(&s, &token, &jobs[0]).await;
    assert_eq!(ends, [("use", "success"), ("bad", "failure"), ("missing", "failure")], "{used}");
    assert_eq!(jobs[0]["outputs"], json!({"greeting": "hello world!"}), "{used}");
    for expected in [
        "Unexpected input(s) 'extra', valid inputs are ['who', 'punctuation']",
        "outer got hello world! success",
        "env from action: set",
        "helper ran",
        "path is /workspace/.github/actions/greet /workspace/.github/actions/greet",
        "data beside the action",
        "inner nested",
        "main sees Mona in /workspace",
        "js said hi Mona",
        "Docker actions need a container executor",
        "docker step failure",
        "Post Run ./.github/actions/js",
        "post saw state main-ran old-style",
    ] {
        assert!(used.contains(expected), "{expected:?} not in:\n{used}");
    }
    assert!(!used.contains("never runs"), "{used}");
    let bad = job_log(&s, &token, &jobs[1]).await;
    assert!(
        bad.contains("/workspace/.github/actions/bad/action.yml:5:7: runs.steps, step 1: 'shell' is required"),
        "{bad}"
    );
    let missing = job_log(&s, &token, &jobs[2]).await;
    assert!(missing.contains("Did you forget to run actions/checkout"), "{missing}");
    s.stop().await;
}

/// Actions from other repositories of the installation (`owner/repo[/path]@ref`): resolved to a
/// commit by tag or branch, fetched with the job's lease into the runner's cache (the second use
/// comes from it), run from a read-only directory; a private action repository of another owner,
/// and a reference that names nothing, are refused with their reasons.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_from_other_repositories_resolve_and_cache() {
    let Fixture { s, token, tmp, git, src } = Fixture::new(true, false, Default::default()).await;
    let host = s.base.trim_start_matches("http://").to_owned();
    // admin/tools: private, the same owner as admin/app.
    let (status, body) = s.create_repo(Some(&token), json!({"name": "tools", "private": true})).await;
    assert_eq!(status, 201, "{body}");
    let tools = tmp.path().join("tools");
    std::fs::create_dir_all(&tools).expect("dir");
    git.ok(&tools, &["init", "-q", "-b", "main"]).await;
    write(
        &tools,
        "action.yml",
        "name: Tools\ninputs:\n  word: {default: none}\noutputs:\n  upper:\n    value: ${{ steps.up.outputs.v }}\nruns:\n  using: composite\n  steps:\n    - id: up\n      shell: bash\n      run: |\n        echo \"v=$(echo '${{ inputs.word }}' | tr a-z A-Z)\" >> \"$GITHUB_OUTPUT\"\n        echo \"tools at $GITHUB_ACTION_PATH\"\n        echo \"from ${{ github.action_repository }} at $GITHUB_ACTION_REF\"\n        touch \"$GITHUB_ACTION_PATH/written\" 2>/dev/null || echo 'the action directory is read-only'\n",
    );
    write(&tools, "greet/action.yml", "name: Greet\nruns:\n  using: node20\n  main: index.js\n");
    write(&tools, "greet/index.js", "console.log(`greetings from ${process.env.GITHUB_ACTION_PATH}`);\n");
    write(&tools, "docker/action.yml", "name: D\nruns:\n  using: docker\n  image: Dockerfile\n");
    write(&tools, "bad/action.yml", "name: Bad\nruns:\n  using: node8\n  main: x.js\n");
    commit(&git, &tools, "tools").await;
    git.ok(&tools, &["tag", "v1"]).await;
    let tools_url = format!("http://x:{token}@{host}/admin/tools.git");
    git.ok(&tools, &["push", "-q", &tools_url, "main", "v1"]).await;

    write(
        &src,
        ".github/workflows/flow.yml",
        r#"on: push
jobs:
  first:
    runs-on: ubuntu-latest
    steps:
      - id: t
        uses: admin/tools@v1
        with:
          word: hello
      - uses: admin/tools/greet@main
      - run: echo "upper ${{ steps.t.outputs.upper }}"
  second:
    needs: first
    runs-on: ubuntu-latest
    steps:
      - uses: admin/tools@v1
  unknown:
    runs-on: ubuntu-latest
    steps:
      - uses: admin/tools@no-such-tag
  docker:
    runs-on: ubuntu-latest
    steps:
      - run: echo never
      - uses: admin/tools/docker@v1
  bad:
    runs-on: ubuntu-latest
    steps:
      - uses: admin/tools/bad@v1
"#,
    );
    commit(&git, &src, "use tools").await;
    git.ok(&src, &["push", "-q", &format!("http://x:{token}@{host}/admin/app.git"), "main"]).await;
    let run = runs(&s, &token, 1).await.remove(0);
    let detail = completed(&s, &token, &run).await;
    let jobs = detail["jobs"].as_array().expect("jobs");
    let ends: Vec<(&str, &str)> = jobs
        .iter()
        .map(|j| (j["key"].as_str().unwrap_or_default(), j["conclusion"].as_str().unwrap_or_default()))
        .collect();
    let first = job_log(&s, &token, &jobs[0]).await;
    assert_eq!(
        ends,
        [
            ("first", "success"),
            ("second", "success"),
            ("unknown", "failure"),
            ("docker", "failure"),
            ("bad", "failure")
        ],
        "{first}"
    );
    let sha = git.ok(&tools, &["rev-parse", "HEAD"]).await.trim().to_owned();
    for expected in [
        format!("Download action repository 'admin/tools@v1' (SHA:{sha})"),
        format!("tools at /__gitstratum/actions/admin/tools/{sha}"),
        "the action directory is read-only".to_owned(),
        format!("greetings from /__gitstratum/actions/admin/tools/{sha}/greet"),
        "upper HELLO".to_owned(),
        "from admin/tools at v1".to_owned(),
    ] {
        assert!(first.contains(&expected), "{expected:?} not in:\n{first}");
    }
    let second = job_log(&s, &token, &jobs[1]).await;
    assert!(second.contains("from this runner's cache"), "{second}");
    // The job's record names the commit each action resolved to.
    assert_eq!(
        jobs[0]["actions"],
        json!([{"uses": "admin/tools@main", "commit": sha}, {"uses": "admin/tools@v1", "commit": sha}]),
        "{detail:#}"
    );
    // Actions that cannot be used fail their jobs when the run is created, saying where.
    let message = |i: usize| jobs[i]["message"].as_str().unwrap_or_default().to_owned();
    assert_eq!(
        message(2),
        ".github/workflows/flow.yml:20:9: step 1: Unable to resolve action 'admin/tools@no-such-tag': admin/tools has no tag, branch or commit 'no-such-tag'"
    );
    assert!(
        message(3).starts_with(".github/workflows/flow.yml:25:9: step 2: 'admin/tools@v1' is a Docker action"),
        "{}",
        message(3)
    );
    assert!(
        message(4)
            .contains("the action 'admin/tools@v1' is not valid:\nadmin/tools/bad/action.yml:3:10: runs.using 'node8'"),
        "{}",
        message(4)
    );

    // Another owner's job may not use admin's private action repository.
    let bob = s.user_token("bob", &[gitstratum_platform::Scope::RepoAdmin]).await;
    let (status, body) = s.create_repo(Some(&bob), json!({"name": "app"})).await;
    assert_eq!(status, 201, "{body}");
    let bob_src = tmp.path().join("bob");
    std::fs::create_dir_all(&bob_src).expect("dir");
    git.ok(&bob_src, &["init", "-q", "-b", "main"]).await;
    write(
        &bob_src,
        ".github/workflows/flow.yml",
        "on: push\njobs:\n  borrow:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: admin/tools@v1\n",
    );
    commit(&git, &bob_src, "borrow").await;
    git.ok(&bob_src, &["push", "-q", &format!("http://x:{bob}@{host}/bob/app.git"), "main"]).await;
    let run = runs_of(&s, &bob, "bob/app", 1).await.remove(0);
    let detail = completed(&s, &bob, &run).await;
    let job = &detail["jobs"][0];
    assert_eq!(job["conclusion"], "failure", "{detail}");
    assert_eq!(
        job["message"],
        ".github/workflows/flow.yml:6:9: step 1: Unable to resolve action 'admin/tools@v1': no repository admin/tools this job may use",
        "{detail}"
    );
    // Shared with the installation, the same workflow may use it.
    let (status, body) = s
        .send(
            Method::PUT,
            "/api/v1/repos/admin/tools/ci/settings",
            Some(&token),
            Some(json!({"log_retention_days": null, "artifact_retention_days": null, "actions_shared": true})),
        )
        .await;
    assert_eq!((status.as_u16(), &body["actions_shared"]), (200, &json!(true)), "{body}");
    write(&bob_src, "again", "1");
    commit(&git, &bob_src, "again").await;
    git.ok(&bob_src, &["push", "-q", &format!("http://x:{bob}@{host}/bob/app.git"), "main"]).await;
    let run = runs_of(&s, &bob, "bob/app", 2).await.remove(0);
    let detail = completed(&s, &bob, &run).await;
    assert_eq!(detail["jobs"][0]["conclusion"], "success", "{detail:#}");
    s.stop().await;
}

/// Reusable workflows (`jobs.<id>.uses`) run as GitHub runs them: typed inputs (one from a job
/// the caller needs), secrets passed by mapping (masked in the called job's log) and by
/// `inherit`, the called workflow's own `env`, outputs a later job reads, a nested call, a call
/// into another repository of the same owner, and a call that leaves out a required input
/// refused when the run is created. Called jobs are named `caller / callee`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reusable_workflows_take_inputs_and_secrets_and_give_outputs() {
    let Fixture { s, token, tmp, git, src } = Fixture::new(true, false, Default::default()).await;
    let host = s.base.trim_start_matches("http://").to_owned();
    let (status, _) = s
        .send(
            Method::PUT,
            "/api/v1/repos/admin/app/secrets/DEPLOY_TOKEN",
            Some(&token),
            Some(json!({"value": "tok-123-secret"})),
        )
        .await;
    assert_eq!(status, 201);
    let (status, body) = s.create_repo(Some(&token), json!({"name": "shared", "private": true})).await;
    assert_eq!(status, 201, "{body}");
    let shared = tmp.path().join("shared");
    std::fs::create_dir_all(&shared).expect("dir");
    git.ok(&shared, &["init", "-q", "-b", "main"]).await;
    write(
        &shared,
        ".github/workflows/lint.yml",
        "on: workflow_call\njobs:\n  lint:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo \"lint sees ${{ secrets.DEPLOY_TOKEN }} on ${{ github.repository }}\"\n",
    );
    commit(&git, &shared, "lint").await;
    git.ok(&shared, &["tag", "v1"]).await;
    git.ok(&shared, &["push", "-q", &format!("http://x:{token}@{host}/admin/shared.git"), "main", "v1"]).await;

    write(
        &src,
        ".github/workflows/ci.yml",
        r#"on: push
env:
  WHERE: caller
jobs:
  setup:
    runs-on: ubuntu-latest
    outputs:
      version: ${{ steps.v.outputs.version }}
    steps:
      - id: v
        run: echo "version=1.2.3" >> "$GITHUB_OUTPUT"
  build:
    needs: setup
    uses: ./.github/workflows/build.yml
    with:
      version: ${{ needs.setup.outputs.version }}
      release: true
    secrets:
      token: ${{ secrets.DEPLOY_TOKEN }}
  report:
    needs: build
    runs-on: ubuntu-latest
    steps:
      - run: echo "built ${{ needs.build.outputs.artifact }} ${{ needs.build.result }} where=$WHERE"
  shared:
    uses: admin/shared/.github/workflows/lint.yml@v1
    secrets: inherit
  regions:
    strategy:
      matrix:
        region: [eu, us]
    uses: ./.github/workflows/inner.yml
    with:
      what: region-${{ matrix.region }}
"#,
    );
    write(
        &src,
        ".github/workflows/build.yml",
        r#"on:
  workflow_call:
    inputs:
      version: {type: string, required: true}
      release: {type: boolean, default: false}
    secrets:
      token: {required: true}
    outputs:
      artifact:
        value: ${{ jobs.compile.outputs.name }}
env:
  WHERE: callee
jobs:
  compile:
    runs-on: ubuntu-latest
    outputs:
      name: ${{ steps.c.outputs.name }}
    steps:
      - id: c
        run: |
          echo "compiling ${{ inputs.version }} release=${{ inputs.release }} where=$WHERE"
          echo "token is ${{ secrets.token }}"
          echo "job ${{ github.job }} $GITHUB_JOB"
          echo "name=app-${{ inputs.version }}.tar" >> "$GITHUB_OUTPUT"
  nested:
    needs: compile
    uses: ./.github/workflows/inner.yml
    with:
      what: v${{ inputs.version }}
"#,
    );
    write(
        &src,
        ".github/workflows/inner.yml",
        "on:\n  workflow_call:\n    inputs:\n      what: {type: string}\njobs:\n  say:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo \"inner ${{ inputs.what }}\"\n",
    );
    write(
        &src,
        ".github/workflows/bad.yml",
        "on: push\njobs:\n  c:\n    uses: ./.github/workflows/build.yml\n    secrets: inherit\n",
    );
    commit(&git, &src, "calls").await;
    git.ok(&src, &["push", "-q", &format!("http://x:{token}@{host}/admin/app.git"), "main"]).await;
    let all = runs(&s, &token, 2).await;
    let bad = all.iter().find(|r| r["path"] == ".github/workflows/bad.yml").expect("bad run");
    let bad = completed(&s, &token, bad).await;
    assert_eq!(bad["conclusion"], "failure", "{bad:#}");
    assert!(
        bad["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Input version is required, but not provided while calling"),
        "{bad:#}"
    );
    let run = all.iter().find(|r| r["path"] == ".github/workflows/ci.yml").expect("ci run");
    let detail = completed(&s, &token, run).await;
    let jobs = detail["jobs"].as_array().expect("jobs");
    let by_key =
        |key: &str| jobs.iter().find(|j| j["key"] == key).unwrap_or_else(|| panic!("no job {key}: {detail:#}"));
    let summary: Vec<(&str, &str, &str)> = jobs
        .iter()
        .map(|j| {
            (
                j["key"].as_str().unwrap_or_default(),
                j["name"].as_str().unwrap_or_default(),
                j["conclusion"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(detail["conclusion"], "success", "{summary:?}");
    for (key, name) in [
        ("build/compile", "build / compile"),
        ("build/nested/say", "build / nested / say"),
        ("build", "build"),
        ("shared/lint", "shared / lint"),
    ] {
        assert_eq!(by_key(key)["name"], name, "{summary:?}");
    }
    assert_eq!(by_key("build")["outputs"], json!({"artifact": "app-1.2.3.tar"}), "{summary:?}");
    let compile = job_log(&s, &token, by_key("build/compile")).await;
    assert!(compile.contains("compiling 1.2.3 release=true where=callee"), "{compile}");
    assert!(compile.contains("token is ***") && !compile.contains("tok-123-secret"), "{compile}");
    assert!(compile.contains("job compile compile"), "{compile}");
    let say = job_log(&s, &token, by_key("build/nested/say")).await;
    assert!(say.contains("inner v1.2.3"), "{say}");
    let report = job_log(&s, &token, by_key("report")).await;
    assert!(report.contains("built app-1.2.3.tar success where=caller"), "{report}");
    for (key, name, said) in [
        ("regions/1/say", "regions (eu) / say", "inner region-eu"),
        ("regions/2/say", "regions (us) / say", "inner region-us"),
    ] {
        assert_eq!(by_key(key)["name"], name, "{summary:?}");
        let log = job_log(&s, &token, by_key(key)).await;
        assert!(log.contains(said), "{log}");
    }
    assert_eq!(by_key("regions")["conclusion"], "success", "{summary:?}");
    let lint = job_log(&s, &token, by_key("shared/lint")).await;
    assert!(lint.contains("lint sees *** on admin/app"), "{lint}");
    s.stop().await;
}

/// The JavaScript actions toolkit (`@actions/core` and esbuild from npm, which scripts/test.sh
/// installs), or `None` outside CI when it is missing.
fn actions_toolkit() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("GITSTRATUM_ACTIONS_TOOLKIT").map(std::path::PathBuf::from).or_else(|| {
        std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache/gitstratum-actions-toolkit"))
    })?;
    if dir.join("node_modules/@actions/core").is_dir() && dir.join("node_modules/.bin/esbuild").exists() {
        return Some(dir);
    }
    assert!(std::env::var_os("CI").is_none(), "CI is set but the actions toolkit is missing at {}", dir.display());
    eprintln!("skipped: the actions toolkit is not installed at {} (scripts/test.sh installs it)", dir.display());
    None
}

/// A JavaScript action written exactly as published actions are — `@actions/core` from npm,
/// bundled into `dist/` with esbuild, `pre`/`main`/`post` in `action.yml` — runs unchanged from a
/// repository of the installation: inputs (a missing required one fails as the toolkit says),
/// outputs, state from `pre` to `main` to `post`, exported variables, added paths, masked
/// secrets, annotations and the step summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_javascript_action_built_with_the_toolkit_runs_unchanged() {
    let Some(toolkit) = actions_toolkit() else { return };
    let Fixture { s, token, tmp, git, src } = Fixture::new(true, false, Default::default()).await;
    let host = s.base.trim_start_matches("http://").to_owned();
    let (status, body) = s.create_repo(Some(&token), json!({"name": "hello-action"})).await;
    assert_eq!(status, 201, "{body}");
    let action = tmp.path().join("hello-action");
    std::fs::create_dir_all(&action).expect("dir");
    git.ok(&action, &["init", "-q", "-b", "main"]).await;
    write(
        &action,
        "action.yml",
        "name: Hello\ndescription: says hello\ninputs:\n  who:\n    description: whom to greet\n    required: true\noutputs:\n  greeting:\n    description: what it said\nruns:\n  using: node20\n  pre: dist/pre.js\n  main: dist/main.js\n  post: dist/post.js\n",
    );
    write(
        &action,
        "src/pre.js",
        "const core = require('@actions/core');\ncore.saveState('pre', 'pre-state');\ncore.info('pre ran');\n",
    );
    write(
        &action,
        "src/main.js",
        r#"const core = require('@actions/core');
async function run() {
  try {
    const who = core.getInput('who', { required: true });
    core.info(`main: hello ${who}, pre said ${core.getState('pre')}`);
    core.setOutput('greeting', `hello ${who}`);
    core.saveState('main', 'main-state');
    core.exportVariable('FROM_CORE', 'exported-by-core');
    core.addPath('/opt/from-core/bin');
    core.setSecret('core-secret-value');
    core.info('the secret is core-secret-value');
    core.warning('a warning from core');
    await core.summary.addHeading('Core summary').write();
  } catch (error) {
    core.setFailed(error.message);
  }
}
run();
"#,
    );
    write(
        &action,
        "src/post.js",
        "const core = require('@actions/core');\ncore.info(`post: ${core.getState('pre')} ${core.getState('main')}`);\n",
    );
    for script in ["pre", "main", "post"] {
        let out = std::process::Command::new(toolkit.join("node_modules/.bin/esbuild"))
            .args([format!("src/{script}.js"), "--bundle".into(), "--platform=node".into(), "--target=node20".into()])
            .arg(format!("--outfile=dist/{script}.js"))
            .current_dir(&action)
            .env("NODE_PATH", toolkit.join("node_modules"))
            .output()
            .expect("esbuild runs");
        assert!(out.status.success(), "esbuild: {}", String::from_utf8_lossy(&out.stderr));
    }
    std::fs::remove_dir_all(action.join("src")).expect("only dist/ is published");
    commit(&git, &action, "v1").await;
    git.ok(&action, &["tag", "v1"]).await;
    git.ok(&action, &["push", "-q", &format!("http://x:{token}@{host}/admin/hello-action.git"), "main", "v1"]).await;

    write(
        &src,
        ".github/workflows/flow.yml",
        r#"on: push
jobs:
  hello:
    runs-on: ubuntu-latest
    steps:
      - id: hi
        uses: admin/hello-action@v1
        with:
          who: Mona
      - run: |
          echo "greeting ${{ steps.hi.outputs.greeting }}"
          echo "exported $FROM_CORE"
          echo "path $PATH"
  no-input:
    runs-on: ubuntu-latest
    steps:
      - uses: admin/hello-action@v1
"#,
    );
    commit(&git, &src, "use hello").await;
    git.ok(&src, &["push", "-q", &format!("http://x:{token}@{host}/admin/app.git"), "main"]).await;
    let run = runs(&s, &token, 1).await.remove(0);
    let detail = completed(&s, &token, &run).await;
    let jobs = detail["jobs"].as_array().expect("jobs");
    let hello = job_log(&s, &token, &jobs[0]).await;
    assert_eq!(jobs[0]["conclusion"], "success", "{hello}");
    for expected in [
        "pre ran",
        "main: hello Mona, pre said pre-state",
        "the secret is ***",
        "<h1>Core summary</h1>",
        "greeting hello Mona",
        "exported exported-by-core",
        "path /opt/from-core/bin:",
        "post: pre-state main-state",
    ] {
        assert!(hello.contains(expected), "{expected:?} not in:\n{hello}");
    }
    assert!(!hello.contains("core-secret-value"), "{hello}");
    assert!(jobs[0]["annotations"].to_string().contains("a warning from core"), "{detail:#}");
    let no_input = job_log(&s, &token, &jobs[1]).await;
    assert_eq!(jobs[1]["conclusion"], "failure", "{no_input}");
    assert!(no_input.contains("Input required and not supplied: who"), "{no_input}");
    s.stop().await;
}

/// C git's `http-backend` behind the project's reference server (`bench/refserver.py`), on a free
/// port of loopback: an upstream Git host that is the reference itself.
struct RefServer {
    base: String,
    token: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl RefServer {
    async fn start() -> RefServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/refserver.py");
        let mut child = std::process::Command::new("python3")
            .arg(script)
            .args(["serve", "--data-dir"])
            .arg(dir.path())
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("python3 runs the reference server");
        let base = format!("http://127.0.0.1:{port}");
        let http = gitstratum_server::http::client().expect("client");
        for _ in 0..100 {
            if http.get(format!("{base}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
                let token = std::fs::read_to_string(dir.path().join("initial-admin-token")).expect("token");
                return RefServer { base, token: token.trim().to_owned(), child, _dir: dir };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the reference server did not start");
    }
}

impl Drop for RefServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The number a counter of this process shows (0 before its first increment).
fn counter(name_and_labels: &str) -> u64 {
    let text = common::metrics_handle().render();
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels).and_then(|rest| rest.trim().parse::<f64>().ok()))
        .map_or(0, |v| v as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn actions_of_upstream_sources_are_fetched_once_and_pinned() {
    // Two upstream hosts, asked in order: another GitStratum, then C git.
    let other = TestServer::start().await;
    let c_git = RefServer::start().await;
    let tmp = tempfile::tempdir().expect("temp dir");
    let git = Git::new(tmp.path());
    let (status, body) = other.create_repo(Some(&other.admin_token), json!({"name": "shout"})).await;
    assert_eq!(status, 201, "{body}");
    let shout = tmp.path().join("shout");
    std::fs::create_dir_all(&shout).expect("dir");
    git.ok(&shout, &["init", "-q", "-b", "main"]).await;
    write(
        &shout,
        "action.yml",
        "name: Shout\ninputs:\n  word: {required: true}\noutputs:\n  loud:\n    value: ${{ steps.s.outputs.loud }}\nruns:\n  using: composite\n  steps:\n    - id: s\n      shell: bash\n      run: echo \"loud=$(echo '${{ inputs.word }}' | tr a-z A-Z)\" >> \"$GITHUB_OUTPUT\"\n",
    );
    commit(&git, &shout, "shout").await;
    git.ok(&shout, &["tag", "v1"]).await;
    let other_host = other.base.trim_start_matches("http://").to_owned();
    let push = format!("http://x:{}@{other_host}/admin/shout.git", other.admin_token);
    git.ok(&shout, &["push", "-q", &push, "main", "v1"]).await;
    let shout_sha = git.ok(&shout, &["rev-parse", "HEAD"]).await.trim().to_owned();

    let created: Value = reqwest::Client::new()
        .post(format!("{}/api/v1/repos", c_git.base))
        .bearer_auth(&c_git.token)
        .json(&json!({"name": "greet"}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("json");
    assert_eq!(created["name"], "greet", "{created}");
    let greet = tmp.path().join("greet");
    std::fs::create_dir_all(&greet).expect("dir");
    git.ok(&greet, &["init", "-q", "-b", "main"]).await;
    write(&greet, "js/action.yml", "name: Greet\nruns:\n  using: node20\n  main: index.js\n  post: post.js\n");
    write(&greet, "js/index.js", "console.log(`greetings from ${process.env.GITHUB_ACTION_PATH}`);\n");
    write(&greet, "js/post.js", "console.log('greet cleans up');\n");
    write(&greet, "old.txt", "history the action does not need\n");
    commit(&git, &greet, "first").await;
    std::fs::remove_file(greet.join("old.txt")).expect("rm");
    commit(&git, &greet, "second").await;
    // An annotated tag: ls-refs peels it to the commit.
    git.ok(&greet, &["tag", "-a", "-m", "release", "v2"]).await;
    let c_git_host = c_git.base.trim_start_matches("http://").to_owned();
    git.ok(&greet, &["push", "-q", &format!("http://x:{}@{c_git_host}/admin/greet.git", c_git.token), "main", "v2"])
        .await;
    let greet_sha = git.ok(&greet, &["rev-parse", "HEAD"]).await.trim().to_owned();

    let sources = format!("{},{}", other.base, c_git.base);
    let Fixture { s, token, tmp: _app_tmp, git, src } = Fixture::new(
        true,
        false,
        gitstratum_server::ConfigLayer { actions_sources: Some(sources.clone()), ..Default::default() },
    )
    .await;
    let host = s.base.trim_start_matches("http://").to_owned();
    write(
        &src,
        ".github/workflows/flow.yml",
        r#"on: push
jobs:
  upstream:
    runs-on: ubuntu-latest
    steps:
      - id: s
        uses: admin/shout@v1
        with:
          word: hello
      - uses: admin/greet/js@v2
      - run: echo "said ${{ steps.s.outputs.loud }}"
  no-ref:
    runs-on: ubuntu-latest
    steps:
      - uses: admin/greet/js@v9
  nowhere:
    runs-on: ubuntu-latest
    steps:
      - uses: nobody/nothing@v1
"#,
    );
    commit(&git, &src, "use upstream actions").await;
    let fetched_before = counter("gitstratum_ci_upstream_actions_total{from=\"source\"}");
    git.ok(&src, &["push", "-q", &format!("http://x:{token}@{host}/admin/app.git"), "main"]).await;
    let run = runs(&s, &token, 1).await.remove(0);
    let detail = completed(&s, &token, &run).await;
    let jobs = detail["jobs"].as_array().expect("jobs");
    let log = job_log(&s, &token, &jobs[0]).await;
    assert_eq!(jobs[0]["conclusion"], "success", "{log}");
    for expected in [
        format!("Download action repository 'admin/shout@v1' (SHA:{shout_sha})"),
        format!("Download action repository 'admin/greet@v2' (SHA:{greet_sha})"),
        format!("greetings from /__gitstratum/actions/admin/greet/{greet_sha}/js"),
        "said HELLO".to_owned(),
        "greet cleans up".to_owned(),
    ] {
        assert!(log.contains(&expected), "{expected:?} not in:\n{log}");
    }
    assert_eq!(
        jobs[0]["actions"],
        json!([{"uses": "admin/greet@v2", "commit": greet_sha}, {"uses": "admin/shout@v1", "commit": shout_sha}]),
        "{detail:#}"
    );
    let message = |i: usize| jobs[i]["message"].as_str().unwrap_or_default().to_owned();
    assert_eq!(
        message(1),
        format!(
            ".github/workflows/flow.yml:15:9: step 1: Unable to resolve action 'admin/greet@v9': {}/admin/greet has no tag, branch or commit 'v9'",
            c_git.base
        )
    );
    assert_eq!(
        message(2),
        format!(
            ".github/workflows/flow.yml:19:9: step 1: Unable to resolve action 'nobody/nothing@v1': no repository nobody/nothing this job may use here or at {}, {}",
            other.base, c_git.base
        )
    );
    // Each commit was fetched once: checking the run, then serving two jobs' runners came from
    // what was kept.
    let fetched = counter("gitstratum_ci_upstream_actions_total{from=\"source\"}") - fetched_before;
    assert_eq!(fetched, 2);
    // The fetch took the commit alone, not its history.
    let kept = s.data_dir.path().join("actions-cache");
    let packs: Vec<_> = walk_files(&kept).into_iter().filter(|p| p.extension().is_some_and(|e| e == "pack")).collect();
    assert_eq!(packs.len(), 2, "{packs:?}");
    for pack in &packs {
        // No index is kept beside a cached pack: C git indexes it to count its commits.
        let indexed = std::process::Command::new("git").arg("index-pack").arg(pack).output().expect("git");
        assert!(indexed.status.success(), "{}", String::from_utf8_lossy(&indexed.stderr));
        let listed = std::process::Command::new("git")
            .args(["verify-pack", "-v"])
            .arg(pack.with_extension("idx"))
            .output()
            .expect("git");
        let commits = String::from_utf8_lossy(&listed.stdout).lines().filter(|l| l.contains(" commit ")).count();
        assert_eq!(commits, 1, "{}", String::from_utf8_lossy(&listed.stdout));
    }
    s.stop().await;
    other.stop().await;
}

fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() { stack.push(path) } else { out.push(path) }
        }
    }
    out
}

struct Fixture {
    s: TestServer,
    token: String,
    tmp: tempfile::TempDir,
    git: Git,
    src: std::path::PathBuf,
}

impl Fixture {
    async fn new(embedded_runner: bool, private: bool, config: gitstratum_server::ConfigLayer) -> Fixture {
        let s = TestServer::start_with(gitstratum_server::ConfigLayer {
            embedded_runner: Some(embedded_runner.to_string()),
            ..config
        })
        .await;
        let token = s.admin_token.clone();
        let (status, body) = s.create_repo(Some(&token), json!({"name": "app", "private": private})).await;
        assert_eq!(status, 201, "{body}");
        let tmp = tempfile::tempdir().expect("temp dir");
        let git = Git::new(tmp.path());
        let src = tmp.path().join("src");
        std::fs::create_dir_all(&src).expect("dir");
        git.ok(&src, &["init", "-q", "-b", "main"]).await;
        Fixture { s, token, tmp, git, src }
    }
}
