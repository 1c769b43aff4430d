//! The CI ingestor end to end: real `git push`es to the server start workflow runs, exactly as the
//! workflow files at the pushed commit say (branch, tag and path filters), each run with its jobs
//! (matrices expanded) and steps; invalid workflow files give failed runs with their diagnostics;
//! deleted refs start nothing; runs are read through the API with the repository's permissions.

use std::path::Path;
use std::time::Duration;

use common::{Git, TestServer};
use reqwest::Method;
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
    let mut last = Value::Null;
    for _ in 0..200 {
        let (status, page) = s.send(Method::GET, "/api/v1/repos/admin/app/runs?limit=100", Some(token), None).await;
        assert_eq!(status, 200, "{page}");
        if page["runs"].as_array().map(Vec::len) >= Some(n) {
            let runs = page["runs"].as_array().cloned().unwrap_or_default();
            assert_eq!(runs.len(), n, "more runs than expected: {page}");
            return runs;
        }
        last = page;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("expected {n} runs; have {last}");
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
