//! The real `gitstratum` client commands against a real `gitstratum serve`: login with a token and
//! with a password, whoami, users, repositories, tokens, organizations, `--json`, errors and exit
//! codes, logout.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::spawn;
use serde_json::Value;

mod common;

/// Runs a client command with its own config directory and `stdin` fed in.
fn cli(config: &Path, args: &[&str], stdin: &str) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gitstratum"));
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("GITSTRATUM_")) {
        cmd.env_remove(key);
    }
    let mut child = cmd
        .args(args)
        .env("XDG_CONFIG_HOME", config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
    child.wait_with_output().expect("wait")
}

fn ok(config: &Path, args: &[&str], stdin: &str) -> String {
    let out = cli(config, args, stdin);
    assert!(out.status.success(), "{args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(config: &Path, args: &[&str], stdin: &str) -> String {
    let out = cli(config, args, stdin);
    assert!(!out.status.success(), "{args:?} should fail; stdout:\n{}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn the_client_commands_drive_a_real_server() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let mut server = spawn(&data, &[], &[]);
    let base = server.base_url();
    let admin_token = std::fs::read_to_string(data.join("initial-admin-token")).expect("token").trim().to_owned();
    let admin = tmp.path().join("admin-config");
    let bob = tmp.path().join("bob-config");

    let err = fails(&admin, &["whoami"], "");
    assert!(err.contains("not logged in"), "{err}");
    let err = fails(&admin, &["login", "--server", &base, "--token", "gst_wrong"], "");
    assert!(err.contains("refused") && err.contains("bad credentials"), "{err}");
    let out = ok(&admin, &["login", "--server", &base, "--token", "-"], &format!("{admin_token}\n"));
    assert!(out.contains("as admin"), "{out}");
    let stored = admin.join("gitstratum").join("credentials.json");
    assert_eq!(std::fs::metadata(&stored).expect("stored").permissions().mode() & 0o777, 0o600);
    assert!(ok(&admin, &["whoami"], "").contains("admin on http://"));
    assert_eq!(json(&ok(&admin, &["--json", "whoami"], ""))["name"], "admin");

    // Accounts and a password login.
    ok(&admin, &["user", "create", "bob", "--password-stdin"], "correct-horse\n");
    let err = fails(&admin, &["user", "create", "bob"], "");
    assert!(err.contains("already exists") && err.contains("HTTP 409"), "{err}");
    let err = fails(&bob, &["login", "--server", &base, "--username", "bob"], "wrong-horse\n");
    assert!(err.contains("bad username or password"), "{err}");
    ok(&bob, &["login", "--server", &base, "--username", "bob"], "correct-horse\n");
    assert!(ok(&bob, &["whoami"], "").starts_with("bob on "));

    // Repositories.
    let out = ok(&bob, &["repo", "create", "app", "--private", "--description", "The app"], "");
    assert!(out.contains("Created bob/app (private)") && out.contains("/bob/app.git"), "{out}");
    let err = fails(&bob, &["repo", "create", "bad name"], "");
    assert!(err.contains("field name"), "{err}");
    let listed = ok(&bob, &["repo", "list"], "");
    assert!(listed.lines().next().expect("header").starts_with("NAME"), "{listed}");
    assert!(listed.contains("bob/app") && listed.contains("private"), "{listed}");
    let view = json(&ok(&bob, &["--json", "repo", "view", "bob/app"], ""));
    assert_eq!((view["default_branch"].as_str(), view["description"].as_str()), (Some("main"), Some("The app")));
    assert!(ok(&bob, &["repo", "view", "bob/app"], "").contains("description     The app"));
    let err = fails(&admin, &["repo", "view", "bob"], "");
    assert!(err.contains("OWNER/NAME"), "{err}");
    let err = fails(&bob, &["repo", "delete", "bob/app"], "");
    assert!(err.contains("--yes"), "{err}");

    // Tokens: created once, listed without secrets, revoked.
    let created =
        json(&ok(&bob, &["--json", "token", "create", "ci", "--scope", "repo:read", "--expires-in-days", "30"], ""));
    let token = created["token"].as_str().expect("token");
    assert!(token.starts_with("gst_"));
    let listed = ok(&bob, &["token", "list"], "");
    assert!(listed.contains("ci") && listed.contains("repo:read") && !listed.contains(token), "{listed}");
    let id = created["id"].to_string();
    ok(&bob, &["token", "revoke", &id], "");
    let err = fails(&bob, &["token", "revoke", &id], "");
    assert!(err.contains("token.not_found"), "{err}");

    // Site administration: suspension, anyone's tokens, deletion.
    ok(&admin, &["user", "create", "dave"], "");
    assert!(ok(&admin, &["user", "suspend", "dave"], "").contains("Suspended dave"));
    let err = fails(&bob, &["user", "suspend", "dave"], "");
    assert!(err.contains("only site administrators"), "{err}");
    ok(&admin, &["user", "unsuspend", "dave"], "");
    let tokens = json(&ok(&admin, &["--json", "user", "tokens", "bob"], ""));
    assert!(tokens.as_array().is_some_and(|t| !t.is_empty()), "{tokens}");
    assert!(ok(&admin, &["user", "delete", "dave", "--transfer-to", "admin"], "").contains("Deleted dave"));
    let err = fails(&admin, &["user", "suspend", "dave"], "");
    assert!(err.contains("user.not_found"), "{err}");

    // Organizations.
    ok(&bob, &["org", "create", "acme"], "");
    ok(&admin, &["user", "create", "carol"], "");
    ok(&bob, &["org", "member", "add", "acme", "carol"], "");
    let members = ok(&bob, &["org", "member", "list", "acme"], "");
    assert!(members.contains("carol") && members.contains("member") && members.contains("owner"), "{members}");
    let orgs = json(&ok(&bob, &["--json", "org", "list"], ""));
    assert_eq!(orgs[0]["name"], "acme");
    ok(&bob, &["repo", "create", "tools", "--owner", "acme"], "");
    assert!(ok(&bob, &["repo", "list"], "").contains("acme/tools"));
    let err = fails(&bob, &["org", "member", "remove", "acme", "bob"], "");
    assert!(err.contains("at least one owner"), "{err}");
    ok(&bob, &["repo", "delete", "bob/app", "--yes"], "");
    let err = fails(&bob, &["repo", "view", "bob/app"], "");
    assert!(err.contains("HTTP 404"), "{err}");

    // SSH keys, from a file or stdin.
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKl0UOwkXXh5iHy4+8ZqR/Yxx9yWeCgdeusVCeND979i test@example\n";
    let out = ok(&bob, &["ssh-key", "add", "-", "--title", "laptop"], key);
    assert!(out.contains("SHA256:q7J1glDquFVEA4N8oDWpxEJw4K0qlQBYtJxFdvznaKc"), "{out}");
    let keys = json(&ok(&bob, &["--json", "ssh-key", "list"], ""));
    assert_eq!(keys[0]["title"], "laptop");
    let err = fails(&bob, &["ssh-key", "add", "-"], "ssh-dss AAAA\n");
    assert!(err.contains("unsupported key type"), "{err}");
    ok(&bob, &["ssh-key", "remove", &keys[0]["id"].to_string()], "");

    // Webhooks.
    ok(&bob, &["repo", "create", "hooked"], "");
    let out =
        ok(&bob, &["webhook", "create", "bob/hooked", "--url", "http://127.0.0.1:9/h", "--secret-stdin"], "s3cret\n");
    assert!(out.contains("Created webhook") && out.contains("push"), "{out}");
    let hooks = json(&ok(&bob, &["--json", "webhook", "list", "bob/hooked"], ""));
    assert_eq!(hooks[0]["has_secret"], true);
    assert!(!ok(&bob, &["webhook", "list", "bob/hooked"], "").contains("s3cret"));
    let id = hooks[0]["id"].to_string();
    assert!(ok(&bob, &["webhook", "deliveries", "bob/hooked", &id], "").starts_with("ID"));
    let err = fails(&bob, &["webhook", "create", "bob/hooked", "--url", "ftp://x"], "");
    assert!(err.contains("field url"), "{err}");
    ok(&bob, &["webhook", "delete", "bob/hooked", &id], "");
    // An organization's hook: the target is the organization's name alone.
    let out = ok(&bob, &["webhook", "create", "acme", "--url", "http://127.0.0.1:9/o", "--event", "repository"], "");
    assert!(out.contains("on acme for") && out.contains("repository"), "{out}");
    let org_hooks = json(&ok(&bob, &["--json", "webhook", "list", "acme"], ""));
    assert_eq!(org_hooks[0]["url"], "http://127.0.0.1:9/o");
    let err = fails(&bob, &["webhook", "list", "nobody-here"], "");
    assert!(err.contains("HTTP 404"), "{err}");
    ok(&bob, &["webhook", "delete", "acme", &org_hooks[0]["id"].to_string()], "");

    // Logout revokes a password session; a token login is only forgotten.
    ok(&bob, &["logout"], "");
    assert!(!bob.join("gitstratum").join("credentials.json").exists());
    assert!(fails(&bob, &["whoami"], "").contains("not logged in"));
    ok(&admin, &["logout"], "");
    let admin_again = tmp.path().join("admin-again");
    ok(&admin_again, &["login", "--server", &base, "--token", &admin_token], "");
    assert_eq!(server.terminate().code(), Some(0));
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "A")
        .env("GIT_AUTHOR_EMAIL", "a@example.com")
        .env("GIT_COMMITTER_NAME", "C")
        .env("GIT_COMMITTER_EMAIL", "c@example.com")
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Commits what is in `src` (a new repository), pushes it to `admin/app` and waits for the run it
/// starts; its id.
fn push_and_wait_for_run(me: &Path, src: &Path, base: &str, token: &str) -> String {
    git(src, &["init", "-q", "-b", "main"]);
    git(src, &["add", "-A"]);
    git(src, &["commit", "-q", "-m", "ci"]);
    let url = format!("http://x:{token}@{}/admin/app.git", base.trim_start_matches("http://"));
    git(src, &["push", "-q", &url, "main"]);
    for _ in 0..100 {
        let page = json(&ok(me, &["--json", "run", "list", "admin/app"], ""));
        if let Some(run) = page["runs"].get(0) {
            return run["id"].to_string();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("the push started no run");
}

/// A push runs on the real binary's embedded runner, and the `run` commands follow it.
#[test]
fn run_commands_follow_a_pushed_workflow() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let mut server = spawn(&data, &[], &[]);
    let base = server.base_url();
    let token = std::fs::read_to_string(data.join("initial-admin-token")).expect("token").trim().to_owned();
    let me = tmp.path().join("config");
    ok(&me, &["login", "--server", &base, "--token", &token], "");
    ok(&me, &["repo", "create", "app"], "");
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join(".github/workflows")).expect("dir");
    std::fs::write(
        src.join(".github/workflows/ci.yml"),
        "name: CI\non: push\njobs:\n  hello:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo hello from the runner\n      - run: mkdir out && echo zipped > out/r.txt\n      - uses: actions/upload-artifact@v4\n        with:\n          name: report\n          path: out\n",
    )
    .expect("write");
    std::fs::write(
        src.join(".github/workflows/greet.yml"),
        "on:\n  workflow_dispatch:\n    inputs:\n      who:\n        required: true\njobs:\n  greet:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo hello ${{ inputs.who }}\n",
    )
    .expect("write");
    let id = push_and_wait_for_run(&me, &src, &base, &token);
    let watched = ok(&me, &["run", "watch", &id], "");
    assert!(watched.contains("CI") && watched.contains("success"), "{watched}");
    let listed = ok(&me, &["run", "list", "admin/app"], "");
    assert!(listed.starts_with("ID") && listed.contains("success"), "{listed}");
    let view = ok(&me, &["run", "view", &id], "");
    assert!(view.contains("hello [success]") && view.contains("1. Run echo hello from the runner [success]"), "{view}");
    let logs = ok(&me, &["run", "logs", &id], "");
    assert!(logs.contains("=== hello [success]") && logs.contains("hello from the runner"), "{logs}");
    // The job's artifact: listed, and downloaded as a zip.
    let artifacts = ok(&me, &["artifact", "list", &id], "");
    assert!(artifacts.starts_with("ID") && artifacts.contains("report"), "{artifacts}");
    let listed = json(&ok(&me, &["--json", "artifact", "list", &id], ""));
    let artifact = listed["artifacts"][0]["id"].to_string();
    let zip = tmp.path().join("report.zip");
    let got = ok(&me, &["artifact", "download", &artifact, "-o", zip.to_str().expect("utf-8")], "");
    assert!(got.contains("Downloaded artifact \"report\""), "{got}");
    let bytes = std::fs::read(&zip).expect("zip");
    assert!(bytes.starts_with(b"PK\x03\x04") && bytes.windows(5).any(|w| w == b"r.txt"), "a zip with r.txt");
    // Usage of one's own repositories: the job, and the artifact's storage.
    let usage = ok(&me, &["usage"], "");
    assert!(usage.starts_with("Your repositories from") && usage.contains("1 jobs"), "{usage}");
    let usage = json(&ok(&me, &["--json", "usage"], ""));
    assert!(usage["artifact_bytes"].as_i64().is_some_and(|b| b > 0), "{usage}");
    let err = fails(&me, &["run", "cancel", &id], "");
    assert!(err.contains("HTTP 409"), "{err}");
    ok(&me, &["run", "rerun", &id], "");
    let watched = ok(&me, &["run", "watch", &id], "");
    assert!(watched.contains("success"), "{watched}");
    let view = json(&ok(&me, &["--json", "run", "view", &id], ""));
    assert_eq!(view["jobs"][0]["attempt"], 2);

    // A workflow_dispatch run with an input.
    let err = fails(&me, &["workflow", "run", "admin/app", "greet.yml"], "");
    assert!(err.contains("input who: this input is required"), "{err}");
    let started = json(&ok(&me, &["--json", "workflow", "run", "admin/app", "greet.yml", "-f", "who=cli"], ""));
    let dispatched = started["run_id"].to_string();
    ok(&me, &["run", "watch", &dispatched], "");
    let logs = ok(&me, &["run", "logs", &dispatched], "");
    assert!(logs.contains("hello cli"), "{logs}");
    let followed = ok(&me, &["run", "logs", &dispatched, "--follow"], "");
    assert!(followed.contains("hello cli") && followed.contains("=== greet [success]"), "{followed}");
    assert_eq!(server.terminate().code(), Some(0));
}

/// Secrets and variables from the CLI; `admin rotate-secrets-key` re-seals them under a new key
/// (server stopped), and after the restart a job still gets the secret (masked in its log).
#[test]
fn secrets_set_from_the_cli_survive_a_key_rotation() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let mut server = spawn(&data, &[], &[]);
    let base = server.base_url();
    let token = std::fs::read_to_string(data.join("initial-admin-token")).expect("token").trim().to_owned();
    let me = tmp.path().join("config");
    ok(&me, &["login", "--server", &base, "--token", &token], "");
    ok(&me, &["repo", "create", "app"], "");
    ok(&me, &["secret", "set", "token", "--repo", "admin/app"], "s3cret-value-42\n");
    let listed = ok(&me, &["secret", "list", "--repo", "admin/app"], "");
    assert!(listed.contains("TOKEN") && !listed.contains("s3cret"), "{listed}");
    let err = fails(&me, &["secret", "set", "GITHUB_TOKEN", "--repo", "admin/app"], "x\n");
    assert!(err.contains("reserved"), "{err}");
    ok(&me, &["variable", "set", "region", "eu-west", "--repo", "admin/app"], "");
    assert!(ok(&me, &["variable", "list", "--repo", "admin/app"], "").contains("eu-west"));
    assert_eq!(server.terminate().code(), Some(0));

    let key_before = std::fs::read_to_string(data.join("secrets.key")).expect("key");
    let rotated = ok(&me, &["admin", "rotate-secrets-key", "--data-dir", data.to_str().expect("utf-8")], "");
    assert!(rotated.contains("sealed 1 secrets"), "{rotated}");
    assert_ne!(std::fs::read_to_string(data.join("secrets.key")).expect("key"), key_before);
    let mode = std::fs::metadata(data.join("secrets.key")).expect("key").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let mut server = spawn(&data, &[], &[]);
    let base = server.base_url();
    ok(&me, &["login", "--server", &base, "--token", &token], "");
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join(".github/workflows")).expect("dir");
    std::fs::write(
        src.join(".github/workflows/ci.yml"),
        "on: push\njobs:\n  use:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo \"v=${{ secrets.TOKEN }} r=${{ vars.REGION }}\"\n",
    )
    .expect("write");
    let id = push_and_wait_for_run(&me, &src, &base, &token);
    ok(&me, &["run", "watch", &id], "");
    let logs = ok(&me, &["run", "logs", &id], "");
    assert!(logs.contains("v=*** r=eu-west") && !logs.contains("s3cret"), "{logs}");
    assert_eq!(server.terminate().code(), Some(0));
}

/// The `pr` commands: open, list, view, check out (git fetches refs/pull/N/head with the stored
/// token), review, merge, close and reopen.
#[test]
fn pr_commands_open_check_out_review_and_merge() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let mut server = spawn(&data, &[], &[]);
    let base = server.base_url();
    let token = std::fs::read_to_string(data.join("initial-admin-token")).expect("token").trim().to_owned();
    let me = tmp.path().join("config");
    ok(&me, &["login", "--server", &base, "--token", &token], "");
    ok(&me, &["repo", "create", "app", "--private"], "");
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).expect("dir");
    std::fs::write(src.join("a.txt"), "a\n").expect("write");
    git(&src, &["init", "-q", "-b", "main"]);
    git(&src, &["add", "-A"]);
    git(&src, &["commit", "-q", "-m", "base"]);
    let url = format!("http://x:{token}@{}/admin/app.git", base.trim_start_matches("http://"));
    git(&src, &["push", "-q", &url, "main"]);
    git(&src, &["checkout", "-q", "-b", "feature"]);
    std::fs::write(src.join("b.txt"), "b\n").expect("write");
    git(&src, &["add", "-A"]);
    git(&src, &["commit", "-q", "-m", "feature"]);
    git(&src, &["push", "-q", &url, "feature"]);

    let out = ok(&me, &["pr", "create", "admin/app", "--head", "feature", "--title", "Add b"], "");
    assert!(out.contains("#1") && out.contains("feature -> main") && out.contains("clean"), "{out}");
    let list = json(&ok(&me, &["--json", "pr", "list", "admin/app"], ""));
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert!(ok(&me, &["pr", "view", "admin/app", "1"], "").contains("Add b"));

    // Check out into another clone: git gets the token from the environment, not its arguments.
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).expect("dir");
    git(&other, &["init", "-q", "-b", "main"]);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gitstratum"));
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("GITSTRATUM_")) {
        cmd.env_remove(key);
    }
    let out = cmd
        .args(["pr", "checkout", "admin/app", "1"])
        .current_dir(&other)
        .env("XDG_CONFIG_HOME", &me)
        .env("HOME", &other)
        .output()
        .expect("checkout");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let head = |dir: &Path, what: &str| {
        let out = Command::new("git").args(["rev-parse", what]).current_dir(dir).output().expect("git");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(head(&other, "HEAD"), head(&src, "feature"));
    let branch =
        Command::new("git").args(["symbolic-ref", "--short", "HEAD"]).current_dir(&other).output().expect("git");
    assert_eq!(String::from_utf8_lossy(&branch.stdout).trim(), "pr/1");

    // Reviews: the author comments but cannot approve; merging squashes.
    let err = fails(&me, &["pr", "review", "admin/app", "1", "--approve"], "");
    assert!(err.contains("your own pull request"), "{err}");
    assert!(ok(&me, &["pr", "review", "admin/app", "1", "--body", "looks fine"], "").contains("COMMENTED"));
    let out = ok(&me, &["pr", "merge", "admin/app", "1", "--squash"], "");
    assert!(out.contains("merged pull request #1 (squash)"), "{out}");
    let merged = json(&ok(&me, &["--json", "pr", "view", "admin/app", "1"], ""));
    assert_eq!((merged["merged"].clone(), merged["state"].clone()), (Value::Bool(true), Value::from("closed")));
    let err = fails(&me, &["pr", "merge", "admin/app", "1"], "");
    assert!(err.contains("closed") && err.contains("HTTP 405"), "{err}");

    // Close and reopen another.
    git(&src, &["checkout", "-q", "-b", "second", "main"]);
    std::fs::write(src.join("c.txt"), "c\n").expect("write");
    git(&src, &["add", "-A"]);
    git(&src, &["commit", "-q", "-m", "second"]);
    git(&src, &["push", "-q", &url, "second"]);
    ok(&me, &["pr", "create", "admin/app", "--head", "second", "--base", "main", "--title", "Second"], "");
    assert!(ok(&me, &["pr", "close", "admin/app", "2"], "").contains("closed"));
    assert!(ok(&me, &["pr", "list", "admin/app", "--state", "closed"], "").contains("Second"));
    assert!(ok(&me, &["pr", "reopen", "admin/app", "2"], "").contains("open"));

    // A fork, under another name: private as its parent, naming it.
    let out = ok(&me, &["repo", "fork", "admin/app", "--name", "app-fork"], "");
    assert!(out.contains("Forked admin/app to admin/app-fork (private)"), "{out}");
    let view = ok(&me, &["repo", "view", "admin/app-fork"], "");
    assert!(view.contains("forked from") && view.contains("admin/app"), "{view}");
    let err = fails(&me, &["repo", "fork", "admin/app", "--name", "app-fork"], "");
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(server.terminate().code(), Some(0));
}
