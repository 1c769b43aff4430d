//! pkt-line decoding: any bytes give packets or an error, never a panic; consumed lengths stay
//! within the input.
#![no_main]

use gitstratum_git::pktline::{Decoded, decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Decoded::Packet(_, used)) = decode(rest) {
        assert!(used >= 4 && used <= rest.len());
        rest = &rest[used..];
    }
});
