//! The HTTP surface of GitStratum: the REST API under `/api/v1/`, health and readiness, Prometheus
//! metrics, request ids and authentication of API callers.
//!
//! What it owns: wire formats (JSON bodies, error shape) and the mapping of requests onto services.
//! What it must never do: touch storage except through the service types it is given, read the
//! environment, or install global state (the metrics recorder is installed by the binary).
//! Key items: [`AppState`], [`router`], [`error::ApiError`].

#![forbid(unsafe_code)]

pub mod actions;
pub mod artifacts;
pub mod branches;
pub mod docs;
pub mod error;
pub mod extract;
pub mod git;
pub mod hooks;
pub mod keys_teams;
pub mod live;
pub mod observe;
pub mod openapi;
pub mod orgs;
pub mod protection;
pub mod pull_comments;
pub mod pull_timeline;
pub mod pulls;
pub mod ratelimit;
pub mod repos;
pub mod runner;
pub mod runs;
pub mod secrets;
pub mod session;
pub mod ssh;
pub mod tokens;
pub mod usage;
pub mod web;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use gitstratum_core::{Clock, Timestamp};
use gitstratum_frontend::GitService;
use gitstratum_platform::PlatformStore;
use metrics_exporter_prometheus::PrometheusHandle;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Largest JSON body the API accepts.
pub const MAX_JSON_BODY_BYTES: usize = 1 << 20;

/// The CI engine's parts the API serves: runs, jobs and the runner protocol (`store`, shared
/// with the ingestor so queued jobs wake runners), and job logs.
pub struct CiParts {
    pub store: gitstratum_ci::CiStore,
    pub logs: Arc<gitstratum_ci::LogStore>,
    /// Artifacts and caches.
    pub artifacts: Arc<gitstratum_ci::Artifacts>,
    /// The key CI secrets are sealed with.
    pub secrets_key: gitstratum_platform::SecretKey,
    /// Where actions of repositories this installation lacks are looked up.
    pub upstream: Arc<dyn gitstratum_ci::upstream::Upstream>,
}

/// Everything handlers need. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    store: PlatformStore,
    ci: gitstratum_ci::CiStore,
    logs: Arc<gitstratum_ci::LogStore>,
    artifacts: Arc<gitstratum_ci::Artifacts>,
    secrets_key: gitstratum_platform::SecretKey,
    upstream: Arc<dyn gitstratum_ci::upstream::Upstream>,
    git: GitService,
    clock: Arc<dyn Clock>,
    metrics: PrometheusHandle,
    public_url: String,
    limiters: ratelimit::Limiters,
    /// Non-public destinations webhooks may be created for anyway.
    webhook_destinations: gitstratum_core::Destinations,
    token_max_days: Option<u32>,
    /// Permits to read a push's body: bounds the memory pushes take (each is read whole).
    push_bodies: Arc<tokio::sync::Semaphore>,
    ssh: Option<(String, u16)>,
}

/// The site's rules for callers: rate limits, and where webhooks may point.
pub struct Policies {
    pub rate_limits: ratelimit::RateLimits,
    /// Non-public destinations webhooks may be created for anyway.
    pub webhook_destinations: gitstratum_core::Destinations,
    /// The longest a token may live, in days; `None`: no cap.
    pub token_max_days: Option<u32>,
    /// Pushes whose bodies may be read at once.
    pub max_concurrent_pushes: usize,
    /// Rate limits hold across the servers sharing the database (cluster mode).
    pub shared_rate_limits: bool,
    /// Where clients reach Git over SSH, `(host, port)`, when it is served.
    pub ssh: Option<(String, u16)>,
}

impl AppState {
    /// `public_url` is the base clients reach this server at (used in clone URLs), without a
    /// trailing slash.
    pub fn new(
        store: PlatformStore,
        git: GitService,
        clock: Arc<dyn Clock>,
        metrics: PrometheusHandle,
        public_url: &str,
        policies: Policies,
        ci: CiParts,
    ) -> Self {
        let public_url = public_url.trim_end_matches('/').to_owned();
        AppState {
            inner: Arc::new(Inner {
                ci: ci.store,
                logs: ci.logs,
                artifacts: ci.artifacts,
                secrets_key: ci.secrets_key,
                upstream: ci.upstream,
                store,
                git,
                clock,
                metrics,
                public_url,
                limiters: if policies.shared_rate_limits {
                    ratelimit::Limiters::shared(policies.rate_limits)
                } else {
                    ratelimit::Limiters::new(policies.rate_limits)
                },
                webhook_destinations: policies.webhook_destinations,
                token_max_days: policies.token_max_days,
                push_bodies: Arc::new(tokio::sync::Semaphore::new(policies.max_concurrent_pushes.max(1))),
                ssh: policies.ssh,
            }),
        }
    }

    /// Shares this server's rate-limit counts with the others on the database until the state
    /// is dropped (cluster mode; nothing otherwise).
    pub fn spawn_rate_limit_sync(&self) -> Option<tokio::task::JoinHandle<()>> {
        self.inner.limiters.is_shared().then(|| {
            let state = Arc::downgrade(&self.inner);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(ratelimit::SYNC_EVERY);
                loop {
                    tick.tick().await;
                    let Some(inner) = state.upgrade() else { return };
                    inner.limiters.sync(&inner.store).await;
                }
            })
        })
    }

    pub fn git(&self) -> &GitService {
        &self.inner.git
    }

    pub fn store(&self) -> &PlatformStore {
        &self.inner.store
    }

    /// Non-public destinations webhooks may be created for anyway (`[webhooks] allowed_hosts`).
    pub fn webhook_destinations(&self) -> &gitstratum_core::Destinations {
        &self.inner.webhook_destinations
    }

    /// Permits to read a push's body (`[server] max_concurrent_pushes`).
    pub fn push_bodies(&self) -> &Arc<tokio::sync::Semaphore> {
        &self.inner.push_bodies
    }

    /// The longest a token may live, in days (`[tokens] max_days`).
    pub fn token_max_days(&self) -> Option<u32> {
        self.inner.token_max_days
    }

    /// CI state: runs, jobs and steps (in the platform database).
    /// What runs' references to other repositories (actions, reusable workflows) are read from.
    pub fn reference_stores(&self) -> gitstratum_ci::references::Stores<'_> {
        gitstratum_ci::references::Stores {
            platform: &self.inner.store,
            ci: &self.inner.ci,
            objects: self.inner.git.objects(),
            refs: self.inner.git.refs(),
            upstream: self.inner.upstream.as_ref(),
        }
    }

    pub fn ci(&self) -> &gitstratum_ci::CiStore {
        &self.inner.ci
    }

    /// The key CI secrets are sealed with.
    pub fn secrets_key(&self) -> &gitstratum_platform::SecretKey {
        &self.inner.secrets_key
    }

    /// Job logs.
    pub fn logs(&self) -> &gitstratum_ci::LogStore {
        &self.inner.logs
    }

    /// Artifacts and caches.
    pub fn artifacts(&self) -> &gitstratum_ci::Artifacts {
        &self.inner.artifacts
    }

    pub(crate) fn artifacts_arc(&self) -> Arc<gitstratum_ci::Artifacts> {
        self.inner.artifacts.clone()
    }

    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    pub fn metrics(&self) -> &PrometheusHandle {
        &self.inner.metrics
    }

    pub(crate) fn limiters(&self) -> &ratelimit::Limiters {
        &self.inner.limiters
    }

    /// A repository's SSH clone URL, when Git over SSH is served: `git@host:owner/name.git` on
    /// port 22 (what GitHub shows), `ssh://git@host:port/owner/name.git` on any other.
    pub fn ssh_url(&self, owner: &str, name: &str) -> Option<String> {
        let (host, port) = self.inner.ssh.as_ref()?;
        Some(match port {
            22 => format!("git@{host}:{owner}/{name}.git"),
            port => format!("ssh://git@{host}:{port}/{owner}/{name}.git"),
        })
    }

    pub fn public_url(&self) -> &str {
        &self.inner.public_url
    }
}

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    let (api, doc) = OpenApiRouter::<AppState>::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(repos::create))
        .routes(routes!(repos::get, repos::update, repos::delete))
        .routes(routes!(repos::fork, repos::forks))
        .routes(routes!(branches::delete))
        .routes(routes!(repos::collaborators))
        .routes(routes!(repos::teams))
        .routes(routes!(repos::set_collaborator, repos::remove_collaborator))
        .routes(routes!(pulls::create, pulls::list))
        .routes(routes!(pulls::get, pulls::update))
        .routes(routes!(pulls::merge, pulls::merged))
        .routes(routes!(pull_comments::create, pull_comments::list))
        .routes(routes!(pull_timeline::timeline))
        .routes(routes!(pull_timeline::checks))
        .routes(routes!(pull_comments::request, pull_comments::requested, pull_comments::withdraw))
        .routes(routes!(protection::create_review, protection::list_reviews))
        .routes(routes!(protection::put, protection::get, protection::delete))
        .routes(routes!(protection::put_org_default, protection::get_org_default, protection::delete_org_default))
        .routes(routes!(hooks::list, hooks::create))
        .routes(routes!(hooks::delete))
        .routes(routes!(hooks::deliveries))
        .routes(routes!(hooks::redeliver))
        .routes(routes!(usage::org_usage))
        .routes(routes!(usage::user_usage))
        .routes(routes!(usage::org_limits, usage::set_org_limits))
        .routes(routes!(usage::repo_settings, usage::set_repo_settings))
        .routes(routes!(usage::actions_permissions, usage::set_actions_permissions))
        .routes(routes!(secrets::list_repo_secrets))
        .routes(routes!(secrets::put_repo_secret, secrets::delete_repo_secret))
        .routes(routes!(secrets::list_org_secrets))
        .routes(routes!(secrets::put_org_secret, secrets::delete_org_secret))
        .routes(routes!(secrets::list_repo_variables))
        .routes(routes!(secrets::put_repo_variable, secrets::delete_repo_variable))
        .routes(routes!(secrets::list_org_variables))
        .routes(routes!(secrets::put_org_variable, secrets::delete_org_variable))
        .routes(routes!(hooks::list_org, hooks::create_org))
        .routes(routes!(hooks::delete_org))
        .routes(routes!(hooks::org_deliveries))
        .routes(routes!(hooks::org_redeliver))
        .routes(routes!(orgs::create, orgs::list))
        .routes(routes!(orgs::members))
        .routes(routes!(orgs::set_member, orgs::remove_member))
        .routes(routes!(orgs::create_user))
        .routes(routes!(orgs::suspend, orgs::unsuspend))
        .routes(routes!(orgs::delete_user))
        .routes(routes!(orgs::user_tokens))
        .routes(routes!(orgs::revoke_user_token))
        .routes(routes!(tokens::whoami))
        .routes(routes!(repos::list_mine))
        .routes(routes!(keys_teams::list_keys, keys_teams::add_key))
        .routes(routes!(keys_teams::remove_key))
        .routes(routes!(keys_teams::list_teams, keys_teams::create_team))
        .routes(routes!(keys_teams::team_members))
        .routes(routes!(keys_teams::add_team_member, keys_teams::remove_team_member))
        .routes(routes!(keys_teams::set_team_repo, keys_teams::remove_team_repo))
        .routes(routes!(session::login, session::logout))
        .routes(routes!(tokens::create, tokens::list))
        .routes(routes!(tokens::revoke))
        .routes(routes!(orgs::audit))
        .routes(routes!(runs::list))
        .routes(routes!(runs::get))
        .routes(routes!(runs::job_logs))
        .routes(routes!(live::job_log_stream))
        .routes(routes!(live::run_events))
        .routes(routes!(runs::dispatch))
        .routes(routes!(runs::commit_status))
        .routes(routes!(runs::cancel))
        .routes(routes!(runs::rerun))
        .routes(routes!(runs::rerun_failed))
        .routes(routes!(runner::register))
        .routes(routes!(runner::request))
        .routes(routes!(runner::ack))
        .routes(routes!(runner::heartbeat))
        .routes(routes!(runner::logs))
        .routes(routes!(runner::step))
        .routes(routes!(runner::complete))
        .routes(routes!(actions::resolve_action))
        .routes(routes!(actions::action_archive))
        .routes(routes!(artifacts::finish_artifact, artifacts::job_artifacts))
        .routes(routes!(artifacts::job_artifact_archive))
        .routes(routes!(artifacts::cache_lookup))
        .routes(routes!(artifacts::finish_cache))
        .routes(routes!(artifacts::cache_archive))
        .routes(routes!(artifacts::run_artifacts))
        .routes(routes!(artifacts::get, artifacts::delete))
        .routes(routes!(artifacts::download))
        .routes(routes!(artifacts::repo_caches))
        .routes(routes!(artifacts::delete_cache))
        .merge(
            // Upload chunks are bigger than JSON bodies.
            OpenApiRouter::new()
                .routes(routes!(artifacts::upload_chunk))
                .layer(DefaultBodyLimit::max(gitstratum_ci::artifacts::MAX_CHUNK_BYTES)),
        )
        .split_for_parts();
    let doc = openapi::finish(doc);
    let api = api
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(state.clone(), ratelimit::api_layer))
        .route("/api/v1/openapi.json", get(move || std::future::ready(axum::Json(doc))));
    let git = Router::new()
        .route("/{owner}/{repo}/info/refs", get(git::info_refs))
        .route("/{owner}/{repo}/git-upload-pack", axum::routing::post(git::upload_pack))
        .route("/{owner}/{repo}/git-receive-pack", axum::routing::post(git::receive_pack))
        .layer(DefaultBodyLimit::max(git::MAX_GIT_BODY_BYTES as usize))
        .layer(axum::middleware::from_fn_with_state(state.clone(), ratelimit::git_layer));
    Router::new()
        .route("/healthz", get(observe::healthz))
        .route("/readyz", get(observe::readyz))
        .route("/metrics", get(observe::metrics))
        .merge(api)
        .merge(docs::routes())
        .merge(git)
        .merge(web::routes().layer(axum::middleware::from_fn_with_state(state.clone(), ratelimit::web_layer)))
        .fallback(observe::not_found)
        .method_not_allowed_fallback(observe::method_not_allowed)
        .layer(axum::middleware::from_fn(observe::observe))
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe::security_headers))
        .with_state(state)
}
