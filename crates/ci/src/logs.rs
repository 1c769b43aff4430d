//! Job logs: one file per job attempt under the data directory's `blobs/logs/`, appended by byte
//! offset. A frame at the current end is appended; a frame that overlaps what is stored (a resend)
//! adds only its new part; a frame past the end is refused with the offset the store has, so the
//! runner resends from there. A log is synced when its job completes, so a final log that was
//! acknowledged survives a crash.

use std::path::PathBuf;

use tokio::io::AsyncWriteExt;

/// The most a job attempt may log.
pub const MAX_LOG_BYTES: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("the frame starts at byte {offset}, but the log has {have} bytes; resend from {have}")]
    Gap { offset: u64, have: u64 },
    #[error("the log would exceed {MAX_LOG_BYTES} bytes")]
    TooLarge,
    #[error("log storage: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug)]
pub struct LogStore {
    dir: PathBuf,
    /// Appends are serialized: a resend racing its original must not write twice.
    lock: tokio::sync::Mutex<()>,
    /// Woken on every append, for live readers.
    appended: tokio::sync::Notify,
}

impl LogStore {
    pub fn new(dir: PathBuf) -> LogStore {
        LogStore { dir, lock: tokio::sync::Mutex::new(()), appended: tokio::sync::Notify::new() }
    }

    /// Resolves after the next append to any log (live readers then look at theirs).
    pub fn appended(&self) -> tokio::sync::futures::Notified<'_> {
        self.appended.notified()
    }

    /// Wakes live readers without an append (a job ended: its stream can end).
    pub fn wake(&self) {
        self.appended.notify_waiters();
    }

    /// The log from byte `offset` on (empty when there is nothing there yet).
    pub async fn read_from(&self, job_id: i64, attempt: i64, offset: u64) -> Result<Vec<u8>, LogError> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let mut file = match tokio::fs::File::open(self.path(job_id, attempt)).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        file.seek(std::io::SeekFrom::Start(offset)).await?;
        let mut out = Vec::new();
        file.read_to_end(&mut out).await?;
        Ok(out)
    }

    fn path(&self, job_id: i64, attempt: i64) -> PathBuf {
        self.dir.join(job_id.to_string()).join(format!("{attempt}.log"))
    }

    /// Appends `bytes` at `offset`; returns the log's length after it.
    pub async fn append(&self, job_id: i64, attempt: i64, offset: u64, bytes: &[u8]) -> Result<u64, LogError> {
        let _guard = self.lock.lock().await;
        let path = self.path(job_id, attempt);
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        let mut file = tokio::fs::OpenOptions::new().create(true).append(true).open(&path).await?;
        let have = file.metadata().await?.len();
        if offset > have {
            return Err(LogError::Gap { offset, have });
        }
        let already = usize::try_from(have - offset).unwrap_or(usize::MAX);
        let Some(new) = bytes.get(already..) else { return Ok(have) };
        if have + new.len() as u64 > MAX_LOG_BYTES {
            return Err(LogError::TooLarge);
        }
        file.write_all(new).await?;
        file.flush().await?;
        self.appended.notify_waiters();
        Ok(have + new.len() as u64)
    }

    /// Makes the log durable (at job completion).
    pub async fn sync(&self, job_id: i64, attempt: i64) -> Result<(), LogError> {
        match tokio::fs::File::open(self.path(job_id, attempt)).await {
            Ok(file) => Ok(file.sync_all().await?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The log so far (empty when nothing was logged).
    pub async fn read(&self, job_id: i64, attempt: i64) -> Result<Vec<u8>, LogError> {
        match tokio::fs::read(self.path(job_id, attempt)).await {
            Ok(bytes) => Ok(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_are_idempotent_by_offset() {
        let dir = std::env::temp_dir().join(format!("gst-logs-{}", std::process::id()));
        let logs = LogStore::new(dir.clone());
        assert_eq!(logs.append(1, 1, 0, b"hello ").await.expect("first"), 6);
        assert_eq!(logs.append(1, 1, 0, b"hello ").await.expect("resent"), 6, "a resend adds nothing");
        assert_eq!(logs.append(1, 1, 3, b"lo world").await.expect("overlap"), 11, "only the new part");
        assert!(matches!(logs.append(1, 1, 20, b"x").await, Err(LogError::Gap { offset: 20, have: 11 })));
        assert_eq!(logs.read(1, 1).await.expect("read"), b"hello world");
        assert!(logs.read(1, 2).await.expect("other attempt").is_empty(), "attempts keep their own logs");
        logs.sync(1, 1).await.expect("sync");
        let _ = std::fs::remove_dir_all(dir);
    }
}
