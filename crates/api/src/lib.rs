//! The HTTP surface of GitStratum: the REST API under `/api/v1/`, health and readiness, Prometheus
//! metrics, request ids and authentication of API callers.
//!
//! What it owns: wire formats (JSON bodies, error shape) and the mapping of requests onto services.
//! What it must never do: touch storage except through the service types it is given, read the
//! environment, or install global state (the metrics recorder is installed by the binary).
//! Key items: [`AppState`], [`router`], [`error::ApiError`].

#![forbid(unsafe_code)]

pub mod error;
pub mod extract;
pub mod git;
pub mod hooks;
pub mod keys_teams;
pub mod observe;
pub mod orgs;
pub mod ratelimit;
pub mod repos;
pub mod session;
pub mod tokens;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use gitstratum_core::{Clock, Timestamp};
use gitstratum_frontend::GitService;
use gitstratum_platform::PlatformStore;
use metrics_exporter_prometheus::PrometheusHandle;

/// Largest JSON body the API accepts.
pub const MAX_JSON_BODY_BYTES: usize = 1 << 20;

/// Everything handlers need. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    store: PlatformStore,
    git: GitService,
    clock: Arc<dyn Clock>,
    metrics: PrometheusHandle,
    public_url: String,
    login_guard: session::LoginGuard,
    limiters: ratelimit::Limiters,
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
        limits: ratelimit::RateLimits,
    ) -> Self {
        let public_url = public_url.trim_end_matches('/').to_owned();
        AppState {
            inner: Arc::new(Inner {
                store,
                git,
                clock,
                metrics,
                public_url,
                login_guard: session::LoginGuard::default(),
                limiters: ratelimit::Limiters::new(limits),
            }),
        }
    }

    pub fn git(&self) -> &GitService {
        &self.inner.git
    }

    pub fn store(&self) -> &PlatformStore {
        &self.inner.store
    }

    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    pub fn metrics(&self) -> &PrometheusHandle {
        &self.inner.metrics
    }

    pub(crate) fn limiters(&self) -> &ratelimit::Limiters {
        &self.inner.limiters
    }

    pub(crate) fn login_guard(&self) -> &session::LoginGuard {
        &self.inner.login_guard
    }

    pub fn public_url(&self) -> &str {
        &self.inner.public_url
    }
}

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/api/v1/repos", axum::routing::post(repos::create))
        .route("/api/v1/repos/{owner}/{repo}", get(repos::get).delete(repos::delete).patch(repos::update))
        .route("/api/v1/repos/{owner}/{repo}/collaborators", get(repos::collaborators))
        .route(
            "/api/v1/repos/{owner}/{repo}/collaborators/{username}",
            axum::routing::put(repos::set_collaborator).delete(repos::remove_collaborator),
        )
        .route("/api/v1/repos/{owner}/{repo}/hooks", get(hooks::list).post(hooks::create))
        .route("/api/v1/repos/{owner}/{repo}/hooks/{id}", axum::routing::delete(hooks::delete))
        .route("/api/v1/repos/{owner}/{repo}/hooks/{id}/deliveries", get(hooks::deliveries))
        .route(
            "/api/v1/repos/{owner}/{repo}/hooks/{id}/deliveries/{delivery}/redeliver",
            axum::routing::post(hooks::redeliver),
        )
        .route("/api/v1/orgs", axum::routing::post(orgs::create).get(orgs::list))
        .route("/api/v1/orgs/{org}/members", get(orgs::members))
        .route(
            "/api/v1/orgs/{org}/members/{username}",
            axum::routing::put(orgs::set_member).delete(orgs::remove_member),
        )
        .route("/api/v1/users", axum::routing::post(orgs::create_user))
        .route("/api/v1/user", get(tokens::whoami))
        .route("/api/v1/user/repos", get(repos::list_mine))
        .route("/api/v1/user/keys", get(keys_teams::list_keys).post(keys_teams::add_key))
        .route("/api/v1/user/keys/{id}", axum::routing::delete(keys_teams::remove_key))
        .route("/api/v1/orgs/{org}/teams", get(keys_teams::list_teams).post(keys_teams::create_team))
        .route("/api/v1/orgs/{org}/teams/{team}/members", get(keys_teams::team_members))
        .route(
            "/api/v1/orgs/{org}/teams/{team}/members/{username}",
            axum::routing::put(keys_teams::add_team_member).delete(keys_teams::remove_team_member),
        )
        .route(
            "/api/v1/orgs/{org}/teams/{team}/repos/{owner}/{repo}",
            axum::routing::put(keys_teams::set_team_repo).delete(keys_teams::remove_team_repo),
        )
        .route("/api/v1/session", axum::routing::post(session::login).delete(session::logout))
        .route("/api/v1/tokens", axum::routing::post(tokens::create).get(tokens::list))
        .route("/api/v1/tokens/{id}", axum::routing::delete(tokens::revoke))
        .route("/api/v1/audit", get(orgs::audit))
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(state.clone(), ratelimit::api_layer));
    let git = Router::new()
        .route("/{owner}/{repo}/info/refs", get(git::info_refs))
        .route("/{owner}/{repo}/git-upload-pack", axum::routing::post(git::upload_pack))
        .route("/{owner}/{repo}/git-receive-pack", axum::routing::post(git::receive_pack))
        .layer(DefaultBodyLimit::max(git::MAX_GIT_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(state.clone(), ratelimit::git_layer));
    Router::new()
        .route("/healthz", get(observe::healthz))
        .route("/readyz", get(observe::readyz))
        .route("/metrics", get(observe::metrics))
        .merge(api)
        .merge(git)
        .fallback(observe::not_found)
        .method_not_allowed_fallback(observe::method_not_allowed)
        .layer(axum::middleware::from_fn(observe::observe))
        .with_state(state)
}
