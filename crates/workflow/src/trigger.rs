//! Which workflows an event starts.

use crate::glob::FilterList;
use crate::model::{DEFAULT_PULL_REQUEST_TYPES, PullRequestFilters, PushFilters, Workflow};

/// A push as the trigger matcher sees it.
#[derive(Debug, Clone, Copy)]
pub struct PushEvent<'a> {
    /// The full ref name, `refs/heads/main` or `refs/tags/v1`.
    pub git_ref: &'a str,
    /// Files changed by the push; `None` when unknown (path filters then let the push through).
    pub changed_paths: Option<&'a [String]>,
    /// The push deleted the ref.
    pub deleted: bool,
}

/// Whether `workflow` runs for this push, following GitHub's rules:
/// - deleted refs, and refs other than branches and tags, start nothing;
/// - with only branch filters, tag pushes do not run (and the other way round); with neither,
///   both do;
/// - path filters apply to branch pushes only: `paths` runs when any changed path is included,
///   `paths-ignore` runs unless every changed path is ignored.
pub fn push_triggers(workflow: &Workflow, event: &PushEvent<'_>) -> bool {
    match &workflow.on.push {
        None => false,
        Some(filters) => filters_match(filters, event),
    }
}

fn filters_match(f: &PushFilters, event: &PushEvent<'_>) -> bool {
    if event.deleted {
        return false;
    }
    let has_branch_filters = f.branches.is_some() || f.branches_ignore.is_some();
    let has_tag_filters = f.tags.is_some() || f.tags_ignore.is_some();
    // Patterns were validated when the workflow was loaded; an invalid one cannot match.
    let includes = |patterns: &Option<Vec<String>>, name: &str| {
        patterns.as_ref().and_then(|p| FilterList::new(p).ok()).is_some_and(|list| list.includes(name))
    };
    if let Some(branch) = event.git_ref.strip_prefix("refs/heads/") {
        if has_tag_filters && !has_branch_filters {
            return false;
        }
        if f.branches.is_some() && !includes(&f.branches, branch) {
            return false;
        }
        if f.branches_ignore.is_some() && includes(&f.branches_ignore, branch) {
            return false;
        }
        let Some(paths) = event.changed_paths else { return true };
        if f.paths.is_some() && !paths.iter().any(|p| includes(&f.paths, p)) {
            return false;
        }
        if f.paths_ignore.is_some() && !paths.is_empty() && paths.iter().all(|p| includes(&f.paths_ignore, p)) {
            return false;
        }
        true
    } else if let Some(tag) = event.git_ref.strip_prefix("refs/tags/") {
        if has_branch_filters && !has_tag_filters {
            return false;
        }
        if f.tags.is_some() && !includes(&f.tags, tag) {
            return false;
        }
        !(f.tags_ignore.is_some() && includes(&f.tags_ignore, tag))
    } else {
        false
    }
}

/// A pull request event as the trigger matcher sees it.
#[derive(Debug, Clone, Copy)]
pub struct PullRequestEvent<'a> {
    /// The activity: `opened`, `synchronize`, `closed`, …
    pub action: &'a str,
    /// The base branch's name (`main`).
    pub base_branch: &'a str,
    /// Files the pull request changes; `None` when unknown (path filters then let it through).
    pub changed_paths: Option<&'a [String]>,
}

/// Whether the `pull_request` (or, with `target`, `pull_request_target`) trigger of `workflow`
/// runs for this event, following GitHub's rules: the activity must be among `types` (by
/// default `opened`, `synchronize` and `reopened`), branch filters match the base branch, and
/// path filters the changed files (`paths`: any included; `paths-ignore`: not all ignored).
pub fn pull_request_triggers(workflow: &Workflow, target: bool, event: &PullRequestEvent<'_>) -> bool {
    let filters = if target { &workflow.on.pull_request_target } else { &workflow.on.pull_request };
    filters.as_ref().is_some_and(|f| pull_request_filters_match(f, event))
}

fn pull_request_filters_match(f: &PullRequestFilters, event: &PullRequestEvent<'_>) -> bool {
    let typed = match &f.types {
        Some(types) => types.iter().any(|t| t == event.action),
        None => DEFAULT_PULL_REQUEST_TYPES.contains(&event.action),
    };
    if !typed {
        return false;
    }
    let includes = |patterns: &Option<Vec<String>>, name: &str| {
        patterns.as_ref().and_then(|p| FilterList::new(p).ok()).is_some_and(|list| list.includes(name))
    };
    if f.branches.is_some() && !includes(&f.branches, event.base_branch) {
        return false;
    }
    if f.branches_ignore.is_some() && includes(&f.branches_ignore, event.base_branch) {
        return false;
    }
    let Some(paths) = event.changed_paths else { return true };
    if f.paths.is_some() && !paths.iter().any(|p| includes(&f.paths, p)) {
        return false;
    }
    !(f.paths_ignore.is_some() && !paths.is_empty() && paths.iter().all(|p| includes(&f.paths_ignore, p)))
}

/// The `inputs` of a `workflow_dispatch` run, from what the caller gave (JSON values or strings,
/// as GitHub accepts them), checked against the workflow's declared inputs: unknown names,
/// missing required inputs, values of the wrong type and choices not among the options are
/// errors, as `(input, message)`; absent inputs take their defaults. `None` when the workflow does
/// not run on `workflow_dispatch`.
pub fn dispatch_inputs(
    workflow: &Workflow,
    given: &serde_json::Map<String, serde_json::Value>,
) -> Option<Result<crate::expr::Value, Vec<(String, String)>>> {
    use crate::expr::{Dict, Value};
    use crate::model::InputKind;
    use serde_json::Value as Json;

    let declared = &workflow.on.workflow_dispatch.as_ref()?.inputs;
    let mut errors = Vec::new();
    for name in given.keys().filter(|k| !declared.contains_key(*k)) {
        errors.push((name.clone(), "this workflow declares no such input".to_owned()));
    }
    let mut inputs = Dict::new();
    for (name, input) in declared {
        let value = given.get(name).filter(|v| !v.is_null()).or(input.default.as_ref());
        let Some(value) = value else {
            if input.required {
                errors.push((name.clone(), "this input is required".to_owned()));
            } else {
                let empty = match input.kind {
                    InputKind::Boolean => Value::from(false),
                    _ => Value::from(""),
                };
                inputs.insert(name.clone(), empty);
            }
            continue;
        };
        let text = match value {
            Json::String(s) => Some(s.clone()),
            Json::Bool(b) => Some(b.to_string()),
            Json::Number(n) => Some(n.to_string()),
            _ => None,
        };
        let Some(text) = text else {
            errors.push((name.clone(), "give a string, number or boolean".to_owned()));
            continue;
        };
        let checked = match input.kind {
            InputKind::Boolean => match text.as_str() {
                "true" => Ok(Value::from(true)),
                "false" => Ok(Value::from(false)),
                _ => Err(format!("{text:?} is not true or false")),
            },
            InputKind::Number => {
                text.trim().parse::<f64>().map(Value::from).map_err(|_| format!("{text:?} is not a number"))
            }
            InputKind::Choice if !input.options.contains(&text) => {
                Err(format!("{text:?} is not one of the options: {}", input.options.join(", ")))
            }
            InputKind::String | InputKind::Choice | InputKind::Environment => Ok(Value::from(text.as_str())),
        };
        match checked {
            Ok(v) => {
                inputs.insert(name.clone(), v);
            }
            Err(message) => errors.push((name.clone(), message)),
        }
    }
    Some(if errors.is_empty() { Ok(Value::object(inputs)) } else { Err(errors) })
}

#[cfg(test)]
mod dispatch_tests {
    use super::dispatch_inputs;

    const WORKFLOW: &str = "on:
  workflow_dispatch:
    inputs:
      env:
        type: choice
        options: [staging, production]
        required: true
      dry:
        type: boolean
        default: true
      count:
        type: number
      note:
        type: string
jobs:
  go:
    runs-on: ubuntu-latest
    steps:
      - run: echo ${{ inputs.env }}
";

    fn given(json: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        json.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn inputs_are_checked_and_defaulted() {
        let wf = crate::load(WORKFLOW).expect("valid");
        let ok = dispatch_inputs(&wf, &given(serde_json::json!({"env": "staging", "count": "3"})))
            .expect("dispatchable")
            .expect("valid inputs");
        assert_eq!(
            ok.to_json(),
            serde_json::json!({"env": "staging", "dry": true, "count": 3.0, "note": ""}),
            "defaults filled"
        );
        let errors = dispatch_inputs(&wf, &given(serde_json::json!({"env": "qa", "dry": "maybe", "x": 1})))
            .expect("dispatchable")
            .expect_err("invalid");
        let names: Vec<&str> = errors.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["x", "env", "dry"]);
        let missing = dispatch_inputs(&wf, &given(serde_json::json!({}))).expect("dispatchable").expect_err("missing");
        assert_eq!(missing, [("env".to_owned(), "this input is required".to_owned())]);
        let push_only =
            crate::load("on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: x\n").expect("valid");
        assert!(dispatch_inputs(&push_only, &given(serde_json::json!({}))).is_none());
    }
}
