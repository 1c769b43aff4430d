//! Packs as files: indexing a pack as it streams in (`git index-pack`), reading an object at an
//! offset of a stored pack, completing a thin pack, and writing the `.idx` (version 2) beside it.
//!
//! Indexing runs in two passes, neither holding the pack in memory:
//! 1. [`scan`] reads the stream once, copying every byte to a sink (the file the pack is spooled
//!    to), and records each entry's place, header, CRC-32 and, for whole objects, id (hashed as
//!    the data inflates, in chunks);
//! 2. [`resolve`] resolves deltas by reading the spooled file at offsets: depth first from each
//!    base, holding only the chain being resolved, within a byte budget (data evicted past it is
//!    read and rebuilt again when needed, as C git's `index-pack` does).
//!
//! Object ids are checked where they are computed: a pack names its objects only by content.

use std::collections::HashMap;
use std::io::{self, BufRead, Read, Seek, SeekFrom, Write};
use std::sync::Arc;

use crate::crc::Crc;
use flate2::bufread::ZlibDecoder;

use crate::object::{HashKind, ObjectId, ObjectKind, hash_object};
use crate::pack::ReadError;

/// Reads at an offset without moving a shared cursor (`pread`): many readers share one file.
pub trait ReadAt {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

impl ReadAt for std::fs::File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, offset)
    }
}

impl ReadAt for [u8] {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(self.len());
        let n = buf.len().min(self.len() - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
}

impl ReadAt for Vec<u8> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.as_slice().read_at(buf, offset)
    }
}

/// A `Read` over a `ReadAt` from an offset on.
pub struct Cursor<'a, S: ReadAt + ?Sized> {
    source: &'a S,
    pub position: u64,
}

impl<'a, S: ReadAt + ?Sized> Cursor<'a, S> {
    pub fn new(source: &'a S, position: u64) -> Self {
        Cursor { source, position }
    }
}

impl<S: ReadAt + ?Sized> Read for Cursor<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.source.read_at(buf, self.position)?;
        self.position += n as u64;
        Ok(n)
    }
}

/// What an entry holds, as its header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    Whole(ObjectKind),
    OfsDelta { base_offset: u64 },
    RefDelta { base: ObjectId },
}

/// An entry's header, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryHeader {
    pub header: Header,
    /// Inflated size of the entry's data (the object, or the delta's instructions).
    pub size: u64,
    /// Bytes of header before the compressed data.
    pub header_len: u64,
}

/// Parses an entry header from its first bytes (a header is at most 40 bytes long).
pub fn parse_header(bytes: &[u8], offset: u64) -> Result<EntryHeader, ReadError> {
    let mut pos = 0;
    let truncated = || ReadError::Entry { offset, message: "the entry header is cut short".into() };
    let next = |pos: &mut usize| -> Result<u8, ReadError> {
        let b = *bytes.get(*pos).ok_or_else(truncated)?;
        *pos += 1;
        Ok(b)
    };
    let mut byte = next(&mut pos)?;
    let type_code = (byte >> 4) & 7;
    let mut size = u64::from(byte & 0x0f);
    let mut shift = 4;
    while byte & 0x80 != 0 {
        byte = next(&mut pos)?;
        if shift > 60 {
            return Err(ReadError::Entry { offset, message: "object size does not fit 64 bits".into() });
        }
        size |= u64::from(byte & 0x7f) << shift;
        shift += 7;
    }
    let header = match type_code {
        1 => Header::Whole(ObjectKind::Commit),
        2 => Header::Whole(ObjectKind::Tree),
        3 => Header::Whole(ObjectKind::Blob),
        4 => Header::Whole(ObjectKind::Tag),
        6 => {
            let mut byte = next(&mut pos)?;
            let mut distance = u64::from(byte & 0x7f);
            while byte & 0x80 != 0 {
                byte = next(&mut pos)?;
                distance = distance
                    .checked_add(1)
                    .and_then(|d| d.checked_mul(128))
                    .map(|d| d | u64::from(byte & 0x7f))
                    .ok_or_else(|| ReadError::Entry { offset, message: "delta base offset overflows".into() })?;
            }
            if distance == 0 || distance > offset {
                return Err(ReadError::Entry {
                    offset,
                    message: format!("delta base is {distance} bytes back, outside the pack"),
                });
            }
            Header::OfsDelta { base_offset: offset - distance }
        }
        7 => {
            let id = bytes.get(pos..pos + 20).ok_or_else(truncated)?;
            pos += 20;
            Header::RefDelta { base: ObjectId::from_bytes_or_panic(id) }
        }
        other => return Err(ReadError::Entry { offset, message: format!("unknown object type {other}") }),
    };
    Ok(EntryHeader { header, size, header_len: pos as u64 })
}

/// Reads the header of the entry at `offset`.
pub fn header_at<S: ReadAt + ?Sized>(source: &S, offset: u64) -> Result<EntryHeader, ReadError> {
    let mut buf = [0u8; 40];
    let mut filled = 0;
    while filled < buf.len() {
        let n = source.read_at(&mut buf[filled..], offset + filled as u64)?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    parse_header(&buf[..filled], offset)
}

/// Inflates exactly `size` bytes of one zlib stream starting at `position`; anything else (a
/// stream inflating to more or less, corrupt data) is an error naming the entry at `offset`.
pub fn inflate_at<S: ReadAt + ?Sized>(source: &S, position: u64, size: u64, offset: u64) -> Result<Vec<u8>, ReadError> {
    let mut out = Vec::with_capacity(usize::try_from(size.min(64 << 20)).unwrap_or(0));
    let mut decoder = ZlibDecoder::new(io::BufReader::with_capacity(16 << 10, Cursor::new(source, position)));
    inflate_exactly(&mut decoder, size, offset, &mut |chunk| {
        out.extend_from_slice(chunk);
        Ok(())
    })?;
    Ok(out)
}

/// The result size a delta declares, read from the start of its zlib stream at `position` (the
/// entry at `offset` starts there): inflates only the delta's two size varints, not the delta.
pub fn delta_result_size_at<S: ReadAt + ?Sized>(source: &S, position: u64, offset: u64) -> Result<u64, ReadError> {
    let corrupt = |message: String| ReadError::Entry { offset, message };
    let mut inflater = flate2::Decompress::new(true);
    // Two varints of at most 10 bytes each.
    let mut out = [0u8; 20];
    let mut input = [0u8; 64];
    let mut at = position;
    loop {
        let n = source.read_at(&mut input, at)?;
        if n == 0 {
            return Err(corrupt("the delta is cut short".into()));
        }
        let (before_in, before_out) = (inflater.total_in(), inflater.total_out() as usize);
        let status = inflater
            .decompress(&input[..n], &mut out[before_out..], flate2::FlushDecompress::None)
            .map_err(|e| corrupt(format!("corrupt compressed data: {e}")))?;
        let produced = inflater.total_out() as usize;
        at += inflater.total_in() - before_in;
        if let Ok((_, result)) = crate::delta::sizes(&out[..produced]) {
            return Ok(result);
        }
        let stuck = inflater.total_in() == before_in && produced == before_out;
        if produced == out.len() || status == flate2::Status::StreamEnd || stuck {
            return Err(corrupt("the delta's header is malformed".into()));
        }
    }
}

/// Inflates one zlib stream to exactly `size` bytes, handing the output to `sink` in chunks.
fn inflate_exactly<R: Read>(
    decoder: &mut R,
    size: u64,
    offset: u64,
    sink: &mut dyn FnMut(&[u8]) -> Result<(), ReadError>,
) -> Result<(), ReadError> {
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0u64;
    loop {
        let n = match decoder.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(ReadError::Entry { offset, message: "the compressed data is cut short".into() });
            }
            Err(e) => return Err(ReadError::Entry { offset, message: format!("corrupt compressed data: {e}") }),
        };
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > size {
            return Err(ReadError::Entry {
                offset,
                message: format!("inflates to more than the declared {size} bytes"),
            });
        }
        sink(&buf[..n])?;
    }
    if total != size {
        return Err(ReadError::Entry { offset, message: format!("inflates to {total} bytes, but declares {size}") });
    }
    Ok(())
}

/// Reads an entry's header bytes from a stream, a byte at a time: the type and size (up to the
/// first byte without the high bit), then a delta's base offset or id. [`parse_header`] reads them.
pub(crate) fn read_header_bytes(
    input: &mut impl Read,
    truncated: impl Fn() -> ReadError,
) -> Result<Vec<u8>, ReadError> {
    let mut byte = || -> Result<u8, ReadError> {
        let mut b = [0u8; 1];
        input
            .read_exact(&mut b)
            .map_err(|e| if e.kind() == io::ErrorKind::UnexpectedEof { truncated() } else { e.into() })?;
        Ok(b[0])
    };
    let mut raw = Vec::with_capacity(24);
    raw.push(byte()?);
    while raw.last().is_some_and(|b| b & 0x80 != 0) && raw.len() < 11 {
        raw.push(byte()?);
    }
    match (raw[0] >> 4) & 7 {
        6 => loop {
            let b = byte()?;
            raw.push(b);
            if b & 0x80 == 0 || raw.len() > 32 {
                break;
            }
        },
        7 => {
            for _ in 0..20 {
                raw.push(byte()?);
            }
        }
        _ => {}
    }
    Ok(raw)
}

/// One entry of a scanned pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedEntry {
    pub offset: u64,
    /// Where the next entry (or the trailer) starts.
    pub end: u64,
    pub header: EntryHeader,
    /// CRC-32 of the entry's bytes (header and compressed data), as `.idx` version 2 records.
    pub crc32: u32,
    /// The id of a whole object (deltas get theirs when resolved).
    pub id: Option<ObjectId>,
}

impl ScannedEntry {
    /// The index entry of a whole object (a delta has none until it is resolved).
    pub fn whole(&self) -> Option<IndexedEntry> {
        let (Header::Whole(kind), Some(id)) = (self.header.header, self.id) else { return None };
        Some(IndexedEntry {
            id,
            kind,
            size: self.header.size,
            offset: self.offset,
            end: self.end,
            crc32: self.crc32,
            base: None,
        })
    }
}

/// What [`scan`] learned of a pack.
#[derive(Debug, Clone)]
pub struct Scan {
    pub entries: Vec<ScannedEntry>,
    /// The trailer (SHA-1 of everything before it), verified.
    pub checksum: ObjectId,
    /// Length of the pack, trailer included.
    pub len: u64,
}

/// The stream under [`scan`]: counts, hashes and CRCs what is consumed, and copies it to a sink.
struct Tee<R, W> {
    inner: R,
    sink: W,
    sink_error: Option<io::Error>,
    hasher: gix_hash::Hasher,
    crc: Crc,
    position: u64,
}

impl<R: BufRead, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        crate::pack::read_through_buffer(self, buf)
    }
}

impl<R: BufRead, W: Write> BufRead for Tee<R, W> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        if let Ok(buf) = self.inner.fill_buf() {
            let taken = &buf[..amt.min(buf.len())];
            self.hasher.update(taken);
            self.crc.update(taken);
            if self.sink_error.is_none()
                && let Err(e) = self.sink.write_all(taken)
            {
                self.sink_error = Some(e);
            }
        }
        self.position += amt as u64;
        self.inner.consume(amt);
    }
}

impl<R: BufRead, W: Write> Tee<R, W> {
    fn read_exact_or(&mut self, buf: &mut [u8], error: impl FnOnce() -> ReadError) -> Result<(), ReadError> {
        self.read_exact(buf).map_err(|e| if e.kind() == io::ErrorKind::UnexpectedEof { error() } else { e.into() })
    }

    fn check_sink(&mut self) -> Result<(), ReadError> {
        match self.sink_error.take() {
            Some(e) => Err(ReadError::Io(e)),
            None => Ok(()),
        }
    }
}

/// Reads a pack stream once, writing every byte of it to `sink`, and records its entries (see the
/// module documentation). Entries larger than `max_object_size` are refused; so is a pack whose
/// trailer does not match or that is followed by more data.
pub fn scan<R: BufRead, W: Write>(input: R, sink: W, max_object_size: u64) -> Result<Scan, ReadError> {
    let mut tee = Tee {
        inner: input,
        sink,
        sink_error: None,
        hasher: gix_hash::hasher(HashKind::Sha1),
        crc: Crc::new(),
        position: 0,
    };
    let mut header = [0u8; 12];
    tee.read_exact_or(&mut header, || ReadError::NotAPack)?;
    let count = crate::pack::parse_pack_header(&header)?;
    let mut entries = Vec::with_capacity(count.min(1 << 20) as usize);
    for read in 0..count {
        let truncated = || ReadError::Truncated { entries: read, expected: count };
        let offset = tee.position;
        tee.crc.reset();
        let raw = read_header_bytes(&mut tee, truncated)?;
        let parsed = parse_header(&raw, offset)?;
        if parsed.size > max_object_size {
            return Err(ReadError::TooLarge { offset, size: parsed.size, limit: max_object_size });
        }
        let mut hasher = match parsed.header {
            Header::Whole(kind) => {
                let mut h = gix_hash::hasher(HashKind::Sha1);
                h.update(format!("{} {}\0", kind.as_str(), parsed.size).as_bytes());
                Some(h)
            }
            _ => None,
        };
        {
            let mut decoder = ZlibDecoder::new(&mut tee);
            inflate_exactly(&mut decoder, parsed.size, offset, &mut |chunk| {
                if let Some(h) = hasher.as_mut() {
                    h.update(chunk);
                }
                Ok(())
            })
            .map_err(|e| match e {
                ReadError::Entry { message, .. } if message.contains("cut short") => truncated(),
                other => other,
            })?;
        }
        tee.check_sink()?;
        let id = match hasher {
            Some(h) => Some(h.try_finalize().map_err(|_| ReadError::Entry {
                offset,
                message: "SHA-1 collision attack detected while hashing an object".into(),
            })?),
            None => None,
        };
        entries.push(ScannedEntry { offset, end: tee.position, header: parsed, crc32: tee.crc.sum(), id });
    }
    let hasher = std::mem::replace(&mut tee.hasher, gix_hash::hasher(HashKind::Sha1));
    let expected = hasher.try_finalize().map_err(|_| ReadError::Checksum)?;
    let mut trailer = [0u8; 20];
    tee.read_exact_or(&mut trailer, || ReadError::Truncated { entries: count, expected: count })?;
    tee.check_sink()?;
    if expected.as_bytes() != trailer {
        return Err(ReadError::Checksum);
    }
    if !tee.inner.fill_buf()?.is_empty() {
        return Err(ReadError::TrailingData);
    }
    tee.sink.flush()?;
    Ok(Scan { entries, checksum: expected, len: tee.position })
}

/// An entry of an indexed pack: the object it holds, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedEntry {
    pub id: ObjectId,
    pub kind: ObjectKind,
    /// The object's size (inflated, deltas applied).
    pub size: u64,
    pub offset: u64,
    pub end: u64,
    pub crc32: u32,
    /// For a delta, the object it applies to.
    pub base: Option<ObjectId>,
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("delta at offset {offset} refers to base {base}, which is neither in the pack nor known")]
    MissingBase { offset: u64, base: String },
    #[error("delta at offset {offset}: {source}")]
    Delta {
        offset: u64,
        #[source]
        source: crate::delta::ApplyError,
    },
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("SHA-1 collision attack detected while hashing an object")]
    Collision,
    /// The visitor refused an object.
    #[error("{0}")]
    Refused(String),
}

impl From<crate::object::CollisionDetected> for ResolveError {
    fn from(_: crate::object::CollisionDetected) -> Self {
        ResolveError::Collision
    }
}

/// Looks up a base outside the pack (thin packs): kind and data, or `None` when unknown.
pub type External<'a> = dyn Fn(&ObjectId) -> Option<(ObjectKind, Vec<u8>)> + 'a;

/// Sees each resolved commit, tree and tag with its data; an `Err` refuses the pack.
pub type Visit<'a> = dyn FnMut(&ObjectId, ObjectKind, &[u8]) -> Result<(), String> + 'a;

/// What [`resolve`] found.
#[derive(Debug, Clone, Default)]
pub struct Resolution {
    /// One per scanned entry, in pack order.
    pub entries: Vec<IndexedEntry>,
    /// Bases taken from outside the pack (a thin pack), in the order first used.
    pub external: Vec<ObjectId>,
}

/// Where a frame of the resolution stack gets its data from.
#[derive(Clone, Copy)]
enum Origin {
    Entry(usize),
    External(ObjectId),
}

struct Frame {
    origin: Origin,
    kind: ObjectKind,
    data: Option<Arc<Vec<u8>>>,
    children: Vec<usize>,
    next_child: usize,
}

/// Resolves every entry of a scanned pack (read back from `pack`), giving each its id, kind and
/// size. `external` supplies bases a thin pack leaves out. `visit` sees each commit, tree and tag
/// with its data (blobs are not read unless a delta needs them) and may refuse one. Resolution
/// holds at most about `budget` bytes of base data beyond the object being built.
pub fn resolve<S: ReadAt + ?Sized>(
    pack: &S,
    scan: &Scan,
    external: &External<'_>,
    budget: usize,
    visit: &mut Visit<'_>,
) -> Result<Resolution, ResolveError> {
    let entries = &scan.entries;
    let mut by_offset: HashMap<u64, Vec<usize>> = HashMap::new();
    let mut by_id: HashMap<ObjectId, Vec<usize>> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        match e.header.header {
            Header::OfsDelta { base_offset } => by_offset.entry(base_offset).or_default().push(i),
            Header::RefDelta { base } => by_id.entry(base).or_default().push(i),
            Header::Whole(_) => {}
        }
    }
    let mut out: Vec<Option<IndexedEntry>> = vec![None; entries.len()];
    let mut resolver = Resolver { pack, entries, external, budget, held: 0, visit };
    for (i, e) in entries.iter().enumerate() {
        let Some(whole) = e.whole() else { continue };
        let (id, kind) = (whole.id, whole.kind);
        out[i] = Some(whole);
        let mut children = by_offset.remove(&e.offset).unwrap_or_default();
        children.extend(by_id.remove(&id).unwrap_or_default());
        if children.is_empty() && kind == ObjectKind::Blob {
            continue;
        }
        let data = resolver.whole(i, kind)?;
        if kind != ObjectKind::Blob {
            (resolver.visit)(&id, kind, &data).map_err(ResolveError::Refused)?;
        }
        if !children.is_empty() {
            resolver.tree(Origin::Entry(i), kind, data, children, &mut by_offset, &mut by_id, &mut out)?;
        }
    }
    // What is left are deltas against objects outside the pack (or against nothing).
    // A base named by id may also be a delta of this pack that an outside base resolves first:
    // try every name, and fail only when a round makes no progress.
    let mut used_external = Vec::new();
    while !by_id.is_empty() {
        let mut progressed = false;
        let mut names: Vec<ObjectId> = by_id.keys().copied().collect();
        names.sort_unstable();
        for base in names {
            if !by_id.contains_key(&base) {
                continue;
            }
            let Some((kind, data)) = external(&base) else { continue };
            progressed = true;
            used_external.push(base);
            let children = by_id.remove(&base).unwrap_or_default();
            resolver.tree(
                Origin::External(base),
                kind,
                Arc::new(data),
                children,
                &mut by_offset,
                &mut by_id,
                &mut out,
            )?;
        }
        if !progressed {
            let (base, waiting) = by_id.iter().min_by_key(|(id, _)| **id).expect("not empty");
            let offset = waiting.first().map_or(0, |i| entries[*i].offset);
            return Err(ResolveError::MissingBase { offset, base: base.to_string() });
        }
    }
    if let Some(i) = out.iter().position(Option::is_none) {
        let e = &entries[i];
        let base = match e.header.header {
            Header::OfsDelta { base_offset } => format!("at offset {base_offset}"),
            Header::RefDelta { base } => base.to_string(),
            Header::Whole(_) => "itself".into(),
        };
        return Err(ResolveError::MissingBase { offset: e.offset, base });
    }
    Ok(Resolution { entries: out.into_iter().map(|e| e.expect("checked above")).collect(), external: used_external })
}

struct Resolver<'a, S: ReadAt + ?Sized> {
    pack: &'a S,
    entries: &'a [ScannedEntry],
    external: &'a External<'a>,
    budget: usize,
    held: usize,
    visit: &'a mut Visit<'a>,
}

impl<S: ReadAt + ?Sized> Resolver<'_, S> {
    /// The inflated data of entry `i`.
    fn inflate(&self, i: usize) -> Result<Vec<u8>, ResolveError> {
        let e = &self.entries[i];
        Ok(inflate_at(self.pack, e.offset + e.header.header_len, e.header.size, e.offset)?)
    }

    fn whole(&self, i: usize, _kind: ObjectKind) -> Result<Arc<Vec<u8>>, ResolveError> {
        Ok(Arc::new(self.inflate(i)?))
    }

    /// Resolves every delta below `root`, depth first.
    #[allow(clippy::too_many_arguments)]
    fn tree(
        &mut self,
        root: Origin,
        kind: ObjectKind,
        data: Arc<Vec<u8>>,
        children: Vec<usize>,
        by_offset: &mut HashMap<u64, Vec<usize>>,
        by_id: &mut HashMap<ObjectId, Vec<usize>>,
        out: &mut [Option<IndexedEntry>],
    ) -> Result<(), ResolveError> {
        self.held = data.len();
        let mut stack = vec![Frame { origin: root, kind, data: Some(data), children, next_child: 0 }];
        while let Some(top) = stack.last_mut() {
            if top.next_child == top.children.len() {
                if let Some(d) = stack.pop().and_then(|f| f.data) {
                    self.held = self.held.saturating_sub(d.len());
                }
                continue;
            }
            let child = top.children[top.next_child];
            top.next_child += 1;
            let kind = top.kind;
            let base_id = match top.origin {
                Origin::Entry(i) => out[i].as_ref().map(|e| e.id),
                Origin::External(id) => Some(id),
            };
            let base = self.frame_data(&mut stack)?;
            let e = &self.entries[child];
            let delta = self.inflate(child)?;
            let data = crate::delta::apply(&base, &delta)
                .map_err(|source| ResolveError::Delta { offset: e.offset, source })?;
            drop(base);
            let id = hash_object(kind, &data).map_err(|_| ResolveError::Collision)?;
            if kind != ObjectKind::Blob {
                (self.visit)(&id, kind, &data).map_err(ResolveError::Refused)?;
            }
            out[child] = Some(IndexedEntry {
                id,
                kind,
                size: data.len() as u64,
                offset: e.offset,
                end: e.end,
                crc32: e.crc32,
                base: base_id,
            });
            let mut children = by_offset.remove(&e.offset).unwrap_or_default();
            children.extend(by_id.remove(&id).unwrap_or_default());
            if children.is_empty() {
                continue;
            }
            self.held += data.len();
            stack.push(Frame {
                origin: Origin::Entry(child),
                kind,
                data: Some(Arc::new(data)),
                children,
                next_child: 0,
            });
            // Over budget: let go of the oldest data (it is rebuilt if a sibling needs it).
            let last = stack.len() - 1;
            for frame in stack[..last].iter_mut() {
                if self.held <= self.budget {
                    break;
                }
                if let Some(d) = frame.data.take() {
                    self.held = self.held.saturating_sub(d.len());
                }
            }
        }
        Ok(())
    }

    /// The data of the top frame, rebuilt from the nearest frame below that still holds its data
    /// (or from the pack) when it was let go.
    fn frame_data(&mut self, stack: &mut [Frame]) -> Result<Arc<Vec<u8>>, ResolveError> {
        let top = stack.len() - 1;
        if let Some(d) = &stack[top].data {
            return Ok(d.clone());
        }
        let start = (0..=top).rev().find(|&k| stack[k].data.is_some());
        let (mut data, first) = match start {
            Some(k) => (stack[k].data.clone().expect("found above"), k + 1),
            None => {
                let data = match stack[0].origin {
                    Origin::Entry(i) => self.inflate(i)?,
                    Origin::External(id) => (self.external)(&id)
                        .map(|(_, d)| d)
                        .ok_or_else(|| ResolveError::MissingBase { offset: 0, base: id.to_string() })?,
                };
                (Arc::new(data), 1)
            }
        };
        for frame in &stack[first..=top] {
            let Origin::Entry(i) = frame.origin else { continue };
            let delta = self.inflate(i)?;
            let offset = self.entries[i].offset;
            data =
                Arc::new(crate::delta::apply(&data, &delta).map_err(|source| ResolveError::Delta { offset, source })?);
        }
        self.held += data.len();
        stack[top].data = Some(data.clone());
        Ok(data)
    }
}

/// A thin pack made whole by [`append_bases`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completed {
    pub checksum: ObjectId,
    /// Length of the pack, trailer included.
    pub len: u64,
    /// Where each appended base went: offset, end and CRC-32 of its entry.
    pub appended: Vec<(u64, u64, u32)>,
}

/// Makes a thin pack whole: appends `bases` (kind and data) as whole objects, rewrites the
/// entry count and the trailer. `file` holds the pack (`len` bytes, trailer included).
pub fn append_bases<F: Read + Write + Seek>(
    file: &mut F,
    len: u64,
    count: u32,
    bases: &[(ObjectKind, Vec<u8>)],
) -> io::Result<Completed> {
    let added = u32::try_from(bases.len()).ok().and_then(|n| count.checked_add(n));
    let new_count = added.ok_or_else(|| io::Error::other("too many objects for one pack"))?;
    // Drop the old trailer, write the bases where it was.
    let mut position = len.checked_sub(20).ok_or_else(|| io::Error::other("pack shorter than its trailer"))?;
    file.seek(SeekFrom::Start(position))?;
    let mut appended = Vec::with_capacity(bases.len());
    for (kind, data) in bases {
        let mut entry = Vec::new();
        crate::pack::encode_entry_header(&mut entry, kind.pack_type(), data.len() as u64);
        let mut encoder = flate2::write::ZlibEncoder::new(entry, flate2::Compression::default());
        encoder.write_all(data)?;
        let entry = encoder.finish()?;
        let mut crc = Crc::new();
        crc.update(&entry);
        file.write_all(&entry)?;
        appended.push((position, position + entry.len() as u64, crc.sum()));
        position += entry.len() as u64;
    }
    file.seek(SeekFrom::Start(8))?;
    file.write_all(&new_count.to_be_bytes())?;
    // The trailer covers everything before it: hash the pack again.
    file.seek(SeekFrom::Start(0))?;
    let mut hasher = gix_hash::hasher(HashKind::Sha1);
    let mut remaining = position;
    let mut buf = vec![0u8; 256 << 10];
    while remaining > 0 {
        let n = file.read(&mut buf[..usize::try_from(remaining.min(256 << 10)).unwrap_or(256 << 10)])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "pack shorter than written"));
        }
        hasher.update(&buf[..n]);
        remaining -= n as u64;
    }
    let checksum = hasher.try_finalize().map_err(|_| io::Error::other("SHA-1 collision detected"))?;
    file.seek(SeekFrom::Start(position))?;
    file.write_all(checksum.as_bytes())?;
    file.flush()?;
    Ok(Completed { checksum, len: position + 20, appended })
}

/// Writes a pack index, version 2 (`git index-pack`'s format): fan-out table, sorted ids,
/// CRC-32s, 31-bit offsets with a table of 64-bit ones, the pack's checksum, and the index's
/// own. `entries` need not be sorted. Returns the index's checksum.
pub fn write_idx<W: Write>(out: W, entries: &[IndexedEntry], pack_checksum: &ObjectId) -> io::Result<ObjectId> {
    let mut sorted: Vec<&IndexedEntry> = entries.iter().collect();
    sorted.sort_by_key(|e| e.id);
    sorted.dedup_by(|a, b| a.id == b.id);
    let mut w = HashingWriter { out, hasher: gix_hash::hasher(HashKind::Sha1) };
    w.write_all(&[0xff, b't', b'O', b'c'])?;
    w.write_all(&2u32.to_be_bytes())?;
    let mut fanout = [0u32; 256];
    for e in &sorted {
        fanout[e.id.as_bytes()[0] as usize] += 1;
    }
    let mut total = 0u32;
    for slot in fanout {
        total += slot;
        w.write_all(&total.to_be_bytes())?;
    }
    for e in &sorted {
        w.write_all(e.id.as_bytes())?;
    }
    for e in &sorted {
        w.write_all(&e.crc32.to_be_bytes())?;
    }
    let mut large = Vec::new();
    for e in &sorted {
        if e.offset < 0x8000_0000 {
            w.write_all(&(e.offset as u32).to_be_bytes())?;
        } else {
            let index = u32::try_from(large.len()).map_err(|_| io::Error::other("too many large offsets"))?;
            w.write_all(&(0x8000_0000 | index).to_be_bytes())?;
            large.push(e.offset);
        }
    }
    for offset in large {
        w.write_all(&offset.to_be_bytes())?;
    }
    w.write_all(pack_checksum.as_bytes())?;
    let HashingWriter { mut out, hasher } = w;
    let checksum = hasher.try_finalize().map_err(|_| io::Error::other("SHA-1 collision detected"))?;
    out.write_all(checksum.as_bytes())?;
    out.flush()?;
    Ok(checksum)
}

/// The CRC-32 of an entry's bytes as stored (header and compressed data), as indexes record it.
pub fn entry_crc32(raw: &[u8]) -> u32 {
    let mut crc = Crc::new();
    crc.update(raw);
    crc.sum()
}

/// One entry of a pack index: an object id, where its entry starts, and the entry's CRC-32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdxEntry {
    pub id: ObjectId,
    pub offset: u64,
    pub crc32: u32,
}

/// Reads a pack index, version 2, as [`write_idx`] (and `git index-pack`) write it: checks its
/// own checksum, that the fan-out table agrees with the ids, that ids are sorted and unique, and
/// that every large offset exists. Entries come in id order; `pack_checksum` is the pack's.
pub fn read_idx(bytes: &[u8]) -> Result<(Vec<IdxEntry>, ObjectId), ReadError> {
    let bad = |message: &str| ReadError::Entry { offset: 0, message: format!("pack index: {message}") };
    if bytes.len() < 8 + 256 * 4 + 40 || bytes[..8] != [0xff, b't', b'O', b'c', 0, 0, 0, 2] {
        return Err(bad("not a version 2 index"));
    }
    let (body, trailer) = bytes.split_at(bytes.len() - 20);
    let mut hasher = gix_hash::hasher(HashKind::Sha1);
    hasher.update(body);
    let sum = hasher.try_finalize().map_err(|_| bad("SHA-1 collision detected"))?;
    if sum.as_bytes() != trailer {
        return Err(ReadError::Checksum);
    }
    let u32_at = |at: usize| -> Result<u32, ReadError> {
        bytes.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])).ok_or_else(|| bad("truncated"))
    };
    let n = u32_at(8 + 255 * 4)? as usize;
    let ids_at = 8 + 256 * 4;
    let (crcs_at, offsets_at) = (ids_at + 20 * n, ids_at + 24 * n);
    let large_at = ids_at + 28 * n;
    if large_at + 40 > bytes.len() {
        return Err(bad("truncated"));
    }
    let large_count = (bytes.len() - 40 - large_at) / 8;
    let mut entries = Vec::with_capacity(n);
    let mut fanout = [0u32; 256];
    for i in 0..n {
        let id = ObjectId::from_bytes_or_panic(&bytes[ids_at + 20 * i..ids_at + 20 * (i + 1)]);
        if entries.last().is_some_and(|last: &IdxEntry| last.id >= id) {
            return Err(bad("ids are not sorted"));
        }
        fanout[id.as_bytes()[0] as usize] += 1;
        let raw = u32_at(offsets_at + 4 * i)?;
        let offset = if raw & 0x8000_0000 == 0 {
            u64::from(raw)
        } else {
            let index = (raw & 0x7fff_ffff) as usize;
            if index >= large_count {
                return Err(bad("a large offset is missing"));
            }
            let at = large_at + 8 * index;
            u64::from_be_bytes(bytes[at..at + 8].try_into().map_err(|_| bad("truncated"))?)
        };
        entries.push(IdxEntry { id, offset, crc32: u32_at(crcs_at + 4 * i)? });
    }
    let mut total = 0u32;
    for (slot, count) in fanout.iter().enumerate() {
        total += count;
        if u32_at(8 + 4 * slot)? != total {
            return Err(bad("the fan-out table does not match the ids"));
        }
    }
    let pack = ObjectId::from_bytes_or_panic(&bytes[bytes.len() - 40..bytes.len() - 20]);
    Ok((entries, pack))
}

struct HashingWriter<W> {
    out: W,
    hasher: gix_hash::Hasher,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Resolved objects kept between reads, keyed by where their entry starts: delta chains share
/// bases, and a walk reads many objects of one chain.
pub trait BaseCache {
    fn get(&self, offset: u64) -> Option<(ObjectKind, Arc<Vec<u8>>)>;
    fn put(&self, offset: u64, kind: ObjectKind, data: Arc<Vec<u8>>);
}

/// A cache that keeps nothing.
pub struct NoCache;

impl BaseCache for NoCache {
    fn get(&self, _: u64) -> Option<(ObjectKind, Arc<Vec<u8>>)> {
        None
    }
    fn put(&self, _: u64, _: ObjectKind, _: Arc<Vec<u8>>) {}
}

/// An object read from a pack: its kind and data (shared: caches hold it too).
pub type Resolved = (ObjectKind, Arc<Vec<u8>>);

/// Looks up the base of a REF delta by id: kind and data, or `None` when unknown.
pub type RefBase<'a> = dyn Fn(&ObjectId) -> Result<Option<Resolved>, ReadError> + 'a;

/// Reads the object whose entry starts at `offset` of `pack`: follows OFS deltas inside the pack
/// and REF deltas through `ref_base`, applying the chain from its base up. Chains deeper than
/// `max_depth` are refused (a pack we wrote never has one).
pub fn read_object<S: ReadAt + ?Sized>(
    pack: &S,
    offset: u64,
    ref_base: &RefBase<'_>,
    cache: &dyn BaseCache,
    max_depth: usize,
) -> Result<(ObjectKind, Arc<Vec<u8>>), ReadError> {
    // Walk down to a whole object (or a cached one), remembering the deltas on the way.
    let mut chain: Vec<(u64, EntryHeader)> = Vec::new();
    let mut at = offset;
    let (kind, mut data) = loop {
        if let Some(hit) = cache.get(at) {
            break hit;
        }
        let header = header_at(pack, at)?;
        match header.header {
            Header::Whole(kind) => {
                let data = Arc::new(inflate_at(pack, at + header.header_len, header.size, at)?);
                if !chain.is_empty() {
                    cache.put(at, kind, data.clone());
                }
                break (kind, data);
            }
            Header::OfsDelta { base_offset } => {
                chain.push((at, header));
                at = base_offset;
            }
            Header::RefDelta { base } => {
                chain.push((at, header));
                match ref_base(&base)? {
                    Some(found) => break found,
                    None => {
                        return Err(ReadError::Entry { offset: at, message: format!("delta base {base} is missing") });
                    }
                }
            }
        }
        if chain.len() > max_depth {
            return Err(ReadError::Entry { offset, message: format!("delta chain deeper than {max_depth}") });
        }
    };
    while let Some((at, header)) = chain.pop() {
        let delta = inflate_at(pack, at + header.header_len, header.size, at)?;
        let next = crate::delta::apply(&data, &delta)
            .map_err(|e| ReadError::Entry { offset: at, message: format!("cannot apply delta: {e}") })?;
        data = Arc::new(next);
        if !chain.is_empty() {
            cache.put(at, kind, data.clone());
        }
    }
    Ok((kind, data))
}

/// The raw bytes of an entry (header and compressed data), `[offset, end)`, checked against its
/// CRC-32: what serving copies verbatim.
pub fn raw_entry<S: ReadAt + ?Sized>(pack: &S, offset: u64, end: u64, crc32: u32) -> Result<Vec<u8>, ReadError> {
    let len = end
        .checked_sub(offset)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| ReadError::Entry { offset, message: "entry ends before it starts".into() })?;
    let mut buf = vec![0u8; len];
    Cursor::new(pack, offset).read_exact(&mut buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            ReadError::Entry { offset, message: "the pack is shorter than its index says".into() }
        } else {
            ReadError::Io(e)
        }
    })?;
    let mut crc = Crc::new();
    crc.update(&buf);
    if crc.sum() != crc32 {
        return Err(ReadError::Entry { offset, message: "the entry's bytes do not match their CRC-32".into() });
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::Writer;

    fn pack_of(build: impl FnOnce(&mut Writer<&mut Vec<u8>>) -> io::Result<()>, count: u32) -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut w = Writer::new(&mut bytes, count).expect("writer");
        build(&mut w).expect("entries");
        w.finish().expect("finish");
        bytes
    }

    fn index(bytes: &[u8], external: &External<'_>, budget: usize) -> Result<Resolution, ResolveError> {
        let mut copy = Vec::new();
        let scan = scan(bytes, &mut copy, 1 << 30).map_err(ResolveError::Read)?;
        assert_eq!(copy, bytes, "the sink gets the pack as it streamed");
        resolve(bytes, &scan, external, budget, &mut |_, _, _| Ok(()))
    }

    /// A chain of deltas (OFS and REF) resolves to the ids C git gives, even when the budget is
    /// too small to hold any base (everything is rebuilt from the pack).
    #[test]
    fn chains_resolve_within_any_budget() {
        let texts: Vec<Vec<u8>> =
            (0..6).map(|i| format!("line {i}\n").repeat(200 + i).into_bytes()).collect::<Vec<_>>();
        let bytes = pack_of(
            |w| {
                let mut offset = w.write_object(ObjectKind::Blob, &texts[0])?;
                for i in 1..texts.len() {
                    let delta = crate::delta::encode(&texts[i - 1], &texts[i]);
                    offset = if i % 2 == 0 {
                        w.write_ofs_delta(offset, &delta)?
                    } else {
                        let base = hash_object(ObjectKind::Blob, &texts[i - 1]).expect("hash");
                        w.write_ref_delta(&base, &delta)?
                    };
                }
                Ok(())
            },
            texts.len() as u32,
        );
        for budget in [0, 1 << 30] {
            let r = index(&bytes, &|_| None, budget).expect("resolves");
            let ids: Vec<ObjectId> = r.entries.iter().map(|e| e.id).collect();
            let expected: Vec<ObjectId> =
                texts.iter().map(|t| hash_object(ObjectKind::Blob, t).expect("hash")).collect();
            assert_eq!(ids, expected);
            assert!(r.entries[1..].iter().zip(&expected).all(|(e, base)| e.base == Some(*base)));
            // Each entry reads back by offset (REF bases found by id, as a store does).
            fn read(
                bytes: &[u8],
                at: u64,
                by_id: &HashMap<ObjectId, u64>,
            ) -> Result<(ObjectKind, Arc<Vec<u8>>), ReadError> {
                let lookup = |id: &ObjectId| by_id.get(id).map(|at| read(bytes, *at, by_id)).transpose();
                read_object(bytes, at, &lookup, &NoCache, 100)
            }
            let by_id: HashMap<ObjectId, u64> = r.entries.iter().map(|e| (e.id, e.offset)).collect();
            for (e, text) in r.entries.iter().zip(&texts) {
                let (kind, data) = read(&bytes, e.offset, &by_id).expect("read");
                assert_eq!((kind, data.as_slice()), (ObjectKind::Blob, text.as_slice()));
                raw_entry(bytes.as_slice(), e.offset, e.end, e.crc32).expect("crc matches");
                // A delta's result size is read from its first bytes.
                let header = header_at(bytes.as_slice(), e.offset).expect("header");
                if !matches!(header.header, Header::Whole(_)) {
                    let size = delta_result_size_at(bytes.as_slice(), e.offset + header.header_len, e.offset);
                    assert_eq!(size.expect("size"), text.len() as u64);
                    let cut = &bytes[..(e.offset + header.header_len + 1) as usize];
                    assert!(delta_result_size_at(cut, e.offset + header.header_len, e.offset).is_err());
                }
            }
        }
    }

    /// A thin pack's outside base is reported, and appending it makes a pack that resolves alone.
    #[test]
    fn thin_packs_are_completed() {
        let base = b"shared text\n".repeat(50);
        let target = [base.as_slice(), b"one more line\n"].concat();
        let base_id = hash_object(ObjectKind::Blob, &base).expect("hash");
        let bytes = pack_of(|w| w.write_ref_delta(&base_id, &crate::delta::encode(&base, &target)).map(|_| ()), 1);
        assert!(matches!(index(&bytes, &|_| None, 1 << 20), Err(ResolveError::MissingBase { .. })));
        let known = |id: &ObjectId| (*id == base_id).then(|| (ObjectKind::Blob, base.clone()));
        let r = index(&bytes, &known, 1 << 20).expect("thin pack resolves");
        assert_eq!(r.external, vec![base_id]);
        let mut file = io::Cursor::new(bytes.clone());
        let Completed { checksum, len, appended } =
            append_bases(&mut file, bytes.len() as u64, 1, &[(ObjectKind::Blob, base.clone())]).expect("append");
        let whole = file.into_inner();
        assert_eq!(whole.len() as u64, len);
        assert_eq!(appended.len(), 1);
        let r = index(&whole, &|_| None, 1 << 20).expect("complete pack resolves alone");
        assert_eq!(r.entries.len(), 2);
        assert_eq!(&whole[whole.len() - 20..], checksum.as_bytes());
    }

    /// Corrupt bytes are errors, never panics or wrong objects.
    #[test]
    fn corruption_is_reported() {
        let bytes = pack_of(|w| w.write_object(ObjectKind::Blob, &b"hello world\n".repeat(30)).map(|_| ()), 1);
        for i in 12..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(scan(bad.as_slice(), io::sink(), 1 << 20).is_err(), "byte {i}");
        }
        let scan = scan(bytes.as_slice(), io::sink(), 1 << 20).expect("scan");
        let e = &scan.entries[0];
        let mut bad = bytes.clone();
        bad[(e.offset + 3) as usize] ^= 1;
        assert!(raw_entry(bad.as_slice(), e.offset, e.end, e.crc32).is_err(), "CRC-32 catches it");
    }
}
