//! Indexing a pushed pack as the server does (scan the stream, resolve deltas from the spooled
//! bytes within a small budget, read every entry back by offset): any bytes give an index or an
//! error, never a panic or a runaway allocation (object sizes are capped small here).
#![no_main]

use gitstratum_git::packfile::{self, NoCache};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut spooled = Vec::new();
    let Ok(scan) = packfile::scan(data, &mut spooled, 1 << 20) else { return };
    if scan.entries.len() > 256 {
        return;
    }
    let Ok(resolution) = packfile::resolve(spooled.as_slice(), &scan, &|_| None, 4096, &mut |_, _, _| Ok(())) else {
        return;
    };
    for entry in &resolution.entries {
        let _ = packfile::read_object(spooled.as_slice(), entry.offset, &|_| Ok(None), &NoCache, 64);
        let _ = packfile::raw_entry(spooled.as_slice(), entry.offset, entry.end, entry.crc32);
    }
});
