//! `gitstratum workflow validate|plan`: checks workflow files on a laptop, without a server.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Subcommand, ValueEnum};
use gitstratum_workflow::plan::{GithubEvent, PlanContext, github_context, plan};
use gitstratum_workflow::trigger::{PushEvent, push_triggers};
use gitstratum_workflow::{WORKFLOW_DIRS, is_workflow_file, load};

#[derive(Subcommand)]
pub enum WorkflowCommand {
    /// Check workflow files; prints `file:line:col: message` for each problem and exits 1 if any.
    Validate {
        /// Files to check [default: every workflow file of the repository in the current directory]
        files: Vec<PathBuf>,
    },
    /// Show whether an event starts a workflow, and the jobs it would run.
    Plan {
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = Event::Push)]
        event: Event,
        /// The ref the event is for
        #[arg(long = "ref", default_value = "refs/heads/main")]
        git_ref: String,
        /// A file the push changed (repeatable); without it, path filters are not applied
        #[arg(long = "changed", value_name = "PATH")]
        changed: Vec<String>,
    },
    /// Start a workflow_dispatch run on the server you are logged in to
    Run {
        /// The repository, OWNER/REPO
        repo: String,
        /// The workflow file's name, e.g. deploy.yml
        file: String,
        /// The branch, tag or full ref to run at
        #[arg(long = "ref", default_value = "main")]
        git_ref: String,
        /// An input, KEY=VALUE (repeatable)
        #[arg(short = 'f', long = "field", value_name = "KEY=VALUE")]
        fields: Vec<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Event {
    Push,
    WorkflowDispatch,
    Schedule,
}

pub fn run(command: WorkflowCommand, json_out: bool) -> anyhow::Result<()> {
    match command {
        WorkflowCommand::Run { repo, file, git_ref, fields } => {
            crate::client_cmd::workflow_run(&repo, &file, &git_ref, &fields, json_out)
        }
        WorkflowCommand::Validate { files } => validate(files),
        WorkflowCommand::Plan { file, event, git_ref, changed } => plan_cmd(&file, event, &git_ref, &changed),
    }
}

/// The workflow files of the repository containing `start`: the first of `.gitstratum/workflows`
/// and `.github/workflows` that exists.
fn discover(start: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let root = start
        .ancestors()
        .find(|dir| dir.join(".git").exists())
        .with_context(|| format!("{} is not inside a Git repository; name the files to check", start.display()))?;
    let Some(dir) = WORKFLOW_DIRS.iter().map(|d| root.join(d)).find(|d| d.is_dir()) else {
        bail!("no workflow folder in {} (looked for {})", root.display(), WORKFLOW_DIRS.join(" and "));
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.file_name().and_then(|n| n.to_str()).is_some_and(is_workflow_file))
        .collect();
    files.sort();
    // Show paths as the user would type them from here.
    Ok(files.into_iter().map(|f| f.strip_prefix(start).map(Path::to_path_buf).unwrap_or(f)).collect())
}

fn validate(files: Vec<PathBuf>) -> anyhow::Result<()> {
    let files = if files.is_empty() { discover(&std::env::current_dir()?)? } else { files };
    let mut problems = 0;
    for file in &files {
        let shown = file.display().to_string();
        let source = std::fs::read_to_string(file).with_context(|| format!("cannot read {shown}"))?;
        match load(&source) {
            Ok(wf) => println!("ok: {shown} ({} job{})", wf.jobs.len(), if wf.jobs.len() == 1 { "" } else { "s" }),
            Err(diags) => {
                for d in &diags {
                    println!("{}", d.display_in(&shown));
                }
                problems += diags.len();
            }
        }
    }
    if problems > 0 {
        bail!(
            "{problems} problem{} in {} file{}",
            if problems == 1 { "" } else { "s" },
            files.len(),
            if files.len() == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

fn plan_cmd(file: &Path, event: Event, git_ref: &str, changed: &[String]) -> anyhow::Result<()> {
    let shown = file.display().to_string();
    let source = std::fs::read_to_string(file).with_context(|| format!("cannot read {shown}"))?;
    let wf = match load(&source) {
        Ok(wf) => wf,
        Err(diags) => {
            for d in &diags {
                println!("{}", d.display_in(&shown));
            }
            bail!("{shown} is not a valid workflow");
        }
    };
    let (event_name, triggers) = match event {
        Event::Push => {
            let paths = (!changed.is_empty()).then_some(changed);
            ("push", push_triggers(&wf, &PushEvent { git_ref, changed_paths: paths, deleted: false }))
        }
        Event::WorkflowDispatch => ("workflow_dispatch", wf.on.workflow_dispatch.is_some()),
        Event::Schedule => ("schedule", !wf.on.schedule.is_empty()),
    };
    let title = wf.name.clone().unwrap_or_else(|| shown.clone());
    if !triggers {
        println!("'{title}' does not run on {event_name} to {git_ref}");
        return Ok(());
    }
    let github = github_context(&GithubEvent { event_name, git_ref, workflow: &title, ..Default::default() });
    // Reusable workflows of this repository are read from the working directory (the
    // repository's root, as for `validate`); another repository's cannot be read here.
    let mut resolve = |uses: &str| -> Result<(String, String), String> {
        let Some(path) = uses.strip_prefix("./") else {
            return Err(format!("'{uses}' is in another repository; `workflow plan` reads this one only"));
        };
        std::fs::read_to_string(path)
            .map(|text| (path.to_owned(), text))
            .map_err(|e| format!("cannot read {path}: {e}"))
    };
    let wf = gitstratum_workflow::call::expand_calls(&wf, &mut resolve).map_err(anyhow::Error::msg)?;
    let planned = plan(&wf, &PlanContext { github, ..Default::default() }).map_err(anyhow::Error::msg)?;
    let jobs = planned.jobs;
    let title = planned.run_name.unwrap_or(title);
    println!(
        "'{title}' runs on {event_name} to {git_ref}: {} job{}",
        jobs.len(),
        if jobs.len() == 1 { "" } else { "s" }
    );
    if let Some(c) = &planned.concurrency {
        let cancel = if c.cancel_in_progress { ", cancelling runs in progress" } else { "" };
        println!("  concurrency group: {}{cancel}", c.group);
    }
    let width = jobs.iter().map(|j| j.display_name.chars().count()).max().unwrap_or(0);
    for job in &jobs {
        let calls = wf.jobs.get(&job.job_id).is_some_and(|j| j.call_result.is_some());
        let runs_on = match &job.runs_on {
            _ if calls => "(no runner: ends as the workflow it calls does)".to_owned(),
            Some(labels) => labels.join(", "),
            None => "(decided when its dependencies finish)".to_owned(),
        };
        let mut line = format!("  {:<width$}  runs-on: {runs_on}", job.display_name);
        if !job.needs.is_empty() {
            line.push_str(&format!("  needs: {}", job.needs.join(", ")));
        }
        if job.deferred {
            line.push_str("  (matrix expands when its dependencies finish)");
        }
        println!("{line}");
    }
    Ok(())
}
