//! Which workflows an event starts.

use crate::glob::FilterList;
use crate::model::{PushFilters, Workflow};

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
