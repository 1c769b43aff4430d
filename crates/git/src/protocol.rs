//! Request parsing and response building for the smart protocol: protocol v2 commands
//! (`ls-refs`, `fetch`) and the v0 receive-pack command list. Byte-level and sans-io.

use crate::object::ObjectId;
use crate::pktline::{self, Decoded, Packet};

/// Our agent string, advertised to clients.
pub const AGENT: &str = concat!("gitstratum/", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Pkt(#[from] pktline::DecodeError),
    #[error("the request ends early")]
    Truncated,
    #[error("{0}")]
    Invalid(String),
}

fn invalid(message: impl Into<String>) -> RequestError {
    RequestError::Invalid(message.into())
}

/// Reads text lines up to a flush (`0000`) or delimiter (`0001`); returns the lines, what ended
/// them, and the bytes used.
fn read_section(buf: &[u8]) -> Result<(Vec<&[u8]>, Packet<'_>, usize), RequestError> {
    let mut lines = Vec::new();
    let mut used = 0;
    loop {
        match pktline::decode(&buf[used..])? {
            Decoded::Incomplete => return Err(RequestError::Truncated),
            Decoded::Packet(packet, n) => {
                used += n;
                match packet {
                    Packet::Data(_) => lines.push(packet.as_text().unwrap_or_default()),
                    end => return Ok((lines, end, used)),
                }
            }
        }
    }
}

/// A protocol v2 command request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2Request {
    pub command: String,
    pub capabilities: Vec<String>,
    pub args: Vec<Vec<u8>>,
}

/// Parses one v2 request: `command=X`, capability lines, a delimiter, argument lines, a flush.
pub fn parse_v2_request(buf: &[u8]) -> Result<V2Request, RequestError> {
    let (head, end, used) = read_section(buf)?;
    let mut command = None;
    let mut capabilities = Vec::new();
    for line in head {
        let line = std::str::from_utf8(line).map_err(|_| invalid("request lines must be UTF-8"))?;
        match line.strip_prefix("command=") {
            Some(c) if command.is_none() => command = Some(c.to_owned()),
            Some(_) => return Err(invalid("more than one command")),
            None => capabilities.push(line.to_owned()),
        }
    }
    let command = command.ok_or_else(|| invalid("no command= line"))?;
    let args = match end {
        Packet::Delimiter => {
            let (args, end, _) = read_section(&buf[used..])?;
            if end != Packet::Flush {
                return Err(invalid("arguments must end with a flush"));
            }
            args.into_iter().map(<[u8]>::to_vec).collect()
        }
        Packet::Flush => Vec::new(),
        _ => return Err(invalid("unexpected packet after the capabilities")),
    };
    Ok(V2Request { command, capabilities, args })
}

/// A protocol v0/v1 upload-pack request, as a stateless (HTTP) client sends it: `want` lines
/// (capabilities after the first id) with `shallow`, `deepen*` and `filter` lines, a flush, then
/// `have` lines in flush-terminated batches and perhaps `done`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V0UploadRequest {
    pub capabilities: Vec<String>,
    /// The first section, capabilities removed: `want <id>`, `shallow <id>`, `deepen <n>`, ….
    pub lines: Vec<Vec<u8>>,
    /// `have <id>` lines, in order.
    pub haves: Vec<Vec<u8>>,
    pub done: bool,
    /// Anything followed the want list. A request that ends with it only asks for the shallow
    /// list (a stateless client deepening reads that before it negotiates).
    pub negotiates: bool,
}

impl V0UploadRequest {
    pub fn has_capability(&self, name: &str) -> bool {
        self.capabilities.iter().any(|c| c == name || c.starts_with(&format!("{name}=")))
    }
}

/// Parses a v0/v1 upload-pack request. An empty body (no wants) is valid.
pub fn parse_v0_upload_request(buf: &[u8]) -> Result<V0UploadRequest, RequestError> {
    let mut request =
        V0UploadRequest { capabilities: vec![], lines: vec![], haves: vec![], done: false, negotiates: false };
    if buf.is_empty() {
        return Ok(request);
    }
    let (first, end, mut used) = read_section(buf)?;
    if end != Packet::Flush {
        return Err(invalid("the want list must end with a flush"));
    }
    for (i, line) in first.into_iter().enumerate() {
        let mut line = line.to_vec();
        if i == 0 && line.starts_with(b"want ") && line.len() > 45 {
            // "want <40 hex><SP or NUL><capabilities>"
            let caps = std::str::from_utf8(&line[46..]).map_err(|_| invalid("capabilities must be UTF-8"))?;
            request.capabilities = caps.split(' ').filter(|c| !c.is_empty()).map(str::to_owned).collect();
            line.truncate(45);
        }
        request.lines.push(line);
    }
    request.negotiates = used < buf.len();
    while used < buf.len() {
        match pktline::decode(&buf[used..])? {
            Decoded::Incomplete => return Err(RequestError::Truncated),
            Decoded::Packet(packet, n) => {
                used += n;
                match packet {
                    Packet::Flush => {}
                    Packet::Data(_) if request.done => return Err(invalid("lines after done")),
                    Packet::Data(_) => {
                        let line = packet.as_text().unwrap_or_default();
                        if line == b"done" {
                            request.done = true;
                        } else if line.starts_with(b"have ") {
                            request.haves.push(line.to_vec());
                        } else {
                            return Err(invalid(format!(
                                "expected a have line or done, got {:?}",
                                String::from_utf8_lossy(line)
                            )));
                        }
                    }
                    _ => return Err(invalid("unexpected packet in the have list")),
                }
            }
        }
    }
    Ok(request)
}

/// One `<old> <new> <ref>` line of a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushCommand {
    pub old: Option<ObjectId>,
    pub new: Option<ObjectId>,
    pub name: String,
}

/// The command part of a receive-pack request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushRequest {
    /// The client's shallow commits (`shallow <id>` lines before the commands): it pushes from a
    /// shallow clone, whose history stops there.
    pub shallow: Vec<ObjectId>,
    pub commands: Vec<PushCommand>,
    pub capabilities: Vec<String>,
    pub push_options: Vec<String>,
    /// Where the pack starts in the request body.
    pub pack_offset: usize,
}

impl PushRequest {
    pub fn has_capability(&self, name: &str) -> bool {
        self.capabilities.iter().any(|c| c == name || c.starts_with(&format!("{name}=")))
    }
}

fn parse_id(hex: &str) -> Result<Option<ObjectId>, RequestError> {
    let id = ObjectId::from_hex(hex.as_bytes()).map_err(|_| invalid(format!("bad object id {hex:?}")))?;
    Ok((!id.is_null()).then_some(id))
}

/// Parses the commands (and push options) of a receive-pack request; the pack follows.
pub fn parse_push_request(buf: &[u8]) -> Result<PushRequest, RequestError> {
    let (lines, end, mut used) = read_section(buf)?;
    if end != Packet::Flush {
        return Err(invalid("commands must end with a flush"));
    }
    // A request with no commands is valid and does nothing: git sends one (a bare flush) to
    // probe authentication before streaming a large push.
    let mut shallow = Vec::new();
    let mut commands = Vec::new();
    let mut capabilities = Vec::new();
    // `shallow <id>` lines come first (a push from a shallow clone); then the commands, the first
    // carrying the capabilities.
    let first_command = lines.iter().position(|l| !l.starts_with(b"shallow ")).unwrap_or(lines.len());
    for line in &lines[..first_command] {
        let hex = std::str::from_utf8(&line[8..]).map_err(|_| invalid("malformed shallow line"))?;
        let id = parse_id(hex.trim_end())?.ok_or_else(|| invalid("a shallow line names the null id"))?;
        shallow.push(id);
    }
    for (i, line) in lines[first_command..].iter().enumerate() {
        let (line, caps) = match line.iter().position(|b| *b == 0) {
            Some(nul) if i == 0 => (&line[..nul], Some(&line[nul + 1..])),
            Some(_) => return Err(invalid("capabilities may only follow the first command")),
            None => (*line, None),
        };
        if let Some(caps) = caps {
            let caps = std::str::from_utf8(caps).map_err(|_| invalid("capabilities must be UTF-8"))?;
            capabilities = caps.split(' ').filter(|c| !c.is_empty()).map(str::to_owned).collect();
        }
        let line = std::str::from_utf8(line).map_err(|_| invalid("commands must be UTF-8"))?;
        let mut parts = line.splitn(3, ' ');
        let (Some(old), Some(new), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(invalid(format!("malformed command {line:?}")));
        };
        commands.push(PushCommand { old: parse_id(old)?, new: parse_id(new)?, name: name.to_owned() });
    }
    let mut push_options = Vec::new();
    if capabilities.iter().any(|c| c == "push-options") {
        let (options, end, n) = read_section(&buf[used..])?;
        if end != Packet::Flush {
            return Err(invalid("push options must end with a flush"));
        }
        push_options = options.iter().map(|o| String::from_utf8_lossy(o).into_owned()).collect();
        used += n;
    }
    Ok(PushRequest { shallow, commands, capabilities, push_options, pack_offset: used })
}

/// Reads the command part of a receive-pack request from a stream (the pack follows it, left
/// unread): pkt-lines through the flush ending the commands, and the push options after it when
/// the client named `push-options`. At most `limit` bytes.
pub fn read_push_request(input: &mut dyn std::io::BufRead, limit: usize) -> Result<PushRequest, RequestError> {
    let mut buf = Vec::new();
    let first = read_section_from(input, &mut buf, limit)?;
    if !first.is_empty() && first_capabilities(&buf).split(' ').any(|c| c == "push-options") {
        read_section_from(input, &mut buf, limit)?;
    }
    let mut request = parse_push_request(&buf)?;
    request.pack_offset = buf.len();
    Ok(request)
}

/// Appends pkt-lines to `buf` through the next flush; returns the section's bytes (flush excluded).
fn read_section_from<'a>(
    input: &mut dyn std::io::BufRead,
    buf: &'a mut Vec<u8>,
    limit: usize,
) -> Result<&'a [u8], RequestError> {
    let start = buf.len();
    loop {
        let mut len = [0u8; 4];
        input.read_exact(&mut len).map_err(|_| invalid("the request ends before its commands do"))?;
        let text = std::str::from_utf8(&len).map_err(|_| invalid("malformed pkt-line length"))?;
        let n = usize::from_str_radix(text, 16).map_err(|_| invalid("malformed pkt-line length"))?;
        buf.extend_from_slice(&len);
        if n == 0 {
            let end = buf.len() - 4;
            return Ok(&buf[start..end]);
        }
        if !(4..=crate::pktline::MAX_PACKET_LEN).contains(&n) {
            return Err(invalid(format!("invalid pkt-line length {n}")));
        }
        if buf.len() + n > limit {
            return Err(invalid(format!("the commands exceed {} MiB", limit >> 20)));
        }
        let at = buf.len();
        buf.resize(at + n - 4, 0);
        input.read_exact(&mut buf[at..]).map_err(|_| invalid("the request ends inside a pkt-line"))?;
    }
}

/// The capabilities after the NUL of the first command line, or "" (pkt-line framed bytes).
fn first_capabilities(section: &[u8]) -> &str {
    let mut rest = section;
    while rest.len() >= 4 {
        let Some(n) = std::str::from_utf8(&rest[..4]).ok().and_then(|t| usize::from_str_radix(t, 16).ok()) else {
            return "";
        };
        let Some(line) = rest.get(4..n.max(4)) else { return "" };
        rest = &rest[n.max(4)..];
        if line.starts_with(b"shallow ") {
            continue;
        }
        return line
            .iter()
            .position(|b| *b == 0)
            .and_then(|nul| std::str::from_utf8(&line[nul + 1..]).ok())
            .unwrap_or("")
            .trim_end();
    }
    ""
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pktline::{write_data, write_delimiter, write_flush, write_text};

    #[test]
    fn v2_requests() {
        let mut buf = Vec::new();
        write_text(&mut buf, "command=ls-refs");
        write_text(&mut buf, "agent=git/2.47");
        write_delimiter(&mut buf);
        write_text(&mut buf, "peel");
        write_text(&mut buf, "ref-prefix refs/heads/");
        write_flush(&mut buf);
        let r = parse_v2_request(&buf).expect("valid");
        assert_eq!(r.command, "ls-refs");
        assert_eq!(r.capabilities, ["agent=git/2.47"]);
        assert_eq!(r.args, [b"peel".to_vec(), b"ref-prefix refs/heads/".to_vec()]);
        assert!(matches!(parse_v2_request(&buf[..buf.len() - 4]), Err(RequestError::Truncated)));
        let mut no_command = Vec::new();
        write_text(&mut no_command, "agent=x");
        write_flush(&mut no_command);
        assert!(matches!(parse_v2_request(&no_command), Err(RequestError::Invalid(_))));
    }

    #[test]
    fn v0_upload_requests() {
        let id = "a".repeat(40);
        let mut buf = Vec::new();
        write_text(&mut buf, format!("want {id} multi_ack_detailed side-band-64k thin-pack agent=git/2.47"));
        write_text(&mut buf, format!("want {}", "b".repeat(40)));
        write_text(&mut buf, "deepen 3");
        write_flush(&mut buf);
        write_text(&mut buf, format!("have {}", "c".repeat(40)));
        write_flush(&mut buf);
        write_text(&mut buf, format!("have {}", "d".repeat(40)));
        write_text(&mut buf, "done");
        let r = parse_v0_upload_request(&buf).expect("valid");
        assert!(r.has_capability("multi_ack_detailed") && r.has_capability("agent"));
        assert!(!r.has_capability("multi_ack"));
        assert_eq!(r.lines[0], format!("want {id}").into_bytes());
        assert_eq!(r.lines.len(), 3);
        assert_eq!(r.haves.len(), 2);
        assert!(r.done && r.negotiates);
        let mut wants_only = Vec::new();
        write_text(&mut wants_only, format!("want {id}"));
        write_text(&mut wants_only, "deepen 1");
        write_flush(&mut wants_only);
        let r = parse_v0_upload_request(&wants_only).expect("valid");
        assert!(!r.negotiates && !r.done && r.haves.is_empty() && r.lines.len() == 2);
        assert!(parse_v0_upload_request(b"").expect("empty").lines.is_empty());
        let mut bad = Vec::new();
        write_text(&mut bad, format!("want {id}"));
        write_flush(&mut bad);
        write_text(&mut bad, "deepen 1");
        assert!(parse_v0_upload_request(&bad).is_err(), "only haves after the want list");
        assert!(matches!(parse_v0_upload_request(&buf[..20]), Err(RequestError::Truncated)));
    }

    #[test]
    fn push_requests() {
        let zero = "0".repeat(40);
        let one = "1".repeat(40);
        let mut buf = Vec::new();
        write_data(
            &mut buf,
            format!("{zero} {one} refs/heads/main\0report-status side-band-64k push-options agent=git/2.47\n")
                .as_bytes(),
        );
        write_text(&mut buf, format!("{one} {zero} refs/heads/old"));
        write_flush(&mut buf);
        write_text(&mut buf, "ci.skip");
        write_flush(&mut buf);
        buf.extend_from_slice(b"PACK...");
        let r = parse_push_request(&buf).expect("valid");
        assert_eq!(r.commands.len(), 2);
        assert_eq!(r.commands[0].old, None);
        assert_eq!(r.commands[1].new, None);
        assert!(r.has_capability("report-status") && r.has_capability("agent") && !r.has_capability("atomic"));
        assert_eq!(r.push_options, ["ci.skip"]);
        assert_eq!(&buf[r.pack_offset..], b"PACK...");
        // From a stream: the same request, and the pack left unread.
        let mut stream = &buf[..];
        let streamed = read_push_request(&mut stream, 1 << 20).expect("valid");
        assert_eq!((streamed.commands, streamed.push_options), (r.commands.clone(), r.push_options.clone()));
        assert_eq!(stream, b"PACK...");
        assert!(read_push_request(&mut &buf[..40], 1 << 20).is_err(), "cut short");
        assert!(read_push_request(&mut &buf[..], 64).is_err(), "over the limit");
        assert!(read_push_request(&mut &b"0000"[..], 64).expect("probe").commands.is_empty());

        let probe = parse_push_request(b"0000").expect("a bare flush is a valid, empty request");
        assert!(probe.commands.is_empty());

        let mut bad = Vec::new();
        write_text(&mut bad, format!("{zero} nothex refs/heads/x"));
        write_flush(&mut bad);
        assert!(parse_push_request(&bad).is_err());

        // From a shallow clone: its shallow commits first, then the commands with capabilities.
        let mut shallow = Vec::new();
        write_text(&mut shallow, format!("shallow {one}"));
        write_data(&mut shallow, format!("{zero} {one} refs/heads/main\0report-status atomic\n").as_bytes());
        write_flush(&mut shallow);
        let r = parse_push_request(&shallow).expect("valid");
        assert_eq!(r.shallow.len(), 1);
        assert_eq!(r.commands[0].name, "refs/heads/main");
        assert!(r.has_capability("atomic"));
        let mut null_shallow = Vec::new();
        write_text(&mut null_shallow, format!("shallow {zero}"));
        write_flush(&mut null_shallow);
        assert!(parse_push_request(&null_shallow).is_err());
    }
}
