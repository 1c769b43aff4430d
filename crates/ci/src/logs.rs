//! Job logs, stored per step: `blobs/logs/JOB/ATTEMPT/STEP.log` while the step is written,
//! `STEP.log.gz` (gzip, synced) once it is finished. Step 0 holds what the runner says before the
//! first step; the step after the last holds what it says at the end.
//!
//! Runners send frames addressed by (step, byte offset) in order: a step's frames all come before
//! the next step's, so the first frame of a step finishes the steps before it (they are compressed
//! then), and completing the job finishes the last. A frame at the step's end is appended; one
//! that overlaps what is stored (a resend) adds only its new part; one past the end is refused
//! with the offset the store has, so the runner resends from there. A step's log is capped: what
//! goes past the cap is dropped after a truncation marker line, and frames keep being accepted.
//!
//! Live readers subscribe to an attempt's appends (a bounded broadcast per attempt): a reader that
//! falls behind is told so, reads what it missed from storage, and rejoins; a slow reader never
//! holds up a runner or another reader.
//!
//! In cluster mode ([`LogStore::in_database`]) the same logs live in the platform database instead
//! (`ci_log_chunks`: the open step's appends by offset) and in object storage (finished steps,
//! gzipped, under keys `joblogs/…` that `ci_log_steps` names),
//! so any server reads what a runner sent to another, and a server's appends are announced to the
//! others (`NOTIFY gitstratum_ci_log`), whose live readers then read them from the database.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use gitstratum_platform::db::Db;
use gitstratum_store::blob::BlobStore;
use tokio::io::AsyncWriteExt;
use tokio::sync::broadcast;

/// The default cap of one step's log.
pub const DEFAULT_STEP_LOG_BYTES: u64 = 64 << 20;
/// How many appends a live reader may be behind before it is sent back to storage.
const LIVE_BUFFER: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("the frame starts at byte {offset} of step {step}, but the server has {have} bytes; resend from {have}")]
    Gap { step: i64, offset: u64, have: u64 },
    #[error("log storage: {0}")]
    Io(#[from] std::io::Error),
    #[error("log storage: {0}")]
    Database(#[from] sqlx::Error),
}

/// Where logs are kept.
enum Storage {
    /// Files under a directory (single-node mode).
    Files(PathBuf),
    /// The platform database, finished steps in a blob store (cluster mode).
    Database(Db, Arc<dyn BlobStore>),
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Storage::Files(dir) => f.debug_tuple("Files").field(dir).finish(),
            Storage::Database(..) => f.write_str("Database"),
        }
    }
}

/// The kind of blob a finished step's log is in cluster mode (never `logs`: the files of
/// single-node mode are under the data directory's `blobs/logs/`).
pub const LOG_BLOB_KIND: &str = db::BLOB_KIND;

/// The channel on which servers sharing a database announce log appends.
pub const LOG_CHANNEL: &str = "gitstratum_ci_log";

/// Bytes appended to a step's log, as live readers get them: `bytes` start at `offset` of the
/// stored log of `step`.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub step: i64,
    pub offset: u64,
    pub bytes: Arc<[u8]>,
}

/// The writing side of one attempt's log.
#[derive(Debug, Default)]
struct Writer {
    /// The step being written (frames for earlier steps are late resends), and its stored length.
    step: Option<(i64, u64)>,
}

#[derive(Debug)]
struct Live {
    writer: tokio::sync::Mutex<Writer>,
    tx: broadcast::Sender<Chunk>,
}

#[derive(Debug)]
pub struct LogStore {
    storage: Storage,
    step_cap: u64,
    live: Mutex<HashMap<(i64, i64), Arc<Live>>>,
    /// This server among those sharing the database: its own announcements are not news to it.
    instance: u64,
}

impl LogStore {
    pub fn new(dir: PathBuf) -> LogStore {
        LogStore::with_step_cap(dir, DEFAULT_STEP_LOG_BYTES)
    }

    /// A store that keeps at most `step_cap` bytes of each step's log.
    pub fn with_step_cap(dir: PathBuf, step_cap: u64) -> LogStore {
        LogStore { storage: Storage::Files(dir), step_cap: step_cap.max(1024), live: Mutex::default(), instance: 0 }
    }

    /// A store in the platform database, finished steps in `blobs` (cluster mode: object
    /// storage), keeping at most `step_cap` bytes of each step's log.
    pub fn in_database(db: Db, blobs: Arc<dyn BlobStore>, step_cap: u64) -> LogStore {
        let mut instance = [0u8; 8];
        let _ = getrandom::fill(&mut instance);
        LogStore {
            storage: Storage::Database(db, blobs),
            step_cap: step_cap.max(1024),
            live: Mutex::default(),
            instance: u64::from_le_bytes(instance) | 1,
        }
    }

    /// The most kept of one step's log.
    pub fn step_cap(&self) -> u64 {
        self.step_cap
    }

    fn dir(&self) -> &Path {
        match &self.storage {
            Storage::Files(dir) => dir,
            Storage::Database(..) => Path::new(""),
        }
    }

    fn attempt_dir(&self, job: i64, attempt: i64) -> PathBuf {
        self.dir().join(job.to_string()).join(attempt.to_string())
    }

    fn raw_path(&self, job: i64, attempt: i64, step: i64) -> PathBuf {
        self.attempt_dir(job, attempt).join(format!("{step}.log"))
    }

    fn live(&self, job: i64, attempt: i64) -> Arc<Live> {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.entry((job, attempt))
            .or_insert_with(|| {
                Arc::new(Live { writer: tokio::sync::Mutex::default(), tx: broadcast::channel(LIVE_BUFFER).0 })
            })
            .clone()
    }

    /// Live appends to an attempt's log from now on. The receiver reports `Lagged` when its reader
    /// fell behind (read storage, then go on receiving) and `Closed` when the attempt is finished.
    pub fn subscribe(&self, job: i64, attempt: i64) -> broadcast::Receiver<Chunk> {
        self.live(job, attempt).tx.subscribe()
    }

    /// Forgets a reader's interest in a finished attempt (its entry goes when nobody uses it).
    pub fn unsubscribe(&self, job: i64, attempt: i64) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = live.get(&(job, attempt))
            && entry.tx.receiver_count() == 0
            && Arc::strong_count(entry) == 1
        {
            live.remove(&(job, attempt));
        }
    }

    /// Appends `bytes` at `offset` of `step`'s log; returns the offset (in the runner's terms) to
    /// send the step's next frame from.
    pub async fn append(&self, job: i64, attempt: i64, step: i64, offset: u64, bytes: &[u8]) -> Result<u64, LogError> {
        let live = self.live(job, attempt);
        let mut writer = live.writer.lock().await;
        let current = match writer.step {
            Some(current) => current,
            None => self.discover(job, attempt).await?.unwrap_or((step, 0)),
        };
        writer.step = Some(current);
        let (open, mut have) = current;
        if step < open || self.is_finished(job, attempt, step).await? {
            // A late resend to a finished step: it is all there (or was dropped past the cap).
            return Ok(offset + bytes.len() as u64);
        }
        if step > open {
            // The runner has moved on: the step before is complete.
            self.finish_step(job, attempt, open).await?;
            have = 0;
            writer.step = Some((step, 0));
        }
        if have > self.step_cap {
            // Truncated already: the rest of the step is dropped.
            return Ok(offset + bytes.len() as u64);
        }
        if offset > have {
            return Err(LogError::Gap { step, offset, have });
        }
        let already = usize::try_from(have - offset).unwrap_or(usize::MAX);
        let Some(new) = bytes.get(already..).filter(|new| !new.is_empty()) else { return Ok(have) };
        let mut stored = new.to_vec();
        let acked = if have + new.len() as u64 > self.step_cap {
            stored.truncate(usize::try_from(self.step_cap - have).unwrap_or(0));
            let marker = format!(
                "\n##[truncated] this step's log passed {} bytes; the rest of it was not kept\n",
                self.step_cap
            );
            stored.extend_from_slice(marker.as_bytes());
            offset + bytes.len() as u64
        } else {
            have + new.len() as u64
        };
        match &self.storage {
            Storage::Files(_) => {
                let path = self.raw_path(job, attempt, step);
                if let Some(parent) = path.parent() {
                    tokio::fs::create_dir_all(parent).await?;
                }
                let mut file = tokio::fs::OpenOptions::new().create(true).append(true).open(&path).await?;
                file.write_all(&stored).await?;
                file.flush().await?;
            }
            Storage::Database(db, _) => {
                if !db::append(db, job, attempt, step, have, &stored, self.instance).await? {
                    // Another server appended here first (a runner behind a load balancer): start
                    // over from what the database holds.
                    writer.step = None;
                    let have = db::discover(db, job, attempt).await?.filter(|(s, _)| *s == step).map_or(0, |(_, n)| n);
                    return Err(LogError::Gap { step, offset, have });
                }
            }
        }
        writer.step = Some((step, have + stored.len() as u64));
        let _ = live.tx.send(Chunk { step, offset: have, bytes: stored.into() });
        Ok(acked)
    }

    /// Whether `step`'s log is finished (late frames for it are dropped).
    async fn is_finished(&self, job: i64, attempt: i64, step: i64) -> Result<bool, LogError> {
        match &self.storage {
            Storage::Files(_) => Ok(self.finished_path(job, attempt, step).exists()),
            Storage::Database(db, _) => Ok(db::is_finished(db, job, attempt, step).await?),
        }
    }

    /// Another server appended `len` bytes at `offset` of a step's log (cluster mode): live
    /// readers here get them, read from the database. Announcements of this server's own appends,
    /// and of attempts nobody here follows, are ignored.
    pub async fn announced(&self, payload: &str) {
        let Some((instance, job, attempt, step, offset)) = db::parse_announcement(payload) else { return };
        if instance == self.instance {
            return;
        }
        let tx = {
            let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
            match live.get(&(job, attempt)) {
                Some(entry) if entry.tx.receiver_count() > 0 => entry.tx.clone(),
                _ => return,
            }
        };
        if let Ok(bytes) = self.read_step(job, attempt, step, offset).await
            && !bytes.is_empty()
        {
            let _ = tx.send(Chunk { step, offset, bytes: bytes.into() });
        }
    }

    /// In cluster mode, listens for other servers' appends (its own connection, reconnecting)
    /// until aborted; `None` for a store of files.
    pub fn spawn_announcement_listener(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let Storage::Database(db, _) = &self.storage else { return None };
        let logs = self.clone();
        db.spawn_listener(LOG_CHANNEL, move |heard| {
            let logs = logs.clone();
            async move {
                // Listening again: a live reader that missed appends reads them from storage.
                if let gitstratum_platform::db::Heard::Notified(payload) = heard {
                    logs.announced(&payload).await;
                }
                true
            }
        })
    }

    /// After a restart: the step being written (the highest with a raw file) and its length.
    async fn discover(&self, job: i64, attempt: i64) -> Result<Option<(i64, u64)>, LogError> {
        if let Storage::Database(db, _) = &self.storage {
            return Ok(db::discover(db, job, attempt).await?);
        }
        let steps = self.steps(job, attempt).await?;
        match steps.last() {
            Some(&(step, false)) => {
                let len = tokio::fs::metadata(self.raw_path(job, attempt, step)).await?.len();
                Ok(Some((step, len)))
            }
            _ => Ok(None),
        }
    }

    fn finished_path(&self, job: i64, attempt: i64, step: i64) -> PathBuf {
        self.attempt_dir(job, attempt).join(format!("{step}.log.gz"))
    }

    /// Compresses a finished step's log and makes it durable; the raw file goes after the
    /// compressed one is in place, so a reader always finds one of them.
    async fn finish_step(&self, job: i64, attempt: i64, step: i64) -> Result<(), LogError> {
        if let Storage::Database(db, blobs) = &self.storage {
            return db::finish_step(db, blobs, job, attempt, step).await;
        }
        let raw = self.raw_path(job, attempt, step);
        let gz = self.finished_path(job, attempt, step);
        tokio::task::spawn_blocking(move || compress(&raw, &gz))
            .await
            .map_err(|e| LogError::Io(std::io::Error::other(e)))??;
        Ok(())
    }

    /// The attempt is over (completed, or superseded by a later attempt): its last step is
    /// finished and durable.
    pub async fn finish(&self, job: i64, attempt: i64) -> Result<(), LogError> {
        let live = self.live(job, attempt);
        {
            let mut writer = live.writer.lock().await;
            let open = match writer.step {
                Some((step, _)) => Some(step),
                None => self.discover(job, attempt).await?.map(|(step, _)| step),
            };
            if let Some(step) = open {
                self.finish_step(job, attempt, step).await?;
            }
            writer.step = None;
        }
        Ok(())
    }

    /// Ends the live side of a finished attempt: its readers' receivers close (call it once the
    /// attempt's end is recorded, so a reader that sees the close finds the job over).
    pub fn close(&self, job: i64, attempt: i64) {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).remove(&(job, attempt));
    }

    /// The steps with a log, in order, each with whether it is finished (compressed).
    pub async fn steps(&self, job: i64, attempt: i64) -> Result<Vec<(i64, bool)>, LogError> {
        if let Storage::Database(db, _) = &self.storage {
            return Ok(db::steps(db, job, attempt).await?);
        }
        let dir = self.attempt_dir(job, attempt);
        tokio::task::spawn_blocking(move || -> std::io::Result<Vec<(i64, bool)>> {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(e),
            };
            let mut steps: HashMap<i64, bool> = HashMap::new();
            for entry in entries {
                let name = entry?.file_name();
                let name = name.to_string_lossy();
                if let Some(n) = name.strip_suffix(".log.gz").and_then(|n| n.parse().ok()) {
                    steps.insert(n, true);
                } else if let Some(n) = name.strip_suffix(".log").and_then(|n| n.parse().ok()) {
                    steps.entry(n).or_insert(false);
                }
            }
            let mut steps: Vec<(i64, bool)> = steps.into_iter().collect();
            steps.sort_unstable();
            Ok(steps)
        })
        .await
        .map_err(|e| LogError::Io(std::io::Error::other(e)))?
        .map_err(LogError::Io)
    }

    /// One step's log from byte `offset` on (empty when there is nothing there).
    pub async fn read_step(&self, job: i64, attempt: i64, step: i64, offset: u64) -> Result<Vec<u8>, LogError> {
        if let Storage::Database(db, blobs) = &self.storage {
            return db::read_step(db, blobs, job, attempt, step, offset).await;
        }
        let raw = self.raw_path(job, attempt, step);
        let gz = self.finished_path(job, attempt, step);
        tokio::task::spawn_blocking(move || read_step_file(&raw, &gz, offset))
            .await
            .map_err(|e| LogError::Io(std::io::Error::other(e)))?
            .map_err(LogError::Io)
    }

    /// The bytes an attempt's log takes in storage (compressed steps as stored).
    pub async fn stored_bytes(&self, job: i64, attempt: i64) -> Result<u64, LogError> {
        if let Storage::Database(db, _) = &self.storage {
            return Ok(db::stored_bytes(db, job, attempt).await?);
        }
        let dir = self.attempt_dir(job, attempt);
        tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
                Err(e) => return Err(e),
            };
            let mut total = 0;
            for entry in entries {
                total += entry?.metadata()?.len();
            }
            Ok(total)
        })
        .await
        .map_err(|e| LogError::Io(std::io::Error::other(e)))?
        .map_err(LogError::Io)
    }

    /// Deletes every log of a job (all attempts).
    pub async fn delete_job(&self, job: i64) -> Result<(), LogError> {
        if let Storage::Database(db, blobs) = &self.storage {
            return db::delete_job(db, blobs, job).await;
        }
        match tokio::fs::remove_dir_all(self.dir().join(job.to_string())).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// The attempt's whole log so far: its steps' logs one after another.
    pub async fn read(&self, job: i64, attempt: i64) -> Result<Vec<u8>, LogError> {
        let steps = self.steps(job, attempt).await?;
        if steps.is_empty() {
            if let Storage::Database(..) = &self.storage {
                return Ok(Vec::new());
            }
            // Written before logs were kept per step: one file per attempt.
            let legacy = self.dir().join(job.to_string()).join(format!("{attempt}.log"));
            return match tokio::fs::read(legacy).await {
                Ok(bytes) => Ok(bytes),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
                Err(e) => Err(e.into()),
            };
        }
        let mut out = Vec::new();
        for (step, _) in steps {
            out.extend(self.read_step(job, attempt, step, 0).await?);
        }
        Ok(out)
    }
}

fn read_step_file(raw: &Path, gz: &Path, offset: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Seek, SeekFrom};
    let mut out = Vec::new();
    match std::fs::File::open(raw) {
        Ok(mut file) => {
            file.seek(SeekFrom::Start(offset))?;
            file.read_to_end(&mut out)?;
            return Ok(out);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    match std::fs::File::open(gz) {
        Ok(file) => {
            flate2::read::GzDecoder::new(std::io::BufReader::new(file)).read_to_end(&mut out)?;
            let skip = usize::try_from(offset).unwrap_or(usize::MAX).min(out.len());
            out.drain(..skip);
            Ok(out)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(out),
        Err(e) => Err(e),
    }
}

/// `raw` gzipped into `gz` (written aside, synced, renamed into place), then `raw` removed.
fn compress(raw: &Path, gz: &Path) -> std::io::Result<()> {
    let mut input = match std::fs::File::open(raw) {
        Ok(file) => std::io::BufReader::new(file),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let partial = gz.with_extension("gz.partial");
    let file = std::fs::File::create(&partial)?;
    let mut encoder = flate2::write::GzEncoder::new(std::io::BufWriter::new(file), flate2::Compression::default());
    std::io::copy(&mut input, &mut encoder)?;
    let file = encoder.finish()?.into_inner().map_err(std::io::IntoInnerError::into_error)?;
    file.sync_all()?;
    std::fs::rename(&partial, gz)?;
    if let Some(dir) = gz.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    std::fs::remove_file(raw)?;
    Ok(())
}

/// Logs in the platform database (cluster mode).
mod db {
    use std::io::{Read, Write};

    use std::sync::Arc;

    use gitstratum_platform::db::{Db, DbRow, FromDbRow};
    use gitstratum_store::blob::BlobStore;
    use sea_query::{Expr, ExprTrait, Func, OnConflict, Order, Query};

    use super::LogError;

    struct Chunk {
        at: i64,
        data: Vec<u8>,
    }

    impl FromDbRow for Chunk {
        fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
            Ok(Chunk { at: row.get("at")?, data: row.get("data")? })
        }
    }

    struct StepLen {
        step: i64,
        len: i64,
    }

    impl FromDbRow for StepLen {
        fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
            Ok(StepLen { step: row.get("step")?, len: row.get("len")? })
        }
    }

    struct Key(String);

    impl FromDbRow for Key {
        fn from_row(row: &DbRow) -> Result<Self, sqlx::Error> {
            Ok(Key(row.get("blob_key")?))
        }
    }

    /// The kind of blob a finished step's log is.
    pub(super) const BLOB_KIND: &str = "joblogs";

    fn of_attempt(job: i64, attempt: i64) -> sea_query::Condition {
        sea_query::Cond::all().add(Expr::col("job_id").eq(job)).add(Expr::col("attempt").eq(attempt))
    }

    /// Stores an append; `false` when another server stored one at the same place first. On
    /// PostgreSQL the other servers are told (`<instance>:<job>:<attempt>:<step>:<offset>`).
    pub(super) async fn append(
        db: &Db,
        job: i64,
        attempt: i64,
        step: i64,
        at: u64,
        data: &[u8],
        instance: u64,
    ) -> Result<bool, sqlx::Error> {
        let insert = Query::insert()
            .into_table("ci_log_chunks")
            .columns(["job_id", "attempt", "step", "at", "data"])
            .values_panic([job.into(), attempt.into(), step.into(), (at as i64).into(), data.to_vec().into()])
            .on_conflict(OnConflict::columns(["job_id", "attempt", "step", "at"]).do_nothing().to_owned())
            .to_owned();
        let mut conn = db.acquire().await?;
        let stored = conn.conn().execute(&insert).await? == 1;
        if stored && let gitstratum_platform::db::PooledConn::Postgres(pg) = &mut conn {
            let announcement = format!("{instance}:{job}:{attempt}:{step}:{at}");
            gitstratum_platform::db::notify(pg, super::LOG_CHANNEL, &announcement).await?;
        }
        Ok(stored)
    }

    pub(super) fn parse_announcement(payload: &str) -> Option<(u64, i64, i64, i64, u64)> {
        let mut parts = payload.split(':');
        let instance = parts.next()?.parse().ok()?;
        let job = parts.next()?.parse().ok()?;
        let attempt = parts.next()?.parse().ok()?;
        let step = parts.next()?.parse().ok()?;
        let offset = parts.next()?.parse().ok()?;
        Some((instance, job, attempt, step, offset))
    }

    pub(super) async fn is_finished(db: &Db, job: i64, attempt: i64, step: i64) -> Result<bool, sqlx::Error> {
        let q = Query::select()
            .column("step")
            .from("ci_log_steps")
            .cond_where(of_attempt(job, attempt))
            .and_where(Expr::col("step").eq(step))
            .to_owned();
        let found: Option<i64> = db.acquire().await?.conn().fetch_optional(&q).await?;
        Ok(found.is_some())
    }

    /// The open step (the highest with appends, unless a later one is finished) and its length.
    pub(super) async fn discover(db: &Db, job: i64, attempt: i64) -> Result<Option<(i64, u64)>, sqlx::Error> {
        let lens = Query::select()
            .column("step")
            .expr_as(Func::sum(Func::cust("length").arg(Expr::col("data"))), "len")
            .from("ci_log_chunks")
            .cond_where(of_attempt(job, attempt))
            .group_by_col("step")
            .order_by("step", Order::Desc)
            .limit(1)
            .to_owned();
        let mut conn = db.acquire().await?;
        let open: Option<StepLen> = conn.conn().fetch_optional(&lens).await?;
        let Some(open) = open else { return Ok(None) };
        let later = Query::select()
            .column("step")
            .from("ci_log_steps")
            .cond_where(of_attempt(job, attempt))
            .and_where(Expr::col("step").gte(open.step))
            .limit(1)
            .to_owned();
        let finished: Option<i64> = conn.conn().fetch_optional(&later).await?;
        Ok(finished.is_none().then_some((open.step, u64::try_from(open.len).unwrap_or(0))))
    }

    /// A step's appends that end past byte `from`, in order (a live reader asks for what is new,
    /// not for the whole step again).
    async fn chunks(
        conn: &mut gitstratum_platform::db::Conn<'_>,
        job: i64,
        attempt: i64,
        step: i64,
        from: u64,
    ) -> Result<Vec<Chunk>, sqlx::Error> {
        let end = Expr::col("at").add(Func::cust("length").arg(Expr::col("data")));
        let q = Query::select()
            .columns(["at", "data"])
            .from("ci_log_chunks")
            .cond_where(of_attempt(job, attempt))
            .and_where(Expr::col("step").eq(step))
            .and_where(end.gt(i64::try_from(from).unwrap_or(i64::MAX)))
            .order_by("at", Order::Asc)
            .to_owned();
        conn.fetch_all(&q).await
    }

    /// Gzips a finished step's appends into a blob, then names it and removes the appends in one
    /// transaction (a crash between leaves a blob nothing names, which the orphan sweep removes;
    /// a step another server finished first keeps that one's, and this blob goes).
    pub(super) async fn finish_step(
        db: &Db,
        blobs: &Arc<dyn BlobStore>,
        job: i64,
        attempt: i64,
        step: i64,
    ) -> Result<(), LogError> {
        let parts = chunks(&mut db.acquire().await?.conn(), job, attempt, step, 0).await?;
        if parts.is_empty() {
            return Ok(());
        }
        let blobs_w = blobs.clone();
        let (key, bytes) = tokio::task::spawn_blocking(move || -> std::io::Result<(String, u64)> {
            let key = gitstratum_store::blob::new_key(BLOB_KIND)?;
            let path = blobs_w.staging_dir().join(key.replace('/', "-"));
            let written = (|| -> std::io::Result<u64> {
                let file = std::fs::File::create(&path)?;
                let mut encoder =
                    flate2::write::GzEncoder::new(std::io::BufWriter::new(&file), flate2::Compression::default());
                for part in &parts {
                    encoder.write_all(&part.data)?;
                }
                encoder.finish()?.flush()?;
                file.sync_all()?;
                Ok(file.metadata()?.len())
            })();
            let committed = written.and_then(|bytes| blobs_w.commit(&path, &key).map(|()| bytes));
            match committed {
                Ok(bytes) => Ok((key, bytes)),
                Err(e) => {
                    let _ = std::fs::remove_file(&path);
                    Err(e)
                }
            }
        })
        .await
        .map_err(|e| LogError::Io(std::io::Error::other(e)))??;
        let mut tx = db.begin().await?;
        let insert = Query::insert()
            .into_table("ci_log_steps")
            .columns(["job_id", "attempt", "step", "blob_key", "bytes"])
            .values_panic([job.into(), attempt.into(), step.into(), key.clone().into(), (bytes as i64).into()])
            .on_conflict(OnConflict::columns(["job_id", "attempt", "step"]).do_nothing().to_owned())
            .to_owned();
        let named = tx.conn().execute(&insert).await? == 1;
        let delete = Query::delete()
            .from_table("ci_log_chunks")
            .cond_where(of_attempt(job, attempt))
            .and_where(Expr::col("step").eq(step))
            .to_owned();
        tx.conn().execute(&delete).await?;
        tx.commit().await?;
        if !named {
            let blobs = blobs.clone();
            let _ = tokio::task::spawn_blocking(move || blobs.delete(&key)).await;
        }
        Ok(())
    }

    pub(super) async fn steps(db: &Db, job: i64, attempt: i64) -> Result<Vec<(i64, bool)>, sqlx::Error> {
        let mut conn = db.acquire().await?;
        let finished =
            Query::select().column("step").from("ci_log_steps").cond_where(of_attempt(job, attempt)).to_owned();
        let open = Query::select()
            .distinct()
            .column("step")
            .from("ci_log_chunks")
            .cond_where(of_attempt(job, attempt))
            .to_owned();
        let mut steps: std::collections::BTreeMap<i64, bool> = std::collections::BTreeMap::new();
        for step in conn.conn().fetch_all::<i64>(&open).await? {
            steps.insert(step, false);
        }
        for step in conn.conn().fetch_all::<i64>(&finished).await? {
            steps.insert(step, true);
        }
        Ok(steps.into_iter().collect())
    }

    /// A step's log from `offset`: its appends while it is open, its gzipped log once finished.
    /// The appends are read first: finishing a step replaces them in one transaction, so a read
    /// that finds none past `offset` (none are new, or they were just replaced) then looks for the
    /// finished log.
    pub(super) async fn read_step(
        db: &Db,
        blobs: &Arc<dyn BlobStore>,
        job: i64,
        attempt: i64,
        step: i64,
        offset: u64,
    ) -> Result<Vec<u8>, LogError> {
        let mut conn = db.acquire().await?;
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        let parts = chunks(&mut conn.conn(), job, attempt, step, offset).await?;
        let mut out = Vec::new();
        if !parts.is_empty() {
            // Each ends past `offset` (the query says so); the first may start before it.
            for part in parts {
                let start = usize::try_from(part.at).unwrap_or(0);
                out.extend_from_slice(&part.data[skip.saturating_sub(start)..]);
            }
            return Ok(out);
        }
        let q = Query::select()
            .column("blob_key")
            .from("ci_log_steps")
            .cond_where(of_attempt(job, attempt))
            .and_where(Expr::col("step").eq(step))
            .to_owned();
        let Some(Key(key)) = conn.conn().fetch_optional::<Key>(&q).await? else { return Ok(out) };
        drop(conn);
        let blobs = blobs.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(std::io::BufReader::new(blobs.open(&key)?)).read_to_end(&mut out)?;
            out.drain(..skip.min(out.len()));
            Ok(out)
        })
        .await
        .map_err(|e| LogError::Io(std::io::Error::other(e)))?
        .map_err(LogError::Io)
    }

    pub(super) async fn stored_bytes(db: &Db, job: i64, attempt: i64) -> Result<u64, sqlx::Error> {
        let mut conn = db.acquire().await?;
        let finished =
            Query::select().column("bytes").from("ci_log_steps").cond_where(of_attempt(job, attempt)).to_owned();
        let mut total: u64 =
            conn.conn().fetch_all::<i64>(&finished).await?.into_iter().map(|n| u64::try_from(n).unwrap_or(0)).sum();
        let open = Query::select()
            .expr_as(
                Func::coalesce([
                    sea_query::Expr::from(Func::sum(Func::cust("length").arg(Expr::col("data")))),
                    Expr::val(0i64),
                ]),
                "n",
            )
            .from("ci_log_chunks")
            .cond_where(of_attempt(job, attempt))
            .to_owned();
        let n: i64 = conn.conn().fetch_one(&open).await?;
        total += u64::try_from(n).unwrap_or(0);
        Ok(total)
    }

    /// Deletes a job's logs: the rows, then the blobs they named.
    pub(super) async fn delete_job(db: &Db, blobs: &Arc<dyn BlobStore>, job: i64) -> Result<(), LogError> {
        let mut tx = db.begin().await?;
        let keys =
            Query::select().column("blob_key").from("ci_log_steps").and_where(Expr::col("job_id").eq(job)).to_owned();
        let keys: Vec<Key> = tx.conn().fetch_all(&keys).await?;
        for table in ["ci_log_chunks", "ci_log_steps"] {
            let delete = Query::delete().from_table(table).and_where(Expr::col("job_id").eq(job)).to_owned();
            tx.conn().execute(&delete).await?;
        }
        tx.commit().await?;
        let blobs = blobs.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            for Key(key) in keys {
                blobs.delete(&key)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| LogError::Io(std::io::Error::other(e)))??;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("gst-logs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test]
    async fn frames_are_idempotent_by_offset_per_step() {
        let dir = temp("frames");
        let logs = LogStore::new(dir.clone());
        assert_eq!(logs.append(1, 1, 0, 0, b"setting up\n").await.expect("setup"), 11);
        assert_eq!(logs.append(1, 1, 1, 0, b"hello ").await.expect("first"), 6);
        assert_eq!(logs.append(1, 1, 1, 0, b"hello ").await.expect("resent"), 6, "a resend adds nothing");
        assert_eq!(logs.append(1, 1, 1, 3, b"lo world\n").await.expect("overlap"), 12, "only the new part");
        assert!(matches!(logs.append(1, 1, 1, 20, b"x").await, Err(LogError::Gap { step: 1, offset: 20, have: 12 })));
        assert_eq!(logs.append(1, 1, 0, 0, b"setting up\n").await.expect("late resend"), 11);
        assert_eq!(logs.read(1, 1).await.expect("read"), b"setting up\nhello world\n");
        assert_eq!(logs.steps(1, 1).await.expect("steps"), [(0, true), (1, false)], "step 0 finished by step 1");
        assert!(logs.read(1, 2).await.expect("other attempt").is_empty(), "attempts keep their own logs");
        logs.finish(1, 1).await.expect("finish");
        assert_eq!(logs.steps(1, 1).await.expect("steps"), [(0, true), (1, true)]);
        assert_eq!(logs.read_step(1, 1, 1, 6).await.expect("from an offset"), b"world\n");
        assert_eq!(logs.read(1, 1).await.expect("read compressed"), b"setting up\nhello world\n");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_step_past_its_cap_is_truncated_with_a_marker_and_the_job_goes_on() {
        let dir = temp("cap");
        let logs = LogStore::with_step_cap(dir.clone(), 1024);
        let line = [b'x'; 99].iter().copied().chain([b'\n']).collect::<Vec<u8>>();
        let mut offset = 0;
        for _ in 0..20 {
            offset = logs.append(7, 1, 1, offset, &line).await.expect("append");
        }
        assert_eq!(offset, 2000, "every frame is acknowledged, kept or not");
        assert_eq!(logs.append(7, 1, 2, 0, b"next step\n").await.expect("next step"), 10);
        let step = String::from_utf8(logs.read_step(7, 1, 1, 0).await.expect("read")).expect("utf-8");
        assert!(step.len() < 1200, "{} bytes kept", step.len());
        assert!(step.ends_with("##[truncated] this step's log passed 1024 bytes; the rest of it was not kept\n"));
        assert_eq!(logs.read_step(7, 1, 2, 0).await.expect("read"), b"next step\n");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn live_readers_get_appends_and_learn_when_the_attempt_ends() {
        let dir = temp("live");
        let logs = LogStore::new(dir.clone());
        let mut rx = logs.subscribe(3, 1);
        logs.append(3, 1, 1, 0, b"one\n").await.expect("append");
        logs.append(3, 1, 2, 0, b"two\n").await.expect("append");
        let first = rx.recv().await.expect("chunk");
        assert_eq!((first.step, first.offset, &*first.bytes), (1, 0, &b"one\n"[..]));
        let second = rx.recv().await.expect("chunk");
        assert_eq!((second.step, second.offset), (2, 0));
        logs.finish(3, 1).await.expect("finish");
        logs.close(3, 1);
        assert!(matches!(rx.recv().await, Err(broadcast::error::RecvError::Closed)));
        let _ = std::fs::remove_dir_all(dir);
    }
}
