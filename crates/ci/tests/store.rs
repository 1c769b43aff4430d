//! CI state on SQLite and on PostgreSQL: the same cases on both.

use gitstratum_ci::{CiStore, Conclusion, JobState, NewJob, NewRun, RunState};
use gitstratum_core::Timestamp;
use gitstratum_platform::{Actor, PlatformStore};

const T0: Timestamp = Timestamp(1_700_000_000_000);

fn run(repo_id: i64, path: &str, event_key: &str) -> NewRun {
    NewRun {
        repo_id,
        workflow_path: path.into(),
        workflow_name: "CI".into(),
        title: "CI".into(),
        event: "push".into(),
        event_key: event_key.into(),
        git_ref: "refs/heads/main".into(),
        commit_sha: "a".repeat(40),
        actor: "alice".into(),
        failure: None,
        workflow: Some("{}".into()),
        jobs: vec![
            NewJob {
                job_key: "build".into(),
                name: "build (linux)".into(),
                matrix: Some(r#"{"os":"linux"}"#.into()),
                needs: vec![],
                runs_on: Some(vec!["ubuntu-latest".into()]),
                steps: vec!["Run actions/checkout@v4".into(), "Run make".into()],
            },
            NewJob {
                job_key: "test".into(),
                name: "test".into(),
                matrix: None,
                needs: vec!["build".into()],
                runs_on: None,
                steps: vec!["Run make test".into()],
            },
        ],
    }
}

async fn runs_are_created_once_with_the_cursor(store: &PlatformStore) {
    let alice = store.create_user("alice", false, &Actor::system(), T0).await.expect("user");
    let repo = store.create_repo(&alice, "app", false, &Actor::system(), T0).await.expect("repo");
    let ci = CiStore::new(store.db().clone());
    let failed = NewRun {
        failure: Some("ci.yml:3:1: unknown key".into()),
        jobs: vec![],
        ..run(repo.id, "broken.yml", "push:7")
    };
    let created = ci.create_runs("ci", 7, &[run(repo.id, "ci.yml", "push:7"), failed], T0).await.expect("create");
    assert_eq!(created.len(), 2);
    assert_eq!(store.log_cursor("ci").await.expect("cursor"), 7, "the cursor moved with the runs");
    // The same event again (a replay after a crash, say) creates nothing.
    let again = ci.create_runs("ci", 8, &[run(repo.id, "ci.yml", "push:7")], T0).await.expect("again");
    assert!(again.is_empty());
    assert_eq!(store.log_cursor("ci").await.expect("cursor"), 8);

    let good = ci.get_run(created[0]).await.expect("get").expect("run");
    assert_eq!((good.run_number, good.state, good.conclusion), (1, RunState::Queued, None));
    let bad = ci.get_run(created[1]).await.expect("get").expect("run");
    assert_eq!((bad.run_number, bad.state, bad.conclusion), (2, RunState::Completed, Some(Conclusion::Failure)));
    assert_eq!(bad.message.as_deref(), Some("ci.yml:3:1: unknown key"));
    assert!(ci.jobs(bad.id).await.expect("jobs").is_empty());

    let jobs = ci.jobs(good.id).await.expect("jobs");
    let states: Vec<_> = jobs.iter().map(|j| (j.job_key.as_str(), j.state, j.needs.clone())).collect();
    assert_eq!(states, [("build", JobState::Queued, vec![]), ("test", JobState::Waiting, vec!["build".to_owned()])]);
    assert_eq!(jobs[0].runs_on.as_deref(), Some(&["ubuntu-latest".to_owned()][..]));
    assert_eq!((jobs[1].runs_on.clone(), jobs[0].attempt), (None, 1));
    let steps = ci.steps(good.id).await.expect("steps");
    let names: Vec<_> = steps.iter().map(|s| (s.job_id == jobs[0].id, s.number, s.name.as_str())).collect();
    assert_eq!(names, [(true, 1, "Run actions/checkout@v4"), (true, 2, "Run make"), (false, 1, "Run make test")]);

    // Newest first, by pages.
    let page = ci.list_runs(repo.id, None, 1).await.expect("page");
    assert_eq!((page.runs[0].id, page.next_before), (created[1], Some(created[1])));
    let page = ci.list_runs(repo.id, page.next_before, 1).await.expect("page 2");
    assert_eq!((page.runs[0].id, page.next_before), (created[0], None));
    // Runs go with their repository.
    assert!(store.delete_repo(&repo, &Actor::system(), T0).await.expect("delete"));
    assert!(ci.get_run(created[0]).await.expect("get").is_none());
}

gitstratum_platform::both_backends!(runs_are_created_once_with_the_cursor);
