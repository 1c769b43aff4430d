//! The built-in actions that move files: `actions/upload-artifact`, `actions/download-artifact`
//! and `actions/cache`. They run on the host (they are our code, not the workflow's) over the
//! job's workspace and `$HOME`, through [`crate::files`], which trusts nothing the job wrote.
//! Archives are packed to and extracted from files in the job's directory, never held in memory,
//! and travel in chunks (uploads) or streams (downloads).
//!
//! `actions/cache` restores in its step and saves after the job's last step, when the job
//! succeeded and the step found no cache under its exact key (caches are immutable).

use std::collections::BTreeMap;
use std::path::PathBuf;

use reqwest::Method;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::exec::Outcome;
use crate::files::{self, Found, Packed};
use crate::logship::LogWriter;
use crate::protocol::{Answer, Client, Lease};
use crate::sandbox::JobDirs;

/// A step's `with:` inputs, evaluated.
pub(crate) struct Inputs(pub BTreeMap<String, String>);

impl Inputs {
    /// An input's value, trimmed; `None` when absent or empty.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|s| s.trim()).filter(|s| !s.is_empty())
    }

    fn lines(&self, name: &str) -> Vec<String> {
        self.get(name)
            .map(|v| v.lines().map(|l| l.trim().to_owned()).filter(|l| !l.is_empty()).collect())
            .unwrap_or_default()
    }

    fn flag(&self, name: &str) -> bool {
        self.get(name).is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
}

/// What an action step works with.
pub(crate) struct ActionCx<'a> {
    pub client: &'a Client,
    pub runner: i64,
    pub lease: &'a Lease,
    pub dirs: &'a JobDirs,
    pub log: &'a LogWriter,
    pub number: usize,
}

impl ActionCx<'_> {
    fn fail(&self, what: &str, message: impl std::fmt::Display) -> Outcome {
        self.log.line(&format!("error: {what}: {message}"));
        Outcome::Failed
    }

    /// A scratch file for an archive, in the job's directory (outside the sandbox's view).
    fn scratch(&self, name: &str) -> PathBuf {
        self.dirs.root.join(format!("archive-{}-{name}", self.number))
    }

    async fn request(&self, method: Method, rest: &str, body: Option<&serde_json::Value>) -> Result<Answer, String> {
        self.client.job_request(method, self.runner, self.lease.job_id, rest, body).await.map_err(|e| e.to_string())
    }

    /// Writes the step's outputs (as `$GITHUB_OUTPUT` would have them).
    fn outputs(&self, values: &[(&str, &str)]) {
        let text: String = values.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        let _ = std::fs::write(self.dirs.files.join(format!("output-{}", self.number)), text);
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// Packs `found` into a scratch archive on a blocking thread; returns its path and what it holds.
async fn pack(
    cx: &ActionCx<'_>,
    found: Vec<Found>,
    name: impl Fn(&Found) -> String + Send + 'static,
) -> Result<(PathBuf, Packed), String> {
    let path = cx.scratch("up");
    let out = path.clone();
    let packed = tokio::task::spawn_blocking(move || files::pack(&found, name, &out))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    Ok((path, packed))
}

/// Uploads an archive into a slot and finishes it with `finish` (`artifacts` or `caches`).
async fn send(
    cx: &ActionCx<'_>,
    archive: &std::path::Path,
    packed: &Packed,
    slot: &str,
    finish: &str,
    mut body: serde_json::Value,
) -> Result<Answer, String> {
    let lease = cx.lease;
    match cx.client.upload(cx.runner, lease.job_id, lease.attempt, slot, archive).await.map_err(|e| e.to_string())? {
        Answer::Ok(_) => {}
        other => return Ok(other),
    }
    tracing::debug!(slot, "runner: upload sent; asking the server to check and keep it");
    body["attempt"] = json!(lease.attempt);
    body["slot"] = json!(slot);
    body["length"] = json!(packed.length);
    body["sha256"] = json!(packed.sha256);
    cx.request(Method::POST, finish, Some(&body)).await
}

/// `actions/upload-artifact`: `name` (default `artifact`), `path` (lines of paths and globs, `!`
/// excludes), `if-no-files-found` (`warn`, `error`, `ignore`), `retention-days`, `overwrite`,
/// `include-hidden-files`.
pub(crate) async fn upload_artifact(cx: &ActionCx<'_>, inputs: &Inputs) -> Outcome {
    const WHAT: &str = "actions/upload-artifact";
    let name = inputs.get("name").unwrap_or("artifact").to_owned();
    if let Err(e) = gitstratum_artifact::check_artifact_name(&name) {
        return cx.fail(WHAT, e);
    }
    let paths = inputs.lines("path");
    if paths.is_empty() {
        return cx.fail(WHAT, "'path' is required");
    }
    let retention_days = match inputs.get("retention-days").map(str::parse::<u64>) {
        None => None,
        Some(Ok(d)) if (1..=36_500).contains(&d) => Some(d),
        Some(_) => return cx.fail(WHAT, "retention-days is a number of days from 1 to 36500"),
    };
    let dirs = cx.dirs.clone();
    let hidden = inputs.flag("include-hidden-files");
    let gathered = match tokio::task::spawn_blocking(move || files::gather(&dirs, &paths, hidden)).await {
        Ok(Ok(g)) => g,
        Ok(Err(e)) => return cx.fail(WHAT, e),
        Err(e) => return cx.fail(WHAT, e),
    };
    for link in &gathered.skipped_links {
        cx.log.line(&format!("warning: {link} is a symbolic link to a directory; not followed"));
    }
    if gathered.files.is_empty() {
        let message = format!("no files were found with the provided path; no artifact {name:?} will be uploaded");
        return match inputs.get("if-no-files-found").unwrap_or("warn") {
            "error" => cx.fail(WHAT, message),
            "ignore" => {
                cx.log.line(&message);
                Outcome::Succeeded
            }
            _ => {
                cx.log.line(&format!("warning: {message}"));
                Outcome::Succeeded
            }
        };
    }
    let Some((_, base)) = files::common_root(&gathered.search_roots) else {
        return cx.fail(WHAT, "the paths of one artifact must all be in the workspace, or all in $HOME");
    };
    let total: u64 = gathered.files.iter().map(|f| f.size).sum();
    cx.log.line(&format!("Uploading artifact {name:?}: {} files, {}", gathered.files.len(), mib(total)));
    let started = std::time::Instant::now();
    let strip = if base.is_empty() { 0 } else { base.len() + 1 };
    let (archive, packed) = match pack(cx, gathered.files, move |f| f.rel[strip..].to_owned()).await {
        Ok(packed) => packed,
        Err(e) => return cx.fail(WHAT, e),
    };
    let packing = started.elapsed();
    let slot = format!("artifact-{}", short_hash(&name));
    let body = json!({"name": name, "retention_days": retention_days, "overwrite": inputs.flag("overwrite")});
    let answer = send(cx, &archive, &packed, &slot, "artifacts", body).await;
    let _ = tokio::fs::remove_file(&archive).await;
    match answer {
        Ok(Answer::Ok(a)) => {
            cx.log.line(&format!(
                "Artifact {name:?} uploaded (id {}): {} files, {} ({} stored) in {:.2} s (packing {:.2} s), kept until {}",
                a["id"],
                a["files"],
                mib(a["size_in_bytes"].as_u64().unwrap_or(0)),
                mib(a["stored_bytes"].as_u64().unwrap_or(0)),
                started.elapsed().as_secs_f64(),
                packing.as_secs_f64(),
                a["expires_at"].as_str().unwrap_or("?"),
            ));
            let id = a["id"].to_string();
            let digest = a["digest"].as_str().unwrap_or_default().to_owned();
            cx.outputs(&[
                ("artifact-id", &id),
                ("artifact-url", a["archive_download_url"].as_str().unwrap_or("")),
                ("artifact-digest", &digest),
            ]);
            Outcome::Succeeded
        }
        Ok(Answer::No(_, message)) => cx.fail(WHAT, message),
        Ok(Answer::LeaseLost) => Outcome::Stopped,
        Err(e) => cx.fail(WHAT, e),
    }
}

fn short_hash(text: &str) -> String {
    Sha256::digest(text.as_bytes()).iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Downloads an archive (`rest` under the job) and extracts it under `root`/`dir`.
async fn fetch_into(
    cx: &ActionCx<'_>,
    rest: &str,
    place: impl Fn(&str) -> Option<(PathBuf, String)> + Send + 'static,
) -> Result<(u64, u64), String> {
    let archive = cx.scratch("down");
    match cx.client.download(cx.runner, cx.lease.job_id, rest, &archive).await.map_err(|e| e.to_string())? {
        Answer::Ok(_) => {}
        Answer::No(_, message) => return Err(message),
        Answer::LeaseLost => return Err("the job is no longer this runner's".to_owned()),
    }
    let path = archive.clone();
    let extracted =
        tokio::task::spawn_blocking(move || files::extract(&path, &gitstratum_artifact::Limits::NONE, place))
            .await
            .map_err(|e| e.to_string())?;
    let _ = tokio::fs::remove_file(&archive).await;
    extracted
}

/// `actions/download-artifact`: `name` (one artifact; else all, or those whose names match
/// `pattern`, each into a directory of its name unless `merge-multiple`), `path` (default: the
/// workspace). Artifacts of the same run only.
pub(crate) async fn download_artifact(cx: &ActionCx<'_>, inputs: &Inputs) -> Outcome {
    const WHAT: &str = "actions/download-artifact";
    if inputs.get("run-id").is_some() || inputs.get("github-token").is_some() {
        return cx.fail(WHAT, "downloading another run's artifacts (run-id, github-token) is not supported");
    }
    let (root, dest) = match files::resolve(inputs.get("path").unwrap_or(".")) {
        Ok(r) => r,
        Err(e) => return cx.fail(WHAT, e),
    };
    let list = match cx.request(Method::GET, &format!("artifacts?attempt={}", cx.lease.attempt), None).await {
        Ok(Answer::Ok(list)) => list,
        Ok(Answer::No(_, message)) => return cx.fail(WHAT, message),
        Ok(Answer::LeaseLost) => return Outcome::Stopped,
        Err(e) => return cx.fail(WHAT, e),
    };
    let all: Vec<(i64, String)> = list["artifacts"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| Some((x["id"].as_i64()?, x["name"].as_str()?.to_owned()))).collect())
        .unwrap_or_default();
    let wanted: Vec<(i64, String, String)> = match inputs.get("name") {
        Some(name) => match all.iter().find(|(_, n)| n == name) {
            Some((id, n)) => vec![(*id, n.clone(), dest.clone())],
            None => {
                let names: Vec<&str> = all.iter().map(|(_, n)| n.as_str()).collect();
                return cx
                    .fail(WHAT, format!("artifact {name:?} not found in this run (it has: {})", names.join(", ")));
            }
        },
        None => {
            let pattern = match inputs.get("pattern").map(gitstratum_workflow::glob::Pattern::new).transpose() {
                Ok(p) => p,
                Err(e) => return cx.fail(WHAT, e),
            };
            let merge = inputs.flag("merge-multiple");
            all.iter()
                .filter(|(_, n)| pattern.as_ref().is_none_or(|p| p.matches(n)))
                .map(|(id, n)| {
                    let dir = if merge {
                        dest.clone()
                    } else if dest.is_empty() {
                        n.clone()
                    } else {
                        format!("{dest}/{n}")
                    };
                    (*id, n.clone(), dir)
                })
                .collect()
        }
    };
    if wanted.is_empty() {
        cx.log.line("No artifacts to download.");
    }
    for (id, name, dir) in wanted {
        let host = root.host(cx.dirs).to_path_buf();
        let shown = root.inside(&dir);
        let rest = format!("artifacts/{id}/archive?attempt={}", cx.lease.attempt);
        let place =
            move |p: &str| Some((host.clone(), if dir.is_empty() { p.to_owned() } else { format!("{dir}/{p}") }));
        let started = std::time::Instant::now();
        match fetch_into(cx, &rest, place).await {
            Ok((count, bytes)) => cx.log.line(&format!(
                "Artifact {name:?} downloaded to {shown}: {count} files, {} in {:.2} s",
                mib(bytes),
                started.elapsed().as_secs_f64()
            )),
            Err(e) => return cx.fail(WHAT, format!("artifact {name:?}: {e}")),
        }
    }
    cx.outputs(&[("download-path", &root.inside(&dest))]);
    Outcome::Succeeded
}

/// A cache to save after the job's steps.
#[derive(Debug, Clone)]
pub(crate) struct PendingCache {
    pub key: String,
    pub paths: Vec<String>,
    pub version: String,
    pub number: usize,
}

/// What a cache holds, as a version: its paths (in order). Caches of other paths never match.
fn cache_version(paths: &[String]) -> String {
    short_hash(&format!("gsar1\n{}", paths.join("\n")))
}

/// `actions/cache` (its restoring half): `key`, `path` (lines), `restore-keys` (lines of
/// prefixes), `fail-on-cache-miss`, `lookup-only`. Outputs `cache-hit` (an exact match),
/// `cache-primary-key`, `cache-matched-key`. Returns the save to do after the job, if any.
pub(crate) async fn restore_cache(cx: &ActionCx<'_>, inputs: &Inputs) -> (Outcome, Option<PendingCache>) {
    const WHAT: &str = "actions/cache";
    let Some(key) = inputs.get("key").map(str::to_owned) else { return (cx.fail(WHAT, "'key' is required"), None) };
    if key.len() > 512 || key.contains(',') {
        return (cx.fail(WHAT, "a key has at most 512 characters and no comma"), None);
    }
    let paths = inputs.lines("path");
    if paths.is_empty() {
        return (cx.fail(WHAT, "'path' is required"), None);
    }
    for path in &paths {
        if let Err(e) = files::resolve(path.trim_start_matches('!')) {
            return (cx.fail(WHAT, e), None);
        }
    }
    let version = cache_version(&paths);
    let body = json!({"attempt": cx.lease.attempt, "key": key, "restore_keys": inputs.lines("restore-keys"), "version": version});
    let found = match cx.request(Method::POST, "caches/lookup", Some(&body)).await {
        Ok(Answer::Ok(serde_json::Value::Null)) => None,
        Ok(Answer::Ok(cache)) => Some(cache),
        Ok(Answer::No(_, message)) => return (cx.fail(WHAT, message), None),
        Ok(Answer::LeaseLost) => return (Outcome::Stopped, None),
        Err(e) => return (cx.fail(WHAT, e), None),
    };
    let pending = PendingCache { key: key.clone(), paths, version, number: cx.number };
    let Some(cache) = found else {
        cx.outputs(&[("cache-hit", "false"), ("cache-primary-key", &key)]);
        if inputs.flag("fail-on-cache-miss") {
            return (cx.fail(WHAT, format!("no cache for key {key:?} or its restore-keys (fail-on-cache-miss)")), None);
        }
        cx.log.line(&format!("Cache not found for key {key:?}; it will be saved after the job if the job succeeds."));
        return (Outcome::Succeeded, Some(pending));
    };
    let matched = cache["key"].as_str().unwrap_or_default().to_owned();
    let exact = matched == key;
    cx.outputs(&[
        ("cache-hit", if exact { "true" } else { "false" }),
        ("cache-primary-key", &key),
        ("cache-matched-key", &matched),
    ]);
    if inputs.flag("lookup-only") {
        cx.log.line(&format!("Cache found for key {matched:?} (lookup-only: not restored)."));
        return (Outcome::Succeeded, (!exact).then_some(pending));
    }
    let (workspace, home) = (cx.dirs.workspace.clone(), cx.dirs.home.clone());
    let place = move |p: &str| match p.split_once('/') {
        Some(("w", rest)) => Some((workspace.clone(), rest.to_owned())),
        Some(("h", rest)) => Some((home.clone(), rest.to_owned())),
        _ => None,
    };
    let rest = format!("caches/{}/archive?attempt={}", cache["id"], cx.lease.attempt);
    match fetch_into(cx, &rest, place).await {
        Ok((count, bytes)) => {
            cx.log.line(&format!("Cache restored from key {matched:?}: {count} files, {}", mib(bytes)));
            (Outcome::Succeeded, (!exact).then_some(pending))
        }
        // A cache that cannot be restored is a miss, not a failure (as GitHub's).
        Err(e) => {
            cx.log.line(&format!("warning: cache {matched:?} could not be restored: {e}"));
            cx.outputs(&[("cache-hit", "false"), ("cache-primary-key", &key)]);
            (Outcome::Succeeded, Some(pending))
        }
    }
}

/// `actions/cache`'s saving half, after the job's steps succeeded.
pub(crate) async fn save_cache(cx: &ActionCx<'_>, pending: &PendingCache) {
    let dirs = cx.dirs.clone();
    let paths = pending.paths.clone();
    let gathered = match tokio::task::spawn_blocking(move || files::gather(&dirs, &paths, true)).await {
        Ok(Ok(g)) => g,
        Ok(Err(e)) => return cx.log.line(&format!("warning: cache {:?} not saved: {e}", pending.key)),
        Err(e) => return cx.log.line(&format!("warning: cache {:?} not saved: {e}", pending.key)),
    };
    if gathered.files.is_empty() {
        return cx.log.line(&format!("warning: cache {:?} not saved: its paths hold no files", pending.key));
    }
    let (archive, packed) = match pack(cx, gathered.files, |f| format!("{}/{}", f.root.tag(), f.rel)).await {
        Ok(packed) => packed,
        Err(e) => return cx.log.line(&format!("warning: cache {:?} not saved: {e}", pending.key)),
    };
    let slot = format!("cache-{}", pending.number);
    let body = json!({"key": pending.key, "version": pending.version});
    let answer = send(cx, &archive, &packed, &slot, "caches", body).await;
    let _ = tokio::fs::remove_file(&archive).await;
    match answer {
        Ok(Answer::Ok(_)) => cx.log.line(&format!(
            "Cache saved with key {:?}: {} files, {}",
            pending.key,
            packed.files,
            mib(packed.bytes)
        )),
        Ok(Answer::No(code, message)) if code == "artifact.exists" => {
            cx.log.line(&format!("Cache not saved: {message} (another job saved it first)"))
        }
        Ok(Answer::No(_, message)) => cx.log.line(&format!("warning: cache {:?} not saved: {message}", pending.key)),
        Ok(Answer::LeaseLost) => {}
        Err(e) => cx.log.line(&format!("warning: cache {:?} not saved: {e}", pending.key)),
    }
}
