//! The in-process test server shared by the integration tests.

#![allow(dead_code)] // each test binary uses a different part

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

pub struct TestServer {
    pub base: String,
    pub admin_token: String,
    pub data_dir: tempfile::TempDir,
    pub shutdown: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<Result<(), gitstratum_server::Error>>,
    pub http: reqwest::Client,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(ConfigLayer::default()).await
    }

    /// A server with `file` as its `config.toml` layer.
    pub async fn start_with(file: ConfigLayer) -> TestServer {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let flags = ConfigLayer { data_dir: Some(data_dir.path().to_owned()), ..ConfigLayer::default() };
        let config = Config::from_layers(file, ConfigLayer::default(), flags).expect("config");
        let server = Server::open(config, metrics_handle()).await.expect("open");
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
