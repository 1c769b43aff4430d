//! The real `git` client against our smart HTTP server: push, clone, fetch, delete, force,
//! atomic, concurrent pushes, private repositories and tokens, empty repositories, mirrors, a
//! long history and a large binary. Every clone is checked with `git fsck --strict`.

use std::path::PathBuf;
use std::process::Command;

use common::{Git, Receiver, TestServer, refs};
use gitstratum_platform::Scope;
use gitstratum_server::ConfigLayer;
use serde_json::json;

mod common;

async fn create_repo(s: &TestServer, name: &str, private: bool) -> String {
    let (status, body) = s.create_repo(Some(&s.admin_token), json!({"name": name, "private": private})).await;
    assert_eq!(status.as_u16(), 201, "{body}");
    authed_url(s, &s.admin_token, name)
}

fn authed_url(s: &TestServer, token: &str, name: &str) -> String {
    format!("http://x:{token}@{}/admin/{name}.git", s.base.trim_start_matches("http://"))
}

/// `len` bytes no compressor shrinks (xorshift), the same every run.
fn incompressible(len: usize) -> Vec<u8> {
    let mut state = 0x9e3779b97f4a7c15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_clone_and_fetch_round_trip() {
    let s = TestServer::start().await;
    let tmp = tempfile::tempdir().expect("temp dir");
    let git = Git::new(tmp.path());
    let url = create_repo(&s, "round-trip", false).await;
    let src = tmp.path().join("src");
    git.repo_with_commits(&src, 5).await;
    git.ok(&src, &["tag", "-a", "v1", "-m", "release 1"]).await;
    git.ok(&src, &["tag", "light"]).await;
    git.ok(&src, &["-c", "advice.nestedTag=false", "tag", "-a", "nested", "v1", "-m", "a tag of a tag"]).await;
    git.ok(&src, &["branch", "feature", "HEAD~2"]).await;
    git.ok(&src, &["push", "-q", &url, "--all"]).await;
    git.ok(&src, &["push", "-q", &url, "--tags"]).await;

    // A public repository clones anonymously.
    let anonymous = format!("{}/admin/round-trip", s.base);
    let clone = tmp.path().join("clone");
    git.ok(tmp.path(), &["clone", "-q", &anonymous, clone.to_str().expect("utf-8")]).await;
    git.fsck(&clone).await;
    assert_eq!(git.ok(&clone, &["rev-parse", "HEAD"]).await, git.ok(&src, &["rev-parse", "HEAD"]).await);
    assert_eq!(git.ok(&clone, &["symbolic-ref", "HEAD"]).await.trim(), "refs/heads/main");
    assert_eq!(
        refs(&git.ok(&clone, &["ls-remote", "origin"]).await),
        refs(&git.ok(&src, &["ls-remote", &url]).await),
        "both views of the server agree"
    );
    let listing = git.ok(&clone, &["ls-remote", "origin"]).await;
    assert!(listing.contains("refs/tags/v1^{}"), "annotated tags are peeled: {listing}");
    let head = git.ok(&src, &["rev-parse", "HEAD"]).await;
    assert!(listing.contains(&format!("{}\trefs/tags/nested^{{}}", head.trim())), "down to the commit: {listing}");
    assert_eq!(git.ok(&clone, &["tag"]).await.trim(), "light\nnested\nv1");

    // New commits arrive by fetch, negotiating with what the clone has.
    std::fs::write(src.join("new.txt"), "new\n").expect("write");
    git.ok(&src, &["add", "-A"]).await;
    git.ok(&src, &["commit", "-q", "-m", "after clone"]).await;
    git.ok(&src, &["push", "-q", &url, "main"]).await;
    git.ok(&clone, &["fetch", "-q", "origin"]).await;
    assert_eq!(git.ok(&clone, &["rev-parse", "origin/main"]).await, git.ok(&src, &["rev-parse", "HEAD"]).await);
    git.ok(&clone, &["merge", "-q", "--ff-only", "origin/main"]).await;
    git.fsck(&clone).await;
    s.stop().await;
}

/// One file changed and pushed again and again, each push a thin pack whose one blob is a delta
/// against the version the push before stored: what a CI bot bumping a version file does. Every
/// push stays readable (found by the failure suite: each stored delta's base was the previous
/// push's delta, until the chain was too deep to read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_pushed_again_and_again_stays_readable() {
    let s = TestServer::start().await;
    let tmp = tempfile::tempdir().expect("temp dir");
    let git = Git::new(tmp.path());
    let url = create_repo(&s, "bumps", false).await;
    let src = tmp.path().join("src");
    git.repo_with_commits(&src, 1).await;
    let mut text: String = (0..200).map(|i| format!("line {i} of a file that changes a little each time\n")).collect();
    std::fs::write(src.join("version.txt"), &text).expect("write");
    git.ok(&src, &["add", "version.txt"]).await;
    git.ok(&src, &["commit", "-q", "-m", "version"]).await;
    git.ok(&src, &["push", "-q", &url, "main"]).await;
    for push in 0..24 {
        text.push_str(&format!("push {push}\n"));
        std::fs::write(src.join("version.txt"), &text).expect("write");
        git.ok(&src, &["commit", "-q", "-am", &format!("push {push}")]).await;
        git.ok(&src, &["push", "-q", &url, "main"]).await;
    }
    let clone = tmp.path().join("clone");
    git.ok(tmp.path(), &["clone", "-q", &url, clone.to_str().expect("utf-8")]).await;
    git.fsck(&clone).await;
    assert_eq!(std::fs::read_to_string(clone.join("version.txt")).expect("read"), text);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_force_and_atomic_pushes() {
    let s = TestServer::start().await;
    let tmp = tempfile::tempdir().expect("temp dir");
    let git = Git::new(tmp.path());
    let url = create_repo(&s, "updates", false).await;
    let src = tmp.path().join("src");
    git.repo_with_commits(&src, 4).await;
    git.ok(&src, &["push", "-q", &url, "main", "main:refs/heads/doomed", "main:refs/heads/other"]).await;

    git.ok(&src, &["push", "-q", &url, ":doomed"]).await;
    assert!(!git.ok(&src, &["ls-remote", &url]).await.contains("doomed"));

    // Rewrite history: refused without force (by the client, which sees the remote moved on),
    // accepted with it.
    git.ok(&src, &["reset", "-q", "--hard", "HEAD~2"]).await;
    std::fs::write(src.join("rewrite.txt"), "x\n").expect("write");
    git.ok(&src, &["add", "-A"]).await;
    git.ok(&src, &["commit", "-q", "-m", "rewritten"]).await;
    let err = git.fails(&src, &["push", &url, "main"]).await;
    assert!(err.contains("rejected"), "{err}");
    let before = git.ok(&src, &["ls-remote", &url]).await;

    // Atomic: one ref is fine, one is not; nothing changes.
    let err = git.fails(&src, &["push", "--atomic", &url, "main", "HEAD:refs/heads/brand-new"]).await;
    assert!(err.contains("atomic") || err.contains("rejected"), "{err}");
    assert_eq!(git.ok(&src, &["ls-remote", &url]).await, before);

    git.ok(&src, &["push", "-q", "--force", &url, "main"]).await;
    assert!(git.ok(&src, &["ls-remote", &url]).await.contains(git.ok(&src, &["rev-parse", "HEAD"]).await.trim()));
    git.ok(&src, &["push", "-q", "--atomic", &url, "HEAD:refs/heads/a1", "HEAD:refs/heads/a2"]).await;
    let listing = git.ok(&src, &["ls-remote", &url]).await;
    assert!(listing.contains("refs/heads/a1") && listing.contains("refs/heads/a2"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_to_one_branch_have_one_winner() {
    let s = TestServer::start().await;
    let tmp = tempfile::tempdir().expect("temp dir");
    let git = Git::new(tmp.path());
    let url = create_repo(&s, "race", false).await;
    let src = tmp.path().join("src");
    git.repo_with_commits(&src, 2).await;
    git.ok(&src, &["push", "-q", &url, "main"]).await;

    let mut clones = Vec::new();
    for i in 0..4 {
        let dir = tmp.path().join(format!("c{i}"));
        git.ok(tmp.path(), &["clone", "-q", &url, dir.to_str().expect("utf-8")]).await;
        std::fs::write(dir.join(format!("mine-{i}.txt")), format!("{i}\n")).expect("write");
        git.ok(&dir, &["add", "-A"]).await;
        git.ok(&dir, &["commit", "-q", "-m", &format!("contender {i}")]).await;
        clones.push(dir);
    }
    let pushes: Vec<_> = clones
        .iter()
        .map(|dir| {
            let (git, dir, url) = (git.clone(), dir.clone(), url.clone());
            tokio::spawn(async move { git.run(&dir, &["push", "-q", &url, "main"]).await.status.success() })
        })
        .collect();
    let mut winners = 0;
    for p in pushes {
        winners += usize::from(p.await.expect("join"));
    }
    assert_eq!(winners, 1, "exactly one push may win the race");
    let check = tmp.path().join("check");
    git.ok(tmp.path(), &["clone", "-q", &url, check.to_str().expect("utf-8")]).await;
    git.fsck(&check).await;
    assert_eq!(git.ok(&check, &["rev-list", "--count", "HEAD"]).await.trim(), "3");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_repositories_need_a_token_and_read_only_tokens_cannot_push() {
    let s = TestServer::start().await;
    let tmp = tempfile::tempdir().expect("temp dir");
    let git = Git::new(tmp.path());
    let url = create_repo(&s, "secret", true).await;
    let src = tmp.path().join("src");
    git.repo_with_commits(&src, 2).await;
    git.ok(&src, &["push", "-q", &url, "main"]).await;

    let anonymous = format!("{}/admin/secret.git", s.base);
    let err = git.fails(tmp.path(), &["clone", &anonymous, "anon"]).await;
    assert!(err.contains("Authentication failed") || err.contains("could not read Username"), "{err}");

    let bad = authed_url(&s, "gst_wrong", "secret");
    git.fails(tmp.path(), &["clone", &bad, "bad"]).await;

    // Another account's token does not even see the repository.
    let stranger = s.user_token("stranger", &[Scope::RepoRead]).await;
    let err = git.fails(tmp.path(), &["clone", &authed_url(&s, &stranger, "secret"), "stranger"]).await;
    assert!(err.contains("not found"), "{err}");

    let reader = s.user_token("admin", &[Scope::RepoRead]).await;
    let read_url = authed_url(&s, &reader, "secret");
    let clone = tmp.path().join("reader");
    git.ok(tmp.path(), &["clone", "-q", &read_url, clone.to_str().expect("utf-8")]).await;
    git.fsck(&clone).await;
    std::fs::write(clone.join("x.txt"), "x\n").expect("write");
    git.ok(&clone, &["add", "-A"]).await;
    git.ok(&clone, &["commit", "-q", "-m", "not allowed"]).await;
    let err = git.fails(&clone, &["push", &read_url, "main"]).await;
    assert!(err.contains("403") || err.contains("repo:write"), "{err}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_repositories_mirrors_and_the_first_branch() {
    let s = TestServer::start().await;
    let tmp = tempfile::tempdir().expect("temp dir");
    let git = Git::new(tmp.path());

    let empty_url = create_repo(&s, "empty", false).await;
    let out = git.run(tmp.path(), &["clone", &empty_url, "empty-clone"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty repository"));

    // The only branch of a first push becomes HEAD.
    let trunk_url = create_repo(&s, "trunk", false).await;
    let src = tmp.path().join("src");
    git.repo_with_commits(&src, 3).await;
    git.ok(&src, &["push", "-q", &trunk_url, "main:refs/heads/trunk"]).await;
    let clone = tmp.path().join("trunk-clone");
    git.ok(tmp.path(), &["clone", "-q", &trunk_url, clone.to_str().expect("utf-8")]).await;
    assert_eq!(git.ok(&clone, &["symbolic-ref", "HEAD"]).await.trim(), "refs/heads/trunk");
    // The API and the pages call it the default branch too.
    let (_, body) = s.send(reqwest::Method::GET, "/api/v1/repos/admin/trunk", Some(&s.admin_token), None).await;
    assert_eq!(body["default_branch"], "trunk", "{body}");
    let page = s.http.get(s.url("/admin/trunk")).send().await.expect("page").text().await.expect("html");
    assert!(page.contains("Branch: <strong>trunk</strong>"), "{page}");

    // Several branches, none `main`: `master` is picked (a mirror of an older repository clones
    // with a checkout, not as an empty repository); without `master`, the first branch the push named.
    for (name, pushed, head) in [
        ("legacy", &["main:refs/heads/master", "main:refs/heads/dev"][..], "refs/heads/master"),
        ("several", &["main:refs/heads/b-second", "main:refs/heads/a-first"][..], "refs/heads/b-second"),
    ] {
        let url = create_repo(&s, name, false).await;
        let mut args = vec!["push", "-q", url.as_str()];
        args.extend_from_slice(pushed);
        git.ok(&src, &args).await;
        let listed = git.ok(tmp.path(), &["ls-remote", "--symref", &url, "HEAD"]).await;
        assert!(listed.starts_with(&format!("ref: {head}\tHEAD")), "{name}: {listed}");
        let clone = tmp.path().join(format!("{name}-clone"));
        git.ok(tmp.path(), &["clone", "-q", &url, clone.to_str().expect("utf-8")]).await;
        assert_eq!(git.ok(&clone, &["rev-list", "--count", "HEAD"]).await.trim(), "3", "{name}: a checkout");
    }

    // A mirror push and a mirror clone carry every ref.
    git.ok(&src, &["branch", "b1", "HEAD~1"]).await;
    git.ok(&src, &["tag", "-a", "t1", "-m", "t", "HEAD~2"]).await;
    let mirror_url = create_repo(&s, "mirror", false).await;
    git.ok(&src, &["push", "-q", "--mirror", &mirror_url]).await;
    let mirror = tmp.path().join("mirror.git");
    git.ok(tmp.path(), &["clone", "-q", "--mirror", &mirror_url, mirror.to_str().expect("utf-8")]).await;
    git.fsck(&mirror).await;
    assert_eq!(
        refs(&git.ok(&mirror, &["for-each-ref", "--format=%(objectname) %(refname)"]).await),
        refs(&git.ok(&src, &["for-each-ref", "--format=%(objectname) %(refname)", "refs/heads", "refs/tags"]).await)
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_histories_and_large_binaries() {
    let s = TestServer::start().await;
    let tmp = tempfile::tempdir().expect("temp dir");
    let git = Git::new(tmp.path());
    let url = create_repo(&s, "big", false).await;
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).expect("dir");
    git.ok(&src, &["init", "-q", "-b", "main"]).await;
    // 1,500 commits through fast-import, each changing one line of a file.
    let mut stream = String::new();
    for i in 0..1500 {
        let content = format!(
            "{}\n",
            (0..50)
                .map(|l| if l == i % 50 { format!("edit {i}") } else { format!("line {l}") })
                .collect::<Vec<_>>()
                .join("\n")
        );
        stream.push_str(&format!(
            "commit refs/heads/main\nmark :{}\ncommitter C <c@x> {} +0000\ndata 5\nc{:03}\n",
            i + 1,
            1_700_000_000 + i,
            i % 1000
        ));
        if i > 0 {
            stream.push_str(&format!("from :{i}\n"));
        }
        stream.push_str(&format!("M 100644 inline file.txt\ndata {}\n{content}\n", content.len()));
    }
    let fast_import = src.join("stream");
    std::fs::write(&fast_import, stream).expect("write");
    let import = {
        let (home, src) = (git.home.clone(), src.clone());
        tokio::task::spawn_blocking(move || {
            Command::new("sh")
                .arg("-c")
                .arg("git fast-import --quiet < stream && git reset -q --hard main")
                .current_dir(&src)
                .env("HOME", &home)
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .output()
                .expect("sh")
        })
        .await
        .expect("join")
    };
    assert!(import.status.success(), "{}", String::from_utf8_lossy(&import.stderr));
    // A 40 MB incompressible binary.
    let binary = incompressible(40 << 20);
    std::fs::write(src.join("blob.bin"), &binary).expect("write");
    git.ok(&src, &["add", "-A"]).await;
    git.ok(&src, &["commit", "-q", "-m", "binary"]).await;
    git.ok(&src, &["push", "-q", &url, "main"]).await;

    let clone = tmp.path().join("clone");
    git.ok(tmp.path(), &["clone", "-q", &url, clone.to_str().expect("utf-8")]).await;
    git.fsck(&clone).await;
    assert_eq!(git.ok(&clone, &["rev-list", "--count", "HEAD"]).await.trim(), "1501");
    assert_eq!(std::fs::read(clone.join("blob.bin")).expect("read").len(), 40 << 20);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shallow_and_partial_clones() {
    let s = TestServer::start().await;
    let tmp = tempfile::tempdir().expect("temp dir");
    let git = Git::new(tmp.path());
    let url = create_repo(&s, "ci", false).await;
    let src = tmp.path().join("src");
    git.repo_with_commits(&src, 6).await;
    std::fs::write(src.join("big.bin"), vec![7u8; 5000]).expect("write");
    git.ok(&src, &["add", "-A"]).await;
    git.ok(&src, &["commit", "-q", "-m", "big file"]).await;
    git.ok(&src, &["push", "-q", &url, "main"]).await;
    let count = |dir: PathBuf| {
        let git = git.clone();
        async move { git.ok(&dir, &["rev-list", "--count", "HEAD"]).await.trim().parse::<u32>().expect("count") }
    };

    // Depth 1, then deeper, then complete.
    let shallow = tmp.path().join("shallow");
    git.ok(tmp.path(), &["clone", "-q", "--depth=1", &url, shallow.to_str().expect("utf-8")]).await;
    assert_eq!(count(shallow.clone()).await, 1);
    assert_eq!(std::fs::read_to_string(shallow.join(".git/shallow")).expect("shallow file").lines().count(), 1);
    git.fsck(&shallow).await;
    // A new commit reaches a shallow clone by a plain fetch.
    std::fs::write(src.join("later.txt"), "later\n").expect("write");
    git.ok(&src, &["add", "-A"]).await;
    git.ok(&src, &["commit", "-q", "-m", "later"]).await;
    git.ok(&src, &["push", "-q", &url, "main"]).await;
    git.ok(&shallow, &["pull", "-q", "--ff-only"]).await;
    assert_eq!(count(shallow.clone()).await, 2);
    git.ok(&shallow, &["fetch", "-q", "--depth=4"]).await;
    git.ok(&shallow, &["reset", "-q", "--hard", "origin/main"]).await;
    assert_eq!(count(shallow.clone()).await, 4);
    git.ok(&shallow, &["fetch", "-q", "--unshallow"]).await;
    assert_eq!(count(shallow.clone()).await, 8);
    assert!(!shallow.join(".git/shallow").exists());
    git.fsck(&shallow).await;

    // blob:none: no blobs until they are needed, then fetched lazily by id.
    let partial = tmp.path().join("partial");
    git.ok(tmp.path(), &["clone", "-q", "--no-checkout", "--filter=blob:none", &url, partial.to_str().expect("utf-8")])
        .await;
    let missing = git.ok(&partial, &["rev-list", "--objects", "--all", "--missing=print"]).await;
    assert!(
        missing.lines().filter(|l| l.starts_with('?')).count() >= 7,
        "blobs are missing before checkout:\n{missing}"
    );
    git.ok(&partial, &["checkout", "-q", "main"]).await;
    assert_eq!(std::fs::read(partial.join("big.bin")).expect("lazily fetched").len(), 5000);
    let log = git.ok(&partial, &["log", "-p", "--format=%s", "-3"]).await;
    assert!(log.contains("later"), "{log}");

    // blob:limit keeps small blobs; tree:0 sends commits only.
    let limited = tmp.path().join("limited");
    git.ok(
        tmp.path(),
        &["clone", "-q", "--no-checkout", "--filter=blob:limit=1k", &url, limited.to_str().expect("utf-8")],
    )
    .await;
    let missing = git.ok(&limited, &["rev-list", "--objects", "--all", "--missing=print"]).await;
    let big = git.ok(&src, &["rev-parse", "HEAD:big.bin"]).await;
    let small = git.ok(&src, &["rev-parse", "HEAD:later.txt"]).await;
    assert!(missing.contains(&format!("?{}", big.trim())), "the big blob is filtered out");
    assert!(!missing.contains(&format!("?{}", small.trim())), "small blobs are sent");
    let treeless = tmp.path().join("treeless");
    git.ok(tmp.path(), &["clone", "-q", "--filter=tree:0", &url, treeless.to_str().expect("utf-8")]).await;
    assert_eq!(std::fs::read_to_string(treeless.join("later.txt")).expect("checked out"), "later\n");

    // What is not supported says so.
    let err = git.fails(tmp.path(), &["clone", "--filter=sparse:oid=main:x", &url, "sparse"]).await;
    assert!(err.contains("not supported"), "{err}");
    s.stop().await;
}

/// Shallow clones cut by date (`--shallow-since`), by ref (`--shallow-exclude`) and deepened
/// relative to the current boundary (`--deepen`), in protocol v2 and v0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shallow_since_exclude_and_deepen() {
    let s = TestServer::start().await;
    let tmp = tempfile::tempdir().expect("temp dir");
    let git = Git::new(tmp.path());
    let url = create_repo(&s, "dated", false).await;
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).expect("dir");
    git.ok(&src, &["init", "-q", "-b", "main"]).await;
    for day in 1..=6 {
        std::fs::write(src.join("day.txt"), format!("{day}\n")).expect("write");
        git.ok(&src, &["add", "-A"]).await;
        let date = format!("2020-01-0{day} 12:00:00 +0000");
        let out =
            git.run_env(&src, &["commit", "-q", "-m", &format!("day {day}")], &[("GIT_COMMITTER_DATE", &date)]).await;
        assert!(out.status.success());
        if day == 3 {
            git.ok(&src, &["tag", "-a", "v3", "-m", "day three"]).await;
        }
    }
    git.ok(&src, &["push", "-q", &url, "main", "--tags"]).await;
    let count = |dir: PathBuf| {
        let git = git.clone();
        async move { git.ok(&dir, &["rev-list", "--count", "HEAD"]).await.trim().parse::<u32>().expect("count") }
    };
    for version in ["2", "0"] {
        let proto = format!("protocol.version={version}");
        let clone = |name: &str, option: &str| {
            let (git, dir, url, proto, option) = (
                git.clone(),
                tmp.path().join(format!("{name}-v{version}")),
                url.clone(),
                proto.clone(),
                option.to_owned(),
            );
            async move {
                git.ok(
                    dir.parent().expect("parent"),
                    &["-c", &proto, "clone", "-q", &option, &url, dir.to_str().expect("utf-8")],
                )
                .await;
                git.fsck(&dir).await;
                dir
            }
        };
        let since = clone("since", "--shallow-since=2020-01-04 00:00:00 +0000").await;
        assert_eq!(count(since).await, 3, "days 4, 5 and 6 (v{version})");
        let exclude = clone("exclude", "--shallow-exclude=v3").await;
        assert_eq!(count(exclude).await, 3, "what came after v3 (v{version})");

        let deepened = clone("deepen", "--depth=1").await;
        git.ok(&deepened, &["-c", &proto, "fetch", "-q", "--deepen=2"]).await;
        assert_eq!(count(deepened.clone()).await, 3, "two more than before (v{version})");
        git.ok(&deepened, &["-c", &proto, "fetch", "-q", "--shallow-since=2020-01-02 00:00:00 +0000"]).await;
        assert_eq!(count(deepened.clone()).await, 5, "back to day 2 (v{version})");
        git.fsck(&deepened).await;
        git.ok(&deepened, &["-c", &proto, "fetch", "-q", "--unshallow"]).await;
        assert_eq!(count(deepened.clone()).await, 6);
        git.fsck(&deepened).await;

        let err = git
            .fails(
                tmp.path(),
                &[
                    "-c",
                    &proto,
                    "clone",
                    "--shallow-since=2030-01-01 00:00:00 +0000",
                    &url,
                    &format!("none-v{version}"),
                ],
            )
            .await;
        assert!(err.contains("no commits selected"), "{err}");
    }
    s.stop().await;
}

/// Clients that speak protocol v0 or v1 (older git, many tools) clone, fetch with negotiation
/// and push.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_v0_and_v1() {
    let s = TestServer::start().await;
    let tmp = tempfile::tempdir().expect("temp dir");
    let git = Git::new(tmp.path());
    let url = create_repo(&s, "old-clients", false).await;
    let src = tmp.path().join("src");
    git.repo_with_commits(&src, 30).await;
    git.ok(&src, &["tag", "-a", "v1", "-m", "one", "HEAD~10"]).await;
    for b in 0..40 {
        git.ok(&src, &["branch", &format!("b{b}"), &format!("HEAD~{}", b % 25)]).await;
    }
    git.ok(&src, &["push", "-q", &url, "--all"]).await;
    git.ok(&src, &["push", "-q", &url, "--tags"]).await;
    for (version, marker) in [("0", "multi_ack_detailed"), ("1", "version 1")] {
        let proto = format!("protocol.version={version}");
        let dir = tmp.path().join(format!("clone-v{version}"));
        let out = git
            .run_env(
                tmp.path(),
                &["-c", &proto, "clone", "-q", &url, dir.to_str().expect("utf-8")],
                &[("GIT_TRACE_PACKET", "1")],
            )
            .await;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let trace = String::from_utf8_lossy(&out.stderr);
        assert!(trace.contains(marker) && !trace.contains("version 2"), "spoke v{version}");
        git.fsck(&dir).await;
        assert_eq!(git.ok(&dir, &["rev-parse", "HEAD"]).await, git.ok(&src, &["rev-parse", "HEAD"]).await);
        assert_eq!(git.ok(&dir, &["symbolic-ref", "HEAD"]).await.trim(), "refs/heads/main");
        assert_eq!(git.ok(&dir, &["tag"]).await.trim(), "v1");
        let listing = git.ok(&dir, &["-c", &proto, "ls-remote", "origin"]).await;
        assert!(listing.contains("refs/tags/v1^{}"), "peeled tags are advertised: {listing}");
        assert_eq!(listing.lines().count(), 1 + 41 + 2, "HEAD, the branches, the tag and its peeled line");
    }
    // Fetches negotiate: new commits on some branches, the rest the clone has.
    for i in 0..3 {
        std::fs::write(src.join(format!("new{i}.txt")), "new\n").expect("write");
        git.ok(&src, &["add", "-A"]).await;
        git.ok(&src, &["commit", "-q", "-m", &format!("new {i}")]).await;
    }
    git.ok(&src, &["branch", "-f", "b7", "HEAD~1"]).await;
    git.ok(&src, &["push", "-q", "-f", &url, "main", "b7"]).await;
    for version in ["0", "1"] {
        let dir = tmp.path().join(format!("clone-v{version}"));
        git.ok(&dir, &["-c", &format!("protocol.version={version}"), "fetch", "-q", "origin"]).await;
        assert_eq!(git.ok(&dir, &["rev-parse", "origin/main"]).await, git.ok(&src, &["rev-parse", "main"]).await);
        assert_eq!(git.ok(&dir, &["rev-parse", "origin/b7"]).await, git.ok(&src, &["rev-parse", "b7"]).await);
        git.fsck(&dir).await;
        // And a push over the same protocol.
        git.ok(&dir, &["checkout", "-q", "-b", &format!("from-v{version}"), "origin/main"]).await;
        std::fs::write(dir.join("pushed.txt"), version).expect("write");
        git.ok(&dir, &["add", "-A"]).await;
        git.ok(&dir, &["commit", "-q", "-m", "pushed"]).await;
        git.ok(&dir, &["-c", &format!("protocol.version={version}"), "push", "-q", &url, "HEAD"]).await;
    }
    let remote = git.ok(&src, &["ls-remote", &url, "refs/heads/from-*"]).await;
    assert_eq!(remote.lines().count(), 2, "{remote}");
    s.stop().await;
}

fn url_for(s: &TestServer, token: &str, path: &str) -> String {
    format!("http://x:{token}@{}/{path}.git", s.base.trim_start_matches("http://"))
}

/// The one policy decides Git and API access alike: collaborator grants, organization roles,
/// scopes; and every grant is in the audit log with where it came from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collaborators_and_organizations_decide_access() {
    use reqwest::Method;
    let s = TestServer::start().await;
    let tmp = tempfile::tempdir().expect("temp dir");
    let git = Git::new(tmp.path());
    let admin = Some(s.admin_token.as_str());
    let (status, body) = s.send(Method::POST, "/api/v1/users", admin, Some(json!({"username": "bob"}))).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["type"], "User");
    let bob = s.user_token("bob", &[Scope::RepoWrite]).await;
    let (status, _) = s.send(Method::POST, "/api/v1/users", Some(&bob), Some(json!({"username": "eve"}))).await;
    assert_eq!(status, 403, "only site administrators create accounts");

    let url = create_repo(&s, "team", true).await;
    let src = tmp.path().join("src");
    git.repo_with_commits(&src, 2).await;
    git.ok(&src, &["push", "-q", &url, "main"]).await;

    let bob_url = url_for(&s, &bob, "admin/team");
    let err = git.fails(tmp.path(), &["clone", &bob_url, "nope"]).await;
    assert!(err.contains("not found"), "{err}");
    assert_eq!(s.send(Method::GET, "/api/v1/repos/admin/team", Some(&bob), None).await.0, 404);

    let grant = |permission: &str| json!({ "permission": permission });
    let path = "/api/v1/repos/admin/team/collaborators/bob";
    assert_eq!(s.send(Method::PUT, path, Some(&bob), Some(grant("admin"))).await.0, 404, "bob cannot see it yet");
    let (status, body) = s.send(Method::PUT, path, admin, Some(grant("owner"))).await;
    assert_eq!((status.as_u16(), body["error"]["field"].as_str()), (422, Some("permission")));
    assert_eq!(s.send(Method::PUT, path, admin, Some(grant("read"))).await.0, 204);

    let clone = tmp.path().join("bob");
    git.ok(tmp.path(), &["clone", "-q", &bob_url, clone.to_str().expect("utf-8")]).await;
    std::fs::write(clone.join("bob.txt"), "bob\n").expect("write");
    git.ok(&clone, &["add", "-A"]).await;
    git.ok(&clone, &["commit", "-q", "-m", "by bob"]).await;
    let err = git.fails(&clone, &["push", &bob_url, "main"]).await;
    assert!(err.contains("write permission"), "{err}");
    assert_eq!(s.send(Method::PUT, path, admin, Some(grant("push"))).await.0, 204);
    git.ok(&clone, &["push", "-q", &bob_url, "main"]).await;
    let (status, body) = s.send(Method::GET, "/api/v1/repos/admin/team/collaborators", Some(&bob), None).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!([{"username": "bob", "permission": "write"}]));
    let (status, body) = s.send(Method::DELETE, "/api/v1/repos/admin/team", Some(&bob), None).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(s.send(Method::DELETE, path, admin, None).await.0, 204);
    assert_eq!(s.send(Method::DELETE, path, admin, None).await.0, 404);
    git.fails(tmp.path(), &["clone", &bob_url, "revoked"]).await;

    // Organizations: the creator owns it; members read its repositories.
    let (status, _) = s.send(Method::POST, "/api/v1/orgs", Some(&bob), Some(json!({"name": "acme"}))).await;
    assert_eq!(status, 403, "creating an organization needs repo:admin");
    let bob_admin = s.user_token("bob", &[Scope::RepoAdmin]).await;
    let (status, body) = s.send(Method::POST, "/api/v1/orgs", Some(&bob_admin), Some(json!({"name": "acme"}))).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["type"], "Organization");
    let (status, body) =
        s.create_repo(Some(&bob_admin), json!({"name": "tools", "owner": "acme", "private": true})).await;
    assert_eq!(status, 201, "{body}");
    git.ok(&src, &["push", "-q", &url_for(&s, &bob_admin, "acme/tools"), "main"]).await;
    let carol = s.user_token("carol", &[Scope::RepoWrite]).await;
    let carol_url = url_for(&s, &carol, "acme/tools");
    git.fails(tmp.path(), &["clone", &carol_url, "carol-before"]).await;
    let (status, body) = s.create_repo(Some(&carol), json!({"name": "x", "owner": "acme"})).await;
    assert_eq!(status, 403, "{body}");
    let members = "/api/v1/orgs/acme/members/carol";
    assert_eq!(s.send(Method::PUT, members, Some(&carol), Some(json!({}))).await.0, 404, "not a member");
    assert_eq!(s.send(Method::PUT, members, Some(&bob_admin), Some(json!({}))).await.0, 204);
    assert_eq!(s.send(Method::PUT, members, Some(&carol), Some(json!({"role": "owner"}))).await.0, 403);
    let carol_clone = tmp.path().join("carol");
    git.ok(tmp.path(), &["clone", "-q", &carol_url, carol_clone.to_str().expect("utf-8")]).await;
    let err = git.fails(&carol_clone, &["push", &carol_url, "main:other"]).await;
    assert!(err.contains("write permission"), "{err}");
    let (status, body) = s.send(Method::GET, "/api/v1/orgs/acme/members", Some(&carol), None).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!([{"username": "bob", "role": "owner"}, {"username": "carol", "role": "member"}]));
    let last_owner = "/api/v1/orgs/acme/members/bob";
    let (status, body) = s.send(Method::DELETE, last_owner, Some(&bob_admin), None).await;
    assert_eq!((status.as_u16(), body["error"]["code"].as_str()), (422, Some("refused")));

    // The audit log: everything for the site administrator, an organization's part for its owners.
    let (status, body) = s.send(Method::GET, "/api/v1/audit?action=repo.collaborator.set", admin, None).await;
    assert_eq!(status, 200, "{body}");
    let entries = body["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 2, "{body}");
    assert_eq!(entries[0]["details"], json!({"user": "bob", "permission": "write"}));
    assert_eq!(entries[0]["actor"], "admin");
    assert_eq!(entries[0]["ip"], "127.0.0.1");
    assert!(entries[0]["request_id"].as_str().is_some_and(|r| !r.is_empty()));
    let (status, body) = s.send(Method::GET, "/api/v1/audit?limit=2", admin, None).await;
    assert_eq!(status, 200);
    let cursor = body["next_cursor"].as_i64().expect("more pages");
    let (_, older) = s.send(Method::GET, &format!("/api/v1/audit?limit=2&before={cursor}"), admin, None).await;
    assert!(older["entries"][0]["id"].as_i64().expect("id") < cursor);
    assert_eq!(s.send(Method::GET, "/api/v1/audit", Some(&bob_admin), None).await.0, 403);
    let (status, body) = s.send(Method::GET, "/api/v1/audit?org=acme", Some(&bob_admin), None).await;
    assert_eq!(status, 200, "{body}");
    let actions: Vec<&str> =
        body["entries"].as_array().expect("entries").iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(actions, ["org.member.set", "repo.create", "org.create"]);
    assert_eq!(s.send(Method::GET, "/api/v1/audit?org=acme", Some(&carol), None).await.0, 403);
    s.stop().await;
}

/// Rate limits answer 429 with Retry-After, on the API per token and per address, and on Git per
/// repository; git shows the refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_refuse_with_429() {
    use gitstratum_server::ConfigLayer;
    let limits = ConfigLayer {
        rate_limit_per_client: Some("8".into()),
        rate_limit_anonymous: Some("2".into()),
        rate_limit_git_per_repo: Some("4".into()),
        ..ConfigLayer::default()
    };
    let s = TestServer::start_with(limits).await;
    let tmp = tempfile::tempdir().expect("temp dir");
    let git = Git::new(tmp.path());

    // Anonymous API callers: two per minute per address.
    for remaining in ["1", "0"] {
        let resp = s.http.get(s.url("/api/v1/repos/admin/nothing")).send().await.expect("get");
        assert_eq!(resp.status(), 404);
        assert_eq!(resp.headers()["x-ratelimit-limit"], "2");
        assert_eq!(resp.headers()["x-ratelimit-remaining"], remaining);
    }
    let resp = s.http.get(s.url("/api/v1/repos/admin/nothing")).send().await.expect("get");
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limited");
    // Health checks are never limited.
    assert_eq!(s.http.get(s.url("/healthz")).send().await.expect("get").status(), 200);

    // A token has its own budget; the repository budget covers all Git clients of one repository.
    let url = create_repo(&s, "busy", false).await;
    let src = tmp.path().join("src");
    git.repo_with_commits(&src, 1).await;
    git.ok(&src, &["push", "-q", &url, "main"]).await;
    let mut refused = None;
    for i in 0..3 {
        let out = git.run(tmp.path(), &["clone", "-q", &url, &format!("c{i}")]).await;
        if !out.status.success() {
            refused = Some(String::from_utf8_lossy(&out.stderr).into_owned());
            break;
        }
    }
    let err = refused.expect("the repository's budget runs out");
    assert!(err.contains("429"), "{err}");
    let metrics = s.http.get(s.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("gitstratum_control_ratelimit_throttled_total{limit=\"repository\"}"), "{metrics}");
    s.stop().await;
}

/// Teams give their members roles on the organization's repositories, for Git as for the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teams_grant_push_access() {
    use reqwest::Method;
    let s = TestServer::start().await;
    let tmp = tempfile::tempdir().expect("temp dir");
    let git = Git::new(tmp.path());
    let owner = s.user_token("owner", &[Scope::RepoAdmin]).await;
    let dev = s.user_token("dev", &[Scope::RepoWrite]).await;
    let own = Some(owner.as_str());
    assert_eq!(s.send(Method::POST, "/api/v1/orgs", own, Some(json!({"name": "acme"}))).await.0, 201);
    let (status, body) = s.create_repo(own, json!({"name": "api", "owner": "acme", "private": true})).await;
    assert_eq!(status, 201, "{body}");
    let src = tmp.path().join("src");
    git.repo_with_commits(&src, 1).await;
    git.ok(&src, &["push", "-q", &url_for(&s, &owner, "acme/api"), "main"]).await;

    let (status, body) = s.send(Method::POST, "/api/v1/orgs/acme/teams", own, Some(json!({"name": "backend"}))).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = s.send(Method::PUT, "/api/v1/orgs/acme/teams/backend/members/dev", own, None).await;
    assert_eq!((status.as_u16(), body["error"]["code"].as_str()), (422, Some("refused")), "dev is not in acme yet");
    assert_eq!(s.send(Method::PUT, "/api/v1/orgs/acme/members/dev", own, Some(json!({}))).await.0, 204);
    assert_eq!(s.send(Method::PUT, "/api/v1/orgs/acme/teams/backend/members/dev", own, None).await.0, 204);
    let grant = "/api/v1/orgs/acme/teams/backend/repos/acme/api";
    assert_eq!(s.send(Method::PUT, grant, Some(&dev), Some(json!({"permission": "write"}))).await.0, 403);

    let dev_url = url_for(&s, &dev, "acme/api");
    let clone = tmp.path().join("dev");
    git.ok(tmp.path(), &["clone", "-q", &dev_url, clone.to_str().expect("utf-8")]).await;
    let err = git.fails(&clone, &["push", &dev_url, "main:feature"]).await;
    assert!(err.contains("write permission"), "{err}");
    assert_eq!(s.send(Method::PUT, grant, own, Some(json!({"permission": "write"}))).await.0, 204);
    git.ok(&clone, &["push", "-q", &dev_url, "main:feature"]).await;
    let (_, members) = s.send(Method::GET, "/api/v1/orgs/acme/teams/backend/members", Some(&dev), None).await;
    assert_eq!(members, json!(["dev"]));
    let (_, teams) = s.send(Method::GET, "/api/v1/orgs/acme/teams", Some(&dev), None).await;
    assert_eq!(teams[0]["name"], "backend");
    assert_eq!(s.send(Method::DELETE, grant, own, None).await.0, 204);
    let err = git.fails(&clone, &["push", &dev_url, "main:another"]).await;
    assert!(err.contains("write permission"), "{err}");
    s.stop().await;
}

/// A push reaches a webhook receiver as GitHub shapes and signs it; failures are logged and can
/// be redelivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_are_delivered_to_webhooks() {
    use reqwest::Method;
    use std::sync::atomic::Ordering;

    let mut receiver = Receiver::start().await;
    let hook_url = receiver.url.clone();
    let answer = receiver.answer.clone();
    let s = TestServer::start().await;
    let tmp = tempfile::tempdir().expect("temp dir");
    let git = Git::new(tmp.path());
    let admin = Some(s.admin_token.as_str());
    let url = create_repo(&s, "hooked", false).await;
    let hooks = "/api/v1/repos/admin/hooked/hooks";
    let (status, body) = s.send(Method::POST, hooks, admin, Some(json!({"url": "ftp://x.example/h"}))).await;
    assert_eq!((status.as_u16(), body["error"]["field"].as_str()), (422, Some("url")));
    let (status, body) = s.send(Method::POST, hooks, admin, Some(json!({"url": hook_url, "events": ["issues"]}))).await;
    assert_eq!((status.as_u16(), body["error"]["field"].as_str()), (422, Some("events")));
    let (status, hook) = s
        .send(Method::POST, hooks, admin, Some(json!({"url": hook_url, "secret": "It's a Secret to Everybody"})))
        .await;
    assert_eq!(status, 201, "{hook}");
    assert_eq!((hook["has_secret"].as_bool(), hook.get("secret")), (Some(true), None));
    let hook_id = hook["id"].as_i64().expect("id");

    let src = tmp.path().join("src");
    git.repo_with_commits(&src, 2).await;
    git.ok(&src, &["push", "-q", &url, "main"]).await;
    let head = git.ok(&src, &["rev-parse", "HEAD"]).await.trim().to_owned();
    let (headers, body) = receiver.next().await;
    assert_eq!(headers["x-github-event"], "push");
    let signature = headers["x-hub-signature-256"].to_str().expect("ascii").to_owned();
    let expected = gitstratum_server::webhooks::hmac_sha256_hex(b"It's a Secret to Everybody", body.as_bytes());
    assert_eq!(signature, format!("sha256={expected}"));
    let payload: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(payload["ref"], "refs/heads/main");
    assert_eq!(payload["before"], "0".repeat(40));
    assert_eq!(payload["after"], head);
    assert_eq!((payload["created"].as_bool(), payload["deleted"].as_bool()), (Some(true), Some(false)));
    assert_eq!(payload["repository"]["full_name"], "admin/hooked");
    assert_eq!(payload["pusher"]["name"], "admin");

    // A receiver that fails: the attempt is logged and retried later; redelivery queues it again.
    answer.store(500, Ordering::SeqCst);
    git.ok(&src, &["push", "-q", &url, "main:gone"]).await;
    receiver.next().await;
    let deliveries = format!("{hooks}/{hook_id}/deliveries");
    let mut log = serde_json::Value::Null;
    for _ in 0..100 {
        log = s.send(Method::GET, &deliveries, admin, None).await.1;
        if log[0]["attempts"] == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!((log[0]["state"].as_str(), log[0]["status_code"].as_i64()), (Some("pending"), Some(500)), "{log}");
    assert!(log[0]["next_attempt_at"].is_string());
    assert_eq!((log[1]["state"].as_str(), log[1]["status_code"].as_i64()), (Some("delivered"), Some(200)));
    answer.store(200, Ordering::SeqCst);
    let first = log[1]["id"].as_i64().expect("id");
    let (status, _) = s.send(Method::POST, &format!("{deliveries}/{first}/redeliver"), admin, None).await;
    assert_eq!(status, 202);
    let (_, again) = receiver.next().await;
    assert_eq!(again, body, "the same payload");
    let (_, audit) = s.send(Method::GET, "/api/v1/audit?action=webhook.create", admin, None).await;
    assert_eq!(audit["entries"].as_array().map(Vec::len), Some(1));
    s.stop().await;
}

/// An organization's hook hears every repository of the organization: pushes and repository
/// events (created, publicized, deleted), even after the repository and its own hooks are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organization_hooks_hear_repository_events_and_pushes() {
    use reqwest::Method;

    let mut receiver = Receiver::start().await;
    let s = TestServer::start().await;
    let tmp = tempfile::tempdir().expect("temp dir");
    let git = Git::new(tmp.path());
    let admin = Some(s.admin_token.as_str());
    let (status, _) = s.send(Method::POST, "/api/v1/orgs", admin, Some(json!({"name": "acme"}))).await;
    assert_eq!(status, 201);
    let body = json!({"url": receiver.url, "events": ["push", "repository"], "secret": "k"});
    let (status, hook) = s.send(Method::POST, "/api/v1/orgs/acme/hooks", admin, Some(body)).await;
    assert_eq!(status, 201, "{hook}");
    let (status, listed) = s.send(Method::GET, "/api/v1/orgs/acme/hooks", admin, None).await;
    assert_eq!((status.as_u16(), listed[0]["id"].clone()), (200, hook["id"].clone()));

    let (status, _) = s
        .send(Method::POST, "/api/v1/repos", admin, Some(json!({"name": "app", "owner": "acme", "private": true})))
        .await;
    assert_eq!(status, 201);
    let (headers, body) = receiver.next().await;
    assert_eq!(headers["x-github-event"], "repository");
    let expected = gitstratum_server::webhooks::hmac_sha256_hex(b"k", body.as_bytes());
    assert_eq!(headers["x-hub-signature-256"].to_str().expect("ascii"), format!("sha256={expected}"));
    let payload: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        (payload["action"].as_str(), payload["repository"]["full_name"].as_str()),
        (Some("created"), Some("acme/app"))
    );
    assert_eq!(
        (payload["repository"]["private"].as_bool(), payload["sender"]["login"].as_str()),
        (Some(true), Some("admin"))
    );

    let src = tmp.path().join("src");
    git.repo_with_commits(&src, 1).await;
    let url = url_for(&s, &s.admin_token, "acme/app");
    git.ok(&src, &["push", "-q", &url, "main"]).await;
    let (headers, body) = receiver.next().await;
    assert_eq!(headers["x-github-event"], "push");
    assert!(body.contains("refs/heads/main"), "{body}");

    let (status, _) = s.send(Method::PATCH, "/api/v1/repos/acme/app", admin, Some(json!({"private": false}))).await;
    assert_eq!(status, 200);
    let (_, body) = receiver.next().await;
    assert!(body.contains(r#""action":"publicized""#), "{body}");
    let (status, _) = s.send(Method::DELETE, "/api/v1/repos/acme/app", admin, None).await;
    assert_eq!(status, 204);
    let (headers, body) = receiver.next().await;
    assert_eq!(headers["x-github-event"], "repository");
    assert!(body.contains(r#""action":"deleted""#), "{body}");

    // Members who are not owners may not see or manage the organization's hooks.
    let (status, _) = s.send(Method::POST, "/api/v1/users", admin, Some(json!({"username": "carol"}))).await;
    assert_eq!(status, 201);
    let (status, _) =
        s.send(Method::PUT, "/api/v1/orgs/acme/members/carol", admin, Some(json!({"role": "member"}))).await;
    assert!(status.is_success(), "{status}");
    let carol = s.user_token("carol", &[gitstratum_platform::Scope::RepoAdmin]).await;
    let (status, _) = s.send(Method::GET, "/api/v1/orgs/acme/hooks", Some(&carol), None).await;
    assert_eq!(status, 403);
    let (status, _) =
        s.send(Method::DELETE, &format!("/api/v1/orgs/acme/hooks/{}", hook["id"]), Some(&carol), None).await;
    assert_eq!(status, 403);
    s.stop().await;
}

fn resident_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kib / 1024
}

/// An anonymous push of 400 MiB — to a repository that does not exist, and to a private one — is
/// refused before its body is read: the answer comes while the client is still sending, and the
/// server's memory does not grow with the body. A fetch request has a tight limit of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_anonymous_bodies_are_refused_before_they_are_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start().await;
    assert_eq!(s.create_repo(Some(&s.admin_token), json!({"name": "private", "private": true})).await.0, 201);
    let before = resident_mib();
    let addr = s.base.trim_start_matches("http://").to_owned();
    for path in ["/nobody/nothing.git/git-receive-pack", "/admin/private.git/git-receive-pack"] {
        let stream = tokio::net::TcpStream::connect(&addr).await.expect("connect");
        let (mut read, mut write) = stream.into_split();
        let total: u64 = 400 << 20;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-git-receive-pack-request\r\nContent-Length: {total}\r\n\r\n"
        );
        write.write_all(head.as_bytes()).await.expect("headers");
        let sender = tokio::spawn(async move {
            let chunk = vec![0u8; 1 << 20];
            let mut sent = 0u64;
            while sent < total {
                if write.write_all(&chunk).await.is_err() {
                    break;
                }
                sent += chunk.len() as u64;
            }
            sent
        });
        let mut answer = vec![0u8; 256];
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), read.read(&mut answer))
            .await
            .expect("the server answers without waiting for the body")
            .expect("read");
        let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
        assert!(answer.starts_with("HTTP/1.1 401"), "{path}: {answer}");
        drop(read);
        sender.abort();
    }
    let grown = resident_mib().saturating_sub(before);
    assert!(grown < 100, "the server's memory grew by {grown} MiB");

    // A fetch request over 32 MiB is refused by its declared length, even from an authorized
    // caller, before it is read: the answer comes though no byte of the body was sent. (Raw, as
    // above: an HTTP client still writing the body may see the early answer as a broken pipe.)
    use base64::Engine as _;
    let stream = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let (mut read, mut write) = stream.into_split();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("x:{}", s.admin_token));
    let head = format!(
        "POST /admin/private.git/git-upload-pack HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {auth}\r\nContent-Type: application/x-git-upload-pack-request\r\nContent-Length: {}\r\n\r\n",
        (32u64 << 20) + 1
    );
    write.write_all(head.as_bytes()).await.expect("headers");
    let mut answer = vec![0u8; 256];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), read.read(&mut answer))
        .await
        .expect("the server answers without waiting for the body")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    drop((read, write));
    s.stop().await;
}

/// The start of a push whose pack is still on its way: a command, then a pack of one 9 MiB blob
/// of which only the first MiB (deflate's stored blocks) has been sent.
fn unfinished_push() -> Vec<u8> {
    let command = format!("{} {} refs/heads/slow\0report-status\n", "0".repeat(40), "1".repeat(40));
    let mut body = format!("{:04x}{command}0000", command.len() + 4).into_bytes();
    body.extend_from_slice(b"PACK\0\0\0\x02\0\0\0\x01");
    let mut size: u64 = 9 << 20;
    let mut header = vec![0x80 | (3 << 4) | (size & 0x0f) as u8];
    size >>= 4;
    while size > 0 {
        header.push((size & 0x7f) as u8 | if size >> 7 > 0 { 0x80 } else { 0 });
        size >>= 7;
    }
    body.extend_from_slice(&header);
    body.extend_from_slice(&[0x78, 0x01]);
    for _ in 0..16 {
        body.extend_from_slice(&[0x00, 0xff, 0xff, 0x00, 0x00]);
        body.extend_from_slice(&[b'x'; 0xffff]);
    }
    body
}

/// Pushes stream to disk, and only so many are read at once (`[server] max_concurrent_pushes`,
/// here 1): while one is being received, another is refused with 503 and Retry-After after a short
/// wait; once the first is gone, pushes are read again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_are_bounded() {
    use tokio::io::AsyncWriteExt;
    let s = TestServer::start_with(gitstratum_server::ConfigLayer {
        max_concurrent_pushes: Some("1".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(s.create_repo(Some(&s.admin_token), json!({"name": "busy"})).await.0, 201);
    let addr = s.base.trim_start_matches("http://").to_owned();
    let auth = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("x:{}", s.admin_token))
    };
    // The first push: headers and a part of its body, then it holds on.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let head = format!(
        "POST /admin/busy.git/git-receive-pack HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {auth}\r\nContent-Type: application/x-git-receive-pack-request\r\nContent-Length: {}\r\n\r\n",
        10 << 20
    );
    slow.write_all(head.as_bytes()).await.expect("headers");
    slow.write_all(&unfinished_push()).await.expect("part of the body");
    let push = || {
        s.http
            .post(s.url("/admin/busy.git/git-receive-pack"))
            .basic_auth("x", Some(&s.admin_token))
            .header("content-type", "application/x-git-receive-pack-request")
            .body("0000")
            .send()
    };
    let mut refused = None;
    for _ in 0..50 {
        let response = push().await.expect("push");
        if response.status().as_u16() == 503 {
            refused = Some(response);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let refused = refused.expect("a second push is refused while the first is read");
    assert_eq!(refused.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("5"));
    drop(slow);
    let mut status = 503;
    for _ in 0..50 {
        status = push().await.expect("push").status().as_u16();
        if status != 503 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_ne!(status, 503, "the permit came back with the first push gone");
    s.stop().await;
}

/// What C git does, beside us: the same client runs the same commands against our server and
/// against C git itself (`file://`: its own upload-pack and receive-pack), and the outcomes must
/// agree.
struct Reference {
    /// The `file://` URL of a bare repository: C git serves it.
    url: String,
}

impl Reference {
    async fn new(git: &Git, root: &std::path::Path, name: &str) -> Reference {
        let bare = root.join(format!("{name}-reference.git"));
        git.ok(root, &["init", "-q", "--bare", "-b", "main", bare.to_str().expect("utf-8")]).await;
        for (key, value) in [("uploadpack.allowFilter", "true"), ("uploadpack.allowAnySHA1InWant", "true")] {
            git.ok(&bare, &["config", key, value]).await;
        }
        Reference { url: format!("file://{}", bare.display()) }
    }
}

/// Runs `args` in `dir` against each URL (`{url}` in the arguments stands for it) and returns
/// whether each succeeded.
async fn outcomes(git: &Git, dir: &std::path::Path, urls: [&str; 2], args: &[&str]) -> [bool; 2] {
    let mut out = [false; 2];
    for (slot, url) in out.iter_mut().zip(urls) {
        let args: Vec<String> = args.iter().map(|a| a.replace("{url}", url)).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        *slot = git.run(dir, &args).await.status.success();
    }
    out
}

/// Pushes C git refuses are refused here, and those it accepts are accepted: from a shallow
/// clone (accepted when the server has the history; "shallow update not allowed" when it does
/// not), a tree or tag as a branch tip, and refs that clash as file and directory (`a` and
/// `a/b`), atomic or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_are_refused_where_c_git_refuses_them() {
    let s = TestServer::start().await;
    let tmp = tempfile::tempdir().expect("temp dir");
    let git = Git::new(tmp.path());
    let ours = create_repo(&s, "refusals", false).await;
    let reference = Reference::new(&git, tmp.path(), "refusals").await;
    let urls = [ours.as_str(), reference.url.as_str()];
    let src = tmp.path().join("src");
    git.repo_with_commits(&src, 4).await;
    git.ok(&src, &["tag", "-a", "v1", "-m", "v1"]).await;
    for url in urls {
        git.ok(&src, &["push", "-q", url, "main", "v1"]).await;
    }
    let listing = |url: &str| {
        let (git, src, url) = (git.clone(), src.clone(), url.to_owned());
        async move { refs(&git.ok(&src, &["ls-remote", &url]).await) }
    };

    // A CI bot's push from a depth-1 clone.
    for (i, url) in urls.iter().enumerate() {
        let bot = tmp.path().join(format!("bot{i}"));
        git.ok(tmp.path(), &["clone", "-q", "--depth=1", url, bot.to_str().expect("utf-8")]).await;
        std::fs::write(bot.join("bot.txt"), "from a shallow clone\n").expect("write");
        git.ok(&bot, &["add", "-A"]).await;
        // One commit time for both bots, so their commits (and the listings compared) are the
        // same whichever second each was made in.
        let date = [("GIT_AUTHOR_DATE", "1700000000 +0000"), ("GIT_COMMITTER_DATE", "1700000000 +0000")];
        let committed = git.run_env(&bot, &["commit", "-q", "-m", "bot"], &date).await;
        assert!(committed.status.success(), "{}", String::from_utf8_lossy(&committed.stderr));
        git.ok(&bot, &["push", "-q", "origin", "main"]).await;
    }
    assert_eq!(listing(&ours).await, listing(&reference.url).await);
    // The same shallow clone pushed into an empty repository would leave it incomplete.
    let empty_ours = create_repo(&s, "refusals-empty", false).await;
    let empty_reference = Reference::new(&git, tmp.path(), "refusals-empty").await;
    let bot = tmp.path().join("bot0");
    let pushed = outcomes(&git, &bot, [&empty_ours, &empty_reference.url], &["push", "-q", "{url}", "main"]).await;
    assert_eq!(pushed, [false, false], "C git refuses a shallow push the server cannot complete");
    let refused = git.fails(&bot, &["push", &empty_ours, "main"]).await;
    assert!(refused.contains("shallow update not allowed"), "{refused}");
    git.fsck(&bot).await;

    // A tree, a blob or an annotated tag as a branch tip; a tag's name is fine for a tag.
    for tip in ["HEAD^{tree}", "HEAD:file.txt", "v1"] {
        let id = git.ok(&src, &["rev-parse", tip]).await;
        let spec = format!("{}:refs/heads/not-a-commit", id.trim());
        assert_eq!(outcomes(&git, &src, urls, &["push", "-q", "{url}", &spec]).await, [false, false], "{tip}");
    }
    let spec = format!("{}:refs/tags/tree-tag", git.ok(&src, &["rev-parse", "HEAD^{tree}"]).await.trim());
    assert_eq!(outcomes(&git, &src, urls, &["push", "-q", "{url}", &spec]).await, [true, true]);

    // File/directory clashes, against existing refs and within one push.
    let cases: [&[&str]; 5] = [
        &["push", "-q", "{url}", "main:refs/heads/main/sub"],
        &["push", "-q", "--atomic", "{url}", "main:refs/heads/main/sub"],
        &["push", "-q", "{url}", "main:refs/heads/x", "main:refs/heads/x/y"],
        &["push", "-q", "--atomic", "{url}", "main:refs/heads/p", "main:refs/heads/p/q"],
        &["push", "-q", "{url}", "main:refs/heads/deep/er/ref", "main:refs/heads/deep"],
    ];
    for args in cases {
        let got = outcomes(&git, &src, urls, args).await;
        assert_eq!(got[0], got[1], "{args:?}: ours succeeded {}, C git {}", got[0], got[1]);
        assert_eq!(listing(&ours).await, listing(&reference.url).await, "{args:?}");
    }
    // Deleting the clashing ref in the same push makes room, as in C git.
    let args = ["push", "-q", "{url}", ":refs/heads/x", "main:refs/heads/x/z"];
    assert_eq!(outcomes(&git, &src, urls, &args).await, [true, true]);
    assert_eq!(listing(&ours).await, listing(&reference.url).await);
    s.stop().await;
}

/// Partial clones fetch what they name, `blob:limit` draws git's line (a blob of exactly the
/// limit is left out), and `git fetch --negotiate-only` works (`wait-for-done`), each as C git.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_fetches_and_negotiation_match_c_git() {
    let s = TestServer::start().await;
    let tmp = tempfile::tempdir().expect("temp dir");
    let git = Git::new(tmp.path());
    let ours = create_repo(&s, "partial", false).await;
    let reference = Reference::new(&git, tmp.path(), "partial").await;
    let src = tmp.path().join("src");
    git.repo_with_commits(&src, 3).await;
    std::fs::write(src.join("limit.bin"), vec![b'x'; 1024]).expect("write");
    std::fs::write(src.join("under.bin"), vec![b'y'; 1023]).expect("write");
    git.ok(&src, &["add", "-A"]).await;
    git.ok(&src, &["commit", "-q", "-m", "sizes"]).await;
    for url in [&ours, &reference.url] {
        git.ok(&src, &["push", "-q", url, "main"]).await;
    }
    let blob = git.ok(&src, &["rev-parse", "HEAD:f0.txt"]).await.trim().to_owned();
    for (i, url) in [&ours, &reference.url].into_iter().enumerate() {
        // After a treeless clone, a blob is fetched by id.
        let bare = tmp.path().join(format!("treeless{i}.git"));
        git.ok(tmp.path(), &["clone", "-q", "--bare", "--filter=tree:0", url, bare.to_str().expect("utf-8")]).await;
        git.ok(&bare, &["fetch", "-q", "origin", &blob]).await;
        assert_eq!(git.ok(&bare, &["cat-file", "-t", &blob]).await.trim(), "blob", "{url}");
    }
    let mut missing = Vec::new();
    for (i, url) in [&ours, &reference.url].into_iter().enumerate() {
        let limited = tmp.path().join(format!("limited{i}"));
        let dir = limited.to_str().expect("utf-8");
        git.ok(tmp.path(), &["clone", "-q", "--no-checkout", "--filter=blob:limit=1k", url, dir]).await;
        let listed = git.ok(&limited, &["rev-list", "--objects", "--all", "--missing=print"]).await;
        let mut ids: Vec<String> = listed.lines().filter(|l| l.starts_with('?')).map(str::to_owned).collect();
        ids.sort();
        missing.push(ids);
    }
    assert_eq!(missing[0], missing[1], "blob:limit=1k leaves out the same blobs");
    let at_limit = git.ok(&src, &["rev-parse", "HEAD:limit.bin"]).await;
    let under = git.ok(&src, &["rev-parse", "HEAD:under.bin"]).await;
    assert!(missing[0].contains(&format!("?{}", at_limit.trim())), "a blob of exactly 1k is left out");
    assert!(!missing[0].contains(&format!("?{}", under.trim())), "one byte less is sent");

    // A push's negotiation: which of the tips the server has.
    std::fs::write(src.join("local.txt"), "not pushed\n").expect("write");
    git.ok(&src, &["add", "-A"]).await;
    git.ok(&src, &["commit", "-q", "-m", "local"]).await;
    let mut answers = Vec::new();
    for url in [&ours, &reference.url] {
        let args = ["fetch", "--negotiate-only", "--negotiation-tip=main", url];
        answers.push(git.ok(&src, &args).await);
    }
    // C git (stateful, over file://) acknowledges only the newest common commit; ours, as C git
    // does over stateless HTTP, every common one: the newest is among them, and nothing else.
    let newest_common = git.ok(&src, &["rev-parse", "HEAD~1"]).await;
    assert_eq!(answers[1].trim(), newest_common.trim());
    assert!(answers[0].lines().any(|l| l == newest_common.trim()), "{}", answers[0]);
    let server_has = git.ok(&src, &["rev-list", "HEAD~1"]).await;
    assert!(answers[0].lines().all(|l| server_has.contains(l)), "{}", answers[0]);
    s.stop().await;
}

/// Deepening a shallow clone of a history with merges selects the commits C git selects (the
/// same commits, the same shallow boundary), over protocol v2 and v0, on generated histories.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deepening_merge_histories_matches_c_git() {
    let s = TestServer::start().await;
    let tmp = tempfile::tempdir().expect("temp dir");
    let git = Git::new(tmp.path());
    for seed in [2u64, 11] {
        let name = format!("merges{seed}");
        let ours = create_repo(&s, &name, false).await;
        let reference = Reference::new(&git, tmp.path(), &name).await;
        let src = tmp.path().join(&name);
        merge_history(&git, &src, seed).await;
        for url in [&ours, &reference.url] {
            git.ok(&src, &["push", "-q", url, "main"]).await;
        }
        for protocol in ["2", "0"] {
            let version = format!("protocol.version={protocol}");
            for (depth, deeper) in [(1, 2), (2, 4), (3, 4), (3, 5), (4, 5), (5, 6), (5, 7)] {
                let mut results = Vec::new();
                for (i, url) in [&ours, &reference.url].into_iter().enumerate() {
                    let clone = tmp.path().join(format!("{name}-{protocol}-{depth}-{deeper}-{i}"));
                    let dir = clone.to_str().expect("utf-8");
                    let depth_arg = format!("--depth={depth}");
                    git.ok(tmp.path(), &["-c", &version, "clone", "-q", &depth_arg, url, dir]).await;
                    git.ok(&clone, &["-c", &version, "fetch", "-q", &format!("--depth={deeper}")]).await;
                    let commits = git.ok(&clone, &["rev-list", "origin/main"]).await;
                    let mut shallow: Vec<String> = std::fs::read_to_string(clone.join(".git/shallow"))
                        .unwrap_or_default()
                        .lines()
                        .map(str::to_owned)
                        .collect();
                    shallow.sort();
                    results.push((refs(&commits), shallow));
                }
                assert_eq!(results[0], results[1], "seed {seed}, v{protocol}, --depth={depth} then {deeper}");
            }
        }
    }
    s.stop().await;
}

/// A history of 9 to 24 commits with branches and merges, shaped by `seed`.
async fn merge_history(git: &Git, dir: &std::path::Path, seed: u64) {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
    let mut next = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    std::fs::create_dir_all(dir).expect("dir");
    git.ok(dir, &["init", "-q", "-b", "main"]).await;
    let mut commits: Vec<String> = Vec::new();
    for i in 0..9 + next(16) {
        let roll = next(100);
        if !commits.is_empty() && roll < 25 {
            let from = commits[next(commits.len() as u64) as usize].clone();
            git.ok(dir, &["checkout", "-q", "--detach", &from]).await;
        }
        if commits.len() > 2 && roll >= 75 {
            let other = commits[next(commits.len() as u64) as usize].clone();
            git.run(dir, &["merge", "-q", "--no-edit", "-s", "ours", &other]).await;
        }
        std::fs::write(dir.join(format!("f{i}")), format!("{i}\n")).expect("write");
        git.ok(dir, &["add", "-A"]).await;
        git.ok(dir, &["commit", "-q", "-m", &format!("c{i}")]).await;
        commits.push(git.ok(dir, &["rev-parse", "HEAD"]).await.trim().to_owned());
    }
    git.ok(dir, &["checkout", "-q", "-B", "main"]).await;
}

/// The sum of a counter's samples in the server's metrics.
async fn counter(s: &TestServer, name: &str) -> u64 {
    let text = s.http.get(s.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// A CI fleet's clones: identical requests arriving together share one generation of the pack
/// (one cache miss), later ones are copied from the cache, every clone is complete, and a moved
/// ref is never answered from the cache (its want is new).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_clones_share_one_cached_pack_that_is_never_stale() {
    let s = TestServer::start().await;
    let tmp = tempfile::tempdir().expect("temp dir");
    let git = Git::new(tmp.path());
    let url = create_repo(&s, "fleet", false).await;
    let src = tmp.path().join("src");
    git.repo_with_commits(&src, 8).await;
    git.ok(&src, &["push", "-q", &url, "main"]).await;
    let anonymous = format!("{}/admin/fleet", s.base);

    let clones = (0..6).map(|i| {
        let (git, root, url) = (git.clone(), tmp.path().to_owned(), anonymous.clone());
        tokio::spawn(async move {
            let dir = root.join(format!("ci{i}"));
            git.ok(&root, &["clone", "-q", "--depth=1", &url, dir.to_str().expect("utf-8")]).await;
            git.fsck(&dir).await;
            git.ok(&dir, &["rev-parse", "HEAD"]).await
        })
    });
    let head = git.ok(&src, &["rev-parse", "HEAD"]).await;
    for clone in clones {
        assert_eq!(clone.await.expect("clone"), head);
    }
    assert_eq!(counter(&s, "gitstratum_frontend_cache_misses_total").await, 1, "one generation for six clones");
    assert_eq!(counter(&s, "gitstratum_frontend_cache_hits_total").await, 5);

    // A new commit: the next clone gets it, not the cached pack of the old tip.
    std::fs::write(src.join("next.txt"), "next\n").expect("write");
    git.ok(&src, &["add", "-A"]).await;
    git.ok(&src, &["commit", "-q", "-m", "next"]).await;
    git.ok(&src, &["push", "-q", &url, "main"]).await;
    let fresh = tmp.path().join("fresh");
    git.ok(tmp.path(), &["clone", "-q", "--depth=1", &anonymous, fresh.to_str().expect("utf-8")]).await;
    assert_eq!(git.ok(&fresh, &["rev-parse", "HEAD"]).await, git.ok(&src, &["rev-parse", "HEAD"]).await);
    git.fsck(&fresh).await;
    assert_eq!(counter(&s, "gitstratum_frontend_cache_misses_total").await, 2);

    // Full clones and an incremental fetch too, from the cache the second time.
    for i in 0..2 {
        let full = tmp.path().join(format!("full{i}"));
        git.ok(tmp.path(), &["clone", "-q", &anonymous, full.to_str().expect("utf-8")]).await;
        git.fsck(&full).await;
        assert_eq!(git.ok(&full, &["rev-list", "--count", "HEAD"]).await.trim(), "9");
    }
    assert_eq!(counter(&s, "gitstratum_frontend_cache_misses_total").await, 3);
    assert_eq!(counter(&s, "gitstratum_frontend_cache_hits_total").await, 6);
    let entries = std::fs::read_dir(s.data_dir.path().join("pack-cache")).expect("cache dir").count();
    assert_eq!(entries, 3, "one entry per distinct request");

    // Protocol v0 and v1 clients (older git, many tools) go through the cache as well: the pack
    // is the same bytes whatever the protocol around it, only its framing differs.
    let (hits, misses) = (
        counter(&s, "gitstratum_frontend_cache_hits_total").await,
        counter(&s, "gitstratum_frontend_cache_misses_total").await,
    );
    for (i, version) in ["0", "1", "0"].into_iter().enumerate() {
        let old = tmp.path().join(format!("v{version}-{i}"));
        let config = format!("protocol.version={version}");
        git.ok(tmp.path(), &["-c", &config, "clone", "-q", "--depth=2", &anonymous, old.to_str().expect("utf-8")])
            .await;
        git.fsck(&old).await;
        assert_eq!(git.ok(&old, &["rev-list", "--count", "HEAD"]).await.trim(), "2");
    }
    assert_eq!(counter(&s, "gitstratum_frontend_cache_misses_total").await, misses + 1, "one generation");
    assert_eq!(counter(&s, "gitstratum_frontend_cache_hits_total").await, hits + 2);
    s.stop().await;
}

/// The packs a repository is stored in (`DATA/git/packs/<repo id>/`), as `.idx` paths.
fn stored_indexes(s: &TestServer, repo_id: i64) -> Vec<PathBuf> {
    let dir = s.data_dir.path().join("git/packs").join(repo_id.to_string());
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "idx")).collect())
        .unwrap_or_default();
    out.sort();
    out
}

/// Pushes are kept as packs, as they arrived: C git's `verify-pack` accepts every stored pack
/// and its index; an incremental push, which git sends thin (deltas against objects the server
/// has), is stored complete, with its bases appended; and a push of a 192 MiB file streams
/// through the server without its memory growing with the push.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_are_stored_as_packs_c_git_verifies() {
    let s = TestServer::start().await;
    let tmp = tempfile::tempdir().expect("temp dir");
    let git = Git::new(tmp.path());
    let (status, created) = s.create_repo(Some(&s.admin_token), json!({"name": "packs"})).await;
    assert_eq!(status.as_u16(), 201, "{created}");
    let repo_id = created["id"].as_i64().expect("id");
    let url = authed_url(&s, &s.admin_token, "packs");
    let src = tmp.path().join("src");
    git.repo_with_commits(&src, 10).await;
    git.ok(&src, &["push", "-q", &url, "main"]).await;
    let old = git.ok(&src, &["rev-parse", "HEAD"]).await.trim().to_owned();

    // A change to a large file: git sends it as a delta against the blob the server has.
    let text: String = (0..2000).map(|l| format!("line {l} of a file worth a delta\n")).collect();
    std::fs::write(src.join("file.txt"), &text).expect("write");
    git.ok(&src, &["commit", "-q", "-am", "big"]).await;
    git.ok(&src, &["push", "-q", &url, "main"]).await;
    std::fs::write(src.join("file.txt"), format!("{text}one more line\n")).expect("write");
    git.ok(&src, &["commit", "-q", "-am", "edit"]).await;
    let sent = git.ok(&src, &["rev-list", "--objects", "HEAD", "--not", &old]).await.lines().count();
    git.ok(&src, &["push", "-q", &url, "main"]).await;

    let indexes = stored_indexes(&s, repo_id);
    assert_eq!(indexes.len(), 3, "one pack a push: {indexes:?}");
    let mut objects_stored = 0;
    for idx in &indexes {
        let out = git.run(tmp.path(), &["verify-pack", "-v", idx.to_str().expect("utf-8")]).await;
        assert!(out.status.success(), "{}: {}", idx.display(), String::from_utf8_lossy(&out.stderr));
        let listing = String::from_utf8_lossy(&out.stdout).into_owned();
        objects_stored += listing.lines().filter(|l| l.len() > 40 && l.as_bytes()[40] == b' ').count();
    }
    let clone = tmp.path().join("clone");
    git.ok(tmp.path(), &["clone", "-q", &url, clone.to_str().expect("utf-8")]).await;
    git.fsck(&clone).await;
    let total = git.ok(&clone, &["rev-list", "--objects", "--all"]).await.lines().count();
    // The last push sent `sent` objects from the two commits; the stored packs hold more than
    // the repository's objects: the thin push's bases were appended.
    assert!(sent >= 3, "{sent}");
    assert!(objects_stored > total, "stored {objects_stored} objects for a repository of {total}: bases appended");

    // A large push streams: the server's memory does not grow with it.
    let binary = incompressible(192 << 20);
    std::fs::write(src.join("large.bin"), &binary).expect("write");
    drop(binary);
    git.ok(&src, &["add", "-A"]).await;
    git.ok(&src, &["commit", "-q", "-m", "large"]).await;
    let before = resident_mib();
    git.ok(&src, &["push", "-q", &url, "main"]).await;
    let grown = resident_mib().saturating_sub(before);
    eprintln!("resident memory grew by {grown} MiB during a 192 MiB push");
    assert!(grown < 96, "the server's memory grew by {grown} MiB during a 192 MiB push");
    let fetched = tmp.path().join("clone");
    git.ok(&fetched, &["pull", "-q", "--ff-only"]).await;
    assert_eq!(std::fs::metadata(fetched.join("large.bin")).expect("large.bin").len(), 192 << 20);
    s.stop().await;
}

/// A byte of a stored pack goes bad: a clone fails rather than receive the damaged object (the
/// server finds it by the entry's CRC-32 or zlib's checksum and reports it), nothing of the failed
/// response is cached, and once the byte is repaired a clone works (no bad answer was kept).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_pack_is_reported_not_served() {
    let s = TestServer::start().await;
    let tmp = tempfile::tempdir().expect("temp dir");
    let git = Git::new(tmp.path());
    let (status, created) = s.create_repo(Some(&s.admin_token), json!({"name": "rot"})).await;
    assert_eq!(status.as_u16(), 201, "{created}");
    let repo_id = created["id"].as_i64().expect("id");
    let url = authed_url(&s, &s.admin_token, "rot");
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).expect("dir");
    git.ok(&src, &["init", "-q", "-b", "main"]).await;
    let text: String = (0..20_000).map(|l| format!("line {l} of a file with some bulk\n")).collect();
    std::fs::write(src.join("bulk.txt"), text).expect("write");
    git.ok(&src, &["add", "-A"]).await;
    git.ok(&src, &["commit", "-q", "-m", "bulk"]).await;
    git.ok(&src, &["push", "-q", &url, "main"]).await;

    let idx = stored_indexes(&s, repo_id).pop().expect("a stored pack");
    let pack = idx.with_extension("pack");
    let mut bytes = std::fs::read(&pack).expect("pack");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&pack, &bytes).expect("write");

    let clone = tmp.path().join("clone");
    let failed = git.fails(tmp.path(), &["clone", "-q", &url, clone.to_str().expect("utf-8")]).await;
    assert!(!failed.is_empty(), "git says why");
    let cached: Vec<_> = std::fs::read_dir(s.data_dir.path().join("pack-cache"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(cached.iter().all(|p| p.extension().is_none_or(|e| e != "pack")), "nothing cached: {cached:?}");

    bytes[middle] ^= 0x55;
    std::fs::write(&pack, &bytes).expect("repair");
    let again = tmp.path().join("again");
    git.ok(tmp.path(), &["clone", "-q", &url, again.to_str().expect("utf-8")]).await;
    git.fsck(&again).await;
    s.stop().await;
}

/// A pack cache that cannot be written (here its directory is gone, a file in its place) costs a
/// fetch its speed, never its answer: clones in both protocols are served without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_pack_cache_costs_speed_not_answers() {
    let s = TestServer::start().await;
    let tmp = tempfile::tempdir().expect("temp dir");
    let git = Git::new(tmp.path());
    let url = create_repo(&s, "nocache", false).await;
    let src = tmp.path().join("src");
    git.repo_with_commits(&src, 3).await;
    git.ok(&src, &["push", "-q", &url, "main"]).await;
    let cache = s.data_dir.path().join("pack-cache");
    std::fs::remove_dir_all(&cache).expect("remove the cache");
    std::fs::write(&cache, "not a directory").expect("a file in its place");
    for version in ["2", "0"] {
        let dir = tmp.path().join(format!("clone-v{version}"));
        let config = format!("protocol.version={version}");
        git.ok(tmp.path(), &["-c", &config, "clone", "-q", &url, dir.to_str().expect("utf-8")]).await;
        git.fsck(&dir).await;
        assert_eq!(git.ok(&dir, &["rev-list", "--count", "HEAD"]).await.trim(), "3");
    }
    s.stop().await;
}

/// After maintenance has fully repacked a repository (writing reachability bitmaps), clones are
/// answered from the bitmaps: a mirror clone and a `blob:none` clone hold exactly the objects C
/// git's rev-list names for the same refs (branches, an annotated tag, a tag of a tag), also for
/// commits pushed after the repack, and pass `fsck`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_answered_from_bitmaps_hold_what_c_git_names() {
    let s = TestServer::start_with(ConfigLayer {
        git_maintenance_secs: Some("1".into()),
        git_full_repack_hours: Some("0".into()),
        ..ConfigLayer::default()
    })
    .await;
    let tmp = tempfile::tempdir().expect("temp dir");
    let git = Git::new(tmp.path());
    let (status, created) = s.create_repo(Some(&s.admin_token), json!({"name": "bitmaps"})).await;
    assert_eq!(status.as_u16(), 201, "{created}");
    let repo_id = created["id"].as_i64().expect("id");
    let url = authed_url(&s, &s.admin_token, "bitmaps");
    let src = tmp.path().join("src");
    git.repo_with_commits(&src, 8).await;
    // A file edited over commits: the main pack holds deltas, which clones copy as stored.
    let mut text: String = (0..3000).map(|l| format!("line {l} of a file edited a little each time\n")).collect();
    for round in 0..4 {
        text = text.replacen(&format!("line {}0 ", round * 7), &format!("LINE {round} EDITED "), 1);
        std::fs::write(src.join("edited.txt"), &text).expect("write");
        git.ok(&src, &["add", "-A"]).await;
        git.ok(&src, &["commit", "-q", "-m", &format!("edit {round}")]).await;
    }
    git.ok(&src, &["tag", "-a", "-m", "v1", "v1", "HEAD~3"]).await;
    git.ok(&src, &["tag", "-a", "-m", "of a tag", "v1-again", "v1"]).await;
    git.ok(&src, &["checkout", "-q", "-b", "dev", "HEAD~5"]).await;
    std::fs::write(src.join("dev.txt"), "dev\n").expect("write");
    git.ok(&src, &["add", "-A"]).await;
    git.ok(&src, &["commit", "-q", "-m", "dev"]).await;
    git.ok(&src, &["checkout", "-q", "main"]).await;
    git.ok(&src, &["push", "-q", "--mirror", &url]).await;

    let reach_written = || {
        std::fs::read_dir(s.data_dir.path().join("git/packs").join(repo_id.to_string()))
            .map(|d| d.flatten().any(|e| e.path().extension().is_some_and(|x| x == "reach")))
            .unwrap_or(false)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !reach_written() {
        assert!(std::time::Instant::now() < deadline, "maintenance wrote no bitmaps");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let objects = |listing: String| -> std::collections::BTreeSet<String> {
        listing.lines().map(|l| l[..40].to_owned()).collect()
    };
    for round in 0..2 {
        if round == 1 {
            // Newer than the bitmaps: walked from the tip down to bitmapped commits.
            std::fs::write(src.join("later.txt"), "later\n").expect("write");
            git.ok(&src, &["add", "-A"]).await;
            git.ok(&src, &["commit", "-q", "-m", "later"]).await;
            git.ok(&src, &["push", "-q", &url, "main"]).await;
        }
        let expected = objects(git.ok(&src, &["rev-list", "--objects", "--all"]).await);
        let mirror = tmp.path().join(format!("mirror-{round}"));
        git.ok(tmp.path(), &["clone", "-q", "--mirror", &url, mirror.to_str().expect("utf-8")]).await;
        git.fsck(&mirror).await;
        assert_eq!(objects(git.ok(&mirror, &["rev-list", "--objects", "--all"]).await), expected, "round {round}");
        let partial = tmp.path().join(format!("partial-{round}"));
        git.ok(tmp.path(), &["clone", "-q", "--bare", "--filter=blob:none", &url, partial.to_str().expect("utf-8")])
            .await;
        let present: std::collections::BTreeSet<String> = git
            .ok(&partial, &["cat-file", "--batch-all-objects", "--batch-check=%(objectname) %(objecttype)"])
            .await
            .lines()
            .map(|l| l[..40].to_owned())
            .collect();
        let blobs: std::collections::BTreeSet<String> = git
            .ok(&src, &["cat-file", "--batch-all-objects", "--batch-check=%(objectname) %(objecttype)"])
            .await
            .lines()
            .filter(|l| l.ends_with(" blob"))
            .map(|l| l[..40].to_owned())
            .collect();
        // The partial clone's refs are the branches and tags (not dev's remote copy alone).
        let wanted = objects(git.ok(&partial, &["rev-list", "--objects", "--all", "--missing=allow-promisor"]).await);
        let expected_present: std::collections::BTreeSet<String> = wanted.difference(&blobs).cloned().collect();
        assert_eq!(present, expected_present, "round {round}: every commit, tree and tag, no blob");
        assert_eq!(
            counter(&s, "gitstratum_git_object_sets_from_bitmaps_total").await,
            2 * (round + 1),
            "bitmaps answered"
        );
        // The main pack's entries were copied as stored, not looked up one by one.
        assert!(counter(&s, "gitstratum_git_pack_entries_copied_total").await >= expected.len() as u64 / 2);
    }

    // A byte of the main pack goes bad: a clone copying its entries finds it by the entry's
    // CRC-32 and fails, rather than send it; repaired, the clone works (nothing bad was kept).
    let dir = s.data_dir.path().join("git/packs").join(repo_id.to_string());
    let count = |ext: &str| {
        std::fs::read_dir(&dir)
            .map(|d| d.flatten().filter(|e| e.path().extension().is_some_and(|x| x == ext)).count())
            .unwrap_or(0)
    };
    // Maintenance has repacked the later push into one main pack again, and rests.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while (count("pack"), count("reach")) != (1, 1) {
        assert!(std::time::Instant::now() < deadline, "maintenance did not repack into one pack");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let main_pack = std::fs::read_dir(&dir)
        .expect("packs")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "reach"))
        .expect("bitmaps")
        .with_extension("pack");
    let mut bytes = std::fs::read(&main_pack).expect("pack");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&main_pack, &bytes).expect("write");
    let broken = tmp.path().join("broken");
    // Not the request the pack cache answered before: every tag left out.
    let failed =
        git.fails(tmp.path(), &["clone", "-q", "--bare", "--no-tags", &url, broken.to_str().expect("utf-8")]).await;
    assert!(!failed.is_empty(), "git says why");
    bytes[middle] ^= 0x55;
    std::fs::write(&main_pack, &bytes).expect("repair");
    let repaired = tmp.path().join("repaired");
    git.ok(tmp.path(), &["clone", "-q", "--bare", "--no-tags", &url, repaired.to_str().expect("utf-8")]).await;
    git.fsck(&repaired).await;
}
