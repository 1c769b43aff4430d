//! Validates workflow files and prints one JSON line per file: `{"file", "ok", "errors"}`.
//! Used by `bench/workflow-parity.py` to compare our verdicts with a reference corpus.

fn main() {
    for path in std::env::args().skip(1) {
        let result = match std::fs::read(&path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => gitstratum_workflow::load(&text)
                    .map(|_| ())
                    .map_err(|diags| diags.iter().map(|d| d.to_string()).collect::<Vec<_>>()),
                Err(_) => Err(vec!["the file is not UTF-8".to_owned()]),
            },
            Err(e) => Err(vec![format!("cannot read: {e}")]),
        };
        let (ok, errors) = match result {
            Ok(()) => (true, Vec::new()),
            Err(errors) => (false, errors),
        };
        println!("{}", serde_json::json!({"file": path, "ok": ok, "errors": errors}));
    }
}
