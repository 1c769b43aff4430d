//! The web UI over HTTP: pages of a repository pushed by the real git client, who may see them,
//! signing in and out with the CSRF rule, and hostile names, messages and Markdown shown inert.

use reqwest::{Method, StatusCode};
use serde_json::json;

mod common;
use common::{Git, TestServer};

/// A client that keeps no cookies and follows no redirects: each test says what it sends.
fn browser() -> reqwest::Client {
    gitstratum_server::http::client_builder().redirect(reqwest::redirect::Policy::none()).build().expect("client")
}

async fn get(
    http: &reqwest::Client,
    s: &TestServer,
    path: &str,
    cookie: Option<&str>,
) -> (StatusCode, String, reqwest::header::HeaderMap) {
    let mut req = http.get(s.url(path));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let resp = req.send().await.expect("request");
    let (status, headers) = (resp.status(), resp.headers().clone());
    (status, resp.text().await.expect("body"), headers)
}

/// The value of cookie `name` a response sets.
fn set_cookie(headers: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    headers.get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).find_map(|v| {
        v.strip_prefix(&format!("{name}=")).map(|rest| rest.split(';').next().unwrap_or_default().to_owned())
    })
}

/// `application/x-www-form-urlencoded` of `fields` (as a browser sends a form).
fn post_form(req: reqwest::RequestBuilder, fields: &[(&str, &str)]) -> reqwest::RequestBuilder {
    let encode = |v: &str| -> String {
        v.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    let body: Vec<String> = fields.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect();
    req.header("content-type", "application/x-www-form-urlencoded").body(body.join("&"))
}

/// A page without the site's own script tag (every page loads `/static/page.js`): what is left
/// must hold no `<script` at all.
fn without_own_scripts(page: &str) -> String {
    page.replace(r#"<script src="/static/page.js" defer></script>"#, "")
}

/// The hidden CSRF field of a page's form.
fn csrf_field(page: &str) -> String {
    let at = page.find(r#"name="csrf" value=""#).expect("a CSRF field") + r#"name="csrf" value=""#.len();
    page[at..at + 32].to_owned()
}

const HOSTILE_README: &str = "# Hello\n\n<script>window.pwned=1</script>\n\n[click](javascript:alert(1)) \
<img src=x onerror=alert(2)> [docs](docs/guide.md)\n\n| a | b |\n|---|---|\n| 1 | 2 |\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repository_pages_show_what_git_pushed_and_nothing_runs() {
    let s = TestServer::start().await;
    let admin = s.admin_token.clone();
    let (status, body) = s.create_repo(Some(&admin), json!({"name": "site"})).await;
    assert_eq!(status, 201, "{body}");
    let tmp = tempfile::tempdir().expect("temp dir");
    let git = Git::new(tmp.path());
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("docs")).expect("dir");
    git.ok(&src, &["init", "-q", "-b", "main"]).await;
    std::fs::write(src.join("README.md"), HOSTILE_README).expect("write");
    std::fs::write(src.join("docs/guide.md"), "guide\n").expect("write");
    let code: String = (1..=40).map(|i| format!("line {i} <b>&amp;</b>\n")).collect();
    std::fs::write(src.join("code.txt"), code).expect("write");
    std::fs::write(src.join("<img src=x onerror=alert(3)>.txt"), "hostile name\n").expect("write");
    std::fs::write(src.join("blob.bin"), [0u8, 1, 2, 3, 0, 255]).expect("write");
    git.ok(&src, &["add", "-A"]).await;
    git.ok(&src, &["commit", "-q", "-m", "<script>alert(4)</script> first"]).await;
    git.ok(&src, &["checkout", "-q", "-b", "feature/x"]).await;
    std::fs::write(src.join("feature.txt"), "on a branch with a slash\n").expect("write");
    git.ok(&src, &["mv", "docs/guide.md", "docs/manual.md"]).await;
    let edited: String =
        (1..=40).map(|i| if i == 7 { "line seven\n".to_owned() } else { format!("line {i} <b>&amp;</b>\n") }).collect();
    std::fs::write(src.join("code.txt"), edited).expect("write");
    git.ok(&src, &["add", "-A"]).await;
    git.ok(&src, &["commit", "-q", "-m", "feature\n\nWith a body <i>that stays text</i>."]).await;
    let feature = git.ok(&src, &["rev-parse", "HEAD"]).await.trim().to_owned();
    git.ok(&src, &["tag", "-a", "-m", "first release", "v1", "main"]).await;
    git.ok(&src, &["checkout", "-q", "-b", "old", "main"]).await;
    std::fs::write(src.join("old.txt"), "diverged\n").expect("write");
    git.ok(&src, &["add", "-A"]).await;
    git.ok(&src, &["commit", "-q", "-m", "old work"]).await;
    git.ok(&src, &["checkout", "-q", "main"]).await;
    std::fs::write(src.join("later.txt"), "later on main\n").expect("write");
    git.ok(&src, &["add", "-A"]).await;
    git.ok(&src, &["commit", "-q", "-m", "later on main"]).await;
    let host = s.base.trim_start_matches("http://").to_owned();
    let push = format!("http://x:{admin}@{host}/admin/site.git");
    git.ok(&src, &["push", "-q", &push, "main", "feature/x", "old", "v1"]).await;

    let http = browser();
    // The home page: files, the README rendered inert, the last commit, the clone URL.
    let (status, page, headers) = get(&http, &s, "/admin/site", None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let csp = headers["content-security-policy"].to_str().expect("ascii");
    assert!(csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-inline"), "{csp}");
    assert!(headers["content-type"].to_str().expect("ascii").starts_with("text/html"));
    for expected in [
        "<h1>Hello</h1>",
        "&lt;script&gt;window.pwned=1&lt;/script&gt;",
        "&lt;img src=x onerror=alert(2)&gt;",
        r#"href="/admin/site/blob/main/docs/guide.md""#,
        "<table>",
        "later on main",
        "&lt;img src=x onerror=alert(3)&gt;.txt",
        &format!("{}/admin/site.git", s.base),
    ] {
        assert!(page.contains(expected), "{expected:?} not in the home page:\n{page}");
    }
    let page = without_own_scripts(&page);
    assert!(!page.contains("<script") && !page.contains("javascript:") && !page.contains("<img src=x"), "{page}");

    // A tree and a file at a branch whose name has a slash; lines are numbered and linkable.
    let (status, page, _) = get(&http, &s, "/admin/site/tree/feature/x/docs", None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains(r#"href="/admin/site/blob/feature/x/docs/manual.md""#), "{page}");
    let (status, page, _) = get(&http, &s, "/admin/site/blob/main/code.txt", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(r##"<tr id="L40"><td class="num"><a href="#L40">40</a>"##), "{page}");
    assert!(page.contains("line 7 &lt;b&gt;&amp;amp;&lt;/b&gt;"), "{page}");
    let (_, page, _) = get(&http, &s, "/admin/site/blob/main/blob.bin", None).await;
    assert!(page.contains("Binary file not shown"), "{page}");
    // Raw bytes: text, sandboxed, never sniffed.
    let (status, raw, headers) = get(&http, &s, "/admin/site/raw/main/README.md", None).await;
    assert_eq!((status, raw.as_str()), (StatusCode::OK, HOSTILE_README));
    assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
    assert!(headers["content-security-policy"].to_str().expect("ascii").contains("sandbox"));
    assert_eq!(headers["x-content-type-options"], "nosniff");
    // History of the branch.
    let (status, page, _) = get(&http, &s, "/admin/site/commits/feature/x", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(">feature<") && page.contains("&lt;script&gt;alert(4)&lt;/script&gt; first"), "{page}");
    // The commit: message, files changed against its parent, an exact rename, hunks as git's.
    assert!(page.contains(&format!(r#"href="/admin/site/commit/{feature}""#)), "{page}");
    // A path's history: only the commits that changed it, as `git log -- PATH` lists them.
    for (at, path) in [("feature/x", "code.txt"), ("main", "code.txt"), ("main", "later.txt"), ("feature/x", "docs")] {
        let (status, page, _) = get(&http, &s, &format!("/admin/site/commits/{at}/{path}"), None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let listed: Vec<String> =
            page.match_indices("/admin/site/commit/").map(|(i, _)| page[i + 19..i + 59].to_owned()).collect();
        let expected = git.ok(&src, &["log", "--format=%H", at, "--", path]).await;
        assert_eq!(listed, expected.lines().collect::<Vec<_>>(), "{at} -- {path}");
    }
    let (status, page, _) = get(&http, &s, &format!("/admin/site/commit/{feature}"), None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    for expected in [
        "<h2>feature</h2>",
        "With a body &lt;i&gt;that stays text&lt;/i&gt;.",
        "<code>docs/guide.md</code> → <code>docs/manual.md</code>",
        "<code>feature.txt</code>",
        "<code>@@ -4,7 +4,7 @@</code>",
        "-line 7 &lt;b&gt;&amp;amp;&lt;/b&gt;",
        "+line seven",
        "3</strong> changed files with",
    ] {
        assert!(page.contains(expected), "{expected:?} not in the commit page:\n{page}");
    }
    // Every hunk header C git prints for the same commit is on the page.
    let patch = git.ok(&src, &["diff", "--histogram", "-U3", &format!("{feature}~1"), &feature]).await;
    let headers: Vec<&str> = patch
        .lines()
        .filter_map(|l| l.strip_prefix("@@ ").and_then(|r| r.split_once(" @@")).map(|(ranges, _)| ranges))
        .collect();
    assert!(!headers.is_empty());
    for ranges in headers {
        assert!(page.contains(&format!("<code>@@ {ranges} @@</code>")), "git's hunk @@ {ranges} @@ not on the page");
    }
    // Branches, ahead of and behind the default branch as C git counts them; tags.
    let (status, page, _) = get(&http, &s, "/admin/site/branches", None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    for branch in ["feature/x", "old"] {
        let counts = git.ok(&src, &["rev-list", "--left-right", "--count", &format!("{branch}...main")]).await;
        let (ahead, behind) = counts.trim().split_once('\t').expect("two counts");
        let row = &page[page.find(&format!(">{branch}</a>")).expect("listed")..];
        let row = &row[..row.find("</tr>").expect("row end")];
        assert!(
            row.contains(&format!("<td>{behind} | {ahead}</td>")),
            "{branch}: C git says {behind} behind, {ahead} ahead:\n{row}"
        );
    }
    let (status, page, _) = get(&http, &s, "/admin/site/tags", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(r#"href="/admin/site/tree/v1">v1</a>"#), "{page}");
    // What is not there is a 404 page in the layout.
    for missing in
        ["/admin/site/blob/main/nope.txt", "/admin/site/tree/no-branch", "/admin/nope", "/admin/site/blob/main/docs"]
    {
        let (status, page, _) = get(&http, &s, missing, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
        assert!(page.contains("Not found") && page.contains("GitStratum"), "{missing}: {page}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_shows_private_repositories_and_a_cookie_never_authorizes_the_api() {
    let s = TestServer::start().await;
    let admin = Some(s.admin_token.as_str());
    let user = json!({"username": "mona", "password": "octocat-1234"});
    assert_eq!(s.send(Method::POST, "/api/v1/users", admin, Some(user)).await.0, 201);
    let (status, body) = s.create_repo(admin, json!({"name": "secret", "private": true})).await;
    assert_eq!(status, 201, "{body}");
    let http = browser();

    // Anonymous: a private repository is a 404 page, like one that does not exist.
    let (status, _, _) = get(&http, &s, "/admin/secret", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The sign-in form sets a CSRF cookie; a post without the matching token is refused.
    let (status, form, headers) = get(&http, &s, "/login", None).await;
    assert_eq!(status, StatusCode::OK);
    let csrf = set_cookie(&headers, "gitstratum_csrf").expect("a CSRF cookie");
    assert_eq!(csrf_field(&form), csrf);
    let post = |cookie: String, token: String, password: &'static str| {
        post_form(
            http.post(s.url("/login")).header("cookie", cookie),
            &[("csrf", token.as_str()), ("username", "admin"), ("password", password)],
        )
        .send()
    };
    let refused = post(format!("gitstratum_csrf={csrf}"), "0".repeat(32), "whatever").await.expect("post");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let bad = post(format!("gitstratum_csrf={csrf}"), csrf.clone(), "wrong-password").await.expect("post");
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    assert!(bad.text().await.expect("body").contains("Bad username or password"));

    // Mona signs in; she is not a member of admin's repositories.
    let resp = post_form(
        http.post(s.url("/login")).header("cookie", format!("gitstratum_csrf={csrf}")),
        &[("csrf", csrf.as_str()), ("username", "mona"), ("password", "octocat-1234")],
    )
    .send()
    .await
    .expect("post");
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let session = set_cookie(resp.headers(), "gitstratum_session").expect("a session cookie");
    let cookies = format!("gitstratum_csrf={csrf}; gitstratum_session={session}");
    let (status, page, _) = get(&http, &s, "/", Some(&cookies)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("mona") && page.contains("Sign out"), "{page}");
    assert_eq!(get(&http, &s, "/admin/secret", Some(&cookies)).await.0, StatusCode::NOT_FOUND);
    // Granted read, she sees it, and the home page lists it.
    let (status, body) = s
        .send(Method::PUT, "/api/v1/repos/admin/secret/collaborators/mona", admin, Some(json!({"permission": "read"})))
        .await;
    assert!(status.is_success(), "{body}");
    let (status, page, _) = get(&http, &s, "/admin/secret", Some(&cookies)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("This repository is empty"), "{page}");
    assert!(get(&http, &s, "/", Some(&cookies)).await.1.contains("/admin/secret"));

    // Tokens: made under the API's rules, shown once, listed without their secret, revoked.
    let (status, page, _) = get(&http, &s, "/settings/tokens", Some(&cookies)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let made = post_form(
        http.post(s.url("/settings/tokens")).header("cookie", &cookies),
        &[("csrf", csrf.as_str()), ("name", "ci <bot>"), ("scope", "repo:read"), ("expires_in_days", "30")],
    )
    .send()
    .await
    .expect("post");
    assert_eq!(made.status(), StatusCode::CREATED);
    let page = made.text().await.expect("body");
    let marker = r#"id="new-token" type="text" readonly value=""#;
    let at = page.find(marker).expect("the token shown once") + marker.len();
    let secret = page[at..].split('"').next().expect("value").to_owned();
    assert!(secret.starts_with("gst_") && page.contains("ci &lt;bot&gt;"), "{page}");
    let (_, who) = s.send(Method::GET, "/api/v1/user", Some(&secret), None).await;
    assert_eq!(who["login"].as_str().or(who["name"].as_str()), Some("mona"), "{who}");
    let (_, page, _) = get(&http, &s, "/settings/tokens", Some(&cookies)).await;
    assert!(!page.contains(&secret) && page.contains("ci &lt;bot&gt;"), "listed, not shown");
    assert!(page.contains(">in 30 days<"), "{page}");
    // A session may not grant what it lacks (`admin`), and a form without the CSRF token is refused.
    let refused = post_form(
        http.post(s.url("/settings/tokens")).header("cookie", &cookies),
        &[("csrf", csrf.as_str()), ("name", "too much"), ("scope", "admin")],
    )
    .send()
    .await
    .expect("post");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let no_csrf =
        post_form(http.post(s.url("/settings/tokens")).header("cookie", &cookies), &[("name", "x"), ("scope", "user")])
            .send()
            .await
            .expect("post");
    assert_eq!(no_csrf.status(), StatusCode::FORBIDDEN);
    let id =
        page[page.find("/settings/tokens/").expect("a revoke form") + 17..].split('/').next().expect("id").to_owned();
    let revoked = post_form(
        http.post(s.url(&format!("/settings/tokens/{id}/revoke"))).header("cookie", &cookies),
        &[("csrf", csrf.as_str())],
    )
    .send()
    .await
    .expect("post");
    assert!(revoked.status().is_redirection());
    // Anonymous: the settings page sends to sign in.
    assert_eq!(get(&http, &s, "/settings/tokens", None).await.0, StatusCode::SEE_OTHER);

    // SSH keys: added (titled by its comment), listed with the fingerprint, a bad key refused
    // with the parser's reason, deleted.
    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKl0UOwkXXh5iHy4+8ZqR/Yxx9yWeCgdeusVCeND979i mona@laptop";
    let added = post_form(
        http.post(s.url("/settings/keys")).header("cookie", &cookies),
        &[("csrf", csrf.as_str()), ("title", ""), ("key", KEY)],
    )
    .send()
    .await
    .expect("post");
    assert_eq!(added.status(), StatusCode::SEE_OTHER);
    let (status, page, _) = get(&http, &s, "/settings/keys", Some(&cookies)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("<strong>mona@laptop</strong>") && page.contains("SHA256:"), "{page}");
    let bad = post_form(
        http.post(s.url("/settings/keys")).header("cookie", &cookies),
        &[("csrf", csrf.as_str()), ("key", "ssh-ed25519 AAAA <script>")],
    )
    .send()
    .await
    .expect("post");
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(!bad.text().await.expect("body").contains("<script>"));
    let key_id =
        page[page.find("/settings/keys/").expect("a delete form") + 15..].split('/').next().expect("id").to_owned();
    let deleted = post_form(
        http.post(s.url(&format!("/settings/keys/{key_id}/delete"))).header("cookie", &cookies),
        &[("csrf", csrf.as_str())],
    )
    .send()
    .await
    .expect("post");
    assert_eq!(deleted.status(), StatusCode::SEE_OTHER);
    assert!(get(&http, &s, "/settings/keys", Some(&cookies)).await.1.contains("No keys yet."));

    // The owner's page lists what the viewer may see.
    let (status, page, _) = get(&http, &s, "/admin", Some(&cookies)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(r#"href="/admin/secret""#), "{page}");
    let (status, page, _) = get(&http, &s, "/admin", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!page.contains("/admin/secret"), "{page}");
    assert_eq!(get(&http, &s, "/nobody-here", None).await.0, StatusCode::NOT_FOUND);

    // The cookie alone never authorizes an API call.
    let api = http.get(s.url("/api/v1/user")).header("cookie", &cookies).send().await.expect("api");
    assert_eq!(api.status(), StatusCode::UNAUTHORIZED);
    // A personal access token in the cookie does not make a page viewer.
    let pat = format!("gitstratum_session={}", s.admin_token);
    assert_eq!(get(&http, &s, "/admin/secret", Some(&pat)).await.0, StatusCode::NOT_FOUND);

    // Signing out needs the token too, and revokes the session.
    let out =
        post_form(http.post(s.url("/logout")).header("cookie", &cookies), &[("csrf", "x")]).send().await.expect("post");
    assert_eq!(out.status(), StatusCode::FORBIDDEN);
    let out = post_form(http.post(s.url("/logout")).header("cookie", &cookies), &[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("post");
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert_eq!(get(&http, &s, "/admin/secret", Some(&cookies)).await.0, StatusCode::NOT_FOUND);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ci_pages_show_runs_jobs_and_inert_logs() {
    let s = TestServer::start_with(gitstratum_server::ConfigLayer {
        embedded_runner: Some("true".into()),
        ..Default::default()
    })
    .await;
    let admin = s.admin_token.clone();
    let (status, body) = s.create_repo(Some(&admin), json!({"name": "app"})).await;
    assert_eq!(status, 201, "{body}");
    let tmp = tempfile::tempdir().expect("temp dir");
    let git = Git::new(tmp.path());
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join(".github/workflows")).expect("dir");
    git.ok(&src, &["init", "-q", "-b", "main"]).await;
    std::fs::write(
        src.join(".github/workflows/ci.yml"),
        "name: CI\non: push\njobs:\n  build:\n    runs-on: ubuntu-latest\n    steps:\n      - name: Say\n        run: |\n          echo '<script>alert(5)</script>'\n          printf '\\033[31mred\\033[0m text\\n'\n  broken:\n    needs: build\n    runs-on: ubuntu-latest\n    steps:\n      - name: Wait\n        run: echo waiting; sleep 4\n      - name: Fail\n        run: exit 3\n",
    )
    .expect("write");
    git.ok(&src, &["add", "-A"]).await;
    git.ok(&src, &["commit", "-q", "-m", "ci <b>please</b>"]).await;
    let host = s.base.trim_start_matches("http://").to_owned();
    git.ok(&src, &["push", "-q", &format!("http://x:{admin}@{host}/admin/app.git"), "main"]).await;

    // While `broken` runs, its page follows its log live (and reloads itself without a script).
    let http = browser();
    let mut seen_live = false;
    for _ in 0..300 {
        let (_, page) = s.send(Method::GET, "/api/v1/repos/admin/app/runs", Some(&admin), None).await;
        if let Some(id) = page["runs"][0]["id"].as_i64() {
            let (_, detail) = s.send(Method::GET, &format!("/api/v1/runs/{id}"), Some(&admin), None).await;
            if detail["jobs"][1]["status"] == "in_progress" {
                let job = detail["jobs"][1]["id"].as_i64().expect("id");
                let (_, html, _) = get(&http, &s, &format!("/admin/app/actions/runs/{id}/job/{job}"), None).await;
                if html.contains("data-live-log=") {
                    assert!(html.contains(r#"<script src="/static/live.js" defer>"#), "{html}");
                    assert!(html.contains(r#"<noscript><meta http-equiv="refresh" content="5"></noscript>"#), "{html}");
                    // The run's page follows it too.
                    let (_, html, _) = get(&http, &s, &format!("/admin/app/actions/runs/{id}"), None).await;
                    assert!(
                        html.contains(&format!(r#"data-live-run="/admin/app/actions/runs/{id}/events""#)),
                        "{html}"
                    );
                    seen_live = true;
                    break;
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(seen_live, "the running job's page follows its log");
    let (status, script, headers) = get(&http, &s, "/static/live.js", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"].to_str().expect("ascii").starts_with("text/javascript")
            && script.contains("EventSource")
    );

    // Wait for the run to complete (through the API).
    let mut run = serde_json::Value::Null;
    for _ in 0..600 {
        let (_, page) = s.send(Method::GET, "/api/v1/repos/admin/app/runs", Some(&admin), None).await;
        if let Some(r) = page["runs"].get(0)
            && r["status"] == "completed"
        {
            run = r.clone();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(run["conclusion"], "failure", "{run}");
    let id = run["id"].as_i64().expect("id");
    let (_, detail) = s.send(Method::GET, &format!("/api/v1/runs/{id}"), Some(&admin), None).await;
    let build = detail["jobs"][0]["id"].as_i64().expect("job id");

    let (status, page, _) = get(&http, &s, "/admin/app/actions", None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains(&format!(r#"href="/admin/app/actions/runs/{id}""#)) && page.contains("✗ failure"), "{page}");
    assert!(page.contains("CI #1 · push on <code>main</code> by admin"), "{page}");
    let (status, page, _) = get(&http, &s, "/admin/app/actions?status=success", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!page.contains(&format!("/actions/runs/{id}\"")), "filtered out: {page}");
    for (query, listed) in [
        ("workflow=ci.yml", true),
        ("workflow=.github%2Fworkflows%2Fci.yml", true),
        ("workflow=other.yml", false),
        ("branch=main&event=push", true),
        ("branch=dev", false),
        ("event=pull_request", false),
        ("status=nonsense", true),
    ] {
        let (status, page, _) = get(&http, &s, &format!("/admin/app/actions?{query}"), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(page.contains(&format!("/actions/runs/{id}\"")), listed, "{query}: {page}");
    }
    let (_, api) =
        s.send(Method::GET, "/api/v1/repos/admin/app/runs?workflow=ci.yml&branch=dev", Some(&admin), None).await;
    assert_eq!(api["runs"].as_array().map(Vec::len), Some(0), "the API filters alike: {api}");
    // The commit's page and the branches page show its combined CI status, linked to the run.
    let sha = run["head_sha"].as_str().expect("sha").to_owned();
    for page in [format!("/admin/app/commit/{sha}"), "/admin/app/branches".to_owned(), "/admin/app".to_owned()] {
        let (_, html, _) = get(&http, &s, &page, None).await;
        assert!(
            html.contains(&format!(r#"<a class="state bad" href="/admin/app/actions/runs/{id}""#))
                && html.contains(r#"aria-label="CI: failure""#),
            "{page}: {html}"
        );
    }
    // The run's events, for its page's script: one event with its state, then the end.
    let (status, events, _) = get(&http, &s, &format!("/admin/app/actions/runs/{id}/events"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(events.contains("event: run") && events.contains("\"conclusion\":\"failure\""), "{events}");
    // The raw log: text, sandboxed.
    let (status, raw, headers) = get(&http, &s, &format!("/admin/app/actions/runs/{id}/job/{build}/raw"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(raw.contains("<script>alert(5)</script>"), "{raw}");
    assert!(headers["content-type"].to_str().expect("ascii").starts_with("text/plain"));
    assert!(headers["content-security-policy"].to_str().expect("ascii").contains("sandbox"));
    let (status, page, _) = get(&http, &s, &format!("/admin/app/actions/runs/{id}"), None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains(&format!(r#"href="/admin/app/actions/runs/{id}/job/{build}""#)), "{page}");
    assert!(page.contains("needs build") && !page.contains("http-equiv=\"refresh\""), "{page}");
    // Laid out by stage: `broken` (needs build) in the second column.
    let second = page.split(r#"aria-label="Stage 2""#).nth(1).expect("a second stage");
    assert!(second.contains(">broken<") && !second.contains(">build<"), "{page}");
    let (status, page, _) = get(&http, &s, &format!("/admin/app/actions/runs/{id}/job/{build}"), None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("&lt;script&gt;alert(5)&lt;/script&gt;"), "{page}");
    assert!(page.contains(r#"<span class="c31">red</span> text"#) && !page.contains('\u{1b}'), "{page}");
    assert!(!without_own_scripts(&page).contains("<script"), "{page}");
    assert!(!page.contains("data-live-log") && !page.contains("live.js"), "a completed job's page is still: {page}");
    // The page's stream: the log from where the page's copy ended, then the job's end.
    let (status, events, headers) =
        get(&http, &s, &format!("/admin/app/actions/runs/{id}/job/{build}/stream?from=0:0"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/event-stream");
    assert!(events.contains("event: log") && events.contains("alert(5)"), "{events}");
    assert!(events.trim_end().ends_with("data: success"), "{events}");
    // The run page's buttons act only for a signed-in viewer (and then under the API's rules).
    let anonymous = post_form(http.post(s.url(&format!("/admin/app/actions/runs/{id}/rerun"))), &[("csrf", "x")])
        .send()
        .await
        .expect("post");
    assert_eq!(anonymous.status(), StatusCode::SEE_OTHER);
    assert!(!get(&http, &s, &format!("/admin/app/actions/runs/{id}"), None).await.1.contains("Re-run"));
    // A run of this repository under another repository's URL is not there.
    let (status, _, _) = get(&http, &s, &format!("/admin/other/actions/runs/{id}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    s.stop().await;
}

/// Signs `username` in through the login form; the cookies a browser would then send, and the
/// CSRF token its forms carry.
async fn sign_in(http: &reqwest::Client, s: &TestServer, username: &str, password: &str) -> (String, String) {
    let (_, _, headers) = get(http, s, "/login", None).await;
    let csrf = set_cookie(&headers, "gitstratum_csrf").expect("a CSRF cookie");
    let resp = post_form(
        http.post(s.url("/login")).header("cookie", format!("gitstratum_csrf={csrf}")),
        &[("csrf", csrf.as_str()), ("username", username), ("password", password)],
    )
    .send()
    .await
    .expect("post");
    assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{username} signs in");
    let session = set_cookie(resp.headers(), "gitstratum_session").expect("a session cookie");
    (format!("gitstratum_csrf={csrf}; gitstratum_session={session}"), csrf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_compare_branches_and_administration_pages() {
    let s = TestServer::start().await;
    let admin = Some(s.admin_token.as_str());
    for (name, is_admin) in [("mona", false), ("hubot", false), ("root", true)] {
        let user = json!({"username": name, "password": "octocat-1234", "admin": is_admin});
        assert_eq!(s.send(Method::POST, "/api/v1/users", admin, Some(user)).await.0, 201);
    }
    let (status, body) = s.create_repo(admin, json!({"name": "site"})).await;
    assert_eq!(status, 201, "{body}");
    let tmp = tempfile::tempdir().expect("temp dir");
    let git = Git::new(tmp.path());
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).expect("dir");
    git.ok(&src, &["init", "-q", "-b", "main"]).await;
    std::fs::write(src.join("lib.rs"), "fn main() {\n    let s = \"<script>alert(1)</script>\";\n}\n").expect("write");
    git.ok(&src, &["add", "-A"]).await;
    git.ok(&src, &["commit", "-q", "-m", "base"]).await;
    git.ok(&src, &["checkout", "-q", "-b", "topic#1"]).await;
    std::fs::write(src.join("topic.txt"), "topic work\n").expect("write");
    git.ok(&src, &["add", "-A"]).await;
    git.ok(&src, &["commit", "-q", "-m", "topic one"]).await;
    std::fs::write(src.join("topic.txt"), "topic work, more\n").expect("write");
    git.ok(&src, &["commit", "-q", "-am", "topic two"]).await;
    git.ok(&src, &["checkout", "-q", "main"]).await;
    std::fs::write(src.join("main.txt"), "main moves on\n").expect("write");
    git.ok(&src, &["add", "-A"]).await;
    git.ok(&src, &["commit", "-q", "-m", "main moves"]).await;
    let host = s.base.trim_start_matches("http://").to_owned();
    let push = format!("http://x:{}@{host}/admin/site.git", s.admin_token);
    git.ok(&src, &["push", "-q", &push, "main", "topic#1"]).await;
    let http = browser();
    let (mona, csrf) = sign_in(&http, &s, "mona", "octocat-1234").await;

    // The file page highlights Rust, as inert text.
    let (status, page, _) = get(&http, &s, "/admin/site/blob/main/lib.rs", None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains(r#"<span class="hl-storage">fn</span>"#) && page.contains("&lt;script&gt;"), "{page}");
    assert!(!page.contains("<script>"), "{page}");

    // Compare: the two commits the topic has (oldest first), the diff since the merge base.
    let (status, page, _) = get(&http, &s, "/admin/site/compare/main...topic%231", None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("is 2 commits ahead of and 1 behind"), "{page}");
    let (one, two) = (page.find("topic one").expect("one"), page.find("topic two").expect("two"));
    assert!(one < two, "oldest first");
    assert!(page.contains("topic.txt") && !page.contains("main.txt"), "only the topic's changes: {page}");
    // The branches page links the branch encoded (`#` is not a fragment) and offers no delete
    // button to someone who may not write.
    let (_, page, _) = get(&http, &s, "/admin/site/branches", Some(&mona)).await;
    assert!(page.contains(r#"href="/admin/site/tree/topic%231""#), "{page}");
    assert!(!page.contains("/branches/delete"), "{page}");
    // The ref switcher: the same folder or file at every branch and tag.
    git.ok(&src, &["tag", "v1.0", "main"]).await;
    git.ok(&src, &["push", "-q", &push, "v1.0"]).await;
    let (status, page, _) = get(&http, &s, "/admin/site/tree/topic%231", None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Branch: <strong>topic#1</strong>"), "{page}");
    assert!(page.contains(r#"<a href="/admin/site/tree/v1.0">v1.0</a>"#), "{page}");
    let (_, page, _) = get(&http, &s, "/admin/site/blob/v1.0/lib.rs", None).await;
    assert!(page.contains("Tag: <strong>v1.0</strong>"), "{page}");
    assert!(page.contains(r#"<a href="/admin/site/blob/topic%231/lib.rs">topic#1</a>"#), "{page}");

    // Settings: a 404 for a reader, the page for an admin.
    assert_eq!(get(&http, &s, "/admin/site/settings", Some(&mona)).await.0, StatusCode::NOT_FOUND);
    let grant = json!({"permission": "admin"});
    let (status, body) = s.send(Method::PUT, "/api/v1/repos/admin/site/collaborators/mona", admin, Some(grant)).await;
    assert!(status.is_success(), "{body}");
    let (status, page, _) = get(&http, &s, "/admin/site/settings", Some(&mona)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains(r#"href="/admin/site/settings" aria-current="page""#), "the Settings tab: {page}");
    let act = |action: &str, fields: Vec<(&'static str, String)>| {
        let mut all = vec![("csrf", csrf.clone())];
        all.extend(fields);
        let pairs: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
        post_form(http.post(s.url(&format!("/admin/site/settings/{action}"))).header("cookie", &mona), &pairs).send()
    };
    // A form without its token changes nothing.
    let refused = post_form(
        http.post(s.url("/admin/site/settings/visibility")).header("cookie", &mona),
        &[("csrf", "0".repeat(32).as_str()), ("private", "true")],
    )
    .send()
    .await
    .expect("post");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(s.send(Method::GET, "/api/v1/repos/admin/site", admin, None).await.1["private"], false);
    let done = act("visibility", vec![("private", "true".into())]).await.expect("post");
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    assert_eq!(s.send(Method::GET, "/api/v1/repos/admin/site", admin, None).await.1["private"], true);
    assert_eq!(get(&http, &s, "/admin/site", None).await.0, StatusCode::NOT_FOUND, "private now");
    let done = act("description", vec![("description", "Site <b>docs</b>".into())]).await.expect("post");
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    let (_, page, _) = get(&http, &s, "/admin/site", Some(&mona)).await;
    assert!(page.contains(r#"<p class="description">Site &lt;b&gt;docs&lt;/b&gt;</p>"#), "{page}");
    let bad = act("description", vec![("description", "x".repeat(400))]).await.expect("post");
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let done = act("collaborators", vec![("username", "hubot".into()), ("permission", "write".into())]).await;
    assert_eq!(done.expect("post").status(), StatusCode::SEE_OTHER);
    let (_, list) = s.send(Method::GET, "/api/v1/repos/admin/site/collaborators", admin, None).await;
    assert!(list.as_array().expect("list").iter().any(|c| c["username"] == "hubot" && c["permission"] == "write"));
    let unknown = act("collaborators", vec![("username", "nobody".into()), ("permission", "write".into())]).await;
    let unknown = unknown.expect("post");
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert!(unknown.text().await.expect("body").contains("no user named"), "the API's reason, on the page");
    let done = act("secrets", vec![("name", "DEPLOY_KEY".into()), ("value", "s3cr3t-value".into())]).await;
    assert_eq!(done.expect("post").status(), StatusCode::SEE_OTHER);
    let done = act("variables", vec![("name", "REGION".into()), ("value", "eu <west>".into())]).await;
    assert_eq!(done.expect("post").status(), StatusCode::SEE_OTHER);
    let bad_days = act("ci", vec![("log_retention_days", "0".into())]).await.expect("post");
    assert_eq!(bad_days.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let done = act("ci", vec![("log_retention_days", "7".into()), ("actions_shared", "true".into())]).await;
    assert_eq!(done.expect("post").status(), StatusCode::SEE_OTHER);
    let (_, ci) = s.send(Method::GET, "/api/v1/repos/admin/site/ci/settings", admin, None).await;
    assert_eq!((ci["log_retention_days"].as_i64(), ci["actions_shared"].as_bool()), (Some(7), Some(true)), "{ci}");
    // An internal address is refused as the API refuses it (the tests allow loopback only).
    let hook = act("hooks", vec![("url", "http://10.1.2.3/hook".into()), ("events", "push".into())]).await;
    assert_eq!(hook.expect("post").status(), StatusCode::UNPROCESSABLE_ENTITY);
    let hook = act("hooks", vec![("url", "http://127.0.0.1:9/hook".into()), ("events", "push".into())]).await;
    assert_eq!(hook.expect("post").status(), StatusCode::SEE_OTHER);
    let (_, hooks) = s.send(Method::GET, "/api/v1/repos/admin/site/hooks", admin, None).await;
    let hook_id = hooks[0]["id"].as_i64().expect("a webhook");
    let (status, page, _) = get(&http, &s, &format!("/admin/site/settings/hooks/{hook_id}"), Some(&mona)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Recent deliveries"), "{page}");
    let (_, page, _) = get(&http, &s, "/admin/site/settings", Some(&mona)).await;
    assert!(page.contains("hubot") && page.contains("DEPLOY_KEY") && page.contains("eu &lt;west&gt;"), "{page}");
    assert!(!page.contains("s3cr3t-value"), "secret values are never shown");
    assert!(page.contains(r#"name="log_retention_days" min="1" max="36500" value="7""#), "{page}");

    // Branch deletion (a writer; never the default branch), through the ref log.
    let (_, page, _) = get(&http, &s, "/admin/site/branches", Some(&mona)).await;
    assert!(page.contains("/admin/site/branches/delete"), "{page}");
    let delete = |branch: &'static str| {
        post_form(
            http.post(s.url("/admin/site/branches/delete")).header("cookie", &mona),
            &[("csrf", csrf.as_str()), ("branch", branch)],
        )
        .send()
    };
    assert_eq!(delete("main").await.expect("post").status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(delete("topic#1").await.expect("post").status(), StatusCode::SEE_OTHER);
    let remote = git.ok(&src, &["ls-remote", &push]).await;
    assert!(!remote.contains("topic") && remote.contains("refs/heads/main"), "{remote}");

    // Deleting the repository takes its full name typed out.
    let wrong = act("delete", vec![("confirm", "site".into())]).await.expect("post");
    assert_eq!(wrong.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let gone = act("delete", vec![("confirm", "admin/site".into())]).await.expect("post");
    assert_eq!(gone.status(), StatusCode::SEE_OTHER);
    assert_eq!(s.send(Method::GET, "/api/v1/repos/admin/site", admin, None).await.0, 404);

    // Site administration: only for site administrators.
    assert_eq!(get(&http, &s, "/-/admin/accounts", Some(&mona)).await.0, StatusCode::NOT_FOUND);
    let (root, root_csrf) = sign_in(&http, &s, "root", "octocat-1234").await;
    let (status, page, _) = get(&http, &s, "/-/admin/accounts", Some(&root)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains(r#"action="/-/admin/accounts/hubot/suspend""#), "{page}");
    let suspended = post_form(
        http.post(s.url("/-/admin/accounts/hubot/suspend")).header("cookie", &root),
        &[("csrf", root_csrf.as_str())],
    )
    .send()
    .await
    .expect("post");
    assert_eq!(suspended.status(), StatusCode::SEE_OTHER);
    let (_, page, _) = get(&http, &s, "/-/admin/audit?action=user.suspend", Some(&root)).await;
    assert!(page.contains("user:hubot") && !page.contains("repo.delete"), "filtered: {page}");
    let (_, page, _) = get(&http, &s, "/-/admin/audit?actor=mona", Some(&root)).await;
    assert!(page.contains("repo.delete") || page.contains("secret"), "{page}");

    // Team grants of an organization's repository: listed for its admins, granted by the
    // organization's owners (and site administrators), as the API decides.
    assert_eq!(s.send(Method::POST, "/api/v1/orgs", admin, Some(json!({"name": "acme"}))).await.0, 201);
    assert_eq!(s.create_repo(admin, json!({"name": "tools", "owner": "acme"})).await.0, 201);
    let team = json!({"name": "core"});
    assert_eq!(s.send(Method::POST, "/api/v1/orgs/acme/teams", admin, Some(team)).await.0, 201);
    let grant = json!({"permission": "admin"});
    let (status, body) = s.send(Method::PUT, "/api/v1/repos/acme/tools/collaborators/mona", admin, Some(grant)).await;
    assert!(status.is_success(), "{body}");
    let (_, page, _) = get(&http, &s, "/acme/tools/settings", Some(&mona)).await;
    assert!(page.contains("Team access is granted by the owners of acme"), "{page}");
    assert!(!page.contains(r#"action="/acme/tools/settings/teams""#), "{page}");
    let team_act = |who: &String, token: &String, action: &str, fields: &[(&str, &str)]| {
        let mut all = vec![("csrf", token.as_str())];
        all.extend_from_slice(fields);
        post_form(http.post(s.url(&format!("/acme/tools/settings/{action}"))).header("cookie", who), &all).send()
    };
    let refused = team_act(&mona, &csrf, "teams", &[("team", "core"), ("permission", "write")]).await;
    assert_eq!(refused.expect("post").status(), StatusCode::NOT_FOUND, "mona is no member of acme");
    let (_, page, _) = get(&http, &s, "/acme/tools/settings", Some(&root)).await;
    assert!(page.contains(r#"action="/acme/tools/settings/teams""#) && page.contains("No team has been granted"));
    let done = team_act(&root, &root_csrf, "teams", &[("team", "core"), ("permission", "write")]).await;
    assert_eq!(done.expect("post").status(), StatusCode::SEE_OTHER);
    let (_, teams) = s.send(Method::GET, "/api/v1/repos/acme/tools/teams", admin, None).await;
    assert_eq!(teams, json!([{"name": "core", "permission": "write"}]));
    let (_, page, _) = get(&http, &s, "/acme/tools/settings", Some(&mona)).await;
    assert!(page.contains("<td>core</td><td>write</td>"), "{page}");
    let done = team_act(&root, &root_csrf, "remove-team", &[("team", "core")]).await;
    assert_eq!(done.expect("post").status(), StatusCode::SEE_OTHER);
    assert_eq!(s.send(Method::GET, "/api/v1/repos/acme/tools/teams", admin, None).await.1, json!([]));

    // Password: the current one is asked again; the new one works; other sessions end.
    let (other, _) = sign_in(&http, &s, "mona", "octocat-1234").await;
    let change = |current: &'static str, new: &'static str, confirm: &'static str| {
        post_form(
            http.post(s.url("/settings/password")).header("cookie", &mona),
            &[("csrf", csrf.as_str()), ("current", current), ("new", new), ("confirm", confirm)],
        )
        .send()
    };
    assert_eq!(change("wrong-one", "new-password-1", "new-password-1").await.expect("post").status(), 401);
    assert_eq!(change("octocat-1234", "new-password-1", "different").await.expect("post").status(), 422);
    assert_eq!(change("octocat-1234", "short", "short").await.expect("post").status(), 422);
    assert_eq!(change("octocat-1234", "new-password-1", "new-password-1").await.expect("post").status(), 200);
    assert!(!get(&http, &s, "/", Some(&other)).await.1.contains("Sign out"), "the other session ended");
    assert!(get(&http, &s, "/", Some(&mona)).await.1.contains("Sign out"), "this one goes on");
    sign_in(&http, &s, "mona", "new-password-1").await;
    s.stop().await;
}

/// Pull requests in the browser: a fork made from the repository's page, a pull request opened
/// from a comparison, listed, shown with its checks, merge box and timeline, reviewed, commented
/// on a line (shown under that line of the diff), and merged by a writer — every form through
/// the API's rules, everything a user wrote shown inert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_request_pages_open_review_comment_and_merge() {
    let s = TestServer::start().await;
    let admin = Some(s.admin_token.as_str());
    for (name, is_admin) in [("mona", false), ("root", true)] {
        let user = json!({"username": name, "password": "octocat-1234", "admin": is_admin});
        assert_eq!(s.send(Method::POST, "/api/v1/users", admin, Some(user)).await.0, 201);
    }
    let (status, body) = s.create_repo(admin, json!({"name": "site"})).await;
    assert_eq!(status, 201, "{body}");
    let tmp = tempfile::tempdir().expect("temp dir");
    let git = Git::new(tmp.path());
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).expect("dir");
    git.ok(&src, &["init", "-q", "-b", "main"]).await;
    std::fs::write(src.join("a.txt"), "one\ntwo\nthree\n").expect("write");
    git.ok(&src, &["add", "-A"]).await;
    git.ok(&src, &["commit", "-q", "-m", "base"]).await;
    git.ok(&src, &["checkout", "-q", "-b", "topic"]).await;
    std::fs::write(src.join("topic.txt"), "topic work\nsecond line\n").expect("write");
    git.ok(&src, &["add", "-A"]).await;
    git.ok(&src, &["commit", "-q", "-m", "<script>alert(1)</script> topic"]).await;
    let host = s.base.trim_start_matches("http://").to_owned();
    git.ok(&src, &["push", "-q", &format!("http://x:{}@{host}/admin/site.git", s.admin_token), "main", "topic"]).await;
    let http = browser();
    let (mona_cookie, mona_csrf) = sign_in(&http, &s, "mona", "octocat-1234").await;
    let mona = (mona_cookie.as_str(), mona_csrf.as_str());
    let post = |path: &str, (cookie, csrf): (&str, &str), fields: &[(&str, &str)]| {
        let mut all = vec![("csrf", csrf)];
        all.extend_from_slice(fields);
        post_form(http.post(s.url(path)).header("cookie", cookie), &all).send()
    };

    // A fork from the repository's page.
    let (_, page, _) = get(&http, &s, "/admin/site", Some(mona.0)).await;
    assert!(page.contains(r#"action="/admin/site/fork""#), "a Fork button: {page}");
    let forked = post("/admin/site/fork", mona, &[]).await.expect("fork");
    assert_eq!(forked.status(), StatusCode::SEE_OTHER);
    assert_eq!(forked.headers()["location"], "/mona/site");
    let (status, page, _) = get(&http, &s, "/mona/site", Some(mona.0)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains(r#"Forked from <a href="/admin/site">admin/site</a>"#) && page.contains(">fork<"), "{page}");

    // A pull request from the comparison page; a form without its token changes nothing.
    let (_, page, _) = get(&http, &s, "/admin/site/compare/main...topic", Some(mona.0)).await;
    assert!(page.contains("Open a pull request") && page.contains(r#"action="/admin/site/pulls""#), "{page}");
    let fields =
        [("base", "main"), ("head", "topic"), ("title", "<b>Topic</b>"), ("body", "**bold** <script>x</script>")];
    let mut forged = vec![("csrf", "0".repeat(32))];
    forged.extend(fields.iter().map(|(k, v)| (*k, v.to_string())));
    let pairs: Vec<(&str, &str)> = forged.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let refused =
        post_form(http.post(s.url("/admin/site/pulls")).header("cookie", mona.0), &pairs).send().await.expect("post");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let opened = post("/admin/site/pulls", mona, &fields).await.expect("open");
    assert_eq!(opened.status(), StatusCode::SEE_OTHER);
    assert_eq!(opened.headers()["location"], "/admin/site/pull/1");
    let (status, page, _) = get(&http, &s, "/admin/site/pulls", None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains(r#"href="/admin/site/pull/1">&lt;b&gt;Topic&lt;/b&gt;</a>"#), "{page}");

    // The conversation: escaped title, rendered description, no merge button for a reader.
    let (status, page, _) = get(&http, &s, "/admin/site/pull/1", Some(mona.0)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("wants to merge") && page.contains("admin:topic"), "{page}");
    assert!(page.contains("<strong>bold</strong>") && page.contains("&lt;script&gt;x&lt;/script&gt;"), "{page}");
    assert!(page.contains("no conflicts") && !page.contains("Merge pull request"), "{page}");
    assert!(!without_own_scripts(&page).contains("<script"), "{page}");
    let reviewed = post("/admin/site/pull/1/review", mona, &[("event", "COMMENT"), ("body", "looks *good*")]).await;
    assert_eq!(reviewed.expect("review").status(), StatusCode::SEE_OTHER);

    // A line comment, shown under its line of the diff; a line the file lacks is refused.
    let commented = post(
        "/admin/site/pull/1/comment",
        mona,
        &[("path", "topic.txt"), ("line", "2"), ("body", "why a *second* line?")],
    )
    .await
    .expect("comment");
    assert_eq!(commented.status(), StatusCode::SEE_OTHER);
    assert_eq!(commented.headers()["location"], "/admin/site/pull/1/files");
    let (status, page, _) = get(&http, &s, "/admin/site/pull/1/files", Some(mona.0)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let line = page.find("second line").expect("the line");
    let note = page.find("why a <em>second</em> line?").expect("the comment");
    assert!(line < note && page[line..note].contains(r#"<tr class="comments">"#), "under its line: {page}");
    let bad = post("/admin/site/pull/1/comment", mona, &[("path", "topic.txt"), ("line", "9"), ("body", "x")]).await;
    let bad = bad.expect("comment");
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.text().await.expect("page").contains("has 2 lines"));

    // A writer merges; the timeline says so.
    let (root_cookie, root_csrf) = sign_in(&http, &s, "root", "octocat-1234").await;
    let root = (root_cookie.as_str(), root_csrf.as_str());
    let (_, page, _) = get(&http, &s, "/admin/site/pull/1", Some(root.0)).await;
    assert!(page.contains("Merge pull request"), "{page}");
    let merged = post("/admin/site/pull/1/merge", root, &[("merge_method", "squash")]).await.expect("merge");
    assert_eq!(merged.status(), StatusCode::SEE_OTHER);
    let (_, page, _) = get(&http, &s, "/admin/site/pull/1", Some(root.0)).await;
    assert!(page.contains("Merged by root") && page.contains("merged this pull request"), "{page}");
    assert!(page.contains("reviewed") && page.contains("commented on <code>topic.txt</code>"), "{page}");
    let (_, pr) = s.send(Method::GET, "/api/v1/repos/admin/site/pulls/1", admin, None).await;
    assert_eq!(pr["merged"], true, "{pr}");
    // The merged head branch, deleted from the pull request's page.
    assert!(page.contains("Delete branch"), "{page}");
    let deleted = post("/admin/site/pull/1/delete-branch", root, &[]).await.expect("delete");
    assert_eq!(deleted.status(), StatusCode::SEE_OTHER);
    let listing = git.ok(&src, &["ls-remote", &format!("http://x:{}@{host}/admin/site.git", s.admin_token)]).await;
    assert!(!listing.contains("refs/heads/topic") && listing.contains("refs/heads/main"), "{listing}");
    s.stop().await;
}
