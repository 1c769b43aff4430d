-- CI: runs of workflows, their jobs and the jobs' steps (crate gitstratum-ci owns these tables;
-- they live in the platform database so a run commits in one transaction with the cursor of the
-- log it came from). `state` columns are the state machines; the API shows GitHub's
-- status/conclusion vocabulary derived from them.
CREATE TABLE ci_runs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    repo_id        BIGINT NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    run_number     BIGINT NOT NULL,          -- per repository, from 1
    workflow_path  TEXT   NOT NULL,          -- .github/workflows/ci.yml
    workflow_name  TEXT   NOT NULL,
    title          TEXT   NOT NULL,          -- run-name, else the workflow's name
    event          TEXT   NOT NULL,          -- push, workflow_dispatch
    event_key      TEXT   NOT NULL,          -- what made it: push:<ref-log seq>, dispatch:<id>
    git_ref        TEXT   NOT NULL,
    commit_sha     TEXT   NOT NULL,
    actor          TEXT   NOT NULL,
    state          TEXT   NOT NULL,          -- queued, in_progress, completed
    conclusion     TEXT,                     -- success, failure, cancelled, skipped, timed_out
    message        TEXT,                     -- why it failed without running (invalid workflow)
    workflow       TEXT,                     -- the validated workflow (JSON) its jobs run
    inputs         TEXT,                     -- workflow_dispatch inputs (JSON object)
    concurrency_group TEXT,                  -- the workflow's concurrency group, evaluated
    concurrency_cancel BOOLEAN NOT NULL DEFAULT FALSE, -- cancel-in-progress
    blocked        BOOLEAN NOT NULL DEFAULT FALSE, -- pending behind its group's running run
    created_at     BIGINT NOT NULL,
    started_at     BIGINT,
    completed_at   BIGINT,
    UNIQUE (repo_id, commit_sha, workflow_path, event_key),
    UNIQUE (repo_id, run_number)
);
CREATE INDEX ci_runs_repo ON ci_runs(repo_id, id);
CREATE INDEX ci_runs_group ON ci_runs(repo_id, concurrency_group, state);

CREATE TABLE ci_jobs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id         BIGINT NOT NULL REFERENCES ci_runs(id) ON DELETE CASCADE,
    job_key        TEXT   NOT NULL,          -- the job's id in the workflow
    name           TEXT   NOT NULL,          -- shown to people, matrix values included
    matrix         TEXT,                     -- this instance's matrix values (JSON)
    needs          TEXT   NOT NULL,          -- job keys it waits for, space-separated
    runs_on        TEXT,                     -- runner labels, space-separated; NULL: decided later
    state          TEXT   NOT NULL,          -- waiting, queued, leased, in_progress, completed
    conclusion     TEXT,
    message        TEXT,                     -- why it ended as it did, when that needs saying
    outputs        TEXT,                     -- the job's outputs (JSON object), once completed
    attempt        BIGINT NOT NULL DEFAULT 1,
    runner_id      BIGINT,                   -- the runner holding the lease
    lease_expires_at BIGINT,                 -- leased: ack by then; in_progress: heartbeat by then
    token_hash     TEXT,                     -- SHA-256 of the job's token, while it runs
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE, -- told to the runner in its heartbeat reply
    fail_fast      BOOLEAN NOT NULL DEFAULT TRUE, -- a failed instance cancels its matrix siblings
    max_parallel   BIGINT,                   -- instances of this job running at once, at most
    retry_max      BIGINT,                   -- GitStratum's retry: attempts in all
    retry_delay_ms BIGINT,                   -- and the delay before the second
    retry_exponential BOOLEAN NOT NULL DEFAULT FALSE, -- doubling for each further one
    not_before     BIGINT,                   -- queued, but not to be leased before this time
    created_at     BIGINT NOT NULL,
    started_at     BIGINT,
    completed_at   BIGINT
);
CREATE INDEX ci_jobs_run ON ci_jobs(run_id);
CREATE INDEX ci_jobs_state ON ci_jobs(state, id);
CREATE UNIQUE INDEX ci_jobs_token ON ci_jobs(token_hash);

CREATE TABLE ci_steps (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id         BIGINT NOT NULL REFERENCES ci_jobs(id) ON DELETE CASCADE,
    number         BIGINT NOT NULL,          -- from 1, in the job's order
    name           TEXT   NOT NULL,
    state          TEXT   NOT NULL,          -- queued, in_progress, completed
    conclusion     TEXT,
    started_at     BIGINT,
    completed_at   BIGINT,
    UNIQUE (job_id, number)
);

-- Runners: registered by a token of scope ci:runner; they lease jobs whose labels they all have.
CREATE TABLE ci_runners (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    name           TEXT   NOT NULL,
    labels         TEXT   NOT NULL,          -- space-separated
    account_id     BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    created_at     BIGINT NOT NULL,
    last_seen_at   BIGINT NOT NULL
);

-- Run events for consumers (workflow_run webhooks): written in the transaction of the transition;
-- appends are serialized, so a consumer's cursor never skips one.
CREATE TABLE ci_events (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id         BIGINT NOT NULL,          -- no foreign key: the run may be gone with its repository
    repo_id        BIGINT NOT NULL,
    action         TEXT   NOT NULL,          -- requested, in_progress, completed
    status         TEXT   NOT NULL,
    conclusion     TEXT,
    created_at     BIGINT NOT NULL
);
