//! Artifacts (`actions/upload-artifact`, `download-artifact`) and caches (`actions/cache`).
//!
//! A runner uploads an archive ([`gitstratum_artifact::archive`]) in chunks addressed by byte
//! offset into a staging file named by its job, attempt and a slot of its choosing; chunks may
//! arrive in any order and a resent one is harmless. Finishing the upload names the archive's
//! length and SHA-256, so a lost or damaged chunk is caught; the whole archive is checked as it
//! streams (digest, paths, CRCs, limits), committed to the [`BlobStore`] under a fresh key, and
//! only then recorded. Nothing is ever held whole in memory.
//!
//! Artifacts belong to a run, unique by name (a job's later attempt, or `overwrite`, replaces its
//! own), and expire after their retention (the upload's `retention-days`, at most the
//! repository's, else the site's): the sweep deletes the blob and marks the row, which then
//! answers 410. Caches belong to a repository and the ref that saved them, are immutable, are
//! found by exact key or key prefix (newest first) within a version, on the run's ref first and
//! then the default branch, and are evicted least recently used first beyond the repository's cap.

use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Arc;

use gitstratum_artifact::archive::{self, Limits, Summary};
use gitstratum_core::Timestamp;
use gitstratum_platform::db::{DbRow, FromDbRow};
use sea_query::{Expr, ExprTrait, Order, Query};
use sha2::{Digest, Sha256};

use crate::blob::{self, BlobStore};
use crate::store::CiStore;

/// The largest chunk of an upload.
pub const MAX_CHUNK_BYTES: usize = 8 << 20;
const DAY_MS: i64 = 86_400_000;

/// Limits and defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArtifactConfig {
    /// The most bytes of files in one artifact.
    pub max_artifact_bytes: u64,
    /// The most bytes of files in all of a run's artifacts.
    pub max_run_bytes: u64,
    /// Days an artifact is kept, unless its repository or its upload says fewer.
    pub retention_days: u64,
    /// The most bytes of files in one cache.
    pub max_cache_bytes: u64,
    /// A repository's caches beyond this many stored bytes are evicted, least recently used first.
    pub max_repo_cache_bytes: u64,
}

impl Default for ArtifactConfig {
    fn default() -> Self {
        ArtifactConfig {
            max_artifact_bytes: 1 << 30,
            max_run_bytes: 4 << 30,
            retention_days: 90,
            max_cache_bytes: 1 << 30,
            max_repo_cache_bytes: 10 << 30,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    TooBig(String),
    #[error("{0}")]
    Conflict(String),
    #[error("nothing was uploaded in slot {0:?}")]
    NoUpload(String),
    #[error(transparent)]
    Db(#[from] gitstratum_platform::Error),
    #[error("artifact storage: {0}")]
    Io(#[from] io::Error),
}

impl From<sqlx::Error> for ArtifactError {
    fn from(e: sqlx::Error) -> Self {
        ArtifactError::Db(e.into())
    }
}

impl From<archive::ArchiveError> for ArtifactError {
    fn from(e: archive::ArchiveError) -> Self {
        match e {
            archive::ArchiveError::TooBig(why) => ArtifactError::TooBig(why),
            archive::ArchiveError::Io(e) => ArtifactError::Io(e),
            other => ArtifactError::Invalid(other.to_string()),
        }
    }
}

type Result<T, E = ArtifactError> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub id: i64,
    pub run_id: i64,
    pub job_id: i64,
    pub attempt: i64,
    pub repo_id: i64,
    pub name: String,
    pub size_bytes: i64,
    pub stored_bytes: i64,
    pub files: i64,
    pub zip_bytes: i64,
    pub digest: String,
    pub blob_key: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub expired_at: Option<Timestamp>,
}

/// Its columns: `[1..15]` are those an insert sets.
const ARTIFACT_COLUMNS: [&str; 16] = [
    "id",
    "run_id",
    "job_id",
    "attempt",
    "repo_id",
    "tenant_id",
    "name",
    "size_bytes",
    "stored_bytes",
    "files",
    "zip_bytes",
    "digest",
    "blob_key",
    "created_at",
    "expires_at",
    "expired_at",
];

impl FromDbRow for Artifact {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok(Artifact {
            id: row.get("id")?,
            run_id: row.get("run_id")?,
            job_id: row.get("job_id")?,
            attempt: row.get("attempt")?,
            repo_id: row.get("repo_id")?,
            name: row.get("name")?,
            size_bytes: row.get("size_bytes")?,
            stored_bytes: row.get("stored_bytes")?,
            files: row.get("files")?,
            zip_bytes: row.get("zip_bytes")?,
            digest: row.get("digest")?,
            blob_key: row.get("blob_key")?,
            created_at: Timestamp(row.get("created_at")?),
            expires_at: Timestamp(row.get("expires_at")?),
            expired_at: row.get::<Option<i64>>("expired_at")?.map(Timestamp),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    pub id: i64,
    pub repo_id: i64,
    pub scope: String,
    pub key: String,
    pub version: String,
    pub size_bytes: i64,
    pub stored_bytes: i64,
    pub blob_key: String,
    pub created_at: Timestamp,
    pub last_used_at: Timestamp,
}

/// Its columns: `[1..]` are those an insert sets.
const CACHE_COLUMNS: [&str; 11] = [
    "id",
    "repo_id",
    "tenant_id",
    "scope",
    "cache_key",
    "version",
    "size_bytes",
    "stored_bytes",
    "blob_key",
    "created_at",
    "last_used_at",
];

impl FromDbRow for Cache {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok(Cache {
            id: row.get("id")?,
            repo_id: row.get("repo_id")?,
            scope: row.get("scope")?,
            key: row.get("cache_key")?,
            version: row.get("version")?,
            size_bytes: row.get("size_bytes")?,
            stored_bytes: row.get("stored_bytes")?,
            blob_key: row.get("blob_key")?,
            created_at: Timestamp(row.get("created_at")?),
            last_used_at: Timestamp(row.get("last_used_at")?),
        })
    }
}

/// Who uploads: the job's run, its attempt and where its repository belongs.
#[derive(Debug, Clone, Copy)]
pub struct Uploader<'a> {
    pub job_id: i64,
    pub attempt: i64,
    pub run_id: i64,
    pub repo_id: i64,
    /// The account owning the repository.
    pub tenant_id: i64,
    /// The run's ref (a cache's scope).
    pub git_ref: &'a str,
}

/// What an uploader says its upload is: the slot, and the archive's length and SHA-256 (hex).
#[derive(Debug, Clone, Copy)]
pub struct Upload<'a> {
    pub slot: &'a str,
    pub length: u64,
    pub sha256: &'a str,
}

/// An artifact upload being finished.
#[derive(Debug, Clone)]
pub struct NewArtifact<'a> {
    pub upload: Upload<'a>,
    pub name: &'a str,
    /// Days to keep it (capped by the repository's retention); `None`: the repository's.
    pub retention_days: Option<u64>,
    /// Replace an artifact of the same name another job uploaded.
    pub overwrite: bool,
}

/// Artifacts and caches: their rows in the platform database, their archives in a blob store.
pub struct Artifacts {
    ci: CiStore,
    blobs: Arc<dyn BlobStore>,
    config: ArtifactConfig,
}

/// [`valid_slot`] as a JSON Schema pattern, for the API's document.
pub const SLOT_PATTERN: &str = "^[A-Za-z0-9-]{1,64}$";

fn valid_slot(slot: &str) -> bool {
    !slot.is_empty() && slot.len() <= 64 && slot.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Reads through, hashing.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// What checking a staged archive found.
struct Checked {
    summary: Summary,
    stored_bytes: u64,
    digest: String,
}

impl Artifacts {
    pub fn new(ci: CiStore, blobs: Arc<dyn BlobStore>, config: ArtifactConfig) -> Artifacts {
        Artifacts { ci, blobs, config }
    }

    pub fn config(&self) -> &ArtifactConfig {
        &self.config
    }

    fn staged(&self, job: i64, attempt: i64, slot: &str) -> Result<PathBuf> {
        if !valid_slot(slot) {
            return Err(ArtifactError::Invalid("an upload slot is 1 to 64 letters, digits and dashes".to_owned()));
        }
        Ok(self.blobs.staging_dir().join(format!("{job}-{attempt}-{slot}")))
    }

    /// The most an upload's compressed bytes may come to: a little over the largest archive
    /// (incompressible data grows slightly in zstd).
    fn max_staged(&self) -> u64 {
        let most = Ord::max(self.config.max_artifact_bytes, self.config.max_cache_bytes);
        most + most / 64 + (1 << 20)
    }

    /// Writes `bytes` at `offset` of a job's upload slot (in any order; a resend rewrites the
    /// same bytes); returns the offset just past them.
    pub async fn append_chunk(
        &self,
        job: i64,
        attempt: i64,
        slot: &str,
        offset: u64,
        bytes: impl AsRef<[u8]> + Send + 'static,
    ) -> Result<u64> {
        let path = self.staged(job, attempt, slot)?;
        let len = bytes.as_ref().len();
        if len > MAX_CHUNK_BYTES {
            return Err(ArtifactError::TooBig(format!("a chunk has at most {MAX_CHUNK_BYTES} bytes")));
        }
        let end = offset + len as u64;
        if end > self.max_staged() {
            return Err(ArtifactError::TooBig(format!(
                "the upload passes {} bytes, more than any artifact or cache may have",
                self.max_staged()
            )));
        }
        // One trip to a blocking thread for the whole chunk.
        tokio::task::spawn_blocking(move || -> Result<u64> {
            use std::os::unix::fs::FileExt;
            let file = std::fs::OpenOptions::new().create(true).write(true).truncate(false).open(&path)?;
            file.write_all_at(bytes.as_ref(), offset)?;
            Ok(end)
        })
        .await
        .map_err(|e| io::Error::other(format!("writing an upload chunk panicked: {e}")))?
    }

    /// Drops a job attempt's staged uploads (it ended).
    pub async fn discard_staged(&self, job: i64, attempt: i64) {
        let prefix = format!("{job}-{attempt}-");
        let Ok(mut dir) = tokio::fs::read_dir(self.blobs.staging_dir()).await else { return };
        while let Ok(Some(entry)) = dir.next_entry().await {
            if entry.file_name().to_str().is_some_and(|n| n.starts_with(&prefix)) {
                let _ = tokio::fs::remove_file(entry.path()).await;
            }
        }
    }

    /// Deletes staged uploads nobody touched for `idle` (their attempt was lost, or its runner
    /// never finished them); returns how many.
    pub async fn sweep_staging(&self, idle: std::time::Duration) -> usize {
        let dir = self.blobs.staging_dir().to_owned();
        tokio::task::spawn_blocking(move || {
            let Ok(entries) = std::fs::read_dir(&dir) else { return 0 };
            entries
                .filter_map(Result::ok)
                .filter(|e| e.metadata().and_then(|m| m.modified()).is_ok_and(|t| t.elapsed().is_ok_and(|a| a > idle)))
                .filter(|e| std::fs::remove_file(e.path()).is_ok())
                .count()
        })
        .await
        .unwrap_or(0)
    }

    /// Deletes blobs no row names that are older than `min_age`: those of artifacts and caches
    /// whose repository was deleted (the rows go with it), and those a crash left between storing
    /// a blob and recording it. Returns how many. `min_age` spares uploads being recorded now.
    pub async fn sweep_orphans(&self, min_age: std::time::Duration) -> Result<usize> {
        let mut named = std::collections::HashSet::new();
        let mut conn = self.ci.db.acquire().await?;
        // Finished job logs of cluster mode are blobs too (`logs::LogStore::in_database`).
        for table in ["ci_artifacts", "ci_caches", "ci_log_steps"] {
            let q = Query::select().column("blob_key").from(table).to_owned();
            let keys: Vec<BlobKey> = conn.conn().fetch_all(&q).await?;
            named.extend(keys.into_iter().map(|k| k.0));
        }
        drop(conn);
        let blobs = self.blobs.clone();
        let deleted = tokio::task::spawn_blocking(move || -> io::Result<usize> {
            let mut deleted = 0;
            for kind in ["artifacts", "caches", crate::logs::LOG_BLOB_KIND] {
                for (key, written) in blobs.list(kind)? {
                    let old = written.elapsed().is_ok_and(|age| age >= min_age);
                    if old && !named.contains(&key) {
                        blobs.delete(&key)?;
                        deleted += 1;
                    }
                }
            }
            Ok(deleted)
        })
        .await
        .map_err(|e| io::Error::other(format!("sweeping blobs panicked: {e}")))??;
        Ok(deleted)
    }

    /// Reads a staged archive through, checking everything, on a blocking thread.
    async fn check(&self, path: PathBuf, upload: Upload<'_>, limits: Limits) -> Result<Checked> {
        let (length, sha256) = (upload.length, upload.sha256.to_ascii_lowercase());
        tokio::task::spawn_blocking(move || -> Result<Checked> {
            let file = match std::fs::OpenOptions::new().read(true).write(true).open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(ArtifactError::NoUpload(
                        path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned(),
                    ));
                }
                Err(e) => return Err(e.into()),
            };
            // What a slot holds past the length is left from an earlier try; what it lacks is lost.
            let have = file.metadata()?.len();
            if have < length {
                return Err(ArtifactError::Invalid(format!(
                    "the upload is incomplete: the server has {have} of its {length} bytes"
                )));
            }
            file.set_len(length)?;
            let mut input = Hashing { inner: io::BufReader::new(file), hash: Sha256::new() };
            // The archive as it streams; then the rest of the bytes (after its end there must be
            // none), all through the digest, which is checked first: a lost or damaged chunk is
            // reported as such, not as whatever it broke in the archive.
            let read = archive::read_archive(&mut input, &limits, |_, _| Ok(()));
            let trailing = io::copy(&mut input, &mut io::sink())?;
            let digest: String = input.hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
            if digest != sha256 {
                return Err(ArtifactError::Invalid(
                    "the upload's SHA-256 is not the one its uploader named: a chunk was lost or damaged".to_owned(),
                ));
            }
            let summary = read?;
            if trailing != 0 {
                return Err(ArtifactError::Invalid("the archive has bytes after its end".to_owned()));
            }
            if !gitstratum_artifact::zip::fits(summary.zip_bytes, summary.files) {
                return Err(ArtifactError::TooBig(
                    "an artifact's zip must stay under 4 GiB and 65,535 files (no Zip64 yet)".to_owned(),
                ));
            }
            // Cut to `length` above, and matching its digest: the stored archive is that long.
            Ok(Checked { summary, stored_bytes: length, digest })
        })
        .await
        .map_err(|e| io::Error::other(format!("checking an upload panicked: {e}")))?
    }

    async fn commit_blob(&self, staged: PathBuf, kind: &'static str) -> Result<String> {
        let blobs = self.blobs.clone();
        tokio::task::spawn_blocking(move || -> Result<String> {
            let key = blob::new_key(kind)?;
            blobs.commit(&staged, &key)?;
            Ok(key)
        })
        .await
        .map_err(|e| io::Error::other(format!("storing an upload panicked: {e}")))?
    }

    async fn delete_blob(&self, key: String) {
        let blobs = self.blobs.clone();
        let result = tokio::task::spawn_blocking(move || blobs.delete(&key)).await;
        if let Ok(Err(e)) = result {
            tracing::warn!(error = %e, "cannot delete a blob");
        }
    }

    /// Opens an archive for reading (a blocking reader: read it on a blocking thread).
    pub fn open_blob(&self, key: &str) -> io::Result<Box<dyn Read + Send>> {
        self.blobs.open(key)
    }

    /// The artifacts of a run, oldest first (expired ones included).
    pub async fn list(&self, run_id: i64) -> Result<Vec<Artifact>> {
        let q = Query::select()
            .columns(ARTIFACT_COLUMNS)
            .from("ci_artifacts")
            .and_where(Expr::col("run_id").eq(run_id))
            .order_by("id", Order::Asc)
            .to_owned();
        Ok(self.ci.db.acquire().await?.conn().fetch_all(&q).await?)
    }

    pub async fn get(&self, id: i64) -> Result<Option<Artifact>> {
        let q =
            Query::select().columns(ARTIFACT_COLUMNS).from("ci_artifacts").and_where(Expr::col("id").eq(id)).to_owned();
        Ok(self.ci.db.acquire().await?.conn().fetch_optional(&q).await?)
    }

    /// Checks a staged artifact and keeps it: the blob first, then its row.
    pub async fn finish_artifact(&self, who: Uploader<'_>, new: NewArtifact<'_>, now: Timestamp) -> Result<Artifact> {
        gitstratum_artifact::check_artifact_name(new.name).map_err(ArtifactError::Invalid)?;
        let existing = self.list(who.run_id).await?;
        let same = existing.iter().find(|a| a.name == new.name);
        if let Some(same) = same
            && same.job_id != who.job_id
            && !new.overwrite
        {
            return Err(ArtifactError::Conflict(format!(
                "this run already has an artifact named {:?} (uploaded by another job); use overwrite: true to replace it",
                new.name
            )));
        }
        let others: u64 = existing
            .iter()
            .filter(|a| a.name != new.name && a.expired_at.is_none())
            .map(|a| u64::try_from(a.size_bytes).unwrap_or(0))
            .sum();
        let run_left = self.config.max_run_bytes.saturating_sub(others);
        let limits = Limits { max_bytes: Ord::min(self.config.max_artifact_bytes, run_left), ..Limits::default() };
        let staged = self.staged(who.job_id, who.attempt, new.upload.slot)?;
        let checked = match self.check(staged.clone(), new.upload, limits).await {
            Err(ArtifactError::TooBig(why)) => {
                let _ = tokio::fs::remove_file(&staged).await;
                let limit = if run_left < self.config.max_artifact_bytes {
                    format!("the run's artifacts may come to {} bytes in all", self.config.max_run_bytes)
                } else {
                    format!("an artifact may have {} bytes", self.config.max_artifact_bytes)
                };
                return Err(ArtifactError::TooBig(format!("artifact {:?} is too big: {why} ({limit})", new.name)));
            }
            Err(e @ ArtifactError::Invalid(_)) => {
                let _ = tokio::fs::remove_file(&staged).await;
                return Err(e);
            }
            other => other?,
        };
        let repo_days = self.ci.repo_settings(who.repo_id).await?.artifact_retention_days;
        let most = repo_days.map_or(self.config.retention_days, |d| u64::try_from(d).unwrap_or(0));
        let days = new.retention_days.map_or(most, |d| Ord::clamp(d, 1, Ord::max(most, 1)));
        let key = self.commit_blob(staged, "artifacts").await?;
        let insert = Query::insert()
            .into_table("ci_artifacts")
            .columns(ARTIFACT_COLUMNS[1..15].iter().copied())
            .values_panic([
                who.run_id.into(),
                who.job_id.into(),
                who.attempt.into(),
                who.repo_id.into(),
                who.tenant_id.into(),
                new.name.into(),
                as_i64(checked.summary.bytes).into(),
                as_i64(checked.stored_bytes).into(),
                as_i64(checked.summary.files).into(),
                as_i64(checked.summary.zip_bytes).into(),
                checked.digest.clone().into(),
                key.clone().into(),
                now.0.into(),
                (now.0 + as_i64(days) * DAY_MS).into(),
            ])
            .returning_col("id")
            .to_owned();
        let mut tx = self.ci.db.begin().await?;
        if let Some(same) = same {
            let delete = Query::delete().from_table("ci_artifacts").and_where(Expr::col("id").eq(same.id)).to_owned();
            tx.conn().execute(&delete).await?;
        }
        let id: i64 = match tx.conn().fetch_one(&insert).await {
            Ok(id) => id,
            Err(e) if gitstratum_platform::db::is_unique_violation(&e) => {
                drop(tx);
                self.delete_blob(key).await;
                return Err(ArtifactError::Conflict(format!(
                    "another upload of artifact {:?} finished first",
                    new.name
                )));
            }
            Err(e) => return Err(e.into()),
        };
        tx.commit().await?;
        if let Some(same) = same
            && same.expired_at.is_none()
        {
            self.delete_blob(same.blob_key.clone()).await;
        }
        metrics::counter!("gitstratum_ci_artifact_bytes_total").increment(checked.stored_bytes);
        self.get(id).await?.ok_or_else(|| ArtifactError::Invalid("the artifact vanished".to_owned()))
    }

    /// Deletes an artifact: its blob and its row.
    pub async fn delete(&self, artifact: &Artifact) -> Result<()> {
        let delete = Query::delete().from_table("ci_artifacts").and_where(Expr::col("id").eq(artifact.id)).to_owned();
        self.ci.db.acquire().await?.conn().execute(&delete).await?;
        if artifact.expired_at.is_none() {
            self.delete_blob(artifact.blob_key.clone()).await;
        }
        Ok(())
    }

    /// Deletes the blobs of artifacts past their expiry at `now` and marks them expired; returns
    /// how many. Blob first, then the mark: an interrupted sweep is finished by the next.
    pub async fn sweep(&self, now: Timestamp) -> Result<usize> {
        let q = Query::select()
            .columns(ARTIFACT_COLUMNS)
            .from("ci_artifacts")
            .and_where(Expr::col("expired_at").is_null())
            .and_where(Expr::col("expires_at").lte(now.0))
            .order_by("expires_at", Order::Asc)
            .limit(1000)
            .to_owned();
        let due: Vec<Artifact> = self.ci.db.acquire().await?.conn().fetch_all(&q).await?;
        for artifact in &due {
            self.delete_blob(artifact.blob_key.clone()).await;
            let mark = Query::update()
                .table("ci_artifacts")
                .value("expired_at", now.0)
                .and_where(Expr::col("id").eq(artifact.id))
                .to_owned();
            self.ci.db.acquire().await?.conn().execute(&mark).await?;
        }
        Ok(due.len())
    }

    /// Stored bytes of a tenant's kept artifacts and of its caches, by repository (ascending id).
    pub async fn stored_bytes_by_repo(&self, tenant_id: i64) -> Result<Vec<(i64, i64, i64)>> {
        let mut conn = self.ci.db.acquire().await?;
        let mut out: Vec<(i64, i64, i64)> = Vec::new();
        for (table, kept_only) in [("ci_artifacts", true), ("ci_caches", false)] {
            let mut q = Query::select()
                .column("repo_id")
                .expr_as(Expr::cust("CAST(COALESCE(SUM(stored_bytes), 0) AS BIGINT)"), sea_query::Alias::new("bytes"))
                .from(table)
                .and_where(Expr::col("tenant_id").eq(tenant_id))
                .group_by_col("repo_id")
                .to_owned();
            if kept_only {
                q.and_where(Expr::col("expired_at").is_null());
            }
            let rows: Vec<RepoBytes> = conn.conn().fetch_all(&q).await?;
            for row in rows {
                let entry = match out.iter_mut().find(|(id, _, _)| *id == row.repo_id) {
                    Some(entry) => entry,
                    None => {
                        out.push((row.repo_id, 0, 0));
                        out.last_mut().expect("just pushed")
                    }
                };
                if kept_only { entry.1 += row.bytes } else { entry.2 += row.bytes }
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// The cache a job restores: on each scope in turn (the run's ref, then the default branch),
    /// the one whose key is `key`, else the newest whose key starts with one of `restore_keys`
    /// (in their order); all within `version`. Marks it used.
    pub async fn find_cache(
        &self,
        repo_id: i64,
        scopes: &[&str],
        key: &str,
        restore_keys: &[String],
        version: &str,
        now: Timestamp,
    ) -> Result<Option<Cache>> {
        let mut conn = self.ci.db.acquire().await?;
        let q = Query::select()
            .columns(CACHE_COLUMNS)
            .from("ci_caches")
            .and_where(Expr::col("repo_id").eq(repo_id))
            .and_where(Expr::col("version").eq(version))
            .and_where(Expr::col("scope").is_in(scopes.iter().copied()))
            .order_by("created_at", Order::Desc)
            .order_by("id", Order::Desc)
            .to_owned();
        let all: Vec<Cache> = conn.conn().fetch_all(&q).await?;
        let found = scopes.iter().find_map(|scope| {
            let here: Vec<&Cache> = all.iter().filter(|c| c.scope == *scope).collect();
            here.iter()
                .find(|c| c.key == key)
                .or_else(|| restore_keys.iter().find_map(|p| here.iter().find(|c| c.key.starts_with(p.as_str()))))
                .map(|c| (*c).clone())
        });
        if let Some(cache) = &found {
            let used = Query::update()
                .table("ci_caches")
                .value("last_used_at", now.0)
                .and_where(Expr::col("id").eq(cache.id))
                .to_owned();
            conn.conn().execute(&used).await?;
        }
        Ok(found)
    }

    pub async fn get_cache(&self, id: i64) -> Result<Option<Cache>> {
        let q = Query::select().columns(CACHE_COLUMNS).from("ci_caches").and_where(Expr::col("id").eq(id)).to_owned();
        Ok(self.ci.db.acquire().await?.conn().fetch_optional(&q).await?)
    }

    /// The caches of a repository, most recently used first.
    pub async fn list_caches(&self, repo_id: i64) -> Result<Vec<Cache>> {
        let q = Query::select()
            .columns(CACHE_COLUMNS)
            .from("ci_caches")
            .and_where(Expr::col("repo_id").eq(repo_id))
            .order_by("last_used_at", Order::Desc)
            .order_by("id", Order::Desc)
            .to_owned();
        Ok(self.ci.db.acquire().await?.conn().fetch_all(&q).await?)
    }

    /// Checks a staged cache and keeps it under `key` in the run's ref's scope, then evicts the
    /// repository's least recently used caches beyond its cap. A key already saved in that scope
    /// (caches are immutable) is a conflict.
    pub async fn finish_cache(
        &self,
        who: Uploader<'_>,
        upload: Upload<'_>,
        key: &str,
        version: &str,
        now: Timestamp,
    ) -> Result<Cache> {
        if key.is_empty() || key.len() > 512 || key.contains(',') {
            return Err(ArtifactError::Invalid("a cache key has 1 to 512 characters and no comma".to_owned()));
        }
        if version.is_empty() || version.len() > 128 {
            return Err(ArtifactError::Invalid("a cache version has 1 to 128 characters".to_owned()));
        }
        let staged = self.staged(who.job_id, who.attempt, upload.slot)?;
        let limits = Limits { max_bytes: self.config.max_cache_bytes, ..Limits::default() };
        let checked = match self.check(staged.clone(), upload, limits).await {
            Err(e @ (ArtifactError::TooBig(_) | ArtifactError::Invalid(_))) => {
                let _ = tokio::fs::remove_file(&staged).await;
                return Err(match e {
                    ArtifactError::TooBig(why) => ArtifactError::TooBig(format!(
                        "cache {key:?} is too big: {why} (a cache may have {} bytes)",
                        self.config.max_cache_bytes
                    )),
                    other => other,
                });
            }
            other => other?,
        };
        let blob_key = self.commit_blob(staged, "caches").await?;
        let insert = Query::insert()
            .into_table("ci_caches")
            .columns(CACHE_COLUMNS[1..].iter().copied())
            .values_panic([
                who.repo_id.into(),
                who.tenant_id.into(),
                who.git_ref.into(),
                key.into(),
                version.into(),
                as_i64(checked.summary.bytes).into(),
                as_i64(checked.stored_bytes).into(),
                blob_key.clone().into(),
                now.0.into(),
                now.0.into(),
            ])
            .returning_col("id")
            .to_owned();
        let id: i64 = match self.ci.db.acquire().await?.conn().fetch_one(&insert).await {
            Ok(id) => id,
            Err(e) if gitstratum_platform::db::is_unique_violation(&e) => {
                self.delete_blob(blob_key).await;
                return Err(ArtifactError::Conflict(format!("a cache with key {key:?} already exists here")));
            }
            Err(e) => return Err(e.into()),
        };
        self.evict(who.repo_id, id).await?;
        self.get_cache(id).await?.ok_or_else(|| ArtifactError::Invalid("the cache was evicted at once".to_owned()))
    }

    /// Evicts a repository's least recently used caches until it is within its cap, sparing `keep`
    /// (the one just saved) unless it alone is over.
    async fn evict(&self, repo_id: i64, keep: i64) -> Result<()> {
        let mut caches = self.list_caches(repo_id).await?;
        let mut total: u64 = caches.iter().map(|c| u64::try_from(c.stored_bytes).unwrap_or(0)).sum();
        // Most recently used first: evict from the back.
        caches.sort_by_key(|c| (c.id != keep, std::cmp::Reverse(c.last_used_at), std::cmp::Reverse(c.id)));
        while total > self.config.max_repo_cache_bytes {
            let Some(victim) = caches.pop() else { break };
            let delete = Query::delete().from_table("ci_caches").and_where(Expr::col("id").eq(victim.id)).to_owned();
            self.ci.db.acquire().await?.conn().execute(&delete).await?;
            self.delete_blob(victim.blob_key.clone()).await;
            total = total.saturating_sub(u64::try_from(victim.stored_bytes).unwrap_or(0));
            metrics::counter!("gitstratum_ci_caches_evicted_total").increment(1);
            tracing::info!(repo_id, cache = %victim.key, "ci: evicted a cache (the repository's caches are over their cap)");
        }
        Ok(())
    }

    /// Deletes a cache: its row, then its blob.
    pub async fn delete_cache(&self, cache: &Cache) -> Result<()> {
        let delete = Query::delete().from_table("ci_caches").and_where(Expr::col("id").eq(cache.id)).to_owned();
        self.ci.db.acquire().await?.conn().execute(&delete).await?;
        self.delete_blob(cache.blob_key.clone()).await;
        Ok(())
    }
}

struct BlobKey(String);

impl FromDbRow for BlobKey {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok(BlobKey(row.get("blob_key")?))
    }
}

struct RepoBytes {
    repo_id: i64,
    bytes: i64,
}

impl FromDbRow for RepoBytes {
    fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
        Ok(RepoBytes { repo_id: row.get("repo_id")?, bytes: row.get("bytes")? })
    }
}

fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
