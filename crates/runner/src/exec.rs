//! Running one job: acknowledge it, keep it with heartbeats, run its steps in the sandbox one by
//! one (reporting each), ship the log, and complete it. A `stop` from the server (the job is no
//! longer ours) or the job's timeout ends the running step's whole process tree: SIGTERM, a grace
//! period, then SIGKILL (the sandbox's PID namespace dies with its first process).

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use gitstratum_workflow::expr::{self, Context, Dict, Value};
use gitstratum_workflow::load::{Place, places};
use gitstratum_workflow::model::{BoolOrExpr, BuiltinAction, NumberOrExpr, Step, StepAction, Workflow};
use gitstratum_workflow::plan::{GithubEvent, github_context};
use gitstratum_workflow::template;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use crate::actions;
use crate::limits::{Hit, JobCgroup};
use crate::logship::{self, LogWriter};
use crate::protocol::{Client, Lease, Reply, Signal};
use crate::sandbox::{self, JobDirs};
use crate::uses::{self, StepSite};
use crate::{RunnerConfig, RunnerError};

/// The time a stopped step gets between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(5);
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How a job ended, in the API's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Success,
    Failure,
    Cancelled,
    TimedOut,
}

impl Ending {
    fn as_str(self) -> &'static str {
        match self {
            Ending::Success => "success",
            Ending::Failure => "failure",
            Ending::Cancelled => "cancelled",
            Ending::TimedOut => "timed_out",
        }
    }
}

/// Runs a leased job to its end.
pub async fn run_job(client: &Client, runner: i64, config: &RunnerConfig, lease: Lease) -> Result<(), RunnerError> {
    if client.ack(runner, &lease).await? == Reply::LeaseLost {
        return Ok(());
    }
    let (job, attempt) = (lease.job_id, lease.attempt);
    tracing::info!(job, attempt, name = %lease.name, repository = %lease.repository, "runner: job started");
    let (stop_tx, stop_rx) = watch::channel(Signal::Continue);
    let beat_client = client.clone();
    let every = Duration::from_secs(u64::try_from(lease.heartbeat_seconds.clamp(1, 60)).unwrap_or(10));
    let heartbeat = tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            match beat_client.heartbeat(runner, job, attempt).await {
                Ok(Signal::Continue) => {}
                Ok(signal) => {
                    // Never step back from a stop to a cancel.
                    stop_tx.send_if_modified(|now| {
                        let louder = signal > *now;
                        if louder {
                            *now = signal;
                        }
                        louder
                    });
                    if signal == Signal::Stop {
                        return;
                    }
                }
                Err(e) => tracing::warn!(job, error = %e, "runner: heartbeat failed"),
            }
        }
    });
    let (log, shipper) = logship::start(client.clone(), runner, job, attempt, lease.log_step_max_bytes);
    // Unique on this host: job ids repeat across servers, and runners may share a machine (and a
    // work directory, and the cgroup tree).
    static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let place_name = format!("job-{}-{seq}-{job}-{attempt}", std::process::id());
    let dirs = JobDirs::create(config.work_dir.join(&place_name))?;
    let cgroup = match JobCgroup::create(&place_name, config.limits) {
        Ok(cgroup) => Some(cgroup),
        Err(why) => {
            log.line(&format!("warning: this runner cannot limit the job's memory and processes: {why}"));
            None
        }
    };
    let place = JobPlace {
        runner_name: &config.name,
        network: config.network,
        limits: config.limits,
        cgroup: cgroup.as_ref(),
        client,
        runner,
        post: std::sync::Mutex::new(Vec::new()),
        post_scripts: std::sync::Mutex::new(Vec::new()),
        actions_cache: config.work_dir.join("_actions"),
        resolved: std::sync::Mutex::new(std::collections::HashMap::new()),
    };
    let (ending, outputs) = execute(client, runner, &place, &lease, &dirs, &log, stop_rx.clone()).await;
    log.line(&format!("Job ended: {}", ending.as_str()));
    drop(log);
    let _ = shipper.await;
    heartbeat.abort();
    if *stop_rx.borrow() != Signal::Stop {
        client.complete(runner, job, attempt, ending.as_str(), &outputs).await?;
    }
    tracing::info!(job, attempt, ending = ending.as_str(), "runner: job finished");
    if let Some(cgroup) = cgroup {
        cgroup.remove();
    }
    let _ = std::fs::remove_dir_all(&dirs.root);
    Ok(())
}

/// Where a job runs: its network, its limits and its cgroups, the server it reports to, and
/// what is left to do after its steps (caches to save).
pub(crate) struct JobPlace<'a> {
    pub(crate) runner_name: &'a str,
    pub(crate) network: crate::Network,
    pub(crate) limits: crate::limits::Limits,
    pub(crate) cgroup: Option<&'a JobCgroup>,
    pub(crate) client: &'a Client,
    pub(crate) runner: i64,
    pub(crate) post: std::sync::Mutex<Vec<actions::PendingCache>>,
    /// The `post` scripts of the JavaScript actions the job ran, in the order they ran.
    pub(crate) post_scripts: std::sync::Mutex<Vec<uses::PostStep>>,
    /// The runner's cache of action repositories, by commit (`_actions` in its work directory).
    pub(crate) actions_cache: std::path::PathBuf,
    /// The actions of other repositories this job resolved, by `uses:`: each is resolved once,
    /// so every step (and `pre`/`post`) of the job runs the same commit.
    pub(crate) resolved: std::sync::Mutex<std::collections::HashMap<String, uses::Placed>>,
}

/// The expression context of a step: named values, and the status functions of `if:`.
#[derive(Clone)]
pub(crate) struct StepContext {
    pub(crate) values: Dict,
    pub(crate) failed: bool,
    pub(crate) cancelled: bool,
    /// The job's directories, for `hashFiles()`.
    pub(crate) dirs: JobDirs,
}

impl Context for StepContext {
    fn named_value(&self, name: &str) -> Option<Value> {
        self.values.get(name).cloned()
    }

    fn call(&self, name: &str, args: &[Value]) -> Result<Value, String> {
        match name {
            "success" => Ok(Value::from(!self.failed && !self.cancelled)),
            "failure" => Ok(Value::from(self.failed)),
            "cancelled" => Ok(Value::from(self.cancelled)),
            "always" => Ok(Value::from(true)),
            "hashfiles" => {
                let patterns: Vec<String> = args.iter().map(Value::to_coerced_string).collect();
                crate::files::hash_files(&self.dirs, &patterns).map(|h| Value::from(h.as_str()))
            }
            other => Err(format!("function '{other}' is not supported by this runner yet")),
        }
    }
}

pub(crate) fn evaluate(text: &str, place: &Place, ctx: &dyn Context) -> Result<Value, String> {
    template::evaluate(text, &place.options(), ctx).map_err(|e| e.message)
}

pub(crate) fn minutes(value: &NumberOrExpr, place: &Place, ctx: &dyn Context) -> Result<f64, String> {
    match value {
        NumberOrExpr::Value(n) => Ok(*n),
        NumberOrExpr::Expr(e) => {
            let v = evaluate(&format!("${{{{ {e} }}}}"), place, ctx)?;
            v.to_coerced_string().trim().parse().map_err(|_| format!("timeout-minutes: {e} is not a number"))
        }
    }
}

pub(crate) fn flag(value: &BoolOrExpr, place: &Place, ctx: &dyn Context) -> bool {
    match value {
        BoolOrExpr::Value(b) => *b,
        BoolOrExpr::Expr(e) => evaluate(&format!("${{{{ {e} }}}}"), place, ctx).is_ok_and(|v| v.is_truthy()),
    }
}

async fn execute(
    client: &Client,
    runner: i64,
    place: &JobPlace<'_>,
    lease: &Lease,
    dirs: &JobDirs,
    log: &LogWriter,
    mut stop: watch::Receiver<Signal>,
) -> (Ending, BTreeMap<String, String>) {
    let mut outputs = BTreeMap::new();
    let ending = execute_steps(client, runner, place, lease, dirs, log, &mut stop, &mut outputs).await;
    (ending, outputs)
}

#[allow(clippy::too_many_arguments)] // the job's whole situation
async fn execute_steps(
    client: &Client,
    runner: i64,
    place: &JobPlace<'_>,
    lease: &Lease,
    dirs: &JobDirs,
    log: &LogWriter,
    stop: &mut watch::Receiver<Signal>,
    job_outputs: &mut BTreeMap<String, String>,
) -> Ending {
    let workflow: Workflow = match serde_json::from_value(lease.workflow.clone()) {
        Ok(w) => w,
        Err(e) => {
            log.line(&format!("error: this runner cannot read the job's workflow: {e}"));
            return Ending::Failure;
        }
    };
    let Some(job) = workflow.jobs.get(&lease.job_key) else {
        log.line(&format!("error: the workflow has no job {:?}", lease.job_key));
        return Ending::Failure;
    };
    // `defaults.run` of the job, else of the workflow.
    let mut job = job.clone();
    job.defaults.shell = job.defaults.shell.take().or_else(|| workflow.defaults.shell.clone());
    job.defaults.working_directory =
        job.defaults.working_directory.take().or_else(|| workflow.defaults.working_directory.clone());
    let job = &job;
    let name = workflow.name.clone().unwrap_or_default();
    let github = github_context(&GithubEvent {
        event_name: &lease.event,
        git_ref: &lease.git_ref,
        sha: &lease.sha,
        repository: &lease.repository,
        actor: &lease.actor,
        workflow: &name,
        ..Default::default()
    });
    let mut github = match github {
        Value::Object(dict) => (*dict).clone(),
        _ => Dict::new(),
    };
    // What GitHub's runner says about the run, the repository and the event, in the `github`
    // context and (below) in the environment.
    let defaults = Defaults::of(lease, &name);
    for (key, value) in defaults.github_fields() {
        github.set(*key, Value::from(value.as_str()));
    }
    github.set("workspace", Value::from(sandbox::WORKSPACE));
    // A job a reusable workflow call brought in (`build/compile`) is `compile` to itself, as on
    // GitHub.
    let own_key = lease.job_key.rsplit('/').next().unwrap_or(&lease.job_key).to_owned();
    github.set("job", Value::from(own_key.as_str()));
    github.set("token", Value::from(lease.token.as_str()));
    github.set("event", Value::from_json(lease.event_payload.clone()));
    github.set("event_path", Value::from(EVENT_PATH));
    github.set("retention_days", Value::from(RETENTION_DAYS));
    let mut values = Dict::new();
    values.insert("github", Value::object(github.clone()));
    values.insert("matrix", Value::from_json(lease.matrix.clone().unwrap_or(serde_json::Value::Null)));
    values.insert("strategy", Value::from_json(lease.strategy.clone()));
    let debug = ["ACTIONS_RUNNER_DEBUG", "ACTIONS_STEP_DEBUG"]
        .iter()
        .any(|k| lease.vars.get(*k).or_else(|| lease.secrets.get(*k)).is_some_and(|v| v.eq_ignore_ascii_case("true")));
    let mut runner_ctx = Dict::new();
    for (k, v) in [
        ("os", "Linux"),
        ("arch", "X64"),
        ("temp", "/tmp"),
        ("tool_cache", TOOL_CACHE),
        ("name", place.runner_name),
        ("environment", "self-hosted"),
    ] {
        runner_ctx.insert(k, Value::from(v));
    }
    if debug {
        runner_ctx.insert("debug", Value::from("1"));
    }
    values.insert("runner", Value::object(runner_ctx));
    // Secrets: what the job references, and GITHUB_TOKEN (the job's own token); every value is
    // masked before the first line is logged. They reach steps only through expressions.
    let mut secrets: Dict = lease.secrets.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect();
    secrets.set("GITHUB_TOKEN", Value::from(lease.token.as_str()));
    for value in lease.secrets.values().chain([&lease.token]) {
        log.add_secret(value);
    }
    values.insert("secrets", Value::object(secrets));
    values
        .insert("vars", Value::object(lease.vars.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect()));
    values.insert("inputs", Value::from_json(lease.inputs.clone()));
    values.insert("steps", Value::object(Dict::new()));
    values.insert("needs", Value::from_json(lease.needs.clone()));

    // The event's payload, where GitHub's runner puts it.
    if let Err(e) = std::fs::write(dirs.files.join(EVENT_FILE), lease.event_payload.to_string()) {
        log.line(&format!("error: cannot write the event payload: {e}"));
        return Ending::Failure;
    }
    let _ = std::fs::create_dir_all(dirs.home.join(TOOL_CACHE_DIR));

    // The environment: GitHub's variables, then the workflow's, the job's, each step's own.
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for (key, value) in [
        ("CI", "true".to_owned()),
        ("GITHUB_ACTIONS", "true".to_owned()),
        ("GITSTRATUM", "true".to_owned()),
        ("HOME", sandbox::HOME.to_owned()),
        ("PATH", PATH.to_owned()),
        ("LANG", "C.UTF-8".to_owned()),
        ("GITHUB_WORKSPACE", sandbox::WORKSPACE.to_owned()),
        ("GITHUB_JOB", own_key.clone()),
        ("GITHUB_EVENT_PATH", EVENT_PATH.to_owned()),
        ("GITHUB_RETENTION_DAYS", RETENTION_DAYS.to_owned()),
        ("GITSTRATUM_JOB_ATTEMPT", lease.attempt.to_string()),
        ("RUNNER_OS", "Linux".to_owned()),
        ("RUNNER_ARCH", "X64".to_owned()),
        ("RUNNER_TEMP", "/tmp".to_owned()),
        ("RUNNER_TOOL_CACHE", TOOL_CACHE.to_owned()),
        ("RUNNER_NAME", place.runner_name.to_owned()),
        ("RUNNER_ENVIRONMENT", "self-hosted".to_owned()),
    ] {
        env.insert(key.to_owned(), value);
    }
    for (key, value) in defaults.github_fields() {
        env.insert(format!("GITHUB_{}", key.to_ascii_uppercase()), value.clone());
    }
    if debug {
        env.insert("RUNNER_DEBUG".to_owned(), "1".to_owned());
    }
    let mut ctx = StepContext { values, failed: false, cancelled: false, dirs: dirs.clone() };
    // A job a reusable workflow call brought in gets its own workflow's `env`, not the caller's.
    let workflow_env = job.call.last().map_or(&workflow.env, |frame| &frame.env);
    for (level, vars) in [("workflow", workflow_env), ("job", &job.env)] {
        ctx.values.set("env", env_value(&env));
        if let Err(e) = evaluate_env(vars, &places::JOB_ENV, &mut ctx, &mut env) {
            log.line(&format!("error: {level} {e}"));
            return Ending::Failure;
        }
    }
    ctx.values.set("env", env_value(&env));
    let job_minutes = match minutes(&job.timeout_minutes, &places::JOB, &ctx) {
        Ok(m) => m,
        Err(e) => {
            log.line(&format!("error: {e}"));
            return Ending::Failure;
        }
    };
    let deadline = Instant::now() + Duration::from_secs_f64((job_minutes * 60.0).clamp(1.0, 30.0 * 24.0 * 3600.0));
    let mut timed_out = false;
    let mut action_names = step_action_names(&job.steps).into_iter();
    // The `pre` scripts of the JavaScript actions of other repositories the job uses, before its
    // first step (in the job's set-up part of the log), as GitHub runs them.
    if !uses::run_pre_scripts(job, lease, dirs, place, &env, &ctx, log, deadline, stop).await {
        ctx.failed = true;
    }

    for (index, step) in job.steps.iter().enumerate() {
        let number = index + 1;
        match *stop.borrow() {
            Signal::Stop => return Ending::Cancelled,
            Signal::Cancel => ctx.cancelled = true,
            Signal::Continue => {}
        }
        let title = step.display_name();
        let action_name = action_names.next().unwrap_or_default();
        if let Some(Value::Object(github)) = ctx.values.get("github").cloned() {
            let mut github = (*github).clone();
            github.set("action", Value::from(action_name.as_str()));
            ctx.values.set("github", Value::object(github));
        }
        // As GitHub's runner does: the step's `env` is evaluated first (what earlier steps wrote
        // to $GITHUB_ENV included), so its `if:` sees the whole `env` context.
        let mut step_env = env.clone();
        step_env.insert("GITHUB_ACTION".to_owned(), action_name.clone());
        let mut env_errors = Vec::new();
        let runs = prepare_step(step, (&places::STEP, &places::STEP_IF), &mut ctx, &mut step_env, &mut env_errors);
        if !runs {
            let _ = client.step(runner, lease.job_id, lease.attempt, number, Some("skipped"), &[]).await;
            continue;
        }
        if client.step(runner, lease.job_id, lease.attempt, number, None, &[]).await.ok() == Some(Reply::LeaseLost) {
            return Ending::Cancelled;
        }
        log.step(number as i64);
        log.take_annotations(); // a step's annotations are its own
        step_header(log, &title, step);
        let mut ok = true;
        for e in &env_errors {
            log.line(&format!("##[error]{e}"));
            ok = false;
        }
        let unsecure =
            step_env.get("ACTIONS_ALLOW_UNSECURE_COMMANDS").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        log.begin_step_commands(unsecure);
        let files = StepFiles::create(dirs, &number.to_string());
        files.set_env(&mut step_env);
        let mut step_deadline = deadline;
        if let Some(limit) = &step.timeout_minutes {
            match minutes(limit, &places::STEP, &ctx) {
                Ok(m) => {
                    step_deadline = step_deadline.min(Instant::now() + Duration::from_secs_f64((m * 60.0).max(1.0)))
                }
                Err(e) => {
                    log.line(&format!("error: {e}"));
                    ok = false;
                }
            }
        }
        let outcome = if !ok {
            Outcome::Failed
        } else {
            let site = StepSite {
                step,
                job,
                lease,
                dirs,
                place,
                env: &step_env,
                ctx: &ctx,
                log,
                deadline: step_deadline,
                number,
                files: &files,
                depth: 0,
            };
            run_step(site, stop).await
        };
        // What the step wrote to $GITHUB_OUTPUT, $GITHUB_ENV and $GITHUB_PATH, and asked for with
        // the older commands (`::set-output`, `::save-state`, `::set-env`, `::add-path`).
        let (written, outcome) = files.collect(log, outcome);
        for (key, value) in &written.env {
            env.insert(key.clone(), value.clone());
        }
        prepend_path(&mut env, &written.path);
        if !written.summary.trim().is_empty() {
            log.line("##[group]Step summary");
            for line in written.summary.lines() {
                log.line(line);
            }
            log.line("##[endgroup]");
        }
        let conclusion = match outcome {
            Outcome::Succeeded => "success",
            Outcome::Failed if flag(&step.continue_on_error, &places::STEP, &ctx) => {
                log.line("The step failed; continue-on-error lets the job go on.");
                "success"
            }
            Outcome::Failed => {
                ctx.failed = true;
                "failure"
            }
            Outcome::TimedOut => {
                log.line("error: the step ran out of time (timeout-minutes)");
                ctx.failed = true;
                if step_deadline >= deadline {
                    timed_out = true;
                }
                "timed_out"
            }
            Outcome::Stopped => {
                ctx.cancelled = true;
                "cancelled"
            }
        };
        if let Some(id) = &step.id {
            record_step(&mut ctx.values, id, &written.outputs, outcome.word(), conclusion);
        }
        let annotations = log.take_annotations();
        let _ = client.step(runner, lease.job_id, lease.attempt, number, Some(conclusion), &annotations).await;
    }
    // What the runner says from here on is the job's last part of the log.
    log.step(job.steps.len() as i64 + 1);
    // The `post` scripts of the JavaScript actions that ran, last first.
    let posts = std::mem::take(&mut *place.post_scripts.lock().unwrap_or_else(|e| e.into_inner()));
    for post in posts.iter().rev() {
        if *stop.borrow() == Signal::Stop {
            return Ending::Cancelled;
        }
        ctx.values.set("env", env_value(&env));
        match holds(&post.condition, &places::ACTION_STEP_IF, &ctx) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                log.line(&format!("##[error]{}: post-if: {e}", post.title));
                ctx.failed = true;
                continue;
            }
        }
        log.line(&format!("##[group]{}", post.title));
        let mut post_env: BTreeMap<String, String> = post.env.iter().cloned().collect();
        let saved = [format!("pre-{}", post.label), post.label.clone()];
        for (key, value) in saved.iter().flat_map(|label| StepFiles::saved_state(dirs, label)) {
            post_env.insert(format!("STATE_{key}"), value);
        }
        let files = StepFiles::create(dirs, &format!("post-{}", post.label));
        files.set_env(&mut post_env);
        log.begin_step_commands(false);
        // A post script gets at least a minute, even after the job's own time ran out.
        let until = deadline.max(Instant::now() + Duration::from_secs(60));
        let outcome = sandboxed(place, dirs, &post.argv, sandbox::WORKSPACE, &post_env, log, until, stop).await;
        let _ = log.take_legacy_commands();
        log.line("##[endgroup]");
        match outcome {
            Outcome::Succeeded => {}
            Outcome::Stopped => ctx.cancelled = true,
            Outcome::Failed | Outcome::TimedOut => ctx.failed = true,
        }
    }
    // Caches the job's steps missed are saved once it succeeded (`actions/cache`'s post step).
    let saves = std::mem::take(&mut *place.post.lock().unwrap_or_else(|e| e.into_inner()));
    if !ctx.failed && !ctx.cancelled && *stop.borrow() == Signal::Continue {
        for pending in &saves {
            let cx = actions::ActionCx { client, runner, lease, dirs, log, number: pending.number };
            actions::save_cache(&cx, pending).await;
        }
    }
    // The job's outputs, from what its steps produced.
    ctx.values.set("env", env_value(&env));
    for (key, template_text) in &job.outputs {
        match evaluate(template_text, &places::JOB_OUTPUTS, &ctx) {
            Ok(v) => {
                job_outputs.insert(key.clone(), v.to_coerced_string());
            }
            Err(e) => log.line(&format!("warning: output {key}: {e}")),
        }
    }
    if ctx.cancelled {
        Ending::Cancelled
    } else if timed_out {
        Ending::TimedOut
    } else if ctx.failed {
        Ending::Failure
    } else {
        Ending::Success
    }
}

/// Evaluates a step's `env` (into `step_env`, the `env` context following) and then its `if:`,
/// as GitHub's runner does; whether it runs. A problem is added to `errors`, and the step then
/// "runs" only to fail saying so.
pub(crate) fn prepare_step(
    step: &Step,
    (env_place, if_place): (&Place, &Place),
    ctx: &mut StepContext,
    step_env: &mut BTreeMap<String, String>,
    errors: &mut Vec<String>,
) -> bool {
    ctx.values.set("env", env_value(step_env));
    errors.extend(evaluate_env(&step.env, env_place, ctx, step_env).err());
    ctx.values.set("env", env_value(step_env));
    if !errors.is_empty() {
        return true;
    }
    match &step.condition {
        None => !ctx.failed && !ctx.cancelled,
        Some(cond) => holds(cond, if_place, ctx).unwrap_or_else(|e| {
            errors.push(format!("if: {e}"));
            true
        }),
    }
}

/// Whether a condition (an expression without `${{ }}`) holds.
pub(crate) fn holds(condition: &str, place: &Place, ctx: &StepContext) -> Result<bool, String> {
    expr::parse(condition, &place.options())
        .map_err(|e| e.message)
        .and_then(|e| expr::evaluate(&e, ctx, condition).map_err(|e| e.message))
        .map(|v| v.is_truthy())
}

/// Adds a step's `outputs`, `outcome` and `conclusion` to the `steps` context.
pub(crate) fn record_step(values: &mut Dict, id: &str, outputs: &[(String, String)], outcome: &str, conclusion: &str) {
    let mut steps = match values.get("steps") {
        Some(Value::Object(dict)) => (**dict).clone(),
        _ => Dict::new(),
    };
    let outputs: Dict = outputs.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect();
    let mut entry = Dict::new();
    entry.insert("outputs", Value::object(outputs));
    entry.insert("outcome", Value::from(outcome));
    entry.insert("conclusion", Value::from(conclusion));
    steps.set(id, Value::object(entry));
    values.set("steps", Value::object(steps));
}

/// A step's `$GITHUB_OUTPUT`, `$GITHUB_ENV`, `$GITHUB_PATH`, `$GITHUB_STEP_SUMMARY` and
/// `$GITHUB_STATE` files.
pub(crate) struct StepFiles {
    label: String,
    host: [std::path::PathBuf; 5],
    inside: [String; 5],
}

/// The variables naming a step's files.
pub(crate) const STEP_FILE_VARIABLES: [&str; 5] =
    ["GITHUB_OUTPUT", "GITHUB_ENV", "GITHUB_PATH", "GITHUB_STEP_SUMMARY", "GITHUB_STATE"];

/// One of a step's files.
#[derive(Debug, Clone, Copy)]
pub(crate) enum FileKind {
    Output = 0,
    Env = 1,
    Path = 2,
    Summary = 3,
    State = 4,
}

/// What a step wrote to its files.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Written {
    pub(crate) outputs: Vec<(String, String)>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) path: Vec<String>,
    /// `$GITHUB_STEP_SUMMARY` (Markdown), shown in the log for now.
    pub(crate) summary: String,
}

impl StepFiles {
    pub(crate) fn create(dirs: &JobDirs, number: &str) -> StepFiles {
        let names = [
            format!("output-{number}"),
            format!("env-{number}"),
            format!("path-{number}"),
            format!("summary-{number}"),
            format!("state-{number}"),
        ];
        let host = names.clone().map(|n| dirs.files.join(n));
        for file in &host {
            let _ = std::fs::write(file, "");
        }
        StepFiles { label: number.to_owned(), host, inside: names.map(|n| format!("{}/{n}", sandbox::FILES)) }
    }

    /// What tells this step's files from others' (`3`, or `3.1` for a step of the action step 3
    /// uses).
    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    /// Adds text to one of the files, as a step would (an action hands up what its own steps
    /// wrote).
    pub(crate) fn append(&self, kind: FileKind, text: &str) {
        use std::io::Write;
        if text.is_empty() {
            return;
        }
        if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(&self.host[kind as usize]) {
            let _ = f.write_all(text.as_bytes());
        }
    }

    /// What a step saved with `$GITHUB_STATE` (for its action's `post` script), read without
    /// creating the files anew.
    pub(crate) fn saved_state(dirs: &JobDirs, label: &str) -> Vec<(String, String)> {
        let text = std::fs::read_to_string(dirs.files.join(format!("state-{label}"))).unwrap_or_default();
        parse_file_commands(&text)
    }

    pub(crate) fn set_env(&self, env: &mut BTreeMap<String, String>) {
        for (key, path) in STEP_FILE_VARIABLES.into_iter().zip(&self.inside) {
            env.insert(key.to_owned(), path.clone());
        }
    }

    /// What the step wrote to its files and asked for with the older workflow commands
    /// (`::set-output`, `::save-state`, `::set-env`, `::add-path`), those first; its state saved
    /// to `$GITHUB_STATE` for its action's later scripts; the outcome failed if a command could
    /// not be applied.
    pub(crate) fn collect(&self, log: &LogWriter, outcome: Outcome) -> (Written, Outcome) {
        let mut written = self.read();
        let legacy = log.take_legacy_commands();
        let outcome = if legacy.failed && outcome == Outcome::Succeeded { Outcome::Failed } else { outcome };
        self.append(FileKind::State, &legacy.state.iter().map(|(k, v)| uses::file_command(k, v)).collect::<String>());
        written.outputs.splice(0..0, legacy.outputs);
        written.env.splice(0..0, legacy.env);
        written.path.splice(0..0, legacy.path);
        (written, outcome)
    }

    fn read(&self) -> Written {
        let text = |i: usize| std::fs::read_to_string(&self.host[i]).unwrap_or_default();
        Written {
            outputs: parse_file_commands(&text(0)),
            env: parse_file_commands(&text(1)).into_iter().filter(|(k, _)| !k.is_empty()).collect(),
            path: text(2).lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect(),
            summary: text(3),
        }
    }
}

/// GitHub's file-command format: `name=value` lines, and `name<<DELIMITER` … `DELIMITER` blocks
/// for values of several lines. Malformed lines are ignored.
fn parse_file_commands(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some((name, delimiter)) = line.split_once("<<").filter(|(n, _)| !n.contains('=')) {
            let mut value = Vec::new();
            for next in lines.by_ref() {
                if next == delimiter {
                    break;
                }
                value.push(next);
            }
            out.push((name.to_owned(), value.join("\n")));
        } else if let Some((name, value)) = line.split_once('=') {
            out.push((name.to_owned(), value.to_owned()));
        }
    }
    out
}

/// Evaluates an `env:` mapping into `env` (each value sees those before it in the `env`
/// context); a `${{ insert }}` (or a whole-mapping expression) merges the object it gives.
pub(crate) fn evaluate_env<'v>(
    vars: impl IntoIterator<Item = (&'v String, &'v String)>,
    place: &Place,
    ctx: &mut StepContext,
    env: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    for (key, template_text) in vars {
        let value = evaluate(template_text, place, ctx).map_err(|e| format!("env {key}: {e}"))?;
        if gitstratum_workflow::model::is_insert_key(key) {
            let serde_json::Value::Object(map) = value.to_json() else {
                return Err(format!("env: {template_text} must give an object, got {}", value.to_json_compact()));
            };
            for (k, v) in map {
                let text = match v {
                    serde_json::Value::String(s) => s,
                    other => Value::from_json(other).to_coerced_string(),
                };
                env.insert(k, text);
            }
        } else {
            env.insert(key.clone(), value.to_coerced_string());
        }
        ctx.values.set("env", env_value(env));
    }
    Ok(())
}

/// `GITHUB_ACTION` of each step, as GitHub names them: the step's id, else `__run` for a script
/// and `__owner_repo` for an action, with `_2`, `_3`, … when a name repeats.
pub(crate) fn step_action_names(steps: &[Step]) -> Vec<String> {
    let mut used: Vec<String> = steps.iter().filter_map(|s| s.id.clone()).collect();
    steps
        .iter()
        .map(|step| {
            if let Some(id) = &step.id {
                return id.clone();
            }
            let base = match &step.action {
                StepAction::Run(_) => "__run".to_owned(),
                StepAction::Uses { action, .. } => format!("__{}", action.name().replace('/', "_")),
                StepAction::Other { reference, .. } => {
                    let name = reference.split('@').next().unwrap_or_default();
                    let cleaned: String =
                        name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
                    format!("__{}", cleaned.trim_start_matches('_'))
                }
            };
            let mut name = base.clone();
            let mut n = 1;
            while used.iter().any(|u| u.eq_ignore_ascii_case(&name)) {
                n += 1;
                name = format!("{base}_{n}");
            }
            used.push(name.clone());
            name
        })
        .collect()
}

/// Where the event's payload is inside the sandbox.
const EVENT_FILE: &str = "event.json";
const EVENT_PATH: &str = "/__gitstratum/files/event.json";
/// The tool cache (`RUNNER_TOOL_CACHE`), in the job's home.
const TOOL_CACHE_DIR: &str = "_tool";
const TOOL_CACHE: &str = "/home/runner/_tool";
/// How long artifacts are kept unless a repository or an upload says otherwise (the server's
/// default).
const RETENTION_DAYS: &str = "90";

/// The run's facts GitHub puts both in the `github` context and (upper-cased, with `GITHUB_`
/// before them) in the environment.
struct Defaults(Vec<(&'static str, String)>);

impl Defaults {
    fn of(lease: &Lease, workflow_name: &str) -> Defaults {
        let owner = lease.repository.split('/').next().unwrap_or_default().to_owned();
        let ref_type = if lease.git_ref.starts_with("refs/tags/") { "tag" } else { "branch" };
        let server = lease.server_url.trim_end_matches('/').to_owned();
        let server = if server.is_empty() {
            // Older servers did not say; the clone URL starts with it.
            lease.clone_url.strip_suffix(&format!("/{}.git", lease.repository)).unwrap_or_default().to_owned()
        } else {
            server
        };
        let workflow = if workflow_name.is_empty() { lease.workflow_path.clone() } else { workflow_name.to_owned() };
        let (head_ref, base_ref) = match &lease.event_payload {
            serde_json::Value::Object(p) => (
                p.get("pull_request").and_then(|pr| pr["head"]["ref"].as_str()).unwrap_or_default().to_owned(),
                p.get("pull_request").and_then(|pr| pr["base"]["ref"].as_str()).unwrap_or_default().to_owned(),
            ),
            _ => (String::new(), String::new()),
        };
        Defaults(vec![
            ("sha", lease.sha.clone()),
            ("ref", lease.git_ref.clone()),
            ("ref_name", gitstratum_workflow::plan::ref_name(&lease.git_ref).to_owned()),
            ("ref_type", ref_type.to_owned()),
            ("repository", lease.repository.clone()),
            ("repository_id", lease.repository_id.to_string()),
            ("repository_owner", owner),
            ("repository_owner_id", lease.repository_owner_id.to_string()),
            ("actor", lease.actor.clone()),
            ("actor_id", lease.actor_id.map(|id| id.to_string()).unwrap_or_default()),
            ("triggering_actor", lease.actor.clone()),
            ("event_name", lease.event.clone()),
            ("run_id", lease.run_id.to_string()),
            ("run_number", lease.run_number.to_string()),
            ("run_attempt", lease.attempt.to_string()),
            ("server_url", server.clone()),
            ("api_url", format!("{server}/api/v1")),
            ("workflow", workflow),
            ("workflow_ref", format!("{}/{}@{}", lease.repository, lease.workflow_path, lease.git_ref)),
            ("workflow_sha", lease.sha.clone()),
            ("head_ref", head_ref),
            ("base_ref", base_ref),
        ])
    }

    fn github_fields(&self) -> &[(&'static str, String)] {
        &self.0
    }
}

pub(crate) fn env_value(env: &BTreeMap<String, String>) -> Value {
    Value::object(env.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Succeeded,
    Failed,
    TimedOut,
    Stopped,
}

impl Outcome {
    /// The step's `outcome` in the `steps` context.
    pub(crate) fn word(self) -> &'static str {
        match self {
            Outcome::Succeeded => "success",
            Outcome::Failed | Outcome::TimedOut => "failure",
            Outcome::Stopped => "cancelled",
        }
    }
}

/// Puts directories a step added (`$GITHUB_PATH`, in the order written) before `PATH`, so the
/// first one written comes first.
/// A step's header, as GitHub's runner writes it: a group titled with the step's name holding
/// what it runs (the script as written, or the action's `with:` inputs); the step's own output
/// follows outside the group.
fn step_header(log: &LogWriter, title: &str, step: &Step) {
    log.line(&format!("##[group]{title}"));
    match &step.action {
        StepAction::Run(script) => {
            for line in script.lines() {
                log.line(line);
            }
        }
        StepAction::Uses { with, .. } | StepAction::Other { with, .. } if !with.is_empty() => {
            log.line("with:");
            for (key, value) in with {
                let shown = match value {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                log.line(&format!("  {key}: {shown}"));
            }
        }
        _ => {}
    }
    log.line("##[endgroup]");
}

pub(crate) fn prepend_path(env: &mut BTreeMap<String, String>, dirs: &[String]) {
    if dirs.is_empty() {
        return;
    }
    let path = env.get("PATH").cloned().unwrap_or_default();
    env.insert("PATH".to_owned(), format!("{}:{path}", dirs.join(":")));
}

pub(crate) async fn run_step(site: StepSite<'_>, stop: &mut watch::Receiver<Signal>) -> Outcome {
    let StepSite { step, job, lease, dirs, place, env, ctx, log, deadline, number, .. } = site;
    match &step.action {
        StepAction::Uses { action, with, .. } => {
            // `with:` values may be templates; numbers and booleans come as they are.
            let mut inputs = BTreeMap::new();
            for (name, value) in with {
                let text = match value {
                    serde_json::Value::Null => continue,
                    serde_json::Value::String(t) => match evaluate(t, &places::STEP, ctx) {
                        Ok(v) => v.to_coerced_string(),
                        Err(e) => {
                            log.line(&format!("error: {}: {name}: {e}", action.name()));
                            return Outcome::Failed;
                        }
                    },
                    other => other.to_string(),
                };
                inputs.insert(name.clone(), text);
            }
            let inputs = actions::Inputs(inputs);
            let cx = actions::ActionCx { client: place.client, runner: place.runner, lease, dirs, log, number };
            match action {
                BuiltinAction::Checkout => checkout_step(&inputs, lease, dirs, log, deadline, stop).await,
                BuiltinAction::UploadArtifact => actions::upload_artifact(&cx, &inputs).await,
                BuiltinAction::DownloadArtifact => actions::download_artifact(&cx, &inputs).await,
                BuiltinAction::Cache => {
                    let (outcome, pending) = actions::restore_cache(&cx, &inputs).await;
                    if let Some(pending) = pending {
                        place.post.lock().unwrap_or_else(|e| e.into_inner()).push(pending);
                    }
                    outcome
                }
            }
        }
        StepAction::Other { .. } => uses::run_action(site, stop).await,
        StepAction::Run(script) => {
            let script = match evaluate(script, &places::STEP, ctx) {
                Ok(v) => v.to_coerced_string(),
                Err(e) => {
                    log.line(&format!("error: {e}"));
                    return Outcome::Failed;
                }
            };
            let file = format!("step-{number}.sh");
            if let Err(e) = std::fs::write(dirs.scripts.join(&file), &script) {
                log.line(&format!("error: cannot write the step's script: {e}"));
                return Outcome::Failed;
            }
            let inside = format!("{}/{file}", sandbox::SCRIPTS);
            // `shell` and `working-directory` may hold expressions (`${{ matrix.dir }}`).
            let text = |t: Option<&String>| -> Result<Option<String>, String> {
                t.map(|t| evaluate(t, &places::STEP, ctx).map(|v| v.to_coerced_string())).transpose()
            };
            let (shell, dir) = match (
                text(step.shell.as_ref().or(job.defaults.shell.as_ref())),
                text(step.working_directory.as_ref().or(job.defaults.working_directory.as_ref())),
            ) {
                (Ok(shell), Ok(dir)) => (shell.unwrap_or_else(|| "bash".to_owned()), dir),
                (Err(e), _) | (_, Err(e)) => {
                    log.line(&format!("##[error]{e}"));
                    return Outcome::Failed;
                }
            };
            let argv: Vec<String> = match shell.as_str() {
                "bash" => {
                    vec!["bash".into(), "--noprofile".into(), "--norc".into(), "-eo".into(), "pipefail".into(), inside]
                }
                "sh" => vec!["sh".into(), "-e".into(), inside],
                "python" => vec!["python3".into(), inside],
                custom if custom.contains("{0}") => {
                    custom.split_whitespace().map(|w| w.replace("{0}", &inside)).collect()
                }
                custom => {
                    let mut words: Vec<String> = custom.split_whitespace().map(str::to_owned).collect();
                    words.push(inside);
                    words
                }
            };
            let cwd = match dir {
                Some(d) if d.starts_with('/') => d,
                Some(d) => format!("{}/{d}", sandbox::WORKSPACE),
                None => sandbox::WORKSPACE.to_owned(),
            };
            sandboxed(place, dirs, &argv, &cwd, env, log, deadline, stop).await
        }
    }
}

/// Runs `argv` in the job's sandbox (and cgroups) from `cwd`, saying so when the step was
/// stopped by the job's memory or process limit.
#[allow(clippy::too_many_arguments)] // a process's whole situation
pub(crate) async fn sandboxed(
    place: &JobPlace<'_>,
    dirs: &JobDirs,
    argv: &[String],
    cwd: &str,
    env: &BTreeMap<String, String>,
    log: &LogWriter,
    deadline: Instant,
    stop: &mut watch::Receiver<Signal>,
) -> Outcome {
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let joins = place.cgroup.map(JobCgroup::procs_files).unwrap_or_default();
    let mut cmd = sandbox::command(dirs, place.network, cwd, &env, &joins);
    cmd.args(argv);
    let before = place.cgroup.map(JobCgroup::counters);
    let outcome = run_process(cmd, log, deadline, stop).await;
    if outcome == Outcome::Failed
        && let (Some(cgroup), Some(before)) = (place.cgroup, before)
    {
        match cgroup.hit_since(before) {
            Some(Hit::Memory) => log.line(&format!(
                "error: the step exceeded the job's memory limit ({} MiB)",
                place.limits.memory_bytes >> 20
            )),
            Some(Hit::Processes) => log.line(&format!(
                "error: the step exceeded the job's process limit ({} processes)",
                place.limits.processes
            )),
            None => {}
        }
    }
    outcome
}

/// `actions/checkout`'s inputs: `fetch-depth` (default 1) and `ref`.
async fn checkout_step(
    inputs: &actions::Inputs,
    lease: &Lease,
    dirs: &JobDirs,
    log: &LogWriter,
    deadline: Instant,
    stop: &mut watch::Receiver<Signal>,
) -> Outcome {
    let wanted = inputs.get("ref");
    let depth: u64 = match inputs.0.get("fetch-depth").map(|d| d.trim()) {
        None => 1,
        Some(d) => match d.parse() {
            Ok(d) => d,
            Err(_) => {
                log.line(&format!("error: actions/checkout: fetch-depth {d:?} is not a number"));
                return Outcome::Failed;
            }
        },
    };
    checkout(lease, dirs, log, depth, wanted, deadline, stop).await
}

/// `actions/checkout`: the job's commit into the workspace, fetched with the job's token (passed
/// through git's environment, never on a command line or in the log). Runs on the host: it is
/// our code, not the workflow's.
/// `fetch-depth` (default 1; 0 is the whole history) and `ref` (default: the run's commit) as
/// `actions/checkout` takes them.
async fn checkout(
    lease: &Lease,
    dirs: &JobDirs,
    log: &LogWriter,
    depth: u64,
    wanted: Option<&str>,
    deadline: Instant,
    stop: &mut watch::Receiver<Signal>,
) -> Outcome {
    let what = wanted.unwrap_or(&lease.sha);
    log.line(&format!("Checking out {}@{what} into {}", lease.repository, sandbox::WORKSPACE));
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{}", lease.token));
    let git = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new("git");
        cmd.arg("-C").arg(&dirs.workspace).args(args);
        cmd.env_clear()
            .env("PATH", PATH)
            .env("HOME", &dirs.home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "http.extraHeader")
            .env("GIT_CONFIG_VALUE_0", format!("Authorization: Basic {basic}"));
        cmd
    };
    let depth_arg = format!("--depth={depth}");
    let mut fetch = vec!["fetch", "-q", "--no-tags"];
    if depth > 0 {
        fetch.push(&depth_arg);
    }
    fetch.push(&lease.clone_url);
    fetch.push(what);
    for args in [&["init", "-q"][..], &fetch[..], &["checkout", "-q", "--detach", "FETCH_HEAD"][..]] {
        let outcome = run_process(git(args), log, deadline, stop).await;
        if outcome != Outcome::Succeeded {
            log.line("error: checkout failed");
            return outcome;
        }
    }
    Outcome::Succeeded
}

/// Runs a process in its own process group, its output into the log, until it exits, the deadline
/// passes or the server says stop.
async fn run_process(
    mut cmd: tokio::process::Command,
    log: &LogWriter,
    deadline: Instant,
    stop: &mut watch::Receiver<Signal>,
) -> Outcome {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true).process_group(0);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            log.line(&format!("error: cannot start the step: {e}"));
            return Outcome::Failed;
        }
    };
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(pump(out, log.clone())));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(pump(err, log.clone())));
    }
    let until = tokio::time::Instant::from_std(deadline);
    let outcome = tokio::select! {
        status = child.wait() => match status {
            Ok(s) if s.success() => Outcome::Succeeded,
            Ok(s) => {
                log.line(&format!("Process completed with {s}."));
                Outcome::Failed
            }
            Err(e) => {
                log.line(&format!("error: waiting for the step failed: {e}"));
                Outcome::Failed
            }
        },
        _ = tokio::time::sleep_until(until) => {
            terminate(&mut child).await;
            Outcome::TimedOut
        }
        signal = louder(stop) => {
            log.line(if signal == Signal::Stop { "The server took this job back." } else { "The run was cancelled." });
            terminate(&mut child).await;
            Outcome::Stopped
        }
    };
    for reader in readers {
        let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
    }
    outcome
}

/// Resolves with the signal once it is louder than when the process started (so a step that runs
/// after a cancel, `if: always()`, is stopped only by a stop).
async fn louder(stop: &mut watch::Receiver<Signal>) -> Signal {
    let start = *stop.borrow_and_update();
    loop {
        if stop.changed().await.is_err() {
            // The sender is gone (the heartbeat task ended): nothing louder will come.
            std::future::pending::<()>().await;
        }
        let now = *stop.borrow_and_update();
        if now > start {
            return now;
        }
    }
}

/// SIGTERM to the process group, a grace period, then SIGKILL.
async fn terminate(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = tokio::process::Command::new("kill").args(["-TERM", "--", &format!("-{pid}")]).status().await;
        if tokio::time::timeout(GRACE, child.wait()).await.is_ok() {
            return;
        }
        let _ = tokio::process::Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).status().await;
    }
    let _ = child.kill().await;
}

/// Reads a process's output into the log line by line (so workflow commands and masks see whole
/// lines, even when a line arrives in pieces).
async fn pump(mut from: impl tokio::io::AsyncRead + Unpin, log: LogWriter) {
    let mut buf = vec![0u8; 8192];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
        }
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            log.step_line(&String::from_utf8_lossy(&line[..line.len() - 1]));
        }
        if pending.len() > logship::MAX_LINE {
            // A line too long to keep whole goes in pieces, never cut inside a masked value.
            let cut = log.safe_cut(&pending);
            let piece: Vec<u8> = pending.drain(..cut).collect();
            log.step_line(&String::from_utf8_lossy(&piece));
        }
    }
    if !pending.is_empty() {
        log.step_line(&String::from_utf8_lossy(&pending));
    }
}

#[cfg(test)]
mod tests {
    use super::parse_file_commands;

    #[test]
    fn file_commands_parse_as_github_writes_them() {
        let text = "a=1\nempty=\nmulti<<EOF\nline 1\nline 2\nEOF\nb=x=y\nnot a command\n";
        let got = parse_file_commands(text);
        let want = [("a", "1"), ("empty", ""), ("multi", "line 1\nline 2"), ("b", "x=y")];
        assert_eq!(got, want.map(|(k, v)| (k.to_owned(), v.to_owned())));
    }
}
