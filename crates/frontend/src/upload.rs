//! upload-pack, protocol version 2: what `git clone` and `git fetch` talk to.
//!
//! `ls-refs` lists refs (with `HEAD`'s target, peeled tags, an unborn `HEAD`); `fetch` negotiates
//! (acknowledging the client's `have`s) and streams a pack over side-band 1, with progress on
//! side-band 2. The pack reuses the deltas objects were pushed with: when an object's stored
//! delta base is also being sent, the base is written first and the object follows as an offset
//! delta; for a thin pack, a base the client already has is named by id.

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};

use gitstratum_git::pack::Writer;
use gitstratum_git::pktline::{self, Band};
use gitstratum_git::protocol::{self, AGENT};
use gitstratum_git::{ObjectId, ObjectKind, parse};
use gitstratum_store::{Object, RepoId, StoredDelta};

use crate::{Error, GitService, Result, walk};

/// Longest chain of reused deltas written base-first; deeper chains are cut with a whole object.
const MAX_REUSE_DEPTH: usize = 50;
/// Objects loaded per storage round trip while writing a pack.
const BATCH: usize = 256;

#[derive(Debug, Clone, Default)]
pub struct UploadOptions {}

pub(crate) fn advertise_v2(out: &mut Vec<u8>) {
    pktline::write_text(out, "version 2");
    pktline::write_text(out, format!("agent={AGENT}"));
    pktline::write_text(out, "ls-refs=unborn");
    pktline::write_text(out, "fetch=shallow filter");
    pktline::write_text(out, "server-option");
    pktline::write_text(out, "object-format=sha1");
    pktline::write_flush(out);
}

/// Writes side-band 1 packets, buffering so each carries up to 64 KiB.
struct Sideband<'a> {
    out: &'a mut dyn Write,
    buf: Vec<u8>,
}

const SIDEBAND_PAYLOAD: usize = pktline::MAX_PACKET_LEN - 5;

impl Write for Sideband<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= SIDEBAND_PAYLOAD {
            let full = self.buf.len() / SIDEBAND_PAYLOAD * SIDEBAND_PAYLOAD;
            let mut framed = Vec::with_capacity(full + full / SIDEBAND_PAYLOAD * 5 + 5);
            pktline::write_sideband(&mut framed, Band::Data, &self.buf[..full], pktline::MAX_PACKET_LEN);
            self.out.write_all(&framed)?;
            self.buf.drain(..full);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let mut framed = Vec::with_capacity(self.buf.len() + 5);
            pktline::write_sideband(&mut framed, Band::Data, &self.buf, pktline::MAX_PACKET_LEN);
            self.out.write_all(&framed)?;
            self.buf.clear();
        }
        self.out.flush()
    }
}

fn progress(out: &mut dyn Write, enabled: bool, message: &str) -> io::Result<()> {
    if enabled {
        let mut framed = Vec::new();
        pktline::write_sideband(&mut framed, Band::Progress, message.as_bytes(), pktline::MAX_PACKET_LEN);
        out.write_all(&framed)?;
    }
    Ok(())
}

fn write_err(out: &mut dyn Write, message: &str) -> Result<()> {
    let mut buf = Vec::new();
    pktline::write_text(&mut buf, format!("ERR {message}"));
    out.write_all(&buf)?;
    Ok(())
}

struct FetchArgs {
    shape: walk::FetchShape,
    /// The client sent shallow or deepen lines: the response carries a shallow-info section.
    shallow_request: bool,
    wants: Vec<ObjectId>,
    want_refs: Vec<String>,
    haves: Vec<ObjectId>,
    done: bool,
    thin_pack: bool,
    no_progress: bool,
    include_tag: bool,
    ofs_delta: bool,
}

fn parse_fetch_args(args: &[Vec<u8>]) -> std::result::Result<FetchArgs, String> {
    let mut f = FetchArgs {
        shape: walk::FetchShape::default(),
        shallow_request: false,
        wants: vec![],
        want_refs: vec![],
        haves: vec![],
        done: false,
        thin_pack: false,
        no_progress: false,
        include_tag: false,
        ofs_delta: false,
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
            b"sideband-all" | b"wait-for-done" => {}
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
            b"deepen-relative" => {
                return Err("--deepen is not supported by this server yet; use --depth or --unshallow".into());
            }
            a if a.starts_with(b"deepen-since ") || a.starts_with(b"deepen-not ") => {
                return Err(
                    "--shallow-since and --shallow-exclude are not supported by this server yet; use --depth".into()
                );
            }
            a if a.starts_with(b"filter ") => {
                f.shape.filter = Some(walk::Filter::parse(&String::from_utf8_lossy(&a[7..]))?);
            }
            other => return Err(format!("unknown fetch argument {:?}", String::from_utf8_lossy(other))),
        }
    }
    Ok(f)
}

impl GitService {
    /// Handles one protocol v2 request (`ls-refs` or `fetch`) and writes the response to `out`.
    pub fn upload_pack_v2(
        &self,
        repo: RepoId,
        body: &[u8],
        _options: &UploadOptions,
        out: &mut dyn Write,
    ) -> Result<()> {
        let request = match protocol::parse_v2_request(body) {
            Ok(r) => r,
            Err(e) => return write_err(out, &format!("upload-pack: {e}")),
        };
        match request.command.as_str() {
            "ls-refs" => self.ls_refs(repo, &request.args, out),
            "fetch" => match parse_fetch_args(&request.args) {
                Ok(args) => self.fetch(repo, args, out),
                Err(message) => write_err(out, &format!("upload-pack: {message}")),
            },
            other => write_err(out, &format!("upload-pack: unknown command '{other}'")),
        }
    }

    /// Follows annotated tags to the object they finally name.
    fn peel(&self, repo: RepoId, ids: &[ObjectId]) -> Result<Vec<Option<ObjectId>>> {
        let objects = self.objects.get_many(repo, ids)?;
        let mut out = Vec::with_capacity(ids.len());
        for object in objects {
            let mut peeled = None;
            let mut current = object;
            for _ in 0..32 {
                match current {
                    Some(Object { kind: ObjectKind::Tag, data }) => {
                        let target = parse::tag(&data).map_err(|e| Error::Protocol(e.to_string()))?.target;
                        peeled = Some(target);
                        current = self.objects.get_many(repo, &[target])?.pop().flatten();
                    }
                    _ => break,
                }
            }
            out.push(peeled);
        }
        Ok(out)
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
        let refs: Vec<(String, ObjectId)> = self.refs.list(repo)?.into_iter().filter(|(n, _)| wanted(n)).collect();
        let peeled = if peel {
            let tag_ids: Vec<ObjectId> = refs.iter().map(|(_, id)| *id).collect();
            self.peel(repo, &tag_ids)?
        } else {
            vec![None; refs.len()]
        };
        let mut buf = Vec::new();
        if wanted("HEAD") {
            let head = self.head(repo)?;
            let target = self.refs.get(repo, &head)?;
            let symref = if symrefs { format!(" symref-target:{head}") } else { String::new() };
            match target {
                Some(id) => pktline::write_text(&mut buf, format!("{id} HEAD{symref}")),
                None if unborn => pktline::write_text(&mut buf, format!("unborn HEAD{symref}")),
                None => {}
            }
        }
        for ((name, id), peeled) in refs.iter().zip(peeled) {
            match peeled {
                Some(p) => pktline::write_text(&mut buf, format!("{id} {name} peeled:{p}")),
                None => pktline::write_text(&mut buf, format!("{id} {name}")),
            }
        }
        pktline::write_flush(&mut buf);
        out.write_all(&buf)?;
        Ok(())
    }

    fn fetch(&self, repo: RepoId, mut args: FetchArgs, out: &mut dyn Write) -> Result<()> {
        let mut wanted_refs = Vec::new();
        for name in &args.want_refs {
            match self.refs.get(repo, name)? {
                Some(id) => {
                    wanted_refs.push((id, name.clone()));
                    args.wants.push(id);
                }
                None => return write_err(out, &format!("upload-pack: unknown ref {name}")),
            }
        }
        // Any object of the repository may be wanted (partial clones fetch missing objects by id).
        let present = self.objects.has_many(repo, &args.wants)?;
        if let Some((missing, _)) = args.wants.iter().zip(&present).find(|(_, p)| !**p) {
            return write_err(out, &format!("upload-pack: not our ref {missing}"));
        }
        let have_known = self.objects.has_many(repo, &args.haves)?;
        let common: Vec<ObjectId> =
            args.haves.iter().zip(&have_known).filter(|(_, k)| **k).map(|(id, _)| *id).collect();

        let mut head = Vec::new();
        if !args.done {
            pktline::write_text(&mut head, "acknowledgments");
            if common.is_empty() {
                pktline::write_text(&mut head, "NAK");
            }
            for id in &common {
                pktline::write_text(&mut head, format!("ACK {id}"));
            }
            if common.is_empty() {
                // Not ready: the client sends more haves, or "done".
                pktline::write_flush(&mut head);
                out.write_all(&head)?;
                return Ok(());
            }
            pktline::write_text(&mut head, "ready");
            pktline::write_delimiter(&mut head);
        }
        let show = !args.no_progress;
        let walk::FetchSet { mut objects, client_has, shallow, unshallow } =
            walk::objects_to_send(&*self.objects, repo, &args.wants, &common, &args.shape)?;
        if args.shallow_request {
            pktline::write_text(&mut head, "shallow-info");
            for id in &shallow {
                pktline::write_text(&mut head, format!("shallow {id}"));
            }
            for id in &unshallow {
                pktline::write_text(&mut head, format!("unshallow {id}"));
            }
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
        out.write_all(&head)?;

        if args.include_tag {
            self.add_tags(repo, &mut objects, &client_has)?;
        }
        progress(out, show, &format!("Enumerating objects: {}, done.\n", objects.len()))?;
        let (reused, total) = {
            let mut sideband = Sideband { out: &mut *out, buf: Vec::new() };
            let stats = self.write_pack(repo, &objects, &client_has, &args, &mut sideband)?;
            sideband.flush()?;
            stats
        };
        progress(out, show, &format!("Total {total} (delta {reused}), reused {reused} (delta {reused})\n"))?;
        let mut tail = Vec::new();
        pktline::write_flush(&mut tail);
        out.write_all(&tail)?;
        Ok(())
    }

    /// Adds annotated tags that point at objects being sent (`include-tag`).
    fn add_tags(
        &self,
        repo: RepoId,
        objects: &mut Vec<(ObjectId, ObjectKind)>,
        client_has: &HashSet<ObjectId>,
    ) -> Result<()> {
        let sending: HashSet<ObjectId> = objects.iter().map(|(id, _)| *id).collect();
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

    /// Writes the pack; returns (objects written as reused deltas, objects written).
    fn write_pack(
        &self,
        repo: RepoId,
        objects: &[(ObjectId, ObjectKind)],
        client_has: &HashSet<ObjectId>,
        args: &FetchArgs,
        sink: &mut dyn Write,
    ) -> Result<(usize, usize)> {
        let count =
            u32::try_from(objects.len()).map_err(|_| Error::Protocol("too many objects for one pack".into()))?;
        let mut writer = Writer::new(sink, count)?;
        let in_pack: HashSet<ObjectId> = objects.iter().map(|(id, _)| *id).collect();
        let mut written: HashMap<ObjectId, u64> = HashMap::with_capacity(objects.len());
        let mut reused = 0;
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
            let data = self.objects.get_many(repo, &ids)?;
            let deltas = self.objects.deltas(repo, &ids)?;
            for ((id, object), delta) in ids.iter().zip(data).zip(deltas) {
                let object = object.ok_or_else(|| Error::Protocol(format!("object {id} vanished while packing")))?;
                ctx.write_one(&mut writer, *id, object, delta, 0)?;
            }
        }
        writer.finish()?;
        Ok((reused, objects.len()))
    }
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
    fn write_one(
        &mut self,
        writer: &mut Writer<&mut dyn Write>,
        id: ObjectId,
        object: Object,
        delta: Option<StoredDelta>,
        depth: usize,
    ) -> Result<()> {
        if self.written.contains_key(&id) {
            return Ok(());
        }
        if let Some(d) = delta {
            if self.in_pack.contains(&d.base) && d.base != id && depth < MAX_REUSE_DEPTH {
                if !self.written.contains_key(&d.base) {
                    // Write the base first so this object can follow as a delta against it.
                    let base = self.service.objects.get_many(self.repo, &[d.base])?.pop().flatten();
                    let base_delta = self.service.objects.deltas(self.repo, &[d.base])?.pop().flatten();
                    if let Some(base) = base {
                        self.write_one(writer, d.base, base, base_delta, depth + 1)?;
                    }
                }
                if let Some(&base_offset) = self.written.get(&d.base) {
                    let offset = if self.args.ofs_delta {
                        writer.write_ofs_delta(base_offset, &d.delta)?
                    } else {
                        writer.write_ref_delta(&d.base, &d.delta)?
                    };
                    self.written.insert(id, offset);
                    *self.reused += 1;
                    return Ok(());
                }
            } else if self.args.thin_pack && self.client_has.contains(&d.base) {
                let offset = writer.write_ref_delta(&d.base, &d.delta)?;
                self.written.insert(id, offset);
                *self.reused += 1;
                return Ok(());
            }
        }
        let offset = writer.write_object(object.kind, &object.data)?;
        self.written.insert(id, offset);
        Ok(())
    }
}
