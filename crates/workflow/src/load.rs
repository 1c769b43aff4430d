//! Turning a workflow file into a validated [`Workflow`], or every problem found in it.
//!
//! Validation keeps going after a problem so one run reports all of them, each with its line and
//! column. Expressions are parsed where they stand, against the named values and functions that
//! GitHub makes available at that place (`matrix` in `runs-on`, `steps` in a step's `if`, …).

use indexmap::IndexMap;
use serde_json::Value as Json;

use crate::cron::Schedule;
use crate::diag::{Diagnostic, Pos};
use crate::expr::{FunctionSig, ParseOptions};
use crate::glob::Pattern;
use crate::model::*;
use crate::template;
use crate::yaml::{self, Node, NodeKind};

/// Where an expression stands decides what it may read.
#[derive(Debug, Clone, Copy)]
pub struct Place {
    pub named_values: &'static [&'static str],
    pub functions: &'static [FunctionSig],
}

impl Place {
    pub fn options(&self) -> ParseOptions<'static> {
        ParseOptions { named_values: self.named_values, extra_functions: self.functions }
    }
}

/// A job's `if:` may name the jobs whose status it asks about: `success('build', 'test')`.
const STATUS_FUNCTIONS: &[FunctionSig] = &[
    FunctionSig { name: "success", min_args: 0, max_args: 255 },
    FunctionSig { name: "failure", min_args: 0, max_args: 255 },
    FunctionSig { name: "always", min_args: 0, max_args: 0 },
    FunctionSig { name: "cancelled", min_args: 0, max_args: 0 },
];
const STEP_FUNCTIONS: &[FunctionSig] = &[FunctionSig { name: "hashfiles", min_args: 1, max_args: 255 }];
const STEP_IF_FUNCTIONS: &[FunctionSig] = &[
    FunctionSig { name: "success", min_args: 0, max_args: 0 },
    FunctionSig { name: "failure", min_args: 0, max_args: 0 },
    FunctionSig { name: "always", min_args: 0, max_args: 0 },
    FunctionSig { name: "cancelled", min_args: 0, max_args: 0 },
    FunctionSig { name: "hashfiles", min_args: 1, max_args: 255 },
];

/// GitHub's context availability table.
pub mod places {
    use super::*;

    pub const RUN_NAME: Place = Place { named_values: &["github", "inputs", "vars"], functions: &[] };
    pub const WORKFLOW_ENV: Place = Place { named_values: &["github", "secrets", "inputs", "vars"], functions: &[] };
    pub const WORKFLOW_CONCURRENCY: Place = Place { named_values: &["github", "inputs", "vars"], functions: &[] };
    pub const JOB_IF: Place =
        Place { named_values: &["github", "needs", "vars", "inputs"], functions: STATUS_FUNCTIONS };
    pub const JOB_STRATEGY: Place = Place { named_values: &["github", "needs", "vars", "inputs"], functions: &[] };
    pub const JOB: Place =
        Place { named_values: &["github", "needs", "strategy", "matrix", "vars", "inputs"], functions: &[] };
    pub const JOB_ENV: Place =
        Place { named_values: &["github", "needs", "strategy", "matrix", "vars", "secrets", "inputs"], functions: &[] };
    pub const JOB_CONTAINER: Place =
        Place { named_values: &["github", "needs", "strategy", "matrix", "vars", "inputs"], functions: &[] };
    pub const CONTAINER_ENV: Place = Place {
        named_values: &[
            "github", "needs", "strategy", "matrix", "job", "runner", "env", "vars", "secrets", "steps", "inputs",
        ],
        functions: &[],
    };
    pub const CONTAINER_CREDENTIALS: Place =
        Place { named_values: &["github", "inputs", "vars", "secrets", "env"], functions: &[] };
    /// A reusable workflow call's `with:` and `secrets:`.
    pub const JOB_CALL: Place =
        Place { named_values: &["github", "needs", "strategy", "matrix", "vars", "secrets", "inputs"], functions: &[] };
    pub const CALL_OUTPUTS: Place = Place { named_values: &["github", "inputs", "vars", "jobs"], functions: &[] };
    pub const JOB_DEFAULTS: Place =
        Place { named_values: &["github", "needs", "strategy", "matrix", "env", "vars", "inputs"], functions: &[] };
    pub const JOB_OUTPUTS: Place = Place {
        named_values: &[
            "github", "needs", "strategy", "matrix", "job", "runner", "env", "vars", "secrets", "steps", "inputs",
        ],
        functions: &[],
    };
    pub const STEP_IF: Place = Place {
        named_values: &["github", "needs", "strategy", "matrix", "job", "runner", "env", "vars", "steps", "inputs"],
        functions: STEP_IF_FUNCTIONS,
    };
    pub const STEP: Place = Place {
        named_values: &[
            "github", "needs", "strategy", "matrix", "job", "runner", "env", "vars", "secrets", "steps", "inputs",
        ],
        functions: STEP_FUNCTIONS,
    };
    /// The steps of a composite action (GitHub's `action_yaml.json`: no `secrets`, `vars` or
    /// `needs`; an action gets what it needs through its inputs).
    pub const ACTION_STEP: Place = Place {
        named_values: &["github", "inputs", "strategy", "matrix", "steps", "job", "runner", "env"],
        functions: STEP_FUNCTIONS,
    };
    pub const ACTION_STEP_IF: Place = Place {
        named_values: &["github", "inputs", "strategy", "matrix", "steps", "job", "runner", "env"],
        functions: STEP_IF_FUNCTIONS,
    };
    /// An action's `outputs.<id>.value`.
    pub const ACTION_OUTPUT: Place = Place {
        named_values: &["github", "inputs", "strategy", "matrix", "steps", "job", "runner", "env"],
        functions: &[],
    };
    /// An action input's `default`.
    pub const ACTION_INPUT_DEFAULT: Place =
        Place { named_values: &["github", "strategy", "matrix", "job", "runner"], functions: STEP_FUNCTIONS };
}

/// Longest chain of `needs` a workflow may have, and most jobs (GitHub allows 256 jobs).
pub const MAX_JOBS: usize = 256;
/// Longest string holding expressions (GitHub's limit on an expression, which such a string
/// becomes: `format('…', …)`).
pub const MAX_EXPRESSION_LENGTH: usize = 21_000;
/// Ids (of jobs and steps) must be shorter than this.
pub const MAX_ID_LENGTH: usize = 100;

/// Parses and validates a workflow file.
pub fn load(source: &str) -> Result<Workflow, Vec<Diagnostic>> {
    let root = yaml::parse(source).map_err(|d| vec![d])?;
    let mut loader = Loader { diags: Vec::new(), composite: false };
    let workflow = loader.workflow(&root);
    if loader.diags.is_empty() {
        Ok(workflow)
    } else {
        loader.diags.sort_by_key(|d| d.pos);
        Err(loader.diags)
    }
}

pub(crate) struct Loader {
    pub(crate) diags: Vec<Diagnostic>,
    /// Loading the steps of a composite action (`action.yml`): their expressions see the
    /// contexts an action's steps see, and a `run` step must name its shell.
    pub(crate) composite: bool,
}

fn is_valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// GitHub's rules for job and step ids, with its messages.
fn id_problem(id: &str) -> Option<String> {
    if !is_valid_id(id) || id.len() >= MAX_ID_LENGTH {
        Some(format!(
            "The identifier '{id}' is invalid. IDs may only contain alphanumeric characters, '_', and '-'. IDs must start with a letter or '_' and and must be less than {MAX_ID_LENGTH} characters."
        ))
    } else if id.starts_with("__") {
        Some(format!("The identifier '{id}' is invalid. IDs starting with '__' are reserved."))
    } else {
        None
    }
}

impl Loader {
    fn step_place(&self) -> Place {
        if self.composite { places::ACTION_STEP } else { places::STEP }
    }

    fn step_if_place(&self) -> Place {
        if self.composite { places::ACTION_STEP_IF } else { places::STEP_IF }
    }

    pub(crate) fn error(&mut self, pos: Pos, message: impl Into<String>) {
        self.diags.push(Diagnostic::new(pos, message));
    }

    /// The entries of a mapping, checking every key against `allowed`.
    pub(crate) fn mapping<'n>(&mut self, node: &'n Node, what: &str, allowed: &[&str]) -> &'n [(Node, Node)] {
        let Some(entries) = node.as_map() else {
            self.error(node.pos, format!("{what} must be a mapping, found {}", node.describe()));
            return &[];
        };
        if !allowed.is_empty() {
            for (key, _) in entries {
                let name = key.as_scalar().unwrap_or_default();
                if !allowed.contains(&name) {
                    self.error(
                        key.pos,
                        format!("unknown key '{name}' in {what}; expected one of: {}", allowed.join(", ")),
                    );
                }
            }
        }
        entries
    }

    /// Any scalar as a string (GitHub reads `name: 123` as "123"); the expressions in it must
    /// parse at `place`, or there must be none when `place` is `None`.
    pub(crate) fn string(&mut self, node: &Node, what: &str, place: Option<Place>) -> Option<String> {
        if node.is_null() {
            return Some(String::new());
        }
        let Some(text) = node.as_scalar() else {
            self.error(node.pos, format!("{what} must be a string, found {}", node.describe()));
            return None;
        };
        self.check_template(node.pos, text, what, place);
        Some(text.to_owned())
    }

    fn check_template(&mut self, pos: Pos, text: &str, what: &str, place: Option<Place>) {
        if !template::has_expression(text) {
            return;
        }
        if text.len() > MAX_EXPRESSION_LENGTH {
            self.error(pos, format!("Exceeded max expression length {MAX_EXPRESSION_LENGTH}"));
            return;
        }
        if template::single_expression(text).is_none_or(|e| !e.eq_ignore_ascii_case("insert"))
            && template::split(text).is_ok_and(|parts| {
                parts.iter().any(|p| matches!(p, template::Segment::Expr(e) if e.eq_ignore_ascii_case("insert")))
            })
        {
            self.error(pos, "The directive 'insert' is not allowed in this context. Directives are not supported for expressions that are embedded within a string. Directives are only supported when the entire value is an expression.");
            return;
        }
        match place {
            None => self.error(pos, format!("expressions are not allowed in {what}")),
            Some(place) => {
                if let Err(message) = template::check(text, &place.options()) {
                    self.error(pos, format!("{what}: {message}"));
                }
            }
        }
    }

    /// A scalar or a sequence of scalars, without expressions.
    fn string_list(&mut self, node: &Node, what: &str) -> Vec<String> {
        match &node.kind {
            NodeKind::Scalar { .. } => self.string(node, what, None).into_iter().collect(),
            NodeKind::Seq(items) => items.iter().filter_map(|item| self.string(item, what, None)).collect(),
            NodeKind::Map(_) => {
                self.error(node.pos, format!("{what} must be a string or a list of strings, found a mapping"));
                Vec::new()
            }
        }
    }

    fn patterns(&mut self, node: &Node, what: &str) -> Vec<String> {
        let list = self.string_list(node, what);
        if list.is_empty() && node.as_seq().is_some() {
            self.error(node.pos, format!("{what} must list at least one pattern"));
        }
        for pattern in &list {
            if let Err(e) = Pattern::new(pattern.strip_prefix('!').unwrap_or(pattern)) {
                self.error(node.pos, format!("{what}: {e}"));
            }
        }
        list
    }

    pub(crate) fn bool_or_expr(&mut self, node: &Node, what: &str, place: Place) -> Option<BoolOrExpr> {
        if let Some(b) = node.as_bool() {
            return Some(BoolOrExpr::Value(b));
        }
        if let Some(e) = node.as_scalar().and_then(template::single_expression) {
            self.check_template(node.pos, node.as_scalar().unwrap_or_default(), what, Some(place));
            return Some(BoolOrExpr::Expr(e.to_owned()));
        }
        self.error(node.pos, format!("{what} must be true, false or an expression, found {}", node.describe()));
        None
    }

    fn number_or_expr(&mut self, node: &Node, what: &str, place: Place) -> Option<NumberOrExpr> {
        if let Some(n) = node.as_number() {
            // GitHub takes any number here (even one that rounds to infinity); a run clamps it.
            return Some(NumberOrExpr::Value(n));
        }
        if let Some(e) = node.as_scalar().and_then(template::single_expression) {
            self.check_template(node.pos, node.as_scalar().unwrap_or_default(), what, Some(place));
            return Some(NumberOrExpr::Expr(e.to_owned()));
        }
        self.error(node.pos, format!("{what} must be a number or an expression, found {}", node.describe()));
        None
    }

    /// An `if:` condition: an expression with or without `${{ }}`.
    pub(crate) fn condition(&mut self, node: &Node, what: &str, place: Place) -> Option<String> {
        let Some(text) = node.as_scalar() else {
            self.error(node.pos, format!("{what} must be an expression, found {}", node.describe()));
            return None;
        };
        let expr = match template::single_expression(text) {
            Some(inner) => inner.to_owned(),
            // Text around `${{ }}` makes the whole condition a string, as on GitHub: `false ||
            // ${{ x }}` is `format('false || {0}', x)`, which is truthy whenever it is not empty.
            None if template::has_expression(text) => match template::as_format_call(text.trim()) {
                Ok(call) => call,
                Err(message) => {
                    self.error(node.pos, format!("{what}: {message}"));
                    return None;
                }
            },
            None => text.trim().to_owned(),
        };
        if expr.is_empty() && template::has_expression(text) {
            self.error(node.pos, "An expression was expected");
            return None;
        }
        // GitHub's implied `success() && (…)` unless the condition asks for a status itself.
        match crate::expr::effective_condition(Some(&expr), &place.options()) {
            Ok(condition) => Some(condition),
            Err(e) => {
                self.error(node.pos, format!("{what}: {}", e.message));
                None
            }
        }
    }

    pub(crate) fn env(&mut self, node: &Node, what: &str, place: Place) -> IndexMap<String, String> {
        let mut env = IndexMap::new();
        if let Some(e) = node.as_scalar().and_then(template::single_expression) {
            // `env: ${{ fromJSON(...) }}` is valid on GitHub; keep it under a reserved key.
            self.check_template(node.pos, node.as_scalar().unwrap_or_default(), what, Some(place));
            env.insert(String::new(), format!("${{{{ {e} }}}}"));
            return env;
        }
        for (key, value) in self.mapping(node, what, &[]) {
            let name = key.as_scalar().unwrap_or_default().to_owned();
            if template::has_expression(&name) {
                // `${{ insert }}: ${{ fromJSON(…) }}` merges an object's entries in here.
                if let Some(e) = value.as_scalar().and_then(template::single_expression)
                    && template::single_expression(&name).is_some_and(|k| k.eq_ignore_ascii_case("insert"))
                {
                    self.check_template(value.pos, value.as_scalar().unwrap_or_default(), what, Some(place));
                    env.insert(insert_key(env.len()), format!("${{{{ {e} }}}}"));
                } else {
                    self.error(key.pos, format!("expressions are not allowed in {what} names"));
                }
                continue;
            }
            if let Some(v) = self.string(value, &format!("{what}.{name}"), Some(place)) {
                env.insert(name, v);
            }
        }
        env
    }

    fn workflow(&mut self, root: &Node) -> Workflow {
        let allowed =
            ["name", "description", "run-name", "on", "env", "defaults", "concurrency", "permissions", "jobs"];
        let mut wf = Workflow {
            model_version: MODEL_VERSION,
            name: None,
            description: None,
            run_name: None,
            on: Triggers::default(),
            env: IndexMap::new(),
            defaults: RunDefaults::default(),
            concurrency: None,
            permissions: None,
            jobs: IndexMap::new(),
        };
        if root.as_map().is_none() {
            self.error(
                root.pos,
                format!("a workflow must be a mapping with 'on' and 'jobs', found {}", root.describe()),
            );
            return wf;
        }
        let mut seen_on = false;
        let mut seen_jobs = false;
        for (key, value) in self.mapping(root, "the workflow", &allowed) {
            match key.as_scalar().unwrap_or_default() {
                "name" => wf.name = self.string(value, "name", None),
                "description" => wf.description = self.string(value, "description", None),
                "run-name" => wf.run_name = self.string(value, "run-name", Some(places::RUN_NAME)),
                "on" => {
                    seen_on = true;
                    wf.on = self.triggers(value);
                }
                "env" => wf.env = self.env(value, "env", places::WORKFLOW_ENV),
                "defaults" => wf.defaults = self.defaults(value, "defaults", places::WORKFLOW_ENV),
                "concurrency" => wf.concurrency = self.concurrency(value, "concurrency", places::WORKFLOW_CONCURRENCY),
                "permissions" => wf.permissions = self.permissions(value, "permissions"),
                "jobs" => {
                    seen_jobs = true;
                    wf.jobs = self.jobs(value);
                }
                _ => {}
            }
        }
        if !seen_on {
            self.error(root.pos, "the workflow has no 'on' section: say which events trigger it");
        }
        if !seen_jobs {
            self.error(root.pos, "the workflow has no 'jobs' section");
        }
        wf
    }

    fn triggers(&mut self, node: &Node) -> Triggers {
        let mut triggers = Triggers::default();
        let mut add = |this: &mut Self, event: &str, config: Option<&Node>, pos: Pos| match event {
            "push" => triggers.push = Some(config.map(|c| this.push_filters(c)).unwrap_or_default()),
            "pull_request" => {
                triggers.pull_request = Some(config.map(|c| this.pull_request_filters(c, event)).unwrap_or_default())
            }
            "pull_request_target" => {
                triggers.pull_request_target =
                    Some(config.map(|c| this.pull_request_filters(c, event)).unwrap_or_default())
            }
            "workflow_dispatch" => {
                triggers.workflow_dispatch = Some(config.map(|c| this.dispatch(c)).unwrap_or_default())
            }
            "workflow_call" => triggers.workflow_call = Some(config.map(|c| this.workflow_call(c)).unwrap_or_default()),
            "schedule" => match config {
                Some(c) => triggers.schedule = this.schedule(c),
                None => this.error(pos, "'schedule' needs a list of '- cron: ...' entries"),
            },
            other if template::has_expression(other) => this.error(pos, "expressions are not allowed in 'on'"),
            other if is_valid_id(other) => triggers.other.push(other.to_owned()),
            other => this.error(pos, format!("'{other}' is not an event name")),
        };
        match &node.kind {
            NodeKind::Scalar { text, .. } => add(self, text, None, node.pos),
            NodeKind::Seq(items) => {
                for item in items {
                    match item.as_scalar() {
                        Some(event) => add(self, event, None, item.pos),
                        None => self.error(item.pos, "events in a list under 'on' must be names"),
                    }
                }
            }
            NodeKind::Map(entries) => {
                for (key, value) in entries {
                    let event = key.as_scalar().unwrap_or_default().to_owned();
                    add(self, &event, (!value.is_null()).then_some(value), key.pos);
                }
            }
        }
        if triggers.push.is_none()
            && triggers.pull_request.is_none()
            && triggers.pull_request_target.is_none()
            && triggers.workflow_dispatch.is_none()
            && triggers.workflow_call.is_none()
            && triggers.schedule.is_empty()
            && triggers.other.is_empty()
        {
            self.error(node.pos, "'on' names no events");
        }
        triggers
    }

    fn push_filters(&mut self, node: &Node) -> PushFilters {
        let allowed = ["branches", "branches-ignore", "tags", "tags-ignore", "paths", "paths-ignore"];
        let mut f = PushFilters::default();
        for (key, value) in self.mapping(node, "on.push", &allowed) {
            let name = key.as_scalar().unwrap_or_default();
            let what = format!("on.push.{name}");
            let list = Some(self.patterns(value, &what));
            match name {
                "branches" => f.branches = list,
                "branches-ignore" => f.branches_ignore = list,
                "tags" => f.tags = list,
                "tags-ignore" => f.tags_ignore = list,
                "paths" => f.paths = list,
                "paths-ignore" => f.paths_ignore = list,
                _ => {}
            }
        }
        for (a, b, x, y) in [
            (&f.branches, &f.branches_ignore, "branches", "branches-ignore"),
            (&f.tags, &f.tags_ignore, "tags", "tags-ignore"),
            (&f.paths, &f.paths_ignore, "paths", "paths-ignore"),
        ] {
            if a.is_some() && b.is_some() {
                self.error(
                    node.pos,
                    format!("on.push cannot use both '{x}' and '{y}'; use '{x}' with '!' patterns instead"),
                );
            }
        }
        f
    }

    fn pull_request_filters(&mut self, node: &Node, event: &str) -> PullRequestFilters {
        let allowed = ["types", "branches", "branches-ignore", "paths", "paths-ignore"];
        let mut f = PullRequestFilters::default();
        for (key, value) in self.mapping(node, &format!("on.{event}"), &allowed) {
            let name = key.as_scalar().unwrap_or_default();
            let what = format!("on.{event}.{name}");
            if name == "types" {
                let types: Vec<(String, Pos)> = match &value.kind {
                    NodeKind::Scalar { text, .. } => vec![(text.clone(), value.pos)],
                    NodeKind::Seq(items) => {
                        items.iter().filter_map(|i| i.as_scalar().map(|t| (t.to_owned(), i.pos))).collect()
                    }
                    NodeKind::Map(_) => {
                        self.error(value.pos, format!("{what} is an activity type or a list of them"));
                        Vec::new()
                    }
                };
                for (t, pos) in &types {
                    if !PULL_REQUEST_TYPES.contains(&t.as_str()) {
                        self.error(*pos, format!("'{t}' is not an activity type of {event}"));
                    }
                }
                f.types = Some(types.into_iter().map(|(t, _)| t).collect());
                continue;
            }
            let list = Some(self.patterns(value, &what));
            match name {
                "branches" => f.branches = list,
                "branches-ignore" => f.branches_ignore = list,
                "paths" => f.paths = list,
                "paths-ignore" => f.paths_ignore = list,
                _ => {}
            }
        }
        for (a, b, x, y) in [
            (&f.branches, &f.branches_ignore, "branches", "branches-ignore"),
            (&f.paths, &f.paths_ignore, "paths", "paths-ignore"),
        ] {
            if a.is_some() && b.is_some() {
                self.error(
                    node.pos,
                    format!("on.{event} cannot use both '{x}' and '{y}'; use '{x}' with '!' patterns instead"),
                );
            }
        }
        f
    }

    fn dispatch(&mut self, node: &Node) -> Dispatch {
        let mut dispatch = Dispatch::default();
        // GitHub ignores keys it does not know here, and takes `inputs:` (or an input) left empty.
        for (key, value) in self.mapping(node, "on.workflow_dispatch", &[]) {
            if key.as_scalar() != Some("inputs") || value.is_null() {
                continue;
            }
            for (name_node, spec) in self.mapping(value, "on.workflow_dispatch.inputs", &[]) {
                let name = name_node.as_scalar().unwrap_or_default().to_owned();
                if !is_valid_id(&name) {
                    self.error(name_node.pos, format!("input name '{name}' must start with a letter or '_' and contain only letters, digits, '-' and '_'"));
                }
                let what = format!("input '{name}'");
                let mut input = DispatchInput {
                    description: None,
                    required: false,
                    default: None,
                    kind: InputKind::String,
                    options: Vec::new(),
                };
                let no_keys: &[(Node, Node)] = &[];
                let spec_entries = if spec.is_null() {
                    no_keys
                } else {
                    self.mapping(spec, &what, &["description", "required", "default", "type", "options"])
                };
                for (k, v) in spec_entries {
                    match k.as_scalar().unwrap_or_default() {
                        "description" => input.description = self.string(v, "description", None),
                        "required" => match v.as_bool() {
                            Some(b) => input.required = b,
                            None => self.error(v.pos, format!("{what}: 'required' must be true or false")),
                        },
                        "default" => input.default = Some(v.to_json()),
                        "type" => {
                            input.kind = match v.as_scalar().unwrap_or_default() {
                                "string" => InputKind::String,
                                "boolean" => InputKind::Boolean,
                                "number" => InputKind::Number,
                                "choice" => InputKind::Choice,
                                "environment" => InputKind::Environment,
                                other => {
                                    self.error(v.pos, format!("{what}: unknown type '{other}'; expected string, boolean, number, choice or environment"));
                                    InputKind::String
                                }
                            }
                        }
                        "options" => input.options = self.string_list(v, "options"),
                        _ => {}
                    }
                }
                if input.kind == InputKind::Choice && input.options.is_empty() {
                    self.error(spec.pos, format!("{what} is a choice but lists no options"));
                }
                if let (InputKind::Choice, Some(Json::String(d))) = (input.kind, &input.default)
                    && !input.options.contains(d)
                {
                    self.error(spec.pos, format!("{what}: default '{d}' is not one of its options"));
                }
                dispatch.inputs.insert(name, input);
            }
        }
        dispatch
    }

    /// `on.workflow_call`: typed inputs, secrets and outputs, checked as GitHub checks them.
    fn workflow_call(&mut self, node: &Node) -> WorkflowCall {
        let mut call = WorkflowCall::default();
        for (key, value) in self.mapping(node, "on.workflow_call", &["inputs", "secrets", "outputs"]) {
            if value.is_null() {
                continue;
            }
            match key.as_scalar().unwrap_or_default() {
                "inputs" => {
                    for (name_node, spec) in self.mapping(value, "on.workflow_call.inputs", &[]) {
                        let name = name_node.as_scalar().unwrap_or_default().to_owned();
                        let what = format!("on.workflow_call input '{name}'");
                        let mut input =
                            CallInput { description: None, required: false, default: None, kind: InputKind::String };
                        let mut typed = false;
                        for (k, v) in self.mapping(spec, &what, &["description", "required", "default", "type"]) {
                            match k.as_scalar().unwrap_or_default() {
                                "description" => input.description = self.string(v, "description", None),
                                "required" => match v.as_bool() {
                                    Some(b) => input.required = b,
                                    None => self.error(v.pos, format!("{what}: 'required' must be true or false")),
                                },
                                "default" => {
                                    self.check_json_templates(v, &what, places::RUN_NAME);
                                    input.default = Some(v.to_json());
                                }
                                "type" => {
                                    typed = true;
                                    input.kind = match v.as_scalar().unwrap_or_default() {
                                        "string" => InputKind::String,
                                        "boolean" => InputKind::Boolean,
                                        "number" => InputKind::Number,
                                        other => {
                                            self.error(v.pos, format!("{what}: unexpected type '{other}'; expected boolean, number or string"));
                                            InputKind::String
                                        }
                                    }
                                }
                                _ => {}
                            }
                        }
                        if !typed && spec.as_map().is_some() {
                            self.error(spec.pos, format!("{what}: required property is missing: type"));
                        }
                        call.inputs.insert(name, input);
                    }
                }
                "secrets" => {
                    for (name_node, spec) in self.mapping(value, "on.workflow_call.secrets", &[]) {
                        let name = name_node.as_scalar().unwrap_or_default().to_owned();
                        let mut required = false;
                        if !spec.is_null() {
                            let what = format!("on.workflow_call secret '{name}'");
                            for (k, v) in self.mapping(spec, &what, &["description", "required"]) {
                                if k.as_scalar() == Some("required") {
                                    match v.as_bool() {
                                        Some(b) => required = b,
                                        None => self.error(v.pos, format!("{what}: 'required' must be true or false")),
                                    }
                                }
                            }
                        }
                        call.secrets.insert(name, required);
                    }
                }
                "outputs" => {
                    for (name_node, spec) in self.mapping(value, "on.workflow_call.outputs", &[]) {
                        let name = name_node.as_scalar().unwrap_or_default().to_owned();
                        let what = format!("on.workflow_call output '{name}'");
                        let mut output = None;
                        for (k, v) in self.mapping(spec, &what, &["description", "value"]) {
                            if k.as_scalar() == Some("value") {
                                output = self.string(v, &what, Some(places::CALL_OUTPUTS));
                            }
                        }
                        match output {
                            Some(value) => {
                                call.outputs.insert(name, value);
                            }
                            None if spec.as_map().is_some() => {
                                self.error(spec.pos, format!("{what}: required property is missing: value"))
                            }
                            None => {}
                        }
                    }
                }
                _ => {}
            }
        }
        call
    }

    fn schedule(&mut self, node: &Node) -> Vec<CronEntry> {
        let Some(items) = node.as_seq() else {
            self.error(node.pos, "'schedule' must be a list of '- cron: ...' entries");
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items {
            for (key, value) in self.mapping(item, "a schedule entry", &["cron"]) {
                if key.as_scalar() != Some("cron") {
                    continue;
                }
                let Some(cron) = self.string(value, "cron", None) else { continue };
                match Schedule::parse(&cron) {
                    Ok(schedule) => out.push(CronEntry { cron, schedule }),
                    Err(e) => self.error(value.pos, e),
                }
            }
        }
        out
    }

    fn defaults(&mut self, node: &Node, what: &str, place: Place) -> RunDefaults {
        let mut d = RunDefaults::default();
        for (key, value) in self.mapping(node, what, &["run"]) {
            if key.as_scalar() != Some("run") {
                continue;
            }
            for (k, v) in self.mapping(value, &format!("{what}.run"), &["shell", "working-directory"]) {
                match k.as_scalar().unwrap_or_default() {
                    "shell" => d.shell = self.string(v, "shell", Some(place)),
                    "working-directory" => d.working_directory = self.string(v, "working-directory", Some(place)),
                    _ => {}
                }
            }
        }
        d
    }

    fn concurrency(&mut self, node: &Node, what: &str, place: Place) -> Option<Concurrency> {
        if node.as_scalar().is_some() {
            let group = self.string(node, what, Some(place))?;
            return Some(Concurrency { group, cancel_in_progress: BoolOrExpr::Value(false) });
        }
        let mut group = None;
        let mut cancel = BoolOrExpr::Value(false);
        for (key, value) in self.mapping(node, what, &["group", "cancel-in-progress", "queue"]) {
            match key.as_scalar().unwrap_or_default() {
                "group" => group = self.string(value, &format!("{what}.group"), Some(place)),
                // How many runs may wait (GitHub's `single`, the default, or `max`); this
                // installation keeps one waiting, as with `single`.
                "queue" if !matches!(value.as_scalar(), Some("single" | "max")) => {
                    self.error(value.pos, format!("{what}.queue must be 'single' or 'max'"))
                }
                "cancel-in-progress" => {
                    cancel = self.bool_or_expr(value, &format!("{what}.cancel-in-progress"), place).unwrap_or(cancel)
                }
                _ => {}
            }
        }
        match group {
            Some(group) => Some(Concurrency { group, cancel_in_progress: cancel }),
            None => {
                self.error(node.pos, format!("{what} needs a 'group'"));
                None
            }
        }
    }

    fn permissions(&mut self, node: &Node, what: &str) -> Option<Permissions> {
        const SCOPES: [&str; 15] = [
            "actions",
            "attestations",
            "checks",
            "contents",
            "deployments",
            "discussions",
            "id-token",
            "issues",
            "models",
            "packages",
            "pages",
            "pull-requests",
            "repository-projects",
            "security-events",
            "statuses",
        ];
        match node.as_scalar() {
            Some("read-all") => return Some(Permissions::ReadAll),
            Some("write-all") => return Some(Permissions::WriteAll),
            Some(other) => {
                self.error(
                    node.pos,
                    format!("{what} must be read-all, write-all or a mapping of scopes, found '{other}'"),
                );
                return None;
            }
            None => {}
        }
        let mut scopes = IndexMap::new();
        for (key, value) in self.mapping(node, what, &SCOPES) {
            let access = match value.as_scalar() {
                Some("read") => Access::Read,
                Some("write") => Access::Write,
                Some("none") => Access::None,
                _ => {
                    self.error(
                        value.pos,
                        format!("{what}.{}: expected read, write or none", key.as_scalar().unwrap_or_default()),
                    );
                    continue;
                }
            };
            scopes.insert(key.as_scalar().unwrap_or_default().to_owned(), access);
        }
        Some(Permissions::Scopes(scopes))
    }

    fn jobs(&mut self, node: &Node) -> IndexMap<String, Job> {
        let mut jobs = IndexMap::new();
        let entries = self.mapping(node, "jobs", &[]);
        if entries.is_empty() && node.as_map().is_some() {
            self.error(node.pos, "'jobs' must define at least one job");
        }
        if entries.len() > MAX_JOBS {
            self.error(
                node.pos,
                format!("a workflow may have at most {MAX_JOBS} jobs; this one has {}", entries.len()),
            );
        }
        let mut seen: Vec<String> = Vec::new();
        for (key, value) in entries {
            let id = key.as_scalar().unwrap_or_default().to_owned();
            if let Some(problem) = id_problem(&id) {
                self.error(key.pos, problem);
            } else if seen.iter().any(|s| s.eq_ignore_ascii_case(&id)) {
                // Job ids are case-insensitive (`needs`, `jobs.<id>` in expressions).
                self.error(key.pos, format!("'{id}' is already defined"));
                continue;
            }
            seen.push(id.clone());
            if let Some(job) = self.job(&id, key.pos, value) {
                jobs.insert(id, job);
            }
        }
        // `needs` must name jobs, without cycles.
        for (id, job) in &jobs {
            for need in &job.needs {
                if !jobs.keys().any(|k| k == need) {
                    self.error(job.pos, format!("job '{id}' needs '{need}', which is not a job in this workflow"));
                }
            }
        }
        if let Some(cycle) = find_cycle(&jobs) {
            let first = jobs.get(&cycle[0]).map_or(node.pos, |j| j.pos);
            self.error(first, format!("jobs depend on each other in a cycle: {}", cycle.join(" -> ")));
        }
        jobs
    }

    fn job(&mut self, id: &str, pos: Pos, node: &Node) -> Option<Job> {
        let allowed = [
            "name",
            "needs",
            "if",
            "runs-on",
            "env",
            "defaults",
            "timeout-minutes",
            "cancel-timeout-minutes",
            "continue-on-error",
            "strategy",
            "outputs",
            "concurrency",
            "environment",
            "permissions",
            "container",
            "services",
            "steps",
            "snapshot",
            "uses",
            "with",
            "secrets",
            "retry",
        ];
        let what = format!("job '{id}'");
        let entries = self.mapping(node, &what, &allowed);
        node.as_map()?;
        let mut job = Job {
            pos,
            name: None,
            needs: Vec::new(),
            condition: None,
            runs_on: RunsOn::Labels(Vec::new()),
            env: IndexMap::new(),
            defaults: RunDefaults::default(),
            timeout_minutes: NumberOrExpr::Value(DEFAULT_JOB_TIMEOUT_MINUTES),
            cancel_timeout_minutes: None,
            continue_on_error: BoolOrExpr::Value(false),
            strategy: None,
            outputs: IndexMap::new(),
            concurrency: None,
            environment: None,
            permissions: None,
            container: None,
            services: IndexMap::new(),
            uses: None,
            with: IndexMap::new(),
            secrets: None,
            call: Vec::new(),
            call_result: None,
            refused: None,
            steps: Vec::new(),
            retry: None,
        };
        let mut has_runs_on = false;
        let mut has_steps = false;
        let mut has_snapshot = false;
        for (key, value) in entries {
            let k = key.as_scalar().unwrap_or_default();
            let field = format!("{what}: {k}");
            match k {
                "name" => job.name = self.string(value, &field, Some(places::JOB)),
                "needs" => job.needs = self.string_list(value, &field),
                "if" => job.condition = self.condition(value, &field, places::JOB_IF),
                "runs-on" => {
                    has_runs_on = true;
                    job.runs_on = self.runs_on(value, &field);
                }
                "env" => job.env = self.env(value, &field, places::JOB_ENV),
                "defaults" => job.defaults = self.defaults(value, &field, places::JOB_DEFAULTS),
                "timeout-minutes" => {
                    job.timeout_minutes = self.number_or_expr(value, &field, places::JOB).unwrap_or(job.timeout_minutes)
                }
                "cancel-timeout-minutes" => {
                    job.cancel_timeout_minutes = self.number_or_expr(value, &field, places::JOB)
                }
                "snapshot" => {
                    // Saving the runner as a custom image (GitHub-hosted larger runners): checked,
                    // but there is nothing to snapshot on this installation's runners.
                    has_snapshot = true;
                    self.snapshot(value, &field);
                }
                "continue-on-error" => {
                    job.continue_on_error =
                        self.bool_or_expr(value, &field, places::JOB).unwrap_or(job.continue_on_error)
                }
                "strategy" => job.strategy = self.strategy(value, &field),
                "outputs" => {
                    for (name, v) in self.mapping(value, &field, &[]) {
                        let out = name.as_scalar().unwrap_or_default().to_owned();
                        if let Some(text) = self.string(v, &format!("{what}: outputs.{out}"), Some(places::JOB_OUTPUTS))
                        {
                            job.outputs.insert(out, text);
                        }
                    }
                }
                "concurrency" => job.concurrency = self.concurrency(value, &field, places::JOB),
                "environment" => job.environment = self.environment(value, &field),
                "permissions" => job.permissions = self.permissions(value, &field),
                "container" => {
                    self.container(value, &field);
                    job.container = Some(value.to_json());
                }
                "services" => {
                    for (name, v) in self.mapping(value, &field, &[]) {
                        let service = format!("{field}.{}", name.as_scalar().unwrap_or_default());
                        self.container(v, &service);
                        job.services.insert(name.as_scalar().unwrap_or_default().to_owned(), v.to_json());
                    }
                }
                "steps" => {
                    has_steps = true;
                    job.steps = self.steps(value, &what);
                }
                "uses" => job.uses = self.string(value, &field, None),
                "secrets" if value.as_scalar() == Some("inherit") => job.secrets = Some(CallSecrets::Inherit),
                "secrets" if value.as_scalar().is_some() => self.error(
                    value.pos,
                    format!(
                        "{field} must be 'inherit' or a mapping of secrets, found '{}'",
                        value.as_scalar().unwrap_or_default()
                    ),
                ),
                "with" | "secrets" => {
                    self.check_json_templates(value, &field, places::JOB_CALL);
                    let entries = self.mapping(value, &field, &[]);
                    if k == "with" {
                        job.with = entries
                            .iter()
                            .map(|(k, v)| (k.as_scalar().unwrap_or_default().to_owned(), v.to_json()))
                            .collect();
                    } else {
                        let map = entries
                            .iter()
                            .map(|(k, v)| {
                                let text = match v.to_json() {
                                    Json::String(s) => s,
                                    other => other.to_string(),
                                };
                                (k.as_scalar().unwrap_or_default().to_owned(), text)
                            })
                            .collect();
                        job.secrets = Some(CallSecrets::Map(map));
                    }
                }
                "retry" => job.retry = self.retry(value, &field),
                _ => {}
            }
        }
        if job.uses.is_some() {
            if has_steps || has_runs_on {
                self.error(
                    pos,
                    format!("{what} calls a reusable workflow with 'uses', so it cannot have 'runs-on' or 'steps'"),
                );
            }
        } else if !has_runs_on {
            self.error(pos, format!("{what} has neither 'runs-on' nor 'uses'"));
        }
        // A job without steps is valid (GitHub's schema makes `steps` optional); it succeeds at
        // once when it runs.
        let _ = (has_steps, has_snapshot);
        Some(job)
    }

    fn runs_on(&mut self, node: &Node, what: &str) -> RunsOn {
        if let Some(e) = node.as_scalar().and_then(template::single_expression) {
            self.check_template(node.pos, node.as_scalar().unwrap_or_default(), what, Some(places::JOB));
            return RunsOn::Expr(e.to_owned());
        }
        if node.as_map().is_some() {
            // `runs-on: {group: ..., labels: [...]}`: runner groups are not modelled; labels count.
            let mut labels = Vec::new();
            for (k, v) in self.mapping(node, what, &["group", "labels"]) {
                match k.as_scalar() {
                    Some("labels") => labels = self.labels(v, what),
                    Some("group") => {
                        let group = v.as_scalar().unwrap_or_default();
                        if let Some((prefix, name)) = group.split_once('/')
                            && !template::has_expression(group)
                        {
                            // `org/`, `organization/`, `ent/` or `enterprise/` name one group.
                            if !["org", "organization", "ent", "enterprise"].contains(&prefix) || name.contains('/') {
                                self.error(v.pos, format!("Invalid runs-on group name '{group}'. Please use 'organization/' or 'enterprise/' prefix to target a single runner group."));
                            } else if name.trim().is_empty() {
                                self.error(v.pos, format!("Invalid runs-on group name '{group}'."));
                            }
                        }
                    }
                    _ => {}
                }
            }
            return RunsOn::Labels(labels);
        }
        RunsOn::Labels(self.labels(node, what))
    }

    fn labels(&mut self, node: &Node, what: &str) -> Vec<String> {
        let items: Vec<&Node> = match &node.kind {
            NodeKind::Seq(items) => items.iter().collect(),
            _ => vec![node],
        };
        let mut labels = Vec::new();
        for item in items {
            if let Some(label) = self.string(item, what, Some(places::JOB)) {
                if label.trim().is_empty() {
                    self.error(item.pos, format!("{what}: a runner label cannot be empty"));
                } else {
                    labels.push(label);
                }
            }
        }
        if labels.is_empty() && node.as_seq().is_some() {
            self.error(node.pos, format!("{what} must name at least one runner label"));
        }
        labels
    }

    fn strategy(&mut self, node: &Node, what: &str) -> Option<Strategy> {
        let mut matrix = None;
        let mut fail_fast = BoolOrExpr::Value(true);
        let mut max_parallel = None;
        for (key, value) in self.mapping(node, what, &["matrix", "fail-fast", "max-parallel"]) {
            match key.as_scalar().unwrap_or_default() {
                "matrix" => matrix = self.matrix(value, &format!("{what}.matrix")),
                "fail-fast" => {
                    fail_fast = self.bool_or_expr(value, "fail-fast", places::JOB_STRATEGY).unwrap_or(fail_fast)
                }
                "max-parallel" => max_parallel = self.number_or_expr(value, "max-parallel", places::JOB_STRATEGY),
                _ => {}
            }
        }
        node.as_map()?;
        Some(Strategy { matrix, fail_fast, max_parallel })
    }

    fn matrix(&mut self, node: &Node, what: &str) -> Option<Matrix> {
        if let Some(e) = node.as_scalar().and_then(template::single_expression) {
            self.check_template(node.pos, node.as_scalar().unwrap_or_default(), what, Some(places::JOB_STRATEGY));
            return Some(Matrix::Expr(e.to_owned()));
        }
        let entries = self.mapping(node, what, &[]);
        node.as_map()?;
        let mut axes = IndexMap::new();
        let mut include = ListOrExpr::List(Vec::new());
        let mut exclude = ListOrExpr::List(Vec::new());
        for (key, value) in entries {
            let name = key.as_scalar().unwrap_or_default().to_owned();
            self.check_json_templates(value, what, places::JOB_STRATEGY);
            if template::has_expression(&name) {
                let is_insert = template::single_expression(&name).is_some_and(|e| e.eq_ignore_ascii_case("insert"));
                if !is_insert {
                    // A vector's name may be computed (`${{ needs.a.outputs.name }}: [1, 2]`).
                    self.check_template(key.pos, &name, what, Some(places::JOB_STRATEGY));
                } else if value.as_scalar().and_then(template::single_expression).is_none() {
                    self.error(value.pos, format!("{what}: '${{{{ insert }}}}' needs an expression giving an object"));
                    continue;
                }
            }
            match name.as_str() {
                "include" | "exclude" => {
                    let list = if let Some(e) = value.as_scalar().and_then(template::single_expression) {
                        ListOrExpr::Expr(e.to_owned())
                    } else if let Some(items) = value.as_seq() {
                        let mut out = Vec::new();
                        for item in items {
                            match item.to_json() {
                                Json::Object(map) => out.push(map.into_iter().collect()),
                                _ => self.error(item.pos, format!("{what}.{name} entries must be mappings")),
                            }
                        }
                        ListOrExpr::List(out)
                    } else {
                        self.error(value.pos, format!("{what}.{name} must be a list of mappings"));
                        continue;
                    };
                    if name == "include" { include = list } else { exclude = list }
                }
                _ => {
                    let values = if let Some(e) = value.as_scalar().and_then(template::single_expression) {
                        AxisValues::Expr(e.to_owned())
                    } else if let Some(items) = value.as_seq() {
                        if items.is_empty() {
                            self.error(value.pos, format!("matrix vector '{name}' does not contain any values"));
                        }
                        AxisValues::List(items.iter().map(Node::to_json).collect())
                    } else {
                        self.error(value.pos, format!("matrix vector '{name}' must be a list"));
                        continue;
                    };
                    axes.insert(name, values);
                }
            }
        }
        if axes.is_empty() && matches!(&include, ListOrExpr::List(l) if l.is_empty()) {
            self.error(node.pos, format!("{what} defines no values"));
        }
        Some(Matrix::Values { axes, include, exclude })
    }

    /// `container:` or a service: an image name, or a mapping GitHub's schema allows.
    fn container(&mut self, node: &Node, what: &str) {
        if let Some(image) = node.as_scalar() {
            self.check_template(node.pos, image, what, Some(places::JOB_CONTAINER));
            if image.trim().is_empty() && !node.is_null() {
                self.error(node.pos, "Container image cannot be empty");
            }
            return;
        }
        let mut image = None;
        for (k, v) in self.mapping(node, what, &["image", "options", "env", "ports", "volumes", "credentials"]) {
            let key = k.as_scalar().unwrap_or_default();
            let field = format!("{what}.{key}");
            match key {
                "image" => image = self.string(v, &field, Some(places::JOB_CONTAINER)),
                "options" => {
                    self.string(v, &field, Some(places::JOB_CONTAINER));
                }
                "env" => {
                    self.env(v, &field, places::CONTAINER_ENV);
                }
                "ports" | "volumes" => match v.as_seq() {
                    Some(items) => {
                        for item in items {
                            if self.string(item, &field, Some(places::JOB_CONTAINER)).is_some_and(|t| t.is_empty()) {
                                self.error(item.pos, format!("{field}: an entry cannot be empty"));
                            }
                        }
                    }
                    None => self.error(v.pos, format!("{field} must be a list, found {}", v.describe())),
                },
                "credentials" => {
                    for (ck, cv) in self.mapping(v, &field, &["username", "password"]) {
                        let cfield = format!("{field}.{}", ck.as_scalar().unwrap_or_default());
                        if self.string(cv, &cfield, Some(places::CONTAINER_CREDENTIALS)).is_some_and(|t| t.is_empty()) {
                            self.error(cv.pos, format!("{cfield} cannot be empty"));
                        }
                    }
                }
                _ => {}
            }
        }
        if node.as_map().is_some() && image.is_none_or(|i| i.trim().is_empty()) {
            self.error(node.pos, "Container image cannot be empty");
        }
    }

    /// `snapshot:` an image name, or `{image-name, version, if}`.
    fn snapshot(&mut self, node: &Node, what: &str) {
        if node.as_scalar().is_some() {
            if self.string(node, what, None).is_some_and(|t| t.trim().is_empty()) {
                self.error(node.pos, format!("{what} cannot be empty"));
            }
            return;
        }
        let mut named = false;
        for (k, v) in self.mapping(node, what, &["image-name", "version", "if"]) {
            match k.as_scalar().unwrap_or_default() {
                "image-name" => named = self.string(v, what, None).is_some_and(|t| !t.trim().is_empty()),
                "version" => {
                    self.string(v, what, None);
                }
                "if" => {
                    self.condition(v, what, places::JOB_STRATEGY);
                }
                _ => {}
            }
        }
        if node.as_map().is_some() && !named {
            self.error(node.pos, format!("{what}: required property is missing: image-name"));
        }
    }

    fn environment(&mut self, node: &Node, what: &str) -> Option<Environment> {
        if node.as_scalar().is_some() {
            return self.string(node, what, Some(places::JOB)).map(|name| Environment { name, url: None });
        }
        let mut name = None;
        let mut url = None;
        for (k, v) in self.mapping(node, what, &["name", "url", "deployment"]) {
            match k.as_scalar().unwrap_or_default() {
                "name" => name = self.string(v, what, Some(places::JOB)),
                "deployment" if v.as_bool().is_none() => {
                    self.error(v.pos, format!("{what}.deployment must be true or false"))
                }
                "url" => url = self.string(v, what, Some(places::STEP)),
                _ => {}
            }
        }
        match name {
            Some(name) => Some(Environment { name, url }),
            None => {
                self.error(node.pos, format!("{what} needs a 'name'"));
                None
            }
        }
    }

    fn retry(&mut self, node: &Node, what: &str) -> Option<Retry> {
        let mut retry = Retry { max_attempts: 3, delay_seconds: 10.0, exponential: false };
        for (k, v) in self.mapping(node, what, &["max-attempts", "delay-seconds", "backoff"]) {
            match k.as_scalar().unwrap_or_default() {
                "max-attempts" => match v.as_number() {
                    Some(n) if (1.0..=10.0).contains(&n) && n.fract() == 0.0 => retry.max_attempts = n as u32,
                    _ => self.error(v.pos, format!("{what}.max-attempts must be a whole number from 1 to 10")),
                },
                "delay-seconds" => match v.as_number() {
                    Some(n) if (0.0..=3600.0).contains(&n) => retry.delay_seconds = n,
                    _ => self.error(v.pos, format!("{what}.delay-seconds must be a number from 0 to 3600")),
                },
                "backoff" => match v.as_scalar() {
                    Some("exponential") => retry.exponential = true,
                    Some("fixed") => retry.exponential = false,
                    _ => self.error(v.pos, format!("{what}.backoff must be 'exponential' or 'fixed'")),
                },
                _ => {}
            }
        }
        Some(retry)
    }

    /// Checks the expressions in every string of an arbitrary value (`with:`, matrix values).
    pub(crate) fn check_json_templates(&mut self, node: &Node, what: &str, place: Place) {
        match &node.kind {
            NodeKind::Scalar { text, .. } => self.check_template(node.pos, text, what, Some(place)),
            NodeKind::Seq(items) => items.iter().for_each(|i| self.check_json_templates(i, what, place)),
            NodeKind::Map(entries) => entries.iter().for_each(|(_, v)| self.check_json_templates(v, what, place)),
        }
    }

    pub(crate) fn steps(&mut self, node: &Node, job: &str) -> Vec<Step> {
        let Some(items) = node.as_seq() else {
            self.error(node.pos, format!("{job}: steps must be a list, found {}", node.describe()));
            return Vec::new();
        };
        let mut ids: Vec<(String, Pos)> = Vec::new();
        let mut steps = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let Some(step) = self.step(item, &format!("{job}, step {}", i + 1)) else { continue };
            if let Some(id) = &step.id {
                if let Some((_, first)) = ids.iter().find(|(other, _)| other.eq_ignore_ascii_case(id)) {
                    self.error(item.pos, format!("{job}: step id '{id}' is used twice (first at line {})", first.line));
                }
                ids.push((id.clone(), item.pos));
            }
            steps.push(step);
        }
        steps
    }

    fn step(&mut self, node: &Node, what: &str) -> Option<Step> {
        let allowed = [
            "id",
            "name",
            "if",
            "run",
            "uses",
            "with",
            "shell",
            "working-directory",
            "env",
            "continue-on-error",
            "timeout-minutes",
        ];
        let entries = self.mapping(node, what, &allowed);
        node.as_map()?;
        let mut step = Step {
            pos: node.pos,
            id: None,
            name: None,
            condition: None,
            action: StepAction::Run(String::new()),
            shell: None,
            working_directory: None,
            env: IndexMap::new(),
            continue_on_error: BoolOrExpr::Value(false),
            timeout_minutes: None,
        };
        let mut run = None;
        let mut uses: Option<(Node, String)> = None;
        let mut with = IndexMap::new();
        for (key, value) in entries {
            let k = key.as_scalar().unwrap_or_default();
            let field = format!("{what}: {k}");
            match k {
                "id" => {
                    step.id = self.string(value, &field, None);
                    if let Some(problem) = step.id.as_deref().and_then(id_problem) {
                        self.error(value.pos, format!("{what}: {problem}"));
                    }
                }
                "name" => step.name = self.string(value, &field, Some(self.step_place())),
                "if" => step.condition = self.condition(value, &field, self.step_if_place()),
                "run" => run = self.string(value, &field, Some(self.step_place())),
                "uses" => uses = self.string(value, &field, None).map(|u| (value.clone(), u)),
                "with" => {
                    self.check_json_templates(value, &field, self.step_place());
                    with = self
                        .mapping(value, &field, &[])
                        .iter()
                        .map(|(k, v)| (k.as_scalar().unwrap_or_default().to_owned(), v.to_json()))
                        .collect();
                }
                "shell" => step.shell = self.string(value, &field, Some(self.step_place())),
                "working-directory" => step.working_directory = self.string(value, &field, Some(self.step_place())),
                "env" => step.env = self.env(value, &field, self.step_place()),
                "continue-on-error" => {
                    step.continue_on_error =
                        self.bool_or_expr(value, &field, self.step_place()).unwrap_or(step.continue_on_error)
                }
                "timeout-minutes" => step.timeout_minutes = self.number_or_expr(value, &field, self.step_place()),
                _ => {}
            }
        }
        step.action = match (run, uses) {
            (Some(_), Some(_)) => {
                self.error(node.pos, format!("{what} has both 'run' and 'uses'; a step does one or the other"));
                return None;
            }
            (None, None) => {
                self.error(node.pos, format!("{what} has neither 'run' nor 'uses'"));
                return None;
            }
            (Some(script), None) => {
                if self.composite && step.shell.is_none() {
                    self.error(node.pos, format!("{what}: 'shell' is required for a 'run' step of a composite action"));
                }
                if !with.is_empty() {
                    self.error(node.pos, format!("{what}: 'with' only applies to steps that use an action"));
                }
                StepAction::Run(script)
            }
            (None, Some((uses_node, reference))) => {
                let (action, version) = reference.split_once('@').unwrap_or((reference.as_str(), ""));
                match BuiltinAction::ALL.iter().find(|(_, name)| name.eq_ignore_ascii_case(action)) {
                    Some((builtin, _)) if !version.is_empty() => {
                        StepAction::Uses { action: *builtin, version: version.to_owned(), with }
                    }
                    Some(_) => {
                        self.error(uses_node.pos, format!("{what}: '{reference}' needs a version, e.g. '{action}@v4'"));
                        return None;
                    }
                    None if !is_action_reference(&reference) => {
                        self.error(
                            uses_node.pos,
                            format!("{what}: Expected format {{org}}/{{repo}}[/path]@ref. Actual '{reference}'"),
                        );
                        return None;
                    }
                    // Valid, but run by no runner of this installation yet: the step fails
                    // then, naming the action.
                    None => StepAction::Other { reference, with },
                }
            }
        };
        Some(step)
    }
}

/// GitHub's forms of `uses:`: `./local/path`, `docker://image`, or `owner/repo[/path]@ref`.
fn is_action_reference(reference: &str) -> bool {
    if reference.starts_with("./") || reference.starts_with(".\\") {
        return true;
    }
    if let Some(image) = reference.strip_prefix("docker://") {
        return !image.is_empty();
    }
    let Some((path, git_ref)) = reference.split_once('@') else { return false };
    let mut parts = path.split('/');
    let (owner, repo) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    !git_ref.is_empty() && !owner.is_empty() && !repo.is_empty() && !owner.starts_with(['.', '$'])
}

/// A cycle in `needs`, as the job ids around it (the first repeated at the end), if any.
fn find_cycle(jobs: &IndexMap<String, Job>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let index = |id: &str| jobs.get_index_of(id);
    let mut marks = vec![Mark::New; jobs.len()];
    // Iterative depth-first search (no recursion, so no stack limit on long chains).
    for start in 0..jobs.len() {
        if marks[start] != Mark::New {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        marks[start] = Mark::Active;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            let needs = &jobs[node].needs;
            if *next < needs.len() {
                let need = &needs[*next];
                *next += 1;
                let Some(target) = index(need) else { continue };
                match marks[target] {
                    Mark::New => {
                        marks[target] = Mark::Active;
                        stack.push((target, 0));
                    }
                    Mark::Active => {
                        let from = stack.iter().position(|(n, _)| *n == target).unwrap_or(0);
                        let mut cycle: Vec<String> = stack[from..]
                            .iter()
                            .map(|(n, _)| jobs.get_index(*n).map_or(String::new(), |(k, _)| k.clone()))
                            .collect();
                        cycle.push(cycle[0].clone());
                        return Some(cycle);
                    }
                    Mark::Done => {}
                }
            } else {
                marks[node] = Mark::Done;
                stack.pop();
            }
        }
    }
    None
}
