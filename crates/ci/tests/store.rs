//! CI state on SQLite and on PostgreSQL: the same cases on both.

use gitstratum_ci::{
    CiStore, Conclusion, JobState, LogStore, NewJob, NewRun, RunFilter, RunState, RunStatus, StepReport,
};
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
        inputs: None,
        concurrency: None,
        jobs: vec![
            NewJob {
                job_key: "build".into(),
                name: "build (linux)".into(),
                matrix: Some(r#"{"os":"linux"}"#.into()),
                needs: vec![],
                runs_on: Some(vec!["ubuntu-latest".into()]),
                steps: vec!["Run actions/checkout@v4".into(), "Run make".into()],
                fail_fast: true,
                max_parallel: None,
                concurrency: None,
                retry: None,
            },
            NewJob {
                job_key: "test".into(),
                name: "test".into(),
                matrix: None,
                needs: vec!["build".into()],
                runs_on: None,
                steps: vec!["Run make test".into()],
                fail_fast: true,
                max_parallel: None,
                concurrency: None,
                retry: None,
            },
        ],
    }
}

/// Creates runs as the ingestor does, moving its cursor from where it is to `to`.
async fn create_runs(
    ci: &CiStore,
    to: u64,
    runs: &[NewRun],
    now: Timestamp,
) -> gitstratum_platform::store::Result<Vec<i64>> {
    let from = ci.log_cursor("ci").await?;
    ci.create_runs("ci", from, to, runs, now).await
}

/// Cluster mode's logs: frames by step and offset as with files (resends, overlaps, gaps, late
/// frames, truncation past the cap, finishing), read the same by another server on the database;
/// two servers appending at one place store it once; on PostgreSQL another server's live readers
/// get the appends.
async fn logs_in_the_database_are_shared_by_servers(store: &PlatformStore) {
    use gitstratum_ci::logs::LogError;
    // Finished steps go to a blob store both servers share (object storage in a cluster).
    let dir = tempfile::tempdir().expect("temp dir");
    let blobs: std::sync::Arc<dyn gitstratum_ci::blob::BlobStore> =
        std::sync::Arc::new(gitstratum_ci::blob::FsBlobStore::open(dir.path().to_owned()).expect("blobs"));
    let here = std::sync::Arc::new(LogStore::in_database(store.db().clone(), blobs.clone(), 1024));
    let there = std::sync::Arc::new(LogStore::in_database(store.db().clone(), blobs.clone(), 1024));
    let listening = there.spawn_announcement_listener();
    let mut live = there.subscribe(1, 1);
    if listening.is_some() {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await; // the LISTEN is in place
    }
    assert_eq!(here.append(1, 1, 0, 0, b"setting up\n").await.expect("setup"), 11);
    assert_eq!(here.append(1, 1, 1, 0, b"hello ").await.expect("first"), 6);
    assert_eq!(here.append(1, 1, 1, 0, b"hello ").await.expect("resent"), 6, "a resend adds nothing");
    assert_eq!(here.append(1, 1, 1, 3, b"lo world\n").await.expect("overlap"), 12, "only the new part");
    assert!(matches!(here.append(1, 1, 1, 20, b"x").await, Err(LogError::Gap { step: 1, offset: 20, have: 12 })));
    assert_eq!(here.append(1, 1, 0, 0, b"setting up\n").await.expect("late resend"), 11);
    assert_eq!(there.read(1, 1).await.expect("read"), b"setting up\nhello world\n");
    assert_eq!(there.steps(1, 1).await.expect("steps"), [(0, true), (1, false)], "step 0 finished by step 1");
    assert_eq!(there.read_step(1, 1, 1, 6).await.expect("open step from an offset"), b"world\n");
    // A server that did not write it appends where the other left off.
    assert_eq!(there.append(1, 1, 1, 12, b"more\n").await.expect("append elsewhere"), 17);
    // The first server, not knowing, tries the same place: refused, told where to resend from.
    assert!(matches!(here.append(1, 1, 1, 12, b"mine\n").await, Err(LogError::Gap { have: 17, .. })));
    assert_eq!(here.append(1, 1, 1, 17, b"mine\n").await.expect("resent there"), 22);
    here.finish(1, 1).await.expect("finish");
    assert_eq!(there.steps(1, 1).await.expect("steps"), [(0, true), (1, true)]);
    assert_eq!(there.read_step(1, 1, 1, 6).await.expect("finished, from an offset"), b"world\nmore\nmine\n");
    assert!(there.stored_bytes(1, 1).await.expect("bytes") > 0);
    // Past the cap: a marker, and every frame is acknowledged.
    let line = [b'x'; 99].iter().copied().chain([b'\n']).collect::<Vec<u8>>();
    let mut offset = 0;
    for _ in 0..20 {
        offset = here.append(7, 1, 1, offset, &line).await.expect("append");
    }
    assert_eq!(offset, 2000);
    let step = String::from_utf8(there.read_step(7, 1, 1, 0).await.expect("read")).expect("utf-8");
    assert!(step.ends_with("##[truncated] this step's log passed 1024 bytes; the rest of it was not kept\n"));
    assert_eq!(blobs.list("joblogs").expect("list").len(), 2, "job 1's two finished steps");
    here.finish(7, 1).await.expect("finish");
    here.delete_job(7).await.expect("delete");
    assert!(there.read(7, 1).await.expect("read").is_empty());
    assert_eq!(blobs.list("joblogs").expect("list").len(), 2, "job 7's log went with it");
    if let Some(listening) = listening {
        // The other server's live reader got the first server's appends, from the database.
        let mut got = Vec::new();
        while let Ok(Ok(chunk)) = tokio::time::timeout(std::time::Duration::from_secs(5), live.recv()).await {
            got.push((chunk.step, chunk.offset));
            if got.contains(&(1, 17)) {
                break;
            }
        }
        assert!(got.contains(&(0, 0)) && got.contains(&(1, 0)) && got.contains(&(1, 17)), "live appends: {got:?}");
        listening.abort();
    }
}

/// Two servers' ingestors that read the same events: the cursor moves once, so exactly one of
/// them commits its runs; the other's work is rolled back, and so is a stale consumer's.
async fn consumers_racing_on_one_log_commit_once(store: &PlatformStore) {
    let alice = store.create_user("alice", false, &Actor::system(), T0).await.expect("user");
    let repo = store.create_repo(&alice, "app", false, &Actor::system(), T0).await.expect("repo");
    let (one, two) = (CiStore::new(store.db().clone()), CiStore::new(store.db().clone()));
    let a = [run(repo.id, "ci.yml", "push:3")];
    let b = [run(repo.id, "other.yml", "push:3")];
    let (a, b) = tokio::join!(one.create_runs("ci", 0, 3, &a, T0), two.create_runs("ci", 0, 3, &b, T0));
    let (a, b) = (a.expect("one"), b.expect("two"));
    assert_eq!(a.len() + b.len(), 1, "exactly one consumer committed: {a:?} {b:?}");
    assert_eq!(one.log_cursor("ci").await.expect("cursor"), 3);
    let stale = one.create_runs("ci", 0, 4, &[run(repo.id, "late.yml", "push:4")], T0).await.expect("stale");
    assert!(stale.is_empty());
    assert_eq!(two.log_cursor("ci").await.expect("cursor"), 3, "a stale consumer moves nothing");
    let next = two.create_runs("ci", 3, 4, &[run(repo.id, "late.yml", "push:4")], T0).await.expect("next");
    assert_eq!(next.len(), 1);
}

/// Runs created at the same moment by different servers (the ingestor's and a dispatch) are
/// numbered one after the other: on PostgreSQL both once read the same highest number and one
/// failed on the unique (repository, number) — found by the cluster failure suite.
async fn runs_created_at_once_get_distinct_numbers(store: &PlatformStore) {
    let alice = store.create_user("alice", false, &Actor::system(), T0).await.expect("user");
    let repo = store.create_repo(&alice, "app", false, &Actor::system(), T0).await.expect("repo");
    let ci = CiStore::new(store.db().clone());
    let mut creations = tokio::task::JoinSet::new();
    for i in 0..8 {
        let (ci, run) = (ci.clone(), run(repo.id, "ci.yml", &format!("dispatch:{i}")));
        creations.spawn(async move { ci.create_run(&run, T0).await });
    }
    let mut numbers = Vec::new();
    for id in creations.join_all().await {
        let id = id.expect("created, whatever the others do").expect("a new run");
        numbers.push(ci.get_run(id).await.expect("get").expect("run").run_number);
    }
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=8).collect::<Vec<i64>>());
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
    let created = create_runs(&ci, 7, &[run(repo.id, "ci.yml", "push:7"), failed], T0).await.expect("create");
    assert_eq!(created.len(), 2);
    assert_eq!(store.log_cursor("ci").await.expect("cursor"), 7, "the cursor moved with the runs");
    // The same event again (a replay after a crash, say) creates nothing.
    let again = create_runs(&ci, 8, &[run(repo.id, "ci.yml", "push:7")], T0).await.expect("again");
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
    let page = ci.list_runs(repo.id, None, 1, &Default::default()).await.expect("page");
    assert_eq!((page.runs[0].id, page.next_before), (created[1], Some(created[1])));
    let repo_id = repo.id;
    let only = |f: RunFilter| {
        let ci = ci.clone();
        async move { ci.list_runs(repo_id, None, 10, &f).await.expect("list").runs.len() }
    };
    assert_eq!(only(RunFilter { workflow: Some("broken.yml".into()), ..Default::default() }).await, 1);
    assert_eq!(
        only(RunFilter { branch: Some("main".into()), event: Some("push".into()), ..Default::default() }).await,
        2
    );
    assert_eq!(only(RunFilter { branch: Some("dev".into()), ..Default::default() }).await, 0);
    assert_eq!(only(RunFilter { actor: Some("bob".into()), ..Default::default() }).await, 0);
    let page = ci.list_runs(repo.id, page.next_before, 1, &Default::default()).await.expect("page 2");
    assert_eq!((page.runs[0].id, page.next_before), (created[0], None));
    // Runs go with their repository.
    assert!(store.delete_repo(&repo, &Actor::system(), T0).await.expect("delete"));
    assert!(ci.get_run(created[0]).await.expect("get").is_none());
}

/// The job state machine on both backends: leases by label, acknowledgement, completion releasing
/// or skipping dependents, the run's conclusion, expired leases, and job tokens.
async fn jobs_move_through_their_states(store: &PlatformStore) {
    use gitstratum_ci::Beat;
    let alice = store.create_user("alice", false, &Actor::system(), T0).await.expect("user");
    let repo = store.create_repo(&alice, "app", false, &Actor::system(), T0).await.expect("repo");
    let ci = CiStore::new(store.db().clone());
    let mut new = run(repo.id, "ci.yml", "push:1");
    new.jobs[1].runs_on = Some(vec!["ubuntu-latest".into()]);
    new.jobs.push(NewJob { job_key: "deploy".into(), needs: vec!["test".into()], ..new.jobs[1].clone() });
    let run_id = create_runs(&ci, 1, &[new], T0).await.expect("create")[0];
    let small = ci.register_runner(alice.id, "small", &["self-hosted".into()], T0).await.expect("runner");
    let small = ci.get_runner(small).await.expect("get").expect("runner");
    assert!(ci.lease_job(&small, T0).await.expect("lease").is_none(), "labels must all match");
    let big = ci.register_runner(alice.id, "big", &["ubuntu-latest".into(), "x64".into()], T0).await.expect("runner");
    let big = ci.get_runner(big).await.expect("get").expect("runner");

    // build: leased, not acknowledged in time: back in the queue as the same attempt.
    let lease = ci.lease_job(&big, T0).await.expect("lease").expect("a job");
    assert_eq!((lease.job.job_key.as_str(), lease.job.attempt), ("build", 1));
    assert!(ci.lease_job(&big, T0).await.expect("lease").is_none(), "test waits for build");
    let token = ci.job_token(lease.token.expose()).await.expect("token").expect("valid while leased");
    assert_eq!((token.repo_id, token.actor.as_str()), (repo.id, "alice"));
    assert_eq!(ci.expire_leases(Timestamp(T0.0 + 31_000)).await.expect("expire"), 1);
    assert!(ci.job_token(lease.token.expose()).await.expect("token").is_none());
    let lease = ci.lease_job(&big, T0).await.expect("lease").expect("again");
    assert_eq!((lease.job.job_key.as_str(), lease.job.attempt), ("build", 1));
    let job = lease.job.id;
    assert!(!ci.ack_job(job, small.id, 1, T0).await.expect("ack"), "not the small runner's");
    assert!(ci.ack_job(job, big.id, 1, T0).await.expect("ack"));
    assert_eq!(ci.get_run(run_id).await.expect("run").expect("run").state, RunState::InProgress);
    assert_eq!(ci.heartbeat(job, big.id, 1, T0).await.expect("beat"), Beat::Continue);
    assert!(
        ci.report_step(job, big.id, 1, StepReport { number: 1, conclusion: None, annotations: &[] }, T0)
            .await
            .expect("step")
    );
    assert!(
        ci.report_step(
            job,
            big.id,
            1,
            StepReport { number: 1, conclusion: Some(Conclusion::Success), annotations: &[] },
            T0
        )
        .await
        .expect("step")
    );
    // Running, then silent: a new attempt.
    assert_eq!(ci.expire_leases(Timestamp(T0.0 + 61_000)).await.expect("expire"), 1);
    assert_eq!(ci.heartbeat(job, big.id, 1, T0).await.expect("beat"), Beat::Stop);
    let lease = ci.lease_job(&big, T0).await.expect("lease").expect("attempt 2");
    assert_eq!((lease.job.id, lease.job.attempt), (job, 2));
    assert!(ci.steps(run_id).await.expect("steps").iter().all(|s| s.state == RunState::Queued), "steps start afresh");
    assert!(ci.ack_job(job, big.id, 2, T0).await.expect("ack"));
    assert!(!ci.complete_job(job, big.id, 1, Conclusion::Success, None, T0).await.expect("stale"), "attempt 1 is over");
    assert!(ci.complete_job(job, big.id, 2, Conclusion::Success, None, T0).await.expect("complete"));
    assert!(!ci.complete_job(job, big.id, 2, Conclusion::Success, None, T0).await.expect("again"));

    // build succeeded: test is released; it fails, so deploy is skipped and the run fails.
    let lease = ci.lease_job(&big, T0).await.expect("lease").expect("test");
    assert_eq!(lease.job.job_key, "test");
    assert!(ci.ack_job(lease.job.id, big.id, 1, T0).await.expect("ack"));
    assert!(ci.complete_job(lease.job.id, big.id, 1, Conclusion::Failure, None, T0).await.expect("complete"));
    assert!(ci.lease_job(&big, T0).await.expect("lease").is_none());
    let jobs = ci.jobs(run_id).await.expect("jobs");
    let ends: Vec<_> = jobs.iter().map(|j| (j.job_key.as_str(), j.state, j.conclusion)).collect();
    assert_eq!(
        ends,
        [
            ("build", JobState::Completed, Some(Conclusion::Success)),
            ("test", JobState::Completed, Some(Conclusion::Failure)),
            ("deploy", JobState::Completed, Some(Conclusion::Skipped)),
        ]
    );
    assert_eq!(jobs[2].message.as_deref(), Some("skipped: test did not succeed"));
    let run = ci.get_run(run_id).await.expect("run").expect("run");
    assert_eq!((run.state, run.conclusion), (RunState::Completed, Some(Conclusion::Failure)));
    assert!(ci.steps(run_id).await.expect("steps").iter().all(|s| s.state == RunState::Completed));
}

/// Cancel and re-run on both backends.
async fn runs_cancel_and_run_again(store: &PlatformStore) {
    use gitstratum_ci::Beat;
    let alice = store.create_user("alice", false, &Actor::system(), T0).await.expect("user");
    let repo = store.create_repo(&alice, "app", false, &Actor::system(), T0).await.expect("repo");
    let ci = CiStore::new(store.db().clone());
    let mut new = run(repo.id, "ci.yml", "push:1");
    new.jobs[1].runs_on = Some(vec!["ubuntu-latest".into()]);
    let run_id = create_runs(&ci, 1, &[new], T0).await.expect("create")[0];
    let runner = ci.register_runner(alice.id, "r", &["ubuntu-latest".into()], T0).await.expect("runner");
    let runner = ci.get_runner(runner).await.expect("get").expect("runner");
    let lease = ci.lease_job(&runner, T0).await.expect("lease").expect("build");
    assert!(ci.ack_job(lease.job.id, runner.id, 1, T0).await.expect("ack"));
    assert!(!ci.rerun(run_id, false, T0).await.expect("rerun"), "not while it runs");
    assert!(ci.cancel_run(run_id, T0).await.expect("cancel"));
    // The waiting job is cancelled at once; the running one hears it in its heartbeat.
    assert_eq!(ci.jobs(run_id).await.expect("jobs")[1].conclusion, Some(Conclusion::Cancelled));
    assert_eq!(ci.heartbeat(lease.job.id, runner.id, 1, T0).await.expect("beat"), Beat::Cancel);
    assert!(ci.complete_job(lease.job.id, runner.id, 1, Conclusion::Cancelled, None, T0).await.expect("complete"));
    let done = ci.get_run(run_id).await.expect("run").expect("run");
    assert_eq!((done.state, done.conclusion), (RunState::Completed, Some(Conclusion::Cancelled)));
    assert!(!ci.cancel_run(run_id, T0).await.expect("cancel"), "nothing left to cancel");
    // Re-run the failed jobs: both (cancelled is not success), as attempt 2, in dependency order.
    assert!(ci.rerun(run_id, true, T0).await.expect("rerun"));
    let jobs = ci.jobs(run_id).await.expect("jobs");
    let states: Vec<_> = jobs.iter().map(|j| (j.state, j.attempt, j.conclusion)).collect();
    assert_eq!(states, [(JobState::Queued, 2, None), (JobState::Waiting, 2, None)]);
    assert_eq!(ci.get_run(run_id).await.expect("run").expect("run").state, RunState::Queued);
    let lease = ci.lease_job(&runner, T0).await.expect("lease").expect("build again");
    assert_eq!((lease.job.job_key.as_str(), lease.job.attempt), ("build", 2));
    assert!(ci.ack_job(lease.job.id, runner.id, 2, T0).await.expect("ack"));
    assert!(ci.complete_job(lease.job.id, runner.id, 2, Conclusion::Success, None, T0).await.expect("complete"));
    let lease = ci.lease_job(&runner, T0).await.expect("lease").expect("test");
    assert!(ci.ack_job(lease.job.id, runner.id, 2, T0).await.expect("ack"));
    assert!(ci.complete_job(lease.job.id, runner.id, 2, Conclusion::Success, None, T0).await.expect("complete"));
    let done = ci.get_run(run_id).await.expect("run").expect("run");
    assert_eq!((done.state, done.conclusion), (RunState::Completed, Some(Conclusion::Success)));
    assert!(!ci.rerun(run_id, true, T0).await.expect("rerun"), "nothing failed");
    assert!(ci.rerun(run_id, false, T0).await.expect("rerun all"));
}

/// Matrix `fail-fast` and `max-parallel`, and GitStratum's `retry:` with its delay.
async fn matrices_and_retries(store: &PlatformStore) {
    use gitstratum_ci::RetryPolicy;
    let alice = store.create_user("alice", false, &Actor::system(), T0).await.expect("user");
    let repo = store.create_repo(&alice, "app", false, &Actor::system(), T0).await.expect("repo");
    let ci = CiStore::new(store.db().clone());
    let instance = |os: &str| NewJob {
        job_key: "build".into(),
        name: format!("build ({os})"),
        matrix: None,
        needs: vec![],
        runs_on: Some(vec!["x".into()]),
        steps: vec!["Run make".into()],
        fail_fast: true,
        max_parallel: Some(2),
        concurrency: None,
        retry: None,
    };
    let mut new = run(repo.id, "ci.yml", "push:1");
    new.jobs = vec![instance("a"), instance("b"), instance("c")];
    new.jobs.push(NewJob {
        job_key: "flaky".into(),
        name: "flaky".into(),
        max_parallel: None,
        retry: Some(RetryPolicy { max_attempts: 2, delay_ms: 10_000, exponential: true }),
        ..instance("x")
    });
    let run_id = create_runs(&ci, 1, &[new], T0).await.expect("create")[0];
    let r = ci.register_runner(alice.id, "r", &["x".into()], T0).await.expect("runner");
    let r = ci.get_runner(r).await.expect("get").expect("runner");
    let a = ci.lease_job(&r, T0).await.expect("lease").expect("a");
    let b = ci.lease_job(&r, T0).await.expect("lease").expect("b");
    assert_eq!((a.job.name.as_str(), b.job.name.as_str()), ("build (a)", "build (b)"));
    // max-parallel 2: build (c) waits; the next lease is the flaky job.
    let flaky = ci.lease_job(&r, T0).await.expect("lease").expect("flaky");
    assert_eq!(flaky.job.job_key, "flaky");
    assert!(ci.lease_job(&r, T0).await.expect("lease").is_none(), "build (c) waits for a slot");
    for lease in [&a, &b, &flaky] {
        assert!(ci.ack_job(lease.job.id, r.id, 1, T0).await.expect("ack"));
    }
    // The flaky job fails: it is retried as attempt 2, not before its delay (10 s ± 20 %).
    assert!(ci.complete_job(flaky.job.id, r.id, 1, Conclusion::Failure, None, T0).await.expect("complete"));
    let again = ci.get_job(flaky.job.id).await.expect("get").expect("job");
    assert_eq!((again.state, again.attempt), (JobState::Queued, 2));
    let not_before = again.not_before.expect("a delay").0 - T0.0;
    assert!((8_000..=12_000).contains(&not_before), "{not_before}");
    // build (a) fails: fail-fast cancels build (c) now and tells build (b) through its heartbeat.
    assert!(ci.complete_job(a.job.id, r.id, 1, Conclusion::Failure, None, T0).await.expect("complete"));
    let jobs = ci.jobs(run_id).await.expect("jobs");
    assert_eq!((jobs[2].state, jobs[2].conclusion), (JobState::Completed, Some(Conclusion::Cancelled)));
    assert_eq!(ci.heartbeat(b.job.id, r.id, 1, T0).await.expect("beat"), gitstratum_ci::Beat::Cancel);
    assert!(ci.complete_job(b.job.id, r.id, 1, Conclusion::Cancelled, None, T0).await.expect("complete"));
    // The retry is leasable once its delay has passed; attempt 2 is the last.
    assert!(ci.lease_job(&r, T0).await.expect("lease").is_none(), "too early");
    let later = Timestamp(T0.0 + 13_000);
    let retry = ci.lease_job(&r, later).await.expect("lease").expect("the retry");
    assert_eq!((retry.job.id, retry.job.attempt), (flaky.job.id, 2));
    assert!(ci.ack_job(retry.job.id, r.id, 2, later).await.expect("ack"));
    assert!(ci.complete_job(retry.job.id, r.id, 2, Conclusion::Failure, None, later).await.expect("complete"));
    let done = ci.get_run(run_id).await.expect("run").expect("run");
    assert_eq!((done.state, done.conclusion), (RunState::Completed, Some(Conclusion::Failure)));
}

/// Concurrency groups: one running and one pending run per group; a newer pending run replaces
/// the older; `cancel-in-progress` cancels the group's unfinished runs.
async fn concurrency_groups(store: &PlatformStore) {
    let alice = store.create_user("alice", false, &Actor::system(), T0).await.expect("user");
    let repo = store.create_repo(&alice, "app", false, &Actor::system(), T0).await.expect("repo");
    let ci = CiStore::new(store.db().clone());
    let grouped = |key: &str, cancel: bool| {
        let mut new = run(repo.id, "ci.yml", key);
        new.jobs.truncate(1);
        new.jobs[0].runs_on = Some(vec!["x".into()]);
        new.concurrency = Some(("deploy".into(), cancel));
        new
    };
    let r = ci.register_runner(alice.id, "r", &["x".into()], T0).await.expect("runner");
    let r = ci.get_runner(r).await.expect("get").expect("runner");
    let first = create_runs(&ci, 1, &[grouped("push:1", false)], T0).await.expect("create")[0];
    let second = create_runs(&ci, 2, &[grouped("push:2", false)], T0).await.expect("create")[0];
    let lease = ci.lease_job(&r, T0).await.expect("lease").expect("the first run's job");
    assert_eq!(lease.run.id, first);
    assert!(ci.lease_job(&r, T0).await.expect("lease").is_none(), "the second run is pending");
    let third = create_runs(&ci, 3, &[grouped("push:3", false)], T0).await.expect("create")[0];
    let replaced = ci.get_run(second).await.expect("run").expect("run");
    assert_eq!((replaced.state, replaced.conclusion), (RunState::Completed, Some(Conclusion::Cancelled)), "replaced");
    assert!(ci.ack_job(lease.job.id, r.id, 1, T0).await.expect("ack"));
    assert!(ci.complete_job(lease.job.id, r.id, 1, Conclusion::Success, None, T0).await.expect("complete"));
    let next = ci.lease_job(&r, T0).await.expect("lease").expect("the third run, released");
    assert_eq!(next.run.id, third);
    // cancel-in-progress: the running third run is told to stop; the fourth goes at once.
    assert!(ci.ack_job(next.job.id, r.id, 1, T0).await.expect("ack"));
    let fourth = create_runs(&ci, 4, &[grouped("push:4", true)], T0).await.expect("create")[0];
    assert_eq!(ci.heartbeat(next.job.id, r.id, 1, T0).await.expect("beat"), gitstratum_ci::Beat::Cancel);
    let lease = ci.lease_job(&r, T0).await.expect("lease").expect("the fourth run's job");
    assert_eq!(lease.run.id, fourth);
}

/// Job-level concurrency groups (per repository, across runs): one queued or running and one
/// pending job; a newer pending job replaces the older; `cancel-in-progress` cancels the group's
/// jobs. Job events record each job's queued, in-progress and completed moments; annotations come
/// with a step's ending, once; runs list by status.
async fn job_concurrency_events_and_annotations(store: &PlatformStore) {
    use gitstratum_ci::Annotation;
    let alice = store.create_user("alice", false, &Actor::system(), T0).await.expect("user");
    let repo = store.create_repo(&alice, "app", false, &Actor::system(), T0).await.expect("repo");
    let ci = CiStore::new(store.db().clone());
    let grouped = |key: &str, cancel: bool| {
        let mut new = run(repo.id, "ci.yml", key);
        new.jobs.truncate(1);
        new.jobs[0].runs_on = Some(vec!["x".into()]);
        new.jobs[0].concurrency = Some(("deploy-prod".into(), cancel));
        new
    };
    let r = ci.register_runner(alice.id, "r", &["x".into()], T0).await.expect("runner");
    let r = ci.get_runner(r).await.expect("get").expect("runner");
    let first = create_runs(&ci, 1, &[grouped("push:1", false)], T0).await.expect("create")[0];
    let second = create_runs(&ci, 2, &[grouped("push:2", false)], T0).await.expect("create")[0];
    let lease = ci.lease_job(&r, T0).await.expect("lease").expect("the first job");
    assert_eq!(lease.run.id, first);
    assert!(ci.lease_job(&r, T0).await.expect("lease").is_none(), "the second job is pending");
    let pending = ci.jobs(second).await.expect("jobs").remove(0);
    assert!(pending.blocked && pending.state == JobState::Waiting);
    let third = create_runs(&ci, 3, &[grouped("push:3", false)], T0).await.expect("create")[0];
    let replaced = ci.jobs(second).await.expect("jobs").remove(0);
    assert_eq!(replaced.conclusion, Some(Conclusion::Cancelled), "replaced by the newer pending job");
    assert_eq!(ci.get_run(second).await.expect("run").expect("run").state, RunState::Completed);

    let job = lease.job.id;
    assert!(ci.ack_job(job, r.id, 1, T0).await.expect("ack"));
    assert!(
        ci.report_step(job, r.id, 1, StepReport { number: 1, conclusion: None, annotations: &[] }, T0)
            .await
            .expect("step")
    );
    let notes = vec![
        Annotation {
            level: "error".into(),
            message: "bad".into(),
            file: Some("a.rs".into()),
            line: Some(2),
            ..Default::default()
        },
        Annotation { level: "warning".into(), message: "careful".into(), ..Default::default() },
    ];
    assert!(
        ci.report_step(
            job,
            r.id,
            1,
            StepReport { number: 1, conclusion: Some(Conclusion::Failure), annotations: &notes },
            T0
        )
        .await
        .expect("step")
    );
    assert!(
        !ci.report_step(
            job,
            r.id,
            1,
            StepReport { number: 1, conclusion: Some(Conclusion::Failure), annotations: &notes },
            T0
        )
        .await
        .expect("again")
    );
    let kept = ci.annotations(first).await.expect("annotations");
    assert_eq!(kept.len(), 2, "a repeated report adds none: {kept:?}");
    assert_eq!(
        (kept[0].step, kept[0].level.as_str(), kept[0].file.as_deref(), kept[0].line),
        (1, "error", Some("a.rs"), Some(2))
    );
    // The actions a job used are recorded once per reference, the first resolution standing.
    ci.record_job_action(job, 1, "admin/tools@v1", "aa").await.expect("record");
    ci.record_job_action(job, 1, "admin/tools@v1", "bb").await.expect("again");
    ci.record_job_action(job, 1, "admin/other@main", "cc").await.expect("record");
    let used: Vec<(String, String)> =
        ci.job_actions(first).await.expect("actions").into_iter().map(|a| (a.uses, a.commit_sha)).collect();
    assert_eq!(
        used,
        [("admin/other@main".to_owned(), "cc".to_owned()), ("admin/tools@v1".to_owned(), "aa".to_owned())]
    );
    assert!(ci.complete_job(job, r.id, 1, Conclusion::Failure, None, T0).await.expect("complete"));
    let next = ci.lease_job(&r, T0).await.expect("lease").expect("the third job, released");
    assert_eq!(next.run.id, third);
    // cancel-in-progress: the running job is told to stop; the newer one goes at once.
    assert!(ci.ack_job(next.job.id, r.id, 1, T0).await.expect("ack"));
    let fourth = create_runs(&ci, 4, &[grouped("push:4", true)], T0).await.expect("create")[0];
    assert_eq!(ci.heartbeat(next.job.id, r.id, 1, T0).await.expect("beat"), gitstratum_ci::Beat::Cancel);
    let lease = ci.lease_job(&r, T0).await.expect("lease").expect("the fourth job");
    assert_eq!(lease.run.id, fourth);

    // Job events of the first job, in order.
    let events = ci.run_events_after(0, 1000).await.expect("events");
    let of_first: Vec<(&str, Option<&str>)> =
        events.iter().filter(|e| e.job_id == Some(job)).map(|e| (e.action.as_str(), e.conclusion.as_deref())).collect();
    assert_eq!(of_first, [("queued", None), ("in_progress", None), ("completed", Some("failure"))]);
    assert!(events.iter().any(|e| e.job_id.is_none() && e.run_id == first && e.action == "completed"));

    let failed = ci
        .list_runs(
            repo.id,
            None,
            10,
            &RunFilter { status: Some(RunStatus::Conclusion(Conclusion::Failure)), ..Default::default() },
        )
        .await
        .expect("list");
    assert_eq!(failed.runs.iter().map(|r| r.id).collect::<Vec<_>>(), [first]);
    let running = ci
        .list_runs(repo.id, None, 10, &RunFilter { status: RunStatus::parse("in_progress"), ..Default::default() })
        .await
        .expect("list");
    assert_eq!(running.runs.iter().map(|r| r.id).collect::<Vec<_>>(), [third]);
    assert_eq!(RunStatus::parse("nonsense"), None);
}

/// Fair scheduling: tenant A queues 200 jobs and keeps 4 runners busy; tenant B then queues 5. As
/// runners free up, B's jobs start within the next few slots (B has fewer running), and A still
/// gets its share. A per-tenant limit on running jobs holds a tenant back.
async fn tenants_share_the_runners_fairly(store: &PlatformStore) {
    use gitstratum_platform::Repo;
    let alice = store.create_user("alice", false, &Actor::system(), T0).await.expect("user");
    let a = store.create_org("tenant-a", &alice, &Actor::system(), T0).await.expect("org");
    let b = store.create_org("tenant-b", &alice, &Actor::system(), T0).await.expect("org");
    let repo_a: Repo = store.create_repo(&a, "big", false, &Actor::system(), T0).await.expect("repo");
    let repo_b: Repo = store.create_repo(&b, "small", false, &Actor::system(), T0).await.expect("repo");
    let ci = CiStore::new(store.db().clone());
    let queue = |repo: &Repo, key: &str, jobs: usize| {
        let mut new = run(repo.id, "ci.yml", key);
        let job = NewJob { needs: vec![], runs_on: Some(vec!["x".into()]), ..new.jobs[0].clone() };
        new.jobs = (0..jobs).map(|i| NewJob { name: format!("job {i}"), ..job.clone() }).collect();
        new
    };
    create_runs(&ci, 1, &[queue(&repo_a, "push:1", 200)], T0).await.expect("a's 200");
    let r = ci.register_runner(alice.id, "r", &["x".into()], T0).await.expect("runner");
    let r = ci.get_runner(r).await.expect("get").expect("runner");
    let mut running = Vec::new();
    for _ in 0..4 {
        running.push(ci.lease_job(&r, T0).await.expect("lease").expect("a job of a"));
    }
    create_runs(&ci, 2, &[queue(&repo_b, "push:2", 5)], T0).await.expect("b's 5");
    let owner = |lease: &gitstratum_ci::Lease| if lease.run.repo_id == repo_b.id { 'b' } else { 'a' };
    // Ten slots free up, one after another.
    let mut order = String::new();
    for _ in 0..10 {
        let done = running.remove(0);
        assert!(ci.ack_job(done.job.id, r.id, 1, T0).await.expect("ack"));
        assert!(ci.complete_job(done.job.id, r.id, 1, Conclusion::Success, None, T0).await.expect("complete"));
        let next = ci.lease_job(&r, T0).await.expect("lease").expect("a job");
        order.push(owner(&next));
        running.push(next);
    }
    assert_eq!(order.matches('b').count(), 5, "all of b's jobs started: {order}");
    assert!(order[..6].matches('b').count() >= 3, "b's first jobs start at once: {order}");
    assert!(order.contains('a'), "a keeps its share: {order}");
    let turn = ci.tenants_in_turn().await.expect("tenants");
    assert_eq!(turn.len(), 1, "only a has jobs queued now");

    // A limit of 2 running jobs per tenant: a (4 running now) gets no more.
    let limited = CiStore::new(store.db().clone())
        .with_tenant_limits(gitstratum_ci::TenantLimits { max_running_jobs: Some(2), ..Default::default() });
    let running_a = running.iter().filter(|l| owner(l) == 'a').count();
    assert!(running_a >= 2, "{order}");
    assert!(limited.lease_job(&r, T0).await.expect("lease").is_none(), "tenant a is at its limit");
    // A tenant's own limit wins over the default: a may run 10, so it gets a job again.
    let own =
        gitstratum_ci::TenantLimits { max_running_jobs: Some(10), max_queued_runs: Some(1), ..Default::default() };
    limited.set_tenant_limits(a.id, own, T0).await.expect("set");
    assert_eq!(limited.tenant_limits(a.id).await.expect("get"), own);
    assert!(limited.lease_job(&r, T0).await.expect("lease").is_some(), "a's own limit applies");
    // a has an unfinished run and may have one: another run of a fails at once, saying why.
    let refused = create_runs(&limited, 3, &[queue(&repo_a, "push:3", 1)], T0).await.expect("create")[0];
    let refused = limited.get_run(refused).await.expect("run").expect("run");
    assert_eq!((refused.state, refused.conclusion), (RunState::Completed, Some(Conclusion::Failure)));
    assert!(refused.message.as_deref().is_some_and(|m| m.contains("its limit is 1")), "{:?}", refused.message);
    assert!(limited.jobs(refused.id).await.expect("jobs").is_empty());
}

/// Usage: a row per attempt that ran (completed, retried, lost), by tenant, repository and labels,
/// with its log size; logs past the retention are deleted and their jobs marked.
async fn usage_is_metered_and_logs_expire(store: &PlatformStore) {
    use gitstratum_ci::RetryPolicy;
    let alice = store.create_user("alice", false, &Actor::system(), T0).await.expect("user");
    let org = store.create_org("acme", &alice, &Actor::system(), T0).await.expect("org");
    let repo = store.create_repo(&org, "web", false, &Actor::system(), T0).await.expect("repo");
    let ci = CiStore::new(store.db().clone());
    let mut new = run(repo.id, "ci.yml", "push:1");
    new.jobs.truncate(1);
    new.jobs[0].runs_on = Some(vec!["x".into()]);
    new.jobs[0].retry = Some(RetryPolicy { max_attempts: 2, delay_ms: 0, exponential: false });
    let run_id = create_runs(&ci, 1, &[new], T0).await.expect("create")[0];
    let r = ci.register_runner(alice.id, "r", &["x".into()], T0).await.expect("runner");
    let r = ci.get_runner(r).await.expect("get").expect("runner");
    let at = |s: i64| Timestamp(T0.0 + s * 1000);
    // Attempt 1 runs 30 s and fails (retried); attempt 2 runs 90 s and succeeds.
    let lease = ci.lease_job(&r, T0).await.expect("lease").expect("job");
    let job = lease.job.id;
    assert!(ci.ack_job(job, r.id, 1, T0).await.expect("ack"));
    assert!(ci.complete_job(job, r.id, 1, Conclusion::Failure, None, at(30)).await.expect("fail"));
    let lease = ci.lease_job(&r, at(31)).await.expect("lease").expect("retry");
    assert_eq!(lease.job.attempt, 2);
    assert!(ci.ack_job(job, r.id, 2, at(40)).await.expect("ack"));
    assert!(ci.complete_job(job, r.id, 2, Conclusion::Success, None, at(130)).await.expect("done"));
    assert!(!ci.complete_job(job, r.id, 2, Conclusion::Success, None, at(131)).await.expect("again"));
    ci.record_log_bytes(job, 2, 4096).await.expect("log bytes");
    let lines = ci.usage(org.id, T0, at(1000)).await.expect("usage");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!((lines[0].repo_id, lines[0].labels.as_str()), (repo.id, "x"));
    assert_eq!((lines[0].jobs, lines[0].duration_ms, lines[0].log_bytes), (2, 120_000, 4096));
    assert!(ci.usage(org.id, at(1000), at(2000)).await.expect("later").is_empty());
    assert!(ci.usage(alice.id, T0, at(1000)).await.expect("another tenant").is_empty());

    // Retention: the job completed at 130 s; with a 100 s retention at 300 s its logs go.
    let dir = std::env::temp_dir().join(format!("gst-retention-{}-{}", std::process::id(), store.db().backend()));
    let logs = LogStore::new(dir.clone());
    logs.append(job, 2, 1, 0, b"a line\n").await.expect("log");
    logs.finish(job, 2).await.expect("finish");
    assert_eq!(gitstratum_ci::usage::sweep_logs(&ci, &logs, at(200), 100_000).await.expect("sweep"), 0, "too young");
    assert_eq!(gitstratum_ci::usage::sweep_logs(&ci, &logs, at(300), 100_000).await.expect("sweep"), 1);
    assert!(logs.read(job, 2).await.expect("read").is_empty(), "deleted");
    assert_eq!(ci.get_job(job).await.expect("job").expect("job").logs_expired_at, Some(at(300)));
    assert_eq!(gitstratum_ci::usage::sweep_logs(&ci, &logs, at(400), 100_000).await.expect("sweep"), 0, "once");
    // A repository's own retention wins over the default: 1 day here, against a default of a year.
    assert_eq!(ci.repo_settings(repo.id).await.expect("get").log_retention_days, None);
    let one_day = gitstratum_ci::usage::RepoSettings {
        log_retention_days: Some(1),
        artifact_retention_days: Some(7),
        actions_shared: false,
        disabled: true,
    };
    ci.set_repo_settings(repo.id, one_day, T0).await.expect("set");
    assert_eq!(ci.repo_settings(repo.id).await.expect("get"), one_day);
    let year = 365 * 86_400_000;
    let mut again = run(repo.id, "ci.yml", "push:9");
    again.jobs.truncate(1);
    again.jobs[0].runs_on = Some(vec!["x".into()]);
    let other = create_runs(&ci, 9, &[again], at(600)).await.expect("create")[0];
    let lease = ci.lease_job(&r, at(600)).await.expect("lease").expect("job");
    assert_eq!(lease.run.id, other);
    assert!(ci.ack_job(lease.job.id, r.id, 1, at(600)).await.expect("ack"));
    assert!(ci.complete_job(lease.job.id, r.id, 1, Conclusion::Success, None, at(610)).await.expect("done"));
    let day = 86_400;
    assert_eq!(gitstratum_ci::usage::sweep_logs(&ci, &logs, at(610 + day / 2), year).await.expect("sweep"), 0);
    assert_eq!(gitstratum_ci::usage::sweep_logs(&ci, &logs, at(610 + 2 * day), year).await.expect("sweep"), 1);
    let _ = std::fs::remove_dir_all(dir);
    let _ = run_id;

    // A budget of 2 minutes a month: 2m10s used (the attempts above), so the next job fails.
    assert_eq!(ci.used_ms(org.id, T0.month_start()).await.expect("used"), 130_000);
    let budget = gitstratum_ci::TenantLimits { max_minutes_per_month: Some(2), ..Default::default() };
    ci.set_tenant_limits(org.id, budget, at(500)).await.expect("budget");
    let mut next = run(repo.id, "ci.yml", "push:2");
    next.jobs.truncate(1);
    next.jobs[0].runs_on = Some(vec!["x".into()]);
    let refused = create_runs(&ci, 2, &[next], at(500)).await.expect("create")[0];
    assert!(ci.lease_job(&r, at(501)).await.expect("lease").is_none(), "over budget");
    let refused = ci.get_run(refused).await.expect("run").expect("run");
    assert_eq!((refused.state, refused.conclusion), (RunState::Completed, Some(Conclusion::Failure)));
    let job = ci.jobs(refused.id).await.expect("jobs").remove(0);
    assert!(job.message.as_deref().is_some_and(|m| m.contains("used its 2 job minutes")), "{:?}", job.message);
}

/// An archive of `files` (path, length) of incompressible bytes.
fn archive(files: &[(&str, usize)]) -> Vec<u8> {
    let mut writer = gitstratum_artifact::Writer::new(Vec::new()).expect("writer");
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for (path, len) in files {
        let data: Vec<u8> = (0..*len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        writer.add(path, 0o644, data.len() as u64, &mut &data[..]).expect("add");
    }
    writer.finish().expect("finish")
}

async fn artifacts_and_caches_are_checked_kept_and_evicted(store: &PlatformStore) {
    use gitstratum_ci::artifacts::{ArtifactError, NewArtifact, Upload, Uploader};
    use sha2::{Digest, Sha256};
    let alice = store.create_user("alice", false, &Actor::system(), T0).await.expect("user");
    let repo = store.create_repo(&alice, "app", false, &Actor::system(), T0).await.expect("repo");
    let ci = CiStore::new(store.db().clone());
    let run_id = create_runs(&ci, 1, &[run(repo.id, "ci.yml", "push:1")], T0).await.expect("create")[0];
    let jobs = ci.jobs(run_id).await.expect("jobs");
    let dir = tempfile::tempdir().expect("tmp");
    let blobs = gitstratum_ci::blob::FsBlobStore::open(dir.path().to_owned()).expect("blobs");
    let config = gitstratum_ci::ArtifactConfig {
        max_artifact_bytes: 1000,
        max_run_bytes: 1500,
        retention_days: 90,
        max_cache_bytes: 1000,
        max_repo_cache_bytes: 1100,
    };
    let artifacts = gitstratum_ci::Artifacts::new(ci.clone(), std::sync::Arc::new(blobs), config);
    let who = |job: i64, git_ref: &'static str| Uploader {
        job_id: job,
        attempt: 1,
        run_id,
        repo_id: repo.id,
        tenant_id: alice.id,
        git_ref,
    };
    let (j0, j1) = (jobs[0].id, jobs[1].id);
    // What each slot was given (the uploader names its archive's length and SHA-256 at the end).
    let sent: std::sync::Mutex<std::collections::HashMap<&str, Upload<'static>>> = Default::default();
    let described = |slot: &'static str, bytes: &[u8]| {
        let sha256: String = Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect();
        let upload = Upload { slot, length: bytes.len() as u64, sha256: Box::leak(sha256.into_boxed_str()) };
        sent.lock().expect("lock").insert(slot, upload);
    };
    let upload = |job: i64, slot: &'static str, bytes: Vec<u8>| {
        let artifacts = &artifacts;
        described(slot, &bytes);
        async move { artifacts.append_chunk(job, 1, slot, 0, bytes).await.expect("upload") }
    };
    let named = |slot: &'static str| {
        sent.lock().expect("lock").get(slot).copied().unwrap_or(Upload { slot, length: 1, sha256: "00" })
    };
    let new = |slot, name| NewArtifact { upload: named(slot), name, retention_days: None, overwrite: false };
    let day = 86_400_000;

    // Chunks by offset, in any order; a resend is harmless.
    let bytes = archive(&[("a.txt", 600)]);
    described("s1", &bytes);
    let (first, second) = bytes.split_at(bytes.len() / 2);
    let end = artifacts.append_chunk(j0, 1, "s1", first.len() as u64, second.to_vec()).await.expect("chunk");
    assert_eq!(end, bytes.len() as u64);
    assert_eq!(artifacts.append_chunk(j0, 1, "s1", 0, first.to_vec()).await.expect("chunk"), first.len() as u64);
    artifacts.append_chunk(j0, 1, "s1", 0, first.to_vec()).await.expect("resend");
    let kept = artifacts
        .finish_artifact(who(j0, "refs/heads/main"), NewArtifact { retention_days: Some(5), ..new("s1", "dist") }, T0)
        .await
        .expect("kept");
    assert_eq!((kept.size_bytes, kept.files, kept.expires_at), (600, 1, Timestamp(T0.0 + 5 * day)));
    assert_eq!(kept.stored_bytes, bytes.len() as i64);
    assert!(artifacts.append_chunk(j0, 1, "../x", 0, b"x".to_vec()).await.is_err(), "slots are plain names");

    // Another job may not take the name, unless it overwrites.
    upload(j1, "s2", archive(&[("b.txt", 10)])).await;
    let taken = artifacts.finish_artifact(who(j1, "refs/heads/main"), new("s2", "dist"), T0).await;
    assert!(matches!(taken, Err(ArtifactError::Conflict(_))), "{taken:?}");
    // Too big for what is left of the run's 1500 bytes (600 are taken).
    upload(j1, "s3", archive(&[("big", 950)])).await;
    let big = artifacts.finish_artifact(who(j1, "refs/heads/main"), new("s3", "big"), T0).await;
    assert!(matches!(&big, Err(ArtifactError::TooBig(why)) if why.contains("the run's artifacts")), "{big:?}");
    // A lost chunk, a damaged one, or a length that is not the upload's: refused.
    let whole = archive(&[("e", 100)]);
    described("s7", &whole);
    artifacts.append_chunk(j1, 1, "s7", 50, whole[50..].to_vec()).await.expect("second half only");
    let holed = artifacts.finish_artifact(who(j1, "refs/heads/main"), new("s7", "holed"), T0).await;
    assert!(matches!(&holed, Err(ArtifactError::Invalid(why)) if why.contains("SHA-256")), "{holed:?}");
    upload(j1, "s8", whole.clone()).await;
    let short = NewArtifact { upload: Upload { length: whole.len() as u64 + 1, ..named("s8") }, ..new("s8", "short") };
    let short = artifacts.finish_artifact(who(j1, "refs/heads/main"), short, T0).await;
    assert!(matches!(&short, Err(ArtifactError::Invalid(why)) if why.contains("incomplete")), "{short:?}");
    // Damaged archives, bad names and missing uploads are refused, and nothing is kept.
    upload(j1, "s4", b"not an archive".to_vec()).await;
    let damaged = artifacts.finish_artifact(who(j1, "refs/heads/main"), new("s4", "junk"), T0).await;
    assert!(matches!(damaged, Err(ArtifactError::Invalid(_))), "{damaged:?}");
    upload(j1, "s5", archive(&[("c", 1)])).await;
    let named = artifacts.finish_artifact(who(j1, "refs/heads/main"), new("s5", "a/b"), T0).await;
    assert!(matches!(named, Err(ArtifactError::Invalid(_))), "{named:?}");
    let missing = artifacts.finish_artifact(who(j1, "refs/heads/main"), new("nothing", "x"), T0).await;
    assert!(matches!(missing, Err(ArtifactError::NoUpload(_))), "{missing:?}");
    let listed = artifacts.list(run_id).await.expect("list");
    assert_eq!(listed.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), ["dist"]);
    let mut names = Vec::new();
    let blob = artifacts.open_blob(&kept.blob_key).expect("blob");
    gitstratum_artifact::read_archive(blob, &Default::default(), |e, _| {
        names.push(e.path.clone());
        Ok(())
    })
    .expect("read");
    assert_eq!(names, ["a.txt"]);
    let stored = |at: &'static str| {
        let artifacts = &artifacts;
        async move { artifacts.stored_bytes_by_repo(alice.id).await.expect(at) }
    };
    assert_eq!(stored("bytes").await, [(repo.id, kept.stored_bytes, 0)]);
    // Staged uploads of an ended attempt go.
    artifacts.discard_staged(j1, 1).await;
    assert!(
        std::fs::read_dir(dir.path().join("staging"))
            .expect("staging")
            .all(|e| { !e.expect("entry").file_name().to_string_lossy().starts_with(&format!("{j1}-1-")) })
    );

    // Abandoned uploads go after their idle time (none here is that old; then all are).
    upload(j1, "s6", archive(&[("d", 1)])).await;
    assert_eq!(artifacts.sweep_staging(std::time::Duration::from_secs(3600)).await, 0);
    assert!(artifacts.sweep_staging(std::time::Duration::ZERO).await >= 1);
    let missing = artifacts.finish_artifact(who(j1, "refs/heads/main"), new("s6", "late"), T0).await;
    assert!(matches!(missing, Err(ArtifactError::NoUpload(_))), "{missing:?}");
    // Retention: kept 5 days, then its blob goes and it says so.
    assert_eq!(artifacts.sweep(Timestamp(T0.0 + 4 * day)).await.expect("sweep"), 0);
    assert_eq!(artifacts.sweep(Timestamp(T0.0 + 6 * day)).await.expect("sweep"), 1);
    let gone = artifacts.get(kept.id).await.expect("get").expect("row stays");
    assert_eq!(gone.expired_at, Some(Timestamp(T0.0 + 6 * day)));
    assert!(artifacts.open_blob(&kept.blob_key).is_err());
    assert!(stored("bytes").await.is_empty(), "expired artifacts take nothing");
    assert_eq!(artifacts.sweep(Timestamp(T0.0 + 7 * day)).await.expect("sweep"), 0, "once");

    // Caches: exact key, else the newest with a restore-keys prefix, on the given scopes in turn.
    const MAIN: &[&str] = &["refs/heads/main"];
    let save = |key: &'static str, at: i64| {
        let artifacts = &artifacts;
        let who = who(j0, "refs/heads/main");
        async move {
            let slot = format!("c-{key}");
            let bytes = archive(&[("w/deps", 400)]);
            let sha256: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
            let upload = Upload { slot: &slot, length: bytes.len() as u64, sha256: &sha256 };
            artifacts.append_chunk(j0, 1, &slot, 0, bytes).await.expect("upload");
            artifacts.finish_cache(who, upload, key, "v1", Timestamp(T0.0 + at)).await
        }
    };
    save("k-1", 0).await.expect("k-1");
    save("k-2", 1).await.expect("k-2");
    assert!(matches!(save("k-2", 2).await, Err(ArtifactError::Conflict(_))), "caches are immutable");
    let find = |key: &'static str, prefixes: &'static [&'static str], scopes: &'static [&'static str], at: i64| {
        let artifacts = &artifacts;
        let prefixes: Vec<String> = prefixes.iter().map(|p| p.to_string()).collect();
        async move {
            artifacts
                .find_cache(repo.id, scopes, key, &prefixes, "v1", Timestamp(T0.0 + at))
                .await
                .expect("find")
                .map(|c| c.key)
        }
    };
    assert_eq!(find("k-9", &["k-"], MAIN, 2).await.as_deref(), Some("k-2"), "the newest by prefix");
    assert_eq!(find("k-1", &[], MAIN, 3).await.as_deref(), Some("k-1"), "exact");
    assert_eq!(find("x", &["y-"], MAIN, 3).await, None);
    assert_eq!(find("k-1", &[], &["refs/heads/feature"], 3).await, None, "another branch's");
    assert_eq!(find("k-1", &[], &["refs/heads/feature", "refs/heads/main"], 3).await.as_deref(), Some("k-1"));
    let other_version = artifacts.find_cache(repo.id, MAIN, "k-1", &[], "v2", Timestamp(T0.0 + 3)).await.expect("find");
    assert!(other_version.is_none(), "other paths, other version");
    // A third cache passes the repository's cap: the least recently used (k-2, used at 2) goes.
    save("k-3", 4).await.expect("k-3");
    let left: Vec<String> = artifacts.list_caches(repo.id).await.expect("list").into_iter().map(|c| c.key).collect();
    assert_eq!(left, ["k-3", "k-1"]);
    let (_, _, cache_bytes) = stored("bytes").await[0];
    assert!(cache_bytes > 800 && cache_bytes <= 1100, "{cache_bytes}");

    // Blobs nothing names go (once old enough): a stray one, and those of a deleted repository.
    let stray = dir.path().join("caches/ff/0123456789abcdef0123456789abcd");
    std::fs::create_dir_all(stray.parent().expect("fan")).expect("mkdir");
    std::fs::write(&stray, b"left by a crash").expect("stray");
    assert_eq!(artifacts.sweep_orphans(std::time::Duration::from_secs(3600)).await.expect("sweep"), 0, "too young");
    assert_eq!(artifacts.sweep_orphans(std::time::Duration::ZERO).await.expect("sweep"), 1);
    assert!(!stray.exists());
    let named = artifacts.list_caches(repo.id).await.expect("caches");
    store.delete_repo(&repo, &Actor::system(), T0).await.expect("delete repository");
    assert_eq!(artifacts.sweep_orphans(std::time::Duration::ZERO).await.expect("sweep"), named.len());
    assert!(artifacts.open_blob(&named[0].blob_key).is_err());
}

gitstratum_platform::both_backends!(
    runs_created_at_once_get_distinct_numbers,
    logs_in_the_database_are_shared_by_servers,
    consumers_racing_on_one_log_commit_once,
    artifacts_and_caches_are_checked_kept_and_evicted,
    usage_is_metered_and_logs_expire,
    tenants_share_the_runners_fairly,
    job_concurrency_events_and_annotations,
    concurrency_groups,
    runs_are_created_once_with_the_cursor,
    jobs_move_through_their_states,
    runs_cancel_and_run_again,
    matrices_and_retries,
);

/// Waits up to `within` for a wakeup of `ci`'s runners that `cause` brings about.
async fn woken<F: std::future::Future>(ci: &CiStore, within: std::time::Duration, cause: F) -> bool {
    let waiter = ci.job_queued();
    tokio::pin!(waiter);
    waiter.as_mut().enable();
    cause.await;
    tokio::time::timeout(within, waiter).await.is_ok()
}

/// Servers sharing a PostgreSQL database wake each other's runners: a run queued through one
/// server's store wakes a long poll waiting on another server's (LISTEN/NOTIFY), while an
/// installation in another schema of the same database is not woken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_queued_on_one_server_wakes_runners_polling_another() {
    use std::time::Duration;
    let Some(db) = gitstratum_platform::testing::TestDb::postgres().await else { return };
    let Some(elsewhere) = gitstratum_platform::testing::TestDb::postgres().await else { return };
    let second = PlatformStore::open(&db.target).await.expect("a second server on the database");
    let (here, there) = (CiStore::new(db.store.db().clone()), CiStore::new(second.db().clone()));
    let (stranger, stranger_peer) =
        (CiStore::new(elsewhere.store.db().clone()), CiStore::new(elsewhere.store.db().clone()));
    let listeners =
        [there.spawn_wakeup_listener().expect("listens"), stranger.spawn_wakeup_listener().expect("listens")];
    assert!(
        CiStore::new(gitstratum_platform::testing::TestDb::sqlite().await.store.db().clone())
            .spawn_wakeup_listener()
            .is_none()
    );
    // Both listeners up: a wake from a peer in the same schema gets through.
    for (ci, peer) in [(&there, &here), (&stranger, &stranger_peer)] {
        let mut up = false;
        for _ in 0..100 {
            if woken(ci, Duration::from_millis(100), async { peer.wake_runners() }).await {
                up = true;
                break;
            }
        }
        assert!(up, "the listener never heard its peer");
    }

    // A run queued through `here` wakes a poll on `there`, and not the other installation's.
    let alice = db.store.create_user("alice", false, &Actor::system(), T0).await.expect("user");
    let repo = db.store.create_repo(&alice, "app", false, &Actor::system(), T0).await.expect("repo");
    let stranger_waits = stranger.job_queued();
    tokio::pin!(stranger_waits);
    stranger_waits.as_mut().enable();
    let queue = async {
        create_runs(&here, 1, &[run(repo.id, "ci.yml", "push:1")], T0).await.expect("create");
    };
    assert!(woken(&there, Duration::from_secs(10), queue).await, "the other server's runners were woken");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), stranger_waits).await.is_err(),
        "another schema's runners were not"
    );
    for listener in listeners {
        listener.abort();
    }
    second.close().await;
    db.passed().await;
    elsewhere.passed().await;
}
