//! The typed workflow model. Built only by [`crate::load`], which validates as it builds, so a
//! `Workflow` in hand is well-formed: jobs exist for every `needs`, there are no cycles, patterns
//! and cron expressions are valid, every expression parses where it stands.
//!
//! Strings that may hold expressions are kept as written (templates) and evaluated when a run
//! reaches them. The model serializes, so a run stores the exact spec it was triggered with and
//! later edits to the file never change it.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::cron::Schedule;
use crate::diag::Pos;

/// Bumped when the serialized shape changes incompatibly.
pub const MODEL_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workflow {
    pub model_version: u32,
    pub name: Option<String>,
    /// `description:`, shown to people; it changes nothing about a run.
    #[serde(default)]
    pub description: Option<String>,
    pub run_name: Option<String>,
    pub on: Triggers,
    pub env: IndexMap<String, String>,
    pub defaults: RunDefaults,
    pub concurrency: Option<Concurrency>,
    pub permissions: Option<Permissions>,
    pub jobs: IndexMap<String, Job>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Triggers {
    pub push: Option<PushFilters>,
    /// `on.pull_request`: runs on the test merge of a pull request (`refs/pull/N/merge`).
    #[serde(default)]
    pub pull_request: Option<PullRequestFilters>,
    /// `on.pull_request_target`: runs the base branch's workflow, on the base branch.
    #[serde(default)]
    pub pull_request_target: Option<PullRequestFilters>,
    pub workflow_dispatch: Option<Dispatch>,
    /// `on.workflow_call`: the workflow can be called by others (running such calls is not
    /// supported yet; the declaration is validated).
    #[serde(default)]
    pub workflow_call: Option<WorkflowCall>,
    pub schedule: Vec<CronEntry>,
    /// Other events, kept by name so they can be supported later.
    pub other: Vec<String>,
}

/// `on.push` filters; `None` means the filter is absent (which differs from an empty list).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushFilters {
    pub branches: Option<Vec<String>>,
    pub branches_ignore: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
    pub tags_ignore: Option<Vec<String>>,
    pub paths: Option<Vec<String>>,
    pub paths_ignore: Option<Vec<String>>,
}

/// The activity types of GitHub's `pull_request` event.
pub const PULL_REQUEST_TYPES: [&str; 21] = [
    "assigned",
    "unassigned",
    "labeled",
    "unlabeled",
    "opened",
    "edited",
    "closed",
    "reopened",
    "synchronize",
    "converted_to_draft",
    "ready_for_review",
    "locked",
    "unlocked",
    "review_requested",
    "review_request_removed",
    "auto_merge_enabled",
    "auto_merge_disabled",
    "milestoned",
    "demilestoned",
    "enqueued",
    "dequeued",
];

/// The types that run a `pull_request` workflow that names none.
pub const DEFAULT_PULL_REQUEST_TYPES: [&str; 3] = ["opened", "synchronize", "reopened"];

/// `on.pull_request` (and `pull_request_target`) filters; `None` means the filter is absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequestFilters {
    /// The activity types that run it (default: `opened`, `synchronize`, `reopened`).
    pub types: Option<Vec<String>>,
    /// Patterns of the base branch.
    pub branches: Option<Vec<String>>,
    pub branches_ignore: Option<Vec<String>>,
    /// Patterns of the files the pull request changes.
    pub paths: Option<Vec<String>>,
    pub paths_ignore: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dispatch {
    pub inputs: IndexMap<String, DispatchInput>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DispatchInput {
    pub description: Option<String>,
    pub required: bool,
    pub default: Option<Json>,
    pub kind: InputKind,
    /// The allowed values of a `choice` input.
    pub options: Vec<String>,
}

/// `on.workflow_call`'s declared inputs, secrets and outputs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkflowCall {
    pub inputs: IndexMap<String, CallInput>,
    /// Secret names and whether each is required.
    pub secrets: IndexMap<String, bool>,
    /// Output names and their value templates.
    pub outputs: IndexMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallInput {
    pub description: Option<String>,
    pub required: bool,
    pub default: Option<Json>,
    pub kind: InputKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InputKind {
    String,
    Boolean,
    Number,
    Choice,
    Environment,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CronEntry {
    pub cron: String,
    pub schedule: Schedule,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunDefaults {
    pub shell: Option<String>,
    pub working_directory: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Concurrency {
    /// A template.
    pub group: String,
    pub cancel_in_progress: BoolOrExpr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Permissions {
    ReadAll,
    WriteAll,
    /// Per scope (`contents: read`); scopes not listed have no access.
    Scopes(IndexMap<String, Access>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Access {
    Read,
    Write,
    None,
}

/// A boolean written literally or as one expression evaluated at run time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BoolOrExpr {
    Value(bool),
    Expr(String),
}

/// A number written literally or as one expression evaluated at run time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum NumberOrExpr {
    Value(f64),
    Expr(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Where the job's key is in the file, for messages about it later.
    pub pos: Pos,
    pub name: Option<String>,
    pub needs: Vec<String>,
    /// The condition as an expression (without `${{ }}`).
    pub condition: Option<String>,
    pub runs_on: RunsOn,
    pub env: IndexMap<String, String>,
    pub defaults: RunDefaults,
    pub timeout_minutes: NumberOrExpr,
    /// `cancel-timeout-minutes`: how long a cancelled job's step may take to stop before it is
    /// killed.
    #[serde(default)]
    pub cancel_timeout_minutes: Option<NumberOrExpr>,
    pub continue_on_error: BoolOrExpr,
    pub strategy: Option<Strategy>,
    pub outputs: IndexMap<String, String>,
    pub concurrency: Option<Concurrency>,
    pub environment: Option<Environment>,
    pub permissions: Option<Permissions>,
    /// `container:` and `services:`, kept as written; running them is not supported yet.
    pub container: Option<Json>,
    pub services: IndexMap<String, Json>,
    /// A reusable workflow this job calls (`uses: ./.github/workflows/x.yml` or
    /// `owner/repo/.github/workflows/x.yml@ref`); [`crate::call::expand_calls`] replaces the job
    /// with the called workflow's jobs when a run is created.
    pub uses: Option<String>,
    pub with: IndexMap<String, Json>,
    /// The secrets a calling job passes (`secrets: inherit`, or a mapping of templates).
    #[serde(default)]
    pub secrets: Option<CallSecrets>,
    /// Set on a job a reusable workflow call brought in: the calls it is inside, outermost first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub call: Vec<CallFrame>,
    /// Set on a calling job once its call is expanded: it runs on no runner; the server completes
    /// it when the called jobs have, with their overall result and the call's outputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_result: Option<CallResult>,
    /// Set when the run is created if the job cannot run as written (a step's action cannot be
    /// used): why, positioned. The job then fails without running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    pub steps: Vec<Step>,
    /// GitStratum extension: retry failed attempts.
    pub retry: Option<Retry>,
}

/// The minutes a job may run when `timeout-minutes` is not given (GitHub's default).
pub const DEFAULT_JOB_TIMEOUT_MINUTES: f64 = 360.0;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunsOn {
    /// Runner labels, all of which a runner must have.
    Labels(Vec<String>),
    /// One expression giving a label or a list of labels.
    Expr(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Strategy {
    /// `None` for a strategy with only `fail-fast`/`max-parallel`: one instance, as without one.
    #[serde(default)]
    pub matrix: Option<Matrix>,
    pub fail_fast: BoolOrExpr,
    pub max_parallel: Option<NumberOrExpr>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Matrix {
    /// `matrix: ${{ fromJSON(needs.setup.outputs.matrix) }}`.
    Expr(String),
    Values {
        /// Each axis: a literal list of values, or one expression giving a list.
        axes: IndexMap<String, AxisValues>,
        include: ListOrExpr,
        exclude: ListOrExpr,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AxisValues {
    List(Vec<Json>),
    Expr(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ListOrExpr {
    List(Vec<IndexMap<String, Json>>),
    Expr(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Environment {
    pub name: String,
    pub url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Retry {
    pub max_attempts: u32,
    pub delay_seconds: f64,
    pub exponential: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub pos: Pos,
    pub id: Option<String>,
    pub name: Option<String>,
    pub condition: Option<String>,
    pub action: StepAction,
    pub shell: Option<String>,
    pub working_directory: Option<String>,
    pub env: IndexMap<String, String>,
    pub continue_on_error: BoolOrExpr,
    pub timeout_minutes: Option<NumberOrExpr>,
}

impl Step {
    /// The name shown for the step, as GitHub shows it: its `name` as written (an expression in it
    /// is shown unevaluated), else `Run <the script's first line>` or `Run <action>@<version>`.
    pub fn display_name(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        match &self.action {
            StepAction::Run(script) => {
                let first = script.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or_default();
                format!("Run {first}")
            }
            StepAction::Uses { action, version, .. } => format!("Run {}@{version}", action.name()),
            StepAction::Other { reference, .. } => format!("Run {reference}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StepAction {
    /// A script (a template).
    Run(String),
    /// A built-in action with its inputs (templates or other YAML values).
    Uses { action: BuiltinAction, version: String, with: IndexMap<String, Json> },
    /// Any other action (`owner/repo@ref`, `./path`, `docker://image`): valid in a workflow, but
    /// this runner cannot run it yet, so the step fails saying so.
    Other { reference: String, with: IndexMap<String, Json> },
}

/// The key under which an env-like mapping keeps a `${{ insert }}` (or a whole-mapping
/// expression, `env: ${{ … }}`): its value is an expression giving an object whose entries are
/// merged in at that place when evaluated.
pub fn insert_key(n: usize) -> String {
    format!("${{{{ insert }}}}#{n}")
}

/// Whether a key of an env-like mapping is an insert (see [`insert_key`]); the empty key is the
/// older spelling of a whole-mapping expression.
pub fn is_insert_key(key: &str) -> bool {
    key.is_empty() || key.starts_with("${{")
}

/// The actions GitStratum implements itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BuiltinAction {
    Checkout,
    UploadArtifact,
    DownloadArtifact,
    Cache,
}

impl BuiltinAction {
    pub const ALL: [(BuiltinAction, &'static str); 4] = [
        (BuiltinAction::Checkout, "actions/checkout"),
        (BuiltinAction::UploadArtifact, "actions/upload-artifact"),
        (BuiltinAction::DownloadArtifact, "actions/download-artifact"),
        (BuiltinAction::Cache, "actions/cache"),
    ];

    pub fn name(self) -> &'static str {
        BuiltinAction::ALL.iter().find(|(a, _)| *a == self).map_or("", |(_, n)| n)
    }
}

/// `secrets:` of a job that calls a reusable workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallSecrets {
    Inherit,
    /// Callee secret names and templates over the caller's `secrets`.
    Map(IndexMap<String, String>),
}

/// One reusable workflow call a job is inside.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallFrame {
    /// The calling job's key (with the keys of the calls around it: `deploy/build`).
    pub caller: String,
    /// The called workflow, as the caller named it.
    pub uses: String,
    /// The caller's `with:` (templates over the caller's contexts).
    pub with: IndexMap<String, Json>,
    pub secrets: Option<CallSecrets>,
    /// The called workflow's `on.workflow_call.inputs`.
    pub inputs: IndexMap<String, CallInput>,
    /// The jobs the caller needs (keys in the run), whose outputs its `with:` may read.
    pub caller_needs: Vec<String>,
    /// The caller's matrix combination, when the calling job has a matrix (its `with:` may read
    /// `matrix`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matrix: Option<Json>,
    /// The called workflow's own `env`, which its jobs get instead of the caller's.
    pub env: IndexMap<String, String>,
}

/// What completes a calling job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallResult {
    /// The prefixes of the called jobs' keys (`deploy/`; one per combination of a calling job
    /// with a matrix, `deploy/1/`, `deploy/2/`, …).
    pub prefixes: Vec<String>,
    /// The called workflow's job ids (the `jobs` context of its outputs).
    pub jobs: Vec<String>,
    /// `on.workflow_call.outputs`: names and templates over `jobs`.
    pub outputs: IndexMap<String, String>,
}
