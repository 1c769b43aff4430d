//! Pull requests in Git: keeping `refs/pull/N/head` and `refs/pull/N/merge` up to date with the
//! branches they come from, computing whether a pull request merges cleanly (and which paths
//! conflict), and merging it (a merge commit, a squash or a rebase) onto its base branch.
//!
//! The rows live in the platform database (`gitstratum_platform::pulls`); the Git side lives in
//! the repository's stores, read and written through the `ObjectStore`/`RefStore` traits, so it
//! works the same in embedded and cluster mode. [`Updater`] is a consumer of the ref-change log:
//! every push to a branch refreshes the open pull requests whose head or base it is. A refresh
//! derives everything from the refs as they are now, so running it twice (two servers, a crash
//! before the cursor moved) changes nothing more.

#![forbid(unsafe_code)]

pub mod comments;
pub mod merge;
pub mod network;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use gitstratum_core::Clock;
use gitstratum_git::ObjectId;
use gitstratum_platform::{Mergeability, Mergeable, PlatformStore, Pull, PullState, Repo};
use gitstratum_store::{Actor, ObjectStore, RefStore, RefUpdate, RepoId};

use crate::merge::{MergeError, Odb, Signature, TreeMerge};

/// The updater's cursor on the ref-change log.
pub const CURSOR: &str = "pulls";
/// The updater's singleton lock ([`gitstratum_platform::db::Db::try_singleton`]).
const SINGLETON: i32 = 4;
const POLL: Duration = Duration::from_millis(250);
const EVENTS_PER_BATCH: usize = 200;
/// Who moves `refs/pull/*` in the ref-change log.
const SERVER: &str = "gitstratum";

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Platform(#[from] gitstratum_platform::Error),
    #[error(transparent)]
    Store(#[from] gitstratum_store::Error),
    #[error(transparent)]
    Merge(#[from] MergeError),
    #[error("a blocking task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// The merge cannot be made as asked; the message says why (for the caller to show).
    #[error("{0}")]
    Refused(String),
    /// A ref moved while the merge was made; trying again may work.
    #[error("{0}")]
    Moved(String),
}

pub type Result<T, E = PullError> = std::result::Result<T, E>;

/// `refs/pull/N/head`.
pub fn head_ref(number: i64) -> String {
    format!("refs/pull/{number}/head")
}

/// `refs/pull/N/merge`.
pub fn merge_ref(number: i64) -> String {
    format!("refs/pull/{number}/merge")
}

/// How a pull request is merged (GitHub's `merge_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeMethod {
    /// A merge commit with the base and the head as parents.
    Merge,
    /// One new commit on the base with the pull request's changes.
    Squash,
    /// The head's commits replayed one by one onto the base.
    Rebase,
}

impl MergeMethod {
    pub fn parse(text: &str) -> Option<MergeMethod> {
        match text {
            "merge" => Some(MergeMethod::Merge),
            "squash" => Some(MergeMethod::Squash),
            "rebase" => Some(MergeMethod::Rebase),
            _ => None,
        }
    }
}

/// A merge as asked for.
#[derive(Debug, Clone)]
pub struct MergeRequest {
    pub method: MergeMethod,
    /// The commit message's first line (default: GitHub's).
    pub title: Option<String>,
    pub message: Option<String>,
    /// The head the caller saw: the merge is refused if the head moved since.
    pub expected_head: Option<String>,
    /// Who merges: the committer (and, for squash, the author is the pull request's author).
    pub merger: Signature,
    pub merger_login: String,
}

/// The pull-request side of Git, over one installation's stores.
#[derive(Clone)]
pub struct Pulls {
    pub platform: PlatformStore,
    pub objects: Arc<dyn ObjectStore>,
    pub refs: Arc<dyn RefStore>,
    pub clock: Arc<dyn Clock>,
}

fn branch_ref(branch: &str) -> String {
    format!("refs/heads/{branch}")
}

impl Pulls {
    fn actor(&self) -> Actor {
        Actor { name: SERVER.to_owned(), time_ms: self.clock.now().0 }
    }

    /// Brings a pull request up to date with its branches: its recorded tips, `refs/pull/N/head`,
    /// whether it merges cleanly and `refs/pull/N/merge` (the test merge, removed while it
    /// conflicts or once it is closed). A head branch deleted or a base branch gone leaves what
    /// was recorded. Returns the pull request as recorded now.
    pub async fn refresh(&self, pull: &Pull) -> Result<Pull> {
        self.refresh_as(pull, SERVER).await
    }

    /// [`Pulls::refresh`], naming `pusher` as who moved the head, should it have moved, and as
    /// who merged it, should the base now hold the head.
    pub async fn refresh_as(&self, pull: &Pull, pusher: &str) -> Result<Pull> {
        let (objects, refs, clock) = (self.objects.clone(), self.refs.clone(), self.clock.clone());
        let pull_now = pull.clone();
        let actor = self.actor();
        let open = pull.state == PullState::Open;
        let computed = tokio::task::spawn_blocking(move || -> Result<Option<(Mergeability, bool)>> {
            refresh_git(&*objects, &*refs, &pull_now, open, &actor, clock.now().0 / 1000)
        })
        .await??;
        if let Some((m, contained)) = computed {
            if m.head_sha != pull.head_sha || m.base_sha != pull.base_sha {
                self.platform.move_pull_tips(pull.id, &m.head_sha, &m.base_sha, pusher, self.clock.now()).await?;
            }
            if m.head_sha != pull.head_sha {
                self.follow_comments(pull, &m.head_sha).await?;
            }
            self.platform.record_mergeability(pull.id, &m).await?;
            if contained {
                // Its head was pushed into the base (or a merge's ref moved before it was
                // recorded): merged, as GitHub says, by whoever moved the branch (the merge
                // API moves it as the merger, so a refresh that wins the race against the
                // API's own record names the same account).
                self.platform.mark_pull_merged(pull.id, pusher, &m.base_sha, self.clock.now()).await?;
                if let Some(now) = self.platform.get_pull(pull.repo_id, pull.number).await? {
                    return Box::pin(self.refresh_as(&now, pusher)).await;
                }
            }
        }
        Ok(self.platform.get_pull(pull.repo_id, pull.number).await?.unwrap_or_else(|| pull.clone()))
    }

    /// Where a comment made on `line` of `path` at `commit` sits now. On the `Right` side,
    /// `commit` is the head or a commit of its history and `line` a line of the file there; the
    /// answer is the head and the line there (`None`: changed since, outdated). On the `Left`
    /// side, `line` is a line of the file where head and base meet (the merge base), and stays
    /// as it is. Refused, saying why, when there is no such line.
    pub async fn place_comment(
        &self,
        pull: &Pull,
        commit: &str,
        path: &str,
        side: gitstratum_platform::Side,
        line: i64,
    ) -> Result<(String, Option<i64>)> {
        let refused = |why: String| PullError::Refused(why);
        let commit = ObjectId::from_hex(commit.as_bytes()).map_err(|_| refused(format!("{commit} is no commit id")))?;
        let head = ObjectId::from_hex(pull.head_sha.as_bytes())
            .map_err(|_| refused("the pull request has no head yet".to_owned()))?;
        let base = ObjectId::from_hex(pull.base_sha.as_bytes()).ok();
        let line =
            u32::try_from(line).ok().filter(|l| *l >= 1).ok_or_else(|| refused("lines count from 1".to_owned()))?;
        let (objects, rid, path) = (self.objects.clone(), RepoId(pull.repo_id), path.to_owned());
        tokio::task::spawn_blocking(move || -> Result<(String, Option<i64>)> {
            let odb = Odb::new(&*objects, rid);
            let known = |id: ObjectId| -> Result<bool> { Ok(objects.has_many(rid, &[id])?[0]) };
            if !known(commit)? || merge::merge_base(&odb, commit, head)? != Some(commit) {
                return Err(refused(format!("{commit} is not a commit of this pull request's head")));
            }
            let at = match side {
                gitstratum_platform::Side::Right => commit,
                gitstratum_platform::Side::Left => match base {
                    Some(base) => merge::merge_base(&odb, head, base)?
                        .ok_or_else(|| refused("the head and the base share no history".to_owned()))?,
                    None => return Err(refused("the pull request has no base yet".to_owned())),
                },
            };
            let file =
                comments::file_at(&odb, at, &path)?.ok_or_else(|| refused(format!("{path} is not a file at {at}")))?;
            if line as usize > comments::line_count(&file) {
                return Err(refused(format!("{path} has {} lines at {at}", comments::line_count(&file))));
            }
            match side {
                gitstratum_platform::Side::Left => Ok((head.to_string(), Some(i64::from(line)))),
                gitstratum_platform::Side::Right => {
                    let now = comments::follow(&odb, commit, head, &path, line)?;
                    Ok((head.to_string(), now.map(i64::from)))
                }
            }
        })
        .await?
    }

    /// Carries the live line comments of a pull request to its new head `head`: each moves with
    /// the lines added or removed above it, or is outdated once its own line changed.
    pub async fn follow_comments(&self, pull: &Pull, head: &str) -> Result<()> {
        let live = self.platform.live_comments(pull.id).await?;
        let Ok(to) = ObjectId::from_hex(head.as_bytes()) else { return Ok(()) };
        let moving: Vec<_> =
            live.into_iter().filter(|c| c.side == gitstratum_platform::Side::Right && c.commit_sha != head).collect();
        if moving.is_empty() {
            return Ok(());
        }
        let (objects, rid) = (self.objects.clone(), RepoId(pull.repo_id));
        let moves = tokio::task::spawn_blocking(move || -> Result<Vec<_>> {
            let odb = Odb::new(&*objects, rid);
            let mut out = Vec::with_capacity(moving.len());
            for c in moving {
                let (Ok(from), Some(line)) =
                    (ObjectId::from_hex(c.commit_sha.as_bytes()), c.line.and_then(|l| u32::try_from(l).ok()))
                else {
                    continue;
                };
                // A head it cannot be read at any more (pruned after a force push) outdates it.
                let now = comments::follow(&odb, from, to, &c.path, line).unwrap_or(None);
                let moved =
                    gitstratum_platform::CommentMove { id: c.id, commit_sha: to.to_string(), line: now.map(i64::from) };
                out.push((moved, c.commit_sha));
            }
            Ok(out)
        })
        .await??;
        self.platform.move_comments(&moves).await?;
        Ok(())
    }

    /// Brings the objects of `head`, a commit of the repository `from` (a fork), into `to`
    /// ([`network::import_reachable`]).
    pub async fn import_head(&self, from: i64, to: i64, head: &str) -> Result<usize> {
        let head =
            ObjectId::from_hex(head.as_bytes()).map_err(|_| PullError::Refused(format!("{head} is no commit id")))?;
        let objects = self.objects.clone();
        tokio::task::spawn_blocking(move || network::import_reachable(&*objects, RepoId(from), RepoId(to), head))
            .await?
    }

    /// Whether `head` is already in the history of `base` (a pull request would propose nothing).
    pub async fn head_in_base(&self, repo: i64, head: &str, base: &str) -> Result<bool> {
        let (Ok(head), Ok(base)) = (ObjectId::from_hex(head.as_bytes()), ObjectId::from_hex(base.as_bytes())) else {
            return Ok(false);
        };
        let objects = self.objects.clone();
        tokio::task::spawn_blocking(move || {
            let odb = Odb::new(&*objects, RepoId(repo));
            Ok(merge::merge_base(&odb, head, base)? == Some(head))
        })
        .await?
    }

    /// Refreshes every open pull request whose head or base is `branch` of `repo`, which
    /// `pusher` moved.
    pub async fn refresh_branch(&self, repo: i64, branch: &str, pusher: &str) -> Result<usize> {
        let pulls = self.platform.open_pulls_on_branch(repo, branch).await?;
        for pull in &pulls {
            self.refresh_as(pull, pusher).await?;
        }
        Ok(pulls.len())
    }

    /// Merges an open pull request onto its base branch, as `request` says; the commit the base
    /// branch points to now. Refused (nothing changed) when it is closed, a draft, conflicting,
    /// or its head is not the one the caller saw; [`PullError::Moved`] when a branch moved while
    /// the merge was made.
    pub async fn merge(&self, repo: &Repo, pull: &Pull, request: &MergeRequest) -> Result<String> {
        if pull.state != PullState::Open {
            return Err(PullError::Refused("the pull request is closed".to_owned()));
        }
        if pull.draft {
            return Err(PullError::Refused("a draft pull request cannot be merged".to_owned()));
        }
        let (objects, refs) = (self.objects.clone(), self.refs.clone());
        let (pull_now, request_now, repo_name) =
            (pull.clone(), request.clone(), format!("{}/{}", repo.owner, repo.name));
        let author = Signature { name: pull.author.clone(), email: noreply(&pull.author), time: request.merger.time };
        let merged = tokio::task::spawn_blocking(move || -> Result<(ObjectId, ObjectId)> {
            let rid = RepoId(pull_now.repo_id);
            let head_repo =
                RepoId(pull_now.head_repo_id.ok_or_else(|| {
                    PullError::Refused("the head repository of this pull request is gone".to_owned())
                })?);
            let head = refs
                .get(head_repo, &branch_ref(&pull_now.head_ref))?
                .ok_or_else(|| PullError::Refused(format!("the head branch {} is gone", pull_now.head_ref)))?;
            if let Some(expected) = &request_now.expected_head
                && !expected.eq_ignore_ascii_case(&head.to_string())
            {
                return Err(PullError::Moved(format!(
                    "the head branch moved to {head} (expected {expected}); review it and merge again"
                )));
            }
            let base = refs
                .get(rid, &branch_ref(&pull_now.base_ref))?
                .ok_or_else(|| PullError::Refused(format!("the base branch {} is gone", pull_now.base_ref)))?;
            network::import_reachable(&*objects, head_repo, rid, head)?;
            let mut odb = Odb::new(&*objects, rid);
            let new_tip = make_merge(&mut odb, &pull_now, &repo_name, base, head, &request_now, &author)?;
            objects.put(rid, &odb.written)?;
            Ok((base, new_tip))
        })
        .await??;
        let (base, new_tip) = merged;
        let update = RefUpdate { name: branch_ref(&pull.base_ref), old: Some(base), new: Some(new_tip) };
        let actor = Actor { name: request.merger_login.clone(), time_ms: self.clock.now().0 };
        let refs = self.refs.clone();
        let rid = RepoId(pull.repo_id);
        let moved = tokio::task::spawn_blocking(move || refs.update(rid, &[update], &actor)).await??;
        if moved.is_err() {
            return Err(PullError::Moved(format!("the base branch {} moved; merge again", pull.base_ref)));
        }
        // The branch moved: record the merge (a crash here leaves a merge-commit merge to be
        // recognized by the next refresh, since the head is then in the base).
        self.platform.mark_pull_merged(pull.id, &request.merger_login, &new_tip.to_string(), self.clock.now()).await?;
        if let Some(now) = self.platform.get_pull(pull.repo_id, pull.number).await? {
            self.refresh(&now).await?;
        }
        Ok(new_tip.to_string())
    }
}

/// The address a commit shows for an account (GitHub's `login@users.noreply…` idea).
fn noreply(login: &str) -> String {
    format!("{login}@users.noreply.gitstratum")
}

/// What [`Pulls::refresh`] does in Git; the mergeability to record and whether the head is in
/// the base already (`None`: the branches are gone or the pull request is closed, nothing to
/// compute).
fn refresh_git(
    objects: &dyn ObjectStore,
    refs: &dyn RefStore,
    pull: &Pull,
    open: bool,
    actor: &Actor,
    now_secs: i64,
) -> Result<Option<(Mergeability, bool)>> {
    let rid = RepoId(pull.repo_id);
    let set = |name: String, value: Option<ObjectId>| -> Result<()> {
        // Compare-and-swap from what is there now; a lost race means another refresh wrote a
        // value for newer tips, which is as good.
        let old = refs.get(rid, &name)?;
        if old != value {
            let _ = refs.update(rid, &[RefUpdate { name, old, new: value }], actor)?;
        }
        Ok(())
    };
    let head = match pull.head_repo_id {
        Some(head_repo) => refs.get(RepoId(head_repo), &branch_ref(&pull.head_ref))?,
        None => None,
    };
    if let Some(head) = head.filter(|_| open) {
        // A head in a fork: its objects come into the base first.
        if let Some(head_repo) = pull.head_repo_id.filter(|r| *r != pull.repo_id) {
            network::import_reachable(objects, RepoId(head_repo), rid, head)?;
        }
        set(head_ref(pull.number), Some(head))?;
    }
    if !open {
        set(merge_ref(pull.number), None)?;
        return Ok(None);
    }
    let base = refs.get(rid, &branch_ref(&pull.base_ref))?;
    let (Some(head), Some(base)) = (head, base) else { return Ok(None) };
    // Nothing moved since the mergeability was recorded (and the test merge ref agrees): it
    // stands; a merge is not made again.
    let merge_now = refs.get(rid, &merge_ref(pull.number))?.map(|id| id.to_string());
    if pull.mergeable != Mergeable::Unknown
        && ObjectId::from_hex(pull.head_sha.as_bytes()).ok() == Some(head)
        && ObjectId::from_hex(pull.base_sha.as_bytes()).ok() == Some(base)
        && merge_now == pull.merge_sha.clone().filter(|_| pull.mergeable == Mergeable::Clean)
    {
        return Ok(None);
    }
    let mut odb = Odb::new(objects, rid);
    let mut m = Mergeability {
        head_sha: head.to_string(),
        base_sha: base.to_string(),
        mergeable: Mergeable::Clean,
        conflicts: Vec::new(),
        merge_sha: None,
    };
    let merge_base = merge::merge_base(&odb, head, base)?;
    if merge_base == Some(head) {
        return Ok(Some((m, true)));
    }
    let base_tree = merge_base.map(|b| odb.commit(b)).transpose()?.map(|c| c.tree);
    let (ours, theirs) = (odb.commit(base)?.tree, odb.commit(head)?.tree);
    match merge::merge_trees(&mut odb, base_tree, ours, theirs)? {
        TreeMerge::Clean(tree) => {
            let who = Signature { name: SERVER.to_owned(), email: noreply(SERVER), time: now_secs };
            let message = format!("Merge {head} into {base}");
            let commit = merge::write_commit(&mut odb, tree, &[base, head], &who, &who, &message)?;
            objects.put(rid, &odb.written)?;
            set(merge_ref(pull.number), Some(commit))?;
            m.merge_sha = Some(commit.to_string());
        }
        TreeMerge::Conflict(paths) => {
            set(merge_ref(pull.number), None)?;
            m.mergeable = Mergeable::Conflict;
            m.conflicts = paths;
        }
    }
    Ok(Some((m, false)))
}

/// Makes the commit(s) a merge puts on the base branch; the new tip.
fn make_merge(
    odb: &mut Odb<'_>,
    pull: &Pull,
    repo_name: &str,
    base: ObjectId,
    head: ObjectId,
    request: &MergeRequest,
    author: &Signature,
) -> Result<ObjectId> {
    let merge_base = merge::merge_base(odb, head, base)?;
    if merge_base == Some(head) {
        return Err(PullError::Refused("the head is already in the base branch: nothing to merge".to_owned()));
    }
    let conflict = |paths: Vec<String>| PullError::Refused(format!("merge conflict in {}", paths.join(", ")));
    let base_tree = merge_base.map(|b| odb.commit(b)).transpose()?.map(|c| c.tree);
    let (ours, theirs) = (odb.commit(base)?.tree, odb.commit(head)?.tree);
    let committer = &request.merger;
    match request.method {
        MergeMethod::Merge => {
            let tree = match merge::merge_trees(odb, base_tree, ours, theirs)? {
                TreeMerge::Clean(tree) => tree,
                TreeMerge::Conflict(paths) => return Err(conflict(paths)),
            };
            let title = request.title.clone().unwrap_or_else(|| {
                format!("Merge pull request #{} from {}/{}", pull.number, repo_name_owner(repo_name), pull.head_ref)
            });
            let body = request.message.clone().unwrap_or_else(|| pull.title.clone());
            let message = if body.is_empty() { title } else { format!("{title}\n\n{body}") };
            Ok(merge::write_commit(odb, tree, &[base, head], committer, committer, &message)?)
        }
        MergeMethod::Squash => {
            let tree = match merge::merge_trees(odb, base_tree, ours, theirs)? {
                TreeMerge::Clean(tree) => tree,
                TreeMerge::Conflict(paths) => return Err(conflict(paths)),
            };
            let title = request.title.clone().unwrap_or_else(|| format!("{} (#{})", pull.title, pull.number));
            let body = match &request.message {
                Some(m) => m.clone(),
                None => commits_between(odb, merge_base, head)?
                    .iter()
                    .map(|id| Ok(format!("* {}", summary(odb, *id)?)))
                    .collect::<Result<Vec<_>>>()?
                    .join("\n\n"),
            };
            let message = if body.is_empty() { title } else { format!("{title}\n\n{body}") };
            Ok(merge::write_commit(odb, tree, &[base], author, committer, &message)?)
        }
        MergeMethod::Rebase => {
            let mut tip = base;
            for id in commits_between(odb, merge_base, head)? {
                let commit = odb.commit(id)?;
                if commit.parents.len() > 1 {
                    return Err(PullError::Refused(
                        "the head has merge commits: it cannot be rebased; merge or squash it".to_owned(),
                    ));
                }
                let parent_tree = commit.parents.first().map(|p| odb.commit(*p)).transpose()?.map(|c| c.tree);
                let onto = odb.commit(tip)?.tree;
                let tree = match merge::merge_trees(odb, parent_tree, onto, commit.tree)? {
                    TreeMerge::Clean(tree) => tree,
                    TreeMerge::Conflict(paths) => return Err(conflict(paths)),
                };
                let (_, data) = odb.read(id)?;
                let text = gitstratum_git::parse::commit_text(&data);
                tip = merge::write_commit(odb, tree, &[tip], &text.author, committer, &text.message)?;
            }
            Ok(tip)
        }
    }
}

fn repo_name_owner(full: &str) -> &str {
    full.split('/').next().unwrap_or(full)
}

fn summary(odb: &Odb<'_>, id: ObjectId) -> Result<String> {
    let (_, data) = odb.read(id)?;
    Ok(gitstratum_git::parse::commit_text(&data).summary().to_owned())
}

/// The commits of `head` not in `base` (the merge base), oldest first: `git rev-list base..head`
/// as a walk of the commit graph newest generation first, painting what `base` reaches, which
/// stops once only such commits are left (not the merge base's whole history).
fn commits_between(odb: &Odb<'_>, base: Option<ObjectId>, head: ObjectId) -> Result<Vec<ObjectId>> {
    use std::collections::{BinaryHeap, HashMap};
    const HEAD: u8 = 1;
    const BASE: u8 = 2;
    let mut flags: HashMap<ObjectId, u8> = HashMap::new();
    let mut queue: BinaryHeap<(u32, i64, ObjectId)> = BinaryHeap::new();
    for (id, flag) in std::iter::once((head, HEAD)).chain(base.map(|b| (b, BASE))) {
        let c = odb.commit(id)?;
        *flags.entry(id).or_default() |= flag;
        queue.push((c.generation, c.time, id));
    }
    let mut out = Vec::new();
    let mut popped = BTreeSet::new();
    // A commit is popped after every commit of a larger generation, so after all its
    // descendants: its flags are final then.
    while queue.iter().any(|(_, _, id)| flags[id] & BASE == 0) {
        let Some((generation, time, id)) = queue.pop() else { break };
        if !popped.insert(id) {
            continue;
        }
        let f = flags[&id];
        if f & BASE == 0 {
            out.push((generation, time, id));
        }
        let Ok(c) = odb.commit(id) else { continue }; // a shallow boundary
        for parent in c.parents {
            let pf = flags.entry(parent).or_default();
            if *pf & f != f {
                *pf |= f;
                if let Ok(pc) = odb.commit(parent) {
                    queue.push((pc.generation, pc.time, parent));
                }
            }
        }
    }
    out.sort();
    Ok(out.into_iter().map(|(_, _, id)| id).collect())
}

/// The consumer of the ref-change log that refreshes the pull requests a push moves.
pub struct Updater {
    pub pulls: Pulls,
}

impl Updater {
    /// Runs until `stop` fires.
    pub async fn run(self, mut stop: tokio::sync::oneshot::Receiver<()>) {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = &mut stop => break,
            }
            loop {
                match self.update_once().await {
                    Ok(0) => break,
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "pulls: following the ref-change log failed; retrying");
                        break;
                    }
                }
            }
        }
    }

    /// Handles one batch of ref changes; how many events it consumed (0 also when another server
    /// has the turn).
    pub async fn update_once(&self) -> Result<usize> {
        let platform = &self.pulls.platform;
        let Some(_turn) = platform.db().try_singleton(SINGLETON).await.map_err(gitstratum_platform::Error::from)?
        else {
            return Ok(0);
        };
        let after = platform.log_cursor(CURSOR).await?;
        let refs = self.pulls.refs.clone();
        let events = tokio::task::spawn_blocking(move || refs.events_after(after, EVENTS_PER_BATCH)).await??;
        let Some(last) = events.last().map(|e| e.seq) else { return Ok(0) };
        // Each branch once per batch (the refresh reads the refs as they are now), named after
        // its last pusher in the batch.
        let mut branches: BTreeMap<(i64, &str), &str> = BTreeMap::new();
        for e in &events {
            if let Some(branch) = e.name.strip_prefix("refs/heads/") {
                branches.insert((e.repo.0, branch), &e.pusher);
            }
        }
        for ((repo, branch), pusher) in branches {
            self.pulls.refresh_branch(repo, branch, pusher).await?;
        }
        platform.advance_log_cursor(CURSOR, after, last).await?;
        Ok(events.len())
    }
}
