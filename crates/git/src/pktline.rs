//! pkt-lines, Git's framing for protocol messages: four hex digits of length (including
//! themselves) then the payload; `0000` flush, `0001` delimiter, `0002` response end.
//!
//! [`decode`] is sans-io: it reads one packet from the front of a buffer and says how many bytes
//! it used, or that more input is needed. Malformed input is an error naming the problem; nothing
//! here panics on any input.

use std::fmt;

/// Largest packet, length prefix included (Git's `LARGE_PACKET_MAX`).
pub const MAX_PACKET_LEN: usize = 65520;
/// Largest payload of one data packet.
pub const MAX_PAYLOAD_LEN: usize = MAX_PACKET_LEN - 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    Data(&'a [u8]),
    Flush,
    Delimiter,
    ResponseEnd,
}

impl<'a> Packet<'a> {
    /// The payload of a data packet without one trailing newline (text lines usually end in one).
    pub fn as_text(self) -> Option<&'a [u8]> {
        match self {
            Packet::Data(data) => Some(data.strip_suffix(b"\n").unwrap_or(data)),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("invalid pkt-line length {0:?}: expected four hex digits")]
    BadLength([u8; 4]),
    #[error("invalid pkt-line length {0}: lengths 0003 and below are reserved")]
    Reserved(usize),
    #[error("pkt-line of {0} bytes is longer than the maximum of {MAX_PACKET_LEN}")]
    TooLong(usize),
}

/// What [`decode`] found at the front of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A packet, and how many bytes of the buffer it took.
    Packet(Packet<'a>, usize),
    /// The buffer ends inside a packet: read more and call again.
    Incomplete,
}

/// Reads one packet from a stream into `buf` (replacing what it held), for a conversation held
/// over a pipe (SSH) rather than one request body. `Ok(None)` when the stream ends before the
/// packet starts (the peer hung up between messages); a stream that ends inside a packet, or a
/// malformed length, is an error of kind `InvalidData`/`UnexpectedEof`.
pub fn read_packet<'b>(input: &mut dyn std::io::Read, buf: &'b mut Vec<u8>) -> std::io::Result<Option<Packet<'b>>> {
    use std::io::{Error, ErrorKind};
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match input.read(&mut prefix[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(Error::new(ErrorKind::UnexpectedEof, "the stream ends inside a pkt-line length")),
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.clear();
    buf.extend_from_slice(&prefix);
    match decode(buf).map_err(|e| Error::new(ErrorKind::InvalidData, e))? {
        Decoded::Packet(packet, _) => {
            let packet = match packet {
                Packet::Flush => Packet::Flush,
                Packet::Delimiter => Packet::Delimiter,
                Packet::ResponseEnd => Packet::ResponseEnd,
                Packet::Data(_) => Packet::Data(&[]),
            };
            buf.clear();
            return Ok(Some(packet));
        }
        Decoded::Incomplete => {}
    }
    let text = std::str::from_utf8(&prefix).map_err(|e| Error::new(ErrorKind::InvalidData, e))?;
    let len = usize::from_str_radix(text, 16).map_err(|e| Error::new(ErrorKind::InvalidData, e))?;
    buf.clear();
    buf.resize(len - 4, 0);
    input.read_exact(buf)?;
    Ok(Some(Packet::Data(buf)))
}

/// Reads one packet from the front of `buf`.
pub fn decode(buf: &[u8]) -> Result<Decoded<'_>, DecodeError> {
    let Some(prefix) = buf.get(..4) else { return Ok(Decoded::Incomplete) };
    let prefix: [u8; 4] = prefix.try_into().expect("four bytes, because of the slice above");
    let mut len = 0usize;
    for byte in prefix {
        let digit = match byte {
            b'0'..=b'9' => byte - b'0',
            b'a'..=b'f' => byte - b'a' + 10,
            b'A'..=b'F' => byte - b'A' + 10,
            _ => return Err(DecodeError::BadLength(prefix)),
        };
        len = len * 16 + usize::from(digit);
    }
    let packet = match len {
        0 => Packet::Flush,
        1 => Packet::Delimiter,
        2 => Packet::ResponseEnd,
        3 => return Err(DecodeError::Reserved(len)),
        n if n > MAX_PACKET_LEN => return Err(DecodeError::TooLong(n)),
        n => match buf.get(4..n) {
            Some(payload) => Packet::Data(payload),
            None => return Ok(Decoded::Incomplete),
        },
    };
    Ok(Decoded::Packet(packet, len.max(4)))
}

/// Reads every packet of a complete buffer; trailing partial input is an error.
pub fn decode_all(mut buf: &[u8]) -> Result<Vec<Packet<'_>>, DecodeAllError> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        match decode(buf)? {
            Decoded::Packet(packet, used) => {
                out.push(packet);
                buf = &buf[used..];
            }
            Decoded::Incomplete => return Err(DecodeAllError::Truncated),
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeAllError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("the input ends in the middle of a pkt-line")]
    Truncated,
}

/// Appends a data packet. Payloads longer than [`MAX_PAYLOAD_LEN`] are a programming error: split
/// them first (see [`write_sideband`]).
pub fn write_data(out: &mut Vec<u8>, payload: &[u8]) {
    assert!(payload.len() <= MAX_PAYLOAD_LEN, "pkt-line payload of {} bytes; split it", payload.len());
    out.extend_from_slice(format!("{:04x}", payload.len() + 4).as_bytes());
    out.extend_from_slice(payload);
}

/// Appends a text line, adding the newline.
pub fn write_text(out: &mut Vec<u8>, line: impl fmt::Display) {
    let mut text = line.to_string().into_bytes();
    text.push(b'\n');
    write_data(out, &text);
}

pub fn write_flush(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0000");
}

pub fn write_delimiter(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0001");
}

pub fn write_response_end(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0002");
}

/// Side-band channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Band {
    Data = 1,
    Progress = 2,
    Error = 3,
}

/// Appends `data` on a side-band channel, split into packets of at most `max_packet` bytes
/// (1000 for `side-band`, 65520 for `side-band-64k`).
pub fn write_sideband(out: &mut Vec<u8>, band: Band, data: &[u8], max_packet: usize) {
    let chunk = max_packet.clamp(6, MAX_PACKET_LEN) - 5;
    for part in data.chunks(chunk) {
        out.extend_from_slice(format!("{:04x}", part.len() + 5).as_bytes());
        out.push(band as u8);
        out.extend_from_slice(part);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_git_examples() {
        let buf = b"0006a\n0000000100020004";
        let packets = decode_all(buf).expect("valid");
        assert_eq!(
            packets,
            [Packet::Data(b"a\n"), Packet::Flush, Packet::Delimiter, Packet::ResponseEnd, Packet::Data(b"")]
        );
        assert_eq!(packets[0].as_text(), Some(&b"a"[..]));
    }

    #[test]
    fn incomplete_and_malformed() {
        assert_eq!(decode(b"00"), Ok(Decoded::Incomplete));
        assert_eq!(decode(b"0009abc"), Ok(Decoded::Incomplete));
        assert_eq!(decode(b"00zz"), Err(DecodeError::BadLength(*b"00zz")));
        assert_eq!(decode(b"0003"), Err(DecodeError::Reserved(3)));
        assert_eq!(decode(b"fff1"), Err(DecodeError::TooLong(0xfff1)));
        assert_eq!(decode_all(b"0006a\n00"), Err(DecodeAllError::Truncated));
    }

    #[test]
    fn sideband_splits() {
        let mut out = Vec::new();
        write_sideband(&mut out, Band::Data, &[7u8; 2000], 1000);
        let packets = decode_all(&out).expect("valid");
        assert_eq!(packets.len(), 3);
        assert!(packets.iter().all(|p| matches!(p, Packet::Data(d) if d[0] == 1 && d.len() <= 996)));
    }

    proptest::proptest! {
        #[test]
        fn round_trip(payloads in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..300), 0..20)) {
            let mut out = Vec::new();
            for p in &payloads {
                write_data(&mut out, p);
            }
            write_flush(&mut out);
            let decoded = decode_all(&out).expect("own output decodes");
            proptest::prop_assert_eq!(decoded.len(), payloads.len() + 1);
            for (d, p) in decoded.iter().zip(&payloads) {
                proptest::prop_assert_eq!(*d, Packet::Data(p));
            }
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = decode_all(&bytes);
        }
    }
}
