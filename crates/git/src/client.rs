//! The client side of protocol version 2, as far as GitStratum fetches from other Git hosts: the
//! capability advertisement, reading references (`ls-refs`) and fetching one commit without its
//! history (`fetch` with `deepen`). Sans-io: request bodies are built and responses parsed here;
//! the caller does the HTTP (`GET info/refs?service=git-upload-pack` and `POST git-upload-pack`,
//! both with `Git-Protocol: version=2`). Every response is untrusted: a parser returns an error
//! naming what was wrong, never panics.

use crate::ObjectId;
use crate::pktline::{self, Packet};

/// The path (relative to a repository's URL) of the capability advertisement.
pub const ADVERTISEMENT_PATH: &str = "info/refs?service=git-upload-pack";
/// The path of upload-pack requests.
pub const UPLOAD_PACK_PATH: &str = "git-upload-pack";
pub const REQUEST_TYPE: &str = "application/x-git-upload-pack-request";
pub const RESULT_TYPE: &str = "application/x-git-upload-pack-result";

/// Every packet of `body`, in order; an error for bytes that are not pkt-lines.
fn packets(body: &[u8]) -> Result<Vec<Packet<'_>>, String> {
    pktline::decode_all(body).map_err(|e| e.to_string())
}

fn text(packet: Packet<'_>) -> Option<&str> {
    packet.as_text().and_then(|t| std::str::from_utf8(t).ok())
}

/// An `ERR <message>` packet, as servers send for a refused request.
fn server_error(packet: Packet<'_>) -> Option<String> {
    text(packet)?.strip_prefix("ERR ").map(|m| format!("the server said: {}", printable(m)))
}

/// At most 200 characters of what a server said, without control characters.
fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(200).collect()
}

/// Checks a capability advertisement: the server speaks version 2 and fetches shallow (a
/// `# service=` header and its flush, as some servers send, are skipped).
pub fn check_advertisement(body: &[u8]) -> Result<(), String> {
    let packets = packets(body)?;
    let mut rest = &packets[..];
    if let Some(first) = rest.first().copied().and_then(text)
        && first.starts_with("# service=")
    {
        rest = rest.get(2..).unwrap_or_default();
    }
    let mut lines = rest.iter().map_while(|p| match p {
        Packet::Data(_) => Some(*p),
        _ => None,
    });
    let Some(first) = lines.next() else { return Err("the server advertised nothing".to_owned()) };
    if let Some(e) = server_error(first) {
        return Err(e);
    }
    if text(first) != Some("version 2") {
        return Err("the server does not speak Git protocol version 2".to_owned());
    }
    let shallow = lines.filter_map(text).any(|line| {
        line.strip_prefix("fetch").is_some_and(|f| f.strip_prefix('=').unwrap_or("").split(' ').any(|c| c == "shallow"))
    });
    if !shallow {
        return Err("the server cannot fetch shallow (no 'fetch=shallow' capability)".to_owned());
    }
    Ok(())
}

fn command(out: &mut Vec<u8>, name: &str) {
    pktline::write_text(out, format!("command={name}"));
    pktline::write_text(out, concat!("agent=gitstratum/", env!("CARGO_PKG_VERSION")));
    pktline::write_text(out, "object-format=sha1");
    pktline::write_delimiter(out);
}

/// An `ls-refs` request for the references starting with any of `prefixes`, annotated tags
/// peeled.
pub fn ls_refs_request(prefixes: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    command(&mut out, "ls-refs");
    pktline::write_text(&mut out, "peel");
    for prefix in prefixes {
        pktline::write_text(&mut out, format!("ref-prefix {prefix}"));
    }
    pktline::write_flush(&mut out);
    out
}

/// One reference of an `ls-refs` response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertised {
    pub name: String,
    pub id: ObjectId,
    /// What an annotated tag points to, in the end.
    pub peeled: Option<ObjectId>,
}

impl Advertised {
    /// The object the reference names once tags are peeled.
    pub fn target(&self) -> ObjectId {
        self.peeled.unwrap_or(self.id)
    }
}

/// Parses an `ls-refs` response: `<id> <name>[ symref-target:…][ peeled:<id>]` lines, a flush.
pub fn parse_ls_refs(body: &[u8]) -> Result<Vec<Advertised>, String> {
    let mut out = Vec::new();
    for packet in packets(body)? {
        match packet {
            Packet::Flush => return Ok(out),
            Packet::Data(_) => {
                if let Some(e) = server_error(packet) {
                    return Err(e);
                }
                let line = text(packet).ok_or("an ls-refs line is not UTF-8")?;
                let mut words = line.split(' ');
                let bad = || format!("a malformed ls-refs line: {:?}", printable(line));
                let id = words.next().and_then(|w| ObjectId::from_hex(w.as_bytes()).ok()).ok_or_else(bad)?;
                let name = words.next().filter(|n| !n.is_empty()).ok_or_else(bad)?.to_owned();
                let mut peeled = None;
                for attribute in words {
                    if let Some(hex) = attribute.strip_prefix("peeled:") {
                        peeled = Some(ObjectId::from_hex(hex.as_bytes()).map_err(|_| bad())?);
                    }
                }
                out.push(Advertised { name, id, peeled });
            }
            Packet::Delimiter | Packet::ResponseEnd => return Err("an unexpected packet in an ls-refs response".into()),
        }
    }
    Err("the ls-refs response ends without its flush".to_owned())
}

/// A `fetch` request for `want` and `depth` commits of its history, in one round (`done`), the
/// pack without progress messages and with offset deltas.
pub fn fetch_request(want: &ObjectId, depth: u32) -> Vec<u8> {
    let mut out = Vec::new();
    command(&mut out, "fetch");
    pktline::write_text(&mut out, "no-progress");
    pktline::write_text(&mut out, "ofs-delta");
    pktline::write_text(&mut out, format!("want {want}"));
    pktline::write_text(&mut out, format!("deepen {depth}"));
    pktline::write_text(&mut out, "done");
    pktline::write_flush(&mut out);
    out
}

/// The pack of a `fetch` response: its sections (`shallow-info`, `wanted-refs`, …) skipped up to
/// `packfile`, whose side-band 1 data is the pack (band 2 is progress; band 3 an error). At most
/// `max` bytes of pack.
pub fn fetch_response_pack(body: &[u8], max: usize) -> Result<Vec<u8>, String> {
    let mut packets = packets(body)?.into_iter();
    // Section headers and their lines, up to `packfile`.
    loop {
        let Some(packet) = packets.next() else { return Err("the fetch response has no pack".to_owned()) };
        if let Some(e) = server_error(packet) {
            return Err(e);
        }
        if let Packet::Data(_) = packet
            && text(packet) == Some("packfile")
        {
            break;
        }
        if packet == Packet::Flush {
            return Err("the fetch response ends without a pack".to_owned());
        }
    }
    let mut pack = Vec::new();
    for packet in packets {
        match packet {
            Packet::Flush => return Ok(pack),
            Packet::Data([1, data @ ..]) => {
                if pack.len() + data.len() > max {
                    return Err(format!("the pack is larger than the limit of {max} bytes"));
                }
                pack.extend_from_slice(data);
            }
            Packet::Data([2, ..]) => {}
            Packet::Data([3, message @ ..]) => {
                return Err(format!("the server said: {}", printable(&String::from_utf8_lossy(message))));
            }
            _ => return Err("an unexpected packet in the pack's side-band".to_owned()),
        }
    }
    Err("the fetch response ends without its flush".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(lines: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for line in lines {
            match *line {
                "0000" => pktline::write_flush(&mut out),
                "0001" => pktline::write_delimiter(&mut out),
                l => pktline::write_text(&mut out, l),
            }
        }
        out
    }

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";

    #[test]
    fn advertisements_of_version_2_with_shallow_fetch_pass() {
        let plain =
            pkt(&["version 2", "agent=git/2.47.3", "ls-refs=unborn", "fetch=shallow wait-for-done filter", "0000"]);
        assert_eq!(check_advertisement(&plain), Ok(()));
        let with_service = [pkt(&["# service=git-upload-pack", "0000"]), plain].concat();
        assert_eq!(check_advertisement(&with_service), Ok(()));
        let v0 = pkt(&["# service=git-upload-pack", "0000", &format!("{A} HEAD\0multi_ack"), "0000"]);
        assert!(check_advertisement(&v0).expect_err("refused").contains("version 2"));
        let no_shallow = pkt(&["version 2", "fetch=filter", "ls-refs", "0000"]);
        assert!(check_advertisement(&no_shallow).expect_err("refused").contains("shallow"));
        assert!(check_advertisement(b"0004").is_err());
        assert!(check_advertisement(b"zzzz").is_err());
        assert!(check_advertisement(&pkt(&["ERR access denied"])).expect_err("refused").contains("access denied"));
    }

    #[test]
    fn ls_refs_responses_parse_with_peeled_tags() {
        let body = pkt(&[&format!("{A} refs/heads/v1"), &format!("{B} refs/tags/v1 peeled:{A}"), "0000"]);
        let refs = parse_ls_refs(&body).expect("parses");
        assert_eq!(refs.len(), 2);
        assert_eq!(refs[0].target().to_string(), A);
        assert_eq!(
            (refs[1].name.as_str(), refs[1].id.to_string(), refs[1].target().to_string()),
            ("refs/tags/v1", B.into(), A.into())
        );
        assert!(parse_ls_refs(&pkt(&["zz refs/heads/x", "0000"])).is_err());
        assert!(parse_ls_refs(&pkt(&[A, "0000"])).is_err());
        assert!(parse_ls_refs(&pkt(&[&format!("{A} refs/heads/x")])).expect_err("refused").contains("flush"));
        assert_eq!(parse_ls_refs(&pkt(&["0000"])), Ok(vec![]));
    }

    #[test]
    fn requests_are_what_git_sends() {
        let id = ObjectId::from_hex(A.as_bytes()).expect("hex");
        let fetch = fetch_request(&id, 1);
        let text = String::from_utf8(fetch).expect("utf-8");
        assert!(text.starts_with("0012command=fetch\n"), "{text}");
        assert!(
            text.contains(&format!("0032want {A}\n"))
                && text.contains("000ddeepen 1\n")
                && text.ends_with("0009done\n0000")
        );
        let ls = String::from_utf8(ls_refs_request(&["refs/tags/v1".into()])).expect("utf-8");
        assert!(
            ls.contains("0001") && ls.contains("0009peel\n") && ls.ends_with("001cref-prefix refs/tags/v1\n0000"),
            "{ls}"
        );
    }

    #[test]
    fn fetch_responses_give_their_pack() {
        let mut body = pkt(&["shallow-info", &format!("shallow {A}"), "0001", "packfile"]);
        pktline::write_data(&mut body, b"\x02Counting objects\n");
        pktline::write_data(&mut body, b"\x01PACK");
        pktline::write_data(&mut body, b"\x01more");
        pktline::write_flush(&mut body);
        assert_eq!(fetch_response_pack(&body, 100), Ok(b"PACKmore".to_vec()));
        assert!(fetch_response_pack(&body, 5).expect_err("refused").contains("limit"));
        let mut failed = pkt(&["packfile"]);
        pktline::write_data(&mut failed, b"\x03upload-pack: not our ref");
        assert!(fetch_response_pack(&failed, 100).expect_err("refused").contains("not our ref"));
        assert!(fetch_response_pack(&pkt(&["acknowledgments", "NAK", "0000"]), 100).is_err());
        assert!(fetch_response_pack(&pkt(&["packfile"]), 100).expect_err("refused").contains("flush"));
        assert!(fetch_response_pack(&pkt(&["ERR no such repository"]), 100).expect_err("refused").contains("no such"));
    }
}
