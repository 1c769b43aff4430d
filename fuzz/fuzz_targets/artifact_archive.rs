//! The artifact archive reader on hostile input: it must return an error or a summary, never
//! panic, never hand out a path that could leave the extraction directory, and never read past
//! its limits. The input follows the header and is compressed first, so the fuzzer explores the
//! archive format itself (random bytes are rarely a zstd frame); it is also read as it is.
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = gitstratum_artifact::Limits { max_bytes: 1 << 20, max_files: 1000 };
    let check = |bytes: &[u8]| {
        let mut total = 0u64;
        let _ = gitstratum_artifact::read_archive(bytes, &limits, |entry, body| {
            assert!(gitstratum_artifact::check_entry_path(&entry.path).is_ok(), "{:?}", entry.path);
            let mut sink = Vec::new();
            body.read_to_end(&mut sink)?;
            total += sink.len() as u64;
            assert!(total <= limits.max_bytes);
            Ok(())
        });
    };
    // After the header, as the stream a runner would compress (the fuzzer need not find the magic).
    let body = [&b"GSAR\x01"[..], data].concat();
    if let Ok(compressed) = zstd::stream::encode_all(&body[..], 1) {
        check(&compressed);
    }
    check(data);
});
