//! Reusable workflows (`jobs.<id>.uses`), as GitHub runs them, by expansion when a run is
//! created: a calling job `build` becomes the called workflow's jobs, keyed `build/<job>` and
//! named `build / <name>`, plus the calling job itself, which runs nowhere and is completed by the
//! server once the called jobs have (`CallResult`: their overall result and the call's
//! `outputs`), so jobs that `needs: build` wait for the whole call and read its outputs.
//!
//! Each called job keeps the calls it is inside (`CallFrame`s, outermost first): the caller's
//! `with:` and `secrets:`, the called workflow's typed inputs and its own `env`. The `inputs` and
//! `secrets` of a called job are evaluated from those frames, outermost first
//! ([`callee_inputs`], [`callee_secrets`]), when its needs are known.
//!
//! Limits as GitHub's: four levels of workflows (the caller and three nested calls), 20 distinct
//! called workflows per run. A calling job with a matrix calls once per combination (keys
//! `caller/1/job`, names `caller (a, b) / job`); its matrix must be known when the run is created.

use indexmap::IndexMap;
use serde_json::Value as Json;

use crate::expr::{self, Dict, DictContext, Value};
use crate::load::places;
use crate::model::{CallFrame, CallResult, CallSecrets, InputKind, Job, Workflow};
use crate::template;

/// Levels of workflows: the caller and three nested calls.
pub const MAX_DEPTH: usize = 4;
/// Distinct reusable workflows one run may call.
pub const MAX_CALLED: usize = 20;

/// Finds a called workflow's text by the `uses:` naming it: `(path to show, text)`, or why not.
pub type Resolve<'a> = dyn FnMut(&str) -> Result<(String, String), String> + 'a;

/// Whether a `uses:` names a workflow in the same repository (read at the run's commit).
pub fn is_local(uses: &str) -> bool {
    uses.starts_with("./")
}

/// `owner/repo/.github/workflows/file.yml@ref`, split into (owner, repo, path, ref).
pub fn parse_remote(uses: &str) -> Option<(&str, &str, &str, &str)> {
    let (full, git_ref) = uses.split_once('@')?;
    let mut parts = full.splitn(3, '/');
    let (owner, repo, path) = (parts.next()?, parts.next()?, parts.next()?);
    (!owner.is_empty() && !repo.is_empty() && path.starts_with(".github/workflows/") && !git_ref.is_empty())
        .then_some((owner, repo, path, git_ref))
}

/// The `uses:` of every calling job of a workflow.
pub fn called(workflow: &Workflow) -> Vec<String> {
    workflow.jobs.values().filter_map(|j| j.uses.clone()).collect()
}

/// Replaces every calling job with the called workflow's jobs (recursively), or says why the
/// workflow cannot run (a called file that is missing, invalid or not reusable; an input or
/// secret the call gets wrong).
pub fn expand_calls(workflow: &Workflow, resolve: &mut Resolve<'_>) -> Result<Workflow, String> {
    if workflow.jobs.values().all(|j| j.uses.is_none()) {
        return Ok(workflow.clone());
    }
    let mut out = IndexMap::new();
    let mut seen = Vec::new();
    expand(&workflow.jobs, "", &[], 1, resolve, &mut seen, &mut out)?;
    Ok(Workflow { jobs: out, ..workflow.clone() })
}

fn expand(
    jobs: &IndexMap<String, Job>,
    prefix: &str,
    frames: &[CallFrame],
    depth: usize,
    resolve: &mut Resolve<'_>,
    seen: &mut Vec<String>,
    out: &mut IndexMap<String, Job>,
) -> Result<(), String> {
    for (id, job) in jobs {
        let key = format!("{prefix}{id}");
        let needs: Vec<String> = job.needs.iter().map(|n| format!("{prefix}{n}")).collect();
        let Some(uses) = &job.uses else {
            let mut job = job.clone();
            job.needs = needs;
            job.call = frames.to_vec();
            out.insert(key, job);
            continue;
        };
        if depth >= MAX_DEPTH {
            return Err(format!(
                "job '{key}' calls '{uses}', past the limit of {MAX_DEPTH} levels of reusable workflows"
            ));
        }
        // A calling job with a matrix calls the workflow once per combination; the matrix must
        // be known when the run is created (no expressions in it).
        let combinations: Vec<Option<crate::matrix::Combination>> = match job
            .strategy
            .as_ref()
            .and_then(|s| s.matrix.as_ref())
        {
            None => vec![None],
            Some(matrix) => {
                let values = crate::plan::matrix_values(matrix, &Dict::new()).map_err(|e| {
                    format!("job '{key}' calls '{uses}' with a matrix this installation cannot expand when the run is created: {e}")
                })?;
                crate::matrix::expand(&values).map_err(|e| format!("job '{key}': {e}"))?.into_iter().map(Some).collect()
            }
        };
        if !seen.contains(uses) {
            seen.push(uses.clone());
            if seen.len() > MAX_CALLED {
                return Err(format!("the run calls more than {MAX_CALLED} reusable workflows"));
            }
        }
        let (path, text) = resolve(uses).map_err(|e| format!("job '{key}': {e}"))?;
        let callee = crate::load(&text).map_err(|diags| {
            let lines: Vec<String> = diags.iter().take(10).map(|d| d.display_in(&path).to_string()).collect();
            format!("job '{key}' calls '{uses}', which is not valid:\n{}", lines.join("\n"))
        })?;
        let Some(spec) = &callee.on.workflow_call else {
            return Err(format!("job '{key}' calls '{path}', which is not reusable: its 'on' has no 'workflow_call'"));
        };
        for name in job.with.keys() {
            if !spec.inputs.keys().any(|k| k.eq_ignore_ascii_case(name)) {
                return Err(format!("job '{key}': Invalid input, {name} is not defined in the referenced workflow."));
            }
        }
        for (name, input) in &spec.inputs {
            if input.required && input.default.is_none() && !job.with.keys().any(|k| k.eq_ignore_ascii_case(name)) {
                return Err(format!("job '{key}': Input {name} is required, but not provided while calling."));
            }
        }
        match &job.secrets {
            Some(CallSecrets::Map(map)) => {
                for name in map.keys() {
                    if !spec.secrets.keys().any(|k| k.eq_ignore_ascii_case(name)) {
                        return Err(format!(
                            "job '{key}': Invalid secret, {name} is not defined in the referenced workflow."
                        ));
                    }
                }
                for (name, required) in &spec.secrets {
                    if *required && !map.keys().any(|k| k.eq_ignore_ascii_case(name)) {
                        return Err(format!("job '{key}': Secret {name} is required, but not provided while calling."));
                    }
                }
            }
            Some(CallSecrets::Inherit) => {}
            None => {
                if let Some((name, _)) = spec.secrets.iter().find(|(_, required)| **required) {
                    return Err(format!("job '{key}': Secret {name} is required, but not provided while calling."));
                }
            }
        }
        let caller_name = job.name.clone().filter(|n| !template::has_expression(n)).unwrap_or_else(|| id.clone());
        let mut all_keys: Vec<String> = Vec::new();
        let mut prefixes: Vec<String> = Vec::new();
        for (index, combination) in combinations.iter().enumerate() {
            let (inner_prefix, shown_caller) = match combination {
                None => (format!("{key}/"), caller_name.clone()),
                Some(c) => (format!("{key}/{}/", index + 1), crate::plan::with_combination(&caller_name, c)),
            };
            let frame = CallFrame {
                caller: key.clone(),
                uses: uses.clone(),
                with: job.with.clone(),
                secrets: job.secrets.clone(),
                inputs: spec.inputs.clone(),
                caller_needs: needs.clone(),
                matrix: combination.as_ref().map(crate::plan::combination_to_json),
                env: callee.env.clone(),
            };
            let mut inner_frames = frames.to_vec();
            inner_frames.push(frame);
            let mut inner = IndexMap::new();
            expand(&callee.jobs, &inner_prefix, &inner_frames, depth + 1, resolve, seen, &mut inner)?;
            all_keys.extend(inner.keys().cloned());
            for (inner_key, mut inner_job) in inner {
                if inner_job.needs.is_empty() {
                    // A first job of the call waits for what the caller waits for, and runs only
                    // if the caller's `if:` holds.
                    inner_job.needs = needs.clone();
                    inner_job.condition = match (&job.condition, inner_job.condition.take()) {
                        (Some(outer), Some(own)) => Some(format!("({outer}) && ({own})")),
                        (Some(outer), None) => Some(outer.clone()),
                        (None, own) => own,
                    };
                }
                inner_job.defaults.shell = inner_job.defaults.shell.take().or_else(|| callee.defaults.shell.clone());
                inner_job.defaults.working_directory =
                    inner_job.defaults.working_directory.take().or_else(|| callee.defaults.working_directory.clone());
                let own = inner_key.strip_prefix(&inner_prefix).unwrap_or(&inner_key).to_owned();
                let own_name = inner_job.name.clone().unwrap_or(own);
                inner_job.name = Some(format!("{shown_caller} / {own_name}"));
                out.insert(inner_key, inner_job);
            }
            prefixes.push(inner_prefix);
        }
        let mut result = job.clone();
        result.uses = None;
        result.with = IndexMap::new();
        result.secrets = None;
        result.condition = None;
        result.needs = all_keys;
        result.strategy = None;
        result.runs_on = crate::model::RunsOn::Labels(Vec::new());
        result.steps = Vec::new();
        result.call = frames.to_vec();
        result.call_result =
            Some(CallResult { prefixes, jobs: callee.jobs.keys().cloned().collect(), outputs: spec.outputs.clone() });
        out.insert(key, result);
    }
    Ok(())
}

/// The values a called job's expressions see at one level of calls.
#[derive(Debug, Clone, Default)]
pub struct CallValues {
    pub github: Value,
    pub vars: Value,
    /// The run's `inputs` at the top; each call's evaluated inputs below it.
    pub inputs: Value,
    pub secrets: Value,
}

/// A called job's `inputs` and `secrets`: the frames evaluated outermost first (each caller's
/// `with:` and `secrets:` over the level above, typed and defaulted by the called workflow's
/// inputs). `needs_of` gives the `needs` context of a caller's needs; `Err` says why the job
/// cannot run (as GitHub fails a call whose inputs do not evaluate or have the wrong type).
pub fn callee_values(
    frames: &[CallFrame],
    top: CallValues,
    needs_of: &dyn Fn(&[String]) -> Json,
) -> Result<CallValues, String> {
    let mut level = top;
    for frame in frames {
        let mut names = Dict::new();
        names.insert("github", level.github.clone());
        names.insert("vars", level.vars.clone());
        names.insert("inputs", level.inputs.clone());
        names.insert("secrets", level.secrets.clone());
        names.insert("needs", Value::from_json(needs_of(&frame.caller_needs)));
        names.insert("matrix", frame.matrix.clone().map_or(Value::Null, Value::from_json));
        let options = places::JOB_CALL.options();
        let eval = |t: &str, names: &Dict| -> Result<Value, String> {
            template::evaluate(t, &options, &DictContext(names.clone())).map_err(|e| e.message)
        };
        let mut inputs = Dict::new();
        for (name, spec) in &frame.inputs {
            let given = frame.with.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v);
            let value = match (given, &spec.default) {
                (Some(v), _) => json_value(v, &names, &eval).map_err(|e| format!("with.{name}: {e}"))?,
                (None, Some(default)) => {
                    // Defaults see `github` (and `inputs` is not there yet).
                    json_value(default, &names, &eval).map_err(|e| format!("the default of input {name}: {e}"))?
                }
                (None, None) => match spec.kind {
                    InputKind::Boolean => Value::from(false),
                    InputKind::Number => Value::from(0.0),
                    _ => Value::from(""),
                },
            };
            inputs.insert(name.clone(), typed(name, spec.kind, value, &frame.uses)?);
        }
        let secrets = match &frame.secrets {
            Some(CallSecrets::Inherit) => level.secrets.clone(),
            Some(CallSecrets::Map(map)) => {
                let mut out = Dict::new();
                for (name, template_text) in map {
                    let v = eval(template_text, &names).map_err(|e| format!("secrets.{name}: {e}"))?;
                    out.insert(name.clone(), Value::from(v.to_coerced_string().as_str()));
                }
                Value::object(out)
            }
            None => Value::object(Dict::new()),
        };
        level = CallValues { github: level.github, vars: level.vars, inputs: Value::object(inputs), secrets };
    }
    Ok(level)
}

fn json_value(v: &Json, names: &Dict, eval: &dyn Fn(&str, &Dict) -> Result<Value, String>) -> Result<Value, String> {
    match v {
        Json::String(t) => eval(t, names),
        other => Ok(Value::from_json(other.clone())),
    }
}

/// An input's value as its declared type, as GitHub converts them (a string `"true"` is a
/// boolean input's `true`; anything else is an error).
fn typed(name: &str, kind: InputKind, value: Value, uses: &str) -> Result<Value, String> {
    let wrong = |v: &Value, want: &str| {
        format!("the input '{name}' of '{uses}' is a {want}, but the call gives {}", v.to_json_compact())
    };
    match kind {
        InputKind::Boolean => match &value {
            Value::Bool(_) => Ok(value),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(Value::from(true)),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(Value::from(false)),
            other => Err(wrong(other, "boolean")),
        },
        InputKind::Number => match &value {
            Value::Number(_) => Ok(value),
            Value::String(s) => s.trim().parse::<f64>().map(Value::from).map_err(|_| wrong(&value, "number")),
            other => Err(wrong(other, "number")),
        },
        _ => match &value {
            Value::String(_) => Ok(value),
            Value::Bool(_) | Value::Number(_) | Value::Null => Ok(Value::from(value.to_coerced_string().as_str())),
            other => Err(wrong(other, "string")),
        },
    }
}

/// Whether any caller's `with:` (or `secrets:`) of these frames reads `needs`: the called job's
/// inputs are then known only once those jobs have finished.
pub fn frames_read_needs(frames: &[CallFrame]) -> bool {
    let reads = |t: &str| {
        template::split(t).is_ok_and(|parts| {
            parts.iter().any(|p| {
                matches!(p, template::Segment::Expr(e)
                    if expr::parse(e, &places::JOB_CALL.options()).is_ok_and(|x| x.references("needs")))
            })
        })
    };
    frames.iter().any(|f| {
        f.with.values().any(|v| matches!(v, Json::String(t) if reads(t)))
            || matches!(&f.secrets, Some(CallSecrets::Map(m)) if m.values().any(|t| reads(t)))
    })
}

/// A calling job's outputs: the called workflow's `outputs` over its jobs' results and outputs
/// (`jobs` is `{<id>: {result, outputs}}`).
pub fn call_outputs(result: &CallResult, jobs: Json, github: Value, inputs: Value) -> IndexMap<String, String> {
    let mut names = Dict::new();
    names.insert("jobs", Value::from_json(jobs));
    names.insert("github", github);
    names.insert("inputs", inputs);
    names.insert("vars", Value::object(Dict::new()));
    let options = places::CALL_OUTPUTS.options();
    result
        .outputs
        .iter()
        .filter_map(|(name, t)| {
            template::evaluate(t, &options, &DictContext(names.clone()))
                .ok()
                .map(|v| (name.clone(), v.to_coerced_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALLEE: &str = "on:\n  workflow_call:\n    inputs:\n      target: {type: string, required: true}\n      fast: {type: boolean, default: false}\n    secrets:\n      token: {required: true}\n    outputs:\n      where:\n        value: ${{ jobs.deploy.outputs.where }}\nenv:\n  LEVEL: callee\njobs:\n  build:\n    runs-on: ubuntu-latest\n    steps: [{run: make}]\n  deploy:\n    needs: build\n    runs-on: ubuntu-latest\n    outputs: {where: '${{ steps.d.outputs.where }}'}\n    steps: [{id: d, run: deploy}]\n";

    fn resolver(uses: &str) -> Result<(String, String), String> {
        match uses {
            "./.github/workflows/deploy.yml" => Ok((".github/workflows/deploy.yml".into(), CALLEE.into())),
            "./.github/workflows/plain.yml" => {
                Ok((".github/workflows/plain.yml".into(), "on: push\njobs:\n  a:\n    runs-on: x\n".into()))
            }
            other => Err(format!("no workflow '{other}'")),
        }
    }

    fn caller(extra: &str) -> Workflow {
        crate::load(&format!(
            "on: push\njobs:\n  setup:\n    runs-on: x\n  ship:\n    needs: setup\n    uses: ./.github/workflows/deploy.yml\n{extra}  after:\n    needs: ship\n    runs-on: x\n"
        ))
        .expect("caller loads")
    }

    #[test]
    fn a_call_becomes_the_called_jobs_and_a_result_job() {
        let wf = caller("    with: {target: prod}\n    secrets: {token: '${{ secrets.DEPLOY }}'}\n");
        let expanded = expand_calls(&wf, &mut resolver).expect("expands");
        let keys: Vec<&str> = expanded.jobs.keys().map(String::as_str).collect();
        assert_eq!(keys, ["setup", "ship/build", "ship/deploy", "ship", "after"]);
        let build = &expanded.jobs["ship/build"];
        assert_eq!(build.needs, ["setup"]);
        assert_eq!(build.name.as_deref(), Some("ship / build"));
        assert_eq!(build.call.len(), 1);
        assert_eq!(build.call[0].env["LEVEL"], "callee");
        assert_eq!(expanded.jobs["ship/deploy"].needs, ["ship/build"]);
        let ship = &expanded.jobs["ship"];
        assert_eq!(ship.needs, ["ship/build", "ship/deploy"]);
        assert_eq!(ship.call_result.as_ref().map(|r| r.prefixes.clone()), Some(vec!["ship/".to_owned()]));
        assert_eq!(expanded.jobs["after"].needs, ["ship"]);

        let top = CallValues {
            github: Value::object(Dict::new()),
            vars: Value::object(Dict::new()),
            inputs: Value::Null,
            secrets: Value::object([("DEPLOY".to_owned(), Value::from("s3cr3t"))].into_iter().collect()),
        };
        let values = callee_values(&build.call, top, &|_| Json::Object(Default::default())).expect("values");
        assert_eq!(values.inputs.to_json(), serde_json::json!({"target": "prod", "fast": false}));
        assert_eq!(values.secrets.to_json(), serde_json::json!({"token": "s3cr3t"}));
    }

    #[test]
    fn a_calling_job_with_a_matrix_calls_once_per_combination() {
        let wf = caller(
            "    strategy:\n      matrix:\n        target: [eu, us]\n    with: {target: '${{ matrix.target }}'}\n    secrets: inherit\n",
        );
        let expanded = expand_calls(&wf, &mut resolver).expect("expands");
        let keys: Vec<&str> = expanded.jobs.keys().map(String::as_str).collect();
        assert_eq!(keys, ["setup", "ship/1/build", "ship/1/deploy", "ship/2/build", "ship/2/deploy", "ship", "after"]);
        assert_eq!(expanded.jobs["ship/2/deploy"].name.as_deref(), Some("ship (us) / deploy"));
        assert_eq!(expanded.jobs["ship/2/deploy"].needs, ["ship/2/build"]);
        let ship = &expanded.jobs["ship"];
        assert!(ship.strategy.is_none());
        assert_eq!(ship.needs.len(), 4);
        let frames = &expanded.jobs["ship/2/build"].call;
        let values =
            callee_values(frames, CallValues::default(), &|_| Json::Object(Default::default())).expect("values");
        assert_eq!(values.inputs.to_json()["target"], "us");
    }

    #[test]
    fn calls_that_get_it_wrong_are_refused_as_github_refuses_them() {
        let err = |extra: &str| expand_calls(&caller(extra), &mut resolver).expect_err("refused");
        assert!(err("    secrets: inherit\n").contains("Input target is required"));
        assert!(err("    with: {target: a, nope: 1}\n    secrets: inherit\n").contains("Invalid input, nope"));
        assert!(err("    with: {target: a}\n").contains("Secret token is required"));
        let plain = crate::load(
            "on: push\njobs:\n  c:\n    uses: ./.github/workflows/plain.yml\n  d:\n    uses: ./.github/workflows/none.yml\n",
        )
        .expect("loads");
        let e = expand_calls(&plain, &mut resolver).expect_err("refused");
        assert!(e.contains("not reusable"), "{e}");
    }

    #[test]
    fn inputs_take_their_declared_types() {
        assert_eq!(typed("f", InputKind::Boolean, Value::from("true"), "x").expect("ok").to_json(), Json::Bool(true));
        assert!(typed("f", InputKind::Boolean, Value::from("yes"), "x").is_err());
        assert_eq!(typed("n", InputKind::Number, Value::from("3"), "x").expect("ok").to_json(), serde_json::json!(3.0));
        assert_eq!(parse_remote("o/r/.github/workflows/a.yml@v1"), Some(("o", "r", ".github/workflows/a.yml", "v1")));
        assert_eq!(parse_remote("o/r/a.yml@v1"), None);
    }
}
