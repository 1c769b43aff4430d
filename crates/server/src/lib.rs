//! Wiring: the typed [`Config`], the [`DataDir`], and a [`Server`] that opens storage, bootstraps
//! the first admin, and serves HTTP until told to stop.
//!
//! The binary stays thin: it parses flags, installs logging and the metrics recorder, and calls
//! [`Server::open`] then [`Server::serve`]. Tests call the same two functions in-process.
//! What it must never do: read the process environment (the binary passes it in) or install
//! global state.

#![forbid(unsafe_code)]

pub mod config;
pub mod datadir;
pub mod http;
mod maintenance;
pub mod upstream;
pub mod webhooks;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gitstratum_api::AppState;
use gitstratum_core::{Clock, SystemClock};
use gitstratum_frontend::GitService;
use gitstratum_platform::{DbTarget, PlatformStore, TokenSecret};
use gitstratum_store::cluster::ClusterStore;
use gitstratum_store::pg::PgRefStore;
use gitstratum_store::rocks::RocksStore;
use gitstratum_store::{ObjectStore, RefStore};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use tokio::net::TcpListener;

pub use config::{Config, ConfigError, ConfigLayer, LogFormat};
pub use datadir::DataDir;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot prepare the data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Database(#[from] gitstratum_platform::ConnectError),
    #[error("cannot open the Git storage: {0}")]
    GitStorage(#[source] gitstratum_store::Error),
    #[error("cannot create the initial admin account: {0}")]
    Bootstrap(#[source] gitstratum_platform::Error),
    #[error("server failed: {0}")]
    Serve(#[source] std::io::Error),
    #[error("cannot set up the HTTP client (TLS): {0}")]
    HttpClient(#[source] reqwest::Error),
    #[error("cannot read the secrets key {path}: {message}")]
    SecretsKey { path: std::path::PathBuf, message: String },
}

/// Latency buckets (seconds) for every `*_duration_seconds` histogram.
const DURATION_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// The Prometheus recorder, configured with our buckets; the binary installs it globally.
pub fn metrics_recorder() -> PrometheusRecorder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_duration_seconds".into()), DURATION_BUCKETS)
        .expect("bucket list is non-empty, because it is a constant")
        .build_recorder()
}

/// A server whose storage is open, ready to serve.
pub struct Server {
    config: Config,
    data_dir: DataDir,
    store: PlatformStore,
    git: GitStores,
    metrics: PrometheusHandle,
    clock: Arc<dyn Clock>,
    /// The key CI secrets are sealed with.
    secrets_key: gitstratum_platform::SecretKey,
    /// Set on the first start of an empty installation: the token of the new `admin` account.
    pub initial_admin_token: Option<TokenSecret>,
    /// Where Git over SSH is served, when it is.
    ssh_listener: Option<TcpListener>,
}

/// Where Git objects and refs are: the data directory's RocksDB (single-node mode), or
/// PostgreSQL and object storage with the data directory as a cache (cluster mode).
#[derive(Clone)]
struct GitStores {
    objects: Arc<dyn ObjectStore>,
    refs: Arc<dyn RefStore>,
    /// The data directory's store: all of it in single-node mode, maintained in the background;
    /// in cluster mode a frontend's cache, left as its packs arrived.
    local: Arc<RocksStore>,
    cluster: Option<Arc<ClusterStore>>,
}

impl GitStores {
    /// Opens the stores `config` asks for (on a blocking thread: opening RocksDB reads files).
    async fn open(config: &Config, git_dir: std::path::PathBuf) -> Result<GitStores, Error> {
        let storage = |e: gitstratum_store::Error| Error::GitStorage(e);
        let joined = |e: tokio::task::JoinError| Error::GitStorage(gitstratum_store::Error::Backend(e.to_string()));
        let cluster = match (config.cluster, &config.database_url, &config.object_storage) {
            (true, Some(url), Some(s3)) => Some((url.clone(), s3.clone())),
            // Config::from_layers refuses cluster mode without both.
            (true, _, _) => {
                return Err(Error::GitStorage(gitstratum_store::Error::Backend(
                    "cluster mode needs a PostgreSQL database and object storage".into(),
                )));
            }
            (false, _, _) => None,
        };
        tokio::task::spawn_blocking(move || {
            let local = Arc::new(RocksStore::open(&git_dir).map_err(storage)?);
            let Some((url, s3)) = cluster else {
                return Ok(GitStores { objects: local.clone(), refs: local.clone(), local, cluster: None });
            };
            let refs = Arc::new(PgRefStore::open(&url, None).map_err(storage)?);
            // The object storage client runs on the ref store's runtime: callable from any thread.
            let packs = gitstratum_store::blob::s3::S3BlobStore::open(
                &s3,
                refs.runtime().clone(),
                git_dir.join("cluster").join("staging"),
            )
            .map_err(|e| storage(gitstratum_store::Error::Backend(format!("object storage: {e}"))))?;
            let objects = Arc::new(
                ClusterStore::new(local.clone(), refs.clone(), Arc::new(packs), &git_dir.join("cluster").join("taken"))
                    .map_err(storage)?,
            );
            Ok(GitStores { objects: objects.clone(), refs, local, cluster: Some(objects) })
        })
        .await
        .map_err(joined)?
    }
}

/// The key CI secrets are sealed with: `GITSTRATUM_SECRETS_KEY` when set, else `DATA/secrets.key`
/// (made on first start).
pub fn secrets_key(config: &Config) -> Result<gitstratum_platform::SecretKey, Error> {
    if let Some(key) = &config.secrets_key {
        return Ok(key.clone());
    }
    let path = config.data_dir.join("secrets.key");
    let text =
        std::fs::read_to_string(&path).map_err(|e| Error::SecretsKey { path: path.clone(), message: e.to_string() })?;
    gitstratum_platform::SecretKey::from_hex(&text).map_err(|e| Error::SecretsKey { path, message: e.to_string() })
}

/// Opens the platform database a configuration names, for offline administration
/// (`gitstratum admin …`); never creates a data directory.
pub async fn open_platform(config: &Config) -> Result<PlatformStore, Error> {
    let target = match &config.database_url {
        Some(url) => DbTarget::Postgres { url: url.clone(), schema: None },
        None => {
            let path = config.data_dir.join("platform.db");
            if !path.is_file() {
                return Err(Error::DataDir {
                    path: config.data_dir.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "no platform.db in it"),
                });
            }
            DbTarget::Sqlite { path }
        }
    };
    Ok(PlatformStore::open(&target).await?)
}

/// The host of a URL such as `https://git.example.com:8443/x` (`git.example.com`), as SSH clone
/// URLs name it.
fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let authority = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    if authority.starts_with('[') {
        // An IPv6 literal keeps its brackets, without the port.
        return authority.split_inclusive(']').next().unwrap_or(authority);
    }
    authority.split(':').next().unwrap_or(authority)
}

impl Server {
    /// Creates or opens the data directory and the platform database, and on first start creates
    /// the `admin` account, writing its token to `DATA/initial-admin-token` before committing.
    pub async fn open(config: Config, metrics: PrometheusHandle) -> Result<Server, Error> {
        let data_dir = DataDir::create(&config.data_dir)
            .map_err(|source| Error::DataDir { path: config.data_dir.clone(), source })?;
        let target = match &config.database_url {
            Some(url) => DbTarget::Postgres { url: url.clone(), schema: None },
            None => DbTarget::Sqlite { path: data_dir.platform_db_path() },
        };
        let store = PlatformStore::open(&target).await?;
        let secrets_key = secrets_key(&config)?;
        // Webhook secrets written before they were sealed are sealed now.
        match store.seal_webhook_secrets(&secrets_key).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(hooks = n, "sealed webhook secrets that were stored in the clear"),
            Err(e) => tracing::warn!(error = %e, "cannot seal the webhook secrets stored in the clear"),
        }
        let git = GitStores::open(&config, data_dir.git_dir()).await?;
        tracing::info!(
            backend = store.db().backend(),
            cluster = config.cluster,
            data_dir = %data_dir.root().display(),
            "storage open"
        );
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let initial_admin_token = store
            .bootstrap_admin(clock.now(), |token| data_dir.write_initial_admin_token(token.expose()))
            .await
            .map_err(Error::Bootstrap)?;
        Ok(Server {
            config,
            data_dir,
            store,
            git,
            metrics,
            clock,
            secrets_key,
            initial_admin_token,
            ssh_listener: None,
        })
    }

    pub fn data_dir(&self) -> &DataDir {
        &self.data_dir
    }

    /// Serves Git over SSH on `listener` too (`[ssh] listen`), beside HTTP.
    pub fn with_ssh_listener(mut self, listener: TcpListener) -> Self {
        self.ssh_listener = Some(listener);
        self
    }

    /// Serves on `listener` until `shutdown` resolves; then stops accepting, lets in-flight
    /// requests finish, and closes storage (SQLite checkpoints its WAL).
    /// Starts the embedded runner: a runner like any other (it speaks the runner protocol to this
    /// server over loopback), with a `ci:runner` token of the `admin` account made at each start
    /// (the previous one is revoked). Without a working bubblewrap it stays off, saying why.
    async fn start_embedded_runner(
        &self,
        addr: SocketAddr,
        ci: &gitstratum_ci::CiStore,
        stop: tokio::sync::oneshot::Receiver<()>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        const EMBEDDED: &str = "embedded";
        if let Err(reason) = gitstratum_runner::sandbox::check().await {
            tracing::warn!(%reason, "the embedded CI runner is off: jobs wait for an external runner");
            return None;
        }
        let now = self.clock.now();
        let actor = gitstratum_platform::Actor::system();
        let admin = match self.store.find_account(gitstratum_platform::INITIAL_ADMIN).await {
            Ok(Some(admin)) => admin,
            other => {
                tracing::warn!(result = ?other.map(|_| ()), "the embedded CI runner is off: no admin account");
                return None;
            }
        };
        const NAME: &str = "embedded-runner";
        if let Ok(tokens) = self.store.list_tokens(admin.id).await {
            for old in tokens.into_iter().filter(|t| t.name == NAME) {
                let _ = self.store.revoke_token(admin.id, old.id, &actor, now).await;
            }
        }
        let new = gitstratum_platform::NewToken {
            name: NAME.to_owned(),
            scopes: gitstratum_platform::Scopes::new([gitstratum_platform::Scope::CiRunner]),
            expires_at: Some(gitstratum_core::Timestamp(now.0 + 365 * 24 * 3600 * 1000)),
        };
        let token = match self.store.create_token(admin.id, &new, &actor, now).await {
            Ok((_, secret)) => secret,
            Err(e) => {
                tracing::warn!(error = %e, "the embedded CI runner is off: cannot make its token");
                return None;
            }
        };
        let http = match http::client() {
            Ok(http) => http,
            Err(e) => {
                tracing::warn!(error = %e, "the embedded CI runner is off");
                return None;
            }
        };
        let host = if addr.ip().is_unspecified() { std::net::IpAddr::from([127, 0, 0, 1]) } else { addr.ip() };
        // The previous embedded runner died with its server: once this one has registered, take
        // back what the old one held now rather than when its leases run out.
        let (ci, clock, admin_id) = (ci.clone(), self.clock.clone(), admin.id);
        let on_registered: std::sync::Arc<dyn Fn(i64) + Send + Sync> = std::sync::Arc::new(move |id| {
            let (ci, clock) = (ci.clone(), clock.clone());
            tokio::spawn(async move {
                match ci.release_runners(admin_id, EMBEDDED, id, clock.now()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(jobs = n, "took back the jobs the previous embedded runner held"),
                    Err(e) => tracing::warn!(error = %e, "taking back the previous embedded runner's jobs failed"),
                }
            });
        });
        let config = gitstratum_runner::RunnerConfig {
            server: format!("http://{}", SocketAddr::new(host, addr.port())),
            token: token.expose().to_owned(),
            name: EMBEDDED.to_owned(),
            labels: gitstratum_runner::DEFAULT_LABELS.map(str::to_owned).to_vec(),
            work_dir: self.data_dir.root().join("runner"),
            network: self.config.runner_network,
            limits: self.config.runner_limits,
            capacity: 1,
            on_registered: Some(on_registered),
        };
        Some(tokio::spawn(async move {
            if let Err(e) = gitstratum_runner::run(config, http, stop).await {
                tracing::warn!(error = %e, "the embedded CI runner stopped");
            }
        }))
    }

    pub async fn serve(
        mut self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let addr = listener.local_addr().map_err(Error::Serve)?;
        // The SSH host key first: a missing one stops the start before anything runs.
        let ssh_key = match (&self.ssh_listener, &self.config.ssh_host_key) {
            (None, _) => None,
            (Some(_), Some(path)) => Some(gitstratum_api::ssh::host_key(path, false).map_err(Error::Serve)?),
            (Some(_), None) => {
                Some(gitstratum_api::ssh::host_key(&self.data_dir.ssh_host_key_path(), true).map_err(Error::Serve)?)
            }
        };
        let public_url = self.config.public_url.clone().unwrap_or_else(|| format!("http://{addr}"));
        let mut git = GitService::new(self.git.objects.clone(), self.git.refs.clone());
        if self.config.pack_cache_bytes > 0 {
            let dir = self.data_dir().pack_cache_dir();
            let cache = gitstratum_frontend::pack_cache::PackCache::open(&dir, self.config.pack_cache_bytes)
                .map_err(|e| Error::Serve(std::io::Error::other(format!("pack cache at {}: {e}", dir.display()))))?;
            git = git.with_pack_cache(Arc::new(cache));
        }
        // One CI store for the API and the ingestor: they share the signal that wakes runners.
        let ci = gitstratum_ci::CiStore::new(self.store.db().clone())
            .with_timing(self.config.ci_timing)
            .with_tenant_limits(self.config.ci_tenant_limits);
        let blobs: Arc<dyn gitstratum_ci::blob::BlobStore> = match &self.config.object_storage {
            None => Arc::new(gitstratum_ci::blob::FsBlobStore::open(self.data_dir.blobs_dir()).map_err(Error::Serve)?),
            Some(s3) => Arc::new(
                gitstratum_ci::blob::s3::S3BlobStore::open(
                    s3,
                    tokio::runtime::Handle::current(),
                    self.data_dir.blobs_dir().join("staging"),
                )
                .map_err(Error::Serve)?,
            ),
        };
        // Cluster mode: logs in the shared database and object storage, so any frontend serves
        // (and follows live) what a runner sent to another.
        let logs = Arc::new(if self.config.cluster {
            gitstratum_ci::LogStore::in_database(
                self.store.db().clone(),
                blobs.clone(),
                self.config.ci_log_step_max_bytes,
            )
        } else {
            gitstratum_ci::LogStore::with_step_cap(
                self.data_dir.blobs_dir().join("logs"),
                self.config.ci_log_step_max_bytes,
            )
        });
        let log_announcements = logs.spawn_announcement_listener();
        let artifacts = Arc::new(gitstratum_ci::Artifacts::new(ci.clone(), blobs, self.config.ci_artifacts));
        let upstream: Arc<dyn gitstratum_ci::upstream::Upstream> = if self.config.actions_sources.is_empty() {
            Arc::new(gitstratum_ci::upstream::NoUpstream)
        } else {
            let cache = self.data_dir.actions_cache_dir();
            Arc::new(
                upstream::HttpUpstream::new(&self.config.actions_sources, cache)
                    .map_err(|e| Error::Serve(std::io::Error::other(format!("[actions] sources: {e}"))))?,
            )
        };
        let state = AppState::new(
            self.store.clone(),
            git,
            self.clock.clone(),
            self.metrics.clone(),
            &public_url,
            gitstratum_api::Policies {
                rate_limits: self.config.rate_limits,
                webhook_destinations: self.config.webhook_destinations.clone(),
                token_max_days: self.config.token_max_days,
                max_concurrent_pushes: self.config.max_concurrent_pushes,
                shared_rate_limits: self.config.cluster,
                ssh: match &self.ssh_listener {
                    Some(listener) => {
                        let port = listener.local_addr().map_err(Error::Serve)?.port();
                        Some((url_host(&public_url).to_owned(), port))
                    }
                    None => None,
                },
            },
            gitstratum_api::CiParts {
                store: ci.clone(),
                logs: logs.clone(),
                artifacts: artifacts.clone(),
                secrets_key: self.secrets_key.clone(),
                upstream: upstream.clone(),
            },
        );
        let rate_limit_sync = state.spawn_rate_limit_sync();
        // Git over SSH beside HTTP, on the same state (policy, stores, push permits).
        let (stop_ssh, ssh_stopped) = tokio::sync::oneshot::channel::<()>();
        let ssh = match (self.ssh_listener.take(), ssh_key) {
            (Some(listener), Some(key)) => {
                let ssh_addr = listener.local_addr().map_err(Error::Serve)?;
                tracing::info!(%ssh_addr, "serving Git over SSH on {ssh_addr}");
                Some(tokio::spawn(gitstratum_api::ssh::serve(state.clone(), listener, key, async move {
                    let _ = ssh_stopped.await;
                })))
            }
            _ => None,
        };
        let app = gitstratum_api::router(state);

        // Webhook deliveries run beside the server and stop with it.
        let (stop_webhooks, webhooks_stopped) = tokio::sync::oneshot::channel::<()>();
        let dispatcher = webhooks::Dispatcher {
            store: self.store.clone(),
            ci: ci.clone(),
            refs: self.git.refs.clone(),
            clock: self.clock.clone(),
            public_url: public_url.trim_end_matches('/').to_owned(),
            http: http::webhook_client(self.config.webhook_destinations.clone()).map_err(Error::HttpClient)?,
            destinations: self.config.webhook_destinations.clone(),
            secrets_key: self.secrets_key.clone(),
        };
        let webhooks = tokio::spawn(dispatcher.run(webhooks_stopped));

        // The CI ingestor turns pushes into workflow runs, beside the server.
        let (stop_ingestor, ingestor_stopped) = tokio::sync::oneshot::channel::<()>();
        let ingestor = gitstratum_ci::Ingestor {
            ci: ci.clone(),
            platform: self.store.clone(),
            objects: self.git.objects.clone(),
            refs: self.git.refs.clone(),
            clock: self.clock.clone(),
            upstream,
        };
        let ingestor = tokio::spawn(ingestor.run(ingestor_stopped));
        // Pull requests follow their branches: refs/pull/N/{head,merge} and mergeability.
        let (stop_pulls, pulls_stopped) = tokio::sync::oneshot::channel::<()>();
        let pulls = gitstratum_pulls::Updater {
            pulls: gitstratum_pulls::Pulls {
                platform: self.store.clone(),
                objects: self.git.objects.clone(),
                refs: self.git.refs.clone(),
                clock: self.clock.clone(),
            },
        };
        let pulls = tokio::spawn(pulls.run(pulls_stopped));
        // Servers sharing a PostgreSQL database wake each other's runners' long polls.
        let wakeups = ci.spawn_wakeup_listener();
        let (stop_reaper, reaper_stopped) = tokio::sync::oneshot::channel::<()>();
        let reaper =
            tokio::spawn(gitstratum_ci::orchestrate::run_reaper(ci.clone(), self.clock.clone(), reaper_stopped));
        let (stop_runner, runner_stopped) = tokio::sync::oneshot::channel::<()>();
        let runner = if self.config.embedded_runner {
            self.start_embedded_runner(addr, &ci, runner_stopped).await
        } else {
            None
        };

        // Histograms accumulate samples until upkeep folds them in; do it even when nobody scrapes.
        // Logs and artifacts older than their retention are deleted hourly (and at start).
        let (stop_upkeep, mut upkeep_stopped) = tokio::sync::oneshot::channel::<()>();
        let metrics = self.metrics.clone();
        let (retention_ci, retention_clock) = (ci.clone(), self.clock.clone());
        let swept_packs = self.git.cluster.clone();
        let retention_ms =
            i64::try_from(self.config.ci_log_retention_days).unwrap_or(i64::MAX / 86_400_000) * 86_400_000;
        let upkeep = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            let mut retention = tokio::time::interval(Duration::from_secs(3600));
            loop {
                tokio::select! {
                    _ = tick.tick() => metrics.run_upkeep(),
                    _ = retention.tick() => {
                        let now = retention_clock.now();
                        match gitstratum_ci::usage::sweep_logs(&retention_ci, &logs, now, retention_ms).await {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(jobs = n, "ci: deleted logs past their retention"),
                            Err(e) => tracing::warn!(error = %e, "ci: the log retention sweep failed"),
                        }
                        match artifacts.sweep(now).await {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(artifacts = n, "ci: deleted artifacts past their retention"),
                            Err(e) => tracing::warn!(error = %e, "ci: the artifact retention sweep failed"),
                        }
                        // Uploads left unfinished for two days (a lost attempt's, say) go too.
                        let stale = artifacts.sweep_staging(Duration::from_secs(2 * 86_400)).await;
                        if stale > 0 {
                            tracing::info!(uploads = stale, "ci: deleted abandoned artifact and cache uploads");
                        }
                        // Packs in object storage no pack list names (a frontend died between the
                        // upload and the listing), once an hour old.
                        if let Some(cluster) = swept_packs.clone() {
                            match tokio::task::spawn_blocking(move || cluster.sweep_unlisted(Duration::from_secs(3600))).await {
                                Ok(Ok(0)) => {}
                                Ok(Ok(n)) => tracing::info!(packs = n, "cluster: deleted packs no pack list names"),
                                Ok(Err(e)) => tracing::warn!(error = %e, "cluster: the sweep of unlisted packs failed"),
                                Err(e) => tracing::warn!(error = %e, "cluster: the sweep of unlisted packs failed"),
                            }
                        }
                        // Blobs no row names (their repository was deleted, or a crash came between
                        // storing and recording), once an hour old.
                        match artifacts.sweep_orphans(Duration::from_secs(3600)).await {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(blobs = n, "ci: deleted artifact and cache blobs nothing names"),
                            Err(e) => tracing::warn!(error = %e, "ci: the orphan blob sweep failed"),
                        }
                    }
                    _ = &mut upkeep_stopped => break,
                }
            }
        });

        let (stop_maintenance, maintenance_stopped) = tokio::sync::oneshot::channel::<()>();
        let maintenance = match self.git.cluster {
            None => tokio::spawn(maintenance::run(
                self.git.local.clone(),
                self.config.git_maintenance,
                self.clock.clone(),
                maintenance_stopped,
            )),
            Some(cluster) => tokio::spawn(maintenance::run_cluster(
                cluster.clone(),
                self.store.db().clone(),
                self.config.git_maintenance,
                maintenance_stopped,
            )),
        };

        tracing::info!(%addr, "listening on http://{addr}");
        // On shutdown, runners' long polls end at once, so they do not hold the shutdown up.
        let closing = ci.clone();
        let shutdown = async move {
            shutdown.await;
            closing.close();
        };
        // TCP_NODELAY on every connection: a response's headers and body are separate writes,
        // and without it the body waits for the client's delayed ACK of the headers (40 ms on
        // Linux) — every ls-refs and fetch response of a git client paid that once.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "could not set TCP_NODELAY on a connection");
            }
        });
        let served = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(shutdown)
            .await;
        tracing::info!("no longer accepting; in-flight requests finished");
        let _ = stop_ssh.send(());
        if let Some(ssh) = ssh {
            let _ = ssh.await;
        }
        let _ = stop_upkeep.send(());
        let _ = upkeep.await;
        let _ = stop_maintenance.send(());
        let _ = maintenance.await;
        let _ = stop_webhooks.send(());
        let _ = webhooks.await;
        let _ = stop_ingestor.send(());
        let _ = ingestor.await;
        let _ = stop_pulls.send(());
        let _ = pulls.await;
        let _ = stop_reaper.send(());
        let _ = reaper.await;
        let _ = stop_runner.send(());
        if let Some(mut runner) = runner {
            // A job in progress is given a moment, then abandoned: its steps are killed with the
            // task, and its lease runs out, so it is re-queued as a new attempt.
            if tokio::time::timeout(Duration::from_secs(5), &mut runner).await.is_err() {
                runner.abort();
            }
        }
        if let Some(wakeups) = wakeups {
            wakeups.abort();
        }
        if let Some(listener) = log_announcements {
            listener.abort();
        }
        if let Some(sync) = rate_limit_sync {
            sync.abort();
        }
        self.store.close().await;
        let git_store = self.git.local.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || git_store.flush()).await {
            tracing::warn!(error = %e, "flushing the Git storage failed");
        }
        tracing::info!("storage closed");
        served.map_err(Error::Serve)
    }
}

#[cfg(test)]
mod tests {
    use super::url_host;

    #[test]
    fn ssh_clone_urls_name_the_public_urls_host() {
        for (url, host) in [
            ("https://git.example.com", "git.example.com"),
            ("https://git.example.com:8443/base/", "git.example.com"),
            ("http://127.0.0.1:3000", "127.0.0.1"),
            ("http://user@host.example:80?x", "host.example"),
            ("http://[::1]:3000/", "[::1]"),
        ] {
            assert_eq!(url_host(url), host, "{url}");
        }
    }
}
