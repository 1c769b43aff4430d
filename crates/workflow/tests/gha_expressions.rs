//! GitHub's own test vectors for the expression language (`../shared/conformance/gha-expressions`,
//! from actions/languageservices, MIT licensed): every case must pass, except those listed in
//! `UNSUPPORTED` with the reason.
//!
//! Where GitHub's TypeScript port and its runner disagree (cases marked `skip: typescript`), we
//! follow the runner, which is what executes workflows; those cases run here too.

use std::path::PathBuf;

use gitstratum_workflow::expr::{self, Dict, ErrorKind, ParseOptions, Value};

/// Cases we knowingly do not support: `file::group[index]` and why.
const UNSUPPORTED: &[(&str, &str)] = &[];

fn conformance_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("GITSTRATUM_GHA_CONFORMANCE_DIR") {
        return Some(PathBuf::from(dir));
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/gha-expressions");
    dir.is_dir().then_some(dir)
}

struct Contexts(Dict);

impl expr::Context for Contexts {
    fn named_value(&self, name: &str) -> Option<Value> {
        self.0.get(name).cloned()
    }
}

/// Runs one case; `Err` says how it failed.
fn run_case(case: &serde_json::Value) -> Result<(), String> {
    let source = case["expr"].as_str().ok_or("case without expr")?;
    let contexts = match case.get("contexts") {
        Some(serde_json::Value::Object(map)) => {
            map.iter().map(|(k, v)| (k.clone(), Value::from_json(v.clone()))).collect()
        }
        _ => Dict::new(),
    };
    let names: Vec<&str> = contexts.iter().map(|(k, _)| k).collect();
    let expected_err = case.get("err").map(|e| {
        let kind = match e["kind"].as_str() {
            Some("lexing") => ErrorKind::Lexing,
            Some("parsing") => ErrorKind::Parsing,
            _ => ErrorKind::Evaluation,
        };
        (kind, e["value"].as_str().unwrap_or_default().to_owned())
    });

    let outcome = expr::parse(source, &ParseOptions { named_values: &names, extra_functions: &[] })
        .and_then(|parsed| expr::evaluate(&parsed, &Contexts(contexts.clone()), source));
    match (outcome, expected_err) {
        (Ok(value), None) => {
            let want_kind = case["result"]["kind"].as_str().ok_or("case without result kind")?;
            let want = Value::from_json(case["result"]["value"].clone()).to_json_compact();
            let got = value.to_json_compact();
            if value.kind().name() != want_kind || got != want {
                return Err(format!("got {} {got}, want {want_kind} {want}", value.kind().name()));
            }
            Ok(())
        }
        (Ok(value), Some((kind, message))) => {
            Err(format!("got {} {}, want {kind:?} error {message:?}", value.kind().name(), value.to_json_compact()))
        }
        (Err(err), None) => Err(format!("unexpected {:?} error: {}", err.kind, err.message)),
        (Err(err), Some((kind, message))) => {
            if err.kind == kind && err.message.contains(&message) {
                Ok(())
            } else {
                Err(format!("got {:?} error {:?}, want {kind:?} error containing {message:?}", err.kind, err.message))
            }
        }
    }
}

#[test]
fn github_expression_test_vectors() {
    let Some(dir) = conformance_dir() else {
        assert!(std::env::var_os("CI").is_none(), "CI is set but the conformance data is missing");
        eprintln!("note: ../shared/conformance/gha-expressions not found; skipping GitHub's expression vectors");
        return;
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read conformance dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();

    let (mut passed, mut skipped, mut failures) = (0, 0, Vec::new());
    for file in &files {
        let stem = file.file_stem().and_then(|s| s.to_str()).expect("utf-8 name").to_owned();
        let text = std::fs::read_to_string(file).expect("read case file");
        let groups: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&text).expect("case file is JSON");
        for (group, cases) in &groups {
            for (i, case) in cases.as_array().expect("a group is a list").iter().enumerate() {
                let name = format!("{stem}::{group}[{i}]");
                if UNSUPPORTED.iter().any(|(n, _)| *n == name) {
                    skipped += 1;
                    continue;
                }
                match run_case(case) {
                    Ok(()) => passed += 1,
                    Err(why) => failures.push(format!("{name} `{}`: {why}", case["expr"].as_str().unwrap_or_default())),
                }
            }
        }
    }
    eprintln!(
        "GitHub expression vectors: {passed} passed, {} failed, {skipped} unsupported (listed in UNSUPPORTED)",
        failures.len()
    );
    assert!(passed >= 1000 || !failures.is_empty(), "expected about 1,020 cases, ran {passed}");
    assert!(failures.is_empty(), "{} cases failed:\n{}", failures.len(), failures.join("\n"));
}
