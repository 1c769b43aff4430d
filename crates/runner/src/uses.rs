//! Steps that use an action other than the built-in ones: `uses: ./path` (an action in the job's
//! workspace, as GitHub runs it: the repository must have been checked out first) and
//! `uses: owner/repo[/path]@ref` (an action of another repository of this installation, resolved
//! by the server, cached by commit, shown to the job read-only; [`fetch_remote`]).
//!
//! - **Composite** actions run their steps here, in the outer step's log, with their own `inputs`
//!   and `steps` contexts; what they write to `$GITHUB_ENV`/`$GITHUB_PATH` reaches the rest of the
//!   job, and their `outputs` (evaluated over their steps) become the outer step's outputs.
//! - **JavaScript** actions (`node12` … `node24`) run `node main` in the sandbox with `INPUT_*`,
//!   `GITHUB_ACTION_PATH` and the step's files, as `@actions/core` expects; a `post` script runs
//!   at the job's end (in reverse order, under `post-if`, default `always()`) with the `STATE_*`
//!   the `pre` and main scripts saved. `pre` runs before the job's first step for actions of other
//!   repositories ([`run_pre_scripts`]), not for a local one (GitHub does not either: the action
//!   is not there before the checkout).
//! - **Docker** actions are refused with a message naming the step.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, Instant};

use gitstratum_workflow::action::{ACTION_FILES, Action, ActionRuns, RemoteAction as Remote, load_action};
use gitstratum_workflow::expr::{Dict, Value};
use gitstratum_workflow::load::places;
use gitstratum_workflow::model::{Job, Step, StepAction};
use tokio::sync::watch;

use crate::exec::{
    FileKind, JobPlace, Outcome, StepContext, StepFiles, env_value, evaluate, flag, holds, minutes, prepare_step,
    prepend_path, record_step, run_step, sandboxed, step_action_names,
};
use crate::logship::LogWriter;
use crate::protocol::{Lease, Signal};
use crate::sandbox::{self, JobDirs};

/// GitHub's limit on actions nested in composite actions.
const MAX_DEPTH: usize = 10;
/// The largest `action.yml` read.
const MAX_ACTION_FILE: u64 = 1 << 20;

/// A `post` script a JavaScript action left for the job's end.
pub(crate) struct PostStep {
    pub(crate) title: String,
    pub(crate) argv: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    /// The `post-if` condition (an expression), GitHub's default `always()`.
    pub(crate) condition: String,
    /// The outer step's label, for the post's own files.
    pub(crate) label: String,
}

/// One step's whole situation, handed down to the actions it runs.
#[derive(Clone, Copy)]
pub(crate) struct StepSite<'a> {
    pub(crate) step: &'a Step,
    pub(crate) job: &'a Job,
    pub(crate) lease: &'a Lease,
    pub(crate) dirs: &'a JobDirs,
    pub(crate) place: &'a JobPlace<'a>,
    pub(crate) env: &'a BTreeMap<String, String>,
    pub(crate) ctx: &'a StepContext,
    pub(crate) log: &'a LogWriter,
    pub(crate) deadline: Instant,
    pub(crate) number: usize,
    pub(crate) files: &'a StepFiles,
    /// How many composite actions this step is inside.
    pub(crate) depth: usize,
}

/// Runs a step that uses a non-built-in action.
pub(crate) fn run_action<'a>(
    site: StepSite<'a>,
    stop: &'a mut watch::Receiver<Signal>,
) -> Pin<Box<dyn Future<Output = Outcome> + Send + 'a>> {
    Box::pin(async move {
        let StepAction::Other { reference, .. } = &site.step.action else { return Outcome::Failed };
        let log = site.log;
        if let Some(image) = reference.strip_prefix("docker://") {
            log.line(&format!(
                "##[error]The step uses the Docker image '{image}': Docker actions need a container executor, which this runner does not have."
            ));
            return Outcome::Failed;
        }
        if site.depth >= MAX_DEPTH {
            log.line(&format!("##[error]'{reference}' is nested {MAX_DEPTH} composite actions deep, GitHub's limit."));
            return Outcome::Failed;
        }
        let local = reference.strip_prefix("./").or_else(|| reference.strip_prefix(".\\"));
        let remote = if local.is_some() { None } else { Remote::parse(reference) };
        let found = match (local, &remote) {
            (Some(rel), _) => locate(site.dirs, rel),
            (None, Some(remote)) => fetch_remote(&site, remote).await,
            (None, None) => Err(format!("'{reference}' is not an action reference (owner/repo[/path]@ref or ./path)")),
        };
        let (host_dir, inside_dir, root) = match found {
            Ok(found) => found,
            Err(e) => {
                log.line(&format!("##[error]{e}"));
                return Outcome::Failed;
            }
        };
        let action = match read_action(&host_dir, &inside_dir, &root) {
            Ok(action) => action,
            Err(lines) => {
                for line in lines {
                    log.line(&format!("##[error]{line}"));
                }
                return Outcome::Failed;
            }
        };
        // The action's own place in `github` and the environment: `action_path`, and for an action
        // of another repository `action_repository`/`action_ref` (empty for a local one).
        let (repository, git_ref) =
            remote.map_or_else(Default::default, |r| (format!("{}/{}", r.owner, r.repo), r.git_ref));
        let mut env = site.env.clone();
        let mut ctx = site.ctx.clone();
        let mut github = match ctx.values.get("github") {
            Some(Value::Object(github)) => (**github).clone(),
            _ => Dict::new(),
        };
        for (field, variable, value) in [
            ("action_path", "GITHUB_ACTION_PATH", &inside_dir),
            ("action_repository", "GITHUB_ACTION_REPOSITORY", &repository),
            ("action_ref", "GITHUB_ACTION_REF", &git_ref),
        ] {
            github.set(field, Value::from(value.as_str()));
            env.insert(variable.to_owned(), value.clone());
        }
        ctx.values.set("github", Value::object(github));
        let site = StepSite { env: &env, ctx: &ctx, ..site };
        let inputs = match action_inputs(&action, &site) {
            Ok(inputs) => inputs,
            Err(e) => {
                log.line(&format!("##[error]{reference}: {e}"));
                return Outcome::Failed;
            }
        };
        match &action.runs {
            ActionRuns::Docker { image } => {
                log.line(&format!(
                    "##[error]The step uses '{reference}', a Docker action (image '{image}'): Docker actions need a container executor, which this runner does not have."
                ));
                Outcome::Failed
            }
            ActionRuns::Node { main, post, post_if, .. } => {
                run_node(&site, stop, &inside_dir, main, post.as_deref(), post_if.as_deref(), &inputs).await
            }
            ActionRuns::Composite { steps } => run_composite(&site, stop, &action, steps, inputs).await,
        }
    })
}

/// The action's directory on the host and inside the sandbox; it must be in the workspace.
fn locate(dirs: &JobDirs, rel: &str) -> Result<(PathBuf, String, PathBuf), String> {
    let rel = rel.trim_end_matches(['/', '\\']);
    let root = dirs.workspace.canonicalize().map_err(|e| format!("the workspace is not readable: {e}"))?;
    let shown = if rel.is_empty() { sandbox::WORKSPACE.to_owned() } else { format!("{}/{rel}", sandbox::WORKSPACE) };
    let missing = || no_action_under(&shown);
    let real = dirs.workspace.join(rel).canonicalize().map_err(|_| missing())?;
    let Ok(under) = real.strip_prefix(&root) else {
        return Err(format!("'./{rel}' leads outside the workspace ({shown})"));
    };
    let inside = if under.as_os_str().is_empty() {
        sandbox::WORKSPACE.to_owned()
    } else {
        format!("{}/{}", sandbox::WORKSPACE, under.display())
    };
    if !real.is_dir() {
        return Err(missing());
    }
    Ok((real, inside, root))
}

/// Reads and validates the action's metadata; a directory with only a `Dockerfile` is a Docker
/// action. Errors come as log lines, positioned in the file.
fn read_action(dir: &Path, inside: &str, root: &Path) -> Result<Action, Vec<String>> {
    for name in ACTION_FILES {
        let path = dir.join(name);
        let Ok(real) = path.canonicalize() else { continue };
        if !real.starts_with(root) {
            return Err(vec![format!("{inside}/{name} leads outside the workspace")]);
        }
        let text = match read_bounded(&real) {
            Ok(text) => text,
            Err(e) => return Err(vec![format!("{inside}/{name}: {e}")]),
        };
        return load_action(&text)
            .map_err(|diags| diags.iter().map(|d| format!("{}", d.display_in(&format!("{inside}/{name}")))).collect());
    }
    if dir.join("Dockerfile").is_file() {
        return Ok(Action {
            name: String::new(),
            description: String::new(),
            inputs: Default::default(),
            outputs: Default::default(),
            runs: ActionRuns::Docker { image: "Dockerfile".to_owned() },
        });
    }
    Err(vec![no_action_under(inside)])
}

/// GitHub's message for a directory with no action in it.
fn no_action_under(dir: &str) -> String {
    format!(
        "Can't find 'action.yml', 'action.yaml' or 'Dockerfile' under '{dir}'. Did you forget to run actions/checkout before running your local action?"
    )
}

fn read_bounded(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(MAX_ACTION_FILE + 1).read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_ACTION_FILE {
        return Err(format!("larger than {} KiB", MAX_ACTION_FILE >> 10));
    }
    String::from_utf8(bytes).map_err(|_| "not UTF-8".to_owned())
}

/// The action's inputs: each declared one from the step's `with:` (names are case-insensitive),
/// else its default (evaluated where the step runs), else empty; undeclared ones given in
/// `with:` are kept (a JavaScript action still sees them as `INPUT_*`) after a warning, as
/// GitHub's runner does.
fn action_inputs(action: &Action, site: &StepSite<'_>) -> Result<Vec<(String, String)>, String> {
    let StepAction::Other { with, .. } = &site.step.action else { return Ok(Vec::new()) };
    let mut given: Vec<(String, String)> = Vec::new();
    for (name, value) in with {
        let text = match value {
            serde_json::Value::Null => continue,
            serde_json::Value::String(t) => {
                evaluate(t, &places::STEP, site.ctx).map_err(|e| format!("{name}: {e}"))?.to_coerced_string()
            }
            other => other.to_string(),
        };
        given.push((name.clone(), text));
    }
    let declared = |name: &str| action.inputs.keys().any(|k| k.eq_ignore_ascii_case(name));
    let unexpected: Vec<&str> = given.iter().map(|(k, _)| k.as_str()).filter(|k| !declared(k)).collect();
    if !unexpected.is_empty() && !action.inputs.is_empty() {
        let valid: Vec<String> = action.inputs.keys().map(|k| format!("'{k}'")).collect();
        let unexpected: Vec<String> = unexpected.iter().map(|k| format!("'{k}'")).collect();
        site.log.line(&format!(
            "##[warning]Unexpected input(s) {}, valid inputs are [{}]",
            unexpected.join(", "),
            valid.join(", ")
        ));
    }
    let mut out = Vec::new();
    for (name, input) in &action.inputs {
        let value = match given.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)) {
            Some((_, v)) => {
                if let Some(message) = &input.deprecation_message {
                    site.log.line(&format!("##[warning]Input '{name}' has been deprecated with message: {message}"));
                }
                v.clone()
            }
            None => match &input.default {
                Some(default) => evaluate(default, &places::ACTION_INPUT_DEFAULT, site.ctx)
                    .map_err(|e| format!("the default of input '{name}': {e}"))?
                    .to_coerced_string(),
                None => String::new(),
            },
        };
        out.push((name.clone(), value));
    }
    out.extend(given.into_iter().filter(|(k, _)| !declared(k)));
    Ok(out)
}

async fn run_composite(
    site: &StepSite<'_>,
    stop: &mut watch::Receiver<Signal>,
    action: &Action,
    steps: &[Step],
    inputs: Vec<(String, String)>,
) -> Outcome {
    let log = site.log;
    let mut cx = site.ctx.clone();
    cx.failed = false;
    let declared: Dict = inputs
        .iter()
        .filter(|(k, _)| action.inputs.keys().any(|d| d.eq_ignore_ascii_case(k)))
        .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
        .collect();
    cx.values.set("inputs", Value::object(declared));
    cx.values.set("steps", Value::object(Dict::new()));
    let mut env = site.env.clone();
    // What the action's steps change for the rest of the job, handed up through the outer
    // step's files.
    let mut env_changes: Vec<(String, String)> = Vec::new();
    let mut path_prefix: Vec<String> = Vec::new();
    let mut timed_out = false;
    let names = step_action_names(steps);
    for (index, inner) in steps.iter().enumerate() {
        match *stop.borrow() {
            Signal::Stop => return Outcome::Stopped,
            Signal::Cancel => cx.cancelled = true,
            Signal::Continue => {}
        }
        let mut step_env = env.clone();
        step_env.insert("GITHUB_ACTION".to_owned(), names.get(index).cloned().unwrap_or_default());
        let mut errors: Vec<String> = Vec::new();
        let runs =
            prepare_step(inner, (&places::ACTION_STEP, &places::ACTION_STEP_IF), &mut cx, &mut step_env, &mut errors);
        if !runs {
            continue;
        }
        log.line(&inner.display_name());
        let label = format!("{}.{}", site.files.label(), index + 1);
        let files = StepFiles::create(site.dirs, &label);
        files.set_env(&mut step_env);
        let mut deadline = site.deadline;
        if let Some(limit) = &inner.timeout_minutes {
            match minutes(limit, &places::ACTION_STEP, &cx) {
                Ok(m) => deadline = deadline.min(Instant::now() + Duration::from_secs_f64((m * 60.0).max(1.0))),
                Err(e) => errors.push(e),
            }
        }
        let outcome = if !errors.is_empty() {
            for e in &errors {
                log.line(&format!("##[error]{e}"));
            }
            Outcome::Failed
        } else {
            let inner_site = StepSite {
                step: inner,
                job: site.job,
                lease: site.lease,
                dirs: site.dirs,
                place: site.place,
                env: &step_env,
                ctx: &cx,
                log,
                deadline,
                number: site.number,
                files: &files,
                depth: site.depth + 1,
            };
            run_step(inner_site, stop).await
        };
        let (written, outcome) = files.collect(log, outcome);
        for (key, value) in &written.env {
            env.insert(key.clone(), value.clone());
            env_changes.push((key.clone(), value.clone()));
        }
        prepend_path(&mut env, &written.path);
        path_prefix.splice(0..0, written.path.iter().cloned());
        if !written.summary.is_empty() {
            site.files.append(FileKind::Summary, &written.summary);
        }
        let conclusion = match outcome {
            Outcome::Succeeded => "success",
            Outcome::Failed | Outcome::TimedOut if flag(&inner.continue_on_error, &places::ACTION_STEP, &cx) => {
                "success"
            }
            Outcome::Failed => {
                cx.failed = true;
                "failure"
            }
            Outcome::TimedOut => {
                log.line("error: the step ran out of time (timeout-minutes)");
                cx.failed = true;
                timed_out |= deadline >= site.deadline;
                "failure"
            }
            Outcome::Stopped => {
                cx.cancelled = true;
                "cancelled"
            }
        };
        if let Some(id) = &inner.id {
            record_step(&mut cx.values, id, &written.outputs, outcome.word(), conclusion);
        }
    }
    // The action's outputs, over its steps; then everything handed up to the outer step.
    cx.values.set("env", env_value(&env));
    let mut outputs = String::new();
    for (name, output) in &action.outputs {
        let Some(template) = &output.value else { continue };
        match evaluate(template, &places::ACTION_OUTPUT, &cx) {
            Ok(v) => outputs.push_str(&file_command(name, &v.to_coerced_string())),
            Err(e) => log.line(&format!("##[warning]output {name}: {e}")),
        }
    }
    site.files.append(FileKind::Output, &outputs);
    let env_text: String = env_changes.iter().map(|(k, v)| file_command(k, v)).collect();
    site.files.append(FileKind::Env, &env_text);
    let path_text: String = path_prefix.iter().map(|p| format!("{p}\n")).collect();
    site.files.append(FileKind::Path, &path_text);
    if *stop.borrow() == Signal::Stop || (cx.cancelled && !site.ctx.cancelled) {
        Outcome::Stopped
    } else if timed_out {
        Outcome::TimedOut
    } else if cx.failed {
        Outcome::Failed
    } else {
        Outcome::Succeeded
    }
}

/// One entry in GitHub's file-command format, with a delimiter the value does not contain.
pub(crate) fn file_command(name: &str, value: &str) -> String {
    let mut n = 0u32;
    let mut delimiter = "ghadelimiter_gitstratum".to_owned();
    while value.lines().any(|l| l == delimiter) || name.contains(&delimiter) {
        n += 1;
        delimiter = format!("ghadelimiter_gitstratum_{n}");
    }
    format!("{name}<<{delimiter}\n{value}\n{delimiter}\n")
}

/// `INPUT_<NAME>`: the name upper-cased with spaces as `_`, as `@actions/core` reads it.
fn input_variable(name: &str) -> String {
    format!("INPUT_{}", name.replace(' ', "_").to_uppercase())
}

async fn run_node(
    site: &StepSite<'_>,
    stop: &mut watch::Receiver<Signal>,
    inside_dir: &str,
    main: &str,
    post: Option<&str>,
    post_if: Option<&str>,
    inputs: &[(String, String)],
) -> Outcome {
    let mut env = site.env.clone();
    for (name, value) in inputs {
        env.insert(input_variable(name), value.clone());
    }
    // What the action's `pre` script saved, if it ran.
    for (key, value) in StepFiles::saved_state(site.dirs, &format!("pre-{}", site.files.label())) {
        env.insert(format!("STATE_{key}"), value);
    }
    let script = |file: &str| format!("{inside_dir}/{}", file.trim_start_matches("./"));
    let argv = vec!["node".to_owned(), script(main)];
    let outcome =
        sandboxed(site.place, site.dirs, &argv, sandbox::WORKSPACE, &env, site.log, site.deadline, stop).await;
    if let Some(post) = post {
        let mut post_env = env.clone();
        // The post script gets its own files; what the main one saved comes back as STATE_*.
        post_env.retain(|k, _| !crate::exec::STEP_FILE_VARIABLES.contains(&k.as_str()));
        site.place.post_scripts.lock().unwrap_or_else(|e| e.into_inner()).push(PostStep {
            title: format!("Post {}", site.step.display_name()),
            argv: vec!["node".to_owned(), script(post)],
            env: post_env.into_iter().collect(),
            condition: post_if.unwrap_or("always()").to_owned(),
            label: site.files.label().to_owned(),
        });
    }
    outcome
}

/// The most files and bytes of one action repository the runner unpacks (the server sends no more).
const MAX_ACTION_FILES: u64 = 20_000;
const MAX_ACTION_BYTES: u64 = 256 << 20;

/// Percent-encodes all but RFC 3986's unreserved characters.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Resolves a remote action to a commit (the server checks the job may use the repository),
/// fetches that commit's files into the runner's cache unless they are there already, and links
/// them into the job's read-only actions directory, once per job. Returns the action's directory
/// on the host and inside the sandbox, and the root it must stay in.
async fn fetch_remote(site: &StepSite<'_>, remote: &Remote) -> Result<Placed, String> {
    let key = remote.shown() + "/" + &remote.path;
    if let Some(placed) = site.place.resolved.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(placed.clone());
    }
    let placed = fetch_remote_once(site, remote).await?;
    site.place.resolved.lock().unwrap_or_else(|e| e.into_inner()).insert(key, placed.clone());
    Ok(placed)
}

/// Where an action is: its directory on the host, inside the sandbox, and the root it must stay in.
pub(crate) type Placed = (PathBuf, String, PathBuf);

async fn fetch_remote_once(site: &StepSite<'_>, remote: &Remote) -> Result<Placed, String> {
    use crate::protocol::Answer;
    let (client, runner, lease) = (site.place.client, site.place.runner, site.lease);
    let shown = remote.shown();
    let rest =
        format!("actions/{}/{}?attempt={}&ref={}", remote.owner, remote.repo, lease.attempt, encode(&remote.git_ref));
    let resolved = client
        .job_request(reqwest::Method::GET, runner, lease.job_id, &rest, None)
        .await
        .map_err(|e| format!("Unable to resolve action '{shown}': {e}"))?;
    let commit = match resolved {
        Answer::Ok(v) => v["commit"].as_str().unwrap_or_default().to_owned(),
        Answer::No(_, message) => return Err(format!("Unable to resolve action '{shown}': {message}")),
        Answer::LeaseLost => return Err("the job is no longer this runner's".to_owned()),
    };
    if commit.len() != 40 || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("Unable to resolve action '{shown}': the server named no commit"));
    }
    let (owner, repo) = (remote.owner.to_lowercase(), remote.repo.to_lowercase());
    let cached = site.place.actions_cache.join(&owner).join(&repo).join(&commit);
    if cached.is_dir() {
        site.log.line(&format!("Using action repository '{shown}' (SHA:{commit}) from this runner's cache"));
    } else {
        site.log.line(&format!("Download action repository '{shown}' (SHA:{commit})"));
        static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seq = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let archive = site.dirs.root.join(format!("action-{seq}.archive"));
        let rest = format!("actions/{}/{}/archive?attempt={}&ref={commit}", remote.owner, remote.repo, lease.attempt);
        let fetched = client.download(runner, lease.job_id, &rest, &archive).await.map_err(|e| e.to_string());
        match fetched {
            Ok(Answer::Ok(_)) => {}
            Ok(Answer::No(_, message)) | Err(message) => {
                let _ = std::fs::remove_file(&archive);
                return Err(format!("Unable to download action '{shown}': {message}"));
            }
            Ok(Answer::LeaseLost) => return Err("the job is no longer this runner's".to_owned()),
        }
        // Unpacked beside the cache entry, then renamed into place: an entry is whole or absent.
        let parent = cached.parent().map(Path::to_path_buf).unwrap_or_default();
        let tmp = parent.join(format!(".tmp-{}-{seq}-{commit}", std::process::id()));
        let (from, into, to) = (archive.clone(), tmp, cached.clone());
        let placed = tokio::task::spawn_blocking(move || -> Result<(), String> {
            std::fs::create_dir_all(&into).map_err(|e| e.to_string())?;
            let limits = gitstratum_artifact::Limits { max_bytes: MAX_ACTION_BYTES, max_files: MAX_ACTION_FILES };
            let unpacked = crate::files::extract(&from, &limits, |path| Some((into.clone(), path.to_owned())))
                .and_then(|_| match std::fs::rename(&into, &to) {
                    Ok(()) => Ok(()),
                    Err(_) if to.is_dir() => Ok(()), // another job of this runner placed it first
                    Err(e) => Err(e.to_string()),
                });
            if into.exists() {
                let _ = std::fs::remove_dir_all(&into);
            }
            unpacked
        })
        .await
        .map_err(|e| e.to_string())?;
        let _ = std::fs::remove_file(&archive);
        placed.map_err(|e| format!("Unable to unpack action '{shown}': {e}"))?;
    }
    let root = site.dirs.actions.join(&owner).join(&repo).join(&commit);
    if !root.is_dir() {
        let (from, to) = (cached, root.clone());
        tokio::task::spawn_blocking(move || link_tree(&from, &to))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("Unable to place action '{shown}' for the job: {e}"))?;
    }
    let mut inside = format!("{}/{owner}/{repo}/{commit}", sandbox::ACTIONS);
    let mut host = root.clone();
    if !remote.path.is_empty() {
        host = host.join(&remote.path);
        inside = format!("{inside}/{}", remote.path);
    }
    if !host.is_dir() {
        return Err(format!(
            "Can't find 'action.yml', 'action.yaml' or 'Dockerfile' for action '{shown}' under '{inside}'"
        ));
    }
    let host = host.canonicalize().map_err(|e| e.to_string())?;
    let root = root.canonicalize().map_err(|e| e.to_string())?;
    Ok((host, inside, root))
}

/// Recreates the directory tree `from` at `to` with hard links to its files (copies where a link
/// cannot be made): the job sees them read-only, so the runner's cache cannot be changed through
/// them.
fn link_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            link_tree(&src, &dst)?;
        } else if kind.is_file() && std::fs::hard_link(&src, &dst).is_err() {
            std::fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}

/// Runs the `pre` scripts of the JavaScript actions of other repositories the job's steps use,
/// in step order, each under its `pre-if` (default `always()`), with the step's inputs; what a
/// script saves in `$GITHUB_STATE` reaches the action's main and post scripts as `STATE_*`.
/// An action that cannot be fetched here is left for its step to report. False when a `pre`
/// script failed (the job then fails, as on GitHub).
#[allow(clippy::too_many_arguments)] // the job's whole situation
pub(crate) async fn run_pre_scripts(
    job: &Job,
    lease: &Lease,
    dirs: &JobDirs,
    place: &JobPlace<'_>,
    env: &BTreeMap<String, String>,
    ctx: &StepContext,
    log: &LogWriter,
    deadline: Instant,
    stop: &mut watch::Receiver<Signal>,
) -> bool {
    let mut ok = true;
    for (index, step) in job.steps.iter().enumerate() {
        let StepAction::Other { reference, .. } = &step.action else { continue };
        let Some(remote) = Remote::parse(reference) else { continue };
        if *stop.borrow() == Signal::Stop {
            return ok;
        }
        let number = index + 1;
        let label = format!("pre-{number}");
        let files = StepFiles::create(dirs, &label);
        let site = StepSite { step, job, lease, dirs, place, env, ctx, log, deadline, number, files: &files, depth: 0 };
        let Ok((host, inside, root)) = fetch_remote(&site, &remote).await else { continue };
        let Ok(action) = read_action(&host, &inside, &root) else { continue };
        let ActionRuns::Node { pre: Some(pre), pre_if, .. } = &action.runs else { continue };
        let condition = pre_if.as_deref().unwrap_or("always()");
        match holds(condition, &places::ACTION_STEP_IF, ctx) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                log.line(&format!("##[error]Pre {}: pre-if: {e}", step.display_name()));
                ok = false;
                continue;
            }
        }
        log.line(&format!("##[group]Pre {}", step.display_name()));
        let outcome = match action_inputs(&action, &site) {
            Ok(inputs) => {
                let mut env = env.clone();
                env.insert("GITHUB_ACTION_PATH".to_owned(), inside.clone());
                for (name, value) in &inputs {
                    env.insert(input_variable(name), value.clone());
                }
                files.set_env(&mut env);
                log.begin_step_commands(false);
                let argv = vec!["node".to_owned(), format!("{inside}/{}", pre.trim_start_matches("./"))];
                let outcome = sandboxed(place, dirs, &argv, sandbox::WORKSPACE, &env, log, deadline, stop).await;
                files.collect(log, outcome).1
            }
            Err(e) => {
                log.line(&format!("##[error]{reference}: {e}"));
                Outcome::Failed
            }
        };
        log.line("##[endgroup]");
        if outcome != Outcome::Succeeded {
            ok = false;
        }
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_are_percent_encoded() {
        assert_eq!(encode("releases/v1 x"), "releases%2Fv1%20x");
    }

    #[test]
    fn file_commands_carry_values_of_several_lines() {
        assert_eq!(file_command("a", "x\ny"), "a<<ghadelimiter_gitstratum\nx\ny\nghadelimiter_gitstratum\n");
        assert!(file_command("a", "ghadelimiter_gitstratum").contains("ghadelimiter_gitstratum_1"));
    }
}
