//! The one typed configuration: defaults in code → `DATA/config.toml` → `GITSTRATUM_*` environment
//! → command-line flags. Built and validated once at start, then immutable.
//!
//! Every layer is a [`ConfigLayer`] of optional values; [`Config::from_layers`] merges them, so the
//! precedence rule lives in one function. The environment is passed in, never read here.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use gitstratum_api::ratelimit::RateLimits;
use gitstratum_platform::db::redact_url;
use serde::Deserialize;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:3000";
pub const DEFAULT_DATA_DIR: &str = "./gitstratum-data";
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// The example configuration, committed at the repository root and written (all commented out)
/// into a new data directory as `config.toml`.
/// Pushes read at once unless configured.
pub const DEFAULT_MAX_CONCURRENT_PUSHES: usize = 4;
/// The pack cache\'s default bound on disk, in MiB.
const DEFAULT_PACK_CACHE_MB: u64 = 1024;
/// Git's own default for pruning (`gc.pruneExpire`: two weeks).
const DEFAULT_PRUNE_GRACE_HOURS: u64 = 14 * 24;

pub const EXAMPLE_CONFIG: &str = include_str!("../../../config.example.toml");

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object a line, for log shippers.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?}; expected \"text\" or \"json\"")),
        }
    }
}

/// The validated configuration.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
    /// Address the SSH server (Git over SSH) binds (`[ssh] listen`); `None`: no SSH.
    pub ssh_listen: Option<SocketAddr>,
    /// The SSH host key's file (`[ssh] host_key`), which must exist; `None`: `DATA/ssh_host_ed25519_key`,
    /// made on first start. Cluster mode needs it (one key for every frontend).
    pub ssh_host_key: Option<PathBuf>,
    /// Root of all state: `git/`, `platform.db`, `blobs/`, `config.toml`, `secrets.key`.
    pub data_dir: PathBuf,
    /// Base URL clients use to reach this server (clone URLs); `http://{listen}` when unset.
    pub public_url: Option<String>,
    /// `postgres://…` for platform state in PostgreSQL; SQLite in the data directory when unset.
    pub database_url: Option<String>,
    pub log_format: LogFormat,
    /// A `tracing` filter such as `info` or `info,gitstratum_api=debug`.
    pub log_level: String,
    /// Requests per minute per client, per anonymous address, per repository (Git).
    pub rate_limits: RateLimits,
    /// Whether `serve` runs a CI runner in-process (it needs bubblewrap).
    pub embedded_runner: bool,
    /// The network the embedded runner's jobs see.
    pub runner_network: gitstratum_runner::Network,
    /// Memory and process limits of each of the embedded runner's jobs.
    pub runner_limits: gitstratum_runner::Limits,
    /// The runner protocol's clocks: lease, heartbeat, acknowledgement, attempts of a lost job.
    pub ci_timing: gitstratum_ci::orchestrate::Timing,
    /// The most kept of one step's log.
    pub ci_log_step_max_bytes: u64,
    /// The site's default limits per tenant (repository owner): jobs running at once, runs not yet
    /// completed; `None`: no limit. Each organization may have its own.
    pub ci_tenant_limits: gitstratum_ci::TenantLimits,
    /// Days job logs are kept after their job completed.
    pub ci_log_retention_days: u64,
    /// Artifact and cache limits, and the site's artifact retention.
    pub ci_artifacts: gitstratum_ci::ArtifactConfig,
    /// The key CI secrets are sealed with, when given in the environment (else `DATA/secrets.key`).
    pub secrets_key: Option<gitstratum_platform::SecretKey>,
    /// Non-public destinations webhooks may be delivered to anyway (`[webhooks] allowed_hosts`).
    pub webhook_destinations: gitstratum_core::Destinations,
    /// The longest a token may live, in days (`[tokens] max_days`); `None`: no cap.
    pub token_max_days: Option<u32>,
    /// Pushes whose bodies are read at once (each may hold up to 1 GiB in memory); more wait
    /// their turn for a moment, then are refused with 503 (`[server] max_concurrent_pushes`).
    pub max_concurrent_pushes: usize,
    /// The pack cache's bound on disk, in bytes (`[server] pack_cache_mb`); 0: no cache.
    pub pack_cache_bytes: u64,
    /// Background maintenance of Git storage (`[git]`).
    pub git_maintenance: GitMaintenance,
    /// S3-compatible object storage for artifact and cache archives (`[object_storage]`); `None`:
    /// files under the data directory.
    pub object_storage: Option<gitstratum_ci::blob::s3::S3Config>,
    /// Cluster mode (`[cluster] enabled`): refs and pack lists in the PostgreSQL database, packs
    /// in the object storage, this data directory only a cache. Needs both, and a shared
    /// `GITSTRATUM_SECRETS_KEY`.
    pub cluster: bool,
    /// Git hosts actions no repository here has are fetched from, in order (`[actions] sources`):
    /// `http(s)://` base URLs, `<source>/<owner>/<repo>.git` being a repository.
    pub actions_sources: Vec<String>,
}

/// When Git storage is maintained in the background (packs rolled up, repacked, pruned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GitMaintenance {
    /// How often repositories are looked at; `None`: never.
    pub every: Option<std::time::Duration>,
    /// How long after its last full repack a repository is fully repacked again.
    pub full_repack_after: std::time::Duration,
    /// How long an object must have been unreachable before it is deleted.
    pub prune_grace: std::time::Duration,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("ssh_listen", &self.ssh_listen)
            .field("ssh_host_key", &self.ssh_host_key)
            .field("data_dir", &self.data_dir)
            .field("public_url", &self.public_url)
            .field("database_url", &self.database_url.as_deref().map(redact_url))
            .field("log_format", &self.log_format)
            .field("log_level", &self.log_level)
            .field("rate_limits", &self.rate_limits)
            .field("embedded_runner", &self.embedded_runner)
            .field("runner_network", &self.runner_network)
            .field("runner_limits", &self.runner_limits)
            .field("ci_timing", &self.ci_timing)
            .field("ci_log_step_max_bytes", &self.ci_log_step_max_bytes)
            .field("ci_tenant_limits", &self.ci_tenant_limits)
            .field("ci_log_retention_days", &self.ci_log_retention_days)
            .field("ci_artifacts", &self.ci_artifacts)
            .field("secrets_key", &self.secrets_key.as_ref().map(|_| "…"))
            .field("object_storage", &self.object_storage)
            .field("cluster", &self.cluster)
            .field(
                "actions_sources",
                &self.actions_sources.iter().map(|s| crate::upstream::redact_source(s)).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// One layer of settings; `None` means "not set here".
#[derive(Default, Clone, PartialEq, Eq)]
pub struct ConfigLayer {
    pub listen: Option<String>,
    /// An address, or `""`/`off` for none.
    pub ssh_listen: Option<String>,
    pub ssh_host_key: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub public_url: Option<String>,
    pub database_url: Option<String>,
    pub log_format: Option<String>,
    pub log_level: Option<String>,
    pub rate_limit_per_client: Option<String>,
    pub rate_limit_anonymous: Option<String>,
    pub rate_limit_git_per_repo: Option<String>,
    pub embedded_runner: Option<String>,
    pub runner_network: Option<String>,
    pub runner_memory_mb: Option<String>,
    pub runner_processes: Option<String>,
    pub ci_lease_seconds: Option<String>,
    pub ci_max_attempts: Option<String>,
    pub ci_log_step_max_mb: Option<String>,
    pub ci_max_running_per_tenant: Option<String>,
    pub ci_max_queued_runs_per_tenant: Option<String>,
    pub ci_max_minutes_per_month_per_tenant: Option<String>,
    pub ci_log_retention_days: Option<String>,
    pub ci_artifact_max_mb: Option<String>,
    pub ci_run_artifacts_max_mb: Option<String>,
    pub ci_artifact_retention_days: Option<String>,
    pub ci_cache_max_mb: Option<String>,
    pub ci_repo_caches_max_mb: Option<String>,
    /// Comma-separated host names, addresses, CIDR networks, or `*`.
    pub webhook_allowed_hosts: Option<String>,
    pub token_max_days: Option<String>,
    pub max_concurrent_pushes: Option<String>,
    pub pack_cache_mb: Option<String>,
    pub git_maintenance_secs: Option<String>,
    pub git_full_repack_hours: Option<String>,
    pub git_prune_grace_hours: Option<String>,
    /// Comma-separated base URLs.
    pub actions_sources: Option<String>,
    /// Environment only (`GITSTRATUM_SECRETS_KEY`): never in a file or on the command line.
    pub secrets_key: Option<String>,
    pub object_storage_endpoint: Option<String>,
    pub object_storage_bucket: Option<String>,
    pub object_storage_region: Option<String>,
    pub object_storage_access_key_id: Option<String>,
    pub object_storage_prefix: Option<String>,
    /// Environment only (`GITSTRATUM_OBJECT_STORAGE_SECRET_ACCESS_KEY`).
    pub object_storage_secret_access_key: Option<String>,
    pub cluster: Option<String>,
}

impl fmt::Debug for ConfigLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigLayer")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("public_url", &self.public_url)
            .field("database_url", &self.database_url.as_deref().map(redact_url))
            .field("log_format", &self.log_format)
            .field("log_level", &self.log_level)
            .field("rate_limit_per_client", &self.rate_limit_per_client)
            .field("rate_limit_anonymous", &self.rate_limit_anonymous)
            .field("rate_limit_git_per_repo", &self.rate_limit_git_per_repo)
            .field("embedded_runner", &self.embedded_runner)
            .field("runner_network", &self.runner_network)
            .field("runner_memory_mb", &self.runner_memory_mb)
            .field("runner_processes", &self.runner_processes)
            .field("ci_lease_seconds", &self.ci_lease_seconds)
            .field("ci_max_attempts", &self.ci_max_attempts)
            .field("ci_log_step_max_mb", &self.ci_log_step_max_mb)
            .field("ci_max_running_per_tenant", &self.ci_max_running_per_tenant)
            .field("ci_max_queued_runs_per_tenant", &self.ci_max_queued_runs_per_tenant)
            .field("ci_max_minutes_per_month_per_tenant", &self.ci_max_minutes_per_month_per_tenant)
            .field("ci_log_retention_days", &self.ci_log_retention_days)
            .field("ci_artifact_max_mb", &self.ci_artifact_max_mb)
            .field("ci_run_artifacts_max_mb", &self.ci_run_artifacts_max_mb)
            .field("ci_artifact_retention_days", &self.ci_artifact_retention_days)
            .field("ci_cache_max_mb", &self.ci_cache_max_mb)
            .field("ci_repo_caches_max_mb", &self.ci_repo_caches_max_mb)
            .field("webhook_allowed_hosts", &self.webhook_allowed_hosts)
            .field("token_max_days", &self.token_max_days)
            .field("max_concurrent_pushes", &self.max_concurrent_pushes)
            .field("pack_cache_mb", &self.pack_cache_mb)
            .field("git_maintenance_secs", &self.git_maintenance_secs)
            .field("git_full_repack_hours", &self.git_full_repack_hours)
            .field("git_prune_grace_hours", &self.git_prune_grace_hours)
            .field("actions_sources", &self.actions_sources.as_deref().map(redact_sources))
            .field("secrets_key", &self.secrets_key.as_ref().map(|_| "…"))
            .field("object_storage_endpoint", &self.object_storage_endpoint)
            .field("object_storage_bucket", &self.object_storage_bucket)
            .field("object_storage_region", &self.object_storage_region)
            .field("object_storage_access_key_id", &self.object_storage_access_key_id)
            .field("object_storage_prefix", &self.object_storage_prefix)
            .field("object_storage_secret_access_key", &self.object_storage_secret_access_key.as_ref().map(|_| "…"))
            .field("cluster", &self.cluster)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("invalid {setting}: {message}")]
    Invalid { setting: &'static str, message: String },
}

/// Comma-separated sources with their credentials hidden.
fn redact_sources(sources: &str) -> String {
    sources.split(',').map(crate::upstream::redact_source).collect::<Vec<_>>().join(",")
}

/// `config.toml` as written by people: grouped in tables; unknown keys are errors so typos surface.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    server: FileServer,
    #[serde(default)]
    git: FileGit,
    #[serde(default)]
    database: FileDatabase,
    #[serde(default)]
    log: FileLog,
    #[serde(default)]
    rate_limit: FileRateLimit,
    #[serde(default)]
    runner: FileRunner,
    #[serde(default)]
    ci: FileCi,
    #[serde(default)]
    webhooks: FileWebhooks,
    #[serde(default)]
    tokens: FileTokens,
    #[serde(default)]
    actions: FileActions,
    #[serde(default)]
    object_storage: FileObjectStorage,
    #[serde(default)]
    cluster: FileCluster,
    #[serde(default)]
    ssh: FileSsh,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSsh {
    listen: Option<String>,
    host_key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCluster {
    enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileActions {
    sources: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTokens {
    max_days: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileWebhooks {
    allowed_hosts: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCi {
    lease_seconds: Option<u64>,
    max_attempts: Option<u64>,
    log_step_max_mb: Option<u64>,
    max_running_per_tenant: Option<u64>,
    max_queued_runs_per_tenant: Option<u64>,
    max_minutes_per_month_per_tenant: Option<u64>,
    log_retention_days: Option<u64>,
    artifact_max_mb: Option<u64>,
    run_artifacts_max_mb: Option<u64>,
    artifact_retention_days: Option<u64>,
    cache_max_mb: Option<u64>,
    repo_caches_max_mb: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRunner {
    embedded: Option<bool>,
    network: Option<String>,
    memory_mb: Option<u64>,
    processes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRateLimit {
    per_client: Option<u32>,
    anonymous: Option<u32>,
    git_per_repo: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileServer {
    listen: Option<String>,
    public_url: Option<String>,
    max_concurrent_pushes: Option<u32>,
    pack_cache_mb: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileGit {
    maintenance_secs: Option<u64>,
    full_repack_hours: Option<u64>,
    prune_grace_hours: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileObjectStorage {
    endpoint: Option<String>,
    bucket: Option<String>,
    region: Option<String>,
    access_key_id: Option<String>,
    prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDatabase {
    url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLog {
    format: Option<String>,
    level: Option<String>,
}

/// `[object_storage]`: set when it names a bucket, which then needs credentials (the secret in
/// the environment only); the endpoint, when given, an `http(s)://` URL or a comma-separated
/// list of them.
fn object_storage(merged: &ConfigLayer) -> Result<Option<gitstratum_ci::blob::s3::S3Config>, ConfigError> {
    let value = |v: &Option<String>| v.as_deref().map(str::trim).unwrap_or_default().to_owned();
    let bucket = value(&merged.object_storage_bucket);
    if bucket.is_empty() {
        return Ok(None);
    }
    let invalid = |setting: &'static str, message: &str| ConfigError::Invalid { setting, message: message.to_owned() };
    let endpoint = value(&merged.object_storage_endpoint);
    let url = |e: &str| e.starts_with("http://") || e.starts_with("https://");
    if !(endpoint.is_empty() || endpoint.split(',').map(str::trim).all(url)) {
        return Err(invalid("object_storage.endpoint", "an http:// or https:// URL, or several separated by commas"));
    }
    let access_key_id = value(&merged.object_storage_access_key_id);
    if access_key_id.is_empty() {
        return Err(invalid("object_storage.access_key_id", "a bucket needs an access key id"));
    }
    let secret_access_key = value(&merged.object_storage_secret_access_key);
    if secret_access_key.is_empty() {
        return Err(invalid(
            "object_storage.secret_access_key",
            "a bucket needs GITSTRATUM_OBJECT_STORAGE_SECRET_ACCESS_KEY in the environment",
        ));
    }
    Ok(Some(gitstratum_ci::blob::s3::S3Config {
        endpoint,
        bucket,
        region: value(&merged.object_storage_region),
        access_key_id,
        secret_access_key,
        prefix: value(&merged.object_storage_prefix),
    }))
}

impl ConfigLayer {
    /// Parses `config.toml`. The data directory cannot be set there: the file lives inside it.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let file: FileConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        Ok(ConfigLayer {
            listen: file.server.listen,
            ssh_listen: file.ssh.listen,
            ssh_host_key: file.ssh.host_key,
            data_dir: None,
            public_url: file.server.public_url,
            database_url: file.database.url,
            log_format: file.log.format,
            log_level: file.log.level,
            rate_limit_per_client: file.rate_limit.per_client.map(|n| n.to_string()),
            rate_limit_anonymous: file.rate_limit.anonymous.map(|n| n.to_string()),
            rate_limit_git_per_repo: file.rate_limit.git_per_repo.map(|n| n.to_string()),
            embedded_runner: file.runner.embedded.map(|b| b.to_string()),
            runner_network: file.runner.network,
            runner_memory_mb: file.runner.memory_mb.map(|n| n.to_string()),
            runner_processes: file.runner.processes.map(|n| n.to_string()),
            ci_lease_seconds: file.ci.lease_seconds.map(|n| n.to_string()),
            ci_max_attempts: file.ci.max_attempts.map(|n| n.to_string()),
            ci_log_step_max_mb: file.ci.log_step_max_mb.map(|n| n.to_string()),
            ci_max_running_per_tenant: file.ci.max_running_per_tenant.map(|n| n.to_string()),
            ci_max_queued_runs_per_tenant: file.ci.max_queued_runs_per_tenant.map(|n| n.to_string()),
            ci_max_minutes_per_month_per_tenant: file.ci.max_minutes_per_month_per_tenant.map(|n| n.to_string()),
            ci_log_retention_days: file.ci.log_retention_days.map(|n| n.to_string()),
            ci_artifact_max_mb: file.ci.artifact_max_mb.map(|n| n.to_string()),
            ci_run_artifacts_max_mb: file.ci.run_artifacts_max_mb.map(|n| n.to_string()),
            ci_artifact_retention_days: file.ci.artifact_retention_days.map(|n| n.to_string()),
            ci_cache_max_mb: file.ci.cache_max_mb.map(|n| n.to_string()),
            ci_repo_caches_max_mb: file.ci.repo_caches_max_mb.map(|n| n.to_string()),
            webhook_allowed_hosts: file.webhooks.allowed_hosts.map(|hosts| hosts.join(",")),
            actions_sources: file.actions.sources.map(|sources| sources.join(",")),
            token_max_days: file.tokens.max_days.map(|n| n.to_string()),
            max_concurrent_pushes: file.server.max_concurrent_pushes.map(|n| n.to_string()),
            pack_cache_mb: file.server.pack_cache_mb.map(|n| n.to_string()),
            git_maintenance_secs: file.git.maintenance_secs.map(|n| n.to_string()),
            git_full_repack_hours: file.git.full_repack_hours.map(|n| n.to_string()),
            git_prune_grace_hours: file.git.prune_grace_hours.map(|n| n.to_string()),
            secrets_key: None,
            object_storage_endpoint: file.object_storage.endpoint,
            object_storage_bucket: file.object_storage.bucket,
            object_storage_region: file.object_storage.region,
            object_storage_access_key_id: file.object_storage.access_key_id,
            object_storage_prefix: file.object_storage.prefix,
            object_storage_secret_access_key: None,
            cluster: file.cluster.enabled.map(|b| b.to_string()),
        })
    }

    /// Picks the `GITSTRATUM_*` variables out of an environment.
    pub fn from_env<I, K, V>(vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: Into<String>,
    {
        let mut layer = ConfigLayer::default();
        for (key, value) in vars {
            let value = value.into();
            match key.as_ref() {
                "GITSTRATUM_LISTEN" => layer.listen = Some(value),
                "GITSTRATUM_SSH_LISTEN" => layer.ssh_listen = Some(value),
                "GITSTRATUM_SSH_HOST_KEY" => layer.ssh_host_key = Some(value),
                "GITSTRATUM_DATA_DIR" => layer.data_dir = Some(value.into()),
                "GITSTRATUM_PUBLIC_URL" => layer.public_url = Some(value),
                "GITSTRATUM_DATABASE_URL" => layer.database_url = Some(value),
                "GITSTRATUM_LOG_FORMAT" => layer.log_format = Some(value),
                "GITSTRATUM_LOG_LEVEL" => layer.log_level = Some(value),
                "GITSTRATUM_RATE_LIMIT_PER_CLIENT" => layer.rate_limit_per_client = Some(value),
                "GITSTRATUM_RATE_LIMIT_ANONYMOUS" => layer.rate_limit_anonymous = Some(value),
                "GITSTRATUM_RATE_LIMIT_GIT_PER_REPO" => layer.rate_limit_git_per_repo = Some(value),
                "GITSTRATUM_EMBEDDED_RUNNER" => layer.embedded_runner = Some(value),
                "GITSTRATUM_RUNNER_NETWORK" => layer.runner_network = Some(value),
                "GITSTRATUM_RUNNER_MEMORY_MB" => layer.runner_memory_mb = Some(value),
                "GITSTRATUM_RUNNER_PROCESSES" => layer.runner_processes = Some(value),
                "GITSTRATUM_CI_LEASE_SECONDS" => layer.ci_lease_seconds = Some(value),
                "GITSTRATUM_CI_MAX_ATTEMPTS" => layer.ci_max_attempts = Some(value),
                "GITSTRATUM_CI_LOG_STEP_MAX_MB" => layer.ci_log_step_max_mb = Some(value),
                "GITSTRATUM_CI_MAX_RUNNING_PER_TENANT" => layer.ci_max_running_per_tenant = Some(value),
                "GITSTRATUM_CI_MAX_QUEUED_RUNS_PER_TENANT" => layer.ci_max_queued_runs_per_tenant = Some(value),
                "GITSTRATUM_CI_MAX_MINUTES_PER_MONTH_PER_TENANT" => {
                    layer.ci_max_minutes_per_month_per_tenant = Some(value)
                }
                "GITSTRATUM_CI_LOG_RETENTION_DAYS" => layer.ci_log_retention_days = Some(value),
                "GITSTRATUM_CI_ARTIFACT_MAX_MB" => layer.ci_artifact_max_mb = Some(value),
                "GITSTRATUM_CI_RUN_ARTIFACTS_MAX_MB" => layer.ci_run_artifacts_max_mb = Some(value),
                "GITSTRATUM_CI_ARTIFACT_RETENTION_DAYS" => layer.ci_artifact_retention_days = Some(value),
                "GITSTRATUM_CI_CACHE_MAX_MB" => layer.ci_cache_max_mb = Some(value),
                "GITSTRATUM_CI_REPO_CACHES_MAX_MB" => layer.ci_repo_caches_max_mb = Some(value),
                "GITSTRATUM_WEBHOOK_ALLOWED_HOSTS" => layer.webhook_allowed_hosts = Some(value),
                "GITSTRATUM_ACTIONS_SOURCES" => layer.actions_sources = Some(value),
                "GITSTRATUM_TOKEN_MAX_DAYS" => layer.token_max_days = Some(value),
                "GITSTRATUM_MAX_CONCURRENT_PUSHES" => layer.max_concurrent_pushes = Some(value),
                "GITSTRATUM_PACK_CACHE_MB" => layer.pack_cache_mb = Some(value),
                "GITSTRATUM_GIT_MAINTENANCE_SECS" => layer.git_maintenance_secs = Some(value),
                "GITSTRATUM_GIT_FULL_REPACK_HOURS" => layer.git_full_repack_hours = Some(value),
                "GITSTRATUM_GIT_PRUNE_GRACE_HOURS" => layer.git_prune_grace_hours = Some(value),
                "GITSTRATUM_SECRETS_KEY" => layer.secrets_key = Some(value),
                "GITSTRATUM_OBJECT_STORAGE_ENDPOINT" => layer.object_storage_endpoint = Some(value),
                "GITSTRATUM_OBJECT_STORAGE_BUCKET" => layer.object_storage_bucket = Some(value),
                "GITSTRATUM_OBJECT_STORAGE_REGION" => layer.object_storage_region = Some(value),
                "GITSTRATUM_OBJECT_STORAGE_ACCESS_KEY_ID" => layer.object_storage_access_key_id = Some(value),
                "GITSTRATUM_OBJECT_STORAGE_PREFIX" => layer.object_storage_prefix = Some(value),
                "GITSTRATUM_OBJECT_STORAGE_SECRET_ACCESS_KEY" => layer.object_storage_secret_access_key = Some(value),
                "GITSTRATUM_CLUSTER" => layer.cluster = Some(value),
                _ => {}
            }
        }
        layer
    }

    /// This layer with `over` laid on top: every value `over` sets wins.
    fn overlay(self, over: ConfigLayer) -> ConfigLayer {
        ConfigLayer {
            listen: over.listen.or(self.listen),
            ssh_listen: over.ssh_listen.or(self.ssh_listen),
            ssh_host_key: over.ssh_host_key.or(self.ssh_host_key),
            data_dir: over.data_dir.or(self.data_dir),
            public_url: over.public_url.or(self.public_url),
            database_url: over.database_url.or(self.database_url),
            log_format: over.log_format.or(self.log_format),
            log_level: over.log_level.or(self.log_level),
            rate_limit_per_client: over.rate_limit_per_client.or(self.rate_limit_per_client),
            rate_limit_anonymous: over.rate_limit_anonymous.or(self.rate_limit_anonymous),
            rate_limit_git_per_repo: over.rate_limit_git_per_repo.or(self.rate_limit_git_per_repo),
            embedded_runner: over.embedded_runner.or(self.embedded_runner),
            runner_network: over.runner_network.or(self.runner_network),
            runner_memory_mb: over.runner_memory_mb.or(self.runner_memory_mb),
            runner_processes: over.runner_processes.or(self.runner_processes),
            ci_lease_seconds: over.ci_lease_seconds.or(self.ci_lease_seconds),
            ci_max_attempts: over.ci_max_attempts.or(self.ci_max_attempts),
            ci_log_step_max_mb: over.ci_log_step_max_mb.or(self.ci_log_step_max_mb),
            ci_max_running_per_tenant: over.ci_max_running_per_tenant.or(self.ci_max_running_per_tenant),
            ci_max_queued_runs_per_tenant: over.ci_max_queued_runs_per_tenant.or(self.ci_max_queued_runs_per_tenant),
            ci_max_minutes_per_month_per_tenant: over
                .ci_max_minutes_per_month_per_tenant
                .or(self.ci_max_minutes_per_month_per_tenant),
            ci_log_retention_days: over.ci_log_retention_days.or(self.ci_log_retention_days),
            ci_artifact_max_mb: over.ci_artifact_max_mb.or(self.ci_artifact_max_mb),
            ci_run_artifacts_max_mb: over.ci_run_artifacts_max_mb.or(self.ci_run_artifacts_max_mb),
            ci_artifact_retention_days: over.ci_artifact_retention_days.or(self.ci_artifact_retention_days),
            ci_cache_max_mb: over.ci_cache_max_mb.or(self.ci_cache_max_mb),
            ci_repo_caches_max_mb: over.ci_repo_caches_max_mb.or(self.ci_repo_caches_max_mb),
            webhook_allowed_hosts: over.webhook_allowed_hosts.or(self.webhook_allowed_hosts),
            actions_sources: over.actions_sources.or(self.actions_sources),
            token_max_days: over.token_max_days.or(self.token_max_days),
            max_concurrent_pushes: over.max_concurrent_pushes.or(self.max_concurrent_pushes),
            pack_cache_mb: over.pack_cache_mb.or(self.pack_cache_mb),
            git_maintenance_secs: over.git_maintenance_secs.or(self.git_maintenance_secs),
            git_full_repack_hours: over.git_full_repack_hours.or(self.git_full_repack_hours),
            git_prune_grace_hours: over.git_prune_grace_hours.or(self.git_prune_grace_hours),
            secrets_key: over.secrets_key.or(self.secrets_key),
            cluster: over.cluster.or(self.cluster),
            object_storage_endpoint: over.object_storage_endpoint.or(self.object_storage_endpoint),
            object_storage_bucket: over.object_storage_bucket.or(self.object_storage_bucket),
            object_storage_region: over.object_storage_region.or(self.object_storage_region),
            object_storage_access_key_id: over.object_storage_access_key_id.or(self.object_storage_access_key_id),
            object_storage_prefix: over.object_storage_prefix.or(self.object_storage_prefix),
            object_storage_secret_access_key: over
                .object_storage_secret_access_key
                .or(self.object_storage_secret_access_key),
        }
    }
}

impl Config {
    /// Loads the configuration for a process: `flags` from the command line, `env` from the
    /// process environment. Reads `config.toml` from the data directory when it exists.
    pub fn load<I, K, V>(flags: ConfigLayer, env: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: Into<String>,
    {
        let env = ConfigLayer::from_env(env);
        let data_dir =
            flags.data_dir.clone().or_else(|| env.data_dir.clone()).unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let file = read_config_file(&data_dir.join("config.toml"))?;
        Config::from_layers(file, env, flags)
    }

    /// Merges the layers over the defaults and validates the result.
    pub fn from_layers(file: ConfigLayer, env: ConfigLayer, flags: ConfigLayer) -> Result<Config, ConfigError> {
        let merged = file.overlay(env).overlay(flags);
        let object_storage = object_storage(&merged)?;
        let listen_text = merged.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen = listen_text.parse::<SocketAddr>().map_err(|e| ConfigError::Invalid {
            setting: "listen",
            message: format!("{listen_text:?} is not an address like 127.0.0.1:3000 ({e})"),
        })?;
        let ssh_listen = match merged.ssh_listen.as_deref().map(str::trim) {
            None | Some("" | "off") => None,
            Some(text) => Some(text.parse::<SocketAddr>().map_err(|e| ConfigError::Invalid {
                setting: "ssh.listen",
                message: format!("{text:?} is not an address like 0.0.0.0:2222 ({e}); \"off\" turns SSH off"),
            })?),
        };
        let public_url = merged.public_url.filter(|u| !u.is_empty());
        if let Some(url) = &public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError::Invalid {
                setting: "public_url",
                message: format!("{url:?} must start with http:// or https://"),
            });
        }
        let database_url = merged.database_url.filter(|u| !u.is_empty());
        if let Some(url) = &database_url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err(ConfigError::Invalid {
                setting: "database_url",
                message: format!(
                    "{} is not a PostgreSQL URL (postgres://…); leave it unset for the embedded SQLite database",
                    redact_url(url)
                ),
            });
        }
        let log_format = match merged.log_format.as_deref() {
            None => LogFormat::default(),
            Some(text) => text.parse().map_err(|message| ConfigError::Invalid { setting: "log_format", message })?,
        };
        let log_level = merged.log_level.unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_owned());
        validate_log_filter(&log_level).map_err(|message| ConfigError::Invalid { setting: "log_level", message })?;
        let defaults = RateLimits::default();
        let rate_limits = RateLimits {
            per_client: per_minute("rate_limit.per_client", merged.rate_limit_per_client, defaults.per_client)?,
            anonymous: per_minute("rate_limit.anonymous", merged.rate_limit_anonymous, defaults.anonymous)?,
            git_per_repo: per_minute("rate_limit.git_per_repo", merged.rate_limit_git_per_repo, defaults.git_per_repo)?,
        };
        let cluster_set = matches!(merged.cluster.as_deref().map(str::trim), Some("true") | Some("1"));
        let embedded_runner = match merged.embedded_runner.as_deref().map(str::trim) {
            // A cluster's frontends share one admin, whose embedded runners would take each
            // other's jobs back: cluster mode runs external runners only.
            None if cluster_set => false,
            Some("true") | Some("1") if cluster_set => {
                return Err(ConfigError::Invalid {
                    setting: "runner.embedded",
                    message: "cluster mode runs external runners only (gitstratum runner)".to_owned(),
                });
            }
            None | Some("true") | Some("1") => true,
            Some("false") | Some("0") => false,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    setting: "runner.embedded",
                    message: format!("{other:?} is not true or false"),
                });
            }
        };
        let runner_network = match merged.runner_network.as_deref() {
            None => gitstratum_runner::Network::default(),
            Some(text) => {
                text.parse().map_err(|message| ConfigError::Invalid { setting: "runner.network", message })?
            }
        };
        let defaults = gitstratum_runner::Limits::default();
        let positive = |setting: &'static str, value: Option<String>, default: u64| -> Result<u64, ConfigError> {
            match value {
                None => Ok(default),
                Some(text) => text.trim().parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| ConfigError::Invalid {
                    setting,
                    message: format!("{text:?} is not a positive whole number"),
                }),
            }
        };
        let runner_limits = gitstratum_runner::Limits {
            memory_bytes: positive("runner.memory_mb", merged.runner_memory_mb, defaults.memory_bytes >> 20)? << 20,
            processes: positive("runner.processes", merged.runner_processes, defaults.processes)?,
        };
        let timing = gitstratum_ci::orchestrate::Timing::default();
        let lease_set = merged.ci_lease_seconds.is_some();
        let lease_seconds = positive("ci.lease_seconds", merged.ci_lease_seconds, (timing.lease_ms / 1000) as u64)?;
        if lease_seconds < 3 {
            return Err(ConfigError::Invalid { setting: "ci.lease_seconds", message: "at least 3 seconds".to_owned() });
        }
        let max_attempts = positive("ci.max_attempts", merged.ci_max_attempts, timing.max_attempts as u64)?;
        let ci_timing = if !lease_set {
            gitstratum_ci::orchestrate::Timing { max_attempts: max_attempts.min(100) as i64, ..timing }
        } else {
            gitstratum_ci::orchestrate::Timing::with_lease_seconds(lease_seconds, max_attempts.min(100) as i64)
        };
        let ci_log_step_max_bytes = positive(
            "ci.log_step_max_mb",
            merged.ci_log_step_max_mb,
            gitstratum_ci::logs::DEFAULT_STEP_LOG_BYTES >> 20,
        )? << 20;
        let limit = |setting: &'static str, value: Option<&str>| -> Result<Option<i64>, ConfigError> {
            match value.map(str::trim) {
                None | Some("0") => Ok(None),
                Some(text) => Ok(Some(text.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    ConfigError::Invalid { setting, message: format!("{text:?} is not a whole number (0: no limit)") }
                })?)),
            }
        };
        let ci_tenant_limits = gitstratum_ci::TenantLimits {
            max_running_jobs: limit("ci.max_running_per_tenant", merged.ci_max_running_per_tenant.as_deref())?,
            max_queued_runs: limit("ci.max_queued_runs_per_tenant", merged.ci_max_queued_runs_per_tenant.as_deref())?,
            max_minutes_per_month: limit(
                "ci.max_minutes_per_month_per_tenant",
                merged.ci_max_minutes_per_month_per_tenant.as_deref(),
            )?,
        };
        let artifact_defaults = gitstratum_ci::ArtifactConfig::default();
        let mb = |setting: &'static str, value: Option<String>, default: u64| -> Result<u64, ConfigError> {
            Ok(positive(setting, value, default >> 20)?.min(1 << 24) << 20)
        };
        let ci_artifacts = gitstratum_ci::ArtifactConfig {
            // No Zip64 yet: an artifact's zip stays under 4 GiB.
            max_artifact_bytes: mb(
                "ci.artifact_max_mb",
                merged.ci_artifact_max_mb,
                artifact_defaults.max_artifact_bytes,
            )?
            .min(4000 << 20),
            max_run_bytes: mb(
                "ci.run_artifacts_max_mb",
                merged.ci_run_artifacts_max_mb,
                artifact_defaults.max_run_bytes,
            )?,
            retention_days: positive(
                "ci.artifact_retention_days",
                merged.ci_artifact_retention_days,
                artifact_defaults.retention_days,
            )?
            .min(36_500),
            max_cache_bytes: mb("ci.cache_max_mb", merged.ci_cache_max_mb, artifact_defaults.max_cache_bytes)?,
            max_repo_cache_bytes: mb(
                "ci.repo_caches_max_mb",
                merged.ci_repo_caches_max_mb,
                artifact_defaults.max_repo_cache_bytes,
            )?,
        };
        let secrets_key = match merged.secrets_key.as_deref().map(str::trim).filter(|k| !k.is_empty()) {
            None => None,
            Some(text) => Some(gitstratum_platform::SecretKey::from_hex(text).map_err(|e| ConfigError::Invalid {
                setting: "secrets_key",
                message: format!("GITSTRATUM_SECRETS_KEY: {e}"),
            })?),
        };
        let webhook_destinations =
            gitstratum_core::Destinations::parse(merged.webhook_allowed_hosts.as_deref().unwrap_or("").split(','))
                .map_err(|message| ConfigError::Invalid { setting: "webhooks.allowed_hosts", message })?;
        let actions_sources: Vec<String> = merged
            .actions_sources
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        for source in &actions_sources {
            crate::upstream::parse_source(source)
                .map_err(|message| ConfigError::Invalid { setting: "actions.sources", message })?;
        }
        let cluster = match merged.cluster.as_deref().map(str::trim) {
            None | Some("false") | Some("0") | Some("") => false,
            Some("true") | Some("1") => true,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    setting: "cluster.enabled",
                    message: format!("{other:?} is not true or false"),
                });
            }
        };
        let ssh_host_key = merged.ssh_host_key.filter(|p| !p.trim().is_empty()).map(PathBuf::from);
        if cluster && ssh_listen.is_some() && ssh_host_key.is_none() {
            // Each frontend would make a key of its own, and a client behind a load balancer
            // would see the host key change from one connection to the next.
            return Err(ConfigError::Invalid {
                setting: "ssh.host_key",
                message: "Git over SSH in cluster mode needs one host key for every frontend: \
                          make one (ssh-keygen -t ed25519 -N '' -f FILE) and name FILE here on each"
                    .into(),
            });
        }
        if cluster {
            let missing = if database_url.is_none() {
                Some("a PostgreSQL database ([database] url): it holds the refs")
            } else if object_storage.is_none() {
                Some("object storage ([object_storage]): it holds the packs")
            } else if secrets_key.is_none() {
                Some("GITSTRATUM_SECRETS_KEY, the same on every frontend: each seals and opens the others' secrets")
            } else {
                None
            };
            if let Some(missing) = missing {
                return Err(ConfigError::Invalid {
                    setting: "cluster.enabled",
                    message: format!("cluster mode needs {missing}"),
                });
            }
        }
        Ok(Config {
            cluster,
            object_storage,
            listen,
            ssh_listen,
            ssh_host_key,
            data_dir: merged.data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            public_url,
            database_url,
            log_format,
            log_level,
            rate_limits,
            embedded_runner,
            runner_network,
            runner_limits,
            ci_timing,
            ci_log_step_max_bytes,
            ci_tenant_limits,
            ci_log_retention_days: positive("ci.log_retention_days", merged.ci_log_retention_days, 90)?.min(36_500),
            ci_artifacts,
            secrets_key,
            webhook_destinations,
            actions_sources,
            token_max_days: match merged.token_max_days.as_deref().map(str::trim) {
                None | Some("") => None,
                Some(text) => Some(text.parse::<u32>().ok().filter(|d| (1..=3650).contains(d)).ok_or_else(|| {
                    ConfigError::Invalid {
                        setting: "tokens.max_days",
                        message: format!("{text:?} is not a number of days from 1 to 3650"),
                    }
                })?),
            },
            max_concurrent_pushes: match merged.max_concurrent_pushes.as_deref().map(str::trim) {
                None | Some("") => DEFAULT_MAX_CONCURRENT_PUSHES,
                Some(text) => text.parse::<usize>().ok().filter(|n| (1..=1024).contains(n)).ok_or_else(|| {
                    ConfigError::Invalid {
                        setting: "server.max_concurrent_pushes",
                        message: format!("{text:?} is not a number from 1 to 1024"),
                    }
                })?,
            },
            pack_cache_bytes: match merged.pack_cache_mb.as_deref().map(str::trim) {
                None | Some("") => DEFAULT_PACK_CACHE_MB << 20,
                Some(text) => text.parse::<u64>().ok().filter(|n| *n <= 1 << 24).map(|n| n << 20).ok_or_else(|| {
                    ConfigError::Invalid {
                        setting: "server.pack_cache_mb",
                        message: format!("{text:?} is not a number of MiB (0 turns the cache off)"),
                    }
                })?,
            },
            git_maintenance: GitMaintenance {
                every: match whole("git.maintenance_secs", merged.git_maintenance_secs, 60, 86_400)? {
                    0 => None,
                    n => Some(std::time::Duration::from_secs(n)),
                },
                full_repack_after: hours(whole("git.full_repack_hours", merged.git_full_repack_hours, 24, 87_600)?),
                prune_grace: hours(whole(
                    "git.prune_grace_hours",
                    merged.git_prune_grace_hours,
                    DEFAULT_PRUNE_GRACE_HOURS,
                    87_600,
                )?),
            },
        })
    }
}

/// A whole number from 0 to `max`; `default` when unset.
fn whole(setting: &'static str, value: Option<String>, default: u64, max: u64) -> Result<u64, ConfigError> {
    match value.as_deref().map(str::trim) {
        None | Some("") => Ok(default),
        Some(text) => text.parse::<u64>().ok().filter(|n| *n <= max).ok_or_else(|| ConfigError::Invalid {
            setting,
            message: format!("{text:?} is not a whole number from 0 to {max}"),
        }),
    }
}

fn hours(n: u64) -> std::time::Duration {
    std::time::Duration::from_secs(n * 3600)
}

/// A requests-per-minute setting: a whole number, 0 turning the limit off.
fn per_minute(setting: &'static str, value: Option<String>, default: u32) -> Result<u32, ConfigError> {
    match value {
        None => Ok(default),
        Some(text) => text.trim().parse().map_err(|_| ConfigError::Invalid {
            setting,
            message: format!("{text:?} is not a number of requests per minute (0 turns the limit off)"),
        }),
    }
}

/// Checks a log filter: comma-separated `LEVEL` or `TARGET=LEVEL` directives, where a level is one
/// of `trace`, `debug`, `info`, `warn`, `error`, `off` and a target a Rust module path.
fn validate_log_filter(filter: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let is_level = |s: &str| LEVELS.contains(&s.to_ascii_lowercase().as_str());
    let is_target = |s: &str| {
        !s.is_empty()
            && s.split("::").all(|part| {
                !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            })
    };
    for directive in filter.split(',').map(str::trim) {
        let ok = match directive.split_once('=') {
            Some((target, level)) => is_target(target) && is_level(level),
            None => is_level(directive) || is_target(directive),
        };
        if !ok {
            return Err(format!(
                "{directive:?} in {filter:?} is not a log directive; use a level (trace, debug, info, warn, error, off) or TARGET=LEVEL, e.g. \"info,gitstratum_api=debug\""
            ));
        }
    }
    Ok(())
}

fn read_config_file(path: &Path) -> Result<ConfigLayer, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            ConfigLayer::from_toml(&text).map_err(|message| ConfigError::File { path: path.to_owned(), message })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ConfigLayer::default()),
        Err(source) => Err(ConfigError::Read { path: path.to_owned(), source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(listen: &str, level: &str) -> ConfigLayer {
        ConfigLayer { listen: Some(listen.into()), log_level: Some(level.into()), ..ConfigLayer::default() }
    }

    #[test]
    fn defaults() {
        let c =
            Config::from_layers(ConfigLayer::default(), ConfigLayer::default(), ConfigLayer::default()).expect("valid");
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!((c.log_format, c.log_level.as_str()), (LogFormat::Text, "info"));
        assert_eq!((c.public_url, c.database_url), (None, None));
    }

    #[test]
    fn precedence_is_defaults_file_env_flags() {
        let file = ConfigLayer {
            public_url: Some("http://file".into()),
            log_format: Some("json".into()),
            ..layer("127.0.0.1:1001", "debug")
        };
        let env = ConfigLayer { public_url: Some("http://env".into()), ..layer("127.0.0.1:1002", "") };
        let env = ConfigLayer { log_level: None, ..env };
        let flags = ConfigLayer { listen: Some("127.0.0.1:1003".into()), ..ConfigLayer::default() };

        let c = Config::from_layers(file.clone(), env.clone(), flags.clone()).expect("valid");
        assert_eq!(c.listen.port(), 1003, "flags beat env and file");
        assert_eq!(c.public_url.as_deref(), Some("http://env"), "env beats file");
        assert_eq!(c.log_level, "debug", "file beats defaults");
        assert_eq!(c.log_format, LogFormat::Json);

        let c = Config::from_layers(file.clone(), env, ConfigLayer::default()).expect("valid");
        assert_eq!(c.listen.port(), 1002, "env beats file");
        let c = Config::from_layers(file, ConfigLayer::default(), ConfigLayer::default()).expect("valid");
        assert_eq!(c.listen.port(), 1001, "file beats defaults");
    }

    #[test]
    fn environment_variables() {
        let env = ConfigLayer::from_env([
            ("GITSTRATUM_LISTEN", "0.0.0.0:8080"),
            ("GITSTRATUM_DATA_DIR", "/srv/gs"),
            ("GITSTRATUM_DATABASE_URL", "postgres://u:pw@db/gs"),
            ("GITSTRATUM_LOG_FORMAT", "json"),
            ("GITSTRATUM_UNRELATED", "x"),
            ("PATH", "/bin"),
        ]);
        let c = Config::from_layers(ConfigLayer::default(), env, ConfigLayer::default()).expect("valid");
        assert_eq!(c.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.data_dir, PathBuf::from("/srv/gs"));
        assert_eq!(c.log_format, LogFormat::Json);
        let debug = format!("{c:?}");
        assert!(debug.contains("postgres://u:***@db/gs") && !debug.contains("pw"), "{debug}");
    }

    #[test]
    fn load_reads_the_file_in_the_data_dir() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join("config.toml"),
            "[server]\nlisten = \"127.0.0.1:4000\"\n[log]\nlevel = \"warn\"\n",
        )
        .expect("write");
        let flags = ConfigLayer { data_dir: Some(dir.path().to_owned()), ..ConfigLayer::default() };
        let c = Config::load(flags.clone(), [("GITSTRATUM_LOG_LEVEL", "error")]).expect("valid");
        assert_eq!((c.listen.port(), c.log_level.as_str()), (4000, "error"));

        std::fs::write(dir.path().join("config.toml"), "[server]\nlisten_addr = \"x\"\n").expect("write");
        let err = Config::load(flags, Vec::<(String, String)>::new()).expect_err("unknown key");
        assert!(err.to_string().contains("listen_addr"), "{err}");
    }

    #[test]
    fn example_config_parses_and_every_setting_is_documented() {
        // As shipped, everything is commented out: it must parse to an empty layer.
        assert_eq!(ConfigLayer::from_toml(EXAMPLE_CONFIG).expect("parses"), ConfigLayer::default());
        // Uncommented, it must parse and validate too.
        let uncommented: String = EXAMPLE_CONFIG
            .lines()
            .map(|l| l.strip_prefix("# ").filter(|rest| rest.starts_with('[') || rest.contains(" = ")).unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        let layer = ConfigLayer::from_toml(&uncommented).expect("uncommented example parses");
        for (name, set) in [
            ("listen", layer.listen.is_some()),
            ("ssh listen", layer.ssh_listen.is_some()),
            ("ssh host_key", layer.ssh_host_key.is_some()),
            ("public_url", layer.public_url.is_some()),
            ("database url", layer.database_url.is_some()),
            ("log format", layer.log_format.is_some()),
            ("log level", layer.log_level.is_some()),
            ("rate_limit per_client", layer.rate_limit_per_client.is_some()),
            ("rate_limit anonymous", layer.rate_limit_anonymous.is_some()),
            ("rate_limit git_per_repo", layer.rate_limit_git_per_repo.is_some()),
            ("webhooks allowed_hosts", layer.webhook_allowed_hosts.is_some()),
            ("tokens max_days", layer.token_max_days.is_some()),
            ("server max_concurrent_pushes", layer.max_concurrent_pushes.is_some()),
            ("server pack_cache_mb", layer.pack_cache_mb.is_some()),
            ("git maintenance_secs", layer.git_maintenance_secs.is_some()),
            ("git full_repack_hours", layer.git_full_repack_hours.is_some()),
            ("git prune_grace_hours", layer.git_prune_grace_hours.is_some()),
            ("actions sources", layer.actions_sources.is_some()),
            ("object_storage bucket", layer.object_storage_bucket.is_some()),
            ("cluster enabled", layer.cluster.is_some()),
        ] {
            assert!(set, "the example config does not show {name}");
        }
        // Cluster mode (shown enabled) takes the secrets key from the environment and external
        // runners only.
        let secret = ConfigLayer {
            object_storage_secret_access_key: Some("s3cret".into()),
            secrets_key: Some("ab".repeat(32)),
            embedded_runner: Some("false".into()),
            ..Default::default()
        };
        Config::from_layers(layer, secret, ConfigLayer::default()).expect("example values validate");
    }

    #[test]
    fn log_filters() {
        for good in ["info", "WARN", "info,gitstratum_api=debug", "gitstratum_platform::db=trace", "off", "gitstratum"]
        {
            assert!(validate_log_filter(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn invalid_values_are_named() {
        for (flags, setting) in [
            (ConfigLayer { listen: Some("localhost".into()), ..Default::default() }, "listen"),
            (ConfigLayer { ssh_listen: Some("localhost:22".into()), ..Default::default() }, "ssh.listen"),
            (ConfigLayer { public_url: Some("git.example.com".into()), ..Default::default() }, "public_url"),
            (ConfigLayer { database_url: Some("mysql://x".into()), ..Default::default() }, "database_url"),
            (ConfigLayer { log_format: Some("yaml".into()), ..Default::default() }, "log_format"),
            (ConfigLayer { log_level: Some("loud!".into()), ..Default::default() }, "log_level"),
            (ConfigLayer { log_level: Some("info,x=shout".into()), ..Default::default() }, "log_level"),
            (ConfigLayer { log_level: Some("".into()), ..Default::default() }, "log_level"),
            (
                ConfigLayer { object_storage_bucket: Some("b".into()), ..Default::default() },
                "object_storage.access_key_id",
            ),
            (
                ConfigLayer {
                    object_storage_bucket: Some("b".into()),
                    object_storage_access_key_id: Some("k".into()),
                    ..Default::default()
                },
                "object_storage.secret_access_key",
            ),
            (
                ConfigLayer {
                    object_storage_bucket: Some("b".into()),
                    object_storage_endpoint: Some("garage:3900".into()),
                    ..Default::default()
                },
                "object_storage.endpoint",
            ),
            (ConfigLayer { cluster: Some("yes".into()), ..Default::default() }, "cluster.enabled"),
            (ConfigLayer { cluster: Some("true".into()), ..Default::default() }, "cluster.enabled"),
            (ConfigLayer { cluster: Some("true".into()), ..cluster_layer() }.without_secrets_key(), "cluster.enabled"),
            (ConfigLayer { embedded_runner: Some("true".into()), ..cluster_layer() }, "runner.embedded"),
        ] {
            let err = Config::from_layers(ConfigLayer::default(), ConfigLayer::default(), flags).expect_err("invalid");
            assert!(matches!(err, ConfigError::Invalid { setting: s, .. } if s == setting), "{err}");
        }
    }

    fn cluster_layer() -> ConfigLayer {
        ConfigLayer {
            cluster: Some("true".into()),
            database_url: Some("postgres://db/x".into()),
            object_storage_bucket: Some("b".into()),
            object_storage_access_key_id: Some("k".into()),
            object_storage_secret_access_key: Some("s".into()),
            secrets_key: Some("ab".repeat(32)),
            ..Default::default()
        }
    }

    impl ConfigLayer {
        fn without_secrets_key(self) -> ConfigLayer {
            ConfigLayer { secrets_key: None, ..self }
        }
    }

    /// Cluster mode needs PostgreSQL, object storage and a shared secrets key, and turns the
    /// embedded runner off unless told otherwise (then it refuses).
    #[test]
    fn cluster_mode_needs_its_parts() {
        let config =
            Config::from_layers(ConfigLayer::default(), ConfigLayer::default(), cluster_layer()).expect("valid");
        assert!(config.cluster && !config.embedded_runner);
        let file = ConfigLayer::from_toml("[cluster]\nenabled = true\n").expect("parses");
        assert_eq!(file.cluster.as_deref(), Some("true"));
        let single =
            Config::from_layers(ConfigLayer::default(), ConfigLayer::default(), ConfigLayer::default()).expect("valid");
        assert!(!single.cluster && single.embedded_runner);
        // SSH in a cluster needs one host key for all frontends.
        let ssh = ConfigLayer { ssh_listen: Some("0.0.0.0:2222".into()), ..ConfigLayer::default() };
        let err = Config::from_layers(ConfigLayer::default(), ssh.clone(), cluster_layer()).expect_err("no host key");
        assert!(matches!(err, ConfigError::Invalid { setting: "ssh.host_key", .. }), "{err}");
        let keyed = ConfigLayer { ssh_host_key: Some("/etc/gitstratum/host_key".into()), ..ssh };
        let config = Config::from_layers(ConfigLayer::default(), keyed, cluster_layer()).expect("valid");
        assert_eq!(config.ssh_host_key.as_deref(), Some(std::path::Path::new("/etc/gitstratum/host_key")));
    }
}
