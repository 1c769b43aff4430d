//! SIGKILL in the middle of a push: after a restart the repository holds either the old or the
//! new ref (never a ref to a missing object), an acknowledged push is never lost, and the push
//! can be retried. The same for storage maintenance killed mid-repack. SIGKILL in the middle of a job, of the server or of an external runner: the
//! job runs again as a new attempt and the run completes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::spawn;
use serde_json::json;

mod common;

fn git(home: &Path, dir: &Path, args: &[&str]) -> Output {
    Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "A")
        .env("GIT_AUTHOR_EMAIL", "a@example.com")
        .env("GIT_COMMITTER_NAME", "C")
        .env("GIT_COMMITTER_EMAIL", "c@example.com")
        .output()
        .expect("git runs")
}

fn ok(home: &Path, dir: &Path, args: &[&str]) -> String {
    let out = git(home, dir, args);
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A bare clone of `url` at `dir` (inside `root`), which must pass `git fsck --strict`.
fn clone_checked(home: &Path, root: &Path, url: &str, dir: &Path) {
    ok(home, root, &["clone", "-q", "--bare", url, dir.to_str().expect("utf-8")]);
    ok(home, dir, &["fsck", "--strict", "--no-dangling"]);
}

fn remote_main(home: &Path, dir: &Path, url: &str) -> Option<String> {
    let listing = ok(home, dir, &["ls-remote", url, "refs/heads/main"]);
    listing.split_whitespace().next().map(str::to_owned)
}

/// `gitstratum serve` on a new data directory, with a repository `admin/{name}`: the server, its
/// URL and the admin's token.
async fn serve_with_repo(data: &Path, name: &str) -> (common::Process, String, String) {
    serve_with_repo_and(data, name, &[], &[]).await
}

/// As [`serve_with_repo`], with more flags and environment for the server.
async fn serve_with_repo_and(
    data: &Path,
    name: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (common::Process, String, String) {
    let mut server = spawn(data, args, env);
    let base = server.base_url();
    let token = std::fs::read_to_string(data.join("initial-admin-token")).expect("token").trim().to_owned();
    let resp = gitstratum_server::http::client()
        .expect("client")
        .post(format!("{base}/api/v1/repos"))
        .bearer_auth(&token)
        .json(&json!({"name": name}))
        .send()
        .await
        .expect("create");
    assert_eq!(resp.status().as_u16(), 201);
    (server, base, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_push_leaves_a_consistent_repository() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let data = tmp.path().join("data");
    let (mut server, base, token) = serve_with_repo(&data, "crash").await;

    // An old state the crash must not damage, then a large push to interrupt.
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).expect("dir");
    ok(&home, &src, &["init", "-q", "-b", "main"]);
    std::fs::write(src.join("a.txt"), "a\n").expect("write");
    ok(&home, &src, &["add", "-A"]);
    ok(&home, &src, &["commit", "-q", "-m", "old"]);
    let url_for = |base: &str| format!("http://x:{token}@{}/admin/crash.git", base.trim_start_matches("http://"));
    let url = url_for(&base);
    ok(&home, &src, &["push", "-q", &url, "main"]);
    let old = ok(&home, &src, &["rev-parse", "HEAD"]);
    let mut state = 0x2545f4914f6cdd1du64;
    let big: Vec<u8> = (0..24 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(src.join("big.bin"), big).expect("write");
    for i in 0..50 {
        std::fs::write(src.join(format!("f{i}.txt")), format!("{i}\n")).expect("write");
    }
    ok(&home, &src, &["add", "-A"]);
    ok(&home, &src, &["commit", "-q", "-m", "new"]);
    let new = ok(&home, &src, &["rev-parse", "HEAD"]);

    let push = {
        let (home, src, url) = (home.clone(), src.clone(), url.clone());
        std::thread::spawn(move || git(&home, &src, &["push", "-q", &url, "main"]).status.success())
    };
    // The server has the whole push and is applying it: kill it now.
    let waited = tokio::task::spawn_blocking(move || {
        server.wait_for("receive-pack: applying push");
        server.child.kill().expect("SIGKILL");
        server.child.wait().expect("reaped");
        server
    })
    .await
    .expect("join");
    drop(waited);
    let acknowledged = push.join().expect("push thread");

    // Restart on the same data directory.
    let mut again = spawn(&data, &[], &[]);
    let base = again.base_url();
    let url = url_for(&base);
    let (home2, tmp2, url2) = (home.clone(), tmp.path().to_owned(), url.clone());
    let main = tokio::task::spawn_blocking(move || remote_main(&home2, &tmp2, &url2)).await.expect("join");
    let state = if main.as_deref() == Some(old.as_str()) { "old" } else { "new" };
    eprintln!("push acknowledged before the kill: {acknowledged}; main after restart: the {state} commit");
    if acknowledged {
        assert_eq!(main.as_deref(), Some(new.as_str()), "git was told the push succeeded, so it must have survived");
    } else {
        assert!(main.as_deref() == Some(old.as_str()) || main.as_deref() == Some(new.as_str()), "main is {main:?}");
    }
    let check = |name: &'static str| {
        let (home, root, url) = (home.clone(), tmp.path().to_owned(), url.clone());
        move || -> PathBuf {
            let dir = root.join(name);
            clone_checked(&home, &root, &url, &dir);
            dir
        }
    };
    tokio::task::spawn_blocking(check("after-crash")).await.expect("join");

    // Retrying the push brings the repository to the new state.
    let (home3, src3, url3) = (home.clone(), src.clone(), url.clone());
    tokio::task::spawn_blocking(move || ok(&home3, &src3, &["push", "-q", &url3, "main"])).await.expect("join");
    let dir = tokio::task::spawn_blocking(check("after-retry")).await.expect("join");
    assert_eq!(ok(&home, &dir, &["rev-parse", "main"]), new);
    assert_eq!(again.terminate().code(), Some(0));
}

/// The server dies (as a SIGKILL leaves it) at each point of a push: after the pack is spooled,
/// after it is indexed and completed, and after it is stored durably but before the refs move.
/// After a restart on the same data directory the ref is the old one, the repository is whole
/// (`fsck` of a clone), nothing spooled is left behind, and the same push succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_killed_at_each_step_is_retried_cleanly() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let data = tmp.path().join("data");
    let (server, base, token) = serve_with_repo(&data, "steps").await;
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).expect("dir");
    ok(&home, &src, &["init", "-q", "-b", "main"]);
    let text: String = (0..500).map(|l| format!("line {l}\n")).collect();
    std::fs::write(src.join("a.txt"), &text).expect("write");
    ok(&home, &src, &["add", "-A"]);
    ok(&home, &src, &["commit", "-q", "-m", "old"]);
    let url_for = |base: &str| format!("http://x:{token}@{}/admin/steps.git", base.trim_start_matches("http://"));
    ok(&home, &src, &["push", "-q", &url_for(&base), "main"]);
    let mut old = ok(&home, &src, &["rev-parse", "HEAD"]);
    let mut server = server;
    assert_eq!(server.terminate().code(), Some(0));
    let incoming = data.join("git/packs/incoming");
    for (i, point) in ["receive:after-spool", "receive:before-store", "receive:before-refs"].into_iter().enumerate() {
        // A new commit each round, a delta against what the server has (a thin pack).
        std::fs::write(src.join("a.txt"), format!("{text}{point}\n")).expect("write");
        std::fs::write(src.join(format!("new{i}.txt")), point).expect("write");
        ok(&home, &src, &["add", "-A"]);
        ok(&home, &src, &["commit", "-q", "-m", point]);
        let new = ok(&home, &src, &["rev-parse", "HEAD"]);

        let mut dying = spawn(&data, &[], &[("GITSTRATUM_CRASH_AT", point)]);
        let url = url_for(&dying.base_url());
        let pushed = git(&home, &src, &["push", "-q", &url, "main"]);
        assert!(!pushed.status.success(), "{point}: the server died, the push cannot have succeeded");
        let status = dying.wait();
        assert!(!status.success(), "{point}: the server died at the failpoint: {status:?}");

        let mut again = spawn(&data, &[], &[]);
        let url = url_for(&again.base_url());
        let (home2, root, url2) = (home.clone(), tmp.path().to_owned(), url.clone());
        let main = tokio::task::spawn_blocking(move || remote_main(&home2, &root, &url2)).await.expect("join");
        assert_eq!(main.as_deref(), Some(old.as_str()), "{point}: the refs never moved");
        assert_eq!(std::fs::read_dir(&incoming).expect("incoming").count(), 0, "{point}: the spooled push is gone");
        let (home3, src3, root, url3) = (home.clone(), src.clone(), tmp.path().to_owned(), url.clone());
        let point_dir = format!("clone-{i}");
        let expected = new.clone();
        tokio::task::spawn_blocking(move || {
            ok(&home3, &src3, &["push", "-q", &url3, "main"]);
            let dir = root.join(point_dir);
            clone_checked(&home3, &root, &url3, &dir);
            assert_eq!(ok(&home3, &dir, &["rev-parse", "main"]), expected);
        })
        .await
        .expect("join");
        assert_eq!(again.terminate().code(), Some(0));
        old = new;
    }
}

/// Maintenance killed after writing its new pack but before registering it, and killed after
/// registering it but before removing the packs it replaced: after a restart the repository is
/// whole (a clone passes `fsck`), the leftovers are gone, and pushes go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_killed_mid_repack_loses_nothing() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let data = tmp.path().join("data");
    let (mut server, base, token) = serve_with_repo(&data, "upkeep").await;
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).expect("dir");
    let url_for = |base: &str| format!("http://x:{token}@{}/admin/upkeep.git", base.trim_start_matches("http://"));
    let (home1, src1, url1) = (home.clone(), src.clone(), url_for(&base));
    let mut tip = tokio::task::spawn_blocking(move || {
        ok(&home1, &src1, &["init", "-q", "-b", "main"]);
        let mut text: String = (0..400).map(|l| format!("line {l}\n")).collect();
        // Three pushes, three packs: due for a roll-up and a full repack.
        for i in 0..3 {
            text.push_str(&format!("edit {i}\n"));
            std::fs::write(src1.join("a.txt"), &text).expect("write");
            ok(&home1, &src1, &["add", "-A"]);
            ok(&home1, &src1, &["commit", "-q", "-m", &format!("c{i}")]);
            ok(&home1, &src1, &["push", "-q", &url1, "main"]);
        }
        ok(&home1, &src1, &["rev-parse", "HEAD"])
    })
    .await
    .expect("join");
    assert_eq!(server.terminate().code(), Some(0));
    let packs_dir = std::fs::read_dir(data.join("git/packs"))
        .expect("packs")
        .map(|e| e.expect("entry").path())
        .find(|p| p.file_name().is_some_and(|n| n != "incoming"))
        .expect("the repository's pack directory");
    let files = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before = files(&packs_dir);
    assert_eq!(before.len(), 6, "three packs and their indexes: {before:?}");
    let maintain_now = [("GITSTRATUM_GIT_MAINTENANCE_SECS", "1"), ("GITSTRATUM_GIT_FULL_REPACK_HOURS", "0")];
    for (round, point) in ["maintain:before-commit", "maintain:after-commit"].into_iter().enumerate() {
        let mut env = maintain_now.to_vec();
        env.push(("GITSTRATUM_CRASH_AT", point));
        let mut dying = spawn(&data, &[], &env);
        let status = dying.wait();
        assert!(!status.success(), "{point}: maintenance ran and the server died there: {status:?}");

        let mut again = spawn(&data, &[], &[]);
        let url = url_for(&again.base_url());
        let after = files(&packs_dir);
        if point == "maintain:before-commit" {
            assert_eq!(after, before, "{point}: the unregistered new pack is gone, the old ones stay");
        } else {
            assert_eq!(
                after.len(),
                3,
                "{point}: the replaced packs are gone (a pack, its index, its bitmaps): {after:?}"
            );
        }
        assert_eq!(std::fs::read_dir(data.join("git/packs/incoming")).expect("incoming").count(), 0);
        for idx in after.iter().filter(|n| n.ends_with(".idx")) {
            ok(&home, tmp.path(), &["verify-pack", packs_dir.join(idx).to_str().expect("utf-8")]);
        }
        let (home2, src2, root, expected) = (home.clone(), src.clone(), tmp.path().to_owned(), tip.clone());
        tip = tokio::task::spawn_blocking(move || {
            let dir = root.join(format!("clone-{round}"));
            clone_checked(&home2, &root, &url, &dir);
            assert_eq!(ok(&home2, &dir, &["rev-parse", "main"]), expected);
            std::fs::write(src2.join(format!("r{round}.txt")), "more\n").expect("write");
            ok(&home2, &src2, &["add", "-A"]);
            ok(&home2, &src2, &["commit", "-q", "-m", "after"]);
            ok(&home2, &src2, &["push", "-q", &url, "main"]);
            ok(&home2, &src2, &["rev-parse", "HEAD"])
        })
        .await
        .expect("join");
        assert_eq!(again.terminate().code(), Some(0));
    }
}

async fn api(base: &str, token: &str, path: &str) -> serde_json::Value {
    let response = gitstratum_server::http::client()
        .expect("client")
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    let text = response.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
}

/// Pushes a repository with `workflow` as its CI workflow to `admin/app` and waits (30 s at most)
/// until its first job's log contains `needle`: the run's and the job's ids.
async fn push_until_logged(
    home: &Path,
    src: &Path,
    base: &str,
    token: &str,
    workflow: &str,
    needle: &str,
) -> Option<(serde_json::Value, serde_json::Value)> {
    std::fs::create_dir_all(src.join(".github/workflows")).expect("dir");
    std::fs::write(src.join(".github/workflows/ci.yml"), workflow).expect("write");
    ok(home, src, &["init", "-q", "-b", "main"]);
    ok(home, src, &["add", "-A"]);
    ok(home, src, &["commit", "-q", "-m", "ci"]);
    let url = format!("http://x:{token}@{}/admin/app.git", base.trim_start_matches("http://"));
    ok(home, src, &["push", "-q", &url, "main"]);
    for _ in 0..600 {
        let page = api(base, token, "/api/v1/repos/admin/app/runs").await;
        if let Some(run) = page["runs"].get(0) {
            let detail = api(base, token, &format!("/api/v1/runs/{}", run["id"])).await;
            let job = detail["jobs"][0]["id"].clone();
            let log = api(base, token, &format!("/api/v1/jobs/{job}/logs")).await;
            if log.as_str().is_some_and(|l| l.contains(needle)) {
                return Some((run["id"].clone(), job));
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    None
}

/// SIGKILL while the embedded runner runs a job: after the restart the new embedded runner takes
/// the job back at once (not after its lease runs out) and runs it again as attempt 2; nothing of
/// the run is lost, and attempt 1 keeps the log it had shipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_job_runs_it_again_after_restart() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let data = tmp.path().join("data");
    let (mut server, base, token) = serve_with_repo(&data, "app").await;
    let workflow = "on: push\njobs:\n  slow:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo started attempt $GITSTRATUM_JOB_ATTEMPT; sleep 3; echo finished\n";
    // Wait until the step is running and its first line has been shipped, then kill the server.
    let (run_id, job_id) =
        push_until_logged(&home, &tmp.path().join("src"), &base, &token, workflow, "started attempt 1")
            .await
            .expect("the job started");
    server.child.kill().expect("SIGKILL");
    server.child.wait().expect("reaped");

    let mut server = spawn(&data, &[], &[]);
    let base = server.base_url();
    let started = std::time::Instant::now();
    let mut detail = serde_json::Value::Null;
    for _ in 0..600 {
        detail = api(&base, &token, &format!("/api/v1/runs/{run_id}")).await;
        if detail["status"] == "completed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(detail["conclusion"], "success", "{detail}");
    assert_eq!(detail["jobs"][0]["attempt"], 2, "{detail}");
    assert!(started.elapsed() < std::time::Duration::from_secs(50), "taken back at once, not after the lease ran out");
    let second = api(&base, &token, &format!("/api/v1/jobs/{job_id}/logs")).await;
    assert!(second.as_str().is_some_and(|l| l.contains("started attempt 2") && printed(l, "finished")), "{second}");
    let first = api(&base, &token, &format!("/api/v1/jobs/{job_id}/logs?attempt=1")).await;
    assert!(first.as_str().is_some_and(|l| l.contains("started attempt 1")), "{first}");
    assert_eq!(server.terminate().code(), Some(0));
}

/// An external `gitstratum runner` process, its stderr kept in a file (shown when a test fails).
struct RunnerProcess {
    child: std::process::Child,
    log: PathBuf,
}

impl RunnerProcess {
    fn start(dir: &Path, base: &str, token: &str, name: &str) -> RunnerProcess {
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_gitstratum"))
            .args(["runner", "--server", base, "--token", token, "--name", name, "--work-dir"])
            .arg(dir.join(name))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("runner log"))
            .spawn()
            .expect("spawn the runner");
        RunnerProcess { child, log }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for RunnerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SIGKILL of an external runner while its job runs: the job's lease runs out (4 s here), the job
/// goes back to the queue as attempt 2, another runner runs it, and the run completes. The first
/// runner's step dies with it (the sandbox dies with its parent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_runners_job_is_run_again_by_another_runner() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let data = tmp.path().join("data");
    let (mut server, base, token) =
        serve_with_repo_and(&data, "app", &["--no-embedded-runner"], &[("GITSTRATUM_CI_LEASE_SECONDS", "4")]).await;
    let made = gitstratum_server::http::client()
        .expect("client")
        .post(format!("{base}/api/v1/tokens"))
        .bearer_auth(&token)
        .json(&json!({"name": "runners", "scopes": ["ci:runner"]}))
        .send()
        .await
        .expect("token");
    let runner_token =
        made.json::<serde_json::Value>().await.expect("json")["token"].as_str().expect("token").to_owned();
    let mut first = RunnerProcess::start(tmp.path(), &base, &runner_token, "first");

    let workflow = "on: push\njobs:\n  build:\n    runs-on: ubuntu-latest\n    steps:\n      - run: |\n          echo attempt $GITSTRATUM_JOB_ATTEMPT\n          if [ \"$GITSTRATUM_JOB_ATTEMPT\" = 1 ]; then sleep 120; fi\n          echo finished\n";
    let started = push_until_logged(&home, &tmp.path().join("src"), &base, &token, workflow, "attempt 1").await;
    let Some((run_id, job_id)) = started else {
        panic!("the first runner did not start the job; its stderr:\n{}", first.stderr())
    };
    first.child.kill().expect("SIGKILL");
    first.child.wait().expect("reaped");
    let second = RunnerProcess::start(tmp.path(), &base, &runner_token, "second");

    let mut detail = serde_json::Value::Null;
    for _ in 0..600 {
        detail = api(&base, &token, &format!("/api/v1/runs/{run_id}")).await;
        if detail["status"] == "completed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(detail["conclusion"], "success", "{detail}\nsecond runner:\n{}", second.stderr());
    assert_eq!(detail["jobs"][0]["attempt"], 2, "{detail}");
    let log = api(&base, &token, &format!("/api/v1/jobs/{job_id}/logs")).await;
    assert!(log.as_str().is_some_and(|l| l.contains("attempt 2") && printed(l, "finished")), "{log}");
    let lost = api(&base, &token, &format!("/api/v1/jobs/{job_id}/logs?attempt=1")).await;
    assert!(lost.as_str().is_some_and(|l| l.contains("attempt 1") && !printed(l, "finished")), "{lost}");
    drop(second);
    assert_eq!(server.terminate().code(), Some(0));
}

/// Whether a job log has `line` as a line of its own (as the step printed it; the step's header
/// holds its script, where the same words appear after an `echo`).
fn printed(log: &str, line: &str) -> bool {
    log.lines().any(|l| gitstratum_core::Timestamp::split_log_stamp(l).1 == line)
}

/// Cluster mode: a frontend SIGKILLed (a failpoint's abort) at each step of a push — before the
/// pack is stored, after its upload, after its listing, before and after the refs' commit. What
/// the client was told matches what the refs show on another frontend (a failed push moved
/// nothing, unless the refs had committed: then they show the new commit, whole), every clone
/// passes `fsck`, the push can be retried, and the pack uploaded but never listed is swept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_frontends_killed_mid_push_leave_refs_and_packs_consistent() {
    use gitstratum_store::testing::{Garage, TestPg};
    let Some(pg) = TestPg::new() else { return };
    let Some(garage) = Garage::start("crash") else { return };
    drop(pg.refs()); // creates the schema
    let c = &garage.config;
    let database_url = format!("{}?options%5Bsearch_path%5D={}", pg.url, pg.schema);
    let secrets_key = "cd".repeat(32);
    let cluster_env: Vec<(&str, &str)> = vec![
        ("GITSTRATUM_CLUSTER", "true"),
        ("GITSTRATUM_DATABASE_URL", &database_url),
        ("GITSTRATUM_OBJECT_STORAGE_ENDPOINT", &c.endpoint),
        ("GITSTRATUM_OBJECT_STORAGE_BUCKET", &c.bucket),
        ("GITSTRATUM_OBJECT_STORAGE_REGION", &c.region),
        ("GITSTRATUM_OBJECT_STORAGE_ACCESS_KEY_ID", &c.access_key_id),
        ("GITSTRATUM_OBJECT_STORAGE_SECRET_ACCESS_KEY", &c.secret_access_key),
        ("GITSTRATUM_OBJECT_STORAGE_PREFIX", &c.prefix),
        ("GITSTRATUM_SECRETS_KEY", &secrets_key),
        ("GITSTRATUM_EMBEDDED_RUNNER", "false"),
    ];
    let tmp = tempfile::tempdir().expect("temp dir");
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let (mut steady, base, token) = serve_with_repo_and(&tmp.path().join("steady"), "crash", &[], &cluster_env).await;
    let url_for = |base: &str| format!("http://x:{token}@{}/admin/crash.git", base.trim_start_matches("http://"));
    let steady_url = url_for(&base);
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).expect("dir");
    ok(&home, &src, &["init", "-q", "-b", "main"]);
    std::fs::write(src.join("a.txt"), "a\n").expect("write");
    ok(&home, &src, &["add", "-A"]);
    ok(&home, &src, &["commit", "-q", "-m", "old"]);
    ok(&home, &src, &["push", "-q", &steady_url, "main"]);

    let points = [
        "receive:before-store",
        "cluster:after-upload",
        "cluster:after-listing",
        "receive:before-refs",
        "receive:after-refs",
    ];
    for (i, point) in points.into_iter().enumerate() {
        let old = ok(&home, &src, &["rev-parse", "HEAD"]);
        std::fs::write(src.join(format!("new{i}.txt")), point).expect("write");
        ok(&home, &src, &["add", "-A"]);
        ok(&home, &src, &["commit", "-q", "-m", point]);
        let new = ok(&home, &src, &["rev-parse", "HEAD"]);

        let mut env = cluster_env.clone();
        env.push(("GITSTRATUM_CRASH_AT", point));
        let mut dying = spawn(&tmp.path().join(format!("dying{i}")), &[], &env);
        let url = url_for(&dying.base_url());
        let (home1, src1) = (home.clone(), src.clone());
        let pushed =
            tokio::task::spawn_blocking(move || git(&home1, &src1, &["push", "-q", &url, "main"])).await.expect("join");
        assert!(!pushed.status.success(), "{point}: the frontend died, the push cannot have been acknowledged");
        assert!(!dying.wait().success(), "{point}: the frontend died at the failpoint");

        // Another frontend: the refs are old, unless the crash came after their commit.
        let (home2, root, url2) = (home.clone(), tmp.path().to_owned(), steady_url.clone());
        let main = tokio::task::spawn_blocking(move || remote_main(&home2, &root, &url2)).await.expect("join");
        let expected = if point == "receive:after-refs" { &new } else { &old };
        assert_eq!(main.as_deref(), Some(expected.as_str()), "{point}: the refs show what was committed");
        let (home3, src3, root, url3, dir) =
            (home.clone(), src.clone(), tmp.path().to_owned(), steady_url.clone(), format!("clone-{i}"));
        let expected = new.clone();
        tokio::task::spawn_blocking(move || {
            let dir = root.join(dir);
            clone_checked(&home3, &root, &url3, &dir);
            // The retry through a live frontend lands (or finds it landed).
            ok(&home3, &src3, &["push", "-q", &url3, "main"]);
            let again = root.join(format!("{}-again", dir.display()));
            clone_checked(&home3, &root, &url3, &again);
            assert_eq!(ok(&home3, &again, &["rev-parse", "main"]), expected);
        })
        .await
        .expect("join");
    }
    assert_eq!(steady.terminate().code(), Some(0));

    // Exactly the pack of the push killed after its upload is in object storage unlisted.
    let refs = std::sync::Arc::new(pg.refs());
    let local = tmp.path().join("sweeper");
    let rocks = std::sync::Arc::new(gitstratum_store::rocks::RocksStore::open(&local.join("git")).expect("cache"));
    let blobs = gitstratum_store::blob::s3::S3BlobStore::open(c, refs.runtime().clone(), local.join("staging"))
        .expect("object storage");
    let sweeper = gitstratum_store::cluster::ClusterStore::new(
        rocks,
        refs.clone(),
        std::sync::Arc::new(blobs),
        &local.join("taken"),
    )
    .expect("cluster store");
    let swept =
        tokio::task::spawn_blocking(move || sweeper.sweep_unlisted(std::time::Duration::ZERO)).await.expect("join");
    assert_eq!(swept.expect("sweep"), 1, "the one pack uploaded but never listed");
    drop(refs);
    pg.passed();
}
