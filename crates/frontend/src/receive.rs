//! receive-pack: what `git push` talks to.
//!
//! Order of work, which is what makes a push safe:
//! 1. parse the commands; refuse invalid ref names;
//! 2. read the pack, resolve its deltas (thin-pack bases from the store) and verify every id;
//! 3. check that each new tip is connected (everything it reaches is in the pack or stored);
//! 4. store the objects (one synced write);
//! 5. update the refs with compare-and-swap, appending their events in the same synced write;
//! 6. report. A push is acknowledged only after step 5 is durable; a crash before it leaves the
//!    refs as they were (the objects stored in step 4 are unreferenced and harmless).

use std::collections::HashMap;
use std::io::Write;

use gitstratum_git::pack::{self, EntryKind};
use gitstratum_git::parse::is_valid_ref_name;
use gitstratum_git::pktline::{self, Band};
use gitstratum_git::protocol::{self, AGENT, PushCommand, PushRequest};
use gitstratum_git::{ObjectId, ObjectKind};
use gitstratum_store::{Actor, NewObject, RefNames, RefUpdate, RepoId, StoredDelta};

use crate::walk::{self, PackObjects};
use crate::{DEFAULT_HEAD, Error, GitService, Result};

/// Capabilities receive-pack advertises.
const CAPABILITIES: &str =
    "report-status report-status-v2 delete-refs side-band-64k quiet atomic ofs-delta push-options object-format=sha1";

#[derive(Debug, Clone)]
pub struct ReceiveOptions {
    /// Largest object accepted in a push.
    pub max_object_size: u64,
}

impl Default for ReceiveOptions {
    fn default() -> Self {
        ReceiveOptions { max_object_size: 1 << 30 }
    }
}

/// What a push did, for callers that log, audit or trigger on it.
#[derive(Debug, Clone, Default)]
pub struct PushOutcome {
    pub updated: Vec<gitstratum_store::RefEvent>,
    pub rejected: Vec<(String, String)>,
}

pub(crate) fn advertise(service: &GitService, repo: RepoId, out: &mut Vec<u8>) -> Result<()> {
    let refs = service.refs.list(repo)?;
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
    /// Handles a receive-pack request body (commands, then the pack); writes the report to `out`.
    pub fn receive_pack(
        &self,
        repo: RepoId,
        body: &[u8],
        actor: &Actor,
        options: &ReceiveOptions,
        out: &mut dyn Write,
    ) -> Result<PushOutcome> {
        let request =
            protocol::parse_push_request(body).map_err(|e| Error::Protocol(format!("invalid push request: {e}")))?;
        if request.commands.is_empty() {
            return Ok(PushOutcome::default());
        }
        let (report, outcome) = self.apply_push(repo, &request, &body[request.pack_offset..], actor, options)?;
        write_report(&request, &report, out)?;
        Ok(outcome)
    }

    fn apply_push(
        &self,
        repo: RepoId,
        request: &PushRequest,
        pack_bytes: &[u8],
        actor: &Actor,
        options: &ReceiveOptions,
    ) -> Result<(Report, PushOutcome)> {
        let mut statuses: Vec<(String, Result<(), String>)> =
            request.commands.iter().map(|c| (c.name.clone(), Ok(()))).collect();
        for (command, status) in request.commands.iter().zip(statuses.iter_mut()) {
            if !is_valid_ref_name(&command.name) {
                status.1 = Err("funny refname".into());
            } else if command.old.is_none() && command.new.is_none() {
                status.1 = Err("nothing to do: both ids are zero".into());
            }
        }

        // Read and verify the pack (absent when every command deletes).
        let needs_pack = request.commands.iter().any(|c| c.new.is_some());
        let mut stored: Vec<NewObject> = Vec::new();
        if needs_pack || !pack_bytes.is_empty() {
            match self.read_pack(repo, pack_bytes, options) {
                Ok(list) => stored = list,
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

        // Every new tip must be complete.
        let objects: PackObjects<'_> = stored.iter().map(|o| (o.id, (o.kind, o.data.as_slice()))).collect();
        for (command, status) in request.commands.iter().zip(statuses.iter_mut()) {
            let Some(new) = command.new else { continue };
            if status.1.is_err() {
                continue;
            }
            if let Some(missing) = walk::check_connected(&*self.objects, repo, &objects, new)? {
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
        self.refuse_non_commit_branches(repo, request, &objects, &mut statuses)?;
        let existing = self.refs.list(repo)?;
        refuse_name_conflicts(request, &existing, &mut statuses);
        let atomic = request.has_capability("atomic");
        if atomic && statuses.iter().any(|(_, s)| s.is_err()) {
            for (_, status) in statuses.iter_mut().filter(|(_, s)| s.is_ok()) {
                *status = Err("atomic push failed".into());
            }
        }
        if !stored.is_empty() && statuses.iter().any(|(_, s)| s.is_ok()) {
            self.objects.put(repo, &stored)?;
        }

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
        } else {
            for (i, update) in updates {
                match self.refs.update(repo, std::slice::from_ref(&update), actor)? {
                    Ok(events) => outcome.updated.extend(events),
                    Err(_) => {
                        statuses[i].1 =
                            Err("failed to update ref: it changed since it was read; fetch and try again".into())
                    }
                }
            }
        }
        if was_empty {
            self.choose_head(repo, &outcome)?;
        }
        outcome.rejected =
            statuses.iter().filter_map(|(n, s)| s.as_ref().err().map(|e| (n.clone(), e.clone()))).collect();
        Ok((Report { unpack: Ok(()), refs: statuses }, outcome))
    }

    /// A branch (`refs/heads/*`) points at a commit: a tag, tree or blob there is refused, as C
    /// git's ref store refuses it.
    fn refuse_non_commit_branches(
        &self,
        repo: RepoId,
        request: &PushRequest,
        pack: &PackObjects<'_>,
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
                Some((kind, _)) => Some(*kind),
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

    /// On the first push to an empty repository, `HEAD` names `main` if it was pushed, or the
    /// only branch pushed.
    fn choose_head(&self, repo: RepoId, outcome: &PushOutcome) -> Result<()> {
        let branches: Vec<&str> = outcome
            .updated
            .iter()
            .filter(|e| e.new.is_some())
            .map(|e| e.name.as_str())
            .filter(|n| n.starts_with("refs/heads/"))
            .collect();
        if branches.contains(&DEFAULT_HEAD) {
            self.refs.set_head(repo, DEFAULT_HEAD)?;
        } else if let [only] = branches.as_slice() {
            self.refs.set_head(repo, only)?;
        }
        Ok(())
    }

    /// Reads a pushed pack: every entry resolved (thin bases from the store) and hashed.
    fn read_pack(&self, repo: RepoId, bytes: &[u8], options: &ReceiveOptions) -> Result<Vec<NewObject>, String> {
        let reader = pack::Reader::with_limit(bytes, options.max_object_size).map_err(|e| e.to_string())?;
        let entries = reader.collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())?;
        let store = &self.objects;
        let external = |id: &ObjectId| -> Option<(ObjectKind, Vec<u8>)> {
            store.get_many(repo, std::slice::from_ref(id)).ok()?.pop().flatten().map(|o| (o.kind, o.data))
        };
        let resolved = pack::resolve_all(&entries, &external).map_err(|e| e.to_string())?;
        let id_at: HashMap<u64, ObjectId> = resolved.iter().map(|r| (r.offset, r.id)).collect();
        let entries_at: HashMap<u64, &pack::Entry> = entries.iter().map(|e| (e.offset, e)).collect();
        Ok(resolved
            .into_iter()
            .map(|r| {
                let delta = entries_at.get(&r.offset).and_then(|e| match &e.kind {
                    EntryKind::Base(_) => None,
                    EntryKind::RefDelta { base } => Some(StoredDelta { base: *base, delta: e.data.clone() }),
                    EntryKind::OfsDelta { base_offset } => {
                        id_at.get(base_offset).map(|base| StoredDelta { base: *base, delta: e.data.clone() })
                    }
                });
                NewObject { id: r.id, kind: r.kind, data: r.data, delta }
            })
            .collect())
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
