//! Expression source → parse → evaluate against a small context: never panic, overflow or hang.
#![no_main]

use gitstratum_workflow::expr::{self, Dict, DictContext, ParseOptions, Value};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else { return };
    let options = ParseOptions { named_values: &["github", "matrix"], extra_functions: &[] };
    if let Ok(parsed) = expr::parse(source, &options) {
        let mut github = Dict::new();
        github.insert("ref", Value::from("refs/heads/main"));
        github.insert("list", Value::array(vec![Value::from(1.0), Value::from("two"), Value::Null]));
        let mut names = Dict::new();
        names.insert("github", Value::object(github));
        let _ = expr::evaluate(&parsed, &DictContext(names), source);
    }
});
