//! Rate limits (token buckets, GCRA via `governor`): per client on the API and on Git (a client is
//! the credentials it presents, or its address when anonymous), and per repository on Git, as seed
//! 001's frontend checks before each clone and push. Excess requests get 429 with `Retry-After`;
//! every limited response carries `X-RateLimit-Limit` and `X-RateLimit-Remaining`, as GitHub's do.
//!
//! State lives in this process. In cluster mode ([`Limiters::shared`]) each limit also holds
//! across the frontends: every frontend counts what it takes, adds it to the platform database's
//! per-minute counts every [`SYNC_EVERY`] and reads the totals back; a request is refused once the
//! cluster's total for the current minute reached the limit. So a client spread over frontends
//! gets the limit once, not once per frontend (give or take what the frontends take between two
//! syncs); if the database is unreachable, each frontend keeps its own limits.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use crate::AppState;
use crate::error::ApiError;

/// Requests per minute allowed (each also the burst); 0 turns a limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// Per token (API and Git).
    pub per_client: u32,
    /// Per client address, for API requests without credentials (anonymous Git requests count
    /// against their repository only: git's first request of every operation is anonymous).
    pub anonymous: u32,
    /// Per repository, Git requests only (all clients together).
    pub git_per_repo: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits { per_client: 6000, anonymous: 600, git_per_repo: 60_000 }
    }
}

type Keyed = RateLimiter<u64, DefaultKeyedStateStore<u64>, DefaultClock, StateInformationMiddleware>;

struct Limit {
    per_minute: u32,
    limiter: Keyed,
}

impl Limit {
    fn new(per_minute: u32) -> Option<Limit> {
        let n = NonZeroU32::new(per_minute)?;
        Some(Limit { per_minute, limiter: RateLimiter::keyed(Quota::per_minute(n)).with_middleware() })
    }
}

/// Which limit refused a request, and when to come back.
struct Refusal {
    limit: &'static str,
    per_minute: u32,
    retry_after_secs: u64,
}

pub struct Limiters {
    client: Option<Limit>,
    anonymous: Option<Limit>,
    repo: Option<Limit>,
    checks: AtomicU64,
    shared: Option<Shared>,
}

/// How often a frontend adds its counts to the cluster's and reads the totals (cluster mode).
pub const SYNC_EVERY: Duration = Duration::from_millis(250);

/// The cluster's view of the limits (see the module's documentation).
#[derive(Default)]
struct Shared {
    /// Requests taken here since the last sync, by shared key.
    pending: Mutex<HashMap<u64, u32>>,
    /// The cluster's totals of a minute as of the last sync, by shared key.
    totals: Mutex<(i64, HashMap<u64, u64>)>,
}

/// A key the same on every frontend whatever its build (FNV-1a over the limit's name and the
/// local key), so their counts add up.
fn shared_key(name: &str, key: u64) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes().chain([0]).chain(key.to_be_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn key(parts: &[&str]) -> u64 {
    let mut h = DefaultHasher::new();
    parts.hash(&mut h);
    h.finish()
}

impl Limiters {
    pub fn new(limits: RateLimits) -> Limiters {
        Limiters {
            client: Limit::new(limits.per_client),
            anonymous: Limit::new(limits.anonymous),
            repo: Limit::new(limits.git_per_repo),
            checks: AtomicU64::new(0),
            shared: None,
        }
    }

    /// Limits that also hold across a cluster's frontends ([`Limiters::sync`] keeps them so).
    pub fn shared(limits: RateLimits) -> Limiters {
        Limiters { shared: Some(Shared::default()), ..Limiters::new(limits) }
    }

    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Takes one request from the cluster's count of a limit (cluster mode).
    fn take_shared(&self, limit: &Limit, name: &'static str, key: u64) -> Result<(), Refusal> {
        let Some(shared) = &self.shared else { return Ok(()) };
        let now = now_ms();
        let minute = now / 60_000;
        let key = shared_key(name, key);
        let total = {
            let totals = shared.totals.lock().unwrap_or_else(|e| e.into_inner());
            if totals.0 == minute { totals.1.get(&key).copied().unwrap_or(0) } else { 0 }
        };
        let mut pending = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
        let mine = pending.entry(key).or_default();
        if total + u64::from(*mine) >= u64::from(limit.per_minute) {
            let left_ms = (minute + 1) * 60_000 - now;
            return Err(Refusal {
                limit: name,
                per_minute: limit.per_minute,
                retry_after_secs: u64::try_from((left_ms + 999) / 1000).unwrap_or(1).max(1),
            });
        }
        *mine += 1;
        Ok(())
    }

    /// Adds what this frontend took since the last sync to the cluster's counts and reads the
    /// totals back; on failure the counts wait for the next sync.
    pub async fn sync(&self, store: &gitstratum_platform::PlatformStore) {
        let Some(shared) = &self.shared else { return };
        let batch: HashMap<u64, u32> = std::mem::take(&mut *shared.pending.lock().unwrap_or_else(|e| e.into_inner()));
        if batch.is_empty() {
            return;
        }
        let minute = now_ms() / 60_000;
        let counts: Vec<(i64, i64)> = batch.iter().map(|(k, n)| (*k as i64, i64::from(*n))).collect();
        match store.add_rate_counts(minute, &counts).await {
            Ok(totals) => {
                let mut current = shared.totals.lock().unwrap_or_else(|e| e.into_inner());
                if current.0 != minute {
                    *current = (minute, HashMap::new());
                }
                for (key, total) in totals {
                    current.1.insert(key as u64, u64::try_from(total).unwrap_or(0));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "rate limits: cannot share this frontend's counts");
                let mut pending = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
                for (key, n) in batch {
                    *pending.entry(key).or_default() += n;
                }
            }
        }
    }

    /// Takes one request from a limit; `Ok` carries (limit, remaining) for the headers.
    fn take(&self, limit: Option<&Limit>, name: &'static str, key: u64) -> Result<Option<(u32, u32)>, Refusal> {
        let Some(limit) = limit else { return Ok(None) };
        match limit.limiter.check_key(&key) {
            Ok(snapshot) => {
                self.take_shared(limit, name, key)?;
                Ok(Some((limit.per_minute, snapshot.remaining_burst_capacity())))
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Err(Refusal { limit: name, per_minute: limit.per_minute, retry_after_secs: wait.as_secs().max(1) })
            }
        }
    }

    fn check(
        &self,
        headers: &HeaderMap,
        addr: Option<SocketAddr>,
        repo: Option<&str>,
    ) -> Result<Option<(u32, u32)>, Refusal> {
        // Forget idle keys now and then, so the tables stay as small as the active clients.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            for limit in [&self.client, &self.anonymous, &self.repo].into_iter().flatten() {
                limit.limiter.retain_recent();
            }
        }
        let client = match headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
            // The credentials as presented: a bad token is limited like a good one.
            Some(credentials) => self.take(self.client.as_ref(), "client", key(&["token", credentials]))?,
            // Git sends its first request of every operation without credentials and repeats it
            // with them after the 401, so anonymous Git traffic is left to the repository limit.
            None if repo.is_some() => None,
            None => {
                let ip = addr.map(|a| a.ip().to_string()).unwrap_or_default();
                self.take(self.anonymous.as_ref(), "anonymous", key(&["address", &ip]))?
            }
        };
        if let Some(repo) = repo {
            self.take(self.repo.as_ref(), "repository", key(&["repo", &repo.to_ascii_lowercase()]))?;
        }
        Ok(client)
    }
}

impl Limiters {
    /// One Git command over SSH: counted against its key (the per-client limit, as a token's
    /// requests are) and its repository. The refusal is what the client is told.
    pub(crate) fn check_ssh(&self, fingerprint: &str, repo: &str) -> Result<(), String> {
        let taken = self
            .take(self.client.as_ref(), "client", key(&["ssh", fingerprint]))
            .and_then(|_| self.take(self.repo.as_ref(), "repository", key(&["repo", &repo.to_ascii_lowercase()])));
        taken.map(drop).map_err(|refusal| {
            metrics::counter!("gitstratum_control_ratelimit_throttled_total", "limit" => refusal.limit).increment(1);
            format!(
                "rate limit exceeded ({} requests per minute per {}); retry in {} s",
                refusal.per_minute, refusal.limit, refusal.retry_after_secs
            )
        })
    }
}

/// `owner/repo` of a Git request path (`/{owner}/{repo}[.git]/…`).
fn git_repo(path: &str) -> Option<String> {
    let mut parts = path.trim_start_matches('/').splitn(3, '/');
    let owner = parts.next()?;
    let repo = parts.next()?;
    Some(format!("{owner}/{}", repo.strip_suffix(".git").unwrap_or(repo)))
}

/// Which surface a request came in on: how its client is known and how a refusal is worded.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Surface {
    Api,
    Git,
    Web,
}

/// A page's client: its session cookie, counted as that token's (the same bucket its API use
/// has); none: its address.
fn page_credentials(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    let session = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == crate::session::SESSION_COOKIE)
        .map(|(_, v)| v);
    if let Some(value) = session.and_then(|s| HeaderValue::from_str(&format!("Bearer {s}")).ok()) {
        out.insert(header::AUTHORIZATION, value);
    }
    out
}

async fn limit(state: AppState, request: Request, next: Next, surface: Surface) -> Response {
    let addr = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let repo = if surface == Surface::Git { git_repo(request.uri().path()) } else { None };
    let page_headers;
    let headers = if surface == Surface::Web {
        page_headers = page_credentials(request.headers());
        &page_headers
    } else {
        request.headers()
    };
    match state.limiters().check(headers, addr, repo.as_deref()) {
        Ok(headroom) => {
            let mut response = next.run(request).await;
            if let Some((limit, remaining)) = headroom {
                let headers = response.headers_mut();
                headers.insert("x-ratelimit-limit", HeaderValue::from(limit));
                headers.insert("x-ratelimit-remaining", HeaderValue::from(remaining));
            }
            response
        }
        Err(refusal) => {
            metrics::counter!("gitstratum_control_ratelimit_throttled_total", "limit" => refusal.limit).increment(1);
            let message = format!(
                "rate limit exceeded ({} requests per minute per {}); retry in {} s",
                refusal.per_minute, refusal.limit, refusal.retry_after_secs
            );
            let mut response = match surface {
                // Git prints the body of an error response to the user; a browser shows it.
                Surface::Git | Surface::Web => (StatusCode::TOO_MANY_REQUESTS, message).into_response(),
                Surface::Api => ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message).into_response(),
            };
            let headers = response.headers_mut();
            headers.insert(header::RETRY_AFTER, HeaderValue::from(refusal.retry_after_secs));
            headers.insert("x-ratelimit-limit", HeaderValue::from(refusal.per_minute));
            headers.insert("x-ratelimit-remaining", HeaderValue::from(0u32));
            response
        }
    }
}

pub async fn api_layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    limit(state, request, next, Surface::Api).await
}

pub async fn git_layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    limit(state, request, next, Surface::Git).await
}

/// The web pages' limit: a signed-in viewer's session counts as its token (the per-client
/// limit), anyone else by address (the anonymous limit). The stylesheet and script are not
/// counted (browsers cache them).
pub async fn web_layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if request.uri().path().starts_with("/static/") {
        return next.run(request).await;
    }
    limit(state, request, next, Surface::Web).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_client_address_and_repository() {
        let limiters = Limiters::new(RateLimits { per_client: 3, anonymous: 2, git_per_repo: 4 });
        let addr: SocketAddr = "192.0.2.1:1234".parse().expect("addr");
        let other: SocketAddr = "192.0.2.2:1234".parse().expect("addr");
        let none = HeaderMap::new();
        let mut token = HeaderMap::new();
        token.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer gst_a"));

        assert_eq!(limiters.check(&none, Some(addr), None).ok(), Some(Some((2, 1))));
        assert_eq!(limiters.check(&none, Some(addr), None).ok(), Some(Some((2, 0))));
        let refused = limiters.check(&none, Some(addr), None).expect_err("third anonymous request");
        assert_eq!((refused.limit, refused.per_minute), ("anonymous", 2));
        assert!(refused.retry_after_secs >= 1);
        assert!(limiters.check(&none, Some(other), None).is_ok(), "another address has its own bucket");
        for _ in 0..3 {
            assert!(limiters.check(&token, Some(addr), None).is_ok(), "a token has its own bucket");
        }
        assert_eq!(limiters.check(&token, Some(other), None).err().map(|r| r.limit), Some("client"));

        // The repository limit counts every client together; anonymous Git requests count there only.
        let fresh = Limiters::new(RateLimits { per_client: 100, anonymous: 1, git_per_repo: 2 });
        assert!(fresh.check(&none, Some(addr), Some("o/r")).is_ok());
        assert!(fresh.check(&token, Some(other), Some("O/R")).is_ok());
        assert_eq!(fresh.check(&none, Some(other), Some("o/r")).err().map(|r| r.limit), Some("repository"));
        assert!(fresh.check(&none, Some(other), Some("o/another")).is_ok());

        let off = Limiters::new(RateLimits { per_client: 0, anonymous: 0, git_per_repo: 0 });
        for _ in 0..100 {
            assert_eq!(off.check(&none, Some(addr), Some("o/r")).ok(), Some(None));
        }
    }

    /// Shared keys are the same in every build (they are summed across frontends).
    #[test]
    fn shared_keys_are_stable() {
        assert_eq!(shared_key("client", 42), 0x6cde_f63b_bee7_92dc);
        assert_ne!(shared_key("client", 42), shared_key("repository", 42));
    }

    #[test]
    fn a_page_is_counted_by_its_session_cookie() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("gitstratum_csrf=x; gitstratum_session=gst_s"));
        assert_eq!(page_credentials(&headers)[header::AUTHORIZATION], "Bearer gst_s");
        // Whatever else it sends (an Authorization header) does not choose its bucket.
        let mut other = HeaderMap::new();
        other.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer gst_a"));
        assert!(page_credentials(&other).is_empty());
    }

    #[test]
    fn git_paths_name_their_repository() {
        assert_eq!(git_repo("/octo/hello.git/info/refs").as_deref(), Some("octo/hello"));
        assert_eq!(git_repo("/octo/hello/git-upload-pack").as_deref(), Some("octo/hello"));
        assert_eq!(git_repo("/octo"), None);
    }
}
