//! What a run's workflow files refer to outside themselves, read before the run is planned:
//! the reusable workflows they call (and those call, to GitHub's depth), and the actions of other
//! repositories their steps use, each checked (the repository may be used, the reference names a
//! commit, the action's metadata is there and valid, and it is not a Docker action).
//!
//! Who may use what: a repository may use its own files, any public repository's, and those of
//! private repositories of the same owner, and those whose CI settings share them with the whole
//! installation (`actions_shared`); any other repository is reported missing, as if it did not
//! exist. The API's action endpoints for runners apply the same rule ([`may_use`]).
//!
//! Where from ([`locate`]): a repository of this installation by that name first; when there is
//! none the job may use, the first upstream source (`[actions] sources`, [`crate::upstream`])
//! that has `owner/name`. Everything upstream may be used by every job: the operator chose the
//! sources.

use std::collections::HashMap;
use std::sync::Arc;

use gitstratum_platform::{PlatformStore, Repo};
use gitstratum_store::{ObjectId, ObjectStore, RefStore, RepoId};
use gitstratum_workflow::action::{ACTION_FILES, ActionRuns, RemoteAction, load_action};
use gitstratum_workflow::call;
use gitstratum_workflow::model::StepAction;

use crate::source;
use crate::upstream::{self, Missing, Snapshot, Upstream};

/// What a run's files refer to, by the `uses:` naming it.
#[derive(Debug, Default)]
pub struct References {
    /// Called workflows: `(path to show, text)`, or why they cannot be read.
    pub workflows: HashMap<String, Result<(String, String), String>>,
    /// Actions of other repositories: usable, or why not.
    pub actions: HashMap<String, Result<(), String>>,
}

/// Where references are read from.
#[derive(Clone, Copy)]
pub struct Stores<'a> {
    pub platform: &'a PlatformStore,
    pub ci: &'a crate::CiStore,
    pub objects: &'a Arc<dyn ObjectStore>,
    pub refs: &'a Arc<dyn RefStore>,
    /// Where actions no repository here has are looked up.
    pub upstream: &'a dyn Upstream,
}

/// Whether `repo`'s runs may use `target`'s workflows and actions: its own, a public one, one of
/// the same owner, or one whose CI settings share it with the whole installation.
pub async fn may_use(ci: &crate::CiStore, repo: &Repo, target: &Repo) -> Result<bool, gitstratum_platform::Error> {
    if target.id == repo.id || !target.private || target.owner_id == repo.owner_id {
        return Ok(true);
    }
    Ok(ci.repo_settings(target.id).await?.actions_shared)
}

/// The commit `name` names in a repository: a full commit id that is there, else a tag, else a
/// branch (as git resolves a name). Blocking.
pub fn resolve_name(
    objects: &dyn ObjectStore,
    refs: &dyn RefStore,
    repo: RepoId,
    name: &str,
) -> Result<Option<ObjectId>, String> {
    if name.len() == 40
        && let Ok(id) = ObjectId::from_hex(name.as_bytes())
    {
        return Ok(source::peel_to_commit(objects, repo, id).ok().flatten());
    }
    for full in [format!("refs/tags/{name}"), format!("refs/heads/{name}")] {
        if let Some(id) = refs.get(repo, &full).map_err(|e| e.to_string())?
            && let Some(commit) = source::peel_to_commit(objects, repo, id).map_err(|e| e.to_string())?
        {
            return Ok(Some(commit));
        }
    }
    Ok(None)
}

/// Where the files of another repository's action or workflow are read: a repository of this
/// installation, or a commit fetched from an upstream source.
#[derive(Clone)]
pub struct Located {
    /// `owner/name` as stored here, or as the step named it for an upstream one.
    pub name: String,
    /// The upstream repository's URL; `None` for a repository of this installation.
    pub source: Option<String>,
    pub objects: Arc<dyn ObjectStore>,
    /// The repository id the objects are kept under in `objects`.
    pub repo: RepoId,
    /// The commit the reference named.
    pub commit: ObjectId,
}

impl Located {
    /// The text of the file at `path` of the commit (`None`: no such file).
    pub async fn read_text(&self, path: &str) -> Result<Option<Result<String, String>>, String> {
        let (objects, id, at, file) = (self.objects.clone(), self.repo, self.commit, path.to_owned());
        tokio::task::spawn_blocking(move || {
            source::text_file(objects.as_ref(), id, at, &file).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }
}

/// Why another repository's action or workflow cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unusable {
    /// No repository of that name that the job may use, here or upstream.
    Repository(String),
    /// The repository has no such tag, branch or commit.
    Reference(String),
    /// An upstream source failed.
    Upstream(String),
    /// Storage failed.
    Internal(String),
}

impl std::fmt::Display for Unusable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unusable::Repository(m) | Unusable::Reference(m) | Unusable::Upstream(m) | Unusable::Internal(m) => {
                f.write_str(m)
            }
        }
    }
}

/// The repository `owner/name` that `repo`'s runs may use and the commit `git_ref` names in it: a
/// repository of this installation first (one the job may not use counts as missing), then the
/// first upstream source that has `owner/name`. `what` names the user in messages (`job`).
pub async fn locate(
    stores: Stores<'_>,
    repo: &Repo,
    owner: &str,
    name: &str,
    git_ref: &str,
    what: &str,
) -> Result<Located, Unusable> {
    let internal = |e: String| Unusable::Internal(e);
    let target = match stores.platform.get_repo(owner, name).await {
        Ok(found) => found,
        Err(e) => return Err(internal(e.to_string())),
    };
    let usable = match &target {
        Some(t) => may_use(stores.ci, repo, t).await.map_err(|e| internal(e.to_string()))?,
        None => false,
    };
    if let Some(target) = target.filter(|_| usable) {
        let (objects, refs, wanted, id) =
            (stores.objects.clone(), stores.refs.clone(), git_ref.to_owned(), RepoId(target.id));
        let at = tokio::task::spawn_blocking(move || resolve_name(objects.as_ref(), refs.as_ref(), id, &wanted))
            .await
            .map_err(|e| internal(e.to_string()))?
            .map_err(internal)?;
        let Some(at) = at else {
            return Err(Unusable::Reference(format!("{owner}/{name} has no tag, branch or commit '{git_ref}'")));
        };
        return Ok(Located {
            name: format!("{}/{}", target.owner, target.name),
            source: None,
            objects: stores.objects.clone(),
            repo: RepoId(target.id),
            commit: at,
        });
    }
    let sources = stores.upstream.sources();
    if sources.is_empty() || !upstream::is_name(owner) || !upstream::is_name(name) {
        return Err(Unusable::Repository(format!("no repository {owner}/{name} this {what} may use")));
    }
    match stores.upstream.resolve(owner, name, git_ref).await {
        Ok(found) => {
            let snapshot = stores
                .upstream
                .snapshot(&found)
                .await
                .map_err(|e| Unusable::Upstream(format!("fetching {owner}/{name} from {}: {e}", found.url)))?;
            Ok(Located {
                name: format!("{owner}/{name}"),
                source: Some(found.url),
                objects: snapshot.objects(),
                repo: Snapshot::REPO,
                commit: snapshot.commit,
            })
        }
        Err(Ok(Missing::Repository)) => Err(Unusable::Repository(format!(
            "no repository {owner}/{name} this {what} may use here or at {}",
            sources.join(", ")
        ))),
        Err(Ok(Missing::Reference(url))) => {
            Err(Unusable::Reference(format!("{url} has no tag, branch or commit '{git_ref}'")))
        }
        Err(Err(e)) => Err(Unusable::Upstream(e)),
    }
}

/// The longest reading what a push's workflows refer to may take (it is only slow when an upstream
/// source is).
pub const READ_BUDGET: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads what the workflow `texts` (at `commit` of `repo`) refer to, within [`READ_BUDGET`].
pub async fn read_references(
    stores: Stores<'_>,
    repo: &Repo,
    commit: ObjectId,
    texts: impl IntoIterator<Item = String>,
) -> References {
    let mut out = References::default();
    // Runs wait for this: an upstream source that does not answer may not hold them up for long.
    let deadline = tokio::time::Instant::now() + READ_BUDGET;
    // Every workflow met, each parsed once; `parsed[level..]` are the last level's.
    let mut parsed: Vec<gitstratum_workflow::Workflow> =
        texts.into_iter().filter_map(|t| gitstratum_workflow::load(&t).ok()).collect();
    let mut level = 0;
    for _ in 0..call::MAX_DEPTH {
        let mut next = Vec::new();
        for workflow in &parsed[level..] {
            for uses in call::called(workflow) {
                if out.workflows.contains_key(&uses) || out.workflows.len() >= 4 * call::MAX_CALLED {
                    continue;
                }
                let read = tokio::time::timeout_at(deadline, read_workflow(stores, repo, commit, &uses))
                    .await
                    .unwrap_or_else(|_| Err(format!("'{uses}': not read in time (an upstream source did not answer)")));
                if let Ok((_, text)) = &read
                    && let Ok(callee) = gitstratum_workflow::load(text)
                {
                    next.push(callee);
                }
                out.workflows.insert(uses, read);
            }
        }
        if next.is_empty() {
            break;
        }
        level = parsed.len();
        parsed.extend(next);
    }
    for workflow in &parsed {
        for step in workflow.jobs.values().flat_map(|j| &j.steps) {
            let StepAction::Other { reference, .. } = &step.action else { continue };
            if out.actions.contains_key(reference) || out.actions.len() >= 200 {
                continue;
            }
            let Some(remote) = RemoteAction::parse(reference) else { continue };
            // Not checked in time (a slow upstream source): the job's runner resolves it when the
            // job starts, and the step fails there if it still cannot be used.
            let checked =
                tokio::time::timeout_at(deadline, check_action(stores, repo, &remote)).await.unwrap_or(Ok(()));
            out.actions.insert(reference.clone(), checked);
        }
    }
    out
}

async fn read_workflow(
    stores: Stores<'_>,
    repo: &Repo,
    commit: ObjectId,
    uses: &str,
) -> Result<(String, String), String> {
    let (located, path) = if let Some(path) = uses.strip_prefix("./") {
        if !gitstratum_workflow::WORKFLOW_DIRS.iter().any(|d| path.starts_with(&format!("{d}/"))) {
            return Err(format!("'{uses}': a reusable workflow must be in .github/workflows"));
        }
        let own = Located {
            name: format!("{}/{}", repo.owner, repo.name),
            source: None,
            objects: stores.objects.clone(),
            repo: RepoId(repo.id),
            commit,
        };
        (own, path.to_owned())
    } else {
        let Some((owner, name, path, git_ref)) = call::parse_remote(uses) else {
            return Err(format!(
                "'{uses}' is not a reusable workflow reference (./.github/workflows/x.yml or owner/repo/.github/workflows/x.yml@ref)"
            ));
        };
        let located =
            locate(stores, repo, owner, name, git_ref, "workflow").await.map_err(|e| format!("'{uses}': {e}"))?;
        (located, path.to_owned())
    };
    match located.read_text(&path).await.map_err(|e| format!("'{uses}': {e}"))? {
        Some(Ok(text)) => {
            let shown = if uses.starts_with("./") { path } else { format!("{}/{path}", located.name) };
            Ok((shown, text))
        }
        Some(Err(why)) => Err(format!("'{uses}': {why}")),
        None => Err(format!("'{uses}': no such file")),
    }
}

/// Whether a step of `repo` can use the action: its repository may be used, its reference names
/// a commit, its metadata is there and valid (messages positioned in that file), and it is not a
/// Docker action.
async fn check_action(stores: Stores<'_>, repo: &Repo, remote: &RemoteAction) -> Result<(), String> {
    let shown = remote.shown();
    let unable = |e: String| format!("Unable to resolve action '{shown}': {e}");
    let located = locate(stores, repo, &remote.owner, &remote.repo, &remote.git_ref, "job")
        .await
        .map_err(|e| unable(e.to_string()))?;
    let dir = if remote.path.is_empty() { String::new() } else { format!("{}/", remote.path) };
    for name in ACTION_FILES {
        let path = format!("{dir}{name}");
        let Some(text) = located.read_text(&path).await.map_err(unable)? else { continue };
        let text = text.map_err(unable)?;
        let action = load_action(&text).map_err(|diags| {
            let shown_file = format!("{}/{path}", located.name);
            let lines: Vec<String> = diags.iter().take(5).map(|d| d.display_in(&shown_file).to_string()).collect();
            format!("the action '{shown}' is not valid:\n{}", lines.join("\n"))
        })?;
        if let ActionRuns::Docker { image } = action.runs {
            return Err(format!(
                "'{shown}' is a Docker action (image '{image}'): Docker actions need a container executor, which this installation's runners do not have"
            ));
        }
        return Ok(());
    }
    if located.read_text(&format!("{dir}Dockerfile")).await.map_err(unable)?.is_some() {
        return Err(format!(
            "'{shown}' is a Docker action (a Dockerfile): Docker actions need a container executor, which this installation's runners do not have"
        ));
    }
    Err(format!("Can't find 'action.yml', 'action.yaml' or 'Dockerfile' for action '{shown}'"))
}
