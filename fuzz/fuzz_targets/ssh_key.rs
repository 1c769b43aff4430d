//! SSH public keys pasted by users: any input gives a key or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(key) = gitstratum_core::parse_ssh_public_key(text) {
            assert!(key.fingerprint.starts_with("SHA256:"));
        }
    }
});
