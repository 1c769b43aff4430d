//! receive-pack: what `git push` talks to.
//!
//! Order of work, which is what makes a push safe:
//! 1. read the commands; refuse invalid ref names;
//! 2. stream the pack to a file (never held in memory), indexing it as it arrives: every entry
//!    hashed, then deltas resolved from the file with a bounded base cache (thin-pack bases from
//!    the store), every commit, tree and tag parsed;
//! 3. check that each new tip is connected (everything it reaches is in the pack or stored);
//! 4. complete a thin pack (its bases appended) and store the pack: synced and in place, then
//!    indexed in one synced write;
//! 5. update the refs with compare-and-swap, appending their events in the same synced write;
//! 6. report. A push is acknowledged only after step 5 is durable; a crash before it leaves the
//!    refs as they were (a pack stored in step 4 is unreferenced and harmless; a spooled one is
//!    removed when the store is next opened).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufWriter, Write};

use gitstratum_git::packfile::{self, IndexedEntry};
use gitstratum_git::parse::{self, is_valid_ref_name};
use gitstratum_git::pktline::{self, Band};
use gitstratum_git::protocol::{self, AGENT, PushCommand, PushRequest};
use gitstratum_git::{ObjectId, ObjectKind};
use gitstratum_store::{Actor, IncomingPack, RefNames, RefUpdate, RepoId};

use crate::walk;
use crate::{DEFAULT_HEAD, Error, GitService, Result};

/// Capabilities receive-pack advertises.
const CAPABILITIES: &str =
    "report-status report-status-v2 delete-refs side-band-64k quiet atomic ofs-delta push-options object-format=sha1";

#[derive(Clone)]
pub struct ReceiveOptions {
    /// Largest object accepted in a push.
    pub max_object_size: u64,
    /// Bytes of delta bases held while indexing a push (more are rebuilt from the file).
    pub delta_base_budget: usize,
    /// Rules a ref update must pass besides Git's own (protected branches), asked once the
    /// pushed objects are stored and before any ref moves.
    pub guard: Option<std::sync::Arc<dyn RefGuard>>,
}

impl std::fmt::Debug for ReceiveOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiveOptions")
            .field("max_object_size", &self.max_object_size)
            .field("delta_base_budget", &self.delta_base_budget)
            .field("guard", &self.guard.is_some())
            .finish()
    }
}

impl Default for ReceiveOptions {
    fn default() -> Self {
        ReceiveOptions { max_object_size: 1 << 30, delta_base_budget: 64 << 20, guard: None }
    }
}

/// What an update does to its ref.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateKind {
    Create,
    /// The new value contains the old one.
    FastForward,
    /// It does not (or either is not a commit).
    Force,
    Delete,
}

/// A rule for ref updates beyond Git's own, asked from the blocking pool.
pub trait RefGuard: Send + Sync {
    /// Why the update may not happen, as git prints it after `! [remote rejected]`; `None`: it
    /// may.
    fn check(&self, name: &str, kind: UpdateKind, new: Option<ObjectId>) -> Option<String>;
}

/// Largest command section of a push (ref updates and push options): a mirror push of 100,000
/// refs is about 10 MiB.
const MAX_COMMANDS_BYTES: usize = 64 << 20;

/// A pushed pack, spooled and indexed, not yet stored.
struct Received {
    file: tempfile::NamedTempFile,
    checksum: ObjectId,
    len: u64,
    entries: Vec<IndexedEntry>,
    /// Bases a thin pack left out, to append before storing.
    external: Vec<ObjectId>,
    commits: Vec<(ObjectId, parse::Commit)>,
    /// Ids the pack's commits, trees and tags name, deduplicated.
    links: HashSet<ObjectId>,
}

/// What a push did, for callers that log, audit or trigger on it.
#[derive(Debug, Clone, Default)]
pub struct PushOutcome {
    pub updated: Vec<gitstratum_store::RefEvent>,
    pub rejected: Vec<(String, String)>,
}

/// Refs the server keeps and pushes may not touch (`refs/pull/N/head`, `refs/pull/N/merge`):
/// hidden from the push advertisement, as C git's `receive.hideRefs` hides them (so a
/// `push --mirror` does not try to delete them), and refused when a push names them.
pub const HIDDEN_REFS: &str = "refs/pull/";

pub(crate) fn advertise(service: &GitService, repo: RepoId, out: &mut Vec<u8>) -> Result<()> {
    let mut refs = service.refs.list(repo)?;
    refs.retain(|(name, _)| !name.starts_with(HIDDEN_REFS));
    let caps = format!("{CAPABILITIES} agent={AGENT}");
    if refs.is_empty() {
        pktline::write_data(
            out,
            format!("{} capabilities^{{}}\0{caps}\n", ObjectId::null(gitstratum_git::object::HashKind::Sha1))
                .as_bytes(),
        );
    }
    for (i, (name, id)) in refs.iter().enumerate() {
        if i == 0 {
            pktline::write_data(out, format!("{id} {name}\0{caps}\n").as_bytes());
        } else {
            pktline::write_text(out, format!("{id} {name}"));
        }
    }
    pktline::write_flush(out);
    Ok(())
}

/// Status lines for the client, per ref.
struct Report {
    unpack: Result<(), String>,
    refs: Vec<(String, Result<(), String>)>,
}

impl GitService {
    /// Handles a receive-pack request body (commands, then the pack, streamed from `body`);
    /// writes the report to `out`.
    pub fn receive_pack(
        &self,
        repo: RepoId,
        body: &mut dyn BufRead,
        actor: &Actor,
        options: &ReceiveOptions,
        out: &mut dyn Write,
    ) -> Result<PushOutcome> {
        let request = protocol::read_push_request(body, MAX_COMMANDS_BYTES)
            .map_err(|e| Error::Protocol(format!("invalid push request: {e}")))?;
        if request.commands.is_empty() {
            return Ok(PushOutcome::default());
        }
        let (report, outcome) = self.apply_push(repo, &request, body, actor, options)?;
        write_report(&request, &report, out)?;
        Ok(outcome)
    }

    fn apply_push(
        &self,
        repo: RepoId,
        request: &PushRequest,
        pack_stream: &mut dyn BufRead,
        actor: &Actor,
        options: &ReceiveOptions,
    ) -> Result<(Report, PushOutcome)> {
        // From the first lookup of a stored object until the refs moved: nothing it finds is
        // pruned meanwhile.
        let _pin = self.objects.pin(repo);
        let mut statuses: Vec<(String, Result<(), String>)> =
            request.commands.iter().map(|c| (c.name.clone(), Ok(()))).collect();
        for (command, status) in request.commands.iter().zip(statuses.iter_mut()) {
            if !is_valid_ref_name(&command.name) {
                status.1 = Err("funny refname".into());
            } else if command.name.starts_with(HIDDEN_REFS) {
                status.1 = Err("deny updating a hidden ref".into());
            } else if command.old.is_none() && command.new.is_none() {
                status.1 = Err("nothing to do: both ids are zero".into());
            }
        }

        // Read and index the pack. When every command deletes there is none, and nothing more is
        // read (as `git receive-pack` does): over a pipe the client now waits for the report.
        let needs_pack = request.commands.iter().any(|c| c.new.is_some());
        let mut received = None;
        if needs_pack {
            match self.receive_pack_file(repo, pack_stream, options)? {
                Ok(r) => received = Some(r),
                Err(message) => {
                    let report = Report {
                        unpack: Err(message.clone()),
                        refs: statuses.into_iter().map(|(n, _)| (n, Err("unpacker error".into()))).collect(),
                    };
                    return Ok((
                        report,
                        PushOutcome {
                            updated: Vec::new(),
                            rejected: request.commands.iter().map(|c| (c.name.clone(), message.clone())).collect(),
                        },
                    ));
                }
            }
        }
        let kinds: HashMap<ObjectId, ObjectKind> =
            received.iter().flat_map(|r| r.entries.iter().map(|e| (e.id, e.kind))).collect();

        // Every new tip must be complete.
        self.check_tips(repo, request, received.as_ref(), &kinds, &mut statuses)?;
        self.refuse_non_commit_branches(repo, request, &kinds, &mut statuses)?;
        let existing = self.refs.list(repo)?;
        refuse_name_conflicts(request, &existing, &mut statuses);
        let atomic = request.has_capability("atomic");
        if atomic && statuses.iter().any(|(_, s)| s.is_err()) {
            for (_, status) in statuses.iter_mut().filter(|(_, s)| s.is_ok()) {
                *status = Err("atomic push failed".into());
            }
        }
        if let Some(received) = received
            && statuses.iter().any(|(_, s)| s.is_ok())
        {
            self.store_pack(repo, received)?;
        }
        // The guard sees stored commits (to tell a fast-forward from a force push). A pack stored
        // for updates it then refuses is unreferenced, as after a lost compare-and-swap.
        if let Some(guard) = &options.guard {
            for (command, status) in request.commands.iter().zip(statuses.iter_mut()) {
                if status.1.is_err() {
                    continue;
                }
                let kind = match (command.old, command.new) {
                    (None, _) => UpdateKind::Create,
                    (_, None) => UpdateKind::Delete,
                    (Some(old), Some(new)) if self.contains(repo, new, old)? => UpdateKind::FastForward,
                    _ => UpdateKind::Force,
                };
                if let Some(why) = guard.check(&command.name, kind, command.new) {
                    status.1 = Err(why);
                }
            }
            if atomic && statuses.iter().any(|(_, s)| s.is_err()) {
                for (_, status) in statuses.iter_mut().filter(|(_, s)| s.is_ok()) {
                    *status = Err("atomic push failed".into());
                }
            }
        }
        crate::failpoint("receive:before-refs");

        let was_empty = existing.is_empty();
        let updates: Vec<(usize, RefUpdate)> = request
            .commands
            .iter()
            .enumerate()
            .filter(|(i, _)| statuses[*i].1.is_ok())
            .map(|(i, c): (usize, &PushCommand)| (i, RefUpdate { name: c.name.clone(), old: c.old, new: c.new }))
            .collect();
        let mut outcome = PushOutcome::default();
        if atomic && !updates.is_empty() {
            let batch: Vec<RefUpdate> = updates.iter().map(|(_, u)| u.clone()).collect();
            match self.refs.update(repo, &batch, actor)? {
                Ok(events) => outcome.updated = events,
                Err(conflict) => {
                    for (i, _) in &updates {
                        statuses[*i].1 = Err(if request.commands[*i].name == conflict.name {
                            "failed to update ref: it changed since it was read; fetch and try again".into()
                        } else {
                            "atomic push failed".into()
                        });
                    }
                }
            }
        } else if !updates.is_empty() {
            // Each ref on its own, all in one durable write.
            let batch: Vec<RefUpdate> = updates.iter().map(|(_, u)| u.clone()).collect();
            for ((i, _), result) in updates.iter().zip(self.refs.update_each(repo, &batch, actor)?) {
                match result {
                    Ok(event) => outcome.updated.push(event),
                    Err(_) => {
                        statuses[*i].1 =
                            Err("failed to update ref: it changed since it was read; fetch and try again".into())
                    }
                }
            }
        }
        crate::failpoint("receive:after-refs");
        if was_empty {
            self.choose_head(repo, &outcome)?;
        }
        outcome.rejected =
            statuses.iter().filter_map(|(n, s)| s.as_ref().err().map(|e| (n.clone(), e.clone()))).collect();
        Ok((Report { unpack: Ok(()), refs: statuses }, outcome))
    }

    /// Marks the commands whose new tip is not complete: something it reaches is neither in the
    /// pack nor stored. Every id the pack's objects name is checked at once; only when one is
    /// missing are the tips walked one by one, to tell which of them it affects.
    fn check_tips(
        &self,
        repo: RepoId,
        request: &PushRequest,
        received: Option<&Received>,
        kinds: &HashMap<ObjectId, ObjectKind>,
        statuses: &mut [(String, std::result::Result<(), String>)],
    ) -> Result<()> {
        let outside: Vec<ObjectId> = received
            .map(|r| r.links.iter().filter(|id| !kinds.contains_key(*id)).copied().collect())
            .unwrap_or_default();
        let mut complete = true;
        for chunk in outside.chunks(4096) {
            if self.objects.has_many(repo, chunk)?.iter().any(|present| !present) {
                complete = false;
                break;
            }
        }
        // Read by id only when a walk is needed.
        let pending = if complete { None } else { received.map(PendingPack::open) };
        for (command, status) in request.commands.iter().zip(statuses.iter_mut()) {
            let Some(new) = command.new else { continue };
            if status.1.is_err() {
                continue;
            }
            let missing = if kinds.contains_key(&new) && complete {
                None
            } else if complete {
                (!self.objects.has_many(repo, &[new])?[0]).then_some(new)
            } else {
                let read = |id: &ObjectId| match &pending {
                    Some(p) => p.read(self, repo, id),
                    None => Ok(None),
                };
                walk::check_connected(&*self.objects, repo, &read, new)?
            };
            if let Some(missing) = missing {
                // From a shallow clone, history past its shallow commits was never sent: the
                // server must already have it (C git refuses the same way, without
                // receive.shallowUpdate).
                status.1 = Err(if request.shallow.is_empty() {
                    format!("missing necessary objects ({missing})")
                } else {
                    "shallow update not allowed".to_owned()
                });
            }
        }
        Ok(())
    }

    /// Streams a pushed pack into a file under the store's incoming directory and indexes it.
    /// `Ok(Err(message))` is a pack the client got wrong (the report's unpack line).
    fn receive_pack_file(
        &self,
        repo: RepoId,
        input: &mut dyn BufRead,
        options: &ReceiveOptions,
    ) -> Result<std::result::Result<Received, String>> {
        let file = tempfile::Builder::new().prefix("push-").suffix(".pack").tempfile_in(self.objects.incoming_dir())?;
        let scan =
            match packfile::scan(input, BufWriter::with_capacity(256 << 10, file.as_file()), options.max_object_size) {
                Ok(scan) => scan,
                // A broken or oversized body, a malformed pack, or no room to spool it: the client's
                // report says which (as C git's "unpack failed" does).
                Err(e) => {
                    tracing::info!(error = %e, "receive-pack: the pack could not be read");
                    return Ok(Err(e.to_string()));
                }
            };
        crate::failpoint("receive:after-spool");
        let mut commits = Vec::new();
        let mut links = HashSet::new();
        let mut visit = |id: &ObjectId, kind: ObjectKind, data: &[u8]| -> std::result::Result<(), String> {
            let malformed = |e: parse::ParseError| format!("object {id} is malformed: {e}");
            match kind {
                ObjectKind::Commit => {
                    let c = parse::commit(data).map_err(malformed)?;
                    links.insert(c.tree);
                    links.extend(c.parents.iter().copied());
                    commits.push((*id, c));
                }
                ObjectKind::Tree => {
                    for entry in parse::tree(data).map_err(malformed)? {
                        if entry.kind().is_some() {
                            links.insert(entry.id);
                        }
                    }
                }
                ObjectKind::Tag => {
                    links.insert(parse::tag(data).map_err(malformed)?.target);
                }
                ObjectKind::Blob => {}
            }
            Ok(())
        };
        let store = &self.objects;
        let external = |id: &ObjectId| -> Option<(ObjectKind, Vec<u8>)> {
            store.get_many(repo, std::slice::from_ref(id)).ok()?.pop().flatten().map(|o| (o.kind, o.data))
        };
        let resolution =
            match packfile::resolve(file.as_file(), &scan, &external, options.delta_base_budget, &mut visit) {
                Ok(r) => r,
                Err(packfile::ResolveError::Read(gitstratum_git::pack::ReadError::Io(e))) => return Err(Error::Io(e)),
                Err(e) => return Ok(Err(e.to_string())),
            };
        Ok(Ok(Received {
            file,
            checksum: scan.checksum,
            len: scan.len,
            entries: resolution.entries,
            external: resolution.external,
            commits,
            links,
        }))
    }

    /// Completes a thin pack and hands it to the store (durable when this returns).
    /// Whether commit `tip` has `ancestor` in its history (itself included), walking the commit
    /// graph no further back than the ancestor's generation.
    fn contains(&self, repo: RepoId, tip: ObjectId, ancestor: ObjectId) -> Result<bool> {
        if tip == ancestor {
            return Ok(true);
        }
        let Some(target) = walk::load_commits(&*self.objects, repo, &[ancestor])?.pop().flatten() else {
            return Ok(false);
        };
        let mut seen = std::collections::HashSet::from([tip]);
        let mut stack = vec![tip];
        while let Some(id) = stack.pop() {
            let Some(commit) = walk::load_commits(&*self.objects, repo, &[id])?.pop().flatten() else { continue };
            // Generation 0: not in the commit graph (read from the object); walk on.
            if commit.generation != 0 && commit.generation <= target.generation {
                continue; // older than the ancestor: it cannot lead there
            }
            for parent in commit.parents {
                if parent == ancestor {
                    return Ok(true);
                }
                if seen.insert(parent) {
                    stack.push(parent);
                }
            }
        }
        Ok(false)
    }

    fn store_pack(&self, repo: RepoId, mut received: Received) -> Result<()> {
        let mut checksum = received.checksum;
        if !received.external.is_empty() {
            let mut bases = Vec::with_capacity(received.external.len());
            for (id, base) in received.external.iter().zip(self.objects.get_many(repo, &received.external)?) {
                let base = base.ok_or_else(|| Error::Protocol(format!("delta base {id} vanished during the push")))?;
                bases.push((base.kind, base.data));
            }
            let count = u32::try_from(received.entries.len())
                .map_err(|_| Error::Protocol("too many objects for one pack".into()))?;
            let completed = packfile::append_bases(received.file.as_file_mut(), received.len, count, &bases)?;
            checksum = completed.checksum;
            for ((id, (kind, data)), (offset, end, crc32)) in
                received.external.iter().zip(&bases).zip(completed.appended)
            {
                let size = data.len() as u64;
                received.entries.push(IndexedEntry { id: *id, kind: *kind, size, offset, end, crc32, base: None });
            }
        }
        crate::failpoint("receive:before-store");
        self.objects.put_pack(
            repo,
            IncomingPack {
                path: received.file.path(),
                checksum,
                entries: &received.entries,
                commits: &received.commits,
            },
        )?;
        Ok(())
    }

    /// A branch (`refs/heads/*`) points at a commit: a tag, tree or blob there is refused, as C
    /// git's ref store refuses it.
    fn refuse_non_commit_branches(
        &self,
        repo: RepoId,
        request: &PushRequest,
        pack: &HashMap<ObjectId, ObjectKind>,
        statuses: &mut [(String, std::result::Result<(), String>)],
    ) -> Result<()> {
        let tips: Vec<(usize, ObjectId)> = request
            .commands
            .iter()
            .enumerate()
            .filter(|(i, c)| c.name.starts_with("refs/heads/") && statuses[*i].1.is_ok())
            .filter_map(|(i, c)| c.new.map(|new| (i, new)))
            .collect();
        let stored: Vec<ObjectId> = tips.iter().map(|(_, id)| *id).filter(|id| !pack.contains_key(id)).collect();
        let mut stored_kinds = self.objects.info_many(repo, &stored)?.into_iter();
        for (i, id) in tips {
            let kind = match pack.get(&id) {
                Some(kind) => Some(*kind),
                None => stored_kinds.next().flatten().map(|info| info.kind),
            };
            if let Some(kind) = kind.filter(|k| *k != ObjectKind::Commit) {
                statuses[i].1 = Err(format!(
                    "failed to update ref: trying to write non-commit object {id} ({}) to branch '{}'",
                    kind.as_str(),
                    request.commands[i].name
                ));
            }
        }
        Ok(())
    }

    /// On the first push to an empty repository, `HEAD` names a branch that was pushed (as GitHub
    /// and Gitea pick the default branch then): the one it already names if that was pushed,
    /// else `main`, else `master`, else the first branch the push named. A mirror of a repository
    /// whose branch is `master` or `trunk` then clones with a checkout, not as an empty
    /// repository.
    fn choose_head(&self, repo: RepoId, outcome: &PushOutcome) -> Result<()> {
        let branches: Vec<&str> = outcome
            .updated
            .iter()
            .filter(|e| e.new.is_some())
            .map(|e| e.name.as_str())
            .filter(|n| n.starts_with("refs/heads/"))
            .collect();
        let current = self.refs.head(repo)?.unwrap_or_else(|| DEFAULT_HEAD.to_owned());
        let pick = [current.as_str(), DEFAULT_HEAD, "refs/heads/master"]
            .into_iter()
            .find(|b| branches.contains(b))
            .or_else(|| branches.first().copied());
        if let Some(branch) = pick {
            self.refs.set_head(repo, branch)?;
        }
        Ok(())
    }
}

/// A received pack not stored yet, read by id (for the connectivity walk when something is
/// missing).
struct PendingPack<'a> {
    file: &'a std::fs::File,
    at: HashMap<ObjectId, u64>,
}

impl<'a> PendingPack<'a> {
    fn open(received: &'a Received) -> PendingPack<'a> {
        PendingPack { file: received.file.as_file(), at: received.entries.iter().map(|e| (e.id, e.offset)).collect() }
    }

    /// The object `id` if the pack has it (deltas resolved in the pack, or against the store).
    fn read(&self, service: &GitService, repo: RepoId, id: &ObjectId) -> Result<Option<(ObjectKind, Vec<u8>)>> {
        self.read_nested(service, repo, id, 0)
    }

    fn read_nested(
        &self,
        service: &GitService,
        repo: RepoId,
        id: &ObjectId,
        depth: usize,
    ) -> Result<Option<(ObjectKind, Vec<u8>)>> {
        let Some(offset) = self.at.get(id) else { return Ok(None) };
        if depth > 64 {
            return Err(Error::Protocol(format!("object {id}: REF deltas nest too deep in the pushed pack")));
        }
        let base = |base: &ObjectId| -> std::result::Result<_, gitstratum_git::pack::ReadError> {
            let nested = self.read_nested(service, repo, base, depth + 1);
            if let Some(found) = nested.map_err(|e| std::io::Error::other(e.to_string()))? {
                return Ok(Some((found.0, std::sync::Arc::new(found.1))));
            }
            let stored = service.objects.get_many(repo, std::slice::from_ref(base)).map_err(std::io::Error::other)?;
            Ok(stored.into_iter().next().flatten().map(|o| (o.kind, std::sync::Arc::new(o.data))))
        };
        let (kind, data) = packfile::read_object(self.file, *offset, &base, &packfile::NoCache, 10_000)
            .map_err(|e| Error::Protocol(format!("reading the pushed pack: {e}")))?;
        Ok(Some((kind, std::sync::Arc::unwrap_or_clone(data))))
    }
}

/// Refuses ref names that clash with another ref as file and directory (`refs/heads/a` and
/// `refs/heads/a/b`): clients store refs as files and cannot have both. Checked in command order
/// against the refs there are plus those this push creates, minus those it deletes, as C git's
/// ref transaction does. (The ref store checks again inside its compare-and-swap.)
fn refuse_name_conflicts(
    request: &PushRequest,
    existing: &[(String, ObjectId)],
    statuses: &mut [(String, std::result::Result<(), String>)],
) {
    let mut names = RefNames::new(existing.iter().map(|(n, _)| n.as_str()));
    for (command, status) in request.commands.iter().zip(statuses.iter()) {
        if command.new.is_none() && status.1.is_ok() {
            names.remove(&command.name);
        }
    }
    for (command, status) in request.commands.iter().zip(statuses.iter_mut()) {
        if command.new.is_none() || status.1.is_err() {
            continue;
        }
        let name = &command.name;
        match names.clash(name) {
            Some(other) => {
                status.1 = Err(format!("failed to update ref: '{other}' exists; cannot create '{name}'"));
            }
            None => names.insert(name),
        }
    }
}

fn write_report(request: &PushRequest, report: &Report, out: &mut dyn Write) -> Result<()> {
    if !(request.has_capability("report-status") || request.has_capability("report-status-v2")) {
        return Ok(());
    }
    let mut status = Vec::new();
    match &report.unpack {
        Ok(()) => pktline::write_text(&mut status, "unpack ok"),
        Err(e) => pktline::write_text(&mut status, format!("unpack {}", e.replace('\n', " "))),
    }
    for (name, result) in &report.refs {
        match result {
            Ok(()) => pktline::write_text(&mut status, format!("ok {name}")),
            Err(reason) => pktline::write_text(&mut status, format!("ng {name} {reason}")),
        }
    }
    pktline::write_flush(&mut status);
    let mut framed = Vec::new();
    if request.has_capability("side-band-64k") {
        pktline::write_sideband(&mut framed, Band::Data, &status, pktline::MAX_PACKET_LEN);
        pktline::write_flush(&mut framed);
    } else {
        framed = status;
    }
    out.write_all(&framed)?;
    Ok(())
}
