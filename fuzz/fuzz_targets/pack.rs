//! Pack parsing and delta resolution: any bytes give entries or an error, never a panic or a
//! runaway allocation (object sizes are capped small here).
#![no_main]

use gitstratum_git::pack::{Reader, resolve_all};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(reader) = Reader::with_limit(data, 1 << 20) else { return };
    let entries: Result<Vec<_>, _> = reader.take(64).collect();
    if let Ok(entries) = entries {
        let _ = resolve_all(&entries, &|_| None);
    }
});
