//! upload-pack: what `git clone` and `git fetch` talk to, in protocol version 2 and in versions
//! 0 and 1: one stateless request at a time (HTTP), or a conversation over a pipe (SSH,
//! [`GitService::upload_pack_session`]).
//!
//! v2: `ls-refs` lists refs (with `HEAD`'s target, peeled tags, an unborn `HEAD`); `fetch`
//! negotiates (acknowledging the client's `have`s, `ready` once every want reaches a common
//! commit) and streams a pack over side-band 1, with progress on side-band 2.
//! v0/v1: the ref advertisement carries the capabilities; each request repeats the wants and
//! the common haves found so far (`multi_ack_detailed`), and the pack follows `done` (or `ready`
//! with `no-done`), over side-band when asked.
//!
//! The pack reuses the deltas objects were pushed with: when an object's stored delta base is
//! also being sent, the base is written first and the object follows as an offset delta; for a
//! thin pack, a base the client already has is named by id.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};

use gitstratum_git::pack::Writer;
use gitstratum_git::pktline::{self, Band, Packet};
use gitstratum_git::protocol::{self, AGENT};
use gitstratum_git::{ObjectId, ObjectKind, parse};
use gitstratum_store::{Object, PackReuse, RawEntry, RawKind, RepoId, ReuseEntry};

use crate::pack_cache::{self, KeyBuilder, Lookup, Meta};
use crate::{Error, GitService, Result, walk};

/// Longest chain of reused deltas written base-first; deeper chains are cut with a whole object.
const MAX_REUSE_DEPTH: usize = 50;
/// Objects loaded per storage round trip while writing a pack.
const BATCH: usize = 256;
/// Commits a negotiation may walk to decide whether it is ready.
const READY_BUDGET: usize = 20_000;
/// Largest request (a v2 command, a v0 want list) of a conversation over a pipe, as over HTTP.
const MAX_SESSION_REQUEST: usize = 32 << 20;
/// Most haves one v0 negotiation over a pipe may send (a stateless client's are bounded by its
/// request size).
const MAX_SESSION_HAVES: usize = 1 << 20;

/// Capabilities of the v0/v1 ref advertisement for upload-pack.
const V0_CAPABILITIES: &str = "multi_ack thin-pack side-band side-band-64k ofs-delta shallow deepen-since deepen-not \
     deepen-relative no-progress include-tag multi_ack_detailed allow-tip-sha1-in-want \
     allow-reachable-sha1-in-want no-done filter object-format=sha1";

#[derive(Debug, Clone, Default)]
pub struct UploadOptions {}

/// What an upload-pack request sent, for metrics and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PackStats {
    /// Objects in the pack.
    pub objects: usize,
    /// Of those, objects sent as stored deltas (no delta computed).
    pub reused_deltas: usize,
    /// The request was shallow (depth, date or ref cut).
    pub shallow: bool,
    /// The request was a partial clone or fetch (`filter`).
    pub filtered: bool,
    /// The client had nothing (a clone rather than a fetch).
    pub clone: bool,
}

pub(crate) fn advertise_v2(out: &mut Vec<u8>) {
    pktline::write_text(out, "version 2");
    pktline::write_text(out, format!("agent={AGENT}"));
    pktline::write_text(out, "ls-refs=unborn");
    pktline::write_text(out, "fetch=shallow wait-for-done filter");
    pktline::write_text(out, "server-option");
    pktline::write_text(out, "object-format=sha1");
    pktline::write_flush(out);
}

/// Writes side-band 1 packets of up to `max_packet` bytes, buffering to fill them.
struct Sideband<'a> {
    out: &'a mut dyn Write,
    buf: Vec<u8>,
    max_packet: usize,
}

impl Sideband<'_> {
    fn payload(&self) -> usize {
        self.max_packet - 5
    }
}

impl Write for Sideband<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        let payload = self.payload();
        if self.buf.len() >= payload {
            let full = self.buf.len() / payload * payload;
            let mut framed = Vec::with_capacity(full + full / payload * 5 + 5);
            pktline::write_sideband(&mut framed, Band::Data, &self.buf[..full], self.max_packet);
            self.out.write_all(&framed)?;
            self.buf.drain(..full);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let mut framed = Vec::with_capacity(self.buf.len() + 5);
            pktline::write_sideband(&mut framed, Band::Data, &self.buf, self.max_packet);
            self.out.write_all(&framed)?;
            self.buf.clear();
        }
        self.out.flush()
    }
}

/// Copies a cached pack to the client, in side-band packets (then the flush that ends the
/// response) or raw; the stats come from the pack's header (reused deltas are not known for a
/// copy).
fn copy_cached(
    source: &mut dyn CachedPack,
    kind: (bool, bool, bool),
    sideband: SidebandMode,
    out: &mut dyn Write,
) -> Result<PackStats> {
    let (shallow, filtered, clone) = kind;
    let objects = match sideband {
        Some(max_packet) => {
            let mut sink = Sideband { out: &mut *out, buf: Vec::new(), max_packet };
            let mut counter = HeaderReader { header: Vec::with_capacity(12), inner: &mut sink };
            source.copy_pack(&mut counter)?;
            let objects = counter.objects();
            sink.flush()?;
            let mut tail = Vec::new();
            pktline::write_flush(&mut tail);
            out.write_all(&tail)?;
            objects
        }
        None => {
            let mut counter = HeaderReader { header: Vec::with_capacity(12), inner: &mut *out };
            source.copy_pack(&mut counter)?;
            counter.objects()
        }
    };
    Ok(PackStats { objects, reused_deltas: 0, shallow, filtered, clone })
}

/// A cached pack, complete or growing.
trait CachedPack {
    fn copy_pack(&mut self, out: &mut dyn Write) -> io::Result<u64>;
}

impl CachedPack for std::fs::File {
    fn copy_pack(&mut self, out: &mut dyn Write) -> io::Result<u64> {
        io::copy(self, out)
    }
}

impl CachedPack for pack_cache::Follower {
    fn copy_pack(&mut self, out: &mut dyn Write) -> io::Result<u64> {
        self.copy_to(out)
    }
}

/// Passes bytes on, keeping the pack header's first 12 bytes (its object count).
struct HeaderReader<'a> {
    header: Vec<u8>,
    inner: &'a mut dyn Write,
}

impl HeaderReader<'_> {
    fn objects(&self) -> usize {
        self.header.get(8..12).map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
}

impl Write for HeaderReader<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let want = 12usize.saturating_sub(self.header.len()).min(buf.len());
        self.header.extend_from_slice(&buf[..want]);
        self.inner.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// How the pack travels: in side-band packets of at most this size (progress on band 2), or
/// raw (`None`: v0 clients that did not ask for side-band; no progress).
type SidebandMode = Option<usize>;

fn progress(out: &mut dyn Write, sideband: SidebandMode, enabled: bool, message: &str) -> io::Result<()> {
    if let (Some(max_packet), true) = (sideband, enabled) {
        let mut framed = Vec::new();
        pktline::write_sideband(&mut framed, Band::Progress, message.as_bytes(), max_packet);
        out.write_all(&framed)?;
    }
    Ok(())
}

/// The `shallow`/`unshallow` lines of a fetch (v2's shallow-info section, v0's shallow list).
fn write_shallow_lines(out: &mut Vec<u8>, shallow: &[ObjectId], unshallow: &[ObjectId]) {
    for id in shallow {
        pktline::write_text(out, format!("shallow {id}"));
    }
    for id in unshallow {
        pktline::write_text(out, format!("unshallow {id}"));
    }
}

fn write_err<T: Default>(out: &mut dyn Write, message: &str) -> Result<T> {
    let mut buf = Vec::new();
    pktline::write_text(&mut buf, format!("ERR {message}"));
    out.write_all(&buf)?;
    Ok(T::default())
}

struct FetchArgs {
    shape: walk::FetchShape,
    /// The client sent shallow or deepen lines: the response carries a shallow-info section.
    shallow_request: bool,
    wants: Vec<ObjectId>,
    want_refs: Vec<String>,
    haves: Vec<ObjectId>,
    done: bool,
    /// `wait-for-done`: never answer `ready`; the pack comes only after `done` (what
    /// `git fetch --negotiate-only` relies on).
    wait_for_done: bool,
    thin_pack: bool,
    no_progress: bool,
    include_tag: bool,
    ofs_delta: bool,
    /// `deepen-not` arguments, as the client named them (resolved to commits before walking).
    deepen_not: Vec<String>,
}

fn parse_fetch_args(args: &[Vec<u8>]) -> std::result::Result<FetchArgs, String> {
    let mut f = FetchArgs {
        shape: walk::FetchShape::default(),
        shallow_request: false,
        wants: vec![],
        want_refs: vec![],
        haves: vec![],
        done: false,
        wait_for_done: false,
        thin_pack: false,
        no_progress: false,
        include_tag: false,
        ofs_delta: false,
        deepen_not: vec![],
    };
    let id = |hex: &[u8]| {
        ObjectId::from_hex(hex).map_err(|_| format!("invalid object id {:?}", String::from_utf8_lossy(hex)))
    };
    for arg in args {
        match arg.as_slice() {
            a if a.starts_with(b"want ") => f.wants.push(id(&a[5..])?),
            a if a.starts_with(b"want-ref ") => f.want_refs.push(String::from_utf8_lossy(&a[9..]).into_owned()),
            a if a.starts_with(b"have ") => f.haves.push(id(&a[5..])?),
            b"done" => f.done = true,
            b"thin-pack" => f.thin_pack = true,
            b"no-progress" => f.no_progress = true,
            b"include-tag" => f.include_tag = true,
            b"ofs-delta" => f.ofs_delta = true,
            b"wait-for-done" => f.wait_for_done = true,
            b"sideband-all" => {}
            a if a.starts_with(b"shallow ") => {
                f.shallow_request = true;
                f.shape.client_shallow.insert(id(&a[8..])?);
            }
            a if a.starts_with(b"deepen ") => {
                f.shallow_request = true;
                let n: u32 = std::str::from_utf8(&a[7..])
                    .ok()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n > 0)
                    .ok_or("invalid deepen argument")?;
                f.shape.depth = Some(n);
            }
            b"deepen-relative" => f.shape.deepen_relative = true,
            a if a.starts_with(b"deepen-since ") => {
                f.shallow_request = true;
                let since: i64 = std::str::from_utf8(&a[13..])
                    .ok()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n > 0)
                    .ok_or("invalid deepen-since argument")?;
                f.shape.deepen_since = Some(since);
            }
            a if a.starts_with(b"deepen-not ") => {
                f.shallow_request = true;
                f.deepen_not.push(String::from_utf8_lossy(&a[11..]).into_owned());
            }
            a if a.starts_with(b"filter ") => {
                f.shape.filter = Some(walk::Filter::parse(&String::from_utf8_lossy(&a[7..]))?);
            }
            other => return Err(format!("unknown fetch argument {:?}", String::from_utf8_lossy(other))),
        }
    }
    if f.shape.depth.is_some() && (f.shape.deepen_since.is_some() || !f.deepen_not.is_empty()) {
        return Err("deepen and deepen-since (or deepen-not) cannot be used together".into());
    }
    Ok(f)
}

/// Where `git rev-parse` would look for a short ref name, in order.
const REF_RULES: [&str; 6] =
    ["{}", "refs/{}", "refs/tags/{}", "refs/heads/{}", "refs/remotes/{}", "refs/remotes/{}/HEAD"];

/// Names the v0 ref advertisement and `ls-refs` lists, with peeled tags.
struct RefListing {
    head: Option<(String, ObjectId)>,
    refs: Vec<(String, ObjectId, Option<ObjectId>)>,
}

impl GitService {
    /// Follows annotated tags to the object they finally name (`None` for ids that are not tags).
    fn peel(&self, repo: RepoId, ids: &[ObjectId]) -> Result<Vec<Option<ObjectId>>> {
        let infos = self.objects.info_many(repo, ids)?;
        let mut out = vec![None; ids.len()];
        // Tags still to read, level by level, in one batch each: a tag names its target's kind,
        // so only a tag of a tag costs another read (not every tag's commit).
        let mut pending: Vec<(usize, ObjectId)> = (0..ids.len())
            .filter(|i| infos[*i].is_some_and(|o| o.kind == ObjectKind::Tag))
            .map(|i| (i, ids[i]))
            .collect();
        for _ in 0..32 {
            if pending.is_empty() {
                break;
            }
            let tag_ids: Vec<ObjectId> = pending.iter().map(|(_, id)| *id).collect();
            let mut next = Vec::new();
            for ((i, _), object) in pending.into_iter().zip(self.objects.get_many(repo, &tag_ids)?) {
                let Some(Object { kind: ObjectKind::Tag, data }) = object else { continue };
                let tag = parse::tag(&data).map_err(|e| Error::Protocol(e.to_string()))?;
                out[i] = Some(tag.target);
                if tag.target_kind == ObjectKind::Tag {
                    next.push((i, tag.target));
                }
            }
            pending = next;
        }
        Ok(out)
    }

    fn listing(&self, repo: RepoId, wanted: impl Fn(&str) -> bool, peel: bool) -> Result<RefListing> {
        let refs: Vec<(String, ObjectId)> = self.refs.list(repo)?.into_iter().filter(|(n, _)| wanted(n)).collect();
        let mut peeled = vec![None; refs.len()];
        if peel {
            // A branch always names a commit (receive-pack refuses anything else there), so only
            // the other refs are read: listing refs needs no objects for branches, which in
            // cluster mode may still be in object storage.
            let others: Vec<usize> = (0..refs.len()).filter(|i| !refs[*i].0.starts_with("refs/heads/")).collect();
            let ids: Vec<ObjectId> = others.iter().map(|i| refs[*i].1).collect();
            for (i, p) in others.into_iter().zip(self.peel(repo, &ids)?) {
                peeled[i] = p;
            }
        }
        let head_name = self.head(repo)?;
        let head = self.refs.get(repo, &head_name)?.map(|id| (head_name, id));
        Ok(RefListing { head, refs: refs.into_iter().zip(peeled).map(|((n, id), p)| (n, id, p)).collect() })
    }

    /// The v0/v1 ref advertisement of upload-pack: `HEAD` and every ref with the capabilities on
    /// the first line, peeled tags as `<ref>^{}`.
    pub(crate) fn advertise_v0(&self, repo: RepoId, out: &mut Vec<u8>) -> Result<()> {
        let listing = self.listing(repo, |_| true, true)?;
        let symref = match &listing.head {
            Some((target, _)) => format!(" symref=HEAD:{target}"),
            None => String::new(),
        };
        let caps = format!("{V0_CAPABILITIES}{symref} agent={AGENT}");
        let mut lines: Vec<(ObjectId, String)> = Vec::new();
        if let Some((_, id)) = &listing.head {
            lines.push((*id, "HEAD".into()));
        }
        for (name, id, peeled) in listing.refs {
            lines.push((id, name.clone()));
            if let Some(p) = peeled {
                lines.push((p, format!("{name}^{{}}")));
            }
        }
        if lines.is_empty() {
            lines.push((ObjectId::null(gitstratum_git::object::HashKind::Sha1), "capabilities^{}".into()));
        }
        for (i, (id, name)) in lines.iter().enumerate() {
            if i == 0 {
                pktline::write_data(out, format!("{id} {name}\0{caps}\n").as_bytes());
            } else {
                pktline::write_text(out, format!("{id} {name}"));
            }
        }
        pktline::write_flush(out);
        Ok(())
    }

    /// Handles one protocol v2 request (`ls-refs` or `fetch`) and writes the response to `out`.
    /// Returns what was sent when the response carried a pack.
    pub fn upload_pack_v2(
        &self,
        repo: RepoId,
        body: &[u8],
        _options: &UploadOptions,
        out: &mut dyn Write,
    ) -> Result<Option<PackStats>> {
        let request = match protocol::parse_v2_request(body) {
            Ok(r) => r,
            Err(e) => return write_err(out, &format!("upload-pack: {e}")),
        };
        match request.command.as_str() {
            "ls-refs" => self.ls_refs(repo, &request.args, out).map(|()| None),
            "fetch" => match parse_fetch_args(&request.args) {
                Ok(args) => self.fetch(repo, args, out),
                Err(message) => write_err(out, &format!("upload-pack: {message}")),
            },
            other => write_err(out, &format!("upload-pack: unknown command '{other}'")),
        }
    }

    fn ls_refs(&self, repo: RepoId, args: &[Vec<u8>], out: &mut dyn Write) -> Result<()> {
        let mut symrefs = false;
        let mut peel = false;
        let mut unborn = false;
        let mut prefixes: Vec<String> = Vec::new();
        for arg in args {
            match arg.as_slice() {
                b"symrefs" => symrefs = true,
                b"peel" => peel = true,
                b"unborn" => unborn = true,
                a if a.starts_with(b"ref-prefix ") => prefixes.push(String::from_utf8_lossy(&a[11..]).into_owned()),
                _ => {}
            }
        }
        let wanted = |name: &str| prefixes.is_empty() || prefixes.iter().any(|p| name.starts_with(p.as_str()));
        let listing = self.listing(repo, wanted, peel)?;
        let mut buf = Vec::new();
        if wanted("HEAD") {
            let head = self.head(repo)?;
            let symref = if symrefs { format!(" symref-target:{head}") } else { String::new() };
            match &listing.head {
                Some((_, id)) => pktline::write_text(&mut buf, format!("{id} HEAD{symref}")),
                None if unborn => pktline::write_text(&mut buf, format!("unborn HEAD{symref}")),
                None => {}
            }
        }
        for (name, id, peeled) in &listing.refs {
            match peeled {
                Some(p) => pktline::write_text(&mut buf, format!("{id} {name} peeled:{p}")),
                None => pktline::write_text(&mut buf, format!("{id} {name}")),
            }
        }
        pktline::write_flush(&mut buf);
        out.write_all(&buf)?;
        Ok(())
    }

    /// Resolves `want-ref`s and `deepen-not` names and checks that every want is stored. Returns
    /// the wanted refs, or the message for an `ERR` line.
    fn prepare(&self, repo: RepoId, args: &mut FetchArgs) -> Result<Result<Vec<(ObjectId, String)>, String>> {
        let mut wanted_refs = Vec::new();
        for name in &args.want_refs {
            match self.refs.get(repo, name)? {
                Some(id) => {
                    wanted_refs.push((id, name.clone()));
                    args.wants.push(id);
                }
                None => return Ok(Err(format!("unknown ref {name}"))),
            }
        }
        // Any object of the repository may be wanted (partial clones fetch missing objects by id).
        let present = self.objects.has_many(repo, &args.wants)?;
        if let Some((missing, _)) = args.wants.iter().zip(&present).find(|(_, p)| !**p) {
            return Ok(Err(format!("not our ref {missing}")));
        }
        for name in &args.deepen_not {
            let mut found = Vec::new();
            for rule in REF_RULES {
                let full = rule.replace("{}", name);
                if let Some(id) = self.refs.get(repo, &full)? {
                    found.push(id);
                }
            }
            let [id] = found[..] else {
                return Ok(Err(format!("ambiguous deepen-not: {name} (it must name exactly one ref)")));
            };
            let id = self.peel(repo, &[id])?.pop().flatten().unwrap_or(id);
            args.shape.deepen_not.push(id);
        }
        Ok(Ok(wanted_refs))
    }

    /// The client's haves this repository has, in the client's order.
    fn common(&self, repo: RepoId, haves: &[ObjectId]) -> Result<Vec<ObjectId>> {
        let known = self.objects.has_many(repo, haves)?;
        Ok(haves.iter().zip(&known).filter(|(_, k)| **k).map(|(id, _)| *id).collect())
    }

    /// What to send; a request the history cannot satisfy gives the message for an `ERR` line.
    fn fetch_set(
        &self,
        repo: RepoId,
        args: &FetchArgs,
        common: &[ObjectId],
        with_trees: bool,
    ) -> Result<Result<walk::FetchSet, String>> {
        // A clone of whole history: the store's reachability bitmaps answer without a walk.
        let shape = &args.shape;
        let plain = !shape.deepens() && shape.client_shallow.is_empty();
        let with_blobs = match shape.filter {
            None => Some(true),
            Some(walk::Filter::NoBlobs) => Some(false),
            _ => None,
        };
        if let (true, true, true, Some(with_blobs)) = (common.is_empty(), plain, with_trees, with_blobs)
            && let Some(found) = self.objects.reachable_reuse(repo, &args.wants, with_blobs)?
        {
            let gitstratum_store::Reachable { mut objects, reuse } = found;
            if !with_blobs {
                // Blobs named by the client are sent whatever the filter.
                let named: Vec<ObjectId> = args.wants.clone();
                for (id, info) in named.iter().zip(self.objects.info_many(repo, &named)?) {
                    if info.is_some_and(|i| i.kind == ObjectKind::Blob) {
                        objects.push((*id, ObjectKind::Blob));
                    }
                }
            }
            metrics::counter!("gitstratum_git_object_sets_from_bitmaps_total").increment(1);
            return Ok(Ok(walk::FetchSet {
                objects,
                client_has: HashSet::new(),
                shallow: Vec::new(),
                unshallow: Vec::new(),
                reuse,
            }));
        }
        match walk::objects_to_send(&*self.objects, repo, &args.wants, common, &args.shape, with_trees) {
            Ok(set) => Ok(Ok(set)),
            Err(Error::Protocol(message)) => Ok(Err(message)),
            Err(e) => Err(e),
        }
    }

    fn fetch(&self, repo: RepoId, mut args: FetchArgs, out: &mut dyn Write) -> Result<Option<PackStats>> {
        let wanted_refs = match self.prepare(repo, &mut args)? {
            Ok(w) => w,
            Err(message) => return write_err(out, &format!("upload-pack: {message}")),
        };
        let common = self.common(repo, &args.haves)?;
        let mut head = Vec::new();
        if !args.done {
            pktline::write_text(&mut head, "acknowledgments");
            if common.is_empty() {
                pktline::write_text(&mut head, "NAK");
            }
            for id in &common {
                pktline::write_text(&mut head, format!("ACK {id}"));
            }
            if args.wait_for_done
                || !walk::wants_reach_common(&*self.objects, repo, &args.wants, &common, READY_BUDGET)?
            {
                // Not ready: the client sends more haves, or "done".
                pktline::write_flush(&mut head);
                out.write_all(&head)?;
                return Ok(None);
            }
            pktline::write_text(&mut head, "ready");
            pktline::write_delimiter(&mut head);
        }
        let shallow_request = args.shallow_request;
        let write_head = |mut head: Vec<u8>, meta: &Meta, out: &mut dyn Write| -> io::Result<()> {
            if shallow_request {
                pktline::write_text(&mut head, "shallow-info");
                write_shallow_lines(&mut head, &meta.shallow, &meta.unshallow);
                pktline::write_delimiter(&mut head);
            }
            if !wanted_refs.is_empty() {
                pktline::write_text(&mut head, "wanted-refs");
                for (id, name) in &wanted_refs {
                    pktline::write_text(&mut head, format!("{id} {name}"));
                }
                pktline::write_delimiter(&mut head);
            }
            pktline::write_text(&mut head, "packfile");
            out.write_all(&head)
        };
        let sideband = Some(pktline::MAX_PACKET_LEN);
        self.send_cached(repo, args, common, sideband, &|meta, out| write_head(head.clone(), meta, out), out)
    }

    /// Sends the pack of a fetch through the pack cache (when there is one): a hit is copied, an
    /// identical request in progress is followed, else this request leads: the pack is generated
    /// into the cache by a thread of its own and copied from there as it grows. `write_head` writes
    /// what precedes the pack, once its shallow lines are known. A request the history cannot
    /// satisfy gets an `ERR` line.
    fn send_cached(
        &self,
        repo: RepoId,
        args: FetchArgs,
        common: Vec<ObjectId>,
        sideband: SidebandMode,
        write_head: &dyn Fn(&Meta, &mut dyn Write) -> io::Result<()>,
        out: &mut dyn Write,
    ) -> Result<Option<PackStats>> {
        // What the response is, for its stats: (shallow, filtered, clone).
        let kind = (args.shape.deepens(), args.shape.filter.is_some(), common.is_empty());
        // A cache that cannot be used (a full disk, say) costs this request its speed, not its answer.
        let lookup = match &self.pack_cache {
            Some(cache) => match cache.lookup(&self.cache_key(repo, &args, &common)?) {
                Ok(lookup) => Some(lookup),
                Err(e) => {
                    tracing::warn!(error = %e, "pack cache: lookup failed; sending without the cache");
                    None
                }
            },
            None => None,
        };
        let leader = match lookup {
            Some(Lookup::Hit(meta, mut file)) => {
                write_head(&meta, out)?;
                return Ok(Some(copy_cached(&mut file, kind, sideband, out)?));
            }
            Some(Lookup::Follow(mut follower)) => match follower.meta()? {
                Some(meta) => {
                    write_head(&meta, out)?;
                    return Ok(Some(copy_cached(&mut follower, kind, sideband, out)?));
                }
                // Its leader failed before it had anything: generate without the cache.
                None => None,
            },
            Some(Lookup::Lead(leader)) => Some(leader),
            None => None,
        };
        let set = match self.fetch_set(repo, &args, &common, true)? {
            Ok(set) => set,
            Err(message) => return write_err(out, &format!("upload-pack: {message}")),
        };
        let meta = Meta { shallow: set.shallow.clone(), unshallow: set.unshallow.clone() };
        let leader = leader.and_then(|mut leader| {
            // Opening the entry: its header written, and readable by a follower.
            let mut follower = leader.set_meta(&meta).map(|()| leader.follower()).ok()?;
            match follower.meta() {
                Ok(_) => Some((leader, follower)),
                Err(e) => {
                    tracing::warn!(error = %e, "pack cache: cannot write an entry; sending without the cache");
                    None
                }
            }
        });
        if let Some((mut leader, mut follower)) = leader {
            // The pack is written into the cache by a thread of its own, whatever becomes of this
            // client; this request, like any identical one meanwhile, reads it as it grows.
            let service = self.clone();
            let show_progress = !args.no_progress;
            std::thread::Builder::new().name("pack-cache".into()).spawn(move || {
                // Followers wake when the entry grows: let it grow in large steps, not an entry
                // header at a time.
                let written = {
                    let mut buffered = io::BufWriter::with_capacity(256 << 10, &mut leader);
                    service
                        .send_pack(repo, set, &args, &common, None, &mut buffered)
                        .and_then(|stats| buffered.flush().map(|()| stats).map_err(Error::from))
                };
                match written {
                    Ok(_) => {
                        if let Err(e) = leader.finish() {
                            tracing::warn!(error = %e, "pack cache: could not keep the entry");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "pack cache: generating the pack failed"),
                }
            })?;
            write_head(&meta, out)?;
            progress(out, sideband, show_progress, "Enumerating objects, done.\n")?;
            return Ok(Some(copy_cached(&mut follower, kind, sideband, out)?));
        }
        write_head(&meta, out)?;
        let stats = self.send_pack(repo, set, &args, &common, sideband, out)?;
        if sideband.is_some() {
            let mut tail = Vec::new();
            pktline::write_flush(&mut tail);
            out.write_all(&tail)?;
        }
        Ok(Some(stats))
    }

    /// The pack cache key of a fetch: everything that decides the pack's bytes.
    fn cache_key(&self, repo: RepoId, args: &FetchArgs, common: &[ObjectId]) -> Result<String> {
        let mut key = KeyBuilder::default();
        key.field("format", "v1")
            .field("repo", repo.0.to_be_bytes())
            .ids("wants", args.wants.iter().copied())
            .ids("common", common.iter().copied())
            .ids("client-shallow", args.shape.client_shallow.iter().copied())
            .field("depth", format!("{:?} {}", args.shape.depth, args.shape.deepen_relative))
            .field("deepen-since", format!("{:?}", args.shape.deepen_since))
            .ids("deepen-not", args.shape.deepen_not.iter().copied())
            .field("filter", format!("{:?}", args.shape.filter))
            .field("caps", format!("{} {} {}", args.thin_pack, args.ofs_delta, args.include_tag));
        if args.include_tag {
            // Which tags are sent depends on the tag refs of the moment.
            let mut tags = Vec::new();
            for (name, id) in self.refs.list(repo)?.into_iter().filter(|(n, _)| n.starts_with("refs/tags/")) {
                tags.extend_from_slice(name.as_bytes());
                tags.push(0);
                tags.extend_from_slice(id.as_bytes());
            }
            key.field("tags", tags);
        }
        Ok(key.finish())
    }

    /// Serves an upload-pack conversation held over a pipe (SSH), once the caller has sent the
    /// advertisement ([`GitService::advertisement`]): in protocol v2, requests one after another
    /// until the client hangs up (or sends a lone flush); in v0/v1, one stateful negotiation — the
    /// want list, the shallow list when deepening, acknowledgments after each flush-terminated
    /// batch of haves — then the pack. `on_pack` hears of each pack sent.
    pub fn upload_pack_session(
        &self,
        repo: RepoId,
        protocol: crate::Protocol,
        input: &mut dyn Read,
        options: &UploadOptions,
        out: &mut dyn Write,
        on_pack: &mut dyn FnMut(PackStats),
    ) -> Result<()> {
        if protocol != crate::Protocol::V2 {
            let stats = self.upload_pack_v0_session(repo, input, out)?;
            out.flush()?;
            if let Some(stats) = stats {
                on_pack(stats);
            }
            return Ok(());
        }
        let mut packet = Vec::new();
        loop {
            // One request: its packets through the flush that ends it (delimiters inside).
            let mut request = Vec::new();
            loop {
                match pktline::read_packet(input, &mut packet)? {
                    None if request.is_empty() => return Ok(()),
                    None => return Err(Error::Protocol("upload-pack: the client hung up inside a request".into())),
                    Some(Packet::Flush) => break,
                    Some(Packet::Delimiter) => pktline::write_delimiter(&mut request),
                    Some(Packet::Data(data)) => pktline::write_data(&mut request, data),
                    Some(Packet::ResponseEnd) => return write_err(out, "upload-pack: unexpected response-end packet"),
                }
                if request.len() > MAX_SESSION_REQUEST {
                    return write_err(out, &format!("upload-pack: a request over {} MiB", MAX_SESSION_REQUEST >> 20));
                }
            }
            if request.is_empty() {
                return Ok(()); // the client's goodbye
            }
            pktline::write_flush(&mut request);
            let stats = self.upload_pack_v2(repo, &request, options, out)?;
            out.flush()?;
            if let Some(stats) = stats {
                on_pack(stats);
            }
        }
    }

    /// One v0/v1 fetch over a pipe: unlike a stateless request, each batch of haves is answered
    /// as it comes (only its new common commits acknowledged), and the shallow list is sent once,
    /// right after the want list — as `git upload-pack` does.
    fn upload_pack_v0_session(
        &self,
        repo: RepoId,
        input: &mut dyn Read,
        out: &mut dyn Write,
    ) -> Result<Option<PackStats>> {
        let mut packet = Vec::new();
        let mut first = Vec::new();
        loop {
            match pktline::read_packet(input, &mut packet)? {
                // `git ls-remote` hangs up after the advertisement.
                None if first.is_empty() => return Ok(None),
                None => return Err(Error::Protocol("upload-pack: the client hung up inside its want list".into())),
                Some(Packet::Flush) => break,
                Some(Packet::Data(data)) => pktline::write_data(&mut first, data),
                Some(_) => return write_err(out, "upload-pack: unexpected packet in the want list"),
            }
            if first.len() > MAX_SESSION_REQUEST {
                return write_err(out, &format!("upload-pack: a want list over {} MiB", MAX_SESSION_REQUEST >> 20));
            }
        }
        if first.is_empty() {
            return Ok(None); // nothing wanted: the client is up to date
        }
        pktline::write_flush(&mut first);
        let request = match protocol::parse_v0_upload_request(&first) {
            Ok(r) => r,
            Err(e) => return write_err(out, &format!("upload-pack: {e}")),
        };
        let V0Fetch { mut args, detailed, multi_ack, no_done, sideband } =
            match self.v0_fetch(repo, &request, &request.lines)? {
                Ok(Some(fetch)) => fetch,
                Ok(None) => return Ok(None),
                Err(message) => return write_err(out, &format!("upload-pack: {message}")),
            };
        if args.shape.deepens() {
            let set = match self.fetch_set(repo, &args, &[], false)? {
                Ok(set) => set,
                Err(message) => return write_err(out, &format!("upload-pack: {message}")),
            };
            let mut head = Vec::new();
            write_shallow_lines(&mut head, &set.shallow, &set.unshallow);
            pktline::write_flush(&mut head);
            out.write_all(&head)?;
            out.flush()?;
        }
        let mut common: Vec<ObjectId> = Vec::new();
        let mut known: HashSet<ObjectId> = HashSet::new();
        let mut haves = 0usize;
        let mut batch = Vec::new();
        // What precedes the pack: the last acknowledgments.
        let head = loop {
            batch.clear();
            let mut done = false;
            loop {
                match pktline::read_packet(input, &mut packet)? {
                    // The client found it needs nothing more (or gave up).
                    None => return Ok(None),
                    Some(Packet::Flush) => break,
                    Some(p) => match p.as_text() {
                        Some(b"done") => {
                            done = true;
                            break;
                        }
                        Some(line) if line.starts_with(b"have ") => match ObjectId::from_hex(&line[5..]) {
                            Ok(id) => batch.push(id),
                            Err(_) => return write_err(out, "upload-pack: invalid object id in a have line"),
                        },
                        _ => return write_err(out, "upload-pack: expected a have line or done"),
                    },
                }
            }
            haves += batch.len();
            if haves > MAX_SESSION_HAVES {
                return write_err(out, &format!("upload-pack: more than {MAX_SESSION_HAVES} haves"));
            }
            let first_common = common.is_empty();
            let new: Vec<ObjectId> = self.common(repo, &batch)?.into_iter().filter(|id| known.insert(*id)).collect();
            common.extend(&new);
            let mut acks = Vec::new();
            if done {
                match common.last() {
                    Some(id) if multi_ack => pktline::write_text(&mut acks, format!("ACK {id}")),
                    Some(_) => {}
                    None => pktline::write_text(&mut acks, "NAK"),
                }
                break acks;
            }
            for (i, id) in new.iter().enumerate() {
                if detailed {
                    pktline::write_text(&mut acks, format!("ACK {id} common"));
                } else if multi_ack {
                    pktline::write_text(&mut acks, format!("ACK {id} continue"));
                } else if first_common && i == 0 {
                    pktline::write_text(&mut acks, format!("ACK {id}"));
                }
            }
            let ready = detailed
                && !common.is_empty()
                && walk::wants_reach_common(&*self.objects, repo, &args.wants, &common, READY_BUDGET)?;
            if let (true, Some(id)) = (ready, common.last()) {
                pktline::write_text(&mut acks, format!("ACK {id} ready"));
            }
            if common.is_empty() || multi_ack {
                pktline::write_text(&mut acks, "NAK");
            }
            if let (true, true, Some(id)) = (no_done, ready, common.last()) {
                pktline::write_text(&mut acks, format!("ACK {id}"));
                break acks;
            }
            out.write_all(&acks)?;
            out.flush()?;
        };
        args.done = true;
        self.send_cached(repo, args, common, sideband, &|_meta, out| out.write_all(&head), out)
    }

    /// Handles one protocol v0/v1 upload-pack request of a stateless (HTTP) client: the shallow
    /// list when deepening, acknowledgments, and the pack once the client is done (or, with
    /// `no-done`, once the negotiation is ready).
    pub fn upload_pack_v0(
        &self,
        repo: RepoId,
        body: &[u8],
        _options: &UploadOptions,
        out: &mut dyn Write,
    ) -> Result<Option<PackStats>> {
        let request = match protocol::parse_v0_upload_request(body) {
            Ok(r) => r,
            Err(e) => return write_err(out, &format!("upload-pack: {e}")),
        };
        let mut lines = request.lines.clone();
        lines.extend(request.haves.iter().cloned());
        if request.done {
            lines.push(b"done".to_vec());
        }
        let V0Fetch { args, detailed, multi_ack, no_done, sideband } = match self.v0_fetch(repo, &request, &lines)? {
            Ok(Some(fetch)) => fetch,
            Ok(None) => return Ok(None),
            Err(message) => return write_err(out, &format!("upload-pack: {message}")),
        };
        let common = self.common(repo, &args.haves)?;
        let ready = detailed
            && !args.done
            && walk::wants_reach_common(&*self.objects, repo, &args.wants, &common, READY_BUDGET)?;
        let send = args.done || (no_done && ready);
        let deepening = args.shape.deepens();
        if send && request.negotiates {
            // The pack goes through the cache; the shallow lines (from the set, or the cached
            // entry) come first, then the acknowledgments.
            let acks = acknowledgments(&common, detailed, multi_ack, args.done, ready, send);
            let write_head = |meta: &Meta, out: &mut dyn Write| -> io::Result<()> {
                let mut head = Vec::new();
                if deepening {
                    write_shallow_lines(&mut head, &meta.shallow, &meta.unshallow);
                    pktline::write_flush(&mut head);
                }
                head.extend_from_slice(&acks);
                out.write_all(&head)
            };
            return self.send_cached(repo, args, common, sideband, &write_head, out);
        }
        let set = if send || deepening {
            match self.fetch_set(repo, &args, &common, send)? {
                Ok(set) => Some(set),
                Err(message) => return write_err(out, &format!("upload-pack: {message}")),
            }
        } else {
            None
        };
        let mut head = Vec::new();
        if let (true, Some(set)) = (deepening, &set) {
            write_shallow_lines(&mut head, &set.shallow, &set.unshallow);
            pktline::write_flush(&mut head);
        }
        if !request.negotiates {
            // The request ended with the want list: it only asked for the shallow list (git's
            // upload-pack negotiates only when something follows).
            out.write_all(&head)?;
            return Ok(None);
        }
        head.extend_from_slice(&acknowledgments(&common, detailed, multi_ack, args.done, ready, send));
        out.write_all(&head)?;
        let Some(set) = set.filter(|_| send) else { return Ok(None) };
        let stats = self.send_pack(repo, set, &args, &common, sideband, out)?;
        if sideband.is_some() {
            let mut tail = Vec::new();
            pktline::write_flush(&mut tail);
            out.write_all(&tail)?;
        }
        Ok(Some(stats))
    }

    /// Writes the pack of `set` (with `include-tag` tags), in side-band packets or raw.
    fn send_pack(
        &self,
        repo: RepoId,
        set: walk::FetchSet,
        args: &FetchArgs,
        common: &[ObjectId],
        sideband: SidebandMode,
        out: &mut dyn Write,
    ) -> Result<PackStats> {
        let walk::FetchSet { mut objects, client_has, reuse, .. } = set;
        let show = !args.no_progress;
        let reuse_entries = reuse.as_ref().map_or(&[][..], |r| &r.entries[..]);
        if args.include_tag {
            self.add_tags(repo, &mut objects, reuse_entries, &client_has)?;
        }
        let enumerated = objects.len() + reuse_entries.len();
        progress(out, sideband, show, &format!("Enumerating objects: {enumerated}, done.\n"))?;
        let (reused, total) = match sideband {
            Some(max_packet) => {
                let mut sink = Sideband { out: &mut *out, buf: Vec::new(), max_packet };
                let stats = self.write_pack(repo, &objects, reuse.as_ref(), &client_has, args, &mut sink)?;
                sink.flush()?;
                stats
            }
            None => self.write_pack(repo, &objects, reuse.as_ref(), &client_has, args, &mut *out)?,
        };
        progress(out, sideband, show, &format!("Total {total} (delta {reused}), reused {reused} (delta {reused})\n"))?;
        Ok(PackStats {
            objects: total,
            reused_deltas: reused,
            shallow: args.shape.deepens(),
            filtered: args.shape.filter.is_some(),
            clone: common.is_empty(),
        })
    }

    /// Adds annotated tags that point at objects being sent (`include-tag`).
    fn add_tags(
        &self,
        repo: RepoId,
        objects: &mut Vec<(ObjectId, ObjectKind)>,
        reused: &[ReuseEntry],
        client_has: &HashSet<ObjectId>,
    ) -> Result<()> {
        let sending: HashSet<ObjectId> = objects.iter().map(|(id, _)| *id).chain(reused.iter().map(|e| e.id)).collect();
        let tags: Vec<ObjectId> = self
            .refs
            .list(repo)?
            .into_iter()
            .filter(|(n, _)| n.starts_with("refs/tags/"))
            .map(|(_, id)| id)
            .filter(|id| !sending.contains(id) && !client_has.contains(id))
            .collect();
        let peeled = self.peel(repo, &tags)?;
        for (tag, target) in tags.into_iter().zip(peeled) {
            if target.is_some_and(|t| sending.contains(&t)) {
                objects.push((tag, ObjectKind::Tag));
            }
        }
        Ok(())
    }

    /// Writes the pack: `reuse`'s entries first, copied as stored, then `objects`; returns
    /// (objects written as reused deltas, objects written).
    fn write_pack(
        &self,
        repo: RepoId,
        objects: &[(ObjectId, ObjectKind)],
        reuse: Option<&PackReuse>,
        client_has: &HashSet<ObjectId>,
        args: &FetchArgs,
        sink: &mut dyn Write,
    ) -> Result<(usize, usize)> {
        let reuse_entries = reuse.map_or(&[][..], |r| &r.entries[..]);
        let total = objects.len() + reuse_entries.len();
        let count = u32::try_from(total).map_err(|_| Error::Protocol("too many objects for one pack".into()))?;
        let mut writer = Writer::new(sink, count)?;
        let in_pack: HashSet<ObjectId> =
            objects.iter().map(|(id, _)| *id).chain(reuse_entries.iter().map(|e| e.id)).collect();
        let mut written: HashMap<ObjectId, u64> = HashMap::with_capacity(total);
        let mut reused = 0;
        // Entries that could not be copied (a delta whose base is not sent) go out below.
        let mut rest = Vec::new();
        if let Some(reuse) = reuse {
            reused += copy_entries(&mut writer, reuse, &in_pack, args.ofs_delta, &mut written, &mut rest)?;
            metrics::counter!("gitstratum_git_pack_entries_copied_total").increment(written.len() as u64);
        }
        let objects: Vec<(ObjectId, ObjectKind)> = objects.iter().copied().chain(rest).collect();
        let objects = &objects[..];
        let mut ctx = PackCtx {
            service: self,
            repo,
            in_pack: &in_pack,
            client_has,
            args,
            written: &mut written,
            reused: &mut reused,
        };
        for chunk in objects.chunks(BATCH) {
            let ids: Vec<ObjectId> =
                chunk.iter().map(|(id, _)| *id).filter(|id| !ctx.written.contains_key(id)).collect();
            if ids.is_empty() {
                continue;
            }
            // Entries go out as stored (compressed as they are); only deltas whose base the
            // client will not have are loaded whole, in one batch.
            let raws = self.objects.raw_many(repo, &ids)?;
            let whole: Vec<ObjectId> = ids
                .iter()
                .zip(&raws)
                .filter(|(id, raw)| match raw.as_ref().map(|r| &r.kind) {
                    Some(RawKind::Delta { base }) => !ctx.reusable(**id, base),
                    _ => false,
                })
                .map(|(id, _)| *id)
                .collect();
            let mut objects = Vec::with_capacity(whole.len());
            for (id, object) in whole.iter().zip(self.objects.get_many(repo, &whole)?) {
                objects
                    .push((*id, object.ok_or_else(|| Error::Protocol(format!("object {id} vanished while packing")))?));
            }
            let mut loaded = deflate_all(objects)?;
            for (id, raw) in ids.iter().zip(raws) {
                let raw = raw.ok_or_else(|| Error::Protocol(format!("object {id} vanished while packing")))?;
                ctx.write_one(&mut writer, *id, raw, loaded.remove(id), 0)?;
            }
        }
        writer.finish()?;
        Ok((reused, total))
    }
}

/// The most bytes of a pack read at once when copying its entries.
const RUN_BYTES: u64 = 8 << 20;

/// Copies `reuse`'s entries into the pack as stored, reading runs of adjacent entries at once,
/// each checked against its CRC-32 (a corrupt byte fails the response, never goes out). An
/// offset delta gets its base's new offset; a delta whose base is not sent (or not yet written)
/// is left in `rest`, to go out the usual way. Returns how many deltas were copied.
fn copy_entries(
    writer: &mut Writer<&mut dyn Write>,
    reuse: &PackReuse,
    in_pack: &HashSet<ObjectId>,
    ofs_delta: bool,
    written: &mut HashMap<ObjectId, u64>,
    rest: &mut Vec<(ObjectId, ObjectKind)>,
) -> Result<usize> {
    use gitstratum_git::packfile::{Header, ReadAt, parse_header};
    let entries = &reuse.entries;
    // Where each entry went in this pack; `None`: not copied.
    let mut placed: Vec<Option<u64>> = Vec::with_capacity(entries.len());
    let mut deltas = 0;
    let mut buf = Vec::new();
    let mut i = 0;
    while i < entries.len() {
        let start = entries[i].offset;
        let mut j = i + 1;
        while j < entries.len() && entries[j].offset == entries[j - 1].end && entries[j].end - start <= RUN_BYTES {
            j += 1;
        }
        let len = usize::try_from(entries[j - 1].end - start).map_err(|_| Error::Protocol("entry too large".into()))?;
        buf.resize(len, 0);
        let mut filled = 0;
        while filled < len {
            match reuse.file.read_at(&mut buf[filled..], start + filled as u64)? {
                0 => {
                    return Err(gitstratum_store::Error::Corrupt(format!(
                        "pack ends before offset {}",
                        start + len as u64
                    ))
                    .into());
                }
                n => filled += n,
            }
        }
        for (k, e) in entries.iter().enumerate().take(j).skip(i) {
            let raw = &buf[(e.offset - start) as usize..(e.end - start) as usize];
            if gitstratum_git::packfile::entry_crc32(raw) != e.crc32 {
                return Err(gitstratum_store::Error::Corrupt(format!(
                    "the pack entry of {} at offset {} does not match its CRC-32",
                    e.id, e.offset
                ))
                .into());
            }
            let header =
                parse_header(raw, e.offset).map_err(|err| gitstratum_store::Error::Corrupt(err.to_string()))?;
            let data = &raw[header.header_len as usize..];
            let offset = match header.header {
                Header::Whole(_) => Some(writer.write_raw(raw)?),
                Header::OfsDelta { base_offset } => {
                    match entries[..k]
                        .binary_search_by_key(&base_offset, |b| b.offset)
                        .ok()
                        .and_then(|b| placed[b].map(|at| (b, at)))
                    {
                        Some((b, at)) => {
                            deltas += 1;
                            Some(if ofs_delta {
                                writer.write_raw_ofs_delta(at, header.size, data)?
                            } else {
                                writer.write_raw_ref_delta(&entries[b].id, header.size, data)?
                            })
                        }
                        None => None,
                    }
                }
                Header::RefDelta { base } if in_pack.contains(&base) && base != e.id => {
                    deltas += 1;
                    Some(writer.write_raw(raw)?)
                }
                Header::RefDelta { .. } => None,
            };
            placed.push(offset);
            match offset {
                Some(at) => {
                    written.insert(e.id, at);
                }
                None => rest.push((e.id, e.kind)),
            }
        }
        i = j;
    }
    Ok(deltas)
}

/// An object going out whole, compressed.
struct Deflated {
    kind: ObjectKind,
    size: u64,
    data: Vec<u8>,
}

/// Compresses the objects a pack sends whole (deltas whose base the client will not get), on
/// every core: for a depth=1 clone most of them are, and compressing is most of its work.
fn deflate_all(objects: Vec<(ObjectId, Object)>) -> Result<HashMap<ObjectId, Deflated>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4);
    let one = |(id, object): (ObjectId, Object)| -> io::Result<(ObjectId, Deflated)> {
        let data = gitstratum_git::pack::deflate(&object.data)?;
        Ok((id, Deflated { kind: object.kind, size: object.data.len() as u64, data }))
    };
    if threads < 2 || objects.len() < 8 {
        return Ok(objects.into_iter().map(one).collect::<io::Result<_>>()?);
    }
    // Round-robin by size, so each thread gets a like share of the bytes.
    let mut objects = objects;
    objects.sort_by_key(|(_, o)| std::cmp::Reverse(o.data.len()));
    let mut shares: Vec<Vec<(ObjectId, Object)>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, item) in objects.into_iter().enumerate() {
        shares[i % threads].push(item);
    }
    let results: Vec<io::Result<Vec<(ObjectId, Deflated)>>> = std::thread::scope(|scope| {
        let handles: Vec<_> =
            shares.into_iter().map(|share| scope.spawn(move || share.into_iter().map(one).collect())).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(io::Error::other("a compressing thread panicked"))))
            .collect()
    });
    let mut out = HashMap::new();
    for result in results {
        out.extend(result?);
    }
    Ok(out)
}

/// A v0/v1 fetch: its arguments and the capabilities that shape the conversation.
struct V0Fetch {
    args: FetchArgs,
    detailed: bool,
    multi_ack: bool,
    no_done: bool,
    sideband: SidebandMode,
}

impl GitService {
    /// Reads a v0/v1 request's `lines` (its want list, and the haves and `done` when they came
    /// with it) with the capabilities of its first want, and checks its wants
    /// (`prepare`). `Ok(None)`: it wants nothing; `Err`: the message for an `ERR`
    /// line.
    fn v0_fetch(
        &self,
        repo: RepoId,
        request: &protocol::V0UploadRequest,
        lines: &[Vec<u8>],
    ) -> Result<std::result::Result<Option<V0Fetch>, String>> {
        let mut args = match parse_fetch_args(lines) {
            Ok(args) if args.want_refs.is_empty() => args,
            Ok(_) => return Ok(Err("want-ref needs protocol version 2".into())),
            Err(message) => return Ok(Err(message)),
        };
        if args.wants.is_empty() {
            return Ok(Ok(None));
        }
        let cap = |name: &str| request.has_capability(name);
        args.thin_pack = cap("thin-pack");
        args.ofs_delta = cap("ofs-delta");
        args.no_progress = cap("no-progress");
        args.include_tag = cap("include-tag");
        args.shape.deepen_relative = cap("deepen-relative");
        let detailed = cap("multi_ack_detailed");
        let sideband = if cap("side-band-64k") {
            Some(pktline::MAX_PACKET_LEN)
        } else if cap("side-band") {
            Some(1000)
        } else {
            None
        };
        if let Err(message) = self.prepare(repo, &mut args)? {
            return Ok(Err(message));
        }
        let (multi_ack, no_done) = (detailed || cap("multi_ack"), cap("no-done"));
        Ok(Ok(Some(V0Fetch { args, detailed, multi_ack, no_done, sideband })))
    }
}

/// The acknowledgment lines of a v0/v1 negotiation round, as C git's upload-pack writes them for
/// `multi_ack_detailed`, `multi_ack` and neither.
fn acknowledgments(
    common: &[ObjectId],
    detailed: bool,
    multi_ack: bool,
    done: bool,
    ready: bool,
    send: bool,
) -> Vec<u8> {
    let mut head = Vec::new();
    for (i, id) in common.iter().enumerate() {
        if detailed {
            pktline::write_text(&mut head, format!("ACK {id} common"));
        } else if multi_ack {
            pktline::write_text(&mut head, format!("ACK {id} continue"));
        } else if i == 0 {
            pktline::write_text(&mut head, format!("ACK {id}"));
        }
    }
    let last = common.last();
    if done {
        match last {
            Some(id) if multi_ack => pktline::write_text(&mut head, format!("ACK {id}")),
            Some(_) => {}
            None => pktline::write_text(&mut head, "NAK"),
        }
    } else {
        if let (true, Some(id)) = (ready, last) {
            pktline::write_text(&mut head, format!("ACK {id} ready"));
        }
        if common.is_empty() || multi_ack {
            pktline::write_text(&mut head, "NAK");
        }
        if let (true, Some(id)) = (send, last) {
            pktline::write_text(&mut head, format!("ACK {id}"));
        }
    }
    head
}

struct PackCtx<'a> {
    service: &'a GitService,
    repo: RepoId,
    in_pack: &'a HashSet<ObjectId>,
    client_has: &'a HashSet<ObjectId>,
    args: &'a FetchArgs,
    written: &'a mut HashMap<ObjectId, u64>,
    reused: &'a mut usize,
}

impl PackCtx<'_> {
    /// Whether `id`, stored as a delta against `base`, can go out as that delta: its base is in
    /// the pack, or (thin pack) the client has it.
    fn reusable(&self, id: ObjectId, base: &ObjectId) -> bool {
        (self.in_pack.contains(base) && *base != id) || (self.args.thin_pack && self.client_has.contains(base))
    }

    /// Writes one object as stored (a delta's base first, if need be), or whole when its delta
    /// cannot go; `object` is its whole form when already loaded.
    fn write_one(
        &mut self,
        writer: &mut Writer<&mut dyn Write>,
        id: ObjectId,
        raw: RawEntry,
        deflated: Option<Deflated>,
        depth: usize,
    ) -> Result<()> {
        if self.written.contains_key(&id) {
            return Ok(());
        }
        match raw.kind {
            RawKind::Whole(kind) => {
                let offset = writer.write_raw_object(kind, raw.size, &raw.compressed)?;
                self.written.insert(id, offset);
                return Ok(());
            }
            RawKind::Delta { base } => {
                if self.in_pack.contains(&base) && base != id && depth < MAX_REUSE_DEPTH {
                    if !self.written.contains_key(&base) {
                        // Write the base first so this object can follow as a delta against it.
                        let base_raw = self
                            .service
                            .objects
                            .raw_many(self.repo, &[base])?
                            .pop()
                            .flatten()
                            .ok_or_else(|| Error::Protocol(format!("object {base} vanished while packing")))?;
                        self.write_one(writer, base, base_raw, None, depth + 1)?;
                    }
                    if let Some(&base_offset) = self.written.get(&base) {
                        let offset = if self.args.ofs_delta {
                            writer.write_raw_ofs_delta(base_offset, raw.size, &raw.compressed)?
                        } else {
                            writer.write_raw_ref_delta(&base, raw.size, &raw.compressed)?
                        };
                        self.written.insert(id, offset);
                        *self.reused += 1;
                        return Ok(());
                    }
                } else if self.args.thin_pack && self.client_has.contains(&base) {
                    let offset = writer.write_raw_ref_delta(&base, raw.size, &raw.compressed)?;
                    self.written.insert(id, offset);
                    *self.reused += 1;
                    return Ok(());
                }
            }
        }
        let offset = match deflated {
            Some(d) => writer.write_raw_object(d.kind, d.size, &d.data)?,
            None => {
                let object = self
                    .service
                    .objects
                    .get_many(self.repo, &[id])?
                    .pop()
                    .flatten()
                    .ok_or_else(|| Error::Protocol(format!("object {id} vanished while packing")))?;
                writer.write_object(object.kind, &object.data)?
            }
        };
        self.written.insert(id, offset);
        Ok(())
    }
}

#[cfg(test)]
mod session_tests {
    use std::sync::Arc;

    use gitstratum_git::pktline;
    use gitstratum_store::RepoId;
    use gitstratum_store::mem::MemStore;

    use crate::{GitService, Protocol, UploadOptions};

    fn session(protocol: Protocol, input: &[u8]) -> (crate::Result<()>, String) {
        let store = Arc::new(MemStore::new());
        let git = GitService::new(store.clone(), store);
        let mut out = Vec::new();
        let mut input = input;
        let result =
            git.upload_pack_session(RepoId(1), protocol, &mut input, &UploadOptions::default(), &mut out, &mut |_| {});
        (result, String::from_utf8_lossy(&out).into_owned())
    }

    fn lines(lines: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for line in lines {
            match *line {
                "0000" => pktline::write_flush(&mut out),
                "0001" => pktline::write_delimiter(&mut out),
                "0002" => pktline::write_response_end(&mut out),
                text => pktline::write_text(&mut out, text),
            }
        }
        out
    }

    /// A conversation that ends where one may (between messages) is over; malformed input gets an
    /// `ERR` line or an error naming it, never a panic and never a hang.
    #[test]
    fn sessions_end_cleanly_and_refuse_bad_input() {
        for protocol in [Protocol::V0, Protocol::V2] {
            assert!(session(protocol, b"").0.is_ok(), "{protocol:?}: hung up at once");
            assert!(session(protocol, b"0000").0.is_ok(), "{protocol:?}: nothing wanted");
            let (result, _) = session(protocol, b"0032want ");
            assert!(result.is_err(), "{protocol:?}: ends inside a packet");
            let (result, _) = session(protocol, b"zzzz");
            assert!(result.is_err(), "{protocol:?}: a malformed length");
        }
        let (result, out) = session(Protocol::V2, &lines(&["command=frobnicate", "0000"]));
        assert!(result.is_ok() && out.contains("ERR upload-pack: unknown command 'frobnicate'"), "{out}");
        let (result, out) = session(Protocol::V2, &lines(&["command=ls-refs", "0002"]));
        assert!(result.is_ok() && out.contains("ERR upload-pack: unexpected response-end"), "{out}");
        let missing = "want 1111111111111111111111111111111111111111 multi_ack_detailed side-band-64k";
        let (_, out) = session(Protocol::V0, &lines(&[missing, "0000", "done"]));
        assert!(out.contains("ERR upload-pack: not our ref 1111111111111111111111111111111111111111"), "{out}");
        let (_, out) = session(Protocol::V0, &lines(&["0001"]));
        assert!(out.contains("ERR upload-pack: unexpected packet in the want list"), "{out}");
        let (_, out) = session(Protocol::V0, &lines(&["want nonsense", "0000"]));
        assert!(out.contains("ERR upload-pack: invalid object id"), "{out}");
    }
}
