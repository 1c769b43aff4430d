//! The archive format (version 1), inside one zstd frame stream:
//!
//! ```text
//! "GSAR" 0x01
//! per file:  'F'  path_len:u16  path  mode:u32  size:u64  bytes[size]  crc32(bytes):u32
//! at the end: 'E'  files:u64  total_bytes:u64
//! ```
//!
//! Integers are big-endian. Paths obey [`check_entry_path`]; a path appears once. Nothing may
//! follow the end record. Only regular files are archived (a directory is the paths under it; a
//! symbolic link is archived as what it points at, by the writer's caller, when that is allowed).

use std::collections::HashSet;
use std::io::{self, Read, Write};

use crate::names::check_entry_path;

const MAGIC: &[u8; 5] = b"GSAR\x01";
const FILE: u8 = b'F';
const END: u8 = b'E';

/// The compression level archives are written with (zstd's default: fast, and a good ratio).
pub const LEVEL: i32 = 3;

/// Why an archive was refused.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("the archive is damaged: {0}")]
    Damaged(String),
    #[error("the archive has a bad path: {0}")]
    BadPath(String),
    #[error("{0}")]
    TooBig(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// What a reader accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most bytes of files, all together.
    pub max_bytes: u64,
    pub max_files: u64,
}

impl Limits {
    /// No limits: for archives the server checked when it took them.
    pub const NONE: Limits = Limits { max_bytes: u64::MAX, max_files: u64::MAX };
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_bytes: 1 << 30, max_files: 65_535 }
    }
}

/// One file of an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    /// Permission bits (0o644 or 0o755 in practice).
    pub mode: u32,
    pub size: u64,
}

/// What an archive held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub files: u64,
    pub bytes: u64,
    /// The length of the zip it is downloaded as (see [`crate::zip::zip_len`]).
    pub zip_bytes: u64,
}

/// Writes an archive, compressing as it goes.
pub struct Writer<W: Write> {
    out: zstd::stream::write::Encoder<'static, W>,
    seen: HashSet<String>,
    files: u64,
    bytes: u64,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W) -> io::Result<Writer<W>> {
        let mut out = zstd::stream::write::Encoder::new(out, LEVEL)?;
        out.write_all(MAGIC)?;
        Ok(Writer { out, seen: HashSet::new(), files: 0, bytes: 0 })
    }

    pub fn files(&self) -> u64 {
        self.files
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Adds a file of `size` bytes read from `data`. Refuses a bad or repeated path, and data
    /// that ends before `size` (a file that shrank while it was read); reads no more than `size`.
    pub fn add(&mut self, path: &str, mode: u32, size: u64, data: &mut dyn Read) -> io::Result<()> {
        check_entry_path(path).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        if !self.seen.insert(path.to_owned()) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{path:?} is in the archive twice")));
        }
        let len = u16::try_from(path.len()).map_err(|_| io::Error::other("path too long"))?;
        self.out.write_all(&[FILE])?;
        self.out.write_all(&len.to_be_bytes())?;
        self.out.write_all(path.as_bytes())?;
        self.out.write_all(&(mode & 0o777).to_be_bytes())?;
        self.out.write_all(&size.to_be_bytes())?;
        let mut crc = crc32fast::Hasher::new();
        let mut left = size;
        let mut buf = vec![0u8; 64 * 1024];
        while left > 0 {
            let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            let n = data.read(&mut buf[..want])?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{path:?} became shorter while it was archived"),
                ));
            }
            crc.update(&buf[..n]);
            self.out.write_all(&buf[..n])?;
            left -= n as u64;
        }
        self.out.write_all(&crc.finalize().to_be_bytes())?;
        self.files += 1;
        self.bytes += size;
        Ok(())
    }

    /// Writes the end record and the end of the compressed stream; returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[END])?;
        self.out.write_all(&self.files.to_be_bytes())?;
        self.out.write_all(&self.bytes.to_be_bytes())?;
        self.out.finish()
    }
}

fn damaged(what: impl Into<String>) -> ArchiveError {
    ArchiveError::Damaged(what.into())
}

/// Reads exactly `buf.len()` bytes; an early end is damage.
fn fill(input: &mut dyn Read, buf: &mut [u8], what: &str) -> Result<(), ArchiveError> {
    input.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => damaged(format!("it ends inside {what}")),
        _ => damaged(format!("{what}: {e}")),
    })
}

fn u16_at(input: &mut dyn Read, what: &str) -> Result<u16, ArchiveError> {
    let mut b = [0u8; 2];
    fill(input, &mut b, what)?;
    Ok(u16::from_be_bytes(b))
}

fn u32_at(input: &mut dyn Read, what: &str) -> Result<u32, ArchiveError> {
    let mut b = [0u8; 4];
    fill(input, &mut b, what)?;
    Ok(u32::from_be_bytes(b))
}

fn u64_at(input: &mut dyn Read, what: &str) -> Result<u64, ArchiveError> {
    let mut b = [0u8; 8];
    fill(input, &mut b, what)?;
    Ok(u64::from_be_bytes(b))
}

/// A file's bytes as `visit` reads them: no further than the file, its CRC kept.
struct EntryData<'a> {
    input: &'a mut dyn Read,
    left: u64,
    crc: crc32fast::Hasher,
}

impl Read for EntryData<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = usize::try_from(self.left.min(buf.len() as u64)).unwrap_or(buf.len());
        let n = self.input.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the archive ends inside a file"));
        }
        self.crc.update(&buf[..n]);
        self.left -= n as u64;
        Ok(n)
    }
}

/// Reads a compressed archive from `input`, calling `visit` with each file and a reader of its
/// bytes (what `visit` leaves unread is skipped). Checks everything as it streams: the format,
/// every path, repeated paths, every CRC, the limits, the end record's counts, and that nothing
/// follows it. `visit` sees a file before its CRC is checked: on an error, discard what it wrote.
pub fn read_archive(
    input: impl Read,
    limits: &Limits,
    mut visit: impl FnMut(&Entry, &mut dyn Read) -> io::Result<()>,
) -> Result<Summary, ArchiveError> {
    let mut decoder = zstd::stream::read::Decoder::new(input).map_err(|e| damaged(format!("zstd: {e}")))?;
    let input: &mut dyn Read = &mut decoder;
    let mut magic = [0u8; 5];
    fill(input, &mut magic, "its header")?;
    if &magic != MAGIC {
        return Err(damaged("it is not a GitStratum archive (version 1)"));
    }
    let mut seen = HashSet::new();
    let mut summary = Summary { zip_bytes: crate::zip::END_LEN, ..Summary::default() };
    loop {
        let mut tag = [0u8; 1];
        fill(input, &mut tag, "an entry's tag")?;
        match tag[0] {
            FILE => {}
            END => {
                let (files, bytes) = (u64_at(input, "the end record")?, u64_at(input, "the end record")?);
                if (files, bytes) != (summary.files, summary.bytes) {
                    return Err(damaged(format!(
                        "its end record counts {files} files of {bytes} bytes, but it holds {} of {}",
                        summary.files, summary.bytes
                    )));
                }
                let mut rest = [0u8; 1];
                match input.read(&mut rest) {
                    Ok(0) => return Ok(summary),
                    Ok(_) => return Err(damaged("something follows its end record")),
                    Err(e) => return Err(damaged(format!("after its end record: {e}"))),
                }
            }
            other => return Err(damaged(format!("unknown entry tag {other:#04x}"))),
        }
        let len = u16_at(input, "a path's length")?;
        let mut path = vec![0u8; usize::from(len)];
        fill(input, &mut path, "a path")?;
        let path = String::from_utf8(path).map_err(|_| ArchiveError::BadPath("a path is not UTF-8".to_owned()))?;
        check_entry_path(&path).map_err(ArchiveError::BadPath)?;
        if !seen.insert(path.clone()) {
            return Err(ArchiveError::BadPath(format!("{path:?} is in the archive twice")));
        }
        let mode = u32_at(input, "a file's mode")?;
        if mode & !0o777 != 0 {
            return Err(damaged(format!("{path:?} has mode {mode:#o}")));
        }
        let size = u64_at(input, "a file's size")?;
        summary.files += 1;
        if summary.files > limits.max_files {
            return Err(ArchiveError::TooBig(format!("it holds more than {} files", limits.max_files)));
        }
        summary.bytes = summary.bytes.saturating_add(size);
        if summary.bytes > limits.max_bytes {
            return Err(ArchiveError::TooBig(format!(
                "its files come to more than the limit of {} bytes",
                limits.max_bytes
            )));
        }
        summary.zip_bytes += crate::zip::entry_len(path.len(), size);
        let entry = Entry { path, mode, size };
        let mut data = EntryData { input: &mut *input, left: size, crc: crc32fast::Hasher::new() };
        visit(&entry, &mut data).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => damaged(format!("it ends inside {:?}", entry.path)),
            _ => ArchiveError::Io(e),
        })?;
        io::copy(&mut data, &mut io::sink()).map_err(|_| damaged(format!("it ends inside {:?}", entry.path)))?;
        let crc = data.crc.finalize();
        let stored = u32_at(input, "a file's CRC")?;
        if crc != stored {
            return Err(damaged(format!("{:?} fails its CRC check", entry.path)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = Writer::new(Vec::new()).expect("writer");
        for (path, data) in files {
            w.add(path, 0o644, data.len() as u64, &mut &data[..]).expect("add");
        }
        w.finish().expect("finish")
    }

    fn read_all(bytes: &[u8], limits: &Limits) -> Result<Vec<(Entry, Vec<u8>)>, ArchiveError> {
        let mut out = Vec::new();
        read_archive(bytes, limits, |entry, data| {
            let mut buf = Vec::new();
            data.read_to_end(&mut buf)?;
            out.push((entry.clone(), buf));
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn round_trip() {
        let big = vec![7u8; 300_000];
        let bytes = archive(&[("a.txt", b"hello"), ("dir/b.bin", &big), ("empty", b"")]);
        let files = read_all(&bytes, &Limits::default()).expect("read");
        assert_eq!(files.len(), 3);
        assert_eq!(files[0].0.path, "a.txt");
        assert_eq!(files[0].1, b"hello");
        assert_eq!(files[1].1, big);
        assert_eq!(files[2].1, b"");
        assert!(bytes.len() < 10_000, "compressed: {}", bytes.len());
    }

    #[test]
    fn a_visitor_may_skip_data() {
        let bytes = archive(&[("a", b"12345"), ("b", b"678")]);
        let mut names = Vec::new();
        let summary = read_archive(&bytes[..], &Limits::default(), |e, _| {
            names.push(e.path.clone());
            Ok(())
        })
        .expect("read");
        assert_eq!(names, ["a", "b"]);
        assert_eq!((summary.files, summary.bytes), (2, 8));
    }

    #[test]
    fn limits_are_enforced_while_streaming() {
        let bytes = archive(&[("a", &[1u8; 100]), ("b", &[2u8; 100])]);
        let err = read_all(&bytes, &Limits { max_bytes: 150, max_files: 10 }).expect_err("too big");
        assert!(matches!(err, ArchiveError::TooBig(_)), "{err}");
        let err = read_all(&bytes, &Limits { max_bytes: 1000, max_files: 1 }).expect_err("too many");
        assert!(err.to_string().contains("more than 1 files"), "{err}");
    }

    #[test]
    fn the_writer_refuses_bad_paths_and_short_files() {
        let mut w = Writer::new(Vec::new()).expect("writer");
        assert!(w.add("../x", 0o644, 1, &mut &b"x"[..]).is_err());
        assert!(w.add("/etc/passwd", 0o644, 1, &mut &b"x"[..]).is_err());
        assert!(w.add("short", 0o644, 10, &mut &b"x"[..]).is_err());
        w.add("dup", 0o644, 1, &mut &b"x"[..]).expect("first");
        assert!(w.add("dup", 0o644, 1, &mut &b"x"[..]).is_err());
    }

    /// An archive written by hand (as a hostile runner could): the reader refuses it.
    fn raw(body: &[u8]) -> Vec<u8> {
        zstd::stream::encode_all(body, 1).expect("zstd")
    }

    fn file_record(path: &str, data: &[u8], crc: u32) -> Vec<u8> {
        let mut r = vec![FILE];
        r.extend_from_slice(&(path.len() as u16).to_be_bytes());
        r.extend_from_slice(path.as_bytes());
        r.extend_from_slice(&0o644u32.to_be_bytes());
        r.extend_from_slice(&(data.len() as u64).to_be_bytes());
        r.extend_from_slice(data);
        r.extend_from_slice(&crc.to_be_bytes());
        r
    }

    fn end_record(files: u64, bytes: u64) -> Vec<u8> {
        let mut r = vec![END];
        r.extend_from_slice(&files.to_be_bytes());
        r.extend_from_slice(&bytes.to_be_bytes());
        r
    }

    #[test]
    fn hostile_archives_are_refused() {
        let good_crc = crc32fast::hash(b"x");
        let cases: Vec<(Vec<u8>, &str)> = vec![
            ([&MAGIC[..], &file_record("../evil", b"x", good_crc), &end_record(1, 1)].concat(), "bad path"),
            ([&MAGIC[..], &file_record("/abs", b"x", good_crc), &end_record(1, 1)].concat(), "bad path"),
            ([&MAGIC[..], &file_record("ok", b"x", good_crc ^ 1), &end_record(1, 1)].concat(), "CRC"),
            ([&MAGIC[..], &file_record("ok", b"x", good_crc), &end_record(2, 1)].concat(), "end record counts"),
            (
                [&MAGIC[..], &file_record("a", b"x", good_crc), &file_record("a", b"x", good_crc), &end_record(2, 2)]
                    .concat(),
                "twice",
            ),
            ([&MAGIC[..], &file_record("ok", b"x", good_crc)].concat(), "ends inside"),
            ([&MAGIC[..], &file_record("ok", b"x", good_crc), &end_record(1, 1), b"junk"].concat(), "follows"),
            (b"GSAR\x02".to_vec(), "not a GitStratum archive"),
            ([&MAGIC[..], b"Z"].concat(), "unknown entry tag"),
        ];
        for (body, why) in cases {
            let err = read_all(&raw(&body), &Limits::default()).expect_err(why);
            assert!(err.to_string().contains(why), "{why}: {err}");
        }
        // Not zstd at all.
        assert!(read_all(b"plain bytes", &Limits::default()).is_err());
    }
}
