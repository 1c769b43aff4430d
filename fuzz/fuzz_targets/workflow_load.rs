//! YAML bytes → workflow model → plan: must return Ok or diagnostics, never panic or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(source) = std::str::from_utf8(data) {
        if let Ok(workflow) = gitstratum_workflow::load(source) {
            let _ = gitstratum_workflow::plan::plan(&workflow, &Default::default());
        }
    }
});
