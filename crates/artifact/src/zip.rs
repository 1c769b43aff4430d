//! The zip an artifact is downloaded as, written as a stream: each file stored (not compressed
//! again; the transfer is what it is, and the archive's length is known before it starts), its
//! CRC and sizes in a data descriptor after it, the central directory at the end. Names are UTF-8
//! (flag bit 11); Unix permissions are kept. No Zip64: an artifact's zip stays under 4 GiB and
//! 65,535 files (the server's limits keep it there).

use std::io::{self, Write};

const LOCAL_LEN: u64 = 30;
const DESCRIPTOR_LEN: u64 = 16;
const CENTRAL_LEN: u64 = 46;
/// The end-of-central-directory record.
pub const END_LEN: u64 = 22;

/// General purpose flags: sizes and CRC in a data descriptor (bit 3), UTF-8 names (bit 11).
const FLAGS: u16 = (1 << 3) | (1 << 11);

/// What one file adds to the zip's length: its local header, name, bytes and descriptor, and its
/// central directory entry.
pub fn entry_len(name_len: usize, size: u64) -> u64 {
    LOCAL_LEN + DESCRIPTOR_LEN + CENTRAL_LEN + 2 * name_len as u64 + size
}

/// The length of the zip of files with these name lengths and sizes.
pub fn zip_len(files: impl IntoIterator<Item = (usize, u64)>) -> u64 {
    END_LEN + files.into_iter().map(|(n, s)| entry_len(n, s)).sum::<u64>()
}

/// Whether a zip of this length and file count can be written (no Zip64).
pub fn fits(zip_bytes: u64, files: u64) -> bool {
    zip_bytes <= u64::from(u32::MAX) && files <= u64::from(u16::MAX)
}

struct Central {
    name: String,
    mode: u32,
    crc: u32,
    size: u32,
    offset: u32,
}

/// Streams a zip into `out`.
pub struct ZipWriter<W: Write> {
    out: W,
    offset: u64,
    dos_time: u16,
    dos_date: u16,
    done: Vec<Central>,
    current: Option<(String, u32, u64, crc32fast::Hasher, u64)>,
}

fn too_big() -> io::Error {
    io::Error::other("the zip would pass 4 GiB or 65,535 files (Zip64 is not supported)")
}

fn narrow(n: u64) -> io::Result<u32> {
    u32::try_from(n).map_err(|_| too_big())
}

impl<W: Write> ZipWriter<W> {
    /// Every entry is dated `unix_seconds` (UTC).
    pub fn new(out: W, unix_seconds: i64) -> ZipWriter<W> {
        let (dos_date, dos_time) = dos_date_time(unix_seconds);
        ZipWriter { out, offset: 0, dos_time, dos_date, done: Vec::new(), current: None }
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// Starts a file; write its bytes with [`Write`], then call [`ZipWriter::end_file`].
    pub fn start_file(&mut self, name: &str, mode: u32) -> io::Result<()> {
        if self.current.is_some() {
            return Err(io::Error::other("a file is still open"));
        }
        if self.done.len() >= usize::from(u16::MAX) {
            return Err(too_big());
        }
        let name_len = u16::try_from(name.len()).map_err(|_| io::Error::other("name too long"))?;
        let start = self.offset;
        let mut h = Vec::with_capacity(30 + name.len());
        h.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        h.extend_from_slice(&20u16.to_le_bytes()); // version needed: 2.0
        h.extend_from_slice(&FLAGS.to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes()); // stored
        h.extend_from_slice(&self.dos_time.to_le_bytes());
        h.extend_from_slice(&self.dos_date.to_le_bytes());
        h.extend_from_slice(&[0u8; 12]); // CRC and sizes: in the descriptor
        h.extend_from_slice(&name_len.to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes()); // extra
        h.extend_from_slice(name.as_bytes());
        self.put(&h)?;
        self.current = Some((name.to_owned(), mode, start, crc32fast::Hasher::new(), 0));
        Ok(())
    }

    pub fn end_file(&mut self) -> io::Result<()> {
        let (name, mode, start, crc, size) = self.current.take().ok_or_else(|| io::Error::other("no open file"))?;
        let crc = crc.finalize();
        let size = narrow(size)?;
        let mut d = Vec::with_capacity(16);
        d.extend_from_slice(&0x0807_4b50u32.to_le_bytes());
        d.extend_from_slice(&crc.to_le_bytes());
        d.extend_from_slice(&size.to_le_bytes());
        d.extend_from_slice(&size.to_le_bytes());
        self.put(&d)?;
        self.done.push(Central { name, mode, crc, size, offset: narrow(start)? });
        Ok(())
    }

    /// Writes the central directory; returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        if self.current.is_some() {
            return Err(io::Error::other("a file is still open"));
        }
        let start = self.offset;
        let entries = std::mem::take(&mut self.done);
        for e in &entries {
            let mut c = Vec::with_capacity(46 + e.name.len());
            c.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
            c.extend_from_slice(&((3u16 << 8) | 20).to_le_bytes()); // made by: Unix, 2.0
            c.extend_from_slice(&20u16.to_le_bytes());
            c.extend_from_slice(&FLAGS.to_le_bytes());
            c.extend_from_slice(&0u16.to_le_bytes());
            c.extend_from_slice(&self.dos_time.to_le_bytes());
            c.extend_from_slice(&self.dos_date.to_le_bytes());
            c.extend_from_slice(&e.crc.to_le_bytes());
            c.extend_from_slice(&e.size.to_le_bytes());
            c.extend_from_slice(&e.size.to_le_bytes());
            c.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
            c.extend_from_slice(&[0u8; 8]); // extra, comment, disk, internal attributes
            c.extend_from_slice(&((0o100_000 | (e.mode & 0o777)) << 16).to_le_bytes());
            c.extend_from_slice(&e.offset.to_le_bytes());
            c.extend_from_slice(e.name.as_bytes());
            self.put(&c)?;
        }
        let size = narrow(self.offset - start)?;
        let count = u16::try_from(entries.len()).map_err(|_| too_big())?;
        let mut end = Vec::with_capacity(22);
        end.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        end.extend_from_slice(&[0u8; 4]); // disk numbers
        end.extend_from_slice(&count.to_le_bytes());
        end.extend_from_slice(&count.to_le_bytes());
        end.extend_from_slice(&size.to_le_bytes());
        end.extend_from_slice(&narrow(start)?.to_le_bytes());
        end.extend_from_slice(&0u16.to_le_bytes()); // comment
        self.put(&end)?;
        Ok(self.out)
    }
}

impl<W: Write> Write for ZipWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some((_, _, _, crc, size)) = self.current.as_mut() else {
            return Err(io::Error::other("no open file"));
        };
        crc.update(buf);
        *size += buf.len() as u64;
        self.out.write_all(buf)?;
        self.offset += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// MS-DOS date and time of a Unix time (UTC; 1980 at the earliest).
fn dos_date_time(unix_seconds: i64) -> (u16, u16) {
    let days = unix_seconds.max(315_532_800).div_euclid(86_400);
    let secs = unix_seconds.max(315_532_800).rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let date = ((year - 1980).clamp(0, 127) << 9) | (month << 5) | day;
    let time = ((secs / 3600) << 11) | (((secs / 60) % 60) << 5) | ((secs % 60) / 2);
    (u16::try_from(date).unwrap_or(0), u16::try_from(time).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn its_length_is_known_in_advance() {
        let files: [(&str, &[u8]); 3] = [("a.txt", b"hello"), ("dir/b", &[1u8; 1000]), ("empty", b"")];
        let mut zip = ZipWriter::new(Vec::new(), 1_700_000_000);
        for (name, data) in files {
            zip.start_file(name, 0o644).expect("start");
            zip.write_all(data).expect("data");
            zip.end_file().expect("end");
        }
        let bytes = zip.finish().expect("finish");
        assert_eq!(bytes.len() as u64, zip_len(files.iter().map(|(n, d)| (n.len(), d.len() as u64))));
        assert_eq!(&bytes[..4], b"PK\x03\x04");
        assert_eq!(&bytes[bytes.len() - 22..bytes.len() - 18], b"PK\x05\x06");
    }

    #[test]
    fn dos_dates() {
        // 2023-11-14 22:13:20 UTC
        let (date, time) = dos_date_time(1_700_000_000);
        assert_eq!((date >> 9) + 1980, 2023);
        assert_eq!((date >> 5) & 0xf, 11);
        assert_eq!(date & 0x1f, 14);
        assert_eq!(time >> 11, 22);
        assert_eq!((time >> 5) & 0x3f, 13);
        assert_eq!(dos_date_time(0), dos_date_time(315_532_800));
    }
}
