//! SIGKILL in the middle of a push: after a restart the repository holds either the old or the
//! new ref (never a ref to a missing object), an acknowledged push is never lost, and the push
//! can be retried.

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

fn remote_main(home: &Path, dir: &Path, url: &str) -> Option<String> {
    let listing = ok(home, dir, &["ls-remote", url, "refs/heads/main"]);
    listing.split_whitespace().next().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_push_leaves_a_consistent_repository() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let data = tmp.path().join("data");
    let mut server = spawn(&data, &[], &[]);
    let base = server.base_url();
    let token = std::fs::read_to_string(data.join("initial-admin-token")).expect("token").trim().to_owned();
    let resp = gitstratum_server::http::client()
        .expect("client")
        .post(format!("{base}/api/v1/repos"))
        .bearer_auth(&token)
        .json(&json!({"name": "crash"}))
        .send()
        .await
        .expect("create");
    assert_eq!(resp.status().as_u16(), 201);

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
            ok(&home, &root, &["clone", "-q", "--bare", &url, dir.to_str().expect("utf-8")]);
            ok(&home, &dir, &["fsck", "--strict", "--no-dangling"]);
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
