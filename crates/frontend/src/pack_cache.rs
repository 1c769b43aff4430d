//! The pack cache (seed 001's `pack_cache`): a fetch's response, kept on disk by what decides its
//! bytes, so the next identical request (a CI fleet cloning the same commit) is copied from a file
//! instead of walked and packed again; identical requests arriving together share one generation.
//!
//! The key is a SHA-256 of everything that decides the bytes: the repository, the wanted ids, the
//! common haves, the client's shallow commits, the deepen and filter arguments, the capabilities
//! that change the pack (`thin-pack`, `ofs-delta`, `include-tag`, and then the tag refs). Objects
//! are immutable and every input is in the key, so an entry is never stale: a moved ref is a new
//! want, hence a new key.
//!
//! An entry is a file `<key>.pack`: a header (magic, the shallow and unshallow ids of the
//! response) and the pack as sent. The first request of a key (the leader) has the pack written
//! into `<key>.tmp` by a thread of its own, then synced and renamed; the leading request and every
//! identical one meanwhile (the followers) read the growing file as it is written, so a client
//! that goes away stops nothing. Files are bounded in total size, least recently used removed
//! first. A generation that fails is marked failed and removed; a follower that has not started
//! generates its own response.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use gitstratum_git::ObjectId;
use sha2::{Digest, Sha256};

const MAGIC: &[u8; 8] = b"GSPACK1\n";

/// Builds a cache key from the parts of a request that decide the response's bytes.
#[derive(Default)]
pub(crate) struct KeyBuilder(Sha256);

impl KeyBuilder {
    pub(crate) fn field(&mut self, name: &str, value: impl AsRef<[u8]>) -> &mut Self {
        let value = value.as_ref();
        self.0.update(name.as_bytes());
        self.0.update((value.len() as u64).to_be_bytes());
        self.0.update(value);
        self
    }

    /// A set of ids, in a canonical order.
    pub(crate) fn ids(&mut self, name: &str, ids: impl IntoIterator<Item = ObjectId>) -> &mut Self {
        let mut ids: Vec<ObjectId> = ids.into_iter().collect();
        ids.sort_unstable();
        ids.dedup();
        let mut bytes = Vec::with_capacity(ids.len() * 20);
        for id in &ids {
            bytes.extend_from_slice(id.as_bytes());
        }
        self.field(name, bytes)
    }

    pub(crate) fn finish(self) -> String {
        self.0.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The shallow-info lines of a cached response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Meta {
    pub shallow: Vec<ObjectId>,
    pub unshallow: Vec<ObjectId>,
}

impl Meta {
    fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for (tag, ids) in [(b's', &self.shallow), (b'u', &self.unshallow)] {
            out.extend_from_slice(&(ids.len() as u32).to_be_bytes());
            for id in ids {
                out.push(tag);
                out.extend_from_slice(id.as_bytes());
            }
        }
        out
    }

    /// Reads the header; the reader is left at the pack.
    fn decode(r: &mut impl Read) -> io::Result<Meta> {
        let bad = || io::Error::new(io::ErrorKind::InvalidData, "not a pack cache entry");
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(bad());
        }
        let mut meta = Meta::default();
        for list in [&mut meta.shallow, &mut meta.unshallow] {
            let mut n = [0u8; 4];
            r.read_exact(&mut n)?;
            for _ in 0..u32::from_be_bytes(n) {
                let mut entry = [0u8; 21];
                r.read_exact(&mut entry)?;
                list.push(ObjectId::from_bytes_or_panic(&entry[1..]));
            }
        }
        Ok(meta)
    }
}

struct Entry {
    size: u64,
    used: u64,
}

/// A generation in progress that followers read as it grows.
struct Inflight {
    state: Mutex<Progress>,
    grew: Condvar,
    tmp: PathBuf,
    /// Where the entry is once complete (a follower that comes late opens it there).
    path: PathBuf,
}

#[derive(Default)]
struct Progress {
    meta: Option<Meta>,
    /// Bytes of the file (header included) written so far.
    written: u64,
    /// `Some(true)`: complete; `Some(false)`: failed.
    done: Option<bool>,
}

struct State {
    entries: HashMap<String, Entry>,
    total: u64,
    clock: u64,
    inflight: HashMap<String, Arc<Inflight>>,
}

pub struct PackCache {
    dir: PathBuf,
    max_bytes: u64,
    state: Mutex<State>,
}

/// What a lookup found.
pub(crate) enum Lookup {
    /// A complete entry: its shallow lines and the pack, positioned at the pack's first byte.
    Hit(Meta, File),
    /// Another request is generating it: read it as it grows.
    Follow(Follower),
    /// Nobody has it: generate it, writing through the leader.
    Lead(Leader),
}

impl PackCache {
    /// Opens (creating) the cache directory; entries left by an earlier run are kept, unfinished
    /// ones removed.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<PackCache> {
        std::fs::create_dir_all(dir)?;
        let mut entries = HashMap::new();
        let mut total = 0;
        let mut found: Vec<(std::time::SystemTime, String, u64)> = Vec::new();
        for item in std::fs::read_dir(dir)? {
            let item = item?;
            let path = item.path();
            let name = item.file_name().to_string_lossy().into_owned();
            if let Some(key) = name.strip_suffix(".pack") {
                let meta = item.metadata()?;
                found.push((meta.modified().unwrap_or(std::time::UNIX_EPOCH), key.to_owned(), meta.len()));
            } else {
                let _ = std::fs::remove_file(&path);
            }
        }
        found.sort();
        for (clock, (_, key, size)) in found.into_iter().enumerate() {
            total += size;
            entries.insert(key, Entry { size, used: clock as u64 });
        }
        let clock = entries.len() as u64;
        let cache = PackCache {
            dir: dir.to_owned(),
            max_bytes,
            state: Mutex::new(State { entries, total, clock, inflight: HashMap::new() }),
        };
        cache.evict(&mut cache.lock());
        Ok(cache)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.pack"))
    }

    pub(crate) fn lookup(self: &Arc<Self>, key: &str) -> io::Result<Lookup> {
        let mut state = self.lock();
        if state.entries.contains_key(key) {
            match File::open(self.path(key)).and_then(|mut f| Meta::decode(&mut f).map(|m| (m, f))) {
                Ok((meta, file)) => {
                    state.clock += 1;
                    let clock = state.clock;
                    if let Some(entry) = state.entries.get_mut(key) {
                        entry.used = clock;
                    }
                    metrics::counter!("gitstratum_frontend_cache_hits_total", "kind" => "stored").increment(1);
                    return Ok(Lookup::Hit(meta, file));
                }
                Err(e) => {
                    // Removed or damaged under us: forget it and generate anew.
                    tracing::warn!(key, error = %e, "pack cache entry unreadable; regenerating");
                    if let Some(entry) = state.entries.remove(key) {
                        state.total -= entry.size;
                    }
                    let _ = std::fs::remove_file(self.path(key));
                }
            }
        }
        if let Some(inflight) = state.inflight.get(key) {
            metrics::counter!("gitstratum_frontend_cache_hits_total", "kind" => "coalesced").increment(1);
            return Ok(Lookup::Follow(Follower { inflight: inflight.clone(), offset: 0, file: None }));
        }
        metrics::counter!("gitstratum_frontend_cache_misses_total").increment(1);
        let tmp = self.dir.join(format!("{key}.tmp"));
        let file = File::create(&tmp)?;
        let inflight = Arc::new(Inflight {
            state: Mutex::new(Progress::default()),
            grew: Condvar::new(),
            tmp,
            path: self.path(key),
        });
        state.inflight.insert(key.to_owned(), inflight.clone());
        Ok(Lookup::Lead(Leader { cache: self.clone(), key: key.to_owned(), inflight, file: Some(file), written: 0 }))
    }

    fn evict(&self, state: &mut State) {
        while state.total > self.max_bytes {
            let Some(oldest) = state.entries.iter().min_by_key(|(_, e)| e.used).map(|(k, _)| k.clone()) else {
                break;
            };
            if let Some(entry) = state.entries.remove(&oldest) {
                state.total -= entry.size;
            }
            // A reader that opened it keeps its handle: removal never cuts a response short.
            let _ = std::fs::remove_file(self.path(&oldest));
        }
    }

    /// Bytes the cache holds on disk.
    pub fn size(&self) -> u64 {
        self.lock().total
    }
}

/// Writes an entry while its pack is generated: `set_meta` first, then the pack's bytes, then
/// `finish`. Dropped unfinished, the entry is failed (and removed).
pub(crate) struct Leader {
    cache: Arc<PackCache>,
    key: String,
    inflight: Arc<Inflight>,
    file: Option<File>,
    written: u64,
}

impl Leader {
    /// A reader of this entry (for the request that leads it).
    pub(crate) fn follower(&self) -> Follower {
        Follower { inflight: self.inflight.clone(), offset: 0, file: None }
    }

    pub(crate) fn set_meta(&mut self, meta: &Meta) -> io::Result<()> {
        let header = meta.encode();
        self.append(&header)?;
        lock(&self.inflight.state).meta = Some(meta.clone());
        self.inflight.grew.notify_all();
        Ok(())
    }

    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let file = self.file.as_mut().ok_or_else(|| io::Error::other("the cache entry is closed"))?;
        file.write_all(bytes)?;
        self.written += bytes.len() as u64;
        lock(&self.inflight.state).written = self.written;
        self.inflight.grew.notify_all();
        Ok(())
    }

    /// The entry is complete: durable under its name, counted, and the oldest evicted if over
    /// the bound.
    pub(crate) fn finish(mut self) -> io::Result<()> {
        let file = self.file.take().ok_or_else(|| io::Error::other("the cache entry is closed"))?;
        file.sync_data()?;
        drop(file);
        let path = self.cache.path(&self.key);
        std::fs::rename(&self.inflight.tmp, &path)?;
        let mut state = self.cache.lock();
        state.inflight.remove(&self.key);
        state.clock += 1;
        let used = state.clock;
        if self.written <= self.cache.max_bytes {
            state.total += self.written;
            state.entries.insert(self.key.clone(), Entry { size: self.written, used });
            self.cache.evict(&mut state);
        } else {
            let _ = std::fs::remove_file(&path);
        }
        drop(state);
        lock(&self.inflight.state).done = Some(true);
        self.inflight.grew.notify_all();
        Ok(())
    }
}

impl Write for Leader {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.append(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        if self.file.is_none() {
            return;
        }
        self.file = None;
        let _ = std::fs::remove_file(&self.inflight.tmp);
        self.cache.lock().inflight.remove(&self.key);
        lock(&self.inflight.state).done = Some(false);
        self.inflight.grew.notify_all();
    }
}

fn lock(m: &Mutex<Progress>) -> MutexGuard<'_, Progress> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Reads an entry another request is generating, as it grows.
pub(crate) struct Follower {
    inflight: Arc<Inflight>,
    offset: u64,
    file: Option<File>,
}

/// How long a follower waits for its leader to write more before giving up on it.
const STALL: Duration = Duration::from_secs(120);

impl Follower {
    /// The response's shallow lines, once the leader has them; `None` if the leader failed
    /// first (generate instead).
    pub(crate) fn meta(&mut self) -> io::Result<Option<Meta>> {
        let mut state = lock(&self.inflight.state);
        loop {
            if let Some(meta) = &state.meta {
                let meta = meta.clone();
                let header = meta.encode().len() as u64;
                drop(state);
                // Renamed once complete: a follower that comes late reads it under its name.
                let mut file = File::open(&self.inflight.tmp).or_else(|e| match e.kind() {
                    io::ErrorKind::NotFound => File::open(&self.inflight.path),
                    _ => Err(e),
                })?;
                file.seek(SeekFrom::Start(header))?;
                self.file = Some(file);
                self.offset = header;
                return Ok(Some(meta));
            }
            if state.done.is_some() {
                return Ok(None);
            }
            let (next, timeout) =
                self.inflight.grew.wait_timeout(state, STALL).unwrap_or_else(|poisoned| poisoned.into_inner());
            if timeout.timed_out() {
                return Ok(None);
            }
            state = next;
        }
    }

    /// Copies the pack to `out` as the leader writes it. Fails if the leader fails.
    pub(crate) fn copy_to(&mut self, out: &mut dyn Write) -> io::Result<u64> {
        let file = self.file.as_mut().ok_or_else(|| io::Error::other("meta() first"))?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut copied = 0;
        loop {
            let (available, done) = {
                let mut state = lock(&self.inflight.state);
                while state.written <= self.offset && state.done.is_none() {
                    let (next, timeout) =
                        self.inflight.grew.wait_timeout(state, STALL).unwrap_or_else(|poisoned| poisoned.into_inner());
                    if timeout.timed_out() {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "the pack being generated stalled"));
                    }
                    state = next;
                }
                (state.written - self.offset, state.done)
            };
            if done == Some(false) {
                return Err(io::Error::other("generating the pack failed"));
            }
            if available == 0 {
                return Ok(copied);
            }
            let len = available.min(buf.len() as u64) as usize;
            let n = file.read(&mut buf[..len])?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the cache entry is shorter than written"));
            }
            out.write_all(&buf[..n])?;
            self.offset += n as u64;
            copied += n as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ObjectId {
        ObjectId::from_bytes_or_panic(&[n; 20])
    }

    fn key(n: u8) -> String {
        let mut k = KeyBuilder::default();
        k.ids("wants", [id(n)]);
        k.finish()
    }

    fn lead(cache: &Arc<PackCache>, key: &str) -> Leader {
        match cache.lookup(key).expect("lookup") {
            Lookup::Lead(leader) => leader,
            _ => panic!("expected to lead"),
        }
    }

    #[test]
    fn keys_ignore_order_and_tell_fields_apart() {
        let mut a = KeyBuilder::default();
        a.ids("wants", [id(1), id(2)]).field("depth", "1");
        let mut b = KeyBuilder::default();
        b.ids("wants", [id(2), id(1), id(1)]).field("depth", "1");
        assert_eq!(a.finish(), b.finish());
        let mut c = KeyBuilder::default();
        c.field("x", "ab").field("y", "");
        let mut d = KeyBuilder::default();
        d.field("x", "a").field("y", "b");
        assert_ne!(c.finish(), d.finish(), "lengths separate fields");
    }

    /// Followers read what the leader writes while it writes it, and get the same bytes; the next
    /// request is a hit with the same bytes.
    #[test]
    fn followers_share_one_generation_and_later_requests_hit() {
        let dir = tempfile::tempdir().expect("dir");
        let cache = Arc::new(PackCache::open(dir.path(), 1 << 20).expect("open"));
        let k = key(1);
        let mut leader = lead(&cache, &k);
        let meta = Meta { shallow: vec![id(7)], unshallow: vec![] };
        leader.set_meta(&meta).expect("meta");
        let followers: Vec<_> = (0..3)
            .map(|_| {
                let Lookup::Follow(mut f) = cache.lookup(&k).expect("lookup") else { panic!("expected to follow") };
                std::thread::spawn(move || {
                    let meta = f.meta().expect("meta").expect("leader has it");
                    let mut out = Vec::new();
                    f.copy_to(&mut out).expect("copy");
                    (meta, out)
                })
            })
            .collect();
        let mut expected = Vec::new();
        for chunk in 0..50u8 {
            let bytes = vec![chunk; 1000];
            leader.write_all(&bytes).expect("write");
            expected.extend_from_slice(&bytes);
            std::thread::sleep(Duration::from_millis(1));
        }
        leader.finish().expect("finish");
        for f in followers {
            let (got_meta, out) = f.join().expect("join");
            assert_eq!(got_meta, meta);
            assert_eq!(out, expected);
        }
        let Lookup::Hit(got_meta, mut file) = cache.lookup(&k).expect("lookup") else { panic!("expected a hit") };
        let mut out = Vec::new();
        file.read_to_end(&mut out).expect("read");
        assert_eq!((got_meta, out), (meta, expected));
    }

    /// A leader that fails (dropped unfinished) leaves nothing behind; its followers are told.
    #[test]
    fn a_failed_generation_is_not_kept() {
        let dir = tempfile::tempdir().expect("dir");
        let cache = Arc::new(PackCache::open(dir.path(), 1 << 20).expect("open"));
        let k = key(2);
        let mut leader = lead(&cache, &k);
        leader.set_meta(&Meta::default()).expect("meta");
        leader.write_all(b"PACK partial").expect("write");
        let Lookup::Follow(mut f) = cache.lookup(&k).expect("lookup") else { panic!("expected to follow") };
        assert!(f.meta().expect("meta").is_some());
        drop(leader);
        assert!(f.copy_to(&mut Vec::new()).is_err(), "the follower learns of the failure");
        let again = cache.lookup(&k).expect("lookup");
        assert!(matches!(again, Lookup::Lead(_)), "nothing was kept");
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1, "only the new leader's file");
        drop(again);
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
    }

    /// Over the bound, the least recently used entries go; a reopened cache keeps finished entries
    /// and drops unfinished ones.
    #[test]
    fn entries_are_bounded_least_recently_used_first_and_survive_a_restart() {
        let dir = tempfile::tempdir().expect("dir");
        let cache = Arc::new(PackCache::open(dir.path(), 2500).expect("open"));
        for n in 0..3 {
            let mut leader = lead(&cache, &key(n));
            leader.set_meta(&Meta::default()).expect("meta");
            leader.write_all(&[n; 1000]).expect("write");
            leader.finish().expect("finish");
            if n == 1 {
                // Entry 0 is used again: entry 1 is now the least recently used.
                assert!(matches!(cache.lookup(&key(0)).expect("lookup"), Lookup::Hit(..)));
            }
        }
        assert!(cache.size() <= 2500);
        assert!(matches!(cache.lookup(&key(0)).expect("lookup"), Lookup::Hit(..)));
        assert!(matches!(cache.lookup(&key(2)).expect("lookup"), Lookup::Hit(..)));
        let unfinished = lead(&cache, &key(9));
        std::mem::forget(unfinished); // as a crash would leave it
        drop(cache);
        let reopened = Arc::new(PackCache::open(dir.path(), 2500).expect("reopen"));
        assert!(matches!(reopened.lookup(&key(0)).expect("lookup"), Lookup::Hit(..)));
        assert!(matches!(reopened.lookup(&key(1)).expect("lookup"), Lookup::Lead(_)), "evicted before");
        assert!(!dir.path().join(format!("{}.tmp", key(9))).exists(), "the unfinished entry is gone");
    }
}
