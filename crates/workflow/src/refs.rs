//! Which secrets a job references, so it is handed those and no others.
//!
//! Every expression the job can evaluate is looked at: the text inside each `${{ … }}` of the
//! job's (and the workflow's `env`) strings, and the bare expressions of `if:` and of values given
//! as expressions. `secrets.NAME` and `secrets['NAME']` name one secret (case-insensitively);
//! `secrets` used whole (`toJSON(secrets)`) asks for all of them, as on GitHub. Text outside
//! expressions names nothing: a script that prints the word `secrets.TOKEN` gets no secret.

use std::collections::BTreeSet;

use serde_json::Value as Json;

/// The secrets a job references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRefs {
    /// The context is used whole.
    All,
    /// These names, upper case.
    Named(BTreeSet<String>),
}

impl SecretRefs {
    fn add_all(&mut self) {
        *self = SecretRefs::All;
    }

    fn add(&mut self, name: &str) {
        if let SecretRefs::Named(names) = self {
            names.insert(name.to_ascii_uppercase());
        }
    }

    /// The names, or `None` for all of them.
    pub fn names(&self) -> Option<Vec<String>> {
        match self {
            SecretRefs::All => None,
            SecretRefs::Named(names) => Some(names.iter().cloned().collect()),
        }
    }
}

/// The secrets job `job` of `workflow` (GitStratum's model, as JSON) references.
pub fn referenced_secrets(workflow: &Json, job: &str) -> SecretRefs {
    let mut refs = SecretRefs::Named(BTreeSet::new());
    scan(&workflow["env"], false, &mut refs);
    scan(&workflow["jobs"][job], false, &mut refs);
    refs
}

fn scan(value: &Json, in_expr: bool, refs: &mut SecretRefs) {
    match value {
        Json::Object(map) => {
            for (key, v) in map {
                scan(v, in_expr || key == "condition" || key == "Expr", refs);
            }
        }
        Json::Array(items) => items.iter().for_each(|v| scan(v, in_expr, refs)),
        Json::String(text) if in_expr => scan_expression(text, refs),
        Json::String(text) => {
            let mut rest = text.as_str();
            while let Some(start) = rest.find("${{") {
                let inner = &rest[start + 3..];
                let end = inner.find("}}").unwrap_or(inner.len());
                scan_expression(&inner[..end], refs);
                rest = &inner[end..];
            }
        }
        _ => {}
    }
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn scan_expression(text: &str, refs: &mut SecretRefs) {
    let lower = text.to_ascii_lowercase();
    let mut from = 0;
    while let Some(found) = lower[from..].find("secrets") {
        let at = from + found;
        from = at + "secrets".len();
        let before = text[..at].chars().next_back();
        let after = text[from..].chars().next();
        if before.is_some_and(|c| is_ident(c) || c == '.') || after.is_some_and(is_ident) {
            continue; // part of another name (`my_secrets`, `steps.secrets`, `secretsx`)
        }
        let rest = text[from..].trim_start();
        if let Some(name) = rest.strip_prefix('.') {
            let name: String = name.trim_start().chars().take_while(|c| is_ident(*c)).collect();
            if name.is_empty() {
                refs.add_all();
            } else {
                refs.add(&name);
            }
        } else if let Some(index) = rest.strip_prefix('[') {
            let index = index.trim_start();
            let quoted = index.strip_prefix('\'').and_then(|q| q.split_once('\'')).map(|(name, _)| name);
            match quoted {
                Some(name) => refs.add(name),
                None => refs.add_all(), // an index computed at run time
            }
        } else {
            refs.add_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(refs: &SecretRefs) -> Option<Vec<&str>> {
        match refs {
            SecretRefs::All => None,
            SecretRefs::Named(n) => Some(n.iter().map(String::as_str).collect()),
        }
    }

    #[test]
    fn only_expressions_name_secrets() {
        let wf = serde_json::json!({
            "env": {"GLOBAL": "${{ secrets.Global_Token }}"},
            "jobs": {
                "build": {
                    "condition": "secrets.GATE != ''",
                    "env": {"A": "${{ secrets.alpha }}", "B": "${{ secrets['beta'] }} and ${{ format('{0}', secrets . gamma) }}"},
                    "steps": [{"run": "echo secrets.NOT_THIS; echo ${{ steps.secrets.outputs.x }} ${{ my_secrets.no }}"}],
                    "timeout_minutes": {"Expr": "secrets.TIMEOUT"}
                },
                "other": {"env": {"X": "${{ secrets.OTHER }}"}}
            }
        });
        let refs = referenced_secrets(&wf, "build");
        assert_eq!(names(&refs), Some(vec!["ALPHA", "BETA", "GAMMA", "GATE", "GLOBAL_TOKEN", "TIMEOUT"]));
        assert_eq!(names(&referenced_secrets(&wf, "other")), Some(vec!["GLOBAL_TOKEN", "OTHER"]));
        assert_eq!(names(&referenced_secrets(&wf, "missing")), Some(vec!["GLOBAL_TOKEN"]));
    }

    #[test]
    fn the_whole_context_asks_for_every_secret() {
        for expr in ["${{ toJSON(secrets) }}", "${{ secrets[matrix.name] }}", "${{ secrets }}"] {
            let wf = serde_json::json!({"jobs": {"a": {"steps": [{"run": expr}]}}});
            assert_eq!(referenced_secrets(&wf, "a"), SecretRefs::All, "{expr}");
        }
    }
}
