//! pkt-line decoding: any bytes give packets or an error, never a panic; consumed lengths stay
//! within the input. Read from a stream (as over SSH), the same bytes give the same packets.
#![no_main]

use gitstratum_git::pktline::{Decoded, Packet, decode, read_packet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    let mut decoded = Vec::new();
    while let Ok(Decoded::Packet(packet, used)) = decode(rest) {
        assert!(used >= 4 && used <= rest.len());
        decoded.push(format!("{packet:?}"));
        rest = &rest[used..];
    }
    let mut stream = data;
    let mut buf = Vec::new();
    let mut streamed = Vec::new();
    while let Ok(Some(packet)) = read_packet(&mut stream, &mut buf) {
        if let Packet::Data(payload) = packet {
            assert!(payload.len() <= gitstratum_git::pktline::MAX_PAYLOAD_LEN.min(data.len()));
        }
        streamed.push(format!("{packet:?}"));
    }
    assert_eq!(decoded, streamed, "a stream reads the packets a buffer decodes");
});
