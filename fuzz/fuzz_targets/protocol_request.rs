//! Protocol v2 command requests, v0 upload-pack requests and receive-pack command lists: any
//! bytes give a request or an error, never a panic; a parsed push's pack offset lies within the
//! input, and the streamed reader stops right where the pack starts.
#![no_main]

use gitstratum_git::protocol::{parse_push_request, parse_v0_upload_request, parse_v2_request, read_push_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_v2_request(data);
    let _ = parse_v0_upload_request(data);
    if let Ok(push) = parse_push_request(data) {
        assert!(push.pack_offset <= data.len());
    }
    // The streamed form reads no further than the commands (and never past a small limit).
    let mut stream = data;
    if let Ok(push) = read_push_request(&mut stream, 4096) {
        assert_eq!(push.pack_offset, data.len() - stream.len());
    }
});
