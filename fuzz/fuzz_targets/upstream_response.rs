//! What an upstream Git host answers (capability advertisement, `ls-refs`, `fetch`): any bytes
//! give a value or an error, never a panic; a pack taken from a response stays within its limit.
#![no_main]

use gitstratum_git::client;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = client::check_advertisement(data);
    let _ = client::parse_ls_refs(data);
    if let Ok(pack) = client::fetch_response_pack(data, 4096) {
        assert!(pack.len() <= 4096);
    }
});
