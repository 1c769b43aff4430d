//! Pack files (version 2): reading a pack stream entry by entry, writing one, and resolving
//! deltas whose bases are in the same pack.
//!
//! ```text
//! pack   = "PACK" version:u32be count:u32be entry* sha1(everything before)
//! entry  = header [ofs-delta: negative offset | ref-delta: base id] zlib(data)
//! header = 1ttt ssss (1sss ssss)* 0sss ssss   (type t; size s, little-endian, 4 then 7 bits)
//! ```
//!
//! [`Reader`] takes any `BufRead` (a socket adapter, a spooled file, a slice), so a pack is never
//! held whole in memory; each entry's inflated data is bounded by its declared size and a limit.

use std::io::{self, BufRead, Read, Write};

use flate2::Compression;
use flate2::bufread::ZlibDecoder;
use flate2::write::ZlibEncoder;

use crate::object::{HashKind, ObjectId, ObjectKind, hash_object};

/// Largest inflated entry accepted by default (objects larger than this are refused).
pub const DEFAULT_MAX_OBJECT_SIZE: u64 = 2 << 30;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Base(ObjectKind),
    /// A delta against the entry that starts `distance` bytes before this one.
    OfsDelta {
        base_offset: u64,
    },
    /// A delta against the object with this id (in the pack, or for a thin pack, in the store).
    RefDelta {
        base: ObjectId,
    },
}

/// One entry of a pack, inflated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Byte offset of the entry's header in the pack.
    pub offset: u64,
    pub kind: EntryKind,
    /// The object's data, or the delta's instructions.
    pub data: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("not a pack: the stream does not start with 'PACK'")]
    NotAPack,
    #[error("unsupported pack version {0}")]
    Version(u32),
    #[error("entry at offset {offset}: {message}")]
    Entry { offset: u64, message: String },
    #[error("entry at offset {offset} declares {size} bytes, above the limit of {limit}")]
    TooLarge { offset: u64, size: u64, limit: u64 },
    #[error("the pack's checksum does not match its content")]
    Checksum,
    #[error("the pack ends early (after {entries} of {expected} entries)")]
    Truncated { entries: u32, expected: u32 },
    #[error("unexpected data after the pack's checksum")]
    TrailingData,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads a pack's bytes through a hasher, counting them, so the trailer can be checked.
struct Hashing<R> {
    inner: R,
    hasher: gix_hash::Hasher,
    position: u64,
}

impl<R: BufRead> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        read_through_buffer(self, buf)
    }
}

/// `Read::read` for a reader whose `BufRead::consume` does the work (hashing, copying): what
/// is read is taken from `fill_buf` and consumed.
pub(crate) fn read_through_buffer(reader: &mut impl BufRead, buf: &mut [u8]) -> io::Result<usize> {
    let available = reader.fill_buf()?;
    let n = available.len().min(buf.len());
    buf[..n].copy_from_slice(&available[..n]);
    reader.consume(n);
    Ok(n)
}

impl<R: BufRead> BufRead for Hashing<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        if let Ok(buf) = self.inner.fill_buf() {
            self.hasher.update(&buf[..amt.min(buf.len())]);
        }
        self.position += amt as u64;
        self.inner.consume(amt);
    }
}

/// Checks a pack's 12-byte header (`PACK`, version 2 or 3); returns the entry count it declares.
pub fn parse_pack_header(header: &[u8; 12]) -> Result<u32, ReadError> {
    if &header[..4] != b"PACK" {
        return Err(ReadError::NotAPack);
    }
    let version = u32::from_be_bytes(header[4..8].try_into().expect("4 bytes"));
    if version != 2 && version != 3 {
        return Err(ReadError::Version(version));
    }
    Ok(u32::from_be_bytes(header[8..12].try_into().expect("4 bytes")))
}

/// Appends an entry header: type and inflated size (4 bits, then 7 bits a byte).
pub fn encode_entry_header(out: &mut Vec<u8>, type_code: u8, mut size: u64) {
    out.push((type_code << 4) | (size & 0x0f) as u8);
    size >>= 4;
    while size > 0 {
        *out.last_mut().expect("non-empty") |= 0x80;
        out.push((size & 0x7f) as u8);
        size >>= 7;
    }
}

/// Reads a pack entry by entry. Iterate it; after the last entry it checks the trailing checksum
/// and that nothing follows.
pub struct Reader<R> {
    input: Hashing<R>,
    count: u32,
    read: u32,
    max_object_size: u64,
    finished: bool,
    /// The pack's checksum, once the trailer has been read and verified.
    pub checksum: Option<ObjectId>,
}

impl<R: BufRead> Reader<R> {
    /// Reads and checks the header.
    pub fn new(input: R) -> Result<Self, ReadError> {
        Reader::with_limit(input, DEFAULT_MAX_OBJECT_SIZE)
    }

    pub fn with_limit(input: R, max_object_size: u64) -> Result<Self, ReadError> {
        let mut input = Hashing { inner: input, hasher: gix_hash::hasher(HashKind::Sha1), position: 0 };
        let mut header = [0u8; 12];
        read_exact_or(&mut input, &mut header, ReadError::NotAPack)?;
        let count = parse_pack_header(&header)?;
        Ok(Reader { input, count, read: 0, max_object_size, finished: false, checksum: None })
    }

    /// How many entries the header declares.
    pub fn len(&self) -> u32 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn next_entry(&mut self) -> Result<Entry, ReadError> {
        let offset = self.input.position;
        let truncated = || ReadError::Truncated { entries: self.read, expected: self.count };
        let raw = crate::packfile::read_header_bytes(&mut self.input, truncated)?;
        let header = crate::packfile::parse_header(&raw, offset)?;
        let size = header.size;
        let kind = match header.header {
            crate::packfile::Header::Whole(kind) => EntryKind::Base(kind),
            crate::packfile::Header::OfsDelta { base_offset } => EntryKind::OfsDelta { base_offset },
            crate::packfile::Header::RefDelta { base } => EntryKind::RefDelta { base },
        };
        if size > self.max_object_size {
            return Err(ReadError::TooLarge { offset, size, limit: self.max_object_size });
        }
        // Inflate exactly one zlib stream; read one byte more than declared to catch a lie.
        let mut data = Vec::with_capacity(usize::try_from(size.min(1 << 20)).unwrap_or(0));
        let mut decoder = ZlibDecoder::new(&mut self.input);
        let inflated = (&mut decoder).take(size + 1).read_to_end(&mut data);
        match inflated {
            Ok(n) if n as u64 == size => {}
            Ok(n) => {
                return Err(ReadError::Entry {
                    offset,
                    message: format!("inflates to {n} bytes, but declares {size}"),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(truncated()),
            Err(e) => return Err(ReadError::Entry { offset, message: format!("corrupt compressed data: {e}") }),
        }
        // The stream may end with bytes the decoder has not pulled yet (the zlib checksum): make
        // it finish, so the reader sits right after this entry.
        let mut rest = [0u8; 1];
        match decoder.read(&mut rest) {
            Ok(0) => {}
            Ok(_) => {
                return Err(ReadError::Entry {
                    offset,
                    message: format!("inflates to more than the declared {size} bytes"),
                });
            }
            Err(e) => return Err(ReadError::Entry { offset, message: format!("corrupt compressed data: {e}") }),
        }
        Ok(Entry { offset, kind, data })
    }

    fn finish(&mut self) -> Result<(), ReadError> {
        let hasher = std::mem::replace(&mut self.input.hasher, gix_hash::hasher(HashKind::Sha1));
        let expected = hasher.try_finalize().map_err(|_| ReadError::Checksum)?;
        let mut trailer = [0u8; 20];
        read_exact_or(
            &mut self.input.inner,
            &mut trailer,
            ReadError::Truncated { entries: self.count, expected: self.count },
        )?;
        if expected.as_bytes() != trailer {
            return Err(ReadError::Checksum);
        }
        if !self.input.inner.fill_buf()?.is_empty() {
            return Err(ReadError::TrailingData);
        }
        self.checksum = Some(expected);
        Ok(())
    }
}

impl<R: BufRead> Iterator for Reader<R> {
    type Item = Result<Entry, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        if self.read == self.count {
            self.finished = true;
            return match self.finish() {
                Ok(()) => None,
                Err(e) => Some(Err(e)),
            };
        }
        let entry = self.next_entry();
        if entry.is_err() {
            self.finished = true;
        }
        self.read += 1;
        Some(entry)
    }
}

fn read_exact_or(input: &mut impl Read, buf: &mut [u8], error: ReadError) -> Result<(), ReadError> {
    input.read_exact(buf).map_err(|e| if e.kind() == io::ErrorKind::UnexpectedEof { error } else { ReadError::Io(e) })
}

/// Writes a pack: header, entries, trailer. Offsets of written entries are returned so later
/// entries can be OFS deltas against them.
pub struct Writer<W: Write> {
    out: W,
    hasher: gix_hash::Hasher,
    position: u64,
    remaining: u32,
    /// CRC-32 of the entry being written (what a pack index records for it).
    crc: crate::crc::Crc,
}

impl<W: Write> Writer<W> {
    /// Starts a pack of exactly `count` entries.
    pub fn new(mut out: W, count: u32) -> io::Result<Self> {
        let mut header = Vec::with_capacity(12);
        header.extend_from_slice(b"PACK");
        header.extend_from_slice(&2u32.to_be_bytes());
        header.extend_from_slice(&count.to_be_bytes());
        out.write_all(&header)?;
        let mut hasher = gix_hash::hasher(HashKind::Sha1);
        hasher.update(&header);
        Ok(Writer { out, hasher, position: 12, remaining: count, crc: crate::crc::Crc::new() })
    }

    fn emit(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.hasher.update(bytes);
        self.crc.update(bytes);
        self.position += bytes.len() as u64;
        Ok(())
    }

    /// Where the next entry starts (so, after an entry, where it ended).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The CRC-32 of the entry written last, header included (as a pack index records it).
    pub fn entry_crc32(&self) -> u32 {
        self.crc.sum()
    }

    fn header(&mut self, type_code: u8, size: u64, extra: &[u8]) -> io::Result<u64> {
        if self.remaining == 0 {
            return Err(io::Error::other("more entries than the pack header declared"));
        }
        self.remaining -= 1;
        self.crc.reset();
        let offset = self.position;
        let mut header = Vec::with_capacity(12 + extra.len());
        encode_entry_header(&mut header, type_code, size);
        header.extend_from_slice(extra);
        self.emit(&header)?;
        Ok(offset)
    }

    /// The encoded distance back to `base_offset` from the entry about to be written.
    fn ofs_distance(&self, base_offset: u64) -> io::Result<Vec<u8>> {
        let distance = self
            .position
            .checked_sub(base_offset)
            .filter(|d| *d > 0)
            .ok_or_else(|| io::Error::other("delta base must come earlier in the pack"))?;
        let mut encoded = vec![(distance & 0x7f) as u8];
        let mut rest = distance >> 7;
        while rest > 0 {
            rest -= 1;
            encoded.push(0x80 | (rest & 0x7f) as u8);
            rest >>= 7;
        }
        encoded.reverse();
        Ok(encoded)
    }

    fn compressed(&mut self, data: &[u8]) -> io::Result<()> {
        let compressed = deflate(data)?;
        self.emit(&compressed)
    }

    /// Writes a whole object; returns its entry's offset.
    pub fn write_object(&mut self, kind: ObjectKind, data: &[u8]) -> io::Result<u64> {
        let offset = self.header(kind.pack_type(), data.len() as u64, &[])?;
        self.compressed(data)?;
        Ok(offset)
    }

    /// Writes a delta against the entry written at `base_offset`.
    pub fn write_ofs_delta(&mut self, base_offset: u64, delta: &[u8]) -> io::Result<u64> {
        let encoded = self.ofs_distance(base_offset)?;
        let offset = self.header(6, delta.len() as u64, &encoded)?;
        self.compressed(delta)?;
        Ok(offset)
    }

    /// Writes a delta against an object named by id (in this pack or, for a thin pack, known to
    /// the receiver).
    pub fn write_ref_delta(&mut self, base: &ObjectId, delta: &[u8]) -> io::Result<u64> {
        let offset = self.header(7, delta.len() as u64, base.as_bytes())?;
        self.compressed(delta)?;
        Ok(offset)
    }

    /// Writes an entry verbatim, as another pack holds it: `raw` is its header and compressed
    /// data, whose header is an object's or a REF delta's (nothing in it depends on where it sits).
    pub fn write_raw(&mut self, raw: &[u8]) -> io::Result<u64> {
        if self.remaining == 0 {
            return Err(io::Error::other("more entries than the pack header declared"));
        }
        self.remaining -= 1;
        self.crc.reset();
        let offset = self.position;
        self.emit(raw)?;
        Ok(offset)
    }

    /// Writes a delta verbatim as an OFS delta against the entry at `base_offset`: `size` is the
    /// delta's inflated size and `compressed` its zlib stream, copied as they are.
    pub fn write_raw_ofs_delta(&mut self, base_offset: u64, size: u64, compressed: &[u8]) -> io::Result<u64> {
        let encoded = self.ofs_distance(base_offset)?;
        let offset = self.header(6, size, &encoded)?;
        self.emit(compressed)?;
        Ok(offset)
    }

    /// Writes a delta verbatim as a REF delta against `base`.
    pub fn write_raw_ref_delta(&mut self, base: &ObjectId, size: u64, compressed: &[u8]) -> io::Result<u64> {
        let offset = self.header(7, size, base.as_bytes())?;
        self.emit(compressed)?;
        Ok(offset)
    }

    /// Writes a whole object verbatim: `compressed` is its zlib stream.
    pub fn write_raw_object(&mut self, kind: ObjectKind, size: u64, compressed: &[u8]) -> io::Result<u64> {
        let offset = self.header(kind.pack_type(), size, &[])?;
        self.emit(compressed)?;
        Ok(offset)
    }

    /// Writes the trailer; returns the writer and the pack's checksum.
    pub fn finish(mut self) -> io::Result<(W, ObjectId)> {
        if self.remaining != 0 {
            return Err(io::Error::other(format!("{} entries declared but not written", self.remaining)));
        }
        let checksum = self.hasher.try_finalize().map_err(|_| io::Error::other("SHA-1 collision detected"))?;
        self.out.write_all(checksum.as_bytes())?;
        Ok((self.out, checksum))
    }
}

/// An object resolved from a pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub id: ObjectId,
    pub kind: ObjectKind,
    pub data: Vec<u8>,
    pub offset: u64,
}

/// Why a pack's deltas could not be resolved (shared with [`crate::packfile::resolve`]).
pub use crate::packfile::ResolveError;

/// Looks up an object outside the pack by id: its kind and data, or `None` when unknown.
pub type KnownObjects<'a> = dyn Fn(&ObjectId) -> Option<(ObjectKind, Vec<u8>)> + 'a;

/// Resolves every entry of a pack to a whole object with its id. `external` supplies bases that
/// are not in the pack (thin packs); return `None` for unknown ids.
///
/// This in-memory form keeps all entries; storage-backed indexing resolves with a bounded cache.
pub fn resolve_all(entries: &[Entry], external: &KnownObjects<'_>) -> Result<Vec<Resolved>, ResolveError> {
    use std::collections::HashMap;
    let by_offset: HashMap<u64, usize> = entries.iter().enumerate().map(|(i, e)| (e.offset, i)).collect();
    let mut done: Vec<Option<(ObjectKind, Vec<u8>)>> = vec![None; entries.len()];
    let mut ids: HashMap<ObjectId, usize> = HashMap::new();
    // Bases first: they resolve alone, and REF deltas find them by id.
    for (i, entry) in entries.iter().enumerate() {
        if let EntryKind::Base(kind) = entry.kind {
            ids.insert(hash_object(kind, &entry.data)?, i);
            done[i] = Some((kind, entry.data.clone()));
        }
    }
    let mut progress = true;
    while progress {
        progress = false;
        for (i, entry) in entries.iter().enumerate() {
            if done[i].is_some() {
                continue;
            }
            let base: Option<(ObjectKind, Vec<u8>)> = match &entry.kind {
                EntryKind::Base(_) => unreachable!("bases were resolved above"),
                EntryKind::OfsDelta { base_offset } => {
                    let Some(&b) = by_offset.get(base_offset) else {
                        return Err(ResolveError::MissingBase {
                            offset: entry.offset,
                            base: format!("at offset {base_offset}"),
                        });
                    };
                    done[b].clone()
                }
                EntryKind::RefDelta { base } => match ids.get(base) {
                    Some(&b) => done[b].clone(),
                    None => match external(base) {
                        Some(found) => Some(found),
                        None => continue,
                    },
                },
            };
            let Some((kind, base_data)) = base else { continue };
            let data = crate::delta::apply(&base_data, &entry.data)
                .map_err(|source| ResolveError::Delta { offset: entry.offset, source })?;
            ids.insert(hash_object(kind, &data)?, i);
            done[i] = Some((kind, data));
            progress = true;
        }
    }
    if let Some(i) = done.iter().position(Option::is_none) {
        let entry = &entries[i];
        let base = match &entry.kind {
            EntryKind::RefDelta { base } => base.to_string(),
            EntryKind::OfsDelta { base_offset } => format!("at offset {base_offset}"),
            EntryKind::Base(_) => String::new(),
        };
        return Err(ResolveError::MissingBase { offset: entry.offset, base });
    }
    let mut out = Vec::with_capacity(entries.len());
    for (i, slot) in done.into_iter().enumerate() {
        let (kind, data) = slot.expect("every entry resolved, checked above");
        out.push(Resolved { id: hash_object(kind, &data)?, kind, data, offset: entries[i].offset });
    }
    Ok(out)
}

/// Compresses an entry's data as the pack writer does (zlib, its default level).
pub fn deflate(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut encoder = ZlibEncoder::new(Vec::with_capacity(data.len() / 2 + 64), Compression::default());
    encoder.write_all(data)?;
    encoder.finish()
}
