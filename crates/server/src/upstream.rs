//! Actions of upstream sources (`[actions] sources`), fetched over smart HTTP in Git protocol
//! version 2 from any Git host that speaks it (GitHub, GitLab, Gitea, C git's `http-backend`,
//! another GitStratum): `owner/repo` is `<source>/<owner>/<repo>.git`.
//!
//! - A reference is resolved with `ls-refs` (a tag first, then a branch; a full commit id is taken
//!   as it is, and checked when fetched), and the answer kept for a minute, so the jobs of one run
//!   agree and the source is not asked once per step.
//! - A commit is fetched once, without history (`deepen 1`), checked whole
//!   ([`Snapshot::from_pack`]), and kept: on disk by source and commit id (checked again when
//!   read), and the most recently used in memory. Jobs asking for the same commit at once share one
//!   fetch.
//! - Every response is bounded; redirects are followed only within the source's host; a source's
//!   credentials (`https://user:token@host`) are sent to it alone and never shown.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gitstratum_ci::upstream::{BoxFuture, Found, MAX_PACK_BYTES, Missing, Snapshot, Upstream, is_ref_name};
use gitstratum_git::client;
use gitstratum_store::ObjectId;
use reqwest::{StatusCode, Url};
use sha2::Digest;

/// How long a resolved reference is trusted.
const REFS_FRESH: Duration = Duration::from_secs(60);
/// The most bytes of snapshots kept in memory.
const LOADED_BYTES: u64 = 512 << 20;
/// The most bytes of a capability advertisement or `ls-refs` response.
const MAX_SMALL_RESPONSE: usize = 1 << 20;
/// The longest a capability advertisement or `ls-refs` request may take.
const SMALL_TIMEOUT: Duration = Duration::from_secs(20);

/// One configured source.
#[derive(Debug, Clone)]
pub struct Source {
    /// The base URL without credentials, as messages show it.
    shown: String,
    base: Url,
    credentials: Option<(String, String)>,
}

/// A source as messages may show it: any credentials in it replaced by `***`.
pub fn redact_source(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else { return text.to_owned() };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}{path}"),
        None => text.to_owned(),
    }
}

/// Parses a source as the configuration gives it: an `http`/`https` URL without query or
/// fragment, credentials allowed.
pub fn parse_source(text: &str) -> Result<Source, String> {
    let (real, text) = (text.trim(), redact_source(text.trim()));
    let url = Url::parse(real).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("{text:?}: a source is an http:// or https:// URL"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{text:?}: a source has no query or fragment"));
    }
    let credentials = (!url.username().is_empty())
        .then(|| (url.username().to_owned(), url.password().unwrap_or_default().to_owned()));
    let mut base = url;
    let _ = base.set_username("");
    let _ = base.set_password(None);
    let shown = base.as_str().trim_end_matches('/').to_owned();
    Ok(Source { shown, base, credentials })
}

/// A commit of a repository at a source: its URL as shown, and the commit id.
type Key = (String, ObjectId);

/// Snapshots in memory, least recently used first, bounded by their bytes.
#[derive(Default)]
struct Loaded {
    entries: VecDeque<(Key, Arc<Snapshot>)>,
    bytes: u64,
}

impl Loaded {
    fn get(&mut self, key: &Key) -> Option<Arc<Snapshot>> {
        let at = self.entries.iter().position(|(k, _)| k == key)?;
        let entry = self.entries.remove(at)?;
        let snapshot = entry.1.clone();
        self.entries.push_back(entry);
        Some(snapshot)
    }

    fn put(&mut self, key: Key, snapshot: Arc<Snapshot>) {
        if self.get(&key).is_some() {
            return;
        }
        self.bytes += snapshot.bytes;
        self.entries.push_back((key, snapshot));
        while self.bytes > LOADED_BYTES && self.entries.len() > 1 {
            if let Some((_, old)) = self.entries.pop_front() {
                self.bytes -= old.bytes;
            }
        }
    }
}

/// The upstream sources, over HTTP.
pub struct HttpUpstream {
    sources: Vec<Source>,
    shown: Vec<String>,
    http: reqwest::Client,
    /// Fetched packs, `<cache>/<source key>/<commit>.pack`.
    cache: PathBuf,
    refs: Mutex<HashMap<(String, String), (Instant, ObjectId)>>,
    loaded: Mutex<Loaded>,
    fetching: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl HttpUpstream {
    /// `sources` as configured (checked by the configuration); packs cached under `cache`.
    pub fn new(sources: &[String], cache: PathBuf) -> Result<HttpUpstream, String> {
        let sources = sources.iter().map(|s| parse_source(s)).collect::<Result<Vec<_>, _>>()?;
        let redirects = reqwest::redirect::Policy::custom(|attempt| {
            let first_host = attempt.previous().first().and_then(|u| u.host_str().map(str::to_owned));
            if attempt.previous().len() > 5 {
                attempt.error("too many redirects")
            } else if attempt.url().host_str().map(str::to_owned) == first_host {
                attempt.follow()
            } else {
                attempt.stop()
            }
        });
        let http = crate::http::client_builder()
            .user_agent(concat!("git/gitstratum-", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(300))
            .redirect(redirects)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(HttpUpstream {
            shown: sources.iter().map(|s| s.shown.clone()).collect(),
            sources,
            http,
            cache,
            refs: Mutex::default(),
            loaded: Mutex::default(),
            fetching: Mutex::default(),
        })
    }

    fn repo_url(source: &Source, owner: &str, repo: &str) -> Url {
        let mut url = source.base.clone();
        let path = format!("{}/{owner}/{repo}.git/", url.path().trim_end_matches('/'));
        url.set_path(&path);
        url
    }

    fn request(&self, source: &Source, method: reqwest::Method, url: Url) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method, url).header("Git-Protocol", "version=2");
        if let Some((user, password)) = &source.credentials {
            req = req.basic_auth(user, Some(password));
        }
        req
    }

    /// The body of a response, at most `limit` bytes.
    async fn body(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
            if out.len() + chunk.len() > limit {
                return Err(format!("the response is larger than {limit} bytes"));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    async fn upload_pack(&self, source: &Source, repo: &Url, body: Vec<u8>, limit: usize) -> Result<Vec<u8>, String> {
        let url = repo.join(client::UPLOAD_PACK_PATH).map_err(|e| e.to_string())?;
        let mut req = self.request(source, reqwest::Method::POST, url);
        if limit <= MAX_SMALL_RESPONSE {
            req = req.timeout(SMALL_TIMEOUT);
        }
        let resp = req
            .header(reqwest::header::CONTENT_TYPE, client::REQUEST_TYPE)
            .header(reqwest::header::ACCEPT, client::RESULT_TYPE)
            .body(body)
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        if !resp.status().is_success() {
            return Err(format!("upload-pack answered {}", resp.status()));
        }
        Self::body(resp, limit).await
    }

    /// What `git_ref` names at one source: `Err(Ok(()))` when the source has no such repository.
    async fn resolve_at(
        &self,
        source: &Source,
        repo: &Url,
        git_ref: &str,
    ) -> Result<Option<ObjectId>, Result<(), String>> {
        let url = repo.join(client::ADVERTISEMENT_PATH).map_err(|e| Err(e.to_string()))?;
        let resp = self
            .request(source, reqwest::Method::GET, url)
            .timeout(SMALL_TIMEOUT)
            .send()
            .await
            .map_err(|e| Err(e.without_url().to_string()))?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::GONE => {
                return Err(Ok(()));
            }
            other => return Err(Err(format!("it answered {other}"))),
        }
        let advertisement = Self::body(resp, MAX_SMALL_RESPONSE).await.map_err(Err)?;
        client::check_advertisement(&advertisement).map_err(Err)?;
        if git_ref.len() == 40
            && let Ok(id) = ObjectId::from_hex(git_ref.as_bytes())
        {
            return Ok(Some(id)); // checked when fetched
        }
        if !is_ref_name(git_ref) {
            return Ok(None);
        }
        let (tag, branch) = (format!("refs/tags/{git_ref}"), format!("refs/heads/{git_ref}"));
        let request = client::ls_refs_request(&[tag.clone(), branch.clone()]);
        let body = self.upload_pack(source, repo, request, MAX_SMALL_RESPONSE).await.map_err(Err)?;
        let refs = client::parse_ls_refs(&body).map_err(Err)?;
        let named = |name: &str| refs.iter().find(|r| r.name == name).map(client::Advertised::target);
        Ok(named(&tag).or_else(|| named(&branch)))
    }

    fn cache_file(&self, url: &str, commit: &ObjectId) -> PathBuf {
        let key = sha2::Sha256::digest(url.as_bytes());
        let key: String = key.iter().take(10).map(|b| format!("{b:02x}")).collect();
        self.cache.join(key).join(format!("{commit}.pack"))
    }

    async fn fetch(&self, found: &Found) -> Result<Arc<Snapshot>, String> {
        let key = (found.url.clone(), found.commit);
        if let Some(s) = lock(&self.loaded).get(&key) {
            return Ok(s);
        }
        // One fetch per commit at a time; those who waited find it loaded.
        let turn = lock(&self.fetching).entry(key.clone()).or_default().clone();
        let _turn = turn.lock().await;
        if let Some(s) = lock(&self.loaded).get(&key) {
            return Ok(s);
        }
        let file = self.cache_file(&found.url, &found.commit);
        let commit = found.commit;
        if let Ok(bytes) = tokio::fs::read(&file).await {
            match tokio::task::spawn_blocking(move || Snapshot::from_pack(&bytes, commit)).await {
                Ok(Ok(snapshot)) => {
                    let snapshot = Arc::new(snapshot);
                    lock(&self.loaded).put(key, snapshot.clone());
                    metrics::counter!("gitstratum_ci_upstream_actions_total", "from" => "disk").increment(1);
                    return Ok(snapshot);
                }
                _ => {
                    tracing::warn!(file = %file.display(), "a cached upstream action pack is damaged; fetching it again");
                    let _ = tokio::fs::remove_file(&file).await;
                }
            }
        }
        let source = self
            .sources
            .iter()
            .find(|s| found.url.starts_with(&format!("{}/", s.shown)))
            .ok_or("the source is no longer configured")?;
        // The same repository URL the reference was resolved at (`<source>/<owner>/<repo>.git/`).
        let repo = Url::parse(&format!("{}.git/", found.url)).map_err(|e| e.to_string())?;
        let response =
            self.upload_pack(source, &repo, client::fetch_request(&commit, 1), MAX_PACK_BYTES + (1 << 20)).await?;
        let pack = client::fetch_response_pack(&response, MAX_PACK_BYTES)?;
        drop(response);
        let (snapshot, pack) = tokio::task::spawn_blocking(move || (Snapshot::from_pack(&pack, commit), pack))
            .await
            .map_err(|e| e.to_string())?;
        let snapshot = Arc::new(snapshot?);
        if let Err(e) = write_atomically(&file, &pack).await {
            tracing::warn!(file = %file.display(), error = %e, "could not cache an upstream action pack");
        }
        metrics::counter!("gitstratum_ci_upstream_actions_total", "from" => "source").increment(1);
        tracing::info!(url = %found.url, %commit, bytes = pack.len(), "fetched an upstream action");
        lock(&self.loaded).put(key, snapshot.clone());
        Ok(snapshot)
    }
}

async fn write_atomically(file: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = file.parent().ok_or_else(|| std::io::Error::other("no parent"))?;
    tokio::fs::create_dir_all(dir).await?;
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    tokio::fs::write(&tmp, bytes).await?;
    tokio::fs::rename(&tmp, file).await
}

impl Upstream for HttpUpstream {
    fn sources(&self) -> &[String] {
        &self.shown
    }

    fn resolve<'a>(
        &'a self,
        owner: &'a str,
        repo: &'a str,
        git_ref: &'a str,
    ) -> BoxFuture<'a, Result<Found, Result<Missing, String>>> {
        Box::pin(async move {
            let mut failures = Vec::new();
            for source in &self.sources {
                let url = Self::repo_url(source, owner, repo);
                let shown = format!("{}/{owner}/{repo}", source.shown);
                let key = (shown.clone(), git_ref.to_owned());
                if let Some((at, id)) = lock(&self.refs).get(&key).copied()
                    && at.elapsed() < REFS_FRESH
                {
                    return Ok(Found { url: shown, commit: id });
                }
                match self.resolve_at(source, &url, git_ref).await {
                    Ok(Some(id)) => {
                        let mut refs = lock(&self.refs);
                        refs.retain(|_, (at, _)| at.elapsed() < REFS_FRESH);
                        refs.insert(key, (Instant::now(), id));
                        return Ok(Found { url: shown, commit: id });
                    }
                    Ok(None) => return Err(Ok(Missing::Reference(shown))),
                    Err(Ok(())) => {}
                    Err(Err(e)) => failures.push(format!("{shown}: {e}")),
                }
            }
            if failures.is_empty() { Err(Ok(Missing::Repository)) } else { Err(Err(failures.join("; "))) }
        })
    }

    fn snapshot<'a>(&'a self, found: &'a Found) -> BoxFuture<'a, Result<Arc<Snapshot>, String>> {
        Box::pin(self.fetch(found))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_http_urls_whose_credentials_are_never_shown() {
        let source = parse_source("https://bot:s3cret@git.example.com/mirror/").expect("valid");
        assert_eq!(source.shown, "https://git.example.com/mirror");
        assert_eq!(source.credentials, Some(("bot".into(), "s3cret".into())));
        assert_eq!(
            HttpUpstream::repo_url(&source, "actions", "setup-node").as_str(),
            "https://git.example.com/mirror/actions/setup-node.git/"
        );
        for bad in ["ftp://x", "github.com", "https://x/?a=1", "https://x/#f", "file:///tmp"] {
            assert!(parse_source(bad).is_err(), "{bad}");
        }
        let refused = parse_source("https://bot:s3cret@x/?q").expect_err("refused");
        assert!(!refused.contains("s3cret") && refused.contains("***@x"), "{refused}");
        assert_eq!(redact_source("https://tok@h/p,x"), "https://***@h/p,x");
    }
}
