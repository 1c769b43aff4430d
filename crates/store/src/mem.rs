//! In-memory storage for tests: the same semantics as RocksDB, nothing durable.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use gitstratum_git::ObjectId;
use gitstratum_git::packfile;

use crate::{
    Actor, CommitInfo, Conflict, Error, IncomingPack, NewObject, Object, ObjectInfo, ObjectStore, RawEntry, RawKind,
    RefEvent, RefStore, RefUpdate, RepoId, RepoStats, Result, commit_records,
};

#[derive(Default)]
struct State {
    objects: HashMap<(RepoId, ObjectId), Object>,
    commits: HashMap<(RepoId, ObjectId), CommitInfo>,
    stats: HashMap<RepoId, RepoStats>,
    refs: BTreeMap<(RepoId, String), ObjectId>,
    heads: HashMap<RepoId, String>,
    events: Vec<RefEvent>,
}

pub struct MemStore {
    state: Mutex<State>,
    incoming: PathBuf,
}

impl Default for MemStore {
    fn default() -> Self {
        MemStore { state: Mutex::default(), incoming: std::env::temp_dir() }
    }
}

impl MemStore {
    pub fn new() -> Self {
        MemStore::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl ObjectStore for MemStore {
    fn put(&self, repo: RepoId, objects: &[NewObject]) -> Result<()> {
        let mut s = self.state();
        let records = commit_records(objects, |ids| {
            Ok(ids.iter().map(|id| s.commits.get(&(repo, *id)).map(|c| c.generation)).collect())
        })?;
        for o in objects {
            if s.objects.contains_key(&(repo, o.id)) {
                continue;
            }
            s.objects.insert((repo, o.id), Object { kind: o.kind, data: o.data.clone() });
            let stats = s.stats.entry(repo).or_default();
            stats.objects += 1;
            stats.bytes += o.data.len() as u64;
        }
        for (id, info) in records {
            s.commits.insert((repo, id), info);
        }
        Ok(())
    }

    fn info_many(&self, repo: RepoId, ids: &[ObjectId]) -> Result<Vec<Option<ObjectInfo>>> {
        let s = self.state();
        Ok(ids
            .iter()
            .map(|id| s.objects.get(&(repo, *id)).map(|o| ObjectInfo { kind: o.kind, size: o.data.len() as u64 }))
            .collect())
    }

    fn commits(&self, repo: RepoId, ids: &[ObjectId]) -> Result<Vec<Option<CommitInfo>>> {
        let s = self.state();
        Ok(ids.iter().map(|id| s.commits.get(&(repo, *id)).cloned()).collect())
    }

    fn stats(&self, repo: RepoId) -> Result<RepoStats> {
        Ok(self.state().stats.get(&repo).copied().unwrap_or_default())
    }

    fn get_many(&self, repo: RepoId, ids: &[ObjectId]) -> Result<Vec<Option<Object>>> {
        let s = self.state();
        Ok(ids.iter().map(|id| s.objects.get(&(repo, *id)).cloned()).collect())
    }

    fn incoming_dir(&self) -> &Path {
        &self.incoming
    }

    /// Reads every object out of the pack and keeps it whole.
    fn put_pack(&self, repo: RepoId, pack: IncomingPack<'_>) -> Result<()> {
        let read = || -> std::result::Result<Vec<NewObject>, gitstratum_git::pack::ReadError> {
            let file = std::fs::File::open(pack.path)?;
            let at: HashMap<ObjectId, u64> = pack.entries.iter().map(|e| (e.id, e.offset)).collect();
            let by_id = |id: &ObjectId| match at.get(id) {
                Some(offset) => {
                    packfile::read_object(&file, *offset, &|_| Ok(None), &packfile::NoCache, 10_000).map(Some)
                }
                None => Ok(None),
            };
            pack.entries
                .iter()
                .map(|e| {
                    let (kind, data) = packfile::read_object(&file, e.offset, &by_id, &packfile::NoCache, 10_000)?;
                    Ok(NewObject { id: e.id, kind, data: data.to_vec() })
                })
                .collect()
        };
        let objects = read().map_err(|e| Error::Corrupt(format!("incoming pack: {e}")));
        let _ = std::fs::remove_file(pack.path);
        self.put(repo, &objects?)
    }

    /// Whole objects, compressed on the way out (this store keeps no deltas).
    fn raw_many(&self, repo: RepoId, ids: &[ObjectId]) -> Result<Vec<Option<RawEntry>>> {
        let s = self.state();
        ids.iter()
            .map(|id| {
                let Some(o) = s.objects.get(&(repo, *id)) else { return Ok(None) };
                let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
                z.write_all(&o.data).and_then(|()| z.finish()).map_err(|e| Error::Backend(e.to_string())).map(
                    |compressed| Some(RawEntry { kind: RawKind::Whole(o.kind), size: o.data.len() as u64, compressed }),
                )
            })
            .collect()
    }

    fn fork(&self, from: RepoId, to: RepoId) -> Result<()> {
        let mut s = self.state();
        let objects: Vec<_> =
            s.objects.iter().filter(|((r, _), _)| *r == from).map(|((_, id), o)| (*id, o.clone())).collect();
        let commits: Vec<_> =
            s.commits.iter().filter(|((r, _), _)| *r == from).map(|((_, id), c)| (*id, c.clone())).collect();
        s.objects.extend(objects.into_iter().map(|(id, o)| ((to, id), o)));
        s.commits.extend(commits.into_iter().map(|(id, c)| ((to, id), c)));
        let stats = s.stats.get(&from).copied().unwrap_or_default();
        s.stats.insert(to, stats);
        Ok(())
    }

    fn delete_repo(&self, repo: RepoId) -> Result<()> {
        let mut s = self.state();
        s.objects.retain(|(r, _), _| *r != repo);
        s.commits.retain(|(r, _), _| *r != repo);
        s.stats.remove(&repo);
        Ok(())
    }
}

impl RefStore for MemStore {
    fn list(&self, repo: RepoId) -> Result<Vec<(String, ObjectId)>> {
        let s = self.state();
        Ok(s.refs.iter().filter(|((r, _), _)| *r == repo).map(|((_, n), id)| (n.clone(), *id)).collect())
    }

    fn get(&self, repo: RepoId, name: &str) -> Result<Option<ObjectId>> {
        Ok(self.state().refs.get(&(repo, name.to_owned())).copied())
    }

    fn update(&self, repo: RepoId, updates: &[RefUpdate], actor: &Actor) -> Result<Result<Vec<RefEvent>, Conflict>> {
        let mut s = self.state();
        for u in updates {
            if s.refs.get(&(repo, u.name.clone())).copied() != u.old {
                return Ok(Err(Conflict { name: u.name.clone() }));
            }
        }
        let names = crate::RefNames::new(s.refs.keys().filter(|(r, _)| *r == repo).map(|(_, n)| n.as_str()));
        if let Some(u) = names.first_clash(updates) {
            return Ok(Err(Conflict { name: u.name.clone() }));
        }
        let mut written = Vec::with_capacity(updates.len());
        for u in updates {
            match u.new {
                Some(id) => s.refs.insert((repo, u.name.clone()), id),
                None => s.refs.remove(&(repo, u.name.clone())),
            };
            let seq = s.events.last().map_or(1, |e| e.seq + 1);
            let event = RefEvent::of(seq, repo, u, actor);
            s.events.push(event.clone());
            written.push(event);
        }
        Ok(Ok(written))
    }

    fn head(&self, repo: RepoId) -> Result<Option<String>> {
        Ok(self.state().heads.get(&repo).cloned())
    }

    fn set_head(&self, repo: RepoId, target: &str) -> Result<()> {
        self.state().heads.insert(repo, target.to_owned());
        Ok(())
    }

    fn events_after(&self, after: u64, limit: usize) -> Result<Vec<RefEvent>> {
        Ok(self.state().events.iter().filter(|e| e.seq > after).take(limit).cloned().collect())
    }

    fn delete_repo(&self, repo: RepoId) -> Result<()> {
        let mut s = self.state();
        s.refs.retain(|(r, _), _| *r != repo);
        s.heads.remove(&repo);
        Ok(())
    }
}
