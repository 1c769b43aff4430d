//! The in-process test server shared by the integration tests.

#![allow(dead_code)] // each test binary uses a different part

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use gitstratum_server::{Config, ConfigLayer, Server};
use metrics_exporter_prometheus::PrometheusHandle;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = gitstratum_server::metrics_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).expect("first and only recorder in this process");
            handle
        })
        .clone()
}

/// The settings that put a server's blobs in `c`'s object storage (`[object_storage]`).
pub fn object_storage_layer(c: &gitstratum_ci::blob::s3::S3Config) -> ConfigLayer {
    ConfigLayer {
        object_storage_endpoint: Some(c.endpoint.clone()),
        object_storage_bucket: Some(c.bucket.clone()),
        object_storage_region: Some(c.region.clone()),
        object_storage_access_key_id: Some(c.access_key_id.clone()),
        object_storage_secret_access_key: Some(c.secret_access_key.clone()),
        object_storage_prefix: Some(c.prefix.clone()),
        ..ConfigLayer::default()
    }
}

pub struct TestServer {
    pub base: String,
    pub admin_token: String,
    pub data_dir: tempfile::TempDir,
    pub shutdown: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<Result<(), gitstratum_server::Error>>,
    pub http: reqwest::Client,
    /// The port Git over SSH listens on, when the server was started with it.
    pub ssh_port: Option<u16>,
}

impl TestServer {
    /// A server without the embedded runner (so jobs stay where the ingestor put them).
    pub async fn start() -> TestServer {
        TestServer::start_with(ConfigLayer::default()).await
    }

    /// A server with `file` as its `config.toml` layer (the embedded runner off unless it says).
    pub async fn start_with(file: ConfigLayer) -> TestServer {
        TestServer::start_full(file, false).await
    }

    /// A server that also serves Git over SSH (on a port of its own, in `ssh_port`).
    pub async fn start_with_ssh(file: ConfigLayer) -> TestServer {
        TestServer::start_full(file, true).await
    }

    async fn start_full(file: ConfigLayer, ssh: bool) -> TestServer {
        let file = ConfigLayer {
            embedded_runner: file.embedded_runner.or(Some("false".into())),
            // Tests deliver webhooks to receivers on this machine (unless a test says otherwise).
            webhook_allowed_hosts: file.webhook_allowed_hosts.or(Some("127.0.0.1,::1".into())),
            ..file
        };
        let data_dir = tempfile::tempdir().expect("temp dir");
        let flags = ConfigLayer { data_dir: Some(data_dir.path().to_owned()), ..ConfigLayer::default() };
        let config = Config::from_layers(file, ConfigLayer::default(), flags).expect("config");
        let mut server = Server::open(config, metrics_handle()).await.expect("open");
        let mut ssh_port = None;
        if ssh {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind ssh");
            ssh_port = Some(listener.local_addr().expect("addr").port());
            server = server.with_ssh_listener(listener);
        }
        let admin_token = server.initial_admin_token.as_ref().expect("fresh data dir").expose().to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(listener, async move {
            let _ = rx.await;
        }));
        TestServer {
            base,
            admin_token,
            data_dir,
            shutdown: Some(tx),
            task,
            http: gitstratum_server::http::client().expect("client"),
            ssh_port,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) })
    }

    pub async fn create_repo(&self, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::POST, "/api/v1/repos", token, Some(body)).await
    }

    pub async fn stop(mut self) -> tempfile::TempDir {
        let _ = self.shutdown.take().expect("running").send(());
        self.task.await.expect("join").expect("clean shutdown");
        self.data_dir
    }

    /// Creates a user with the given scopes directly in the store (the users API arrives with the
    /// platform issue) and returns a token for it.
    pub async fn user_token(&self, name: &str, scopes: &[gitstratum_platform::Scope]) -> String {
        let store = gitstratum_platform::PlatformStore::open(&gitstratum_platform::DbTarget::Sqlite {
            path: self.data_dir.path().join("platform.db"),
        })
        .await
        .expect("store");
        let now = gitstratum_core::Timestamp(0);
        let account = match store.find_account(name).await.expect("find") {
            Some(a) => a,
            None => store.create_user(name, false, &gitstratum_platform::Actor::system(), now).await.expect("user"),
        };
        let new = gitstratum_platform::NewToken {
            name: "test".into(),
            scopes: gitstratum_platform::Scopes::new(scopes.iter().copied()),
            expires_at: None,
        };
        store
            .create_token(account.id, &new, &gitstratum_platform::Actor::system(), now)
            .await
            .expect("token")
            .1
            .expose()
            .to_owned()
    }
}

/// Runs `git` with an isolated configuration, on the blocking pool (the server shares the runtime).
#[derive(Clone)]
pub struct Git {
    pub home: PathBuf,
}

impl Git {
    pub fn new(root: &Path) -> Git {
        let home = root.join("home");
        std::fs::create_dir_all(&home).expect("home");
        Git { home }
    }

    pub async fn run(&self, dir: &Path, args: &[&str]) -> Output {
        self.run_env(dir, args, &[]).await
    }

    pub async fn run_env(&self, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
        let (home, dir) = (self.home.clone(), dir.to_owned());
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        tokio::task::spawn_blocking(move || {
            Command::new("git")
                .args(&args)
                .envs(env)
                .current_dir(&dir)
                .env("HOME", &home)
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_TERMINAL_PROMPT", "0")
                .env("GIT_AUTHOR_NAME", "A U Thor")
                .env("GIT_AUTHOR_EMAIL", "author@example.com")
                .env("GIT_COMMITTER_NAME", "C O Mitter")
                .env("GIT_COMMITTER_EMAIL", "committer@example.com")
                .output()
                .expect("git runs")
        })
        .await
        .expect("join")
    }

    pub async fn ok(&self, dir: &Path, args: &[&str]) -> String {
        let out = self.run(dir, args).await;
        assert!(out.status.success(), "git {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub async fn fails(&self, dir: &Path, args: &[&str]) -> String {
        let out = self.run(dir, args).await;
        assert!(!out.status.success(), "git {args:?} should have failed");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// A new repository with `n` commits on `main`.
    pub async fn repo_with_commits(&self, dir: &Path, n: usize) {
        std::fs::create_dir_all(dir).expect("dir");
        self.ok(dir, &["init", "-q", "-b", "main"]).await;
        for i in 0..n {
            let text: String =
                (0..200).map(|l| format!("line {l} {}\n", if l == i { "changed" } else { "" })).collect();
            std::fs::write(dir.join("file.txt"), text).expect("write");
            std::fs::write(dir.join(format!("f{i}.txt")), format!("{i}\n")).expect("write");
            self.ok(dir, &["add", "-A"]).await;
            self.ok(dir, &["commit", "-q", "-m", &format!("commit {i}")]).await;
        }
    }

    /// `git fsck --strict` passes and prints nothing alarming.
    pub async fn fsck(&self, dir: &Path) {
        let out = self.run(dir, &["fsck", "--strict", "--no-dangling"]).await;
        assert!(
            out.status.success(),
            "fsck failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A webhook receiver on loopback: every request's headers and body go to the channel; it answers
/// with the status in the returned atomic.
pub struct Receiver {
    pub url: String,
    pub requests: tokio::sync::mpsc::UnboundedReceiver<(axum::http::HeaderMap, String)>,
    pub answer: std::sync::Arc<std::sync::atomic::AtomicU16>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        use axum::http::HeaderMap;
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU16, Ordering};
        let (tx, requests) = tokio::sync::mpsc::unbounded_channel::<(HeaderMap, String)>();
        let answer = Arc::new(AtomicU16::new(200));
        let status = answer.clone();
        let receiver = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let tx = tx.clone();
                let status = status.clone();
                async move {
                    // Decide the answer before reporting the request, so the test's next change of
                    // `answer` cannot reach this request.
                    let answer = axum::http::StatusCode::from_u16(status.load(Ordering::SeqCst)).expect("status");
                    let _ = tx.send((headers, body));
                    answer
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, receiver).await });
        Receiver { url, requests, answer }
    }

    /// The next request, within 20 s.
    pub async fn next(&mut self) -> (axum::http::HeaderMap, String) {
        tokio::time::timeout(std::time::Duration::from_secs(20), self.requests.recv())
            .await
            .expect("delivered in time")
            .expect("one")
    }
}

/// A listing's lines, sorted (two `ls-remote`s compared whatever their order).
pub fn refs(listing: &str) -> Vec<String> {
    let mut lines: Vec<String> = listing.lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

/// The runs of repository `repo` (`owner/name`), once there are `n` of them (within 20 s).
pub async fn runs_of(s: &TestServer, token: &str, repo: &str, n: usize) -> Vec<Value> {
    let mut last = Value::Null;
    for _ in 0..200 {
        let path = format!("/api/v1/repos/{repo}/runs?limit=100");
        let (status, page) = s.send(reqwest::Method::GET, &path, Some(token), None).await;
        assert_eq!(status, 200, "{page}");
        if page["runs"].as_array().map(Vec::len) >= Some(n) {
            let runs = page["runs"].as_array().cloned().unwrap_or_default();
            assert_eq!(runs.len(), n, "more runs than expected: {page}");
            return runs;
        }
        last = page;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("expected {n} runs; have {last}");
}
