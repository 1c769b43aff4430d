//! Git over SSH, driven by the real `git` and OpenSSH clients: keys of accounts sign in, the
//! same policy as HTTP decides, protocol v2 and v0 (stateful negotiation, shallow lists), pushes
//! with and without packs, protected branches, and what a refused client is told.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Git, TestServer, refs, runs_of};
use gitstratum_platform::Scope;
use reqwest::{Method, StatusCode};
use serde_json::json;

/// A user of the server with an SSH key of their own and a `git` whose `core.sshCommand` uses it.
struct SshUser {
    git: Git,
    token: String,
    key: PathBuf,
}

async fn ssh_user(s: &TestServer, root: &Path, name: &str, register: bool) -> SshUser {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("dir");
    let key = dir.join("id_ed25519");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", &format!("{name}@test"), "-f"])
        .arg(&key)
        .output()
        .expect("ssh-keygen runs");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let token = s.user_token(name, &[Scope::RepoRead, Scope::RepoWrite, Scope::RepoAdmin]).await;
    if register {
        let public = std::fs::read_to_string(key.with_extension("pub")).expect("public key");
        let (status, body) =
            s.send(Method::POST, "/api/v1/user/keys", Some(&token), Some(json!({"key": public.trim()}))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let git = Git::new(&dir);
    let command = format!(
        "ssh -i {} -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no \
         -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
        key.display()
    );
    git.ok(&dir, &["config", "--global", "core.sshCommand", &command]).await;
    SshUser { git, token, key }
}

fn ssh_url(s: &TestServer, path: &str) -> String {
    format!("ssh://git@127.0.0.1:{}/{path}", s.ssh_port.expect("ssh on"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clone_fetch_and_push_over_ssh_with_an_accounts_key() {
    let s = TestServer::start_with_ssh(Default::default()).await;
    let tmp = tempfile::tempdir().expect("temp dir");
    let alice = ssh_user(&s, tmp.path(), "alice", true).await;
    let (status, body) = s.create_repo(Some(&alice.token), json!({"name": "app", "private": true})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let url = ssh_url(&s, "alice/app.git");
    assert_eq!(body["ssh_url"].as_str(), Some(url.as_str()), "the repository names its SSH clone URL");
    let git = &alice.git;

    // A push over SSH (receive-pack speaks protocol v0 whatever the client asks).
    let src = tmp.path().join("src");
    git.repo_with_commits(&src, 6).await;
    git.ok(&src, &["tag", "-a", "v1", "-m", "release 1"]).await;
    git.ok(&src, &["branch", "feature", "HEAD~3"]).await;
    git.ok(&src, &["push", "-q", &url, "--all"]).await;
    git.ok(&src, &["push", "-q", &url, "--tags"]).await;
    // What SSH wrote, HTTP reads.
    let http = format!("http://alice:{}@{}/alice/app.git", alice.token, s.base.trim_start_matches("http://"));
    assert_eq!(refs(&git.ok(&src, &["ls-remote", &http]).await), refs(&git.ok(&src, &["ls-remote", &url]).await));

    // Clones in protocol v2 (git's default over SSH) and v0 (a stateful negotiation), whole and
    // shallow; each matches the source.
    let head = git.ok(&src, &["rev-parse", "HEAD"]).await;
    for (name, args) in [
        ("v2", vec!["clone", "-q"]),
        ("v0", vec!["-c", "protocol.version=0", "clone", "-q"]),
        ("v1", vec!["-c", "protocol.version=1", "clone", "-q"]),
        ("v2-shallow", vec!["clone", "-q", "--depth=1"]),
        ("v0-shallow", vec!["-c", "protocol.version=0", "clone", "-q", "--depth=2"]),
        ("v2-blobless", vec!["clone", "-q", "--filter=blob:none"]),
    ] {
        let dir = tmp.path().join(name);
        let mut args = args.clone();
        args.extend([url.as_str(), dir.to_str().expect("utf-8")]);
        git.ok(tmp.path(), &args).await;
        assert_eq!(git.ok(&dir, &["rev-parse", "HEAD"]).await, head, "{name}");
        assert_eq!(git.ok(&dir, &["symbolic-ref", "HEAD"]).await.trim(), "refs/heads/main", "{name}");
        git.fsck(&dir).await;
    }
    assert_eq!(git.ok(&tmp.path().join("v2-shallow"), &["rev-list", "--count", "HEAD"]).await.trim(), "1");
    assert_eq!(git.ok(&tmp.path().join("v0-shallow"), &["rev-list", "--count", "HEAD"]).await.trim(), "2");
    let listing = git.ok(&src, &["-c", "protocol.version=0", "ls-remote", &url]).await;
    assert!(listing.contains("refs/tags/v1^{}"), "v0 advertisement peels tags: {listing}");

    // New commits arrive by fetch, each client negotiating with what it has (haves over several
    // rounds in v0: the clone has history the server must find common).
    for i in 0..3 {
        std::fs::write(src.join(format!("new{i}.txt")), "new\n").expect("write");
        git.ok(&src, &["add", "-A"]).await;
        git.ok(&src, &["commit", "-q", "-m", &format!("after clone {i}")]).await;
    }
    git.ok(&src, &["push", "-q", &url, "main"]).await;
    let new_head = git.ok(&src, &["rev-parse", "HEAD"]).await;
    for (name, version) in [("v2", "2"), ("v0", "0")] {
        let dir = tmp.path().join(name);
        // Local commits the server lacks come first among the haves: rounds of them go
        // unacknowledged before the common history is reached.
        git.ok(&dir, &["checkout", "-q", "-b", "local"]).await;
        for i in 0..40 {
            git.ok(&dir, &["commit", "-q", "--allow-empty", "-m", &format!("local {i}")]).await;
        }
        git.ok(&dir, &["checkout", "-q", "main"]).await;
        let args = ["-c", &format!("protocol.version={version}"), "fetch", "-q", "origin"];
        let fetched = git.run_env(&dir, &args, &[("GIT_TRACE_PACKET", "1")]).await;
        let trace = String::from_utf8_lossy(&fetched.stderr);
        assert!(fetched.status.success(), "{trace}");
        // Each spoke the version asked, and the server found what the clone has in common.
        let v2 = trace.contains("< version 2");
        assert_eq!(v2, version == "2", "{name}: {trace}");
        assert!(trace.contains("< NAK"), "{name}: no round without a common commit: {trace}");
        assert!(trace.contains("< ACK "), "{name}: no common commit acknowledged: {trace}");
        assert_eq!(git.ok(&dir, &["rev-parse", "origin/main"]).await, new_head, "{name}");
        git.ok(&dir, &["merge", "-q", "--ff-only", "origin/main"]).await;
        git.fsck(&dir).await;
    }
    // A shallow clone deepens over v0 (the shallow list after the wants, then the negotiation).
    let shallow = tmp.path().join("v0-shallow");
    git.ok(&shallow, &["-c", "protocol.version=0", "fetch", "-q", "--deepen=2", "origin"]).await;
    assert_eq!(git.ok(&shallow, &["rev-list", "--count", "origin/main"]).await.trim(), "7");

    // A push from a clone, a deletion (no pack follows: the server must not wait for one), and a
    // fetch with nothing new (the client hangs up after the advertisement).
    let v2 = tmp.path().join("v2");
    std::fs::write(v2.join("from-clone.txt"), "x\n").expect("write");
    git.ok(&v2, &["add", "-A"]).await;
    git.ok(&v2, &["commit", "-q", "-m", "from the clone"]).await;
    git.ok(&v2, &["push", "-q", "origin", "main"]).await;
    git.ok(&v2, &["push", "-q", "origin", "--delete", "feature"]).await;
    let after = git.ok(&v2, &["ls-remote", "origin"]).await;
    assert!(!after.contains("refs/heads/feature"), "{after}");
    assert!(after.contains(&git.ok(&v2, &["rev-parse", "HEAD"]).await.trim().to_owned()), "{after}");
    let v0 = tmp.path().join("v0");
    git.ok(&v0, &["-c", "protocol.version=0", "pull", "-q", "--ff-only", "origin", "main"]).await;
    git.ok(&v0, &["-c", "protocol.version=0", "fetch", "-q", "origin"]).await;
    assert_eq!(git.ok(&v0, &["rev-parse", "HEAD"]).await, git.ok(&v2, &["rev-parse", "HEAD"]).await);

    // A push over SSH starts CI as one over HTTP does, once, as its pusher.
    let workflows = v2.join(".github/workflows");
    std::fs::create_dir_all(&workflows).expect("dir");
    std::fs::write(
        workflows.join("ci.yml"),
        "on: push\njobs:\n  build:\n    runs-on: ubuntu-latest\n    steps:\n      - run: true\n",
    )
    .expect("write");
    git.ok(&v2, &["add", "-A"]).await;
    git.ok(&v2, &["commit", "-q", "-m", "ci"]).await;
    git.ok(&v2, &["push", "-q", "origin", "main"]).await;
    let pushed = git.ok(&v2, &["rev-parse", "HEAD"]).await;
    let listed = runs_of(&s, &alice.token, "alice/app", 1).await;
    assert_eq!(
        (listed[0]["event"].as_str(), listed[0]["head_sha"].as_str(), listed[0]["actor"].as_str()),
        (Some("push"), Some(pushed.trim()), Some("alice"))
    );

    // The key was used: its last use is recorded.
    let (_, keys) = s.send(Method::GET, "/api/v1/user/keys", Some(&alice.token), None).await;
    assert!(keys[0]["last_used_at"].is_string(), "{keys}");
    let _ = alice.key;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_holds_to_the_same_policy_as_http() {
    let s = TestServer::start_with_ssh(Default::default()).await;
    let tmp = tempfile::tempdir().expect("temp dir");
    let alice = ssh_user(&s, tmp.path(), "alice", true).await;
    let bob = ssh_user(&s, tmp.path(), "bob", true).await;
    let stranger = ssh_user(&s, tmp.path(), "mallory", false).await;
    for (name, private) in [("secret", true), ("open", false)] {
        let (status, body) = s.create_repo(Some(&alice.token), json!({"name": name, "private": private})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let src = tmp.path().join("src");
    alice.git.repo_with_commits(&src, 3).await;
    for repo in ["secret", "open"] {
        alice.git.ok(&src, &["push", "-q", &ssh_url(&s, &format!("alice/{repo}.git")), "main"]).await;
    }

    // The repository's page shows its SSH clone URL beside the HTTP one.
    let page = s.http.get(s.url("/alice/open")).send().await.expect("page").text().await.expect("html");
    assert!(page.contains(&format!("value=\"{}\"", ssh_url(&s, "alice/open.git"))), "{page}");

    // A key no account has is refused by SSH itself.
    let refused = stranger.git.fails(tmp.path(), &["ls-remote", &ssh_url(&s, "alice/open.git")]).await;
    assert!(refused.contains("Permission denied (publickey)"), "{refused}");

    // Bob: a private repository of someone else's is not found; a public one clones but does not
    // take his push — in the words HTTP uses.
    let missing = bob.git.fails(tmp.path(), &["ls-remote", &ssh_url(&s, "alice/secret.git")]).await;
    assert!(missing.contains("Repository not found."), "{missing}");
    let nowhere = bob.git.fails(tmp.path(), &["ls-remote", &ssh_url(&s, "nobody/nothing")]).await;
    assert!(nowhere.contains("Repository not found."), "{nowhere}");
    let clone = tmp.path().join("bob-open");
    bob.git.ok(tmp.path(), &["clone", "-q", &ssh_url(&s, "alice/open"), clone.to_str().expect("utf-8")]).await;
    std::fs::write(clone.join("bob.txt"), "bob\n").expect("write");
    bob.git.ok(&clone, &["add", "-A"]).await;
    bob.git.ok(&clone, &["commit", "-q", "-m", "bob was here"]).await;
    let denied = bob.git.fails(&clone, &["push", "-q", "origin", "main"]).await;
    assert!(denied.contains("Permission to alice/open denied to bob"), "{denied}");

    // Granted write, he pushes; a protected branch then refuses his force push and deletion,
    // naming the rule, and nothing moves.
    let (status, _) = s
        .send(
            Method::PUT,
            "/api/v1/repos/alice/open/collaborators/bob",
            Some(&alice.token),
            Some(json!({"permission": "write"})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    bob.git.ok(&clone, &["push", "-q", "origin", "main"]).await;
    let rules = json!({
        "required_status_checks": null,
        "enforce_admins": false,
        "required_pull_request_reviews": null,
        "restrictions": null,
        "allow_force_pushes": false,
        "allow_deletions": false
    });
    let (status, body) =
        s.send(Method::PUT, "/api/v1/repos/alice/open/branches/main/protection", Some(&alice.token), Some(rules)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let before = bob.git.ok(&clone, &["ls-remote", "origin", "refs/heads/main"]).await;
    bob.git.ok(&clone, &["reset", "-q", "--hard", "HEAD~1"]).await;
    let forced = bob.git.fails(&clone, &["push", "-q", "--force", "origin", "main"]).await;
    assert!(forced.contains("protected branch") && forced.contains("force"), "{forced}");
    let deleted = bob.git.fails(&clone, &["push", "-q", "origin", "--delete", "main"]).await;
    assert!(deleted.contains("protected branch"), "{deleted}");
    assert_eq!(bob.git.ok(&clone, &["ls-remote", "origin", "refs/heads/main"]).await, before);

    // Only Git's two services run; a shell says who the key is, and nothing else.
    let port = s.ssh_port.expect("ssh").to_string();
    let ssh = |args: &[&str]| {
        let mut command = Command::new("ssh");
        command.args(["-i", alice.key.to_str().expect("utf-8"), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"]);
        command.args(["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]);
        command.args(["-p", &port, "git@127.0.0.1"]).args(args);
        command.output().expect("ssh runs")
    };
    let greeting = ssh(&["-T"]);
    let text = String::from_utf8_lossy(&greeting.stderr);
    assert!(text.contains("Hi alice! You've successfully authenticated"), "{text}");
    assert_eq!(greeting.status.code(), Some(1));
    let other = ssh(&["cat /etc/passwd"]);
    assert_eq!(other.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&other.stderr).contains("only git-upload-pack and git-receive-pack"));
    assert!(other.stdout.is_empty());
    let archive = ssh(&["git-upload-archive 'alice/open.git'"]);
    assert_eq!(archive.status.code(), Some(1));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ssh_keys_commands_count_against_its_rate_limit() {
    let config = gitstratum_server::ConfigLayer { rate_limit_per_client: Some("3".into()), ..Default::default() };
    let s = TestServer::start_with_ssh(config).await;
    let tmp = tempfile::tempdir().expect("temp dir");
    let alice = ssh_user(&s, tmp.path(), "alice", true).await;
    let (status, body) = s.create_repo(Some(&alice.token), json!({"name": "app"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let url = ssh_url(&s, "alice/app.git");
    for _ in 0..3 {
        alice.git.ok(tmp.path(), &["ls-remote", &url]).await;
    }
    let refused = alice.git.fails(tmp.path(), &["ls-remote", &url]).await;
    assert!(refused.contains("rate limit exceeded (3 requests per minute per client)"), "{refused}");
    s.stop().await;
}

/// `[ssh] host_key` names the key the server presents (the one every frontend of a cluster
/// shares): a client that knows only that key connects with strict checking; a missing file stops
/// the server with the command that makes one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_host_key_is_the_one_presented() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let host_key = tmp.path().join("host_key");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&host_key)
        .output()
        .expect("ssh-keygen runs");
    assert!(made.status.success());
    let config = gitstratum_server::ConfigLayer {
        ssh_host_key: Some(host_key.to_str().expect("utf-8").into()),
        ..Default::default()
    };
    let s = TestServer::start_with_ssh(config).await;
    let alice = ssh_user(&s, tmp.path(), "alice", true).await;
    let (status, body) = s.create_repo(Some(&alice.token), json!({"name": "app"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let public = std::fs::read_to_string(host_key.with_extension("pub")).expect("public key");
    let known_hosts = tmp.path().join("known_hosts");
    let port = s.ssh_port.expect("ssh");
    std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {public}")).expect("write");
    let strict = format!(
        "ssh -i {} -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile={}",
        alice.key.display(),
        known_hosts.display()
    );
    let listed = alice
        .git
        .run_env(tmp.path(), &["ls-remote", &ssh_url(&s, "alice/app.git")], &[("GIT_SSH_COMMAND", &strict)])
        .await;
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    s.stop().await;

    // A key file that is not there is an error at start, not a new key.
    let missing = tmp.path().join("nowhere");
    let data = tempfile::tempdir().expect("temp dir");
    let layer = gitstratum_server::ConfigLayer {
        ssh_host_key: Some(missing.to_str().expect("utf-8").into()),
        embedded_runner: Some("false".into()),
        data_dir: Some(data.path().to_owned()),
        ..Default::default()
    };
    let config = gitstratum_server::Config::from_layers(layer, Default::default(), Default::default()).expect("config");
    let server = gitstratum_server::Server::open(config, common::metrics_handle()).await.expect("open");
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let ssh = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let err = server.with_ssh_listener(ssh).serve(http, std::future::pending()).await.expect_err("no key");
    assert!(err.to_string().contains("ssh-keygen -t ed25519"), "{err}");
    assert!(!missing.exists());
}
