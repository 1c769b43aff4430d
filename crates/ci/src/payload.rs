//! GitHub's event payloads: what webhooks deliver and what a job finds at `$GITHUB_EVENT_PATH`
//! (and in `github.event`), so receivers and workflows written for GitHub read the same fields.

use gitstratum_platform::{PlatformEvent, PlatformStore, Repo};
use gitstratum_store::{ObjectId, ObjectKind, ObjectStore, RefEvent, RepoId};
use serde_json::{Value as Json, json};

/// The `pull_request` object of GitHub's payloads: `pull` as recorded, its tips as `head_sha` and
/// `base_sha` say (an event's, which may be older than the row), `head_repo` where its head lives.
pub fn pull_request_json(
    pull: &gitstratum_platform::Pull,
    repo: &Repo,
    head_repo: Option<&Repo>,
    head_sha: &str,
    base_sha: &str,
    public_url: &str,
) -> Json {
    let full_name = format!("{}/{}", repo.owner, repo.name);
    let head_owner = head_repo.map_or("unknown", |r| r.owner.as_str());
    json!({
        "id": pull.id,
        "number": pull.number,
        "state": pull.state.as_str(),
        "title": pull.title,
        "body": Some(&pull.body).filter(|b| !b.is_empty()),
        "user": {"login": pull.author},
        "draft": pull.draft,
        "head": {
            "label": format!("{head_owner}:{}", pull.head_ref),
            "ref": pull.head_ref,
            "sha": head_sha,
            "repo": head_repo.map(|r| repository_json(r, public_url)),
        },
        "base": {
            "label": format!("{}:{}", repo.owner, pull.base_ref),
            "ref": pull.base_ref,
            "sha": base_sha,
            "repo": repository_json(repo, public_url),
        },
        "merged": pull.merged,
        "merge_commit_sha": if pull.merged { pull.merge_commit_sha.clone() } else { pull.merge_sha.clone() },
        "merged_by": pull.merged_by.as_ref().map(|login| json!({"login": login})),
        "created_at": pull.created_at.to_rfc3339(),
        "updated_at": pull.updated_at.to_rfc3339(),
        "closed_at": pull.closed_at.map(|t| t.to_rfc3339()),
        "merged_at": pull.merged_at.map(|t| t.to_rfc3339()),
        "url": format!("{public_url}/api/v1/repos/{full_name}/pulls/{}", pull.number),
        "html_url": format!("{public_url}/{full_name}/pull/{}", pull.number),
    })
}

/// GitHub's `pull_request` or `pull_request_review` payload for a platform event naming a pull
/// request (what webhooks deliver and what a job of a `pull_request` run finds in `github.event`):
/// the pull request as it is now, with the head and base commits of the event. `None` when the
/// pull request (or its repository, or the review) is gone.
pub async fn pull_event_payload(
    platform: &PlatformStore,
    event: &PlatformEvent,
    public_url: &str,
) -> Result<Option<Json>, gitstratum_platform::Error> {
    let Some(named) = &event.pull else { return Ok(None) };
    let Some(pull) = platform.get_pull_by_id(named.pull_id).await? else { return Ok(None) };
    let Some(repo) = platform.get_repo_by_id(event.repo.id).await? else { return Ok(None) };
    let head_repo = match pull.head_repo_id {
        Some(id) if id == repo.id => Some(repo.clone()),
        Some(id) => platform.get_repo_by_id(id).await?,
        None => None,
    };
    let pull_json = pull_request_json(&pull, &repo, head_repo.as_ref(), &named.head_sha, &named.base_sha, public_url);
    let mut payload = json!({
        "action": event.action,
        "number": pull.number,
        "pull_request": pull_json,
        "repository": repository_json(&repo, public_url),
        "sender": {"login": event.actor},
    });
    if let Some(review_id) = named.review_id {
        let reviews = platform.list_reviews(pull.id).await?;
        let Some(review) = reviews.into_iter().find(|r| r.id == review_id) else { return Ok(None) };
        payload["review"] = json!({
            "id": review.id,
            "user": {"login": review.reviewer},
            "body": Some(&review.body).filter(|b| !b.is_empty()),
            // Webhooks spell review states in lower case, the REST API in upper case.
            "state": review.state.as_str().to_ascii_lowercase(),
            "commit_id": review.commit_sha,
            "submitted_at": review.created_at.to_rfc3339(),
        });
        if let Some(map) = payload.as_object_mut() {
            map.remove("number");
        }
    }
    Ok(Some(payload))
}

/// The id Git and GitHub use for "no commit" (a ref created or deleted).
pub const ZERO: &str = "0000000000000000000000000000000000000000";

/// The `repository` object of GitHub's payloads.
pub fn repository_json(repo: &Repo, public_url: &str) -> Json {
    let full_name = format!("{}/{}", repo.owner, repo.name);
    json!({
        "id": repo.id,
        "name": repo.name,
        "full_name": full_name,
        "private": repo.private,
        "fork": repo.is_fork(),
        "visibility": if repo.private { "private" } else { "public" },
        "owner": {"id": repo.owner_id, "name": repo.owner, "login": repo.owner},
        "html_url": format!("{public_url}/{full_name}"),
        "clone_url": format!("{public_url}/{full_name}.git"),
        "default_branch": repo.default_branch,
        "description": Some(&repo.description).filter(|d| !d.is_empty()),
        "created_at": repo.created_at.to_rfc3339(),
    })
}

/// GitHub's `push` payload. `head_commit` is the pushed commit as [`commit_json`] reads it, when
/// the caller has it (`commits` is left empty).
pub fn push_payload(event: &RefEvent, repo: &Repo, public_url: &str, head_commit: Option<Json>) -> Json {
    let hex = |id: Option<ObjectId>| id.map_or_else(|| ZERO.to_owned(), |i| i.to_string());
    let full_name = format!("{}/{}", repo.owner, repo.name);
    json!({
        "ref": event.name,
        "before": hex(event.old),
        "after": hex(event.new),
        "created": event.old.is_none(),
        "deleted": event.new.is_none(),
        "forced": false,
        "base_ref": null,
        "compare": format!("{public_url}/{full_name}/compare/{}...{}", hex(event.old), hex(event.new)),
        "commits": [],
        "head_commit": head_commit.or_else(|| event.new.map(|id| json!({"id": id.to_string()}))),
        "repository": repository_json(repo, public_url),
        "pusher": {"name": event.pusher},
        "sender": {"login": event.pusher},
    })
}

/// GitHub's `workflow_dispatch` payload.
pub fn dispatch_payload(
    git_ref: &str,
    inputs: &Json,
    workflow_path: &str,
    actor: &str,
    repo: &Repo,
    public_url: &str,
) -> Json {
    json!({
        "inputs": if inputs.is_null() { json!({}) } else { inputs.clone() },
        "ref": git_ref,
        "workflow": workflow_path,
        "repository": repository_json(repo, public_url),
        "sender": {"login": actor},
    })
}

/// A commit as payloads show it (`id`, `tree_id`, `message`, `timestamp`, `author`, `committer`),
/// read from the store; `None` when it is missing or not a commit.
pub fn commit_json(objects: &dyn ObjectStore, repo: RepoId, id: ObjectId) -> Option<Json> {
    let object = objects.get_many(repo, &[id]).ok()?.pop().flatten()?;
    if object.kind != ObjectKind::Commit {
        return None;
    }
    let text = String::from_utf8_lossy(&object.data);
    let (headers, message) = text.split_once("\n\n").unwrap_or((&text, ""));
    let mut commit = serde_json::Map::new();
    commit.insert("id".into(), json!(id.to_string()));
    commit.insert("message".into(), json!(message.trim_end_matches('\n')));
    for line in headers.lines() {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        match key {
            "tree" => {
                commit.insert("tree_id".into(), json!(value));
            }
            "author" | "committer" => {
                let Some((who, when)) = signature(value) else { continue };
                if key == "committer" {
                    commit.insert("timestamp".into(), json!(when));
                }
                commit.insert(key.into(), who);
            }
            _ => {}
        }
    }
    Some(Json::Object(commit))
}

/// `Name <email> 1700000000 +0100` as `{name, email}` and an RFC 3339 time.
fn signature(value: &str) -> Option<(Json, String)> {
    let (name, rest) = value.split_once(" <")?;
    let (email, when) = rest.split_once("> ")?;
    let mut parts = when.split_whitespace();
    let seconds: i64 = parts.next()?.parse().ok()?;
    let zone = parts.next().unwrap_or("+0000");
    let sign = if zone.starts_with('-') { -1 } else { 1 };
    let digits = zone.trim_start_matches(['+', '-']);
    let offset_minutes = sign * (digits.get(..2)?.parse::<i64>().ok()? * 60 + digits.get(2..4)?.parse::<i64>().ok()?);
    let local = gitstratum_core::Timestamp((seconds + offset_minutes * 60) * 1000).to_rfc3339();
    // `to_rfc3339` writes UTC (`Z`); the local time keeps its own offset as GitHub shows it.
    let stamp = format!(
        "{}{}{}:{}",
        local.trim_end_matches('Z'),
        if sign < 0 { '-' } else { '+' },
        &digits[..2],
        &digits[2..4]
    );
    Some((json!({"name": name, "email": email, "username": name}), stamp))
}

#[cfg(test)]
mod tests {
    use super::signature;

    #[test]
    fn signatures_read_as_github_shows_them() {
        let (who, when) = signature("A U Thor <a@example.com> 1700000000 +0130").expect("parses");
        assert_eq!(who["email"], "a@example.com");
        assert_eq!(when, "2023-11-14T23:43:20+01:30");
        assert!(signature("nobody").is_none());
    }
}
