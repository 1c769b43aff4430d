//! Pull requests driven by the real `git` client and the API: `refs/pull/N/head` and
//! `refs/pull/N/merge` follow the branches, conflicts are found and named, and each merge method
//! leaves the history git expects.

use std::path::Path;
use std::time::Duration;

use common::{Git, Receiver, TestServer};
use gitstratum_platform::Scope;
use reqwest::Method;
use serde_json::{Value, json};

mod common;

struct Fixture {
    s: TestServer,
    git: Git,
    _tmp: tempfile::TempDir,
    work: std::path::PathBuf,
}

/// A server with `admin/app`, and a working copy with `main` pushed: `a.txt` of 10 lines.
async fn fixture() -> Fixture {
    fixture_with(gitstratum_server::ConfigLayer::default(), &[]).await
}

/// [`fixture`] on a server with `config`, `files` committed beside `a.txt`.
async fn fixture_with(config: gitstratum_server::ConfigLayer, files: &[(&str, &str)]) -> Fixture {
    let s = TestServer::start_with(config).await;
    let tmp = tempfile::tempdir().expect("temp dir");
    let git = Git::new(tmp.path());
    let (status, body) = s.create_repo(Some(&s.admin_token), json!({"name": "app"})).await;
    assert_eq!(status.as_u16(), 201, "{body}");
    let url = format!("http://x:{}@{}/admin/app.git", s.admin_token, s.base.trim_start_matches("http://"));
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).expect("dir");
    git.ok(&work, &["init", "-q", "-b", "main"]).await;
    write_lines(&work, "a.txt", &[]);
    for (name, text) in files {
        std::fs::create_dir_all(work.join(name).parent().expect("parent")).expect("dir");
        std::fs::write(work.join(name), text).expect("write");
    }
    git.ok(&work, &["add", "-A"]).await;
    git.ok(&work, &["commit", "-q", "-m", "base"]).await;
    git.ok(&work, &["remote", "add", "origin", &url]).await;
    git.ok(&work, &["push", "-q", "origin", "main"]).await;
    Fixture { s, git, _tmp: tmp, work }
}

/// `a.txt`-like files: 10 lines, some replaced.
fn write_lines(dir: &Path, file: &str, changes: &[(usize, &str)]) {
    let mut lines: Vec<String> = (0..10).map(|i| format!("line {i}")).collect();
    for (i, text) in changes {
        lines[*i] = (*text).to_owned();
    }
    std::fs::write(dir.join(file), lines.join("\n") + "\n").expect("write");
}

impl Fixture {
    async fn commit(&self, branch: &str, from: &str, file: &str, changes: &[(usize, &str)], message: &str) -> String {
        self.git.ok(&self.work, &["checkout", "-q", "-B", branch, from]).await;
        write_lines(&self.work, file, changes);
        self.git.ok(&self.work, &["add", "-A"]).await;
        self.git.ok(&self.work, &["commit", "-q", "-m", message]).await;
        self.git.ok(&self.work, &["push", "-q", "-f", "origin", branch]).await;
        self.rev(branch).await
    }

    async fn rev(&self, what: &str) -> String {
        self.git.ok(&self.work, &["rev-parse", what]).await.trim().to_owned()
    }

    async fn api(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let (status, body) =
            self.s.send(method, &format!("/api/v1/repos/admin/app{path}"), Some(&self.s.admin_token), body).await;
        (status.as_u16(), body)
    }

    async fn open(&self, title: &str, head: &str, base: &str) -> Value {
        let (status, body) =
            self.api(Method::POST, "/pulls", Some(json!({"title": title, "head": head, "base": base}))).await;
        assert_eq!(status, 201, "{body}");
        body
    }

    /// The pull request once `ready` says it is (the updater follows pushes within moments).
    async fn wait_for(&self, number: i64, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        for _ in 0..200 {
            let (status, body) = self.api(Method::GET, &format!("/pulls/{number}"), None).await;
            assert_eq!(status, 200, "{body}");
            if ready(&body) {
                return body;
            }
            last = body;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("pull request #{number} never got {what}: {last}");
    }

    async fn remote_refs(&self) -> String {
        self.git.ok(&self.work, &["ls-remote", "origin"]).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_refs_follow_their_branches_and_conflicts_are_named() {
    let f = fixture().await;
    let feature = f.commit("feature", "main", "a.txt", &[(2, "feature")], "feature work").await;
    let pr = f.open("Add the feature", "feature", "main").await;
    assert_eq!(pr["number"], 1);
    assert_eq!(pr["head"]["sha"], feature.as_str());
    assert_eq!(pr["head"]["label"], "admin:feature");
    assert_eq!((pr["mergeable"].clone(), pr["mergeable_state"].clone()), (json!(true), json!("clean")));

    // refs/pull/1/head is the head; refs/pull/1/merge a merge of it into main, as git would make it.
    let listing = f.remote_refs().await;
    assert!(listing.contains(&format!("{feature}\trefs/pull/1/head")), "{listing}");
    f.git.ok(&f.work, &["fetch", "-q", "origin", "+refs/pull/*:refs/remotes/pr/*"]).await;
    assert_eq!(f.rev("pr/1/head").await, feature);
    let main = f.rev("main").await;
    assert_eq!(f.rev("pr/1/merge^1").await, main);
    assert_eq!(f.rev("pr/1/merge^2").await, feature);
    let expected_tree = f.git.ok(&f.work, &["merge-tree", "--write-tree", "main", "feature"]).await;
    assert_eq!(f.rev("pr/1/merge^{tree}").await, expected_tree.trim());
    assert_eq!(pr["merge_commit_sha"], f.rev("pr/1/merge").await.as_str());
    f.git.fsck(&f.work).await;

    // Pushes may not write them.
    let refused = f.git.fails(&f.work, &["push", "origin", "main:refs/pull/1/head"]).await;
    assert!(refused.contains("deny updating a hidden ref"), "{refused}");

    // A push to the head moves refs/pull/1/head.
    let second = f.commit("feature", "feature", "b.txt", &[], "more work").await;
    let pr = f.wait_for(1, "the new head", |p| p["head"]["sha"] == second.as_str() && p["mergeable"] == true).await;
    assert_eq!(pr["mergeable_state"], "clean");
    assert!(f.remote_refs().await.contains(&format!("{second}\trefs/pull/1/head")));

    // main changes the same line: a conflict, named; no merge ref; the merge is refused.
    f.commit("main", "main", "a.txt", &[(2, "main's own")], "conflicting work").await;
    let pr = f.wait_for(1, "a conflict", |p| p["mergeable"] == false).await;
    assert_eq!(pr["mergeable_state"], "dirty");
    assert_eq!(pr["conflicting_files"], json!(["a.txt"]));
    assert!(!f.remote_refs().await.contains("refs/pull/1/merge"), "no test merge while it conflicts");
    let before = f.rev("main").await;
    let (status, body) = f.api(Method::PUT, "/pulls/1/merge", Some(json!({}))).await;
    assert_eq!(status, 405, "{body}");
    assert!(body["error"]["message"].as_str().expect("message").contains("a.txt"), "{body}");
    assert!(f.remote_refs().await.contains(&format!("{before}\trefs/heads/main")), "main did not move");

    // Resolving the conflict on the branch makes it mergeable again.
    f.git.ok(&f.work, &["checkout", "-q", "feature"]).await;
    f.git.run(&f.work, &["merge", "-q", "main"]).await; // conflicts
    write_lines(&f.work, "a.txt", &[(2, "resolved")]);
    f.git.ok(&f.work, &["add", "-A"]).await;
    f.git.ok(&f.work, &["commit", "-q", "--no-edit"]).await;
    f.git.ok(&f.work, &["push", "-q", "origin", "feature"]).await;
    let resolved = f.rev("feature").await;
    let pr = f.wait_for(1, "the resolution", |p| p["head"]["sha"] == resolved.as_str() && p["mergeable"] == true).await;
    assert_eq!(pr["conflicting_files"], json!([]));
    assert!(f.remote_refs().await.contains("refs/pull/1/merge"));
    f.s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_merge_method_leaves_the_history_git_expects() {
    let f = fixture().await;
    // merge: a merge commit with main and the head as parents.
    f.commit("m", "main", "m.txt", &[], "m one").await;
    let m_head = f.commit("m", "m", "a.txt", &[(1, "m")], "m two").await;
    f.commit("main", "main", "a.txt", &[(8, "main moved on")], "main moves").await;
    let main_before = f.rev("main").await;
    f.open("Merge me", "m", "main").await;
    let (status, body) =
        f.api(Method::PUT, "/pulls/1/merge", Some(json!({"merge_method": "merge", "sha": m_head}))).await;
    assert_eq!(status, 200, "{body}");
    let merged = body["sha"].as_str().expect("sha").to_owned();
    f.git.ok(&f.work, &["fetch", "-q", "origin"]).await;
    assert_eq!(f.rev("origin/main").await, merged);
    assert_eq!(f.rev("origin/main^1").await, main_before);
    assert_eq!(f.rev("origin/main^2").await, m_head);
    let message = f.git.ok(&f.work, &["log", "-1", "--format=%B", "origin/main"]).await;
    assert!(message.starts_with("Merge pull request #1 from admin/m\n\nMerge me"), "{message}");
    let expected_tree = f.git.ok(&f.work, &["merge-tree", "--write-tree", &main_before, &m_head]).await;
    assert_eq!(f.rev("origin/main^{tree}").await, expected_tree.trim());
    let graph = f.git.ok(&f.work, &["log", "--graph", "--format=%s", "origin/main"]).await;
    assert_eq!(
        graph.lines().map(str::trim_end).collect::<Vec<_>>(),
        [
            "*   Merge pull request #1 from admin/m",
            "|\\  ",
            "| * m two",
            "| * m one",
            "* | main moves",
            "|/  ",
            "* base"
        ]
        .map(str::trim_end),
        "{graph}"
    );
    let (status, pr) = f.api(Method::GET, "/pulls/1", None).await;
    assert_eq!(status, 200);
    assert_eq!((pr["state"].clone(), pr["merged"].clone()), (json!("closed"), json!(true)));
    assert_eq!((pr["merge_commit_sha"].clone(), pr["merged_by"]["login"].clone()), (json!(merged), json!("admin")));
    assert_eq!(f.api(Method::GET, "/pulls/1/merge", None).await.0, 204);
    let (status, body) = f.api(Method::PUT, "/pulls/1/merge", Some(json!({}))).await;
    assert_eq!(status, 405, "merged once: {body}");

    // squash: one commit on main with the pull request's changes.
    f.git.ok(&f.work, &["checkout", "-q", "-B", "main", "origin/main"]).await;
    f.commit("s", "main", "s.txt", &[], "s one").await;
    let s_head = f.commit("s", "s", "a.txt", &[(4, "s")], "s two").await;
    f.open("Squash me", "s", "main").await;
    let (status, body) = f.api(Method::PUT, "/pulls/2/merge", Some(json!({"merge_method": "squash"}))).await;
    assert_eq!(status, 200, "{body}");
    f.git.ok(&f.work, &["fetch", "-q", "origin"]).await;
    assert_eq!(f.rev("origin/main").await, body["sha"].as_str().expect("sha"));
    assert_eq!(f.rev("origin/main^").await, merged, "one parent: the old main");
    assert_eq!(f.rev("origin/main^{tree}").await, f.rev(&format!("{s_head}^{{tree}}")).await);
    let message = f.git.ok(&f.work, &["log", "-1", "--format=%B", "origin/main"]).await;
    assert!(message.starts_with("Squash me (#2)\n\n* s one\n\n* s two"), "{message}");
    let author = f.git.ok(&f.work, &["log", "-1", "--format=%an", "origin/main"]).await;
    assert_eq!(author.trim(), "admin", "the pull request's author");

    // rebase: the head's commits replayed onto main, one by one, authors kept.
    let squashed = f.rev("origin/main").await;
    f.commit("r", &merged, "r.txt", &[], "r one").await;
    f.commit("r", "r", "a.txt", &[(6, "r")], "r two").await;
    f.open("Rebase me", "r", "main").await;
    let (status, body) = f.api(Method::PUT, "/pulls/3/merge", Some(json!({"merge_method": "rebase"}))).await;
    assert_eq!(status, 200, "{body}");
    f.git.ok(&f.work, &["fetch", "-q", "origin"]).await;
    let log = f.git.ok(&f.work, &["log", "--format=%s|%an|%P", &format!("{squashed}..origin/main")]).await;
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(lines[0].starts_with("r two|A U Thor|"), "{log}");
    assert!(lines[1].starts_with(&format!("r one|A U Thor|{squashed}")), "{log}");
    let content = f.git.ok(&f.work, &["show", "origin/main:a.txt"]).await;
    assert!(content.contains("line 1\n") && content.contains("s\n") && content.contains("r\n"), "{content}");
    f.git.ok(&f.work, &["checkout", "-q", "-B", "main", "origin/main"]).await;
    f.git.fsck(&f.work).await;

    // A head pushed into the base by hand is merged, as GitHub says.
    let h = f.commit("h", "main", "h.txt", &[], "h").await;
    f.open("By hand", "h", "main").await;
    f.git.ok(&f.work, &["checkout", "-q", "main"]).await;
    f.git.ok(&f.work, &["merge", "-q", "--no-ff", "-m", "by hand", "h"]).await;
    f.git.ok(&f.work, &["push", "-q", "origin", "main"]).await;
    let pr = f.wait_for(4, "merged", |p| p["merged"] == true).await;
    assert_eq!(pr["state"], "closed");
    assert!(f.remote_refs().await.contains(&format!("{h}\trefs/pull/4/head")));
    f.s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_request_rules_and_permissions() {
    let f = fixture().await;
    f.commit("feature", "main", "a.txt", &[(3, "x")], "x").await;
    f.git.ok(&f.work, &["push", "-q", "origin", "main:same"]).await;
    let bad = [
        (json!({"title": "t", "head": "feature", "base": "feature"}), "head"),
        (json!({"title": "t", "head": "nope", "base": "main"}), "head"),
        (json!({"title": "t", "head": "feature", "base": "nope"}), "base"),
        (json!({"title": " ", "head": "feature", "base": "main"}), "title"),
        (json!({"title": "t", "head": "same", "base": "main"}), "head"), // no commits between
        (json!({"title": "t", "head": "other:feature", "base": "main"}), "head"),
    ];
    for (body, field) in bad {
        let (status, answer) = f.api(Method::POST, "/pulls", Some(body.clone())).await;
        assert_eq!((status, answer["error"]["field"].clone()), (422, json!(field)), "{body}: {answer}");
    }
    assert_eq!(f.api(Method::GET, "/pulls?state=all", None).await.1, json!([]), "nothing was opened");
    f.open("One", "feature", "main").await;
    let (status, body) =
        f.api(Method::POST, "/pulls", Some(json!({"title": "t", "head": "feature", "base": "main"}))).await;
    assert_eq!((status, body["error"]["code"].clone()), (422, json!("pull.already_exists")), "{body}");

    // Close and reopen; the listing follows.
    let (status, pr) =
        f.api(Method::PATCH, "/pulls/1", Some(json!({"state": "closed", "title": "One, renamed"}))).await;
    assert_eq!((status, pr["state"].clone(), pr["title"].clone()), (200, json!("closed"), json!("One, renamed")));
    assert_eq!(f.api(Method::GET, "/pulls", None).await.1, json!([]));
    assert_eq!(f.api(Method::GET, "/pulls?state=closed", None).await.1[0]["number"], 1);
    let (status, pr) = f.api(Method::PATCH, "/pulls/1", Some(json!({"state": "open"}))).await;
    assert_eq!((status, pr["state"].clone()), (200, json!("open")));
    assert_eq!(f.api(Method::GET, "/pulls/9", None).await.0, 404);

    // A reader may open a pull request and edit their own, not merge or edit another's.
    let reader = f.s.user_token("reader", &[Scope::RepoRead, Scope::RepoWrite]).await;
    let as_reader = |method: Method, path: &str, body: Option<Value>| {
        let path = format!("/api/v1/repos/admin/app{path}");
        let (s, reader) = (&f.s, reader.clone());
        async move {
            let (status, body) = s.send(method, &path, Some(&reader), body).await;
            (status.as_u16(), body)
        }
    };
    f.commit("theirs", "main", "t.txt", &[], "theirs").await;
    let (status, body) =
        as_reader(Method::POST, "/pulls", Some(json!({"title": "Mine", "head": "theirs", "base": "main"}))).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["user"]["login"], "reader");
    assert_eq!(as_reader(Method::PATCH, "/pulls/2", Some(json!({"title": "Still mine"}))).await.0, 200);
    assert_eq!(as_reader(Method::PATCH, "/pulls/1", Some(json!({"title": "Not mine"}))).await.0, 403);
    assert_eq!(as_reader(Method::PUT, "/pulls/2/merge", Some(json!({}))).await.0, 403);
    let anonymous = f.s.send(Method::GET, "/api/v1/repos/admin/app/pulls/2", None, None).await;
    assert_eq!(anonymous.0.as_u16(), 200, "a public repository's pull requests are public");
    f.s.stop().await;
}

/// Waits for the workflow runs of `sha` to finish; their combined state.
async fn checks_done(f: &Fixture, sha: &str) -> String {
    for _ in 0..600 {
        let (status, body) = f.api(Method::GET, &format!("/commits/{sha}/status"), None).await;
        assert_eq!(status, 200, "{body}");
        if body["total_count"] != 0 && body["state"] != "pending" {
            return body["state"].as_str().expect("state").to_owned();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the checks of {sha} never finished");
}

const WORKFLOW: &str = "name: CI\non: push\njobs:\n  build:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/checkout@v4\n      - run: test -f ok\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_branches_hold_on_push_and_merge() {
    let config = gitstratum_server::ConfigLayer { embedded_runner: Some("true".into()), ..Default::default() };
    let f = fixture_with(config, &[(".github/workflows/ci.yml", WORKFLOW), ("ok", "")]).await;
    f.commit("main", "main", "a.txt", &[(0, "second")], "second").await;
    let rules = json!({
        "required_status_checks": {"strict": true, "contexts": ["build"]},
        "enforce_admins": true,
        "required_pull_request_reviews": {"required_approving_review_count": 1, "dismiss_stale_reviews": true},
        "restrictions": null,
        "allow_force_pushes": false,
        "allow_deletions": false
    });
    let (status, body) = f.api(Method::PUT, "/branches/main/protection", Some(rules)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["required_status_checks"], json!({"strict": true, "contexts": ["build"]}));
    assert_eq!(body["required_pull_request_reviews"]["required_approving_review_count"], 1);
    assert_eq!(
        (body["enforce_admins"].clone(), body["allow_deletions"].clone()),
        (json!({"enabled": true}), json!({"enabled": false}))
    );
    assert_eq!(f.api(Method::GET, "/branches/main/protection", None).await.1, body);
    assert_eq!(f.api(Method::GET, "/branches/other/protection", None).await.0, 404);

    // Direct pushes, force pushes and deletions are refused, each saying why; main stays.
    let main = f.rev("main").await;
    let listing = || async { f.remote_refs().await };
    f.git.ok(&f.work, &["checkout", "-q", "main"]).await;
    write_lines(&f.work, "a.txt", &[(1, "direct")]);
    f.git.ok(&f.work, &["commit", "-q", "-am", "direct"]).await;
    let refused = f.git.fails(&f.work, &["push", "origin", "main"]).await;
    assert!(refused.contains("protected branch (main): changes must be made through a pull request"), "{refused}");
    let refused = f.git.fails(&f.work, &["push", "-f", "origin", "main~2:main"]).await;
    assert!(refused.contains("protected branch (main): cannot be force-pushed"), "{refused}");
    let refused = f.git.fails(&f.work, &["push", "origin", ":main"]).await;
    assert!(refused.contains("protected branch (main): cannot be deleted"), "{refused}");
    assert!(listing().await.contains(&format!("{main}\trefs/heads/main")), "main did not move");
    f.git.ok(&f.work, &["reset", "-q", "--hard", &main]).await;

    // A pull request whose check fails, unreviewed.
    let feature = f.commit("feature", &main, "a.txt", &[(5, "feature")], "feature").await;
    f.git.ok(&f.work, &["rm", "-q", "ok"]).await;
    f.git.ok(&f.work, &["commit", "-q", "-m", "breaks the build"]).await;
    f.git.ok(&f.work, &["push", "-q", "origin", "feature"]).await;
    let broken = f.rev("feature").await;
    assert_ne!(broken, feature);
    f.open("Feature", "feature", "main").await;
    assert_eq!(checks_done(&f, &broken).await, "failure");
    let pr = f.wait_for(1, "mergeability", |p| p["mergeable"] == true).await;
    assert_eq!(pr["mergeable_state"], "blocked", "{pr}");
    assert!(pr["blocked_by"].as_str().expect("why").contains("approving review"), "{pr}");
    let merge = || async { f.api(Method::PUT, "/pulls/1/merge", Some(json!({}))).await };
    let (status, body) = merge().await;
    assert_eq!(status, 405, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("1 approving review(s) of the latest commit required, 0 given"),
        "{body}"
    );

    // A writer approves; the failing check still blocks. The author cannot approve.
    let reviewer = f.s.user_token("reviewer", &[Scope::RepoRead, Scope::RepoWrite]).await;
    let (status, _) = f.api(Method::PUT, "/collaborators/reviewer", Some(json!({"permission": "write"}))).await;
    assert_eq!(status, 204);
    let review = |event: &'static str| {
        let (s, reviewer) = (&f.s, reviewer.clone());
        async move {
            let body = json!({"event": event, "body": "looked at it"});
            s.send(Method::POST, "/api/v1/repos/admin/app/pulls/1/reviews", Some(&reviewer), Some(body)).await
        }
    };
    let (status, body) = review("APPROVE").await;
    assert_eq!(
        (status.as_u16(), body["state"].clone(), body["commit_id"].clone()),
        (200, json!("APPROVED"), json!(broken))
    );
    let (status, body) = f.api(Method::POST, "/pulls/1/reviews", Some(json!({"event": "APPROVE"}))).await;
    assert_eq!(status, 422, "the author approves nothing: {body}");
    let (status, body) = merge().await;
    assert_eq!(status, 405, "{body}");
    assert!(body["error"]["message"].as_str().expect("message").contains("build (failed)"), "{body}");

    // Fixing the build makes the approval stale (dismiss_stale_reviews).
    f.git.ok(&f.work, &["checkout", "-q", "feature"]).await;
    std::fs::write(f.work.join("ok"), "").expect("write");
    f.git.ok(&f.work, &["add", "ok"]).await;
    f.git.ok(&f.work, &["commit", "-q", "-m", "fixes the build"]).await;
    f.git.ok(&f.work, &["push", "-q", "origin", "feature"]).await;
    let fixed = f.rev("feature").await;
    f.wait_for(1, "the fixed head", |p| p["head"]["sha"] == fixed.as_str()).await;
    assert_eq!(checks_done(&f, &fixed).await, "success");
    let (status, body) = merge().await;
    assert_eq!(status, 405, "{body}");
    assert!(
        body["error"]["message"].as_str().expect("message").contains("0 given"),
        "the old approval is stale: {body}"
    );
    let (status, _) = review("REQUEST_CHANGES").await;
    assert_eq!(status.as_u16(), 200);
    let (status, body) = merge().await;
    assert!(
        status == 405 && body["error"]["message"].as_str().expect("message").contains("reviewer requested changes"),
        "{body}"
    );
    review("APPROVE").await;
    let (status, body) = merge().await;
    assert_eq!(status, 200, "{body}");
    f.git.ok(&f.work, &["fetch", "-q", "origin"]).await;
    assert_eq!(f.rev("origin/main^2").await, fixed);
    let (status, reviews) = f.api(Method::GET, "/pulls/1/reviews", None).await;
    assert_eq!(status, 200);
    let states: Vec<&str> =
        reviews.as_array().expect("list").iter().map(|r| r["state"].as_str().expect("state")).collect();
    assert_eq!(states, ["APPROVED", "CHANGES_REQUESTED", "APPROVED"]);

    // A user the rules name may push directly (checks off); removing the protection frees main.
    let rules = json!({"required_status_checks": null, "enforce_admins": true, "restrictions": null,
        "required_pull_request_reviews": {"bypass_pull_request_allowances": {"users": ["admin"]}}});
    assert_eq!(f.api(Method::PUT, "/branches/main/protection", Some(rules)).await.0, 200);
    f.commit("main", "origin/main", "a.txt", &[(9, "by the bypasser")], "bypass").await;
    assert_eq!(f.api(Method::DELETE, "/branches/main/protection", None).await.0, 204);
    assert_eq!(f.api(Method::DELETE, "/branches/main/protection", None).await.0, 404);
    f.git.ok(&f.work, &["push", "-q", "origin", ":feature"]).await;
    f.s.stop().await;
}

/// `pull_request` and `pull_request_review` webhooks, GitHub-shaped: opened, synchronize on a push
/// to the head, a review submitted, closed when merged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_request_webhooks_follow_the_pull_request() {
    let f = fixture().await;
    let mut receiver = Receiver::start().await;
    let hook = json!({"url": receiver.url, "events": ["pull_request", "pull_request_review"]});
    let (status, body) = f.api(Method::POST, "/hooks", Some(hook)).await;
    assert_eq!(status, 201, "{body}");
    let head = f.commit("feature", "main", "a.txt", &[(2, "x")], "x").await;
    f.open("Hooked", "feature", "main").await;
    let (event, opened) = next(&mut receiver).await;
    assert_eq!((event.as_str(), opened["action"].as_str()), ("pull_request", Some("opened")));
    assert_eq!(opened["number"], 1);
    assert_eq!(opened["pull_request"]["head"]["sha"], head.as_str());
    assert_eq!(opened["pull_request"]["base"]["ref"], "main");
    assert_eq!(opened["repository"]["full_name"], "admin/app");
    assert_eq!(opened["sender"]["login"], "admin");

    let second = f.commit("feature", "feature", "b.txt", &[], "more").await;
    let (event, synchronize) = next(&mut receiver).await;
    assert_eq!((event.as_str(), synchronize["action"].as_str()), ("pull_request", Some("synchronize")));
    assert_eq!(synchronize["pull_request"]["head"]["sha"], second.as_str());
    assert_eq!(synchronize["sender"]["login"], "admin", "the pusher");

    let reviewer = f.s.user_token("reviewer", &[Scope::RepoRead, Scope::RepoWrite]).await;
    let body = json!({"event": "COMMENT", "body": "nice"});
    let (status, _) =
        f.s.send(Method::POST, "/api/v1/repos/admin/app/pulls/1/reviews", Some(&reviewer), Some(body)).await;
    assert_eq!(status.as_u16(), 200);
    let (event, review) = next(&mut receiver).await;
    assert_eq!((event.as_str(), review["action"].as_str()), ("pull_request_review", Some("submitted")));
    assert_eq!(
        (review["review"]["state"].as_str(), review["review"]["user"]["login"].as_str()),
        (Some("commented"), Some("reviewer"))
    );
    assert_eq!(review["pull_request"]["number"], 1);

    let (status, _) = f.api(Method::PUT, "/pulls/1/merge", Some(json!({}))).await;
    assert_eq!(status, 200);
    let (event, closed) = next(&mut receiver).await;
    assert_eq!((event.as_str(), closed["action"].as_str()), ("pull_request", Some("closed")));
    assert_eq!(closed["pull_request"]["merged"], true);
    f.s.stop().await;
}

/// The next webhook delivery: its event name and JSON body.
async fn next(receiver: &mut Receiver) -> (String, Value) {
    let (headers, body) = tokio::time::timeout(Duration::from_secs(20), receiver.next()).await.expect("a delivery");
    let event = headers.get("x-github-event").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    (event, serde_json::from_str::<Value>(&body).expect("json"))
}

const PR_WORKFLOW: &str = r#"name: PR
on:
  pull_request:
    branches: [main]
jobs:
  show:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - run: echo "event=$GITHUB_EVENT_NAME ref=$GITHUB_REF head=$GITHUB_HEAD_REF base=$GITHUB_BASE_REF action=${{ github.event.action }} number=${{ github.event.pull_request.number }} ctx=${{ github.head_ref }}"
      - run: grep -q '^feature$' a.txt && test "$(git rev-parse HEAD)" = "$GITHUB_SHA" && echo merged-checkout-ok
"#;

/// The runs of `admin/app` for `event`, once there are `n`, newest first.
async fn runs_for(f: &Fixture, event: &str, n: usize) -> Vec<Value> {
    let mut last = Value::Null;
    for _ in 0..300 {
        let (status, page) = f.api(Method::GET, "/runs?limit=100", None).await;
        assert_eq!(status, 200, "{page}");
        let runs: Vec<Value> =
            page["runs"].as_array().into_iter().flatten().filter(|r| r["event"] == event).cloned().collect();
        if runs.len() >= n && runs.iter().all(|r| r["status"] == "completed") {
            assert_eq!(runs.len(), n, "more {event} runs than expected: {page}");
            return runs;
        }
        last = page;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("expected {n} completed {event} runs; have {last}");
}

/// The log of a run's only job, without the runner's stamps.
async fn only_job_log(f: &Fixture, run: &Value) -> String {
    let (status, detail) =
        f.s.send(Method::GET, &format!("/api/v1/runs/{}", run["id"]), Some(&f.s.admin_token), None).await;
    assert_eq!(status, 200, "{detail}");
    let job = &detail["jobs"][0];
    let response =
        f.s.http
            .get(f.s.url(&format!("/api/v1/jobs/{}/logs", job["id"])))
            .bearer_auth(&f.s.admin_token)
            .send()
            .await
            .expect("log");
    let log = response.text().await.expect("text");
    log.split_inclusive('\n').map(|l| gitstratum_core::Timestamp::split_log_stamp(l).1).collect()
}

/// `on: pull_request` runs on the test merge (`refs/pull/N/merge`) when a pull request is opened
/// and when its head moves, with GitHub's contexts; its branch filter is the base branch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_requests_run_their_workflows_on_the_test_merge() {
    let config = gitstratum_server::ConfigLayer { embedded_runner: Some("true".into()), ..Default::default() };
    let f = fixture_with(config, &[(".github/workflows/pr.yml", PR_WORKFLOW)]).await;
    f.commit("feature", "main", "a.txt", &[(1, "feature")], "feature").await;
    f.open("Run me", "feature", "main").await;
    let runs = runs_for(&f, "pull_request", 1).await;
    let (_, pr) = f.api(Method::GET, "/pulls/1", None).await;
    assert_eq!(runs[0]["head_sha"], pr["merge_commit_sha"], "it runs on the test merge: {}", runs[0]);
    assert_eq!(runs[0]["conclusion"], "success", "{}", runs[0]);
    let log = only_job_log(&f, &runs[0]).await;
    assert!(
        log.contains(
            "event=pull_request ref=refs/pull/1/merge head=feature base=main action=opened number=1 ctx=feature"
        ),
        "{log}"
    );
    assert!(log.contains("merged-checkout-ok"), "the checkout is the test merge: {log}");

    // A push to the head: a synchronize run on the new test merge.
    f.commit("feature", "feature", "b.txt", &[], "more").await;
    let runs = runs_for(&f, "pull_request", 2).await;
    let log = only_job_log(&f, &runs[0]).await;
    assert!(log.contains("action=synchronize number=1"), "{log}");
    let (_, pr) = f.api(Method::GET, "/pulls/1", None).await;
    assert_eq!(runs[0]["head_sha"], pr["merge_commit_sha"]);

    // Into another base branch: the branch filter says no; closing runs nothing by default.
    f.git.ok(&f.work, &["push", "-q", "origin", "main:other"]).await;
    f.open("Elsewhere", "feature", "other").await;
    let (status, _) = f.api(Method::PATCH, "/pulls/1", Some(json!({"state": "closed"}))).await;
    assert_eq!(status, 200);
    // A later event the workflow does take shows the ones before were passed over.
    let (status, _) = f.api(Method::PATCH, "/pulls/1", Some(json!({"state": "open"}))).await;
    assert_eq!(status, 200);
    let runs = runs_for(&f, "pull_request", 3).await;
    assert!(only_job_log(&f, &runs[0]).await.contains("action=reopened number=1"));

    // The pull request's checks: the newest run's job for its head; its timeline, in order.
    let (status, checks) = f.api(Method::GET, "/pulls/1/checks", None).await;
    assert_eq!(status, 200, "{checks}");
    assert_eq!((checks["state"].as_str(), checks["total_count"].as_u64()), (Some("success"), Some(1)), "{checks}");
    assert_eq!(checks["check_runs"][0]["run_id"], runs[0]["id"], "{checks}");
    assert_eq!(
        (checks["check_runs"][0]["name"].as_str(), checks["check_runs"][0]["event"].as_str()),
        (Some("show"), Some("pull_request"))
    );
    let (status, timeline) = f.api(Method::GET, "/pulls/1/timeline", None).await;
    assert_eq!(status, 200, "{timeline}");
    let kinds: Vec<&str> = timeline.as_array().expect("items").iter().filter_map(|i| i["event"].as_str()).collect();
    assert_eq!(
        kinds,
        ["workflow_run", "committed", "workflow_run", "closed", "reopened", "workflow_run"],
        "{timeline}"
    );
    f.s.stop().await;
}

impl Fixture {
    /// A request as `token`, to any path.
    async fn call(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        let (status, body) = self.s.send(method, path, Some(token), body).await;
        (status.as_u16(), body)
    }

    /// `git` with `token`'s URL of `owner/name`.
    fn url_as(&self, token: &str, repo: &str) -> String {
        format!("http://x:{token}@{}/{repo}.git", self.s.base.trim_start_matches("http://"))
    }
}

/// A fork holds its parent's branches, tags and objects at once (the stored packs shared), takes
/// pushes of its own, proposes them to its parent as a pull request (`head: "owner:branch"`,
/// whose objects reach the parent through `refs/pull/N/head`), and outlives its parent. A
/// private repository's forks are private and stay so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forks_share_history_and_propose_changes_to_their_parent() {
    let f = fixture().await;
    f.git.ok(&f.work, &["tag", "v1"]).await;
    f.git.ok(&f.work, &["push", "-q", "origin", "v1"]).await;
    let main = f.rev("main").await;
    let bob = f.s.user_token("bob", &[Scope::RepoRead, Scope::RepoWrite, Scope::RepoAdmin]).await;

    let (status, fork) = f.call(Method::POST, "/api/v1/repos/admin/app/forks", &bob, Some(json!({}))).await;
    assert_eq!(status, 202, "{fork}");
    assert_eq!((fork["full_name"].as_str(), fork["fork"].as_bool()), (Some("bob/app"), Some(true)), "{fork}");
    assert_eq!(fork["parent"]["full_name"], "admin/app", "{fork}");
    assert_eq!(fork["private"], false);
    let (status, again) = f.call(Method::POST, "/api/v1/repos/admin/app/forks", &bob, Some(json!({}))).await;
    assert_eq!(status, 409, "a second fork of the same name: {again}");
    let (_, forks) = f.call(Method::GET, "/api/v1/repos/admin/app/forks", &bob, None).await;
    assert_eq!(forks.as_array().map(|a| a.len()), Some(1), "{forks}");
    // Its CI starts switched off, as on GitHub.
    let (status, permissions) = f.call(Method::GET, "/api/v1/repos/bob/app/actions/permissions", &bob, None).await;
    assert_eq!((status, permissions["enabled"].clone()), (200, json!(false)), "{permissions}");

    // Bob clones his fork: the parent's branches, tags and history, whole.
    let bob_work = f._tmp.path().join("bob");
    f.git.ok(f._tmp.path(), &["clone", "-q", &f.url_as(&bob, "bob/app"), bob_work.to_str().expect("utf-8")]).await;
    assert_eq!(f.git.ok(&bob_work, &["rev-parse", "HEAD"]).await.trim(), main);
    assert!(f.git.ok(&bob_work, &["tag"]).await.contains("v1"));
    f.git.fsck(&bob_work).await;

    // He pushes a branch to his fork and proposes it to the parent.
    f.git.ok(&bob_work, &["checkout", "-q", "-b", "fix"]).await;
    write_lines(&bob_work, "a.txt", &[(3, "bob's fix")]);
    f.git.ok(&bob_work, &["commit", "-q", "-am", "Fix line 3"]).await;
    f.git.ok(&bob_work, &["push", "-q", "origin", "fix"]).await;
    let fix = f.git.ok(&bob_work, &["rev-parse", "HEAD"]).await.trim().to_owned();
    assert!(!f.remote_refs().await.contains(&fix), "the parent does not have the fork's branch");
    let open = json!({"title": "Fix line 3", "head": "bob:fix", "base": "main"});
    let (status, pr) = f.call(Method::POST, "/api/v1/repos/admin/app/pulls", &bob, Some(open)).await;
    assert_eq!(status, 201, "{pr}");
    assert_eq!((pr["head"]["label"].as_str(), pr["head"]["sha"].as_str()), (Some("bob:fix"), Some(fix.as_str())));
    assert_eq!(pr["head"]["repo"]["full_name"], "bob/app", "{pr}");
    assert_eq!(pr["base"]["repo"]["full_name"], "admin/app", "{pr}");
    assert_eq!(pr["mergeable_state"], "clean", "{pr}");
    let unknown = json!({"title": "x", "head": "carol:fix", "base": "main"});
    let (status, body) = f.call(Method::POST, "/api/v1/repos/admin/app/pulls", &bob, Some(unknown)).await;
    assert_eq!(status, 422, "{body}");

    // The parent serves the fork's commits under refs/pull/1/head, complete.
    f.git.ok(&f.work, &["fetch", "-q", "origin", "+refs/pull/*:refs/remotes/pr/*"]).await;
    assert_eq!(f.rev("pr/1/head").await, fix);
    f.git.fsck(&f.work).await;

    // A push to the fork's branch moves the pull request.
    write_lines(&bob_work, "b.txt", &[]);
    f.git.ok(&bob_work, &["add", "b.txt"]).await;
    f.git.ok(&bob_work, &["commit", "-q", "-m", "Add b"]).await;
    f.git.ok(&bob_work, &["push", "-q", "origin", "fix"]).await;
    let fix2 = f.git.ok(&bob_work, &["rev-parse", "HEAD"]).await.trim().to_owned();
    f.wait_for(1, "the fork's new head", |p| p["head"]["sha"] == fix2.as_str() && p["mergeable"] == true).await;

    // Merged by the parent's admin: main has bob's commits.
    let (status, merged) = f.api(Method::PUT, "/pulls/1/merge", Some(json!({"merge_method": "merge"}))).await;
    assert_eq!(status, 200, "{merged}");
    f.git.ok(&f.work, &["fetch", "-q", "origin"]).await;
    f.git.ok(&f.work, &["merge-base", "--is-ancestor", &fix2, "origin/main"]).await;
    f.git.fsck(&f.work).await;

    // Deleting the parent breaks nothing of the fork.
    let (status, _) = f.api(Method::DELETE, "", None).await;
    assert_eq!(status, 204);
    let again = f._tmp.path().join("bob-again");
    f.git.ok(f._tmp.path(), &["clone", "-q", &f.url_as(&bob, "bob/app"), again.to_str().expect("utf-8")]).await;
    f.git.fsck(&again).await;
    assert_eq!(f.git.ok(&again, &["rev-parse", "origin/fix"]).await.trim(), fix2);
    let (status, orphan) = f.call(Method::GET, "/api/v1/repos/bob/app", &bob, None).await;
    assert_eq!((status, orphan["fork"].clone(), orphan.get("parent").cloned()), (200, json!(true), None), "{orphan}");

    // A private repository: invisible to bob until he may read it; his fork is private, and stays so.
    let (status, _) = f.s.create_repo(Some(&f.s.admin_token), json!({"name": "secret", "private": true})).await;
    assert_eq!(status.as_u16(), 201);
    let (status, _) = f.call(Method::POST, "/api/v1/repos/admin/secret/forks", &bob, Some(json!({}))).await;
    assert_eq!(status, 404);
    let grant = json!({"permission": "read"});
    let (status, _) =
        f.call(Method::PUT, "/api/v1/repos/admin/secret/collaborators/bob", &f.s.admin_token, Some(grant)).await;
    assert_eq!(status, 204);
    let (status, private_fork) = f.call(Method::POST, "/api/v1/repos/admin/secret/forks", &bob, Some(json!({}))).await;
    assert_eq!((status, private_fork["private"].clone()), (202, json!(true)), "{private_fork}");
    let (status, body) = f.call(Method::PATCH, "/api/v1/repos/bob/secret", &bob, Some(json!({"private": false}))).await;
    assert_eq!(status, 422, "{body}");
    let carol = f.s.user_token("carol", &[Scope::RepoRead, Scope::RepoWrite]).await;
    let (status, _) = f.call(Method::GET, "/api/v1/repos/bob/secret", &carol, None).await;
    assert_eq!(status, 404, "a private fork is not visible to others");
    // Reading a private fork is not enough to copy its branch into the parent.
    for repo in ["admin/secret", "bob/secret"] {
        let token = if repo == "bob/secret" { &bob } else { &f.s.admin_token };
        let path = format!("/api/v1/repos/{repo}/collaborators/carol");
        let (status, _) = f.call(Method::PUT, &path, token, Some(json!({"permission": "read"}))).await;
        assert_eq!(status, 204, "{repo}");
    }
    let open = json!({"title": "x", "head": "bob:main", "base": "main"});
    let (status, body) = f.call(Method::POST, "/api/v1/repos/admin/secret/pulls", &carol, Some(open)).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("needs push access")), "{body}");
    f.s.stop().await;
}

const SECRET_WORKFLOW: &str = r#"name: PR
on: pull_request
jobs:
  show:
    runs-on: ubuntu-latest
    steps:
      - run: echo "secret=[${{ secrets.DEPLOY_TOKEN }}] fork=${{ github.event.pull_request.head.repo.fork }} head=${{ github.event.pull_request.head.repo.full_name }}"
"#;

/// A pull request from a fork runs the base's CI with no secrets (the job's log shows an empty
/// value where a pull request from a branch of the repository shows `***`), as on GitHub.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_requests_from_forks_get_no_secrets() {
    let config = gitstratum_server::ConfigLayer { embedded_runner: Some("true".into()), ..Default::default() };
    let f = fixture_with(config, &[(".github/workflows/pr.yml", SECRET_WORKFLOW)]).await;
    let (status, body) = f.api(Method::PUT, "/secrets/DEPLOY_TOKEN", Some(json!({"value": "hunter2-secret"}))).await;
    assert_eq!(status, 201, "{body}");

    // From a branch of the repository: the secret is there, masked.
    f.commit("inside", "main", "a.txt", &[(1, "inside")], "inside").await;
    f.open("From inside", "inside", "main").await;
    let runs = runs_for(&f, "pull_request", 1).await;
    let log = only_job_log(&f, &runs[0]).await;
    assert!(log.contains("secret=[***] fork=false head=admin/app"), "{log}");

    // From a fork: the same workflow, no secret.
    let bob = f.s.user_token("bob", &[Scope::RepoRead, Scope::RepoWrite]).await;
    let (status, fork) = f.call(Method::POST, "/api/v1/repos/admin/app/forks", &bob, Some(json!({}))).await;
    assert_eq!(status, 202, "{fork}");
    let bob_work = f._tmp.path().join("bob");
    f.git.ok(f._tmp.path(), &["clone", "-q", &f.url_as(&bob, "bob/app"), bob_work.to_str().expect("utf-8")]).await;
    f.git.ok(&bob_work, &["checkout", "-q", "-b", "outside"]).await;
    write_lines(&bob_work, "a.txt", &[(2, "outside")]);
    f.git.ok(&bob_work, &["commit", "-q", "-am", "outside"]).await;
    f.git.ok(&bob_work, &["push", "-q", "origin", "outside"]).await;
    let open = json!({"title": "From a fork", "head": "bob:outside", "base": "main"});
    let (status, pr) = f.call(Method::POST, "/api/v1/repos/admin/app/pulls", &bob, Some(open)).await;
    assert_eq!(status, 201, "{pr}");
    let runs = runs_for(&f, "pull_request", 2).await;
    assert_eq!(runs[0]["conclusion"], "success", "{}", runs[0]);
    let log = only_job_log(&f, &runs[0]).await;
    assert!(log.contains("secret=[] fork=true head=bob/app"), "{log}");
    assert!(!log.contains("hunter2"), "{log}");
    // The push to the fork started nothing in the fork (its CI is off).
    let (status, page) = f.call(Method::GET, "/api/v1/repos/bob/app/runs", &bob, None).await;
    assert_eq!((status, page["runs"].as_array().map(Vec::len)), (200, Some(0)), "{page}");
    f.s.stop().await;
}

/// Line comments stay on their line while pushes change other lines (moving with lines added
/// above), are outdated once a push changes their line, and answers join their thread; review
/// requests are answered by a review.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_comments_follow_their_lines_and_reviewers_are_asked() {
    let f = fixture().await;
    let head = f.commit("feature", "main", "a.txt", &[(7, "feature 8")], "feature").await;
    f.open("Comment me", "feature", "main").await;
    let comment = |line: i64, body: &str| json!({"body": body, "path": "a.txt", "line": line, "commit_id": head});
    let (status, on5) = f.api(Method::POST, "/pulls/1/comments", Some(comment(5, "keep line 5"))).await;
    assert_eq!(status, 201, "{on5}");
    assert_eq!(
        (on5["line"].clone(), on5["side"].clone(), on5["commit_id"].clone()),
        (json!(5), json!("RIGHT"), json!(head))
    );
    let (status, on8) = f.api(Method::POST, "/pulls/1/comments", Some(comment(8, "about line 8"))).await;
    assert_eq!(status, 201, "{on8}");
    for bad in [
        comment(11, "past the end"),
        json!({"body": "x", "path": "nope.txt", "line": 1}),
        json!({"body": "x", "path": "a.txt"}),
        json!({"body": "x", "path": "a.txt", "line": 1, "commit_id": "0".repeat(40)}),
        json!({"body": "x", "path": "a.txt", "line": 1, "side": "MIDDLE"}),
        json!({"body": "", "path": "a.txt", "line": 1}),
    ] {
        let (status, body) = f.api(Method::POST, "/pulls/1/comments", Some(bad.clone())).await;
        assert_eq!(status, 422, "{bad} -> {body}");
    }

    // A push that adds two lines at the top and changes line 8 again.
    f.git.ok(&f.work, &["checkout", "-q", "feature"]).await;
    let mut lines: Vec<String> = vec!["top 1".into(), "top 2".into()];
    lines.extend((0..10).map(|i| if i == 7 { "feature 8, again".to_owned() } else { format!("line {i}") }));
    std::fs::write(f.work.join("a.txt"), lines.join("\n") + "\n").expect("write");
    f.git.ok(&f.work, &["commit", "-q", "-am", "more"]).await;
    f.git.ok(&f.work, &["push", "-q", "origin", "feature"]).await;
    let moved = f.rev("feature").await;
    f.wait_for(1, "the new head", |p| p["head"]["sha"] == moved.as_str()).await;
    let (status, list) = f.api(Method::GET, "/pulls/1/comments", None).await;
    assert_eq!(status, 200, "{list}");
    let at = |i: usize| (list[i]["line"].clone(), list[i]["original_line"].clone(), list[i]["commit_id"].clone());
    assert_eq!(at(0), (json!(7), json!(5), json!(moved)), "line 5 moved down two: {list}");
    assert_eq!(at(1), (Value::Null, json!(8), json!(moved)), "line 8 changed: outdated: {list}");
    assert_eq!(list[1]["original_commit_id"], head.as_str());

    // An answer joins the thread, on its line; a push elsewhere moves nothing.
    let (status, reply) =
        f.api(Method::POST, "/pulls/1/comments", Some(json!({"body": "agreed", "in_reply_to": on5["id"]}))).await;
    assert_eq!(status, 201, "{reply}");
    assert_eq!((reply["in_reply_to_id"].clone(), reply["line"].clone()), (on5["id"].clone(), json!(7)));
    let elsewhere = f.commit("feature", "feature", "b.txt", &[], "elsewhere").await;
    f.wait_for(1, "the newest head", |p| p["head"]["sha"] == elsewhere.as_str()).await;
    let (_, list) = f.api(Method::GET, "/pulls/1/comments", None).await;
    let lines: Vec<Value> = list.as_array().expect("list").iter().map(|c| c["line"].clone()).collect();
    assert_eq!(lines, [json!(7), Value::Null, json!(7)], "{list}");

    // Review requests.
    let reviewer = f.s.user_token("rev", &[Scope::RepoRead, Scope::RepoWrite]).await;
    let (status, pr) = f.api(Method::POST, "/pulls/1/requested_reviewers", Some(json!({"reviewers": ["rev"]}))).await;
    assert_eq!(status, 201, "{pr}");
    assert_eq!(pr["requested_reviewers"], json!([{"login": "rev"}]));
    let (status, body) =
        f.api(Method::POST, "/pulls/1/requested_reviewers", Some(json!({"reviewers": ["nobody"]}))).await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = f
        .call(
            Method::POST,
            "/api/v1/repos/admin/app/pulls/1/requested_reviewers",
            &reviewer,
            Some(json!({"reviewers": ["rev"]})),
        )
        .await;
    assert_eq!(status, 403, "only the author and writers ask: {body}");
    let review = json!({"event": "COMMENT", "body": "looked"});
    let (status, body) = f.call(Method::POST, "/api/v1/repos/admin/app/pulls/1/reviews", &reviewer, Some(review)).await;
    assert_eq!(status, 200, "{body}");
    let (_, asked) = f.api(Method::GET, "/pulls/1/requested_reviewers", None).await;
    assert_eq!(asked["users"], json!([]), "the review answered the request");
    f.s.stop().await;
}

/// An organization's default protection covers the default branch of each repository created in
/// it afterwards: a writer's direct push to it is refused, naming the rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organization_default_protection_covers_new_repositories() {
    let f = fixture().await;
    let admin = f.s.admin_token.clone();
    let (status, _) = f.call(Method::POST, "/api/v1/orgs", &admin, Some(json!({"name": "acme"}))).await;
    assert_eq!(status, 201);
    let (status, body) = f.call(Method::GET, "/api/v1/orgs/acme/default_branch_protection", &admin, None).await;
    assert_eq!(status, 404, "{body}");
    let rules = json!({
        "required_status_checks": null,
        "enforce_admins": false,
        "required_pull_request_reviews": {"required_approving_review_count": 1},
        "restrictions": null
    });
    let (status, body) = f.call(Method::PUT, "/api/v1/orgs/acme/default_branch_protection", &admin, Some(rules)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["required_pull_request_reviews"]["required_approving_review_count"], 1, "{body}");
    let bob = f.s.user_token("bob", &[Scope::RepoRead, Scope::RepoWrite]).await;
    let (status, body) =
        f.call(Method::PUT, "/api/v1/orgs/acme/default_branch_protection", &bob, Some(json!({}))).await;
    assert!(status == 404 || status == 403, "only its owners: {status} {body}");

    let (status, body) = f.s.create_repo(Some(&admin), json!({"name": "app", "owner": "acme"})).await;
    assert_eq!(status.as_u16(), 201, "{body}");
    let (status, protection) =
        f.call(Method::GET, "/api/v1/repos/acme/app/branches/main/protection", &admin, None).await;
    assert_eq!(status, 200, "{protection}");
    assert_eq!(protection["required_pull_request_reviews"]["required_approving_review_count"], 1);
    // The organization's owner (an administrator here) seeds main; a writer cannot push to it.
    f.git.ok(&f.work, &["push", "-q", &f.url_as(&admin, "acme/app"), "main"]).await;
    let grant = json!({"permission": "write"});
    let (status, _) = f.call(Method::PUT, "/api/v1/repos/acme/app/collaborators/bob", &admin, Some(grant)).await;
    assert_eq!(status, 204);
    f.commit("direct", "main", "a.txt", &[(4, "direct")], "direct").await;
    let refused = f.git.fails(&f.work, &["push", &f.url_as(&bob, "acme/app"), "direct:main"]).await;
    assert!(refused.contains("protected branch (main): changes must be made through a pull request"), "{refused}");

    // Deleting branches through the API: never the default branch, nor a protected one whose
    // rules forbid it; others go.
    f.git.ok(&f.work, &["push", "-q", &f.url_as(&admin, "acme/app"), "main:release", "main:scratch"]).await;
    let (status, _) = f
        .call(
            Method::PUT,
            "/api/v1/repos/acme/app/branches/release/protection",
            &admin,
            Some(json!({"restrictions": null})),
        )
        .await;
    assert_eq!(status, 200);
    for (branch, expected, word) in [
        ("main", 422, "default branch"),
        ("release", 422, "protected branch (release): cannot be deleted"),
        ("nope", 404, "no branch"),
    ] {
        let (status, body) =
            f.call(Method::DELETE, &format!("/api/v1/repos/acme/app/git/refs/heads/{branch}"), &bob, None).await;
        assert_eq!(status, expected, "{branch}: {body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains(word)), "{branch}: {body}");
    }
    let (status, body) = f.call(Method::DELETE, "/api/v1/repos/acme/app/git/refs/heads/scratch", &bob, None).await;
    assert_eq!(status, 204, "{body}");
    let listing = f.git.ok(&f.work, &["ls-remote", &f.url_as(&admin, "acme/app")]).await;
    assert!(!listing.contains("refs/heads/scratch") && listing.contains("refs/heads/release"), "{listing}");
    f.s.stop().await;
}

const SUPERSEDED_WORKFLOW: &str = r#"name: PR
on: pull_request
concurrency:
  group: ${{ github.workflow }}-${{ github.head_ref || github.run_id }}
  cancel-in-progress: true
jobs:
  slow:
    runs-on: ubuntu-latest
    steps:
      - run: sleep 60
"#;

/// Every run of `admin/app`, newest first.
async fn all_runs(f: &Fixture) -> Vec<Value> {
    let (_, page) = f.api(Method::GET, "/runs?limit=100", None).await;
    page["runs"].as_array().cloned().unwrap_or_default()
}

/// A push to a pull request's head cancels the run of the head before it, when the workflow's
/// concurrency group says so (GitHub's documented `head_ref || run_id` group).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_push_cancels_the_superseded_pull_request_run() {
    let config = gitstratum_server::ConfigLayer { embedded_runner: Some("true".into()), ..Default::default() };
    let f = fixture_with(config, &[(".github/workflows/pr.yml", SUPERSEDED_WORKFLOW)]).await;
    f.commit("feature", "main", "a.txt", &[(1, "feature")], "feature").await;
    f.open("Slow", "feature", "main").await;
    let mut first = Value::Null;
    for _ in 0..300 {
        if let Some(run) = all_runs(&f).await.into_iter().find(|r| r["status"] == "in_progress") {
            first = run;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(first.is_object(), "the first run never started");
    f.commit("feature", "feature", "b.txt", &[], "more").await;
    let mut last = Vec::new();
    for _ in 0..300 {
        last = all_runs(&f).await;
        let old = last.iter().find(|r| r["id"] == first["id"]).cloned().unwrap_or_default();
        if last.len() == 2 && old["conclusion"] == "cancelled" {
            let newer = last.iter().find(|r| r["id"] != first["id"]).expect("the newer run");
            assert_ne!(newer["status"], "completed", "the newer run goes on: {newer}");
            f.s.stop().await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the superseded run was not cancelled: {last:?}");
}

/// A repository chooses the merge methods its pull requests may use, and whether a merged head
/// branch is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repositories_choose_merge_methods_and_delete_merged_branches() {
    let f = fixture().await;
    let (status, repo) = f.api(Method::GET, "", None).await;
    assert_eq!(status, 200);
    let flags = |r: &Value| {
        ["allow_merge_commit", "allow_squash_merge", "allow_rebase_merge", "delete_branch_on_merge"]
            .map(|k| r[k].clone())
    };
    assert_eq!(flags(&repo), [json!(true), json!(true), json!(true), json!(false)]);
    let none = json!({"allow_merge_commit": false, "allow_squash_merge": false, "allow_rebase_merge": false});
    let (status, body) = f.api(Method::PATCH, "", Some(none)).await;
    assert_eq!(status, 422, "one method must stay: {body}");
    let only_merge = json!({"allow_squash_merge": false, "allow_rebase_merge": false, "delete_branch_on_merge": true});
    let (status, repo) = f.api(Method::PATCH, "", Some(only_merge)).await;
    assert_eq!(status, 200, "{repo}");
    assert_eq!(flags(&repo), [json!(true), json!(false), json!(false), json!(true)]);

    let head = f.commit("feature", "main", "a.txt", &[(2, "feature")], "feature").await;
    f.open("Merge me", "feature", "main").await;
    let (status, body) = f.api(Method::PUT, "/pulls/1/merge", Some(json!({"merge_method": "squash"}))).await;
    assert_eq!(status, 405, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("squash merges are not allowed")), "{body}");
    // The base moves on and its protection wants heads up to date: `behind`, as GitHub says.
    f.commit("main", "main", "c.txt", &[], "main moves").await;
    let strict = json!({"required_status_checks": {"strict": true, "contexts": []}, "restrictions": null});
    let (status, body) = f.api(Method::PUT, "/branches/main/protection", Some(strict)).await;
    assert_eq!(status, 200, "{body}");
    let pr = f.wait_for(1, "the moved base", |p| p["mergeable"] == true && p["mergeable_state"] != "clean").await;
    assert_eq!(pr["mergeable_state"], "behind", "{pr}");
    let (status, _) = f.api(Method::DELETE, "/branches/main/protection", None).await;
    assert_eq!(status, 204);
    let (status, body) =
        f.api(Method::PUT, "/pulls/1/merge", Some(json!({"merge_method": "merge", "sha": head}))).await;
    assert_eq!(status, 200, "{body}");
    let listing = f.remote_refs().await;
    assert!(!listing.contains("refs/heads/feature"), "the merged head branch is gone: {listing}");
    f.s.stop().await;
}
