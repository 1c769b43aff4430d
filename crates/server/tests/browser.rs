//! The web UI in a real headless Chromium (Debian's `chromium` and `chromium-driver`, installed
//! by scripts/test.sh), driven over WebDriver with plain HTTP requests: signing in, browsing a
//! repository the real git client pushed, hostile content staying inert (no dialog, no injected
//! element), and a running job's log lines appearing without a reload. Screenshots of the pages
//! go to `<target>/tmp/web-screenshots/` for a reviewer to look at.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

mod common;
use common::{Git, TestServer};

/// A Chromium session through chromedriver.
struct Browser {
    http: reqwest::Client,
    session: String,
    driver: String,
    child: std::process::Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// `None` (the test is skipped, saying so) when chromedriver is not installed outside CI.
    async fn start() -> Option<Browser> {
        let installed = std::path::Path::new("/usr/bin/chromedriver").exists()
            && std::path::Path::new("/usr/bin/chromium").exists();
        if !installed {
            assert!(std::env::var_os("CI").is_none(), "CI is set but chromium/chromedriver are not installed");
            eprintln!("skipped: chromium and chromium-driver are not installed (scripts/test.sh installs them)");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let child = std::process::Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromedriver runs");
        let driver = format!("http://127.0.0.1:{port}");
        let http = gitstratum_server::http::client().expect("client");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !http.get(format!("{driver}/status")).send().await.is_ok_and(|r| r.status().is_success()) {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().expect("profile dir");
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--no-first-run".to_owned(),
            "--window-size=1280,900".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}
        }}});
        let resp: Value = http
            .post(format!("{driver}/session"))
            .json(&caps)
            .send()
            .await
            .expect("session")
            .json()
            .await
            .expect("json");
        let session = resp["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {resp}")).to_owned();
        Some(Browser { http, session, driver, child, _profile: profile })
    }

    async fn cmd(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.driver, self.session);
        let mut req = self.http.request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.expect("webdriver").json::<Value>().await.expect("json")
    }

    async fn goto(&self, url: &str) {
        let out = self.cmd(Method::POST, "/url", Some(json!({"url": url}))).await;
        assert!(out["value"].is_null(), "navigating to {url}: {out}");
    }

    /// Runs `script` in the page and returns its value.
    async fn js(&self, script: &str) -> Value {
        let out = self.cmd(Method::POST, "/execute/sync", Some(json!({"script": script, "args": []}))).await;
        out["value"].clone()
    }

    /// Types `keys` (one key each character) as a person would, to the focused element.
    async fn keys(&self, keys: &str) {
        let actions: Vec<Value> = keys
            .chars()
            .flat_map(|c| {
                [json!({"type": "keyDown", "value": c.to_string()}), json!({"type": "keyUp", "value": c.to_string()})]
            })
            .collect();
        let body = json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]});
        let out = self.cmd(Method::POST, "/actions", Some(body)).await;
        assert!(out["value"].is_null(), "typing {keys:?}: {out}");
    }

    /// Whether a dialog (`alert`, `confirm`) is open: hostile content must never open one.
    async fn dialog_open(&self) -> bool {
        let out = self.cmd(Method::GET, "/alert/text", None).await;
        out["value"]["error"] != "no such alert"
    }

    /// Waits until `script` returns true.
    async fn until(&self, what: &str, script: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.js(script).await == json!(true) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn screenshot(&self, name: &str) {
        let out = self.cmd(Method::GET, "/screenshot", None).await;
        let Some(png) = out["value"].as_str() else { return };
        use base64::Engine;
        let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(png) else { return };
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-screenshots");
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join(format!("{name}.png")), bytes);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const README: &str = "# Hello\n\n<script>window.pwned = 1; alert('readme')</script>\n\n\
<img src=x onerror=\"alert('img')\">\n\n[click me](javascript:alert('link'))\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_browser_signs_in_browses_and_watches_a_log_live() {
    let Some(browser) = Browser::start().await else { return };
    let s = TestServer::start_with(gitstratum_server::ConfigLayer {
        embedded_runner: Some("true".into()),
        ..Default::default()
    })
    .await;
    let admin = s.admin_token.clone();
    let user = json!({"username": "mona", "password": "octocat-1234"});
    assert_eq!(s.send(Method::POST, "/api/v1/users", Some(&admin), Some(user)).await.0, 201);
    let (status, body) = s.create_repo(Some(&admin), json!({"name": "site"})).await;
    assert_eq!(status, 201, "{body}");
    let tmp = tempfile::tempdir().expect("temp dir");
    let git = Git::new(tmp.path());
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).expect("dir");
    git.ok(&src, &["init", "-q", "-b", "main"]).await;
    std::fs::write(src.join("README.md"), README).expect("write");
    let code: String = (1..=30).map(|i| format!("fn line_{i}() {{}}\n")).collect();
    std::fs::write(src.join("code.rs"), code).expect("write");
    std::fs::write(src.join("<img src=x onerror=alert('name')>.txt"), "x\n").expect("write");
    git.ok(&src, &["add", "-A"]).await;
    git.ok(&src, &["commit", "-q", "-m", "<img src=x onerror=alert('message')> first"]).await;
    let host = s.base.trim_start_matches("http://").to_owned();
    let push = format!("http://x:{admin}@{host}/admin/site.git");
    git.ok(&src, &["push", "-q", &push, "main"]).await;

    // Sign in through the form.
    browser.goto(&s.url("/login")).await;
    browser.screenshot("login").await;
    browser
        .js("document.getElementById('username').value = 'mona'; document.getElementById('password').value = 'octocat-1234'; document.querySelector('form.stack').submit(); return true;")
        .await;
    browser
        .until(
            "the signed-in home page",
            "return location.pathname === '/' && document.body.innerText.includes('Sign out');",
        )
        .await;
    browser.screenshot("home").await;

    // A token, made from the settings page, shown once.
    browser.goto(&s.url("/settings/tokens")).await;
    browser
        .js("document.getElementById('token-name').value = 'laptop'; document.getElementById('scope-repo:read').checked = true; document.querySelector('form.stack').submit(); return true;")
        .await;
    browser
        .until(
            "the new token",
            "const t = document.getElementById('new-token'); return !!t && t.value.startsWith('gst_');",
        )
        .await;
    browser.screenshot("tokens").await;
    browser.goto(&s.url("/settings/tokens")).await;
    assert_eq!(
        browser
            .js("return document.getElementById('new-token') === null && document.body.innerText.includes('laptop');")
            .await,
        json!(true)
    );

    // The repository's home: the README rendered, nothing of it running.
    browser.goto(&s.url("/admin/site")).await;
    browser.until("the repository page", "return document.readyState === 'complete';").await;
    assert!(!browser.dialog_open().await, "a dialog opened on the repository page");
    assert_eq!(browser.js("return window.pwned === undefined;").await, json!(true));
    assert_eq!(
        browser.js("return document.querySelectorAll('main script, main img[src=\"x\"]').length;").await,
        json!(0)
    );
    assert_eq!(browser.js("return document.querySelector('.markdown a').getAttribute('href');").await, json!("#"));
    browser.screenshot("repository").await;

    // Down to a file and back, by clicking.
    browser.js("document.querySelector('a[href$=\"/blob/main/code.rs\"]').click(); return true;").await;
    browser
        .until(
            "the file page",
            "return location.pathname.endsWith('/blob/main/code.rs') && !!document.getElementById('L30');",
        )
        .await;
    browser.screenshot("file").await;
    browser.js("history.back(); return true;").await;
    browser.until("the repository page again", "return location.pathname === '/admin/site';").await;
    // A range of lines, as a link names it.
    browser.goto(&s.url("/admin/site/blob/main/code.rs#L3-L5")).await;
    browser.until("the marked range", "return document.querySelectorAll('table.code tr.selected').length === 3 && document.getElementById('L4').classList.contains('selected');").await;
    let commit = git.ok(&src, &["rev-parse", "HEAD"]).await.trim().to_owned();
    browser.goto(&s.url(&format!("/admin/site/commit/{commit}"))).await;
    browser.until("the commit page", "return document.querySelectorAll('table.diff tr.add').length > 30;").await;
    assert!(!browser.dialog_open().await, "a dialog opened on the commit page");
    browser.screenshot("commit").await;

    // A pull request opened from the comparison page, and a comment on a line of its diff.
    git.ok(&src, &["checkout", "-q", "-b", "topic"]).await;
    let code: String = (1..=30)
        .map(|i| if i == 3 { "fn line_three() {}\n".to_owned() } else { format!("fn line_{i}() {{}}\n") })
        .collect();
    std::fs::write(src.join("code.rs"), code).expect("write");
    git.ok(&src, &["commit", "-q", "-am", "Rename line 3"]).await;
    git.ok(&src, &["push", "-q", &push, "topic"]).await;
    git.ok(&src, &["checkout", "-q", "main"]).await;
    browser.goto(&s.url("/admin/site/compare/main...topic")).await;
    browser
        .js("document.getElementById('pull-body').value = 'Renames **line 3**.'; document.querySelector('form.new-pull').submit(); return true;")
        .await;
    browser.until("the pull request", "return location.pathname === '/admin/site/pull/1';").await;
    assert!(!browser.dialog_open().await, "a dialog opened on the pull request page");
    browser.screenshot("pull").await;
    browser.goto(&s.url("/admin/site/pull/1/files")).await;
    browser
        .js("document.getElementById('comment-line').value = '3'; document.getElementById('comment-body').value = 'Why *three*?'; document.getElementById('comment-body').form.submit(); return true;")
        .await;
    browser
        .until("the comment under its line", "return !!document.querySelector('table.diff tr.comments em') && document.querySelector('table.diff tr.comments').innerText.includes('Why three?');")
        .await;
    browser.screenshot("pull-files").await;

    // A workflow whose job prints a line every half second: its page shows them as they come.
    std::fs::create_dir_all(src.join(".github/workflows")).expect("dir");
    std::fs::write(
        src.join(".github/workflows/ci.yml"),
        concat!(
            "on: push\njobs:\n  ticks:\n    runs-on: ubuntu-latest\n    steps:\n      - name: Tick\n        run: |\n",
            "          echo '::group::Setup <b>things</b>'\n          echo 'inside the group'\n          echo '::endgroup::'\n",
            "          for i in 1 2 3 4 5 6 7 8; do printf '\\033[32mtick %s\\033[0m <b>bold</b>\\n' $i; sleep 0.5; done\n",
            "  flaky:\n    runs-on: ubuntu-latest\n    steps:\n      - name: Fails the first time\n",
            "        run: test \"${{ github.run_attempt }}\" != 1\n",
            "  sizes:\n    runs-on: ubuntu-latest\n    strategy:\n      matrix:\n        n: [1, 2]\n",
            "    needs: ticks\n    steps:\n      - run: echo size ${{ matrix.n }}\n",
        ),
    )
    .expect("write");
    git.ok(&src, &["add", "-A"]).await;
    git.ok(&src, &["commit", "-q", "-m", "ci"]).await;
    git.ok(&src, &["push", "-q", &push, "main"]).await;
    let (run, job) = loop {
        let (_, page) = s.send(Method::GET, "/api/v1/repos/admin/site/runs", Some(&admin), None).await;
        if let Some(id) = page["runs"][0]["id"].as_i64() {
            let (_, detail) = s.send(Method::GET, &format!("/api/v1/runs/{id}"), Some(&admin), None).await;
            let ticks = detail["jobs"].as_array().and_then(|jobs| jobs.iter().find(|j| j["name"] == "ticks"));
            if let Some(ticks) = ticks.filter(|j| j["status"] == "in_progress") {
                break (id, ticks["id"].as_i64().expect("job"));
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    browser.goto(&s.url(&format!("/admin/site/actions/runs/{run}/job/{job}"))).await;
    browser.js("window.__loaded_once = 42; return true;").await;
    // New lines arrive while the page stays the same page (no reload: the marker survives).
    browser
        .until(
            "log lines appearing without a reload",
            "return window.__loaded_once === 42 && document.body.innerText.includes('tick 6 <b>bold</b>');",
        )
        .await;
    browser.screenshot("job-live").await;
    assert!(!browser.dialog_open().await);
    // Live lines keep their colours as classes, and the group folds its lines under its title.
    assert_eq!(browser.js("return document.querySelectorAll('div.log span.c32').length >= 6;").await, json!(true));
    assert_eq!(
        browser
            .js("const g = [...document.querySelectorAll('div.log details.group')].find(d => d.querySelector('summary').textContent.includes('Setup <b>things</b>')); return !!g && !g.open && g.textContent.includes('inside the group') && document.querySelectorAll('div.log b').length === 0;")
            .await,
        json!(true)
    );
    // At its end the page shows the job's outcome.
    browser
        .until(
            "the finished job",
            "return document.body.innerText.includes('✓ success') && !document.querySelector('[data-live-log]');",
        )
        .await;
    // Rendered by the server now: the group still folded, the colours still there.
    assert_eq!(
        browser.js("return !!document.querySelector('div.log details.group summary') && document.querySelectorAll('div.log span.c32').length === 8;").await,
        json!(true)
    );
    browser.screenshot("job-done").await;
    // Each line's time, when asked for: the runner stamped every line it wrote.
    browser.goto(&s.url(&format!("/admin/site/actions/runs/{run}/job/{job}?timestamps=1"))).await;
    assert_eq!(
        browser
            .js("const t = [...document.querySelectorAll('div.log time.ts')]; return t.length >= 10 && t.every(e => /^\\d\\d:\\d\\d:\\d\\d$/.test(e.textContent) && e.dateTime.endsWith('Z'));")
            .await,
        json!(true)
    );
    browser.js("for (const d of document.querySelectorAll('details.step')) d.open = true; return true;").await;
    browser.screenshot("job-timestamps").await;
    browser.goto(&s.url(&format!("/admin/site/actions/runs/{run}"))).await;
    browser.until("the finished run", "return !document.querySelector('[data-live-run]');").await;
    // The graph: `sizes` needs `ticks`, so it stands in the next column with a line drawn to it.
    browser.until("the needs edge", "return document.querySelectorAll('div.graph section.stage').length === 2 && document.querySelectorAll('div.graph svg.edges path').length === 1;").await;
    browser.screenshot("run").await;
    // Keyboard: `?` lists the page's shortcuts; `g` `c` goes to the code.
    browser.keys("?").await;
    browser.until("the shortcuts", "const d = document.querySelector('dialog.shortcuts'); return !!d && d.open && d.textContent.includes('Actions');").await;
    browser.screenshot("shortcuts").await;
    browser.keys("\u{e00c}").await; // Escape closes it.
    browser.until("the shortcuts closed", "return !document.querySelector('dialog.shortcuts').open;").await;
    browser.keys("gc").await;
    browser.until("the code page", "return location.pathname === '/admin/site';").await;
    browser.goto(&s.url(&format!("/admin/site/actions/runs/{run}"))).await;
    // The matrix's two jobs are grouped under its key.
    assert_eq!(
        browser
            .js("const m = document.querySelector('li.matrix summary'); return !!m && m.textContent.includes('sizes') && m.textContent.includes('2 jobs') && document.querySelectorAll('li.matrix li[data-job]').length === 2;")
            .await,
        json!(true)
    );
    // Mona may read but not write: no buttons. Granted write, she re-runs the run from its page.
    assert_eq!(browser.js("return document.querySelectorAll('div.actions button').length;").await, json!(0));
    let (status, body) = s
        .send(
            Method::PUT,
            "/api/v1/repos/admin/site/collaborators/mona",
            Some(&admin),
            Some(json!({"permission": "write"})),
        )
        .await;
    assert!(status.is_success(), "{body}");
    // The run failed (the flaky job's first attempt): re-run only the failed job from the page.
    browser.goto(&s.url(&format!("/admin/site/actions/runs/{run}"))).await;
    browser.until("the failed run", "return document.body.innerText.includes('Re-run failed jobs');").await;
    browser
        .js("const b = [...document.querySelectorAll('div.actions button')].find(b => b.textContent === 'Re-run failed jobs'); b.click(); return true;")
        .await;
    browser.until("the re-run's new attempt", "return document.body.innerText.includes('attempt 2');").await;
    let detail = loop {
        let (_, detail) = s.send(Method::GET, &format!("/api/v1/runs/{run}"), Some(&admin), None).await;
        if detail["status"] == "completed" {
            break detail;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let attempt = |name: &str| {
        detail["jobs"].as_array().expect("jobs").iter().find(|j| j["name"] == name).map(|j| j["attempt"].clone())
    };
    assert_eq!((attempt("ticks"), attempt("flaky")), (Some(json!(1)), Some(json!(2))), "{detail}");
    assert_eq!(detail["conclusion"], "success", "{detail}");
    browser.goto(&s.url("/admin/site/actions")).await;
    browser.screenshot("runs").await;
    let _ = browser.cmd(Method::DELETE, "", None).await;
    s.stop().await;
}
