//! The platform data-access suite. Every case runs on SQLite and on PostgreSQL (a schema per case;
//! see `gitstratum_platform::testing`).

use gitstratum_core::Timestamp;
use gitstratum_platform::{
    Actor, AuditEvent, AuditFilter, Error, HookOwner, NewToken, OrgRole, PlatformStore, Repo, Role, Scope, Scopes,
};

const T0: Timestamp = Timestamp(1_700_000_000_000);

fn sys() -> Actor {
    Actor::system()
}

gitstratum_platform::both_backends!(
    rate_counts_add_up_across_servers,
    singletons_take_turns,
    login_failures_count_in_windows,
    bootstrap_creates_admin_once,
    bootstrap_rolls_back_when_persist_fails,
    tokens_authenticate_until_expiry,
    users_are_unique_case_insensitively,
    passwords_are_stored_as_hashes,
    repositories_crud,
    organizations_members_and_roles,
    collaborators_grant_roles,
    audit_log_is_a_verifiable_chain,
    concurrent_audit_appends_keep_one_chain,
    ssh_keys_are_unique_per_installation,
    teams_grant_roles_to_their_members,
    webhook_deliveries_are_a_durable_queue,
    organization_hooks_hear_every_repository_of_the_organization,
    repository_changes_are_platform_events,
    repositories_have_descriptions,
    secrets_are_sealed_scoped_and_audited,
    a_suspended_account_authenticates_nowhere,
    deleting_a_user_transfers_or_deletes_its_repositories,
    pull_requests_are_numbered_edited_and_merged,
    pull_requests_opened_at_once_get_distinct_numbers,
    branch_protections_and_reviews,
    forks_line_comments_and_review_requests,
    organization_default_protection_covers_new_repositories,
);

fn new_pull(repo: &Repo, head: &str, base: &str) -> gitstratum_platform::NewPull {
    gitstratum_platform::NewPull {
        head_repo_id: repo.id,
        head_ref: head.into(),
        head_sha: "a".repeat(40),
        base_ref: base.into(),
        base_sha: "b".repeat(40),
        title: format!("Merge {head}"),
        body: String::new(),
        draft: false,
    }
}

/// Pull requests: numbered per repository; one open per head and base; edits, closing and
/// reopening; mergeability lands only for the tips it was computed for; merged is final.
async fn pull_requests_are_numbered_edited_and_merged(store: &PlatformStore) {
    use gitstratum_platform::{Mergeability, Mergeable, PullEdit, PullFilter, PullState};
    let user = store.create_user("octo", false, &sys(), T0).await.expect("user");
    let repo = store.create_repo(&user, "app", false, &sys(), T0).await.expect("repo");
    let other = store.create_repo(&user, "lib", false, &sys(), T0).await.expect("repo");
    let one = store.create_pull(repo.id, &user, &new_pull(&repo, "feature", "main"), T0).await.expect("open");
    assert_eq!(
        (one.number, one.state, one.mergeable, one.author.as_str()),
        (1, PullState::Open, Mergeable::Unknown, "octo")
    );
    let again = store.create_pull(repo.id, &user, &new_pull(&repo, "feature", "main"), T0).await;
    assert!(matches!(again, Err(Error::Conflict { .. })), "{again:?}");
    let two = store.create_pull(repo.id, &user, &new_pull(&repo, "feature", "release"), T0).await.expect("other base");
    assert_eq!(two.number, 2);
    assert_eq!(store.create_pull(other.id, &user, &new_pull(&other, "x", "main"), T0).await.expect("other").number, 1);
    let blank = gitstratum_platform::NewPull { title: "  ".into(), ..new_pull(&repo, "y", "main") };
    assert!(matches!(store.create_pull(repo.id, &user, &blank, T0).await, Err(Error::Refused(_))));

    let on_feature = store.open_pulls_on_branch(repo.id, "feature").await.expect("by head");
    assert_eq!(on_feature.iter().map(|p| p.number).collect::<Vec<_>>(), [1, 2]);
    let on_main = store.open_pulls_on_branch(repo.id, "main").await.expect("by base");
    assert_eq!(on_main.iter().map(|p| p.number).collect::<Vec<_>>(), [1]);

    let edit = PullEdit {
        title: Some("Better".into()),
        body: Some("**why**".into()),
        draft: Some(true),
        ..PullEdit::default()
    };
    let edited = store.update_pull(&one, &edit, "octo", T0).await.expect("edit");
    assert_eq!((edited.title.as_str(), edited.body.as_str(), edited.draft), ("Better", "**why**", true));

    // Mergeability: computed for the recorded tips only.
    let (head, base) = ("a".repeat(40), "b".repeat(40));
    let clean = Mergeability {
        head_sha: head.clone(),
        base_sha: base.clone(),
        mergeable: Mergeable::Conflict,
        conflicts: vec!["src/a.rs".into(), "b c.txt".into()],
        merge_sha: None,
    };
    assert!(store.record_mergeability(one.id, &clean).await.expect("record"));
    let got = store.get_pull(repo.id, 1).await.expect("get").expect("exists");
    assert_eq!(
        (got.mergeable, got.conflicts.clone()),
        (Mergeable::Conflict, vec!["src/a.rs".to_owned(), "b c.txt".to_owned()])
    );
    assert!(!store.move_pull_tips(one.id, &head, &base, "octo", T0).await.expect("same tips"), "nothing moved");
    assert!(store.move_pull_tips(one.id, &"c".repeat(40), &base, "octo", T0).await.expect("moved"));
    assert!(!store.record_mergeability(one.id, &clean).await.expect("stale"), "computed for old tips");
    let got = store.get_pull(repo.id, 1).await.expect("get").expect("exists");
    assert_eq!((got.mergeable, got.head_sha.as_str()), (Mergeable::Unknown, "c".repeat(40).as_str()));

    // Close, reopen, merge.
    let closed = store
        .update_pull(&got, &PullEdit { state: Some(PullState::Closed), ..PullEdit::default() }, "octo", T0)
        .await
        .expect("close");
    assert_eq!((closed.state, closed.closed_at), (PullState::Closed, Some(T0)));
    assert_eq!(store.list_pulls(repo.id, PullFilter::Open, 1, 30).await.expect("open").len(), 1);
    assert_eq!(store.list_pulls(repo.id, PullFilter::Closed, 1, 30).await.expect("closed")[0].number, 1);
    let all = store.list_pulls(repo.id, PullFilter::All, 1, 30).await.expect("all");
    assert_eq!(all.iter().map(|p| p.number).collect::<Vec<_>>(), [2, 1], "newest first");
    assert_eq!(store.list_pulls(repo.id, PullFilter::All, 2, 1).await.expect("page 2")[0].number, 1);
    // A second open pull request for the same branches blocks reopening the first.
    let three = store.create_pull(repo.id, &user, &new_pull(&repo, "feature", "main"), T0).await.expect("again");
    let reopen = PullEdit { state: Some(PullState::Open), ..PullEdit::default() };
    assert!(matches!(store.update_pull(&closed, &reopen, "octo", T0).await, Err(Error::Conflict { .. })));
    assert!(store.mark_pull_merged(three.id, "octo", &"d".repeat(40), T0).await.expect("merge"));
    assert!(!store.mark_pull_merged(three.id, "octo", &"e".repeat(40), T0).await.expect("once"), "merged once");
    let merged = store.get_pull(repo.id, three.number).await.expect("get").expect("exists");
    assert!(merged.merged && merged.state == PullState::Closed && merged.merged_at == Some(T0));
    assert_eq!(merged.merge_commit_sha.as_deref(), Some("d".repeat(40).as_str()));
    assert!(matches!(store.update_pull(&merged, &reopen, "octo", T0).await, Err(Error::Refused(_))), "merged is final");
    let reopened = store.update_pull(&closed, &reopen, "octo", T0).await.expect("now it may");
    assert_eq!((reopened.state, reopened.closed_at), (PullState::Open, None));
    // Each change is an event of the platform log, in order; refused changes left none.
    let events = store.platform_events_after(0, 100).await.expect("events");
    let pulls: Vec<(&str, &str, i64)> = events
        .iter()
        .filter_map(|e| e.pull.as_ref().map(|p| (e.event.as_str(), e.action.as_str(), p.pull_id)))
        .collect();
    let (o, t) = (one.id, three.id);
    assert_eq!(
        pulls,
        [
            ("pull_request", "opened", o),
            ("pull_request", "opened", two.id),
            ("pull_request", "opened", pulls[2].2),
            ("pull_request", "edited", o),
            ("pull_request", "converted_to_draft", o),
            ("pull_request", "synchronize", o),
            ("pull_request", "closed", o),
            ("pull_request", "opened", t),
            ("pull_request", "closed", t),
            ("pull_request", "reopened", o),
        ]
    );
    let synchronize = events.iter().find(|e| e.action == "synchronize").expect("synchronize");
    let named = synchronize.pull.as_ref().expect("pull");
    assert_eq!((named.head_sha.as_str(), synchronize.repo.name.as_str()), ("c".repeat(40).as_str(), "app"));
    // Deleting the repository deletes its pull requests.
    store.delete_repo(&repo, &sys(), T0).await.expect("delete");
    assert!(store.get_pull(repo.id, 1).await.expect("get").is_none());
}

/// Pull requests opened at the same moment get distinct numbers (PostgreSQL would otherwise
/// let two transactions read the same highest number).
async fn pull_requests_opened_at_once_get_distinct_numbers(store: &PlatformStore) {
    let user = store.create_user("octo", false, &sys(), T0).await.expect("user");
    let repo = store.create_repo(&user, "app", false, &sys(), T0).await.expect("repo");
    let opens: Vec<_> = (0..8)
        .map(|i| {
            let (store, user, repo) = (store.clone(), user.clone(), repo.clone());
            tokio::spawn(async move {
                store.create_pull(repo.id, &user, &new_pull(&repo, &format!("b{i}"), "main"), T0).await
            })
        })
        .collect();
    let mut numbers = Vec::new();
    for open in opens {
        numbers.push(open.await.expect("join").expect("opened").number);
    }
    numbers.sort();
    assert_eq!(numbers, (1..=8).collect::<Vec<_>>());
}

/// Deleting a user is all or nothing: a name clash at the heir changes nothing; its repositories
/// move to the heir or are deleted (and returned, for their Git data); the account is gone.
async fn deleting_a_user_transfers_or_deletes_its_repositories(store: &PlatformStore) {
    let user = store.create_user("octo", false, &sys(), T0).await.expect("user");
    let heir = store.create_user("heir", false, &sys(), T0).await.expect("heir");
    store.create_repo(&user, "app", false, &sys(), T0).await.expect("repo");
    store.create_repo(&user, "lib", false, &sys(), T0).await.expect("repo");
    store.create_repo(&heir, "LIB", false, &sys(), T0).await.expect("clash");
    assert!(store.delete_user(&user, Some(&heir), &sys(), T0).await.is_err(), "heir/lib exists");
    assert!(store.find_account("octo").await.expect("find").is_some(), "nothing changed");
    assert_eq!(store.list_repos(user.id).await.expect("repos").len(), 2);
    let deleted = store.delete_user(&user, None, &sys(), T0).await.expect("delete");
    let mut names: Vec<&str> = deleted.iter().map(|r| r.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["app", "lib"]);
    assert!(store.find_account("octo").await.expect("find").is_none());
    assert!(store.get_repo("octo", "app").await.expect("get").is_none());
    let other = store.create_user("mona", false, &sys(), T0).await.expect("user");
    store.create_repo(&other, "kept", false, &sys(), T0).await.expect("repo");
    assert!(store.delete_user(&other, Some(&heir), &sys(), T0).await.expect("transfer").is_empty());
    assert!(store.get_repo("heir", "kept").await.expect("get").is_some());
}

/// Suspending a user stops every token it holds at once; lifting the suspension restores them;
/// both are audited; organizations are not suspended this way.
async fn a_suspended_account_authenticates_nowhere(store: &PlatformStore) {
    let user = store.create_user("octo", false, &sys(), T0).await.expect("user");
    let new = NewToken { name: "ci".into(), scopes: Scopes::new([Scope::RepoRead]), expires_at: None };
    let (_, secret) = store.create_token(user.id, &new, &sys(), T0).await.expect("token");
    assert!(store.authenticate(secret.expose(), T0).await.expect("auth").is_some());
    store.set_suspended(&user, true, &sys(), T0).await.expect("suspend");
    assert!(store.authenticate(secret.expose(), T0).await.expect("auth").is_none(), "suspended");
    let found = store.find_account("octo").await.expect("find").expect("exists");
    assert_eq!(found.suspended_at, Some(T0));
    store.set_suspended(&found, false, &sys(), T0).await.expect("unsuspend");
    assert!(store.authenticate(secret.expose(), T0).await.expect("auth").is_some(), "restored");
    let entries = store.list_audit(&AuditFilter { limit: 10, ..AuditFilter::default() }).await.expect("audit");
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    assert!(actions.starts_with(&["user.unsuspend", "user.suspend"]), "{actions:?}");
    let org = store.create_org("acme", &user, &sys(), T0).await.expect("org");
    assert!(store.set_suspended(&org, true, &sys(), T0).await.is_err());
}

/// Secrets: sealed at rest (the stored text is not the value and opens only with the key), listed
/// without values, replaced and deleted with audit entries; an organization's secret reaches the
/// repositories its visibility allows, a repository's own of the same name wins; a job asks only
/// for the names it references. Variables are plain and layered the same way.
async fn secrets_are_sealed_scoped_and_audited(store: &PlatformStore) {
    use gitstratum_platform::{SecretKey, Visibility};
    let key = SecretKey::generate().expect("key");
    let alice = store.create_user("alice", false, &sys(), T0).await.expect("user");
    let org = store.create_org("acme", &alice, &sys(), T0).await.expect("org");
    let web = store.create_repo(&org, "web", false, &sys(), T0).await.expect("repo");
    let api = store.create_repo(&org, "api", true, &sys(), T0).await.expect("repo");
    let other = store.create_repo(&alice, "other", false, &sys(), T0).await.expect("repo");
    let actor = Actor::system();
    let put = |owner, name: &'static str, value: &'static str, visibility: Option<Visibility>| {
        let key = key.clone();
        let actor = actor.clone();
        async move { store.put_secret(owner, name, value, visibility.as_ref(), &key, &actor, T0).await }
    };
    assert!(put(HookOwner::Repo(&web), "deploy_key", "repo-value", None).await.expect("put"));
    assert!(!put(HookOwner::Repo(&web), "DEPLOY_KEY", "repo-value-2", None).await.expect("replace"), "replaced");
    assert!(put(HookOwner::Org(&org), "deploy_key", "org-value", None).await.expect("org"));
    assert!(put(HookOwner::Org(&org), "shared", "for-all", None).await.expect("org"));
    assert!(put(HookOwner::Org(&org), "private_only", "p", Some(Visibility::Private)).await.expect("org"));
    assert!(put(HookOwner::Org(&org), "picked", "s", Some(Visibility::Selected(vec![api.id]))).await.expect("org"));
    let err = put(HookOwner::Repo(&web), "GITHUB_TOKEN", "x", None).await.expect_err("reserved");
    assert!(matches!(err, Error::Refused(_)), "{err}");

    // At rest: sealed.
    let mut conn = store.db().acquire().await.expect("conn");
    let q = sea_query::Query::select().column("sealed").from("secrets").to_owned();
    let sealed: Vec<String> = conn.conn().fetch_all(&q).await.expect("rows");
    assert_eq!(sealed.len(), 5);
    assert!(sealed.iter().all(|s| !s.contains("value") && !s.contains("for-all")), "{sealed:?}");
    drop(conn);

    let listed = store.list_secrets(HookOwner::Repo(&web)).await.expect("list");
    assert_eq!(listed.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["DEPLOY_KEY"]);
    let org_listed = store.list_secrets(HookOwner::Org(&org)).await.expect("list");
    let visibility: Vec<(&str, Option<Visibility>)> =
        org_listed.iter().map(|s| (s.name.as_str(), s.visibility.clone())).collect();
    assert_eq!(
        visibility,
        [
            ("DEPLOY_KEY", Some(Visibility::All)),
            ("PICKED", Some(Visibility::Selected(vec![api.id]))),
            ("PRIVATE_ONLY", Some(Visibility::Private)),
            ("SHARED", Some(Visibility::All)),
        ]
    );

    let all = |repo: &Repo| {
        let key = key.clone();
        let repo = repo.clone();
        async move { store.secrets_for_repo(&repo, None, &key).await.expect("secrets") }
    };
    let web_secrets = all(&web).await;
    assert_eq!(web_secrets.get("DEPLOY_KEY").map(String::as_str), Some("repo-value-2"), "the repository's own wins");
    assert_eq!(web_secrets.keys().map(String::as_str).collect::<Vec<_>>(), ["DEPLOY_KEY", "SHARED"]);
    let api_secrets = all(&api).await;
    assert_eq!(
        api_secrets.keys().map(String::as_str).collect::<Vec<_>>(),
        ["DEPLOY_KEY", "PICKED", "PRIVATE_ONLY", "SHARED"]
    );
    assert_eq!(api_secrets["DEPLOY_KEY"], "org-value");
    assert!(all(&other).await.is_empty(), "another owner's repository sees none");
    let only = store.secrets_for_repo(&web, Some(&["SHARED".to_owned()]), &key).await.expect("named");
    assert_eq!(only.keys().collect::<Vec<_>>(), ["SHARED"]);
    assert!(store.secrets_for_repo(&web, Some(&[]), &key).await.expect("none").is_empty());
    let wrong = SecretKey::generate().expect("key");
    assert!(store.secrets_for_repo(&web, None, &wrong).await.is_err(), "another key opens nothing");

    // Rotation: everything opens with the new key, nothing with the old.
    assert_eq!(store.reseal_secrets(&key, &wrong).await.expect("reseal"), 5);
    assert_eq!(store.secrets_for_repo(&web, None, &wrong).await.expect("new key")["SHARED"], "for-all");
    assert!(store.secrets_for_repo(&web, None, &key).await.is_err());

    assert!(store.delete_secret(HookOwner::Repo(&web), "deploy_key", &actor, T0).await.expect("delete"));
    assert!(!store.delete_secret(HookOwner::Repo(&web), "deploy_key", &actor, T0).await.expect("again"));
    let actions: Vec<String> = store
        .list_audit(&AuditFilter { limit: 100, ..AuditFilter::default() })
        .await
        .expect("audit")
        .into_iter()
        .filter(|e| e.action.starts_with("secret."))
        .map(|e| e.action)
        .collect();
    assert_eq!(actions.iter().filter(|a| *a == "secret.create").count(), 5);
    assert!(actions.contains(&"secret.update".to_owned()) && actions.contains(&"secret.delete".to_owned()));

    // Variables: plain, the repository's own over the organization's.
    assert!(store.put_variable(HookOwner::Org(&org), "region", "eu", &actor, T0).await.expect("var"));
    assert!(store.put_variable(HookOwner::Org(&org), "tier", "free", &actor, T0).await.expect("var"));
    assert!(store.put_variable(HookOwner::Repo(&web), "tier", "paid", &actor, T0).await.expect("var"));
    assert!(!store.put_variable(HookOwner::Repo(&web), "TIER", "gold", &actor, T0).await.expect("replace"));
    let vars = store.variables_for_repo(&web).await.expect("vars");
    assert_eq!((vars["REGION"].as_str(), vars["TIER"].as_str()), ("eu", "gold"));
    assert_eq!(store.list_variables(HookOwner::Repo(&web)).await.expect("list")[0].value, "gold");
    assert!(store.delete_variable(HookOwner::Repo(&web), "tier", &actor, T0).await.expect("delete"));
    assert_eq!(store.variables_for_repo(&web).await.expect("vars")["TIER"], "free");
}

async fn bootstrap_creates_admin_once(store: &PlatformStore) {
    let mut persisted = None;
    let token = store
        .bootstrap_admin(T0, |t| {
            persisted = Some(t.clone());
            Ok(())
        })
        .await
        .expect("bootstrap")
        .expect("first bootstrap creates the admin");
    assert_eq!(persisted.as_ref(), Some(&token));
    let principal = store.authenticate(token.expose(), T0).await.expect("auth").expect("token works");
    assert_eq!(principal.account.name, "admin");
    assert!(principal.is_site_admin());
    assert!(store.bootstrap_admin(T0, |_| panic!("must not persist twice")).await.expect("second").is_none());
}

async fn bootstrap_rolls_back_when_persist_fails(store: &PlatformStore) {
    let err = store.bootstrap_admin(T0, |_| Err(std::io::Error::other("disk full"))).await.expect_err("persist fails");
    assert!(matches!(err, Error::Persist(_)), "{err:?}");
    assert!(store.find_account("admin").await.expect("query").is_none(), "rolled back");
    assert!(store.bootstrap_admin(T0, |_| Ok(())).await.expect("retry").is_some());
}

async fn tokens_authenticate_until_expiry(store: &PlatformStore) {
    let user = store.create_user("octo", false, &sys(), T0).await.expect("user");
    let new = NewToken {
        name: "ci".into(),
        scopes: Scopes::new([Scope::RepoRead]),
        expires_at: Some(Timestamp(T0.0 + 1000)),
    };
    let (info, secret) = store.create_token(user.id, &new, &sys(), T0).await.expect("token");
    assert_eq!(info.scopes, Scopes::new([Scope::RepoRead]));

    let principal = store.authenticate(secret.expose(), T0).await.expect("auth").expect("valid");
    assert_eq!(principal.account, user);
    assert_eq!(principal.token_id, info.id);
    assert!(principal.scopes.allows(Scope::RepoRead) && !principal.scopes.allows(Scope::RepoWrite));
    assert!(!principal.is_site_admin());

    let mut tampered = secret.expose().to_owned();
    tampered.pop();
    tampered.push('!');
    assert!(store.authenticate(&tampered, T0).await.expect("auth").is_none());
    assert!(store.authenticate("not-a-token", T0).await.expect("auth").is_none());
    assert!(store.authenticate("", T0).await.expect("auth").is_none());
    assert!(store.authenticate(secret.expose(), Timestamp(T0.0 + 1000)).await.expect("auth").is_none(), "expired");

    // Listing and revocation.
    let forever = NewToken { name: "laptop".into(), scopes: Scopes::new([Scope::RepoWrite]), expires_at: None };
    let (second, secret2) = store.create_token(user.id, &forever, &sys(), T0).await.expect("token");
    let listed = store.list_tokens(user.id).await.expect("list");
    assert_eq!(listed.iter().map(|t| t.id).collect::<Vec<_>>(), [second.id, info.id], "newest first");
    let other = store.create_user("other", false, &sys(), T0).await.expect("user");
    assert!(!store.revoke_token(other.id, second.id, &sys(), T0).await.expect("revoke"), "not theirs");
    assert!(store.authenticate(secret2.expose(), T0).await.expect("auth").is_some());
    assert!(store.revoke_token(user.id, second.id, &sys(), T0).await.expect("revoke"));
    assert!(store.authenticate(secret2.expose(), T0).await.expect("auth").is_none(), "revoked at once");
    assert!(!store.revoke_token(user.id, second.id, &sys(), T0).await.expect("again"));
}

async fn passwords_are_stored_as_hashes(store: &PlatformStore) {
    let user = store.create_user("octo", false, &sys(), T0).await.expect("user");
    let (account, hash) = store.login_candidate("OCTO").await.expect("find").expect("user");
    assert_eq!((account, hash), (user.clone(), None));
    let hash = gitstratum_platform::password::hash_password("hunter2hunter2").expect("hash");
    store.set_password_hash(&user, &hash, &sys(), T0).await.expect("set");
    let (_, stored) = store.login_candidate("octo").await.expect("find").expect("user");
    let stored = stored.expect("hash stored");
    assert!(!stored.contains("hunter2"));
    assert!(gitstratum_platform::password::verify_password(&stored, "hunter2hunter2"));
    assert!(store.login_candidate("nobody").await.expect("find").is_none());
    let org = store.create_org("acme", &user, &sys(), T0).await.expect("org");
    assert!(store.login_candidate("acme").await.expect("find").is_none(), "organizations do not log in");
    assert!(matches!(store.set_password_hash(&org, &hash, &sys(), T0).await, Err(Error::Refused(_))));
    // A site administrator's listing: users and organizations by name, in pages.
    store.create_user("Bob", false, &sys(), T0).await.expect("user");
    let names = |list: Vec<gitstratum_platform::Account>| list.into_iter().map(|a| a.name).collect::<Vec<_>>();
    assert_eq!(names(store.list_accounts(None, 2).await.expect("list")), ["acme", "Bob"]);
    assert_eq!(names(store.list_accounts(Some("bob"), 10).await.expect("list")), ["octo"]);
}

async fn users_are_unique_case_insensitively(store: &PlatformStore) {
    store.create_user("Octo", false, &sys(), T0).await.expect("user");
    let err = store.create_user("octo", false, &sys(), T0).await.expect_err("duplicate");
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    let err = store.create_user("bad_name", false, &sys(), T0).await.expect_err("invalid");
    assert!(matches!(err, Error::InvalidName { field: "username", .. }), "{err:?}");
    assert_eq!(store.find_account("OCTO").await.expect("find").map(|a| a.name), Some("Octo".to_owned()));
}

async fn repositories_crud(store: &PlatformStore) {
    let owner = store.create_user("octo", false, &sys(), T0).await.expect("user");
    let other = store.create_user("other", false, &sys(), T0).await.expect("user");
    let repo = store.create_repo(&owner, "Hello-World", true, &sys(), T0).await.expect("create");
    assert_eq!((repo.owner.as_str(), repo.name.as_str(), repo.private), ("octo", "Hello-World", true));
    assert_eq!(repo.default_branch, "main");

    let found = store.get_repo("OCTO", "hello-world").await.expect("get").expect("found");
    assert_eq!(found, repo);

    let err = store.create_repo(&owner, "hello-WORLD", false, &sys(), T0).await.expect_err("duplicate");
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    // The same name under another owner is fine.
    store.create_repo(&other, "Hello-World", false, &sys(), T0).await.expect("other owner");
    let err = store.create_repo(&owner, "x.git", false, &sys(), T0).await.expect_err("invalid");
    assert!(matches!(err, Error::InvalidName { field: "name", .. }), "{err:?}");

    store.create_repo(&owner, "alpha", false, &sys(), T0).await.expect("create");
    let names: Vec<_> = store.list_repos(owner.id).await.expect("list").into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["alpha", "Hello-World"]);

    assert!(store.delete_repo(&repo, &sys(), T0).await.expect("delete"));
    assert!(!store.delete_repo(&repo, &sys(), T0).await.expect("delete again"));
    assert!(store.get_repo("octo", "Hello-World").await.expect("get").is_none());
}

async fn organizations_members_and_roles(store: &PlatformStore) {
    let alice = store.create_user("alice", false, &sys(), T0).await.expect("user");
    let bob = store.create_user("bob", false, &sys(), T0).await.expect("user");
    let carol = store.create_user("carol", false, &sys(), T0).await.expect("user");
    let org = store.create_org("Acme", &alice, &sys(), T0).await.expect("org");
    assert!(org.is_org && !org.is_admin);
    let err = store.create_org("acme", &bob, &sys(), T0).await.expect_err("one namespace");
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    let err = store.create_org("alice", &bob, &sys(), T0).await.expect_err("users and orgs share names");
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    assert!(store.find_account("ACME").await.expect("find").expect("org").is_org);
    assert_eq!(store.org_role(org.id, alice.id).await.expect("role"), Some(OrgRole::Owner));

    store.set_org_member(&org, &bob, OrgRole::Member, &sys(), T0).await.expect("add bob");
    assert_eq!(store.org_role(org.id, bob.id).await.expect("role"), Some(OrgRole::Member));
    let members = store.org_members(org.id).await.expect("members");
    let names: Vec<(&str, OrgRole)> = members.iter().map(|m| (m.account.name.as_str(), m.role)).collect();
    assert_eq!(names, [("alice", OrgRole::Owner), ("bob", OrgRole::Member)]);
    assert_eq!(store.list_orgs(Some(bob.id)).await.expect("orgs").len(), 1);
    assert!(store.list_orgs(Some(carol.id)).await.expect("orgs").is_empty());
    assert_eq!(store.list_orgs(None).await.expect("orgs").len(), 1);

    // The last owner stays.
    let err = store.set_org_member(&org, &alice, OrgRole::Member, &sys(), T0).await.expect_err("last owner");
    assert!(matches!(err, Error::Refused(_)), "{err:?}");
    let err = store.remove_org_member(&org, &alice, &sys(), T0).await.expect_err("last owner");
    assert!(matches!(err, Error::Refused(_)), "{err:?}");
    assert_eq!(store.org_role(org.id, alice.id).await.expect("role"), Some(OrgRole::Owner), "rolled back");
    let err = store.set_org_member(&org, &org, OrgRole::Member, &sys(), T0).await.expect_err("orgs are not members");
    assert!(matches!(err, Error::Refused(_)), "{err:?}");

    // Roles on the organization's repositories.
    let repo = store.create_repo(&org, "widgets", true, &sys(), T0).await.expect("repo");
    assert_eq!(store.repo_role(alice.id, &repo).await.expect("role"), Some(Role::Admin));
    assert_eq!(store.repo_role(bob.id, &repo).await.expect("role"), Some(Role::Read));
    assert_eq!(store.repo_role(carol.id, &repo).await.expect("role"), None);
    store.set_collaborator(&repo, &bob, Role::Write, &sys(), T0).await.expect("grant");
    assert_eq!(store.repo_role(bob.id, &repo).await.expect("role"), Some(Role::Write), "the higher role wins");

    store.create_repo(&carol, "own", false, &sys(), T0).await.expect("repo");
    let names = |repos: Vec<gitstratum_platform::Repo>| {
        repos.into_iter().map(|r| format!("{}/{}", r.owner, r.name)).collect::<Vec<_>>()
    };
    assert_eq!(names(store.list_accessible_repos(bob.id).await.expect("list")), ["Acme/widgets"]);
    assert_eq!(names(store.list_accessible_repos(carol.id).await.expect("list")), ["carol/own"]);
    assert!(store.remove_org_member(&org, &bob, &sys(), T0).await.expect("remove"));
    assert!(!store.remove_org_member(&org, &bob, &sys(), T0).await.expect("again"));
    assert_eq!(store.repo_role(bob.id, &repo).await.expect("role"), Some(Role::Write), "the grant stays");
}

async fn collaborators_grant_roles(store: &PlatformStore) {
    let owner = store.create_user("owner", false, &sys(), T0).await.expect("user");
    let dev = store.create_user("dev", false, &sys(), T0).await.expect("user");
    let repo = store.create_repo(&owner, "app", true, &sys(), T0).await.expect("repo");
    assert_eq!(store.repo_role(owner.id, &repo).await.expect("role"), Some(Role::Admin));
    assert_eq!(store.repo_role(dev.id, &repo).await.expect("role"), None);
    for role in [Role::Read, Role::Triage, Role::Maintain, Role::Write] {
        store.set_collaborator(&repo, &dev, role, &sys(), T0).await.expect("grant");
        assert_eq!(store.repo_role(dev.id, &repo).await.expect("role"), Some(role));
    }
    let list = store.collaborators(repo.id).await.expect("list");
    assert_eq!(list.len(), 1);
    assert_eq!((list[0].account.name.as_str(), list[0].role), ("dev", Role::Write));
    assert!(store.remove_collaborator(&repo, &dev, &sys(), T0).await.expect("revoke"));
    assert!(!store.remove_collaborator(&repo, &dev, &sys(), T0).await.expect("again"));
    assert_eq!(store.repo_role(dev.id, &repo).await.expect("role"), None);
    // Deleting the repository deletes its grants.
    store.set_collaborator(&repo, &dev, Role::Read, &sys(), T0).await.expect("grant");
    assert!(store.delete_repo(&repo, &sys(), T0).await.expect("delete"));
    assert!(store.collaborators(repo.id).await.expect("list").is_empty());
}

async fn raw_execute(store: &PlatformStore, sql: &str) {
    match store.db() {
        gitstratum_platform::Db::Sqlite(pool) => {
            sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())).execute(pool).await.expect("raw sql");
        }
        gitstratum_platform::Db::Postgres(pool) => {
            sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())).execute(pool).await.expect("raw sql");
        }
    }
}

async fn audit_log_is_a_verifiable_chain(store: &PlatformStore) {
    store.bootstrap_admin(T0, |_| Ok(())).await.expect("bootstrap").expect("admin");
    let admin = store.find_account("admin").await.expect("find").expect("admin");
    let actor = Actor::account(admin.id, "admin").from(Some("192.0.2.7".into()), Some("req-1".into()));
    let user = store.create_user("octo", false, &actor, Timestamp(T0.0 + 1)).await.expect("user");
    let repo = store.create_repo(&user, "demo", false, &actor, Timestamp(T0.0 + 2)).await.expect("repo");
    store.set_collaborator(&repo, &admin, Role::Read, &actor, Timestamp(T0.0 + 3)).await.expect("grant");
    store
        .record_audit(&actor, &AuditEvent::new("site.settings", "site".into()), Timestamp(T0.0 + 4))
        .await
        .expect("record");
    // A failed action leaves no entry.
    store.create_user("octo", false, &actor, T0).await.expect_err("duplicate");

    let all = store.list_audit(&AuditFilter { limit: 100, ..AuditFilter::default() }).await.expect("list");
    let actions: Vec<&str> = all.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["site.settings", "repo.collaborator.set", "repo.create", "user.create", "account.bootstrap"]);
    assert_eq!(all[3].ip.as_deref(), Some("192.0.2.7"));
    assert_eq!(all[3].request_id.as_deref(), Some("req-1"));
    assert_eq!(all[3].target, "user:octo");
    assert_eq!(all[2].target, "repo:octo/demo");
    assert_eq!(all[4].actor, "system");
    for pair in all.windows(2) {
        assert_eq!(pair[0].prev_hash, pair[1].hash, "each entry names the one before it");
    }
    let page = store
        .list_audit(&AuditFilter { before: Some(all[1].id), limit: 2, ..AuditFilter::default() })
        .await
        .expect("page");
    assert_eq!(page.iter().map(|e| e.id).collect::<Vec<_>>(), [all[2].id, all[3].id]);
    let only = store
        .list_audit(&AuditFilter { action: Some("repo.create".into()), limit: 10, ..AuditFilter::default() })
        .await
        .expect("filter");
    assert_eq!(only.len(), 1);

    let ok = store.verify_audit().await.expect("verify");
    assert_eq!((ok.entries, ok.broken_at), (5, None));

    // Altering an entry is detected at that entry.
    let target = all[2].id;
    raw_execute(store, &format!("UPDATE audit_log SET target = 'repo:octo/other' WHERE id = {target}")).await;
    let bad = store.verify_audit().await.expect("verify");
    assert_eq!(bad.broken_at.map(|b| b.0), Some(target));
    raw_execute(store, &format!("UPDATE audit_log SET target = 'repo:octo/demo' WHERE id = {target}")).await;
    assert_eq!(store.verify_audit().await.expect("verify").broken_at, None);
    // Removing one breaks the chain at the next.
    raw_execute(store, &format!("DELETE FROM audit_log WHERE id = {}", all[3].id)).await;
    let bad = store.verify_audit().await.expect("verify");
    assert_eq!(bad.broken_at.map(|b| b.0), Some(all[2].id));
}

async fn concurrent_audit_appends_keep_one_chain(store: &PlatformStore) {
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.record_audit(&sys(), &AuditEvent::new("test.concurrent", format!("n:{i}")), T0).await.expect("append")
        }));
    }
    for t in tasks {
        t.await.expect("join");
    }
    let v = store.verify_audit().await.expect("verify");
    assert_eq!((v.entries, v.broken_at), (16, None));
}

const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKl0UOwkXXh5iHy4+8ZqR/Yxx9yWeCgdeusVCeND979i test@example";

async fn ssh_keys_are_unique_per_installation(store: &PlatformStore) {
    let alice = store.create_user("alice", false, &sys(), T0).await.expect("user");
    let bob = store.create_user("bob", false, &sys(), T0).await.expect("user");
    let key = gitstratum_core::parse_ssh_public_key(ED25519).expect("key");
    let added = store.add_ssh_key(&alice, "laptop", &key, &sys(), T0).await.expect("add");
    assert_eq!(added.fingerprint, "SHA256:q7J1glDquFVEA4N8oDWpxEJw4K0qlQBYtJxFdvznaKc");
    let err = store.add_ssh_key(&bob, "stolen", &key, &sys(), T0).await.expect_err("one key, one user");
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    assert_eq!(store.list_ssh_keys(alice.id).await.expect("list"), std::slice::from_ref(&added));
    assert!(store.list_ssh_keys(bob.id).await.expect("list").is_empty());
    assert_eq!(store.find_ssh_key(&added.fingerprint).await.expect("find").map(|k| k.user_id), Some(alice.id));
    // Over SSH the key is its user, with a full token's repository powers and no more.
    let (used, principal) =
        store.authenticate_ssh_key(&added.fingerprint, T0).await.expect("authenticate").expect("known key");
    assert_eq!((used.id, principal.account.name.as_str()), (added.id, "alice"));
    assert!(principal.scopes.allows(gitstratum_platform::Scope::RepoWrite));
    assert!(!principal.scopes.allows(gitstratum_platform::Scope::Admin));
    assert_eq!(store.find_ssh_key(&added.fingerprint).await.expect("find").and_then(|k| k.last_used_at), Some(T0));
    assert!(store.authenticate_ssh_key("SHA256:nobody", T0).await.expect("authenticate").is_none());
    store.set_suspended(&alice, true, &sys(), T0).await.expect("suspend");
    assert!(store.authenticate_ssh_key(&added.fingerprint, T0).await.expect("authenticate").is_none());
    store.set_suspended(&alice, false, &sys(), T0).await.expect("unsuspend");
    assert!(!store.remove_ssh_key(&bob, added.id, &sys(), T0).await.expect("not bob's"));
    assert!(store.remove_ssh_key(&alice, added.id, &sys(), T0).await.expect("remove"));
    assert!(store.find_ssh_key(&added.fingerprint).await.expect("find").is_none());
}

async fn teams_grant_roles_to_their_members(store: &PlatformStore) {
    let owner = store.create_user("owner", false, &sys(), T0).await.expect("user");
    let dev = store.create_user("dev", false, &sys(), T0).await.expect("user");
    let outsider = store.create_user("outsider", false, &sys(), T0).await.expect("user");
    let org = store.create_org("acme", &owner, &sys(), T0).await.expect("org");
    let other_org = store.create_org("other", &owner, &sys(), T0).await.expect("org");
    let repo = store.create_repo(&org, "api", true, &sys(), T0).await.expect("repo");
    let foreign = store.create_repo(&other_org, "x", true, &sys(), T0).await.expect("repo");
    let team = store.create_team(&org, "Backend", &sys(), T0).await.expect("team");
    assert!(matches!(store.create_team(&org, "backend", &sys(), T0).await, Err(Error::Conflict { .. })));
    assert!(store.create_team(&other_org, "backend", &sys(), T0).await.is_ok(), "names are per organization");
    assert_eq!(store.find_team(org.id, "BACKEND").await.expect("find").map(|t| t.id), Some(team.id));
    assert_eq!(store.list_teams(org.id).await.expect("list").len(), 1);

    let err = store.add_team_member(&org, &team, &outsider, &sys(), T0).await.expect_err("not in the org");
    assert!(matches!(err, Error::Refused(_)), "{err:?}");
    store.set_org_member(&org, &dev, OrgRole::Member, &sys(), T0).await.expect("member");
    store.add_team_member(&org, &team, &dev, &sys(), T0).await.expect("add");
    store.add_team_member(&org, &team, &dev, &sys(), T0).await.expect("adding twice is harmless");
    assert_eq!(store.team_members(team.id).await.expect("members").len(), 1);
    assert_eq!(store.repo_role(dev.id, &repo).await.expect("role"), Some(Role::Read), "base permission");
    store.set_team_repo(&org, &team, &repo, Role::Maintain, &sys(), T0).await.expect("grant");
    assert_eq!(store.repo_role(dev.id, &repo).await.expect("role"), Some(Role::Maintain));
    let ops = store.create_team(&org, "ops", &sys(), T0).await.expect("team");
    store.set_team_repo(&org, &ops, &repo, Role::Read, &sys(), T0).await.expect("grant");
    let grants: Vec<(String, Role)> =
        store.repo_teams(repo.id).await.expect("grants").into_iter().map(|g| (g.team.name, g.role)).collect();
    assert_eq!(grants, [("Backend".to_owned(), Role::Maintain), ("ops".to_owned(), Role::Read)]);
    assert!(store.repo_teams(foreign.id).await.expect("grants").is_empty());
    assert!(store.remove_team_repo(&org, &ops, &repo, &sys(), T0).await.expect("revoke"));
    let err = store.set_team_repo(&org, &team, &foreign, Role::Read, &sys(), T0).await.expect_err("foreign");
    assert!(matches!(err, Error::Refused(_)), "{err:?}");
    let names: Vec<String> =
        store.list_accessible_repos(dev.id).await.expect("list").into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["api"]);

    assert!(store.remove_team_repo(&org, &team, &repo, &sys(), T0).await.expect("revoke"));
    assert_eq!(store.repo_role(dev.id, &repo).await.expect("role"), Some(Role::Read));
    assert!(!store.remove_team_repo(&org, &team, &repo, &sys(), T0).await.expect("again"));
    store.set_team_repo(&org, &team, &repo, Role::Write, &sys(), T0).await.expect("grant");

    // Leaving the organization leaves its teams: rejoining gives the base permission only.
    store.remove_org_member(&org, &dev, &sys(), T0).await.expect("leave");
    assert_eq!(store.repo_role(dev.id, &repo).await.expect("role"), None);
    store.set_org_member(&org, &dev, OrgRole::Member, &sys(), T0).await.expect("rejoin");
    assert_eq!(store.repo_role(dev.id, &repo).await.expect("role"), Some(Role::Read));
    assert!(store.team_members(team.id).await.expect("members").is_empty());
    store.add_team_member(&org, &team, &dev, &sys(), T0).await.expect("add");
    assert!(store.remove_team_member(&org, &team, &dev, &sys(), T0).await.expect("remove"));
    assert!(!store.remove_team_member(&org, &team, &dev, &sys(), T0).await.expect("again"));
}

async fn webhook_deliveries_are_a_durable_queue(store: &PlatformStore) {
    use gitstratum_platform::{AttemptOutcome, NewDelivery};
    let owner = store.create_user("owner", false, &sys(), T0).await.expect("user");
    let repo = store.create_repo(&owner, "app", false, &sys(), T0).await.expect("repo");
    let key = gitstratum_platform::SecretKey::generate().expect("key");
    let hook = store
        .create_webhook(
            HookOwner::Repo(&repo),
            "http://127.0.0.1:9/h",
            Some(("s3cret", &key)),
            &["push".into()],
            &sys(),
            T0,
        )
        .await
        .expect("hook");
    // The signing secret is stored sealed, and opens with the key.
    assert!(hook.secret_sealed && hook.secret.as_deref().is_some_and(|s| !s.contains("s3cret")));
    assert_eq!(hook.signing_secret(&key).expect("opens").as_deref(), Some("s3cret"));
    assert!(hook.signing_secret(&gitstratum_platform::SecretKey::generate().expect("key")).is_err());
    // A secret stored in the clear (before sealing) is sealed by `seal_webhook_secrets`.
    let mut conn = store.db().acquire().await.expect("conn");
    let clear = sea_query::Query::update()
        .table("webhooks")
        .values([("secret", "old-secret".into()), ("secret_sealed", false.into())])
        .and_where(sea_query::ExprTrait::eq(sea_query::Expr::col("id"), hook.id))
        .to_owned();
    conn.conn().execute(&clear).await.expect("clear");
    drop(conn);
    assert_eq!(store.seal_webhook_secrets(&key).await.expect("seal"), 1);
    assert_eq!(store.seal_webhook_secrets(&key).await.expect("again"), 0);
    let hook = store.list_webhooks(HookOwner::Repo(&repo)).await.expect("list").remove(0);
    assert!(hook.secret_sealed && hook.secret.as_deref() != Some("old-secret"));
    assert_eq!(hook.signing_secret(&key).expect("opens").as_deref(), Some("old-secret"));
    assert_eq!(store.list_webhooks(HookOwner::Repo(&repo)).await.expect("list"), std::slice::from_ref(&hook));
    assert_eq!(store.log_cursor("webhooks").await.expect("cursor"), 0);
    let new =
        |guid: &str| NewDelivery { webhook_id: hook.id, guid: guid.into(), event: "push".into(), payload: "{}".into() };
    store.enqueue_deliveries("webhooks", 0, 5, &[new("a"), new("b")], T0).await.expect("enqueue");
    assert_eq!(store.log_cursor("webhooks").await.expect("cursor"), 5, "moved with the deliveries");
    store.enqueue_deliveries("webhooks", 5, 7, &[], T0).await.expect("nothing to deliver, cursor still moves");
    assert_eq!(store.log_cursor("webhooks").await.expect("cursor"), 7);
    // A delivery id is unique: enqueuing the same delivery twice fails as a whole.
    assert!(store.enqueue_deliveries("webhooks", 7, 9, &[new("c"), new("a")], T0).await.is_err());
    assert_eq!(store.log_cursor("webhooks").await.expect("cursor"), 7, "rolled back");

    let due = store.due_deliveries(T0, 10).await.expect("due");
    assert_eq!(due.iter().map(|d| d.guid.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    // Two servers read the same due delivery: one claims it; it is not due again until its
    // claim runs out.
    assert!(store.claim_delivery(&due[0], T0, 60_000).await.expect("claim"));
    assert!(!store.claim_delivery(&due[0], T0, 60_000).await.expect("claim"), "claimed already");
    assert_eq!(store.due_deliveries(T0, 10).await.expect("due").len(), 1, "only b is due");
    assert_eq!(store.due_deliveries(Timestamp(T0.0 + 60_000), 10).await.expect("due").len(), 2, "the claim ran out");
    let failed =
        AttemptOutcome { status_code: Some(500), error: Some("HTTP 500".into()), duration_ms: 3, success: false };
    let ok = AttemptOutcome { status_code: Some(200), error: None, duration_ms: 2, success: true };
    store.record_attempt(&due[0], &failed, T0).await.expect("record");
    store.record_attempt(&due[1], &ok, T0).await.expect("record");
    assert!(store.due_deliveries(T0, 10).await.expect("due").is_empty(), "the failure waits for its backoff");
    let later = store.due_deliveries(Timestamp(T0.0 + 10_000), 10).await.expect("due");
    assert_eq!(later.len(), 1);
    assert_eq!((later[0].attempts, later[0].status_code), (1, Some(500)));
    let mut d = later[0].clone();
    for _ in 1..gitstratum_platform::webhooks::MAX_ATTEMPTS {
        store.record_attempt(&d, &failed, T0).await.expect("record");
        d.attempts += 1;
    }
    let log = store.list_deliveries(hook.id, 10).await.expect("log");
    assert_eq!(log.iter().map(|d| d.state.as_str()).collect::<Vec<_>>(), ["delivered", "failed"]);
    let again = store.redeliver(hook.id, log[1].id, "a2", T0).await.expect("redeliver").expect("found");
    assert_eq!(store.due_deliveries(T0, 10).await.expect("due")[0].id, again);
    assert!(store.redeliver(hook.id, 999, "zz", T0).await.expect("redeliver").is_none());
    assert_eq!(store.get_repo_by_id(repo.id).await.expect("get").map(|r| r.name), Some("app".into()));
    assert!(store.delete_webhook(HookOwner::Repo(&repo), hook.id, &sys(), T0).await.expect("delete"));
    assert!(store.list_deliveries(hook.id, 10).await.expect("log").is_empty(), "deliveries go with their hook");
}

async fn organization_hooks_hear_every_repository_of_the_organization(store: &PlatformStore) {
    let alice = store.create_user("alice", false, &sys(), T0).await.expect("user");
    let org = store.create_org("acme", &alice, &sys(), T0).await.expect("org");
    let app = store.create_repo(&org, "app", false, &sys(), T0).await.expect("repo");
    let lib = store.create_repo(&org, "lib", false, &sys(), T0).await.expect("repo");
    let own = store.create_repo(&alice, "dotfiles", false, &sys(), T0).await.expect("repo");
    let events = ["push".to_owned(), "repository".to_owned()];
    let org_hook =
        store.create_webhook(HookOwner::Org(&org), "http://h/org", None, &events, &sys(), T0).await.expect("hook");
    assert_eq!((org_hook.repo_id, org_hook.org_id), (None, Some(org.id)));
    let app_hook =
        store.create_webhook(HookOwner::Repo(&app), "http://h/app", None, &events, &sys(), T0).await.expect("hook");
    let ids = |hooks: Vec<gitstratum_platform::Webhook>| hooks.into_iter().map(|h| h.id).collect::<Vec<_>>();
    assert_eq!(ids(store.hooks_hearing(app.id, app.owner_id).await.expect("app")), [org_hook.id, app_hook.id]);
    assert_eq!(ids(store.hooks_hearing(lib.id, lib.owner_id).await.expect("lib")), [org_hook.id]);
    assert!(store.hooks_hearing(own.id, own.owner_id).await.expect("user repo").is_empty());
    assert_eq!(ids(store.list_webhooks(HookOwner::Org(&org)).await.expect("org hooks")), [org_hook.id]);
    // An organization's hook is not a repository's: deleting it through a repository finds nothing.
    assert!(!store.delete_webhook(HookOwner::Repo(&app), org_hook.id, &sys(), T0).await.expect("delete"));
    assert!(store.delete_webhook(HookOwner::Org(&org), org_hook.id, &sys(), T0).await.expect("delete"));
    let filter = AuditFilter { action: Some("webhook.delete".into()), limit: 5, ..Default::default() };
    let audit = store.list_audit(&filter).await.expect("audit");
    assert_eq!((audit[0].target.as_str(), audit[0].org_id), ("org:acme", Some(org.id)));
}

async fn repositories_have_descriptions(store: &PlatformStore) {
    let alice = store.create_user("alice", false, &sys(), T0).await.expect("user");
    let repo = store.create_repo(&alice, "app", true, &sys(), T0).await.expect("repo");
    // A description: trimmed, one line, at most 350 characters; read back with the repository.
    assert_eq!(repo.description, "");
    let kept = store.set_repo_description(&repo, "  The \"app\" \\ ünïcode  ", &sys(), T0).await.expect("describe");
    assert_eq!(kept, "The \"app\" \\ ünïcode");
    assert_eq!(store.get_repo("alice", "app").await.expect("get").expect("repo").description, kept);
    for bad in ["two\nlines".to_owned(), "x".repeat(351)] {
        assert!(matches!(store.set_repo_description(&repo, &bad, &sys(), T0).await, Err(Error::Refused(_))));
    }
    let described = store.create_described_repo(&alice, "lib", false, "A library", &sys(), T0).await.expect("repo");
    assert_eq!(
        store.get_repo("alice", "lib").await.expect("get").map(|r| r.description),
        Some(described.description.clone())
    );
    let audit = store
        .list_audit(&AuditFilter { action: Some("repo.update".into()), limit: 10, ..AuditFilter::default() })
        .await;
    let details = audit.expect("audit").into_iter().map(|e| e.details).collect::<Vec<_>>();
    assert!(details.iter().any(|d| d.contains(r#"{"description":"The \"app\" \\ ünïcode"}"#)), "{details:?}");
    assert!(store.delete_repo(&described, &sys(), T0).await.expect("delete"));
}

async fn repository_changes_are_platform_events(store: &PlatformStore) {
    let alice = store.create_user("alice", false, &sys(), T0).await.expect("user");
    let repo = store.create_repo(&alice, "app", true, &sys(), T0).await.expect("repo");
    assert!(store.set_repo_private(&repo, false, &sys(), T0).await.expect("publicize"));
    assert!(!store.set_repo_private(&Repo { private: false, ..repo.clone() }, false, &sys(), T0).await.expect("same"));
    assert!(store.delete_repo(&repo, &sys(), T0).await.expect("delete"));
    assert!(!store.delete_repo(&repo, &sys(), T0).await.expect("gone"), "a second delete is no event");
    let events = store.platform_events_after(0, 10).await.expect("events");
    let seen: Vec<_> = events.iter().map(|e| (e.event.as_str(), e.action.as_str(), e.repo.private)).collect();
    assert_eq!(
        seen,
        [("repository", "created", true), ("repository", "publicized", false), ("repository", "deleted", true)]
    );
    assert!(events.iter().all(|e| e.repo.id == repo.id && e.repo.owner == "alice" && e.repo.name == "app"));
    assert!(events.windows(2).all(|w| w[0].id < w[1].id));
    let after = store.platform_events_after(u64::try_from(events[1].id).expect("id"), 10).await.expect("after");
    assert_eq!(after.len(), 1);
}

/// Migration 5 rebuilds the webhook tables on SQLite (to let a hook belong to an organization):
/// hooks and their deliveries keep their ids and rows, and deleting a hook still deletes its
/// deliveries.
#[tokio::test]
async fn sqlite_migration_5_keeps_hooks_and_deliveries() {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect("sqlite::memory:").await.expect("sqlite");
    sqlx::query("PRAGMA foreign_keys = ON").execute(&mut conn).await.expect("pragma");
    let run = |sql: &'static str| sqlx::raw_sql(sql);
    for sql in [
        include_str!("../migrations/sqlite/0001_init.sql"),
        include_str!("../migrations/sqlite/0002_rbac_audit.sql"),
        include_str!("../migrations/sqlite/0003_teams_ssh_keys.sql"),
        include_str!("../migrations/sqlite/0004_webhooks.sql"),
        "INSERT INTO accounts (id, name, name_key, created_at) VALUES (1, 'a', 'a', 0);
         INSERT INTO repos (id, owner_id, name, name_key, private, default_branch, created_at)
             VALUES (7, 1, 'r', 'r', FALSE, 'main', 0);
         INSERT INTO webhooks (id, repo_id, url, secret, events, created_at) VALUES (3, 7, 'http://h', 's', 'push', 0);
         INSERT INTO webhook_deliveries (id, webhook_id, guid, event, payload, state, next_attempt_at, created_at)
             VALUES (11, 3, 'g', 'push', '{}', 'pending', 0, 0);",
        include_str!("../migrations/sqlite/0005_org_hooks_events.sql"),
    ] {
        run(sql).execute(&mut conn).await.expect("migration step");
    }
    let hook: (i64, Option<i64>, Option<i64>, String) =
        sqlx::query_as("SELECT id, repo_id, org_id, secret FROM webhooks").fetch_one(&mut conn).await.expect("hook");
    assert_eq!(hook, (3, Some(7), None, "s".to_owned()));
    let delivery: (i64, i64) =
        sqlx::query_as("SELECT id, webhook_id FROM webhook_deliveries").fetch_one(&mut conn).await.expect("delivery");
    assert_eq!(delivery, (11, 3));
    sqlx::query("DELETE FROM webhooks WHERE id = 3").execute(&mut conn).await.expect("delete");
    let left: (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM webhook_deliveries").fetch_one(&mut conn).await.expect("count");
    assert_eq!(left.0, 0, "deliveries still cascade with their hook");
    let both = "INSERT INTO webhooks (repo_id, org_id, url, events, created_at) VALUES (7, 1, 'http://h', 'push', 0)";
    assert!(sqlx::query(both).execute(&mut conn).await.is_err(), "a hook has exactly one owner");
}

/// Failed logins per key in fixed windows: counted once per failure (concurrent ones too), a
/// window over starts again at 1, a success forgets the key.
async fn login_failures_count_in_windows(store: &PlatformStore) {
    const WINDOW: i64 = 60_000;
    assert_eq!(store.login_failures("account:hubot", T0, WINDOW).await.expect("read"), None);
    let fail = || store.record_login_failure("account:hubot", T0, WINDOW);
    let (a, b, c, d) = tokio::join!(fail(), fail(), fail(), fail());
    for done in [a, b, c, d] {
        done.expect("record");
    }
    assert_eq!(store.login_failures("account:hubot", T0, WINDOW).await.expect("read"), Some((4, T0)));
    let later = Timestamp(T0.0 + WINDOW);
    assert_eq!(store.login_failures("account:hubot", later, WINDOW).await.expect("read"), None, "window over");
    store.record_login_failure("account:hubot", later, WINDOW).await.expect("record");
    assert_eq!(store.login_failures("account:hubot", later, WINDOW).await.expect("read"), Some((1, later)));
    store.record_login_failure("address:10.0.0.1", later, WINDOW).await.expect("record");
    store.clear_login_failures("account:hubot", later, WINDOW).await.expect("clear");
    assert_eq!(store.login_failures("account:hubot", later, WINDOW).await.expect("read"), None);
    assert_eq!(store.login_failures("address:10.0.0.1", later, WINDOW).await.expect("read"), Some((1, later)));
}

/// Servers add their rate-limit counts to shared per-minute windows: every count is added once,
/// whatever order servers list their keys in and however many add at once (the same keys in
/// opposite orders deadlocked on PostgreSQL before the keys were sorted).
async fn rate_counts_add_up_across_servers(store: &PlatformStore) {
    let keys: Vec<i64> = (1..=20).collect();
    let add = |reversed: bool| {
        let mut counts: Vec<(i64, i64)> = keys.iter().map(|&k| (k, 1)).collect();
        if reversed {
            counts.reverse();
        }
        async move { store.add_rate_counts(100, &counts).await }
    };
    for _ in 0..10 {
        let (a, b, c) = tokio::join!(add(false), add(true), add(false));
        for added in [a, b, c] {
            let totals = added.expect("no deadlock");
            assert_eq!(totals.iter().map(|t| t.0).collect::<Vec<_>>(), keys, "in key order");
        }
    }
    let totals = store.add_rate_counts(100, &[(7, 0)]).await.expect("read");
    assert_eq!(totals, [(7, 30)], "10 rounds of 3 servers");
    assert_eq!(store.add_rate_counts(102, &[(7, 1)]).await.expect("next"), [(7, 1)], "a new window");
}

/// Singleton work takes turns among the servers on one PostgreSQL database (a session lock, free
/// again once its guard is dropped); SQLite has one server, which always has its turn.
async fn singletons_take_turns(store: &PlatformStore) {
    let first = store.db().try_singleton(7).await.expect("try");
    assert!(first.is_some());
    let second = store.db().try_singleton(7).await.expect("try");
    assert_eq!(second.is_some(), store.db().backend() == "sqlite", "held elsewhere on PostgreSQL");
    assert!(store.db().try_singleton(8).await.expect("try").is_some(), "another lock is free");
    drop((first, second));
    let mut again = None;
    for _ in 0..50 {
        again = store.db().try_singleton(7).await.expect("try");
        if again.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "free once dropped");
    // A server gone silent (cut off the network, its machine dead) loses its turns within
    // seconds, not hours: each of its sessions asks PostgreSQL to probe it and give up.
    if let gitstratum_platform::db::PooledConn::Postgres(mut conn) = store.db().acquire().await.expect("connection") {
        let show = |name: &'static str| sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(format!("SHOW {name}")));
        let idle = show("tcp_keepalives_idle").fetch_one(&mut *conn).await.expect("show");
        let unacknowledged = show("tcp_user_timeout").fetch_one(&mut *conn).await.expect("show");
        assert_eq!((idle.as_str(), unacknowledged.as_str()), ("5", "10000"));
    }
}

/// Branch protections: one per pattern, replaced in place (keeping when it was made), the exact
/// name before patterns, audited; reviews in order; both go with their repository.
async fn branch_protections_and_reviews(store: &PlatformStore) {
    use gitstratum_platform::{Protection, ReviewState};
    let user = store.create_user("octo", false, &sys(), T0).await.expect("user");
    let repo = store.create_repo(&user, "app", false, &sys(), T0).await.expect("repo");
    let rules = Protection {
        pattern: "release/*".into(),
        require_checks: true,
        strict: true,
        checks: vec!["build".into(), "lint".into()],
        require_pull_request: true,
        approvals: 2,
        dismiss_stale_reviews: true,
        bypass: vec!["octo".into()],
        ..Protection::default()
    };
    let saved = store.put_protection(&repo, &rules, &sys(), T0).await.expect("put");
    assert_eq!(saved, Protection { created_at: T0, updated_at: T0, ..rules.clone() });
    let later = Timestamp(T0.0 + 1000);
    let replaced =
        store.put_protection(&repo, &Protection { approvals: 1, ..rules.clone() }, &sys(), later).await.expect("put");
    assert_eq!((replaced.approvals, replaced.created_at, replaced.updated_at), (1, T0, later));
    let bad = Protection { pattern: "a..b".into(), ..Protection::default() };
    assert!(matches!(store.put_protection(&repo, &bad, &sys(), T0).await, Err(Error::Refused(_))));
    let too_many = Protection { approvals: 7, ..rules.clone() };
    assert!(matches!(store.put_protection(&repo, &too_many, &sys(), T0).await, Err(Error::Refused(_))));
    store
        .put_protection(&repo, &Protection { pattern: "release/1.0".into(), ..Protection::default() }, &sys(), T0)
        .await
        .expect("exact");
    assert_eq!(store.protection_for(repo.id, "release/1.0").await.expect("for").expect("one").pattern, "release/1.0");
    assert_eq!(store.protection_for(repo.id, "release/2.0").await.expect("for").expect("one").pattern, "release/*");
    assert!(store.protection_for(repo.id, "main").await.expect("for").is_none());
    assert_eq!(store.list_protections(repo.id).await.expect("list").len(), 2);
    assert!(store.delete_protection(&repo, "release/1.0", &sys(), T0).await.expect("delete"));
    assert!(!store.delete_protection(&repo, "release/1.0", &sys(), T0).await.expect("gone"));
    let entries = store.list_audit(&AuditFilter { limit: 10, ..AuditFilter::default() }).await.expect("audit");
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    assert!(actions.starts_with(&["branch_protection.delete", "branch_protection.update"]), "{actions:?}");

    let pull = store.create_pull(repo.id, &user, &new_pull(&repo, "feature", "main"), T0).await.expect("pull");
    let other = store.create_user("mona", false, &sys(), T0).await.expect("user");
    store.add_review(pull.id, &other, ReviewState::Approved, "", &"a".repeat(40), T0).await.expect("review");
    store
        .add_review(pull.id, &other, ReviewState::ChangesRequested, "fix it", &"b".repeat(40), T0)
        .await
        .expect("review");
    let reviews = store.list_reviews(pull.id).await.expect("reviews");
    let events = store.platform_events_after(0, 100).await.expect("events");
    let submitted: Vec<Option<i64>> = events
        .iter()
        .filter(|e| e.event == "pull_request_review")
        .map(|e| e.pull.as_ref().and_then(|p| p.review_id))
        .collect();
    assert_eq!(submitted, reviews.iter().map(|r| Some(r.id)).collect::<Vec<_>>(), "one submitted event per review");
    let got: Vec<(&str, ReviewState, &str)> =
        reviews.iter().map(|r| (r.reviewer.as_str(), r.state, r.commit_sha.as_str())).collect();
    assert_eq!(
        got,
        [
            ("mona", ReviewState::Approved, "a".repeat(40).as_str()),
            ("mona", ReviewState::ChangesRequested, "b".repeat(40).as_str())
        ]
    );
    store.delete_repo(&repo, &sys(), T0).await.expect("delete repo");
    assert!(store.list_protections(repo.id).await.expect("list").is_empty());
    assert!(store.list_reviews(pull.id).await.expect("reviews").is_empty());
}

/// Forks belong to their parent's network (and keep it when the parent goes), start with CI off,
/// and are found by owner within the network; line comments are kept and moved only from where
/// they were read; review requests are answered by a review.
async fn forks_line_comments_and_review_requests(store: &PlatformStore) {
    use gitstratum_platform::{CommentMove, NewComment, ReviewState, Side};
    let octo = store.create_user("octo", false, &sys(), T0).await.expect("user");
    let mona = store.create_user("mona", false, &sys(), T0).await.expect("user");
    let repo = store.create_repo(&octo, "app", true, &sys(), T0).await.expect("repo");
    assert!(!repo.is_fork() && repo.network_id == repo.id && repo.parent_id.is_none());
    let fork = store.create_fork(&repo, &mona, "app", &sys(), T0).await.expect("fork");
    assert_eq!((fork.parent_id, fork.network_id, fork.private), (Some(repo.id), repo.id, true));
    assert_eq!(store.get_repo("mona", "app").await.expect("get").as_ref(), Some(&fork));
    let again = store.create_fork(&repo, &mona, "APP", &sys(), T0).await;
    assert!(matches!(again, Err(Error::Conflict { .. })), "{again:?}");
    let deeper = store.create_fork(&fork, &octo, "app-2", &sys(), T0).await.expect("fork of a fork");
    assert_eq!((deeper.parent_id, deeper.network_id), (Some(fork.id), repo.id));
    assert_eq!(store.list_forks(repo.id).await.expect("forks"), std::slice::from_ref(&fork));
    let found = store.network_repo_of(repo.network_id, "MONA").await.expect("by owner");
    assert_eq!(found.map(|r| r.id), Some(fork.id));
    assert_eq!(store.network_repo_of(repo.network_id, "nobody").await.expect("by owner"), None);
    let parentless = store.create_repo(&mona, "other", false, &sys(), T0).await.expect("repo");
    assert_eq!(store.network_repo_of(parentless.network_id, "octo").await.expect("by owner"), None);

    // Line comments.
    let pull = store.create_pull(repo.id, &mona, &new_pull(&repo, "feature", "main"), T0).await.expect("pull");
    let head = "a".repeat(40);
    let new = NewComment {
        body: "why?".into(),
        path: "src/lib.rs".into(),
        side: Side::Right,
        original_commit: head.clone(),
        original_line: 7,
        commit_sha: head.clone(),
        line: Some(7),
        in_reply_to: None,
    };
    let first = store.add_comment(pull.id, &octo, &new, T0).await.expect("comment");
    let blank = NewComment { body: " ".into(), ..new.clone() };
    assert!(matches!(store.add_comment(pull.id, &octo, &blank, T0).await, Err(Error::Refused(_))));
    let reply = NewComment { body: "because".into(), in_reply_to: Some(first.id), ..new.clone() };
    let second = store.add_comment(pull.id, &mona, &reply, T0).await.expect("reply");
    assert_eq!(store.live_comments(pull.id).await.expect("live").len(), 2);
    let next = "c".repeat(40);
    let moved = CommentMove { id: first.id, commit_sha: next.clone(), line: Some(9) };
    let outdated = CommentMove { id: second.id, commit_sha: next.clone(), line: None };
    // A move from a place the comment is no longer at changes nothing.
    let stale = CommentMove { id: first.id, commit_sha: "d".repeat(40), line: Some(1) };
    store.move_comments(&[(moved, head.clone()), (outdated, head.clone())]).await.expect("move");
    store.move_comments(&[(stale, head.clone())]).await.expect("stale move");
    let all = store.list_comments(pull.id).await.expect("list");
    let places: Vec<(i64, &str, Option<i64>, i64)> =
        all.iter().map(|c| (c.id, c.commit_sha.as_str(), c.line, c.original_line)).collect();
    assert_eq!(places, [(first.id, next.as_str(), Some(9), 7), (second.id, next.as_str(), None, 7)]);
    assert_eq!(store.live_comments(pull.id).await.expect("live").len(), 1);
    assert_eq!(store.get_comment(pull.id, second.id).await.expect("get").map(|c| c.in_reply_to), Some(Some(first.id)));

    // Review requests: asked, asked again (no duplicate), answered by a review, withdrawn.
    let hubot = store.create_user("hubot", false, &sys(), T0).await.expect("user");
    store.request_reviews(pull.id, &[octo.clone(), hubot.clone()], "mona", T0).await.expect("ask");
    store.request_reviews(pull.id, std::slice::from_ref(&octo), "mona", T0).await.expect("ask again");
    assert_eq!(store.review_requests(pull.id).await.expect("asked"), ["hubot", "octo"]);
    store.add_review(pull.id, &octo, ReviewState::Approved, "", &head, T0).await.expect("review");
    assert_eq!(store.review_requests(pull.id).await.expect("asked"), ["hubot"]);
    store.withdraw_review_requests(pull.id, &[hubot.id]).await.expect("withdraw");
    assert!(store.review_requests(pull.id).await.expect("asked").is_empty());

    // Deleting the parent leaves its forks in the network, without a parent.
    store.delete_repo(&repo, &sys(), T0).await.expect("delete");
    let orphan = store.get_repo("mona", "app").await.expect("get").expect("the fork stays");
    assert_eq!((orphan.parent_id, orphan.network_id, orphan.is_fork()), (None, repo.id, true));
    let grandchild = store.get_repo("octo", "app-2").await.expect("get").expect("stays");
    assert_eq!(grandchild.parent_id, Some(fork.id));
}

/// An organization's default protection is given to the default branch of each repository
/// created (or forked) in it afterwards, in the creating transaction; others are untouched.
async fn organization_default_protection_covers_new_repositories(store: &PlatformStore) {
    use gitstratum_platform::Protection;
    let octo = store.create_user("octo", false, &sys(), T0).await.expect("user");
    let org = store.create_org("acme", &octo, &sys(), T0).await.expect("org");
    let before = store.create_repo(&org, "old", false, &sys(), T0).await.expect("repo");
    assert_eq!(store.org_default_protection(org.id).await.expect("get"), None);
    let rules =
        Protection { require_pull_request: true, approvals: 1, allow_deletions: false, ..Protection::default() };
    let saved = store.put_org_default_protection(&org, &rules, &sys(), T0).await.expect("put");
    assert_eq!((saved.require_pull_request, saved.approvals, saved.pattern.as_str()), (true, 1, ""));
    let too_many = Protection { approvals: 7, ..rules.clone() };
    assert!(matches!(store.put_org_default_protection(&org, &too_many, &sys(), T0).await, Err(Error::Refused(_))));

    let new = store.create_repo(&org, "new", false, &sys(), T0).await.expect("repo");
    let got = store.list_protections(new.id).await.expect("list");
    assert_eq!(
        got.iter().map(|p| (p.pattern.as_str(), p.require_pull_request, p.approvals)).collect::<Vec<_>>(),
        [("main", true, 1)]
    );
    assert!(store.list_protections(before.id).await.expect("list").is_empty(), "earlier repositories keep theirs");
    let mine = store.create_repo(&octo, "mine", false, &sys(), T0).await.expect("repo");
    assert!(store.list_protections(mine.id).await.expect("list").is_empty(), "a user's repositories are not the org's");
    let fork = store.create_fork(&mine, &org, "mine", &sys(), T0).await.expect("fork into the org");
    assert_eq!(store.list_protections(fork.id).await.expect("list").len(), 1);

    assert!(store.delete_org_default_protection(&org, &sys(), T0).await.expect("delete"));
    assert!(!store.delete_org_default_protection(&org, &sys(), T0).await.expect("again"));
    let later = store.create_repo(&org, "later", false, &sys(), T0).await.expect("repo");
    assert!(store.list_protections(later.id).await.expect("list").is_empty());
}
