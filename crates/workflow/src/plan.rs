//! From a workflow and the event that started it, the jobs to run: matrix combinations expanded,
//! names and `runs-on` evaluated where GitHub evaluates them (when the run is created), in an
//! order where every job comes after the jobs it needs.

use indexmap::IndexMap;
use serde_json::Value as Json;

use crate::expr::{self, Dict, DictContext, Value};
use crate::load::places;
use crate::matrix::{self, Combination, MatrixValues};
use crate::model::{AxisValues, BoolOrExpr, Concurrency, Job, ListOrExpr, Matrix, NumberOrExpr, RunsOn, Workflow};
use crate::template;

/// What is known when a run is created.
#[derive(Debug, Clone, Default)]
pub struct PlanContext {
    pub github: Value,
    pub inputs: Value,
    pub vars: Value,
    /// The `needs` context, once the jobs a deferred job needs have finished (`Null` when a run
    /// is created: nothing has run yet).
    pub needs: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlannedJob {
    /// The job's key in the workflow.
    pub job_id: String,
    /// Shown to people: the job's name, with matrix values in parentheses.
    pub display_name: String,
    /// This instance's matrix values, when the job has a matrix.
    pub matrix: Option<Combination>,
    /// Job ids this job waits for.
    pub needs: Vec<String>,
    /// Runner labels, or `None` when they depend on the outputs of jobs it needs.
    pub runs_on: Option<Vec<String>>,
    /// Set when the job's matrix depends on `needs` and expands only when they finish.
    pub deferred: bool,
    /// The job's concurrency group, evaluated, when it has one.
    pub concurrency: Option<ConcurrencyGroup>,
    /// `strategy.fail-fast`, evaluated: a failed instance cancels the others (default true).
    pub fail_fast: bool,
    /// `strategy.max-parallel`, evaluated: at most this many instances run at once.
    pub max_parallel: Option<i64>,
    /// Set when the job cannot run as written (its matrix, name or `runs-on` failed to
    /// evaluate, or its matrix is empty): why. Such a job fails without running, as on GitHub.
    pub failure: Option<String>,
}

impl PlannedJob {
    fn failed(id: &str, job: &Job, why: String) -> PlannedJob {
        PlannedJob {
            job_id: id.to_owned(),
            display_name: job.name.clone().filter(|n| !template::has_expression(n)).unwrap_or_else(|| id.to_owned()),
            matrix: None,
            needs: job.needs.clone(),
            runs_on: None,
            deferred: false,
            concurrency: None,
            fail_fast: true,
            max_parallel: None,
            failure: Some(why),
        }
    }
}

/// An evaluated `concurrency:`: at most one run (or job) of a group runs, and one waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConcurrencyGroup {
    pub group: String,
    pub cancel_in_progress: bool,
}

/// What a run is, once planned.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// `run-name` evaluated, when the workflow has one.
    pub run_name: Option<String>,
    /// The workflow-level concurrency group.
    pub concurrency: Option<ConcurrencyGroup>,
    pub jobs: Vec<PlannedJob>,
}

/// What the `github` context of a run says about the event that started it.
#[derive(Debug, Clone, Default)]
pub struct GithubEvent<'a> {
    /// `push`, `workflow_dispatch`, `schedule`.
    pub event_name: &'a str,
    /// The full ref, `refs/heads/main`.
    pub git_ref: &'a str,
    /// The commit, in hex (empty when unknown, as in `workflow plan`).
    pub sha: &'a str,
    /// `owner/name` (empty when unknown).
    pub repository: &'a str,
    pub actor: &'a str,
    /// The workflow's name.
    pub workflow: &'a str,
    /// Pull request events: the head and base branches (empty otherwise, as on GitHub).
    pub head_ref: &'a str,
    pub base_ref: &'a str,
}

/// GitHub's `ref_name`: the branch or tag name of a full ref, slashes and all (other refs as they
/// are).
pub fn ref_name(git_ref: &str) -> &str {
    git_ref.strip_prefix("refs/heads/").or_else(|| git_ref.strip_prefix("refs/tags/")).unwrap_or(git_ref)
}

/// The `github` context known when a run is created.
pub fn github_context(event: &GithubEvent<'_>) -> Value {
    let mut github = Dict::new();
    github.insert("event_name", Value::from(event.event_name));
    github.insert("ref", Value::from(event.git_ref));
    github.insert("ref_name", Value::from(ref_name(event.git_ref)));
    let ref_type = if event.git_ref.starts_with("refs/tags/") { "tag" } else { "branch" };
    github.insert("ref_type", Value::from(ref_type));
    github.insert("sha", Value::from(event.sha));
    github.insert("repository", Value::from(event.repository));
    let owner = event.repository.split('/').next().unwrap_or_default();
    github.insert("repository_owner", Value::from(owner));
    github.insert("actor", Value::from(event.actor));
    github.insert("triggering_actor", Value::from(event.actor));
    github.insert("workflow", Value::from(event.workflow));
    github.insert("head_ref", Value::from(event.head_ref));
    github.insert("base_ref", Value::from(event.base_ref));
    Value::object(github)
}

/// Plans a run of `workflow`: its name, its concurrency group and every job. Errors name the job.
pub fn plan(workflow: &Workflow, ctx: &PlanContext) -> Result<Plan, String> {
    let base = base_context(ctx);
    let run_name = workflow
        .run_name
        .as_ref()
        .map(|t| eval_template(t, &places::RUN_NAME.options(), &base).map(|v| v.to_coerced_string()))
        .transpose()
        .map_err(|e| format!("run-name: {e}"))?;
    let concurrency = workflow
        .concurrency
        .as_ref()
        .map(|c| concurrency_group(c, &places::WORKFLOW_CONCURRENCY.options(), &base))
        .transpose()
        .map_err(|e| format!("concurrency: {e}"))?;
    let mut jobs = Vec::new();
    for id in topological_order(workflow) {
        let job = &workflow.jobs[&id];
        if let Some(why) = &job.refused {
            jobs.push(PlannedJob::failed(&id, job, why.clone()));
            continue;
        }
        match plan_job(&id, job, ctx) {
            Ok(planned) => jobs.extend(planned),
            Err(e) => jobs.push(PlannedJob::failed(&id, job, format!("Error when evaluating job '{id}': {e}"))),
        }
    }
    Ok(Plan { run_name, concurrency, jobs })
}

/// Plans a job whose matrix or `runs-on` needs the outputs of the jobs it needs, now that they
/// have finished (`ctx.needs` holds their results and outputs): its instances, or why it fails.
pub fn plan_deferred(workflow: &Workflow, job_id: &str, ctx: &PlanContext) -> Result<Vec<PlannedJob>, String> {
    let job = workflow.jobs.get(job_id).ok_or_else(|| format!("the workflow has no job '{job_id}'"))?;
    if let Some(why) = &job.refused {
        return Err(why.clone());
    }
    let planned = plan_job(job_id, job, ctx).map_err(|e| format!("Error when evaluating job '{job_id}': {e}"))?;
    if planned.iter().any(|p| p.deferred) {
        return Err(format!("job '{job_id}' still depends on jobs that have not finished"));
    }
    Ok(planned)
}

fn eval_template(t: &str, options: &expr::ParseOptions<'_>, names: &Dict) -> Result<Value, String> {
    template::evaluate(t, options, &DictContext(names.clone())).map_err(|e| e.message)
}

fn concurrency_group(
    c: &Concurrency,
    options: &expr::ParseOptions<'_>,
    names: &Dict,
) -> Result<ConcurrencyGroup, String> {
    let group = eval_template(&c.group, options, names)?.to_coerced_string();
    let cancel_in_progress = match &c.cancel_in_progress {
        BoolOrExpr::Value(b) => *b,
        BoolOrExpr::Expr(e) => eval_template(&format!("${{{{ {e} }}}}"), options, names)?.is_truthy(),
    };
    Ok(ConcurrencyGroup { group, cancel_in_progress })
}

/// Job ids in file order, each after all the jobs it needs. The loader has rejected cycles.
pub fn topological_order(workflow: &Workflow) -> Vec<String> {
    let mut done: Vec<String> = Vec::with_capacity(workflow.jobs.len());
    while done.len() < workflow.jobs.len() {
        let next = workflow.jobs.iter().find(|(id, job)| {
            !done.contains(id) && job.needs.iter().all(|n| done.contains(n) || !workflow.jobs.contains_key(n))
        });
        match next {
            Some((id, _)) => done.push(id.clone()),
            // Only reachable with a cycle, which loading rejects; stop rather than spin.
            None => break,
        }
    }
    done
}

fn base_context(ctx: &PlanContext) -> Dict {
    let mut d = Dict::new();
    d.insert("github", ctx.github.clone());
    d.insert("inputs", ctx.inputs.clone());
    d.insert("vars", ctx.vars.clone());
    let needs = match &ctx.needs {
        Value::Null => Value::object(Dict::new()),
        known => known.clone(),
    };
    d.insert("needs", needs);
    d
}

fn eval_expr(source: &str, names: &Dict) -> Result<Value, String> {
    let options = places::JOB.options();
    let parsed = expr::parse(source, &options).map_err(|e| e.message)?;
    expr::evaluate(&parsed, &DictContext(names.clone()), source).map_err(|e| e.message)
}

fn references_needs(source: &str) -> bool {
    expr::parse(source, &places::JOB.options()).is_ok_and(|e| e.references("needs"))
}

fn template_references_needs(text: &str) -> bool {
    template::split(text)
        .is_ok_and(|parts| parts.iter().any(|p| matches!(p, template::Segment::Expr(e) if references_needs(e))))
}

fn json_references_needs(v: &Json) -> bool {
    match v {
        Json::String(s) => template_references_needs(s),
        Json::Array(items) => items.iter().any(json_references_needs),
        Json::Object(map) => map.iter().any(|(k, v)| template_references_needs(k) || json_references_needs(v)),
        _ => false,
    }
}

/// `strategy.fail-fast` and `strategy.max-parallel`, evaluated.
fn strategy_limits(job: &Job, base: &Dict) -> Result<(bool, Option<i64>), String> {
    let Some(strategy) = &job.strategy else { return Ok((true, None)) };
    let options = places::JOB_STRATEGY.options();
    let fail_fast = match &strategy.fail_fast {
        BoolOrExpr::Value(b) => *b,
        BoolOrExpr::Expr(e) => eval_template(&format!("${{{{ {e} }}}}"), &options, base)
            .map_err(|m| format!("strategy.fail-fast: {m}"))?
            .is_truthy(),
    };
    let max_parallel = match &strategy.max_parallel {
        None => None,
        Some(NumberOrExpr::Value(n)) => Some(*n),
        Some(NumberOrExpr::Expr(e)) => {
            let value = eval_template(&format!("${{{{ {e} }}}}"), &options, base)
                .map_err(|m| format!("strategy.max-parallel: {m}"))?;
            let text = value.to_coerced_string();
            Some(text.trim().parse::<f64>().map_err(|_| format!("strategy.max-parallel: {text:?} is not a number"))?)
        }
    };
    match max_parallel {
        Some(n) if n.is_nan() || n < 1.0 => Err(format!("strategy.max-parallel: {n} is not 1 or more")),
        Some(n) => Ok((fail_fast, Some(n.min(1e6) as i64))),
        None => Ok((fail_fast, None)),
    }
}

fn plan_job(id: &str, job: &Job, ctx: &PlanContext) -> Result<Vec<PlannedJob>, String> {
    // Calls are expanded before planning (`call::expand_calls`); one left here was not.
    if let Some(uses) = &job.uses {
        return Err(format!("it calls the reusable workflow '{uses}', which was not expanded"));
    }
    if job.container.is_some() || !job.services.is_empty() {
        return Err(
            "it asks for a container or service containers, which this installation's runners cannot start yet"
                .to_owned(),
        );
    }
    let mut base = base_context(ctx);
    if !job.call.is_empty() {
        // A called job's expressions see the inputs its callers gave; when a caller's `with:`
        // reads `needs`, they are known only once those jobs have finished.
        if matches!(ctx.needs, Value::Null) && crate::call::frames_read_needs(&job.call) && !job.needs.is_empty() {
            return Ok(vec![PlannedJob {
                job_id: id.to_owned(),
                display_name: job
                    .name
                    .clone()
                    .filter(|n| !template::has_expression(n))
                    .unwrap_or_else(|| id.to_owned()),
                matrix: None,
                needs: job.needs.clone(),
                runs_on: None,
                deferred: true,
                concurrency: None,
                fail_fast: true,
                max_parallel: None,
                failure: None,
            }]);
        }
        let known = ctx.needs.to_json();
        let needs_of = |keys: &[String]| -> Json {
            let mut out = serde_json::Map::new();
            for key in keys {
                if let Some(v) = known.get(key) {
                    out.insert(key.clone(), v.clone());
                }
            }
            Json::Object(out)
        };
        let top = crate::call::CallValues {
            github: ctx.github.clone(),
            vars: ctx.vars.clone(),
            inputs: ctx.inputs.clone(),
            secrets: Value::object(Dict::new()),
        };
        let values = crate::call::callee_values(&job.call, top, &needs_of)?;
        base.set("inputs", values.inputs);
    }
    let base = base;
    let (fail_fast, max_parallel) = strategy_limits(job, &base)?;
    let matrix = job.strategy.as_ref().and_then(|s| s.matrix.as_ref());
    let waits_for_needs = matrix.is_some_and(matrix_references_needs)
        || matches!(&job.runs_on, RunsOn::Expr(e) if references_needs(e))
        || matches!(&job.runs_on, RunsOn::Labels(labels) if labels.iter().any(|l| template_references_needs(l)));
    if waits_for_needs && matches!(ctx.needs, Value::Null) && !job.needs.is_empty() {
        // Expanded when the jobs it needs have finished (`plan_deferred`).
        return Ok(vec![PlannedJob {
            job_id: id.to_owned(),
            display_name: job.name.clone().filter(|n| !template::has_expression(n)).unwrap_or_else(|| id.to_owned()),
            matrix: None,
            needs: job.needs.clone(),
            runs_on: None,
            deferred: true,
            concurrency: None,
            fail_fast,
            max_parallel,
            failure: None,
        }]);
    }
    let combinations: Option<Vec<Combination>> = match matrix {
        None => None,
        Some(matrix) => Some(matrix::expand(&matrix_values(matrix, &base)?)?),
    };
    let instances: Vec<Option<Combination>> = match combinations {
        None => vec![None],
        Some(list) => list.into_iter().map(Some).collect(),
    };
    let mut out = Vec::new();
    for combo in instances {
        let mut names = base.clone();
        if let Some(combo) = &combo {
            let matrix: Dict = combo.iter().map(|(k, v)| (k.clone(), Value::from_json(v.clone()))).collect();
            names.set("matrix", Value::object(matrix));
        }
        let display_name = display_name(id, job, combo.as_ref(), &names)?;
        let runs_on = match &job.runs_on {
            RunsOn::Expr(e) => Some(labels_from(eval_expr(e, &names)?)?),
            RunsOn::Labels(labels) => {
                let mut out = Vec::new();
                for label in labels {
                    out.extend(labels_from(
                        template::evaluate(label, &places::JOB.options(), &DictContext(names.clone()))
                            .map_err(|e| e.message)?,
                    )?);
                }
                Some(out)
            }
        };
        let concurrency =
            job.concurrency.as_ref().map(|c| concurrency_group(c, &places::JOB.options(), &names)).transpose()?;
        out.push(PlannedJob {
            job_id: id.to_owned(),
            display_name,
            matrix: combo,
            needs: job.needs.clone(),
            runs_on,
            deferred: false,
            concurrency,
            fail_fast,
            max_parallel,
            failure: None,
        });
    }
    Ok(out)
}

fn matrix_references_needs(m: &Matrix) -> bool {
    match m {
        Matrix::Expr(e) => references_needs(e),
        Matrix::Values { axes, include, exclude } => {
            axes.keys().any(|k| template_references_needs(k))
                || axes.values().any(|a| match a {
                    AxisValues::Expr(e) => references_needs(e),
                    AxisValues::List(items) => items.iter().any(json_references_needs),
                })
                || [include, exclude].iter().any(|l| match l {
                    ListOrExpr::Expr(e) => references_needs(e),
                    ListOrExpr::List(items) => items.iter().any(|c| c.values().any(json_references_needs)),
                })
        }
    }
}

/// Evaluates whatever expressions a matrix holds into plain values.
pub(crate) fn matrix_values(m: &Matrix, names: &Dict) -> Result<MatrixValues, String> {
    let to_json = |v: Value| v.to_json();
    let list_of_objects = |v: Value, what: &str| -> Result<Vec<Combination>, String> {
        match to_json(v) {
            Json::Array(items) => items
                .into_iter()
                .map(|i| match i {
                    Json::Object(map) => Ok(map.into_iter().collect()),
                    other => Err(format!("matrix {what} entries must be objects, got {other}")),
                })
                .collect(),
            Json::Null => Ok(Vec::new()),
            other => Err(format!("matrix {what} must be a list, got {other}")),
        }
    };
    match m {
        Matrix::Expr(e) => {
            let Json::Object(map) = to_json(eval_expr(e, names)?) else {
                return Err("the matrix expression must give an object".to_owned());
            };
            let mut out = MatrixValues::default();
            for (k, v) in map {
                match k.as_str() {
                    "include" => out.include = list_of_objects(Value::from_json(v), "include")?,
                    "exclude" => out.exclude = list_of_objects(Value::from_json(v), "exclude")?,
                    _ => match v {
                        Json::Array(items) => {
                            out.axes.insert(k, items);
                        }
                        other => return Err(format!("matrix vector '{k}' must be a list, got {other}")),
                    },
                }
            }
            Ok(out)
        }
        Matrix::Values { axes, include, exclude } => {
            let mut out = MatrixValues::default();
            for (name, values) in axes {
                let is_insert = template::single_expression(name).is_some_and(|e| e.eq_ignore_ascii_case("insert"));
                if is_insert {
                    // `${{ insert }}: ${{ … }}` adds the vectors of an object.
                    let AxisValues::Expr(e) = values else { continue };
                    let Json::Object(map) = to_json(eval_expr(e, names)?) else {
                        return Err("an inserted matrix must be an object".to_owned());
                    };
                    for (k, v) in map {
                        let Json::Array(items) = v else {
                            return Err(format!("matrix vector '{k}' must be a list, got {v}"));
                        };
                        out.axes.insert(k, items);
                    }
                    continue;
                }
                // A vector's name may be computed too.
                let name = if template::has_expression(name) {
                    template::evaluate(name, &places::JOB_STRATEGY.options(), &DictContext(names.clone()))
                        .map_err(|e| e.message)?
                        .to_coerced_string()
                } else {
                    name.clone()
                };
                let list = match values {
                    AxisValues::List(items) => match eval_json_templates(&Json::Array(items.clone()), names)? {
                        Json::Array(items) => items,
                        other => vec![other],
                    },
                    AxisValues::Expr(e) => match to_json(eval_expr(e, names)?) {
                        Json::Array(items) => items,
                        other => return Err(format!("matrix vector '{name}' must be a list, got {other}")),
                    },
                };
                out.axes.insert(name, list);
            }
            let lists = |l: &ListOrExpr, what: &str| -> Result<Vec<Combination>, String> {
                match l {
                    ListOrExpr::List(items) => items
                        .iter()
                        .map(|c| c.iter().map(|(k, v)| Ok((k.clone(), eval_json_templates(v, names)?))).collect())
                        .collect(),
                    ListOrExpr::Expr(e) => list_of_objects(eval_expr(e, names)?, what),
                }
            };
            out.include = lists(include, "include")?;
            out.exclude = lists(exclude, "exclude")?;
            Ok(out)
        }
    }
}

/// Evaluates templates inside a literal value as GitHub's template evaluator does: a sequence
/// item that is one expression giving a sequence is spliced in, and a `${{ insert }}` key merges
/// the entries of the object its value gives.
fn eval_json_templates(v: &Json, names: &Dict) -> Result<Json, String> {
    let eval = |s: &str| {
        template::evaluate(s, &places::JOB_STRATEGY.options(), &DictContext(names.clone()))
            .map_err(|e| e.message)
            .map(|v| v.to_json())
    };
    Ok(match v {
        Json::String(s) if template::has_expression(s) => eval(s)?,
        Json::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Json::String(s) if template::single_expression(s).is_some() => match eval(s)? {
                        Json::Array(spliced) => out.extend(spliced),
                        one => out.push(one),
                    },
                    other => out.push(eval_json_templates(other, names)?),
                }
            }
            Json::Array(out)
        }
        Json::Object(map) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                if template::single_expression(k).is_some_and(|e| e.eq_ignore_ascii_case("insert")) {
                    match eval_json_templates(v, names)? {
                        Json::Object(inserted) => out.extend(inserted),
                        other => return Err(format!("an inserted value must be an object, got {other}")),
                    }
                } else {
                    out.insert(k.clone(), eval_json_templates(v, names)?);
                }
            }
            Json::Object(out)
        }
        other => other.clone(),
    })
}

fn labels_from(v: Value) -> Result<Vec<String>, String> {
    match &v {
        Value::String(s) if !s.trim().is_empty() => Ok(vec![s.clone()]),
        Value::Array(items) | Value::Filtered(items) if !items.is_empty() => {
            Ok(items.iter().map(Value::to_coerced_string).collect())
        }
        _ => Err(format!("runs-on must give a label or a list of labels, got {}", v.to_json_compact())),
    }
}

/// GitHub's display name: `name` evaluated (or the job id), and for matrix jobs whose name does
/// not mention the matrix, the values in parentheses: `build (ubuntu-latest, 18)`.
fn display_name(id: &str, job: &Job, combo: Option<&Combination>, names: &Dict) -> Result<String, String> {
    let base = match &job.name {
        Some(name) => template::evaluate(name, &places::JOB.options(), &DictContext(names.clone()))
            .map_err(|e| e.message)?
            .to_coerced_string(),
        None => id.to_owned(),
    };
    let mentions_matrix = job.name.as_deref().is_some_and(|n| n.contains("matrix"));
    match combo {
        Some(combo) if !mentions_matrix && !combo.is_empty() => Ok(with_combination(&base, combo)),
        _ => Ok(base),
    }
}

/// A name with a matrix combination's values after it, as GitHub shows an instance:
/// `build (linux, 18)`.
pub(crate) fn with_combination(name: &str, combo: &Combination) -> String {
    let values: Vec<String> = combo
        .values()
        .map(|v| match v {
            Json::String(s) => s.clone(),
            other => Value::from_json(other.clone()).to_coerced_string(),
        })
        .collect();
    format!("{name} ({})", values.join(", "))
}

/// Matrix values of a job as an ordered map, for callers that store them.
pub fn combination_to_json(combo: &IndexMap<String, Json>) -> Json {
    Json::Object(combo.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}
