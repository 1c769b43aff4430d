//! The data directory: one folder holds all of a single-node server's state.
//!
//! ```text
//! DATA/
//!   git/                 Git objects and refs (RocksDB; arrives with the Git engine)
//!   platform.db          platform state (SQLite), unless a PostgreSQL URL is configured
//!   blobs/               CI logs and artifacts
//!   config.toml          settings (written on first start, all commented out)
//!   secrets.key          key that encrypts CI secrets at rest (0600)
//!   initial-admin-token  the first admin token (0600), written once on first start
//!   lock                 held (flock) by the one server using the directory
//! ```
//!
//! Files holding secrets are written to a temporary name with mode 0600, synced, then renamed, so
//! a crash never leaves a partial or world-readable secret.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::config::EXAMPLE_CONFIG;

/// An open data directory. Holds an exclusive lock on `DATA/lock` until dropped, so two servers
/// never share one directory; the operating system releases it if the process dies.
#[derive(Debug)]
pub struct DataDir {
    root: PathBuf,
    _lock: fs::File,
}

impl DataDir {
    /// Opens the data directory, creating it and any missing part of its layout, and locks it.
    pub fn create(root: &Path) -> io::Result<DataDir> {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(root)?;
        let lock =
            fs::OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(root.join("lock"))?;
        lock.try_lock().map_err(|e| match e {
            fs::TryLockError::WouldBlock => {
                io::Error::new(io::ErrorKind::WouldBlock, "another gitstratum process is using this data directory")
            }
            fs::TryLockError::Error(e) => e,
        })?;
        let dir = DataDir { root: root.to_owned(), _lock: lock };
        tighten_once(&dir.root)?;
        for sub in [dir.git_dir(), dir.blobs_dir()] {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(sub)?;
        }
        // SQLite gives its -wal and -shm files the database file's mode: create it private.
        let db = dir.root.join("platform.db");
        if !db.exists() {
            fs::OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(&db)?;
        }
        let config = dir.root.join("config.toml");
        if !config.exists() {
            write_atomically(&config, EXAMPLE_CONFIG.as_bytes(), 0o600)?;
        }
        let key = dir.secrets_key_path();
        if !key.exists() {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).map_err(|e| io::Error::other(format!("no OS randomness: {e}")))?;
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            write_atomically(&key, format!("{hex}\n").as_bytes(), 0o600)?;
        }
        Ok(dir)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn git_dir(&self) -> PathBuf {
        self.root.join("git")
    }

    /// Fetch responses kept for identical requests (the pack cache); safe to delete while stopped.
    pub fn pack_cache_dir(&self) -> PathBuf {
        self.root.join("pack-cache")
    }

    /// Commits of upstream actions, as fetched (`[actions] sources`); safe to delete while stopped.
    pub fn actions_cache_dir(&self) -> PathBuf {
        self.root.join("actions-cache")
    }

    pub fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs")
    }

    pub fn platform_db_path(&self) -> PathBuf {
        self.root.join("platform.db")
    }

    pub fn secrets_key_path(&self) -> PathBuf {
        self.root.join("secrets.key")
    }

    /// The SSH server's host key (made on first start with SSH on).
    pub fn ssh_host_key_path(&self) -> PathBuf {
        self.root.join("ssh_host_ed25519_key")
    }

    pub fn initial_admin_token_path(&self) -> PathBuf {
        self.root.join("initial-admin-token")
    }

    /// Writes the first admin token where the operator finds it (mode 0600).
    pub fn write_initial_admin_token(&self, token: &str) -> io::Result<()> {
        write_atomically(&self.initial_admin_token_path(), format!("{token}\n").as_bytes(), 0o600)
    }
}

/// Data directories made by earlier versions have files other users may read (0644): once, make
/// every file 0600 and every directory 0700 (files made from now on are, by the process's umask
/// and the modes given here). A marker file records that it was done.
fn tighten_once(root: &Path) -> io::Result<()> {
    let marker = root.join(".private");
    if marker.exists() {
        return Ok(());
    }
    let mut todo = vec![root.to_owned()];
    while let Some(dir) = todo.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_symlink() {
                continue;
            }
            let path = entry.path();
            let mode = entry.metadata()?.permissions().mode() & 0o777;
            let want = if kind.is_dir() { 0o700 } else { mode & 0o700 };
            if mode != want {
                fs::set_permissions(&path, fs::Permissions::from_mode(want))?;
            }
            if kind.is_dir() {
                todo.push(path);
            }
        }
    }
    fs::set_permissions(root, fs::Permissions::from_mode(0o700))?;
    write_atomically(&marker, b"files here are private to the server (0600, directories 0700)\n", 0o600)
}

/// Write to `path.tmp` with `mode`, fsync, rename over `path`, fsync the directory.
fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("exists").permissions().mode() & 0o777
    }

    #[test]
    fn creates_the_layout_once() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let root = tmp.path().join("data");
        let dir = DataDir::create(&root).expect("create");
        assert!(dir.git_dir().is_dir() && dir.blobs_dir().is_dir());
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&dir.secrets_key_path()), 0o600);
        assert_eq!(fs::read_to_string(root.join("config.toml")).expect("config"), EXAMPLE_CONFIG);
        let key = fs::read_to_string(dir.secrets_key_path()).expect("key");
        assert_eq!(key.trim().len(), 64);

        // While it is open, nobody else may open it.
        let err = DataDir::create(&root).expect_err("locked");
        assert!(err.to_string().contains("another gitstratum process"), "{err}");

        // A second open keeps what is there.
        fs::write(root.join("config.toml"), "# mine\n").expect("write");
        drop(dir);
        let dir = DataDir::create(&root).expect("reopen");
        assert_eq!(fs::read_to_string(dir.secrets_key_path()).expect("key"), key);
        assert_eq!(fs::read_to_string(root.join("config.toml")).expect("config"), "# mine\n");

        dir.write_initial_admin_token("gst_x").expect("token");
        assert_eq!(mode(&dir.initial_admin_token_path()), 0o600);
        assert!(!root.join("initial-admin-token.tmp").exists());
    }

    #[test]
    fn an_older_data_directory_is_made_private_once() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path().join("data");
        fs::create_dir_all(root.join("blobs/logs")).expect("mkdir");
        fs::set_permissions(root.join("blobs"), fs::Permissions::from_mode(0o755)).expect("chmod");
        fs::write(root.join("platform.db"), b"").expect("write");
        fs::set_permissions(root.join("platform.db"), fs::Permissions::from_mode(0o644)).expect("chmod");
        fs::write(root.join("blobs/logs/1.log"), b"x").expect("write");
        fs::set_permissions(root.join("blobs/logs/1.log"), fs::Permissions::from_mode(0o664)).expect("chmod");
        let dir = DataDir::create(&root).expect("open");
        assert_eq!(mode(&root.join("platform.db")), 0o600);
        assert_eq!(mode(&root.join("blobs")), 0o700);
        assert_eq!(mode(&root.join("blobs/logs/1.log")), 0o600);
        drop(dir);
        // Done once: a file the operator opens up later is left alone.
        fs::set_permissions(root.join("platform.db"), fs::Permissions::from_mode(0o640)).expect("chmod");
        let _dir = DataDir::create(&root).expect("open again");
        assert_eq!(mode(&root.join("platform.db")), 0o640);
    }
}
